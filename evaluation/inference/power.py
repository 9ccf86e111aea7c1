"""Size and power of the DiD tests by simulation, for a design taken from a real panel.

The noise of the design (standard deviation and AR(1) coefficient of the outcome after
township and period effects) is estimated from the pre-period of a real panel. Panels
are then simulated with the given numbers of pilot and comparison townships and months,
and for each inference method the function reports the false-rejection rate when there
is no effect and the minimum detectable effect (MDE): the smallest effect on the grid
rejected in at least 80% of the panels (linear interpolation between grid points).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.estimators.did import twfe
from evaluation.estimators.fixed_effects import balanced_wide, two_way_demean_balanced
from evaluation.inference.few_clusters import randomization_inference

METHODS = ("CR1", "randomization")


def estimate_noise(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str) -> dict:
    """Residual SD and AR(1) coefficient of the outcome (after township and period
    effects) before any pilot started (``cohort``: first treated period, 0 never). A
    simulation input, not an estimate of an effect: returns a dict (sigma, rho,
    pre_periods, townships)."""
    first = data.loc[data[cohort] > 0, cohort].min()
    pre = data[data[time] < first]
    Y, _, _ = balanced_wide(pre, outcome, unit, time, method="estimate_noise")
    e = two_way_demean_balanced(Y)
    rho = float(np.sum(e[:, 1:] * e[:, :-1]) / np.sum(e[:, :-1] ** 2))
    sigma = float(e.std(ddof=1) * np.sqrt(Y.size / (Y.size - Y.shape[0] - Y.shape[1] + 1)))
    return {"sigma": sigma, "rho": rho, "pre_periods": Y.shape[1], "townships": Y.shape[0]}


def simulate_panel(rng, n_pilots: int, n_comparison: int, periods: int, start: int, sigma: float, rho: float,
                   effect: float = 0.0) -> pd.DataFrame:
    """Township and period effects, stationary AR(1) noise, a constant effect from ``start``."""
    n = n_pilots + n_comparison
    shocks = rng.normal(0, sigma * np.sqrt(1 - rho**2), (n, periods))
    e = np.empty((n, periods))
    e[:, 0] = rng.normal(0, sigma, n)
    for t in range(1, periods):
        e[:, t] = rho * e[:, t - 1] + shocks[:, t]
    y = rng.normal(0, 1, (n, 1)) + rng.normal(0, 1, (1, periods)) + e
    ft = np.r_[np.full(n_pilots, start), np.zeros(n_comparison)]
    t = np.arange(1, periods + 1)
    post = (ft[:, None] > 0) & (t[None, :] >= ft[:, None])
    y = y + effect * post
    return pd.DataFrame({"unit": np.repeat(np.arange(n), periods), "time": np.tile(t, n),
                         "first_treat": np.repeat(ft, periods), "post": post.ravel().astype(int), "y": y.ravel()})


def _rejects(d: pd.DataFrame, alpha: float, seed: int, draws: int) -> dict:
    fit = twfe(d, outcome="y", unit="unit", time="time", cohort="first_treat")
    cr1 = fit.effects[0].p_value <= alpha
    ri = randomization_inference(fit, draws=draws, seed=seed, max_exact=2000).effects[0].p_value <= alpha
    return {"CR1": cr1, "randomization": ri}


def size_and_power(n_pilots: int, n_comparison: int, periods: int, start: int, sigma: float, rho: float, *,
                   panels: int = 200, grid: tuple[float, ...] = (0.5, 1, 1.5, 2, 3, 4, 6), alpha: float = 0.05,
                   seed: int = 1, draws: int = 199) -> pd.DataFrame:
    """False-rejection rate (no effect) and 80%-power MDE of each method, in outcome units,
    from ``panels`` simulated panels per effect size (:func:`simulate_panel`);
    ``draws``: randomization-inference draws per panel.

    ``grid`` is in units of sigma. Returns one row per method (a simulation table, not
    an :class:`evaluation.results.Estimates`: its rows are rates, not effects).
    """
    rng = np.random.default_rng(seed)
    rates = {m: [] for m in METHODS}
    for k, mult in enumerate((0.0, *grid)):
        hits = {m: 0 for m in METHODS}
        for r in range(panels):
            d = simulate_panel(rng, n_pilots, n_comparison, periods, start, sigma, rho, effect=mult * sigma)
            for m, rej in _rejects(d, alpha, seed + 1000 * k + r, draws).items():
                hits[m] += rej
        for m in METHODS:
            rates[m].append(hits[m] / panels)
    rows = []
    effects = np.array((0.0, *grid)) * sigma
    for m in METHODS:
        power = np.array(rates[m])
        above = np.flatnonzero(power[1:] >= 0.8)
        if len(above):
            i = above[0] + 1
            lo, hi = effects[i - 1], effects[i]
            mde = lo + (0.8 - power[i - 1]) / (power[i] - power[i - 1]) * (hi - lo) if power[i] > power[i - 1] else hi
        else:
            mde = np.nan
        rows.append({"method": m, "pilots": n_pilots, "comparison": n_comparison, "periods": periods,
                     "false_rejection_rate": power[0], "mde_80": float(mde), "panels": panels})
    return pd.DataFrame(rows)
