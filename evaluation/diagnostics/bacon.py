"""Goodman-Bacon decomposition of the two-way fixed-effects DiD estimate.

With staggered starts, the TWFE coefficient is a weighted average of every 2x2 DiD
between timing groups: each cohort against the never-treated, earlier against later
cohorts (later ones not yet treated), and later against earlier cohorts, where the
already-treated earlier cohort serves as the control. When effects grow over time the
last kind is biased (the control's own effect is still changing), which is how TWFE goes
wrong. Weights sum to one and the weighted estimates sum to the TWFE coefficient exactly
(balanced panel, binary absorbing treatment, no covariates or weights).
Goodman-Bacon A (2021), J Econometrics 225:254-277, Theorem 1.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from evaluation.errors import EstimationError
from evaluation.estimators.fixed_effects import balanced_wide, two_way_demean_balanced
from evaluation.results import Effect, Estimates

COMPARISONS = {
    "treated_vs_never": "pilot cohort vs never-treated",
    "earlier_vs_later": "earlier cohort vs later cohort (not yet treated)",
    "later_vs_earlier": "later cohort vs earlier cohort (already treated: the problematic comparison)",
}


class BaconDecomposition(Estimates):
    """The decomposition as an :class:`Estimates`: one effect (estimand ``bacon_2x2``) per
    2x2 comparison, its treated cohort in ``cohort``, and in ``extra`` the ``comparison``
    kind, the ``control`` cohort ("never" or a period) and the ``weight``. ``table``
    holds the same as columns; ``twfe`` is the TWFE coefficient they add up to. The 2x2
    estimates are descriptive: no standard errors."""

    def __init__(self, *, table: pd.DataFrame, twfe: float, n_obs: int, n_units: int, n_treated: int):
        self.table = table    # comparison, treated, control, estimate, weight
        self.twfe = twfe      # the TWFE coefficient the components add up to
        method = "Goodman-Bacon decomposition of two-way fixed effects"
        effects = [Effect(estimand="bacon_2x2", estimate=float(r.estimate), std_error=math.nan, ci_low=math.nan,
                          ci_high=math.nan, p_value=math.nan, method=method, inference="none (descriptive)",
                          n_obs=n_obs, n_units=n_units, n_treated=n_treated,
                          term=f"{r.comparison}: {r.treated:g} vs {r.control}" if r.control == "never"
                          else f"{r.comparison}: {r.treated:g} vs {r.control:g}",
                          cohort=float(r.treated),
                          extra={"comparison": r.comparison, "control": r.control, "weight": float(r.weight)})
                   for r in table.itertuples()]
        super().__init__(effects=effects, method=method, plot_data=table, kind="bacon", wald=False,
                         diagnostics={"twfe": twfe, "comparisons": len(table)})

    def by_comparison(self) -> pd.DataFrame:
        """Total weight and weighted average estimate of each kind of comparison."""
        t = self.table.assign(weighted=self.table["estimate"] * self.table["weight"])
        out = t.groupby("comparison").agg(weight=("weight", "sum"), weighted=("weighted", "sum"))
        out["average_estimate"] = out["weighted"] / out["weight"]
        out["label"] = [COMPARISONS[c] for c in out.index]
        return out[["label", "weight", "average_estimate", "weighted"]]


def bacon_decomposition(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str) -> BaconDecomposition:
    """Decompose TWFE of ``outcome`` on the absorbing treatment defined by ``cohort``
    (the first treated period on the ``time`` scale; 0 or missing for never treated)
    into its 2x2 comparisons (Goodman-Bacon 2021, Theorem 1; balanced panel, no
    covariates or weights).

    Theorem 1 holds on a balanced panel only (the weights are functions of cohort
    shares and treated-period shares that a gap breaks), so a township lacking a period
    or an outcome value raises :class:`evaluation.errors.UnbalancedPanelError` naming
    them (its ``incomplete`` frame); drop them first to decompose the rest."""
    d = data[[unit, time, outcome, cohort]].copy()
    Y, units, periods = balanced_wide(d, outcome, unit, time, method="bacon_decomposition")
    ft = d.groupby(unit)[cohort].first().reindex(units).fillna(0).to_numpy(float)
    N, T = Y.shape
    start = {periods.dtype.type(g) if float(g).is_integer() else g: int(np.searchsorted(periods, g))
             for g in np.unique(ft) if g > 0}
    if any(s == 0 for s in start.values()):
        raise EstimationError("a cohort is treated from the first period (always treated); "
                              "leave it out before decomposing")
    if any(g > periods[-1] for g in start):
        raise EstimationError("a cohort starts after the last period; code it as never treated")
    groups = sorted(start)
    if not groups:
        raise EstimationError("no treated units")
    D = np.zeros((N, T))
    for g, s in start.items():
        D[ft == g, s:] = 1.0
    Dt, Yt = two_way_demean_balanced(D), two_way_demean_balanced(Y)
    VD = (Dt**2).mean()
    if VD <= 0:
        raise EstimationError("the treatment does not vary beyond the unit and period effects")
    beta = float((Dt * Yt).sum() / (Dt**2).sum())

    share = {g: float((ft == g).mean()) for g in groups}
    dbar = {g: (T - start[g]) / T for g in groups}
    ybar = {g: Y[ft == g] for g in groups}
    never = ft == 0

    def mean(rows, lo, hi):
        return rows[:, lo:hi].mean()

    records = []
    if never.any():
        nU = float(never.mean())
        for k in groups:
            s = start[k]
            est = (mean(ybar[k], s, T) - mean(ybar[k], 0, s)) - (mean(Y[never], s, T) - mean(Y[never], 0, s))
            nkU = share[k] / (share[k] + nU)
            w = (share[k] + nU) ** 2 * nkU * (1 - nkU) * dbar[k] * (1 - dbar[k]) / VD
            records.append(("treated_vs_never", k, "never", est, w))
    for i, k in enumerate(groups):
        for late in groups[i + 1:]:
            sk, sl = start[k], start[late]
            nkl = share[k] / (share[k] + share[late])
            # earlier k vs later cohort, before the later one starts
            est = (mean(ybar[k], sk, sl) - mean(ybar[k], 0, sk)) - (mean(ybar[late], sk, sl) - mean(ybar[late], 0, sk))
            w = (((share[k] + share[late]) * (1 - dbar[late])) ** 2 * nkl * (1 - nkl)
                 * (dbar[k] - dbar[late]) / (1 - dbar[late]) * (1 - dbar[k]) / (1 - dbar[late]) / VD)
            records.append(("earlier_vs_later", k, late, est, w))
            # later cohort vs earlier k, after k started
            est = (mean(ybar[late], sl, T) - mean(ybar[late], sk, sl)) - (mean(ybar[k], sl, T) - mean(ybar[k], sk, sl))
            w = (((share[k] + share[late]) * dbar[k]) ** 2 * nkl * (1 - nkl)
                 * dbar[late] / dbar[k] * (dbar[k] - dbar[late]) / dbar[k] / VD)
            records.append(("later_vs_earlier", late, k, est, w))
    table = pd.DataFrame(records, columns=["comparison", "treated", "control", "estimate", "weight"])
    return BaconDecomposition(table=table, twfe=beta, n_obs=int(Y.size), n_units=N, n_treated=int((ft > 0).sum()))
