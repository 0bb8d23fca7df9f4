"""Session fixtures of the cascade tests: one synthetic patient with a left-hemisphere infarct, untrained model
folders with real contracts, and one full negative-path run shared by the tests that read its outputs.

Budget: the negative run (ingest, hemorrhage network, a fast registration, 20 crops, two ischemic networks,
Grad-CAM, figures) is done once; every other test uses the cheap hemorrhage-positive path or fails before any
heavy step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cascade_patients import AsymmetryNet, plant_identifiers, write_left_lesion_patient

# a fast registration (two coarse levels, few iterations) on a 2 mm template grid and small crops: the plumbing is
# the same as at full settings; the window override shows the lesion to the stand-in network without clipping
FAST_ISCHEMIC = {
    "template_spacing": 2.0,
    "registration": {"levels_mm": [6.0, 4.0], "iterations": 60},
    "window": [30.0, 60.0],
}
CROP_SIZE = (32, 32)
#: the stand-in early-ischemic network: flags a region whose mean windowed value is > 0.08 below its mirror
ASYMMETRY = {"gain": 40.0, "offset": 0.08}


def _models(root: Path, hemorrhage_bias: float) -> Path:
    from monai_stroke.inference.untrained import write_untrained_models

    return write_untrained_models(
        root, crop_size=CROP_SIZE, hemorrhage_bias=hemorrhage_bias, ischemic_bias=-20.0, **FAST_ISCHEMIC
    )


@pytest.fixture(scope="session")
def left_patient(tmp_path_factory: pytest.TempPathFactory, _anatomy_cache: None) -> dict:
    """A patient with early ischemic change in L I and L M2 only, with identifiers planted in its DICOM files."""
    info = write_left_lesion_patient(tmp_path_factory.mktemp("cascade") / "T001")
    plant_identifiers(info["series"])
    return info


@pytest.fixture(scope="session")
def negative_models(tmp_path_factory: pytest.TempPathFactory, _anatomy_cache: None) -> Path:
    """Untrained networks, hemorrhage pinned negative, ischemic pinned negative (the early one is replaced)."""
    return _models(tmp_path_factory.mktemp("models") / "negative", hemorrhage_bias=-20.0)


@pytest.fixture(scope="session")
def positive_models(tmp_path_factory: pytest.TempPathFactory, _anatomy_cache: None) -> Path:
    """The same networks with the hemorrhage network pinned positive."""
    return _models(tmp_path_factory.mktemp("models") / "positive", hemorrhage_bias=20.0)


@pytest.fixture(scope="session")
def negative_run(tmp_path_factory: pytest.TempPathFactory, left_patient: dict, negative_models: Path) -> dict:
    """The cascade on the left-lesion patient, the early network replaced by :class:`AsymmetryNet`."""
    from monai_stroke.inference import StrokeCascade, load_cascade_models

    models = load_cascade_models(negative_models)
    models.early.network = AsymmetryNet(**ASYMMETRY)
    cascade = StrokeCascade(models)
    out = tmp_path_factory.mktemp("reports") / "negative"
    report = cascade.predict(left_patient["series"], out)
    return {"report": report, "out": out, "cascade": cascade, "truth": left_patient}
