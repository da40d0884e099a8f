"""Short Hypothesis fuzz runs over the input surface (issue 15), derandomized and bounded in
time so the default suite stays fast and deterministic. Long runs: scripts/fuzz_long.py.

Targets: the npz and image-folder target loaders, the manifest parser, the evaluate CSV reader
and the ONNX importer's file loading (``importers.onnx_file.load_onnx``); since issue 24 also
output paths (links, FIFOs, devices, inputs), bit depths, the folder order, nesting and cache
entries. The property: a
result or a ``ValueError`` (one ``Error:`` line at the CLI), never another exception, a hang or
a write beside the input.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import _fuzz_targets as F

#: Short runs: a fixed example sequence (derandomize), a few seconds per target.
SHORT = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture
def fresh(tmp_path):
    counter = [0]
    return lambda: F.fresh_dir(tmp_path, counter)


@SHORT
@given(blob=F.mutated_bytes(F.SEED_NPZ))
def test_fuzz_npz_bytes(fresh, blob) -> None:
    F.fuzz_npz_bytes(fresh(), blob)


@SHORT
@given(arrays=F.npz_arrays())
def test_fuzz_npz_arrays(fresh, arrays) -> None:
    F.fuzz_npz_arrays(fresh(), arrays)


@settings(SHORT, max_examples=25)
@given(layout=F.folder_layout())
def test_fuzz_image_folder(fresh, layout) -> None:
    F.fuzz_folder(fresh(), layout)


@settings(SHORT, max_examples=150)
@given(data=F.mutated_manifest())
def test_fuzz_manifest_structure(fresh, data) -> None:
    F.fuzz_manifest(fresh(), data)


@settings(SHORT, max_examples=60)
@given(blob=F.mutated_bytes(F.json.dumps(F.SEED_MANIFEST).encode()))
def test_fuzz_manifest_bytes(fresh, blob) -> None:
    F.fuzz_manifest_bytes(fresh(), blob)


@settings(SHORT, max_examples=80)
@given(blob=st.one_of(F.mutated_bytes(F.SEED_CSV.encode()), st.binary(max_size=200),
                      st.text(alphabet=",\n\r\"ab0.1-nan ", max_size=80).map(str.encode)))
def test_fuzz_evaluate_csv(fresh, blob) -> None:
    F.fuzz_csv(fresh(), blob)


@settings(SHORT, max_examples=30)
@given(blob=F.mutated_bytes(F.SEED_ONNX))
def test_fuzz_onnx_bytes(fresh, blob) -> None:
    pytest.importorskip("onnx")
    F.fuzz_onnx_bytes(fresh(), blob)


@settings(SHORT, max_examples=30)
@given(blob=F.mutated_onnx())
def test_fuzz_onnx_protobuf(fresh, blob) -> None:
    F.fuzz_onnx_model(fresh(), blob)


# ---- issue 24: output paths, bit depths, orders, nesting, cache contents


@settings(SHORT, max_examples=40)
@given(kind=st.sampled_from(F.OUTPUT_KINDS), is_input=st.booleans(),
       via=st.sampled_from(["same", "dotted"]))
def test_fuzz_output_path(fresh, kind, is_input, via) -> None:
    F.fuzz_output_path(fresh(), kind, is_input, via)


@settings(SHORT, max_examples=30)
@given(images=F.wide_images())
def test_fuzz_bit_depth(fresh, images) -> None:
    F.fuzz_bit_depth(fresh(), images)


@settings(SHORT, max_examples=100)
@given(counts=F.class_counts())
def test_fuzz_folder_order(counts) -> None:
    F.fuzz_folder_order(counts)


@settings(SHORT, max_examples=30)
@given(text=F.nested_text())
def test_fuzz_nesting(fresh, text) -> None:
    F.fuzz_nesting(fresh(), text)


@settings(SHORT, max_examples=100)
@given(entry=F.cache_entry())
def test_fuzz_cache_entry(entry) -> None:
    F.fuzz_cache_entry(entry)
