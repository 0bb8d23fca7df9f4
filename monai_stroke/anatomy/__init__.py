"""Anatomical reference: the CT brain template, the ASPECTS atlas, and laterality."""

from __future__ import annotations

from monai_stroke.anatomy.atlas import ATLAS_FILES, Atlas, read_regions_table
from monai_stroke.anatomy.atlas_import import ImportReport, RegionTarget, import_atlas, parse_mapping
from monai_stroke.anatomy.default_atlas import GANGLIONIC_Z_MM, SUPRAGANGLIONIC_Z_MM
from monai_stroke.anatomy.figures import plot_atlas_slices
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
    "Atlas",
    "ATLAS_FILES",
    "read_regions_table",
    "import_atlas",
    "parse_mapping",
    "RegionTarget",
    "ImportReport",
    "plot_atlas_slices",
    "GANGLIONIC_Z_MM",
    "SUPRAGANGLIONIC_Z_MM",
    "TEMPLATE_HU",
    "TISSUES",
    "TemplateHU",
    "brain_mask",
    "image_identity",
    "load_template",
    "template_identity",
    "tissue_maps",
]
