"""Score tables from ``rank --format json`` output, for ``evaluate --rank``.

The documents are read by :mod:`gradnca_onnx.results.rank_json`; here every score becomes a
sources x targets table per method (``GradNCA``, ``S_LP``, ``S_FU`` and each baseline), and
methods that rank nothing are set aside.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

from ..results.rank_json import rank_scores
from .table import PathLike, SourceTargetTable


def scores_from_rank(documents: Iterable[PathLike | Mapping[str, Any]]
                     ) -> dict[str, SourceTargetTable]:
    """Method -> sources x targets table from rank JSON output (paths or parsed documents).

    Sources are the ranked models, in order of first appearance; a model that failed, or a
    score that does not exist (a features-only member's S), is NaN.

    Raises
    ------
    InputError
        A file that is not rank JSON, a target scored twice, or no models at all.
    """
    read = rank_scores(documents)
    out = {}
    for method in read.methods:
        values = np.full((len(read.sources), len(read.targets)), np.nan)
        for j, t in enumerate(read.targets):
            for name, row in read.values[t].items():
                values[read.sources.index(name), j] = row.get(method, math.nan)
        out[method] = SourceTargetTable(read.sources, read.targets, values,
                                        name=f"{method} (rank output)")
    return out


def drop_unrankable(truth: SourceTargetTable, scores: Mapping[str, SourceTargetTable]
                    ) -> tuple[dict[str, SourceTargetTable], dict[str, str]]:
    """Split off methods whose weighted tau is undefined on every target.

    A method is kept when, on at least one target, its scores of the candidate sources (the
    target's own row dropped) are finite and not all equal. A static baseline over sources of
    one architecture (every ``params`` the same) is such a method: it ranks nothing.

    Returns
    -------
    (kept, dropped) : the rankable methods, and the others with the reason.
    """
    from .correlation import paired_values
    from .table import align

    keep, dropped = {}, {}
    for name, table in scores.items():
        aligned, truth_t = align(table, truth)
        ok = False
        for t in aligned.targets:
            x, y, _ = paired_values(aligned, truth_t, t)
            ok |= bool(np.isfinite(x).all() and np.unique(x).size > 1)
        if ok:
            keep[name] = table
        else:
            dropped[name] = "scores missing or equal for every candidate source on every target"
    return keep, dropped
