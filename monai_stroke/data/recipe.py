"""What a dataset's pre-processing is, in the terms a checkpoint's :class:`~monai_stroke.contract.Contract` records."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from monai_stroke.transforms.intensity import parse_windows

__all__ = ["Recipe", "input_channels"]


def input_channels(windows: Any, neighbours: int, channels_per_slice: int = 1) -> int:
    """Network input channels: windows x stacked slices (x channels per slice, e.g. 2 with contralateral crops).

    Args:
        windows: the number of windows, or any window specification of
            :func:`~monai_stroke.transforms.parse_windows`.
        neighbours: slices stacked on each side of the target slice.
        channels_per_slice: HU channels per slice before windowing.
    """
    n_windows = int(windows) if isinstance(windows, int) else len(parse_windows(windows))
    return n_windows * (2 * int(neighbours) + 1) * int(channels_per_slice)


@dataclasses.dataclass
class Recipe:
    """The pre-processing a dataset applies, shared by training, evaluation and inference.

    Args:
        kind: ``"hemorrhage"`` or ``"ischemic"``.
        chain: transform chain name (``transforms/<chain>.yaml``) or fragment path.
        chain_params: the chain's parameters after overrides.
        output_names: one name per network output.
        windows_hu: ``[[center, width], ...]``, channel order.
        window_output: ``"float"`` or ``"uint8"``.
        neighbours: slices stacked on each side of the target.
        spatial_size: in-plane size the network sees.
        in_channels: network input channels.
        task: ischemic task name, None for hemorrhage.
        template_identity: sha256 of the template (ischemic).
        atlas_identity: sha256 of the atlas (ischemic).
    """

    kind: str
    chain: str
    chain_params: dict[str, Any]
    output_names: list[str]
    windows_hu: list[list[float]]
    window_output: str
    neighbours: int
    spatial_size: list[int]
    in_channels: int
    task: str | None = None
    template_identity: str | None = None
    atlas_identity: str | None = None

    def contract_fields(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~monai_stroke.contract.Contract` that this recipe determines."""
        return {
            "kind": self.kind,
            "output_names": list(self.output_names),
            "windows_hu": [list(w) for w in self.windows_hu],
            "window_output": self.window_output,
            "neighbours": int(self.neighbours),
            "spatial_size": [int(s) for s in self.spatial_size],
            "chain": self.chain,
            "chain_params": _plain(self.chain_params),
            "task": self.task,
            "template_identity": self.template_identity,
            "atlas_identity": self.atlas_identity,
        }


def _plain(value: Any) -> Any:
    # contracts are stored with torch.load(weights_only=True): only JSON-like values
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value
