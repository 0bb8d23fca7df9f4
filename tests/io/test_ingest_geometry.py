"""Where ingest puts every voxel: slice order along the normal, RAS affine, gantry-tilt un-shearing, gaps."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_factory import blob_phantom, head_phantom, linear_phantom, write_ct_series
from ingest_checks import blob_centroids_lps, inside_source_fov, match_error_mm, voxel_world_lps

from monai_stroke.io import AIR_HU, load_ct_series, save_nifti
from monai_stroke.io.geometry import check_spacing, regularize_stack

RAMP = linear_phantom((2.0, -3.0, 5.0), offset=10.0)


@pytest.mark.parametrize(
    "positions, gaps, uneven",
    [
        ([0, 5, 10, 15], (), ()),
        ([0, 5.001, 9.999, 15.0004], (), ()),  # rounding noise of real headers
        ([0, 5, 15, 20], ((1, 1),), ()),  # one slice missing between 5 and 15
        ([0, 5, 10, 25, 30], ((2, 2),), ()),  # two missing
        ([0, 5, 12, 17], (), (1,)),  # 7 mm: not a multiple of 5
        ([0, 5, 10, 12.5, 15, 20, 25], (), (2, 3)),  # a foreign slice in between
    ],
)
def test_check_spacing_finds_gaps_and_uneven_steps(positions, gaps, uneven) -> None:
    result = check_spacing(positions)
    assert result.gaps == gaps
    assert result.uneven == uneven
    assert result.regular == (not gaps and not uneven)


def _assert_voxels_match_phantom(volume, written, atol: float = 1.01) -> None:
    """Every voxel holds the phantom's HU at the world position its affine gives (air outside the source FOV)."""
    points = voxel_world_lps(volume.affine, volume.array.shape)
    inside = inside_source_fov(points, written)
    expected = written.phantom(points)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(volume.array[inside], expected[inside], atol=atol)
    outside = ~inside_source_fov(points, written, margin_px=-1.0)
    assert np.all(volume.array[outside] == AIR_HU)


@pytest.mark.parametrize(
    "case",
    [
        dict(),  # plain axial, IOP (1,0,0,0,1,0)
        dict(orientation=(1, 0, 0, 0, -1, 0)),  # normal points to the feet: Z runs downwards
        dict(orientation=(np.cos(0.3), np.sin(0.3), 0, -np.sin(0.3), np.cos(0.3), 0)),  # rotated in-plane
        dict(names="shuffled", instance_numbers="shuffled", subfolders=2),  # only the position may order slices
        dict(names="shuffled", instance_numbers="reversed", tilt_deg=20.0),
        dict(tilt_deg=-15.0, slice_step_mm=3.0),
    ],
    ids=["axial", "feet-first-normal", "in-plane-rotated", "shuffled-names-lying-numbers", "tilt+20", "tilt-15"],
)
def test_every_voxel_is_where_the_affine_says(tmp_path, case) -> None:
    written = write_ct_series(tmp_path / "series", phantom=RAMP, **case)
    volume = load_ct_series(tmp_path / "series")
    _assert_voxels_match_phantom(volume, written)
    # Z ascends along the slice normal (r x c), whatever the file names and InstanceNumbers said
    normal_ras = volume.affine[:3, 2] * np.array([-1, -1, 1])
    assert np.dot(normal_ras, written.normal) > 0
    assert volume.slice_uids == written.sop_uids
    assert volume.slice_files == [str(f) for f in written.files]
    assert abs(volume.summary["tilt_deg"] - abs(case.get("tilt_deg", 0.0))) < 0.01
    # un-sheared: orthogonal affine, spacing along the normal = origin step x cos(tilt)
    axes = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-6)
    step = case.get("slice_step_mm", 5.0) * np.cos(np.radians(case.get("tilt_deg", 0.0)))
    assert volume.spacing[2] == pytest.approx(step, abs=1e-3)


# blob centres (LPS mm) spread over the volume: far from the reference slice the naive reading drifts most
BLOBS_LPS = np.array([[10.0, -20.0, -25.0], [-30.0, 15.0, 0.0], [25.0, 30.0, 24.0], [-15.0, -35.0, 12.0]])
TILT_CASE = dict(n_slices=36, shape=(64, 64), pixel_spacing=(3.0, 3.0), slice_step_mm=2.5, tilt_deg=25.0)


@pytest.fixture(scope="module")
def blob_series(tmp_path_factory):
    """The tilted blob phantom, written once for the tests of this module (they only read it)."""
    background = head_phantom(shell_mm=0.0, brain_hu=30.0)  # air around a bone-free head: only blobs are bright
    phantom = blob_phantom(BLOBS_LPS, sigma_mm=3.0, peak_hu=1000.0, background=background)
    folder = tmp_path_factory.mktemp("tilted")
    return folder, write_ct_series(folder, phantom=phantom, **TILT_CASE)


def test_tilted_series_puts_spheres_where_they_are_and_naive_reading_does_not(blob_series) -> None:
    folder, written = blob_series
    volume = load_ct_series(folder)
    assert volume.summary["tilt_deg"] == pytest.approx(25.0, abs=0.01)
    assert volume.summary["tilt_corrected"] is True
    assert volume.array.shape == (64, 64, 36)  # one output slice per input slice
    measured = blob_centroids_lps(volume.array, volume.affine, background=30.0)
    assert len(measured) == len(BLOBS_LPS)
    assert np.all(match_error_mm(measured, BLOBS_LPS) < 1.0)

    # the naive orthogonal reading: stored slices as they are, the origin step as spacing along the normal
    naive_affine = np.eye(4)
    r, c = np.array(written.orientation[:3]), np.array(written.orientation[3:])
    naive_affine[:3, 0] = r * written.pixel_spacing[1]
    naive_affine[:3, 1] = c * written.pixel_spacing[0]
    naive_affine[:3, 2] = written.normal * TILT_CASE["slice_step_mm"]
    naive_affine[:3, 3] = written.origins[0]
    naive_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ naive_affine
    naive = blob_centroids_lps(written.hu.transpose(2, 1, 0), naive_affine, background=30.0)
    naive_error = match_error_mm(naive, BLOBS_LPS)
    assert naive_error.max() > 8.0 and naive_error.mean() > 4.0


def test_keep_tilt_puts_the_shear_in_the_affine(blob_series) -> None:
    folder, written = blob_series
    volume = load_ct_series(folder, correct_tilt=False)
    assert volume.summary["tilt_corrected"] is False
    # pixels untouched: exactly the stored slices
    np.testing.assert_array_equal(volume.array, written.hu.transpose(2, 1, 0))
    # third axis is the oblique origin step, not the normal
    step_lps = volume.affine[:3, 2] * np.array([-1, -1, 1])
    np.testing.assert_allclose(step_lps, written.origins[1] - written.origins[0], atol=1e-3)
    measured = blob_centroids_lps(volume.array, volume.affine, background=30.0)
    assert np.all(match_error_mm(measured, BLOBS_LPS) < 1.0)


def test_sheared_nifti_is_unsheared_on_reading(tmp_path, blob_series) -> None:
    sheared = load_ct_series(blob_series[0], correct_tilt=False)
    out = save_nifti(sheared, tmp_path / "sheared.nii.gz")
    import nibabel as nib

    header = nib.load(out).header
    assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == 0  # a quaternion cannot hold a shear
    volume = load_ct_series(out)
    assert volume.summary["tilt_deg"] == pytest.approx(25.0, abs=0.01)
    axes = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-6)
    measured = blob_centroids_lps(volume.array, volume.affine, background=30.0)
    assert np.all(match_error_mm(measured, BLOBS_LPS) < 1.0)


@pytest.mark.parametrize("tilt_deg", [0.0, 20.0])
def test_missing_slice_is_filled_only_when_allowed(tmp_path, tilt_deg) -> None:
    written = write_ct_series(tmp_path / "gap", phantom=RAMP, skip=[5], tilt_deg=tilt_deg)
    volume = load_ct_series(tmp_path / "gap", allow_gaps=True)
    assert volume.array.shape[2] == 12 and volume.summary["filled_slices"] == [5]
    assert volume.slice_uids[5] is None and volume.slice_uids[:5] == written.sop_uids[:5]
    assert any("--allow-gaps" in w for w in volume.summary["warnings"])
    # the interpolated slice of a linear ramp is exact: the geometry after the gap is intact
    points = voxel_world_lps(volume.affine, volume.array.shape)
    interior = (slice(4, -4), slice(4, -4))
    np.testing.assert_allclose(volume.array[interior], written.phantom(points)[interior], atol=1.01)


def test_position_jitter_within_tolerance_is_regularised(tmp_path) -> None:
    # a 0.2 mm jitter (4% of 5 mm): on the grid, reported as the largest position error
    written = write_ct_series(tmp_path / "jitter", phantom=RAMP)
    import pydicom

    ds = pydicom.dcmread(written.files[4])
    ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [
        float(ds.ImagePositionPatient[2]) + 0.2
    ]
    ds.save_as(written.files[4])
    volume = load_ct_series(tmp_path / "jitter")
    assert volume.summary["filled_slices"] == []
    assert 0.1 < volume.summary["max_position_error_mm"] < 0.25


def test_regularize_stack_rejects_unsorted_index() -> None:
    slices = np.zeros((3, 4, 4), dtype=np.float32)
    origins = np.array([[0, 0, 0], [0, 0, 5], [0, 0, 10]], dtype=float)
    with pytest.raises(ValueError, match="output_index"):
        regularize_stack(slices, origins, (1, 0, 0), (0, 1, 0), (1, 1), output_index=[0, 2, 1])


@pytest.mark.parametrize("shift", [(0.3, 0.0), (2.7, -1.2), (-5.5, 0.25), (0.0, 3.0), (60.0, 0.0)])
def test_fast_linear_shift_equals_scipy(shift) -> None:
    from scipy import ndimage

    from monai_stroke.io.geometry import shift_slices

    image = np.random.default_rng(0).normal(size=(37, 41)).astype(np.float32)
    shifted = shift_slices(image[None].copy(), np.array([shift]), fill_value=AIR_HU)[0]
    expected = ndimage.shift(image, shift, order=1, mode="grid-constant", cval=AIR_HU)
    np.testing.assert_allclose(shifted, expected, atol=1e-4)


def test_in_plane_rounding_noise_does_not_resample(tmp_path) -> None:
    import pydicom

    written = write_ct_series(tmp_path / "noise", phantom=RAMP)
    ds = pydicom.dcmread(written.files[7])
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x + 0.004, y - 0.003, z]  # 0.001 pixel: header rounding, not a tilt
    ds.save_as(written.files[7])
    volume = load_ct_series(tmp_path / "noise")
    assert volume.summary["tilt_corrected"] is False
    np.testing.assert_array_equal(volume.array.transpose(2, 1, 0), written.hu)  # no interpolation blur
