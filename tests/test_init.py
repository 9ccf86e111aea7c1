"""`evaluation init PANEL PILOTS`: a study file proposed from the user's own headers.

The demo prefecture (data_raw/demo) is rewritten with other headers than studies/demo.yml
maps (synonyms, a similar spelling, a header that contains a synonym), other period
formats, as CSV in GBK and as .xlsx (Excel dates), quarterly, under a title row and a unit
row on a second sheet, wide (a column per month), with county total rows; the study file
init writes must load and validate without edits, and its totals equal the demo's. Files
that cannot be mapped list what is missing in the study file and exit 2 at validation.
Files are built in tmp_path.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import yaml

from evaluation.cli import main
from evaluation.data.init_study import (
    DEFAULT_COVID_PHASES,
    detect_periods,
    load_synonyms,
    map_headers,
    normalise_header,
)
from evaluation.data.panel import MEASURE_COLUMNS, DroppedRowsWarning, load_panel
from evaluation.paths import DEMO_DATA, DEMO_STUDY
from evaluation.study.catalogue import load_catalogue
from evaluation.study.config import PANEL_KEY_COLUMNS, PILOT_COLUMNS, load_study

# Headers of another office: none is the header studies/demo.yml maps.
RENAMED = {
    "县区": "区县",
    "乡镇编码": "机构编码",
    "乡镇名称": "卫生院名称",
    "月份": "统计月份",
    "常住人口": "户籍人口",
    "总诊疗人次": "门急诊人次",
    "县域内就诊人次": "县域内诊疗人次",
    "基层诊疗人次": "基层医疗机构诊疗人次",      # similar to 基层医疗卫生机构诊疗人次
    "住院人次": "出院人次",
    "县外转诊人次": "转县外人次",
    "卫生院门急诊人次": "乡镇卫生院诊疗人次",
    "卫生院住院人次": "乡镇卫生院住院人次",
    "住院总费用（元）": "住院费用（元）",
    "开展技术项目数": "开展项目数",
    "下转人次": "本月下转人次",                  # contains 下转人次
}
PILOT_RENAMED = {"乡镇编码": "机构编码", "试点开始月份": "试点开始时间", "整合模式": "模式"}
EXPECTED = {RENAMED[zh]: col for zh, col in load_study(DEMO_STUDY).data.columns.items()}
EXPECTED_PILOTS = {"机构编码": "township_id", "试点开始时间": "pilot_start", "模式": "model"}


@pytest.fixture(autouse=True)
def _outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "outputs"))


@pytest.fixture(scope="module")
def demo_subset():
    """The demo's 10 pilot townships and 14 comparison townships, 2016-01..2023-12 (2,304 rows)."""
    panel = pd.read_csv(DEMO_DATA / "panel.csv", dtype=str, keep_default_na=False)
    pilots = pd.read_csv(DEMO_DATA / "pilots.csv", dtype=str, keep_default_na=False)
    others = [t for t in panel["乡镇编码"].unique() if t not in set(pilots["乡镇编码"])][:14]
    keep = set(pilots["乡镇编码"]) | set(others)
    return panel[panel["乡镇编码"].isin(keep)].reset_index(drop=True), pilots


def _chinese_month(label: str) -> str:
    year, month = label.split("-")
    return f"{year}年{int(month)}月"


def _renamed(demo_subset, *, excel_dates: bool):
    panel, pilots = (f.copy() for f in demo_subset)
    if excel_dates:
        panel["月份"] = [dt.datetime(int(p[:4]), int(p[5:]), 1) for p in panel["月份"]]
        for col in panel.columns[4:]:
            panel[col] = pd.to_numeric(panel[col])
    else:
        panel["月份"] = panel["月份"].map(_chinese_month)
    pilots["试点开始月份"] = pilots["试点开始月份"].map(_chinese_month)
    names = panel.drop_duplicates("乡镇编码").set_index("乡镇编码")["乡镇名称"]
    pilots.insert(1, "乡镇名称", pilots["乡镇编码"].map(names))  # not a pilot-table column
    return panel.rename(columns=RENAMED), pilots.rename(columns=PILOT_RENAMED)


def _init(tmp_path, panel, pilots, *extra):
    out = tmp_path / "studies" / "mine.yml"
    code = main(["init", str(panel), str(pilots), "--out", str(out), *extra])
    return code, out


def _validated(out):
    study = load_study(out)
    return study, load_panel(study)


@pytest.mark.parametrize("kind", ["csv-gbk", "xlsx"])
def test_init_maps_other_headers_and_the_study_validates(tmp_path, demo_subset, kind, capsys):
    panel, pilots = _renamed(demo_subset, excel_dates=kind == "xlsx")
    data = tmp_path / "data"
    data.mkdir()
    if kind == "csv-gbk":
        panel_path, pilots_path = data / "县区月报.csv", data / "试点名单.csv"
        panel.to_csv(panel_path, index=False, encoding="gbk")
        pilots.to_csv(pilots_path, index=False, encoding="gbk")
    else:
        panel_path, pilots_path = data / "县区月报.xlsx", data / "试点名单.xlsx"
        panel.to_excel(panel_path, index=False, sheet_name="月报")
        pilots.to_excel(pilots_path, index=False)
    code, out = _init(tmp_path, panel_path, pilots_path)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert printed.out.rstrip().endswith("valid")
    raw = yaml.safe_load(out.read_text(encoding="utf-8"))
    # every contract column the file has is mapped, onto the right header
    assert raw["data"]["columns"] == EXPECTED
    assert raw["data"]["pilot_columns"] == EXPECTED_PILOTS
    assert raw["data"]["panel"] == f"../data/{panel_path.name}"  # relative to the study file
    assert raw["id"] == "mine" and raw["frequency"] == "month"
    assert raw["window"] == {"start": "2016-01", "end": "2023-12"}
    assert raw["indicators"] == load_catalogue().ids
    assert raw["covid"]["phases"] == [{"name": n, "start": s, "end": e} for n, s, e in DEFAULT_COVID_PHASES]
    assert raw["analysis"] == {"seed": int(dt.date.today().strftime("%Y%m%d"))}
    text = out.read_text(encoding="utf-8")
    assert "CHECK" in text and "基层医疗卫生机构诊疗人次" in text  # the similar match is flagged
    fmt = "Excel date" if kind == "xlsx" else "YYYY年M月"
    assert f"frequency: month          # detected: {fmt}, 96 distinct periods" in text
    assert "not needed in the pilot table (the panel's township_name)" in text
    study, validated = _validated(out)
    assert validated.frequency == "month" and validated.n_townships == 24
    assert len(validated.data) == 24 * 96 and len(validated.pilots) == 10
    original = demo_subset[0]
    for zh, col in [("总诊疗人次", "visits_total"), ("住院总费用（元）", "inpatient_cost_total"),
                    ("下转人次", "referrals_down")]:
        assert validated.data[col].sum() == pytest.approx(pd.to_numeric(original[zh]).sum(), rel=1e-12)


def test_quarterly_file_is_detected_as_quarters(tmp_path, demo_subset, capsys):
    panel, pilots = (f.copy() for f in demo_subset)
    month = pd.PeriodIndex(panel["月份"], freq="M")
    panel["季度"] = [f"{p.year}年第{p.quarter}季度" for p in month]
    counts = list(panel.columns[5:15])
    panel[counts + ["常住人口"]] = panel[counts + ["常住人口"]].apply(pd.to_numeric)
    quarterly = (panel.groupby(["县区", "乡镇编码", "乡镇名称", "季度"], sort=False)
                 .agg({"常住人口": "first", **{c: "sum" for c in counts}}).reset_index())
    pilots["试点开始月份"] = [f"{p.year}Q{p.quarter}" for p in pd.PeriodIndex(pilots["试点开始月份"], freq="M")]
    quarterly.to_csv(tmp_path / "q.csv", index=False)
    pilots.rename(columns={"试点开始月份": "开始季度"}).to_csv(tmp_path / "p.csv", index=False)
    code, out = _init(tmp_path, tmp_path / "q.csv", tmp_path / "p.csv", "--id", "quarters")
    assert code == 0, capsys.readouterr().err
    raw = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert raw["frequency"] == "quarter" and raw["id"] == "quarters"
    assert raw["window"] == {"start": "2016Q1", "end": "2023Q4"}
    assert [(p["start"], p["end"]) for p in raw["covid"]["phases"]] == [("2020Q1", "2020Q2"), ("2022Q4", "2023Q1")]
    assert "YYYY年第n季度" in out.read_text(encoding="utf-8")
    _, validated = _validated(out)
    assert len(validated.periods) == 32 and len(validated.data) == 24 * 32


def test_unmappable_file_lists_what_is_missing_and_validation_exits_2(tmp_path, demo_subset, capsys):
    panel, pilots = (f.copy() for f in demo_subset)
    panel = panel.drop(columns=["常住人口", "基层诊疗人次"]).rename(
        columns={"县外转诊人次": "备注一", "住院总费用（元）": "住院费用（元）"})
    panel.insert(3, "备注", "")
    panel["住院费用(万元)"] = pd.to_numeric(panel["住院费用（元）"]) / 10_000  # two candidates for one column
    panel.to_csv(tmp_path / "p.csv", index=False)
    pilots.to_csv(tmp_path / "s.csv", index=False)
    code, out = _init(tmp_path, tmp_path / "p.csv", tmp_path / "s.csv", "--lang", "en")
    printed = capsys.readouterr()
    assert code == 2
    assert "missing column 'population'" in printed.err and "the study file is kept" in printed.err
    text = out.read_text(encoding="utf-8")
    head = text.split("\nid:")[0]  # the comment block at the top of the file
    assert "contract columns not found" in head
    for column in ("population", "visits_primary", "referrals_out_county"):
        assert f"#     {column}: no header matches" in head
    assert "#     population: no header matches (e.g. 常住人口、户籍人口、年末常住人口); required" in head
    assert "备注: no synonym matches" in head and "备注一: no synonym matches" in head
    raw = yaml.safe_load(text)
    assert "population" not in raw["data"]["columns"].values()
    # only the indicators whose columns are mapped are listed; the others are named with what they lack
    assert raw["indicators"] == ["county_internal_visit_rate", "services_offered", "admissions_thc_share"]
    assert "#   cost_per_admission: needs inpatient_cost_total" in text
    assert "#     inpatient_cost_total: several headers match equally (see ambiguous matches)" in head
    assert ("#   p.csv: ambiguous matches\n#     '住院费用（元）', '住院费用(万元)' -> inpatient_cost_total: "
            "equally good matches, left unmapped: choose by hand") in head
    assert "#   primary_care_visit_share: needs visits_primary" in text
    assert "#   thc_outpatient_visits_per_1000: needs population" in text
    assert "/" not in printed.out.splitlines()[0] and "已写入" not in printed.out  # --lang en


def test_refuses_to_overwrite_unless_forced(tmp_path, capsys):
    out = tmp_path / "studies" / "mine.yml"
    out.parent.mkdir()
    out.write_text("# mine\n", encoding="utf-8")
    panel, pilots = DEMO_DATA / "panel.csv", DEMO_DATA / "pilots.csv"
    assert main(["init", str(panel), str(pilots), "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "# mine\n"
    assert main(["init", str(panel), str(pilots), "--out", str(out), "--force", "--lang", "zh"]) == 0
    printed = capsys.readouterr().out
    assert "已写入" in printed and "wrote" not in printed
    study = load_study(out)
    assert study.data.columns == load_study(DEMO_STUDY).data.columns
    assert study.panel_path == panel.resolve()


def test_an_unreadable_file_writes_nothing(tmp_path, capsys):
    out = tmp_path / "s.yml"
    assert main(["init", str(DEMO_DATA / "panel.csv"), str(tmp_path / "absent.csv"), "--out", str(out)]) == 2
    assert "absent.csv: file not found" in capsys.readouterr().err and not out.exists()


def test_bad_id_is_refused(tmp_path, capsys):
    out = tmp_path / "s.yml"
    assert main(["init", str(DEMO_DATA / "panel.csv"), str(DEMO_DATA / "pilots.csv"), "--out", str(out),
                 "--id", "my study"]) == 2
    assert "key 'id'" in capsys.readouterr().err and not out.exists()


# ----------------------------------------------------------------------------- the parts

def test_synonyms_cover_every_contract_column_and_demo_covid_phases_match():
    syn = load_synonyms()
    assert set(syn.panel) == set(PANEL_KEY_COLUMNS + MEASURE_COLUMNS)
    assert set(syn.pilots) == set(PILOT_COLUMNS)
    demo = load_study(DEMO_STUDY)
    assert [(p.name, p.start, p.end) for p in demo.covid.phases] == list(DEFAULT_COVID_PHASES)
    # the demo's own headers are exact synonyms of the columns demo.yml maps them onto
    mapping = map_headers(list(demo.data.columns), syn.panel, syn.rules)
    assert mapping.columns == demo.data.columns and {m.method for m in mapping.matches} == {"exact"}


@pytest.mark.parametrize("table, headers, column", [
    ("panel", ["县区", "区县", "县(市、区)", "县（市、区）", "县名"], "county"),
    ("panel", ["乡镇编码", "乡镇代码", "机构编码"], "township_id"),
    ("panel", ["乡镇名称", "乡镇", "机构名称", "卫生院名称"], "township_name"),
    ("panel", ["月份", "统计月份", "年月", "时间", "季度", "年份"], "period"),
    ("panel", ["常住人口", "户籍人口", "年末常住人口", "服务人口"], "population"),
    ("panel", ["门急诊人次", "总诊疗人次", "诊疗人次"], "visits_total"),
    ("panel", ["住院总费用", "住院费用（元）", "住院总费用（万元）"], "inpatient_cost_total"),
    ("pilots", ["试点开始时间", "开始月份", "试点时间"], "pilot_start"),
    ("pilots", ["整合模式", "模式", "试点类型"], "model"),
])
def test_common_headers_are_exact_synonyms(table, headers, column):
    syn = load_synonyms()
    for header in headers:
        m = map_headers([header], getattr(syn, table), syn.rules)
        assert [(x.column, x.method) for x in m.matches] == [(column, "exact")], header


def test_normalise_header():
    assert normalise_header("住院总费用 （万元）") == ("住院总费用", ["万元"])
    assert normalise_header("县(市、区)") == ("县", ["市、区"])
    assert normalise_header("Township_ID ") == ("townshipid", [])
    assert normalise_header("门急诊\n人次【人次】") == ("门急诊人次", ["人次"])


def test_matching_rules():
    syn = load_synonyms()
    # the earlier synonym wins; the other header is reported, not mapped
    m = map_headers(["常住人口", "户籍人口"], syn.panel, syn.rules)
    assert m.columns == {"常住人口": "population"}
    assert [(a.headers, a.columns, a.winner) for a in m.ambiguous] == [(("户籍人口",), ("population",), "常住人口")]
    # two headers equally good for one column: neither is mapped
    m = map_headers(["住院费用（元）", "住院费用(万元)"], syn.panel, syn.rules)
    assert m.columns == {} and m.ambiguous[0].columns == ("inpatient_cost_total",)
    assert len(m.ambiguous[0].headers) == 2
    # containment: the longest synonym wins (卫生院住院人次, not 住院人次)
    m = map_headers(["全镇乡镇卫生院住院人次", "全年门急诊人次合计"], syn.panel, syn.rules)
    assert m.columns == {"全镇乡镇卫生院住院人次": "thc_admissions", "全年门急诊人次合计": "visits_total"}
    assert {x.method for x in m.matches} == {"contains"}
    # similar spelling, but not across opposite characters
    m = map_headers(["县外转诊人次数目", "县内转诊人次", "上转人次"], syn.panel, syn.rules)
    assert m.columns == {"县外转诊人次数目": "referrals_out_county"}
    assert m.unmapped == ["县内转诊人次", "上转人次"]
    # a qualified part is not the whole: 县域内住院人次 is not admissions_total
    m = map_headers(["县域内住院人次", "住院病人出院人次"], syn.panel, syn.rules)
    assert m.columns == {"住院病人出院人次": "admissions_total"} and m.ambiguous == []
    # a rate, a share or a mean is not a count, even when it contains a count's synonym
    m = map_headers(["基层诊疗人次占比", "次均住院费用", "县域内就诊率(%)", "每千人口卫生院住院人次"], syn.panel, syn.rules)
    assert m.columns == {}
    m = map_headers(["乡镇编码", "试点启动时间", "一体化模式"], syn.pilots, syn.rules)
    assert m.columns == {"乡镇编码": "township_id", "试点启动时间": "pilot_start", "一体化模式": "model"}


@pytest.mark.parametrize("values, frequency, first, last, fmt", [
    (["2019-01", "2019-12"], "month", "2019-01", "2019-12", "YYYY-MM"),
    (["2019/1", "2019/11"], "month", "2019-01", "2019-11", "YYYY/M"),
    (["2019年1月", "2020年3月", ""], "month", "2019-01", "2020-03", "YYYY年M月"),
    ([201901, 202012], "month", "2019-01", "2020-12", "YYYYMM"),
    ([dt.datetime(2019, 1, 1), dt.datetime(2019, 2, 1)], "month", "2019-01", "2019-02", "Excel date"),
    (["2019Q1", "2020Q4"], "quarter", "2019Q1", "2020Q4", "YYYYQn"),
    (["2019年第1季度", "2019年第3季度"], "quarter", "2019Q1", "2019Q3", "YYYY年第n季度"),
    ([dt.datetime(2019, 3, 31), dt.datetime(2019, 6, 30)], "quarter", "2019Q1", "2019Q2", "Excel date"),
    ([2019, 2023], "year", "2019", "2023", "YYYY"),
    (["2019年", "2021年"], "year", "2019", "2021", "YYYY年"),
    ([dt.datetime(2019, 12, 31), dt.datetime(2020, 12, 31)], "year", "2019", "2020", "Excel date"),
])
def test_period_detection(values, frequency, first, last, fmt):
    found = detect_periods(values)
    assert (found.frequency, str(found.first), str(found.last), found.formats) == (frequency, first, last, (fmt,))
    assert found.unparsed == ()


def test_period_detection_reports_what_it_cannot_read():
    found = detect_periods(["2019-01", "2019-02", "合计"])
    assert found.frequency == "month" and found.unparsed == ("合计",)
    assert detect_periods(["甲", "乙"]).frequency is None


def test_workbook_with_a_title_row_a_unit_row_and_a_cover_sheet(tmp_path, demo_subset, capsys):
    """The panel sits on the second sheet under a title row and a note, with units under the
    headers (cost in 万元): init finds the sheet and the header row and writes both."""
    from openpyxl import Workbook

    panel, pilots = (f.copy() for f in demo_subset)
    panel = panel[panel["月份"] < "2020-01"]
    pilots = pilots[pilots["试点开始月份"] < "2020-01"]  # the 2021 cohort starts after the file ends
    headers = [RENAMED[h] for h in panel.columns]
    headers[12] = "住院总费用"  # its unit is in the unit row
    units = ["", "", "", "", "人", *["人次"] * 7, "万元", "项", "人次"]
    wb = Workbook()
    cover = wb.active
    cover.title = "填表说明"
    cover["A1"] = "本表由各乡镇卫生院按月填报，县卫健委汇总。"
    sheet = wb.create_sheet("月报")
    sheet["A1"] = "2016—2019年乡镇卫生院运行情况月报表"
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=len(headers))
    sheet["A2"] = "填报单位：某市卫生健康委员会"
    sheet.append(headers)
    sheet.append(units)
    for row in panel.itertuples(index=False):
        values = list(row)
        numbers = [float(v) for v in values[4:]]
        numbers[8] = numbers[8] / 10_000  # 住院费用 in 万元
        sheet.append([*values[:4], *numbers])
    wb.save(tmp_path / "月报.xlsx")
    pilots.rename(columns=PILOT_RENAMED).to_csv(tmp_path / "pilots.csv", index=False)
    code, out = _init(tmp_path, tmp_path / "月报.xlsx", tmp_path / "pilots.csv")
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "工作表 月报 / sheet 月报" in printed.out and "表头第 3 行 / header row 3" in printed.out
    assert "单位行第 4 行 / unit row 4" in printed.out
    raw = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert raw["data"]["panel_sheet"] == "月报" and raw["data"]["header_row"] == 3
    assert "pilot_sheet" not in raw["data"] and "pilot_header_row" not in raw["data"]
    expected = {("住院总费用" if h == "住院费用（元）" else h): c for h, c in EXPECTED.items()}
    assert raw["data"]["columns"] == expected
    assert raw["window"] == {"start": "2016-01", "end": "2019-12"}
    assert "in 万元: scaled to yuan when read (x 10000)" in out.read_text(encoding="utf-8")
    _, validated = _validated(out)
    assert len(validated.data) == 24 * 48
    # the loader scales 万元 back to yuan: the demo's own totals (2 decimals in the demo file)
    cost = pd.to_numeric(panel["住院总费用（元）"])
    assert validated.data["inpatient_cost_total"].sum() == pytest.approx(cost.sum(), rel=1e-12)
    assert validated.units["inpatient_cost_total"] == "万元"


def test_a_workbook_with_no_table_names_each_sheet(tmp_path, capsys):
    from openpyxl import Workbook

    wb = Workbook()
    wb.active.title = "封面"
    wb.create_sheet("空表")
    wb.save(tmp_path / "空.xlsx")
    code, out = _init(tmp_path, tmp_path / "空.xlsx", DEMO_DATA / "pilots.csv")
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "no sheet holds a table: sheet '封面'" in err and "sheet '空表'" in err


def test_one_workbook_with_the_pilots_first_and_the_panel_second(tmp_path, demo_subset, capsys):
    """The same workbook for both tables: each is read from the sheet whose headers map best."""
    panel, pilots = demo_subset
    panel = panel[panel["月份"] < "2018-01"]
    pilots = pilots[pilots["试点开始月份"] == "2018-07"].assign(试点开始月份="2017-07")  # inside 2016-2017
    book = tmp_path / "数据.xlsx"
    with pd.ExcelWriter(book) as writer:
        pilots.to_excel(writer, sheet_name="试点名单", index=False)
        panel.to_excel(writer, sheet_name="月度面板", index=False)
    code, out = _init(tmp_path, book, book, "--lang", "en")
    assert code == 0, capsys.readouterr().err
    raw = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert raw["data"]["panel_sheet"] == "月度面板" and "pilot_sheet" not in raw["data"]
    assert raw["data"]["pilot_columns"] == {"乡镇编码": "township_id", "试点开始月份": "pilot_start", "整合模式": "model"}
    assert len(_validated(out)[1].data) == 24 * 24


def test_county_total_rows_are_found_and_dropped(tmp_path, demo_subset, capsys):
    panel, pilots = (f.copy() for f in demo_subset)
    panel = panel[panel["月份"] < "2019-01"]
    counts = list(panel.columns[4:])
    numbers = panel[counts].apply(pd.to_numeric)
    totals = numbers.groupby([panel["县区"], panel["月份"]]).sum().reset_index()
    totals = totals[totals["月份"] == "2016-01"].assign(乡镇编码="", 乡镇名称="全县合计")
    with_totals = pd.concat([panel, totals[panel.columns]], ignore_index=True)
    with_totals.to_csv(tmp_path / "p.csv", index=False)
    pilots[pilots["试点开始月份"] < "2019-01"].to_csv(tmp_path / "s.csv", index=False)
    code, out = _init(tmp_path, tmp_path / "p.csv", tmp_path / "s.csv", "--lang", "en")
    printed = capsys.readouterr()
    assert code == 0, printed.err
    n = len(totals)
    assert n == panel["县区"].nunique() >= 2
    assert f"county total rows: {n}, dropped when read" in printed.out
    rows = ", ".join(str(len(panel) + 2 + k) for k in range(n))  # the header is row 1
    line = next(x for x in out.read_text(encoding="utf-8").splitlines() if "total_rows" in x)
    assert line.startswith("  total_rows: drop ") and f"# CHECK: {n} county total row(s) (rows {rows})" in line
    raw = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert raw["data"]["total_rows"] == "drop" and raw["window"] == {"start": "2016-01", "end": "2018-12"}
    with pytest.warns(DroppedRowsWarning, match=f"dropped {n} county total row"):
        assert len(_validated(out)[1].data) == 24 * 36


def test_wide_table_is_detected_and_its_measures_mapped(tmp_path, demo_subset, capsys):
    """One row per township and measure, one column per month (2016年1月 ...), a unit column
    (cost in 万元): init writes layout: wide with the measure and unit columns."""
    panel, pilots = (f.copy() for f in demo_subset)
    panel = panel[panel["月份"] < "2019-01"]
    measures = {h: RENAMED[h] for h in panel.columns[4:]}
    measures["住院总费用（元）"] = "住院总费用（万元）"  # the unit in the name agrees with the unit column
    units = {h: "人次" for h in measures} | {"常住人口": "人", "住院总费用（元）": "万元", "开展技术项目数": "项"}
    rows = []
    for (county, tid, name), town in panel.groupby(["县区", "乡镇编码", "乡镇名称"], sort=False):
        for header, label in measures.items():
            values = pd.to_numeric(town[header]) / (10_000 if units[header] == "万元" else 1)
            rows.append({"县区": county, "乡镇编码": tid, "乡镇名称": name, "指标名称": label, "单位": units[header],
                         **dict(zip(town["月份"].map(_chinese_month), values, strict=True))})
    pd.DataFrame(rows).to_csv(tmp_path / "wide.csv", index=False)
    pilots[pilots["试点开始月份"] < "2019-01"].to_csv(tmp_path / "s.csv", index=False)
    code, out = _init(tmp_path, tmp_path / "wide.csv", tmp_path / "s.csv", "--lang", "en")
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "wide table: 36 period columns, measure column 指标名称" in printed.out
    raw = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert raw["data"]["layout"] == "wide"
    assert raw["data"]["wide"] == {"measure_column": "指标名称", "unit_column": "单位"}
    expected = {"县区": "county", "乡镇编码": "township_id", "乡镇名称": "township_name"}
    expected |= {label: EXPECTED.get(label, "inpatient_cost_total") for label in measures.values()}
    assert raw["data"]["columns"] == expected
    assert raw["frequency"] == "month" and raw["window"] == {"start": "2016-01", "end": "2018-12"}
    assert raw["indicators"] == load_catalogue().ids
    assert "in 万元: scaled to yuan when read (x 10000)" in out.read_text(encoding="utf-8")
    _, validated = _validated(out)
    assert len(validated.data) == 24 * 36
    cost = pd.to_numeric(panel["住院总费用（元）"])
    assert validated.data["inpatient_cost_total"].sum() == pytest.approx(cost.sum(), rel=1e-9)


def test_a_period_split_over_year_and_month_columns_is_explained(tmp_path, demo_subset, capsys):
    panel, pilots = (f.copy() for f in demo_subset)
    panel.insert(3, "年份", panel["月份"].str[:4].astype(int))
    panel["月份"] = panel["月份"].str[5:].astype(int)
    panel.to_csv(tmp_path / "p.csv", index=False)
    pilots.to_csv(tmp_path / "s.csv", index=False)
    code, out = _init(tmp_path, tmp_path / "p.csv", tmp_path / "s.csv", "--lang", "en")
    printed = capsys.readouterr()
    assert code == 2 and "unparseable period" in printed.err
    head = out.read_text(encoding="utf-8").split("\nid:")[0]
    assert ("#   period format not detected: the period is split over two columns (年份 and 月份): combine them "
            "into one (2019-01 or 2019Q1) and map it onto period") in head
    assert "frequency: month          # CHECK: not detected" in out.read_text(encoding="utf-8")
