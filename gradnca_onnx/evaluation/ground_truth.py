"""Ground-truth transfer performance from a log of fine-tuning runs (REFERENCE section 7)."""

from __future__ import annotations

import csv
import gzip
import io
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from .table import PathLike, SourceTargetTable


def read_runs(path: PathLike) -> list[dict[str, str]]:
    """Read a run log (one row a fine-tuning run, with a header) from ``.csv`` or ``.csv.gz``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"run log {str(p)!r} does not exist or is not a file")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"run log {str(p)!r} is not UTF-8 CSV text") from None
    return list(csv.DictReader(io.StringIO(text)))


def _number(run: Mapping[str, str], field: str, where: str) -> float:
    cell = run.get(field)
    if cell is None:
        raise InputError(f"{where}: no column {field!r}; the run log needs it")
    cell = cell.strip()
    if cell == "" or cell.lower() == "nan":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise InputError(f"{where}: non-numeric {field} {cell!r}") from None


def ground_truth_from_runs(runs: Iterable[Mapping[str, str]], *, source_field: str = "source_flag",
                           target_field: str = "target_flag", loss_field: str = "val_loss",
                           value_field: str = "test_auc", sources: Sequence[str] | None = None,
                           targets: Sequence[str] | None = None, scale: float = 1.0,
                           name: str = "ground truth") -> SourceTargetTable:
    """Per (source, target), the ``value_field`` of the run with the lowest ``loss_field``.

    This is the paper's rule: the ground truth of a pair is the test AUC of the grid run with
    the lowest validation loss. Runs without a loss (failed or unfinished runs leave it empty)
    are skipped; among runs with the same lowest loss the first in input order wins.

    Parameters
    ----------
    runs : iterable of mappings
        Rows of a run log (e.g. from :func:`read_runs`), values as strings.
    source_field, target_field, loss_field, value_field : str
        Column names.
    sources, targets : sequence of str, optional
        Row and column order of the result (default: sorted names found). A pair with no
        usable run is NaN.
    scale : float
        Multiplier of the value (the released model-scenario table is AUC x 100).
    name : str
        Name of the resulting table.

    Returns
    -------
    SourceTargetTable
    """
    best: dict[tuple[str, str], tuple[float, float]] = {}
    n_rows = 0
    for i, run in enumerate(runs):
        n_rows += 1
        where = f"{name}, run {i + 1}"
        src, tgt = run.get(source_field), run.get(target_field)
        if src is None or tgt is None:
            missing = source_field if src is None else target_field
            raise InputError(f"{where}: no column {missing!r}; the run log needs it")
        loss = _number(run, loss_field, where)
        if math.isnan(loss):
            continue
        value = _number(run, value_field, where)
        key = (src.strip(), tgt.strip())
        if key not in best or loss < best[key][0]:
            best[key] = (loss, value)
    if not best:
        raise InputError(f"{name}: none of the {n_rows} runs has a {loss_field}; nothing to select")
    srcs = tuple(sources) if sources is not None else tuple(sorted({s for s, _ in best}))
    tgts = tuple(targets) if targets is not None else tuple(sorted({t for _, t in best}))
    values = np.full((len(srcs), len(tgts)), np.nan)
    for (s, t), (_, v) in best.items():
        if s in srcs and t in tgts:
            values[srcs.index(s), tgts.index(t)] = v * scale
    return SourceTargetTable(srcs, tgts, values, name)
