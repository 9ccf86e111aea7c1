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

import contextlib
import html
import os
import pickle
import subprocess
import sys
import tempfile
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


def export_deliverables(folder: Path | str, study, language: str | None = None, *,
                        parallel: bool = True) -> list[Path]:
    """Write every deliverable of the published report in ``folder`` (its ``results/`` and
    ``manifest.json``); returns the paths written. A missing or incomplete store raises
    :class:`~evaluation.errors.EvaluationInputError` naming the file.

    With ``parallel`` (the default) the Word report, the longest to write (its figures),
    is written by a second process while this one writes the workbook, the CSV files and
    the regression table: the batch's last step on a 2-core machine takes the Word report's
    time instead of the sum. The files are the same either way."""
    from evaluation.report.workbook import tables, write_csv_tables, write_workbook

    folder = Path(folder)
    language = language or study.report.language
    with _beside(parallel, _word_report, folder, study, language) as word:
        made = tables(folder, study, language)  # once, for the workbook and the CSV files
        written = [write_workbook(folder, study, language, made=made)]
        written += write_csv_tables(folder, study, language, made=made)
        written += _regression_tables(folder, study, language)
        return [word(), *written]


def _word_report(folder: Path, study, language: str) -> Path:
    from evaluation.report.word import write_word_report

    return write_word_report(folder, study, language)


# The child process of :func:`_beside`: reads (parent pid, function, args) pickled on its
# stdin, writes (True, result) or (False, exception) pickled on its stdout.
_CHILD = """
import pickle, sys
from evaluation.report.batch import die_with_parent
parent, function, args = pickle.load(sys.stdin.buffer)
die_with_parent(parent)
try:
    outcome = (True, function(*args))
except Exception as exc:  # EvaluationError and the like: raised again in the parent
    outcome = (False, exc)
pickle.dump(outcome, sys.stdout.buffer)
"""


@contextlib.contextmanager
def _beside(parallel: bool, function, *args):
    """Run ``function(*args)`` in a child Python process (a fresh interpreter: nothing of
    this process's threads, state or main script is copied or re-run; it dies with this one)
    while the block runs; yields a callable that waits for its result and raises its
    exception here. Without ``parallel``, the callable runs it here."""
    if not parallel:
        yield lambda: function(*args)
        return
    with tempfile.TemporaryFile() as task:
        pickle.dump((os.getpid(), function, args), task)
        task.seek(0)
        child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=task, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)

    def result():
        out, err = child.communicate()
        if child.returncode != 0 or not out:
            raise RuntimeError(f"{function.__name__} in a child process exited {child.returncode}:\n"
                               + err.decode("utf-8", "replace")[-3000:])
        ok, value = pickle.loads(out)
        if not ok:
            raise value
        return value

    try:
        yield result
    finally:
        if child.poll() is None:  # the block failed before waiting: the child is not needed
            child.kill()
            child.communicate()


def _regression_tables(folder: Path, study, language: str) -> list[Path]:
    """The baseline DiD regression table as an HTML page and a LaTeX table."""
    from evaluation.report.regression_table import THREE_LINE_CSS, regression_table

    table = regression_table(folder, study, language)
    reader = Reader(language)
    title = html.escape(table.caption)
    page = (f'<!DOCTYPE html>\n<html lang="{"en" if reader.language == "en" else "zh-CN"}"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>body{{font-family:\"Noto Sans CJK SC\",\"Microsoft YaHei\",serif;"
            f"margin:2em}}{THREE_LINE_CSS}</style></head><body>\n{table.to_html(style=False)}\n</body></html>\n")
    return [_write_text(folder / "regression_table.html", page),
            _write_text(folder / "regression_table.tex", table.to_latex(label="tab:baseline-did") + "\n")]


def _write_text(path: Path, text: str) -> Path:
    return write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
