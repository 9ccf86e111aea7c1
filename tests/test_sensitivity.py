"""Parallel-trends sensitivity (Rambachan and Roth 2023) on the Medicaid-expansion example
of the HonestDiD package's documentation, the demo panel, and bad calls."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.data.frames import did_frame
from evaluation.data.panel import load_panel
from evaluation.diagnostics.sensitivity import (
    flci_smoothness,
    honest_sensitivity,
    rm_confidence_set,
    smoothness_upper_bound,
)
from evaluation.estimators.did import event_study
from evaluation.estimators.fixed_effects import EstimationError
from evaluation.estimators.staggered import callaway_santanna
from evaluation.paths import DEMO_STUDY
from evaluation.study.config import load_study

# HonestDiD README (R), Medicaid expansion: relative magnitudes (C-LF) and smoothness (FLCI)
PUBLISHED_RM = {0.5: (0.0240, 0.0672), 1.0: (0.0170, 0.0720), 1.5: (0.0082, 0.0797), 2.0: (-0.0009, 0.0881)}
PUBLISHED_SD_M0 = (0.0259, 0.0607)
# moderndid 0.2 (the Python port of HonestDiD, with cvxpy) on the same coefficients:
# tests/data/make_honestdid_reference.py printed these
MODERNDID_SD = {0.01: (0.013175, 0.078684), 0.02: (0.002834, 0.090739), 0.03: (-0.007165, 0.100738)}
MODERNDID_RM = {0.5: (0.02413, 0.066888), 1.0: (0.017094, 0.071963), 1.5: (0.008587, 0.079599),
                2.0: (-0.000666, 0.087946)}


@pytest.fixture(scope="module")
def ehec():
    """TWFE event study of the HonestDiD example: states expanding Medicaid in 2014 against
    those that never did (or later than 2015), 2008-2015, clustered by state."""
    moderndid = pytest.importorskip("moderndid")
    df = moderndid.load_ehec()
    df = df.to_pandas() if hasattr(df, "to_pandas") else df
    d = df[(df["year"] < 2016) & (df["yexp2"].isna() | (df["yexp2"] != 2015))].copy()
    d["first_treat"] = np.where(d["yexp2"] == 2014, 2014, 0)
    return event_study(d, outcome="dins", unit="stfips", time="year", cohort="first_treat", event_window=(-6, 1),
                       bin_endpoints=False)


def test_ehec_event_study_is_the_documented_one(ehec):
    b = [e.estimate for e in ehec.effects]
    assert [e.event_time for e in ehec.effects] == [-6, -5, -4, -3, -2, 0, 1]
    assert b[-2:] == pytest.approx([0.046447, 0.069206], abs=1e-6)


def test_relative_magnitudes_match_honestdid(ehec):
    fit = honest_sensitivity(ehec, bound="relative_magnitude", values=list(PUBLISHED_RM))
    for e, (mbar, (lo, hi)) in zip(fit.effects[1:], PUBLISHED_RM.items(), strict=True):
        assert e.term == f"Mbar={mbar:g}"
        assert e.ci_low == pytest.approx(lo, abs=1e-3) and e.ci_high == pytest.approx(hi, abs=1e-3), (mbar, e)
        lo_m, hi_m = MODERNDID_RM[mbar]
        assert e.ci_low == pytest.approx(lo_m, abs=2e-6) and e.ci_high == pytest.approx(hi_m, abs=2e-6)
    # sets widen with Mbar, and the breakdown value lies where the lower end crosses 0
    lows = [e.ci_low for e in fit.effects[1:]]
    assert lows == sorted(lows, reverse=True)
    assert 1.5 < fit.diagnostics["breakdown"] < 2.0


def test_smoothness_flci_matches_honestdid(ehec):
    fit = honest_sensitivity(ehec, bound="smoothness", values=[0.0, *MODERNDID_SD])
    m0 = fit.effects[1]
    assert m0.ci_low == pytest.approx(PUBLISHED_SD_M0[0], abs=1e-3)
    assert m0.ci_high == pytest.approx(PUBLISHED_SD_M0[1], abs=1e-3)
    for e, (m, (lo, hi)) in zip(fit.effects[2:], MODERNDID_SD.items(), strict=True):
        assert e.ci_low == pytest.approx(lo, abs=1e-5) and e.ci_high == pytest.approx(hi, abs=1e-5), (m, e)


def test_flci_at_m0_is_the_linear_trend_extrapolation():
    """With M = 0 the bias is a linear trend: the FLCI is the minimum-variance estimator
    among those that remove any linear trend, +- 1.96 SD; with independent coefficients
    and two pre-periods it is beta_0 - 2 beta_-2 ... checked against direct algebra."""
    rng = np.random.default_rng(0)
    beta = rng.normal(size=4)
    V = np.diag([1.0, 1.0, 1.0, 1.0])
    r = flci_smoothness(beta, V, 2, 2, 0.0)
    # l_pre = D w with w summing to 1 (theta = tau_1): estimators beta_0 - a beta_-2 - b beta_-1 that
    # remove a linear trend through the reference period 0 (=-1 in event time): here w = (w1, 1 - w1),
    # l_pre = (w1, 1 - 2 w1); variance 1 + w1^2 + (1 - 2 w1)^2 is smallest at w1 = 0.4
    w1 = 0.4
    l_pre = np.array([w1, 1 - 2 * w1])
    assert r["l_pre"] == pytest.approx(l_pre, abs=1e-8)
    assert r["half_length"] == pytest.approx(1.959964 * np.sqrt(1 + l_pre @ l_pre), abs=1e-5)


def test_demo_sensitivity_on_callaway_santanna():
    """Callaway-Sant'Anna event times (universal base) on the demo: the honest sets
    contain the conventional interval and widen with the bound; with exactly parallel
    trends in the demo the Mbar = 1 set covers the true average effect of the first
    quarter."""
    study = load_study(DEMO_STUDY)
    panel = load_panel(study)
    ind = {i.id: i for i in study.selected_indicators()}["county_internal_visit_rate"]
    d = did_frame(panel, ind)
    dyn = callaway_santanna(d, outcome="value", unit="township_id", time="time", cohort="first_treat",
                            base_period="universal").aggregate("dynamic", event_window=(-6, 6))
    fit = honest_sensitivity(dyn, event_window=(-4, 2), l_post=np.full(3, 1 / 3), values=[0.5, 1.0, 2.0],
                             breakdown=False)
    original, *sets = fit.effects
    assert all(s.ci_low <= original.ci_low + 1e-9 and s.ci_high >= original.ci_high - 1e-9 for s in sets)
    widths = [s.ci_high - s.ci_low for s in sets]
    assert widths == sorted(widths)
    import pandas as pd

    truth = pd.read_csv(study.truth_path)
    t = truth[(truth["indicator"] == ind.id) & (truth["estimand"] == "att_event_time")]
    t = t.assign(e=t["group"].astype(int)).set_index("e")["att"]
    true_theta = float(t.loc[[0, 1, 2]].mean())
    assert sets[1].ci_low <= true_theta <= sets[1].ci_high


def test_bad_calls():
    b, V = np.zeros(4), np.eye(4)
    with pytest.raises(EstimationError, match="two pre-period"):
        rm_confidence_set(b[:3], V[:3, :3], 1, 2, 1.0)
    with pytest.raises(EstimationError, match="covariance"):
        flci_smoothness(b, np.eye(3), 2, 2, 0.0)
    with pytest.raises(EstimationError, match="l_post has 3"):
        flci_smoothness(b, V, 2, 2, 0.0, l_post=[1, 0, 0])
    with pytest.raises(EstimationError, match="non-negative"):
        rm_confidence_set(b, V, 2, 2, -1.0)
    with pytest.raises(EstimationError, match="two pre-period"):
        smoothness_upper_bound(b, V, 1)
    from evaluation.results import Estimates

    with pytest.raises(EstimationError, match="no event-time effects"):
        honest_sensitivity(Estimates(effects=[], method="x"))
