"""Targets in every pixel format read correctly or refused in one line.

16-bit, 32-bit integer, float and boolean images; the class-interleaved order of image folders;
decompression bombs; the S_FU message names the target and the cause; CLI advice in CLI terms
and ``rank --size``; pickled arrays, damaged ``.npy`` headers and inf labels. Every CLI case: exit 2, one ``Error:`` line,
and the zoo, cache and run store byte-identical afterwards.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from _support import BREAST, Ctx, small_arrays, snapshot, write_npz
from gradnca_onnx import data
from gradnca_onnx.cli import main
from gradnca_onnx.scores import fu_batch_slices
from gradnca_onnx.scores.feature_update import feature_update_score, fu_undefined_reason

T = small_arrays()


def _folder(root: Path, images: dict[str, list[np.ndarray]], ext: str = "png") -> Path:
    """``root/<class>/<i>.<ext>``, written with Pillow from the arrays."""
    for cls, arrays in images.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(arrays):
            Image.fromarray(a).save(root / cls / f"{i:03d}.{ext}")
    return root


def _listed(images: dict[str, list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels a folder written by :func:`_folder` loads as: class by class in
    file order, then in the class-interleaved order."""
    x = np.stack([a for arrays in images.values() for a in arrays])
    y = np.concatenate([np.full(len(a), c) for c, a in enumerate(images.values())])
    order = data.class_interleaved_order(y)
    return x[order], y[order]


def _breast(n: int = 10) -> dict[str, list[np.ndarray]]:
    """``n`` BreastMNIST images of each class."""
    with np.load(BREAST) as f:
        x, y = f["train_images"], f["train_labels"][:, 0]
    return {f"c{c}": list(x[y == c][:n]) for c in (0, 1)}


def _cli_refuses(state, tmp_path, monkeypatch, argv, needle) -> str:
    """Run ``rank`` with ``argv``: exit 2, one Error line holding ``needle``, nothing changed."""
    monkeypatch.setenv("GRADNCA_CACHE", str(state["cache"]))
    ctx = Ctx(tmp=tmp_path, **state)
    before = snapshot(state["zoo"], state["cache"], state["store"], tmp_path)
    res = CliRunner().invoke(main, ctx.rank(*argv))
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert res.exit_code == 2, f"exit {res.exit_code}\n{res.output}\n{res.exc_info}"
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    assert needle.lower() in errors[0].lower(), errors[0]
    assert snapshot(state["zoo"], state["cache"], state["store"], tmp_path) == before
    return errors[0]


# --------------------------------------------------------------------------- item 3: bit depths


def test_12_bit_pngs_fill_the_range_by_one_map(tmp_path) -> None:
    rng = np.random.default_rng(0)
    imgs = {c: [rng.integers(0, 4096, (16, 16)).astype(np.uint16) for _ in range(9)]
            for c in ("a", "b")}
    imgs["a"][0][0, 0] = 4095  # the folder's maximum: 12 bits
    t = data.load_target(_folder(tmp_path / "ct", imgs))
    raw, _ = _listed(imgs)
    expected = np.floor(raw.astype(np.float64) * 255 / 4095 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(t.images[..., 0], expected)
    assert (t.images == 255).mean() < 0.01  # clipped at 255 before the fix: ~94%
    assert len(t.notes) == 1 and "12-bit scale" in t.notes[0]


def test_breastmnist_x257_as_16_bit_pngs_comes_back_exactly(tmp_path) -> None:
    src = _breast()
    wide = {c: [a.astype(np.uint16) * 257 for a in arrays] for c, arrays in src.items()}
    t = data.load_target(_folder(tmp_path / "b16", wide))
    np.testing.assert_array_equal(t.images[..., 0], _listed(src)[0])
    assert "16-bit scale" in t.notes[0]


def test_mixed_8_and_16_bit_files_share_the_folder_map(tmp_path) -> None:
    a8 = np.full((8, 8), 200, np.uint8)
    a16 = np.full((8, 8), 1000, np.uint16)
    t = data.load_target(_folder(tmp_path / "mix", {"a": [a8] * 9, "b": [a16] * 9}))
    # Largest value 1000: the 10-bit scale for every file, the 8-bit ones included.
    assert set(np.unique(t.images).tolist()) == {round(200 * 255 / 1023),
                                                 round(1000 * 255 / 1023)}
    assert "mixed 8-bit" in t.notes[0] and "10-bit" in t.notes[0]


def test_split_folders_share_one_bit_depth(tmp_path) -> None:
    train = {c: [np.full((8, 8), 4000, np.uint16)] * 3 for c in ("a", "b")}
    test = {c: [np.full((8, 8), 1000, np.uint16)] * 3 for c in ("a", "b")}
    _folder(tmp_path / "d" / "train", train)
    _folder(tmp_path / "d" / "test", test)
    t = data.load_target(tmp_path / "d", "test")
    # The test split alone would take the 10-bit scale; the dataset's largest value, 12 bits.
    assert np.unique(t.images).tolist() == [round(1000 * 255 / 4095)]


def test_float_tiffs_within_0_1_are_scaled_by_255(tmp_path) -> None:
    src = _breast(9)
    flt = {c: [a.astype(np.float32) / 255 for a in arrays] for c, arrays in src.items()}
    t = data.load_target(_folder(tmp_path / "f", flt, "tif"))
    np.testing.assert_array_equal(t.images[..., 0], _listed(src)[0])  # was all 0 and 1
    assert "float pixel values in 0..1" in t.notes[0]


def test_int32_tiffs_take_the_16_bit_path(tmp_path) -> None:
    src = _breast(9)
    wide = {c: [a.astype(np.int32) * 257 for a in arrays] for c, arrays in src.items()}
    t = data.load_target(_folder(tmp_path / "i32", wide, "tif"))
    np.testing.assert_array_equal(t.images[..., 0], _listed(src)[0])
    # Negative integers have no 8-bit scale: physical values, never a guessed map.
    neg = {"a": [np.full((8, 8), -5, np.int32)] * 3, "b": [np.zeros((8, 8), np.int32)] * 3}
    t = data.load_target(_folder(tmp_path / "neg", neg, "tif"))
    assert not t.eight_bit and sorted(np.unique(t.physical).tolist()) == [-5.0, 0.0]


def test_float_tiffs_out_of_range_are_physical_and_8bit_members_refuse_them(
        state, tmp_path, monkeypatch) -> None:
    flt = {c: [np.full((28, 28), 0.5, np.float32)] * 4 for c in ("a", "b")}
    root = _folder(tmp_path / "f", flt, "tif")
    Image.fromarray(np.full((28, 28), 300.0, np.float32)).save(root / "b" / "001.tif")
    t = data.load_target(root)
    assert not t.eight_bit and float(t.physical.max()) == 300.0
    assert "0.5..300 have no 8-bit scale" in t.notes[0]
    # Every member of the demo zoo takes 8-bit images: one line, nothing written.
    line = _cli_refuses(state, tmp_path, monkeypatch, ["--target", str(root)], "8-bit")
    assert "uint8" in line and "--intensity" in line
    nan = _folder(tmp_path / "n", {c: [np.full((8, 8), 300.0, np.float32)] * 3 for c in "ab"},
                  "tif")
    Image.fromarray(np.full((8, 8), np.nan, np.float32)).save(nan / "a" / "009.tif")
    with pytest.raises(ValueError, match="NaN or inf"):
        data.load_target(nan)


def test_boolean_and_uint16_npz_images(tmp_path) -> None:
    masks = T["train_images"] > 100
    t = data.load_target(write_npz(tmp_path / "b.npz", **{**T, "train_images": masks}))
    np.testing.assert_array_equal(t.images[..., 0], np.where(masks, 255, 0))  # was 0/1
    assert "boolean" in t.notes[0]
    wide = {k: (v.astype(np.uint16) * 257 if k.endswith("_images") else v) for k, v in T.items()}
    t16 = data.load_target(write_npz(tmp_path / "w.npz", **wide), "test")
    np.testing.assert_array_equal(t16.images[..., 0], T["test_images"])  # was refused
    assert "16-bit scale" in t16.notes[0]


# --------------------------------------------------------------------------- item 4: order


def test_folder_order_is_class_interleaved_and_seeded(tmp_path) -> None:
    rng = np.random.default_rng(1)
    imgs = {c: [rng.integers(0, 256, (8, 8), dtype=np.uint8) for _ in range(n)]
            for c, n in (("a", 31), ("b", 29))}
    root = _folder(tmp_path / "bal", imgs)
    t = data.load_target(root)
    slices = fu_batch_slices(len(t))
    assert [np.unique(t.labels[s]).size for s in slices[:6]] == [2] * 6  # sorted: 1 of 7
    assert t.order == data.FOLDER_ORDER == "class-interleaved, seed 0"
    assert data.load_target(root).sha256 == t.sha256  # the same order on every load
    np.testing.assert_array_equal(t.images[..., 0], _listed(imgs)[0])


def test_npz_keeps_the_dataset_order(tmp_path) -> None:
    t = data.load_target(write_npz(tmp_path / "t.npz", **T))
    np.testing.assert_array_equal(t.images[..., 0], T["train_images"])
    assert t.order == "dataset" and t.notes == ()


def test_order_reaches_the_rank_output_and_the_cache_key(tmp_path, monkeypatch) -> None:
    from gradnca_onnx.engine import scoring

    imgs = _breast(12)
    root = _folder(tmp_path / "bm", imgs)
    parts = []
    real = scoring.cache_key
    monkeypatch.setattr(scoring, "cache_key", lambda p: (parts.append(p), real(p))[1])
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["rank", "--demo", "--quiet", "--models", "adrenal",
                                    "--target", str(root), "--no-cache", "--format", "json",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["target"]["order"] == "class-interleaved, seed 0"
    assert parts and all(p["order"] == "class-interleaved, seed 0" for p in parts)


# --------------------------------------------------------------------------- item 10: bombs


def test_decompression_bomb_png_is_one_line(state, tmp_path, monkeypatch) -> None:
    root = _folder(tmp_path / "bomb", _breast(3))
    png = root / "c0" / "000.png"
    b = bytearray(png.read_bytes())
    b[16:24] = struct.pack(">II", 40000, 40000)  # IHDR width, height
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))  # and its CRC
    png.write_bytes(bytes(b))
    line = _cli_refuses(state, tmp_path, monkeypatch, ["--target", str(root)], "000.png")
    assert "1,600,000,000 pixels" in line and "downscale" in line


def test_decompression_bomb_warning_is_refused_too(tmp_path, monkeypatch) -> None:
    root = _folder(tmp_path / "warn", _breast(3))
    # 28x28 = 784 pixels: above this limit but below twice it, where Pillow only warns.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 700)
    with pytest.raises(ValueError, match="784 pixels.*decompression-bomb"):
        data.load_target(root)


# --------------------------------------------------------------------------- item 16: S_FU


def test_sfu_message_names_the_target_and_identical_images(state, tmp_path,
                                                           monkeypatch) -> None:
    root = _folder(tmp_path / "black", {c: [np.zeros((28, 28), np.uint8)] * 12
                                        for c in ("a", "b")})
    line = _cli_refuses(state, tmp_path, monkeypatch,
                        ["--target", str(root), "--models", "adrenal", "--no-cache"],
                        "all 24 images of target 'black' (split all) are identical")
    assert "each batch holds at least two classes" not in line


def test_sfu_reasons() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    mixed = np.arange(30) % 2
    why = lambda X, y, **kw: fu_undefined_reason(X, y, target="'t' (split train)", **kw)  # noqa
    assert "has 12 images" in why(X[:12], mixed[:12]) and "at least 18" in why(X[:12], mixed[:12])
    assert "features are the same for every image" in why(np.ones((30, 4)), mixed)
    sorted_y = np.repeat([0, 1], 15)  # batches of 5 consecutive images: one class each
    assert "every S_FU batch (5 consecutive images) of target 't' (split train) holds a " \
           "single class" in why(X, sorted_y)
    assert "violates the margin" in why(np.c_[mixed * 10.0, np.ones(30)], mixed)
    with pytest.raises(ValueError, match="S_FU is undefined: every S_FU batch"):
        feature_update_score(np.zeros(6), np.zeros(6), why=lambda: why(X, sorted_y))


# --------------------------------------------------------------------------- item 18: CLI terms


def test_rank_size_resizes_a_mixed_size_folder(state, tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(2)
    imgs = {c: [rng.integers(0, 256, (28 + 4 * (i % 2), 28), dtype=np.uint8) for i in range(12)]
            for c in ("a", "b")}
    root = _folder(tmp_path / "mixed", imgs)
    line = _cli_refuses(state, tmp_path, monkeypatch, ["--target", str(root)], "--size HxW")
    assert "size=..." not in line
    res = CliRunner().invoke(main, ["rank", "--demo", "--quiet", "--models", "adrenal",
                                    "--target", str(root), "--size", "28", "--no-cache",
                                    "--format", "json"])
    assert res.exit_code == 0, res.output
    target = json.loads(res.stdout)["target"]
    assert target["n_samples"] == 24 and "resized to 28x28" in target["notes"][0]
    _cli_refuses(state, tmp_path, monkeypatch, ["--target", str(root), "--size", "28y3"],
                 "--size must be N or HxW")


def test_split_folders_suggest_split(state, tmp_path, monkeypatch) -> None:
    for split in ("Training", "Testing"):
        _folder(tmp_path / "mri" / split, _breast(3))
    line = _cli_refuses(state, tmp_path, monkeypatch, ["--target", str(tmp_path / "mri")],
                        "--split train|test")
    assert "holds no images" not in line


@pytest.mark.parametrize("flag, needle", [
    ("--split fold1", "--split all|train|val|test"),
    ("--size 28", "--size on the command line"),
])
def test_cli_advice_in_cli_terms(state, tmp_path, monkeypatch, flag, needle) -> None:
    target = (str(_folder(tmp_path / "f", _breast(3))) if "fold" in flag
              else str(write_npz(tmp_path / "t.npz", **T)))
    line = _cli_refuses(state, tmp_path, monkeypatch, ["--target", target, *flag.split()],
                        needle)
    assert "make_paper_folds" not in line and "gradnca_onnx.data" not in line


# --------------------------------------------------------------------------- item 19: npz lines


def _bogus_header(path: Path) -> Path:
    """An npz whose train_images header claims 3e11 images (a few KiB of data)."""
    import zipfile

    good = write_npz(path.with_name("good.npz"), **T)
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            blob = zin.read(info.filename)
            if info.filename == "train_images.npy":
                blob = blob.replace(b"(30, 28, 28)", b"(300000000000, 28, 28)")
                n = blob.index(b"\n") + 1 - 10
                blob = blob[:8] + struct.pack("<H", n) + blob[10:]
            zout.writestr(info, blob)
    good.unlink()
    return path


@pytest.mark.parametrize("build, needle, absent", [
    (lambda p: write_npz(p, **{**T, "train_images": np.array([None] * 30, dtype=object)}),
     "array 'train_images' holds pickled (object) arrays", "corrupt"),
    (_bogus_header, "header claims shape (300000000000, 28, 28)", "out of memory"),
    (lambda p: write_npz(p, **{**T, "train_labels": np.r_[np.inf, np.arange(29) % 2][:, None]}),
     "non-integer values (e.g. inf)", "nan"),
])
def test_npz_lines_say_what_is_wrong(state, tmp_path, monkeypatch, build, needle,
                                     absent) -> None:
    line = _cli_refuses(state, tmp_path, monkeypatch, ["--target", str(build(tmp_path / "t.npz"))],
                        needle)
    assert absent not in line.lower()
