"""What each report chapter shows, computed here so that the notebooks stay thin.

A chapter notebook calls :func:`setup` with its parameters, then one function per
section; each returns tables (DataFrames) and figures. No estimation happens in the
notebooks themselves.
"""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.data.frames import did_frame
from evaluation.data.panel import Panel, PanelGapWarning, load_panel
from evaluation.diagnostics.bacon import bacon_decomposition
from evaluation.diagnostics.robustness import robustness_table
from evaluation.estimators.did import effects_by_group, event_study, poisson_did, twfe
from evaluation.estimators.its import (
    CovidPhase,
    controlled_its,
    indicator_series,
    its_by_township,
    segmented_regression,
)
from evaluation.estimators.staggered import callaway_santanna
from evaluation.paths import PROJECT_ROOT
from evaluation.report import plots
from evaluation.report.scorecard import scorecard, sdid_standard_error
from evaluation.results import tidy
from evaluation.study.catalogue import Indicator
from evaluation.study.config import Study, load_study

TABLE_COLUMNS = ["estimand", "term", "estimate", "std_error", "ci_low", "ci_high", "p_value", "n_treated", "method"]


@dataclass
class Context:
    study: Study
    panel: Panel
    indicator: Indicator | None
    fast: bool

    @property
    def frame(self) -> pd.DataFrame:
        return did_frame(self.panel, self.indicator)

    @property
    def bootstrap_draws(self) -> int:
        return 199 if self.fast else self.study.inference.wild_bootstrap_draws // 10

    @property
    def covid_phases(self) -> list[CovidPhase]:
        return [CovidPhase(p.name, p.start, p.end) for p in self.study.covid.phases] \
            if self.study.covid.handling == "phases" else []


def resolve_study_path(path: str | Path) -> Path:
    """A study path as given, relative to the working folder, or to the project root."""
    p = Path(path)
    if p.is_absolute() or p.is_file():
        return p.resolve()
    return (PROJECT_ROOT / p).resolve()


def setup(study_path: str | Path, indicator: str | None = None, fast: bool = False) -> Context:
    """Load the study and its panel, set the figure style; the indicator for per-indicator chapters."""
    plots.setup_style()
    study = load_study(resolve_study_path(study_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PanelGapWarning)  # the data-quality chapter lists gaps
        panel = load_panel(study)
    chosen = None
    if indicator is not None:
        by_id = {i.id: i for i in study.selected_indicators()}
        if indicator not in by_id:
            raise KeyError(f"indicator '{indicator}' is not among the study's indicators {list(by_id)}")
        chosen = by_id[indicator]
    pd.set_option("display.float_format", lambda v: f"{v:.4g}")
    pd.set_option("display.max_columns", 20)
    pd.set_option("display.width", 160)
    return Context(study=study, panel=panel, indicator=chosen, fast=fast)


def header(ctx: Context, chapter_zh: str, chapter_en: str) -> str:
    """HTML title block with the demo banner (every data-derived string escaped)."""
    t = ctx.study.title
    parts = []
    if ctx.study.synthetic:
        parts.append('<div style="background:#fdecea;border:2px solid #c0392b;padding:8px 12px;'
                     'font-weight:bold;color:#922b21">合成演示数据，非真实乡镇 / SYNTHETIC DEMO DATA — '
                     'not real townships</div>')
    parts.append(f"<h1>{html.escape(chapter_zh)} / {html.escape(chapter_en)}</h1>")
    parts.append(f"<p><b>{html.escape(t.zh)}</b><br>{html.escape(t.en)}</p>")
    if ctx.indicator is not None:
        ind = ctx.indicator
        parts.append(f"<p>指标 / Indicator: <b>{html.escape(ind.name_zh)}</b> ({html.escape(ind.name_en)}; "
                     f"{html.escape(ind.unit)})</p>")
    return "\n".join(parts)


def effects_table(effects) -> pd.DataFrame:
    table = tidy(effects)
    return table[[c for c in TABLE_COLUMNS if c in table.columns]].reset_index(drop=True)


# ----------------------------------------------------------------------------- data quality

def data_quality(ctx: Context) -> dict:
    """Coverage, missing cells, gaps and outlying values of every indicator."""
    p = ctx.panel
    summary = pd.Series({k: v for k, v in p.summary().items()
                         if k in ("counties", "townships", "pilot_townships", "comparison_townships",
                                  "first_period", "last_period", "periods", "rows")}, name="value").to_frame()
    pilots = p.pilots.groupby(["cohort", "model"]).size().rename("townships").reset_index()
    missing = p.missing_cells().rename("missing_cells").to_frame()
    missing["share"] = missing["missing_cells"] / len(p.data)
    outliers = []
    for ind in ctx.study.selected_indicators():
        v = ind.values(p.data)
        med = v.groupby(p.data["township_id"]).transform("median")
        mad = (v - med).abs().groupby(p.data["township_id"]).transform("median")
        robust_z = (v - med) / (1.4826 * mad.replace(0, np.nan))
        outliers.append({"indicator": ind.id, "name_zh": ind.name_zh, "cells": int(v.notna().sum()),
                         "outlying_cells_|z|>5": int((robust_z.abs() > 5).sum()),
                         "min": float(v.min()), "median": float(v.median()), "max": float(v.max())})
    gaps = p.gaps if len(p.gaps) else pd.DataFrame({"township_id": [], "missing_periods": []})
    return {"summary": summary, "pilots": pilots, "missing": missing, "gaps": gaps,
            "outliers": pd.DataFrame(outliers)}


# ----------------------------------------------------------------------------- trends

def trends(ctx: Context):
    ind = ctx.indicator
    series = {"试点乡镇 / pilot townships": indicator_series(ctx.panel, ind, "pilots")["value"],
              "非试点乡镇 / non-pilot townships": indicator_series(ctx.panel, ind, "comparison")["value"]}
    starts = sorted(ctx.panel.pilots["cohort"].unique())
    fig_ax = plots.trends(series, ind, starts, ind.target.value if ind.target else None)
    d = ctx.panel.data
    period = np.where(d["time"] < d.loc[d["treated"] == 1, "first_treat"].min(), "before the first pilot",
                      "after the first pilot start")
    table = ind.aggregate(d.assign(period_group=period, group=np.where(d["treated"] == 1, "pilot", "non-pilot")),
                          ["group", "period_group"]).unstack()
    return fig_ax, table


# ----------------------------------------------------------------------------- DiD

def did(ctx: Context) -> dict:
    d, ind, seed = ctx.frame, ctx.indicator, ctx.study.inference.seed
    cluster = "county" if ctx.study.inference.cluster == "county" else "township_id"
    keys = dict(outcome="value", unit="township_id", time="time")
    out = {}
    out["twfe"] = effects_table(twfe(d, treatment="post", cluster=cluster, indicator=ind.id, **keys))
    cs = callaway_santanna(d, first_treat="first_treat", seed=seed, indicator=ind.id, **keys)
    out["cs_simple"] = effects_table(cs.aggregate("simple"))
    out["cs_cohort"] = _cohort_labels(effects_table(cs.aggregate("group")), ctx)
    dynamic = cs.aggregate("dynamic", min_e=-12, max_e=24, bootstrap=ctx.bootstrap_draws)
    out["cs_dynamic_plot"] = dynamic.plot_data
    out["uniform_critical_value"] = dynamic.diagnostics.get("uniform_critical_value")
    es = event_study(d, first_treat="first_treat", leads=3, lags=24, cluster=cluster, indicator=ind.id, **keys)
    out["event_study"] = es
    out["pretrend"] = pd.Series({"leads tested": es.diagnostics.get("pretrend_df"),
                                 "F": es.diagnostics.get("pretrend_F"), "p-value": es.diagnostics.get("pretrend_p")})
    dec = bacon_decomposition(d, first_treat="first_treat", **keys)
    out["bacon"] = dec.by_comparison()
    out["bacon_twfe"] = dec.twfe
    out["by_model_and_cohort"] = effects_table(effects_by_group(d, treatment="post", by=["model", "cohort"],
                                                                cluster=cluster, indicator=ind.id, **keys))
    if ind.model_family in ("poisson_offset", "poisson", "binomial"):
        exposure = {"poisson_offset": "population", "binomial": "denominator", "poisson": None}[ind.model_family]
        out["poisson"] = effects_table(poisson_did(d, "numerator", "township_id", "time", "post", exposure=exposure,
                                                   cluster=cluster, indicator=ind.id))
    return out


def _cohort_labels(table: pd.DataFrame, ctx: Context) -> pd.DataFrame:
    """``g=31`` (time index) -> ``g=2018-07`` (the cohort's first month)."""
    d = ctx.panel.data
    label = dict(zip(d["time"].astype(str), d["period"].map(lambda p: str(p)), strict=False))
    table = table.copy()
    table["term"] = table["term"].map(lambda t: f"g={label.get(t[2:], t[2:])}" if t.startswith("g=") else t)
    return table


def did_figures(result: dict, ctx: Context):
    ax1 = plots.event_study(result["cs_dynamic_plot"], ctx.indicator,
                            title="Callaway-Sant'Anna 事件研究 / event study", band=True)
    ax2 = plots.event_study(result["event_study"].plot_data, ctx.indicator, title="TWFE 事件研究 / event study")
    return ax1, ax2


# ----------------------------------------------------------------------------- ITS

def its(ctx: Context) -> dict:
    """Segmented regression of the earliest cohort's series (12-month phase-in left out),
    controlled ITS against the non-pilot townships, and one ITS per pilot township."""
    ind = ctx.indicator
    first_cohort = sorted(ctx.panel.pilots["cohort"].unique())[0]
    ids = ctx.panel.pilots.loc[ctx.panel.pilots["cohort"] == first_cohort, "township_id"].tolist()
    series = indicator_series(ctx.panel, ind, ids, weighting="mean")
    options = dict(covid_phases=ctx.covid_phases, covid=ctx.study.covid.handling, indicator=ind.id)
    fit = segmented_regression(series, "value", first_cohort, transition=12, errors="arima", **options)
    control = indicator_series(ctx.panel, ind, "comparison", weighting="mean")
    cits = controlled_its(series, control, "value", first_cohort, horizons=(), **options)
    by_town = its_by_township(ctx.panel, ind, transition=12, errors="conventional", horizons=(12,),
                              covid_phases=ctx.covid_phases, covid=ctx.study.covid.handling)
    per_township = effects_table([e for f in by_town.values() for e in f.effects if e.estimand == "level_change"])
    per_township.insert(0, "township_id", list(by_town))
    return {"cohort": first_cohort, "fit": fit, "table": effects_table(fit), "diagnostics": pd.Series(
        {k: v for k, v in fit.diagnostics.items() if k in ("n_obs", "pre_periods", "durbin_watson", "ljung_box_p")}),
        "controlled": effects_table(cits), "per_township": per_township}


# ----------------------------------------------------------------------------- robustness

def robustness(ctx: Context) -> pd.DataFrame:
    covid = ctx.study.covid_periods()
    return effects_table(robustness_table(ctx.frame, covid_periods=covid, seed=ctx.study.inference.seed))


def inference_comparison(ctx: Context) -> pd.DataFrame:
    """The TWFE DiD coefficient under every inference method: which p-value to trust with
    few pilots (randomization inference or the wild cluster bootstrap; CR1 over-rejects)."""
    from evaluation.inference.few_clusters import (
        placebo_in_space,
        randomization_inference,
        twfe_cr2,
        wild_cluster_bootstrap,
    )

    d, inf = ctx.frame, ctx.study.inference
    keys = dict(outcome="value", unit="township_id", time="time")
    draws_ri = 199 if ctx.fast else inf.permutations
    draws_wb = 999 if ctx.fast else inf.wild_bootstrap_draws
    effects = [
        twfe(d, treatment="post", **keys).effects[0],
        twfe_cr2(d, treatment="post", **keys).effects[0],
        wild_cluster_bootstrap(d, treatment="post", draws=draws_wb, weights="webb", seed=inf.seed, **keys).effects[0],
        randomization_inference(d, first_treat="first_treat", draws=draws_ri, seed=inf.seed, **keys).effects[0],
        placebo_in_space(d, first_treat="first_treat", **keys).effects[0],
    ]
    table = effects_table(effects)
    table.insert(0, "inference", [e.inference for e in effects])
    return table.drop(columns=["method", "estimand", "term"])


def synthetic_designs(ctx: Context) -> dict:
    """Synthetic DiD (overall and by cohort) and a synthetic control for each pilot
    township with its placebo-in-space rank, for designs where parallel trends is doubtful."""
    from evaluation.estimators.synth import PoorPreFitWarning, synthetic_control_by_pilot, synthetic_did

    d, inf = ctx.frame, ctx.study.inference
    keys = dict(outcome="value", unit="township_id", time="time", first_treat="first_treat")
    sdid = synthetic_did(d, **keys, se=sdid_standard_error(d), replications=50 if ctx.fast else 200, seed=inf.seed,
                         alpha=inf.alpha, indicator=ctx.indicator.id)
    labels = d.drop_duplicates("first_treat").set_index("first_treat")["cohort"]
    sdid_table = effects_table(sdid)
    sdid_table["term"] = [f"cohort {labels[float(t[2:])]}" if t else "" for t in sdid_table["term"]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PoorPreFitWarning)
        sc = synthetic_control_by_pilot(d, **keys, alpha=inf.alpha, indicator=ctx.indicator.id)
    names = d.drop_duplicates("township_id").set_index("township_id")["township_name"]
    per_pilot = pd.DataFrame([{
        "township_id": pilot, "township_name": names[pilot], "att": fit.effects[0].estimate,
        "ci_low": fit.effects[0].ci_low, "ci_high": fit.effects[0].ci_high, "rank_p": fit.effects[0].p_value,
        "pre_rmspe": fit.diagnostics["pre_rmspe"], "rmspe_ratio": fit.diagnostics["rmspe_ratio"],
        "poor_pre_fit": fit.diagnostics["poor_pre_fit"]} for pilot, fit in sc.model.items()])
    return {"sdid": sdid_table, "per_pilot": per_pilot,
            "fits": {f"{k} {names[k]}": v for k, v in sc.model.items()},
            "warnings": [str(w.message) for w in caught if issubclass(w.category, PoorPreFitWarning)]}


def synthetic_control_figure(res: dict, ctx: Context):
    """Each pilot's gap to its synthetic twin over the placebo gaps (see :func:`synthetic_designs`)."""
    return plots.synthetic_control_gaps(res["fits"], ctx.indicator)


def parallel_trends_sensitivity(ctx: Context) -> dict:
    """Honest confidence sets (Rambachan and Roth 2023) from the Callaway-Sant'Anna event
    times (universal base period): relative magnitudes for the average effect of the first
    3 months after the start (3 pre-periods before the reference month), and smoothness
    bounds for the average of the first 12 months (12 pre-periods, to fit the trend)."""
    from evaluation.diagnostics.sensitivity import honest_sensitivity

    d, alpha = ctx.frame, ctx.study.inference.alpha
    dyn = callaway_santanna(d, "value", "township_id", "time", "first_treat", base_period="universal",
                            alpha=alpha).aggregate("dynamic", min_e=-13, max_e=11)
    rm = honest_sensitivity(dyn, bound="relative_magnitude", max_pre=3, max_post=2, l_post=np.full(3, 1 / 3),
                            values=[0.5, 1.0, 2.0], alpha=alpha, seed=ctx.study.inference.seed or 0,
                            indicator=ctx.indicator.id)
    sd = honest_sensitivity(dyn, bound="smoothness", max_pre=11, max_post=11, l_post=np.full(12, 1 / 12),
                            values="around_breakdown", alpha=alpha, indicator=ctx.indicator.id)
    table = pd.concat([
        rm.tidy().assign(theta="前3个月平均效果 / mean effect, months 0-2"),
        sd.tidy().assign(theta="前12个月平均效果 / mean effect, months 0-11")], ignore_index=True)
    table = table[["theta", "term", "estimate", "ci_low", "ci_high", "method"]]
    breakdown = pd.Series({"relative magnitudes: Mbar": rm.diagnostics["breakdown"],
                           "smoothness: M": sd.diagnostics["breakdown"]}, name="breakdown")
    return {"table": table, "breakdown": breakdown, "fits": (rm, sd)}


def sensitivity_figure(res: dict, ctx: Context):
    rm, sd = res["fits"]
    return plots.sensitivity([rm, sd], ctx.indicator, ["相对幅度 relative magnitudes, 0-2月",
                                                       "平滑度 smoothness, 0-11月"])


# ----------------------------------------------------------------------------- summary

SCORECARD_COLUMNS = ["name_zh", "name_en", "att", "ci_low", "ci_high", "p_value", "ri_p_value", "relative_pct", "target",
                     "pilot_last12", "comparison_last12", "pilot_meets_target", "comparison_meets_target",
                     "n_pilots", "pretrend_p"]


SCORECARD_HEADERS = {
    "name_zh": "指标", "name_en": "Indicator", "att": "效果 ATT", "ci_low": "95% CI 下限", "ci_high": "95% CI 上限",
    "p_value": "p (解析 analytic)", "ri_p_value": "p (随机化 RI)", "relative_pct": "相对变化 %", "target": "目标 target", "pilot_last12": "试点近12月",
    "comparison_last12": "非试点近12月", "pilot_meets_target": "试点达标", "comparison_meets_target": "非试点达标",
    "n_pilots": "试点数", "pretrend_p": "前趋势检验 p"}


def show_scorecard(card: pd.DataFrame) -> None:
    """Display the scorecard, with a machine-readable copy that the index page reads."""
    from IPython.display import display

    columns = ["indicator", "name_zh", "name_en", "att", "ci_low", "ci_high", "p_value", "ri_p_value", "p_recommended",
               "recommended_test", "n_pilots", "improved", "worsened", "mixed"]
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
               for row in card[columns].to_dict("records")]
    table = card.set_index("indicator")[SCORECARD_COLUMNS]
    readable = table.rename(columns=SCORECARD_HEADERS).set_index(["指标", "Indicator"])
    display({"application/vnd.evaluation.scorecard+json": records,
             "text/plain": table.to_string(float_format=lambda v: f"{v:.4g}"),
             "text/html": readable.to_html(escape=True, float_format=lambda v: f"{v:.4g}", na_rep="—")},
            raw=True)


def summary(ctx: Context) -> dict:
    card = scorecard(ctx.panel, ctx.study.selected_indicators(), seed=ctx.study.inference.seed,
                     alpha=ctx.study.inference.alpha)
    card["label"] = card["name_zh"] + " / " + card["name_en"]
    return {"scorecard": card, "table": card.set_index("indicator")[SCORECARD_COLUMNS],
            "verdicts": card[["indicator", "verdict_zh", "verdict_en"]]}
