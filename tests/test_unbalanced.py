"""Incomplete panels: townships missing months (absent rows) and empty cells (NaN outcome).

Peers and tolerances:
- Callaway-Sant'Anna against csdid 0.4.3 (``allow_unbalanced_panel=True``, which follows R
  did 2.5.1's unbalanced path: 2x2 on the rows present, influence functions scaled by
  n / n1 and summed by unit): ATT(g, t), the simple/group/dynamic/calendar aggregates and
  every analytic standard error to 1e-6 (observed agreement ~1e-13).
- TWFE and the event study against pyfixest 0.60 (``pf.feols``, CRV1 by township) to 1e-8
  in coefficients and standard errors; Poisson against ``pf.fepois`` likewise.
- CR2 against a dense Bell-McCaffrey / Pustejovsky-Tipton computation written here, 1e-10.
- The wild cluster bootstrap against the wildboottest package (0.3.2, what pyfixest calls)
  with all 2^G Rademacher sign vectors enumerated: exact, 1e-10.
- Randomization inference and placebo in space against TWFE refits of every assignment,
  1e-10.
- Truth: the demo's truth file (data_raw/demo/truth.csv).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.linalg

import evaluation.estimators as estimators
from evaluation.data.frames import did_frame
from evaluation.diagnostics.bacon import bacon_decomposition
from evaluation.diagnostics.robustness import robustness_table
from evaluation.errors import EstimationError, UnbalancedPanelError
from evaluation.estimators.did import effects_by_group, event_study, poisson_did, twfe
from evaluation.estimators.staggered import callaway_santanna
from evaluation.estimators.synth import synthetic_control, synthetic_did, synthetic_did_by_pilot
from evaluation.inference.few_clusters import (
    placebo_in_space,
    randomization_inference,
    twfe_cr2,
    wild_cluster_bootstrap,
)

COLUMNS = dict(outcome="value", unit="township_id", time="time", cohort="first_treat")


@pytest.fixture(scope="module")
def mpdta_gaps():
    """mpdta (R did's example) with a random 10% of its rows removed (seed 7)."""
    moderndid = pytest.importorskip("moderndid")
    mp = moderndid.load_mpdta().to_pandas()
    rng = np.random.default_rng(7)
    return mp.drop(index=rng.choice(mp.index, size=len(mp) // 10, replace=False)).reset_index(drop=True)


def _demo_gaps(demo, indicator="primary_care_visit_share"):
    """One demo indicator with a pilot township (cohort 31) missing months 20-22, a
    never-treated one missing months 50-52, and one empty cell."""
    panel, indicators, _ = demo
    d = did_frame(panel, indicators[indicator])
    pilot = sorted(d.loc[d["first_treat"] == 31, "township_id"].unique())[0]
    never = sorted(d.loc[d["first_treat"] == 0, "township_id"].unique())[3]
    gone = ((d["township_id"] == pilot) & d["time"].between(20, 22)) | (
        (d["township_id"] == never) & d["time"].between(50, 52))
    d = d[~gone].reset_index(drop=True)
    d.loc[(d["township_id"] == never) & (d["time"] == 5), "value"] = np.nan
    return d, pilot, never


def _csdid(d, *, y, t, i, g, control_group, xformla=None, est="dr"):
    from csdid.att_gt import ATTgt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ATTgt(yname=y, tname=t, idname=i, gname=g, data=d, control_group=control_group.replace("_", ""),
                     xformla=xformla, allow_unbalanced_panel=True).fit(est_method=est, bstrap=False)


def _compare_with_csdid(ours, peer, kinds=("simple", "group", "dynamic", "calendar"), tol=1e-6):
    res = peer.results
    np.testing.assert_allclose(ours.table["att"], res["att"], atol=tol)
    np.testing.assert_allclose(ours.table["se"], res["se"], atol=tol)
    np.testing.assert_array_equal(ours.table["group"], res["group"])
    np.testing.assert_array_equal(ours.table["time"], res["year"])
    for kind in kinds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer.aggte(typec=kind, bstrap=False)
        agg = ours.aggregate(kind)
        overall = agg.get("att")
        assert overall.estimate == pytest.approx(peer.atte["overall_att"], abs=tol), kind
        assert overall.std_error == pytest.approx(peer.atte["overall_se"], abs=tol), kind
        if kind != "simple":
            parts = [e for e in agg.effects if e.estimand != "att"]
            np.testing.assert_allclose([e.estimate for e in parts], peer.atte["att_egt"], atol=tol)
            np.testing.assert_allclose([e.std_error for e in parts], peer.atte["se_egt"], atol=tol)


# ---------------------------------------------------------------- Callaway-Sant'Anna

@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
def test_callaway_santanna_unbalanced_mpdta_matches_csdid(mpdta_gaps, control_group):
    ours = callaway_santanna(mpdta_gaps, outcome="lemp", unit="countyreal", time="year", cohort="first.treat",
                             control_group=control_group)
    assert ours.diagnostics["panel"] == "unbalanced" and ours.diagnostics["observations"] == len(mpdta_gaps)
    peer = _csdid(mpdta_gaps, y="lemp", t="year", i="countyreal", g="first.treat", control_group=control_group)
    _compare_with_csdid(ours, peer)


@pytest.mark.parametrize("method", ["dr", "reg"])
def test_callaway_santanna_unbalanced_covariates_match_csdid(mpdta_gaps, method):
    """With a covariate the repeated-cross-section estimators (DRDID's drdid_rc and
    reg_did_rc, covariates at each row's own period) run: ATT(g, t) and SEs to 1e-6."""
    for control_group in ("never_treated", "not_yet_treated"):
        ours = callaway_santanna(mpdta_gaps, outcome="lemp", unit="countyreal", time="year", cohort="first.treat",
                                 control_group=control_group, covariates=["lpop"], method=method)
        peer = _csdid(mpdta_gaps, y="lemp", t="year", i="countyreal", g="first.treat",
                      control_group=control_group, xformla="lemp~lpop", est=method)
        _compare_with_csdid(ours, peer, kinds=("simple", "dynamic"))


@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
def test_callaway_santanna_demo_with_gaps_matches_csdid(demo, control_group):
    d, _, _ = _demo_gaps(demo)
    d["unit"] = pd.factorize(d["township_id"], sort=True)[0] + 1
    ours = callaway_santanna(d, outcome="value", unit="unit", time="time", cohort="first_treat",
                             control_group=control_group)
    assert ours.diagnostics["dropped_missing_rows"] == 1 and ours.diagnostics["observations"] == len(d) - 1
    peer = _csdid(d[["unit", "time", "value", "first_treat"]], y="value", t="time", i="unit", g="first_treat",
                  control_group=control_group)
    _compare_with_csdid(ours, peer)


def test_balanced_panel_keeps_the_panel_estimator(demo):
    """On a balanced panel both settings give the same (panel) estimator; an empty cell
    makes the panel unbalanced; allow_unbalanced_panel=False refuses it with the typed
    error naming the townships and what each lacks."""
    panel, indicators, _ = demo
    full = did_frame(panel, indicators["primary_care_visit_share"])
    a = callaway_santanna(full, **COLUMNS)
    b = callaway_santanna(full, **COLUMNS, allow_unbalanced_panel=False)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.diagnostics["panel"] == "balanced" and a.effects[0].n_obs == len(full)
    d, pilot, never = _demo_gaps(demo)
    with pytest.raises(UnbalancedPanelError, match="not balanced") as info:
        callaway_santanna(d, **COLUMNS, allow_unbalanced_panel=False)
    err = info.value
    assert isinstance(err, EstimationError) and "callaway_santanna" in err.method
    inc = err.incomplete.set_index("unit")
    assert set(inc.index) == {pilot, never}
    assert inc.loc[pilot, "missing_periods"] == [20, 21, 22] and inc.loc[pilot, "missing_values"] == []
    assert inc.loc[never, "missing_periods"] == [50, 51, 52] and inc.loc[never, "missing_values"] == [5]
    assert f"'{pilot}' has no row in 3 period(s) (20, 21, 22)" in str(err)


def test_unbalanced_pretest_band_and_aggregates_work(mpdta_gaps):
    cs = callaway_santanna(mpdta_gaps, outcome="lemp", unit="countyreal", time="year", cohort="first.treat",
                           seed=3)
    pre = cs.pretest()
    assert pre["df"] == 5 and 0 < pre["p_value"] < 1  # 2 pre-period cells of 2006, 3 of 2007
    dyn = cs.aggregate("dynamic", draws=499)
    assert dyn.diagnostics["uniform_critical_value"] > 1.96
    assert (dyn.plot_data["band_high"] - dyn.plot_data["band_low"] > dyn.plot_data["ci_high"]
            - dyn.plot_data["ci_low"]).all()
    assert cs.vcov.shape == (len(cs.table), len(cs.table))


def test_cells_without_observations_are_left_out_and_listed():
    """A cohort with no row in one period: the cells that need that period are left out
    (R did gives them NA; csdid too) and listed; the rest is estimated."""
    rng = np.random.default_rng(1)
    rows = [{"unit": i, "time": t, "g": (5 if i < 3 else 0), "y": rng.normal() + 0.2 * t}
            for i in range(12) for t in range(1, 9)]
    d = pd.DataFrame(rows)
    d = d[~((d["g"] == 5) & (d["time"] == 7))]
    cs = callaway_santanna(d, outcome="y", unit="unit", time="time", cohort="g")
    assert cs.diagnostics["cells_without_data"] == [{"group": 5, "time": 7}]  # post cells share the base 4
    assert 7 not in cs.table["time"].tolist() and np.isfinite(cs.aggregate("simple").get("att").estimate)


# ---------------------------------------------------------------- TWFE family

def test_twfe_and_event_study_with_gaps_match_pyfixest(demo):
    pf = pytest.importorskip("pyfixest")
    d, _, _ = _demo_gaps(demo, "county_internal_visit_rate")
    used = d.dropna(subset=["value"])
    fit = twfe(d, **COLUMNS)
    model = pf.feols("value ~ post | township_id + time", used, vcov={"CRV1": "township_id"})
    e = fit.effects[0]
    assert e.estimate == pytest.approx(model.coef()["post"], abs=1e-8)
    assert e.std_error == pytest.approx(model.se()["post"], abs=1e-8)
    assert e.n_obs == len(used) == fit.diagnostics["observations"] and fit.diagnostics["dropped_missing_rows"] == 1
    es = event_study(d, **COLUMNS, event_window=(-6, 12))
    used = used.assign(rel=np.where(used["first_treat"] > 0, (used["time"] - used["first_treat"]).clip(-6, 12), -1))
    model = pf.feols("value ~ i(rel, ref=-1) | township_id + time", used, vcov={"CRV1": "township_id"})
    np.testing.assert_allclose([x.estimate for x in es.effects], model.coef().to_numpy(), atol=1e-8)
    np.testing.assert_allclose([x.std_error for x in es.effects], model.se().to_numpy(), atol=1e-8)
    assert es.effects[0].n_obs == len(used) and es.diagnostics["dropped_missing_rows"] == 1


def test_poisson_and_groups_with_gaps(demo):
    pf = pytest.importorskip("pyfixest")
    d, _, _ = _demo_gaps(demo, "referrals_down_per_1000")
    d.loc[d.index[7], "numerator"] = np.nan
    fit = poisson_did(d, outcome="numerator", unit="township_id", time="time", cohort="first_treat",
                      exposure="population")
    used = d.dropna(subset=["numerator"]).assign(log_population=lambda x: np.log(x["population"]))
    model = pf.fepois("numerator ~ post | township_id + time", used, vcov={"CRV1": "township_id"},
                      offset="log_population")
    log_rr = [e for e in fit.effects if e.scale == "log"][0]
    assert log_rr.estimate == pytest.approx(model.coef()["post"], abs=1e-8)
    assert log_rr.std_error == pytest.approx(model.se()["post"], abs=1e-6)
    assert fit.diagnostics["dropped_missing_rows"] == 1 and log_rr.n_obs == len(used)
    by = effects_by_group(d, **COLUMNS, by="model")
    assert by.diagnostics["observations"] == len(d) - 1 and all(np.isfinite(e.std_error) for e in by.effects)


def _small_gappy_panel(seed=4, units=10, periods=6, drop=7):
    rng = np.random.default_rng(seed)
    ft = np.where(np.arange(units) < 3, [3, 4, 4] + [0] * (units - 3), 0)[:units]
    rows = [{"unit": i, "time": t, "first_treat": ft[i], "county": i // 2,
             "y": rng.normal() + 0.3 * t + 0.8 * (ft[i] > 0 and t >= ft[i]) + rng.normal()}
            for i in range(units) for t in range(1, periods + 1)]
    d = pd.DataFrame(rows)
    d = d.drop(index=rng.choice(d.index, size=drop, replace=False)).reset_index(drop=True)
    d.loc[2, "y"] = np.nan
    d["post"] = ((d["first_treat"] > 0) & (d["time"] >= d["first_treat"])).astype(float)
    return d


@pytest.mark.parametrize("cluster", ["unit", "county"])
def test_cr2_with_gaps_equals_dense_bell_mccaffrey(cluster):
    """CR2 on an unbalanced panel = the dense computation: coefficients from the full
    dummy-variable design (least squares), adjustment matrices A_g = (I - H~_gg)^(-1/2)
    of the township-absorbed design (Pustejovsky and Tipton 2018, sec. 3: with fixed
    effects nested in the clusters), Bell-McCaffrey df from the eigenvalues of G'G with
    the full residual maker (Imbens and Kolesar 2016). 1e-10."""
    d = _small_gappy_panel()
    ours = twfe_cr2(d, outcome="y", unit="unit", time="time", cohort="first_treat", cluster=cluster)
    u = d.dropna(subset=["y"])
    U = pd.get_dummies(u["unit"], dtype=float).to_numpy()
    P = pd.get_dummies(u["time"], drop_first=True, dtype=float).to_numpy()
    X = np.column_stack([u["post"].to_numpy(), P])
    y = u["y"].to_numpy()
    full = np.column_stack([X, U])
    coef = np.linalg.lstsq(full, y, rcond=None)[0]
    resid = y - full @ coef
    MU = np.eye(len(y)) - U @ np.linalg.pinv(U)
    Xt = MU @ X
    B = np.linalg.inv(Xt.T @ Xt)
    Ht = Xt @ B @ Xt.T
    M_full = MU - Ht
    groups = u[cluster].to_numpy()
    meat = np.zeros((X.shape[1], X.shape[1]))
    Gcols = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        A = np.real(scipy.linalg.sqrtm(np.linalg.inv(np.eye(len(idx)) - Ht[np.ix_(idx, idx)])))
        s = Xt[idx].T @ A @ resid[idx]
        meat += np.outer(s, s)
        Gcols.append(M_full[:, idx] @ (A @ (Xt[idx] @ B[:, 0])))
    V = B @ meat @ B
    lam = np.linalg.eigvalsh(np.column_stack(Gcols).T @ np.column_stack(Gcols))
    df = lam.sum() ** 2 / (lam**2).sum()
    e = ours.effects[0]
    assert e.estimate == pytest.approx(coef[0], abs=1e-10)
    assert e.std_error == pytest.approx(np.sqrt(V[0, 0]), abs=1e-10)
    assert ours.diagnostics["bell_mccaffrey_df"] == pytest.approx(df, abs=1e-10)
    assert e.n_obs == len(u) and ours.diagnostics["dropped_missing_rows"] == 1


def test_wild_bootstrap_with_gaps_equals_wildboottest_enumerated():
    """Absent rows and an empty cell, clusters = counties (5): all 32 sign vectors; t and
    every t* equal the wildboottest package's on the one-hot design of the rows used."""
    wb = pytest.importorskip("wildboottest.wildboottest")
    d = _small_gappy_panel(units=10, drop=6)
    ours = wild_cluster_bootstrap(d, outcome="y", unit="unit", time="time", cohort="first_treat", cluster="county")
    u = d.dropna(subset=["y"])
    X = np.column_stack([u["post"].to_numpy(float), np.ones(len(u)),
                         pd.get_dummies(u["unit"], drop_first=True, dtype=float).to_numpy(),
                         pd.get_dummies(u["time"], drop_first=True, dtype=float).to_numpy()])
    R = np.zeros(X.shape[1])
    R[0] = 1
    boot = wb.WildboottestCL(X=X, Y=u["y"].to_numpy(), cluster=u["county"].to_numpy(), R=R, B=9999, seed=1)
    boot.get_scores(bootstrap_type="11", impose_null=True, adj=True, cluster_adj=True)
    boot.get_weights(weights_type="rademacher")
    for step in (boot.get_numer, boot.get_denom, boot.get_tboot, boot.get_vcov, boot.get_tstat):
        step()
    assert ours.diagnostics["draws"] == 32 and ours.diagnostics["enumerated"]
    assert ours.effects[0].extra["t"] == pytest.approx(float(np.squeeze(boot.t_stat)), abs=1e-10)
    np.testing.assert_allclose(np.sort(ours.plot_data["t_star"]), np.sort(np.squeeze(boot.t_boot)), atol=1e-10)
    assert ours.effects[0].n_obs == len(u) and ours.diagnostics["dropped_missing_rows"] == 1


# ---------------------------------------------------------------- randomization inference

def _refit(d, assignment: dict) -> float:
    e = d.assign(first_treat=d["unit"].map(assignment))
    return twfe(e, outcome="y", unit="unit", time="time", cohort="first_treat").effects[0].estimate


def test_randomization_inference_with_gaps_equals_refits():
    """Exact enumeration (10 x 9 x 8 / 2 = 360 assignments of starts 3, 4, 4) on a panel
    with absent rows and an empty cell: every permuted coefficient equals a TWFE refit
    (1e-10), the p-value is their share, and the interval's ends are where the p-value
    of the shifted outcome crosses alpha."""
    d = _small_gappy_panel()
    ri = randomization_inference(d, outcome="y", unit="unit", time="time", cohort="first_treat")
    assert ri.diagnostics["exact"] and ri.diagnostics["assignments"] == 360
    assert ri.diagnostics["panel"] == "unbalanced" and ri.effects[0].n_obs == d["y"].notna().sum()
    refits = []
    for i in range(10):
        for j in range(10):
            for k in range(j + 1, 10):
                if len({i, j, k}) == 3:
                    refits.append(_refit(d, {u: {i: 3, j: 4, k: 4}.get(u, 0) for u in range(10)}))
    np.testing.assert_allclose(np.sort(ri.plot_data["permuted_estimate"]), np.sort(refits), atol=1e-10)
    observed = twfe(d, outcome="y", unit="unit", time="time", cohort="first_treat").effects[0].estimate
    e = ri.effects[0]
    assert e.estimate == pytest.approx(observed, abs=1e-10)
    assert e.p_value == pytest.approx(np.mean(np.abs(refits) >= abs(observed) - 1e-12), abs=1e-12)
    for edge in (e.ci_low, e.ci_high):
        toward = np.sign(e.estimate - edge)
        p_in, p_out = (randomization_inference(d.assign(y=d["y"] - (edge + s * toward * 1e-6) * d["post"]),
                                               outcome="y", unit="unit", time="time",
                                               cohort="first_treat").effects[0].p_value for s in (1, -1))
        assert p_out <= 0.05 < p_in


def test_placebo_in_space_with_gaps_equals_refits():
    d = _small_gappy_panel()
    pl = placebo_in_space(d, outcome="y", unit="unit", time="time", cohort="first_treat")
    controls = d[d["first_treat"] == 0]
    refits = [_refit(controls, {u: (3 if u == j else 0) for u in range(10)})
              for j in sorted(controls["unit"].unique())]
    np.testing.assert_allclose(pl.plot_data["placebo_estimate"], refits, atol=1e-10)
    observed = twfe(d, outcome="y", unit="unit", time="time", cohort="first_treat").effects[0].estimate
    assert pl.effects[0].estimate == pytest.approx(observed, abs=1e-10)
    assert pl.effects[0].p_value == pytest.approx((1 + np.sum(np.abs(refits) >= abs(observed))) / (1 + len(refits)))


# ---------------------------------------------------------------- methods that need balance

def test_methods_that_need_balance_raise_the_typed_error(demo):
    d, pilot, never = _demo_gaps(demo)
    calls = {"bacon_decomposition": lambda x: bacon_decomposition(x, **COLUMNS),
             "synthetic_control": lambda x: synthetic_control(x, **COLUMNS, pilot=pilot),
             "synthetic_did": lambda x: synthetic_did(x, **COLUMNS, draws=5),
             "synthetic_did_by_pilot": lambda x: synthetic_did_by_pilot(x, **COLUMNS, draws=5)}
    for name, call in calls.items():
        assert name in estimators.NEEDS_BALANCED_PANEL
        with pytest.raises(UnbalancedPanelError) as info:
            call(d)
        assert info.value.method == name and set(info.value.incomplete["unit"]) == {pilot, never}, name
        assert name in str(info.value) and pilot in str(info.value)
    # dropping the incomplete townships first is what the report layer does
    complete = d[~d["township_id"].isin([pilot, never])]
    assert bacon_decomposition(complete, **COLUMNS).table["weight"].sum() == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- robustness and truth

def test_robustness_table_runs_on_gaps(demo):
    d, _, _ = _demo_gaps(demo)
    covid = sorted(d["period"].astype(str).unique())[36:40]
    table = robustness_table(d, covid_periods=covid)
    assert all(np.isfinite(e.estimate) and np.isfinite(e.std_error) for e in table.effects)
    dropped = [e for e in table.effects if e.estimand == "att_excluding_periods"][0]
    assert dropped.term == "4 periods dropped"


def test_unbalanced_callaway_santanna_covers_the_truth(demo):
    """5% of the demo's rows removed at random and 1% of the remaining cells emptied
    (seed 20261129): the simple ATT's 95% interval still covers the truth file's ATT."""
    panel, indicators, truth = demo
    true_att = truth[truth["estimand"] == "att"].set_index("indicator")["att"]
    rng = np.random.default_rng(20261129)
    for ind_id in ("county_internal_visit_rate", "primary_care_visit_share"):
        d = did_frame(panel, indicators[ind_id])
        d = d.drop(index=rng.choice(d.index, size=round(0.05 * len(d)), replace=False))
        d.loc[rng.choice(d.index, size=round(0.01 * len(d)), replace=False), "value"] = np.nan
        att = callaway_santanna(d, **COLUMNS).aggregate("simple").get("att")
        assert att.covers(true_att[ind_id]), (ind_id, att.estimate, att.std_error, true_att[ind_id])
