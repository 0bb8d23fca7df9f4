"""The ATL objective and the search plan: which freeze depth trains next, which are out, which is chosen.

Paper eq. 2, for a freeze depth ``theta`` fine-tuned for ``e`` epochs with validation BCE losses
``L_1 .. L_e``::

    f(theta) = w1 * L_1 + w2 * (L_1 + ... + L_e) / e          chosen depth = argmin_theta f(theta)

The first term rewards a good start (how well the transferred features fit the target task right away), the
second the whole fine-tuning curve.

Two strategies:

- ``exhaustive`` (the paper): every depth trains ``epochs_per_depth`` epochs.
- ``halving`` (successive halving over depths, eta = 2): every depth trains 1 epoch; the better half by the
  running ``f`` (computed over the epochs all survivors have) goes on to 2 epochs, the better half of those to
  4, ... and the survivors of the last rung train to ``epochs_per_depth``. The ``w1 * L_1`` term is itself an
  epoch-1 score, so early rungs already carry much of the ranking signal.

The plan is a pure function of the losses recorded so far, so a search that was killed and restarted with
the same command recomputes exactly where it stands and never retrains a depth it had finished. Depths that
freeze the same parameters as an earlier one (``same_as``) are not trained twice. The control
``not_transfer`` follows the rungs (so that it finishes with everything else) but never competes or gets chosen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from monai_stroke.errors import UserInputError
from monai_stroke.transfer.depths import ALL_DEPTHS, CONTROL

__all__ = ["STRATEGIES", "atl_objective", "Job", "PlanStatus", "SearchPlan"]

STRATEGIES: tuple[str, ...] = ("exhaustive", "halving")


def atl_objective(val_losses: Sequence[float], w1: float = 1.0, w2: float = 1.0, epochs: int | None = None) -> float:
    """``f = w1 * L_1 + w2 * mean(L_1 .. L_e)`` over the first ``epochs`` losses (all of them by default)."""
    losses = list(val_losses if epochs is None else val_losses[:epochs])
    if not losses:
        raise ValueError("the ATL objective needs at least one validation loss")
    return float(w1 * losses[0] + w2 * sum(losses) / len(losses))


@dataclass(frozen=True)
class Job:
    """Train ``depth`` until it has ``until_epoch`` epochs."""

    depth: str
    until_epoch: int


@dataclass
class PlanStatus:
    """Where a search stands, derived from its losses.

    Attributes:
        rung_epochs: epoch count every current survivor must reach before the next decision.
        survivors: depths still competing (in depth order).
        eliminated: depth -> number of epochs it had when it was dropped.
        jobs: what must run now (all ranks together), in a deterministic order.
        done: no job left; ``chosen`` is set.
        chosen: argmin of f over the transfer depths that trained the full ``epochs_per_depth``.
    """

    rung_epochs: int
    survivors: list[str]
    eliminated: dict[str, int] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    done: bool = False
    chosen: str | None = None


class SearchPlan:
    """Decides, from the validation losses recorded so far, which freeze depth trains next.

    Args:
        depths: depths to search, any of :data:`~monai_stroke.transfer.depths.ALL_DEPTHS` in the paper's order;
            ``not_transfer`` among them is the control.
        epochs_per_depth: ``e``, the fine-tuning epochs of a fully trained depth.
        strategy: ``"exhaustive"`` or ``"halving"``.
        w1: weight of the first-epoch loss in f.
        w2: weight of the mean loss in f.
        same_as: depth -> earlier depth freezing the same parameters (see ``equivalent_depths``); such a depth
            is not trained and reports its twin's results.
        eta: halving factor (keep ``ceil(n / eta)`` at each rung).
    """

    def __init__(
        self,
        depths: Sequence[str],
        epochs_per_depth: int,
        strategy: str = "exhaustive",
        w1: float = 1.0,
        w2: float = 1.0,
        same_as: Mapping[str, str] | None = None,
        eta: int = 2,
    ) -> None:
        unknown = [d for d in depths if d not in ALL_DEPTHS]
        if unknown:
            raise UserInputError(f"unknown freeze depth(s) {', '.join(unknown)}; use {', '.join(ALL_DEPTHS)}")
        if len(set(depths)) != len(depths):
            raise UserInputError(f"freeze depths listed twice: {list(depths)}")
        if strategy not in STRATEGIES:
            raise UserInputError(f"unknown search strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
        if int(epochs_per_depth) < 1:
            raise UserInputError(f"epochs_per_depth must be >= 1, got {epochs_per_depth}")
        if eta < 2:
            raise UserInputError(f"eta must be >= 2, got {eta}")
        self.depths = [d for d in ALL_DEPTHS if d in depths]  # the paper's order, whatever order was given
        self.epochs_per_depth = int(epochs_per_depth)
        self.strategy = strategy
        self.w1, self.w2 = float(w1), float(w2)
        self.same_as = {k: v for k, v in (same_as or {}).items() if k in self.depths and v in self.depths}
        self.eta = int(eta)
        self.control = CONTROL if CONTROL in self.depths else None
        self.candidates = [d for d in self.depths if d != CONTROL and d not in self.same_as]
        if not self.candidates:
            raise UserInputError("the search needs at least one transfer depth besides not_transfer")

    def config(self) -> dict:
        """What must match for a restarted search to continue this one."""
        return {
            "depths": self.depths,
            "epochs_per_depth": self.epochs_per_depth,
            "strategy": self.strategy,
            "w1": self.w1,
            "w2": self.w2,
            "same_as": self.same_as,
            "eta": self.eta,
        }

    def rungs(self) -> list[int]:
        """Epoch counts at which halving decides: 1, 2, 4, ..., e (exhaustive: just e)."""
        if self.strategy == "exhaustive":
            return [self.epochs_per_depth]
        out = [1]
        while out[-1] < self.epochs_per_depth:
            out.append(min(2 * out[-1], self.epochs_per_depth))
        return out

    def objective(self, losses: Sequence[float], epochs: int | None = None) -> float:
        return atl_objective(losses, self.w1, self.w2, epochs)

    def status(self, losses: Mapping[str, Sequence[float]]) -> PlanStatus:
        """Replay the decisions the recorded ``losses`` (depth -> per-epoch validation losses) imply."""
        trained = {d: len(losses.get(d, ())) for d in self.depths}
        survivors = list(self.candidates)
        eliminated: dict[str, int] = {}
        rungs = self.rungs()
        for i, rung in enumerate(rungs):
            jobs = [Job(d, rung) for d in survivors if trained[d] < rung]
            if self.control and trained[self.control] < rung:
                jobs.append(Job(self.control, rung))
            if jobs:
                return PlanStatus(rung, survivors, eliminated, jobs)
            if i == len(rungs) - 1:
                break
            # rank by f over the epochs every survivor has at this rung; ties keep the paper's depth order
            keep = max(1, math.ceil(len(survivors) / self.eta))
            ranked = sorted(survivors, key=lambda d: (self.objective(losses[d], rung), self.depths.index(d)))
            for d in ranked[keep:]:
                eliminated[d] = rung
            survivors = [d for d in survivors if d in ranked[:keep]]
        chosen = min(
            survivors, key=lambda d: (self.objective(losses[d], self.epochs_per_depth), self.depths.index(d))
        )
        return PlanStatus(rungs[-1], survivors, eliminated, [], done=True, chosen=chosen)

    def jobs_for_rank(self, losses: Mapping[str, Sequence[float]], rank: int = 0, world_size: int = 1) -> list[Job]:
        """This rank's share of the jobs that can run now (depth-parallel search: one depth per process/GPU)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        return self.status(losses).jobs[rank::world_size]

    def total_epochs(self, losses: Mapping[str, Sequence[float]]) -> int:
        """Epochs trained so far over all depths (the cost the benchmark compares)."""
        return sum(len(losses.get(d, ())) for d in self.depths)
