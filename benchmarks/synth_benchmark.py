"""Synthetic cohort speed: ``--size small`` and ``--size full`` cohorts against the issue's targets.

Targets (issue #3 and its assignment): 12 small patients in about 10-20 s and ``--patients 40 --size full`` in
under 5 minutes on 2 cores. This script times, in one run on whatever machine runs it:

* the one-off setup of a process (template + atlas from the cache, derived maps);
* ``make_cohort`` of 12 small patients and of N full patients (default 40) with the given workers;
* the per-patient cost ratio full / small, and each cohort's time as a fraction of its target.

Wall time on a shared machine is inflated by everything else running on it, so CPU time (this process and its
worker processes) is reported too: ``cpu_seconds / workers`` is what the wall time would be on ``workers``
otherwise idle cores. The 1-minute load average before each step says how contended the run was. Compare
ratios measured in the same run. Nothing asserts a time.

Run: ``python benchmarks/synth_benchmark.py [--full-patients 40] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

SMALL_TARGET_S = 20.0
FULL_TARGET_S = 300.0


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-patients", type=int, default=40)
    parser.add_argument("--small-patients", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from monai_stroke.synthetic import SynthConfig, default_head, make_cohort

    result: dict = {"workers": args.workers, "cpus": len(os.sched_getaffinity(0)), "load_before_setup": _load()}
    head, setup = _timed(default_head)
    _, derived = _timed(lambda: (head.depth_mm, head.ventricles, head.head_points_mm, head.texture_field(3.0)))
    result["setup_s"] = round(setup + derived, 2)
    with tempfile.TemporaryDirectory() as work:
        for size, n, target in (
            ("small", args.small_patients, SMALL_TARGET_S),
            ("full", args.full_patients, FULL_TARGET_S),
        ):
            result[f"load_before_{size}"] = _load()
            out = Path(work) / size
            cpu_before = _cpu_seconds()
            _, seconds = _timed(
                lambda size=size, n=n, out=out: make_cohort(
                    out, n, seed=0, config=SynthConfig(size=size), workers=args.workers
                )
            )
            cpu = _cpu_seconds() - cpu_before
            target = target * n / (12 if size == "small" else 40)
            result[size] = {
                "patients": n,
                "wall_seconds": round(seconds, 1),
                "cpu_seconds": round(cpu, 1),
                "idle_cores_estimate_s": round(cpu / args.workers, 1),
                "cpu_seconds_per_patient": round(cpu / n, 2),
                "dicom_files": sum(1 for _ in out.rglob("*.dcm")),
                "target_s": round(target, 1),
                "wall_fraction_of_target": round(seconds / target, 3),
                "idle_cores_fraction_of_target": round(cpu / args.workers / target, 3),
            }
    result["full_over_small_cpu_per_patient"] = round(
        result["full"]["cpu_seconds_per_patient"] / result["small"]["cpu_seconds_per_patient"], 2
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
