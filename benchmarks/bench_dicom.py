"""Reading a CT target of DICOM slices for a 224 px model with a CT window, against the natural
baselines in the same run.

    python benchmarks/bench_dicom.py [--n 100,1000] [--side 512] [--size 224] [--out r.json]

N synthetic 512x512 CT slices (two class folders, stored as HU + 1024 in 16 bits, written with
pydicom once per N) are read, windowed to [-1000, 1000] HU and resized to 224x224 by:

* ``gradnca``: ``load_target(folder, size=224)`` (physical values resized while loading, an
  8-bit rendering kept for 8-bit members) then what the engine does for a window member
  (``Intensity.apply`` and ``preprocess_values``: normalised float32 NCHW);
* ``pydicom-numpy``: a loop of ``pydicom.dcmread``, ``pixel_array * slope + intercept``,
  ``np.clip`` of the window and Pillow's float resize (the floor: the same work, no checks);
* ``monai``: ``LoadImage`` + ``ScaleIntensityRange`` + ``Resize`` (when MONAI is installed).

Each runs in a fresh child process, which reports its wall time and its peak resident set size
(``VmHWM``) over the baseline after imports. The ratio is ``gradnca`` over each baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

folder, size, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import pydicom
from PIL import Image
if how == "gradnca":
    from gradnca_onnx.data import load_target
    from gradnca_onnx.data.conventions import Intensity
    from gradnca_onnx.data.preprocess import preprocess_values
elif how == "monai":
    from monai.transforms import Compose, LoadImage, Resize, ScaleIntensityRange
base = hwm()
t0 = time.perf_counter()
if how == "gradnca":
    t = load_target(folder, size=size)
    x = preprocess_values(Intensity("window", -1000.0, 1000.0).apply(t.physical),
                          mean=[0.5] * 3, std=[0.5] * 3, channels=3)
    n = len(t)
elif how == "pydicom-numpy":
    from pathlib import Path
    files = sorted(Path(folder).glob("*/*.dcm"))
    out = np.empty((len(files), size, size), np.float32)
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        w = np.clip((hu + 1000.0) / 2000.0, 0.0, 1.0)
        out[i] = np.asarray(Image.fromarray(w, mode="F").resize((size, size), Image.BILINEAR))
    x = (np.repeat(out[:, None], 3, axis=1) - 0.5) / 0.5
    n = len(files)
else:
    from pathlib import Path
    files = sorted(str(f) for f in Path(folder).glob("*/*.dcm"))
    tf = Compose([LoadImage(image_only=True, ensure_channel_first=True, reader="PydicomReader"),
                  ScaleIntensityRange(-1000, 1000, 0.0, 1.0, clip=True),
                  Resize((size, size))])
    out = np.stack([np.asarray(tf(f)) for f in files])
    n = len(files)
seconds = time.perf_counter() - t0
print(json.dumps({"n": n, "seconds": seconds, "peak_mib": hwm() - base}))
"""


def write_slices(folder: Path, n: int, side: int) -> None:
    """``n`` CT slices in two class folders: air, a body disc of soft tissue, noise."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _support import write_ct_dicom

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    body = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (0.4 * side) ** 2
    for i in range(n):
        cls = "a" if i % 2 else "b"
        hu = np.where(body, 40, -1000) + rng.normal(0, 15, (side, side))
        write_ct_dicom(folder / cls / f"{i:05d}.dcm", np.clip(hu, -1024, 3000).astype(np.int16))


def run(folder: Path, size: int, how: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(size), how],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpu() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="100,1000")
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    print(f"machine: {machine_line()}", flush=True)  # with every figure
    try:
        import monai  # noqa: F401
        methods = ["gradnca", "pydicom-numpy", "monai"]
    except ImportError:
        methods = ["gradnca", "pydicom-numpy"]
    results = {"cpu": cpu(), "side": args.side, "size": args.size, "runs": []}
    for n in (int(v) for v in args.n.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_slices(Path(tmp), n, args.side)
            print(f"n={n}: wrote {n} slices in {time.perf_counter() - t0:.1f} s", flush=True)
            row = {"n": n}
            for how in methods:
                row[how] = run(Path(tmp), args.size, how)
                print(f"  {how:14s} {row[how]['seconds']:7.2f} s, peak +{row[how]['peak_mib']:.0f} "
                      "MiB", flush=True)
            for how in methods[1:]:
                row[f"ratio_vs_{how}"] = row["gradnca"]["seconds"] / row[how]["seconds"]
                print(f"  ratio gradnca / {how}: {row[f'ratio_vs_{how}']:.2f}")
            results["runs"].append(row)
    print(f"CPU: {results['cpu']}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
