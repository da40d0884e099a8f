"""Label tables: a CSV or TSV file that names each image file with its label(s).

Hospitals hand over labels as a table beside the images: a path column, one label column
(class names or integers) or several 0/1 columns (multi-label), often a patient column (one
patient's images must stay in one split or fold) and sometimes a split column. This module
reads and checks such a table (:func:`read_label_table`) and keeps patients together when a
target is cut into folds (:func:`group_folds`) or bootstrapped (:func:`group_resample_indices`).
It reads no image: it returns paths, label codes and the other columns.

Every problem is one :class:`~gradnca_onnx.errors.InputError` line that names the table, the row
as a spreadsheet shows it (the header is row 1, the first data row is row 2), the column, and
what to do. Advice names the command line's options (``--path-column`` and its siblings).

Class codes follow the rule of image folders (sorted names are codes 0..C-1), made
numeric-aware: integer labels sort as integers (``2`` before ``10``), so labels that are already
0..C-1 keep their values as codes; any other set of integers (``1, 2, 3`` or ``-1, 1``) is coded
in its sorted order and noted.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._validation import MAX_CLASSES, check_labels
from ..errors import InputError
from .folders import IMAGE_EXTENSIONS, SPLIT_DIRS

PathLike = Union[str, "os.PathLike[str]"]

#: Table suffixes and their delimiter (``None``: sniffed from the text).
TABLE_SUFFIXES: Mapping[str, str | None] = MappingProxyType(
    {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": None})
#: Header names (lower case; spaces and hyphens read as ``_``) that give a column its role when
#: no option names it. ``fold`` is left out on purpose: such a column usually holds
#: cross-validation fold numbers, not train/val/test (name it with ``--split-column`` if not).
ROLE_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "path": ("path", "file", "filename", "image", "image_path", "filepath"),
    "label": ("label", "labels", "class", "diagnosis", "target", "y"),
    "group": ("patient", "patient_id", "subject", "subject_id", "group", "case"),
    "split": ("split", "subset", "partition"),
})
#: The command-line option that names each role's column.
ROLE_OPTIONS: Mapping[str, str] = MappingProxyType({
    "path": "--path-column", "label": "--label-column", "group": "--group-column",
    "split": "--split-column"})
#: Split values accepted (lower case), by the split they are read as.
SPLIT_VALUES: Mapping[str, str] = MappingProxyType(
    {alias: split for split, aliases in SPLIT_DIRS.items() for alias in aliases})
#: Rows shown by a message that lists examples.
_SHOWN = 3


@dataclass(frozen=True, eq=False)
class LabelTable:
    """The checked contents of a label table, in table order (no image read yet).

    Parameters
    ----------
    paths : tuple of Path
        Absolute paths of the image files (relative cells are read against the table's folder);
        each exists and is named once.
    labels : ndarray, int64 (N,) or (N, L)
        Class codes 0..C-1, or 0/1 indicators of L labels (multi-label). Read-only.
    class_names : tuple of str
        Single label column: the distinct labels in sorted order, integers sorted as integers
        (code i is ``class_names[i]``). Multi-label: the label columns' names.
    task : str
        ``"binary"``, ``"multi-class"`` or ``"multi-label"``.
    groups : tuple of str or None
        The patient (group) column's value of each row; ``None`` without such a column.
    splits : tuple of str or None
        ``"train"``, ``"val"`` or ``"test"`` for each row; ``None`` without a split column.
    source : Path
        The table file.
    columns : mapping of str to tuple of str
        The column(s) that played each role: ``"path"``, ``"label"`` (several for
        multi-label), and ``"group"`` and ``"split"`` where present.
    notes : tuple of str
        How the table was read where it matters (roles found by header name, multi-label
        detected, integer labels recoded, columns ignored).
    rows : tuple of int
        The spreadsheet row of each entry (header = row 1), for messages about one image.
    """

    paths: tuple[Path, ...]
    labels: NDArray[np.int64]
    class_names: tuple[str, ...]
    task: str
    groups: tuple[str, ...] | None
    splits: tuple[str, ...] | None
    source: Path
    columns: Mapping[str, tuple[str, ...]]
    notes: tuple[str, ...] = ()
    rows: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        labels = np.array(self.labels, dtype=np.int64)
        labels.setflags(write=False)  # frozen object, frozen arrays
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def n_classes(self) -> int:
        """Number of classes (of labels, for a multi-label table)."""
        return len(self.class_names)


# ------------------------------------------------------------------------------ the text
@dataclass(frozen=True)
class _Sheet:
    """A parsed table: its name for messages, header and data rows (with spreadsheet rows)."""

    name: str
    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]

    def cells(self, column: str) -> list[str]:
        i = self.header.index(column)
        return [cells[i].strip() for _, cells in self.rows]

    def where(self, k: int, column: str) -> str:
        """``row R, column 'c'`` of the k-th data row."""
        return f"row {self.rows[k][0]}, column {column!r}"


def _read_text(table: Path) -> str:
    if not table.is_file():
        raise InputError(f"{table}: no such label table (a .csv or .tsv file)")
    try:
        return table.read_text(encoding="utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError as exc:
        raise InputError(f"{table}: not UTF-8 text (byte {exc.start}); save the table as CSV "
                         "UTF-8 (a spreadsheet's .xlsx is not read)") from None


def _delimiter(table: Path, text: str) -> tuple[str, list[str]]:
    """The table's delimiter by its suffix (``.txt``: sniffed), and a note if not the usual."""
    suffix = table.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise InputError(f"{table}: not a label table; give a .csv or .tsv file "
                         f"({', '.join(TABLE_SUFFIXES)})")
    delimiter = TABLE_SUFFIXES[suffix]
    first = text.lstrip("\r\n").split("\n", 1)[0]
    if delimiter == "," and "," not in first and ";" in first:
        # A spreadsheet set to a European locale writes ';'-separated "CSV".
        return ";", [f"{table.name}: read with ';' between cells (no ',' in its header)"]
    if delimiter is not None:
        return delimiter, []
    try:
        found = csv.Sniffer().sniff(text[:65536], delimiters=",\t;|").delimiter
    except csv.Error:
        raise InputError(f"{table}: cannot tell what separates the cells; save it as .csv "
                         "(commas) or .tsv (tabs)") from None
    return found, [f"{table.name}: cells separated by {found!r} (sniffed)"]


def _records(table: Path, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """Non-blank records with their spreadsheet row numbers (blank rows are counted)."""
    out = []
    # newline="": a quoted cell may hold a line break and still be one cell of one row.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    row = 0
    try:
        for row, cells in enumerate(reader, start=1):
            if any(c.strip() for c in cells):
                out.append((row, cells))
    except csv.Error as exc:
        raise InputError(f"{table}: row {row + 1} cannot be read ({exc}); fix or remove "
                         "that row") from None
    return out


def _data_like(names: tuple[str, ...]) -> list[str]:
    """The cells that make a first row data, not a header: image file names, or numbers when
    every cell is one (numbers alone may name one-hot columns: ``path,0,1,2``)."""
    files = [h for h in names if h.lower().endswith(IMAGE_EXTENSIONS)]
    filled = [h for h in names if h]
    numbers = filled if filled and all(_as_int(h) is not None for h in filled) else []
    return files + numbers


def _check_header(table: Path, row: int, header: list[str]) -> tuple[str, ...]:
    names = tuple(h.strip() for h in header)
    data_like = _data_like(names)
    if data_like:
        raise InputError(f"{table}: row {row} is not a header ({data_like[0]!r} is a value); "
                         "add a header row that names the columns, e.g. path,label")
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name and name in seen:
            raise InputError(f"{table}: row 1, columns {seen[name]} and {i} are both named "
                             f"{name!r}; rename one of them")
        seen[name] = i
    return names


def _sheet(table: Path) -> tuple[_Sheet, list[str]]:
    text = _read_text(table)
    delimiter, notes = _delimiter(table, text)
    records = _records(table, text, delimiter)
    if not records:
        raise InputError(f"{table}: the table is empty; give a header row (e.g. path,label) "
                         "and one row per image")
    header = _check_header(table, records[0][0], records[0][1])
    rows = []
    for row, cells in records[1:]:
        # Spreadsheets pad rows with empty cells past the last column: those are harmless.
        while len(cells) > len(header) and not cells[-1].strip():
            cells = cells[:-1]
        if len(cells) != len(header):
            raise InputError(f"{table}: row {row} has {len(cells)} cells but the header has "
                             f"{len(header)} columns; fix that row (a stray or missing "
                             "delimiter, or an unquoted cell holding one)")
        rows.append((row, tuple(cells)))
    if not rows:
        raise InputError(f"{table}: the table has a header but no data rows; add one row per "
                         "image")
    return _Sheet(str(table), header, tuple(rows)), notes


# ------------------------------------------------------------------------------ column roles
def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _named(sheet: _Sheet, name: str, role: str) -> str:
    """The column a user named: an exact match, else a unique case-insensitive one."""
    if name in sheet.header:
        return name
    matches = [h for h in sheet.header if h and _norm(h) == _norm(name)]
    if len(matches) == 1:
        return matches[0]
    raise InputError(f"{sheet.name}: no column {name!r} (given to {ROLE_OPTIONS[role]}); "
                     f"the columns are {', '.join(repr(h) for h in sheet.header)}")


def _found(sheet: _Sheet, role: str, free: list[str]) -> str | None:
    """The one free column whose header is a known name of ``role``; ``None`` if none."""
    hits = [h for h in free if _norm(h) in ROLE_NAMES[role]]
    if len(hits) > 1:
        raise InputError(f"{sheet.name}: row 1, columns {', '.join(repr(h) for h in hits)} could "
                         f"each be the {role} column; name one with {ROLE_OPTIONS[role]}")
    return hits[0] if hits else None


def _is_binary(cells: list[str]) -> bool:
    values = {_as_int(c) for c in cells if c}
    return bool(values) and values <= {0, 1}


def _label_columns(sheet: _Sheet, free: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The label column(s) when none was named: a label-named column, else several 0/1
    columns (multi-label), else the only column left."""
    single = _found(sheet, "label", free)
    if single is not None:
        return (single,), []
    binary = [h for h in free if _is_binary(sheet.cells(h))]
    if len(binary) >= 2:
        return tuple(binary), [f"{sheet.name}: no label column, so the 0/1 columns "
                               f"{', '.join(binary)} are read as a multi-label target"]
    if len(free) == 1:
        return (free[0],), [f"{sheet.name}: column {free[0]!r} read as the labels (the only "
                            "column left)"]
    shown = ", ".join(repr(h) for h in free) or "none"
    raise InputError(f"{sheet.name}: cannot tell which column holds the labels (columns left: "
                     f"{shown}); name it with --label-column (once per column for 0/1 "
                     "multi-label columns)")


def _roles(sheet: _Sheet, given: dict[str, str | None],
           label_columns: Sequence[str] | None) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Which column plays which role: the named ones, then the rest by header name."""
    roles: dict[str, tuple[str, ...]] = {}
    for role, name in given.items():
        if name is not None:
            roles[role] = (_named(sheet, name, role),)
    if label_columns is not None:
        roles["label"] = tuple(_named(sheet, c, "label") for c in label_columns)
    taken = [c for cols in roles.values() for c in cols]
    if len(set(taken)) != len(taken):
        raise InputError(f"{sheet.name}: one column was given two roles ({', '.join(taken)}); "
                         "give each option its own column")
    auto = []
    for role in ("path", "group", "split"):
        if role in roles:
            continue
        free = [h for h in sheet.header if h and h not in taken]
        hit = _found(sheet, role, free)
        if hit is None and role == "path":
            raise InputError(f"{sheet.name}: no column of image paths (looked for "
                             f"{', '.join(ROLE_NAMES['path'])}); name it with --path-column")
        if hit is not None:
            roles[role] = (hit,)
            taken.append(hit)
            auto.append(f"{role}={hit!r}")
    notes = [f"{sheet.name}: columns found by name: {', '.join(auto)}"] if auto else []
    if "label" not in roles:
        free = [h for h in sheet.header if h and h not in taken]
        roles["label"], more = _label_columns(sheet, free)
        notes += more
    used = {c for cols in roles.values() for c in cols}
    ignored = [h or f"column {i + 1}" for i, h in enumerate(sheet.header) if h not in used]
    if ignored:
        notes.append(f"{sheet.name}: columns not used: {', '.join(ignored)}")
    return roles, notes


# ------------------------------------------------------------------------------ cells
def _as_int(cell: str) -> int | None:
    """The integer a cell holds (``"3"``, ``"-1"``, ``"3.0"`` as pandas writes it), else
    ``None``. Huge values stay text: they cannot be int64 codes."""
    if re.fullmatch(r"[+-]?\d{1,18}", cell):
        return int(cell)
    try:
        value = float(cell)
    except ValueError:
        return None
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return None


def _no_empty(sheet: _Sheet, column: str, cells: list[str], what: str) -> None:
    for k, cell in enumerate(cells):
        if not cell:
            raise InputError(f"{sheet.name}: {sheet.where(k, column)} is empty; give every "
                             f"image its {what} or remove the row")


def _resolve(sheet: _Sheet, column: str, base: Path) -> tuple[Path, ...]:
    """Absolute paths of the path column, read against the table's folder, each existing and
    named once (a path may lead out of the folder: the table is the user's)."""
    cells = sheet.cells(column)
    _no_empty(sheet, column, cells, "image path")
    paths = []
    for cell in cells:
        p = Path(cell).expanduser()
        if "\\" in cell and os.sep == "/" and not (base / p).exists():
            p = Path(cell.replace("\\", "/"))  # a table written on Windows
        paths.append((base / p).resolve())
    # A directory is a DICOM series (one volume): read as such by the volume loader.
    missing = [k for k, p in enumerate(paths) if not (p.is_file() or p.is_dir())]
    if missing:
        shown = "; ".join(f"row {sheet.rows[k][0]}: {paths[k]}" for k in missing[:_SHOWN])
        raise InputError(f"{sheet.name}: {len(missing)} of {len(paths)} files in column "
                         f"{column!r} do not exist (relative paths are read against {base}), "
                         f"e.g. {shown}; fix the paths or remove those rows")
    first: dict[Path, int] = {}
    for k, p in enumerate(paths):
        if p in first:
            raise InputError(f"{sheet.name}: rows {sheet.rows[first[p]][0]} and "
                             f"{sheet.rows[k][0]} of column {column!r} name the same file {p}; "
                             "keep one of them")
        first[p] = k
    return tuple(paths)


def _single_labels(sheet: _Sheet, column: str) -> tuple[NDArray[np.int64], tuple[str, ...],
                                                        list[str]]:
    """Codes and class names of one label column (integers sorted as integers)."""
    cells = sheet.cells(column)
    _no_empty(sheet, column, cells, "label")
    ints = [_as_int(c) for c in cells]
    numeric = all(v is not None for v in ints)
    values = np.asarray(ints if numeric else cells, dtype=np.int64 if numeric else None)
    codes, classes = check_labels(values, len(cells), name=f"{sheet.name}: column {column!r}",
                                  samples="rows")
    names = tuple(str(c) for c in classes.tolist())
    notes = []
    if numeric and not np.array_equal(classes, np.arange(classes.size)):
        notes.append(f"{sheet.name}: integer labels {', '.join(names)} coded 0..{len(names) - 1} "
                     "in that order")
    return codes, names, notes


def _multi_labels(sheet: _Sheet, columns: tuple[str, ...]) -> NDArray[np.int64]:
    """The (N, L) 0/1 indicators of multi-label columns."""
    out = np.zeros((len(sheet.rows), len(columns)), dtype=np.int64)
    for j, column in enumerate(columns):
        cells = sheet.cells(column)
        _no_empty(sheet, column, cells, "0/1 label")
        for k, cell in enumerate(cells):
            value = _as_int(cell)
            if value not in (0, 1):
                raise InputError(f"{sheet.name}: {sheet.where(k, column)} holds {cell!r}, not 0 "
                                 "or 1; a multi-label column holds 0/1 only (or name the single "
                                 "label column with --label-column)")
            out[k, j] = value
    return out


def _check_counts(sheet: _Sheet, column: str, labels: NDArray[np.int64],
                  names: tuple[str, ...], min_per_class: int) -> None:
    """Every class (every label, multi-label) has at least ``min_per_class`` images."""
    if len(names) > MAX_CLASSES:
        raise InputError(f"{sheet.name}: column {column!r} has {len(names)} classes, more than "
                         f"{MAX_CLASSES}; is it the label column? (name it with "
                         "--label-column)")
    counts = labels.sum(axis=0) if labels.ndim == 2 else np.bincount(labels,
                                                                     minlength=len(names))
    for c in np.flatnonzero(counts < min_per_class):
        rows = np.flatnonzero(labels[:, c] == 1 if labels.ndim == 2 else labels == c)
        where = ", ".join(str(sheet.rows[k][0]) for k in rows[:_SHOWN])
        at = f" (row {where})" if where else ""
        what = (f"column {names[c]!r} has {int(counts[c])} positive image(s)" if labels.ndim == 2
                else f"column {column!r}: class {names[c]!r} has {int(counts[c])} image(s)")
        raise InputError(f"{sheet.name}: {what}{at}, fewer than {min_per_class}; add images of "
                         "it or remove its rows")


def _splits(sheet: _Sheet, column: str) -> tuple[str, ...]:
    cells = sheet.cells(column)
    _no_empty(sheet, column, cells, "split")
    out = []
    for k, cell in enumerate(cells):
        split = SPLIT_VALUES.get(cell.lower())
        if split is None:
            raise InputError(f"{sheet.name}: {sheet.where(k, column)} holds {cell!r}, not a "
                             f"split; use {', '.join(SPLIT_VALUES)} (any case)")
        out.append(split)
    return tuple(out)


def _check_patient_splits(sheet: _Sheet, column: str, groups: tuple[str, ...],
                          splits: tuple[str, ...]) -> None:
    """One patient's images all lie in one split (else the test set has seen the patient)."""
    first: dict[str, int] = {}
    for k, (group, split) in enumerate(zip(groups, splits)):
        j = first.setdefault(group, k)
        if splits[j] != split:
            raise InputError(f"{sheet.name}: column {column!r}: patient {group!r} is in split "
                             f"{splits[j]!r} (row {sheet.rows[j][0]}) and {split!r} (row "
                             f"{sheet.rows[k][0]}); keep each patient's images in one split")


def read_label_table(path: PathLike, *, path_column: str | None = None,
                     label_columns: str | Sequence[str] | None = None,
                     group_column: str | None = None, split_column: str | None = None,
                     min_per_class: int = 2) -> LabelTable:
    """Read and check a label table (``.csv``; ``.tsv`` or ``.tab``; ``.txt`` sniffed).

    Parameters
    ----------
    path : str or PathLike
        The table, UTF-8 (a byte-order mark is accepted), with a header row.
    path_column, group_column, split_column : str, optional
        The column of image paths, of patients (groups), of splits. Default: found by header
        name (case-insensitive, :data:`ROLE_NAMES`); no group or split column is fine.
    label_columns : str or sequence of str, optional
        One column of class labels (names or integers), or several 0/1 columns (multi-label).
        Default: a column named as in :data:`ROLE_NAMES`, else two or more columns holding
        only 0/1 (multi-label), else the only column left.
    min_per_class : int
        Fewest images a class (a label's positives, multi-label) may have.

    Returns
    -------
    LabelTable

    Raises
    ------
    InputError
        One line naming the table, row and column: a missing or duplicate file, an empty cell,
        a multi-label cell that is not 0/1, a class under ``min_per_class``, a patient in two
        splits, an unknown split, no header, no data rows, a row of the wrong length, more
        than ``MAX_CLASSES`` classes, or columns whose role is ambiguous.
    """
    table = Path(path)
    sheet, notes = _sheet(table)
    labels_given = [label_columns] if isinstance(label_columns, str) else label_columns
    labels_given = list(labels_given) if labels_given else None  # an empty list: found by name
    given = {"path": path_column, "group": group_column, "split": split_column}
    roles, more = _roles(sheet, given, labels_given)
    notes += more
    paths = _resolve(sheet, roles["path"][0], table.resolve().parent)
    label_cols = roles["label"]
    if len(label_cols) == 1:
        labels, names, more = _single_labels(sheet, label_cols[0])
        notes += more
        task = "binary" if len(names) == 2 else "multi-class"
    else:
        labels, names, task = _multi_labels(sheet, label_cols), label_cols, "multi-label"
    _check_counts(sheet, label_cols[0], labels, names, min_per_class)
    groups = splits = None
    if "group" in roles:
        _no_empty(sheet, roles["group"][0], sheet.cells(roles["group"][0]), "patient")
        groups = tuple(sheet.cells(roles["group"][0]))
    if "split" in roles:
        splits = _splits(sheet, roles["split"][0])
    if groups is not None and splits is not None:
        _check_patient_splits(sheet, roles["group"][0], groups, splits)
    return LabelTable(paths, labels, names, task, groups, splits, table.resolve(), roles,
                      tuple(notes),
                      tuple(row for row, _ in sheet.rows))


# ------------------------------------------------------------------------------ patients
def _group_index(groups: ArrayLike) -> tuple[NDArray[np.int64], int]:
    """Each row's group number (0..G-1, in sorted order of the values) and G."""
    values = np.asarray(groups)
    if values.ndim != 1:
        raise InputError(f"groups must be one value per row (shape (N,)); got {values.shape}")
    names, inverse = np.unique(values, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), int(names.size)


def _label_matrix(labels: ArrayLike, n: int) -> NDArray[np.float64]:
    """Per-row weights of the things to stratify: one-hot classes, or multi-label indicators."""
    y = np.asarray(labels)
    if y.shape[:1] != (n,) or y.ndim not in (1, 2):
        raise InputError(f"labels (shape {y.shape}) must be (N,) or (N, L) for the {n} rows")
    if y.ndim == 2:
        return y.astype(np.float64)
    classes, codes = np.unique(y, return_inverse=True)
    return np.eye(classes.size)[codes.reshape(-1)]


def group_folds(groups: ArrayLike, labels: ArrayLike, k: int, seed: int = 0) -> NDArray[np.int64]:
    """Cut rows into ``k`` folds that keep each group (patient) whole, stratified by label as
    far as the groups allow.

    A deterministic greedy: groups are taken largest first (equal sizes: those holding the
    rarest class first, then in an order drawn with ``numpy.random.default_rng(seed)``), and
    each goes to the fold that most needs its labels,
    ``sum_c n_gc * (target_c - n_fc) / target_c`` over the classes c (target_c: the class's
    images over ``k``; ties: the smaller fold, then the lower index). Only folds that stay
    within the largest group's size of the smallest fold are candidates, so fold sizes never
    differ by more than the largest group's image count.

    Parameters
    ----------
    groups : array-like (N,)
        Each row's group (e.g. patient id).
    labels : array-like (N,) or (N, L)
        Class values, or 0/1 indicators of L labels.
    k : int
        Number of folds, 2..number of groups.
    seed : int
        Seed of the order of equal-sized groups.

    Returns
    -------
    ndarray, int64 (N,)
        Each row's fold, 0..k-1.
    """
    index, n_groups = _group_index(groups)
    if not 2 <= k <= n_groups:
        raise InputError(f"{k} folds need 2 to {n_groups} groups (patients); there are "
                         f"{n_groups}; choose fewer folds")
    weights = _label_matrix(labels, index.size)
    per_group = np.zeros((n_groups, weights.shape[1]))
    np.add.at(per_group, index, weights)
    size = np.bincount(index, minlength=n_groups)
    target = np.maximum(per_group.sum(axis=0) / k, 1e-12)
    tiebreak = np.random.default_rng(seed).permutation(n_groups)
    # Among equal sizes, groups holding a rare class go first, while every fold can still take
    # them (placed last, they would land wherever the size limit leaves room).
    rarest = np.max(np.where(per_group > 0, 1.0 / target, 0.0), axis=1, initial=0.0)
    order = np.lexsort((tiebreak, -rarest, -size))  # the last key is the primary one
    fold_of = _greedy_assign(order, per_group, size, target, k)
    return fold_of[index]


def _greedy_assign(order: NDArray[np.int64], per_group: NDArray[np.float64],
                   size: NDArray[np.int64], target: NDArray[np.float64],
                   k: int) -> NDArray[np.int64]:
    """The fold of each group, assigned in ``order`` (see :func:`group_folds`)."""
    counts = np.zeros((k, per_group.shape[1]))
    sizes = np.zeros(k, dtype=np.int64)
    fold_of = np.zeros(per_group.shape[0], dtype=np.int64)
    largest = int(size.max())
    for g in order:
        # Candidates keep the spread of fold sizes within the largest group's size.
        ok = sizes + size[g] <= sizes.min() + largest
        need = ((target - counts) / target) @ per_group[g]
        need = np.where(ok, need, -np.inf)
        best = np.lexsort((np.arange(k), sizes, -need))[0]
        fold_of[g] = best
        counts[best] += per_group[g]
        sizes[best] += size[g]
    return fold_of


def group_resample_indices(groups: ArrayLike, rng: np.random.Generator | int) -> NDArray[np.int64]:
    """A bootstrap sample of groups: draw as many groups as there are, with replacement, and
    return the rows of every drawn group (a group drawn twice gives its rows twice).

    Resampling patients rather than images keeps one patient's correlated images together, so
    the spread of a resampled statistic is not understated.

    Parameters
    ----------
    groups : array-like (N,)
        Each row's group (e.g. patient id).
    rng : numpy.random.Generator or int
        The random stream (an int seeds ``numpy.random.default_rng``).

    Returns
    -------
    ndarray, int64
        Row indices, drawn group by group in draw order (rows of a group in table order).
    """
    index, n_groups = _group_index(groups)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if n_groups == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.argsort(index, kind="stable")  # rows grouped, each group's in table order
    size = np.bincount(index, minlength=n_groups)
    start = np.concatenate(([0], np.cumsum(size)[:-1]))
    drawn = gen.integers(0, n_groups, size=n_groups)
    # Position j of the output is row (start of its group) + (its offset inside that group).
    n = size[drawn]
    offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    picked: NDArray[np.int64] = rows[np.repeat(start[drawn], n) + offset].astype(np.int64)
    return picked
