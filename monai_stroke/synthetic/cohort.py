"""The built-in synthetic cohort: a dataset folder of DICOM series with lesion masks and manifests.

Layout written by :func:`make_cohort` (every path in the CSVs is relative to the dataset folder)::

    DIR/
      cohort.csv         patient_id, series_dir, lesion_mask, split, + profile, hemorrhage, early_ischemic,
                         old_infarction, n_lesions, n_slices, pixel_spacing_mm, tilt_deg, pose columns, noise_sd_hu
      regions.csv        patient_id, side, region, category        (20 rows per patient)
      lesion_codes.csv   code, kind, patient_id, side, region, contrast_hu, requested_contrast_hu, target_hu,
                         n_voxels, volume_ml, n_slices, slices
      rsna_labels.csv    ID, Label                                  (ID_<file stem>_<subtype>, 6 rows per slice)
      synth.json         generator, version, seed, size, settings, anatomy identity
      <patient_id>/dicom/ID_<10 hex>.dcm      the series (CT Image Storage)
      <patient_id>/lesions.nii.gz            uint16 lesion codes on the grid ingest returns for that series
      <patient_id>/spec.json                 every random choice (re-render with render_patient)

The folder is built next to ``DIR`` and renamed into place at the end, so it is complete or absent.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from monai_stroke import __version__
from monai_stroke.errors import UserInputError
from monai_stroke.manifests.dataset import COHORT_FILE, REGIONS_FILE, RSNA_LABELS_FILE
from monai_stroke.manifests.schemas import SPLITS
from monai_stroke.synthetic.dicom import write_ct_series
from monai_stroke.synthetic.head import HeadModel
from monai_stroke.synthetic.lesions import EARLY_ISCHEMIC_KINDS, HEMORRHAGE_KINDS, ISCHEMIC_KINDS
from monai_stroke.synthetic.patient import PROFILES, PatientSpec, SynthConfig, plan_patient
from monai_stroke.synthetic.render import default_head, render_patient
from monai_stroke.utils import atomic_dir, write_json_atomic
from monai_stroke.vocabulary import REGIONS, SIDES

__all__ = [
    "PROFILE_CYCLE",
    "EARLY_KIND_CYCLE",
    "SYNTH_MARKER",
    "LESION_CODES_FILE",
    "make_cohort",
    "plan_cohort",
    "split_sizes",
    "write_patient",
]

logger = logging.getLogger(__name__)

#: profiles dealt to each split in this order: any 3 consecutive patients of a split already hold intact,
#: early ischemic, old infarction and hemorrhage patients
PROFILE_CYCLE: tuple[str, ...] = (
    "intact",
    "early_old",
    "hemorrhage",
    "early",
    "old",
    "hemorrhage_early",
    "early",
    "intact",
    "early_old",
    "hemorrhage",
)
LESION_CODES_FILE = "lesion_codes.csv"
#: early ischemic kinds dealt to the early-lesion patients of each split in this order: the first one of a split
#: always carries an early ischemic *sign* (frank hypodensity or territorial infarction, the paper's positives)
EARLY_KIND_CYCLE: tuple[str, ...] = (
    "frank_hypodensity",
    "territorial_infarction",
    "recent_infarction",
    "scattered_infarction",
    "territorial_infarction",
    "frank_hypodensity",
)
#: file that marks a folder as a synthetic dataset (and lets --overwrite replace it)
SYNTH_MARKER = "synth.json"
# the RSNA labels file lists each image's subtypes in this order, "any" last, as the challenge's CSV does
_RSNA_ORDER: tuple[str, ...] = (*HEMORRHAGE_KINDS, "any")
_LESION_CODE_COLUMNS: tuple[str, ...] = (
    "code",
    "kind",
    "patient_id",
    "side",
    "region",
    "contrast_hu",
    "requested_contrast_hu",
    "target_hu",
    "n_voxels",
    "volume_ml",
    "n_slices",
    "slices",
)


def split_sizes(n_patients: int) -> dict[str, int]:
    """Patients per split: 60/20/20, but at least 3 in val and test once there are 9 patients.

    Three patients of :data:`PROFILE_CYCLE` cover intact, early ischemic, old infarction and hemorrhage,
    so from 9 patients up every split can train or measure every task.
    """
    if n_patients < 1:
        raise UserInputError(f"the number of patients must be at least 1, got {n_patients}")
    if n_patients >= 9:
        n_eval = max(3, int(round(0.2 * n_patients)))
    elif n_patients >= 3:
        n_eval = 1
    else:
        n_eval = 0
    return {"train": n_patients - 2 * n_eval, "val": n_eval, "test": n_eval}


def plan_cohort(
    n_patients: int, seed: int, config: SynthConfig | None = None, head: HeadModel | None = None
) -> list[tuple[PatientSpec, str]]:
    """Draw every patient of a cohort (no rendering).

    Args:
        n_patients: number of patients.
        seed: cohort seed; the same seed and settings give the same cohort.
        config: cohort settings (size, contrast ranges, ...).
        head: template anatomy; the default template and atlas when None.

    Returns:
        ``(spec, split)`` per patient, in patient-id order.
    """
    config = config or SynthConfig()
    head = default_head() if head is None else head
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    deal: list[tuple[str, str]] = []
    for split, size in split_sizes(n_patients).items():
        deal += [(split, PROFILE_CYCLE[i % len(PROFILE_CYCLE)]) for i in range(size)]
    order = rng.permutation(len(deal))
    deal = [deal[i] for i in order]
    n_tilt = int(round(config.tilt_fraction * n_patients))
    if config.tilt_fraction > 0 and n_patients >= 2:
        n_tilt = max(n_tilt, 1)
    tilted = set(rng.choice(n_patients, size=n_tilt, replace=False).tolist()) if n_tilt else set()
    bleeds = list(rng.permutation(HEMORRHAGE_KINDS))
    width = max(3, len(str(n_patients)))
    planned, code, n_bleed = [], 1, 0
    n_early = dict.fromkeys(SPLITS, 0)
    for index, (split, profile) in enumerate(deal):
        bleed_kind = early_kind = None
        if "hemorrhage" in PROFILES[profile]:
            bleed_kind = str(bleeds[n_bleed % len(bleeds)])
            n_bleed += 1
        if "early" in PROFILES[profile]:
            early_kind = EARLY_KIND_CYCLE[n_early[split] % len(EARLY_KIND_CYCLE)]
            n_early[split] += 1
        spec = plan_patient(
            patient_id=f"P{index + 1:0{width}d}",
            seed=[int(seed), index + 1],
            profile=profile,
            head=head,
            config=config,
            first_code=code,
            bleed_kind=bleed_kind,
            early_kind=early_kind,
            tilted=index in tilted,
        )
        code += len(spec.lesions)
        planned.append((spec, split))
    return planned


def write_patient(spec: PatientSpec, patient_dir: str | os.PathLike, head: HeadModel | None = None) -> dict:
    """Render one patient and write ``dicom/``, ``lesions.nii.gz`` and ``spec.json`` into ``patient_dir``.

    Returns:
        ``{"lesion_stats": [...], "slice_codes": [[codes on slice 0], ...]}`` for the manifests.
    """
    patient_dir = Path(patient_dir)
    rendered = render_patient(spec, head)
    write_ct_series(rendered.hu, spec, patient_dir / "dicom")
    image = nib.Nifti1Image(rendered.labels, rendered.affine)
    image.header.set_xyzt_units("mm")
    image.header["descrip"] = b"monai-stroke synthetic lesion codes"
    image.set_qform(rendered.affine, code=1)
    image.set_sform(rendered.affine, code=1)
    nib.save(image, patient_dir / "lesions.nii.gz")
    codes_per_slice = [
        sorted(int(c) for c in np.unique(rendered.labels[:, :, z]) if c) for z in range(rendered.labels.shape[2])
    ]
    record = {"spec": spec.to_dict(), "lesion_stats": rendered.lesion_stats}
    (patient_dir / "spec.json").write_text(json.dumps(record, indent=1) + "\n")
    return {"lesion_stats": rendered.lesion_stats, "slice_codes": codes_per_slice}


_WORKER_HEAD: HeadModel | None = None


def _init_worker(head: HeadModel) -> None:
    global _WORKER_HEAD
    _WORKER_HEAD = head


def _work(spec: PatientSpec, patient_dir: str) -> dict:
    return write_patient(spec, patient_dir, _WORKER_HEAD)


def _check_destination(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserInputError(f"cannot create {out_dir.parent} ({exc.strerror}); choose another --out") from exc
        if not os.access(out_dir.parent, os.W_OK):
            raise UserInputError(f"{out_dir.parent} is not writable; choose another --out")
        return
    if not out_dir.is_dir():
        raise UserInputError(f"{out_dir} exists and is not a folder; choose another --out")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise UserInputError(f"{out_dir} already exists and is not empty; choose another --out or pass --overwrite")
    if not (out_dir / SYNTH_MARKER).is_file():
        raise UserInputError(
            f"{out_dir} is not a synthetic dataset (no {SYNTH_MARKER}); --overwrite only replaces a folder that "
            "monai-stroke synth wrote. Choose another --out"
        )


def make_cohort(
    out_dir: str | os.PathLike,
    n_patients: int,
    seed: int = 0,
    size: str = "small",
    config: SynthConfig | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    head: HeadModel | None = None,
) -> Path:
    """Write a synthetic dataset folder (see the module docstring).

    Args:
        out_dir: the dataset folder to create.
        n_patients: number of patients (splits by patient, see :func:`split_sizes`).
        seed: cohort seed; same seed and settings give byte-identical files.
        size: ``"small"`` or ``"full"`` (ignored when ``config`` is given).
        config: full settings; ``SynthConfig(size=size)`` when None.
        workers: processes rendering patients in parallel (default: the CPUs available, at most 8).
        overwrite: replace an existing synthetic dataset at ``out_dir``.
        head: template anatomy; the default template and atlas when None.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    config = config or SynthConfig(size=size)
    split_sizes(n_patients)  # validates the count
    _check_destination(out_dir, overwrite)
    started = time.monotonic()
    head = default_head() if head is None else head
    planned = plan_cohort(n_patients, seed, config, head)
    # derived maps the workers share (fork) rather than each computing its own copy
    for spec, _ in planned:
        head.texture_field(spec.texture_mm)
    logger.debug("planned %d patients in %.1f s", n_patients, time.monotonic() - started)
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    workers = max(1, min(int(workers), n_patients))
    logger.info(
        "synthesising %d %s patients with %d worker%s into %s",
        n_patients,
        config.size,
        workers,
        "s" * (workers > 1),
        out_dir,
    )
    with atomic_dir(out_dir, overwrite=True) as tmp:
        results = _render_all(planned, tmp, head, workers)
        _write_manifests(tmp, planned, results, seed, config, head)
    logger.info("wrote %s in %.1f s", out_dir, time.monotonic() - started)
    return out_dir


def _render_all(planned, tmp: Path, head: HeadModel, workers: int) -> list[dict]:
    dirs = [str(tmp / spec.patient_id) for spec, _ in planned]
    if workers == 1:
        return [write_patient(spec, d, head) for (spec, _), d in zip(planned, dirs, strict=True)]
    # fork shares the loaded template with the workers instead of pickling it to each of them
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(head,)
    ) as pool:
        futures = [pool.submit(_work, spec, d) for (spec, _), d in zip(planned, dirs, strict=True)]
        return [f.result() for f in futures]


def _write_manifests(root: Path, planned, results: list[dict], seed: int, config: SynthConfig, head: HeadModel) -> None:
    cohort_rows, region_rows, code_rows, rsna_rows = [], [], [], []
    for (spec, split), result in zip(planned, results, strict=True):
        stats = {s["code"]: s for s in result["lesion_stats"]}
        visible = [les for les in spec.lesions if stats[les.code]["n_voxels"] > 0]
        for les in spec.lesions:
            if stats[les.code]["n_voxels"] == 0:
                logger.warning(
                    "%s: lesion %d (%s) fell outside the scanned slices; not labelled",
                    spec.patient_id,
                    les.code,
                    les.kind,
                )
        categories = {(les.side, les.region): les.kind for les in visible if les.kind in ISCHEMIC_KINDS and les.region}
        pose = spec.pose
        cohort_rows.append(
            {
                "patient_id": spec.patient_id,
                "series_dir": f"{spec.patient_id}/dicom",
                "lesion_mask": f"{spec.patient_id}/lesions.nii.gz",
                "split": split,
                "profile": spec.profile,
                "hemorrhage": int(any(les.hemorrhage for les in visible)),
                "early_ischemic": int(any(les.kind in EARLY_ISCHEMIC_KINDS for les in visible)),
                "old_infarction": int(any(les.kind == "old_infarction" for les in visible)),
                "n_lesions": len(visible),
                "n_slices": spec.scanner.n_slices,
                "pixel_spacing_mm": spec.scanner.pixel_spacing_mm,
                "tilt_deg": spec.scanner.tilt_deg,
                "rot_x_deg": pose.rotation_deg[0],
                "rot_y_deg": pose.rotation_deg[1],
                "rot_z_deg": pose.rotation_deg[2],
                "shift_x_mm": pose.head_center_world_mm[0],
                "shift_y_mm": pose.head_center_world_mm[1],
                "shift_z_mm": pose.head_center_world_mm[2],
                "noise_sd_hu": spec.noise_sd_hu,
            }
        )
        for side in SIDES:
            for region in REGIONS:
                region_rows.append(
                    {
                        "patient_id": spec.patient_id,
                        "side": side,
                        "region": region,
                        "category": categories.get((side, region), "intact"),
                    }
                )
        for les in spec.lesions:
            st = stats[les.code]
            code_rows.append(
                {
                    "code": les.code,
                    "kind": les.kind,
                    "patient_id": spec.patient_id,
                    "side": les.side,
                    "region": les.region,
                    "contrast_hu": st["contrast_hu"],
                    "requested_contrast_hu": "" if les.contrast_hu is None else les.contrast_hu,
                    "target_hu": "" if les.target_hu is None else les.target_hu,
                    "n_voxels": st["n_voxels"],
                    "volume_ml": st["volume_ml"],
                    "n_slices": len(st["slices"]),
                    "slices": " ".join(str(z) for z in st["slices"]),
                }
            )
        kind_of = {les.code: les.kind for les in spec.lesions}
        for stem, codes in zip(spec.file_stems, result["slice_codes"], strict=True):
            shown = {kind_of[c] for c in codes}
            present = {kind: int(kind in shown) for kind in HEMORRHAGE_KINDS}
            present["any"] = int(any(present.values()))
            rsna_rows += [{"ID": f"{stem}_{label}", "Label": present[label]} for label in _RSNA_ORDER]

    pd.DataFrame(cohort_rows).to_csv(root / COHORT_FILE, index=False)
    pd.DataFrame(region_rows).to_csv(root / REGIONS_FILE, index=False)
    pd.DataFrame(code_rows, columns=list(_LESION_CODE_COLUMNS)).to_csv(root / LESION_CODES_FILE, index=False)
    pd.DataFrame(rsna_rows).to_csv(root / RSNA_LABELS_FILE, index=False)
    write_json_atomic(
        root / SYNTH_MARKER,
        {
            "generator": "monai-stroke synth",
            "version": __version__,
            "seed": int(seed),
            "n_patients": len(planned),
            "settings": config.to_dict(),
            "anatomy_identity": head.identity,
        },
    )
