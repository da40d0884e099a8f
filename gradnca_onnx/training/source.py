"""The one place where a source specification becomes a ``torch.nn.Module`` to fine-tune.

All model building is delegated to :mod:`gradnca_onnx.exporters` (torchvision names with
optional checkpoints, ``package.module:callable`` factories, Python modules); this module only
decides which loader a specification needs and records the source's identity for the run
store.

Exported model directories (a zoo entry: ``features.onnx``, ``grads.onnx``,
``manifest.json``) hold ONNX inference graphs, which cannot be trained here. Their manifest
says how the weights were built, so a directory is fine-tuned by rebuilding the model from
that description: a randomly initialised torchvision or factory model (its seed is in the
manifest) directly, a checkpointed one when the checkpoint file is found (``checkpoint=``,
or the file name from the manifest next to the directory or its zoo) and its sha256 matches
the manifest. TorchScript and Python-module sources cannot be rebuilt or re-headed and are
refused with a message saying what to pass instead.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from ..errors import SourceError, first_line

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Source:
    """A source model ready to be copied for each fine-tuning run.

    Attributes
    ----------
    module : nn.Module
        The pre-trained model (never trained in place: each run works on a deep copy).
    name : str
        Row name in the ground-truth table (a manifest's model name, or the loader's default).
    identity : dict
        JSON-ready description of the weights (kind, reference, checkpoint and weights
        sha256, constructor options); part of every run key.
    mean, std : tuple of float
        Input normalisation of the source (REFERENCE 1: ImageNet statistics for
        ImageNet-pretrained sources, 0.5/0.5 otherwise).
    channels : int
        Input channels the model takes.
    head : str or None
        Module path of the final layer to replace (``None``: the last ``nn.Linear`` the
        forward pass calls).
    """

    module: nn.Module
    name: str
    identity: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3
    head: str | None = None
    input_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        """What of the source determines a run's result (for :func:`~.store.run_key`)."""
        return {**self.identity, "mean": list(self.mean), "std": list(self.std),
                "channels": self.channels, "head": self.head}


def weights_sha256(module: nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a module's state dict."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\0".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _first_weight_channels(module: nn.Module) -> int:
    for name, p in module.named_parameters():
        if name.endswith("weight") and p.ndim == 4:
            return int(p.shape[1])
    return 3


def _find_checkpoint(model_dir: Path, file_name: str, given: PathLike | None,
                     sha256: str | None) -> Path:
    from ..io.hashing import sha256_file

    if given is None and (not file_name or Path(file_name).name != file_name
                          or file_name in (".", "..") or "\\" in file_name):
        # The manifest names the checkpoint by its plain file name; anything else (an absolute
        # path, "..", a sub-path) would read a file outside the zoo.
        raise SourceError(f"{model_dir}/manifest.json: field 'source.checkpoint' {file_name!r} is "
                         "not a plain file name; pass the checkpoint with --checkpoint")
    candidates = [Path(given)] if given is not None else [
        model_dir / file_name, model_dir.parent / file_name, model_dir.parent.parent / file_name]
    for c in candidates:
        if c.is_file():
            if sha256 and sha256_file(c) != sha256:
                raise SourceError(
                    f"checkpoint {c} does not match the sha256 in {model_dir}/manifest.json "
                    f"({sha256[:12]}...); give the checkpoint the model was exported from"
                )
            return c
    raise SourceError(
        f"{model_dir} is an exported (ONNX) model, which cannot be fine-tuned; its manifest names "
        f"the checkpoint {file_name!r}, not found next to it: pass it with --checkpoint"
    )


def _from_model_dir(path: Path, checkpoint: PathLike | None, trust_pickle: bool,
                    trust_code: bool = False) -> tuple[Any, dict[str, Any]]:
    from .. import exporters
    from ..zoo import read_manifest

    m = read_manifest(path)
    src = m.source
    if src.kind == "factory" and not trust_code:
        # A factory source is Python code named by a zoo file: rebuilding it imports a module
        # and calls it with keyword arguments from the manifest. Only on explicit request.
        raise SourceError(
            f"{path}/manifest.json names Python code to rebuild the model ({src.reference!r}, "
            "called with the manifest's options); gradnca-onnx never runs code named by a zoo "
            "file unless you pass --trust-code (trust_code=True): do so only for a zoo you trust")
    if src.kind == "onnx":
        # Before looking for the checkpoint: an imported member's "checkpoint" is its ONNX file,
        # and --checkpoint cannot help (an ONNX graph holds no trainable module).
        raise SourceError(
            f"{path} was imported from the ONNX file {src.reference}, and an ONNX graph cannot "
            "be fine-tuned (--checkpoint does not change that): fine-tune the original model "
            "instead, as --source ARCH or package.module:callable with --checkpoint (its "
            "framework checkpoint), or export that checkpoint with gradnca-onnx export first")
    _check_options(path, src.options)
    ckpt = None
    if src.checkpoint is not None or checkpoint is not None:
        ckpt = _find_checkpoint(path, src.checkpoint or "", checkpoint, src.checkpoint_sha256)
    opts = dict(src.options or {})
    seed = int(opts.get("seed", 0))
    if src.kind == "torchvision":
        loaded = exporters.load_torchvision(src.reference, ckpt, arch_kwargs=opts.get("arch_kwargs"),
                                            channels=m.input.channels, trust_pickle=trust_pickle,
                                            seed=seed)
    elif src.kind == "factory":
        loaded = exporters.load_factory(src.reference, ckpt,
                                        factory_kwargs=opts.get("factory_kwargs"),
                                        channels=m.input.channels, trust_pickle=trust_pickle,
                                        seed=seed)
    else:
        raise SourceError(
            f"{path} was exported from a {src.kind} source ({src.reference}), which cannot be "
            "rebuilt for training; fine-tune the original model instead (--source ARCH or "
            "package.module:callable with --checkpoint)"
        )
    info = {"name": m.name, "mean": tuple(m.input.mean), "std": tuple(m.input.std),
            "channels": m.input.channels, "input_size": m.input.height,
            "pretrained_on": m.pretrained_on}
    return loaded, info


def _check_options(path: Path, options: Any) -> None:
    """Refuse a seed or constructor keyword arguments that are not plain JSON data."""
    if not isinstance(options, dict):
        raise SourceError(f"{path}/manifest.json: field 'source.options' must be a JSON object")
    seed = options.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SourceError(f"{path}/manifest.json: field 'source.options.seed' must be an integer")
    for key in ("arch_kwargs", "factory_kwargs"):
        kw = options.get(key)
        if kw is not None and not (isinstance(kw, dict) and all(
                isinstance(k, str) and k.isidentifier() and not k.startswith("_") for k in kw)):
            raise SourceError(f"{path}/manifest.json: field 'source.options.{key}' must map "
                             "keyword names to values; re-export the model")


def load_source(spec: Union[str, PathLike, nn.Module, Any], *, arch: str | None = None,
                checkpoint: PathLike | None = None, normalisation: str | None = None,
                name: str | None = None, head: str | None = None, trust_pickle: bool = False,
                seed: int = 0, trust_code: bool = False) -> Source:
    """Turn a source specification into a :class:`Source`.

    Parameters
    ----------
    spec : str, path, nn.Module or exporters.LoadedModel
        * an exported model directory (with ``manifest.json``): rebuilt from its manifest
          (see the module docstring);
        * a checkpoint file (state dict, as the exporters read them): needs ``arch``;
        * a torchvision architecture name (``resnet18``): random initialisation seeded by
          ``seed``, or ``checkpoint``;
        * ``package.module:callable``: a factory (with an optional ``checkpoint``);
        * an ``nn.Module`` or a loaded model from :mod:`gradnca_onnx.exporters`.
    arch : str, optional
        Architecture of a checkpoint file: a torchvision name or ``package.module:callable``.
    checkpoint : path, optional
        Weights for a name/factory ``spec``, or the checkpoint of an exported directory.
    normalisation : str, optional
        ``imagenet``, ``half`` or ``MEAN,STD`` (see ``zoo.parse_normalisation``). Default: the
        manifest's for a model directory, else ``half`` (REFERENCE 1: mean/std 0.5 for every
        source that is not ImageNet-pretrained; say ``imagenet`` for ImageNet weights).
    name : str, optional
        Row name in the ground-truth table.
    head : str, optional
        Module path of the final layer to replace (default: the last Linear called).
    trust_pickle : bool
        Allow checkpoints that pickle whole modules (runs code from the file).
    seed : int
        Seed of a random initialisation.
    trust_code : bool
        Allow an exported directory whose manifest names a ``factory`` source to be rebuilt:
        that imports the named module and calls it with the manifest's options, i.e. runs code
        a zoo file names. Off by default (``finetune --trust-code``).

    Raises
    ------
    ValueError
        A source that cannot be loaded or trained, with what to pass instead.
    """
    from .. import exporters
    from ..exporters.checkpoints import is_torchscript_archive
    from ..zoo import parse_normalisation

    info: dict[str, Any] = {}
    try:
        if isinstance(spec, exporters.LoadedModel):
            loaded = spec
        elif isinstance(spec, nn.Module):
            loaded = exporters.from_module(spec, name=name)
        else:
            text = os.fspath(spec)
            p = Path(text)
            if p.is_dir():
                loaded, info = _from_model_dir(p, checkpoint, trust_pickle, trust_code)
            elif p.is_file():
                if is_torchscript_archive(p):
                    raise SourceError(
                        f"{p} is a TorchScript file; its head cannot be replaced for training. "
                        "Give the state-dict checkpoint with --arch ARCH"
                    )
                if arch is None:
                    raise SourceError(f"checkpoint {p} needs --arch: a torchvision name (e.g. "
                                     "resnet18) or package.module:callable")
                if checkpoint is not None:
                    raise SourceError("give the checkpoint once: as --source or as --checkpoint")
                loaded = _load_named(arch, p, trust_pickle, seed)
            elif ":" in text or text.isidentifier():
                if arch is not None:
                    raise SourceError(f"--arch is for checkpoint files; {text!r} names a model")
                loaded = _load_named(text, checkpoint, trust_pickle, seed)
            else:
                raise SourceError(f"source {text!r} does not exist; give an exported model "
                                 "directory, a checkpoint with --arch, a torchvision name or "
                                 "package.module:callable")
    except ValueError:
        raise
    except (RuntimeError, TypeError, AttributeError, ImportError, OSError) as exc:
        first = first_line(exc, 200)
        raise SourceError(f"source {spec!r} cannot be loaded: {type(exc).__name__}: {first}") from None
    module = loaded.module
    if isinstance(module, torch.jit.ScriptModule):
        raise SourceError(f"source {spec!r} is TorchScript; its head cannot be replaced for "
                         "training. Give the state-dict checkpoint with --arch ARCH")
    channels = int(info.get("channels") or _first_weight_channels(module))
    if normalisation is not None:
        mean, std = parse_normalisation(normalisation, channels)
    elif "mean" in info:
        mean, std = info["mean"], info["std"]
    else:
        mean, std = parse_normalisation("half", channels)
    ckpt_sha = None
    if loaded.checkpoint is not None:
        from ..io.hashing import sha256_file
        ckpt_sha = sha256_file(loaded.checkpoint)
    identity = {"kind": loaded.kind, "reference": loaded.reference,
                "architecture": loaded.architecture, "checkpoint_sha256": ckpt_sha,
                "weights_sha256": weights_sha256(module), "options": loaded.options}
    json.dumps(identity)  # must be JSON-ready for the run key
    default = (loaded.reference.replace(":", ".") if loaded.kind == "factory"
               else loaded.default_name)
    return Source(module=module, name=name or info.get("name") or default,
                  identity=identity, mean=tuple(float(v) for v in mean),
                  std=tuple(float(v) for v in std), channels=channels, head=head,
                  input_size=info.get("input_size"),
                  extra={k: v for k, v in info.items() if k == "pretrained_on"})


def _load_named(ref: str, checkpoint: PathLike | None, trust_pickle: bool, seed: int) -> Any:
    from .. import exporters

    if ":" in ref:
        return exporters.load_factory(ref, checkpoint, trust_pickle=trust_pickle, seed=seed)
    names = exporters.torchvision_architectures()
    if ref not in names:
        close = difflib.get_close_matches(ref, names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SourceError(f"source {ref!r} is not a file, a directory or a torchvision "
                         f"architecture{hint}; give an exported model directory, a checkpoint "
                         "with --arch, a torchvision name or package.module:callable")
    return exporters.load_torchvision(ref, checkpoint, trust_pickle=trust_pickle, seed=seed)
