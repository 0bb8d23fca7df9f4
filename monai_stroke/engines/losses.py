"""Losses of the classification bundles."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RSNA_OUTPUT_WEIGHTS", "WeightedBCEWithLogitsLoss"]

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
