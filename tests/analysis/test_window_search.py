from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

sys.path.insert(0, str(Path(__file__).parents[1] / "transforms"))  # the shared region test helpers
from region_helpers import small_atlas, synthetic_early_dataset  # noqa: E402

from monai_stroke.analysis import (  # noqa: E402
    DEFAULT_EDGES_HU,
    TaskHistograms,
    collect_histograms,
    propose_window,
    write_window_search,
)
from monai_stroke.anatomy import Atlas, load_template  # noqa: E402
from monai_stroke.cli import main  # noqa: E402
from monai_stroke.errors import UserInputError  # noqa: E402
from monai_stroke.manifests import get_task  # noqa: E402
from monai_stroke.transforms import RegionCropd  # noqa: E402

EDGES = DEFAULT_EDGES_HU


def _gaussian(mean: float, sd: float) -> np.ndarray:
    centres = (EDGES[:-1] + EDGES[1:]) / 2
    g = np.exp(-0.5 * ((centres - mean) / sd) ** 2)
    return g / g.sum()


@pytest.mark.parametrize("shift", [-1.7, -4.0, -10.0])
def test_the_rule_centres_small_shifts_on_the_tissue_and_follows_large_ones(shift) -> None:
    tissue = _gaussian(38.0, 5.0)
    proposal = propose_window(_gaussian(38.0 + shift, 5.0) - tissue, EDGES)
    assert proposal.low_hu < 38.0 + shift < 38.0 < proposal.high_hu  # both lobes inside the window
    if shift > -5:  # a shift below the spread: two lobes at about mean -/+ spread, window ~4 spreads wide
        assert abs(proposal.center_hu - (38.0 + shift / 2)) <= 1.0
        assert 16.0 <= proposal.width_hu <= 26.0
    else:  # the lower lobe moves with the lesion
        assert proposal.center_hu <= 34.0
    assert proposal.width_hu == round(proposal.high_hu - proposal.low_hu)


def test_the_window_moves_down_and_widens_as_the_lesion_darkens() -> None:
    tissue = _gaussian(38.0, 5.0)
    proposals = [propose_window(_gaussian(38.0 + s, 5.0) - tissue, EDGES) for s in (-2.0, -6.0, -12.0)]
    centers = [p.center_hu for p in proposals]
    widths = [p.width_hu for p in proposals]
    assert centers == sorted(centers, reverse=True) and centers[0] - centers[-1] >= 4
    assert widths == sorted(widths)


@pytest.mark.parametrize(
    "difference, kwargs, message",
    [
        (np.zeros(len(EDGES) - 1), {}, "empty"),
        (np.ones(len(EDGES) - 1), {"mass": 1.0}, "mass"),
        (np.ones(3), {}, "edges"),
    ],
)
def test_the_rule_refuses_what_it_cannot_use(difference, kwargs, message) -> None:
    with pytest.raises(UserInputError, match=message):
        propose_window(difference, EDGES, **kwargs)


@pytest.fixture(scope="module")
def template_volume():
    """The template's ganglionic level (z -12..+17 mm, every ganglionic region): a sub-grid of the template grid."""
    template = load_template()
    affine = template.affine.copy()
    affine[2, 3] += 60 * affine[2, 2]
    return Atlas.default(), np.asarray(template.dataobj, dtype=np.float32)[:, :, 60:90].copy(), affine


def _cohort_on_template(atlas, base, affine, contrast, seed=0):
    """Patients built directly on the template grid: template HU + 4 HU noise, one region per patient darkened by
    ``contrast`` HU, on alternating sides; cropped the way the window search crops."""
    crop = RegionCropd(
        "image", atlas=atlas, regions=["L", "I", "M2"], spatial_size=None, contralateral=True, mask_key="region_mask"
    )
    rng = np.random.default_rng(seed)
    samples = []
    for i, (side, region) in enumerate([("L", "L"), ("R", "I"), ("L", "M2"), ("R", "L")]):
        volume = base + 4.0 * rng.standard_normal(base.shape, dtype=np.float32)
        volume[atlas.region_mask(side, region)[:, :, 60:90]] += contrast
        categories = [{"side": side, "region": region, "category": "frank_hypodensity"}]
        categories += [
            {"side": s, "region": r, "category": "intact"}
            for s in "LR"
            for r in ("L", "I", "M2")
            if (s, r) != (side, region)
        ]
        image = MetaTensor(torch.from_numpy(volume[None]), affine=torch.as_tensor(affine))
        samples += crop({"image": image, "patient_id": f"T{i}", "region_categories": categories})
    return samples


def test_proposal_lands_on_parenchyma_and_moves_with_the_lesion_contrast(template_volume) -> None:
    atlas, base, affine = template_volume
    task = get_task("early_vs_intact")
    results = {}
    for contrast in (-3.0, -12.0):
        hist = collect_histograms(_cohort_on_template(atlas, base, affine, contrast), [task])[task.name]
        results[contrast] = (hist.propose(), hist.summary(None))
    faint, strong = results[-3.0][0], results[-12.0][0]
    assert 25.0 <= faint.center_hu <= 55.0 and faint.low_hu >= 15.0 and faint.high_hu <= 60.0  # the 25-55 HU family
    assert strong.center_hu <= faint.center_hu - 3 and strong.low_hu < faint.low_hu - 5
    for contrast, (_, summary) in results.items():
        assert summary["n_pairs"] == 4 and summary["n_patients_with_pairs"] == 4
        assert summary["n_regions"] == {"negative": 20, "positive": 4}
        # the paired mean difference measures the contrast (thick-slice averaging keeps the mean)
        assert summary["mean_affected_minus_mirror_hu"] == pytest.approx(contrast, rel=0.15)


def _small_histograms(tmp_contrast: float = -6.0) -> dict[str, TaskHistograms]:
    atlas = small_atlas()
    rng = np.random.default_rng(1)
    volume = rng.normal(35.0, 3.0, size=(1, *atlas.labels.shape)).astype(np.float32)
    volume[0][atlas.region_mask("L", "C")] += tmp_contrast
    categories = [
        {"side": "L", "region": "C", "category": "frank_hypodensity"},
        {"side": "R", "region": "C", "category": "intact"},
        {"side": "L", "region": "M2", "category": "intact"},
    ]
    samples = RegionCropd("image", atlas=atlas, spatial_size=None, contralateral=True, mask_key="region_mask")(
        {"image": volume, "patient_id": "S1", "region_categories": categories}
    )
    tasks = [get_task("early_vs_intact"), get_task("old_vs_intact")]
    return collect_histograms(samples, tasks)


def test_outputs_are_complete_and_a_task_without_pairs_is_reported(tmp_path) -> None:
    out = tmp_path / "ws"
    result = write_window_search(_small_histograms(), out)
    assert sorted(p.name for p in out.iterdir()) == [
        "class_histograms_early_vs_intact.png",
        "difference_early_vs_intact.png",
        "histograms_early_vs_intact.csv",
        "histograms_old_vs_intact.csv",
        "windows.json",
    ]
    stored = json.loads((out / "windows.json").read_text())
    assert stored == json.loads(json.dumps(result))
    early = stored["tasks"]["early_vs_intact"]
    assert early["n_pairs"] == 1 and early["task_window"] == [40.0, 20.0] and "problem" not in early
    assert early["low_hu"] < 35 - 6 < 35 < early["high_hu"]
    assert "window_center_hu" not in stored["tasks"]["old_vs_intact"]  # no old infarction: reported, not fatal
    assert "old_infarction" in stored["tasks"]["old_vs_intact"]["problem"]
    assert stored["confirmed_by_training"] is False and "5% of its peak" in stored["rule"]
    assert "S1" not in (out / "windows.json").read_text()  # no patient identifiers in the outputs
    with pytest.raises(UserInputError, match="exists"):  # never over an existing folder without --overwrite
        write_window_search(_small_histograms(), out)


def test_no_task_with_pairs_is_an_error_and_writes_nothing(tmp_path) -> None:
    histograms = {"old_vs_intact": _small_histograms()["old_vs_intact"]}
    with pytest.raises(UserInputError, match="no old_infarction region"):
        write_window_search(histograms, tmp_path / "ws")
    assert list(tmp_path.iterdir()) == []


FAST = ["--template-spacing", "2", "--registration", "{stages: [rigid], levels_mm: [6], iterations: 40}"]


def test_cli_on_a_synthetic_dataset_proposes_a_parenchyma_window(tmp_path_factory, tmp_path, capsys) -> None:
    data = synthetic_early_dataset(tmp_path_factory.getbasetemp())
    out = tmp_path / "ws"
    assert main(["window-search", "--data", str(data), "--task", "early_vs_intact", "--out", str(out), *FAST]) == 0
    result = json.loads((out / "windows.json").read_text())
    early = result["tasks"]["early_vs_intact"]
    assert 25.0 <= early["window_center_hu"] <= 55.0 and early["low_hu"] >= 15.0 and early["high_hu"] <= 65.0
    assert early["n_pairs"] >= 1 and early["mean_affected_minus_mirror_hu"] < 0
    assert result["patients"] == 1 and result["excluded_registration"] == 0
    assert {"difference_early_vs_intact.png", "class_histograms_early_vs_intact.png"} <= {p.name for p in out.iterdir()}
    assert "early_vs_intact: proposed window" in capsys.readouterr().out


def test_a_patient_whose_registration_fails_its_check_is_left_out(tmp_path_factory, monkeypatch, caplog) -> None:
    import monai_stroke.transforms.chains as chains
    from monai_stroke.analysis.window_search import patient_samples

    data = synthetic_early_dataset(tmp_path_factory.getbasetemp())
    badly_registered = MetaTensor(torch.zeros(1, 4, 4, 3), meta={"template_transform": torch.eye(4), "brain_dice": 0.5})
    monkeypatch.setattr(chains, "load_chain", lambda *a, **k: lambda record: [{"image": badly_registered}])
    report: dict[str, int] = {}
    assert list(patient_samples(data, [get_task("early_vs_intact")], report=report)) == []
    assert report == {"patients": 0, "excluded_registration": 1}
    assert "brain Dice 0.50" in caplog.text and "P0" not in caplog.text  # position in the cohort, not the id


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{missing}", "--task", "early_vs_intact"], "does not exist"),
        (["--data", "{data}", "--task", "no_such_task"], "unknown task"),
        (["--data", "{data}", "--range-hu", "50", "10"], "--range-hu"),
        (["--data", "{data}", "--registration", "[1, 2]"], "--registration"),
        (["--data", "{data}", "--out", "{existing}"], "exists"),
    ],
)
def test_cli_bad_input_is_one_error_line(tmp_path, capsys, args, message) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "cohort.csv").write_text("patient_id,series_dir,split\n")
    existing = tmp_path / "existing"
    existing.mkdir()
    values = {"missing": tmp_path / "nope", "data": data, "existing": existing}
    argv = ["window-search", *(a.format(**values) for a in args)]
    if "--out" not in args:
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out").exists()
