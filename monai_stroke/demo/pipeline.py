"""``monai-stroke demo``: the whole system on the built-in synthetic cohort, through the bundles users run.

Stages (each one a call of :func:`monai.bundle.run` on the shipped bundle where there is a bundle, so the demo
walks the same code path a user does; each stage's outputs live under ``DIR/runs/<stage>``):

1. ``cohort``      - :func:`monai_stroke.synthetic.make_cohort` -> ``DIR/data`` (or ``--dataset`` given);
2. ``hemorrhage``  - ``bundles/hemorrhage_classification`` train.yaml: the source network;
3. ``evaluate``    - the same bundle's evaluate.yaml on the test split (metrics, ROC);
4. ``atl_early_vs_intact`` / ``atl_old_vs_intact`` - ``bundles/adaptive_transfer``: the freeze-depth search from
   the hemorrhage backbone, one per ischemic task (table, choice, figures, chosen model, its test metrics);
5. ``models``      - ``DIR/models/{hemorrhage,early_vs_intact,old_vs_intact}/model.pt``: a models folder that
   ``monai-stroke predict --models DIR/models`` uses;
6. ``predict``     - the cascade on held-out (test split) patients -> ``DIR/reports/<patient>/``;
7. ``summary``     - ``DIR/summary.html``: metrics, the ATL tables and figures, reports beside the ground truth.

A stage whose outputs exist from an earlier run with the same settings is skipped (``DIR/demo_state.json``), so a
second ``make demo`` is quick and an interrupted one continues; the ATL bundle also resumes within a task.

Default settings fit a 2-core CPU in about 10 minutes: tiny networks, 12 small (128 x 128) patients, a 2 mm
template grid and a faster registration (both recorded in the models' contracts, so ``predict`` uses them too).
``--full`` is the paper's setting for a GPU machine: SE-ResNeXt50, full-size 512 x 512 patients, the 1 mm
template, the bundles' default registration and crop sizes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from monai_stroke.errors import UserInputError
from monai_stroke.utils import write_json_atomic

__all__ = [
    "DemoSettings",
    "STAGES",
    "bundle_config",
    "run_bundle",
    "run_demo",
    "ATL_INTEGRATION",
]

logger = logging.getLogger(__name__)

STAGES: tuple[str, ...] = (
    "cohort",
    "hemorrhage",
    "evaluate",
    "atl_early_vs_intact",
    "atl_old_vs_intact",
    "models",
    "predict",
    "summary",
)
STATE_FILE = "demo_state.json"
TASKS: tuple[str, ...] = ("early_vs_intact", "old_vs_intact")
#: Where the adaptive-transfer bundle plugs in. Without it (an older checkout), the demo falls back to the
#: ischemic bundle initialised from the hemorrhage backbone without a freeze-depth search, and says so.
ATL_INTEGRATION = {"bundle": "adaptive_transfer", "fallback": "ischemic_classification"}


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """What the demo trains on and how long.

    Args:
        n_patients: synthetic patients (splits 60/20/20, at least 3 in val and test from 9 on).
        size: synthetic image size, ``small`` (128 x 128) or ``full`` (512 x 512).
        seed: cohort and training seed.
        network_size: ``tiny`` or ``full`` (SE-ResNeXt50).
        hemorrhage_epochs: epochs of the hemorrhage network.
        epochs_per_depth: fine-tuning epochs per freeze depth in the ATL search.
        search: ``halving`` or ``exhaustive``.
        depths: freeze depths searched (None: the bundle's, all of the paper's plus the control).
        crop_size: region crop size (None: the bundles' default for the network size).
        template_spacing: registration output grid in mm (None: the template's 1 mm).
        registration: registration parameter overrides (empty: the bundles' defaults).
        contralateral: give the ischemic networks the mirrored contralateral crop as extra channels.
        n_reports: held-out patients run through ``predict`` for the summary.
        num_workers: data-loading processes of the bundles.
    """

    n_patients: int = 12
    size: str = "small"
    seed: int = 0
    network_size: str = "tiny"
    hemorrhage_epochs: int = 5
    epochs_per_depth: int = 4
    search: str = "halving"
    depths: tuple[str, ...] | None = None
    crop_size: tuple[int, int] | None = (32, 32)
    template_spacing: float | None = 2.0
    registration: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: {"levels_mm": [6.0, 4.0], "iterations": 80}
    )
    contralateral: bool = True
    n_reports: int = 3
    num_workers: int = 0

    @classmethod
    def full(cls) -> DemoSettings:
        """The paper's setting, for a GPU machine."""
        return cls(
            n_patients=60,
            size="full",
            network_size="full",
            hemorrhage_epochs=20,
            epochs_per_depth=10,
            crop_size=None,
            template_spacing=None,
            registration={},
            n_reports=4,
            num_workers=4,
        )

    @classmethod
    def quick(cls) -> DemoSettings:
        """The smallest run that still exercises every stage (smoke tests)."""
        return cls(
            n_patients=6,
            hemorrhage_epochs=1,
            epochs_per_depth=1,
            depths=("none", "layer0", "not_transfer"),
            n_reports=1,
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["registration"] = dict(self.registration)
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def ischemic_overrides(self) -> dict[str, Any]:
        """Region pre-processing overrides shared by both ischemic tasks (so they share one registration cache)."""
        out: dict[str, Any] = {"contralateral": self.contralateral, "template_spacing": self.template_spacing}
        out["registration"] = dict(self.registration)
        if self.crop_size is not None:
            out["crop_size"] = list(self.crop_size)
        return out


def bundle_config(name: str, file: str = "train.yaml") -> Path:
    """A shipped bundle's config file (``bundles/<name>/configs/<file>`` of this checkout)."""
    candidates = [Path.cwd() / "bundles", Path(__file__).resolve().parents[2] / "bundles"]
    for root in candidates:
        path = root / name / "configs" / file
        if path.is_file():
            return path
    raise UserInputError(
        f"bundle config bundles/{name}/configs/{file} not found (looked in {', '.join(str(c) for c in candidates)}); "
        "run the demo from a clone of monai-stroke (the bundles are not part of the installed package)"
    )


def run_bundle(config_files: list[Path], **overrides: Any) -> None:
    """Run a bundle the way ``python -m monai.bundle run`` does, with command-line style overrides."""
    from monai.bundle import run

    files = [str(p) for p in config_files]
    logging_file = Path(files[0]).parent / "logging.conf"
    run(
        config_file=files if len(files) > 1 else files[0],
        logging_file=str(logging_file) if logging_file.is_file() else None,
        **overrides,
    )


BundleRunner = Callable[..., None]


class _State:
    """Completed stages of a demo folder, valid for one settings fingerprint."""

    def __init__(self, root: Path, fingerprint: str) -> None:
        self.path = root / STATE_FILE
        self.fingerprint = fingerprint
        data: dict[str, Any] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = {}
        #: whether the folder holds results of other settings (they must go: the bundles refuse to resume them)
        self.stale = bool(data) and data.get("fingerprint") != fingerprint
        self.done: dict[str, float] = {} if self.stale else data.get("done", {})
        self.timings: dict[str, float] = dict(self.done)

    def finish(self, stage: str, seconds: float) -> None:
        self.done[stage] = round(seconds, 2)
        self.timings[stage] = round(seconds, 2)
        write_json_atomic(self.path, {"fingerprint": self.fingerprint, "done": self.done})


def _check_out(out: Path, dataset_dir: Path | None) -> None:
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; give a folder for the demo")
    if out.is_dir() and any(out.iterdir()) and not (out / STATE_FILE).is_file():
        raise UserInputError(
            f"--out {out} exists and is not a demo folder (no {STATE_FILE}); give a new folder, or the folder of an "
            "earlier demo run to continue it"
        )
    if dataset_dir is not None and not (Path(dataset_dir) / "cohort.csv").is_file():
        raise UserInputError(
            f"--dataset {dataset_dir} is not a dataset folder (no cohort.csv); see 'monai-stroke synth'"
        )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_demo(
    out_dir: str | os.PathLike,
    settings: DemoSettings | None = None,
    dataset_dir: str | os.PathLike | None = None,
    device: str | None = None,
    bundle_runner: BundleRunner = run_bundle,
) -> dict[str, Any]:
    """Run every stage (see the module docstring) into ``out_dir``; returns the summary record.

    Args:
        out_dir: the demo folder (new, or an earlier demo's to continue it).
        settings: :class:`DemoSettings` (default: the 2-core CPU setting).
        dataset_dir: an existing dataset folder to use instead of synthesising one (real data converted through
            the manifests works too).
        device: ``cpu`` or ``cuda`` for training and prediction (default: CUDA when available).
        bundle_runner: how a bundle is run (default :func:`run_bundle`, i.e. ``monai.bundle.run``).
    """
    import torch
    from tqdm import tqdm

    from monai_stroke.inference.models import resolve_device

    settings = settings or DemoSettings()
    out = Path(out_dir)
    _check_out(out, None if dataset_dir is None else Path(dataset_dir))
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    state = _State(out, settings.fingerprint() + ("" if dataset_dir is None else f":{Path(dataset_dir).resolve()}"))
    data = Path(dataset_dir) if dataset_dir is not None else out / "data"
    runs = out / "runs"
    if state.stale:
        _say(f"{out} holds a demo run with other settings: its results are replaced")
        for name in ("runs", "models", "reports", "summary.html"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    cache = out / "cache"
    common = {"network_size": settings.network_size, "num_workers": settings.num_workers, "cache_dir": str(cache)}
    common["device"] = f"$torch.device('{dev}')"
    started = time.perf_counter()
    atl_bundle = _atl_bundle()
    records: dict[str, Any] = {"settings": settings.to_dict(), "device": str(dev), "atl_bundle": atl_bundle}

    def stage_cohort() -> None:
        if dataset_dir is not None:
            return
        from monai_stroke.synthetic import make_cohort

        make_cohort(data, settings.n_patients, seed=settings.seed, size=settings.size, overwrite=True)

    def stage_hemorrhage() -> None:
        bundle_runner(
            [bundle_config("hemorrhage_classification")],
            dataset_dir=str(data),
            output_dir=str(runs / "hemorrhage"),
            max_epochs=settings.hemorrhage_epochs,
            seed=settings.seed,
            **common,
        )

    def stage_evaluate() -> None:
        bundle_runner(
            [bundle_config("hemorrhage_classification"), bundle_config("hemorrhage_classification", "evaluate.yaml")],
            dataset_dir=str(data),
            output_dir=str(runs / "hemorrhage"),
            **common,
        )

    def stage_atl(task: str) -> Callable[[], None]:
        def run_task() -> None:
            source = runs / "hemorrhage" / "models" / "model.pt"
            overrides = {**common, **settings.ischemic_overrides(), "task": task, "seed": settings.seed}
            if atl_bundle == ATL_INTEGRATION["bundle"]:
                extra = {"depths": list(settings.depths)} if settings.depths else {}
                bundle_runner(
                    [bundle_config(atl_bundle)],
                    dataset_dir=str(data),
                    output_dir=str(runs / f"atl_{task}"),
                    source_checkpoint=str(source),
                    epochs_per_depth=settings.epochs_per_depth,
                    search=settings.search,
                    **extra,
                    **overrides,
                )
            else:  # integration point: no freeze-depth search available, plain transfer from the hemorrhage backbone
                bundle_runner(
                    [bundle_config(atl_bundle)],
                    dataset_dir=str(data),
                    output_dir=str(runs / f"atl_{task}"),
                    pretrained_weights=str(source),
                    max_epochs=settings.epochs_per_depth,
                    **overrides,
                )

        return run_task

    def stage_models() -> None:
        from monai_stroke.inference.models import load_cascade_models

        sources = {"hemorrhage": runs / "hemorrhage", **{t: runs / f"atl_{t}" for t in TASKS}}
        for slot, run_dir in sources.items():
            src = run_dir / "models" / "model.pt"
            if not src.is_file():
                raise UserInputError(f"the {slot} stage wrote no {src}; see its log above")
            (out / "models" / slot).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / "models" / slot / "model.pt")
        load_cascade_models(out / "models")  # the folder must be one predict accepts

    def stage_predict() -> None:
        from monai_stroke.inference import predict
        from monai_stroke.manifests import load_dataset

        dataset = load_dataset(data)
        patients = (dataset.split("test") or dataset.patients)[: settings.n_reports]
        for pid in tqdm(patients, desc="predict", unit="patient", disable=None):
            target = out / "reports" / pid
            if target.exists():
                shutil.rmtree(target)
            predict(dataset.series_path(pid), out / "models", target, device=str(dev))

    def stage_summary() -> None:
        from monai_stroke.demo.summary import write_summary

        write_summary(out, data, records)

    plan: list[tuple[str, Callable[[], None], str]] = [
        ("cohort", stage_cohort, "synthetic cohort" if dataset_dir is None else f"dataset {data}"),
        ("hemorrhage", stage_hemorrhage, "hemorrhage network (bundles/hemorrhage_classification)"),
        ("evaluate", stage_evaluate, "hemorrhage evaluation on the test split"),
        *[(f"atl_{t}", stage_atl(t), f"{t}: {atl_bundle} from the hemorrhage backbone") for t in TASKS],
        ("models", stage_models, f"models folder {out / 'models'}"),
        ("predict", stage_predict, "cascade on held-out patients"),
        ("summary", stage_summary, f"summary {out / 'summary.html'}"),
    ]
    torch.manual_seed(settings.seed)
    bar = tqdm(total=len(plan), desc="demo", unit="stage", disable=None, position=0)
    try:
        for number, (name, action, what) in enumerate(plan, start=1):
            bar.set_postfix_str(name)
            if name in state.done and name != "summary":
                _say(f"[{number}/{len(plan)}] {what}: done earlier ({state.done[name]:.0f} s), skipped")
                bar.update()
                continue
            _say(f"[{number}/{len(plan)}] {what} ...")
            begun = time.perf_counter()
            if name == "summary":
                records["timings_s"] = {**state.timings, "total_s": round(time.perf_counter() - started, 1)}
            action()
            state.finish(name, time.perf_counter() - begun)
            _say(f"[{number}/{len(plan)}] {what}: {time.perf_counter() - begun:.0f} s")
            bar.update()
    finally:
        bar.close()
    records["timings_s"] = {**state.timings, "total_s": round(time.perf_counter() - started, 1)}
    return records


def _atl_bundle() -> str:
    try:
        bundle_config(ATL_INTEGRATION["bundle"])
        return ATL_INTEGRATION["bundle"]
    except UserInputError:
        logger.warning(
            "bundles/%s is missing: the ischemic models are trained with bundles/%s from the hemorrhage backbone, "
            "without the freeze-depth search",
            ATL_INTEGRATION["bundle"],
            ATL_INTEGRATION["fallback"],
        )
        return ATL_INTEGRATION["fallback"]
