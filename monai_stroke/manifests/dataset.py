"""A dataset folder, read and validated: what the bundles train and evaluate on.

The layout (written by ``monai-stroke synth``; real data is brought into it through the manifests)::

    DATASET/
      cohort.csv          patient_id, series_dir, split[, lesion_mask]   (paths relative to DATASET)
      regions.csv         patient_id, side, region, category             (optional: no region labels)
      rsna_labels.csv     RSNA ID,Label rows, image ids = DICOM file names without .dcm  (optional)
      <patient_id>/dicom/ the series
      <patient_id>/lesions.nii.gz

Example::

    ds = load_dataset("demo_data")
    train = ds.split("train")
    crops = ds.labelled_regions("early_vs_intact", split="train")   # one row per labelled (patient, side, region)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from monai_stroke.errors import UserInputError
from monai_stroke.manifests.rsna import build_rsna_slices
from monai_stroke.manifests.schemas import (
    REGIONS_COLUMNS,
    SPLITS,
    check_manifest_report,
    cross_check_regions,
    raise_for_problems,
    read_rsna_labels,
)
from monai_stroke.manifests.tasks import TaskDefinition, get_task
from monai_stroke.vocabulary import REGIONS, SIDES

__all__ = ["Dataset", "load_dataset", "COHORT_FILE", "REGIONS_FILE", "RSNA_LABELS_FILE"]

COHORT_FILE = "cohort.csv"
REGIONS_FILE = "regions.csv"
RSNA_LABELS_FILE = "rsna_labels.csv"


@dataclass
class Dataset:
    """Validated tables of one dataset folder.

    Args:
        root: the dataset folder; every path in the tables is relative to it.
        cohort: one row per patient (``patient_id, series_dir, split`` + optional/extra columns).
        regions: one row per labelled (patient, side, region); empty when the folder has no ``regions.csv``.
        rsna_labels: one row per image (index ``image_id``, the six 0/1 labels), or None without ``rsna_labels.csv``.
    """

    root: Path
    cohort: pd.DataFrame
    regions: pd.DataFrame
    rsna_labels: pd.DataFrame | None = None
    _rows: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self._rows = {pid: i for i, pid in enumerate(self.cohort["patient_id"])}

    @property
    def patients(self) -> list[str]:
        """All patient ids, in cohort order."""
        return list(self.cohort["patient_id"])

    def _row(self, patient_id: str) -> pd.Series:
        if patient_id not in self._rows:
            raise UserInputError(f"patient {patient_id!r} is not in {self.root / COHORT_FILE}")
        return self.cohort.iloc[self._rows[patient_id]]

    def split(self, name: str) -> list[str]:
        """Patient ids of one split (``train``, ``val`` or ``test``), in cohort order."""
        if name not in SPLITS:
            raise UserInputError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return list(self.cohort.loc[self.cohort["split"] == name, "patient_id"])

    def series_path(self, patient_id: str) -> Path:
        """The patient's DICOM folder or NIfTI file."""
        return self.root / self._row(patient_id)["series_dir"]

    def lesion_mask_path(self, patient_id: str) -> Path | None:
        """The patient's lesion label map, or None when the cohort gives none."""
        value = self._row(patient_id).get("lesion_mask", "")
        return self.root / value if isinstance(value, str) and value else None

    def labelled_regions(self, task: str | TaskDefinition, split: str | None = None) -> pd.DataFrame:
        """Every region that is part of ``task``, with its 0/1 label.

        Args:
            task: a task name (from the task definitions) or a :class:`TaskDefinition`.
            split: only patients of this split; None for all.

        Returns:
            Columns ``patient_id, split, side, region, category, label`` (label int), ordered by patient (cohort
            order), side (L, R) and region (ASPECTS order). Regions whose category the task leaves out are absent.
        """
        regions = self.regions
        if split is not None:
            regions = regions.loc[regions["patient_id"].isin(self.split(split))]
        return self._label(regions, get_task(task))

    def region_labels(self, patient_id: str, task: str | TaskDefinition) -> pd.DataFrame:
        """One patient's regions that are part of ``task``: columns ``side, region, category, label``."""
        self._row(patient_id)
        table = self._label(self.regions.loc[self.regions["patient_id"] == patient_id], get_task(task))
        return table[["side", "region", "category", "label"]]

    def _label(self, regions: pd.DataFrame, task: TaskDefinition) -> pd.DataFrame:
        out = regions.loc[regions["category"].isin(task.categories), ["patient_id", "side", "region", "category"]]
        out.insert(1, "split", out["patient_id"].map(self.cohort.set_index("patient_id")["split"]))
        out["label"] = out["category"].map(task.label_of).astype("int64")
        order = (
            out["patient_id"].map(self._rows) * 1000
            + out["side"].map({s: i for i, s in enumerate(SIDES)}) * 100
            + out["region"].map({r: i for i, r in enumerate(REGIONS)})
        )
        return out.iloc[order.to_numpy().argsort(kind="stable")].reset_index(drop=True)

    def slice_labels(self, workers: int = 1) -> pd.DataFrame:
        """Per-slice hemorrhage labels of the DICOM series, in slice order along the normal.

        Runs the RSNA converter over the patients' DICOM folders (headers only).

        Returns:
            The RSNA slice table (see :func:`monai_stroke.manifests.build_rsna_slices`; ``dicom_path`` relative to
            ``root``) with ``patient_id`` and ``split`` in front.
        """
        if self.rsna_labels is None:
            raise UserInputError(f"{self.root} has no {RSNA_LABELS_FILE}; slice labels need it")
        folders = [self.series_path(pid) for pid in self.patients if self.series_path(pid).is_dir()]
        if not folders:
            raise UserInputError(f"no patient of {self.root / COHORT_FILE} has a DICOM folder; slice labels need DICOM")
        table, _ = build_rsna_slices(self.rsna_labels, folders, relative_to=self.root, workers=workers)
        root = self.root.resolve()
        owner = {(root / sd).resolve(): pid for pid, sd in zip(self.patients, self.cohort["series_dir"], strict=True)}
        # dicom_path is relative to the resolved root, so joining it back gives the resolved file
        files = (Path(os.path.normpath(root / d)) for d in table["dicom_path"])
        patient = [next((owner[p] for p in f.parents if p in owner), None) for f in files]
        table.insert(0, "patient_id", patient)
        table.insert(1, "split", table["patient_id"].map(self.cohort.set_index("patient_id")["split"]))
        return table


def load_dataset(dataset_dir: str | os.PathLike, check_files: bool = True) -> Dataset:
    """Read and validate a dataset folder.

    Args:
        dataset_dir: the folder holding ``cohort.csv`` (and optionally ``regions.csv``, ``rsna_labels.csv``).
        check_files: check that every path in ``cohort.csv`` exists.

    Raises:
        UserInputError: the folder or ``cohort.csv`` is missing, a manifest is invalid, or ``regions.csv`` names a
            patient that is not in the cohort.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise UserInputError(f"dataset folder {root} does not exist; create one with 'monai-stroke synth --out {root}'")
    if not (root / COHORT_FILE).is_file():
        raise UserInputError(
            f"{root} has no {COHORT_FILE}; a dataset folder holds {COHORT_FILE} (+ {REGIONS_FILE}, {RSNA_LABELS_FILE}), "
            "see data_manifests/README.md"
        )
    cohort = check_manifest_report(root / COHORT_FILE, "cohort", check_files)
    if not cohort.ok:
        raise_for_problems(cohort.problems, cohort.file)
    if (root / REGIONS_FILE).exists():
        regions = check_manifest_report(root / REGIONS_FILE, "regions", check_files)
        if regions.ok:
            cross_check_regions(cohort, regions)
        if not regions.ok:
            raise_for_problems(regions.problems, regions.file)
        region_table = regions.frame.reset_index(drop=True)
    else:
        region_table = pd.DataFrame({c: pd.Series(dtype=str) for c in REGIONS_COLUMNS})
    labels = read_rsna_labels(root / RSNA_LABELS_FILE) if (root / RSNA_LABELS_FILE).exists() else None
    return Dataset(root, cohort.frame.reset_index(drop=True), region_table, labels)
