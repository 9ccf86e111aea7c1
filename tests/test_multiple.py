"""Multiple-testing adjustment across indicators (evaluation.inference.multiple).

References: statsmodels 0.15.0 ``multipletests`` (Holm, Benjamini-Hochberg), pyfixest 0.60.0
(``_get_rwolf_pval``, the Romano-Wolf step-down, and ``rwolf`` end to end with its wild
bootstrap from wildboottest 0.3.2), and this package's own randomization inference and
Callaway-Sant'Anna multiplier bootstrap for the draws they feed in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyfixest.estimation.post_estimation.multcomp import _get_rwolf_pval
from statsmodels.stats.multitest import multipletests

from evaluation.errors import EstimationError
from evaluation.inference.few_clusters import randomization_inference
from evaluation.inference.multiple import (
    benjamini_hochberg,
    holm,
    multiplier_draws,
    randomization_romano_wolf,
    romano_wolf,
)

# ------------------------------------------------------------------ Holm and Benjamini-Hochberg


def _p_vectors():
    rng = np.random.default_rng(2026)
    yield np.array([0.01, 0.04, 0.03, 0.005, 0.2, 0.9, 0.04])           # ties
    yield np.array([0.0, 1.0, 0.5, 0.5, 1e-8])                          # the ends
    yield np.array([0.3])
    for m in (2, 9, 40):
        yield np.where(rng.random(m) < 0.3, rng.random(m) * 0.01, rng.random(m))


@pytest.mark.parametrize("method, ours", [("holm", holm), ("fdr_bh", benjamini_hochberg)])
def test_holm_and_bh_equal_statsmodels_with_nans(method, ours):
    """Reference: statsmodels 0.15.0 multipletests(method='holm' / 'fdr_bh') on the p-values
    without the NaNs; tolerance 1e-12. NaNs, placed among the p-values, stay NaN and do not
    count in m."""
    rng = np.random.default_rng(5)
    for p in _p_vectors():
        expected = multipletests(p, method=method)[1]
        np.testing.assert_allclose(ours(p), expected, rtol=0, atol=1e-12)
        # the same p-values with NaNs put between them
        n_nan = 3
        positions = np.sort(rng.choice(len(p) + n_nan, n_nan, replace=False))
        with_nan = np.insert(p, positions - np.arange(n_nan), np.nan)
        got = ours(with_nan)
        assert np.isnan(got[positions]).all()
        keep = ~np.isnan(with_nan)
        np.testing.assert_allclose(got[keep], expected, rtol=0, atol=1e-12)
    assert np.isnan(ours(np.array([np.nan, np.nan]))).all()
    with pytest.raises(EstimationError, match=r"\[0, 1\]"):
        ours(np.array([0.2, 1.5]))


# ------------------------------------------------------------------ Romano-Wolf step-down


def test_romano_wolf_equals_pyfixest_stepdown():
    """Reference: pyfixest 0.60.0 ``multcomp._get_rwolf_pval(t_stats, boot_t_stats)`` on the same
    statistics and correlated bootstrap draws (B x K), including tied statistics; exact to 1e-12.
    pyfixest counts the observed statistics as one more draw, our default."""
    rng = np.random.default_rng(11)
    for K, B in [(1, 99), (4, 999), (9, 499)]:
        cov = 0.6 * np.ones((K, K)) + 0.4 * np.eye(K)
        draws = rng.multivariate_normal(np.zeros(K), cov, size=B)
        t = rng.normal(0, 2.0, K)
        if K > 3:
            t[2] = -t[1]   # a tie in |t|
        np.testing.assert_allclose(romano_wolf(t, draws), _get_rwolf_pval(t.copy(), draws.copy()), rtol=0, atol=1e-12)


def test_observed_included_is_pyfixest_on_the_other_draws():
    """With the observed statistics as row 0 of the draws (randomization inference),
    p = #{rows at least as large} / B, which is pyfixest 0.60.0's (1 + #) / (B' + 1) on the other
    B' = B - 1 rows; exact to 1e-12. Hence p >= 1/B."""
    rng = np.random.default_rng(3)
    K, B = 5, 400
    draws = rng.standard_normal((B, K)) @ np.linalg.cholesky(0.5 + 0.5 * np.eye(K)).T
    t = draws[0] = rng.normal(0, 2.5, K)
    ours = romano_wolf(t, draws, observed_included=True)
    np.testing.assert_allclose(ours, _get_rwolf_pval(t.copy(), draws[1:].copy()), rtol=0, atol=1e-12)
    assert ours.min() >= 1 / B


def test_romano_wolf_nans_and_errors():
    rng = np.random.default_rng(4)
    draws = rng.standard_normal((199, 4))
    t = np.array([2.5, np.nan, -1.0, 0.3])
    got = romano_wolf(t, draws)
    assert np.isnan(got[1])
    # a NaN statistic leaves the family: the others are adjusted as a family of three
    np.testing.assert_allclose(got[[0, 2, 3]], romano_wolf(t[[0, 2, 3]], draws[:, [0, 2, 3]]), rtol=0, atol=1e-15)
    bad = draws.copy()
    bad[5, 2] = np.nan
    with pytest.raises(EstimationError, match=r"non-finite values in column\(s\) \[2\]"):
        romano_wolf(t, bad)
    with pytest.raises(EstimationError, match="B x K"):
        romano_wolf(t, draws[:, :3])


# ------------------------------------------------------------------ end to end against pyfixest.rwolf


def _wild_cluster_t_draws(y, X, cluster, col, draws, rng):
    """Wild cluster restricted bootstrap (WCR, Rademacher, null beta_col = 0 imposed) t statistics
    with CR1 errors, written here from Cameron, Gelbach and Miller (2008, Rev Econ Stat 90:414-427)
    in closed form: y* = X_r b_r + v_g u_r, t*_b from the OLS of y* on X. Returns the observed t
    and B draws; the weights v come from ``rng`` (pass the same state for joint draws)."""
    n, k = X.shape
    codes, G = pd.factorize(cluster)[0], len(np.unique(cluster))
    XtX_inv = np.linalg.inv(X.T @ X)
    W = np.delete(X, col, axis=1)
    u_r = y - W @ np.linalg.lstsq(W, y, rcond=None)[0]                 # residuals under the null
    x_t = X[:, col] - W @ np.linalg.lstsq(W, X[:, col], rcond=None)[0]  # FWL: X_col net of the rest
    sxx = x_t @ x_t
    factor = G / (G - 1) * (n - 1) / (n - k)                           # CR1

    def agg(values):  # sum over each cluster's rows
        return np.stack([np.bincount(codes, weights=v, minlength=G) for v in np.atleast_2d(values.T)], axis=-1)

    A = agg(X * u_r[:, None])                  # G x k: X_g' u_r,g
    c = agg(x_t * u_r)[:, 0]                   # G: x~_g' u_r,g
    H = agg(X * x_t[:, None])                  # G x k: sum over g of x~_i X_i
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    u = y - X @ beta
    s_obs = agg(x_t * u)[:, 0]
    t_obs = (x_t @ y / sxx) / np.sqrt(factor * (s_obs**2).sum() / sxx**2)
    V = rng.choice([-1.0, 1.0], size=(draws, G))
    b_star = V @ c / sxx                                              # x~'y* / x~'x~ (x~'X_r b_r = 0)
    S = V * c[None, :] - (V @ A) @ XtX_inv @ H.T                      # per-cluster x~_g' u*_g
    se_star = np.sqrt(factor * (S**2).sum(axis=1) / sxx**2)
    return t_obs, b_star / se_star


def test_romano_wolf_end_to_end_against_pyfixest_rwolf():
    """Reference: pyfixest 0.60.0 ``pf.rwolf(models, "X2", reps=9999, seed=1)`` on four feols models of
    pyfixest's ``get_data()`` (CRV1 by f1, 30 clusters; its wild bootstrap is wildboottest 0.3.2's
    WCR11 with Rademacher weights). Ours: the same four t statistics with wild cluster bootstrap t
    draws computed here (one Rademacher vector per draw shared by the four models, another seed),
    fed to romano_wolf. The two are independent Monte Carlo estimates of the same p-values: the
    tolerance is 4.5 standard errors of their difference, 4.5 * sqrt(2 p (1 - p) / 9999) (at most
    0.032 at p = 0.5), plus 0.002 for the discreteness of 30-cluster Rademacher draws.
    And pyfixest's own draws (return_bootstrapped_t_stats) through romano_wolf give its numbers
    exactly (1e-12)."""
    import pyfixest as pf

    data = pf.get_data().dropna().reset_index(drop=True)
    formulas = [("Y2", ["X2", "X1"]), ("Y2", ["X2"]), ("Z1", ["X2", "X1"]), ("weights", ["X2", "X1"])]
    models = [pf.feols(f"{y} ~ {' + '.join(x)}", data=data, vcov={"CRV1": "f1"}) for y, x in formulas]
    reps = 9999
    reference = pf.rwolf(models, "X2", reps=reps, seed=1)
    ref_p = reference.loc["RW Pr(>|t|)"].to_numpy(float)

    # exact: pyfixest's own bootstrap t draws through our step-down
    t_pf, boot_pf = np.zeros(4), np.zeros((reps, 4))
    for i, m in enumerate(models):
        res, boot = m.wildboottest(param="X2", reps=reps, return_bootstrapped_t_stats=True, seed=1)
        t_pf[i], boot_pf[:, i] = float(res["t value"]), boot
    np.testing.assert_allclose(romano_wolf(t_pf, boot_pf), ref_p, rtol=0, atol=1e-12)

    # Monte Carlo: our own wild cluster bootstrap
    t_ours, boot_ours = np.zeros(4), np.zeros((reps, 4))
    for i, (y, x) in enumerate(formulas):
        X = np.column_stack([np.ones(len(data))] + [data[c].to_numpy(float) for c in x])
        t_ours[i], boot_ours[:, i] = _wild_cluster_t_draws(data[y].to_numpy(float), X, data["f1"].to_numpy(), 1,
                                                           reps, np.random.default_rng(20261129))
    np.testing.assert_allclose(t_ours, reference.loc["t value"].to_numpy(float), rtol=1e-8)
    ours = romano_wolf(t_ours, boot_ours)
    tol = 4.5 * np.sqrt(2 * ref_p * (1 - ref_p) / reps) + 0.002
    assert np.all(np.abs(ours - ref_p) <= tol), (ours, ref_p, tol)
    # sanity of the case: two clear, two not, and the adjustment bites
    assert ref_p[0] < 0.05 and ref_p[3] > 0.2
    raw = (1 + (np.abs(boot_ours) >= np.abs(t_ours)).sum(axis=0)) / (reps + 1)
    assert np.all(ours >= raw)


# ------------------------------------------------------------------ randomization inference


def _staggered_panel(n_units, starts, periods, seed):
    """Townships x periods, cohorts ``starts`` (0 never); four outcomes sharing a township
    shock (correlated), with an effect of 1.5 on 'visits' only."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_units):
        g = starts[i] if i < len(starts) else 0
        a = rng.normal(size=4)
        for t in range(1, periods + 1):
            common = rng.normal()
            on = g > 0 and t >= g
            e = 0.7 * common + 0.7 * rng.normal(size=4)
            rows.append({"township_id": f"T{i:02d}", "time": t, "first_treat": g,
                         "visits": a[0] + 0.1 * t + 1.5 * on + e[0], "referrals": a[1] + e[1],
                         "screening": a[2] + 0.05 * t + e[2], "spending": 10 * (a[3] + e[3])})
    return pd.DataFrame(rows)


OUTCOMES = ["visits", "referrals", "screening", "spending"]
KEYS = dict(unit="township_id", time="time", cohort="first_treat")


@pytest.mark.parametrize("case", ["random", "exact"])
def test_randomization_romano_wolf(case):
    """Each indicator run through randomization_inference with the same seed: the raw p equals
    its p exactly (same counting rule, ==); Romano-Wolf >= raw, <= Bonferroni, monotone in |t|;
    Holm and BH columns are holm / benjamini_hochberg of the raw p. One indicator alone: the
    Romano-Wolf p is its raw p (1e-15)."""
    if case == "random":   # 24 townships, 3 + 3 pilots: about 2.7e6 assignments, 499 random ones and the observed
        panel = _staggered_panel(24, [5] * 3 + [7] * 3, 9, seed=1)
        options = dict(draws=499, seed=17)
    else:                  # 9 townships, 2 pilots of one cohort: all 36 assignments
        panel = _staggered_panel(9, [4, 4], 7, seed=2)
        options = dict(draws=99, seed=17, max_exact=100)
    fits = {y: randomization_inference(panel, outcome=y, **KEYS, **options, indicator=y) for y in OUTCOMES}
    assert all(f.diagnostics["exact"] == (case == "exact") for f in fits.values())
    observed = {y: f.effects[0].estimate for y, f in fits.items()}
    draws = pd.DataFrame({y: f.plot_data["permuted_estimate"] for y, f in fits.items()})
    table = randomization_romano_wolf(observed, permuted=draws)

    assert list(table.index) == OUTCOMES
    for y, f in fits.items():
        assert table.loc[y, "p_value"] == f.effects[0].p_value
        assert table.loc[y, "permutation_sd"] == pytest.approx(f.effects[0].std_error, rel=1e-12)
    raw, rw = table["p_value"].to_numpy(), table["p_romano_wolf"].to_numpy()
    B = len(draws)
    assert np.all(rw >= raw - 1e-15) and np.all(rw >= 1 / B)
    assert np.all(rw <= np.minimum(1.0, len(raw) * raw) + 1e-15)
    order = np.argsort(-np.abs(table["estimate"] / table["permutation_sd"]).to_numpy())
    assert np.all(np.diff(rw[order]) >= 0)
    np.testing.assert_allclose(table["p_holm"], holm(raw), rtol=0, atol=1e-15)
    np.testing.assert_allclose(table["q_benjamini_hochberg"], benjamini_hochberg(raw), rtol=0, atol=1e-15)
    if case == "random":
        assert raw[0] <= 0.01 and rw[0] <= 0.01            # the real effect survives the adjustment
    one = randomization_romano_wolf(pd.Series({"referrals": observed["referrals"]}), permuted=draws)
    assert one.loc["referrals", "p_romano_wolf"] == pytest.approx(one.loc["referrals", "p_value"], abs=1e-15)

    # an indicator without an estimate stays out of the family
    with_nan = randomization_romano_wolf({**observed, "beds": np.nan}, permuted=draws.assign(beds=np.nan))
    assert with_nan.loc["beds"].drop("estimate").isna().all()
    np.testing.assert_allclose(with_nan.loc[OUTCOMES, "p_romano_wolf"], rw, rtol=0, atol=1e-15)


def test_randomization_romano_wolf_rejects_draws_that_are_not_joint():
    panel = _staggered_panel(24, [5] * 3 + [7] * 3, 9, seed=1)
    a = randomization_inference(panel, outcome="visits", **KEYS, draws=99, seed=1)
    b = randomization_inference(panel, outcome="referrals", **KEYS, draws=99, seed=2)
    draws = pd.DataFrame({"visits": a.plot_data["permuted_estimate"],
                          "referrals": b.plot_data["permuted_estimate"]}).iloc[1:]   # observed row dropped
    with pytest.raises(EstimationError, match="no row of the permuted coefficients holds every indicator's observed"):
        randomization_romano_wolf({"visits": a.effects[0].estimate, "referrals": b.effects[0].estimate}, permuted=draws)
    with pytest.raises(EstimationError, match=r"no column for indicator\(s\) \['beds'\]"):
        randomization_romano_wolf({"visits": 1.0, "beds": 2.0}, permuted=draws)
    with pytest.raises(EstimationError, match="do not vary"):
        randomization_romano_wolf({"flat": 0.0}, permuted=pd.DataFrame({"flat": np.zeros(10)}))


# ------------------------------------------------------------------ size under the global null


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_family_wise_size_under_the_global_null(rho):
    """1,000 simulated families of K = 4 null statistics (equicorrelated rho) with B = 199 joint
    normal null draws each, no estimation: the share of families with any Romano-Wolf p <= 0.05 is
    in [2%, 9%] (true rate 10/200 = 5%; binomial SE 0.7 pp). With correlated statistics Holm on the
    same draws' marginal p-values rejects less often (it ignores the dependence)."""
    rng = np.random.default_rng(99)
    K, B, sims = 4, 199, 1000
    L = np.linalg.cholesky(rho * np.ones((K, K)) + (1 - rho) * np.eye(K))
    any_rw = any_holm = 0
    for _ in range(sims):
        z = rng.standard_normal((B + 1, K)) @ L.T
        t, draws = z[0], z[1:]
        any_rw += romano_wolf(t, draws).min() <= 0.05
        marginal = (1 + (np.abs(draws) >= np.abs(t)).sum(axis=0)) / (B + 1)
        any_holm += holm(marginal).min() <= 0.05
    assert 0.02 <= any_rw / sims <= 0.09
    if rho > 0:
        assert any_holm < any_rw


# ------------------------------------------------------------------ multiplier draws


def test_multiplier_draws_are_the_callaway_santanna_bootstrap():
    """With Mammen weights and the fit's seed the draws are those of the Callaway-Sant'Anna
    uniform band (GroupTimeEffects.uniform_band, which follows R did's mboot): its bootstrap
    standard errors and uniform critical value are recovered to 1e-12."""
    from evaluation.estimators.staggered import callaway_santanna

    panel = _staggered_panel(14, [5, 5, 5, 7, 7, 7], 9, seed=3)
    cs = callaway_santanna(panel, outcome="visits", **KEYS, seed=8)
    infl = cs.influence
    se_band, crit = cs.uniform_band(infl, draws=299)
    n = cs.n_units
    out = multiplier_draws(infl, draws=299, seed=8, weights="mammen") * np.sqrt(n)
    q75, q25 = np.quantile(out, 0.75, axis=0, method="inverted_cdf"), np.quantile(out, 0.25, axis=0,
                                                                                   method="inverted_cdf")
    from scipy import stats

    sigma = (q75 - q25) / (stats.norm.ppf(0.75) - stats.norm.ppf(0.25))
    np.testing.assert_allclose(sigma / np.sqrt(n), se_band, rtol=1e-12, atol=1e-15)
    ok = sigma > np.sqrt(np.finfo(float).eps) * 10
    t_max = np.max(np.abs(out[:, ok] / sigma[ok]), axis=1)
    assert float(np.quantile(t_max, 0.95, method="inverted_cdf")) == pytest.approx(crit, rel=1e-12)


def test_multiplier_draws_covariance_and_romano_wolf():
    """Rademacher draws have covariance influence' influence / n^2 (the analytic one) in
    expectation: 20,000 draws match it within 6% (about 5 Monte Carlo SEs of a variance, sqrt(2/B)
    = 1%, on the diagonal; 0.06 * sqrt(var_j var_k) off it). Fed to romano_wolf as t draws they
    give adjusted p >= the normal p of each t (their marginal), as a max-|t| method must."""
    rng = np.random.default_rng(1)
    n, K = 60, 3
    influence = rng.standard_normal((n, 1)) + rng.standard_normal((n, K))   # correlated columns
    influence -= influence.mean(axis=0)
    draws = multiplier_draws(influence, draws=20000, seed=2)
    V = influence.T @ influence / n**2
    scale = np.sqrt(np.outer(np.diag(V), np.diag(V)))
    assert np.all(np.abs(np.cov(draws, rowvar=False) - V) <= 0.06 * scale)
    assert np.abs(draws.mean(axis=0)).max() <= 5 * np.sqrt(np.diag(V) / 20000).max()
    se = np.sqrt(np.diag(V))
    from scipy import stats

    t = np.array([3.0, 1.0, -2.0])
    p = romano_wolf(t, draws / se)
    assert np.all(p >= 2 * stats.norm.sf(np.abs(t)) - 0.01)
    np.testing.assert_allclose(multiplier_draws(influence, draws=50, seed=2), draws[:50], rtol=1e-13, atol=1e-15)
    with pytest.raises(EstimationError, match="'rademacher' or 'mammen'"):
        multiplier_draws(influence, draws=10, seed=1, weights="webb")
    bad = influence.copy()
    bad[0, 1] = np.nan
    with pytest.raises(EstimationError, match=r"column\(s\) \[1\]"):
        multiplier_draws(bad, draws=10, seed=1)


def test_romano_wolf_on_callaway_santanna_indicators():
    """Route (b): one Callaway-Sant'Anna fit per indicator on the same townships, one ATT(g, t)
    per indicator (cohort 5, period 8), their influence columns stacked and bootstrapped with
    shared township weights. Checks: the analytic SE sqrt(sum IF^2) / n equals each fit's
    reported SE (1e-12), the draws' SD matches it within 5% (Monte Carlo, B = 9,999), and the
    Romano-Wolf p is >= each indicator's own bootstrap p (1 + #) / (B + 1) and equal to
    it when the indicator is alone (1e-15)."""
    from evaluation.estimators.staggered import callaway_santanna

    panel = _staggered_panel(30, [5] * 5 + [7] * 5, 9, seed=4)
    fits = {y: callaway_santanna(panel, outcome=y, **KEYS, seed=1) for y in OUTCOMES}
    cols, est, se = [], [], []
    for fit in fits.values():
        j = int(np.flatnonzero((fit.table["group"] == 5).to_numpy() & (fit.table["time"] == 8).to_numpy())[0])
        cols.append(fit.influence[:, j])
        est.append(fit.table["att"].iloc[j])
        se.append(fit.table["se"].iloc[j])
    influence, est, se = np.column_stack(cols), np.array(est), np.array(se)
    n = influence.shape[0]
    np.testing.assert_allclose(np.sqrt((influence**2).sum(axis=0)) / n, se, rtol=1e-12)
    draws = multiplier_draws(influence, draws=9999, seed=6)
    np.testing.assert_allclose(draws.std(axis=0), se, rtol=0.05)
    t, null = est / se, draws / se
    rw = romano_wolf(t, null)
    own = (1 + (np.abs(null) >= np.abs(t)).sum(axis=0)) / (len(null) + 1)
    assert np.all(rw >= own) and np.all(np.diff(rw[np.argsort(-np.abs(t))]) >= 0)
    assert romano_wolf(t[:1], null[:, :1])[0] == pytest.approx(own[0], abs=1e-15)
