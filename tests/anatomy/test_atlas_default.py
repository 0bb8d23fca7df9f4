"""The default ASPECTS atlas: where the regions are, what tissue they hold, and the Atlas API on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from monai_stroke.anatomy import GANGLIONIC_Z_MM, SUPRAGANGLIONIC_Z_MM, Atlas, side_of_x
from monai_stroke.errors import UserInputError
from monai_stroke.vocabulary import GANGLIONIC_REGIONS, REGIONS, SIDES

# right-side centroids (x, y, z mm) of a published MNI ASPECTS label map; the left side mirrors x
PUBLISHED_RIGHT_CENTROIDS = {
    "C": (15, 17, 4),
    "IC": (15, -3, 4),
    "L": (25, 0, 4),
    "I": (35, -4, 4),
    "M1": (40, 37, 3),
    "M2": (55, -5, 4),
    "M3": (50, -54, 4),
    "M4": (37, 32, 33),
    "M5": (47, -5, 33),
    "M6": (46, -51, 33),
}
# plausible volumes (mL) of each region within its 15 mm slab
VOLUME_RANGE_ML = {"C": (1.5, 5), "L": (3, 9), "IC": (1, 5), "I": (2, 7), "M": (4, 25)}
ALL = [(side, region) for side in SIDES for region in REGIONS]


def test_table_and_labels(default_atlas: Atlas) -> None:
    expected = pd.DataFrame(
        [(n + 1 + 10 * s, side, region) for s, side in enumerate(SIDES) for n, region in enumerate(REGIONS)],
        columns=["label", "side", "region"],
    )
    pd.testing.assert_frame_equal(default_atlas.table, expected)
    assert default_atlas.labels.dtype == np.int16
    assert set(np.unique(default_atlas.labels)) == set(range(21))
    default_atlas.validate()


@pytest.mark.parametrize("side, region", ALL)
def test_centroid_near_published_and_on_its_side(default_atlas: Atlas, side: str, region: str) -> None:
    centroid = default_atlas.centroid_mm(side, region)
    published = np.array(PUBLISHED_RIGHT_CENTROIDS[region], dtype=float) * (1 if side == "R" else [-1, 1, 1])
    assert np.linalg.norm(centroid - published) <= 20.0
    assert side_of_x(centroid[0]) == side
    # every voxel, not just the centroid, is on the region's side
    index = np.argwhere(default_atlas.region_mask(side, region))
    assert np.all(side_of_x(index[:, 0] + default_atlas.affine[0, 3]) == side)


@pytest.mark.parametrize("side, region", ALL)
def test_region_slab_volume_and_connectivity(default_atlas: Atlas, side: str, region: str) -> None:
    mask = default_atlas.region_mask(side, region)
    z = np.nonzero(mask.any(axis=(0, 1)))[0] + default_atlas.affine[2, 3]
    low, high = GANGLIONIC_Z_MM if region in GANGLIONIC_REGIONS else SUPRAGANGLIONIC_Z_MM
    assert low <= z.min() and z.max() <= high
    assert z.max() - z.min() >= 10  # spans the level's slices, not one
    volume = default_atlas.volume_ml(side, region)
    assert volume == pytest.approx(mask.sum() / 1000.0)
    lo, hi = VOLUME_RANGE_ML[region if region in VOLUME_RANGE_ML else "M"]
    assert lo <= volume <= hi
    labels, n = ndimage.label(mask)
    largest = np.bincount(labels.ravel())[1:].max()
    # deep structures are one piece; cortex is folded and cut by the slab, but mostly one ribbon
    assert largest / mask.sum() >= (0.99 if region in ("C", "L", "IC", "I") else 0.6)


def test_hemispheres_mirror_each_other(default_atlas: Atlas) -> None:
    labels = default_atlas.labels
    mirrored = labels[::-1]  # x -> -x on the symmetric grid
    right_seen_as_left = np.where(mirrored > 10, mirrored - 10, 0)
    assert np.array_equal(np.where(labels <= 10, labels, 0), right_seen_as_left)


@pytest.mark.parametrize("region", ["M1", "M2", "M3", "M4", "M5", "M6"])
def test_cortical_regions_are_gray_matter(default_atlas: Atlas, tissues: dict, region: str) -> None:
    for side in SIDES:
        gm = tissues["gm"][default_atlas.region_mask(side, region)]
        assert gm.min() >= 0.5


def test_deep_regions_hold_their_tissue(default_atlas: Atlas, tissues: dict) -> None:
    gm, wm, csf = tissues["gm"], tissues["wm"], tissues["csf"]
    mask = {region: default_atlas.region_mask("R", region) for region in ("C", "L", "IC", "I")}
    assert gm[mask["C"]].mean() >= 0.7  # caudate: dense gray matter
    assert 0.3 <= gm[mask["L"]].mean() <= 0.8 and wm[mask["L"]].mean() <= 0.6  # lentiform: intermediate
    assert wm[mask["IC"]].mean() >= 0.7 and gm[mask["IC"]].mean() <= 0.3  # capsule: white matter
    assert gm[mask["I"]].mean() >= 0.6  # insular ribbon: cortex
    for region in mask:
        assert csf[mask[region]].mean() <= 0.15


def test_deep_regions_sit_in_their_anatomy(default_atlas: Atlas, tissues: dict) -> None:
    centroid = {r: default_atlas.centroid_mm("R", r) for r in REGIONS}
    # medial -> lateral: caudate, capsule, lentiform, insula, then the MCA cortex
    assert centroid["C"][0] < centroid["L"][0] < centroid["I"][0] < centroid["M2"][0]
    assert centroid["IC"][0] < centroid["L"][0]
    # the posterior limb lies behind the caudate head; anterior -> posterior sectors
    assert centroid["IC"][1] < centroid["C"][1]
    assert centroid["M1"][1] > centroid["M2"][1] > centroid["M3"][1]
    assert centroid["M4"][1] > centroid["M5"][1] > centroid["M6"][1]
    # caudate head next to the frontal horn: most of it within 4 mm of CSF
    box = default_atlas.bounding_box("R", "C", margin_vox=6)
    near_csf = ndimage.distance_transform_edt(tissues["csf"][box] < 0.5) <= 4
    assert near_csf[default_atlas.region_mask("R", "C")[box]].mean() >= 0.5
    # the posterior limb is bounded by the lentiform nucleus: all of it within 8 mm
    lentiform = default_atlas.bounding_box("R", "L")
    capsule = default_atlas.bounding_box("R", "IC")
    box = tuple(
        slice(max(0, min(a.start, b.start) - 10), max(a.stop, b.stop) + 10)
        for a, b in zip(lentiform, capsule, strict=True)
    )
    near_lentiform = ndimage.distance_transform_edt(~default_atlas.region_mask("R", "L")[box]) <= 8
    assert near_lentiform[default_atlas.region_mask("R", "IC")[box]].all()


def test_region_queries(default_atlas: Atlas) -> None:
    assert default_atlas.label_of("L", "C") == 1 and default_atlas.label_of("R", "M6") == 20
    box = default_atlas.bounding_box("R", "I")
    mask = default_atlas.region_mask("R", "I")
    assert mask[box].sum() == mask.sum()
    for axis in range(3):  # tight: the box's faces touch the region
        assert np.take(mask[box], 0, axis=axis).any() and np.take(mask[box], -1, axis=axis).any()
    wide = default_atlas.bounding_box("R", "I", margin_vox=3)
    assert all(w.start == b.start - 3 and w.stop == b.stop + 3 for w, b in zip(wide, box, strict=True))
    summary = default_atlas.summary()
    assert list(summary.columns[:5]) == ["label", "side", "region", "voxels", "volume_ml"]
    assert summary["voxels"].sum() == np.count_nonzero(default_atlas.labels)
    with pytest.raises(UserInputError, match="no region 'M7' on side 'L'"):
        default_atlas.label_of("L", "M7")


def test_identity_depends_on_labels_and_table(default_atlas: Atlas) -> None:
    labels = np.array(default_atlas.labels)
    labels[labels == 1] = 0
    labels[tuple(np.argwhere(default_atlas.labels == 1)[0])] = 1  # keep region L C, one voxel
    changed = Atlas(labels=labels, affine=default_atlas.affine, table=default_atlas.table, check=False)
    assert changed.identity != default_atlas.identity
    renamed = default_atlas.table.copy()
    renamed.loc[0, "region"] = "Caudate"
    assert Atlas(default_atlas.labels, default_atlas.affine, renamed, check=False).identity != default_atlas.identity
    again = Atlas(np.array(default_atlas.labels), default_atlas.affine.copy(), default_atlas.table.copy(), check=False)
    assert again.identity == default_atlas.identity


def test_flipped_sides_are_rejected(default_atlas: Atlas) -> None:
    flipped = default_atlas.table.copy()
    flipped["side"] = flipped["side"].map({"L": "R", "R": "L"})
    with pytest.raises(UserInputError, match="other side.*x < 0"):
        Atlas(default_atlas.labels, default_atlas.affine, flipped)
