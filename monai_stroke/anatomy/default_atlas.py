"""How the default ASPECTS atlas is drawn on the CT template's MNI152 2009 symmetric grid.

An approximation, built from the template's own gray/white/CSF probability maps plus anatomical priors in
MNI millimetres; docs/atlas.md explains each rule and how to bring a published atlas instead
(``monai-stroke atlas import``).

ASPECTS is read on two axial levels, so every region is a slab of template slices a radiologist would read
there (three 5 mm slices each, centred on the levels of the published centroids):

* ganglionic level, MNI z in :data:`GANGLIONIC_Z_MM`: C, L, IC, I, M1-M3;
* supraganglionic level, MNI z in :data:`SUPRAGANGLIONIC_Z_MM`: M4-M6.

Within a slab (right hemisphere; the left one is its mirror image, exact on the symmetric template):

* **C** caudate head: the gray-matter nucleus lateral to the frontal horn of the lateral ventricle.
* **L** lentiform nucleus: the putamen (the intermediate-gray lens between the internal and external
  capsules) plus the globus pallidus medial to it (a pallidum prior around MNI (19, -3, -1) where the
  tissue is still partly gray: the pallidum is myelinated and looks white-matter-like on T1-derived maps).
* **IC** internal capsule, posterior limb: the white matter between thalamus and lentiform nucleus,
  from the genu backwards.
* **I** insular ribbon: gray matter in a band 1.5-8 mm lateral to the putamen's lateral surface (claustrum,
  extreme capsule and insular cortex), stopping at the Sylvian fissure.
* **M1-M6**: cortical gray matter (probability >= 0.5) of the MCA territory lateral to the deep structures
  and the insula, split into anterior / lateral / posterior sectors by the angle around the lentiform
  nucleus (boundaries at +30 and -37 degrees); the ACA territory is excluded by a medial limit and the PCA
  territory by a posterior one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from monai_stroke.vocabulary import REGIONS

__all__ = ["GANGLIONIC_Z_MM", "SUPRAGANGLIONIC_Z_MM", "DEFAULT_ATLAS_RECIPE", "build_default_labels"]

#: Bump when a rule changes: the atlas cache key includes it.
DEFAULT_ATLAS_RECIPE = "aspects-default-1"

#: Inclusive MNI z ranges (mm) of the two ASPECTS levels: 15 template slices each (three 5 mm CT slices).
GANGLIONIC_Z_MM: tuple[float, float] = (-3.0, 11.0)
SUPRAGANGLIONIC_Z_MM: tuple[float, float] = (26.0, 40.0)

# working box for the right hemisphere (MNI mm): every region lies inside it
_BOX_MM = ((0.0, 85.0), (-110.0, 80.0), (-12.0, 45.0))
# seeds (right hemisphere, MNI mm) picking the connected component of each structure
_SEED_CAUDATE = (10.0, 14.0, 4.0)
_SEED_PUTAMEN = (27.0, 0.0, 3.0)
_SEED_THALAMUS = (10.0, -18.0, 6.0)
_SEED_VENTRICLE = (4.0, 12.0, 10.0)
_SEED_IC = (20.0, -12.0, 4.0)
_SEED_INSULA = (36.0, -4.0, 4.0)
# globus pallidus prior: ellipsoid centre and semi-axes (mm); Harvard-Oxford's pallidum centroid is (20, -4, -1)
_PALLIDUM_CENTRE = np.array([19.0, -3.0, -1.0])
_PALLIDUM_RADII = np.array([7.0, 11.0, 8.0])
# MCA sectors: angle (degrees) around this point of the axial plane; anterior >= 30 > lateral > -37 >= posterior
_SECTOR_CENTRE_XY = (25.0, -5.0)
_SECTOR_ANTERIOR_DEG = 30.0
_SECTOR_POSTERIOR_DEG = -37.0
# territory limits: ACA medially (|x| below), PCA posteriorly (y below)
_ACA_MEDIAL_LIMIT = {"ganglionic": 22.0, "supraganglionic": 25.0}
_PCA_POSTERIOR_LIMIT = {"ganglionic": -80.0, "supraganglionic": -82.0}
_M3_MEDIAL_LIMIT = 30.0  # keeps the hippocampal tail and the retrolenticular structures out of M3
_CORTEX_GM = 0.5


def _component(mask: np.ndarray, seed_index: tuple[int, ...]) -> np.ndarray:
    """The connected component of ``mask`` containing ``seed_index`` (or the one nearest to it)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        raise RuntimeError("default atlas: a structure's candidate mask is empty; the template maps look wrong")
    label = labels[seed_index]
    if label == 0:
        idx = np.argwhere(mask)
        label = labels[tuple(idx[np.argmin(((idx - np.asarray(seed_index)) ** 2).sum(1))])]
    return labels == label


def _distance_outside(mask: np.ndarray) -> np.ndarray:
    return ndimage.distance_transform_edt(~mask).astype(np.float32)


def build_default_labels(
    gm: np.ndarray, wm: np.ndarray, csf: np.ndarray, affine: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Draw the 20 default ASPECTS regions on the template grid.

    Args:
        gm: gray matter probability on the template grid (1 mm, axis aligned, RAS, symmetric about x = 0).
        wm: white matter probability.
        csf: CSF probability (zero outside the intracranial space).
        affine: the grid's voxel -> RAS mm affine.

    Returns:
        ``(labels, rows)``: an int16 label map and ``(label, side, region)`` rows; the patient's left hemisphere
        (x < 0) has labels 1-10 and the right 11-20, both in ``REGIONS`` order.
    """
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.diag(affine)[:3]
    if not np.allclose(affine[:3, :3], np.diag(spacing)) or not np.allclose(spacing, 1.0):
        raise ValueError("the default atlas is drawn on the 1 mm axis-aligned RAS template grid")
    shape = gm.shape
    x_first, x_last = affine[0, 3], affine[0, 3] + shape[0] - 1
    if not np.isclose(x_first, -x_last):
        raise ValueError("the default atlas needs a grid symmetric about x = 0 (the MNI152 symmetric template)")

    # crop to the right hemisphere's working box: distance transforms on it are ten times cheaper
    lo = [max(0, int(np.ceil(b[0] - affine[a, 3]))) for a, b in enumerate(_BOX_MM)]
    hi = [min(shape[a], int(np.floor(b[1] - affine[a, 3])) + 1) for a, b in enumerate(_BOX_MM)]
    box = tuple(slice(lo[a], hi[a]) for a in range(3))
    g, w, c = gm[box], wm[box], csf[box]
    x, y, z = (
        (np.arange(lo[a], hi[a], dtype=np.float32) + affine[a, 3]).reshape([-1 if b == a else 1 for b in range(3)])
        for a in range(3)
    )

    def seed(point: tuple[float, float, float]) -> tuple[int, int, int]:
        return tuple(int(round(point[a] - affine[a, 3])) - lo[a] for a in range(3))

    right = x > 0
    gang = (z >= GANGLIONIC_Z_MM[0]) & (z <= GANGLIONIC_Z_MM[1])
    supra = (z >= SUPRAGANGLIONIC_Z_MM[0]) & (z <= SUPRAGANGLIONIC_Z_MM[1])

    # helper structures that bound the ASPECTS regions
    thalamus = _component(
        (g >= 0.45) & (w < 0.6) & (c < 0.3) & right & (x <= 24) & (y >= -38) & (y <= -2) & (z >= -8) & (z <= 20),
        seed(_SEED_THALAMUS),
    )
    ventricle = _component(
        (c >= 0.5) & right & (x <= 25) & (y >= -45) & (y <= 35) & (z >= -10) & (z <= 35), seed(_SEED_VENTRICLE)
    )

    # C: caudate head, gray matter next to the frontal horn
    caudate = _component(
        (g >= 0.5)
        & (w < 0.5)
        & right
        & (x >= 5)
        & (x <= 24)
        & (y >= -2)
        & (y <= 32)
        & gang
        & ~thalamus
        & (_distance_outside(ventricle) <= 14),
        seed(_SEED_CAUDATE),
    )
    near_caudate = ndimage.binary_dilation(caudate)

    # L: putamen (intermediate gray between the capsules) + globus pallidus medial to it
    putamen = _component(
        (g >= 0.3)
        & (g <= 0.85)
        & (w <= 0.65)
        & (c < 0.3)
        & right
        & (x >= 16)
        & (x <= 34)
        & (y >= -26)
        & (y <= 26)
        & gang
        & ~thalamus
        & ~near_caudate,
        seed(_SEED_PUTAMEN),
    )
    putamen = _component(ndimage.binary_opening(putamen), seed(_SEED_PUTAMEN))
    to_putamen = _distance_outside(putamen)
    has_putamen = putamen.any(axis=0)
    putamen_medial_x = np.where(has_putamen, np.argmax(putamen, axis=0) + lo[0] + affine[0, 3], -np.inf)[None]
    in_prior = (
        ((x - _PALLIDUM_CENTRE[0]) / _PALLIDUM_RADII[0]) ** 2
        + ((y - _PALLIDUM_CENTRE[1]) / _PALLIDUM_RADII[1]) ** 2
        + ((z - _PALLIDUM_CENTRE[2]) / _PALLIDUM_RADII[2]) ** 2
    ) <= 1.0
    pallidum = (
        in_prior
        & gang
        & right
        & ~putamen
        & ~thalamus
        & ~near_caudate
        & (to_putamen <= 8)
        & (g >= 0.15)
        & (c < 0.3)
        & (x < putamen_medial_x)
    )

    # I: insular ribbon, a band lateral to the putamen's lateral surface (fitted per slice, extended along y so
    # that the insula's anterior and posterior ends beyond the putamen are covered), not crossing the fissure
    lateral_offset = np.full(g.shape, np.nan, dtype=np.float32)
    for k in range(g.shape[2]):
        if not gang[0, 0, k]:
            continue
        rows = np.nonzero(putamen[:, :, k].any(axis=0))[0]
        if rows.size < 5:
            continue
        edge_x = np.array([np.nonzero(putamen[:, j, k])[0].max() for j in rows]) + lo[0] + affine[0, 3]
        coef = np.polyfit(y[0, rows, 0], edge_x, 2)
        lateral_offset[:, :, k] = x[:, :, 0] - np.polyval(coef, y[0, :, 0])[None, :]
    offset = np.nan_to_num(lateral_offset, nan=-1e3)
    band = (offset >= 1.5) & (offset <= 8.0) & (y >= -32) & (y <= 28) & gang & right
    fissure = band & (c >= 0.4)
    beyond_fissure = np.maximum.accumulate(fissure, axis=0)  # x grows laterally in the right hemisphere
    insula = _component(band & (g >= 0.4) & ~putamen & ~beyond_fissure, seed(_SEED_INSULA))

    lentiform = putamen | pallidum
    lentiform = _component(
        ndimage.binary_closing(lentiform) & gang & ~thalamus & ~caudate & ~insula, seed(_SEED_PUTAMEN)
    )

    # IC: white matter (dark on the gray-matter map) between thalamus and lentiform, from the genu backwards
    internal_capsule = _component(
        (g < 0.3)
        & (c < 0.3)
        & right
        & gang
        & ~thalamus
        & ~lentiform
        & ~caudate
        & (_distance_outside(thalamus) <= 8)
        & (_distance_outside(lentiform) <= 8)
        & (y <= 2)
        & (y >= -32)
        & (x >= 8),
        seed(_SEED_IC),
    )

    # M1-M6: MCA cortex outside the deep structures, in angular sectors
    deep = thalamus | caudate | lentiform | internal_capsule | insula
    cortex = (g >= _CORTEX_GM) & right & ~deep
    angle = np.degrees(np.arctan2(y - _SECTOR_CENTRE_XY[1], x - _SECTOR_CENTRE_XY[0]))
    anterior = angle >= _SECTOR_ANTERIOR_DEG
    posterior = angle <= _SECTOR_POSTERIOR_DEG
    lateral = ~anterior & ~posterior
    # at the ganglionic level the cortex medial to (or in) the insular band is not MCA convexity cortex
    medial_of_insula = (y >= -32) & (y <= 28) & (offset <= 8.0)
    ganglionic_cortex = (
        cortex
        & gang
        & ~medial_of_insula
        & (x >= _ACA_MEDIAL_LIMIT["ganglionic"])
        & (y >= _PCA_POSTERIOR_LIMIT["ganglionic"])
    )
    supra_cortex = (
        cortex & supra & (x >= _ACA_MEDIAL_LIMIT["supraganglionic"]) & (y >= _PCA_POSTERIOR_LIMIT["supraganglionic"])
    )
    regions = {
        "C": caudate,
        "L": lentiform,
        "IC": internal_capsule,
        "I": insula,
        "M1": ganglionic_cortex & anterior,
        "M2": ganglionic_cortex & lateral,
        "M3": ganglionic_cortex & posterior & (x >= _M3_MEDIAL_LIMIT),
        "M4": supra_cortex & anterior,
        "M5": supra_cortex & lateral,
        "M6": supra_cortex & posterior,
    }

    labels = np.zeros(shape, dtype=np.int16)
    right_box = np.zeros(g.shape, dtype=np.int16)
    rows: list[tuple[int, str, str]] = []
    for n, region in enumerate(REGIONS):
        left_label, right_label = n + 1, n + 1 + len(REGIONS)
        # later regions never overwrite earlier ones: the deep structures were carved out of the cortex already
        right_box[regions[region] & (right_box == 0)] = right_label
        rows.append((left_label, "L", region))
    rows += [(n + 1 + len(REGIONS), "R", region) for n, region in enumerate(REGIONS)]
    labels[box] = right_box
    # mirror x -> -x: index i <-> (n - 1 - i) on a grid symmetric about x = 0
    mirrored = labels[::-1]
    labels = np.where(mirrored > 0, mirrored - len(REGIONS), labels).astype(np.int16)
    return labels, sorted(rows)
