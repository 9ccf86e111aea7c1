"""Covariates in the data contract: a township table, baseline values, time-varying controls.

Each rejection names the file, the row and the user's header, exits with code 2 and writes
nothing; empty cells and absent townships are listed, not errors (the methods leave those
townships out and say so)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from study_builders import small_demo, to_frequency, write_study

from evaluation.cli import main
from evaluation.data.panel import load_panel
from evaluation.errors import DataValidationError, StudyConfigError
from evaluation.study.config import load_study

TABLE_COLUMNS = {"乡镇编码": "township_id", "到县城距离（公里）": "distance_km", "床位数": "beds", "是否山区": "mountainous"}


def _table(panel: pd.DataFrame, pilots: pd.DataFrame) -> pd.DataFrame:
    ids = sorted(panel["township_id"].unique())
    rng = np.random.default_rng(5)
    pilot = np.isin(ids, pilots["township_id"])
    return pd.DataFrame({
        "乡镇编码": ids,
        "到县城距离（公里）": np.round(rng.uniform(5, 60, len(ids)) - 10 * pilot, 1),
        "床位数": rng.integers(10, 80, len(ids)),
        "是否山区": np.where(rng.uniform(size=len(ids)) < 0.4, "是", "否"),
    })


def _covariate_study(tmp_path, *, table=None, block=None, analysis=None, frequency="month", extra_columns=None):
    panel, pilots, _ = small_demo()
    if frequency != "month":
        panel, pilots = to_frequency(panel, pilots, frequency)
    if extra_columns:
        panel = panel.assign(**extra_columns(panel))
    table = _table(panel, pilots) if table is None else table(_table(panel, pilots))
    root = tmp_path / "study"
    root.mkdir()
    table.to_csv(root / "townships.csv", index=False)
    declaration = {"table": {"file": "townships.csv", "columns": dict(TABLE_COLUMNS)}} | (block or {})
    built = write_study(root, panel, pilots, frequency=frequency,
                        extra={"covariates": declaration})
    config = yaml.safe_load(built.study.read_text(encoding="utf-8"))
    config["analysis"] |= analysis or {}
    if extra_columns:
        for name in extra_columns(panel.head(1)):
            config["data"]["columns"][name] = name
    built.study.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return built


def test_township_table_is_read_and_attached(tmp_path):
    built = _covariate_study(tmp_path)
    study = load_study(built.study)
    panel = load_panel(study)
    cov = panel.covariates
    assert cov.names == ["distance_km", "beds", "mountainous"]
    assert cov.labels()["distance_km"] == "到县城距离（公里）"      # the user's header labels the covariate
    assert cov.kind("mountainous") == "binary" and cov.kind("beds") == "continuous"
    table = _table(built.panel, built.pilots).set_index("乡镇编码")
    expected = (table["是否山区"] == "是").astype(float)
    got = cov.values["mountainous"]
    assert (got.sort_index() == expected.sort_index().to_numpy()).all()
    # attached to every row, constant within township
    assert panel.data.groupby("township_id")["beds"].nunique().eq(1).all()
    assert study.settings().covariates == ("distance_km", "beds", "mountainous")
    assert cov.missing.empty and not cov.constant


def test_empty_cells_and_absent_townships_are_listed_not_rejected(tmp_path):
    def holes(t):
        t = t.copy()
        t.loc[2, "床位数"] = None
        return t.drop(index=5)
    built = _covariate_study(tmp_path, table=holes)
    cov = load_panel(load_study(built.study)).covariates
    t = _table(built.panel, built.pilots)
    reasons = {(r.township_id, r.covariate): r.reason for r in cov.missing.itertuples()}
    assert reasons[(t.at[2, "乡镇编码"], "beds")] == "empty cell"
    assert reasons[(t.at[5, "乡镇编码"], "distance_km")] == "not in the township table"
    assert len(cov.complete(["distance_km", "beds"])) == len(t) - 2
    assert any("lack a covariate value" in n for n in cov.notes)


def test_constant_covariate_is_noted(tmp_path):
    built = _covariate_study(tmp_path, table=lambda t: t.assign(床位数=30))
    cov = load_panel(load_study(built.study)).covariates
    assert cov.constant == ["beds"]
    assert cov.usable(["distance_km", "beds"]) == (["distance_km"], ["beds"])
    assert any("'beds' has one value" in n for n in cov.notes)


@pytest.mark.parametrize("corrupt, block, fragments", [
    (lambda t: t.astype({"床位数": object}).assign(床位数=lambda d: d["床位数"].where(d.index != 3, "约30")), None,
     ["townships.csv", "row 5", "床位数", "text in a numeric cell"]),
    (lambda t: t.assign(是否山区=lambda d: d["是否山区"].where(d.index != 4, "半山区")),
     {"kinds": {"mountainous": "binary"}}, ["townships.csv", "row 6", "是否山区", "neither yes nor no"]),
    (lambda t: pd.concat([t, t.iloc[[1]]], ignore_index=True), None,
     ["townships.csv", "乡镇编码", "more than once"]),
    (lambda t: t.assign(乡镇编码="X" + t["乡镇编码"].astype(str)), None,
     ["townships.csv", "乡镇编码", "none of the table's"]),
])
def test_bad_table_is_rejected_naming_the_culprit(tmp_path, capsys, corrupt, block, fragments):
    built = _covariate_study(tmp_path, table=corrupt, block=block)
    with pytest.raises(DataValidationError):
        load_panel(load_study(built.study))
    assert main(["validate", str(built.study), "--write-panel"]) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (built.root / "outputs").exists()


def test_unknown_mapped_column_is_refused_not_dropped(tmp_path):
    built = _covariate_study(tmp_path)
    config = yaml.safe_load(built.study.read_text(encoding="utf-8"))
    config["data"]["columns"]["备注"] = "notes"
    built.study.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    with pytest.raises(StudyConfigError) as info:
        load_study(built.study)
    assert "data.columns.备注" in str(info.value) and "covariates.time_varying" in str(info.value)


@pytest.mark.parametrize("analysis, key", [
    ({"covariates": ["distance_km", "altitude"]}, "analysis.covariates.1"),
    ({"heterogeneity": ["beds", "beds"]}, "analysis.heterogeneity"),
    ({"controls": ["beds"]}, "analysis.controls.0"),
    ({"mechanisms": {"county_internal_visit_rate": ["county_internal_visit_rate"]}},
     "analysis.mechanisms.county_internal_visit_rate.0"),
    ({"mechanisms": {"county_internal_visit_rate": ["services_offered"]}},
     "analysis.mechanisms.county_internal_visit_rate.0"),     # not among the study's indicators
    ({"matching": {"method": "radius"}}, "analysis.matching.method"),
])
def test_plan_keys_name_declared_covariates(tmp_path, analysis, key):
    built = _covariate_study(tmp_path, analysis=analysis)
    with pytest.raises(StudyConfigError) as info:
        load_study(built.study)
    assert key in str(info.value)


def test_baseline_values_from_the_panel(tmp_path):
    block = {"baseline": {"start": "2016-01", "end": "2016-12", "columns": ["population"],
                          "indicators": ["county_internal_visit_rate"]}}
    built = _covariate_study(tmp_path, block=block)
    panel = load_panel(load_study(built.study))
    cov = panel.covariates
    raw = built.panel[built.panel["period"].astype(str).str.startswith("2016")]
    expected_pop = raw.groupby("township_id")["population"].mean()
    assert np.allclose(cov.values["baseline_population"].sort_index(), expected_pop.sort_index(), rtol=1e-12)
    sums = raw.groupby("township_id")[["visits_in_county", "visits_total"]].sum()
    share = sums["visits_in_county"] / sums["visits_total"]
    assert np.allclose(cov.values["baseline_county_internal_visit_rate"].sort_index(), share.sort_index(),
                       rtol=1e-12)
    assert cov.labels()["baseline_population"].startswith("基线常住人口")


def test_baseline_window_must_end_before_the_first_pilot(tmp_path, capsys):
    block = {"baseline": {"start": "2017-01", "end": "2018-12", "columns": ["population"]}}
    built = _covariate_study(tmp_path, block=block)
    assert main(["validate", str(built.study)]) == 2
    assert "reaches the first pilot start" in capsys.readouterr().err


def test_time_varying_control_is_kept_and_averaged_by_quarter(tmp_path):
    def doctors(panel):
        return {"doctors": (np.arange(len(panel)) % 7 + 10).astype(float)}
    built = _covariate_study(tmp_path, block={"time_varying": ["doctors"]}, extra_columns=doctors,
                             analysis={"frequency": "quarter"})
    study = load_study(built.study)
    assert study.settings().controls == ("doctors",)
    panel = load_panel(study)
    raw = built.panel.assign(**doctors(built.panel))
    raw["quarter"] = pd.PeriodIndex(raw["period"], freq="M").asfreq("Q")
    expected = raw.groupby(["township_id", "quarter"])["doctors"].mean()
    got = panel.data.set_index(["township_id", "period"])["doctors"]
    assert np.allclose(got.sort_index().to_numpy(), expected.loc[got.index].to_numpy())
    assert panel.covariates.time_varying == ["doctors"]
