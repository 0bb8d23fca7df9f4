"""Region-crop ischemic datasets: per-hemisphere ASPECTS region crops of a binary task, one sample per crop.

The ischemic networks (METHOD.md, stages [3]-[4]) see one region of one hemisphere at a time. The transform
chain is ``transforms/ischemic_regions.yaml``:

- ``preprocess`` (cached once per patient, for every task): ingest, registration to the CT template, the crops of
  every (side, region) of the atlas in HU, ``(C, H, W, S)`` with ``S`` template slices.
- ``augment`` (training only): HU-safe in-plane jitter and noise, the same for all slices of a crop.
- ``finalize``: the task label, the task's window (40/20 early ischemic sign, 40/30 old infarction, from the task
  definition unless ``window`` overrides it), lesion concatenation of the target slice and its neighbours.

Labels come from ``regions.csv`` through the task definition: regions whose category the task leaves out are not
samples (e.g. old infarcts in ``early_vs_intact``). Splits are by patient (``cohort.csv``), so the crops of one
patient never straddle train and test.

Example (what the adaptive transfer learning search and the cascade reuse)::

    train, val, test = region_datasets("demo_data", "early_vs_intact", crop_size=(64, 64))
    batch = next(iter(DataLoader(train, batch_size=16, shuffle=True)))   # 16 random crops of many patients
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

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
from monai_stroke.manifests import get_task, load_dataset
from monai_stroke.transforms.chains import chain_params, load_chain

__all__ = [
    "ISCHEMIC_CHAIN",
    "RegionDataset",
    "region_datasets",
    "region_chain_params",
    "region_dataset_from_contract",
    "predict_regions",
    "atlas_of",
]

logger = logging.getLogger(__name__)

#: The shared chain fragment of the ischemic networks.
ISCHEMIC_CHAIN = "ischemic_regions"
_TABLE_COLUMNS = ["patient", "patient_id", "split", "side", "region", "region_index", "category", "labelled"]


def atlas_of(atlas: str | os.PathLike | None) -> Any:
    """The :class:`~monai_stroke.anatomy.Atlas` a chain's ``atlas`` parameter names (None: the built-in one)."""
    from monai_stroke.anatomy import Atlas

    return Atlas.default() if atlas in (None, "") else Atlas.from_dir(atlas)


class RegionDataset(SampleDataset):
    """One sample per region crop of a task: the cached crop ``(C, H, W, S)`` in HU with ``side``, ``region``,
    ``target_slice``, ``category`` and ``label`` ``(1,)``, before the per-sample transform (which labels,
    windows and stacks it).

    Attributes:
        recipe: the pre-processing (for the checkpoint contract).
        task: the task's name.
        table: one row per sample: ``sample_id, patient, patient_id, split, side, region, region_index, category,
            labelled, label_<task>``.
    """

    kind = "ischemic"

    def __init__(
        self, patients: Sequence[Sequence[Mapping[str, Any]]], table: pd.DataFrame, transform: Any, recipe: Recipe
    ) -> None:
        super().__init__(patients, table, transform)
        self.recipe = recipe
        self.task = str(recipe.task)

    def make_sample(self, patient: Sequence[Mapping[str, Any]], row: Mapping[str, Any]) -> dict[str, Any]:
        sample = dict(patient[row["region_index"]])  # shallow: the cached crop is not modified in place
        sample.pop(CACHE_KEY, None)
        sample["category"] = row["category"]
        sample["label"] = self.labels[row["sample_id"]]
        sample["patient_id"] = row["patient_id"]
        return sample

    @property
    def output_names(self) -> list[str]:
        return [self.task]


def region_chain_params(
    task: str = "early_vs_intact",
    window: Sequence[float] | None = None,
    window_output: str = "float",
    neighbours: int = 1,
    crop_size: Sequence[int] | None = (128, 128),
    contralateral: bool = False,
    chain: str | os.PathLike = ISCHEMIC_CHAIN,
    **chain_overrides: Any,
) -> dict[str, Any]:
    """The ischemic chain's parameters after overrides, with the task's window written out explicitly."""
    from monai_stroke.transforms import task_window

    tasks_file = chain_overrides.get("tasks_file")
    definition = get_task(task, tasks_file)
    # explicit: the contract must keep the window even if the task file changes later
    center, width = task_window(definition, window, tasks_file)
    return chain_params(
        chain,
        task=definition.name,
        window=[center, width],
        window_output=window_output,
        neighbours=int(neighbours),
        crop_size=None if crop_size is None else [int(s) for s in crop_size],
        contralateral=bool(contralateral),
        **chain_overrides,
    )


def _recipe(chain: str, params: Mapping[str, Any], atlas: Any) -> Recipe:
    crop = params["crop_size"]
    return Recipe(
        kind="ischemic",
        chain=str(chain),
        chain_params=dict(params),
        output_names=[str(params["task"])],
        windows_hu=[[float(v) for v in params["window"]]],
        window_output=str(params["window_output"]),
        neighbours=int(params["neighbours"]),
        spatial_size=[] if crop is None else [int(s) for s in crop],
        in_channels=input_channels([params["window"]], params["neighbours"], 2 if params["contralateral"] else 1),
        task=str(params["task"]),
        template_identity=atlas.template_identity,
        atlas_identity=atlas.identity,
    )


def _sample_table(
    patients: Sequence[Sequence[Mapping[str, Any]]],
    patient_ids: Sequence[str],
    dataset: Any,
    task: Any,
    labelled_only: bool,
) -> pd.DataFrame:
    split_of = dict(zip(dataset.cohort["patient_id"], dataset.cohort["split"], strict=True))
    categories = {(r.patient_id, r.side, r.region): r.category for r in dataset.regions.itertuples(index=False)}
    rows = []
    for position, (pid, regions) in enumerate(zip(patient_ids, patients, strict=True)):
        for index, region in enumerate(regions):
            category = categories.get((pid, region["side"], region["region"]), "")
            label = task.label_of(category) if category else None
            if labelled_only and label is None:
                continue
            rows.append(
                {
                    "patient": position,
                    "patient_id": pid,
                    "split": split_of.get(pid, ""),
                    "side": region["side"],
                    "region": region["region"],
                    "region_index": index,
                    "category": category,
                    "labelled": label is not None,
                    f"label_{task.name}": 0 if label is None else int(label),
                }
            )
    return pd.DataFrame(rows, columns=[*_TABLE_COLUMNS, f"label_{task.name}"])


def _build(
    dataset: Any,
    groups: Mapping[str, Sequence[str]],
    chain: str | os.PathLike,
    params: Mapping[str, Any],
    augment: bool,
    cache_dir: str | os.PathLike | None,
    num_workers: int,
    labelled_only: bool,
) -> tuple[RegionDataset, ...]:
    atlas = atlas_of(params.get("atlas"))
    recipe = _recipe(str(chain), params, atlas)
    task = get_task(params["task"], params.get("tasks_file"))
    key = part_cache_key(chain, "preprocess", params, atlas=atlas.identity)
    patient_ids = list(dict.fromkeys(pid for members in groups.values() for pid in members))
    # the cached item holds neither labels nor split: relabelling or resplitting reuses the crops
    items = [
        {
            "image": str(dataset.series_path(pid)),
            "patient_id": pid,
            CACHE_KEY: f"{key}:{series_fingerprint(dataset.series_path(pid))}",
        }
        for pid in patient_ids
    ]
    patients = prepare_patients(
        items, load_chain(chain, "preprocess", **params), cache_dir, num_workers, what="ischemic patients"
    )
    table = _sample_table(patients, patient_ids, dataset, task, labelled_only)
    out = []
    for name, members in groups.items():
        rows = table.loc[table["patient_id"].isin(set(members))]
        parts = ["augment", "finalize"] if augment and name == "train" else ["finalize"]
        out.append(RegionDataset(patients, rows, load_chain(chain, parts, **params), recipe))
    return tuple(out)


def region_datasets(
    dataset_dir: str | os.PathLike,
    task: str = "early_vs_intact",
    splits: Sequence[str] = ("train", "val", "test"),
    window: Sequence[float] | None = None,
    window_output: str = "float",
    neighbours: int = 1,
    crop_size: Sequence[int] | None = (128, 128),
    contralateral: bool = False,
    augment: bool = True,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    chain: str | os.PathLike = ISCHEMIC_CHAIN,
    **chain_overrides: Any,
) -> tuple[RegionDataset, ...]:
    """Labelled region-crop datasets of one task, one per split, from one pass over the per-patient cache.

    Registration and cropping run once per patient and are cached for every task, window and split (the
    adaptive transfer learning search calls this for each freeze depth and gets the crops back from the cache).

    Args:
        dataset_dir: a dataset folder (``cohort.csv`` with splits, ``regions.csv``, series).
        task: a task of the task definitions (``early_vs_intact``, ``old_vs_intact``, or a user's).
        splits: the splits to return, in this order.
        window: ``[center, width]`` HU overriding the task's window (a window sweep), or None.
        window_output: ``"float"`` or ``"uint8"`` (8-bit grey levels rescaled to [0, 1]).
        neighbours: template slices on each side of the target (1: the paper's 3-slice lesion concatenation).
        crop_size: in-plane crop size (the paper used 512 x 512).
        contralateral: add the mirrored contralateral crop as channels.
        augment: augment the ``train`` split (never the others).
        cache_dir: persistent cache of the crops (None: memory only).
        num_workers: processes preparing patients in parallel.
        chain: the transform chain (name or fragment path).
        chain_overrides: other chain parameters (``atlas``, ``template_spacing``, ``registration``, ``tasks_file``,
            ``margin_mm``, ``mask_outside``, augmentation probabilities, ...).

    Raises:
        UserInputError: invalid dataset folder or task, no ``regions.csv``, a split without patients or without a
            region of the task.
    """
    dataset = load_dataset(dataset_dir)
    if dataset.regions.empty:
        raise UserInputError(
            f"{dataset_dir} has no region labels (regions.csv); the ischemic networks train on per-region "
            "categories (see data_manifests/README.md)"
        )
    check_splits(splits)
    params = region_chain_params(
        task, window, window_output, neighbours, crop_size, contralateral, chain, **chain_overrides
    )
    groups = {}
    for split in splits:
        groups[split] = dataset.split(split)
        if not groups[split]:
            raise UserInputError(f"split {split!r} of {dataset_dir}/cohort.csv has no patient; every split needs one")
    out = _build(dataset, groups, chain, params, augment, cache_dir, num_workers, labelled_only=True)
    for split, ds in zip(splits, out, strict=True):
        if len(ds) == 0:
            raise UserInputError(
                f"split {split!r} of {dataset_dir} has no region of task {params['task']!r} (categories "
                f"{', '.join(get_task(params['task'], params.get('tasks_file')).categories)}) in regions.csv"
            )
        labels = ds.table[f"label_{params['task']}"]
        logger.info(
            "%s %s: %d region crops of %d patients (%d positive)",
            params["task"],
            split,
            len(ds),
            ds.table["patient_id"].nunique(),
            int(labels.sum()),
        )
    return out


def _contract_params(contract: Contract) -> dict[str, Any]:
    if contract.kind != "ischemic":
        raise UserInputError(f"a {contract.kind} checkpoint does not read region crops")
    params = dict(contract.chain_params)
    atlas = atlas_of(params.get("atlas"))
    if contract.atlas_identity and atlas.identity != contract.atlas_identity:
        raise UserInputError(
            f"the checkpoint was trained on atlas {contract.atlas_identity[:12]}.. but the atlas in use is "
            f"{atlas.identity[:12]}..; use the atlas it was trained with, or retrain"
        )
    return params


def region_dataset_from_contract(
    dataset_dir: str | os.PathLike,
    contract: Contract,
    split: str = "test",
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
) -> RegionDataset:
    """The labelled crops of one split, pre-processed as an ischemic checkpoint expects (no augmentation)."""
    params = _contract_params(contract)
    dataset = load_dataset(dataset_dir)
    members = dataset.split(split)
    if not members:
        raise UserInputError(f"split {split!r} of {dataset_dir}/cohort.csv has no patient")
    (out,) = _build(dataset, {split: members}, contract.chain, params, False, cache_dir, num_workers, True)
    if len(out) == 0:
        raise UserInputError(f"split {split!r} of {dataset_dir} has no region of task {params['task']!r}")
    return out


def predict_regions(
    contract: Contract,
    dataset_dir: str | os.PathLike | None = None,
    series: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
) -> RegionDataset:
    """Every region crop of every patient of a dataset folder (all splits), or of one series, for inference.

    Categories are attached where ``regions.csv`` has them, but every region is a sample.

    Args:
        contract: the ischemic checkpoint's contract.
        dataset_dir: a dataset folder; ignored when ``series`` is given.
        series: one DICOM folder or NIfTI file.
        cache_dir: persistent cache.
        num_workers: processes preparing patients in parallel.
    """
    params = {**_contract_params(contract), "drop_unlabelled": False}
    dataset = source_dataset(dataset_dir, series)
    groups = {"predict": dataset.patients}
    (out,) = _build(dataset, groups, contract.chain, params, False, cache_dir, num_workers, labelled_only=False)
    return out
