"""Freeze depths of adaptive transfer learning, and how a target network is initialised from a source network.

The paper freezes stages from the input towards the output: ``none`` (fine-tune everything), ``layer0`` (the
stem), ``layer0-1`` ... ``layer0-4`` (all five SE-ResNeXt stages), and ``all_conv`` (every convolution and
pooling layer: only the head learns). The control ``not_transfer`` trains the same network from ImageNet weights
(when a local weights file is given) or from random initialisation, without the source task.

**What "frozen" means here.** A frozen stage's parameters get ``requires_grad=False`` (no gradient, so no
optimiser update and no weight decay), *and* its batch-norm layers stay in eval mode even while the trainer
calls ``network.train()`` every iteration: they normalise with the source task's running statistics and never
update them. Without the second half a "frozen" stage would still drift, because batch-norm running means and
variances are buffers that move with every training batch. This is the usual choice (e.g. detectron2's
``FrozenBatchNorm``); it keeps a frozen stage a fixed function of its input.

**``layer0-4`` and ``all_conv``.** In SE-ResNeXt (MONAI's and Cadene's layout alike) every convolution and
pooling layer lives in ``layer0`` .. ``layer4``; the pooling has no parameters. The two depths therefore freeze
the same parameters and are the same experiment; :func:`equivalent_depths` detects this for any network, and
the search trains such a depth once and reports the other as ``same_as`` it (the paper lists both; its numbers
for "all conv-pooling" repeat other columns of its table exactly, which suggests the same).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from monai_stroke.errors import UserInputError
from monai_stroke.networks import FIRST_CONV_KEY, HEAD, STAGES, _unwrap, adapt_input_conv

__all__ = [
    "TRANSFER_DEPTHS",
    "CONTROL",
    "ALL_DEPTHS",
    "frozen_stages",
    "frozen_parameter_names",
    "equivalent_depths",
    "FreezeHandle",
    "apply_freeze",
    "transfer_backbone",
    "regroup_first_conv",
]

logger = logging.getLogger(__name__)

#: Freeze depths in the paper's order, from "fine-tune everything" to "train the head only".
TRANSFER_DEPTHS: tuple[str, ...] = ("none", "layer0", "layer0-1", "layer0-2", "layer0-3", "layer0-4", "all_conv")
#: The control: the same network trained without the source task.
CONTROL = "not_transfer"
ALL_DEPTHS: tuple[str, ...] = (*TRANSFER_DEPTHS, CONTROL)


def _check_depth(depth: str) -> None:
    if depth not in ALL_DEPTHS:
        raise UserInputError(f"unknown freeze depth {depth!r}; use one of {', '.join(ALL_DEPTHS)}")


def frozen_stages(depth: str) -> tuple[str, ...]:
    """Stage names frozen at ``depth`` (``all_conv`` is every stage; see :func:`frozen_parameter_names`)."""
    _check_depth(depth)
    if depth in ("none", CONTROL):
        return ()
    if depth == "all_conv":
        return STAGES
    if depth == "layer0":
        return ("layer0",)
    last = int(depth.split("-")[1])  # "layer0-3" -> stages 0..3
    return STAGES[: last + 1]


def _frozen_modules(net: nn.Module, depth: str) -> list[tuple[str, nn.Module]]:
    net = _unwrap(net)
    if depth == "all_conv":
        # everything but the classification head: convolutions, pooling, batch norm, squeeze-excitation
        return [(n, m) for n, m in net.named_children() if n != HEAD]
    return [(s, getattr(net, s)) for s in frozen_stages(depth)]


def frozen_parameter_names(net: nn.Module, depth: str) -> frozenset[str]:
    """Names (as in ``net.named_parameters()`` of the unwrapped network) of the parameters frozen at ``depth``."""
    _check_depth(depth)
    names = set()
    for prefix, module in _frozen_modules(net, depth):
        names.update(f"{prefix}.{n}" for n, _ in module.named_parameters())
    return frozenset(names)


def equivalent_depths(net: nn.Module, depths: Sequence[str]) -> dict[str, str]:
    """Map each depth that freezes exactly the parameters of an earlier depth in ``depths`` to that depth."""
    seen: dict[frozenset[str], str] = {}
    same_as: dict[str, str] = {}
    for depth in depths:
        if depth == CONTROL:
            continue
        key = frozen_parameter_names(net, depth)
        if key in seen:
            same_as[depth] = seen[key]
        else:
            seen[key] = depth
    return same_as


def _keep_eval(module: nn.Module, _inputs: object) -> None:
    if module.training:
        module.eval()


@dataclass
class FreezeHandle:
    """What :func:`apply_freeze` changed, so that it can be undone (the search reuses one network object)."""

    depth: str
    frozen_parameters: list[str]
    frozen_batchnorms: list[str]
    _hooks: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list, repr=False)
    _params: list[nn.Parameter] = field(default_factory=list, repr=False)

    def remove(self) -> None:
        """Unfreeze: gradients back on, batch norms follow ``train()``/``eval()`` again."""
        for hook in self._hooks:
            hook.remove()
        for p in self._params:
            p.requires_grad_(True)
        self._hooks.clear()
        self._params.clear()


def apply_freeze(net: nn.Module, depth: str) -> FreezeHandle:
    """Freeze the stages of ``depth`` in place: no gradients, and batch norm held in eval mode.

    Args:
        net: a network from :func:`monai_stroke.networks.create_network` (DDP-wrapped is fine).
        depth: one of :data:`ALL_DEPTHS`.

    Returns:
        a handle whose ``remove()`` undoes the freeze.
    """
    _check_depth(depth)
    handle = FreezeHandle(depth, [], [])
    for prefix, module in _frozen_modules(net, depth):
        for name, param in module.named_parameters():
            param.requires_grad_(False)
            handle._params.append(param)
            handle.frozen_parameters.append(f"{prefix}.{name}")
        for name, sub in module.named_modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.eval()
                # the trainer calls network.train() every iteration; the hook puts frozen BN back to eval first
                handle._hooks.append(sub.register_forward_pre_hook(_keep_eval))
                handle.frozen_batchnorms.append(f"{prefix}.{name}" if name else prefix)
    return handle


def regroup_first_conv(weight: torch.Tensor, slices: int, source_per_slice: int, target_per_slice: int) -> torch.Tensor:
    """Map the source's first-convolution filters onto the target's channel layout, slice by slice.

    Both networks see ``slices`` neighbouring slices, slice-major (``LesionConcat``'s order), but with different
    channels per slice: the hemorrhage source 3 HU windows (brain, subdural, bone), the ischemic target one
    narrow window (plus, optionally, the mirrored contralateral crop). For each slice the source filters are
    summed over its channels (the response to one grey value on all of them) and shared equally among the
    target's channels of that slice, so the filter keeps looking at the *same slice* it learned on.

    Args:
        weight: ``(out, slices * source_per_slice, *kernel)``.
        slices: number of stacked slices (``2 * neighbours + 1``) in both networks.
        source_per_slice: source channels per slice.
        target_per_slice: target channels per slice.
    """
    out_ch, c_in, *kernel = weight.shape
    if c_in != slices * source_per_slice:
        raise UserInputError(
            f"source first convolution has {c_in} input channels, not {slices} slices x {source_per_slice} channels"
        )
    per_slice = weight.float().reshape(out_ch, slices, source_per_slice, *kernel).sum(dim=2, keepdim=True)
    shared = per_slice.expand(out_ch, slices, target_per_slice, *kernel) / target_per_slice
    return shared.reshape(out_ch, slices * target_per_slice, *kernel).to(weight.dtype).clone()


def transfer_backbone(
    target: nn.Module,
    source_state_dict: Mapping[str, torch.Tensor],
    exclude: Iterable[str] = (HEAD,),
    slice_layout: tuple[int, int, int] | None = None,
) -> list[str]:
    """Copy the source network's backbone (everything but the head) into ``target``; the head stays new.

    Args:
        target: freshly built target network (new head for the target task).
        source_state_dict: the source (hemorrhage) network's ``state_dict``.
        exclude: top-level module names not transferred.
        slice_layout: ``(slices, source_per_slice, target_per_slice)`` when the two networks stack the same
            slices with different channels per slice: the first convolution is mapped by
            :func:`regroup_first_conv`. Without it, a different input-channel count is adapted by
            :func:`monai_stroke.networks.adapt_input_conv` (timm's rule).

    Returns:
        the keys copied.

    Raises:
        UserInputError: the source does not fit the target's backbone (another architecture or size), since a
            partial transfer would silently be a different experiment.
    """
    target = _unwrap(target)
    own = target.state_dict()
    excluded = tuple(f"{e}." for e in exclude)
    wanted = [k for k in own if not k.startswith(excluded)]
    source = {k.removeprefix("module."): v for k, v in source_state_dict.items()}
    if FIRST_CONV_KEY in source and FIRST_CONV_KEY in own and source[FIRST_CONV_KEY].shape != own[FIRST_CONV_KEY].shape:
        weight = source[FIRST_CONV_KEY]
        if slice_layout is not None:
            weight = regroup_first_conv(weight, *slice_layout)
        else:
            weight = adapt_input_conv(weight, own[FIRST_CONV_KEY].shape[1])
        source[FIRST_CONV_KEY] = weight
    missing = [k for k in wanted if k not in source]
    mismatched = [k for k in wanted if k in source and tuple(source[k].shape) != tuple(own[k].shape)]
    if missing or mismatched:
        example = (missing or mismatched)[0]
        detail = (
            f"shape {tuple(source[example].shape)} vs {tuple(own[example].shape)}" if example in source else "missing"
        )
        raise UserInputError(
            f"the source checkpoint does not fit the target network's backbone: {len(missing)} missing and "
            f"{len(mismatched)} mismatched tensors (e.g. {example}: {detail}); build the target with the source's "
            "network name and size"
        )
    target.load_state_dict({k: source[k] for k in wanted}, strict=False)
    return wanted
