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

from _support import DEMO_ZOO, small_arrays

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


# --------------------------------------------------------------------------- issue 24 targets

#: What may stand at an output path; only "missing" and "regular" may be written.
OUTPUT_KINDS = ("missing", "regular", "link-to-file", "dangling-link", "fifo", "directory",
                "char-device")


def _state(path: Path) -> tuple:
    """What is at ``path`` without following a link: (file type, content or link target)."""
    import stat

    try:
        st_ = os.lstat(path)
    except FileNotFoundError:
        return ("missing",)
    if stat.S_ISLNK(st_.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISREG(st_.st_mode):
        return ("file", path.read_bytes())
    return (stat.S_IFMT(st_.st_mode),)


def make_output_kind(path: Path, kind: str) -> bool:
    """Put a ``kind`` of thing at ``path``; ``False`` when this machine cannot (no mknod)."""
    import stat

    if kind == "regular":
        path.write_bytes(b"user data")
    elif kind == "link-to-file":
        (path.parent / "linked.txt").write_bytes(b"linked data")
        path.symlink_to(path.parent / "linked.txt")
    elif kind == "dangling-link":
        path.symlink_to(path.parent / "nowhere")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "char-device":
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except (PermissionError, OSError):
            return False
    return True


def fuzz_output_path(tmp: Path, kind: str, is_input: bool, via: str) -> None:
    """The output policy: only a new or regular file that is not an input is written; any
    other path is refused (a documented error) and left exactly as it was."""
    from gradnca_onnx.cli._errors import check_output_file
    from gradnca_onnx.io.atomic import atomic_write_text

    out = tmp / "out.csv"
    if not make_output_kind(out, kind):
        return
    inputs = {"--target": [out if via == "same" else tmp / "." / "out.csv"]} if is_input else {}
    before = {p.name: _state(p) for p in tmp.iterdir()}
    with time_limit():
        try:
            check_output_file(out, "--out", inputs)
            atomic_write_text(out, "result")
            written = True
        except (ValueError, FileExistsError):
            written = False
    # A missing input is no input to protect (the command fails reading it first).
    allowed = kind == "missing" or (kind == "regular" and not is_input)
    assert written == allowed, (kind, is_input)
    after = {p.name: _state(p) for p in tmp.iterdir()}
    if written:
        assert after.pop("out.csv") == ("file", b"result")
        before.pop("out.csv", None)
    assert after == before, (kind, is_input)


@st.composite
def wide_images(draw) -> np.ndarray:
    """Grey images of a bit depth above 8 (or bool / float), as a user's export holds them."""
    kind = draw(st.sampled_from(["u16", "u12", "bool", "f01", "fwide", "i32"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (12, 8, 8)
    if kind == "u16":
        return rng.integers(0, 65536, shape).astype(np.uint16)
    if kind == "u12":
        return rng.integers(0, 4096, shape).astype(np.uint16)
    if kind == "bool":
        return rng.random(shape) < 0.5
    if kind == "f01":
        return rng.random(shape).astype(np.float32)
    if kind == "fwide":
        return (rng.random(shape) * draw(st.sampled_from([2.0, 1000.0, -1.0]))).astype(np.float32)
    return rng.integers(-2, 70000, shape).astype(np.int32)


def fuzz_bit_depth(tmp: Path, images: np.ndarray) -> None:
    """A wide npz target loads as uint8 that keeps the order of the intensities (one map for
    the whole target: a brighter pixel never becomes darker), or is refused."""
    from gradnca_onnx.data import load_target

    arrays = small_arrays(n_train=12)
    arrays["train_images"] = images
    p = tmp / "t.npz"
    np.savez(p, **arrays)
    out = check(load_target, p, "train")
    if out is None:
        return
    got = out.images.reshape(len(images), -1).astype(np.int64).ravel()
    src = images.reshape(len(images), -1).astype(np.float64).ravel()
    assert out.images.dtype == np.uint8
    order = np.argsort(src, kind="stable")
    assert (np.diff(got[order]) >= 0).all(), "the intensity map is not monotone"
    if images.dtype != bool and np.ptp(src) > 0:
        assert got.max() > got.min()  # never decoded to a constant image


@st.composite
def class_counts(draw) -> list[int]:
    return draw(st.lists(st.integers(1, 120), min_size=2, max_size=6).filter(
        lambda c: sum(c) >= 6))  # S_FU needs six images


def fuzz_folder_order(counts: list[int]) -> None:
    """The class-interleaved order: a permutation, the same on every call, and every S_FU batch
    holds each class within C + 1 of its share (so every class whose share of a batch is
    above C + 1 is in it)."""
    from gradnca_onnx.data.dataset import class_interleaved_order
    from gradnca_onnx.scores.feature_update import fu_batch_slices

    y = np.repeat(np.arange(len(counts)), counts)
    order = class_interleaved_order(y)
    assert np.array_equal(np.sort(order), np.arange(y.size))
    assert np.array_equal(order, class_interleaved_order(y))
    ys = y[order]
    for sl in fu_batch_slices(y.size):
        size = sl.stop - sl.start
        for c, n_c in enumerate(counts):
            share = n_c * size / y.size
            assert abs(int((ys[sl] == c).sum()) - share) <= len(counts) + 1, (counts, c, sl)


@st.composite
def nested_text(draw) -> str:
    """JSON-like text nested to a depth around the loader's limit, sometimes very deep."""
    depth = draw(st.one_of(st.integers(0, 70), st.integers(1000, 200000)))
    opener = draw(st.sampled_from(["[", "{\"a\":", "[[", "[{\"b\":"]))
    closer = {"[": "]", "{\"a\":": "}", "[[": "]]", "[{\"b\":": "}]"}[opener]
    body = draw(st.sampled_from(["1", "\"[[[\"", "null", ""]))
    tail = draw(st.sampled_from(["", "x", "]"]))
    return opener * depth + body + closer * draw(st.sampled_from([depth, depth // 2])) + tail


def fuzz_nesting(tmp: Path, text: str) -> None:
    """Any nesting in a manifest or a rank JSON: a result or one ValueError, never a
    RecursionError; and a zoo listing holds the member as failed, never dies."""
    from gradnca_onnx.zoo.listing import list_zoo

    model = tmp / "zoo" / "m"
    model.mkdir(parents=True, exist_ok=True)
    (model / "manifest.json").write_text(text)
    entries = check(list_zoo, tmp / "zoo")
    assert entries is not None and len(entries) == 1 and not entries[0].ok
    from gradnca_onnx.io.loaders import load_json

    try:
        with time_limit():
            load_json(text, "x.json")
    except (ValueError,):  # json.JSONDecodeError is a ValueError
        pass


@st.composite
def cache_entry(draw) -> dict[str, np.ndarray]:
    """A feature-cache entry of the right names, with odd dtypes, shapes and values."""
    n, d, k = 30, 8, 5
    entry = {"features": np.ones((n, d), np.float32), "lp": np.array(0.5),
             "grad_norms_w1": np.ones(k), "grad_norms_w2": np.ones(k),
             "logits": np.zeros((n, 3), np.float32)}
    key = draw(st.sampled_from(sorted(entry)))
    how = draw(st.sampled_from(["value", "dtype", "shape", "drop", "none"]))
    if how == "value":
        v = draw(st.sampled_from([np.nan, np.inf, -1.0, 5.0, 1.0, 0.0, -0.0, 1e300]))
        entry[key] = entry[key].astype(np.float64)
        entry[key].reshape(-1)[0] = v
    elif how == "dtype":
        entry[key] = np.asarray(entry[key]).astype(draw(st.sampled_from(["U3", "i8", "b1",
                                                                          "c8", "O"])))
    elif how == "shape":
        entry[key] = np.zeros(draw(st.lists(st.integers(0, 31), max_size=3)))
    elif how == "drop":
        del entry[key]
    return entry


def fuzz_cache_entry(entry: dict[str, np.ndarray]) -> None:
    """A cache entry is trusted only when every value is what a computation gives: the right
    shapes, finite floats, S_LP in [0, 1], norms >= 0; otherwise a reason (never a raise)."""
    from types import SimpleNamespace

    from gradnca_onnx.engine.scoring import entry_problem

    manifest = SimpleNamespace(feature_dim=8, has_grads=True, num_classes=3)
    why = entry_problem(entry, manifest, 30)
    if why is None:
        for name in ("features", "lp", "grad_norms_w1", "grad_norms_w2", "logits"):
            a = entry[name]
            assert a.dtype.kind == "f" and np.isfinite(a).all()
        assert 0.0 <= float(entry["lp"]) <= 1.0
        assert (entry["grad_norms_w1"] >= 0).all() and (entry["grad_norms_w2"] >= 0).all()
    else:
        assert isinstance(why, str) and why


def fresh_dir(base: Path, counter: list[int]) -> Path:
    """A new empty directory per example (hypothesis reuses the test's tmp_path)."""
    counter[0] += 1
    d = base / f"ex{counter[0]}"
    d.mkdir()
    return d


__all__ = [n for n in dir() if n.startswith(("fuzz_", "mutated_", "SEED_", "folder_", "npz_",
                                              "wide_", "class_", "nested_", "cache_",
                                              "OUTPUT_", "make_"))]
