"""The publication baseline DiD table: values equal the store's, written by the Reader;
HTML escaped with three rules; LaTeX with booktabs rules and escaped specials."""

from __future__ import annotations

import re

import pytest

from evaluation.paths import DEMO_STUDY
from evaluation.report.readable import Reader
from evaluation.report.regression_table import THREE_LINE_CSS, RegressionTable, latex_escape, regression_table
from evaluation.report.store import ResultsStore
from evaluation.study.config import load_study

INDICATORS = ("county_internal_visit_rate", "referrals_down_per_1000", "cost_per_admission")


@pytest.fixture(scope="module")
def study():
    return load_study(DEMO_STUDY)


@pytest.fixture(scope="module")
def report(demo_batch):
    code, folder = demo_batch
    assert code == 0
    return folder


def bare(reader: Reader, value, indicator) -> str:
    """The Reader's effect without its unit suffix (the table's headers name the unit)."""
    text = reader.effect(value, indicator)
    for unit in ("pp", "元", "yuan"):
        text = text.removesuffix(f"\u00a0{unit}")
    return text


def column(table: RegressionTable, header: str) -> dict[str, list[str]]:
    frame = table.frame
    out: dict[str, list[str]] = {}
    for label, cell in zip(frame[table.stub], frame[header], strict=True):
        out.setdefault(label, []).append(cell)
    return out


@pytest.mark.parametrize("language", ["zh", "en"])
def test_values_equal_the_store_through_the_reader(report, study, language):
    reader = Reader(language)
    table = regression_table(report, study, language, indicators=list(INDICATORS))
    store = ResultsStore(report / "results")
    indicators = {i.id: i for i in study.selected_indicators()}
    assert len(table.headers) == len(INDICATORS)
    coefficient, pilots = reader.say("双重差分系数", "DiD coefficient"), reader.say("试点乡镇数", "Pilot townships")
    simple = reader.say("平均处理效应（总体）", "ATT (simple)")
    for header, indicator in zip(table.headers, INDICATORS, strict=True):
        ind = indicators[indicator]
        assert header.startswith(reader.name(ind)) and reader.unit(ind, change=True) in header
        cells = column(table, header)
        twfe = store.read("did.twfe", indicator).effect("att", section="twfe")
        cs = store.read("did.callaway_santanna", indicator).effect("att", section="simple")
        assert cells[coefficient] == [bare(reader, twfe["estimate"], ind)]
        assert cells[simple] == [bare(reader, cs["estimate"], ind)]
        assert cells[""] == [f"({bare(reader, twfe['std_error'], ind)})", f"({bare(reader, cs['std_error'], ind)})"]
        assert cells[reader.say("观测数", "Observations")] == [reader.count(twfe["n_obs"])]
        assert cells[pilots] == [reader.count(twfe["n_treated"])]
        assert cells[reader.say("乡镇固定效应", "Township fixed effects")] == [reader.flag(True)]
        if ind.unit == "share":  # percentage points
            assert cells[coefficient] == [f"{100 * twfe['estimate']:.2f}"]
    numbers = table.numbers.set_index(["indicator", "section"])
    share = store.read("did.twfe", INDICATORS[0]).effect("att", section="twfe")
    assert numbers.loc[(INDICATORS[0], "did.twfe"), "estimate"] == pytest.approx(100 * share["estimate"])


def test_stars_are_off_by_default_and_on_when_asked(report, study):
    plain = regression_table(report, study, "en", indicators=list(INDICATORS))
    assert not any("*" in c for c in plain.frame.to_numpy().ravel())
    assert "p < 0.1" not in plain.note
    starred = regression_table(report, study, "en", stars=True, indicators=list(INDICATORS))
    store = ResultsStore(report / "results")
    for header, indicator in zip(starred.headers, INDICATORS, strict=True):
        p = store.read("did.twfe", indicator).effect("att", section="twfe")["p_value"]
        stars = "***" if p < 0.01 else "**" if p < 0.05 else "*" if p < 0.1 else ""
        cell = column(starred, header)["DiD coefficient"][0]
        assert cell.endswith(stars) and not cell.removesuffix(stars).endswith("*")
    assert "* p < 0.1, ** p < 0.05, *** p < 0.01" in starred.note


def test_interval_instead_of_standard_error(report, study):
    reader = Reader("en")
    table = regression_table(report, study, "en", interval=True, callaway_santanna=False, indicators=list(INDICATORS))
    ind = {i.id: i for i in study.selected_indicators()}[INDICATORS[0]]
    twfe = ResultsStore(report / "results").read("did.twfe", INDICATORS[0]).effect("att", section="twfe")
    cells = column(table, table.headers[0])
    assert cells[""] == [reader.interval(twfe["ci_low"], twfe["ci_high"], lambda v: bare(reader, v, ind))]
    assert len(table.panels) == 1 and "95% confidence intervals" in table.note


def hostile(study):
    """The study with an indicator whose names hold LaTeX and HTML specials."""
    indicators = study.selected_indicators()
    odd = [i.model_copy(update={"name_en": "Visits_% & #1 <b>$x$</b> {y}", "name_zh": "就诊_% & #1 <b>"})
           if i.id == INDICATORS[0] else i for i in indicators]
    return type("Odd", (), {"selected_indicators": lambda self: odd, "report": study.report, "id": study.id})()


def braces_balanced(tex: str) -> bool:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += ch == "{"
        depth -= ch == "}"
        if depth < 0:
            return False
    return depth == 0


def test_latex_is_structurally_sound_and_escaped(report, study):
    table = regression_table(report, hostile(study), "en", indicators=list(INDICATORS))
    tex = table.to_latex(label="tab:did_1")
    assert braces_balanced(tex)
    assert [tex.count(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule")] == [1, 1, 1]
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert r"Visits\_\% \& \#1 \textless{}b\textgreater{}\$x\$\textless{}/b\textgreater{} \{y\}" in tex
    assert not re.search(r"(?<!\\)[%#$_]", tex.replace(r"\label{tab:did\_1}", ""))
    n = len(table.headers)
    body = tex[tex.index(r"\toprule"):tex.index(r"\bottomrule")]
    for line in body.splitlines():
        if line.endswith(r"\\") and r"\multicolumn" not in line:
            assert len(re.findall(r"(?<!\\)&", line)) == n, line
    assert r"\label{tab:did\_1}" in tex and r"\begin{tabular}{@{}l" + "c" * n + "@{}}" in tex


def test_latex_escape_of_a_small_synthetic_table():
    table = RegressionTable(caption="50% of A_B", stub="", headers=["x_1 (%)", "乡镇_二 & 三"],
                            panels=[(None, [("镇_1 100%", ["1.0", "—"])])], note="Note: #1 $")
    tex = table.to_latex()
    assert r"x\_1 (\%) & 乡镇\_二 \& 三" in tex and r"镇\_1 100\% & 1.0 & --- \\" in tex
    assert r"\caption{50\% of A\_B}" in tex and r"Note: \#1 \$" in tex
    assert braces_balanced(tex)
    assert latex_escape("a\\b~^") == r"a\textbackslash{}b\textasciitilde{}\textasciicircum{}"


def test_html_three_line_table_escapes_every_string(report, study):
    table = regression_table(report, hostile(study), "zh", indicators=list(INDICATORS))
    page = table.to_html()
    assert '<table class="three-line">' in page
    assert "<b>" not in page and "&lt;b&gt;" in page
    assert page.count("<tr>") + page.count('<tr class="panel">') == len(table.frame) + 1
    # rules: top and bottom of the table, below the header; no vertical or row rules
    assert "border-top:2px solid" in THREE_LINE_CSS and "border-bottom:2px solid" in THREE_LINE_CSS
    assert "border-left" not in THREE_LINE_CSS and "border-right" not in THREE_LINE_CSS
    assert "<style>" not in table.to_html(style=False)
