"""Training throughput: images/s of a training epoch vs the pure compute of the same model on the same batches.

The data pipeline of the classification bundles (cached patients flattened into slice/crop samples, lesion
concatenation, HU-safe augmentation and windowing per sample, DataLoader workers) should cost little next to the
network: ``overhead = epoch time / compute time`` (target <= 1.15). Per configuration this script

1. prepares the datasets (ingest, or registration and crops, into a fresh cache; not timed - that is the one-off
   cost the cache removes from every later epoch and run),
2. times the second training epoch of MONAI's ``SupervisedTrainer`` as the bundles build it (DataLoader with
   shuffling and persistent ``num_workers``, loss, AdamW), over ``--batches`` batches of 16 (the first epoch
   warms up: first touch and worker start-up),
3. collects the same number of batches into memory and times forward + backward + step on them alone,

and prints both rates and their ratio (``overhead``), measured in one run on this machine. Because another
process can slow one timing and not the other, it also reports the share of the timed epoch that the training
loop spent waiting for its next batch, and the overhead that share implies (``overhead_within_epoch`` =
epoch time / (epoch time - waiting)), which both come from the same seconds. Nothing is asserted.

Run: ``python benchmarks/train_throughput.py [--dataset_dir DIR] [--sizes tiny full] [--workers 0 2]``
(without ``--dataset_dir`` a 6-patient synthetic cohort is made in a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch


def _make_dataset(folder: Path, n_patients: int) -> Path:
    from monai_stroke.synthetic import make_cohort

    return make_cohort(folder / "data", n_patients=n_patients, seed=7, size="small")


def _datasets(kind: str, dataset_dir: Path, size: str, cache: Path):
    from monai_stroke.data import region_datasets, slice_datasets

    if kind == "hemorrhage":
        spatial = (64, 64) if size == "tiny" else (256, 256)
        (train,) = slice_datasets(dataset_dir, splits=("train",), spatial_size=spatial, cache_dir=cache)
        return train, 6
    crop = (64, 64) if size == "tiny" else (128, 128)
    (train,) = region_datasets(dataset_dir, "early_vs_intact", splits=("train",), crop_size=crop, cache_dir=cache)
    return train, 1


def _network(size: str, in_channels: int, outputs: int, device: torch.device):
    from monai_stroke.engines import WeightedBCEWithLogitsLoss
    from monai_stroke.networks import create_network

    torch.manual_seed(0)
    net = create_network(size=size, in_channels=in_channels, num_outputs=outputs).to(device)
    return net, torch.optim.AdamW(net.parameters(), lr=1e-3), WeightedBCEWithLogitsLoss()


def _epoch_rate(dataset, size, outputs, workers, batches, device) -> tuple[float, float]:
    from ignite.engine import Events
    from monai.data import DataLoader
    from monai.engines import SupervisedTrainer

    net, optimizer, loss = _network(size, dataset[0]["image"].shape[0], outputs, device)
    # as the bundles build it: shuffled batches of 16, workers kept between epochs
    loader = DataLoader(
        dataset, batch_size=16, shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0
    )
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=2,
        train_data_loader=loader,
        network=net,
        optimizer=optimizer,
        loss_function=loss,
        epoch_length=batches,
        amp=device.type == "cuda",
    )
    clock = {"epoch": 0.0, "wait": 0.0}

    def mark(name: str, start: bool):
        def handler(engine):
            if engine.state.epoch == 2:  # epoch 1 warms up (first touch, worker start); epoch 2 is timed
                clock[name] += -time.perf_counter() if start else time.perf_counter()

        return handler

    trainer.add_event_handler(Events.EPOCH_STARTED, mark("epoch", True))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, mark("epoch", False))
    # time the loop spends waiting for the next batch (transforms with num_workers=0, collation, worker queue)
    trainer.add_event_handler(Events.GET_BATCH_STARTED, mark("wait", True))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, mark("wait", False))
    trainer.run()
    return batches * 16 / clock["epoch"], clock["wait"] / clock["epoch"]


def _compute_rate(dataset, size, outputs, batches, device) -> float:
    from monai.data import DataLoader

    net, optimizer, loss = _network(size, dataset[0]["image"].shape[0], outputs, device)
    loader = DataLoader(dataset, batch_size=16, shuffle=True, drop_last=True, num_workers=0)
    held = []
    for batch in loader:
        held.append((batch["image"].to(device), batch["label"].to(device)))
        if len(held) == batches:
            break
    while len(held) < batches:  # a short epoch: reuse batches, the compute is the same
        held.append(held[len(held) % max(1, len(held))])
    net.train()

    def step(image, label):
        optimizer.zero_grad(set_to_none=True)
        loss(net(image), label).backward()
        optimizer.step()

    for image, label in held[:2]:
        step(image, label)
    start = time.perf_counter()
    for image, label in held:
        step(image, label)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batches * 16 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", type=Path, default=None)
    parser.add_argument("--patients", type=int, default=6, help="synthetic patients when no --dataset_dir")
    parser.add_argument("--kinds", nargs="+", default=["hemorrhage"], choices=["hemorrhage", "ischemic"])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--batches", type=int, default=16, help="batches of 16 per timing (full on CPU is slow)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default torch's); 1 on a busy machine"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MONAI_STROKE_CACHE", str(Path(tmp) / "cache"))
        dataset_dir = args.dataset_dir or _make_dataset(Path(tmp), args.patients)
        for kind in args.kinds:
            for size in args.sizes:
                dataset, outputs = _datasets(kind, dataset_dir, size, Path(tmp) / "samples")
                for workers in args.workers:
                    # measured back to back, so that both see the same machine load
                    compute = _compute_rate(dataset, size, outputs, args.batches, device)
                    epoch, waiting = _epoch_rate(dataset, size, outputs, workers, args.batches, device)
                    row = {
                        "kind": kind,
                        "network": size,
                        "input": list(dataset[0]["image"].shape),
                        "num_workers": workers,
                        "epoch_images_per_s": round(epoch, 3),
                        "compute_images_per_s": round(compute, 3),
                        "overhead": round(compute / epoch, 3),
                        # within the same epoch, so not skewed by load that changes between the two timings
                        "epoch_share_waiting_for_data": round(waiting, 3),
                        "overhead_within_epoch": round(1.0 / max(1e-9, 1.0 - waiting), 3),
                    }
                    results.append(row)
                    print(json.dumps(row), flush=True)
    machine = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})",
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "batches_per_timing": args.batches,
        "target_overhead": 1.15,
    }
    print(json.dumps({"machine": machine}))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
