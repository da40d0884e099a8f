"""Sources x targets tables (scores or ground truth) and their CSV layout."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError
from ..io.atomic import atomic_write_text

PathLike = Union[str, "os.PathLike[str]"]

_MISSING = {"", "nan", "na", "n/a", "none", "null", "-"}


@dataclass(frozen=True)
class SourceTargetTable:
    """One value per (source, target) pair: a metric's scores or the ground-truth AUCs.

    Parameters
    ----------
    sources : sequence of str
        Row names: the pre-trained models (source datasets or architectures).
    targets : sequence of str
        Column names: the target datasets.
    values : array-like of shape (n_sources, n_targets)
        Floats; NaN marks a missing pair (the released files leave source == target empty).
    name : str
        What the table is (a file path or a method name), used in error messages.
    """

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    values: NDArray[np.float64]
    name: str = "table"

    def __post_init__(self) -> None:
        sources = tuple(str(s) for s in self.sources)
        targets = tuple(str(t) for t in self.targets)
        values = np.array(self.values, dtype=np.float64)
        if values.shape != (len(sources), len(targets)):
            raise InputError(
                f"{self.name}: values have shape {values.shape} but there are {len(sources)} sources "
                f"and {len(targets)} targets"
            )
        for kind, names in (("source", sources), ("target", targets)):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise InputError(f"{self.name}: duplicate {kind} name(s) {dupes}; each must appear once")
            if any(not n for n in names):
                raise InputError(f"{self.name}: empty {kind} name; name every {kind}")
        if np.isinf(values).any():
            raise InputError(f"{self.name}: contains inf; use NaN (an empty cell) for a missing value")
        values.setflags(write=False)
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "values", values)

    def column(self, target: str) -> NDArray[np.float64]:
        """The values of every source on ``target``."""
        if target not in self.targets:
            raise InputError(f"{self.name}: no target {target!r}; it has {list(self.targets)}")
        return self.values[:, self.targets.index(target)]

    def select(self, sources: Sequence[str] | None = None,
               targets: Sequence[str] | None = None) -> "SourceTargetTable":
        """The same table restricted to, and reordered as, ``sources`` and ``targets``."""
        sources = self.sources if sources is None else tuple(sources)
        targets = self.targets if targets is None else tuple(targets)
        missing_s = [s for s in sources if s not in self.sources]
        missing_t = [t for t in targets if t not in self.targets]
        if missing_s or missing_t:
            parts = []
            if missing_s:
                parts.append(f"source(s) {missing_s}")
            if missing_t:
                parts.append(f"target(s) {missing_t}")
            raise InputError(f"{self.name}: has no {' and no '.join(parts)}")
        rows = [self.sources.index(s) for s in sources]
        cols = [self.targets.index(t) for t in targets]
        return SourceTargetTable(sources, targets, self.values[np.ix_(rows, cols)], self.name)

    def map_values(self, func: Callable[[NDArray[np.float64]], ArrayLike],
                   name: str | None = None) -> "SourceTargetTable":
        """A table with ``func(values)`` (e.g. ``lambda v: 1 - v``) and the same names."""
        return SourceTargetTable(self.sources, self.targets, func(self.values),
                                 self.name if name is None else name)

    def to_csv(self, path: PathLike | None = None) -> str:
        """Write the released layout (``,source,<targets...>`` with a 0-based index column).

        Returns the CSV text; also writes it to ``path`` when given. Floats use ``repr`` so that
        reading the file back gives the same values; NaN is an empty cell.
        """
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["", "source", *self.targets])
        for i, src in enumerate(self.sources):
            writer.writerow([i, src, *("" if math.isnan(v) else repr(float(v)) for v in self.values[i])])
        text = buf.getvalue()
        if path is not None:
            # The package's one output writer: atomic, and never through a link or a device.
            atomic_write_text(path, text)
        return text


def _parse_cell(cell: str, *, name: str, source: str, target: str) -> float:
    text = cell.strip()
    if text.lower() in _MISSING:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise InputError(
            f"{name}: non-numeric value {cell!r} for source {source!r}, target {target!r}; "
            "every cell must be a number or empty"
        ) from None
    if math.isinf(value):
        raise InputError(f"{name}: infinite value for source {source!r}, target {target!r}")
    return value


def parse_table(rows: Iterable[Sequence[str]], *, name: str = "table") -> SourceTargetTable:
    """Build a table from CSV rows (header first).

    Two layouts are accepted: the released one, ``,source,<target>...`` with a leading unnamed
    index column, and a plain one whose first column holds the source names (any header,
    e.g. ``source`` or empty). Cells that are empty or ``nan`` are missing (NaN).
    """
    rows = [list(r) for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise InputError(f"{name}: is empty; expected a header row 'source,<target>,...' and one row per source")
    header = [h.strip() for h in rows[0]]
    lowered = [h.lower() for h in header]
    if "source" in lowered:
        src_col = lowered.index("source")
        extra = [h for h in header[:src_col] if h]
        if extra:
            raise InputError(
                f"{name}: unexpected column(s) {extra} before the 'source' column; only an unnamed "
                "index column may come first"
            )
    else:
        src_col = 0
    targets = header[src_col + 1:]
    if not targets:
        raise InputError(f"{name}: no target columns after the source column in the header {header}")
    if len(rows) < 2:
        raise InputError(f"{name}: has a header but no source rows")
    sources: list[str] = []
    values = np.empty((len(rows) - 1, len(targets)))
    for i, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise InputError(
                f"{name}: row {i + 2} has {len(row)} cells but the header has {len(header)}"
            )
        source = row[src_col].strip()
        sources.append(source)
        for j, (target, cell) in enumerate(zip(targets, row[src_col + 1:])):
            values[i, j] = _parse_cell(cell, name=name, source=source, target=target)
    return SourceTargetTable(tuple(sources), tuple(targets), values, name)


def read_table(path: PathLike, *, name: str | None = None) -> SourceTargetTable:
    """Read a sources x targets CSV file (see :func:`parse_table` for the layouts).

    Parameters
    ----------
    path : str or path-like
        The CSV file.
    name : str, optional
        Name used in error messages (default: the path).

    Returns
    -------
    SourceTargetTable
    """
    label = str(path) if name is None else name
    p = Path(path)
    if not p.exists():
        raise InputError(f"{label}: file {str(p)!r} does not exist")
    if p.is_dir():
        raise InputError(f"{label}: {str(p)!r} is a directory; give a CSV file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{label}: {str(p)!r} is not a UTF-8 text CSV file") from None
    try:
        return parse_table(csv.reader(io.StringIO(text)), name=label)
    except csv.Error as exc:
        raise InputError(f"{label}: malformed CSV ({exc})") from None


def align(scores: SourceTargetTable, truth: SourceTargetTable) -> tuple[SourceTargetTable, SourceTargetTable]:
    """Reorder ``scores`` and ``truth`` to the same sources and to the targets of ``scores``.

    The sources must be the same set in both tables; every target of ``scores`` must be a
    target of ``truth`` (the truth may have more, e.g. the released ``AUCs_dataset.csv`` has
    ChestMNIST, which no metric was scored on).

    Returns
    -------
    (scores, truth) : both with ``truth.sources`` order and ``scores.targets`` order.
    """
    extra = [s for s in scores.sources if s not in truth.sources]
    missing = [s for s in truth.sources if s not in scores.sources]
    if extra or missing:
        parts = []
        if missing:
            parts.append(f"lacks source(s) {missing} that {truth.name} has")
        if extra:
            parts.append(f"has source(s) {extra} that {truth.name} lacks")
        raise InputError(
            f"{scores.name}: {' and '.join(parts)}; give one row per source of the ground truth, "
            "spelled the same way"
        )
    unknown = [t for t in scores.targets if t not in truth.targets]
    if unknown:
        raise InputError(
            f"{scores.name}: target(s) {unknown} are not in {truth.name} (its targets: "
            f"{list(truth.targets)}); rename or drop those columns"
        )
    return scores.select(truth.sources), truth.select(None, scores.targets)
