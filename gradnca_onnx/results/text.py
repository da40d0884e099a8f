"""Text for a terminal: every control character of zoo text visible, and aligned tables.

A zoo is input the user may not have written: a model directory name or a manifest's
``pretrained_on`` holding ESC, CR or a right-to-left override could clear the screen, move the
cursor or reorder the rows the user reads. :func:`printable` turns each such character into a
visible Python-style escape. Data files (CSV, JSON) keep their values exact instead.
:func:`aligned` lays out every plain-text table of the package.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

#: C0 controls (TAB, LF, CR and ESC included), DEL, C1 controls, and the Unicode bidi
#: controls (marks, embeddings, overrides, isolates) that reorder what a terminal shows.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``text`` with every control and bidi character as a visible escape.

    ESC becomes ``\\x1b``, CR ``\\x0d``, U+202E (right-to-left override) ``\\u202e``; a
    backslash itself is kept, so ordinary Windows paths read as they are. ``None`` becomes
    ``"None"`` like ``str``.

    Examples
    --------
    >>> printable("chest\\x1b[2J\\u202exray\\r")
    'chest\\\\x1b[2J\\\\u202exray\\\\x0d'
    """
    return _UNSAFE.sub(_escape, str(text))


#: The package's plain-text tables are not drawn with rich (a dependency already), measured on
#: rich 13: a rich ``Table`` rule spans each cell's padding, so the rank table's rule
#: ``----  ------`` (dashes as wide as the column, two spaces between) comes out as
#: ``----- -------``, and no box and padding setting gives both the two-space gap and a
#: column-wide rule; the rank table is a documented output (byte-identical across versions).
#: rich would also parse ``[...]`` in a model name as markup unless every cell were wrapped.
#: So :func:`aligned` is the one aligned-table writer.
COLUMN_GAP = "  "


def aligned(rows: Sequence[Sequence[str]], *, right: bool = False,
            rules: Iterable[int] = (0,), full_rule: bool = False) -> list[str]:
    """Lines of a plain-text table: columns padded to their widest cell, two spaces apart.

    Parameters
    ----------
    rows : sequence of rows of str, the header first; every row as long as the header
    right : right-justify every column after the first (numbers); else all are left-justified
    rules : indexes of the rows a rule line follows (default: the header)
    full_rule : a rule is one unbroken line as wide as the table; else dashes under each
        column, two spaces apart

    Returns
    -------
    list of str
        One line per row and rule, trailing spaces removed.
    """
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    line = ("-" * (sum(widths) + len(COLUMN_GAP) * (len(widths) - 1)) if full_rule else
            COLUMN_GAP.join("-" * w for w in widths))
    after = set(rules)
    out = []
    for j, r in enumerate(rows):
        out.append(COLUMN_GAP.join(c.rjust(w) if right and n else c.ljust(w)
                                   for n, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j in after:
            out.append(line)
    return out
