"""Analyses of a dataset that set pre-processing parameters: the HU window search (paper figs. 6-7)."""

from __future__ import annotations

from monai_stroke.analysis.window_search import (
    DEFAULT_EDGES_HU,
    RULE,
    TaskHistograms,
    WindowProposal,
    collect_histograms,
    density,
    propose_window,
    region_values,
    window_search,
    write_window_search,
)

__all__ = [
    "DEFAULT_EDGES_HU",
    "RULE",
    "TaskHistograms",
    "WindowProposal",
    "collect_histograms",
    "density",
    "propose_window",
    "region_values",
    "window_search",
    "write_window_search",
]
