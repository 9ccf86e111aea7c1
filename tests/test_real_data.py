"""A researcher's real data, end to end: incomplete panels are analysed (not refused),
townships can be excluded, the gap policy is the study's, the batch validates first, and
quarterly and annual exports run every chapter.

The end-to-end studies are a small synthetic prefecture (tests/study_builders.py: 24
townships, 10 pilots in 3 cohorts) whose true effects are known, made messy as users'
exports are; each batch must finish with no failed run and its headline interval must
cover the effect that was built in.
"""

from __future__ import annotations

import hashlib
import warnings

import pandas as pd
import pytest
import yaml
from study_builders import small_demo, to_frequency, with_gaps, write_study

from evaluation.cli import main
from evaluation.data.frames import complete_townships, did_frame
from evaluation.data.panel import PanelGapWarning, load_panel
from evaluation.study.config import load_study

INDICATOR = "county_internal_visit_rate"


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PanelGapWarning)
        return load_panel(load_study(path))


@pytest.fixture
def gappy(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "outputs"))
    panel, pilots, truth = small_demo()
    return write_study(tmp_path / "gappy", with_gaps(panel, pilots), pilots, truth=truth)


def _set(built, **changes):
    config = yaml.safe_load(built.study.read_text(encoding="utf-8"))
    config.update(changes)
    built.study.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")


# ----------------------------------------------------------------------------- the gap policy

def test_incomplete_townships_are_listed_not_refused(gappy, capsys):
    assert main(["validate", str(gappy.study)]) == 0
    out = capsys.readouterr().out
    pilot = gappy.pilots["township_id"].iloc[0]
    assert "incomplete townships" in out and f"{pilot} (3 missing period(s), 0 empty cell(s))" in out
    assert "(0 missing period(s), 1 empty cell(s))" in out
    panel = _load(gappy.study)
    incomplete = panel.incomplete(panel.indicators[0]).set_index("township_id")
    assert incomplete.loc[pilot, "missing_labels"] == "2019-03, 2019-04, 2019-05"
    assert incomplete["empty_cells"].sum() == 1


def test_methods_needing_a_complete_panel_get_the_complete_townships(gappy):
    panel = _load(gappy.study)
    frame = did_frame(panel, panel.indicators[0])
    balanced, dropped = complete_townships(frame)
    assert len(dropped) == 2 and dropped["pilot"].sum() == 1
    assert dropped.set_index("township_id")["missing_periods"].max() == 3
    assert dropped["empty_values"].sum() == 1
    assert balanced["township_id"].nunique() == 22
    assert len(balanced) == 22 * frame["time"].nunique() and balanced["value"].notna().all()


def test_gap_policy_fail_rejects_naming_the_townships(gappy, capsys):
    _set(gappy, townships={"gaps": "fail"})
    assert main(["validate", str(gappy.study)]) == 2
    err = capsys.readouterr().err
    pilot = gappy.pilots["township_id"].iloc[0]
    assert "panel.csv" in err and "townships.gaps" in err and pilot in err and "2019-03" in err


def test_gap_policy_drop_leaves_the_incomplete_townships_out(gappy, capsys):
    _set(gappy, townships={"gaps": "drop"})
    assert main(["validate", str(gappy.study)]) == 0
    out = capsys.readouterr().out
    assert "left out of the analysis: 2 township(s)" in out and "complete panel" in out
    panel = _load(gappy.study)
    assert panel.n_townships == 22 and panel.gaps.empty
    assert set(panel.excluded["pilot"]) == {True, False}
    assert len(panel.pilots) == len(gappy.pilots) - 1


def test_townships_excluded_by_id_and_by_name(gappy):
    panel = gappy.panel
    comparison = panel.loc[~panel["township_id"].isin(gappy.pilots["township_id"]), ["township_id", "township_name"]]
    by_id, by_name = comparison.drop_duplicates().iloc[-1], comparison.drop_duplicates().iloc[-2]
    _set(gappy, townships={"exclude": [int(by_id["township_id"]), by_name["township_name"]]})
    loaded = _load(gappy.study)
    assert loaded.n_townships == 22
    assert list(loaded.excluded["reason"]) == ["townships.exclude"] * 2
    assert not loaded.data["township_id"].isin([by_id["township_id"]]).any()


def test_unknown_excluded_township_is_rejected(gappy, capsys):
    _set(gappy, townships={"exclude": ["不存在镇"]})
    assert main(["validate", str(gappy.study)]) == 2
    err = capsys.readouterr().err
    assert "townships.exclude" in err and "不存在镇" in err and "panel.csv" in err


def test_excluding_every_pilot_is_rejected(gappy, capsys):
    _set(gappy, townships={"exclude": list(gappy.pilots["township_id"])})
    assert main(["validate", str(gappy.study)]) == 2
    assert "every pilot township was left out" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the batch

def _tree_hashes(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_batch_on_invalid_data_changes_nothing(gappy, capsys):
    out = gappy.root.parent / "outputs" / "messy"
    out.mkdir(parents=True)
    (out / "index.html").write_text("previous report", encoding="utf-8")
    before = _tree_hashes(out.parent)
    _set(gappy, townships={"gaps": "fail"})
    assert main(["batch", str(gappy.study), "--fast"]) == 2
    assert "townships.gaps" in capsys.readouterr().err
    assert _tree_hashes(out.parent) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["messy"]  # no temporary folder left


def test_batch_rejects_unknown_indicators_and_chapters(gappy, capsys):
    assert main(["batch", str(gappy.study), "--indicators", "no_such"]) == 2
    assert "no_such" in capsys.readouterr().err
    assert main(["batch", str(gappy.study), "--chapters", "did", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "robustness" in err


def _headline(built):
    from evaluation.paths import study_output_dir
    from evaluation.report.store import ResultsStore

    card = ResultsStore(study_output_dir("messy") / "results").read("summary.scorecard", None)
    return card.tables["scorecard"].set_index("indicator").loc[INDICATOR]


def _batch_ok(built):
    from evaluation.report.batch import run_batch

    manifest = run_batch(built.study, jobs=2, fast=True, progress=False)
    failed = {r["stem"]: r["error"][-600:] for r in manifest["runs"] if r["status"] != "ok"}
    assert not failed, failed
    return manifest


def _true_att(truth):
    return float(truth.query("indicator == @INDICATOR and estimand == 'att'")["att"].iloc[0])


@pytest.mark.batch
def test_batch_on_an_incomplete_panel_runs_every_chapter_and_covers_the_truth(gappy):
    manifest = _batch_ok(gappy)
    assert len(manifest["runs"]) == 6
    row = _headline(gappy)
    assert row["ci_low"] <= _true_att(gappy.truth) <= row["ci_high"], (row["ci_low"], row["ci_high"])


@pytest.mark.batch
@pytest.mark.parametrize("frequency", ["quarter", "year"])
def test_batch_on_quarterly_and_annual_exports(tmp_path, monkeypatch, frequency):
    """A GBK CSV by quarter, or by year: every chapter runs, the headline covers the truth
    (the monthly truth: a rate's effect is the same whatever the period it is counted over,
    up to the first treated period's partial exposure)."""
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "outputs"))
    panel, pilots, truth = small_demo()
    coarse, coarse_pilots = to_frequency(panel, pilots, frequency)
    built = write_study(tmp_path / frequency, coarse, coarse_pilots, frequency=frequency, encoding="gbk",
                        truth=truth)
    _batch_ok(built)
    row = _headline(built)
    assert row["ci_low"] <= _true_att(truth) <= row["ci_high"], (row["ci_low"], row["ci_high"])


# ----------------------------------------------------------------------------- what the data cannot support

def test_a_method_the_data_cannot_support_is_stated_not_fatal(tmp_path):
    """Annual data with two pre-years: the ITS (8 pre-period points needed) and the
    synthetic control (5) cannot be fitted. The results store keeps the reason, the
    chapter shows it, and the other sections are estimated."""
    from evaluation.report import chapters

    panel, pilots, _ = small_demo()
    built = write_study(tmp_path / "year", *to_frequency(panel, pilots, "year"), frequency="year")
    ctx = chapters.setup(built.study, INDICATOR, fast=True, results_dir=tmp_path / "results")
    its = ctx.result("its")
    assert "pre-period" in its.not_estimable and its.effects.empty
    assert chapters.its(ctx)["figure"].startswith("未能估计 / not estimated — its: ITSError")
    stored = chapters.ResultsStore(tmp_path / "results").read("its", INDICATOR, ctx.key("its"))
    assert stored.not_estimable == its.not_estimable  # read back from result.json
    assert "EstimationError" in ctx.result("robustness.synthetic_control").not_estimable
    assert ctx.result("did.callaway_santanna").not_estimable is None


def test_summary_keeps_the_other_indicators_when_one_fails(tmp_path, monkeypatch):
    from evaluation.errors import EstimationError
    from evaluation.report import chapters

    panel, pilots, _ = small_demo()
    built = write_study(tmp_path / "two", *to_frequency(panel, pilots, "year"), frequency="year",
                        indicators=(INDICATOR, "cost_per_admission"))
    real = chapters.SECTIONS["did.callaway_santanna"]

    def failing(ctx):
        if ctx.indicator.id == "cost_per_admission":
            raise EstimationError("no comparison cohort left")
        return real(ctx)

    monkeypatch.setitem(chapters.SECTIONS, "did.callaway_santanna", failing)
    ctx = chapters.setup(built.study, None, fast=True, results_dir=tmp_path / "results")
    card = chapters.summary(ctx)["scorecard"].set_index("indicator")
    assert bool(card.loc[INDICATOR, "estimated"]) and not bool(card.loc["cost_per_admission", "estimated"])
    assert "no comparison cohort left" in card.loc["cost_per_admission", "verdict_en"]
    assert card.loc[INDICATOR, "ci_low"] < card.loc[INDICATOR, "att"] < card.loc[INDICATOR, "ci_high"]
    assert chapters.forest_figure({"scorecard": card.reset_index()}) is not None


def test_an_indicator_empty_in_every_row_is_stated_on_its_pages(tmp_path):
    from evaluation.report import chapters

    panel, pilots, _ = small_demo()
    panel["services_offered"] = ""
    built = write_study(tmp_path / "empty", *to_frequency(panel.assign(services_offered=0.0), pilots, "year"),
                        frequency="year", indicators=(INDICATOR, "services_offered"))
    frame = pd.read_csv(built.root / "panel.csv", dtype=str)
    frame["开展技术项目数"] = ""
    frame.to_csv(built.root / "panel.csv", index=False)
    ctx = chapters.setup(built.study, "services_offered", fast=True, results_dir=tmp_path / "results")
    did = chapters.did(ctx)
    assert did["cs_simple"].startswith("未能估计 / not estimated — did.callaway_santanna")
    assert "24 township(s) lack periods or values" in chapters.coverage_note(ctx)
    card = chapters.summary(chapters.setup(built.study, None, fast=True, results_dir=tmp_path / "results"))
    rows = card["scorecard"].set_index("indicator")
    assert not rows.loc["services_offered", "estimated"] and rows.loc[INDICATOR, "estimated"]
