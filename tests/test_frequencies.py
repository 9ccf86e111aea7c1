"""Every chapter at month, quarter and year: aggregation, ITS at any frequency, labels.

The studies are small synthetic prefectures from the demo generator (2 counties x 12
townships, the demo's 10 pilots in three cohorts), written to tmp_path with the Chinese
headers a user's export has: a monthly file analysed by month, a quarterly file (the
monthly counts summed here, population averaged, pilots' start quarter), and the monthly
file analysed by year through ``analysis.frequency`` (16 years, so that the earliest
cohort has the 8 pre-period years an ITS needs).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from evaluation.data.aggregate import aggregate_panel
from evaluation.data.calendar import festival_day_share
from evaluation.data.demo import PANEL_HEADERS, PILOT_HEADERS, DemoConfig, generate
from evaluation.data.panel import PanelGapWarning, load_panel
from evaluation.errors import StudyConfigError
from evaluation.estimators.its import CovidPhase, indicator_series, segmented_regression
from evaluation.paths import DEMO_STUDY
from evaluation.report import chapters
from evaluation.study.config import load_study
from evaluation.study.periods import span_share

INDICATOR = "thc_outpatient_visits_per_1000"  # a per-1,000 rate: its unit names the period
MONTH_PHASES = [{"name": "early-2020 wave", "start": "2020-01", "end": "2020-04"},
                {"name": "winter 2022-23 wave", "start": "2022-12", "end": "2023-01"}]


def _write_study(root, panel: pd.DataFrame, pilots: pd.DataFrame, frequency: str, window: tuple[str, str],
                 analysis: dict | None = None):
    root.mkdir(parents=True)
    panel.rename(columns=PANEL_HEADERS).to_csv(root / "panel.csv", index=False)
    pilots.rename(columns=PILOT_HEADERS).to_csv(root / "pilots.csv", index=False)
    config = {
        "id": f"freq_{root.name}", "title": {"zh": "频率测试", "en": "Frequency test"}, "synthetic": True,
        "data": {"panel": "panel.csv", "pilots": "pilots.csv",
                 "columns": {v: k for k, v in PANEL_HEADERS.items()},
                 "pilot_columns": {v: k for k, v in PILOT_HEADERS.items()}},
        "frequency": frequency, "window": {"start": window[0], "end": window[1]},
        "indicators": [INDICATOR], "covid": {"handling": "phases", "phases": MONTH_PHASES},
        "analysis": {"seed": 7, **(analysis or {})},
    }
    path = root / "study.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def _to_quarters(panel: pd.DataFrame, pilots: pd.DataFrame):
    """What a user's quarterly export holds: counts summed, population averaged."""
    p = panel.copy()
    p["period"] = pd.PeriodIndex(p["period"], freq="M").asfreq("Q").astype(str)
    counts = [c for c in p.columns if c not in ("county", "township_id", "township_name", "period", "population")]
    agg = {**{c: "sum" for c in counts}, "population": "mean"}
    quarters = p.groupby(["county", "township_id", "township_name", "period"], as_index=False).agg(agg)
    q_pilots = pilots.assign(pilot_start=pd.PeriodIndex(pilots["pilot_start"], freq="M").asfreq("Q").astype(str))
    return quarters, q_pilots


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("frequencies")
    small = generate(DemoConfig(n_counties=2, townships_per_county=12))
    panel = small.panel.assign(period=small.panel["period"].astype(str))
    long = generate(DemoConfig(n_counties=2, townships_per_county=12, start="2008-01"))
    quarters, q_pilots = _to_quarters(panel, small.pilots)
    return {
        # a short smoothness grid keeps the monthly honest-DiD run to seconds (its default
        # grid around the breakdown value takes about 45 s on 96 months)
        "month": _write_study(root / "month", panel, small.pilots, "month", ("2016-01", "2023-12"),
                              {"sensitivity": {"smoothness": {"pre_periods": 3, "post_periods": 3, "values": [0.0]}}}),
        "quarter": _write_study(root / "quarter", quarters, q_pilots, "quarter", ("2016Q1", "2023Q4")),
        "year": _write_study(root / "year", long.panel.assign(period=long.panel["period"].astype(str)), long.pilots,
                             "month", ("2008-01", "2023-12"), {"frequency": "year"}),
        "month_as_quarter": _write_study(root / "month_as_quarter", panel, small.pilots, "month",
                                         ("2016-01", "2023-12"), {"frequency": "quarter"}),
    }


@pytest.fixture(scope="module")
def contexts(studies, tmp_path_factory):
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("month", "quarter", "year"):
            results = tmp_path_factory.mktemp(f"results_{name}")
            out[name] = chapters.setup(studies[name], INDICATOR, fast=True, results_dir=results)
    return out


@pytest.mark.parametrize("frequency", ["month", "quarter", "year"])
def test_every_section_runs(contexts, frequency):
    """Every section builder of the chapters, in process, for one indicator."""
    ctx = contexts[frequency]
    assert ctx.panel.frequency == ctx.settings.frequency == frequency
    failures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for section in chapters.SECTIONS:
            try:
                ctx.result(section)
            except Exception as exc:  # noqa: BLE001 (collect every failing section)
                failures[section] = f"{type(exc).__name__}: {exc}"
    assert not failures, failures


def test_plan_resolves_against_the_analysis_frequency(contexts):
    month, quarter, year = (contexts[f].settings for f in ("month", "quarter", "year"))
    assert (month.placebo_shift, quarter.placebo_shift, year.placebo_shift) == (12, 4, 1)
    assert (month.its_phase_in, quarter.its_phase_in, year.its_phase_in) == (12, 4, 1)
    assert quarter.its_horizons == (4, 8) and quarter.event_window == (-4, 8)
    its = contexts["quarter"].result("its")
    plot = its.tables["plot"].set_index("period")
    # the earliest cohort starts 2018Q3; the 4-quarter phase-in 2018Q3..2019Q2 is left out
    assert plot.loc["2018Q3":"2019Q2", "segment"].eq("excluded").all() and plot.loc["2019Q3", "segment"] == "pilot"
    assert list(plot.index[~plot["used_in_fit"]]) == ["2018Q3", "2018Q4", "2019Q1", "2019Q2"]
    horizons = its.effects[its.effects["section"] == "fit"]["horizon"].dropna().astype(int).unique().tolist()
    assert horizons == [4, 8]
    annual = contexts["year"].result("its")
    assert str(annual.tables["plot"]["period"].iloc[0]) == "2008" and len(annual.tables["plot"]) == 16
    assert annual.values["diagnostics"]["spring_festival"].startswith("not used")


def _reader_text(ctx) -> list[str]:
    """What a reader of the quarterly report sees: title block, every note, ITS tables,
    the scorecard's verdicts and headers, the figures' axis labels."""
    import matplotlib.pyplot as plt

    values = ctx.note_values()
    texts = [chapters.header(ctx, "章", "chapter")]
    texts += [part.format(**values) for note in chapters.NOTES.values() for part in note]
    its = chapters.its(ctx)
    texts += [str(v) for table in (its["table"], its["diagnostics"]) for v in [*table.columns, *table.to_numpy().ravel()]]
    figures = [its["figure"], chapters.trends(ctx)[0], *chapters.did_figures(chapters.did(ctx), ctx)]
    figures.append(chapters.sensitivity_figure(chapters.parallel_trends_sensitivity(ctx), ctx))
    texts += [str(v) for v in chapters.parallel_trends_sensitivity(ctx)["table"].to_numpy().ravel()]
    for fig in figures:
        fig = getattr(fig, "figure", fig)
        for ax in fig.axes:
            texts += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()]
        plt.close(fig)
    summary = chapters.summary(ctx)
    texts += summary["verdicts"]["verdict_zh"].tolist() + summary["verdicts"]["verdict_en"].tolist()
    texts += [" ".join(map(str, c)) for c in summary["table"].columns] + summary["scorecard"]["unit_label"].tolist()
    return texts


def test_no_label_says_month_on_quarterly_data(contexts):
    ctx = contexts["quarter"]
    texts = _reader_text(ctx)
    offending = [t for t in texts if re.search(r"month|个月|每月", t, re.IGNORECASE)]
    assert not offending, offending
    joined = "\n".join(texts)
    assert "每千常住人口每季度 / per 1,000 residents per quarter" in joined  # the rate names its period
    assert "试点后4个季度" in joined and "4 quarters after the start" in joined  # ITS horizons in quarters
    assert "quarters since the pilot start" in joined
    assert "4 quarters" in ctx.note_values()["placebo_en"]


def test_monthly_labels_keep_months(contexts):
    ctx = contexts["month"]
    assert ctx.indicator.unit_label == "每千常住人口每月 / per 1,000 residents per month"
    assert "per 1,000 residents per month" in chapters.header(ctx, "章", "chapter")
    assert contexts["year"].indicator.unit_label.endswith("per 1,000 residents per year")


def test_analysis_frequency_equals_a_quarterly_file(studies):
    """``analysis.frequency: quarter`` on the monthly file gives the panel the quarterly file
    gives (counts summed, population averaged, same pilots and cohorts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aggregated = load_panel(load_study(studies["month_as_quarter"]))
        direct = load_panel(load_study(studies["quarter"]))
    assert aggregated.frequency == direct.frequency == "quarter"
    columns = ["township_id", "period", "population", "visits_total", "thc_outpatient_visits", "time", "first_treat",
               "post", "cohort", "event_time"]
    a = aggregated.data[columns].reset_index(drop=True)
    b = direct.data[columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    assert sorted(aggregated.pilots["cohort"].unique()) == ["2018Q3", "2019Q3", "2021Q1"]


def test_aggregation_by_hand(study_files):
    """tiny study (conftest): 4 townships x 2019-01..12. T02 lacks May, so its second quarter
    is missing; T04's August down-referrals are empty, so its third-quarter sum is empty;
    T03's population changes within the first quarter; T03 starts in May (mid-quarter) and
    is treated from 2019Q2, the quarter containing its start month."""
    from tests.conftest import tiny_panel, tiny_pilots

    panel = tiny_panel()
    panel = panel[~((panel["township_id"] == "T02") & (panel["period"] == "2019-05"))].copy()
    panel.loc[(panel["township_id"] == "T04") & (panel["period"] == "2019-08"), "referrals_down"] = np.nan
    t03 = panel["township_id"] == "T03"
    panel.loc[t03 & panel["period"].isin(["2019-01", "2019-02", "2019-03"]), "population"] = [15_000, 15_300, 15_600]
    pilots = tiny_pilots().assign(pilot_start=["2019-07", "2019-05"])
    study_files.write_panel(panel)
    study_files.write_pilots(pilots)
    config = study_files.config()
    config["analysis"]["frequency"] = "quarter"
    config["indicators"] = ["referrals_down_per_1000", "county_internal_visit_rate"]
    study_files.write_config(config)
    study = load_study(study_files.study)
    assert study.settings().frequency == "quarter" and study.settings().placebo_shift == 4
    with pytest.warns(PanelGapWarning) as record:  # the monthly gap (2019-05), then the quarter it empties
        p = load_panel(study)
    assert any(re.search(r"1 township\(s\) lack quarters .*T02 \(二号乡\): 2019Q2", str(w.message)) for w in record)
    d = p.data.set_index(["township_id", p.data["period"].astype(str)])
    assert p.frequency == "quarter" and len(d) == 15  # 4 x 4 quarters, T02's 2019Q2 missing
    # T01, 2019Q1: visits_total 1000 + 10 m for m = 1..3
    assert d.loc[("T01", "2019Q1"), "visits_total"] == 3060
    assert d.loc[("T01", "2019Q1"), "referrals_down"] == 3 + 4 + 2  # 2 + m % 3 for m = 1, 2, 3
    assert d.loc[("T03", "2019Q1"), "population"] == 15_300  # mean of 15,000, 15,300, 15,600
    assert d.loc[("T03", "2019Q2"), "population"] == 15_000
    assert ("T02", "2019Q2") not in d.index
    assert list(p.gaps["township_id"]) == ["T02"] and p.gaps["missing_periods"].iloc[0] == "2019Q2"
    assert np.isnan(d.loc[("T04", "2019Q3"), "referrals_down"])
    assert d.loc[("T04", "2019Q3"), "visits_total"] == 3 * (1000 + 300) + 10 * (7 + 8 + 9)
    assert dict(zip(p.pilots["township_id"], p.pilots["cohort"], strict=True)) == {"T01": "2019Q3", "T03": "2019Q2"}
    assert d.loc[("T03", "2019Q1"), "first_treat"] == 2 and d.loc[("T01", "2019Q1"), "first_treat"] == 3
    assert list(d.loc["T03", "post"]) == [0, 1, 1, 1] and list(d.loc["T03", "event_time"]) == [-1, 0, 1, 2]
    assert list(d.loc["T02", "time"]) == [1, 3, 4]  # the time index keeps the gap


def test_pilot_in_the_first_aggregated_period_is_rejected(study_files):
    from evaluation.errors import DataValidationError
    from tests.conftest import tiny_pilots

    study_files.write_pilots(tiny_pilots().assign(pilot_start=["2019-02", "2019-09"]))  # valid monthly: 1 pre-month
    config = study_files.config()
    config["analysis"]["frequency"] = "quarter"
    study_files.write_config(config)
    with pytest.raises(DataValidationError, match="first quarter") as info:
        load_panel(load_study(study_files.study))
    assert info.value.column == "pilot_start" and "2019Q1" in str(info.value)


def test_config_rejections_name_the_key(study_files):
    config = study_files.config()
    config["covid"] = {"phases": [{"name": "a", "start": "2020-13", "end": "2020-04"}]}
    study_files.write_config(config)
    with pytest.raises(StudyConfigError, match=r"covid\.phases\.0\.start"):
        load_study(study_files.study)
    config["covid"] = {"phases": [{"name": "a", "start": "2020Q2", "end": "2020-03"}]}
    study_files.write_config(config)
    with pytest.raises(StudyConfigError, match=r"covid\.phases\.0.*start is after end"):
        load_study(study_files.study)
    config["covid"] = {"phases": MONTH_PHASES}
    config["frequency"] = "quarter"
    config["window"] = {"start": "2019Q1", "end": "2019Q4"}
    config["analysis"]["frequency"] = "month"
    study_files.write_config(config)
    with pytest.raises(StudyConfigError, match=r"analysis\.frequency.*finer"):
        load_study(study_files.study)


def test_covid_phases_in_months_on_coarser_periods():
    """A phase January-April 2020: 1 in 2020Q1, 30/91 in 2020Q2 (April), 121/366 of 2020."""
    quarters = pd.period_range("2019Q4", "2020Q3", freq="Q")
    np.testing.assert_allclose(span_share(quarters, "2020-01", "2020-04"), [0, 1, 30 / 91, 0])
    np.testing.assert_allclose(span_share(pd.period_range("2019", "2021", freq="Y"), "2020-01", "2020-04"),
                               [0, 121 / 366, 0])
    np.testing.assert_allclose(span_share(pd.period_range("2020-03", "2020-05", freq="M"), "2020Q1", "2020Q1"),
                               [1, 0, 0])
    study = load_study(DEMO_STUDY)
    assert [str(p) for p in study.covid_periods("quarter")] == ["2020Q1", "2020Q2", "2022Q4", "2023Q1"]
    assert [str(p) for p in study.covid_periods("year")] == ["2020", "2022", "2023"]
    assert len(study.covid_periods()) == 6  # the demo's months


def test_festival_share_of_the_period_days():
    """One definition at every frequency: festival days in the period over the period's days
    (window 7 days either side of New Year's Day: 1-15 Feb 2016, 21 Jan - 4 Feb 2017)."""
    months = festival_day_share(pd.period_range("2017-01", "2017-03", freq="M"))
    np.testing.assert_allclose(months, [11 / 31, 4 / 28, 0])
    np.testing.assert_allclose(festival_day_share(pd.period_range("2016Q1", "2016Q2", freq="Q")), [15 / 91, 0])
    np.testing.assert_allclose(festival_day_share(pd.period_range("2017", "2017", freq="Y")), [15 / 365])


@pytest.fixture(scope="module")
def demo_quarters():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = load_study(DEMO_STUDY)
        panel = aggregate_panel(load_panel(study), "quarter")
    phases = [CovidPhase(p.name, p.start, p.end) for p in study.covid.phases]  # written in months
    return panel, pd.read_csv(study.truth_path), phases, {i.id: i for i in study.selected_indicators()}


@pytest.mark.parametrize("cohort", ["2018-07", "2019-07"])
@pytest.mark.parametrize("indicator", ["county_internal_visit_rate", "primary_care_visit_share",
                                       "out_county_referral_rate", "admissions_thc_share"])
def test_quarterly_its_recovers_the_demo_truth(demo_quarters, cohort, indicator):
    """The demo aggregated to quarters (counts summed): the cohort's mean share with a
    4-quarter phase-in, ARIMA(1,0,0) errors as in tests/test_its.py. The demo's cohorts
    start on the first month of a quarter, so quarter e after the start holds the generated
    monthly event times 3e..3e+2: the level change is the plateau (months 12 on) and the
    horizons 4 and 8 quarters the truth averaged over months 12-14 and 24-26. Measured when
    written: level change 0.0393 (0.0348 to 0.0438) against 0.0388 for the county-internal
    visit rate of the 2018 cohort. The Spring Festival term is left out (absorbed by the
    first-quarter term) and the COVID-19 phases, written in months, enter as day shares."""
    panel, truth, phases, indicators = demo_quarters
    quarter = str(pd.Period(cohort, "M").asfreq("Q"))
    ids = panel.pilots.loc[panel.pilots["cohort"] == quarter, "township_id"].tolist()
    series = indicator_series(panel, indicators[indicator], ids, weighting="mean")
    fit = segmented_regression(series, outcome="value", start=quarter, frequency="quarter", transition=4,
                               covid_phases=phases, inference="arima", horizons=(4, 8), indicator=indicator)
    t = truth[(truth["indicator"] == indicator) & (truth["estimand"] == "att_cohort_event_time")
              & truth["group"].str.startswith(cohort + "|")]
    t = t.assign(e=t["group"].str.split("|").str[1].astype(int)).set_index("e")["att"]
    assert fit.get("level_change").covers(t.loc[12:].mean())
    assert fit.get("effect_at_horizon", horizon=4).covers(t.loc[12:14].mean())
    assert fit.get("effect_at_horizon", horizon=8).covers(t.loc[24:26].mean())
    assert abs(fit.get("level_change").estimate) > 3 * fit.get("level_change").std_error
    regressors = fit.diagnostics["regressors"]
    assert "spring_festival" not in regressors and {"quarter_2", "quarter_3", "quarter_4"} <= set(regressors)
    assert fit.diagnostics["spring_festival"].startswith("left out")
    early = "covid:2020年初疫情 / early-2020 wave"
    if cohort == "2018-07":  # 2020Q1 and 2020Q2 (April) are the 17th and 18th quarters
        np.testing.assert_allclose(fit.model.model.exog[16:18, regressors.index(early)], [1.0, 30 / 91])
    else:  # the wave falls inside the phase-in 2019Q3..2020Q2, which is left out of the fit
        assert early not in regressors


def test_its_with_missing_periods(demo_quarters):
    """A township series with two quarters dropped and one value emptied: every error model
    fits on the observed quarters, t keeps the true spacing, and the fit equals OLS on the
    observed rows of the full design (statsmodels 0.14 OLS, to 1e-10)."""
    import statsmodels.api as sm

    panel, _, phases, indicators = demo_quarters
    pilot = panel.pilots.iloc[0]
    series = indicator_series(panel, indicators["county_internal_visit_rate"], [pilot.township_id])
    holed = series.drop([pd.Period("2017Q2", "Q"), pd.Period("2021Q3", "Q")])
    holed.loc[pd.Period("2020Q4", "Q"), "value"] = np.nan
    options = dict(outcome="value", start=pilot.cohort, frequency="quarter", transition=4, covid_phases=phases,
                   horizons=(4,))
    fits = {kind: segmented_regression(holed, inference=kind, **options) for kind in ("hac", "conventional", "arima")}
    for fit in fits.values():
        assert fit.diagnostics["missing_periods"] == ["2017Q2", "2020Q4", "2021Q3"]
        assert len(fit.plot_data) == 32 and np.isnan(fit.plot_data.loc["2017Q2", "observed"])
    assert fits["hac"].diagnostics["n_obs"] == 32 - 3 - 4
    full = segmented_regression(series, inference="conventional", **options)
    X = full.model.model.exog  # the complete series' design: the same columns, all 28 fitted rows
    used = full.plot_data["used_in_fit"].to_numpy()
    keep = ~full.plot_data.index[used].isin(pd.PeriodIndex(["2017Q2", "2020Q4", "2021Q3"], freq="Q"))
    direct = sm.OLS(series["value"][used].to_numpy()[keep], X[keep]).fit()
    assert fits["conventional"].get("level_change").estimate == pytest.approx(direct.params[2], abs=1e-10)
    assert fits["conventional"].get("level_change").std_error == pytest.approx(direct.bse[2], abs=1e-10)
    assert fits["arima"].get("level_change").covers(fits["conventional"].get("level_change").estimate)


def test_indicator_series_uses_observed_townships(demo_quarters):
    """A township whose numerator is missing in a quarter drops out of that quarter's pooled
    sums (numerator and denominator alike) and out of its count."""
    panel, _, _, indicators = demo_quarters
    ind = indicators["county_internal_visit_rate"]
    ids = panel.pilots["township_id"].tolist()[:3]
    d = panel.data
    target = (d["township_id"] == ids[0]) & (d["period"] == pd.Period("2019Q1", "Q"))
    holed = type(panel)(**{**panel.__dict__, "data": d.assign(visits_in_county=d["visits_in_county"].mask(target))})
    series = indicator_series(holed, ind, ids, weighting="pooled")
    row = series.loc[pd.Period("2019Q1", "Q")]
    others = d[d["township_id"].isin(ids[1:]) & (d["period"] == pd.Period("2019Q1", "Q"))]
    assert row["townships"] == 2
    assert row["value"] == pytest.approx(others["visits_in_county"].sum() / others["visits_total"].sum(), rel=1e-12)
    assert row["population"] == pytest.approx(others["population"].sum(), rel=1e-12)


def test_poisson_its_with_a_missing_quarter(demo_quarters):
    """Counts with a log-population offset: a dropped quarter is left out, and the rate
    ratio equals a statsmodels 0.14 quasi-Poisson GLM on the observed rows (to 1e-8)."""
    import statsmodels.api as sm

    panel, _, phases, indicators = demo_quarters
    pilot = panel.pilots.iloc[0]
    series = indicator_series(panel, indicators["referrals_down_per_1000"], [pilot.township_id])
    holed = series.drop(pd.Period("2021Q2", "Q"))
    options = dict(outcome="numerator", start=pilot.cohort, frequency="quarter", family="poisson",
                   offset="population", inference="conventional", transition=4, covid_phases=phases, per=1000,
                   horizons=(4, 11))
    fit = segmented_regression(holed, **options)
    assert fit.diagnostics["missing_periods"] == ["2021Q2"] and fit.diagnostics["n_obs"] == 32 - 1 - 4
    # horizon 11 quarters after 2018Q3 is the missing 2021Q2: no population to scale the rate by
    assert fit.diagnostics["horizons_beyond_series"] == [11]
    full = segmented_regression(series, **options)
    used = full.plot_data["used_in_fit"].to_numpy()
    keep = full.plot_data.index[used] != pd.Period("2021Q2", "Q")
    direct = sm.GLM(series["numerator"][used].to_numpy()[keep], full.model.model.exog[keep],
                    family=sm.families.Poisson(), offset=full.model.model.offset[keep]).fit(scale="X2")
    assert np.log(fit.get("level_change").estimate) == pytest.approx(direct.params[2], abs=1e-8)
    assert fit.get("level_change").std_error / fit.get("level_change").estimate == pytest.approx(direct.bse[2], rel=1e-6)
