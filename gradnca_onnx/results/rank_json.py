"""Reading ``rank --format json`` output back: the scores every ranked model got per target.

One rank document scores one target (``gradnca-onnx/rank/1`` or ``/2``); a several-target
document (``gradnca-onnx/rank-targets/*``) holds one per target in ``rankings``. Every score
that rank reports becomes a method: ``GradNCA`` (the combined score S), ``S_LP``, ``S_FU`` and
each ``--metrics`` baseline under its registry name (``logme``, ..., the static ``params``).
A layout this version does not know is refused, never guessed at.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

from ..errors import InputError
from ..io.loaders import load_json

PathLike = Union[str, "os.PathLike[str]"]

#: rank JSON field -> method name (the metrics keep their registry names).
TERM_NAMES: dict[str, str] = {"score": "GradNCA", "lp": "S_LP", "fu": "S_FU"}

#: The rank JSON layouts this reader knows: one target, and several targets.
RANK_SCHEMAS = ("gradnca-onnx/rank/1", "gradnca-onnx/rank/2")
RANK_TARGETS_SCHEMAS = ("gradnca-onnx/rank-targets/1", "gradnca-onnx/rank-targets/2")

_GIVE = "give the output of `gradnca-onnx rank --format json`"


@dataclass(frozen=True)
class RankScores:
    """The scores of rank documents: ``values[target][model][method]`` (NaN: a model that
    failed, or a score it has not, e.g. a features-only member's S).

    ``sources`` are the models in order of first appearance, ``targets`` in document order,
    ``methods`` in order of first appearance.
    """

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    methods: tuple[str, ...]
    values: Mapping[str, Mapping[str, Mapping[str, float]]]


def read_rank_document(path: PathLike) -> Mapping[str, Any]:
    """The parsed JSON of a rank output file (its layout is checked by :func:`rankings_of`)."""
    p = Path(path)
    where = f"--rank {p}"
    if not p.is_file():
        raise InputError(f"{where}: no such file; {_GIVE}")
    try:
        doc = load_json(p.read_text(encoding="utf-8"), where)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where}: not JSON ({type(exc).__name__}); {_GIVE}") from None
    return doc


def rankings_of(doc: Any, where: str) -> list[Mapping[str, Any]]:
    """The single-target rank documents in ``doc`` (itself, or the entries of a several-target
    document); any other layout is refused with a one-line :class:`InputError`."""
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema in RANK_TARGETS_SCHEMAS:
        rankings = doc.get("rankings")
        if not isinstance(rankings, list) or not all(isinstance(r, dict) for r in rankings):
            raise InputError(f"{where}: 'rankings' is not a list of rank documents; {_GIVE}")
        for r in rankings:
            rankings_of(r, where)  # each must be a rank document this reader knows
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


def _target_cells(ranking: Mapping[str, Any], where: str) -> tuple[str, dict[str, dict]]:
    """(target name, model -> method -> value) of one single-target document."""
    target = str((ranking.get("target") or {}).get("name") or "")
    if not target:
        raise InputError(f"{where}: a ranking without a target name")
    try:
        cells = {str(m["model"]): {} if m.get("error") else _cells(m)
                 for m in ranking.get("models") or []}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{where}: target {target!r}: a model entry is malformed "
                         f"({type(exc).__name__}: {exc}); {_GIVE}") from None
    return target, cells


def rank_scores(documents: Iterable[PathLike | Mapping[str, Any]]) -> RankScores:
    """Every score of rank JSON output (paths or parsed documents), by target and model.

    Raises
    ------
    InputError
        A file that is not rank JSON, a target scored twice, or no models at all.
    """
    per_target: dict[str, dict[str, dict[str, float]]] = {}
    sources: list[str] = []
    for d in documents:
        where = f"--rank {d}" if not isinstance(d, Mapping) else "rank document"
        doc = d if isinstance(d, Mapping) else read_rank_document(d)
        for ranking in rankings_of(doc, where):
            target, cells = _target_cells(ranking, where)
            if target in per_target:
                raise InputError(f"{where}: target {target!r} is scored twice; give each "
                                 "target's rank output once")
            sources += [name for name in cells if name not in sources]
            per_target[target] = cells
    if not sources:
        raise InputError("the rank output holds no models")
    methods: list[str] = []
    for cells in per_target.values():
        for row in cells.values():
            methods += [k for k in row if k not in methods]
    return RankScores(tuple(sources), tuple(per_target), tuple(methods), per_target)
