"""``monai-stroke predict``: a head CT series -> stroke report (hemorrhage check, ASPECTS regions, explanations)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["predict"]


def _summary(report: dict) -> str:
    hem = report["hemorrhage"]
    line = f"hemorrhage {'SUSPECTED' if hem['positive'] else 'not detected'} (p {hem['probability']:.2f})"
    if report["ischemic"]["scored"]:
        aspects = report["aspects"]
        line += f"; ASPECTS R {aspects['R']} / L {aspects['L']}"
        old = report["ischemic"]["old_infarctions"]
        if old:
            line += "; old infarcts " + ", ".join(f"{o['side']} {o['region']}" for o in old)
    else:
        line += f"; ASPECTS not scored: {report['ischemic']['reason']}"
    return line


@click.command("predict")
@click.argument("series", type=click.Path(path_type=Path))
@click.option(
    "--models",
    "models_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Models folder: hemorrhage/, early_vs_intact/, old_vs_intact/ each with model.pt (as 'monai-stroke demo' "
    "writes to DIR/models, or bundle output folders).",
)
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Report folder to write.")
@click.option(
    "--keep-identifiers",
    is_flag=True,
    help="Put the patient's name, ID and birth date (and the series UID and path) in report.json; default: none.",
)
@click.option(
    "--atlas",
    "atlas_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Atlas folder the ischemic models were trained with (default: the built-in ASPECTS atlas).",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where the networks run.",
)
@click.option("--no-explain", is_flag=True, help="Skip the Grad-CAM explanations (explain/*.png).")
def predict(
    series: Path,
    models_dir: Path,
    out: Path,
    keep_identifiers: bool,
    atlas_dir: Path | None,
    device: str,
    no_explain: bool,
) -> int:
    """Read a non-contrast head CT (SERIES: a DICOM folder or a NIfTI file) and write OUT/report.json,
    OUT/report.png and OUT/explain/: hemorrhage check first; when negative, per-region early ischemic change and
    old infarction and ASPECTS per hemisphere. Research software, not for clinical decisions.
    """
    from monai_stroke.inference import predict as run_predict

    report = run_predict(
        series,
        models_dir,
        out,
        keep_identifiers=keep_identifiers,
        atlas_dir=atlas_dir,
        device=device,
        explain=not no_explain,
    )
    click.echo(_summary(report))
    for warning in report["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {out / 'report.json'}, {out / 'report.png'} in {report['timings_s']['total']:.1f} s")
    return 0
