"""Look at an atlas: its regions drawn over axial slices of the CT template."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monai_stroke.anatomy.atlas import Atlas
from monai_stroke.errors import UserInputError
from monai_stroke.utils import atomic_path

__all__ = ["plot_atlas_slices"]

# one colour per region name (both sides share it), readable over a gray CT
_PALETTE = (
    "#1f77b4",  # C
    "#ff7f0e",  # L
    "#2ca02c",  # IC
    "#d62728",  # I
    "#9467bd",  # M1
    "#e377c2",  # M2
    "#17becf",  # M3
    "#f7d000",  # M4
    "#ff4500",  # M5
    "#7fff00",  # M6
)


def plot_atlas_slices(
    atlas: Atlas,
    path: str | os.PathLike,
    z_mm: Sequence[float] = (4.0, 33.0),
    window: tuple[float, float] = (40.0, 80.0),
    dpi: int = 80,
) -> Path:
    """Save a PNG of axial template slices with the atlas regions drawn over them (radiological view).

    Slices are shown as radiologists read CT: the patient's right on the image's left. Each region is
    filled and outlined in its colour and named at its centroid on that slice.

    Args:
        atlas: the atlas (and its template) to draw.
        path: the PNG to write (atomically).
        z_mm: world z (RAS mm) of the axial slices; the nearest template slice is drawn.
        window: display window (center, width) in HU.
        dpi: resolution of the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    affine = atlas.affine
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine)[:3])):
        raise UserInputError("plotting needs an axis-aligned template grid")
    hu = np.asarray(atlas.template_image.dataobj, dtype=np.float32)
    spacing, origin = np.diag(affine)[:3], affine[:3, 3]
    shape = atlas.labels.shape
    regions = list(dict.fromkeys(atlas.table["region"]))
    colour_of = {r: _PALETTE[n % len(_PALETTE)] for n, r in enumerate(regions)}
    # label value -> colour index (0 = transparent)
    lut = np.zeros(int(atlas.table["label"].max()) + 1, dtype=np.int16)
    for label, _, region in atlas.table.itertuples(index=False):
        lut[label] = regions.index(region) + 1
    cmap = ListedColormap([(0, 0, 0, 0)] + [colour_of[r] for r in regions])

    x_mm = origin[0] + spacing[0] * np.arange(shape[0])
    y_mm = origin[1] + spacing[1] * np.arange(shape[1])
    # radiological convention: patient's right (x > 0) on the left of the image
    extent = [x_mm.max(), x_mm.min(), y_mm.min(), y_mm.max()]
    fig, axes = plt.subplots(1, len(z_mm), figsize=(4.2 * len(z_mm), 5.0), squeeze=False)
    low, high = window[0] - window[1] / 2, window[0] + window[1] / 2
    for ax, z in zip(axes[0], z_mm, strict=True):
        k = int(round((z - origin[2]) / spacing[2]))
        if not 0 <= k < shape[2]:
            raise UserInputError(
                f"z = {z} mm is outside the template ({origin[2]:g} to {origin[2] + spacing[2] * (shape[2] - 1):g})"
            )
        ax.imshow(hu[:, :, k].T, origin="lower", cmap="gray", vmin=low, vmax=high, extent=extent)
        slice_labels = atlas.labels[:, :, k]
        colour_index = lut[np.clip(slice_labels, 0, len(lut) - 1)]
        ax.imshow(
            np.ma.masked_equal(colour_index.T, 0),
            origin="lower",
            cmap=cmap,
            vmin=0,
            vmax=len(regions),
            alpha=0.45,
            extent=extent,
            interpolation="nearest",
        )
        for label, _side, region in atlas.table.itertuples(index=False):
            mask = slice_labels == label
            if not mask.any():
                continue
            ax.contour(x_mm, y_mm, mask.T.astype(float), levels=[0.5], colors=[colour_of[region]], linewidths=0.8)
            ii, jj = np.nonzero(mask)
            ax.text(
                x_mm[ii].mean(),
                y_mm[jj].mean(),
                region,
                color="white",
                fontsize=7,
                ha="center",
                va="center",
                weight="bold",
            )
        ax.set_title(f"z = {origin[2] + spacing[2] * k:g} mm", fontsize=9)
        ax.text(0.02, 0.02, "R", transform=ax.transAxes, color="white", fontsize=9)
        ax.text(0.95, 0.02, "L", transform=ax.transAxes, color="white", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
