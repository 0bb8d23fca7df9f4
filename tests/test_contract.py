from __future__ import annotations

import pytest
import torch

from monai_stroke.contract import Contract, load_checkpoint, save_checkpoint
from monai_stroke.errors import UserInputError


def _contract(**kw) -> Contract:
    base = dict(kind="ischemic", output_names=["early_vs_intact"], task="early_vs_intact",
                network={"name": "seresnext50", "size": "tiny", "in_channels": 6, "num_outputs": 1},
                windows_hu=[[40, 20]], neighbours=1, spatial_size=[64, 64], chain="ischemic_regions",
                decision_threshold=0.42, template_identity="t" * 64, atlas_identity="a" * 64)
    base.update(kw)
    return Contract(**base)


def test_round_trip_with_weights_only_load(tmp_path) -> None:
    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    path = save_checkpoint(tmp_path / "models" / "model.pt", sd, _contract(), epoch=3)
    raw = torch.load(path, weights_only=True)  # must not need pickle of custom classes
    assert raw["epoch"] == 3
    state, contract = load_checkpoint(path, kind="ischemic", task="early_vs_intact",
                                      template_identity="t" * 64, atlas_identity="a" * 64)
    assert torch.equal(state["w"], sd["w"])
    assert contract == _contract()
    assert contract.decision_threshold == pytest.approx(0.42)


@pytest.mark.parametrize(
    "expect, message",
    [
        ({"kind": "hemorrhage"}, "ischemic model, expected a hemorrhage"),
        ({"task": "old_vs_intact"}, "trained for task 'early_vs_intact'"),
        ({"atlas_identity": "b" * 64}, "another atlas"),
        ({"template_identity": "x" * 64}, "another template"),
    ],
)
def test_mismatched_use_is_refused(tmp_path, expect: dict, message: str) -> None:
    path = save_checkpoint(tmp_path / "model.pt", {}, _contract())
    with pytest.raises(UserInputError, match=message):
        load_checkpoint(path, **expect)


def test_not_a_checkpoint(tmp_path) -> None:
    torch.save({"model": {}}, tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(UserInputError, match="not a monai-stroke checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(UserInputError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(UserInputError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_invalid_contract_values() -> None:
    with pytest.raises(UserInputError, match="kind"):
        _contract(kind="tumour")
    with pytest.raises(UserInputError, match="window_output"):
        _contract(window_output="int16")
