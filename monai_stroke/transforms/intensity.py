"""HU windowing (paper eq. 1, with its typo fixed): Hounsfield units -> [0, 1] floats or the paper's 8-bit grey levels.

A window ``(center, width)`` in HU maps ``low = center - width / 2`` to 0 and ``high = center + width / 2`` to 1
(or 255), linearly in between, clipped outside. Several windows turn one HU channel into several channels,
the usual multi-window input of hemorrhage networks.

8-bit output is ``floor(255 * f + 0.5)`` of the float output ``f`` (round to nearest, halves up), computed in
float64 so that the result does not depend on the input's float precision. Quantisation matters for ischemia:
one grey level is ``width / 255`` HU, so at WW 2000 a 2 HU change (the size of early ischemic hypodensity) is a
quarter of a grey level and mostly vanishes, while at WW 20 it spans ~25 levels. That is why the paper's
ischemic windows are narrow (40/20, 40/30).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
from monai.config import KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_stroke.errors import UserInputError

__all__ = [
    "HU_WINDOW_PRESETS",
    "HU_WINDOW_GROUPS",
    "HEMORRHAGE_WINDOWS",
    "WINDOWS_META_KEY",
    "WindowSpec",
    "parse_windows",
    "HUWindow",
    "HUWindowd",
]

#: Named (center, width) windows in HU. brain/subdural/bone is the usual RSNA hemorrhage choice; the paper does
#: not state its own. The ischemic windows (40/30 old infarction, 40/20 early ischemic sign) are task data,
#: kept with the task definitions, not here.
HU_WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "bone": (600.0, 2800.0),
}
#: The hemorrhage network's three windows, in channel order.
HEMORRHAGE_WINDOWS: tuple[str, ...] = ("brain", "subdural", "bone")
#: Names that expand to several windows.
HU_WINDOW_GROUPS: dict[str, tuple[str, ...]] = {"hemorrhage": HEMORRHAGE_WINDOWS}
#: MetaTensor meta key where :class:`HUWindow` records the windows it applied (``"40/80,80/200"``); its presence
#: also tells later transforms that the data is no longer in HU.
WINDOWS_META_KEY = "hu_windows"

#: One window: a preset name, ``(center, width)``, or ``{"center": .., "width": ..}``; or a group name or a
#: sequence of windows.
WindowSpec = Union[str, Sequence[float], Mapping[str, float], Sequence[Any]]


def _one_window(spec: Any) -> tuple[float, float]:
    if isinstance(spec, str):
        if spec not in HU_WINDOW_PRESETS:
            names = ", ".join([*HU_WINDOW_PRESETS, *HU_WINDOW_GROUPS])
            raise UserInputError(f"unknown HU window {spec!r}; use one of {names} or a (center, width) pair in HU")
        return HU_WINDOW_PRESETS[spec]
    if isinstance(spec, Mapping):
        try:
            center, width = spec["center"], spec["width"]
        except KeyError as exc:
            raise UserInputError(f"HU window {dict(spec)!r} needs 'center' and 'width' (HU)") from exc
    else:
        try:
            center, width = spec
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"HU window {spec!r} is not a (center, width) pair in HU") from exc
    try:
        center, width = float(center), float(width)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"HU window {spec!r}: center and width must be numbers (HU)") from exc
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        raise UserInputError(f"HU window {spec!r}: width must be a positive finite number of HU, center finite")
    return center, width


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, bool)


def parse_windows(windows: WindowSpec) -> tuple[tuple[float, float], ...]:
    """Normalise a window specification to a tuple of ``(center, width)`` pairs in HU.

    Args:
        windows: ``"brain"``; ``"hemorrhage"`` (brain, subdural, bone); ``(40, 20)``; ``{"center": 40,
            "width": 20}``; or a sequence of any of these, e.g. ``["brain", (80, 200)]``.

    Raises:
        UserInputError: an unknown name, a malformed pair, or a width that is not positive.
    """
    if isinstance(windows, (np.ndarray, torch.Tensor)):
        windows = windows.tolist()
    if isinstance(windows, str) and windows in HU_WINDOW_GROUPS:
        return tuple(HU_WINDOW_PRESETS[n] for n in HU_WINDOW_GROUPS[windows])
    if isinstance(windows, (str, Mapping)):
        return (_one_window(windows),)
    if isinstance(windows, Sequence) and len(windows) == 2 and all(_is_number(x) for x in windows):
        return (_one_window(windows),)
    if isinstance(windows, Sequence) and len(windows) > 0:
        out: list[tuple[float, float]] = []
        for item in windows:
            out.extend(parse_windows(item) if isinstance(item, str) else (_one_window(item),))
        return tuple(out)
    raise UserInputError(f"no HU window in {windows!r}; give a preset name or (center, width) pairs in HU")


def _windows_from_args(center: Any, width: Any, windows: Any) -> tuple[tuple[float, float], ...]:
    if windows is not None:
        if center is not None or width is not None:
            raise UserInputError("give HU windows either as center/width or as windows=..., not both")
        return parse_windows(windows)
    if center is None:
        raise UserInputError("HUWindow needs a window: HUWindow(center, width) in HU, or windows=[(c, w), ...]")
    if width is None:
        return parse_windows(center)
    if isinstance(width, str):
        raise UserInputError(
            f"HU window width must be a number of HU, got {width!r}; pass output={width!r} as a keyword"
        )
    return parse_windows((center, width))


class HUWindow(Transform):
    """Window a channel-first HU image into one channel per (input channel, window).

    The output has ``C * K`` channels for ``C`` input channels and ``K`` windows, channel-major: output channel
    ``c * K + k`` is input channel ``c`` seen through window ``k`` (with one input channel, simply the windows in
    the order given). ``float`` output is float32 ``clip((HU - low) / width, 0, 1)``; ``uint8`` output is
    ``floor(255 * that + 0.5)`` as uint8, the paper's 8-bit images. The input may be numpy, torch or
    MetaTensor of any integer or float dtype, shape ``(C, *spatial)``; the output is of the same kind, a
    MetaTensor keeps its meta (affine unchanged) and records the windows under ``meta["hu_windows"]``.

    Args:
        center: window center in HU (``HUWindow(40, 20)``), or, with ``width`` left out, any window
            specification of :func:`parse_windows` (``HUWindow("hemorrhage")``, ``HUWindow([(40, 80), "bone"])``).
        width: window width in HU.
        output: ``"float"`` (in [0, 1]) or ``"uint8"`` (0..255).
        windows: keyword alternative to ``center``/``width`` for several windows (as in config files).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        center: float | WindowSpec | None = None,
        width: float | None = None,
        output: str = "float",
        windows: WindowSpec | None = None,
    ) -> None:
        self.windows = _windows_from_args(center, width, windows)
        if output not in ("float", "uint8"):
            raise UserInputError(f"HUWindow output must be 'float' or 'uint8', got {output!r}")
        self.output = output

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply the windows to ``img`` of shape ``(C, *spatial)`` in HU."""
        if img.ndim < 2:
            raise UserInputError(f"HUWindow expects a channel-first image (C, *spatial), got shape {tuple(img.shape)}")
        # float64 for 8-bit output so that a value exactly on a rounding boundary quantises the same everywhere
        work_dtype = torch.float64 if self.output == "uint8" else torch.float32
        hu = convert_to_tensor(img, dtype=work_dtype, track_meta=False)
        planes = [((hu - (c - w / 2.0)) / w).clamp_(0.0, 1.0) for c, w in self.windows]
        out = torch.stack(planes, dim=1).reshape(hu.shape[0] * len(self.windows), *hu.shape[1:])
        if self.output == "uint8":
            out = torch.floor(out * 255.0 + 0.5)
        out_dtype = torch.uint8 if self.output == "uint8" else torch.float32
        dst = img.as_tensor() if isinstance(img, MetaTensor) and not get_track_meta() else img
        result = convert_to_dst_type(out, dst=dst, dtype=out_dtype)[0]
        if isinstance(result, MetaTensor):
            result.meta[WINDOWS_META_KEY] = ",".join(f"{c:g}/{w:g}" for c, w in self.windows)
        return result


class HUWindowd(MapTransform):
    """Dictionary-based wrapper of :class:`HUWindow`.

    Args:
        keys: keys of the HU images to window.
        center: window center in HU, or a window specification (see :class:`HUWindow`).
        width: window width in HU.
        output: ``"float"`` or ``"uint8"``.
        windows: keyword alternative to ``center``/``width`` for several windows.
        allow_missing_keys: don't raise if a key is missing.
    """

    backend = HUWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        center: float | WindowSpec | None = None,
        width: float | None = None,
        output: str = "float",
        windows: WindowSpec | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.windower = HUWindow(center, width, output, windows)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.windower(d[key])
        return d
