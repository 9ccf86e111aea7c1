"""The deliverables' helper process (:class:`evaluation.report.export.Helper`): the
workbook and the CSV files are written by a second Python process while the parent writes
the Word report. Its result comes back, its errors are raised in the parent with their
own type and message, a helper never given work is ended, and a failing export leaves no
file behind."""

from __future__ import annotations

import os

import pytest
from study_builders import small_demo, write_study

from evaluation.errors import EvaluationInputError
from evaluation.report.export import Helper, export_deliverables
from evaluation.report.word import write_word_report
from evaluation.study.config import load_study


def test_the_function_runs_in_another_process_and_its_result_comes_back():
    helper = Helper()
    helper.submit(os.getpid)
    child = helper.result()
    helper.kill()
    assert isinstance(child, int) and child != os.getpid()


def test_an_error_in_the_helper_is_raised_in_the_parent_with_its_type_and_message(tmp_path):
    study = load_study(write_study(tmp_path / "study", *small_demo()[:2]).study)
    helper = Helper()
    helper.submit(write_word_report, tmp_path, study, "zh")
    with pytest.raises(EvaluationInputError, match="manifest"):
        helper.result()
    helper.kill()
    assert not (tmp_path / "report.docx").exists()


def test_a_helper_never_given_work_is_ended():
    helper = Helper()
    helper.kill()
    assert helper._child.poll() is not None


@pytest.mark.parametrize("parallel", [True, False])
def test_a_folder_without_a_manifest_is_refused_either_way(tmp_path, parallel):
    study = load_study(write_study(tmp_path / "study", *small_demo()[:2]).study)
    folder = tmp_path / "report"
    folder.mkdir()
    helper = Helper() if parallel else None
    with pytest.raises(EvaluationInputError, match="manifest"):
        export_deliverables(folder, study, parallel=parallel, helper=helper)
    assert sorted(p.name for p in folder.iterdir()) == []
    assert helper is None or helper._child.poll() is not None  # ended with the export



@pytest.mark.parametrize(("function", "argument", "expected"), [
    (print, "a line on stdout", None),                       # Python's stdout
    (os.system, "echo a line from another process", 0),      # file descriptor 1, as C code writes
])
def test_what_the_work_prints_does_not_spoil_its_result(function, argument, expected):
    helper = Helper()
    helper.submit(function, argument)
    assert helper.result() == expected
    helper.kill()
