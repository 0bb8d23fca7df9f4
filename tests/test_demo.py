"""``monai-stroke demo`` orchestration: stages in order through the bundle runner, a models folder predict accepts,
reports of held-out patients, summary.html with working links, resumable stages, and bad --out.

The bundles' training itself is tested with the bundles (tests/bundles); here a recording runner stands in for
``monai.bundle.run`` and writes what each bundle writes (checkpoints with real contracts, metrics, ATL table).
The predict stage is the real cascade (hemorrhage pinned positive to keep it short).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from monai_stroke.cli import main
from monai_stroke.demo import STAGES, DemoSettings, run_demo, truth_aspects
from monai_stroke.errors import UserInputError


class RecordingRunner:
    """Stands in for ``monai.bundle.run``: records each call and writes that bundle's outputs."""

    def __init__(self, models: Path) -> None:
        self.models = models
        self.calls: list[dict] = []

    def __call__(self, config_files, **overrides) -> None:
        names = [f"{Path(c).parents[1].name}/{Path(c).name}" for c in config_files]
        self.calls.append({"configs": names, **overrides})
        out = Path(overrides["output_dir"])
        (out / "models").mkdir(parents=True, exist_ok=True)
        if names == ["hemorrhage_classification/train.yaml"]:
            shutil.copy(self.models / "hemorrhage" / "model.pt", out / "models" / "model.pt")
            (out / "logs").mkdir(exist_ok=True)
        elif names[-1].endswith("evaluate.yaml"):
            pd.DataFrame([{"group": "series/any", "auc": 0.9, "f1": 0.5, "n": 3}]).to_csv(
                out / "metrics.csv", index=False
            )
        else:
            task = overrides["task"]
            shutil.copy(self.models / task / "model.pt", out / "models" / "model.pt")
            pd.DataFrame([{"theta": "layer0", "f": 0.2, "collapsed": False, "chosen": True}]).to_csv(
                out / "atl_table.csv", index=False
            )
            choice = {"theta": "layer0", "f": 0.2, "search": "halving", "test": {"auc": 0.8}, "warnings": []}
            (out / "atl_choice.json").write_text(json.dumps(choice))


@pytest.fixture(scope="module")
def pinned_models(tmp_path_factory) -> Path:
    from monai_stroke.inference.untrained import write_untrained_models

    return write_untrained_models(tmp_path_factory.mktemp("demo_models"), crop_size=(32, 32), hemorrhage_bias=20.0)


def test_demo_runs_every_stage_through_the_bundles(synthetic_small_cohort, pinned_models, tmp_path, capsys) -> None:
    from monai_stroke.inference import check_report, load_cascade_models

    runner = RecordingRunner(pinned_models)
    settings = DemoSettings.quick()
    out = tmp_path / "demo"
    record = run_demo(out, settings, dataset_dir=synthetic_small_cohort, device="cpu", bundle_runner=runner)

    assert [c["configs"] for c in runner.calls] == [
        ["hemorrhage_classification/train.yaml"],
        ["hemorrhage_classification/train.yaml", "hemorrhage_classification/evaluate.yaml"],
        ["adaptive_transfer/train.yaml"],
        ["adaptive_transfer/train.yaml"],
    ]
    early, old = runner.calls[2], runner.calls[3]
    assert (early["task"], old["task"]) == ("early_vs_intact", "old_vs_intact")
    source = str(out / "runs" / "hemorrhage" / "models" / "model.pt")
    assert early["source_checkpoint"] == old["source_checkpoint"] == source
    shared = ("template_spacing", "registration", "crop_size", "contralateral", "cache_dir")
    assert {k: early[k] for k in shared} == {k: old[k] for k in shared}  # one registration cache for both tasks
    assert early["depths"] == list(settings.depths) and early["network_size"] == "tiny"
    assert all(c["dataset_dir"] == str(synthetic_small_cohort) for c in runner.calls)

    models = load_cascade_models(out / "models")
    assert models.early.contract.task == "early_vs_intact"
    reports = sorted((out / "reports").iterdir())
    test_patients = pd.read_csv(Path(synthetic_small_cohort) / "cohort.csv").query("split == 'test'")["patient_id"]
    assert [p.name for p in reports] == list(test_patients)[: settings.n_reports]
    for folder in reports:
        assert check_report(json.loads((folder / "report.json").read_text())) == []

    page = (out / "summary.html").read_text()
    for text in ("Hemorrhage network", "early_vs_intact", "old_vs_intact", "layer0", reports[0].name, "tensorboard"):
        assert text in page
    sources = re.findall(r'src="([^"]+)"', page)
    assert any(s.endswith("report.png") for s in sources)
    assert all((out / s).is_file() for s in sources), sources
    assert set(record["timings_s"]) >= set(STAGES)

    # a second run with the same settings skips every finished stage
    again = RecordingRunner(pinned_models)
    run_demo(out, settings, dataset_dir=synthetic_small_cohort, device="cpu", bundle_runner=again)
    assert again.calls == []
    assert "skipped" in capsys.readouterr().err

    # other settings: the old runs go (the ATL bundle refuses to resume a search with other settings)
    marker = out / "runs" / "atl_early_vs_intact" / "atl_table.csv"
    other = dataclasses.replace(settings, epochs_per_depth=2, n_reports=0)
    third = RecordingRunner(pinned_models)
    run_demo(out, other, dataset_dir=synthetic_small_cohort, device="cpu", bundle_runner=third)
    assert len(third.calls) == 4 and third.calls[2]["epochs_per_depth"] == 2
    assert marker.is_file() and not (out / "reports").exists()  # rewritten by the new run; old reports gone


def test_demo_refuses_a_folder_it_did_not_write(tmp_path, capsys) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    with pytest.raises(UserInputError, match="not a demo folder"):
        run_demo(foreign, DemoSettings.quick())
    assert main(["demo", "--out", str(foreign), "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not a demo folder" in err[0]
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize(
    "categories,expected",
    [
        ({}, {"L": 10, "R": 10}),
        ({("L", "M2"): "frank_hypodensity", ("L", "I"): "territorial_infarction"}, {"L": 8, "R": 10}),
        ({("R", "C"): "old_infarction", ("R", "L"): "recent_infarction"}, {"L": 10, "R": 10}),
    ],
)
def test_truth_aspects_counts_early_ischemic_sign_categories(categories, expected) -> None:
    from monai_stroke.vocabulary import REGIONS

    rows = [
        {"patient_id": "P", "side": s, "region": r, "category": categories.get((s, r), "intact")}
        for s in ("L", "R")
        for r in REGIONS
    ]
    assert truth_aspects(pd.DataFrame(rows)) == expected
