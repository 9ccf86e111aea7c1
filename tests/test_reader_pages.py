"""What readers see on the pages (issue #14, items 4-6).

* Every HTML page of the demo report (the session's ``demo_batch``: a share, a per-1,000
  rate and a money indicator, every chapter) shows no scientific notation, no Python or
  pandas literal (``True``, ``False``, ``None``, ``NaN``), no ``dtype:`` and loads nothing
  from the network.
* The language switch: a small study's whole report built with ``report.language: zh``
  has no English word in a heading, table header or title (method names such as
  Callaway–Sant'Anna excepted); built with ``en`` it has no Chinese character anywhere on
  its pages but in the names the data give (townships, counties, integration models).
* The headline: the index's scorecard row shows one method's estimate, interval and
  p-value, equal to the stored result of that method.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from bs4 import BeautifulSoup
from study_builders import small_demo, write_study

from evaluation.cli import main
from evaluation.report.readable import Reader
from evaluation.report.store import ResultsStore

RAW = {
    "scientific notation": re.compile(r"\b\d+(?:\.\d+)?[eE][+-]?\d+\b"),
    "Python or pandas literal": re.compile(r"\b(True|False|None|NaN|nan|NaT)\b|<NA>"),
    "pandas dtype": re.compile(r"dtype:"),
}
REMOTE = re.compile(r"^\s*(https?:|//|ftp:)", re.I)
CJK = re.compile(r"[\u3400-\u9fff\uff08\uff09\u3001\u3002\uff0c\uff1a\uff1b]+")
# English words a Chinese page may keep: names of methods, statistics and authors.
KEPT_WORDS = {"Callaway", "Sant", "Anna", "ATT", "DiD", "TWFE", "RMSPE", "Goodman", "Bacon", "Mbar", "Durbin",
              "Watson", "Ljung", "Box", "ARIMA", "CR1", "CR2", "Newey", "West", "PPML", "Rambachan", "Roth",
              "Abadie", "Arkhangelsky", "SYNTHETIC", "DEMO", "DATA", "Sun", "Abraham", "Wooldridge", "Borusyak",
              "Jaravel", "Spiess", "BJS", "Romano", "Wolf", "Holm", "BH", "Benjamini", "Hochberg"}


def _visible_text(page: Path) -> str:
    soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    for tag in soup(["style", "script"]):
        tag.decompose()
    return soup.get_text(" ")


def _pages(folder: Path) -> list[Path]:
    pages = sorted(folder.glob("*.html"))
    assert folder / "index.html" in pages and len(pages) > 5
    return pages


@pytest.mark.batch
def test_no_page_shows_raw_values(demo_batch):
    code, folder = demo_batch
    assert code == 0
    found = []
    for page in _pages(folder):
        text = _visible_text(page)
        for what, pattern in RAW.items():
            found += [f"{page.name}: {what}: ...{text[max(0, m.start() - 40):m.end() + 40]!r}"
                      for m in pattern.finditer(text)]
    assert found == []


@pytest.mark.batch
def test_no_page_loads_from_the_network(demo_batch):
    _, folder = demo_batch
    for page in _pages(folder):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        remote = [f"<{t.name} {a}={t[a]}>" for t in soup.find_all(True) for a in ("src", "href")
                  if t.has_attr(a) and REMOTE.match(t[a])]
        assert remote == [], page.name


@pytest.mark.batch
def test_headline_is_one_method_and_the_index_shows_it(demo_batch):
    """The demo has 10 pilot townships (< few_pilots = 15): each headline is the TWFE
    coefficient with its randomization-inference p-value and the interval inverting the
    same test, exactly as stored; the index shows it written for readers."""
    _, folder = demo_batch
    store = ResultsStore(folder / "results")
    card = store.read("summary.scorecard", None)
    index = _visible_text(folder / "index.html")
    reader = Reader("both")
    for row in card.tables["scorecard"].to_dict("records"):
        ri = store.read("robustness.randomization", row["indicator"]).effects.iloc[0]
        assert row["headline_method"] == "twfe_randomization"
        for key, column in (("headline_att", "estimate"), ("headline_ci_low", "ci_low"),
                            ("headline_ci_high", "ci_high"), ("headline_p", "p_value"), ("headline_p_floor", "p_floor")):
            assert row[key] == ri[column], (row["indicator"], key)
        significant = row["headline_p"] <= 0.05 and (row["headline_ci_low"] > 0 or row["headline_ci_high"] < 0)
        assert row["improved"] or row["worsened"] or not significant
        indicator = type("I", (), {"unit": row["unit"], "frequency": "month"})()
        assert reader.effect(row["headline_att"], indicator) in index
        assert reader.p(row["headline_p"], row["headline_p_floor"]) in index
    conclusion = card.values["conclusion_zh"]
    assert conclusion.startswith("本评估比较了10个试点乡镇") and conclusion in index


@pytest.fixture(scope="module", params=["zh", "en"])
def language_report(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"language-{request.param}")
    panel, pilots = small_demo()[:2]
    built = write_study(root / "study", panel, pilots, extra={"report": {"language": request.param}})
    mp = pytest.MonkeyPatch()
    mp.setenv("EVALUATION_OUTPUT_ROOT", str(root / "outputs"))
    try:
        code = main(["batch", str(built.study), "--fast", "--jobs", "2"])
    finally:
        mp.undo()
    assert code == 0
    # the names the data give: townships, counties, models, and the export's own column headers
    study = yaml.safe_load(built.study.read_text(encoding="utf-8"))
    names = (set(panel["township_name"]) | set(panel["county"]) | set(pilots["model"].astype(str))
             | set(study["data"]["columns"]))
    return request.param, root / "outputs" / "messy", names


@pytest.mark.batch
def test_language_switch(language_report):
    language, folder, names = language_report
    problems = []
    for page in _pages(folder):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        for tag in soup(["style", "script"]):
            tag.decompose()
        if language == "zh":
            texts = [t.get_text(" ") for t in soup.find_all(["title", "h1", "h2", "h3", "h4", "th"])]
            for text in texts:
                words = set(re.findall(r"[A-Za-z][A-Za-z0-9]{2,}", text)) - KEPT_WORDS
                if words:
                    problems.append(f"{page.name}: {sorted(words)} in {text!r}")
        else:
            text = soup.get_text(" ")
            for name in sorted(names, key=len, reverse=True):
                text = text.replace(str(name), "")
            problems += [f"{page.name}: {m.group(0)!r} in ...{text[max(0, m.start() - 40):m.end() + 40]!r}"
                         for m in CJK.finditer(text)]
    assert problems == []


@pytest.mark.batch
def test_language_switch_reaches_the_scorecard_table(language_report):
    language, folder, _ = language_report
    soup = BeautifulSoup((folder / "index.html").read_text(encoding="utf-8"), "html.parser")
    headers = [th.get_text() for th in soup.find("table").find_all("th")]
    expected = {"zh": ["指标", "效果"], "en": ["Indicator", "Effect"]}[language]
    assert headers[:2] == expected
    assert soup.find("html")["lang"] == ("en" if language == "en" else "zh-CN")
    assert pd.notna(ResultsStore(folder / "results").read("summary.scorecard", None).values["conclusion_en"])
