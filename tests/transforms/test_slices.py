from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose, LoadImage

from monai_stroke.errors import UserInputError
from monai_stroke.transforms import HUWindowd, LesionConcat, LesionConcatd, SliceSamplesd

KINDS = ["numpy", "torch", "metatensor"]
AFFINE = np.array([[-0.5, 0, 0, 60], [0, 0.5, 0, -70], [0, 0, 5.0, -20], [0, 0, 0, 1]])


def _volume(n_channels: int = 2, n_slices: int = 5) -> np.ndarray:
    """value = 10 * z + c, so every output channel names its source slice and channel."""
    z = np.arange(n_slices, dtype=np.float32)
    vol = np.empty((n_channels, 3, 4, n_slices), dtype=np.float32)
    for c in range(n_channels):
        vol[c] = 10.0 * z + c
    return vol


def _as(kind: str, array: np.ndarray):
    if kind == "numpy":
        return array
    if kind == "torch":
        return torch.as_tensor(array)
    return MetaTensor(torch.as_tensor(array), affine=torch.as_tensor(AFFINE), meta={"series_uid": "1.2"})


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "neighbours, target, sources",
    [
        (1, 2, [1, 2, 3]),
        (1, 0, [0, 0, 1]),  # first slice: the edge is repeated below
        (1, 4, [3, 4, 4]),  # last slice: repeated above
        (2, 1, [0, 0, 1, 2, 3]),
        (0, 3, [3]),
    ],
)
def test_channel_order_is_slice_major_ascending_with_edge_repeat(kind, neighbours, target, sources) -> None:
    n_channels = 2
    out = LesionConcat(neighbours)(_as(kind, _volume(n_channels)), target)
    assert type(out) is type(_as(kind, _volume(n_channels)))
    assert out.shape == (n_channels * (2 * neighbours + 1), 3, 4)
    expected = [10.0 * z + c for z in sources for c in range(n_channels)]  # block j = slice, inside: channel c
    np.testing.assert_array_equal(_np(out)[:, 0, 0], expected)
    assert np.all(_np(out) == _np(out)[:, :1, :1])


def test_metatensor_affine_moves_to_the_target_slice() -> None:
    img = _as("metatensor", _volume())
    out = LesionConcat(1)(img, 3)
    assert isinstance(out, MetaTensor) and out.spatial_ndim == 2
    for i, j in [(0, 0), (2, 3)]:
        world_out = out.affine.numpy() @ np.array([i, j, 0, 1.0])
        world_in = AFFINE @ np.array([i, j, 3, 1.0])
        np.testing.assert_allclose(world_out, world_in)
    assert out.meta["series_uid"] == "1.2"
    assert out.meta["slice_index"] == 3
    assert out.meta["slice_indices"].tolist() == [2, 3, 4]
    assert "slice_index" not in img.meta


def test_volume_loaded_from_nifti_file(tmp_path) -> None:
    """A real file through MONAI's loader: the 2D sample's affine still points at the target slice in RAS."""
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(_volume(1, 6)[0], AFFINE), path)
    img = LoadImage(image_only=True, ensure_channel_first=True)(str(path))
    out = LesionConcat(1)(img, 5)
    np.testing.assert_array_equal(_np(out)[:, 1, 1], [40.0, 50.0, 50.0])
    np.testing.assert_allclose(out.affine.numpy() @ [0, 0, 0, 1.0], AFFINE @ [0, 0, 5, 1.0])


@pytest.mark.parametrize(
    "shape, target, neighbours, message",
    [
        ((1, 3, 4, 5), 5, 1, "outside the volume's 5 slices"),
        ((1, 3, 4, 5), -1, 1, "outside the volume's 5 slices"),
        ((3, 4, 5), 1, 1, "channel-first volume"),
        ((1, 3, 4, 5), 1.5, 1, "integer slice index"),
        ((1, 3, 4, 5), 1, -1, "non-negative integer"),
    ],
)
def test_bad_input_is_a_user_error(shape, target, neighbours, message) -> None:
    with pytest.raises(UserInputError, match=message):
        LesionConcat(neighbours)(np.zeros(shape, dtype=np.float32), target)


def test_dictionary_version_target_from_int_or_key() -> None:
    vol = _volume(1)
    mask = (_volume(1) > 20).astype(np.uint8)
    by_key = LesionConcatd(["image", "mask"], neighbours=1, target_slice="target")(
        {"image": vol, "mask": mask, "target": torch.tensor(3)}
    )
    np.testing.assert_array_equal(by_key["image"][:, 0, 0], [20.0, 30.0, 40.0])
    np.testing.assert_array_equal(by_key["mask"][:, 0, 0], [0, 1, 1])
    assert by_key["mask"].dtype == np.uint8
    by_int = LesionConcatd("image", neighbours=1, target_slice=1)({"image": vol})
    np.testing.assert_array_equal(by_int["image"][:, 0, 0], [0.0, 10.0, 20.0])
    with pytest.raises(UserInputError, match="no key 'missing'"):
        LesionConcatd("image", target_slice="missing")({"image": vol})


@pytest.mark.parametrize("kind", KINDS)
def test_slice_samples_one_per_slice_with_its_labels(kind: str) -> None:
    labels = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)  # (Z, K): RSNA any + 5 subtypes per slice
    samples = SliceSamplesd("image", neighbours=1, label_key="labels")(
        {"image": _as(kind, _volume(1)), "labels": labels, "patient": "p001"}
    )
    assert len(samples) == 5
    for z, sample in enumerate(samples):
        assert sample["slice_index"] == z
        np.testing.assert_array_equal(sample["labels"], labels[z])
        assert _np(sample["image"])[1, 0, 0] == 10.0 * z  # the middle block is the target slice
        assert sample["patient"] == "p001"
        if kind == "metatensor":
            assert sample["image"].meta["slice_index"] == z


def test_slice_samples_subset_from_key_and_binary_labels() -> None:
    samples = SliceSamplesd("image", neighbours=0, label_key="y", slice_indices="chosen")(
        {"image": _volume(1), "y": np.array([0, 1, 0, 1, 1]), "chosen": np.array([3, 1])}
    )
    assert [s["slice_index"] for s in samples] == [3, 1]
    assert [s["y"].tolist() for s in samples] == [[1], [1]]
    with pytest.raises(UserInputError, match=r"shape \(Z, K\) or \(Z,\) with Z = 5"):
        SliceSamplesd("image", label_key="y")({"image": _volume(1), "y": np.zeros((4, 6))})
    with pytest.raises(UserInputError, match="outside the volume"):
        SliceSamplesd("image", slice_indices=[7])({"image": _volume(1)})
    with pytest.raises(UserInputError, match="different numbers of slices"):
        SliceSamplesd(["image", "other"])({"image": _volume(1), "other": _volume(1, 4)})


def test_slice_samples_in_a_compose_then_batch() -> None:
    """Like MONAI's crop samplers: later transforms apply per sample, and the samples collate into a batch."""
    hu = _as("metatensor", _volume(1, n_slices=4) + 30.0)
    chain = Compose([SliceSamplesd("image", neighbours=1), HUWindowd("image", "hemorrhage")])
    samples = chain({"image": hu})
    assert len(samples) == 4 and samples[0]["image"].shape == (9, 3, 4)
    batch = list_data_collate(samples)
    assert batch["image"].shape == (4, 9, 3, 4)
    assert batch["slice_index"].tolist() == [0, 1, 2, 3]
    assert batch["image"].meta["slice_indices"].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    # channel layout slice-major then window: block 1 (target), window 0 (brain 40/80) of slice 2 is 50 HU
    np.testing.assert_allclose(_np(batch["image"])[2, 3, 0, 0], (50.0 - 0.0) / 80.0, atol=1e-6)
