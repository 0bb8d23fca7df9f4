"""Suite-wide pytest setup: a private anatomy cache so tests never write to the user's home."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _anatomy_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # built once per test session; MONAI_STROKE_CACHE set by the caller wins (lets CI reuse a cache)
    os.environ.setdefault("MONAI_STROKE_CACHE", str(tmp_path_factory.mktemp("monai_stroke_cache")))


# --- synthetic_small_cohort (owned by tests/synthetic; other test folders reuse it) ---------------------------
@pytest.fixture(scope="session")
def synthetic_small_cohort(tmp_path_factory: pytest.TempPathFactory, _anatomy_cache: None) -> os.PathLike:
    """A 12-patient ``--size small`` synthetic dataset folder (seed 2024), built once per test session.

    Read-only for tests: copy it before modifying anything. 12 patients give train/val/test of 6/3/3, each
    split holding intact, early-ischemic, old-infarction and hemorrhage patients, and at least one tilted series.
    """
    from monai_stroke.synthetic import make_cohort

    return make_cohort(tmp_path_factory.mktemp("synthetic") / "small_cohort", n_patients=12, seed=2024, size="small")
