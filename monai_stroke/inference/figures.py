"""The report's pictures: the patient's own slices in radiological view, regions coloured by probability, heat maps.

Every slice is drawn as radiologists read axial CT, whatever the voxel order of the series: the patient's right on
the image's left, the patient's left on the image's right, anterior at the top (:func:`radiological_view`
derives the flips from the affine). Each picture says so in its corners (``R`` / ``L``) and in its footer.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot state, no display needed) and written
atomically.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monai_stroke.utils.atomic import atomic_path

__all__ = [
    "BRAIN_WINDOW",
    "SliceView",
    "radiological_view",
    "pixel_aspect",
    "save_png",
    "ischemic_report_figure",
    "hemorrhage_report_figure",
    "overlay_figure",
]

#: display window (center, width) HU of the report's slices
BRAIN_WINDOW: tuple[float, float] = (40.0, 80.0)
_ORIENTATION_NOTE = "Radiological view: patient's right (R) on image left, patient's left (L) on image right."
_DISCLAIMER = "monai-stroke research software - not for clinical decisions."
_FLAGGED = "#ff2020"


@dataclasses.dataclass
class SliceView:
    """One patient slice to draw.

    Args:
        title: panel title (e.g. ``"ganglionic level"``).
        hu: ``(X, Y)`` HU of the slice on the patient grid.
        affine: the patient volume's voxel -> RAS affine (only its in-plane columns are used).
        labels: optional ``(X, Y)`` atlas labels mapped onto the slice.
        heat: optional ``(X, Y)`` map in [0, 1] to overlay.
        index: the slice's index in the series (ingest order, inferior to superior).
    """

    title: str
    hu: np.ndarray
    affine: np.ndarray
    labels: np.ndarray | None = None
    heat: np.ndarray | None = None
    index: int | None = None


def _display_axes(affine: np.ndarray) -> tuple[int, bool, bool]:
    """(voxel axis shown as columns, flip columns, flip rows) for a radiological view of an axial slice."""
    a = np.asarray(affine, dtype=np.float64)[:3, :2]
    col_axis = int(np.argmax(np.abs(a[0])))  # the in-plane axis most along RAS x (left-right)
    row_axis = 1 - col_axis
    # columns must run towards the patient's left (RAS x decreasing), rows towards posterior (RAS y decreasing)
    return col_axis, bool(a[0, col_axis] > 0), bool(a[1, row_axis] > 0)


def radiological_view(array_xy: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` for ``imshow``: anterior up, patient's right on the left, patient's left on the right.

    Args:
        array_xy: a slice ``(X, Y)`` of a volume (voxel axes 0 and 1).
        affine: the volume's voxel -> RAS affine.
    """
    col_axis, flip_cols, flip_rows = _display_axes(affine)
    img = np.asarray(array_xy)
    img = img.T if col_axis == 0 else img  # rows = the other in-plane axis
    if flip_cols:
        img = img[:, ::-1]
    if flip_rows:
        img = img[::-1, :]
    return np.ascontiguousarray(img)


def pixel_aspect(affine: np.ndarray) -> float:
    """Height / width of a displayed pixel (row spacing over column spacing)."""
    spacing = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :2], axis=0)
    col_axis, _, _ = _display_axes(affine)
    return float(spacing[1 - col_axis] / spacing[col_axis])


def _window(hu: np.ndarray, window: tuple[float, float] = BRAIN_WINDOW) -> np.ndarray:
    center, width = window
    return np.clip((np.asarray(hu, dtype=np.float32) - (center - width / 2)) / width, 0.0, 1.0)


def _figure(width_in: float, height_in: float, dpi: int = 110) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: str | os.PathLike) -> None:
    """Write ``fig`` as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor=fig.get_facecolor())


def _text_style() -> dict[str, Any]:
    from matplotlib import patheffects

    return {"color": "white", "path_effects": [patheffects.withStroke(linewidth=2.2, foreground="black")]}


def _base_panel(ax: Any, view: SliceView) -> np.ndarray:
    """Draw the slice; returns the display image (for its shape)."""
    img = radiological_view(_window(view.hu), view.affine)
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, aspect=pixel_aspect(view.affine), interpolation="bilinear")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    style = {**_text_style(), "fontsize": 13, "fontweight": "bold"}
    ax.text(0.02, 0.5, "R", transform=ax.transAxes, ha="left", va="center", **style)
    ax.text(0.98, 0.5, "L", transform=ax.transAxes, ha="right", va="center", **style)
    ax.text(0.5, 0.98, "A", transform=ax.transAxes, ha="center", va="top", **{**style, "fontsize": 9})
    title = view.title if view.index is None else f"{view.title} (slice {view.index})"
    ax.set_title(title, color="white", fontsize=10)
    return img


def _region_colour(probability: float | None) -> Any:
    from matplotlib import colormaps

    if probability is None:
        return (0.6, 0.6, 0.6, 1.0)
    return colormaps["RdYlGn_r"](float(np.clip(probability, 0.0, 1.0)))


def ischemic_report_figure(
    views: Sequence[SliceView],
    label_regions: Mapping[int, tuple[str, str]],
    regions: Sequence[Mapping[str, Any]],
    aspects: Mapping[str, int | None],
    headline: str,
    scored: bool,
    reason: str | None = None,
    threshold: float | None = None,
) -> Any:
    """The report picture of a hemorrhage-negative series: ASPECTS levels with regions coloured by probability.

    Args:
        views: the patient's ganglionic and supraganglionic slices, with the atlas labels mapped onto them.
        label_regions: atlas label -> ``(side, region)``.
        regions: the report's region records.
        aspects: ``{"L": score, "R": score}``.
        headline: the hemorrhage verdict line.
        scored: whether ASPECTS was scored.
        reason: why not, when not scored.
        threshold: the early-ischemic decision threshold (marked on the colour bar).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    by_key = {(r["side"], r["region"]): r for r in regions}
    fig = _figure(5.2 * len(views) + 0.9, 6.6)
    style = _text_style()
    axes = [
        fig.add_axes([0.01 + i * (0.9 / len(views)), 0.14, 0.9 / len(views) - 0.01, 0.68]) for i in range(len(views))
    ]
    for ax, view in zip(axes, views, strict=True):
        img = _base_panel(ax, view)
        if view.labels is None:
            continue
        labels = radiological_view(view.labels, view.affine)
        rows, cols = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
        for label in sorted(int(v) for v in np.unique(labels) if v):
            if label not in label_regions:
                continue
            side, region = label_regions[label]
            record = by_key.get((side, region), {})
            mask = (labels == label).astype(np.float32)
            p_early = record.get("early_ischemic_probability") if scored else None
            colour = _region_colour(p_early)
            if record.get("early_ischemic") and scored:
                # flagged regions in one unmistakable colour, whatever their probability's colour
                ax.contourf(mask, levels=[0.5, 1.5], colors=[_FLAGGED], alpha=0.45)
            if record.get("old_infarction") and scored:
                ax.contourf(mask, levels=[0.5, 1.5], colors="none", hatches=["////"])
            width = 2.4 if record.get("early_ischemic") and scored else 1.2
            ax.contour(mask, levels=[0.5], colors=[colour], linewidths=width)
            weight = mask.sum()
            cy, cx = (rows * mask).sum() / weight, (cols * mask).sum() / weight
            ax.text(cx, cy, region, ha="center", va="center", fontsize=7, **style)
    if scored:
        score = f"ASPECTS   R {aspects.get('R')}   |   L {aspects.get('L')}"
        colour = "white"
    else:
        score = "ASPECTS NOT SCORED"
        colour = "#ff5050"
    fig.text(0.46, 0.955, score, ha="center", va="top", fontsize=17, fontweight="bold", color=colour)
    fig.text(0.46, 0.885, headline, ha="center", va="top", fontsize=10, color="white")
    if not scored and reason:
        fig.text(0.46, 0.845, reason, ha="center", va="top", fontsize=8.5, color="#ff8080", wrap=True)
    if scored:
        cax = fig.add_axes([0.925, 0.2, 0.018, 0.56])
        bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=colormaps["RdYlGn_r"]), cax=cax)
        label = "early ischemic probability (outline)"
        if threshold is not None:
            bar.ax.axhline(threshold, color="white", linewidth=2.5)
            label += f"\nwhite line: decision threshold {threshold:.2f}"
        bar.set_label(label, color="white", fontsize=8)
        bar.ax.tick_params(colors="white", labelsize=7)
    footer = [
        _ORIENTATION_NOTE,
        "Outline colour: early ischemic probability; filled red: early ischemic change (lowers ASPECTS); "
        "hatched: old infarction (listed, not counted).",
        _DISCLAIMER,
    ]
    fig.text(0.46, 0.11, "\n".join(footer), ha="center", va="top", fontsize=7.5, color="#d0d0d0")
    return fig


def hemorrhage_report_figure(views: Sequence[SliceView], headline: str, details: str) -> Any:
    """The report picture of a hemorrhage-positive series: the slices that drive the call, with Grad-CAM."""
    fig = _figure(4.2 * len(views) + 0.4, 5.6)
    n = max(len(views), 1)
    for i, view in enumerate(views):
        ax = fig.add_axes([0.01 + i * (0.98 / n), 0.14, 0.98 / n - 0.01, 0.66])
        _base_panel(ax, view)
        if view.heat is not None:
            _heat_layer(ax, view)
    fig.text(0.5, 0.96, headline, ha="center", va="top", fontsize=16, fontweight="bold", color="#ff5050")
    fig.text(0.5, 0.885, details, ha="center", va="top", fontsize=9, color="white")
    footer = [
        _ORIENTATION_NOTE,
        "Overlay: Grad-CAM of the hemorrhage network's 'any' output (red: most influential). "
        "ASPECTS is not scored when hemorrhage is suspected.",
        _DISCLAIMER,
    ]
    fig.text(0.5, 0.11, "\n".join(footer), ha="center", va="top", fontsize=7.5, color="#d0d0d0")
    return fig


def _heat_layer(ax: Any, view: SliceView) -> None:
    from matplotlib import colormaps

    heat = radiological_view(np.clip(view.heat, 0.0, 1.0), view.affine)
    rgba = colormaps["jet"](heat)
    # opacity follows the heat: cold areas leave the CT readable, hot ones stand out
    rgba[..., 3] = 0.65 * heat
    ax.imshow(rgba, aspect=pixel_aspect(view.affine), interpolation="bilinear")


def overlay_figure(view: SliceView, title: str, outline: np.ndarray | None = None, note: str = "") -> Any:
    """One slice with a Grad-CAM heat map and, optionally, a region outline.

    Args:
        view: the slice with ``heat`` set.
        title: the figure title (what is explained).
        outline: optional ``(X, Y)`` boolean mask to outline (the region).
        note: a line under the title.
    """
    fig = _figure(5.0, 5.8)
    ax = fig.add_axes([0.02, 0.1, 0.96, 0.74])
    _base_panel(ax, view)
    if view.heat is not None:
        _heat_layer(ax, view)
    if outline is not None and np.any(outline):
        ax.contour(
            radiological_view(outline.astype(np.float32), view.affine), levels=[0.5], colors=["cyan"], linewidths=1.4
        )
    fig.text(0.5, 0.975, title, ha="center", va="top", fontsize=12, fontweight="bold", color="white")
    if note:
        fig.text(0.5, 0.925, note, ha="center", va="top", fontsize=8, color="#d0d0d0")
    fig.text(0.5, 0.075, _ORIENTATION_NOTE + "\n" + _DISCLAIMER, ha="center", va="top", fontsize=6.5, color="#d0d0d0")
    return fig
