from __future__ import annotations

import pytest
import torch

from monai_stroke.errors import UserInputError
from monai_stroke.networks import STAGES, create_network
from monai_stroke.transfer.depths import (
    CONTROL,
    TRANSFER_DEPTHS,
    apply_freeze,
    equivalent_depths,
    frozen_parameter_names,
    frozen_stages,
    regroup_first_conv,
    transfer_backbone,
)


def _tiny(in_channels: int = 3, outputs: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_network("seresnext50", "tiny", in_channels=in_channels, num_outputs=outputs)


def _snapshot(net: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    state = net.state_dict()
    return {k: v.clone() for k, v in state.items() if k.startswith(prefix + ".") and v.is_floating_point()}


def _train_steps(net: torch.nn.Module, steps: int = 3) -> None:
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        net.train()  # what MONAI's SupervisedTrainer does every iteration
        x = torch.randn(4, 3, 32, 32, generator=gen) * 3 + 1
        y = torch.randint(0, 2, (4, 1), generator=gen).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("depth", ["layer0", "layer0-1", "layer0-3"])
def test_frozen_stages_keep_weights_and_bn_statistics(depth: str) -> None:
    net = _tiny()
    frozen = frozen_stages(depth)
    before = {s: _snapshot(net, s) for s in STAGES}
    handle = apply_freeze(net, depth)
    _train_steps(net)
    after = {s: _snapshot(net, s) for s in STAGES}
    for stage in STAGES:
        changed = any(not torch.equal(before[stage][k], after[stage][k]) for k in before[stage])
        if stage in frozen:
            assert not changed, f"{stage} is frozen at {depth} but its weights or BN statistics moved"
        else:
            assert changed, f"{stage} is trainable at {depth} but did not change"
    assert handle.frozen_batchnorms and all(n.split(".")[0] in frozen for n in handle.frozen_batchnorms)


def test_remove_unfreezes() -> None:
    net = _tiny()
    handle = apply_freeze(net, "layer0-4")
    assert not any(p.requires_grad for n, p in net.named_parameters() if n.startswith("layer"))
    handle.remove()
    before = _snapshot(net, "layer0")
    _train_steps(net, 1)
    assert any(not torch.equal(before[k], v) for k, v in _snapshot(net, "layer0").items())


def test_all_conv_trains_the_head_only_and_equals_layer0_4_on_seresnext() -> None:
    net = _tiny()
    all_params = {n for n, _ in net.named_parameters()}
    frozen = frozen_parameter_names(net, "all_conv")
    assert all_params - frozen == {n for n in all_params if n.startswith("last_linear.")}
    assert equivalent_depths(net, [*TRANSFER_DEPTHS, CONTROL]) == {"all_conv": "layer0-4"}
    assert frozen_parameter_names(net, "none") == frozenset() == frozen_parameter_names(net, CONTROL)


def test_transfer_copies_backbone_and_keeps_a_new_head() -> None:
    source = _tiny(outputs=6)
    target = create_network("seresnext50", "tiny", in_channels=3, num_outputs=1)
    copied = transfer_backbone(target, source.state_dict())
    assert not any(k.startswith("last_linear") for k in copied)
    for k in copied:
        assert torch.equal(target.state_dict()[k], source.state_dict()[k])
    assert target.last_linear.out_features == 1


def test_first_conv_regrouped_slice_by_slice() -> None:
    # source: 3 slices x 3 windows; target: 3 slices x (ipsilateral, contralateral)
    w = torch.arange(2 * 9 * 1 * 1, dtype=torch.float32).reshape(2, 9, 1, 1)
    out = regroup_first_conv(w, slices=3, source_per_slice=3, target_per_slice=2)
    assert out.shape == (2, 6, 1, 1)
    for s in range(3):
        per_slice_sum = w[:, 3 * s : 3 * s + 3].sum(dim=1)
        torch.testing.assert_close(out[:, 2 * s] + out[:, 2 * s + 1], per_slice_sum)
    source = _tiny(in_channels=9, outputs=6)
    target = create_network("seresnext50", "tiny", in_channels=3, num_outputs=1)
    transfer_backbone(target, source.state_dict(), slice_layout=(3, 3, 1))
    torch.testing.assert_close(
        target.layer0.conv1.weight, source.layer0.conv1.weight.reshape(16, 3, 3, 7, 7).sum(dim=2)
    )


def test_mismatched_source_is_refused() -> None:
    source = create_network("seresnext50", "full", in_channels=3, num_outputs=6).state_dict()
    with pytest.raises(UserInputError, match="does not fit the target network's backbone"):
        transfer_backbone(_tiny(), source)


def test_unknown_depth() -> None:
    with pytest.raises(UserInputError, match="unknown freeze depth"):
        frozen_stages("layer0-9")
