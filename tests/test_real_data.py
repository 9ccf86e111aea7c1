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
    """A GBK CSV by quarter, or a wide GBK CSV by year (one column per year): every chapter
    runs, the headline covers the truth (the monthly truth: a rate's effect is the same
    whatever the period it is counted over, up to the first treated period's partial exposure)."""
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "outputs"))
    panel, pilots, truth = small_demo()
    coarse, coarse_pilots = to_frequency(panel, pilots, frequency)
    built = write_study(tmp_path / frequency, coarse, coarse_pilots, frequency=frequency, encoding="gbk",
                        truth=truth, wide=frequency == "year")
    if frequency == "year":
        assert pd.read_csv(built.root / "panel.csv", encoding="gbk").columns[-1] == "2023"
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


# ----------------------------------------------------------------------------- an export as offices make it

ORDER = ["county", "township_id", "township_name", "period", "population", "visits_total", "visits_in_county",
         "visits_primary", "admissions_total", "inpatient_cost_total", "referrals_out_county",
         "thc_outpatient_visits", "thc_admissions", "services_offered", "referrals_down"]
PARENTS = ["县区", "乡镇编码", "乡镇名称", "月份", "常住人口", "门诊", None, None, "住院", None, "县外转诊人次",
           "卫生院", None, None, "下转人次"]
CHILDREN = [None] * 5 + ["总诊疗人次", "县域内就诊人次", "基层诊疗人次", "人次", "总费用", None,
                         "门急诊人次", "住院人次", "技术项目数", None]
UNITS = [None, None, None, None, "人", "人次", "人次", "人次", "人次", "万元", "人次", "人次", "人次", "项", "人次"]
MAPPING = {"县区": "county", "乡镇编码": "township_id", "乡镇名称": "township_name", "月份": "period",
           "常住人口": "population", "总诊疗人次": "visits_total", "县域内就诊人次": "visits_in_county",
           "基层诊疗人次": "visits_primary", "住院/人次": "admissions_total", "总费用": "inpatient_cost_total",
           "县外转诊人次": "referrals_out_county", "门急诊人次": "thc_outpatient_visits", "卫生院/住院人次": "thc_admissions",
           "技术项目数": "services_offered", "下转人次": "referrals_down"}


def _office_export(root, panel, pilots):
    """A workbook as a county office exports it: a cover sheet first, then the report sheet
    with a title row, a two-level merged header, a unit row (cost in 万元), county total
    rows after each county, a population 1,000 times too large in one month, and the gaps of
    :func:`with_gaps`; the pilot list as a GBK CSV with a title line."""
    import openpyxl

    root.mkdir(parents=True, exist_ok=True)
    data = panel[ORDER].copy()
    data["population"] = data["population"].astype(float)
    data.loc[data.index[40], "population"] *= 1000  # a typing slip: thousands of residents too many
    data["inpatient_cost_total"] = pd.to_numeric(data["inpatient_cost_total"]) / 10_000
    rows = []
    for county, block in data.groupby("county", sort=False):
        rows += block.astype(object).values.tolist()
        numeric = block[ORDER[4:]].apply(pd.to_numeric, errors="coerce")
        rows.append([county, "", "合计", "", *numeric.sum().round(4).tolist()])
    wb = openpyxl.Workbook()
    wb.active.title = "封面"
    wb.active.append(["某市乡镇卫生院一体化试点监测数据（2016-2023）"])
    ws = wb.create_sheet("月报")
    ws.append(["某市2016-2023年乡镇卫生院运行情况月报表"])
    for r in (PARENTS, CHILDREN, UNITS, *rows):
        ws.append(["" if v is None else v for v in r] if r is UNITS else r)
    for rng in ("A1:O1", "F2:H2", "I2:J2", "L2:N2", *[f"{c}2:{c}3" for c in "ABCDEKO"]):
        ws.merge_cells(rng)
    wb.save(root / "panel.xlsx")
    body = pilots.rename(columns={"township_id": "乡镇编码", "pilot_start": "试点开始月份", "model": "整合模式"})
    (root / "pilots.csv").write_bytes(("试点乡镇名单,,\n" + body.to_csv(index=False)).encode("gbk"))


@pytest.mark.batch
def test_batch_on_an_office_export_with_gaps(tmp_path, monkeypatch):
    """Title row, two-level merged header, unit row (万元), data on the second sheet,
    county total rows (dropped as the study says), an empty cell and a township missing
    three months: the batch runs every chapter; the headline covers the truth for the
    visit rate and the exact zero effect on cost per admission."""
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "outputs"))
    panel, pilots, truth = small_demo()
    root = tmp_path / "office"
    _office_export(root, with_gaps(panel, pilots), pilots)
    built = write_study(root / "unused", panel.head(1), pilots, indicators=(INDICATOR, "cost_per_admission"))
    config = yaml.safe_load(built.study.read_text(encoding="utf-8"))
    config["data"] = {"panel": "../panel.xlsx", "pilots": "../pilots.csv", "panel_sheet": "月报",
                      "total_rows": "drop", "columns": MAPPING,
                      "pilot_columns": {"乡镇编码": "township_id", "试点开始月份": "pilot_start", "整合模式": "model"}}
    config["window"] = {"start": "2016-01", "end": "2023-12"}
    built.study.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")

    loaded = _load(built.study)
    assert loaded.units["inpatient_cost_total"] == "万元" and len(loaded.dropped_rows) == 2
    assert loaded.n_townships == 24 and len(loaded.gaps) == 1
    jump = panel.iloc[40]
    assert any(f"township {jump['township_id']}" in n and str(jump["period"]) in n and "population" in n
               for n in loaded.notes), loaded.notes
    cost = did_frame(loaded, {i.id: i for i in loaded.indicators}["cost_per_admission"])["value"]
    assert 1_000 < cost.median() < 100_000  # yuan, not 万元

    _batch_ok(built)
    card = _headline(built)
    assert card["ci_low"] <= _true_att(truth) <= card["ci_high"], (card["ci_low"], card["ci_high"])
    from evaluation.paths import study_output_dir
    from evaluation.report.store import ResultsStore

    rows = ResultsStore(study_output_dir("messy") / "results").read("summary.scorecard", None)
    cost_row = rows.tables["scorecard"].set_index("indicator").loc["cost_per_admission"]
    assert cost_row["ci_low"] <= 0 <= cost_row["ci_high"]


def test_wide_annual_csv_with_year_headers_equals_the_long_table(tmp_path):
    """A wide CSV whose period headers are the text 2016 ... 2023 (found as the header row)."""
    panel, pilots, _ = small_demo()
    coarse, coarse_pilots = to_frequency(panel, pilots, "year")
    wide = _load(write_study(tmp_path / "wide", coarse, coarse_pilots, frequency="year", encoding="gbk",
                             wide=True).study)
    long = _load(write_study(tmp_path / "long", coarse, coarse_pilots, frequency="year").study)
    pd.testing.assert_frame_equal(wide.data.reset_index(drop=True), long.data.reset_index(drop=True))
    assert wide.n_townships == 24 and len(wide.periods) == 8
