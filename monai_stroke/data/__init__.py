"""Datasets of the classification bundles: per-patient cached pre-processing, flattened into slice/crop samples.

- :func:`slice_datasets` - hemorrhage: one sample per labelled native slice (``transforms/hemorrhage_slices.yaml``).
- :func:`region_datasets` - ischemic: one sample per labelled region crop of a task (``transforms/ischemic_*.yaml``).

Both cache the deterministic per-patient part (ingest, registration, crops) once on disk
(:func:`prepare_patients`) and apply the cheap per-sample part (lesion concatenation, augmentation, window) to
every sample; see :mod:`monai_stroke.data.cache`.
"""

from __future__ import annotations

from monai_stroke.data.cache import (
    CACHE_KEY,
    SampleDataset,
    default_cache_dir,
    part_cache_key,
    prepare_patients,
    series_fingerprint,
    source_dataset,
)
from monai_stroke.data.from_contract import dataset_from_contract, prediction_dataset
from monai_stroke.data.recipe import Recipe, input_channels
from monai_stroke.data.regions import (
    ISCHEMIC_CHAIN,
    RegionDataset,
    atlas_of,
    predict_regions,
    region_chain_params,
    region_dataset_from_contract,
    region_datasets,
)
from monai_stroke.data.slices import (
    HEMORRHAGE_CHAIN,
    SLICE_IDS_KEY,
    SliceDataset,
    SliceImageIds,
    SliceImageIdsd,
    predict_slices,
    slice_chain_params,
    slice_dataset_from_contract,
    slice_datasets,
)

__all__ = [
    "CACHE_KEY",
    "SampleDataset",
    "default_cache_dir",
    "part_cache_key",
    "prepare_patients",
    "series_fingerprint",
    "source_dataset",
    "ISCHEMIC_CHAIN",
    "RegionDataset",
    "atlas_of",
    "predict_regions",
    "region_chain_params",
    "region_dataset_from_contract",
    "region_datasets",
    "Recipe",
    "input_channels",
    "HEMORRHAGE_CHAIN",
    "SLICE_IDS_KEY",
    "SliceDataset",
    "SliceImageIds",
    "SliceImageIdsd",
    "predict_slices",
    "slice_chain_params",
    "slice_dataset_from_contract",
    "slice_datasets",
    "dataset_from_contract",
    "prediction_dataset",
]
