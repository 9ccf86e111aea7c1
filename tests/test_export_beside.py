"""The deliverables' second process (:func:`evaluation.report.export._beside`): the Word
report is written by a child Python process while the parent writes the workbook. Its
result comes back, its errors are raised in the parent with their own type and message,
and a failing export leaves no Word file behind."""

from __future__ import annotations

import os

import pytest
from study_builders import small_demo, write_study

from evaluation.errors import EvaluationInputError
from evaluation.report.export import _beside, export_deliverables
from evaluation.report.word import write_word_report
from evaluation.study.config import load_study


def test_the_function_runs_in_another_process_and_its_result_comes_back():
    with _beside(True, os.getpid) as result:
        child = result()
    assert isinstance(child, int) and child != os.getpid()
    with _beside(False, os.getpid) as result:  # not parallel: here
        assert result() == os.getpid()


def test_an_error_in_the_child_is_raised_in_the_parent_with_its_type_and_message(tmp_path):
    study = load_study(write_study(tmp_path / "study", *small_demo()[:2]).study)
    with pytest.raises(EvaluationInputError, match="manifest"), _beside(True, write_word_report, tmp_path, study,
                                                                         "zh") as result:
        result()
    assert not (tmp_path / "report.docx").exists()


@pytest.mark.parametrize("parallel", [True, False])
def test_a_folder_without_a_manifest_is_refused_either_way(tmp_path, parallel):
    study = load_study(write_study(tmp_path / "study", *small_demo()[:2]).study)
    folder = tmp_path / "report"
    folder.mkdir()
    with pytest.raises(EvaluationInputError, match="manifest"):
        export_deliverables(folder, study, parallel=parallel)
    assert sorted(p.name for p in folder.iterdir()) == []
