"""monai_stroke.io: a head CT (DICOM folder or NIfTI file) -> HU volume with true geometry (docs/ARCHITECTURE.md).

``load_ct_series`` returns a :class:`CTVolume`; ``save_nifti`` writes it atomically; ``LoadCTSeries`` /
``LoadCTSeriesd`` are the MONAI transforms. The transforms import torch and MONAI, so they load on first use:
``monai-stroke ingest`` does not pay for them.
"""

from __future__ import annotations

from typing import Any

from monai_stroke.io.geometry import LPS_TO_RAS, position_along_normal, slice_normal
from monai_stroke.io.volume import AIR_HU, CTVolume, load_ct_series, save_nifti

__all__ = [
    "AIR_HU",
    "CTVolume",
    "load_ct_series",
    "save_nifti",
    "LoadCTSeries",
    "LoadCTSeriesd",
    "LoadCTSeriesD",
    "LoadCTSeriesDict",
    "volume_to_metatensor",
    "slice_normal",
    "position_along_normal",
    "LPS_TO_RAS",
]

_LAZY = ("LoadCTSeries", "LoadCTSeriesd", "LoadCTSeriesD", "LoadCTSeriesDict", "volume_to_metatensor")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from monai_stroke.io import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
