"""The count-table event study (no n x K design) against the dense-design implementation it replaced.

Reference: ``REFERENCE`` below is ``evaluation.estimators.did.event_study`` as of commit
6254924 (it builds the dense n x K matrix of event-time dummies and calls ``fe_ols``),
copied verbatim. Tolerance 1e-10 (absolute, on coefficients, covariances, residuals, the
pre-trend F and p, plot data): on balanced panels both are exact; on unbalanced panels the
reference's alternating projections stop at a change of 1e-12 of the columns' scale.
The fixed-effects fast path for sorted balanced panels (``demean``) is checked against the
alternating-projection sweeps and ``two_way_demean_balanced`` to 1e-10.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import EstimationError
from evaluation.estimators.did import _check, _effect, event_study
from evaluation.estimators.fixed_effects import _sorted_balanced, demean, factorize, fe_ols, two_way_demean_balanced
from evaluation.results import Estimates, vcov_frame

TOL = 1e-10


# fmt: off
def REFERENCE(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                event_window: tuple[int, int] = (-6, 12), bin_endpoints: bool = True, reference: int = -1,
                cluster: str | None = None, weights: str | None = None,
                adjustment: Literal["fixest", "dummies", "linearmodels", "none"] = "fixest",
                alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Leads and lags of the pilot start in a two-way fixed-effects regression.

    ``cohort`` is the first treated period on the ``time`` scale (0 or missing for
    never-treated units). Event times k = t - cohort from ``event_window[0]`` (first,
    negative) to ``event_window[1]`` (last) get one coefficient each, relative to
    ``reference`` (-1, the last pre-period, which gets none). With ``bin_endpoints`` the
    end points collect everything beyond them (the first event time collects all earlier
    periods, the last all later ones); without, observations outside the window are
    dropped. The joint Wald test of all leads (k < reference) is the pre-trend test.
    Coefficients (effects with ``event_time`` = k) are ATTs at each event time under
    parallel trends, no anticipation and effects homogeneous across cohorts (Sun and
    Abraham 2021, J Econometrics 225:175-199, show what they average otherwise).
    """
    first, last = (int(v) for v in event_window)
    if first > 0 or last < 0:
        raise EstimationError(f"event_window must run from a lead (<= 0) to a lag (>= 0), got {event_window}")
    leads, lags = -first, last
    cluster = cluster or unit
    d = _check(data, unit, time, outcome, None, needed=[cohort, cluster] + ([weights] if weights else []))
    dropped = int(len(data) - len(d))
    ft = d[cohort].fillna(0).astype(float)
    treated = ft > 0
    if not treated.any():
        raise EstimationError(f"no treated units: every '{cohort}' is 0 or missing")
    if treated.all():
        raise EstimationError(f"no comparison units: every unit has a '{cohort}'")
    rel = (d[time].astype(float) - ft).where(treated)
    if bin_endpoints:
        rel = rel.clip(lower=-leads, upper=lags)
    else:
        d, rel = d[~treated | rel.between(-leads, lags)], rel[~treated | rel.between(-leads, lags)]
    rel_values = rel.to_numpy(float)
    present = set(np.unique(rel_values[~np.isnan(rel_values)]).astype(int))
    event_times = [k for k in range(-leads, lags + 1) if k != reference and k in present]
    lookup = np.full(leads + lags + 1, -1)  # event time + leads -> column (-1: reference)
    for j, k in enumerate(event_times):
        lookup[k + leads] = j
    X = np.zeros((len(rel_values), len(event_times)), order="F")
    rows = np.flatnonzero(~np.isnan(rel_values))
    cols = lookup[rel_values[rows].astype(int) + leads]
    X[rows[cols >= 0], cols[cols >= 0]] = 1.0
    names = [f"k={k}" for k in event_times]
    fit = fe_ols(d[outcome].to_numpy(float), X, names, [factorize(d[unit])[0], factorize(d[time])[0]],
                 factorize(d[cluster])[0], weights=d[weights].to_numpy(float) if weights else None,
                 adjustment=adjustment)
    method = "event study (two-way fixed effects)"
    n_units, n_treated = d[unit].nunique(), d.loc[rel.notna(), unit].nunique()
    effects = [_effect(fit, nm, "att_event_time", term=nm, method=method, n_units=n_units, n_treated=n_treated,
                       alpha=alpha, indicator=indicator, event_time=k) for nm, k in zip(names, event_times,
                                                                                        strict=True)]
    pre = [nm for nm, k in zip(names, event_times, strict=True) if k < reference]
    diagnostics = {"reference": reference, "binned": bin_endpoints, "event_window": (first, last),
                   "dropped_missing_rows": dropped, "observations": fit.n_obs}
    treated_clusters = d.loc[rel.notna(), cluster].nunique()
    if pre and len(pre) < treated_clusters:
        F, p, q = fit.wald(pre)
        diagnostics.update(pretrend_F=F, pretrend_p=p, pretrend_df=q)
    elif pre:
        # the leads' covariance rests on the treated clusters alone: with as many leads as
        # treated clusters it is singular in effect and the F statistic explodes
        diagnostics.update(pretrend_F=np.nan, pretrend_p=np.nan, pretrend_df=len(pre),
                           pretrend_note=f"{len(pre)} leads but {treated_clusters} treated clusters: "
                                         "the joint test is not reliable; use a shorter event_window")
    plot = pd.DataFrame([{"event_time": e.event_time, "estimate": e.estimate, "ci_low": e.ci_low,
                          "ci_high": e.ci_high} for e in effects]
                        + [{"event_time": reference, "estimate": 0.0, "ci_low": 0.0, "ci_high": 0.0}])
    return Estimates(effects=effects, method=method, model=fit, diagnostics=diagnostics, kind="event_study",
                     vcov=vcov_frame(fit.vcov, effects),
                     plot_data=plot.sort_values("event_time").reset_index(drop=True))



# fmt: on


def make_panel(units: int = 120, periods: int = 30, seed: int = 3, gaps: float = 0.0, nan_share: float = 0.0,
               shuffle: bool = False) -> pd.DataFrame:
    """Staggered adoption (cohorts 8, 13, 20 and never), unit, period and event-time effects;
    ``gaps``: share of rows deleted; ``nan_share``: share of outcomes set missing."""
    rng = np.random.default_rng(seed)
    unit = np.repeat(np.arange(units), periods)
    t = np.tile(np.arange(1, periods + 1), units)
    first = rng.choice([0, 8, 13, 20], size=units, p=[0.4, 0.2, 0.2, 0.2])
    ft = np.repeat(first, periods)
    rel = np.where(ft > 0, t - ft, -100)
    effect = np.where(rel >= 0, 0.2 * np.minimum(rel + 1, 6), 0.0)
    y = (np.repeat(rng.normal(0, 1, units), periods) + np.tile(rng.normal(0, 0.5, periods), units) + effect
         + rng.normal(0, 1, units * periods))
    d = pd.DataFrame({"unit": unit, "time": t, "first_treat": ft, "y": y, "county": unit // 7,
                      "pop": rng.uniform(1, 3, units * periods)})
    if gaps:
        d = d[rng.uniform(size=len(d)) >= gaps]
    if nan_share:
        d.loc[rng.uniform(size=len(d)) < nan_share, "y"] = np.nan
    if shuffle:
        d = d.sample(frac=1.0, random_state=seed)
    return d.reset_index(drop=True)


def assert_same(new: Estimates, old: Estimates, tol: float = TOL) -> None:
    assert [e.event_time for e in new.effects] == [e.event_time for e in old.effects]
    for a, b in zip(new.effects, old.effects, strict=True):
        for f in ("estimate", "std_error", "ci_low", "ci_high", "p_value"):
            assert getattr(a, f) == pytest.approx(getattr(b, f), abs=tol), f
        assert (a.n_obs, a.n_units, a.n_treated, a.df, a.term, a.inference) == \
            (b.n_obs, b.n_units, b.n_treated, b.df, b.term, b.inference)
    np.testing.assert_allclose(new.vcov.to_numpy(), old.vcov.to_numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(new.model.resid, old.model.resid, rtol=0, atol=tol)
    np.testing.assert_allclose(new.model.fitted, old.model.fitted, rtol=0, atol=tol)
    assert (new.model.n_obs, new.model.n_clusters, new.model.df_k) == (old.model.n_obs, old.model.n_clusters,
                                                                       old.model.df_k)
    pd.testing.assert_frame_equal(new.plot_data, old.plot_data, rtol=0, atol=tol)
    assert new.diagnostics.keys() == old.diagnostics.keys()
    for k, v in old.diagnostics.items():
        if isinstance(v, float):
            assert new.diagnostics[k] == pytest.approx(v, abs=tol, nan_ok=True), k
        else:
            assert new.diagnostics[k] == v, k


PANELS = {
    "balanced": {},
    "balanced_shuffled": {"shuffle": True},
    "gaps": {"gaps": 0.15},
    "gaps_and_missing_outcomes": {"gaps": 0.1, "nan_share": 0.05, "shuffle": True},
}


@pytest.mark.parametrize("panel", list(PANELS))
@pytest.mark.parametrize("cluster", [None, "county"])
@pytest.mark.parametrize("binned", [True, False])
def test_equals_the_dense_design(panel, cluster, binned):
    d = make_panel(**PANELS[panel])
    args = dict(outcome="y", unit="unit", time="time", cohort="first_treat", event_window=(-5, 8),
                bin_endpoints=binned, cluster=cluster)
    new, old = event_study(d, **args), REFERENCE(d, **args)
    assert len(new.effects) == 13
    assert np.isfinite(new.diagnostics["pretrend_F"])
    assert_same(new, old)


@pytest.mark.parametrize("adjustment", ["fixest", "dummies", "linearmodels", "none"])
def test_small_sample_adjustments(adjustment):
    d = make_panel(gaps=0.1)
    args = dict(outcome="y", unit="unit", time="time", cohort="first_treat", cluster="county", adjustment=adjustment)
    assert_same(event_study(d, **args), REFERENCE(d, **args))


def test_clusters_that_split_units_and_duplicate_cells():
    """A cluster that is not a union of units (here: unit x half of the panel) takes the
    cluster x unit term of the scores; a (unit, period) cell observed twice counts twice."""
    d = make_panel(gaps=0.1, shuffle=True)
    d["half"] = d["unit"] * 2 + (d["time"] > 15)
    d = pd.concat([d, d.iloc[:25].assign(y=lambda f: f["y"] + 0.3)], ignore_index=True)
    for cluster in ("half", "time"):
        args = dict(outcome="y", unit="unit", time="time", cohort="first_treat", cluster=cluster)
        assert_same(event_study(d, **args), REFERENCE(d, **args))


def test_reference_period_and_window_variants():
    d = make_panel(gaps=0.05)
    for window, reference in (((-3, 3), -1), ((-8, 10), -2), ((0, 6), 0)):
        args = dict(outcome="y", unit="unit", time="time", cohort="first_treat", event_window=window,
                    reference=reference, bin_endpoints=reference != -2)
        assert_same(event_study(d, **args), REFERENCE(d, **args))


def test_weights_keep_the_dense_path():
    d = make_panel(gaps=0.1)
    args = dict(outcome="y", unit="unit", time="time", cohort="first_treat", weights="pop", cluster="county")
    assert_same(event_study(d, **args), REFERENCE(d, **args))


def test_disconnected_panel_and_collinear_column():
    # two halves of the panel share no period: the period effects are identified within each
    d = make_panel(units=60, periods=30)
    d = d[(d["unit"] < 30) == (d["time"] <= 15)].reset_index(drop=True)
    args = dict(outcome="y", unit="unit", time="time", cohort="first_treat", event_window=(-3, 3))
    assert_same(event_study(d, **args), REFERENCE(d, **args), tol=1e-8)
    # every treated unit in one cohort and no comparison rows in its treated periods:
    # the last lag is collinear with the period effects in both implementations
    e = make_panel(units=40, periods=12, seed=9)
    e = e[(e["first_treat"] == 0) | (e["first_treat"] == 8)]
    e = e[(e["first_treat"] == 8) | (e["time"] < 8)]
    args = dict(outcome="y", unit="unit", time="time", cohort="first_treat", event_window=(-3, 3))
    with pytest.raises(EstimationError, match="collinear"):
        REFERENCE(e, **args)
    with pytest.raises(EstimationError, match="collinear"):
        event_study(e, **args)


@pytest.mark.parametrize("order", ["unit_major", "period_major", "shuffled"])
def test_demean_fast_path_for_sorted_balanced_panels(order):
    rng = np.random.default_rng(0)
    N, T = 50, 17
    unit, period = np.repeat(np.arange(N), T), np.tile(np.arange(T), N)
    if order == "period_major":
        unit, period = np.tile(np.arange(N), T), np.repeat(np.arange(T), N)
    elif order == "shuffled":
        perm = rng.permutation(N * T)
        unit, period = unit[perm], period[perm]
    X = rng.normal(size=(N * T, 3)) * [1, 10, 1000]
    assert _sorted_balanced(unit, period) == {"unit_major": (N, T), "period_major": (T, N), "shuffled": None}[order]
    fast = demean(X, [unit, period])
    wide = np.empty((N, T))
    for j in range(3):
        wide[unit, period] = X[:, j]
        np.testing.assert_allclose(fast[:, j], two_way_demean_balanced(wide)[unit, period], rtol=0, atol=TOL)
    # alternating projections to convergence (weights of one take the iterative path)
    iterative = demean(X, [unit, period], weights=np.ones(N * T))
    np.testing.assert_allclose(fast, iterative, rtol=0, atol=TOL)
    y = X[:, 0] + 0.5 * X[:, 1]
    a = fe_ols(y, X[:, 1:], ["a", "b"], [unit, period], unit)
    b = fe_ols(y, X[:, 1:], ["a", "b"], [unit, period], unit, weights=np.ones(N * T))
    np.testing.assert_allclose(a.coef, b.coef, rtol=0, atol=TOL)
    np.testing.assert_allclose(a.vcov, b.vcov, rtol=0, atol=TOL)


def test_factorize_fast_path_equals_pandas():
    """Integer columns take a presence-table path; reference: pandas 3.1 pd.factorize(sort=True)."""
    rng = np.random.default_rng(5)
    for values in (rng.integers(-50, 50, 1000), rng.integers(0, 10**9, 500), np.repeat(np.arange(1, 401), 7),
                   rng.integers(-120, 120, 300).astype(np.int8), rng.integers(0, 5, 100).astype(np.uint8),
                   pd.Series(rng.integers(3, 9, 50)), np.array([7]), rng.normal(size=20).round(1)):
        codes, n = factorize(values)
        expected, uniques = pd.factorize(pd.Series(values), sort=True)
        assert codes.dtype == np.int64 and n == len(uniques)
        np.testing.assert_array_equal(codes, expected)
