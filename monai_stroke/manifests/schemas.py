"""CSV manifests: the schemas of the cohort, regions and RSNA files, their readers and their checks.

Every manifest is a CSV with a header row; extra columns are allowed and kept. A problem is reported with
the file, the row number as a spreadsheet shows it (header = row 1) and the column, e.g.
``cohort.csv row 7, column split: 'trian' is not one of train, val, test``. Checks collect every problem
instead of stopping at the first, so one run of ``monai-stroke manifest check`` lists them all.

Kinds (``MANIFEST_KINDS`` maps each to its required columns):

- ``cohort``: ``patient_id``, ``series_dir`` (DICOM folder or NIfTI file, relative to the manifest's folder),
  ``split`` (train/val/test); optional ``lesion_mask``. One row per patient: splits are by patient.
- ``regions``: ``patient_id``, ``side`` (L/R, the patient's own), ``region`` (C, L, IC, I, M1-M6),
  ``category`` (the six ground-truth categories). One row per (patient, side, region).
- ``rsna_slices``: the RSNA converter's output, one row per slice: ``image_id``, ``study_uid``,
  ``series_uid``, ``slice_index`` (0.. along the slice normal), ``position_mm`` and the six 0/1 labels.
- ``rsna_labels``: the RSNA challenge's ``ID,Label`` file (``ID_<image>_<subtype>``).

Values are compared after stripping surrounding spaces (spreadsheets add them); everything else is exact,
including case.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from monai_stroke.errors import UserInputError
from monai_stroke.vocabulary import CATEGORIES, HEMORRHAGE_LABELS, HEMORRHAGE_SUBTYPES, REGIONS, SIDES

__all__ = [
    "SPLITS",
    "COHORT_COLUMNS",
    "REGIONS_COLUMNS",
    "RSNA_SLICES_COLUMNS",
    "RSNA_LABELS_COLUMNS",
    "MANIFEST_KINDS",
    "NIFTI_SUFFIXES",
    "ManifestProblem",
    "ManifestReport",
    "detect_kind",
    "check_manifest",
    "check_manifests",
    "read_cohort",
    "read_regions",
    "read_rsna_slices",
    "read_rsna_labels",
    "cross_check_regions",
    "check_manifest_report",
    "raise_for_problems",
]

#: Dataset splits; a patient belongs to exactly one.
SPLITS: tuple[str, ...] = ("train", "val", "test")
COHORT_COLUMNS: tuple[str, ...] = ("patient_id", "series_dir", "split")
REGIONS_COLUMNS: tuple[str, ...] = ("patient_id", "side", "region", "category")
RSNA_SLICES_COLUMNS: tuple[str, ...] = (
    "image_id",
    "study_uid",
    "series_uid",
    "slice_index",
    "position_mm",
    *HEMORRHAGE_LABELS,
)
RSNA_LABELS_COLUMNS: tuple[str, ...] = ("ID", "Label")
#: manifest kind -> its required columns (the header must contain all of them; order is free)
MANIFEST_KINDS: dict[str, tuple[str, ...]] = {
    "cohort": COHORT_COLUMNS,
    "regions": REGIONS_COLUMNS,
    "rsna_slices": RSNA_SLICES_COLUMNS,
    "rsna_labels": RSNA_LABELS_COLUMNS,
}
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")

# at most this many rows are listed for one kind of problem in one column; the rest are counted, so that a
# wholly wrong 4.5-million-row RSNA file does not print 4.5 million lines
_MAX_ROWS_PER_PROBLEM = 20
_WHITESPACE = re.compile(r"\s")
# spreadsheet row of the first data row: the header is row 1
_FIRST_ROW = 2


@dataclass(frozen=True)
class ManifestProblem:
    """One problem in a manifest, located as a spreadsheet shows it.

    Args:
        file: the manifest path as the user gave it.
        row: spreadsheet row (header = 1), or None for a problem of the whole file or column.
        column: the column name, or None.
        message: what is wrong and, where useful, what to do.
    """

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f" row {self.row}"
        if self.column is not None:
            where += f", column {self.column}" if self.row is not None else f" column {self.column}"
        return f"{where}: {self.message}"


@dataclass
class ManifestReport:
    """The result of checking one manifest file.

    Args:
        file: the manifest path as the user gave it.
        kind: the manifest kind (a key of ``MANIFEST_KINDS``), or None when it could not be told.
        n_rows: data rows (blank lines not counted).
        problems: every problem found; empty when the file is valid.
        warnings: things a user should know that do not make the file invalid.
        frame: the validated table (typed columns, index = spreadsheet row; for ``rsna_labels`` one row per
            image indexed by ``image_id``), None when there were problems.
    """

    file: str
    kind: str | None
    n_rows: int = 0
    problems: list[ManifestProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Problems:
    """Collects problems of one file; per-row problems beyond a limit are counted, not listed."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.columns: list[str] = []
        self.items: list[ManifestProblem] = []
        self.summaries: list[ManifestProblem] = []

    def add(self, row: int | None, column: str | None, message: str) -> None:
        self.items.append(ManifestProblem(self.file, None if row is None else int(row), column, message))

    def rows(self, values: pd.Series, column: str | None, describe: Callable[[str], str]) -> None:
        """One problem per entry of ``values`` (indexed by spreadsheet row), described by ``describe(value)``."""
        for row, value in values.iloc[:_MAX_ROWS_PER_PROBLEM].items():
            self.add(row, column, describe(value))
        if len(values) > _MAX_ROWS_PER_PROBLEM:
            example = describe(values.iloc[0])
            self.summaries.append(
                ManifestProblem(
                    self.file,
                    None,
                    column,
                    f"{len(values) - _MAX_ROWS_PER_PROBLEM} more rows like row {values.index[0]} ({example}) "
                    "not listed",
                )
            )

    def sorted(self) -> list[ManifestProblem]:
        # file-level problems first, then as a spreadsheet user reads them (row, then column), the counts last
        def key(p: ManifestProblem) -> tuple[int, int]:
            column = self.columns.index(p.column) if p.column in self.columns else len(self.columns)
            return (-1 if p.row is None else p.row, column)

        return sorted(self.items, key=key) + self.summaries


def _joined(values: Iterable[str]) -> str:
    return ", ".join(values)


def _read_table(path: Path, problems: _Problems) -> pd.DataFrame | None:
    """Read a CSV as strings, index = spreadsheet row, blank rows dropped; None (with a problem) if unreadable."""
    if not path.exists():
        problems.add(None, None, "no such file; check the path")
        return None
    if path.is_dir():
        problems.add(None, None, "is a folder; give the CSV file")
        return None
    try:
        # header=None: the header is data row 0, so a later row with more fields is an error instead of pandas
        # silently turning the first column into an index, and repeated names are not renamed
        raw = pd.read_csv(
            path,
            header=None,
            index_col=False,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            encoding="utf-8-sig",
        )
    except UnicodeDecodeError as exc:
        problems.add(None, None, f"is not a UTF-8 CSV text file ({type(exc).__name__}); export it as CSV UTF-8")
        return None
    except pd.errors.EmptyDataError:
        problems.add(None, None, "is empty; a manifest starts with a header row")
        return None
    except pd.errors.ParserError as exc:
        match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if match:
            expected, line, saw = match.groups()
            problems.add(int(line), None, f"has {saw} fields but the header has {expected}; quote values with commas")
        else:
            problems.add(None, None, f"cannot be parsed as CSV ({' '.join(str(exc).split())})")
        return None
    header = [str(h).strip() for h in raw.iloc[0]]
    if not any(header):
        problems.add(1, None, "the header row is empty; a manifest starts with a header row")
        return None
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        problems.add(1, None, f"column {_joined(repeated)} appears more than once in the header")
        return None
    table = raw.iloc[1:]
    table.columns = header
    problems.columns = header
    table.index = pd.RangeIndex(_FIRST_ROW, _FIRST_ROW + len(table), name="row")
    for column in table.columns:
        table[column] = _strip(table[column])
    blank = np.logical_and.reduce([table[c].to_numpy(dtype=object) == "" for c in table.columns])
    return table.loc[~blank]


def _strip(values: pd.Series) -> pd.Series:
    """``values.str.strip()``, ~10x faster on big files: plain Python, and a new Series only when something changed."""
    raw = values.to_numpy(dtype=object)
    stripped = [v.strip() for v in raw]
    # str.strip returns the very same object when there is nothing to strip
    if all(a is b for a, b in zip(stripped, raw, strict=True)):
        return values
    return pd.Series(stripped, index=values.index, dtype=values.dtype)


def detect_kind(columns: Sequence[str]) -> str:
    """The manifest kind whose required columns the header has.

    Args:
        columns: the header's column names.

    Raises:
        UserInputError: no kind or more than one kind matches; the message lists what is missing.
    """
    present = set(columns)
    complete = [kind for kind, required in MANIFEST_KINDS.items() if present.issuperset(required)]
    if len(complete) == 1:
        return complete[0]
    if len(complete) > 1:
        raise UserInputError(f"the header fits several kinds ({_joined(complete)}); pass --kind")
    # name the closest kind and what it lacks, which is usually a typo in a column name
    best = max(MANIFEST_KINDS, key=lambda k: len(present & set(MANIFEST_KINDS[k])) / len(MANIFEST_KINDS[k]))
    if present & set(MANIFEST_KINDS[best]) - {"patient_id"}:
        missing = [c for c in MANIFEST_KINDS[best] if c not in present]
        raise UserInputError(
            f"looks like a {best} manifest but lacks column {_joined(missing)} (a {best} manifest needs "
            f"{_joined(MANIFEST_KINDS[best])}); fix the header or pass --kind"
        )
    kinds = "; ".join(f"{k}: {_joined(v)}" for k, v in MANIFEST_KINDS.items())
    raise UserInputError(f"the header ({_joined(columns)}) is not a known manifest kind ({kinds}); pass --kind")


# --- column checks: each adds one problem per bad row and returns the mask of good rows -----------------


def _check_nonempty(table: pd.DataFrame, column: str, problems: _Problems) -> pd.Series:
    good = table[column] != ""
    problems.rows(table.loc[~good, column], column, lambda _: "empty; a value is required")
    return good


def _check_allowed(table: pd.DataFrame, column: str, allowed: Sequence[str], problems: _Problems) -> pd.Series:
    good = table[column].isin(allowed)
    choices = _joined(allowed)
    problems.rows(
        table.loc[~good, column],
        column,
        lambda v: f"empty; expected one of {choices}" if v == "" else f"{v!r} is not one of {choices}",
    )
    return good


def _check_int(table: pd.DataFrame, column: str, problems: _Problems, minimum: int = 0) -> pd.Series:
    numbers = pd.to_numeric(table[column], errors="coerce")
    good = numbers.notna() & (numbers == np.floor(numbers)) & (numbers >= minimum)
    problems.rows(table.loc[~good, column], column, lambda v: f"{v!r} is not a whole number >= {minimum}")
    return good


def _check_float(table: pd.DataFrame, column: str, problems: _Problems) -> pd.Series:
    numbers = pd.to_numeric(table[column], errors="coerce")
    good = pd.Series(np.isfinite(numbers.to_numpy(dtype=float)), index=table.index)
    problems.rows(table.loc[~good, column], column, lambda v: f"{v!r} is not a finite number")
    return good


def _check_binary(table: pd.DataFrame, column: str, problems: _Problems) -> pd.Series:
    good = table[column].isin(("0", "1"))
    problems.rows(table.loc[~good, column], column, lambda v: f"{v!r} is not 0 or 1")
    return good


def _check_unique(
    table: pd.DataFrame, keys: list[str], problems: _Problems, describe: Callable[[pd.Series, int], str]
) -> None:
    """A problem for each repeat of a key, described by ``describe(repeated_row, first_row_number)``."""
    rows = pd.Series(table.index, index=table.index)
    first = rows.groupby([table[k] for k in keys], sort=False).transform("first")
    repeats = rows.loc[first != rows]
    problems.rows(repeats, keys[0], lambda row: describe(table.loc[row], int(first[row])))


def _check_path(
    base_dir: Path, table: pd.DataFrame, column: str, problems: _Problems, want: str, rows: pd.Series
) -> None:
    """Check that the paths in ``column`` (relative to ``base_dir``) exist and are ``want`` ("series" or "nifti")."""
    for row, value in table.loc[rows & (table[column] != ""), column].items():
        path = base_dir / value
        is_nifti = value.lower().endswith(NIFTI_SUFFIXES)
        if not path.exists():
            problems.add(
                row,
                column,
                f"{value!r} does not exist (paths are relative to the manifest's folder {base_dir.resolve()})",
            )
        elif path.is_dir():
            if want == "nifti":
                problems.add(row, column, f"{value!r} is a folder; expected a NIfTI file (.nii, .nii.gz)")
            elif next((p for p in path.rglob("*") if p.is_file()), None) is None:
                problems.add(row, column, f"{value!r} is an empty folder; expected DICOM files in it")
        elif not is_nifti:
            expected = (
                "a NIfTI file (.nii, .nii.gz)" if want == "nifti" else "a DICOM folder or a NIfTI file (.nii, .nii.gz)"
            )
            problems.add(row, column, f"{value!r} is not {expected}")


# --- one validator per kind: (table, problems, base_dir, check_files) -> typed frame ------------------------


def _validate_cohort(table: pd.DataFrame, problems: _Problems, base_dir: Path, check_files: bool) -> pd.DataFrame:
    has_id = _check_nonempty(table, "patient_id", problems)
    has_series = _check_nonempty(table, "series_dir", problems)
    _check_allowed(table, "split", SPLITS, problems)

    def repeated(r: pd.Series, first: int) -> str:
        first_split = table.at[first, "split"]
        if first_split != r["split"]:
            return (
                f"patient {r['patient_id']!r} is in split {r['split']!r} here and in split {first_split!r} at row "
                f"{first}; splits are by patient, so a patient belongs to one split"
            )
        return f"patient {r['patient_id']!r} is listed again (first at row {first}); give one row per patient"

    _check_unique(table.loc[has_id], ["patient_id"], problems, repeated)
    # two patients on one series would put the same images in two splits
    series = table.loc[has_series, ["series_dir"]].assign(series_dir=lambda t: t["series_dir"].map(os.path.normpath))
    _check_unique(
        series.join(table["patient_id"]),
        ["series_dir"],
        problems,
        lambda r, first: (
            f"{table.at[r.name, 'series_dir']!r} is also the series of patient "
            f"{table.at[first, 'patient_id']!r} at row {first}; each patient needs their own series"
        ),
    )
    if check_files:
        _check_path(base_dir, table, "series_dir", problems, "series", has_series)
        if "lesion_mask" in table.columns:
            _check_path(base_dir, table, "lesion_mask", problems, "nifti", table["lesion_mask"] != "")
    return table


def _validate_regions(table: pd.DataFrame, problems: _Problems, base_dir: Path, check_files: bool) -> pd.DataFrame:
    good = _check_nonempty(table, "patient_id", problems)
    good &= _check_allowed(table, "side", SIDES, problems)
    good &= _check_allowed(table, "region", REGIONS, problems)
    _check_allowed(table, "category", CATEGORIES, problems)
    _check_unique(
        table.loc[good],
        ["patient_id", "side", "region"],
        problems,
        lambda r, first: (
            f"patient {r['patient_id']!r} side {r['side']} region {r['region']} is listed again (first at row "
            f"{first}); give one category per region"
        ),
    )
    return table


def _validate_rsna_slices(table: pd.DataFrame, problems: _Problems, base_dir: Path, check_files: bool) -> pd.DataFrame:
    good = _check_nonempty(table, "image_id", problems)
    _check_unique(
        table.loc[good],
        ["image_id"],
        problems,
        lambda r, first: f"image {r['image_id']!r} is listed again (first at row {first})",
    )
    good &= _check_nonempty(table, "study_uid", problems)
    good &= _check_nonempty(table, "series_uid", problems)
    good &= _check_int(table, "slice_index", problems)
    good &= _check_float(table, "position_mm", problems)
    labels_good = pd.Series(True, index=table.index)
    for label in HEMORRHAGE_LABELS:
        labels_good &= _check_binary(table, label, problems)
    typed = table.copy()
    typed["slice_index"] = pd.to_numeric(typed["slice_index"], errors="coerce").astype("Int64")
    typed["position_mm"] = pd.to_numeric(typed["position_mm"], errors="coerce")
    for label in HEMORRHAGE_LABELS:
        typed[label] = pd.to_numeric(typed[label], errors="coerce").astype("Int8")
    _check_any_label(typed.loc[labels_good], problems, lambda row: f"image {typed.at[row, 'image_id']!r}")
    if check_files and "dicom_path" in table.columns:
        for row, value in table.loc[table["dicom_path"] != "", "dicom_path"].items():
            if not (base_dir / value).is_file():
                problems.add(
                    row, "dicom_path", f"{value!r} does not exist (paths are relative to {base_dir.resolve()})"
                )
    if good.all():
        _check_series_order(typed, problems)
    return typed


def _check_any_label(labels: pd.DataFrame, problems: _Problems, name: Callable[[int], str]) -> None:
    """``any`` must be 1 exactly when some subtype is 1 (true throughout the RSNA challenge data)."""
    subtype_max = labels[list(HEMORRHAGE_SUBTYPES)].max(axis=1)
    wrong = labels.index[labels["any"] != subtype_max]
    for row in wrong[:_MAX_ROWS_PER_PROBLEM]:
        positive = [s for s in HEMORRHAGE_SUBTYPES if labels.at[row, s] == 1]
        detail = f"any is 0 but {_joined(positive)} is 1" if positive else "any is 1 but no subtype is 1"
        problems.add(row, "any", f"{name(row)}: {detail}")
    if len(wrong) > _MAX_ROWS_PER_PROBLEM:
        problems.add(None, "any", f"{len(wrong) - _MAX_ROWS_PER_PROBLEM} more images whose any label disagrees")


def _check_series_order(typed: pd.DataFrame, problems: _Problems) -> None:
    """Per series: one study, slice_index 0..n-1, position_mm strictly rising with slice_index."""
    studies = typed.groupby("series_uid", sort=False)["study_uid"].nunique()
    for series in studies.index[studies > 1][:_MAX_ROWS_PER_PROBLEM]:
        row = typed.index[typed["series_uid"] == series][0]
        problems.add(row, "study_uid", f"series {series!r} appears under more than one study_uid")
    ordered = typed.reset_index().sort_values(["series_uid", "slice_index"], kind="stable")
    for series, group in ordered.groupby("series_uid", sort=False):
        indices = group["slice_index"].to_numpy()
        if not np.array_equal(indices, np.arange(len(group))):
            problems.add(
                int(group["row"].iloc[0]),
                "slice_index",
                f"series {series!r} has slice_index values {_index_summary(indices)}; expected 0..{len(group) - 1}",
            )
            continue
        steps = np.diff(group["position_mm"].to_numpy(dtype=float))
        for k in np.flatnonzero(steps <= 0)[:_MAX_ROWS_PER_PROBLEM]:
            problems.add(
                int(group["row"].iloc[k + 1]),
                "position_mm",
                f"slice {k + 1} of series {series!r} is not above slice {k} (row {int(group['row'].iloc[k])}); "
                "slice_index must follow position along the slice normal",
            )


def _index_summary(indices: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (", ..." if len(indices) > limit else "")


def _validate_rsna_labels(table: pd.DataFrame, problems: _Problems, base_dir: Path, check_files: bool) -> pd.DataFrame:
    """Validate an RSNA ``ID,Label`` table; returns one row per image (index ``image_id``), six int8 labels.

    Identical repeated rows are dropped (the challenge file has them) and counted in ``attrs['duplicate_rows']``;
    repeats with a different label are problems. Written with numpy on integer codes: the challenge file has
    4.5 million rows, and pandas string operations on it take a minute.
    """
    ids = table["ID"].to_numpy(dtype=object)
    row_numbers = table.index.to_numpy()
    parts = [v.rpartition("_") for v in ids]
    images = np.array([p[0] for p in parts], dtype=object)
    subtype = pd.Index(HEMORRHAGE_LABELS).get_indexer([p[2] for p in parts])
    id_good = (subtype >= 0) & (images != "")
    # one regex pass over all ids; a per-id check only when some id has a space in it
    if _WHITESPACE.search("\0".join(ids)):
        id_good &= np.array([_WHITESPACE.search(v) is None for v in ids], dtype=bool)
    subtypes = _joined(HEMORRHAGE_LABELS)
    problems.rows(
        table.loc[~id_good, "ID"],
        "ID",
        lambda v: f"{v!r} is not ID_<image>_<subtype> with subtype one of {subtypes}",
    )
    label = pd.Index(["0", "1"]).get_indexer(table["Label"].to_numpy(dtype=object))
    problems.rows(table.loc[label < 0, "Label"], "Label", lambda v: f"{v!r} is not 0 or 1")
    good = id_good & (label >= 0)
    image_code, image_ids = pd.factorize(images[good])
    key = image_code.astype(np.int64) * len(HEMORRHAGE_LABELS) + subtype[good]
    label, rows, ids = label[good].astype(np.int8), row_numbers[good], ids[good]
    exact_repeat = pd.Series(key * 2 + label).duplicated().to_numpy()
    first_of_key = pd.Series(rows).groupby(key).transform("first").to_numpy()
    conflict = ~exact_repeat & (first_of_key != rows)
    # rows ascend, so a binary search finds the row where each key first appeared
    first_label = label[np.searchsorted(rows, first_of_key)]
    problems.rows(
        pd.Series(np.flatnonzero(conflict), index=rows[conflict]),
        "ID",
        lambda i: (
            f"{ids[i]} has Label {label[i]} here and {first_label[i]} at row {first_of_key[i]}; "
            "the file contradicts itself, fix one of the rows"
        ),
    )
    wide = np.full((len(image_ids), len(HEMORRHAGE_LABELS)), -1, dtype=np.int8)
    keep = ~exact_repeat & ~conflict
    wide[image_code[keep], key[keep] % len(HEMORRHAGE_LABELS)] = label[keep]
    # factorize numbers images in order of appearance, so each image's first row is where its code first occurs
    _, first_index = np.unique(image_code, return_index=True)
    first_row = rows[first_index]
    incomplete = np.flatnonzero((wide < 0).any(axis=1))
    for i in incomplete[:_MAX_ROWS_PER_PROBLEM]:
        missing = [s for s, v in zip(HEMORRHAGE_LABELS, wide[i], strict=True) if v < 0]
        problems.add(
            first_row[i], "ID", f"image {image_ids[i]} has no row for {_joined(missing)}; every image needs all six"
        )
    if len(incomplete) > _MAX_ROWS_PER_PROBLEM:
        problems.add(None, "ID", f"{len(incomplete) - _MAX_ROWS_PER_PROBLEM} more images lack some of the six labels")
    complete = (wide >= 0).all(axis=1)
    image_at_row = dict(zip(first_row[complete], image_ids[complete], strict=True))
    _check_any_label(
        pd.DataFrame(wide[complete], index=first_row[complete], columns=list(HEMORRHAGE_LABELS)),
        problems,
        lambda row: f"image {image_at_row[row]}",
    )
    out = pd.DataFrame(
        wide[complete], index=pd.Index(image_ids[complete], name="image_id"), columns=list(HEMORRHAGE_LABELS)
    )
    out.attrs["duplicate_rows"] = int(exact_repeat.sum())
    return out


_VALIDATORS: dict[str, Callable[[pd.DataFrame, _Problems, Path, bool], pd.DataFrame]] = {
    "cohort": _validate_cohort,
    "regions": _validate_regions,
    "rsna_slices": _validate_rsna_slices,
    "rsna_labels": _validate_rsna_labels,
}


def check_manifest_report(path: str | os.PathLike, kind: str | None = None, check_files: bool = True) -> ManifestReport:
    """Check one manifest and return everything found (see :func:`check_manifest` for the short form).

    Args:
        path: the CSV file.
        kind: a key of ``MANIFEST_KINDS``; None tells it from the header.
        check_files: check that paths in the manifest (relative to its folder) exist.
    """
    name = os.fspath(path)
    path = Path(path)
    problems = _Problems(name)
    if kind is not None and kind not in MANIFEST_KINDS:
        raise UserInputError(f"unknown manifest kind {kind!r}; use one of {_joined(MANIFEST_KINDS)}")
    table = _read_table(path, problems)
    if table is None:
        return ManifestReport(name, kind, problems=problems.sorted())
    if kind is None:
        try:
            kind = detect_kind(list(table.columns))
        except UserInputError as exc:
            problems.add(None, None, str(exc))
            return ManifestReport(name, None, len(table), problems=problems.sorted())
    missing = [c for c in MANIFEST_KINDS[kind] if c not in table.columns]
    if missing:
        problems.add(
            1, None, f"lacks column {_joined(missing)} (a {kind} manifest needs {_joined(MANIFEST_KINDS[kind])})"
        )
        return ManifestReport(name, kind, len(table), problems=problems.sorted())
    if table.empty:
        problems.add(None, None, "has a header but no data rows")
        return ManifestReport(name, kind, 0, problems=problems.sorted())
    frame = _VALIDATORS[kind](table, problems, path.parent, check_files)
    report = ManifestReport(name, kind, len(table), problems=problems.sorted())
    if report.ok:
        if kind == "regions":
            report.warnings.extend(_incomplete_patients(frame, name))
        frame.attrs["manifest"] = name
        report.frame = frame
    return report


def _incomplete_patients(regions: pd.DataFrame, name: str) -> list[str]:
    # a patient with some regions unlabelled is legal (those regions are left out of training) but usually a slip
    counts = regions.groupby("patient_id", sort=False).size()
    expected = len(SIDES) * len(REGIONS)
    short = counts[counts < expected]
    if short.empty:
        return []
    examples = ", ".join(f"{pid} ({n})" for pid, n in short.iloc[:5].items())
    more = ", ..." if len(short) > 5 else ""
    return [
        f"{name}: {len(short)} patient(s) have fewer than {expected} region rows, the rest are unlabelled and left "
        f"out: {examples}{more}"
    ]


def cross_check_regions(cohort: ManifestReport, regions: ManifestReport) -> None:
    """Add a problem to ``regions`` for each row whose patient is not in ``cohort``; warn about unlabelled patients.

    Both reports must be valid (``frame`` set); the problems and warnings are added in place.
    """
    cohort_ids = set(cohort.frame["patient_id"])
    table = regions.frame
    unknown = table.loc[~table["patient_id"].isin(cohort_ids)]
    if not unknown.empty:
        problems = _Problems(regions.file)
        problems.rows(unknown["patient_id"], "patient_id", lambda pid: f"patient {pid!r} is not in {cohort.file}")
        regions.problems.extend(problems.sorted())
    unlabelled = sorted(cohort_ids - set(table["patient_id"]))
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (", ..." if len(unlabelled) > 5 else "")
        regions.warnings.append(
            f"{len(unlabelled)} patient(s) of {cohort.file} have no rows in {regions.file} and no region labels: "
            f"{shown}"
        )


def check_manifests(
    paths: Sequence[str | os.PathLike], kind: str | None = None, check_files: bool = True
) -> list[ManifestReport]:
    """Check several manifests, and regions against the cohort when both are given.

    Args:
        paths: CSV files.
        kind: force one kind for all files; None tells each from its header.
        check_files: check that paths in the manifests exist.
    """
    reports = [check_manifest_report(p, kind, check_files) for p in paths]
    cohorts = [r for r in reports if r.kind == "cohort" and r.ok]
    invalid_cohorts = [r.file for r in reports if r.kind == "cohort" and not r.ok]
    if invalid_cohorts:
        for regions in (r for r in reports if r.kind == "regions" and r.ok):
            regions.warnings.append(
                f"{regions.file} is not checked against {_joined(invalid_cohorts)}, which has problems"
            )
    if len(cohorts) == 1:
        for regions in (r for r in reports if r.kind == "regions" and r.ok):
            cross_check_regions(cohorts[0], regions)
    elif len(cohorts) > 1:
        merged = ManifestReport("+".join(c.file for c in cohorts), "cohort")
        merged.frame = pd.concat([c.frame for c in cohorts], ignore_index=True)
        for regions in (r for r in reports if r.kind == "regions" and r.ok):
            cross_check_regions(merged, regions)
    for report in reports:
        if not report.ok:
            report.frame = None
    return reports


def check_manifest(path: str | os.PathLike, kind: str | None = None, check_files: bool = True) -> list[str]:
    """Problems of one manifest, one line each (empty when valid).

    Args:
        path: the CSV file.
        kind: a key of ``MANIFEST_KINDS``; None tells it from the header.
        check_files: check that paths in the manifest (relative to its folder) exist.
    """
    return [str(p) for p in check_manifest_report(path, kind, check_files).problems]


def _read_valid(path: str | os.PathLike, kind: str, check_files: bool) -> pd.DataFrame:
    report = check_manifest_report(path, kind, check_files)
    if not report.ok:
        raise_for_problems(report.problems, report.file)
    if kind == "rsna_labels":
        return report.frame
    # callers get a plain 0.. index; the spreadsheet row numbers only matter while checking
    frame = report.frame.reset_index(drop=True)
    frame.attrs["manifest"] = report.file
    return frame


def raise_for_problems(problems: Sequence[ManifestProblem], file: str, shown: int = 3) -> None:
    """Raise a :class:`UserInputError` that names the first few problems and how to list them all."""
    lines = "; ".join(str(p) for p in problems[:shown])
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    raise UserInputError(f"{lines}{more}; run 'monai-stroke manifest check {file}' to list every problem")


def read_cohort(path: str | os.PathLike, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a cohort manifest (columns as in the file, extra columns kept, all strings).

    Args:
        path: the CSV file.
        check_files: check that ``series_dir`` and ``lesion_mask`` paths exist.

    Raises:
        UserInputError: the file is invalid; the message names the first problems.
    """
    return _read_valid(path, "cohort", check_files)


def read_regions(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a regions manifest (``patient_id, side, region, category`` + extra columns, strings).

    Raises:
        UserInputError: the file is invalid; the message names the first problems.
    """
    return _read_valid(path, "regions", False)


def read_rsna_slices(path: str | os.PathLike, check_files: bool = False) -> pd.DataFrame:
    """Read and validate an RSNA slice manifest (``slice_index`` Int64, ``position_mm`` float, labels Int8).

    Args:
        path: the CSV file written by :func:`monai_stroke.manifests.convert_rsna`.
        check_files: check that ``dicom_path`` values (when the column is there) exist.
    """
    return _read_valid(path, "rsna_slices", check_files)


def read_rsna_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Read the RSNA challenge's ``ID,Label`` file into one row per image.

    Returns:
        DataFrame indexed by ``image_id`` (``ID_<image>``) with int8 columns any, epidural, ..., subdural;
        ``attrs['duplicate_rows']`` counts the identical repeated rows that were dropped.

    Raises:
        UserInputError: malformed IDs, labels other than 0/1, contradicting repeats, images lacking some of the
            six labels, or ``any`` disagreeing with the subtypes.
    """
    return _read_valid(path, "rsna_labels", False)
