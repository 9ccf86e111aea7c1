"""The Word report (report.docx) of the session's demo batch, opened with python-docx:
its headings, the scorecard's numbers against the results store, figures, the data
appendix's SHA-256 values, the page and fonts, and the language switch."""

from __future__ import annotations

import json
import os
import re
import stat

import pandas as pd
import pytest
from docx import Document
from docx.oxml.ns import qn
from docx.shared import Cm
from docx.table import Table

from evaluation.errors import EvaluationInputError, UsageError
from evaluation.paths import DEMO_STUDY
from evaluation.report.readable import Reader
from evaluation.report.scorecard import finding, overall_conclusion
from evaluation.report.store import ResultsStore
from evaluation.report.word import METHOD_SHORT, new_document, three_line_table, write_word_report
from evaluation.study.config import load_study
from evaluation.study.plan import Settings

CJK = re.compile(r"[\u4e00-\u9fff]")
HEADINGS = ("Title", "Subtitle", "Heading 1", "Heading 2", "Heading 3")


@pytest.fixture(scope="module")
def word(demo_batch, tmp_path_factory):
    """(report folder, study, {language: path}) with the default path for the study's language."""
    code, folder = demo_batch
    assert code == 0
    study = load_study(DEMO_STUDY)
    out = tmp_path_factory.mktemp("word")
    paths = {"both": write_word_report(folder, study)}
    paths |= {lang: write_word_report(folder, study, language=lang, path=out / f"report-{lang}.docx")
              for lang in ("zh", "en")}
    return folder, study, paths


@pytest.fixture(scope="module")
def store_card(word):
    folder, study, _ = word
    result = ResultsStore(folder / "results").read("summary.scorecard", None)
    settings = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in result.settings.items()})
    return result.tables["scorecard"].set_index("indicator"), settings


def shown_indicators(word):
    folder, study, _ = word
    card = ResultsStore(folder / "results").read("summary.scorecard", None).tables["scorecard"]
    return [ind for ind in study.selected_indicators() if ind.id in set(card["indicator"])]


def headings(document, styles=HEADINGS) -> list[tuple[str, str]]:
    return [(p.style.name, p.text) for p in document.paragraphs if p.style.name in styles]


def split(blocks, style: str) -> dict[str, list]:
    """Blocks (paragraphs and tables, in order) split at each paragraph of ``style``
    (what comes before the first under "")."""
    parts, current = {"": []}, ""
    for block in blocks:
        if not isinstance(block, Table) and block.style.name == style:
            current = block.text
            parts[current] = []
        else:
            parts[current].append(block)
    return parts


def chapters(document) -> dict[str, list]:
    """The document's body split at each Heading 1 (the cover under "")."""
    return split(document.iter_inner_content(), "Heading 1")


def table_text(table: Table) -> list[list[str]]:
    return [[cell.text for cell in row.cells] for row in table.rows]


def test_written_to_the_report_folder_atomically(word):
    folder, _, paths = word
    assert paths["both"] == folder / "report.docx" and paths["both"].is_file()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".report.docx")]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(paths["both"].stat().st_mode) == 0o666 & ~mask  # readable like any file written here


def test_headings_cover_conclusion_indicators_appendices(word, store_card):
    folder, study, paths = word
    document = Document(paths["both"])
    found = headings(document)
    assert found[:2] == [("Title", study.title.zh), ("Subtitle", study.title.en)]
    assert [text for style, text in found if style == "Heading 1"] == [
        "总体结论 / Overall conclusion", "评估结果汇总 / Scorecard", "各指标结果 / Results by indicator",
        "附录一  方法 / Appendix A  Methods", "附录二  数据 / Appendix B  Data"]
    names = [f"{ind.name_zh} / {ind.name_en}" for ind in shown_indicators(word)]
    assert [text for style, text in found if style == "Heading 2" and text in names] == names  # study order
    body = [p.text for p in document.paragraphs]
    assert "合成演示数据，非真实乡镇\nSYNTHETIC DEMO DATA — not real townships" in body
    card, settings = store_card
    zh, en = overall_conclusion(card.reset_index(), settings)
    conclusion = chapters(document)["总体结论 / Overall conclusion"]
    assert [p.text for p in conclusion] == [zh, en]


def test_scorecard_is_a_three_line_table_of_the_stores_numbers(word, store_card):
    folder, study, paths = word
    card, _ = store_card
    reader = Reader("both")
    document = Document(paths["both"])
    table = next(block for block in chapters(document)["评估结果汇总 / Scorecard"] if isinstance(block, Table))
    rows = table_text(table)
    header, body = rows[0], rows[1:]
    assert header == ["指标\nIndicator", "效果\nEffect", "95% 置信区间\n95% CI", "p 值\np-value",
                      "校正 p 值\nAdjusted p", "方法\nMethod", "试点数\nPilots", "试点目标达成\nPilot target",
                      "结论\nVerdict"]
    indicators = shown_indicators(word)
    assert len(body) == len(indicators)
    for cells, ind in zip(body, indicators, strict=True):
        row = card.loc[ind.id]
        name_zh, name_en = cells[0].split("\n")
        assert name_zh.startswith(ind.name_zh) and name_en.startswith(ind.name_en)
        assert cells[1] == reader.effect(row["headline_att"], ind)
        assert cells[2] == reader.interval(row["headline_ci_low"], row["headline_ci_high"],
                                           lambda v, i=ind: reader.effect(v, i))
        assert cells[3] == reader.p(row["headline_p"], row["headline_p_floor"])
        assert cells.pop(4) == reader.p(row["p_romano_wolf"], row["p_romano_wolf_floor"])  # the plan's adjustment
        assert cells[4] == reader.say(*METHOD_SHORT[row["headline_method"]], sep="\n")
        assert cells[5] == reader.count(row["n_pilots"])
        zh, en = finding(row.to_dict())
        assert cells[6] == reader.say(Reader("zh").attainment(row["pilot_meets_target"], pd.notna(row["target"])),
                                      Reader("en").attainment(row["pilot_meets_target"], pd.notna(row["target"])),
                                      sep="\n")
        assert cells[7] == reader.say(zh, en[:1].upper() + en[1:], sep="\n")
    assert table.style.name == "Three Line Table"
    first, last = table.rows[0].cells[0]._tc, table.rows[-1].cells[0]._tc
    top = first.tcPr.find(qn("w:tcBorders"))
    assert {child.tag for child in top} == {qn("w:top"), qn("w:bottom")}  # no vertical lines
    assert {child.tag for child in last.tcPr.find(qn("w:tcBorders"))} == {qn("w:bottom")}
    captions = [p.text for p in document.paragraphs if p.style.name == "Caption"]
    assert captions[0].startswith("表 1 / Table 1")


def test_each_indicator_has_its_figures_verdict_and_robustness(word, store_card):
    folder, study, paths = word
    card, _ = store_card
    reader = Reader("both")
    document = Document(paths["both"])
    sections = split(chapters(document)["各指标结果 / Results by indicator"], "Heading 2")
    store = ResultsStore(folder / "results")
    assert list(sections)[1:] == [f"{ind.name_zh} / {ind.name_en}" for ind in shown_indicators(word)]
    for ind in shown_indicators(word):
        blocks = sections[f"{ind.name_zh} / {ind.name_en}"]
        paragraphs = [b for b in blocks if not isinstance(b, Table)]
        images = sum(len(p._p.xpath(".//w:drawing")) for p in paragraphs)
        assert images >= 2, f"{ind.id}: {images} figures"
        texts = [p.text for p in paragraphs]
        row = card.loc[ind.id]
        assert row["verdict_zh"] in texts and row["verdict_en"] in texts
        robustness = [table_text(b) for b in blocks if isinstance(b, Table)]
        assert len(robustness) == 1
        sdid = store.read("robustness.synthetic_did", ind.id).effects
        overall = sdid[(sdid["estimand"] == "att") & sdid["cohort"].isna()].iloc[0]
        sdid_row = next(r for r in robustness[0] if r[0] == "合成双重差分\nSynthetic DiD")
        assert sdid_row[1:] == [reader.effect(overall["estimate"], ind),
                                reader.interval(overall["ci_low"], overall["ci_high"],
                                                lambda v, i=ind: reader.effect(v, i)),
                                reader.p(overall["p_value"], overall["p_floor"])]
    shapes = document.inline_shapes
    assert len(shapes) >= 2 * len(shown_indicators(word))
    assert all(abs(shape.width - Cm(16)) < Cm(0.01) for shape in shapes)
    figure_captions = [p.text for p in document.paragraphs if p.style.name == "Caption" and p.text.startswith("图")]
    assert [c.split("  ")[0] for c in figure_captions] == [f"图 {n} / Figure {n}" for n in range(1, len(shapes) + 1)]


def test_data_appendix_holds_every_data_files_sha256(word):
    folder, _, paths = word
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    appendix = chapters(Document(paths["both"]))["附录二  数据 / Appendix B  Data"]
    cells = [text for b in appendix if isinstance(b, Table) for row in table_text(b) for text in row]
    assert manifest["data_files_sha256"]
    for role, sha in manifest["data_files_sha256"].items():
        assert sha in cells, role
        assert [c for c in cells if c.endswith("\n" + manifest["data_files"][role])]


def test_a4_page_and_east_asian_fonts(word):
    document = Document(word[2]["both"])
    def cm(length) -> float:
        return round(length.cm, 2)  # Word keeps lengths in twips

    for section in document.sections:
        assert (cm(section.page_width), cm(section.page_height)) == (21.0, 29.7)
        assert {cm(m) for m in (section.left_margin, section.right_margin, section.top_margin,
                                section.bottom_margin)} == {2.5}
    fonts = document.styles["Normal"].element.rPr.rFonts
    assert fonts.get(qn("w:eastAsia")) == "宋体" and fonts.get(qn("w:ascii")) == "Times New Roman"
    assert document.styles["Heading 1"].element.rPr.rFonts.get(qn("w:eastAsia")) == "黑体"


def test_english_report_has_no_chinese_headings_or_headers(word):
    document = Document(word[2]["en"])
    found = headings(document) + [("Caption", p.text) for p in document.paragraphs if p.style.name == "Caption"]
    assert found and not [text for _, text in found if CJK.search(text)]
    headers = [cell.text for table in document.tables for cell in table.rows[0].cells]
    assert headers and not [h for h in headers if CJK.search(h)]
    assert "SYNTHETIC DEMO DATA — not real townships" in [p.text for p in document.paragraphs]


def test_chinese_report_has_no_english_headings(word):
    document = Document(word[2]["zh"])
    found = headings(document)
    assert found and not [text for _, text in found if re.search(r"[A-Za-z]", text)]
    headers = [cell.text for table in document.tables for cell in table.rows[0].cells]
    words = {w for h in headers for w in re.findall(r"[A-Za-z]{2,}", h)}
    assert words <= {"SHA"}, words  # "p 值" and "SHA-256" are notation
    assert "合成演示数据，非真实乡镇" in [p.text for p in document.paragraphs]


def test_a_folder_without_a_manifest_is_refused_naming_it(tmp_path):
    study = load_study(DEMO_STUDY)
    with pytest.raises(EvaluationInputError, match="manifest.json"):
        write_word_report(tmp_path, study)
    assert not (tmp_path / "report.docx").exists()


def test_three_line_table_takes_text_only_and_numbers_its_captions():
    document = new_document("en")
    frame = pd.DataFrame({"Term": ["ATT"], "Estimate": ["2.92 pp"]}, dtype=object)
    first = three_line_table(document, frame, "Baseline", notes="Note: clustered by township.", language="en")
    second = three_line_table(document, frame.iloc[:0], "Empty", language="en")  # a header alone: both rules
    captions = [p.text for p in document.paragraphs if p.style.name == "Caption"]
    assert captions == ["Table 1  Baseline", "Table 2  Empty"]
    assert table_text(first) == [["Term", "Estimate"], ["ATT", "2.92 pp"]]
    header = second.rows[0].cells[0]._tc.tcPr.find(qn("w:tcBorders"))
    assert {child.tag: child.get(qn("w:sz")) for child in header} == {qn("w:top"): "12", qn("w:bottom"): "12"}
    with pytest.raises(TypeError, match="not text"):
        three_line_table(document, pd.DataFrame({"Estimate": [0.0292]}), "Raw")
    with pytest.raises(UsageError, match="language"):
        write_word_report(DEMO_STUDY.parent, load_study(DEMO_STUDY), language="fr")


def test_selection_section_for_a_study_with_covariates(word):
    document = Document(word[2]["zh"])
    assert ("选择偏差：平衡性、匹配与异质性" in [text for _, text in headings(document)])
    captions = [p.text for p in document.paragraphs if p.style.name == "Caption"]
    assert any("协变量平衡性" in c for c in captions) and any("未调整、协变量调整与匹配后的总体效果" in c for c in captions)
    assert any("异质性分析" in c for c in captions)
    balance = next(t for t in document.tables if t.rows[0].cells[0].text == "协变量")
    assert [r.cells[0].text for r in balance.rows[1:]] == ["到县城距离（公里）", "床位数", "是否山区"]
