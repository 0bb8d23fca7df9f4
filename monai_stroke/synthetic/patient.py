"""One synthetic patient: every random choice, drawn once and recorded, so the patient can be re-rendered.

:func:`plan_patient` draws a :class:`PatientSpec` from a seed: scanner geometry (matrix, pixel size, slice
count, gantry tilt), head pose and per-patient anatomy (scale, smooth warp, HU offset, gray/white contrast,
mild left-right asymmetry, tissue texture, noise), the head cradle, and the lesions of the patient's profile.
The spec is plain data (``to_dict``/``from_dict``, written as ``<patient>/spec.json``), in the spirit of
TorchIO's applied-transform records: ``render_patient(spec)`` replays it exactly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from monai_stroke.errors import UserInputError
from monai_stroke.io.geometry import LPS_TO_RAS
from monai_stroke.synthetic.head import HeadModel
from monai_stroke.synthetic.lesions import EARLY_ISCHEMIC_KINDS, HEMORRHAGE_KINDS, LesionSpec, lesion_field
from monai_stroke.synthetic.scanner import Couch, HeadPose, ScannerGeometry
from monai_stroke.vocabulary import REGIONS, SIDES

__all__ = ["SIZES", "PROFILES", "SynthConfig", "PatientSpec", "plan_patient", "lesion_volume_in_region_ml"]

#: matrix and pixel-size range (mm) of each cohort size; the field of view (230-250 mm) is the same
SIZES: dict[str, dict] = {
    "small": {"matrix": 128, "pixel_mm": (1.80, 1.95)},
    "full": {"matrix": 512, "pixel_mm": (0.45, 0.49)},
}

#: patient profiles: which lesion groups a patient has
PROFILES: dict[str, tuple[str, ...]] = {
    "intact": (),
    "early": ("early",),
    "old": ("old",),
    "early_old": ("early", "old"),
    "hemorrhage": ("hemorrhage",),
    "hemorrhage_early": ("hemorrhage", "early"),
}

# MCA sub-territories that a territorial infarct takes together (each region becomes one lesion)
_TERRITORIES: tuple[tuple[str, ...], ...] = (
    ("I", "M2", "M5"),
    ("M1", "M4"),
    ("M3", "M6"),
    ("C", "L", "IC"),
    ("I", "M2"),
    ("L", "I", "M2", "M5"),
)
# relative frequency of the early ischemic kinds
_EARLY_KIND_WEIGHTS: dict[str, float] = {
    "frank_hypodensity": 0.35,
    "territorial_infarction": 0.30,
    "recent_infarction": 0.20,
    "scattered_infarction": 0.15,
}
_PLACEMENT_TRIES = 25


@dataclass(frozen=True)
class SynthConfig:
    """Cohort-wide settings of the synthetic data (every range is ``(low, high)``).

    Args:
        size: ``"small"`` (128 x 128, ~1.9 mm pixels) or ``"full"`` (512 x 512, ~0.47 mm pixels).
        ischemic_contrast_hu: mean HU change of early ischemic lesions over their labelled voxels.
        old_density_hu: density of old infarcts (towards CSF).
        hemorrhage_density_hu: density of fresh blood.
        noise_sd_hu: image noise standard deviation.
        noise_corr_mm: correlation length (Gaussian sigma) of the noise in the slice plane.
        psf_mm: in-plane blur (Gaussian sigma) of the reconstruction.
        tilt_fraction: fraction of patients scanned with a gantry tilt.
        tilt_deg: tilt magnitude.
        rotation_deg: largest head rotation about each axis.
        shift_mm: largest head shift along each axis.
        n_slices: slice count (fewer when the head is shorter than the range covers).
        slice_mm: slice thickness and table increment.
        min_region_ml: an ischemic lesion is kept only if at least this volume of it lies in its atlas region
            (in template space), so that its region's label is meaningful.
    """

    size: str = "small"
    ischemic_contrast_hu: tuple[float, float] = (-6.0, -2.0)
    old_density_hu: tuple[float, float] = (5.0, 20.0)
    hemorrhage_density_hu: tuple[float, float] = (50.0, 90.0)
    noise_sd_hu: tuple[float, float] = (3.0, 6.0)
    noise_corr_mm: float = 0.6
    psf_mm: float = 0.45
    tilt_fraction: float = 0.35
    tilt_deg: tuple[float, float] = (10.0, 20.0)
    rotation_deg: float = 10.0
    shift_mm: float = 10.0
    n_slices: tuple[int, int] = (30, 40)
    slice_mm: float = 5.0
    min_region_ml: float = 0.15

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise UserInputError(f"size {self.size!r} is not one of {', '.join(SIZES)}")
        for name in (
            "ischemic_contrast_hu",
            "old_density_hu",
            "hemorrhage_density_hu",
            "noise_sd_hu",
            "tilt_deg",
            "n_slices",
        ):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise UserInputError(f"{name} range ({lo}, {hi}) must be finite with low <= high")
        lo, hi = self.ischemic_contrast_hu
        if hi >= 0 or lo < -30:
            raise UserInputError(
                f"ischemic contrast range ({lo}, {hi}) HU must be negative (a drop) and above -30 HU; e.g. -6 -2"
            )
        if not (self.old_density_hu[0] >= -10.0 and self.old_density_hu[1] <= 30.0):
            lo, hi = self.old_density_hu
            raise UserInputError(f"old infarct density range ({lo}, {hi}) HU must lie within -10..30 (towards CSF)")
        if not (self.hemorrhage_density_hu[0] >= 30.0 and self.hemorrhage_density_hu[1] <= 120.0):
            lo, hi = self.hemorrhage_density_hu
            raise UserInputError(f"hemorrhage density range ({lo}, {hi}) HU must lie within 30..120 (fresh blood)")
        if not (self.noise_sd_hu[0] >= 0.0 and self.noise_sd_hu[1] <= 30.0):
            raise UserInputError(f"noise SD range {tuple(self.noise_sd_hu)} HU must lie within 0..30")
        if not 0.0 <= self.tilt_fraction <= 1.0:
            raise UserInputError(f"tilt fraction {self.tilt_fraction} must be within 0..1")
        if self.n_slices[0] < 8:
            raise UserInputError(f"slice count range {self.n_slices} must start at 8 or more")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass
class PatientSpec:
    """Everything that makes one synthetic patient (see the module docstring)."""

    patient_id: str
    seed: list[int]
    profile: str
    scanner: ScannerGeometry
    pose: HeadPose
    couch: Couch
    hu_offset: float = 0.0
    gm_delta_hu: float = 0.0
    wm_delta_hu: float = 0.0
    asymmetry_hu: float = 0.0
    texture_sd_hu: float = 1.0
    texture_mm: float = 3.0
    noise_sd_hu: float = 4.0
    noise_corr_mm: float = 0.6
    psf_mm: float = 0.45
    lesions: list[LesionSpec] = field(default_factory=list)
    file_stems: list[str] = field(default_factory=list)
    uids: dict[str, str] = field(default_factory=dict)
    sop_uids: list[str] = field(default_factory=list)
    study_date: str = "20000101"

    @property
    def hemorrhage(self) -> bool:
        return any(les.hemorrhage for les in self.lesions)

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("scanner", "pose", "couch", "lesions")}
        out["scanner"] = self.scanner.to_dict()
        out["pose"] = self.pose.to_dict()
        out["couch"] = self.couch.to_dict()
        out["lesions"] = [les.to_dict() for les in self.lesions]
        return out

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> PatientSpec:
        """Read the spec from a patient's ``spec.json`` (as written by ``make_cohort``)."""
        try:
            record = json.loads(Path(path).read_text())
            return cls.from_dict(record["spec"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserInputError(
                f"{path} is not a synthetic patient's spec.json ({exc}); regenerate the cohort"
            ) from exc

    @classmethod
    def from_dict(cls, d: dict) -> PatientSpec:
        d = dict(d)
        d["scanner"] = ScannerGeometry(**d["scanner"])
        d["pose"] = HeadPose.from_dict(d["pose"])
        couch = dict(d["couch"])
        couch["axis_lps"] = tuple(couch["axis_lps"])
        d["couch"] = Couch(**couch)
        d["lesions"] = [LesionSpec.from_dict(x) for x in d["lesions"]]
        return cls(**d)


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _plan_pose(rng: np.random.Generator, head: HeadModel, config: SynthConfig) -> HeadPose:
    rot = tuple(round(float(rng.uniform(-1, 1) * config.rotation_deg), 3) for _ in range(3))
    shift = [float(rng.uniform(-1, 1) * config.shift_mm) for _ in range(3)]
    scale = tuple(round(float(rng.uniform(0.94, 1.06)), 4) for _ in range(3))
    warp = tuple(tuple(round(float(np.clip(rng.normal(0.0, 1.2), -3.0, 3.0)), 3) for _ in range(6)) for _ in range(3))
    return HeadPose(
        rotation_deg=rot,
        head_center_world_mm=tuple(round(v, 3) for v in shift),
        template_center_mm=tuple(round(float(v), 3) for v in head.head_center_mm),
        scale=scale,
        warp_mm=warp,
    )


def _plan_scanner(
    rng: np.random.Generator, head: HeadModel, pose: HeadPose, config: SynthConfig, tilted: bool | None
) -> tuple[ScannerGeometry, np.ndarray]:
    size = SIZES[config.size]
    pixel = round(_u(rng, size["pixel_mm"]), 5)
    # all draws happen whether used or not, so that forcing the tilt changes nothing else about the patient
    tilt_draw, tilt_deg, tilt_sign = rng.uniform(), _u(rng, config.tilt_deg), rng.uniform()
    tilt = 0.0
    if (tilt_draw < config.tilt_fraction) if tilted is None else tilted:
        # most tilted head CT is angled along the orbitomeatal line (positive here); a few the other way
        tilt = round(tilt_deg * (1.0 if tilt_sign < 0.75 else -1.0), 3)
    n_wanted = int(rng.integers(config.n_slices[0], config.n_slices[1] + 1))
    probe = ScannerGeometry(size["matrix"], size["matrix"], pixel, 1, 0.0, config.slice_mm, config.slice_mm, tilt)
    # head surface in LPS world, and its extent along the slice normal
    world = pose.template_to_world_affine()
    surface_ras = world[:3, :3] @ head.head_points_mm + world[:3, 3:4]
    surface_lps = LPS_TO_RAS[:3, :3] @ surface_ras
    along = probe.normal_lps @ surface_lps
    cos_t = math.cos(math.radians(tilt))
    top = float(along.max()) - _u(rng, (0.5, 3.0))
    # the template ends at the skull base: stay a few mm above its lowest point
    bottom = float(along.min()) + 5.0
    n_fit = int((top - bottom) // (config.slice_mm * cos_t)) + 1
    n = max(min(n_wanted, n_fit), 2)
    # slice k's centre (0, 0, z_k) lies at normal position cos(t) * z_k
    start = round(top / cos_t - (n - 1) * config.slice_mm, 3)
    geom = ScannerGeometry(size["matrix"], size["matrix"], pixel, n, start, config.slice_mm, config.slice_mm, tilt)
    return geom, surface_lps


def _plan_couch(rng: np.random.Generator, surface_lps: np.ndarray, pose: HeadPose) -> Couch:
    center = LPS_TO_RAS[:3, :3] @ np.asarray(pose.head_center_world_mm)
    axis = (round(float(center[0]), 3), round(float(center[1]), 3))
    dx, dy = surface_lps[0] - axis[0], surface_lps[1] - axis[1]
    rho = np.sqrt(dx * dx + dy * dy)
    half_angle = 65.0
    # clear the head everywhere the shell could touch it (posterior sector, a margin beyond its edge)
    sector = dy / np.maximum(rho, 1e-6) > math.cos(math.radians(half_angle + 15.0))
    radius = float(rho[sector].max()) + _u(rng, (3.0, 8.0))
    return Couch(axis_lps=axis, radius_mm=round(radius, 3), half_angle_deg=half_angle, hu=round(_u(rng, (180, 320)), 1))


def lesion_volume_in_region_ml(lo: np.ndarray, weights: np.ndarray, head: HeadModel, side: str, region: str) -> float:
    """Template-space volume (mL) of a lesion field's labelled part (weight >= half its peak) inside a region."""
    if weights.size == 0 or weights.max() <= 0:
        return 0.0
    hi = lo + np.asarray(weights.shape)
    labels = head.atlas_labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    inside = (weights >= 0.5 * weights.max()) & (labels == head.region_label(side, region))
    return float(inside.sum() * np.prod(head.voxel_mm) / 1000.0)


class _Placer:
    """Draws lesions of one patient, keeping them apart (so each one's contrast is its own)."""

    def __init__(self, rng: np.random.Generator, head: HeadModel, config: SynthConfig, first_code: int) -> None:
        self.rng, self.head, self.config = rng, head, config
        self.code = first_code
        self.lesions: list[LesionSpec] = []
        self.occupied: list[tuple[np.ndarray, np.ndarray, str]] = []  # (lo, mask dilated by the gap, group)
        self.used_regions: set[tuple[str, str]] = set()

    def _overlaps(self, lo: np.ndarray, mask: np.ndarray, group: str = "") -> bool:
        for olo, omask, ogroup in self.occupied:
            if group and ogroup == group:
                continue
            a_lo, a_hi = np.maximum(lo, olo), np.minimum(lo + mask.shape, olo + np.asarray(omask.shape))
            if np.any(a_hi <= a_lo):
                continue
            sa = tuple(slice(a_lo[i] - lo[i], a_hi[i] - lo[i]) for i in range(3))
            sb = tuple(slice(a_lo[i] - olo[i], a_hi[i] - olo[i]) for i in range(3))
            if np.any(mask[sa] & omask[sb]):
                return True
        return False

    def _accept(self, spec: LesionSpec, lo: np.ndarray, weights: np.ndarray, group: str = "") -> None:
        # lesions keep a 3 mm gap so that a replacement lesion never sits on another lesion's tissue; early
        # lesions of one territory (one group) may touch: their contrasts are solved jointly when rendering
        support = weights >= 0.05 * max(float(weights.max()), 1e-6)
        gap = 3
        self.occupied.append((lo - gap, _dilate(support, gap), group))
        self.lesions.append(spec)
        self.code += 1
        if spec.region:
            self.used_regions.add((spec.side, spec.region))

    def free_regions(self, side: str, regions=REGIONS) -> list[str]:
        return [r for r in regions if (side, r) not in self.used_regions]

    # --- ischemic ---------------------------------------------------------------------------------------

    def ischemic(self, kind: str, side: str, region: str, group: str = "") -> bool:
        """Place one ischemic lesion of ``kind`` in ``(side, region)``; False when it does not fit.

        Args:
            kind: an ischemic lesion kind.
            side: the patient's side.
            region: the ASPECTS region.
            group: lesions of one non-empty group (a territory) may touch each other.
        """
        rng, head, config = self.rng, self.head, self.config
        voxels = head.region_voxels(side, region)
        parenchyma = head.tissue[tuple(voxels.T)] > 0.5
        voxels = voxels[parenchyma] if parenchyma.sum() > 20 else voxels
        centroid = head.index_to_mm(voxels.mean(axis=0))
        for _ in range(_PLACEMENT_TRIES):
            slices_wanted = int(rng.integers(1, 4))
            # z half-height for a lesion seen on about 1, 2 or 3 slices of config.slice_mm
            rz = float(np.clip(rng.normal((slices_wanted - 0.6) * config.slice_mm / 2.0, 0.6), 1.5, None))
            centers = [head.index_to_mm(voxels[rng.integers(len(voxels))])]
            if kind == "territorial_infarction":
                centers = [centroid + rng.normal(0.0, 3.0, 3)]
                radii, edge = [_u(rng, (22, 35)), _u(rng, (22, 35)), max(rz, _u(rng, (6, 12)))], 3.0
            elif kind == "scattered_infarction":
                n = int(rng.integers(3, 7))
                centers = [head.index_to_mm(voxels[i]) for i in rng.integers(len(voxels), size=n)]
                r = _u(rng, (2.5, 4.5))
                radii, edge = [r, r, max(r, rz / 2)], 1.5
            elif kind == "old_infarction":
                r = _u(rng, (3.0, 6.0)) if region in ("C", "L", "IC") else _u(rng, (5.0, 12.0))
                radii, edge = [r, r * _u(rng, (0.8, 1.25)), rz], 0.8
            else:  # frank hypodensity, recent infarction
                r = _u(rng, (6.0, 13.0))
                radii, edge = [r, r * _u(rng, (0.7, 1.3)), rz], 2.5
            spec = LesionSpec(
                code=self.code,
                kind=kind,
                side=side,
                region=region,
                centers_mm=[[round(float(v), 3) for v in c] for c in centers],
                radii_mm=[round(float(v), 3) for v in radii],
                edge_mm=edge,
                contrast_hu=round(_u(rng, config.ischemic_contrast_hu), 3) if kind in EARLY_ISCHEMIC_KINDS else None,
                target_hu=round(_u(rng, config.old_density_hu), 3) if kind == "old_infarction" else None,
            )
            lo, w = lesion_field(spec, head)
            if lesion_volume_in_region_ml(lo, w, head, side, region) < config.min_region_ml:
                continue
            support = w >= 0.05 * max(float(w.max()), 1e-6)
            if self._overlaps(lo, support, group):
                continue
            self._accept(spec, lo, w, group)
            return True
        return False

    # --- hemorrhage -------------------------------------------------------------------------------------

    def hemorrhage(self, kind: str, side: str) -> bool:
        rng, head, config = self.rng, self.head, self.config
        sign = -1.0 if side == "L" else 1.0
        density = config.hemorrhage_density_hu
        for _ in range(_PLACEMENT_TRIES):
            thickness, level = 0.0, 0.0
            if kind == "intraparenchymal":
                # hypertensive sites (lentiform, caudate/thalamus region) or lobar white matter
                region = str(rng.choice(["L", "L", "IC", "C", "M2", "M3", "M5"]))
                voxels = head.region_voxels(side, region)
                center = head.index_to_mm(voxels[rng.integers(len(voxels))])
                r = _u(rng, (6.0, 14.0))
                radii, edge = [r * _u(rng, (0.8, 1.2)), r * _u(rng, (0.8, 1.2)), r * _u(rng, (0.6, 1.0))], 0.8
                target = _u(rng, density)
            elif kind in ("subdural", "epidural"):
                mm = head.inner_table_points_mm
                if kind == "subdural":  # convexity, fronto-parietal
                    ok = (mm[0] * sign > 25) & (mm[2] > 0) & (mm[2] < 60)
                    radii = [_u(rng, (45.0, 70.0))] * 3
                    thickness = _u(rng, (5.0, 11.0))
                else:  # temporo-parietal, under the squama
                    ok = (mm[0] * sign > 40) & (mm[2] > -15) & (mm[2] < 40)
                    radii = [_u(rng, (18.0, 30.0))] * 3
                    thickness = _u(rng, (9.0, 18.0))
                cand = mm[:, ok]
                center = cand[:, rng.integers(cand.shape[1])]
                edge = 0.8
                target = _u(rng, density)
            elif kind == "subarachnoid":
                # around the Sylvian fissure or over the convexity of one side
                mm = head.superficial_csf_points_mm
                ok = (mm[0] * sign > 25) & (mm[2] > -20) & (mm[2] < 50)
                cand = mm[:, ok]
                center = cand[:, rng.integers(cand.shape[1])]
                r = _u(rng, (15.0, 25.0))
                radii, edge = [r, r, r * 0.8], 1.0
                # blood diluted in CSF is less dense
                target = _u(rng, (density[0], max(density[0], density[1] - 15.0)))
            elif kind == "intraventricular":
                vox = np.argwhere(head.ventricles)
                mm = head.index_to_mm(vox.T)
                lo_y, hi_y = float(mm[1].min()), float(mm[1].max())
                # a level through the posterior third to half of the ventricles
                level = lo_y + _u(rng, (0.3, 0.5)) * (hi_y - lo_y)
                center = np.array([0.0, lo_y, float(mm[2].mean())])
                radii, edge = [200.0, 200.0, 200.0], 1.0
                target = _u(rng, (density[0], max(density[0], density[1] - 15.0)))
                side = ""
            else:  # pragma: no cover
                raise ValueError(kind)
            spec = LesionSpec(
                code=self.code,
                kind=kind,
                side=side,
                centers_mm=[[round(float(v), 3) for v in center]],
                radii_mm=[round(float(v), 3) for v in radii],
                edge_mm=edge,
                thickness_mm=round(thickness, 3),
                level_mm=round(level, 3),
                target_hu=round(target, 3),
            )
            lo, w = lesion_field(spec, head)
            if w.size == 0 or float((w >= 0.5 * w.max()).sum() * np.prod(head.voxel_mm)) < 400.0:
                continue
            support = w >= 0.05 * float(w.max())
            if self._overlaps(lo, support):
                continue
            self._accept(spec, lo, w)
            return True
        return False


def _dilate(mask: np.ndarray, voxels: int) -> np.ndarray:
    """``mask`` padded by ``voxels`` on every side and dilated by as many voxels (a cube)."""
    if voxels <= 0:
        return mask
    padded = np.pad(mask, voxels)
    return ndimage.maximum_filter(padded, size=2 * voxels + 1)


def _plan_lesions(
    profile: str,
    rng: np.random.Generator,
    head: HeadModel,
    config: SynthConfig,
    first_code: int,
    bleed_kind: str | None,
    early_kind: str | None,
) -> list[LesionSpec]:
    placer = _Placer(rng, head, config, first_code)
    groups = PROFILES[profile]
    side = str(rng.choice(SIDES))
    if "hemorrhage" in groups:
        kinds = [bleed_kind or str(rng.choice(HEMORRHAGE_KINDS))]
        if rng.uniform() < 0.35:
            kinds.append(str(rng.choice([k for k in HEMORRHAGE_KINDS if k != kinds[0]])))
        for kind in kinds:
            placer.hemorrhage(kind, str(rng.choice(SIDES)))
    if "early" in groups:
        kinds = list(_EARLY_KIND_WEIGHTS)
        kind = str(rng.choice(kinds, p=np.array(list(_EARLY_KIND_WEIGHTS.values()))))
        kind = early_kind or kind
        if kind == "territorial_infarction":
            territory = _TERRITORIES[rng.integers(len(_TERRITORIES))]
            for region in territory:
                if (side, region) not in placer.used_regions:
                    placer.ischemic(kind, side, region, group="territory")
        else:
            n = int(rng.integers(1, 4))
            for region in rng.permutation(placer.free_regions(side))[:n]:
                placer.ischemic(kind, side, str(region))
        if rng.uniform() < 0.25:  # both sides
            other = "L" if side == "R" else "R"
            extra = str(rng.choice([k for k in kinds if k != "territorial_infarction"]))
            for region in rng.permutation(placer.free_regions(other)):
                if placer.ischemic(extra, other, str(region)):
                    break
    if "old" in groups:
        n = int(rng.integers(1, 3))
        for _ in range(n):
            old_side = str(rng.choice(SIDES))
            for region in rng.permutation(placer.free_regions(old_side)):
                if placer.ischemic("old_infarction", old_side, str(region)):
                    break
    return placer.lesions


def _stems(rng: np.random.Generator, n: int) -> list[str]:
    stems: list[str] = []
    while len(stems) < n:
        stem = f"ID_{int(rng.integers(0, 16**10)):010x}"
        if stem not in stems:
            stems.append(stem)
    return stems


def plan_patient(
    patient_id: str,
    seed: list[int],
    profile: str,
    head: HeadModel,
    config: SynthConfig,
    first_code: int = 1,
    bleed_kind: str | None = None,
    early_kind: str | None = None,
    tilted: bool | None = None,
) -> PatientSpec:
    """Draw one patient.

    Args:
        patient_id: e.g. ``"P001"``.
        seed: entropy for this patient (cohort seed and patient index); the same seed gives the same patient.
        profile: a key of ``PROFILES``.
        head: template anatomy.
        config: cohort settings.
        first_code: label value of the patient's first lesion (codes are unique in a dataset).
        bleed_kind: hemorrhage subtype to use for a hemorrhage profile (the cohort cycles through them so that
            every subtype appears).
        early_kind: early ischemic kind of an early profile's lesions (the cohort deals them so that every split
            has the paper's early-ischemic-sign kinds); None draws one.
        tilted: force a gantry tilt on (True) or off (False); None draws it with ``config.tilt_fraction``.
    """
    from pydicom.uid import generate_uid

    if profile not in PROFILES:
        raise UserInputError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    pose = _plan_pose(rng, head, config)
    scanner, surface_lps = _plan_scanner(rng, head, pose, config, tilted)
    couch = _plan_couch(rng, surface_lps, pose)
    spec = PatientSpec(
        patient_id=patient_id,
        seed=[int(s) for s in seed],
        profile=profile,
        scanner=scanner,
        pose=pose,
        couch=couch,
        hu_offset=round(_u(rng, (-2.0, 2.0)), 3),
        gm_delta_hu=round(float(np.clip(rng.normal(0.0, 0.8), -1.5, 1.5)), 3),
        wm_delta_hu=round(float(np.clip(rng.normal(0.0, 0.8), -1.5, 1.5)), 3),
        asymmetry_hu=round(_u(rng, (-0.4, 0.4)), 3),
        texture_sd_hu=round(_u(rng, (0.6, 1.2)), 3),
        noise_sd_hu=round(_u(rng, config.noise_sd_hu), 3),
        noise_corr_mm=config.noise_corr_mm,
        psf_mm=config.psf_mm,
    )
    if early_kind is not None and early_kind not in EARLY_ISCHEMIC_KINDS:
        raise UserInputError(f"early kind {early_kind!r} is not one of {', '.join(EARLY_ISCHEMIC_KINDS)}")
    spec.lesions = _plan_lesions(profile, rng, head, config, first_code, bleed_kind, early_kind)
    spec.file_stems = _stems(rng, scanner.n_slices)
    entropy = ["monai-stroke-synthetic", *[str(s) for s in seed], patient_id]
    spec.uids = {name: str(generate_uid(entropy_srcs=[*entropy, name])) for name in ("study", "series", "frame")}
    spec.sop_uids = [str(generate_uid(entropy_srcs=[*entropy, "sop", str(k)])) for k in range(scanner.n_slices)]
    spec.study_date = f"2024{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    return spec
