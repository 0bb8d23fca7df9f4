"""Anatomical reference: the CT brain template, the ASPECTS atlas, and laterality."""

from __future__ import annotations

from monai_stroke.anatomy.laterality import mirror_side, side_of_x

__all__ = ["side_of_x", "mirror_side"]
