"""Few-pilot inference for TWFE with time-varying controls (``covariates=[...]``).

References and tolerances:

- Randomization inference: every permuted coefficient against a refit of
  ``twfe(covariates=...)`` on the re-assigned data (exact enumeration, 8 townships, two
  pilots of different cohorts: 56 assignments), balanced and unbalanced panels, to 1e-9
  (observed agreement ~4e-15); the interval's ends where the p-value of the shifted
  outcome crosses alpha.
- Wild cluster bootstrap: the wildboottest package 0.3.2 (WCR11 / WCU11, what pyfixest
  calls) on the one-hot design [D, constant, township and period dummies, controls], all
  256 Rademacher sign vectors: t and every t* to 1e-10, as tests/test_inference.py
  (observed ~1e-13), the p-value with ties counted as there. And a brute-force refit per
  sign vector on a small design (6 counties, 64 vectors): the restricted (null-imposed)
  or unrestricted model refitted by least squares with the dummies, y* = X b~ + u~ v_g,
  CR1 t* with the dummy design's small-sample factor, to 1e-9 (observed ~1e-13).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import EstimationError
from evaluation.estimators.did import twfe
from evaluation.inference.few_clusters import randomization_inference, wild_cluster_bootstrap

KEYS = dict(outcome="y", unit="unit", time="time", cohort="first_treat")
CONTROLS = ["x1", "x2"]


def _panel(seed: int, units: int = 8, periods: int = 8, starts=(5, 7), effect: float = 0.5) -> pd.DataFrame:
    """Township effects, a common trend, two controls (x1 trending more in the pilots, so
    that it confounds the unadjusted DiD) entering the outcome, and an effect from the start."""
    rng = np.random.default_rng(seed)
    ft = np.zeros(units)
    ft[: len(starts)] = starts
    rows = []
    for i in range(units):
        a = rng.normal()
        for t in range(1, periods + 1):
            x1 = rng.normal() + 0.3 * (ft[i] > 0) * t
            x2 = rng.normal()
            post = ft[i] > 0 and t >= ft[i]
            rows.append({"unit": i, "time": t, "first_treat": ft[i], "county": i // 2, "x1": x1, "x2": x2,
                         "y": a + 0.1 * t + effect * post + 0.7 * x1 - 0.4 * x2 + rng.normal()})
    d = pd.DataFrame(rows)
    d["post"] = ((d["first_treat"] > 0) & (d["time"] >= d["first_treat"])).astype(float)
    return d


def _gaps(d: pd.DataFrame, size: int, seed: int = 3) -> pd.DataFrame:
    return d.drop(index=np.random.default_rng(seed).choice(d.index, size=size, replace=False)).reset_index(drop=True)


def _coef(d: pd.DataFrame) -> float:
    return twfe(d, **KEYS, covariates=CONTROLS).effects[0].estimate


# ---------------------------------------------------------------- randomization inference

@pytest.mark.parametrize("drop", [0, 6])  # balanced; 6 rows missing (the _Projection path)
def test_randomization_inference_with_controls_equals_refits(drop):
    d = _gaps(_panel(0), drop) if drop else _panel(0)
    ri = randomization_inference(d, **KEYS, covariates=CONTROLS)
    assert ri.diagnostics["exact"] and ri.diagnostics["assignments"] == 8 * 7
    assert ri.diagnostics["panel"] == ("unbalanced" if drop else "balanced")
    assert ri.diagnostics["controls"] == CONTROLS
    refits = []
    for i in range(8):
        for j in range(8):
            if i != j:
                ft = np.zeros(8)
                ft[i], ft[j] = 5, 7
                refits.append(_coef(d.assign(first_treat=d["unit"].map(dict(enumerate(ft))))))
    refits = np.array(refits)
    np.testing.assert_allclose(np.sort(ri.plot_data["permuted_estimate"]), np.sort(refits), rtol=0, atol=1e-9)
    observed = _coef(d)
    e = ri.effects[0]
    assert e.estimate == pytest.approx(observed, abs=1e-9)
    assert e.p_value == pytest.approx(np.mean(np.abs(refits) >= abs(observed) - 1e-12 * max(1, abs(observed))),
                                      abs=1e-12)
    assert "controls (x1, x2)" in e.method
    # the controls matter here: the coefficient without them differs
    assert abs(twfe(d, **KEYS).effects[0].estimate - observed) > 0.05
    # the interval inverts the test of a constant effect: just inside / outside each end,
    # the randomization p-value of y - tau0 D (refitted controls) is above / at most alpha
    for edge, toward in ((e.ci_low, 1.0), (e.ci_high, -1.0)):
        p_in, p_out = (randomization_inference(d.assign(y=d["y"] - (edge + s * toward * 1e-6) * d["post"]), **KEYS,
                                               covariates=CONTROLS).effects[0].p_value for s in (1, -1))
        assert p_out <= 0.05 < p_in


def test_randomization_inference_takes_a_fit_with_controls():
    d = _panel(1, units=10, starts=(5, 5, 7))
    fit = twfe(d, **KEYS, covariates=CONTROLS)
    from_fit = randomization_inference(fit, draws=199, seed=4, max_exact=10)
    from_data = randomization_inference(d, **KEYS, covariates=CONTROLS, draws=199, seed=4, max_exact=10)
    assert not from_fit.diagnostics["exact"] and from_fit.diagnostics["assignments"] == 200
    assert from_fit.effects[0] == from_data.effects[0]
    assert from_fit.effects[0].estimate == pytest.approx(fit.effects[0].estimate, abs=1e-9)
    # random draws are refits too: the first is the observed assignment
    assert from_fit.plot_data["permuted_estimate"].iloc[0] == pytest.approx(fit.effects[0].estimate, abs=1e-9)
    # an explicit empty list overrides the fit's controls
    plain = randomization_inference(fit, covariates=[], draws=199, seed=4, max_exact=10)
    assert plain.effects[0].estimate == pytest.approx(twfe(d, **KEYS).effects[0].estimate, abs=1e-12)


# ---------------------------------------------------------------- wild cluster bootstrap

def _one_hot(d: pd.DataFrame) -> np.ndarray:
    """[D, constant, township dummies, period dummies, controls]: the dummy-variable design."""
    return np.column_stack([d["post"].to_numpy(float), np.ones(len(d)),
                            pd.get_dummies(d["unit"], drop_first=True, dtype=float).to_numpy(),
                            pd.get_dummies(d["time"], drop_first=True, dtype=float).to_numpy(),
                            d[CONTROLS].to_numpy(float)])


def _wildboottest(d: pd.DataFrame, impose_null: bool):
    wb = pytest.importorskip("wildboottest.wildboottest")
    X = _one_hot(d)
    R = np.zeros(X.shape[1])
    R[0] = 1
    boot = wb.WildboottestCL(X=X, Y=d["y"].to_numpy(), cluster=d["county"].to_numpy(), R=R, B=9999, seed=1)
    boot.get_scores(bootstrap_type="11", impose_null=impose_null, adj=True, cluster_adj=True)
    boot.get_weights(weights_type="rademacher")
    for step in (boot.get_numer, boot.get_denom, boot.get_tboot, boot.get_vcov, boot.get_tstat):
        step()
    boot.get_pvalue(pval_type="two-tailed")
    return boot


@pytest.mark.parametrize("drop", [0, 15])
@pytest.mark.parametrize("impose_null", [True, False])
def test_wild_bootstrap_with_controls_equals_wildboottest(impose_null, drop):
    d = _panel(9, units=16, effect=0.8)
    d = _gaps(d, drop) if drop else d
    ours = wild_cluster_bootstrap(d, **KEYS, cluster="county", covariates=CONTROLS, impose_null=impose_null)
    boot = _wildboottest(d, impose_null)
    assert boot.full_enumeration and ours.diagnostics["enumerated"] and ours.diagnostics["draws"] == 256
    t = float(np.squeeze(boot.t_stat))
    t_boot = np.squeeze(boot.t_boot)
    assert ours.effects[0].extra["t"] == pytest.approx(t, abs=1e-10)
    np.testing.assert_allclose(np.sort(ours.plot_data["t_star"]), np.sort(t_boot), rtol=0, atol=1e-10)
    ties = np.isclose(np.abs(t_boot), abs(t), rtol=1e-10, atol=0)  # the package counts |t*| > |t| strictly
    assert ties.sum() == (2 if impose_null else 0)
    assert ours.effects[0].p_value == pytest.approx(np.mean((np.abs(t_boot) > abs(t)) | ties), abs=1e-10)
    # the coefficient and CR1 error are twfe(covariates=...)'s with the dummy design's adjustment
    fit = twfe(d, **KEYS, cluster="county", covariates=CONTROLS, adjustment="dummies").effects[0]
    assert ours.effects[0].estimate == pytest.approx(fit.estimate, abs=1e-10)
    assert ours.effects[0].std_error == pytest.approx(fit.std_error, rel=1e-10)


def _brute_force(d: pd.DataFrame, impose_null: bool) -> tuple[float, np.ndarray]:
    """t and the t* of every Rademacher sign vector (cluster g's weight: bit g of the row
    number, clusters in sorted order), each by a least-squares refit with dummies."""
    X, y = _one_hot(d), d["y"].to_numpy(float)
    g_codes, clusters = pd.factorize(d["county"], sort=True)
    n, K, G = X.shape[0], X.shape[1], len(clusters)
    ssc = (n - 1) / (n - K) * G / (G - 1)

    def fit(target):
        b = np.linalg.lstsq(X, target, rcond=None)[0]
        u = target - X @ b
        bread = np.linalg.inv(X.T @ X)
        scores = np.array([X[g_codes == g].T @ u[g_codes == g] for g in range(G)])
        return b[0], np.sqrt(ssc * (bread @ scores.T @ scores @ bread)[0, 0])

    beta, se = fit(y)
    if impose_null:  # the model with D's coefficient 0
        b_r = np.linalg.lstsq(X[:, 1:], y, rcond=None)[0]
        base, resid, centre = X[:, 1:] @ b_r, y - X[:, 1:] @ b_r, 0.0
    else:
        b_u = np.linalg.lstsq(X, y, rcond=None)[0]
        base, resid, centre = X @ b_u, y - X @ b_u, beta
    t_star = []
    for row in range(2**G):
        v = ((row >> np.arange(G)) & 1) * 2.0 - 1.0
        b_star, se_star = fit(base + resid * v[g_codes])
        t_star.append((b_star - centre) / se_star)
    return beta / se, np.array(t_star)


@pytest.mark.parametrize("impose_null", [True, False])
def test_wild_bootstrap_with_controls_equals_brute_force_refits(impose_null):
    d = _gaps(_panel(5, units=12, periods=6, starts=(4, 5)), 5)
    ours = wild_cluster_bootstrap(d, **KEYS, cluster="county", covariates=CONTROLS, impose_null=impose_null)
    t, t_star = _brute_force(d, impose_null)
    assert ours.diagnostics["draws"] == 64 and ours.diagnostics["controls"] == CONTROLS
    assert ours.effects[0].extra["t"] == pytest.approx(t, abs=1e-9)
    np.testing.assert_allclose(ours.plot_data["t_star"], t_star, rtol=0, atol=1e-9)  # draw by draw


def test_wild_bootstrap_takes_a_fit_with_controls_and_its_interval_inverts_the_test():
    d = _panel(9, units=16, effect=0.8)
    fit = twfe(d, **KEYS, cluster="county", covariates=CONTROLS)
    ours = wild_cluster_bootstrap(fit)
    same = wild_cluster_bootstrap(d, **KEYS, cluster="county", covariates=CONTROLS)
    assert ours.effects[0] == same.effects[0] and "8 clusters" in ours.effects[0].inference
    assert ours.diagnostics["clusters"] == 8
    e = ours.effects[0]
    assert e.ci_low < e.estimate < e.ci_high
    for edge in (e.ci_low, e.ci_high):
        toward = np.sign(e.estimate - edge)
        p_in, p_out = (wild_cluster_bootstrap(d.assign(y=d["y"] - (edge + s * toward * 1e-6) * d["post"]), **KEYS,
                                              cluster="county", covariates=CONTROLS).effects[0].p_value
                       for s in (1, -1))
        assert p_out <= 0.05 < p_in


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("function", [randomization_inference, wild_cluster_bootstrap])
@pytest.mark.parametrize("drop", [0, 6])
def test_absorbed_and_bad_controls_are_named(function, drop):
    d = _gaps(_panel(2), drop) if drop else _panel(2)
    beds = d["unit"] * 3.0 + 10                                         # constant within every township
    with pytest.raises(EstimationError, match=r"covariate 'beds' is time-invariant.*'unit' fixed effects"):
        function(d.assign(beds=beds), **KEYS, covariates=["x1", "beds"])
    with pytest.raises(EstimationError, match=r"covariate 'trend' is constant within each 'time'"):
        function(d.assign(trend=d["time"] * 0.5), **KEYS, covariates=["trend"])
    # a township level plus a common trend: absorbed by the two effects together
    with pytest.raises(EstimationError, match=r"\['level_trend'\] do not vary beyond the township and period"):
        function(d.assign(level_trend=beds + d["time"] * 0.5), **KEYS, covariates=["x1", "level_trend"])
    with pytest.raises(EstimationError, match=r"controls \['x1', 'x1_twice'\] are collinear"):
        function(d.assign(x1_twice=2 * d["x1"]), **KEYS, covariates=["x1", "x1_twice"])
    with pytest.raises(EstimationError, match=r"covariate 'x2' is missing for unit"):
        function(d.assign(x2=d["x2"].mask(d.index == 3)), **KEYS, covariates=CONTROLS)
    with pytest.raises(EstimationError, match=r"not in the data.*'nothing'"):
        function(d, **KEYS, covariates=["nothing"])
    with pytest.raises(EstimationError, match=r"list of column names"):
        function(d, **KEYS, covariates="x1")


def test_weighted_fit_is_still_refused():
    d = _panel(2).assign(population=lambda f: 100.0 + f["unit"])
    fit = twfe(d, **KEYS, covariates=CONTROLS, weights="population")
    for function in (randomization_inference, wild_cluster_bootstrap):
        with pytest.raises(EstimationError, match=r"unweighted TWFE coefficient; this fit has weights='population'"):
            function(fit)
