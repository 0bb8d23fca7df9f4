from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_stroke.errors import UserInputError
from monai_stroke.transforms import HUWindowd, train_augmentation

AFFINE = torch.diag(torch.tensor([0.5, 0.5, 5.0, 1.0], dtype=torch.float64))


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _run(chain: Compose, data: dict, seed: int) -> dict:
    chain.set_random_state(seed)
    return chain(data)


def _lesion_slice(size: int = 64) -> MetaTensor:
    """A 30 HU square with a 60 HU blob in the image's left half (x < size/2)."""
    img = torch.full((1, size, size), 30.0)
    img[0, 8:20, 26:38] = 60.0
    return MetaTensor(img, affine=AFFINE)


def test_same_seed_same_result_other_seed_differs() -> None:
    chain = train_augmentation("image", prob_affine=1.0, prob_noise=1.0)
    a = _run(chain, {"image": _lesion_slice()}, seed=7)["image"]
    b = _run(chain, {"image": _lesion_slice()}, seed=7)["image"]
    c = _run(chain, {"image": _lesion_slice()}, seed=8)["image"]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_never_flips_left_right() -> None:
    """Region crops carry a side: a left-half lesion must stay in the left half on every draw."""
    chain = train_augmentation("image", prob_affine=1.0, prob_noise=0.0, rotate_deg=15.0, scale_fraction=0.1)
    for seed in range(40):
        out = _np(_run(chain, {"image": _lesion_slice()}, seed)["image"])[0]
        x_centroid = np.nonzero(out > 45.0)[0].mean()
        assert x_centroid < 26.0, f"seed {seed}: lesion centroid moved to x = {x_centroid:.1f}"


def test_affine_keeps_uniform_hu_exactly() -> None:
    """Bilinear + border padding: no new HU values (zero padding would paint 0 HU, i.e. CSF-like, bands)."""
    chain = train_augmentation("image", prob_affine=1.0, prob_noise=0.0, rotate_deg=10.0, translate_voxels=8.0)
    img = MetaTensor(torch.full((1, 48, 48), 33.0), affine=AFFINE)
    for seed in range(5):
        np.testing.assert_allclose(_np(_run(chain, {"image": img}, seed)["image"]), 33.0, atol=1e-4)


@pytest.mark.parametrize("noise_std_hu", [0.5, 2.0])
def test_noise_is_zero_mean_and_at_most_the_requested_std(noise_std_hu: float) -> None:
    chain = train_augmentation("image", prob_affine=0.0, prob_noise=1.0, noise_std_hu=noise_std_hu)
    stds = []
    for seed in range(20):
        out = _np(_run(chain, {"image": MetaTensor(torch.full((1, 128, 128), 40.0))}, seed)["image"])
        assert abs(out.mean() - 40.0) < 0.05  # no intensity shift: HU is absolute
        stds.append(out.std())
    assert max(stds) <= noise_std_hu * 1.02
    assert np.mean(stds) == pytest.approx(noise_std_hu / 2, rel=0.35)  # std drawn uniformly in [0, max]


def test_masks_move_with_the_image_with_nearest_interpolation() -> None:
    chain = train_augmentation("image", mask_keys="mask", prob_affine=1.0, prob_noise=0.0)
    img = _lesion_slice()
    mask = MetaTensor((img.as_tensor() > 45).to(torch.uint8), affine=AFFINE)
    out = _run(chain, {"image": img, "mask": mask}, seed=3)
    assert set(np.unique(_np(out["mask"]))) <= {0, 1}
    moved_lesion = _np(out["image"])[0] > 45.0
    overlap = (moved_lesion & (_np(out["mask"])[0] > 0)).sum() / max(moved_lesion.sum(), 1)
    assert overlap > 0.8
    np.testing.assert_array_equal(_np(out["mask"])[0][~moved_lesion & (_np(out["image"])[0] < 35.0)], 0)


def test_3d_jitter_stays_in_plane() -> None:
    """Thick slices must not mix: a volume whose slices differ only along Z keeps each slice's HU."""
    vol = torch.zeros(1, 32, 32, 4)
    for z in range(4):
        vol[..., z] = 10.0 * z
    chain = train_augmentation("image", spatial_dims=3, prob_affine=1.0, prob_noise=0.0, rotate_deg=10.0)
    out = _np(_run(chain, {"image": MetaTensor(vol, affine=AFFINE)}, seed=5)["image"])
    for z in range(4):
        np.testing.assert_allclose(out[0, :, :, z], 10.0 * z, atol=1e-3)


def _user_error_in_chain(chain: Compose, data: dict) -> UserInputError:
    """MONAI's Compose wraps a transform's exception in RuntimeError; the UserInputError is its cause."""
    with pytest.raises(RuntimeError) as info:
        chain(data)
    cause = info.value.__cause__
    assert isinstance(cause, UserInputError)
    return cause


def test_refuses_windowed_or_8bit_input() -> None:
    windowed = HUWindowd("image", (40, 80))({"image": _lesion_slice()})
    error = _user_error_in_chain(train_augmentation("image"), windowed)
    assert "already windowed (40/80)" in str(error) and "before HUWindowd" in str(error)
    error = _user_error_in_chain(train_augmentation("image"), {"image": torch.zeros((1, 8, 8), dtype=torch.uint8)})
    assert "already windowed" in str(error)
    # HU input of any float dtype passes the check
    train_augmentation("image")({"image": _lesion_slice().to(torch.float64)})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"noise_std_hu": 5.0}, "noise_std_hu must be in"),
        ({"rotate_deg": 30.0}, "rotate_deg must be in"),
        ({"scale_fraction": 0.5}, "scale_fraction must be in"),
        ({"prob_noise": 1.5}, "prob_noise must be a probability"),
        ({"spatial_dims": 1}, "spatial_dims must be 2 or 3"),
    ],
)
def test_unsafe_parameters_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        train_augmentation("image", **kwargs)
