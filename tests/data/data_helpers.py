"""Helpers of the dataset and bundle tests (``tests/bundles`` puts this folder on ``sys.path`` to share them)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: Registration settings that keep the ischemic tests within seconds per patient (coarse levels, 2 mm grid).
FAST_REGISTRATION = {"levels_mm": [6.0, 4.0], "iterations": 50}
#: region_datasets / ischemic bundle settings of the tests.
FAST_REGION_PARAMS = {"crop_size": (32, 32), "template_spacing": 2.0, "registration": FAST_REGISTRATION}


def ischemic_subset(source: str | Path, dest: str | Path) -> Path:
    """A 4-patient view of a synthetic dataset folder for the (registration-bound) ischemic tests.

    Train: one early-ischemic and one intact patient; val and test: one early-ischemic patient each. Patient folders
    are symlinks (the sample cache is keyed by content, so the crops are shared with other views of the cohort).
    """
    source, dest = Path(source), Path(dest)
    cohort = pd.read_csv(source / "cohort.csv", dtype=str, keep_default_na=False)
    early = cohort["early_ischemic"] == "1"

    def first(split: str, mask: pd.Series) -> str:
        return cohort.loc[(cohort["split"] == split) & mask, "patient_id"].iloc[0]

    chosen = [first("train", early), first("train", cohort["profile"] == "intact"), first("val", early)]
    chosen.append(first("test", early))
    dest.mkdir(parents=True)
    cohort.loc[cohort["patient_id"].isin(chosen)].to_csv(dest / "cohort.csv", index=False)
    regions = pd.read_csv(source / "regions.csv", dtype=str, keep_default_na=False)
    regions.loc[regions["patient_id"].isin(chosen)].to_csv(dest / "regions.csv", index=False)
    for pid in chosen:
        (dest / pid).symlink_to(source / pid, target_is_directory=True)
    return dest
