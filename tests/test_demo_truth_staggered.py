"""The staggered-adoption estimators recover the demo's truth (issue #16, item 4): the
imputation estimator, Sun-Abraham and extended TWFE, by event time and overall, against
``data_raw/demo/truth.csv`` (the true ATT of the treated township-months by event time,
written by the demo generator beside the data)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from evaluation.data.frames import did_frame
from evaluation.estimators.imputation import imputation_did
from evaluation.estimators.saturated import extended_twfe, sun_abraham

KEYS = dict(outcome="value", unit="township_id", time="time", cohort="first_treat")
ESTIMATORS = {
    "imputation": lambda d: imputation_did(d, event_window=(-3, 24), **KEYS),
    "sun_abraham": lambda d: sun_abraham(d, event_window=(-3, 24), **KEYS),
    "extended_twfe": lambda d: extended_twfe(d, **KEYS),
}


@pytest.fixture(scope="module")
def fits(demo):
    panel, indicators, truth = demo
    out = {}
    for indicator in ("county_internal_visit_rate", "thc_outpatient_visits_per_1000"):
        d = did_frame(panel, indicators[indicator])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[indicator] = {name: fit(d) for name, fit in ESTIMATORS.items()}
    return out, truth


@pytest.mark.parametrize("indicator", ["county_internal_visit_rate", "thc_outpatient_visits_per_1000"])
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_event_time_effects_cover_the_demo_truth(fits, name, indicator):
    """Event times 0..24 months: the 95% intervals cover the true ATT at 22 or more of the
    25 (expected misses 1.25; the effects are correlated across event times), and the
    estimates track the truth (mean absolute error below a quarter of the true effect at
    24 months)."""
    results, truth = fits
    fit = results[indicator][name]
    t = truth[(truth["indicator"] == indicator) & (truth["estimand"] == "att_event_time")]
    true = dict(zip(t["group"].astype(int), t["att"], strict=True))
    effects = {e.event_time: e for e in fit.effects if e.estimand == "att_event_time" and e.event_time is not None
               and 0 <= e.event_time <= 24}
    assert sorted(effects) == list(range(25))
    covered = sum(e.covers(true[k]) for k, e in effects.items())
    assert covered >= 22, (name, indicator, covered)
    errors = [abs(e.estimate - true[k]) for k, e in effects.items()]
    assert np.mean(errors) < 0.25 * abs(true[24]), (name, indicator, np.mean(errors), true[24])


@pytest.mark.parametrize("indicator", ["county_internal_visit_rate", "thc_outpatient_visits_per_1000"])
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_overall_att_covers_the_demo_truth(fits, name, indicator):
    """The overall ATT (every treated township-month, equally weighted for imputation and
    extended TWFE; row-weighted post cells for Sun-Abraham, the same population) covers
    the truth's overall ATT."""
    results, truth = fits
    true = truth[(truth["indicator"] == indicator) & (truth["estimand"] == "att")]["att"].iloc[0]
    att = next(e for e in results[indicator][name].effects if e.estimand == "att" and e.scale == "indicator")
    assert att.covers(true), (name, indicator, att.estimate, att.ci_low, att.ci_high, true)
