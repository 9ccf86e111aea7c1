"""Offline, light, printable pages (issue #14, item 7).

One small published report (24 townships, one indicator, the trends chapter,
``--fast``): no page and no stylesheet loads anything from the network, the chapter page
links the report folder's ``report.css`` (JupyterLab's CSS once per folder, with an A4
print stylesheet) instead of inlining it, its ``<title>`` names the chapter and the
indicator, and it is small.

Sizes measured on the demo study (``make report``'s 38 runs) with nbconvert 7's lab
template: ``trends__county_internal_visit_rate.html`` 395,250 bytes before (require.js,
MathJax and mermaid from a CDN, 263 KB of inlined JupyterLab CSS, figures as drawn),
48,437 after; the report's HTML 19,099,630 bytes before, 4,289,486 after (38 pages,
``index.html`` and the one 263,249-byte ``report.css``): 22 % of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from study_builders import small_demo, write_study

from evaluation.cli import main
from evaluation.report.batch import REPORT_CSS, compact_png, export_html

INDICATOR = "county_internal_visit_rate"
TRENDS = f"trends__{INDICATOR}"
# a URL that leaves the machine: http(s), protocol-relative, or any other scheme but data:
REMOTE = re.compile(r"^\s*(https?:|//|ftp:)", re.I)
CSS_REMOTE = re.compile(r"(url\(\s*['\"]?\s*(https?:|//))|@import|https?://", re.I)
COMMENT = re.compile(r"/\*.*?\*/", re.S)  # CSS comments (JupyterLab's cite their sources' URLs)
PAGE_LIMIT = 100_000  # bytes, the small study's trends page (measured: 49,878; about 400 KB before)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    built = write_study(root / "study", *small_demo()[:2])
    mp = pytest.MonkeyPatch()
    mp.setenv("EVALUATION_OUTPUT_ROOT", str(root / "outputs"))
    code = main(["batch", str(built.study), "--fast", "--jobs", "1", "--chapters", "trends"])
    mp.undo()
    assert code == 0
    (report,) = [p for p in (root / "outputs").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return report


def _remote_references(path: Path) -> list[str]:
    soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
    found = [f"<{tag.name} {attr}={tag[attr]}>" for tag in soup.find_all(True)
             for attr in ("src", "href") if tag.has_attr(attr) and REMOTE.match(tag[attr])]
    found += [m.group(0) for style in soup.find_all("style") for m in CSS_REMOTE.finditer(COMMENT.sub("", style.get_text()))]
    return found


@pytest.mark.batch
def test_no_page_or_stylesheet_loads_from_the_network(folder):
    pages = sorted(folder.rglob("*.html"))
    assert folder / f"{TRENDS}.html" in pages and folder / "index.html" in pages
    for page in pages:
        assert _remote_references(page) == [], page.name
        assert "<script src" not in page.read_text(encoding="utf-8"), page.name
    css = (folder / REPORT_CSS).read_text(encoding="utf-8")
    assert [m.group(0) for m in CSS_REMOTE.finditer(COMMENT.sub("", css))] == []
    assert "require.js" not in css and "mathjax" not in css.lower()


@pytest.mark.batch
def test_chapter_page_links_the_shared_css_with_an_a4_print_rule(folder):
    raw = (folder / f"{TRENDS}.html").read_text(encoding="utf-8")
    soup = BeautifulSoup(raw, "html.parser")
    assert [link["href"] for link in soup.find_all("link", rel="stylesheet")] == [REPORT_CSS]
    assert "--jp-layout-color0" not in raw  # JupyterLab's CSS is not inlined again
    css = (folder / REPORT_CSS).read_text(encoding="utf-8")
    assert "--jp-layout-color0" in css  # but it is in the folder's stylesheet
    assert re.search(r"@page\s*\{\s*size:\s*A4;\s*margin:\s*15mm;?\s*\}", css)
    assert re.search(r"table\s*\{\s*width:\s*100%;\s*table-layout:\s*auto;\s*font-size:\s*9pt;", css)
    assert "img { max-width: 100%" in css
    assert not list(folder.glob(".publishing-*"))


@pytest.mark.batch
def test_chapter_page_has_its_title_and_is_small(folder):
    page = folder / f"{TRENDS}.html"
    title = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser").title.get_text()
    assert title == "趋势 / Trends — 县域内就诊率"
    assert "Notebook" not in title
    assert page.stat().st_size < PAGE_LIMIT, page.stat().st_size


def test_export_without_a_batch_links_the_given_css(tmp_path):
    """A page exported on its own (a failed run's page under ``failed/``) links the CSS
    where it lies relative to the page and loads no script."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 章")])
    nbformat.write(nb, tmp_path / "page.ipynb")
    export_html(tmp_path / "page.ipynb", tmp_path / "page.html", title="章 / Chapter", css_href="../report.css")
    soup = BeautifulSoup((tmp_path / "page.html").read_text(encoding="utf-8"), "html.parser")
    assert soup.title.get_text() == "章 / Chapter"
    assert [link["href"] for link in soup.find_all("link")] == ["../report.css"]
    assert soup.find_all("script", src=True) == []
    assert _remote_references(tmp_path / "page.html") == []


def test_figures_are_embedded_with_a_palette_and_look_the_same():
    """:func:`compact_png` on a Matplotlib figure: same size in pixels, fewer bytes, and
    each pixel within a mean absolute difference of 2 of 255 per channel of the original."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=144)
    x = np.linspace(0, 10, 200)
    for k in range(4):
        ax.plot(x, np.sin(x + k), label=f"township {k}")
    ax.fill_between(x, -0.5, 0.5, alpha=0.2)
    ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    original = base64.b64encode(buffer.getvalue()).decode("ascii")
    compact = compact_png(original)
    before, after = (Image.open(io.BytesIO(base64.b64decode(s))).convert("RGB") for s in (original, compact))
    assert after.size == before.size
    assert len(compact) < 0.7 * len(original), (len(compact), len(original))
    difference = np.abs(np.asarray(before, dtype=float) - np.asarray(after, dtype=float)).mean()
    assert difference < 2.0, difference
