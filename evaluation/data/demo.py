"""Synthetic demo prefecture: a township-by-month panel with known pilot effects.

The generator draws, from one seed, a prefecture of several counties and their townships,
monthly 2016-01 to 2023-12, with:

* resident populations of about 8,000 to 80,000 that drift slowly;
* township effects and county-specific trends on every indicator;
* calendar-month seasonality and a Spring Festival dip placed by the lunar calendar (the
  share of the festival window in each month, :mod:`evaluation.data.calendar`);
* a COVID-19 disruption in early 2020 and in the winter of 2022-23;
* three staggered pilot cohorts of 10 townships under three integration models
  (托管 trusteeship, 紧密型医共体分院 branch campus, 对口支援 paired support) whose effects build
  up linearly over the first 12 months and differ by model; the cost per admission has a
  true effect of exactly zero;
* optional spillover to the neighbouring non-pilot townships of the same county (off).

Counts are drawn from count distributions on population denominators: totals from a
Poisson-gamma (negative binomial) mixture, sub-counts from binomials of their totals,
inpatient costs from a gamma sum over admissions.

The *truth* is exact, not estimated: for each pilot township-month the package computes
the expected indicator with and without the pilot, holding the cell's random disturbances
fixed, and averages the difference (the ATT on the indicator's own scale) overall, per
cohort, per event time, per model and per township. A DiD estimator is unbiased for these
averages only to the extent its identifying assumptions hold; on this design they do
(parallel trends on the link scale, no anticipation, no spillover by default).

Township characteristics (distance to the county seat, beds, health workers, mountainous;
``townships.csv``) come from a second random stream of the seed, so the panel, pilots and
truth are unchanged by them; the pilots' characteristics differ from the others' as
counties' choices make them differ, but the characteristics enter levels only.

:func:`generate_selection` draws a second prefecture (``data_raw/demo_selection``) with the
same outcome model where the characteristics drive pilot selection (a stated logit), the
untreated trends (parallel trends hold only conditional on them) and the size of the
effect, with the truth by subgroup beside the data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from evaluation.data.calendar import spring_festival_share
from evaluation.data.fileio import write_text_atomic
from evaluation.paths import DEMO_DATA
from evaluation.study.catalogue import load_catalogue
from evaluation.study.periods import period_label

# Headers of the exported panel, as a county statistical report would have them. The demo
# study maps them onto the data contract (studies/demo.yml, data.columns).
PANEL_HEADERS = {
    "county": "县区",
    "township_id": "乡镇编码",
    "township_name": "乡镇名称",
    "period": "月份",
    "population": "常住人口",
    "visits_total": "总诊疗人次",
    "visits_in_county": "县域内就诊人次",
    "visits_primary": "基层诊疗人次",
    "admissions_total": "住院人次",
    "referrals_out_county": "县外转诊人次",
    "thc_outpatient_visits": "卫生院门急诊人次",
    "thc_admissions": "卫生院住院人次",
    "inpatient_cost_total": "住院总费用（元）",
    "services_offered": "开展技术项目数",
    "referrals_down": "下转人次",
}
PILOT_HEADERS = {"township_id": "乡镇编码", "pilot_start": "试点开始月份", "model": "整合模式"}

COUNTIES = ("东林县", "南溪县", "西岭县", "北原县", "中坪县", "新河县")
_NAME_FIRST = "安白柏宝碧昌长城川大丰凤福高古观桂和红花黄金锦靖九兰乐临柳龙鹿罗梅平青庆仁沙上石双顺松太桃天田铜万文仙杏兴杨永玉云枣竹"
_NAME_SECOND = "坪桥溪口坝湾岭塘铺集寨"

MODELS = ("托管", "紧密型医共体分院", "对口支援")
# Effect at full strength relative to trusteeship (托管 = 1).
MODEL_STRENGTH = {"托管": 1.0, "紧密型医共体分院": 0.7, "对口支援": 0.35}
# Cohorts: first treated month and the models of their townships.
COHORTS = (
    ("2018-07", ("托管", "托管", "紧密型医共体分院", "紧密型医共体分院")),
    ("2019-07", ("托管", "对口支援", "对口支援")),
    ("2021-01", ("紧密型医共体分院", "紧密型医共体分院", "对口支援")),
)
RAMP_MONTHS = 12
N_PILOTS = sum(len(models) for _, models in COHORTS)
MIN_TOWNSHIPS = 2 * N_PILOTS  # at least as many comparison townships as pilots
MAX_TOWNSHIPS_PER_COUNTY = 899  # township codes 101..999 within a county

# Full-strength pilot effect (trusteeship) on each component's link scale.
EFFECTS = {
    "in_county_logit": 0.40,      # visits_in_county / visits_total
    "primary_logit": 0.30,        # visits_primary / visits_total
    "out_county_logit": -0.35,    # referrals_out_county / admissions_total
    "thc_visit_logit": 0.25,      # thc_outpatient_visits / visits_primary
    "thc_admission_logit": 0.35,  # thc_admissions / admissions_total
    "cost_log": 0.0,              # inpatient cost per admission: exactly no effect
    "services_log": 0.20,         # services offered
    "referrals_down_log": 0.50,   # down-referrals per resident
}

# Multiplicative monthly seasonality of visits (January..December).
VISIT_SEASON = np.array([1.06, 0.97, 1.00, 0.98, 0.96, 0.95, 1.00, 1.02, 0.98, 1.00, 1.03, 1.08])
ADMISSION_SEASON = np.array([1.05, 0.98, 1.00, 0.99, 0.97, 0.96, 1.01, 1.02, 0.98, 1.00, 1.01, 1.05])
SPRING_FESTIVAL_VISIT_DIP = -0.35      # log change at a month holding the whole festival window
SPRING_FESTIVAL_ADMISSION_DIP = -0.25
# COVID-19: multiplier on visits and admissions, and logit shift of the in-county share.
COVID = {
    "2020-02": (0.55, 0.60), "2020-03": (0.75, 0.40), "2020-04": (0.90, 0.15),
    "2022-12": (0.80, 0.20), "2023-01": (0.85, 0.15),
}
COVID_PHASES = (("2020年初疫情 / early-2020 wave", "2020-01", "2020-04"),
                ("2022-23年冬季疫情 / winter 2022-23 wave", "2022-12", "2023-01"))


@dataclass(frozen=True)
class DemoConfig:
    """Parameters of the synthetic prefecture. The defaults make ``data_raw/demo``.

    ``townships``: the total number of townships, any size from :data:`MIN_TOWNSHIPS` on
    (default: ``n_counties`` x ``townships_per_county``). Given, the prefecture has
    max(``n_counties``, ceil(townships / ``townships_per_county``)) counties of near-equal
    size (sizes differing by at most one), so the county structure grows with it; names
    beyond the pool of 649 two-character township names are three-character ones, then
    numbered ones, all unique and drawn from the seed. The pilots are the same 10.
    """

    seed: int = 20161
    n_counties: int = 4
    townships_per_county: int = 16
    townships: int | None = None
    start: str = "2016-01"
    end: str = "2023-12"
    spillover: float = 0.0  # share of a neighbouring pilot's effect felt by a non-pilot township
    overdispersion: float = 0.06  # sd of the log-normal cell disturbance on totals


@dataclass
class DemoData:
    panel: pd.DataFrame          # contract column names
    pilots: pd.DataFrame         # township_id, pilot_start, model
    truth: pd.DataFrame          # tidy true effects
    design: dict = field(default_factory=dict)
    townships: pd.DataFrame | None = None  # township_id, distance_km, beds, health_workers, mountainous (0/1)
    characteristics: dict = field(default_factory=dict)  # how the main demo's townships table was drawn


def generate(config: DemoConfig = DemoConfig()) -> DemoData:
    """Draw the demo prefecture. Same config, same numbers, on any machine.

    The township characteristics (``townships``) come from a second random stream of the
    same seed (:func:`_main_characteristics`), so the panel, pilots and truth are those the
    demo had before it had characteristics."""
    rng = np.random.default_rng(config.seed)
    sizes = _county_sizes(config)
    n_counties, n_town = len(sizes), int(sum(sizes))
    n_pilots = N_PILOTS
    if n_town < MIN_TOWNSHIPS:
        raise ValueError(f"need at least {MIN_TOWNSHIPS} townships (twice as many as pilots), got {n_town}")
    periods = pd.period_range(config.start, config.end, freq="M")
    n_t = len(periods)

    # ---- townships
    county_idx = np.repeat(np.arange(n_counties), sizes)
    names = _township_names(rng, n_town)
    ids = np.array([f"36{11 + k // 79:02d}{21 + k % 79:02d}{101 + j:03d}"  # 79 county codes per prefecture
                    for k in range(n_counties) for j in range(sizes[k])])

    # ---- pilots: random townships, at most ceil(pilots / counties) per county
    chosen, per_county = [], {k: 0 for k in range(n_counties)}
    for i in rng.permutation(n_town):
        k = county_idx[i]
        if per_county[k] < -(-n_pilots // n_counties):
            chosen.append(i)
            per_county[k] += 1
        if len(chosen) == n_pilots:
            break
    chosen = np.array(chosen)
    pilot_start = np.full(n_town, -1)  # month index of the first treated month
    pilot_model = np.array([""] * n_town, dtype=object)
    pos = 0
    pilot_rows = []
    for start, models in COHORTS:
        s_idx = periods.get_loc(pd.Period(start, "M"))
        for model in models:
            i = chosen[pos]
            pos += 1
            pilot_start[i] = s_idx
            pilot_model[i] = model
            pilot_rows.append((ids[i], start, model))

    # ---- effects: ramp up over the first RAMP_MONTHS months after the start
    strength = np.array([MODEL_STRENGTH.get(m, 0.0) for m in pilot_model])
    dose = _ramp(pilot_start, n_t) * strength[:, None]  # (township, month) share of the full trusteeship effect
    if config.spillover:
        dose = dose + config.spillover * _neighbour_dose(dose, county_idx, pilot_start)

    sim = _simulate(rng, periods, county_idx, n_counties, dose, overdispersion=config.overdispersion)
    panel = _assemble_panel(sim, periods, county_idx, n_counties, ids, names)
    pilots = pd.DataFrame(pilot_rows, columns=["township_id", "pilot_start", "model"])
    truth = _truth_table(sim["with_pilot"], sim["without"], pilot_start, pilot_model, ids, periods, dose)

    settings = asdict(config)
    if config.townships is None:  # the committed demo's design.json predates the option
        del settings["townships"]
    design = {
        "config": settings,
        "cohorts": [{"pilot_start": s, "models": list(m)} for s, m in COHORTS],
        **_outcome_design(),
    }
    townships, characteristics = _main_characteristics(config, ids, names, sim["pop0"], county_idx, pilot_start)
    return DemoData(panel=panel, pilots=pilots, truth=truth, design=design, townships=townships,
                    characteristics=characteristics)


def _outcome_design() -> dict:
    """The generating parameters of the outcome model both demos share (design.json)."""
    return {
        "model_strength": MODEL_STRENGTH,
        "effects_link_scale": EFFECTS,
        "ramp_months": RAMP_MONTHS,
        "covid": {k: {"visit_multiplier": v[0], "in_county_logit_shift": v[1]} for k, v in COVID.items()},
        "spring_festival_log_dip": {"visits": SPRING_FESTIVAL_VISIT_DIP,
                                    "admissions": SPRING_FESTIVAL_ADMISSION_DIP},
    }


def _ramp(pilot_start: np.ndarray, n_t: int) -> np.ndarray:
    """(township, month) share of the full effect: linear over the first RAMP_MONTHS months."""
    event = np.arange(n_t)[None, :] - pilot_start[:, None]
    return np.where((pilot_start[:, None] >= 0) & (event >= 0), np.minimum((event + 1) / RAMP_MONTHS, 1.0), 0.0)


def _simulate(rng, periods, county_idx, n_counties, dose, *, overdispersion, pop0=None, trend_shift=None) -> dict:
    """Draw every count of the panel from ``rng`` and the expected indicators with and
    without the pilot (``dose``: the (township, month) share of the full trusteeship
    effect), holding the cells' disturbances fixed.

    ``pop0`` (2016 populations) is drawn here unless given. ``trend_shift`` maps a
    component (``visits_log``, ``admissions_log``, the keys of :data:`EFFECTS`) to a
    per-township slope per year added on its link scale to the untreated trend (the
    selection demo's characteristic-driven trends); without it the draws, and so the
    committed demo, are exactly those of the generator before the option existed.
    """
    n_town, n_t = dose.shape
    shift = trend_shift or {}

    # ---- time structure
    t = np.arange(n_t)
    years = t / 12.0
    month = periods.month.to_numpy() - 1
    sf = spring_festival_share(periods)
    days = periods.days_in_month.to_numpy() / (365.25 / 12)  # flows scale with the month's length
    covid_visit = np.ones(n_t)
    covid_in_county = np.zeros(n_t)
    for label, (mult, shift_in) in COVID.items():
        p = pd.Period(label, "M")
        if p in periods:
            covid_visit[periods.get_loc(p)] = mult
            covid_in_county[periods.get_loc(p)] = shift_in

    def draw_norm(sd, size=None):
        return rng.normal(0.0, sd, size=size if size is not None else n_town)

    def cell_noise(sd):
        return rng.normal(0.0, sd, size=(n_town, n_t))

    def extra_trend(component):
        return shift[component][:, None] * years[None, :]

    # ---- population (annual figures, constant within a year)
    if pop0 is None:
        pop0 = np.exp(rng.uniform(np.log(8_000), np.log(80_000), n_town))
    growth = rng.normal(-0.005, 0.006, n_town)
    year_index = (periods.year.to_numpy() - periods.year[0])[None, :]
    population = np.round(pop0[:, None] * (1 + growth[:, None]) ** year_index).astype(np.int64)

    county_trend = rng.normal(0.0, 1.0, (n_counties, 6))

    def trend(component, scale):
        return (county_trend[county_idx, component] * scale)[:, None] * years[None, :]

    od = overdispersion
    # total visits
    visit_rate = np.exp(rng.normal(np.log(0.42), 0.15, n_town))[:, None] \
        * np.exp(0.015 * years + trend(0, 0.01))
    if "visits_log" in shift:
        visit_rate = visit_rate * np.exp(extra_trend("visits_log"))
    mu_visits = (population * visit_rate * days * VISIT_SEASON[month] * covid_visit
                 * np.exp(SPRING_FESTIVAL_VISIT_DIP * sf) * np.exp(cell_noise(od)))
    visits_total = rng.poisson(mu_visits)

    def share_component(base, sd_township, secular, trend_col, effect_key, extra=0.0, cell_sd=0.05):
        lin0 = (logit(base) + draw_norm(sd_township)[:, None] + secular * years[None, :]
                + trend(trend_col, 0.02) + extra + cell_noise(cell_sd))
        if effect_key in shift:
            lin0 = lin0 + extra_trend(effect_key)
        return lin0, lin0 + EFFECTS[effect_key] * dose

    in0, in1 = share_component(0.82, 0.30, 0.02, 1, "in_county_logit", extra=covid_in_county[None, :])
    visits_in_county = rng.binomial(visits_total, expit(in1))
    pr0, pr1 = share_component(0.56, 0.30, -0.03, 2, "primary_logit")
    visits_primary = rng.binomial(visits_total, expit(pr1))
    tv0, tv1 = share_component(0.45, 0.30, 0.0, 3, "thc_visit_logit")
    thc_outpatient_visits = rng.binomial(visits_primary, expit(tv1))

    adm_rate = np.exp(rng.normal(np.log(0.015), 0.15, n_town))[:, None] * np.exp(0.02 * years)
    if "admissions_log" in shift:
        adm_rate = adm_rate * np.exp(extra_trend("admissions_log"))
    mu_adm = (population * adm_rate * days * ADMISSION_SEASON[month] * np.sqrt(covid_visit)
              * np.exp(SPRING_FESTIVAL_ADMISSION_DIP * sf) * np.exp(cell_noise(od)))
    admissions_total = rng.poisson(mu_adm)
    oc0, oc1 = share_component(0.15, 0.30, -0.02, 4, "out_county_logit", extra=-covid_in_county[None, :])
    referrals_out_county = rng.binomial(admissions_total, expit(oc1))
    ta0, ta1 = share_component(0.35, 0.30, 0.0, 5, "thc_admission_logit")
    thc_admissions = rng.binomial(admissions_total, expit(ta1))

    mean_cost = 5_500 * np.exp(draw_norm(0.15))[:, None] * 1.04 ** years[None, :] \
        * np.exp(EFFECTS["cost_log"] * dose)
    if "cost_log" in shift:
        mean_cost = mean_cost * np.exp(extra_trend("cost_log"))
    shape_per_admission = 2.0
    inpatient_cost_total = np.where(
        admissions_total > 0,
        rng.gamma(np.maximum(shape_per_admission * admissions_total, 1e-9), mean_cost / shape_per_admission),
        0.0)
    inpatient_cost_total = np.round(inpatient_cost_total, 2)

    services_base = rng.uniform(25, 70, n_town)[:, None] * np.exp(0.03 * years[None, :])
    if "services_log" in shift:
        services_base = services_base * np.exp(extra_trend("services_log"))
    services_offered = rng.poisson(services_base * np.exp(EFFECTS["services_log"] * dose))

    down_rate = 0.0004 * np.exp(draw_norm(0.3))[:, None] * np.exp(0.05 * years[None, :])
    if "referrals_down_log" in shift:
        down_rate = down_rate * np.exp(extra_trend("referrals_down_log"))
    mu_down0 = population * down_rate * days * np.exp(cell_noise(od))
    referrals_down = rng.poisson(mu_down0 * np.exp(EFFECTS["referrals_down_log"] * dose))

    # ---- truth: expected indicator with and without the pilot, disturbances held fixed
    def expected(in_, oc, pr, tv, ta, d):
        """Each indicator's expectation given the link-scale components and the pilot dose d."""
        return {
            "county_internal_visit_rate": expit(in_),
            "out_county_referral_rate": expit(oc),
            "primary_care_visit_share": expit(pr),
            "thc_outpatient_visits_per_1000": mu_visits * expit(pr) * expit(tv) / population * 1000,
            "thc_admissions_per_1000": mu_adm * expit(ta) / population * 1000,
            "cost_per_admission": mean_cost / np.exp(EFFECTS["cost_log"] * dose) * np.exp(EFFECTS["cost_log"] * d),
            "services_offered": services_base * np.exp(EFFECTS["services_log"] * d),
            "referrals_down_per_1000": mu_down0 * np.exp(EFFECTS["referrals_down_log"] * d) / population * 1000,
            "admissions_thc_share": expit(ta),
        }

    with_pilot = expected(in1, oc1, pr1, tv1, ta1, dose)
    without = expected(in0, oc0, pr0, tv0, ta0, np.zeros_like(dose))
    missing = set(load_catalogue().ids) ^ set(with_pilot)
    if missing:
        raise RuntimeError(f"demo truth does not cover indicators {sorted(missing)}")
    return {
        "pop0": pop0, "population": population, "visits_total": visits_total,
        "visits_in_county": visits_in_county, "visits_primary": visits_primary,
        "admissions_total": admissions_total, "referrals_out_county": referrals_out_county,
        "thc_outpatient_visits": thc_outpatient_visits, "thc_admissions": thc_admissions,
        "inpatient_cost_total": inpatient_cost_total, "services_offered": services_offered,
        "referrals_down": referrals_down, "with_pilot": with_pilot, "without": without,
    }


def _assemble_panel(sim: dict, periods, county_idx, n_counties, ids, names, county_names=None) -> pd.DataFrame:
    """The panel in contract column names, township-major order."""
    n_t = len(periods)
    n_town = len(ids)
    county_names = _county_names(n_counties) if county_names is None else county_names

    def flat(a):
        return np.asarray(a).reshape(-1)

    counts = ["population", "visits_total", "visits_in_county", "visits_primary", "admissions_total",
              "referrals_out_county", "thc_outpatient_visits", "thc_admissions", "inpatient_cost_total",
              "services_offered", "referrals_down"]
    return pd.DataFrame({
        "county": np.repeat(np.array(county_names)[county_idx], n_t),
        "township_id": np.repeat(ids, n_t),
        "township_name": np.repeat(names, n_t),
        "period": np.tile([period_label(p) for p in periods], n_town),
        **{name: flat(sim[name]) for name in counts},
    })


def _county_sizes(config: DemoConfig) -> list[int]:
    """Townships per county: as configured, or ``townships`` split into near-equal counties."""
    if config.n_counties < 1 or config.townships_per_county < 1:
        raise ValueError("n_counties and townships_per_county must be at least 1")
    if config.townships is None:
        sizes = [config.townships_per_county] * config.n_counties
    else:
        n = int(config.townships)
        k = max(config.n_counties, -(-n // config.townships_per_county))
        sizes = [n // k + (1 if c < n % k else 0) for c in range(k)]
    if max(sizes) > MAX_TOWNSHIPS_PER_COUNTY:
        raise ValueError(f"at most {MAX_TOWNSHIPS_PER_COUNTY} townships per county, got {max(sizes)}")
    return sizes


def _county_names(k: int) -> list[str]:
    """The first ``k`` county names: COUNTIES, then two-character names from the township
    characters, then numbered ones (unique, fixed: no random draw)."""
    names = list(COUNTIES)
    if k > len(names):
        names += [a + b + "县" for a in _NAME_FIRST for b in _NAME_FIRST if a != b and a + b + "县" not in COUNTIES]
        base = list(names)
        r = 2
        while k > len(names):
            names += [name[:-1] + str(r) + "县" for name in base]
            r += 1
    return names[:k]


def _township_names(rng, n):
    """``n`` unique township names drawn without replacement from the pool: two-character
    names (649); for larger prefectures three-character names too (38,291 in all), then
    the pool again with a number (安坪2, ...) as often as needed."""
    pool = [a + b for a in _NAME_FIRST for b in _NAME_SECOND]
    if n > len(pool):
        pool += [a + b + c for a in _NAME_FIRST for b in _NAME_FIRST if a != b for c in _NAME_SECOND]
        rounds = -(-n // len(pool))
        pool = [name + (str(r + 1) if r else "") for r in range(rounds) for name in pool]
    picks = rng.choice(len(pool), size=n, replace=False)
    suffix = rng.choice(["镇", "乡"], size=n, p=[0.7, 0.3])
    return np.array([pool[p] + s for p, s in zip(picks, suffix, strict=True)])


def _neighbour_dose(dose, county_idx, pilot_start):
    """Dose felt by each non-pilot township from its pilot neighbours (index +-1 in its county)."""
    out = np.zeros_like(dose)
    n = len(county_idx)
    for i in range(n):
        if pilot_start[i] >= 0:
            continue
        for j in (i - 1, i + 1):
            if 0 <= j < n and county_idx[j] == county_idx[i] and pilot_start[j] >= 0:
                out[i] = np.maximum(out[i], dose[j])
    return out


def _truth_table(with_pilot, without, pilot_start, pilot_model, ids, periods, dose, subgroups=None):
    """The tidy truth: per indicator, the mean effect over the treated township-months
    overall and by cohort, event time, model, township, cohort x event time (and, given
    ``subgroups`` (name -> one label per township), by subgroup: ``att_subgroup``)."""
    n_town, n_t = dose.shape
    event = np.arange(n_t)[None, :] - pilot_start[:, None]
    treated_post = (pilot_start[:, None] >= 0) & (event >= 0)
    cohort = np.array([period_label(periods[s]) if s >= 0 else "" for s in pilot_start])
    spill_cell = (pilot_start[:, None] < 0) & (dose > 0)
    # only the treated and spillover cells enter the truth: keep those (in township-major order)
    keep = (treated_post | spill_cell).reshape(-1)
    town = np.repeat(np.arange(n_town), n_t)[keep]
    frames = []
    for ind, y1 in with_pilot.items():
        y0 = without[ind]
        diff = y1 - y0
        cells = pd.DataFrame({
            "township_id": ids[town],
            "cohort": cohort[town],
            "model": pilot_model[town],
            "event_time": event.reshape(-1)[keep],
            "treated_post": treated_post.reshape(-1)[keep],
            "spill": spill_cell.reshape(-1)[keep],
            "effect": diff.reshape(-1)[keep],
            "y0": y0.reshape(-1)[keep],
        })
        for name, labels in (subgroups or {}).items():
            cells[name] = labels[town]
        post = cells[cells["treated_post"]]
        groups = [("att", None), ("att_cohort", "cohort"), ("att_event_time", "event_time"),
                  ("att_model", "model"), ("att_township", "township_id")]
        for name in subgroups or {}:
            groups.append(("att_subgroup", name))
        for estimand, by in groups:
            if by is None:
                g = pd.DataFrame({"group": [""], "att": [post["effect"].mean()],
                                  "y0": [post["y0"].mean()], "n_cells": [len(post)]})
            else:
                agg = post.groupby(by, sort=True).agg(att=("effect", "mean"), y0=("y0", "mean"),
                                                      n_cells=("effect", "size")).reset_index()
                g = agg.rename(columns={by: "group"})
                g["group"] = g["group"].astype(str)
            g.insert(0, "estimand", estimand)
            g.insert(0, "indicator", ind)
            frames.append(g)
        by_cohort_event = post.groupby(["cohort", "event_time"], sort=True).agg(
            att=("effect", "mean"), y0=("y0", "mean"), n_cells=("effect", "size")).reset_index()
        by_cohort_event.insert(0, "group", by_cohort_event.pop("cohort") + "|"
                               + by_cohort_event.pop("event_time").astype(str))
        by_cohort_event.insert(0, "estimand", "att_cohort_event_time")
        by_cohort_event.insert(0, "indicator", ind)
        frames.append(by_cohort_event)
        spill = cells[cells["spill"]]
        if len(spill):
            agg = spill.groupby("township_id").agg(att=("effect", "mean"), y0=("y0", "mean"),
                                                   n_cells=("effect", "size")).reset_index()
            agg = agg.rename(columns={"township_id": "group"})
            agg.insert(0, "estimand", "spillover_township")
            agg.insert(0, "indicator", ind)
            frames.append(agg)
    truth = pd.concat(frames, ignore_index=True)
    truth["relative"] = truth["att"] / truth["y0"]
    truth = truth.rename(columns={"y0": "mean_counterfactual"})
    return truth[["indicator", "estimand", "group", "att", "relative", "mean_counterfactual", "n_cells"]]


def write_demo(out_dir: Path | str = DEMO_DATA, config: DemoConfig = DemoConfig()) -> list[Path]:
    """Write panel.csv, pilots.csv, truth.csv and design.json (UTF-8, byte-reproducible),
    and the township characteristics: townships.csv and characteristics.json."""
    return _write(Path(out_dir), generate(config))


def _write(out_dir: Path, demo: DemoData) -> list[Path]:
    panel = demo.panel.rename(columns=PANEL_HEADERS)
    pilots = demo.pilots.rename(columns=PILOT_HEADERS)
    files = {
        "panel.csv": panel.to_csv(index=False, lineterminator="\n", float_format="%.2f"),
        "pilots.csv": pilots.to_csv(index=False, lineterminator="\n"),
        "truth.csv": demo.truth.to_csv(index=False, lineterminator="\n", float_format="%.10g"),
        "design.json": _json(demo.design),
    }
    if demo.townships is not None:
        files["townships.csv"] = townships_csv(demo.townships)
    if demo.characteristics:
        files["characteristics.json"] = _json(demo.characteristics)
    written = []
    for name, text in files.items():
        written.append(write_text_atomic(out_dir / name, text))
    return written


def _json(content: dict) -> str:
    return json.dumps(content, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


# ----------------------------------------------------------------------------- township characteristics

# Headers of the township table, as a county health office would have them (issue #15).
TOWNSHIP_HEADERS = {
    "township_id": "乡镇编码",
    "distance_km": "到县城距离（公里）",
    "beds": "床位数",
    "health_workers": "卫生技术人员数",
    "mountainous": "是否山区",
}
MOUNTAINOUS_LABELS = {1: "是", 0: "否"}
# The characteristics' own random stream: np.random.default_rng([seed, CHARACTERISTICS_STREAM]),
# so that adding them left every draw of the panel, pilots and truth as it was.
CHARACTERISTICS_STREAM = 1
# How the characteristics are drawn (both demos).
CHARACTERISTICS = {
    # road distance to the county seat: log-normal, rounded to 0.1 km
    "distance_km": {"median": 18.0, "sd_log": 0.55, "min": 2.0, "max": 90.0},
    # mountainous: logit of a county effect (some counties are mountain counties) + per km of distance
    "mountainous": {"county_logit_mean": -1.0, "county_logit_sd": 1.0, "logit_per_km_from_18": 0.05},
    # beds of the township health centre: tied to the 2016 resident population (the size) and the
    # level (镇 towns' centres are larger than 乡 townships'), fewer in the mountains
    "beds": {"per_1000_residents": 1.1, "level_factor": {"镇": 1.15, "乡": 0.8}, "mountain_factor": 0.85,
             "sd_log": 0.25, "min": 6},
    # health workers: a fixed core plus a staff per bed ratio
    "health_workers": {"core": 6, "per_bed": 1.25, "sd_log": 0.15},
}
# Main demo: how its (randomly drawn) pilots differ, the pattern of how counties pick
# pilots. Shifts for pilot townships on log distance, log beds and the mountainous logit.
PILOT_PATTERN = {"log_distance": -0.5, "log_beds": 0.35, "mountainous_logit": -1.2}


def _draw_characteristics(rng, pop0, names, county_idx, n_counties, *, log_distance_shift=0.0, log_beds_shift=0.0,
                          mountain_shift=0.0) -> pd.DataFrame:
    """distance_km, beds, health_workers, mountainous (0/1) per township, as
    :data:`CHARACTERISTICS` says; the shifts (scalars or one value per township) move pilots."""
    n = len(pop0)
    c = CHARACTERISTICS
    county_effect = rng.normal(c["mountainous"]["county_logit_mean"], c["mountainous"]["county_logit_sd"], n_counties)
    d = c["distance_km"]
    distance = np.exp(np.log(d["median"]) + log_distance_shift + rng.normal(0.0, d["sd_log"], n))
    distance = np.round(np.clip(distance, d["min"], d["max"]), 1)
    p_mountain = expit(county_effect[county_idx] + c["mountainous"]["logit_per_km_from_18"] * (distance - 18.0)
                       + mountain_shift)
    mountainous = (rng.random(n) < p_mountain).astype(np.int64)
    b = c["beds"]
    level = np.array([b["level_factor"][str(name)[-1]] if str(name)[-1] in b["level_factor"] else 1.0
                      for name in names])
    beds = (pop0 / 1000 * b["per_1000_residents"] * level * np.where(mountainous == 1, b["mountain_factor"], 1.0)
            * np.exp(log_beds_shift + rng.normal(0.0, b["sd_log"], n)))
    beds = np.maximum(np.round(beds), b["min"]).astype(np.int64)
    h = c["health_workers"]
    workers = np.round((h["core"] + h["per_bed"] * beds) * np.exp(rng.normal(0.0, h["sd_log"], n))).astype(np.int64)
    return pd.DataFrame({"distance_km": distance, "beds": beds, "health_workers": workers,
                         "mountainous": mountainous})


def _main_characteristics(config, ids, names, pop0, county_idx, pilot_start) -> tuple[pd.DataFrame, dict]:
    """The main demo's township table, from the seed's second stream: pilots nearer the
    county seat, with more beds and staff, less often mountainous (:data:`PILOT_PATTERN`).

    The pilots were drawn at random before the characteristics existed, so here the
    characteristics are drawn given pilot status (the pattern counties' choices leave,
    not a selection model). They enter no trend and no effect: in the panel they are
    associated with levels only (beds with population), which township effects absorb."""
    rng = np.random.default_rng([config.seed, CHARACTERISTICS_STREAM])
    pilot = (pilot_start >= 0).astype(float)
    table = _draw_characteristics(rng, pop0, names, county_idx, int(county_idx.max()) + 1,
                                  log_distance_shift=PILOT_PATTERN["log_distance"] * pilot,
                                  log_beds_shift=PILOT_PATTERN["log_beds"] * pilot,
                                  mountain_shift=PILOT_PATTERN["mountainous_logit"] * pilot)
    table.insert(0, "township_id", ids)
    design = {"random_stream": f"numpy default_rng([seed, {CHARACTERISTICS_STREAM}]), seed {config.seed}",
              "characteristics": CHARACTERISTICS, "pilot_pattern": PILOT_PATTERN,
              "enters_outcomes": "no: levels only (beds follow population), absorbed by township effects",
              "standardized_mean_differences": _smd_table(table, pilot > 0)}
    return table, design


def _smd_table(table: pd.DataFrame, pilot: np.ndarray) -> dict:
    """Standardized mean differences, pilots minus the rest, rounded to 4 digits: the
    difference in means over sqrt of the mean of the two groups' variances (sample
    variances; p(1 - p) for the binary ``mountainous``). Austin PC (2009), Stat Med
    28:3083-3107."""
    out = {}
    for col in ("distance_km", "beds", "health_workers", "mountainous"):
        x = table[col].to_numpy(float)
        a, b = x[pilot], x[~pilot]
        if col == "mountainous":
            spread = (a.mean() * (1 - a.mean()) + b.mean() * (1 - b.mean())) / 2
        else:
            spread = (a.var(ddof=1) + b.var(ddof=1)) / 2
        out[col] = round(float((a.mean() - b.mean()) / np.sqrt(spread)), 4)
    return out


def townships_csv(townships: pd.DataFrame) -> str:
    """The township table as written (UTF-8, office headers, 是/否)."""
    t = townships.assign(mountainous=townships["mountainous"].map(MOUNTAINOUS_LABELS))
    return t.rename(columns=TOWNSHIP_HEADERS).to_csv(index=False, lineterminator="\n", float_format="%.1f")


# ----------------------------------------------------------------------------- selection demo

DEMO_SELECTION_DATA = DEMO_DATA.parent / "demo_selection"


@dataclass(frozen=True)
class SelectionDemoConfig:
    """Parameters of the selection demo (``data_raw/demo_selection``): a second synthetic
    prefecture whose township characteristics drive pilot selection (:data:`SELECTION_LOGIT`),
    the untreated trends (:data:`TREND_INDEX`, :data:`TREND_PER_INDEX`) and the size of the
    effect (:data:`HETEROGENEITY`). 12 counties of 16 townships; two pilot cohorts.

    The default seed is :data:`SELECTION_SEED_RULE`'s: the first from 20162 on whose draw
    looks as the design means it to, judged on its pilots and characteristics only."""

    seed: int = 20163
    n_counties: int = 12
    townships_per_county: int = 16
    townships: int | None = None
    start: str = "2016-01"
    end: str = "2023-12"
    cohorts: tuple[str, ...] = ("2018-07", "2019-07")
    overdispersion: float = 0.06


# Pilot selection: P(pilot) = expit(intercept + sum of coefficient x characteristic), one
# Bernoulli draw per township (about 32 of 192 expected); the cohort (each with probability
# 1/2) and the integration model (MODEL_SHARES) are then drawn independently of everything.
SELECTION_LOGIT = {"intercept": -0.9, "distance_km": -0.07, "beds": 0.025, "health_workers": 0.0,
                   "mountainous": -1.0}
# A hillier prefecture than the main demo's: the mountainous logit of every township is this
# much higher (about half mountainous instead of a third, so that the mountainous pilots are not too few).
SELECTION_MOUNTAIN_SHIFT = 1.0
MODEL_SHARES = {"托管": 0.4, "紧密型医共体分院": 0.35, "对口支援": 0.25}
# Untreated trends: each township's development index
#   index = (18 - distance_km) / 15 + (beds - 30) / 30 - 0.6 x mountainous
# adds index x TREND_PER_INDEX[component] per year on the component's link scale (parallel
# trends hold only conditional on the characteristics, linear in them on the link scale).
TREND_INDEX = {"intercept": 18 / 15 - 1.0, "distance_km": -1 / 15, "beds": 1 / 30, "mountainous": -0.6}
TREND_PER_INDEX = {
    "visits_log": 0.01,           # total visits per resident
    "in_county_logit": 0.04,      # in-county visit share
    "primary_logit": 0.04,        # primary-care share
    "thc_visit_logit": 0.04,      # township centre share of primary-care visits
    "admissions_log": 0.01,
    "out_county_logit": -0.04,    # out-of-county referral share
    "thc_admission_logit": 0.03,
    "services_log": 0.02,
    "referrals_down_log": 0.06,
}
# Effect heterogeneity: a pilot's dose is its model strength x the ramp x
#   (1 - mountainous_cut x mountainous) x exp(distance_per_km x (distance_km - 18)),
# so mountainous townships gain half as much and the effect falls with distance.
HETEROGENEITY = {"mountainous_cut": 0.5, "distance_per_km": -0.025, "distance_centre_km": 18.0}
MIN_SELECTED_PILOTS = 10
SELECTION_SEED_RULE = ("the first seed from 20162 on whose draw has 30 to 40 pilots, at least 8 of them mountainous, "
                       "and standardized mean differences beyond 0.1 on every characteristic (20162: mountainous "
                       "-0.097); judged on the pilots and characteristics only, before any estimator was run on it")


def _linear(coefficients: dict, table: pd.DataFrame) -> np.ndarray:
    return coefficients["intercept"] + sum(coefficients[c] * table[c].to_numpy(float)
                                           for c in coefficients if c != "intercept")


def subgroup_labels(townships: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each township's subgroup labels (issue #15): ``mountainous:1`` / ``mountainous:0``
    and ``distance_km:low`` (at or below the median over all townships) / ``distance_km:high``."""
    median = float(np.median(townships["distance_km"].to_numpy(float)))
    return {"mountainous": np.array([f"mountainous:{int(m)}" for m in townships["mountainous"]]),
            "distance_km": np.where(townships["distance_km"].to_numpy(float) <= median,
                                    "distance_km:low", "distance_km:high")}


def generate_selection(config: SelectionDemoConfig = SelectionDemoConfig()) -> DemoData:
    """Draw the selection demo: the demo's outcome model on a prefecture where pilots
    were chosen on their characteristics.

    * selection: P(pilot) = expit(:data:`SELECTION_LOGIT` on distance_km, beds,
      mountainous), nearer, larger, less mountainous townships more often;
    * untreated trends: the development index :data:`TREND_INDEX` (linear in the same
      characteristics) times :data:`TREND_PER_INDEX` per year on each component's link
      scale, so parallel trends hold only conditional on the characteristics and a DiD
      that ignores them is biased (upwards on the shares the pilots raise);
    * effects: each pilot's dose is scaled by :data:`HETEROGENEITY` (mountainous
      townships gain half as much; the effect falls with distance).

    The truth is computed as the main demo's (expected indicator with and without the
    pilot, disturbances fixed), with the ATT by subgroup added (estimand
    ``att_subgroup``, groups of :func:`subgroup_labels`). Same config, same numbers."""
    rng = np.random.default_rng(config.seed)
    sizes = _county_sizes(config)
    n_counties, n_town = len(sizes), int(sum(sizes))
    periods = pd.period_range(config.start, config.end, freq="M")
    n_t = len(periods)
    county_idx = np.repeat(np.arange(n_counties), sizes)
    names = _township_names(rng, n_town)
    ids = np.array([f"36{12 + k // 79:02d}{21 + k % 79:02d}{101 + j:03d}"  # a second prefecture, 3612..
                    for k in range(n_counties) for j in range(sizes[k])])
    county_names = _county_names(len(COUNTIES) + n_counties)[len(COUNTIES):]  # none of the main demo's

    pop0 = np.exp(rng.uniform(np.log(8_000), np.log(80_000), n_town))
    townships = _draw_characteristics(rng, pop0, names, county_idx, n_counties, mountain_shift=SELECTION_MOUNTAIN_SHIFT)
    townships.insert(0, "township_id", ids)

    # ---- selection, cohorts and models
    propensity = expit(_linear(SELECTION_LOGIT, townships))
    pilot = rng.random(n_town) < propensity
    cohort_of = rng.integers(0, len(config.cohorts), n_town)
    model_of = rng.choice(len(MODEL_SHARES), size=n_town, p=list(MODEL_SHARES.values()))
    if pilot.sum() < MIN_SELECTED_PILOTS or (pilot.sum() > n_town / 2):
        raise ValueError(f"seed {config.seed} selects {int(pilot.sum())} pilots of {n_town} townships: "
                         f"the selection demo needs {MIN_SELECTED_PILOTS} to half of them")
    starts = [periods.get_loc(pd.Period(s, "M")) for s in config.cohorts]
    pilot_start = np.where(pilot, np.array(starts)[cohort_of], -1)
    pilot_model = np.where(pilot, np.array(list(MODEL_SHARES), dtype=object)[model_of], "").astype(object)
    order = np.lexsort((ids, pilot_start))
    pilot_rows = [(ids[i], config.cohorts[cohort_of[i]], pilot_model[i]) for i in order if pilot[i]]

    # ---- effects and trends
    strength = np.array([MODEL_STRENGTH.get(m, 0.0) for m in pilot_model])
    het = HETEROGENEITY
    distance = townships["distance_km"].to_numpy(float)
    multiplier = ((1 - het["mountainous_cut"] * townships["mountainous"].to_numpy(float))
                  * np.exp(het["distance_per_km"] * (distance - het["distance_centre_km"])))
    dose = _ramp(pilot_start, n_t) * (strength * multiplier)[:, None]
    index = _linear(TREND_INDEX, townships)
    trend_shift = {component: per * index for component, per in TREND_PER_INDEX.items()}

    sim = _simulate(rng, periods, county_idx, n_counties, dose, overdispersion=config.overdispersion, pop0=pop0,
                    trend_shift=trend_shift)
    panel = _assemble_panel(sim, periods, county_idx, n_counties, ids, names, county_names=county_names)
    pilots = pd.DataFrame(pilot_rows, columns=["township_id", "pilot_start", "model"])
    truth = _truth_table(sim["with_pilot"], sim["without"], pilot_start, pilot_model, ids, periods, dose,
                         subgroups=subgroup_labels(townships))
    design = {
        "config": {**asdict(config), "cohorts": list(config.cohorts)},
        "pilots": {"selected": int(pilot.sum()), "townships": n_town,
                   "by_cohort": {s: int((pilot & (cohort_of == k)).sum()) for k, s in enumerate(config.cohorts)}},
        "selection_logit": SELECTION_LOGIT,
        "model_shares": MODEL_SHARES,
        "trend_index": TREND_INDEX,
        "trend_per_index_per_year_link_scale": TREND_PER_INDEX,
        "heterogeneity": HETEROGENEITY,
        "characteristics": CHARACTERISTICS,
        "mountainous_logit_shift": SELECTION_MOUNTAIN_SHIFT,
        "standardized_mean_differences": _smd_table(townships, pilot),
        **_outcome_design(),
    }
    if config.townships is None:
        del design["config"]["townships"]
    if config.seed == SelectionDemoConfig.seed:
        design["seed_rule"] = SELECTION_SEED_RULE
    return DemoData(panel=panel, pilots=pilots, truth=truth, design=design, townships=townships)


def write_selection_demo(out_dir: Path | str = DEMO_SELECTION_DATA,
                         config: SelectionDemoConfig = SelectionDemoConfig()) -> list[Path]:
    """Write the selection demo's panel.csv, pilots.csv, townships.csv, truth.csv and
    design.json (UTF-8, byte-reproducible)."""
    return _write(Path(out_dir), generate_selection(config))
