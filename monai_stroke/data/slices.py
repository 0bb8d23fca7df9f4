"""Slice-level hemorrhage datasets: native axial slices with their RSNA labels, one sample per slice.

The hemorrhage network (METHOD.md, stages [1]-[2]) sees each slice of a series with its neighbours, through the
three hemorrhage windows. The transform chain is ``transforms/hemorrhage_slices.yaml``:

- ``preprocess`` (cached once per series): ingest (HU, true slice order), the image id of every output slice
  (:class:`SliceImageIdsd`), in-plane resize to ``spatial_size``.
- ``sample``: the target slice and ``neighbours`` slices on each side stacked into channels (paper fig. 4).
- ``augment`` (training only): HU-safe affine jitter and noise, the same for all stacked slices.
- ``finalize``: the windows (slice-major, window-minor channels: channel ``j * W + k`` is slice ``j`` through window
  ``k``), float32.

Labels: ``rsna_labels.csv`` is keyed by image id (the DICOM file name without ``.dcm``, or the SOPInstanceUID as in
the RSNA challenge; a leading ``ID_`` is optional). Each ingested slice gets the labels of the file it came from,
so the labels follow the slices in their ingested order (by position along the slice normal, never by file name
or InstanceNumber). Slices without labels (interpolated into a gap, or a file the labels do not list) are not
samples for training or evaluation but are predicted at inference.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_stroke.contract import Contract
from monai_stroke.data.cache import (
    CACHE_KEY,
    SampleDataset,
    check_splits,
    part_cache_key,
    prepare_patients,
    series_fingerprint,
    source_dataset,
)
from monai_stroke.data.recipe import Recipe, input_channels
from monai_stroke.errors import UserInputError
from monai_stroke.manifests import load_dataset
from monai_stroke.transforms.chains import chain_params, load_chain
from monai_stroke.transforms.intensity import parse_windows
from monai_stroke.vocabulary import HEMORRHAGE_LABELS

__all__ = [
    "HEMORRHAGE_CHAIN",
    "SLICE_IDS_KEY",
    "SliceImageIds",
    "SliceImageIdsd",
    "SliceDataset",
    "slice_datasets",
    "slice_chain_params",
    "slice_dataset_from_contract",
    "predict_slices",
]

logger = logging.getLogger(__name__)

#: The shared chain fragment of the hemorrhage network.
HEMORRHAGE_CHAIN = "hemorrhage_slices"
#: Key of the per-slice image ids in a cached patient.
SLICE_IDS_KEY = "slice_ids"
_DICOM_SUFFIXES = (".dcm", ".dicom")


def _strip_id(image_id: str) -> str:
    return image_id[3:] if image_id.startswith("ID_") else image_id


def _stem(name: str) -> str:
    for suffix in _DICOM_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class SliceImageIds:
    """The image id of every slice of an ingested series: ``"<file stem>|<SOPInstanceUID>"``, ``""`` if none.

    The ingest keeps, for each output slice, the file it came from and its SOPInstanceUID (``meta["slice_files"]``,
    ``meta["slice_uids"]``). Both are kept because label files key images by either. A NIfTI series, or a slice
    interpolated into a gap, has no image id.
    """

    def __call__(self, img: Any) -> list[str]:
        meta = getattr(img, "meta", {})
        n_slices = int(img.shape[-1])
        uids = list(meta.get("slice_uids") or [""] * n_slices)[:n_slices]
        files = list(meta.get("slice_files") or [""] * n_slices)[:n_slices]
        return [
            f"{_stem(Path(str(f)).name) if f else ''}|{u or ''}" if (f or u) else ""
            for f, u in zip(files, uids, strict=True)
        ]


class SliceImageIdsd(MapTransform):
    """Dictionary-based wrapper of :class:`SliceImageIds`: writes the ids under ``ids_key``.

    Args:
        keys: key of the ingested series (a MetaTensor from :class:`~monai_stroke.io.LoadCTSeriesd`).
        ids_key: where to write the list of image ids.
        allow_missing_keys: don't raise if a key is missing.
    """

    def __init__(self, keys: KeysCollection, ids_key: str = SLICE_IDS_KEY, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ids_key = ids_key
        self.finder = SliceImageIds()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.ids_key] = self.finder(d[key])
        return d


def _label_lookup(rsna_labels: pd.DataFrame | None) -> dict[str, np.ndarray]:
    if rsna_labels is None:
        return {}
    values = rsna_labels[list(HEMORRHAGE_LABELS)].to_numpy(dtype=np.float32)
    return {_strip_id(str(i)): v for i, v in zip(rsna_labels.index, values, strict=True)}


def _slice_labels(ids: Sequence[str], lookup: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((len(ids), len(HEMORRHAGE_LABELS)), dtype=np.float32)
    known = np.zeros(len(ids), dtype=bool)
    for z, image in enumerate(ids):
        if not image:
            continue
        for candidate in image.split("|"):
            hit = lookup.get(_strip_id(candidate)) if candidate else None
            if hit is not None:
                labels[z], known[z] = hit, True
                break
    return labels, known


class SliceDataset(SampleDataset):
    """One sample per slice: ``{"image": (1, X, Y, Z) HU volume, "slice_index": z, "label": (6,)}`` before the
    per-sample transform, which stacks the neighbours and windows them.

    Attributes:
        recipe: the pre-processing (for the checkpoint contract).
        table: one row per sample: ``sample_id, patient, patient_id, split, slice_index, image_id, labelled`` and
            the six labels ``label_any`` ... ``label_subdural`` (0/1; meaningless where ``labelled`` is False).
    """

    kind = "hemorrhage"

    def __init__(
        self,
        patients: Sequence[Mapping[str, Any]],
        table: pd.DataFrame,
        transform: Any,
        recipe: Recipe,
    ) -> None:
        super().__init__(patients, table, transform)
        self.recipe = recipe

    def make_sample(self, patient: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "image": patient["image"],
            "slice_index": int(row["slice_index"]),
            "label": self.labels[row["sample_id"]],
            "patient_id": row["patient_id"],
        }

    @property
    def output_names(self) -> list[str]:
        return list(HEMORRHAGE_LABELS)


def _patient_items(dataset: Any, patient_ids: Sequence[str], key: str) -> list[dict[str, Any]]:
    items = []
    for pid in patient_ids:
        path = dataset.series_path(pid)
        items.append(
            {
                "patient_id": pid,
                "image": str(path),
                CACHE_KEY: f"{key}:{series_fingerprint(path)}",
            }
        )
    return items


def _sample_table(patients: Sequence[Mapping[str, Any]], splits: Mapping[str, str], lookup, labelled_only: bool):
    rows = []
    for position, patient in enumerate(patients):
        ids = list(patient[SLICE_IDS_KEY])
        labels, known = _slice_labels(ids, lookup)
        for z in range(len(ids)):
            if labelled_only and not known[z]:
                continue
            row = {
                "patient": position,
                "patient_id": patient["patient_id"],
                "split": splits.get(patient["patient_id"], ""),
                "slice_index": z,
                "image_id": ids[z].split("|")[0] or ids[z],
                "labelled": bool(known[z]),
            }
            row.update({f"label_{n}": int(v) for n, v in zip(HEMORRHAGE_LABELS, labels[z], strict=True)})
            rows.append(row)
    columns = ["patient", "patient_id", "split", "slice_index", "image_id", "labelled"]
    return pd.DataFrame(rows, columns=[*columns, *(f"label_{n}" for n in HEMORRHAGE_LABELS)])


def _recipe(chain: str, params: Mapping[str, Any]) -> Recipe:
    windows = [list(w) for w in parse_windows(params["windows"])]
    return Recipe(
        kind="hemorrhage",
        chain=str(chain),
        chain_params=dict(params),
        output_names=list(HEMORRHAGE_LABELS),
        windows_hu=windows,
        window_output=str(params["window_output"]),
        neighbours=int(params["neighbours"]),
        spatial_size=[int(s) for s in params["spatial_size"]],
        in_channels=input_channels(params["windows"], params["neighbours"]),
    )


def slice_datasets(
    dataset_dir: str | os.PathLike,
    splits: Sequence[str] = ("train", "val", "test"),
    windows: Any = "hemorrhage",
    window_output: str = "float",
    neighbours: int = 1,
    spatial_size: Sequence[int] = (256, 256),
    augment: bool = True,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    chain: str | os.PathLike = HEMORRHAGE_CHAIN,
    **chain_overrides: Any,
) -> tuple[SliceDataset, ...]:
    """Labelled slice datasets of a dataset folder, one per split, from one pass over the per-series cache.

    Args:
        dataset_dir: a dataset folder (``cohort.csv`` with splits, ``rsna_labels.csv``, DICOM series).
        splits: the splits to return, in this order (patients of other splits are not loaded).
        windows: HU windows (default brain 40/80, subdural 80/200, bone 600/2800).
        window_output: ``"float"`` or ``"uint8"`` (the paper's 8-bit grey levels, rescaled to [0, 1]).
        neighbours: slices stacked on each side of the target (1 -> 3 slices, 9 channels with 3 windows).
        spatial_size: in-plane size the network sees.
        augment: augment the ``train`` split (never the others).
        cache_dir: persistent cache of the ingested series (None: memory only).
        num_workers: processes preparing series in parallel.
        chain: the transform chain (name or fragment path).
        chain_overrides: other parameters of the chain (e.g. ``image_key``).

    Raises:
        UserInputError: the folder is not a valid dataset or has no ``rsna_labels.csv``, a split has no patient,
            or no slice of a split matches a label.
    """
    dataset = load_dataset(dataset_dir)
    if dataset.rsna_labels is None:
        raise UserInputError(
            f"{dataset_dir} has no rsna_labels.csv; the hemorrhage network trains on per-slice RSNA labels "
            "(convert them with 'monai-stroke manifest rsna')"
        )
    check_splits(splits)
    params = slice_chain_params(chain, windows, window_output, neighbours, spatial_size, **chain_overrides)
    groups = {}
    for split in splits:
        groups[split] = dataset.split(split)
        if not groups[split]:
            raise UserInputError(f"split {split!r} of {dataset_dir}/cohort.csv has no patient; every split needs one")
    out = _build(dataset, groups, chain, params, augment, cache_dir, num_workers, labelled_only=True)
    for split, ds in zip(splits, out, strict=True):
        if len(ds) == 0:
            raise UserInputError(
                f"no slice of split {split!r} matches an image id of {dataset_dir}/rsna_labels.csv; check that the "
                "labels belong to these DICOM files (ids are file names without .dcm, or SOPInstanceUIDs)"
            )
        logger.info(
            "hemorrhage %s: %d slices of %d series (%d with hemorrhage)",
            split,
            len(ds),
            ds.table["patient_id"].nunique(),
            int(ds.table["label_any"].sum()),
        )
    return out


def slice_chain_params(
    chain: str | os.PathLike = HEMORRHAGE_CHAIN,
    windows: Any = "hemorrhage",
    window_output: str = "float",
    neighbours: int = 1,
    spatial_size: Sequence[int] = (256, 256),
    **chain_overrides: Any,
) -> dict[str, Any]:
    """The hemorrhage chain's parameters after overrides, windows as explicit ``[center, width]`` pairs."""
    return chain_params(
        chain,
        # explicit pairs: the contract must not depend on what a preset name means in a later version
        windows=[list(w) for w in parse_windows(windows)],
        window_output=window_output,
        neighbours=int(neighbours),
        spatial_size=[int(s) for s in spatial_size],
        **chain_overrides,
    )


def _build(
    dataset: Any,
    groups: Mapping[str, Sequence[str]],
    chain: str | os.PathLike,
    params: Mapping[str, Any],
    augment: bool,
    cache_dir: str | os.PathLike | None,
    num_workers: int,
    labelled_only: bool,
) -> tuple[SliceDataset, ...]:
    recipe = _recipe(str(chain), params)
    patient_ids = list(dict.fromkeys(pid for members in groups.values() for pid in members))
    key = part_cache_key(chain, "preprocess", params)
    patients = prepare_patients(
        _patient_items(dataset, patient_ids, key),
        load_chain(chain, "preprocess", **params),
        cache_dir=cache_dir,
        num_workers=num_workers,
        what="hemorrhage series",
    )
    split_of = dict(zip(dataset.cohort["patient_id"], dataset.cohort["split"], strict=True))
    table = _sample_table(patients, split_of, _label_lookup(dataset.rsna_labels), labelled_only)
    out = []
    for name, members in groups.items():
        rows = table.loc[table["patient_id"].isin(set(members))]
        parts = ["sample", "augment", "finalize"] if augment and name == "train" else ["sample", "finalize"]
        out.append(SliceDataset(patients, rows, load_chain(chain, parts, **params), recipe))
    return tuple(out)


def _contract_params(contract: Contract) -> dict[str, Any]:
    if contract.kind != "hemorrhage":
        raise UserInputError(f"a {contract.kind} checkpoint does not read hemorrhage slices")
    return dict(contract.chain_params)


def slice_dataset_from_contract(
    dataset_dir: str | os.PathLike,
    contract: Contract,
    split: str = "test",
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
) -> SliceDataset:
    """The labelled slices of one split, pre-processed as a hemorrhage checkpoint expects (no augmentation)."""
    params = _contract_params(contract)
    (out,) = slice_datasets(
        dataset_dir,
        splits=(split,),
        augment=False,
        cache_dir=cache_dir,
        num_workers=num_workers,
        chain=contract.chain,
        **params,
    )
    return out


def predict_slices(
    contract: Contract,
    dataset_dir: str | os.PathLike | None = None,
    series: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
) -> SliceDataset:
    """Every slice of every series of a dataset folder (all splits), or of one series, for inference.

    Labels are attached where ``rsna_labels.csv`` has them (columns ``label_*``, ``labelled``), but every slice is
    a sample.

    Args:
        contract: the hemorrhage checkpoint's contract (chain and parameters).
        dataset_dir: a dataset folder (``cohort.csv``); ignored when ``series`` is given.
        series: one DICOM folder or NIfTI file.
        cache_dir: persistent cache (dataset folders only).
        num_workers: processes preparing series in parallel.
    """
    params = _contract_params(contract)
    dataset = source_dataset(dataset_dir, series)
    groups = {"predict": dataset.patients}
    (out,) = _build(dataset, groups, contract.chain, params, False, cache_dir, num_workers, labelled_only=False)
    return out
