"""Combining S_LP and S_FU over a zoo, per target (REFERENCE section 5)."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import ConstantTermWarning as ConstantTermWarning  # re-exported (for mypy)
from ..errors import InputError

Scenario = Literal["dataset", "cross-domain", "model"]

#: The paper's two scenarios, by every name the package accepts. ``"dataset"``: sources of one
#: architecture. The other, sources of several architectures (both terms inverted, Eq. 8), is
#: ``"cross-domain"`` to ``rank --scenario`` and :func:`combine`, and ``"model"`` to the paper's
#: tables, ``evaluate --scenario`` and ``benchmark --scenario``: the two names are synonyms.
SCENARIOS: tuple[str, ...] = ("dataset", "cross-domain", "model")


def check_scenario(scenario: object) -> str:
    """``scenario`` when it names one of the paper's two scenarios (:data:`SCENARIOS`).

    The one scenario check of the package (ranking, combining, evaluating, the benchmark).

    Raises
    ------
    InputError
        Any other value, in one line listing the names.
    """
    if not isinstance(scenario, str) or scenario not in SCENARIOS:
        raise InputError(f"scenario must be 'dataset', or 'cross-domain' (the paper's model "
                         f"scenario, also called 'model'); got {scenario!r}")
    return scenario


def inverts_terms(scenario: str) -> bool:
    """Whether ``scenario`` is the model (cross-domain) scenario, where both terms are
    inverted (paper Eq. 8); raises as :func:`check_scenario`."""
    return check_scenario(scenario) != "dataset"


def min_max(values: ArrayLike, *, invert: bool = False, name: str = "term") -> NDArray[np.float64]:
    """``(x - min) / (max - min)``, or ``(x - max) / (min - max)`` when ``invert``.

    A constant term (max == min, including a zoo of one model) carries no ranking information:
    it maps to 1.0 for every model, the neutral element of the product, and a
    :class:`ConstantTermWarning` says so. The result is never NaN.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise InputError(f"{name}: need at least one model's score")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x)).tolist()
        raise InputError(f"{name} has NaN/inf values at zoo positions {bad}")
    lo, hi = float(x.min()), float(x.max())  # floats: numpy types min/max as Any
    if hi == lo:
        warnings.warn(
            f"{name} is constant over the zoo ({lo:.6g}); it is set to 1 for every model, so it "
            "does not change their order", ConstantTermWarning, stacklevel=3,
        )
        return np.ones_like(x)
    return (x - hi) / (lo - hi) if invert else (x - lo) / (hi - lo)


def combine(lp: ArrayLike, fu: ArrayLike, scenario: Scenario = "dataset") -> NDArray[np.float64]:
    """The paper's score S for every model of a zoo on one target.

    Parameters
    ----------
    lp, fu : array-like of shape (n_models,)
        S_LP and S_FU of each model.
    scenario : {"dataset", "cross-domain"}
        ``"dataset"`` (sources of one architecture): S = mm(S_LP) * mm(S_FU).
        ``"cross-domain"`` (the paper's model scenario, Eq. 8): both terms inverted,
        S = inv(S_LP) * inv(S_FU) with inv(x) = (x - max) / (min - max).
        ``"model"`` is accepted as a synonym of ``"cross-domain"``.

    Returns
    -------
    ndarray of shape (n_models,), values in [0, 1]; higher ranks better.
    """
    lp_arr = np.asarray(lp, dtype=np.float64).reshape(-1)
    fu_arr = np.asarray(fu, dtype=np.float64).reshape(-1)
    if lp_arr.shape != fu_arr.shape:
        raise InputError(f"lp and fu must have one value per model; got {lp_arr.size} and {fu_arr.size}")
    invert = inverts_terms(scenario)
    return min_max(lp_arr, invert=invert, name="S_LP") * min_max(fu_arr, invert=invert, name="S_FU")
