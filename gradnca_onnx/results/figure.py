"""The one way the package makes and saves a matplotlib figure (rank and evaluation plots).

matplotlib is an optional extra (``pip install "gradnca-onnx[plot]"``), imported only when a
figure is made. Figures use ``matplotlib.figure.Figure`` (no pyplot, no GUI backend) and are
saved as PNG and PDF with the package's atomic writer, without the dates and the matplotlib
version in their metadata, so the same input gives the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ..errors import optional_import

if TYPE_CHECKING:
    import os

    from matplotlib.figure import Figure

PathLike = Union[str, "os.PathLike[str]"]

#: Every figure is written in each of these formats.
FORMATS: tuple[str, ...] = ("png", "pdf")
#: Metadata left out per format: PDF dates (matplotlib stamps the clock or SOURCE_DATE_EPOCH)
#: and the PNG's "Software" (the matplotlib version).
_NO_STAMPS = {"pdf": {"CreationDate": None, "ModDate": None}, "png": {"Software": None}}


def figure(width: float, height: float) -> Figure:
    """A new constrained-layout figure of ``width`` x ``height`` inches.

    Raises :class:`~gradnca_onnx.errors.MissingExtraError` naming the ``plot`` extra when
    matplotlib is not installed.
    """
    module = optional_import("matplotlib.figure", "plot", "plots")
    return module.Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, stem: PathLike) -> list[Path]:
    """Write ``fig`` as ``stem.png`` and ``stem.pdf`` (the parent created) and return the paths.

    Written atomically by the package's one output writer: a link, device or FIFO at a path
    is refused, never written through.
    """
    from ..io.atomic import atomic_write_bytes

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, metadata=_NO_STAMPS[fmt])
        path = stem.with_name(f"{stem.name}.{fmt}")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
