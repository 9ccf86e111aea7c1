"""Randomization inference: exact against refits, deterministic, valid size with 2 pilots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.estimators.did import twfe
from evaluation.estimators.fixed_effects import EstimationError
from evaluation.inference.few_clusters import randomization_inference


def _panel(rng, units=8, periods=10, starts=(6, 8), effect=0.0, pilot_noise=1.0):
    ft = np.zeros(units)
    ft[: len(starts)] = starts
    rows = []
    for i in range(units):
        a = rng.normal()
        sd = pilot_noise if ft[i] > 0 else 1.0
        for t in range(1, periods + 1):
            post = ft[i] > 0 and t >= ft[i]
            rows.append({"unit": i, "time": t, "first_treat": ft[i], "county": i % 2,
                         "y": a + 0.1 * t + effect * post + rng.normal(0, sd)})
    d = pd.DataFrame(rows)
    d["post"] = ((d["first_treat"] > 0) & (d["time"] >= d["first_treat"])).astype(int)
    return d


def test_every_assignment_equals_a_refit():
    """Exact enumeration on 8 townships with two pilots of different cohorts: 56 assignments,
    each coefficient equal to refitting TWFE on the re-assigned data (1e-10)."""
    d = _panel(np.random.default_rng(0))
    ri = randomization_inference(d, outcome="y", unit="unit", time="time", cohort="first_treat")
    assert ri.diagnostics["exact"] and ri.diagnostics["assignments"] == 8 * 7
    refits = []
    for i in range(8):
        for j in range(8):
            if i == j:
                continue
            ft = np.zeros(8)
            ft[i], ft[j] = 6, 8
            e = d.assign(first_treat=d["unit"].map(dict(enumerate(ft))))
            e["post"] = ((e["first_treat"] > 0) & (e["time"] >= e["first_treat"])).astype(int)
            refits.append(twfe(e, outcome="y", unit="unit", time="time", cohort="first_treat").effects[0].estimate)
    np.testing.assert_allclose(np.sort(ri.plot_data["permuted_estimate"]), np.sort(refits), atol=1e-10)
    observed = twfe(d, outcome="y", unit="unit", time="time", cohort="first_treat").effects[0].estimate
    assert ri.effects[0].estimate == pytest.approx(observed, abs=1e-12)
    assert ri.effects[0].p_value == pytest.approx(np.mean(np.abs(refits) >= abs(observed) - 1e-12), abs=1e-12)


def test_within_strata_and_determinism():
    d = _panel(np.random.default_rng(1), units=12)
    within = randomization_inference(d, outcome="y", unit="unit", time="time", cohort="first_treat", strata="county")
    assert within.diagnostics["possible_assignments"] == 6 * 6  # one pilot in each county of 6
    a = randomization_inference(d, outcome="y", unit="unit", time="time", cohort="first_treat", draws=999, seed=5,
                                max_exact=10)
    b = randomization_inference(d, outcome="y", unit="unit", time="time", cohort="first_treat", draws=999, seed=5,
                                max_exact=10)
    assert not a.diagnostics["exact"] and a.effects[0] == b.effects[0]
    np.testing.assert_array_equal(a.plot_data.to_numpy(), b.plot_data.to_numpy())


def test_interval_inverts_the_test():
    d = _panel(np.random.default_rng(2), units=30, starts=(6, 6, 7, 8), effect=2.0)
    ri = randomization_inference(d, outcome="y", unit="unit", time="time", cohort="first_treat", draws=1999, seed=1)
    e = ri.effects[0]
    assert e.ci_low < 2.0 < e.ci_high and e.p_value < 0.05
    shifted = d.assign(y=d["y"] - e.ci_high * d["post"])  # at the upper bound the null is just not rejected
    p_edge = randomization_inference(shifted, outcome="y", unit="unit", time="time", cohort="first_treat", draws=1999,
                                     seed=1).effects[0]
    assert p_edge.p_value == pytest.approx(0.05, abs=0.01)


def test_size_with_two_pilots():
    """500 panels, 20 exchangeable townships, 2 pilots, no effect: randomization inference
    rejects 3-7% at 5%; clustered TWFE (CR1) far more. (When the pilots' shocks are twice as
    noisy as the others', exchangeability fails and randomization inference rejected 22% at
    5% when this test was written: Ferman and Pinto 2019.)"""
    rng = np.random.default_rng(20261123)
    reject_ri = reject_cr1 = 0
    reps = 500
    for _ in range(reps):
        d = _panel(rng, units=20, periods=12, starts=(7, 7))
        reject_ri += randomization_inference(d, outcome="y", unit="unit", time="time",
                                             cohort="first_treat").effects[0].p_value <= 0.05
        reject_cr1 += twfe(d, outcome="y", unit="unit", time="time", cohort="first_treat").effects[0].p_value <= 0.05
    print(f"rejection at 5% with 2 pilots: randomization inference {reject_ri / reps:.3f}, CR1 {reject_cr1 / reps:.3f}")
    assert 0.03 <= reject_ri / reps <= 0.07
    assert reject_cr1 / reps > 0.10


def test_bad_calls():
    d = _panel(np.random.default_rng(3))
    with pytest.raises(EstimationError, match="balanced"):  # a gap is fine (tests/test_unbalanced.py), a duplicate not
        randomization_inference(pd.concat([d, d.iloc[:1]]), outcome="y", unit="unit", time="time",
                                cohort="first_treat")
    with pytest.raises(EstimationError, match="no treated"):
        randomization_inference(d.assign(first_treat=0), outcome="y", unit="unit", time="time", cohort="first_treat")
    with pytest.raises(EstimationError, match="no comparison"):
        randomization_inference(d.assign(first_treat=5), outcome="y", unit="unit", time="time", cohort="first_treat")


def test_cr2_with_singleton_clusters_is_hc2():
    import statsmodels.api as sm

    from evaluation.inference.few_clusters import cr2

    rng = np.random.default_rng(4)
    X = np.column_stack([np.ones(40), rng.normal(size=40), rng.integers(0, 2, 40)])
    y = X @ [1.0, 0.5, -0.3] + rng.normal(size=40) * (1 + X[:, 2])
    ours = cr2(X, y, np.arange(40), 1)
    assert ours["std_error"] == pytest.approx(sm.OLS(y, X).fit(cov_type="HC2").bse[1], abs=1e-12)


def test_cr2_on_a_hand_checkable_panel():
    """Two-group, two-period DiD with 3 clusters per group (12 rows): the treated-group
    coefficient's CR2 error by hand. With a saturated 2x2 design the hat matrix of a
    cluster is its cell-mean projection, so A_g and the Bell-McCaffrey df follow by hand."""
    from evaluation.inference.few_clusters import cr2

    y = np.array([1.0, 2.0, 1.5, 2.5, 0.5, 2.0,   # control clusters a, b, c: (pre, post)
                  1.0, 3.0, 2.0, 4.5, 1.5, 3.5])  # treated clusters d, e, f
    group = np.repeat([0, 1], 6)
    post = np.tile([0, 1], 6)
    clusters = np.repeat(np.arange(6), 2)
    X = np.column_stack([np.ones(12), group, post, group * post])
    res = cr2(X, y, clusters, 3)
    # by hand: each cell has 3 observations, so H is block-diagonal by cell with 1/3 entries;
    # a cluster holds one pre and one post row of the same group, so H_gg = I/3 and
    # A_g = (2/3)^(-1/2) I. Residuals are deviations from cell means.
    cell_mean = pd.Series(y).groupby([group, post]).transform("mean").to_numpy()
    u = y - cell_mean
    bread = np.linalg.inv(X.T @ X)
    meat = sum(np.outer(X[clusters == g].T @ (u[clusters == g] * (1.5 ** 0.5)),
                        X[clusters == g].T @ (u[clusters == g] * (1.5 ** 0.5))) for g in range(6))
    assert res["std_error"] == pytest.approx(np.sqrt((bread @ meat @ bread)[3, 3]), abs=1e-12)
    assert res["estimate"] == pytest.approx((y[7::2].mean() - y[6::2].mean()) - (y[1:6:2].mean() - y[0:6:2].mean()))
    # equivalently: the Welch standard error of the clusters' post-minus-pre changes, and
    # Bell-McCaffrey's df is the two-sample t's 3 + 3 - 2 = 4
    change = y[1::2] - y[0::2]
    welch = np.sqrt(change[:3].var(ddof=1) / 3 + change[3:].var(ddof=1) / 3)
    assert res["std_error"] == pytest.approx(welch, abs=1e-12)
    assert res["df"] == pytest.approx(4.0, abs=1e-10)


def test_twfe_cr2_absorbs_nested_township_effects():
    """The same 2x2 panel as a TWFE with township and period effects, clustered by
    township: CR2 is still the Welch error with 4 degrees of freedom."""
    from evaluation.inference.few_clusters import twfe_cr2

    y = np.array([1.0, 2.0, 1.5, 2.5, 0.5, 2.0, 1.0, 3.0, 2.0, 4.5, 1.5, 3.5])
    d = pd.DataFrame({"unit": np.repeat(np.arange(6), 2), "time": np.tile([1, 2], 6), "y": y,
                      "post": np.repeat([0, 1], 6) * np.tile([0, 1], 6),
                      "first_treat": np.repeat([0, 2], 6)})  # units 3-5 treated from period 2
    fit = twfe_cr2(d, outcome="y", unit="unit", time="time", cohort="first_treat").effects[0]
    change = y[1::2] - y[0::2]
    assert fit.estimate == pytest.approx(change[3:].mean() - change[:3].mean(), abs=1e-12)
    assert fit.std_error == pytest.approx(np.sqrt(change[:3].var(ddof=1) / 3 + change[3:].var(ddof=1) / 3), abs=1e-12)
    assert "df 4.0" in fit.inference


def test_placebo_in_space_equals_refits():
    from evaluation.inference.few_clusters import placebo_in_space

    d = _panel(np.random.default_rng(6), units=10, starts=(6,), effect=3.0)
    fit = placebo_in_space(d, outcome="y", unit="unit", time="time", cohort="first_treat")
    controls = d[d["first_treat"] == 0]
    refits = []
    for j in sorted(controls["unit"].unique()):
        e = controls.assign(first_treat=np.where(controls["unit"] == j, 6, 0))  # township j a fake pilot from 6
        refits.append(twfe(e, outcome="y", unit="unit", time="time", cohort="first_treat").effects[0].estimate)
    np.testing.assert_allclose(fit.plot_data["placebo_estimate"], refits, atol=1e-10)
    assert fit.effects[0].p_value == pytest.approx(1 / 10)  # the real pilot beats all 9 placebos
    assert fit.effects[0].estimate == pytest.approx(twfe(d, outcome="y", unit="unit", time="time",
                                                         cohort="first_treat").effects[0].estimate)


def test_power_simulation_runs_and_is_calibrated():
    from evaluation.inference.power import estimate_noise, simulate_panel, size_and_power

    rng = np.random.default_rng(8)
    d = simulate_panel(rng, 3, 30, 24, 13, sigma=2.0, rho=0.5)
    noise = estimate_noise(d, outcome="y", unit="unit", time="time", cohort="first_treat")
    assert noise["sigma"] == pytest.approx(2.0, rel=0.2) and noise["rho"] == pytest.approx(0.5, abs=0.15)
    table = size_and_power(2, 18, 12, 7, sigma=1.0, rho=0.0, panels=200, grid=(1, 2, 4), seed=3)
    ri = table.set_index("method").loc["randomization"]
    assert ri["false_rejection_rate"] <= 0.10  # 4.7% exactly (9 of 190 assignments); 200 panels
    assert 0.5 < ri["mde_80"] < 4.0


def _one_hot(d):
    return np.column_stack([d["post"].to_numpy(float), np.ones(len(d)),
                            pd.get_dummies(d["unit"], drop_first=True, dtype=float).to_numpy(),
                            pd.get_dummies(d["time"], drop_first=True, dtype=float).to_numpy()])


def _wildboottest(d, cluster: str, *, impose_null: bool = True, weights: str = "rademacher", seed: int = 1):
    """The wildboottest package's WCR11/WCU11 on the one-hot design (what pyfixest calls)."""
    wb = pytest.importorskip("wildboottest.wildboottest")
    X = _one_hot(d)
    R = np.zeros(X.shape[1])
    R[0] = 1
    boot = wb.WildboottestCL(X=X, Y=d["y"].to_numpy(), cluster=d[cluster].to_numpy(), R=R, B=9999, seed=seed)
    boot.get_scores(bootstrap_type="11", impose_null=impose_null, adj=True, cluster_adj=True)
    boot.get_weights(weights_type=weights)
    for step in (boot.get_numer, boot.get_denom, boot.get_tboot, boot.get_vcov, boot.get_tstat):
        step()
    boot.get_pvalue(pval_type="two-tailed")
    return boot


@pytest.mark.parametrize("impose_null", [True, False])
def test_wild_bootstrap_enumeration_equals_wildboottest(impose_null):
    """8 clusters, all 256 Rademacher sign vectors: p-value and t equal the wildboottest
    package's (what pyfixest's wildboottest calls) on the same one-hot design, to 1e-10."""
    from evaluation.inference.few_clusters import wild_cluster_bootstrap

    d = _panel(np.random.default_rng(9), units=16, starts=(6, 8), effect=0.8)
    d["county"] = d["unit"] // 2
    ours = wild_cluster_bootstrap(d, outcome="y", unit="unit", time="time", cohort="first_treat", cluster="county",
                                  impose_null=impose_null)
    boot = _wildboottest(d, "county", impose_null=impose_null)
    assert boot.full_enumeration and ours.diagnostics["enumerated"] and ours.diagnostics["draws"] == 256
    t = float(np.squeeze(boot.t_stat))
    assert ours.effects[0].extra["t"] == pytest.approx(t, abs=1e-10)
    # every one of the 256 bootstrap t* equals the package's (same set of sign vectors)
    np.testing.assert_allclose(np.sort(ours.plot_data["t_star"]), np.sort(np.squeeze(boot.t_boot)), atol=1e-10)
    # the package counts |t*| > |t| strictly; the +-1 vectors reproduce t exactly, so float
    # noise decides those two ties there. We count ties as at least as extreme.
    ties = np.isclose(np.abs(np.squeeze(boot.t_boot)), abs(t), rtol=1e-10, atol=0)
    assert ties.sum() == (2 if impose_null else 0)
    expected = np.mean((np.abs(np.squeeze(boot.t_boot)) > abs(t)) | ties)
    assert ours.effects[0].p_value == pytest.approx(expected, abs=1e-10)
    assert abs(ours.effects[0].p_value - float(boot.pvalue)) <= 2 / 256 + 1e-12


def test_wild_bootstrap_unbalanced_panel_equals_dummy_design():
    """Rows missing at random (unbalanced panel), clusters = counties: the within-township
    computation gives the same t and all 1,024 t* as the wildboottest package on the full
    one-hot design, to 1e-10; the restricted interval's ends have p = alpha."""
    from evaluation.inference.few_clusters import wild_cluster_bootstrap

    rng = np.random.default_rng(21)
    d = _panel(rng, units=30, starts=(5, 7, 9), effect=0.6)
    d["county"] = d["unit"] // 3
    d = d.drop(index=rng.choice(d.index, size=40, replace=False)).reset_index(drop=True)
    ours = wild_cluster_bootstrap(d, outcome="y", unit="unit", time="time", cohort="first_treat", cluster="county")
    boot = _wildboottest(d, "county")
    assert ours.diagnostics["draws"] == 1024
    assert ours.effects[0].extra["t"] == pytest.approx(float(np.squeeze(boot.t_stat)), abs=1e-10)
    np.testing.assert_allclose(np.sort(ours.plot_data["t_star"]), np.sort(np.squeeze(boot.t_boot)), atol=1e-10)
    fit = twfe(d, outcome="y", unit="unit", time="time", cohort="first_treat", cluster="county",
               adjustment="dummies").effects[0]
    assert ours.effects[0].estimate == pytest.approx(fit.estimate, abs=1e-10)
    assert ours.effects[0].std_error == pytest.approx(fit.std_error, rel=1e-10)
    e = ours.effects[0]
    assert e.ci_low < e.estimate < e.ci_high
    # the interval's ends are where the p-value crosses alpha: refit with the shifted outcome
    for edge in (e.ci_low, e.ci_high):
        inside = wild_cluster_bootstrap(d.assign(y=d["y"] - (edge + np.sign(e.estimate - edge) * 1e-6) * d["post"]),
                                        outcome="y", unit="unit", time="time", cohort="first_treat", cluster="county").effects[0].p_value
        outside = wild_cluster_bootstrap(d.assign(y=d["y"] - (edge - np.sign(e.estimate - edge) * 1e-6) * d["post"]),
                                         outcome="y", unit="unit", time="time", cohort="first_treat", cluster="county").effects[0].p_value
        assert outside <= 0.05 < inside


def test_wild_bootstrap_rejects_non_nested_clusters():
    from evaluation.inference.few_clusters import wild_cluster_bootstrap

    d = _panel(np.random.default_rng(2), units=8, starts=(6,), effect=0.5)
    with pytest.raises(EstimationError, match="nested in the clusters"):
        wild_cluster_bootstrap(d, outcome="y", unit="unit", time="time", cohort="first_treat", cluster="time")


def test_wild_bootstrap_webb_is_reproducible_and_covers():
    from evaluation.inference.few_clusters import wild_cluster_bootstrap

    d = _panel(np.random.default_rng(10), units=24, starts=(6, 6, 8, 8), effect=1.5)
    a = wild_cluster_bootstrap(d, outcome="y", unit="unit", time="time", cohort="first_treat", weights_type="webb",
                               draws=999, seed=4)
    b = wild_cluster_bootstrap(d, outcome="y", unit="unit", time="time", cohort="first_treat", weights_type="webb",
                               draws=999, seed=4)
    assert a.effects[0] == b.effects[0] and not a.diagnostics["enumerated"]
    assert a.effects[0].ci_low < 1.5 < a.effects[0].ci_high


def test_wild_bootstrap_random_weights_agree_with_wildboottest():
    """20 clusters, 9,999 Webb (and Rademacher) draws each: p-values within Monte Carlo error."""
    from evaluation.inference.few_clusters import wild_cluster_bootstrap

    d = _panel(np.random.default_rng(13), units=20, starts=(6, 7, 8), effect=0.9)
    for kind in ("webb", "rademacher"):
        ours = wild_cluster_bootstrap(d, outcome="y", unit="unit", time="time", cohort="first_treat",
                                      weights_type=kind, draws=9999, seed=2,
                                      max_enumerate=0).effects[0]
        p = float(_wildboottest(d, "unit", weights=kind, seed=3).pvalue)
        assert 0.01 < p < 0.9, p  # an informative p-value for the comparison
        assert abs(ours.p_value - p) < 4 * np.sqrt(2 * p * (1 - p) / 9999) + 1e-3, (kind, ours.p_value, p)


def test_randomization_inference_agrees_with_pyfixest_ritest():
    """pyfixest's ``ritest`` draws each unit's treatment independently (Bernoulli 1/2, with
    replacement from the observed values) and holds it constant within a cluster, so on
    a panel it cannot re-assign a pilot's post-start indicator (held constant within a
    township it is absorbed by the township effect: a singular design). On a balanced
    single-cohort panel the TWFE coefficient equals the difference in mean pre/post
    change, so we give ritest that one-row-per-township regression with half the
    townships piloting (where Bernoulli and fixed-size assignment nearly coincide): the
    coefficients are equal and the p-values agree within Monte Carlo error."""
    pf = pytest.importorskip("pyfixest")
    rng = np.random.default_rng(5)
    N, T, start = 200, 8, 4
    units, times = np.repeat(np.arange(N), T), np.tile(np.arange(T), N)
    treated = np.zeros(N, bool)
    treated[rng.choice(N, N // 2, replace=False)] = True
    y = rng.normal(size=N)[units] + 0.1 * times + rng.normal(size=N * T) + 0.12 * (treated[units] & (times >= start))
    d = pd.DataFrame({"unit": units, "time": times, "y": y, "first_treat": np.where(treated[units], start, 0)})
    ours = randomization_inference(d, outcome="y", unit="unit", time="time", cohort="first_treat", draws=9999,
                                   seed=1).effects[0]
    wide = d.assign(period=np.where(d["time"] >= start, "post", "pre")).pivot_table(index="unit", columns="period",
                                                                                    values="y")
    cs = pd.DataFrame({"dy": wide["post"] - wide["pre"], "treated": treated.astype(float)})
    fit = pf.feols("dy ~ treated", cs)
    assert float(fit.coef()["treated"]) == pytest.approx(ours.estimate, abs=1e-12)
    peer = fit.ritest(resampvar="treated", reps=9999, rng=np.random.default_rng(2), choose_algorithm="fast")
    p = float(peer["Pr(>|t|)"])
    assert 0.05 < p < 0.5, p  # an informative p-value (0.135)
    assert abs(ours.p_value - p) < 4 * np.sqrt(2 * p * (1 - p) / 9999), (ours.p_value, p)
