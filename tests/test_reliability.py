"""Reliability suite: every bad input gets exit code 2, its culprit named, no traceback and
nothing written (issue 13, items 5 and 6).

Each case starts from the small valid study of ``tests/conftest.py`` (4 townships x 12
months, written to a temporary folder) and breaks it one way, inside the test: the study
file (YAML constructs, keys, values that would only fail later in a chapter, encodings,
binary or empty files) or the data files (workbooks that are truncated or something else,
encodings that decode into nonsense, ragged rows, formula cells without values, headers,
periods at each frequency, counts, populations, pilots, units, layouts). Every case is run
through ``evaluation.cli.main(["validate", study, "--write-panel"])`` and asserts:

* the return code is 2;
* stderr names the culprit: the file, and the key (``key 'analysis.seed'``) or the row,
  column or cell, plus the words that say what is wrong;
* stderr holds no ``Traceback``;
* nothing is written: the listing of the outputs folder (``EVALUATION_OUTPUT_ROOT``, in
  the temporary folder) and of the study folder are the same before and after.

There are 132 malformed inputs in ``CASES`` (``test_bad_input_is_rejected``); 6 of them
(``BATCH_CASES``) also go through ``main(["batch", study, "--fast"])``, which validates
before it writes anything, so no chapter runs; 2 more tests check unknown ``--indicators``
and ``--chapters`` values (exit 2, the valid choices listed). The YAML alias bomb
("billion laughs", in ``indicators`` and in ``title.zh``) must be refused within 5 s and
200 MB of peak Python allocations (tracemalloc), with a message shorter than 2,000
characters. A study file saved in GBK is read, and ``validate`` says so. Nine more
cases cover ``demo-data`` options (a negative or text seed, a spillover above 1 or NaN:
argparse's exit 2 naming the option; ``--out`` naming a file) and ``init`` on a missing,
truncated, mislabelled or header-only panel (exit 2, the file named, no study file
written). Two tests check what ``validate`` notes rather than refuses: a window wider
than the data, and a placebo shift or ITS phase-in the panel cannot support (at the data's
and at a coarser analysis frequency). 157 tests in all, about 10 s.
"""

from __future__ import annotations

import io
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml

from evaluation.cli import main
from evaluation.data.demo import PANEL_HEADERS
from tests.conftest import StudyFiles, edit_config, tiny_panel, tiny_pilots

# ----------------------------------------------------------------------------- helpers


def _listing(*folders: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folders`` with its size and modification time."""
    out = {}
    for folder in folders:
        if folder.exists():
            for p in sorted(folder.rglob("*")):
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def _dump(config: dict) -> str:
    return yaml.safe_dump(config, allow_unicode=True, sort_keys=False)


def key(dotted: str, value, *fragments: str) -> Callable:
    """A case that sets one study-file key; the message must name ``key 'dotted'``."""
    def apply(files: StudyFiles):
        config = files.config()
        edit_config(config, dotted, value)
        files.write_config(config)
        return "study.yml", [f"key '{dotted}'", *fragments]
    return apply


def keys(edits: dict, named: str, *fragments: str) -> Callable:
    """A case that sets several keys; the message must name ``key 'named'``."""
    def apply(files: StudyFiles):
        config = files.config()
        for dotted, value in edits.items():
            edit_config(config, dotted, value)
        files.write_config(config)
        return "study.yml", [f"key '{named}'", *fragments]
    return apply


def study_text(make: Callable[[str], str | bytes], *fragments: str) -> Callable:
    """A case that rewrites the study file's text (or bytes) from the valid one."""
    def apply(files: StudyFiles):
        content = make(files.study.read_text(encoding="utf-8"))
        if isinstance(content, str):
            content = content.encode("utf-8")
        files.study.write_bytes(content)
        return "study.yml", list(fragments)
    return apply


def panel(change: Callable[[pd.DataFrame], pd.DataFrame], *fragments: str, config: dict | None = None) -> Callable:
    """A case that changes the panel (contract names; written with the study's Chinese headers)."""
    def apply(files: StudyFiles):
        files.write_panel(change(tiny_panel()))
        if config:
            cfg = files.config()
            for dotted, value in config.items():
                edit_config(cfg, dotted, value)
            files.write_config(cfg)
        return "panel.csv", list(fragments)
    return apply


def pilots(change: Callable[[pd.DataFrame], pd.DataFrame], *fragments: str) -> Callable:
    def apply(files: StudyFiles):
        files.write_pilots(change(tiny_pilots()))
        return "pilots.csv", list(fragments)
    return apply


def panel_file(name: str, content: Callable[[], bytes] | bytes, *fragments: str) -> Callable:
    """A case that replaces the panel by a file ``data/name`` holding ``content``."""
    def apply(files: StudyFiles):
        target = files.root / "data" / name
        target.write_bytes(content() if callable(content) else content)
        if name != "panel.csv":
            files.panel.unlink()
            cfg = files.config()
            cfg["data"]["panel"] = f"data/{name}"
            files.write_config(cfg)
        return name, list(fragments)
    return apply


def panel_csv_text(text: Callable[[str], str], *fragments: str, encoding: str = "utf-8") -> Callable:
    """A case that edits the valid panel's CSV text (then writes it in ``encoding``)."""
    def apply(files: StudyFiles):
        files.panel.write_bytes(text(files.panel.read_text(encoding="utf-8")).encode(encoding))
        return "panel.csv", list(fragments)
    return apply


def _set(frame: pd.DataFrame, row: int, column: str, value) -> pd.DataFrame:
    """Set a cell by spreadsheet row number (header = row 1, first data row = 2)."""
    frame = frame.astype({column: object})
    frame.loc[row - 2, column] = value
    return frame


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.rename(columns=PANEL_HEADERS).to_csv(index=False).encode("utf-8")


def _xlsx_bytes(frame: pd.DataFrame | None = None) -> bytes:
    buffer = io.BytesIO()
    (tiny_panel() if frame is None else frame).rename(columns=PANEL_HEADERS).to_excel(buffer, index=False)
    return buffer.getvalue()


def _zip_of(name: str, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, payload)
    return buffer.getvalue()


def _formula_workbook() -> bytes:
    """The panel as .xlsx, with the visits of rows 3 and 5 as formulas that were never
    calculated (openpyxl writes a formula without a cached value)."""
    import openpyxl

    wb = openpyxl.load_workbook(io.BytesIO(_xlsx_bytes()))
    ws = wb.active
    column = [c.value for c in ws[1]].index(PANEL_HEADERS["visits_total"]) + 1
    for row in (3, 5):
        ws.cell(row=row, column=column, value=f"={ws.cell(row=row, column=column).column_letter}2+1")
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()


def _text_in(encoding: str) -> Callable[[], bytes]:
    """The panel's text in a foreign encoding (Traditional-Chinese names, so that the bytes exist)."""
    def make() -> bytes:
        frame = tiny_panel()
        frame["township_name"] = frame["township_name"].map({"一号镇": "壹號鎮", "二号乡": "貳號鄉",
                                                             "三号镇": "參號鎮", "四号镇": "肆號鎮"})
        frame["county"] = frame["county"].map({"甲县": "甲縣", "乙县": "乙縣"})
        return frame.rename(columns=PANEL_HEADERS).to_csv(index=False).encode(encoding, errors="replace")
    return make


def _quarterly(files: StudyFiles, change: Callable[[pd.DataFrame], pd.DataFrame] = lambda f: f,
               frequency: str = "quarter") -> None:
    """Rewrite the study as a quarterly (or annual) export of the same counts."""
    frame = tiny_panel()
    freq = {"quarter": "Q", "year": "Y"}[frequency]
    frame["period"] = pd.PeriodIndex(frame["period"], freq="M").asfreq(freq).astype(str)
    counts = [c for c in frame.columns if c not in ("county", "township_id", "township_name", "period")]
    frame = frame.groupby(["county", "township_id", "township_name", "period"], as_index=False, sort=False)[
        counts].sum()
    frame["population"] = frame["population"] / (12 if frequency == "year" else 3)
    files.write_panel(change(frame).rename(columns={"period": "period"}))
    pil = tiny_pilots()
    pil["pilot_start"] = pd.PeriodIndex(pil["pilot_start"], freq="M").asfreq(freq).astype(str)
    files.write_pilots(pil)
    cfg = files.config()
    cfg["frequency"] = frequency
    cfg["window"] = {"start": "2019Q1", "end": "2019Q4"} if frequency == "quarter" else {}
    files.write_config(cfg)


def quarterly(change, *fragments, frequency: str = "quarter") -> Callable:
    def apply(files: StudyFiles):
        _quarterly(files, change, frequency)
        return "panel.csv", list(fragments)
    return apply


def _drop_line(text: str, prefix: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith(prefix)) + "\n"


def _replace_top(text: str, top_key: str, block: str) -> str:
    """Replace the top-level ``top_key:`` block of a YAML text by ``block``."""
    lines, out, skipping = text.splitlines(), [], False
    for line in lines:
        if line.startswith(f"{top_key}:"):
            skipping = True
            out.append(block.rstrip("\n"))
            continue
        if skipping and (line.startswith((" ", "-")) or not line.strip()):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out) + "\n"


MONTHLY_PHASE = {"name": "疫情 / wave", "start": "2019-03", "end": "2019-04"}
ALIASED_INDICATORS = ("lol: &lol county_internal_visit_rate\n"
                      "indicators: [*lol]\n")

# ----------------------------------------------------------------------------- the cases

# (id, case): a case breaks the study one way and returns (file named, fragments the
# message must hold).
CASES: list[tuple[str, Callable]] = [
    # --- the study file: YAML constructs and the file itself
    ("yaml_alias_in_indicators", study_text(lambda t: t + "x: &x county_internal_visit_rate\nindicators: [*x]\n",
                                            "key 'x'", "anchor", "line")),
    ("yaml_alias_only", study_text(lambda t: _replace_top(t, "title", "title: {zh: *a, en: b}"),
                                   "key 'title.zh'", "alias '*a'", "not allowed")),
    ("yaml_merge_key", study_text(lambda t: _replace_top(t, "window", "window: {<<: *w}"),
                                  "key 'window", "alias")),
    ("yaml_duplicate_top_key", study_text(lambda t: t + "frequency: quarter\n",
                                          "key 'frequency'", "given twice", "lines")),
    ("yaml_duplicate_nested_key", study_text(
        lambda t: t.replace("  columns:\n", "  columns:\n    常住人口: population\n", 1),
        "key 'data.columns.常住人口'", "given twice")),
    ("yaml_python_tag", study_text(lambda t: t + "x: !!python/object/apply:os.system [echo]\n", "not valid YAML",
                                   "python/object")),
    ("yaml_duplicate_in_flow_mapping", study_text(
        lambda t: t + "covid:\n  phases:\n    - {name: a, start: 2019-03, end: 2019-04, name: b}\n",
        "key 'covid.phases.0.name'", "given twice, on line", "columns")),
    ("yaml_inline_merge_is_read", study_text(
        lambda t: _replace_top(t, "window", "window: {<<: {start: 2019-01}, end: 2019-12}") + "colour: blue\n",
        "key 'colour'", "unknown key")),
    ("yaml_syntax_error", study_text(lambda t: t + "analysis: [seed: 1\n", "key '(file)'", "not valid YAML", "line")),
    ("yaml_tab_indent", study_text(lambda t: t + "extra:\n\t- 1\n", "not valid YAML", "line")),
    ("yaml_deep_nesting", study_text(lambda t: t + "deep: " + "[" * 200 + "]" * 200 + "\n",
                                     "nested more than", "key 'deep")),
    ("study_empty", study_text(lambda t: "", "key '(top level)'", "empty")),
    ("study_comments_only", study_text(lambda t: "# nothing here\n", "key '(top level)'", "empty")),
    ("study_a_list", study_text(lambda t: "- id: tiny\n- title: x\n", "key '(top level)'", "mapping", "list")),
    ("study_a_scalar", study_text(lambda t: "just a sentence\n", "key '(top level)'", "mapping", "str")),
    ("study_binary", study_text(lambda t: b"\x00\x01\x02binary\xff" * 50, "key '(file)'", "binary")),
    ("study_an_xlsx", study_text(lambda t: _xlsx_bytes(), "key '(file)'", "binary")),
    ("study_utf16", study_text(lambda t: t.encode("utf-16"), "key '(file)'", "UTF-16", "UTF-8")),
    ("study_big5", study_text(lambda t: t.replace("测试研究", "測試研究：縣域醫共體試點評估").encode("big5", errors="replace"),
                              "key '(file)'", "not UTF-8", "save the study file as UTF-8")),
    ("study_too_large", study_text(lambda t: t + "# " + "x" * 1_100_000 + "\n", "key '(file)'", "bytes")),
    ("study_non_string_key", study_text(lambda t: t + "1: one\n", "unknown key")),
    # --- keys and types
    ("unknown_top_key", key("colour", "blue", "unknown key")),
    ("unknown_nested_key", key("analysis.sed", 1, "unknown key")),
    ("missing_required_key", key("data.panel", KeyError, "required key is missing")),
    ("missing_title", key("title", KeyError, "required key is missing")),
    ("data_not_a_mapping", key("data", ["panel.csv"], "valid dictionary")),
    ("title_a_string", key("title", "研究", "valid dictionary")),
    ("title_zh_empty", key("title.zh", "", "at least 1 character")),
    ("title_zh_huge", key("title.zh", "长" * 5000, "at most 200 characters")),
    ("id_with_space", key("id", "my study", "pattern")),
    ("id_too_long", key("id", "a" * 300, "at most 64 characters")),
    ("frequency_weekly", key("frequency", "weekly", "'month', 'quarter' or 'year'")),
    ("synthetic_perhaps", key("synthetic", "perhaps", "boolean")),
    ("panel_file_missing", key("data.panel", "data/nowhere.csv", "file not found")),
    ("pilot_file_missing", key("data.pilots", "nowhere.xlsx", "file not found")),
    ("total_rows_keep", key("data.total_rows", "keep", "'reject' or 'drop'")),
    ("unknown_unit", key("data.units", {"常住人口": "万万人"}, "unknown unit")),
    ("two_headers_one_column", key("data.columns", {**{v: k for k, v in PANEL_HEADERS.items()}, "人口": "population"},
                                   "two headers map onto", "population")),
    ("unknown_pilot_column", key("data.pilot_columns", {"乡镇编码": "township_id", "开始": "start"},
                                 "unknown pilot-table column")),
    ("wide_without_measure_column", keys({"data.layout": "wide"}, "data.wide", "measure_column")),
    ("header_row_zero", key("data.header_row", 0, "greater than or equal to 1")),
    ("sheet_zero", key("data.panel_sheet", 0, "numbered from 1")),
    # --- values that pass the schema's types but would fail later
    ("indicators_empty", key("indicators", [], "empty", "at least one indicator")),
    ("indicators_twice", keys({"indicators": ["county_internal_visit_rate"] * 2}, "indicators.1", "listed twice")),
    ("indicator_unknown", keys({"indicators": ["county_internal_visit_rate", "happiness"]}, "indicators.1",
                               "unknown indicator 'happiness'")),
    ("indicators_a_string", key("indicators", {"a": 1}, "valid list")),
    ("seed_negative", key("analysis.seed", -1, "greater than or equal to 0")),
    ("seed_too_large", key("analysis.seed", 2**32, "less than or equal to 4294967295")),
    ("seed_text", key("analysis.seed", "abc", "integer")),
    ("seed_fraction", key("analysis.seed", 1.5, "integer")),
    ("seed_boolean", key("analysis.seed", True, "integer")),
    ("alpha_zero", key("analysis.alpha", 0, "greater than 0")),
    ("alpha_above_half", key("analysis.alpha", 0.7, "less than or equal to 0.5")),
    ("alpha_nan", key("analysis.alpha", float("nan"), "finite number")),
    ("event_window_positive_first", key("analysis.event_window", ["1 year", "2 years"], "negative first")),
    ("event_window_reversed", key("analysis.event_window", [-12, -24], "negative first")),
    ("event_window_three", key("analysis.event_window", [-12, 0, 12], "[first, last]")),
    ("pretrend_leads_one", key("analysis.pretrend_leads", 1, "greater than or equal to 2")),
    ("few_below_very_few", keys({"analysis.few_pilots": 3, "analysis.very_few_pilots": 5}, "analysis.very_few_pilots",
                                "very_few_pilots (5) is above few_pilots (3)")),
    ("draws_too_few", key("analysis.draws.randomization", 10, "greater than or equal to 99")),
    ("fast_draws_too_few", key("analysis.fast_draws.synthetic_did", 5, "greater than or equal to 10")),
    ("subgroup_null", keys({"analysis.subgroups": [None]}, "analysis.subgroups.0", "'model', 'cohort' or 'county'")),
    ("subgroup_twice", key("analysis.subgroups", ["model", "model"], "listed twice")),
    ("placebo_shift_zero", key("analysis.placebo_shift", 0, "at least 1 period")),
    ("target_window_zero", key("analysis.target_window", "0 months", "at least 1 period")),
    ("phase_in_negative", key("analysis.its.phase_in", -1, "at least 0 periods")),
    ("its_horizons_empty", key("analysis.its.horizons", [], "at least 1 item")),
    ("its_horizon_zero", keys({"analysis.its.horizons": ["1 year", 0]}, "analysis.its.horizons.1", "at least 1")),
    ("duration_unknown_unit", key("analysis.placebo_shift", "1 fortnight", "such as '1 year'")),
    ("duration_not_whole", keys({"frequency": "quarter", "window": {"start": "2019Q1", "end": "2019Q4"},
                                 "analysis.placebo_shift": "1 month"}, "analysis.placebo_shift",
                                "not a whole number of quarters")),
    ("rm_values_empty", key("analysis.sensitivity.relative_magnitude.values", [], "at least 1 item")),
    ("rm_value_negative", keys({"analysis.sensitivity.relative_magnitude.values": [1, -1]},
                               "analysis.sensitivity.relative_magnitude.values.1", "greater than 0")),
    ("smoothness_value_negative", keys({"analysis.sensitivity.smoothness.values": [-0.5]},
                                       "analysis.sensitivity.smoothness.values.0", "greater than or equal to 0")),
    ("target_share_above_one", keys({"targets": {"county_internal_visit_rate": 90}}, "targets.county_internal_visit_rate",
                                    "not a share", "0.90")),
    ("target_rate_negative", keys({"targets": {"thc_outpatient_visits_per_1000": -5}},
                                  "targets.thc_outpatient_visits_per_1000", "negative")),
    ("target_infinite", keys({"targets": {"county_internal_visit_rate": float("inf")}},
                             "targets.county_internal_visit_rate", "finite number")),
    ("target_unknown_indicator", keys({"targets": {"happiness": 0.5}}, "targets.happiness", "unknown indicator")),
    ("window_start_after_end", key("window", {"start": "2019-12", "end": "2019-01"}, "start is after end")),
    ("window_unparseable", key("window.start", "2019-13", "YYYY-MM")),
    ("covid_phase_outside_window", keys({"covid.phases": [{"name": "wave", "start": "2021-01", "end": "2021-03"}]},
                                        "covid.phases.0", "outside the study window")),
    ("covid_phases_overlap", keys({"covid.phases": [MONTHLY_PHASE, {**MONTHLY_PHASE, "name": "b",
                                                                    "start": "2019-04", "end": "2019-06"}]},
                                  "covid.phases.1", "before the previous phase ends")),
    ("covid_phase_names_twice", keys({"covid.phases": [MONTHLY_PHASE, {**MONTHLY_PHASE, "start": "2019-08",
                                                                       "end": "2019-09"}]},
                                     "covid.phases.1.name", "earlier phase")),
    ("covid_phase_whole_window", keys({"covid.handling": "exclude",
                                       "covid.phases": [{"name": "all", "start": "2018-12", "end": "2020-01"}]},
                                      "covid.phases.0", "covers the whole study window")),
    ("covid_phase_reversed", keys({"covid.phases": [{**MONTHLY_PHASE, "start": "2019-05", "end": "2019-03"}]},
                                  "covid.phases.0", "start is after end")),
    ("exclude_twice", keys({"townships": {"exclude": ["T02", "T02"]}}, "townships.exclude.1", "listed twice")),
    ("exclude_unknown_township", panel(lambda f: f, "townships.exclude", "T77",
                                       config={"townships": {"exclude": ["T77"]}})),
    ("analysis_frequency_finer", keys({"frequency": "quarter", "window": {"start": "2019Q1", "end": "2019Q4"},
                                       "analysis.frequency": "month"}, "analysis.frequency", "finer")),
    # --- workbooks and files that are not what they say
    ("xlsx_truncated", panel_file("panel.xlsx", lambda: _xlsx_bytes()[:700], "truncated or damaged")),
    ("xlsx_is_csv", panel_file("panel.xlsx", lambda: _csv_bytes(tiny_panel()), "plain text (CSV)",
                               "not an Excel workbook")),
    ("xlsx_is_html", panel_file("panel.xlsx", b"<html><body><table><tr><td>1</td></tr></table></body></html>",
                                "web page (HTML)")),
    ("xlsx_is_word", panel_file("panel.xlsx", lambda: _zip_of("word/document.xml", b"<w/>"), "a Word document")),
    ("xlsx_is_other_zip", panel_file("panel.xlsx", lambda: _zip_of("readme.txt", b"hello"),
                                     "a zip archive without a workbook")),
    ("xls_file", panel_file("panel.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "an .xls file",
                            "save it as .xlsx")),
    ("csv_is_xlsx", panel_file("panel.csv", lambda: _xlsx_bytes(), "named .csv", "zip archive")),
    ("json_file", panel_file("panel.json", b"{}", "unsupported file type")),
    ("empty_file", panel_file("panel.csv", b"", "empty")),
    ("header_only", panel_csv_text(lambda t: t.splitlines()[0] + "\n", "no data rows", "row 1")),
    ("formula_without_value", panel_file("panel.xlsx", _formula_workbook, "formula cell(s)", "no stored value",
                                         "cell")),
    # --- text encodings that decode into nonsense
    ("big5_text", panel_file("panel.csv", _text_in("big5"), "nonsense", "Big5")),
    ("shift_jis_text", panel_file("panel.csv", lambda: _text_in("shift_jis")().replace(
        "市".encode("shift_jis"), b"") + "ア,イ,ウ,エ,オ,カ,キ\n".encode("shift_jis"), "panel.csv", "row")),
    ("utf16_text", panel_file("panel.csv", _text_in("utf-16"), "UTF-16")),
    # --- rows and headers
    ("short_row", panel_csv_text(lambda t: t.replace("\n", "\n" + "甲县,T01\n", 2).replace("甲县,T01\n", "", 1),
                                 "not a rectangular CSV", "row 3", "2 field(s)")),
    ("long_row", panel_csv_text(lambda t: "\n".join(ln + (",extra" if i == 4 else "")
                                                    for i, ln in enumerate(t.splitlines())) + "\n",
                                "not a rectangular CSV", "row 5", "extra fields")),
    ("unmappable_headers", panel(lambda f: f.rename(columns={"population": "人口数"}), "常住人口", "not found")),
    ("duplicate_headers", panel_csv_text(lambda t: t.replace("乡镇名称", "乡镇编码", 1), "duplicate column header",
                                         "乡镇编码")),
    ("data_under_empty_header", panel_csv_text(lambda t: "\n".join(
        ln + ("," if i == 0 else ",7") for i, ln in enumerate(t.splitlines())) + "\n", "has no header")),
    ("duplicate_township_period", panel(lambda f: pd.concat([f, f.iloc[[5]]], ignore_index=True),
                                        "duplicate township-period", "T01", "2019-06")),
    # --- periods at each frequency
    ("unparseable_month", panel(lambda f: _set(f, 9, "period", "2019-13"), "unparseable period", "row 9",
                                "'2019-13'")),
    ("unparseable_quarter", quarterly(lambda f: _set(f, 3, "period", "2019Q5"), "unparseable period", "row 3",
                                      "'2019Q5'")),
    ("unparseable_year", quarterly(lambda f: _set(f, 2, "period", "19年"), "unparseable period", "row 2", "'19年'",
                                   frequency="year")),
    ("periods_outside_window_only", panel(lambda f: f.assign(period=f["period"].str.replace("2019", "2015")),
                                          "no rows inside the study window", "window.start 2019-01",
                                          "periods run 2015-01 .. 2015-12")),
    # --- counts, populations and numbers
    ("negative_count", panel(lambda f: _set(f, 4, "referrals_down", -3), "negative count", "row 4",
                             "referrals_down")),
    ("numerator_above_denominator", panel(lambda f: _set(f, 12, "visits_in_county", 99_999), "row 12",
                                          "above its denominator")),
    ("zero_population", panel(lambda f: _set(f, 20, "population", 0), "row 20", "zero or negative population")),
    ("negative_population", panel(lambda f: _set(f, 21, "population", -5), "row 21",
                                  "zero or negative population")),
    ("missing_population", panel(lambda f: _set(f, 3, "population", ""), "row 3", "missing population")),
    ("text_in_numeric_cell", panel(lambda f: _set(f, 15, "visits_total", "约一千"), "row 15",
                                   "text in a numeric cell", "visits_total")),
    ("long_text_in_numeric_cell", panel(lambda f: _set(f, 15, "visits_total", "很" * 5000), "row 15",
                                        "text in a numeric cell", "…")),
    ("inf_text", panel(lambda f: _set(f, 7, "visits_total", "inf"), "row 7", "text in a numeric cell", "'inf'")),
    ("nan_text", panel(lambda f: _set(f, 8, "visits_in_county", "nan"), "row 8", "text in a numeric cell",
                       "'nan'")),
    ("implausible_magnitude", panel(lambda f: f.assign(population=f["population"] / 10_000),
                                    "implausible", "万人", config={"indicators": ["thc_outpatient_visits_per_1000"]})),
    ("total_row", panel(lambda f: pd.concat([f, f.iloc[[0]].assign(township_id="合计", township_name="合计")],
                                            ignore_index=True), "county total rows", "row 50")),
    ("unit_conflict", panel(lambda f: f, "住院总费用（元）", "data.units says 万元",
                            config={"data.units": {"住院总费用（元）": "万元"},
                                    "indicators": ["cost_per_admission"]})),
    ("unit_wrong_kind", panel(lambda f: f, "cannot measure", "population", config={"data.units": {"常住人口": "万元"}})),
    ("wide_measure_column_absent", panel(lambda f: f, "data.wide.measure_column", "指标",
                                         config={"data.layout": "wide", "data.wide": {"measure_column": "指标"}})),
    ("empty_township_id", panel(lambda f: _set(f, 8, "township_id", ""), "empty cell", "row 8", "township_id")),
    # --- pilots
    ("pilot_absent_from_panel", pilots(lambda q: pd.concat([q, pd.DataFrame(
        {"township_id": ["T99"], "pilot_start": ["2019-05"], "model": ["托管"]})], ignore_index=True),
        "absent from the panel", "row 4", "T99")),
    ("pilot_start_outside_panel", pilots(lambda q: _set(q, 2, "pilot_start", "2021-03"),
                                         "outside the panel's range", "row 2", "2021-03")),
    ("pilot_start_unparseable", pilots(lambda q: _set(q, 2, "pilot_start", "next spring"), "unparseable period",
                                       "row 2")),
    ("duplicate_pilot", pilots(lambda q: pd.concat([q, q.iloc[[0]]], ignore_index=True), "listed more than once",
                               "rows 2, 4", "T01")),
    ("every_township_a_pilot", pilots(lambda q: pd.DataFrame({"township_id": ["T01", "T02", "T03", "T04"],
                                                              "pilot_start": ["2019-07"] * 4, "model": ["托管"] * 4}),
                                      "no comparison townships")),
    ("pilot_table_missing_column", pilots(lambda q: q.drop(columns="pilot_start"), "试点开始月份", "not found")),
]

# Cases also run through ``batch --fast``: it validates the study and the data first, so
# none of them runs a chapter.
BATCH_CASES = ["yaml_alias_in_indicators", "seed_negative", "indicators_empty", "xlsx_truncated", "short_row",
               "pilot_absent_from_panel"]


def _run(files: StudyFiles, case: Callable, command: list[str], capsys) -> tuple[int, str, list[str]]:
    culprit, fragments = case(files)
    capsys.readouterr()
    before = _listing(files.outputs, files.root)
    code = main([command[0], str(files.study), *command[1:]])
    err = capsys.readouterr().err
    assert _listing(files.outputs, files.root) == before, "a file was written or changed"
    return code, err, [culprit, *fragments]


@pytest.mark.parametrize("case", [c for _, c in CASES], ids=[i for i, _ in CASES])
def test_bad_input_is_rejected(study_files, capsys, case):
    code, err, fragments = _run(study_files, case, ["validate", "--write-panel"], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert len(err) < 3000, f"{len(err)} characters"


@pytest.mark.parametrize("name", BATCH_CASES)
def test_batch_rejects_bad_input_before_writing(study_files, capsys, name):
    case = dict(CASES)[name]
    code, err, fragments = _run(study_files, case, ["batch", "--fast"], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert not study_files.outputs.exists() or not any(study_files.outputs.iterdir())


def test_case_count_matches_the_docstring():
    assert len(CASES) == 132 and len({i for i, _ in CASES}) == len(CASES)
    assert set(BATCH_CASES) <= dict(CASES).keys()


@pytest.mark.parametrize("option, value, choices", [
    ("--indicators", "happiness", ["county_internal_visit_rate", "thc_admissions_per_1000"]),
    ("--chapters", "nope", ["data_quality", "trends", "robustness", "summary"]),
])
def test_unknown_batch_selection_lists_the_choices(study_files, capsys, option, value, choices):
    before = _listing(study_files.outputs, study_files.root)
    assert main(["batch", str(study_files.study), "--fast", option, value]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and value in err
    for choice in choices:
        assert choice in err, err
    assert _listing(study_files.outputs, study_files.root) == before


# ----------------------------------------------------------------------------- the alias bomb

def _bomb(levels: int = 9, fan: int = 9) -> str:
    """A "billion laughs" document: each anchor lists ``fan`` aliases of the previous one,
    ``fan ** levels`` strings once expanded (9 ** 9 = 387 million)."""
    lines = ['a0: &a0 "lol"']
    for k in range(1, levels + 1):
        lines.append(f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["indicators", "title.zh"])
def test_alias_bomb_is_refused_quickly_and_small(study_files, capsys, where):
    config = study_files.config()
    text = _dump({k: v for k, v in config.items() if k not in ("indicators", "title")})
    if where == "indicators":
        text = _bomb() + text + "title: {zh: 测试, en: Test}\nindicators: *a9\n"
    else:
        text = _bomb() + text + "title:\n  zh: *a9\n  en: Test\n"
    study_files.study.write_text(text, encoding="utf-8")
    capsys.readouterr()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        code = main(["validate", str(study_files.study)])
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert seconds < 5, f"{seconds:.1f} s"
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MB"
    assert "study.yml" in err and "anchor" in err and "line 1" in err
    assert len(err) < 2000
    assert not study_files.outputs.exists()


# ----------------------------------------------------------------------------- encodings read

def test_gbk_study_file_is_read_and_said(study_files, capsys):
    config = study_files.config()
    config["title"]["zh"] = "县域医共体试点评估（测试）"
    study_files.study.write_bytes(_dump(config).encode("gbk"))
    assert main(["validate", str(study_files.study)]) == 0
    out = capsys.readouterr().out
    assert "县域医共体试点评估（测试）" in out
    assert "read as GB18030 (GBK)" in out and "save it as UTF-8" in out


def test_gbk_study_file_with_a_bad_key_names_it(study_files, capsys):
    config = study_files.config()
    config["title"]["zh"] = "县域医共体"
    config["analysis"]["seed"] = -3
    study_files.study.write_bytes(_dump(config).encode("gbk"))
    assert main(["validate", str(study_files.study)]) == 2
    err = capsys.readouterr().err
    assert "key 'analysis.seed'" in err and "Traceback" not in err


def test_values_in_messages_are_excerpts(study_files):
    """A long value is quoted as at most 80 characters ending in '…'."""
    from evaluation.errors import StudyConfigError, excerpt
    from evaluation.study.config import load_study

    assert excerpt("很" * 5000).endswith("…") and len(excerpt("很" * 5000)) == 80
    assert excerpt([[["x"] * 9] * 9] * 9).endswith("…") or len(excerpt([[["x"] * 9] * 9] * 9)) <= 80
    config = study_files.config()
    config["analysis"]["cluster"] = "村" * 10_000
    study_files.write_config(config)
    with pytest.raises(StudyConfigError) as info:
        load_study(study_files.study)
    assert len(str(info.value)) < 400 and "…" in str(info.value)


# ----------------------------------------------------------------------------- init and demo-data

@pytest.mark.parametrize("argv, culprit", [
    (["demo-data", "--seed", "-1"], "argument --seed: -1 is outside 0 to 4294967295"),
    (["demo-data", "--seed", "ten"], "argument --seed: 'ten' is not a whole number"),
    (["demo-data", "--spillover", "5"], "argument --spillover: 5 is outside 0 to 1"),
    (["demo-data", "--spillover", "nan"], "argument --spillover: nan is outside 0 to 1"),
], ids=["seed_negative", "seed_text", "spillover_above_one", "spillover_nan"])
def test_bad_demo_data_options_exit_2(tmp_path, capsys, argv, culprit):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and culprit in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_demo_data_out_is_a_file(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("keep me", encoding="utf-8")
    assert main(["demo-data", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "afile" in err and "not a folder" in err and "Traceback" not in err
    assert target.read_text(encoding="utf-8") == "keep me"


@pytest.mark.parametrize("panel_bytes, culprit", [
    (None, "file not found"),
    (b"PK\x03\x04truncated", "truncated or damaged"),
    (b"<html><table></table></html>", "web page (HTML)"),
    ("县区,乡镇编码\n".encode(), "no data rows"),
], ids=["missing", "truncated_xlsx", "html_as_xlsx", "header_only"])
def test_init_on_bad_files_writes_no_study(tmp_path, capsys, panel_bytes, culprit):
    panel_path = tmp_path / ("panel.csv" if panel_bytes and panel_bytes.startswith("县".encode()) else "panel.xlsx")
    if panel_bytes is not None:
        panel_path.write_bytes(panel_bytes)
    pilots_path = tmp_path / "pilots.csv"
    tiny_pilots().to_csv(pilots_path, index=False)
    before = _listing(tmp_path)
    assert main(["init", str(panel_path), str(pilots_path), "--out", str(tmp_path / "study.yml")]) == 2
    err = capsys.readouterr().err
    assert panel_path.name in err and culprit in err and "Traceback" not in err
    assert _listing(tmp_path) == before


def test_window_wider_than_the_data_is_said(study_files, capsys):
    config = study_files.config()
    config["window"] = {"start": "2018-07", "end": "2020-12"}
    study_files.write_config(config)
    assert main(["validate", str(study_files.study)]) == 0
    out = capsys.readouterr().out
    assert "window.start 2018-07 is before the data's first period 2019-01" in out
    assert "window.end 2020-12 is after the data's last period 2019-12" in out
    assert "the analysis covers 2019-01 .. 2019-12" in out
    config["analysis"]["frequency"] = "quarter"  # the notes compare at the analysis frequency
    study_files.write_config(config)
    assert main(["validate", str(study_files.study)]) == 0
    out = capsys.readouterr().out
    assert "window.start 2018Q3 is before the data's first period 2019Q1" in out
    assert "the first pilot starts 2019Q3, 2 quarters into the data" in out


def test_plan_settings_the_data_cannot_support_are_said(study_files, capsys):
    """The tiny study's first pilot starts 2019-07, 6 months into 2019-01 .. 2019-12 (5 months after)."""
    config = study_files.config()
    config["analysis"].update(placebo_shift="6 months", its={"phase_in": 6})
    study_files.write_config(config)
    assert main(["validate", str(study_files.study)]) == 0
    out = capsys.readouterr().out
    assert "analysis.placebo_shift is 6 months" in out and "a shift below 6 works" in out
    assert "analysis.its.phase_in is 6 months" in out and "data end 5 months after" in out
    config["analysis"].update(placebo_shift=5, its={"phase_in": 5})
    study_files.write_config(config)
    assert main(["validate", str(study_files.study)]) == 0
    assert "analysis." not in capsys.readouterr().out
