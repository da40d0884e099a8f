"""Fuzz targets over the input surface (issue 15), shared by tests/test_fuzz.py (short runs in
the default suite) and scripts/fuzz_long.py (long runs).

The property of every target: the input gives a result or a documented error type
(``ValueError``, which the CLI turns into one ``Error:`` line), never another exception, a hang
(each example runs under a time limit) or a write outside the output directory.
"""

from __future__ import annotations

import copy
import io
import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from hypothesis import strategies as st

from _hardening_helpers import DEMO_ZOO, small_arrays

#: What a loader may raise for bad input (the CLI maps it to one line and exit code 2).
DOCUMENTED = (ValueError,)
#: Seconds one example may take before it counts as a hang.
HANG_S = 20


@contextmanager
def time_limit(seconds: int = HANG_S) -> Iterator[None]:
    """Raise ``TimeoutError`` (not a documented error: the example fails) after ``seconds``."""
    def _alarm(signum, frame):  # noqa: ARG001
        raise TimeoutError(f"input took more than {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def listing(root: Path) -> set[str]:
    """Every path under ``root`` (to check that nothing was written beside the input)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def check(fn, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``: a result, or ``None`` for a documented error; anything else propagates."""
    with time_limit():
        try:
            return fn(*args, **kwargs)
        except DOCUMENTED:
            return None


# --------------------------------------------------------------------------- byte mutation


def _seed_npz() -> bytes:
    arrays = small_arrays(n_train=12)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


SEED_NPZ = _seed_npz()
SEED_MANIFEST = json.loads((DEMO_ZOO / "adrenal" / "manifest.json").read_text())
SEED_ONNX = (DEMO_ZOO / "adrenal" / "features.onnx").read_bytes()
SEED_CSV = "source,a,b\ns1,0.1,0.2\ns2,0.3,0.1\ns3,0.5,0.9\n"


@st.composite
def mutated_bytes(draw, seed: bytes, max_edits: int = 8) -> bytes:
    """``seed`` with a few byte flips, truncation, insertion or deletion."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[i:i + draw(st.integers(1, 64))]
    return bytes(data)


# --------------------------------------------------------------------------- structure

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
JSON = st.recursive(JSON_LEAF, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)),
    max_leaves=6)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated_manifest(draw) -> Any:
    """The demo manifest with a few fields replaced, deleted or added (any JSON values)."""
    data = copy.deepcopy(SEED_MANIFEST)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for k in path[:-1]:
            parent = parent[k]
        op = draw(st.sampled_from(["replace", "delete", "add"]))
        if op == "replace":
            parent[path[-1]] = draw(JSON)
        elif op == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON)
    return data


@st.composite
def npz_arrays(draw) -> dict[str, np.ndarray]:
    """MedMNIST keys with arrays of odd dtypes, shapes and values."""
    base = small_arrays(n_train=12)
    key = draw(st.sampled_from(sorted(base)))
    kind = draw(st.sampled_from(["dtype", "shape", "value", "drop", "extra"]))
    if kind == "dtype":
        dtype = draw(st.sampled_from(["f4", "f8", "i8", "u8", "b1", "U3", "c8", "i1", "f2"]))
        base[key] = base[key].astype(dtype)
    elif kind == "shape":
        n = draw(st.integers(0, 14))
        shape = draw(st.lists(st.integers(0, 6), max_size=4))
        base[key] = np.zeros([n, *shape], np.uint8)
    elif kind == "value":
        v = draw(st.sampled_from([np.nan, np.inf, -1, 1e12, 2**62, 255, 0.5, -0.0]))
        arr = base[key].astype(np.float64 if isinstance(v, float) else np.int64)
        arr.reshape(-1)[draw(st.integers(0, arr.size - 1))] = v
        base[key] = arr
    elif kind == "drop":
        del base[key]
    else:
        base[draw(st.text("abc_", min_size=1, max_size=6))] = np.zeros(3)
    return base


def write_folder(root: Path, layout: dict[str, list[bytes]]) -> Path:
    for cls, blobs in layout.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, blob in enumerate(blobs):
            (root / cls / f"{i}.png").write_bytes(blob)
    return root


def png(value: int, size: int, mode: str) -> bytes:
    from PIL import Image

    shape = (size, size) if mode in ("L", "I;16", "1") else (size, size, len(mode))
    arr = np.full(shape, value, np.uint8)
    im = Image.fromarray(arr.astype(np.uint16) if mode == "I;16" else arr)
    if mode == "1":
        im = im.convert("1")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


SEED_PNG = png(100, 8, "L")


@st.composite
def folder_layout(draw) -> dict[str, list[bytes]]:
    """Class folders of PNGs: mutated bytes, odd modes and sizes, empty classes."""
    n_classes = draw(st.integers(1, 3))
    layout = {}
    for c in range(n_classes):
        files = []
        for _ in range(draw(st.integers(0, 3))):
            how = draw(st.sampled_from(["good", "mode", "size", "bytes"]))
            if how == "good":
                files.append(png(draw(st.integers(0, 255)), 8, "L"))
            elif how == "mode":
                files.append(png(7, 8, draw(st.sampled_from(["RGB", "RGBA", "LA", "I;16", "1"]))))
            elif how == "size":
                files.append(png(7, draw(st.integers(1, 12)), "L"))
            else:
                files.append(draw(mutated_bytes(SEED_PNG, 4)))
        layout[f"c{c}"] = files
    return layout


# --------------------------------------------------------------------------- the targets


def fuzz_npz_bytes(tmp: Path, blob: bytes) -> None:
    from gradnca_onnx.data import load_target

    p = tmp / "t.npz"
    p.write_bytes(blob)
    before = listing(tmp)
    for split in ("train", "all", "fold1"):
        out = check(load_target, p, split)
        assert out is None or len(out) == out.images.shape[0]
    assert listing(tmp) == before


def fuzz_npz_arrays(tmp: Path, arrays: dict[str, np.ndarray]) -> None:
    p = tmp / "t.npz"
    np.savez(p, **arrays)
    fuzz_npz_bytes(tmp, p.read_bytes())


def fuzz_folder(tmp: Path, layout: dict[str, list[bytes]]) -> None:
    from gradnca_onnx.data import load_target

    root = write_folder(tmp / "imgs", layout)
    before = listing(tmp)
    for kwargs in ({}, {"size": 8}, {"dedupe": True}):
        out = check(load_target, root, **kwargs)
        assert out is None or out.images.dtype == np.uint8
    assert listing(tmp) == before


def fuzz_manifest(tmp: Path, data: Any) -> None:
    from gradnca_onnx.zoo import Manifest
    from gradnca_onnx.zoo.manifest import read_manifest

    out = check(Manifest.from_dict, data)
    if out is not None:
        check(out.validate)
    model = tmp / "m"
    model.mkdir(exist_ok=True)
    try:
        text = json.dumps(data, allow_nan=True)
    except (TypeError, ValueError):
        return
    (model / "manifest.json").write_text(text)
    check(read_manifest, model)


def fuzz_manifest_bytes(tmp: Path, blob: bytes) -> None:
    from gradnca_onnx.zoo.manifest import read_manifest

    model = tmp / "m"
    model.mkdir(exist_ok=True)
    (model / "manifest.json").write_bytes(blob)
    check(read_manifest, model)


def fuzz_csv(tmp: Path, blob: bytes) -> None:
    from gradnca_onnx.evaluation.table import read_table

    p = tmp / "s.csv"
    p.write_bytes(blob)
    before = listing(tmp)
    table = check(read_table, p)
    if table is not None:
        from gradnca_onnx.evaluation import evaluate

        check(evaluate, table, {"m": table})
    assert listing(tmp) == before


def fuzz_onnx_bytes(tmp: Path, blob: bytes) -> None:
    from gradnca_onnx.importers.onnx_file import load_onnx

    p = tmp / "m.onnx"
    p.write_bytes(blob)
    before = listing(tmp)
    check(load_onnx, p)
    assert listing(tmp) == before


@st.composite
def mutated_onnx(draw) -> bytes:
    """The demo features graph with structural edits of its protobuf (valid wire format)."""
    import onnx

    model = onnx.load_from_string(SEED_ONNX)
    g = model.graph
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["opset", "domain", "drop_node", "op_type", "external",
                                   "drop_init", "input_name", "ir"]))
        if op == "opset":
            model.opset_import[0].version = draw(st.integers(-5, 40))
        elif op == "domain" and g.node:
            g.node[draw(st.integers(0, len(g.node) - 1))].domain = draw(
                st.sampled_from(["com.evil", "ai.onnx.ml", "", "x" * 3]))
        elif op == "drop_node" and g.node:
            del g.node[draw(st.integers(0, len(g.node) - 1))]
        elif op == "op_type" and g.node:
            g.node[draw(st.integers(0, len(g.node) - 1))].op_type = draw(
                st.sampled_from(["Pow", "Loop", "NoSuchOp", "", "Conv"]))
        elif op == "external" and g.initializer:
            t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
            t.data_location = onnx.TensorProto.EXTERNAL
            del t.external_data[:]
            e = t.external_data.add()
            e.key, e.value = "location", draw(st.sampled_from(
                ["/etc/passwd", "../x.bin", "missing.bin", "", "a/../../b"]))
        elif op == "drop_init" and g.initializer:
            del g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
        elif op == "input_name" and g.input:
            g.input[0].name = draw(st.text(max_size=6))
        elif op == "ir":
            model.ir_version = draw(st.integers(0, 20))
    return model.SerializeToString()


def fuzz_onnx_model(tmp: Path, blob: bytes) -> None:
    fuzz_onnx_bytes(tmp, blob)


def fresh_dir(base: Path, counter: list[int]) -> Path:
    """A new empty directory per example (hypothesis reuses the test's tmp_path)."""
    counter[0] += 1
    d = base / f"ex{counter[0]}"
    d.mkdir()
    return d


__all__ = [n for n in dir() if n.startswith(("fuzz_", "mutated_", "SEED_", "folder_", "npz_"))]
