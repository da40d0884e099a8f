"""Text from a zoo, a cache or a target shown on a terminal: every control character visible.

A zoo is input the user may not have written: a model directory name or a manifest's
``pretrained_on`` holding ESC, CR or a right-to-left override could clear the screen, move the
cursor or reorder the rows the user reads. :func:`printable` turns each such character into a
visible Python-style escape. Data files (CSV, JSON) keep their values exact instead.
"""

from __future__ import annotations

import re

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
