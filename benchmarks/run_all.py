"""Run every benchmark of ``benchmarks/`` in turn, each in its own process, and summarise how each one ended.

``make bench`` runs this. Every benchmark prints its own measurements (ratios measured within its one run; none
asserts a time); this script adds the wall time of each and whether it finished. ``--quick`` passes each script
its smallest meaningful settings (a smoke run of the measurement code, minutes instead of about an hour on 2 CPU
cores); the default runs each with its own defaults, which are the settings quoted in the README.

Run: ``python benchmarks/run_all.py [--quick] [--only NAME ...] [--log DIR]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: benchmark script -> the arguments of a quick run (the defaults are the full measurement)
BENCHMARKS: dict[str, list[str]] = {
    "ingest_benchmark.py": ["--repeats", "2"],
    "anatomy_benchmark.py": [],
    "synth_benchmark.py": ["--full-patients", "2", "--small-patients", "4"],
    "registration_benchmark.py": ["--patients", "1"],
    "preprocessing_benchmark.py": ["--patients", "2", "--fast"],
    "train_throughput.py": ["--sizes", "tiny", "--workers", "0", "--batches", "8"],
    "atl_search.py": ["--seeds", "1", "--patients", "9", "--epochs", "2"],
    "predict_benchmark.py": ["--repeats", "1", "--slices", "20"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's smallest settings (a smoke run)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="these benchmarks only (file stems)")
    parser.add_argument("--log", type=Path, default=None, help="also write each benchmark's output to DIR/NAME.log")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS)
    if args.only:
        wanted = {n.removesuffix(".py") for n in args.only}
        unknown = wanted - {n.removesuffix(".py") for n in names}
        if unknown:
            print(
                f"error: unknown benchmark(s) {', '.join(sorted(unknown))}; choose from "
                f"{', '.join(n.removesuffix('.py') for n in names)}",
                file=sys.stderr,
            )
            return 2
        names = [n for n in names if n.removesuffix(".py") in wanted]
    if args.log is not None:
        args.log.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        command = [sys.executable, str(HERE / name), *(BENCHMARKS[name] if args.quick else [])]
        print(f"\n=== {name} {' '.join(command[2:])}", flush=True)
        start = time.perf_counter()
        # the output is streamed (the benchmarks report as they go) and kept for the log
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
            lines = []
            for line in process.stdout:
                print(line, end="", flush=True)
                lines.append(line)
        seconds = time.perf_counter() - start
        if args.log is not None:
            (args.log / f"{name.removesuffix('.py')}.log").write_text("".join(lines))
        results.append((name, process.returncode, seconds))
    print("\n=== summary")
    width = max(len(n) for n, _, _ in results)
    for name, code, seconds in results:
        print(f"{name:<{width}}  {'ok' if code == 0 else f'FAILED (exit {code})':<16} {seconds:8.1f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
