"""Lesion concatenation: a target slice and its neighbours along Z stacked into channels (paper fig. 4).

A lesion or region spans up to 3 sequential 3-5 mm slices, and a radiologist reads a slice together with
those above and below. :class:`LesionConcat` turns a channel-first volume ``(C, X, Y, Z)`` into a 2D image
``(C * (2n + 1), X, Y)`` holding slices ``target - n .. target + n`` in ascending Z (inferior to superior after
ingest), slice-major: output channel ``j * C + c`` is input channel ``c`` of slice ``target - n + j``. At the
first and last slice the edge slice is repeated, so the target is always the middle block.

The same transform serves the hemorrhage network (native slices; the volume may already be windowed, giving
windows x slices channels) and the ischemic networks (a template-space slab of up to 3 slices per region).
:class:`SliceSamplesd` yields one such 2D sample per target slice, like MONAI's crop samplers, for slice-level
training and inference.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, Transform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import MetaKeys, TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_stroke.errors import UserInputError

__all__ = [
    "SLICE_INDEX_KEY",
    "SLICE_INDICES_META_KEY",
    "neighbour_indices",
    "LesionConcat",
    "LesionConcatd",
    "SliceSamplesd",
]

#: Default data key (and meta key) holding a sample's target slice index along Z.
SLICE_INDEX_KEY = "slice_index"
#: Meta key holding the source slice of each output block (edge-repeated indices included), a LongTensor.
SLICE_INDICES_META_KEY = "slice_indices"


def _as_index(value: Any, what: str) -> int:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        n_values = value.size if isinstance(value, np.ndarray) else value.numel()
        if n_values == 1:
            value = value.reshape(-1)[0].item()  # a float tensor becomes a float and is refused below
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserInputError(f"{what} must be an integer slice index, got {value!r}")
    return int(value)


def neighbour_indices(target_slice: int, n_slices: int, neighbours: int) -> list[int]:
    """Slice indices ``target - n .. target + n``, clamped to ``[0, n_slices - 1]`` (edge repetition).

    Args:
        target_slice: index of the target slice along Z.
        n_slices: number of slices along Z.
        neighbours: slices taken on each side.

    Raises:
        UserInputError: the target is outside the volume.
    """
    if not 0 <= target_slice < n_slices:
        raise UserInputError(
            f"target slice {target_slice} is outside the volume's {n_slices} slices (0..{n_slices - 1})"
        )
    return [min(max(z, 0), n_slices - 1) for z in range(target_slice - neighbours, target_slice + neighbours + 1)]


class LesionConcat(Transform):
    """Stack a target slice and its ``neighbours`` slices below and above into channels.

    ``(C, X, Y, Z)`` -> ``(C * (2n + 1), X, Y)``, slices in ascending Z, slice-major (output channel ``j * C + c``
    is channel ``c`` of slice ``target - n + j``); the edge slice is repeated at the first/last slice. numpy,
    torch and MetaTensor input give the same kind back. A MetaTensor keeps its meta with the affine moved to the
    target slice (voxel ``(i, j)`` of the output maps to the world position of voxel ``(i, j, target)``, as
    MONAI's ``SplitDim`` does), and gains ``meta["slice_index"]`` (the target) and ``meta["slice_indices"]``
    (the source slice of each block).

    Args:
        neighbours: slices taken on each side of the target (1 -> 3 slices, the paper's unit).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, neighbours: int = 1) -> None:
        if isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer)) or neighbours < 0:
            raise UserInputError(f"neighbours must be a non-negative integer, got {neighbours!r}")
        self.neighbours = int(neighbours)

    def __call__(self, img: NdarrayOrTensor, target_slice: int) -> NdarrayOrTensor:
        """Concatenate around ``target_slice`` of ``img`` (channel-first ``(C, X, Y, Z)``, Z the slice axis)."""
        if img.ndim != 4:
            raise UserInputError(
                f"LesionConcat expects a channel-first volume (C, X, Y, Z) with Z the slice axis, got shape "
                f"{tuple(img.shape)}"
            )
        target_slice = _as_index(target_slice, "target_slice")
        n_channels, n_slices = img.shape[0], img.shape[-1]
        indices = neighbour_indices(target_slice, n_slices, self.neighbours)
        volume = convert_to_tensor(img, track_meta=False)
        # (C, X, Y, S) -> (S, C, X, Y) -> (S*C, X, Y): slice-major blocks
        stack = volume[..., torch.as_tensor(indices, device=volume.device)].permute(3, 0, 1, 2)
        stack = stack.reshape(len(indices) * n_channels, *volume.shape[1:3]).contiguous()
        if isinstance(img, MetaTensor) and get_track_meta():
            shift = torch.eye(4, dtype=torch.float64)
            shift[2, 3] = float(target_slice)
            affine = convert_to_tensor(img.affine, dtype=torch.float64, track_meta=False) @ shift
            meta = dict(img.meta)
            meta.pop(MetaKeys.AFFINE, None)  # replaced by the target slice's affine below
            meta[SLICE_INDEX_KEY] = target_slice
            meta[SLICE_INDICES_META_KEY] = torch.as_tensor(indices, dtype=torch.long)
            out = MetaTensor(stack, affine=affine, meta=meta, applied_operations=list(img.applied_operations))
            return out
        dst = img.as_tensor() if isinstance(img, MetaTensor) else img
        return convert_to_dst_type(stack, dst=dst)[0]


def _target_from(data: Mapping[Hashable, Any], target_slice: int | str) -> int:
    if isinstance(target_slice, str):
        if target_slice not in data:
            raise UserInputError(f"no key {target_slice!r} holding the target slice index in the sample")
        return _as_index(data[target_slice], f"sample[{target_slice!r}]")
    return _as_index(target_slice, "target_slice")


class LesionConcatd(MapTransform):
    """Dictionary-based wrapper of :class:`LesionConcat`.

    Args:
        keys: keys of the volumes to concatenate (all around the same target slice).
        neighbours: slices taken on each side of the target.
        target_slice: the target slice index, or the name of a key in the sample that holds it.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = LesionConcat.backend

    def __init__(
        self,
        keys: KeysCollection,
        neighbours: int = 1,
        target_slice: int | str = SLICE_INDEX_KEY,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.concat = LesionConcat(neighbours)
        self.target_slice = target_slice

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        target = _target_from(d, self.target_slice)
        for key in self.key_iterator(d):
            d[key] = self.concat(d[key], target)
        return d


class SliceSamplesd(MapTransform, MultiSampleTrait):
    """One 2D sample per target slice of a volume: the lesion-concatenated image and that slice's label.

    Returns a list of dicts (MONAI's ``Compose`` applies the following transforms to each). In each sample the
    ``keys`` hold :class:`LesionConcat` output for that target, ``slice_index_key`` holds the target index (also
    in the MetaTensor meta), and, when ``label_key`` holds per-slice labels of shape ``(Z, K)`` (or ``(Z,)``),
    it holds that slice's labels of shape ``(K,)`` (or ``(1,)``). Other entries are shared by reference between
    the samples, not copied (a volume copied per slice would cost Z times its memory); don't modify them in place.

    Args:
        keys: keys of the volumes ``(C, X, Y, Z)``; all must have the same number of slices.
        neighbours: slices taken on each side of each target.
        label_key: optional key of the per-slice labels (e.g. RSNA's any + 5 subtypes per slice).
        slice_indices: target slices (default: every slice), or the name of a key holding them (e.g. the
            template slices a task uses).
        slice_index_key: key written into each sample with its target slice index.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = LesionConcat.backend

    def __init__(
        self,
        keys: KeysCollection,
        neighbours: int = 1,
        label_key: str | None = None,
        slice_indices: Sequence[int] | str | None = None,
        slice_index_key: str = SLICE_INDEX_KEY,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.concat = LesionConcat(neighbours)
        self.label_key = label_key
        self.slice_indices = slice_indices
        self.slice_index_key = slice_index_key

    def _targets(self, d: Mapping[Hashable, Any], n_slices: int) -> list[int]:
        spec = self.slice_indices
        if spec is None:
            return list(range(n_slices))
        if isinstance(spec, str):
            if spec not in d:
                raise UserInputError(f"no key {spec!r} holding the target slice indices in the sample")
            spec = d[spec]
        if isinstance(spec, (torch.Tensor, np.ndarray)):
            spec = spec.reshape(-1).tolist()
        targets = [_as_index(z, "slice index") for z in spec]
        for z in targets:
            neighbour_indices(z, n_slices, 0)  # range check with a clear message
        return targets

    def _labels(self, d: Mapping[Hashable, Any], n_slices: int) -> Any:
        labels = d[self.label_key]
        if isinstance(labels, MetaTensor):
            labels = labels.as_tensor()  # a label vector has no geometry
        elif not isinstance(labels, (torch.Tensor, np.ndarray)):
            labels = np.asarray(labels)
        if labels.ndim not in (1, 2) or labels.shape[0] != n_slices:
            raise UserInputError(
                f"per-slice labels {self.label_key!r} must have shape (Z, K) or (Z,) with Z = {n_slices} slices, "
                f"got {tuple(labels.shape)}"
            )
        return labels.reshape(n_slices, -1)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> list[dict[Hashable, NdarrayOrTensor]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]  # all keys missing and allowed: nothing to sample from
        n_slices = {d[k].shape[-1] for k in keys if hasattr(d[k], "shape")}
        if len(n_slices) != 1:
            raise UserInputError(f"volumes {keys} have different numbers of slices {sorted(n_slices)}")
        (z_total,) = n_slices
        labels = None
        if self.label_key is not None:
            if self.label_key in d:
                labels = self._labels(d, z_total)
            elif not self.allow_missing_keys:
                raise UserInputError(f"no per-slice labels under {self.label_key!r} in the sample")
        samples: list[dict[Hashable, NdarrayOrTensor]] = []
        for z in self._targets(d, z_total):
            sample = dict(d)
            for key in keys:
                sample[key] = self.concat(d[key], z)
            sample[self.slice_index_key] = z
            if labels is not None:
                sample[self.label_key] = labels[z]
            samples.append(sample)
        return samples
