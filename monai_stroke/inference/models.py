"""The trained models of the cascade, read from one folder, each with its pre-processing contract.

Layout of a models folder (what ``monai-stroke demo`` writes to ``DIR/models/``)::

    MODELS/
      hemorrhage/model.pt        hemorrhage network (bundles/hemorrhage_classification), kind "hemorrhage"
      early_vs_intact/model.pt   ischemic network, task early_vs_intact (bundles/adaptive_transfer or
                                 bundles/ischemic_classification); its regions lower ASPECTS
      old_vs_intact/model.pt     ischemic network, task old_vs_intact; old infarcts are listed, not counted

Each slot may also be a bundle's output folder as the bundle wrote it (``MODELS/<slot>/models/model.pt``), so
``--models`` can point at a folder of bundle outputs without copying files. Every checkpoint is checked against
its slot (kind, task) and, for the ischemic models, against the template and atlas in use (a model trained on
crops of another atlas is refused: its regions would be other anatomy).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from monai_stroke.anatomy.atlas import Atlas
from monai_stroke.contract import Contract, network_from_checkpoint
from monai_stroke.errors import UserInputError

__all__ = [
    "HEMORRHAGE_SLOT",
    "EARLY_SLOT",
    "OLD_SLOT",
    "MODEL_SLOTS",
    "CascadeModel",
    "CascadeModels",
    "model_path",
    "model_paths",
    "load_atlas",
    "load_cascade_models",
    "resolve_device",
]

logger = logging.getLogger(__name__)

HEMORRHAGE_SLOT = "hemorrhage"
EARLY_SLOT = "early_vs_intact"
OLD_SLOT = "old_vs_intact"

#: slot -> what the checkpoint there must be, and the bundle that makes one
MODEL_SLOTS: dict[str, dict[str, Any]] = {
    HEMORRHAGE_SLOT: {"kind": "hemorrhage", "task": None, "bundle": "hemorrhage_classification"},
    EARLY_SLOT: {"kind": "ischemic", "task": EARLY_SLOT, "bundle": "adaptive_transfer"},
    OLD_SLOT: {"kind": "ischemic", "task": OLD_SLOT, "bundle": "adaptive_transfer"},
}
_CANDIDATES = ("model.pt", "models/model.pt")


@dataclasses.dataclass
class CascadeModel:
    """One network of the cascade with what it expects and what identifies it.

    Args:
        slot: its place in the models folder (``hemorrhage``, ``early_vs_intact``, ``old_vs_intact``).
        network: the network in eval mode (any ``nn.Module`` mapping ``(B, C, H, W)`` to ``(B, K)`` logits with a
            ``layer4`` stage for Grad-CAM).
        contract: its pre-processing contract.
        sha256: the checkpoint file's hash (``""`` when not loaded from a file).
        path: the checkpoint file.
    """

    slot: str
    network: torch.nn.Module
    contract: Contract
    sha256: str = ""
    path: Path | None = None

    @property
    def threshold(self) -> float:
        """The decision threshold of the report's decision (series ``any`` for hemorrhage; the region for ischemic)."""
        return float(self.contract.decision_threshold)

    def group_threshold(self, group: str) -> float:
        """The threshold stored for an evaluation group (e.g. ``series/subdural``), else the decision threshold."""
        stored = self.contract.training.get("thresholds") or {}
        return float(stored.get(group, self.contract.decision_threshold))

    def identity(self) -> dict[str, Any]:
        """What the report cites: checkpoint, sha256, kind, task, threshold, bundle and version, freeze depth."""
        training = self.contract.training or {}
        return {
            "checkpoint": None if self.path is None else str(self.path),
            "sha256": self.sha256,
            "kind": self.contract.kind,
            "task": self.contract.task,
            "network": dict(self.contract.network),
            "chain": self.contract.chain,
            "decision_threshold": self.threshold,
            "threshold_rule": self.contract.threshold_rule,
            "bundle": training.get("bundle"),
            "bundle_version": training.get("bundle_version"),
            "epoch": training.get("epoch"),
            "freeze_depth": training.get("theta", training.get("freeze_depth")),
            "monai_stroke_version": self.contract.monai_stroke_version,
        }


@dataclasses.dataclass
class CascadeModels:
    """The three networks of the cascade and the atlas the ischemic ones were checked against.

    Args:
        hemorrhage: the hemorrhage network.
        early: the early-ischemic-change network (task ``early_vs_intact``).
        old: the old-infarction network (task ``old_vs_intact``).
        atlas: the atlas in use.
        atlas_dir: the atlas folder (None: the built-in atlas); the ischemic chains crop with it.
        warnings: what a user should know about the models (e.g. a checkpoint without atlas identity).
    """

    hemorrhage: CascadeModel
    early: CascadeModel
    old: CascadeModel
    atlas: Atlas
    atlas_dir: Path | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def ischemic(self) -> dict[str, CascadeModel]:
        return {EARLY_SLOT: self.early, OLD_SLOT: self.old}

    def all(self) -> dict[str, CascadeModel]:
        return {HEMORRHAGE_SLOT: self.hemorrhage, **self.ischemic}

    def to(self, device: torch.device) -> CascadeModels:
        for model in self.all().values():
            model.network.to(device)
        return self


def model_path(models_dir: str | os.PathLike, slot: str) -> Path:
    """The checkpoint of ``slot`` in a models folder (``<slot>/model.pt`` or a bundle's ``<slot>/models/model.pt``).

    Raises:
        UserInputError: the folder or the checkpoint is missing; the message names the file and how to make it.
    """
    root = Path(models_dir)
    if not root.is_dir():
        raise UserInputError(
            f"models folder {root} does not exist; run 'monai-stroke demo --out DIR' (writes DIR/models) or train the "
            "bundles (README, 'Bundles') and put their model.pt files there"
        )
    for candidate in _CANDIDATES:
        path = root / slot / candidate
        if path.is_file():
            return path
    info = MODEL_SLOTS[slot]
    task = f" --task {info['task']}" if info["task"] else ""
    raise UserInputError(
        f"missing model {root / slot / 'model.pt'} ({info['kind']} network{', task ' + info['task'] if info['task'] else ''}); "
        f"train it with bundles/{info['bundle']} (python -m monai.bundle run --config_file "
        f"bundles/{info['bundle']}/configs/train.yaml ...{task}) and copy OUT/models/model.pt there, or run "
        "'monai-stroke demo --out DIR' and use DIR/models"
    )


def model_paths(models_dir: str | os.PathLike) -> dict[str, Path]:
    """Every slot's checkpoint; all missing files are named at once, before anything heavy is loaded."""
    if not Path(models_dir).is_dir():
        model_path(models_dir, HEMORRHAGE_SLOT)  # raises the missing-folder error
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for slot in MODEL_SLOTS:
        try:
            paths[slot] = model_path(models_dir, slot)
        except UserInputError as exc:
            missing.append(str(exc))
    if missing:
        raise UserInputError("; ".join(missing))
    return paths


def load_atlas(atlas_dir: str | os.PathLike | None) -> Atlas:
    """The atlas in use: an atlas folder (``monai-stroke atlas export/import``) or the built-in one."""
    return Atlas.default() if atlas_dir in (None, "") else Atlas.from_dir(atlas_dir)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``cpu``, ``cuda`` (or ``cuda:N``), or None for CUDA when available; a missing GPU is a user error."""
    if device in (None, ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserInputError(f"unknown device {device!r}; use cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for, but no CUDA GPU is available here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UserInputError(f"device {device!r} is not supported; use cpu or cuda")
    return dev


def _load(slot: str, path: Path, atlas: Atlas | None) -> CascadeModel:
    info = MODEL_SLOTS[slot]
    expect: dict[str, Any] = {"kind": info["kind"], "task": info["task"]}
    if atlas is not None:
        expect.update(template_identity=atlas.template_identity, atlas_identity=atlas.identity)
    network, contract, sha = network_from_checkpoint(path, **expect)
    return CascadeModel(slot=slot, network=network, contract=contract, sha256=sha, path=path)


def _unverified_atlas(slot: str, model: CascadeModel) -> str | None:
    """A warning when an ischemic checkpoint cannot be checked against the atlas (it records no identity)."""
    if model.contract.kind == "ischemic" and model.contract.atlas_identity is None:
        return f"the {slot} model records no atlas identity; it could not be checked against the atlas in use"
    return None


def load_cascade_models(
    models_dir: str | os.PathLike,
    atlas_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = "cpu",
) -> CascadeModels:
    """Load and check the three checkpoints of a models folder.

    Args:
        models_dir: the models folder (see the module docstring).
        atlas_dir: the atlas in use (None: built-in); every ischemic model must have been trained with it.
        device: where to put the networks.

    Raises:
        UserInputError: a checkpoint is missing, is not a monai-stroke checkpoint, is of another kind or task than
            its slot, or was trained with another template or atlas.
    """
    paths = model_paths(models_dir)
    atlas = load_atlas(atlas_dir)
    dev = resolve_device(device)
    loaded: dict[str, CascadeModel] = {}
    warnings: list[str] = []
    for slot in MODEL_SLOTS:
        # load_checkpoint refuses another kind, task, template or atlas, naming the file
        is_ischemic = MODEL_SLOTS[slot]["kind"] == "ischemic"
        model = _load(slot, paths[slot], atlas if is_ischemic else None)
        warning = _unverified_atlas(slot, model)
        if warning:
            warnings.append(warning)
        model.network.eval()
        loaded[slot] = model
    models = CascadeModels(
        hemorrhage=loaded[HEMORRHAGE_SLOT],
        early=loaded[EARLY_SLOT],
        old=loaded[OLD_SLOT],
        atlas=atlas,
        atlas_dir=None if atlas_dir in (None, "") else Path(atlas_dir),
        warnings=warnings,
    )
    return models.to(dev)
