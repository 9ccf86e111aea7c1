"""Figures for the chapters and the Word report, labelled in the report's language.

Every public figure takes a keyword-only ``reader`` (:class:`evaluation.report.readable.Reader`;
``None`` means ``Reader("both")``, Chinese then English) and writes each title, axis label,
legend entry, annotation and tick label through it: ``zh`` figures carry no English words
but method names and units, ``en`` figures no Chinese but names from the data. Numbers are
the tables' numbers: shares on a level axis in percent, changes in a share in percentage
points, p-values as ``< 0.001`` or ``≤ 1/(B+1)``, never scientific notation.

Texts a caller passes (series names, titles) are either a ``(zh, en)`` pair, which the
reader chooses from, or a string already in the report's language.

Figures are drawn at the width of an A4 page's text (:data:`PAGE_WIDTH_IN`, 17 cm) with
fonts of 9 points or more at that size, so a figure placed at the page width in the Word
report or a printed page stays legible.

Chinese labels use Noto Sans CJK SC, shipped inside the ``mplfonts`` package (a runtime
dependency) and registered with matplotlib here, so no figure shows empty boxes whatever
fonts the machine has.

Every string from the data or the study file (township ids and names, indicator names and
units) goes through :func:`literal` before it becomes figure text, so a ``$`` in a name is
drawn as a dollar sign, never parsed as mathtext.
"""

from __future__ import annotations

import re
import textwrap
from functools import cache
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import font_manager
from matplotlib.dates import AutoDateFormatter, AutoDateLocator
from matplotlib.lines import Line2D
from matplotlib.ticker import Formatter, MaxNLocator, PercentFormatter

from evaluation.diagnostics.sensitivity import BOUNDS
from evaluation.report.readable import MAX_DECIMALS, UNIT_SPACE, Reader, decimals
from evaluation.study.periods import parse_any_period

CJK_FONT_FILE = "NotoSansCJKsc-Regular.otf"
PILOT_COLOUR, COMPARISON_COLOUR, COUNTERFACTUAL_COLOUR = "#c0392b", "#2c3e50", "#7f8c8d"
IMPROVED_COLOUR, TARGET_COLOUR, PLACEBO_COLOUR = "#27ae60", "#16a085", "#bdc3c7"
PAGE_WIDTH_IN = 17 / 2.54  # the text width of an A4 portrait page with 2 cm margins
FONT_PT = 9                # the smallest font of a figure printed at PAGE_WIDTH_IN
# Forest-plot labels wrap at these many characters per line (a CJK character is about two Latin ones wide).
WRAP_ZH, WRAP_EN = 14, 28

Text = str | tuple[str, str]  # a text already in the report's language, or (zh, en)


@cache
def cjk_font_path() -> Path:
    import mplfonts

    path = Path(mplfonts.__file__).parent / "fonts" / CJK_FONT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the CJK font {CJK_FONT_FILE} is missing from the mplfonts package ({path})")
    return path


def setup_style() -> str:
    """Register the CJK font and set the house style (page-width figures, 9-point
    fonts and up); returns the font family name."""
    path = cjk_font_path()
    font_manager.fontManager.addfont(str(path))
    family = font_manager.FontProperties(fname=str(path)).get_name()
    sns.set_theme(style="whitegrid", context="paper")
    plt.rcParams.update({
        "font.family": "sans-serif",
        "font.sans-serif": [family, "DejaVu Sans"],
        "axes.unicode_minus": False,
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "figure.figsize": (PAGE_WIDTH_IN, 3.6),
        "font.size": FONT_PT,
        "axes.titlesize": FONT_PT + 1,
        "axes.labelsize": FONT_PT,
        "xtick.labelsize": FONT_PT,
        "ytick.labelsize": FONT_PT,
        "legend.fontsize": FONT_PT,
        "legend.title_fontsize": FONT_PT,
        "figure.titlesize": FONT_PT + 1,
        "axes.titleweight": "normal",  # the CJK font ships one weight
    })
    return family


def literal(text) -> str:
    """``text`` as matplotlib must draw it when it comes from the data or the study file
    (township ids and names, indicator names, units): every ``$`` escaped as ``\\$`` so
    that no part of it is parsed as mathtext (a name ``$\\frac{1}{0}$`` is drawn as typed,
    not as a formula, and cannot crash the figure). Outside ``$...$`` matplotlib draws
    backslashes, ``^``, ``_`` and braces literally; ``text.usetex`` stays off."""
    return str(text).replace("$", r"\$")


# ----------------------------------------------------------------------------- words and numbers

def _reader(reader: Reader | None) -> Reader:
    return Reader("both") if reader is None else reader


def _say(reader: Reader, text: Text, sep: str = " / ") -> str:
    """A caller's text: a ``(zh, en)`` pair in the reader's language, or a string as given."""
    if isinstance(text, tuple):
        if len(text) != 2:
            raise ValueError(f"a figure text is a string or a (zh, en) pair, got {text!r}")
        return literal(reader.say(*text, sep=sep))
    return literal(text)


def _titled(reader: Reader, title: Text, indicator) -> str:
    """``title: indicator name``, one line per language when both are shown."""
    if isinstance(title, tuple):
        zh, en = title
        return literal(reader.say(f"{zh}：{indicator.name_zh}", f"{en}: {indicator.name_en}", sep="\n"))
    return literal(f"{title}: {reader.name(indicator)}")


def _name(reader: Reader, indicator) -> str:
    return literal(reader.say(indicator.name_zh, indicator.name_en, sep="\n"))


def _is_share(indicator) -> bool:
    return indicator is not None and indicator.unit == "share"


def _units(indicator, change: bool) -> tuple[str, str]:
    """The indicator's unit (``change``: of its effects) in Chinese and in English."""
    return Reader("zh").unit(indicator, change=change), Reader("en").unit(indicator, change=change)


def _level_label(reader: Reader, indicator) -> str:
    """The axis label of an indicator's values: its unit (``%`` for a share)."""
    zh, en = _units(indicator, change=False)
    return literal(reader.say(zh, en, sep="\n"))


def _effect_label(reader: Reader, indicator, what: tuple[str, str] = ("效果", "effect")) -> str:
    """The axis label of an effect in the indicator's unit (percentage points for a share),
    one line per language when both are shown."""
    if indicator is None:
        return reader.say(*what, sep="\n")
    zh, en = _units(indicator, change=True)
    return literal(reader.say(f"{what[0]}（{zh}）", f"{what[1]} ({en})", sep="\n"))


class PlainFormatter(Formatter):
    """Tick labels in fixed notation, thousands separated, with as few decimals as the
    ticks need (never ``1e-05`` or an offset); values multiplied by ``scale`` (100 turns
    a change in a share into percentage points) and followed by ``suffix``; ``grouping``
    False for years and period numbers (``2016``, not ``2,016``)."""

    def __init__(self, scale: float = 1.0, suffix: str = "", grouping: bool = True):
        self.scale, self.suffix, self.grouping, self.places = scale, suffix, grouping, 0

    def set_locs(self, locs):
        super().set_locs(locs)
        values = [float(v) * self.scale for v in locs if np.isfinite(v)]
        self.places = next((d for d in range(MAX_DECIMALS + 1)
                            if all(abs(round(v, d) - v) <= 1e-9 * max(1.0, abs(v)) for v in values)), MAX_DECIMALS)

    def __call__(self, x, pos=None) -> str:
        text = decimals(float(x) * self.scale, self.places)
        return (text if self.grouping else text.replace(",", "")) + self.suffix


def _period_axis(axis) -> None:
    """Ticks of whole periods (event times, period numbers, years): integers, no separators."""
    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(PlainFormatter(grouping=False))


def _date_axis(axis) -> None:
    """Date ticks that do not collide at the page width (``2019-07``, ``2019``)."""
    locator = AutoDateLocator(minticks=3, maxticks=7)
    axis.set_major_locator(locator)
    axis.set_major_formatter(AutoDateFormatter(locator))


def _legend_below(ax, ncol: int = 3) -> None:
    """The legend under the axes (at most ``ncol`` entries a row), where it never covers the data."""
    handles, labels = ax.get_legend_handles_labels()
    lines = ax.get_xlabel().count("\n") + 1 if ax.get_xlabel() else 0  # a bilingual label takes two lines
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.1 * lines),
              ncol=min(len(labels), ncol), frameon=False)


def _finish(ax, created: bool) -> None:
    """Fit a figure this module created to its labels (a caller's axes are the caller's)."""
    if created:
        ax.figure.tight_layout()


def _level_axis(axis, indicator) -> None:
    """Ticks of an indicator's values: percent for a share, plain numbers otherwise."""
    axis.set_major_formatter(PercentFormatter(1.0) if _is_share(indicator) else PlainFormatter())


def _effect_axis(axis, indicator) -> None:
    """Ticks of an effect: percentage points for a share (values times 100), plain otherwise."""
    axis.set_major_formatter(PlainFormatter(100.0 if _is_share(indicator) else 1.0))


_PERIOD_WORDS = {"month": ("月", "months"), "quarter": ("季度", "quarters"), "year": ("年", "years")}


def p_text(reader: Reader, p, floor=None) -> str:
    """``p = 0.250``, ``p < 0.001`` or ``p ≤ 0.05`` (the smallest p ``floor`` of a resampling method)."""
    written = reader.p(p, floor).replace(UNIT_SPACE, " ")  # a figure's text never wraps
    return f"p {written}" if written.startswith(("<", "≤")) else f"p = {written}"


def _periods_since_start(reader: Reader, indicator) -> str:
    zh, en = _PERIOD_WORDS.get(indicator.frequency or "", ("期", "periods"))
    return reader.say(f"相对试点开始的{zh}数", f"{en} since the pilot start")


# ----------------------------------------------------------------------------- one indicator

def trends(series_by_group: dict[Text, pd.Series], indicator, starts: list[str], target: float | None = None,
           ax=None, *, reader: Reader | None = None):
    """Pilot and comparison series over time, pilot starts and the policy target marked.
    ``series_by_group`` maps each series' name (a ``(zh, en)`` pair or a string in the
    report's language) to its values on a period index."""
    reader = _reader(reader)
    created, ax = ax is None, ax or plt.subplots()[1]
    colours = [PILOT_COLOUR, COMPARISON_COLOUR, "#2980b9", "#8e44ad"]
    if len(series_by_group) > len(colours):
        raise ValueError(f"trends draws at most {len(colours)} series, got {len(series_by_group)}")
    for (name, series), colour in zip(series_by_group.items(), colours, strict=False):
        x = series.index.to_timestamp()
        ax.plot(x, series.to_numpy(), label=_say(reader, name), color=colour, lw=1.8)
    for s in starts:
        ax.axvline(parse_any_period(s).to_timestamp(), color=PILOT_COLOUR, ls=":", lw=1)  # 2019-07 or 2019Q3
    if starts:
        ax.plot([], [], color=PILOT_COLOUR, ls=":", label=reader.say("试点开始", "pilot start"))
    if target is not None:
        level = reader.level(target, indicator)
        ax.axhline(target, color=TARGET_COLOUR, ls="--", lw=1.2,
                   label=reader.say(f"政策目标 {level}", f"policy target {level}"))
    ax.set_title(_name(reader, indicator))
    ax.set_ylabel(_level_label(reader, indicator))
    _level_axis(ax.yaxis, indicator)
    _date_axis(ax.xaxis)
    _legend_below(ax)
    _finish(ax, created)
    return ax


def event_study(plot_data: pd.DataFrame, indicator, title: Text = ("事件研究", "Event study"), band: bool = False,
                ax=None, *, reader: Reader | None = None, level: float = 0.95):
    """Effects by event time with their ``level`` intervals (and the uniform band when
    present and ``band``); effects of a share in percentage points."""
    reader = _reader(reader)
    created, ax = ax is None, ax or plt.subplots()[1]
    x = plot_data["event_time"] if "event_time" in plot_data else plot_data["term"].str.split("=").str[1].astype(float)
    if band and "band_low" in plot_data:
        ax.fill_between(x, plot_data["band_low"], plot_data["band_high"], color=PILOT_COLOUR, alpha=0.12,
                        label=reader.say("一致置信带", "uniform band"))
    percent = f"{100 * level:g}%"
    ax.errorbar(x, plot_data["estimate"], yerr=[plot_data["estimate"] - plot_data["ci_low"],
                                                plot_data["ci_high"] - plot_data["estimate"]],
                fmt="o", ms=3.5, color=PILOT_COLOUR, ecolor="#e6b0aa", elinewidth=1.2,
                label=reader.say(f"估计值与{percent}置信区间", f"estimate and {percent} CI"))
    _event_time_axes(ax, indicator, title, reader)
    _legend_below(ax)
    _finish(ax, created)
    return ax


def _event_time_axes(ax, indicator, title: Text, reader: Reader) -> None:
    """What every event-study figure shares: the zero line, the start marked between -1 and
    0, periods since the start on x, the effect in the indicator's unit on y, the title."""
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(-0.5, color=COUNTERFACTUAL_COLOUR, ls=":", lw=1)
    ax.set_xlabel(_periods_since_start(reader, indicator))
    ax.set_ylabel(_effect_label(reader, indicator))
    _period_axis(ax.xaxis)
    _effect_axis(ax.yaxis, indicator)
    ax.set_title(_titled(reader, title, indicator))


# Colours of the estimators in the overlaid event study (colour-blind safe, Okabe-Ito).
ESTIMATOR_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00")
ESTIMATOR_MARKERS = ("o", "s", "^", "D", "v")


def event_studies(plots: dict, indicator, title: Text = ("各估计方法的事件研究", "Event studies by estimator"),
                  ax=None, *, reader: Reader | None = None, level: float = 0.95):
    """Several estimators' effects by event time in one figure: ``plots`` maps a label
    (zh, en) to a table with ``event_time``, ``estimate``, ``ci_low``, ``ci_high``; each
    estimator's points are shifted sideways a little so that the intervals do not hide each
    other (the bars are ``level`` intervals). Effects of a share in percentage points."""
    reader = _reader(reader)
    created, ax = ax is None, ax or plt.subplots()[1]
    shown = [(label, frame) for label, frame in plots.items() if frame is not None and len(frame)]
    dodge = 0.6 / max(1, len(shown))
    for j, (label, frame) in enumerate(shown):
        frame = frame.sort_values("event_time")
        x = frame["event_time"].to_numpy(float) + (j - (len(shown) - 1) / 2) * dodge
        colour = ESTIMATOR_COLOURS[j % len(ESTIMATOR_COLOURS)]
        ax.errorbar(x, frame["estimate"], yerr=[frame["estimate"] - frame["ci_low"], frame["ci_high"] - frame["estimate"]],
                    fmt=ESTIMATOR_MARKERS[j % len(ESTIMATOR_MARKERS)], ms=3.2, color=colour, ecolor=colour,
                    elinewidth=0.9, alpha=0.85, label=reader.both(label))
    _event_time_axes(ax, indicator, title, reader)
    _legend_below(ax, ncol=2)
    if created:  # a taller figure: four estimators' intervals side by side need the height
        width, height = ax.figure.get_size_inches()
        ax.figure.set_size_inches(width, height * 1.3)
    _finish(ax, created)
    return ax


def interrupted_series(plot_data: pd.DataFrame, indicator, title: Text = ("中断时间序列", "Interrupted time series"),
                       ax=None, *, reader: Reader | None = None, level: float = 0.95):
    """Observed series, fitted line, and the counterfactual with its ``level`` band."""
    reader = _reader(reader)
    created, ax = ax is None, ax or plt.subplots()[1]
    x = plot_data.index.to_timestamp()
    post = plot_data["segment"] != "pre"
    percent = f"{100 * level:g}%"
    ax.fill_between(x[post], plot_data.loc[post, "counterfactual_low"], plot_data.loc[post, "counterfactual_high"],
                    color=COUNTERFACTUAL_COLOUR, alpha=0.2,
                    label=reader.say(f"反事实{percent}区间", f"counterfactual {percent} band"))
    ax.plot(x[post], plot_data.loc[post, "counterfactual"], color=COUNTERFACTUAL_COLOUR, ls="--",
            label=reader.say("反事实", "counterfactual"))
    ax.plot(x, plot_data["observed"], "o", ms=2.5, color=COMPARISON_COLOUR, label=reader.say("观测值", "observed"))
    ax.plot(x, plot_data["fitted"], color=PILOT_COLOUR, lw=1.6, label=reader.say("拟合值", "fitted"))
    excluded = plot_data["segment"] == "excluded"
    if excluded.any():
        ax.plot(x[excluded], plot_data.loc[excluded, "observed"], "x", color="#e67e22", ms=4,
                label=reader.say("未纳入拟合", "left out of the fit"))
    ax.set_title(_titled(reader, title, indicator))
    ax.set_ylabel(_level_label(reader, indicator))
    _level_axis(ax.yaxis, indicator)
    _date_axis(ax.xaxis)
    _legend_below(ax)
    _finish(ax, created)
    return ax


# ----------------------------------------------------------------------------- all indicators

def wrap_zh(text: str, width: int = WRAP_ZH) -> list[str]:
    """Chinese text in lines of at most ``width`` characters, a full-width parenthesis
    (``（每千常住人口）``) kept whole on its line when it fits one."""
    lines: list[str] = []
    for chunk in re.split(r"(?=（)", str(text)):
        if lines and len(lines[-1]) + len(chunk) <= width:
            lines[-1] += chunk
            continue
        lines += textwrap.wrap(chunk, width, break_long_words=True) if chunk.strip() else []
    return lines


def _wrapped(reader: Reader, zh: str, en: str) -> str:
    """An indicator's name wrapped for the forest plot's label column."""
    lines_zh = wrap_zh(zh) or [""]
    lines_en = textwrap.wrap(str(en), WRAP_EN) or [""]
    return literal(reader.say("\n".join(lines_zh), "\n".join(lines_en), sep="\n"))


def forest(table: pd.DataFrame, *, reader: Reader | None = None, estimate: str = "relative_pct",
           low: str = "relative_low_pct", high: str = "relative_high_pct", names: tuple[str, str] = ("name_zh", "name_en"),
           improved: str = "improved", worsened: str = "worsened",
           title: Text = ("各指标的试点效果", "Pilot effect by indicator"),
           xlabel: Text = ("相对于反事实均值的变化", "Change relative to the counterfactual mean"), ax=None):
    """Effects in percent (by default relative to the pilots' counterfactual mean) with
    their intervals, one row per indicator of ``table`` (the scorecard), in its order:
    the indicator's name (wrapped) on the left, the estimate and interval written on the
    right, the point coloured by ``improved`` / ``worsened``. A row without an estimate
    reads "not estimated". The columns read are arguments, so any percent columns of the
    scorecard can be drawn. Sized for an A4 page's text width with 9-point labels; the
    height grows with the rows and the lines of their names."""
    reader = _reader(reader)
    needed = [*names, estimate, low, high, improved, worsened]
    missing = [c for c in needed if c not in table]
    if missing:
        raise KeyError(f"forest plot: the table has no column(s) {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ValueError("forest plot: the table has no rows")
    table = table.reset_index(drop=True)
    labels = [_wrapped(reader, zh, en) for zh, en in zip(table[names[0]], table[names[1]], strict=True)]
    lines = max(label.count("\n") + 1 for label in labels)
    row_in = max(0.34, 0.17 * lines + 0.12)  # 9 pt lines are 0.15 in apart
    legend_in, top_in = 0.45, 0.55
    height = top_in + legend_in + 0.55 + row_in * len(table)
    if ax is None:
        fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, height))
    else:
        fig = ax.figure
    y = np.arange(len(table))[::-1].astype(float)
    value = pd.to_numeric(table[estimate], errors="raise").to_numpy(dtype=float)
    lo = pd.to_numeric(table[low], errors="raise").to_numpy(dtype=float)
    hi = pd.to_numeric(table[high], errors="raise").to_numpy(dtype=float)
    shown = np.isfinite(value)
    better = table[improved].fillna(False).astype(bool).to_numpy()
    worse = table[worsened].fillna(False).astype(bool).to_numpy()
    ax.errorbar(value[shown], y[shown], xerr=[value[shown] - lo[shown], hi[shown] - value[shown]],
                fmt="none", ecolor="#95a5a6", elinewidth=1.5)
    kinds = [(better & ~worse, IMPROVED_COLOUR, "o", ("改善", "improved")),
             (worse, PILOT_COLOUR, "s", ("恶化", "worsened")),
             (~better & ~worse, COMPARISON_COLOUR, "D", ("无明确变化", "no clear change"))]
    handles = []
    for mask, colour, marker, words in kinds:
        ax.scatter(value[mask & shown], y[mask & shown], color=colour, marker=marker, s=30, zorder=3)
        handles.append(Line2D([], [], color=colour, marker=marker, ls="none", label=reader.say(*words)))
    ax.axvline(0, color="black", lw=0.8)
    ax.set_ylim(-0.6, len(table) - 0.4)
    ax.set_yticks(y, labels, fontsize=FONT_PT)
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(PlainFormatter(suffix="%"))
    ax.tick_params(axis="x", labelsize=FONT_PT)
    ax.set_xlabel(_say(reader, xlabel), fontsize=FONT_PT)
    ax.set_title(_say(reader, title), fontsize=FONT_PT + 1)
    right = ax.twinx()  # the numbers as a column of right-hand tick labels
    right.set_ylim(ax.get_ylim())
    right.grid(False)
    written = [f"{reader.percent(v)} {reader.interval(a, b, reader.percent)}" if ok
               else reader.say("未能估计", "not estimated")
               for v, a, b, ok in zip(value, lo, hi, shown, strict=True)]
    right.set_yticks(y, written, fontsize=FONT_PT)
    right.tick_params(axis="y", length=0)
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=FONT_PT)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    return ax


# ----------------------------------------------------------------------------- robustness

def synthetic_control_gaps(gaps: pd.DataFrame, indicator, names: dict | None = None, p_values: dict | None = None,
                           columns: int = 4, *, reader: Reader | None = None, p_floors: dict | None = None):
    """One small panel per pilot township: its gap to its synthetic twin (red) over the
    donors' placebo gaps (grey), the start marked (Abadie et al. 2010, fig. 4). ``gaps``
    has columns pilot, township, period, gap, placebo, start (one row per period);
    ``names``, ``p_values`` and ``p_floors`` (the smallest p the placebos can give) map
    a pilot's id to its name and placebo p-value."""
    reader = _reader(reader)
    pilots = list(dict.fromkeys(gaps["pilot"].astype(str)))
    gaps = gaps.assign(pilot=gaps["pilot"].astype(str), township=gaps["township"].astype(str))
    n = len(pilots)
    rows, across = int(np.ceil(n / columns)), min(columns, n)
    fig, axes = plt.subplots(rows, across, figsize=(PAGE_WIDTH_IN, 1.75 * rows + 0.9),
                             sharex=True, sharey=True, squeeze=False)
    for ax, pilot in zip(axes.ravel(), pilots, strict=False):
        mine = gaps[gaps["pilot"] == pilot]
        for _, g in mine[mine["placebo"]].groupby("township"):
            ax.plot(g["period"], g["gap"], color=PLACEBO_COLOUR, lw=0.5)
        own = mine[~mine["placebo"]]
        ax.plot(own["period"], own["gap"], color=PILOT_COLOUR, lw=1.6)
        ax.axvline(own["start"].iloc[0], color="black", lw=0.8, ls="--")
        ax.axhline(0, color="black", lw=0.6)
        label = literal((names or {}).get(pilot, pilot))
        p = (p_values or {}).get(pilot)
        if p is not None:
            label += "\n" + p_text(reader, p, (p_floors or {}).get(pilot))
        ax.set_title(label, fontsize=FONT_PT)
        _effect_axis(ax.yaxis, indicator)
        _period_axis(ax.xaxis)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    heading = reader.say("合成控制差距（红：试点；灰：安慰剂）", "Synthetic-control gap (red: pilot; grey: placebos)",
                         sep="\n")
    fig.suptitle(heading + "\n" + literal(reader.name(indicator)), fontsize=FONT_PT + 1)
    fig.supxlabel(reader.say("时期序号", "period index"), fontsize=FONT_PT)
    fig.supylabel(_effect_label(reader, indicator, ("差距", "gap")), fontsize=FONT_PT)
    fig.tight_layout()
    return fig


def _bound_value(reader: Reader, name: str, value: float, indicator) -> str:
    """A bound's value: Mbar is a ratio; a smoothness bound M is in the indicator's unit of
    change (percentage points for a share, three significant digits: M is small)."""
    if name not in BOUNDS.values():
        raise ValueError(f"sensitivity plot data: {name!r} names no bound of {sorted(BOUNDS.values())}")
    if name == BOUNDS["relative_magnitude"] or not _is_share(indicator):
        return reader.number(value)
    return f"{reader.number(100 * float(value))} pp"


def _bound_name(label: str) -> str:
    """The bound's name of a sensitivity plot-data label (``Mbar=0.5`` -> ``Mbar``)."""
    return str(label).split("=", 1)[0]


def sensitivity(panels: list[tuple[pd.DataFrame, float | None]], indicator, titles: list[Text], *,
                reader: Reader | None = None):
    """Honest confidence sets against the bound (Rambachan and Roth 2023, fig. 5): the
    conventional interval first, then one interval per bound value; 0 marked. Each panel
    is (plot data of :func:`evaluation.diagnostics.sensitivity.honest_sensitivity`, breakdown value)."""
    reader = _reader(reader)
    fig, axes = plt.subplots(1, len(panels), figsize=(PAGE_WIDTH_IN, 3.4), squeeze=False)
    for ax, (table, bd), title in zip(axes.ravel(), panels, titles, strict=True):
        x = np.arange(len(table))
        colours = [COMPARISON_COLOUR] + [PILOT_COLOUR] * (len(table) - 1)
        for xi, (_, row), colour in zip(x, table.iterrows(), colours, strict=True):
            ax.plot([xi, xi], [row["ci_low"], row["ci_high"]], color=colour, lw=3, solid_capstyle="butt")
        ax.axhline(0, color="black", lw=0.8)
        rest = table.iloc[1:]
        ticks = [reader.say("原估计", "original", sep="\n")] + [
            f"{_bound_name(lab)}\n{_bound_value(reader, _bound_name(lab), b, indicator)}"
            for lab, b in zip(rest["label"], rest["bound"], strict=True)]
        ax.set_xticks(x, ticks, fontsize=FONT_PT)
        ax.set_xlim(-0.6, len(table) - 0.4)
        heading = _say(reader, title, sep="\n")
        if bd is not None:
            if rest.empty:
                raise ValueError("sensitivity plot data with a breakdown value but no bound rows")
            written = _bound_value(reader, _bound_name(rest["label"].iloc[0]), bd, indicator)
            heading += "\n" + reader.say(f"临界值 = {written}", f"breakdown = {written}")
        ax.set_title(heading, fontsize=FONT_PT)
        ax.set_ylabel(_effect_label(reader, indicator))
        _effect_axis(ax.yaxis, indicator)
    fig.suptitle(_titled(reader, ("平行趋势敏感性", "Parallel-trends sensitivity"), indicator), fontsize=FONT_PT + 1)
    fig.tight_layout()
    return fig


def randomization_distribution(draws, estimate: float, p_value: float, p_floor: float | None, indicator, *,
                               reader: Reader | None = None):
    """The placebo test Chinese evaluations show (随机化推断 / 安慰剂检验): the distribution of
    the DiD estimate when the pilot histories are given to randomly drawn townships, with
    the real estimate marked and its randomization p-value (two-sided: the share of draws
    at least as far from zero). Effects of a share in percentage points."""
    reader = _reader(reader)
    fig, ax = plt.subplots()
    values = np.asarray(draws, float)
    ax.hist(values, bins=min(40, max(10, len(values) // 20)), color=COMPARISON_COLOUR, alpha=0.55,
            label=reader.say(f"随机分配的估计（{len(values):,} 次）", f"random assignments ({len(values):,})"))
    ax.axvline(estimate, color=PILOT_COLOUR, lw=2,
               label=reader.say(f"真实估计 {reader.effect(estimate, indicator)}，{p_text(reader, p_value, p_floor)}",
                                f"real estimate {reader.effect(estimate, indicator)}, "
                                f"{p_text(reader, p_value, p_floor)}").replace(UNIT_SPACE, " "))
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(_effect_label(reader, indicator))
    ax.set_ylabel(reader.say("次数", "draws"))
    _effect_axis(ax.xaxis, indicator)
    ax.set_title(_titled(reader, ("随机化推断（安慰剂检验）", "Randomization inference (placebo test)"), indicator))
    _legend_below(ax, ncol=1)
    _finish(ax, True)
    return fig


def synthetic_control(fit, indicator=None, title: Text | None = None, *, reader: Reader | None = None):
    """One pilot township against its synthetic twin (left) and its gap over every
    placebo's gap (right), from :func:`evaluation.synth.synthetic_control`; values in the
    indicator's unit when ``indicator`` is given."""
    reader = _reader(reader)
    fig, (left, right) = plt.subplots(1, 2, figsize=(PAGE_WIDTH_IN, 3.2))
    data = fit.plot_data
    start = data.loc[data["post"], "period"].min()
    left.plot(data["period"], data["pilot"], color=PILOT_COLOUR, lw=1.6, label=reader.say("试点乡镇", "pilot township"))
    left.plot(data["period"], data["synthetic"], color=COMPARISON_COLOUR, lw=1.4, ls="--",
              label=reader.say("合成对照", "synthetic control"))
    for _, g in fit.diagnostics["placebo_gaps"].groupby("township"):
        right.plot(g["period"], g["gap"], color=PLACEBO_COLOUR, lw=0.5)
    right.plot(data["period"], data["gap"], color=PILOT_COLOUR, lw=1.6)
    for ax in (left, right):
        ax.axvline(start, color="black", lw=0.8, ls="--")
        _period_axis(ax.xaxis)
    right.axhline(0, color="black", lw=0.6)
    left.legend(loc="best")
    if indicator is not None:
        _level_axis(left.yaxis, indicator)
        _effect_axis(right.yaxis, indicator)
        left.set_ylabel(_level_label(reader, indicator))
        right.set_ylabel(_effect_label(reader, indicator, ("差距", "gap")))
    else:
        left.yaxis.set_major_formatter(PlainFormatter())
        right.yaxis.set_major_formatter(PlainFormatter())
    pilot = literal(fit.diagnostics["pilot"])
    left.set_title(_say(reader, title) if title is not None else
                   pilot + ("\n" + literal(reader.name(indicator)) if indicator is not None else ""), fontsize=FONT_PT)
    e = fit.effects[0]
    numbers = f"ATT {reader.effect(e.estimate, indicator)}, {p_text(reader, e.p_value, e.p_floor)}"
    right.set_title(reader.say("差距与安慰剂", "gap and placebos", sep="\n") + "\n" + numbers, fontsize=FONT_PT)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- balance and heterogeneity

# Names of the township characteristics of the data contract (issue 15); a caller's
# ``labels`` add to and override them.
COVARIATE_NAMES: dict[str, tuple[str, str]] = {
    "distance_km": ("到县城距离（公里）", "distance to the county seat (km)"),
    "beds": ("床位数", "beds"),
    "health_workers": ("卫生技术人员数", "health workers"),
    "mountainous": ("是否山区", "mountainous"),
    "baseline_population": ("基线常住人口", "baseline population"),
    "baseline_visits_per_1000": ("基线每千人就诊人次", "baseline visits per 1,000"),
    "propensity_score": ("倾向得分", "propensity score"),
}
SMD_THRESHOLD = 0.1  # |SMD| above this is the usual sign of imbalance (Austin 2009)
BEFORE_COLOUR, AFTER_COLOUR = COUNTERFACTUAL_COLOUR, PILOT_COLOUR
# Words of a subgroup's level (``distance_km:low``, ``mountainous:1``, the covariates brief of issue 15).
SUBGROUP_LEVELS: dict[str, tuple[str, str]] = {
    "low": ("≤中位数", "at or below the median"),
    "high": (">中位数", "above the median"),
    "1": ("是", "yes"),
    "0": ("否", "no"),
}


def _covariate_name(reader: Reader, covariate, labels: dict | None, sep: str = " / ") -> str:
    """A covariate's name: the caller's label, else the contract's name, else the column name."""
    key = str(covariate)
    given = (labels or {}).get(key, COVARIATE_NAMES.get(key))
    return _say(reader, given, sep=sep) if given is not None else literal(key)


def love_plot(table: pd.DataFrame, *, reader: Reader | None = None, labels: dict[str, Text] | None = None,
              threshold: float = SMD_THRESHOLD,
              title: Text = ("协变量平衡：标准化均值差", "Covariate balance: standardized mean differences")):
    """The love plot: the absolute standardized mean difference of each covariate before
    (hollow grey circles) and, when the table has ``smd_after``, after matching or
    weighting (filled red dots), one row per covariate in the table's order, the
    ``threshold`` (0.1) marked (Austin 2009, Statistics in Medicine 28: 3083-3107).
    ``table`` is :func:`evaluation.diagnostics.balance.balance_table`'s; ``labels`` maps a
    covariate to its name (a ``(zh, en)`` pair or a string; the contract's covariates are
    named already). Returns the Figure."""
    reader = _reader(reader)
    for column in ("covariate", "smd_before"):
        if column not in table:
            raise KeyError(f"love plot: the table has no column '{column}'; it has {list(table.columns)}")
    if table.empty:
        raise ValueError("love plot: the table has no rows")
    table = table.reset_index(drop=True)
    names = [_covariate_name(reader, c, labels, sep="\n") for c in table["covariate"]]
    lines = max(n.count("\n") + 1 for n in names)
    row_in = max(0.3, 0.16 * lines + 0.1)
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 1.5 + row_in * len(table)))
    y = np.arange(len(table))[::-1].astype(float)
    before = np.abs(pd.to_numeric(table["smd_before"], errors="coerce").to_numpy(float))
    ax.scatter(before, y, s=34, facecolors="none", edgecolors=BEFORE_COLOUR, linewidths=1.4, zorder=3,
               label=reader.say("匹配或加权前", "before matching or weighting"))
    if "smd_after" in table:
        after = np.abs(pd.to_numeric(table["smd_after"], errors="coerce").to_numpy(float))
        for b, a, yi in zip(before, after, y, strict=True):
            if np.isfinite(a) and np.isfinite(b):
                ax.plot([b, a], [yi, yi], color=PLACEBO_COLOUR, lw=1, zorder=1)
        ax.scatter(after, y, s=30, color=AFTER_COLOUR, zorder=4,
                   label=reader.say("匹配或加权后", "after matching or weighting"))
    ax.axvline(threshold, color="black", ls="--", lw=0.9,
               label=reader.say(f"阈值 {threshold:g}", f"threshold {threshold:g}"))
    ax.axvline(0, color="black", lw=0.6)
    ax.set_yticks(y, names, fontsize=FONT_PT)
    ax.set_ylim(-0.6, len(table) - 0.4)
    ax.grid(axis="y", visible=False)
    ax.set_xlim(left=0)
    ax.xaxis.set_major_formatter(PlainFormatter())
    ax.set_xlabel(reader.say("标准化均值差（绝对值）", "absolute standardized mean difference"))
    ax.set_title(_say(reader, title, sep="\n"))
    _legend_under_figure(fig, ax, reader)
    return fig


def _legend_under_figure(fig, ax, reader: Reader) -> None:
    """``ax``'s legend centred under the whole figure (three entries a row; two when both
    languages make them long), the axes fitted above it."""
    handles, texts = ax.get_legend_handles_labels()
    ncol = min(len(texts), 2 if reader.language == "both" else 3)
    rows = -(-len(texts) // ncol)
    height = fig.get_size_inches()[1]
    fig.legend(handles, texts, loc="lower center", ncol=ncol, frameon=False, fontsize=FONT_PT)
    fig.tight_layout(rect=(0, min(0.5, (0.12 + 0.2 * rows) / height), 1, 1))


def _density(ax, values: np.ndarray, weights: np.ndarray, colour: str, label: str, linestyle: str = "-") -> None:
    """A weighted kernel density of ``values`` (a rug when fewer than two distinct values
    carry weight), cut at the data's range."""
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    if len(np.unique(values)) >= 2:
        sns.kdeplot(x=values, weights=weights, ax=ax, color=colour, lw=1.6, ls=linestyle, cut=0, label=label,
                    warn_singular=False)
    else:
        ax.plot([], [], color=colour, lw=1.6, ls=linestyle, label=label)
    ax.plot(values, np.zeros_like(values), "|", color=colour, ms=8, alpha=0.6)


def propensity_density(scores, pilot, weights=None, *, reader: Reader | None = None,
                       title: Text = ("倾向得分分布", "Propensity score distribution")):
    """The estimated propensity score of pilots (red) and comparison townships (dark
    blue): kernel densities with a rug of the townships' scores, the common support (the
    overlap of the two groups' ranges) shaded. Without ``weights`` one panel; with them a
    second panel after matching or weighting (each township's density weighted by its
    weight; comparison townships missing from a weight Series weigh 0, pilots 1, as in
    :func:`evaluation.diagnostics.balance.balance_table`).

    ``scores`` and ``pilot`` (bool) are arrays or Series of one value per township (Series
    are aligned on their index); ``weights`` an array of the same length or a Series
    indexed like ``scores``. Returns the Figure."""
    reader = _reader(reader)
    s = scores if isinstance(scores, pd.Series) else pd.Series(np.asarray(scores, float))
    if isinstance(pilot, pd.Series) and isinstance(scores, pd.Series):
        p = pilot.reindex(s.index)
    else:
        p = pd.Series(np.asarray(pilot), index=s.index)
    if len(p) != len(s) or p.isna().any():
        raise ValueError("propensity density: pilot must give one flag per score")
    p = p.astype(bool).to_numpy()
    x = s.to_numpy(float)
    if not np.isfinite(x).all() or (x < 0).any() or (x > 1).any():
        raise ValueError("propensity density: scores must be probabilities in [0, 1]")
    if p.all() or not p.any():
        raise ValueError("propensity density: needs pilots and comparison townships")
    panels = [(np.ones_like(x), reader.say("匹配或加权前", "before matching or weighting"))]
    if weights is not None:
        if isinstance(weights, pd.Series) and isinstance(scores, pd.Series):
            w = weights.reindex(s.index).to_numpy(float)
            w = np.where(np.isnan(w), np.where(p, 1.0, 0.0), w)
        else:
            w = np.asarray(weights, float)
        if w.shape != x.shape or not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("propensity density: weights must be finite, non-negative, one per score")
        panels.append((w, reader.say("匹配或加权后", "after matching or weighting")))
    fig, axes = plt.subplots(1, len(panels), figsize=(PAGE_WIDTH_IN, 3.4), sharex=True, squeeze=False)
    for ax, (w, heading) in zip(axes.ravel(), panels, strict=True):
        used = w > 0
        lo = max(x[p & used].min(), x[~p & used].min())
        hi = min(x[p & used].max(), x[~p & used].max())
        if lo <= hi:
            ax.axvspan(lo, hi, color=TARGET_COLOUR, alpha=0.12, lw=0,
                       label=reader.say("共同支撑域", "common support"))
        _density(ax, x[p], w[p], PILOT_COLOUR, reader.say("试点乡镇", "pilot townships"))
        _density(ax, x[~p], w[~p], COMPARISON_COLOUR, reader.say("对照乡镇", "comparison townships"), "--")
        ax.set_xlim(0, 1)
        ax.set_title(heading, fontsize=FONT_PT)
        ax.set_xlabel(reader.say("倾向得分", "propensity score"))
        ax.set_ylabel(reader.say("密度", "density"))
        ax.xaxis.set_major_formatter(PlainFormatter())
        ax.yaxis.set_major_formatter(PlainFormatter())
    fig.suptitle(_say(reader, title), fontsize=FONT_PT + 1)
    _legend_under_figure(fig, axes.ravel()[0], reader)
    return fig


def _subgroup_name(reader: Reader, label, labels: dict | None) -> str:
    """``distance_km:low`` as 到县城距离（公里）：≤中位数 / distance to the county seat (km): at
    or below the median; a label the caller names in ``labels``, or one without a colon, as given."""
    key = str(label)
    if labels and key in labels:
        return _say(reader, labels[key], sep="\n")
    covariate, colon, level = key.rpartition(":")
    if not colon:
        return literal(key)
    zh_name, en_name = (labels or {}).get(covariate) or COVARIATE_NAMES.get(covariate) or (covariate, covariate)
    zh_level, en_level = SUBGROUP_LEVELS.get(level, (level, level))
    return literal(reader.say(f"{zh_name}：{zh_level}", f"{en_name}: {en_level}", sep="\n"))


def subgroup_forest(table: pd.DataFrame, *, overall: float | None = None, indicator=None,
                    reader: Reader | None = None, labels: dict[str, Text] | None = None,
                    title: Text = ("分组效果（异质性分析）", "Effects by subgroup (heterogeneity)")):
    """Effects by subgroup with their intervals (异质性分析), one row per subgroup in the
    table's order, the number of pilot townships and the interval written on the right,
    the ``overall`` effect as a vertical line and 0 marked. ``table`` has columns
    ``label`` (``distance_km:low``, ``mountainous:1`` ... as the heterogeneity estimators
    write them, or any text), ``estimate``, ``ci_lower``, ``ci_upper``, ``n_treated``;
    effects in the ``indicator``'s unit (a share's in percentage points) when given.
    ``labels`` names subgroups or covariates (a ``(zh, en)`` pair or a string).
    Returns the Figure."""
    reader = _reader(reader)
    needed = ["label", "estimate", "ci_lower", "ci_upper", "n_treated"]
    missing = [c for c in needed if c not in table]
    if missing:
        raise KeyError(f"subgroup forest: the table has no column(s) {missing}; it has {list(table.columns)}")
    if table.empty:
        raise ValueError("subgroup forest: the table has no rows")
    table = table.reset_index(drop=True)
    names = [_subgroup_name(reader, label, labels) for label in table["label"]]
    lines = max(n.count("\n") + 1 for n in names)
    row_in = max(0.34, 0.17 * lines + 0.12)
    legend_in = 0.45
    height = 0.55 + legend_in + 0.55 + row_in * len(table)
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, height))
    y = np.arange(len(table))[::-1].astype(float)
    value = pd.to_numeric(table["estimate"], errors="coerce").to_numpy(float)
    lo = pd.to_numeric(table["ci_lower"], errors="coerce").to_numpy(float)
    hi = pd.to_numeric(table["ci_upper"], errors="coerce").to_numpy(float)
    shown = np.isfinite(value)
    bars = shown & np.isfinite(lo) & np.isfinite(hi)
    ax.errorbar(value[bars], y[bars], xerr=[value[bars] - lo[bars], hi[bars] - value[bars]], fmt="none",
                ecolor="#95a5a6", elinewidth=1.5)
    ax.scatter(value[shown], y[shown], color=PILOT_COLOUR, marker="s", s=30, zorder=3,
               label=reader.say("分组估计值与置信区间", "subgroup estimate and interval"))
    ax.axvline(0, color="black", lw=0.8)
    if overall is not None and np.isfinite(overall):
        written = reader.effect(overall, indicator).replace(UNIT_SPACE, " ")
        ax.axvline(overall, color=COMPARISON_COLOUR, ls="--", lw=1.2,
                   label=reader.say(f"总体效果 {written}", f"overall effect {written}"))
    ax.set_ylim(-0.6, len(table) - 0.4)
    ax.set_yticks(y, names, fontsize=FONT_PT)
    ax.grid(axis="y", visible=False)
    if indicator is not None:
        _effect_axis(ax.xaxis, indicator)
    else:
        ax.xaxis.set_major_formatter(PlainFormatter())
    ax.set_xlabel(_effect_label(reader, indicator), fontsize=FONT_PT)
    ax.set_title(_say(reader, title, sep="\n"), fontsize=FONT_PT + 1)
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.grid(False)

    def bound(v):
        return reader.effect(v, indicator, unit=False)

    written = []
    for v, a, b, n, ok in zip(value, lo, hi, table["n_treated"], shown, strict=True):
        pilots = reader.say(f"{reader.count(n)} 个试点", f"{reader.count(n)} pilots")
        number = reader.effect(v, indicator).replace(UNIT_SPACE, " ")
        gap = "\n" if reader.language == "both" else ", "  # two languages: the count on its own line
        written.append(f"{number} {reader.interval(a, b, bound)}{gap}{pilots}" if ok
                       else f"{reader.say('未能估计', 'not estimated')}{gap}{pilots}")
    right.set_yticks(y, written, fontsize=FONT_PT)
    right.tick_params(axis="y", length=0)
    handles, texts = ax.get_legend_handles_labels()
    fig.legend(handles, texts, loc="lower center", ncol=2, frameon=False, fontsize=FONT_PT)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    return fig
