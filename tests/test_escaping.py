"""Everything user-supplied is escaped (issue #13, item 4).

A small study whose township ids and names, county names, integration models, study
title and COVID-19 phase name carry payloads (an ``<img onerror>`` tag, a ``<script>``,
mathtext ``$\\frac{1}{0}$``, a template ``{{7*7}}``, an entity ``&amp;``, quotes) and one
pilot the donors cannot reproduce (so the synthetic control's poor-fit warning, which
quotes the township id, is shown). Its chapters are built twice: in this process, by
executing the chapter notebooks' own cells with the displays captured and exported as the
batch exports them (so the figures' Text objects can be inspected), and by one
``batch --fast``. Every HTML page produced must show each payload as typed: no element or
script injected, nothing escaped twice, no formula typeset (each ``$...$`` sits inside a
block MathJax ignores), and the figures draw ``$...$`` literally without mathtext.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib
import nbformat
import pandas as pd
import pytest
from bs4 import BeautifulSoup
from matplotlib.text import Text
from study_builders import small_demo, write_study

from evaluation.cli import main
from evaluation.paths import NOTEBOOKS
from evaluation.report import chapters, plots
from evaluation.report.batch import export_html
from evaluation.report.store import ResultsStore, make_result

matplotlib.use("Agg")

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(1)</script>"
MATH = r"$\frac{1}{0}$"
BAD_MATH = r"$\nosuchcommand{x}$"  # mathtext raises on it: a figure that parsed it would not draw
TEMPLATE = "{{7*7}}"
ENTITY = "&amp;"
QUOTES = "'\""
PAYLOADS = (IMG, SCRIPT, MATH, BAD_MATH, TEMPLATE, ENTITY, QUOTES)
INDICATOR = "county_internal_visit_rate"
MATHJAX_SKIPS = {"script", "noscript", "style", "textarea", "pre", "code", "title"}  # MathJax 2 skipTags + head


def payload_study(root: Path):
    """The small demo prefecture with a payload in every user-supplied string; the first
    pilot (id ``...<img ...>``, name ``$\\frac{1}{0}$镇``; the second pilot's name holds mathtext
    that does not parse) is given an in-county visit rate
    of 0.2, far below every donor's, so its synthetic control fits poorly and warns."""
    panel, pilots, _ = small_demo()
    poor, second = pilots["township_id"].iloc[0], pilots["township_id"].iloc[1]
    comparison = sorted(set(panel["township_id"]) - set(pilots["township_id"]))
    gappy, excluded = comparison[0], comparison[1]
    renamed = {poor: f"{MATH}镇", second: f"{SCRIPT}{BAD_MATH}乡", gappy: f"{IMG}{ENTITY}{QUOTES}村",
               excluded: f"{SCRIPT}{MATH}排除"}
    panel["township_name"] = [renamed.get(t, n) for t, n in zip(panel["township_id"], panel["township_name"],
                                                                 strict=True)]
    low = panel["township_id"] == poor
    panel.loc[low, "visits_in_county"] = (0.2 * panel.loc[low, "visits_total"]).round()
    panel = panel[~((panel["township_id"] == gappy) & panel["period"].isin(["2019-03", "2019-04"]))]
    ids = {poor: f"{poor}{IMG}", gappy: f"{gappy}{QUOTES}{MATH}", excluded: f"{excluded}{SCRIPT}"}
    panel = panel.assign(township_id=panel["township_id"].replace(ids),
                         county=panel["county"].map({"东林县": f"东林县{ENTITY}{QUOTES}", "南溪县": f"南溪县{MATH}{IMG}"}))
    pilots = pilots.assign(township_id=pilots["township_id"].replace(ids),
                           model=pilots["model"].replace({"托管": f"托管{IMG}", "对口支援": f"对口支援{MATH}{ENTITY}"}))
    towns = sorted(panel["township_id"].unique())
    root.mkdir(parents=True, exist_ok=True)
    distance, mountain = f"距离{SCRIPT}{MATH}", f"山区{IMG}{QUOTES}"
    pd.DataFrame({"乡镇编码": towns, distance: [5.0 + 3 * (i % 11) + 7 * (t in set(pilots["township_id"]))
                                          for i, t in enumerate(towns)],
                  mountain: ["是" if i % 3 == 0 else "否" for i in range(len(towns))]}).to_csv(
        root / "townships.csv", index=False)
    built = write_study(root, panel.reset_index(drop=True), pilots, study_id="escape", extra={
        "covariates": {"table": {"file": "townships.csv", "columns": {
            "乡镇编码": "township_id", distance: "distance_km", mountain: "mountainous"}}},
        "title": {"zh": f"研究{SCRIPT}{MATH}", "en": f"Study {IMG} {TEMPLATE} {ENTITY} {QUOTES}"},
        "covid": {"handling": "phases", "phases": [{"name": f"疫情{IMG}{MATH}", "start": "2020-01", "end": "2020-04"}]},
        "townships": {"exclude": [ids[excluded]]},
        "analysis": {"seed": 7, "sensitivity": {"smoothness": {  # one short bound: seconds, not half a minute
            "values": [0.0], "pre_periods": "6 months", "post_periods": "6 months"}}},
    })
    return built, ids[poor]


# ----------------------------------------------------------------------------- checks of a page

def _math_free(node) -> bool:
    """Whether MathJax leaves ``node`` alone: inside a skipped tag or an ignore class."""
    for parent in node.parents:
        if parent.name in MATHJAX_SKIPS or "tex2jax_ignore" in (parent.get("class") or []):
            return True
    return False


def check_page(path: Path, mathjax: bool = True) -> str:
    """Assert the page injects nothing and (``mathjax``: a chapter's output, which
    JupyterLab and the exported page typeset) typesets nothing of the payloads; return its text."""
    raw = path.read_text(encoding="utf-8")
    assert "<img src=x" not in raw and "<script>alert" not in raw, path.name
    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup.find_all(True):
        assert not any(a.startswith("on") for a in tag.attrs), (path.name, str(tag)[:200])
        if tag.name == "script":
            assert "alert(1)" not in tag.get_text(), path.name
    if mathjax:
        for text in soup.find_all(string=lambda s: r"\frac{1}{0}" in s):
            assert _math_free(text), (path.name, "typeset by MathJax", str(text.parent)[:300])
    body = soup.get_text()
    for twice in ("&lt;img", "&lt;script", "&amp;amp;"):  # shown to the reader escaped twice
        assert twice not in body, (path.name, twice)
    return body


# ----------------------------------------------------------------------------- the chapters in this process

class Captured:
    """The displays of one notebook cell run, as papermill would store them."""

    def __init__(self):
        from IPython.core.formatters import DisplayFormatter

        self.formatter = DisplayFormatter()
        self.outputs: list = []
        self.figures: list = []

    def display(self, *objects, **_):
        for obj in objects:
            if hasattr(obj, "savefig"):
                buffer = io.BytesIO()
                obj.savefig(buffer, format="png")
                self.figures.append(obj)
                data = {"image/png": base64.b64encode(buffer.getvalue()).decode(), "text/plain": "<Figure>"}
            else:
                data, _ = self.formatter.format(obj)
            self.outputs.append(nbformat.v4.new_output("display_data", data=data))


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """Every chapter notebook's cells executed here for one indicator, each page exported
    to HTML as the batch exports it; mathtext parses recorded while the figures draw."""
    from matplotlib import mathtext

    root = tmp_path_factory.mktemp("escape-in-process")
    built, poor = payload_study(root / "study")
    mp = pytest.MonkeyPatch()
    parsed = []
    original = mathtext.MathTextParser.parse
    mp.setattr(mathtext.MathTextParser, "parse",
               lambda self, s, *a, **k: parsed.append(s) or original(self, s, *a, **k))
    pages, figures = {}, []
    try:
        for ch in chapters.CHAPTERS:
            notebook = nbformat.read(NOTEBOOKS / ch.notebook, as_version=4)
            namespace = {"study_path": str(built.study), "indicator": INDICATOR if ch.per_indicator else None,
                         "fast": True, "results_dir": str(root / "results")}
            for cell in notebook.cells:
                if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
                    continue
                capture = Captured()
                mp.setattr("IPython.display.display", capture.display)
                source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
                exec(compile(source, f"{ch.notebook}", "exec"), namespace)
                cell.outputs = capture.outputs
                figures += capture.figures
            nbformat.write(notebook, root / f"{ch.key}.ipynb")
            export_html(root / f"{ch.key}.ipynb", root / f"{ch.key}.html")
            pages[ch.key] = root / f"{ch.key}.html"
    finally:
        mp.undo()
    return {"pages": pages, "figures": figures, "parsed": parsed, "poor": poor, "study": built.study,
            "store": ResultsStore(root / "results")}


def test_every_section_ran(in_process):
    """The notebooks' cells reached every section builder of the chapters."""
    store = in_process["store"]
    for section in chapters.SECTIONS:
        indicator = None if section == "data_quality" else INDICATOR
        assert store.read(section, indicator) is not None, section
    assert store.read("summary.scorecard", None) is not None


def test_pages_show_payloads_as_typed(in_process):
    texts = {key: check_page(path) for key, path in in_process["pages"].items()}
    everything = "\n".join(texts.values())
    for payload in PAYLOADS:  # each payload reached a page, shown exactly as typed
        assert payload in everything, payload
    for key, text in texts.items():  # the title block of every chapter
        assert f"研究{SCRIPT}{MATH}" in text and f"Study {IMG} {TEMPLATE} {ENTITY} {QUOTES}" in text, key
    robustness = texts["robustness"]
    assert f"synthetic control of {in_process['poor']} (value): the pilot lies outside the donors' range" in robustness
    assert f"{MATH}镇" in robustness  # the synthetic-control table names the pilot
    quality = texts["data_quality"]
    for shown in (f"托管{IMG}", f"对口支援{MATH}{ENTITY}", f"{SCRIPT}{MATH}排除", f"{IMG}{ENTITY}{QUOTES}村"):
        assert shown in quality, shown  # models, the excluded and the incomplete township
    assert f"{IMG}{ENTITY}{QUOTES}村" in texts["trends"]  # the coverage note of an indicator's chapter


def test_html_builders_escape(in_process):
    """The HTML the chapters build from strings: title block, coverage note, notes, verdicts."""
    ctx = chapters.setup(in_process["study"], INDICATOR, fast=True, results_dir=in_process["store"].root)
    head = chapters.header(ctx, "章", "Chapter")
    assert head.startswith(f'<div class="{chapters.NO_MATH}">')
    for raw in (IMG, SCRIPT, ENTITY, QUOTES):
        assert raw not in head.replace(ENTITY + "amp;", "")
    assert "研究&lt;script&gt;alert(1)&lt;/script&gt;$\\frac{1}{0}$" in head
    assert "&lt;img src=x onerror=alert(1)&gt;&amp;amp;&#x27;&quot;村" in chapters.coverage_note(ctx)
    assert chapters.escaped_block("<p>x</p>") == f'<div class="{chapters.NO_MATH}"><p>x</p></div>'


def test_show_escapes_reasons_and_tables(in_process, tmp_path):
    """What :meth:`Context.show` displays: a "not estimated" reason quoting an id, a note
    and a table, through the batch's HTML export."""
    ctx = chapters.setup(in_process["study"], INDICATOR, fast=True, results_dir=in_process["store"].root)
    failed = make_result("its", INDICATOR, values={"not_estimable": f"EstimationError: township {IMG} {MATH}"})
    capture = Captured()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("IPython.display.display", capture.display)
        ctx.show(chapters.not_estimated(failed), (f"{SCRIPT}{ENTITY}", pd.DataFrame({"township_name": [MATH], "township_id": [IMG]})))
    assert len(capture.outputs) == 3
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", outputs=capture.outputs)])
    nbformat.write(notebook, tmp_path / "shown.ipynb")
    export_html(tmp_path / "shown.ipynb", tmp_path / "shown.html")
    text = check_page(tmp_path / "shown.html")
    assert f"its: EstimationError: township {IMG} {MATH}" in text and f"{SCRIPT}{ENTITY}" in text
    assert MATH in text and IMG in text


def test_figures_draw_payloads_literally(in_process):
    """No figure text is parsed as mathtext, and the synthetic-control panel of the pilot
    named ``$\\frac{1}{0}$镇`` is titled exactly so."""
    assert not [s for s in in_process["parsed"] if "frac" in s or "<" in s]
    drawn = []
    for fig in in_process["figures"]:
        for text in fig.findobj(Text):
            shown, ismath = text._preprocess_math(text.get_text())
            assert ismath is False, text.get_text()
            drawn.append(shown)
    for name in (f"{MATH}镇", f"{SCRIPT}{BAD_MATH}乡"):
        assert any(d.startswith(f"{name}\np ") for d in drawn), [d for d in drawn if "\np " in d]


def test_literal_figure_text():
    """plots.literal: a township named ``$x$ <b>`` drawn as typed, with no mathtext parse."""
    from matplotlib import mathtext

    name = r"$x$ <b>\$y</b> ^_{}"
    gaps = pd.DataFrame({"pilot": ["T1"] * 4, "township": ["T1", "T1", "D1", "D1"], "period": [0, 1, 0, 1],
                         "gap": [0.0, 1.0, 0.1, -0.1], "placebo": [False, False, True, True], "start": [1] * 4})
    indicator = type("Ind", (), {"name_zh": "$a$", "name_en": "$b$", "unit": "yuan"})()
    calls = []
    original = mathtext.MathTextParser.parse
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mathtext.MathTextParser, "parse", lambda self, s, *a, **k: calls.append(s) or original(self, s, *a, **k))
        fig = plots.synthetic_control_gaps(gaps, indicator, names={"T1": name}, p_values={"T1": 0.5})
        fig.canvas.draw()
    title = fig.axes[0].title
    assert title.get_text() == r"\$x\$ <b>\\$y</b> ^_{}" + "\np = 0.500"
    assert title._preprocess_math(title.get_text()) == (name + "\np = 0.500", False)
    assert fig._suptitle._preprocess_math(fig._suptitle.get_text())[0].endswith("$a$ / $b$")
    assert calls == []
    assert plots.literal("a$b") == r"a\$b" and plots.literal(3) == "3"


# ----------------------------------------------------------------------------- one batch

@pytest.mark.batch
def test_batch_pages_escape_payloads(tmp_path, monkeypatch):
    built, poor = payload_study(tmp_path / "study")
    monkeypatch.setenv("EVALUATION_OUTPUT_ROOT", str(tmp_path / "outputs"))
    assert main(["batch", str(built.study), "--fast", "--jobs", "2"]) == 0
    folder = tmp_path / "outputs" / "escape"
    pages = sorted(folder.glob("*.html"))
    assert {p.stem for p in pages} == {"index", "regression_table"} | {
        c.key if not c.per_indicator else f"{c.key}__{INDICATOR}" for c in chapters.CHAPTERS}
    texts = {p.stem: check_page(p, mathjax=p.stem not in ("index", "regression_table")) for p in pages}
    index = (folder / "index.html").read_text(encoding="utf-8").lower()
    assert "<script" not in index and "mathjax.js" not in index  # no MathJax is loaded (classes only tell it to skip)
    everything = "\n".join(texts.values())
    for payload in PAYLOADS:
        assert payload in everything, payload
    assert f"研究{SCRIPT}{MATH}" in texts["index"]
    assert f"synthetic control of {poor} (value): the pilot lies outside the donors' range" in texts[f"robustness__{INDICATOR}"]
