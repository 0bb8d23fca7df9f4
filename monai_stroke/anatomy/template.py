"""The CT brain template: a synthetic non-contrast head CT in HU on the MNI152 2009 symmetric 1 mm grid.

No CT template can be downloaded here, so one is built from what ``nilearn`` ships as package data:
the ICBM 2009a symmetric gray- and white-matter probability maps and the T1 template (whose non-zero
voxels are the brain mask - nilearn's copy is skull-stripped, so the skull and scalp are modelled, see
below). The build is deterministic and cached under ``$MONAI_STROKE_CACHE`` (default
``~/.cache/monai-stroke``) in a folder named by a hash of the inputs and the recipe, written atomically
so that two processes building at once never see a half-written cache.

Tissue model (HU, partial volume = probability-weighted mix, see ``TEMPLATE_HU``):

* inside the intracranial space (the T1 brain mask, holes filled, plus a 1.5 mm rim for the
  subarachnoid space and dura): gray matter, white matter, and CSF where neither map is (sulci,
  cisterns, ventricles);
* a skull shell around it whose thickness varies with direction (about 6.5 mm at the vertex, frontal
  and occipital bone, thinning to about 3 mm over the temporal squama), made of an inner and an outer
  cortical table with diploe between;
* scalp outside the skull: galea (thickened by the temporalis muscle over the temples), a thin
  subcutaneous fat layer, and skin; air beyond.

Layers are placed along a smoothed signed distance to the intracranial boundary, and each voxel's HU
mixes the layers it overlaps, so edges have the one-voxel partial volume of a reconstructed CT.

What it is not: there is no face, orbit, skull base detail, mastoid air or neck (the grid ends at
MNI z = -72 mm, and below the brain the shell simply closes). Registration of real scans that include
the face and neck should mask or weight the brain and skull vault.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from monai_stroke.errors import MissingDependencyError, UserInputError
from monai_stroke.utils import array_sha256, atomic_dir, file_sha256, write_json_atomic

__all__ = [
    "TEMPLATE_HU",
    "TemplateHU",
    "TISSUES",
    "cache_root",
    "nilearn_data_dir",
    "load_template",
    "template_identity",
    "image_identity",
    "brain_mask",
    "tissue_maps",
    "template_cache_dir",
]

logger = logging.getLogger(__name__)

#: Bump when the recipe changes: the cache key includes it, so old caches are never reused by mistake.
RECIPE_VERSION = "ct-template-4"

#: nilearn package-data files the template is built from.
NILEARN_FILES: dict[str, str] = {
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
}

#: Names of the intracranial tissue probability maps returned by :func:`tissue_maps`.
TISSUES: tuple[str, ...] = ("gm", "wm", "csf")


@dataclass(frozen=True)
class TemplateHU:
    """Attenuation (HU) and layer thickness (mm) of each tissue of the template.

    Values follow typical adult non-contrast head CT: gray matter 37-45, white matter 20-30 with a gray-white
    difference of about 7-8 HU, CSF 0-15, cortical bone 1000-2000, diploe 200-400, scalp soft tissue 30-50,
    subcutaneous fat about -100, air -1000.
    """

    gray_matter: float = 38.5
    white_matter: float = 29.5
    csf: float = 7.0
    cortical_bone: float = 1600.0
    diploe: float = 300.0
    soft_tissue: float = 42.0
    fat: float = -100.0
    air: float = -1000.0
    #: rim added outside the brain mask for the subarachnoid space and dura (CSF density)
    csf_rim_mm: float = 1.5
    #: skull thickness at the vertex/frontal/occipital bone and over the temporal squama
    skull_mm: float = 6.5
    skull_temporal_mm: float = 3.0
    #: each cortical table is this fraction of the local skull thickness, within [1, 2] mm
    table_fraction: float = 0.28
    #: galea, plus the temporalis muscle over the temples
    galea_mm: float = 1.5
    temporalis_mm: float = 9.0
    fat_mm: float = 1.5
    skin_mm: float = 3.0
    #: smoothing (mm) of the signed distance that places the layers; gives sub-voxel, partial-volume edges
    edge_sigma_mm: float = 0.8


TEMPLATE_HU = TemplateHU()

# world point (RAS mm) from which the direction-dependent skull/scalp thickness is measured: the centre of
# the neurocranium of MNI152, a little behind and above the anterior commissure
_HEAD_CENTRE_MM = np.array([0.0, -18.0, 15.0])

_memo: dict[str, dict] = {}


def cache_root() -> Path:
    """The monai-stroke cache folder: ``$MONAI_STROKE_CACHE`` or ``~/.cache/monai-stroke``."""
    return Path(os.environ.get("MONAI_STROKE_CACHE") or Path.home() / ".cache" / "monai-stroke").expanduser()


def nilearn_data_dir() -> Path:
    """Folder of nilearn's package data holding the MNI152 2009 maps."""
    try:
        import nilearn
    except ImportError as exc:  # pragma: no cover - nilearn is a hard dependency
        raise MissingDependencyError(
            "the CT template is built from nilearn's MNI152 maps but nilearn is not installed; "
            "install it with: pip install 'nilearn>=0.10'"
        ) from exc
    return Path(nilearn.__file__).parent / "datasets" / "data"


def _input_files() -> dict[str, Path]:
    data_dir = nilearn_data_dir()
    files = {name: data_dir / fname for name, fname in NILEARN_FILES.items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise UserInputError(
            f"the CT template needs nilearn's MNI152 2009 package data, but {', '.join(missing)} is missing; "
            "reinstall nilearn (pip install --force-reinstall 'nilearn>=0.10')"
        )
    return files


def _cache_key(files: dict[str, Path], hu: TemplateHU) -> str:
    digest = hashlib.sha256()
    digest.update(RECIPE_VERSION.encode())
    digest.update(json.dumps(asdict(hu), sort_keys=True).encode())
    for name in sorted(files):
        digest.update(f"{name}:{file_sha256(files[name])}".encode())
    return digest.hexdigest()


def template_cache_dir() -> Path:
    """The cache folder of the current template build (it may not exist yet)."""
    files = _input_files()
    return cache_root() / "anatomy" / f"template-{_cache_key(files, TEMPLATE_HU)[:16]}"


def image_identity(image: nib.Nifti1Image) -> str:
    """Content hash of an image: its voxel values (as float32) and its affine.

    Args:
        image: a NIfTI image, e.g. a template read back from an exported atlas folder.
    """
    data = np.asarray(image.dataobj, dtype=np.float32)
    return array_sha256(data, np.asarray(image.affine, dtype=np.float64))


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    # a second process waits for the first build instead of repeating it; the atomic folder rename is
    # what keeps the cache consistent, the lock only saves the duplicated work
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_inputs(files: dict[str, Path]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    arrays, affine = {}, None
    for name, path in files.items():
        try:
            image = nib.load(path)
            arrays[name] = np.asarray(image.dataobj, dtype=np.float32) / 255.0
        except Exception as exc:  # noqa: BLE001 - any read failure means a damaged installation
            raise UserInputError(f"cannot read nilearn data file {path} ({exc}); reinstall nilearn") from exc
        if affine is None:
            affine = image.affine
        elif not np.allclose(image.affine, affine) or arrays[name].shape != arrays["gm"].shape:
            raise UserInputError(f"nilearn data file {path} is not on the MNI152 2009 grid of the others")
    return arrays, affine


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _intracranial(t1: np.ndarray, hu: TemplateHU) -> np.ndarray:
    brain = ndimage.binary_fill_holes(_largest_component(t1 > 0))
    # dilation by a ball of radius csf_rim_mm (exact: offsets with |d| <= r), far cheaper than a distance map
    r = int(np.floor(hu.csf_rim_mm))
    offsets = np.indices((2 * r + 1,) * 3) - r
    ball = (offsets**2).sum(axis=0) <= hu.csf_rim_mm**2
    return ndimage.binary_dilation(brain, structure=ball)


def _signed_distance(mask: np.ndarray, sigma_mm: float) -> np.ndarray:
    # positive outside, negative inside, zero on the boundary (half a voxel from the edge voxels' centres)
    outside = ndimage.distance_transform_edt(~mask).astype(np.float32)
    inside = ndimage.distance_transform_edt(mask).astype(np.float32)
    signed = np.where(mask, 0.5 - inside, outside - 0.5).astype(np.float32)
    # smoothing a distance field keeps it a distance near the boundary but removes the voxel staircase
    return ndimage.gaussian_filter(signed, sigma_mm, mode="nearest")


def _ramp(values: np.ndarray) -> np.ndarray:
    # fraction of a 1 mm voxel lying beyond a boundary at signed distance 0
    return np.clip(values + 0.5, 0.0, 1.0)


def _temporal_weight(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """0 over the vertex/frontal/occipital bone, 1 over the temporal squama (lateral, below the vertex)."""
    axes = [
        affine[a, a] * np.arange(n, dtype=np.float32) + affine[a, 3] - _HEAD_CENTRE_MM[a] for a, n in enumerate(shape)
    ]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    norm = np.sqrt(x * x + y * y + z * z) + 1e-6
    lateral = np.abs(x) / norm
    # the squama is lateral and sits below the level of the vertex; smooth limits avoid seams in the shell
    lateral_w = np.clip((lateral - 0.55) / 0.3, 0.0, 1.0)
    height_w = np.clip((40.0 - z) / 30.0, 0.0, 1.0) * np.clip((z + 50.0) / 20.0, 0.0, 1.0)
    return (lateral_w * height_w).astype(np.float32)


def _build(files: dict[str, Path], hu: TemplateHU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays, affine = _read_inputs(files)
    if not np.allclose(np.abs(np.diag(affine)[:3]), 1.0) or not np.allclose(
        affine[:3, :3], np.diag(np.diag(affine)[:3])
    ):
        raise UserInputError("nilearn's MNI152 maps are expected on an axis-aligned 1 mm grid; reinstall nilearn")
    intracranial = _intracranial(arrays["t1"], hu)
    gm, wm, csf = _tissue_probabilities(arrays["gm"], arrays["wm"], intracranial)

    depth = _signed_distance(intracranial, hu.edge_sigma_mm)
    temporal = _temporal_weight(intracranial.shape, affine)
    skull = hu.skull_mm + (hu.skull_temporal_mm - hu.skull_mm) * temporal
    table = np.clip(hu.table_fraction * skull, 1.0, 2.0)
    galea = hu.galea_mm + hu.temporalis_mm * temporal
    # outward boundaries of the layers, as distances from the intracranial boundary
    bounds = [
        (table, hu.cortical_bone),  # inner table
        (skull - table, hu.diploe),
        (skull, hu.cortical_bone),  # outer table
        (skull + galea, hu.soft_tissue),
        (skull + galea + hu.fat_mm, hu.fat),
        (skull + galea + hu.fat_mm + hu.skin_mm, hu.soft_tissue),
    ]
    # fraction of each voxel within a boundary = 1 - (fraction beyond it); a layer's share is the difference
    within = 1.0 - _ramp(depth)
    brain_hu = gm * hu.gray_matter + wm * hu.white_matter + csf * hu.csf
    # the smoothed boundary can put a sliver of "inside" just outside the mask: that sliver is CSF
    template = within * np.where(intracranial, brain_hu, hu.csf)
    for outer_mm, value in bounds:
        within_outer = 1.0 - _ramp(depth - outer_mm)
        template += (within_outer - within) * value
        within = within_outer
    template += (1.0 - within) * hu.air
    return template.astype(np.float32), affine, intracranial


def _tissue_probabilities(
    gm: np.ndarray, wm: np.ndarray, intracranial: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GM/WM zeroed outside the intracranial mask and renormalised where they sum above 1; CSF is the rest."""
    gm = np.where(intracranial, gm, 0.0).astype(np.float32)
    wm = np.where(intracranial, wm, 0.0).astype(np.float32)
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    # clip: float rounding leaves -6e-8 where gm + wm is exactly 1
    csf = np.where(intracranial, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)
    return gm, wm, csf


def _cached_files(folder: Path) -> dict[str, Path]:
    return {
        "template": folder / "template.nii.gz",
        "brain_mask": folder / "brain_mask.nii.gz",
        "manifest": folder / "manifest.json",
    }


def _cache_is_complete(folder: Path) -> bool:
    files = _cached_files(folder)
    if not all(p.is_file() for p in files.values()):
        return False
    try:
        manifest = json.loads(files["manifest"].read_text())
        return all(file_sha256(files[k]) == v for k, v in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _ensure_built() -> dict:
    """Build the template into the cache if needed; return (and memoise) the loaded images."""
    files = _input_files()
    key = _cache_key(files, TEMPLATE_HU)
    folder = cache_root() / "anatomy" / f"template-{key[:16]}"
    if str(folder) in _memo:
        return _memo[str(folder)]
    if not _cache_is_complete(folder):
        with _build_lock(folder.with_name(f".{folder.name}.lock")):
            if not _cache_is_complete(folder):
                _write_cache(folder, files, key)
    paths = _cached_files(folder)
    manifest = json.loads(paths["manifest"].read_text())
    template = nib.load(paths["template"])
    data = np.asarray(template.dataobj, dtype=np.float32)
    data.flags.writeable = False
    mask = np.asarray(nib.load(paths["brain_mask"]).dataobj).astype(bool)
    mask.flags.writeable = False
    entry = {
        "folder": folder,
        "affine": template.affine.copy(),
        "template": data,
        "brain_mask": mask,
        "identity": manifest["identity"],
        "files": files,
    }
    _memo[str(folder)] = entry
    return entry


def _write_cache(folder: Path, files: dict[str, Path], key: str) -> None:
    logger.info("building the CT brain template (once) into %s", folder)
    template, affine, intracranial = _build(files, TEMPLATE_HU)
    if folder.exists():  # an incomplete or damaged cache: replace it
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    try:
        with atomic_dir(folder, overwrite=False) as tmp:
            out = _cached_files(tmp)
            image = nib.Nifti1Image(template, affine)
            image.header.set_xyzt_units("mm")
            image.header["descrip"] = b"monai-stroke CT template (HU)"
            nib.save(image, out["template"])
            mask_image = nib.Nifti1Image(intracranial.astype(np.uint8), affine)
            mask_image.header.set_xyzt_units("mm")
            nib.save(mask_image, out["brain_mask"])
            write_json_atomic(
                out["manifest"],
                {
                    "recipe": RECIPE_VERSION,
                    "key": key,
                    "hu": asdict(TEMPLATE_HU),
                    "inputs": {name: path.name for name, path in files.items()},
                    # the identity of what a reader gets back from the file, so exported copies match it
                    "identity": image_identity(nib.load(out["template"])),
                    "files": {k: file_sha256(out[k]) for k in ("template", "brain_mask")},
                },
            )
    except OSError:
        # another process without the lock (e.g. on a file system without flock) finished first
        if not _cache_is_complete(folder):
            raise


def load_template() -> nib.Nifti1Image:
    """The CT brain template: float32 HU on the MNI152 2009 symmetric 1 mm grid (197 x 233 x 189), RAS affine.

    Built on first use and cached (see the module docstring). The returned image's array is shared and
    read-only; copy it (``np.array(img.dataobj)``) before modifying it.
    """
    entry = _ensure_built()
    return nib.Nifti1Image(entry["template"], entry["affine"])


def template_identity() -> str:
    """SHA-256 of the template's voxel values and affine (see :func:`image_identity`)."""
    return _ensure_built()["identity"]


def brain_mask() -> nib.Nifti1Image:
    """Intracranial mask (uint8 0/1) on the template grid: brain, CSF spaces and the 1.5 mm dural rim.

    Everything inside the inner table of the skull, i.e. what a skull-strip of a registered CT should
    give; use it for the Dice of brain masks in template space.
    """
    entry = _ensure_built()
    return nib.Nifti1Image(entry["brain_mask"].astype(np.uint8), entry["affine"])


def tissue_maps() -> dict[str, nib.Nifti1Image]:
    """Gray matter, white matter and CSF probabilities (float32, summing to 1 inside the intracranial mask).

    Returns:
        ``{"gm": ..., "wm": ..., "csf": ...}`` images on the template grid; all zero outside the intracranial
        mask (bone, scalp, air).
    """
    entry = _ensure_built()
    if "tissues" not in entry:
        arrays, _ = _read_inputs({k: entry["files"][k] for k in ("gm", "wm")})
        gm, wm, csf = _tissue_probabilities(arrays["gm"], arrays["wm"], entry["brain_mask"])
        for a in (gm, wm, csf):
            a.flags.writeable = False
        entry["tissues"] = {"gm": gm, "wm": wm, "csf": csf}
    return {name: nib.Nifti1Image(entry["tissues"][name], entry["affine"]) for name in TISSUES}
