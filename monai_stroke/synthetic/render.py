"""Render a synthetic patient: template HU sampled into the scanner's slices, lesions, partial volume, noise.

For every slice the pixel centres are mapped through the patient's pose into template space and the patient's template (the shared template plus
this patient's HU offset, gray/white contrast, asymmetry and texture) is sampled with trilinear
interpolation at several sub-slices across the slice thickness; their mean is the slice-thickness partial
volume (pixels coarser than the template's 1 mm get their in-plane partial volume from a matching Gaussian
pre-blur of the template and lesion fields). Lesion weight fields are sampled the same way, so a lesion follows the head's pose exactly. Then a
Gaussian in-plane blur (the reconstruction's point spread), the head cradle, spatially correlated noise
(Gaussian-filtered white noise, the same draw with and without lesions) and the circular field of view.

Lesion labels live on the grid ingest returns (:meth:`ScannerGeometry.ingest_affine`): each lesion's
partial-volume weight is un-sheared like the image, a voxel is labelled with the lesion of largest weight
where that weight reaches half the lesion's peak. Early ischemic amplitudes are solved (jointly, since
neighbouring territory parts overlap through the slice thickness) so that each lesion's mean HU change over
its labelled voxels equals its requested ``contrast_hu``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from monai_stroke.io.geometry import LPS_TO_RAS
from monai_stroke.synthetic.head import TEXTURE_MARGIN, HeadModel
from monai_stroke.synthetic.lesions import lesion_field, replacement_change
from monai_stroke.synthetic.patient import PatientSpec

__all__ = ["RenderedPatient", "render_patient", "patient_template", "default_head", "AIR_OUTSIDE_FOV_HU"]

#: value of pixels outside the reconstructed circle (stored value 0 with intercept -1024)
AIR_OUTSIDE_FOV_HU = -1024.0
# the template's resolution (mm): sub-slices are this far apart, and coarser pixels get extra in-plane blur
_SAMPLE_MM = 1.0
# a lesion is labelled where its weight reaches this fraction of its peak
_LABEL_FRACTION = 0.5
# a lesion whose peak weight on the patient grid stays below this is treated as not visible
_MIN_PEAK = 0.05


@functools.lru_cache(maxsize=1)
def default_head() -> HeadModel:
    """The default :class:`HeadModel` (template + atlas), loaded once per process."""
    return HeadModel.default()


@dataclass
class RenderedPatient:
    """A rendered series and its ground truth.

    Attributes:
        hu: float32 HU on the native DICOM grid ``(slices, rows, cols)`` (slice 0 most inferior).
        labels: uint16 lesion codes on the ingest grid ``(X, Y, Z)`` (None when rendered without lesions).
        affine: RAS affine of the ingest grid.
        lesion_stats: per lesion: ``code``, ``n_voxels``, ``volume_ml``, ``slices`` (Z indices showing it),
            ``contrast_hu`` (mean HU change over its labelled voxels, before noise and quantisation), ``peak``.
    """

    hu: np.ndarray
    labels: np.ndarray | None
    affine: np.ndarray
    lesion_stats: list[dict] = field(default_factory=list)


def patient_template(spec: PatientSpec, head: HeadModel, smooth_mm: float = 0.0) -> np.ndarray:
    """The template with this patient's HU variation: offset, gray/white contrast, asymmetry and texture.

    Args:
        spec: the patient.
        head: template anatomy.
        smooth_mm: Gaussian pre-blur (sigma, mm) of the template: the in-plane partial volume of pixels coarser
            than the template's 1 mm, applied once instead of supersampling every pixel.
    """
    out = head.smoothed_hu(smooth_mm) + np.float32(spec.hu_offset)
    box = head.intracranial_box
    tissue, gm, wm = head.tissue[box], head.gm[box], head.wm[box]
    x_mm = (np.arange(box[0].start, box[0].stop, dtype=np.float32) * head.voxel_mm[0] + head.affine[0, 3])[
        :, None, None
    ]
    rng = np.random.default_rng(np.random.SeedSequence([*spec.seed, 1]))
    offset = rng.integers(0, 2 * TEXTURE_MARGIN + 1, size=3)
    flips = rng.integers(0, 2, size=3)
    texture = head.texture_field(spec.texture_mm)[
        tuple(slice(o, o + n) for o, n in zip(offset, tissue.shape, strict=True))
    ]
    texture = texture[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    variation = gm * np.float32(spec.gm_delta_hu) + wm * np.float32(spec.wm_delta_hu)
    variation += tissue * (
        np.float32(spec.asymmetry_hu) * np.tanh(x_mm / np.float32(4.0)) + texture * np.float32(spec.texture_sd_hu)
    )
    out[box] += variation
    return out


def _noise_kernel_norm(sigma_px: float) -> float:
    """Standard deviation of white noise after the 2D Gaussian filter used for the noise."""
    if sigma_px <= 0:
        return 1.0
    size = 2 * int(4 * sigma_px + 1) + 1
    impulse = np.zeros((size, size), dtype=np.float64)
    impulse[size // 2, size // 2] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(impulse, sigma_px) ** 2).sum()))


class _SampledLesion:
    """One lesion's template-space fields and their per-slice samples on the patient's native grid.

    ``weight`` is the lesion's partial-volume fraction (for labels and for additive lesions); a replacement
    lesion also carries ``change = w * (target - HU)`` computed on the template grid, so that interpolation
    never mixes blood or fluid with the bone next to it (blood replaces soft tissue, not the skull).
    """

    def __init__(self, spec, lo: np.ndarray, weight: np.ndarray, change: np.ndarray | None) -> None:
        self.spec = spec
        self.lo = lo
        self.shape = np.asarray(weight.shape)
        self.weight_zyx = np.ascontiguousarray(weight.transpose(2, 1, 0))
        self.change_zyx = None if change is None else np.ascontiguousarray(change.transpose(2, 1, 0))
        self.weights: dict[int, np.ndarray] = {}
        self.changes: dict[int, np.ndarray] = {}

    @classmethod
    def build(cls, spec, head: HeadModel, template: np.ndarray, smooth_mm: float) -> _SampledLesion:
        lo, weight = lesion_field(spec, head)
        if smooth_mm > 0 and weight.size:
            weight = ndimage.gaussian_filter(weight, smooth_mm / head.voxel_mm, mode="constant")
        change = None
        if not spec.additive and weight.size:
            hi = lo + np.asarray(weight.shape)
            block = template[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            change = replacement_change(spec, weight, block)
        return cls(spec, lo, weight, change)

    def sample(self, k: int, coords: np.ndarray, cmin: np.ndarray, cmax: np.ndarray) -> None:
        """Sample slice ``k`` (sub-slice template coordinates ``coords``, shape ``(3, n_sub, H, W)``)."""
        if self.weight_zyx.size == 0 or np.any(cmax < self.lo - 1) or np.any(cmin > self.lo + self.shape):
            return
        local = coords - self.lo.reshape(3, 1, 1, 1)
        inside = np.all((local > -1.0) & (local < self.shape.reshape(3, 1, 1, 1)), axis=0)
        if not inside.any():
            return
        points = local[::-1, inside]
        w_sub = np.zeros(inside.shape, dtype=np.float32)
        w_sub[inside] = ndimage.map_coordinates(self.weight_zyx, points, order=1, cval=0.0, prefilter=False)
        if not w_sub.any():
            return
        self.weights[k] = w_sub.mean(axis=0)
        if self.change_zyx is not None:
            c_sub = np.zeros(inside.shape, dtype=np.float32)
            c_sub[inside] = ndimage.map_coordinates(self.change_zyx, points, order=1, cval=0.0, prefilter=False)
            self.changes[k] = c_sub.mean(axis=0)


def render_patient(spec: PatientSpec, head: HeadModel | None = None, lesions: bool = True) -> RenderedPatient:
    """Render one patient's series.

    Args:
        spec: the patient (see :func:`monai_stroke.synthetic.plan_patient`).
        head: template anatomy; the default template and atlas when None.
        lesions: False renders the same patient, same noise, without any lesion (the reference for contrast
            measurements).
    """
    head = default_head() if head is None else head
    geom, pose = spec.scanner, spec.pose
    # a pixel's box average is close to a Gaussian of sigma = width / sqrt(12): blur the 1 mm template by the
    # part of that the template's own voxels do not already provide, then sample pixel centres
    # (rounded to 0.1 mm so that patients of one cohort size share one blurred template)
    pv_sigma = round(math.sqrt(max(geom.pixel_spacing_mm**2 - _SAMPLE_MM**2, 0.0) / 12.0), 1)
    template = patient_template(spec, head, pv_sigma)
    n_sub = max(1, int(round(geom.slice_thickness_mm / _SAMPLE_MM)))
    offsets = geom.slice_thickness_mm * ((np.arange(n_sub) + 0.5) / n_sub - 0.5)
    # through-slice direction in template voxels per mm (affine part of the pose; the warp barely bends it
    # over half a slice thickness)
    normal_ras = LPS_TO_RAS[:3, :3] @ geom.normal_lps
    normal_idx = (pose.rotation.T @ normal_ras) / np.asarray(pose.scale) / head.voxel_mm

    fields = [_SampledLesion.build(les, head, template, pv_sigma) for les in spec.lesions] if lesions else []
    n_slices, rows, cols = geom.n_slices, geom.rows, geom.cols
    clean = np.empty((n_slices, rows, cols), dtype=np.float32)
    # sampling walks along the slice rows, i.e. along template x: make x the fastest-varying axis so that
    # neighbouring samples share cache lines (about 2x faster than the NIfTI order)
    template_zyx = np.ascontiguousarray(template.transpose(2, 1, 0))
    for k in range(n_slices):
        grid_lps = geom.pixel_grid_lps(k)
        ras = np.einsum("ij,j...->i...", LPS_TO_RAS[:3, :3], grid_lps)
        idx = head.mm_to_index(pose.world_to_template(ras)).astype(np.float64)
        coords = idx[:, None] + offsets[None, :, None, None] * normal_idx[:, None, None, None]
        hu_sub = ndimage.map_coordinates(
            template_zyx, coords[::-1], order=1, cval=-1000.0, output=np.float32, prefilter=False
        )
        clean[k] = hu_sub.mean(axis=0)
        if fields:
            cmin, cmax = coords.reshape(3, -1).min(axis=1), coords.reshape(3, -1).max(axis=1)
            for lesion in fields:
                lesion.sample(k, coords, cmin, cmax)

    sigma_px = spec.psf_mm / geom.pixel_spacing_mm
    blur = functools.partial(ndimage.gaussian_filter, sigma=sigma_px, mode="nearest")
    for k in range(n_slices):
        clean[k] = blur(clean[k])
    hu = clean.copy()
    labels, stats = None, []
    if lesions:
        labels, stats = _apply_lesions(hu, clean, fields, geom, blur)
    _finish(hu, spec)
    return RenderedPatient(hu=hu, labels=labels, affine=geom.ingest_affine(), lesion_stats=stats)


def _finish(hu: np.ndarray, spec: PatientSpec) -> None:
    """Head cradle, noise and the circular field of view, in place (identical with and without lesions)."""
    geom = spec.scanner
    rng = np.random.default_rng(np.random.SeedSequence([*spec.seed, 2]))
    sigma_px = spec.noise_corr_mm / geom.pixel_spacing_mm
    scale = np.float32(spec.noise_sd_hu / _noise_kernel_norm(sigma_px))
    r = (np.arange(geom.rows) - (geom.rows - 1) / 2.0)[:, None]
    c = (np.arange(geom.cols) - (geom.cols - 1) / 2.0)[None, :]
    outside = (r * r + c * c) > (min(geom.rows, geom.cols) / 2.0) ** 2
    for k in range(geom.n_slices):
        grid = geom.pixel_grid_lps(k)
        cover = spec.couch.fraction(grid[0], grid[1], geom.pixel_spacing_mm)
        hu[k] += cover * (np.float32(spec.couch.hu) - hu[k])
        noise = rng.standard_normal((geom.rows, geom.cols), dtype=np.float32)
        hu[k] += ndimage.gaussian_filter(noise, sigma_px) * scale
        hu[k][outside] = AIR_OUTSIDE_FOV_HU


def _slab(planes: dict[int, np.ndarray], geom, blur) -> tuple[int, np.ndarray]:
    """Blurred native planes of one lesion as a contiguous slab ``(first_slice, (m, rows, cols))``."""
    k0, k1 = min(planes), max(planes) + 1
    out = np.zeros((k1 - k0, geom.rows, geom.cols), dtype=np.float32)
    for k, plane in planes.items():
        out[k - k0] = blur(plane)
    return k0, out


def _overlap_mean(values: tuple[int, np.ndarray], mask: tuple[int, np.ndarray]) -> float:
    """Mean of a z-slab of values over a z-slab mask (both ``(z0, (X, Y, m))``), zero outside the values' slab."""
    (v0, v), (m0, m) = values, mask
    lo, hi = max(v0, m0), min(v0 + v.shape[2], m0 + m.shape[2])
    count = int(m.sum())
    if hi <= lo or count == 0:
        return 0.0
    return float(v[:, :, lo - v0 : hi - v0][m[:, :, lo - m0 : hi - m0]].sum()) / count


def _apply_lesions(hu, clean, fields: list[_SampledLesion], geom, blur) -> tuple[np.ndarray, list[dict]]:
    """Add the lesions to ``hu`` (in place); return the label map (ingest grid) and per-lesion statistics.

    Lesions are kept as slabs of the slices they touch, so memory grows with lesion size, not with their count.
    """
    native_w: list[tuple[int, np.ndarray] | None] = []
    ingest_w: list[tuple[int, np.ndarray] | None] = []
    for lesion in fields:
        if not lesion.weights:
            native_w.append(None)
            ingest_w.append(None)
            continue
        k0, slab = _slab(lesion.weights, geom, blur)
        native_w.append((k0, slab))
        ingest_w.append((k0, geom.unshear(slab, first_slice=k0)))
        if lesion.changes:
            c0, change = _slab(lesion.changes, geom, blur)
            hu[c0 : c0 + change.shape[0]] += change

    # each voxel belongs to the lesion of largest weight; a lesion is labelled where it reaches half its peak
    best = np.zeros(geom.ingest_shape, dtype=np.float32)
    owner = np.full(geom.ingest_shape, -1, dtype=np.int16)
    for j, item in enumerate(ingest_w):
        if item is None:
            continue
        z0, w = item
        view_best, view_owner = best[:, :, z0 : z0 + w.shape[2]], owner[:, :, z0 : z0 + w.shape[2]]
        wins = w > view_best
        view_best[wins] = w[wins]
        view_owner[wins] = j
    labels = np.zeros(geom.ingest_shape, dtype=np.uint16)
    masks: list[tuple[int, np.ndarray] | None] = [None] * len(fields)
    for j, item in enumerate(ingest_w):
        if item is None or float(item[1].max()) < _MIN_PEAK:
            continue
        z0, w = item
        mask = (w >= _LABEL_FRACTION * float(w.max())) & (owner[:, :, z0 : z0 + w.shape[2]] == j)
        if mask.any():
            masks[j] = (z0, mask)
            labels[:, :, z0 : z0 + w.shape[2]][mask] = fields[j].spec.code

    # early ischemic amplitudes: mean change over each lesion's mask = its contrast; neighbouring lesions of
    # one territory overlap through the slice thickness, so the amplitudes are solved jointly
    additive = [j for j, lesion in enumerate(fields) if lesion.spec.additive and masks[j] is not None]
    if additive:
        replaced = [j for j, lesion in enumerate(fields) if not lesion.spec.additive and lesion.changes]
        delta_replace = geom.unshear(hu - clean) if replaced else None
        system = np.array([[_overlap_mean(ingest_w[i], masks[j]) for i in additive] for j in additive])
        rhs = np.array(
            [
                fields[j].spec.contrast_hu
                - (_overlap_mean((0, delta_replace), masks[j]) if delta_replace is not None else 0.0)
                for j in additive
            ]
        )
        for amplitude, j in zip(np.linalg.solve(system, rhs), additive, strict=True):
            k0, slab = native_w[j]
            hu[k0 : k0 + slab.shape[0]] += np.float32(amplitude) * slab

    stats = []
    voxel_ml = float(np.prod(np.linalg.norm(geom.ingest_affine()[:3, :3], axis=0))) / 1000.0
    for j, lesion in enumerate(fields):
        n_vox = int(masks[j][1].sum()) if masks[j] is not None else 0
        contrast = 0.0
        if n_vox:
            z0, mask = masks[j]
            m = mask.shape[2]
            delta = geom.unshear(hu[z0 : z0 + m] - clean[z0 : z0 + m], first_slice=z0)
            contrast = float(delta[mask].mean())
        stats.append(
            {
                "code": lesion.spec.code,
                "n_voxels": n_vox,
                "volume_ml": round(n_vox * voxel_ml, 4),
                "slices": sorted(int(masks[j][0] + z) for z in np.unique(np.nonzero(masks[j][1])[2])) if n_vox else [],
                "contrast_hu": round(contrast, 4),
                "peak": round(float(ingest_w[j][1].max()), 4) if ingest_w[j] is not None else 0.0,
            }
        )
    return labels, stats
