"""Checkpoints that carry their pre-processing contract.

A trained model is only meaningful with the pre-processing it was trained on: the HU windows, the slice
neighbours, the crop size, the template and atlas the crops were cut from, the decision threshold chosen on
validation. ``models/model.pt`` therefore holds the weights *and* a :class:`Contract`; inference builds its
transform chain from the contract and refuses a checkpoint whose template/atlas differ from the ones in use,
so training and inference can never silently mismatch (the timm idea of weights that carry their
preprocessing, and nnU-Net's plans file).

The file is a plain ``dict`` of tensors and JSON-like values, loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from monai_stroke import __version__
from monai_stroke.errors import UserInputError
from monai_stroke.utils.atomic import atomic_path
from monai_stroke.utils.hashing import file_sha256

__all__ = ["Contract", "CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "network_from_checkpoint"]

CHECKPOINT_FORMAT = "monai-stroke-checkpoint/1"
KINDS = ("hemorrhage", "ischemic")


@dataclasses.dataclass
class Contract:
    """What a checkpoint expects of its input, and how to read its output.

    Args:
        kind: ``"hemorrhage"`` (slice-level, native slices) or ``"ischemic"`` (region crops in template space).
        output_names: one name per network output (e.g. ``HEMORRHAGE_LABELS`` or ``[task]``).
        network: ``create_network`` arguments: name, size, in_channels, num_outputs.
        windows_hu: ``[[center, width], ...]`` HU windows, in channel order.
        window_output: ``"float"`` or ``"uint8"`` (see ``HUWindow``).
        neighbours: slices stacked on each side of the target slice (lesion concatenation).
        spatial_size: in-plane size the network sees, ``[H, W]``.
        chain: name of the shared transform chain in ``transforms/`` used to pre-process.
        chain_params: the chain's remaining parameters (margins, contralateral channels, template spacing, ...).
        task: task name for ischemic models (``early_vs_intact``, ...), ``None`` for hemorrhage.
        decision_threshold: probability above which the output is called positive, chosen on validation.
        threshold_rule: how ``decision_threshold`` was chosen.
        template_identity: sha256 of the CT template the crops were made in (ischemic only).
        atlas_identity: sha256 of the region atlas (ischemic only).
        aggregation: how slice probabilities become a series probability (hemorrhage), e.g. ``{"method":
            "topk_mean", "k": 3}``.
        training: free-form provenance (epochs, best epoch, validation loss, freeze depth, bundle version).
        monai_stroke_version: version that wrote the checkpoint.
    """

    kind: str
    output_names: list[str]
    network: dict[str, Any]
    windows_hu: list[list[float]]
    window_output: str = "float"
    neighbours: int = 1
    spatial_size: list[int] = dataclasses.field(default_factory=lambda: [64, 64])
    chain: str = ""
    chain_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    task: str | None = None
    decision_threshold: float = 0.5
    threshold_rule: str = "youden"
    template_identity: str | None = None
    atlas_identity: str | None = None
    aggregation: dict[str, Any] | None = None
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    monai_stroke_version: str = __version__

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserInputError(f"contract kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.window_output not in ("float", "uint8"):
            raise UserInputError(f"window_output must be 'float' or 'uint8', got {self.window_output!r}")
        self.windows_hu = [[float(c), float(w)] for c, w in self.windows_hu]
        self.spatial_size = [int(s) for s in self.spatial_size]
        self.decision_threshold = float(self.decision_threshold)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Contract:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            # a newer writer added fields: keep going, but never silently drop what affects pre-processing
            raise UserInputError(
                f"checkpoint contract has fields this monai-stroke ({__version__}) does not know: "
                f"{', '.join(sorted(unknown))}; upgrade monai-stroke"
            )
        return cls(**dict(data))

    def replace(self, **changes: Any) -> Contract:
        return dataclasses.replace(self, **changes)


def save_checkpoint(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], contract: Contract, **extra: Any
) -> Path:
    """Write weights + contract atomically (a reader never sees a half-written model).

    Args:
        path: destination, normally ``OUT/models/model.pt``.
        state_dict: the network's ``state_dict()``.
        contract: the pre-processing contract.
        extra: more JSON-like entries to store (e.g. ``epoch``).
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "contract": contract.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike,
    kind: str | None = None,
    task: str | None = None,
    template_identity: str | None = None,
    atlas_identity: str | None = None,
) -> tuple[dict[str, torch.Tensor], Contract]:
    """Load weights and contract, checking that the checkpoint fits the intended use.

    Args:
        path: a ``model.pt`` written by :func:`save_checkpoint`.
        kind: expected kind, if any.
        task: expected task, if any.
        template_identity: identity of the template in use; an ischemic checkpoint made with another template is
            refused (its crops would come from different anatomy).
        atlas_identity: identity of the atlas in use; likewise.

    Raises:
        UserInputError: missing/unreadable file, not a monai-stroke checkpoint, or a contract that does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint {path} does not exist; train one with a bundle (see README, 'Bundles')")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise UserInputError(f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(
            f"{path} is not a monai-stroke checkpoint (no '{CHECKPOINT_FORMAT}' contract); models trained by the "
            "bundles write OUT/models/model.pt"
        )
    contract = Contract.from_dict(payload["contract"])
    if kind is not None and contract.kind != kind:
        raise UserInputError(f"{path} is a {contract.kind} model, expected a {kind} model")
    if task is not None and contract.task != task:
        raise UserInputError(f"{path} was trained for task {contract.task!r}, expected {task!r}")
    for name, expected, actual in (
        ("template", template_identity, contract.template_identity),
        ("atlas", atlas_identity, contract.atlas_identity),
    ):
        if expected is not None and actual is not None and expected != actual:
            raise UserInputError(
                f"{path} was trained with another {name} ({actual[:12]}) than the one in use ({expected[:12]}); "
                f"use the {name} it was trained with (--atlas DIR) or retrain"
            )
    return payload["state_dict"], contract


def network_from_checkpoint(path: str | os.PathLike, **expect: Any) -> tuple[torch.nn.Module, Contract, str]:
    """Build the network a checkpoint describes, load its weights, and return (network, contract, sha256)."""
    from monai_stroke.networks import create_network

    state_dict, contract = load_checkpoint(path, **expect)
    net = create_network(**contract.network)
    missing, unexpected = net.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise UserInputError(
            f"{path}: weights do not fit the network its contract describes ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[:3]})"
        )
    net.eval()
    return net, contract, file_sha256(path)
