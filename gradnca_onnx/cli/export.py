"""``gradnca-onnx export`` (one model into a zoo) and ``gradnca-onnx zoo ls``.

torch is imported only inside ``export``, so the rest of the CLI works without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..data.conventions import parse_intensity
from ..errors import InputError
from ..results.text import aligned, printable
from ..zoo.manifest import check_model_name, check_source_images
from ._errors import UserInputError, check_zoo_out, user_errors
from ._member import features_only_options, warn_if_features_only

#: A ``--arch-kwarg`` value starting with one of these is JSON: it must parse.
JSON_STARTS = ("{", "[", '"')
#: Help of ``--source-images`` (export and import).
#: ``--intensity`` (export and import).
INTENSITY_HELP = ("The intensity convention the model expects of a target's physical values "
                  "(HU for CT): window:LOW,HIGH[:UNIT] (e.g. window:-1000,1000:HU), "
                  "percentile:PLOW,PHIGH, zscore, windows:LOW1,HIGH1;LOW2,HIGH2;... (one "
                  "window per input channel), or 8bit [default: 8bit, 8-bit images as the "
                  "paper's models take]. Recorded in the manifest and applied by rank.")
SOURCE_IMAGES_HELP = ("How many images the source model was pre-trained on, as you state it "
                      "(manifest metadata, not checked; the source_images baseline) [default: "
                      "not recorded].")


def _exporters() -> Any:
    """The exporters, or one line naming the torch extra when it is not installed."""
    from ..sources import require_torch

    require_torch("exporting", "onnx_ir", "onnxscript")
    from .. import exporters

    return exporters


#: The options that name a source other than by ``--arch``, and its kind.
SOURCE_OPTIONS = {"--torchscript": "torchscript", "--factory": "factory"}


def _one_source(options: dict[str, Any]) -> tuple[str, Any]:
    """The one source option given (``--arch``, ``--torchscript`` or ``--factory``)."""
    given = {o: v for o, v in options.items() if v is not None}
    if len(given) != 1:
        raise InputError("give exactly one of --arch, --torchscript or --factory"
                         + (f" (got {' and '.join(given)})" if given else ""))
    [(option, value)] = given.items()
    return option, value


def _resolve(option: str, value: Any) -> tuple[Any, str]:
    """The source and reference that ``option value`` names, from the source registry."""
    from .. import sources
    from ..sources.checkpoints import is_exported_program_archive

    if option == "--torchscript" and is_exported_program_archive(value):
        return sources.get("torch_export"), str(value)  # a .pt2 (torch.export.save)
    if option in SOURCE_OPTIONS:
        return sources.get(SOURCE_OPTIONS[option]), str(value)
    return sources.resolve(value, option=option)


def parse_pairs(values: tuple[str, ...], option: str) -> dict[str, Any]:
    """``KEY=VALUE`` options (``--arch-kwarg``) as keyword arguments: VALUE read as JSON, else
    kept as a plain string; a VALUE that starts like JSON must be valid JSON."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{option} {item!r} must look like KEY=VALUE "
                             "(e.g. transform_input=true)")
        try:
            out[key.strip()] = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            if raw.lstrip().startswith(JSON_STARTS):  # meant as JSON: never a silent string
                where = (f"at character {exc.pos + 1}: {exc.msg}"
                         if isinstance(exc, json.JSONDecodeError) else "nested too deeply")
                raise UserInputError(f"{option} {key.strip()}: {raw!r} starts like JSON but is "
                                     f"not valid JSON ({where}); fix it (strings inside need "
                                     "double quotes), or quote a plain string as '\"TEXT\"'"
                                     ) from None
            out[key.strip()] = raw  # plain strings need no JSON quotes
    return out


def check_name(name: str | None) -> None:
    """Refuse a ``--name`` that is not a usable model name (an empty one included: it must
    not silently become the default name)."""
    if name is None:
        return
    try:
        check_model_name(name)
    except ValueError as exc:
        raise UserInputError(f"--name: {exc}") from None


def _layer_paths(value: str | None) -> list[str] | None:
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(f"--layers {value!r} must name two layers: PATH1,PATH2")
    return parts


@click.command("export")
@click.option("--arch", metavar="NAME", help="torchvision architecture (e.g. resnet18), or "
              "timm:NAME, hf:DIR (a local save_pretrained directory) or monai:NAME.")
@click.option("--torchscript", "torchscript", metavar="PATH",
              type=click.Path(dir_okay=False, path_type=Path),
              help="A TorchScript file (torch.jit.save) or a torch.export program (.pt2) "
                   "instead of --arch.")
@click.option("--factory", metavar="MODULE:CALLABLE",
              help="An importable function returning the nn.Module, instead of --arch.")
@click.option("--checkpoint", metavar="PATH", type=click.Path(dir_okay=False, path_type=Path),
              help="Weights for --arch/--factory (state dict or .safetensors; random init "
                   "without it).")
@click.option("--trust-pickle", is_flag=True,
              help="Allow a checkpoint that pickles a whole model, or a torch.export program "
                   "(loading either runs code from the file).")
@click.option("--arch-kwarg", "arch_kwargs", multiple=True, metavar="KEY=VALUE",
              help="Constructor argument for --arch/--factory; repeatable. VALUE is read as "
                   "JSON (true, 3, 0.5, null, [1, 2], {\"a\": 1}, \"text\"), else kept as a "
                   "plain string; a VALUE starting with {, [ or \" must be valid JSON.")
@click.option("--input-size", type=click.IntRange(min=1), default=224, show_default=True,
              help="Image height = width the graphs are traced at.")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="A 3-D model's input depth: the graphs take (B, C, DEPTH, SIZE, SIZE) "
                   "volumes (torchvision video models, MONAI with spatial_dims=3, a factory "
                   "with Conv3d). Volume targets are resampled to it (trilinear).")
@click.option("--inflate-3d", "inflate", type=click.IntRange(min=1), default=None,
              metavar="DEPTH",
              help="Inflate a 2-D CNN to 3-D and export it at input depth DEPTH (an extension "
                   "beyond the paper; I3D's rule: each kh x kw kernel becomes kh x kh x kw, "
                   "repeated along depth and divided by kh).")
@click.option("--channels", type=click.IntRange(min=1), default=None,
              help="Input channels [default: the model's first convolution].")
@click.option("--norm", metavar="imagenet|half|MEAN,STD", default=None,
              help="Input normalisation [default: imagenet if --pretrained-on mentions ImageNet, "
                   "else half].")
@click.option("--intensity", metavar="CONVENTION", default=None, help=INTENSITY_HELP)
@click.option("--layers", metavar="PATH1,PATH2", default=None,
              help="The two layers of S_FU: Conv/Linear modules or weight parameters [default: "
                   "paper table, else the first two convolutions run, else the first two "
                   "weight-bearing layers].")
@click.option("--head", metavar="PATH", default=None,
              help="Module whose input is the feature vector [default: paper table, else the "
                   "last Linear]; '' = the model's output.")
@click.option("--features", "features", metavar="CHOICE", default=None,
              help="Which tensor is the embedding [default: the one the model's library "
                   "defines]: timm pre-logits|cls|mean, Hugging Face cls|mean|pooler|"
                   "image-embeds, open_clip image-embeds|pooled, or module:PATH (the output of "
                   "a module); recorded in the manifest. A chosen embedding has no logits.")
@click.option("--name", metavar="NAME", default=None,
              help="Model name in the zoo [default: architecture + checkpoint name].")
@click.option("--pretrained-on", metavar="TEXT", default="unknown", show_default=True,
              help="What the source model was trained on (manifest metadata).")
@click.option("--source-images", "source_images", metavar="N", default=None,
              help=SOURCE_IMAGES_HELP)
@click.option("--grads-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Fixed batch of grads.onnx (the engine pads/chunks other sizes).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of random initialisation (no checkpoint).")
@click.option("--force", is_flag=True, help="Replace an existing model of the same name.")
@features_only_options("export", "fewer than two weight-bearing layers, an operator the tracer "
                       "or exporter cannot handle")
@click.option("--out", "zoo_dir", required=True, metavar="ZOO_DIR",
              type=click.Path(file_okay=True, path_type=Path), help="Zoo directory.")
@user_errors
def export_cmd(arch: str | None, torchscript: Path | None, factory: str | None,
               checkpoint: Path | None, trust_pickle: bool, arch_kwargs: tuple[str, ...],
               input_size: int, depth: int | None, inflate: int | None, channels: int | None,
               norm: str | None, intensity: str | None, layers: str | None,
               head: str | None, features: str | None, name: str | None, pretrained_on: str,
               source_images: str | None, grads_batch: int, seed: int, force: bool,
               fallback: bool, features_only: bool, zoo_dir: Path) -> None:
    """Export one PyTorch model into ZOO_DIR/NAME: its graphs (features, grads and the split
    pass's forward and backward .onnx), the weights they share (weights.bin), manifest.json.

    --arch takes a torchvision name, timm:NAME, hf:DIR or monai:NAME; a checkpoint that
    pickles a whole model needs none (--checkpoint FILE --trust-pickle).
    """
    named = {"--arch": arch, "--torchscript": torchscript, "--factory": factory}
    if checkpoint is not None and all(v is None for v in named.values()):
        option, value = "--checkpoint", checkpoint  # a whole pickled model names itself
    else:
        option, value = _one_source(named)
    if features is not None and head is not None:
        raise InputError("--features and --head both name the features: give one")
    if inflate is not None and depth is not None and inflate != depth:
        raise InputError(f"--inflate-3d {inflate} and --depth {depth} give two input depths: "
                         "give one (--inflate-3d DEPTH sets the depth)")
    convs = _layer_paths(layers)
    kwargs = parse_pairs(arch_kwargs, "--arch-kwarg")
    count = check_source_images(source_images)
    parse_intensity(intensity)  # before the model is built
    check_name(name)
    ex = _exporters()
    if channels is not None:  # before the model is built (the export checks it again)
        from ..exporters.errors import check_channels

        check_channels(channels, f"--channels {channels}")
    if option == "--checkpoint":
        from ..sources.custom import load_whole_model

        if kwargs:
            raise InputError("--arch-kwarg needs --arch or --factory: a whole pickled model is "
                             "built already")
        loaded = load_whole_model(checkpoint, trust_pickle=trust_pickle)
        inputs = {"--checkpoint": checkpoint}
    else:
        source, reference = _resolve(option, value)
        loaded = source.load(reference, checkpoint, kwargs=kwargs, channels=channels,
                             trust_pickle=trust_pickle, seed=seed)
        inputs = {"--checkpoint": checkpoint, option: reference if source.reads_path else None}
    if features is not None:
        from ..sources import choose_features

        loaded = choose_features(loaded, features)
    if inflate is not None:
        from ..sources import inflate_3d

        loaded = inflate_3d(loaded)
    check_zoo_out(zoo_dir, name or loaded.default_name, force=force, inputs=inputs)
    out = ex.export_model(loaded, zoo_dir, ex.ExportOptions(
        name=name, input_size=input_size, channels=channels, norm=norm,
        pretrained_on=pretrained_on, head=head, convs=convs, grads_batch=grads_batch,
        force=force, features_only=features_only, features_only_fallback=fallback,
        source_images=count, intensity=intensity,
        depth=inflate if inflate is not None else depth))
    from ..zoo import read_manifest

    m = read_manifest(out)
    what = (f"layers {m.layers.conv1} / {m.layers.conv2} ({m.layers.rule}), grads batch "
            f"{m.batch_policy.grads_batch}" if m.has_grads else "features-only (no grads.onnx)")
    click.echo(f"exported {m.name} to {out}: D={m.feature_dim}, "
               f"K={m.num_classes if m.num_classes is not None else '-'}, {what}")
    warn_if_features_only(m, features_only)


@click.group("zoo")
def zoo_group() -> None:
    """Inspect zoo directories of exported models."""


@zoo_group.command("ls")
@click.argument("zoo_dir", type=click.Path(path_type=Path))
@click.option("--verify", is_flag=True, help="Recompute every file's sha256 (slow).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON.")
@user_errors
def zoo_ls(zoo_dir: Path, verify: bool, as_json: bool) -> None:
    """List the models in ZOO_DIR with their manifests; broken ones are flagged.

    The table shows every manifest string through :func:`printable` (a control or bidi
    character as a visible escape); ``--json`` keeps the values exact.
    """
    from ..zoo import list_zoo

    entries = list_zoo(zoo_dir, verify=verify)
    if as_json:
        click.echo(json.dumps([e.manifest.to_dict() if e.manifest else
                               {"path": str(e.path), "error": e.error} for e in entries],
                              indent=2))
    else:
        rows = [("NAME", "ARCH", "PRETRAINED ON", "INPUT", "NORM", "D", "K", "CONV LAYERS",
                 "GRAD B", "MB")]
        for e in entries:
            m = e.manifest
            if m is None:
                continue
            i = m.input
            rows.append(tuple(printable(c) for c in (
                m.name, m.architecture, m.pretrained_on, f"{i.channels}x{i.size_text}",
                _norm_label(i.mean, i.std), str(m.feature_dim), str(m.num_classes or "-"),
                *((f"{m.layers.conv1}, {m.layers.conv2}", str(m.batch_policy.grads_batch))
                  if m.has_grads else ("features-only (no S_FU)", "-")),
                f"{sum(f.bytes for f in m.files.values()) / 1e6:.1f}")))
        for line in aligned(rows, rules=()):
            click.echo(line)
        for e in entries:
            if e.manifest is None:
                click.echo(f"BROKEN {printable(e.path.name)}: {printable(e.error)}")
        if not entries:
            click.echo(f"(no models in {printable(zoo_dir)})")
    if any(not e.ok for e in entries):
        raise SystemExit(1)


def _norm_label(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    from ..zoo.normalisation import HALF, IMAGENET

    if (mean, std) == IMAGENET:
        return "imagenet"
    if set(mean) == set(HALF[0]) and set(std) == set(HALF[1]):
        return "half"
    return f"{','.join(f'{v:g}' for v in mean)}/{','.join(f'{v:g}' for v in std)}"
