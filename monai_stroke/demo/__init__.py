"""``monai-stroke demo``: synthesise a cohort, train through the bundles, search freeze depths, predict, summarise."""

from __future__ import annotations

from monai_stroke.demo.pipeline import STAGES, DemoSettings, bundle_config, run_bundle, run_demo
from monai_stroke.demo.summary import tensorboard_command, truth_aspects, write_summary

__all__ = [
    "STAGES",
    "DemoSettings",
    "bundle_config",
    "run_bundle",
    "run_demo",
    "tensorboard_command",
    "truth_aspects",
    "write_summary",
]
