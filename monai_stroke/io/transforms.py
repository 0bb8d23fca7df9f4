"""MONAI transforms that load a CT series (DICOM folder or NIfTI file) as a channel-first ``MetaTensor``.

They follow :class:`monai.transforms.LoadImage` / :class:`monai.transforms.LoadImaged`: the array version maps a
path to a ``MetaTensor`` ``(1, X, Y, Z)`` of float32 HU; the dictionary version wraps it. The metadata carries what
later transforms need: ``affine`` (RAS, torch float64), ``original_affine``, ``spatial_shape``, ``filename_or_obj``,
``series_uid``, ``tilt_deg``, ``spacing``, ``slice_uids``, ``slice_files`` - and never patient name, ID or birth
date.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ImageMetaKey, TransformBackends
from monai.utils.enums import MetaKeys, SpaceKeys

from monai_stroke.io.volume import CTVolume, load_ct_series

__all__ = ["LoadCTSeries", "LoadCTSeriesd", "LoadCTSeriesD", "LoadCTSeriesDict", "volume_to_metatensor"]

# summary fields copied into the metadata (scalars and short lists that collate across a batch)
_META_FIELDS = ("series_uid", "tilt_deg", "n_slices", "hu_min", "hu_max", "format")


def volume_to_metatensor(volume: CTVolume, dtype: DtypeLike = np.float32) -> MetaTensor:
    """A :class:`CTVolume` as a channel-first ``MetaTensor`` ``(1, X, Y, Z)`` with its geometry in ``meta``."""
    affine = torch.as_tensor(volume.affine, dtype=torch.float64)
    meta: dict[str, Any] = {
        MetaKeys.AFFINE: affine,
        MetaKeys.ORIGINAL_AFFINE: affine.clone(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(volume.array.shape),
        MetaKeys.ORIGINAL_CHANNEL_DIM: 0,
        MetaKeys.SPACE: SpaceKeys.RAS,
        ImageMetaKey.FILENAME_OR_OBJ: str(volume.summary.get("source", "")),
        "spacing": np.asarray(volume.spacing),
        "slice_uids": list(volume.slice_uids) if volume.slice_uids is not None else None,
        "slice_files": list(volume.slice_files) if volume.slice_files is not None else None,
    }
    meta.update({key: volume.summary.get(key) for key in _META_FIELDS})
    array = np.asarray(volume.array, dtype=dtype)[None]
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), meta=meta)


class LoadCTSeries(Transform):
    """Load a head CT (DICOM folder or NIfTI file) as a ``MetaTensor`` ``(1, X, Y, Z)`` of HU.

    Args:
        series_uid: SeriesInstanceUID to read when a folder holds several CT series (can also be given per call).
        dtype: output dtype (float32 HU by default).
        options: passed to :func:`monai_stroke.io.load_ct_series` (``allow_gaps``, ``correct_tilt``, ...).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, series_uid: str | None = None, dtype: DtypeLike = np.float32, **options: Any) -> None:
        self.series_uid = series_uid
        self.dtype = dtype
        self.options = options

    def __call__(self, path: str | os.PathLike, series_uid: str | None = None) -> MetaTensor:
        """Load ``path``; ``series_uid`` overrides the one given at construction."""
        volume = load_ct_series(path, series_uid=series_uid or self.series_uid, **self.options)
        return volume_to_metatensor(volume, self.dtype)


class LoadCTSeriesd(MapTransform):
    """Dictionary-based wrapper of :class:`LoadCTSeries`: replaces each key's path by the loaded ``MetaTensor``.

    Args:
        keys: keys of the paths to load.
        series_uid: SeriesInstanceUID for every key (see ``series_uid_key`` for one per data dictionary).
        series_uid_key: a key of the data dictionary that holds the SeriesInstanceUID to read (e.g. a manifest
            column); it takes precedence over ``series_uid`` when present and not empty.
        dtype: output dtype.
        allow_missing_keys: don't raise if a key is missing.
        options: passed to :func:`monai_stroke.io.load_ct_series`.
    """

    backend = LoadCTSeries.backend

    def __init__(
        self,
        keys: KeysCollection,
        series_uid: str | None = None,
        series_uid_key: str | None = None,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self._loader = LoadCTSeries(series_uid=series_uid, dtype=dtype, **options)
        self.series_uid_key = series_uid_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        series_uid = d.get(self.series_uid_key) if self.series_uid_key is not None else None
        for key in self.key_iterator(d):
            d[key] = self._loader(d[key], series_uid=series_uid or None)
        return d


LoadCTSeriesD = LoadCTSeriesDict = LoadCTSeriesd
