"""The ATL workflow handler inside MONAI's engines, on a tiny in-memory task (see atl_helpers.py).

One exhaustive and one halving search are run once per module and read by several tests; the resume test kills a
search running in a subprocess with SIGKILL and reruns it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from atl_helpers import TASK, CropDataset, build_search, make_source_checkpoint
from torch.nn import functional as F

from monai_stroke.contract import Contract, load_checkpoint, save_checkpoint
from monai_stroke.engines import WeightedBCEWithLogitsLoss
from monai_stroke.networks import FIRST_CONV_KEY, HEAD, STAGES, create_network
from monai_stroke.transfer import CONTROL, atl_objective, epoch_seed

DEPTHS = ["none", "layer0-1", "layer0-4", "all_conv", CONTROL]
W1, W2 = 0.5, 2.0
HERE = Path(__file__).parent


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny networks: extra threads only add synchronisation on a shared CPU (and change float reduction order)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_source_checkpoint(tmp_path_factory.mktemp("source") / "model.pt")


@pytest.fixture(scope="module")
def exhaustive(tmp_path_factory, source):
    out = tmp_path_factory.mktemp("exhaustive")
    handler, _ = build_search(out, source, 2, depths=DEPTHS, w1=W1, w2=W2)
    return handler, handler.run(), out


@pytest.fixture(scope="module")
def halving(tmp_path_factory, source):
    out = tmp_path_factory.mktemp("halving")
    handler, _ = build_search(out, source, 2, depths=DEPTHS, w1=W1, w2=W2, search="halving")
    return handler, handler.run(), out


def _progress(out: Path, depth: str) -> dict:
    return json.loads((out / "atl" / depth / "progress.json").read_text())


def test_f_is_computed_exactly_from_the_recorded_losses_and_argmin_is_chosen(exhaustive) -> None:
    handler, choice, out = exhaustive
    losses = {d: _progress(out, d)["val_losses"] for d in ("none", "layer0-1", "layer0-4", CONTROL)}
    f = {d: W1 * v[0] + W2 * sum(v) / len(v) for d, v in losses.items()}
    candidates = ["none", "layer0-1", "layer0-4"]  # all_conv is layer0-4 again; the control never competes
    assert choice["theta"] == min(candidates, key=f.get)
    assert choice["f"] == pytest.approx(f[choice["theta"]], rel=1e-12)
    assert (choice["w1"], choice["w2"], choice["search"]) == (W1, W2, "exhaustive")
    table = pd.read_csv(out / "atl_table.csv").set_index("theta")
    for depth, values in losses.items():
        assert json.loads(table.loc[depth, "val_losses"]) == pytest.approx(values, abs=1e-6)
        assert table.loc[depth, "f"] == pytest.approx(f[depth], abs=1e-4)
    assert table["chosen"].sum() == 1 and table.loc[choice["theta"], "chosen"]
    state = json.loads((out / "atl_state.json").read_text())
    assert state["completed"]["none"]["val_losses"] == losses["none"]


def _validation_outputs(last_checkpoint: Path) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The depth's ``last.pt``, and its network's logits and the labels on the validation crops."""
    last = torch.load(last_checkpoint, weights_only=True)
    net = create_network(size="tiny", in_channels=3, num_outputs=1)
    net.load_state_dict(last["network"])
    net.eval()
    val = CropDataset(3, 2)
    with torch.no_grad():
        logits = net(torch.stack([val[i]["image"] for i in range(len(val))]))
    return last, logits, torch.tensor(val.table[f"label_{TASK}"].to_numpy(np.float32)).reshape(-1, 1)


def test_recorded_loss_is_the_validation_bce_of_the_trained_network(exhaustive) -> None:
    handler, _, out = exhaustive
    last, logits, labels = _validation_outputs(out / "atl" / "layer0-1" / "last.pt")
    bce = float(F.binary_cross_entropy_with_logits(logits, labels))
    assert last["val_losses"][-1] == pytest.approx(bce, rel=1e-4)
    assert last["epoch"] == 2 and last["val_losses"] == _progress(out, "layer0-1")["val_losses"]


def test_a_class_weighted_training_loss_is_also_the_validation_loss(tmp_path, source) -> None:
    loss = WeightedBCEWithLogitsLoss(pos_weight=[4.0])
    handler, _ = build_search(tmp_path, source, 1, depths=["layer0-1"], loss_function=loss)
    handler.run()
    last, logits, labels = _validation_outputs(tmp_path / "atl" / "layer0-1" / "last.pt")
    weighted = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=torch.tensor([4.0]))
    assert last["val_losses"] == [pytest.approx(float(weighted), rel=1e-4)]
    assert float(weighted) != pytest.approx(float(F.binary_cross_entropy_with_logits(logits, labels)), rel=1e-3)


def test_outputs_table_choice_figures_and_chosen_model(exhaustive) -> None:
    handler, choice, out = exhaustive
    table = pd.read_csv(out / "atl_table.csv", keep_default_na=False).set_index("theta")
    assert list(table.index) == DEPTHS
    assert table.loc["all_conv", "same_as"] == "layer0-4"
    assert table.loc["all_conv", "val_losses"] == table.loc["layer0-4", "val_losses"]
    assert (table["epochs_trained"] == 2).all()
    assert table.loc[CONTROL, "init"] == "random"
    assert table.loc["none", "init"].startswith("source ") and "slice-wise regrouped" in table.loc["none", "init"]
    for column in ("precision", "recall", "f1", "average_precision", "accuracy", "auc", "collapsed"):
        assert column in table.columns
    for figure in ("atl_metrics.png", "atl_histograms.png", "atl_roc.png", "atl_val_losses.png"):
        assert (out / figure).stat().st_size > 10_000
    state_dict, contract = load_checkpoint(out / "models" / "model.pt", kind="ischemic", task=TASK)
    best_state, best_contract = load_checkpoint(out / "atl" / choice["theta"] / "best.pt")
    assert all(torch.equal(state_dict[k], best_state[k]) for k in best_state)
    assert contract.training["freeze_depth"] == choice["theta"]
    assert contract.training["atl"]["f"] == pytest.approx(choice["f"])
    assert contract.decision_threshold == best_contract.decision_threshold == choice["test"]["threshold"]
    assert choice["epochs_trained"] == choice["epochs_exhaustive"] == 8
    # one TensorBoard run per trained depth
    assert sorted(p.name for p in (out / "logs").iterdir()) == sorted(set(DEPTHS) - {"all_conv"})


@pytest.mark.parametrize("depth", ["none", "layer0-1", "layer0-4"])
def test_frozen_stages_keep_weights_and_bn_statistics_unfrozen_ones_learn(exhaustive, source, depth) -> None:
    handler, _, out = exhaustive
    trained = torch.load(out / "atl" / depth / "last.pt", weights_only=True)["network"]
    start = handler._fresh_state(depth)
    source_state, _ = load_checkpoint(source)
    frozen = {"none": 0, "layer0-1": 2, "layer0-4": 5}[depth]
    for i, stage in enumerate(STAGES):
        keys = [k for k in trained if k.startswith(f"{stage}.") and not k.endswith("num_batches_tracked")]
        stats = [k for k in keys if k.endswith(("running_mean", "running_var"))]
        assert stats, stage
        if i < frozen:
            assert all(torch.equal(trained[k], start[k]) for k in keys), f"{stage} moved although frozen"
            # and they are the source's (the first convolution was regrouped to 3 input channels)
            assert all(torch.equal(trained[k], source_state[k]) for k in keys if k != FIRST_CONV_KEY)
        else:
            assert any(not torch.equal(trained[k], start[k]) for k in keys if k not in stats), (
                f"{stage} learned nothing"
            )
            assert any(not torch.equal(trained[k], start[k]) for k in stats), f"{stage} BN statistics did not move"
    assert not torch.equal(trained[f"{HEAD}.weight"], start[f"{HEAD}.weight"])


def test_not_transfer_starts_from_imagenet_file_or_random_not_from_the_source(tmp_path, source) -> None:
    torch.manual_seed(123)
    imagenet = create_network(size="tiny", in_channels=3, num_outputs=1000).state_dict()
    torch.save(imagenet, tmp_path / "imagenet.pth")
    states = {}
    for name, weights in (("random", None), ("imagenet", tmp_path / "imagenet.pth")):
        handler, _ = build_search(tmp_path / name, source, 1, depths=["layer0", CONTROL], pretrained_weights=weights)
        handler.reset_network("layer0")
        states["transfer"] = {k: v.clone() for k, v in handler.network.state_dict().items()}
        handler.reset_network(CONTROL)
        states[name] = {k: v.clone() for k, v in handler.network.state_dict().items()}
        assert handler.init_description(CONTROL).startswith(name)
    backbone = [k for k in states["transfer"] if not k.startswith(f"{HEAD}.") and "num_batches" not in k]
    for name in ("random", "imagenet"):
        differs = [k for k in backbone if not torch.equal(states[name][k], states["transfer"][k])]
        assert len(differs) > 0.9 * len(backbone), name
        # every depth starts from the same new head, so only the backbone initialisation differs
        assert torch.equal(states[name][f"{HEAD}.weight"], states["transfer"][f"{HEAD}.weight"])
    assert all(torch.equal(states["imagenet"][k], imagenet[k]) for k in backbone)


def test_halving_trains_fewer_epochs_on_the_same_per_epoch_losses(exhaustive, halving) -> None:
    _, full, full_out = exhaustive
    handler, choice, out = halving
    assert choice["epochs_trained"] < full["epochs_trained"]
    plan_status = json.loads((out / "atl_state.json").read_text())["status"]
    eliminated = plan_status["eliminated"]
    assert len(eliminated) == 1 and list(eliminated.values()) == [1]  # 3 candidates, rung 1 keeps 2
    for depth in ("none", "layer0-1", "layer0-4", CONTROL):
        losses = _progress(out, depth)["val_losses"]
        assert len(losses) == (1 if depth in eliminated else 2)
        # every epoch of a depth is seeded by (seed, depth, epoch): halving sees the losses exhaustive saw
        assert losses == pytest.approx(_progress(full_out, depth)["val_losses"][: len(losses)], rel=1e-5)
    assert choice["theta"] not in eliminated
    table = pd.read_csv(out / "atl_table.csv", keep_default_na=False).set_index("theta")
    assert str(table.loc[next(iter(eliminated)), "eliminated_at"]) == "1"


def test_epoch_seeds_differ_between_depths_and_epochs() -> None:
    seeds = {epoch_seed(0, d, e) for d in DEPTHS for e in range(1, 4)}
    assert len(seeds) == 3 * len(DEPTHS) and epoch_seed(0, "none", 1) == epoch_seed(0, "none", 1)


@pytest.mark.parametrize("logit_sd, collapsed", [(0.0, True), (3.0, False)])
def test_collapse_flag_fires_on_a_constant_predictor(tmp_path, source, logit_sd, collapsed) -> None:
    handler, _ = build_search(tmp_path, source, 1, depths=["layer0"])
    handler.reset_network("layer0")
    net = handler.network.eval()
    test = handler.test_evaluator.data_loader.dataset
    torch.manual_seed(5)
    with torch.no_grad():  # a head giving logits of mean 0 and SD logit_sd: 0 is a constant predictor (all 0.5)
        features = torch.flatten(net.adaptive_avg_pool(net.features(torch.stack([s["image"] for s in test]))), 1)
        direction = torch.randn(features.shape[1])
        scale = logit_sd / float((features @ direction).std())
        net.last_linear.weight.copy_(scale * direction[None])
        net.last_linear.bias.fill_(-scale * float((features @ direction).mean()))
    dataset = handler.validator.data_loader.dataset
    contract = Contract(**dataset.recipe.contract_fields(), network=dict(net.factory_args), decision_threshold=0.5)
    handler.state.save_epoch(
        "layer0",
        0.69,
        {"network": net.state_dict(), "epoch": 1},
        best_checkpoint=lambda path: save_checkpoint(path, net.state_dict(), contract),
    )
    result = handler.evaluate_depth("layer0")
    assert result["collapsed"] is collapsed
    if collapsed:
        assert result["prediction_spread"] == pytest.approx(0.0, abs=1e-6)
        assert result["prediction_range"] == pytest.approx([0.5, 0.5], abs=1e-6)
    else:
        assert result["prediction_spread"] > 0.3
    assert handler.state.result("layer0")["collapsed"] is collapsed


def test_resume_after_sigkill_continues_without_retraining(tmp_path, source, exhaustive) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, str(HERE / "atl_helpers.py"), str(out), str(source), ",".join(DEPTHS), "2"]
    log = tmp_path / "killed.log"
    proc = subprocess.Popen(command, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    # kill -9 as soon as the second depth has finished one epoch: the first depth is complete, the second half done
    deadline = time.monotonic() + 300
    while not (out / "atl" / "layer0-1" / "progress.json").is_file():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the search did not get going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in (out / "atl").glob("*/last.pt")}
    finished = _progress(out, "none")
    assert len(finished["val_losses"]) == 2 and "result" in finished
    assert len(_progress(out, "layer0-1")["val_losses"]) in (1, 2)

    handler, _ = build_search(out, source, 2, depths=DEPTHS)
    handler.run()
    reference = exhaustive[2]
    f = {}
    for depth in ("none", "layer0-1", "layer0-4", CONTROL):
        losses = _progress(out, depth)["val_losses"]
        assert len(losses) == 2, depth  # every depth exactly e epochs: nothing lost, nothing trained twice
        # the same data order and augmentation as an uninterrupted run
        assert losses == pytest.approx(_progress(reference, depth)["val_losses"], rel=1e-5), depth
        f[depth] = atl_objective(losses)
    assert (out / "atl" / "none" / "last.pt").stat().st_mtime_ns == done_before["none"]  # never retrained
    assert _progress(out, "none") == finished
    assert json.loads((out / "atl_choice.json").read_text())["theta"] == min(
        ["none", "layer0-1", "layer0-4"], key=f.get
    )


def test_settings_of_another_search_are_refused(exhaustive, source) -> None:
    from monai_stroke.errors import UserInputError

    with pytest.raises(UserInputError, match="other settings"):
        build_search(exhaustive[2], source, 3, depths=DEPTHS, w1=W1, w2=W2)


def test_objective_helper_matches_the_paper_equation() -> None:
    assert atl_objective([0.8, 0.6, 0.4], w1=W1, w2=W2) == pytest.approx(W1 * 0.8 + W2 * 0.6)
