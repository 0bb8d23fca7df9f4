"""``monai-stroke demo``: the whole system on the built-in synthetic cohort (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["demo"]


@click.command("demo")
@click.option(
    "--out", "out", default="demo_out", show_default=True, type=click.Path(path_type=Path), help="Demo folder."
)
@click.option("--full", is_flag=True, help="The paper's setting for a GPU machine: SE-ResNeXt50, full-size cohort.")
@click.option("--quick", is_flag=True, hidden=True, help="Smallest run exercising every stage (smoke tests).")
@click.option(
    "--dataset",
    "dataset_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Use this dataset folder (cohort.csv, regions.csv, rsna_labels.csv) instead of synthesising one.",
)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: cuda when available.")
def demo(out: Path, full: bool, quick: bool, dataset_dir: Path | None, device: str | None) -> int:
    """Synthesise a cohort, train the hemorrhage network, run adaptive transfer learning for both ischemic tasks,
    evaluate, predict held-out patients, and write OUT/summary.html, OUT/models (for 'monai-stroke predict') and
    TensorBoard logs. Default: tiny networks on a small cohort, about 10 minutes on 2 CPU cores.
    """
    from monai_stroke.demo import DemoSettings, run_demo, tensorboard_command
    from monai_stroke.errors import UserInputError

    if full and quick:
        raise UserInputError("--full and --quick exclude each other")
    settings = DemoSettings.full() if full else DemoSettings.quick() if quick else DemoSettings()
    record = run_demo(out, settings, dataset_dir=dataset_dir, device=device)
    minutes = record["timings_s"]["total_s"] / 60
    click.echo(
        f"demo done in {minutes:.1f} min: open {out / 'summary.html'}; models in {out / 'models'}; "
        f"TensorBoard: {tensorboard_command(out)}"
    )
    return 0
