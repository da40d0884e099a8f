"""No metric can take a run down, and no raw Python warning reaches
the terminal.

* The span forms (SFDA, H-score on D > N features) equal the direct D x D computations.
* Every metric on wide features (N = 120, D = 16,384) runs in a child process (a SIGSEGV there
  cannot take pytest down), returns a finite value, and stays within its memory estimate.
* The memory pre-check turns a metric that cannot fit into a "skipped" note; a MemoryError or
  a warning inside a metric becomes a note; ``rank --quiet --metrics all`` prints no
  ``file.py:line: Category`` warning and no source line.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

import gradnca_onnx.metrics as gm
from _support import copy_zoo, small_target
from gradnca_onnx.cli import main
from gradnca_onnx.metrics._common import class_sums, row_span, softmax_rows
from gradnca_onnx.metrics._memory import ESTIMATES
from _reference_metrics import _ref_coding_rate, ref_hscore, ref_sfda

sfda_mod = importlib.import_module("gradnca_onnx.metrics.sfda")
hscore_mod = importlib.import_module("gradnca_onnx.metrics.hscore")
memory_mod = importlib.import_module("gradnca_onnx.metrics._memory")

#: (N, D) with D > N, where the span forms are used.
WIDE = [(40, 50), (40, 300), (120, 300)]


def _wide(n: int, d: int, scale: float, effect: float, seed: int = 0):
    """Three classes, not centred (offset 1), class effect ``effect`` over all D dims.

    A small ``scale`` keeps SFDA's lambda well above its floor, so its probabilities are not
    all 1.0 and the comparison is informative.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = (rng.normal(size=(3, d))[y] * effect / np.sqrt(d) + rng.normal(size=(n, d))) * scale
    return X + 1.0, y


def _dense_true_class_proba(X: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    """SFDA's two FDAs with the D x D scatter (fit_fda without its span form)."""
    n = X.shape[0]
    first = sfda_mod.fit_fda(X, y, c)
    prob = softmax_rows(first.predict_proba(X))
    means = class_sums(X, y, c) / np.bincount(y, minlength=c)[:, None]
    others = (means.sum(axis=0) - means) / (c - 1)
    p = prob[np.arange(n), y][:, None]
    mixed = p * X + (1.0 - p) * others[y]
    second = sfda_mod.fit_fda(mixed, y, c, shrinkage=first.shrinkage)
    return second.predict_proba(mixed)[np.arange(n), y]


# ----------------------------------------------------------------------- exact span forms


@pytest.mark.parametrize("n, d", WIDE)
@pytest.mark.parametrize("scale, effect", [(0.02, 1.0), (0.02, 3.0), (0.05, 2.0)])
def test_sfda_span_form_equals_the_dense_fda(n, d, scale, effect) -> None:
    X, y = _wide(n, d, scale, effect)
    Z, Q = row_span(X)
    dense = sfda_mod.fit_fda(X, y, 3)
    span = sfda_mod.fit_fda(Z, y, 3, dim=d, start=Q.sum(axis=0))
    assert span.shrinkage == pytest.approx(dense.shrinkage, rel=1e-10)
    assert span.shrinkage > 1e-3  # not at its floor: the regime where the solve matters
    logits_dense = X @ dense.coef.T + dense.intercept
    logits_span = Z @ span.coef.T + span.intercept
    np.testing.assert_allclose(logits_span, logits_dense, rtol=0,
                               atol=1e-8 * np.abs(logits_dense).max())
    proba = gm.sfda_probabilities(X, y)  # the package's path: the span form, as D > N
    np.testing.assert_allclose(proba, _dense_true_class_proba(X, y, 3), rtol=1e-8)
    assert proba.min() < 0.999  # informative, not saturated at 1.0
    assert gm.sfda(X, y) == pytest.approx(ref_sfda(X, y), rel=1e-8)


@pytest.mark.parametrize("n, d", WIDE)
@pytest.mark.parametrize("shrinkage", ["ledoit-wolf", 0.0, 0.3])
def test_hscore_span_form_equals_the_dense_pseudo_inverse(n, d, shrinkage) -> None:
    X, y = _wide(n, d, 1.0, 2.0)
    X = X * (1.0 + np.arange(d)) ** -0.5  # unequal variances: Ledoit-Wolf alpha < 1
    assert gm.hscore(X, y, shrinkage=shrinkage) == pytest.approx(
        ref_hscore(X, y, shrinkage), rel=1e-8)


@pytest.mark.parametrize("n, d", [(40, 30), *WIDE])
def test_ledoit_wolf_alpha_equals_scikit_learn(n, d) -> None:
    from sklearn.covariance import ledoit_wolf_shrinkage

    X, _ = _wide(n, d, 1.0, 2.0)
    X = X * (1.0 + np.arange(d)) ** -0.5
    centred = X - X.mean(axis=0)
    expected = float(ledoit_wolf_shrinkage(centred, assume_centered=True))
    assert 0.0 < expected < 1.0
    assert hscore_mod.ledoit_wolf_alpha(centred) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n, d", WIDE)
def test_transrate_coding_rate_uses_the_exact_small_gram(n, d) -> None:
    transrate_mod = importlib.import_module("gradnca_onnx.metrics.transrate")
    X, _ = _wide(n, d, 1.0, 2.0)
    Z = X - X.mean(axis=0)
    assert transrate_mod.coding_rate(Z.copy(), 1e-2) == pytest.approx(
        _ref_coding_rate(Z, 1e-2), rel=1e-10)


# ------------------------------------------------------------- wide features, in a child

CHILD = textwrap.dedent("""
    import json, resource, sys, time, tracemalloc, warnings
    import numpy as np
    import gradnca_onnx.metrics as gm

    warnings.simplefilter("ignore")
    n, d = int(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    X = (rng.normal(size=(4, d))[y] + rng.normal(size=(n, d))).astype(np.float32)
    logits = rng.normal(size=(n, 10)).astype(np.float32)
    names = [m for m in gm.METRICS if not gm.METRICS[m].needs_model]
    gm.compute_metrics(names, X[:, :8], y, logits)  # imports and numba kernels, not measured
    out = {}
    tracemalloc.start()
    for name in names:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        res = gm.compute_metrics([name], X, y, logits,
                                 options={"sfda": {"saturated": "as_released"}})
        out[name] = {"seconds": time.perf_counter() - t0, "status": res[name].status,
                     "value": res[name].value, "terms": res[name].terms,
                     "peak": tracemalloc.get_traced_memory()[1] - before}
    # VmHWM, the peak of this process's own memory map: ru_maxrss keeps, across exec, the peak
    # of the forked parent (pytest at 2 GiB late in the suite).
    try:
        with open("/proc/self/status") as fh:
            out["_rss"] = next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM"))
    except OSError:
        out["_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))
""")


def _wide_child(n: int, d: int, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(n), str(d)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (f"child ended with {proc.returncode} (negative: killed by "
                                  f"that signal): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_wide(out: dict, n: int, d: int, seconds: float, rss: float) -> None:
    for name, r in out.items():
        if name.startswith("_"):
            continue
        assert r["status"] == "ok", (name, r)
        values = list(r["terms"].values()) if r["terms"] else [r["value"]]
        assert np.isfinite(values).all(), (name, r)
        assert r["seconds"] < seconds, (name, r)
        width = 10 if gm.METRICS[name].needs_logits else d
        # The estimate bounds what the metric allocates beyond compute_metrics' float64 copy.
        assert r["peak"] <= ESTIMATES[name](n, width, 4) + 8 * n * d + 2**20, (name, r)
    assert out["_rss"] < rss, out["_rss"]


def test_every_metric_on_a_headless_vit_width_runs_in_bounded_time_and_memory() -> None:
    # D = 16,384 (a headless ViT), N = 120: SFDA's threaded Cholesky of its 16k x 16k scatter
    # died with SIGSEGV (or took 130 s and 6 GiB on one thread); H-score's eigh of its 16k x 16k
    # covariance ran past 5 minutes. Now both work in the N-dimensional span (~5 s for all).
    n, d = 120, 16384
    out = _wide_child(n, d, timeout=600)
    _check_wide(out, n, d, seconds=60, rss=2 * 2**30)
    for name in ("sfda", "hscore"):
        assert out[name]["peak"] < 32 * n * d * 8, (name, out[name])  # ~ N D, not D^2


# --------------------------------------------------------------- pre-check and failures


def test_memory_precheck_skips_a_metric_that_cannot_fit(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 500)), np.arange(60) % 2
    monkeypatch.setattr(memory_mod, "memory_budget", lambda: 2**20)  # 1 MiB free
    res = gm.compute_metrics(["sfda", "hscore", "leep"], X, y, rng.normal(size=(60, 3)))
    for name in ("sfda", "hscore"):
        assert res[name].status == "skipped" and np.isnan(res[name].value)
        note = res[name].note
        assert "would need about" in note and "GiB" in note and "N=60" in note, note
        assert "D=500" in note and "--metrics" in note, note
    assert res["leep"].status == "ok"  # 60 x 3 logits fit in 1 MiB
    monkeypatch.setattr(memory_mod, "memory_budget", lambda: None)  # unknown: nothing refused
    assert gm.compute_metrics(["sfda"], X, y, options={"sfda": {"saturated": "as_released"}}
                              )["sfda"].status == "ok"


def test_memory_budget_reads_the_free_memory() -> None:
    free = memory_mod.available_memory()
    if free is None:
        pytest.skip("this system does not report its free memory")
    assert 0 < memory_mod.memory_budget() <= free


def test_a_memory_error_in_one_metric_is_a_note_not_a_crash(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise MemoryError

    monkeypatch.setitem(gm.METRICS, "gbc", dataclasses.replace(gm.METRICS["gbc"], compute=boom))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 5)), np.arange(30) % 2
    res = gm.compute_metrics(["gbc", "logme"], X, y, errors="record")
    assert res["gbc"].status == "error" and "out of memory" in res["gbc"].note
    assert res["logme"].status == "ok"
    with pytest.raises(MemoryError):
        gm.compute_metrics(["gbc"], X, y)  # errors="raise" keeps the exception


def test_a_warning_inside_a_metric_becomes_its_note(monkeypatch) -> None:
    def noisy(X, y, **kwargs):
        warnings.warn("invalid value\nencountered in divide", RuntimeWarning)
        return 0.5

    monkeypatch.setitem(gm.METRICS, "gbc", dataclasses.replace(gm.METRICS["gbc"],
                                                               compute=noisy))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 5)), np.arange(30) % 2
    with warnings.catch_warnings(record=True) as caught:  # the API still raises it
        warnings.simplefilter("always")
        res = gm.compute_metrics(["gbc"], X, y)["gbc"]
    assert res.value == 0.5 and res.warned
    assert res.note == "warning: invalid value encountered in divide"
    assert any(issubclass(w.category, RuntimeWarning) for w in caught)


def test_non_finite_ncti_terms_leave_the_model_out_of_the_zoo_step(monkeypatch) -> None:
    bad = dataclasses.replace(gm.METRICS["ncti"],
                              compute=lambda X, y, **kw: {"seli": np.nan, "ncc": 0.5, "vc": 1.0})
    monkeypatch.setitem(gm.METRICS, "ncti", bad)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 5)), np.arange(30) % 2
    res = gm.compute_metrics(["ncti"], X, y, errors="record")["ncti"]
    assert res.status == "error" and res.terms is None and "not finite" in res.note


# ------------------------------------------------------------------------- the terminal


def test_a_warning_in_a_command_is_one_plain_line(monkeypatch) -> None:
    @click.command("warn-once")
    def warn_once() -> None:
        warnings.warn("first line\n  second line", UserWarning)
        click.echo("done")

    monkeypatch.setitem(main.commands, "warn-once", warn_once)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        res = CliRunner().invoke(main, ["warn-once"])
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines() == ["Warning: first line second line"]
    assert res.stdout == "done\n"


@pytest.fixture(scope="module")
def one_model(tmp_path_factory) -> tuple[Path, Path]:
    """A zoo of one demo model (every zoo-level term is constant) and a 30-image target."""
    base = tmp_path_factory.mktemp("one-model")
    return copy_zoo(base / "zoo", ("adrenal",)), small_target(base / "t.npz")


def test_rank_quiet_metrics_all_prints_no_raw_warning(one_model, tmp_path) -> None:
    # A real process: in pytest, warnings are captured before they reach stderr.
    zoo, target = one_model
    proc = subprocess.run(
        [sys.executable, "-m", "gradnca_onnx", "rank", "--quiet", "--zoo", str(zoo),
         "--target", str(target), "--no-cache", "--metrics", "all"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for line in proc.stderr.splitlines():
        assert line.startswith("Warning: ") and ".py:" not in line, proc.stderr
    # NCTI's terms are constant over a zoo of one: said once per term, as the model's notes.
    assert "note (adrenal): ncti: NCTI S_seli is constant over the zoo" in proc.stdout
    assert "metric.zoo_step" not in proc.stdout + proc.stderr  # no source line


def test_rank_shows_a_metric_refused_for_memory_as_a_note(one_model, monkeypatch) -> None:
    zoo, target = one_model
    monkeypatch.setattr(memory_mod, "memory_budget", lambda: 1024)
    res = CliRunner().invoke(main, ["rank", "--quiet", "--zoo", str(zoo), "--target",
                                    str(target), "--no-cache", "--metrics", "sfda,logme"])
    assert res.exit_code == 0, res.output
    notes = [ln for ln in res.stdout.splitlines() if ln.startswith("  note (adrenal): sfda")]
    assert len(notes) == 1 and "skipped" in notes[0] and "would need about" in notes[0]
    assert any(ln.startswith("  note (adrenal): logme: skipped") for ln in
               res.stdout.splitlines())
