from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from pydicom.data import get_testdata_file

from monai_stroke.errors import UserInputError
from monai_stroke.transforms import HU_WINDOW_PRESETS, HUWindow, HUWindowd, parse_windows

KINDS = ["numpy", "torch", "metatensor"]


def _as(kind: str, array: np.ndarray):
    if kind == "numpy":
        return array
    if kind == "torch":
        return torch.as_tensor(array)
    return MetaTensor(torch.as_tensor(array), affine=torch.diag(torch.tensor([0.5, 0.5, 5.0, 1.0])))


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _kind_of(x) -> str:
    return "metatensor" if isinstance(x, MetaTensor) else "torch" if isinstance(x, torch.Tensor) else "numpy"


HU_ROW = [-1000.0, 0.0, 20.0, 40.0, 60.0, 80.0, 3000.0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "window, output, expected",
    [
        ((40, 80), "float", [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
        ((40, 80), "uint8", [0, 0, 64, 128, 191, 255, 255]),  # 63.75 -> 64, 127.5 -> 128 (halves up), 191.25
        ((600, 2800), "float", [0.0, 0.8 / 2.8, 0.82 / 2.8, 0.84 / 2.8, 0.86 / 2.8, 0.88 / 2.8, 1.0]),
    ],
)
def test_window_exact_values_and_type(kind: str, window, output: str, expected) -> None:
    img = _as(kind, np.asarray(HU_ROW, dtype=np.float32).reshape(1, 1, 7))
    out = HUWindow(window, output=output)(img)
    assert _kind_of(out) == kind
    assert out.shape == (1, 1, 7)
    if output == "uint8":
        assert _np(out).dtype == np.uint8
        np.testing.assert_array_equal(_np(out)[0, 0], expected)
    else:
        assert _np(out).dtype == np.float32
        np.testing.assert_allclose(_np(out)[0, 0], expected, atol=1e-6)


def test_int16_input_is_windowed_like_float() -> None:
    hu = np.arange(-50, 150, dtype=np.int16).reshape(1, 10, 20)
    out_int = HUWindow((40, 80))(hu)
    out_float = HUWindow((40, 80))(hu.astype(np.float32))
    np.testing.assert_allclose(out_int, out_float)


def test_wide_window_loses_a_2hu_change_narrow_window_keeps_it() -> None:
    """The paper's 8-bit images: WW 2000 -> 2 HU is 0.255 grey levels, WW 20 -> 25.5 levels."""
    hu = np.arange(20.0, 60.0, 0.25, dtype=np.float32)
    pairs = np.stack([hu, hu + 2.0]).reshape(2, 1, -1)  # channel 0: HU, channel 1: HU + 2
    wide = HUWindow(40, 2000, "uint8")(pairs).astype(int)
    diff_wide = wide[1, 0] - wide[0, 0]
    assert set(np.unique(diff_wide)) <= {0, 1}
    assert np.mean(diff_wide == 0) > 0.7  # expected 1 - 0.255 = 0.745 of pairs share a grey level

    inside = (hu >= 30.0) & (hu + 2.0 <= 50.0)
    narrow = HUWindow(40, 20, "uint8")(pairs).astype(int)
    diff_narrow = (narrow[1, 0] - narrow[0, 0])[inside]
    assert set(np.unique(diff_narrow)) <= {25, 26}
    # pinned: 30 and 32 HU at 40/2000 are 126.225 -> 126 and 126.48 -> 126; at 40/20 they are 0 and 25.5 -> 26
    pinned = np.asarray([30.0, 32.0], dtype=np.float32).reshape(1, 1, 2)
    np.testing.assert_array_equal(HUWindow(40, 2000, "uint8")(pinned)[0, 0], [126, 126])
    np.testing.assert_array_equal(HUWindow(40, 20, "uint8")(pinned)[0, 0], [0, 26])


@pytest.mark.parametrize("kind", KINDS)
def test_several_windows_are_channel_major(kind: str) -> None:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-200, 1500, size=(2, 6, 5, 3)).astype(np.float32)
    windows = [(40, 80), (80, 200), (600, 2800)]
    out = _np(HUWindow(windows)(_as(kind, hu)))
    assert out.shape == (6, 6, 5, 3)
    for c in range(2):
        for k, window in enumerate(windows):
            np.testing.assert_allclose(out[c * 3 + k], HUWindow(window)(hu[c : c + 1])[0], atol=1e-6)


def test_presets_and_group_order() -> None:
    assert parse_windows("hemorrhage") == ((40.0, 80.0), (80.0, 200.0), (600.0, 2800.0))
    assert parse_windows(["bone", (40, 20), {"center": 40, "width": 30}]) == (
        HU_WINDOW_PRESETS["bone"],
        (40.0, 20.0),
        (40.0, 30.0),
    )
    assert parse_windows([40, 20]) == ((40.0, 20.0),)  # a YAML list [40, 20] is one window
    assert parse_windows(np.array([[40, 20], [40, 30]])) == ((40.0, 20.0), (40.0, 30.0))
    hu = np.asarray([[[0.0, 40.0, 100.0]]], dtype=np.float32)
    out = HUWindow("hemorrhage")(hu)
    np.testing.assert_allclose(out[:, 0, 1], [0.5, (40 - (80 - 100)) / 200, (40 - (600 - 1400)) / 2800], atol=1e-6)


def test_metatensor_keeps_meta_and_records_windows() -> None:
    affine = torch.tensor([[-0.5, 0, 0, 90], [0, 0.5, 0, -100], [0, 0, 5, -30], [0, 0, 0, 1]], dtype=torch.float64)
    img = MetaTensor(torch.zeros(1, 4, 4, 3), affine=affine, meta={"series_uid": "1.2.3", "tilt_deg": 0.0})
    out = HUWindow("hemorrhage", output="uint8")(img)
    assert isinstance(out, MetaTensor)
    assert torch.equal(out.affine, affine)
    assert out.meta["series_uid"] == "1.2.3"
    assert out.meta["hu_windows"] == "40/80,80/200,600/2800"
    assert "hu_windows" not in img.meta  # the input is not modified


@pytest.mark.parametrize(
    "windows, output, message",
    [
        ((40, 0), "float", "width must be a positive"),
        ((40, -20), "float", "width must be a positive"),
        ("lung", "float", "unknown HU window 'lung'"),
        ([(40, 20, 3)], "float", "not a (center, width) pair"),
        ((40, 20), "int8", "output must be 'float' or 'uint8'"),
        ([], "float", "no HU window"),
        ((40, 20), 20, "output must be 'float' or 'uint8'"),
    ],
)
def test_bad_window_specs_are_user_errors(windows, output: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        HUWindow(windows, output=output)


def test_center_width_form_equals_pair_and_keyword_forms() -> None:
    hu = np.linspace(-50, 150, 41, dtype=np.float32).reshape(1, 41)
    expected = HUWindow(windows=(40, 20), output="uint8")(hu)
    np.testing.assert_array_equal(HUWindow(40, 20, "uint8")(hu), expected)
    np.testing.assert_array_equal(HUWindow((40, 20), output="uint8")(hu), expected)
    with pytest.raises(UserInputError, match="not both"):
        HUWindow(40, 20, windows=(40, 20))
    with pytest.raises(UserInputError, match="pass output='uint8' as a keyword"):
        HUWindow((40, 20), "uint8")


def test_dictionary_version_windows_each_key_and_allows_missing() -> None:
    data = {"ct": np.full((1, 2, 2), 40.0, dtype=np.float32), "other": np.full((1, 2, 2), 80.0, dtype=np.float32)}
    out = HUWindowd(["ct", "other", "absent"], (40, 80), allow_missing_keys=True)(data)
    np.testing.assert_allclose(out["ct"], 0.5)
    np.testing.assert_allclose(out["other"], 1.0)
    with pytest.raises(KeyError):
        HUWindowd(["ct", "absent"], (40, 80))(data)


def test_real_ct_dicom_matches_reference_formula() -> None:
    """pydicom's CT sample: stored value -> HU -> brain window, against the paper's formula done by hand."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    img = MetaTensor(torch.as_tensor(hu)[None, :, :, None])
    out = HUWindow(40, 80, "uint8")(img)
    low, high = 0.0, 80.0
    reference = np.where(hu <= low, 0, np.where(hu >= high, 255, np.floor((hu - low) / 80.0 * 255.0 + 0.5)))
    np.testing.assert_array_equal(_np(out)[0, :, :, 0], reference.astype(np.uint8))
    assert np.mean((_np(out) > 0) & (_np(out) < 255)) > 0  # the sample has voxels inside the window
