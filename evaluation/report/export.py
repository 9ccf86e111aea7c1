"""The report's deliverables beside its pages, written from the published results store.

``evaluation batch`` writes them after each batch (once ``manifest.json`` is in place,
whose SHA-256 of the data files they quote) and ``evaluation export STUDY`` writes them on
their own:

* ``report.docx``: the Word report (:mod:`evaluation.report.word`);
* ``tables.xlsx`` and ``tables/*.csv``: every table, numbers as numbers
  (:mod:`evaluation.report.workbook`);
* ``regression_table.html`` and ``regression_table.tex``: the baseline DiD regression
  table as a three-line table (:mod:`evaluation.report.regression_table`).

Each file is written to a temporary name and renamed into place, so a reader never sees
half of one; the report's language is the study's ``report.language`` unless given.
"""

from __future__ import annotations

import html
from pathlib import Path

from evaluation.report.readable import Reader
from evaluation.report.store import write_file

# Each deliverable, as the index links it: (file or folder, (zh, en)).
DELIVERABLES = (
    ("report.docx", ("Word 报告", "Word report")),
    ("tables.xlsx", ("Excel 表格", "Excel workbook")),
    ("tables/", ("CSV 表格", "CSV tables")),
    ("regression_table.html", ("基线回归表（HTML）", "Baseline regression table (HTML)")),
    ("regression_table.tex", ("基线回归表（LaTeX）", "Baseline regression table (LaTeX)")),
)


def export_deliverables(folder: Path | str, study, language: str | None = None) -> list[Path]:
    """Write every deliverable of the published report in ``folder`` (its ``results/`` and
    ``manifest.json``); returns the paths written. A missing or incomplete store raises
    :class:`~evaluation.errors.EvaluationInputError` naming the file."""
    from evaluation.report.regression_table import THREE_LINE_CSS, regression_table
    from evaluation.report.word import write_word_report
    from evaluation.report.workbook import tables, write_csv_tables, write_workbook

    folder = Path(folder)
    language = language or study.report.language
    made = tables(folder, study, language)  # once, for the workbook and the CSV files
    written = [write_word_report(folder, study, language), write_workbook(folder, study, language, made=made)]
    written += write_csv_tables(folder, study, language, made=made)
    table = regression_table(folder, study, language)
    reader = Reader(language)
    title = html.escape(table.caption)
    page = (f'<!DOCTYPE html>\n<html lang="{"en" if reader.language == "en" else "zh-CN"}"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>body{{font-family:\"Noto Sans CJK SC\",\"Microsoft YaHei\",serif;"
            f"margin:2em}}{THREE_LINE_CSS}</style></head><body>\n{table.to_html(style=False)}\n</body></html>\n")
    written.append(_write_text(folder / "regression_table.html", page))
    written.append(_write_text(folder / "regression_table.tex", table.to_latex(label="tab:baseline-did") + "\n"))
    return written


def _write_text(path: Path, text: str) -> Path:
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
