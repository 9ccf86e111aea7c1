"""The grid fast path of TWFE and the event study (a panel sorted by unit, then period, every
unit in every period once, no missing value) against the general path on the same data.

Reference values: the general path of the same functions (``did._GRID_FAST_PATH = False``:
``fe_ols`` on the demeaned design for TWFE, the count-table ``_event_study_ols`` for the
event study), both checked against pyfixest 0.60.0 in tests/test_did.py and
tests/test_event_study_fast.py; here also the fast path directly against pyfixest 0.60.0
(``feols("y ~ D | unit + time")`` and ``feols("y ~ i(rel, ref=-1) | unit + time")``, CRV1)
to 1e-8 in coefficients and 1e-6 (relative) in standard errors, as in test_did.py.
Tolerance against the general path: 1e-10 absolute on coefficients, covariances, effects
(estimate, error, interval, p-value), pre-trend F and p, residuals and fitted values; counts
exactly. Both paths are exact on a balanced panel (no iterations), so they differ by
rounding only (an outcome far from zero: ``test_outcome_far_from_zero``; a million cells,
p-values to 1e-9: ``test_a_grid_above_a_million_cells``).

Which path ran is read from a spy on ``did._fe_ols_grid``: the panels that are not a grid
(rows shuffled, periods first, a gap, a missing outcome, a missing cohort, a cohort that
changes within a unit, a cluster that splits a unit) and the fits the fast path does not
cover (weights, covariates, ``bin_endpoints=False``) must take the general path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evaluation.estimators.did as did
from evaluation.errors import EstimationError
from evaluation.estimators.did import event_study, twfe

TOL = 1e-10
ADJUSTMENTS = ["fixest", "dummies", "linearmodels", "none"]


def panel(units: int = 240, periods: int = 20, seed: int = 0) -> pd.DataFrame:
    """A staggered panel sorted by unit then period: unit ids 1001, 1008, ... (not 0..N-1),
    periods 100, 101, ... (not 1..T), cohorts at the 5th, 9th and 13th period, one treated
    from the first period and one after the last (never treated within the panel), growing
    effects, a population weight, a time-varying control, counties of 8 units (numbers and
    names)."""
    rng = np.random.default_rng(seed)
    times = 100 + np.arange(periods)
    starts = np.array([0, times[4], times[8], times[12], times[0], times[-1] + 3])
    cohort = rng.choice(starts, size=units, p=[0.5, 0.12, 0.12, 0.12, 0.07, 0.07])
    unit = 1001 + 7 * np.arange(units)
    d = pd.DataFrame({"unit": np.repeat(unit, periods), "time": np.tile(times, units),
                      "first_treat": np.repeat(cohort, periods)})
    treated = (d["first_treat"] > 0) & (d["time"] >= d["first_treat"])
    steps = np.where(treated, d["time"] - d["first_treat"], 0)
    d["y"] = (np.repeat(rng.normal(0, 1, units), periods) + np.tile(rng.normal(0, 0.5, periods), units)
              + treated * (0.3 + 0.05 * steps) + rng.normal(0, 1, len(d)))
    d["county"] = (d["unit"] - 1001) // 56
    d["county_name"] = "县" + (d["county"].astype(str)).str.zfill(3)
    d["population"] = np.repeat(rng.uniform(1, 5, units), periods)
    d["x"] = rng.normal(0, 1, len(d))
    return d


@pytest.fixture
def grid_calls(monkeypatch):
    """How many times the grid engine ran during the test."""
    calls = []
    engine = did._fe_ols_grid

    def spy(*args, **kwargs):
        calls.append(1)
        return engine(*args, **kwargs)

    monkeypatch.setattr(did, "_fe_ols_grid", spy)
    return calls


def general(fn, data, monkeypatch, **kwargs):
    """``fn`` with the fast path switched off."""
    with monkeypatch.context() as m:
        m.setattr(did, "_GRID_FAST_PATH", False)
        return fn(data, **kwargs)


def assert_same(fast, slow, order: np.ndarray | None = None, p_tol: float = TOL) -> None:
    """Two fits agree to TOL (p-values and the pre-trend F and p to ``p_tol``); ``order``:
    the rows of ``fast``'s data that ``slow``'s rows are."""
    a, b = fast.model, slow.model
    assert a.names == b.names and (a.n_obs, a.n_clusters, a.df_k) == (b.n_obs, b.n_clusters, b.df_k)
    np.testing.assert_allclose(a.coef, b.coef, rtol=0, atol=TOL)
    np.testing.assert_allclose(a.vcov, b.vcov, rtol=0, atol=TOL)
    ra, fa = (a.resid, a.fitted) if order is None else (a.resid[order], a.fitted[order])
    np.testing.assert_allclose(ra, b.resid, rtol=0, atol=TOL)
    np.testing.assert_allclose(fa, b.fitted, rtol=0, atol=TOL)
    for x, y in zip(fast.effects, slow.effects, strict=True):
        for f in ("estimate", "std_error", "ci_low", "ci_high"):
            assert getattr(x, f) == pytest.approx(getattr(y, f), abs=TOL), f
        assert x.p_value == pytest.approx(y.p_value, abs=p_tol)
        for f in ("estimand", "term", "event_time", "n_obs", "n_units", "n_treated", "df", "inference", "method"):
            assert getattr(x, f) == getattr(y, f), f
    np.testing.assert_allclose(fast.vcov.to_numpy(), slow.vcov.to_numpy(), rtol=0, atol=TOL)
    assert fast.diagnostics.keys() == slow.diagnostics.keys()
    for k, v in fast.diagnostics.items():
        if isinstance(v, float):
            assert v == pytest.approx(slow.diagnostics[k], abs=p_tol, nan_ok=True), k
        elif isinstance(v, pd.DataFrame):
            pd.testing.assert_frame_equal(v, slow.diagnostics[k], check_exact=False, atol=TOL, rtol=0)
        else:
            assert v == slow.diagnostics[k], k
    if fast.plot_data is not None:
        pd.testing.assert_frame_equal(fast.plot_data, slow.plot_data, check_exact=False, atol=TOL, rtol=0)


COMMON = dict(outcome="y", unit="unit", time="time", cohort="first_treat")
FITS = {"twfe": (twfe, {}), "event_study": (event_study, {"event_window": (-3, 4)}),
        "event_study_wide": (event_study, {"event_window": (-6, 12), "reference": -2})}


# ---------------------------------------------------------------- the fast path equals the general path

@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("adjustment", ADJUSTMENTS)
def test_sorted_balanced_panel(fit, adjustment, monkeypatch, grid_calls):
    fn, kw = FITS[fit]
    d = panel()
    fast = fn(d, **COMMON, **kw, adjustment=adjustment)
    assert grid_calls == [1]
    assert fast.model.deferred is not None  # residuals not computed until read
    assert_same(fast, general(fn, d, monkeypatch, **COMMON, **kw, adjustment=adjustment))
    assert fast.model.deferred is None


@pytest.mark.parametrize("fit", FITS)
def test_residuals_read_later_are_the_fits(fit, monkeypatch, grid_calls):
    """The residuals are computed when first read, from the outcome column as it was: a
    frame changed in place after the fit (pandas copies the block the fit holds) does not
    change them."""
    fn, kw = FITS[fit]
    d = panel(seed=11)
    fast = fn(d, **COMMON, **kw)
    slow = general(fn, d, monkeypatch, **COMMON, **kw)
    d.loc[0, "y"] = 1000.0
    d["y"] *= 3
    assert grid_calls == [1] and fast.model.deferred is not None
    np.testing.assert_allclose(fast.model.resid, slow.model.resid, rtol=0, atol=TOL)
    np.testing.assert_allclose(fast.model.fitted, slow.model.fitted, rtol=0, atol=TOL)


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("cluster", ["county", "county_name"])
def test_clusters_above_townships(fit, cluster, monkeypatch, grid_calls):
    fn, kw = FITS[fit]
    d = panel(seed=1)
    fast = fn(d, **COMMON, **kw, cluster=cluster)
    assert grid_calls == [1] and fast.model.n_clusters == d["county"].nunique()
    assert_same(fast, general(fn, d, monkeypatch, **COMMON, **kw, cluster=cluster))


@pytest.mark.parametrize("fit", FITS)
def test_units_in_any_order_and_named(fit, monkeypatch, grid_calls):
    """Blocks of units in a shuffled order (as a panel sorted by county first), and unit ids
    that are strings: still a grid."""
    fn, kw = FITS[fit]
    d = panel(seed=2)
    blocks = np.random.default_rng(2).permutation(d["unit"].unique())
    d = d.set_index("unit").loc[blocks].reset_index()
    d["unit"] = "镇" + d["unit"].astype(str)
    fast = fn(d, **COMMON, **kw)
    assert grid_calls == [1]
    assert_same(fast, general(fn, d, monkeypatch, **COMMON, **kw))


@pytest.mark.parametrize("fit", FITS)
def test_outcome_far_from_zero(fit, monkeypatch, grid_calls):
    """An outcome around 10,000 (a rate per 100,000, say). The reference is the general path
    on the centred outcome y - 10,000 (the same regression, no digits lost to the level).
    The fast path sums products of the uncentred grid, so it loses about log10(10,000)
    digits more than the general path's demeaning (measured: 6e-12 on coefficients of
    2-34, against 1e-14): tolerance 1e-10 relative on coefficients and errors, 1e-9 absolute
    on residuals."""
    fn, kw = FITS[fit]
    d = panel(seed=3)
    d["y"] = 1e4 + 50 * d["y"]
    fast = fn(d, **COMMON, **kw)
    assert grid_calls == [1]
    reference = general(fn, d.assign(y=d["y"] - 1e4), monkeypatch, **COMMON, **kw)
    np.testing.assert_allclose(fast.model.coef, reference.model.coef, rtol=1e-10, atol=0)
    np.testing.assert_allclose(fast.model.se, reference.model.se, rtol=1e-10, atol=0)
    np.testing.assert_allclose(fast.model.resid, reference.model.resid, rtol=0, atol=1e-9)


def test_fast_path_matches_pyfixest(grid_calls):
    pf = pytest.importorskip("pyfixest")
    d = panel(seed=4)
    d["D"] = ((d["first_treat"] > 0) & (d["time"] >= d["first_treat"])).astype(float)
    d["rel"] = np.where(d["first_treat"] > 0, np.clip(d["time"] - d["first_treat"], -3, 4), -1)
    for cluster in ("unit", "county"):
        ours = twfe(d, **COMMON, cluster=cluster)
        peer = pf.feols("y ~ D | unit + time", d, vcov={"CRV1": cluster})
        assert ours.effects[0].estimate == pytest.approx(peer.coef()["D"], abs=1e-8)
        assert ours.effects[0].std_error == pytest.approx(peer.se()["D"], rel=1e-6)
    ours = event_study(d, **COMMON, event_window=(-3, 4))
    peer = pf.feols("y ~ i(rel, ref=-1) | unit + time", d, vcov={"CRV1": "unit"})
    np.testing.assert_allclose([x.estimate for x in ours.effects], peer.coef().to_numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose([x.std_error for x in ours.effects], peer.se().to_numpy(), rtol=1e-6, atol=0)
    assert len(grid_calls) == 3


# ---------------------------------------------------------------- what takes the general path

@pytest.mark.parametrize("fit", FITS)
def test_shuffled_rows_take_the_general_path(fit, grid_calls):
    fn, kw = FITS[fit]
    d = panel(seed=5)
    fast = fn(d, **COMMON, **kw)
    order = np.random.default_rng(5).permutation(len(d))
    shuffled = fn(d.iloc[order].reset_index(drop=True), **COMMON, **kw)
    assert grid_calls == [1]
    assert_same(fast, shuffled, order=order)


@pytest.mark.parametrize("fit", FITS)
def test_periods_first_take_the_general_path(fit, grid_calls):
    fn, kw = FITS[fit]
    d = panel(seed=6)
    fast = fn(d, **COMMON, **kw)
    order = np.lexsort((d["unit"], d["time"]))  # sorted by period, then unit
    transposed = fn(d.iloc[order].reset_index(drop=True), **COMMON, **kw)
    assert grid_calls == [1]
    assert_same(fast, transposed, order=order)


def gap(d: pd.DataFrame) -> pd.DataFrame:
    return d.drop(index=[5, 6, 130]).reset_index(drop=True)


def missing_outcome(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(y=d["y"].where(d.index != 47))


def cohort_missing_for_never_treated(d: pd.DataFrame) -> pd.DataFrame:
    """NaN instead of 0 for every other never-treated unit (TWFE counts them as never
    treated, the event study drops their rows as missing: either way not a grid)."""
    never = d["unit"][d["first_treat"] == 0].unique()[::2]
    return d.assign(first_treat=d["first_treat"].where(~d["unit"].isin(never)))


def cohort_changes_within_a_unit(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(first_treat=np.where(d.index == 3, d["time"].iloc[10], d["first_treat"]))


def cluster_splits_a_unit(d: pd.DataFrame) -> pd.DataFrame:
    return d.assign(county=np.where(d.index == 3, 999, d["county"]))


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("change", [gap, missing_outcome, cohort_missing_for_never_treated,
                                    cohort_changes_within_a_unit, cluster_splits_a_unit])
def test_not_a_grid_takes_the_general_path(fit, change, monkeypatch, grid_calls):
    fn, kw = FITS[fit]
    d = change(panel(seed=7))
    ours = fn(d, **COMMON, **kw, cluster="county")
    assert grid_calls == []
    assert_same(ours, general(fn, d, monkeypatch, **COMMON, **kw, cluster="county"))
    if change is missing_outcome:
        assert ours.diagnostics["dropped_missing_rows"] == 1


@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize("option", [{"weights": "population"}, {"covariates": ["x"]}])
def test_weights_and_controls_take_the_general_path(fit, option, monkeypatch, grid_calls):
    """The fast path has no weights (weighted two-way demeaning is not row and column means)
    and no controls: such fits take the general path."""
    fn, kw = FITS[fit]
    d = panel(seed=8)
    ours = fn(d, **COMMON, **kw, **option)
    assert grid_calls == []
    assert_same(ours, general(fn, d, monkeypatch, **COMMON, **kw, **option))


def test_unbinned_event_study_takes_the_general_path(monkeypatch, grid_calls):
    d = panel(seed=9)
    ours = event_study(d, **COMMON, event_window=(-3, 4), bin_endpoints=False)
    assert grid_calls == []
    assert_same(ours, general(event_study, d, monkeypatch, **COMMON, event_window=(-3, 4), bin_endpoints=False))


@pytest.mark.parametrize("fit", FITS)
def test_the_same_errors(fit, grid_calls):
    """Panels the fast path declines raise the general path's errors."""
    fn, kw = FITS[fit]
    d = panel(seed=10)
    with pytest.raises(EstimationError, match="never|no treated"):
        fn(d.assign(first_treat=0), **COMMON, **kw)
    with pytest.raises(EstimationError, match="comparison"):
        fn(d.assign(first_treat=d["time"].min()), **COMMON, **kw)
    with pytest.raises(EstimationError, match="columns not in the data"):
        fn(d, **{**COMMON, "outcome": "nope"}, **kw)
    assert grid_calls == []


def test_structured_product_equals_the_dense_one():
    """``fixed_effects._times`` (BLAS for dense columns, np.take and an einsum for columns
    with few nonzeros) against numpy's Y @ M on random tables of every density: 1e-12."""
    from evaluation.estimators.fixed_effects import _times

    rng = np.random.default_rng(12)
    Y = rng.normal(size=(60, 30))
    for _ in range(300):
        M = np.where(rng.uniform(size=(30, 7)) < rng.uniform(0, 0.6), rng.normal(size=(30, 7)), 0.0)
        np.testing.assert_allclose(_times(Y, M), Y @ M, rtol=0, atol=1e-12)


def test_a_fit_with_deferred_residuals_pickles(monkeypatch):
    """Pickling (a results cache, a process pool) computes the deferred residuals first."""
    import pickle

    d = panel(seed=13)
    fast = twfe(d, **COMMON)
    assert fast.model.deferred is not None
    back = pickle.loads(pickle.dumps(fast.model))
    slow = general(twfe, d, monkeypatch, **COMMON)
    assert back.deferred is None
    np.testing.assert_allclose(back.resid, slow.model.resid, rtol=0, atol=TOL)
    np.testing.assert_allclose(back.coef, slow.model.coef, rtol=0, atol=TOL)


@pytest.mark.parametrize("fit", ["twfe", "event_study"])
def test_a_grid_above_a_million_cells(fit, monkeypatch, grid_calls):
    """From 2**20 cells the grid's products run on one BLAS thread (threadpoolctl): the
    same numbers on 11,000 units x 96 periods. 1e-10 on coefficients, covariances, errors,
    intervals and residuals; 1e-9 on p-values and the pre-trend F and p: here the general
    path's event-study coefficients all sit 5.2e-12 from a long-double computation of the
    same normal equations, the fast path's 7e-14 (measured), and a p-value near 0.5 with
    an error of 0.037 moves by 1e-10 per 5e-12 of its coefficient."""
    fn, kw = FITS[fit]
    d = panel(units=11_000, periods=96, seed=14)
    fast = fn(d, **COMMON, **kw)
    assert grid_calls == [1]
    assert_same(fast, general(fn, d, monkeypatch, **COMMON, **kw), p_tol=1e-9)
