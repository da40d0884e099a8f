"""Label tables as targets: ``load_target(table.csv)`` and ``rank --target table.csv`` read the
files a table names (images, DICOM), with its labels, split and patients; a table sorted by
class still gives S_FU batches that hold every class; resamples keep a patient's images
together; a table naming missing files is one line and exit 2, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gradnca_onnx.cli import main
from gradnca_onnx.data import FOLDER_ORDER, load_target
from gradnca_onnx.evaluation.resampling import grouped_subsamples
from gradnca_onnx.scores import fu_batch_slices

from _support import assert_one_line_error, copy_zoo, edit_manifest, snapshot, write_ct_dicom


def _png_table(root, n: int = 12, sep: str = ","):
    """A table sorted by class (as hospitals export them) naming PNGs in ``img/``, two
    images per patient, a split column."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    lines = [sep.join(["Image Path", "Diagnosis", "Patient ID", "Split"])]
    for cls in ("benign", "malignant"):
        for i in range(n):
            name = f"{cls}_{i:02d}.png"
            px = rng.integers(0, 256, (20, 20)).astype(np.uint8)
            Image.fromarray(px).save(root / "img" / name)
            split = "train" if i < n - 4 else "test"
            lines.append(sep.join([f"img/{name}", cls, f"{cls[0]}{i // 2}", split]))
    table = root / ("labels.csv" if sep == "," else "labels.tsv")
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return table


def test_a_table_sorted_by_class_reads_interleaved_with_its_patients(tmp_path):
    t = load_target(_png_table(tmp_path))
    assert t.class_names == ("benign", "malignant") and len(t) == 24
    assert t.order == FOLDER_ORDER and t.groups is not None and len(set(t.groups)) == 12
    for sl in fu_batch_slices(len(t)):  # every S_FU batch holds both classes
        assert len(set(t.labels[sl].tolist())) == 2
    want = np.asarray(Image.open(tmp_path / "img" / "benign_00.png"))
    k = [i for i, g in enumerate(t.groups) if g == "b0"]
    assert any((t.images[i, ..., 0] == want).all() for i in k)
    train = load_target(tmp_path / "labels.csv", "train")
    assert len(train) == 16 and train.split == "train"
    tsv = load_target(_png_table(tmp_path / "tsv", sep="\t"))
    assert tsv.sha256 == t.sha256  # the same images, labels and order


def test_rank_reads_a_table_and_says_what_it_read(tmp_path):
    table = _png_table(tmp_path, n=14)
    zoo = copy_zoo(tmp_path / "zoo", models=("adrenal",))
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(table),
                                    "--label-column", "Diagnosis", "--format", "json",
                                    "--no-cache"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["models"][0]["error"] is None
    assert "Read: labels (all)" in res.stderr and "14 groups (patients)" in res.stderr


def test_grouped_resamples_keep_each_patient_whole():
    labels = np.repeat([0, 1], 20)
    groups = [f"p{i // 3}" for i in range(40)]
    draws = grouped_subsamples(labels, groups, 5, fraction=0.5, seed=3)
    again = grouped_subsamples(labels, groups, 5, fraction=0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(draws, again))  # seeded
    for idx in draws:
        drawn = {groups[i] for i in idx}
        assert all(sum(g == d for g in groups) == sum(groups[i] == d for i in idx)
                   for d in drawn)  # every drawn patient with all of its images
        assert 0.4 * 40 <= idx.size <= 0.7 * 40


def test_a_table_naming_a_missing_file_is_one_line(tmp_path):
    table = _png_table(tmp_path)
    (tmp_path / "img" / "malignant_03.png").unlink()
    zoo = copy_zoo(tmp_path / "zoo", models=("adrenal",))
    before = snapshot(tmp_path)
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(table),
                                    "--out", str(tmp_path / "r.csv"), "--format", "csv"])
    assert_one_line_error(res, "malignant_03.png")
    assert snapshot(tmp_path) == before


def test_a_table_of_dicom_ct_ranks_with_a_window_member(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    rng = np.random.default_rng(2)
    rows = ["file,label,patient"]
    for cls, level in (("soft", 60), ("bone", 160)):  # close levels: the classes overlap
        for i in range(10):
            hu = np.full((24, 24), -1000) + rng.normal(0, 30, (24, 24))
            hu[8:16, 8:16] = level + rng.normal(0, 300, (8, 8))
            hu = np.maximum(hu, -1024).astype(np.int16)
            write_ct_dicom(tmp_path / "dcm" / f"{cls}{i}.dcm", hu)
            rows.append(f"dcm/{cls}{i}.dcm,{cls},{cls}{i // 2}")
    (tmp_path / "ct.csv").write_text("\n".join(rows) + "\n")
    t = load_target(tmp_path / "ct.csv")
    assert t.modality == "CT" and t.unit == "HU" and t.physical is not None
    f = tmp_path / "dcm" / "bone3.dcm"
    hu = pydicom.dcmread(f).pixel_array.astype(np.float32) - 1024
    assert any(np.array_equal(t.physical[i, ..., 0], hu) for i in range(len(t)))
    zoo = copy_zoo(tmp_path / "zoo", models=("adrenal",))

    def edit(d):
        d["schema_version"] = 6
        d["input"]["intensity"] = {"kind": "window", "low": -1000, "high": 1000, "unit": "HU"}

    edit_manifest(zoo / "adrenal", edit)
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target",
                                    str(tmp_path / "ct.csv"), "--no-cache", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "window:-1000,1000:HU applied" in res.stdout


def test_fine_tuning_splits_of_a_table_keep_patients_whole(tmp_path):
    from gradnca_onnx.training.runner import load_target_splits

    table = _png_table(tmp_path, n=20)
    lines = table.read_text().splitlines()
    (tmp_path / "nosplit.csv").write_text(  # the same rows without the split column
        "\n".join(",".join(line.split(",")[:3]) for line in lines) + "\n")
    splits = load_target_splits(tmp_path / "nosplit.csv")
    seen = [set(t.groups) for t in (splits.train, splits.val, splits.test)]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(len(t) for t in (splits.train, splits.val, splits.test)) == 40
    assert "whole patients" in splits.description
    rows = [line.rsplit(",", 1) for line in lines[1:]]
    relabelled = [f"{r},{'val' if s == 'test' and (k // 2) % 2 else s}"  # whole patients
                  for k, (r, s) in enumerate(rows)]
    (tmp_path / "withval.csv").write_text("\n".join([lines[0], *relabelled]) + "\n")
    by_column = load_target_splits(tmp_path / "withval.csv")
    assert by_column.description == "the split column of withval.csv"
    assert (len(by_column.train), len(by_column.val), len(by_column.test)) == (32, 4, 4)


def test_a_split_column_without_val_rows_is_one_line(tmp_path):
    from gradnca_onnx.errors import InputError
    from gradnca_onnx.training.runner import load_target_splits

    with pytest.raises(InputError, match="no val rows"):
        load_target_splits(_png_table(tmp_path))
