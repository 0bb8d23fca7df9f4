"""``monai-stroke atl``: the freeze-depth search of adaptive transfer learning, through its MONAI bundle.

A thin wrapper: it checks the paths, then runs ``bundles/adaptive_transfer/configs/train.yaml`` with
``monai.bundle.run`` exactly as the documented ``python -m monai.bundle run`` command does, and prints the choice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from monai_stroke.errors import UserInputError

__all__ = ["atl", "default_bundle_dir"]


def default_bundle_dir() -> Path:
    """``bundles/adaptive_transfer`` of the source tree this package runs from (editable installs, clones)."""
    import monai_stroke

    return Path(monai_stroke.__file__).resolve().parents[1] / "bundles" / "adaptive_transfer"


def _depths(text: str | None) -> list[str] | None:
    if text is None:
        return None
    from monai_stroke.transfer.depths import ALL_DEPTHS

    depths = [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in depths if d not in ALL_DEPTHS]
    if unknown or not depths:
        raise UserInputError(f"--depths: unknown freeze depth(s) {', '.join(unknown) or '(none given)'}; use a "
                             f"comma-separated list of {', '.join(ALL_DEPTHS)}")
    return depths


def _settings(pairs: tuple[str, ...]) -> dict[str, object]:
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"--set {pair!r}: write KEY=VALUE, e.g. --set crop_size=[64,64]")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise UserInputError(f"--set {pair!r}: the value is not YAML ({exc.problem})") from exc
    return out


@click.command("atl")
@click.option("--data", "data", required=True, type=click.Path(path_type=Path), help="Dataset folder (cohort.csv, "
              "regions.csv, series), e.g. from 'monai-stroke synth'.")
@click.option("--source", "source", required=True, type=click.Path(path_type=Path),
              help="Source model: OUT/models/model.pt of the hemorrhage bundle.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output folder; rerun the same command on it to resume an interrupted search.")
@click.option("--task", default="early_vs_intact", show_default=True, help="Ischemic task (see 'manifest tasks').")
@click.option("--search", type=click.Choice(["exhaustive", "halving"]), default="exhaustive", show_default=True,
              help="exhaustive: every depth trains all epochs (the paper); halving: successive halving over depths.")
@click.option("--epochs-per-depth", type=click.IntRange(min=1), default=None,
              help="Fine-tuning epochs e of a fully trained depth.  [default: the bundle's, 100]")
@click.option("--network-size", type=click.Choice(["full", "tiny"]), default=None,
              help="Must match the source model.  [default: the bundle's, full]")
@click.option("--depths", default=None, help="Comma-separated freeze depths to search, from none, layer0, layer0-1, "
              "layer0-2, layer0-3, layer0-4, all_conv, not_transfer.  [default: all]")
@click.option("--w1", type=float, default=None, help="Weight of L_1 in f.  [default: 1]")
@click.option("--w2", type=float, default=None, help="Weight of the mean validation loss in f.  [default: 1]")
@click.option("--pretrained-weights", type=click.Path(path_type=Path), default=None,
              help="Local ImageNet weights for the not_transfer control (default: random initialisation).")
@click.option("--num-workers", type=click.IntRange(min=0), default=None, help="DataLoader worker processes.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any other key of the bundle's train.yaml, VALUE read as YAML (e.g. --set crop_size=[64,64] "
              "--set learning_rate=3e-4); repeatable.")
@click.option("--bundle", "bundle", type=click.Path(path_type=Path), default=None,
              help="The adaptive_transfer bundle folder.  [default: bundles/adaptive_transfer of this source tree]")
def atl(
    data: Path,
    source: Path,
    out: Path,
    task: str,
    search: str,
    epochs_per_depth: int | None,
    network_size: str | None,
    depths: str | None,
    w1: float | None,
    w2: float | None,
    pretrained_weights: Path | None,
    num_workers: int | None,
    settings: tuple[str, ...],
    bundle: Path | None,
) -> int:
    """Search the freeze depth of adaptive transfer learning (hemorrhage -> ischemic network).

    Writes OUT/atl_table.csv, OUT/atl_choice.json, the figures and OUT/models/model.pt (the chosen depth's model).
    """
    bundle = default_bundle_dir() if bundle is None else bundle
    config = bundle / "configs" / "train.yaml"
    if not config.is_file():
        raise UserInputError(f"no adaptive_transfer bundle at {bundle} (configs/train.yaml missing); pass --bundle "
                             "with the bundle folder of a monai-stroke source tree")
    if not (data / "cohort.csv").is_file():
        raise UserInputError(f"--data {data} is not a dataset folder (no cohort.csv); create one with "
                             "'monai-stroke synth' or convert real data with 'monai-stroke manifest'")
    if not source.is_file():
        raise UserInputError(f"--source {source} does not exist; train the source model with the hemorrhage bundle "
                             "and pass its OUT/models/model.pt")
    overrides = {
        "bundle_root": str(bundle),
        "dataset_dir": str(data),
        "source_checkpoint": str(source),
        "output_dir": str(out),
        "task": task,
        "search": search,
        "epochs_per_depth": epochs_per_depth,
        "network_size": network_size,
        "depths": _depths(depths),
        "w1": w1,
        "w2": w2,
        "pretrained_weights": None if pretrained_weights is None else str(pretrained_weights),
        "num_workers": num_workers,
    }
    overrides.update(_settings(settings))
    from monai.bundle import run

    started = time.monotonic()
    # logging_file=False: keep the command line's own one-line log format instead of the bundle's
    run(
        config_file=str(config),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    choice = json.loads((out / "atl_choice.json").read_text())
    click.echo(
        f"chose {choice['theta']} (f {choice['f']:.4f}, {choice['search']}, {choice['epochs_trained']} epochs of "
        f"{choice['epochs_exhaustive']} exhaustive) in {time.monotonic() - started:.0f} s; wrote {out}/atl_table.csv, "
        f"{out}/atl_choice.json and {out}/models/model.pt"
    )
    return 0
