"""The Excel workbook and CSV files of a published report: every table a reader may want
to reuse, read from the report folder's results store and manifest (nothing re-estimated).

``tables.xlsx`` (:func:`write_workbook`) and ``tables/*.csv`` (:func:`write_csv_tables`)
hold the same tables:

* the scorecard, one row per indicator (its finding, the headline method's estimate,
  interval, p-value and inference, pilots, targets and attainment, verdict), below the
  synthetic-data banner (when the study is synthetic) and the stored overall conclusion
  (总体结论), which only the workbook shows above the header;
* every effect in the store, one row per effect (indicator, the store's section and the
  effect's part, the tidy columns, and the unit each effect is written in);
* the analysis plan that made the results (one row per setting and value, with the
  results it applies to: all of them, unless a result was made with other settings);
* the data-quality tables (summary, pilots, missing, gaps, outliers, excluded,
  incomplete, loading);
* the sources: data files with SHA-256, git commit, creation time, synthetic flag and
  package versions (from ``manifest.json``).

Sheet names and column headers are in the report's language (:class:`Reader`). Numbers
stay numbers with cell formats: shares in percent (``0.0%``, the cell holds the fraction),
counts and yuan with thousands separators, p-values and other estimates to three
decimals; p-values read "< 0.001", and "≤ 1/(B+1)" at a resampling method's floor,
through conditional number formats (as on the pages; the cell keeps the number). An
effect on a share indicator is stored in percentage points (the fraction times 100,
format ``0.00``) with its unit named in the row's "effect unit" column: a change of a
share is a difference of percentages, which Excel's ``%`` format would mislabel as a
relative change, and the pages and the Word report write the same number (``2.92 pp``).
Missing values are empty cells; booleans are 是 / 否 (Yes / No).

Text cells that a spreadsheet would read as a formula (starting with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return: OWASP "CSV injection") are defused: in a CSV
file with a leading single quote, in the workbook by storing them as string cells with
Excel's quote prefix. Numbers are never touched. Both outputs are written atomically.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from evaluation.errors import EvaluationInputError
from evaluation.inference.few_treated import withhold_clustered
from evaluation.report.readable import COLUMNS, Reader, p_value
from evaluation.report.scorecard import finding
from evaluation.report.store import ResultsStore, replace_folder, write_file
from evaluation.study.catalogue import load_catalogue

WORKBOOK_NAME = "tables.xlsx"
CSV_FOLDER = "tables"
SYNTHETIC_BANNER = ("合成演示数据，非真实乡镇", "SYNTHETIC DEMO DATA — not real townships")
DATA_QUALITY_TABLES = ("summary", "pilots", "missing", "gaps", "outliers", "excluded", "incomplete", "loading")
# Leading characters that make a spreadsheet read a text cell as a formula (OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Sheet names (CSV file stems are the keys).
SHEETS: dict[str, tuple[str, str]] = {
    "scorecard": ("评估总结", "Scorecard"),
    "effects": ("全部效果估计", "All effects"),
    "settings": ("分析设置", "Analysis plan"),
    "data_quality_summary": ("数据概况", "Data summary"),
    "data_quality_pilots": ("试点批次", "Pilot cohorts"),
    "data_quality_missing": ("缺失值", "Missing values"),
    "data_quality_gaps": ("缺失的期", "Missing periods"),
    "data_quality_outliers": ("异常值", "Outliers"),
    "data_quality_excluded": ("排除的乡镇", "Excluded townships"),
    "data_quality_incomplete": ("数据不完整的乡镇", "Incomplete townships"),
    "data_quality_loading": ("数据读取", "Loading"),
    "balance": ("平衡性检验", "Covariate balance"),
    "heterogeneity": ("异质性检验", "Heterogeneity tests"),
    "sources": ("来源与版本", "Sources"),
}

# Column labels the reader's vocabulary (readable.COLUMNS) does not have: (zh, en, kind).
OWN_COLUMNS: dict[str, tuple[str, str, str]] = {
    "indicator_id": ("指标代码", "Indicator code", "code"),
    "result": ("结果", "Result", "code"),
    "section": ("部分", "Part", "code"),
    "unit": ("乡镇（单位）", "Unit (township)", "code"),
    "calendar_time": ("日历时期", "Calendar period", "code"),
    "by": ("分组依据", "Subgroups by", "column"),
    "alpha": ("显著性水平", "Significance level", "alpha"),
    "effect_unit": ("效果单位", "Effect unit", "text"),
    "level_unit": ("指标单位", "Indicator unit", "text"),
    "townships": ("乡镇数", "Townships", "count"),
    "headline_method": ("主要方法", "Headline method", "text"),
    "headline_inference": ("推断方法", "Inference", "text"),
    "finding": ("结论要点", "Finding", "text"),
    "headline_att": ("效果估计", "Effect", "effect"),
    "headline_ci_low": ("置信区间下限", "CI lower", "effect"),
    "headline_ci_high": ("置信区间上限", "CI upper", "effect"),
    "headline_p": ("p 值", "p-value", "p"),
    "headline_p_floor": ("最小可能 p 值", "Smallest possible p", "p"),
    "relative_pct": ("相对变化", "Relative change", "percent"),
    "n_pilots": ("试点乡镇数", "Pilot townships", "count"),
    "n_townships": ("乡镇数", "Townships", "count"),
    "pretrend_p": ("前趋势检验 p 值（随机化推断）", "Pre-trend test p (randomization)", "p"),
    "p_romano_wolf": ("Romano–Wolf 校正 p", "Romano–Wolf p", "p"),
    "p_holm": ("Holm 校正 p", "Holm p", "p"),
    "q_benjamini_hochberg": ("BH 校正 q", "BH q", "p"),
    "target": ("目标值", "Target", "level"),
    "pilot_meets_target": ("试点达标", "Pilots meet target", "text"),
    "comparison_meets_target": ("非试点达标", "Comparison meets target", "text"),
    "verdict": ("结论", "Verdict", "long"),
    "setting": ("设置项", "Setting", "code"),
    "applies_to": ("适用的结果", "Applies to", "text"),
    "value": ("数值", "Value", "auto"),
    "sha256": ("SHA-256", "SHA-256", "code"),
    "smd_entropy": ("标准化均值差（熵平衡后）", "SMD after entropy balancing", "number"),
    "n_relabellings": ("置换次数", "Relabellings", "count"),
}

# Subgroup columns (an effect's ``by``) that are not columns of the panel.
BY_WORDS = {"comparison": ("对照组", "Comparison group")}

# Number formats by kind (a level's and an effect's depend on the row's indicator).
# p-values below 0.001 read "< 0.001" (the cell keeps the number), as on the pages.
FORMATS = {"count": "#,##0", "integer": "0", "number": "#,##0.000", "p": '[<0.001]"< 0.001";0.000', "alpha": "0.00",
           "fraction": "0.0%", "percent": '0.0"%"', "auto": "General"}
EFFECT_FORMATS = {"share": "0.00", "yuan": "#,##0"}
LEVEL_FORMATS = {"share": "0.0%", "yuan": "#,##0"}
OTHER_FORMAT = "#,##0.000"
PERCENT_SCALES = ("percent_change", "percent")  # values already in percent
FRACTION_SCALES = ("relative",)  # a fraction of the counterfactual, shown in percent


@dataclass
class Table:
    """One sheet (and CSV file): a name, headers, rows of cell values (``str``, ``int``,
    ``float`` or ``None``) and each cell's number format (``None`` for text)."""

    key: str
    name: str
    headers: list[str]
    rows: list[list] = field(default_factory=list)
    formats: list[list[str | None]] = field(default_factory=list)
    long: set[int] = field(default_factory=set)  # columns of long text (wrapped)
    preamble: list[str] = field(default_factory=list)  # paragraphs above the header (workbook only)

    def add(self, cells: list[tuple]) -> None:
        """Append a row of ``(value, number format)`` cells."""
        self.rows.append([v for v, _ in cells])
        self.formats.append([f for _, f in cells])


def _missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return not math.isfinite(float(value))
    return False


def _number(value) -> float | int | None:
    """A numeric cell value (``int`` for whole numbers of integer type), ``None`` when missing."""
    if _missing(value):
        return None
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"a boolean where a number belongs: {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    return float(value)


_PLAIN_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?")


class _Cells:
    """Turns stored values into cells for one report language."""

    def __init__(self, reader: Reader, indicators: dict, frequency: str):
        self.reader = reader
        self.indicators = indicators
        self.frequency = frequency

    def indicator(self, indicator_id):
        if _missing(indicator_id):
            return None
        if indicator_id not in self.indicators:
            catalogue = load_catalogue()
            if indicator_id not in catalogue.ids:
                raise EvaluationInputError(f"the results store names indicator '{indicator_id}', which the "
                                           "indicator catalogue does not have")
            self.indicators[indicator_id] = catalogue[indicator_id].at_frequency(self.frequency)
        return self.indicators[indicator_id]

    def text(self, value) -> tuple:
        if _missing(value):
            return None, None
        if isinstance(value, bool | np.bool_):
            return self.reader.flag(value), None
        return self.reader.text(value), None

    def code(self, value) -> tuple:
        if _missing(value):
            return None, None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value), None

    def auto(self, value) -> tuple:
        """A value column of mixed content: numbers (also as plain-number text) as numbers."""
        if _missing(value):
            return None, None
        if isinstance(value, bool | np.bool_):
            return self.reader.flag(value), None
        if isinstance(value, int | float | np.integer | np.floating):
            number = _number(value)
            return number, FORMATS["count"] if float(number).is_integer() else FORMATS["number"]
        if isinstance(value, str) and _PLAIN_NUMBER.fullmatch(value):
            number = float(value) if "." in value else int(value)
            return number, FORMATS["count"] if "." not in value else FORMATS["number"]
        return self.text(value)

    def level(self, value, indicator) -> tuple:
        number = _number(value)
        if indicator is None:
            return number, OTHER_FORMAT
        return number, LEVEL_FORMATS.get(indicator.unit, OTHER_FORMAT)

    def effect(self, value, indicator, scale="indicator") -> tuple:
        """An effect in its reader's unit: a share's in percentage points."""
        number = _number(value)
        scale = scale if isinstance(scale, str) else "indicator"
        if scale in FRACTION_SCALES:
            return number, "0.0%"
        if scale in PERCENT_SCALES or scale in ("rate_ratio", "log") or indicator is None:
            return number, "0.00" if scale in PERCENT_SCALES else "0.000"
        if indicator.unit == "share" and number is not None:
            number = 100 * number
        return number, EFFECT_FORMATS.get(indicator.unit, OTHER_FORMAT)

    def p(self, value, floor=None) -> tuple:
        """A p-value; with a resampling method's smallest possible p-value (``floor``) its
        format reads "≤ floor" at the floor, as the pages do (the cell keeps the number)."""
        number = _number(value)
        if _missing(floor):
            return number, FORMATS["p"]
        return number, f'[<={float(floor)!r}]"{p_value(floor, floor)}";{FORMATS["p"]}'

    def effect_unit(self, indicator, scale="indicator") -> str | None:
        scale = scale if isinstance(scale, str) else "indicator"
        if scale in PERCENT_SCALES or scale in FRACTION_SCALES:
            return "%"
        if scale == "rate_ratio":
            return self.reader.say("率比", "rate ratio")
        if scale == "log":
            return self.reader.say("对数", "log points")
        return None if indicator is None else self.reader.unit(indicator, change=True)

    def known(self, indicator_id):
        """The indicator of a catalogue id; ``None`` for other values."""
        if isinstance(indicator_id, str) and (indicator_id in self.indicators or indicator_id in load_catalogue().ids):
            return self.indicator(indicator_id)
        return None

    def cell(self, value, kind: str, indicator=None, scale="indicator") -> tuple:
        if kind == "method":  # a method or inference the estimators describe in English
            return (None, None) if _missing(value) else (self.reader.method(value), None)
        if kind == "estimand":
            return (None, None) if _missing(value) else (self.reader.estimand(value), None)
        if kind == "column":  # the name of a column of the panel (a subgroup's): its header
            if _missing(value):
                return None, None
            if value in BY_WORDS:
                return self.reader.both(BY_WORDS[value]), None
            return (self.reader.header(value), None) if value in COLUMNS else self.text(value)
        if kind == "indicator":  # an id: the indicator's name
            known = self.known(value)
            return (self.reader.name(known), None) if known is not None else self.text(value)
        if kind in ("text", "long", "period"):
            return self.text(value)
        if kind == "code":
            return self.code(value)
        if kind == "flag":
            return (None, None) if _missing(value) else (self.reader.flag(value), None)
        if kind == "auto":
            return self.auto(value)
        if kind == "level":
            return self.level(value, indicator)
        if kind == "effect":
            return self.effect(value, indicator, scale)
        if kind in FORMATS:
            number = _number(value)
            if kind in ("count", "integer") and number is not None and float(number).is_integer():
                number = int(number)
            return number, FORMATS[kind]
        raise ValueError(f"unknown column kind {kind!r}")


def _label(reader: Reader, column: str, headers: dict | None = None) -> tuple[str, str]:
    """(header, kind) of a column: this table's own label, then ours, then the reader's vocabulary."""
    if headers and column in headers:
        zh, en, kind = headers[column]
    elif column in OWN_COLUMNS:
        zh, en, kind = OWN_COLUMNS[column]
    elif column in COLUMNS:
        zh, en, kind = COLUMNS[column]
    else:
        raise KeyError(f"column '{column}' has no reader's label: add it to evaluation.report.workbook.OWN_COLUMNS")
    return reader.say(zh, en), kind


def _frame_table(cells: _Cells, key: str, frame: pd.DataFrame, headers: dict | None = None,
                 row_indicator: Callable[[pd.Series], object] | None = None) -> Table:
    """A stored table as a :class:`Table`: each column by its kind (a level by the row's indicator)."""
    reader = cells.reader
    labels = [_label(reader, c, headers) for c in frame.columns]
    table = Table(key, sheet_name(reader, key), [h for h, _ in labels],
                  long={i for i, (_, k) in enumerate(labels) if k == "long"})
    for _, row in frame.iterrows():
        indicator = row_indicator(row) if row_indicator else None
        table.add([cells.cell(row[c], kind, indicator) for c, (_, kind) in zip(frame.columns, labels, strict=True)])
    return table


def sheet_name(reader: Reader, key: str) -> str:
    """A sheet's name in the report's language, as Excel allows it (at most 31 characters,
    none of ``[]:*?/\\``)."""
    zh, en = SHEETS[key]
    name = re.sub(r"[\[\]:*?/\\]", " ", reader.say(zh, en, sep=" ")).strip()
    return name[:31].rstrip()


# ----------------------------------------------------------------------------- the tables
def _scorecard(cells: _Cells, store: ResultsStore, settings) -> Table:
    reader = cells.reader
    result = _require(store, "summary.scorecard", None)
    if "scorecard" not in result.tables:
        raise EvaluationInputError(f"{store.folder('summary.scorecard', None)}: no table 'scorecard'")
    card = result.tables["scorecard"]
    recent_zh, recent_en = settings.text(settings.target_window)
    columns = [("name", "text"), ("finding", "text"), ("headline_method", "text"), ("effect_unit", "text"),
               ("headline_att", "effect"), ("headline_ci_low", "effect"), ("headline_ci_high", "effect"),
               ("headline_p", "p"), ("headline_p_floor", "p"), ("p_romano_wolf", "p"), ("p_holm", "p"),
               ("q_benjamini_hochberg", "p"), ("headline_inference", "text"),
               ("relative_pct", "percent"), ("n_pilots", "count"),
               ("n_townships", "count"), ("level_unit", "text"), ("target", "level"), ("pilot_recent", "level"),
               ("comparison_recent", "level"), ("pilot_meets_target", "text"), ("comparison_meets_target", "text"),
               ("pretrend_p", "p"), ("verdict", "long")]
    own = {"name": COLUMNS["indicator"],
           "pilot_recent": (f"试点近{recent_zh}", f"Pilots, last {recent_en}", "level"),
           "comparison_recent": (f"非试点近{recent_zh}", f"Comparison, last {recent_en}", "level")}
    table = Table("scorecard", sheet_name(reader, "scorecard"), [_label(reader, c, own)[0] for c, _ in columns],
                  long={i for i, (_, k) in enumerate(columns) if k == "long"})
    required = [c for c, _ in columns if c not in ("name", "finding", "effect_unit", "level_unit", "verdict",
                                                    "headline_method")]
    required += ["indicator", "headline_label_zh", "headline_label_en", "verdict_zh", "verdict_en", "estimated",
                 "improved", "worsened", "mixed"]
    absent = [c for c in required if c not in card.columns]
    if absent:
        raise EvaluationInputError(f"{store.folder('summary.scorecard', None)}: the scorecard has no column(s) "
                                   f"{absent}; rebuild the report with this version of the package")
    for _, row in card.iterrows():
        ind = cells.indicator(row["indicator"])
        has_target = not _missing(row["target"])
        values = {
            "name": (reader.name(ind), None),
            "finding": (reader.say(*finding(row.to_dict())), None),
            "headline_method": cells.text(reader.say(row["headline_label_zh"], row["headline_label_en"])
                                          if not _missing(row["headline_label_zh"]) else None),
            "effect_unit": (reader.unit(ind, change=True), None),
            "level_unit": (reader.unit(ind), None),
            "pilot_meets_target": (reader.attainment(row["pilot_meets_target"], has_target)
                                   if has_target or not _missing(row["headline_att"]) else None, None),
            "comparison_meets_target": (reader.attainment(row["comparison_meets_target"], has_target)
                                        if has_target or not _missing(row["headline_att"]) else None, None),
            "verdict": (reader.say(row["verdict_zh"], row["verdict_en"], sep="\n"), None),
            "headline_p": cells.p(row["headline_p"], row["headline_p_floor"]),
            "p_romano_wolf": cells.p(row.get("p_romano_wolf"), row.get("p_romano_wolf_floor")),
            "headline_inference": cells.cell(row["headline_inference"], "method"),
        }
        table.add([values[c] if c in values else cells.cell(row[c], kind, ind) for c, kind in columns])
    conclusion = [result.values.get(f"conclusion_{lang}") for lang in ("zh", "en")]
    if None in conclusion:
        raise EvaluationInputError(f"{store.folder('summary.scorecard', None)}: no overall conclusion "
                                   "(values conclusion_zh, conclusion_en); rebuild the report")
    table.preamble = [reader.say(*conclusion, sep="\n")]
    return table


EFFECT_COLUMNS = ("method", "estimand", "term", "by", "group", "event_time", "cohort", "horizon", "calendar_time",
                  "unit", "effect_unit", "estimate", "std_error", "ci_low", "ci_high", "p_value", "p_floor", "scale",
                  "inference", "alpha", "n_obs", "n_units", "n_treated")
EFFECT_KINDS = {"event_time": "integer", "horizon": "integer", "p_floor": "p", "cohort": "code", "term": "code",
                "method": "method", "inference": "method", "estimand": "estimand", "by": "column"}


def _effects(cells: _Cells, results: list, order: dict, min_treated: int) -> Table:
    """Every stored effect, the one few-pilot rule applied (:func:`withhold_clustered`:
    cluster-robust inference from fewer than ``min_treated`` pilots withheld, the reason in
    the inference column)."""
    reader = cells.reader
    columns = ("indicator", "indicator_id", "result", "section", *EFFECT_COLUMNS)
    labels = [_label(reader, c) for c in columns]
    kinds = [EFFECT_KINDS.get(c, k) for c, (_, k) in zip(columns, labels, strict=True)]
    table = Table("effects", sheet_name(reader, "effects"), [h for h, _ in labels])
    for result in sorted(results, key=lambda r: (order.get(r.indicator, len(order)), r.indicator or "", r.section)):
        for row in withhold_clustered(result.effects, min_treated=min_treated).to_dict("records"):
            # an indicator's result: its indicator (some sections leave the effects' column empty)
            ind = cells.indicator(result.indicator if result.indicator is not None else row.get("indicator"))
            scale = row.get("scale", "indicator")
            cell = []
            for column, kind in zip(columns, kinds, strict=True):
                if column == "indicator":
                    cell.append((reader.name(ind) if ind is not None else None, None))
                elif column == "indicator_id":
                    cell.append(cells.code(result.indicator))
                elif column == "result":
                    cell.append((result.section, None))
                elif column == "effect_unit":
                    cell.append((cells.effect_unit(ind, scale), None))
                elif column not in row:
                    cell.append((None, None))
                elif kind == "effect":
                    cell.append(cells.effect(row[column], ind, scale))
                elif column == "p_value":
                    cell.append(cells.p(row[column], row.get("p_floor")))
                else:
                    cell.append(cells.cell(row[column], kind, ind))
            table.add(cell)
    return table


def _setting_value(cells: _Cells, value) -> tuple:
    if isinstance(value, list | tuple):
        return cells.text(", ".join(str(v) for v in value))
    return cells.auto(value)


def _settings(cells: _Cells, results: list) -> Table:
    """One row per setting and value; "applies to" says which results were made with it:
    all of them when the plan is the same for every result; otherwise the results made
    with a less common value are named, and the most common value applies to the others."""
    reader = cells.reader
    made = [r for r in results if r.settings]
    columns = ("setting", "value", "applies_to")
    table = Table("settings", sheet_name(reader, "settings"), [_label(reader, c)[0] for c in columns])
    keys = list(dict.fromkeys(k for r in made for k in r.settings))
    for key in keys:
        groups: dict[str, list] = {}
        for r in made:
            groups.setdefault(json.dumps(r.settings.get(key), sort_keys=True, ensure_ascii=False), []).append(r)
        for k, (text, group) in enumerate(sorted(groups.items(), key=lambda g: -len(g[1]))):
            if len(groups) == 1:
                applies = reader.say(f"全部 {len(made)} 项结果", f"all {len(made)} results")
            elif k == 0:  # the most common value: the results not listed below it
                applies = reader.say(f"其余 {len(group)} 项结果", f"the other {len(group)} results")
            else:
                applies = "; ".join(f"{r.indicator or 'study'}/{r.section}" for r in group)
            table.add([(key, None), _setting_value(cells, json.loads(text)), (applies, None)])
    return table


def _data_quality(cells: _Cells, store: ResultsStore) -> list[Table]:
    result = _require(store, "data_quality", None)
    tables = []
    for name in DATA_QUALITY_TABLES:
        if name not in result.tables:
            raise EvaluationInputError(f"{store.folder('data_quality', None)}: no table '{name}' "
                                       f"(it has {sorted(result.tables)})")
        frame = result.tables[name]
        headers = {}
        by_indicator = None
        if "indicator" in frame.columns:  # ids: shown as names in the report's language
            frame = frame.drop(columns=[c for c in ("name_zh", "name_en") if c in frame.columns])
            headers["indicator"] = (*COLUMNS["indicator"][:2], "indicator")
            by_indicator = lambda row: cells.known(row["indicator"])  # noqa: E731
        if name == "summary":
            headers["value"] = (*COLUMNS["value"][:2], "auto")
        if name == "gaps":  # the missing periods' labels, not a count
            headers["missing_periods"] = ("缺失的期", "Missing periods", "text")
        if name == "outliers":  # levels of each row's indicator
            headers.update({c: (*COLUMNS[c][:2], "level") for c in ("min", "median", "max")})
        tables.append(_frame_table(cells, f"data_quality_{name}", frame, headers, by_indicator))
    return tables


def _sources(cells: _Cells, manifest: dict, path: Path) -> Table:
    reader = cells.reader
    columns = ("item", "value", "sha256")
    table = Table("sources", sheet_name(reader, "sources"), [_label(reader, c)[0] for c in columns])

    def get(key):
        if key not in manifest:
            raise EvaluationInputError(f"{path}: no key '{key}'")
        return manifest[key]

    say = reader.say
    table.add([(say("研究", "Study"), None), cells.text(get("study")), (None, None)])
    title = get("title")
    table.add([(say("标题", "Title"), None), cells.text(say(title["zh"], title["en"], sep="\n")), (None, None)])
    table.add([(say("研究设置文件", "Study file"), None), cells.text(get("study_file")),
               cells.code(get("study_file_sha256"))])
    hashes = get("data_files_sha256")
    for name, file in get("data_files").items():
        if name not in hashes:
            raise EvaluationInputError(f"{path}: data file '{name}' has no SHA-256 in 'data_files_sha256'")
        label = {"panel": say("数据文件：面板", "Data file: panel"),
                 "pilots": say("数据文件：试点名单", "Data file: pilots"),
                 "townships": say("数据文件：乡镇特征表", "Data file: township characteristics")}.get(name, say(f"数据文件：{name}",
                                                                                  f"Data file: {name}"))
        table.add([(label, None), cells.text(file), cells.code(hashes[name])])
    words = {"study": say("研究设置（解析后）", "Study settings (resolved)"), "data": say("数据（校验后）", "Data (validated)"),
             "indicator_catalogue": say("指标目录", "Indicator catalogue"), "packages": say("软件包版本", "Package versions")}
    for name, digest in get("inputs_sha256").items():
        table.add([(say("输入：", "Input: ") + words.get(name, name), None), (None, None), cells.code(digest)])
    table.add([(say("合成数据", "Synthetic data"), None), (reader.flag(get("synthetic")), None), (None, None)])
    table.add([(say("快速模式（抽样次数减少）", "Fast mode (fewer draws)"), None), (reader.flag(get("fast")), None),
               (None, None)])
    table.add([(say("生成时间", "Created"), None), cells.text(get("created")), (None, None)])
    commit = get("git_commit")
    table.add([(say("代码版本（git 提交）", "Code version (git commit)"), None), cells.code(commit), (None, None)])
    table.add([(say("代码有未提交的修改", "Code has uncommitted changes"), None),
               (reader.flag(get("git_dirty")), None), (None, None)])
    table.add([("Python", None), cells.code(get("python")), (None, None)])
    for package, version in get("packages").items():
        table.add([(say(f"软件包 {package}", f"Package {package}"), None),
                   (version if version is not None else say("未安装", "not installed"), None), (None, None)])
    return table


def _selection(cells: _Cells, store: ResultsStore, indicators: dict) -> list[Table]:
    """The selection chapter's balance tables (one block of rows per indicator: the
    matched sample differs when an indicator's data leave townships out) and the tests of
    heterogeneity; no sheet when the study declares no covariates."""
    balance, tests = [], []
    for ind_id in indicators:
        m = store.read("selection.matching", ind_id)
        labels = {k: cells.reader.both(tuple(v)) for k, v in ((m.values.get("labels") or {}) if m else {}).items()}
        if m is not None and "balance" in m.tables:
            table = m.tables["balance"].assign(indicator=ind_id)
            table["covariate"] = [labels.get(c, c) for c in table["covariate"]]
            table["kind"] = [cells.reader.say(*{"binary": ("二值", "binary"), "continuous": ("连续", "continuous")}
                                               .get(k, (k, k))) for k in table["kind"]]
            balance.append(table)
        h = store.read("selection.heterogeneity", ind_id)
        if h is not None and not h.not_estimable:
            for by, d in (h.values.get("differences") or {}).items():
                groups = list(h.effects.loc[h.effects["by"] == by, "group"])
                tests.append({"indicator": ind_id, "covariate": labels.get(by, by),
                              "subgroup": " − ".join(reversed([str(g) for g in groups])),
                              "difference": d.get("difference"), "p_difference": d.get("p_difference"),
                              "n_relabellings": d.get("n_relabellings")})
    out = []
    by_indicator = lambda row: cells.known(row["indicator"])  # noqa: E731
    headers = {"indicator": (*COLUMNS["indicator"][:2], "indicator")}
    if balance:
        frame = pd.concat(balance, ignore_index=True)
        frame = frame[["indicator", *[c for c in frame.columns if c != "indicator"]]]
        out.append(_frame_table(cells, "balance", frame, headers, by_indicator))
    if tests:
        frame = pd.DataFrame(tests)
        out.append(_frame_table(cells, "heterogeneity", frame,
                                headers | {"subgroup": ("差异（后组−前组）", "Difference of groups (second − first)",
                                                        "text")}, by_indicator))
    return out


def _require(store: ResultsStore, section: str, indicator):
    result = store.read(section, indicator)
    if result is None:
        raise EvaluationInputError(f"{store.folder(section, indicator)}: no stored result '{section}'; "
                                   "run the report's batch first")
    return result


def tables(folder: Path, study, language: str | None = None) -> list[Table]:
    """Every table of the workbook (and the CSV files), in sheet order, for ``language``
    (default: the study's ``report.language``)."""
    folder = Path(folder)
    reader = Reader(language or study.report.language)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise EvaluationInputError(f"{manifest_path}: no manifest; is {folder} a published report folder?")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    store = ResultsStore(folder / "results")
    indicators = {i.id: i for i in study.selected_indicators()}
    order = {i: n for n, i in enumerate(indicators)}
    cells = _Cells(reader, indicators, study.analysis_frequency)
    settings = study.settings(fast=bool(manifest.get("fast", False)))
    results = store.results()
    with_effects = [r for r in results if len(r.effects)]
    return [_scorecard(cells, store, settings), _effects(cells, with_effects, order, settings.very_few_pilots), _settings(cells, results),
            *_data_quality(cells, store), *_selection(cells, store, indicators), _sources(cells, manifest, manifest_path)]


# ----------------------------------------------------------------------------- writing
def _formula_like(value) -> bool:
    return isinstance(value, str) and value.startswith(FORMULA_STARTS)


def defuse(value):
    """A CSV cell: text a spreadsheet would read as a formula gets a leading single quote;
    numbers and other text unchanged."""
    return "'" + value if _formula_like(value) else value


def _display_width(value) -> int:
    text = f"{value:,.3f}" if isinstance(value, float) else str(value)
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in max(text.split("\n"), key=len))


def write_workbook(folder: Path, study, language: str | None = None, path: Path | None = None,
                   made: list[Table] | None = None) -> Path:
    """Write the report folder's tables as ``folder/tables.xlsx`` (or ``path``), atomically;
    returns the path. See the module docstring for what it holds. ``made``: the tables, when
    :func:`tables` was already called for this folder and language."""
    folder = Path(folder)
    path = Path(path) if path is not None else folder / WORKBOOK_NAME
    reader = Reader(language or study.report.language)
    book = Workbook()
    book.remove(book.active)
    bold, wrap = Font(bold=True), Alignment(wrap_text=True, vertical="top")
    for n, table in enumerate(made if made is not None else tables(folder, study, reader.language)):
        sheet = book.create_sheet(table.name)
        span = max(len(table.headers), 1)
        top = 1
        if n == 0 and study.synthetic:
            banner = sheet.cell(row=top, column=1, value=reader.say(*SYNTHETIC_BANNER))
            banner.font = Font(bold=True, color="922B21", size=12)
            banner.fill = PatternFill("solid", fgColor="FDECEA")
            sheet.merge_cells(start_row=top, start_column=1, end_row=top, end_column=span)
            top += 1
        for paragraph in table.preamble:
            sheet.cell(row=top, column=1, value=paragraph).alignment = wrap
            sheet.merge_cells(start_row=top, start_column=1, end_row=top, end_column=span)
            sheet.row_dimensions[top].height = 15 * (2 + len(paragraph) // 120)  # merged cells do not grow
            top += 1
        for j, header in enumerate(table.headers, start=1):
            cell = sheet.cell(row=top, column=j, value=header)
            cell.font = bold
            cell.alignment = Alignment(wrap_text=True, vertical="bottom")
        for i, (values, formats) in enumerate(zip(table.rows, table.formats, strict=True), start=top + 1):
            for j, (value, fmt) in enumerate(zip(values, formats, strict=True), start=1):
                if value is None:
                    continue
                cell = sheet.cell(row=i, column=j, value=value)
                if isinstance(value, str):
                    if _formula_like(value):  # stored as text, never as a formula
                        cell.data_type = "s"
                        cell.quotePrefix = True
                    if j - 1 in table.long:
                        cell.alignment = wrap
                elif fmt:
                    cell.number_format = fmt
        for j, header in enumerate(table.headers, start=1):
            widths = [_display_width(header)] + [_display_width(r[j - 1]) for r in table.rows if r[j - 1] is not None]
            width = 80 if j - 1 in table.long else min(max(widths) + 2, 60)
            sheet.column_dimensions[get_column_letter(j)].width = max(width, 8)
        sheet.freeze_panes = sheet.cell(row=top + 1, column=1)
    return write_file(path, book.save)


def write_csv_tables(folder: Path, study, language: str | None = None,
                     made: list[Table] | None = None) -> list[Path]:
    """Write the same tables as UTF-8 (with BOM, so Excel keeps the Chinese) CSV files in
    ``folder/tables/``, one per sheet and named by its key; the folder is replaced as a
    whole (written beside it, then renamed). Returns the files' paths. ``made`` as for
    :func:`write_workbook`."""
    folder = Path(folder)
    made = made if made is not None else tables(folder, study, language)
    target = folder / CSV_FOLDER
    tmp = folder / f".{CSV_FOLDER}-{os.getpid()}-writing"  # made with the folder's usual permissions
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for table in made:
            with open(tmp / f"{table.key}.csv", "w", encoding="utf-8-sig", newline="") as f:
                writer = csv.writer(f)
                writer.writerow([defuse(h) for h in table.headers])
                for row in table.rows:
                    writer.writerow(["" if v is None else defuse(v) if isinstance(v, str) else repr(v)
                                     if isinstance(v, float) else v for v in row])
        replace_folder(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return [target / f"{table.key}.csv" for table in made]
