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
where that weight reaches half the lesion's peak (for blood: or a quarter of the voxel). Early ischemic
amplitudes are solved (jointly, since neighbouring territory parts overlap through the slice thickness) so that
each lesion's mean HU change over its labelled voxels equals its requested ``contrast_hu``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from monai_stroke.io.geometry import LPS_TO_RAS
from monai_stroke.synthetic.head import HEAD_CELL_VOX, TEXTURE_MARGIN, HeadModel
from monai_stroke.synthetic.lesions import lesion_field, replacement_change
from monai_stroke.synthetic.patient import PatientSpec

__all__ = [
    "RenderedPatient",
    "render_patient",
    "patient_template",
    "correlated_noise",
    "default_head",
    "AIR_OUTSIDE_FOV_HU",
]

#: value of pixels outside the reconstructed circle (stored value 0 with intercept -1024)
AIR_OUTSIDE_FOV_HU = -1024.0
# the template's resolution (mm): sub-slices are this far apart, and coarser pixels get extra in-plane blur
_SAMPLE_MM = 1.0
# a lesion is labelled where its weight reaches this fraction of its peak (its extent, whatever the partial volume
# of thin cortical lesions) ...
_LABEL_FRACTION = 0.5
# ... and blood also where it fills this fraction of a voxel: thin blood in sulci or against the skull is visible
# (tens of HU) long before it fills half of the thickest part's voxels
_BLOOD_FRACTION = 0.25
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
        # slice index -> (row0, col0, block) on the native grid
        self.weights: dict[int, tuple[int, int, np.ndarray]] = {}
        self.changes: dict[int, tuple[int, int, np.ndarray]] = {}

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

    def sample(self, k: int, plane: _SlicePlane) -> None:
        """Sample slice ``k`` where it can touch the lesion's block (a rectangle of the slice)."""
        if self.weight_zyx.size == 0:
            return
        rect = plane.rectangle(self.lo, self.lo + self.shape)
        if rect is None:
            return
        coords = plane.coords(rect) - self.lo.reshape(3, 1, 1, 1)
        points = coords[::-1]
        w_sub = ndimage.map_coordinates(self.weight_zyx, points, order=1, cval=0.0, output=np.float32, prefilter=False)
        if not w_sub.any():
            return
        self.weights[k] = plane.upsample(rect, w_sub.mean(axis=0))
        if self.change_zyx is not None:
            c_sub = ndimage.map_coordinates(
                self.change_zyx, points, order=1, cval=0.0, output=np.float32, prefilter=False
            )
            self.changes[k] = plane.upsample(rect, c_sub.mean(axis=0))


class _SlicePlane:
    """Template coordinates of one slice's sample points, on the render grid (every ``step``-th pixel).

    Args:
        idx: template voxel coordinates ``(3, h, w)`` of the slice plane's render-grid points.
        offsets: sub-slice offsets (mm) along the normal.
        normal_idx: template voxels per mm along the slice normal.
        step: render-grid spacing in pixels (pixels finer than the template are sampled every ``step``-th and
            interpolated back).
        shape: the native slice shape ``(rows, cols)``.
    """

    def __init__(self, idx: np.ndarray, offsets: np.ndarray, normal_idx: np.ndarray, step: int, shape) -> None:
        self.idx, self.offsets, self.normal_idx, self.step, self.shape = idx, offsets, normal_idx, step, shape
        # how far the sub-slices reach from the centre plane, in template voxels
        self.reach = np.abs(np.outer(normal_idx, offsets)).max(axis=1) + 1.0

    def coords(self, rect: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Sub-slice coordinates ``(3, n_sub, h, w)`` of the whole plane or of ``rect`` = (r0, r1, c0, c1)."""
        idx = self.idx if rect is None else self.idx[:, rect[0] : rect[1], rect[2] : rect[3]]
        return idx[:, None] + self.offsets[None, :, None, None] * self.normal_idx[:, None, None, None]

    def rectangle(self, lo: np.ndarray, hi: np.ndarray) -> tuple[int, int, int, int] | None:
        """Render-grid rectangle whose sub-slices can reach the template block ``[lo, hi)``, or None."""
        near = np.ones(self.idx.shape[1:], dtype=bool)
        for a in range(3):
            near &= (self.idx[a] > lo[a] - 1 - self.reach[a]) & (self.idx[a] < hi[a] + self.reach[a])
        if not near.any():
            return None
        rows, cols = np.nonzero(near.any(axis=1))[0], np.nonzero(near.any(axis=0))[0]
        h, w = self.idx.shape[1:]
        # one point of margin keeps the interpolation back to full resolution exact inside the rectangle
        return (max(rows[0] - 1, 0), min(rows[-1] + 2, h), max(cols[0] - 1, 0), min(cols[-1] + 2, w))

    def upsample(self, rect: tuple[int, int, int, int] | None, values: np.ndarray) -> tuple[int, int, np.ndarray]:
        """Render-grid values -> native pixels: ``(row0, col0, block)`` (bilinear, pixel-centre aligned)."""
        r0, c0 = (0, 0) if rect is None else (rect[0], rect[2])
        if self.step == 1:
            return r0, c0, values
        block = ndimage.zoom(values, self.step, order=1, mode="nearest", grid_mode=True)
        return r0 * self.step, c0 * self.step, block


def _paste(out: np.ndarray, item: tuple[int, int, np.ndarray]) -> None:
    r0, c0, block = item
    out[r0 : r0 + block.shape[0], c0 : c0 + block.shape[1]] = block


def render_patient(
    spec: PatientSpec, head: HeadModel | None = None, lesions: bool = True, noise: bool = True
) -> RenderedPatient:
    """Render one patient's series.

    Args:
        spec: the patient (see :func:`monai_stroke.synthetic.plan_patient`).
        head: template anatomy; the default template and atlas when None.
        lesions: False renders the same patient, same noise, without any lesion (the reference for contrast
            measurements).
        noise: False leaves out the image noise (everything else identical).
    """
    head = default_head() if head is None else head
    geom, pose = spec.scanner, spec.pose
    # a pixel's box average is close to a Gaussian of sigma = width / sqrt(12): blur the 1 mm template by the
    # part of that the template's own voxels do not already provide, then sample pixel centres
    # (rounded to 0.1 mm so that patients of one cohort size share one blurred template)
    pv_sigma = round(math.sqrt(max(geom.pixel_spacing_mm**2 - _SAMPLE_MM**2, 0.0) / 12.0), 1)
    # pixels finer than the template add no detail: sample every step-th one and interpolate back
    step = max(1, int(_SAMPLE_MM / geom.pixel_spacing_mm + 1e-6))
    if geom.rows % step or geom.cols % step:
        step = 1
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
    cells = head.occupied_cells()
    air = float(template[0, 0, 0])
    for k in range(n_slices):
        ras = np.einsum("ij,j...->i...", LPS_TO_RAS[:3, :3], geom.pixel_grid_lps(k, step))
        idx = head.mm_to_index(pose.world_to_template(ras)).astype(np.float64)
        plane = _SlicePlane(idx, offsets, normal_idx, step, (rows, cols))
        # only points near the head are interpolated; the rest of the field of view is air
        cell = np.floor(idx / HEAD_CELL_VOX).astype(np.intp)
        inside = np.all((cell >= 0) & (cell < np.reshape(cells.shape, (3, 1, 1))), axis=0)
        inside[inside] = cells[tuple(c[inside] for c in cell)]
        values = np.full(idx.shape[1:], air, dtype=np.float32)
        if inside.any():
            points = plane.coords()[:, :, inside][::-1]
            values[inside] = ndimage.map_coordinates(
                template_zyx, points, order=1, cval=air, output=np.float32, prefilter=False
            ).mean(axis=0)
        _paste(clean[k], plane.upsample(None, values))
        for lesion in fields:
            lesion.sample(k, plane)

    sigma_px = spec.psf_mm / geom.pixel_spacing_mm
    blur = functools.partial(ndimage.gaussian_filter, sigma=sigma_px, mode="nearest")
    for k in range(n_slices):
        clean[k] = blur(clean[k])
    hu = clean.copy()
    labels, stats = None, []
    if lesions:
        labels, stats = _apply_lesions(hu, clean, fields, geom, blur)
    _finish(hu, spec, noise)
    return RenderedPatient(hu=hu, labels=labels, affine=geom.ingest_affine(), lesion_stats=stats)


def correlated_noise(rng: np.random.Generator, shape: tuple[int, int], sd: float, sigma_px: float) -> np.ndarray:
    """Gaussian-filtered white noise with standard deviation ``sd`` (float32), like reconstructed CT noise.

    Args:
        rng: random generator.
        shape: image shape.
        sd: standard deviation of the result.
        sigma_px: Gaussian correlation length in pixels (0: white noise).
    """
    noise = rng.standard_normal(shape, dtype=np.float32)
    if sigma_px > 0:
        noise = ndimage.gaussian_filter(noise, sigma_px)
    return noise * np.float32(sd / _noise_kernel_norm(sigma_px))


def _finish(hu: np.ndarray, spec: PatientSpec, noise: bool) -> None:
    """Head cradle, noise and the circular field of view, in place (identical with and without lesions)."""
    geom = spec.scanner
    rng = np.random.default_rng(np.random.SeedSequence([*spec.seed, 2]))
    sigma_px = spec.noise_corr_mm / geom.pixel_spacing_mm
    r = (np.arange(geom.rows) - (geom.rows - 1) / 2.0)[:, None]
    c = (np.arange(geom.cols) - (geom.cols - 1) / 2.0)[None, :]
    outside = (r * r + c * c) > (min(geom.rows, geom.cols) / 2.0) ** 2
    for k in range(geom.n_slices):
        grid = geom.pixel_grid_lps(k)
        cover = spec.couch.fraction(grid[0], grid[1], geom.pixel_spacing_mm)
        hu[k] += cover * (np.float32(spec.couch.hu) - hu[k])
        if noise:
            hu[k] += correlated_noise(rng, (geom.rows, geom.cols), spec.noise_sd_hu, sigma_px)
        hu[k][outside] = AIR_OUTSIDE_FOV_HU


def _slab(planes: dict[int, tuple[int, int, np.ndarray]], geom, blur) -> tuple[int, np.ndarray]:
    """Blurred native planes of one lesion as a contiguous slab ``(first_slice, (m, rows, cols))``."""
    k0, k1 = min(planes), max(planes) + 1
    out = np.zeros((k1 - k0, geom.rows, geom.cols), dtype=np.float32)
    for k, item in planes.items():
        _paste(out[k - k0], item)
        out[k - k0] = blur(out[k - k0])
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
        threshold = _LABEL_FRACTION * float(w.max())
        if fields[j].spec.hemorrhage:
            threshold = min(threshold, _BLOOD_FRACTION)
        mask = (w >= threshold) & (owner[:, :, z0 : z0 + w.shape[2]] == j)
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
