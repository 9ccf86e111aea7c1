"""The Excel workbook and CSV tables of a published report, checked against its results
store and manifest (the session's fast demo batch)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from openpyxl import load_workbook

from evaluation.errors import EvaluationInputError
from evaluation.paths import DEMO_STUDY
from evaluation.report.readable import Reader, p_value
from evaluation.report.scorecard import failed_row, finding
from evaluation.report.store import ResultsStore
from evaluation.report.workbook import (
    CSV_FOLDER,
    SHEETS,
    SYNTHETIC_BANNER,
    sheet_name,
    write_csv_tables,
    write_workbook,
)
from evaluation.study.config import load_study

CJK = re.compile(r"[\u4e00-\u9fff]")
INDICATORS = ("county_internal_visit_rate", "referrals_down_per_1000", "cost_per_admission")  # a share first


@pytest.fixture(scope="module")
def study():
    return load_study(DEMO_STUDY)


@pytest.fixture(scope="module")
def report(demo_batch):
    code, folder = demo_batch
    assert code == 0
    return folder


@pytest.fixture(scope="module")
def book_zh(report, study, tmp_path_factory):
    path = write_workbook(report, study, "zh", path=tmp_path_factory.mktemp("xlsx") / "tables-zh.xlsx")
    return load_workbook(path)


def cells(sheet, header_row: int) -> list[dict]:
    """The sheet's rows below ``header_row`` as dicts of cells by header."""
    headers = [c.value for c in sheet[header_row]]
    return [dict(zip(headers, row, strict=True)) for row in sheet.iter_rows(min_row=header_row + 1)]


def test_sheets_in_the_reports_language(book_zh):
    assert book_zh.sheetnames == [zh for zh, _ in SHEETS.values()]
    for sheet in book_zh.worksheets:
        header_row = 3 if sheet.title == "评估总结" else 1  # banner and overall conclusion above
        headers = [c.value for c in sheet[header_row]]
        assert all(isinstance(h, str) and h for h in headers), sheet.title
        assert all(c.font.b for c in sheet[header_row])
        assert sheet.freeze_panes == f"A{header_row + 1}"


def test_sheet_names_are_valid_in_every_language():
    for language in ("zh", "en", "both"):
        for key in SHEETS:
            name = sheet_name(Reader(language), key)
            assert 0 < len(name) <= 31 and not re.search(r"[\[\]:*?/\\]", name), name


def test_scorecard_sheet_equals_the_store(book_zh, report, study):
    card = ResultsStore(report / "results").read("summary.scorecard", None).tables["scorecard"]
    sheet = book_zh["评估总结"]
    assert sheet["A1"].value == SYNTHETIC_BANNER[0]  # the demo is synthetic
    stored = ResultsStore(report / "results").read("summary.scorecard", None).values
    assert sheet["A2"].value == stored["conclusion_zh"]  # 总体结论
    indicators = {i.id: i for i in study.selected_indicators()}
    got = cells(sheet, 3)
    assert len(got) == len(card)
    for row, (_, stored) in zip(got, card.iterrows(), strict=True):
        ind = indicators[stored["indicator"]]
        assert row["指标"].value == ind.name_zh
        assert row["结论"].value == stored["verdict_zh"]
        assert row["结论要点"].value == finding(stored.to_dict())[0]
        assert row["主要方法"].value == stored["headline_label_zh"]
        factor = 100 if ind.unit == "share" else 1
        for column, header in (("headline_att", "效果估计"), ("headline_ci_low", "置信区间下限"),
                               ("headline_ci_high", "置信区间上限")):
            cell = row[header]
            assert isinstance(cell.value, float)
            assert cell.value == pytest.approx(factor * stored[column], rel=1e-12)
            assert cell.number_format == {"share": "0.00", "yuan": "#,##0"}.get(ind.unit, "#,##0.000")
        assert row["效果单位"].value == Reader("zh").unit(ind, change=True)
        assert row["p 值"].value == pytest.approx(stored["headline_p"], rel=1e-12)
        if pd.isna(stored["headline_p_floor"]):
            assert row["p 值"].number_format == '[<0.001]"< 0.001";0.000'
        else:  # reads "≤ 1/(B+1)" at the floor, as the pages do
            floor = stored["headline_p_floor"]
            assert row["p 值"].number_format == f'[<={floor!r}]"{p_value(floor, floor)}";[<0.001]"< 0.001";0.000'

        assert row["试点乡镇数"].value == int(stored["n_pilots"]) and row["试点乡镇数"].number_format == "#,##0"
        if pd.isna(stored["target"]):
            assert row["目标值"].value is None and row["试点达标"].value == "无目标"
        else:
            assert row["目标值"].value == pytest.approx(stored["target"])
            assert row["试点达标"].value == ("达标" if stored["pilot_meets_target"] else "未达标")
            if ind.unit == "share":
                assert row["目标值"].number_format == "0.0%"


def test_every_effect_of_the_store_with_numbers_as_numbers(book_zh, report, study):
    store = ResultsStore(report / "results")
    results = [r for r in store.results() if len(r.effects)]
    sheet = book_zh["全部效果估计"]
    got = cells(sheet, 1)
    assert len(got) == sum(len(r.effects) for r in results)
    for row in got:
        for header in ("估计值", "标准误", "置信区间下限", "置信区间上限", "p 值", "观测数"):
            assert row[header].value is None or isinstance(row[header].value, int | float), header
        if row["指标代码"].value is not None:  # every effect of an indicator's result names it and its unit
            assert row["指标"].value and row["效果单位"].value, row["结果"].value
        for header in ("事件时间", "试点后期数", "观测数", "乡镇数", "试点乡镇数"):
            assert row[header].value is None or isinstance(row[header].value, int), header
    indicators = {i.id: i for i in study.selected_indicators()}
    for indicator in INDICATORS:
        stored = store.read("did.twfe", indicator).effect("att", section="twfe")
        [row] = [r for r in got if r["指标代码"].value == indicator and r["结果"].value == "did.twfe"
                 and r["部分"].value == "twfe"]
        factor = 100 if indicators[indicator].unit == "share" else 1
        assert row["估计值"].value == pytest.approx(factor * stored["estimate"], rel=1e-12)
        assert row["标准误"].value == pytest.approx(factor * stored["std_error"], rel=1e-12)
        assert row["p 值"].value == pytest.approx(stored["p_value"], rel=1e-12)
        assert row["观测数"].value == int(stored["n_obs"])
        assert row["效果单位"].value == Reader("zh").unit(indicators[indicator], change=True)
    # robustness checks leave the effects' indicator column empty: the result's indicator counts
    check = [r for r in got if r["结果"].value == "robustness.checks" and r["指标代码"].value == INDICATORS[0]]
    stored = store.read("robustness.checks", INDICATORS[0]).effects
    assert len(check) == len(stored)
    for row, (_, effect) in zip(check, stored.iterrows(), strict=True):
        if effect["scale"] == "indicator":
            assert row["估计值"].value == pytest.approx(100 * effect["estimate"], rel=1e-12)


def test_no_nan_none_or_booleans_as_text(book_zh):
    for sheet in book_zh.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                if isinstance(cell.value, str):
                    assert cell.value not in ("nan", "NaN", "None", "True", "False", "<NA>"), (sheet.title, cell)


def test_settings_sheet_is_the_analysis_plan(book_zh, report):
    settings = ResultsStore(report / "results").read("did.twfe", "cost_per_admission").settings
    got = {r["设置项"].value: r for r in cells(book_zh["分析设置"], 1)}
    assert set(got) == set(settings)
    assert got["alpha"]["数值"].value == settings["alpha"]
    assert got["cluster"]["数值"].value == settings["cluster"]
    assert got["alpha"]["适用的结果"].value.startswith("全部")


def test_data_quality_and_sources(book_zh, report):
    missing = cells(book_zh["缺失值"], 1)
    assert missing and all(isinstance(r["占比"].value, int | float) and r["占比"].number_format == "0.0%"
                           for r in missing)
    manifest = json.loads((report / "manifest.json").read_text(encoding="utf-8"))
    sources = {r["项目"].value: r for r in cells(book_zh["来源与版本"], 1)}
    assert sources["数据文件：面板"]["SHA-256"].value == manifest["data_files_sha256"]["panel"]
    assert sources["代码版本（git 提交）"]["数值"].value == manifest["git_commit"]
    assert sources["合成数据"]["数值"].value == "是"


def test_english_workbook_has_no_chinese_headers(report, study, tmp_path):
    book = load_workbook(write_workbook(report, study, "en", path=tmp_path / "en.xlsx"))
    assert book.sheetnames == [en for _, en in SHEETS.values()]
    for sheet in book.worksheets:
        header_row = 3 if sheet.title == "Scorecard" else 1
        assert not any(CJK.search(c.value) for c in sheet[header_row]), sheet.title


def hostile_copy(report: Path, tmp_path: Path) -> Path:
    """The report's store and manifest, with townships whose names are formulas."""
    folder = tmp_path / "report"
    folder.mkdir()
    shutil.copytree(report / "results", folder / "results")
    shutil.copy(report / "manifest.json", folder / "manifest.json")
    store = ResultsStore(folder / "results")
    quality = store.read("data_quality", None)
    excluded = quality.tables["excluded"]
    quality.tables["excluded"] = excluded.iloc[0:0].reindex(range(3)).assign(
        township_id=["T1", "T2", "T3"], township_name=['=HYPERLINK("http://x")', "@SUM(A1)", "+1-2"],
        reason=["-bad", "\tx", "fine"], pilot=[True, False, True])
    store.write(quality)
    return folder


def test_formulas_are_defused_in_csv_and_xlsx(report, study, tmp_path):
    folder = hostile_copy(report, tmp_path)
    paths = write_csv_tables(folder, study, "en")
    excluded = folder / CSV_FOLDER / "data_quality_excluded.csv"
    assert excluded in paths
    with open(excluded, encoding="utf-8-sig", newline="") as f:
        got = list(csv.reader(f))
    assert [r[1] for r in got[1:]] == ['\'=HYPERLINK("http://x")', "'@SUM(A1)", "'+1-2"]
    assert [r[2] for r in got[1:]] == ["'-bad", "'\tx", "fine"]
    assert [r[3] for r in got[1:]] == ["Yes", "No", "Yes"]
    with open(folder / CSV_FOLDER / "effects.csv", encoding="utf-8-sig", newline="") as f:
        effects = list(csv.DictReader(f))
    negative = [r["Estimate"] for r in effects if r["Estimate"].startswith("-")]
    assert negative and all(float(v) < 0 for v in negative)  # numbers untouched
    xlsx = write_workbook(folder, study, "en")
    sheet = load_workbook(xlsx)["Excluded townships"]
    names = [sheet.cell(row=i, column=2) for i in (2, 3, 4)]
    assert [c.value for c in names] == ['=HYPERLINK("http://x")', "@SUM(A1)", "+1-2"]
    assert all(c.data_type == "s" for c in names)
    with zipfile.ZipFile(xlsx) as z:
        assert not any("<f>" in z.read(n).decode() for n in z.namelist() if n.startswith("xl/worksheets/"))


def test_csv_tables_equal_the_workbook(report, study, tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    shutil.copytree(report / "results", folder / "results")
    shutil.copy(report / "manifest.json", folder / "manifest.json")
    paths = write_csv_tables(folder, study, "zh")
    assert [p.stem for p in paths] == list(SHEETS)
    assert all(p.read_bytes().startswith(b"\xef\xbb\xbf") for p in paths)  # BOM: Excel keeps the Chinese
    book = load_workbook(write_workbook(folder, study, "zh"))
    with open(folder / CSV_FOLDER / "scorecard.csv", encoding="utf-8-sig", newline="") as f:
        scorecard = list(csv.reader(f))
    sheet = book["评估总结"]
    assert scorecard[0] == [c.value for c in sheet[3]]
    for written, row in zip(scorecard[1:], sheet.iter_rows(min_row=4), strict=True):
        for text, cell in zip(written, row, strict=True):
            if cell.value is None:
                assert text == ""
            elif isinstance(cell.value, int | float):
                assert float(text) == pytest.approx(cell.value, rel=1e-14)  # xlsx keeps 15-16 digits
            else:
                assert text == cell.value
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporary files renamed into place or removed


def test_a_folder_without_manifest_is_an_error(study, tmp_path):
    with pytest.raises(EvaluationInputError, match="manifest.json"):
        write_workbook(tmp_path, study)


def test_a_failed_indicator_and_a_result_made_with_other_settings(report, study, tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    shutil.copytree(report / "results", folder / "results")
    shutil.copy(report / "manifest.json", folder / "manifest.json")
    store = ResultsStore(folder / "results")
    summary = store.read("summary.scorecard", None)
    card = summary.tables["scorecard"]
    ind = {i.id: i for i in study.selected_indicators()}[card["indicator"].iloc[0]]
    failed = pd.DataFrame([failed_row(ind, "too few periods")]).reindex(columns=card.columns)
    summary.tables["scorecard"] = pd.concat([failed, card.iloc[1:]], ignore_index=True)
    store.write(summary)
    twfe = store.read("did.twfe", "cost_per_admission")
    twfe.settings = {**twfe.settings, "alpha": 0.1}
    store.write(twfe)
    book = load_workbook(write_workbook(folder, study, "en"))
    first = cells(book["Scorecard"], 3)[0]
    assert first["Indicator"].value == ind.name_en and first["Finding"].value == "not estimated"
    assert first["Effect"].value is None and first["p-value"].value is None and first["Target"].value is None
    assert first["Verdict"].value == f"{ind.name_en}: could not be estimated (too few periods)."
    alpha = [r for r in cells(book["Analysis plan"], 1) if r["Setting"].value == "alpha"]
    assert [r["Value"].value for r in alpha] == [0.05, 0.1]
    assert alpha[1]["Applies to"].value == "cost_per_admission/did.twfe"
    assert alpha[0]["Applies to"].value == f"the other {len(store.results()) - 1} results"


def test_balance_and_heterogeneity_sheets(book_zh):
    assert "平衡性检验" in book_zh.sheetnames and "异质性检验" in book_zh.sheetnames
    sheet = book_zh["平衡性检验"]
    values = [[c.value for c in row] for row in sheet.iter_rows()]
    header = next(i for i, row in enumerate(values) if "协变量" in row)
    rows = values[header + 1:]
    covariate = values[header].index("协变量")
    assert len(rows) == 3 * len(INDICATORS)  # three covariates per indicator
    assert {r[covariate] for r in rows} == {"到县城距离（公里）", "床位数", "是否山区"}  # the study's labels
