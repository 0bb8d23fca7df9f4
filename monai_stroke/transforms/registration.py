"""Template normalisation: affine registration of a head CT to the CT template, and the way back.

Every scan is brought into one template space before region crops, so that an ASPECTS region is the same place in
every patient (docs/METHOD.md). This module does it with ITK's v4 registration framework (through SimpleITK, which
wraps ``itk::ImageRegistrationMethodv4`` and imports in 0.2 s, where the ``itk`` package's registration modules
took 17 s of CPU, 30 s of wall time, to import on the 2-core development machine).

Method (recorded, with every parameter, in ``meta["registration"]`` so that a result can be traced and replayed):

1. **Working images.** The template is block-averaged to 2 mm. The patient's volume is block-averaged in-plane to
   about 2 mm (anti-aliasing, and it divides CT noise by the block size). HU are clipped to ``clip_hu`` for the
   metric so that bone (up to 2000 HU) does not use up the histogram that gray matter, white matter and CSF share.
2. **Masks.** Patient *head*: voxels above -400 HU, opened in-plane with a disk bigger than the head cradle's shell
   is thick, largest 3D component: couch, cradle and pads fall away. Patient *intracranial space* (brain mask):
   per slice, the skull (>= 200 HU, closed over sutures and thin temporal bone) is filled, bone removed, brain-range
   HU kept, eroded to cut the thin bridges through foramina, largest 3D component, grown back and hole-filled.
   The same function applied to the template reproduces ``anatomy.brain_mask()`` (see the tests).
3. **Initialisation** (skull robust): the patient's intracranial centroid is put on the template's; the neck,
   couch and the field of view's position do not move it (a centroid of the whole field of view would). A scan
   that starts inside the brain is matched vertex-down to the same height of template brain instead. Head
   flexion varies most between patients, so three starting pitches (0 and +-20 degrees) each get a short rigid run
   at the coarsest level and the best metric starts the optimisation (a 30 degree pitch then still converges).
4. **Rigid, then affine**, each multi-resolution (``levels_mm``, smoothing sigma = half the level spacing),
   Mattes mutual information on a random sample of the fixed mask (the template head: intracranial space plus
   ``fixed_margin_mm`` for skull and scalp, above ``fixed_min_z_mm`` because the template has no skull base, face
   or neck), moving mask = the patient's head; regular-step gradient descent with physical-shift scales and a
   first step of one voxel per level. A stage that ends with a worse metric than the one before, or with scales
   no head has, is discarded with a warning. When the scan does not cover the template head, the fixed mask
   follows the field of view (mapped with the current estimate), since mutual information over a partial overlap
   pulls the template towards what is easy to match.
5. **Output.** The patient volume is resampled onto the template's 1 mm grid (or a coarser grid of the same field
   of view, ``spacing``) with trilinear interpolation after a Gaussian anti-aliasing pre-filter wherever the
   output is coarser than the patient's voxels; outside the scan it is air (-1024 HU).
6. **Quality.** ``brain_dice``: Dice (on a 2 mm grid, inside the scan's field of view) between the patient's
   intracranial mask carried into template space and the template's ``brain_mask()``; ``brain_coverage``: the
   share of the template's brain inside the scan. :func:`registration_quality` passes the Dice against
   :data:`BRAIN_DICE_THRESHOLD`, checks that the affine's scales are those of a human head and that the scan
   covers enough of the brain (:data:`MIN_BRAIN_COVERAGE`) for the Dice to mean something.

Conventions: every matrix is 4x4 in RAS+ world millimetres (docs/ARCHITECTURE.md). ``template_transform`` maps a
*template* world point to the *patient* world point at the same anatomy (ITK's fixed -> moving point map,
converted from LPS); that is the direction needed to sample the patient in template space and to bring template
points onto the patient. :func:`map_to_patient` / :class:`TemplateToPatientd` carry template-space maps (region
labels, heat maps, any channel count) back onto the patient's own voxel grid; :class:`RegisterToTemplate` is also a
MONAI ``InvertibleTransform``, so ``Invertd`` does the same inside a transform chain.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Union

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, Transform
from monai.utils import TraceKeys, TransformBackends, ensure_tuple_rep
from monai.utils.enums import MetaKeys, SpaceKeys
from scipy import ndimage

from monai_stroke.errors import MissingDependencyError, UserInputError
from monai_stroke.io.geometry import LPS_TO_RAS
from monai_stroke.io.volume import AIR_HU

__all__ = [
    "BRAIN_DICE_THRESHOLD",
    "SCALE_RANGE",
    "MIN_BRAIN_COVERAGE",
    "FULL_BRAIN_COVERAGE",
    "TEMPLATE_TRANSFORM_KEY",
    "RegistrationParams",
    "RegistrationResult",
    "TemplateSpace",
    "head_mask",
    "intracranial_mask",
    "template_grid",
    "register_to_template",
    "resample_to_template",
    "brain_dice",
    "brain_overlap",
    "registration_quality",
    "registration_record",
    "map_to_patient",
    "map_points_to_patient",
    "map_points_to_template",
    "RegisterToTemplate",
    "RegisterToTemplated",
    "RegisterToTemplateD",
    "RegisterToTemplateDict",
    "TemplateToPatient",
    "TemplateToPatientd",
    "TemplateToPatientD",
    "TemplateToPatientDict",
]

logger = logging.getLogger(__name__)

#: A registration passes its brain-overlap check when the Dice of the patient's intracranial mask (in template
#: space) with the template's ``brain_mask()`` reaches this. Measured on synthetic patients (heads scaled up to
#: +-6% and smoothly warped, which no affine undoes): converged registrations give 0.955-0.97; the same patients
#: with the result moved by 6 / 10 / 15 mm give 0.925 / 0.885 / 0.835, pitched by 10 / 20 degrees 0.93 / 0.89, and
#: no registration at all (identity) about 0.77. Real brains differ more from a template than the synthetic
#: ones, so the threshold sits below the good range but above a 10 mm or 20 degree failure.
BRAIN_DICE_THRESHOLD = 0.90
#: The affine's scale factors (singular values) must lie in this range: adult heads differ from the template by
#: much less than 25%; a scale outside means the optimiser fitted something other than the head.
SCALE_RANGE = (0.75, 1.33)
#: A series covering less than this fraction of the template's brain gets a warning (regions outside the scan
#: cannot be scored).
FULL_BRAIN_COVERAGE = 0.9
#: A series covering less than this fraction fails the quality check: the Dice, measured inside the field of
#: view, cannot see a slide along the axis where the brain is cut, and a scan that starts or ends inside the brain
#: needs enough of it left to verify (synthetic scans cut to 62% of the brain registered 13 mm off while the Dice
#: inside the field of view stayed at 0.95). 75% with the bottom cut leaves both ASPECTS levels in the scan.
MIN_BRAIN_COVERAGE = 0.75
#: Meta key of the 4x4 template -> patient RAS matrix.
TEMPLATE_TRANSFORM_KEY = "template_transform"

# meta keys written by RegisterToTemplate (flat, so that MONAI's collation handles them)
_META_TEMPLATE_IDENTITY = "template_identity"
_META_PATIENT_AFFINE = "patient_affine"
_META_PATIENT_SHAPE = "patient_spatial_shape"
_META_REGISTRATION = "registration"
_META_BRAIN_DICE = "brain_dice"
_META_BRAIN_COVERAGE = "brain_coverage"
_META_METRIC = "registration_metric"
_META_TIME = "registration_time_s"
_META_WARNINGS = "registration_warnings"

# thresholds of the masks (HU)
_BODY_HU = -400.0
_BONE_HU = 200.0
_BRAIN_RANGE_HU = (-40.0, 160.0)
# working resolution of the registration and of the Dice check
_WORKING_MM = 2.0

Matrix = Union[np.ndarray, torch.Tensor, Sequence[Sequence[float]]]


def _sitk():
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingDependencyError(
            "template registration needs SimpleITK (ITK's registration framework); install it with: "
            "pip install 'SimpleITK>=2.3'"
        ) from exc
    if not getattr(_sitk, "threads_set", False):
        # ITK defaults to every core of the machine; a shared or containerised host gives this process fewer
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_available_cpus())
        _sitk.threads_set = True
    return sitk


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# --- parameters and results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationParams:
    """Every setting of :func:`register_to_template`; recorded in the result so that it can be replayed.

    Args:
        stages: transform stages, in order: ``"rigid"`` (6 parameters), ``"similarity"`` (7), ``"affine"`` (12).
        levels_mm: fixed-image spacing of each resolution level, coarse to fine (multiples of 2 mm).
        iterations: gradient-descent iterations per level at most.
        histogram_bins: Mattes mutual information bins.
        sampling_fraction: fraction of the fixed mask's voxels sampled (randomly, seeded) per iteration.
        clip_hu: HU range the metric sees; bone above it is one value.
        fixed_margin_mm: the fixed mask is the template's intracranial space grown by this much (skull, scalp).
        fixed_min_z_mm: the fixed mask stops below this template z (MNI mm): the template's skull base is a plain
            closed shell, unlike any real one.
        min_step: the optimiser stops when its step falls below this.
        init_rotations_deg: initial rotations (pitch, roll, yaw about the template centroid) tried at the coarsest
            level; the one with the best metric starts the optimisation.
        seed: seed of the metric's random sampling (results are reproducible for a given thread count).
    """

    stages: tuple[str, ...] = ("rigid", "affine")
    levels_mm: tuple[float, ...] = (6.0, 4.0, 2.0)
    iterations: int = 100
    histogram_bins: int = 48
    sampling_fraction: float = 0.1
    clip_hu: tuple[float, float] = (-100.0, 200.0)
    fixed_margin_mm: float = 8.0
    fixed_min_z_mm: float = -50.0
    min_step: float = 5e-3
    # head flexion/extension varies most between patients (up to +-30 degrees); a start 20 degrees off still
    # converges, so three pitches cover it
    init_rotations_deg: tuple[tuple[float, float, float], ...] = ((0.0, 0.0, 0.0), (20.0, 0.0, 0.0), (-20.0, 0.0, 0.0))
    seed: int = 20240531

    def __post_init__(self) -> None:
        # values from YAML or JSON arrive as lists: store tuples so that parameters compare and hash
        for name in ("stages", "levels_mm", "clip_hu"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(
            self, "init_rotations_deg", tuple(tuple(float(a) for a in r) for r in self.init_rotations_deg)
        )
        if any(len(r) != 3 for r in self.init_rotations_deg):
            raise UserInputError(f"init_rotations_deg {self.init_rotations_deg} must be (pitch, roll, yaw) triples")
        bad = [s for s in self.stages if s not in _STAGES]
        if not self.stages or bad:
            raise UserInputError(
                f"registration stages {list(self.stages)} must be a non-empty list of {', '.join(_STAGES)}"
            )
        if not self.levels_mm or any(
            lv < _WORKING_MM or abs(lv / _WORKING_MM - round(lv / _WORKING_MM)) > 1e-6 for lv in self.levels_mm
        ):
            raise UserInputError(
                f"registration levels_mm {list(self.levels_mm)} must be multiples of {_WORKING_MM:g} mm"
            )
        if not 0.0 < self.sampling_fraction <= 1.0:
            raise UserInputError(f"sampling_fraction {self.sampling_fraction} must be in (0, 1]")
        if self.clip_hu[0] >= self.clip_hu[1]:
            raise UserInputError(f"clip_hu {self.clip_hu} must be (low, high) with low < high")
        if self.iterations < 1 or self.histogram_bins < 8:
            raise UserInputError("registration needs iterations >= 1 and histogram_bins >= 8")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            k: ([list(v) for v in d[k]] if k == "init_rotations_deg" else list(v) if isinstance(v, tuple) else v)
            for k, v in d.items()
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RegistrationParams:
        """Parameters from :meth:`to_dict` output (a recorded registration); unknown names are an error."""
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserInputError(
                f"unknown registration parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return cls(**d)


_STAGES = ("rigid", "similarity", "affine")


@dataclass
class RegistrationResult:
    """What :func:`register_to_template` found.

    Attributes:
        template_transform: 4x4 float64, template RAS mm -> patient RAS mm.
        metric: final Mattes mutual information (negative; lower is better) of the last stage.
        brain_dice: Dice of the patient's intracranial mask in template space with the template's brain mask
            (within the scan's field of view).
        brain_coverage: fraction of the template's brain inside the scan's field of view.
        time_s: wall time of the registration (masks, optimisation, Dice; not the output resampling).
        params: the parameters applied.
        stages: per stage: name, metric, iterations, stop condition, matrix.
        initial_transform: 4x4 starting point (centroid alignment, best initial rotation).
        initialisation: how the starting translation was found (see :func:`_initial_transform`).
        patient_brain_ml: volume of the patient's intracranial mask (a sanity check of the masking).
        warnings: what a user should know (low Dice, implausible scale, mask problems).
        replayed: True when the transform was given, not optimised.
    """

    template_transform: np.ndarray
    metric: float
    brain_dice: float
    brain_coverage: float
    time_s: float
    params: RegistrationParams
    stages: list[dict[str, Any]] = field(default_factory=list)
    initial_transform: np.ndarray | None = None
    initialisation: str = ""
    patient_brain_ml: float = float("nan")
    warnings: list[str] = field(default_factory=list)
    replayed: bool = False

    def record(self) -> dict[str, Any]:
        """JSON-able record of how the transform was obtained (stored as ``meta["registration"]``)."""
        return {
            "method": "SimpleITK ImageRegistrationMethod (ITK v4): Mattes MI, " + " -> ".join(self.params.stages),
            "params": self.params.to_dict(),
            "stages": self.stages,
            "initial_transform": None if self.initial_transform is None else self.initial_transform.tolist(),
            "initialisation": self.initialisation,
            "metric": self.metric,
            "brain_dice": self.brain_dice,
            "brain_coverage": self.brain_coverage,
            "patient_brain_ml": self.patient_brain_ml,
            "time_s": self.time_s,
            "replayed": self.replayed,
            "warnings": list(self.warnings),
        }


# --- the template --------------------------------------------------------------------------------------------------


@dataclass
class TemplateSpace:
    """The fixed side of the registration: template HU, its intracranial mask, grid and identity.

    Args:
        hu: float32 HU ``(X, Y, Z)``.
        affine: 4x4 voxel -> RAS mm (axis aligned, positive diagonal).
        brain: bool intracranial mask on the same grid.
        identity: content hash recorded with every registration (``template_identity``).
    """

    hu: np.ndarray
    affine: np.ndarray
    brain: np.ndarray
    identity: str
    _working: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        lin = self.affine[:3, :3]
        if not np.allclose(lin, np.diag(np.diag(lin)), atol=1e-6) or np.any(np.diag(lin) <= 0):
            raise UserInputError(
                "the registration template must be on an axis-aligned RAS grid (positive diagonal affine); "
                "resample it first, e.g. with nibabel.processing.resample_to_output"
            )
        if self.hu.shape != self.brain.shape:
            raise UserInputError(f"template HU {self.hu.shape} and brain mask {self.brain.shape} differ in shape")

    @classmethod
    def default(cls) -> TemplateSpace:
        """The project's CT template and its ``brain_mask()`` (built and cached on first use)."""
        from monai_stroke import anatomy

        identity = anatomy.template_identity()
        if identity not in _TEMPLATE_MEMO:
            image = anatomy.load_template()
            _TEMPLATE_MEMO[identity] = cls(
                hu=np.asarray(image.dataobj, dtype=np.float32),
                affine=image.affine,
                brain=np.asarray(anatomy.brain_mask().dataobj).astype(bool),
                identity=identity,
            )
        return _TEMPLATE_MEMO[identity]

    @classmethod
    def from_image(cls, image: nib.Nifti1Image | str | os.PathLike, brain: np.ndarray | None = None) -> TemplateSpace:
        """A template given as a NIfTI image or file (HU, RAS, axis aligned), e.g. an atlas folder's template.

        A copy of a template already in use (same content hash, e.g. the built-in template exported with an atlas)
        is that template, brain mask included.

        Args:
            image: the HU template.
            brain: its intracranial mask; derived with :func:`intracranial_mask` when None.
        """
        from monai_stroke.anatomy import image_identity

        if not isinstance(image, nib.Nifti1Image):
            path = os.fspath(image)
            try:
                image = nib.load(path)
            except Exception as exc:  # noqa: BLE001 - any read failure is a bad template file
                raise UserInputError(f"cannot read the registration template {path}: {exc}") from exc
        identity = image_identity(image)
        if identity not in _TEMPLATE_MEMO:
            hu = np.asarray(image.dataobj, dtype=np.float32)
            if hu.ndim != 3:
                raise UserInputError(f"the registration template must be a 3D HU volume, got shape {hu.shape}")
            mask = intracranial_mask(hu, image.affine) if brain is None else np.asarray(brain).astype(bool)
            _TEMPLATE_MEMO[identity] = cls(hu=hu, affine=image.affine, brain=mask, identity=identity)
        return _TEMPLATE_MEMO[identity]

    @classmethod
    def resolve(cls, template: Any) -> TemplateSpace:
        """``None`` (the default template), a :class:`TemplateSpace`, an ``Atlas``, a NIfTI image or a path."""
        if template is None:
            return cls.default()
        if isinstance(template, TemplateSpace):
            return template
        if hasattr(template, "template_image") and hasattr(template, "labels"):  # an anatomy.Atlas
            return (
                cls.default()
                if getattr(template, "template", None) is None
                else cls.from_image(template.template_image)
            )
        return cls.from_image(template)

    @property
    def spacing(self) -> np.ndarray:
        return np.diag(self.affine)[:3].copy()

    def working(self, params: RegistrationParams) -> dict[str, Any]:
        """The 2 mm fixed image, fixed mask and brain mask (cached per mask parameters)."""
        key = (params.fixed_margin_mm, params.fixed_min_z_mm)
        if key not in self._working:
            factors = np.maximum(1, np.round(_WORKING_MM / self.spacing)).astype(int)
            hu, affine = _block_mean(self.hu, self.affine, factors, pad_value=AIR_HU)
            brain_frac, _ = _block_mean(self.brain.astype(np.float32), self.affine, factors, pad_value=0.0)
            brain = brain_frac >= 0.5
            grow = _ball(params.fixed_margin_mm, np.diag(affine)[:3])
            head = ndimage.binary_dilation(brain, structure=grow)
            z_mm = affine[2, 2] * np.arange(brain.shape[2]) + affine[2, 3]
            head &= (z_mm >= params.fixed_min_z_mm)[None, None, :]
            centroid = affine @ np.r_[np.argwhere(brain).mean(axis=0), 1.0]
            self._working[key] = {"hu": hu, "affine": affine, "brain": brain, "mask": head, "centroid": centroid[:3]}
        return self._working[key]


_TEMPLATE_MEMO: dict[str, TemplateSpace] = {}


def template_grid(
    spacing: float | Sequence[float] | None = None, template: Any = None
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the template grid, or of a coarser grid over the same field of view.

    The field of view is the template voxels' extent (from the first voxel's outer face to the last one's); a
    grid of ``spacing`` mm starts at the same corner and has ``ceil(extent / spacing)`` voxels per axis (the last
    may reach past the template by less than one voxel: it is padded with air).

    Args:
        spacing: output voxel size in mm (one value or three); None for the template's own grid.
        template: see :meth:`TemplateSpace.resolve`.
    """
    space = TemplateSpace.resolve(template)
    shape = np.asarray(space.hu.shape)
    if spacing is None:
        return space.affine.copy(), tuple(int(v) for v in shape)
    s = np.asarray(ensure_tuple_rep(spacing, 3) if np.ndim(spacing) == 0 else spacing, dtype=float)
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise UserInputError(
            f"template spacing {spacing!r} must be one or three positive numbers (mm), e.g. 2 or 1 1 4"
        )
    extent = shape * space.spacing
    out_shape = np.ceil(extent / s - 1e-6).astype(int)
    corner = space.affine[:3, 3] - 0.5 * space.spacing
    affine = np.diag([*s, 1.0])
    affine[:3, 3] = corner + 0.5 * s
    return affine, tuple(int(v) for v in out_shape)


# --- geometry helpers ----------------------------------------------------------------------------------------------


def _as_matrix(matrix: Matrix, what: str) -> np.ndarray:
    m = np.asarray(matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise UserInputError(f"{what} must be a 4x4 homogeneous matrix, got shape {m.shape}")
    if abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise UserInputError(f"{what} is singular (determinant ~0)")
    return m


def _spacing_of(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(affine[:3, :3], axis=0)


def _is_orthogonal(affine: np.ndarray) -> bool:
    axes = affine[:3, :3] / _spacing_of(affine)
    return bool(np.allclose(axes.T @ axes, np.eye(3), atol=1e-4))


def _slice_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to the world's superior direction (the axial slice axis of a head CT)."""
    axes = affine[:3, :3] / _spacing_of(affine)
    return int(np.argmax(np.abs(axes[2])))


def _block_mean(
    array: np.ndarray, affine: np.ndarray, factors: Sequence[int], pad_value: float
) -> tuple[np.ndarray, np.ndarray]:
    """Average ``factors`` voxel blocks (padding the far edges with ``pad_value``); returns the array and affine."""
    f = np.asarray(factors, dtype=int)
    if np.all(f == 1):
        return np.asarray(array, dtype=np.float32), np.asarray(affine, dtype=np.float64).copy()
    shape = np.asarray(array.shape)
    out_shape = -(-shape // f)
    padded = np.full(out_shape * f, pad_value, dtype=np.float32)
    padded[: shape[0], : shape[1], : shape[2]] = array
    out = padded.reshape(out_shape[0], f[0], out_shape[1], f[1], out_shape[2], f[2]).mean(axis=(1, 3, 5))
    new_affine = np.asarray(affine, dtype=np.float64).copy()
    new_affine[:3, :3] = affine[:3, :3] * f
    # a block's centre lies (f - 1) / 2 input voxels beyond its first voxel
    new_affine[:3, 3] = affine[:3, :3] @ ((f - 1) / 2.0) + affine[:3, 3]
    return out.astype(np.float32), new_affine


def _ball(radius_mm: float, spacing: Sequence[float], in_plane_axis: int | None = None) -> np.ndarray:
    """Boolean ellipsoid of ``radius_mm`` on a grid of ``spacing``; a disk (one voxel thick) across
    ``in_plane_axis`` when given."""
    spacing = np.asarray(spacing, dtype=float)
    half = np.floor(radius_mm / spacing + 1e-6).astype(int)
    if in_plane_axis is not None:
        half[in_plane_axis] = 0
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    return (x * x + y * y + z * z) <= radius_mm * radius_mm + 1e-6


def _largest_component(mask: np.ndarray, structure: np.ndarray | None = None) -> np.ndarray:
    labels, n = ndimage.label(mask, structure=structure)
    if n <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _planar(axis: int) -> np.ndarray:
    """3x3x3 connectivity restricted to the plane across ``axis`` (per-slice operations in one call)."""
    s = np.zeros((3, 3, 3), dtype=bool)
    index = [slice(None)] * 3
    index[axis] = 1
    s[tuple(index)] = ndimage.generate_binary_structure(2, 1)
    return s


# --- masks ---------------------------------------------------------------------------------------------------------


def head_mask(hu: np.ndarray, affine: np.ndarray, opening_mm: float = 4.0) -> np.ndarray:
    """The patient's head (and neck), without couch, head cradle or pads.

    Voxels above -400 HU, opened slice by slice with a disk of ``opening_mm`` (head cradles and couch tops are
    shells a few mm thick, so they vanish while the head keeps its shape), then the largest 3D component.

    Args:
        hu: HU volume ``(X, Y, Z)``.
        affine: its voxel -> RAS affine.
        opening_mm: radius of the opening disk.
    """
    axis = _slice_axis(affine)
    body = np.asarray(hu) > _BODY_HU
    opened = ndimage.binary_opening(body, structure=_ball(opening_mm, _spacing_of(affine), in_plane_axis=axis))
    if not opened.any():
        return opened
    return _largest_component(opened)


def intracranial_mask(hu: np.ndarray, affine: np.ndarray, head: np.ndarray | None = None) -> np.ndarray:
    """The intracranial space (brain, CSF spaces, blood): what lies inside the skull's inner table.

    Per slice (the slice axis is the voxel axis closest to superior), the bone ring (>= 200 HU, closed with a
    2 mm disk over sutures, emissary foramina and partial-volumed thin bone) is filled; bone is removed and the
    brain HU range kept. An in-plane erosion by 2 mm cuts the bridges through the skull base foramina, the
    largest 3D component is the intracranial space, grown back within the candidates and hole-filled (so that
    calcifications and dense clots inside are included).

    Args:
        hu: HU volume ``(X, Y, Z)``.
        affine: its voxel -> RAS affine.
        head: the head mask if already computed (see :func:`head_mask`).
    """
    hu = np.asarray(hu)
    axis = _slice_axis(affine)
    spacing = _spacing_of(affine)
    if head is None:
        head = head_mask(hu, affine)
    disk2 = _ball(2.0, spacing, in_plane_axis=axis)
    bone = (hu >= _BONE_HU) & ndimage.binary_dilation(head, structure=disk2)
    ring = ndimage.binary_closing(bone, structure=disk2, border_value=0)
    inside = ndimage.binary_fill_holes(ring, structure=_planar(axis)) & ~ring
    candidate = inside & (hu > _BRAIN_RANGE_HU[0]) & (hu < _BRAIN_RANGE_HU[1])
    core = ndimage.binary_erosion(candidate, structure=disk2)
    if not core.any():
        return core
    core = _largest_component(core)
    brain = ndimage.binary_dilation(core, structure=disk2) & candidate
    brain = ndimage.binary_fill_holes(brain)
    return ndimage.binary_fill_holes(brain, structure=_planar(axis))


# --- registration --------------------------------------------------------------------------------------------------


def _to_sitk(array: np.ndarray, affine_ras: np.ndarray, dtype=np.float32):
    """A numpy ``(X, Y, Z)`` array with its RAS affine as a SimpleITK image (LPS physical space)."""
    sitk = _sitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype=dtype).transpose(2, 1, 0)))
    lps = LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)
    spacing = _spacing_of(lps)
    image.SetSpacing([float(v) for v in spacing])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    return image


def _itk_to_ras(matrix: np.ndarray, center: Sequence[float], translation: Sequence[float]) -> np.ndarray:
    """4x4 RAS matrix of an ITK ``MatrixOffsetTransformBase`` (LPS fixed point -> LPS moving point)."""
    m = np.eye(4)
    a = np.asarray(matrix, dtype=np.float64).reshape(3, 3)
    c = np.asarray(center, dtype=np.float64)
    m[:3, :3] = a
    m[:3, 3] = np.asarray(translation, dtype=np.float64) + c - a @ c
    return LPS_TO_RAS @ m @ LPS_TO_RAS


def _ras_to_itk(transform_ras: np.ndarray, center_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and translation (about ``center_lps``) of the ITK transform equal to a RAS matrix."""
    m = LPS_TO_RAS @ transform_ras @ LPS_TO_RAS
    a = m[:3, :3]
    translation = m[:3, 3] - center_lps + a @ center_lps
    return a, translation


def _sitk_transform(stage: str, transform_ras: np.ndarray, center_lps: np.ndarray):
    """An ITK transform of ``stage``'s kind initialised to ``transform_ras`` (its nearest member for rigid kinds)."""
    sitk = _sitk()
    a, translation = _ras_to_itk(transform_ras, center_lps)
    if stage == "affine":
        tx = sitk.AffineTransform(3)
        tx.SetCenter([float(v) for v in center_lps])
        tx.SetMatrix([float(v) for v in a.ravel()])
        tx.SetTranslation([float(v) for v in translation])
        return tx
    rotation, scales = _polar(a)
    tx = sitk.VersorRigid3DTransform() if stage == "rigid" else sitk.Similarity3DTransform()
    tx.SetCenter([float(v) for v in center_lps])
    tx.SetMatrix([float(v) for v in rotation.ravel()])
    if stage == "similarity":
        tx.SetScale(float(np.prod(scales) ** (1.0 / 3.0)))
    tx.SetTranslation([float(v) for v in translation])
    return tx


def _polar(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest rotation of a 3x3 matrix and its singular values (the scales), ``a = R S``."""
    u, s, vt = np.linalg.svd(a)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:  # a reflection is never a head pose
        u[:, -1] *= -1
        rotation = u @ vt
    return rotation, s


def _rotation_deg(rotation: np.ndarray) -> float:
    """Angle (degrees) of a rotation matrix."""
    return math.degrees(math.acos(float(np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0))))


def _euler_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation about x (pitch), then y (roll), then z (yaw): ``Rz @ Ry @ Rx``."""
    ax, ay, az = (math.radians(float(a)) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class _Patient:
    """The patient's working image and masks (about 2 mm in-plane)."""

    hu: np.ndarray
    affine: np.ndarray
    head: np.ndarray
    brain: np.ndarray

    @classmethod
    def build(cls, hu: np.ndarray, affine: np.ndarray) -> _Patient:
        spacing = _spacing_of(affine)
        factors = np.maximum(1, np.floor(_WORKING_MM / spacing + 1e-6)).astype(int)
        work, work_affine = _block_mean(hu, affine, factors, pad_value=AIR_HU)
        head = head_mask(work, work_affine)
        brain = intracranial_mask(work, work_affine, head=head)
        return cls(work, work_affine, head, brain)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(_spacing_of(self.affine))) / 1000.0

    def centroid(self, mask: np.ndarray) -> np.ndarray:
        return (self.affine @ np.r_[np.argwhere(mask).mean(axis=0), 1.0])[:3]


def _registration_method(params: RegistrationParams, fixed_mask, moving_mask, levels_mm: Sequence[float]):
    sitk = _sitk()
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=params.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(params.sampling_fraction, params.seed)
    method.SetMetricFixedMask(fixed_mask)
    method.SetMetricMovingMask(moving_mask)
    # the optimiser needs only the moving image's gradient; ITK would also filter the fixed one at every level
    method.SetMetricUseFixedImageGradientFilter(False)
    method.SetInterpolator(sitk.sitkLinear)
    # the first step of each level moves no point by more than one voxel of that level (learning rate estimated
    # once per level from physical-shift scales): a fixed learning rate that suits the rigid stage overshoots the
    # affine one, whose matrix entries move far points far
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=params.min_step,
        numberOfIterations=params.iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
        estimateLearningRate=method.Once,
        maximumStepSizeInPhysicalUnits=0.0,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([int(round(lv / _WORKING_MM)) for lv in levels_mm])
    method.SetSmoothingSigmasPerLevel([lv / 2.0 for lv in levels_mm])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


class _Optimiser:
    """The fixed and moving images and masks of one registration, and the runs on them."""

    def __init__(self, patient: _Patient, fixed: dict[str, Any], params: RegistrationParams) -> None:
        lo, hi = params.clip_hu
        self.params = params
        self.fixed_image = _to_sitk(np.clip(fixed["hu"], lo, hi), fixed["affine"])
        self.fixed = fixed
        self.fixed_mask = _to_sitk(fixed["mask"], fixed["affine"], dtype=np.uint8)
        self.scan = (patient.affine, patient.hu.shape)
        self.moving_image = _to_sitk(np.clip(patient.hu, lo, hi), patient.affine)
        # the head plus a margin: the scalp's edge against air is part of the signal, the couch is not
        grow = _ball(6.0, _spacing_of(patient.affine), in_plane_axis=_slice_axis(patient.affine))
        head = ndimage.binary_dilation(patient.head, structure=grow)
        self.moving_mask = _to_sitk(head, patient.affine, dtype=np.uint8)
        self.centroid_ras = fixed["centroid"]
        self.center_lps = (LPS_TO_RAS[:3, :3] @ fixed["centroid"]).astype(np.float64)

    def run(self, stage: str, start: np.ndarray, levels_mm: Sequence[float], iterations: int) -> dict[str, Any]:
        sitk = _sitk()
        method = _registration_method(
            replace(self.params, iterations=iterations), self.fixed_mask, self.moving_mask, levels_mm
        )
        method.SetInitialTransform(_sitk_transform(stage, start, self.center_lps), inPlace=True)
        try:
            tx = method.Execute(self.fixed_image, self.moving_image)
        except RuntimeError as exc:
            # ITK stops when too few samples overlap: the start is too far off or the volume is not a head
            raise UserInputError(
                f"template registration failed in the {stage} stage ({' '.join(str(exc).split())[:160]}); the "
                "series may not show a head, or the head lies mostly outside the field of view"
            ) from exc
        if tx.GetName() == "CompositeTransform":
            tx = tx.GetNthTransform(0)
        tx = getattr(sitk, tx.GetName())(tx)
        matrix = _itk_to_ras(tx.GetMatrix(), tx.GetCenter(), tx.GetTranslation())
        return {
            "stage": stage,
            "metric": self.evaluate(matrix),
            "iterations_last_level": int(method.GetOptimizerIteration()),
            "stop": method.GetOptimizerStopConditionDescription(),
            "scales": _polar(matrix[:3, :3])[1].tolist(),
            "matrix": matrix.tolist(),
        }

    def restrict_to_scan(self, matrix: np.ndarray, margin_mm: float = 8.0) -> float:
        """Limit the fixed mask to the template voxels ``matrix`` maps inside the scan (``margin_mm`` from its ends).

        Mutual information over a partial overlap is biased: where part of the fixed mask falls outside a scan
        that starts inside the brain, the optimiser gains by sliding the template so that what overlaps is easy
        to match. Sampling only what the scan covers removes that pull. A scan that covers the whole template
        head (97% or more of the mask) keeps the full mask.

        Returns:
            the fraction of the full fixed mask now used.
        """
        full = self.fixed["mask"]
        inside = _inside_grid(self.fixed["affine"], full.shape, matrix, *self.scan, margin_mm=margin_mm)
        kept = full & inside
        fraction = float(kept.sum() / max(1, full.sum()))
        self.fixed_mask = _to_sitk(full if fraction >= 0.97 else kept, self.fixed["affine"], dtype=np.uint8)
        return 1.0 if fraction >= 0.97 else fraction

    def evaluate(self, matrix: np.ndarray) -> float:
        """Mutual information at ``matrix`` on the finest level (comparable between stages and starts)."""
        method = _registration_method(self.params, self.fixed_mask, self.moving_mask, self.params.levels_mm[-1:])
        method.SetInitialTransform(_sitk_transform("affine", matrix, self.center_lps), inPlace=True)
        try:
            return float(method.MetricEvaluate(self.fixed_image, self.moving_image))
        except RuntimeError:
            return math.inf

    def best_start(self, initial: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The initial rotation (about the template centroid) that ends a short coarse rigid run best.

        A start rotated far from the head's pose can converge to a wrong local optimum; a few starts at the
        coarsest level (cheap: 6 mm voxels) pick the basin of the right one.

        Returns:
            the best start and every start's record.
        """
        tried, best, best_value = [], initial, math.inf
        for angles in self.params.init_rotations_deg:
            about = np.eye(4)
            about[:3, 3] = self.centroid_ras
            rot = np.eye(4)
            rot[:3, :3] = _euler_matrix(angles)
            candidate = initial @ about @ rot @ np.linalg.inv(about)
            try:
                info = self.run("rigid", candidate, self.params.levels_mm[:1], min(self.params.iterations, 40))
            except UserInputError:
                info = {"metric": math.inf}
            tried.append({"rotation_deg": list(angles), "metric": info["metric"]})
            if info["metric"] < best_value:
                best, best_value = candidate, info["metric"]
        return best, tried


# a slice at the end of the scan that cuts this much intracranial area (mm^2) shows the scan ends inside the brain
_TRUNCATED_AREA_MM2 = 1500.0


def _initial_transform(
    patient: _Patient, fixed: dict[str, Any], brain_ml: float, warnings: list[str]
) -> tuple[np.ndarray, str]:
    """The starting translation: the patient's intracranial centroid onto the template's.

    The centroid is blind to the neck, the couch and where the head lies in the field of view, but not to a scan
    that starts inside the brain (above the skull base): its centroid sits high. When the lowest slice still cuts
    a large intracranial area while the vertex is in the scan, the patient's brain is matched to the template's
    brain above the same height below the vertex instead. Without a closed skull (a scout, a partial scan, not a
    head) the head's centroid is the weaker fallback.
    """
    initial = np.eye(4)
    if brain_ml < 300.0:
        warnings.append(
            f"the intracranial space found is only {brain_ml:.0f} ml (expected 1000-2000 ml): the series may not "
            "cover the head; registration was initialised from the head outline instead"
        )
        logger.warning(warnings[-1])
        initial[:3, 3] = patient.centroid(patient.head) - fixed["centroid"]
        return initial, "head centroid"
    axis = _slice_axis(patient.affine)
    spacing = _spacing_of(patient.affine)
    pixel_mm2 = float(np.prod(np.delete(spacing, axis)))
    # which end of the slice axis is inferior
    low_end = 0 if patient.affine[2, axis] > 0 else patient.brain.shape[axis] - 1
    high_end = patient.brain.shape[axis] - 1 - low_end
    low_area = float(np.take(patient.brain, low_end, axis=axis).sum()) * pixel_mm2
    high_area = float(np.take(patient.brain, high_end, axis=axis).sum()) * pixel_mm2
    brain_points = np.argwhere(patient.brain) @ patient.affine[:3, :3].T + patient.affine[:3, 3]
    if low_area > _TRUNCATED_AREA_MM2 and high_area < _TRUNCATED_AREA_MM2 / 10.0:
        template_points = np.argwhere(fixed["brain"]) @ fixed["affine"][:3, :3].T + fixed["affine"][:3, 3]
        height = brain_points[:, 2].max() - brain_points[:, 2].min()
        top = template_points[:, 2].max()
        matched = template_points[template_points[:, 2] >= top - height]
        initial[:3, 3] = brain_points.mean(axis=0) - matched.mean(axis=0)
        return initial, "intracranial centroid, vertex-aligned (the scan starts above the skull base)"
    initial[:3, 3] = brain_points.mean(axis=0) - fixed["centroid"]
    return initial, "intracranial centroid"


def _optimise(
    patient: _Patient, fixed: dict[str, Any], params: RegistrationParams, initial: np.ndarray, warnings: list[str]
) -> tuple[np.ndarray, list[dict[str, Any]], float, np.ndarray]:
    """Run the stages from ``initial``; a stage that ends worse than the one before (metric, or a scale no head
    has) is discarded with a warning."""
    optimiser = _Optimiser(patient, fixed, params)
    current, tried = initial, []
    mask_fraction = optimiser.restrict_to_scan(current)
    if len(params.init_rotations_deg) > 1:
        # the first stage starts again from the best start, not from where its short run stopped: that run is
        # cut at 40 iterations and may not have converged
        current, tried = optimiser.best_start(initial)
    start = current.copy()
    stages: list[dict[str, Any]] = []
    metric = optimiser.evaluate(current)
    for k, stage in enumerate(params.stages):
        # later stages start from a solved pose: the coarsest level has nothing left to find
        levels = params.levels_mm if k == 0 or len(params.levels_mm) == 1 else params.levels_mm[1:]
        started = time.perf_counter()
        if mask_fraction < 1.0:
            # a partial scan: follow the field of view with the current estimate (metrics compare on this mask)
            mask_fraction = optimiser.restrict_to_scan(current)
            metric = optimiser.evaluate(current)
        info = optimiser.run(stage, current, levels, params.iterations)
        info["time_s"] = time.perf_counter() - started
        info["fixed_mask_fraction"] = mask_fraction
        scales = np.asarray(info["scales"])
        # a small tolerance: the optimiser's last step may leave it marginally above the previous optimum
        worse = info["metric"] > metric + 0.01 * abs(metric)
        implausible = scales.min() < SCALE_RANGE[0] or scales.max() > SCALE_RANGE[1]
        info["kept"] = not (stages and (worse or implausible))
        stages.append(info)
        logger.debug("registration %s: metric %.4f (%s)", stage, info["metric"], info["stop"])
        if not info["kept"]:
            warnings.append(
                f"the {stage} stage was discarded (metric {info['metric']:.3f} vs {metric:.3f}, scales "
                f"{np.round(scales, 3).tolist()}); the result is the {stages[-2]['stage']} stage's"
            )
            logger.warning(warnings[-1])
            continue
        current, metric = np.asarray(info["matrix"]), info["metric"]
    if tried:
        stages.insert(0, {"stage": "initial_rotation_search", "tried": tried})
    return current, stages, metric, start


def register_to_template(
    hu: NdarrayOrTensor,
    affine: Matrix,
    template: Any = None,
    params: RegistrationParams | None = None,
    transform: Matrix | None = None,
) -> RegistrationResult:
    """Find the affine map from the template to a patient's head CT.

    Args:
        hu: the patient's HU volume ``(X, Y, Z)`` (or ``(1, X, Y, Z)``).
        affine: its voxel -> RAS affine (orthogonal: ingest un-shears gantry tilt).
        template: see :meth:`TemplateSpace.resolve` (default: the project's CT template).
        params: registration settings (defaults: :class:`RegistrationParams`).
        transform: a known template -> patient RAS matrix to replay instead of optimising (the brain-overlap
            check is still measured).

    Raises:
        UserInputError: the volume is not a head CT the registration can use (no head, no skull, a sheared grid).
    """
    start = time.perf_counter()
    params = params or RegistrationParams()
    space = TemplateSpace.resolve(template)
    array = _spatial_array(hu)
    affine = _as_matrix(affine, "the patient affine")
    if not _is_orthogonal(affine):
        raise UserInputError(
            "registration needs an orthogonal voxel grid, but this volume's affine is sheared (a gantry tilt kept "
            "in the affine); ingest it with tilt correction (the default, without --keep-tilt)"
        )
    patient = _Patient.build(array, affine)
    brain_ml = float(patient.brain.sum()) * patient.voxel_ml
    warnings: list[str] = []
    fixed = space.working(params)
    if transform is not None:
        result_matrix = _as_matrix(transform, "the template transform to replay")
        stages, metric, initial, initialisation = [], float("nan"), None, "replayed"
    else:
        if not patient.head.any():
            raise UserInputError("no head found in the volume (nothing above -400 HU): is this a head CT in HU?")
        initial, initialisation = _initial_transform(patient, fixed, brain_ml, warnings)
        result_matrix, stages, metric, initial = _optimise(patient, fixed, params, initial, warnings)
    dice, coverage = brain_overlap(patient.brain, patient.affine, result_matrix, space)
    rotation, scales = _polar(result_matrix[:3, :3])
    if transform is None and not (SCALE_RANGE[0] <= scales.min() and scales.max() <= SCALE_RANGE[1]):
        warnings.append(
            f"the registration's scale factors {np.round(scales, 3).tolist()} are outside {list(SCALE_RANGE)}: it "
            "probably fitted something other than the head; check the registered image"
        )
        logger.warning(warnings[-1])
    if coverage < FULL_BRAIN_COVERAGE:
        warnings.append(
            f"the series covers only {100 * coverage:.0f}% of the template's brain: regions outside the scan "
            "cannot be assessed"
        )
        logger.warning(warnings[-1])
    if dice < BRAIN_DICE_THRESHOLD:
        warnings.append(
            f"brain overlap with the template is low (Dice {dice:.3f} < {BRAIN_DICE_THRESHOLD}): the registration "
            "may have failed, or the series does not cover the whole brain; check the registered image"
        )
        logger.warning(warnings[-1])
    return RegistrationResult(
        template_transform=result_matrix,
        metric=metric,
        brain_dice=dice,
        brain_coverage=coverage,
        time_s=time.perf_counter() - start,
        params=params,
        stages=stages,
        initial_transform=initial,
        initialisation=initialisation,
        patient_brain_ml=brain_ml,
        warnings=warnings,
        replayed=transform is not None,
    )


# --- resampling both ways ------------------------------------------------------------------------------------------


def _spatial_array(image: NdarrayOrTensor) -> np.ndarray:
    """``(X, Y, Z)`` float32 numpy from ``(X, Y, Z)`` or single-channel ``(1, X, Y, Z)`` input."""
    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise UserInputError(f"registration needs one 3D HU volume, (X, Y, Z) or (1, X, Y, Z); got shape {a.shape}")
    return np.asarray(a, dtype=np.float32)


def _anti_alias_sigma(src_affine: np.ndarray, dst_affine: np.ndarray, src_to_dst: np.ndarray) -> np.ndarray:
    """Gaussian sigma (source voxels) per source axis so that sampling onto a coarser grid does not alias.

    Each source axis sees the destination voxel's size along its direction; where that exceeds the source
    spacing by a factor ``k`` the sigma is ``(k - 1) / 2`` voxels (scikit-image's and MONAI's ``Resize`` choice).
    """
    src_spacing = _spacing_of(src_affine)
    src_dirs = src_affine[:3, :3] / src_spacing  # world direction of each source axis
    dst_lin = src_to_dst[:3, :3] @ src_dirs  # ... seen in destination world coordinates
    dst_spacing = _spacing_of(dst_affine)
    dst_dirs = dst_affine[:3, :3] / dst_spacing
    # component of each source direction along each destination axis, weighted by that axis' voxel size
    along = dst_dirs.T @ dst_lin
    seen = np.sqrt(((along * dst_spacing[:, None]) ** 2).sum(axis=0))
    return np.maximum(0.0, (seen / src_spacing - 1.0) / 2.0)


def _resample(
    array: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: Sequence[int],
    dst_to_src_world: np.ndarray,
    order: int,
    cval: float,
    anti_alias: bool,
) -> np.ndarray:
    """Sample ``array`` (``(X, Y, Z)`` on ``src_affine``) at the voxels of a destination grid.

    ``dst_to_src_world`` maps destination world points to source world points.
    """
    index_map = np.linalg.inv(src_affine) @ dst_to_src_world @ dst_affine
    if anti_alias and order > 0:
        sigma = _anti_alias_sigma(src_affine, dst_affine, np.linalg.inv(dst_to_src_world))
        if np.any(sigma > 0.05):
            array = ndimage.gaussian_filter(array, sigma=sigma, mode="nearest", truncate=3.0)
    out_dtype = array.dtype if order == 0 else np.float32
    if array.dtype == np.float16:  # scipy does not interpolate half floats
        array = array.astype(np.float32)
    out = ndimage.affine_transform(
        array,
        index_map[:3, :3],
        offset=index_map[:3, 3],
        output_shape=tuple(int(v) for v in dst_shape),
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
        output=np.float32 if out_dtype == np.float16 else out_dtype,
    )
    return out.astype(out_dtype, copy=False)


def _inside_grid(
    grid_affine: np.ndarray,
    grid_shape: Sequence[int],
    transform: np.ndarray,
    scan_affine: np.ndarray,
    scan_shape: Sequence[int],
    margin_mm: float = 0.0,
) -> np.ndarray:
    """Which voxels of a template-space grid ``transform`` maps into a scan's grid (half a voxel beyond its edge
    voxels' centres, less ``margin_mm``)."""
    index_map = np.linalg.inv(scan_affine) @ transform @ grid_affine
    axes = [np.arange(n, dtype=np.float32) for n in grid_shape]
    margin = np.float32(margin_mm) / _spacing_of(scan_affine).astype(np.float32)
    lo = -0.5 + margin
    hi = np.asarray(scan_shape, dtype=np.float32) - 0.5 - margin
    inside = np.ones(tuple(int(n) for n in grid_shape), dtype=bool)
    m, t = index_map[:3, :3].astype(np.float32), index_map[:3, 3].astype(np.float32)
    for row in range(3):
        # one scan index at a time keeps the memory at one float32 grid
        idx = t[row] + sum(m[row, a] * axes[a].reshape([-1 if b == a else 1 for b in range(3)]) for a in range(3))
        inside &= (idx >= lo[row]) & (idx <= hi[row])
    return inside


def resample_to_template(
    image: NdarrayOrTensor,
    affine: Matrix,
    template_transform: Matrix,
    spacing: float | Sequence[float] | None = None,
    template: Any = None,
    mode: str = "bilinear",
    padding_value: float = AIR_HU,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a patient-space volume (any channel count) into template space through a known transform.

    This is the output step of :func:`register_to_template` and the way to replay a recorded transform (e.g.
    onto a lesion label map of the same patient, with ``mode="nearest"``).

    Args:
        image: ``(C, X, Y, Z)`` or ``(X, Y, Z)`` on the patient grid.
        affine: the patient grid's voxel -> RAS affine.
        template_transform: template RAS -> patient RAS (``meta["template_transform"]``).
        spacing: output voxel size (mm), one value or three; None for the template's own grid.
        template: see :meth:`TemplateSpace.resolve`.
        mode: ``"bilinear"`` (trilinear, with anti-aliasing where the output is coarser than the patient's voxels)
            or ``"nearest"`` (labels; dtype kept).
        padding_value: value outside the scan (air, -1024 HU, for images; use 0 for labels and maps).

    Returns:
        ``(array, affine)``: ``(C, X', Y', Z')`` (or 3D, like the input) and the output grid's RAS affine.
    """
    order = _order(mode)
    src_affine = _as_matrix(affine, "the patient affine")
    transform = _as_matrix(template_transform, "the template transform")
    dst_affine, dst_shape = template_grid(spacing, template)
    data = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    squeeze = data.ndim == 3
    channels = data[None] if squeeze else data
    if channels.ndim != 4:
        raise UserInputError(f"expected a (C, X, Y, Z) or (X, Y, Z) volume, got shape {data.shape}")
    out = np.stack(
        [
            _resample(
                c if order == 0 else np.asarray(c, dtype=np.float32),
                src_affine,
                dst_affine,
                dst_shape,
                transform,
                order,
                padding_value,
                anti_alias=True,
            )
            for c in channels
        ]
    )
    return (out[0] if squeeze else out), dst_affine


def _order(mode: str) -> int:
    orders = {"nearest": 0, "bilinear": 1, "trilinear": 1, "linear": 1}
    if mode not in orders:
        raise UserInputError(
            f"interpolation mode {mode!r} must be 'nearest' (labels) or 'bilinear' (images, heat maps)"
        )
    return orders[mode]


def brain_overlap(
    brain: np.ndarray, affine: Matrix, template_transform: Matrix, template: Any = None
) -> tuple[float, float]:
    """Dice of a patient's intracranial mask, carried into template space, with the template's brain mask; and
    the fraction of the template's brain that the scan covers.

    Measured on the template's 2 mm working grid (the mask is sampled with trilinear interpolation and
    thresholded at one half). The Dice counts only the part of template space inside the scan's field of view,
    so that it measures alignment; a scan that misses part of the brain shows as low coverage instead.

    Args:
        brain: boolean intracranial mask on the patient grid (see :func:`intracranial_mask`).
        affine: that grid's voxel -> RAS affine.
        template_transform: template RAS -> patient RAS.
        template: see :meth:`TemplateSpace.resolve`.

    Returns:
        ``(dice, coverage)``, both in [0, 1].
    """
    space = TemplateSpace.resolve(template)
    fixed = space.working(RegistrationParams())
    patient_affine = _as_matrix(affine, "the patient affine")
    transform = _as_matrix(template_transform, "the template transform")
    mask = np.asarray(brain)
    moved = _resample(
        mask.astype(np.float32), patient_affine, fixed["affine"], fixed["brain"].shape, transform, 1, 0.0, False
    )
    moved = moved >= 0.5
    inside = _inside_grid(fixed["affine"], moved.shape, transform, patient_affine, mask.shape)
    template_brain = fixed["brain"]
    covered = template_brain & inside
    coverage = float(covered.sum() / max(1, template_brain.sum()))
    total = int((moved & inside).sum()) + int(covered.sum())
    dice = float(2.0 * np.logical_and(moved, covered).sum() / total) if total else 0.0
    return dice, coverage


def brain_dice(brain: np.ndarray, affine: Matrix, template_transform: Matrix, template: Any = None) -> float:
    """Dice of a patient's intracranial mask in template space with the template's brain mask (see
    :func:`brain_overlap`, which also gives the scan's coverage of the brain)."""
    return brain_overlap(brain, affine, template_transform, template)[0]


def registration_quality(meta: Mapping[str, Any], threshold: float = BRAIN_DICE_THRESHOLD) -> dict[str, Any]:
    """Pass/fail of a registration from its metadata (a registered ``MetaTensor`` or its ``meta``).

    Checks: ``brain_dice >= threshold`` (:data:`BRAIN_DICE_THRESHOLD`), the affine's scale factors within
    :data:`SCALE_RANGE`, and ``brain_coverage >= MIN_BRAIN_COVERAGE`` (below it the Dice cannot verify the
    alignment along the cut axis). Coverage below :data:`FULL_BRAIN_COVERAGE` only warns.

    Returns:
        ``{"passed", "reasons" (why not, one line each), "brain_dice", "threshold", "brain_coverage",
        "coverage_complete", "scales", "scales_plausible", "rotation_deg", "metric", "warnings"}``.
    """
    meta = getattr(meta, "meta", meta)
    if TEMPLATE_TRANSFORM_KEY not in meta or _META_BRAIN_DICE not in meta:
        raise UserInputError(
            f"no registration in this metadata ({TEMPLATE_TRANSFORM_KEY!r} or {_META_BRAIN_DICE!r} is missing): "
            "run RegisterToTemplate first"
        )
    matrix = _as_matrix(meta[TEMPLATE_TRANSFORM_KEY], "template_transform")
    rotation, scales = _polar(matrix[:3, :3])
    dice = _scalar(meta[_META_BRAIN_DICE])
    coverage = _scalar(meta.get(_META_BRAIN_COVERAGE, 1.0))
    plausible = bool(SCALE_RANGE[0] <= scales.min() and scales.max() <= SCALE_RANGE[1])
    reasons = []
    if not dice >= threshold:
        reasons.append(f"brain overlap Dice {dice:.3f} < {threshold:.2f}")
    if not plausible:
        reasons.append("head scale " + "/".join(f"{v:.2f}" for v in scales) + f" outside {SCALE_RANGE}")
    if not coverage >= MIN_BRAIN_COVERAGE:
        reasons.append(f"the scan covers {100 * coverage:.0f}% of the brain (< {100 * MIN_BRAIN_COVERAGE:.0f}%)")
    warnings = meta.get(_META_WARNINGS) or ""
    return {
        "passed": not reasons,
        "reasons": reasons,
        "brain_dice": dice,
        "threshold": float(threshold),
        "brain_coverage": coverage,
        "coverage_complete": bool(coverage >= FULL_BRAIN_COVERAGE),
        "scales": [float(v) for v in scales],
        "scales_plausible": plausible,
        "rotation_deg": _rotation_deg(rotation),
        "metric": _scalar(meta.get(_META_METRIC, float("nan"))),
        "warnings": [w for w in str(warnings).split("\n") if w] if isinstance(warnings, str) else list(warnings),
    }


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.reshape(-1)[0])
    return float(np.asarray(value).reshape(-1)[0])


def _transform_from(meta_or_transform: Any) -> tuple[np.ndarray, Mapping[str, Any]]:
    """The template -> patient matrix and the metadata (possibly empty) from a meta dict, MetaTensor or matrix."""
    meta = getattr(meta_or_transform, "meta", meta_or_transform)
    if isinstance(meta, Mapping):
        if TEMPLATE_TRANSFORM_KEY not in meta:
            raise UserInputError(
                f"the metadata has no {TEMPLATE_TRANSFORM_KEY!r}: give the meta of an image registered with "
                "RegisterToTemplate, or the 4x4 matrix itself"
            )
        return _as_matrix(meta[TEMPLATE_TRANSFORM_KEY], TEMPLATE_TRANSFORM_KEY), meta
    return _as_matrix(meta_or_transform, "the template transform"), {}


def map_points_to_patient(points_ras: Any, meta_or_transform: Any, as_voxel: bool = False) -> np.ndarray:
    """Map template world points (RAS mm, ``(N, 3)`` or ``(3,)``) to the patient's world points.

    Args:
        points_ras: template points.
        meta_or_transform: registration metadata (or MetaTensor) or the 4x4 template -> patient matrix.
        as_voxel: return fractional patient voxel indices instead (needs ``patient_affine`` in the metadata).
    """
    matrix, meta = _transform_from(meta_or_transform)
    if as_voxel:
        if _META_PATIENT_AFFINE not in meta:
            raise UserInputError("as_voxel needs the registration metadata (with 'patient_affine'), not a bare matrix")
        matrix = np.linalg.inv(_as_matrix(meta[_META_PATIENT_AFFINE], _META_PATIENT_AFFINE)) @ matrix
    return _apply(matrix, points_ras)


def map_points_to_template(points_ras: Any, meta_or_transform: Any) -> np.ndarray:
    """Map patient world points (RAS mm, ``(N, 3)`` or ``(3,)``) to template world points (the inverse map)."""
    matrix, _ = _transform_from(meta_or_transform)
    return _apply(np.linalg.inv(matrix), points_ras)


def _apply(matrix: np.ndarray, points: Any) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-1] != 3:
        raise UserInputError(f"points must have 3 coordinates in the last axis, got shape {p.shape}")
    return p @ matrix[:3, :3].T + matrix[:3, 3]


def map_to_patient(
    image: NdarrayOrTensor,
    meta_or_transform: Any,
    patient_shape: Sequence[int] | None = None,
    patient_affine: Matrix | None = None,
    mode: str = "nearest",
    image_affine: Matrix | None = None,
    padding_value: float = 0.0,
) -> MetaTensor:
    """Bring a template-space map (region labels, heat maps; any channel count) onto the patient's voxel grid.

    Each patient voxel centre is mapped into template space and the map is sampled there, so a region outline
    lands on the patient's own slices. Thick patient slices sample the map at the slice centre.

    Args:
        image: ``(C, X, Y, Z)`` (or ``(X, Y, Z)``) in template space. Its grid: ``image_affine``, else its own
            affine when a MetaTensor, else the template's 1 mm grid (the shape must then match it).
        meta_or_transform: the registered image's meta (or the registered MetaTensor), or a 4x4 template -> patient
            RAS matrix.
        patient_shape: patient grid ``(X, Y, Z)``; default ``meta["patient_spatial_shape"]``.
        patient_affine: patient grid affine; default ``meta["patient_affine"]``.
        mode: ``"nearest"`` (labels; dtype kept) or ``"bilinear"`` (heat maps; float32).
        image_affine: the map's voxel -> RAS affine when ``image`` carries none.
        padding_value: value for patient voxels that map outside the map's grid.

    Returns:
        ``MetaTensor`` ``(C, X, Y, Z)`` on the patient grid (``(X, Y, Z)`` for 3D input), with the patient affine;
        labels keep their dtype.
    """
    order = _order(mode)
    matrix, meta = _transform_from(meta_or_transform)
    if patient_shape is None:
        patient_shape = meta.get(_META_PATIENT_SHAPE)
    if patient_affine is None:
        patient_affine = meta.get(_META_PATIENT_AFFINE)
    if patient_shape is None or patient_affine is None:
        raise UserInputError(
            "map_to_patient needs the patient grid: give patient_shape and patient_affine, or the registration metadata"
        )
    patient_shape = tuple(int(v) for v in np.asarray(patient_shape).reshape(-1)[:3])
    patient_affine = _as_matrix(patient_affine, "patient_affine")
    data = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    squeeze = data.ndim == 3
    channels = data[None] if squeeze else data
    if channels.ndim != 4:
        raise UserInputError(f"expected a (C, X, Y, Z) or (X, Y, Z) template-space map, got shape {data.shape}")
    src_affine = _map_affine(image, image_affine, channels.shape[1:])
    out = np.stack(
        [
            _resample(
                c if order == 0 else np.asarray(c, np.float32),
                src_affine,
                patient_affine,
                patient_shape,
                np.linalg.inv(matrix),
                order,
                padding_value,
                anti_alias=False,
            )
            for c in channels
        ]
    )
    result = MetaTensor(torch.from_numpy(np.ascontiguousarray(out)), affine=torch.as_tensor(patient_affine))
    result.meta[MetaKeys.SPACE] = SpaceKeys.RAS
    result.meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(patient_shape)
    for key in ("filename_or_obj", "series_uid"):
        if key in meta:
            result.meta[key] = meta[key]
    return result[0] if squeeze else result


def _map_affine(image: Any, image_affine: Matrix | None, shape: Sequence[int]) -> np.ndarray:
    if image_affine is not None:
        return _as_matrix(image_affine, "image_affine")
    if isinstance(image, MetaTensor):
        return _as_matrix(image.affine, "the map's affine")
    default_affine, default_shape = template_grid(None)
    if tuple(shape) != tuple(default_shape):
        raise UserInputError(
            f"the template-space map has shape {tuple(shape)}, not the template grid's {default_shape}, and no affine: "
            "pass it as a MetaTensor or give image_affine"
        )
    return default_affine


# --- MONAI transforms ----------------------------------------------------------------------------------------------


def _registration_meta(
    result: RegistrationResult, template_id: str, patient_affine: np.ndarray, patient_shape
) -> dict[str, Any]:
    """The metadata a registration adds (flat values and fixed-size arrays: MONAI collation batches them)."""
    return {
        TEMPLATE_TRANSFORM_KEY: np.asarray(result.template_transform, dtype=np.float64),
        _META_TEMPLATE_IDENTITY: template_id,
        _META_PATIENT_AFFINE: np.asarray(patient_affine, dtype=np.float64),
        _META_PATIENT_SHAPE: np.asarray(patient_shape, dtype=np.int64),
        _META_BRAIN_DICE: float(result.brain_dice),
        _META_BRAIN_COVERAGE: float(result.brain_coverage),
        _META_METRIC: float(result.metric),
        _META_TIME: float(result.time_s),
        _META_WARNINGS: "\n".join(result.warnings),
        # nested and variable-length, so kept as one JSON string: json.loads(meta["registration"])
        _META_REGISTRATION: _json_dumps(result.record()),
    }


def _json_dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, default=lambda v: v.tolist() if isinstance(v, np.ndarray) else float(v))


def registration_record(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The full record of a registration (parameters, stages, metrics) from a registered image's meta."""
    import json

    meta = getattr(meta, "meta", meta)
    raw = meta.get(_META_REGISTRATION)
    if raw is None:
        raise UserInputError("no registration record in this metadata: run RegisterToTemplate first")
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


class RegisterToTemplate(InvertibleTransform):
    """Register a head CT ``MetaTensor`` ``(C, X, Y, Z)`` (HU, RAS affine) to the CT template and resample it there.

    Channel 0 drives the registration; every channel is resampled. The output lies on the template's 1 mm grid
    (or a coarser grid of the same field of view, ``spacing``) with its RAS affine; ``meta`` gains
    ``template_transform`` (template RAS -> patient RAS, 4x4 float64), ``template_identity``, ``patient_affine``,
    ``patient_spatial_shape``, ``brain_dice``, ``brain_coverage``, ``registration_metric``, ``registration_time_s``,
    ``registration_warnings`` (one per line) and ``registration`` (JSON record of the parameters and stages, see
    :func:`registration_record`); ``filename_or_obj``, ``series_uid`` and the rest of the input's meta are kept.

    The transform is invertible in MONAI's sense: ``inverse`` (and so ``Invertd``) maps a template-space map
    back onto the patient grid (``mode`` as recorded, ``nearest`` with ``Invertd(nearest_interp=True)``);
    voxels outside the template grid get 0 (the inverse is meant for labels and probability maps).

    Args:
        template: see :meth:`TemplateSpace.resolve` (default: the project's CT template).
        spacing: output voxel size in mm (one or three values), e.g. ``(2, 2, 2)`` for fast demos or ``(1, 1, 4)``
            for thick template slices; None for the template's 1 mm grid.
        params: :class:`RegistrationParams`; keyword overrides of single fields can be given as ``param_overrides``.
        mode: output interpolation, ``"bilinear"`` or ``"nearest"``.
        padding_value: value outside the scan (air).
        param_overrides: fields of :class:`RegistrationParams` (e.g. ``stages=("rigid",)``).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        template: Any = None,
        spacing: float | Sequence[float] | None = None,
        params: RegistrationParams | None = None,
        mode: str = "bilinear",
        padding_value: float = AIR_HU,
        **param_overrides: Any,
    ) -> None:
        self.template = template
        self.spacing = spacing
        try:
            self.params = replace(params or RegistrationParams(), **param_overrides)
        except TypeError as exc:
            raise UserInputError(f"unknown registration parameter: {exc}") from exc
        _order(mode)
        self.mode = mode
        self.padding_value = float(padding_value)
        if spacing is not None:
            template_grid(spacing, None if template is None else template)  # validate early

    def __call__(
        self,
        img: NdarrayOrTensor,
        transform: Any = None,
        mode: str | None = None,
        padding_value: float | None = None,
    ) -> MetaTensor:
        """Register ``img`` (or replay ``transform``: a 4x4 template -> patient matrix or a registered image's meta).

        Args:
            img: ``MetaTensor`` ``(C, X, Y, Z)`` with its RAS affine.
            transform: replay this instead of optimising.
            mode: override of the output interpolation for this call.
            padding_value: override of the padding for this call.
        """
        patient_affine = _patient_affine_of(img)
        channel0 = img[0] if img.ndim == 4 else img
        matrix = None if transform is None else _transform_from(transform)[0]
        result = register_to_template(channel0, patient_affine, self.template, self.params, transform=matrix)
        space = TemplateSpace.resolve(self.template)
        meta = _registration_meta(result, space.identity, patient_affine, tuple(img.shape[-3:]))
        return self.resample(img, meta, mode=mode, padding_value=padding_value)

    def resample(
        self,
        img: NdarrayOrTensor,
        registration_meta: Mapping[str, Any],
        mode: str | None = None,
        padding_value: float | None = None,
    ) -> MetaTensor:
        """Resample ``img`` (same patient grid) into template space with a known registration's metadata."""
        mode = mode or self.mode
        padding_value = self.padding_value if padding_value is None else float(padding_value)
        patient_affine = _patient_affine_of(img)
        matrix = _as_matrix(registration_meta[TEMPLATE_TRANSFORM_KEY], TEMPLATE_TRANSFORM_KEY)
        data = img if img.ndim == 4 else img[None]
        array, out_affine = resample_to_template(
            data, patient_affine, matrix, self.spacing, self.template, mode, padding_value
        )
        meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
        meta.update(registration_meta)
        meta[_META_PATIENT_AFFINE] = patient_affine
        meta[_META_PATIENT_SHAPE] = np.asarray(img.shape[-3:], dtype=np.int64)
        meta[MetaKeys.AFFINE] = torch.as_tensor(out_affine, dtype=torch.float64)
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(array.shape[1:])
        meta[MetaKeys.SPACE] = SpaceKeys.RAS
        meta["spacing"] = _spacing_of(out_affine)
        ops = list(img.applied_operations) if isinstance(img, MetaTensor) else []
        out = MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), meta=meta, applied_operations=ops)
        extra = {
            TEMPLATE_TRANSFORM_KEY: matrix.tolist(),
            _META_PATIENT_AFFINE: patient_affine.tolist(),
            "mode": mode,
            _META_TEMPLATE_IDENTITY: meta.get(_META_TEMPLATE_IDENTITY, ""),
        }
        self.push_transform(out, orig_size=tuple(int(v) for v in img.shape[-3:]), extra_info=extra)
        return out

    def check_transforms_match(self, transform: Mapping) -> None:
        """Any ``RegisterToTemplate`` may undo a record of this class: the inverse needs only what the record holds
        (transform, patient grid, mode), so a volume registered in another process (a persistent cache) or by
        another instance still maps back; MONAI's default check compares object ids."""
        if transform.get(TraceKeys.CLASS_NAME) == self.__class__.__name__:
            return
        super().check_transforms_match(transform)

    def inverse(self, data: NdarrayOrTensor) -> MetaTensor:
        """Map a template-space ``MetaTensor`` (this transform in its applied operations) onto the patient grid."""
        transform = self.pop_transform(data)
        extra = transform[TraceKeys.EXTRA_INFO]
        patient_shape = transform[TraceKeys.ORIG_SIZE]
        patient_affine = np.asarray(extra[_META_PATIENT_AFFINE])
        out = map_to_patient(
            data,
            np.asarray(extra[TEMPLATE_TRANSFORM_KEY]),
            patient_shape=patient_shape,
            patient_affine=patient_affine,
            mode=extra.get("mode", "nearest"),
        )
        meta = dict(data.meta) if isinstance(data, MetaTensor) else {}
        meta.update(out.meta)
        meta["spacing"] = _spacing_of(patient_affine)
        return MetaTensor(out.as_tensor(), meta=meta, applied_operations=list(getattr(data, "applied_operations", [])))


def _patient_affine_of(img: Any) -> np.ndarray:
    if not isinstance(img, MetaTensor):
        raise UserInputError(
            "RegisterToTemplate needs a MetaTensor with its RAS affine (as LoadCTSeries returns); got "
            f"{type(img).__name__}"
        )
    affine = img.affine
    if affine.ndim != 2:
        raise UserInputError("RegisterToTemplate works on one volume at a time, not on a batch")
    return _as_matrix(affine, "the image's affine")


class RegisterToTemplated(MapTransform, InvertibleTransform):
    """Dictionary-based :class:`RegisterToTemplate`.

    The first of ``keys`` present in the data is registered; the others (e.g. a lesion label map on the same
    patient grid, with ``mode="nearest"``) are resampled through the same transform. With ``reference_key``, the
    registration already stored in ``data[reference_key]``'s meta is replayed onto every key instead.

    Args:
        keys: keys of the patient-space volumes.
        template: see :meth:`TemplateSpace.resolve`.
        spacing: output voxel size in mm (see :class:`RegisterToTemplate`).
        params: :class:`RegistrationParams`.
        mode: interpolation per key (``"bilinear"`` for images, ``"nearest"`` for labels).
        padding_value: value outside the scan, per key (air -1024 for HU, 0 for labels).
        reference_key: a key whose value is an already registered ``MetaTensor`` (or its meta): replay it.
        allow_missing_keys: don't raise if a key is missing.
        param_overrides: fields of :class:`RegistrationParams`.
    """

    backend = RegisterToTemplate.backend

    def __init__(
        self,
        keys: KeysCollection,
        template: Any = None,
        spacing: float | Sequence[float] | None = None,
        params: RegistrationParams | None = None,
        mode: str | Sequence[str] = "bilinear",
        padding_value: float | Sequence[float] = AIR_HU,
        reference_key: Hashable | None = None,
        allow_missing_keys: bool = False,
        **param_overrides: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.register = RegisterToTemplate(template=template, spacing=spacing, params=params, **param_overrides)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        for m in self.mode:
            _order(m)
        self.padding_value = ensure_tuple_rep(padding_value, len(self.keys))
        self.reference_key = reference_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        record: Mapping[str, Any] | None = None
        if self.reference_key is not None:
            reference = d.get(self.reference_key)
            if reference is None and not self.allow_missing_keys:
                raise UserInputError(f"reference key {self.reference_key!r} is not in the data")
            record = None if reference is None else getattr(reference, "meta", reference)
        for key, mode, pad in self.key_iterator(d, self.mode, self.padding_value):
            if record is None:
                d[key] = self.register(d[key], mode=mode, padding_value=pad)
                record = d[key].meta
            else:
                d[key] = self.register.resample(d[key], _registration_subset(record), mode=mode, padding_value=pad)
        return d

    def inverse(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.register.inverse(d[key])
        return d


def _registration_subset(meta: Mapping[str, Any]) -> dict[str, Any]:
    if TEMPLATE_TRANSFORM_KEY not in meta:
        raise UserInputError(
            f"the reference has no {TEMPLATE_TRANSFORM_KEY!r}: register it with RegisterToTemplate first"
        )
    keys = (
        TEMPLATE_TRANSFORM_KEY,
        _META_TEMPLATE_IDENTITY,
        _META_BRAIN_DICE,
        _META_BRAIN_COVERAGE,
        _META_METRIC,
        _META_TIME,
        _META_WARNINGS,
        _META_REGISTRATION,
    )
    return {k: meta[k] for k in keys if k in meta}


class TemplateToPatient(Transform):
    """Bring a template-space map onto the patient's voxel grid (array version of :func:`map_to_patient`).

    Args:
        mode: ``"nearest"`` for labels (dtype kept), ``"bilinear"`` for heat maps.
        padding_value: value for patient voxels outside the map's grid.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, mode: str = "nearest", padding_value: float = 0.0) -> None:
        _order(mode)
        self.mode = mode
        self.padding_value = padding_value

    def __call__(
        self,
        img: NdarrayOrTensor,
        meta_or_transform: Any,
        patient_shape: Sequence[int] | None = None,
        patient_affine: Matrix | None = None,
        mode: str | None = None,
    ) -> MetaTensor:
        """See :func:`map_to_patient`."""
        return map_to_patient(
            img,
            meta_or_transform,
            patient_shape,
            patient_affine,
            mode=mode or self.mode,
            padding_value=self.padding_value,
        )


class TemplateToPatientd(MapTransform):
    """Dictionary-based :class:`TemplateToPatient`: maps ``keys`` with the registration of ``transform_key``.

    Args:
        keys: keys of template-space maps (``MetaTensor`` with their affine, or arrays on the template 1 mm grid).
        transform_key: key of the registered image (its meta holds the transform and the patient grid), or of a
            meta dictionary.
        mode: per key, ``"nearest"`` (labels) or ``"bilinear"`` (heat maps).
        padding_value: per key, value outside the map's grid.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = TemplateToPatient.backend

    def __init__(
        self,
        keys: KeysCollection,
        transform_key: Hashable = "image",
        mode: str | Sequence[str] = "nearest",
        padding_value: float | Sequence[float] = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform_key = transform_key
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_value = ensure_tuple_rep(padding_value, len(self.keys))
        self.mappers = [TemplateToPatient(m, p) for m, p in zip(self.mode, self.padding_value, strict=True)]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.transform_key not in d:
            raise UserInputError(
                f"transform key {self.transform_key!r} is not in the data: it must hold the registered image"
            )
        meta = getattr(d[self.transform_key], "meta", d[self.transform_key])
        for key, mapper in self.key_iterator(d, self.mappers):
            d[key] = mapper(d[key], meta)
        return d


RegisterToTemplateD = RegisterToTemplateDict = RegisterToTemplated
TemplateToPatientD = TemplateToPatientDict = TemplateToPatientd
