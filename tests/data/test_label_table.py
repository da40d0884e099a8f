"""Label tables (``--target table.csv``): columns found by name or named, class codes (sorted,
integers as integers), multi-label 0/1 columns, TSV and BOM, paths read against the table's
folder, patients and splits; every bad table refused in one line naming its row and column;
folds and bootstrap samples that keep each patient whole.

Tables are written in the test; the images are empty files (only their existence is read).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradnca_onnx import data
from gradnca_onnx.data import table as table_mod
from gradnca_onnx.errors import InputError


def _table(tmp_path: Path, rows: list[list[str]], *, name: str = "labels.csv",
           sep: str = ",", files: bool = True, prefix: str = "") -> Path:
    """``tmp_path/name`` with ``rows`` (the first is the header); with ``files``, an empty file
    for every data cell that ends in ``.png`` (read against ``tmp_path``)."""
    out = tmp_path / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(prefix + "\n".join(sep.join(r) for r in rows) + "\n", encoding="utf-8")
    if files:
        for cell in (c for r in rows[1:] for c in r if c.endswith(".png")):
            f = (out.parent / cell).resolve()
            f.parent.mkdir(parents=True, exist_ok=True)
            f.touch()
    return out


def _refused(path: Path, *needles: str, **options) -> str:
    """The one-line error of reading ``path``; it names the table and each needle."""
    with pytest.raises(InputError) as info:
        data.read_label_table(path, **options)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


BENIGN4 = [["path", "label"], ["a.png", "benign"], ["b.png", "malignant"], ["c.png", "benign"],
           ["d.png", "malignant"]]


# --------------------------------------------------------------------------------- reading
def test_class_names_are_sorted_and_are_the_codes(tmp_path):
    t = data.read_label_table(_table(tmp_path, [["Image", "Diagnosis"], ["x.png", "nevus"],
                                                ["y.png", "melanoma"], ["z.png", "nevus"],
                                                ["w.png", "melanoma"], ["v.png", "bcc"],
                                                ["u.png", "bcc"]]))
    assert t.class_names == ("bcc", "melanoma", "nevus") and t.task == "multi-class"
    assert t.labels.tolist() == [2, 1, 2, 1, 0, 0] and t.labels.dtype == np.int64
    assert [p.name for p in t.paths] == ["x.png", "y.png", "z.png", "w.png", "v.png", "u.png"]
    assert all(p.is_absolute() for p in t.paths) and t.rows == (2, 3, 4, 5, 6, 7)
    assert dict(t.columns) == {"path": ("Image",), "label": ("Diagnosis",)}
    assert t.groups is None and t.splits is None and len(t) == 6 and t.n_classes == 3
    assert any("path='Image'" in n for n in t.notes)
    with pytest.raises(ValueError):
        t.labels[0] = 1  # read-only


def test_integer_labels_sort_as_integers(tmp_path):
    rows = [["file", "y"]] + [[f"{i}.png", str(v)] for i, v in enumerate([10, 2, 2, 10, 1, 1])]
    t = data.read_label_table(_table(tmp_path, rows))
    # 1 < 2 < 10 (not "1" < "10" < "2"); not 0..C-1, so coded in sorted order and noted.
    assert t.class_names == ("1", "2", "10") and t.labels.tolist() == [2, 1, 1, 2, 0, 0]
    assert any("coded 0..2" in n for n in t.notes)
    # Labels 0..C-1 (as pandas writes them, "1.0") keep their values as codes.
    rows = [["file", "y"]] + [[f"{i}.png", v] for i, v in enumerate(["1.0", "0", "1", "0.0"])]
    t = data.read_label_table(_table(tmp_path / "b", rows))
    assert t.labels.tolist() == [1, 0, 1, 0] and t.class_names == ("0", "1")
    assert t.task == "binary" and not any("coded" in n for n in t.notes)


def test_multi_label_columns_found_or_named(tmp_path):
    rows = [["filename", "effusion", "nodule", "age"], ["a.png", "1", "0", "61"],
            ["b.png", "0", "1", "40"], ["c.png", "1", "1", "33"], ["d.png", "0", "0", "52"]]
    t = data.read_label_table(_table(tmp_path, rows))
    assert t.task == "multi-label" and t.class_names == ("effusion", "nodule")
    assert t.labels.tolist() == [[1, 0], [0, 1], [1, 1], [0, 0]]
    assert any("multi-label" in n for n in t.notes) and any("age" in n for n in t.notes)
    named = data.read_label_table(tmp_path / "labels.csv", label_columns=["nodule", "effusion"])
    assert named.class_names == ("nodule", "effusion")
    assert named.labels.tolist() == [[0, 1], [1, 0], [1, 1], [0, 0]]
    one = data.read_label_table(tmp_path / "labels.csv", label_columns="age", min_per_class=1)
    assert one.task == "multi-class" and one.class_names == ("33", "40", "52", "61")


def test_tsv_bom_sniffed_txt_and_semicolons(tmp_path):
    rows = [["path", "label"], ["a.png", "x"], ["b.png", "y"], ["c.png", "x"], ["d.png", "y"]]
    for name, sep, prefix in [("t.tsv", "\t", ""), ("t.tab", "\t", ""), ("bom.csv", ",", "\ufeff"),
                              ("t.txt", "|", ""), ("semi.csv", ";", "")]:
        t = data.read_label_table(_table(tmp_path / name.replace(".", "_"), rows, name=name,
                                         sep=sep, prefix=prefix))
        assert t.class_names == ("x", "y") and t.labels.tolist() == [0, 1, 0, 1], name
        assert dict(t.columns)["path"] == ("path",), name  # the BOM is not part of the name


def test_relative_paths_are_read_against_the_table_folder(tmp_path, monkeypatch):
    (tmp_path / "images" / "p1").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (tmp_path / "images" / "p1" / name).touch()
    (tmp_path / "up.png").touch()
    absolute = tmp_path / "images" / "p1" / "b.png"
    out = _table(tmp_path / "meta", [["path", "label"], ["../images/p1/a.png", "x"],
                                     [str(absolute), "y"], ["../up.png", "x"],
                                     ["..\\images\\p1\\b.png", "y"]], files=False)
    monkeypatch.chdir(tmp_path / "images")  # not the cwd
    with pytest.raises(InputError, match="rows 3 and 5 of column 'path' name the same file"):
        data.read_label_table(out)  # a Windows path is read with '/' and found to repeat row 3
    (tmp_path / "images" / "p1" / "c.png").touch()
    out.write_text(out.read_text().replace("p1\\b.png", "p1\\c.png"))
    t = data.read_label_table(out, min_per_class=1)
    assert t.paths == ((tmp_path / "images/p1/a.png").resolve(), absolute.resolve(),
                       (tmp_path / "up.png").resolve(), (tmp_path / "images/p1/c.png").resolve())
    assert t.source == out.resolve()


def test_quoted_cells_and_blank_rows_keep_spreadsheet_row_numbers(tmp_path):
    out = _table(tmp_path, BENIGN4)
    text = out.read_text().replace("c.png,benign", '"c.png","benign,\ncystic"')
    out.write_text(text.replace("b.png", "\n\nb.png") + ",,\n")
    t = data.read_label_table(out, min_per_class=1)
    assert t.rows == (2, 5, 6, 7) and t.class_names == ("benign", "benign,\ncystic", "malignant")
    out.write_text(out.read_text().replace("d.png", "e.png"))
    _refused(out, "row 7:", "e.png")


def test_patients_and_splits(tmp_path):
    rows = [["Patient ID", "Split", "Image Path", "label", "fold"],
            ["p1", "Train", "a.png", "0", "1"], ["p1", "training", "b.png", "1", "1"],
            ["p2", "VAL", "c.png", "0", "2"], ["p3", "Testing", "d.png", "1", "2"],
            ["p3", "test", "e.png", "0", "3"], ["p4", "valid", "f.png", "1", "3"]]
    t = data.read_label_table(_table(tmp_path, rows))
    # A "fold" column holds fold numbers, not splits: left alone unless named.
    assert any("not used: fold" in n for n in t.notes)
    assert t.groups == ("p1", "p1", "p2", "p3", "p3", "p4")
    assert t.splits == ("train", "train", "val", "test", "test", "val")
    assert dict(t.columns) == {"path": ("Image Path",), "group": ("Patient ID",),
                               "split": ("Split",), "label": ("label",)}


def test_named_columns_override_the_names(tmp_path):
    rows = [["image", "file", "label", "cls", "pid"], ["a.png", "x", "0", "u", "1"],
            ["b.png", "y", "1", "v", "1"], ["c.png", "z", "0", "u", "2"],
            ["d.png", "w", "1", "v", "2"]]
    out = _table(tmp_path, rows)
    _refused(out, "'image', 'file'", "--path-column")
    t = data.read_label_table(out, path_column="IMAGE", label_columns="cls", group_column="pid")
    assert t.class_names == ("u", "v") and t.groups == ("1", "1", "2", "2")
    assert any("file" in n and "label" in n for n in t.notes)  # the unused columns
    _refused(out, "no column 'nope'", "--group-column", path_column="image", group_column="nope")


# --------------------------------------------------------------------------------- refusals
def test_missing_files_are_counted_and_the_first_three_shown(tmp_path):
    rows = BENIGN4 + [["gone1.png", "benign"], ["gone2.png", "malignant"], ["gone3.png", "x"],
                      ["gone4.png", "x"]]
    out = _table(tmp_path, rows)
    for name in ("gone1.png", "gone2.png", "gone3.png", "gone4.png"):
        (tmp_path / name).unlink()
    msg = _refused(out, "4 of 8 files in column 'path' do not exist", "row 6:", "row 8:",
                   str(tmp_path))
    assert "gone4" not in msg


@pytest.mark.parametrize("rows, needles", [
    (BENIGN4 + [["b.png", "benign"]], ("rows 3 and 6", "same file")),
    (BENIGN4 + [["./a.png", "benign"]], ("rows 2 and 6",)),
    (BENIGN4 + [["", "benign"]], ("row 6, column 'path' is empty",)),
    (BENIGN4 + [["e.png", " "]], ("row 6, column 'label' is empty",)),
    (BENIGN4 + [["e.png", "benign", "extra"]], ("row 6 has 3 cells", "2 columns")),
    (BENIGN4 + [["e.png"]], ("row 6 has 1 cells",)),
    (BENIGN4 + [["e.png", "cyst"]], ("class 'cyst' has 1 image(s) (row 6)", "fewer than 2")),
    ([["path", "label"]], ("no data rows",)),
    ([["path", "label"], ["a.png", "x"], ["b.png", "x"]], ("column 'label': only 1 class",)),
    ([["1", "0"], ["2", "1"]], ("row 1 is not a header", "'1'")),
    ([["a.png", "benign"], ["b.png", "malignant"]], ("row 1 is not a header", "'a.png'")),
    ([["path", "label"], ["a.png", "0"], ["b.png", "1"]], ("class '0' has 1 image(s) (row 2)",)),
    ([["path", "notes", "stage"], ["a.png", "x", "1"], ["b.png", "y", "2"]],
     ("cannot tell which column holds the labels", "--label-column")),
    ([["path", "label", "class"], ["a.png", "x", "1"], ["b.png", "y", "2"]],
     ("'label', 'class'", "--label-column")),
    ([["id", "label"], ["a.png", "x"], ["b.png", "y"]], ("no column of image paths",
                                                         "--path-column")),
    ([["path", "label", "label"], ["a.png", "x", "1"]], ("columns 2 and 3", "'label'")),
])
def test_bad_tables_are_refused_in_one_line(tmp_path, rows, needles):
    _refused(_table(tmp_path, rows), *needles)


def test_empty_and_unreadable_tables(tmp_path):
    (tmp_path / "empty.csv").write_text("\n\n")
    _refused(tmp_path / "empty.csv", "empty")
    (tmp_path / "latin.csv").write_bytes(b"path,label\nb\xe9nin.png,x\n")
    _refused(tmp_path / "latin.csv", "not UTF-8", "CSV UTF-8")
    (tmp_path / "t.xlsx").write_bytes(b"PK")
    _refused(tmp_path / "t.xlsx", "give a .csv or .tsv")
    _refused(tmp_path / "absent.csv", "no such label table")


def test_multi_label_cells_must_be_zero_or_one(tmp_path):
    rows = [["path", "effusion", "nodule"], ["a.png", "1", "0"], ["b.png", "0", "1"],
            ["c.png", "1", "1"], ["d.png", "0", "0"]]
    out = _table(tmp_path, rows)
    out.write_text(out.read_text().replace("c.png,1,1", "c.png,1,2"))
    # Found by the 0/1 rule no more (nodule holds a 2), so named: the cell is refused.
    _refused(out, "row 4, column 'nodule' holds '2', not 0 or 1",
             label_columns=["effusion", "nodule"])
    out.write_text(out.read_text().replace("c.png,1,2", "c.png,1,"))
    _refused(out, "row 4, column 'nodule' is empty", label_columns=["effusion", "nodule"])
    out.write_text(out.read_text().replace("c.png,1,", "c.png,1,0"))
    _refused(out, "column 'nodule' has 1 positive image(s) (row 3)")


def test_splits_and_patients_refused(tmp_path):
    rows = [["path", "patient", "split", "label"], ["a.png", "p1", "train", "x"],
            ["b.png", "p2", "train", "y"], ["c.png", "p3", "test", "x"],
            ["d.png", "p1", "test", "y"]]
    out = _table(tmp_path, rows)
    _refused(out, "column 'patient': patient 'p1' is in split 'train' (row 2) and 'test' (row 5)")
    out.write_text(out.read_text().replace("p1,test", "p1,holdout"))
    _refused(out, "row 5, column 'split' holds 'holdout', not a split", "validation")
    out.write_text(out.read_text().replace("p1,holdout", ",train"))
    _refused(out, "row 5, column 'patient' is empty")
    # Two possible patient columns: ask which.
    rows = [["path", "patient", "subject", "label"], ["a.png", "1", "2", "x"]]
    _refused(_table(tmp_path / "two", rows), "'patient', 'subject'", "--group-column")


def test_too_many_classes(tmp_path, monkeypatch):
    monkeypatch.setattr(table_mod, "MAX_CLASSES", 3)
    rows = [["path", "label"]] + [[f"{i}.png", f"c{i}"] for i in range(4)]
    _refused(_table(tmp_path, rows), "column 'label' has 4 classes, more than 3", min_per_class=1)


# --------------------------------------------------------------------------------- patients
@st.composite
def _patients(draw):
    sizes = draw(st.lists(st.integers(1, 6), min_size=2, max_size=40))
    labels = [draw(st.integers(0, 2)) for size in sizes for _ in range(size)]
    groups = [f"p{g}" for g, size in enumerate(sizes) for _ in range(size)]
    order = draw(st.permutations(range(len(groups))))
    return np.asarray(groups)[order], np.asarray(labels)[order], sizes


@settings(max_examples=60, deadline=None)
@given(_patients(), st.integers(2, 5), st.integers(0, 3))
def test_group_folds_keep_patients_whole_and_sizes_balanced(case, k, seed):
    groups, labels, sizes = case
    k = min(k, len(sizes))
    folds = data.group_folds(groups, labels, k, seed)
    assert folds.dtype == np.int64 and folds.shape == groups.shape
    for g in np.unique(groups):
        assert np.unique(folds[groups == g]).size == 1  # a patient is never split
    counts = np.bincount(folds, minlength=k)
    assert counts.max() - counts.min() <= max(sizes)
    assert counts.min() > 0  # every fold is used
    np.testing.assert_array_equal(folds, data.group_folds(groups, labels, k, seed))


def test_group_folds_stratify_when_patients_allow():
    rng = np.random.default_rng(5)
    labels = rng.permutation(np.repeat([0, 1, 2], [60, 30, 10]))
    groups = np.arange(100).astype(str)  # one image per patient: perfect stratification possible
    folds = data.group_folds(groups, labels, 5, seed=1)
    for f in range(5):
        np.testing.assert_array_equal(np.bincount(labels[folds == f], minlength=3), [12, 6, 2])
    multi = np.stack([labels == 0, labels == 2], axis=1).astype(int)
    folds = data.group_folds(groups, multi, 5, seed=1)
    assert {int(multi[folds == f, 1].sum()) for f in range(5)} == {2}
    with pytest.raises(InputError, match="6 folds need 2 to 5 groups"):
        data.group_folds(list("aabbccddee"), [0, 1] * 5, 6)


@settings(max_examples=40, deadline=None)
@given(_patients(), st.integers(0, 2**32 - 1))
def test_group_resample_draws_whole_patients(case, seed):
    groups, _, sizes = case
    idx = data.group_resample_indices(groups, np.random.default_rng(seed))
    assert idx.dtype == np.int64
    drawn = groups[idx]
    per_group = {g: int(np.sum(groups == g)) for g in np.unique(groups)}
    for g in np.unique(drawn):
        assert np.sum(drawn == g) % per_group[g] == 0  # each drawn patient: all its images
    # As many patients drawn as there are (with replacement), in blocks of whole patients.
    blocks = 0
    k = 0
    while k < idx.size:
        g = groups[idx[k]]
        assert sorted(idx[k:k + per_group[g]]) == sorted(np.flatnonzero(groups == g))
        k += per_group[g]
        blocks += 1
    assert blocks == len(sizes)
    np.testing.assert_array_equal(idx, data.group_resample_indices(groups, seed))
