"""Losses of the classification bundles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RSNA_OUTPUT_WEIGHTS", "WeightedBCEWithLogitsLoss", "balanced_pos_weight"]

#: Per-output weights of the hemorrhage loss, in ``HEMORRHAGE_LABELS`` order: 2 for "any", 1 for each subtype.
#: This is the RSNA Intracranial Hemorrhage Detection challenge's weighted multi-label log loss, which the winning
#: teams trained on directly; it makes the series-level decision (driven by "any") count as much as two subtypes.
RSNA_OUTPUT_WEIGHTS: tuple[float, ...] = (2.0, 1.0, 1.0, 1.0, 1.0, 1.0)


class WeightedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy on logits, averaged over samples and output-weighted: ``sum_k w_k BCE_k / sum_k w_k``.

    With one output and no weights it is ``torch.nn.BCEWithLogitsLoss`` (the ischemic tasks); with
    :data:`RSNA_OUTPUT_WEIGHTS` it is the RSNA challenge metric (the hemorrhage network).

    Args:
        weights: one weight per output (None: all 1).
        pos_weight: optional weight of positive examples per output (class imbalance), as in ``BCEWithLogitsLoss``.
    """

    def __init__(self, weights: Sequence[float] | None = None, pos_weight: Sequence[float] | None = None) -> None:
        super().__init__()
        w = None if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        if w is not None and (w.ndim != 1 or (w < 0).any() or w.sum() <= 0):
            raise ValueError(f"weights must be non-negative, one per output, not all zero; got {weights!r}")
        self.register_buffer("weights", w, persistent=False)
        pw = None if pos_weight is None else torch.as_tensor(list(pos_weight), dtype=torch.float32)
        self.register_buffer("pos_weight", pw, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` ``(N, K)`` against 0/1 ``target`` ``(N, K)`` (``(N,)`` is read as ``(N, 1)``)."""
        logits = logits.reshape(logits.shape[0], -1).float()
        target = target.reshape(target.shape[0], -1).to(logits)
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        per_output = F.binary_cross_entropy_with_logits(
            logits, target, pos_weight=self.pos_weight, reduction="none"
        ).mean(dim=0)
        if self.weights is None:
            return per_output.mean()
        if self.weights.numel() != per_output.numel():
            raise ValueError(f"{self.weights.numel()} loss weights for {per_output.numel()} outputs")
        return (per_output * self.weights).sum() / self.weights.sum()


def balanced_pos_weight(labels: Sequence[float] | np.ndarray | torch.Tensor, max_weight: float = 50.0) -> list[float]:
    """``pos_weight`` for :class:`WeightedBCEWithLogitsLoss` that gives the positives of each output as much total
    weight as its negatives: ``negatives / positives``, per output, clipped to ``[1, max_weight]``.

    Early ischemic change and old infarction are a few percent of the region crops; unweighted, a small network
    finds "always intact" a deep minimum of the BCE and never leaves it. An output with no positives gets 1 (there
    is nothing to up-weight; the clip keeps one stray positive from dominating every batch).

    Args:
        labels: 0/1 training labels ``(N,)`` or ``(N, K)``.
        max_weight: the largest weight given.
    """
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    y = y.reshape(y.shape[0], -1) if y.ndim else y.reshape(1, 1)
    if y.numel() == 0:
        raise ValueError("balanced_pos_weight needs at least one label")
    positives = y.sum(dim=0)
    negatives = y.shape[0] - positives
    ratio = torch.where(positives > 0, negatives / positives.clamp(min=1.0), torch.ones_like(positives))
    return [float(w) for w in ratio.clamp(1.0, float(max_weight))]
