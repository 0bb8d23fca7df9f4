"""Successive halving vs exhaustive freeze-depth search: epochs spent, and how often both choose the same depth.

For each seed a synthetic cohort is written (``monai-stroke synth --size small``), and the adaptive_transfer bundle
runs on it twice, in-process through ``monai.bundle.run`` (exactly the bundle a user runs): ``--search exhaustive``
and ``--search halving``, with the same source model (the hemorrhage bundle, trained once on the first cohort),
the same depths, epochs and seed. Reported per seed and in total, measured in this one run:

- the epochs each strategy trained (all depths, the control ``not_transfer`` included, and the search alone: the
  control trains all ``e`` epochs under both strategies, so it is a fixed cost outside the search), and their
  ratio; the wall time of each run and their ratio;
- whether both chose the same depth, the rank of halving's choice in the exhaustive ranking by f, and its regret
  (how much higher its exhaustive f is than the best one, against the spread of f over the candidates);
- that halving saw exactly the losses exhaustive recorded for the same epochs (per-(depth, epoch) seeding).

Targets of issue #6: halving <= 40 % of exhaustive's epochs, the same choice in >= 4 of 5 seeds.
Small settings keep it CPU-sized (tiny network, 32 x 32 crops, a coarse registration on a 2 mm grid); the numbers
are about the search strategy, not about the networks' accuracy.

Run: ``python benchmarks/atl_search.py [--seeds 5 --patients 12 --epochs 8 --task early_vs_intact --work DIR]``
(about 3-5 minutes per seed on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST = {
    "crop_size": [32, 32],
    "template_spacing": 2.0,
    "registration": {"levels_mm": [6.0, 4.0], "iterations": 50},
    "num_workers": 0,
}


def _bundle(config: str, **overrides) -> float:
    from monai.bundle import run

    started = time.perf_counter()
    run(config_file=str(ROOT / "bundles" / config / "configs" / "train.yaml"), logging_file=False, **overrides)
    return time.perf_counter() - started


def _losses(out: Path) -> dict[str, list[float]]:
    return {p.parent.name: json.loads(p.read_text())["val_losses"] for p in (out / "atl").glob("*/progress.json")}


def _one_seed(seed: int, args, work: Path, source: Path | None) -> tuple[dict, Path]:
    from monai_stroke.synthetic import make_cohort
    from monai_stroke.transfer import CONTROL, atl_objective

    data = work / f"cohort{seed}"
    if not (data / "cohort.csv").is_file():
        make_cohort(data, n_patients=args.patients, seed=seed, size="small", workers=1)
    if source is None:
        hemorrhage = work / "hemorrhage"
        _bundle("hemorrhage_classification", dataset_dir=str(data), output_dir=str(hemorrhage), max_epochs=2,
                network_size="tiny", num_workers=0, spatial_size=[32, 32])
        source = hemorrhage / "models" / "model.pt"
    common = {"dataset_dir": str(data), "source_checkpoint": str(source), "epochs_per_depth": args.epochs,
              "network_size": "tiny", "task": args.task, "seed": seed, "batch_size": 16, **FAST}
    # registration and crops once, before the timed runs, so both strategies read the same cache
    from monai_stroke.data import default_cache_dir, region_datasets

    params = {k: v for k, v in FAST.items() if k != "num_workers"}
    region_datasets(data, args.task, cache_dir=default_cache_dir(), augment=False, **params)
    walls, choices, outs = {}, {}, {}
    for strategy in ("exhaustive", "halving"):
        outs[strategy] = work / f"seed{seed}_{strategy}"
        shutil.rmtree(outs[strategy], ignore_errors=True)  # a finished search would only be reported again
        walls[strategy] = _bundle("adaptive_transfer", output_dir=str(outs[strategy]), search=strategy, **common)
        choices[strategy] = json.loads((outs[strategy] / "atl_choice.json").read_text())
    full, half = _losses(outs["exhaustive"]), _losses(outs["halving"])
    # rank of halving's choice among the exhaustive candidates by f (1 = the same choice)
    candidates = choices["exhaustive"]["candidates"]
    ranking = sorted(candidates, key=lambda d: atl_objective(full[d]))
    f_full = {d: atl_objective(full[d]) for d in ranking}
    replay = max(abs(a - b) for d, v in half.items() for a, b in zip(v, full[d], strict=False))
    control = {s: len(_losses(outs[s]).get(CONTROL, [])) for s in outs}
    result = {
        "seed": seed,
        "exhaustive_choice": choices["exhaustive"]["theta"],
        "halving_choice": choices["halving"]["theta"],
        "same_choice": choices["exhaustive"]["theta"] == choices["halving"]["theta"],
        "halving_choice_rank": ranking.index(choices["halving"]["theta"]) + 1,
        # how much worse, by the exhaustive f, halving's choice is, against the spread of f over the candidates
        "f_regret": f_full[choices["halving"]["theta"]] - f_full[ranking[0]],
        "f_spread": f_full[ranking[-1]] - f_full[ranking[0]],
        "f_gap_first_second": f_full[ranking[1]] - f_full[ranking[0]] if len(ranking) > 1 else None,
        "epochs_exhaustive": choices["exhaustive"]["epochs_trained"],
        "epochs_halving": choices["halving"]["epochs_trained"],
        "search_epochs_exhaustive": choices["exhaustive"]["epochs_trained"] - control["exhaustive"],
        "search_epochs_halving": choices["halving"]["epochs_trained"] - control["halving"],
        "wall_s_exhaustive": round(walls["exhaustive"], 1),
        "wall_s_halving": round(walls["halving"], 1),
        "max_loss_difference_on_shared_epochs": replay,
        "f_exhaustive": {d: round(f_full[d], 5) for d in ranking},
        "eliminated": choices["halving"]["eliminated"],
        "test_auc_exhaustive_choice": choices["exhaustive"]["test"]["auc"],
        "test_auc_halving_choice": choices["halving"]["test"]["auc"],
    }
    return result, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8, help="epochs_per_depth e")
    parser.add_argument("--task", default="early_vs_intact")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    import torch

    # tiny networks on a shared CPU: one thread is several times faster than two contending ones
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        os.environ.setdefault("MONAI_STROKE_CACHE", str(work / "cache"))
        work.mkdir(parents=True, exist_ok=True)
        rows, source = [], None
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            row, source = _one_seed(seed, args, work, source)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "f_exhaustive"}), flush=True)
    total = {
        "settings": {"seeds": args.seeds, "patients": args.patients, "epochs_per_depth": args.epochs,
                     "task": args.task, **FAST},
        "same_choice": f"{sum(r['same_choice'] for r in rows)} of {len(rows)}",
        "epochs_fraction": sum(r["epochs_halving"] for r in rows) / sum(r["epochs_exhaustive"] for r in rows),
        "search_epochs_fraction": sum(r["search_epochs_halving"] for r in rows)
        / sum(r["search_epochs_exhaustive"] for r in rows),
        "wall_fraction": sum(r["wall_s_halving"] for r in rows) / sum(r["wall_s_exhaustive"] for r in rows),
        "mean_f_regret_over_f_spread": sum(r["f_regret"] / r["f_spread"] for r in rows if r["f_spread"]) / len(rows),
        "max_loss_difference_on_shared_epochs": max(r["max_loss_difference_on_shared_epochs"] for r in rows),
        "per_seed": rows,
    }
    print(json.dumps({k: v for k, v in total.items() if k != "per_seed"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(total, indent=1) + "\n")


if __name__ == "__main__":
    main()
