"""Callaway-Sant'Anna with inverse probability weighting (``method="ipw"``), and the
covariate checks every covariate-adjusted 2x2 shares.

Peers and tolerances (the existing CS tests' tolerances, tests/test_did.py and
tests/test_unbalanced.py):
- csdid 0.4.3 (``ATTgt(..., xformla="lemp~lpop").fit(est_method="ipw")``, which follows R
  did 2.x / DRDID's ``std_ipw_did_panel`` and ``std_ipw_did_rc``) on R did's mpdta with
  ``lpop`` as covariate: ATT(g, t) to 1e-6, their standard errors to 1e-4 (balanced panel,
  as tests/test_did.py) and the simple / group / dynamic / calendar aggregates and their
  standard errors likewise; on mpdta with 10% of its rows removed (seed 7, the unbalanced
  repeated-cross-section path) every number to 1e-6 (as tests/test_unbalanced.py).
  Observed agreement ~1e-13.
- moderndid 0.2.0 (``att_gt(..., xformla="~lpop", est_method="ipw")`` and ``aggte``) on
  the balanced mpdta: ATT(g, t) to 1e-6, SEs to 1e-4, the dynamic aggregate likewise.
  (moderndid 0.2.0's ``allow_unbalanced_panel=True`` path fails on mpdta with gaps, a
  TypeError inside the package, so it is compared on the balanced panel only.)
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest

from evaluation.errors import EstimationError
from evaluation.estimators.staggered import callaway_santanna

COLUMNS = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat")


@pytest.fixture(scope="module")
def mpdta():
    moderndid = pytest.importorskip("moderndid")
    return moderndid.load_mpdta().to_pandas()


@pytest.fixture(scope="module")
def mpdta_gaps(mpdta):
    """mpdta with a random 10% of its rows removed (seed 7, as tests/test_unbalanced.py)."""
    rng = np.random.default_rng(7)
    return mpdta.drop(index=rng.choice(mpdta.index, size=len(mpdta) // 10, replace=False)).reset_index(drop=True)


def _csdid(d, control_group, unbalanced=False, est="ipw"):
    from csdid.att_gt import ATTgt

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return ATTgt(yname="lemp", tname="year", idname="countyreal", gname="first.treat", data=d,
                     control_group=control_group.replace("_", ""), xformla="lemp~lpop",
                     allow_unbalanced_panel=unbalanced).fit(est_method=est, bstrap=False)


def _compare(ours, peer, att_tol, se_tol):
    res = peer.results
    np.testing.assert_array_equal(ours.table["group"], res["group"])
    np.testing.assert_array_equal(ours.table["time"], res["year"])
    np.testing.assert_allclose(ours.table["att"], res["att"], atol=att_tol)
    np.testing.assert_allclose(ours.table["se"], res["se"], atol=se_tol)
    for kind in ("simple", "group", "dynamic", "calendar"):
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            peer.aggte(typec=kind, bstrap=False)
        agg = ours.aggregate(kind)
        overall = agg.get("att")
        assert overall.estimate == pytest.approx(peer.atte["overall_att"], abs=att_tol), kind
        assert overall.std_error == pytest.approx(peer.atte["overall_se"], abs=se_tol), kind
        if kind != "simple":
            parts = [e for e in agg.effects if e.estimand != "att"]
            np.testing.assert_allclose([e.estimate for e in parts], peer.atte["att_egt"], atol=att_tol)
            np.testing.assert_allclose([e.std_error for e in parts], peer.atte["se_egt"], atol=se_tol)


@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
def test_ipw_matches_csdid_on_mpdta(mpdta, control_group):
    ours = callaway_santanna(mpdta, **COLUMNS, covariates=["lpop"], method="ipw", control_group=control_group)
    assert ours.estimation == "ipw" and "inverse probability weighting" in ours.method
    assert ours.diagnostics["panel"] == "balanced"
    _compare(ours, _csdid(mpdta, control_group), att_tol=1e-6, se_tol=1e-4)


@pytest.mark.parametrize("control_group", ["never_treated", "not_yet_treated"])
def test_ipw_unbalanced_matches_csdid(mpdta_gaps, control_group):
    """The repeated-cross-section IPW (DRDID's std_ipw_did_rc), covariates at each row's period."""
    ours = callaway_santanna(mpdta_gaps, **COLUMNS, covariates=["lpop"], method="ipw", control_group=control_group)
    assert ours.diagnostics["panel"] == "unbalanced"
    _compare(ours, _csdid(mpdta_gaps, control_group, unbalanced=True), att_tol=1e-6, se_tol=1e-6)


def test_ipw_matches_moderndid(mpdta):
    moderndid = pytest.importorskip("moderndid")
    ours = callaway_santanna(mpdta, **COLUMNS, covariates=["lpop"], method="ipw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = moderndid.att_gt(mpdta, yname="lemp", tname="year", idname="countyreal", gname="first.treat",
                                xformla="~lpop", est_method="ipw", boot=False)
        dyn = moderndid.aggte(peer, type="dynamic", boot=False)
    np.testing.assert_allclose(ours.table["group"], peer.groups)
    np.testing.assert_allclose(ours.table["time"], peer.times)
    np.testing.assert_allclose(ours.table["att"], peer.att_gt, atol=1e-6)
    np.testing.assert_allclose(ours.table["se"], peer.se_gt, atol=1e-4)
    agg = ours.aggregate("dynamic")
    parts = [e for e in agg.effects if e.estimand != "att"]
    np.testing.assert_allclose([e.event_time for e in parts], dyn.event_times)
    np.testing.assert_allclose([e.estimate for e in parts], dyn.att_by_event, atol=1e-6)
    np.testing.assert_allclose([e.std_error for e in parts], dyn.se_by_event, atol=1e-4)
    assert agg.get("att").estimate == pytest.approx(dyn.overall_att, abs=1e-6)
    assert agg.get("att").std_error == pytest.approx(dyn.overall_se, abs=1e-4)


def test_ipw_without_covariates_is_the_unconditional_estimate(mpdta):
    """Without covariates the score is the treated share: every method is the plain 2x2."""
    plain = callaway_santanna(mpdta, **COLUMNS)
    ipw = callaway_santanna(mpdta, **COLUMNS, method="ipw")
    np.testing.assert_allclose(ipw.table["att"], plain.table["att"], atol=1e-14)
    np.testing.assert_allclose(ipw.table["se"], plain.table["se"], atol=1e-14)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("method", ["ipw", "dr"])
def test_perfect_separation_names_the_covariate_and_cohort(mpdta, method):
    """A covariate whose values among the 2004 pilots lie above every comparison county's:
    no common support, for the panel and for the unbalanced path."""
    d = mpdta.assign(size=mpdta["countyreal"] % 7 + 100 * (mpdta["first.treat"] == 2004))
    with pytest.raises(EstimationError, match=r"no overlap.*cohort 2004.*perfect separation.*'size'"):
        callaway_santanna(d, **COLUMNS, covariates=["lpop", "size"], method=method)
    gaps = d.drop(index=d.index[::17]).reset_index(drop=True)
    with pytest.raises(EstimationError, match=r"no overlap.*cohort 2004.*'size'"):
        callaway_santanna(gaps, **COLUMNS, covariates=["size"], method=method)
    # outcome regression needs no propensity score: it runs
    callaway_santanna(d, **COLUMNS, covariates=["size"], method="reg")


def test_no_overlap_without_separation(mpdta):
    """Overlapping ranges (one comparison county at 6 among 2007 pilots spread over 5..81,
    everyone else at 0..4) but a fitted score above R did's 0.999 limit: refused, naming
    the cohort and the covariate."""
    d = mpdta.assign(far=(mpdta["countyreal"] % 5).astype(float))
    pilots = np.sort(d.loc[d["first.treat"] == 2007, "countyreal"].unique())[:20]
    for k, county in enumerate(pilots):
        d.loc[d["countyreal"] == county, "far"] = 5.0 + 4 * k
    d.loc[d["countyreal"] == np.sort(d.loc[d["first.treat"] == 0, "countyreal"].unique())[0], "far"] = 6.0
    with pytest.raises(EstimationError, match=r"no overlap.*cohort 2007, period 2004.*reaches 0.999.*'far'"):
        callaway_santanna(d, **COLUMNS, covariates=["far"], method="ipw")


def test_covariate_checks(mpdta):
    d = mpdta.copy()
    d.loc[d.index[5], "lpop"] = np.nan
    county = d.loc[d.index[5], "countyreal"]
    with pytest.raises(EstimationError, match=rf"covariate 'lpop' is missing for countyreal {county}"):
        callaway_santanna(d, **COLUMNS, covariates=["lpop"], method="ipw")
    with pytest.raises(EstimationError, match=r"covariate 'one' is constant"):
        callaway_santanna(mpdta.assign(one=1.0), **COLUMNS, covariates=["one"], method="ipw")
    with pytest.raises(EstimationError, match=r"covariate 'label' is not numeric"):
        callaway_santanna(mpdta.assign(label="x" + mpdta["countyreal"].astype(str)), **COLUMNS,
                          covariates=["label"], method="ipw")
    with pytest.raises(EstimationError, match=r"method must be 'dr', 'reg' or 'ipw'"):
        callaway_santanna(mpdta, **COLUMNS, covariates=["lpop"], method="psm")
