"""Zoo-level combination of S_LP and S_FU (REFERENCE section 5)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gradnca_onnx as g


def mm(x):
    x = np.asarray(x, float)
    return (x - x.min()) / (x.max() - x.min())


def test_dataset_scenario_is_product_of_min_max() -> None:
    rng = np.random.default_rng(0)
    lp, fu = rng.random(15), rng.random(15) * 3
    np.testing.assert_allclose(g.combine(lp, fu), mm(lp) * mm(fu), rtol=0, atol=1e-15)


def test_cross_domain_scenario_inverts_both_terms() -> None:
    rng = np.random.default_rng(1)
    lp, fu = rng.random(9), rng.random(9)
    inv = lambda x: (x - x.max()) / (x.min() - x.max())  # noqa: E731  (paper Eq. 8)
    expected = inv(lp) * inv(fu)
    np.testing.assert_allclose(g.combine(lp, fu, scenario="cross-domain"), expected, atol=1e-15)
    np.testing.assert_allclose(g.combine(lp, fu, scenario="model"), expected, atol=1e-15)
    np.testing.assert_allclose(expected, (1 - mm(lp)) * (1 - mm(fu)), atol=1e-15)


def test_constant_term_is_neutral_and_warned() -> None:
    lp = np.array([0.5, 0.5, 0.5])
    fu = np.array([1.0, 2.0, 3.0])
    with pytest.warns(g.ConstantTermWarning, match="S_LP is constant"):
        s = g.combine(lp, fu)
    np.testing.assert_array_equal(s, mm(fu))
    with pytest.warns(g.ConstantTermWarning):
        one = g.combine([0.3], [2.0])
    assert one.tolist() == [1.0]
    assert not np.isnan(s).any()


def test_no_warning_for_a_regular_zoo() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        s = g.combine([0.1, 0.3, 0.2], [1.0, 0.5, 0.75])
    # mm(S_LP) = (0, 1, 0.5), mm(S_FU) = (1, 0, 0.5): the product, no neutral 1.0 anywhere
    np.testing.assert_allclose(s, [0.0, 0.0, 0.25], rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    "lp, fu, scenario, match",
    [
        ([0.1, np.nan], [1, 2], "dataset", "NaN"),
        ([0.1, 0.2], [1, 2, 3], "dataset", "one value per model"),
        ([0.1, 0.2], [1, 2], "imagenet", "scenario"),
        ([], [], "dataset", "at least one"),
    ],
)
def test_bad_input(lp, fu, scenario, match) -> None:
    with pytest.raises(ValueError, match=match):
        g.combine(lp, fu, scenario=scenario)
