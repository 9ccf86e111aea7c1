"""What each report chapter shows: the notebooks' one facade.

A chapter notebook opens with :func:`open_chapter` (study, panel, analysis plan, figure
style, title block) and then calls one function per section; each returns tables and
figures, and :meth:`Context.show` / :meth:`Context.note` display them. No estimation and
no display logic live in the notebooks.

Every estimated section is a named result of the results store
(:mod:`evaluation.report.store`): :meth:`Context.result` reads it when the store holds one
made with the same analysis plan, inputs and code, and otherwise computes it once with
the section's builder below and writes it. The summary chapter asks for the same named
results, so its numbers are the chapters' numbers.
"""

from __future__ import annotations

import hashlib
import html
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.data.frames import NEEDS_COMPLETE_PANEL, complete_townships, did_frame
from evaluation.data.panel import LISTED_WARNINGS, Panel, load_panel
from evaluation.diagnostics.bacon import bacon_decomposition
from evaluation.diagnostics.robustness import placebo_in_time, robustness_table
from evaluation.diagnostics.sensitivity import honest_sensitivity
from evaluation.errors import EstimationError, EvaluationError
from evaluation.estimators.did import event_study, poisson_did, twfe
from evaluation.estimators.imputation import imputation_did
from evaluation.estimators.its import (
    CovidPhase,
    controlled_its,
    indicator_series,
    its_by_township,
    segmented_regression,
)
from evaluation.estimators.saturated import extended_twfe, sun_abraham
from evaluation.estimators.staggered import callaway_santanna
from evaluation.estimators.synth import PoorPreFitWarning, synthetic_control_by_pilot, synthetic_did
from evaluation.inference.few_clusters import (
    placebo_in_space,
    randomization_inference,
    twfe_cr2,
    wild_cluster_bootstrap,
)
from evaluation.inference.few_treated import parse_withheld, subgroup_randomization, withhold_clustered
from evaluation.inference.pretrend import pretrend_randomization
from evaluation.paths import resolve_study_path
from evaluation.report import plots
from evaluation.report.outline import CHAPTER_BY_KEY, CHAPTERS, Chapter  # noqa: F401 - the chapters' facade
from evaluation.report.readable import DASH, ESTIMANDS, WORDS, Reader, fixed, is_written, written
from evaluation.report.store import Result, ResultsStore, code_hash, make_result, result_key
from evaluation.study.catalogue import UNIT_FACTORS, Indicator
from evaluation.study.config import Study, load_study
from evaluation.study.plan import Settings

# MathJax (JupyterLab's, and the exported pages') typesets `$...$` and `\(...\)` in HTML
# outputs; inside an element of these classes it leaves the text alone (MathJax 2 and 3;
# pandas marks its tables the same way when ``display.html.use_mathjax`` is off).
NO_MATH = "tex2jax_ignore mathjax_ignore"



@dataclass
class Context:
    """One chapter run: the study, its resolved analysis plan, the panel, the indicator
    (per-indicator chapters) and the results store."""

    study: Study
    settings: Settings
    panel: Panel
    indicator: Indicator | None
    store: ResultsStore
    inputs: dict = field(default_factory=dict)
    code: str = ""

    @property
    def fast(self) -> bool:
        return self.settings.fast

    def township_name(self, township_id) -> str:
        """A township's name (its code when the panel does not name it)."""
        if self.panel is None:
            return str(township_id)
        names = self.panel.data.drop_duplicates("township_id").set_index("township_id")["township_name"]
        key = str(township_id)
        lookup = {str(k): v for k, v in names.items()}
        return str(lookup.get(key, key))

    def cohort_label(self, cohort) -> str:
        """A cohort (its first treated period on the time scale) as its period (``2018-07``)."""
        d = self.panel.data
        labels = dict(zip(d["time"].astype(float), d["period"].map(str), strict=False))
        return str(labels.get(float(cohort), cohort))

    @property
    def reader(self) -> Reader:
        """How numbers and words are written for this study's readers (``report.language``)."""
        return Reader(self.study.report.language)

    @property
    def frame(self) -> pd.DataFrame:
        return did_frame(self.panel, self.indicator)

    def frame_for(self, method: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The indicator's frame for ``method`` and the townships it leaves out (a table
        with the method's name; empty when none). Methods in :data:`NEEDS_COMPLETE_PANEL`
        take only the townships observed, with a value, in every period; the others take
        every observation."""
        frame = self.frame
        if method not in NEEDS_COMPLETE_PANEL:
            return frame, complete_townships(frame.iloc[:0])[1].assign(method=method)
        frame, dropped = complete_townships(frame)
        return frame, dropped.assign(method=method)

    @property
    def covid_phases(self) -> list[CovidPhase]:
        return [CovidPhase(p.name, p.start, p.end) for p in self.study.covid.phases] \
            if self.study.covid.handling == "phases" else []

    def for_indicator(self, indicator: Indicator) -> Context:
        from evaluation.report.batch import input_hashes

        return Context(self.study, self.settings, self.panel, indicator, self.store,
                       input_hashes(self.study, self.panel, indicator), self.code)

    def key(self, section: str) -> str:
        return result_key(section, self.indicator.id if self.indicator else None, self.settings.as_dict(),
                          self.inputs, self.code)

    def result(self, section: str) -> Result:
        """The named result: from the store when current, else computed once and stored."""
        indicator = self.indicator.id if self.indicator else None
        key = self.key(section)
        stored = self.store.read(section, indicator, key)
        if stored is not None:
            return stored
        try:
            result = SECTIONS[section](self)
        except EstimationError as exc:  # the data cannot support this method: say why on the page
            result = make_result(section, indicator, values={"not_estimable": not_estimable_text(exc)})
        result.key, result.settings = key, self.settings.as_dict()
        self.store.write(result)
        return self.store.read(section, indicator, key)

    # ------------------------------------------------------------------ display: the one route
    def show(self, *items) -> None:
        """Display tables, figures and notes (text is escaped and shown as a note in a block
        MathJax leaves alone; a tuple is shown item by item; ``None`` and empty text show
        nothing). A table is written for readers first (:meth:`Reader.table`: numbers by
        their kind, headers in the report's language; a table of strings is taken as
        written) and shown as escaped HTML without the index, which MathJax leaves alone."""
        import matplotlib.pyplot as plt
        from IPython.display import display

        for item in items:
            if item is None or (isinstance(item, str) and not item):
                continue
            if isinstance(item, tuple):
                self.show(*item)
            elif isinstance(item, str):
                display(PageBlock(escaped_block(f"<p>{html.escape(item)}</p>"), item))
            elif hasattr(item, "savefig"):
                display(item)
                plt.close(item)
            elif isinstance(item, pd.DataFrame | pd.Series):
                written = item if is_written(item) else self.reader.table(item, self.indicator)
                display(PageBlock(table_html(written), written.to_string(index=False)))
                if written.attrs.get("note"):
                    self.show(written.attrs["note"])
            else:
                display(item)

    def note(self, key: str) -> None:
        """A chapter's prose, with the settings it quotes rendered from the analysis plan,
        in the report's language."""
        from IPython.display import display

        *heading, zh, en = NOTES[key]
        values = self.note_values()
        r = self.reader
        title = ""
        if heading:
            head_zh, _, head_en = heading[0].partition(" / ")
            title = f"<h2>{html.escape(r.say(head_zh, head_en or head_zh))}</h2>"
        paragraphs = [zh] if r.language == "zh" else [en] if r.language == "en" else [zh, en]
        texts = [p.format(**values) for p in paragraphs]
        display(PageBlock(escaped_block(title + "".join(f"<p>{html.escape(t)}</p>" for t in texts)), "\n".join(texts)))

    def caption(self, key: str) -> None:
        """A table's caption (:data:`CAPTIONS`) in the report's language."""
        self.show(self.reader.both(CAPTIONS[key]))

    def note_values(self) -> dict:
        s = self.settings
        out = {"alpha_pct": f"{100 * (1 - s.alpha):g}%", "few_pilots": s.few_pilots, "outlier_z": f"{s.outlier_z:g}",
               "rm_values": ", ".join(f"{v:g}" for v in s.rm_values), "leads": s.pretrend_leads - 1,
               "first_event": s.event_window[0], "last_event": s.event_window[1],
               "draws_randomization": s.draws_randomization, "draws_wild_bootstrap": s.draws_wild_bootstrap,
               "weights": s.wild_bootstrap_weights, "comparison_zh": COMPARISON_ZH[s.comparison],
               "comparison_en": s.comparison.replace("_", "-")}
        for name, count in (("phase_in", s.its_phase_in), ("placebo", s.placebo_shift),
                            ("target_window", s.target_window), ("rm_post", s.rm_post_periods),
                            ("rm_pre", s.rm_pre_periods), ("sd_post", s.sd_post_periods),
                            ("sd_pre", s.sd_pre_periods)):
            out[f"{name}_zh"], out[f"{name}_en"] = s.text(count)
        out["unit_zh"], out["unit_en"] = s.text(1)[0].lstrip("1"), s.frequency
        out["first_event_abs"] = -s.event_window[0]
        return out


def escaped_block(body: str) -> str:
    """HTML whose every data-derived string the caller has passed through
    :func:`html.escape`, in one block that MathJax leaves alone: a township named
    ``$x$`` is shown as typed, never typeset as a formula."""
    return f'<div class="{NO_MATH}">{body}</div>'


class PageBlock:
    """A block of a page: escaped HTML for readers and its plain text, which nbval
    compares when it re-runs a chapter (so a changed number in a table or verdict fails)."""

    def __init__(self, html_text: str, plain: str):
        self.html, self.plain = html_text, plain

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.plain


def table_html(table: pd.DataFrame) -> str:
    """A reader's table as HTML: every cell escaped, no index, left alone by MathJax."""
    body = table.to_html(index=False, escape=True, border=0, classes=["reader-table", *NO_MATH.split()])
    return escaped_block(body)


def not_estimable_text(exc: Exception) -> str:
    """The reason a method could not be estimated, as stored and shown."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}"


def not_estimated(*results: Result) -> str | None:
    """A note for the page when one of ``results`` could not be estimated, else ``None``."""
    reasons = [f"{r.section}: {r.not_estimable}" for r in results if r.not_estimable]
    if not reasons:
        return None
    return "未能估计 / not estimated — " + "; ".join(reasons)


COMPARISON_ZH = {"never_treated": "从未试点乡镇", "not_yet_treated": "尚未试点乡镇"}


def setup(study_path: str | Path, indicator: str | None = None, fast: bool = False,
          results_dir: str | Path | None = None) -> Context:
    """Load the study, its panel and resolved plan, and the store (default
    ``outputs/<study>/results``); the indicator for per-indicator chapters."""
    from evaluation.report.batch import input_hashes

    plots.setup_style()
    path = resolve_study_path(study_path)
    study = load_study(path)
    with warnings.catch_warnings():
        for listed in LISTED_WARNINGS:  # the data-quality chapter lists them
            warnings.simplefilter("ignore", listed)
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
    pd.set_option("display.html.use_mathjax", False)  # tables show `$...$` in names as typed (see NO_MATH)
    store = ResultsStore(Path(results_dir) if results_dir else study.output_dir / "results")
    return Context(study=study, settings=study.settings(fast), panel=panel, indicator=chosen, store=store,
                   inputs=input_hashes(study, panel, chosen), code=code_hash())


def open_chapter(chapter: str, study_path: str | Path, indicator: str | None = None, fast: bool = False,
                 results_dir: str | Path | None = None) -> Context:
    """The one call that opens a chapter: :func:`setup`, then the title block."""
    from IPython.display import display

    ch = CHAPTER_BY_KEY[chapter]
    ctx = setup(study_path, indicator if ch.per_indicator else None, fast=fast, results_dir=results_dir)
    block = header(ctx, ch.title_zh, ch.title_en)
    display(PageBlock(block, html.unescape(re.sub(r"<[^>]+>", " ", block)).strip()))
    return ctx


def header(ctx: Context, chapter_zh: str, chapter_en: str) -> str:
    """HTML title block with the demo banner, in the report's language (every
    data-derived string escaped, the block MathJax-ignored: see :func:`escaped_block`)."""
    t, r, esc = ctx.study.title, ctx.reader, html.escape
    parts = []
    if ctx.study.synthetic:
        parts.append('<div style="background:#fdecea;border:2px solid #c0392b;padding:8px 12px;'
                     'font-weight:bold;color:#922b21">'
                     + esc(r.say("合成演示数据，非真实乡镇", "SYNTHETIC DEMO DATA — not real townships")) + "</div>")
    parts.append(f"<h1>{esc(r.say(chapter_zh, chapter_en))}</h1>")
    if ctx.settings.fast:
        parts.append(f'<p class="fast-run"><b>{esc(r.say("快速运行（重抽样次数较少），仅供预览", "Fast run (fewer resampling draws): a preview"))}</b></p>')
    titles = [t.zh] if r.language == "zh" else [t.en] if r.language == "en" else [t.zh, t.en]
    parts.append("<p><b>" + "</b><br>".join(esc(x) for x in titles) + ("</b>" if len(titles) == 1 else "") + "</p>")
    if ctx.indicator is not None:
        ind = ctx.indicator
        parts.append(f"<p>{esc(r.say('指标', 'Indicator'))}: <b>{esc(r.name(ind))}</b> "
                     f"({esc(r.say('单位', 'unit'))}: {esc(r.unit(ind))})</p>")
    parts.append(coverage_note(ctx))
    return escaped_block("\n".join(p for p in parts if p))


METHOD_ZH = {"Goodman-Bacon": "Goodman-Bacon 分解", "synthetic control": "合成控制", "synthetic DiD": "合成双重差分",
             "randomization inference": "随机化推断", "placebo in space": "空间安慰剂检验",
             "pre-trend randomization": "前趋势随机化检验"}


def coverage_note(ctx: Context) -> str:
    """What the panel lacks and who leaves out what: townships left out of the study
    (``townships.exclude``, ``townships.gaps: drop``) and, for the chapter's indicator,
    townships with missing periods or empty cells, which the methods that need a complete
    panel leave out. Empty when the panel is complete."""
    esc, parts, r = html.escape, [], ctx.reader
    if ctx.panel is None:
        return ""
    excluded = ctx.panel.excluded
    if len(excluded):
        items = "".join(f"<li>{esc(str(x.township_id))} {esc(str(x.township_name))}"
                        f"{esc(r.say('（试点）', ' (pilot)')) if x.pilot else ''}: {esc(str(x.reason))}</li>"
                        for x in excluded.itertuples())
        parts.append(f"<p>{esc(r.say('未纳入分析的乡镇', 'Townships left out of the study'))}: {len(excluded)}</p>"
                     f"<ul>{items}</ul>")
    if ctx.indicator is not None:
        incomplete = ctx.panel.incomplete(ctx.indicator)
        if len(incomplete):
            methods = [m for m in METHOD_ZH if m in NEEDS_COMPLETE_PANEL]
            balanced_zh, balanced_en = "、".join(METHOD_ZH[m] for m in methods), ", ".join(methods)
            items = "".join(
                f"<li>{esc(str(x.township_id))} {esc(str(x.township_name))}: "
                + "; ".join(y for y in (esc(r.say(f"缺 {x.missing_periods} 期", f"{x.missing_periods} missing "
                                                  "period(s)")) + f" ({esc(x.missing_labels)})"
                                         if x.missing_periods else "",
                                         esc(r.say(f"{x.empty_cells} 个空值", f"{x.empty_cells} empty cell(s)"))
                                         + f": {esc(x.empty_columns)}" if x.empty_cells else "") if y)
                + "</li>" for x in incomplete.itertuples())
            zh = (f"{len(incomplete)} 个乡镇缺期或有空值。双向固定效应、事件研究、Callaway–Sant'Anna（非平衡面板估计）和中断"
                  f"时间序列使用所有观测到的数据；{balanced_zh}需要完整面板，不纳入这些乡镇。数据未做任何插补。")
            en = (f"{len(incomplete)} township(s) lack periods or values. Two-way fixed effects, the event studies, "
                  f"Callaway and Sant'Anna (unbalanced-panel estimator) and the interrupted time series use every "
                  f"observed value; {balanced_en} need a complete panel and leave these townships out. Nothing was "
                  "imputed.")
            parts.append(f"<p><b>{esc(r.say('数据不完整', 'Incomplete data'))}</b>: {esc(r.say(zh, en, sep=' '))}"
                         f"</p><ul>{items}</ul>")
    return "\n".join(parts)


def _section(result: Result, name: str) -> pd.DataFrame:
    return result.effects[result.effects["section"] == name].drop(columns="section").reset_index(drop=True)


def _sections(**parts) -> pd.DataFrame:
    """Several groups of effects in one tidy table, told apart by a ``section`` column."""
    from evaluation.results import tidy

    frames = [tidy(list(effects)).assign(section=name) for name, effects in parts.items()]
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- effects for readers

ITS_ESTIMANDS = ("level_change", "slope_change", "effect_at_horizon", "relative_effect_at_horizon",
                 "control_level_change", "control_slope_change", "difference_in_level_change",
                 "difference_in_slope_change")
SCALES = {"rate_ratio": ("率比", "rate ratio"), "percent_change": ("百分比变化", "percent change"),
          "log": ("对数尺度系数", "coefficient on the log scale")}
BY_ZH = {"model": "整合模式", "cohort": "试点批次", "county": "县区"}
READER_COLUMNS = ("term", "estimate", "std_error", "interval", "p_value", "n_treated")


def effect_label(ctx: Context, row: dict) -> str:
    """What one effect is, in the report's language, from its structured fields (never
    from ``term``): the township (by name) it leaves out or is, its subgroup, event time,
    horizon after the start or cohort (by its first period), else its estimand."""
    r, s = ctx.reader, ctx.settings
    est = row["estimand"]
    present = {k: row.get(k) for k in ("unit", "by", "group", "event_time", "horizon", "cohort")
               if k in row and pd.notna(row.get(k))}
    if est == "att_leave_one_out":
        name = ctx.township_name(present.get("unit"))
        return r.say(f"去掉{name}", f"without {name}")
    if est == "placebo_att":
        zh, en = s.text(s.placebo_shift)
        return r.say(f"安慰剂：开始时间提前{zh}", f"placebo: start {en} early")
    if est == "att_excluding_periods":
        return r.say("剔除新冠疫情时期", "COVID-19 periods dropped")
    if "by" in present:
        by, group = present["by"], str(present.get("group", ""))
        if by == "comparison":
            zh, en = WORDS.get(group, (group, group))
            return r.say(f"对照：{zh}乡镇", f"comparison: {en} townships")
        return r.say(f"{BY_ZH.get(by, by)}：{group}", f"{by}: {group}")
    if "unit" in present:
        return ctx.township_name(present["unit"])
    if est in ITS_ESTIMANDS:
        est_zh, est_en = ESTIMANDS[est]
        if "horizon" in present:
            zh, en = s.text(int(present["horizon"]))
            return r.say(f"{est_zh}（试点后{zh}）", f"{est_en} ({en} after the start)")
        return r.say(est_zh, est_en)
    if row.get("scale") in SCALES:
        return r.both(SCALES[row["scale"]])
    if "event_time" in present:
        k = int(present["event_time"])
        return r.say(f"事件时间 {k}", f"event time {k}")
    if "cohort" in present:
        label = ctx.cohort_label(present["cohort"])
        return r.say(f"批次 {label}", f"cohort {label}")
    return r.estimand(est)


def reader_effects(ctx: Context, effects: pd.DataFrame, columns=READER_COLUMNS) -> pd.DataFrame:
    """A tidy effects table written for readers: each effect labelled by
    :func:`effect_label`, methods and inference named in the report's language, numbers in
    the indicator's unit (:meth:`Reader.effects`); inference that rests on fewer treated
    townships than the plan's ``very_few_pilots`` is withheld with its reason
    (:func:`evaluation.inference.few_treated.withhold_clustered`, the one rule)."""
    rows = withhold_clustered(effects.reset_index(drop=True), min_treated=ctx.settings.very_few_pilots)
    withheld = sorted({int(w[0]) for w in map(parse_withheld, rows.get("inference", [])) if w})
    rows["term"] = [effect_label(ctx, row) for row in rows.to_dict("records")]
    for column in ("method", "inference"):
        if column in rows:
            rows[column] = [ctx.reader.method(v) for v in rows[column]]
    table = ctx.reader.effects(rows, ctx.indicator, columns)
    if withheld and "inference" not in columns:  # say why the dashes: the table has no inference column
        k = ctx.settings.very_few_pilots
        table.attrs["note"] = ctx.reader.say(
            f"“—”：这些行只有{'或'.join(map(str, withheld))}个试点乡镇（少于{k}个），聚类稳健标准误、置信区间和 p 值不可靠，"
            "不予报告；按组别的效果见随机化推断。",
            f"“—”: these rows rest on {' or '.join(map(str, withheld))} pilot townships (fewer than {k}); their "
            "cluster-robust standard errors, intervals and p-values are unreliable and not shown; see randomization "
            "inference for effects by group.")
    return table


def _item_table(ctx: Context, items: list[tuple[tuple[str, str], str]]) -> pd.DataFrame:
    """A two-column table of (label (zh, en), value already written) pairs."""
    r = ctx.reader
    return written(pd.DataFrame({r.say("项目", "Item"): [r.say(*label) for label, _ in items],
                                 r.say("数值", "Value"): [value for _, value in items]}, dtype=object))


# ----------------------------------------------------------------------------- data quality

def build_data_quality(ctx: Context) -> Result:
    """Coverage, missing cells, gaps and outlying values of every indicator."""
    p, z = ctx.panel, ctx.settings.outlier_z
    summary = pd.DataFrame([{"item": k, "value": str(v)} for k, v in p.summary().items()
                            if k in ("counties", "townships", "pilot_townships", "comparison_townships",
                                     "first_period", "last_period", "periods", "rows")])
    pilots = p.pilots.groupby(["cohort", "model"]).size().rename("townships").reset_index()
    missing = p.missing_cells().rename("missing_cells").rename_axis("column").reset_index()
    missing["share"] = missing["missing_cells"] / len(p.data)
    outliers = []
    for ind in ctx.study.selected_indicators():
        v = ind.values(p.data)
        med = v.groupby(p.data["township_id"]).transform("median")
        mad = (v - med).abs().groupby(p.data["township_id"]).transform("median")
        robust_z = (v - med) / (1.4826 * mad.replace(0, np.nan))
        outliers.append({"indicator": ind.id, "name_zh": ind.name_zh, "cells": int(v.notna().sum()),
                         "outlying_cells": int((robust_z.abs() > z).sum()),
                         "min": float(v.min()), "median": float(v.median()), "max": float(v.max())})
    gaps = p.gaps if len(p.gaps) else pd.DataFrame({"township_id": [], "missing_periods": []})
    incomplete = pd.concat([p.incomplete(ind).assign(indicator=ind.id) for ind in ctx.study.selected_indicators()],
                           ignore_index=True)
    loading = pd.DataFrame(
        [{"item": "unit converted", "detail": f"{c}: {u}"} for c, u in p.units.items() if UNIT_FACTORS.get(u, 1) != 1]
        + [{"item": "row dropped", "detail": f"row {r['row']}: {r['reason']}"}
           for r in p.dropped_rows.to_dict("records")]
        + [{"item": "warning", "detail": note} for note in p.notes],
        columns=["item", "detail"])
    return make_result("data_quality", None, tables={
        "summary": summary, "pilots": pilots, "missing": missing, "gaps": gaps, "outliers": pd.DataFrame(outliers),
        "excluded": p.excluded, "incomplete": incomplete, "loading": loading})


def data_quality(ctx: Context) -> dict:
    """The data-quality chapter's tables, written for readers: data columns under the
    study's own headers, indicators and townships by name."""
    tables, r = ctx.result("data_quality").tables, ctx.reader
    out = dict(tables)
    headers = {contract: header for header, contract in ctx.study.data.columns.items()}
    names = {i.id: r.name(i) for i in ctx.study.selected_indicators()}
    summary = tables["summary"].copy()
    summary["value"] = [r.count(v) if str(v).isdigit() else str(v) for v in summary["value"]]
    out["summary"] = r.table(summary)
    out["pilots"] = tables["pilots"].rename(columns={"townships": "n_units"})
    out["missing"] = tables["missing"].assign(column=[headers.get(c, c) for c in tables["missing"]["column"]])
    out["gaps"] = (r.say("没有缺期的乡镇。", "No township misses a period.") if tables["gaps"].empty
                   else r.table(tables["gaps"], kinds={"missing_periods": "text"},
                                headers={"missing_periods": ("缺失的期", "Missing periods")}))
    by_id = {i.id: i for i in ctx.study.selected_indicators()}
    outliers = tables["outliers"].assign(indicator=[names.get(i, i) for i in tables["outliers"]["indicator"]])
    for column in ("min", "median", "max"):  # each indicator's values in its unit (shares in %)
        outliers[column] = [r.level(v, by_id[i]) if i in by_id else fixed(v)
                            for v, i in zip(outliers[column], tables["outliers"]["indicator"], strict=True)]
    out["outliers"] = r.table(outliers.drop(columns="name_zh"), kinds={"min": "text", "median": "text", "max": "text"},
                              headers={"outlying_cells": (f"异常值数（|z| > {ctx.settings.outlier_z:g}）",
                                                          f"Outlying cells (|z| > {ctx.settings.outlier_z:g})")})
    incomplete = tables["incomplete"]
    methods_zh = "、".join(METHOD_ZH[m] for m in METHOD_ZH if m in NEEDS_COMPLETE_PANEL)
    methods_en = ", ".join(m for m in METHOD_ZH if m in NEEDS_COMPLETE_PANEL)
    out["incomplete"] = (
        r.say("每个指标在每个乡镇每期都有数据：所有方法使用全部乡镇。",
              "Every indicator has a value for every township and period: every method uses every township.")
        if incomplete.empty else
        (r.say(f"缺期或有空值的乡镇（按指标）：{methods_zh}不纳入这些乡镇，其余方法使用其观测到的数据，未做插补。",
               f"Townships with missing periods or empty cells, by indicator: {methods_en} leave them out; every "
               "other method uses their observed values; nothing is imputed."),
         incomplete[["indicator", "township_id", "township_name", "missing_periods", "missing_labels",
                     "empty_cells", "empty_columns"]].assign(indicator=lambda t: [names.get(i, i) for i in t["indicator"]])))
    loading = tables["loading"]
    out["loading"] = (r.say("读取时未转换单位、未删除行、无警告。", "Reading the files converted no unit, dropped no row and "
                            "raised no warning.") if loading.empty else
                      (r.say("读取文件时的单位换算、删除的行和警告", "Units converted, rows dropped and warnings when reading "
                             "the files"), loading))
    return out


# ----------------------------------------------------------------------------- trends

def build_trends(ctx: Context) -> Result:
    """The indicator of pilot and non-pilot townships by period (pooled), before and after
    the first pilot start, and over the plan's target window (the last periods)."""
    ind, d, w = ctx.indicator, ctx.panel.data, ctx.settings.target_window
    series = pd.DataFrame({
        "period": [str(p) for p in indicator_series(ctx.panel, ind, "pilots").index],
        "pilot": indicator_series(ctx.panel, ind, "pilots")["value"].to_numpy(),
        "comparison": indicator_series(ctx.panel, ind, "comparison")["value"].to_numpy()})
    first_start = d.loc[d["treated"] == 1, "first_treat"].min()
    period = np.where(d["time"] < first_start, "before the first pilot", "after the first pilot start")
    before_after = ind.aggregate(d.assign(period_group=period, group=np.where(d["treated"] == 1, "pilot", "non-pilot")),
                                 ["group", "period_group"]).unstack().reset_index()
    recent = ind.aggregate(d[d["time"] > d["time"].max() - w], "treated")
    pilot_level, comparison_level = float(recent.loc[1]), float(recent.loc[0])
    values = {"pilot_recent": pilot_level, "comparison_recent": comparison_level, "target_window": w,
              "target": ind.target.value if ind.target else None,
              "pilot_meets_target": bool(ind.meets_target(pilot_level)) if ind.target else None,
              "comparison_meets_target": bool(ind.meets_target(comparison_level)) if ind.target else None}
    return make_result("trends", ind.id, tables={"series": series, "before_after": before_after}, values=values)


def trends(ctx: Context):
    """The trends figure and the before/after table (the indicator's levels, pooled)."""
    res, r = ctx.result("trends"), ctx.reader
    ind, s = ctx.indicator, res.tables["series"]
    index = pd.PeriodIndex(s["period"], freq=ctx.panel.periods.freq)
    series = {("试点乡镇", "pilot townships"): pd.Series(s["pilot"].to_numpy(), index=index),
              ("非试点乡镇", "non-pilot townships"): pd.Series(s["comparison"].to_numpy(), index=index)}
    starts = sorted(ctx.panel.pilots["cohort"].unique())
    ax = plots.trends(series, ind, starts, ind.target.value if ind.target else None, reader=r)
    table = res.tables["before_after"]
    kinds = {c: "level" for c in table.columns if c != "group"}
    headers = {c: WORDS[c] for c in kinds}
    return ax.figure, r.table(table, ind, kinds=kinds, headers=headers)


# ----------------------------------------------------------------------------- DiD

def build_callaway_santanna(ctx: Context) -> Result:
    """Callaway-Sant'Anna against the plan's comparison group: the simple ATT (the
    headline), by cohort, and by event time over the plan's event window with a uniform band."""
    d, ind, s = ctx.frame, ctx.indicator, ctx.settings
    keys = dict(outcome="value", unit="township_id", time="time", cohort="first_treat")
    cs = callaway_santanna(d, control_group=s.comparison, seed=s.seed, alpha=s.alpha, indicator=ind.id, **keys)
    simple = cs.aggregate("simple")
    dynamic = cs.aggregate("dynamic", event_window=s.event_window, draws=s.draws_uniform_band)
    att = simple.get("att")
    treated_post_mean = float(d.loc[d["post"] == 1, "value"].mean())
    influence = pd.DataFrame({"township_id": simple.influence.index, "influence": simple.influence.iloc[:, -1]})
    return make_result("did.callaway_santanna", ind.id,
                       _sections(simple=simple, cohort=cs.aggregate("group"), dynamic=dynamic),
                       tables={"dynamic_plot": dynamic.plot_data, "influence": influence},
                       values={"uniform_critical_value": dynamic.diagnostics.get("uniform_critical_value"),
                               "treated_post_mean": treated_post_mean,
                               "counterfactual_mean": treated_post_mean - att.estimate,
                               "n_townships": int(d["township_id"].nunique())})


def build_event_study(ctx: Context) -> Result:
    """TWFE event study (leads and lags binned at the ends) and its pre-trend test: the
    joint test of the leads by randomization inference (valid with few pilots), with the
    cluster-robust F beside it and what the test could have detected (Roth 2022)."""
    d, ind, s = ctx.frame, ctx.indicator, ctx.settings
    window = (-s.pretrend_leads, s.event_window[1])
    es = event_study(d, outcome="value", unit="township_id", time="time", cohort="first_treat",
                     event_window=window, cluster=s.cluster, alpha=s.alpha, indicator=ind.id)
    values = {"pretrend_df": es.diagnostics.get("pretrend_df"), "pretrend_F": es.diagnostics.get("pretrend_F"),
              "pretrend_p_cluster_robust": es.diagnostics.get("pretrend_p"), "pretrend_p": np.nan}
    complete, dropped = ctx.frame_for("pre-trend randomization")
    try:
        pt = pretrend_randomization(complete, outcome="value", unit="township_id", time="time", cohort="first_treat",
                                    event_window=window, draws=s.draws_randomization, seed=s.seed, alpha=s.alpha,
                                    indicator=ind.id)
    except EstimationError as exc:  # the event study stands; the page says why the test could not be made
        values["pretrend_not_estimable"] = not_estimable_text(exc)
    else:
        v = pt.diagnostics
        values.update(pretrend_p=v["p_value"], pretrend_p_floor=v["p_floor"], pretrend_statistic=v["statistic"],
                      pretrend_assignments=v["assignments"], pretrend_exact=v["exact"],
                      pretrend_slope_50=v["slope_50"], pretrend_slope_80=v["slope_80"],
                      pretrend_bias_80=v["bias_80"], pretrend_equivalence_bound=v["equivalence_bound"],
                      pretrend_leads_tested=v["leads"])
    return make_result("did.event_study", ind.id, es, tables={"plot": es.plot_data, "pretrend_dropped": dropped},
                       values=values)


def build_twfe(ctx: Context) -> Result:
    """TWFE, its Goodman-Bacon decomposition, effects by subgroup and (counts) Poisson DiD."""
    d, ind, s = ctx.frame, ctx.indicator, ctx.settings
    keys = dict(outcome="value", unit="township_id", time="time", cohort="first_treat")
    parts = {"twfe": twfe(d, cluster=s.cluster, alpha=s.alpha, indicator=ind.id, **keys)}
    if s.subgroups:  # each group's pilots against the comparison townships, randomization inference
        parts["subgroups"] = subgroup_randomization(d, by=list(s.subgroups), draws=s.draws_randomization, seed=s.seed,
                                                    alpha=s.alpha, indicator=ind.id, **keys)
    if ind.model_family in ("poisson_offset", "poisson", "binomial"):
        exposure = {"poisson_offset": "population", "binomial": "denominator", "poisson": None}[ind.model_family]
        parts["poisson"] = poisson_did(d, **{**keys, "outcome": "numerator"}, exposure=exposure,
                                       cluster=s.cluster, alpha=s.alpha, indicator=ind.id)
    balanced, dropped = ctx.frame_for("Goodman-Bacon")
    dec = bacon_decomposition(balanced, **keys)
    return make_result("did.twfe", ind.id, _sections(**parts), tables={"bacon": dec.by_comparison().reset_index(),
                                                                     "dropped": dropped},
                       values={"bacon_twfe": dec.twfe})


def did(ctx: Context) -> dict:
    """The DiD chapter's tables, written for readers; a part the data could not support is
    its reason (text)."""
    cs, es, tw = ctx.result("did.callaway_santanna"), ctx.result("did.event_study"), ctx.result("did.twfe")
    r, out = ctx.reader, {}
    if cs.not_estimable:
        reason = not_estimated(cs)
        out.update(cs_simple=reason, cs_cohort="", cs_dynamic_plot=None, uniform_critical_value=None)
    else:
        out.update(cs_simple=reader_effects(ctx, _section(cs, "simple")),
                   cs_cohort=_cohort_weighted(ctx, _section(cs, "cohort")),
                   cs_dynamic_plot=cs.tables["dynamic_plot"],
                   uniform_critical_value=cs.values["uniform_critical_value"])
    if es.not_estimable:
        out.update(event_study_plot=None, pretrend=not_estimated(es))
    else:
        twfe_effect = None if tw.not_estimable else float(_section(tw, "twfe")["estimate"].iloc[0])
        out.update(event_study_plot=es.tables["plot"], pretrend=pretrend_table(ctx, es.values, twfe_effect))
    out.update(by_model_and_cohort=r.both(CAPTIONS["no_groups"]), poisson=r.both(CAPTIONS["not_count"]))
    if tw.not_estimable:
        out.update(twfe=not_estimated(tw), bacon="", bacon_twfe=None, by_model_and_cohort="", poisson="")
        return out
    bacon = tw.tables["bacon"].drop(columns="comparison")
    bacon["label"] = [r.both(BACON_WORDS.get(c, (lab, lab))) for c, lab in
                      zip(tw.tables["bacon"]["comparison"], tw.tables["bacon"]["label"], strict=True)]
    out.update(twfe=reader_effects(ctx, _section(tw, "twfe"), (*READER_COLUMNS, "inference")),
               bacon=r.table(bacon, ctx.indicator, kinds={"label": "text", "weight": "fraction",
                                                          "average_estimate": "effect", "weighted": "effect"},
                             headers={"label": ("比较", "Comparison"), "weight": ("权重", "Weight"),
                                      "average_estimate": ("平均估计", "Average estimate"),
                                      "weighted": ("加权贡献", "Weighted contribution")}),
               bacon_twfe=tw.values["bacon_twfe"])
    if (tw.effects["section"] == "subgroups").any():
        sub = _section(tw, "subgroups")
        draws = int(sub["p_floor"].map(lambda f: round(1 / f) if f and f > 0 else 0).max()) if "p_floor" in sub else 0
        out["by_model_and_cohort"] = (
            reader_effects(ctx, sub, ("term", "estimate", "interval", "p_value", "n_treated")),
            r.say(f"每组：该组试点乡镇与全部对照乡镇比较的双向固定效应系数；p 值与置信区间来自随机化推断（在该组与对照乡镇之间置换"
                  f"该组的试点历史，最多 {r.count(draws)} 次置换，置信区间由同一检验反演），试点乡镇很少时仍然有效。批次效果与上方 "
                  "Callaway–Sant'Anna 的批次效果加权方式不同，数值可能略有差异。",
                  f"Each group: the two-way fixed effects coefficient of that group's pilots against all comparison "
                  f"townships; p-values and intervals by randomization inference (the group's pilot histories permuted "
                  f"among the group and the comparison townships, up to {r.count(draws)} assignments, the interval "
                  "inverting the same test), valid however few the pilots. Cohort effects here weight periods "
                  "differently from the Callaway–Sant'Anna cohort effects above, so the numbers can differ a little."))
    if (tw.effects["section"] == "poisson").any():
        out["poisson"] = reader_effects(ctx, _section(tw, "poisson"), ("term", "estimate", "interval", "p_value"))
    return out


def pretrend_table(ctx: Context, v: dict, effect: float | None = None):
    """The pre-trend test for readers: a heading, the table (the leads tested, the
    randomization p-value the summary uses, the cluster-robust F beside it, what the test
    could have detected: the slope of a linear pre-trend found with 80% probability, the
    bias it would cause, the equivalence bound) and one sentence reading it against the
    TWFE ``effect`` (Roth 2022: a test that does not reject is weak evidence when its power
    is low)."""
    r, ind, s = ctx.reader, ctx.indicator, ctx.settings
    heading = r.say("前趋势检验", "Pre-trend test")
    if v.get("pretrend_not_estimable"):
        return heading, r.say("前趋势随机化检验未能进行：", "The randomization pre-trend test could not be made: ") \
            + v["pretrend_not_estimable"]
    per_zh, per_en = (t.lstrip("1 ") for t in s.text(1))
    leads = v.get("pretrend_leads_tested") or []
    lead_text = ", ".join(("≤ " if i == 0 else "") + str(k).replace("-", "−") for i, k in enumerate(leads))
    items = [(("检验的前导期（−1 为参照期；最早一期合并其之前各期）", "leads tested (−1 is the reference; the first "
               "pools all earlier periods)"), lead_text or r.count(v["pretrend_df"])),
             (("随机化推断 p 值（主要检验，用于评估总结）", "randomization p-value (the main test, used in the summary)"),
              r.p(v["pretrend_p"], v.get("pretrend_p_floor"))),
             (("聚类稳健 F 统计量（试点少时不可靠，仅供参考）", "cluster-robust F statistic (unreliable with few pilots; "
               "for reference)"), fixed(v["pretrend_F"])),
             ((f"有 80% 把握发现的线性趋势差异（每{per_zh}）", f"linear pre-trend detected with 80% power (per {per_en})"),
              r.effect(v["pretrend_slope_80"], ind)),
             (("该趋势对试点后平均效果造成的偏倚", "bias such a trend causes in the post-period average"),
              r.effect(v["pretrend_bias_80"], ind)),
             ((f"等价界：各前导期系数与 0 的差异在 ± 此值以内（双单侧检验，{s.alpha:g} 水平）",
               f"equivalence bound: every lead is within ± this of zero (two one-sided tests at {s.alpha:g})"),
              r.effect(v["pretrend_equivalence_bound"], ind))]
    p = r.p(v["pretrend_p"], v.get("pretrend_p_floor"))
    p = p if p.startswith(("<", "≤")) else f"= {p}"
    if v["pretrend_p"] <= s.alpha:
        reading = r.say(f"解读：检验拒绝平行趋势（p {p}）：试点前试点乡镇与对照乡镇的变化已有差异，效果估计可能有偏。",
                        f"Reading: the test rejects parallel trends (p {p}): pilot and comparison townships already "
                        "moved differently before the start, so the effect may be biased.")
    else:
        share_zh = share_en = ""
        if effect is not None and np.isfinite(effect) and effect != 0:
            pct = r.percent(100 * abs(v["pretrend_bias_80"] / effect))
            share_zh, share_en = f"（为 TWFE 效果估计 {r.effect(effect, ind)} 的 {pct}）", \
                f" ({pct} of the TWFE effect, {r.effect(effect, ind)})"
        bias, bound = r.effect(v["pretrend_bias_80"], ind), r.effect(v["pretrend_equivalence_bound"], ind)
        reading = r.say(
            f"解读：检验未拒绝平行趋势（p {p}），但这不等于没有趋势差异：有 20% 的可能漏掉的线性趋势差异会使试点后平均效果偏倚约 "
            f"{bias}{share_zh}；试点前差异在 ±{bound} 以内才能排除（Roth 2022；Hartman 和 Hidalgo 2018）。",
            f"Reading: the test does not reject parallel trends (p {p}), which is not evidence of none: a linear "
            f"pre-trend it would miss one time in five would bias the post-period average by about {bias}{share_en}; "
            f"pre-period differences can only be ruled out beyond ±{bound} (Roth 2022; Hartman and Hidalgo 2018).")
    return heading, _item_table(ctx, items), reading


def build_staggered_estimators(ctx: Context) -> Result:
    """The staggered-adoption estimators the literature cites, beside Callaway-Sant'Anna and
    TWFE: the imputation estimator (Borusyak, Jaravel and Spiess 2024), Sun and Abraham's
    interaction-weighted event study (2021) and Wooldridge's extended TWFE (2021; its
    Poisson form, 2023, for count indicators): each one's overall ATT and effects by event
    time over the plan's event window. One that the data cannot support is left out and
    its reason kept (``values['skipped']``)."""
    d, ind, s = ctx.frame, ctx.indicator, ctx.settings
    keys = dict(outcome="value", unit="township_id", time="time", cohort="first_treat", cluster=s.cluster,
                alpha=s.alpha, indicator=ind.id)
    calls = {"imputation": lambda: imputation_did(d, event_window=s.event_window, **keys),
             "sun_abraham": lambda: sun_abraham(d, event_window=s.event_window, **keys),
             "extended_twfe": lambda: extended_twfe(d, **keys)}
    if ind.model_family in ("poisson_offset", "poisson", "binomial"):
        exposure = {"poisson_offset": "population", "binomial": "denominator", "poisson": None}[ind.model_family]
        calls["extended_twfe_poisson"] = lambda: extended_twfe(d, **{**keys, "outcome": "numerator"},
                                                               family="poisson", exposure=exposure)
    parts, tables, skipped = {}, {}, {}
    for name, call in calls.items():
        try:
            fit = call()
        except EstimationError as exc:
            skipped[name] = not_estimable_text(exc)
            continue
        if name == "extended_twfe_poisson":  # on the count's scale: the rate ratio is what compares
            parts[name] = [e for e in fit.effects if e.estimand == "att" and e.scale == "rate_ratio"]
            continue
        parts[name] = fit.effects
        plot = fit.plot_data
        if "event_time" in plot:
            tables[f"plot_{name}"] = plot[["event_time", "estimate", "ci_low", "ci_high"]]
    if not parts:
        raise EstimationError("; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return make_result("did.staggered_estimators", ind.id, _sections(**parts), tables=tables,
                       values={"skipped": skipped})


ESTIMATOR_LABELS = {
    "twfe": ("双向固定效应（TWFE）", "two-way fixed effects (TWFE)"),
    "callaway_santanna": ("Callaway–Sant'Anna", "Callaway–Sant'Anna"),
    "imputation": ("插补法（Borusyak–Jaravel–Spiess）", "imputation (Borusyak–Jaravel–Spiess)"),
    "sun_abraham": ("Sun–Abraham", "Sun–Abraham"),
    "extended_twfe": ("扩展 TWFE（Wooldridge）", "extended TWFE (Wooldridge)"),
    "extended_twfe_poisson": ("扩展 TWFE 泊松（率比）", "extended TWFE Poisson (rate ratio)"),
}


def staggered_estimators(ctx: Context) -> dict:
    """The overall ATT of every DiD estimator side by side (a table, the one rule on few
    pilots applied) and their event studies overlaid (TWFE, Callaway-Sant'Anna,
    Sun-Abraham, imputation) in one figure; a part that could not be estimated says why."""
    r = ctx.reader
    res, cs, tw, es = (ctx.result(k) for k in ("did.staggered_estimators", "did.callaway_santanna", "did.twfe",
                                                "did.event_study"))
    if res.not_estimable:
        return {"table": not_estimated(res), "figure": None, "skipped": ""}
    rows = []
    if not tw.not_estimable:
        rows.append(_section(tw, "twfe").assign(estimator="twfe"))
    if not cs.not_estimable:
        rows.append(_section(cs, "simple").assign(estimator="callaway_santanna"))
    for name in ("imputation", "sun_abraham", "extended_twfe", "extended_twfe_poisson"):
        part = _section(res, name)
        rows.append(part[part["estimand"] == "att"].assign(estimator=name))
    effects = pd.concat(rows, ignore_index=True)
    table = reader_effects(ctx, effects, (*READER_COLUMNS, "inference"))
    table.iloc[:, 0] = [r.both(ESTIMATOR_LABELS[e]) for e in effects["estimator"]]
    table = table.rename(columns={table.columns[0]: r.say("估计方法", "Estimator")})
    plots_ = {}
    if not es.not_estimable:
        plots_[("双向固定效应事件研究", "TWFE event study")] = es.tables["plot"]
    if not cs.not_estimable:
        plots_[("Callaway–Sant'Anna", "Callaway–Sant'Anna")] = cs.tables["dynamic_plot"]
    for name in ("sun_abraham", "imputation"):
        if f"plot_{name}" in res.tables:
            plots_[ESTIMATOR_LABELS[name]] = res.tables[f"plot_{name}"]
    figure = plots.event_studies(plots_, ctx.indicator, title=("各估计方法的事件研究", "Event studies by estimator"),
                                 reader=r, level=1 - ctx.settings.alpha).figure \
        if plots_ else None
    skipped = res.values.get("skipped") or {}
    note = (r.say("未能估计：", "Not estimated: ") + "; ".join(f"{r.both(ESTIMATOR_LABELS[k])}: {v}"
                                                            for k, v in skipped.items())) if skipped else ""
    k = ctx.settings.few_pilots
    caution = r.say(f"表中 p 值与置信区间为各方法的聚类稳健或解析推断，用于比较估计方法；试点乡镇少于{k}个时可能偏小，"
                    "结论所用的 p 值见评估总结（随机化推断）。",
                    f"The p-values and intervals here are each method's cluster-robust or analytic inference, for "
                    f"comparing the estimators; with fewer than {k} pilot townships they can be too small: the summary's "
                    "p-values (randomization inference) are the ones the conclusions use.")
    return {"table": written(table), "figure": figure, "skipped": " ".join(x for x in (caution, note) if x)}


def _cohort_weighted(ctx: Context, effects: pd.DataFrame) -> pd.DataFrame:
    """Callaway-Sant'Anna by cohort; its row without a cohort is the cohort-weighted overall ATT."""
    table = reader_effects(ctx, effects)
    overall = effects["cohort"].isna().to_numpy()
    table.iloc[overall, 0] = ctx.reader.say("按批次加权的总体 ATT", "cohort-weighted overall ATT")
    return table


BACON_WORDS = {
    "treated_vs_never": ("试点 vs 从未试点", "treated vs never treated"),
    "earlier_vs_later": ("较早批次 vs 较晚批次（尚未试点）", "earlier cohort vs later cohort (not yet treated)"),
    "later_vs_earlier": ("较晚批次 vs 较早批次（已试点作对照：有问题的比较）",
                         "later cohort vs earlier cohort (already treated: the problematic comparison)"),
}


def did_figures(result: dict, ctx: Context) -> tuple:
    """The two event-study figures (an empty tuple entry for one that was not estimated)."""
    figures, level = [], 1 - ctx.settings.alpha
    if result["cs_dynamic_plot"] is not None:
        figures.append(plots.event_study(result["cs_dynamic_plot"], ctx.indicator,
                                         title=("Callaway–Sant'Anna 事件研究", "Callaway–Sant'Anna event study"),
                                         band=True, reader=ctx.reader, level=level).figure)
    if result["event_study_plot"] is not None:
        figures.append(plots.event_study(result["event_study_plot"], ctx.indicator,
                                         title=("双向固定效应事件研究", "TWFE event study"),
                                         reader=ctx.reader, level=level).figure)
    return tuple(figures)


# ----------------------------------------------------------------------------- ITS

def build_its(ctx: Context) -> Result:
    """Segmented regression of the earliest cohort's series (the plan's phase-in left out),
    controlled ITS against the non-pilot townships, and one ITS per pilot township."""
    ind, s = ctx.indicator, ctx.settings
    first_cohort = sorted(ctx.panel.pilots["cohort"].unique())[0]
    ids = ctx.panel.pilots.loc[ctx.panel.pilots["cohort"] == first_cohort, "township_id"].tolist()
    series = indicator_series(ctx.panel, ind, ids, weighting=s.its_series)
    options = dict(covid_phases=ctx.covid_phases, covid=ctx.study.covid.handling, indicator=ind.id,
                   frequency=ctx.panel.frequency, alpha=s.alpha)  # the analysis frequency
    fit = segmented_regression(series, outcome="value", start=first_cohort, transition=s.its_phase_in,
                               inference=s.its_errors, horizons=s.its_horizons, **options)
    control = indicator_series(ctx.panel, ind, "comparison", weighting=s.its_series)
    cits = controlled_its(series, control=control, outcome="value", start=first_cohort, **options)
    by_town = its_by_township(ctx.panel, indicator=ind, transition=s.its_phase_in, inference=s.its_township_errors,
                              horizons=s.its_township_horizons, covid_phases=ctx.covid_phases, covid=ctx.study.covid.handling,
                              frequency=ctx.panel.frequency, alpha=s.alpha)
    per_township = [e for e in by_town.effects if e.estimand == "level_change"]
    plot = fit.plot_data.copy()
    plot.insert(0, "period", plot.index.astype(str))
    diagnostics = {k: v for k, v in fit.diagnostics.items()
                   if k in ("n_obs", "pre_periods", "durbin_watson", "ljung_box_p", "seasonality", "spring_festival")}
    diagnostics["missing_periods"] = ", ".join(fit.diagnostics["missing_periods"]) or "none"
    if fit.diagnostics.get("covid_left_out"):
        diagnostics["covid_left_out"] = ", ".join(fit.diagnostics["covid_left_out"])
    return make_result("its", ind.id, _sections(fit=fit, controlled=cits, per_township=per_township),
                       tables={"plot": plot.reset_index(drop=True)},  # per-township effects carry their unit
                       values={"cohort": str(first_cohort), "diagnostics": diagnostics})


def its(ctx: Context) -> dict:
    """The ITS chapter's figure and tables, written for readers."""
    res = ctx.result("its")
    if res.not_estimable:
        reason = not_estimated(res)
        return {"cohort": "", "figure": reason, "table": "", "diagnostics": "", "controlled": "", "per_township": ""}
    plot = res.tables["plot"].copy()
    plot.index = pd.PeriodIndex(plot.pop("period"), freq=ctx.panel.periods.freq)
    figure = plots.interrupted_series(plot, ctx.indicator, reader=ctx.reader, level=1 - ctx.settings.alpha).figure
    per_township = _section(res, "per_township")
    diagnostics = res.values["diagnostics"]
    items = [(ITS_DIAGNOSTICS[k], _diagnostic_text(ctx, k, v)) for k, v in diagnostics.items() if k in ITS_DIAGNOSTICS]
    return {"cohort": res.values["cohort"], "figure": figure,
            "table": reader_effects(ctx, _section(res, "fit"), (*READER_COLUMNS[:-1], "inference")),
            "diagnostics": _item_table(ctx, items),
            "controlled": reader_effects(ctx, _section(res, "controlled"), READER_COLUMNS[:-1]),
            "per_township": reader_effects(ctx, per_township, READER_COLUMNS[:-1])}


ITS_DIAGNOSTICS = {
    "n_obs": ("拟合所用期数", "periods in the fit"), "pre_periods": ("试点前期数", "pre-periods"),
    "durbin_watson": ("Durbin-Watson 统计量", "Durbin-Watson statistic"),
    "ljung_box_p": ("Ljung-Box 检验 p 值（残差自相关）", "Ljung-Box p-value (residual autocorrelation)"),
    "seasonality": ("季节项", "seasonal terms"), "spring_festival": ("春节项", "Spring Festival term"),
    "missing_periods": ("缺失的期", "missing periods"), "covid_left_out": ("未纳入拟合的疫情期", "COVID-19 periods left out"),
}


def _diagnostic_text(ctx: Context, key: str, value) -> str:
    r = ctx.reader
    if key in ("n_obs", "pre_periods"):
        return r.count(value)
    if key == "ljung_box_p":
        return r.p(value)
    if isinstance(value, float):
        return fixed(value)
    if value in ("none", "", None):
        return r.say("无", "none")
    return r.text(value)


# ----------------------------------------------------------------------------- robustness

def build_robustness_checks(ctx: Context) -> Result:
    """Comparison groups, COVID-19 months dropped, the placebo start, leave one pilot out."""
    s = ctx.settings
    effects = robustness_table(ctx.frame, covid_periods=ctx.study.covid_periods(), shift=s.placebo_shift,
                               alpha=s.alpha)
    return make_result("robustness.checks", ctx.indicator.id, effects)


def build_randomization(ctx: Context) -> Result:
    """Randomization inference of the TWFE coefficient (permuting pilot histories): the
    recommended test with few pilots, shown in the robustness chapter and the summary."""
    s = ctx.settings
    ri = randomization_inference(ctx.frame, outcome="value", unit="township_id", time="time",
                                 cohort="first_treat", draws=s.draws_randomization, seed=s.seed, alpha=s.alpha,
                                 indicator=ctx.indicator.id)
    # indicators whose draws share this key used the same assignments row by row (the same
    # townships and cohorts, seed and draws): the summary adjusts their p-values jointly
    units = ctx.frame.dropna(subset=["value"]).groupby("township_id")["first_treat"].first().fillna(0)
    key = hashlib.sha256(f"{list(units.index)}|{list(units.to_numpy(float))}|{s.seed}|{s.draws_randomization}"
                         .encode()).hexdigest()[:16]
    return make_result("robustness.randomization", ctx.indicator.id, ri,
                       tables={"draws": ri.plot_data[["permuted_estimate"]]}, values={"assignment_key": key})


def build_fake_timing(ctx: Context) -> Result:
    """The fake-timing placebo (Chinese evaluations' 提前一年、两年): every pilot start moved
    the plan's ``placebo_shift`` and twice that before the earliest real start, on the
    periods before the real starts only (Callaway-Sant'Anna, :func:`placebo_in_time`).
    Under parallel trends and no anticipation each placebo ATT is 0. A shift that leaves no
    pre-period is listed as not estimable."""
    s, effects, missing = ctx.settings, [], []
    for shift in (s.placebo_shift, 2 * s.placebo_shift):
        try:
            effects += placebo_in_time(ctx.frame, shift=shift, control_group=s.comparison, alpha=s.alpha,
                                       indicator=ctx.indicator.id).effects
        except EstimationError as exc:
            missing.append({"shift": shift, "reason": not_estimable_text(exc)})
    if not effects:
        raise EstimationError("no placebo start leaves a pre-period: " + "; ".join(m["reason"] for m in missing))
    return make_result("robustness.fake_timing", ctx.indicator.id, effects,
                       tables={"not_estimable": pd.DataFrame(missing, columns=["shift", "reason"])})


def build_inference(ctx: Context) -> Result:
    """The TWFE DiD coefficient under the other inference methods (clustered CR1 and CR2,
    wild cluster bootstrap, placebo in space)."""
    d, s = ctx.frame, ctx.settings
    fit = twfe(d, outcome="value", unit="township_id", time="time", cohort="first_treat", cluster=s.cluster,
               alpha=s.alpha, indicator=ctx.indicator.id)
    effects = [  # every method tests the one TWFE fit
        fit.effects[0],
        twfe_cr2(fit).effects[0],
        wild_cluster_bootstrap(fit, draws=s.draws_wild_bootstrap, weights_type=s.wild_bootstrap_weights,
                               seed=s.seed).effects[0],
        placebo_in_space(fit).effects[0],
    ]
    return make_result("robustness.inference", ctx.indicator.id, effects)


def sdid_standard_error(d: pd.DataFrame, choice: str = "auto") -> str:
    """``auto``: jackknife (weights fixed: cheap) when every cohort has two or more pilots, else placebo."""
    if choice != "auto":
        return choice
    sizes = d.loc[d["first_treat"] > 0].groupby("first_treat")["township_id"].nunique()
    return "jackknife" if len(sizes) and sizes.min() >= 2 else "placebo"


def build_synthetic_did(ctx: Context) -> Result:
    """Synthetic DiD (Arkhangelsky et al. 2021), overall and by cohort."""
    s = ctx.settings
    d, dropped = ctx.frame_for("synthetic DiD")
    sdid = synthetic_did(d, outcome="value", unit="township_id", time="time", cohort="first_treat",
                         inference=sdid_standard_error(d, s.synthetic_did_inference), draws=s.draws_synthetic_did,
                         seed=s.seed, alpha=s.alpha, indicator=ctx.indicator.id)
    return make_result("robustness.synthetic_did", ctx.indicator.id, sdid, tables={"dropped": dropped})


def build_synthetic_control(ctx: Context) -> Result:
    """A synthetic control for each pilot township with its placebo-in-space rank."""
    s = ctx.settings
    d, dropped = ctx.frame_for("synthetic control")
    keys = dict(outcome="value", unit="township_id", time="time", cohort="first_treat")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PoorPreFitWarning)
        sc = synthetic_control_by_pilot(d, **keys, alpha=s.alpha, indicator=ctx.indicator.id)
    names = d.drop_duplicates("township_id").set_index("township_id")["township_name"]
    per_pilot = pd.DataFrame([{
        "township_id": pilot, "township_name": names[pilot], "att": fit.effects[0].estimate,
        "ci_low": fit.effects[0].ci_low, "ci_high": fit.effects[0].ci_high, "rank_p": fit.effects[0].p_value,
        "pre_rmspe": fit.diagnostics["pre_rmspe"], "rmspe_ratio": fit.diagnostics["rmspe_ratio"],
        "poor_pre_fit": fit.diagnostics["poor_pre_fit"]} for pilot, fit in sc.model.items()])
    gaps = []
    for pilot, fit in sc.model.items():
        start = fit.plot_data.loc[fit.plot_data["post"], "period"].min()
        gaps.append(fit.plot_data[["period", "gap"]].assign(pilot=pilot, township=pilot, placebo=False, start=start))
        gaps.append(fit.diagnostics["placebo_gaps"][["township", "period", "gap"]].assign(
            pilot=pilot, placebo=True, start=start))
    return make_result("robustness.synthetic_control", ctx.indicator.id, sc, tables={
        "per_pilot": per_pilot, "gaps": pd.concat(gaps, ignore_index=True), "dropped": dropped},
        values={"warnings": [str(w.message) for w in caught if issubclass(w.category, PoorPreFitWarning)]})


def _sensitivity_input(ctx: Context):
    """Callaway-Sant'Anna event times with a universal base period, long enough for both bounds."""
    s = ctx.settings
    first = -max(s.rm_pre_periods + 1, s.sd_pre_periods) - 1
    last = max(s.rm_post_periods, s.sd_post_periods) - 1
    return callaway_santanna(ctx.frame, outcome="value", unit="township_id", time="time", cohort="first_treat",
                             control_group=s.comparison, base_period="universal",
                             alpha=s.alpha).aggregate("dynamic", event_window=(first, last))


def build_smoothness(ctx: Context) -> Result:
    """Honest confidence sets under smoothness bounds (Rambachan and Roth 2023) for the mean
    effect of the first post periods; M = 0 continues the pre-period's linear trend."""
    s = ctx.settings
    values = s.sd_values if isinstance(s.sd_values, str) else sorted({0.0, *s.sd_values})
    fit = honest_sensitivity(_sensitivity_input(ctx), bound="smoothness",
                             event_window=(-s.sd_pre_periods, s.sd_post_periods - 1), l_post=np.full(s.sd_post_periods, 1 / s.sd_post_periods),
                             values=values, alpha=s.alpha, indicator=ctx.indicator.id)
    return make_result("robustness.smoothness", ctx.indicator.id, fit, tables={"plot": fit.plot_data},
                       values={"breakdown": fit.diagnostics["breakdown"]})


def build_relative_magnitude(ctx: Context) -> Result:
    """Honest confidence sets under relative-magnitude bounds for the mean effect of the
    first post periods."""
    s = ctx.settings
    fit = honest_sensitivity(_sensitivity_input(ctx), bound="relative_magnitude",
                             event_window=(-s.rm_pre_periods - 1, s.rm_post_periods - 1), l_post=np.full(s.rm_post_periods, 1 / s.rm_post_periods),
                             values=list(s.rm_values), alpha=s.alpha, seed=s.seed, indicator=ctx.indicator.id)
    return make_result("robustness.relative_magnitude", ctx.indicator.id, fit, tables={"plot": fit.plot_data},
                       values={"breakdown": fit.diagnostics["breakdown"]})


def robustness(ctx: Context) -> pd.DataFrame | str:
    """The robustness checks (Callaway-Sant'Anna under each change), written for readers."""
    res = ctx.result("robustness.checks")
    return not_estimated(res) or reader_effects(ctx, res.effects)


def inference_comparison(ctx: Context) -> pd.DataFrame | str:
    """The TWFE DiD coefficient under every inference method: which p-value to trust with
    few pilots (randomization inference or the wild cluster bootstrap; CR1 over-rejects)."""
    inference, ri = ctx.result("robustness.inference"), ctx.result("robustness.randomization")
    if inference.not_estimable:
        return not_estimated(inference, ri)
    rows = pd.concat([inference.effects.iloc[:3], ri.effects, inference.effects.iloc[3:]], ignore_index=True)
    table = reader_effects(ctx, rows, ("inference", "estimate", "std_error", "interval", "p_value"))
    return table if not ri.not_estimable else (table, not_estimated(ri))


def placebo_tests(ctx: Context) -> dict:
    """The placebo tests as Chinese evaluations report them: the randomization distribution
    of the TWFE estimate with the real one marked, and the fake-timing table (starts moved
    one and two placebo shifts earlier)."""
    ri, fake, r = ctx.result("robustness.randomization"), ctx.result("robustness.fake_timing"), ctx.reader
    if ri.not_estimable:
        figure = not_estimated(ri)
    else:
        effect = ri.effects.iloc[0]
        figure = plots.randomization_distribution(ri.tables["draws"]["permuted_estimate"], effect["estimate"],
                                                  effect["p_value"], effect["p_floor"], ctx.indicator, reader=r)
    if fake.not_estimable:
        return {"figure": figure, "fake_timing": not_estimated(fake)}
    rows = fake.effects.copy()
    start = rows["cohort"]  # the fake start on the time scale
    table = reader_effects(ctx, rows, ("term", "estimate", "std_error", "interval", "p_value"))
    earliest = ctx.frame.loc[ctx.frame["first_treat"] > 0, "first_treat"].min()
    table.iloc[:, 0] = [r.say(f"试点开始提前{zh}（假开始 {ctx.cohort_label(g)}）", f"start {en} early (fake start "
                              f"{ctx.cohort_label(g)})")
                        for g in start for zh, en in [ctx.settings.text(int(earliest - g))]]
    skipped = fake.tables["not_estimable"]
    note = "; ".join(f"{' / '.join(ctx.settings.text(int(x.shift)))}: {x.reason}" for x in skipped.itertuples())
    return {"figure": figure, "fake_timing": (table, r.say(f"未能估计：{note}", f"not estimated: {note}")) if note
            else table}


def synthetic_designs(ctx: Context) -> dict:
    """Synthetic DiD (overall and by cohort) and a synthetic control for each pilot
    township with its placebo-in-space rank, for designs where parallel trends is doubtful."""
    sdid, sc, r = ctx.result("robustness.synthetic_did"), ctx.result("robustness.synthetic_control"), ctx.reader
    sdid_table = not_estimated(sdid) if sdid.not_estimable else reader_effects(ctx, sdid.effects)
    if sc.not_estimable:
        return {"sdid": sdid_table, "per_pilot": not_estimated(sc), "per_pilot_data": None, "gaps": None,
                "warnings": []}
    data = sc.tables["per_pilot"].copy()
    data["township_id"] = data["township_id"].astype(str)
    effect = ctx.indicator
    floor = 1 / sc.effects["n_units"].iloc[0]  # placebo in space: 1/(donors + 1)
    per_pilot = pd.DataFrame({
        r.header("township_name"): [str(n) for n in data["township_name"]],
        r.say("效果", "Effect"): [r.effect(v, effect) for v in data["att"]],
        r.say(f"{100 * (1 - ctx.settings.alpha):g}% 置信区间", f"{100 * (1 - ctx.settings.alpha):g}% CI"):
            [r.interval(lo, hi, lambda v: r.effect(v, effect)) for lo, hi in zip(data["ci_low"], data["ci_high"],
                                                                                 strict=True)],
        r.say("排名 p 值", "Rank p-value"): [r.p(p, floor) for p in data["rank_p"]],
        r.say("试点前拟合误差（RMSPE）", "Pre-period RMSPE"): [r.effect(v, effect) for v in data["pre_rmspe"]],
        r.say("试点后/试点前 RMSPE 比", "Post/pre RMSPE ratio"): [fixed(v) for v in data["rmspe_ratio"]],
        r.say("试点前拟合差", "Poor pre-period fit"): [r.flag(v) for v in data["poor_pre_fit"]],
    }, dtype=object)
    written(per_pilot)
    return {"sdid": sdid_table, "per_pilot": per_pilot, "per_pilot_data": data, "gaps": sc.tables["gaps"],
            "warnings": sc.values["warnings"], "p_floor": floor}


def synthetic_control_figure(res: dict, ctx: Context):
    """Each pilot's gap to its synthetic twin over the placebo gaps (see :func:`synthetic_designs`)."""
    if res["gaps"] is None:
        return ""
    data = res["per_pilot_data"]
    names = dict(zip(data["township_id"], data["township_name"], strict=True))
    p = dict(zip(data["township_id"], data["rank_p"], strict=True))
    return plots.synthetic_control_gaps(res["gaps"], ctx.indicator, names=names, p_values=p,
                                        p_floors={t: res["p_floor"] for t in p}, reader=ctx.reader)


def parallel_trends_sensitivity(ctx: Context) -> dict:
    """Relative magnitudes and smoothness bounds (Rambachan and Roth 2023), breakdown values,
    written for readers."""
    rm, sd = ctx.result("robustness.relative_magnitude"), ctx.result("robustness.smoothness")
    v, r = ctx.note_values(), ctx.reader
    parts = [(rm, (f"前{v['rm_post_zh']}平均效果", f"mean effect, first {v['rm_post_en']}"),
              ("相对幅度", "relative magnitudes"), "Mbar"),
             (sd, (f"前{v['sd_post_zh']}平均效果", f"mean effect, first {v['sd_post_en']}"), ("平滑度", "smoothness"), "M")]
    estimated = [part for part in parts if not part[0].not_estimable]
    missing = not_estimated(rm, sd)
    if not estimated:
        return {"table": missing, "breakdown": "", "results": (rm, sd)}
    rows = []
    for res, theta, bound, symbol in estimated:
        for effect, value in zip(res.effects.to_dict("records"), res.tables["plot"]["bound"], strict=True):
            original = effect["term"] == "original"
            rows.append({
                r.say("目标", "Target"): r.both(theta),
                r.say("假设", "Assumption"): r.say("原估计（平行趋势严格成立）", "original (exact parallel trends)")
                if original else f"{r.both(bound)}: {symbol} = {fixed(value)}",
                r.say("估计值", "Estimate"): r.effect(effect["estimate"], ctx.indicator),
                r.say(f"{v['alpha_pct']} 置信集", f"{v['alpha_pct']} confidence set"):
                    r.interval(effect["ci_low"], effect["ci_high"], lambda x: r.effect(x, ctx.indicator))})
    table = written(pd.DataFrame(rows, dtype=object))
    def breakdown_text(res):
        original = res.effects.iloc[0]
        if res.values["breakdown"] is None or original["ci_low"] <= 0 <= original["ci_high"]:
            return r.say("不适用（原置信区间已含0）", "not applicable (the original interval contains 0)")
        return fixed(res.values["breakdown"])

    breakdown = _item_table(ctx, [((f"{bound[0]}临界值 {symbol}", f"{bound[1]} breakdown {symbol}"), breakdown_text(res))
                                  for res, _, bound, symbol in estimated])
    return {"table": table if missing is None else (table, missing), "breakdown": breakdown, "results": (rm, sd)}


def sensitivity_figure(res: dict, ctx: Context):
    v = ctx.note_values()
    titles = [(f"相对幅度，前{v['rm_post_zh']}", f"relative magnitudes, first {v['rm_post_en']}"),
              (f"平滑度，前{v['sd_post_zh']}", f"smoothness, first {v['sd_post_en']}")]
    shown = [((res_.tables["plot"], res_.values["breakdown"]), title)
             for res_, title in zip(res["results"], titles, strict=True) if not res_.not_estimable]
    if not shown:
        return ""
    return plots.sensitivity([pair for pair, _ in shown], ctx.indicator, [title for _, title in shown],
                             reader=ctx.reader)


# ----------------------------------------------------------------------------- summary

def summary(ctx: Context) -> dict:
    """The scorecard over every indicator, read from the chapters' stored results, with
    the overall conclusion (总体结论)."""
    from evaluation.report.scorecard import (
        SCORECARD_SECTIONS,
        overall_conclusion,
        reader_scorecard,
        scorecard,
        scorecard_note,
    )

    results, failures = {}, {}
    for ind in ctx.study.selected_indicators():
        try:
            results[ind.id] = {section: ctx.for_indicator(ind).result(section) for section in SCORECARD_SECTIONS}
        except EvaluationError as exc:  # the other indicators' rows still build
            failures[ind.id] = not_estimable_text(exc)
            continue
        headline = [results[ind.id][s] for s in ("trends", "did.callaway_santanna") if results[ind.id][s].not_estimable]
        if headline:
            failures[ind.id] = "; ".join(f"{r.section}: {r.not_estimable}" for r in headline)
    card = scorecard(ctx.study.selected_indicators(), results, ctx.settings, failures)
    card["label"] = card["name_zh"] + " / " + card["name_en"]
    conclusion = overall_conclusion(card, ctx.settings)
    result = make_result("summary.scorecard", None, tables={"scorecard": card},
                         values={"conclusion_zh": conclusion[0], "conclusion_en": conclusion[1]})
    result.key, result.settings = ctx.key("summary.scorecard"), ctx.settings.as_dict()
    ctx.store.write(result)
    reader = ctx.reader
    return {"scorecard": card, "table": reader_scorecard(card, reader, ctx.settings),
            "note": scorecard_note(card, reader, ctx.settings),
            "verdicts": card[["indicator", "verdict_zh", "verdict_en"]], "conclusion": conclusion}


def forest_figure(res: dict, ctx: Context | None = None):
    """Relative effects with their intervals, one row per indicator."""
    return plots.forest(res["scorecard"], reader=ctx.reader if ctx is not None else None).figure


def conclusion_note(res: dict, ctx: Context):
    """总体结论: the one-paragraph overall conclusion, in the report's language."""
    r = ctx.reader
    paragraphs = [res["conclusion"][0]] if r.language == "zh" else [res["conclusion"][1]] if r.language == "en" \
        else list(res["conclusion"])
    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    title = r.say("总体结论", "Overall conclusion")
    return PageBlock(escaped_block(f'<h2>{html.escape(title)}</h2><div class="conclusion">{body}</div>'),
                     "\n".join([title, *paragraphs]))


def verdict_notes(res: dict, ctx: Context | None = None):
    """The verdicts as one HTML list (every string escaped), in the report's language."""
    language = ctx.reader.language if ctx is not None else "both"
    items, plain = [], []
    for r in res["verdicts"].itertuples():
        texts = [r.verdict_zh] if language == "zh" else [r.verdict_en] if language == "en" \
            else [r.verdict_zh, r.verdict_en]
        items.append("<li>" + "<br>".join(html.escape(t) for t in texts) + "</li>")
        plain.extend(texts)
    title = {"zh": "各指标结论", "en": "Verdicts"}.get(language, "各指标结论 / Verdicts")
    return PageBlock(escaped_block(f"<h2>{title}</h2><ul>{''.join(items)}</ul>"), "\n".join([title, *plain]))


# ----------------------------------------------------------------------------- selection: covariates, matching, heterogeneity

SUBGROUP_WORDS = {"low": ("≤中位数", "at or below the median"), "high": (">中位数", "above the median"),
                  "1": ("是", "yes"), "0": ("否", "no")}


def covariate_frame(ctx: Context, names=None) -> tuple[pd.DataFrame, list[str], list[str], pd.DataFrame]:
    """The indicator's frame on the townships with a value of every covariate used.

    Returns the frame, the covariates used (the plan's ``covariates``, or ``names``, less
    those with one value for every township), those left out as constant, and the
    townships left out for a missing value (``township_id``, ``township_name``, ``pilot``,
    ``covariate``, ``reason``). Raises :class:`EstimationError` when the study declares no
    covariates or none is usable."""
    cov = ctx.panel.covariates
    if cov is None:
        raise EstimationError("the study declares no covariates (add a covariates: block to the study file)")
    wanted = list(names if names is not None else ctx.settings.covariates)
    used, constant = cov.usable(wanted)
    if not used:
        raise EstimationError(f"no usable covariate: {', '.join(constant) or 'none chosen'} "
                              "has one value for every township")
    keep = cov.complete(used)
    missing = cov.missing[cov.missing["covariate"].isin(used)].reset_index(drop=True)
    frame = ctx.frame
    return frame[frame["township_id"].isin(keep)].reset_index(drop=True), used, constant, missing


def build_matching(ctx: Context) -> Result:
    """PSM-DID on the plan's covariates (:func:`evaluation.estimators.matching.psm_did`),
    the balance of the covariates before and after matching and after entropy balancing
    (:mod:`evaluation.diagnostics.balance`), and the propensity scores for the figure. When
    matching cannot be done (separation, no common support) the balance before matching
    is kept and the reason stored (``matching_not_estimable``)."""
    from evaluation.diagnostics.balance import balance_table, entropy_balance
    from evaluation.estimators.matching import psm_did

    d, used, constant, missing = covariate_frame(ctx)
    s, ind = ctx.settings, ctx.indicator
    keys = dict(unit="township_id", cohort="first_treat", covariates=used)
    values = {"covariates": used, "constant": constant, "method": s.matching_method,
              "labels": {k: list(v) for k, v in _covariate_labels(ctx).items()}}
    tables = {"missing": missing}
    fit = None
    try:
        fit = psm_did(d, outcome="value", time="time", method=s.matching_method, neighbours=s.matching_neighbours,
                      replacement=s.matching_replacement, caliper=s.matching_caliper,
                      bandwidth=s.matching_bandwidth if s.matching_method == "kernel" else None,
                      event_window=s.event_window, alpha=s.alpha, draws=s.draws_randomization, seed=s.seed,
                      indicator=ind.id, **keys)
    except EstimationError as exc:
        values["matching_not_estimable"] = not_estimable_text(exc)
        balance = balance_table(d, **keys)
    else:
        balance = balance_table(d, weights=fit.diagnostics["weights"], **keys)
        tables["scores"] = fit.plot_data
        tables["propensity"] = fit.model.coefficients.rename("coefficient").rename_axis("term").reset_index()
        values.update(dropped_pilots=int(fit.diagnostics["n_dropped_pilots"]),
                      distinct_controls=int(fit.diagnostics["distinct_controls"]),
                      caliper=fit.diagnostics.get("caliper"), bandwidth=fit.diagnostics.get("bandwidth"))
    try:
        entropy = entropy_balance(d, **keys)
    except EstimationError as exc:
        values["entropy_not_estimable"] = not_estimable_text(exc)
    else:
        smd = balance_table(d, weights=entropy, **keys)["smd_after"].to_numpy()
        balance["smd_entropy"] = np.where(np.abs(smd) < 1e-9, 0.0, smd)  # exact balance up to rounding
    tables["balance"] = balance
    return make_result("selection.matching", ind.id, fit.effects if fit is not None else (), tables=tables,
                       values=values)


def build_adjusted(ctx: Context) -> Result:
    """Callaway and Sant'Anna with the plan's covariates: doubly robust (Sant'Anna and Zhao
    2020), outcome regression and inverse probability weighting, simple ATT each, on the
    townships with every covariate; the unadjusted estimate on the same townships beside
    them, so that the difference is the covariates' alone; with the plan's time-varying
    ``controls``, two-way fixed effects with them, by randomization inference."""
    d, used, _, _ = covariate_frame(ctx)
    s, ind = ctx.settings, ctx.indicator
    keys = dict(outcome="value", unit="township_id", time="time", cohort="first_treat")
    parts, skipped = {}, {}
    for label, options in (("cs_unadjusted", {}), ("cs_dr", {"covariates": used, "method": "dr"}),
                           ("cs_reg", {"covariates": used, "method": "reg"}),
                           ("cs_ipw", {"covariates": used, "method": "ipw"})):
        try:
            cs = callaway_santanna(d, control_group=s.comparison, seed=s.seed, alpha=s.alpha, indicator=ind.id,
                                   **keys, **options)
            parts[label] = cs.aggregate("simple")
        except EstimationError as exc:
            skipped[label] = not_estimable_text(exc)
    controls = [c for c in s.controls if c in d.columns]
    if controls:  # time-varying controls beside the township and period effects
        try:
            fit = twfe(d, covariates=controls, cluster=s.cluster, alpha=s.alpha, indicator=ind.id, **keys)
            # inference valid with few pilots: pilot histories permuted, the controls kept with their rows
            parts["twfe_controls"] = randomization_inference(fit, draws=s.draws_randomization, seed=s.seed,
                                                             alpha=s.alpha)
        except EstimationError as exc:
            skipped["twfe_controls"] = not_estimable_text(exc)
    if not parts:
        raise EstimationError("; ".join(skipped.values()))
    return make_result("selection.adjusted", ind.id, _sections(**parts), values={"not_estimable_parts": skipped,
                                                                               "covariates": used})


def build_heterogeneity(ctx: Context) -> Result:
    """Effects by subgroups of the plan's ``heterogeneity`` covariates, adjusted for period
    effects linear in the plan's ``covariates`` (conditional parallel trends), with
    randomization inference and the relabelling test of each difference
    (:func:`evaluation.inference.heterogeneity.heterogeneity_randomization`)."""
    from evaluation.inference.heterogeneity import heterogeneity_randomization

    s, ind = ctx.settings, ctx.indicator
    names = list(dict.fromkeys([*s.heterogeneity, *s.covariates]))
    d, usable, constant, missing = covariate_frame(ctx, names)
    used = [n for n in s.heterogeneity if n in usable]
    if not used:
        raise EstimationError(f"no usable covariate to form subgroups: {', '.join(constant) or 'none chosen'}")
    cov = ctx.panel.covariates
    fit = heterogeneity_randomization(d, outcome="value", unit="township_id", time="time", cohort="first_treat",
                                      by=used, kinds={n: cov.kind(n) for n in used},
                                      covariates=[n for n in s.covariates if n in usable],
                                      pre_periods=-s.event_window[0], draws=s.draws_randomization, seed=s.seed,
                                      alpha=s.alpha, indicator=ind.id)
    differences = {}
    for e in fit.effects:
        differences.setdefault(e.by, {k: e.extra.get(k) for k in ("difference", "p_difference", "n_relabellings")})
    return make_result("selection.heterogeneity", ind.id, fit, tables={"missing": missing},
                       values={"constant": constant, "medians": fit.diagnostics["medians"], "differences": differences,
                               "not_estimable_groups": fit.diagnostics["not_estimable"]})


COVARIATE_MISSING_WORDS = {"empty cell": ("空单元格", "empty cell"),
                           "not in the township table": ("不在乡镇表中", "not in the township table"),
                           "no value in the baseline window": ("基线期无数据", "no value in the baseline window")}


def _covariate_labels(ctx: Context) -> dict[str, tuple[str, str]]:
    """Each covariate's (Chinese, English) name: the study's label or the user's header,
    the contract's English name where the header is Chinese."""
    cov = ctx.panel.covariates
    if cov is None:
        return {}
    zh, en = cov.labels("zh"), cov.labels("en")
    return {n: (zh[n], plots.COVARIATE_NAMES[n][1] if en[n] == n and n in plots.COVARIATE_NAMES else en[n])
            for n in cov.names}


def subgroup_label(ctx: Context, by: str, group: str, median=None) -> str:
    """``distance_km:low`` as readers read it: 到县城距离（公里）≤中位数（31.2）."""
    r = ctx.reader
    name_zh, name_en = _covariate_labels(ctx).get(by, (by, by))
    word_zh, word_en = SUBGROUP_WORDS.get(str(group), (str(group), str(group)))
    at = f"（{r.number(median)}）" if median is not None else ""
    at_en = f" ({r.number(median)})" if median is not None else ""
    return r.say(f"{name_zh}：{word_zh}{at}", f"{name_en}: {word_en}{at_en}")


def selection(ctx: Context) -> dict:
    """The selection chapter's tables and figures for readers: what was used and left out,
    the balance table, PSM-DID and covariate-adjusted estimates beside the unadjusted ones,
    and the effects by subgroup."""
    r, out = ctx.reader, {}
    m, adj, het = (ctx.result(k) for k in ("selection.matching", "selection.adjusted", "selection.heterogeneity"))
    labels = _covariate_labels(ctx)
    out["used"] = _selection_used(ctx, m)
    if m.not_estimable:
        out.update(balance=not_estimated(m), love=None, density=None, matching_note="")
    else:
        out["balance"] = balance_for_readers(ctx, m.tables["balance"], labels)
        out["love"] = _closed(plots.love_plot(m.tables["balance"], reader=r, labels=labels))
        scores = m.tables.get("scores")
        out["density"] = (_closed(plots.propensity_density(scores["score"], scores["pilot"].astype(bool),
                                                           scores["weight"], reader=r))
                          if scores is not None else None)
        out["matching_note"] = _matching_note(ctx, m)
    out["estimates"] = _selection_estimates(ctx, m, adj)
    if het.not_estimable:
        out.update(heterogeneity=not_estimated(het), forest=None)
    else:
        out.update(_heterogeneity_table(ctx, het))
    return out


def balance_for_readers(ctx: Context, balance: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """The balance table as readers read it: covariates by their labels, a binary
    covariate's means as shares (%), standardized differences to 3 decimals, variance
    ratios to 2 (none for a binary covariate: its variance is fixed by its mean)."""
    r = ctx.reader
    means = [c for c in ("pilot_mean", "comparison_mean", "pilot_mean_after", "comparison_mean_after") if c in balance]
    smds = [c for c in ("smd_before", "smd_after", "smd_entropy") if c in balance]
    ratios = [c for c in ("variance_ratio_before", "variance_ratio_after") if c in balance]
    headers = {"smd_entropy": ("标准化均值差（熵平衡后）", "SMD after entropy balancing")}
    rows = []
    for row in balance.to_dict("records"):
        binary = row["kind"] == "binary"
        cells = {r.header("covariate"): r.both(labels.get(row["covariate"], (row["covariate"],) * 2)),
                 r.header("kind"): r.say(*{"binary": ("二值（%）", "binary (%)"),
                                           "continuous": ("连续", "continuous")}.get(row["kind"], (row["kind"],) * 2))}
        for c in means:
            cells[r.header(c)] = (DASH if pd.isna(row[c]) else f"{100 * row[c]:.1f}%") if binary else r.number(row[c])
        for c in smds:
            cells[r.say(*headers[c]) if c in headers else r.header(c)] = DASH if pd.isna(row[c]) else f"{row[c]:.3f}"
        for c in ratios:
            cells[r.header(c)] = DASH if binary or pd.isna(row[c]) else f"{row[c]:.2f}"
        rows.append(cells)
    return written(pd.DataFrame(rows, dtype=object))


def _closed(figure):
    """A figure built for a later cell: closed, so that the notebook's inline backend does
    not also draw it where it was made (:meth:`Context.show` displays it)."""
    import matplotlib.pyplot as plt

    plt.close(figure)
    return figure


def _selection_used(ctx: Context, m: Result) -> str:
    r = ctx.reader
    cov = ctx.panel.covariates
    if cov is None:
        return r.say("本研究未声明协变量。", "The study declares no covariates.")
    labels = _covariate_labels(ctx)
    used = m.values.get("covariates") or list(ctx.settings.covariates)
    names_zh = "、".join(labels.get(c, (c, c))[0] for c in used)
    names_en = ", ".join(labels.get(c, (c, c))[1] for c in used)
    parts = [r.say(f"倾向得分与平衡性所用协变量：{names_zh}。", f"Covariates of the propensity score and the balance: "
                                                     f"{names_en}.")]
    constant = m.values.get("constant") or []
    if constant:
        parts.append(r.say(f"{'、'.join(labels.get(c, (c, c))[0] for c in constant)}在所有乡镇取值相同，未纳入。",
                           f"{', '.join(labels.get(c, (c, c))[1] for c in constant)}: the same for every township, "
                           "left out."))
    missing = m.tables.get("missing")
    if missing is not None and len(missing):
        towns = missing.drop_duplicates("township_id")
        words = {t.reason: COVARIATE_MISSING_WORDS.get(t.reason, (t.reason, t.reason)) for t in towns.itertuples()}
        names_zh = "、".join(f"{t.township_name}（{labels.get(t.covariate, (t.covariate,) * 2)[0]}：{words[t.reason][0]}）"
                             for t in towns.itertuples())
        names_en = "; ".join(f"{t.township_name} ({labels.get(t.covariate, (t.covariate,) * 2)[1]}: "
                             f"{words[t.reason][1]})" for t in towns.itertuples())
        n_pilot = int(towns["pilot"].astype(bool).sum())
        parts.append(r.say(f"{len(towns)}个乡镇（其中试点{n_pilot}个）缺少协变量，不纳入本章各方法：{names_zh}。",
                           f"{len(towns)} township(s) ({n_pilot} pilot) lack a covariate value and are left out of "
                           f"this chapter's methods: {names_en}."))
    return " ".join(parts)


def _matching_note(ctx: Context, m: Result) -> str:
    r, s, v = ctx.reader, ctx.settings, m.values
    if v.get("matching_not_estimable"):
        return r.say(f"未能进行倾向得分匹配：{v['matching_not_estimable']}。表中仅列匹配前的平衡性。",
                     f"Matching could not be done: {v['matching_not_estimable']}. The table shows balance before "
                     "matching only.")
    if s.matching_method == "nearest":
        cal = f"，卡尺为倾向得分对数几率标准差的{s.matching_caliper:g}倍" if s.matching_caliper else ""
        cal_en = f", caliper {s.matching_caliper:g} SD of the logit score" if s.matching_caliper else ""
        how = f"1:{s.matching_neighbours} 最近邻匹配（{'有' if s.matching_replacement else '无'}放回{cal}）"
        how_en = (f"{s.matching_neighbours}-nearest-neighbour matching "
                  f"({'with' if s.matching_replacement else 'without'} replacement{cal_en})")
    else:
        how = f"核匹配（Epanechnikov 核，带宽为倾向得分对数几率标准差的 {r.number(v.get('bandwidth'))} 倍）"
        how_en = f"kernel matching (Epanechnikov, bandwidth {r.number(v.get('bandwidth'))} SD of the logit score)"
    dropped = v.get("dropped_pilots") or 0
    return r.say(f"{how}；共用到{v.get('distinct_controls')}个对照乡镇，{dropped}个试点乡镇因不在共同支撑域或卡尺内未匹配。"
                 "标准化均值差绝对值低于0.1通常视为平衡（Austin 2009）。",
                 f"{how_en}; {v.get('distinct_controls')} comparison townships used, {dropped} pilot "
                 f"township{'s' if dropped != 1 else ''} unmatched (outside the common support or the caliper). An absolute standardized mean difference "
                 "below 0.1 is the usual mark of balance (Austin 2009).")


SELECTION_METHODS = {
    "twfe": ("双向固定效应（全部乡镇，未调整）", "two-way fixed effects (all townships, unadjusted)"),
    "cs_unadjusted": ("Callaway–Sant'Anna，未调整", "Callaway–Sant'Anna, unadjusted"),
    "cs_dr": ("Callaway–Sant'Anna，双重稳健", "Callaway–Sant'Anna, doubly robust"),
    "cs_reg": ("Callaway–Sant'Anna，结果回归", "Callaway–Sant'Anna, outcome regression"),
    "cs_ipw": ("Callaway–Sant'Anna，逆概率加权", "Callaway–Sant'Anna, inverse probability weighting"),
    "twfe_controls": ("双向固定效应，含时变控制变量", "two-way fixed effects with time-varying controls"),
    "psm_did": ("倾向得分匹配双重差分（PSM-DID）", "propensity-score-matched DiD (PSM-DID)"),
}


SELECTION_SHORT = {
    "cs_unadjusted": ("Callaway–Sant'Anna 未调整估计", "the unadjusted Callaway–Sant'Anna estimate"),
    "cs_dr": ("双重稳健估计", "the doubly robust estimate"),
    "cs_reg": ("结果回归估计", "the outcome-regression estimate"),
    "cs_ipw": ("逆概率加权估计", "the inverse-probability-weighted estimate"),
    "twfe_controls": ("含控制变量的双向固定效应", "two-way fixed effects with controls"),
}


def _selection_estimates(ctx: Context, m: Result, adj: Result) -> pd.DataFrame | str:
    """One row per method: the unadjusted, covariate-adjusted and matched ATTs."""
    r = ctx.reader
    rows = []
    tw = ctx.result("did.twfe")
    if not tw.not_estimable:
        rows.append(_section(tw, "twfe").iloc[[0]].assign(_method="twfe"))
    if not adj.not_estimable:
        for part in ("cs_unadjusted", "cs_dr", "cs_reg", "cs_ipw", "twfe_controls"):
            if (adj.effects["section"] == part).any():
                sec = _section(adj, part)
                rows.append(sec[sec["estimand"] == "att"].iloc[[0]].assign(_method=part))
    if not m.not_estimable and len(m.effects):
        rows.append(m.effects[m.effects["estimand"] == "att"].iloc[[0]].assign(_method="psm_did"))
    if not rows:
        return not_estimated(m, adj) or ""
    table = pd.concat(rows, ignore_index=True)
    shown = reader_effects(ctx, table, ("term", "estimate", "interval", "p_value", "n_treated", "inference"))
    shown.iloc[:, 0] = [r.both(SELECTION_METHODS[k]) for k in table["_method"]]
    shown = shown.rename(columns={shown.columns[0]: r.say("方法", "Method")})
    notes = []
    s = ctx.settings
    pilots = int(table["n_treated"].max()) if "n_treated" in table and table["n_treated"].notna().any() else 0
    if pilots < s.few_pilots:
        notes.append(r.say(
            f"这些 p 值和置信区间来自聚类稳健、影响函数或 Abadie–Imbens 公式；试点乡镇少于{s.few_pilots}个时可能偏小，"
            "结论以汇总页的随机化推断为准，本表用于比较各方法的点估计。",
            f"These p-values and intervals come from cluster-robust, influence-function or Abadie–Imbens formulas; with "
            f"fewer than {s.few_pilots} pilot townships they can be too small: conclusions rest on the summary's "
            "randomization inference, and this table compares the methods' estimates."))
    excludes = [not (lo <= 0 <= hi) for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)
                if pd.notna(lo) and pd.notna(hi)]
    if excludes and any(excludes) and not all(excludes):
        which = [SELECTION_METHODS[k] for k, lo, hi in zip(table["_method"], table["ci_low"], table["ci_high"],
                                                           strict=True) if pd.notna(lo) and not (lo <= 0 <= hi)]
        notes.append(r.say(
            f"各方法不一致：只有{'、'.join(w[0] for w in which)}的置信区间不含0；结论对估计方法敏感，应谨慎解读。",
            f"The methods disagree: only {'; '.join(w[1] for w in which)} exclude 0 from the interval; the "
            "conclusion depends on the method and should be read with caution."))
    skipped = (adj.values or {}).get("not_estimable_parts") or {}
    if skipped:
        by_reason: dict[str, list[str]] = {}
        for k, v in skipped.items():
            by_reason.setdefault(v, []).append(k)
        for reason, parts in by_reason.items():
            zh = "、".join(SELECTION_SHORT[k][0] for k in parts)
            en = ", ".join(SELECTION_SHORT[k][1] for k in parts)
            found = re.search(r"no overlap in the propensity score of cohort ([\d.]+)", reason)
            if found:
                label = ctx.cohort_label(float(found.group(1)))
                notes.append(r.say(f"{zh}未能估计：试点批次 {label} 的倾向得分与对照乡镇没有重叠（协变量几乎完全区分了该批试点与"
                                   "对照乡镇：该批试点乡镇太少，不足以估计含这些协变量的倾向得分）。",
                                   f"{en}: not estimated: the propensity score of cohort {label} has no overlap with "
                                   "the comparison townships (the covariates all but separate that cohort's pilots from "
                                   "them: too few pilots in the cohort for a propensity score on these covariates)."))
            else:
                notes.append(r.say(f"{zh}未能估计：{reason}", f"{en}: not estimated: {reason}"))
    if notes:
        shown.attrs["note"] = " ".join(notes)
    return shown


def _heterogeneity_table(ctx: Context, het: Result) -> dict:
    r = ctx.reader
    eff = het.effects.reset_index(drop=True)
    medians = het.values.get("medians") or {}
    table = reader_effects(ctx, eff, ("term", "estimate", "interval", "p_value", "n_treated"))
    table.iloc[:, 0] = [subgroup_label(ctx, b, g, medians.get(b)) for b, g in zip(eff["by"], eff["group"],
                                                                                 strict=True)]
    table = table.rename(columns={table.columns[0]: r.header("subgroup")})
    differences = het.values.get("differences") or {}
    diff = [differences.get(b, {}).get("difference") for b in eff["by"]]
    p_diff = [differences.get(b, {}).get("p_difference") for b in eff["by"]]
    first_of = ~eff["by"].duplicated()
    groups = {b: list(eff.loc[eff["by"] == b, "group"]) for b in eff["by"].unique()}

    def direction(b):  # the difference is the second group's effect minus the first's
        g = groups.get(b, [])
        if len(g) != 2:
            return ""
        (z0, e0), (z1, e1) = (SUBGROUP_WORDS.get(str(x), (str(x), str(x))) for x in g)
        return r.say(f"（{z1}−{z0}）", f"{' ' if r.language == 'en' else ''}({e1} − {e0})")
    table[r.header("difference")] = [r.effect(d, ctx.indicator) + direction(b) if f and d is not None and pd.notna(d)
                                     else "" for d, f, b in zip(diff, first_of, eff["by"], strict=True)]
    table[r.header("p_difference")] = [r.p(p) if f and p is not None and pd.notna(p) else ""
                                       for p, f in zip(p_diff, first_of, strict=True)]
    forest = eff.assign(label=[f"{b}:{g}" for b, g in zip(eff["by"], eff["group"], strict=True)],
                        ci_lower=eff["ci_low"], ci_upper=eff["ci_high"])
    adj = ctx.result("selection.adjusted")  # the overall ATT of the same estimand and adjustment: CS, outcome regression
    overall = None
    for part in ("cs_reg", "cs_unadjusted"):
        if overall is None and not adj.not_estimable and (adj.effects["section"] == part).any():
            overall = float(_section(adj, part)["estimate"].iloc[0])
    figure = plots.subgroup_forest(forest, overall=overall, indicator=ctx.indicator, reader=r,
                                   labels=_covariate_labels(ctx))
    table = written(table)
    relabellings = {b: (d or {}).get("n_relabellings") for b, d in differences.items()}
    few = [b for b, n in relabellings.items() if n and n < 20]
    table.attrs["note"] = r.say(
        "“≤ x”：随机化推断可能得到的最小 p 值（1/置换次数）。组间差异为后一组减前一组。"
        + (f"{'、'.join(_covariate_labels(ctx).get(b, (b, b))[0] for b in few)}的试点乡镇分组只有少数几种置换，"
           "组间差异检验的最小 p 值较大，不可能在常用水平上显著。" if few else ""),
        "'≤ x': the smallest p-value randomization inference can give (1 / assignments). The difference is the "
        "second group's effect minus the first's."
        + (f" {', '.join(_covariate_labels(ctx).get(b, (b, b))[1] for b in few)}: the pilots can be relabelled in "
           "only a few ways, so the difference test's smallest p-value is large and it cannot reach the usual "
           "levels." if few else ""))
    return {"heterogeneity": table, "forest": _closed(figure)}


def mechanisms(ctx: Context) -> pd.DataFrame | str | None:
    """The plan's mechanism chains (机制分析): each outcome's TWFE effect and each of its
    channels' effects by the same design, with randomization-inference intervals and
    p-values, read from the stored results. Descriptive: effects moving together are
    consistent with the channel, not a mediation estimate (which would need sequential
    ignorability of the channel, Imai, Keele and Tingley 2010)."""
    s, r = ctx.settings, ctx.reader
    if not s.mechanisms:
        return None
    catalogue = {i.id: i for i in ctx.study.selected_indicators()}
    rows = []
    for outcome, channels in s.mechanisms:
        for role, ind_id in [("outcome", outcome)] + [("channel", c) for c in channels]:
            ind = catalogue[ind_id]
            sub = ctx.for_indicator(ind)
            ri = sub.result("robustness.randomization")
            if ri.not_estimable:
                rows.append({"outcome": outcome, "role": role, "indicator": ind, "row": None,
                             "reason": ri.not_estimable})
                continue
            rows.append({"outcome": outcome, "role": role, "indicator": ind, "row": ri.effects.iloc[0].to_dict()})
    out = []
    for item in rows:
        ind = item["indicator"]
        row = item["row"]
        name = r.name(ind)
        if row is None:
            out.append({r.header("outcome"): "", r.header("channel"): name, r.header("estimate"): item["reason"],
                        r.say("95% 置信区间", "95% CI"): "", r.header("p_value"): "", r.header("direction"): ""})
            continue
        est, lo, hi = row["estimate"], row["ci_low"], row["ci_high"]
        sign = "—" if (lo <= 0 <= hi) else (r.say("上升", "up") if est > 0 else r.say("下降", "down"))
        out.append({r.header("outcome"): name if item["role"] == "outcome" else "",
                    r.header("channel"): "" if item["role"] == "outcome" else name,
                    r.header("estimate"): r.effect(est, ind),
                    r.say(f"{100 * (1 - s.alpha):g}% 置信区间", f"{100 * (1 - s.alpha):g}% CI"):
                        r.interval(lo, hi, lambda v, i=ind: r.effect(v, i)),
                    r.header("p_value"): r.p(row["p_value"], row.get("p_floor")),
                    r.header("direction"): sign})
    table = written(pd.DataFrame(out, dtype=object))
    table.attrs["note"] = r.say(
        "机制分析为描述性：结果指标与机制指标用同一设计（双向固定效应，随机化推断）估计；二者同向变化与该机制一致，但不是中介效应的"
        "估计（后者需要机制变量的序贯可忽略性假设，Imai、Keele 和 Tingley 2010）。“—”表示置信区间包含0。",
        "The mechanism analysis is descriptive: outcome and channels are estimated by the same design (two-way fixed "
        "effects, randomization inference); effects moving together are consistent with the channel but are not a "
        "mediation estimate, which would need sequential ignorability of the channel (Imai, Keele and Tingley 2010). "
        "'—': the interval contains 0.")
    return table


# ----------------------------------------------------------------------------- registry and prose

SECTIONS = {
    "data_quality": build_data_quality,
    "trends": build_trends,
    "did.callaway_santanna": build_callaway_santanna,
    "did.event_study": build_event_study,
    "did.twfe": build_twfe,
    "selection.matching": build_matching,
    "selection.adjusted": build_adjusted,
    "selection.heterogeneity": build_heterogeneity,
    "did.staggered_estimators": build_staggered_estimators,
    "its": build_its,
    "robustness.checks": build_robustness_checks,
    "robustness.fake_timing": build_fake_timing,
    "robustness.randomization": build_randomization,
    "robustness.inference": build_inference,
    "robustness.synthetic_did": build_synthetic_did,
    "robustness.synthetic_control": build_synthetic_control,
    "robustness.smoothness": build_smoothness,
    "robustness.relative_magnitude": build_relative_magnitude,
}

CAPTIONS = {
    "by_group": ("按整合模式与试点批次的效果", "Effects by integration model and cohort"),
    "no_groups": ("分析计划未设分组（analysis.subgroups）。", "The analysis plan sets no subgroups (analysis.subgroups)."),
    "poisson": ("计数模型（泊松，人口或分母为暴露量）：率比与百分比变化",
                "Count model (Poisson with exposure): rate ratio and percent change"),
    "not_count": ("该指标不是计数或率指标，不做泊松模型。", "Not a count or rate indicator: no Poisson model."),
    "controlled_its": ("对照中断时间序列（试点 vs 非试点）：水平与斜率变化之差",
                       "Controlled ITS: differences in level and slope change (pilots vs non-pilots)"),
    "its_by_township": ("逐个试点乡镇的中断时间序列（各自开始时间）", "One ITS per pilot township at its own start"),
}

NOTES = {
    "data_quality": (
        "面板的覆盖范围、试点构成、缺失单元格、缺期和异常值。异常值按乡镇内稳健z值（|z| > {outlier_z}）计数，仅供核查，不做删除。",
        "Coverage of the panel, the pilots, missing cells, missing periods and outlying values (robust z-score "
        "within the township above {outlier_z}: counted for checking, never removed)."),
    "trends": (
        "试点乡镇与非试点乡镇的指标走势（合并计算），虚线为各批试点开始时间，绿色虚线为政策目标。",
        "The indicator in pilot and non-pilot townships (pooled), with the pilot starts (dotted) and the policy "
        "target (dashed)."),
    "did": (
        "Callaway–Sant'Anna 组别-时间效果（以{comparison_zh}为对照），适用于分批试点且效果随时间变化的情形。试点乡镇不少于"
        "{few_pilots}个时，它是评估总结的核心结果；少于{few_pilots}个时，核心结果为双向固定效应系数加随机化推断（见稳健性检验章节），"
        "此处的估计作为对照。",
        "Callaway and Sant'Anna group-time effects against {comparison_en} townships, valid when pilots start at "
        "different times and effects grow. With {few_pilots} or more pilot townships this is the summary's headline; "
        "with fewer, the headline is the two-way fixed effects coefficient with randomization inference (robustness "
        "chapter) and this estimate is shown beside it."),
    "event_study": (
        "事件研究（事件时间 {first_event} 至 {last_event}）：试点开始前的系数应接近0（平行趋势），之后的系数显示效果如何随时间累积。"
        "阴影为一致置信带。前趋势检验为TWFE事件研究中 {leads} 个前导期系数的联合检验，采用随机化推断（置换试点历史），试点少时"
        "仍能保持检验水准；聚类稳健 F 统计量列于旁。检验不拒绝并不等于没有趋势差异（Roth 2022）：表中给出该检验有80%把握发现的"
        "线性趋势及其可能造成的偏倚。",
        "Event study (event times {first_event} to {last_event}): coefficients before the start should be near 0 "
        "(parallel trends); after it they show how the effect builds up. The shaded area is the uniform band. The "
        "pre-trend test is the joint test of the TWFE event study's {leads} leads by randomization inference (pilot "
        "histories permuted), which keeps its size with few pilots; the cluster-robust F is shown beside it. A test "
        "that does not reject is weak evidence when it has little power (Roth 2022): the table says which linear "
        "pre-trend it would have found with 80% probability and the bias that trend would cause."),
    "twfe": (
        "双向固定效应（TWFE）及其 Goodman-Bacon 分解：当“已试点乡镇作对照”的比较权重较大且效果随时间增长时，TWFE 会偏低。",
        "Two-way fixed effects and its Goodman-Bacon decomposition: when comparisons that use already-treated "
        "townships as controls carry weight and effects grow, TWFE is biased down."),
    "staggered_estimators": (
        "各估计方法比较 / Estimators side by side",
        "分批试点下的几种稳健估计：插补法（Borusyak、Jaravel、Spiess 2024，用未试点观测拟合乡镇与时期效应后插补反事实）、"
        "Sun–Abraham 交互加权事件研究（2021，以从未试点乡镇为对照）和 Wooldridge 扩展双向固定效应（2021；计数指标另给泊松形式的率比），"
        "与 TWFE 和 Callaway–Sant'Anna 并列。它们在效果随批次和时间变化时仍无偏（前提是平行趋势和无预期效应）；结论一致说明"
        "结果不取决于估计方法。图中竖线为{alpha_pct}置信区间；TWFE 事件研究两端合并，其余方法不合并；Callaway–Sant'Anna 试点前"
        "各点是相邻两期之差（逐期基期），其余方法的前导期系数均相对于试点前一期，二者不可直接比较。",
        "Estimators built for staggered pilots, beside TWFE and Callaway–Sant'Anna: imputation (Borusyak, Jaravel and "
        "Spiess 2024: township and period effects fitted on untreated observations, the counterfactual imputed), "
        "Sun and Abraham's interaction-weighted event study (2021, never-treated comparison) and Wooldridge's "
        "extended TWFE (2021; for counts also its Poisson form, as a rate ratio). They stay unbiased when effects "
        "differ by cohort and over time, under parallel trends and no anticipation; when they agree, the "
        "conclusion does not depend on the estimator. In the figure the bars are {alpha_pct} intervals; the TWFE "
        "event study's end points are binned, the others' are not; Callaway–Sant'Anna's pre-start points are "
        "period-to-period differences (varying base period) while the other estimators' leads are relative to the "
        "period before the start, so the two are not directly comparable."),
    "its": (
        "最早一批试点乡镇的指标序列（每{unit_zh}一个值），分段回归：年内季节项（年度数据无）、"
        "春节（各期落在春节窗口内的天数占比；季度数据中春节总在第一季度，由第一季度项吸收；年度数据不设）、"
        "新冠阶段（各期落在该阶段内的天数占比），试点后{phase_in_zh}过渡期和缺失的期不纳入拟合。",
        "The earliest cohort's series by {unit_en}, segmented regression with seasonal terms within the year (none "
        "on annual data), the Spring Festival (the share of each period's days in the festival window; on quarterly "
        "data the festival always falls in the first quarter, whose term absorbs it; none on annual data) and "
        "COVID-19 phases (the share of each period's days in the phase); the {phase_in_en} phase-in after the start "
        "and missing periods are left out of the fit."),
    "robustness": (
        "每一行为改变一项设定后的 Callaway–Sant'Anna 总体 ATT：对照组选择（从未试点 vs 尚未试点）、剔除新冠时期、安慰剂时间"
        "（提前{placebo_zh}的假开始，应为0）、逐个剔除试点乡镇。应与双重差分章节的 Callaway–Sant'Anna 估计比较。",
        "Each row is the Callaway and Sant'Anna overall ATT with one choice changed: the comparison group (never vs "
        "not-yet treated), COVID-19 periods dropped, a placebo start {placebo_en} early (should be 0), leaving one "
        "pilot out. Compare them with the Callaway–Sant'Anna estimate of the DiD chapter."),
    "inference": (
        "少量试点下的推断 / Inference with few pilots",
        "同一双向固定效应估计在不同推断方法下的p值与置信区间（随机化推断 {draws_randomization} 次置换，野聚类自助法 "
        "{draws_wild_bootstrap} 次，{weights} 权重）。试点乡镇少于{few_pilots}个时，聚类稳健（CR1）p值偏小，应以随机化推断或野聚类自助法为准。",
        "The same TWFE estimate under each inference method (randomization inference with {draws_randomization} "
        "permutations, wild cluster bootstrap with {draws_wild_bootstrap} {weights} draws). With fewer than "
        "{few_pilots} pilot townships clustered (CR1) p-values are too small: trust randomization inference or the "
        "wild cluster bootstrap."),
    "placebo": (
        "安慰剂检验 / Placebo tests",
        "随机化推断的分布：把各批试点的开始时间随机分配给其他乡镇（{draws_randomization} 次），每次重新估计双向固定效应系数；"
        "真实估计（红线）落在分布尾部说明效果不是偶然。假开始时间：把试点开始时间提前{placebo_zh}和两倍于此，只用真实开始前的数据，"
        "此时的效果应接近0。",
        "The randomization distribution: the cohorts' start dates given to other townships at random "
        "({draws_randomization} draws), the two-way fixed effects coefficient estimated each time; a real estimate (red "
        "line) in the tail means the effect is not chance. Fake timing: the pilot starts moved {placebo_en} and twice "
        "that earlier, on the data before the real starts only, where the effect should be about zero."),
    "synthetic": (
        "合成控制与合成双重差分 / Synthetic control and synthetic DiD",
        "当试点乡镇很少或因基础薄弱而被选为试点时，平行趋势假设最值得怀疑。合成双重差分（Arkhangelsky 等，2021）给非试点乡镇和试点前各期加权，"
        "使加权后的对照组在试点前与试点乡镇平行；合成控制（Abadie 等，2010）为每个试点乡镇构造一个由非试点乡镇加权而成的“合成乡镇”，"
        "逐个说明哪个乡镇发生了变化。p 值为该乡镇在所有安慰剂（每个非试点乡镇轮流作为假试点）中的试点后/试点前均方根预测误差比排名。",
        "When pilots are few, or were chosen because they were weak, parallel trends is the weakest link. Synthetic "
        "DiD (Arkhangelsky et al. 2021) weights the non-pilot townships and the pre-periods so that the weighted "
        "comparison runs parallel to the pilots before the start. The synthetic control (Abadie et al. 2010) builds, "
        "for each pilot township, a weighted twin from the non-pilot townships, so the report can name which township "
        "moved; its p-value is the township's rank of the post/pre RMSPE ratio among the placebos (each non-pilot "
        "township in turn as a fake pilot). A township flagged poor_pre_fit lies outside what the donors can "
        "reproduce: do not report its effect on its own."),
    "sensitivity": (
        "平行趋势敏感性 / Parallel-trends sensitivity",
        "若平行趋势并不完全成立，结论还能站得住吗？按 Rambachan 和 Roth（2023），“相对幅度”假设试点后偏离趋势的每期变化不超过"
        "试点前最大变化的 Mbar 倍（Mbar = {rm_values}；目标为前{rm_post_zh}平均效果）；“平滑度”假设趋势斜率每期变化不超过 M"
        "（M = 0 即按试点前线性趋势外推；目标为前{sd_post_zh}平均效果，用试点前{sd_pre_zh}）。临界值是置信区间仍不含0的最大 Mbar 或 M。",
        "Would the conclusion survive if parallel trends held only approximately? Following Rambachan and Roth "
        "(2023), relative magnitudes let the post-start bias change each period by up to Mbar times the largest "
        "pre-period change (Mbar = {rm_values}; target: the mean effect of the first {rm_post_en}); smoothness lets "
        "the slope of the bias change by up to M per period (M = 0: the pre-period's linear trend continues; "
        "target: the mean effect of the first {sd_post_en}, from {sd_pre_en} before the start). The breakdown value "
        "is the largest Mbar or M at which the confidence set still excludes zero."),
    "selection": (
        "试点乡镇往往不是随机选出的：县里倾向于选择规模较大、离县城较近或基础较好的卫生院。本章比较试点与对照乡镇的基线特征"
        "（协变量），用倾向得分匹配（PSM-DID）和协变量调整的 Callaway–Sant'Anna 估计检验结论是否受选择影响，并按乡镇特征分组估计效果"
        "（异质性分析）。条件平行趋势假设：特征相同的试点与对照乡镇在没有试点时走势相同。",
        "Pilot townships are rarely chosen at random: counties pick centres that are larger, nearer the county seat or "
        "already stronger. This chapter compares pilots and comparison townships on their baseline characteristics "
        "(covariates), checks whether the conclusion survives propensity-score matching (PSM-DID) and "
        "covariate-adjusted Callaway–Sant'Anna estimation, and estimates effects by township characteristics "
        "(heterogeneity). The assumption is conditional parallel trends: pilots and comparison townships with the same "
        "characteristics would have moved alike without the pilot."),
    "balance": (
        "平衡性检验 / Balance",
        "试点与对照乡镇的协变量均值、标准化均值差（Austin 2009）和方差比，匹配前、匹配后（对照乡镇按匹配权重加权）和熵平衡后"
        "（Hainmueller 2012，对照乡镇加权使均值与试点乡镇相同）。",
        "Covariate means of pilots and comparison townships, standardized mean differences (Austin 2009) and variance "
        "ratios, before matching, after it (comparison townships weighted by their matching weights) and after entropy "
        "balancing (Hainmueller 2012: comparison townships weighted so that their means equal the pilots')."),
    "selection_estimates": (
        "选择偏差的稳健性 / Robustness to selection",
        "同一指标的总体效果：未调整的双向固定效应与 Callaway–Sant'Anna、以协变量调整的 Callaway–Sant'Anna（双重稳健、结果回归、"
        "逆概率加权；Sant'Anna 和 Zhao 2020）和 PSM-DID（Heckman、Ichimura 和 Todd 1997：每个试点乡镇试点前{first_event_abs}期到"
        "试点后{last_event}期的变化减去匹配对照乡镇同期的变化）。协变量方法只用协变量齐全的乡镇。各方法一致说明结论不取决于"
        "试点乡镇如何被选出（以可观测特征为限）。",
        "The overall effect on this indicator: unadjusted two-way fixed effects and Callaway–Sant'Anna, "
        "Callaway–Sant'Anna adjusted for the covariates (doubly robust, outcome regression, inverse probability "
        "weighting; Sant'Anna and Zhao 2020) and PSM-DID (Heckman, Ichimura and Todd 1997: each pilot's change from "
        "{first_event_abs} periods before its start to {last_event} after it, minus its matched comparison townships' "
        "change over the same periods). The covariate methods use the townships with every covariate. Agreement means "
        "the conclusion does not depend on how the pilots were chosen, as far as observed characteristics go."),
    "heterogeneity": (
        "异质性分析 / Heterogeneity",
        "按乡镇特征分组的效果：二值特征按取值分组，连续特征按全部乡镇的中位数分为两组，每组只用本组的试点与对照乡镇。结果指标先扣除"
        "由协变量解释的各期差异（在本组对照乡镇中逐期估计：条件平行趋势）。每个试点乡镇的双重差分为其试点后各期均值减试点前"
        "{first_event_abs}期均值，再减去本组对照乡镇同期的变化；组内按试点期数加权平均，即全部试点乡镇-期的平均效果（与"
        "Callaway–Sant'Anna 总体 ATT 同一估计量，图中虚线）。p 值和置信区间来自随机化推断（组内置换试点历史），试点少时仍有效。"
        "组间差异检验：在试点乡镇之间置换该特征的取值，原假设为试点效果与该特征无关。",
        "Effects by township characteristic: a binary one by its value, a continuous one split at the median of all "
        "townships, each group on its own pilots and comparison townships. The outcome is first adjusted for the "
        "period effects the covariates explain (estimated period by period on the group's comparison townships: "
        "conditional parallel trends). Each pilot's DiD is its mean after the start minus its mean over the "
        "{first_event_abs} periods before, less the same change of the group's comparison townships; the group's "
        "effect averages them weighted by treated periods: the mean effect over treated township-periods (the "
        "estimand of the Callaway–Sant'Anna overall ATT, the dashed line). p-values and intervals come from "
        "randomization inference within the group, valid however few the pilots. The difference between groups is "
        "tested by permuting the characteristic among the pilots, under the null that a pilot's effect is unrelated "
        "to it."),
    "mechanisms": (
        "机制分析 / Mechanisms",
        "研究方案中声明的机制：结果指标的效果及其机制指标的效果，用同一设计估计。",
        "The mechanisms the study declares: the outcome's effect and its channels' effects, estimated by the same "
        "design."),
    "summary": (
        "每个指标一行：核心结果（同一方法的效果、{alpha_pct}置信区间和p值，方法见表注：试点乡镇少于{few_pilots}个时为双向固定效应"
        "DiD加随机化推断，否则为 Callaway–Sant'Anna 以{comparison_zh}为对照）、相对反事实均值的变化、最近{target_window_zh}"
        "试点与非试点乡镇的水平及目标达成情况、结论。",
        "One row per indicator: the headline (one method's effect, {alpha_pct} interval and p-value, the method named "
        "under the table: with fewer than {few_pilots} pilot townships two-way fixed effects DiD with randomization "
        "inference, otherwise Callaway and Sant'Anna against {comparison_en} townships), the change relative to the "
        "counterfactual mean, the levels of pilot and non-pilot townships over the last {target_window_en} against "
        "the target, and the verdict."),
}
