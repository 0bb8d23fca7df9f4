"""Resumable state of a freeze-depth search.

Layout under the search's output folder::

    atl_state.json              merged view: config, per-depth losses, completed results, eliminated depths
    atl/<depth>/progress.json   that depth's validation losses per epoch (+ its result once completed)
    atl/<depth>/last.pt         weights, optimiser state and losses after its last finished epoch
    atl/<depth>/best.pt         its lowest-validation-loss weights (a contract checkpoint)

Every file is written atomically, and ``last.pt`` before ``progress.json``: a search killed at any moment
(``kill -9``) finds, on restart, either the previous epoch or the new one complete, never half of one. If the
kill fell between the two writes, the losses stored inside ``last.pt`` are one epoch ahead of
``progress.json`` and are adopted, so no finished epoch is trained again. Each depth has its own files, so the
processes of a depth-parallel search never write the same file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from monai_stroke.errors import UserInputError
from monai_stroke.utils.atomic import atomic_path, write_json_atomic

__all__ = ["ATLState", "STATE_FILE"]

STATE_FILE = "atl_state.json"


class ATLState:
    """Per-depth progress files plus the merged ``atl_state.json``.

    Args:
        out_dir: the search's output folder.
        config: everything that must match for a restart to continue this search (the plan's config plus task,
            source checkpoint identity, network, ...). A folder holding a search with another config is refused
            rather than mixed.
    """

    def __init__(self, out_dir: str | os.PathLike, config: Mapping[str, Any]) -> None:
        self.out_dir = Path(out_dir)
        self.config = json.loads(json.dumps(dict(config)))  # normalise tuples etc. to what JSON gives back
        state_file = self.out_dir / STATE_FILE
        if state_file.is_file():
            try:
                previous = json.loads(state_file.read_text()).get("config")
            except json.JSONDecodeError as exc:
                raise UserInputError(f"{state_file} is not valid JSON ({exc}); delete it to start over") from exc
            if previous != self.config:
                changed = sorted(k for k in set(previous or {}) | set(self.config)
                                 if (previous or {}).get(k) != self.config.get(k))
                raise UserInputError(
                    f"{self.out_dir} holds a search with other settings ({', '.join(changed)}); "
                    "rerun with the same settings to resume, or choose another output folder"
                )

    def depth_dir(self, depth: str) -> Path:
        return self.out_dir / "atl" / depth

    def _progress(self, depth: str) -> dict[str, Any]:
        path = self.depth_dir(depth) / "progress.json"
        return json.loads(path.read_text()) if path.is_file() else {"val_losses": []}

    def losses(self, depths: list[str] | None = None) -> dict[str, list[float]]:
        """Validation losses per depth, per epoch (depths with none are left out)."""
        root = self.out_dir / "atl"
        names = depths if depths is not None else sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        out = {}
        for depth in names:
            values = self._progress(depth).get("val_losses", [])
            if values:
                out[depth] = [float(v) for v in values]
        return out

    def reconcile(self, depth: str) -> list[float]:
        """Adopt the losses stored in ``last.pt`` if a kill came between writing it and ``progress.json``."""
        progress = self._progress(depth)
        last = self.load_training_state(depth)
        if last is not None and len(last.get("val_losses", [])) > len(progress.get("val_losses", [])):
            progress["val_losses"] = [float(v) for v in last["val_losses"]]
            write_json_atomic(self.depth_dir(depth) / "progress.json", progress)
        return [float(v) for v in progress.get("val_losses", [])]

    def save_epoch(
        self, depth: str, val_loss: float, training_state: Mapping[str, Any], best_checkpoint: Any | None = None
    ) -> list[float]:
        """Record one finished epoch of ``depth``.

        Args:
            depth: the freeze depth.
            val_loss: its validation BCE loss after this epoch.
            training_state: what resuming needs (``state_dict``, ``optimizer``, ...); tensors and JSON-like values.
            best_checkpoint: a callable ``(path) -> None`` writing the contract checkpoint, called when this
                epoch has the depth's lowest validation loss so far.

        Returns:
            the depth's losses so far.
        """
        progress = self._progress(depth)
        losses = [*map(float, progress.get("val_losses", [])), float(val_loss)]
        folder = self.depth_dir(depth)
        if best_checkpoint is not None and float(val_loss) <= min(losses):
            best_checkpoint(folder / "best.pt")
            progress["best_epoch"] = len(losses)
            progress["best_val_loss"] = float(val_loss)
        with atomic_path(folder / "last.pt") as tmp:
            torch.save({**training_state, "val_losses": losses}, tmp)
        progress["val_losses"] = losses
        write_json_atomic(folder / "progress.json", progress)
        return losses

    def load_training_state(self, depth: str) -> dict[str, Any] | None:
        path = self.depth_dir(depth) / "last.pt"
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def set_result(self, depth: str, result: Mapping[str, Any]) -> None:
        """Store a depth's evaluation (metrics, collapse flag) once it has finished training."""
        progress = self._progress(depth)
        progress["result"] = dict(result)
        write_json_atomic(self.depth_dir(depth) / "progress.json", progress)

    def result(self, depth: str) -> dict[str, Any] | None:
        return self._progress(depth).get("result")

    def best_checkpoint(self, depth: str) -> Path:
        return self.depth_dir(depth) / "best.pt"

    def write_summary(self, **fields: Any) -> Path:
        """Write the merged ``atl_state.json``: config, losses, completed results, and ``fields``."""
        losses = self.losses()
        completed = {d: {"val_losses": losses.get(d, []), **(self.result(d) or {})}
                     for d in losses if self.result(d) is not None}
        in_progress = {d: {"val_losses": v} for d, v in losses.items() if d not in completed}
        return write_json_atomic(
            self.out_dir / STATE_FILE,
            {"config": self.config, "completed": completed, "in_progress": in_progress, **fields},
        )
