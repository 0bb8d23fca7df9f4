"""The stroke report: ``report.json`` (schema below), its checker, and what may and may not appear in it.

``report.json`` (``"format": "monai-stroke-report/1"``)::

    {
      "format", "monai_stroke_version", "created_utc",
      "series":      {"format", "n_slices", "shape", "spacing_mm", "tilt_deg"}
                     (+ "source", "series_uid", "patient_name", "patient_id", "patient_birth_date" only with
                      --keep-identifiers),
      "hemorrhage":  {"probability", "positive", "decision_threshold", "aggregation",
                      "subtypes": {subtype: {"probability", "positive", "threshold"}},
                      "top_slices": [{"slice_index", "probability", "center_ras_mm"}]},
      "ischemic":    {"scored", "reason", "regions": [{"side", "region", "early_ischemic_probability",
                      "old_infarction_probability", "early_ischemic", "old_infarction"}, ... x 20],
                      "old_infarctions": [{"side", "region"}], "thresholds": {task: threshold}},
      "aspects":     {"L": int | null, "R": int | null},
      "registration": {"passed", "brain_dice", "threshold", "scales", "rotation_deg", ...} | null,
      "models":      {slot: {"checkpoint", "sha256", "kind", "task", "bundle", "bundle_version", ...}},
      "timings_s":   {"ingest", "hemorrhage", "registration", "region_crops", "ischemic", "explanations",
                      "report", "total"},
      "warnings":    [str],
      "files":       {"report_png": "report.png", "explanations": [{"file", "what", ...}]}
    }

``aspects`` is null per side whenever ASPECTS is not scored: a hemorrhage-positive series (the cascade stops), a
registration that failed its quality check, or an atlas without the 10 ASPECTS regions; ``ischemic.reason`` says
which. Patient name, ID and birth date, the series UID and the input path appear only with ``keep_identifiers``.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_stroke.vocabulary import HEMORRHAGE_SUBTYPES, REGIONS, SIDES

__all__ = [
    "REPORT_FORMAT",
    "REPORT_FILE",
    "REPORT_PNG",
    "EXPLAIN_DIR",
    "IDENTIFYING_TAGS",
    "REGION_FIELDS",
    "series_section",
    "read_identifiers",
    "check_report",
    "WarningCollector",
    "utc_now",
]

REPORT_FORMAT = "monai-stroke-report/1"
REPORT_FILE = "report.json"
REPORT_PNG = "report.png"
EXPLAIN_DIR = "explain"
#: DICOM attributes copied into the report only with ``keep_identifiers``
IDENTIFYING_TAGS: dict[str, str] = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "PatientBirthDate": "patient_birth_date",
}
REGION_FIELDS: tuple[str, ...] = (
    "side",
    "region",
    "early_ischemic_probability",
    "old_infarction_probability",
    "early_ischemic",
    "old_infarction",
)
_TOP_KEYS = (
    "format",
    "monai_stroke_version",
    "created_utc",
    "series",
    "hemorrhage",
    "ischemic",
    "aspects",
    "registration",
    "models",
    "timings_s",
    "warnings",
    "files",
)


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


def series_section(meta: Mapping[str, Any], keep_identifiers: bool, source: str | Path) -> dict[str, Any]:
    """The report's ``series`` block from the ingested volume's metadata.

    Args:
        meta: the ``LoadCTSeriesd`` metadata.
        keep_identifiers: add the input path, series UID and the patient's name, ID and birth date.
        source: the series path as given.
    """
    spacing = np.asarray(meta.get("spacing", [np.nan] * 3), dtype=np.float64).reshape(-1)
    shape = np.asarray(meta.get("spatial_shape", []), dtype=np.int64).reshape(-1)
    tilt = meta.get("tilt_deg")
    out: dict[str, Any] = {
        "format": _first(meta.get("format")),
        "n_slices": int(shape[-1]) if shape.size else None,
        "shape": [int(v) for v in shape],
        "spacing_mm": [round(float(v), 4) for v in spacing],
        "tilt_deg": None if tilt is None else round(float(_first(tilt)), 3),
    }
    if keep_identifiers:
        out["source"] = str(source)
        out["series_uid"] = _first(meta.get("series_uid"))
        out.update(read_identifiers(meta.get("slice_files") or []))
    return out


def read_identifiers(slice_files: Sequence[str | None]) -> dict[str, str | None]:
    """Patient name, ID and birth date from the first readable DICOM file of the series (None for NIfTI)."""
    import pydicom

    found: dict[str, str | None] = dict.fromkeys(IDENTIFYING_TAGS.values())
    for path in slice_files:
        if not path:
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(IDENTIFYING_TAGS))
        except Exception:  # noqa: BLE001 - the ingest read it; a file gone since is not worth failing the report
            continue
        for tag, key in IDENTIFYING_TAGS.items():
            value = ds.get(tag)
            found[key] = None if value in (None, "") else str(value)
        break
    return found


class WarningCollector(logging.Handler):
    """Collects the warnings monai-stroke logs during a run, for the report, with the input path masked.

    A folder name can be a patient's name, so the series path (and its last component) are replaced by
    ``<series>`` unless identifiers are kept.

    Args:
        mask: strings to replace by ``<series>``.
    """

    def __init__(self, mask: Sequence[str] = ()) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        masks = sorted({m for m in mask if m and len(m) > 2}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(m) for m in masks)) if masks else None

    def scrub(self, text: str) -> str:
        return self._pattern.sub("<series>", text) if self._pattern else text

    def emit(self, record: logging.LogRecord) -> None:
        message = self.scrub(" ".join(record.getMessage().split()))
        if message not in self.messages:
            self.messages.append(message)


def _is_probability(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= float(value) <= 1.0


def check_report(report: Mapping[str, Any], n_regions: int = 2 * len(REGIONS)) -> list[str]:
    """Problems of a report against the schema (empty when it conforms).

    Args:
        report: a parsed ``report.json``.
        n_regions: regions expected when ASPECTS is scored (20 for the default atlas).
    """
    problems: list[str] = []
    missing = [k for k in _TOP_KEYS if k not in report]
    if missing:
        return [f"missing top-level keys: {', '.join(missing)}"]
    if report["format"] != REPORT_FORMAT:
        problems.append(f"format {report['format']!r} != {REPORT_FORMAT!r}")
    hem = report["hemorrhage"]
    for key in ("probability", "positive", "decision_threshold", "subtypes", "top_slices"):
        if key not in hem:
            problems.append(f"hemorrhage.{key} missing")
    if not problems:
        if not _is_probability(hem["probability"]) or not isinstance(hem["positive"], bool):
            problems.append("hemorrhage.probability must be in [0, 1] and positive a bool")
        if set(hem["subtypes"]) != set(HEMORRHAGE_SUBTYPES):
            problems.append(f"hemorrhage.subtypes must be {', '.join(HEMORRHAGE_SUBTYPES)}")
        for name, sub in hem["subtypes"].items():
            if not _is_probability(sub.get("probability")) or not isinstance(sub.get("positive"), bool):
                problems.append(f"hemorrhage.subtypes.{name} needs a probability and a bool positive")
        for top in hem["top_slices"]:
            if not isinstance(top.get("slice_index"), int) or not _is_probability(top.get("probability")):
                problems.append(f"hemorrhage.top_slices entry {top} needs an int slice_index and a probability")
    isch = report["ischemic"]
    aspects = report["aspects"]
    if set(aspects) != set(SIDES):
        problems.append(f"aspects must have exactly the keys {', '.join(SIDES)}")
    if not isinstance(isch.get("scored"), bool) or not isinstance(isch.get("regions"), list):
        problems.append("ischemic needs a bool 'scored' and a list 'regions'")
        return problems
    if isch["scored"]:
        if len(isch["regions"]) != n_regions:
            problems.append(f"ischemic.regions has {len(isch['regions'])} entries, expected {n_regions}")
        for side in SIDES:
            score = aspects.get(side)
            if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= len(REGIONS):
                problems.append(f"aspects.{side} must be an integer 0..{len(REGIONS)} when scored, got {score!r}")
        if hem.get("positive") is True:
            problems.append("a hemorrhage-positive report must not score ASPECTS")
    else:
        if any(aspects.get(s) is not None for s in SIDES):
            problems.append("aspects must be null when ischemic.scored is false")
        if not isch.get("reason"):
            problems.append("ischemic.reason must say why ASPECTS was not scored")
    for region in isch["regions"]:
        if tuple(region) != REGION_FIELDS:
            problems.append(f"region record keys {list(region)} != {list(REGION_FIELDS)}")
            break
        if region["side"] not in SIDES:
            problems.append(f"region side {region['side']!r} is not L or R")
        for key in ("early_ischemic_probability", "old_infarction_probability"):
            if region[key] is not None and not _is_probability(region[key]):
                problems.append(f"region {region['side']} {region['region']}: {key} {region[key]!r} not in [0, 1]")
        for key in ("early_ischemic", "old_infarction"):
            if not isinstance(region[key], bool):
                problems.append(f"region {region['side']} {region['region']}: {key} must be a bool")
    for slot, identity in report["models"].items():
        if not isinstance(identity, Mapping) or "sha256" not in identity:
            problems.append(f"models.{slot} needs a sha256")
    if not isinstance(report["warnings"], list) or not all(isinstance(w, str) for w in report["warnings"]):
        problems.append("warnings must be a list of strings")
    if "total" not in report["timings_s"]:
        problems.append("timings_s.total missing")
    return problems


def utc_now() -> str:
    """ISO-8601 UTC time of the report (seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
