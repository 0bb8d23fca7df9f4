"""Template registration and its inverse mapping (monai_stroke.transforms.registration).

Registrations are slow (seconds each on 2 cores), so the few that run optimise once per module: a synthetic patient
of ``monai_stroke.synthetic`` in a known rigid pose scanned with and without gantry tilt, and the CT template
itself scanned through a known rigid pose 35 mm off-centre with a neck and a head cradle in the field of view
(written as DICOM by the test factory). Everything else replays known transforms, which is cheap and exact.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parents[1] / "io"))
from dicom_factory import PATIENT_BIRTH_DATE, PATIENT_ID, PATIENT_NAME, write_ct_series  # noqa: E402

from monai_stroke.anatomy import brain_mask, load_template, side_of_x  # noqa: E402
from monai_stroke.cli import main  # noqa: E402
from monai_stroke.errors import UserInputError  # noqa: E402
from monai_stroke.io import LoadCTSeries, LoadCTSeriesd  # noqa: E402
from monai_stroke.transforms import (  # noqa: E402
    BRAIN_DICE_THRESHOLD,
    RegisterToTemplate,
    RegisterToTemplated,
    RegistrationParams,
    TemplateToPatient,
    TemplateToPatientd,
    map_points_to_patient,
    map_points_to_template,
    map_to_patient,
    registration_quality,
    registration_record,
)
from monai_stroke.transforms.registration import (  # noqa: E402
    head_mask,
    intracranial_mask,
    resample_to_template,
    template_grid,
)

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
MAX_ERROR_MM = 2.0
MAX_ERROR_DEG = 2.0


# --- helpers -------------------------------------------------------------------------------------------------------


def rotation(angles_deg) -> np.ndarray:
    """Rotation about x, then y, then z (degrees)."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose_matrix(angles_deg, template_point, world_point, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Template RAS -> world RAS: rotate and scale about ``template_point``, which lands on ``world_point``."""
    m = np.eye(4)
    m[:3, :3] = rotation(angles_deg) @ np.diag(scale)
    m[:3, 3] = np.asarray(world_point, float) - m[:3, :3] @ np.asarray(template_point, float)
    return m


@pytest.fixture(scope="module")
def brain_points() -> np.ndarray:
    """Template RAS points spread over the brain (every 6 mm)."""
    image = brain_mask()
    idx = np.argwhere(np.asarray(image.dataobj)[::6, ::6, ::6] > 0) * 6
    return idx @ image.affine[:3, :3].T + image.affine[:3, 3]


def pose_error(estimated: np.ndarray, truth: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """Largest displacement (mm) over ``points`` between two template -> patient maps, and their rotation
    difference (degrees, of the nearest rotation to ``estimated @ truth^-1``)."""
    moved = points @ estimated[:3, :3].T + estimated[:3, 3]
    expected = points @ truth[:3, :3].T + truth[:3, 3]
    u, _, vt = np.linalg.svd(estimated[:3, :3] @ np.linalg.inv(truth[:3, :3]))
    cos = np.clip((np.trace(u @ vt) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.linalg.norm(moved - expected, axis=1).max()), math.degrees(math.acos(cos))


# --- a synthetic patient in a known rigid pose, with and without gantry tilt ---------------------------------------


@pytest.fixture(scope="module")
def synthetic_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    """{"tilted", "untilted"}: (DICOM folder, true template -> world RAS matrix) of one head in one pose."""
    from monai_stroke.synthetic import SynthConfig, default_head, plan_patient, render_patient
    from monai_stroke.synthetic import write_ct_series as write_synthetic

    head = default_head()
    config = SynthConfig(size="small")
    out = {}
    tilted = plan_patient("R001", [11, 3], "intact", head, config, tilted=True)
    # scale 1 and no warp: the pose is then exactly rigid, and registration must recover it
    pose = dataclasses.replace(tilted.pose, scale=(1.0, 1.0, 1.0), warp_mm=tuple((0.0,) * 6 for _ in range(3)))
    untilted = plan_patient("R001", [11, 3], "intact", head, config, tilted=False)
    for name, spec in (("tilted", tilted), ("untilted", untilted)):
        spec = dataclasses.replace(spec, pose=pose)
        folder = tmp_path_factory.mktemp(f"synthetic_{name}")
        write_synthetic(render_patient(spec, head, lesions=False).hu, spec, folder)
        out[name] = (folder, pose.template_to_world_affine(), spec.scanner.tilt_deg)
    assert abs(out["tilted"][2]) >= 10.0 and out["untilted"][2] == 0.0
    return out


@pytest.fixture(scope="module")
def registered(synthetic_series) -> dict[str, dict]:
    """Each synthetic series ingested and registered (output on a 2 mm template grid)."""
    load = LoadCTSeriesd(keys="image")
    register = RegisterToTemplated(keys="image", spacing=2.0)
    return {name: register(load({"image": str(folder)})) for name, (folder, _, _) in synthetic_series.items()}


@pytest.mark.parametrize("name", ["tilted", "untilted"])
def test_recovers_a_known_rigid_pose(name, synthetic_series, registered, brain_points) -> None:
    truth = synthetic_series[name][1]
    image = registered[name]["image"]
    error_mm, error_deg = pose_error(np.asarray(image.meta["template_transform"]), truth, brain_points)
    assert error_mm < MAX_ERROR_MM, f"{name}: largest brain displacement {error_mm:.2f} mm"
    assert error_deg < MAX_ERROR_DEG, f"{name}: rotation off by {error_deg:.2f} deg"
    quality = registration_quality(image)
    assert quality["passed"] and quality["brain_dice"] >= BRAIN_DICE_THRESHOLD
    assert all(abs(s - 1.0) < 0.03 for s in quality["scales"]), quality["scales"]


def test_tilted_series_registers_as_well_as_untilted(synthetic_series, registered, brain_points) -> None:
    errors = {
        name: pose_error(np.asarray(registered[name]["image"].meta["template_transform"]), truth, brain_points)[0]
        for name, (_, truth, _) in synthetic_series.items()
    }
    dice = {name: registered[name]["image"].meta["brain_dice"] for name in registered}
    assert abs(errors["tilted"] - errors["untilted"]) < 1.0, errors
    assert abs(dice["tilted"] - dice["untilted"]) < 0.02, dice
    assert abs(registered["tilted"]["image"].meta["tilt_deg"]) > 10.0


def test_registered_image_is_on_the_template_grid_with_its_metadata(synthetic_series, registered) -> None:
    image = registered["untilted"]["image"]
    affine, shape = template_grid(2.0)
    assert tuple(image.shape) == (1, *shape)
    np.testing.assert_allclose(image.affine.numpy(), affine)
    meta = image.meta
    folder, _, _ = synthetic_series["untilted"]
    assert meta["filename_or_obj"] == str(folder) and meta["series_uid"]
    assert tuple(meta["patient_spatial_shape"]) == tuple(LoadCTSeries()(str(folder)).shape[1:])
    assert meta["template_transform"].dtype == np.float64 and meta["template_transform"].shape == (4, 4)
    record = registration_record(image)
    assert record["params"] == RegistrationParams().to_dict()
    assert [s["stage"] for s in record["stages"] if "matrix" in s] == ["rigid", "affine"]
    # air outside the head, brain HU at the template's brain centre
    assert float(image[0, 0, 0, 0]) == pytest.approx(-1024.0, abs=30)
    white_matter = tuple(int(round(v)) for v in np.linalg.inv(affine)[:3] @ np.array([26.0, -10.0, 30.0, 1.0]))
    assert 15.0 < float(image[0][white_matter]) < 50.0


def test_brain_dice_is_low_for_a_deliberately_wrong_transform(synthetic_series, registered, caplog) -> None:
    folder, _, _ = synthetic_series["untilted"]
    good = np.asarray(registered["untilted"]["image"].meta["template_transform"])
    wrong = good @ pose_matrix((15.0, 0.0, 10.0), (0.0, -18.0, 15.0), (0.0, 2.0, 33.0))
    replayed = RegisterToTemplate(spacing=4.0)(LoadCTSeries()(str(folder)), transform=wrong)
    np.testing.assert_allclose(replayed.meta["template_transform"], wrong)
    assert replayed.meta["brain_dice"] < BRAIN_DICE_THRESHOLD - 0.05
    quality = registration_quality(replayed)
    assert not quality["passed"] and any("Dice" in w for w in quality["warnings"])
    assert registration_record(replayed)["replayed"] is True
    # replaying the good transform reproduces the optimised result's overlap
    again = RegisterToTemplate(spacing=4.0)(LoadCTSeries()(str(folder)), transform=registered["untilted"]["image"])
    assert again.meta["brain_dice"] == pytest.approx(registered["untilted"]["image"].meta["brain_dice"], abs=1e-6)


def test_a_scan_that_misses_much_of_the_brain_fails_the_quality_check(synthetic_series, registered) -> None:
    # the good transform replayed on the top 45% of the slices: the alignment is right, but the Dice inside the
    # field of view cannot verify it along the cut axis, so coverage decides
    folder, _, _ = synthetic_series["untilted"]
    image = LoadCTSeries()(str(folder))
    cut = int(image.shape[-1] * 0.55)
    top = MetaTensor(image[..., cut:].as_tensor(), meta=dict(image.meta))
    top.affine = image.affine @ torch.tensor(
        [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, float(cut)], [0, 0, 0, 1]], dtype=torch.float64
    )
    good = registered["untilted"]["image"].meta["template_transform"]
    replayed = RegisterToTemplate(spacing=4.0)(top, transform=good)
    quality = registration_quality(replayed)
    assert replayed.meta["brain_coverage"] < 0.75 and replayed.meta["brain_dice"] >= BRAIN_DICE_THRESHOLD
    assert not quality["passed"] and quality["reasons"] == [quality["reasons"][0]]
    assert "covers" in quality["reasons"][0] and not quality["coverage_complete"]
    full = registration_quality(registered["untilted"]["image"])
    assert full["brain_coverage"] > 0.95 and full["reasons"] == []


# --- the template through a known pose: off-centre, neck and cradle in the field of view, tilted DICOM ------------


OFF_CENTRE_POSE = pose_matrix((8.0, -5.0, 7.0), (0.0, -18.0, 15.0), (-35.0, -8.0, 0.0))


def template_phantom(pose: np.ndarray, seed: int = 0):
    """HU at LPS points: the CT template seen through ``pose`` (template -> world RAS), with a neck (soft tissue and
    a vertebral ring, below the template's grid, moving with the head), a 4 mm head cradle fixed to the scanner, and
    noise."""
    template = load_template()
    hu = np.asarray(template.dataobj, dtype=np.float32)
    to_index = np.linalg.inv(template.affine) @ np.linalg.inv(pose) @ LPS
    head_world = pose[:3, 3] + pose[:3, :3] @ np.array([0.0, -18.0, 15.0])
    rng = np.random.default_rng(seed)

    def phantom(points_lps: np.ndarray) -> np.ndarray:
        p = np.concatenate([points_lps, np.ones((*points_lps.shape[:-1], 1))], axis=-1)
        idx = p @ to_index.T
        out = ndimage.map_coordinates(hu, np.moveaxis(idx[..., :3], -1, 0), order=1, cval=-1000.0, prefilter=False)
        tpl = p @ (np.linalg.inv(pose) @ LPS).T  # template coordinates of each point
        r_neck = np.hypot(tpl[..., 0], tpl[..., 1] + 15.0)
        below = tpl[..., 2] < -62.0
        out = np.where(below & (r_neck < 55.0), 40.0, out)
        r_vert = np.hypot(tpl[..., 0], tpl[..., 1] + 5.0)
        out = np.where(below & (r_vert > 6.0) & (r_vert < 12.0), 700.0, out)
        ras = p @ LPS.T
        rho = np.hypot(ras[..., 0] - head_world[0], ras[..., 1] - (head_world[1] + 15.0))
        cradle = (np.abs(rho - 112.0) < 2.0) & (ras[..., 1] < head_world[1] - 40.0)
        out = np.where(cradle, 250.0, out)
        return out + rng.normal(0.0, 4.0, out.shape)

    return phantom


@pytest.fixture(scope="module")
def off_centre_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("off_centre")
    write_ct_series(
        folder,
        phantom=template_phantom(OFF_CENTRE_POSE),
        n_slices=46,
        shape=(128, 128),
        pixel_spacing=(1.9, 1.9),
        slice_step_mm=5.0,
        tilt_deg=12.0,
        center=(0.0, 0.0, -15.0),
    )
    return folder


def test_off_centre_patient_with_neck_and_cradle_registers(off_centre_series, brain_points) -> None:
    image = LoadCTSeries()(str(off_centre_series))
    # the head is 35 mm from the centre of the field of view
    centre_world = image.affine.numpy() @ np.r_[(np.asarray(image.shape[1:]) - 1) / 2.0, 1.0]
    head_world = OFF_CENTRE_POSE @ np.array([0.0, -18.0, 15.0, 1.0])
    assert np.linalg.norm((head_world - centre_world)[:2]) > 30.0
    out = RegisterToTemplate(spacing=4.0)(image)
    error_mm, error_deg = pose_error(np.asarray(out.meta["template_transform"]), OFF_CENTRE_POSE, brain_points)
    assert error_mm < MAX_ERROR_MM and error_deg < MAX_ERROR_DEG, (error_mm, error_deg)
    assert registration_quality(out)["passed"]


def test_head_mask_drops_the_cradle_and_intracranial_mask_excludes_the_neck(off_centre_series) -> None:
    image = LoadCTSeries()(str(off_centre_series))
    hu, affine = image[0].numpy(), image.affine.numpy()
    head = head_mask(hu, affine)
    cradle = (hu > 200) & (hu < 300)  # only the cradle has this density away from bone partial volume
    ijk = np.argwhere(cradle)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    head_world = OFF_CENTRE_POSE @ np.array([0.0, -18.0, 15.0, 1.0])
    # the cradle's shell behind the head, not the skull
    far = (np.linalg.norm(world[:, :2] - head_world[:2], axis=1) > 105.0) & (world[:, 1] < head_world[1] - 40.0)
    assert far.sum() > 100
    assert not head[tuple(ijk[far].T)].any()
    brain = intracranial_mask(hu, affine, head=head)
    to_template = np.linalg.inv(OFF_CENTRE_POSE) @ affine
    template_z = (np.argwhere(brain) @ to_template[:3, :3].T + to_template[:3, 3])[:, 2]
    assert np.percentile(template_z, 1) > -75.0  # nothing of the neck below the template's brain
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    assert 1500.0 < brain.sum() * voxel_ml < 2300.0  # the template's intracranial space is 2000 ml


def test_intracranial_mask_reproduces_the_template_brain_mask() -> None:
    template = load_template()
    hu = np.asarray(template.dataobj, dtype=np.float32)[::2, ::2, ::2]
    affine = template.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    expected = np.asarray(brain_mask().dataobj)[::2, ::2, ::2] > 0
    found = intracranial_mask(hu, affine)
    dice = 2.0 * (found & expected).sum() / (found.sum() + expected.sum())
    assert dice > 0.95


# --- inverse mapping and resampling, with known transforms ---------------------------------------------------------


PATIENT_SHAPE = (40, 44, 18)


def patient_affine_lps_like() -> np.ndarray:
    """A DICOM-like patient grid in RAS: X runs to the patient's left (-x), Y posterior (-y), 6 mm slices."""
    a = np.diag([-5.0, -5.0, 6.0, 1.0])
    a[:3, 3] = [100.0, 110.0, -45.0]
    return a


KNOWN_POSE = pose_matrix((6.0, -4.0, 12.0), (0.0, -18.0, 15.0), (3.0, 2.0, 8.0), scale=(1.05, 0.97, 1.02))


def test_a_label_at_a_known_template_point_lands_on_the_right_patient_voxel() -> None:
    template_affine, template_shape = template_grid(None)
    labels = np.zeros(template_shape, dtype=np.int16)
    point = np.array([24.0, 10.0, 6.0])  # template RAS mm, right hemisphere
    ijk = np.rint(np.linalg.inv(template_affine) @ np.r_[point, 1.0])[:3].astype(int)
    labels[ijk[0] - 6 : ijk[0] + 7, ijk[1] - 6 : ijk[1] + 7, ijk[2] - 6 : ijk[2] + 7] = 7
    patient_affine = patient_affine_lps_like()
    out = map_to_patient(labels[None], KNOWN_POSE, PATIENT_SHAPE, patient_affine, mode="nearest")
    assert out.dtype == torch.int16 and tuple(out.shape) == (1, *PATIENT_SHAPE)
    np.testing.assert_allclose(out.affine.numpy(), patient_affine)
    expected_voxel = np.linalg.inv(patient_affine) @ KNOWN_POSE @ np.r_[point, 1.0]
    found = np.argwhere(out[0].numpy() == 7)
    assert len(found) > 0
    np.testing.assert_allclose(found.mean(axis=0), expected_voxel[:3], atol=0.6)
    assert int(out[0][tuple(np.rint(expected_voxel[:3]).astype(int))]) == 7


def test_template_left_maps_to_the_patient_left() -> None:
    template_affine, template_shape = template_grid(4.0)
    x_mm = template_affine[0, 0] * np.arange(template_shape[0]) + template_affine[0, 3]
    # about the brain on this grid (the 1 mm mask subsampled; a voxel's offset does not matter here)
    brain = np.asarray(brain_mask().dataobj)[::4, ::4, ::4] > 0
    assert brain.shape == template_shape
    hemispheres = np.zeros(template_shape, dtype=np.uint8)
    # lateral parts of the patient's left (x < 0) and right hemispheres in template space
    hemispheres[brain & (x_mm[:, None, None] < -20.0)] = 1
    hemispheres[brain & (x_mm[:, None, None] > 20.0)] = 2
    image = MetaTensor(torch.from_numpy(hemispheres[None]), affine=torch.as_tensor(template_affine))
    patient_affine = patient_affine_lps_like()
    out = TemplateToPatient(mode="nearest")(image, KNOWN_POSE, PATIENT_SHAPE, patient_affine)[0].numpy()
    for label, side in ((1, "L"), (2, "R")):
        ijk = np.argwhere(out == label)
        assert len(ijk) > 100
        world = ijk @ patient_affine[:3, :3].T + patient_affine[:3, 3]
        # RAS in the patient's world: the left lies at smaller x than the head's midline
        midline_x = (KNOWN_POSE @ np.array([0.0, -18.0, 15.0, 1.0]))[0]
        assert np.all(side_of_x(world[:, 0] - midline_x) == side)
    # this grid's X index runs to the patient's left (as DICOM columns do): left labels sit at larger X indices
    assert np.argwhere(out == 1)[:, 0].mean() > np.argwhere(out == 2)[:, 0].mean()


@pytest.mark.parametrize("channels", [1, 3])
def test_heat_maps_of_any_channel_count_map_back_linearly(channels: int) -> None:
    template_affine, template_shape = template_grid(4.0)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in template_shape], indexing="ij"), axis=-1)
    world = ijk @ template_affine[:3, :3].T + template_affine[:3, 3]
    gradients = np.array([[0.5, -0.2, 0.1], [0.0, 1.0, 0.0], [-0.3, 0.0, 0.7]])[:channels]
    maps = np.stack([world @ g + 10.0 * c for c, g in enumerate(gradients)]).astype(np.float32)
    image = MetaTensor(torch.from_numpy(maps), affine=torch.as_tensor(template_affine))
    meta = {
        "template_transform": KNOWN_POSE,
        "patient_affine": patient_affine_lps_like(),
        "patient_spatial_shape": np.asarray(PATIENT_SHAPE),
    }
    out = TemplateToPatientd(keys="heat", transform_key="image", mode="bilinear")({"image": meta, "heat": image})[
        "heat"
    ]
    assert tuple(out.shape) == (channels, *PATIENT_SHAPE) and out.dtype == torch.float32
    p_ijk = np.stack(np.meshgrid(*[np.arange(n) for n in PATIENT_SHAPE], indexing="ij"), axis=-1).reshape(-1, 3)
    p_world = p_ijk @ meta["patient_affine"][:3, :3].T + meta["patient_affine"][:3, 3]
    t_world = map_points_to_template(p_world, KNOWN_POSE)
    t_index = (t_world - template_affine[:3, 3]) / np.diag(template_affine)[:3]
    inside = np.all((t_index > 1) & (t_index < np.asarray(template_shape) - 2), axis=1)
    assert inside.mean() > 0.5
    for c, g in enumerate(gradients):
        expected = t_world[inside] @ g + 10.0 * c
        np.testing.assert_allclose(out[c].numpy().reshape(-1)[inside], expected, atol=1e-3)


def test_points_round_trip_and_voxel_indices() -> None:
    points = np.array([[0.0, 0.0, 0.0], [-40.0, 20.0, 35.0], [55.0, -70.0, -20.0]])
    meta = {"template_transform": KNOWN_POSE, "patient_affine": patient_affine_lps_like()}
    patient = map_points_to_patient(points, meta)
    np.testing.assert_allclose(patient, points @ KNOWN_POSE[:3, :3].T + KNOWN_POSE[:3, 3])
    np.testing.assert_allclose(map_points_to_template(patient, meta), points, atol=1e-9)
    voxels = map_points_to_patient(points, meta, as_voxel=True)
    np.testing.assert_allclose(voxels @ meta["patient_affine"][:3, :3].T + meta["patient_affine"][:3, 3], patient)
    with pytest.raises(UserInputError, match="as_voxel"):
        map_points_to_patient(points, KNOWN_POSE, as_voxel=True)


@pytest.mark.parametrize("spacing", [None, 2.0, (1.0, 1.0, 4.0)])
def test_template_grid_covers_the_template_field_of_view(spacing) -> None:
    template = load_template()
    affine, shape = template_grid(spacing)
    s = np.diag(affine)[:3]
    lo = affine[:3, 3] - s / 2
    hi = lo + s * np.asarray(shape)
    t_lo = template.affine[:3, 3] - 0.5
    t_hi = t_lo + np.asarray(template.shape)
    np.testing.assert_allclose(lo, t_lo)
    assert np.all(hi >= t_hi - 1e-6) and np.all(hi - t_hi < s)
    if spacing == (1.0, 1.0, 4.0):
        assert shape == (197, 233, 48)


def test_resampling_to_template_space_is_geometrically_exact_and_anti_aliased() -> None:
    # a patient grid of 0.5 mm in-plane: a linear ramp in world mm must come back as the same ramp in template
    # space (trilinear interpolation and the Gaussian pre-filter both keep linear functions), and white noise
    # must shrink the way averaging over a 4 mm voxel shrinks it, which plain point sampling would not do
    patient_affine = np.diag([0.5, 0.5, 5.0, 1.0])
    patient_affine[:3, 3] = [-60.0, -70.0, -40.0]
    shape = (240, 280, 24)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = ijk @ patient_affine[:3, :3].T + patient_affine[:3, 3]
    gradient = np.array([0.3, -0.5, 0.2])
    ramp = (world @ gradient).astype(np.float32)
    out, out_affine = resample_to_template(ramp, patient_affine, KNOWN_POSE, spacing=4.0)
    o_ijk = np.stack(np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij"), axis=-1).reshape(-1, 3)
    t_world = o_ijk @ out_affine[:3, :3].T + out_affine[:3, 3]
    p_world = map_points_to_patient(t_world, KNOWN_POSE)
    p_index = (p_world - patient_affine[:3, 3]) / np.diag(patient_affine)[:3]
    margin = np.array([12, 12, 2])
    inside = np.all((p_index > margin) & (p_index < np.asarray(shape) - 1 - margin), axis=1)
    assert inside.sum() > 1000
    np.testing.assert_allclose(out.reshape(-1)[inside], (p_world @ gradient)[inside], atol=1e-2)
    outside = np.any((p_index < -1) | (p_index > np.asarray(shape)), axis=1)
    assert np.all(out.reshape(-1)[outside] == -1024.0)

    noise = np.random.default_rng(0).normal(0.0, 10.0, shape).astype(np.float32)
    smooth, _ = resample_to_template(noise, patient_affine, KNOWN_POSE, spacing=4.0)
    assert smooth.reshape(-1)[inside].std() < 4.0  # point sampling would keep about 10


def test_invertd_brings_a_template_space_prediction_back_to_the_patient(synthetic_series, registered) -> None:
    # a "prediction" made on the registered image goes back through MONAI's Invertd onto the patient grid, where
    # it must agree with mapping the same map by hand
    data = dict(registered["untilted"])
    image = data["image"]
    prediction = (image > 0).to(torch.uint8) * 3
    data["pred"] = prediction
    register = RegisterToTemplated(keys="image", spacing=2.0)
    inverted = Invertd(keys="pred", transform=Compose([register]), orig_keys="image", nearest_interp=True)(data)
    expected = map_to_patient(prediction.as_tensor(), image.meta, image_affine=image.affine, mode="nearest")
    assert tuple(inverted["pred"].shape[1:]) == tuple(image.meta["patient_spatial_shape"])
    np.testing.assert_allclose(inverted["pred"].affine.numpy(), image.meta["patient_affine"])
    assert torch.equal(inverted["pred"].as_tensor().to(torch.uint8), expected.as_tensor())


def test_dictionary_version_replays_the_registration_on_a_label_map(synthetic_series, registered) -> None:
    folder, _, _ = synthetic_series["untilted"]
    image = LoadCTSeries()(str(folder))
    labels = MetaTensor(torch.zeros_like(image, dtype=torch.int16), meta=dict(image.meta))
    labels[0, 50:70, 50:70, 12:20] = 5
    register = RegisterToTemplated(
        keys=("labels",), spacing=2.0, mode="nearest", padding_value=0, reference_key="image"
    )
    out = register({"image": registered["untilted"]["image"], "labels": labels})["labels"]
    assert out.dtype == torch.int16 and set(torch.unique(out).tolist()) == {0, 5}
    np.testing.assert_allclose(
        out.meta["template_transform"], registered["untilted"]["image"].meta["template_transform"]
    )
    back = map_to_patient(out, out.meta, mode="nearest")
    overlap = ((back == 5) & (labels == 5)).sum() / (labels == 5).sum()
    assert overlap > 0.8  # the round trip through a 2 mm grid blurs the box's edges only


# --- user errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: RegisterToTemplate()(torch.zeros(1, 8, 8, 8)), "MetaTensor"),
        (lambda: RegisterToTemplate(spacing=(1, 0, 1)), "spacing"),
        (lambda: RegisterToTemplate(mode="cubic"), "mode"),
        (lambda: RegisterToTemplate(iterations_per_level=3), "unknown registration parameter"),
        (lambda: RegistrationParams(stages=("rigid", "bspline")), "stages"),
        (lambda: RegistrationParams(levels_mm=(3.0,)), "levels_mm"),
        (lambda: RegistrationParams.from_dict({"learning_rat": 1}), "unknown"),
        (
            lambda: RegisterToTemplate()(
                MetaTensor(torch.full((1, 16, 16, 8), -1000.0), affine=torch.diag(torch.tensor([4.0, 4.0, 5.0, 1.0])))
            ),
            "no head",
        ),
        (
            lambda: RegisterToTemplate()(
                MetaTensor(
                    torch.zeros(1, 16, 16, 8),
                    affine=torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 1.0, 0], [0, 0, 5.0, 0], [0, 0, 0, 1]]),
                )
            ),
            "sheared",
        ),
        (lambda: map_to_patient(np.zeros((5, 5, 5)), KNOWN_POSE, (4, 4, 4), np.eye(4)), "image_affine"),
        (lambda: map_to_patient(np.zeros((1, 2, 2, 2)), {"brain_dice": 1.0}), "template_transform"),
        (lambda: registration_quality({"affine": np.eye(4)}), "RegisterToTemplate"),
    ],
)
def test_bad_input_is_a_user_error(make, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        make()


# --- command line --------------------------------------------------------------------------------------------------


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_registers_a_tilted_dicom_series_and_replays_its_transform(
    off_centre_series: Path, tmp_path: Path, capsys, brain_points
) -> None:
    out, tx = tmp_path / "registered.nii.gz", tmp_path / "transform.json"
    status = main(
        ["register", str(off_centre_series), "--out", str(out), "--spacing", "4", "--transform-out", str(tx), "--json"]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    for secret in (PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE, str(off_centre_series)):
        assert secret not in captured.out and secret not in tx.read_text()
    summary = json.loads(captured.out)
    assert summary["quality"]["passed"] and summary["brain_dice"] >= BRAIN_DICE_THRESHOLD
    assert set(summary["timings_s"]) == {"ingest", "registration", "total"}
    error_mm, _ = pose_error(np.asarray(summary["template_transform"]), OFF_CENTRE_POSE, brain_points)
    assert error_mm < MAX_ERROR_MM
    written = nib.load(out)
    assert written.shape == template_grid(4.0)[1] and int(written.header["sform_code"]) == 4
    np.testing.assert_allclose(written.affine, template_grid(4.0)[0])
    record = json.loads(tx.read_text())
    assert record["template_transform"] == summary["template_transform"]
    assert record["patient_spatial_shape"][2] == 46

    again = tmp_path / "replayed.nii.gz"
    assert (
        main(["register", str(off_centre_series), "--out", str(again), "--spacing", "4", "--transform-in", str(tx)])
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(nib.load(again).dataobj), np.asarray(written.dataobj))


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}", "--out", "{out}"], "does not exist"),
        (["{series}", "--out", "{tmp}/out.nrrd"], "must end in .nii"),
        (["{series}", "--out", "{out}", "--spacing", "2,x"], "--spacing"),
        (["{series}", "--out", "{out}", "--transform-in", "{garbage}"], "--transform-in"),
        (["{series}", "--out", "{out}", "--template", "{tmp}/nowhere"], "--template"),
        (["{series}", "--out", "{out}", "--transform-out", "{tmp}/t.txt"], "--transform-out"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_no_output(
    args, message, off_centre_series: Path, tmp_path: Path, capsys
) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    values = {
        "missing": str(tmp_path / "missing"),
        "series": str(off_centre_series),
        "out": str(tmp_path / "out.nii.gz"),
        "tmp": str(tmp_path),
        "garbage": str(garbage),
    }
    before = set(tmp_path.iterdir())
    status = main(["register", *(a.format(**values) for a in args)])
    assert status == 2
    assert message in _one_error_line(capsys)
    assert set(tmp_path.iterdir()) == before
