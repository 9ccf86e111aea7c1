"""The indicator catalogue and indicator values on a hand-computed panel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.study.catalogue import compute_indicators, load_catalogue, required_columns, share_pairs

REQUIRED = {
    "county_internal_visit_rate": ("县域内就诊率", "share", "increase", 0.90),
    "out_county_referral_rate": ("外转率", "share", "decrease", None),
    "primary_care_visit_share": ("基层诊疗量占比", "share", "increase", 0.65),
    "thc_outpatient_visits_per_1000": ("乡镇卫生院门急诊人次", "rate", "increase", None),
    "thc_admissions_per_1000": ("乡镇卫生院住院人次", "rate", "increase", None),
    "cost_per_admission": ("次均住院费用", "mean", "decrease", None),
    "services_offered": ("开展技术项目数", "count", "increase", None),
    "referrals_down_per_1000": ("下转人次", "rate", "increase", None),
}


def test_catalogue_holds_the_pilot_plan_indicators():
    cat = load_catalogue()
    assert len(cat) >= 8
    for ind_id, (zh, kind, direction, target) in REQUIRED.items():
        ind = cat[ind_id]
        assert zh in ind.name_zh and ind.name_en and ind.kind == kind and ind.direction == direction
        if target is None:
            assert ind.target is None
        else:
            assert ind.target.value == target and ind.target.comparison == ">="
            assert "2015" in ind.target.source and "分级诊疗" in ind.target.source
    families = {i.kind: i.model_family for i in cat}
    assert families == {"share": "binomial", "rate": "poisson_offset", "mean": "loglinear", "count": "poisson"}


def test_unknown_indicator_lists_the_catalogue():
    with pytest.raises(KeyError, match="happiness.*county_internal_visit_rate"):
        load_catalogue()["happiness"]


def test_malformed_catalogue_is_rejected(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("indicators:\n  - id: x\n    name_zh: 甲\n    name_en: x\n    kind: share\n"
                   "    numerator: a\n    denominator: null\n    unit: share\n    direction: increase\n"
                   "    model_family: binomial\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs a denominator"):
        load_catalogue(bad)


def test_values_on_a_hand_computed_panel():
    panel = pd.DataFrame({
        "township_id": ["A", "A", "B"],
        "period": ["2019-01", "2019-02", "2019-01"],
        "population": [10_000, 10_000, 4_000],
        "visits_total": [2_000, 0, 1_000], "visits_in_county": [1_800, 0, 700],
        "visits_primary": [1_300, 0, 500], "admissions_total": [100, 50, 40],
        "referrals_out_county": [10, 5, 8], "thc_outpatient_visits": [600, 0, 300],
        "thc_admissions": [30, 20, 10], "inpatient_cost_total": [600_000.0, 250_000.0, 200_000.0],
        "services_offered": [40, 41, 25], "referrals_down": [3, 4, 2],
    })
    out = compute_indicators(panel, load_catalogue())
    expected = {
        "county_internal_visit_rate": [0.9, np.nan, 0.7],   # 0/0 is undefined, not zero
        "out_county_referral_rate": [0.1, 0.1, 0.2],
        "primary_care_visit_share": [0.65, np.nan, 0.5],
        "thc_outpatient_visits_per_1000": [60.0, 0.0, 75.0],
        "thc_admissions_per_1000": [3.0, 2.0, 2.5],
        "cost_per_admission": [6_000.0, 5_000.0, 5_000.0],
        "services_offered": [40.0, 41.0, 25.0],
        "referrals_down_per_1000": [0.3, 0.4, 0.5],
        "admissions_thc_share": [0.3, 0.4, 0.25],
    }
    for ind_id, values in expected.items():
        np.testing.assert_allclose(out[ind_id].to_numpy(), values, rtol=1e-12, err_msg=ind_id)
    assert list(out.columns[:2]) == ["township_id", "period"]

    cat = load_catalogue()
    # pooled over townships: ratio of sums, e.g. January (2,500 in-county of 3,000 visits)
    pooled = cat["county_internal_visit_rate"].aggregate(panel, "period")
    assert pooled["2019-01"] == pytest.approx(2_500 / 3_000)
    assert np.isnan(pooled["2019-02"])
    assert cat["referrals_down_per_1000"].aggregate(panel, "period")["2019-01"] == pytest.approx(5 / 14_000 * 1000)
    assert cat["services_offered"].aggregate(panel, "period")["2019-01"] == pytest.approx(32.5)
    assert cat["primary_care_visit_share"].meets_target([0.65, 0.649]).tolist() == [True, False]
    assert cat["out_county_referral_rate"].meets_target([0.1]) is None


def test_required_columns_and_share_pairs():
    cat = load_catalogue()
    chosen = cat.select(["county_internal_visit_rate", "thc_admissions_per_1000", "admissions_thc_share"])
    assert required_columns(chosen) == ["visits_in_county", "visits_total", "thc_admissions", "admissions_total"]
    assert share_pairs(chosen) == [("visits_in_county", "visits_total"), ("thc_admissions", "admissions_total")]
