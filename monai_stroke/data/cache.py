"""The per-patient cache and the flattened sample datasets built on it.

Training a classifier on slices or region crops touches every patient many times: every epoch, and, in
the adaptive transfer learning search, every freeze depth. Ingesting a DICOM series and registering it to the
template take seconds; choosing a slice, stacking its neighbours, jittering and windowing it take
milliseconds. So the work is split in two:

1. **Per patient, deterministic, cached** (:func:`prepare_patients`): the ``preprocess`` part of a transform
   chain (ingest, registration, region crops in HU; or native slices resized in-plane) runs once per patient
   and is stored by MONAI's :class:`~monai.data.PersistentDataset` under ``cache_dir``. The cache key holds the
   part's own YAML text, the parameters it uses, the series' file listing (names, sizes, modification times),
   extra identities (template, atlas) and the patient id - not the dataset folder's location, so a moved or
   symlinked copy of a dataset keeps its cache. Runs that share the folder reuse each other's work, and only
   when it is the same work: another window or task does not invalidate region crops, another crop size does.
2. **Per sample, cheap, every time** (:class:`SampleDataset`): the cached patients are held in memory and
   flattened into one row per slice or crop; a sample picks its patient's cached tensors and runs the chain's
   per-sample parts (lesion concatenation, augmentation, task window). Samples of different patients are
   shuffled and batched together, like the paper's batches of 16 random crops.

Under ``torchrun`` every rank prepares its share of the patients, waits for the others, and then reads all of
them from the shared cache, so a series is ingested once per run, not once per rank.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from monai.data import Dataset as MonaiDataset
from monai.data import PersistentDataset
from monai.data.meta_obj import get_track_meta, set_track_meta
from monai.data.utils import pickle_hashing
from monai.transforms import Compose

from monai_stroke.errors import UserInputError
from monai_stroke.transforms.chains import chain_identity

__all__ = [
    "CACHE_KEY",
    "default_cache_dir",
    "check_splits",
    "source_dataset",
    "series_fingerprint",
    "part_cache_key",
    "prepare_patients",
    "SampleDataset",
]

logger = logging.getLogger(__name__)

#: Item key holding the cache key of a patient (part of what PersistentDataset hashes).
CACHE_KEY = "cache_key"


def default_cache_dir() -> Path:
    """The sample cache shared by all runs: ``$MONAI_STROKE_CACHE/samples`` (default ``~/.cache/monai-stroke``).

    Entries are content-addressed (see :func:`part_cache_key`), so one folder serves every dataset, bundle and
    run; delete it to reclaim the space.
    """
    from monai_stroke.anatomy.template import cache_root

    return cache_root() / "samples"


def series_fingerprint(path: str | os.PathLike) -> str:
    """A cheap identity of a series on disk: relative names, sizes and modification times of its files.

    A changed, added or removed file changes the fingerprint (and so invalidates the patient's cache entry)
    without reading any pixel data.

    Args:
        path: a DICOM folder (searched recursively) or a single file (NIfTI).
    """
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"series {path} does not exist; check series_dir in cohort.csv")
    entries = []
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        entries.append(f"{f.relative_to(path) if f != path else f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def part_cache_key(chain: str | os.PathLike, part: str, params: Mapping[str, Any], **identities: Any) -> str:
    """Hash of what a chain part computes (:func:`~monai_stroke.transforms.chains.chain_identity`: its YAML and the
    parameters it refers to) and of ``identities`` (template, atlas, ... whose files may change under one path).

    Parameters the part does not refer to (``@name``) are left out, so that e.g. the task window, used only by
    a later part, does not invalidate the cached region crops.

    Args:
        chain: chain name or fragment path.
        part: the cached part (normally ``preprocess``).
        params: the chain's parameters after overrides (:func:`~monai_stroke.transforms.chains.chain_params`).
        identities: more values the result depends on.
    """
    payload = {"part": chain_identity(chain, part, **params), "identities": identities}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def check_splits(splits: Sequence[str]) -> None:
    """Refuse a split list that is empty, a bare string or names a split twice (one dataset per split)."""
    if isinstance(splits, str) or not splits or len(set(splits)) != len(splits):
        raise UserInputError(f"splits must be distinct split names, e.g. ['train', 'val'], got {splits!r}")


def source_dataset(dataset_dir: str | os.PathLike | None = None, series: str | os.PathLike | None = None) -> Any:
    """What inference reads: a dataset folder (all its patients), or one series as a one-patient dataset.

    Args:
        dataset_dir: a dataset folder (``cohort.csv``); ignored when ``series`` is given.
        series: one DICOM folder or NIfTI file. Its id is the folder's name (of a NIfTI file, the name without
            suffix), or the parent folder's when the folder is called ``dicom`` (the ``<patient>/dicom`` layout).

    Returns:
        a :class:`monai_stroke.manifests.Dataset`.
    """
    import pandas as pd

    from monai_stroke.manifests import Dataset, load_dataset

    if series not in (None, ""):
        path = Path(series)
        if not path.exists():
            raise UserInputError(f"series {path} does not exist; give a DICOM folder or a NIfTI file")
        name = path.name
        for suffix in (".nii.gz", ".nii"):
            name = name[: -len(suffix)] if name.lower().endswith(suffix) else name
        if path.is_dir() and name.lower() == "dicom" and path.resolve().parent.name:
            name = path.resolve().parent.name
        cohort = pd.DataFrame({"patient_id": [name], "series_dir": [str(path.resolve())], "split": [""]})
        return Dataset(Path("/"), cohort, pd.DataFrame(columns=["patient_id", "side", "region", "category"]))
    if dataset_dir not in (None, ""):
        return load_dataset(dataset_dir)
    raise UserInputError("give a dataset folder (dataset_dir) or one series (series) to predict")


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@contextlib.contextmanager
def _lean_sample_context() -> Iterator[None]:
    # A sample is a few small tensors: intra-op threads only add synchronisation (10-20x slower per op on a busy
    # 2-core machine; DataLoader workers run single-threaded anyway), and MetaTensor bookkeeping costs more than
    # the arithmetic while the samples leave as plain tensors.
    threads, track = torch.get_num_threads(), get_track_meta()
    torch.set_num_threads(1)
    set_track_meta(False)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        set_track_meta(track)


def _cache_hash(item: Mapping[str, Any]) -> bytes:
    # What was computed (CACHE_KEY: chain part, parameters, series fingerprint) and for whom, not where the
    # dataset folder lies: a moved or symlinked dataset keeps its cache. Items without a key: MONAI's default.
    if CACHE_KEY in item:
        text = json.dumps([str(item[CACHE_KEY]), str(item.get("patient_id", ""))])
        return hashlib.sha256(text.encode()).hexdigest().encode()
    return pickle_hashing(item)


def _first(batch: list[Any]) -> Any:
    return batch[0]


def _run(dataset: torch.utils.data.Dataset, indices: Sequence[int], num_workers: int, what: str) -> dict[int, Any]:
    if not indices:
        return {}
    subset = torch.utils.data.Subset(dataset, list(indices))
    loader = torch.utils.data.DataLoader(
        subset, batch_size=1, shuffle=False, num_workers=min(num_workers, len(indices)), collate_fn=_first
    )
    out = {}
    for i, item in zip(indices, loader, strict=True):
        out[i] = item
    logger.debug("%s: %d patients ready", what, len(out))
    return out


def prepare_patients(
    items: Sequence[Mapping[str, Any]],
    transform: Callable,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
    what: str = "patients",
) -> list[Any]:
    """Run the deterministic per-patient transform over ``items`` once, through the disk cache when given.

    Args:
        items: one dict per patient (series path, ``patient_id``, :data:`CACHE_KEY`). With a :data:`CACHE_KEY`
            the cache entry is found by that key and the patient id alone, so the key must hold everything the
            result depends on (see :func:`part_cache_key`, :func:`series_fingerprint`); without one, by the
            whole item (MONAI's default).
        transform: the chain's deterministic part (no random transform: its result is stored).
        cache_dir: folder of the persistent cache (shared by runs on the same data), or None to keep the results
            in memory only.
        num_workers: DataLoader worker processes that prepare patients in parallel.
        what: name used in log messages.

    Returns:
        the transformed patients, in the order of ``items``; tensors are plain ``torch.Tensor`` (metadata that
        later steps need must be copied into ordinary keys by the transform).
    """
    items = [dict(i) for i in items]
    if cache_dir is not None:
        dataset: torch.utils.data.Dataset = PersistentDataset(
            items, transform=transform, cache_dir=cache_dir, hash_func=_cache_hash
        )
    else:
        # no cache: the same conversion to plain tensors as PersistentDataset, so both paths give the same types
        dataset = MonaiDataset(items, transform=Compose([transform, _strip_meta]))
    rank, world = _dist_info()
    if cache_dir is not None and world > 1:
        # each rank fills its share of the shared cache, then everyone reads everything from it
        _run(dataset, list(range(rank, len(items), world)), num_workers, what)
        torch.distributed.barrier()
    results = _run(dataset, list(range(len(items))), num_workers, what)
    return [results[i] for i in range(len(items))]


def _strip_meta(data: Mapping[str, Any]) -> dict[str, Any]:
    from monai.utils import convert_to_tensor

    return convert_to_tensor(dict(data), convert_numeric=False, track_meta=False)


class SampleDataset(torch.utils.data.Dataset):
    """Samples (slices, region crops) flattened out of cached patients, each through cheap per-sample transforms.

    Subclasses say how one row of :attr:`table` becomes a sample dict (:meth:`make_sample`). Every sample carries
    ``sample_id`` (its row in :attr:`table`), which evaluation uses to map predictions back to patients,
    slices and regions, also across ranks.

    Args:
        patients: the cached patients (see :func:`prepare_patients`).
        table: one row per sample; must have a ``patient`` column (position in ``patients``) and ``patient_id``.
        transform: per-sample transform (or None).
    """

    def __init__(
        self, patients: Sequence[Mapping[str, Any]], table: pd.DataFrame, transform: Callable | None = None
    ) -> None:
        missing = {"patient", "patient_id"} - set(table.columns)
        if missing:
            raise ValueError(f"sample table lacks column(s) {', '.join(sorted(missing))}")
        self.patients = list(patients)
        self.table = table.reset_index(drop=True)
        self.table.insert(0, "sample_id", range(len(self.table)))
        self.transform = transform
        self._rows = self.table.to_dict("records")

    def __len__(self) -> int:
        return len(self._rows)

    def make_sample(self, patient: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
        """The sample dict of ``row`` before the per-sample transform (override in subclasses)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Any:
        row = self._rows[index]
        sample = self.make_sample(self.patients[row["patient"]], row)
        sample["sample_id"] = int(row["sample_id"])
        if self.transform is None:
            return sample
        with _lean_sample_context():
            return self.transform(sample)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> SampleDataset:
        """Seed the per-sample transform (what MONAI's DataLoader calls with ``num_workers=0``).

        Defined here so that the DataLoader's seeding stops at the dataset instead of walking every cached
        tensor looking for random transforms.
        """
        if self.transform is not None and hasattr(self.transform, "set_random_state"):
            self.transform.set_random_state(seed=seed, state=state)
        return self

    @property
    def output_names(self) -> list[str]:
        """The names of the network outputs; the table has a ``label_<name>`` column for each (subclasses)."""
        raise NotImplementedError

    @functools.cached_property
    def labels(self) -> torch.Tensor:
        """Every sample's 0/1 labels ``(N, K)`` in sample order, from the table: no image is loaded."""
        columns = [f"label_{name}" for name in self.output_names]
        return torch.as_tensor(self.table[columns].to_numpy(dtype="float32"))

    @property
    def patient_ids(self) -> list[str]:
        """The patients that contribute samples, in order."""
        return list(dict.fromkeys(self.table["patient_id"]))
