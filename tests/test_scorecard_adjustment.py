"""p-values adjusted across the scorecard's indicators from the headline's own resampling:
the randomization draws for a TWFE headline, a multiplier bootstrap of the influence
functions for a Callaway-Sant'Anna headline; Holm and BH beside them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from evaluation.estimators.staggered import callaway_santanna
from evaluation.inference.few_clusters import randomization_inference
from evaluation.inference.multiple import randomization_romano_wolf
from evaluation.paths import DEMO_STUDY
from evaluation.report.scorecard import adjust_across_indicators
from evaluation.report.store import make_result
from evaluation.study.config import load_study

KEYS = dict(unit="unit", time="time", cohort="first_treat")


@pytest.fixture(scope="module")
def settings():
    return load_study(DEMO_STUDY).settings(fast=True)


@pytest.fixture(scope="module")
def panel():
    """30 townships x 12 periods, 8 pilots from period 6: outcome a has an effect of 3,
    b none, c an effect of 0.3 and shares b's noise (the indicators are correlated)."""
    rng = np.random.default_rng(5)
    units, periods = 30, 12
    u = np.repeat(np.arange(units), periods)
    t = np.tile(np.arange(1, periods + 1), units)
    start = np.where(np.arange(units) < 8, 6, 0)[u]
    post = (start > 0) & (t >= start)
    common = rng.normal(0, 1, len(u))
    return pd.DataFrame({"unit": u, "time": t, "first_treat": start,
                         "a": rng.normal(0, 0.3, units)[u] + 3.0 * post + rng.normal(0, 1, len(u)),
                         "b": rng.normal(0, 0.3, units)[u] + common,
                         "c": 0.3 * post + 0.8 * common + rng.normal(0, 0.6, len(u))})


def _card(rows):
    return pd.DataFrame([{"estimated": True, **r} for r in rows])


def test_twfe_headlines_use_the_joint_randomization_draws(panel, settings):
    results, rows = {}, []
    for name in "abc":
        ri = randomization_inference(panel, outcome=name, draws=199, seed=11, **KEYS)
        e = ri.effects[0]
        results[name] = {"robustness.randomization": make_result(
            "robustness.randomization", name, ri, tables={"draws": ri.plot_data[["permuted_estimate"]]},
            values={"assignment_key": "same"})}
        rows.append({"indicator": name, "headline_method": "twfe_randomization", "headline_att": e.estimate,
                     "headline_p": e.p_value})
    out = adjust_across_indicators(_card(rows), results, settings)
    reference = randomization_romano_wolf(
        pd.Series({r["indicator"]: r["headline_att"] for r in rows}),
        permuted=pd.DataFrame({n: results[n]["robustness.randomization"].tables["draws"]["permuted_estimate"]
                               for n in "abc"}))
    assert out["p_romano_wolf"].tolist() == reference["p_romano_wolf"].tolist()
    assert (out["p_romano_wolf"] >= out["headline_p"]).all() and (out["rw_family"] == 3).all()
    assert out["p_romano_wolf_floor"].tolist() == [1 / 200] * 3
    # statsmodels 0.15.0 multipletests: Holm and BH to 1e-12
    assert out["p_holm"].to_numpy() == pytest.approx(multipletests(out["headline_p"], method="holm")[1], abs=1e-12)
    assert out["q_benjamini_hochberg"].to_numpy() == pytest.approx(
        multipletests(out["headline_p"], method="fdr_bh")[1], abs=1e-12)
    # draws made with other assignments are not a family with these
    results["c"]["robustness.randomization"].values["assignment_key"] = "other"
    out = adjust_across_indicators(_card(rows), results, settings)
    assert out["rw_family"].tolist() == [2, 2, 0] and np.isnan(out["p_romano_wolf"].iloc[2])


def test_callaway_santanna_headlines_use_a_multiplier_bootstrap(panel, settings):
    results, rows = {}, []
    for name in "abc":
        simple = callaway_santanna(panel, outcome=name, **KEYS).aggregate("simple")
        e = simple.effects[-1]
        influence = pd.DataFrame({"township_id": simple.influence.index.astype(str),
                                  "influence": simple.influence.iloc[:, -1]})
        results[name] = {"did.callaway_santanna": make_result("did.callaway_santanna", name, simple,
                                                              tables={"influence": influence})}
        rows.append({"indicator": name, "headline_method": "callaway_santanna", "headline_att": e.estimate,
                     "headline_p": e.p_value, "se": e.std_error})
    out = adjust_across_indicators(_card(rows), results, settings)
    # the influence functions reproduce each analytic standard error (1e-12), so the
    # studentized draws are on the headline's scale
    for name, row in zip("abc", rows, strict=True):
        inf = results[name]["did.callaway_santanna"].tables["influence"]["influence"]
        assert np.sqrt((inf**2).sum()) / len(inf) == pytest.approx(row["se"], rel=1e-12)
    # a true effect of 3 stays clear; RW is never below the raw p
    # by more than Monte Carlo error (199 draws: 1/200 resolution plus 3 binomial SEs)
    assert out.loc[0, "p_romano_wolf"] <= 0.01
    slack = 1 / 200 + 3 * np.sqrt(out["headline_p"] * (1 - out["headline_p"]) / 199)
    assert (out["p_romano_wolf"] >= out["headline_p"] - slack).all()
    assert (out["rw_family"] == 3).all() and out["p_romano_wolf_floor"].tolist() == [1 / 200] * 3


def test_no_estimated_rows_give_no_adjustment(settings):
    out = adjust_across_indicators(pd.DataFrame([{"indicator": "a", "estimated": False, "headline_p": np.nan,
                                                  "headline_method": None}]), {}, settings)
    assert out[["p_holm", "q_benjamini_hochberg", "p_romano_wolf"]].isna().all().all()


@pytest.mark.batch
def test_the_demo_scorecard_shows_the_adjusted_p_values(demo_batch):
    """The demo (10 pilots: every headline is TWFE with randomization inference): the
    scorecard holds Romano-Wolf, Holm and BH for every indicator, each at least the raw p
    (Romano-Wolf up to its 1/B resolution), and the summary page and the index show the
    Romano-Wolf column."""
    from evaluation.report.store import ResultsStore

    code, folder = demo_batch
    assert code == 0
    card = ResultsStore(folder / "results").read("summary.scorecard", None).tables["scorecard"]
    assert (card["headline_method"] == "twfe_randomization").all()
    assert (card["rw_family"] == len(card)).all()
    assert (card["p_romano_wolf"] >= card["headline_p"] - 1e-12).all()
    assert (card["p_holm"] >= card["headline_p"] - 1e-12).all()
    assert (card["q_benjamini_hochberg"] >= card["headline_p"] - 1e-12).all()
    for page in ("summary.html", "index.html"):
        assert "Romano–Wolf" in (folder / page).read_text(encoding="utf-8"), page
