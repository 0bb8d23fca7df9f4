"""Scanner geometry, un-shearing and head pose of the synthetic cohort (no template needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from monai_stroke.io.geometry import LPS_TO_RAS, regularize_stack, slice_normal
from monai_stroke.synthetic import Couch, HeadPose, ScannerGeometry
from monai_stroke.synthetic.render import correlated_noise


def _geometry(tilt: float, n: int = 9) -> ScannerGeometry:
    return ScannerGeometry(rows=40, cols=48, pixel_spacing_mm=1.5, n_slices=n, table_start_mm=-20.0, tilt_deg=tilt)


@pytest.mark.parametrize("tilt", [0.0, 12.5, -18.0])
def test_slice_positions_step_along_the_table_and_planes_are_tilted(tilt: float) -> None:
    geom = _geometry(tilt)
    origins = geom.origins_lps
    # ImagePositionPatient moves along the table (z) by the table increment, nothing else
    np.testing.assert_allclose(np.diff(origins, axis=0), [[0.0, 0.0, 5.0]] * (geom.n_slices - 1), atol=1e-12)
    normal = slice_normal(geom.iop)
    # the slice plane is tilted about the left-right axis by the gantry tilt
    assert math.degrees(math.acos(normal[2])) == pytest.approx(abs(tilt), abs=1e-9)
    assert normal[0] == pytest.approx(0.0, abs=1e-12)
    # distance between planes = table step x cos(tilt)
    assert np.diff(origins @ normal) == pytest.approx(5.0 * math.cos(math.radians(tilt)))
    assert geom.spacing_along_normal_mm == pytest.approx(5.0 * math.cos(math.radians(tilt)))
    # every slice is centred on the table axis (the isocentre)
    centre = np.asarray(geom.ipp(3)) + geom.row_dir_lps * 1.5 * 47 / 2 + geom.col_dir_lps * 1.5 * 39 / 2
    np.testing.assert_allclose(centre[:2], [0.0, 0.0], atol=1e-9)


@pytest.mark.parametrize("tilt", [0.0, 15.0, -11.0])
def test_ingest_grid_and_unshear_match_ingest_regularisation(tilt: float) -> None:
    geom = _geometry(tilt)
    rng = np.random.default_rng(0)
    native = rng.normal(size=(geom.n_slices, geom.rows, geom.cols)).astype(np.float32)
    regular = regularize_stack(
        native.copy(), geom.origins_lps, geom.row_dir_lps, geom.col_dir_lps, [1.5, 1.5], fill_value=-7.0
    )
    np.testing.assert_allclose(geom.ingest_affine(), LPS_TO_RAS @ regular.affine, atol=1e-9)
    np.testing.assert_allclose(geom.unshear(native, cval=-7.0), regular.stack.transpose(2, 1, 0), atol=1e-5)
    # a slab of slices is un-sheared exactly as the same slices of the whole series
    slab = geom.unshear(native[3:6], cval=-7.0, first_slice=3)
    np.testing.assert_allclose(slab, regular.stack.transpose(2, 1, 0)[:, :, 3:6], atol=1e-5)
    assert geom.ingest_shape == regular.stack.transpose(2, 1, 0).shape


def test_ingest_affine_is_orthogonal_and_maps_voxels_onto_their_slice_planes() -> None:
    geom = _geometry(17.0)
    affine = geom.ingest_affine()
    gram = affine[:3, :3].T @ affine[:3, :3]
    np.testing.assert_allclose(gram, np.diag([1.5**2, 1.5**2, geom.spacing_along_normal_mm**2]), atol=1e-9)
    normal_ras = LPS_TO_RAS[:3, :3] @ geom.normal_lps
    for k in (0, 4, 8):
        world = affine @ np.array([10.0, 20.0, k, 1.0])
        plane = LPS_TO_RAS[:3, :3] @ np.asarray(geom.ipp(k))
        assert (world[:3] - plane) @ normal_ras == pytest.approx(0.0, abs=1e-9)


def test_unshear_rejects_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected slices"):
        _geometry(10.0).unshear(np.zeros((3, 5, 5), np.float32))


def test_head_pose_maps_world_to_template_as_the_inverse_of_its_affine() -> None:
    pose = HeadPose(
        rotation_deg=(8.0, -5.0, 9.5),
        head_center_world_mm=(4.0, -7.0, 12.0),
        template_center_mm=(0.0, -18.0, 15.0),
        scale=(1.04, 0.97, 1.02),
    )
    template_pts = np.random.default_rng(1).uniform(-60, 60, size=(3, 50))
    world = pose.template_to_world_affine() @ np.vstack([template_pts, np.ones((1, 50))])
    np.testing.assert_allclose(pose.world_to_template(world[:3]), template_pts, atol=1e-3)
    rot = pose.rotation
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    # the head centre lands where the pose says
    np.testing.assert_allclose(pose.world_to_template(np.array([4.0, -7.0, 12.0])), [0.0, -18.0, 15.0], atol=1e-4)


def test_head_pose_warp_is_small_smooth_and_zero_at_the_centre() -> None:
    warp = tuple(tuple(2.5 * (-1) ** (i + j) for j in range(6)) for i in range(3))
    rigid = HeadPose((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    warped = HeadPose((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), warp_mm=warp)
    pts = np.random.default_rng(2).uniform(-80, 80, size=(3, 200))
    shift = np.linalg.norm(warped.world_to_template(pts) - rigid.world_to_template(pts), axis=0)
    assert shift.max() < 20.0 and shift.max() > 1.0
    np.testing.assert_allclose(warped.world_to_template(np.zeros(3)), np.zeros(3), atol=1e-6)
    assert HeadPose.from_dict(warped.to_dict()) == warped


def test_couch_shell_covers_its_arc_only() -> None:
    couch = Couch(axis_lps=(0.0, 0.0), radius_mm=100.0, thickness_mm=4.0, half_angle_deg=60.0)
    # LPS +y is posterior: the shell lies under the head
    assert couch.fraction(np.array([0.0]), np.array([102.0]), 0.5)[0] == pytest.approx(1.0)
    assert couch.fraction(np.array([0.0]), np.array([-102.0]), 0.5)[0] == 0.0  # anterior: no couch
    assert couch.fraction(np.array([0.0]), np.array([90.0]), 0.5)[0] == 0.0  # inside the cradle: the head
    assert couch.fraction(np.array([0.0]), np.array([110.0]), 0.5)[0] == 0.0  # below the shell


@pytest.mark.parametrize("sigma_px", [0.0, 0.4, 1.3])
def test_correlated_noise_has_the_requested_sd_and_correlation(sigma_px: float) -> None:
    noise = correlated_noise(np.random.default_rng(3), (400, 400), 4.5, sigma_px)
    assert noise.std() == pytest.approx(4.5, rel=0.03)
    lag1 = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    # filtered white noise is correlated between neighbours as the filter kernel overlaps itself shifted by one
    kernel = ndimage.gaussian_filter1d(np.eye(1, 41, 20)[0], sigma_px) if sigma_px > 0 else np.eye(1, 41, 20)[0]
    expected = float(kernel[:-1] @ kernel[1:] / (kernel @ kernel))
    assert lag1 == pytest.approx(expected, abs=0.03)
    if sigma_px > 1:
        assert lag1 > 0.8
