"""Truth on the selection demo (data_raw/demo_selection: pilots chosen by a stated logit on
distance, beds and mountainous terrain, which also drive the untreated trends and the size of
the effect; the exact truth written beside the data by the generator).

- PSM-DID on the selection covariates covers the true ATT of its matched pilots (the mean of
  their per-township truths, `att_township`, over every treated month, the estimand of
  `psm_did` with a post-window to the end of the data), where naive TWFE does not
  (tests/test_demo_selection_truth.py shows the naive bias and that doubly robust
  Callaway-Sant'Anna covers the overall ATT).
- The balance table: |SMD| above 0.1 before matching and below 0.1 after, for the three
  selection covariates.
- Heterogeneity (the chapter's estimator: split samples, pilot-level DiD, outcomes adjusted
  for covariate period effects): the subgroup intervals cover the subgroup truths
  (`att_subgroup`), at least 7 of 8 over two indicators (95% intervals; 8 of 8 here)."""

from __future__ import annotations

import pandas as pd
import pytest

from evaluation.data.frames import did_frame
from evaluation.data.panel import load_panel
from evaluation.diagnostics.balance import balance_table
from evaluation.estimators.did import twfe
from evaluation.estimators.matching import psm_did
from evaluation.inference.heterogeneity import heterogeneity_randomization
from evaluation.paths import PROJECT_ROOT
from evaluation.study.config import load_study

STUDY = PROJECT_ROOT / "studies" / "demo_selection.yml"
SELECTION = ["distance_km", "beds", "mountainous"]
INDICATORS = ["county_internal_visit_rate", "thc_outpatient_visits_per_1000"]


@pytest.fixture(scope="module")
def demo():
    study = load_study(STUDY)
    panel = load_panel(study)
    truth = pd.read_csv(study.truth_path, dtype={"group": str})
    by_id = {i.id: i for i in study.selected_indicators()}
    return {ind: did_frame(panel, by_id[ind]) for ind in INDICATORS}, truth


@pytest.mark.parametrize("indicator", INDICATORS)
def test_psm_did_covers_the_truth_of_its_matched_pilots_and_naive_twfe_does_not(demo, indicator):
    frames, truth = demo
    d = frames[indicator]
    keys = dict(outcome="value", unit="township_id", time="time", cohort="first_treat")
    fit = psm_did(d, **keys, covariates=SELECTION, caliper=0.2, event_window=(-12, int(d["time"].max())))
    att = fit.get("att")
    weights = fit.diagnostics["weights"]
    pilots = d.loc[d["first_treat"] > 0, "township_id"].unique()
    matched = [p for p in pilots if weights.get(p, 0) > 0]
    per_township = truth[(truth["indicator"] == indicator) & (truth["estimand"] == "att_township")]
    true_att = per_township.set_index("group").loc[matched, "att"].mean()
    assert att.ci_low <= true_att <= att.ci_high, (att.estimate, true_att)
    naive = twfe(d, **keys).effects[0]
    overall = truth[(truth["indicator"] == indicator) & (truth["estimand"] == "att")]["att"].iloc[0]
    assert not naive.ci_low <= overall <= naive.ci_high


def test_balance_before_and_after_matching(demo):
    frames, _ = demo
    d = frames[INDICATORS[0]]
    fit = psm_did(d, outcome="value", unit="township_id", time="time", cohort="first_treat", covariates=SELECTION,
                  caliper=0.2)
    table = balance_table(d, unit="township_id", cohort="first_treat", covariates=SELECTION,
                          weights=fit.diagnostics["weights"]).set_index("covariate")
    assert (table["smd_before"].abs() > 0.1).all(), table["smd_before"]
    assert (table["smd_after"].abs() < 0.1).all(), table["smd_after"]


def test_subgroup_intervals_cover_the_subgroup_truths(demo):
    frames, truth = demo
    covered, total = 0, 0
    for indicator in INDICATORS:
        res = heterogeneity_randomization(frames[indicator], outcome="value", unit="township_id", time="time",
                                          cohort="first_treat", by=["mountainous", "distance_km"],
                                          covariates=[*SELECTION, "health_workers"], pre_periods=12, draws=199,
                                          seed=20163)
        sub = truth[(truth["indicator"] == indicator) & (truth["estimand"] == "att_subgroup")].set_index("group")
        for e in res.effects:
            true_att = sub.at[f"{e.by}:{e.group}", "att"]
            covered += e.ci_low <= true_att <= e.ci_high
            total += 1
        mountainous = [e for e in res.effects if e.by == "mountainous"]
        assert mountainous[0].extra["difference"] < 0  # mountainous townships gain less (truth: half the effect)
    assert total == 8 and covered >= 7, covered
