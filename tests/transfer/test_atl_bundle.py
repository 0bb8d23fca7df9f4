"""The adaptive_transfer bundle as a user runs it: the documented command (exhaustive), the torchrun form (halving,
two processes on CPU/gloo), the 'monai-stroke atl' wrapper; plus its Model Zoo layout and config checks.

The source model comes from the hemorrhage bundle (one tiny epoch), the data is a 4-patient view of the session's
synthetic cohort with the fast registration of tests/data (its crops are shared with the other bundle tests
through the content-addressed sample cache).
"""

from __future__ import annotations

import json
import os
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator

sys.path.insert(0, str(Path(__file__).parents[1] / "data"))
from data_helpers import FAST_REGISTRATION, ischemic_subset  # noqa: E402

from monai_stroke.cli import main  # noqa: E402
from monai_stroke.contract import load_checkpoint  # noqa: E402
from monai_stroke.transfer import atl_objective  # noqa: E402

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "bundles" / "adaptive_transfer" / "configs"
DEPTHS = ["none", "layer0-1", "layer0-4", "all_conv", "not_transfer"]
FAST = {"crop_size": [32, 32], "template_spacing": 2.0, "registration": FAST_REGISTRATION, "num_workers": 0}
ATL_ARGS = [
    "--epochs_per_depth", "2", "--network_size", "tiny", "--depths", repr(DEPTHS),
    *(a for k, v in FAST.items() for a in (f"--{k}", json.dumps(v))),
]


def _run(args: list[str], timeout: int = 600) -> str:
    # from the repository root, exactly like the README; the session's MONAI_STROKE_CACHE is inherited
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def source_model(synthetic_small_cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hemorrhage")
    _run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
          "bundles/hemorrhage_classification/configs/train.yaml", "--dataset_dir", str(synthetic_small_cohort),
          "--output_dir", str(out), "--max_epochs", "1", "--network_size", "tiny", "--num_workers", "0",
          "--spatial_size", "[32, 32]"])
    return out / "models" / "model.pt"


@pytest.fixture(scope="module")
def data(synthetic_small_cohort, tmp_path_factory) -> Path:
    return ischemic_subset(synthetic_small_cohort, tmp_path_factory.mktemp("atl") / "data")


@pytest.fixture(scope="module")
def exhaustive(source_model, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("atl") / "exhaustive"
    _run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/adaptive_transfer/configs/train.yaml",
          "--dataset_dir", str(data), "--output_dir", str(out), "--source_checkpoint", str(source_model),
          "--search", "exhaustive", *ATL_ARGS])
    return out


def _losses(out: Path) -> dict[str, list[float]]:
    return {p.parent.name: json.loads(p.read_text())["val_losses"] for p in (out / "atl").glob("*/progress.json")}


@pytest.mark.slow
def test_bundle_command_exhaustive(exhaustive, source_model) -> None:
    table = pd.read_csv(exhaustive / "atl_table.csv", keep_default_na=False).set_index("theta")
    assert list(table.index) == DEPTHS and (table["epochs_trained"] == 2).all()
    losses = _losses(exhaustive)
    f = {d: atl_objective(v) for d, v in losses.items()}
    choice = json.loads((exhaustive / "atl_choice.json").read_text())
    assert choice["theta"] == min(["none", "layer0-1", "layer0-4"], key=f.get)
    assert choice["f"] == pytest.approx(f[choice["theta"]]) and (choice["w1"], choice["w2"]) == (1.0, 1.0)
    assert choice["task"] == "early_vs_intact" and choice["search"] == "exhaustive"
    assert table.loc["not_transfer", "init"] == "random" and table.loc["all_conv", "same_as"] == "layer0-4"
    assert pd.to_numeric(table["auc"]).between(0, 1).all()  # the test split holds both classes
    assert table["collapsed"].astype(str).isin(["True", "False"]).all()
    _, contract = load_checkpoint(exhaustive / "models" / "model.pt", kind="ischemic", task="early_vs_intact")
    assert contract.training["freeze_depth"] == choice["theta"] and contract.training["bundle"] == "adaptive_transfer"
    assert contract.spatial_size == [32, 32] and contract.network["size"] == "tiny"
    assert contract.training["source_checkpoint"]["path"] == str(source_model)
    for figure in ("atl_metrics.png", "atl_histograms.png", "atl_roc.png", "atl_val_losses.png"):
        assert (exhaustive / figure).stat().st_size > 10_000
    state = json.loads((exhaustive / "atl_state.json").read_text())
    assert set(state["completed"]) == {"none", "layer0-1", "layer0-4", "not_transfer"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (exhaustive / "logs" / "layer0-1").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert {"loss/train", "loss/val", "atl/f", "val/auc"} <= set(accumulator.Tags()["scalars"])
    assert [e.value for e in accumulator.Scalars("loss/val")] == pytest.approx(losses["layer0-1"], rel=1e-6)


@pytest.mark.slow
def test_torchrun_two_processes_halving(exhaustive, source_model, data, tmp_path) -> None:
    out = tmp_path / "halving"
    configs = repr([str(CONFIGS / "train.yaml"), str(CONFIGS / "multi_gpu_train.yaml")])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    _run([*torchrun, "-m", "monai.bundle", "run", "--config_file", configs, "--dataset_dir", str(data),
          "--output_dir", str(out), "--source_checkpoint", str(source_model), "--search", "halving", *ATL_ARGS])
    choice = json.loads((out / "atl_choice.json").read_text())
    assert choice["search"] == "halving" and choice["epochs_trained"] < choice["epochs_exhaustive"] == 8
    assert len(choice["eliminated"]) == 1
    full = _losses(exhaustive)
    ranks = set()
    for depth, values in _losses(out).items():
        # each depth trained by one process on the whole data: the same losses as the single-process search
        assert values == pytest.approx(full[depth][: len(values)], rel=1e-4), depth
        ranks.add(torch.load(out / "atl" / depth / "last.pt", weights_only=True)["rank"])
    assert ranks == {0, 1}
    assert (out / "models" / "model.pt").is_file() and (out / "atl_table.csv").is_file()


@pytest.mark.slow
def test_cli_wrapper_reruns_a_finished_search_without_training(exhaustive, source_model, data, capsys) -> None:
    before = {p: p.stat().st_mtime_ns for p in (exhaustive / "atl").glob("*/last.pt")}
    (exhaustive / "atl_table.csv").unlink()
    args = ["atl", "--data", str(data), "--source", str(source_model), "--out", str(exhaustive),
            "--epochs-per-depth", "2", "--network-size", "tiny", "--depths", ",".join(DEPTHS)]
    args += [a for k, v in FAST.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    assert main(args) == 0
    assert "chose " in capsys.readouterr().out
    assert (exhaustive / "atl_table.csv").is_file()
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "{tmp}/missing.pt"], "does not exist"),
        (["--data", "{tmp}"], "not a dataset folder"),
        (["--depths", "none,layer9"], "unknown freeze depth"),
        (["--set", "crop_size"], "KEY=VALUE"),
    ],
)
def test_cli_bad_input_is_one_error_line(tmp_path, capsys, args, message) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cohort.csv").write_text("patient_id\n")
    (tmp_path / "src.pt").write_bytes(b"x")
    base = {"--data": str(tmp_path / "data"), "--source": str(tmp_path / "src.pt"), "--out": str(tmp_path / "out")}
    extra = [a.format(tmp=tmp_path) for a in args]
    for key in list(base):
        if key in extra:
            base.pop(key)
    argv = ["atl", *(x for kv in base.items() for x in kv), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out").exists()


def _walk(node, targets: set, dotted: set) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                targets.add(value)
            _walk(value, targets, dotted)
    elif isinstance(node, list):
        for value in node:
            _walk(value, targets, dotted)
    elif isinstance(node, str) and node.startswith("$"):
        dotted.update(re.findall(r"\bmonai_stroke(?:\.[A-Za-z_]\w*)+", node))


def test_model_zoo_layout_and_config_targets() -> None:
    root = CONFIGS.parent
    for name in ("train.yaml", "multi_gpu_train.yaml", "metadata.json", "logging.conf"):
        assert (CONFIGS / name).is_file(), name
    assert (root / "docs" / "README.md").is_file() and (root / "LICENSE").is_file()
    locator = ComponentLocator()
    for name in ("train.yaml", "multi_gpu_train.yaml"):
        targets: set[str] = set()
        dotted: set[str] = set()
        _walk(yaml.safe_load((CONFIGS / name).read_text()), targets, dotted)
        for target in targets:
            found = pydoc.locate(target) if "." in target else locator.get_component_module_name(target)
            assert found, f"{name}: _target_ {target} does not resolve"
        for name_ in dotted:
            assert pydoc.locate(name_) is not None, f"{name}: {name_} does not exist"
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"] and any("Jung" in r for r in meta["references"])


def test_user_keys_defaults_and_multi_gpu_overrides_only() -> None:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    for key in ("bundle_root", "dataset_dir", "output_dir", "device", "max_epochs", "source_checkpoint",
                "epochs_per_depth", "network_size", "search", "task", "w1", "w2", "depths", "pretrained_weights"):
        assert key in parser, key
    assert (parser["w1"], parser["w2"], parser["search"]) == (1.0, 1.0, "exhaustive")
    assert parser["depths"] == ["none", "layer0", "layer0-1", "layer0-2", "layer0-3", "layer0-4", "all_conv",
                                "not_transfer"]
    assert parser["atl"]["_target_"] == "monai_stroke.transfer.AdaptiveTransferHandler"
    for key in yaml.safe_load((CONFIGS / "multi_gpu_train.yaml").read_text()):
        assert key in parser, f"{key} is not an override of train.yaml"
