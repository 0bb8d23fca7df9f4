"""Adaptive transfer learning: freeze depths, the paper's objective f, exhaustive/halving search, resume state,
and the ATL workflow handler that runs the search inside MONAI's engines (bundles/adaptive_transfer)."""

from __future__ import annotations

from monai_stroke.transfer.depths import (
    ALL_DEPTHS,
    CONTROL,
    TRANSFER_DEPTHS,
    FreezeHandle,
    apply_freeze,
    equivalent_depths,
    frozen_parameter_names,
    frozen_stages,
    regroup_first_conv,
    transfer_backbone,
)
from monai_stroke.transfer.handler import (
    AdaptiveTransferHandler,
    cleanup_depth_parallel,
    epoch_seed,
    init_depth_parallel,
    slice_layout,
)
from monai_stroke.transfer.report import search_table, write_search_outputs
from monai_stroke.transfer.schedule import STRATEGIES, Job, PlanStatus, SearchPlan, atl_objective
from monai_stroke.transfer.state import STATE_FILE, ATLState

__all__ = [
    "ALL_DEPTHS",
    "CONTROL",
    "TRANSFER_DEPTHS",
    "FreezeHandle",
    "apply_freeze",
    "equivalent_depths",
    "frozen_parameter_names",
    "frozen_stages",
    "regroup_first_conv",
    "transfer_backbone",
    "STRATEGIES",
    "Job",
    "PlanStatus",
    "SearchPlan",
    "atl_objective",
    "STATE_FILE",
    "ATLState",
    "AdaptiveTransferHandler",
    "cleanup_depth_parallel",
    "epoch_seed",
    "init_depth_parallel",
    "slice_layout",
    "search_table",
    "write_search_outputs",
]
