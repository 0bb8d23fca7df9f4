"""End-to-end ``predict`` latency and peak memory on a full-size 40-slice head CT, split by stage.

What is measured (CPU, whatever threads torch is given; nothing is asserted):

* one full-size synthetic patient (512 x 512 x 40, 0.47 mm pixels, 4 mm slices) and a models folder of *untrained*
  full-size SE-ResNeXt50 networks with the paper's inputs (hemorrhage 9 x 256 x 256 per slice; ischemic 3-slice
  128 x 128 crops of the 1 mm template grid, default registration). The hemorrhage network is pinned negative, so
  the whole cascade runs (registration, 20 crops, both ischemic networks);
* ``predict`` in a fresh process (as the CLI runs it): wall time including imports and model loading, the
  cascade's own per-stage timings from ``report.json``, and the process's peak resident memory;
* the unavoidable compute: the same three networks' forward passes on tensors of the same shapes, timed in the
  same child process, and the ratio end-to-end / forward (the issue's target is <= 1.5);
* the same run without explanations (Grad-CAM + figures), to separate them.

Run: ``python benchmarks/predict_benchmark.py [--work DIR] [--slices 40] [--repeats 2]``. The patient and models
are built once in ``--work`` (default: a temporary folder) and reused.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMERCIAL_S = 240.0  # "about 4 minutes per scan" reported for commercial ASPECTS/hemorrhage suites


def _prepare(work: Path, n_slices: int) -> tuple[Path, Path]:
    from monai_stroke.inference.untrained import write_untrained_models
    from monai_stroke.synthetic import SynthConfig, default_head, plan_patient, write_patient

    series = work / f"patient_{n_slices}" / "dicom"
    if not series.is_dir():
        head = default_head()
        # 4 mm slices: 40 of them cover the head (at 5 mm the synthetic head is shorter than 40 slices)
        config = SynthConfig(size="full", n_slices=(n_slices, n_slices), slice_mm=4.0, tilt_fraction=0.0)
        spec = plan_patient("B001", [11], "intact", head, config, tilted=False)
        write_patient(spec, series.parent, head)
    models = work / "models"
    if not (models / "old_vs_intact" / "model.pt").is_file():
        write_untrained_models(
            models,
            network_size="full",
            hemorrhage_spatial_size=(256, 256),
            crop_size=(128, 128),
            hemorrhage_bias=-20.0,
        )
    return series, models


def _forward_seconds(models_dir: Path, report: dict, repeats: int) -> dict[str, float]:
    """Forward passes of the three networks on inputs of the cascade's shapes (no pre-processing)."""
    import torch

    from monai_stroke.inference.models import load_cascade_models

    models = load_cascade_models(models_dir)
    n_slices = report["series"]["n_slices"]
    shapes = {
        "hemorrhage": (
            n_slices,
            models.hemorrhage.contract.network["in_channels"],
            *models.hemorrhage.contract.spatial_size,
        ),
        "early_vs_intact": (20, models.early.contract.network["in_channels"], *models.early.contract.spatial_size),
        "old_vs_intact": (20, models.old.contract.network["in_channels"], *models.old.contract.spatial_size),
    }
    out = {}
    for slot, model in models.all().items():
        x = torch.rand(shapes[slot])
        best = float("inf")
        with torch.inference_mode():
            model.network(x[:2])  # warm-up
            for _ in range(repeats):
                t = time.perf_counter()
                for start in range(0, x.shape[0], 16):
                    model.network(x[start : start + 16])
                best = min(best, time.perf_counter() - t)
        out[slot] = best
    return out


def _child(series: str, models: str, out: str, explain: bool, repeats: int) -> None:
    begun = time.perf_counter()
    from monai_stroke.inference import predict

    report = predict(series, models, out, explain=explain)
    wall = time.perf_counter() - begun
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    forward = _forward_seconds(Path(models), report, repeats)
    print(json.dumps({"wall_s": wall, "peak_rss_mb": peak_mb, "timings_s": report["timings_s"], "forward_s": forward}))


def _run_child(series: Path, models: Path, out: Path, explain: bool, repeats: int) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", str(series), str(models), str(out), str(int(explain)), str(repeats)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the patient and models (reused)")
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2, help="forward-pass repeats (best of)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="predict_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    series, models = _prepare(work, args.slices)
    n = len(list(series.glob("*.dcm")))
    print(f"prepared a {n}-slice 512x512 patient and full-size models in {work} ({time.perf_counter() - t:.0f} s)")
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    runs = {
        "with explanations": _run_child(series, models, work / "out_explain", True, args.repeats),
        "without explanations": _run_child(series, models, work / "out_plain", False, args.repeats),
    }
    for name, r in runs.items():
        timings = r["timings_s"]
        forward = sum(r["forward_s"].values())
        total = timings["total"]
        print(f"\npredict {name}: {total:.1f} s in the cascade, {r['wall_s']:.1f} s with imports and model loading")
        for stage, seconds in timings.items():
            if stage != "total":
                print(f"  {stage:<14} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")
        print(
            f"  pure forward of the 3 networks on the same shapes: {forward:.2f} s "
            + ", ".join(f"{k} {v:.2f}" for k, v in r["forward_s"].items())
        )
        print(
            f"  end-to-end / forward = {total / forward:.2f} (target <= 1.5); "
            f"without registration: {(total - timings.get('registration', 0.0)) / forward:.2f}"
        )
        print(f"  peak RSS {r['peak_rss_mb']:.0f} MB (target <= 3072 MB)")
        print(f"  vs ~{COMMERCIAL_S:.0f} s reported for commercial tools: {total / COMMERCIAL_S:.2f}x their time")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4], bool(int(sys.argv[5])), int(sys.argv[6]))
    else:
        main()
