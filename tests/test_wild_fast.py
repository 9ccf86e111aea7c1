"""The wild cluster bootstrap's balanced fast path (few_clusters._wild_balanced).

On a balanced panel without controls, :func:`wild_cluster_bootstrap` computes the draws
from the two-way demeaned grids and the treatment paths (cohorts) instead of the general
within-township computation (few_clusters._wild_general). Reference: the general path on
the same data, forced with ``_BALANCED_FAST_PATH = False``; the general path is itself
checked against the wildboottest package 0.3.2 (what pyfixest calls) in
tests/test_inference.py and tests/test_unbalanced.py, and the fast path directly against
wildboottest 0.3.2 here once (all 2^8 sign vectors, 4 cohorts, county clusters).

Tolerances: every t* to 1e-10 of the largest |t*| (elementwise relative differences are
of that order too, except where a draw's numerator cancels to rounding noise, e.g. the
all-ones vector of the unrestricted bootstrap, whose numerator is the sum of the scores,
0); estimate, standard error and the interval's ends to 1e-10 relative; the p-value
exactly (a share of the same draws).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evaluation.inference.few_clusters as fc

KEYS = {"outcome": "y", "unit": "unit", "time": "time", "cohort": "first_treat"}


def _panel(seed: int, *, units: int = 24, periods: int = 12, cohorts=(5,), effect: float = 0.7,
           county_size: int = 3) -> pd.DataFrame:
    """A balanced panel: the first len(cohorts) x 2 townships piloted (two per start, or
    one when there are fewer townships), the rest never; counties of ``county_size``
    consecutive townships (so pilots and controls share counties)."""
    rng = np.random.default_rng(seed)
    first = np.zeros(units)
    starts = np.repeat(cohorts, 2)[: units - 2]
    first[rng.permutation(units)[: len(starts)]] = starts
    unit = np.repeat(np.arange(units), periods)
    t = np.tile(np.arange(1, periods + 1), units)
    ft = np.repeat(first, periods)
    post = (ft > 0) & (t >= ft)
    y = (np.repeat(rng.normal(0, 1, units), periods) + np.tile(rng.normal(0, 0.3, periods), units)
         + effect * post + rng.normal(0, 1, units * periods))
    return pd.DataFrame({"unit": unit, "time": t, "first_treat": ft, "county": unit // county_size,
                         "post": post.astype(float), "y": y})


def _both(d: pd.DataFrame, monkeypatch, **kw):
    fast = fc.wild_cluster_bootstrap(d, **KEYS, **kw)
    with monkeypatch.context() as m:
        m.setattr(fc, "_BALANCED_FAST_PATH", False)
        general = fc.wild_cluster_bootstrap(d, **KEYS, **kw)
    return fast, general


def _assert_same(fast, general) -> None:
    tf, tg = fast.plot_data["t_star"].to_numpy(), general.plot_data["t_star"].to_numpy()
    assert np.isfinite(tg).all() and len(tf) == len(tg)
    np.testing.assert_allclose(tf, tg, rtol=1e-10, atol=1e-10 * np.abs(tg).max())
    a, b = fast.effects[0], general.effects[0]
    assert a.p_value == b.p_value
    for name in ("estimate", "std_error", "ci_low", "ci_high"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-10, abs=1e-14), name
    assert fast.diagnostics == general.diagnostics and a.inference == b.inference


COHORTS = {1: (5,), 2: (5, 8), 3: (4, 7, 10), 4: (3, 5, 8, 11)}
CASES = [  # cluster, enumerate (all 2^G sign vectors), weights
    ("unit", False, "rademacher"),
    ("unit", False, "webb"),
    ("county", True, "rademacher"),
    ("county", False, "rademacher"),
    ("county", False, "webb"),
]


@pytest.mark.parametrize("impose_null", [True, False])
@pytest.mark.parametrize("n_cohorts", [1, 2, 3, 4])
@pytest.mark.parametrize(("cluster", "enumerate_all", "weights"), CASES)
def test_fast_path_equals_general_path(cluster, enumerate_all, weights, n_cohorts, impose_null, monkeypatch):
    """Townships (24 clusters) or counties of 3 townships (8 clusters, townships nested),
    1-4 cohorts, Rademacher (all 256 sign vectors, or 999 / 199 random draws) and Webb weights, restricted
    and unrestricted: the same t* draws, p-value and interval as the general path."""
    d = _panel(10 * n_cohorts + len(cluster), cohorts=COHORTS[n_cohorts])
    draws = 999 if cluster == "unit" else 199  # 8 counties: 2^8 = 256 > 199 random draws
    fast, general = _both(d, monkeypatch, cluster=cluster, weights_type=weights, impose_null=impose_null,
                          draws=draws, seed=7, max_enumerate=12 if enumerate_all else 0)
    assert fast.diagnostics["enumerated"] is enumerate_all
    assert fast.diagnostics["draws"] == (256 if enumerate_all else draws)
    _assert_same(fast, general)


@pytest.mark.parametrize("impose_null", [True, False])
def test_as_many_paths_as_periods(impose_null, monkeypatch):
    """5 periods and 4 cohorts: 5 treatment paths (never treated included), not fewer than
    the periods, so the cluster sums of D~ by period are used as they are (H = I)."""
    d = _panel(3, units=30, periods=5, cohorts=(2, 3, 4, 5), county_size=2)
    for cluster, kind in (("unit", "rademacher"), ("county", "webb")):
        fast, general = _both(d, monkeypatch, cluster=cluster, weights_type=kind, impose_null=impose_null,
                              draws=499, seed=2, max_enumerate=0)
        _assert_same(fast, general)


def test_strong_effect_and_shifted_levels(monkeypatch):
    """An effect of 20 noise standard deviations (t about 40) on large township and period
    levels: the expanded sums of squares keep the 1e-10 agreement."""
    d = _panel(5, units=40, periods=10, cohorts=(4, 7), effect=20.0, county_size=4)
    d["y"] += 1e4 + 50 * d["time"]
    fast, general = _both(d, monkeypatch, cluster="county", draws=999, seed=1, max_enumerate=0)
    assert abs(general.effects[0].extra["t"]) > 20
    _assert_same(fast, general)


def test_which_path(monkeypatch):
    """Balanced without controls: the fast path (and not the general one). A township
    missing a month, a month without an outcome, or a control: the general path."""
    calls = []
    for name in ("_wild_balanced", "_wild_general"):
        original = getattr(fc, name)

        def spy(*args, _name=name, _original=original, **kw):
            calls.append(_name)
            return _original(*args, **kw)
        monkeypatch.setattr(fc, name, spy)
    d = _panel(1, cohorts=(5, 8))
    d["x"] = np.random.default_rng(4).normal(size=len(d))
    fc.wild_cluster_bootstrap(d, **KEYS, draws=99, seed=1)
    assert calls == ["_wild_balanced"]
    absent = d.drop(index=[5])
    empty = d.assign(y=d["y"].where(d.index != 17))
    for data, extra in ((absent, {}), (empty, {}), (d, {"covariates": ["x"]})):
        calls.clear()
        fc.wild_cluster_bootstrap(data, **KEYS, draws=99, seed=1, **extra)
        assert calls == ["_wild_general"]


def test_fast_path_equals_wildboottest_enumerated():
    """The fast path alone against the wildboottest package 0.3.2 (WCR11 on the one-hot
    design, as in tests/test_inference.py): 16 townships in 8 counties, 4 cohorts, all 256
    sign vectors; t and every t* to 1e-10."""
    wb = pytest.importorskip("wildboottest.wildboottest")
    d = _panel(8, units=16, periods=12, cohorts=(3, 5, 8, 11), county_size=2)
    ours = fc.wild_cluster_bootstrap(d, **KEYS, cluster="county")
    X = np.column_stack([d["post"].to_numpy(), np.ones(len(d)),
                         pd.get_dummies(d["unit"], drop_first=True, dtype=float).to_numpy(),
                         pd.get_dummies(d["time"], drop_first=True, dtype=float).to_numpy()])
    R = np.zeros(X.shape[1])
    R[0] = 1
    boot = wb.WildboottestCL(X=X, Y=d["y"].to_numpy(), cluster=d["county"].to_numpy(), R=R, B=9999, seed=1)
    boot.get_scores(bootstrap_type="11", impose_null=True, adj=True, cluster_adj=True)
    boot.get_weights(weights_type="rademacher")
    for step in (boot.get_numer, boot.get_denom, boot.get_tboot, boot.get_vcov, boot.get_tstat):
        step()
    assert boot.full_enumeration and ours.diagnostics["draws"] == 256
    assert ours.effects[0].extra["t"] == pytest.approx(float(np.squeeze(boot.t_stat)), abs=1e-10)
    np.testing.assert_allclose(np.sort(ours.plot_data["t_star"]), np.sort(np.squeeze(boot.t_boot)), atol=1e-10)
