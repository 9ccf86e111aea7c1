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
                        parallel: bool = True, helper: Helper | None = None) -> list[Path]:
    """Write every deliverable of the published report in ``folder`` (its ``results/`` and
    ``manifest.json``); returns the paths written. A missing or incomplete store raises
    :class:`~evaluation.errors.EvaluationInputError` naming the file.

    With ``parallel`` (the default) the workbook, the CSV files and the regression table
    are written by a second process (``helper``, when one was started ahead: see
    :class:`Helper`) while this one writes the Word report, the longest (its figures): on
    a 2-core machine the last step of a batch takes about the longer of the two instead of
    their sum. The files are the same either way."""
    folder = Path(folder)
    language = language or study.report.language
    if not parallel:
        return [_word_report(folder, study, language), *_tables(folder, study, language)]
    helper = helper or Helper()
    try:
        helper.submit(_tables, folder, study, language)
        word = _word_report(folder, study, language)
        return [word, *helper.result()]
    finally:
        helper.kill()


def warm_imports() -> None:
    """Import what :func:`export_deliverables` writes the Word report with in this process
    (``evaluation batch`` calls it while a study's summary chapter runs, so that its last
    step does not wait for Matplotlib and python-docx)."""
    import evaluation.report.word  # noqa: F401


def _word_report(folder: Path, study, language: str) -> Path:
    from evaluation.report.word import write_word_report

    return write_word_report(folder, study, language)


def _tables(folder: Path, study, language: str) -> list[Path]:
    """The workbook, the CSV files (the same tables, made once) and the regression table."""
    from evaluation.report.workbook import tables, write_csv_tables, write_workbook

    made = tables(folder, study, language)
    return [write_workbook(folder, study, language, made=made), *write_csv_tables(folder, study, language, made=made),
            *_regression_tables(folder, study, language)]


# The helper process: imports what the tables are written with, then reads (function, args)
# pickled on its stdin and writes (True, result) or (False, exception) pickled on its stdout
# (its own prints and C libraries' output go to its stderr).
_CHILD = """
import os, pickle, sys
from evaluation.report.batch import die_with_parent
die_with_parent(int(sys.argv[1]))
answer = os.fdopen(os.dup(1), "wb")  # the pipe to the parent, for the outcome only:
os.dup2(2, 1)                        # what anything prints goes with the errors
import evaluation.report.regression_table, evaluation.report.workbook  # while the parent still works
task = sys.stdin.buffer.read()
if task:
    function, args = pickle.loads(task)
    try:
        outcome = (True, function(*args))
    except Exception as exc:  # EvaluationError and the like: raised again in the parent
        outcome = (False, exc)
    pickle.dump(outcome, answer)
    answer.close()
"""


class Helper:
    """A second Python process for one piece of the deliverables: a fresh interpreter
    (nothing of this process's threads, state or main script is copied or re-run) that dies
    with this one. Started ahead (``evaluation batch`` starts one when a study's summary
    chapter starts), it has its imports done when the work comes. :meth:`submit` sends a
    function and its arguments (picklable), :meth:`result` waits for what it returns and
    raises here what it raised, :meth:`kill` ends it (a helper never given work, too)."""

    def __init__(self):
        self._errors = tempfile.TemporaryFile()  # not a pipe: a chatty child cannot block on it
        self._child = subprocess.Popen([sys.executable, "-c", _CHILD, str(os.getpid())], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=self._errors)
        self._name = None

    def submit(self, function, *args) -> None:
        self._name = function.__name__
        with contextlib.suppress(BrokenPipeError):  # the child ended already: result() says why
            self._child.stdin.write(pickle.dumps((function, args)))
            self._child.stdin.close()

    def result(self):
        out = self._child.stdout.read()
        code = self._child.wait()
        if code != 0 or not out:
            self._errors.seek(0)
            raise RuntimeError(f"{self._name} in a helper process exited {code}:\n"
                               + self._errors.read().decode("utf-8", "replace")[-3000:])
        ok, value = pickle.loads(out)
        if not ok:
            raise value
        return value

    def kill(self) -> None:
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        for stream in (self._child.stdin, self._child.stdout, self._errors):
            with contextlib.suppress(OSError, ValueError):
                stream.close()


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
