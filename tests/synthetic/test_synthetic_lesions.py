"""Lesion shapes in template space: each kind lies in the anatomy it belongs to (no rendering needed)."""

from __future__ import annotations

import numpy as np
import pytest

from monai_stroke.synthetic import (
    EARLY_ISCHEMIC_KINDS,
    HEMORRHAGE_KINDS,
    LesionSpec,
    SynthConfig,
    default_head,
    lesion_field,
    plan_patient,
)
from monai_stroke.synthetic.lesions import bone_fraction


def _support(lesion: LesionSpec, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Template indices ``(N, 3)`` where the lesion's weight is at least ``fraction`` of its peak, and weights."""
    lo, weights = lesion_field(lesion, default_head())
    inside = weights >= fraction * weights.max()
    return np.argwhere(inside) + lo, weights[inside]


def _first_bleed(kind: str, seed: int = 3) -> LesionSpec:
    spec = plan_patient("P001", [seed, 1], "hemorrhage", default_head(), SynthConfig(), bleed_kind=kind)
    return next(les for les in spec.lesions if les.kind == kind)


@pytest.mark.parametrize("kind", HEMORRHAGE_KINDS)
def test_each_hemorrhage_kind_sits_where_that_bleed_does(kind: str) -> None:
    head = default_head()
    lesion = _first_bleed(kind)
    assert lesion.target_hu is not None and 50.0 <= lesion.target_hu <= 90.0
    index, _ = _support(lesion)
    at = tuple(index.T)
    x_mm = head.index_to_mm(index.T)[0]
    volume_ml = len(index) * float(np.prod(head.voxel_mm)) / 1000.0
    assert volume_ml > 0.4
    # blood never replaces bone: a lesion's weight excludes the bone part of a voxel
    assert float(bone_fraction(head.hu[at]).mean()) < 0.05
    if lesion.side:
        assert np.mean((x_mm < 0) == (lesion.side == "L")) > 0.98  # one side (RAS x < 0 = patient's left)
    depth = head.depth_mm[at]
    if kind in ("subdural", "epidural"):
        # against the inner table, no deeper than the collection is thick
        assert depth.min() < 1.5 and np.percentile(depth, 95) <= lesion.thickness_mm + 1.5
    if kind == "subdural":
        assert lesion.radii_mm[0] > 40 and lesion.thickness_mm < 12  # wide and thin: a crescent
    if kind == "epidural":
        assert lesion.radii_mm[0] < 31 and lesion.thickness_mm > 8  # narrow and thick: a lens
    if kind == "subarachnoid":
        assert float(head.csf[at].mean()) > 0.5 and np.percentile(depth, 95) < 26  # sulcal CSF, near the surface
        assert not head.ventricles[at].any()
    if kind == "intraventricular":
        assert float(head.ventricles[at].mean()) > 0.8
        # supine: blood lies posterior (template -y) to the fluid level
        assert head.index_to_mm(index.T)[1].max() <= lesion.level_mm + 2.0
    if kind == "intraparenchymal":
        assert float(head.tissue[at].mean()) > 0.6 and depth.min() > 3.0


@pytest.mark.parametrize("kind", [*EARLY_ISCHEMIC_KINDS, "old_infarction"])
def test_ischemic_lesions_stay_in_their_region_and_in_parenchyma(kind: str) -> None:
    head = default_head()
    profile = "old" if kind == "old_infarction" else "early"
    early_kind = None if kind == "old_infarction" else kind
    spec = plan_patient("P001", [7, 2], profile, head, SynthConfig(), early_kind=early_kind)
    lesions = [les for les in spec.lesions if les.kind == kind]
    assert lesions
    for lesion in lesions:
        index, weights = _support(lesion)
        at = tuple(index.T)
        in_region = head.atlas_labels[at] == head.region_label(lesion.side, lesion.region)
        assert in_region.mean() > 0.9, (lesion.side, lesion.region)
        assert float(head.tissue[at].mean()) > 0.6  # gray/white matter, not CSF
        if kind in EARLY_ISCHEMIC_KINDS:
            assert -6.0 <= lesion.contrast_hu <= -2.0 and lesion.target_hu is None
            assert lesion.edge_mm >= 1.5  # soft edge
        else:
            assert 5.0 <= lesion.target_hu <= 20.0 and lesion.edge_mm < 1.0  # towards CSF, sharp edge
    if kind == "scattered_infarction":
        assert all(len(les.centers_mm) >= 3 for les in lesions)
    if kind == "territorial_infarction":
        # a territory: several neighbouring regions, each largely covered
        assert len({les.region for les in lesions}) >= 2
        for lesion in lesions:
            index, _ = _support(lesion)
            region_voxels = (head.atlas_labels == head.region_label(lesion.side, lesion.region)).sum()
            assert len(index) > 0.3 * region_voxels * float(head.tissue.max())


def test_lesions_of_one_patient_keep_apart() -> None:
    head = default_head()
    spec = plan_patient("P001", [9, 4], "hemorrhage_early", head, SynthConfig(), bleed_kind="intraparenchymal")
    occupied = np.zeros(head.shape, dtype=np.int32)
    for lesion in spec.lesions:
        index, _ = _support(lesion, fraction=0.05)
        occupied[tuple(index.T)] += 1
    # territory parts may touch each other; a bleed never overlaps another lesion
    bleed_index, _ = _support(spec.lesions[0], fraction=0.05)
    assert spec.lesions[0].kind == "intraparenchymal"
    assert (occupied[tuple(bleed_index.T)] == 1).all()
