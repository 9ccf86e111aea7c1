"""Exports as county statistics offices make them: title rows, unit rows, merged two-level
headers, data on another sheet, county total rows, costs in 万元, implausible magnitudes,
population jumps, Big5 text, ragged CSV rows, formulas without values, mislabelled and
truncated workbooks, and wide tables. Every file is built here, in tmp_path.

Each messy file must load to the very panel the clean CSV gives (same values, compared
with pandas' default tolerance, rtol 1e-5, for the rescaled costs), or be refused with a
message naming the file and the row, cell or column at fault.
"""

from __future__ import annotations

import warnings
import zipfile

import openpyxl
import pandas as pd
import pytest

from evaluation.data.demo import PANEL_HEADERS
from evaluation.data.fileio import HeaderInfo, locate_header, read_table, sheet_names
from evaluation.data.panel import (
    DroppedRowsWarning,
    ImplausibleValueWarning,
    PopulationJumpWarning,
    load_panel,
)
from evaluation.errors import DataValidationError, StudyConfigError
from evaluation.study.catalogue import load_catalogue
from evaluation.study.config import load_study
from tests.conftest import tiny_panel

HEADERS = list(PANEL_HEADERS.values())


def _load(files):
    return load_panel(load_study(files.study))


def _configure(files, **data):
    config = files.config()
    config["data"].update(data)
    files.write_config(config)


def _same(loaded: pd.DataFrame, reference: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(loaded.reset_index(drop=True), reference.reset_index(drop=True))


@pytest.fixture
def reference(study_files):
    return _load(study_files).data


def _rows(frame: pd.DataFrame) -> list[list]:
    return frame.astype(object).values.tolist()


def _workbook(path, sheets: dict[str, list[list]], merges: dict[str, list[str]] | None = None):
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r in rows:
            ws.append(r)
        for rng in (merges or {}).get(name, []):
            ws.merge_cells(rng)
    wb.save(path)
    return path


def _use_panel(files, name: str, **data):
    _configure(files, panel=f"data/{name}", **data)
    return files.root / "data" / name


# ----------------------------------------------------------------------------- header location

def test_title_rows_and_unit_row_in_a_workbook(study_files, reference):
    panel = tiny_panel()
    panel["inpatient_cost_total"] = panel["inpatient_cost_total"] / 10_000  # exported in 万元
    headers = [h if h != "住院总费用（元）" else "住院总费用" for h in HEADERS]
    units = ["", "", "", "", "人", "人次", "人次", "人次", "人次", "人次", "人次", "人次", "（万元）", "个", "人次"]
    path = _use_panel(study_files, "panel.xlsx")
    _workbook(path, {"月报": [["某县2019年乡镇卫生院一体化监测月报表"], ["填报单位：某县卫健局", None, "制表日期：2020-01-05"],
                              headers, units, *_rows(panel)]}, {"月报": ["A1:O1"]})
    config = study_files.config()
    config["data"]["columns"]["住院总费用"] = config["data"]["columns"].pop("住院总费用（元）")
    study_files.write_config(config)

    info = locate_header(path)
    assert (info.sheet, info.header_row, info.unit_row, info.first_data_row) == ("月报", 3, 4, 5)
    assert info.units["住院总费用"] == "万元" and info.units["常住人口"] == "人"
    assert info.title[0] == "某县2019年乡镇卫生院一体化监测月报表"
    frame = read_table(path)
    assert frame.index[0] == 5 and isinstance(frame.attrs["header"], HeaderInfo)

    loaded = _load(study_files)
    _same(loaded.data, reference)  # cost x10,000 back to yuan
    assert loaded.units["inpatient_cost_total"] == "万元"
    assert "inpatient_cost_total from 万元 (x10,000)" in loaded.describe()


def test_title_row_in_a_csv_and_header_row_from_the_study(study_files, reference):
    body = tiny_panel().rename(columns=PANEL_HEADERS).to_csv(index=False)
    study_files.panel.write_text("某县乡镇卫生院月报表" + "," * 14 + "\n" + "\n" + body, encoding="utf-8")
    assert locate_header(study_files.panel).header_row == 3
    _same(_load(study_files).data, reference)

    pilots = study_files.pilots.read_text(encoding="utf-8")
    study_files.pilots.write_text("试点乡镇名单,,\n" + pilots, encoding="utf-8")
    _configure(study_files, header_row=3, pilot_header_row=2)
    _same(_load(study_files).data, reference)
    _configure(study_files, header_row=1)  # the title row named as the header
    with pytest.raises(DataValidationError) as err:
        _load(study_files)
    assert "panel.csv, rows 3, 4" in str(err.value) and "column B holds data but has no header (row 1)" in str(err.value)


def test_two_level_merged_header_is_flattened(study_files, reference):
    panel = tiny_panel()
    parents = ["县区", "乡镇编码", "乡镇名称", "月份", "常住人口", "门诊", None, None, "住院", None, "县外转诊人次",
               "卫生院", None, None, "下转人次"]
    # 住院/人次 and 卫生院/住院人次 share no name; 门诊/人次 is not used: the children are unique but one
    children = [None] * 5 + ["总诊疗人次", "县域内就诊人次", "基层诊疗人次", "人次", "总费用", None,
                             "门急诊人次", "住院人次", "技术项目数", None]
    order = ["county", "township_id", "township_name", "period", "population", "visits_total", "visits_in_county",
             "visits_primary", "admissions_total", "inpatient_cost_total", "referrals_out_county",
             "thc_outpatient_visits", "thc_admissions", "services_offered", "referrals_down"]
    vertical = [f"{c}1:{c}2" for c in "ABCDEKO"]
    path = _use_panel(study_files, "panel.xlsx")
    _workbook(path, {"报表": [parents, children, *_rows(panel[order])]},
              {"报表": ["F1:H1", "I1:J1", "L1:N1", *vertical]})
    columns = {"县区": "county", "乡镇编码": "township_id", "乡镇名称": "township_name", "月份": "period",
               "常住人口": "population", "总诊疗人次": "visits_total", "门诊/县域内就诊人次": "visits_in_county",
               "基层诊疗人次": "visits_primary", "人次": "admissions_total", "住院/总费用": "inpatient_cost_total",
               "县外转诊人次": "referrals_out_county", "门急诊人次": "thc_outpatient_visits",
               "住院人次": "thc_admissions", "技术项目数": "services_offered", "下转人次": "referrals_down"}
    _configure(study_files, columns=columns)
    info = locate_header(path)
    assert info.levels == 2 and info.header_row == 1 and info.first_data_row == 3
    # the child alone where unique, parent/child accepted as an alias
    assert info.columns[5:10] == ["总诊疗人次", "县域内就诊人次", "基层诊疗人次", "人次", "总费用"]
    assert info.aliases["住院/人次"] == "人次" and info.aliases["门诊/县域内就诊人次"] == "县域内就诊人次"
    _same(_load(study_files).data, reference)


def test_two_level_header_with_a_repeated_child_keeps_the_parent(tmp_path):
    path = _workbook(tmp_path / "t.xlsx", {"s": [["乡镇", "门诊", None, "住院", None],
                                                  [None, "人次", "费用", "人次", "费用"],
                                                  ["一号镇", 1, 2, 3, 4]]},
                     {"s": ["B1:C1", "D1:E1", "A1:A2"]})
    assert locate_header(path).columns == ["乡镇", "门诊/人次", "门诊/费用", "住院/人次", "住院/费用"]


def test_two_level_header_in_a_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("乡镇,门诊,,住院\n,总诊疗人次,基层诊疗人次,住院人次\n一号镇,10,5,2\n", encoding="utf-8")
    frame = read_table(path)
    assert list(frame.columns) == ["乡镇", "总诊疗人次", "基层诊疗人次", "住院人次"]
    assert frame.attrs["header"].aliases == {"门诊/总诊疗人次": "总诊疗人次", "门诊/基层诊疗人次": "基层诊疗人次",
                                             "住院/住院人次": "住院人次"}
    assert frame.index.tolist() == [3] and frame.loc[3, "基层诊疗人次"] == "5"


def test_tab_delimited_text_export(study_files, reference):
    text = tiny_panel().rename(columns=PANEL_HEADERS).to_csv(index=False, sep="\t")
    path = _use_panel(study_files, "panel.txt")
    path.write_text("某县乡镇卫生院月报表\n" + text, encoding="gbk")
    assert locate_header(path).header_row == 2
    _same(_load(study_files).data, reference)


def test_column_number_row_and_footnotes_are_not_data(study_files, reference):
    frame = tiny_panel().rename(columns=PANEL_HEADERS)
    numbers = ["甲", "乙", "丙", "丁"] + [str(i) for i in range(1, 12)]
    study_files.panel.write_text(
        ",".join(frame.columns) + "\n" + ",".join(numbers) + "\n" + frame.to_csv(index=False, header=False)
        + "注：住院总费用含医保支付部分。\n填表人：张三,,审核人：李四\n", encoding="utf-8")
    info = read_table(study_files.panel).attrs["header"]
    assert (info.number_row, info.first_data_row) == (2, 3)
    assert info.footer == [(51, "注：住院总费用含医保支付部分。"), (52, "填表人：张三 审核人：李四")]
    _same(_load(study_files).data, reference)


# ----------------------------------------------------------------------------- sheets

def test_data_on_the_second_sheet_by_name_and_number(study_files, reference):
    path = _use_panel(study_files, "panel.xlsx")
    frame = tiny_panel().rename(columns=PANEL_HEADERS)
    _workbook(path, {"封面": [["某县乡镇卫生院月报"], ["2019年度"]], "月报": [list(frame.columns), *_rows(frame)]})
    assert sheet_names(path) == ["封面", "月报"] and sheet_names(study_files.pilots) == []
    for sheet in ("月报", 2):
        _configure(study_files, panel_sheet=sheet)
        _same(_load(study_files).data, reference)

    _configure(study_files, panel_sheet=None)
    with pytest.raises(DataValidationError) as err:
        _load(study_files)
    message = str(err.value)
    assert "panel.xlsx" in message and "sheet '封面'" in message
    assert "['封面', '月报']" in message and "sheet '月报' (number 2) has" in message
    assert "Set data.panel_sheet: 月报" in message and "县外转诊人次" in message

    _workbook(path, {"说明": [["序号", "说明"], ["1", "本表为月报"]], "月报": [list(frame.columns), *_rows(frame)]})
    with pytest.raises(DataValidationError) as err:  # a first sheet with a table of other headers
        _load(study_files)
    message = str(err.value)
    assert "panel.xlsx, column '" in message and "not found (in sheet '说明', headers read from row 1)" in message
    assert "sheet '月报' (number 2) has 15 of the 15 mapped headers in row 1" in message

    pilots = study_files.root / "data" / "pilots.xlsx"  # the pilot table on its second sheet, by number
    _workbook(pilots, {"封面": [["试点名单"]], "名单": [["乡镇编码", "试点开始月份", "整合模式"],
                                                       ["T01", "2019-07", "托管"], ["T03", "2019-09", "对口支援"]]})
    _configure(study_files, panel_sheet=2, pilots="data/pilots.xlsx", pilot_sheet=2)
    _same(_load(study_files).data, reference)

    _configure(study_files, panel_sheet=3)
    with pytest.raises(DataValidationError, match=r"panel.xlsx: there is no sheet number 3.*\['说明', '月报'\]"):
        _load(study_files)
    _configure(study_files, panel_sheet=0)
    with pytest.raises(StudyConfigError, match="data.panel_sheet.*numbered from 1"):
        load_study(study_files.study)


# ----------------------------------------------------------------------------- total rows

def _with_totals(panel: pd.DataFrame) -> pd.DataFrame:
    totals = panel.groupby(["county", "period"], as_index=False, sort=False).sum(numeric_only=True)
    totals["township_id"] = ""
    totals["township_name"] = "合计"
    grand = totals.iloc[[0]].assign(county="全县", township_name="")
    return pd.concat([panel, totals[panel.columns], grand[panel.columns]], ignore_index=True)


def test_county_total_rows_are_refused_naming_the_rows(study_files, capsys):
    from evaluation.cli import main

    study_files.write_panel(_with_totals(tiny_panel()))
    assert main(["validate", str(study_files.study)]) == 2
    err = capsys.readouterr().err
    assert "panel.csv" in err and "county total rows are not townships" in err
    assert "rows 50, 51" in err and "township_name '合计'" in err and "data.total_rows: drop" in err
    with pytest.raises(DataValidationError) as exc:
        _load(study_files)
    assert exc.value.rows == list(range(50, 75)) and "row 74: county '全县'" in exc.value.details


def test_county_total_rows_dropped_when_the_study_says_so(study_files, reference):
    study_files.write_panel(_with_totals(tiny_panel()))
    _configure(study_files, total_rows="drop")
    with pytest.warns(DroppedRowsWarning, match=r"dropped 25 county total row\(s\).*row 50"):
        loaded = _load(study_files)
    _same(loaded.data, reference)
    assert len(loaded.dropped_rows) == 25 and loaded.dropped_rows["row"].tolist() == list(range(50, 75))
    assert loaded.summary()["dropped_rows"][-1]["reason"] == "total row (county '全县')"
    assert "dropped rows: 25" in loaded.describe() and "... and 15 more" in loaded.describe()


# ----------------------------------------------------------------------------- units and magnitudes

def test_cost_in_wan_yuan_declared_in_the_study(study_files, reference):
    panel = tiny_panel()
    panel["inpatient_cost_total"] = panel["inpatient_cost_total"] / 10_000
    study_files.write_panel(panel)
    with pytest.raises(DataValidationError) as err:  # undeclared: 0.5 "yuan" per admission
        _load(study_files)
    message = str(err.value)
    assert "panel.csv" in message and "column 'inpatient_cost_total'" in message
    assert "implausible Inpatient cost per admission (cost_per_admission) in 4 of 4 township(s)" in message
    assert "median 0.5" in message and "1,000 or 10,000 times too small" in message
    assert "is 'inpatient_cost_total' (header '住院总费用（元）') in 千元 or 万元?" in message

    for key in ("住院总费用（元）", "inpatient_cost_total"):  # a header or the contract column
        _configure(study_files, units={key: "万元"})
        with pytest.raises(DataValidationError, match="the file's header, '住院总费用（元）' gives the unit 元 but "
                                                      "the study's data.units says 万元"):
            _load(study_files)
    headers = {**PANEL_HEADERS, "inpatient_cost_total": "住院总费用"}
    panel.rename(columns=headers).to_csv(study_files.panel, index=False)
    config = study_files.config()
    config["data"]["columns"]["住院总费用"] = config["data"]["columns"].pop("住院总费用（元）")
    config["data"]["units"] = {"住院总费用": "万元"}
    study_files.write_config(config)
    loaded = _load(study_files)
    _same(loaded.data, reference)
    assert loaded.summary()["units"] == {"inpatient_cost_total": "万元"}


def test_unit_row_and_study_disagree(study_files):
    frame = tiny_panel().rename(columns={**PANEL_HEADERS, "inpatient_cost_total": "住院总费用"})
    units = [""] * 12 + ["万元", "", ""]
    frame.columns.tolist()
    text = ",".join(frame.columns) + "\n" + ",".join(units) + "\n" + frame.to_csv(index=False, header=False)
    study_files.panel.write_text(text, encoding="utf-8")
    config = study_files.config()
    config["data"]["columns"]["住院总费用"] = config["data"]["columns"].pop("住院总费用（元）")
    config["data"]["units"] = {"住院总费用": "千元"}
    study_files.write_config(config)
    with pytest.raises(DataValidationError) as err:
        _load(study_files)
    message = str(err.value)
    assert "panel.csv" in message and "column 'inpatient_cost_total' (header '住院总费用')" in message
    assert "unit row (row 2)" in message and "万元" in message and "千元" in message


def test_unit_that_cannot_measure_the_column_and_unknown_unit(study_files):
    _configure(study_files, units={"常住人口": "万元"})
    with pytest.raises(DataValidationError, match="unit 万元 .*cannot measure"):
        _load(study_files)
    _configure(study_files, units={"常住人口": "斤"})
    with pytest.raises(StudyConfigError, match="data.units.*unknown unit '斤'"):
        load_study(study_files.study)


def test_population_in_wan_ren_declared(study_files, reference):
    panel = tiny_panel()
    panel["population"] = panel["population"] / 10_000
    study_files.write_panel(panel)
    with pytest.raises(DataValidationError, match=r"1,000 or 10,000 times too large: is 'population' "
                                                  r"\(header '常住人口'\) in 千人 or 万人\?"):
        _load(study_files)
    _configure(study_files, units={"常住人口": "万人"})
    _same(_load(study_files).data, reference)


def test_single_implausible_cost_is_warned_with_its_row(study_files):
    panel = tiny_panel()
    panel.loc[6, "inpatient_cost_total"] = panel.loc[6, "inpatient_cost_total"] / 10_000  # spreadsheet row 8
    study_files.write_panel(panel)
    with pytest.warns(ImplausibleValueWarning, match=r"1 cell\(s\) of cost_per_admission outside the plausible "
                                                     r"range 50 to 200,000 yuan: row 8 \(T01 2019-07\): 0.5"):
        loaded = _load(study_files)
    assert len(loaded.notes) == 1 and "row 8" in loaded.notes[0]


def test_catalogue_ranges_scale_with_the_frequency():
    cat = load_catalogue()
    assert cat["cost_per_admission"].plausible_range("year") == (50, 200_000)
    assert cat["thc_admissions_per_1000"].plausible_range("quarter") == (0, 300)
    assert cat["thc_outpatient_visits_per_1000"].plausible_range("year") == (12, 36_000)
    assert all(i.plausible is not None for i in cat)


def test_population_jump_is_warned_with_township_and_period(study_files):
    panel = tiny_panel()
    panel.loc[14, "population"] = 20_000_000  # T02 二号乡 2019-03, spreadsheet row 16, median 20,000
    study_files.write_panel(panel)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = _load(study_files)
    jumps = [str(w.message) for w in caught if issubclass(w.category, PopulationJumpWarning)]
    assert len(jumps) == 1
    assert "row 16: township T02 (二号乡) 2019-03 population 20,000,000, median 20,000" in jumps[0]
    assert any("population value(s)" in n for n in loaded.notes)


def test_demo_data_raise_no_new_warning(demo):
    panel, _, _ = demo
    assert panel.notes == [] and panel.dropped_rows.empty


# ----------------------------------------------------------------------------- text and structure

def _traditional(files):
    """The tiny panel with Traditional-Chinese headers and names, as a Taiwanese export."""
    table = str.maketrans({"县": "縣", "区": "區", "乡": "鄉", "镇": "鎮", "码": "碼", "称": "稱", "诊": "診",
                           "疗": "療", "内": "內", "层": "層", "转": "轉", "费": "費", "卫": "衛", "门": "門",
                           "术": "術", "项": "項", "数": "數", "开": "開", "号": "號", "总": "總", "编": "編"})
    frame = tiny_panel().rename(columns=PANEL_HEADERS)
    frame.columns = [c.translate(table) for c in frame.columns]
    for col in ("县区", "乡镇名称"):
        col_t = col.translate(table)
        frame[col_t] = frame[col_t].str.translate(table)
    return frame, table


def test_big5_text_is_refused_not_decoded_into_nonsense(study_files):
    frame, table = _traditional(study_files)
    frame.to_csv(study_files.panel, index=False, encoding="big5")
    with pytest.raises(DataValidationError) as err:
        _load(study_files)
    message = str(err.value)
    assert "panel.csv" in message and "decoded as GB18030 the text is nonsense" in message
    assert "row 1" in message and "Big5" in message and "data.encoding: big5" in message

    config = study_files.config()  # declared, it reads (the pilot table in Big5 too)
    config["data"]["encoding"] = "big5"
    config["data"]["columns"] = {k.translate(table): v for k, v in config["data"]["columns"].items()}
    config["data"]["pilot_columns"] = {"鄉鎮編碼": "township_id", "試點開始月份": "pilot_start", "整合模式": "model"}
    study_files.write_config(config)
    study_files.pilots.write_bytes("鄉鎮編碼,試點開始月份,整合模式\nT01,2019-07,託管\nT03,2019-09,對口支援\n"
                                   .encode("big5"))
    loaded = _load(study_files)
    assert loaded.n_townships == 4 and set(loaded.data["township_name"]) == {"一號鎮", "二號鄉", "三號鎮", "四號鎮"}


def test_rare_characters_in_place_names_are_not_nonsense(study_files, reference):
    panel = tiny_panel()
    panel["township_name"] = panel["township_name"].replace({"一号镇": "㽏湖镇"})  # 㽏 is outside GB 2312
    study_files.write_panel(panel, encoding="gb18030")
    loaded = _load(study_files)
    assert (loaded.data["township_name"] == "㽏湖镇").sum() == 12


@pytest.mark.parametrize("line, fields, fragment", [
    ("乙县,T04,四号镇,2019-12,30000", 5, "a short row would be padded"),
    (None, 16, "extra fields have no header"),
], ids=["short_row", "long_row"])
def test_csv_rows_with_the_wrong_number_of_fields(study_files, line, fields, fragment):
    text = tiny_panel().rename(columns=PANEL_HEADERS).to_csv(index=False).splitlines()
    text[20] = line if line else text[20] + ",99"
    study_files.panel.write_text("\n".join(text) + "\n", encoding="utf-8")
    with pytest.raises(DataValidationError) as err:
        _load(study_files)
    message = str(err.value)
    assert "panel.csv, row 21" in message and f"row 21 has {fields} field(s), the header (row 1) 15" in message
    assert fragment in message


def test_formula_cells_without_stored_values(study_files):
    path = _use_panel(study_files, "panel.xlsx")
    frame = tiny_panel().rename(columns=PANEL_HEADERS)
    rows = _rows(frame)
    rows[0][5] = "=G2+100"  # F2: total visits as a formula, never calculated (openpyxl stores no value)
    rows[3][5] = "=G5+100"
    _workbook(path, {"月报": [list(frame.columns), *rows]})
    with pytest.raises(DataValidationError) as err:
        _load(study_files)
    message = str(err.value)
    assert "panel.xlsx" in message and "rows 2, 5" in message and "2 formula cell(s)" in message
    assert "cell F2 (column '总诊疗人次')" in message and "cell F5" in message


@pytest.mark.parametrize("content, fragment", [
    ("县区,乡镇编码\n甲县,T01\n".encode(), "named .xlsx but its content is plain text (CSV)"),
    (b"<html><body><table><tr><td>1</td></tr></table></body></html>", "its content is a web page (HTML)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "an Excel 97-2003 .xls workbook"),
], ids=["csv_named_xlsx", "html_named_xlsx", "xls_named_xlsx"])
def test_workbook_whose_content_is_something_else(study_files, content, fragment):
    path = _use_panel(study_files, "panel.xlsx")
    path.write_bytes(content)
    with pytest.raises(DataValidationError) as err:
        _load(study_files)
    assert "panel.xlsx" in str(err.value) and fragment in str(err.value)


def test_truncated_workbook_and_old_xls(study_files, tmp_path):
    path = _use_panel(study_files, "panel.xlsx")
    frame = tiny_panel().rename(columns=PANEL_HEADERS)
    _workbook(path, {"月报": [list(frame.columns), *_rows(frame)]})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataValidationError) as err:
        _load(study_files)
    assert "panel.xlsx" in str(err.value) and "truncated or damaged" in str(err.value)

    xls = _use_panel(study_files, "panel.xls")
    xls.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100)
    with pytest.raises(DataValidationError, match=r"panel.xls: an .xls file .*save it as .xlsx"):
        _load(study_files)

    docx = _use_panel(study_files, "panel.xlsx")
    with zipfile.ZipFile(docx, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<document/>")
    with pytest.raises(DataValidationError, match=r"panel.xlsx: named .xlsx but its content is a Word document"):
        _load(study_files)

    csv_zip = tmp_path / "t.csv"
    with zipfile.ZipFile(csv_zip, "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(DataValidationError, match=r"t.csv: named .csv but its content is a zip archive"):
        read_table(csv_zip)


# ----------------------------------------------------------------------------- wide layout

def _wide(panel: pd.DataFrame, label=lambda p: f"{p[:4]}年{int(p[5:])}月") -> pd.DataFrame:
    measures = [c for c in panel.columns if c not in ("county", "township_id", "township_name", "period")]
    long = panel.melt(id_vars=["county", "township_id", "township_name", "period"], value_vars=measures,
                      var_name="measure")
    long["measure"] = long["measure"].map(PANEL_HEADERS)
    long["period"] = long["period"].map(label)
    wide = long.pivot_table(index=["county", "township_id", "township_name", "measure"], columns="period",
                            values="value", aggfunc="first", sort=False).reset_index()
    wide.columns.name = None
    order = [label(f"2019-{m:02d}") for m in range(1, 13)]
    return wide[["county", "township_id", "township_name", "measure", *order]].rename(
        columns={"county": "县区", "township_id": "乡镇编码", "township_name": "乡镇名称", "measure": "指标"})


def test_wide_layout_loads_to_the_long_panel(study_files, reference):
    wide = _wide(tiny_panel())
    assert wide.shape == (4 * 11, 4 + 12)
    path = _use_panel(study_files, "wide.xlsx", layout="wide", wide={"measure_column": "指标"})
    _workbook(path, {"宽表": [["某县分月指标"], list(wide.columns), *_rows(wide)]}, {"宽表": ["A1:P1"]})
    _same(_load(study_files).data, reference)

    wide.to_csv(study_files.root / "data" / "wide.csv", index=False)  # and as CSV with 2019-01 headers
    _use_panel(study_files, "wide.csv")
    _same(_load(study_files).data, reference)


def test_wide_layout_errors_name_the_wide_cell(study_files):
    wide = _wide(tiny_panel(), label=lambda p: p)
    row = wide.index[(wide["乡镇编码"] == "T02") & (wide["指标"] == "下转人次")][0]
    wide.loc[row, "2019-03"] = -3
    wide.to_csv(study_files.root / "data" / "wide.csv", index=False)
    _use_panel(study_files, "wide.csv", layout="wide", wide={"measure_column": "指标"})
    with pytest.raises(DataValidationError) as err:
        _load(study_files)
    message = str(err.value)
    assert f"wide.csv, row {row + 2}, column 'referrals_down'" in message and "negative count" in message
    assert "column '2019-03'" in message and "T02" in message


def test_wide_layout_needs_its_measure_column(study_files):
    _configure(study_files, layout="wide")
    with pytest.raises(StudyConfigError, match="layout: wide needs wide"):
        load_study(study_files.study)
    _configure(study_files, wide={"measure_column": "指标"})
    with pytest.raises(DataValidationError, match="data.wide.measure_column '指标' is not a header"):
        _load(study_files)


def test_wide_layout_with_a_unit_column(study_files, reference):
    panel = tiny_panel()
    panel["inpatient_cost_total"] = panel["inpatient_cost_total"] / 10_000
    wide = _wide(panel, label=lambda p: p)
    wide.insert(4, "单位", wide["指标"].map(lambda m: "万元" if m.startswith("住院总费用") else "人次"))
    wide.loc[wide["指标"] == "常住人口", "单位"] = "人"
    wide.to_csv(study_files.root / "data" / "wide.csv", index=False)
    _use_panel(study_files, "wide.csv", layout="wide", wide={"measure_column": "指标", "unit_column": "单位"})
    # the measure's own name says 元, the unit column 万元: refused
    with pytest.raises(DataValidationError, match=r"measure '住院总费用（元）' is given in 万元 by the unit column"):
        _load(study_files)
    wide["指标"] = wide["指标"].replace({"住院总费用（元）": "住院总费用"})
    wide.to_csv(study_files.root / "data" / "wide.csv", index=False)
    config = study_files.config()
    config["data"]["columns"]["住院总费用"] = config["data"]["columns"].pop("住院总费用（元）")
    study_files.write_config(config)
    loaded = _load(study_files)
    _same(loaded.data, reference)
    assert loaded.units["inpatient_cost_total"] == "万元" and loaded.units["population"] == "人"


def test_nonsense_rule_in_numbers():
    """The measurable rule: share of implausible characters among non-ASCII ones, refused above 20%."""
    from evaluation.data.fileio import NONSENSE_SHARE, _implausible_share

    frame, _ = _traditional(None)
    text = frame.to_csv(index=False)
    as_gbk = text.encode("big5").decode("gb18030")
    share, bad = _implausible_share(as_gbk, "gb18030")
    assert share > 0.4 and share > 2 * NONSENSE_SHARE  # measured 0.51 on this table
    assert _implausible_share(text, "big5")[0] == 0.0  # the same bytes read as Big5
    simplified = tiny_panel().rename(columns=PANEL_HEADERS).to_csv(index=False)
    assert _implausible_share(simplified, "gb18030") == (0.0, [])
    with_rare = simplified.replace("一号镇", "㽏湖镇")
    assert 0 < _implausible_share(with_rare, "gb18030")[0] < 0.05  # measured 0.038: one rare character per row of one township


def test_county_cell_merged_over_its_townships(study_files, reference):
    frame = tiny_panel().sort_values(["county", "township_id", "period"], ascending=[False, True, True])
    frame = frame.rename(columns=PANEL_HEADERS)
    rows = _rows(frame)
    for r in rows[1:24]:
        r[0] = None  # 甲县 written once, merged over rows 2-25; 乙县 over rows 26-49
    for r in rows[25:]:
        r[0] = None
    path = _use_panel(study_files, "panel.xlsx")
    _workbook(path, {"月报": [list(frame.columns), *rows]}, {"月报": ["A2:A25", "A26:A49"]})
    loaded = _load(study_files).data
    pd.testing.assert_frame_equal(loaded.sort_values(["county", "township_id", "period"]).reset_index(drop=True),
                                  reference.sort_values(["county", "township_id", "period"]).reset_index(drop=True))


def test_annual_wide_workbook_with_years_as_numbers(study_files):
    panel = tiny_panel()
    annual = panel[panel["period"] == "2019-01"].assign(period="2019")
    counts = [c for c in annual.columns if c not in ("county", "township_id", "township_name", "period", "population")]
    annual[counts] = annual[counts] * 12  # a year's counts (the plausible rates scale to 12 months)
    annual = pd.concat([annual, annual.assign(period="2020"), annual.assign(period="2021")], ignore_index=True)
    long = annual.melt(id_vars=["county", "township_id", "township_name", "period"], var_name="指标")
    long["指标"] = long["指标"].map(PANEL_HEADERS)
    long["period"] = long["period"].astype(int)
    wide = long.pivot_table(index=["county", "township_id", "township_name", "指标"], columns="period",
                            values="value", aggfunc="first").reset_index()
    wide.columns = ["县区", "乡镇编码", "乡镇名称", "指标", 2019, 2020, 2021]
    path = _use_panel(study_files, "wide.xlsx", layout="wide", wide={"measure_column": "指标"})
    _workbook(path, {"年报": [list(wide.columns), *_rows(wide)]})
    config = study_files.config()
    config.update(frequency="year", window={"start": "2019", "end": "2021"})
    study_files.write_config(config)
    study_files.write_pilots(pd.DataFrame({"township_id": ["T01"], "pilot_start": ["2020"], "model": ["托管"]}))
    assert locate_header(path).columns[4:] == ["2019", "2020", "2021"]
    loaded = _load(study_files).data
    t01 = loaded[loaded["township_id"] == "T01"]
    assert len(loaded) == 12 and t01["visits_total"].tolist() == [12_120.0] * 3  # (1000 + 10) x 12
    assert t01["post"].tolist() == [0, 1, 1] and [str(p) for p in t01["period"]] == ["2019", "2020", "2021"]
