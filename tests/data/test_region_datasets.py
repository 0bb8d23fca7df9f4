"""Ischemic region datasets: task labels from regions.csv, task windows, one registration per patient for all tasks."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from data_helpers import FAST_REGION_PARAMS, ischemic_subset

from monai_stroke.anatomy import Atlas
from monai_stroke.data import default_cache_dir, region_datasets
from monai_stroke.manifests import get_task

pytestmark = pytest.mark.slow  # registers 4 patients (about 10 s each on 2 busy cores)


@pytest.fixture(scope="module")
def subset(synthetic_small_cohort, tmp_path_factory):
    return ischemic_subset(synthetic_small_cohort, tmp_path_factory.mktemp("ischemic") / "data")


@pytest.fixture(scope="module")
def early(subset):
    return region_datasets(subset, "early_vs_intact", cache_dir=default_cache_dir(), **FAST_REGION_PARAMS)


def test_labels_come_from_regions_csv_through_the_task(early, subset) -> None:
    regions = pd.read_csv(subset / "regions.csv").set_index(["patient_id", "side", "region"])["category"]
    task = get_task("early_vs_intact")
    table = pd.concat([ds.table for ds in early])
    assert table["label_early_vs_intact"].sum() > 0
    for ds in early:  # what class weighting reads, without loading a crop
        assert ds.labels.tolist() == [[float(v)] for v in ds.table["label_early_vs_intact"]]
    for row in table.itertuples():
        category = regions[(row.patient_id, row.side, row.region)]
        assert row.category == category
        assert row.label_early_vs_intact == task.label_of(category)
    # categories outside the task (old or recent infarction) are not samples
    left_out = regions[~regions.isin(task.categories)]
    assert len(left_out) > 0
    assert not set(left_out.index) & set(zip(table.patient_id, table.side, table.region, strict=True))


def test_splits_hold_whole_patients(early, subset) -> None:
    cohort = pd.read_csv(subset / "cohort.csv")
    for split, ds in zip(("train", "val", "test"), early, strict=True):
        assert set(ds.table["patient_id"]) == set(cohort.loc[cohort["split"] == split, "patient_id"])


@pytest.mark.parametrize("task, window", [("early_vs_intact", (40, 20)), ("old_vs_intact", (40, 30))])
def test_another_task_reuses_the_registrations_and_uses_its_window(subset, early, monkeypatch, task, window) -> None:
    def no_registration(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr("monai_stroke.transforms.registration.register_to_template", no_registration)
    (val,) = region_datasets(subset, task, splits=("val",), cache_dir=default_cache_dir(), **FAST_REGION_PARAMS)
    assert val.recipe.windows_hu == [[float(window[0]), float(window[1])]]
    row = val.table.iloc[0]
    crop = val.patients[int(row["patient"])][int(row["region_index"])]
    hu, target = crop["image"][0], int(crop["target_slice"])  # (H, W, S) template slices in HU
    low = window[0] - window[1] / 2
    expected = torch.stack([((hu[..., z] - low) / window[1]).clamp(0, 1) for z in (target - 1, target, target + 1)])
    sample = val[0]
    assert sample["image"].shape == (3, 32, 32)
    torch.testing.assert_close(sample["image"], expected, rtol=0, atol=1e-6)
    assert float(sample["label"]) == float(row[f"label_{task}"])


def test_recipe_carries_template_and_atlas_identity(early) -> None:
    atlas = Atlas.default()
    fields = early[0].recipe.contract_fields()
    assert fields["atlas_identity"] == atlas.identity
    assert fields["template_identity"] == atlas.template_identity
    assert fields["task"] == "early_vs_intact" and fields["output_names"] == ["early_vs_intact"]
    assert early[0].recipe.in_channels == 3
