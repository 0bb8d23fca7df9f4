"""A models folder of *untrained* networks with real contracts: for plumbing tests and latency benchmarks only.

The networks have random weights (their predictions mean nothing); everything else is what a trained models folder
holds: checkpoints in the ``monai-stroke-checkpoint`` format, contracts naming the shipped chains with their full
parameters, the template and atlas identities, decision thresholds. A test can pin an output with ``head_bias``
(e.g. a hemorrhage network that is always positive) to drive one branch of the cascade.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_stroke.contract import Contract, save_checkpoint
from monai_stroke.data.recipe import input_channels
from monai_stroke.engines.outputs import DEFAULT_AGGREGATION
from monai_stroke.inference.models import EARLY_SLOT, HEMORRHAGE_SLOT, OLD_SLOT, load_atlas
from monai_stroke.networks import create_network
from monai_stroke.transforms.chains import chain_params
from monai_stroke.transforms.intensity import parse_windows
from monai_stroke.transforms.regions import task_window
from monai_stroke.vocabulary import HEMORRHAGE_LABELS

__all__ = ["HEMORRHAGE_CHAIN", "ISCHEMIC_CHAIN", "hemorrhage_contract", "ischemic_contract", "write_untrained_models"]

HEMORRHAGE_CHAIN = "hemorrhage_slices"
ISCHEMIC_CHAIN = "ischemic_regions"
_UNTRAINED = {"bundle": None, "note": "untrained network: random weights, for plumbing tests and benchmarks only"}


def hemorrhage_contract(
    network_size: str = "tiny", spatial_size: Sequence[int] = (64, 64), neighbours: int = 1, threshold: float = 0.5
) -> Contract:
    """The contract of a hemorrhage network on the shipped slice chain (brain/subdural/bone windows)."""
    windows = [list(w) for w in parse_windows("hemorrhage")]
    params = chain_params(
        HEMORRHAGE_CHAIN, windows=windows, neighbours=int(neighbours), spatial_size=[int(s) for s in spatial_size]
    )
    return Contract(
        kind="hemorrhage",
        output_names=list(HEMORRHAGE_LABELS),
        network={
            "name": "seresnext50",
            "size": network_size,
            "in_channels": input_channels(windows, neighbours),
            "num_outputs": len(HEMORRHAGE_LABELS),
        },
        windows_hu=windows,
        neighbours=int(neighbours),
        spatial_size=[int(s) for s in spatial_size],
        chain=HEMORRHAGE_CHAIN,
        chain_params=params,
        decision_threshold=threshold,
        threshold_rule="fixed",
        aggregation=dict(DEFAULT_AGGREGATION),
        training=dict(_UNTRAINED),
    )


def ischemic_contract(
    task: str,
    network_size: str = "tiny",
    crop_size: Sequence[int] = (64, 64),
    contralateral: bool = True,
    neighbours: int = 1,
    template_spacing: float | Sequence[float] | None = None,
    registration: Mapping[str, Any] | None = None,
    atlas_dir: str | os.PathLike | None = None,
    threshold: float = 0.5,
    **chain_overrides: Any,
) -> Contract:
    """The contract of an ischemic region network on the shipped region chain, for ``task``.

    Args:
        task: ``early_vs_intact`` or ``old_vs_intact``.
        network_size: ``tiny`` or ``full``.
        crop_size: crop size ``(H, W)``.
        contralateral: mirrored contralateral crop as extra channels.
        neighbours: template slices stacked on each side of the target.
        template_spacing: registration output grid (mm); None: the template's 1 mm.
        registration: overrides of the registration parameters.
        atlas_dir: the atlas (None: built-in); its identities go into the contract.
        threshold: decision threshold.
        chain_overrides: other chain parameters (``mask_outside``, ``margin_mm``, ...).
    """
    atlas = load_atlas(atlas_dir)
    params = chain_params(
        ISCHEMIC_CHAIN,
        task=task,
        crop_size=[int(s) for s in crop_size],
        contralateral=bool(contralateral),
        neighbours=int(neighbours),
        template_spacing=template_spacing,
        registration=dict(registration or {}),
        atlas=None if atlas_dir is None else str(atlas_dir),
        **chain_overrides,
    )
    window = list(task_window(task, params.get("window")))
    in_channels = input_channels([window], neighbours, 2 if contralateral else 1)
    return Contract(
        kind="ischemic",
        output_names=[task],
        network={"name": "seresnext50", "size": network_size, "in_channels": in_channels, "num_outputs": 1},
        windows_hu=[window],
        neighbours=int(neighbours),
        spatial_size=[int(s) for s in crop_size],
        chain=ISCHEMIC_CHAIN,
        chain_params=params,
        task=task,
        decision_threshold=threshold,
        threshold_rule="fixed",
        template_identity=atlas.template_identity,
        atlas_identity=atlas.identity,
        training=dict(_UNTRAINED),
    )


def _network(contract: Contract, head_bias: float | None, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = create_network(**contract.network)
    if head_bias is not None:
        with torch.no_grad():
            # a constant logit: the output no longer depends on the image, so a test can choose the branch
            net.last_linear.weight.zero_()
            net.last_linear.bias.fill_(float(head_bias))
    return net.eval()


def write_untrained_models(
    models_dir: str | os.PathLike,
    network_size: str = "tiny",
    hemorrhage_spatial_size: Sequence[int] = (64, 64),
    crop_size: Sequence[int] = (64, 64),
    hemorrhage_bias: float | None = None,
    ischemic_bias: float | None = None,
    seed: int = 0,
    **ischemic_options: Any,
) -> Path:
    """Write ``hemorrhage/``, ``early_vs_intact/`` and ``old_vs_intact/`` ``model.pt`` with random weights.

    Args:
        models_dir: the models folder to write.
        network_size: ``tiny`` (CPU tests) or ``full`` (SE-ResNeXt50, for latency benchmarks).
        hemorrhage_spatial_size: in-plane size of the hemorrhage input.
        crop_size: region crop size.
        hemorrhage_bias: pin the hemorrhage logits to this value (e.g. -20: never positive; 20: always).
        ischemic_bias: pin the ischemic logits likewise.
        seed: weight initialisation seed.
        ischemic_options: passed to :func:`ischemic_contract` (``template_spacing``, ``registration``, ...).
    """
    root = Path(models_dir)
    contract = hemorrhage_contract(network_size, hemorrhage_spatial_size)
    net = _network(contract, hemorrhage_bias, seed)
    save_checkpoint(root / HEMORRHAGE_SLOT / "model.pt", net.state_dict(), contract)
    for offset, task in enumerate((EARLY_SLOT, OLD_SLOT), start=1):
        contract = ischemic_contract(task, network_size, crop_size, **ischemic_options)
        net = _network(contract, ischemic_bias, seed + offset)
        save_checkpoint(root / task / "model.pt", net.state_dict(), contract)
    return root
