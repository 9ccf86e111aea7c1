"""The selection chapter (选择偏差) on a study with covariates: what it stores equals the
estimators called directly (PSM-DID, balance, heterogeneity), and what it says when the
covariates cannot support a method (missing values, a constant covariate, perfect
separation). The estimators themselves are checked against peers and published numbers
in test_matching.py, test_balance.py and test_heterogeneity.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from study_builders import small_demo, write_study

from evaluation.diagnostics.balance import balance_table
from evaluation.estimators.matching import psm_did
from evaluation.report import chapters
from evaluation.report.batch import plan

INDICATOR = "county_internal_visit_rate"
COLUMNS = {"乡镇编码": "township_id", "到县城距离（公里）": "distance_km", "床位数": "beds", "是否山区": "mountainous"}


def _table(panel, pilots, *, separate=False, constant=False, hole=False):
    ids = sorted(panel["township_id"].unique())
    rng = np.random.default_rng(11)
    pilot = np.isin(ids, pilots["township_id"])
    distance = rng.uniform(5, 60, len(ids)) - 12 * pilot
    if separate:  # every pilot nearer than every comparison township
        distance = np.where(pilot, rng.uniform(1, 9, len(ids)), rng.uniform(10, 60, len(ids)))
    table = pd.DataFrame({"乡镇编码": ids, "到县城距离（公里）": distance.round(1),
                          "床位数": 30 if constant else rng.integers(10, 80, len(ids)),
                          "是否山区": np.where(rng.uniform(size=len(ids)) < 0.4, "是", "否")})
    if hole:
        table = table.astype({"床位数": object})
        table.loc[3, "床位数"] = ""
    return table


def _study(tmp_path, mechanisms=False, **table_options):
    panel, pilots, _ = small_demo()
    root = tmp_path / "study"
    root.mkdir()
    _table(panel, pilots, **table_options).to_csv(root / "townships.csv", index=False)
    indicators = [INDICATOR, "services_offered"] if mechanisms else [INDICATOR]
    built = write_study(root, panel, pilots, indicators=indicators,
                        extra={"covariates": {"table": {"file": "townships.csv", "columns": dict(COLUMNS)}}})
    if mechanisms:
        config = yaml.safe_load(built.study.read_text(encoding="utf-8"))
        config["analysis"]["mechanisms"] = {INDICATOR: ["services_offered"]}
        built.study.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return built


def _open(built, tmp_path, indicator=INDICATOR, chapter="selection"):
    return chapters.open_chapter(chapter, built.study, indicator, fast=True, results_dir=tmp_path / "results")


def test_stored_results_equal_the_estimators_called_directly(tmp_path):
    built = _study(tmp_path, hole=True)
    ctx = _open(built, tmp_path)
    page = chapters.selection(ctx)
    frame, used, constant, missing = chapters.covariate_frame(ctx)
    assert used == ["distance_km", "beds", "mountainous"] and constant == []
    hole = _table(built.panel, built.pilots).at[3, "乡镇编码"]
    assert list(missing["township_id"]) == [hole] and hole not in set(frame["township_id"])
    s = ctx.settings
    direct = psm_did(frame, outcome="value", unit="township_id", time="time", cohort="first_treat", covariates=used,
                     method=s.matching_method, neighbours=s.matching_neighbours, replacement=s.matching_replacement,
                     caliper=s.matching_caliper, event_window=s.event_window, alpha=s.alpha, seed=s.seed)
    stored = ctx.result("selection.matching")
    att = stored.effects[stored.effects["estimand"] == "att"].iloc[0]
    assert att["estimate"] == pytest.approx(direct.get("att").estimate, abs=1e-12)
    assert att["std_error"] == pytest.approx(direct.get("att").std_error, abs=1e-12)
    expected = balance_table(frame, unit="township_id", cohort="first_treat", covariates=used,
                             weights=direct.diagnostics["weights"])
    got = stored.tables["balance"]
    assert np.allclose(got["smd_before"], expected["smd_before"], atol=1e-12)
    assert np.allclose(got["smd_after"], expected["smd_after"], atol=1e-12)
    assert np.allclose(got["smd_entropy"], 0, atol=1e-6)        # entropy balancing equalises the means
    township = ctx.township_name(hole)
    assert township in page["used"] and "床位数" in page["used"] and "空单元格" in page["used"]
    assert not isinstance(page["estimates"], str) and len(page["estimates"]) >= 4
    assert len(page["heterogeneity"]) == 6  # three covariates, two subgroups each


def test_constant_covariate_is_left_out_and_said(tmp_path):
    ctx = _open(_study(tmp_path, constant=True), tmp_path)
    page = chapters.selection(ctx)
    assert ctx.result("selection.matching").values["constant"] == ["beds"]
    assert "床位数在所有乡镇取值相同，未纳入" in page["used"]
    het = ctx.result("selection.heterogeneity")
    assert "beds" not in set(het.effects["by"])


def test_perfect_separation_is_named_and_balance_before_still_shown(tmp_path):
    ctx = _open(_study(tmp_path, separate=True), tmp_path)
    page = chapters.selection(ctx)
    stored = ctx.result("selection.matching")
    reason = stored.values["matching_not_estimable"]
    assert "distance_km" in reason and "perfectly predicted" in reason
    assert "smd_before" in stored.tables["balance"] and "smd_after" not in stored.tables["balance"]
    assert "未能进行倾向得分匹配" in page["matching_note"]
    assert not isinstance(page["balance"], str)


def test_mechanisms_read_the_stored_randomization_results(tmp_path):
    built = _study(tmp_path, mechanisms=True)
    ctx = _open(built, tmp_path, indicator=None, chapter="summary")
    table = chapters.mechanisms(ctx)
    assert table is not None and len(table) == 2
    for ind in ctx.study.selected_indicators():
        ri = ctx.for_indicator(ind).result("robustness.randomization").effects.iloc[0]
        name = ctx.reader.name(ind)
        row = table[[name in set(r) for r in table.astype(str).itertuples(index=False)]]
        assert ctx.reader.effect(ri["estimate"], ind) in set(row.iloc[0].astype(str))
    assert "不是中介效应" in table.attrs["note"]


def test_the_chapter_runs_only_for_studies_with_covariates(tmp_path):
    with_cov = _study(tmp_path)
    assert {r.chapter for r in plan(with_cov.study)} >= {"selection"}
    panel, pilots, _ = small_demo()
    without = write_study(tmp_path / "plain", panel, pilots)
    assert "selection" not in {r.chapter for r in plan(without.study)}


def test_time_varying_controls_enter_two_way_fixed_effects(tmp_path):
    from evaluation.estimators.did import twfe
    from evaluation.inference.few_clusters import randomization_inference

    panel, pilots, _ = small_demo()
    panel = panel.assign(doctors=(np.arange(len(panel)) % 7 + 10).astype(float))
    root = tmp_path / "study"
    root.mkdir()
    _table(panel, pilots).to_csv(root / "townships.csv", index=False)
    built = write_study(root, panel, pilots, indicators=[INDICATOR], extra={"covariates": {
        "table": {"file": "townships.csv", "columns": dict(COLUMNS)}, "time_varying": ["doctors"]}})
    config = yaml.safe_load(built.study.read_text(encoding="utf-8"))
    config["data"]["columns"]["doctors"] = "doctors"
    built.study.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    ctx = _open(built, tmp_path)
    stored = ctx.result("selection.adjusted").effects
    got = stored[stored["section"] == "twfe_controls"].iloc[0]
    frame, *_ = chapters.covariate_frame(ctx)
    direct = twfe(frame, outcome="value", unit="township_id", time="time", cohort="first_treat",
                  covariates=["doctors"], cluster=ctx.settings.cluster, alpha=ctx.settings.alpha)
    ri = randomization_inference(direct, draws=ctx.settings.draws_randomization, seed=ctx.settings.seed,
                                 alpha=ctx.settings.alpha)
    assert got["estimate"] == pytest.approx(direct.effects[0].estimate, abs=1e-12)
    assert got["p_value"] == pytest.approx(ri.effects[0].p_value, abs=1e-12)
    assert got["inference"].startswith("randomization inference")
