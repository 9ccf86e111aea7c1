"""Callaway and Sant'Anna (2021) group-time average treatment effects for staggered
pilot starts.

ATT(g, t) is the average effect in period t on the townships whose pilot started in
period g, identified by comparing their change since a base period with the change of
a comparison group: never-treated townships, or those not yet treated by t. Under
parallel trends (conditional on covariates when they are given) and no anticipation,
each ATT(g, t) is unbiased however effects vary across cohorts and over time, which
TWFE is not. Callaway B, Sant'Anna PHC (2021), J Econometrics 225:200-230; estimators
of each 2x2 from Sant'Anna and Zhao (2020), J Econometrics 219:101-122: unconditional,
outcome regression (``method="reg"``), doubly robust (``method="dr"``) or normalized
inverse probability weighting (``method="ipw"``: Abadie 2005, Rev Econ Stud 72:1-19, with
weights that sum to one in each group, as R did / DRDID's ``std_ipw_did_panel`` and
``std_ipw_did_rc``).

Propensity scores (``dr``, ``ipw``) are logits of pilot status on the covariates within
each 2x2. When they separate the groups (a covariate's range among the cohort's pilots
does not overlap the comparison units', or a fitted score reaches 0.999, R did's
``overlap_check_fail`` threshold) the comparison has no common support and an
:class:`evaluation.errors.EstimationError` names the cohort, the period and the
covariates (R did returns NA for such a cell).

Inference uses the influence functions: analytic standard errors, aggregations
(simple, by cohort, by event time, by calendar period) with the weights' own estimation
effect, a Wald pre-test of all pre-period ATT(g, t), and a multiplier bootstrap (Mammen
weights) for uniform confidence bands. The code follows the R package ``did`` (2.x)
so that its numbers can be reproduced; tests compare with ``csdid``.

Gaps (R did's ``allow_unbalanced_panel = TRUE``, the default here): rows without an
outcome are dropped; on a balanced panel the panel estimator runs unchanged, otherwise
each ATT(g, t) is the 2x2 of the observations present in its two periods, as repeated
cross-sections (Sant'Anna and Zhao 2020's estimators for them), with the influence
functions summed by unit, so standard errors stay clustered by unit (Callaway and
Sant'Anna 2021; R did 2.x; tests compare with csdid 0.4.3, which follows R did 2.5.1).
Assumption added: the gaps are unrelated to the potential outcomes given the unit and
period (missing at random), so the townships observed in a period stand for their
cohort. With ``allow_unbalanced_panel=False`` a gap raises
:class:`evaluation.errors.UnbalancedPanelError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.errors import EstimationError
from evaluation.estimators.fixed_effects import _require_balanced
from evaluation.results import Effect, Estimates, vcov_frame

METHOD_NAMES = {"unconditional": "unconditional", "reg": "outcome regression", "dr": "doubly robust",
                "ipw": "inverse probability weighting"}
OVERLAP_LIMIT = 0.999   # R did's overlap_check_fail: a fitted propensity score at or above it has no overlap
TRIM_LEVEL = 0.995      # DRDID: comparison units with a score above it get no weight


def _number(x) -> float:
    return float(x)


def _event_time(e) -> int | None:
    return int(round(float(e))) if float(e).is_integer() else None


class GroupTimeEffects(Estimates):
    """ATT(g, t) with their influence functions, ready to aggregate: an :class:`Estimates`
    whose effects are the ATT(g, t) (estimand ``att_group_time``, with ``cohort`` g,
    ``calendar_time`` t and ``event_time`` t - g), plus :meth:`aggregate` and :meth:`pretest`."""

    def __init__(self, *, table: pd.DataFrame, influence: np.ndarray, group_share: dict, unit_group: np.ndarray,
                 n_units: int, control_group: str, estimation: str, base_period: str, alpha: float,
                 seed: int | None, indicator: str | None = None, diagnostics: dict | None = None,
                 unit_ids=None):
        self.unit_ids = unit_ids           # the units of the influence functions' rows (None: not kept)
        self.table = table                 # group, time, base, att, se, post, n_treated, n_control
        self.influence = influence         # n_units x cells, scaled as in R did (sum of squares / n^2 = var)
        self.group_share = group_share     # P(G = g) among all units
        self.unit_group = unit_group       # each unit's cohort (0 = never)
        self.n_units = n_units
        self.control_group = control_group
        self.estimation = estimation       # unconditional | reg | dr | ipw
        self.base_period = base_period
        self.alpha = alpha
        self.seed = seed
        self.indicator = indicator
        diagnostics = dict(diagnostics or {})
        self.diagnostics = diagnostics
        effects = [self._effect("att_group_time", r.att, r.se, f"g={r.group},t={r.time}", r.n_treated,
                                {"post": bool(r.post)}, cohort=_number(r.group), calendar_time=_number(r.time),
                                event_time=_event_time(r.time - r.group))
                   for r in table.itertuples()]
        super().__init__(effects=effects, method=self._method_name(), plot_data=table.copy(),
                         diagnostics=diagnostics, kind="callaway_santanna_att_gt", vcov=None)

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the ATT(g, t) from the influence functions (computed when first
        asked for: cells^2 x units operations)."""
        if self._vcov is None:
            self._vcov = vcov_frame(self.influence.T @ self.influence / self.n_units**2, self.effects)
        return self._vcov

    @vcov.setter
    def vcov(self, value) -> None:
        self._vcov = value

    def _method_name(self) -> str:
        return (f"Callaway-Sant'Anna ({METHOD_NAMES[self.estimation]}, {self.control_group.replace('_', '-')} "
                f"comparison, {self.base_period} base period)")

    # ------------------------------------------------------------------ inference
    def _se(self, inf: np.ndarray) -> np.ndarray:
        return np.sqrt((inf**2).sum(axis=0)) / self.n_units

    def _effect(self, estimand, estimate, se, term, n_treated, extra=None, **fields) -> Effect:
        return Effect.from_normal(
            estimand, estimate, se, alpha=self.alpha, method=self._method_name(),
            inference="analytic influence-function standard errors, clustered by unit",
            n_obs=int(self.diagnostics.get("observations", self.n_units * self.diagnostics.get("periods", 1))), n_units=self.n_units,
            n_treated=int(n_treated), term=term, indicator=self.indicator, extra=extra or {}, **fields)


    def pretest(self, max_leads: int | None = None) -> dict:
        """Wald test that every pre-period ATT(g, t) is zero (R did's pre-test).

        ``max_leads`` keeps only cells at most that many periods before the start (with
        monthly data there are more pre-period cells than units, and their covariance
        is then singular: the test is not computed and ``reason`` says so).
        """
        tab = self.table
        pre_mask = (tab["time"] < tab["group"]).to_numpy() & (tab["se"] > 1e-12).to_numpy()
        if max_leads is not None:
            pre_mask &= (tab["group"] - tab["time"]).to_numpy() <= max_leads
        pre = np.flatnonzero(pre_mask)
        if not len(pre):
            return {"W": np.nan, "df": 0, "p_value": np.nan, "reason": "no pre-period cells"}
        n_treated = int((self.unit_group > 0).sum())
        if len(pre) >= n_treated:
            return {"W": np.nan, "df": len(pre), "p_value": np.nan,
                    "reason": f"{len(pre)} pre-period cells but only {n_treated} treated units: the joint test "
                              "is not reliable; pass a smaller max_leads or read the event-study plot"}
        att = tab["att"].to_numpy()[pre]
        V = self.influence[:, pre].T @ self.influence[:, pre] / self.n_units
        if np.linalg.matrix_rank(V) < len(pre):
            return {"W": np.nan, "df": len(pre), "p_value": np.nan,
                    "reason": f"singular covariance: {len(pre)} pre-period cells, {self.n_units} units; "
                              "pass max_leads to test fewer"}
        W = float(self.n_units * att @ np.linalg.solve(V, att))
        return {"W": W, "df": len(pre), "p_value": float(stats.chi2.sf(W, len(pre))), "reason": ""}

    def uniform_band(self, influence: np.ndarray, draws: int = 999) -> tuple[np.ndarray, float]:
        """Multiplier-bootstrap standard errors and the uniform critical value (did's mboot)."""
        rng = np.random.default_rng(self.seed)
        sqrt5 = np.sqrt(5.0)
        p = (sqrt5 + 1) / (2 * sqrt5)
        n = self.n_units
        out = np.empty((draws, influence.shape[1]))
        for b in range(draws):
            v = np.where(rng.random(n) < p, (1 - sqrt5) / 2, (1 + sqrt5) / 2)
            out[b] = v @ influence / n
        out *= np.sqrt(n)
        q75, q25 = np.quantile(out, 0.75, axis=0, method="inverted_cdf"), np.quantile(out, 0.25, axis=0,
                                                                                       method="inverted_cdf")
        sigma = (q75 - q25) / (stats.norm.ppf(0.75) - stats.norm.ppf(0.25))
        ok = sigma > np.sqrt(np.finfo(float).eps) * 10
        t_max = np.max(np.abs(out[:, ok] / sigma[ok]), axis=1)
        crit = float(np.quantile(t_max, 1 - self.alpha, method="inverted_cdf"))
        return sigma / np.sqrt(n), crit

    # ------------------------------------------------------------------ outputs
    def att_gt(self) -> Estimates:
        """Every ATT(g, t) as a plain :class:`Estimates` (the same effects), with the
        pre-test in ``diagnostics``."""
        return Estimates(effects=list(self.effects), method=self.method, plot_data=self.table.copy(),
                         diagnostics={**self.diagnostics, "pretest": self.pretest()}, kind=self.kind, vcov=self.vcov)

    def _wif(self, keepers: np.ndarray, pg_cell: np.ndarray, groups_cell: np.ndarray) -> np.ndarray:
        """Influence of estimating the aggregation weights (did's ``wif``)."""
        ind = self._cohort_indicator(groups_cell[keepers])                      # n x |keepers|
        pgk = pg_cell[keepers]
        s = pgk.sum()
        if1 = (ind - pgk) / s
        if2 = (ind - pgk).sum(axis=1, keepdims=True) @ (pgk / s**2)[None, :]
        return if1 - if2

    def _cohort_indicator(self, groups: np.ndarray) -> np.ndarray:
        """1[unit's cohort == g] for each g in ``groups`` (cached per cohort)."""
        cache = self.__dict__.setdefault("_indicator_cache", {})
        for g in set(groups.tolist()):
            if g not in cache:
                cache[g] = (self.unit_group == g).astype(float)
        return np.column_stack([cache[g] for g in groups.tolist()])

    def _aggregate_cells(self, keepers: np.ndarray, weights: np.ndarray, with_wif: bool):
        att = self.table["att"].to_numpy()
        w = weights[keepers] / weights[keepers].sum()
        estimate = float(att[keepers] @ w)
        inf = self.influence[:, keepers] @ w
        if with_wif:
            groups = self.table["group"].to_numpy()
            inf = inf + self._wif(keepers, weights, groups) @ att[keepers]
        return estimate, inf

    def aggregate(self, kind: Literal["simple", "group", "dynamic", "calendar"] = "simple", *,
                  event_window: tuple[int | None, int | None] | None = None, draws: int = 0) -> Estimates:
        """Aggregate ATT(g, t) as R did's ``aggte``.

        ``simple``: post-period cells weighted by cohort size (every pilot township-period
        counts once) -> estimand ``att``. ``group``: each cohort's average over its post
        periods (``att_cohort``, the cohort in the effect's ``cohort``), and their
        size-weighted average. ``dynamic``: by event time e = t - g (``att_event_time``,
        e in ``event_time``), and the average over e >= 0. ``calendar``: by period
        (``att_calendar``, t in ``calendar_time``), and their average.
        ``event_window=(first, last)`` keeps event times first <= e <= last (R did's
        ``min_e``, ``max_e``; either may be None); ``simple`` and ``group`` use only its
        last. ``draws`` > 0 adds a uniform band over the components (multiplier bootstrap
        with that many draws, the fit's seed). ``kind`` of the result:
        ``callaway_santanna_<kind>``.
        """
        min_e, max_e = (None, None) if event_window is None else event_window
        tab = self.table
        g, t = tab["group"].to_numpy(), tab["time"].to_numpy()
        pg = np.array([self.group_share[x] for x in g])
        e = t - g
        max_e = np.inf if max_e is None else max_e
        min_e = -np.inf if min_e is None else min_e
        parts: list[tuple[str, str, float, np.ndarray, int]] = []
        cohort_size = {k: int((self.unit_group == k).sum()) for k in self.group_share}
        if kind == "simple":
            keepers = np.flatnonzero((g <= t) & (e <= max_e))
            est, inf = self._aggregate_cells(keepers, pg, True)
            overall = ("att", "", est, inf, sum(cohort_size[x] for x in np.unique(g[keepers])), {})
        elif kind == "group":
            # cohorts with a post-period cell (on an unbalanced panel a cohort's cells can all lack data)
            glist = [gg for gg in sorted(self.group_share) if ((g == gg) & (g <= t) & (e <= max_e)).any()]
            ests, infs = [], []
            for gg in glist:
                keepers = np.flatnonzero((g == gg) & (g <= t) & (e <= max_e))
                est, inf = self._aggregate_cells(keepers, pg, False)
                parts.append(("att_cohort", f"g={gg}", est, inf, cohort_size[gg], {"cohort": _number(gg)}))
                ests.append(est)
                infs.append(inf)
            pgl = np.array([self.group_share[gg] for gg in glist])
            est = float(np.array(ests) @ (pgl / pgl.sum()))
            inf = np.column_stack(infs) @ (pgl / pgl.sum())
            wif = self._wif(np.arange(len(glist)), pgl, np.array(glist))
            inf = inf + wif @ np.array(ests)
            overall = ("att", "cohort-weighted", est, inf, sum(cohort_size.values()), {})
        elif kind == "dynamic":
            ests, infs, evals = [], [], []
            for ee in sorted(np.unique(e)):
                if not (min_e <= ee <= max_e):
                    continue
                keepers = np.flatnonzero(e == ee)
                est, inf = self._aggregate_cells(keepers, pg, True)
                parts.append(("att_event_time", f"e={ee}", est, inf,
                              sum(cohort_size[x] for x in np.unique(g[keepers])), {"event_time": _event_time(ee)}))
                ests.append(est)
                infs.append(inf)
                evals.append(ee)
            post = [i for i, ee in enumerate(evals) if ee >= 0]
            est = float(np.mean([ests[i] for i in post]))
            inf = np.column_stack([infs[i] for i in post]).mean(axis=1)
            overall = ("att", "event-time average", est, inf, sum(cohort_size.values()), {})
        elif kind == "calendar":
            ests, infs = [], []
            for tt in sorted(np.unique(t[t >= min(self.group_share)])):
                keepers = np.flatnonzero((t == tt) & (g <= tt))
                if not len(keepers):
                    continue
                est, inf = self._aggregate_cells(keepers, pg, True)
                parts.append(("att_calendar", f"t={tt}", est, inf,
                              sum(cohort_size[x] for x in np.unique(g[keepers])), {"calendar_time": _number(tt)}))
                ests.append(est)
                infs.append(inf)
            est = float(np.mean(ests))
            inf = np.column_stack(infs).mean(axis=1)
            overall = ("att", "calendar average", est, inf, sum(cohort_size.values()), {})
        else:
            raise EstimationError(f"kind must be simple, group, dynamic or calendar, got {kind!r}")

        all_parts = parts + [overall]
        infl = np.column_stack([p[3] for p in all_parts])
        se = self._se(infl)
        effects = [self._effect(p[0], p[2], s, p[1], p[4], **p[5]) for p, s in zip(all_parts, se, strict=True)]
        diagnostics = {**self.diagnostics, "aggregation": kind, "base_period": self.base_period,
                       # covariance of the parts (cohorts, event times, periods) for sensitivity analysis
                       "vcov": infl[:, :len(parts)].T @ infl[:, :len(parts)] / self.n_units**2}
        plot = pd.DataFrame({"term": [p[1] for p in parts], "estimate": [p[2] for p in parts],
                             "std_error": se[:len(parts)]})
        for key in ("cohort", "event_time", "calendar_time"):
            if parts and key in parts[0][5]:
                plot[key] = [p[5][key] for p in parts]
        if parts:
            plot["ci_low"] = [ef.ci_low for ef in effects[:len(parts)]]
            plot["ci_high"] = [ef.ci_high for ef in effects[:len(parts)]]
        if draws and parts:
            boot_se, crit = self.uniform_band(infl[:, :len(parts)], draws)
            plot["band_low"] = plot["estimate"] - crit * boot_se
            plot["band_high"] = plot["estimate"] + crit * boot_se
            diagnostics["uniform_critical_value"] = crit
        result = Estimates(effects=effects, method=effects[0].method, plot_data=plot, diagnostics=diagnostics,
                           kind=f"callaway_santanna_{kind}", vcov=vcov_frame(infl.T @ infl / self.n_units**2, effects))
        # each effect's influence function by unit (var = sum of squares / n^2): joint
        # multiplier-bootstrap draws across indicators (evaluation.inference.multiple)
        result.influence = pd.DataFrame(infl, index=pd.Index(self.unit_ids, name="unit") if self.unit_ids is not None
                                        else None, columns=[e.label for e in effects])
        return result


def callaway_santanna(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                      control_group: Literal["never_treated", "not_yet_treated"] = "never_treated",
                      covariates: Sequence[str] = (), method: Literal["dr", "reg", "ipw"] = "dr",
                      base_period: Literal["varying", "universal"] = "varying", anticipation: int = 0,
                      allow_unbalanced_panel: bool = True, alpha: float = 0.05, seed: int | None = None,
                      indicator: str | None = None) -> GroupTimeEffects:
    """Estimate every ATT(g, t) (Callaway and Sant'Anna 2021; the module docstring gives
    the assumptions); aggregate with :meth:`GroupTimeEffects.aggregate`.

    ``cohort``: the first treated period on the ``time`` scale, 0 or missing for
    never-treated units. Units treated in the first period have no pre-period and are
    left out (reported in ``diagnostics``). ``covariates`` are taken at the base period
    of each comparison; without covariates all methods coincide. ``method``: ``"reg"``
    (outcome regression, Heckman, Ichimura and Todd 1997), ``"ipw"`` (normalized inverse
    probability weighting, Abadie 2005: comparison units weighted by p(X) / (1 - p(X)),
    valid when the propensity score is correctly specified) or ``"dr"`` (doubly robust,
    Sant'Anna and Zhao 2020: valid when either model is). A covariate missing in a row
    that has the outcome, or constant over the units used, is an
    :class:`evaluation.errors.EstimationError` naming it; so is a propensity score without
    overlap (``dr``, ``ipw``; see the module docstring).

    Gaps: rows whose outcome is missing are dropped (counted in
    ``diagnostics["dropped_missing_rows"]``). When what is left is a balanced panel the
    panel estimator runs. Otherwise, with ``allow_unbalanced_panel`` (the default), each
    ATT(g, t) is the 2x2 DiD of the observations present in its two periods, treating
    the panel as repeated cross-sections with the unit as cluster: the influence
    functions of the rows are summed by unit (R ``did``'s ``allow_unbalanced_panel =
    TRUE``; Callaway and Sant'Anna 2021, sec. 4 and their R package). This assumes the
    gaps are unrelated to the potential outcomes given the unit and period (missing at
    random, e.g. a township's export lacking three months for clerical reasons), so that
    the units observed in a period are comparable to those that are not. Covariates
    then enter at each row's own period (as R ``did``; Sant'Anna and Zhao 2020, sec. 3
    for repeated cross-sections). Cells without treated or comparison observations in
    either period are left out (``diagnostics["cells_without_data"]``). With
    ``allow_unbalanced_panel=False`` an incomplete panel raises
    :class:`evaluation.errors.UnbalancedPanelError` naming the incomplete units.
    """
    if control_group not in ("never_treated", "not_yet_treated"):
        raise EstimationError(f"control_group must be 'never_treated' or 'not_yet_treated', got {control_group!r}")
    if base_period not in ("varying", "universal"):
        raise EstimationError(f"base_period must be 'varying' or 'universal', got {base_period!r}")
    if method not in ("dr", "reg", "ipw"):
        raise EstimationError(f"method must be 'dr', 'reg' or 'ipw', got {method!r}")
    needed = list(dict.fromkeys([unit, time, outcome, cohort, *covariates]))
    missing = [c for c in needed if c not in data.columns]
    if missing:
        raise EstimationError(f"columns not in the data: {missing}")
    d = data[needed].copy()
    if d[outcome].isna().all():
        raise EstimationError(f"the outcome '{outcome}' is missing in every row")
    if d.duplicated([unit, time]).any():
        raise EstimationError("the panel is not balanced (some unit has a period twice)")
    _check_covariates(d[d[outcome].notna()], covariates, unit=unit)
    complete = d[[outcome, *covariates]].notna().all(axis=1).to_numpy()
    full_periods = d[time].nunique()
    if not allow_unbalanced_panel and (not complete.all() or len(d) != d[unit].nunique() * full_periods):
        _require_balanced(d.assign(_complete=np.where(complete, 0.0, np.nan)), outcome="_complete", unit=unit,
                          time=time, method="callaway_santanna (allow_unbalanced_panel=False)")
    dropped_rows = int((~complete).sum())
    d = d[complete]
    periods = np.sort(d[time].unique())
    if len(periods) < 2:
        raise EstimationError(f"a single period ('{time}' takes one value)")
    u_codes, units = pd.factorize(d[unit], sort=True)
    t_codes = np.searchsorted(periods, d[time].to_numpy())
    balanced = len(d) == len(units) * len(periods)
    first = d[cohort].fillna(0).to_numpy(float)
    ft = np.zeros(len(units))
    ft[u_codes] = first
    if not np.array_equal(first, ft[u_codes]):
        raise EstimationError(f"'{cohort}' varies within a unit")
    always = (ft > 0) & (ft <= periods[0] + anticipation)
    keep = ~always
    ft_all = ft
    ft = ft_all[keep]
    n = len(ft)
    # cohorts on the time column's own type (2004, not 2004.0)
    glist = sorted(periods.dtype.type(x) if float(x).is_integer() else x for x in np.unique(ft) if x > 0)
    if not glist:
        raise EstimationError("no treated units with a pre-period")
    if control_group == "never_treated" and not (ft == 0).any():
        raise EstimationError("no comparison units: no unit is never treated (use control_group='not_yet_treated')")
    t_range = range(1, len(periods)) if base_period == "varying" else range(len(periods))
    cells = []  # (g, ti, b, pre, ctrl unit mask)
    for g in glist:
        # the last period before g (anticipation shifts it earlier)
        g_base = max(i for i, p in enumerate(periods) if p + anticipation < g)
        for ti in t_range:
            tp = periods[ti]
            pre = tp + anticipation < g
            b = ti - 1 if (base_period == "varying" and pre) else g_base
            if b == ti:
                continue
            if control_group == "never_treated":
                ctrl = ft == 0
            else:
                ctrl = ((ft == 0) | (ft > max(tp, periods[b]) + anticipation)) & (ft != g)
            if ctrl.any():
                cells.append((g, ti, b, pre, ctrl))
    if balanced:
        rows, influence = _cells_panel(d, cells, u_codes, t_codes, keep, ft, periods, outcome, covariates, method,
                                       control_group)
        skipped = []
    else:
        rows, influence, skipped = _cells_unbalanced(d, cells, u_codes, t_codes, keep, ft, periods, outcome,
                                                     covariates, method)
    if not rows:
        raise EstimationError("no group-time effect could be estimated (no comparison units in any period)")
    influence = influence[:, : len(rows)]
    table = pd.DataFrame(rows)
    table["se"] = np.sqrt((influence**2).sum(axis=0)) / n
    share = {g: float((ft == g).mean()) for g in glist}
    diagnostics = {"periods": len(periods), "units": n, "left_out_treated_in_first_period": int(always.sum()),
                   "observations": int(keep[u_codes].sum()), "panel": "balanced" if balanced else "unbalanced",
                   "dropped_missing_rows": dropped_rows}
    if not balanced:
        diagnostics["cells_without_data"] = skipped
    return GroupTimeEffects(table=table, influence=influence, group_share=share, unit_group=ft, n_units=n,
                            control_group=control_group, estimation=method if covariates else "unconditional",
                            base_period=base_period, alpha=alpha, seed=seed, indicator=indicator,
                            diagnostics=diagnostics, unit_ids=np.asarray(units)[keep])


def _cells_panel(d, cells, u_codes, t_codes, keep, ft, periods, outcome, covariates, method, control_group):
    """Every ATT(g, t) of a balanced panel (unit x period arrays, the panel 2x2)."""
    n_all = keep.size

    def to_wide(column: str) -> np.ndarray:
        out = np.empty((n_all, len(periods)))
        out[u_codes, t_codes] = d[column].to_numpy(float)
        return out[keep]

    Y = to_wide(outcome)
    Xcov = {c: to_wide(c) for c in covariates}
    n = len(ft)
    rows = []
    influence = np.zeros((n, len(cells)), order="F")  # column writes stay contiguous
    never_idx = np.flatnonzero(ft == 0)
    Y_never = Y[never_idx]
    Y_by_group = {g: Y[ft == g] for g in {c[0] for c in cells}}
    for g, ti, b, pre, ctrl in cells:
        tp = periods[ti]
        treat_idx = np.flatnonzero(ft == g)
        ctrl_idx = never_idx if control_group == "never_treated" else np.flatnonzero(ctrl)
        n_sub = len(treat_idx) + len(ctrl_idx)
        if not covariates:  # unconditional: the two groups' mean changes, no gather of both
            dy_t = Y_by_group[g][:, ti] - Y_by_group[g][:, b]
            Yc = Y_never if control_group == "never_treated" else Y[ctrl_idx]
            dy_c = Yc[:, ti] - Yc[:, b]
            mu1, mu0 = dy_t.mean(), dy_c.mean()
            col = len(rows)
            influence[treat_idx, col] = (dy_t - mu1) * (n_sub / len(treat_idx)) * n / n_sub
            influence[ctrl_idx, col] = -(dy_c - mu0) * (n_sub / len(ctrl_idx)) * n / n_sub
            rows.append({"group": g, "time": tp, "base": periods[b], "att": float(mu1 - mu0), "post": not pre,
                         "n_treated": len(treat_idx), "n_control": len(ctrl_idx)})
            continue
        sub = np.concatenate([treat_idx, ctrl_idx])
        dy = Y[sub, ti] - Y[sub, b]
        D = np.zeros(len(sub))
        D[: len(treat_idx)] = 1.0
        cov = np.column_stack([np.ones(len(sub))] + [Xcov[c][sub, b] for c in covariates])
        att, inf_sub = _two_by_two(dy, D, cov, method, where=_where(g, tp, periods[b]), names=covariates)
        influence[sub, len(rows)] = inf_sub * n / len(sub)
        rows.append({"group": g, "time": tp, "base": periods[b], "att": att, "post": not pre,
                     "n_treated": len(treat_idx), "n_control": len(ctrl_idx)})
    return rows, influence


def _cells_unbalanced(d, cells, u_codes, t_codes, keep, ft, periods, outcome, covariates, method):
    """Every ATT(g, t) of an unbalanced panel, as R did with ``allow_unbalanced_panel``:
    the 2x2 of the rows present in the two periods (repeated cross-sections; Sant'Anna
    and Zhao 2020's estimators for them), row influence functions scaled by n / n1 (n
    units, n1 rows in the 2x2) and summed by unit."""
    kept_code = np.cumsum(keep) - 1                       # unit code -> position among kept units
    in_sample = keep[u_codes]
    ru = kept_code[u_codes[in_sample]]
    rt = t_codes[in_sample]
    ry = d[outcome].to_numpy(float)[in_sample]
    RX = (np.column_stack([np.ones(len(ry))] + [d[c].to_numpy(float)[in_sample] for c in covariates])
          if covariates else None)
    rft = ft[ru]
    n = len(ft)
    rows_at = [np.flatnonzero(rt == ti) for ti in range(len(periods))]
    rows, skipped = [], []
    influence = np.zeros((n, len(cells)), order="F")
    for g, ti, b, pre, ctrl in cells:
        tp = periods[ti]
        idx = np.concatenate([rows_at[ti], rows_at[b]])
        treated = rft[idx] == g
        control = ctrl[ru[idx]]
        idx, treated = idx[treated | control], treated[treated | control]
        post = rt[idx] == ti
        if not ((treated & post).any() and (treated & ~post).any() and (~treated & post).any()
                and (~treated & ~post).any()):
            skipped.append({"group": g.item() if hasattr(g, "item") else g, "time": tp.item() if hasattr(tp, "item") else tp})
            continue
        y = ry[idx]
        D = treated.astype(float)
        P = post.astype(float)
        n1 = len(idx)
        att, inf_rows = _two_by_two_rc(y, D, P, None if RX is None else RX[idx], method,
                                       where=_where(g, tp, periods[b]), names=covariates)
        influence[:, len(rows)] = np.bincount(ru[idx], weights=inf_rows * n / n1, minlength=n)
        rows.append({"group": g, "time": tp, "base": periods[b], "att": att, "post": not pre,
                     "n_treated": int(len(np.unique(ru[idx][treated]))),
                     "n_control": int(len(np.unique(ru[idx][~treated])))})
    return rows, influence, skipped


def _two_by_two_rc(y: np.ndarray, D: np.ndarray, post: np.ndarray, X: np.ndarray | None,
                   method: str, where: str = "", names: Sequence[str] = ()) -> tuple[float, np.ndarray]:
    """ATT of one 2x2 comparison from repeated cross-sections (the rows of both periods)
    and its influence function per row, scaled so that its variance is mean(IF^2) / n1
    (Sant'Anna and Zhao 2020; without covariates the difference of the four cell means)."""
    if X is None:
        inf = np.zeros(len(y))
        att = 0.0
        n1 = len(y)
        for cell, sign in ((D * post, 1.0), (D * (1 - post), -1.0), ((1 - D) * post, -1.0),
                           ((1 - D) * (1 - post), 1.0)):
            m = cell.astype(bool)
            mean = y[m].mean()
            att += sign * mean
            inf[m] = sign * (y[m] - mean) * n1 / m.sum()
        return float(att), inf
    if method == "reg":
        return _reg_did_rc(y, D, post, X)
    ps = _propensity(X, D, where, names)
    return _ipw_did_rc(y, D, post, X, ps) if method == "ipw" else _dr_did_rc(y, D, post, X, ps)


def _ols_rc(y: np.ndarray, X: np.ndarray, mask: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Fitted values of OLS of y on X within ``mask``, and its asymptotic linear
    representation over all rows (DRDID's ``asy.lin.rep.ols``)."""
    n = len(y)
    Xm = X[mask]
    XtX = Xm.T @ Xm
    if np.linalg.matrix_rank(XtX) < X.shape[1]:
        raise EstimationError(f"covariates are collinear among the {label} observations of a 2x2 comparison")
    fitted = X @ np.linalg.solve(XtX, Xm.T @ y[mask])
    w = mask.astype(float)
    alr = (w * (y - fitted))[:, None] * X @ np.linalg.inv((X * w[:, None]).T @ X / n)
    return fitted, alr


def _reg_did_rc(y, D, post, X) -> tuple[float, np.ndarray]:
    """Outcome-regression DiD for repeated cross-sections (Heckman, Ichimura and Todd
    1997; as R DRDID's ``reg_did_rc`` with unit weights)."""
    out_pre, alr_pre = _ols_rc(y, X, (D == 0) & (post == 0), "comparison base-period")
    out_post, alr_post = _ols_rc(y, X, (D == 0) & (post == 1), "comparison")
    w_pre, w_post, w_d = D * (1 - post), D * post, D
    eta_pre = (w_pre * y).mean() / w_pre.mean()
    eta_post = (w_post * y).mean() / w_post.mean()
    cont = w_d * (out_post - out_pre)
    eta_cont = cont.mean() / w_d.mean()
    inf_pre = (w_pre * y - w_pre * eta_pre) / w_pre.mean()
    inf_post = (w_post * y - w_post * eta_post) / w_post.mean()
    moment = (w_d[:, None] * X).mean(axis=0)
    inf_cont = (cont - w_d * eta_cont + alr_post @ moment - alr_pre @ moment) / w_d.mean()
    return float(eta_post - eta_pre - eta_cont), inf_post - inf_pre - inf_cont


def _ipw_did_rc(y, D, post, X, ps, trim_level: float = TRIM_LEVEL) -> tuple[float, np.ndarray]:
    """Normalized (Hajek) inverse-probability-weighted DiD for repeated cross-sections
    (Abadie 2005; Sant'Anna and Zhao 2020, eq. 2.4 and its influence function; as R
    DRDID's ``std_ipw_did_rc`` with unit weights: logit score ``ps`` fitted on all rows,
    comparison rows with a score above ``trim_level`` get no weight)."""
    n = len(y)
    ps = np.minimum(ps, 1 - 1e-6)
    trim = np.where(D == 0, ps < trim_level, True).astype(float)
    odds = ps / (1 - ps)
    w = {"t_pre": trim * D * (1 - post), "t_post": trim * D * post,
         "c_pre": trim * odds * (1 - D) * (1 - post), "c_post": trim * odds * (1 - D) * post}
    eta = {k: v * y / v.mean() for k, v in w.items()}
    a = {k: v.mean() for k, v in eta.items()}
    att = (a["t_post"] - a["t_pre"]) - (a["c_post"] - a["c_pre"])
    inf = {k: eta[k] - w[k] * a[k] / w[k].mean() for k in w}
    W = ps * (1 - ps)
    alr_ps = ((D - ps)[:, None] * X) @ (np.linalg.inv((X * W[:, None]).T @ X) * n)
    M2 = {k: ((w[k] * (y - a[k]))[:, None] * X).mean(axis=0) / w[k].mean() for k in ("c_pre", "c_post")}
    inf_cont = inf["c_post"] - inf["c_pre"] + alr_ps @ (M2["c_post"] - M2["c_pre"])
    return float(att), inf["t_post"] - inf["t_pre"] - inf_cont


def _dr_did_rc(y, D, post, X, ps, trim_level: float = TRIM_LEVEL) -> tuple[float, np.ndarray]:
    """Locally efficient doubly robust DiD for repeated cross-sections (Sant'Anna and Zhao
    2020, eq. 3.4 and its influence function; as R DRDID's ``drdid_rc`` with unit
    weights: logit propensity score, comparison units with a score above ``trim_level``
    trimmed)."""
    n = len(y)
    ps = np.minimum(ps, 1 - 1e-6)
    trim = np.where(D == 0, ps < trim_level, True).astype(float)
    out_c_pre, alr_c_pre = _ols_rc(y, X, (D == 0) & (post == 0), "comparison base-period")
    out_c_post, alr_c_post = _ols_rc(y, X, (D == 0) & (post == 1), "comparison")
    out_t_pre, alr_t_pre = _ols_rc(y, X, (D == 1) & (post == 0), "treated base-period")
    out_t_post, alr_t_post = _ols_rc(y, X, (D == 1) & (post == 1), "treated")
    out_c = post * out_c_post + (1 - post) * out_c_pre
    odds = ps / (1 - ps)
    w_t_pre, w_t_post = trim * D * (1 - post), trim * D * post
    w_c_pre, w_c_post = trim * odds * (1 - D) * (1 - post), trim * odds * (1 - D) * post
    w_d, w_dt1, w_dt0 = trim * D, trim * D * post, trim * D * (1 - post)

    def eta(w, v):
        return w * v / w.mean()

    e_t_pre, e_t_post = eta(w_t_pre, y - out_c), eta(w_t_post, y - out_c)
    e_c_pre, e_c_post = eta(w_c_pre, y - out_c), eta(w_c_post, y - out_c)
    e_d_post, e_dt1_post = eta(w_d, out_t_post - out_c_post), eta(w_dt1, out_t_post - out_c_post)
    e_d_pre, e_dt0_pre = eta(w_d, out_t_pre - out_c_pre), eta(w_dt0, out_t_pre - out_c_pre)
    a = {k: v.mean() for k, v in (("t_pre", e_t_pre), ("t_post", e_t_post), ("c_pre", e_c_pre),
                                  ("c_post", e_c_post), ("d_post", e_d_post), ("dt1_post", e_dt1_post),
                                  ("d_pre", e_d_pre), ("dt0_pre", e_dt0_pre))}
    att = ((a["t_post"] - a["t_pre"]) - (a["c_post"] - a["c_pre"]) + (a["d_post"] - a["dt1_post"])
           - (a["d_pre"] - a["dt0_pre"]))
    W = ps * (1 - ps)
    alr_ps = ((D - ps)[:, None] * X) @ (np.linalg.inv((X * W[:, None]).T @ X) * n)

    def centred(e, w, key):
        return e - w * a[key] / w.mean()

    def mean_x(v):
        return (v[:, None] * X).mean(axis=0)

    inf_treat = (centred(e_t_post, w_t_post, "t_post") - centred(e_t_pre, w_t_pre, "t_pre")
                 + alr_c_post @ (-mean_x(w_t_post * post) / w_t_post.mean())
                 - alr_c_pre @ (-mean_x(w_t_pre * (1 - post)) / w_t_pre.mean()))
    M2_pre = mean_x(w_c_pre * (y - out_c - a["c_pre"])) / w_c_pre.mean()
    M2_post = mean_x(w_c_post * (y - out_c - a["c_post"])) / w_c_post.mean()
    inf_cont = (centred(e_c_post, w_c_post, "c_post") - centred(e_c_pre, w_c_pre, "c_pre")
                + alr_ps @ (M2_post - M2_pre)
                + alr_c_post @ (-mean_x(w_c_post * post) / w_c_post.mean())
                - alr_c_pre @ (-mean_x(w_c_pre * (1 - post)) / w_c_pre.mean()))
    inf_eff = ((centred(e_d_post, w_d, "d_post") - centred(e_dt1_post, w_dt1, "dt1_post"))
               - (centred(e_d_pre, w_d, "d_pre") - centred(e_dt0_pre, w_dt0, "dt0_pre")))
    mom_post = mean_x(w_d / w_d.mean() - w_dt1 / w_dt1.mean())
    mom_pre = mean_x(w_d / w_d.mean() - w_dt0 / w_dt0.mean())
    inf_or = (alr_t_post - alr_c_post) @ mom_post - (alr_t_pre - alr_c_pre) @ mom_pre
    return float(att), inf_treat - inf_cont + inf_eff + inf_or


def _two_by_two(dy: np.ndarray, D: np.ndarray, X: np.ndarray | None, method: str, where: str = "",
                names: Sequence[str] = ()) -> tuple[float, np.ndarray]:
    """ATT of one 2x2 panel comparison and its influence function (Sant'Anna and Zhao 2020,
    as DRDID's ``reg_did_panel``, ``std_ipw_did_panel`` and ``drdid_panel`` with unit
    weights)."""
    n = len(dy)
    if X is None:
        p1 = D.mean()
        p0 = 1 - p1
        mu1, mu0 = dy[D == 1].mean(), dy[D == 0].mean()
        inf = D / p1 * (dy - mu1) - (1 - D) / p0 * (dy - mu0)
        return float(mu1 - mu0), inf
    if method == "ipw":
        return _ipw_did_panel(dy, D, X, _propensity(X, D, where, names))
    ctrl = D == 0
    XtX = X[ctrl].T @ X[ctrl]
    if np.linalg.matrix_rank(XtX) < X.shape[1]:
        raise EstimationError(f"covariates {list(names)} are collinear among the comparison units of {where}")
    beta = np.linalg.solve(XtX, X[ctrl].T @ dy[ctrl])
    out_delta = X @ beta
    w_ols = 1 - D
    XpX_inv = np.linalg.inv((X * w_ols[:, None]).T @ X / n)
    asy_ols = (w_ols * (dy - out_delta))[:, None] * X @ XpX_inv
    if method == "reg":
        w_treat = D
        w_cont = D
        att_treat = w_treat * dy
        att_cont = w_cont * out_delta
        eta_t, eta_c = att_treat.mean() / w_treat.mean(), att_cont.mean() / w_cont.mean()
        inf_treat = (att_treat - w_treat * eta_t) / w_treat.mean()
        M1 = (w_cont[:, None] * X).mean(axis=0)
        inf_cont = (att_cont - w_cont * eta_c + asy_ols @ M1) / w_cont.mean()
        return float(eta_t - eta_c), inf_treat - inf_cont
    # doubly robust: logit propensity score by Newton-Raphson
    ps = np.minimum(_propensity(X, D, where, names), 1 - 1e-6)
    w_treat = D
    w_cont = ps * (1 - D) / (1 - ps)
    resid = dy - out_delta
    att_treat, att_cont = w_treat * resid, w_cont * resid
    eta_t, eta_c = att_treat.mean() / w_treat.mean(), att_cont.mean() / w_cont.mean()
    W = ps * (1 - ps)
    hessian = np.linalg.inv((X * W[:, None]).T @ X) * n
    asy_ps = ((D - ps)[:, None] * X) @ hessian
    inf_treat = (att_treat - w_treat * eta_t - asy_ols @ (w_treat[:, None] * X).mean(axis=0)) / w_treat.mean()
    M2 = (w_cont * (resid - eta_c))[:, None] * X
    inf_cont = (att_cont - w_cont * eta_c + asy_ps @ M2.mean(axis=0)
                - asy_ols @ (w_cont[:, None] * X).mean(axis=0)) / w_cont.mean()
    return float(eta_t - eta_c), inf_treat - inf_cont


def _ipw_did_panel(dy: np.ndarray, D: np.ndarray, X: np.ndarray, ps: np.ndarray,
                   trim_level: float = TRIM_LEVEL) -> tuple[float, np.ndarray]:
    """Normalized (Hajek) inverse-probability-weighted DiD for a panel (Abadie 2005;
    Sant'Anna and Zhao 2020, eq. 2.4 and its influence function with the estimation
    effect of the logit score; as R DRDID's ``std_ipw_did_panel`` with unit weights:
    comparison units with a score above ``trim_level`` get no weight)."""
    n = len(dy)
    ps = np.minimum(ps, 1 - 1e-6)
    trim = np.where(D == 0, ps < trim_level, True).astype(float)
    w_treat = trim * D
    w_cont = trim * ps * (1 - D) / (1 - ps)
    att_treat, att_cont = w_treat * dy, w_cont * dy
    eta_t, eta_c = att_treat.mean() / w_treat.mean(), att_cont.mean() / w_cont.mean()
    W = ps * (1 - ps)
    asy_ps = ((D - ps)[:, None] * X) @ (np.linalg.inv((X * W[:, None]).T @ X) * n)
    inf_treat = (att_treat - w_treat * eta_t) / w_treat.mean()
    M2 = ((w_cont * (dy - eta_c))[:, None] * X).mean(axis=0)
    inf_cont = (att_cont - w_cont * eta_c + asy_ps @ M2) / w_cont.mean()
    return float(eta_t - eta_c), inf_treat - inf_cont


def _where(g, t, base) -> str:
    return f"cohort {_plain(g)}, period {_plain(t)} against base period {_plain(base)}"


def _plain(x):
    return x.item() if hasattr(x, "item") else x


def _check_covariates(d: pd.DataFrame, covariates: Sequence[str], *, unit: str,
                     time_invariant: bool = False, absorbed_by: Sequence[str] = ()) -> None:
    """Raise :class:`EstimationError` naming the covariate (and a unit) when a covariate
    is not numeric, is missing in a row of ``d``, is constant over ``d`` (no variation
    among the units used), with ``time_invariant`` varies within a unit, or is constant
    within every level of one of the ``absorbed_by`` columns (then collinear with those
    fixed effects: a township characteristic under township effects)."""
    for c in covariates:
        if c not in d.columns:
            raise EstimationError(f"covariate '{c}' is not a column of the data")
        col = d[c]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            raise EstimationError(f"covariate '{c}' is not numeric (dtype {col.dtype}): code it as numbers "
                                  "(a binary characteristic as 0/1)")
        if col.isna().any():
            first = d.loc[col.isna(), unit].iloc[0]
            raise EstimationError(f"covariate '{c}' is missing for {unit} {_plain(first)!r} "
                                  f"({int(col.isna().sum())} rows with an outcome lack it)")
        values = col.to_numpy(float)
        if len(values) and np.ptp(values) == 0:
            raise EstimationError(f"covariate '{c}' is constant ({values[0]:g}) over the units used: "
                                  "it cannot adjust for anything; drop it")
        if time_invariant:
            by_unit = col.astype(float).groupby(d[unit])
            spread = by_unit.max() - by_unit.min()
            if (spread > 0).any():
                raise EstimationError(f"covariate '{c}' varies within {unit} {_plain(spread.index[spread > 0][0])!r}, "
                                      "but a time-invariant characteristic is needed here")
        for fe in absorbed_by:
            by_level = col.astype(float).groupby(d[fe])
            if ((by_level.max() - by_level.min()) == 0).all():
                kind = "time-invariant" if fe == unit else f"constant within each '{fe}'"
                raise EstimationError(
                    f"covariate '{c}' is {kind}: it is collinear with the '{fe}' fixed effects and has no "
                    "coefficient; drop it from the controls (a township characteristic is absorbed by the "
                    "township effects: use it for subgroups or in callaway_santanna(covariates=...))")


def _propensity(X: np.ndarray, D: np.ndarray, where: str, names: Sequence[str]) -> np.ndarray:
    """Fitted logit propensity score of D on X (X's first column the constant), or an
    :class:`EstimationError` when the groups are separated (no common support)."""
    separating = [nm for j, nm in enumerate(names, start=1)
                  if X[D == 1, j].min() > X[D == 0, j].max() or X[D == 1, j].max() < X[D == 0, j].min()]
    ps = None
    if not separating:
        try:
            ps = _logit(X, D)
        except (np.linalg.LinAlgError, FloatingPointError):
            ps = None
    if ps is None or not np.isfinite(ps).all() or ps.max() >= OVERLAP_LIMIT:
        culprit = separating or list(names)
        if separating:
            detail = ("perfect separation: the pilots' range of " + ", ".join(f"'{c}'" for c in culprit)
                      + " does not overlap the comparison units'")
        elif ps is None or not np.isfinite(ps).all():
            detail = f"the logit on covariates {culprit} does not converge (quasi-complete separation)"
        else:
            detail = f"a fitted score reaches {OVERLAP_LIMIT} (largest {ps.max():.5f}) on covariates {culprit}"
        raise EstimationError(f"no overlap in the propensity score of {where}: {detail}. Use method='reg', fewer "
                              "covariates, or a comparison group with common support")
    return ps


def _logit(X: np.ndarray, D: np.ndarray, tol: float = 1e-12, max_iter: int = 100) -> np.ndarray:
    """Logit fitted values by Newton-Raphson; raises LinAlgError when it does not converge."""
    beta = np.zeros(X.shape[1])
    with np.errstate(over="ignore"):
        for _ in range(max_iter):
            p = 1 / (1 + np.exp(-(X @ beta)))
            grad = X.T @ (D - p)
            hess = (X * (p * (1 - p))[:, None]).T @ X
            step = np.linalg.solve(hess, grad)
            beta += step
            if np.max(np.abs(step)) < tol:
                break
        else:
            if not np.max(np.abs(step)) < 1e-6:
                raise np.linalg.LinAlgError("the logit did not converge")
        return 1 / (1 + np.exp(-(X @ beta)))
