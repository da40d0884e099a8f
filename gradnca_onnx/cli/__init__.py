"""The ``gradnca-onnx`` command line: thin click wrappers over the library API.

Each sub-command lives in its own module and registers itself on :data:`main` when imported
below.
"""

from __future__ import annotations

import click

from .._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="gradnca-onnx")
def main() -> None:
    """Rank pre-trained models by how well they will transfer to a target dataset."""


# Sub-command modules (one per command family); each imports ``main`` and decorates onto it.
from . import _commands  # noqa: E402,F401
