"""Multi-process training under ``torchrun``: one process per GPU (NCCL) or per CPU worker (gloo).

The bundles' ``multi_gpu_train.yaml`` calls :func:`init_distributed` in ``initialize``, wraps the network with
:func:`wrap_distributed` and uses MONAI's ``DistributedSampler``; everything that writes files (checkpoints,
TensorBoard, evaluation) asks :func:`is_rank_zero` first, so N processes write what one would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "init_distributed",
    "cleanup_distributed",
    "distributed_device",
    "wrap_distributed",
    "unwrap",
    "rank",
    "world_size",
    "is_rank_zero",
    "rank_zero_only",
    "set_seed",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_rank_zero() -> bool:
    """Whether this process writes files and logs (rank 0, or the only process)."""
    return rank() == 0


def distributed_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when GPUs are visible, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def init_distributed(backend: str | None = None) -> torch.device:
    """Join the process group ``torchrun`` set up (NCCL on GPU, gloo on CPU) and return this rank's device.

    Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) nothing is initialised and the single device is
    returned, so a multi-GPU config also runs as one process.

    Args:
        backend: ``"nccl"``, ``"gloo"`` or None to choose by device.
    """
    device = distributed_device()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        logger.info("rank %d of %d on %s (%s)", rank(), world_size(), device, backend)
    return device


def cleanup_distributed() -> None:
    """Leave the process group, if any (the bundles' ``finalize``)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap_distributed(network: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """The network in ``DistributedDataParallel`` when a process group is up, else unchanged.

    Args:
        network: the network, already on ``device``.
        device: this rank's device (``device_ids`` for GPUs; none for CPU/gloo).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return network
    device = torch.device(device) if device is not None else next(network.parameters()).device
    ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(network, device_ids=ids)


def unwrap(network: nn.Module) -> nn.Module:
    """The network inside (Distributed)DataParallel."""
    inner = getattr(network, "module", None)
    return inner if isinstance(inner, nn.Module) else network


def rank_zero_only(items: Sequence[T]) -> list[T]:
    """``items`` on rank 0, an empty list on the other ranks (e.g. handlers that log or write files)."""
    return list(items) if is_rank_zero() else []


def set_seed(seed: int | None) -> None:
    """MONAI's ``set_determinism`` with the rank added, so ranks draw different augmentations.

    DDP copies rank 0's initial weights to every rank, so different seeds do not give different networks.
    """
    from monai.utils import set_determinism

    if seed is None:
        set_determinism(None)
        return
    set_determinism(seed=int(seed) + rank())
