"""Figure of the region crops of one synthetic patient: docs/figures/region_crops.png.

Run: ``python docs/figures/region_crops.py DATASET PATIENT REGION [OUT.png]`` (e.g. a ``monai-stroke synth`` folder,
a patient with an early ischemic lesion and its region). It runs the ``ischemic_regions`` chain's ``preprocess`` part
with the contralateral channels and region masks, and shows both hemispheres' crops of the region through the
early-ischemic window 40/20, middle template slice.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from monai_stroke.transforms import HUWindow, region_records  # noqa: E402
from monai_stroke.transforms.chains import load_chain  # noqa: E402


def main(dataset: str, patient: str, region: str, out: str = "docs/figures/region_crops.png") -> None:
    (record,) = [r for r in region_records(dataset) if r["patient_id"] == patient]
    chain = load_chain("ischemic_regions", "preprocess", contralateral=True, mask_key="mask", crop_size=[96, 96])
    samples = {s["side"]: s for s in chain(record) if s["region"] == region}
    window = HUWindow(40, 20)
    fig, axes = plt.subplots(1, 4, figsize=(8.0, 2.4), dpi=90)
    for col, (side, channel) in enumerate([("L", 0), ("L", 1), ("R", 0), ("R", 1)]):
        s = samples[side]
        target = s["target_slice"]
        image = np.asarray(window(s["image"][..., target]))[channel]
        mask = np.asarray(s["mask"][channel, ..., target])
        ax = axes[col]
        ax.imshow(image.T, cmap="gray", origin="lower", vmin=0, vmax=1)  # rows = y (posterior at the bottom)
        ax.contour(mask.T, levels=[0.5], colors="tab:orange", linewidths=0.8, origin="lower")
        what = "ipsilateral" if channel == 0 else "contralateral"
        flag = " (mirrored)" if s["image"].meta["mirrored"] else ""
        ax.set_title(f"{side} {region}{flag}\n{what}: {s['category'] if channel == 0 else s['contralateral_category']}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{patient}: region {region} crops, window 40/20, lateral -> medial left to right", fontsize=9)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
