"""Anatomical reference: the CT brain template, the ASPECTS atlas, and laterality."""

from __future__ import annotations

from monai_stroke.anatomy.laterality import mirror_side, side_of_x
from monai_stroke.anatomy.template import (
    TEMPLATE_HU,
    TISSUES,
    TemplateHU,
    brain_mask,
    image_identity,
    load_template,
    template_identity,
    tissue_maps,
)

__all__ = [
    "side_of_x",
    "mirror_side",
    "TEMPLATE_HU",
    "TISSUES",
    "TemplateHU",
    "brain_mask",
    "image_identity",
    "load_template",
    "template_identity",
    "tissue_maps",
]
