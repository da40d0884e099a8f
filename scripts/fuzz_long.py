#!/usr/bin/env python
"""Long fuzz runs over the input surface (issue 15): the targets of tests/test_fuzz.py with many
more, randomized examples. Usage::

    python scripts/fuzz_long.py [--examples 2000] [--seed N] [--only npz_bytes,csv,...]

Each target reports how many examples ran and the first counterexample (the property: a
result or a ValueError, never another exception, a hang or a write beside the input). Exits 1
if any target found one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hypothesis import HealthCheck, given, settings, seed as hyp_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import _fuzz_targets as F  # noqa: E402

TARGETS = {
    "npz_bytes": (F.mutated_bytes(F.SEED_NPZ, 32), F.fuzz_npz_bytes),
    "npz_arrays": (F.npz_arrays(), F.fuzz_npz_arrays),
    "image_folder": (F.folder_layout(), F.fuzz_folder),
    "manifest": (F.mutated_manifest(), F.fuzz_manifest),
    "manifest_bytes": (F.mutated_bytes(F.json.dumps(F.SEED_MANIFEST).encode(), 32),
                       F.fuzz_manifest_bytes),
    "csv": (st.one_of(F.mutated_bytes(F.SEED_CSV.encode(), 32), st.binary(max_size=2000)),
            F.fuzz_csv),
    "onnx_bytes": (F.mutated_bytes(F.SEED_ONNX, 32), F.fuzz_onnx_bytes),
    "onnx_protobuf": (F.mutated_onnx(), F.fuzz_onnx_model),
}


def run(name: str, examples: int, seed: int | None) -> bool:
    strategy, target = TARGETS[name]
    base = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    counter = [0]

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(value=strategy)
    def prop(value) -> None:
        target(F.fresh_dir(base, counter), value)

    if seed is not None:
        prop = hyp_seed(seed)(prop)
    t0 = time.perf_counter()
    try:
        prop()
    except Exception:  # noqa: BLE001 - report, then go on with the next target
        print(f"[{name}] FOUND after {counter[0]} examples:")
        traceback.print_exc(limit=6)
        return False
    print(f"[{name}] ok: {counter[0]} examples in {time.perf_counter() - t0:.1f} s")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--only", default=",".join(TARGETS))
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        print(f"Error: unknown target(s) {unknown}; choose from {sorted(TARGETS)}",
              file=sys.stderr)
        return 2
    ok = [run(n, args.examples, args.seed) for n in names]
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
