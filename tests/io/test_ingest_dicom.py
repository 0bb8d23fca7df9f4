"""DICOM ingest on messy folders: HU, padding, RSNA wrap, series choice, skipped objects, duplicates, gaps,
compression, header warnings - with generated series and pydicom's own sample files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from dicom_factory import (
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    head_phantom,
    linear_phantom,
    make_ct_dataset,
    write_ct_series,
    write_dataset,
    write_localizer,
    write_other_modality,
    write_presentation_state,
)
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, RLELossless, generate_uid

from monai_stroke.errors import MissingDependencyError, UserInputError
from monai_stroke.io import AIR_HU, load_ct_series
from monai_stroke.io.dicom import stored_to_hu


def _zyx(volume) -> np.ndarray:
    """The output as (Z, rows, columns), the layout the factory's expected HU uses."""
    return volume.array.transpose(2, 1, 0)


# --- HU --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "slope, intercept, pixel_representation",
    [(1.0, -1024.0, 1), (1.0, -1024.0, 0), (2.0, -1000.0, 0), (0.5, -1024.0, 1), (1.0, -8192.0, 0)],
)
def test_hu_is_stored_times_slope_plus_intercept(tmp_path, slope, intercept, pixel_representation) -> None:
    written = write_ct_series(
        tmp_path, phantom=head_phantom(), slope=slope, intercept=intercept, pixel_representation=pixel_representation
    )
    volume = load_ct_series(tmp_path)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(_zyx(volume), written.hu)
    # and the HU are the phantom's: air, brain, bone
    assert volume.summary["hu_min"] == pytest.approx(-1000, abs=1)
    assert volume.summary["hu_max"] == pytest.approx(1000, abs=1)


def test_hu_of_a_real_ct_file_matches_pydicom(tmp_path) -> None:
    """pydicom's CT_small.dcm (a real scanner file, signed, intercept -1024) copied into a 3-slice series."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = generate_uid()
    for k in range(3):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = position[:2] + [position[2] + 5.0 * k]
        ds.save_as(tmp_path / f"ct{k}.dcm")
    volume = load_ct_series(tmp_path)
    expected = source.pixel_array * float(source.RescaleSlope) + float(source.RescaleIntercept)
    for k in range(3):
        np.testing.assert_array_equal(volume.array[:, :, k], expected.T)


@pytest.mark.parametrize("padding_vr", ["SS", "US"], ids=["padding-SS", "padding-US-with-signed-pixels"])
def test_pixel_padding_value_becomes_air(tmp_path, padding_vr) -> None:
    written = write_ct_series(tmp_path, phantom=head_phantom(), padding_value=-2000)
    if padding_vr == "US":
        # some writers store -2000 as US 63536 for signed pixels: the padding is still -2000
        for file in written.files:
            ds = pydicom.dcmread(file)
            del ds.PixelPaddingValue
            ds.add_new(0x00280120, "US", 63536)
            ds.save_as(file)
    volume = load_ct_series(tmp_path)
    padded = np.isnan(written.hu)
    assert padded.any() and (~padded).any()
    assert np.all(_zyx(volume)[padded] == AIR_HU)
    np.testing.assert_array_equal(_zyx(volume)[~padded], written.hu[~padded])
    assert volume.summary["padding_pixels"] == int(padded.sum())
    assert volume.summary["hu_min"] == AIR_HU  # -2000 + intercept never appears


@pytest.mark.parametrize(
    "padding, expected",
    [((0.0, 0.0), [AIR_HU, -1023, -1022, -1021]), ((0.0, 2.0), [AIR_HU, AIR_HU, AIR_HU, -1021])],
    ids=["value", "range-limit"],
)
def test_stored_to_hu_padding_value_and_range(padding, expected) -> None:
    stored = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    out = np.empty(stored.shape, np.float32)
    stored_to_hu(stored, 1.0, -1024.0, padding=padding, out=out)
    np.testing.assert_array_equal(out[0], expected)


@pytest.mark.parametrize(
    "stored, intercept, expected",
    [
        (3072, 0.0, -1024.0),  # air, wrapped into 12 bits
        (3096, 0.0, -1000.0),
        (4095, 0.0, -1.0),
        (40, 0.0, 40.0),
        (2047, 0.0, 2047.0),
        (2048, 0.0, -2048.0),
        (3072, -1024.0, 2048.0),  # an ordinary unsigned file (intercept -1024): no wrap
    ],
)
def test_rsna_12_bit_wrap(stored, intercept, expected) -> None:
    out = np.empty((1, 1), np.float32)
    wrapped, _ = stored_to_hu(np.array([[stored]], np.uint16), 1.0, intercept, bits_stored=12, out=out)
    assert out[0, 0] == expected
    assert wrapped == (intercept > -100)


def test_rsna_wrap_agrees_with_the_rsna_solutions_on_their_range() -> None:
    hu = np.arange(-1000, 2048)
    stored = (hu % 4096).astype(np.uint16)[None]
    out = np.empty(stored.shape, np.float32)
    stored_to_hu(stored, 1.0, 0.0, bits_stored=12, pixel_representation=0, out=out)
    # the top RSNA kernels: add 1000, subtract 4096 from values >= 4096, intercept -1000
    rsna = stored.astype(np.int64) + 1000
    rsna[rsna >= 4096] -= 4096
    np.testing.assert_array_equal(out, rsna - 1000)
    np.testing.assert_array_equal(out[0], hu)


def test_rsna_wrapped_series_reads_as_true_hu(tmp_path) -> None:
    written = write_ct_series(tmp_path, phantom=head_phantom(), rsna_wrap=True)
    volume = load_ct_series(tmp_path)
    np.testing.assert_array_equal(_zyx(volume), written.hu)
    assert volume.summary["hu_min"] == -1000 and volume.summary["rsna_wrap_corrected_slices"] == 12
    assert any("12-bit wrap" in w for w in volume.summary["warnings"])


# --- choosing the series, skipping what is not a slice ------------------------------------------------------------


def test_two_axial_series_need_series_uid(tmp_path) -> None:
    a = write_ct_series(tmp_path / "a", n_slices=12)
    b = write_ct_series(tmp_path / "b", n_slices=8, slice_step_mm=2.5)
    with pytest.raises(UserInputError) as info:
        load_ct_series(tmp_path)
    message = str(info.value)
    assert a.series_uid in message and b.series_uid in message
    assert "12 slices" in message and "8 slices" in message and "--series" in message
    volume = load_ct_series(tmp_path, series_uid=b.series_uid)
    assert volume.summary["series_uid"] == b.series_uid and volume.array.shape[2] == 8
    assert any("ignored 1 other image series" in w for w in volume.summary["warnings"])
    # a file path chooses its own series
    assert load_ct_series(a.files[3]).summary["series_uid"] == a.series_uid


def test_unknown_series_uid_lists_the_series_found(tmp_path) -> None:
    a = write_ct_series(tmp_path)
    with pytest.raises(UserInputError, match=rf"1\.2\.3\.4 is not an image series.*{a.series_uid}.*--series"):
        load_ct_series(tmp_path, series_uid="1.2.3.4")


def test_non_images_and_localizers_are_skipped(tmp_path) -> None:
    written = write_ct_series(tmp_path / "ct", phantom=head_phantom())
    write_localizer(tmp_path / "ct" / "scout_same_series.dcm", series_uid=written.series_uid)
    write_localizer(tmp_path / "scout" / "scout.dcm")
    shutil.copy(get_testdata_file("rtstruct.dcm"), tmp_path / "rtstruct.dcm")  # real file, no preamble
    shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "report.dcm")
    write_presentation_state(tmp_path / "gsps.dcm")
    volume = load_ct_series(tmp_path)
    assert volume.summary["series_uid"] == written.series_uid
    np.testing.assert_array_equal(_zyx(volume), written.hu)
    skipped = volume.summary["skipped"]
    assert skipped["localizer"] == 2
    assert skipped["non_image"] == {"PR": 1, "RTSTRUCT": 1, "SR": 1}


def test_other_modalities_are_ignored_next_to_a_ct_series(tmp_path) -> None:
    written = write_ct_series(tmp_path / "ct")
    write_other_modality(tmp_path / "mr", "MR", n=3)
    volume = load_ct_series(tmp_path)
    assert volume.summary["series_uid"] == written.series_uid


def test_non_axial_series_is_refused_unless_named(tmp_path) -> None:
    coronal = write_ct_series(tmp_path, orientation=(1, 0, 0, 0, 0, -1))
    with pytest.raises(UserInputError, match="not axial"):
        load_ct_series(tmp_path)
    volume = load_ct_series(tmp_path, series_uid=coronal.series_uid)
    assert volume.summary["orientation"] == "LIP"  # rows run left, columns down, slices step posterior
    assert any("not axial" in w for w in volume.summary["warnings"])


# --- duplicates, gaps ---------------------------------------------------------------------------------------------


def test_identical_duplicates_are_dropped(tmp_path) -> None:
    written = write_ct_series(tmp_path)
    shutil.copy(written.files[3], tmp_path / "copy_of_slice_3.dcm")
    volume = load_ct_series(tmp_path)
    assert volume.array.shape[2] == 12 and volume.summary["duplicates_dropped"] == 1
    np.testing.assert_array_equal(_zyx(volume), written.hu)
    assert any("duplicate" in w for w in volume.summary["warnings"])


def test_conflicting_duplicates_are_an_error(tmp_path) -> None:
    written = write_ct_series(tmp_path)
    ds = pydicom.dcmread(written.files[3])
    ds.SOPInstanceUID = generate_uid()
    ds.PixelData = (ds.pixel_array + 7).astype(ds.pixel_array.dtype).tobytes()
    write_dataset(ds, tmp_path / "other_slice_3.dcm")
    with pytest.raises(UserInputError, match=rf"conflicting duplicate.*{written.files[3].name}.*other_slice_3\.dcm"):
        load_ct_series(tmp_path)


def test_missing_slice_is_an_error_naming_where(tmp_path) -> None:
    written = write_ct_series(tmp_path, skip=[6], n_slices=12, slice_step_mm=5.0)
    with pytest.raises(UserInputError) as info:
        load_ct_series(tmp_path)
    message = str(info.value)
    assert "1 missing slice" in message and "--allow-gaps" in message
    assert written.files[5].name in message and written.files[6].name in message  # the neighbours of the gap
    assert "step 10.00 mm vs 5.00 mm" in message


def test_uneven_spacing_is_an_error_even_with_allow_gaps(tmp_path) -> None:
    written = write_ct_series(tmp_path)
    ds = pydicom.dcmread(written.files[6])
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z + 2.0]
    ds.save_as(written.files[6])
    with pytest.raises(UserInputError, match=r"uneven slice spacing.*step 7\.00 mm vs 5\.00 mm"):
        load_ct_series(tmp_path, allow_gaps=True)


# --- compression ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLosslessSV1], ids=["rle", "j2k", "jpeg-ll"])
def test_compressed_series_decode_to_the_same_hu(tmp_path, syntax) -> None:
    options = dict(phantom=head_phantom(), pixel_representation=0, bits_stored=12, tilt_deg=15.0)
    plain = load_ct_series(write_ct_series(tmp_path / "plain", **options).files[0].parent)
    written = write_ct_series(tmp_path / "compressed", transfer_syntax=syntax, **options)
    assert pydicom.dcmread(written.files[0]).file_meta.TransferSyntaxUID == syntax
    volume = load_ct_series(tmp_path / "compressed")
    np.testing.assert_array_equal(volume.array, plain.array)
    assert volume.summary["transfer_syntaxes"] == [syntax.name]


@pytest.mark.parametrize("sample", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_pydicom_compressed_samples_decode(tmp_path, sample) -> None:
    """Codestreams written by other encoders (pydicom's samples), relabelled as a CT series of 2 slices."""
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    series_uid = generate_uid()
    for k in range(2):
        ds = pydicom.dcmread(get_testdata_file(sample))
        ds.Modality, ds.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.ImagePositionPatient = [0.0, 0.0, 3.0 * k]
        ds.save_as(tmp_path / f"s{k}.dcm")
    volume = load_ct_series(tmp_path)
    np.testing.assert_array_equal(volume.array[:, :, 1], (reference - 1024.0).T)


@pytest.mark.parametrize(
    "syntax, package", [(JPEG2000Lossless, "pylibjpeg-openjpeg"), (JPEGLosslessSV1, "pylibjpeg-libjpeg")]
)
def test_missing_decoder_names_the_package(tmp_path, monkeypatch, syntax, package) -> None:
    from pydicom.pixels import get_decoder

    write_ct_series(tmp_path, transfer_syntax=syntax, pixel_representation=0, bits_stored=12)
    decoder = get_decoder(syntax)
    # simulate an install without the plugins: pydicom then has no available decoder for this syntax
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", f"{package}>=2.0")})
    with pytest.raises(MissingDependencyError, match=rf"pip install .*{package}"):
        load_ct_series(tmp_path)


# --- header warnings and what never appears --------------------------------------------------------------------------


def test_multivalued_window_and_invalid_uids_are_warnings(tmp_path) -> None:
    written = write_ct_series(
        tmp_path, series_uid="1.2.3.04.5", study_uid="1.2.3.abc", WindowCenter=[40, 400], WindowWidth=[80, 2000]
    )
    volume = load_ct_series(tmp_path)
    np.testing.assert_array_equal(_zyx(volume), written.hu)
    warnings = "\n".join(volume.summary["warnings"])
    assert "WindowCenter has 2 values [40.0, 400.0]" in warnings and "WindowWidth has 2 values" in warnings
    assert "SeriesInstanceUID '1.2.3.04.5' is not a valid DICOM UID (12 of 12 files)" in warnings
    assert "StudyInstanceUID '1.2.3.abc' is not a valid DICOM UID" in warnings
    assert "pydicom: invalid value for VR UI: '1.2.3.04.5' (and 1 other value)" in warnings  # pydicom's, captured
    assert volume.summary["window_center"] == 40.0 and volume.summary["series_uid"] == "1.2.3.04.5"


def test_no_patient_identifiers_in_summary_or_warnings(tmp_path, caplog) -> None:
    long_name = PATIENT_NAME + "^" + "X" * 70  # invalid PN (component over 64 chars): pydicom warns about it
    write_ct_series(tmp_path, PatientName=long_name, OtherPatientIDs="OTHER-ID-77", WindowCenter=[40, 400])
    volume = load_ct_series(tmp_path)
    text = json.dumps(volume.summary) + caplog.text
    assert volume.summary["warnings"]
    for value in (PATIENT_NAME, "Doe", "Quincy", PATIENT_ID, PATIENT_BIRTH_DATE, "OTHER-ID-77"):
        assert value not in text


def test_non_dicom_files_next_to_a_series_are_skipped_with_a_warning(tmp_path) -> None:
    written = write_ct_series(tmp_path / "ct")
    (tmp_path / "ct" / "notes.dcm").write_text("not a DICOM file\n")
    (tmp_path / "ct" / "thumbnail.dcm").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    volume = load_ct_series(tmp_path / "ct")
    assert volume.summary["series_uid"] == written.series_uid
    assert volume.summary["skipped"]["not_dicom"] == 2
    assert any("not DICOM" in w and "notes.dcm" in w for w in volume.summary["warnings"])


def test_damaged_file_of_another_series_is_only_a_warning(tmp_path) -> None:
    written = write_ct_series(tmp_path / "ct")
    other = write_ct_series(tmp_path / "other", n_slices=3)
    ds = pydicom.dcmread(other.files[0])
    del ds.PixelData  # a CT image whose pixel data never arrived, whose header names its series
    ds.save_as(other.files[0])
    volume = load_ct_series(tmp_path, series_uid=written.series_uid)
    assert any("damaged" in w for w in volume.summary["warnings"])
    with pytest.raises(UserInputError, match="without pixel data"):
        load_ct_series(tmp_path, series_uid=other.series_uid)


def test_multiframe_ct_is_refused_with_a_reason(tmp_path) -> None:
    stored = np.zeros((16, 16), np.int16)
    for k in range(2):
        ds = make_ct_dataset(stored, (0, 0, 5.0 * k), (1, 0, 0, 0, 1, 0), series_uid="1.2.826.0.1.99", NumberOfFrames=1)
        ds.NumberOfFrames = 2
        ds.PixelData = np.zeros((2, 16, 16), np.int16).tobytes()
        write_dataset(ds, tmp_path / f"mf{k}.dcm")
    with pytest.raises(UserInputError, match="multi-frame"):
        load_ct_series(tmp_path)


def test_volume_spacing_and_summary_shape(tmp_path) -> None:
    write_ct_series(tmp_path, phantom=linear_phantom(), pixel_spacing=(0.8, 0.6), slice_step_mm=2.5, shape=(40, 50))
    volume = load_ct_series(tmp_path)
    assert volume.array.shape == (50, 40, 12)
    assert volume.spacing == pytest.approx((0.6, 0.8, 2.5))
    assert volume.summary["shape"] == [50, 40, 12] and volume.summary["spacing"] == pytest.approx([0.6, 0.8, 2.5])
    assert volume.summary["orientation"] == "LPS" and volume.summary["n_slices"] == 12
