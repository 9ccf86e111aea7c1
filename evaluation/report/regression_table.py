"""The publication baseline DiD table (三线表): indicators in columns, read from the
results store (nothing re-estimated).

Panel A holds each indicator's two-way fixed-effects DiD coefficient (``did.twfe``, the
effect of part ``twfe`` with estimand ``att``) with its standard error in parentheses
below it (or, with ``interval=True``, its confidence interval), then the number of
observations, townships and pilot townships, the fixed effects (township and period),
the clustering variable and the inference. Panel B (optional, on by default) holds the
Callaway-Sant'Anna simple ATT (``did.callaway_santanna``, part ``simple``) with its
standard error or interval and the comparison group. Significance stars are off by
default; with ``stars=True`` they mark p < 0.1 (*), 0.05 (**) and 0.01 (***), which the
note states.

Every number is written by the report's :class:`~evaluation.report.readable.Reader`:
effects on a share in percentage points, money in yuan, rates to three significant
digits, counts with thousands separators. The cells hold the bare number; each column's
header names its unit.

Renderers: :meth:`RegressionTable.to_html` (a ``<table class="three-line">`` with rules
above and below the header and at the bottom only; :data:`THREE_LINE_CSS` is the style,
included unless ``style=False``; every string escaped), :meth:`RegressionTable.to_latex`
(booktabs ``\\toprule``/``\\midrule``/``\\bottomrule``, LaTeX specials escaped; Chinese
text needs XeLaTeX with ``ctex`` or ``xeCJK``), :attr:`RegressionTable.frame` (strings,
headers as columns: what a Word three-line-table helper takes, with :attr:`caption` and
:attr:`note`) and :attr:`RegressionTable.numbers` (the numbers, in the readers' units,
one row per indicator and panel, for a spreadsheet).

Why our own renderer: ``maketables`` (0.2.0) renders a DataFrame of strings
(``MTable``) but does not escape LaTeX specials (``%``, ``_``, ``&`` reach the ``.tex``
as they are) and its model tables format numbers themselves, not in our readers' units;
``great_tables`` (1.1.0) escapes, but its LaTeX puts a vertical rule after the stub
(``l|cc``, not a three-line table) and its HTML carries about 10 KB of its own CSS per
table. Both would still need our Reader strings; the table itself is a few rows.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.errors import EvaluationInputError
from evaluation.report.readable import COLUMNS, DASH, Reader
from evaluation.report.store import ResultsStore

THREE_LINE_CSS = """table.three-line{border-collapse:collapse;border:none;border-top:2px solid #000;
border-bottom:2px solid #000;margin:0.5em 0;font-variant-numeric:tabular-nums}
table.three-line caption{caption-side:top;text-align:center;padding-bottom:0.4em}
table.three-line th,table.three-line td{border:none;padding:2px 12px;background:none}
table.three-line thead th{border-bottom:1px solid #000;text-align:center;font-weight:normal}
table.three-line tbody th{text-align:left;font-weight:normal}
table.three-line tbody td{text-align:center}
table.three-line tr.panel th{font-style:italic;padding-top:6px}
p.three-line-note{font-size:0.85em;margin:0.2em 0 1em 0}"""

# The clustering variable (a column of the panel) as readers say it.
CLUSTER_WORDS = {"township_id": ("乡镇", "Township"), "county": ("县区", "County")}
STAR_LEVELS = ((0.01, "***"), (0.05, "**"), (0.1, "*"))
LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", DASH: "---"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (a missing-value dash as ``---``)."""
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in str(text))


@dataclass
class RegressionTable:
    """A three-line table: column headers, panels of labelled rows of strings, a note."""

    caption: str
    stub: str  # the header of the row-label column
    headers: list[str]
    panels: list[tuple[str | None, list[tuple[str, list[str]]]]]  # (title, [(label, cells)])
    note: str
    spanning: set[str] = field(default_factory=set)  # labels of rows whose one value spans the columns
    numbers: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def frame(self) -> pd.DataFrame:
        """The table as strings, one row per table row (a panel's title is a row with
        empty cells), the row labels in the first column."""
        rows = []
        for title, body in self.panels:
            if title:
                rows.append([title] + [""] * len(self.headers))
            rows.extend([label, *cells] for label, cells in body)
        return pd.DataFrame(rows, columns=[self.stub, *self.headers], dtype=object)

    def _spans(self, label: str, cells: list[str]) -> bool:
        return label in self.spanning and len(cells) > 1 and len(set(cells)) == 1

    def to_html(self, style: bool = True) -> str:
        """A ``<table class="three-line">`` with its note below (and, with ``style``, its CSS)."""
        esc = html.escape
        n = len(self.headers)
        out = [f"<style>{THREE_LINE_CSS}</style>"] if style else []
        out.append('<table class="three-line">')
        out.append(f"<caption>{esc(self.caption)}</caption>")
        out.append("<thead><tr>" + f'<th scope="col">{esc(self.stub)}</th>'
                   + "".join(f'<th scope="col">{esc(h)}</th>' for h in self.headers) + "</tr></thead>")
        for title, body in self.panels:
            out.append("<tbody>")
            if title:
                out.append(f'<tr class="panel"><th colspan="{n + 1}" scope="rowgroup">{esc(title)}</th></tr>')
            for label, cells in body:
                data = (f'<td colspan="{n}">{esc(cells[0])}</td>' if self._spans(label, cells)
                        else "".join(f"<td>{esc(c)}</td>" for c in cells))
                out.append(f'<tr><th scope="row">{esc(label)}</th>{data}</tr>')
            out.append("</tbody>")
        out.append("</table>")
        out.append(f'<p class="three-line-note">{esc(self.note)}</p>')
        return "\n".join(out)

    def to_latex(self, label: str | None = None) -> str:
        """A ``table`` float with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)
        and the note below it; every string escaped."""
        n = len(self.headers)
        lines = [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{latex_escape(self.caption)}}}"]
        if label:
            lines.append(rf"\label{{{latex_escape(label)}}}")
        lines += [rf"\begin{{tabular}}{{@{{}}l{'c' * n}@{{}}}}", r"\toprule",
                  " & ".join(latex_escape(h) for h in [self.stub, *self.headers]) + r" \\", r"\midrule"]
        for k, (title, body) in enumerate(self.panels):
            if title:
                if k:
                    lines.append(r"\addlinespace")
                lines.append(rf"\multicolumn{{{n + 1}}}{{@{{}}l}}{{\textit{{{latex_escape(title)}}}}} \\")
            for row_label, cells in body:
                if self._spans(row_label, cells):
                    lines.append(f"{latex_escape(row_label)} & \\multicolumn{{{n}}}{{c}}{{{latex_escape(cells[0])}}} \\\\")
                else:
                    lines.append(" & ".join(latex_escape(c) for c in [row_label, *cells]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip",
                  rf"\parbox{{\linewidth}}{{\footnotesize {latex_escape(self.note)}}}", r"\end{table}"]
        return "\n".join(lines)


def _stars(p) -> str:
    if p is None or not np.isfinite(float(p)):
        return ""
    return next((mark for level, mark in STAR_LEVELS if float(p) < level), "")


def _bare(reader: Reader, value, indicator) -> str:
    """An effect as the reader writes it, without its unit (the column's header names it)."""
    return reader.effect(value, indicator, unit=False)


def _one(result, part: str, path: Path) -> pd.Series:
    rows = result.effects[(result.effects["estimand"] == "att") & (result.effects["section"] == part)]
    if len(rows) != 1:
        raise EvaluationInputError(f"{path}: expected one effect 'att' of part '{part}', found {len(rows)}")
    return rows.iloc[0]


def regression_table(folder: Path, study, language: str | None = None, interval: bool = False,
                     stars: bool = False, callaway_santanna: bool = True,
                     indicators: list[str] | None = None) -> RegressionTable:
    """The baseline DiD table of a report folder's results store (see the module
    docstring). ``indicators``: ids, in order (default: the study's indicators that have a
    stored TWFE result); ``interval``: the confidence interval below each estimate instead
    of the standard error; ``stars``: mark significance."""
    reader = Reader(language or study.report.language)
    say = reader.say
    store = ResultsStore(Path(folder) / "results")
    catalogue = {i.id: i for i in study.selected_indicators()}
    if indicators is None:
        chosen = [i for i in catalogue.values() if store.read("did.twfe", i.id) is not None]
        if not chosen:
            raise EvaluationInputError(f"{store.root}: no stored 'did.twfe' result for any of the study's indicators")
    else:
        unknown = [i for i in indicators if i not in catalogue]
        if unknown:
            raise EvaluationInputError(f"indicator(s) {unknown} are not in the study {study.id}")
        chosen = [catalogue[i] for i in indicators]

    def read(section, ind):
        result = store.read(section, ind.id)
        if result is None:
            raise EvaluationInputError(f"{store.folder(section, ind.id)}: no stored result '{section}'")
        return result

    headers = [f"{reader.name(ind)} ({reader.unit(ind, change=True)})" if reader.language != "zh"
               else f"{reader.name(ind)}（{reader.unit(ind, change=True)}）" for ind in chosen]
    level = None
    inference, numbers, notes = [], [], []

    def estimate_rows(section, part, label, ind_rows):
        nonlocal level
        coef, below = [], []
        for ind in chosen:
            result = read(section, ind)
            if result.not_estimable:
                coef.append(DASH)
                below.append("")
                notes.append((f"{ind.name_zh}（{section}）未能估计：{result.not_estimable}",
                              f"{ind.name_en} ({section}) not estimable: {result.not_estimable}"))
                ind_rows.append(None)
                continue
            row = _one(result, part, store.folder(section, ind.id))
            level = level if level is not None else float(row["alpha"])
            coef.append(_bare(reader, row["estimate"], ind) + (_stars(row["p_value"]) if stars else ""))
            if interval:
                below.append(reader.interval(row["ci_low"], row["ci_high"], lambda v, i=ind: _bare(reader, v, i)))
            else:
                below.append(f"({_bare(reader, row['std_error'], ind)})")
            ind_rows.append(row)
            scale = 100.0 if ind.unit == "share" else 1.0
            numbers.append({"indicator": ind.id, "section": section, "estimate": scale * row["estimate"],
                            "std_error": scale * row["std_error"], "ci_low": scale * row["ci_low"],
                            "ci_high": scale * row["ci_high"], "p_value": row["p_value"],
                            "n_obs": row["n_obs"], "n_units": row["n_units"], "n_treated": row["n_treated"],
                            "unit": reader.unit(ind, change=True)})
        return [(label, coef), ("", below)]

    twfe_rows: list = []
    body = estimate_rows("did.twfe", "twfe", say("双重差分系数", "DiD coefficient"), twfe_rows)

    def counts(column):
        return [reader.count(r[column]) if r is not None else DASH for r in twfe_rows]

    yes = [reader.flag(True) if r is not None else DASH for r in twfe_rows]
    clusters = []
    for ind, r in zip(chosen, twfe_rows, strict=True):
        cluster = read("did.twfe", ind).settings.get("cluster")
        if cluster is None:
            raise EvaluationInputError(f"{store.folder('did.twfe', ind.id)}: its settings have no 'cluster'")
        clusters.append(reader.both(CLUSTER_WORDS[cluster]) if cluster in CLUSTER_WORDS
                        else reader.header(cluster) if cluster in COLUMNS else str(cluster))
        inference.append(r["inference"] if r is not None else None)
    body += [(say("观测数", "Observations"), counts("n_obs")), (say("乡镇数", "Townships"), counts("n_units")),
             (say("试点乡镇数", "Pilot townships"), counts("n_treated")),
             (say("乡镇固定效应", "Township fixed effects"), yes), (say("时期固定效应", "Period fixed effects"), yes),
             (say("聚类", "Clustering"), clusters),
             (say("推断方法", "Inference"), [reader.method(i) for i in inference])]
    panels = [(say("A：双向固定效应双重差分（TWFE）", "A: Two-way fixed-effects DiD (TWFE)"), body)]
    if callaway_santanna:
        cs_rows: list = []
        cs = estimate_rows("did.callaway_santanna", "simple",
                           say("平均处理效应（总体）", "ATT (simple)"), cs_rows)
        comparison = [reader.text(read("did.callaway_santanna", ind).settings.get("comparison"))
                      if r is not None else DASH for ind, r in zip(chosen, cs_rows, strict=True)]
        cs.append((say("对照组", "Comparison group"), comparison))
        cs.append((say("推断方法", "Inference"), [reader.method(r["inference"]) if r is not None else DASH
                                                  for r in cs_rows]))
        panels.append((say("B：Callaway–Sant'Anna 交错双重差分", "B: Callaway–Sant'Anna staggered DiD"), cs))
    spanning = {say("聚类", "Clustering"), say("推断方法", "Inference"), say("对照组", "Comparison group")}
    pct = f"{100 * (1 - (level if level is not None else 0.05)):g}%"
    # each language's note written whole, then put together (never "。 / ." between the two)
    zh = ["注：" + (f"系数下方方括号内为{pct}置信区间。" if interval else "系数下方括号内为聚类稳健标准误。"),
          "比例类指标的效果以百分点表示。"]
    en = ["Note: " + (f"{pct} confidence intervals in brackets." if interval
                      else "Cluster-robust standard errors in parentheses."), "Effects on shares are in percentage points."]
    if stars:
        zh.append("* p < 0.1，** p < 0.05，*** p < 0.01。")
        en.append("* p < 0.1, ** p < 0.05, *** p < 0.01.")
    zh += [f"{n_zh}。" for n_zh, _ in notes]
    en += [f"{n_en}." for _, n_en in notes]
    note = [say("".join(zh), " ".join(en))]
    return RegressionTable(caption=say("基准双重差分估计", "Baseline difference-in-differences estimates"),
                           stub="", headers=headers, panels=panels, spanning=spanning, note=note[0],
                           numbers=pd.DataFrame(numbers))
