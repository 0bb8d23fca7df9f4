from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from region_helpers import SMALL_AFFINE, SMALL_BOXES, SMALL_SHAPE, as_kind, small_atlas, to_numpy, world

from monai_stroke.anatomy import Atlas, load_template, side_of_x
from monai_stroke.errors import UserInputError
from monai_stroke.transforms import (
    LesionConcatd,
    RegionCrop,
    RegionCropd,
    RegionLabeld,
    region_categories,
    task_window,
)

KINDS = ["numpy", "torch", "metatensor"]


@pytest.fixture(scope="module")
def atlas() -> Atlas:
    return small_atlas()


def _ramp(axis: int) -> np.ndarray:
    """A volume whose value is the RAS mm coordinate along ``axis`` (bilinear resampling reproduces it exactly)."""
    coords = world(axis, np.arange(SMALL_SHAPE[axis]))
    shape = [1, 1, 1]
    shape[axis] = -1
    return np.broadcast_to(coords.reshape(shape), SMALL_SHAPE)[None].astype(np.float32).copy()


def _by_key(crops) -> dict[tuple[str, str], object]:
    return {(c.meta["side"], c.meta["region"]): c for c in crops}


@pytest.mark.parametrize("kind", KINDS)
def test_one_crop_per_side_and_region_in_atlas_order_with_metadata(atlas, kind) -> None:
    crops = RegionCrop(atlas, spatial_size=(16, 12))(as_kind(kind, np.zeros((2, *SMALL_SHAPE), np.float32)))
    assert [(c.meta["side"], c.meta["region"]) for c in crops] == [("L", "C"), ("L", "M2"), ("R", "C"), ("R", "M2")]
    for crop in crops:
        assert isinstance(crop, MetaTensor) and crop.dtype == torch.float32
        assert crop.shape[:3] == (2, 16, 12)  # channels kept, (H, W) as asked, slices last
        assert crop.meta["mirrored"] == (crop.meta["side"] == "R")
        assert crop.meta["target_slice"] == (crop.shape[-1] - 1) // 2
        assert crop.meta["atlas_identity"] == atlas.identity
        assert tuple(crop.meta["crop_box_mm"].shape) == (3, 2)
    if kind == "metatensor":
        assert crops[0].meta["series_uid"] == "1.2.3"  # the input's meta travels with the crop


@pytest.mark.parametrize("lesion_side", ["L", "R"])
@pytest.mark.parametrize("kind", ["numpy", "metatensor"])
def test_a_lesion_lands_in_the_crop_of_its_own_side_not_the_mirrored_one(atlas, lesion_side, kind) -> None:
    volume = np.full((1, *SMALL_SHAPE), 30.0, dtype=np.float32)
    lesion = atlas.region_mask(lesion_side, "C")
    assert set(side_of_x(world(0, np.nonzero(lesion)[0]))) == {lesion_side}  # the patient's side in RAS
    volume[0][lesion] = 10.0
    samples = RegionCropd("image", atlas=atlas, spatial_size=(20, 20), contralateral=True, mask_key="mask")(
        {"image": as_kind(kind, volume)}
    )
    by = {(s["side"], s["region"]): s for s in samples}
    other = "R" if lesion_side == "L" else "L"
    own, mirror = to_numpy(by[(lesion_side, "C")]["image"]), to_numpy(by[(other, "C")]["image"])
    inside = to_numpy(by[(lesion_side, "C")]["mask"])[0].astype(bool)
    # the lesion fills its region in the ipsilateral channel (partial volume only at the region's edge)
    assert own[0].min() == pytest.approx(10.0) and own[0][inside].mean() < 20.0
    np.testing.assert_allclose(mirror[0], 30.0, atol=1e-4)  # the other side's crop is untouched ...
    np.testing.assert_allclose(mirror[1], own[0], atol=1e-4)  # ... and shows the lesion in its contralateral channel
    np.testing.assert_allclose(own[1], 30.0, atol=1e-4)


@pytest.mark.parametrize("axis", [0, 1])
def test_crop_affine_and_pixels_agree_with_the_template_world_coordinates(atlas, axis) -> None:
    ramp = _ramp(axis)
    # boxes without margin stay inside the grid, where no edge voxel is repeated
    crops = RegionCrop(atlas, spatial_size=(24, 17), margin_mm=0, square=False, contralateral=True)(
        as_kind("metatensor", ramp)
    )
    for crop in crops:
        values = to_numpy(crop)
        affine = to_numpy(crop.affine)
        h, w = np.meshgrid(np.arange(24), np.arange(17), indexing="ij")
        expected = affine[axis, 0] * h + affine[axis, 1] * w + affine[axis, 3]
        # a linear ramp is reproduced exactly by linear interpolation (and by the symmetric anti-aliasing tent)
        np.testing.assert_allclose(values[0, ..., 0], expected, atol=1e-3)
        contralateral = -expected if axis == 0 else expected  # the mirror image across x = 0
        np.testing.assert_allclose(values[1, ..., 0], contralateral, atol=1e-3)
        assert (affine[0, 0] < 0) == crop.meta["mirrored"]
        # right crops run lateral -> medial like left ones: |x| decreases along the first axis in both
        assert abs(affine[0, 3]) > abs(affine[0, 0] * 23 + affine[0, 3])


def test_native_resolution_copies_voxels_and_mirrors_pixel_for_pixel(atlas) -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(30, 5, size=(1, *SMALL_SHAPE)).astype(np.float32)
    crop = RegionCrop(atlas, spatial_size=None, slice_thickness_mm=0, margin_mm=4.0, square=False, contralateral=True)
    by = _by_key(crop(as_kind("metatensor", volume)))
    (x0, x1), (y0, y1), (z0, z1) = SMALL_BOXES["C"]
    left = by[("L", "C")]
    planes = left.meta["template_slices"][:, 0].numpy()
    assert list(planes) == list(range(z0 + 3, z0 + 6))  # 3 slices of the 9-plane region, the central ones
    # margin 4 mm = 2 voxels of 2 mm; no resampling: exactly the voxels of the box
    expected = volume[0, x0 - 2 : x1 + 2, y0 - 2 : y1 + 2][..., planes]
    np.testing.assert_array_equal(to_numpy(left)[0], expected)
    right = by[("R", "C")]
    n = SMALL_SHAPE[0]
    mirrored_box = volume[0, n - x1 - 2 : n - x0 + 2, y0 - 2 : y1 + 2][..., planes]
    np.testing.assert_array_equal(to_numpy(right)[0], mirrored_box[::-1])  # flipped left-right
    # the contralateral channel of one side is the other side's own crop, pixel for pixel
    np.testing.assert_array_equal(to_numpy(left)[1], to_numpy(right)[0])
    np.testing.assert_array_equal(to_numpy(right)[1], to_numpy(left)[0])


@pytest.mark.parametrize(
    "thickness, slices, expected_planes",
    [
        (3.0, 3, [[8, 9], [10, 11], [12, 13]]),  # 1.5 mm planes -> pairs; the 3 pairs with most region voxels
        (0.0, 1, [[10]]),  # no averaging, one slice: the plane of largest area
        # 9 region planes in pairs need 5 slices; of the two 10-plane slabs holding all of them, the one centred
        # nearer the region's centroid (z = 10.0)
        (3.0, 5, [[5, 6], [7, 8], [9, 10], [11, 12], [13, 14]]),
    ],
)
def test_template_slices_are_chosen_by_region_area_and_averaged(thickness, slices, expected_planes) -> None:
    labels = np.zeros(SMALL_SHAPE, np.int16)
    areas = {5: 1, 6: 2, 7: 2, 8: 6, 9: 6, 10: 9, 11: 8, 12: 6, 13: 6}  # region "C" on planes 5..13, varying area
    for z, n in areas.items():
        labels[12 : 12 + n, 10, z] = 1
        labels[SMALL_SHAPE[0] - 12 - n : SMALL_SHAPE[0] - 12, 10, z] = 2
    import nibabel as nib
    import pandas as pd

    atlas = Atlas(
        labels=labels,
        affine=SMALL_AFFINE,
        table=pd.DataFrame([(1, "L", "C"), (2, "R", "C")], columns=["label", "side", "region"]),
        template=nib.Nifti1Image(np.zeros(SMALL_SHAPE, np.float32), SMALL_AFFINE),
    )
    volume = np.broadcast_to(np.arange(SMALL_SHAPE[2], dtype=np.float32), SMALL_SHAPE)[None]  # value = plane
    crop = RegionCrop(atlas, spatial_size=(4, 4), slices=slices, slice_thickness_mm=thickness)(volume)[0]
    planes = crop.meta["template_slices"].numpy()
    np.testing.assert_array_equal(planes, expected_planes)
    np.testing.assert_allclose(to_numpy(crop)[0, 0, 0], planes.mean(axis=1), atol=1e-5)  # slice = mean of planes
    np.testing.assert_allclose(crop.meta["slice_thickness_mm"], 1.5 * planes.shape[1])
    assert crop.meta["target_slice"] == (planes.shape[0] - 1) // 2


@pytest.mark.parametrize("fill", [-1000.0, 0.0])
def test_masking_fills_outside_the_region_only(atlas, fill) -> None:
    volume = np.full((1, *SMALL_SHAPE), 35.0, np.float32)
    samples = RegionCropd(
        "image", atlas=atlas, spatial_size=(30, 30), mask_outside=True, mask_fill_hu=fill, mask_key="mask"
    )({"image": volume})
    for sample in samples:
        image, mask = to_numpy(sample["image"])[0], to_numpy(sample["mask"])[0].astype(bool)
        assert mask.any() and (~mask).any()
        np.testing.assert_allclose(image[mask], 35.0, atol=1e-4)
        assert np.all(image[~mask] == fill)


@pytest.mark.parametrize("neighbours, n_channels", [(1, 3), (0, 1)])
def test_lesion_concatenation_stacks_the_target_and_its_neighbour_slices(atlas, neighbours, n_channels) -> None:
    volume = np.broadcast_to(np.arange(SMALL_SHAPE[2], dtype=np.float32), SMALL_SHAPE)[None]
    samples = RegionCropd("image", atlas=atlas, spatial_size=(8, 8), slice_thickness_mm=0)({"image": volume})
    concat = LesionConcatd("image", neighbours=neighbours, target_slice="target_slice")
    for sample in samples:
        planes = sample["image"].meta["template_slices"][:, 0].numpy()
        out = concat(sample)["image"]
        assert out.shape == (n_channels, 8, 8)
        wanted = planes if neighbours else planes[[sample["target_slice"]]]
        np.testing.assert_allclose(to_numpy(out)[:, 0, 0], wanted, atol=1e-4)


CATEGORIES = [
    {"side": "L", "region": "C", "category": "frank_hypodensity"},
    {"side": "R", "region": "C", "category": "intact"},
    {"side": "L", "region": "M2", "category": "old_infarction"},
]

MIRROR_CATEGORY = {
    ("L", "C"): "intact",
    ("R", "C"): "frank_hypodensity",
    ("L", "M2"): "",
    ("R", "M2"): "old_infarction",
}


@pytest.mark.parametrize(
    "task, drop, expected",
    [
        # early_vs_intact: L C positive, R C negative, L M2 (old) not in the task, R M2 unlabelled
        ("early_vs_intact", True, {("L", "C"): 1.0, ("R", "C"): 0.0}),
        ("early_vs_intact", False, {("L", "C"): 1.0, ("R", "C"): 0.0, ("L", "M2"): None, ("R", "M2"): None}),
        ("old_vs_intact", True, {("R", "C"): 0.0, ("L", "M2"): 1.0}),
        (None, True, {("L", "C"): None, ("R", "C"): None, ("L", "M2"): None, ("R", "M2"): None}),
    ],
)
def test_task_labels_from_region_categories(atlas, task, drop, expected) -> None:
    data = {"image": np.zeros((1, *SMALL_SHAPE), np.float32), "patient_id": "P7", "region_categories": CATEGORIES}
    crop = RegionCropd("image", atlas=atlas, spatial_size=(8, 8), task=task, drop_unlabelled=drop)
    samples = crop(data)
    labels = {(s["side"], s["region"]): (float(s["label"][0]) if "label" in s else None) for s in samples}
    assert labels == expected
    for s in samples:
        assert "region_categories" not in s and s["image"].meta["patient_id"] == "P7"
        assert s["contralateral_category"] == MIRROR_CATEGORY[(s["side"], s["region"])]
    if task is not None:  # the same labels from a task-independent crop + RegionLabeld (the chain's split)
        relabelled = RegionLabeld(task, drop_unlabelled=drop)(
            RegionCropd("image", atlas=atlas, spatial_size=(8, 8))(data)
        )
        assert {
            (s["side"], s["region"]): (float(s["label"][0]) if "label" in s else None) for s in relabelled
        } == labels


def test_region_labeld_keeps_every_region_when_no_category_is_known(atlas) -> None:
    samples = RegionCropd("image", atlas=atlas, spatial_size=(8, 8))({"image": np.zeros((1, *SMALL_SHAPE), np.float32)})
    kept = RegionLabeld("early_vs_intact")(samples)
    assert len(kept) == 4 and all("label" not in s for s in kept)  # inference: no ground truth, no dropping
    one = dict(samples[0], category="old_infarction")
    assert RegionLabeld("early_vs_intact")(one) == []  # a single sample outside the task is dropped
    assert float(RegionLabeld("old_vs_intact")(one)["label"][0]) == 1.0


def test_the_real_atlas_on_the_template_grid_keeps_laterality() -> None:
    atlas = Atlas.default()
    template = load_template()
    volume = np.asarray(template.dataobj, dtype=np.float32)[None].copy()
    lesion = atlas.region_mask("L", "M2")
    centroid_x = atlas.centroid_mm("L", "M2")[0]
    assert side_of_x(centroid_x) == "L"  # left hemisphere = RAS x < 0
    volume[0][lesion] -= 15.0
    image = MetaTensor(torch.from_numpy(volume), affine=torch.as_tensor(template.affine))
    samples = RegionCropd("image", atlas=atlas, regions=["M2"], spatial_size=None, contralateral=True, mask_key="m")(
        {"image": image}
    )
    by = {s["side"]: s for s in samples}
    mean = {
        side: [to_numpy(s["image"])[c][to_numpy(s["m"])[c].astype(bool)].mean() for c in (0, 1)]
        for side, s in by.items()
    }
    assert mean["L"][0] < mean["L"][1] - 10  # affected (ipsilateral) darker than its mirror
    assert mean["R"][1] < mean["R"][0] - 10  # seen from the right: the lesion is in the contralateral channel
    assert mean["L"][0] == pytest.approx(mean["R"][1])  # same pixels, once as L crop, once as R's mirror
    assert by["L"]["image"].meta["slice_thickness_mm"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda a: RegionCrop(a)(np.zeros((1, 5, 5, 5), np.float32)), "atlas grid's shape"),
        (
            lambda a: RegionCrop(a)(
                MetaTensor(torch.zeros(1, *SMALL_SHAPE), affine=torch.as_tensor(np.diag([-2.0, 2, 1.5, 1])))
            ),
            "template grid",
        ),
        (
            lambda a: RegionCrop(a)(
                MetaTensor(
                    torch.zeros(1, *SMALL_SHAPE),
                    affine=torch.as_tensor(SMALL_AFFINE),
                    meta={"template_identity": "x" * 64},
                )
            ),
            "registered to template",
        ),
        (lambda a: RegionCrop(a)(np.zeros(SMALL_SHAPE, np.float32)), "channel-first"),
        (lambda a: RegionCrop(a, spatial_size=(0, 4)), "spatial_size"),
        (lambda a: RegionCrop(a, slices=0), "slices"),
        (lambda a: RegionCrop(a, regions=["M9"])(np.zeros((1, *SMALL_SHAPE), np.float32)), "no region M9"),
        (lambda a: region_categories([{"side": "L", "region": "C", "category": "stroke"}]), "unknown category"),
        (lambda a: region_categories([{"side": "L", "region": "C"}]), "side, region and category"),
        (lambda a: task_window("early_vs_intact", (40, 0)), "width > 0"),
        (lambda a: RegionLabeld("no_such_task"), "unknown task"),
    ],
)
def test_bad_input_is_a_user_error(atlas, make, message) -> None:
    with pytest.raises(UserInputError, match=message):
        make(atlas)


@pytest.mark.parametrize(
    "task, window, expected",
    [
        ("early_vs_intact", None, (40.0, 20.0)),
        ("old_vs_intact", None, (40.0, 30.0)),
        ("old_vs_intact", [35, 10], (35.0, 10.0)),
    ],
)
def test_task_window_comes_from_the_task_unless_overridden(task, window, expected) -> None:
    assert task_window(task, window) == expected


def test_region_categories_accepts_rows_and_mappings() -> None:
    rows = region_categories(CATEGORIES)
    assert rows == region_categories({"L:C": "frank_hypodensity", ("R", "C"): "intact", "L:M2": "old_infarction"})
    assert rows[("L", "C")] == "frank_hypodensity" and region_categories(None) == {}
