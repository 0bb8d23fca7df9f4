"""``monai-stroke register``: ingest a head CT and register it to the CT template (affine), writing it in template
space, optionally with its transform as JSON."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import click

from monai_stroke.errors import UserInputError

__all__ = ["register", "parse_spacing"]

TRANSFORM_FORMAT = "monai-stroke template transform v1"


def parse_spacing(text: str | None) -> tuple[float, float, float] | None:
    """``"2"`` -> (2, 2, 2); ``"1,1,4"`` / ``"1 1 4"`` / ``"1x1x4"`` -> (1, 1, 4); None or empty -> None."""
    if text is None or not text.strip():
        return None
    # "x" separates only between digits ("1x1x4"), so that a stray letter is an error, not a separator
    parts = [p for p in re.split(r"[,\s]+|(?<=\d)x(?=\d)", text.strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(v > 0 and v < 100 for v in values):
        raise UserInputError(f"--spacing {text!r} must be one or three positive sizes in mm, e.g. 2 or 1,1,4")
    return tuple(values)


def _template_arg(path: Path | None) -> Path | None:
    if path is None:
        return None
    if path.is_dir():
        path = path / "template.nii.gz"
    if not path.is_file():
        raise UserInputError(
            f"--template {path} not found: give a template .nii.gz or an atlas folder holding template.nii.gz"
        )
    return path


def _read_transform(path: Path, template_identity: str) -> list[list[float]]:
    try:
        record = json.loads(path.read_text())
        matrix = record["template_transform"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserInputError(
            f"--transform-in {path} is not a transform file written by 'monai-stroke register --transform-out' ({exc})"
        ) from exc
    recorded = record.get("template_identity")
    if recorded and recorded != template_identity:
        raise UserInputError(
            f"--transform-in {path} was computed for another template ({recorded[:12]}...), not this one "
            f"({template_identity[:12]}...); register again"
        )
    return matrix


@click.command("register")
@click.argument("series", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Output .nii or .nii.gz file.")
@click.option(
    "--spacing",
    default=None,
    help="Output voxel size in mm: one value (2) or three (1,1,4); default: the template's 1 mm grid.",
)
@click.option("--series", "series_uid", default=None, help="SeriesInstanceUID to read when the folder holds several.")
@click.option(
    "--template",
    "template",
    default=None,
    type=click.Path(path_type=Path),
    help="A CT template .nii.gz (HU, RAS) or an atlas folder holding template.nii.gz; default: the built-in template.",
)
@click.option(
    "--transform-out",
    "transform_out",
    default=None,
    type=click.Path(path_type=Path),
    help="Also write the transform, the patient grid, the parameters and the quality check as JSON.",
)
@click.option(
    "--transform-in",
    "transform_in",
    default=None,
    type=click.Path(path_type=Path),
    help="Replay a transform written by --transform-out instead of optimising (the quality check still runs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def register(
    series: Path,
    out: Path,
    spacing: str | None,
    series_uid: str | None,
    template: Path | None,
    transform_out: Path | None,
    transform_in: Path | None,
    as_json: bool,
) -> int:
    """Register the head CT in SERIES (a DICOM folder or NIfTI file) to the CT template and write it to OUT on the
    template grid (HU, RAS, air outside the scan).

    The summary holds the transform (template RAS mm -> patient RAS mm), the metric, the brain-overlap check and the
    timings; no patient name, ID, birth date or source path.
    """
    from monai_stroke.io import load_ct_series, volume_to_metatensor
    from monai_stroke.io.volume import is_nifti_path
    from monai_stroke.transforms.registration import (
        RegisterToTemplate,
        TemplateSpace,
        registration_quality,
        registration_record,
    )

    if not is_nifti_path(out):
        raise UserInputError(f"--out {out} must end in .nii or .nii.gz")
    if out.exists() and out.is_dir():
        raise UserInputError(f"--out {out} is a folder: give a file name ending in .nii.gz")
    if transform_out is not None and transform_out.suffix.lower() != ".json":
        raise UserInputError(f"--transform-out {transform_out} must end in .json")
    output_spacing = parse_spacing(spacing)
    template_path = _template_arg(template)
    space = TemplateSpace.resolve(template_path)
    replay = None if transform_in is None else _read_transform(transform_in, space.identity)

    started = time.perf_counter()
    volume = load_ct_series(series, series_uid=series_uid)
    ingest_s = time.perf_counter() - started
    image = volume_to_metatensor(volume)
    registered = RegisterToTemplate(template=space, spacing=output_spacing)(image, transform=replay)
    total_s = time.perf_counter() - started
    meta = registered.meta
    quality = registration_quality(meta)
    record = registration_record(meta)
    _write_nifti(registered, out)

    summary = {
        "output": str(out),
        "output_shape": [int(v) for v in registered.shape[1:]],
        "output_spacing_mm": [float(v) for v in meta["spacing"]],
        "template_identity": meta["template_identity"],
        "template_transform": meta["template_transform"].tolist(),
        "transform_convention": "template RAS+ mm -> patient RAS+ mm (ITK fixed->moving point map, from LPS)",
        "metric": record["metric"],
        "brain_dice": quality["brain_dice"],
        "brain_coverage": quality["brain_coverage"],
        "quality": quality,
        "replayed": record["replayed"],
        "tilt_deg": volume.summary.get("tilt_deg"),
        "timings_s": {
            "ingest": round(ingest_s, 3),
            "registration": round(record["time_s"], 3),
            "total": round(total_s, 3),
        },
        "warnings": [*volume.summary.get("warnings", []), *quality["warnings"]],
    }
    if transform_out is not None:
        from monai_stroke.utils import write_json_atomic

        write_json_atomic(
            transform_out,
            {
                "format": TRANSFORM_FORMAT,
                **{k: summary[k] for k in ("template_identity", "template_transform", "transform_convention")},
                "patient_affine": meta["patient_affine"].tolist(),
                "patient_spatial_shape": [int(v) for v in meta["patient_spatial_shape"]],
                "output_affine": registered.affine.numpy().tolist(),
                "output_shape": summary["output_shape"],
                "quality": quality,
                "registration": record,
            },
        )
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=float))
    else:
        verdict = "pass" if quality["passed"] else "FAIL"
        shape = "x".join(str(v) for v in summary["output_shape"])
        grid = "x".join(f"{v:g}" for v in summary["output_spacing_mm"])
        click.echo(
            f"wrote {out}: template grid {shape} of {grid} mm; brain Dice {quality['brain_dice']:.3f} ({verdict}, "
            f"threshold {quality['threshold']:.2f}), coverage {100 * quality['brain_coverage']:.0f}%, "
            f"{total_s:.1f} s"
        )
    return 0


def _write_nifti(registered, out: Path) -> None:
    """Float32 HU on the template grid; sform/qform code 4 (MNI152), since the template lives on the MNI grid."""
    import nibabel as nib
    import numpy as np

    from monai_stroke.utils import atomic_path

    affine = registered.affine.numpy().astype(np.float64)
    image = nib.Nifti1Image(np.asarray(registered[0].numpy(), dtype=np.float32), affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=4)
    image.set_sform(affine, code=4)
    image.header["descrip"] = b"monai-stroke register (template space)"
    with atomic_path(out) as tmp:
        nib.save(image, tmp)
