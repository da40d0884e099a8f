"""Score tables from ``rank --format json`` output, for ``evaluate --rank``.

One rank document scores one target (``gradnca-onnx/rank/1`` or ``/2``); a several-target
document (``gradnca-onnx/rank-targets/*``) holds one per target in ``rankings``. Every score
that rank reports becomes a method: ``GradNCA`` (the combined score S), ``S_LP``, ``S_FU`` and
each ``--metrics`` baseline under its registry name (``logme``, ..., the static ``params``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import InputError
from ..io.loaders import load_json
from .table import PathLike, SourceTargetTable

#: rank JSON field -> method name (the metrics keep their registry names).
TERM_NAMES: dict[str, str] = {"score": "GradNCA", "lp": "S_LP", "fu": "S_FU"}


#: The rank JSON layouts this reader knows: one target, and several targets.
RANK_SCHEMAS = ("gradnca-onnx/rank/1", "gradnca-onnx/rank/2")
RANK_TARGETS_SCHEMAS = ("gradnca-onnx/rank-targets/1", "gradnca-onnx/rank-targets/2")

_GIVE = "give the output of `gradnca-onnx rank --format json`"


def _load(path: PathLike) -> Mapping[str, Any]:
    p = Path(path)
    where = f"--rank {p}"
    if not p.is_file():
        raise InputError(f"{where}: no such file; {_GIVE}")
    try:
        doc = load_json(p.read_text(encoding="utf-8"), where)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where}: not JSON ({type(exc).__name__}); {_GIVE}") from None
    return doc


def _rankings(doc: Any, where: str) -> list[Mapping[str, Any]]:
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema in RANK_TARGETS_SCHEMAS:
        rankings = doc.get("rankings")
        if not isinstance(rankings, list) or not all(isinstance(r, dict) for r in rankings):
            raise InputError(f"{where}: 'rankings' is not a list of rank documents; {_GIVE}")
        for r in rankings:
            _rankings(r, where)  # each must be a rank document this reader knows
        return rankings
    if schema in RANK_SCHEMAS:
        return [doc]
    if isinstance(schema, str) and schema.startswith(("gradnca-onnx/rank/",
                                                      "gradnca-onnx/rank-targets/")):
        # A newer layout may mean something else by the same fields: never guess.
        raise InputError(f"{where}: rank schema {schema!r} is not one this gradnca-onnx reads "
                         f"({', '.join(RANK_SCHEMAS + RANK_TARGETS_SCHEMAS)}); upgrade "
                         "gradnca-onnx or rank again with this version")
    raise InputError(f"{where}: not a rank JSON document (schema {schema or 'missing'}); "
                     f"{_GIVE}")


def _cells(model: Mapping[str, Any]) -> dict[str, float]:
    out = {TERM_NAMES[k]: model.get(k) for k in TERM_NAMES}
    out.update(model.get("metrics") or {})
    return {k: (math.nan if v is None else float(v)) for k, v in out.items()}


def scores_from_rank(documents: Iterable[PathLike | Mapping[str, Any]]
                     ) -> dict[str, SourceTargetTable]:
    """Method -> sources x targets table from rank JSON output (paths or parsed documents).

    Sources are the ranked models, in order of first appearance; a model that failed, or a
    score that does not exist (a features-only member's S), is NaN.

    Raises
    ------
    ValueError
        A file that is not rank JSON, a target scored twice, or no models at all.
    """
    per_target: dict[str, dict[str, dict[str, float]]] = {}
    sources: list[str] = []
    for d in documents:
        where = f"--rank {d}" if not isinstance(d, Mapping) else "rank document"
        doc = d if isinstance(d, Mapping) else _load(d)
        for ranking in _rankings(doc, where):
            target = str((ranking.get("target") or {}).get("name") or "")
            if not target:
                raise InputError(f"{where}: a ranking without a target name")
            if target in per_target:
                raise InputError(f"{where}: target {target!r} is scored twice; give each "
                                 "target's rank output once")
            try:
                cells = {str(m["model"]): {} if m.get("error") else _cells(m)
                         for m in ranking.get("models") or []}
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise InputError(f"{where}: target {target!r}: a model entry is malformed "
                                 f"({type(exc).__name__}: {exc}); {_GIVE}") from None
            sources += [name for name in cells if name not in sources]
            per_target[target] = cells
    if not sources:
        raise InputError("the rank output holds no models")
    targets = list(per_target)
    methods: list[str] = []
    for cells in per_target.values():
        for row in cells.values():
            methods += [k for k in row if k not in methods]
    out = {}
    for method in methods:
        values = np.full((len(sources), len(targets)), np.nan)
        for j, t in enumerate(targets):
            for name, row in per_target[t].items():
                values[sources.index(name), j] = row.get(method, math.nan)
        out[method] = SourceTargetTable(sources, targets, values, name=f"{method} (rank output)")
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
