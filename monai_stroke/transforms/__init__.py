"""MONAI transforms of the pre-processing (issue #4): windowing, lesion concatenation, template registration,
region crops, augmentation.

Arrays are channel-first ``(C, X, Y, Z)`` with ``Z`` the slice axis (docs/ARCHITECTURE.md). Each transform
has an array and a dictionary version and works on numpy, torch and MetaTensor input.
"""

from __future__ import annotations

from monai_stroke.transforms.augment import MAX_NOISE_STD_HU, RequireHUd, train_augmentation
from monai_stroke.transforms.intensity import (
    HEMORRHAGE_WINDOWS,
    HU_WINDOW_GROUPS,
    HU_WINDOW_PRESETS,
    WINDOWS_META_KEY,
    HUWindow,
    HUWindowd,
    parse_windows,
)
from monai_stroke.transforms.regions import (
    MASK_FILL_HU,
    TARGET_SLICE_KEY,
    RegionCrop,
    RegionCropd,
    RegionLabeld,
    region_categories,
    region_records,
    task_window,
)
from monai_stroke.transforms.registration import (
    BRAIN_DICE_THRESHOLD,
    TEMPLATE_TRANSFORM_KEY,
    RegisterToTemplate,
    RegisterToTemplated,
    RegistrationParams,
    TemplateToPatient,
    TemplateToPatientd,
    map_points_to_patient,
    map_points_to_template,
    map_to_patient,
    register_to_template,
    registration_quality,
    registration_record,
)
from monai_stroke.transforms.slices import (
    SLICE_INDEX_KEY,
    SLICE_INDICES_META_KEY,
    LesionConcat,
    LesionConcatd,
    SliceSamplesd,
    neighbour_indices,
)

__all__ = [
    # intensity
    "HU_WINDOW_PRESETS",
    "HU_WINDOW_GROUPS",
    "HEMORRHAGE_WINDOWS",
    "WINDOWS_META_KEY",
    "parse_windows",
    "HUWindow",
    "HUWindowd",
    # slices
    "SLICE_INDEX_KEY",
    "SLICE_INDICES_META_KEY",
    "neighbour_indices",
    "LesionConcat",
    "LesionConcatd",
    "SliceSamplesd",
    # region crops
    "TARGET_SLICE_KEY",
    "MASK_FILL_HU",
    "RegionCrop",
    "RegionCropd",
    "RegionLabeld",
    "region_categories",
    "region_records",
    "task_window",
    # registration to the template and back
    "BRAIN_DICE_THRESHOLD",
    "TEMPLATE_TRANSFORM_KEY",
    "RegistrationParams",
    "register_to_template",
    "registration_quality",
    "registration_record",
    "RegisterToTemplate",
    "RegisterToTemplated",
    "TemplateToPatient",
    "TemplateToPatientd",
    "map_to_patient",
    "map_points_to_patient",
    "map_points_to_template",
    # augmentation
    "MAX_NOISE_STD_HU",
    "RequireHUd",
    "train_augmentation",
]
