"""Hemorrhage slice datasets: labels in ingested order, windowed neighbour stacks, the per-series cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import torch

from monai_stroke.data import default_cache_dir, slice_datasets
from monai_stroke.errors import UserInputError
from monai_stroke.io.geometry import position_along_normal
from monai_stroke.manifests import read_rsna_labels

SIZE = (32, 32)


@pytest.fixture(scope="module")
def slices(synthetic_small_cohort):
    # the default cache: the bundle tests then find these series ingested
    return slice_datasets(synthetic_small_cohort, spatial_size=SIZE, cache_dir=default_cache_dir())


def _truth_in_slice_order(series_dir: Path, labels: pd.DataFrame) -> list[int]:
    """``any`` per slice, ordered by position along the slice normal: read straight from the files."""
    rows = []
    for f in series_dir.glob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        position = position_along_normal(ds.ImagePositionPatient, ds.ImageOrientationPatient)
        rows.append((position, int(labels.loc[f.stem, "any"])))
    return [label for _, label in sorted(rows)]


def test_labels_follow_the_ingested_slice_order(slices, synthetic_small_cohort) -> None:
    labels = read_rsna_labels(Path(synthetic_small_cohort) / "rsna_labels.csv")
    labels.index = [i if i.startswith("ID_") else f"ID_{i}" for i in labels.index]
    table = pd.concat([ds.table for ds in slices])
    bleeding = table.groupby("patient_id")["label_any"].max()
    assert bleeding.sum() >= 3, "the cohort has hemorrhage patients in every split"
    for pid in bleeding.index:
        rows = table.loc[table["patient_id"] == pid].sort_values("slice_index")
        assert rows["slice_index"].tolist() == list(range(len(rows)))
        truth = _truth_in_slice_order(Path(synthetic_small_cohort) / pid / "dicom", labels)
        assert rows["label_any"].tolist() == truth, pid


def test_splits_hold_whole_patients(slices, synthetic_small_cohort) -> None:
    cohort = pd.read_csv(Path(synthetic_small_cohort) / "cohort.csv")
    for split, ds in zip(("train", "val", "test"), slices, strict=True):
        assert set(ds.table["patient_id"]) == set(cohort.loc[cohort["split"] == split, "patient_id"])
        assert (ds.table["split"] == split).all()


@pytest.mark.parametrize("slice_index", [0, 5, -1])
def test_sample_is_the_windowed_stack_of_target_and_neighbours(slices, slice_index) -> None:
    val = slices[1]
    rows = val.table.loc[val.table["patient_id"] == val.table["patient_id"].iloc[0]]
    row = rows.iloc[slice_index]
    sample = val[int(row["sample_id"])]
    volume = val.patients[int(row["patient"])]["image"][0]  # (X, Y, Z) HU, resized in-plane
    z_count = volume.shape[-1]
    z = int(row["slice_index"])
    expected = []
    for zz in (max(z - 1, 0), z, min(z + 1, z_count - 1)):
        for center, width in ((40, 80), (80, 200), (600, 2800)):
            expected.append(((volume[..., zz] - (center - width / 2)) / width).clamp(0, 1))
    assert sample["image"].shape == (9, *SIZE) and sample["image"].dtype == torch.float32
    torch.testing.assert_close(sample["image"], torch.stack(expected), rtol=0, atol=1e-6)
    assert sample["label"].tolist() == [float(row[f"label_{n}"]) for n in val.output_names]


def test_only_the_training_split_is_augmented(slices) -> None:
    train, val, _ = slices
    assert torch.equal(val[3]["image"], val[3]["image"])
    train.set_random_state(0)
    draws = [train[3]["image"] for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_cache_is_reused_and_keyed_by_what_it_computes(synthetic_small_cohort, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    (first,) = slice_datasets(synthetic_small_cohort, splits=("val",), spatial_size=SIZE, cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == first.table["patient_id"].nunique()

    def no_ingest(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr("monai_stroke.io.transforms.load_ct_series", no_ingest)
    # another window and neighbour count only change per-sample transforms: the ingested series are reused
    (again,) = slice_datasets(
        synthetic_small_cohort, splits=("val",), spatial_size=SIZE, cache_dir=cache, windows="brain", neighbours=2
    )
    assert torch.equal(again.patients[0]["image"], first.patients[0]["image"])
    assert again[0]["image"].shape[0] == 5
    # another in-plane size is another pre-processing
    with pytest.raises(RuntimeError) as failure:  # MONAI's Compose wraps the transform's error
        slice_datasets(synthetic_small_cohort, splits=("val",), spatial_size=(24, 24), cache_dir=cache)
    assert "cache should have answered" in str(failure.value.__cause__)


def test_a_changed_series_is_ingested_again(synthetic_small_cohort, tmp_path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synthetic_small_cohort, data, symlinks=True)
    cache = tmp_path / "cache"
    slice_datasets(data, splits=("val",), spatial_size=SIZE, cache_dir=cache)
    before = set(cache.glob("*.pt"))
    some_file = sorted((data / "P002" / "dicom").glob("*.dcm"))[0]
    some_file.touch()
    slice_datasets(data, splits=("val",), spatial_size=SIZE, cache_dir=cache)
    assert len(set(cache.glob("*.pt")) - before) == 1


def test_a_dataset_without_slice_labels_is_a_user_error(synthetic_small_cohort, tmp_path) -> None:
    data = tmp_path / "no_labels"
    data.mkdir()
    shutil.copy(Path(synthetic_small_cohort) / "cohort.csv", data)
    cohort = pd.read_csv(data / "cohort.csv")
    for pid in cohort["patient_id"]:
        (data / pid).symlink_to(Path(synthetic_small_cohort) / pid)
    with pytest.raises(UserInputError, match="rsna_labels.csv"):
        slice_datasets(data, spatial_size=SIZE)


def test_recipe_records_explicit_windows(slices) -> None:
    fields = slices[0].recipe.contract_fields()
    assert fields["windows_hu"] == [[40.0, 80.0], [80.0, 200.0], [600.0, 2800.0]]
    assert fields["chain_params"]["windows"] == fields["windows_hu"]
    assert fields["spatial_size"] == list(SIZE) and fields["neighbours"] == 1
    assert slices[0].recipe.in_channels == 9
