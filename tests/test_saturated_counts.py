"""Sun-Abraham and linear extended TWFE from count tables (``saturated._cell_ols``, no rows x
cells design) against the dense design they replaced.

Reference: ``saturated._dense_cell_ols``, the dense rows x cells dummy matrix through
``fe_ols`` (the implementation of commit f597d9d), swapped in for the whole estimator.
Tolerance 1e-10 (absolute, on every effect's estimate, standard error, interval and
p-value, the effects' covariance, the cells' coefficients and errors, the residuals, the
pre-trend p; relative on the pre-trend F): on balanced panels both are exact; on unbalanced panels the reference's
alternating projections stop at a change of 1e-12 of the columns' scale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import EstimationError
from evaluation.estimators import saturated
from evaluation.estimators.saturated import extended_twfe, sun_abraham

TOL = 1e-10
KEYS = dict(outcome="y", unit="unit", time="time", cohort="first_treat")


def make_panel(units: int = 240, periods: int = 20, *, gaps: float = 0.0, nan_share: float = 0.0,
               shuffle: bool = False, never: bool = True, seed: int = 4) -> pd.DataFrame:
    """Cohorts 6, 9, 13 (and never treated), effects that differ by cohort and grow; counties
    of 8 townships; optional missing rows, missing outcomes and shuffled row order."""
    rng = np.random.default_rng(seed)
    starts = [0, 6, 9, 13] if never else [6, 9, 13]
    first = rng.choice(starts, size=units)
    unit = np.repeat(np.arange(1, units + 1), periods)
    t = np.tile(np.arange(1, periods + 1), units)
    g = np.repeat(first, periods)
    effect = np.where((g > 0) & (t >= g), (1 + 0.2 * (t - g)) * (1 + g / 10), 0.0)
    y = np.repeat(rng.normal(0, 1, units), periods) + 0.1 * t + effect + rng.normal(0, 1, len(t))
    d = pd.DataFrame({"unit": unit, "time": t, "first_treat": g, "y": y, "county": (unit - 1) // 8})
    if gaps:
        d = d[rng.random(len(d)) > gaps]
    if nan_share:
        d.loc[rng.random(len(d)) < nan_share, "y"] = np.nan
    if shuffle:
        d = d.sample(frac=1.0, random_state=1)
    return d.reset_index(drop=True)


def dense(monkeypatch, fn, data, **args):
    with monkeypatch.context() as m:
        m.setattr(saturated, "_cell_ols", saturated._dense_cell_ols)
        return fn(data, **args)


def assert_same(new, old, tol=TOL):
    assert [e.label for e in new.effects] == [e.label for e in old.effects]
    for a, b in zip(new.effects, old.effects, strict=True):
        for field in ("estimate", "std_error", "ci_low", "ci_high", "p_value"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), abs=tol), (a.label, field)
        assert (a.n_obs, a.n_units, a.n_treated, a.inference) == (b.n_obs, b.n_units, b.n_treated, b.inference)
    np.testing.assert_allclose(new.vcov.to_numpy(), old.vcov.to_numpy(), rtol=0, atol=tol)
    ca, cb = new.diagnostics["cells"], old.diagnostics["cells"]
    assert list(ca.columns) == list(cb.columns)
    np.testing.assert_allclose(ca.select_dtypes("number").to_numpy(float), cb.select_dtypes("number").to_numpy(float),
                               rtol=0, atol=tol)
    np.testing.assert_allclose(new.model.coef, old.model.coef, rtol=0, atol=tol)
    np.testing.assert_allclose(new.model.vcov, old.model.vcov, rtol=0, atol=tol)
    np.testing.assert_allclose(new.model.resid, old.model.resid, rtol=0, atol=tol)
    assert (new.model.n_obs, new.model.n_clusters, new.model.df_k) == (old.model.n_obs, old.model.n_clusters,
                                                                       old.model.df_k)
    if "pretrend_F" in old.diagnostics:
        assert new.diagnostics["pretrend_F"] == pytest.approx(old.diagnostics["pretrend_F"], rel=tol)
        assert new.diagnostics["pretrend_p"] == pytest.approx(old.diagnostics["pretrend_p"], abs=tol)


PANELS = {
    "balanced": {},
    "balanced_shuffled": {"shuffle": True},
    "gaps": {"gaps": 0.15},
    "gaps_missing_outcomes_shuffled": {"gaps": 0.1, "nan_share": 0.05, "shuffle": True},
    "no_never_treated": {"never": False, "gaps": 0.05},
}


@pytest.mark.parametrize("panel", list(PANELS))
@pytest.mark.parametrize("cluster", [None, "county"])
def test_sun_abraham_equals_the_dense_design(monkeypatch, panel, cluster):
    d = make_panel(**PANELS[panel])
    args = dict(**KEYS, cluster=cluster, event_window=(-4, 5))
    new = sun_abraham(d, **args)
    assert len(new.diagnostics["cells"]) > 20
    assert_same(new, dense(monkeypatch, sun_abraham, d, **args))


@pytest.mark.parametrize("panel", list(PANELS))
@pytest.mark.parametrize("fixed_effects", ["unit", "cohort"])
@pytest.mark.parametrize("control_group", ["not_yet_treated", "never_treated"])
def test_extended_twfe_equals_the_dense_design(monkeypatch, panel, fixed_effects, control_group):
    d = make_panel(**PANELS[panel])
    args = dict(**KEYS, fixed_effects=fixed_effects, control_group=control_group, cluster="county")
    if control_group == "never_treated" and not PANELS[panel].get("never", True):
        with pytest.raises(EstimationError, match="no unit is never treated"):
            extended_twfe(d, **args)
        return
    assert_same(extended_twfe(d, **args), dense(monkeypatch, extended_twfe, d, **args))


@pytest.mark.parametrize("adjustment", ["fixest", "dummies", "linearmodels", "none"])
def test_small_sample_adjustments(monkeypatch, adjustment):
    d = make_panel(gaps=0.1)
    for fn in (sun_abraham, extended_twfe):
        args = dict(**KEYS, cluster="county", adjustment=adjustment)
        assert_same(fn(d, **args), dense(monkeypatch, fn, d, **args))


def test_clusters_that_split_units_duplicate_rows_and_score_blocks(monkeypatch):
    """A cluster that is not a union of units (unit x half of the panel, or the period) takes
    the cluster x unit term of the scores; a (unit, period) row present twice counts twice;
    a tiny score block forces the clusters to be summed block by block over sorted rows."""
    d = make_panel(gaps=0.1, shuffle=True)
    d["half"] = d["unit"] * 2 + (d["time"] > 10)
    d = pd.concat([d, d.iloc[:25].assign(y=lambda f: f["y"] + 0.3)], ignore_index=True)
    for block in (saturated._SCORE_BLOCK, 500):
        monkeypatch.setattr(saturated, "_SCORE_BLOCK", block)
        for cluster in ("half", "time", "county", None):
            for fn in (sun_abraham, extended_twfe):
                args = dict(**KEYS, cluster=cluster)
                assert_same(fn(d, **args), dense(monkeypatch, fn, d, **args))


def test_sparse_incidence_of_scattered_rows(monkeypatch):
    """Units seen in a few of many periods: the unit x period incidence is kept sparse."""
    rng = np.random.default_rng(2)
    d = make_panel(units=300, periods=60, seed=7)
    d = d[rng.random(len(d)) < 0.12].reset_index(drop=True)
    for fn in (sun_abraham, extended_twfe):
        new = fn(d, **KEYS)
        assert_same(new, dense(monkeypatch, fn, d, **KEYS), tol=1e-8)


def test_mpdta_cells_unchanged(monkeypatch):
    """The published-data case of tests/test_saturated.py (R etwfe's mpdta), both fixed effects."""
    moderndid = pytest.importorskip("moderndid")
    d = moderndid.load_mpdta().to_pandas().rename(columns={"first.treat": "first_treat"})
    keys = dict(outcome="lemp", unit="countyreal", time="year", cohort="first_treat")
    assert_same(sun_abraham(d, **keys), dense(monkeypatch, sun_abraham, d, **keys))
    for fe in ("unit", "cohort"):
        args = dict(**keys, fixed_effects=fe)
        assert_same(extended_twfe(d, **args), dense(monkeypatch, extended_twfe, d, **args))


def test_collinear_cell_is_refused_by_both(monkeypatch):
    """One cohort and no comparison rows in its treated periods: its last cell is collinear
    with the period effects in both implementations."""
    d = make_panel(units=40, periods=12, seed=9)
    d = d[d["first_treat"].isin([0, 6])]
    d = d[(d["first_treat"] == 6) | (d["time"] < 10)]
    for impl in (None, saturated._dense_cell_ols):
        with monkeypatch.context() as m:
            if impl is not None:
                m.setattr(saturated, "_cell_ols", impl)
            with pytest.raises(EstimationError, match="collinear"):
                extended_twfe(d, **KEYS)
