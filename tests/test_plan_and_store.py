"""The analysis plan reaches every chapter, each result is computed once, and the summary
shows the chapters' own numbers (read from the results store, never re-estimated)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from evaluation.paths import DEMO_STUDY
from evaluation.report import chapters
from evaluation.report.store import ResultsStore, make_result
from evaluation.results import Effect

INDICATORS = ["county_internal_visit_rate", "thc_admissions_per_1000"]


def _study(tmp_path, name: str, **analysis) -> str:
    """The demo study with two indicators and the given analysis keys (dotted paths)."""
    config = yaml.safe_load(DEMO_STUDY.read_text(encoding="utf-8"))
    config["id"] = name
    config["indicators"] = INDICATORS
    for key in ("panel", "pilots", "truth"):
        config["data"][key] = str((DEMO_STUDY.parent / config["data"][key]).resolve())
    table = config["covariates"]["table"]
    table["file"] = str((DEMO_STUDY.parent / table["file"]).resolve())
    config["analysis"].pop("mechanisms")  # its channels are not among these two indicators
    for dotted, value in analysis.items():
        node = config["analysis"]
        *path, last = dotted.split("__")
        for part in path:
            node = node[part]
        node[last] = value
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return str(path)


def _context(tmp_path, name="plan", indicator=INDICATORS[0], **analysis):
    study = _study(tmp_path, name, **analysis)
    return chapters.setup(study, indicator, fast=True, results_dir=tmp_path / f"results-{name}")


# ----------------------------------------------------------------------------- the store

def test_store_round_trip_is_exact_and_stale_results_are_not_read(tmp_path):
    store = ResultsStore(tmp_path)
    effect = Effect.from_normal("att", 1 / 3, 0.1234567890123, method="m", inference="i", n_obs=10, indicator="x")
    result = make_result("did.test", "x", [effect], tables={"plot": pd.DataFrame({"a": [np.pi]})},
                         values={"p": np.float64(0.25), "missing": float("nan")})
    result.key = "k1"
    store.write(result)
    back = store.read("did.test", "x", "k1")
    assert back.effects["estimate"].iloc[0] == 1 / 3 and back.effects["std_error"].iloc[0] == 0.1234567890123
    assert back.tables["plot"]["a"].iloc[0] == np.pi and back.values == {"p": 0.25, "missing": None}
    assert store.read("did.test", "x", "another key") is None  # made with other settings
    assert not list(tmp_path.glob("x/.*"))  # no temporary folder left behind


def test_a_store_object_reads_a_result_once_and_sees_it_rewritten(tmp_path, monkeypatch):
    """A store object parses a result's files once (the Word report and the workbook ask
    for the same ones many times) and parses them again when the result is rewritten, by
    this or another store object; what a reader changes in its copy is not seen by the next."""
    store, other = ResultsStore(tmp_path), ResultsStore(tmp_path)
    result = make_result("did.test", "x", [Effect.from_normal("att", 1.0, 0.5, method="m", inference="i", n_obs=10)],
                         tables={"plot": pd.DataFrame({"a": [1]})},
                         values={"v": [1, 2]})
    result.key = "k1"
    store.write(result)
    parsed = []
    real = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: parsed.append(a[0]) or real(*a, **k))
    first = store.read("did.test", "x")
    first.effects.loc[0, "estimate"] = 99.0
    first.tables["plot"].loc[0, "a"] = 99
    first.values["v"].append(3)
    second = store.read("did.test", "x", "k1")
    assert len(parsed) == 2  # effects.csv and one table, once
    assert second.effects["estimate"].iloc[0] == 1.0 and second.tables["plot"]["a"].iloc[0] == 1
    assert second.values == {"v": [1, 2]}
    assert store.read("did.test", "x", "k2") is None  # the key still checked
    result.effects.loc[0, "estimate"] = 2.0
    result.key = "k2"
    other.write(result)  # rewritten by another store object
    third = store.read("did.test", "x", "k2")
    assert len(parsed) == 4 and third.effects["estimate"].iloc[0] == 2.0


def test_each_section_is_computed_once(tmp_path, monkeypatch):
    ctx = _context(tmp_path)
    calls = []
    real = chapters.SECTIONS["trends"]
    monkeypatch.setitem(chapters.SECTIONS, "trends", lambda c: calls.append(1) or real(c))
    first = ctx.result("trends")
    second = ctx.result("trends")
    assert len(calls) == 1 and first.values == second.values


# ----------------------------------------------------------------------------- summary = chapters

def _forbid_estimation(monkeypatch):
    """Make every estimator the sections call raise: whatever runs now only reads the store."""
    def refuse(*args, **kwargs):
        raise AssertionError("the summary re-estimated")

    for name in ("callaway_santanna", "event_study", "twfe", "randomization_inference", "synthetic_did",
                 "honest_sensitivity", "subgroup_randomization", "pretrend_randomization", "bacon_decomposition"):
        monkeypatch.setattr(chapters, name, refuse)


@pytest.mark.parametrize("cluster", ["township", "county"])
def test_summary_numbers_are_the_chapters_numbers(tmp_path, monkeypatch, cluster):
    """The scorecard's numbers equal the stored results the chapter pages show (``==``),
    and the pages show them as the Reader writes them."""
    study = _study(tmp_path, f"equal_{cluster}", cluster=cluster)
    results = tmp_path / "results"
    shown = {}
    for ind in INDICATORS:
        did_ctx = chapters.setup(study, ind, fast=True, results_dir=results)
        did = chapters.did(did_ctx)  # what the DiD page shows
        inference = chapters.inference_comparison(did_ctx)  # what the robustness page shows
        chapters.synthetic_designs(did_ctx)
        chapters.parallel_trends_sensitivity(did_ctx)
        stored = {section: did_ctx.result(section) for section in (
            "did.callaway_santanna", "did.event_study", "robustness.randomization", "robustness.synthetic_did",
            "robustness.smoothness")}
        shown[ind] = (did, inference, stored, did_ctx)
        assert did_ctx.settings.cluster == ("county" if cluster == "county" else "township_id")
    _forbid_estimation(monkeypatch)
    summary_ctx = chapters.setup(study, None, fast=True, results_dir=results)
    card = chapters.summary(summary_ctx)["scorecard"].set_index("indicator")
    for ind, (did, inference, stored, ctx) in shown.items():
        row, r = card.loc[ind], ctx.reader
        headline = stored["did.callaway_santanna"].effect("att", section="simple")
        for column in ("estimate", "ci_low", "ci_high", "p_value"):
            assert row[{"estimate": "att"}.get(column, column)] == headline[column], (ind, column)
        assert did["cs_simple"].iloc[0][r.header("estimate")] == r.effect(headline["estimate"], ctx.indicator)
        assert row["pretrend_p"] == stored["did.event_study"].values["pretrend_p"]
        floor = stored["did.event_study"].values["pretrend_p_floor"]
        assert r.p(row["pretrend_p"], floor) in did["pretrend"][1].iloc[:, 1].tolist()
        ri = stored["robustness.randomization"].effects.iloc[0]
        assert row["ri_p_value"] == ri["p_value"] and row["headline_p"] == ri["p_value"]  # few pilots: RI headline
        assert r.p(ri["p_value"], ri["p_floor"]) in inference[r.header("p_value")].tolist()
        sdid = stored["robustness.synthetic_did"].effects.iloc[0]
        assert (row["sdid_att"], row["sdid_ci_low"], row["sdid_ci_high"]) == (sdid["estimate"], sdid["ci_low"],
                                                                               sdid["ci_high"])
        m0 = stored["robustness.smoothness"].effects.iloc[1]  # the first bound value, M = 0
        assert (row["trend_ci_low"], row["trend_ci_high"]) == (m0["ci_low"], m0["ci_high"])
        assert row["n_pilots"] == headline["n_treated"]
    # the verdict quotes the chapter's numbers
    assert card.iloc[0]["verdict_en"].count("CI") >= 2


def test_cluster_reaches_the_pretrend_test(tmp_path):
    township, county = _context(tmp_path, "twn"), _context(tmp_path, "cty", cluster="county")
    # the cluster reaches the cluster-robust F shown beside the pre-trend test; the
    # randomization test permutes townships whatever the cluster
    assert (township.result("did.event_study").values["pretrend_p_cluster_robust"]
            != county.result("did.event_study").values["pretrend_p_cluster_robust"])
    twfe = [ctx.result("did.twfe").effect("att", section="twfe") for ctx in (township, county)]
    assert twfe[0]["std_error"] != twfe[1]["std_error"]
    assert twfe[0]["estimate"] == pytest.approx(twfe[1]["estimate"], abs=1e-12)
    assert chapters.did(township)["pretrend"][1].iloc[2, 1] != chapters.did(county)["pretrend"][1].iloc[2, 1]


# ----------------------------------------------------------------------------- each key changes the page

def test_event_window_changes_the_event_study(tmp_path):
    default = chapters.did(_context(tmp_path, "ew_default"))
    short = chapters.did(_context(tmp_path, "ew_short", event_window=[-6, 12]))
    assert len(default["cs_dynamic_plot"]) == 37 and len(short["cs_dynamic_plot"]) == 19  # event times -12..24, -6..12
    assert default["event_study_plot"]["event_time"].max() == 24 and short["event_study_plot"]["event_time"].max() == 12


def test_placebo_shift_changes_the_placebo_row(tmp_path):
    def placebo(ctx):
        effects = ctx.result("robustness.checks").effects
        row = effects[effects["estimand"] == "placebo_att"].iloc[0]
        page = chapters.robustness(ctx)
        return row, page[page.iloc[:, 0].str.contains("安慰剂")].iloc[0, 0]

    (year, year_label) = placebo(_context(tmp_path, "pl_year"))
    (half, half_label) = placebo(_context(tmp_path, "pl_half", placebo_shift="6 months"))
    assert "12个月" in year_label and "6个月" in half_label and "6 months early" in half_label
    assert year["estimate"] != half["estimate"]


def test_draws_change_the_resampling_results(tmp_path):
    few = _context(tmp_path, "dr_few")
    more = _context(tmp_path, "dr_more", fast_draws__randomization=399, fast_draws__wild_bootstrap=1999)
    ri = [ctx.result("robustness.randomization").effects.iloc[0] for ctx in (few, more)]
    assert "200 assignments" in ri[0]["inference"] and "400 assignments" in ri[1]["inference"]
    assert ri[0]["p_value"] != ri[1]["p_value"]
    assert (ri[0]["p_floor"], ri[1]["p_floor"]) == (1 / 200, 1 / 400)


def test_notes_quote_the_plan(tmp_path):
    ctx = _context(tmp_path, "notes", placebo_shift="6 months", its__phase_in=3)
    values = ctx.note_values()
    assert values["placebo_en"] == "6 months" and values["phase_in_zh"] == "3个月"
    for key, (*_, zh, en) in chapters.NOTES.items():
        assert zh.format(**values) and en.format(**values), key


# ----------------------------------------------------------------------------- placebo tests (issue #16, item 5)

def test_randomization_distribution_figure_marks_the_stored_estimate(tmp_path):
    """The placebo figure draws the stored randomization draws (the observed assignment
    first) and marks the stored estimate with its randomization p-value."""
    from matplotlib.lines import Line2D

    ctx = _context(tmp_path, "ri_figure")
    figure = chapters.placebo_tests(ctx)["figure"]
    ri = ctx.result("robustness.randomization")
    effect, draws = ri.effects.iloc[0], ri.tables["draws"]["permuted_estimate"]
    assert len(draws) == 200 and "200 assignments" in effect["inference"]  # fast: 199 draws and the observed one
    assert draws.iloc[0] == pytest.approx(effect["estimate"], abs=1e-12)
    assert effect["p_value"] == pytest.approx((abs(draws) >= abs(effect["estimate"]) - 1e-12).mean(), abs=1e-12)
    marked = [line for line in figure.axes[0].get_lines() if isinstance(line, Line2D)
              and len(set(line.get_xdata())) == 1 and line.get_xdata()[0] != 0]
    assert [line.get_xdata()[0] for line in marked] == [effect["estimate"]]
    legend = " ".join(t.get_text() for t in figure.axes[0].get_legend().get_texts())
    assert ctx.reader.p(effect["p_value"], effect["p_floor"]).replace("\u00a0", " ") in legend


def test_fake_timing_moves_the_start_one_and_two_shifts_earlier(tmp_path):
    from evaluation.diagnostics.robustness import placebo_in_time

    ctx = _context(tmp_path, "fake_timing")
    table = chapters.placebo_tests(ctx)["fake_timing"]
    stored = ctx.result("robustness.fake_timing").effects
    for row, shift in zip(stored.to_dict("records"), (12, 24), strict=True):
        direct = placebo_in_time(ctx.frame, shift=shift, control_group="never_treated").effects[0]
        assert row["estimate"] == direct.estimate and row["ci_low"] == direct.ci_low
    labels = table.iloc[:, 0].tolist()
    assert "提前12个月（假开始 2017-07）" in labels[0] and "24 months early (fake start 2016-07)" in labels[1]
    # a shift that leaves no pre-period is named, the other still shown
    longer = chapters.placebo_tests(_context(tmp_path, "fake_long", placebo_shift="2 years"))["fake_timing"]
    assert isinstance(longer, tuple) and len(longer[0]) == 1 and "not estimated" in longer[1]
