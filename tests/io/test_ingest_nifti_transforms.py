"""NIfTI in and out, and the MONAI loaders (``LoadCTSeries`` / ``LoadCTSeriesd``)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from dicom_factory import blob_phantom, head_phantom, nifti_from_volume, write_ct_series
from ingest_checks import blob_centroids_lps, match_error_mm

from monai_stroke.errors import UserInputError
from monai_stroke.io import CTVolume, LoadCTSeries, LoadCTSeriesd, load_ct_series, save_nifti


@pytest.mark.parametrize("integral", [True, False], ids=["int16-on-disk", "float32-on-disk"])
def test_save_nifti_round_trip(tmp_path, integral) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(-1024, 2000, (10, 12, 5)).astype(np.float32)
    if not integral:
        array += 0.25
    affine = np.array([[-0.5, 0, 0, 60], [0, -0.6, 0, 70], [0, 0, 5, -30], [0, 0, 0, 1]], dtype=float)
    out = save_nifti(CTVolume(array=array, affine=affine), tmp_path / "v.nii.gz")
    image = nib.load(out)
    assert image.get_data_dtype() == (np.int16 if integral else np.float32)
    back = load_ct_series(out)
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.affine, affine)
    assert back.slice_uids is None and back.summary["format"] == "nifti" and back.summary["series_uid"] is None


def test_nifti_with_trailing_singleton_dimension_is_3d(tmp_path) -> None:
    data = np.full((6, 6, 4, 1), -1000.0, np.float32)
    data[2:4, 2:4] = 40
    volume = load_ct_series(nifti_from_volume(tmp_path / "v.nii.gz", data))
    assert volume.array.shape == (6, 6, 4)


@pytest.mark.parametrize(
    "data, message",
    [
        (np.full((6, 6, 4, 2), -1000.0, np.float32), "3D"),
        (np.full((6, 6, 1), -1000.0, np.float32), "at least 2 voxels"),
        (np.full((6, 6, 4), -5.0e4, np.float32), "plausible HU range"),
        (np.zeros((6, 6, 4), np.uint8), "no air"),  # a windowed 8-bit image
    ],
    ids=["4d", "one-slice", "below-range", "windowed-uint8"],
)
def test_nifti_that_is_not_a_3d_hu_volume_is_refused(tmp_path, data, message) -> None:
    with pytest.raises(UserInputError, match=message):
        load_ct_series(nifti_from_volume(tmp_path / "v.nii.gz", data))


def test_series_uid_with_nifti_is_refused(tmp_path) -> None:
    path = nifti_from_volume(tmp_path / "v.nii.gz", np.full((4, 4, 4), -1000.0, np.float32))
    with pytest.raises(UserInputError, match="only applies to DICOM"):
        load_ct_series(path, series_uid="1.2.3")


def test_load_ct_series_transform_returns_metatensor_with_geometry(tmp_path) -> None:
    written = write_ct_series(tmp_path / "dicom", phantom=head_phantom(), tilt_deg=10.0)
    image = LoadCTSeries()(tmp_path / "dicom")
    volume = load_ct_series(tmp_path / "dicom")
    assert tuple(image.shape) == (1, *volume.array.shape) and image.dtype == torch.float32
    np.testing.assert_array_equal(image[0].numpy(), volume.array)
    meta = image.meta
    assert meta["affine"].dtype == torch.float64
    np.testing.assert_allclose(meta["affine"].numpy(), volume.affine)
    np.testing.assert_allclose(meta["original_affine"].numpy(), volume.affine)
    np.testing.assert_array_equal(meta["spatial_shape"], volume.array.shape)
    assert meta["filename_or_obj"] == str(tmp_path / "dicom")
    assert meta["series_uid"] == written.series_uid
    assert meta["tilt_deg"] == pytest.approx(10.0, abs=0.01)
    np.testing.assert_allclose(meta["spacing"], volume.spacing)
    assert meta["slice_uids"] == written.sop_uids
    assert meta["slice_files"] == [str(f) for f in written.files]
    assert "PatientName" not in meta and "PatientID" not in meta


def test_load_ct_series_dict_picks_the_series_named_in_the_data(tmp_path) -> None:
    write_ct_series(tmp_path / "a", n_slices=10)
    b = write_ct_series(tmp_path / "b", n_slices=6)
    loader = LoadCTSeriesd(keys=["image", "prior"], series_uid_key="series_uid", allow_missing_keys=True)
    out = loader({"image": tmp_path, "series_uid": b.series_uid, "label": 1})
    assert out["image"].shape[-1] == 6 and out["image"].meta["series_uid"] == b.series_uid
    assert out["label"] == 1 and "prior" not in out
    with pytest.raises(KeyError):
        LoadCTSeriesd(keys="image")({"other": tmp_path})


def test_loader_output_survives_monai_orientation_to_ras(tmp_path) -> None:
    """A MONAI spatial transform reads our meta the way it reads LoadImage's: blobs stay where they are."""
    from monai.transforms import Orientationd

    blobs = np.array([[20.0, -15.0, -8.0], [-25.0, 25.0, 10.0]])
    phantom = blob_phantom(blobs, background=head_phantom(shell_mm=0.0, brain_hu=30.0))
    write_ct_series(tmp_path / "dicom", phantom=phantom, tilt_deg=18.0, n_slices=16, slice_step_mm=3.0)
    data = LoadCTSeriesd(keys="image")({"image": tmp_path / "dicom"})
    ras = Orientationd(keys="image", axcodes="RAS", labels=None)(data)["image"]  # labels from meta["space"]
    affine = ras.meta["affine"].numpy()
    assert np.all(np.diag(affine)[:3] > 0)
    measured = blob_centroids_lps(ras[0].numpy(), affine, background=30.0)
    assert np.all(match_error_mm(measured, blobs) < 1.0)
