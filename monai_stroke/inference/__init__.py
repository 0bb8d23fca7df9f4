"""The cascade (issue #7): hemorrhage check -> ischemic regions -> ASPECTS -> report with explanations.

Read in this order: :mod:`.models` (the models folder and its checks), :mod:`.preprocess` (each model's
contract chain, shared steps run once), :mod:`.hemorrhage`, :mod:`.ischemic` (registration quality, regions,
ASPECTS), :mod:`.explain` (Grad-CAM back on the patient's slices), :mod:`.figures`, :mod:`.report`
(``report.json`` schema) and :mod:`.cascade` (the whole run, written atomically).
"""

from __future__ import annotations

from monai_stroke.inference.cascade import StrokeCascade, check_inputs, check_output_dir, predict
from monai_stroke.inference.ischemic import aspects_scores
from monai_stroke.inference.models import (
    EARLY_SLOT,
    HEMORRHAGE_SLOT,
    MODEL_SLOTS,
    OLD_SLOT,
    CascadeModel,
    CascadeModels,
    load_cascade_models,
    model_path,
)
from monai_stroke.inference.report import REPORT_FILE, REPORT_FORMAT, REPORT_PNG, check_report

__all__ = [
    "StrokeCascade",
    "predict",
    "check_inputs",
    "check_output_dir",
    "aspects_scores",
    "HEMORRHAGE_SLOT",
    "EARLY_SLOT",
    "OLD_SLOT",
    "MODEL_SLOTS",
    "CascadeModel",
    "CascadeModels",
    "load_cascade_models",
    "model_path",
    "REPORT_FILE",
    "REPORT_FORMAT",
    "REPORT_PNG",
    "check_report",
]
