"""The bundles' commands as a user types them: train, evaluate, torchrun on CPU/gloo, inference on one series."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import monai.bundle
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from data_helpers import FAST_REGISTRATION, ischemic_subset  # noqa: E402

from monai_stroke.contract import load_checkpoint  # noqa: E402
from monai_stroke.evaluation import METRIC_NAMES  # noqa: E402
from monai_stroke.utils import file_sha256  # noqa: E402
from monai_stroke.vocabulary import HEMORRHAGE_SUBTYPES  # noqa: E402

ROOT = Path(__file__).parents[2]
TINY = ["--network_size", "tiny", "--num_workers", "0"]
HEMORRHAGE_FAST = [*TINY, "--spatial_size", "[32, 32]"]
ISCHEMIC_FAST = [
    *TINY,
    "--crop_size",
    "[32, 32]",
    "--template_spacing",
    "2.0",
    "--registration",
    json.dumps(FAST_REGISTRATION),
]


def _configs(bundle: str, *names: str) -> str:
    files = [f"bundles/{bundle}/configs/{n}" for n in names]
    return files[0] if len(files) == 1 else repr(files)


def _run(args: list[str], timeout: int = 600) -> str:
    # from the repository root, exactly like the README; the session's MONAI_STROKE_CACHE is inherited
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout + done.stderr


def _bundle_run(bundle: str, names: tuple[str, ...], dataset: Path, out: Path, *extra: str) -> str:
    config = _configs(bundle, *names)
    command = ["-m", "monai.bundle", "run", "--config_file", config, "--dataset_dir", str(dataset)]
    return _run([sys.executable, *command, "--output_dir", str(out), *extra])


def _scalars_and_figures(log_dir: Path) -> tuple[set[str], set[str]]:
    (event_file,) = log_dir.glob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return set(events.Tags()["scalars"]), set(events.Tags()["images"])


def _check_training(out: Path, kind: str, task: str | None, size: list[int]) -> None:
    _, contract = load_checkpoint(out / "models" / "model.pt", kind=kind, task=task)
    assert 0.0 <= contract.decision_threshold <= 1.0 and contract.threshold_rule
    assert contract.training["epoch"] == 1 and contract.training["bundle"] == f"{kind}_classification"
    assert contract.spatial_size == size and contract.network["size"] == "tiny"
    scalars, figures = _scalars_and_figures(out / "logs")
    assert {"train_loss", "val_loss", "val_auc", "learning_rate"} <= scalars
    assert {"train/input_samples", "val/roc"} <= figures


def _check_evaluation(out: Path, groups: list[str]) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["metrics"])[: len(groups)] == groups
    for group in metrics["metrics"].values():
        assert set(METRIC_NAMES) <= set(group)
    assert metrics["info"]["sha256"] == file_sha256(out / "models" / "model.pt")
    table = pd.read_csv(out / "metrics.csv")
    assert list(table.columns[1 : 1 + len(METRIC_NAMES)]) == list(METRIC_NAMES)
    for figure in ("roc.png", "probability_histogram.png"):
        assert (out / figure).stat().st_size > 0
    return metrics


@pytest.mark.slow
def test_hemorrhage_train_evaluate_and_predict_one_series(synthetic_small_cohort, tmp_path) -> None:
    out = tmp_path / "out"
    bundle = "hemorrhage_classification"
    _bundle_run(bundle, ("train.yaml",), synthetic_small_cohort, out, "--max_epochs", "1", *HEMORRHAGE_FAST)
    _check_training(out, "hemorrhage", None, [32, 32])
    _bundle_run(bundle, ("train.yaml", "evaluate.yaml"), synthetic_small_cohort, out, *HEMORRHAGE_FAST)
    metrics = _check_evaluation(out, ["slice/any", "series/any"])
    assert {f"slice/{s}" for s in HEMORRHAGE_SUBTYPES} <= set(metrics["metrics"])
    assert metrics["metrics"]["series/any"]["n"] == 3  # the 3 test patients
    assert metrics["info"]["aggregation"] == {"method": "topk_mean", "k": 3}
    assert (out / "predictions_series.csv").is_file()

    # inference on one series, in this process (what `python -m monai.bundle run` calls; saves an interpreter start)
    series = Path(synthetic_small_cohort) / "P006" / "dicom"
    config = str(ROOT / "bundles" / bundle / "configs" / "inference.yaml")
    monai.bundle.run(config_file=config, logging_file=False, series=str(series), output_dir=str(out), num_workers=0)
    report = json.loads((out / "predictions" / "predictions.json").read_text())
    (entry,) = report["series"]
    assert entry["patient_id"] == "P006" and len(entry["top_slices"]) == 3
    assert set(entry["probability"]) == {"any", *HEMORRHAGE_SUBTYPES}
    slices = pd.read_csv(out / "predictions" / "predictions.csv")
    assert len(slices) == len(list(series.glob("*.dcm")))


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(synthetic_small_cohort, tmp_path) -> None:
    out = tmp_path / "ddp"
    config = _configs("hemorrhage_classification", "train.yaml", "multi_gpu_train.yaml")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    log = _run(
        [*torchrun, "-m", "monai.bundle", "run", "--config_file", config, "--dataset_dir", str(synthetic_small_cohort),
         "--output_dir", str(out), "--max_epochs", "1", *HEMORRHAGE_FAST]
    )
    _, contract = load_checkpoint(out / "models" / "model.pt", kind="hemorrhage")
    assert contract.training["world_size"] == 2
    # the validation predictions of both ranks were gathered: every validation slice, once
    cohort = pd.read_csv(Path(synthetic_small_cohort) / "cohort.csv")
    val = cohort.loc[cohort["split"] == "val", "patient_id"]
    n_val = sum(len(list((Path(synthetic_small_cohort) / p / "dicom").glob("*.dcm"))) for p in val)
    assert contract.training["val_samples"] == n_val
    # rank 0 alone writes: one event file, one checkpoint message
    assert len(list((out / "logs").glob("events.out.tfevents.*"))) == 1
    assert log.count("lowest validation loss so far") == 1


@pytest.mark.slow
def test_ischemic_train_and_evaluate(synthetic_small_cohort, tmp_path) -> None:
    data = ischemic_subset(synthetic_small_cohort, tmp_path / "data")
    out = tmp_path / "out"
    bundle = "ischemic_classification"
    _bundle_run(bundle, ("train.yaml",), data, out, "--max_epochs", "1", *ISCHEMIC_FAST)
    _check_training(out, "ischemic", "early_vs_intact", [32, 32])
    _, contract = load_checkpoint(out / "models" / "model.pt", kind="ischemic", task="early_vs_intact")
    assert contract.training["balance_classes"] is True  # rare positives weighted by default, and recorded
    _bundle_run(bundle, ("train.yaml", "evaluate.yaml"), data, out, *ISCHEMIC_FAST)
    metrics = _check_evaluation(out, ["region/early_vs_intact", "patient/early_vs_intact"])
    assert metrics["info"]["task"] == "early_vs_intact"
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions["side"]) == {"L", "R"} and predictions["split"].eq("test").all()

    # inference over the dataset folder, in this process; the registrations come from the shared cache
    config = str(ROOT / "bundles" / bundle / "configs" / "inference.yaml")
    monai.bundle.run(config_file=config, logging_file=False, dataset_dir=str(data), output_dir=str(out), num_workers=0)
    report = json.loads((out / "predictions" / "predictions.json").read_text())
    assert report["model"]["task"] == "early_vs_intact"
    assert [p["patient_id"] for p in report["patients"]] == sorted(p.name for p in data.iterdir() if p.is_dir())
    regions = pd.read_csv(out / "predictions" / "predictions.csv")
    assert len(regions) == 20 * len(report["patients"])  # every region of every patient, labelled or not
