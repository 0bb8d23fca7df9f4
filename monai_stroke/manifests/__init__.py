"""Data manifests: CSV schemas and checks, task definitions, the RSNA converter, dataset folders.

See ``data_manifests/README.md`` for the schemas and ``docs/ARCHITECTURE.md`` for where they are used.
"""

from __future__ import annotations

from monai_stroke.manifests.dataset import Dataset, load_dataset
from monai_stroke.manifests.rsna import RsnaConversion, build_rsna_slices, convert_rsna
from monai_stroke.manifests.schemas import (
    COHORT_COLUMNS,
    MANIFEST_KINDS,
    REGIONS_COLUMNS,
    RSNA_LABELS_COLUMNS,
    RSNA_SLICES_COLUMNS,
    SPLITS,
    ManifestProblem,
    ManifestReport,
    check_manifest,
    check_manifest_report,
    check_manifests,
    detect_kind,
    read_cohort,
    read_regions,
    read_rsna_labels,
    read_rsna_slices,
)
from monai_stroke.manifests.tasks import TaskDefinition, get_task, load_tasks

__all__ = [
    "SPLITS",
    "COHORT_COLUMNS",
    "REGIONS_COLUMNS",
    "RSNA_SLICES_COLUMNS",
    "RSNA_LABELS_COLUMNS",
    "MANIFEST_KINDS",
    "ManifestProblem",
    "ManifestReport",
    "check_manifest",
    "check_manifest_report",
    "check_manifests",
    "detect_kind",
    "read_cohort",
    "read_regions",
    "read_rsna_slices",
    "read_rsna_labels",
    "TaskDefinition",
    "load_tasks",
    "get_task",
    "RsnaConversion",
    "build_rsna_slices",
    "convert_rsna",
    "Dataset",
    "load_dataset",
]
