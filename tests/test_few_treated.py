"""The one rule for p-values from few treated townships, and subgroup effects by
randomization inference: the rule's effect on a table, the subgroup estimate equal to
randomization inference on the group's sample, its size with 2 pilots in the group, and
the demo report's tables obeying the rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evaluation.estimators.did import effects_by_group, twfe
from evaluation.inference.few_clusters import randomization_inference
from evaluation.inference.few_treated import (
    CLUSTER_ROBUST,
    parse_withheld,
    rests_on_clusters,
    subgroup_randomization,
    withhold_clustered,
)
from evaluation.inference.power import simulate_panel
from evaluation.report.readable import Reader
from evaluation.results import tidy

KEYS = dict(outcome="y", unit="unit", time="time", cohort="first_treat")


def panel(seed: int, effect: float = 0.0) -> pd.DataFrame:
    """8 pilots (model A: 6, model B: 2) and 30 comparison townships, parallel trends."""
    d = simulate_panel(np.random.default_rng(seed), 8, 30, 24, 12, 1.0, 0.3, effect=effect)
    d["model"] = np.where(d["unit"] < 6, "A", np.where(d["unit"] < 8, "B", None))
    return d


def test_the_rule_withholds_only_clustered_inference_from_few_pilots():
    d = panel(1)
    fit = effects_by_group(d, by="model", **KEYS)          # CR1: A has 6 pilots, B has 2
    ri = randomization_inference(d[d["model"].ne("A")], draws=99, seed=1, **KEYS)
    table = tidy([fit, ri])
    out = withhold_clustered(table, min_treated=5)
    b = out[(out["group"] == "B")].iloc[0]
    a = out[(out["group"] == "A")].iloc[0]
    assert b["estimate"] == table.loc[table["group"] == "B", "estimate"].iloc[0]
    assert all(math.isnan(b[c]) for c in ("std_error", "ci_low", "ci_high", "p_value"))
    assert parse_withheld(b["inference"]) == (2, 5) and not rests_on_clusters(b["inference"])
    assert a["p_value"] == table.loc[table["group"] == "A", "p_value"].iloc[0]      # 6 pilots: kept
    assert out.iloc[-1]["p_value"] == ri.effects[0].p_value                         # RI from 2 pilots: kept
    assert Reader("zh").method(b["inference"]).startswith("不报告：仅2个试点乡镇（少于5个）")
    assert table.loc[table["group"] == "B", "p_value"].notna().all(), "the input is not changed"


def test_subgroup_effect_is_randomization_inference_on_the_groups_sample():
    d = panel(2, effect=0.8)
    res = subgroup_randomization(d, by="model", draws=199, seed=3, **KEYS)
    for e in res.effects:
        sample = d[d["model"].eq(e.group) | (d["first_treat"] == 0)]
        ri = randomization_inference(sample, draws=199, seed=3, **KEYS).effects[0]
        assert (e.estimate, e.p_value, e.ci_low, e.ci_high) == (ri.estimate, ri.p_value, ri.ci_low, ri.ci_high)
        assert e.estimate == pytest.approx(twfe(sample, **KEYS).effects[0].estimate, rel=1e-10)
        assert (e.by, e.n_treated) == ("model", {"A": 6, "B": 2}[e.group])
    # 2 pilots among 32 townships: every assignment (496), exact
    b = next(e for e in res.effects if e.group == "B")
    assert b.extra["exact"] and b.extra["assignments"] == 496 and b.p_floor == pytest.approx(1 / 496)


def test_size_of_a_two_pilot_subgroup():
    """No effect, 60 seeded panels: the subgroup test of the 2-pilot model rejects at most
    7 times (12%; exact size 5%, binomial SE 2.8 points); the CR1 test of the same group in
    the pooled regression rejects at least 15 times (it rejected 32% with 2 pilots in
    docs/power.md)."""
    ri = cr1 = 0
    for r in range(60):
        d = panel(1000 + r)
        ri += next(e for e in subgroup_randomization(d, by="model", draws=99, seed=r, **KEYS).effects
                   if e.group == "B").p_value <= 0.05
        cr1 += next(e for e in effects_by_group(d, by="model", **KEYS).effects if e.group == "B").p_value <= 0.05
    assert ri <= 7 and cr1 >= 15


@pytest.mark.batch
def test_no_page_of_the_demo_shows_cluster_robust_inference_from_few_pilots(demo_batch):
    """The rule on the demo's pages: no effect table row names CR1 or influence-function
    inference with fewer pilots than very_few_pilots (5); the subgroup tables use
    randomization inference; and the stored subgroup effects have 1 to 5 pilots each."""
    from evaluation.report.store import ResultsStore

    code, folder = demo_batch
    assert code == 0
    store = ResultsStore(folder / "results")
    subgroup_rows = 0
    for result in store.results():
        effects = result.effects
        if effects is None or effects.empty:
            continue
        shown = withhold_clustered(effects, min_treated=5)
        few = pd.to_numeric(shown["n_treated"], errors="coerce") < 5
        assert not (shown["inference"].map(rests_on_clusters) & few & shown["p_value"].notna()).any(), result.section
        if result.section == "did.twfe":
            sub = effects[effects["section"] == "subgroups"]
            subgroup_rows += len(sub)
            assert sub["inference"].str.startswith("randomization inference").all()
    assert subgroup_rows > 0
    pages = " ".join(p.read_text(encoding="utf-8") for p in folder.glob("*did*.html"))
    assert "CR1 聚类稳健标准误" in pages or "cluster-robust CR1" in pages      # kept where enough pilots
    assert "不予报告" in pages or "unreliable and not shown" in pages       # the note under a withheld row


@pytest.mark.batch
def test_the_did_page_shows_every_estimator_side_by_side(demo_batch):
    """Issue #16 item 4 on the demo's pages: the DiD chapter's table has TWFE,
    Callaway-Sant'Anna, imputation, Sun-Abraham and extended TWFE (and its Poisson rate
    ratio for a count indicator), and the stored event studies of the new estimators."""
    from evaluation.report.store import ResultsStore

    code, folder = demo_batch
    assert code == 0
    store = ResultsStore(folder / "results")
    for indicator, poisson in (("county_internal_visit_rate", True), ("cost_per_admission", False)):
        res = store.read("did.staggered_estimators", indicator)
        assert not res.not_estimable, res.not_estimable
        sections = set(res.effects["section"])
        assert {"imputation", "sun_abraham", "extended_twfe"} <= sections
        assert ("extended_twfe_poisson" in sections) == poisson
        assert {"plot_imputation", "plot_sun_abraham"} <= set(res.tables)
        page = (folder / f"did__{indicator}.html").read_text(encoding="utf-8")
        for name in ("Sun–Abraham", "Borusyak–Jaravel–Spiess", "Wooldridge"):
            assert name in page, (indicator, name)


@pytest.mark.batch
def test_the_workbook_applies_the_same_rule(demo_batch):
    """The Excel effects sheet: no p-value beside cluster-robust or analytic inference from
    fewer than 5 pilot townships; such rows say why instead."""
    from openpyxl import load_workbook

    code, folder = demo_batch
    assert code == 0
    book = load_workbook(folder / "tables.xlsx", read_only=True)
    sheet = next(ws for ws in book.worksheets if "Effects" in ws.title or "效果" in ws.title)
    rows = sheet.iter_rows(values_only=True)
    header = [str(h or "") for h in next(rows)]
    column = {key: next(i for i, h in enumerate(header) if label in h)
              for key, label in (("inference", "Inference"), ("n_treated", "Pilot townships"), ("p", "p-value"))}
    withheld = 0
    for row in rows:
        inference, pilots, p = (row[column[k]] for k in ("inference", "n_treated", "p"))
        if isinstance(pilots, int | float) and pilots < 5 and isinstance(inference, str):
            clustered = any(prefix in inference for prefix in CLUSTER_ROBUST)  # the English text is kept in every language
            assert not (clustered and p not in (None, "", "—")), row
            withheld += "not shown" in inference
    assert withheld > 0
