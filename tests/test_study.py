"""The study file: typed, paths relative to it, every bad key named."""

from __future__ import annotations

import pytest

from evaluation.cli import main
from evaluation.errors import StudyConfigError
from evaluation.paths import DEMO_STUDY
from evaluation.study.config import load_study
from tests.conftest import edit_config


def test_demo_study_loads_with_resolved_paths():
    study = load_study(DEMO_STUDY)
    assert study.id == "demo" and study.synthetic
    assert study.panel_path.is_file() and study.panel_path.parent.name == "demo"
    assert study.data.columns["乡镇编码"] == "township_id"
    assert study.analysis.seed == 20261123
    assert [str(p) for p in study.window_periods] == ["2016-01", "2023-12"]
    assert len(study.selected_indicators()) == 9
    covid = study.covid_periods()
    assert [str(p) for p in covid] == ["2020-01", "2020-02", "2020-03", "2020-04", "2022-12", "2023-01"]


@pytest.mark.parametrize("dotted, value, key, fragment", [
    ("data.pannel", "x.csv", "data.pannel", "unknown key"),
    ("colour", "blue", "colour", "unknown key"),
    ("analysis.seed", "abc", "analysis.seed", "integer"),
    ("analysis.seed", KeyError, "analysis.seed", "required key is missing"),
    ("frequency", "weekly", "frequency", "'month', 'quarter' or 'year'"),
    ("synthetic", "perhaps", "synthetic", "boolean"),
    ("data.panel", "data/nowhere.csv", "data.panel", "file not found"),
    ("data.pilots", "missing.xlsx", "data.pilots", "file not found"),
    ("indicators", ["county_internal_visit_rate", "happiness"], "indicators.1", "unknown indicator 'happiness'"),
    ("targets", {"happiness": 0.5}, "targets.happiness", "unknown indicator"),
    ("window.start", "2019-13", "window.start", "YYYY-MM"),
    ("window", {"start": "2019-12", "end": "2019-01"}, "window", "start is after end"),
    ("covid.handling", "pretend", "covid.handling", "'phases', 'exclude' or 'ignore'"),
    ("analysis.alpha", 1.5, "analysis.alpha", "less than or equal to 0.5"),
    ("analysis.cluster", "village", "analysis.cluster", "'township' or 'county'"),
    ("analysis.draws.randomization", 10, "analysis.draws.randomization", "greater than or equal to 99"),
    ("analysis.placebo_shift", "1 fortnight", "analysis.placebo_shift", "such as '1 year'"),
    ("analysis.event_window", ["1 year", "2 years"], "analysis.event_window", "negative first"),
    ("analysis.its.phase_in", "half a year", "analysis.its.phase_in", "such as '1 year'"),
    ("analysis.pretend", 1, "analysis.pretend", "unknown key"),
    ("inference", {"seed": 1}, "inference", "set in 'analysis:'"),
    ("id", "my study", "id", "pattern"),
    ("data.pilot_columns", {"乡镇编码": "township_id", "开始": "start_month"}, "data.pilot_columns",
     "unknown pilot-table column"),
])
def test_bad_study_key_is_named(study_files, dotted, value, key, fragment):
    config = study_files.config()
    edit_config(config, dotted, value)
    study_files.write_config(config)
    with pytest.raises(StudyConfigError) as info:
        load_study(study_files.study)
    message = str(info.value)
    assert f"key '{key}'" in message and fragment in message, message
    assert str(study_files.study) in message


def test_cli_exit_code_for_bad_study(study_files, capsys):
    config = study_files.config()
    config["extra"] = 1
    study_files.write_config(config)
    assert main(["validate", str(study_files.study), "--write-panel"]) == 2
    assert "key 'extra': unknown key" in capsys.readouterr().err
    assert not study_files.outputs.exists()


def test_missing_study_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none.yml")]) == 2
    assert "study file not found" in capsys.readouterr().err


def test_year_and_quarter_windows_accept_yaml_numbers(study_files):
    config = study_files.config()
    config["frequency"] = "year"
    config["window"] = {"start": 2016, "end": 2023}
    config["covid"] = {"handling": "exclude", "phases": [{"name": "w", "start": 2020, "end": 2020}]}
    study_files.write_config(config)
    study = load_study(study_files.study)
    assert [str(p) for p in study.window_periods] == ["2016", "2023"]
    assert [str(p) for p in study.covid_periods()] == ["2020"]


def test_target_override(study_files):
    config = study_files.config()
    config["targets"] = {"county_internal_visit_rate": 0.92, "primary_care_visit_share": None,
                         "out_county_referral_rate": 0.1}
    study_files.write_config(config)
    chosen = {i.id: i for i in load_study(study_files.study).selected_indicators()}
    assert chosen["county_internal_visit_rate"].target.value == 0.92
    assert chosen["county_internal_visit_rate"].target.comparison == ">="
    assert "study override" in chosen["county_internal_visit_rate"].target.source
    assert chosen["primary_care_visit_share"].target is None
    # a target for an indicator that had none takes the improving direction
    assert chosen["out_county_referral_rate"].target.comparison == "<="


def test_plan_lengths_follow_the_frequency():
    from evaluation.study.plan import AnalysisPlan, DurationError, periods

    assert [periods("1 year", f) for f in ("month", "quarter", "year")] == [12, 4, 1]
    assert periods("6 months", "quarter") == 2 and periods(-3, "month") == -3 and periods("2 periods", "year") == 2
    with pytest.raises(DurationError, match="not a whole number of years"):
        periods("6 months", "year")
    monthly, quarterly = AnalysisPlan(seed=1).resolve("month"), AnalysisPlan(seed=1).resolve("quarter")
    assert monthly.event_window == (-12, 24) and quarterly.event_window == (-4, 8)
    assert (monthly.placebo_shift, quarterly.placebo_shift) == (12, 4)  # one year either way
    assert (monthly.its_phase_in, quarterly.its_phase_in, monthly.target_window) == (12, 4, 12)
    assert AnalysisPlan(seed=1).resolve("month", fast=True).draws_randomization == 199


def test_demo_plan_writes_out_the_defaults():
    """The demo study's analysis block is the documented defaults (so they reproduce the demo
    report), except the keys that name its own covariates and indicators."""
    from evaluation.study.plan import AnalysisPlan

    study = load_study(DEMO_STUDY)
    own = ("covariates", "heterogeneity", "mechanisms")
    assert study.analysis.model_copy(update=dict.fromkeys(own)) == AnalysisPlan(seed=study.analysis.seed).model_copy(
        update=dict.fromkeys(own))
    assert study.analysis.mechanisms and study.analysis.heterogeneity
