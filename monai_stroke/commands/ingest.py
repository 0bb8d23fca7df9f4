"""``monai-stroke ingest``: a DICOM folder or NIfTI file -> one NIfTI HU volume with a RAS affine."""

from __future__ import annotations

import json
from pathlib import Path

import click

from monai_stroke.errors import UserInputError

__all__ = ["ingest"]


@click.command("ingest")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Output .nii or .nii.gz file.")
@click.option("--series", "series_uid", default=None, help="SeriesInstanceUID to read when the folder holds several.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option(
    "--allow-gaps",
    is_flag=True,
    help="Accept missing slices and fill each by interpolating its neighbours (reported); default: error.",
)
@click.option(
    "--keep-tilt",
    is_flag=True,
    help="Keep a gantry tilt as a sheared affine instead of un-shearing the slices (default: un-shear).",
)
def ingest(path: Path, out: Path, series_uid: str | None, as_json: bool, allow_gaps: bool, keep_tilt: bool) -> int:
    """Read a head CT from PATH (a folder of DICOM files, any names and subfolders, or a NIfTI file) and write it
    to OUT as HU with a RAS affine: slices ordered along the slice normal, gantry tilt un-sheared, padding as air.
    """
    from monai_stroke.io import load_ct_series, save_nifti
    from monai_stroke.io.volume import is_nifti_path

    if not is_nifti_path(out):
        raise UserInputError(f"--out {out} must end in .nii or .nii.gz")
    if out.exists() and out.is_dir():
        raise UserInputError(f"--out {out} is a folder: give a file name ending in .nii.gz")
    volume = load_ct_series(path, series_uid=series_uid, allow_gaps=allow_gaps, correct_tilt=not keep_tilt)
    save_nifti(volume, out)
    summary = {**volume.summary, "output": str(out)}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        shape = "x".join(str(v) for v in summary["shape"])
        spacing = "x".join(f"{v:.3g}" for v in summary["spacing"])
        click.echo(
            f"wrote {out}: {shape} voxels of {spacing} mm, tilt {summary['tilt_deg']:.1f} deg, "
            f"HU {summary['hu_min']:.0f}..{summary['hu_max']:.0f}"
        )
    return 0
