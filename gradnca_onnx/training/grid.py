"""Hyper-parameter grids of the fine-tuning protocol: the paper's, a quick one, or from a file.

A grid expands, per target, into :class:`RunConfig` objects, one per run, in a fixed order
(batch size, learning rate, momentum, weight decay), so that a killed grid resumes where it
stopped. No torch here.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Union

from ..errors import InputError, optional_import
from ..io.loaders import load_json, load_yaml

PathLike = Union[str, "os.PathLike[str]"]

#: Version of the training protocol; part of every run key (bump when a change alters results).
PROTOCOL = "gradnca-onnx finetune v1"

#: Batch sizes per MedMNIST target, paper Table 1 (chest from the released run logs).
PAPER_BATCH_SIZES: dict[str, tuple[int, int]] = {
    "pathmnist": (128, 256),
    "dermamnist": (128, 256),
    "octmnist": (64, 128),
    "pneumoniamnist": (32, 64),
    "retinamnist": (64, 128),
    "breastmnist": (32, 64),
    "bloodmnist": (128, 256),
    "tissuemnist": (128, 256),
    "organamnist": (128, 256),
    "organcmnist": (128, 256),
    "organsmnist": (128, 256),
    "chestmnist": (256, 512),
}

RESIZE_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one fine-tuning run that can change its result.

    ``max_epochs`` is also the period of the cosine annealing; SGD uses Nesterov momentum when
    ``momentum > 0``; early stopping after ``patience`` epochs without a better validation AUC;
    the new head is ``Dropout(dropout)`` + ``Linear``; ``augment`` switches the paper's
    augmentation pipeline on; ``image_size`` is the side of the (square) training input, reached
    from the target's size with the Pillow filter ``resize_filter``.
    """

    lr: float
    weight_decay: float
    momentum: float
    batch_size: int
    max_epochs: int
    patience: int
    image_size: int
    seed: int = 42
    dropout: float = 0.5
    augment: bool = True
    resize_filter: str = "bilinear"

    def __post_init__(self) -> None:
        checks = [
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive number"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.max_epochs >= 1, "max_epochs must be >= 1"),
            (self.patience >= 1, "patience must be >= 1"),
            (self.image_size >= 8, "image_size must be >= 8"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.resize_filter in RESIZE_FILTERS, f"resize_filter must be one of {RESIZE_FILTERS}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InputError(f"run config: {msg}; got {self}")

    @property
    def nesterov(self) -> bool:
        """Nesterov momentum is used whenever there is momentum (the paper's setting)."""
        return self.momentum > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary, including the derived ``nesterov``."""
        d = asdict(self)
        d["nesterov"] = self.nesterov
        return d

    def label(self) -> str:
        """Short text for progress bars."""
        return (f"lr={self.lr:g} wd={self.weight_decay:g} m={self.momentum:g} "
                f"bs={self.batch_size}")


@dataclass(frozen=True)
class GridSpec:
    """A hyper-parameter grid.

    ``batch_size`` ``None`` means the paper's two batch sizes of the target (Table 1; a
    target outside it needs explicit batch sizes). ``quick_batch`` keeps only the smaller of the
    two. The remaining fields are shared by every run of the grid.
    """

    name: str
    lr: tuple[float, ...]
    weight_decay: tuple[float, ...]
    momentum: tuple[float, ...]
    batch_size: tuple[int, ...] | None
    max_epochs: int
    patience: int
    image_size: int
    seed: int = 42
    dropout: float = 0.5
    augment: bool = True
    resize_filter: str = "bilinear"
    smaller_batch_only: bool = False
    notes: str = field(default="", compare=False)

    def batch_sizes(self, target: str) -> tuple[int, ...]:
        """The batch sizes used for ``target`` (a MedMNIST flag or any name)."""
        if self.batch_size is not None:
            return self.batch_size
        if target not in PAPER_BATCH_SIZES:
            raise InputError(
                f"grid {self.name!r}: no paper batch sizes for target {target!r} (Table 1 lists "
                f"{sorted(PAPER_BATCH_SIZES)}); give them with --batch-size or a grid file"
            )
        sizes = PAPER_BATCH_SIZES[target]
        return sizes[:1] if self.smaller_batch_only else sizes

    def expand(self, target: str) -> list[RunConfig]:
        """One :class:`RunConfig` per grid point for ``target``, in a fixed order."""
        out = []
        for bs, lr, mom, wd in itertools.product(self.batch_sizes(target), self.lr,
                                                 self.momentum, self.weight_decay):
            out.append(RunConfig(lr=float(lr), weight_decay=float(wd), momentum=float(mom),
                                 batch_size=int(bs), max_epochs=self.max_epochs,
                                 patience=self.patience, image_size=self.image_size,
                                 seed=self.seed, dropout=self.dropout, augment=self.augment,
                                 resize_filter=self.resize_filter))
        return out

    def with_batch_sizes(self, sizes: tuple[int, ...] | None) -> "GridSpec":
        """The same grid with explicit batch sizes (``None``: unchanged)."""
        return self if sizes is None else replace(self, batch_size=tuple(int(s) for s in sizes))


#: REFERENCE section 7: 6 learning rates x 5 weight decays x 2 momenta x 2 batch sizes = 120
#: runs per pair, up to 400 epochs, patience 50, 224 px.
PAPER = GridSpec(
    name="paper",
    lr=(1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5),
    weight_decay=(1e-3, 1e-4, 1e-5, 1e-6, 0.0),
    momentum=(0.9, 0.0),
    batch_size=None,
    max_epochs=400,
    patience=50,
    image_size=224,
    notes="REFERENCE section 7 / paper section 4.2 and Table 1",
)

#: Sized for a 2-core CPU: 6 runs per pair at the native 28 px, 30 epochs, patience 10. See the
#: README ("Fine-tuning (ground truth)") for the reasons; in short: in the paper's released runs
#: the winning (lowest validation loss) run had momentum 0.9 in 148 of 214 pairs, the smaller
#: batch size in 146, and a learning rate in {0.1, 0.01, 0.001} in 187; weight decay 1e-3 and 0
#: were the most frequent winners of the two scenarios.
QUICK = GridSpec(
    name="quick",
    lr=(1e-1, 1e-2, 1e-3),
    weight_decay=(1e-3, 0.0),
    momentum=(0.9,),
    batch_size=None,
    max_epochs=30,
    patience=10,
    image_size=28,
    smaller_batch_only=True,
    notes="reduced grid for a 2-core CPU; see README",
)

PRESETS: dict[str, GridSpec] = {"paper": PAPER, "quick": QUICK}

_LIST_KEYS = ("lr", "weight_decay", "momentum", "batch_size")
_SCALAR_KEYS = frozenset(f.name for f in fields(GridSpec)) - {"name", "notes", *_LIST_KEYS}


def _read_mapping(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"grid file {path}: not UTF-8 text; give a YAML or JSON grid file"
                         ) from None
    where = f"grid file {path}"
    if path.suffix.lower() == ".json":
        try:
            return load_json(text, where)
        except json.JSONDecodeError as exc:
            raise InputError(f"grid file {path}: invalid JSON ({exc})") from None
    # PyYAML: optional (the torch extra installs it), only for YAML grid files.
    yaml = optional_import("yaml", "pip install pyyaml",
                           f"grid file {path} (YAML; a JSON grid needs nothing more)")
    try:
        return load_yaml(text, where)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise InputError(f"grid file {path}: invalid YAML ({first})") from None


def grid_from_mapping(data: Mapping[str, Any], *, name: str = "custom") -> GridSpec:
    """Build a grid from a mapping (parsed YAML/JSON).

    Keys: ``base`` (``paper`` or ``quick``, default ``paper``: unspecified keys come from it),
    list keys ``lr``, ``weight_decay``, ``momentum``, ``batch_size`` (a number is a one-element
    list; ``batch_size: paper`` = Table 1), and scalars ``max_epochs``, ``patience``,
    ``image_size``, ``seed``, ``dropout``, ``augment``, ``resize_filter``,
    ``smaller_batch_only``. Unknown keys are an error.
    """
    # Hand-written, not a schema library: the value rules are RunConfig's own checks (one
    # place for a run's settings, which every grid point passes through), so a schema model
    # would state them twice; what is left here is the preset merge and list-or-number keys.
    if not isinstance(data, Mapping):
        raise InputError(f"grid {name}: expected a mapping of keys to values; got "
                         f"{type(data).__name__}")
    data = dict(data)
    base_name = data.pop("base", "paper")
    if base_name not in PRESETS:
        raise InputError(f"grid {name}: base must be one of {sorted(PRESETS)}; got {base_name!r}")
    unknown = sorted(set(data) - set(_LIST_KEYS) - set(_SCALAR_KEYS))
    if unknown:
        raise InputError(f"grid {name}: unknown key(s) {unknown}; allowed: base, "
                         f"{', '.join(_LIST_KEYS)}, {', '.join(sorted(_SCALAR_KEYS))}")
    kwargs: dict[str, Any] = {"name": name, "notes": f"from {name}"}
    for key in _LIST_KEYS:
        if key not in data:
            continue
        value = data[key]
        if key == "batch_size" and value in (None, "paper"):
            kwargs[key] = None
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise InputError(f"grid {name}: {key} is an empty list")
        try:
            conv = [int(v) if key == "batch_size" else float(v) for v in values]
        except (TypeError, ValueError):
            raise InputError(f"grid {name}: {key} must be numbers; got {value!r}") from None
        if key == "batch_size" and any(c != v for c, v in zip(conv, values)):
            raise InputError(f"grid {name}: batch_size must be integers; got {value!r}")
        kwargs[key] = tuple(conv)
    for key in _SCALAR_KEYS:
        if key in data:
            kwargs[key] = data[key]
    grid = replace(PRESETS[base_name], **kwargs)
    # Validate every shared setting once, with the first grid point.
    try:
        RunConfig(lr=grid.lr[0], weight_decay=grid.weight_decay[0], momentum=grid.momentum[0],
                  batch_size=(grid.batch_size or (32,))[0], max_epochs=int(grid.max_epochs),
                  patience=int(grid.patience), image_size=int(grid.image_size),
                  seed=int(grid.seed), dropout=float(grid.dropout), augment=bool(grid.augment),
                  resize_filter=str(grid.resize_filter))
        for values, key in ((grid.lr, "lr"), (grid.weight_decay, "weight_decay"),
                            (grid.momentum, "momentum"), (grid.batch_size or (), "batch_size")):
            for v in values:
                RunConfig(**{**dict(lr=1.0, weight_decay=0.0, momentum=0.0, batch_size=1,
                                    max_epochs=1, patience=1, image_size=8), key: v})
    except (TypeError, ValueError) as exc:
        raise InputError(f"grid {name}: {str(exc).split(';')[0]}") from None
    if not isinstance(grid.augment, bool) or not isinstance(grid.smaller_batch_only, bool):
        raise InputError(f"grid {name}: augment and smaller_batch_only must be true or false")
    return grid


def default_seeds(k: int, first: int = 42) -> list[int]:
    """The seed list of ``finetune --seeds K``: the grid's seed, then the next ``K - 1``.

    The first replicate is then the selected grid run itself (same run key, never redone).
    """
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise InputError(f"--seeds must be an integer >= 2 (replicates to compare); got {k!r}")
    return [int(first) + i for i in range(int(k))]


def check_seeds(seeds: Any) -> list[int]:
    """``seeds`` as a list of at least two distinct non-negative integers, or ValueError."""
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise InputError(f"seed list {seeds!r} must be integers") from None
    if any(o != s for o, s in zip(out, seeds)):
        raise InputError(f"seed list {list(seeds)!r} must be integers")
    if len(out) < 2 or len(set(out)) != len(out) or min(out) < 0:
        raise InputError(f"seed list {out} must hold at least two distinct seeds >= 0")
    return out


def load_grid(spec: str | PathLike | GridSpec) -> GridSpec:
    """A preset name (``paper``, ``quick``), a YAML/JSON grid file, or a :class:`GridSpec`."""
    if isinstance(spec, GridSpec):
        return spec
    if isinstance(spec, str) and spec in PRESETS:
        return PRESETS[spec]
    p = Path(spec)
    if not p.is_file():
        raise InputError(f"--preset {str(spec)!r} is neither a preset ({', '.join(PRESETS)}) nor a "
                         "grid file (YAML or JSON)")
    return grid_from_mapping(_read_mapping(p), name=str(p))
