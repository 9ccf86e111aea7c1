"""The Word report (``report.docx``): what a health commission signs and a journal reads.

:func:`write_word_report` reads a published report folder (its results store and
``manifest.json``; nothing is estimated here) and writes one ``.docx`` with python-docx:

1. a cover: the study's title, period, frequency, units, the date, and for a synthetic
   study a red banner saying the data are not real townships;
2. 总体结论 / overall conclusion: one paragraph (:func:`evaluation.report.scorecard.overall_conclusion`);
3. the scorecard as a 三线表 (three-line table): one row per indicator with its headline
   method's effect, interval and p-value, the pilots, target attainment and the verdict;
4. one section per indicator: the headline, the trends and Callaway–Sant'Anna event-study
   figures, the verdict, and a table of robustness checks with the sensitivity breakdowns;
5. a methods appendix (design, estimators, inference, assumptions, sensitivity, references);
6. a data appendix (data files with their SHA-256, townships, pilots by cohort and model,
   what was excluded and why, the software).

Every number passes through :class:`evaluation.report.readable.Reader`, in the report's
language (``zh``, ``en``, or ``both``: Chinese, then English). The document uses Word's
own styles (Title, Heading 1-3, Caption, a "Three Line Table" table style), an A4 page with
2.5 cm margins, Times New Roman / 宋体 for the body and Arial / 黑体 for headings (the
East Asian font is set on each style's ``rFonts``: python-docx has no property for it),
page numbers in the footer, and numbered captions (表 n / Table n, 图 n / Figure n).

python-docx has no API for cell borders or fields, so two small pieces of WordprocessingML
are written through its ``oxml`` helpers: the three rules of a three-line table (cell
borders) and the footer's PAGE field.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from pathlib import Path

import pandas as pd
from docx import Document
from docx.enum.section import WD_ORIENT
from docx.enum.style import WD_STYLE_TYPE
from docx.enum.table import WD_TABLE_ALIGNMENT
from docx.enum.text import WD_ALIGN_PARAGRAPH, WD_BREAK
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Cm, Pt, RGBColor
from matplotlib.figure import Figure

from evaluation.errors import EvaluationInputError, UsageError
from evaluation.report import plots
from evaluation.report.readable import DASH, LANGUAGES, Reader, is_missing
from evaluation.report.scorecard import ADJUSTED, adjustment_note, finding, overall_conclusion
from evaluation.report.store import Result, ResultsStore, write_file
from evaluation.study.config import Study
from evaluation.study.periods import FREQUENCIES
from evaluation.study.plan import Settings

REPORT_NAME = "report.docx"

# Page and type
PAGE_WIDTH, PAGE_HEIGHT, MARGIN = Cm(21), Cm(29.7), Cm(2.5)
TEXT_WIDTH_CM = 21 - 2 * 2.5
SHORT, NUMBER = 12, 24  # characters of a cell's text (a number) that should not wrap when there is room (ever)
TABLE_POINTS = 8.5
FIGURE_WIDTH = Cm(16)
FIGURE_SIZE = (6.3, 2.9)  # inches: 16 cm wide, so the figure's type prints at its own size
FIGURE_DPI = 200
BODY_LATIN, BODY_EAST_ASIAN = "Times New Roman", "宋体"
HEADING_LATIN, HEADING_EAST_ASIAN = "Arial", "黑体"
TABLE_STYLE, TABLE_TEXT_STYLE, NOTE_STYLE = "Three Line Table", "Table Text", "Table Note"
RULE_HEAVY, RULE_LIGHT = 12, 6  # border widths in eighths of a point: 1.5 pt and 0.75 pt
SYNTHETIC_RED = RGBColor(0xC0, 0x00, 0x00)

RATE_ZH, RATE_EN = re.compile(r"(每.+?常住人口)(每.+)"), re.compile(r"(per .+? residents) (per .+)")  # rate units
IDEOGRAPH = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")  # a line may break after any of these
WIDE = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef]")  # CJK characters and full-width forms

PERIOD_WORDS = {"month": ("月度", "monthly"), "quarter": ("季度", "quarterly"), "year": ("年度", "annual")}
PERIOD_UNITS = {"month": ("个月", "months"), "quarter": ("个季度", "quarters"), "year": ("年", "years")}
COMPARISON_WORDS = {"never_treated": ("从未试点的乡镇", "never-treated townships"),
                    "not_yet_treated": ("尚未试点的乡镇", "not-yet-treated townships")}
CLUSTER_WORDS = {"township_id": ("乡镇", "township"), "county": ("县区", "county")}

# Short names of the headline methods (scorecard.HEADLINE_LABELS) for the scorecard's column (zh, en).
REGRESSION_COLUMNS = 4  # at most this many indicators per regression table on an A4 page

METHOD_SHORT = {"callaway_santanna": ("Callaway–Sant'Anna", "Callaway–Sant'Anna"),
                "twfe_randomization": ("TWFE，随机化推断", "TWFE, RI")}

# The scorecard's columns: header (zh, en).
SCORECARD_COLUMNS = {
    "indicator": ("指标", "Indicator"),
    "effect": ("效果", "Effect"),
    "interval": ("{level} 置信区间", "{level} CI"),
    "p": ("p 值", "p-value"),
    "adjusted": ("校正 p 值", "Adjusted p"),
    "method": ("方法", "Method"),
    "pilots": ("试点数", "Pilots"),
    "target": ("试点目标达成", "Pilot target"),
    "verdict": ("结论", "Verdict"),
}

# The robustness table's columns, and its rows by the checks' estimand (and term): (zh, en).
ROBUSTNESS_COLUMNS = {"check": ("检验", "Check"), "estimate": ("估计值", "Estimate"),
                      "interval": ("{level} 置信区间", "{level} CI"), "p": ("p 值", "p-value")}
CHECK_LABELS = {
    ("att", "never-treated"): ("对照：从未试点的乡镇", "Comparison: never-treated townships"),
    ("att", "not-yet-treated"): ("对照：尚未试点的乡镇", "Comparison: not-yet-treated townships"),
    "att_excluding_periods": ("剔除新冠疫情期", "COVID-19 periods dropped"),
}


# ============================================================================ public API

def write_word_report(folder: Path, study: Study, language: str | None = None, path: Path | None = None) -> Path:
    """Write the Word report of the published report ``folder`` (its ``results/`` store and
    ``manifest.json``) to ``folder / "report.docx"`` (or ``path``), atomically; returns the path.

    ``language`` (``zh``, ``en`` or ``both``) defaults to the study's ``report.language``.
    Raises :class:`EvaluationInputError` naming the file when the folder lacks the
    manifest, the scorecard or an indicator's result the report shows.
    """
    folder = Path(folder)
    language = language or study.report.language
    if language not in LANGUAGES:
        raise UsageError(f"the Word report's language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    reader = Reader(language)
    source = _Source.open(folder, study)
    plots.setup_style()
    document = new_document(language)
    with tempfile.TemporaryDirectory(prefix="word-figures-") as figures:
        _Writer(document, reader, source, Path(figures)).write()
        target = write_file(Path(path) if path is not None else folder / REPORT_NAME, document.save)
    return target


def three_line_table(document, frame: pd.DataFrame, caption: str, notes: str | list[str] | None = None,
                     language: str = "both"):
    """Add ``frame`` (a DataFrame of strings; its columns are the headers) to ``document``
    as a three-line table (三线表): a heavy rule above the header, a light rule under it, a
    heavy rule under the last row, no vertical lines; rows kept on one page where they fit.
    Above it the caption, numbered "表 n / Table n" by its place among the document's tables
    (``language`` picks the word); below it the ``notes`` in small type. A line break in a
    cell (``"\\n"``) starts a new line. The document needs the styles of :func:`new_document`.
    Returns the python-docx table.

    Every cell must already be text written for readers (:class:`Reader`): a number is a
    ``TypeError``, so nothing reaches a table unformatted."""
    if not len(frame.columns):
        raise ValueError(f"three_line_table: the table '{caption}' has no columns")
    raw = [(column, type(v).__name__) for column in frame.columns for v in frame[column] if not isinstance(v, str)]
    raw += [(column, type(column).__name__) for column in frame.columns if not isinstance(column, str)]
    if raw:
        raise TypeError(f"three_line_table: the table '{caption}' holds values that are not text (column, type): "
                        f"{raw[:5]}; write them with evaluation.report.readable.Reader first")
    reader = Reader(language)
    number = len(document.tables) + 1
    label = reader.say(f"表 {number}", f"Table {number}")
    document.add_paragraph(f"{label}  {caption}", style="Caption").paragraph_format.keep_with_next = True
    rows = [list(frame.columns)] + [list(row) for row in frame.itertuples(index=False)]
    table = document.add_table(rows=len(rows), cols=len(frame.columns))
    table.style = document.styles[TABLE_STYLE]
    table.alignment = WD_TABLE_ALIGNMENT.CENTER
    table.autofit = False
    widths = _column_widths(rows)
    for j, width in enumerate(widths):
        table.columns[j].width = width
    for i, (values, row) in enumerate(zip(rows, table.rows, strict=True)):
        cells = row.cells  # once per row: table.cell(i, j) walks the whole grid on every call
        for j, text in enumerate(values):
            cell = cells[j]
            cell.width = widths[j]
            paragraph = cell.paragraphs[0]
            paragraph.style = document.styles[TABLE_TEXT_STYLE]
            paragraph.alignment = WD_ALIGN_PARAGRAPH.LEFT if j == 0 else WD_ALIGN_PARAGRAPH.CENTER
            run = paragraph.add_run(text)
            run.bold = i == 0
            paragraph.paragraph_format.keep_with_next = i < len(rows) - 1
            _cell_rules(cell, top=RULE_HEAVY if i == 0 else None,
                        bottom=RULE_HEAVY if i == len(rows) - 1 else RULE_LIGHT if i == 0 else None)
    for i, row in enumerate(table.rows):  # a row never splits across pages; the header repeats on each
        properties = row._tr.get_or_add_trPr()
        properties.append(OxmlElement("w:cantSplit"))
        if i == 0:
            properties.append(OxmlElement("w:tblHeader"))
    for note in [notes] if isinstance(notes, str) else list(notes or []):
        document.add_paragraph(note, style=NOTE_STYLE)
    if not notes:
        document.add_paragraph(style=NOTE_STYLE)  # space after the table
    return table


# ============================================================================ reading the report folder

class _Source:
    """What the report reads: the study, the results store, the manifest, the scorecard and
    the resolved analysis plan it was made with."""

    def __init__(self, folder: Path, study, store: ResultsStore, manifest: dict, card: pd.DataFrame,
                 settings: Settings, data_quality: Result):
        self.folder, self.study, self.store, self.manifest = folder, study, store, manifest
        self.card, self.settings, self.data_quality = card, settings, data_quality
        by_id = {ind.id: ind for ind in study.selected_indicators()}
        unknown = [i for i in card["indicator"] if i not in by_id]
        if unknown:
            raise EvaluationInputError(f"{self.path_of('summary.scorecard')}: indicators {unknown} are not among the "
                                       f"study's ({study.id}) indicators: the report folder belongs to another study")
        shown = set(card["indicator"])
        self.indicators = [ind for ind in study.selected_indicators() if ind.id in shown]  # study order
        self.rows = {row["indicator"]: row for row in card.to_dict("records")}

    @classmethod
    def open(cls, folder: Path, study) -> _Source:
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise EvaluationInputError(f"{manifest_path}: no manifest: {folder} is not a published report folder "
                                       "(run `evaluation batch` first)")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        store = ResultsStore(folder / "results")
        summary = store.read("summary.scorecard", None)
        if summary is None or "scorecard" not in summary.tables:
            raise EvaluationInputError(f"{store.folder('summary.scorecard', None)}: no stored scorecard: run the "
                                       "summary chapter (`evaluation batch`) first")
        data_quality = store.read("data_quality", None)
        if data_quality is None:
            raise EvaluationInputError(f"{store.folder('data_quality', None)}: no stored data-quality result: run "
                                       "the data_quality chapter (`evaluation batch`) first")
        return cls(folder, study, store, manifest, summary.tables["scorecard"],
                   _settings(summary, store.folder("summary.scorecard", None) / "result.json"), data_quality)

    def path_of(self, section: str, indicator: str | None = None) -> Path:
        return self.store.folder(section, indicator) / "result.json"

    def result(self, section: str, indicator: str) -> Result:
        result = self.store.read(section, indicator)
        if result is None:
            raise EvaluationInputError(f"{self.path_of(section, indicator)}: missing: the Word report needs the "
                                       f"'{section}' result of '{indicator}' (run its chapter)")
        return result

    def optional(self, section: str, indicator: str) -> Result | None:
        """A result the indicator's chapters make (robustness): ``None`` when its chapter
        did not run for this indicator (the summary stores only what the scorecard needs)."""
        return self.store.read(section, indicator)

    def quality_table(self, name: str) -> pd.DataFrame:
        if name not in self.data_quality.tables:
            raise EvaluationInputError(f"{self.path_of('data_quality')}: the data-quality result has no table "
                                       f"'{name}' (it has {sorted(self.data_quality.tables)})")
        return self.data_quality.tables[name]

    def summary_item(self, item: str):
        table = self.quality_table("summary").set_index("item")["value"]
        if item not in table:
            raise EvaluationInputError(f"{self.path_of('data_quality')}: the summary table has no item '{item}'")
        return table[item]


def _settings(result: Result, path: Path) -> Settings:
    """The resolved analysis plan stored beside a result."""
    try:
        return Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in result.settings.items()})
    except TypeError as exc:
        raise EvaluationInputError(f"{path}: its settings are not this package's analysis plan ({exc}); "
                                   "rerun the batch") from None


# ============================================================================ the document and its styles

def new_document(language: str = "both"):
    """An empty A4 portrait document (2.5 cm margins, page numbers in the footer) with the
    report's styles: Normal and headings with their Latin and East Asian fonts, Caption,
    and the "Three Line Table" table style with its text and note paragraph styles that
    :func:`three_line_table` uses. ``language`` sets the document's language property."""
    document = Document()
    section = document.sections[0]
    section.orientation = WD_ORIENT.PORTRAIT
    section.page_width, section.page_height = PAGE_WIDTH, PAGE_HEIGHT
    section.left_margin = section.right_margin = section.top_margin = section.bottom_margin = MARGIN
    styles = document.styles
    normal = styles["Normal"]
    _fonts(normal, BODY_LATIN, BODY_EAST_ASIAN)
    normal.font.size = Pt(10.5)
    normal.paragraph_format.space_after = Pt(6)
    normal.paragraph_format.line_spacing = 1.25
    for name, size in (("Title", 20), ("Subtitle", 14), ("Heading 1", 16), ("Heading 2", 14), ("Heading 3", 12)):
        style = styles[name]
        _fonts(style, HEADING_LATIN, HEADING_EAST_ASIAN)
        style.font.size = Pt(size)
        style.font.color.rgb = RGBColor(0, 0, 0)
        style.font.bold = name.startswith("Heading")
        style.font.italic = False
        style.paragraph_format.space_before = Pt(0 if name in ("Title", "Subtitle") else 14 if name == "Heading 1"
                                                 else 10)
        style.paragraph_format.space_after = Pt(6)
    for name in ("Title", "Subtitle"):
        styles[name].paragraph_format.alignment = WD_ALIGN_PARAGRAPH.CENTER
    caption = styles["Caption"]
    _fonts(caption, BODY_LATIN, HEADING_EAST_ASIAN)
    caption.font.size, caption.font.bold, caption.font.italic = Pt(9.5), True, False
    caption.font.color.rgb = RGBColor(0, 0, 0)
    caption.paragraph_format.alignment = WD_ALIGN_PARAGRAPH.CENTER
    caption.paragraph_format.space_before, caption.paragraph_format.space_after = Pt(6), Pt(4)
    table_text = styles.add_style(TABLE_TEXT_STYLE, WD_STYLE_TYPE.PARAGRAPH)
    table_text.base_style = normal
    table_text.font.size = Pt(TABLE_POINTS)
    table_text.paragraph_format.space_before = table_text.paragraph_format.space_after = Pt(1.5)
    table_text.paragraph_format.line_spacing = 1.0
    note = styles.add_style(NOTE_STYLE, WD_STYLE_TYPE.PARAGRAPH)
    note.base_style = normal
    note.font.size = Pt(8.5)
    note.paragraph_format.space_before, note.paragraph_format.space_after = Pt(3), Pt(8)
    note.paragraph_format.line_spacing = 1.1
    table_style = styles.add_style(TABLE_STYLE, WD_STYLE_TYPE.TABLE)
    table_style.base_style = styles["Normal Table"]
    table_style.font.size = Pt(TABLE_POINTS)
    _page_numbers(section)
    document.core_properties.language = {"zh": "zh-CN", "en": "en-GB", "both": "zh-CN"}[language]
    return document


def _fonts(style, latin: str, east_asian: str) -> None:
    """Latin and East Asian fonts of a style (the theme's font attributes removed, since
    Word lets them win over named fonts)."""
    style.font.name = latin
    fonts = style.element.get_or_add_rPr().get_or_add_rFonts()
    for attribute in ("w:asciiTheme", "w:hAnsiTheme", "w:eastAsiaTheme", "w:cstheme"):
        fonts.attrib.pop(qn(attribute), None)
    fonts.set(qn("w:ascii"), latin)
    fonts.set(qn("w:hAnsi"), latin)
    fonts.set(qn("w:eastAsia"), east_asian)


def _page_numbers(section) -> None:
    """A centred PAGE field in the footer."""
    paragraph = section.footer.paragraphs[0]
    paragraph.alignment = WD_ALIGN_PARAGRAPH.CENTER
    field = OxmlElement("w:fldSimple")
    field.set(qn("w:instr"), "PAGE")
    paragraph._p.append(field)


def _cell_rules(cell, top: int | None, bottom: int | None) -> None:
    """Horizontal rules above and below a cell (widths in eighths of a point)."""
    if top is None and bottom is None:
        return
    properties = cell._tc.get_or_add_tcPr()
    borders = OxmlElement("w:tcBorders")
    for edge, size in (("top", top), ("bottom", bottom)):
        if size is None:
            continue
        rule = OxmlElement(f"w:{edge}")
        rule.set(qn("w:val"), "single")
        rule.set(qn("w:sz"), str(size))
        rule.set(qn("w:space"), "0")
        rule.set(qn("w:color"), "000000")
        borders.append(rule)
    properties.append(borders)


def _text_width(text: str) -> float:
    """Width of a line in units of an average Latin character (a CJK character is 2.4)."""
    return sum(2.4 if WIDE.match(ch) else 1.6 if ord(ch) > 0x2000 else 1.0 for ch in text)  # ≤, – and the like: 1.6


def _unbreakable(word: str) -> float:
    """Width of the longest part of a word that cannot wrap (a line may break after any
    CJK character)."""
    return max([_text_width(part) for part in IDEOGRAPH.split(word)] + [2.0 if IDEOGRAPH.search(word) else 0.0])


def _column_widths(rows: list[list[str]]) -> list:
    """Column widths that share the text width. Each column gets what its unbreakable text
    needs (a number such as ``≤ 0.005`` or ``[1.92 pp, 3.48 pp]`` kept on one line;
    text wraps at spaces, hyphens and after CJK characters); then short text (up to
    :data:`SHORT` characters: a method, a verdict; twice that for the first column, which
    labels the rows) gets one line; the rest goes to the columns of long text, in
    proportion to their length."""
    cm_per_unit, padding = 0.0145 * TABLE_POINTS, 0.45  # an average Latin character's width; cell margins
    needs, shorts, wants = [], [], []
    for j in range(len(rows[0])):
        lines = [line for row in rows for line in row[j].split("\n")]
        words = [word for line in lines for word in re.split(r"[\s\-/]+", line) if word]
        numbers = [_text_width(line) for row in rows[1:] for line in row[j].split("\n")
                   if _text_width(line) <= NUMBER and re.search(r"\d", line)]
        need = max([*numbers, *(min(_unbreakable(w), 64.0) for w in words), 6.0])
        want = max([need, *(_text_width(line) for line in lines)])
        needs.append(need)
        shorts.append(min(want, max(need, SHORT if j else 2 * SHORT)))  # the first column labels the rows
        wants.append(want)
    total = (TEXT_WIDTH_CM - padding * len(needs)) / cm_per_unit  # in characters

    def share(base, target):
        spare, extra = total - sum(base), [t - b for t, b in zip(target, base, strict=True)]
        if sum(extra) <= 0:
            return [b + spare / len(base) for b in base]
        return [b + min(spare, sum(extra)) * e / sum(extra) + max(spare - sum(extra), 0) / len(base)
                for b, e in zip(base, extra, strict=True)]

    if sum(shorts) <= total:
        units = share(shorts, wants)
    elif sum(needs) <= total:
        units = share(needs, shorts)
    else:
        units = [total * n / sum(needs) for n in needs]
    return [Cm(u * cm_per_unit + padding) for u in units]


# ============================================================================ the writer

class _Writer:
    """Writes the report's parts into the document, in order."""

    def __init__(self, document, reader: Reader, source: _Source, figures: Path):
        self.doc, self.r, self.src, self.figures = document, reader, source, figures
        self.settings = source.settings
        self.level = f"{100 * (1 - self.settings.alpha):g}%"

    # -------------------------------------------------------------- helpers
    def say(self, zh: str, en: str) -> str:
        return self.r.say(zh, en)

    def cell(self, zh: str, en: str) -> str:
        """A table cell or a short line in the report's language (``both``: two lines)."""
        return self.r.say(zh, en, sep="\n")

    def heading(self, zh: str, en: str, level: int):
        return self.doc.add_heading(self.say(zh, en), level=level)

    def texts(self, zh: str, en: str) -> list[str]:
        """Text in the report's language: one, or (``both``) Chinese then English."""
        return {"zh": [zh], "en": [en], "both": [zh, en]}[self.r.language]

    def paragraphs(self, zh: str, en: str, style: str | None = None) -> None:
        """Paragraphs in the report's language (:meth:`texts`)."""
        for text in self.texts(zh, en):
            self.doc.add_paragraph(text, style=style)

    def page_break(self) -> None:
        self.doc.add_paragraph().add_run().add_break(WD_BREAK.PAGE)

    def table(self, frame: pd.DataFrame, zh: str, en: str, notes: list[tuple[str, str]] = ()):
        return three_line_table(self.doc, frame, self.say(zh, en), [t for n in notes for t in self.texts(*n)],
                                language=self.r.language)

    def figure(self, fig: Figure, zh: str, en: str) -> None:
        """Save ``fig`` as PNG, insert it at the figure width with a numbered caption below."""
        number = len(self.doc.inline_shapes) + 1
        path = self.figures / f"figure-{number}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
        picture = self.doc.add_paragraph()
        picture.alignment = WD_ALIGN_PARAGRAPH.CENTER
        picture.paragraph_format.keep_with_next = True
        picture.add_run().add_picture(str(path), width=FIGURE_WIDTH)
        self.doc.add_paragraph(f"{self.say(f'图 {number}', f'Figure {number}')}  {self.say(zh, en)}",
                               style="Caption")

    def headers(self, columns: dict[str, tuple[str, str]]) -> dict[str, str]:
        return {key: self.cell(zh.format(level=self.level), en.format(level=self.level))
                for key, (zh, en) in columns.items()}

    def effect_text(self, value, indicator) -> str:
        return self.r.effect(value, indicator)

    def interval_text(self, low, high, indicator) -> str:
        return self.r.interval(low, high, lambda v: self.r.effect(v, indicator))

    def period_words(self, count: int) -> tuple[str, str]:
        return self.settings.text(int(count))

    @staticmethod
    def absent(result: Result | None) -> tuple[str, str] | None:
        """Why a robustness result shows no number (zh, en), or ``None`` when it has them."""
        if result is None:
            return ("未计算：该指标的稳健性章节未运行", "not computed: the robustness chapter was not run for this indicator")
        if result.not_estimable:
            return f"未能估计：{result.not_estimable}", f"not estimated: {result.not_estimable}"
        return None

    # -------------------------------------------------------------- parts
    def write(self) -> None:
        self.cover()
        self.conclusion()
        self.scorecard()
        self.regression()
        self.selection()
        self.page_break()
        self.heading("各指标结果", "Results by indicator", 1)
        for i, indicator in enumerate(self.src.indicators):
            if i:
                self.page_break()
            self.indicator_section(indicator)
        self.page_break()
        self.methods_appendix()
        self.page_break()
        self.data_appendix()

    def cover(self) -> None:
        study, src, r = self.src.study, self.src, self.r
        for _ in range(3):
            self.doc.add_paragraph()
        if r.language == "both":
            self.doc.add_paragraph(study.title.zh, style="Title")
            self.doc.add_paragraph(study.title.en, style="Subtitle")
        else:
            self.doc.add_paragraph(self.say(study.title.zh, study.title.en), style="Title")
        if study.synthetic:
            banner = self.doc.add_paragraph()
            banner.alignment = WD_ALIGN_PARAGRAPH.CENTER
            banner.paragraph_format.space_before = Pt(18)
            run = banner.add_run(self.cell("合成演示数据，非真实乡镇", "SYNTHETIC DEMO DATA — not real townships"))
            run.bold, run.font.size, run.font.color.rgb = True, Pt(16), SYNTHETIC_RED
        for _ in range(2):
            self.doc.add_paragraph()
        first, last = src.summary_item("first_period"), src.summary_item("last_period")
        periods = r.count(src.summary_item("periods"))
        unit_zh, unit_en = PERIOD_UNITS[study.analysis_frequency]
        freq_zh, freq_en = PERIOD_WORDS[study.frequency]
        if study.analysis_frequency != study.frequency:
            a_zh, a_en = PERIOD_WORDS[study.analysis_frequency]
            freq_zh, freq_en = f"{freq_zh}（按{a_zh}汇总分析）", f"{freq_en} (analysed {a_en})"
        units_zh, units_en = self.units_note()
        today = dt.datetime.now(dt.UTC).date().isoformat()
        lines = [("研究期间", f"{first} 至 {last}（{periods}{unit_zh}）", "Study period",
                  f"{first} to {last} ({periods} {unit_en})"),
                 ("数据频率", freq_zh, "Frequency", freq_en),
                 ("单位", units_zh, "Units", units_en),
                 ("报告日期", today, "Date", today)]
        if src.manifest.get("fast"):
            lines.append(("运行模式", "快速运行（重抽样次数较少），仅供预览", "Run", "fast run (fewer resampling draws): a preview"))
        for label_zh, value_zh, label_en, value_en in lines:
            p = self.doc.add_paragraph()
            p.alignment = WD_ALIGN_PARAGRAPH.CENTER
            parts = {"zh": [(f"{label_zh}：", value_zh)], "en": [(f"{label_en}: ", value_en)],
                     "both": [(f"{label_zh}：", value_zh + "\n"), (f"{label_en}: ", value_en)]}[r.language]
            for label, value in parts:
                p.add_run(label).bold = True
                p.add_run(value)
        self.page_break()

    def units_note(self) -> tuple[str, str]:
        """How values and effects are written (zh, en), for the kinds of unit the report shows."""
        units = {ind.unit for ind in self.src.indicators}
        zh, en = [], []
        if "share" in units:
            zh.append("比例以 % 表示，其效果以百分点（pp）表示")
            en.append("shares in %, their effects in percentage points (pp)")
        if "yuan" in units:
            zh.append("金额以元表示")
            en.append("money in yuan")
        if units - {"share", "yuan"}:
            zh.append("其他指标的单位见汇总表中的指标名称")
            en.append("other indicators' units are given with their names in the scorecard")
        return "；".join(zh) + "。", "; ".join(en).capitalize() + "."

    def conclusion(self) -> None:
        self.heading("总体结论", "Overall conclusion", 1)
        zh, en = overall_conclusion(self.src.card, self.settings)
        self.paragraphs(zh, en)

    # -------------------------------------------------------------- scorecard
    def verdict_word(self, row: dict) -> str:
        """The verdict in a word (改善, 恶化, ... / Improved, Worsened, ...)."""
        zh, en = finding(row)
        return self.cell(zh, en[:1].upper() + en[1:])

    def indicator_label(self, ind) -> str:
        """The indicator's name, with its unit when the effect's text does not carry one."""
        if ind.unit in ("share", "yuan"):
            return self.cell(ind.name_zh, ind.name_en)
        unit_zh = _unit_beside(ind.name_zh, Reader("zh").unit(ind, change=True), RATE_ZH)
        unit_en = _unit_beside(ind.name_en, Reader("en").unit(ind, change=True), RATE_EN)
        return self.cell(f"{ind.name_zh}（{unit_zh}）", f"{ind.name_en} ({unit_en})")

    def method_label(self, method: str) -> str:
        """A headline method's short name (the scorecard's note names it in full)."""
        if method not in METHOD_SHORT:
            raise EvaluationInputError(f"{self.src.path_of('summary.scorecard')}: unknown headline method {method!r} "
                                       f"(known: {sorted(METHOD_SHORT)})")
        return self.cell(*METHOD_SHORT[method])

    def scorecard_frame(self) -> pd.DataFrame:
        """The scorecard's rows as strings (study order)."""
        headers, rows = self.headers(SCORECARD_COLUMNS), []
        for ind in self.src.indicators:
            row = self.src.rows[ind.id]
            estimated = bool(row.get("estimated", True))
            rows.append({
                headers["indicator"]: self.indicator_label(ind),
                headers["effect"]: self.effect_text(row["headline_att"], ind) if estimated else DASH,
                headers["interval"]: self.interval_text(row["headline_ci_low"], row["headline_ci_high"], ind)
                if estimated else DASH,
                headers["p"]: self.r.p(row["headline_p"], row["headline_p_floor"]) if estimated else DASH,
                headers["adjusted"]: self.r.p(row.get(ADJUSTED[self.settings.multiple_testing][0]),
                                              row.get("p_romano_wolf_floor")
                                              if self.settings.multiple_testing == "romano_wolf" else None)
                if estimated else DASH,
                headers["method"]: self.method_label(row["headline_method"]) if estimated else DASH,
                headers["pilots"]: self.r.count(row["n_pilots"]) if estimated else DASH,
                headers["target"]: self.cell(*(Reader(lang).attainment(row.get("pilot_meets_target"),
                                                                      has_target=not is_missing(row.get("target")))
                                               for lang in ("zh", "en"))) if estimated else DASH,
                headers["verdict"]: self.verdict_word(row),
            })
        return pd.DataFrame(rows, columns=list(headers.values()), dtype=object)

    def scorecard(self) -> None:
        s = self.settings
        recent_zh, recent_en = self.period_words(s.target_window)
        self.heading("评估结果汇总", "Scorecard", 1)
        notes = [
            (f"注：每个指标的效果、区间和 p 值来自同一方法（“方法”列）：试点乡镇不少于{s.few_pilots}个时为 Callaway–Sant'Anna "
             f"估计（以{COMPARISON_WORDS[s.comparison][0]}为对照，按{CLUSTER_WORDS[s.cluster][0]}聚类）；少于{s.few_pilots}个时为"
             f"双向固定效应（TWFE）估计与随机化推断（{s.draws_randomization} 次置换，区间由同一检验反演得到，最小可能 p 值为 1/(B+1)）。"
             f"试点目标达成按最近{recent_zh}的试点乡镇水平判断。",
             f"Note: each indicator's effect, interval and p-value come from one method (column Method): with "
             f"{s.few_pilots} or more pilot townships the Callaway–Sant'Anna estimate (against "
             f"{COMPARISON_WORDS[s.comparison][1]}, clustered by {CLUSTER_WORDS[s.cluster][1]}); with fewer, two-way "
             f"fixed effects (TWFE) with randomization inference (RI: {s.draws_randomization} permutations, the "
             "interval inverting the same test; the smallest possible p-value is 1/(B+1)). Pilot target: the pilot "
             f"townships' level over the last {recent_en}."),
            adjustment_note(self.src.card, s),
        ]
        self.table(self.scorecard_frame(), "各指标的试点效果", "The pilots' effect on each indicator", notes)

    # -------------------------------------------------------------- one indicator
    def regression(self) -> None:
        """The baseline DiD regression table (三线表), at most :data:`REGRESSION_COLUMNS`
        indicators per table so that it fits the A4 page's width."""
        from evaluation.report.regression_table import regression_table

        stored = [i.id for i in self.src.indicators if self.src.optional("did.twfe", i.id) is not None]
        if not stored:
            return
        self.heading("基线双重差分回归", "Baseline DiD regression", 2)
        tables = -(-len(stored) // REGRESSION_COLUMNS)
        size = -(-len(stored) // tables)  # 9 indicators: 3 tables of 3, not 4 + 4 + 1
        for start in range(0, len(stored), size):
            table = regression_table(self.src.folder, self.src.study, self.r.language,
                                     indicators=stored[start:start + size])
            three_line_table(self.doc, table.frame, table.caption, table.note, language=self.r.language)

    def selection(self) -> None:
        """选择偏差: the covariate balance before and after matching (the first indicator's
        matched sample), the unadjusted, covariate-adjusted and matched effects of every
        indicator side by side, the heterogeneity tests and the mechanism chains; nothing
        when the study declares no covariates (no stored selection results)."""
        r = self.r
        stored = [(i, self.src.optional("selection.matching", i.id)) for i in self.src.indicators]
        stored = [(i, m) for i, m in stored if m is not None]
        if not stored:
            return
        self.heading("选择偏差：平衡性、匹配与异质性", "Selection: balance, matching and heterogeneity", 2)
        ind, m = stored[0]
        if "balance" in m.tables:
            bal = m.tables["balance"]
            labels = {k: tuple(v) for k, v in (m.values.get("labels") or {}).items()}
            frame = pd.DataFrame({r.say("协变量", "Covariate"): [r.both(labels.get(c, (c, c))) for c in bal["covariate"]]})

            def mean(column):
                return [(f"{100 * v:.1f}%" if k == "binary" else r.number(v)) if pd.notna(v) else "—"
                        for v, k in zip(bal[column], bal["kind"], strict=True)]
            columns = [("pilot_mean", ("试点均值", "Pilot mean")), ("comparison_mean", ("对照均值", "Comparison mean")),
                       ("pilot_mean_after", ("匹配后试点均值", "Matched pilot mean")),
                       ("comparison_mean_after", ("匹配后对照均值", "Matched comparison mean"))]
            for column, (zh, en) in columns:
                if column in bal:
                    frame[r.say(zh, en)] = mean(column)
            for column, (zh, en) in (("smd_before", ("标准化均值差（匹配前）", "SMD before")),
                                     ("smd_after", ("标准化均值差（匹配后）", "SMD after")),
                                     ("smd_entropy", ("标准化均值差（熵平衡后）", "SMD after entropy balancing"))):
                if column in bal:
                    frame[r.say(zh, en)] = [f"{v:.3f}" if pd.notna(v) else "—" for v in bal[column]]
            reason = m.values.get("matching_not_estimable")
            dropped = m.values.get("dropped_pilots") or 0
            self.table(frame, f"协变量平衡性（匹配前后；匹配样本为{r.name(ind)}的）",
                       f"Covariate balance before and after matching ({r.name(ind)}'s matched sample)",
                       [("标准化均值差 = 均值差 / 两组匹配前方差均值的平方根（Austin 2009）；绝对值低于 0.1 视为平衡。二值协变量的均值为"
                         "比例。" + (f"{dropped}个试点乡镇未能匹配（不在共同支撑域或卡尺内），匹配后的列不含它们。" if dropped else "")
                         + (f"未能匹配：{reason}" if reason else ""),
                         "Standardized mean difference = difference in means / square root of the mean of the two "
                         "groups' variances before matching (Austin 2009); below 0.1 in absolute value counts as "
                         "balanced. A binary covariate's means are shares."
                         + (f" {dropped} pilot township(s) could not be matched (outside the common support or the "
                            "caliper) and are not in the matched columns." if dropped else "")
                         + (f" Matching could not be done: {reason}" if reason else ""))])
        rows = []
        for ind, _ in stored:
            cells = {r.say("指标", "Indicator"): r.name(ind)}
            parts = [("did.twfe", "twfe", ("双向固定效应（未调整）", "TWFE (unadjusted)")),
                     ("selection.adjusted", "cs_unadjusted", ("交错双重差分（未调整）", "CS unadjusted")),
                     ("selection.adjusted", "cs_dr", ("协变量调整：双重稳健", "CS doubly robust")),
                     ("selection.adjusted", "cs_reg", ("协变量调整：结果回归", "CS outcome regression")),
                     ("selection.adjusted", "cs_ipw", ("协变量调整：逆概率加权", "CS IPW")),
                     ("selection.matching", None, ("倾向得分匹配双重差分", "PSM-DID"))]
            for section, part, (zh, en) in parts:
                res = self.src.optional(section, ind.id)
                text = "—"
                if res is not None and not res.not_estimable and len(res.effects):
                    eff = res.effects
                    if part is not None and "section" in eff:
                        eff = eff[eff["section"] == part]
                    eff = eff[eff["estimand"].isin(["att", "att_overall"])] if part != "twfe" else eff
                    if len(eff):
                        e = eff.iloc[0]
                        text = f"{self.effect_text(e['estimate'], ind)}\n{self.interval_text(e['ci_low'], e['ci_high'], ind)}"
                cells[r.say(zh, en)] = text
            rows.append(cells)
        frame = pd.DataFrame(rows)
        frame = frame[[c for c in frame.columns if (frame[c] != "—").any()]]  # a method no indicator supports
        self.table(frame, "未调整、协变量调整与匹配后的总体效果", "Unadjusted, covariate-adjusted and matched effects",
                   [("每格为效果估计及其置信区间；“—”为该指标上未能估计（见网页报告的选择偏差一章）。交错双重差分与协变量调整均为"
                     "Callaway–Sant'Anna 估计。协变量方法只用协变量齐全的"
                     "乡镇；PSM-DID 比较每个试点乡镇与其匹配对照乡镇在试点前后的变化（Heckman、Ichimura 和 Todd 1997），"
                     "标准误按 Abadie 和 Imbens（2006）；某方法在所有指标上都未能估计时不列出。",
                     "Each cell: the effect and its confidence interval; '—': not estimated for this indicator (the "
                     "selection chapter of the web report says why). The covariate methods use the townships with every "
                     "covariate; PSM-DID compares each pilot's change before and after its start with its matched "
                     "comparison townships' (Heckman, Ichimura and Todd 1997), standard errors by Abadie and Imbens "
                     "(2006); a method estimated for no indicator is left out.")])
        tests = []
        for ind, m in stored:
            h = self.src.optional("selection.heterogeneity", ind.id)
            if h is None or h.not_estimable:
                continue
            labels = {k: tuple(v) for k, v in (m.values.get("labels") or {}).items()}
            for by, d in (h.values.get("differences") or {}).items():
                groups = list(h.effects.loc[h.effects["by"] == by, "group"])
                rows_by = h.effects[h.effects["by"] == by]
                cells = {r.say("指标", "Indicator"): r.name(ind),
                         r.say("特征", "Characteristic"): r.both(labels.get(by, (by, by)))}
                for g, row in zip(groups, rows_by.itertuples(), strict=True):
                    zh, en = {"low": ("≤中位数", "at or below median"), "high": (">中位数", "above median"),
                              "1": ("是", "yes"), "0": ("否", "no")}.get(str(g), (str(g), str(g)))
                    cells.setdefault(r.say("分组效果", "Effects by group"), [])
                    cells[r.say("分组效果", "Effects by group")].append(
                        f"{r.say(zh, en)}: {self.effect_text(row.estimate, ind)} "
                        f"{self.interval_text(row.ci_low, row.ci_high, ind)}")
                cells[r.say("分组效果", "Effects by group")] = "\n".join(cells[r.say("分组效果", "Effects by group")])
                diff = d.get("difference")
                cells[r.say("差异（后组−前组）", "Difference (second − first)")] = (
                    self.effect_text(diff, ind) if diff is not None and pd.notna(diff) else "—")
                p = d.get("p_difference")
                cells[r.say("差异 p 值", "p of the difference")] = r.p(p) if p is not None and pd.notna(p) else "—"
                tests.append(cells)
        if tests:
            self.table(pd.DataFrame(tests), "异质性分析：按乡镇特征分组的效果", "Heterogeneity: effects by township characteristic",
                       [("每组只用本组的试点与对照乡镇，结果先扣除协变量解释的各期差异；效果为试点乡镇-期的平均效果，置信区间来自随机化"
                         "推断。差异 p 值：在试点乡镇之间置换该特征（原假设：效果与该特征无关）。",
                         "Each group on its own pilots and comparison townships, the outcome adjusted for the period "
                         "effects the covariates explain; effects are means over treated township-periods with "
                         "randomization-inference intervals. p of the difference: the characteristic permuted among the "
                         "pilots (null: the effect is unrelated to it).")])

    def indicator_section(self, ind) -> None:
        row = self.src.rows[ind.id]
        self.doc.add_heading(self.r.name(ind), level=2)
        if not row.get("estimated", True):
            self.paragraphs(row["verdict_zh"], row["verdict_en"])
            return
        self.headline(ind, row)
        self.trends_figure(ind)
        self.event_study_figure(ind)
        self.heading("结论", "Verdict", 3)
        self.paragraphs(row["verdict_zh"], row["verdict_en"])
        self.heading("稳健性与敏感性", "Robustness and sensitivity", 3)
        self.robustness(ind)
        self.sensitivity(ind)

    def headline(self, ind, row: dict) -> None:
        r, s = self.r, self.settings
        effect = self.effect_text(row["headline_att"], ind)
        interval = self.interval_text(row["headline_ci_low"], row["headline_ci_high"], ind)
        p = r.p(row["headline_p"], row["headline_p_floor"])
        p_text = p if p.startswith(("<", "≤")) else f"= {p}"
        comparison = int(row["n_townships"]) - int(row["n_pilots"])
        recent_zh, recent_en = self.period_words(s.target_window)
        self.paragraphs(
            f"主要估计（{row['headline_label_zh']}）：{r.count(row['n_pilots'])}个试点乡镇与{r.count(comparison)}个非试点乡镇相比，"
            f"{ind.name_zh}的变化为 {effect}（{self.level}置信区间 {interval}，p {p_text}）。",
            f"Headline ({row['headline_label_en']}): in {r.count(row['n_pilots'])} pilot townships against "
            f"{r.count(comparison)} non-pilot townships, {ind.name_en} changed by {effect} ({self.level} CI {interval}, "
            f"p {p_text}).")
        if is_missing(row.get("target")):
            zh_target, en_target = "该指标无政策目标。", "The indicator has no policy target."
        else:
            target = r.level(row["target"], ind)
            zh_target = (f"政策目标 {target}：试点乡镇{'达标' if row['pilot_meets_target'] else '未达标'}，"
                         f"非试点乡镇{'达标' if row['comparison_meets_target'] else '未达标'}。")
            en_target = (f"Policy target {target}: pilot townships {'met' if row['pilot_meets_target'] else 'did not meet'}"
                         f" it, non-pilot townships {'met' if row['comparison_meets_target'] else 'did not meet'} it.")
        self.paragraphs(
            f"最近{recent_zh}：试点乡镇 {r.level(row['pilot_recent'], ind)}，非试点乡镇 "
            f"{r.level(row['comparison_recent'], ind)}。{zh_target}",
            f"Over the last {recent_en}: pilot townships {r.level(row['pilot_recent'], ind)}, non-pilot townships "
            f"{r.level(row['comparison_recent'], ind)}. {en_target}")

    def trends_figure(self, ind) -> None:
        trends = self.src.result("trends", ind.id)
        if trends.not_estimable:
            self.paragraphs(f"走势图未能绘制：{trends.not_estimable}", f"Trends not drawn: {trends.not_estimable}")
            return
        series = trends.tables["series"]
        index = pd.PeriodIndex(series["period"].astype(str), freq=FREQUENCIES[self.src.study.analysis_frequency])
        groups = {("试点乡镇", "pilot townships"): pd.Series(series["pilot"].to_numpy(), index=index),
                  ("非试点乡镇", "non-pilot townships"): pd.Series(series["comparison"].to_numpy(), index=index)}
        starts = sorted(self.src.quality_table("pilots")["cohort"].astype(str).unique())
        ax = Figure(figsize=FIGURE_SIZE).subplots()
        plots.trends(groups, ind, starts, trends.values.get("target"), ax=ax, reader=self.r)
        ax.set_title("")  # the caption names the figure
        self.figure(ax.figure, f"{ind.name_zh}：试点与非试点乡镇的走势（点线为各批试点开始时间）",
                    f"{ind.name_en}: pilot and non-pilot townships over time (dotted: pilot starts)")

    def event_study_figure(self, ind) -> None:
        cs = self.src.result("did.callaway_santanna", ind.id)
        if cs.not_estimable:
            self.paragraphs(f"Callaway–Sant'Anna 事件研究未能估计：{cs.not_estimable}",
                            f"Callaway–Sant'Anna event study not estimated: {cs.not_estimable}")
            return
        ax = Figure(figsize=FIGURE_SIZE).subplots()
        plots.event_study(cs.tables["dynamic_plot"], ind, band=True, ax=ax, reader=self.r,
                          level=1 - self.settings.alpha)
        ax.set_title("")
        self.figure(ax.figure, f"{ind.name_zh}：Callaway–Sant'Anna 事件研究（点与竖线为估计值及{self.level}置信区间，阴影为一致置信带）",
                    f"{ind.name_en}: Callaway–Sant'Anna event study (points and bars: estimates with {self.level} "
                    "intervals; shaded: uniform band)")

    # -------------------------------------------------------------- robustness and sensitivity
    def check_label(self, estimand: str, term: str) -> str:
        s = self.settings
        if estimand == "placebo_att":
            zh, en = self.period_words(s.placebo_shift)
            return self.cell(f"安慰剂：提前{zh}的假开始（应为0）", f"Placebo start {en} early (should be 0)")
        label = CHECK_LABELS.get((estimand, term)) or CHECK_LABELS.get(estimand)
        if label is None:
            raise EvaluationInputError(f"robustness.checks: no reader's label for the check '{estimand}' ('{term}'): "
                                       "add it to evaluation.report.word.CHECK_LABELS")
        return self.cell(*label)

    def robustness(self, ind) -> None:
        headers = self.headers(ROBUSTNESS_COLUMNS)
        rows, notes = [], []

        def add(label: str, estimate: str, interval: str = DASH, p: str = DASH):
            rows.append({headers["check"]: label, headers["estimate"]: estimate, headers["interval"]: interval,
                         headers["p"]: p})

        def absent(label_zh: str, label_en: str, why: tuple[str, str]):
            """A row of dashes, the reason in a note below the table."""
            add(self.cell(label_zh, label_en), DASH)
            notes.append((f"{label_zh}：{why[0]}。", f"{label_en}: {why[1]}."))

        checks = self.src.optional("robustness.checks", ind.id)
        if self.absent(checks):
            absent("对照组、新冠疫情期、安慰剂、逐个剔除", "Comparison group, COVID-19, placebo, leave one out",
                   self.absent(checks))
        else:
            effects = checks.effects
            single = effects[effects["estimand"] != "att_leave_one_out"]
            for e in single.itertuples(index=False):
                add(self.check_label(e.estimand, str(e.term)), self.effect_text(e.estimate, ind),
                    self.interval_text(e.ci_low, e.ci_high, ind), self.r.p(e.p_value, e.p_floor))
            loo = effects[effects["estimand"] == "att_leave_one_out"]
            if len(loo):
                clear = int(((loo["ci_low"] > 0) | (loo["ci_high"] < 0)).sum())
                add(self.cell(f"逐个剔除试点乡镇（{len(loo)}次）", f"Leaving one pilot out ({len(loo)} fits)"),
                    f"{self.effect_text(loo['estimate'].min(), ind)} – {self.effect_text(loo['estimate'].max(), ind)}",
                    self.interval_text(loo["ci_low"].min(), loo["ci_high"].max(), ind),
                    self.r.p(loo["p_value"].max(), loo["p_floor"].max()))
                notes.append((f"逐个剔除：估计值为最小值至最大值，区间为各区间的并集，p 值为最大值；{len(loo)}个区间中有{clear}个不含0。",
                              f"Leaving one out: the smallest to the largest estimate, the union of the intervals and "
                              f"the largest p-value; {clear} of {len(loo)} intervals exclude zero."))
        sdid = self.src.optional("robustness.synthetic_did", ind.id)
        if self.absent(sdid):
            absent("合成双重差分", "Synthetic DiD", self.absent(sdid))
        else:
            overall = sdid.effects[(sdid.effects["estimand"] == "att") & sdid.effects["cohort"].isna()]
            if len(overall) != 1:
                raise EvaluationInputError(f"{self.src.path_of('robustness.synthetic_did', ind.id)}: expected one "
                                           f"overall synthetic-DiD ATT, found {len(overall)}")
            e = overall.iloc[0]
            add(self.cell("合成双重差分", "Synthetic DiD"), self.effect_text(e["estimate"], ind),
                self.interval_text(e["ci_low"], e["ci_high"], ind), self.r.p(e["p_value"], e["p_floor"]))
        notes.insert(0, ("注：均为 Callaway–Sant'Anna 总体平均处理效应（合成双重差分除外），单位同主要估计。",
                         "Note: each row is the Callaway–Sant'Anna overall ATT (except synthetic DiD), in the headline's "
                         "unit."))
        frame = pd.DataFrame(rows, columns=list(headers.values()), dtype=object)
        self.table(frame, f"{ind.name_zh}：稳健性检验", f"{ind.name_en}: robustness checks", notes)

    def sensitivity(self, ind) -> None:
        """The breakdown values of the relative-magnitude and smoothness bounds, in words."""
        s, r = self.settings, self.r
        rm, sd = (self.src.optional(section, ind.id) for section in ("robustness.relative_magnitude",
                                                                     "robustness.smoothness"))
        rm_zh, rm_en = self.period_words(s.rm_post_periods)
        sd_zh, sd_en = self.period_words(s.sd_post_periods)
        if self.absent(rm):
            why_zh, why_en = self.absent(rm)
            zh = f"相对幅度边界（Rambachan 和 Roth，2023）{why_zh}。"
            en = f"Relative magnitudes (Rambachan and Roth 2023): {why_en}."
        else:
            b = rm.values.get("breakdown")
            if b is None:  # the store keeps an infinite breakdown as null
                zh = (f"相对幅度（Rambachan 和 Roth，2023）：在检验的所有 Mbar 取值下，前{rm_zh}平均效果的置信区间都不含0。")
                en = (f"Relative magnitudes (Rambachan and Roth 2023): the mean effect over the first {rm_en} stays "
                      "clear of zero at every Mbar tried.")
            elif b == 0:
                zh = f"相对幅度（Rambachan 和 Roth，2023）：即使平行趋势完全成立，前{rm_zh}平均效果的置信区间也包含0（临界值 Mbar = 0）。"
                en = (f"Relative magnitudes (Rambachan and Roth 2023): the mean effect over the first {rm_en} could be "
                      "zero even under exact parallel trends (breakdown Mbar = 0).")
            else:
                zh = (f"相对幅度（Rambachan 和 Roth，2023）：只要试点后偏离平行趋势的幅度不超过试点前最大偏离的 {r.number(b)} 倍，"
                      f"前{rm_zh}平均效果的置信区间仍不含0（临界值 Mbar = {r.number(b)}）。")
                en = (f"Relative magnitudes (Rambachan and Roth 2023): the mean effect over the first {rm_en} stays clear "
                      f"of zero as long as post-start violations of parallel trends are at most {r.number(b)} times the "
                      f"largest pre-start violation (breakdown Mbar = {r.number(b)}).")
        if self.absent(sd):
            why_zh, why_en = self.absent(sd)
            zh += f"平滑度边界{why_zh}。"
            en += f" Smoothness: {why_en}."
        else:
            b = sd.values.get("breakdown")
            m0 = sd.effects[sd.effects["term"] == "M=0"]
            if len(m0) != 1:
                raise EvaluationInputError(f"{self.src.path_of('robustness.smoothness', ind.id)}: expected one M=0 row, "
                                           f"found {len(m0)}")
            m0_interval = self.interval_text(m0["ci_low"].iloc[0], m0["ci_high"].iloc[0], ind)
            zh += f"平滑度：若试点前的趋势差异按直线延续（M = 0），前{sd_zh}平均效果的置信区间为 {m0_interval}；"
            en += (f" Smoothness: if the pre-start difference in trends continued in a straight line (M = 0), the mean "
                   f"effect over the first {sd_en} has the interval {m0_interval};")
            if b is None:
                zh += "在检验的所有 M 取值下区间都不含0。"
                en += " it stays clear of zero at every M tried."
            elif b == 0:
                zh += "该区间包含0（临界值 M = 0）。"
                en += " it includes zero (breakdown M = 0)."
            else:
                zh += f"趋势斜率每期变化不超过 {r.number(b)} 时，区间仍不含0（临界值 M = {r.number(b)}）。"
                en += (f" it stays clear of zero while the slope of the difference changes by at most {r.number(b)} "
                       f"per period (breakdown M = {r.number(b)}).")
        self.paragraphs(zh, en)

    # -------------------------------------------------------------- appendices
    def methods_appendix(self) -> None:
        s, src, r = self.settings, self.src, self.r
        self.heading("附录一  方法", "Appendix A  Methods", 1)
        pilots, comparison = src.summary_item("pilot_townships"), src.summary_item("comparison_townships")
        cohorts = src.quality_table("pilots")["cohort"].nunique()
        comp_zh, comp_en = COMPARISON_WORDS[s.comparison]
        clu_zh, clu_en = CLUSTER_WORDS[s.cluster]
        first, last = s.event_window
        self.heading("设计", "Design", 2)
        self.paragraphs(
            f"分批试点的双重差分设计：{r.count(pilots)}个试点乡镇分{r.count(cohorts)}批开始试点，与{r.count(comparison)}个非试点乡镇比较。"
            f"Callaway–Sant'Anna 估计以{comp_zh}为对照；各指标核心结果所用的方法见“推断”一节。事件研究覆盖试点开始前{self.period_words(-first)[0]}至开始后{self.period_words(last)[0]}。",
            f"A staggered difference-in-differences design: {r.count(pilots)} pilot townships starting in "
            f"{r.count(cohorts)} cohorts, compared with {r.count(comparison)} non-pilot townships. The "
            f"Callaway–Sant'Anna estimates use {comp_en} as the comparison; the method of each indicator's headline is "
            f"given under Inference. Event studies run from {self.period_words(-first)[1]} before "
            f"to {self.period_words(last)[1]} after the start.")
        self.heading("估计方法", "Estimators", 2)
        phase_zh, phase_en = self.period_words(s.its_phase_in)
        terms_zh, terms_en = self.its_terms()
        self.paragraphs(
            "Callaway–Sant'Anna（2021）组别-时间平均处理效应，适用于分批试点且效果随时间变化的情形，汇总为总体效果、分批效果和事件研究；"
            "双向固定效应（TWFE）及其 Goodman-Bacon（2021）分解（试点乡镇少时，TWFE 系数加随机化推断为核心结果）；合成双重差分（Arkhangelsky 等，2021）对非试点乡镇和试点前各期加权，"
            "使平行趋势更可信；合成控制（Abadie 等，2010）为每个试点乡镇构造加权的“合成乡镇”；中断时间序列（ITS）对最早一批试点乡镇的序列做分段回归"
            f"（{terms_zh}），试点后{phase_zh}过渡期不纳入拟合。另与插补法（Borusyak、Jaravel、Spiess，2024）、Sun–Abraham 交互加权事件研究"
            "（2021）和 Wooldridge 扩展双向固定效应（2021；计数指标另有泊松形式，2023）并列比较，这些方法在效果随批次和时间变化时仍无偏。",
            "Callaway and Sant'Anna (2021) group-time average treatment effects, valid when pilots start at different "
            "times and effects change over time, aggregated to an overall effect, cohort effects and an event study; "
            "two-way fixed effects (TWFE) with its Goodman-Bacon (2021) decomposition (with few pilots, the TWFE "
            "coefficient with randomization inference is the headline); synthetic DiD "
            "(Arkhangelsky et al. 2021), which weights non-pilot townships and pre-periods so that parallel trends is "
            "more plausible; synthetic control (Abadie et al. 2010), a weighted twin for each pilot township; and "
            f"interrupted time series (ITS), a segmented regression of the earliest cohort's series ({terms_en}), the "
            f"{phase_en} phase-in after the start left out of the fit. Imputation (Borusyak, Jaravel and Spiess 2024), "
            "Sun and Abraham's interaction-weighted event study (2021) and Wooldridge's extended TWFE (2021; for counts "
            "also its Poisson form, 2023) are shown beside them: they stay unbiased when effects vary by cohort and "
            "over time.")
        self.heading("推断", "Inference", 2)
        randomized = [ind for ind in src.indicators
                      if src.rows[ind.id].get("headline_method") == "twfe_randomization"]
        ri_zh = ("本报告中以随机化推断为主要检验的指标：" + "、".join(i.name_zh for i in randomized) + "。") if randomized \
            else "本报告中没有指标以随机化推断为主要检验。"
        ri_en = ("In this report randomization inference is the headline test of: "
                 + "; ".join(i.name_en for i in randomized) + ".") if randomized \
            else "In this report no indicator's headline test is randomization inference."
        weights = {"webb": ("Webb（2023）六点", "Webb (2023) six-point"), "rademacher": ("Rademacher", "Rademacher")}
        groups = {"model": ("整合模式", "integration model"), "cohort": ("试点批次", "cohort"), "county": ("县区", "county")}
        subgroups_zh = "、".join(groups[g][0] for g in s.subgroups) or "分组"
        subgroups_en = " or ".join(groups[g][1] for g in s.subgroups) or "group"
        w_zh, w_en = weights.get(s.wild_bootstrap_weights, (s.wild_bootstrap_weights, s.wild_bootstrap_weights))
        fast_zh = "（快速运行，抽样次数较少）" if s.fast else ""
        fast_en = " (a fast run, with fewer draws)" if s.fast else ""
        self.paragraphs(
            f"标准误按{clu_zh}聚类，检验水平为 {s.alpha:g}（{self.level}置信区间）。试点乡镇少时聚类稳健标准误会低估不确定性，"
            f"因此：试点乡镇少于{s.few_pilots}个时，主要估计为双向固定效应系数，其 p 值来自随机化推断（MacKinnon 和 Webb，2020），即在乡镇间置换"
            f"试点历史 B = {r.count(s.draws_randomization)} 次{fast_zh}，置信区间由同一检验反演得到；最小可能 p 值为 1/(B+1)，报告为 “≤ 1/(B+1)”；不少于{s.few_pilots}个时，为 Callaway–Sant'Anna "
            f"的解析聚类推断。野聚类自助法（{r.count(s.draws_wild_bootstrap)} 次，{w_zh}权重）和安慰剂（空间）检验见稳健性章节。{ri_zh}"
            f"前趋势检验（事件研究前导期系数的联合检验）同样采用随机化推断，网页的双重差分章节给出该检验有80%把握发现的线性趋势及其"
            f"可能造成的偏倚（Roth，2022）和等价界（Hartman 和 Hidalgo，2018）。仅有少于{s.very_few_pilots}个试点乡镇的效果不报告"
            f"聚类稳健的标准误、置信区间和 p 值；按{subgroups_zh}分组的效果均以该组试点乡镇与对照乡镇比较，并用随机化推断。"
            "多项指标同时检验时，另报告 Romano–Wolf（2005）逐步校正 p 值（与核心结果使用同一重抽样），以及 Holm（1979）和 "
            "Benjamini–Hochberg（1995）校正。",
            f"Standard errors are clustered by {clu_en}; tests are at level {s.alpha:g} ({self.level} "
            "intervals). Cluster-robust errors understate uncertainty when pilots are few, so with fewer than "
            f"{s.few_pilots} pilot townships the headline is the two-way fixed effects coefficient with randomization "
            f"inference (MacKinnon and Webb 2020), permuting pilot histories across townships "
            f"B = {r.count(s.draws_randomization)} times{fast_en}, its interval inverting the same test; the smallest "
            f"possible p-value is 1/(B+1), shown as \"≤ 1/(B+1)\". With {s.few_pilots} or more, it is Callaway and Sant'Anna's "
            f"analytic clustered inference. The wild cluster bootstrap ({r.count(s.draws_wild_bootstrap)} {w_en} "
            f"draws) and placebo-in-space tests are in the robustness chapter. {ri_en} The pre-trend test (the joint "
            "test of the event study's leads) also uses randomization inference; the DiD chapter's pages give the "
            "linear pre-trend it would detect with 80% probability and the bias that would cause (Roth 2022), and an "
            "equivalence bound (Hartman and Hidalgo 2018). An effect resting on fewer than "
            f"{s.very_few_pilots} pilot townships is shown without a cluster-robust standard error, interval or "
            f"p-value; effects by {subgroups_en} compare that group's pilots with the comparison townships by "
            "randomization inference. Across indicators, the Romano–Wolf (2005) step-down p-value (from the "
            "headline's resampling) and Holm (1979) and Benjamini–Hochberg (1995) adjustments are reported.")
        self.heading("假设", "Assumptions", 2)
        self.paragraphs(
            "平行趋势：若无试点，试点乡镇与对照乡镇的指标会平行变化（事件研究中试点前的系数应接近0）。无预期效应：试点开始前，指标不因即将到来的试点而变化。"
            "稳定单位处理值假设（SUTVA）：一个乡镇的试点不影响其他乡镇的指标（同一县医共体内的溢出会违反此假设，使效果偏小）。",
            "Parallel trends: without the pilots, the indicator would have moved in parallel in pilot and comparison "
            "townships (the event study's pre-start coefficients should be near zero). No anticipation: the indicator "
            "does not change before the start because a pilot is coming. SUTVA: one township's pilot does not change "
            "another township's indicator (spillovers within a county medical community would violate it and shrink "
            "the effect).")
        self.heading("敏感性分析", "Sensitivity", 2)
        rm_zh, rm_en = self.period_words(s.rm_post_periods)
        sd_zh, sd_en = self.period_words(s.sd_post_periods)
        mbar = "、".join(r.number(v) for v in s.rm_values)
        self.paragraphs(
            f"按 Rambachan 和 Roth（2023），放松平行趋势：相对幅度边界假设试点后偏离平行趋势的每期变化不超过试点前最大变化的 Mbar 倍"
            f"（Mbar = {mbar}；目标为前{rm_zh}平均效果）；平滑度边界假设偏离的斜率每期变化不超过 M（M = 0 即按试点前线性趋势外推；"
            f"目标为前{sd_zh}平均效果）。临界值是置信区间仍不含0的最大 Mbar 或 M。",
            "Following Rambachan and Roth (2023), parallel trends is relaxed: relative magnitudes let the post-start "
            f"violation change each period by up to Mbar times the largest pre-start change (Mbar = "
            f"{', '.join(r.number(v) for v in s.rm_values)}; target: the mean effect over the first {rm_en}); "
            "smoothness lets the slope of the violation change by up to M per period (M = 0: the pre-start linear "
            f"trend continues; target: the mean effect over the first {sd_en}). The breakdown value is the largest "
            "Mbar or M at which the confidence set still excludes zero.")
        if any(self.src.optional("selection.matching", i.id) is not None for i in self.src.indicators):
            self.heading("选择偏差", "Selection", 2)
            self.paragraphs(
                "试点乡镇不是随机选出的。以乡镇特征（协变量）检验结论是否受选择影响：试点与对照乡镇的标准化均值差（Austin 2009）；"
                "倾向得分（对试点与否的 logit）匹配后的双重差分（PSM-DID，Heckman、Ichimura 和 Todd 1997；近邻匹配的标准误按 "
                "Abadie 和 Imbens 2006）；熵平衡（Hainmueller 2012）；以协变量调整的 Callaway–Sant'Anna（双重稳健，Sant'Anna 和 "
                "Zhao 2020；结果回归；逆概率加权，Abadie 2005）。所需假设为条件平行趋势：特征相同的试点与对照乡镇在没有试点时走势相同。"
                "异质性分析按特征分组，每组用本组乡镇，以随机化推断检验；机制分析为描述性，不是中介效应估计（Imai、Keele 和 "
                "Tingley 2010）。",
                "Pilot townships were not drawn at random. Township characteristics (covariates) test whether the "
                "conclusion depends on the selection: standardized mean differences between pilots and comparison "
                "townships (Austin 2009); difference-in-differences after matching on the propensity score (a logit of "
                "pilot status; PSM-DID, Heckman, Ichimura and Todd 1997; nearest-neighbour standard errors by Abadie "
                "and Imbens 2006); entropy balancing (Hainmueller 2012); Callaway–Sant'Anna adjusted for the covariates "
                "(doubly robust, Sant'Anna and Zhao 2020; outcome regression; inverse probability weighting, Abadie "
                "2005). The assumption is conditional parallel trends: pilots and comparison townships with the same "
                "characteristics would have moved alike without the pilot. Heterogeneity splits the townships by a "
                "characteristic, each group on its own townships with randomization inference; the mechanism analysis "
                "is descriptive, not a mediation estimate (Imai, Keele and Tingley 2010).")
        self.heading("参考文献", "References", 2)
        for reference in REFERENCES:
            p = self.doc.add_paragraph(reference)
            p.paragraph_format.left_indent = Cm(0.75)
            p.paragraph_format.first_line_indent = Cm(-0.75)

    def its_terms(self) -> tuple[str, str]:
        """The ITS model's calendar and COVID-19 terms at the analysis frequency (zh, en)."""
        study = self.src.study
        frequency, covid = study.analysis_frequency, study.covid.handling
        zh, en = [], []
        if frequency != "year":
            zh.append("年内季节项")
            en.append("seasonal terms within the year")
        if frequency == "month":  # on quarterly data the first quarter's term absorbs the festival
            zh.append("春节项")
            en.append("a Spring Festival term")
        if covid == "phases":
            zh.append("新冠疫情阶段项")
            en.append("COVID-19 phase terms")
        elif covid == "exclude":
            zh.append("剔除新冠疫情期")
            en.append("the COVID-19 periods left out")
        if not zh:
            return "无季节或疫情项", "no seasonal or COVID-19 terms"
        return "、".join(zh), ", ".join(en)

    def data_appendix(self) -> None:
        src, r = self.src, self.r
        manifest = src.manifest
        self.heading("附录二  数据", "Appendix B  Data", 1)
        self.heading("数据文件", "Data files", 2)
        paths, hashes = manifest.get("data_files"), manifest.get("data_files_sha256")
        if not paths or not hashes:
            raise EvaluationInputError(f"{src.folder / 'manifest.json'}: no data_files / data_files_sha256: rerun the "
                                       "batch with this version of the package")
        missing = sorted(set(paths) - set(hashes))
        if missing:
            raise EvaluationInputError(f"{src.folder / 'manifest.json'}: no SHA-256 of the data files {missing}")
        files = pd.DataFrame([{self.cell("文件", "File"): f"{self.cell(*FILE_ROLES.get(role, (role, role)))}\n{paths[role]}",
                               "SHA-256": hashes[role]} for role in paths], dtype=object)
        table = self.table(files, "数据文件及其 SHA-256 校验值", "Data files and their SHA-256",
                           [("注：SHA-256 可核对所用文件与存档文件是否一致。", "Note: the SHA-256 checks that the files used are "
                                                                "the files archived.")])
        for cell in table.columns[1].cells[1:]:
            for run in cell.paragraphs[0].runs:
                run.font.name, run.font.size = "Consolas", Pt(7)
        self.heading("乡镇", "Townships", 2)
        summary = src.quality_table("summary")
        counts = [r.count(v) if re.fullmatch(r"\d+", str(v)) else r.text(v) for v in summary["value"]]  # periods stay
        frame = pd.DataFrame({r.header("item"): [r.text(v) for v in summary["item"]], r.header("value"): counts},
                             dtype=object)
        self.table(frame, "面板概况", "The panel")
        pilots = src.quality_table("pilots")
        by_cohort = pilots.pivot_table(index="model", columns="cohort", values="townships", aggfunc="sum",
                                       fill_value=0)
        by_cohort.loc["__total"] = by_cohort.sum(axis=0)
        by_cohort["__total"] = by_cohort.sum(axis=1)
        total = self.say("合计", "Total")
        frame = pd.DataFrame({r.header("model"): [total if m == "__total" else str(m) for m in by_cohort.index]},
                             dtype=object)
        for cohort in by_cohort.columns:
            frame[total if cohort == "__total" else str(cohort)] = [r.count(v) for v in by_cohort[cohort]]
        self.table(frame, "各整合模式、各批次（试点开始时间）的试点乡镇数",
                   "Pilot townships by integration model and cohort (start)")
        self.heading("排除的乡镇与数据", "What was excluded and why", 2)
        excluded, incomplete = src.quality_table("excluded"), src.quality_table("incomplete")
        if excluded.empty:
            self.paragraphs("没有乡镇被排除。", "No township was excluded.")
        else:
            self.table(r.table(excluded), "排除的乡镇及原因", "Townships excluded and why")
        if incomplete.empty:
            self.paragraphs("所有乡镇的各期数据完整。", "Every township has every period and every cell.")
        else:
            self.table(r.table(incomplete, kinds={"indicator": "text"}), "数据不完整的乡镇（需要完整面板的方法不使用它们）",
                       "Townships with gaps (methods that need a complete panel leave them out)")
        loading = src.quality_table("loading")
        if not loading.empty:
            self.table(r.table(loading), "读取文件时的单位换算、删除的行和警告",
                       "Units converted, rows dropped and warnings when reading the files")
        self.heading("软件", "Software", 2)
        packages = manifest.get("packages", {})
        versions = ", ".join(f"{name} {version}" for name, version in packages.items())
        commit = manifest.get("git_commit") or DASH
        dirty = self.say("（有未提交的修改）", " (with uncommitted changes)") if manifest.get("git_dirty") else ""
        self.paragraphs(
            f"结果由 evaluation 软件包计算（代码版本 {commit}{dirty}，Python {manifest.get('python', DASH)}）：{versions}。",
            f"Results computed by the evaluation package (code version {commit}{dirty}, Python "
            f"{manifest.get('python', DASH)}): {versions}.")


FILE_ROLES = {"panel": ("乡镇面板数据", "Township panel"), "pilots": ("试点名单", "Pilot list"),
              "truth": ("真实效果（合成数据）", "True effects (synthetic data)")}

REFERENCES = (
    "Abadie A. Semiparametric difference-in-differences estimators. Review of Economic Studies. 2005;72(1):1-19.",
    "Abadie A, Imbens GW. Large sample properties of matching estimators for average treatment effects. "
    "Econometrica. 2006;74(1):235-267.",
    "Abadie A, Imbens GW. Matching on the estimated propensity score. Econometrica. 2016;84(2):781-807.",
    "Abadie A, Diamond A, Hainmueller J. Synthetic control methods for comparative case studies: estimating the "
    "effect of California's tobacco control program. Journal of the American Statistical Association. "
    "2010;105(490):493-505.",
    "Arkhangelsky D, Athey S, Hirshberg DA, Imbens GW, Wager S. Synthetic difference-in-differences. American "
    "Economic Review. 2021;111(12):4088-4118.",
    "Austin PC. Balance diagnostics for comparing the distribution of baseline covariates between treatment groups "
    "in propensity-score matched samples. Statistics in Medicine. 2009;28(25):3083-3107.",
    "Benjamini Y, Hochberg Y. Controlling the false discovery rate: a practical and powerful approach to multiple "
    "testing. Journal of the Royal Statistical Society: Series B. 1995;57(1):289-300.",
    "Bernal JL, Cummins S, Gasparrini A. Interrupted time series regression for the evaluation of public health "
    "interventions: a tutorial. International Journal of Epidemiology. 2017;46(1):348-355.",
    "Borusyak K, Jaravel X, Spiess J. Revisiting event-study designs: robust and efficient estimation. Review of "
    "Economic Studies. 2024;91(6):3253-3285.",
    "Callaway B, Sant'Anna PHC. Difference-in-differences with multiple time periods. Journal of Econometrics. "
    "2021;225(2):200-230.",
    "Goodman-Bacon A. Difference-in-differences with variation in treatment timing. Journal of Econometrics. "
    "2021;225(2):254-277.",
    "Hainmueller J. Entropy balancing for causal effects: a multivariate reweighting method to produce balanced "
    "samples in observational studies. Political Analysis. 2012;20(1):25-46.",
    "Hartman E, Hidalgo FD. An equivalence approach to balance and placebo tests. American Journal of Political "
    "Science. 2018;62(4):1000-1013.",
    "Heckman JJ, Ichimura H, Todd PE. Matching as an econometric evaluation estimator: evidence from evaluating a "
    "job training programme. Review of Economic Studies. 1997;64(4):605-654.",
    "Holm S. A simple sequentially rejective multiple test procedure. Scandinavian Journal of Statistics. "
    "1979;6(2):65-70.",
    "Imai K, Keele L, Tingley D. A general approach to causal mediation analysis. Psychological Methods. "
    "2010;15(4):309-334.",
    "MacKinnon JG, Webb MD. Randomization inference for difference-in-differences with few treated clusters. "
    "Journal of Econometrics. 2020;218(2):435-450.",
    "Rambachan A, Roth J. A more credible approach to parallel trends. Review of Economic Studies. "
    "2023;90(5):2555-2591.",
    "Romano JP, Wolf M. Stepwise multiple testing as formalized data snooping. Econometrica. 2005;73(4):1237-1282.",
    "Roth J. Pretest with caution: event-study estimates after testing for parallel trends. American Economic "
    "Review: Insights. 2022;4(3):305-322.",
    "Roth J, Sant'Anna PHC, Bilinski A, Poe J. What's trending in difference-in-differences? A synthesis of the "
    "recent econometrics literature. Journal of Econometrics. 2023;235(2):2218-2244.",
    "Sant'Anna PHC, Zhao J. Doubly robust difference-in-differences estimators. Journal of Econometrics. "
    "2020;219(1):101-122.",
    "Sun L, Abraham S. Estimating dynamic treatment effects in event studies with heterogeneous treatment effects. "
    "Journal of Econometrics. 2021;225(2):175-199.",
    "Webb MD. Reworking wild bootstrap-based inference for clustered errors. Canadian Journal of Economics. "
    "2023;56(3):839-858.",
    "Wooldridge JM. Simple approaches to nonlinear difference-in-differences with panel data. The Econometrics "
    "Journal. 2023;26(3):C31-C66.",
    "Wooldridge JM. Two-way fixed effects, the two-way Mundlak regression, and difference-in-differences "
    "estimators. SSRN Working Paper 3906345. 2021.",
)


def _unit_beside(name: str, unit: str, rate) -> str:
    """The unit to write beside an indicator's name: a rate whose name already says "per
    1,000 residents" adds only its period (``per month``)."""
    match = rate.fullmatch(unit)
    return match.group(2) if match and match.group(1) in name else unit


