"""Numbers, words and tables as readers see them: the one formatter of every page, the
Word report and the workbook's labels.

Every number a reader sees passes through a :class:`Reader`, which knows the report's
language (``report.language`` of the study file: ``zh``, ``en`` or ``both``) and how a
quantity of each kind is written:

* shares as percent (``38.1%``), changes in a share as percentage points (``3.81 pp`` /
  ``3.81 个百分点``); per-1,000 rates with their unit and period in the header; money in
  yuan with thousands separators (``12,345 元``); counts as integers (``1,234``);
* p-values as ``< 0.001``, or ``≤ 1/(B+1)`` (``≤ 0.001`` for 999 permutations) when a
  resampling method with B draws cannot give less (the effect's ``p_floor``);
* intervals as ``[a, b]``; never scientific notation; a dash for a missing value, never
  ``NaN``, ``None``, ``True`` or ``False``; target attainment as 达标 / 未达标 / 无目标.

Tables: :meth:`Reader.table` turns a stored table into strings with headers in the
report's language from one vocabulary (:data:`COLUMNS`); a column the vocabulary does
not know is an error, so no English header reaches a Chinese page unnoticed.
:meth:`Reader.effects` does the same for a tidy effects table, with the interval in one
column and each effect in the unit of its indicator and scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from evaluation.inference.few_treated import parse_withheld

Language = Literal["zh", "en", "both"]
LANGUAGES: tuple[str, ...] = ("zh", "en", "both")
DASH = "—"
UNIT_SPACE = "\u00a0"  # between a number and its unit: a table cell never breaks "2.92 pp" apart
MAX_DECIMALS = 6


def is_missing(value) -> bool:
    """None, pandas' NA/NaT, or a number that is not finite (text that reads as NaN too)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False




def fixed(value, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits in fixed notation (never ``1e-05``),
    thousands separated, at most six decimals; a dash when missing."""
    if is_missing(value):
        return DASH
    v = float(value)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10 ** (digits - 1):
        text = f"{v:,.0f}"
    else:
        decimals = min(max(digits - 1 - math.floor(math.log10(a)), 0), MAX_DECIMALS)
        text = f"{v:,.{decimals}f}"
    if float(text.replace(",", "")) == 0:
        return "0"
    return text


def decimals(value, places: int) -> str:
    """``value`` with a fixed number of decimals (thousands separated); a dash when missing."""
    if is_missing(value):
        return DASH
    text = f"{float(value):,.{places}f}"
    return text[1:] if text.startswith("-") and float(text.replace(",", "")) == 0 else text


def p_value(value, floor=None) -> str:
    """A p-value: ``< 0.001``; ``≤ floor`` when a resampling method cannot give less
    (``floor`` = 1/(B+1) for B draws); three decimals otherwise; a dash when missing."""
    if is_missing(value):
        return DASH
    v = float(value)
    if not is_missing(floor) and v <= float(floor) * (1 + 1e-9):
        text = fixed(floor, 2)
        return f"≤{UNIT_SPACE}{text.rstrip('0').rstrip('.') if '.' in text else text}"
    if v < 0.001:
        return f"<{UNIT_SPACE}0.001"
    return f"{v:.3f}"


@dataclass(frozen=True)
class Reader:
    """How numbers and words are written for the report's readers (see the module docstring)."""

    language: Language = "both"

    def __post_init__(self):
        if self.language not in LANGUAGES:
            raise ValueError(f"report language must be one of {LANGUAGES}, got {self.language!r}")

    # ------------------------------------------------------------------ words
    def say(self, zh: str, en: str, sep: str = " / ") -> str:
        """The text in the report's language (``both``: Chinese, then English)."""
        if self.language == "zh":
            return zh
        if self.language == "en":
            return en
        return zh if zh == en else f"{zh}{sep}{en}"

    def both(self, pair: tuple[str, str], sep: str = " / ") -> str:
        return self.say(*pair, sep=sep)

    def name(self, indicator) -> str:
        """An indicator's name in the report's language."""
        return self.say(indicator.name_zh, indicator.name_en)

    def unit(self, indicator, change: bool = False) -> str:
        """The unit a reader reads an indicator's values (``change``: its effects) in."""
        if indicator.unit == "share":
            return self.say("百分点", "percentage points") if change else "%"
        if indicator.unit == "yuan":
            return self.say("元", "yuan")
        label = indicator.unit_for(indicator.frequency)
        if label.endswith("per period") and indicator.kind == "rate":  # no frequency set: name the period generically
            return self.say(f"每{_PER_ZH.get(int(indicator.per), indicator.per)}常住人口每期", label)
        if " / " in label:
            zh, en = label.split(" / ", 1)
            return self.say(zh, en)
        return self.say(UNIT_WORDS.get(label, label), label)

    def flag(self, value) -> str:
        """是 / 否 (Yes / No) for a boolean; a dash when missing."""
        if is_missing(value):
            return DASH
        return self.say("是", "Yes") if bool(value) else self.say("否", "No")

    def attainment(self, meets, has_target: bool = True) -> str:
        """达标 / 未达标 / 无目标 for a target's attainment."""
        if not has_target:
            return self.say("无目标", "No target")
        if is_missing(meets):
            return DASH
        return self.say("达标", "Met") if bool(meets) else self.say("未达标", "Not met")

    def text(self, value) -> str:
        """A text cell: a known word in the report's language, other text as it is."""
        if is_missing(value):
            return DASH
        if isinstance(value, bool | np.bool_):
            return self.flag(value)
        if isinstance(value, float) and float(value).is_integer():
            value = int(value)
        s = str(value)
        if s in WORDS:
            return self.both(WORDS[s])
        return s

    # ------------------------------------------------------------------ numbers
    def number(self, value, digits: int = 3) -> str:
        return fixed(value, digits)

    def count(self, value) -> str:
        """An integer count with thousands separators."""
        if is_missing(value):
            return DASH
        return f"{round(float(value)):,}"

    def percent(self, value, places: int = 1) -> str:
        """A value already in percent (``3.8`` -> ``3.8%``)."""
        return DASH if is_missing(value) else f"{decimals(value, places)}%"

    def fraction(self, value, places: int = 1) -> str:
        """A fraction shown as percent (``0.038`` -> ``3.8%``)."""
        return DASH if is_missing(value) else f"{decimals(100 * float(value), places)}%"

    def p(self, value, floor=None) -> str:
        return p_value(value, floor)

    def level(self, value, indicator) -> str:
        """An indicator's value: shares in percent, money in yuan, others to 3 significant digits."""
        if is_missing(value):
            return DASH
        if indicator.unit == "share":
            return self.fraction(value, 1)
        if indicator.unit == "yuan":
            return f"{decimals(value, 0)}{UNIT_SPACE}{self.say('元', 'yuan')}" if self.language != "both" else \
                f"{decimals(value, 0)}{UNIT_SPACE}元"
        return fixed(value, 3)

    def effect(self, value, indicator=None, scale: str = "indicator", unit: bool = True) -> str:
        """An effect (a change in the indicator): shares in percentage points, money in
        yuan, rate ratios to three decimals, percent changes in percent. ``unit=False``:
        the number alone (a table whose header names the unit)."""
        if is_missing(value):
            return DASH
        if not unit and scale == "indicator" and indicator is not None and indicator.unit in ("share", "yuan"):
            return decimals(100 * float(value), 2) if indicator.unit == "share" else decimals(value, 0)
        if scale == "rate_ratio":
            return decimals(value, 3)
        if scale in ("percent_change", "percent"):
            return self.percent(value, 1)
        if scale == "relative":  # a fraction of the counterfactual
            return self.fraction(value, 1)
        if indicator is None or scale != "indicator":
            return fixed(value, 3)
        if indicator.unit == "share":
            return f"{decimals(100 * float(value), 2)}{UNIT_SPACE}pp"
        if indicator.unit == "yuan":
            return f"{decimals(value, 0)}{UNIT_SPACE}{self.say('元', 'yuan')}" if self.language != "both" else \
                f"{decimals(value, 0)}{UNIT_SPACE}元"
        return fixed(value, 3)

    def interval(self, low, high, fmt: Callable[[float], str] | None = None) -> str:
        """``[low, high]``; a dash when either end is missing."""
        if is_missing(low) or is_missing(high):
            return DASH
        fmt = fmt or fixed
        return f"[{fmt(low)}, {fmt(high)}]"

    def method(self, text) -> str:
        """A method or inference description the estimators write in English: its short
        Chinese name (:data:`METHODS`) for a Chinese reader, the full text for an English one."""
        if is_missing(text):
            return DASH
        text = str(text)
        withheld = parse_withheld(text)
        if withheld:
            n, k = withheld
            return self.say(f"不报告：仅{n}个试点乡镇（少于{k}个），聚类稳健推断不可靠，见随机化推断", text)
        zh = next((z for prefix, z in METHODS if text.startswith(prefix)), None)
        if zh is None:
            return text
        return self.say(zh, text)

    def estimand(self, name) -> str:
        """What an effect estimates, in the report's language (:data:`ESTIMANDS`)."""
        if is_missing(name):
            return DASH
        return self.both(ESTIMANDS[name]) if name in ESTIMANDS else str(name)

    def period(self, value) -> str:
        return DASH if is_missing(value) else str(value)

    # ------------------------------------------------------------------ tables
    def header(self, column: str) -> str:
        """A column's header in the report's language (:data:`COLUMNS`)."""
        if column not in COLUMNS:
            raise KeyError(f"column '{column}' has no reader's label: add it to evaluation.report.readable.COLUMNS")
        zh, en, _ = COLUMNS[column]
        return self.say(zh, en)

    def cell(self, value, kind: str, indicator=None, scale: str = "indicator", floor=None) -> str:
        """One cell of a column of ``kind`` (see :data:`KINDS`)."""
        if kind == "text":
            return self.text(value)
        if kind == "count":
            return self.count(value)
        if kind == "number":
            return fixed(value, 3)
        if kind == "fraction":
            return self.fraction(value)
        if kind == "percent":
            return self.percent(value)
        if kind == "p":
            return self.p(value, floor)
        if kind == "flag":
            return self.flag(value)
        if kind == "level":
            return self.level(value, indicator) if indicator is not None else fixed(value, 3)
        if kind == "effect":
            return self.effect(value, indicator, scale)
        if kind == "period":
            return self.period(value)
        raise ValueError(f"unknown column kind {kind!r}; one of {KINDS}")

    def table(self, frame: pd.DataFrame | pd.Series, indicator=None, kinds: dict[str, str] | None = None,
              headers: dict[str, tuple[str, str]] | None = None) -> pd.DataFrame:
        """A table of strings for readers: each column formatted by its kind (from
        :data:`COLUMNS`, or ``kinds``), headers in the report's language (``headers``
        adds labels for this table's own columns). A named index becomes a column."""
        if isinstance(frame, pd.Series):
            frame = frame.to_frame()
        frame = frame.reset_index() if _has_named_index(frame) else frame.reset_index(drop=True)
        kinds, headers = kinds or {}, headers or {}
        out = {}
        scales = frame["scale"] if "scale" in frame else None
        floors = frame["p_floor"] if "p_floor" in frame else None
        for column in frame.columns:
            kind = kinds.get(column) or (COLUMNS[column][2] if column in COLUMNS else None)
            if kind is None:
                raise KeyError(f"column '{column}' has no reader's label: add it to evaluation.report.readable.COLUMNS "
                               "or pass kinds= and headers=")
            label = self.both(headers[column]) if column in headers else self.header(column)
            values = frame[column].tolist()
            if kind == "effect":
                cells = [self.cell(v, kind, indicator, scale=(scales.iloc[i] if scales is not None
                                                              and isinstance(scales.iloc[i], str) else "indicator"))
                         for i, v in enumerate(values)]
            elif kind == "p":
                cells = [self.cell(v, kind, floor=(floors.iloc[i] if floors is not None else None))
                         for i, v in enumerate(values)]
            else:
                cells = [self.cell(v, kind, indicator) for v in values]
            out[label] = cells
        return written(pd.DataFrame(out, dtype=object))

    def effects(self, effects: pd.DataFrame, indicator=None,
                columns=("term", "estimate", "std_error", "interval", "p_value", "n_treated", "inference"),
                alpha: float | None = None) -> pd.DataFrame:
        """A tidy effects table for readers: the chosen columns, the interval as one
        ``[low, high]`` column headed with its level, each effect in its indicator's unit
        (shares in pp) or its scale (rate ratios, percent changes)."""
        rows = effects.reset_index(drop=True)
        level = alpha if alpha is not None else (float(rows["alpha"].iloc[0]) if "alpha" in rows and len(rows)
                                                  and not is_missing(rows["alpha"].iloc[0]) else 0.05)
        out = {}
        for column in columns:
            if column == "interval":
                scales = rows["scale"] if "scale" in rows else pd.Series(["indicator"] * len(rows))
                cells = [self.interval(lo, hi, lambda v, s=s: self.effect(v, indicator, s))
                         for lo, hi, s in zip(rows["ci_low"], rows["ci_high"], scales, strict=True)]
                out[self.say(f"{100 * (1 - level):g}% 置信区间", f"{100 * (1 - level):g}% CI")] = cells
                continue
            if column not in rows:
                continue
            single = self.table(rows[[column] + [c for c in ("scale", "p_floor") if c in rows and c != column]],
                                indicator)
            out[self.header(column)] = single[self.header(column)].tolist()
        return written(pd.DataFrame(out, dtype=object))


def written(frame: pd.DataFrame) -> pd.DataFrame:
    """Mark a table of strings as written for readers (a page shows it as it is)."""
    frame.attrs["written_for_readers"] = True
    return frame


def is_written(table) -> bool:
    return isinstance(table, pd.DataFrame) and bool(table.attrs.get("written_for_readers"))


def _has_named_index(frame: pd.DataFrame) -> bool:
    return any(name is not None for name in frame.index.names)


KINDS = ("text", "count", "number", "fraction", "percent", "p", "flag", "level", "effect", "period")

# Words the package itself writes into tables (method names, groups, items): their readers' form.
WORDS: dict[str, tuple[str, str]] = {
    "pilot": ("试点", "pilot"), "non-pilot": ("非试点", "non-pilot"),
    "before the first pilot": ("首批试点前", "before the first pilot"),
    "after the first pilot start": ("首批试点开始后", "after the first pilot start"),
    "unit converted": ("单位换算", "unit converted"), "row dropped": ("删除的行", "row dropped"),
    "warning": ("警告", "warning"),
    "att": ("平均处理效应 ATT", "ATT"), "simple": ("总体", "overall"),
    "never_treated": ("从未试点", "never treated"), "not_yet_treated": ("尚未试点", "not yet treated"),
    "counties": ("县区数", "counties"), "townships": ("乡镇数", "townships"),
    "pilot_townships": ("试点乡镇数", "pilot townships"), "comparison_townships": ("非试点乡镇数", "comparison townships"),
    "first_period": ("首期", "first period"), "last_period": ("末期", "last period"), "periods": ("期数", "periods"),
    "rows": ("行数", "rows"), "comparison": ("对照组", "comparison group"),
}

# What each estimand is, for readers.
ESTIMANDS: dict[str, tuple[str, str]] = {
    "att": ("平均处理效应 ATT", "ATT"), "att_cohort": ("分批次 ATT", "ATT by cohort"),
    "att_event_time": ("分事件时间 ATT", "ATT by event time"), "att_township": ("乡镇 ATT", "township ATT"),
    "level_change": ("水平变化", "level change"), "slope_change": ("斜率变化", "slope change"),
    "effect_at_horizon": ("试点后效果", "effect after the start"),
    "relative_effect_at_horizon": ("试点后相对效果", "relative effect after the start"),
    "control_level_change": ("对照序列水平变化", "comparison series' level change"),
    "control_slope_change": ("对照序列斜率变化", "comparison series' slope change"),
    "difference_in_level_change": ("水平变化之差", "difference in level change"),
    "difference_in_slope_change": ("斜率变化之差", "difference in slope change"),
    "placebo_att": ("安慰剂 ATT", "placebo ATT"), "att_excluding_periods": ("剔除时期后的 ATT", "ATT without the periods"),
    "att_leave_one_out": ("去掉一个试点后的 ATT", "ATT leaving one pilot out"),
}

# Methods and inference as the estimators name them (by the start of their description):
# the short Chinese name a Chinese reader sees.
METHODS: tuple[tuple[str, str], ...] = (
    ("randomization inference", "随机化推断"), ("wild cluster bootstrap", "野聚类自助法"),
    ("placebo in space", "空间安慰剂（非试点乡镇轮流作假试点）"), ("CR2", "CR2 聚类稳健标准误（小样本校正）"),
    ("cluster-robust CR1", "CR1 聚类稳健标准误"), ("analytic influence-function", "影响函数解析标准误（按乡镇聚类）"),
    ("jackknife", "刀切法标准误"), ("panel Newey-West", "Newey-West 稳健标准误"), ("ARIMA", "ARIMA 误差"),
    ("conventional (parallel trends exact)", "常规区间（平行趋势严格成立）"), ("conventional", "常规标准误"),
    ("Callaway-Sant'Anna", "Callaway–Sant'Anna"), ("two-way fixed effects, ATT by", "双向固定效应（分组 ATT）"),
    ("two-way fixed effects", "双向固定效应"), ("event study", "事件研究"), ("synthetic control", "合成控制"),
    ("synthetic difference-in-differences", "合成双重差分"), ("honest DiD, smoothness", "平滑度界（Rambachan–Roth）"),
    ("honest DiD, relative magnitudes", "相对幅度界（Rambachan–Roth）"),
    ("ITS segmented regression", "中断时间序列分段回归"), ("controlled ITS", "对照中断时间序列"),
    ("Poisson (PPML)", "泊松（PPML）双重差分"),
    ("imputation DiD", "插补法双重差分（Borusyak–Jaravel–Spiess）"),
    ("BJS (2024) Theorem 3", "BJS 定理3保守方差（按乡镇聚类）"),
    ("Sun-Abraham", "Sun–Abraham 交互加权事件研究"),
    ("extended TWFE Poisson", "扩展双向固定效应（Wooldridge，泊松）"),
    ("extended TWFE", "扩展双向固定效应（Wooldridge）"),
    ("PSM-DID", "倾向得分匹配双重差分"),
    ("Abadie-Imbens (2006)", "Abadie–Imbens（2006）匹配估计量方差（匹配试点乡镇的 ATT；倾向得分视为已知）"),
    ("township bootstrap", "乡镇自助法（每次重估倾向得分并重新匹配）"),
    ("effects by covariate subgroup", "按协变量分组的效果（随机化推断）"),
)

_PER_ZH = {1000: "千", 10_000: "万", 100_000: "十万"}

# Words of units the catalogue writes in English only.
UNIT_WORDS = {"services": "项", "yuan": "元"}

# Every column a reader may see: (Chinese header, English header, kind).
COLUMNS: dict[str, tuple[str, str, str]] = {
    # effects
    "indicator": ("指标", "Indicator", "text"),
    "name_zh": ("指标", "Indicator", "text"),
    "method": ("方法", "Method", "text"),
    "estimand": ("估计量", "Estimand", "text"),
    "term": ("项", "Term", "text"),
    "estimate": ("估计值", "Estimate", "effect"),
    "std_error": ("标准误", "Std. error", "effect"),
    "ci_low": ("置信区间下限", "CI lower", "effect"),
    "ci_high": ("置信区间上限", "CI upper", "effect"),
    "p_value": ("p 值", "p-value", "p"),
    "inference": ("推断方法", "Inference", "text"),
    "n_obs": ("观测数", "Observations", "count"),
    "n_units": ("乡镇数", "Townships", "count"),
    "n_treated": ("试点乡镇数", "Pilot townships", "count"),
    "scale": ("尺度", "Scale", "text"),
    "p_floor": ("最小可能 p 值", "Smallest possible p", "number"),
    "event_time": ("事件时间", "Event time", "count"),
    "horizon": ("试点后期数", "Periods after start", "count"),
    # townships and pilots
    "township_id": ("乡镇编码", "Township code", "text"),
    "township_name": ("乡镇", "Township", "text"),
    "county": ("县区", "County", "text"),
    "cohort": ("试点批次", "Cohort", "text"),
    "model": ("整合模式", "Integration model", "text"),
    "pilot": ("试点", "Pilot", "flag"),
    "reason": ("原因", "Reason", "text"),
    # data quality
    "item": ("项目", "Item", "text"),
    "value": ("数值", "Value", "text"),
    "detail": ("说明", "Detail", "text"),
    "column": ("列", "Column", "text"),
    "missing_cells": ("缺失单元格", "Missing cells", "count"),
    "share": ("占比", "Share", "fraction"),
    "missing_periods": ("缺失期数", "Missing periods", "count"),
    "missing_labels": ("缺失的期", "Missing periods (labels)", "text"),
    "empty_cells": ("空值数", "Empty cells", "count"),
    "empty_columns": ("有空值的列", "Columns with empty cells", "text"),
    "cells": ("单元格数", "Cells", "count"),
    "outlying_cells": ("异常值数", "Outlying cells", "count"),
    "min": ("最小值", "Minimum", "number"),
    "median": ("中位数", "Median", "number"),
    "max": ("最大值", "Maximum", "number"),
    "group": ("组别", "Group", "text"),
    "period_group": ("时期", "Period", "text"),
    "period": ("时期", "Period", "period"),
    # covariates, balance and matching
    "covariate": ("协变量", "Covariate", "text"),
    "kind": ("类型", "Kind", "text"),
    "n_pilots": ("试点乡镇数", "Pilot townships", "count"),
    "n_comparison": ("对照乡镇数", "Comparison townships", "count"),
    "pilot_mean": ("试点均值", "Pilot mean", "number"),
    "pilot_sd": ("试点标准差", "Pilot SD", "number"),
    "comparison_mean": ("对照均值", "Comparison mean", "number"),
    "comparison_sd": ("对照标准差", "Comparison SD", "number"),
    "smd_before": ("标准化均值差（匹配前）", "SMD before", "number"),
    "smd_after": ("标准化均值差（匹配后）", "SMD after", "number"),
    "variance_ratio_before": ("方差比（匹配前）", "Variance ratio before", "number"),
    "variance_ratio_after": ("方差比（匹配后）", "Variance ratio after", "number"),
    "n_pilots_after": ("匹配后试点乡镇数", "Pilot townships after", "count"),
    "effective_n_comparison": ("对照有效样本量", "Effective comparison n", "number"),
    "pilot_mean_after": ("匹配后试点均值", "Pilot mean after", "number"),
    "pilot_sd_after": ("匹配后试点标准差", "Pilot SD after", "number"),
    "comparison_mean_after": ("匹配后对照均值", "Comparison mean after", "number"),
    "comparison_sd_after": ("匹配后对照标准差", "Comparison SD after", "number"),
    "p_difference": ("组间差异 p 值", "p of the difference", "p"),
    "difference": ("组间差异", "Difference", "effect"),
    "subgroup": ("子组", "Subgroup", "text"),
    "channel": ("机制指标", "Channel", "text"),
    "outcome": ("结果指标", "Outcome", "text"),
    "direction": ("方向", "Direction", "text"),
}
