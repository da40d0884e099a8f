"""A plain ONNX classifier (``gradnca-onnx import``): the one source that is not torch code.

The importer (:mod:`gradnca_onnx.importers`) reads the graph and interprets it in torch; this
source only says how such a model is recorded (``reference`` and ``checkpoint`` = the file's
name, ``checkpoint_sha256`` = its hash, ``options`` = what the importer learnt) and why it
cannot be fine-tuned. It imports no torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ..zoo.manifest import SourceSpec
from .base import LoadedModel, Member, ModelSource


class OnnxSource(ModelSource):
    """An ONNX file given to ``gradnca-onnx import``."""

    kind = "onnx"
    since_schema = 2
    summary = "an ONNX image classifier file (gradnca-onnx import)"
    reads_path = True
    not_rebuildable = "cannot be fine-tuned (an ONNX graph holds no trainable module)"

    def wrap(self, module: Any, path: str | os.PathLike, options: dict[str, Any]
             ) -> LoadedModel:
        """The imported model: ``module`` (the importer's torch interpreter of the graph, or
        ``None`` for a features-only member, which never leaves ONNX) from the file ``path``."""
        p = Path(path)
        return LoadedModel(module=module, kind=self.kind, reference=p.name,
                           architecture=p.stem or "onnx", checkpoint=p, options=dict(options))

    def describe_file(self, path: str | os.PathLike, options: dict[str, Any]) -> SourceSpec:
        """The manifest's ``source`` block of the ONNX file ``path`` (:meth:`describe`)."""
        return self.describe(self.wrap(None, path, options))

    def rebuild(self, member: Member, *, checkpoint: str | os.PathLike | None = None,
                trust_pickle: bool = False, trust_code: bool = False) -> LoadedModel:
        # Before any checkpoint search: an imported member's "checkpoint" is its ONNX file,
        # and --checkpoint cannot help.
        raise SourceError(
            f"{member.path} was imported from the ONNX file {member.source.reference}, and an "
            "ONNX graph cannot be fine-tuned (--checkpoint does not change that): fine-tune the "
            "original model instead, as --source ARCH or package.module:callable with "
            "--checkpoint (its framework checkpoint), or export that checkpoint with "
            "gradnca-onnx export first")


SOURCES = (OnnxSource(),)
