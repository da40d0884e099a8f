"""The one registry of model sources, and the ``--arch`` language that names them.

Each source is registered once, by kind (the manifest's ``source.kind``). The built-in ones
are imported on first use (they import torch); other packages add theirs through the entry-point
group :data:`ENTRY_POINT_GROUP`, whose entries name a :class:`~.base.ModelSource` subclass or
instance, e.g. in a plugin's ``pyproject.toml``::

    [project.entry-points."gradnca_onnx.sources"]
    mylib = "mylib.gradnca:MyLibSource"

``--arch`` (``export``, and ``finetune --source/--arch``) reads ``NAME`` as a torchvision
architecture and ``KIND:REFERENCE`` as the addressable source ``KIND`` (``timm:NAME``,
``hf:DIR``, ``monai:NAME``, a plugin's); where factories are allowed (``finetune``), any other
``package.module:callable`` is a factory.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import GradncaWarning, SourceError, ZooError, first_line
from ..zoo.manifest import check_source_kind
from .base import LoadedModel, Member, ModelSource

#: The entry-point group through which other packages register sources.
ENTRY_POINT_GROUP = "gradnca_onnx.sources"
#: The built-in sources: kind -> module of this package that defines it as ``SOURCE``.
BUILTIN = {
    "torchvision": "torchvision_models", "timm": "timm_source", "hf": "libraries",
    "monai": "monai_source", "factory": "custom", "torchscript": "custom", "module": "custom",
    "onnx": "onnx_file", "open_clip": "open_clip_source", "torch_export": "exported_program",
}
#: The kind a bare ``--arch NAME`` names.
DEFAULT_KIND = "torchvision"

_registry: dict[str, ModelSource] = {}
#: Kinds registered from entry points (forgotten again by ``load_plugins(reload=True)``).
_plugins: set[str] = set()
#: Plugins that could not be loaded: kind -> why (said when the kind is asked for).
_broken: dict[str, str] = {}
_plugins_loaded = False


def register(source: ModelSource | type[ModelSource]) -> ModelSource:
    """Add ``source`` (an instance, or a class to instantiate) under its ``kind``.

    Usable as a class decorator. A kind is registered once: a built-in kind, or one another
    source class has taken, is refused.

    Raises
    ------
    SourceError
        Not a :class:`ModelSource`, a kind of the wrong form, or a kind already registered.
    """
    obj = source() if isinstance(source, type) else source
    if not isinstance(obj, ModelSource):
        raise SourceError(f"a model source must be a gradnca_onnx.sources.ModelSource; got "
                          f"{type(obj).__name__}")
    try:
        check_source_kind(obj.kind)
    except ZooError as exc:
        raise SourceError(f"{type(obj).__name__}: {exc}") from None
    if obj.kind in BUILTIN and type(obj).__module__ != f"{__package__}.{BUILTIN[obj.kind]}":
        raise SourceError(f"model source {obj.kind!r} is built in; give yours another kind")
    old = _registry.get(obj.kind)
    if old is not None and type(old) is not type(obj):
        raise SourceError(f"model source {obj.kind!r} is already registered "
                          f"({type(old).__module__}.{type(old).__name__})")
    _registry[obj.kind] = obj
    return source  # type: ignore[return-value]  # a decorator gives its class back


def get(kind: str) -> ModelSource:
    """The source registered as ``kind``.

    Raises
    ------
    SourceError
        No installed source provides ``kind`` (a plugin that failed to load says why).
    """
    if kind in BUILTIN and kind not in _registry:
        _import_builtin(kind)
    if kind not in _registry:
        load_plugins()
    if kind in _registry:
        return _registry[kind]
    if kind in _broken:
        raise SourceError(f"model source {kind!r} is provided by a plugin that could not be "
                          f"loaded: {_broken[kind]}")
    raise SourceError(f"no installed model source provides kind {kind!r}; known kinds: "
                      f"{', '.join(kinds())} (other packages add theirs through the "
                      f"{ENTRY_POINT_GROUP!r} entry points)")


def kinds() -> list[str]:
    """Every registered kind: the built-in ones, then the plugins'."""
    load_plugins()  # imports the built-in sources too
    return [k for k in BUILTIN if k in _registry] + [k for k in _registry if k not in BUILTIN]


def _import_builtin(kind: str) -> None:
    module = importlib.import_module(f"{__package__}.{BUILTIN[kind]}")
    for obj in getattr(module, "SOURCES", ()):
        if obj.kind not in _registry:
            register(obj)


def load_plugins(*, reload: bool = False) -> None:
    """Register the sources of the :data:`ENTRY_POINT_GROUP` entry points (once; again with
    ``reload``, which first forgets the plugins registered before).

    A plugin that cannot be loaded, that defines another kind than its entry point's name, or
    that names a kind already taken (a built-in one) is left out with a
    :class:`~gradnca_onnx.errors.GradncaWarning`; asking for its kind then says why.
    """
    global _plugins_loaded
    if _plugins_loaded and not reload:
        return
    for kind in _plugins:
        _registry.pop(kind, None)
    _plugins.clear()
    _broken.clear()
    _plugins_loaded = True
    for kind in BUILTIN:  # a plugin cannot take a built-in kind, even one not imported yet
        if kind not in _registry:
            _import_builtin(kind)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            obj = obj() if isinstance(obj, type) else obj
            if isinstance(obj, ModelSource) and obj.kind != ep.name:
                raise SourceError(f"it defines kind {obj.kind!r}, not {ep.name!r}")
            if ep.name in _registry:
                raise SourceError(f"kind {ep.name!r} is already registered")
            register(obj)
            _plugins.add(ep.name)
        except Exception as exc:  # a plugin's import can fail in any way: never ours to crash
            why = (f"entry point {ep.name!r} = {ep.value!r} of group {ENTRY_POINT_GROUP!r}: "
                   f"{type(exc).__name__}: {first_line(exc)}")
            if ep.name not in _registry:
                _broken[ep.name] = why
            warnings.warn(f"model source plugin left out: {why}", GradncaWarning, stacklevel=2)


def addressable() -> list[str]:
    """The kinds ``--arch KIND:REFERENCE`` names, in registration order."""
    return [k for k in kinds() if _registry[k].addressable]


def resolve(arch: str, *, factories: bool = False, option: str = "--arch"
            ) -> tuple[ModelSource, str]:
    """The source and reference that ``arch`` names (the ``--arch`` language).

    ``NAME``: torchvision; ``KIND:REFERENCE``: the addressable source ``KIND``; with
    ``factories``, any other ``package.module:callable``: a factory. A one-letter prefix is a
    Windows drive, not a source.
    """
    prefix, sep, rest = arch.partition(":")
    if not sep or len(prefix) <= 1:
        return get(DEFAULT_KIND), arch
    known = prefix in BUILTIN or prefix in _registry or _plugin_named(prefix)
    if known and get(prefix).addressable:
        if not rest:
            raise SourceError(f"{option} {arch!r} names no model after '{prefix}:'")
        return get(prefix), rest
    if factories:
        return get("factory"), arch
    raise SourceError(f"{option} {arch!r}: unknown model source {prefix!r}; use one of "
                      f"{', '.join(p + ':' for p in addressable())} or a torchvision name")


def _plugin_named(prefix: str) -> bool:
    load_plugins()
    return prefix in _registry or prefix in _broken


def create_model(arch: str, checkpoint: str | os.PathLike | None = None, *,
                 arch_kwargs: dict[str, Any] | None = None, channels: int | None = None,
                 trust_pickle: bool = False, seed: int = 0, factories: bool = False,
                 features: str | None = None) -> LoadedModel:
    """Build the model that ``arch`` names (:func:`resolve`) and load ``checkpoint``.

    Parameters
    ----------
    arch : str
        ``NAME`` (torchvision), ``timm:NAME``, ``hf:DIR``, ``monai:NAME``, a plugin's
        ``KIND:REFERENCE``, or with ``factories`` a ``package.module:callable``.
    checkpoint, arch_kwargs, channels, trust_pickle, seed
        As :meth:`ModelSource.load` (``arch_kwargs``: its ``kwargs``).
    features : str, optional
        Which tensor is the embedding (:func:`choose_features`); default: the one the
        model's library defines.
    """
    source, reference = resolve(arch, factories=factories)
    loaded = source.load(reference, checkpoint, kwargs=arch_kwargs, channels=channels,
                         trust_pickle=trust_pickle, seed=seed)
    return choose_features(loaded, features)


def choose_features(loaded: LoadedModel, choice: str | None) -> LoadedModel:
    """``loaded`` with the features ``choice`` names (``--features``), recorded in its options
    (the manifest's ``source.options.features``); ``None``: unchanged, the embedding its
    library defines.

    ``choice`` is one of the source's :attr:`~.base.ModelSource.feature_choices` (e.g.
    ``cls``, ``mean``, ``pooler`` for a Hugging Face encoder; ``pre-logits``, ``cls``,
    ``mean`` for timm; ``image-embeds``, ``pooled`` for open_clip) or, for any
    ``nn.Module``, ``module:PATH``: the output of the module at ``PATH`` of the library's
    model. A chosen embedding replaces the classifier, so the member has no logits.

    Raises
    ------
    SourceError
        A choice the source does not know (the message lists its choices), or a module path
        the model lacks.
    """
    if choice is None:
        return loaded
    if not isinstance(choice, str) or not choice.strip():
        raise SourceError(f"--features must name a choice; got {choice!r}")
    chosen = get(loaded.kind).select_features(loaded, choice.strip())
    chosen.options = {**chosen.options, "features": choice.strip()}
    return chosen


def describe(loaded: LoadedModel) -> Any:
    """The manifest's ``source`` block of ``loaded`` (:meth:`ModelSource.describe`)."""
    return get(loaded.kind).describe(loaded)


def rebuild(model_dir: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None,
            trust_pickle: bool = False, trust_code: bool = False
            ) -> tuple[LoadedModel, Member]:
    """The model a zoo member was exported from, rebuilt from its manifest.

    Returns
    -------
    (LoadedModel, Member)
        The model, and the member (directory and manifest) it was rebuilt from.

    Raises
    ------
    SourceError
        A kind no installed source provides, a kind newer than the manifest's schema, a source
        that cannot be rebuilt (TorchScript, a Python object, an ONNX file: the message says
        what to pass instead), a factory without ``trust_code``, a checkpoint not found or not
        matching the manifest's sha256, or a rebuilt model of another architecture.
    """
    from ..zoo import read_manifest

    path = Path(model_dir)
    member = Member(path, read_manifest(path))
    kind = member.source.kind
    source = get(kind)
    version = member.manifest.schema_version
    if version < source.since_schema:
        raise SourceError(f"{member.where('kind')} {kind!r} needs schema_version "
                          f"{source.since_schema} (the manifest says {version}); re-export the "
                          "model")
    loaded = source.rebuild(member, checkpoint=checkpoint, trust_pickle=trust_pickle,
                            trust_code=trust_code)
    recorded = member.source.options.get("features")
    if recorded is not None:
        if not isinstance(recorded, str):
            raise SourceError(f"{member.where('options.features')} must be a string; "
                              "re-export the model")
        loaded = choose_features(loaded, recorded)
    inflated = member.source.options.get("inflate_3d")
    if inflated is not None:
        from .inflate import INFLATE_RULE, inflate_3d

        if inflated != INFLATE_RULE:
            raise SourceError(f"{member.where('options.inflate_3d')} names another inflation "
                              f"rule ({inflated!r}); this version inflates by {INFLATE_RULE!r}: "
                              "export the model again")
        loaded = inflate_3d(loaded)
    if loaded.architecture != member.manifest.architecture:
        raise SourceError(f"{path}: the rebuilt model is a {loaded.architecture}, but the "
                          f"manifest says {member.manifest.architecture}; the source changed "
                          "since the export (a library version, a factory's code): export it "
                          "again, or fine-tune the original model")
    return loaded, member
