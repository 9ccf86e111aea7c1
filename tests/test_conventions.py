"""One vocabulary for every public estimator, checked on the code itself.

Every public function of ``evaluation.estimators``, ``evaluation.inference`` and
``evaluation.diagnostics`` takes ``data`` first (``fit`` for those that take a fitted
model), everything else keyword-only, no ``*args``/``**kwargs``, none of the retired
parameter names, and returns :class:`evaluation.results.Estimates` (or a subclass).
Matrix-level engines and simulation utilities are listed below with the reason they are
exempt. Then every estimator is run on a small staggered panel: each returns an
``Estimates`` whose ``tidy()`` has the structured columns and whose ``plot()`` is a Figure.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import typing
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

import evaluation
from evaluation.results import Effect, Estimates

matplotlib.use("Agg")

PACKAGES = ("evaluation.estimators", "evaluation.inference", "evaluation.diagnostics")

# parameter names replaced by the shared vocabulary (old -> new in the migration notes)
BANNED = {"first_treat", "treatment", "group", "post", "interruptions", "series", "count", "replications", "reps",
          "ri_draws", "sims", "permutations", "bootstrap", "se", "errors", "leads", "lags", "min_e", "max_e",
          "max_pre", "max_post", "kwargs", "args", "options"}

# public functions that are not data-level estimators: name -> why
ENGINES = {
    "matching_weights": "nearest-neighbour or kernel matching weights from two arrays of scores (matching engine)",
    "factorize": "integer codes of a column (fixed-effects engine)",
    "demean": "alternating projections on a matrix (fixed-effects engine)",
    "nested_in": "whether one code array nests in another (fixed-effects engine)",
    "small_sample_factor": "the CR1 multiplier from counts (fixed-effects engine)",
    "balanced_wide": "reshapes one column to a unit x period array (fixed-effects engine)",
    "two_way_demean_balanced": "two-way demeaning of a matrix (fixed-effects engine)",
    "fe_ols": "least squares on arrays with absorbed effects (fixed-effects engine)",
    "fe_poisson": "PPML on arrays with absorbed effects (fixed-effects engine)",
    "cr2": "CR2 variance of one coefficient of a design matrix",
    "newey_west_lags": "the Newey-West lag rule from a length",
    "indicator_series": "builds the input series of an ITS from a study panel; estimates nothing",
    "simplex_least_squares": "synthetic-control weights on matrices",
    "frank_wolfe_weights": "synthetic-DiD weights on matrices",
    "synthdid_weights": "synthetic-DiD unit and time weights on a matrix",
    "synthdid_estimate": "synthetic DiD on a unit x period matrix (the paper's form)",
    "flci_smoothness": "honest-DiD interval from a coefficient vector and covariance",
    "rm_confidence_set": "honest-DiD confidence set from a coefficient vector and covariance",
    "smoothness_upper_bound": "an upper end for M from coefficients and covariance",
    "event_study_coefficients": "extracts (event times, coefficients, covariance) from a fit",
    "simulate_panel": "simulation utility: draws a panel",
    "size_and_power": "simulation utility: rejection rates over simulated panels, not effects",
    "holm": "Holm-adjusted p-values from an array of p-values (multiple testing across indicators)",
    "benjamini_hochberg": "Benjamini-Hochberg q-values from an array of p-values (multiple testing)",
    "romano_wolf": "Romano-Wolf step-down p-values from statistics and joint null draws (arrays)",
    "randomization_romano_wolf": "family-wise adjustment of per-indicator randomization draws; a table, not effects",
    "multiplier_draws": "joint multiplier-bootstrap draws from an influence-function matrix",
    "withhold_clustered": "the few-treated rule applied to a tidy effects table (display and exports)",
    "rests_on_clusters": "whether an inference text is cluster-robust or analytic",
    "withheld_reason": "the text that replaces withheld inference",
    "parse_withheld": "reads a withheld-inference text back (for translation)",
}
# data-level helpers that follow the keyword conventions but return no Estimates: name -> why
UTILITIES = {
    "estimate_noise": "simulation input (residual SD and AR(1) of a panel), not an effect",
    "treatment_indicator": "the derived binary treatment D_it of a frame",
    "subgroup_labels": "the subgroup of each township for one covariate (binary values or a median split)",
    "balance_table": "a descriptive table of covariate means, SDs, SMDs and variance ratios, not effects",
    "entropy_balance": "comparison-township weights (Hainmueller 2012), not effects",
    "propensity_score": "the fitted logit of pilot status per township (a PropensityScore), not an effect",
    "adjust_for_covariates": "the outcome less its covariates' fitted period effects (an input of the heterogeneity estimator)",
    "pilot_did": "each pilot's own 2x2 DiD (the statistic the heterogeneity relabelling test permutes)",
}
# functions whose first parameter is a fitted model
TAKES_FIT = {"honest_sensitivity"}
# public classes that are not results: name -> why
VALUE_TYPES = {
    "PropensityScore": "a fitted propensity score: coefficients, covariance, scores per township",
    "FEFit": "the fixed-effects engine's coefficients and covariance",
    "Interruption": "describes one ITS start (the `start` argument)",
    "CovidPhase": "describes one COVID-19 phase (an ITS option)",
}


def _modules():
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            yield importlib.import_module(f"{package_name}.{info.name}")


def _members(kind):
    out = []
    for module in _modules():
        for name, obj in inspect.getmembers(module, kind):
            if not name.startswith("_") and obj.__module__ == module.__name__:
                out.append((f"{module.__name__}.{name}", obj))
    return out


def signature_problems(func, *, first: str = "data", check_return: bool = True) -> list[str]:
    """What breaks the convention in one function's signature (empty when none)."""
    problems = []
    params = list(inspect.signature(func).parameters.values())
    if not params or params[0].name != first:
        problems.append(f"first parameter is {params[0].name if params else None!r}, not {first!r}")
    for p in params[1:]:
        if p.kind is p.VAR_KEYWORD or p.kind is p.VAR_POSITIONAL:
            problems.append(f"takes {'**' if p.kind is p.VAR_KEYWORD else '*'}{p.name}")
        elif p.kind is not p.KEYWORD_ONLY:
            problems.append(f"'{p.name}' is not keyword-only")
    if params and params[0].kind in (params[0].VAR_KEYWORD, params[0].VAR_POSITIONAL):
        problems.append(f"takes *{params[0].name}")
    problems += [f"parameter '{p.name}' has a retired name" for p in params if p.name in BANNED]
    if check_return:
        ret = typing.get_type_hints(func).get("return")
        if not (inspect.isclass(ret) and issubclass(ret, Estimates)):
            problems.append(f"returns {ret!r}, not Estimates")
    return problems


FUNCTIONS = _members(inspect.isfunction)
ESTIMATORS = [(n, f) for n, f in FUNCTIONS if f.__name__ not in ENGINES and f.__name__ not in UTILITIES]


def test_the_check_can_fail():
    def bad(frame, outcome, *args, first_treat=None, **kwargs) -> dict:
        return {}

    def good(data, *, outcome: str, cohort: str) -> Estimates:
        return Estimates([], "m")

    problems = signature_problems(bad)
    assert any("first parameter" in p for p in problems) and any("**kwargs" in p for p in problems)
    assert any("'outcome' is not keyword-only" in p for p in problems)
    assert any("first_treat" in p for p in problems) and any("not Estimates" in p for p in problems)
    assert signature_problems(good) == []


def test_the_walk_finds_the_estimators():
    names = {f.__name__ for _, f in ESTIMATORS}
    assert {"twfe", "event_study", "callaway_santanna", "bacon_decomposition", "randomization_inference",
            "wild_cluster_bootstrap", "synthetic_did", "segmented_regression", "honest_sensitivity",
            "robustness_table"} <= names
    assert not (set(ENGINES) | set(UTILITIES)) - {f.__name__ for _, f in FUNCTIONS}, "stale allowlist entry"


@pytest.mark.parametrize("name, func", ESTIMATORS, ids=[n for n, _ in ESTIMATORS])
def test_estimator_signature(name, func):
    first = "fit" if func.__name__ in TAKES_FIT else "data"
    assert signature_problems(func, first=first) == [], name


@pytest.mark.parametrize("name", sorted(UTILITIES))
def test_utility_signature(name):
    func = dict((f.__name__, f) for _, f in FUNCTIONS)[name]
    assert signature_problems(func, check_return=False) == [], name


def test_engines_take_no_retired_names():
    for name, func in FUNCTIONS:
        params = inspect.signature(func).parameters
        assert not ({"first_treat", "treatment", "replications", "reps", "ri_draws", "se",
                     "errors"} & set(params)), name
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), name


def test_classes():
    for name, cls in _members(inspect.isclass):
        assert not issubclass(cls, BaseException), f"{name}: exceptions and warnings belong in evaluation.errors"
        if issubclass(cls, Estimates):
            for meth_name, meth in inspect.getmembers(cls, inspect.isfunction):
                if meth_name.startswith("_"):
                    continue
                params = inspect.signature(meth).parameters.values()
                assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params), (name, meth_name)
                assert not {p.name for p in params} & BANNED, (name, meth_name)
        else:
            assert cls.__name__ in VALUE_TYPES, f"{name}: a public class that is neither a result nor listed"


def test_no_code_parses_terms():
    """``term`` is a label for people: code reads the structured fields instead."""
    root = Path(evaluation.__file__).parent.parent
    pattern = re.compile(r"term(\"\])?\s*\.(split|startswith|partition|removeprefix)|term(\"\])?\s*\[\s*\d*\s*:"
                         r"|\.str\.(split|extract|replace)\(.{0,20}\b[gkeht]=|startswith\([\"'][gkeht]=")
    files = [p for d in ("evaluation", "tests", "benchmarks", "docs") for p in (root / d).rglob("*.py")
             if "report" not in p.parts]
    hits = [f"{p.relative_to(root)}:{i}" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if pattern.search(line) and p.name != "test_conventions.py"]
    assert not hits, hits


# ---------------------------------------------------------------- behaviour


@pytest.fixture(scope="module")
def panel():
    """14 townships x 14 periods: cohorts starting at 8 (3 pilots) and 10 (3 pilots), 8
    never treated; an effect of 2 that grows by 0.3 a period; counts for Poisson."""
    rng = np.random.default_rng(7)
    starts = [8, 8, 8, 10, 10, 10] + [0] * 8
    rows = []
    for i, g in enumerate(starts):
        a = rng.normal()
        for t in range(1, 15):
            on = g > 0 and t >= g
            y = a + 0.1 * t + (2 + 0.3 * (t - g)) * on + rng.normal(0, 0.5)
            rows.append({"township_id": f"T{i:02d}", "time": t, "first_treat": g, "value": y,
                         "county": f"C{i % 4}", "model": "A" if i % 2 else "B",
                         "visits": rng.poisson(50 * np.exp(0.3 * on)), "population": 1000.0,
                         "period": f"2020-{t:02d}" if t <= 12 else f"2021-{t - 12:02d}"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def series():
    idx = pd.period_range("2018-01", periods=36, freq="M", name="period")
    rng = np.random.default_rng(1)
    t = np.arange(36)
    y = 10 + 0.05 * t + 1.5 * (t >= 24) + rng.normal(0, 0.3, 36)
    control = 9 + 0.05 * t + rng.normal(0, 0.3, 36)
    return pd.DataFrame({"y": y}, index=idx), pd.DataFrame({"y": control}, index=idx)


KEYS = dict(outcome="value", unit="township_id", time="time", cohort="first_treat")


def _calls(panel, series):
    """One call of every estimator on the small panel (name -> thunk)."""
    from evaluation.diagnostics import bacon, robustness, sensitivity
    from evaluation.estimators import did, imputation, its, matching, saturated, staggered, synth
    from evaluation.inference import few_clusters, few_treated, heterogeneity, pretrend

    one_cohort = panel[panel["first_treat"] != 10]
    one_pilot = panel[panel["first_treat"].eq(0) | panel["township_id"].eq("T00")]
    pilot, control = series
    return {
        "did_2x2": lambda: did.did_2x2(one_cohort, outcome="value", time="time", cohort="first_treat"),
        "twfe": lambda: did.twfe(panel, **KEYS),
        "event_study": lambda: did.event_study(panel, **KEYS, event_window=(-3, 3)),
        "poisson_did": lambda: did.poisson_did(panel, **{**KEYS, "outcome": "visits"}, exposure="population"),
        "effects_by_group": lambda: did.effects_by_group(panel, **KEYS, by="model"),
        "callaway_santanna": lambda: staggered.callaway_santanna(panel, **KEYS),
        "imputation_did": lambda: imputation.imputation_did(panel, **KEYS, event_window=(-3, 3)),
        "sun_abraham": lambda: saturated.sun_abraham(panel, **KEYS, event_window=(-3, 3)),
        "extended_twfe": lambda: saturated.extended_twfe(panel, **KEYS),
        "segmented_regression": lambda: its.segmented_regression(pilot, outcome="y", start="2020-01",
                                                                 spring_festival=False, horizons=(3,)),
        "controlled_its": lambda: its.controlled_its(pilot, control=control, outcome="y", start="2020-01",
                                                     spring_festival=False),
        "synthetic_control": lambda: synth.synthetic_control(one_pilot, **KEYS),
        "synthetic_control_by_pilot": lambda: synth.synthetic_control_by_pilot(one_cohort, **KEYS),
        "synthetic_did": lambda: synth.synthetic_did(panel, **KEYS, draws=10, seed=1),
        "synthetic_did_by_pilot": lambda: synth.synthetic_did_by_pilot(panel, **KEYS, draws=5, seed=1),
        "randomization_inference": lambda: few_clusters.randomization_inference(did.twfe(panel, **KEYS), draws=99,
                                                                                 seed=1, max_exact=10),
        "wild_cluster_bootstrap": lambda: few_clusters.wild_cluster_bootstrap(panel, **KEYS, draws=99, seed=1),
        "twfe_cr2": lambda: few_clusters.twfe_cr2(did.twfe(panel, **KEYS)),
        "placebo_in_space": lambda: few_clusters.placebo_in_space(panel, **KEYS),
        "subgroup_randomization": lambda: few_treated.subgroup_randomization(panel, **KEYS, by="model", draws=99,
                                                                             seed=1),
        "psm_did": lambda: matching.psm_did(panel.assign(size=panel["township_id"].str[1:].astype(float) % 5),
                                            **KEYS, covariates=["size"], caliper=None),
        "heterogeneity_randomization": lambda: heterogeneity.heterogeneity_randomization(
            panel.assign(near=panel["township_id"].str[1:].astype(int) % 2), **KEYS, by=["near"],
            pre_periods=3, draws=99, seed=1),
        "pretrend_randomization": lambda: pretrend.pretrend_randomization(panel, **KEYS, event_window=(-4, 3),
                                                                          draws=99, seed=1),
        "bacon_decomposition": lambda: bacon.bacon_decomposition(panel, **KEYS),
        "placebo_in_time": lambda: robustness.placebo_in_time(panel, shift=3, **KEYS),
        "leave_one_out": lambda: robustness.leave_one_out(panel, **KEYS),
        "exclude_periods": lambda: robustness.exclude_periods(panel, periods=["2020-03"], **KEYS),
        "comparison_groups": lambda: robustness.comparison_groups(panel, **KEYS),
        "robustness_table": lambda: robustness.robustness_table(panel, covid_periods=["2020-03"], shift=3, **KEYS),
        "honest_sensitivity": lambda: sensitivity.honest_sensitivity(
            did.event_study(panel, **KEYS, event_window=(-3, 3)), bound="smoothness", values=[0.0, 0.1],
            breakdown=False),
    }


# estimators not run here, and why
NOT_RUN = {"its_by_township": "needs a study panel object; run on the demo study in test_its"}
STRUCTURED = ["event_time", "cohort", "horizon", "calendar_time", "unit"]


@pytest.mark.filterwarnings("ignore::evaluation.errors.PoorPreFitWarning")
def test_every_estimator_runs_and_returns_estimates(panel, series):
    import matplotlib.pyplot as plt

    calls = _calls(panel, series)
    assert {f.__name__ for _, f in ESTIMATORS} - set(NOT_RUN) == set(calls), "an estimator without a call here"
    fits = {name: call() for name, call in calls.items()}
    cs = fits["callaway_santanna"]
    fits["callaway_santanna.aggregate(dynamic)"] = cs.aggregate("dynamic", event_window=(-3, 3))
    fits["callaway_santanna.aggregate(group)"] = cs.aggregate("group")
    fits["callaway_santanna.aggregate(calendar)"] = cs.aggregate("calendar")
    for name, fit in fits.items():
        assert isinstance(fit, Estimates) and fit.effects, name
        assert fit.kind, name
        assert all(isinstance(e, Effect) for e in fit.effects), name
        table = fit.tidy()
        assert set(STRUCTURED) <= set(table.columns), name
        assert len(fit.conf_int()) == len(fit.effects), name
        if fit.vcov is not None:
            assert fit.vcov.shape == (len(fit.effects), len(fit.effects)), name
        assert "<table" in fit._repr_html_() and fit.method in str(fit.summary()), name
        fig = fit.plot()
        assert isinstance(fig, matplotlib.figure.Figure), name
        plt.close(fig)
    # the structured fields are filled where they mean something
    assert [e.event_time for e in fits["event_study"].effects] == [-3, -2, 0, 1, 2, 3]
    assert [e.event_time for e in fits["sun_abraham"].effects[:-1]] == [-3, -2, 0, 1, 2, 3]
    dyn = [e for e in fits["callaway_santanna.aggregate(dynamic)"].effects if e.estimand == "att_event_time"]
    assert [e.event_time for e in dyn] == list(range(-3, 4))
    assert [e.cohort for e in fits["callaway_santanna.aggregate(group)"].effects[:-1]] == [8.0, 10.0]
    cal = fits["callaway_santanna.aggregate(calendar)"].effects[:-1]
    assert [e.calendar_time for e in cal] == [float(t) for t in range(8, 15)]
    assert all(e.cohort is not None and e.calendar_time is not None for e in cs.effects)
    assert [e.horizon for e in fits["segmented_regression"].effects if e.horizon is not None] == [3, 3]
    assert {e.unit for e in fits["synthetic_did_by_pilot"].effects} == {f"T{i:02d}" for i in range(6)}
    assert {e.unit for e in fits["leave_one_out"].effects} == {f"T{i:02d}" for i in range(6)}
    assert {e.cohort for e in fits["synthetic_did"].effects[1:]} == {8.0, 10.0}
    assert {e.cohort for e in fits["bacon_decomposition"].effects} == {8.0, 10.0}


def test_inference_takes_the_fit(panel):
    from evaluation.estimators.did import twfe
    from evaluation.inference.few_clusters import randomization_inference, twfe_cr2, wild_cluster_bootstrap

    fit = twfe(panel, **KEYS, cluster="county", indicator="x")
    by_fit = randomization_inference(fit, draws=199, seed=3)
    by_keywords = randomization_inference(panel, **KEYS, draws=199, seed=3, indicator="x")
    assert by_fit.effects == by_keywords.effects
    assert by_fit.effects[0].estimate == pytest.approx(fit.effects[0].estimate, abs=1e-12)
    wb = wild_cluster_bootstrap(fit, draws=99, seed=1)  # reuses the fit's cluster (county)
    assert wb.effects == wild_cluster_bootstrap(panel, **KEYS, cluster="county", draws=99, seed=1,
                                                indicator="x").effects
    assert "4 clusters" in wb.effects[0].inference
    assert twfe_cr2(fit).effects[0].estimate == pytest.approx(fit.effects[0].estimate, abs=1e-10)
    from evaluation.errors import EstimationError

    with pytest.raises(EstimationError, match="unweighted"):
        randomization_inference(twfe(panel, **KEYS, weights="population"))
    with pytest.raises(EstimationError, match="needs outcome"):
        randomization_inference(panel, unit="township_id", time="time", cohort="first_treat")
