"""Figures in the report's language (evaluation.report.plots with a Reader): every text of
every figure in zh, en and both; shares in percent and percentage points; p-values and
targets written by the Reader; no missing CJK glyph; a forest plot legible at the width of
an A4 page. Inputs are built by hand in the shapes the chapters pass (no batch)."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from evaluation.report import plots  # noqa: E402
from evaluation.report.readable import Reader  # noqa: E402
from evaluation.study.catalogue import load_catalogue  # noqa: E402

CJK = re.compile(r"[\u4e00-\u9fff]")
WORD = re.compile(r"[A-Za-z]{3,}")
FORBIDDEN = re.compile(r"e-0|\bnan\b|\bNaN\b|\bNone\b|\bTrue\b|\bFalse\b")
# English a Chinese figure may carry: method names and units.
METHOD_WORDS = ("Callaway", "Sant'Anna", "ATT", "DiD", "TWFE", "RMSPE", "ITS", "Mbar")
TOWNSHIPS = {"T01": "一号镇", "T02": "二号乡", "T03": "三号镇", "T04": "四号镇", "T05": "五号镇"}
LONG_ZH, LONG_EN = "乡镇卫生院门急诊人次占全县门急诊总人次的比例（年度考核口径）", \
    "Township centre outpatient visits as a share of all county outpatient visits (annual appraisal basis)"


@pytest.fixture(scope="module", autouse=True)
def style():
    plots.setup_style()
    yield
    plt.close("all")


def indicator(indicator_id: str, frequency: str = "month"):
    return load_catalogue()[indicator_id].at_frequency(frequency)


SHARE, RATE, MONEY = "county_internal_visit_rate", "referrals_down_per_1000", "cost_per_admission"


# ----------------------------------------------------------------------------- inputs as the chapters pass them

def trends_input():
    index = pd.period_range("2018-01", periods=36, freq="M")
    pilot = pd.Series(np.linspace(0.78, 0.86, 36), index=index)
    comparison = pd.Series(np.linspace(0.79, 0.82, 36), index=index)
    return {("试点乡镇", "pilot townships"): pilot, ("非试点乡镇", "non-pilot townships"): comparison}


def event_input():
    t = np.arange(-4, 5)
    est = np.where(t < 0, 0.0005 * t, 0.004 + 0.001 * t)
    return pd.DataFrame({"term": [f"e={v}" for v in t], "event_time": t, "estimate": est,
                         "ci_low": est - 0.003, "ci_high": est + 0.003, "band_low": est - 0.005,
                         "band_high": est + 0.005})


def its_input():
    index = pd.period_range("2018-01", periods=30, freq="M")
    segment = ["pre"] * 14 + ["excluded"] * 4 + ["pilot"] * 12
    fitted = np.linspace(0.80, 0.85, 30)
    return pd.DataFrame({"observed": fitted + 0.002 * np.sin(np.arange(30)), "fitted": fitted,
                         "counterfactual": fitted - 0.01, "counterfactual_low": fitted - 0.015,
                         "counterfactual_high": fitted - 0.005, "segment": segment}, index=index)


def scorecard_input(rows: int = 4) -> pd.DataFrame:
    names = [(LONG_ZH, LONG_EN), ("县域内就诊率", "County-internal visit rate"),
             ("次均住院费用", "Inpatient cost per admission"), ("下转人次（每千常住人口）", "Down-referrals per 1,000 residents")]
    names = (names * rows)[:rows]
    rel = np.array([3.2, -1.5, np.nan, 12.25] * rows)[:rows]
    return pd.DataFrame({"indicator": [f"i{k}" for k in range(rows)], "name_zh": [n[0] for n in names],
                         "name_en": [n[1] for n in names], "relative_pct": rel, "relative_low_pct": rel - 2.0,
                         "relative_high_pct": rel + 2.5, "improved": ([True, False, None, False] * rows)[:rows],
                         "worsened": ([False, True, None, False] * rows)[:rows]})


def gaps_input() -> pd.DataFrame:
    rows = []
    for k, pilot in enumerate(TOWNSHIPS):
        for t in range(12):
            rows.append({"pilot": pilot, "township": pilot, "period": t, "gap": 0.001 * k * (t >= 6), "placebo": False,
                         "start": 6})
            for d in ("D1", "D2", "D3"):
                rows.append({"pilot": pilot, "township": d, "period": t, "gap": 0.002 * np.sin(t + len(d)),
                             "placebo": True, "start": 6})
    return pd.DataFrame(rows)


def sensitivity_input():
    rm = pd.DataFrame({"bound": [0.0, 0.0, 0.5, 1.0], "ci_low": [0.001, 0.001, -0.002, -0.006],
                       "ci_high": [0.007, 0.007, 0.01, 0.014], "label": ["original", "Mbar=0", "Mbar=0.5", "Mbar=1"]})
    sd = pd.DataFrame({"bound": [0.0, 0.0, 0.00002, 0.00008], "ci_low": [0.001, 0.0008, -0.001, -0.004],
                       "ci_high": [0.007, 0.0075, 0.009, 0.012], "label": ["original", "M=0", "M=2e-05", "M=8e-05"]})
    titles = [("相对幅度，前12个月", "relative magnitudes, first 12 months"), ("平滑度，前12个月", "smoothness, first 12 months")]
    return [(rm, 0.42), (sd, 0.00004)], titles


def synthetic_fit():
    periods = np.arange(2010, 2022)
    pilot = np.linspace(0.80, 0.86, 12)
    synthetic = np.linspace(0.80, 0.84, 12)
    plot = pd.DataFrame({"period": periods, "pilot": pilot, "synthetic": synthetic, "gap": pilot - synthetic,
                         "post": periods >= 2016})
    placebo = pd.DataFrame([{"township": d, "period": p, "gap": 0.003 * np.cos(p + k)}
                            for k, d in enumerate(("D1", "D2")) for p in periods])
    effect = SimpleNamespace(estimate=0.0123, p_value=1 / 3, p_floor=1 / 3)
    return SimpleNamespace(plot_data=plot, diagnostics={"pilot": "T01", "placebo_gaps": placebo}, effects=[effect])


def draw(function: str, reader: Reader, ind=None):
    """(figure, the names the inputs gave) of one public plotting function."""
    ind = ind or indicator(SHARE)
    given = [ind.name_zh, ind.name_en]
    if function == "trends":
        fig = plots.trends(trends_input(), ind, ["2019-07", "2020-01"], 0.9, reader=reader).figure
    elif function == "event_study":
        fig = plots.event_study(event_input(), ind, title=("Callaway-Sant'Anna 事件研究", "Callaway-Sant'Anna event study"),
                                band=True, reader=reader).figure
    elif function == "interrupted_series":
        fig = plots.interrupted_series(its_input(), ind, reader=reader).figure
    elif function == "forest":
        card = scorecard_input()
        given = [*card["name_zh"], *card["name_en"]]
        fig = plots.forest(card, reader=reader).figure
    elif function == "synthetic_control_gaps":
        gaps = gaps_input()
        p = {t: 0.25 for t in TOWNSHIPS} | {"T02": 0.05}
        fig = plots.synthetic_control_gaps(gaps, ind, names=TOWNSHIPS, p_values=p,
                                           p_floors={t: 0.05 for t in TOWNSHIPS}, reader=reader)
        given += list(TOWNSHIPS.values())
    elif function == "sensitivity":
        panels, titles = sensitivity_input()
        fig = plots.sensitivity(panels, ind, titles, reader=reader)
    elif function == "synthetic_control":
        fig = plots.synthetic_control(synthetic_fit(), ind, reader=reader)
    elif function == "randomization_distribution":
        draws = np.random.default_rng(3).normal(0.0, 0.004, 200)
        fig = plots.randomization_distribution(draws, 0.0123, 0.005, 0.005, ind, reader=reader)
    else:
        raise ValueError(function)
    return fig, given


FUNCTIONS = ("trends", "event_study", "interrupted_series", "forest", "synthetic_control_gaps", "sensitivity",
             "synthetic_control", "randomization_distribution")


def texts(fig) -> list[str]:
    """Every visible text of a drawn figure (titles, labels, ticks, legends, annotations)."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def drawn(function: str, language: str, tmp_path: Path, ind=None):
    """Draw and save with warnings as errors (a missing CJK glyph is a UserWarning)."""
    out = Path(os.environ.get("PLOTS_CHECK_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig, given = draw(function, Reader(language), ind)
        fig.savefig(out / f"{function}-{language}.png")
    return fig, given


def without(text: str, names) -> str:
    for name in sorted(names, key=len, reverse=True):
        text = text.replace(name, " ")
    return text


# ----------------------------------------------------------------------------- language

@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("language", ["zh", "en", "both"])
def test_every_text_in_the_language(function, language, tmp_path):
    fig, given = drawn(function, language, tmp_path)
    shown = texts(fig)
    assert shown, "the figure has no text"
    joined = "\n".join(shown)
    assert not FORBIDDEN.search(joined), FORBIDDEN.findall(joined)
    # a wrapped name crosses lines: compare on text with line breaks removed
    flat = [t.replace("\n", "") for t in shown]
    if language == "en":
        leftover = [without(t, given) for t in flat]
        assert not [t for t in leftover if CJK.search(t)], [t for t in leftover if CJK.search(t)]
    if language == "zh":
        leftover = [without(t, [*given, *METHOD_WORDS]) for t in flat]
        assert not [t for t in leftover if WORD.search(t)], [t for t in leftover if WORD.search(t)]
    if language == "both":
        assert CJK.search(joined) and WORD.search(without(joined, METHOD_WORDS))
    plt.close(fig)


def test_default_reader_is_both():
    ind = indicator(SHARE)
    fig = plots.trends(trends_input(), ind, ["2019-07"], 0.9).figure
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["试点乡镇 / pilot townships", "非试点乡镇 / non-pilot townships", "试点开始 / pilot start",
                      "政策目标 90.0% / policy target 90.0%"]
    assert fig.axes[0].get_title() == "县域内就诊率\nCounty-internal visit rate"
    plt.close(fig)


def test_names_already_in_the_language_are_kept():
    ind = indicator(SHARE)
    series = dict(zip(["试点乡镇", "非试点乡镇"], trends_input().values(), strict=True))
    fig = plots.trends(series, ind, [], reader=Reader("zh")).figure
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["试点乡镇", "非试点乡镇"]
    assert fig.axes[0].get_title() == "县域内就诊率"
    plt.close(fig)


# ----------------------------------------------------------------------------- numbers

def tick_texts(axis) -> list[str]:
    axis.figure.canvas.draw()
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_share_levels_in_percent_and_target_through_the_reader():
    ind = indicator(SHARE)
    ax = plots.trends(trends_input(), ind, ["2019-07"], 0.9, reader=Reader("en"))
    ticks = tick_texts(ax.yaxis)
    assert ticks and all(t.endswith("%") for t in ticks), ticks
    assert "policy target 90.0%" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_ylabel() == "%"
    # the data stay the stored fractions
    np.testing.assert_allclose(ax.lines[0].get_ydata(), trends_input()[("试点乡镇", "pilot townships")].to_numpy())
    plt.close(ax.figure)


def test_share_effects_in_percentage_points():
    ind = indicator(SHARE)
    data = event_input()
    ax = plots.event_study(data, ind, band=True, reader=Reader("en"))
    assert ax.get_ylabel() == "effect (percentage points)"
    fmt = ax.yaxis.get_major_formatter()
    fmt.set_locs([-0.005, 0.0, 0.005, 0.01])
    assert [fmt(v) for v in (-0.005, 0.0, 0.005, 0.01)] == ["-0.5", "0.0", "0.5", "1.0"]
    ticks = tick_texts(ax.yaxis)
    assert all("e" not in t for t in ticks)
    np.testing.assert_allclose([float(t) / 100 for t in ticks], ax.get_yticks()[:len(ticks)], atol=1e-12)
    zh = plots.event_study(data, ind, reader=Reader("zh"))
    assert zh.get_ylabel() == "效果（百分点）" and zh.get_xlabel() == "相对试点开始的月数"
    assert [t.get_text() for t in zh.get_legend().get_texts()] == ["估计值与95%置信区间"]
    plt.close("all")


@pytest.mark.parametrize("indicator_id,frequency,label_en,label_zh", [
    (RATE, "quarter", "effect (per 1,000 residents per quarter)", "效果（每千常住人口每季度）"),
    (MONEY, "month", "effect (yuan)", "效果（元）")])
def test_other_units_name_their_unit_and_stay_plain(indicator_id, frequency, label_en, label_zh):
    ind = indicator(indicator_id, frequency)
    data = event_input().assign(**{c: event_input()[c] * 5000 for c in ("estimate", "ci_low", "ci_high")})
    ax = plots.event_study(data, ind, reader=Reader("en"))
    assert ax.get_ylabel() == label_en
    assert plots.event_study(data, ind, reader=Reader("zh")).get_ylabel() == label_zh
    ticks = tick_texts(ax.yaxis)
    assert ticks and not [t for t in ticks if "%" in t or "e" in t]
    np.testing.assert_allclose([float(t.replace(",", "")) for t in ticks], ax.get_yticks()[:len(ticks)])
    plt.close("all")


def test_plain_formatter_never_scientific():
    fmt = plots.PlainFormatter()
    locs = [0.00001, 0.00002, 0.00003]
    fmt.set_locs(locs)
    assert [fmt(v) for v in locs] == ["0.00001", "0.00002", "0.00003"]
    fmt.set_locs([5000, 10000, 15000])
    assert fmt(15000) == "15,000" and fmt(-0.0) == "0"
    money = plots.PlainFormatter(100.0, "%")
    money.set_locs([0.0, 0.025, 0.05])
    assert [money(v) for v in (0.0, 0.025, 0.05)] == ["0.0%", "2.5%", "5.0%"]


def test_p_values_through_the_reader(tmp_path):
    reader = Reader("en")
    assert plots.p_text(reader, 0.05, 0.05) == "p ≤ 0.05"
    assert plots.p_text(reader, 0.0001) == "p < 0.001"
    assert plots.p_text(reader, 0.25) == "p = 0.250"
    fig, _ = drawn("synthetic_control_gaps", "en", tmp_path)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["一号镇\np = 0.250", "二号乡\np ≤ 0.05", "三号镇\np = 0.250", "四号镇\np = 0.250",
                      "五号镇\np = 0.250"]
    assert fig.axes[0].yaxis.get_major_formatter().scale == 100.0  # gaps of a share in pp
    one = plots.synthetic_control(synthetic_fit(), indicator(SHARE), reader=reader)
    assert one.axes[1].get_title() == "gap and placebos\nATT 1.23\u00a0pp, p ≤ 0.33"
    plt.close("all")


def test_sensitivity_bounds_written_by_the_reader(tmp_path):
    panels, titles = sensitivity_input()
    fig = plots.sensitivity(panels, indicator(SHARE), titles, reader=Reader("en"))
    rm, sd = fig.axes
    assert [t.get_text() for t in rm.get_xticklabels()] == ["original", "Mbar\n0", "Mbar\n0.500", "Mbar\n1.00"]
    # M of a share in percentage points, as the axis
    assert [t.get_text() for t in sd.get_xticklabels()] == ["original", "M\n0 pp", "M\n0.00200 pp", "M\n0.00800 pp"]
    assert rm.get_title() == "relative magnitudes, first 12 months\nbreakdown = 0.420"
    assert sd.get_title() == "smoothness, first 12 months\nbreakdown = 0.00400 pp"
    with pytest.raises(ValueError, match="names no bound of"):
        bad = panels[0][0].assign(label=["original", "X=1", "X=2", "X=3"])
        plots.sensitivity([(bad, None)], indicator(SHARE), ["t"])
    plt.close("all")


# ----------------------------------------------------------------------------- forest plot in print

def test_forest_plots_the_columns_it_is_given():
    card = scorecard_input()
    ax = plots.forest(card, reader=Reader("en"))
    points = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections if len(c.get_offsets())
                             and c.get_offsets().shape[1] == 2 and type(c).__name__ == "PathCollection"])
    np.testing.assert_allclose(np.sort(points), np.sort(card["relative_pct"].dropna().to_numpy()))
    right = ax.figure.axes[1]
    # rows in the table's order, top down; the numbers written by the Reader
    assert [t.get_text() for t in right.get_yticklabels()] == [
        "3.2% [1.2%, 5.7%]", "-1.5% [-3.5%, 1.0%]", "not estimated", "12.2% [10.2%, 14.8%]"]
    assert list(right.get_yticks()) == list(ax.get_yticks()) == [3, 2, 1, 0]
    assert [t.get_text() for t in ax.get_yticklabels()][1] == "County-internal visit rate"
    # the lead's headline columns: any percent columns by name
    moved = card.rename(columns={"relative_pct": "headline_pct", "relative_low_pct": "headline_low_pct",
                                 "relative_high_pct": "headline_high_pct"})
    ax2 = plots.forest(moved, reader=Reader("zh"), estimate="headline_pct", low="headline_low_pct",
                       high="headline_high_pct")
    assert [t.get_text() for t in ax2.figure.axes[1].get_yticklabels()][2] == "未能估计"
    with pytest.raises(KeyError, match="relative_pct"):
        plots.forest(moved)
    plt.close("all")


@pytest.mark.parametrize("language", ["zh", "en", "both"])
def test_forest_legible_on_a4(language):
    card = scorecard_input(9)
    ax = plots.forest(card, reader=Reader(language))
    fig = ax.figure
    width, height = fig.get_size_inches()
    assert width == pytest.approx(17 / 2.54)
    fig.canvas.draw()
    for text in [*ax.get_yticklabels(), *ax.get_xticklabels(), *fig.axes[1].get_yticklabels(), ax.title,
                 ax.xaxis.label, *fig.legends[0].get_texts()]:
        if text.get_text():
            assert text.get_fontsize() >= 9, (text.get_text(), text.get_fontsize())
    for label in ax.get_yticklabels():
        for line in label.get_text().split("\n"):
            assert len(line) <= (14 if CJK.search(line) else 28), line
    # the height grows with the rows: labels do not overlap
    small = plots.forest(scorecard_input(3), reader=Reader(language)).figure
    assert small.get_size_inches()[1] < height
    renderer = fig.canvas.get_renderer()
    boxes = sorted((t.get_window_extent(renderer) for t in ax.get_yticklabels()), key=lambda b: b.y0)
    assert all(lower.y1 <= upper.y0 + 0.5 for lower, upper in zip(boxes, boxes[1:], strict=False))
    # nothing is cut off at the figure's edges
    for text in [*ax.get_yticklabels(), *fig.axes[1].get_yticklabels()]:
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 + 0.5, text.get_text()
    plt.close("all")


def test_no_missing_glyph_without_the_cjk_font_would_warn():
    """The check is real: drawing Chinese in a font without CJK glyphs warns, and the
    tests turn that warning into an error."""
    fig, ax = plt.subplots()
    ax.set_title("县域内就诊率", family="DejaVu Sans")
    with warnings.catch_warnings(), pytest.raises(UserWarning, match="missing"):
        warnings.simplefilter("error")
        fig.canvas.draw()
    plt.close(fig)


def test_chinese_names_wrap_before_a_parenthesis():
    assert plots.wrap_zh("乡镇卫生院门急诊人次（每千常住人口）") == ["乡镇卫生院门急诊人次", "（每千常住人口）"]
    assert plots.wrap_zh(LONG_ZH) == ["乡镇卫生院门急诊人次占全县门", "急诊总人次的比例", "（年度考核口径）"]
    assert plots.wrap_zh("县外转诊率（外转率）") == ["县外转诊率（外转率）"]
    ax = plots.forest(scorecard_input(), reader=Reader("zh"))
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "\n".join(plots.wrap_zh(LONG_ZH))
    plt.close("all")
