"""Engine pieces of the classification bundles: handlers, losses, output grouping, multi-process helpers.

The bundles build MONAI's ``SupervisedTrainer``/``SupervisedEvaluator`` in their configs and attach these:
:class:`PredictionCollector` -> :class:`BestLossCheckpoint` (lowest validation loss, thresholds, contract) ->
TensorBoard handlers; :class:`EvaluationWriter` / :class:`PredictionWriter` for evaluate/inference.
"""

from __future__ import annotations

from monai_stroke.engines.distributed import (
    cleanup_distributed,
    distributed_device,
    init_distributed,
    is_rank_zero,
    rank,
    rank_zero_only,
    set_seed,
    unwrap,
    world_size,
    wrap_distributed,
)
from monai_stroke.engines.handlers import (
    BestLossCheckpoint,
    EvaluationWriter,
    LearningRateLogger,
    NullSummaryWriter,
    PredictionCollector,
    PredictionWriter,
    ProgressBar,
    TensorBoardROC,
    TensorBoardSampleGrid,
    TrainedModel,
    summary_writer,
)
from monai_stroke.engines.losses import RSNA_OUTPUT_WEIGHTS, WeightedBCEWithLogitsLoss, balanced_pos_weight
from monai_stroke.engines.outputs import (
    DEFAULT_AGGREGATION,
    Outputs,
    Predictions,
    RegionOutputs,
    SliceOutputs,
    ThresholdChoice,
    aggregate_slices,
    outputs_for,
)

__all__ = [
    "cleanup_distributed",
    "distributed_device",
    "init_distributed",
    "is_rank_zero",
    "rank",
    "rank_zero_only",
    "set_seed",
    "unwrap",
    "world_size",
    "wrap_distributed",
    "BestLossCheckpoint",
    "EvaluationWriter",
    "LearningRateLogger",
    "NullSummaryWriter",
    "PredictionCollector",
    "PredictionWriter",
    "ProgressBar",
    "TensorBoardROC",
    "TensorBoardSampleGrid",
    "TrainedModel",
    "summary_writer",
    "RSNA_OUTPUT_WEIGHTS",
    "WeightedBCEWithLogitsLoss",
    "balanced_pos_weight",
    "DEFAULT_AGGREGATION",
    "Outputs",
    "Predictions",
    "RegionOutputs",
    "SliceOutputs",
    "ThresholdChoice",
    "aggregate_slices",
    "outputs_for",
]
