"""The ATL workflow handler: the freeze-depth search of adaptive transfer learning, run by MONAI's engines.

:class:`AdaptiveTransferHandler` is attached to a MONAI ``SupervisedTrainer`` (the target task's training) with a
``SupervisedEvaluator`` on the validation split and, optionally, one on the test split. Its :meth:`run` is the
search's workflow; for every job of the :class:`~monai_stroke.transfer.schedule.SearchPlan` it

1. resets the network: a fresh target network (same seed for every depth, so every depth starts from the same
   new head), its backbone copied from the source checkpoint by
   :func:`~monai_stroke.transfer.depths.transfer_backbone` (first convolution regrouped slice by slice when the
   two inputs stack the same slices), or, for the control ``not_transfer``, ImageNet weights from a local file
   when ``pretrained_weights`` is given and random initialisation otherwise;
2. freezes the depth's stages (:func:`~monai_stroke.transfer.depths.apply_freeze`: no gradient, frozen batch
   norm kept in eval mode with the source's running statistics);
3. resets the optimiser and the learning-rate schedule to their initial state - or, for a depth that had
   started, restores network, optimiser and schedule from its ``last.pt``;
4. lets the trainer run the depth's epochs; after every epoch the handler steps the schedule, runs the
   validator, computes the validation BCE loss ``L_k`` from the logits, and records the epoch atomically in
   :class:`~monai_stroke.transfer.state.ATLState` (``last.pt``, ``progress.json`` and, on a new lowest loss,
   ``best.pt`` - a contract checkpoint with the decision threshold chosen on that validation);
5. when the depth has finished (all epochs, or eliminated by successive halving), evaluates its best checkpoint
   on the test split at the validation threshold and flags ``collapsed``
   (:func:`~monai_stroke.evaluation.is_collapsed`: the paper's fig. 13, predictions all within 0.4-0.65).

The handler owns the per-epoch validation and the learning-rate schedule, because the order matters for
resuming (schedule stepped, then validated, then saved): do not also attach a ``ValidationHandler`` or
``LrScheduleHandler`` to the trainer.

**Determinism and resume.** Each epoch of each depth is seeded from ``(seed, depth, epoch)`` when it starts:
the global RNGs (shuffling, DataLoader worker seeds, dropout) and the training dataset's random transforms. A
search killed at any moment and restarted with the same command replays the plan from the recorded losses,
continues a depth from its last finished epoch with exactly the data order and augmentation it would have had,
and never trains a finished depth again. The same seeding makes the first ``k`` epochs of a depth identical
under ``exhaustive`` and ``halving``, so the two strategies rank depths on the same losses.

**Depth-parallel search.** Under ``torchrun`` (:func:`init_depth_parallel`), every process trains whole depths
on the whole data - one depth per GPU, no DistributedDataParallel inside a depth - and the processes meet at a
barrier after every rung of the plan; rank 0 reads everyone's recorded losses, decides, and broadcasts the next
jobs, and at the end writes the merged outputs. The process group is gloo whatever the device: it carries only
a few small messages, and its timeout (hours) must cover a rank that waits for a slower depth. Nothing inside
a depth communicates, so a depth's results do not depend on the number of processes. Do not attach ignite
metrics to the engines of a depth-parallel search: ignite synchronises metrics across ranks, and the ranks train
different depths.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from torch.nn import functional as F

from monai_stroke.contract import Contract, load_checkpoint, save_checkpoint
from monai_stroke.engines.outputs import Predictions, outputs_for
from monai_stroke.errors import UserInputError
from monai_stroke.evaluation import binary_metrics, is_collapsed, prediction_spread
from monai_stroke.networks import FIRST_CONV_KEY, create_network, load_pretrained_weights
from monai_stroke.transfer.depths import (
    ALL_DEPTHS,
    CONTROL,
    FreezeHandle,
    apply_freeze,
    equivalent_depths,
    transfer_backbone,
)
from monai_stroke.transfer.report import write_search_outputs
from monai_stroke.transfer.schedule import Job, PlanStatus, SearchPlan
from monai_stroke.transfer.state import ATLState
from monai_stroke.utils import file_sha256, write_text_atomic

__all__ = [
    "AdaptiveTransferHandler",
    "epoch_seed",
    "init_depth_parallel",
    "cleanup_depth_parallel",
    "slice_layout",
    "TEST_PREDICTIONS",
]

logger = logging.getLogger(__name__)

#: Per-depth file with the test predictions of the depth's best checkpoint (for the figures).
TEST_PREDICTIONS = "test_predictions.csv"


def epoch_seed(seed: int, depth: str, epoch: int) -> int:
    """The seed of one epoch of one depth: a hash, so neighbouring depths/epochs get unrelated streams."""
    digest = hashlib.sha256(f"{int(seed)}:{depth}:{int(epoch)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def init_depth_parallel(timeout_hours: float = 72.0) -> torch.device:
    """Join the process group of a depth-parallel search under ``torchrun`` and return this process's device.

    Without ``torchrun`` (no ``WORLD_SIZE`` > 1) nothing is initialised. The group is gloo even on GPUs: it only
    carries barriers and the plan, never tensors of the network.

    Args:
        timeout_hours: how long a process may wait at a barrier for the others (a rung of the plan can take
            hours when other processes train slower depths).
    """
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=timedelta(hours=float(timeout_hours)))
        logger.info("depth-parallel search: process %d of %d on %s", dist.get_rank(), dist.get_world_size(), device)
    return device


def cleanup_depth_parallel() -> None:
    """Leave the process group of a depth-parallel search, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def slice_layout(source: Contract, target_neighbours: int, target_in_channels: int) -> tuple[int, int, int] | None:
    """``(slices, source_per_slice, target_per_slice)`` for slice-wise first-conv regrouping, or None.

    Both inputs are slice-major (``LesionConcat``: channel ``j * C + c`` is channel ``c`` of slice ``j``); when they
    stack the same number of slices, each source filter keeps looking at the slice it learned on. With different
    slice counts there is no such correspondence, and
    :func:`~monai_stroke.transfer.depths.transfer_backbone` falls back to timm's channel rule.

    Args:
        source: the source checkpoint's contract (its neighbours and network input channels).
        target_neighbours: slices stacked on each side of the target's target slice.
        target_in_channels: the target network's input channels.
    """
    slices = 2 * int(source.neighbours) + 1
    source_in = int(source.network.get("in_channels", len(source.windows_hu) * slices))
    if 2 * int(target_neighbours) + 1 != slices or source_in % slices or target_in_channels % slices:
        return None
    return slices, source_in // slices, target_in_channels // slices


class _Collector:
    """Logits, labels and sample ids of one pass of an evaluator, in this process (no gather across ranks)."""

    def __init__(self, id_key: str = "sample_id") -> None:
        self.id_key = id_key
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._ids: list[torch.Tensor] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)

    def reset(self, engine: Engine | None = None) -> None:
        self._logits, self._labels, self._ids = [], [], []

    def update(self, engine: Engine) -> None:
        output = engine.state.output
        if isinstance(output, list):  # decollated: one dict per sample
            logits = torch.stack([torch.as_tensor(o["pred"]) for o in output])
            labels = torch.stack([torch.as_tensor(o["label"]) for o in output])
        else:
            logits, labels = output["pred"], output["label"]
        ids = torch.as_tensor(engine.state.batch[self.id_key]).reshape(-1)
        self._logits.append(logits.detach().float().cpu().reshape(len(ids), -1))
        self._labels.append(labels.detach().float().cpu().reshape(len(ids), -1))
        self._ids.append(ids.cpu())

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self._logits:
            raise UserInputError("the evaluation split has no sample; every split of the dataset needs samples")
        return torch.cat(self._ids), torch.cat(self._logits), torch.cat(self._labels)


def _predictions(ids: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> Predictions:
    order = np.argsort(ids.numpy(), kind="stable")
    return Predictions(ids.numpy()[order], torch.sigmoid(logits).numpy()[order], labels.numpy()[order])


def _table_hash(dataset: Any) -> str | None:
    table = getattr(dataset, "table", None)
    if table is None:
        return None
    return hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()


class AdaptiveTransferHandler:
    """Search the freeze depth of adaptive transfer learning with a MONAI trainer (see the module docstring).

    Args:
        output_dir: the search's output folder (``atl/<depth>/``, ``logs/<depth>/``, ``atl_state.json``, and at the
            end the table, choice, figures and ``models/model.pt``).
        source_checkpoint: the source (hemorrhage) ``models/model.pt``; its backbone initialises every depth.
        validator: ``SupervisedEvaluator`` over the validation split (``decollate=False`` or not; its dataset must
            be a monai-stroke sample dataset: ``recipe``, ``table``, ``sample_id`` in every batch).
        test_evaluator: ``SupervisedEvaluator`` over the test split, on the same network; None skips the test
            evaluation (the table then has no test metrics).
        depths: freeze depths to search (default all, with the control ``not_transfer``).
        epochs_per_depth: ``e``, epochs of a fully trained depth.
        search: ``"exhaustive"`` (the paper) or ``"halving"`` (successive halving over depths).
        w1: weight of ``L_1`` in ``f`` (default 1).
        w2: weight of the mean loss in ``f`` (default 1).
        eta: halving factor.
        lr_scheduler: the optimiser's epoch-level scheduler (stepped by this handler, reset per depth), or None.
        pretrained_weights: local ImageNet weights file for the control ``not_transfer``; None: random init.
        threshold_rule: how the decision threshold is chosen on validation (``youden``, ``f1``, ``fixed``).
        seed: seed of the fresh head and of every epoch's data order and augmentation.
        min_spread: the collapse rule's smallest 2nd-98th percentile width of the test predictions.
        provenance: facts recorded in every checkpoint's ``contract.training`` and in the resume config
            (bundle, learning rate, batch size, ...): a restart with other values is refused.
        loss_function: the validation loss ``L_k`` (and the test loss): the training loss, so that class weights
            apply to both and the search ranks depths on the objective they were trained on; None: plain BCE.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        source_checkpoint: str | os.PathLike,
        validator: Any,
        test_evaluator: Any | None = None,
        depths: Sequence[str] = ALL_DEPTHS,
        epochs_per_depth: int = 100,
        search: str = "exhaustive",
        w1: float = 1.0,
        w2: float = 1.0,
        eta: int = 2,
        lr_scheduler: Any | None = None,
        pretrained_weights: str | os.PathLike | None = None,
        threshold_rule: str = "youden",
        seed: int = 0,
        min_spread: float = 0.3,
        provenance: Mapping[str, Any] | None = None,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.loss_function = loss_function
        self.source_path = Path(source_checkpoint)
        self.validator = validator
        self.test_evaluator = test_evaluator
        self.depths = [str(d) for d in ([depths] if isinstance(depths, str) else depths)]
        self.epochs_per_depth = int(epochs_per_depth)
        self.search = str(search)
        self.w1, self.w2, self.eta = float(w1), float(w2), int(eta)
        self.lr_scheduler = lr_scheduler
        self.pretrained_weights = None if pretrained_weights in (None, "") else Path(pretrained_weights)
        if self.pretrained_weights is not None and not self.pretrained_weights.is_file():
            raise UserInputError(
                f"pretrained_weights file {self.pretrained_weights} not found; monai-stroke never downloads weights "
                "- give a local ImageNet SE-ResNeXt50 file or leave it empty (the control then starts random)"
            )
        self.threshold_rule = str(threshold_rule)
        self.seed = int(seed)
        self.min_spread = float(min_spread)
        self.provenance = dict(provenance or {})
        # checked now, before any training: an unknown depth or strategy, a bad e
        SearchPlan(self.depths, self.epochs_per_depth, self.search, self.w1, self.w2, eta=self.eta)
        self.source_state, self.source_contract = load_checkpoint(self.source_path)
        self.source_sha256 = file_sha256(self.source_path)
        self.trainer: Any = None
        self.network: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.plan: SearchPlan | None = None
        self.state: ATLState | None = None
        self._val = _Collector()
        self._test = _Collector()
        self._fresh: dict[str, dict[str, torch.Tensor]] = {}
        self._init_text: dict[str, str] = {}
        self._freeze: FreezeHandle | None = None
        self._depth: str | None = None
        self._writer: Any = None
        self._train_losses: list[float] = []

    # ------------------------------------------------------------------ setup

    def attach(self, engine: Any) -> None:
        """Attach to a MONAI ``SupervisedTrainer`` (its ``network``, ``optimizer`` and training data loader)."""
        self.trainer = engine
        self.network = engine.network
        self.optimizer = engine.optimizer
        if self.optimizer is None:
            raise UserInputError("the ATL trainer needs an optimizer")
        loader = engine.data_loader
        if getattr(loader, "persistent_workers", False) and getattr(loader, "num_workers", 0) > 0:
            # persistent workers keep the random state of their first epoch; each epoch's seed cannot reach them
            logger.warning(
                "the training DataLoader has persistent_workers=True: augmentation is not seeded per depth and "
                "epoch, so a resumed search does not replay it exactly; set persistent_workers to false"
            )
        # the state a fresh optimiser/schedule has: every depth starts from it
        self._optimizer_fresh = _clone(self.optimizer.state_dict())
        self._scheduler_fresh = _clone(self.lr_scheduler.state_dict()) if self.lr_scheduler is not None else None
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        self._val.attach(self.validator)
        if self.test_evaluator is not None:
            self._test.attach(self.test_evaluator)
        factory = getattr(_unwrap(self.network), "factory_args", None)
        if factory is None:
            raise UserInputError("the ATL network must come from monai_stroke.networks.create_network")
        self._check_source(factory)
        same_as = equivalent_depths(_unwrap(self.network), self.depths)
        self.plan = SearchPlan(self.depths, self.epochs_per_depth, self.search, self.w1, self.w2, same_as, self.eta)
        self.state = ATLState(self.output_dir, self._resume_config(factory))

    def _check_source(self, factory: Mapping[str, Any]) -> None:
        source_net = self.source_contract.network
        for key in ("name", "size", "spatial_dims"):
            if key in source_net and source_net[key] != factory.get(key):
                option = "network_size" if key == "size" else key
                raise UserInputError(
                    f"the source checkpoint {self.source_path} is a {source_net.get('name')}/{source_net.get('size')} "
                    f"network but the search builds {factory.get('name')}/{factory.get('size')}; set {option} to "
                    f"{source_net[key]!r} (the backbone is copied tensor by tensor)"
                )

    def _resume_config(self, factory: Mapping[str, Any]) -> dict[str, Any]:
        val_ds = self.validator.data_loader.dataset
        recipe = getattr(val_ds, "recipe", None)
        return {
            **self.plan.config(),
            "source_sha256": self.source_sha256,
            "network": dict(factory),
            "pretrained_weights": file_sha256(self.pretrained_weights) if self.pretrained_weights else None,
            "seed": self.seed,
            "threshold_rule": self.threshold_rule,
            "recipe": None if recipe is None else json.loads(json.dumps(recipe.contract_fields(), default=str)),
            "data": {
                "train": _table_hash(self.trainer.data_loader.dataset),
                "val": _table_hash(val_ds),
                "test": _table_hash(self.test_evaluator.data_loader.dataset) if self.test_evaluator else None,
            },
            "provenance": json.loads(json.dumps(self.provenance, default=str)),
        }

    # ------------------------------------------------------------------ network initialisation

    def _fresh_state(self, depth: str) -> dict[str, torch.Tensor]:
        kind = "control" if depth == CONTROL else "transfer"
        if kind not in self._fresh:
            factory = dict(_unwrap(self.network).factory_args)
            # the same seed for every depth: all depths start from the same new head
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                fresh = create_network(**factory)
            if kind == "transfer":
                neighbours = int(self._target_recipe_value("neighbours", self.source_contract.neighbours))
                layout = slice_layout(self.source_contract, neighbours, int(factory["in_channels"]))
                transfer_backbone(fresh, self.source_state, slice_layout=layout)
                conv = self.source_state.get(FIRST_CONV_KEY)
                how = "slice-wise regrouped" if layout else "timm channel rule"
                first = "" if conv is None or conv.shape[1] == factory["in_channels"] else f"; first conv {how}"
                self._init_text[kind] = (
                    f"source {self.source_sha256[:12]} ({self.source_contract.kind} backbone{first})"
                )
            elif self.pretrained_weights is not None:
                report = load_pretrained_weights(fresh, self.pretrained_weights)
                self._init_text[kind] = f"imagenet {self.pretrained_weights.name} ({len(report.loaded)} tensors)"
            else:
                self._init_text[kind] = "random"
            self._fresh[kind] = {k: v.detach().clone() for k, v in fresh.state_dict().items()}
        return self._fresh[kind]

    def _target_recipe_value(self, name: str, default: Any) -> Any:
        recipe = getattr(self.validator.data_loader.dataset, "recipe", None)
        return getattr(recipe, name, default) if recipe is not None else default

    def init_description(self, depth: str) -> str:
        """How ``depth`` was initialised: the source backbone, ImageNet weights, or random."""
        self._fresh_state(depth)
        return self._init_text["control" if depth == CONTROL else "transfer"]

    def reset_network(self, depth: str) -> FreezeHandle:
        """Put the network in the state every job of ``depth`` starts from, frozen for ``depth``."""
        if self._freeze is not None:
            self._freeze.remove()
        net = _unwrap(self.network)
        net.load_state_dict(self._fresh_state(depth))
        for param in net.parameters():
            # a gradient left from the previous depth (the trainer zeroes, it does not drop, gradients) would make
            # AdamW decay and move a parameter this depth freezes
            param.grad = None
        self._freeze = apply_freeze(self.network, depth)
        return self._freeze

    # ------------------------------------------------------------------ one job

    def _start_job(self, job: Job) -> int:
        depth = job.depth
        self._depth = depth
        self.reset_network(depth)
        self.optimizer.load_state_dict(_clone(self._optimizer_fresh))
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(_clone(self._scheduler_fresh))
        done = len(self.state.losses([depth]).get(depth, []))
        if done:
            last = self.state.load_training_state(depth)
            if last is None or int(last.get("epoch", -1)) != done:
                raise UserInputError(
                    f"{self.state.depth_dir(depth)} records {done} epochs but its last.pt does not match; delete "
                    "that folder to retrain this depth"
                )
            _unwrap(self.network).load_state_dict(last["network"])
            self.optimizer.load_state_dict(last["optimizer"])
            if self.lr_scheduler is not None and last.get("lr_scheduler") is not None:
                self.lr_scheduler.load_state_dict(last["lr_scheduler"])
            logger.info("[%s] resuming after epoch %d of %d", depth, done, job.until_epoch)
        else:
            logger.info("[%s] starting from %s", depth, self.init_description(depth))
        return done

    def train_job(self, job: Job) -> list[float]:
        """Train ``job.depth`` until it has ``job.until_epoch`` epochs; returns its losses."""
        done = self._start_job(job)
        trainer = self.trainer
        epoch_length = len(trainer.data_loader)
        trainer.state.epoch = done
        trainer.state.iteration = done * epoch_length
        trainer.state.max_epochs = job.until_epoch
        trainer.state.epoch_length = epoch_length
        self._writer = self._open_writer(job.depth)
        try:
            trainer.run()
        finally:
            if self._writer is not None:
                self._writer.close()
            self._writer = None
        losses = self.state.losses([job.depth]).get(job.depth, [])
        if len(losses) < job.until_epoch:
            raise RuntimeError(f"[{job.depth}] training stopped after {len(losses)} of {job.until_epoch} epochs")
        return losses

    def _open_writer(self, depth: str) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.output_dir / "logs" / depth))

    # ------------------------------------------------------------------ engine events

    def _epoch_started(self, engine: Engine) -> None:
        seed = epoch_seed(self.seed, self._depth, engine.state.epoch)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        loader = engine.data_loader
        if getattr(loader, "generator", None) is not None:
            loader.generator.manual_seed(seed)
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_random_state"):  # augmentation in this process (DataLoader workers: from the seed)
            dataset.set_random_state(seed=seed)
        self._train_losses = []

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        with torch.no_grad():
            if self.loss_function is None:
                return float(F.binary_cross_entropy_with_logits(logits, labels))
            # the gathered logits are on the CPU; a loss module's buffers (pos_weight) are on the training device
            buffers = list(self.loss_function.buffers()) if isinstance(self.loss_function, torch.nn.Module) else []
            device = buffers[0].device if buffers else logits.device
            return float(self.loss_function(logits.to(device), labels.to(device)))

    def _iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        if isinstance(output, list):
            output = output[0]
        self._train_losses.append(float(torch.as_tensor(output["loss"]).detach()))

    def _epoch_completed(self, engine: Engine) -> None:
        depth, epoch = self._depth, int(engine.state.epoch)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.validator.run(epoch)
        ids, logits, labels = self._val.result()
        val_loss = self._loss(logits, labels)
        pred = _predictions(ids, logits, labels)
        losses_before = self.state.losses([depth]).get(depth, [])
        losses = [*losses_before, val_loss]
        net = _unwrap(self.network)
        training_state = {
            "network": net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "epoch": epoch,
            "rank": _rank_world()[0],  # which process of a depth-parallel search trained it
        }

        def write_best(path: Path) -> None:
            save_checkpoint(path, net.state_dict(), self._contract(depth, pred, epoch, val_loss, losses), epoch=epoch)

        self.state.save_epoch(depth, val_loss, training_state, best_checkpoint=write_best)
        val = binary_metrics(pred.label[:, 0], pred.prob[:, 0], 0.5)
        train_loss = float(np.mean(self._train_losses)) if self._train_losses else float("nan")
        running_f = self.plan.objective(losses)
        logger.info(
            "[%s] epoch %d/%d: train loss %.4f, val loss %.4f%s, val auc %.3f, f %.4f",
            depth,
            epoch,
            engine.state.max_epochs,
            train_loss,
            val_loss,
            " (best)" if val_loss <= min(losses) else "",
            val["auc"],
            running_f,
        )
        if self._writer is not None:
            w = self._writer
            w.add_scalar("loss/train", train_loss, epoch)
            w.add_scalar("loss/val", val_loss, epoch)
            w.add_scalar("atl/f", running_f, epoch)
            w.add_scalar("learning_rate", float(self.optimizer.param_groups[0]["lr"]), epoch)
            for name in ("auc", "average_precision", "accuracy"):
                w.add_scalar(f"val/{name}", val[name], epoch)
            w.flush()

    def _contract(self, depth: str, pred: Predictions, epoch: int, val_loss: float, losses: list[float]) -> Contract:
        dataset = self.validator.data_loader.dataset
        choice = outputs_for(dataset).choose_thresholds(pred, self.threshold_rule)
        return Contract(
            **dataset.recipe.contract_fields(),
            network=dict(_unwrap(self.network).factory_args),
            decision_threshold=choice.decision_threshold,
            threshold_rule=choice.rule,
            training={
                **self.provenance,
                "freeze_depth": depth,
                "init": self.init_description(depth),
                "source_checkpoint": {"path": str(self.source_path), "sha256": self.source_sha256},
                "epoch": epoch,
                "val_loss": val_loss,
                "val_losses": list(losses),
                "thresholds": choice.per_group,
            },
        )

    # ------------------------------------------------------------------ evaluation of a finished depth

    def evaluate_depth(self, depth: str) -> dict[str, Any]:
        """Evaluate ``depth``'s best checkpoint on the test split at its validation threshold; store the result."""
        best = self.state.best_checkpoint(depth)
        state_dict, contract = load_checkpoint(best)
        progress = json.loads((self.state.depth_dir(depth) / "progress.json").read_text())
        result: dict[str, Any] = {
            "init": contract.training.get("init", self.init_description(depth)),
            "best_epoch": int(progress.get("best_epoch", contract.training.get("epoch", 0))),
            "best_val_loss": float(progress.get("best_val_loss", contract.training.get("val_loss", float("nan")))),
            "threshold": float(contract.decision_threshold),
        }
        if self.test_evaluator is not None:
            if self._freeze is not None:
                self._freeze.remove()
                self._freeze = None
            _unwrap(self.network).load_state_dict(state_dict)
            self.test_evaluator.run()
            ids, logits, labels = self._test.result()
            pred = _predictions(ids, logits, labels)
            dataset = self.test_evaluator.data_loader.dataset
            outputs = outputs_for(dataset)
            groups = outputs.groups(pred)
            headline = next(iter(groups))
            y, p = groups[headline]
            metrics = binary_metrics(y, p, contract.decision_threshold)
            result.update(metrics)
            result.update(
                evaluated_on=f"test {headline}",
                test_loss=self._loss(logits, labels),
                prediction_spread=prediction_spread(p),
                collapsed=bool(is_collapsed(p, self.min_spread)),
                prediction_range=[float(np.min(p)), float(np.max(p))] if len(p) else [None, None],
            )
            for name, (gy, gp) in list(groups.items())[1:]:
                result[f"{name.split('/')[0]}_auc"] = binary_metrics(gy, gp, contract.decision_threshold)["auc"]
            frame = outputs.frame(pred)
            keep = [
                c
                for c in frame.columns
                if c in ("sample_id", "patient_id", "side", "region") or c.startswith(("label_", "prob_"))
            ]
            write_text_atomic(self.state.depth_dir(depth) / TEST_PREDICTIONS, frame[keep].to_csv(index=False))
            if result["collapsed"]:
                logger.warning(
                    "[%s] collapsed: its test predictions span only %.3f (2nd-98th percentile, range %.2f-%.2f); "
                    "the network did not learn to separate the classes (the paper's fig. 13)",
                    depth,
                    result["prediction_spread"],
                    *result["prediction_range"],
                )
            logger.info(
                "[%s] test (best epoch %d, threshold %.3f): auc %.3f, accuracy %.3f, f1 %.3f",
                depth,
                result["best_epoch"],
                result["threshold"],
                result["auc"],
                result["accuracy"],
                result["f1"],
            )
        self.state.set_result(depth, _json_safe(result))
        return result

    # ------------------------------------------------------------------ the workflow

    def _barrier(self) -> None:
        if _rank_world()[1] > 1:
            dist.barrier()

    def _decide(self) -> PlanStatus:
        rank, world = _rank_world()
        status = [self.plan.status(self.state.losses(self.plan.depths))] if rank == 0 else [None]
        if world > 1:
            dist.broadcast_object_list(status, src=0)
        return status[0]

    def _finished(self, status: PlanStatus) -> list[str]:
        losses = self.state.losses(self.plan.depths)
        trained = [d for d in self.plan.depths if d not in self.plan.same_as]
        return [d for d in trained if d in status.eliminated or len(losses.get(d, [])) >= self.epochs_per_depth]

    def run(self, trainer: Any | None = None) -> dict[str, Any] | None:
        """Run (or resume) the whole search; rank 0 writes the outputs and returns the choice.

        Args:
            trainer: the MONAI ``SupervisedTrainer``, when the handler was not attached to it yet.
        """
        if trainer is not None and self.trainer is not trainer:
            self.attach(trainer)
        if self.trainer is None:
            raise UserInputError("attach the ATL handler to a SupervisedTrainer (or pass it to run) first")
        rank, world = _rank_world()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and world == 1:
            raise UserInputError(
                "started by torchrun without a process group: add configs/multi_gpu_train.yaml to the config files "
                "(it calls monai_stroke.transfer.init_depth_parallel), or run one process"
            )
        if rank == 0:
            for depth in self.plan.depths:
                self.state.reconcile(depth)
        self._barrier()
        rung = None
        while True:
            status = self._decide()
            if rank == 0 and status.rung_epochs != rung:
                self._log_rung(status)
                rung = status.rung_epochs
            pending = [d for d in self._finished(status) if self.state.result(d) is None]
            for depth in pending[rank::world]:
                self.evaluate_depth(depth)
            self._barrier()
            if rank == 0:
                self.state.write_summary(status=_status_dict(status))
            if status.done:
                break
            for job in status.jobs[rank::world]:
                losses = self.train_job(job)
                if len(losses) >= self.epochs_per_depth and self.state.result(job.depth) is None:
                    self.evaluate_depth(job.depth)  # finished for good: evaluate while the others train
            self._barrier()
        result = write_search_outputs(self, status) if rank == 0 else None
        self._barrier()
        return result

    def _log_rung(self, status: PlanStatus) -> None:
        if self.search == "halving" and status.eliminated:
            logger.info(
                "halving: survivors %s; eliminated %s",
                ", ".join(status.survivors),
                ", ".join(f"{d} (after {n} epoch{'s' * (n > 1)})" for d, n in status.eliminated.items()),
            )
        if not status.done:
            logger.info(
                "%s search: training %s to %d epoch(s)",
                self.search,
                ", ".join(j.depth for j in status.jobs),
                status.rung_epochs,
            )


def _status_dict(status: PlanStatus) -> dict[str, Any]:
    return {
        "rung_epochs": status.rung_epochs,
        "survivors": list(status.survivors),
        "eliminated": dict(status.eliminated),
        "pending_jobs": [{"depth": j.depth, "until_epoch": j.until_epoch} for j in status.jobs],
        "done": status.done,
        "chosen": status.chosen,
    }


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(net, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else net


def _clone(obj: Any) -> Any:
    # optimizer/scheduler state dicts: tensors copied, the rest rebuilt, so loading one never aliases another
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_clone(v) for v in obj)
    return obj


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
