"""The medical targets of issue 28, each ranked from the command line and from the Python API
with a member whose intensity convention fits it (taken from its manifest): a DICOM CT
folder, a folder of 2-D NIfTI images, a 16-bit PNG folder and a CSV-labelled DICOM target.
Both routes give the same scores, and the member says which convention it read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import gradnca_onnx as g
from gradnca_onnx.cli import main

from _support import copy_zoo, edit_manifest, write_ct_dicom

pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

WINDOW = {"kind": "window", "low": -1000.0, "high": 1000.0, "unit": "HU"}


def _noisy(rng, level: float, spread: float, side: int = 24) -> np.ndarray:
    """A square of ``level`` in noise: two close levels make classes that overlap."""
    x = rng.normal(0.0, spread, (side, side))
    x[6:18, 6:18] += level
    return x


def _dicom(root, rng):
    for cls, level in (("soft", 60.0), ("dense", 160.0)):
        for i in range(10):
            hu = np.clip(_noisy(rng, level, 300.0) - 200.0, -1024, 3000).astype(np.int16)
            write_ct_dicom(root / cls / f"{i}.dcm", hu)
    return root, WINDOW


def _nifti(root, rng):
    for cls, level in (("a", 100.0), ("b", 130.0)):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            data = _noisy(rng, level, 60.0)[..., None].astype(np.float32)
            nib.Nifti1Image(data, np.eye(4)).to_filename(root / cls / f"{i}.nii.gz")
    return root, {"kind": "zscore"}


def _png16(root, rng):
    for cls, level in (("a", 500.0), ("b", 700.0)):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            v = np.clip(_noisy(rng, level, 900.0) + 2000.0, 0, 65535).astype(np.uint16)
            Image.fromarray(v).save(root / cls / f"{i}.png")
    return root, {"kind": "percentile", "low": 1.0, "high": 99.0}


def _csv(root, rng):
    folder, convention = _dicom(root / "files", rng)
    rows = ["file,label,patient"] + [
        f"files/{f.parent.name}/{f.name},{f.parent.name},{f.parent.name}{int(f.stem) // 2}"
        for f in sorted(folder.glob("*/*.dcm"))]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv", convention


@pytest.mark.parametrize("build", [_dicom, _nifti, _png16, _csv],
                         ids=["dicom-ct", "nifti-2d", "png-16bit", "csv-dicom"])
def test_medical_target_ranks_from_the_cli_and_the_api(tmp_path, build):
    target, convention = build(tmp_path / "target", np.random.default_rng(3))
    zoo = copy_zoo(tmp_path / "zoo", models=("adrenal",))

    def declare(d):
        d["schema_version"] = 6
        d["input"]["intensity"] = convention

    edit_manifest(zoo / "adrenal", declare)
    res = CliRunner().invoke(main, ["rank", "--zoo", str(zoo), "--target", str(target),
                                    "--format", "json", "--no-cache"])
    assert res.exit_code == 0, res.output
    [cli] = json.loads(res.stdout)["models"]
    assert cli["error"] is None
    assert any(n.startswith(f"intensity {convention['kind']}") for n in cli["notes"])
    assert "Read: " in res.stderr and "physical values" in res.stderr
    ranking = g.rank(zoo, target, threads=1)
    [api] = ranking.models
    assert (api.lp, api.fu) == (cli["lp"], cli["fu"])  # one path, the same numbers
