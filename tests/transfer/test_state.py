from __future__ import annotations

import json

import pytest
import torch

from monai_stroke.errors import UserInputError
from monai_stroke.transfer.state import STATE_FILE, ATLState

CONFIG = {"depths": ["none", "layer0"], "epochs_per_depth": 3, "strategy": "exhaustive"}


def test_epochs_accumulate_and_best_checkpoint_follows_lowest_loss(tmp_path) -> None:
    state = ATLState(tmp_path, CONFIG)
    written = []
    for loss in (0.7, 0.5, 0.6):
        state.save_epoch("layer0", loss, {"w": torch.tensor([loss])}, best_checkpoint=lambda p, x=loss: written.append(x))
    assert state.losses() == {"layer0": [0.7, 0.5, 0.6]}
    assert written == [0.7, 0.5]
    progress = json.loads((tmp_path / "atl" / "layer0" / "progress.json").read_text())
    assert progress["best_epoch"] == 2
    assert torch.equal(state.load_training_state("layer0")["w"], torch.tensor([0.6]))


def test_kill_between_checkpoint_and_progress_is_recovered(tmp_path) -> None:
    state = ATLState(tmp_path, CONFIG)
    state.save_epoch("none", 0.9, {"w": torch.zeros(1)})
    # simulate a kill after last.pt of epoch 2 was written but before progress.json was
    torch.save({"w": torch.ones(1), "val_losses": [0.9, 0.8]}, tmp_path / "atl" / "none" / "last.pt")
    resumed = ATLState(tmp_path, CONFIG)
    assert resumed.reconcile("none") == [0.9, 0.8]
    assert resumed.losses() == {"none": [0.9, 0.8]}


def test_summary_and_results(tmp_path) -> None:
    state = ATLState(tmp_path, CONFIG)
    state.save_epoch("none", 0.9, {})
    state.save_epoch("layer0", 0.8, {})
    state.set_result("layer0", {"auc": 0.75, "collapsed": False})
    state.write_summary(chosen="layer0")
    summary = json.loads((tmp_path / STATE_FILE).read_text())
    assert summary["completed"] == {"layer0": {"val_losses": [0.8], "auc": 0.75, "collapsed": False}}
    assert summary["in_progress"] == {"none": {"val_losses": [0.9]}}
    assert summary["chosen"] == "layer0" and summary["config"] == CONFIG


def test_other_settings_are_refused_not_mixed(tmp_path) -> None:
    ATLState(tmp_path, CONFIG).write_summary()
    with pytest.raises(UserInputError, match="other settings \\(epochs_per_depth\\)"):
        ATLState(tmp_path, {**CONFIG, "epochs_per_depth": 5})
    ATLState(tmp_path, dict(CONFIG))  # the same settings resume
