"""The synthetic demo prefecture: reproducible, shaped as the design asks, truth consistent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.cli import main
from evaluation.data.calendar import spring_festival_date, spring_festival_share
from evaluation.data.demo import DemoConfig, generate, write_demo
from evaluation.paths import DEMO_DATA
from evaluation.study.catalogue import load_catalogue


@pytest.fixture(scope="module")
def demo():
    return generate()


def test_regeneration_is_byte_identical(tmp_path, capsys):
    assert main(["demo-data", "--out", str(tmp_path)]) == 0
    for name in ("panel.csv", "pilots.csv", "truth.csv", "design.json"):
        assert (tmp_path / name).read_bytes() == (DEMO_DATA / name).read_bytes(), name


def test_other_seed_gives_other_data(tmp_path):
    write_demo(tmp_path, DemoConfig(seed=7))
    assert (tmp_path / "panel.csv").read_bytes() != (DEMO_DATA / "panel.csv").read_bytes()


def test_design_shape(demo):
    panel, pilots = demo.panel, demo.pilots
    assert panel["county"].nunique() >= 4
    assert panel["township_id"].nunique() >= 60
    assert panel["period"].min() == "2016-01" and panel["period"].max() == "2023-12"
    assert panel.groupby("township_id").size().eq(96).all()
    first_year = panel[panel["period"].str.startswith("2016")]
    assert first_year["population"].between(7_500, 85_000).all()
    assert first_year["population"].min() < 12_000 and first_year["population"].max() > 60_000
    assert pilots["pilot_start"].nunique() == 3
    assert 8 <= len(pilots) <= 12 and pilots["model"].nunique() >= 3
    # counts are whole, sub-counts within their totals
    counts = panel.drop(columns=["county", "township_id", "township_name", "period", "inpatient_cost_total"])
    assert (counts.dtypes == np.int64).all() and (counts >= 0).all().all()
    assert (panel["visits_in_county"] <= panel["visits_total"]).all()
    assert (panel["thc_outpatient_visits"] <= panel["visits_primary"]).all()
    assert (panel["referrals_out_county"] <= panel["admissions_total"]).all()


def test_truth_covers_every_indicator_and_one_is_exactly_zero(demo):
    truth = demo.truth
    overall = truth[truth["estimand"] == "att"].set_index("indicator")["att"]
    assert set(overall.index) == set(load_catalogue().ids)
    assert (overall == 0).sum() == 1 and overall["cost_per_admission"] == 0.0
    assert overall["county_internal_visit_rate"] > 0.01 and overall["out_county_referral_rate"] < -0.01
    assert set(truth["estimand"]) == {"att", "att_cohort", "att_event_time", "att_model", "att_township",
                                      "att_cohort_event_time"}
    # the overall ATT is the cell-weighted mean of the cohort ATTs
    cohort = truth[truth["estimand"] == "att_cohort"]
    for ind, g in cohort.groupby("indicator"):
        assert np.isclose((g["att"] * g["n_cells"]).sum() / g["n_cells"].sum(), overall[ind], rtol=1e-12)


def test_effects_build_up_and_differ_by_model(demo):
    truth = demo.truth
    for ind in ("referrals_down_per_1000", "primary_care_visit_share", "admissions_thc_share"):
        ev = truth[(truth["indicator"] == ind) & (truth["estimand"] == "att_event_time")]
        ev = ev.assign(e=ev["group"].astype(int)).set_index("e")["att"]
        assert (np.diff(ev.loc[0:11].to_numpy()) > 0).all(), ind       # builds up over the first year
        assert ev.loc[0] < 0.2 * ev.loc[11]
        by_model = truth[(truth["indicator"] == ind) & (truth["estimand"] == "att_model")].set_index("group")["att"]
        assert by_model["托管"] > by_model["紧密型医共体分院"] > by_model["对口支援"] > 0


def test_spring_festival_dip_follows_the_lunar_calendar(demo):
    """log(January / February visits) falls with the festival's share in January minus
    February, by the generating dip of -0.35 (COVID years 2020 and 2023 left out)."""
    totals = demo.panel.groupby("period")["visits_total"].sum()
    years = [2016, 2017, 2018, 2019, 2021, 2022]
    periods = pd.period_range("2016-01", "2023-12", freq="M")
    share = pd.Series(spring_festival_share(periods), index=periods.astype(str))
    x = [share[f"{y}-01"] - share[f"{y}-02"] for y in years]
    y = [np.log(totals[f"{y}-01"] / totals[f"{y}-02"]) for y in years]
    assert {yr for yr in range(2016, 2024) if spring_festival_date(yr).month == 1} == {2017, 2020, 2023}
    assert min(x) == -1 and max(x) > 0.4  # February and January festivals both present
    slope = np.polyfit(x, y, 1)[0]
    assert slope == pytest.approx(-0.35, abs=0.08)


def test_covid_disruption(demo):
    totals = demo.panel.groupby("period")["visits_total"].sum()
    # generated multipliers 0.75 (March 2020) and 0.80 (December 2022), growth about +1.5% a year
    assert totals["2020-03"] / totals["2019-03"] == pytest.approx(0.75 * 1.015, abs=0.03)
    assert totals["2022-12"] / totals["2021-12"] == pytest.approx(0.80 * 1.015, abs=0.03)


def test_spillover_is_off_by_default_and_recorded_when_on(demo):
    assert "spillover_township" not in set(demo.truth["estimand"])
    spill = generate(DemoConfig(spillover=0.3)).truth
    rows = spill[(spill["estimand"] == "spillover_township") & (spill["indicator"] == "referrals_down_per_1000")]
    assert len(rows) >= 5 and (rows["att"] > 0).all()
