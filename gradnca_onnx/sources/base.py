"""What every model source is: :class:`ModelSource`, and the model it gives, :class:`LoadedModel`.

Nothing here imports torch: a source's own module does, when it is first used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import SourceError
from ..zoo.manifest import Manifest, SourceSpec
from .architectures import ArchSpec

#: Kinds whose reference is a file holding the whole model (weights inside).
FILE_KINDS = ("torchscript", "torch_export")
#: What to fine-tune instead of a member that cannot be rebuilt.
TRAIN_ORIGINAL = ("fine-tune the original model instead (--source ARCH or "
                  "package.module:callable with --checkpoint)")


@dataclass
class LoadedModel:
    """A model ready for export or fine-tuning, with where it came from.

    ``module`` is an ``nn.Module`` in eval mode, a ``torch.jit.ScriptModule`` for
    ``kind="torchscript"``, a program's FX ``GraphModule`` for ``kind="torch_export"``
    (``None`` for an imported ONNX file's features-only member, which never leaves ONNX).
    ``kind`` names its source in the registry
    (:func:`gradnca_onnx.sources.get`). ``spec`` is the paper's layer table entry for its nine
    architectures, else ``None``.
    """

    module: Any
    kind: str
    reference: str
    architecture: str
    checkpoint: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    spec: ArchSpec | None = None
    #: The source's own feature choice: ``""`` when ``module``'s output is the embedding its
    #: library defines (a headless encoder wrapped to return it), else ``None`` (the exporter
    #: finds the classifier's input). An explicit ``--head`` wins.
    head: str | None = None
    #: The per-channel ``(mean, std)`` of the model's own preprocessing config and where it
    #: came from (e.g. ``"timm pretrained_cfg"``), else ``None``. An explicit ``--norm`` wins.
    normalisation: tuple[tuple[float, ...], tuple[float, ...], str] | None = None

    @property
    def default_name(self) -> str:
        """Model name used when the user gives none: architecture (+ checkpoint stem)."""
        own_file = self.kind in FILE_KINDS  # the file is the model: named after it alone
        base = Path(self.reference).stem if own_file else self.architecture
        if self.checkpoint is not None and not own_file:
            base = f"{base}-{self.checkpoint.stem}"
        safe = "".join(c if c.isalnum() or c in "._+-" else "-" for c in base).strip("-.")
        return safe[:128] or "model"

    def checkpoint_sha256(self) -> str | None:
        """SHA-256 of the checkpoint (or TorchScript, or ONNX) file, recorded in the manifest."""
        from ..io.hashing import sha256_file

        return sha256_file(self.checkpoint) if self.checkpoint is not None else None


@dataclass(frozen=True)
class Member:
    """An exported zoo member to rebuild: its directory and its manifest."""

    path: Path
    manifest: Manifest

    @property
    def source(self) -> SourceSpec:
        return self.manifest.source

    def where(self, field_name: str = "") -> str:
        """``DIR/manifest.json`` (and ``: field 'source.X'``) for a message."""
        text = f"{self.path}/manifest.json"
        return f"{text}: field 'source.{field_name}'" if field_name else text


class ModelSource:
    """One way a model enters the package, registered once (:func:`~.registry.register`).

    A source knows how to build its model from a reference and an optional checkpoint
    (:meth:`load`), how to describe it in a manifest's ``source`` block (:meth:`describe`)
    and how to build it again from that block (:meth:`rebuild`), or why it cannot
    (:attr:`not_rebuildable`).

    Attributes
    ----------
    kind : str
        The manifest's ``source.kind``; lower-case letters, digits and ``_``.
    addressable : bool
        Whether ``--arch KIND:REFERENCE`` names it (torchvision, timm, hf, monai and plugins).
    since_schema : int
        The first manifest schema that knows the kind (``onnx``: 2; ``timm``, ``hf``,
        ``monai``: 3); an older manifest naming it is refused when rebuilt.
    summary : str
        One line: what the reference is.
    not_rebuildable : str or None
        Why a member of this kind cannot be rebuilt for fine-tuning (``None``: it can).
    feature_choices : dict
        The ``--features`` choices it knows besides ``module:PATH`` (name -> what it is);
        :meth:`select_features` applies them.
    reads_path : bool
        Whether the reference is a file or directory the model is read from (an input that
        no output may replace).
    """

    kind: ClassVar[str] = ""
    addressable: ClassVar[bool] = False
    reads_path: ClassVar[bool] = False
    since_schema: ClassVar[int] = 1
    summary: ClassVar[str] = ""
    not_rebuildable: ClassVar[str | None] = None
    feature_choices: ClassVar[dict[str, str]] = {}

    def load(self, reference: str, checkpoint: str | os.PathLike | None = None, *,
             kwargs: dict[str, Any] | None = None, channels: int | None = None,
             trust_pickle: bool = False, seed: int = 0) -> LoadedModel:
        """Build the model ``reference`` names and load ``checkpoint`` into it.

        Parameters
        ----------
        reference : str
            What names the model in this source (an architecture, a directory, a file).
        checkpoint : path, optional
            Its weights; without them the weights are random, seeded by ``seed``.
        kwargs : dict, optional
            Constructor keyword arguments (``--arch-kwarg``).
        channels : int, optional
            Input channels; must match the checkpoint when both are given.
        trust_pickle : bool, default=False
            Allow a checkpoint that pickles Python objects (runs code from the file).
        seed : int, default=0
            Seed of the random initialisation.
        """
        raise SourceError(f"a {self.kind} source is not built from a name ({self.summary})")

    def select_features(self, loaded: LoadedModel, choice: str) -> LoadedModel:
        """``loaded`` with the features ``choice`` names (``--features``): here only
        ``module:PATH``, the output of a module of the library's model; sources override it
        for their :attr:`feature_choices`.

        Raises
        ------
        SourceError
            A choice this source does not know, or a module path the model lacks.
        """
        from .features import MODULE_PREFIX, check_choice, module_output

        check_choice(choice, self.feature_choices, f"a {self.kind} model")
        if choice.startswith(MODULE_PREFIX):
            return module_output(loaded, choice[len(MODULE_PREFIX):])
        raise SourceError(f"{type(self).__name__} lists --features {choice!r} but does not "
                          "apply it")

    def describe(self, loaded: LoadedModel) -> SourceSpec:
        """The manifest's ``source`` block of ``loaded``: the checkpoint by its plain file name
        (its full path is local to this machine) and sha256, and the constructor options."""
        return SourceSpec(kind=loaded.kind, reference=loaded.reference,
                          checkpoint=loaded.checkpoint.name if loaded.checkpoint else None,
                          checkpoint_sha256=loaded.checkpoint_sha256(),
                          options=dict(loaded.options))

    def rebuild(self, member: Member, *, checkpoint: str | os.PathLike | None = None,
                trust_pickle: bool = False, trust_code: bool = False) -> LoadedModel:
        """The model ``member`` was exported from, built again from its manifest.

        Parameters
        ----------
        member : Member
            The zoo member.
        checkpoint : path, optional
            Its checkpoint, when it is not beside the member or its zoo.
        trust_pickle : bool, default=False
            As :meth:`load`.
        trust_code : bool, default=False
            Allow a manifest that names Python code (a factory) to run it.
        """
        raise SourceError(f"{member.path} was exported from a {self.kind} source "
                          f"({member.source.reference}), which {self.not_rebuildable}")

    def __repr__(self) -> str:
        return f"<model source {self.kind!r}: {self.summary}>"
