"""Import of published atlases: mask folders and label maps on other grids, with other names, onto the template."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from atlas_files import FOREIGN_MAP, write_masks_same_lattice

from monai_stroke.anatomy import Atlas
from monai_stroke.anatomy.atlas_import import (
    RegionTarget,
    compile_pattern,
    import_atlas,
    parse_mapping,
    resample_to_grid,
)
from monai_stroke.errors import UserInputError


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_mask_folder_2mm_las_other_names(default_atlas: Atlas, masks_2mm: Path) -> None:
    atlas, report = import_atlas(
        masks_2mm, mapping=parse_mapping([FOREIGN_MAP]), pattern="MNI152_{region}_{side}.nii.gz"
    )
    assert atlas.regions == default_atlas.regions
    for side, region in default_atlas.regions:
        # the insular cortex named "IC" must land on our I, not on the internal capsule
        assert _dice(atlas.region_mask(side, region), default_atlas.region_mask(side, region)) > 0.9, (side, region)
    assert report.layout == "masks" and not report.missing
    assert {s["name"] for s in report.sources} >= {"IC", "PLIC", "caudate", "lentiform"}
    # where interpolated neighbours meet, the larger value won and the overlap was reported
    assert all(o["voxels"] == sum(v for k, v in o.items() if k.startswith("to ")) for o in report.overlaps)


def test_mask_folder_same_lattice_is_exact(default_atlas: Atlas, tmp_path: Path) -> None:
    folder = write_masks_same_lattice(default_atlas, tmp_path / "masks")
    atlas, report = import_atlas(folder)
    assert np.array_equal(atlas.labels, default_atlas.labels)
    assert atlas.identity == default_atlas.identity
    assert report.overlaps == [] and report.ignored_files == []


def test_label_map_with_side_region_table(default_atlas: Atlas, tmp_path: Path) -> None:
    # other label numbers, shuffled rows, side words, an extra structure to drop, a value without a row
    renumber = {label: 100 + 7 * label for label in default_atlas.table["label"]}
    data = np.zeros(default_atlas.labels.shape, dtype=np.int16)
    for old, new in renumber.items():
        data[default_atlas.labels == old] = new
    data[98, 100:104, 80] = 5  # thalamus-like structure in the table, dropped by the mapping
    data[98, 104:106, 80] = 77  # a value with no row
    nib.save(nib.Nifti1Image(data, default_atlas.affine), tmp_path / "labels.nii")
    rows = [
        {"region": region, "label": renumber[label], "side": {"L": "left", "R": "Right"}[side]}
        for label, side, region in default_atlas.table.itertuples(index=False)
    ]
    rows.append({"region": "Thalamus", "label": 5, "side": "L"})
    pd.DataFrame(rows).sample(frac=1.0, random_state=0).to_csv(tmp_path / "table.csv", index=False)
    atlas, report = import_atlas(
        tmp_path / "labels.nii", table=tmp_path / "table.csv", mapping=parse_mapping(["Thalamus=-"])
    )
    assert np.array_equal(atlas.labels, default_atlas.labels)
    assert atlas.identity == default_atlas.identity
    assert report.unlabelled_values == [77] and report.dropped == ["label 5 (Thalamus)"]


def test_label_map_with_name_table_pattern_and_bilateral_label(default_atlas: Atlas, tmp_path: Path) -> None:
    """``label,name`` table: names carry the side ("M1_R"), except a caudate label covering both hemispheres."""
    data = np.array(default_atlas.labels, dtype=np.int32)
    caudates = (data == default_atlas.label_of("L", "C")) | (data == default_atlas.label_of("R", "C"))
    data[caudates] = 1000
    rows = [{"label": 1000, "name": "Caudate"}] + [
        {"label": label, "name": f"{region}_{side}"}
        for label, side, region in default_atlas.table.itertuples(index=False)
        if region != "C"
    ]
    # a 2 mm shift of the origin with the same shift of the data: same world positions, another grid origin
    padded = np.pad(data, ((2, 0), (0, 0), (0, 0)))
    affine = default_atlas.affine.copy()
    affine[0, 3] -= 2
    nib.save(nib.Nifti1Image(padded, affine), tmp_path / "labels.nii")
    pd.DataFrame(rows).to_csv(tmp_path / "names.csv", index=False)
    atlas, report = import_atlas(
        tmp_path / "labels.nii",
        table=tmp_path / "names.csv",
        mapping=parse_mapping(["Caudate=C"]),
        pattern="{region}_{side}",
    )
    assert np.array_equal(atlas.labels, default_atlas.labels)
    assert [s["side"] for s in report.sources if s["name"] == "Caudate"] == ["split at x=0"]


def test_overlapping_masks_go_to_the_larger_value(default_atlas: Atlas, tmp_path: Path) -> None:
    folder = write_masks_same_lattice(default_atlas, tmp_path / "masks", regions=("C", "L"))
    # widen the right caudate into the lentiform nucleus at a lower value than the lentiform's own mask
    caudate_file, lentiform_file = folder / "C_R.nii.gz", folder / "L_R.nii.gz"
    both = default_atlas.region_mask("R", "C") | default_atlas.region_mask("R", "L")
    box = tuple(slice(a.min() - 1, a.max() + 2) for a in np.nonzero(both))
    affine = default_atlas.affine.copy()
    affine[:3, 3] = nib.affines.apply_affine(default_atlas.affine, [s.start for s in box])
    # masks are scaled by their maximum: the caudate's own voxels 0.9 -> 1.0, its spill 0.6 -> 0.67 < 1.0
    spill = np.where(default_atlas.region_mask("R", "C"), 0.9, 0.6) * both
    nib.save(nib.Nifti1Image(spill[box].astype(np.float32), affine), caudate_file)
    nib.save(nib.Nifti1Image(default_atlas.region_mask("R", "L")[box].astype(np.float32), affine), lentiform_file)
    atlas, report = import_atlas(folder, allow_missing=True)
    assert np.array_equal(atlas.region_mask("R", "L"), default_atlas.region_mask("R", "L"))
    assert np.array_equal(atlas.region_mask("R", "C"), default_atlas.region_mask("R", "C"))
    lentiform_voxels = int(default_atlas.region_mask("R", "L").sum())
    assert report.overlaps == [
        {"regions": ["R C", "R L"], "voxels": lentiform_voxels, "to R C": 0, "to R L": lentiform_voxels}
    ]
    assert len(report.missing) == 16 and "L M1" in report.missing


def test_missing_regions_are_listed(default_atlas: Atlas, tmp_path: Path) -> None:
    folder = write_masks_same_lattice(default_atlas, tmp_path / "masks", regions=("C", "I"))
    with pytest.raises(UserInputError, match=r"lacks region\(s\): L L, L IC, L M1.*--allow-missing"):
        import_atlas(folder)
    atlas, report = import_atlas(folder, allow_missing=True)
    assert atlas.regions == [("L", "C"), ("L", "I"), ("R", "C"), ("R", "I")]
    assert report.warnings and "lacks" in report.warnings[-1]


def test_side_swapped_in_names_is_rejected(default_atlas: Atlas, tmp_path: Path) -> None:
    folder = write_masks_same_lattice(default_atlas, tmp_path / "masks", regions=("M2",))
    (folder / "M2_L.nii.gz").rename(folder / "tmp.nii.gz")
    (folder / "M2_R.nii.gz").rename(folder / "M2_L.nii.gz")
    (folder / "tmp.nii.gz").rename(folder / "M2_R.nii.gz")
    with pytest.raises(UserInputError, match=r"L M2 \(centroid x = \+56\.\d mm\).*other side"):
        import_atlas(folder, allow_missing=True)


@pytest.mark.parametrize(
    "specs, expected",
    [
        (["IC=I,PLIC=IC"], {"IC": RegionTarget("I"), "PLIC": RegionTarget("IC")}),
        (["Caudate_left=C:L", "Thalamus=-"], {"Caudate_left": RegionTarget("C", "L"), "Thalamus": None}),
        ([" putamen = L , pallidum=L "], {"putamen": RegionTarget("L"), "pallidum": RegionTarget("L")}),
    ],
)
def test_parse_mapping(specs: list[str], expected: dict) -> None:
    assert parse_mapping(specs) == expected


@pytest.mark.parametrize("suffix", [".csv", ".yaml", ".json"])
def test_parse_mapping_files(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"map{suffix}"
    if suffix == ".csv":
        path.write_text("name,region,side\nIC,I,\nCaudate_left,C,left\nThalamus,-,\n")
    elif suffix == ".yaml":
        path.write_text("IC: I\nCaudate_left: 'C:left'\nThalamus: '-'\n")
    else:
        path.write_text('{"IC": "I", "Caudate_left": "C:L", "Thalamus": "-"}')
    assert parse_mapping([str(path)]) == {
        "IC": RegionTarget("I"),
        "Caudate_left": RegionTarget("C", "L"),
        "Thalamus": None,
    }


@pytest.mark.parametrize(
    "spec, message",
    [
        ("IC=XYZ", r"unknown region name 'XYZ'"),
        ("IC", r"must look like NAME=REGION"),
        ("IC=I:Q", r"unknown side 'Q'"),
        ("IC=I,IC=L", r"maps 'IC' twice"),
        ("missing.csv", r"mapping file missing.csv does not exist"),
    ],
)
def test_parse_mapping_errors(spec: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_mapping([spec])


@pytest.mark.parametrize(
    "pattern, name, region, side",
    [
        ("MNI152_{region}_{side}.nii.gz", "MNI152_M1_left.nii.gz", "M1", "left"),
        ("MNI152_{region}_{side}.nii.gz", "MNI152_Lentiform_Nucleus_RH.nii.gz", "Lentiform_Nucleus", "RH"),
        ("{region}_{side}.nii*", "C_R.nii", "C", "R"),
        ("*{side}-{region}.nii.gz", "atlas-l-IC.nii.gz", "IC", "l"),
        ("MNI152_{region}_{side}.nii.gz", "MNI152_M1_left.nii", None, None),
    ],
)
def test_compile_pattern(pattern: str, name: str, region: str | None, side: str | None) -> None:
    match = compile_pattern(pattern).match(name)
    if region is None:
        assert match is None
    else:
        assert (match.group("region"), match.group("side")) == (region, side)


def test_pattern_needs_region() -> None:
    with pytest.raises(UserInputError, match=r"needs a \{region\} placeholder"):
        compile_pattern("{side}.nii.gz")


@pytest.mark.parametrize("order", [0, 1])
def test_resample_through_world_coordinates(order: int) -> None:
    """A voxel of a flipped (LAS) 2 mm image lands at the same world position on a 1 mm RAS grid."""
    source = np.zeros((10, 10, 10), dtype=np.float32 if order else np.int16)
    source[3, 4, 5] = 7
    source_affine = np.array([[-2.0, 0, 0, 10], [0, 2, 0, -10], [0, 0, 2, 0], [0, 0, 0, 1]])
    world = nib.affines.apply_affine(source_affine, [3, 4, 5])  # (4, -2, 10)
    target_affine = np.array([[1.0, 0, 0, -20], [0, 1, 0, -20], [0, 0, 1, -5], [0, 0, 0, 1]])
    out = resample_to_grid(source, source_affine, (40, 40, 30), target_affine, order=order)
    at_world = tuple(np.round(nib.affines.apply_affine(np.linalg.inv(target_affine), world)).astype(int))
    assert out[at_world] == 7 and out.max() == 7
    # nothing lands farther than one source voxel (2 mm) from the world position
    far = np.argwhere(out > 0)
    assert np.all(np.abs(nib.affines.apply_affine(target_affine, far) - world) < 2.0)
    if order == 0:
        assert set(np.unique(out)) == {0, 7}


def test_source_errors(default_atlas: Atlas, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        import_atlas(tmp_path / "nowhere")
    nib.save(nib.Nifti1Image(np.asarray(default_atlas.labels), default_atlas.affine), tmp_path / "labels.nii.gz")
    with pytest.raises(UserInputError, match="give its table with --table"):
        import_atlas(tmp_path / "labels.nii.gz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match="holds no .nii or .nii.gz files"):
        import_atlas(empty)
    (empty / "brain.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(UserInputError, match="no file in .* matches --pattern"):
        import_atlas(empty)
    folder = write_masks_same_lattice(default_atlas, tmp_path / "masks", regions=("C",))
    with pytest.raises(UserInputError, match=r"the mapping names 'Insla', which .* does not have"):
        import_atlas(folder, mapping={"Insla": RegionTarget("I")}, allow_missing=True)
    (folder / "Putamen_L.nii.gz").write_bytes((folder / "C_L.nii.gz").read_bytes())
    with pytest.raises(UserInputError, match=r"region\(s\) 'Putamen' that are not atlas regions.*--map Putamen="):
        import_atlas(folder, allow_missing=True)
