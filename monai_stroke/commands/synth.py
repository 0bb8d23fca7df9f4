"""``monai-stroke synth``: write the built-in synthetic NCCT cohort (DICOM series, lesion masks, manifests)."""

from __future__ import annotations

import time
from pathlib import Path

import click

__all__ = ["synth"]


def _range(value: tuple[float, float] | None, default: tuple[float, float]) -> tuple[float, float]:
    return default if value is None else (float(value[0]), float(value[1]))


@click.command("synth")
@click.option("--patients", "n_patients", required=True, type=click.IntRange(min=1), help="Number of patients.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Dataset folder to create.")
@click.option("--seed", default=0, show_default=True, type=int, help="Cohort seed: same seed, same files.")
@click.option(
    "--size",
    type=click.Choice(["small", "full"]),
    default="small",
    show_default=True,
    help="small: 128x128 (~1.9 mm pixels, fast); full: 512x512 (~0.47 mm pixels).",
)
@click.option(
    "--ischemic-contrast-hu",
    type=(float, float),
    default=None,
    metavar="LOW HIGH",
    help="Mean HU change of early ischemic lesions over their labelled voxels.  [default: -6 -2]",
)
@click.option(
    "--old-density-hu",
    type=(float, float),
    default=None,
    metavar="LOW HIGH",
    help="Old infarct density.  [default: 5 20]",
)
@click.option(
    "--hemorrhage-density-hu",
    type=(float, float),
    default=None,
    metavar="LOW HIGH",
    help="Fresh blood density.  [default: 50 90]",
)
@click.option(
    "--noise-hu", type=(float, float), default=None, metavar="LOW HIGH", help="Noise SD per patient.  [default: 3 6]"
)
@click.option(
    "--tilt-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.35,
    show_default=True,
    help="Fraction of patients scanned with a 10-20 degree gantry tilt.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Parallel processes (default: the CPUs available)."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing synthetic dataset at --out.")
def synth(
    n_patients: int,
    out: Path,
    seed: int,
    size: str,
    ischemic_contrast_hu: tuple[float, float] | None,
    old_density_hu: tuple[float, float] | None,
    hemorrhage_density_hu: tuple[float, float] | None,
    noise_hu: tuple[float, float] | None,
    tilt_fraction: float,
    workers: int | None,
    overwrite: bool,
) -> int:
    """Write a synthetic head-CT cohort to OUT: per patient a DICOM series and its lesion label map, plus
    cohort.csv (splits), regions.csv (ASPECTS categories), lesion_codes.csv and rsna_labels.csv.
    """
    from monai_stroke.synthetic import SynthConfig, make_cohort

    defaults = SynthConfig()
    config = SynthConfig(
        size=size,
        ischemic_contrast_hu=_range(ischemic_contrast_hu, defaults.ischemic_contrast_hu),
        old_density_hu=_range(old_density_hu, defaults.old_density_hu),
        hemorrhage_density_hu=_range(hemorrhage_density_hu, defaults.hemorrhage_density_hu),
        noise_sd_hu=_range(noise_hu, defaults.noise_sd_hu),
        tilt_fraction=tilt_fraction,
    )
    started = time.monotonic()
    make_cohort(out, n_patients, seed=seed, config=config, workers=workers, overwrite=overwrite)
    click.echo(f"wrote {n_patients} synthetic patients ({size}) to {out} in {time.monotonic() - started:.1f} s")
    return 0
