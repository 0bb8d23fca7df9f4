"""Synthetic patients with a known lesion for the cascade tests, and a network whose answer is known."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import torch
from torch import nn

__all__ = ["PLANTED", "write_left_lesion_patient", "plant_identifiers", "AsymmetryNet"]

#: identifiers planted into test series; none may appear in any output without --keep-identifiers
PLANTED = {"PatientName": "Plantedname^Secretia", "PatientID": "PLANTEDID7731", "PatientBirthDate": "19230405"}


def write_left_lesion_patient(
    out_dir: str | os.PathLike,
    regions: tuple[str, ...] = ("I", "M2"),
    contrast_hu: float = -30.0,
    seed: int = 7,
) -> dict:
    """Render one small synthetic patient whose only lesion is early ischemic change filling *left* regions.

    The patient is drawn by the public planner as ``intact`` (random head pose, no gantry tilt), then given one
    territorial-infarction lesion per region: an ellipsoid larger than the region, centred on its atlas centroid,
    which the renderer clips to the region's parenchyma, with a strong mean contrast so the stand-in network below
    cannot miss it.

    Returns:
        ``{"series": DICOM folder, "regions": [("L", region), ...]}``.
    """
    from monai_stroke.anatomy import Atlas
    from monai_stroke.synthetic import LesionSpec, SynthConfig, default_head, plan_patient, write_patient

    head = default_head()
    atlas = Atlas.default()
    spec = plan_patient("T001", [seed], "intact", head, SynthConfig(size="small"), tilted=False)
    spec.lesions = [
        LesionSpec(
            code=k,
            kind="territorial_infarction",
            side="L",
            region=region,
            centers_mm=[[float(v) for v in atlas.centroid_mm("L", region)]],
            radii_mm=[30.0, 30.0, 30.0],
            contrast_hu=float(contrast_hu),
        )
        for k, region in enumerate(regions, start=1)
    ]
    patient_dir = Path(out_dir)
    write_patient(spec, patient_dir, head)
    return {"series": patient_dir / "dicom", "regions": [("L", region) for region in regions]}


def plant_identifiers(series_dir: str | os.PathLike, values: dict[str, str] = PLANTED) -> None:
    """Write patient name, ID and birth date into every DICOM file of a series."""
    for path in sorted(Path(series_dir).glob("*.dcm")):
        ds = pydicom.dcmread(path)
        for tag, value in values.items():
            setattr(ds, tag, value)
        ds.save_as(path, enforce_file_format=True)


class AsymmetryNet(nn.Module):
    """A stand-in ischemic "network" whose answer is known: how much darker a crop is than its mirrored twin.

    Input: the ischemic chain's channels with contralateral crops, ``j * 2 + c`` (template slice ``j``, crop ``c``:
    0 the region, 1 its mirror image across the midline), windowed to [0, 1]. The logit is
    ``gain * (mean(contralateral - ipsilateral) - offset)``: positive when the region is darker than the same region
    on the other side, which is what an early infarct looks like. The difference goes through a 1x1 convolution
    named ``layer4`` so that Grad-CAM has a stage to read, exactly as on a real network.
    """

    def __init__(self, gain: float = 60.0, offset: float = 0.05) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(1, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.layer4.weight.fill_(1.0)
        self.gain, self.offset = float(gain), float(offset)
        self.last_difference: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ipsilateral, contralateral = x[:, 0::2].mean(1, keepdim=True), x[:, 1::2].mean(1, keepdim=True)
        difference = self.layer4(contralateral - ipsilateral).mean(dim=(2, 3))
        self.last_difference = difference.detach().reshape(-1)
        return self.gain * (difference - self.offset)
