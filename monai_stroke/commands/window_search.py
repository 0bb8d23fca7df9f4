"""``monai-stroke window-search``: propose a task's HU window from region histograms (paper figs. 6-7)."""

from __future__ import annotations

from pathlib import Path

import click

from monai_stroke.errors import UserInputError

__all__ = ["window_search"]


def _mapping(text: str | None, option: str) -> dict:
    import yaml

    if not text:
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise UserInputError(f"{option} must be a YAML/JSON mapping such as '{{iterations: 100}}', got {text!r}")
    return value


@click.command("window-search")
@click.option(
    "--data", "data", required=True, type=click.Path(path_type=Path), help="Dataset folder (with regions.csv)."
)
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option(
    "--task", "tasks", multiple=True, help="Task to search a window for (repeatable); default: every defined task."
)
@click.option("--tasks-file", type=click.Path(path_type=Path), default=None, help="Extra/overriding task definitions.")
@click.option("--atlas", type=click.Path(path_type=Path), default=None, help="Atlas folder; default: built-in atlas.")
@click.option(
    "--template-spacing",
    type=float,
    default=None,
    help="Registration output grid in mm (e.g. 2 for a quick look); default: the template's 1 mm grid.",
)
@click.option(
    "--registration",
    default=None,
    help="Registration parameter overrides as a YAML mapping, e.g. '{levels_mm: [6, 4], iterations: 100}'.",
)
@click.option("--range-hu", nargs=2, type=float, default=(-20.0, 100.0), show_default=True, help="Histogram range.")
@click.option("--bin-hu", type=float, default=1.0, show_default=True, help="Histogram bin width, HU.")
@click.option("--mass", type=float, default=0.9, show_default=True, help="Share of |difference| inside the window.")
@click.option("--smooth-hu", type=float, default=1.0, show_default=True, help="Smoothing of the difference, HU.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def window_search(
    data: Path,
    out: Path,
    tasks: tuple[str, ...],
    tasks_file: Path | None,
    atlas: Path | None,
    template_spacing: float | None,
    registration: str | None,
    range_hu: tuple[float, float],
    bin_hu: float,
    mass: float,
    smooth_hu: float,
    overwrite: bool,
) -> int:
    """Mean HU histograms per class of the labelled regions of DATA (after registration and region crops), the
    difference between each affected region and its mirrored healthy side, and a proposed (center, width) per
    task from where that difference lies. Writes OUT/windows.json, OUT/histograms_<task>.csv and PNG plots.
    Confirming the proposal by a training sweep (paper tables 2-3) is not available yet.
    """
    import numpy as np

    from monai_stroke.analysis.window_search import window_search as run_search

    low, high = range_hu
    if not (np.isfinite(low) and np.isfinite(high) and low < high) or not bin_hu > 0 or bin_hu > high - low:
        raise UserInputError(
            f"--range-hu {low:g} {high:g} with --bin-hu {bin_hu:g}: need low < high and 0 < bin <= range"
        )
    if smooth_hu < 0:
        raise UserInputError(f"--smooth-hu must be >= 0, got {smooth_hu:g}")
    edges = np.arange(low, high + bin_hu / 2, bin_hu)
    chain_params: dict = {"registration": _mapping(registration, "--registration")}
    if atlas is not None:
        chain_params["atlas"] = str(atlas)
    if template_spacing is not None:
        chain_params["template_spacing"] = template_spacing
    result = run_search(
        data,
        out,
        tasks=list(tasks) or None,
        tasks_file=tasks_file,
        edges=edges,
        mass=mass,
        smooth_hu=smooth_hu,
        overwrite=overwrite,
        **chain_params,
    )
    for name, entry in result["tasks"].items():
        task_c, task_w = entry["task_window"]
        if "window_center_hu" not in entry:
            click.echo(f"{name}: no window proposed ({entry['problem']})")
            continue
        click.echo(
            f"{name}: proposed window {entry['window_center_hu']:g}/{entry['window_width_hu']:g} HU "
            f"({entry['low_hu']:.1f}..{entry['high_hu']:.1f}), task window {task_c:g}/{task_w:g}; "
            f"{entry['n_pairs']} affected regions with a healthy mirror in {entry['n_patients_with_pairs']} patients, "
            f"mean difference {entry['mean_affected_minus_mirror_hu']:+.2f} HU"
        )
    click.echo(f"wrote {out / 'windows.json'}")
    return 0
