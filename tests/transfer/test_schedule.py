from __future__ import annotations

import numpy as np
import pytest

from monai_stroke.errors import UserInputError
from monai_stroke.transfer.depths import CONTROL, TRANSFER_DEPTHS
from monai_stroke.transfer.schedule import SearchPlan, atl_objective


def test_objective_is_paper_eq2() -> None:
    losses = [0.7, 0.6, 0.5, 0.4]
    assert atl_objective(losses, w1=1, w2=1) == pytest.approx(0.7 + (0.7 + 0.6 + 0.5 + 0.4) / 4)
    assert atl_objective(losses, w1=2, w2=0.5) == pytest.approx(1.4 + 0.5 * 0.55)
    assert atl_objective(losses, epochs=2) == pytest.approx(0.7 + 0.65)


def _run(plan: SearchPlan, curves: dict[str, list[float]]) -> tuple[dict[str, list[float]], list]:
    """Drive a plan to the end, 'training' each job by reading the depth's loss curve."""
    losses: dict[str, list[float]] = {}
    order = []
    while not (status := plan.status(losses)).done:
        for job in status.jobs:
            have = losses.setdefault(job.depth, [])
            order.append(job)
            have.extend(curves[job.depth][len(have) : job.until_epoch])
    return losses, order


def _curves(seed: int, e: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    out = {}
    for d in (*TRANSFER_DEPTHS, CONTROL):
        start, rate = rng.uniform(0.55, 0.75), rng.uniform(0.0, 0.06)
        out[d] = [float(start - rate * k + rng.normal(0, 0.005)) for k in range(e)]
    return out


def test_exhaustive_trains_every_depth_fully_and_picks_argmin() -> None:
    curves = _curves(0, 4)
    plan = SearchPlan([*TRANSFER_DEPTHS, CONTROL], 4, "exhaustive")
    losses, _ = _run(plan, curves)
    assert all(len(losses[d]) == 4 for d in plan.depths)
    status = plan.status(losses)
    expected = min(TRANSFER_DEPTHS, key=lambda d: atl_objective(curves[d]))
    assert status.done and status.chosen == expected
    assert status.chosen != CONTROL


def test_control_is_never_chosen_even_when_best() -> None:
    curves = _curves(1, 2)
    curves[CONTROL] = [0.01, 0.01]
    losses, _ = _run(SearchPlan([*TRANSFER_DEPTHS, CONTROL], 2, "exhaustive"), curves)
    assert SearchPlan([*TRANSFER_DEPTHS, CONTROL], 2, "exhaustive").status(losses).chosen != CONTROL


@pytest.mark.parametrize("e", [4, 8])
def test_halving_spends_fewer_epochs_and_finds_a_clear_winner(e: int) -> None:
    curves = _curves(2, e)
    curves["layer0"] = [0.40 - 0.02 * k for k in range(e)]  # clearly best from epoch 1 on
    depths = [*TRANSFER_DEPTHS, CONTROL]
    ex_losses, _ = _run(SearchPlan(depths, e, "exhaustive"), curves)
    plan = SearchPlan(depths, e, "halving")
    hv_losses, _ = _run(plan, curves)
    status = plan.status(hv_losses)
    assert status.chosen == "layer0"
    assert plan.total_epochs(hv_losses) < SearchPlan(depths, e, "exhaustive").total_epochs(ex_losses)
    # the survivors and the control trained the full e; the eliminated ones stopped at a rung
    assert len(hv_losses["layer0"]) == e and len(hv_losses[CONTROL]) == e
    assert all(len(hv_losses[d]) == r for d, r in status.eliminated.items())
    assert set(status.eliminated) | set(status.survivors) == set(TRANSFER_DEPTHS)


def test_halving_rungs() -> None:
    assert SearchPlan(["none"], 8, "halving").rungs() == [1, 2, 4, 8]
    assert SearchPlan(["none"], 5, "halving").rungs() == [1, 2, 4, 5]
    assert SearchPlan(["none"], 1, "halving").rungs() == [1]
    assert SearchPlan(["none"], 5, "exhaustive").rungs() == [5]


@pytest.mark.parametrize("strategy", ["exhaustive", "halving"])
def test_replay_from_any_prefix_never_retrains(strategy: str) -> None:
    """A search killed after any number of epochs continues with exactly the epochs still missing."""
    curves = _curves(3, 4)
    plan = SearchPlan([*TRANSFER_DEPTHS, CONTROL], 4, strategy)
    full, order = _run(plan, curves)
    # the (depth, epoch index) sequence in the order an uninterrupted search trains them
    sequence, count = [], {}
    for job in order:
        for k in range(count.get(job.depth, 0), job.until_epoch):
            sequence.append((job.depth, k))
        count[job.depth] = job.until_epoch
    for cut in range(len(sequence) + 1):
        partial: dict[str, list[float]] = {}
        for depth, k in sequence[:cut]:
            partial.setdefault(depth, []).append(curves[depth][k])
        resumed = _continue(plan, curves, partial)
        assert resumed == full  # same epochs, nothing trained twice, nothing skipped
        assert plan.status(resumed).chosen == plan.status(full).chosen


def _continue(plan: SearchPlan, curves, losses):
    losses = {k: list(v) for k, v in losses.items()}
    while not (status := plan.status(losses)).done:
        for job in status.jobs:
            have = losses.setdefault(job.depth, [])
            have.extend(curves[job.depth][len(have) : job.until_epoch])
    return losses


def test_same_as_depths_are_not_trained() -> None:
    curves = _curves(4, 2)
    plan = SearchPlan([*TRANSFER_DEPTHS, CONTROL], 2, "exhaustive", same_as={"all_conv": "layer0-4"})
    losses, _ = _run(plan, curves)
    assert "all_conv" not in losses


def test_jobs_split_over_ranks_cover_everything_once() -> None:
    plan = SearchPlan([*TRANSFER_DEPTHS, CONTROL], 3, "halving")
    all_jobs = plan.status({}).jobs
    split = [plan.jobs_for_rank({}, r, 3) for r in range(3)]
    assert sorted(j.depth for part in split for j in part) == sorted(j.depth for j in all_jobs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depths=["layer9"], epochs_per_depth=2), "unknown freeze depth"),
        (dict(depths=["none"], epochs_per_depth=0), "epochs_per_depth"),
        (dict(depths=["none"], epochs_per_depth=2, strategy="random"), "unknown search strategy"),
        (dict(depths=[CONTROL], epochs_per_depth=2), "at least one transfer depth"),
    ],
)
def test_bad_plans(kwargs, message) -> None:
    with pytest.raises(UserInputError, match=message):
        SearchPlan(**kwargs)
