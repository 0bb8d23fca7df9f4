"""The CT brain template: grid, HU of each tissue, skull/scalp layering, tissue maps, cache and determinism."""

from __future__ import annotations

import threading

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from monai_stroke.anatomy import Atlas, image_identity, load_template, template_identity
from monai_stroke.anatomy import template as template_module
from monai_stroke.errors import UserInputError

MNI_2009_AFFINE = np.array([[1, 0, 0, -98], [0, 1, 0, -134], [0, 0, 1, -72], [0, 0, 0, 1]], dtype=float)


def _index(point_mm) -> tuple[int, int, int]:
    return tuple(int(round(v)) for v in np.asarray(point_mm, dtype=float) - MNI_2009_AFFINE[:3, 3])


def _ray(hu: np.ndarray, direction, start=(0.0, -18.0, 15.0)) -> np.ndarray:
    """HU sampled every 1 mm from ``start`` outwards to the edge of the grid."""
    direction = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    values = []
    for step in range(300):
        index = np.round(np.asarray(start) + step * direction - MNI_2009_AFFINE[:3, 3]).astype(int)
        if np.any(index < 0) or np.any(index >= hu.shape):
            break
        values.append(hu[tuple(index)])
    return np.asarray(values)


def test_grid_dtype_and_read_only(template: nib.Nifti1Image, template_hu: np.ndarray) -> None:
    assert template.shape == (197, 233, 189)
    np.testing.assert_allclose(template.affine, MNI_2009_AFFINE)
    assert template_hu.dtype == np.float32
    with pytest.raises(ValueError):
        np.asarray(template.dataobj)[0, 0, 0] = 0.0  # shared cached array: read-only on purpose
    assert template_hu[0, 0, 0] == pytest.approx(-1000.0)  # air in the corners
    assert template_hu.min() >= -1000.0 and template_hu.max() <= 2000.0


@pytest.mark.parametrize(
    "tissue, low, high",
    [("gm", 37.0, 45.0), ("wm", 20.0, 30.0)],
)
def test_parenchyma_hu(template_hu: np.ndarray, tissues: dict, tissue: str, low: float, high: float) -> None:
    values = template_hu[tissues[tissue] >= 0.95]
    assert values.size > 10_000
    assert low <= values.mean() <= high
    assert np.percentile(values, 5) >= low - 3 and np.percentile(values, 95) <= high + 3


def test_gray_white_difference(template_hu: np.ndarray, tissues: dict) -> None:
    difference = template_hu[tissues["gm"] >= 0.95].mean() - template_hu[tissues["wm"] >= 0.95].mean()
    assert 6.0 <= difference <= 10.0  # ~7 HU on real CT


def test_csf_spaces_hu(template_hu: np.ndarray, tissues: dict) -> None:
    # ventricles and cisterns: CSF away from the inner table (where bone partial volume belongs)
    # the central block (-40..40, -60..40, -20..40 mm) holds the ventricles and basal cisterns, far from the skull
    box = tuple(slice(a, b + 1) for a, b in zip(_index((-40, -60, -20)), _index((40, 40, 40)), strict=True))
    deep_csf = tissues["csf"][box] >= 0.95
    assert deep_csf.sum() > 5_000
    assert 0.0 <= template_hu[box][deep_csf].mean() <= 15.0
    # the frontal horn of the right lateral ventricle is CSF dense
    assert 0.0 <= template_hu[_index((4, 12, 10))] <= 15.0


def test_skull_and_scalp_layers(template_hu: np.ndarray) -> None:
    vertex = _ray(template_hu, (0, 0, 1))
    lateral = _ray(template_hu, (1, 0, -0.2))
    for profile in (vertex, lateral, _ray(template_hu, (0, 1, 0)), _ray(template_hu, (0, -1, 0))):
        bone = np.nonzero(profile > 1000)[0]
        assert bone.size, "no cortical bone along a ray from the head centre"
        inside, outside = profile[: bone[0]], profile[bone[-1] + 1 :]
        assert 1000 <= profile.max() <= 2000
        # brain/CSF inside the skull (partial volume with the inner table allowed in the last 2 mm)
        assert np.all((inside[:-2] >= -5) & (inside[:-2] <= 60))
        # scalp soft tissue, a fat layer, then air to the edge of the grid
        assert np.any((outside >= 30) & (outside <= 50))
        assert np.any(outside <= -60) and outside.min() >= -1000
        assert np.all(outside[-5:] == -1000)
    # diploe between the two cortical tables at the vertex
    shell = vertex[np.nonzero(vertex > 150)[0][0] : np.nonzero(vertex > 150)[0][-1] + 1]
    assert 200 <= shell.min() <= 400
    # the temporal squama is thinner than the vertex
    assert (lateral > 500).sum() < (vertex > 500).sum()


def test_brain_mask_and_tissue_maps(tissues: dict) -> None:
    inside = tissues["intracranial"]
    assert 1.5e6 <= inside.sum() <= 2.3e6  # 1.5-2.3 L of intracranial volume
    assert not inside[0, 0, 0]
    total = tissues["gm"] + tissues["wm"] + tissues["csf"]
    np.testing.assert_allclose(total[inside], 1.0, atol=1e-5)
    for name in ("gm", "wm", "csf"):
        assert tissues[name].min() >= 0 and tissues[name].max() <= 1
        assert not tissues[name][~inside].any()
    # all parenchyma is inside the mask and the mask is one piece without holes
    assert ndimage.label(inside)[1] == 1
    assert np.array_equal(ndimage.binary_fill_holes(inside), inside)


def test_identity_matches_the_image(template: nib.Nifti1Image) -> None:
    assert template_identity() == image_identity(template)
    assert len(template_identity()) == 64


def test_rebuild_is_deterministic(template_hu: np.ndarray, tissues: dict, default_atlas: Atlas) -> None:
    """Building again from the nilearn maps gives bit-identical template, mask and atlas labels."""
    from monai_stroke.anatomy.default_atlas import build_default_labels

    files = template_module._input_files()
    hu, affine, intracranial = template_module._build(files, template_module.TEMPLATE_HU)
    np.testing.assert_array_equal(hu, template_hu)
    np.testing.assert_array_equal(intracranial, tissues["intracranial"])
    labels, rows = build_default_labels(tissues["gm"], tissues["wm"], tissues["csf"], affine)
    np.testing.assert_array_equal(labels, default_atlas.labels)
    assert rows == list(default_atlas.table.itertuples(index=False, name=None))


def test_complete_cache_is_reused_without_building(tmp_path, monkeypatch) -> None:
    import shutil

    expected = template_identity()
    session_folder = template_module.template_cache_dir()
    monkeypatch.setenv("MONAI_STROKE_CACHE", str(tmp_path))
    folder = template_module.template_cache_dir()
    assert folder.parent == tmp_path / "anatomy" and folder.name == session_folder.name
    shutil.copytree(session_folder, folder)

    def no_build(*_):
        raise AssertionError("rebuilt although the cache was complete")

    monkeypatch.setattr(template_module, "_build", no_build)
    assert template_identity() == expected


def test_missing_nilearn_data_is_a_user_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(template_module, "nilearn_data_dir", lambda: tmp_path)
    with pytest.raises(UserInputError, match=r"mni_icbm152_gm_tal_nlin_sym_09a_converted\.nii\.gz.*reinstall nilearn"):
        load_template()


def _fake_build(calls: list, delay: float = 0.0):
    def build(files, hu):
        import time

        calls.append(1)
        time.sleep(delay)
        data = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
        return data, np.eye(4), data > 10

    return build


def test_concurrent_first_use_builds_once(tmp_path, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setenv("MONAI_STROKE_CACHE", str(tmp_path))
    monkeypatch.setattr(template_module, "_build", _fake_build(calls, delay=0.5))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(template_identity())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3
    folder = template_module.template_cache_dir()
    assert sorted(p.name for p in folder.iterdir()) == ["brain_mask.nii.gz", "manifest.json", "template.nii.gz"]
    assert not [p for p in folder.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch) -> None:
    calls: list = []
    monkeypatch.setenv("MONAI_STROKE_CACHE", str(tmp_path))
    monkeypatch.setattr(template_module, "_build", _fake_build(calls))
    first = template_identity()
    folder = template_module.template_cache_dir()
    template_module._memo.pop(str(folder))
    (folder / "template.nii.gz").write_bytes(b"truncated")
    assert template_identity() == first
    assert len(calls) == 2
