"""``DIR/summary.html``: what the demo trained, how well, what the search chose, and reports beside the truth.

One self-contained page (figures are linked relative to ``DIR``, so the folder can be moved or zipped):
settings and time per stage; the hemorrhage network's test metrics and ROC; per ischemic task the ATL table
(paper table 4), the chosen depth with its test metrics and any collapse warning, and the search's figures; for
each held-out patient its ``report.png`` next to a table of the ground truth (``regions.csv``, ``cohort.csv``)
against the predictions, with the ASPECTS the ground truth implies.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from monai_stroke.utils import write_text_atomic
from monai_stroke.vocabulary import EARLY_ISCHEMIC_CATEGORIES, REGIONS, SIDES

__all__ = ["write_summary", "truth_aspects", "tensorboard_command"]

_STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { margin-bottom: 0; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; } th { background: #f2f2f2; }
td:first-child, th:first-child { text-align: left; }
.fig { max-width: 100%; border: 1px solid #ddd; margin: 4px 0; } .figs img { max-width: 32%; margin-right: 1%; }
.patient { display: flex; gap: 18px; align-items: flex-start; margin-bottom: 28px; }
.patient img { max-width: 62%; } .warn { color: #b00; font-weight: bold; } .ok { color: #070; }
.miss { background: #fde2e2; } .hit { background: #e3f6e3; } .note { color: #666; font-size: 12px; }
"""


def tensorboard_command(out: str | os.PathLike) -> str:
    """The command that opens the demo's TensorBoard logs."""
    return f"tensorboard --logdir {Path(out) / 'runs'}"


def truth_aspects(regions: pd.DataFrame) -> dict[str, int]:
    """ASPECTS per side from ground-truth categories: 10 minus regions with an early ischemic sign category."""
    out = {}
    for side in SIDES:
        rows = regions[(regions["side"] == side) & regions["region"].isin(REGIONS)]
        out[side] = len(REGIONS) - int(rows["category"].isin(EARLY_ISCHEMIC_CATEGORIES).sum())
    return out


def _table(frame: pd.DataFrame, floats: int = 3) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.{floats}f}", border=0, na_rep="", escape=True)


def _img(out: Path, path: Path, css: str = "fig") -> str:
    if not path.is_file():
        return ""
    return f'<img class="{css}" src="{html.escape(os.path.relpath(path, out))}" alt="{html.escape(path.name)}">'


def _hemorrhage_section(out: Path) -> str:
    run = out / "runs" / "hemorrhage"
    parts = ["<h2>Hemorrhage network (source task)</h2>"]
    metrics = run / "metrics.csv"
    if metrics.is_file():
        frame = pd.read_csv(metrics)
        keep = [
            c
            for c in (
                "group",
                "auc",
                "average_precision",
                "accuracy",
                "precision",
                "recall",
                "specificity",
                "f1",
                "f1_weighted",
                "threshold",
                "n",
                "n_positive",
                "collapsed",
            )
            if c in frame
        ]
        parts.append("<p>Test split, thresholds chosen on validation. Series level = the patient's decision.</p>")
        parts.append(_table(frame[keep]))
    else:
        parts.append('<p class="warn">no metrics.csv (the evaluation stage did not run)</p>')
    figs = [_img(out, run / "roc.png"), _img(out, run / "probability_histogram.png")]
    parts.append('<div class="figs">' + "".join(figs) + "</div>")
    return "\n".join(parts)


def _atl_section(out: Path, task: str) -> str:
    run = out / "runs" / f"atl_{task}"
    parts = [f"<h2>Ischemic task {html.escape(task)}: adaptive transfer learning</h2>"]
    choice_path = run / "atl_choice.json"
    if choice_path.is_file():
        choice = json.loads(choice_path.read_text())
        test = choice.get("test", {})
        parts.append(
            f"<p>Chosen freeze depth <b>{html.escape(str(choice.get('theta')))}</b> "
            f"(f = {choice.get('f', float('nan')):.4f}, {html.escape(str(choice.get('search')))} search, "
            f"{choice.get('epochs_trained')} epochs vs {choice.get('epochs_exhaustive')} exhaustive). "
            f"Test: AUC {test.get('auc', float('nan')):.3f}, accuracy {test.get('accuracy', float('nan')):.3f}, "
            f"F1 {test.get('f1', float('nan')):.3f}.</p>"
        )
        for warning in choice.get("warnings", []):
            parts.append(f'<p class="warn">{html.escape(warning)}</p>')
    table_path = run / "atl_table.csv"
    if table_path.is_file():
        frame = pd.read_csv(table_path)
        keep = [
            c
            for c in (
                "theta",
                "epochs_trained",
                "val_losses",
                "f",
                "precision",
                "recall",
                "f1",
                "average_precision",
                "accuracy",
                "auc",
                "collapsed",
                "chosen",
            )
            if c in frame
        ]
        parts.append(_table(frame[keep], floats=4))
    elif (run / "metrics.csv").is_file():
        parts.append(_table(pd.read_csv(run / "metrics.csv")))
    else:
        parts.append('<p class="warn">no ATL table (the stage did not run)</p>')
    names = ("atl_metrics.png", "atl_val_losses.png", "atl_histograms.png", "atl_roc.png")
    parts.append('<div class="figs">' + "".join(_img(out, run / n) for n in names) + "</div>")
    return "\n".join(parts)


def _patient_section(out: Path, report_dir: Path, cohort: pd.DataFrame, regions: pd.DataFrame) -> str:
    report = json.loads((report_dir / "report.json").read_text())
    pid = report_dir.name
    truth_row = cohort[cohort["patient_id"] == pid]
    truth_regions = regions[regions["patient_id"] == pid]
    categories = {(r.side, r.region): r.category for r in truth_regions.itertuples(index=False)}
    hem_truth = bool(truth_row["hemorrhage"].iloc[0]) if "hemorrhage" in truth_row and len(truth_row) else None
    hem = report["hemorrhage"]
    lines = [f"<h3>{html.escape(pid)}"]
    if "profile" in truth_row and len(truth_row):
        lines[0] += f" <span class='note'>(synthetic profile: {html.escape(str(truth_row['profile'].iloc[0]))})</span>"
    lines[0] += "</h3>"
    verdict = "positive" if hem["positive"] else "negative"
    correct = "" if hem_truth is None else (" ok" if hem_truth == hem["positive"] else " warn")
    lines.append(
        f"<p>Hemorrhage: predicted <span class='{correct.strip()}'>{verdict}</span> (p {hem['probability']:.3f}), "
        f"truth {'-' if hem_truth is None else ('positive' if hem_truth else 'negative')}.</p>"
    )
    ischemic = report["ischemic"]
    if ischemic["scored"] and not truth_regions.empty:
        truth = truth_aspects(truth_regions)
        lines.append(
            f"<p>ASPECTS predicted R {report['aspects']['R']} / L {report['aspects']['L']}; "
            f"truth R {truth['R']} / L {truth['L']}.</p>"
        )
        rows = []
        for r in ischemic["regions"]:
            category = categories.get((r["side"], r["region"]), "")
            early_truth = category in EARLY_ISCHEMIC_CATEGORIES
            old_truth = category == "old_infarction"
            rows.append(
                "<tr>"
                f"<td>{r['side']} {r['region']}</td><td>{html.escape(category)}</td>"
                f"<td class='{'hit' if r['early_ischemic'] == early_truth else 'miss'}'>"
                f"{r['early_ischemic_probability']:.2f}{' &#10003;' if r['early_ischemic'] else ''}</td>"
                f"<td class='{'hit' if r['old_infarction'] == old_truth else 'miss'}'>"
                f"{r['old_infarction_probability']:.2f}{' &#10003;' if r['old_infarction'] else ''}</td>"
                "</tr>"
            )
        lines.append(
            "<table><tr><th>region</th><th>truth</th><th>early p</th><th>old p</th></tr>" + "".join(rows) + "</table>"
            "<p class='note'>&#10003; flagged; green: decision agrees with the truth, red: it does not.</p>"
        )
    else:
        lines.append(f"<p>ASPECTS not scored: {html.escape(str(ischemic.get('reason')))}</p>")
    for warning in report.get("warnings", []):
        lines.append(f"<p class='warn'>{html.escape(warning)}</p>")
    image = _img(out, report_dir / "report.png")
    return f'<div class="patient">{image}<div>{"".join(lines)}</div></div>'


def write_summary(out_dir: str | os.PathLike, dataset_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``out_dir/summary.html`` from the demo's outputs (missing parts are said to be missing).

    Args:
        out_dir: the demo folder (``runs/``, ``reports/``, ``models/``).
        dataset_dir: the dataset folder (``cohort.csv``, ``regions.csv``) for the ground truth.
        record: what the demo ran (settings, device, timings, ATL bundle).
    """
    from monai_stroke import __version__

    out = Path(out_dir)
    data = Path(dataset_dir)
    cohort = pd.read_csv(data / "cohort.csv", dtype={"patient_id": str})
    regions_path = data / "regions.csv"
    regions = (
        pd.read_csv(regions_path, dtype={"patient_id": str})
        if regions_path.is_file()
        else pd.DataFrame(columns=["patient_id", "side", "region", "category"])
    )
    settings = record.get("settings", {})
    timings = record.get("timings_s", {})
    head = [
        "<!doctype html><html><head><meta charset='utf-8'><title>monai-stroke demo</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>monai-stroke demo</h1>",
        f"<p class='note'>monai-stroke {__version__}; device {html.escape(str(record.get('device')))}; "
        f"ischemic models from bundles/{html.escape(str(record.get('atl_bundle')))}. Synthetic data, research "
        "software: these numbers show that the system runs end to end, not how it performs on patients.</p>",
        "<h2>Run</h2>",
        _table(pd.DataFrame([{"setting": k, "value": json.dumps(v)} for k, v in settings.items()])),
        _table(pd.DataFrame([{"stage": k, "seconds": v} for k, v in timings.items()]), floats=1),
        f"<p>TensorBoard: <code>{html.escape(tensorboard_command(out))}</code>; models for "
        f"<code>monai-stroke predict SERIES --models {html.escape(str(out / 'models'))} --out OUT</code>.</p>",
    ]
    body = [_hemorrhage_section(out)]
    body += [_atl_section(out, task) for task in ("early_vs_intact", "old_vs_intact")]
    body.append("<h2>Held-out patients: report beside the ground truth</h2>")
    reports = sorted(p for p in (out / "reports").glob("*") if (p / "report.json").is_file())
    if not reports:
        body.append('<p class="warn">no reports (the predict stage did not run)</p>')
    body += [_patient_section(out, r, cohort, regions) for r in reports]
    page = "\n".join([*head, *body, "</body></html>"])
    return write_text_atomic(out / "summary.html", page)
