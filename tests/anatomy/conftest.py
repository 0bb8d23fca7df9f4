"""Session fixtures: the template, tissue maps and default atlas are built once (into the suite's private cache)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_stroke.anatomy import Atlas, brain_mask, load_template, tissue_maps


@pytest.fixture(scope="session")
def template() -> nib.Nifti1Image:
    return load_template()


@pytest.fixture(scope="session")
def template_hu(template: nib.Nifti1Image) -> np.ndarray:
    return np.asarray(template.dataobj, dtype=np.float32)


@pytest.fixture(scope="session")
def tissues(template: nib.Nifti1Image) -> dict[str, np.ndarray]:
    maps = {name: np.asarray(image.dataobj) for name, image in tissue_maps().items()}
    maps["intracranial"] = np.asarray(brain_mask().dataobj).astype(bool)
    return maps


@pytest.fixture(scope="session")
def default_atlas(template: nib.Nifti1Image) -> Atlas:
    return Atlas.default()


@pytest.fixture(scope="session")
def exported_atlas_dir(default_atlas: Atlas, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default atlas written by the CLI (``monai-stroke atlas export``)."""
    from monai_stroke.cli import main

    out = tmp_path_factory.mktemp("export") / "atlas"
    assert main(["atlas", "export", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def masks_2mm(default_atlas: Atlas, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default atlas as a foreign mask folder: 2 mm, LAS, other names (see atlas_files), plus a stray file."""
    from atlas_files import write_masks_2mm_las

    folder = write_masks_2mm_las(default_atlas, tmp_path_factory.mktemp("foreign") / "masks")
    (folder / "notes.txt").write_text("not an image")
    return folder
