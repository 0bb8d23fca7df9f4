"""``monai-stroke manifest``: check manifests, convert the RSNA ICH labels, list the task definitions."""

from __future__ import annotations

from pathlib import Path

import click

from monai_stroke.manifests import MANIFEST_KINDS, check_manifests, convert_rsna, load_tasks

__all__ = ["manifest"]


@click.group()
def manifest() -> None:
    """Data manifests: check CSVs, convert RSNA ICH labels, list tasks (schemas: data_manifests/README.md)."""


@manifest.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--kind",
    type=click.Choice(list(MANIFEST_KINDS)),
    default=None,
    help="Check every FILE as this kind instead of telling it from the header.",
)
@click.option("--no-files", is_flag=True, help="Check the CSVs only, not that the paths they name exist.")
def check(files: tuple[Path, ...], kind: str | None, no_files: bool) -> int:
    """Check manifest FILEs (cohort, regions, RSNA slices or labels) and cohort vs regions when both are given.

    Prints 'ok: FILE (N rows, KIND)' for each valid file; otherwise every problem, one line each, naming the
    file, row (header = row 1) and column, and exits with status 2.
    """
    reports = check_manifests(list(files), kind=kind, check_files=not no_files)
    problems = [str(p) for r in reports for p in r.problems]
    for report in reports:
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
        if report.ok:
            click.echo(f"ok: {report.file} ({report.n_rows} rows, {report.kind})")
    if problems:
        # the CLI convention: one 'error:' line; the rest of the list follows it, one problem per line
        click.echo(f"error: {problems[0]}", err=True)
        for line in problems[1:]:
            click.echo(line, err=True)
        return 2
    return 0


@manifest.command()
@click.argument("labels_csv", type=click.Path(path_type=Path))
@click.argument("dicom_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_csv", required=True, type=click.Path(path_type=Path), help="Slice manifest CSV to write.")
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Processes reading DICOM headers."
)
def rsna(labels_csv: Path, dicom_dir: Path, out_csv: Path, workers: int) -> int:
    """Convert RSNA ICH labels (LABELS_CSV, e.g. stage_2_train.csv) + DICOM_DIR into a per-slice manifest.

    Slices are grouped by series and ordered by position along the slice normal; headers only are read.
    """
    report = convert_rsna(labels_csv, dicom_dir, out_csv, workers=workers)
    click.echo(
        f"wrote {out_csv}: {report.slices} slices in {report.series} series of {report.studies} studies "
        f"({report.labels_without_dicom} labelled images without DICOM, {report.dicom_without_labels} DICOM files "
        f"without labels, {report.duplicate_label_rows} repeated label rows dropped)"
    )
    return 0


@manifest.command()
@click.option("--tasks", "tasks_file", type=click.Path(path_type=Path), help="YAML file adding or overriding tasks.")
def tasks(tasks_file: Path | None) -> int:
    """List the task definitions: positives, negatives and window of each."""
    for task in load_tasks(tasks_file).values():
        low, high = task.window_hu
        click.echo(
            f"{task.name}: positives {', '.join(task.positives)}; negatives {', '.join(task.negatives)}; "
            f"window center {task.window_center_hu:g} width {task.window_width_hu:g} HU ({low:g} to {high:g})"
        )
    return 0
