"""Ischemic pre-processing time per patient on CPU, and the share of each step.

The steps are those of the ``ischemic_regions`` chain's ``preprocess`` part, run one at a time on each patient of a
synthetic dataset: ingest (DICOM folder -> HU volume), template registration (-> template grid), and the 20 region
crops (per hemisphere, 3 template slices each); then the per-task ``finalize`` part (label, window, lesion
concatenation), which runs every epoch after the cache (timed with one torch thread, as in a DataLoader worker).
Each step is timed in this one process on every patient (``--repeats`` passes, the median kept per patient), so the
shares compare like with like on whatever machine runs it; nothing here asserts a time. The registration is the
chain's default (rigid then affine, 6/4/2 mm levels) unless ``--fast`` (one rigid 6 mm level, the tests' setting).

Run: ``python benchmarks/preprocessing_benchmark.py [--data DIR | --patients 3 --size small|full] [--repeats 1]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from monai_stroke.transforms import region_records
from monai_stroke.transforms.chains import load_chain

FAST = {"template_spacing": 2.0, "registration": {"stages": ["rigid"], "levels_mm": [6.0], "iterations": 40}}


def time_patient(record: dict, steps: dict, finalize, repeats: int) -> dict[str, float]:
    """Median seconds of each step on one patient."""
    times: dict[str, list[float]] = {name: [] for name in (*steps, "finalize")}
    for _ in range(repeats):
        data = dict(record)
        for name, step in steps.items():
            start = time.perf_counter()
            data = step(data)
            times[name].append(time.perf_counter() - start)
        # finalize runs in DataLoader workers, which PyTorch limits to one intra-op thread each
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        start = time.perf_counter()
        finalize(data)
        times["finalize"].append(time.perf_counter() - start)
        torch.set_num_threads(threads)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="a dataset folder (default: synthesise one)")
    parser.add_argument("--patients", type=int, default=3, help="patients to synthesise/time")
    parser.add_argument("--size", choices=("small", "full"), default="small", help="synthetic image size")
    parser.add_argument("--repeats", type=int, default=1, help="passes per patient (median kept)")
    parser.add_argument("--fast", action="store_true", help="the tests' quick registration (rigid, one level)")
    parser.add_argument("--crop-size", type=int, default=128, help="crop H = W in pixels")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from monai_stroke.synthetic.cohort import make_cohort

            data = make_cohort(Path(tmp) / "cohort", max(args.patients, 1), seed=5, size=args.size, workers=1)
        records = region_records(data)[: args.patients]
        params = {"crop_size": [args.crop_size] * 2, **(FAST if args.fast else {})}
        ingest, register, crop = load_chain("ischemic_regions", "preprocess", **params).transforms
        steps = {"ingest": ingest, "register": register, "crop_20_regions": crop}
        finalize = load_chain("ischemic_regions", "finalize", drop_unlabelled=False)
        time_patient(records[0], steps, finalize, 1)  # warm-up: imports, template and atlas caches, page cache
        per_patient = [time_patient(r, steps, finalize, args.repeats) for r in records]

    names = list(per_patient[0])
    median = {name: statistics.median(p[name] for p in per_patient) for name in names}
    preprocess_total = sum(median[n] for n in steps)
    report = {
        "patients": len(per_patient),
        "size": args.size if args.data is None else str(args.data),
        "registration": "fast (rigid, 6 mm, 40 iterations, 2 mm grid)"
        if args.fast
        else "default (rigid + affine, 6/4/2 mm)",
        "torch_threads": torch.get_num_threads(),
        "median_seconds": {n: round(v, 3) for n, v in median.items()},
        "preprocess_seconds_per_patient": round(preprocess_total, 3),
        "share_of_preprocess": {n: round(median[n] / preprocess_total, 3) for n in steps},
        "finalize_vs_preprocess": round(median["finalize"] / preprocess_total, 4),
    }
    print(json.dumps(report, indent=2))
    print(f"\n{'step':<18}{'median s':>10}{'share':>8}")
    for name in steps:
        print(f"{name:<18}{median[name]:>10.3f}{median[name] / preprocess_total:>8.1%}")
    print(f"{'(finalize/epoch)':<18}{median['finalize']:>10.3f}{median['finalize'] / preprocess_total:>8.1%}")


if __name__ == "__main__":
    main()
