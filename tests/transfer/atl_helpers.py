"""A small, fast ATL setup for the handler tests: a tiny source checkpoint and an in-memory crop dataset.

The crops carry a real signal (a darker blob in positives, noise everywhere), so a network learns within a few
epochs and the depths differ; a random per-sample transform draws from ``self.R`` so that the handler's
per-epoch seeding is exercised exactly as with the real augmentation.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.transforms import RandomizableTransform

from monai_stroke.contract import Contract, save_checkpoint
from monai_stroke.data import Recipe, SampleDataset
from monai_stroke.networks import create_network
from monai_stroke.transfer.handler import AdaptiveTransferHandler
from monai_stroke.vocabulary import HEMORRHAGE_LABELS

TASK = "early_vs_intact"
SIZE = 24


def make_source_checkpoint(path: Path, seed: int = 7) -> Path:
    """A tiny 9-channel (3 slices x 3 windows) hemorrhage checkpoint with non-trivial batch-norm parameters and
    statistics (as a trained network has), so that every transferred tensor differs from a fresh network's."""
    torch.manual_seed(seed)
    net = create_network(size="tiny", in_channels=9, num_outputs=6)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.8, 1.2)
                module.bias.uniform_(-0.1, 0.1)
    contract = Contract(
        kind="hemorrhage",
        output_names=list(HEMORRHAGE_LABELS),
        network=dict(net.factory_args),
        windows_hu=[[40, 80], [80, 200], [600, 2800]],
        neighbours=1,
        spatial_size=[SIZE, SIZE],
        chain="hemorrhage_slices",
    )
    return save_checkpoint(path, net.state_dict(), contract)


class _Jitter(RandomizableTransform):
    """Random brightness offset per sample, from ``self.R`` (stands in for the HU-safe augmentation)."""

    def __init__(self) -> None:
        super().__init__(prob=1.0)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        d["image"] = d["image"] + float(self.R.uniform(-0.05, 0.05))
        return d


class CropDataset(SampleDataset):
    """Region-crop-like samples ``(3, SIZE, SIZE)`` with an ``early_vs_intact`` label, kind ``ischemic``."""

    kind = "ischemic"

    def __init__(self, n_patients: int, seed: int, augment: bool = False) -> None:
        rng = np.random.default_rng(seed)
        rows, images = [], []
        yy, xx = np.mgrid[:SIZE, :SIZE]
        for p in range(n_patients):
            for side in ("L", "R"):
                for region in ("C", "L", "I", "M1"):
                    label = int(rng.random() < 0.4)
                    img = 0.5 + 0.08 * rng.standard_normal((3, SIZE, SIZE))
                    if label:
                        cy, cx = rng.integers(8, SIZE - 8, size=2)
                        img -= 0.25 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
                    images.append(torch.tensor(img, dtype=torch.float32))
                    rows.append({"patient": p, "patient_id": f"S{seed}P{p}", "side": side, "region": region,
                                 f"label_{TASK}": label})
        super().__init__([{} for _ in range(n_patients)], pd.DataFrame(rows), _Jitter() if augment else None)
        self._images = images
        self.recipe = Recipe(
            kind="ischemic",
            chain="ischemic_regions",
            chain_params={"task": TASK, "neighbours": 1},
            output_names=[TASK],
            windows_hu=[[40, 20]],
            window_output="float",
            neighbours=1,
            spatial_size=[SIZE, SIZE],
            in_channels=3,
            task=TASK,
        )

    def make_sample(self, patient: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        return {"image": self._images[row["sample_id"]], "label": torch.tensor([float(row[f"label_{TASK}"])])}

    @property
    def output_names(self) -> list[str]:
        return [TASK]


def _loader(dataset: SampleDataset, shuffle: bool) -> torch.utils.data.DataLoader:
    from monai.data import DataLoader

    return DataLoader(dataset, batch_size=8, shuffle=shuffle, drop_last=shuffle, num_workers=0)


def build_search(out: Path, source: Path, epochs: int = 2, **handler_kwargs: Any) -> tuple[AdaptiveTransferHandler, Any]:
    """Trainer + validator + test evaluator + handler, as the bundle builds them (tiny and in memory)."""
    torch.manual_seed(0)
    net = create_network(size="tiny", in_channels=3, num_outputs=1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    train, val, test = CropDataset(6, 1, augment=True), CropDataset(3, 2), CropDataset(3, 3)
    validator = SupervisedEvaluator("cpu", _loader(val, False), net, decollate=False)
    tester = SupervisedEvaluator("cpu", _loader(test, False), net, decollate=False)
    trainer = SupervisedTrainer(
        "cpu", epochs, _loader(train, True), net, optimizer, torch.nn.BCEWithLogitsLoss(), decollate=False
    )
    handler = AdaptiveTransferHandler(
        out,
        source,
        validator,
        test_evaluator=tester,
        epochs_per_depth=epochs,
        lr_scheduler=scheduler,
        **handler_kwargs,
    )
    handler.attach(trainer)
    return handler, trainer


if __name__ == "__main__":  # the crash test runs a search in a subprocess: atl_helpers.py OUT SOURCE DEPTHS EPOCHS
    out_dir, source_path, depth_list, n_epochs = sys.argv[1:5]
    search, _ = build_search(Path(out_dir), Path(source_path), int(n_epochs), depths=depth_list.split(","))
    search.run()
