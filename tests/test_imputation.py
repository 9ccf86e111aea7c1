"""The imputation estimator (Borusyak, Jaravel and Spiess 2024): peers, a published R
reference, the variance formula by brute force, recovery, coverage and bad calls.

Tolerances and provenance:
- points against pyfixest 0.60.0 ``did2s`` (Gardner's two-stage DiD, the same estimator
  point for point) on mpdta and on an unbalanced panel: 1e-8;
- R didimputation 0.5.0 (R 4.5.2) on the panel of the diff-diff project's
  ``benchmarks/R/generate_didimputation_golden.R`` (github.com/igerber/diff-diff; the values
  are its ``benchmarks/data/didimputation_golden.json``; the panel is rebuilt here from R's
  random number generator and checked against its published CSV): standard errors to 1e-7 relative; points to 1e-6, because R's first stage
  (fixest) stops demeaning at 1e-6 and its points are 1e-7 off the exact least-squares
  ones, which ours equal to 1e-10;
- Theorem 3's variance written out with dense dummies on a small unbalanced panel: 1e-10;
- pre-trend leads (BJS Test 1) against pyfixest feols on the untreated rows: 1e-8 (points)
  and 1e-7 (CR1 errors);
- recovery of known effects: within 3.5 standard errors; coverage of 95% intervals over
  simulated panels: the counts stated in each test.
"""

from __future__ import annotations

import functools
import importlib
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtri

from evaluation.errors import EstimationError
from evaluation.estimators.imputation import imputation_did
from evaluation.results import Estimates

pf = pytest.importorskip("pyfixest")

MPDTA = dict(outcome="lemp", unit="countyreal", time="year", cohort="first.treat")


@pytest.fixture(scope="module")
def mpdta():
    moderndid = pytest.importorskip("moderndid")
    return moderndid.load_mpdta().to_pandas()


def patch_did2s(monkeypatch):
    """pyfixest's did2s recovering its first-stage fixed effects to 1e-14 (``Feols.fixef``'s
    lsqr runs to atol = btol = 1e-6 by default, which leaves its points about 1e-7 off the
    least-squares imputation) and keeping singleton units in the first stage (feols's
    ``fixef_rm="none"``): pyfixest 0.60 drops them by default, so on mpdta (the 2004 cohort
    has one untreated year) it leaves those counties' Y(0) missing and then fails on
    mismatched lengths; BJS's Stata command (reghdfe ``keepsing``) and R did2s keep them."""
    from pyfixest.estimation.models.feols_ import Feols

    module = importlib.import_module("pyfixest.did.did2s")  # pf.did.did2s is the function
    monkeypatch.setattr(module, "feols", functools.partial(module.feols, fixef_rm="none"))
    monkeypatch.setattr(Feols, "fixef", functools.partialmethod(Feols.fixef, atol=1e-14, btol=1e-14))
    return pf.did2s


@pytest.fixture
def exact_did2s(monkeypatch):
    return patch_did2s(monkeypatch)


def did2s_points(did2s, data, *, outcome, unit, time, cohort, last):
    """pyfixest did2s's static ATT and its event-time ATTs k = 0..last."""
    g = data[cohort].fillna(0)
    frame = data.assign(D=(g > 0) & (data[time] >= g))
    k = data[time] - g
    frame["rel"] = np.where(frame["D"] & (k <= last), k, -1).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        static = did2s(frame, yname=outcome, first_stage=f"~0|{unit}+{time}", second_stage="~D", treatment="D",
                       cluster=unit)
        dynamic = did2s(frame, yname=outcome, first_stage=f"~0|{unit}+{time}", second_stage="~i(rel,ref=-1.0)",
                        treatment="D", cluster=unit)
    return float(static.coef().iloc[0]), dynamic.coef().to_numpy()


def post_points(fit: Estimates, last: int):
    return fit.get("att").estimate, np.array([fit.get("att_event_time", event_time=k).estimate
                                              for k in range(last + 1)])


# ---------------------------------------------------------------- peers

def test_mpdta_points_equal_pyfixest_did2s(mpdta, exact_did2s):
    fit = imputation_did(mpdta, **MPDTA)
    att, ks = post_points(fit, 3)
    peer_att, peer_ks = did2s_points(exact_did2s, mpdta, **MPDTA, last=3)
    assert att == pytest.approx(peer_att, abs=1e-8)
    np.testing.assert_allclose(ks, peer_ks, atol=1e-8, rtol=0)
    assert att == pytest.approx(-0.04771, abs=5e-6)  # pyfixest did2s's printed value
    # pf.event_study(estimator="did2s") fits the static ATT only (its att=False is ignored in 0.60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        es = pf.event_study(mpdta, yname="lemp", idname="countyreal", tname="year", gname="first.treat",
                            estimator="did2s", att=False)
    assert list(es.coef().index) == ["is_treated"]
    assert att == pytest.approx(float(es.coef().iloc[0]), abs=1e-8)


def test_mpdta_without_singletons_equals_shipped_did2s(mpdta, monkeypatch):
    """pyfixest did2s as shipped, on the counties it can impute (the 2004 cohort left out):
    1e-6, its fixed-effect recovery's tolerance; 1e-8 once that runs to 1e-14."""
    sub = mpdta[mpdta["first.treat"] != 2004]
    fit = imputation_did(sub, **MPDTA)
    att, ks = post_points(fit, 1)  # the 2006 and 2007 cohorts reach k = 1
    peer_att, peer_ks = did2s_points(pf.did2s, sub, **MPDTA, last=1)
    assert att == pytest.approx(peer_att, abs=1e-6)
    np.testing.assert_allclose(ks, peer_ks, atol=1e-6, rtol=0)
    peer_att, peer_ks = did2s_points(patch_did2s(monkeypatch), sub, **MPDTA, last=1)
    assert att == pytest.approx(peer_att, abs=1e-8)
    np.testing.assert_allclose(ks, peer_ks, atol=1e-8, rtol=0)


def test_pretrend_leads_equal_pyfixest_on_untreated_rows(mpdta):
    """BJS Test 1: the leads are a CR1-clustered regression on the untreated rows alone."""
    fit = imputation_did(mpdta, **MPDTA, event_window=(-3, 3))
    g = mpdta["first.treat"]
    untreated = mpdta[(g == 0) | (mpdta["year"] < g)].copy()
    k = np.where(untreated["first.treat"] > 0, untreated["year"] - untreated["first.treat"], np.nan)
    for lead in (1, 2, 3):
        untreated[f"lead{lead}"] = (k == -lead).astype(float)
    peer = pf.feols("lemp ~ lead3 + lead2 + lead1 | countyreal + year", untreated, vcov={"CRV1": "countyreal"},
                    fixef_rm="none")
    for lead in (1, 2, 3):
        e = fit.get("att_event_time", event_time=-lead)
        assert e.estimate == pytest.approx(peer.coef()[f"lead{lead}"], abs=1e-8)
        assert e.std_error == pytest.approx(peer.se()[f"lead{lead}"], rel=1e-7)
        assert e.n_obs == len(untreated)
    wald = peer.wald_test(R=np.eye(3))
    assert fit.diagnostics["pretrend_F"] == pytest.approx(float(wald["statistic"]), rel=1e-7)
    assert fit.diagnostics["pretrend_p"] == pytest.approx(float(wald["pvalue"]), rel=1e-6)
    assert fit.diagnostics["pretrend_df"] == 3
    # the leads' block of the joint covariance is the regression's CR1 covariance
    leads = ["k=-3", "k=-2", "k=-1"]
    np.testing.assert_allclose(fit.vcov.loc[leads, leads].to_numpy(), fit.model["pretrend"].vcov, rtol=1e-9)


# ---------------------------------------------------------------- published R reference

class RNormal:
    """R's ``set.seed(seed); rnorm()`` (Mersenne-Twister, Inversion; R's RNG.c and snorm.c):
    the seed scrambled by 50 steps of 69069 * s + 1, the next 625 values fill the state (the
    first is the position, 624), and a normal is qnorm of two uniforms combined to 2^-27."""

    def __init__(self, seed: int):
        s = seed & 0xFFFFFFFF
        for _ in range(50):
            s = (69069 * s + 1) & 0xFFFFFFFF
        state = []
        for _ in range(625):
            s = (69069 * s + 1) & 0xFFFFFFFF
            state.append(s)
        self.bits = np.random.MT19937()
        self.bits.state = {"bit_generator": "MT19937", "state": {"key": np.array(state[1:], np.uint32), "pos": 624}}

    def uniform(self) -> float:
        value = float(self.bits.random_raw()) * 2.3283064365386963e-10
        return min(max(value, 0.5 * 2.328306437080797e-10), 1 - 0.5 * 2.328306437080797e-10)

    def normal(self) -> float:
        big = 134217728
        u = self.uniform()
        return float(ndtri((int(big * u) + self.uniform()) / big))


def didimputation_golden_panel() -> pd.DataFrame:
    """diff-diff's didimputation_test_panel.csv: set.seed(2024); cohorts 0 (never), 3, 5 of
    60 units each, 8 periods, y = c_i + 0.5 t + (1 + 0.5 k if treated) + 0.2 N(0, 1)."""
    rng = RNormal(2024)
    rows, uid = [], 0
    for g in (0, 3, 5):
        for _ in range(60):
            c = rng.normal()
            for t in range(1, 9):
                u = 0.2 * rng.normal()
                effect = 1.0 + 0.5 * (t - g) if g > 0 and t >= g else 0.0
                rows.append((uid, t, g, c + 0.5 * t + effect + u))
            uid += 1
    return pd.DataFrame(rows, columns=["unit", "time", "first_treat", "y"])


def test_r_didimputation_reference():
    panel = didimputation_golden_panel()
    # the published CSV's first rows (15 significant digits, data.table::fwrite)
    np.testing.assert_allclose(panel["y"].iloc[[0, 1, 8, 480]], [1.57571241935766, 1.96037514490715,
                                                               -0.955736306978872, -0.719268682234314], rtol=1e-13)
    fit = imputation_did(panel, outcome="y", unit="unit", time="time", cohort="first_treat", event_window=(0, 5))
    # did_imputation(panel, "y", "first_treat", "time", "unit", cluster_var = "unit"), horizon = TRUE for the k
    r_att, r_se = 2.045668026901, 0.02087938445379
    r_k = [0.9929366801146, 1.512964957441, 2.006499440277, 2.499854710124, 2.964817090473, 3.46735160262]
    r_k_se = [0.02879160889215, 0.02525385632215, 0.03015538910066, 0.02904846159207, 0.04306469246781,
              0.04307353806204]
    att = fit.get("att")
    assert att.estimate == pytest.approx(r_att, abs=1e-6)
    assert att.std_error == pytest.approx(r_se, rel=1e-7)
    for k in range(6):
        e = fit.get("att_event_time", event_time=k)
        assert e.estimate == pytest.approx(r_k[k], abs=1e-6)
        assert e.std_error == pytest.approx(r_k_se[k], rel=1e-7)
    # ours are the exact least-squares imputation (R's are 1e-7 off: fixest's 1e-6 demeaning tolerance)
    treated = (panel["first_treat"] > 0) & (panel["time"] >= panel["first_treat"])
    Z = pd.get_dummies(panel[["unit", "time"]].astype(str)).to_numpy(float)
    gamma = np.linalg.lstsq(Z[~treated], panel["y"][~treated], rcond=None)[0]
    exact = (panel["y"][treated] - Z[treated] @ gamma).mean()
    assert att.estimate == pytest.approx(exact, abs=1e-10)
    assert abs(att.estimate - r_att) > 1e-8


# ---------------------------------------------------------------- Theorem 3 by brute force

def small_panel(seed: int = 3) -> pd.DataFrame:
    """14 units x 8 periods, cohorts 4, 5, 6 and never, heterogeneous effects, some rows
    and outcomes missing, counties of 2-3 units."""
    rng = np.random.default_rng(seed)
    cohorts = [0, 0, 0, 0, 0, 4, 4, 4, 5, 5, 5, 6, 6, 6]
    rows = []
    for i, g in enumerate(cohorts):
        a = rng.normal()
        for t in range(1, 9):
            on = g > 0 and t >= g
            y = a + 0.3 * t + rng.normal(0, 0.4) + (on * (1 + 0.4 * (t - g) + 0.3 * rng.normal() + 0.2 * g))
            rows.append({"unit": f"u{i:02d}", "time": t, "cohort": g, "y": y, "county": f"c{i // 3}"})
    d = pd.DataFrame(rows)
    d = d.drop(index=[3, 17, 50, 61, 90]).reset_index(drop=True)
    d.loc[[7, 40], "y"] = np.nan
    return d


def theorem3_by_hand(d: pd.DataFrame, cluster: str, estimands: dict[str, np.ndarray]) -> dict:
    """BJS eq. 5 weights with dense dummies and a pseudo-inverse, and Theorem 3's variance
    with tau~ the v^2-weighted mean of tau in each cohort x period cell: estimates and covariance."""
    d = d.dropna(subset=["y"]).reset_index(drop=True)
    treated = ((d["cohort"] > 0) & (d["time"] >= d["cohort"])).to_numpy()
    Z = pd.get_dummies(d[["unit", "time"]].astype(str)).to_numpy(float)
    Z0, Z1 = Z[~treated], Z[treated]
    y = d["y"].to_numpy()
    gamma = np.linalg.pinv(Z0) @ y[~treated]
    tau = y[treated] - Z1 @ gamma
    resid = y[~treated] - Z0 @ gamma
    names = list(estimands)
    scores = []
    estimates = {}
    for name in names:
        w1 = estimands[name](d[treated])
        v = np.zeros(len(d))
        v[treated] = w1
        v[~treated] = -Z0 @ np.linalg.pinv(Z0.T @ Z0) @ Z1.T @ w1
        assert v @ y == pytest.approx(w1 @ tau, abs=1e-10)
        e = np.zeros(len(d))
        e[~treated] = resid
        cells = d[treated].groupby(["cohort", "time"]).indices
        tilde = np.zeros(treated.sum())
        for rows in cells.values():
            if (w1[rows] ** 2).sum() > 0:
                tilde[rows] = (w1[rows] ** 2 * tau[rows]).sum() / (w1[rows] ** 2).sum()
        e[treated] = tau - tilde
        scores.append(pd.Series(v * e).groupby(d[cluster].to_numpy()).sum().to_numpy())
        estimates[name] = w1 @ tau
    S = np.column_stack(scores)
    return {"estimates": estimates, "vcov": pd.DataFrame(S.T @ S, index=names, columns=names)}


@pytest.mark.parametrize("cluster", ["unit", "county"])
def test_theorem3_variance_by_brute_force(cluster):
    d = small_panel()
    fit = imputation_did(d, outcome="y", unit="unit", time="time", cohort="cohort", cluster=cluster,
                         event_window=(0, 2))

    def at(k):
        return lambda rows: ((rows["time"] - rows["cohort"]) == k).to_numpy() / ((rows["time"] - rows["cohort"]) == k).sum()

    estimands = {"att": lambda rows: np.full(len(rows), 1 / len(rows)), "k=0": at(0), "k=1": at(1), "k=2": at(2)}
    ref = theorem3_by_hand(d, cluster, estimands)
    for name in estimands:
        assert fit.vcov.loc[name, name] == pytest.approx(ref["vcov"].loc[name, name], rel=1e-10)
        assert fit.conf_int().loc[name].notna().all()
    ours = fit.vcov.loc[list(estimands), list(estimands)].to_numpy()
    np.testing.assert_allclose(ours, ref["vcov"].to_numpy(), rtol=1e-9, atol=1e-14)
    assert fit.get("att").estimate == pytest.approx(ref["estimates"]["att"], abs=1e-10)
    assert fit.get("att_event_time", event_time=2).estimate == pytest.approx(ref["estimates"]["k=2"], abs=1e-10)
    assert fit.get("att").inference.startswith("BJS (2024) Theorem 3 conservative variance by ")


def test_stored_weights_are_the_estimator():
    """v_it = w_it on treated rows, -(a_i + l_t) on untreated ones: sum v Y is the estimate,
    and the weights add up to zero in every unit and every period (BJS section 3)."""
    d = small_panel().dropna(subset=["y"])
    fit = imputation_did(d, outcome="y", unit="unit", time="time", cohort="cohort", event_window=(0, 2))
    treated = ((d["cohort"] > 0) & (d["time"] >= d["cohort"])).to_numpy()
    k = (d["time"] - d["cohort"]).to_numpy()
    a, lam = fit.model["unit_weights"], fit.model["period_weights"]
    for label, rows in {"att": treated, "k=1": treated & (k == 1)}.items():
        v = -(a.loc[d["unit"], label].to_numpy() + lam.loc[d["time"], label].to_numpy())
        v[treated] = rows[treated] / rows.sum()
        assert v @ d["y"].to_numpy() == pytest.approx(fit.get("att" if label == "att" else "att_event_time",
                                                              event_time=None if label == "att" else 1).estimate,
                                                      abs=1e-10)
        np.testing.assert_allclose(pd.Series(v).groupby(d["unit"].to_numpy()).sum(), 0, atol=1e-12)
        np.testing.assert_allclose(pd.Series(v).groupby(d["time"].to_numpy()).sum(), 0, atol=1e-12)
    tau = fit.model["tau"]
    assert tau.mean() == pytest.approx(fit.get("att").estimate, abs=1e-12)
    assert (fit.model["y0_hat"].loc[tau.index] + tau).to_numpy() == pytest.approx(d.loc[tau.index, "y"].to_numpy())


# ---------------------------------------------------------------- recovery, gaps, coverage

def staggered_panel(seed: int, units: int = 300, periods: int = 20, noise: float = 0.5,
                    heterogeneity: float = 0.0) -> tuple[pd.DataFrame, dict]:
    """Cohorts 8, 11, 14 (a fifth of the units each) and never treated (two fifths); the
    effect at event time k is (1 + 0.1 k) for cohort 8, (0.5 + 0.2 k) for 11, 2.0 flat for
    14, plus a unit-level N(0, heterogeneity) shift; truth by event time: the mean effect of
    the treated rows at k (and overall)."""
    rng = np.random.default_rng(seed)
    first = rng.choice([0, 8, 11, 14], size=units, p=[0.4, 0.2, 0.2, 0.2])
    unit = np.repeat(np.arange(units), periods)
    t = np.tile(np.arange(1, periods + 1), units)
    g = np.repeat(first, periods)
    k = t - g
    on = (g > 0) & (k >= 0)
    base = np.select([g == 8, g == 11, g == 14], [1 + 0.1 * k, 0.5 + 0.2 * k, np.full(len(k), 2.0)], 0.0)
    effect = np.where(on, base + np.repeat(rng.normal(0, heterogeneity, units), periods), 0.0)
    y = (np.repeat(rng.normal(0, 1, units), periods) + np.tile(np.sin(np.arange(periods) / 3), units)
         + effect + rng.normal(0, noise, units * periods))
    d = pd.DataFrame({"unit": unit, "time": t, "cohort": g, "y": y, "effect": effect})
    truth = {"att": effect[on].mean()} | {kk: effect[on & (k == kk)].mean() for kk in np.unique(k[on])}
    return d, truth


def test_recovers_heterogeneous_dynamic_effects():
    d, truth = staggered_panel(seed=11)
    fit = imputation_did(d.drop(columns="effect"), outcome="y", unit="unit", time="time", cohort="cohort",
                         event_window=(-5, 12))
    att = fit.get("att")
    assert abs(att.estimate - truth["att"]) < 3.5 * att.std_error
    assert att.std_error < 0.05
    for k in range(13):
        e = fit.get("att_event_time", event_time=k)
        assert abs(e.estimate - truth[k]) < 3.5 * e.std_error, k
    for k in range(-5, 0):  # no anticipation in the data: the leads are zero within their errors
        e = fit.get("att_event_time", event_time=k)
        assert abs(e.estimate) < 3.5 * e.std_error, k
    assert fit.diagnostics["pretrend_p"] > 0.01
    assert fit.diagnostics["treated_obs_beyond_window"] == 0
    # every event time has the units that reach it
    assert fit.get("att_event_time", event_time=12).n_treated == (d.loc[d["time"] == 20, "cohort"] == 8).sum()


def test_unbalanced_panel_equals_did2s_on_the_same_rows(exact_did2s):
    d, _ = staggered_panel(seed=5, units=120, periods=14)
    rng = np.random.default_rng(0)
    d = d.drop(index=rng.choice(d.index, size=int(0.05 * len(d)), replace=False))
    d.loc[rng.choice(d.index, size=10, replace=False), "y"] = np.nan
    fit = imputation_did(d, outcome="y", unit="unit", time="time", cohort="cohort", event_window=(-3, 6))
    assert fit.diagnostics["dropped_missing_rows"] == 10
    assert fit.diagnostics["observations"] == len(d) - 10
    present = d.dropna(subset=["y"])
    peer_att, peer_ks = did2s_points(exact_did2s, present, outcome="y", unit="unit", time="time",
                                     cohort="cohort", last=6)
    att, ks = post_points(fit, 6)
    assert att == pytest.approx(peer_att, abs=1e-8)
    np.testing.assert_allclose(ks, peer_ks, atol=1e-8, rtol=0)


def test_units_without_an_untreated_row_are_dropped_and_named():
    d = small_panel().dropna(subset=["y"])
    late = d[~((d["unit"] == "u05") & (d["time"] < 4))]  # u05 (cohort 4) now starts treated
    fit = imputation_did(late, outcome="y", unit="unit", time="time", cohort="cohort")
    assert fit.diagnostics["dropped_units"] == ["u05"]
    assert "cannot be imputed" in fit.diagnostics["dropped_units_note"]
    without = imputation_did(late[late["unit"] != "u05"], outcome="y", unit="unit", time="time", cohort="cohort")
    assert fit.get("att").estimate == pytest.approx(without.get("att").estimate, abs=1e-12)
    assert fit.get("att").std_error == pytest.approx(without.get("att").std_error, rel=1e-12)


def coverage(reps: int, seed: int, heterogeneity: float = 0.5) -> dict:
    hits = {"att": 0, 0: 0, 4: 0}
    estimates, errors = [], []
    for r in range(reps):
        d, truth = staggered_panel(seed=seed + r, units=80, periods=16, noise=1.0, heterogeneity=heterogeneity)
        fit = imputation_did(d, outcome="y", unit="unit", time="time", cohort="cohort", event_window=(0, 4))
        for key in hits:
            e = fit.get("att") if key == "att" else fit.get("att_event_time", event_time=key)
            hits[key] += e.covers(truth[key])
        estimates.append(fit.get("att").estimate - truth["att"])
        errors.append(fit.get("att").std_error)
    return {"hits": hits, "sd": float(np.std(estimates, ddof=1)), "mean_se": float(np.mean(errors))}


def test_coverage_fast():
    """30 seeded panels (80 units, 16 periods) whose effects vary across units within cohort x
    period cells: the 95% intervals of the ATT and of k = 0 and 4 cover the truth in 30, 29
    and 28 of 30 (at least 26 asked: P(X <= 25) = 1.6% for X ~ Bin(30, 0.95))."""
    out = coverage(30, seed=1000)
    assert min(out["hits"].values()) >= 26, out


@pytest.mark.slow
def test_coverage_slow():
    """200 seeded panels each way. Effects the same within each cohort x period cell (Theorem 3's
    variance is then asymptotically exact): coverage 191, 189, 186 of 200 for the ATT, k = 0 and
    k = 4, mean standard error 1.01 times the standard deviation of the estimates; asked: 0.91 to
    0.99 and 0.9 to 1.1. Effects that also vary across units (conservative): 196, 189, 189 of
    200 and 1.24; asked: at least 0.91 and at least 1."""
    exact = coverage(200, seed=5000, heterogeneity=0.0)
    for key, hits in exact["hits"].items():
        assert 0.91 <= hits / 200 <= 0.99, (key, exact)
    assert 0.9 <= exact["mean_se"] / exact["sd"] <= 1.1, exact
    varying = coverage(200, seed=5000, heterogeneity=0.5)
    for key, hits in varying["hits"].items():
        assert hits / 200 >= 0.91, (key, varying)
    assert varying["mean_se"] / varying["sd"] >= 1.0, varying


# ---------------------------------------------------------------- results and plots

def test_result_fields_plot_data_and_reference(mpdta):
    fit = imputation_did(mpdta, **MPDTA, indicator="lemp")
    assert fit.kind == "imputation" and fit.method == "imputation DiD (Borusyak, Jaravel and Spiess)"
    assert [e.event_time for e in fit.effects] == [None, -3, -2, -1, 0, 1, 2, 3]
    att = fit.get("att")
    assert att.n_treated == 191 and att.n_units == 500 and att.n_obs == 2500
    assert att.extra["treated_obs"] == 291
    assert "Theorem 3" in att.inference and att.indicator == "lemp"
    assert "Test 1" in fit.get("att_event_time", event_time=-2).inference
    assert fit.get("att_event_time", event_time=3).n_treated == 20  # only the 2004 cohort reaches k = 3
    # every treated county's untreated years lie in -4..-1: the leads would add up to the unit effects,
    # so the earliest is the reference, shown in the plot as 0
    assert fit.diagnostics["pretrend_reference"] == [-4]
    plot = fit.plot_data
    assert list(plot.columns[:2]) == ["event_time", "estimate"] and {"ci_low", "ci_high"} <= set(plot.columns)
    assert plot["event_time"].tolist() == [-4, -3, -2, -1, 0, 1, 2, 3]
    assert plot.loc[0, ["estimate", "ci_low", "ci_high"]].tolist() == [0.0, 0.0, 0.0]
    assert fit.vcov.shape == (8, 8) and np.allclose(fit.vcov, fit.vcov.T)
    assert set(fit.tidy()["event_time"].dropna()) == set(range(-3, 4))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close(fit.plot())
    # a window that leaves earlier untreated years to compare with needs no reference
    shorter = imputation_did(mpdta, **MPDTA, event_window=(-2, 1))
    assert "pretrend_reference" not in shorter.diagnostics
    assert shorter.plot_data["event_time"].tolist() == [-2, -1, 0, 1]
    assert shorter.get("att").estimate == pytest.approx(att.estimate, abs=1e-12)  # all treated rows, any window


# ---------------------------------------------------------------- bad calls

def test_period_without_untreated_rows_is_an_error():
    d = small_panel().dropna(subset=["y"])
    d = d[d["cohort"] > 0]  # no never-treated unit: from period 6 on every unit is treated
    with pytest.raises(EstimationError, match=r"no untreated row in period\(s\) 6, 7, 8 of 'time'"):
        imputation_did(d, outcome="y", unit="unit", time="time", cohort="cohort")
    fit = imputation_did(d[d["time"] < 6], outcome="y", unit="unit", time="time", cohort="cohort")
    assert fit.get("att").n_treated == 6  # cohorts 4 and 5, imputed from the not yet treated


def test_disconnected_rows_and_bad_cohorts_are_errors():
    rows = [("A", 1, 0), ("A", 2, 0), ("C", 1, 3), ("C", 3, 3), ("B", 3, 0), ("B", 4, 0)]
    d = pd.DataFrame(rows, columns=["unit", "time", "cohort"]).assign(y=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    with pytest.raises(EstimationError, match=r"not connected.*\('C', 3\)"):
        imputation_did(d, outcome="y", unit="unit", time="time", cohort="cohort")
    p = small_panel()
    with pytest.raises(EstimationError, match="must be the same in every row of a unit.*u05"):
        imputation_did(p.assign(cohort=np.where((p["unit"] == "u05") & (p["time"] == 8), 5, p["cohort"])),
                       outcome="y", unit="unit", time="time", cohort="cohort")
    with pytest.raises(EstimationError, match="has period 2 twice"):
        imputation_did(pd.concat([p, p.iloc[[1]]]), outcome="y", unit="unit", time="time", cohort="cohort")
    with pytest.raises(EstimationError, match="event_window"):
        imputation_did(p, outcome="y", unit="unit", time="time", cohort="cohort", event_window=(1, 3))
    with pytest.raises(EstimationError, match="no treated row can be imputed"):
        imputation_did(p[(p["cohort"] == 0) | (p["time"] >= p["cohort"])], outcome="y", unit="unit", time="time",
                       cohort="cohort")
