"""Sun-Abraham and extended TWFE: published numbers, peers on the same rows, known truth, bad calls.

Tolerances: published numbers to their printed precision (R etwfe's test file prints 15
digits: 1e-8 there); pyfixest 0.60.0 to 1e-8 in coefficients and 1e-6 (relative) in
clustered errors, 1e-6 for Poisson (IRLS stops at a relative deviance change of 1e-10 in
both); simulated truth within the stated multiple of the standard error.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import EstimationError
from evaluation.estimators.saturated import extended_twfe, sun_abraham
from evaluation.estimators.staggered import callaway_santanna

pf = pytest.importorskip("pyfixest")

KEYS = dict(outcome="lemp", unit="countyreal", time="year", cohort="first_treat")


@pytest.fixture(scope="module")
def mpdta():
    moderndid = pytest.importorskip("moderndid")
    d = moderndid.load_mpdta().to_pandas().rename(columns={"first.treat": "first_treat"})
    d["emp"] = np.exp(d["lemp"]).round()  # a count (employment), as R etwfe's Poisson example
    return d


def _cell_dummies(d: pd.DataFrame, cells, *, cohort="first_treat", time="year") -> list[str]:
    """One 0/1 column per (cohort, period) cell: the explicit interaction formula."""
    names = []
    for g, t in cells:
        name = f"d_{int(g)}_{int(t)}"
        d[name] = ((d[cohort] == g) & (d[time] == t)).astype(float)
        names.append(name)
    return names


def _feols(d, names, outcome="lemp", fe="countyreal + year"):
    return pf.feols(f"{outcome} ~ {' + '.join(names)} | {fe}", d, vcov={"CRV1": "countyreal"})


# ---------------------------------------------------------------- published numbers

# R etwfe (grantmcdermott/etwfe, inst/tinytest/test_etwfe.R, m1_known and m2_known):
# etwfe(lemp ~ 0, tvar = year, gvar = first.treat, data = mpdta, vcov = ~countyreal),
# fixest::coeftable() printed with dput (cohort and year fixed effects).
ETWFE_M1 = {  # not-yet-treated controls: (g, t) -> (estimate, std. error)
    (2004, 2004): (-0.0193723636759116, 0.0223952764912568), (2004, 2005): (-0.0783190990620529, 0.030506236091693),
    (2004, 2006): (-0.136078114440309, 0.0354768817979489), (2004, 2007): (-0.104707471576594, 0.0338947465597152),
    (2006, 2006): (0.00251386194191313, 0.0199448451562706), (2006, 2007): (-0.0391927355917248, 0.0240232361043774),
    (2007, 2007): (-0.0431060328087001, 0.0184422693090335)}
ETWFE_M2 = {  # cgroup = "never": every (g, t) but t = g - 1
    (2004, 2004): (-0.0105032462209509, 0.0233633078987137), (2004, 2005): (-0.0704231581031381, 0.0311343819027016),
    (2004, 2006): (-0.137258738889396, 0.0366116000064794), (2004, 2007): (-0.100811363085397, 0.0345251351219756),
    (2006, 2003): (-0.00376929367371485, 0.0314933678411734), (2006, 2004): (0.00275081875051886, 0.0196530028296998),
    (2006, 2006): (-0.00459460695286396, 0.0178409306056071), (2006, 2007): (-0.041224471546218, 0.0203268606975245),
    (2007, 2003): (0.00330635669251332, 0.0245699429153858), (2007, 2004): (0.033813012275807, 0.0212312006908406),
    (2007, 2005): (0.0310871193896906, 0.0179638358765074), (2007, 2007): (-0.0260544107191967, 0.0167358589135634)}


def test_extended_twfe_reproduces_r_etwfe_on_mpdta(mpdta):
    """Cells, errors and the simple ATT of R etwfe's mpdta model without covariates."""
    fit = extended_twfe(mpdta, **KEYS, fixed_effects="cohort")
    cells = [e for e in fit.effects if e.estimand == "att_group_time"]
    assert len(cells) == len(ETWFE_M1)
    for e in cells:
        est, se = ETWFE_M1[(e.cohort, e.calendar_time)]
        assert e.estimate == pytest.approx(est, abs=1e-8) and e.std_error == pytest.approx(se, rel=1e-6)
    # emfx(type = "simple"): cells weighted by their treated rows (20, 20, 20, 20, 40, 40, 131);
    # R etwfe / Stata jwdid print -0.0477 (-0.047709918 to nine places)
    n = {2004: 20, 2006: 40, 2007: 131}
    by_hand = sum(n[g] * v[0] for (g, _), v in ETWFE_M1.items()) / sum(n[g] for g, _ in ETWFE_M1)
    att = fit.get("att")
    assert att.estimate == pytest.approx(by_hand, abs=1e-10)
    assert att.estimate == pytest.approx(-0.0477, abs=5e-5)
    # unit fixed effects: the same cells on this balanced panel (Wooldridge 2021); the errors differ a little
    unit = extended_twfe(mpdta, **KEYS)
    for a, b in zip([e for e in unit.effects if e.estimand == "att_group_time"], cells, strict=True):
        assert a.estimate == pytest.approx(b.estimate, abs=1e-10)


def test_never_treated_cells_reproduce_r_etwfe_and_equal_sun_abraham(mpdta):
    fit = extended_twfe(mpdta, **KEYS, control_group="never_treated", fixed_effects="cohort")
    cells = [e for e in fit.effects if e.estimand == "att_group_time"]
    assert len(cells) == len(ETWFE_M2)
    for e in cells:
        est, se = ETWFE_M2[(e.cohort, e.calendar_time)]
        assert e.estimate == pytest.approx(est, abs=1e-8) and e.std_error == pytest.approx(se, rel=1e-6)
    sa = sun_abraham(mpdta, **KEYS).diagnostics["cells"]
    for _, row in sa.iterrows():
        assert row["estimate"] == pytest.approx(ETWFE_M2[(row["cohort"], row["period"])][0], abs=1e-8)


# ---------------------------------------------------------------- peers on the same rows

def test_sun_abraham_matches_pyfixest_saturated_event_study(mpdta):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = pf.event_study(mpdta, yname="lemp", idname="countyreal", tname="year", gname="first_treat",
                              estimator="saturated")
        agg = peer.aggregate()  # IW weights: cohort shares of the rows at each event time
    ours = sun_abraham(mpdta, **KEYS)
    timed = [e for e in ours.effects if e.estimand == "att_event_time"]
    assert [e.event_time for e in timed] == [-4, -3, -2, 0, 1, 2, 3]
    for e in timed:
        assert e.estimate == pytest.approx(agg.loc[float(e.event_time), "Estimate"], abs=1e-8)
        assert e.std_error == pytest.approx(agg.loc[float(e.event_time), "Std. Error"], rel=1e-6)
    # the cells are pyfixest's coefficients; the ATT aggregates its post cells by their rows
    cells = ours.diagnostics["cells"]
    coef, vcov = peer.coef(), peer._vcov
    names = [f"rel_time::{float(k)}:first_treated_period::{int(g)}" for g, k in
             zip(cells["cohort"], cells["event_time"], strict=True)]
    assert np.allclose(cells["estimate"], coef[names].to_numpy(), atol=1e-8)
    w = np.where(cells["event_time"] >= 0, cells["n_obs"], 0.0)
    w = w / w.sum()
    idx = [list(coef.index).index(n) for n in names]
    assert ours.get("att").estimate == pytest.approx(w @ coef[names].to_numpy(), abs=1e-8)
    assert ours.get("att").std_error == pytest.approx(np.sqrt(w @ vcov[np.ix_(idx, idx)] @ w), rel=1e-6)
    plot = ours.plot_data
    assert list(plot.columns) == ["event_time", "estimate", "ci_low", "ci_high"]
    assert plot.loc[plot["event_time"] == -1, "estimate"].item() == 0.0 and len(plot) == 8


def test_sun_abraham_equals_callaway_santanna_never_treated_universal_base(mpdta):
    """Balanced panel, no covariates: each CATT(g, e) is the DiD of cohort g against the
    never treated between g + e and g - 1 (Sun and Abraham 2021), which is
    Callaway-Sant'Anna's ATT(g, t) with never-treated controls and a universal base
    period; both aggregate with cohort shares. Points only (the errors differ)."""
    sa = sun_abraham(mpdta, **KEYS)
    cs = callaway_santanna(mpdta, **KEYS, base_period="universal").aggregate("dynamic")
    for e in cs.effects:
        if e.estimand == "att_event_time" and e.event_time != -1:
            assert sa.get("att_event_time", event_time=e.event_time).estimate == pytest.approx(e.estimate, abs=1e-8)


def test_event_window_only_selects_reported_event_times(mpdta):
    full = sun_abraham(mpdta, **KEYS)
    window = sun_abraham(mpdta, **KEYS, event_window=(-2, 1))
    assert [e.event_time for e in window.effects if e.estimand == "att_event_time"] == [-2, 0, 1]
    for e in window.effects:
        other = full.get(e.estimand, event_time=e.event_time)
        assert e.estimate == other.estimate and e.std_error == other.std_error
    assert window.diagnostics["pretrend_df"] == 1  # the reported leads only: k = -2
    assert window.diagnostics["event_window"] == (-2, 1)


def test_extended_twfe_linear_matches_pyfixest_formula(mpdta):
    ours = extended_twfe(mpdta, **KEYS)
    cells = [e for e in ours.effects if e.estimand == "att_group_time"]
    d = mpdta.copy()
    names = _cell_dummies(d, [(e.cohort, e.calendar_time) for e in cells])
    peer = _feols(d, names)
    for e, name in zip(cells, names, strict=True):
        assert e.estimate == pytest.approx(peer.coef()[name], abs=1e-8)
        assert e.std_error == pytest.approx(peer.se()[name], rel=1e-6)
    # aggregates: row-weighted averages, covariance W V W'
    b, V = peer.coef()[names].to_numpy(), peer._vcov
    n = np.array([d[nm].sum() for nm in names])
    g = np.array([e.cohort for e in cells])
    k = np.array([e.event_time for e in cells])
    for effect, mask in ([ours.get("att"), np.ones(len(b), bool)], [ours.get("att_cohort", cohort=2004.0), g == 2004],
                         [ours.get("att_event_time", event_time=0), k == 0]):
        w = np.where(mask, n, 0.0) / n[mask].sum()
        assert effect.estimate == pytest.approx(w @ b, abs=1e-8)
        assert effect.std_error == pytest.approx(np.sqrt(w @ V @ w), rel=1e-6)
    assert ours.vcov.shape == (len(ours.effects), len(ours.effects))


def test_extended_twfe_poisson_matches_pyfixest_and_hand_computed_att(mpdta):
    d = mpdta.copy()
    d["population"] = np.exp(d["lpop"]) * (1 + 0.01 * (d["year"] - 2003))  # an exposure that varies in time
    d["log_population"] = np.log(d["population"])
    ours = extended_twfe(d, **{**KEYS, "outcome": "emp"}, family="poisson", exposure="population")
    cells = [e for e in ours.effects if e.estimand == "att_group_time"]
    names = _cell_dummies(d, [(e.cohort, e.calendar_time) for e in cells])
    peer = pf.fepois(f"emp ~ {' + '.join(names)} | countyreal + year", d, vcov={"CRV1": "countyreal"},
                     offset="log_population")
    tab = ours.diagnostics["cells"]
    assert np.allclose(tab["coef"], peer.coef()[names].to_numpy(), atol=1e-6)
    assert np.allclose(tab["coef_std_error"], peer.se()[names].to_numpy(), rtol=1e-6)
    # by hand from pyfixest's fit: mu (1 - exp(-b_cell)) averaged over the treated rows,
    # delta method holding the fixed effects at their estimates (d/d b_cell = sum of mu)
    mu = np.asarray(peer.predict(type="response"))
    b = peer.coef()[names].to_numpy()
    D = d[names].to_numpy()
    treated = D.sum(axis=1) > 0
    cell_b = D @ b
    att = np.mean((mu * (1 - np.exp(-cell_b)))[treated])
    grad = (D[treated] * mu[treated, None]).sum(axis=0) / treated.sum()
    se = np.sqrt(grad @ peer._vcov @ grad)
    level = [e for e in ours.effects if e.estimand == "att" and e.scale == "indicator"][0]
    assert level.estimate == pytest.approx(att, rel=1e-6)
    assert level.std_error == pytest.approx(se, rel=1e-5)
    rr = [e for e in ours.effects if e.estimand == "att" and e.scale == "rate_ratio"][0]
    s1, s0 = mu[treated].sum(), (mu * np.exp(-cell_b))[treated].sum()
    assert rr.estimate == pytest.approx(s1 / s0, rel=1e-6)
    g_log = (D[treated] * mu[treated, None]).sum(axis=0) / s1
    assert rr.std_error == pytest.approx(s1 / s0 * np.sqrt(g_log @ peer._vcov @ g_log), rel=1e-5)
    # event time 3 is the single cell (2004, 2007)
    e3 = ours.get("att_event_time", event_time=3)
    rows = d["d_2004_2007"].to_numpy() == 1
    assert e3.estimate == pytest.approx(np.mean(mu[rows] * (1 - np.exp(-peer.coef()["d_2004_2007"]))), rel=1e-6)


# ---------------------------------------------------------------- known truth, unbalanced rows

def _synthetic(seed: int = 3, units: int = 600, periods: int = 12) -> tuple[pd.DataFrame, dict]:
    """Cohorts 5, 7, 9 and never treated; the effect differs by cohort and grows with
    event time: tau(g, e) = (1 + 0.5 e) * {5: 1.0, 7: 2.0, 9: 0.5}[g] for e >= 0."""
    rng = np.random.default_rng(seed)
    scale = {5: 1.0, 7: 2.0, 9: 0.5}
    first = rng.choice([0, 5, 7, 9], size=units, p=[0.4, 0.2, 0.2, 0.2])
    unit = np.repeat(np.arange(units), periods)
    t = np.tile(np.arange(1, periods + 1), units)
    g = np.repeat(first, periods)
    e = t - g
    tau = np.where((g > 0) & (e >= 0), (1 + 0.5 * e) * np.vectorize(lambda c: scale.get(c, 0.0))(g), 0.0)
    y = np.repeat(rng.normal(0, 1, units), periods) + 0.2 * t + tau + rng.normal(0, 0.5, len(t))
    return pd.DataFrame({"unit": unit, "time": t, "cohort": g, "y": y, "tau": tau}), scale


def test_recovers_heterogeneous_dynamic_effects():
    d, _ = _synthetic()
    keys = dict(outcome="y", unit="unit", time="time", cohort="cohort")
    sa = sun_abraham(d, **keys, event_window=(-3, 3))
    treated = d[(d["cohort"] > 0) & (d["time"] >= d["cohort"])]
    truth = treated.groupby(treated["time"] - treated["cohort"])["tau"].mean()  # shares of the rows at e
    for e in sa.effects:
        if e.estimand == "att_event_time" and e.event_time >= 0:
            assert abs(e.estimate - truth[e.event_time]) < 4 * e.std_error, e.event_time
        elif e.estimand == "att_event_time":
            assert abs(e.estimate) < 4 * e.std_error, e.event_time
    assert abs(sa.get("att").estimate - treated["tau"].mean()) < 4 * sa.get("att").std_error
    et = extended_twfe(d, **keys)
    assert abs(et.get("att").estimate - treated["tau"].mean()) < 4 * et.get("att").std_error
    for c in (5.0, 7.0, 9.0):
        eff = et.get("att_cohort", cohort=c)
        assert abs(eff.estimate - treated.loc[treated["cohort"] == c, "tau"].mean()) < 4 * eff.std_error


def test_unbalanced_panel_matches_pyfixest_on_the_same_rows():
    d, _ = _synthetic(seed=5, units=300)
    rng = np.random.default_rng(0)
    d = d[rng.random(len(d)) > 0.15].reset_index(drop=True)  # 15% of the rows missing at random
    d.loc[rng.random(len(d)) < 0.02, "y"] = np.nan            # and some outcomes
    keys = dict(outcome="y", unit="unit", time="time", cohort="cohort")
    rows = d.dropna(subset=["y"]).copy()
    sa = sun_abraham(d, **keys)
    assert sa.diagnostics["dropped_missing_rows"] == int(d["y"].isna().sum())
    cells = sa.diagnostics["cells"]
    names = _cell_dummies(rows, list(zip(cells["cohort"], cells["period"], strict=True)), cohort="cohort", time="time")
    peer = pf.feols(f"y ~ {' + '.join(names)} | unit + time", rows, vcov={"CRV1": "unit"})
    assert np.allclose(cells["estimate"], peer.coef()[names].to_numpy(), atol=1e-8)
    assert np.allclose(cells["std_error"], peer.se()[names].to_numpy(), rtol=1e-6)
    k = cells["event_time"].to_numpy()
    n = np.array([rows[nm].sum() for nm in names])
    for e in (-3, 0, 4):
        w = np.where(k == e, n, 0.0) / n[k == e].sum()
        eff = sa.get("att_event_time", event_time=e)
        assert eff.estimate == pytest.approx(w @ peer.coef()[names].to_numpy(), abs=1e-8)
        assert eff.std_error == pytest.approx(np.sqrt(w @ peer._vcov @ w), rel=1e-6)
    et = extended_twfe(d, **keys)
    cells = [e for e in et.effects if e.estimand == "att_group_time"]
    names = _cell_dummies(rows, [(e.cohort, e.calendar_time) for e in cells], cohort="cohort", time="time")
    peer = pf.feols(f"y ~ {' + '.join(names)} | unit + time", rows, vcov={"CRV1": "unit"})
    assert np.allclose([e.estimate for e in cells], peer.coef()[names].to_numpy(), atol=1e-8)
    assert np.allclose([e.std_error for e in cells], peer.se()[names].to_numpy(), rtol=1e-6)


def test_without_never_treated_the_last_cohort_is_the_comparison(mpdta):
    d = mpdta[mpdta["first_treat"] > 0].copy()
    fit = sun_abraham(d, **KEYS)
    assert fit.diagnostics["control"].startswith("last-treated cohort 2007")
    rows = d[d["year"] < 2007].copy()
    cells = fit.diagnostics["cells"]
    assert set(cells["cohort"]) == {2004.0, 2006.0}
    names = _cell_dummies(rows, list(zip(cells["cohort"], cells["period"], strict=True)))
    peer = _feols(rows, names)
    assert np.allclose(cells["estimate"], peer.coef()[names].to_numpy(), atol=1e-8)
    assert np.allclose(cells["std_error"], peer.se()[names].to_numpy(), rtol=1e-6)
    et = extended_twfe(d, **KEYS)
    assert {e.cohort for e in et.effects if e.estimand == "att_cohort"} == {2004.0, 2006.0}


# ---------------------------------------------------------------- bad calls

def test_bad_calls_name_the_problem(mpdta):
    bad = mpdta.copy()
    bad.loc[bad.index[0], "first_treat"] = 2005  # one row of county 8001 says 2005, the others 2007
    with pytest.raises(EstimationError, match="varies within a unit"):
        sun_abraham(bad, **KEYS)
    with pytest.raises(EstimationError, match="family"):
        extended_twfe(mpdta, **KEYS, family="logit")
    with pytest.raises(EstimationError, match="no unit is never treated"):
        extended_twfe(mpdta[mpdta["first_treat"] > 0], **KEYS, control_group="never_treated")
    with pytest.raises(EstimationError, match="columns not in the data"):
        sun_abraham(mpdta, **{**KEYS, "cohort": "gname"})
    with pytest.raises(EstimationError, match="exposure"):
        extended_twfe(mpdta, **KEYS, exposure="lpop")
