"""CR2 from per-cluster blocks equals the former dense computation.

:func:`evaluation.inference.few_clusters.cr2` now forms only n_g x k and k x k pieces per
cluster and sums the G x G Bell-McCaffrey matrix in row blocks. The reference below is the
implementation it replaced (commit b11507e), copied verbatim: it forms the n x n hat matrix
H and residual maker I - H, A_g = (I - H_gg)^(-1/2) by eigendecomposition, and the df from
the eigenvalues of G'G (Bell and McCaffrey 2002; Imbens and Kolesar 2016). Agreement is
asserted to 1e-10 relative on balanced and unbalanced panels, clustered by township and by
county, and on plain designs (singleton clusters, unequal cluster sizes, clusters smaller
than the number of columns). Published values: tests/test_inference.py (hand-checkable
Welch / df 4 panel, statsmodels HC2) and tests/test_unbalanced.py (dense Pustejovsky-Tipton
construction) still pass unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.errors import EstimationError
from evaluation.estimators.did import treatment_indicator
from evaluation.estimators.fixed_effects import demean, factorize
from evaluation.inference.few_clusters import cr2, twfe_cr2

REL = 1e-10


# ----------------------------------------------------------------------------- reference (former implementation)

def reference_cr2(X: np.ndarray, y: np.ndarray, clusters: np.ndarray, index: int) -> dict:
    """REFERENCE: the dense cr2 of commit b11507e, verbatim (n x n hat matrix)."""
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    n, k = X.shape
    if np.linalg.matrix_rank(X) < k:
        raise EstimationError("the design is collinear")
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ X.T @ y
    u = y - X @ beta
    H = X @ bread @ X.T
    M = np.eye(n) - H
    codes = pd.factorize(pd.Series(clusters))[0]
    groups = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    c = bread[:, index]
    meat = np.zeros((k, k))
    G_cols = []
    for idx in groups:
        Hgg = H[np.ix_(idx, idx)]
        w, V = np.linalg.eigh(np.eye(len(idx)) - Hgg)
        if w.min() <= 1e-12:
            raise EstimationError("CR2 is undefined: a cluster is fully explained by the regressors "
                                  "(e.g. a fixed effect nested in a single-cluster group)")
        A = V @ np.diag(w ** -0.5) @ V.T
        s = X[idx].T @ A @ u[idx]
        meat += np.outer(s, s)
        G_cols.append(M[idx].T @ (A @ (X[idx] @ c)))
    vcov = bread @ meat @ bread
    Gm = np.column_stack(G_cols)
    lam = np.linalg.eigvalsh(Gm.T @ Gm)
    df = float(lam.sum() ** 2 / (lam**2).sum())
    return {"estimate": float(beta[index]), "std_error": float(np.sqrt(vcov[index, index])), "df": df,
            "vcov": vcov, "coef": beta}


def reference_twfe_cr2(d: pd.DataFrame, *, cluster: str) -> dict:
    """REFERENCE: the design twfe_cr2 of commit b11507e builds (township effects absorbed by
    within-township demeaning, period dummies kept), passed to the dense reference cr2."""
    d = d.dropna(subset=["y"])
    treatment = treatment_indicator(d, time="time", cohort="first_treat")
    u_codes = factorize(d["unit"])[0]
    periods = pd.get_dummies(d["time"], drop_first=True, dtype=float).to_numpy()
    Z = demean(np.column_stack([d["y"].to_numpy(float), treatment.to_numpy(float), periods]), [u_codes])
    return reference_cr2(Z[:, 1:], Z[:, 0], d[cluster].to_numpy(), 0)


# ----------------------------------------------------------------------------- data

def _panel(seed: int, units: int = 24, periods: int = 10, drop: int = 0) -> pd.DataFrame:
    """Townships in counties of 4, a third piloted from period 5 or 7, heteroskedastic
    noise; ``drop`` random rows removed and one outcome set missing when unbalanced."""
    rng = np.random.default_rng(seed)
    ft = rng.choice([0, 0, 5, 7], size=units)
    scale = rng.uniform(0.5, 2.0, size=units)
    rows = [{"unit": i, "county": i // 4, "time": t, "first_treat": ft[i],
             "y": 0.2 * i + 0.3 * t + 0.8 * (ft[i] > 0 and t >= ft[i]) + scale[i] * rng.normal()}
            for i in range(units) for t in range(1, periods + 1)]
    d = pd.DataFrame(rows)
    if drop:
        d = d.drop(index=rng.choice(d.index, size=drop, replace=False)).reset_index(drop=True)
        d.loc[3, "y"] = np.nan
    return d


def _agree(ours: dict, ref: dict) -> None:
    for key in ("estimate", "std_error", "df"):
        assert ours[key] == pytest.approx(ref[key], rel=REL, abs=0), key
    np.testing.assert_allclose(ours["vcov"], ref["vcov"], rtol=REL, atol=REL * np.abs(ref["vcov"]).max())
    np.testing.assert_allclose(ours["coef"], ref["coef"], rtol=REL, atol=REL * np.abs(ref["coef"]).max())


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("drop", [0, 17], ids=["balanced", "unbalanced"])
@pytest.mark.parametrize("cluster", ["unit", "county"])
def test_twfe_cr2_equals_the_dense_reference(drop, cluster):
    """twfe_cr2 (block algebra) against the former dense design and cr2, 1e-10 relative:
    township clusters (n_g <= k) and county clusters (n_g > k, rank-deficient X_g)."""
    d = _panel(11 + drop, drop=drop)
    ref = reference_twfe_cr2(d, cluster=cluster)
    fit = twfe_cr2(d, outcome="y", unit="unit", time="time", cohort="first_treat", cluster=cluster)
    effect = fit.effects[0]
    assert effect.estimate == pytest.approx(ref["estimate"], rel=REL, abs=0)
    assert effect.std_error == pytest.approx(ref["std_error"], rel=REL, abs=0)
    assert fit.diagnostics["bell_mccaffrey_df"] == pytest.approx(ref["df"], rel=REL, abs=0)


@pytest.mark.parametrize("drop", [0, 17], ids=["balanced", "unbalanced"])
@pytest.mark.parametrize("cluster", ["unit", "county"])
def test_cr2_on_the_twfe_design_equals_the_reference(drop, cluster):
    """The array function on the same demeaned design: every returned piece, 1e-10 relative."""
    d = _panel(3 + drop, drop=drop).dropna(subset=["y"])
    u_codes = factorize(d["unit"])[0]
    periods = pd.get_dummies(d["time"], drop_first=True, dtype=float).to_numpy()
    D = treatment_indicator(d, time="time", cohort="first_treat").to_numpy(float)
    Z = demean(np.column_stack([d["y"].to_numpy(float), D, periods]), [u_codes])
    for index in (0, 3):
        _agree(cr2(Z[:, 1:], Z[:, 0], d[cluster].to_numpy(), index),
               reference_cr2(Z[:, 1:], Z[:, 0], d[cluster].to_numpy(), index))


@pytest.mark.parametrize("design", ["singletons", "unequal", "small_clusters", "labels_unsorted"])
def test_cr2_on_plain_designs_equals_the_reference(design):
    """Designs with an intercept and dummies: HC2 (one row per cluster), clusters of 1 to 30
    rows, clusters with fewer rows than columns, string labels in no order. 1e-10 relative."""
    rng = np.random.default_rng(21)
    n = 90
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n), rng.normal(size=(n, 5))])
    y = X @ rng.normal(size=X.shape[1]) + rng.normal(size=n) * (1 + np.abs(X[:, 1]))
    clusters = {"singletons": np.arange(n),
                "unequal": np.repeat(np.arange(7), [1, 2, 5, 10, 12, 30, 30]),
                "small_clusters": np.repeat(np.arange(30), 3),
                "labels_unsorted": rng.choice(np.array(["b", "a", "z", "k", "c", "q"]), size=n)}[design]
    for index in (1, 2):
        _agree(cr2(X, y, clusters, index), reference_cr2(X, y, clusters, index))


def test_cr2_refuses_what_the_reference_refuses():
    """A cluster fully explained by the regressors (its own dummy) and a collinear design:
    both implementations raise the same EstimationError."""
    rng = np.random.default_rng(5)
    n = 30
    clusters = np.repeat(np.arange(10), 3)
    own = (clusters == 0).astype(float)            # a dummy for cluster 0: I - H_00 singular
    X = np.column_stack([np.ones(n), rng.normal(size=n), own])
    y = rng.normal(size=n)
    for function in (cr2, reference_cr2):
        with pytest.raises(EstimationError, match="fully explained"):
            function(X, y, clusters, 1)
        with pytest.raises(EstimationError, match="collinear"):
            function(np.column_stack([X, 2 * X[:, 1]]), y, clusters, 1)
