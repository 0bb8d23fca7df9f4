"""The built-in synthetic NCCT cohort (issue #3): realistic head CT series written as DICOM, with ground truth.

Follow one patient: :func:`plan_patient` draws every random choice into a :class:`PatientSpec` (scanner
geometry and gantry tilt, head pose, per-patient anatomy, lesions placed in atlas regions);
:func:`render_patient` samples the CT template through the pose into the scanner's slices with partial volume,
noise and lesions; :func:`write_ct_series` writes the DICOM files. :func:`make_cohort` does this for a whole
cohort and writes the dataset folder every later stage reads (``cohort.csv``, ``regions.csv``,
``lesion_codes.csv``, ``rsna_labels.csv``, per-patient ``dicom/`` and ``lesions.nii.gz``).
"""

from __future__ import annotations

from monai_stroke.synthetic.cohort import (
    LESION_CODES_FILE,
    PROFILE_CYCLE,
    SYNTH_MARKER,
    make_cohort,
    plan_cohort,
    split_sizes,
    write_patient,
)
from monai_stroke.synthetic.dicom import RESCALE_INTERCEPT, hu_to_stored, write_ct_series
from monai_stroke.synthetic.head import HeadModel
from monai_stroke.synthetic.lesions import (
    EARLY_ISCHEMIC_KINDS,
    HEMORRHAGE_KINDS,
    ISCHEMIC_KINDS,
    LESION_KINDS,
    LesionSpec,
    lesion_field,
)
from monai_stroke.synthetic.patient import PROFILES, SIZES, PatientSpec, SynthConfig, plan_patient
from monai_stroke.synthetic.render import RenderedPatient, default_head, patient_template, render_patient
from monai_stroke.synthetic.scanner import Couch, HeadPose, ScannerGeometry

__all__ = [
    "make_cohort",
    "plan_cohort",
    "split_sizes",
    "write_patient",
    "PROFILE_CYCLE",
    "SYNTH_MARKER",
    "LESION_CODES_FILE",
    "write_ct_series",
    "hu_to_stored",
    "RESCALE_INTERCEPT",
    "HeadModel",
    "LesionSpec",
    "lesion_field",
    "EARLY_ISCHEMIC_KINDS",
    "ISCHEMIC_KINDS",
    "HEMORRHAGE_KINDS",
    "LESION_KINDS",
    "PatientSpec",
    "SynthConfig",
    "plan_patient",
    "PROFILES",
    "SIZES",
    "RenderedPatient",
    "render_patient",
    "patient_template",
    "default_head",
    "ScannerGeometry",
    "HeadPose",
    "Couch",
]
