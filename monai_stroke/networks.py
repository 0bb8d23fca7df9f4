"""The one network factory: name + size + in_channels + outputs + weights -> ``nn.Module`` with named stages.

Every network built here has the stages of the paper's SE-ResNeXt50 (32x4d): ``layer0`` (the stem: 7x7 conv,
batch norm, ReLU, max pool), ``layer1`` .. ``layer4`` (SE-ResNeXt bottleneck stages), ``adaptive_avg_pool`` and
the linear head ``last_linear``. Adaptive transfer learning freezes stages by these names
(:data:`STAGES`, :func:`stage_modules`, :func:`head_module`), so they are identical for both sizes:

- ``size="full"``: MONAI's :class:`monai.networks.nets.SEResNext50` (blocks 3/4/6/3, 32 groups, ~25.5 M
  parameters at 3 inputs / 2 outputs), the paper's network.
- ``size="tiny"``: the same SE-ResNeXt family (same block class, same stem, same head, same module names) with
  one block per stage, 8 groups and narrow stages (bottleneck planes 16/32/64/128, ~0.3 M parameters), for CPU
  tests and the demo.

Pretrained weights are read from a local file only (``torch.load(..., weights_only=True)`` or safetensors);
nothing is ever downloaded. :func:`load_pretrained_weights` accepts MONAI-, Cadene ``pretrainedmodels``- and
timm-style key names (the usual sources of ImageNet SE-ResNeXt50 weights), skips a head whose number of
outputs differs, adapts the first convolution to another number of input channels, and reports the keys it
could not match.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.networks.blocks.squeeze_and_excitation import SEResNeXtBottleneck
from monai.networks.nets import SENet, SEResNext50
from torch import nn

from monai_stroke.errors import UserInputError

__all__ = [
    "STAGES",
    "HEAD",
    "FIRST_CONV_KEY",
    "NETWORK_NAMES",
    "NETWORK_SIZES",
    "WidthSENet",
    "WeightsReport",
    "create_network",
    "load_pretrained_weights",
    "adapt_input_conv",
    "stage_modules",
    "head_module",
]

logger = logging.getLogger(__name__)

#: Freezable stages, input to output. ``layer0`` is the stem.
STAGES: tuple[str, ...] = ("layer0", "layer1", "layer2", "layer3", "layer4")
#: Name of the classification head (a ``nn.Linear``).
HEAD = "last_linear"
#: State-dict key of the first convolution, the one adapted when the number of input channels differs.
FIRST_CONV_KEY = "layer0.conv1.weight"

# name -> size -> keyword arguments of the builder; "tiny" keeps the block type, stem and head of "full"
_ARCHITECTURES: dict[str, dict[str, dict[str, Any]]] = {
    "seresnext50": {
        "full": {},  # MONAI's SEResNext50 defaults: layers (3, 4, 6, 3), 32 groups, 64-channel stem
        "tiny": {
            "layers": (1, 1, 1, 1),
            "groups": 8,
            "reduction": 16,
            "inplanes": 16,
            "stage_planes": (16, 32, 64, 128),
        },
    },
}
NETWORK_NAMES: tuple[str, ...] = tuple(_ARCHITECTURES)
NETWORK_SIZES: tuple[str, ...] = ("full", "tiny")


class WidthSENet(SENet):
    """MONAI's :class:`~monai.networks.nets.SENet` with configurable stage widths.

    MONAI's SENet hard-codes the bottleneck planes of ``layer1`` .. ``layer4`` as 64/128/256/512; this subclass
    maps them to ``stage_planes`` and sizes ``last_linear`` to match, leaving every module name unchanged so a
    narrow network freezes and loads by the same stage names as the full one.

    Args:
        stage_planes: bottleneck planes of layer1..layer4 (the output channels are ``planes * block.expansion``).
            With SE-ResNeXt blocks the grouped width is ``floor(planes * 4 / 64) * groups``, so planes must be
            at least 16.
        kwargs: passed to :class:`~monai.networks.nets.SENet` (``spatial_dims``, ``in_channels``, ``block``,
            ``layers``, ``groups``, ``reduction``, ``inplanes``, ``num_classes``, ...).
    """

    _MONAI_PLANES: tuple[int, ...] = (64, 128, 256, 512)

    def __init__(self, stage_planes: Sequence[int] = (64, 128, 256, 512), **kwargs: Any) -> None:
        if len(stage_planes) != 4 or any(int(p) < 1 for p in stage_planes):
            raise UserInputError(f"stage_planes must be 4 positive integers (layer1..layer4), got {stage_planes!r}")
        # read by _make_layer, which SENet.__init__ calls, so it must exist before super().__init__
        self._stage_planes = tuple(int(p) for p in stage_planes)
        super().__init__(**kwargs)
        # SENet sized the head for 512 planes; keep its block expansion, change the planes
        expansion = self.last_linear.in_features // self._MONAI_PLANES[-1]
        self.last_linear = nn.Linear(self._stage_planes[-1] * expansion, self.last_linear.out_features)
        nn.init.constant_(self.last_linear.bias, 0)

    def _make_layer(self, block: Any, planes: int, blocks: int, groups: int, reduction: int, **kwargs: Any):
        planes = self._stage_planes[self._MONAI_PLANES.index(planes)]
        return super()._make_layer(block, planes, blocks, groups, reduction, **kwargs)


def _check_choice(kind: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise UserInputError(f"unknown network {kind} {value!r}; choose one of: {', '.join(choices)}")
    return value


def create_network(
    name: str = "seresnext50",
    size: str = "full",
    in_channels: int = 3,
    num_outputs: int = 1,
    pretrained_weights: str | os.PathLike | None = None,
    spatial_dims: int = 2,
) -> nn.Module:
    """Build a network with stages ``layer0`` .. ``layer4``, pooling and ``last_linear``.

    Args:
        name: architecture; one of :data:`NETWORK_NAMES`.
        size: ``"full"`` (the paper's network) or ``"tiny"`` (same family, narrow, for CPU tests and demos).
        in_channels: input channels (e.g. 3 windows x 3 slices = 9 for the hemorrhage network).
        num_outputs: outputs of ``last_linear`` (6 for hemorrhage: any + 5 subtypes; 1 per binary ischemic task).
        pretrained_weights: optional local file (``.pt``/``.pth``/``.ckpt`` read with ``weights_only=True``, or
            ``.safetensors``); see :func:`load_pretrained_weights`. Never downloaded. ``None`` or ``""``: random
            initialisation.
        spatial_dims: 2 for slice/crop classification (the paper), 3 for volumes (only without 2D weights).

    Returns:
        the network in training mode; ``net.factory_args`` holds the arguments above (minus the weights path)
        so that a checkpoint can record how to rebuild it.

    Raises:
        UserInputError: unknown name/size, bad channel/output counts, or a weights file that is missing,
            unreadable or does not fit the network.
    """
    name = _check_choice("name", str(name).lower(), NETWORK_NAMES)
    size = _check_choice("size", str(size).lower(), NETWORK_SIZES)
    for label, value in (("in_channels", in_channels), ("num_outputs", num_outputs)):
        if int(value) != value or value < 1:
            raise UserInputError(f"{label} must be a positive integer, got {value!r}")
    if spatial_dims not in (1, 2, 3):
        raise UserInputError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    common = {"spatial_dims": spatial_dims, "in_channels": int(in_channels), "num_classes": int(num_outputs)}
    options = dict(_ARCHITECTURES[name][size])
    if size == "full":
        net: nn.Module = SEResNext50(**common, **options)
    else:
        net = WidthSENet(
            block=SEResNeXtBottleneck,
            dropout_prob=None,
            downsample_kernel_size=1,
            input_3x3=False,
            **common,
            **options,
        )
    net.factory_args = {
        "name": name,
        "size": size,
        "in_channels": int(in_channels),
        "num_outputs": int(num_outputs),
        "spatial_dims": spatial_dims,
    }
    if pretrained_weights not in (None, ""):  # "" from a command-line override means none
        report = load_pretrained_weights(net, pretrained_weights)
        logger.info("%s", report.summary())
    return net


@dataclass
class WeightsReport:
    """What :func:`load_pretrained_weights` did.

    Attributes:
        path: the weights file.
        loaded: state-dict keys copied into the network.
        missing: network keys the file did not provide (left at their initial values).
        unexpected: file keys the network does not have (ignored).
        head_loaded: whether ``last_linear`` came from the file (``False`` when its shape differs or it is absent).
        input_adapted: ``(file_channels, network_channels)`` when the first convolution was adapted, else ``None``.
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    head_loaded: bool = False
    input_adapted: tuple[int, int] | None = None

    def summary(self) -> str:
        text = f"weights {self.path}: {len(self.loaded)} tensors loaded"
        if self.input_adapted:
            text += f", first conv adapted from {self.input_adapted[0]} to {self.input_adapted[1]} input channels"
        text += ", head loaded" if self.head_loaded else ", head newly initialised"
        if self.missing:
            text += f", {len(self.missing)} missing (e.g. {', '.join(self.missing[:3])})"
        if self.unexpected:
            text += f", {len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:3])})"
        return text


# Cadene pretrainedmodels / timm names -> MONAI SENet names (the patterns MONAI's own senet loader uses, which
# only runs after a download, plus timm's stem/SE/head names)
_KEY_RENAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^conv1\.(\w+)$"), r"layer0.conv1.\1"),  # timm stem
    (re.compile(r"^bn1\.(\w+)$"), r"layer0.bn1.\1"),
    (re.compile(r"^fc\.(\w+)$"), r"last_linear.\1"),  # timm head
    (re.compile(r"^(layer[1-4]\.\d+\.)se\.fc([12])\.(\w+)$"), r"\1se_module.fc\2.\3"),  # timm SE -> Cadene SE
    (re.compile(r"^(layer[1-4]\.\d+\.conv\d)\.(\w+)$"), r"\1.conv.\2"),
    (re.compile(r"^(layer[1-4]\.\d+\.)bn(\d)\.(\w+)$"), r"\1conv\2.adn.N.\3"),
    (re.compile(r"^(layer[1-4]\.\d+\.)se_module\.fc1\.(\w+)$"), r"\1se_layer.fc.0.\2"),
    (re.compile(r"^(layer[1-4]\.\d+\.)se_module\.fc2\.(\w+)$"), r"\1se_layer.fc.2.\2"),
    (re.compile(r"^(layer[1-4]\.\d+\.)downsample\.0\.(\w+)$"), r"\1project.conv.\2"),
    (re.compile(r"^(layer[1-4]\.\d+\.)downsample\.1\.(\w+)$"), r"\1project.adn.N.\2"),
)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "network.")  # DDP, torch.compile, Lightning-style
_NESTED_KEYS = ("state_dict", "model", "network")


def _to_monai_keys(state: Mapping[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key = key
        for prefix in _WRAPPER_PREFIXES:
            if new_key.startswith(prefix) and new_key not in model_keys:
                new_key = new_key[len(prefix) :]
        if new_key not in model_keys:
            for pattern, repl in _KEY_RENAMES:
                new_key = pattern.sub(repl, new_key)
        if ".se_layer.fc." in new_key and new_key.endswith(".weight") and value.ndim > 2:
            value = value.reshape(value.shape[0], value.shape[1])  # Cadene/timm SE uses 1x1 convs, MONAI Linear
        out[new_key] = value
    return out


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserInputError(
            f"pretrained weights file {str(path)!r} not found; monai-stroke never downloads weights - put the file "
            "there or pass pretrained_weights=None"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, OSError, ValueError, EOFError) as exc:
        raise UserInputError(
            f"cannot read weights from {str(path)!r} ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
            "save a plain state_dict with torch.save(net.state_dict(), path) or as .safetensors"
        ) from exc
    for nested in _NESTED_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(nested), Mapping):
            obj = obj[nested]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise UserInputError(
            f"{str(path)!r} holds no state_dict (a mapping of tensor names to tensors, optionally under "
            f"{'/'.join(_NESTED_KEYS)}); found {found}"
        )
    return dict(obj)


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-convolution weight ``(out, c_in, *k)`` to ``in_channels`` inputs (timm's rule, generalised).

    One input channel gets the sum of the filters over the file's channels (a grey image ``x`` repeated on
    every channel gives the same response). Otherwise the filters are tiled over the channels and cut to
    ``in_channels``, then scaled by ``c_in / in_channels`` so that the response to an input with the same value
    on every channel keeps the pretrained magnitude (what timm's ``adapt_input_conv`` does for 3 -> N).

    Args:
        weight: the pretrained weight.
        in_channels: input channels of the network that receives it.
    """
    c_in = weight.shape[1]
    if c_in == in_channels:
        return weight
    dtype = weight.dtype
    weight = weight.float()
    if in_channels == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        repeats = math.ceil(in_channels / c_in)
        tile = [1] * weight.ndim
        tile[1] = repeats
        adapted = weight.repeat(*tile)[:, :in_channels] * (c_in / in_channels)
    return adapted.to(dtype)


def load_pretrained_weights(net: nn.Module, path: str | os.PathLike) -> WeightsReport:
    """Load weights from a local file into ``net`` (in place).

    Accepts a state_dict, or a dict holding one under ``state_dict``, ``model`` or ``network``; MONAI, Cadene
    (``pretrainedmodels``) and timm SE-ResNeXt key names; a ``module.``/``_orig_mod.`` wrapper prefix. The head
    is skipped (and logged) when its shape differs, e.g. ImageNet's 1000 classes into a 6-output hemorrhage
    network; the first convolution is adapted with :func:`adapt_input_conv` when the channel count differs.
    Missing and unexpected keys are logged as warnings and returned.

    Args:
        net: a network from :func:`create_network` (or any module with the same key names).
        path: ``.safetensors`` file, or anything else readable by ``torch.load(..., weights_only=True)``.

    Raises:
        UserInputError: the file is missing or unreadable, holds no state_dict, matches none of the network's
            keys, or has a tensor of another shape outside the head and the first convolution (weights of
            another architecture or size).
    """
    path = Path(path)
    target = net.state_dict()
    state = _to_monai_keys(_read_state_dict(path), set(target))
    report = WeightsReport(path=str(path))

    if FIRST_CONV_KEY in state and FIRST_CONV_KEY in target:
        src, dst = state[FIRST_CONV_KEY], target[FIRST_CONV_KEY]
        if src.ndim == dst.ndim and src.shape[0] == dst.shape[0] and src.shape[1] != dst.shape[1]:
            state[FIRST_CONV_KEY] = adapt_input_conv(src, dst.shape[1])
            report.input_adapted = (int(src.shape[1]), int(dst.shape[1]))

    head_keys = [k for k in target if k.startswith(f"{HEAD}.")]
    head_fits = all(k in state and state[k].shape == target[k].shape for k in head_keys)
    if not head_fits:
        if any(k in state for k in head_keys):
            file_shape = tuple(state.get(f"{HEAD}.weight", torch.empty(0)).shape)
            logger.info(
                "head %s not loaded from %s: shape %s in the file, %s in the network (new outputs start untrained)",
                HEAD,
                path,
                file_shape,
                tuple(target[f"{HEAD}.weight"].shape),
            )
        for k in head_keys:
            state.pop(k, None)

    mismatched = [k for k in state if k in target and state[k].shape != target[k].shape]
    if mismatched:
        details = "; ".join(
            f"{k}: file {tuple(state[k].shape)} vs network {tuple(target[k].shape)}" for k in mismatched[:3]
        )
        raise UserInputError(
            f"weights in {str(path)!r} do not fit this network ({len(mismatched)} tensors differ in shape, e.g. "
            f"{details}); were they saved from another architecture, size or spatial_dims?"
        )
    report.loaded = sorted(k for k in state if k in target)
    if not report.loaded:
        raise UserInputError(
            f"no tensor in {str(path)!r} matches the network (file keys e.g. {', '.join(sorted(state)[:3])}); "
            "expected MONAI, Cadene pretrainedmodels or timm SE-ResNeXt names"
        )
    report.head_loaded = bool(head_keys) and all(k in state for k in head_keys)
    # BN batch counters are bookkeeping, not weights; files from other libraries rarely carry them
    report.missing = sorted(k for k in target if k not in state and not k.endswith("num_batches_tracked"))
    report.unexpected = sorted(k for k in state if k not in target)
    net.load_state_dict(state, strict=False)
    missing_outside_head = [k for k in report.missing if not k.startswith(f"{HEAD}.")]
    if missing_outside_head:
        logger.warning(
            "%d network tensors not in %s keep their random initialisation, e.g. %s",
            len(missing_outside_head),
            path,
            ", ".join(missing_outside_head[:5]),
        )
    if report.unexpected:
        logger.warning(
            "%d tensors in %s have no place in the network and were ignored, e.g. %s",
            len(report.unexpected),
            path,
            ", ".join(report.unexpected[:5]),
        )
    return report


def _unwrap(net: nn.Module) -> nn.Module:
    # DistributedDataParallel / DataParallel keep the real network in .module
    inner = getattr(net, "module", None)
    return inner if isinstance(inner, nn.Module) else net


def stage_modules(net: nn.Module) -> dict[str, nn.Module]:
    """The stages ``layer0`` .. ``layer4`` of ``net`` (unwrapping DDP), in input-to-output order.

    Args:
        net: a network from :func:`create_network`, possibly wrapped in (Distributed)DataParallel.
    """
    net = _unwrap(net)
    missing = [s for s in STAGES if not isinstance(getattr(net, s, None), nn.Module)]
    if missing:
        raise UserInputError(
            f"{type(net).__name__} has no stage(s) {', '.join(missing)}; build it with "
            "monai_stroke.networks.create_network"
        )
    return {s: getattr(net, s) for s in STAGES}


def head_module(net: nn.Module) -> nn.Module:
    """The classification head ``last_linear`` of ``net`` (unwrapping DDP).

    Args:
        net: a network from :func:`create_network`, possibly wrapped in (Distributed)DataParallel.
    """
    net = _unwrap(net)
    head = getattr(net, HEAD, None)
    if not isinstance(head, nn.Module):
        raise UserInputError(f"{type(net).__name__} has no head {HEAD!r}; build it with create_network")
    return head
