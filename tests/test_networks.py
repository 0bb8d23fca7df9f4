from __future__ import annotations

import logging
import re
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from monai_stroke.errors import UserInputError
from monai_stroke.networks import (
    FIRST_CONV_KEY,
    STAGES,
    adapt_input_conv,
    create_network,
    head_module,
    load_pretrained_weights,
    stage_modules,
)


@pytest.fixture(scope="module")
def full_net() -> nn.Module:
    # the paper's SE-ResNeXt50 (~25 M parameters): built once for the whole module
    return create_network("seresnext50", "full", in_channels=3, num_outputs=2)


def _tiny(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    args = {"in_channels": 9, "num_outputs": 6, **kwargs}
    return create_network(size="tiny", **args).eval()


def _output(net: nn.Module, in_channels: int, seed: int = 1) -> torch.Tensor:
    x = torch.randn(2, in_channels, 48, 48, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return net.eval()(x)


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_same_stage_and_head_names_for_both_sizes(size: str, full_net: nn.Module) -> None:
    net = full_net if size == "full" else _tiny()
    stages = stage_modules(net)
    assert tuple(stages) == STAGES == ("layer0", "layer1", "layer2", "layer3", "layer4")
    assert [name for name, _ in net.named_children()] == [*STAGES, "adaptive_avg_pool", "last_linear"]
    assert all(_n_params(m) > 0 for m in stages.values())
    assert isinstance(head_module(net), nn.Linear)
    # every parameter belongs to exactly one stage or the head, so freezing by stage name covers the network
    assert sum(_n_params(m) for m in stages.values()) + _n_params(head_module(net)) == _n_params(net)
    blocks = [type(b).__name__ for b in net.layer1]
    assert blocks[0] == "SEResNeXtBottleneck"


def test_sizes_differ_as_documented(full_net: nn.Module) -> None:
    tiny = _tiny()
    assert 20e6 < _n_params(full_net) < 30e6  # SE-ResNeXt50 32x4d
    assert _n_params(tiny) < 0.5e6
    assert [len(s) for s in stage_modules(full_net).values()][1:] == [3, 4, 6, 3]
    assert full_net.layer1[0].conv2.conv.groups == 32
    # the full network's keys (minus the different stage depths) carry the same naming scheme as tiny's
    full_keys = {re.sub(r"^(layer\d)\.\d+\.", r"\1.N.", k) for k in full_net.state_dict()}
    tiny_keys = {re.sub(r"^(layer\d)\.\d+\.", r"\1.N.", k) for k in tiny.state_dict()}
    assert tiny_keys == full_keys


@pytest.mark.parametrize(
    "size, in_channels, num_outputs, spatial_dims, shape",
    [
        ("tiny", 9, 6, 2, (2, 9, 64, 64)),
        ("tiny", 3, 1, 2, (3, 3, 40, 56)),
        ("tiny", 1, 2, 3, (1, 1, 32, 32, 16)),
        ("full", 3, 2, 2, (1, 3, 64, 64)),
    ],
)
def test_output_shapes(size, in_channels, num_outputs, spatial_dims, shape, full_net: nn.Module) -> None:
    if size == "full":
        net = full_net
    else:
        net = create_network(size=size, in_channels=in_channels, num_outputs=num_outputs, spatial_dims=spatial_dims)
    assert net.factory_args["in_channels"] == in_channels
    with torch.no_grad():
        assert net.eval()(torch.randn(*shape)).shape == (shape[0], num_outputs)


def _cadene_and_timm_names(state: dict[str, torch.Tensor], timm: bool) -> dict[str, torch.Tensor]:
    """Rename a MONAI SENet state_dict the way Cadene's pretrainedmodels (or timm) spell SE-ResNeXt."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"\.(conv\d)\.conv\.", r".\1.", key)
        key = re.sub(r"\.conv(\d)\.adn\.N\.", r".bn\1.", key)
        key = key.replace(".project.conv.", ".downsample.0.").replace(".project.adn.N.", ".downsample.1.")
        if ".se_layer.fc." in key:
            key = key.replace(".se_layer.fc.0.", ".se_module.fc1.").replace(".se_layer.fc.2.", ".se_module.fc2.")
            if key.endswith("weight"):
                value = value[..., None, None]  # 1x1 convolutions there
        if timm:
            key = key.replace("layer0.", "").replace(".se_module.", ".se.").replace("last_linear.", "fc.")
        out[key] = value
    return out


@pytest.mark.parametrize(
    "layout", ["torch", "safetensors", "nested_state_dict", "nested_model", "ddp", "cadene", "timm"]
)
def test_weights_round_trip_through_a_file(tmp_path, layout: str) -> None:
    source = _tiny(seed=1)
    state = source.state_dict()
    if layout == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    else:
        path = tmp_path / "w.pt"
        payload = {
            "torch": state,
            "nested_state_dict": {"state_dict": state, "epoch": 3},
            "nested_model": {"model": state},
            "ddp": {f"module.{k}": v for k, v in state.items()},
            "cadene": _cadene_and_timm_names(state, timm=False),
            "timm": _cadene_and_timm_names(state, timm=True),
        }[layout]
        torch.save(payload, path)
    loaded = create_network(size="tiny", in_channels=9, num_outputs=6, pretrained_weights=path)
    assert not torch.allclose(_output(_tiny(seed=2), 9), _output(source, 9))  # different seeds differ...
    torch.testing.assert_close(_output(loaded, 9), _output(source, 9))  # ...so equality means the file loaded
    report = load_pretrained_weights(_tiny(seed=3), path)
    assert report.head_loaded and report.input_adapted is None
    assert report.unexpected == [] and report.missing == []


def test_head_is_skipped_when_outputs_differ(tmp_path, caplog) -> None:
    source = _tiny(seed=1)  # 6 outputs (hemorrhage)
    torch.save(source.state_dict(), tmp_path / "hemorrhage.pt")
    fresh = _tiny(seed=5, num_outputs=1)
    initial_head = fresh.last_linear.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="monai_stroke.networks"):
        report = load_pretrained_weights(fresh, tmp_path / "hemorrhage.pt")
    assert not report.head_loaded
    assert (
        "head last_linear not loaded" in caplog.text and "(6, 512) in the file, (1, 512) in the network" in caplog.text
    )
    assert torch.equal(fresh.last_linear.weight, initial_head)
    for name, module in stage_modules(fresh).items():
        for (key, value), ref in zip(
            module.state_dict().items(), stage_modules(source)[name].state_dict().values(), strict=True
        ):
            assert torch.equal(value, ref), f"{name}.{key} not transferred"
    assert report.missing == ["last_linear.bias", "last_linear.weight"]


def test_adapt_input_conv_rules() -> None:
    weight = torch.randn(4, 3, 7, 7)
    one = adapt_input_conv(weight, 1)
    torch.testing.assert_close(one[:, 0], weight.sum(dim=1))
    nine = adapt_input_conv(weight, 9)
    assert nine.shape == (4, 9, 7, 7)
    torch.testing.assert_close(nine[:, 3:6], weight / 3)  # tiled and rescaled by 3/9
    # response to an input that is the same on every channel is kept
    grey = torch.randn(1, 1, 7, 7)
    response3 = (weight * grey.expand(1, 3, 7, 7)).sum()
    torch.testing.assert_close((nine * grey.expand(1, 9, 7, 7)).sum(), response3)
    torch.testing.assert_close((one * grey).sum(), response3)
    assert adapt_input_conv(weight, 3) is weight


def test_in_channels_adaptation_through_the_factory(tmp_path) -> None:
    """ImageNet-style 3-channel weights into a 9-channel hemorrhage network (3 windows x 3 slices)."""
    source = _tiny(seed=1, in_channels=3, num_outputs=1000)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "imagenet.pt")
    net = create_network(size="tiny", in_channels=9, num_outputs=6, pretrained_weights=tmp_path / "imagenet.pt")
    torch.testing.assert_close(net.state_dict()[FIRST_CONV_KEY], adapt_input_conv(source.layer0.conv1.weight, 9))
    torch.testing.assert_close(net.layer1.state_dict(), source.layer1.state_dict())
    # a 3-channel image repeated over 3 slices gives the same stem response as the image in the 3-channel net
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net.layer0.conv1(image.repeat(1, 3, 1, 1)), source.layer0.conv1(image))
    report = load_pretrained_weights(_tiny(), tmp_path / "imagenet.pt")
    assert report.input_adapted == (3, 9) and not report.head_loaded


def test_missing_file_is_a_user_error_and_nothing_is_downloaded(tmp_path) -> None:
    path = tmp_path / "se_resnext50_32x4d-a260b3a4.pth"
    with pytest.raises(UserInputError, match=re.escape(str(path)) + ".*never downloads"):
        create_network(size="tiny", pretrained_weights=path)


def test_unreadable_or_foreign_files_are_user_errors(tmp_path, full_net: nn.Module) -> None:
    for name in ("garbage.pt", "garbage.safetensors"):
        (tmp_path / name).write_bytes(b"not a checkpoint")
        with pytest.raises(UserInputError, match=f"cannot read weights from .*{name}"):
            create_network(size="tiny", pretrained_weights=tmp_path / name)
    pickled = tmp_path / "object.pt"
    torch.save(nn.Linear(2, 2), pickled)  # a whole pickled module: refused by weights_only=True
    with pytest.raises(UserInputError, match="cannot read weights from .*save a plain state_dict"):
        create_network(size="tiny", pretrained_weights=pickled)
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(UserInputError, match="no tensor in .* matches the network"):
        create_network(size="tiny", pretrained_weights=other)
    tiny_file = tmp_path / "tiny.pt"
    torch.save(_tiny(in_channels=3, num_outputs=2).state_dict(), tiny_file)
    with pytest.raises(UserInputError, match="do not fit this network .*another architecture, size"):
        load_pretrained_weights(full_net, tiny_file)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "resnet18"}, "unknown network name 'resnet18'; choose one of: seresnext50"),
        ({"size": "huge"}, "unknown network size 'huge'; choose one of: full, tiny"),
        ({"in_channels": 0}, "in_channels must be a positive integer"),
        ({"num_outputs": 2.5}, "num_outputs must be a positive integer"),
    ],
)
def test_bad_choices_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=re.escape(message)):
        create_network(**{"size": "tiny", **kwargs})


def test_stage_lookup_unwraps_data_parallel_and_refuses_foreign_networks() -> None:
    net = _tiny()
    wrapped = nn.DataParallel(net)
    assert stage_modules(wrapped)["layer2"] is net.layer2
    assert head_module(wrapped) is net.last_linear
    with pytest.raises(UserInputError, match="no stage"):
        stage_modules(nn.Sequential(nn.Linear(2, 2)))


def test_tiny_network_is_fast_on_one_core(record_property) -> None:
    """Measured, not asserted: a 64x64 9-channel batch of 16, forward + backward + SGD step on 1 thread."""
    net = create_network(size="tiny", in_channels=9, num_outputs=6)
    optimiser = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(16, 9, 64, 64), torch.randint(0, 2, (16, 6)).float()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for _ in range(4):
            start = time.perf_counter()
            optimiser.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(net(x), y)
            loss.backward()
            optimiser.step()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    step_s = float(np.median(times[1:]))
    record_property("tiny_train_step_s", step_s)
    print(f"tiny SE-ResNeXt: {_n_params(net)} parameters, {step_s * 1000:.0f} ms per 16x9x64x64 training step (1 core)")
    assert all(p.grad is not None for p in net.parameters())  # every stage and the head take part in training
