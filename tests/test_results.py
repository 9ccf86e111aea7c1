"""The shared result type."""

from __future__ import annotations

import math

import pytest

from evaluation.results import TIDY_COLUMNS, Effect, Estimates, tidy


def test_wald_interval_and_p_value():
    e = Effect.from_normal("att", 0.2, 0.1, method="m", inference="i", n_obs=10)
    assert e.ci_low == pytest.approx(0.2 - 1.959963984540054 * 0.1, abs=1e-12)
    assert e.p_value == pytest.approx(0.04550026389635842, abs=1e-12)
    t = Effect.from_normal("att", 0.2, 0.1, df=5, method="m", inference="i", n_obs=10)
    assert t.p_value == pytest.approx(0.10193948, abs=1e-8) and t.ci_high > e.ci_high


def test_exp_gives_rate_ratio():
    e = Effect.from_normal("level_change", math.log(1.5), 0.1, method="m", inference="i", n_obs=10, scale="log")
    rr = e.exp()
    assert rr.estimate == pytest.approx(1.5) and rr.scale == "rate_ratio"
    assert rr.ci_low == pytest.approx(math.exp(e.ci_low)) and rr.p_value == e.p_value


def test_tidy_mixes_effects_and_fits():
    a = Effect.from_normal("att", 1.0, 0.5, method="m", inference="i", n_obs=10, indicator="x")
    fit = Estimates(effects=[a, Effect.from_normal("slope_change", 0.1, 0.2, method="m", inference="i", n_obs=10,
                                                   term="pilot")], method="m")
    table = tidy([a, fit])
    assert list(table.columns) == TIDY_COLUMNS and len(table) == 3
    assert fit.get("slope_change").term == "pilot"
    with pytest.raises(KeyError, match="no effects 'level_change'"):
        fit.get("level_change")
    with pytest.raises(TypeError):
        tidy([1.0])
    assert tidy([]).columns.tolist() == TIDY_COLUMNS
