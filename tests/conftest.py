"""Suite-wide pytest setup: a private anatomy cache so tests never write to the user's home."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _anatomy_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # built once per test session; MONAI_STROKE_CACHE set by the caller wins (lets CI reuse a cache)
    os.environ.setdefault("MONAI_STROKE_CACHE", str(tmp_path_factory.mktemp("monai_stroke_cache")))
