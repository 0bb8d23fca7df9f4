"""The cascade in one call: a head CT series in, ``report.json`` + ``report.png`` + ``explain/*.png`` out.

Follow one series (docs/METHOD.md, "The system in one picture"):

1. **ingest** (DICOM folder or NIfTI -> HU with true geometry) - the first step of every model's chain;
2. **hemorrhage** (:mod:`~monai_stroke.inference.hemorrhage`): every native slice, aggregated to the series.
   Positive -> the report says "hemorrhage suspected", lists the subtypes and the driving slices, and stops:
   ASPECTS is not scored (thrombolysis questions end here);
3. **registration** to the template, and its quality check; **region crops**; both **ischemic** networks
   (:mod:`~monai_stroke.inference.ischemic`) -> per-region probabilities -> **ASPECTS** per hemisphere;
4. **explanations** (:mod:`~monai_stroke.inference.explain`): Grad-CAM for the driving hemorrhage slices and for
   every region flagged positive, on the patient's own slices;
5. **report**: ``report.json`` (:mod:`~monai_stroke.inference.report`) and ``report.png``
   (:mod:`~monai_stroke.inference.figures`).

Each network is pre-processed by its own checkpoint contract; identical steps (ingest, registration) run once.
All files are written into a temporary sibling of ``OUT`` that is renamed into place at the end, so a failed run
leaves no partial output.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_stroke import __version__
from monai_stroke.errors import UserInputError
from monai_stroke.inference.explain import (
    crop_heat_volume,
    grad_cam,
    labels_on_slice,
    patient_slice_of,
    resize_to_slice,
    template_map_on_slice,
)
from monai_stroke.inference.figures import (
    SliceView,
    hemorrhage_report_figure,
    ischemic_report_figure,
    overlay_figure,
    save_png,
)
from monai_stroke.inference.hemorrhage import HemorrhageResult, predict_hemorrhage
from monai_stroke.inference.ischemic import IschemicResult, predict_ischemic
from monai_stroke.inference.models import (
    EARLY_SLOT,
    OLD_SLOT,
    CascadeModels,
    load_cascade_models,
    resolve_device,
)
from monai_stroke.inference.preprocess import ChainRunner, StageTimer
from monai_stroke.inference.report import (
    EXPLAIN_DIR,
    REPORT_FILE,
    REPORT_FORMAT,
    REPORT_PNG,
    WarningCollector,
    series_section,
    utc_now,
)
from monai_stroke.utils import atomic_dir, write_json_atomic
from monai_stroke.vocabulary import GANGLIONIC_REGIONS, SIDES, SUPRAGANGLIONIC_REGIONS

__all__ = ["StrokeCascade", "predict", "check_inputs", "check_output_dir"]

logger = logging.getLogger(__name__)

_INGEST_STEP = "LoadCTSeriesd"
_OUTPUT_NAMES = {REPORT_FILE, REPORT_PNG, EXPLAIN_DIR}
_FLAG_OF_SLOT = {EARLY_SLOT: "early_ischemic", OLD_SLOT: "old_infarction"}
_LEVELS = (("ganglionic level", GANGLIONIC_REGIONS), ("supraganglionic level", SUPRAGANGLIONIC_REGIONS))


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` if it may receive a report: absent, empty, or a previous report (which is replaced).

    Raises:
        UserInputError: it is a file, or a folder holding anything else (a mistyped ``--out`` must not wipe data).
    """
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise UserInputError(f"--out {out} is a file; give a folder for the report")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OUTPUT_NAMES)
        if foreign:
            raise UserInputError(
                f"--out {out} exists and holds other files ({', '.join(foreign[:5])}); give a new or empty folder "
                "(a previous report there is replaced)"
            )
    return out


def _round(values: Any, digits: int = 2) -> list[float]:
    return [round(float(v), digits) for v in np.asarray(values).reshape(-1)]


class StrokeCascade:
    """Hemorrhage check -> ischemic regions -> ASPECTS -> report, with explanations.

    Args:
        models: the three networks and the atlas (:func:`~monai_stroke.inference.models.load_cascade_models`).
        device: where the networks run.
        keep_identifiers: put the patient's name, ID and birth date, the series UID and the input path in the
            report (off by default).
        explain: write Grad-CAM explanations (``explain/*.png``).
        top_slices: hemorrhage slices listed and explained.
        batch_size: network batch size.
    """

    def __init__(
        self,
        models: CascadeModels,
        device: str | torch.device | None = "cpu",
        keep_identifiers: bool = False,
        explain: bool = True,
        top_slices: int = 3,
        batch_size: int = 16,
    ) -> None:
        self.device = resolve_device(device)
        self.models = models.to(self.device)
        self.keep_identifiers = bool(keep_identifiers)
        self.explain = bool(explain)
        self.top_slices = int(top_slices)
        self.batch_size = int(batch_size)
        self._label_slices: dict[int, np.ndarray] = {}  # per run: atlas labels on patient slices
        #: the last run's intermediate results (``runner``, ``hemorrhage``, ``ischemic``, ``ingested``), for inspection
        self.last: dict[str, Any] = {}

    @classmethod
    def from_dir(
        cls,
        models_dir: str | os.PathLike,
        atlas_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = "cpu",
        **options: Any,
    ) -> StrokeCascade:
        """A cascade from a models folder (see :mod:`~monai_stroke.inference.models` for the layout)."""
        models = load_cascade_models(models_dir, atlas_dir=atlas_dir, device=resolve_device(device))
        return cls(models, device=device, **options)

    # --- the run ------------------------------------------------------------------------------------------------

    def predict(self, series: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
        """Run the cascade on one series and write ``out_dir`` (``report.json``, ``report.png``, ``explain/``).

        Args:
            series: a DICOM folder or a NIfTI file.
            out_dir: the report folder (absent, empty, or a previous report).

        Returns:
            the report (as written to ``report.json``).

        Raises:
            UserInputError: the series does not exist or is not a head CT the ingest accepts, or ``out_dir`` holds
                other files.
        """
        series = Path(series)
        if not series.exists():
            raise UserInputError(f"series {series} does not exist; give a DICOM folder or a .nii/.nii.gz file")
        out = check_output_dir(out_dir)
        collector = WarningCollector(
            [] if self.keep_identifiers else [str(series), str(series.resolve()), series.name, series.resolve().name]
        )
        package_logger = logging.getLogger("monai_stroke")
        package_logger.addHandler(collector)
        started = time.perf_counter()
        try:
            report = self._predict(series, out, collector, started)
        finally:
            package_logger.removeHandler(collector)
        return report

    def new_runner(self) -> ChainRunner:
        """The chain runner of one run. Steps are shared within a run; sharing one runner across runs of the same
        series would reuse its ingest and registration too (what a test of the later steps may want)."""
        return ChainRunner()

    def _predict(self, series: Path, out: Path, collector: WarningCollector, started: float) -> dict[str, Any]:
        timer = StageTimer()
        runner = self.new_runner()
        runner.timer = timer
        self._label_slices = {}
        models = self.models
        hemorrhage = predict_hemorrhage(
            runner, models.hemorrhage, series, self.device, self.batch_size, top_k=self.top_slices
        )
        image_key = runner.params_of(models.hemorrhage.contract).get("image_key", "image")
        ingested = runner.outputs[_INGEST_STEP][image_key]
        if hemorrhage.positive:
            ischemic = IschemicResult(
                scored=False,
                reason=(
                    f"hemorrhage suspected (probability {hemorrhage.probability:.3f} >= {hemorrhage.threshold:.3f}): "
                    "the cascade stops before ischemic scoring"
                ),
                quality=None,
                registration_meta=None,
                regions=[],
                aspects=dict.fromkeys(SIDES),
                predictions={},
            )
        else:
            ischemic = predict_ischemic(runner, models, series, self.device, batch_size=max(self.batch_size, 20))
        self.last = {"runner": runner, "hemorrhage": hemorrhage, "ischemic": ischemic, "ingested": ingested}

        warnings = list(models.warnings)
        tilt = float(np.asarray(ingested.meta.get("tilt_deg") or 0.0).reshape(-1)[0])
        if abs(tilt) >= 0.5:
            warnings.append(f"gantry tilt {tilt:.1f} deg: the slices were un-sheared onto an orthogonal grid")
        if ischemic.quality is not None and not ischemic.quality["passed"]:
            warnings.append(f"ASPECTS not scored: {ischemic.reason}")
        elif ischemic.quality is not None and not ischemic.quality.get("coverage_complete", True):
            coverage = 100 * ischemic.quality["brain_coverage"]
            warnings.append(f"the scan covers {coverage:.0f}% of the brain: regions outside it were scored from air")

        with atomic_dir(out) as tmp:
            explanations: list[dict[str, Any]] = []
            if self.explain:
                with timer.stage("explanations"):
                    explanations = self._explain(tmp, hemorrhage, ischemic, ingested)
            with timer.stage("report"):
                self._report_png(tmp / REPORT_PNG, hemorrhage, ischemic, ingested, explanations)
            for message in collector.messages:
                if message not in warnings:
                    warnings.append(message)
            timings = timer.as_dict()
            timings["total"] = round(time.perf_counter() - started, 3)
            report = self._report(series, hemorrhage, ischemic, ingested, warnings, timings, explanations)
            write_json_atomic(tmp / REPORT_FILE, report)
        logger.info("report written to %s (%.1f s)", out / REPORT_FILE, timings["total"])
        return report

    # --- report.json ----------------------------------------------------------------------------------------------

    def _report(
        self,
        series: Path,
        hemorrhage: HemorrhageResult,
        ischemic: IschemicResult,
        ingested: Any,
        warnings: list[str],
        timings: dict[str, float],
        explanations: list[dict[str, Any]],
    ) -> dict[str, Any]:
        affine = np.asarray(ingested.affine, dtype=np.float64)
        shape = ingested.shape[1:]
        top = []
        for z in hemorrhage.top_slices:
            centre = affine @ np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, z, 1.0])
            top.append(
                {
                    "slice_index": int(z),
                    "probability": round(float(hemorrhage.slice_probabilities[z, 0]), 5),
                    "center_ras_mm": _round(centre[:3], 1),
                }
            )
        quality = None
        if ischemic.quality is not None:
            q = ischemic.quality
            quality = {
                "passed": q["passed"],
                "brain_dice": round(q["brain_dice"], 4),
                "threshold": q["threshold"],
                "brain_coverage": round(float(q.get("brain_coverage", 1.0)), 4),
                "scales": _round(q["scales"], 4),
                "scales_plausible": q["scales_plausible"],
                "rotation_deg": round(q["rotation_deg"], 2),
                "metric": round(q["metric"], 5),
            }
        thresholds = {slot: self.models.ischemic[slot].threshold for slot in self.models.ischemic}
        return {
            "format": REPORT_FORMAT,
            "monai_stroke_version": __version__,
            "created_utc": utc_now(),
            "series": series_section(ingested.meta, self.keep_identifiers, series),
            "hemorrhage": {
                "probability": round(hemorrhage.probability, 5),
                "positive": hemorrhage.positive,
                "decision_threshold": round(hemorrhage.threshold, 5),
                "aggregation": hemorrhage.aggregation,
                "subtypes": {
                    name: {k: (round(v, 5) if isinstance(v, float) else v) for k, v in sub.items()}
                    for name, sub in hemorrhage.subtypes.items()
                },
                "top_slices": top,
            },
            "ischemic": {
                "scored": ischemic.scored,
                "reason": ischemic.reason,
                "regions": ischemic.regions,
                "old_infarctions": [
                    {"side": r["side"], "region": r["region"]} for r in ischemic.regions if r["old_infarction"]
                ],
                "thresholds": thresholds,
            },
            "aspects": dict(ischemic.aspects),
            "registration": quality,
            "models": {slot: model.identity() for slot, model in self.models.all().items()},
            "timings_s": timings,
            "warnings": warnings,
            "files": {"report_png": REPORT_PNG, "explanations": _public(explanations)},
        }

    # --- pictures -------------------------------------------------------------------------------------------------

    def _hemorrhage_views(self, hemorrhage: HemorrhageResult, ingested: Any, heat: dict[int, np.ndarray]) -> list:
        hu = ingested[0].detach().cpu().numpy() if isinstance(ingested, torch.Tensor) else np.asarray(ingested[0])
        affine = np.asarray(ingested.affine, dtype=np.float64)
        views = []
        for z in hemorrhage.top_slices:
            p = float(hemorrhage.slice_probabilities[z, 0])
            views.append(SliceView(f"p(any) {p:.2f}", hu[:, :, z], affine, heat=heat.get(z), index=z))
        return views

    def _level_views(self, ischemic: IschemicResult, ingested: Any) -> list[SliceView]:
        atlas = self.models.atlas
        meta = ischemic.registration_meta
        hu = ingested[0].detach().cpu().numpy()
        affine = np.asarray(ingested.affine, dtype=np.float64)
        views = []
        for title, names in _LEVELS:
            present = [(s, r) for s, r in atlas.regions if r in names]
            if not present:
                continue
            z = patient_slice_of([atlas.centroid_mm(s, r) for s, r in present], meta)
            labels = self._labels_on(z, meta)
            views.append(SliceView(title, hu[:, :, z], affine, labels=labels, index=z))
        return views

    def _labels_on(self, z: int, meta: Any) -> np.ndarray:
        """The atlas labels on patient slice ``z`` (cached for the current run)."""
        if z not in self._label_slices:
            self._label_slices[z] = labels_on_slice(self.models.atlas.labels, self.models.atlas.affine, meta, z)
        return self._label_slices[z]

    def _headline(self, hemorrhage: HemorrhageResult) -> str:
        verdict = "SUSPECTED" if hemorrhage.positive else "not detected"
        sign = ">=" if hemorrhage.positive else "<"
        return f"Hemorrhage {verdict} (p {hemorrhage.probability:.2f} {sign} threshold {hemorrhage.threshold:.2f})"

    def _report_png(
        self,
        path: Path,
        hemorrhage: HemorrhageResult,
        ischemic: IschemicResult,
        ingested: Any,
        explanations: list[dict[str, Any]],
    ) -> None:
        import matplotlib

        matplotlib.rcParams["hatch.color"] = "white"
        if hemorrhage.positive or ischemic.registration_meta is None:
            heat = {e["slice_index"]: e["_heat"] for e in explanations if e["what"] == "hemorrhage" and "_heat" in e}
            subtypes = [n for n, s in hemorrhage.subtypes.items() if s["positive"]]
            details = "subtypes: " + (", ".join(subtypes) if subtypes else "none above threshold")
            details += "; ASPECTS not scored"
            fig = hemorrhage_report_figure(
                self._hemorrhage_views(hemorrhage, ingested, heat), self._headline(hemorrhage), details
            )
        else:
            table = self.models.atlas.table
            label_regions = {
                int(lab): (s, r) for lab, s, r in table[["label", "side", "region"]].itertuples(index=False)
            }
            fig = ischemic_report_figure(
                self._level_views(ischemic, ingested),
                label_regions,
                ischemic.regions,
                ischemic.aspects,
                self._headline(hemorrhage),
                ischemic.scored,
                ischemic.reason,
                threshold=self.models.early.threshold,
            )
        save_png(fig, path)

    def _explain(
        self, out: Path, hemorrhage: HemorrhageResult, ischemic: IschemicResult, ingested: Any
    ) -> list[dict[str, Any]]:
        """Grad-CAM PNGs; returns their records (with the hemorrhage heat maps kept under ``_heat`` for report.png)."""
        records: list[dict[str, Any]] = []
        folder = out / EXPLAIN_DIR
        folder.mkdir(exist_ok=True)
        hu = ingested[0].detach().cpu().numpy()
        affine = np.asarray(ingested.affine, dtype=np.float64)
        network = self.models.hemorrhage.network
        if hemorrhage.top_slices:
            cams, grid = grad_cam(network, hemorrhage.top_inputs, class_idx=0)
            for z, cam in zip(hemorrhage.top_slices, cams, strict=True):
                heat = resize_to_slice(cam, hu.shape[:2])
                p = float(hemorrhage.slice_probabilities[z, 0])
                name = f"hemorrhage_slice_{z:03d}.png"
                view = SliceView("hemorrhage network", hu[:, :, z], affine, heat=heat, index=z)
                note = f"Grad-CAM of 'any' ({_grid_note(grid)}), p {p:.3f}"
                save_png(overlay_figure(view, f"Hemorrhage: slice {z}", note=note), folder / name)
                records.append(
                    {
                        "file": f"{EXPLAIN_DIR}/{name}",
                        "what": "hemorrhage",
                        "slice_index": z,
                        "cam_grid": list(grid),
                        "_heat": heat,
                    }
                )
        if not ischemic.scored or ischemic.registration_meta is None:
            return records
        atlas = self.models.atlas
        meta = ischemic.registration_meta
        for slot, flag in _FLAG_OF_SLOT.items():
            keys = [(r["side"], r["region"]) for r in ischemic.regions if r[flag]]
            if not keys:
                continue
            prediction = ischemic.predictions[slot]
            model = self.models.ischemic[slot]
            cams, grid = grad_cam(model.network, torch.stack([prediction.inputs[k] for k in keys]), class_idx=0)
            what = "early ischemic change" if slot == EARLY_SLOT else "old infarction"
            for key, cam in zip(keys, cams, strict=True):
                heat_volume, heat_affine = crop_heat_volume(cam, prediction.crop_meta[key])
                z = patient_slice_of([atlas.centroid_mm(*key)], meta)
                heat = template_map_on_slice(heat_volume, heat_affine, meta, z, mode="bilinear")
                outline = self._labels_on(z, meta) == atlas.label_of(*key)
                name = f"{slot}_{key[0]}_{key[1]}.png"
                view = SliceView(f"{key[0]} {key[1]}", hu[:, :, z], affine, heat=heat, index=z)
                title = f"{what}: {'left' if key[0] == 'L' else 'right'} {key[1]}"
                note = f"Grad-CAM ({_grid_note(grid)}), p {prediction.probabilities[key]:.3f}"
                save_png(overlay_figure(view, title, outline=outline, note=note), folder / name)
                records.append(
                    {
                        "file": f"{EXPLAIN_DIR}/{name}",
                        "what": slot,
                        "side": key[0],
                        "region": key[1],
                        "slice_index": z,
                        "cam_grid": list(grid),
                    }
                )
        return records


def _grid_note(grid: tuple[int, ...]) -> str:
    size = "x".join(str(v) for v in grid)
    if int(np.prod(grid)) <= 1:
        return f"layer4 map {size}: no spatial detail at this input size"
    return f"layer4 map {size}"


def _public(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in records]


def check_inputs(
    series: str | os.PathLike, models_dir: str | os.PathLike, out_dir: str | os.PathLike
) -> dict[str, Path]:
    """Fail fast, before anything heavy: the series exists, every model file is there, ``out_dir`` may be written.

    Returns:
        slot -> checkpoint path.

    Raises:
        UserInputError: naming the missing series, the missing model files (and how to make them) or the output
            folder's problem.
    """
    from monai_stroke.inference.models import model_paths

    check_output_dir(out_dir)
    if series in (None, "") or not Path(series).exists():
        raise UserInputError(f"series {series} does not exist; give a DICOM folder or a .nii/.nii.gz file")
    paths = model_paths(models_dir)
    return paths


def predict(
    series: str | os.PathLike,
    models_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    keep_identifiers: bool = False,
    atlas_dir: str | os.PathLike | None = None,
    device: str | None = "cpu",
    explain: bool = True,
) -> dict[str, Any]:
    """``monai-stroke predict`` as a function: load the models, run the cascade, write ``out_dir``.

    Args:
        series: DICOM folder or NIfTI file of a non-contrast head CT.
        models_dir: the models folder (``hemorrhage/``, ``early_vs_intact/``, ``old_vs_intact/``).
        out_dir: the report folder.
        keep_identifiers: keep patient name/ID/birth date (and series UID and input path) in the report.
        atlas_dir: the atlas in use (None: built-in); the ischemic models must have been trained with it.
        device: ``cpu`` or ``cuda``.
        explain: write Grad-CAM explanations.
    """
    check_inputs(series, models_dir, out_dir)
    cascade = StrokeCascade.from_dir(
        models_dir, atlas_dir=atlas_dir, device=device, keep_identifiers=keep_identifiers, explain=explain
    )
    return cascade.predict(series, out_dir)
