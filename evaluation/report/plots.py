"""Figures for the chapters: readable at a glance, labelled in Chinese and English.

Chinese labels use Noto Sans CJK SC, shipped inside the ``mplfonts`` package (a runtime
dependency) and registered with matplotlib here, so no figure shows empty boxes whatever
fonts the machine has.

Every string from the data or the study file (township ids and names, indicator names and
units) goes through :func:`literal` before it becomes figure text, so a ``$`` in a name is
drawn as a dollar sign, never parsed as mathtext.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import font_manager

from evaluation.study.periods import parse_any_period

CJK_FONT_FILE = "NotoSansCJKsc-Regular.otf"
PILOT_COLOUR, COMPARISON_COLOUR, COUNTERFACTUAL_COLOUR = "#c0392b", "#2c3e50", "#7f8c8d"


@cache
def cjk_font_path() -> Path:
    import mplfonts

    path = Path(mplfonts.__file__).parent / "fonts" / CJK_FONT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the CJK font {CJK_FONT_FILE} is missing from the mplfonts package ({path})")
    return path


def setup_style() -> str:
    """Register the CJK font and set the house style; returns the font family name."""
    path = cjk_font_path()
    font_manager.fontManager.addfont(str(path))
    family = font_manager.FontProperties(fname=str(path)).get_name()
    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams.update({
        "font.family": "sans-serif",
        "font.sans-serif": [family, "DejaVu Sans"],
        "axes.unicode_minus": False,
        "figure.dpi": 110,
        "savefig.dpi": 110,
        "figure.figsize": (9, 4.5),
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


def _label(indicator) -> str:
    return literal(f"{indicator.name_zh}\n{indicator.name_en}")


def _unit(indicator) -> str:
    """The axis label of the indicator's unit: a rate names its period (``per 1,000
    residents per quarter``) when the indicator carries the analysis frequency."""
    return literal(getattr(indicator, "unit_label", indicator.unit))


_PERIOD_WORDS = {"month": ("月", "months"), "quarter": ("季度", "quarters"), "year": ("年", "years")}


def _periods_since_start(indicator) -> str:
    zh, en = _PERIOD_WORDS.get(getattr(indicator, "frequency", None) or "", ("期", "periods"))
    return f"相对试点开始的{zh}数 / {en} since the pilot start"


def trends(series_by_group: dict[str, pd.Series], indicator, starts: list[str], target: float | None = None,
           ax=None):
    """Pilot and comparison series over time, pilot starts and the policy target marked."""
    ax = ax or plt.subplots()[1]
    colours = [PILOT_COLOUR, COMPARISON_COLOUR, "#2980b9", "#27ae60"]
    for (name, series), colour in zip(series_by_group.items(), colours, strict=False):
        x = series.index.to_timestamp()
        ax.plot(x, series.to_numpy(), label=literal(name), color=colour, lw=1.8)
    for s in starts:
        ax.axvline(parse_any_period(s).to_timestamp(), color=PILOT_COLOUR, ls=":", lw=1)  # 2019-07 or 2019Q3
    if starts:
        ax.plot([], [], color=PILOT_COLOUR, ls=":", label="试点开始 / pilot start")
    if target is not None:
        ax.axhline(target, color="#16a085", ls="--", lw=1.2, label=f"政策目标 / target {target:g}")
    ax.set_title(_label(indicator))
    ax.set_ylabel(_unit(indicator))
    ax.legend(loc="best", fontsize=9)
    return ax


def event_study(plot_data: pd.DataFrame, indicator, title: str = "事件研究 / Event study", band: bool = False,
                ax=None):
    """Effects by event time with 95% intervals (and the uniform band when present)."""
    ax = ax or plt.subplots()[1]
    x = plot_data["event_time"] if "event_time" in plot_data else plot_data["term"].str.split("=").str[1].astype(float)
    if band and "band_low" in plot_data:
        ax.fill_between(x, plot_data["band_low"], plot_data["band_high"], color=PILOT_COLOUR, alpha=0.12,
                        label="一致置信带 / uniform band")
    ax.errorbar(x, plot_data["estimate"], yerr=[plot_data["estimate"] - plot_data["ci_low"],
                                                plot_data["ci_high"] - plot_data["estimate"]],
                fmt="o", ms=3.5, color=PILOT_COLOUR, ecolor="#e6b0aa", elinewidth=1.2, label="95% CI")
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(-0.5, color=COUNTERFACTUAL_COLOUR, ls=":", lw=1)
    ax.set_xlabel(_periods_since_start(indicator))
    ax.set_ylabel(_unit(indicator))
    ax.set_title(literal(f"{title}: {indicator.name_zh}"))
    ax.legend(loc="best", fontsize=9)
    return ax


def interrupted_series(plot_data: pd.DataFrame, indicator, title: str = "中断时间序列 / ITS", ax=None):
    """Observed series, fitted line, and the counterfactual with its band."""
    ax = ax or plt.subplots()[1]
    x = plot_data.index.to_timestamp()
    post = plot_data["segment"] != "pre"
    ax.fill_between(x[post], plot_data.loc[post, "counterfactual_low"], plot_data.loc[post, "counterfactual_high"],
                    color=COUNTERFACTUAL_COLOUR, alpha=0.2, label="反事实95%区间 / counterfactual 95% band")
    ax.plot(x[post], plot_data.loc[post, "counterfactual"], color=COUNTERFACTUAL_COLOUR, ls="--",
            label="反事实 / counterfactual")
    ax.plot(x, plot_data["observed"], "o", ms=2.5, color=COMPARISON_COLOUR, label="观测值 / observed")
    ax.plot(x, plot_data["fitted"], color=PILOT_COLOUR, lw=1.6, label="拟合值 / fitted")
    excluded = plot_data["segment"] == "excluded"
    if excluded.any():
        ax.plot(x[excluded], plot_data.loc[excluded, "observed"], "x", color="#e67e22", ms=4,
                label="未纳入拟合 / left out")
    ax.set_title(literal(f"{title}: {indicator.name_zh}"))
    ax.set_ylabel(_unit(indicator))
    ax.legend(loc="best", fontsize=8)
    return ax


def forest(table: pd.DataFrame, label_column: str = "label", ax=None):
    """Relative effects (percent of the counterfactual mean) with 95% intervals, one row per
    indicator that could be estimated."""
    table = table[table["relative_pct"].notna()] if "relative_pct" in table else table
    ax = ax or plt.subplots(figsize=(9, 0.55 * len(table) + 1.2))[1]
    y = np.arange(len(table))[::-1]
    colours = np.where(table["improved"], "#27ae60", np.where(table["worsened"], PILOT_COLOUR, COMPARISON_COLOUR))
    ax.errorbar(table["relative_pct"], y, xerr=[table["relative_pct"] - table["relative_low_pct"],
                                                table["relative_high_pct"] - table["relative_pct"]],
                fmt="none", ecolor="#95a5a6", elinewidth=1.5)
    ax.scatter(table["relative_pct"], y, c=colours, zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [literal(label) for label in table[label_column]])
    ax.set_xlabel("相对于反事实均值的变化（%）/ change relative to the counterfactual mean (%)")
    ax.set_title("各指标的试点效果 / Pilot effect by indicator")
    return ax


def synthetic_control_gaps(gaps: pd.DataFrame, indicator, names: dict | None = None, p_values: dict | None = None,
                           columns: int = 5):
    """One small panel per pilot township: its gap to its synthetic twin (red) over the
    donors' placebo gaps (grey), the start marked (Abadie et al. 2010, fig. 4). ``gaps``
    has columns pilot, township, period, gap, placebo, start (one row per period)."""
    pilots = list(dict.fromkeys(gaps["pilot"].astype(str)))
    gaps = gaps.assign(pilot=gaps["pilot"].astype(str), township=gaps["township"].astype(str))
    n = len(pilots)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, min(columns, n), figsize=(2.6 * min(columns, n), 2.3 * rows + 0.6),
                             sharex=True, sharey=True, squeeze=False)
    for ax, pilot in zip(axes.ravel(), pilots, strict=False):
        mine = gaps[gaps["pilot"] == pilot]
        for _, g in mine[mine["placebo"]].groupby("township"):
            ax.plot(g["period"], g["gap"], color="#bdc3c7", lw=0.5)
        own = mine[~mine["placebo"]]
        ax.plot(own["period"], own["gap"], color=PILOT_COLOUR, lw=1.6)
        ax.axvline(own["start"].iloc[0], color="black", lw=0.8, ls="--")
        ax.axhline(0, color="black", lw=0.6)
        label = (names or {}).get(pilot, pilot)
        p = (p_values or {}).get(pilot)
        ax.set_title(literal(label) + (f"\np = {p:.2f}" if p is not None else ""), fontsize=9)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle("合成控制差距（红：试点；灰：安慰剂）/ Synthetic-control gap (red: pilot; grey: placebos)\n"
                 + literal(f"{indicator.name_zh} / {indicator.name_en}"), fontsize=10)
    fig.supxlabel("时期 / period index", fontsize=9)
    fig.tight_layout()
    return fig


def sensitivity(panels: list[tuple[pd.DataFrame, float | None]], indicator, titles: list[str]):
    """Honest confidence sets against the bound (Rambachan and Roth 2023, fig. 5): the
    conventional interval first, then one interval per bound value; 0 marked. Each panel
    is (plot data of :func:`evaluation.diagnostics.sensitivity.honest_sensitivity`, breakdown value)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (table, bd), title in zip(axes.ravel(), panels, titles, strict=True):
        x = np.arange(len(table))
        colours = [COMPARISON_COLOUR] + [PILOT_COLOUR] * (len(table) - 1)
        for xi, (_, row), colour in zip(x, table.iterrows(), colours, strict=True):
            ax.plot([xi, xi], [row["ci_low"], row["ci_high"]], color=colour, lw=3, solid_capstyle="butt")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, ["原估计\noriginal"] + [literal(lab).replace("=", "\n") for lab in table["label"][1:]],
                      fontsize=8)
        ax.set_title(literal(title) + (f"\n临界值 breakdown = {bd:.3g}" if bd is not None else ""), fontsize=9)
        ax.set_ylabel(_unit(indicator))
    fig.suptitle("平行趋势敏感性 / Parallel-trends sensitivity: " + literal(f"{indicator.name_zh} / {indicator.name_en}"),
                 fontsize=10)
    fig.tight_layout()
    return fig


def synthetic_control(fit, indicator=None, title: str | None = None):
    """One pilot township against its synthetic twin (left) and its gap over every
    placebo's gap (right), from :func:`evaluation.synth.synthetic_control`."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    data = fit.plot_data
    start = data.loc[data["post"], "period"].min()
    left.plot(data["period"], data["pilot"], color=PILOT_COLOUR, lw=1.6, label="试点乡镇 pilot")
    left.plot(data["period"], data["synthetic"], color=COMPARISON_COLOUR, lw=1.4, ls="--",
              label="合成对照 synthetic")
    for _, g in fit.diagnostics["placebo_gaps"].groupby("township"):
        right.plot(g["period"], g["gap"], color="#bdc3c7", lw=0.5)
    right.plot(data["period"], data["gap"], color=PILOT_COLOUR, lw=1.6)
    for ax in (left, right):
        ax.axvline(start, color="black", lw=0.8, ls="--")
    right.axhline(0, color="black", lw=0.6)
    left.legend(loc="best", fontsize=8)
    name = f"{indicator.name_zh} / {indicator.name_en}" if indicator is not None else ""
    left.set_title(literal(title or f"{fit.diagnostics['pilot']} {name}"), fontsize=9)
    e = fit.effects[0]
    right.set_title(f"差距与安慰剂 gap and placebos: ATT {e.estimate:.3g}, p = {e.p_value:.3f}", fontsize=9)
    fig.tight_layout()
    return fig
