"""Datasets pre-processed exactly as a checkpoint's contract says (evaluation and inference)."""

from __future__ import annotations

import os

from monai_stroke.contract import Contract
from monai_stroke.data.cache import SampleDataset
from monai_stroke.errors import UserInputError

__all__ = ["dataset_from_contract", "prediction_dataset"]


def dataset_from_contract(
    dataset_dir: str | os.PathLike,
    contract: Contract,
    split: str = "test",
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
) -> SampleDataset:
    """The labelled samples of one split of a dataset folder, as the checkpoint's contract pre-processes them.

    Args:
        dataset_dir: a dataset folder.
        contract: the checkpoint's contract (kind, chain, chain parameters, task).
        split: ``train``, ``val`` or ``test``.
        cache_dir: the persistent sample cache.
        num_workers: processes preparing patients in parallel.
    """
    if contract.kind == "hemorrhage":
        from monai_stroke.data.slices import slice_dataset_from_contract

        return slice_dataset_from_contract(dataset_dir, contract, split, cache_dir, num_workers)
    if contract.kind == "ischemic":
        from monai_stroke.data.regions import region_dataset_from_contract

        return region_dataset_from_contract(dataset_dir, contract, split, cache_dir, num_workers)
    raise UserInputError(f"no dataset for checkpoints of kind {contract.kind!r}")


def prediction_dataset(
    contract: Contract,
    dataset_dir: str | os.PathLike | None = None,
    series: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
) -> SampleDataset:
    """Every sample of every patient of a dataset folder, or of one series, for inference with a checkpoint.

    Args:
        contract: the checkpoint's contract.
        dataset_dir: a dataset folder (all splits); ignored when ``series`` is given.
        series: one DICOM folder or NIfTI file.
        cache_dir: the persistent sample cache (dataset folders only).
        num_workers: processes preparing patients in parallel.
    """
    if contract.kind == "hemorrhage":
        from monai_stroke.data.slices import predict_slices

        return predict_slices(contract, dataset_dir, series, cache_dir, num_workers)
    if contract.kind == "ischemic":
        from monai_stroke.data.regions import predict_regions

        return predict_regions(contract, dataset_dir, series, cache_dir, num_workers)
    raise UserInputError(f"no dataset for checkpoints of kind {contract.kind!r}")
