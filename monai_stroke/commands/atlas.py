"""``monai-stroke atlas``: export the CT template + ASPECTS atlas, import a published atlas, draw one."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["atlas"]


def _print_summary(atlas_obj, out: Path) -> None:  # noqa: ANN001 - Atlas, imported lazily
    summary = atlas_obj.summary()
    click.echo(f"wrote {out}: {len(summary)} regions, atlas identity {atlas_obj.identity[:16]}")
    for row in summary.itertuples(index=False):
        click.echo(
            f"  {row.label:>3} {row.side} {row.region:<4} {row.volume_ml:7.2f} mL  "
            f"centroid ({row.x_mm:+6.1f}, {row.y_mm:+6.1f}, {row.z_mm:+6.1f}) mm  z {row.z_min_mm:g}..{row.z_max_mm:g}"
        )


@click.group("atlas")
def atlas() -> None:
    """CT brain template and ASPECTS region atlas (docs/atlas.md)."""


@atlas.command("export")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Atlas folder to write.")
@click.option(
    "--atlas",
    "atlas_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Atlas folder to re-export (checked on the way); default: the built-in atlas.",
)
def export(out: Path, atlas_dir: Path | None) -> int:
    """Write OUT/template.nii.gz (HU), OUT/atlas.nii.gz (labels) and OUT/regions.csv (label,side,region)."""
    from monai_stroke.anatomy import Atlas

    source = Atlas.from_dir(atlas_dir) if atlas_dir is not None else Atlas.default()
    source.to_dir(out)
    _print_summary(source, out)
    return 0


@atlas.command("import")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Atlas folder to write.")
@click.option(
    "--table",
    "table",
    default=None,
    type=click.Path(path_type=Path),
    help="CSV naming the labels of a label-map SRC: columns label,side,region or label,name.",
)
@click.option(
    "--map",
    "maps",
    multiple=True,
    help="Source name -> region: 'IC=I,PLIC=IC,Thalamus=-' (NAME=REGION[:SIDE], '-' drops) or a CSV/YAML/JSON "
    "mapping file. Repeatable. Names already spelled as our regions need no entry.",
)
@click.option(
    "--pattern",
    default=None,
    help="How names are read: mask file names (default '{region}_{side}.nii*') or, with --table, label names; "
    "placeholders {region}, {side}, and * for anything, e.g. 'MNI152_{region}_{side}.nii.gz'.",
)
@click.option("--allow-missing", is_flag=True, help="Warn instead of failing when regions or sides are absent.")
def import_(
    src: Path, out: Path, table: Path | None, maps: tuple[str, ...], pattern: str | None, allow_missing: bool
) -> int:
    """Import SRC (a label map NIfTI with --table, or a folder of per-region masks) onto the CT template grid.

    SRC must be in MNI152 space. Labels are resampled with nearest neighbour, masks linearly and thresholded
    at half their maximum; overlapping masks give the voxel to the larger value. OUT gets the atlas files and
    import_report.json.
    """
    from monai_stroke.anatomy.atlas_import import import_atlas, parse_mapping

    mapping = parse_mapping(maps)
    imported, report = import_atlas(src, table=table, mapping=mapping, pattern=pattern, allow_missing=allow_missing)
    imported.to_dir(out, extras={"import_report.json": report.to_dict()})
    for overlap in report.overlaps:
        click.echo(f"overlap: {overlap['voxels']} voxels of {' and '.join(overlap['regions'])} ({overlap})", err=True)
    _print_summary(imported, out)
    return 0


@atlas.command("figure")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="PNG file to write.")
@click.option(
    "--atlas", "atlas_dir", default=None, type=click.Path(path_type=Path), help="Atlas folder; default: built-in."
)
@click.option("--z", "z_mm", multiple=True, type=float, help="Axial levels in MNI mm (repeatable); default 4 and 33.")
def figure(out: Path, atlas_dir: Path | None, z_mm: tuple[float, ...]) -> int:
    """Draw the atlas regions over axial template slices (radiological view) into a PNG."""
    from monai_stroke.anatomy import Atlas
    from monai_stroke.anatomy.figures import plot_atlas_slices

    source = Atlas.from_dir(atlas_dir) if atlas_dir is not None else Atlas.default()
    plot_atlas_slices(source, out, z_mm=z_mm or (4.0, 33.0))
    click.echo(f"wrote {out}")
    return 0
