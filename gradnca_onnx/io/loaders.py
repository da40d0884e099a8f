"""The one bounded reader of user JSON and YAML text (manifests, rank output, grid files).

Python's JSON and YAML parsers recurse once per nesting level, so a file of 100,000 ``[``
ends in ``RecursionError`` (and thousands of lines of traceback) instead of a message. No file
the package reads nests deeper than a few levels; :data:`MAX_NESTING` is far above that. JSON
text is scanned for its bracket depth before it is parsed; YAML (whose block nesting is by
indentation, not brackets) is parsed with ``RecursionError`` caught, and the parsed value's
depth is then measured without recursion.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import InputError

#: Deepest nesting of arrays/objects (lists/mappings) accepted in a user's JSON or YAML file.
MAX_NESTING = 64

# A JSON string (brackets inside it do not nest) or one bracket.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _too_deep(where: str) -> ValueError:
    return InputError(f"{where}: nested more than {MAX_NESTING} levels deep (lists or "
                      "objects inside one another); no file the package reads nests that "
                      "deep: check that it is the right file")


def json_depth(text: str) -> int:
    """The deepest bracket nesting of JSON ``text`` (brackets inside strings do not count);
    stops counting once past :data:`MAX_NESTING`."""
    depth = deepest = 0
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_NESTING:
                break
        elif tok in "]}":
            depth -= 1
    return deepest


def load_json(text: str, where: str) -> Any:
    """``json.loads(text)``, refusing nesting deeper than :data:`MAX_NESTING` first.

    Parameters
    ----------
    text : str
    where : str
        The file (and option) named in the error, e.g. ``"--rank r.json"``.

    Raises
    ------
    ValueError
        Too deeply nested, naming ``where``.
    json.JSONDecodeError
        Not JSON (the caller words it).
    """
    if json_depth(text) > MAX_NESTING:
        raise _too_deep(where)
    try:
        return json.loads(text)
    except RecursionError:  # pragma: no cover - the scan above refuses it first
        raise _too_deep(where) from None


def value_depth(value: Any) -> int:
    """Nesting depth of parsed JSON/YAML (a scalar is 0), measured without recursion.

    Each list or mapping is visited once, so YAML aliases (shared or even self-containing
    nodes) cost no more than the nodes they name; the count stops past :data:`MAX_NESTING`.
    """
    deepest, stack, seen = 0, [(value, 0)], set()
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list, tuple)):
            if id(v) in seen:
                continue
            seen.add(id(v))
        if isinstance(v, dict):
            items = list(v.keys()) + list(v.values())
        elif isinstance(v, (list, tuple)):
            items = list(v)
        else:
            continue
        deepest = max(deepest, d + 1)
        if deepest > MAX_NESTING:
            break
        stack.extend((i, d + 1) for i in items)
    return deepest


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``, refusing nesting deeper than :data:`MAX_NESTING`.

    Raises
    ------
    ValueError
        Too deeply nested, naming ``where``.
    ImportError
        PyYAML is not installed.
    yaml.YAMLError
        Not YAML (the caller words it).
    """
    import yaml

    try:
        value = yaml.safe_load(text)
    except RecursionError:
        raise _too_deep(where) from None
    if value_depth(value) > MAX_NESTING:
        raise _too_deep(where)
    return value
