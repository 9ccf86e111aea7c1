"""Inference that stays honest with few pilot townships.

Randomization inference (Fisher 1935; for DiD with few treated clusters, MacKinnon and
Webb 2020, J Econometrics 218:435-450): pilot status is re-assigned at random among the
townships, keeping the cohorts' start months (and, optionally, within counties), the
TWFE coefficient is recomputed for each assignment, and the p-value is the share of
assignments whose coefficient is at least as far from zero as the observed one. Valid in
finite samples under the sharp null of no effect for anyone, however few the pilots,
provided the townships are exchangeable: when pilot townships are much noisier than the
others (e.g. far smaller populations) it over-rejects too (Ferman and Pinto 2019, Rev Econ
Stat 101:452-467). The confidence interval inverts the test of a constant effect tau0
(y - tau0 D under the null).

Speed: on a balanced panel the two-way demeaned outcome is computed once. Because
permutations keep the cohorts' sizes, the period means of the treatment and the
denominator of the coefficient do not change, so each assignment's coefficient is a sum
over the pilots of a pre-computed (unit, cohort) table: thousands of draws cost
milliseconds, with no refit. On an unbalanced panel (absent rows, or rows without an
outcome, which are dropped) the denominator changes with the assignment, but by
Frisch-Waugh every piece of the coefficient is still a small (unit, start) table of the
township-demeaned data and the period effects' (T-1) x (T-1) inverse, so the draws stay
exact and cheap (:class:`_Projection`; tests compare every permuted coefficient with a
TWFE refit). The gaps are taken as fixed (missing at random given unit and period, and
not caused by the pilot), so the randomization distribution is over pilot assignments
to the same observed rows.

Every function here uses the rows present: randomization inference, placebo in space,
CR2 and the wild cluster bootstrap all work on unbalanced panels.

Time-varying controls (``covariates=[...]``, or a ``twfe(covariates=...)`` fit):
randomization inference and the wild cluster bootstrap test the TWFE coefficient with the
controls. The controls stay with their townships and months under every re-assignment, so
by Frisch-Waugh-Lovell they are projected out once (M = the two-way within projection and
the controls' projection) and each assignment's coefficient is still a sum of pilot tables
less a k x k correction; the bootstrap carries them as k more columns in the restricted and
unrestricted models. Both are checked against refits (tests/test_inference_controls.py).
Placebo in space and CR2 still refuse a fit with controls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations, permutations
from typing import Literal

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from evaluation.errors import EstimationError
from evaluation.estimators.did import treatment_indicator
from evaluation.estimators.fixed_effects import (
    balanced_wide,
    demean,
    factorize,
    nested_in,
    two_way_demean_balanced,
)
from evaluation.estimators.staggered import _check_covariates
from evaluation.results import Effect, Estimates, vcov_frame


def _single_blas_thread():
    """Context in which BLAS runs on one thread (threadpoolctl). The resampling loops (wild
    bootstrap, unbalanced randomization inference, multiplier draws) are many modest dense
    products, which a second BLAS thread slows down several-fold on a busy machine
    (benchmarks/threads.py). Results agree with a multi-threaded run to the last bits (a
    product's summation order may differ by thread count)."""
    return threadpool_limits(limits=1, user_api="blas")


def _resolve(data, function: str, *, outcome, unit, time, cohort, indicator, cluster=None,
             supports_cluster: bool = False, covariates=None, supports_covariates: bool = False):
    """The data and column names: as given, or from a TWFE fit's stored call (keywords
    given here override the fit's). A fit with weights is refused, and so is a fit with
    covariates (time-varying controls) unless the function tests the coefficient with
    controls (``supports_covariates``): the inference would otherwise test another
    estimate than the one reported. Returns the controls too (a list, empty: none)."""
    if isinstance(data, Estimates):
        spec = data.spec
        if not spec or spec.get("estimator") != "twfe":
            raise EstimationError(f"{function}() takes a DataFrame or a twfe() fit, got a {data.kind or 'fit'} "
                                  "without a stored twfe specification")
        if spec.get("weights") or (spec.get("covariates") and not supports_covariates):
            what = "unweighted TWFE coefficient" + ("" if supports_covariates else " without covariates")
            raise EstimationError(f"{function}() tests the {what}; this fit "
                                  f"has weights={spec.get('weights')!r}, covariates={list(spec.get('covariates', ()))}")
        outcome, unit, time = outcome or spec["outcome"], unit or spec["unit"], time or spec["time"]
        cohort = cohort or spec["cohort"]
        indicator = indicator if indicator is not None else spec.get("indicator")
        if supports_cluster:
            cluster = cluster or spec.get("cluster")
        if covariates is None:
            covariates = spec.get("covariates", ())
        data = spec["data"]
    if isinstance(covariates, str):
        raise EstimationError(f"covariates must be a list of column names, got the string {covariates!r}")
    covariates = list(dict.fromkeys(covariates or ()))
    missing = [name for name, v in (("outcome", outcome), ("unit", unit), ("time", time), ("cohort", cohort))
               if v is None]
    if missing:
        raise EstimationError(f"{function}() needs {', '.join(missing)} (or a twfe() fit as first argument)")
    if not isinstance(data, pd.DataFrame):
        raise EstimationError(f"{function}() takes a DataFrame or a twfe() fit, got {type(data).__name__}")
    absent = [c for c in (outcome, unit, time, cohort, *([cluster] if cluster else []), *covariates)
              if c not in data.columns]
    if absent:
        raise EstimationError(f"columns not in the data: {absent}")
    if supports_covariates:
        return data, outcome, unit, time, cohort, indicator, cluster, covariates
    return data, outcome, unit, time, cohort, indicator, cluster


def _check_controls(d: pd.DataFrame, covariates: list[str], *, unit: str, time: str) -> np.ndarray:
    """The controls on the rows used (n x k), checked as :func:`evaluation.estimators.did.twfe`
    checks them (numeric, present wherever the outcome is, not constant, not constant
    within every township or every period: an error names the control)."""
    _check_covariates(d, covariates, unit=unit, absorbed_by=[unit, time])
    return d[covariates].to_numpy(float)


def _control_inverse(Xt: np.ndarray, X: np.ndarray, covariates: list[str]) -> np.ndarray:
    """(X~'X~)^-1 for the two-way-demeaned controls X~ (n x k); an error names a control
    absorbed by the township and period effects together (e.g. a township level plus a
    common trend) or collinear with the other controls."""
    spread = ((X - X.mean(axis=0)) ** 2).sum(axis=0)
    left = (Xt ** 2).sum(axis=0)
    absorbed = [c for c, a, b in zip(covariates, left, spread, strict=True) if a <= 1e-20 * max(b, 1.0)]
    if absorbed:
        raise EstimationError(f"covariate(s) {absorbed} do not vary beyond the township and period effects "
                              "(a township level plus a common path): they are absorbed by the fixed effects; "
                              "drop them from the controls")
    XtX = Xt.T @ Xt
    if np.linalg.matrix_rank(XtX / np.sqrt(np.outer(left, left))) < len(covariates):
        raise EstimationError(f"the controls {covariates} are collinear with one another beyond the township and "
                              "period effects: drop one")
    return np.linalg.inv(XtX)


def _observed_rows(data: pd.DataFrame, outcome: str, unit: str, time: str) -> pd.DataFrame:
    """The rows with an outcome; a unit with a period twice is refused."""
    d = data.dropna(subset=[outcome])
    if d.empty:
        raise EstimationError(f"the outcome '{outcome}' is missing in every row")
    if d.duplicated([unit, time]).any():
        raise EstimationError("the panel is not balanced (some unit has a period twice)")
    return d


def _assignments(data: pd.DataFrame, outcome: str, unit: str, time: str, cohort: str):
    """The observed rows, their sorted units and periods, whether they fill every
    unit-period cell, and each unit's first treated period (0 = never)."""
    d = _observed_rows(data, outcome, unit, time)
    units, periods = np.sort(d[unit].unique()), np.sort(d[time].unique())
    balanced = len(d) == len(units) * len(periods)
    ft = d.groupby(unit)[cohort].first().reindex(units).fillna(0).to_numpy(float)
    return d, units, periods, balanced, ft


class _Projection:
    """The two-way (unit and period) projection on an unbalanced panel, by Frisch-Waugh:
    M = M_U - M_U P (P' M_U P)^-1 P' M_U, with M_U the within-unit demeaning and P the
    period dummies but the first. For the treatment a_ic of unit i from period column c
    on (its observed rows), every quantity of a TWFE coefficient is a small table:
    a_ic' M y = S[i, c]; a_ic' M_U a_jd = [i = j] (n_i,max(c,d) - n_ic n_id / n_i);
    P' M_U a_ic = v[i, c]. So the coefficient of any assignment of start columns to
    units is a sum over its pilots, with no refit (the balanced-panel shortcut of
    :func:`randomization_inference`, for panels with gaps).

    With controls X (n x k, ``X``), M also projects out X~ = M_tw X (Frisch-Waugh): M y is
    the residual of the two-way-demeaned outcome on X~, and every denominator and overlap
    loses v_A' (X~'X~)^-1 v_B, with v_A = X~' D_A the sum over the pilots of a (unit, start)
    table of X~ (``SX``); the controls do not move with the assignment, so they are
    projected once."""

    def __init__(self, y: np.ndarray, u: np.ndarray, t: np.ndarray, N: int, T: int, start_cols: np.ndarray,
                 X: np.ndarray | None = None, covariates: list[str] | None = None):
        self.N, self.T = N, T
        n_i = np.bincount(u, minlength=N).astype(float)
        presence = np.zeros((N, T))
        presence[u, t] = 1.0
        PtP = np.diag(presence.sum(axis=0)) - presence.T @ (presence / n_i[:, None])
        if np.linalg.matrix_rank(PtP[1:, 1:]) < T - 1:
            raise EstimationError("the period effects are not identified (a period without observations)")
        self.W = np.linalg.inv(PtP[1:, 1:])

        def within(v: np.ndarray) -> np.ndarray:
            return v - (np.bincount(u, v, minlength=N) / n_i)[u]

        ey = within(y)
        gamma = self.W @ np.bincount(t, ey, minlength=T)[1:]
        My = ey - within(np.concatenate([[0.0], gamma])[t])
        self.SX = self.Wx = None
        if X is not None:  # the controls' two-way residuals X~, then M y = M_tw y - X~ (X~'X~)^-1 X~' M_tw y
            Xt = np.empty_like(X, dtype=float)
            for j in range(X.shape[1]):
                ex = within(X[:, j])
                Xt[:, j] = ex - within(np.concatenate([[0.0], self.W @ np.bincount(t, ex, minlength=T)[1:]])[t])
            self.Wx = _control_inverse(Xt, X, covariates or [str(j) for j in range(X.shape[1])])
            My = My - Xt @ (self.Wx @ (Xt.T @ My))
            wide_x = np.zeros((N, T, X.shape[1]))
            wide_x[u, t] = Xt
            self.SX = np.zeros((N, T + 1, X.shape[1]))  # column T: never treated
            self.SX[:, :T] = np.cumsum(wide_x[:, ::-1], axis=1)[:, ::-1]
        wide = np.zeros((N, T))
        wide[u, t] = My
        self.S = np.zeros((N, T + 1))                     # column T: never treated
        self.S[:, :T] = np.cumsum(wide[:, ::-1], axis=1)[:, ::-1]
        self.count = np.zeros((N, T + 1))                 # rows of unit i from column c on
        self.count[:, :T] = np.cumsum(presence[:, ::-1], axis=1)[:, ::-1]
        self.n_i = n_i
        self.k_of = np.full(T + 1, len(start_cols))       # start column -> slot in v (last: zeros)
        self.v = np.zeros((N, len(start_cols) + 1, T - 1))
        for k, c in enumerate(start_cols):
            self.k_of[c] = k
            on = presence.copy()
            on[:, :c] = 0.0
            self.v[:, k, :] = (on - presence * (self.count[:, c] / n_i)[:, None])[:, 1:]

    def coefficients(self, assignments: np.ndarray, observed_cols: np.ndarray, chunk: int = 2048):
        """TWFE coefficient of each assignment (rows: a start column per unit, T never),
        its overlap D(perm)' M D(obs) / D(perm)' M D(perm), and the observed coefficient."""
        T, count, n_i, W = self.T, self.count, self.n_i, self.W
        obs_units = np.flatnonzero(observed_cols < T)
        obs_c = observed_cols[obs_units]
        V_obs = self.v[obs_units, self.k_of[obs_c]].sum(axis=0)
        den_obs = float((count[obs_units, obs_c] - count[obs_units, obs_c] ** 2 / n_i[obs_units]).sum()
                        - V_obs @ W @ V_obs)
        if self.SX is not None:
            X_obs = self.SX[obs_units, obs_c].sum(axis=0)          # X~' D(obs)
            WX_obs = self.Wx @ X_obs
            den_obs -= float(X_obs @ WX_obs)
        if den_obs <= 1e-12 * max(1.0, float(count[:, 0].sum())):
            raise EstimationError("the treatment does not vary beyond the township and period effects"
                                  + ("" if self.SX is None else " and the controls"))
        observed = float(self.S[obs_units, obs_c].sum() / den_obs)
        beta, overlap = np.empty(len(assignments)), np.empty(len(assignments))
        for start in range(0, len(assignments), chunk):
            A = assignments[start:start + chunk]
            treated = A < T
            n_tr = int(treated[0].sum())
            iu = np.nonzero(treated)[1].reshape(len(A), n_tr)
            c = A[treated].reshape(len(A), n_tr)
            V = self.v[iu, self.k_of[c]].sum(axis=1)
            den = (count[iu, c] - count[iu, c] ** 2 / n_i[iu]).sum(axis=1) - np.einsum("bj,jk,bk->b", V, W, V)
            co = observed_cols[iu]
            cross = (count[iu, np.maximum(c, co)] - count[iu, c] * count[iu, co] / n_i[iu]).sum(axis=1) - V @ (W @ V_obs)
            if self.SX is not None:
                VX = self.SX[iu, c].sum(axis=1)                        # X~' D(perm), b x k
                den = den - np.einsum("bj,jk,bk->b", VX, self.Wx, VX)
                cross = cross - VX @ WX_obs
            with np.errstate(divide="ignore", invalid="ignore"):
                beta[start:start + len(A)] = self.S[iu, c].sum(axis=1) / den
                overlap[start:start + len(A)] = cross / den
        return beta, overlap, observed

    def single(self, units: np.ndarray, c: int) -> np.ndarray:
        """The TWFE coefficient of each of ``units`` alone treated from column ``c`` on."""
        k = self.k_of[c]
        V = self.v[units, k]
        den = self.count[units, c] - self.count[units, c] ** 2 / self.n_i[units] - np.einsum("bj,jk,bk->b", V,
                                                                                              self.W, V)
        return self.S[units, c] / den


_PROJECTION_CHUNK = 2048  # assignments per block in _Projection.coefficients


class _Assignments:
    """Random (or all) re-assignments of the cohort labels (start columns; -1 never) to townships."""

    def __init__(self, cohort_of_unit: np.ndarray, strata: np.ndarray | None, rng: np.random.Generator):
        self.cohort = cohort_of_unit
        self.strata = np.zeros(len(cohort_of_unit), int) if strata is None else strata
        self.rng = rng

    def count(self) -> float:
        """Number of distinct assignments (inf when it exceeds a float)."""
        log_total = 0.0
        for s in np.unique(self.strata):
            labels = self.cohort[self.strata == s]
            log_total += math.lgamma(len(labels) + 1) - sum(math.lgamma(int((labels == g).sum()) + 1)
                                                            for g in np.unique(labels))
        if log_total >= 700:
            return math.inf
        value = math.exp(log_total)
        return float(round(value)) if value < 2**52 else value  # a count: whole while floats can say so

    def random(self, draws: int) -> np.ndarray:
        out = np.empty((draws, len(self.cohort)), dtype=self.cohort.dtype)
        for b in range(draws):
            perm = self.cohort.copy()
            for s in np.unique(self.strata):
                idx = np.flatnonzero(self.strata == s)
                perm[idx] = self.cohort[idx][self.rng.permutation(len(idx))]
            out[b] = perm
        return out

    def all(self) -> np.ndarray:
        """Every distinct assignment (only for small designs)."""
        per_stratum = []
        for s in np.unique(self.strata):
            idx = np.flatnonzero(self.strata == s)
            labels = self.cohort[idx]
            treated_labels = sorted(labels[labels >= 0].tolist())  # -1: never treated
            options = set()
            for pos in combinations(range(len(idx)), len(treated_labels)):
                for order in set(permutations(treated_labels)):
                    a = np.full(len(idx), -1, dtype=self.cohort.dtype)
                    a[list(pos)] = order
                    options.add(tuple(a))
            per_stratum.append((idx, [np.array(o) for o in sorted(options)]))
        grids = [[]]
        for idx, opts in per_stratum:
            grids = [g + [(idx, o)] for g in grids for o in opts]
        out = np.full((len(grids), len(self.cohort)), -1, dtype=self.cohort.dtype)
        for b, g in enumerate(grids):
            for idx, o in g:
                out[b, idx] = o
        return out


def randomization_inference(data: pd.DataFrame | Estimates, *, outcome: str | None = None, unit: str | None = None,
                            time: str | None = None, cohort: str | None = None, draws: int = 999,
                            seed: int | None = None, strata: str | None = None, alpha: float = 0.05,
                            max_exact: int = 5000, indicator: str | None = None,
                            covariates: Sequence[str] | None = None) -> Estimates:
    """Fisher randomization test and interval for the TWFE DiD coefficient (the module
    docstring gives the references and the assumption: exchangeable townships under the
    sharp null).

    ``data``: the long frame with the column keywords, or a :func:`evaluation.estimators.did.twfe`
    fit (unweighted; with or without controls), whose data, columns and controls are reused so
    that the coefficient tested is the one reported. ``cohort``: the first treated period on the
    ``time`` scale (0 or missing: never).
    ``covariates``: time-varying controls beside the township and period effects (default: a
    fit's own, else none); the statistic is then the TWFE coefficient with the controls,
    ``twfe(covariates=...)``, recomputed for every re-assignment of pilot histories while
    the controls stay with their townships and months. By Frisch-Waugh-Lovell, with M the
    projection off the two-way effects and the controls (computed once: the controls do not
    change with the assignment), beta(A) = D_A' M y / D_A' M D_A, a sum of (unit, start)
    tables over the pilots less a k x k correction for the controls, so no refit is needed.
    The sharp null is then of no effect given the controls, which must themselves be
    unaffected by the pilot ("bad controls", Angrist and Pischke 2009, sec. 3.2.3); the
    interval inverts the test of a constant effect on y - tau0 D with the controls' fit
    re-estimated under each tau0 (exactly: the statistic is linear in tau0). A control
    constant within every township (or every period) is absorbed by the fixed effects and
    refused with an error naming it, as :func:`evaluation.estimators.did.twfe` does.
    ``strata``: a column (e.g. the county) within which pilot status is permuted. When
    the number of distinct assignments is at most ``max_exact`` all of them are used
    (exact p-value); otherwise ``draws`` random ones plus the observed assignment.
    The reported standard error is the standard deviation of the permutation
    distribution.
    """
    data, outcome, unit, time, cohort, indicator, _, covariates = _resolve(
        data, "randomization_inference", outcome=outcome, unit=unit, time=time, cohort=cohort, indicator=indicator,
        covariates=covariates, supports_covariates=True)
    d, units, periods, balanced, ft = _assignments(data, outcome, unit, time, cohort)
    X = _check_controls(d, covariates, unit=unit, time=time) if covariates else None
    cohort_index = np.array([np.searchsorted(periods, g) if g > 0 else -1 for g in ft])  # column of the start
    if (cohort_index < 0).all():
        raise EstimationError("no treated units")
    if (cohort_index >= 0).all():
        raise EstimationError(f"no comparison units: every unit has a '{cohort}'")
    strata_values = None
    if strata:
        strata_values = pd.factorize(d.groupby(unit)[strata].first().reindex(units))[0]
    T = len(periods)
    rng = np.random.default_rng(seed)
    design = _Assignments(cohort_index, strata_values, rng)  # cohort = start column, -1 = never
    n_assign = design.count()
    exact = n_assign <= max_exact
    every = design.all() if exact else None
    n_total = len(every) if exact else draws + 1
    observed_cols = np.where(cohort_index < 0, T, cohort_index)  # column T of S holds 0: never treated

    def assignment_chunks(chunk: int):
        """The assignments (start columns, T never) in blocks of ``chunk`` rows: all of them,
        or the observed one and ``draws`` random ones, drawn block by block from one stream."""
        if exact:
            for start in range(0, len(every), chunk):
                yield np.where(every[start:start + chunk] < 0, T, every[start:start + chunk])
            return
        for start in range(0, n_total, chunk):
            size = min(n_total, start + chunk) - start
            block = design.random(size - 1 if start == 0 else size)
            if start == 0:
                block = np.vstack([cohort_index[None, :], block])
            block[block < 0] = T  # in place: one block of assignments held at a time
            yield block

    beta, overlap = np.empty(n_total), np.empty(n_total)
    if balanced and X is not None:
        beta, overlap, observed = _balanced_with_controls(d, outcome, unit, time, covariates, cohort_index,
                                                          observed_cols, assignment_chunks, n_total)
    elif balanced:
        Y, units, periods = balanced_wide(d, outcome, unit, time)
        Yt = two_way_demean_balanced(Y)
        # S[i, c] = sum over t >= c of the demeaned outcome of unit i (c = T: nothing)
        S = np.zeros((len(units), T + 1))
        S[:, :T] = np.cumsum(Yt[:, ::-1], axis=1)[:, ::-1]
        D = np.zeros_like(Y)
        for i, c in enumerate(cohort_index):
            if c >= 0:
                D[i, c:] = 1.0
        Dt = two_way_demean_balanced(D)
        denom = float((Dt**2).sum())
        if denom <= 0:
            raise EstimationError("the treatment does not vary beyond the township and period effects")
        SD = np.zeros((len(units), T + 1))
        SD[:, :T] = np.cumsum(Dt[:, ::-1], axis=1)[:, ::-1]
        rows = np.arange(len(units))[None, :]
        # a block of assignments at a time: memory O(units x block), not O(units x draws)
        start = 0
        for A in assignment_chunks(max(1, _CHUNK_ELEMENTS // len(units))):
            stop = start + len(A)
            beta[start:stop] = S[rows, A].sum(axis=1) / denom          # beta under each assignment (tau0 = 0)
            overlap[start:stop] = SD[rows, A].sum(axis=1) / denom      # D~(perm)'D~(obs) / denom
            start = stop
        observed = float((Dt * Yt).sum() / denom)
    else:
        with _single_blas_thread():
            tables = _Projection(d[outcome].to_numpy(float), np.searchsorted(units, d[unit].to_numpy()),
                                 np.searchsorted(periods, d[time].to_numpy()), len(units), T,
                                 np.unique(cohort_index[cohort_index >= 0]), X=X, covariates=covariates)
            start = 0
            for A in assignment_chunks(_PROJECTION_CHUNK):  # the block of _Projection.coefficients
                stop = start + len(A)
                beta[start:stop], overlap[start:stop], observed = tables.coefficients(A, observed_cols,
                                                                                      chunk=_PROJECTION_CHUNK)
                start = stop
    n_obs = len(d)

    def p_value(tau0: float) -> float:
        stat = np.abs(beta - tau0 * overlap)
        return float(np.mean(stat >= abs(observed - tau0) - 1e-12 * max(1.0, abs(observed))))

    p0 = p_value(0.0)
    sd = float(np.std(beta, ddof=1))
    low, high = _invert(p_value, observed, sd, alpha)
    n_treated = int((cohort_index >= 0).sum())
    effect = Effect(estimand="att", estimate=observed, std_error=sd, ci_low=low, ci_high=high, p_value=p0,
                    method="two-way fixed effects DiD" + (f" with controls ({', '.join(covariates)})"
                                                          if covariates else ""),
                    inference=(f"randomization inference, {'all ' if exact else ''}{n_total:,} assignments"
                               + (f" within {strata}" if strata else "")
                               + ("" if exact else f" (seed {seed})")),
                    n_obs=n_obs, n_units=len(units), n_treated=n_treated, indicator=indicator, alpha=alpha,
                    p_floor=1 / n_total, extra={"exact": exact, "assignments": n_total, "possible_assignments": n_assign})
    return Estimates(effects=[effect], method=effect.method, kind="randomization_inference", wald=False,
                     plot_data=pd.DataFrame({"permuted_estimate": beta}),
                     diagnostics={"exact": exact, "assignments": n_total, "possible_assignments": n_assign,
                                  "panel": "balanced" if balanced else "unbalanced",
                                  "dropped_missing_rows": int(len(data) - n_obs),
                                  **({"controls": list(covariates)} if covariates else {})})


def _balanced_with_controls(d: pd.DataFrame, outcome: str, unit: str, time: str, covariates: list[str],
                            cohort_index: np.ndarray, observed_cols: np.ndarray, assignment_chunks, n_total: int):
    """Randomization inference's coefficients on a balanced panel with controls: M y is the
    two-way-demeaned outcome less its fit on the two-way-demeaned controls X~ (once), the
    numerator of each assignment a sum over its pilots of the (unit, start) table of M y,
    and its denominator D~'D~ (the same for every assignment: cohort sizes are kept) less
    v' (X~'X~)^-1 v, v = X~' D_A from the (unit, start) table of X~. Returns the
    coefficients, the overlaps D_A' M D_obs / D_A' M D_A and the observed coefficient."""
    Y, units, periods = balanced_wide(d, outcome, unit, time)
    N, T = Y.shape
    Xt = np.stack([two_way_demean_balanced(balanced_wide(d, c, unit, time)[0]) for c in covariates], axis=-1)
    flat = Xt.reshape(N * T, len(covariates))
    Wx = _control_inverse(flat, d[covariates].to_numpy(float), covariates)
    Yt = two_way_demean_balanced(Y)
    Yt = Yt - Xt @ (Wx @ (flat.T @ Yt.ravel()))                       # M y (N x T)
    S = np.zeros((N, T + 1))
    S[:, :T] = np.cumsum(Yt[:, ::-1], axis=1)[:, ::-1]
    SX = np.zeros((N, T + 1, len(covariates)))                        # X~' D of one unit from column c on
    SX[:, :T] = np.cumsum(Xt[:, ::-1], axis=1)[:, ::-1]
    D = np.zeros_like(Y)
    for i, c in enumerate(cohort_index):
        if c >= 0:
            D[i, c:] = 1.0
    Dt = two_way_demean_balanced(D)
    denom = float((Dt**2).sum())                                      # D~'D~: every assignment alike
    SD = np.zeros((N, T + 1))
    SD[:, :T] = np.cumsum(Dt[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(N)[None, :]
    X_obs = SX[rows[0], observed_cols].sum(axis=0)
    WX_obs = Wx @ X_obs
    den_obs = denom - float(X_obs @ WX_obs)
    if den_obs <= 1e-12 * max(1.0, float(N * T)):
        raise EstimationError("the treatment does not vary beyond the township and period effects and the controls")
    observed = float((Dt * Yt).sum() / den_obs)
    beta, overlap = np.empty(n_total), np.empty(n_total)
    start = 0
    for A in assignment_chunks(max(1, _CHUNK_ELEMENTS // (N * (1 + len(covariates))))):
        stop = start + len(A)
        VX = SX[rows, A].sum(axis=1)                                  # X~' D_A, b x k
        den = denom - np.einsum("bj,jk,bk->b", VX, Wx, VX)
        with np.errstate(divide="ignore", invalid="ignore"):
            beta[start:stop] = S[rows, A].sum(axis=1) / den
            overlap[start:stop] = (SD[rows, A].sum(axis=1) - VX @ WX_obs) / den
        start = stop
    return beta, overlap, observed


def _invert(p_value, estimate: float, scale: float, alpha: float) -> tuple[float, float]:
    """The set of constant effects tau0 not rejected at alpha, by bisection on each side."""
    if not np.isfinite(scale) or scale <= 0:
        return (math.nan, math.nan)

    def edge(direction: int) -> float:
        inside, step = estimate, scale
        outside = estimate + direction * step
        for _ in range(60):
            if p_value(outside) <= alpha:
                break
            inside, outside = outside, outside + direction * step
            step *= 2
        else:
            return direction * math.inf
        for _ in range(60):
            mid = (inside + outside) / 2
            if p_value(mid) > alpha:
                inside = mid
            else:
                outside = mid
        return (inside + outside) / 2

    return edge(-1), edge(+1)


# ----------------------------------------------------------------------------- CR2

def cr2(X: np.ndarray, y: np.ndarray, clusters: np.ndarray, index: int) -> dict:
    """CR2 cluster-robust standard error of coefficient ``index`` with Bell-McCaffrey
    degrees of freedom.

    V = (X'X)^-1 sum_g X_g' A_g u_g u_g' A_g X_g (X'X)^-1, A_g = (I - H_gg)^(-1/2),
    H_gg = X_g (X'X)^-1 X_g' (Bell and McCaffrey 2002, Survey Methodology 28:169-181). The
    degrees of freedom are Satterthwaite's under a homoskedastic working model,
    (sum lambda)^2 / sum lambda^2 = tr(B)^2 / ||B||_F^2 with lambda the eigenvalues of
    B = G'G, G_g = (I - H)_g' A_g X_g (X'X)^-1 e_index (Imbens and Kolesar 2016, Rev Econ
    Stat 98:701-712). ``X`` is the design as given (with absorbed fixed effects: the
    demeaned design, as :func:`twfe_cr2` passes it). With every observation its own
    cluster CR2 is HC2.

    Memory is linear in the rows: no n x n matrix is formed. With X_g = U_g S_g V_g' (thin
    SVD), H_gg = U_g K_g U_g' with K_g = S_g V_g' (X'X)^-1 V_g S_g, so
    A_g = I + U_g ((I - K_g)^(-1/2) - I) U_g' needs only n_g x k and k x k pieces. Because
    I - H is idempotent, B_gh = [g = h] p_g'p_g - q_g' (X'X)^-1 q_h with p_g = A_g X_g
    (X'X)^-1 e_index and q_g = X_g' p_g: the G x G matrix is summed in row blocks from the
    G x k table of q_g (the approach of Pustejovsky and Tipton 2018, J Bus Econ Stat
    36:672-683, and of R's clubSandwich).
    """
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    n, k = X.shape
    if np.linalg.matrix_rank(X) < k:
        raise EstimationError("the design is collinear")
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ (X.T @ y)
    u = y - X @ beta
    codes = pd.factorize(pd.Series(clusters))[0]
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes[codes >= 0])
    ends = np.cumsum(sizes) + int((codes < 0).sum())  # rows without a cluster sort first and are left out
    c = bread[:, index]
    meat = np.zeros((k, k))
    G = len(sizes)
    pp = np.empty(G)          # p_g' p_g
    Q = np.empty((G, k))      # q_g = X_g' p_g
    for g in range(G):
        idx = order[ends[g] - sizes[g]:ends[g]]
        Xg = X[idx]
        Ug, sg, Vtg = np.linalg.svd(Xg, full_matrices=False)
        SV = sg[:, None] * Vtg
        w, E = np.linalg.eigh(np.eye(len(sg)) - SV @ bread @ SV.T)  # I - H_gg on the columns of U_g; 1 elsewhere
        if w.min() <= 1e-12:
            raise EstimationError("CR2 is undefined: a cluster is fully explained by the regressors "
                                  "(e.g. a fixed effect nested in a single-cluster group)")
        F = (E * (w ** -0.5 - 1.0)) @ E.T

        def adjust(v, Ug=Ug, F=F):  # A_g v
            return v + Ug @ (F @ (Ug.T @ v))

        s = Xg.T @ adjust(u[idx])
        meat += np.outer(s, s)
        p = adjust(Xg @ c)
        pp[g] = p @ p
        Q[g] = Xg.T @ p
    vcov = bread @ meat @ bread
    trace, squares = np.float64(0.0), np.float64(0.0)
    QW = Q @ bread
    step = max(1, 2**22 // max(G, 1))
    for start in range(0, G, step):
        rows = np.arange(start, min(G, start + step))
        B = -(QW[rows] @ Q.T)                    # rows of B = diag(p_g'p_g) - Q (X'X)^-1 Q'
        B[np.arange(len(rows)), rows] += pp[rows]
        trace += B[np.arange(len(rows)), rows].sum()
        squares += np.sum(B * B)
    df = float(trace**2 / squares)
    return {"estimate": float(beta[index]), "std_error": float(np.sqrt(vcov[index, index])), "df": df,
            "vcov": vcov, "coef": beta}


def twfe_cr2(data: pd.DataFrame | Estimates, *, outcome: str | None = None, unit: str | None = None,
             time: str | None = None, cohort: str | None = None, cluster: str | None = None, alpha: float = 0.05,
             indicator: str | None = None) -> Estimates:
    """TWFE DiD (D_it = 1 from the unit's ``cohort`` on) with CR2 errors and Bell-McCaffrey
    degrees of freedom, reported beside CR1 (:func:`evaluation.estimators.did.twfe`; ``data``
    may be that fit, whose data, columns and cluster are reused). The t-test is valid with
    few clusters under parallel trends (Bell and McCaffrey 2002; Imbens and Kolesar 2016).

    Township effects are nested in the clusters (townships or counties), so they are
    absorbed before the adjustment matrices are formed, as Pustejovsky and Tipton (2018,
    J Bus Econ Stat 36:672-683) show is equivalent and necessary (with them as dummies
    I - H_gg is singular); period effects stay as dummy columns. Memory linear in the rows
    (:func:`cr2` forms no n x n matrix). Rows without an outcome are dropped and the rest used as an
    unbalanced panel (``diagnostics["observations"]``, ``["dropped_missing_rows"]``;
    missing at random given unit and period).
    """
    data, outcome, unit, time, cohort, indicator, cluster = _resolve(
        data, "twfe_cr2", outcome=outcome, unit=unit, time=time, cohort=cohort, indicator=indicator,
        cluster=cluster, supports_cluster=True)
    cluster = cluster or unit
    d = data.dropna(subset=[outcome])
    treatment = treatment_indicator(d, time=time, cohort=cohort)
    u_codes = factorize(d[unit])[0]
    if not nested_in(u_codes, factorize(d[cluster])[0]):
        raise EstimationError(f"townships ('{unit}') must be nested in the clusters ('{cluster}') for CR2")
    periods = pd.get_dummies(d[time], drop_first=True, dtype=float).to_numpy()
    Z = demean(np.column_stack([d[outcome].to_numpy(float), treatment.to_numpy(float), periods]), [u_codes])
    res = cr2(Z[:, 1:], Z[:, 0], d[cluster].to_numpy(), 0)
    effect = Effect.from_normal("att", res["estimate"], res["std_error"], df=res["df"], alpha=alpha,
                                method="two-way fixed effects (unit and period)",
                                inference=f"CR2 by {d[cluster].nunique()} clusters, Bell-McCaffrey df {res['df']:.1f}",
                                n_obs=len(d), n_units=d[unit].nunique(),
                                n_treated=d.loc[treatment != 0, unit].nunique(), indicator=indicator)
    return Estimates(effects=[effect], method=effect.method,
                     diagnostics={"bell_mccaffrey_df": res["df"], "observations": len(d),
                                  "dropped_missing_rows": int(len(data) - len(d))},
                     kind="twfe_cr2", vcov=vcov_frame([[res["std_error"] ** 2]], [effect]))


# ----------------------------------------------------------------------------- placebo in space

def placebo_in_space(data: pd.DataFrame | Estimates, *, outcome: str | None = None, unit: str | None = None,
                     time: str | None = None, cohort: str | None = None, start: float | None = None,
                     alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Each non-pilot township in turn as a fake pilot (the real pilots left out), starting
    at ``start`` (default: the earliest real start). The TWFE coefficient of each fake
    pilot gives the distribution of "effects" that chance and township-specific trends
    produce; the real pilots' coefficient is ranked against it (Abadie, Diamond and
    Hainmueller 2010, for one pilot). The p-value is the share of placebo coefficients at
    least as large in absolute value as the real one (the real one counted once).
    The same projection tables as :func:`randomization_inference`, on balanced and
    unbalanced panels alike (a fake pilot with no row on one side of the start has no
    coefficient: an error names it).
    ``data`` may be a :func:`evaluation.estimators.did.twfe` fit (unweighted, no
    covariates), whose data and columns are reused.
    """
    data, outcome, unit, time, cohort, indicator, _ = _resolve(data, "placebo_in_space", outcome=outcome,
                                                                unit=unit, time=time, cohort=cohort,
                                                                indicator=indicator)
    d, units, periods, balanced, ft = _assignments(data, outcome, unit, time, cohort)
    real = ft > 0
    if not real.any():
        raise EstimationError("no pilot township to compare with")
    if real.sum() == len(units) or (~real).sum() < 2:
        raise EstimationError("placebo in space needs at least two non-pilot townships")
    start = float(ft[real].min()) if start is None else float(start)
    c = int(np.searchsorted(periods, start))
    if not 0 < c < len(periods):
        raise EstimationError(f"placebo start {start} must fall inside the panel, after its first period")
    observed = randomization_inference(d, outcome=outcome, unit=unit, time=time, cohort=cohort,
                                       max_exact=1, draws=1).effects[0].estimate
    if balanced:
        Y, units, periods = balanced_wide(d, outcome, unit, time)
        controls = Y[~real]
        Yt = two_way_demean_balanced(controls)
        D = np.zeros(controls.shape[1])
        D[c:] = 1.0
        # one fake pilot j: D~'Y~ = (D - mean D)'Y~_j (the demeaned outcome sums to 0 over
        # townships) and D~'D~ = (1 - 1/n) sum (D - mean D)^2
        Dc = D - D.mean()
        n = controls.shape[0]
        denom = (1 - 1 / n) * float((Dc**2).sum())
        placebo = (Yt @ Dc) / denom
    else:
        # the same coefficient on the non-pilot rows present, by the projection tables
        rows = d[d[unit].isin(units[~real])]
        c_periods = np.sort(rows[time].unique())
        c_ctrl = int(np.searchsorted(c_periods, start))
        if not 0 < c_ctrl < len(c_periods):
            raise EstimationError(f"placebo start {start} must fall inside the non-pilot townships' periods")
        ctrl_units = units[~real]
        tables = _Projection(rows[outcome].to_numpy(float), np.searchsorted(ctrl_units, rows[unit].to_numpy()),
                             np.searchsorted(c_periods, rows[time].to_numpy()), len(ctrl_units), len(c_periods),
                             np.array([c_ctrl]))
        with np.errstate(divide="ignore", invalid="ignore"):
            placebo = tables.single(np.arange(len(ctrl_units)), c_ctrl)
        if not np.isfinite(placebo).all():
            bad = ctrl_units[~np.isfinite(placebo)].tolist()
            raise EstimationError(f"township(s) {bad[:5]} have no rows on one side of the placebo start {start:g}: "
                                  "their placebo coefficient is undefined")
    p = float((1 + np.sum(np.abs(placebo) >= abs(observed))) / (1 + len(placebo)))
    sd = float(np.std(placebo, ddof=1))
    effect = Effect(estimand="att", estimate=float(observed), std_error=sd,
                    ci_low=float(observed - np.quantile(placebo, 1 - alpha / 2)),
                    ci_high=float(observed - np.quantile(placebo, alpha / 2)), p_value=p,
                    method="two-way fixed effects DiD",
                    inference=f"placebo in space: {len(placebo)} non-pilot townships as fake pilots from period {start:g}",
                    n_obs=len(d), n_units=len(units), n_treated=int(real.sum()), indicator=indicator,
                    alpha=alpha, p_floor=1 / (1 + len(placebo)))
    table = pd.DataFrame({"township": units[~real], "placebo_estimate": placebo})
    return Estimates(effects=[effect], method=effect.method, plot_data=table, kind="placebo_in_space", wald=False,
                     diagnostics={"placebo_sd": sd, "placebos": len(placebo),
                                  "panel": "balanced" if balanced else "unbalanced",
                                  "dropped_missing_rows": int(len(data) - len(d))})


# ----------------------------------------------------------------------------- wild cluster bootstrap

WEBB = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])
_SIGNS = np.array([-1.0, 1.0])
_CHUNK_ELEMENTS = 2**22  # draws x clusters (or assignments x townships) held at once (32 MiB per array)


def _bootstrap_weights(G: int, draws: int, kind: str, rng, max_enumerate: int):
    """(number of weight vectors, whether all sign vectors, chunk generator of draws x G weights)."""
    chunk = max(1, _CHUNK_ELEMENTS // G)
    if kind == "rademacher" and (2**G <= draws or G <= max_enumerate):
        total = 2**G

        def enumerate_chunks():
            for start in range(0, total, chunk):
                rows = np.arange(start, min(total, start + chunk))
                yield ((rows[:, None] >> np.arange(G)[None, :]) & 1) * 2.0 - 1.0
        return total, True, enumerate_chunks()
    if kind not in ("rademacher", "webb"):
        raise EstimationError(f"weights_type must be 'rademacher' or 'webb', got {kind!r}")

    def random_chunks():
        for start in range(0, draws, chunk):
            size = (min(draws, start + chunk) - start, G)
            # Rademacher: the 0/1 draws mapped to -1/+1 by a lookup (the same values as 2 x - 1 in one pass)
            yield np.take(_SIGNS, rng.integers(0, 2, size=size)) if kind == "rademacher" else rng.choice(WEBB, size=size)
    return draws, False, random_chunks()


def _wild_general(y: np.ndarray, D: np.ndarray, X: np.ndarray | None, covariates: list[str], u_codes: np.ndarray,
                  t_codes: np.ndarray, g_codes: np.ndarray, *, N: int, T: int, G: int, impose_null: bool):
    """The general computation of :func:`wild_cluster_bootstrap` (any panel, with or without
    controls): (estimate, CR1 standard error, small-sample factor, draw), where draw(V)
    gives, for a chunk of weight vectors V (draws x G), the numerators' two lines
    (t* numerator = num0 - r num1) and the variance's three (A - 2 r B + r^2 C, before the
    small-sample factor)."""
    n, k = len(y), len(covariates)
    n_i = np.bincount(u_codes, minlength=N).astype(float)

    def within(v: np.ndarray) -> np.ndarray:  # demean within township
        return v - (np.bincount(u_codes, v, minlength=N) / n_i)[u_codes]

    def by_period(v: np.ndarray) -> np.ndarray:  # X_t' v for the T period dummies
        return np.bincount(t_codes, v, minlength=T)

    # Z = within-township [D, controls 1..k, period dummies 1..T-1]; Z'Z exactly, without forming Z
    K = T + k                                                                 # columns of Z
    Dw, yw = within(D), within(y)
    presence = np.zeros((N, T))
    np.add.at(presence, (u_codes, t_codes), 1.0)
    with _single_blas_thread():
        ZtZt = np.diag(presence.sum(axis=0)) - presence.T @ (presence / n_i[:, None])
    ZtD = by_period(Dw)
    ZZ = np.empty((K, K))
    ZZ[0, 0], ZZ[0, 1 + k:], ZZ[1 + k:, 0], ZZ[1 + k:, 1 + k:] = Dw @ Dw, ZtD[1:], ZtD[1:], ZtZt[1:, 1:]
    if k:
        Xw = np.column_stack([within(X[:, j]) for j in range(k)])
        PX = np.column_stack([by_period(Xw[:, j])[1:] for j in range(k)])      # (T-1) x k
        ZZ[0, 1:1 + k] = ZZ[1:1 + k, 0] = Dw @ Xw
        ZZ[1:1 + k, 1:1 + k] = Xw.T @ Xw
        ZZ[1:1 + k, 1 + k:], ZZ[1 + k:, 1:1 + k] = PX.T, PX
        # the controls net of the township and period effects: absorbed or collinear ones named
        Xt = Xw - np.column_stack([within(np.concatenate([[0.0], np.linalg.solve(ZtZt[1:, 1:], PX[:, j])])[t_codes])
                                   for j in range(k)])
        _control_inverse(Xt, X, covariates)
    if np.linalg.matrix_rank(ZZ) < K:
        raise EstimationError("the treatment does not vary beyond the township and period effects"
                              + (" and the controls" if k else ""))
    ZZ_inv = np.linalg.inv(ZZ)
    c = ZZ_inv[:, 0]
    period_inv = np.linalg.inv(ZtZt[1:, 1:])

    def period_fit(gamma: np.ndarray) -> np.ndarray:  # within-township sum of the period terms
        return within(np.concatenate([[0.0], gamma])[t_codes])

    if k:
        rest_inv = np.linalg.inv(ZZ[1:, 1:])                                  # [controls, periods]

        def resid_on_periods(v: np.ndarray) -> np.ndarray:  # on the period effects and the controls
            coef = rest_inv @ np.concatenate([Xw.T @ v, by_period(v)[1:]])
            return v - Xw @ coef[:k] - period_fit(coef[k:])
    else:
        def resid_on_periods(v: np.ndarray) -> np.ndarray:
            return v - period_fit(period_inv @ by_period(v)[1:])

    beta_full = ZZ_inv @ np.concatenate([[Dw @ yw], *([Xw.T @ yw] if k else []), by_period(yw)[1:]])
    beta = float(beta_full[0])
    fitted = period_fit(beta_full[1 + k:])
    if k:
        fitted = fitted + Xw @ beta_full[1:1 + k]
    u_hat = yw - beta * Dw - fitted
    cell = g_codes * T + t_codes

    def scores(u: np.ndarray) -> np.ndarray:  # K x G: Z_g' u_g (u is within-township)
        grid = np.bincount(cell, u, minlength=G * T).reshape(G, T)
        controls = [np.bincount(g_codes, Xw[:, j] * u, minlength=G) for j in range(k)]
        return np.vstack([np.bincount(g_codes, D * u, minlength=G), *controls, grid[:, 1:].T])

    Zc = c[0] * Dw + period_fit(c[1 + k:])
    if k:
        Zc = Zc + Xw @ c[1:1 + k]
    Q = scores(Zc).T                                                          # G x K: c' Z_g' Z_g
    k_dummies = N + T + k                                                     # D, constant, N-1, T-1, controls
    ssc = (n - 1) / (n - k_dummies) * G / (G - 1)
    S_hat = scores(u_hat)
    se = float(np.sqrt(ssc * np.sum((c @ S_hat) ** 2)))
    # residual scores as S0 - r S1 (restricted: u~(r) = u0 - r u1) or fixed (unrestricted)
    if impose_null:
        S0, S1 = scores(resid_on_periods(yw)), scores(resid_on_periods(Dw))
    else:
        S0, S1 = S_hat, np.zeros_like(S_hat)
    C0, C1 = c @ S0, c @ S1
    S01T = np.vstack([S0, S1]).T                                              # G x 2K

    def draw(V: np.ndarray) -> tuple[np.ndarray, ...]:  # numerator and variance pieces of a chunk of draws
        proj = V @ S01T                                                       # b x 2K: S v
        s0 = V * C0 - (proj[:, :K] @ ZZ_inv) @ Q.T                            # c' Z_g' u*_g
        s1 = V * C1 - (proj[:, K:] @ ZZ_inv) @ Q.T
        return (V @ C0, V @ C1, np.einsum("ij,ij->i", s0, s0), np.einsum("ij,ij->i", s0, s1),
                np.einsum("ij,ij->i", s1, s1))
    return beta, se, ssc, draw



_BALANCED_FAST_PATH = True  # tests set it False to force the general computation (the reference)


def _wild_balanced(y: np.ndarray, D: np.ndarray, u_codes: np.ndarray, t_codes: np.ndarray, g_codes: np.ndarray, *,
                   N: int, T: int, G: int, impose_null: bool, squares: bool):
    """:func:`_wild_general` on a balanced panel without controls (every township in every
    period once; townships nested in the clusters), with the same returns; the draws cost
    O(G P) for P treatment paths (cohorts, never-treated included) instead of O(G T).

    Two-way demeaning is the exact projection on the township and period effects here:
    y~, D~ (N x T); beta = sum(y~ D~) / F, F = sum(D~^2); the restricted residual at the
    null r is u(r) = y~ - r D~ (the unrestricted one u^ = y~ - beta D~, fixed). For weights
    v constant within clusters, u o v keeps zero township means, so the bootstrap residual
    is M(u o v) = u o v - 1 m' - (b* - r) D~ with m_t = sum_i v_i u_it / N and
    b* - r = v'c, c_g = sum_{i in g, t} D~ u / F. Cluster g's score (times F) is
    v_g c_g F - E_g' m - (b* - r) F_g with E_g = sum_{i in g} D~_i and F_g its D~^2 sum.
    D~_i depends only on township i's treatment path, so E = Gamma H (Gamma: clusters x
    paths counts, H: paths x T) and m enters only through H m = H U_c' v / N (U_c: the
    cluster-by-period sums of u, reduced once to G x P). Expanding sum_g score_g^2 leaves
    per draw one product of the weights with a G x (4 P + 4) matrix (and, for Webb
    weights, v^2 with 3 columns): no draws x clusters elementwise pass. Rademacher
    weights use v^2 = 1. With P >= T, Gamma = E and H = I. Checked against the general
    computation in tests/test_wild_fast.py."""
    cells = u_codes * T + t_codes
    Y, Dg = np.empty(N * T), np.empty(N * T)
    Y[cells], Dg[cells] = y, D
    Y, Dg = Y.reshape(N, T), Dg.reshape(N, T)
    Yt, Dt = two_way_demean_balanced(Y), two_way_demean_balanced(Dg)
    d_i, a_i = np.einsum("it,it->i", Dt, Dt), np.einsum("it,it->i", Dt, Yt)  # per township: sum D~^2, sum D~ y~
    F = float(d_i.sum())
    if not F > 1e-12 * float(np.einsum("it,it->", Dg, Dg)):
        raise EstimationError("the treatment does not vary beyond the township and period effects")
    gc = np.empty(N, dtype=np.int64)
    gc[u_codes] = g_codes                                                     # each township's cluster (nested)

    def by_cluster(M: np.ndarray) -> np.ndarray:  # township rows summed within clusters
        if M.ndim == 1:
            return np.bincount(gc, M, minlength=G)
        return np.column_stack([np.bincount(gc, M[:, j], minlength=G) for j in range(M.shape[1])])

    beta = float(a_i.sum()) / F
    n = N * T
    ssc = (n - 1) / (n - (N + T)) * G / (G - 1)
    score_hat = by_cluster(a_i - beta * d_i) / F                              # c' Z_g' u^_g
    se = float(np.sqrt(ssc * np.sum(score_hat ** 2)))
    # treatment paths (D is 0/1, so its rows' bits identify them): E = Gamma H (G x L, L x T)
    _, first, path = np.unique(np.packbits(Dg != 0, axis=1), axis=0, return_index=True, return_inverse=True)
    P = len(first)
    with _single_blas_thread():
        if P < T:
            H = Dt[first]
            Gamma = np.bincount(gc * P + path.reshape(-1), minlength=G * P).reshape(G, P).astype(float)
            YH = Yt @ H.T                                                     # N x L
        else:
            H, Gamma, YH = np.eye(T), by_cluster(Dt), Yt
        f = by_cluster(d_i) / F                                               # c1 = F_g / F
        if impose_null:
            c0, UH = by_cluster(a_i) / F, YH                                  # u(r) = y~ - r D~
        else:
            c0, UH = score_hat, YH - beta * (Dt @ H.T if P < T else Dt)       # u^ fixed
        M0 = by_cluster(UH) / (N * F)                                         # h0 = M0' v = H m0 / F
        HH = H @ H.T / (N * F)                                                # h1 = HH Gamma' v = H m1 / F
        GG, Gf, Sff = Gamma.T @ Gamma, Gamma.T @ f, float(f @ f)
    L = Gamma.shape[1]
    lines = [c0, f] if impose_null else [c0]
    W = np.column_stack([*lines, *(c * f for c in lines), *([Gamma] if impose_null else []),
                         *(c[:, None] * Gamma for c in lines), M0])
    pairs = [(0, 0), (0, 1), (1, 1)] if impose_null else [(0, 0)]
    SQ = np.column_stack([lines[j] * lines[k] for j, k in pairs])          # sum_g v_g^2 c^j_g c^k_g
    SQ_sum = SQ.sum(axis=0)
    n_lines = len(lines)

    def draw(V: np.ndarray) -> tuple[np.ndarray, ...]:
        out = V @ W
        b, q = out[:, :n_lines].T, out[:, n_lines:2 * n_lines].T             # v'c^j, v'(c^j o f)
        at = 2 * n_lines
        g1 = None
        if impose_null:
            g1, at = out[:, at:at + L], at + L
        x = [out[:, at + j * L:at + (j + 1) * L] for j in range(n_lines)]     # Gamma'(v o c^j)
        h = [out[:, at + n_lines * L:]]                                       # H m^j / F
        if impose_null:
            h.append(g1 @ HH)
        hG = [hj @ GG for hj in h]
        hf = [hj @ Gf for hj in h]
        p2 = (V * V) @ SQ if squares else np.broadcast_to(SQ_sum, (len(V), len(pairs)))

        def rowdot(a: np.ndarray, c: np.ndarray) -> np.ndarray:
            return np.einsum("ij,ij->i", a, c)

        S = [p2[:, i] - rowdot(x[j], h[k]) - rowdot(x[k], h[j]) - b[k] * q[j] - b[j] * q[k] + rowdot(hG[j], h[k])
             + b[k] * hf[j] + b[j] * hf[k] + b[j] * b[k] * Sff for i, (j, k) in enumerate(pairs)]
        if impose_null:
            return b[0], b[1], S[0], S[1], S[2]
        zero = np.zeros(len(V))
        return b[0], zero, S[0], zero, zero
    return beta, se, ssc, draw


def wild_cluster_bootstrap(data: pd.DataFrame | Estimates, *, outcome: str | None = None, unit: str | None = None,
                           time: str | None = None, cohort: str | None = None, cluster: str | None = None,
                           draws: int = 9999, weights_type: Literal["rademacher", "webb"] = "rademacher",
                           impose_null: bool = True, seed: int | None = None, max_enumerate: int = 12,
                           alpha: float = 0.05, indicator: str | None = None,
                           covariates: Sequence[str] | None = None) -> Estimates:
    """Wild cluster bootstrap-t for the TWFE DiD coefficient (WCR11 / WCU11; Cameron,
    Gelbach and Miller 2008; Roodman, MacKinnon, Nielsen and Webb 2019), D_it = 1 from the
    unit's ``cohort`` on. ``data`` may be a :func:`evaluation.estimators.did.twfe` fit
    (unweighted; with or without controls), whose data, columns, cluster and controls are
    reused. Valid with few clusters under parallel trends (the test is of the coefficient,
    not of a model).

    ``covariates``: time-varying controls beside the township and period effects (default:
    a fit's own, else none), in both the restricted model (y - r D on the effects and the
    controls: WCR, the null imposed; Roodman et al. 2019, Stata J 19:4-60; MacKinnon and
    Webb 2018, Econometrics J 21:114-135) and the unrestricted one, as ``twfe(covariates=...)``
    fits them. The controls enter as k more within-township columns of the design (K = T + k
    terms), so the draws still cost O(G K). A control constant within every township (or
    every period), or absorbed by the two effects together, is refused with an error naming
    it.

    The restricted bootstrap (``impose_null=True``) draws y* = X b~ + u~ * v_g from the
    model with the null imposed, one weight per cluster: Rademacher (+-1; all 2^G sign
    vectors when G <= ``max_enumerate`` or 2^G <= ``draws``, an exact test) or Webb's
    six-point weights (``weights_type="webb"``, better with very few clusters). The p-value is the share of
    bootstrap |t*| at least |t| (CR1 t-statistics, small-sample factor of the dummy-variable
    design, as the ``wildboottest`` package uses); the interval inverts the test over the
    null value. The unrestricted bootstrap (``impose_null=False``) centres t* on the
    estimate and gives the symmetric percentile-t interval.

    Computation (Roodman et al. 2019, sec. 5; MacKinnon 2023, Econometrics 11:28): the
    township effects are nested in the clusters, so they are swept out by within-township
    demeaning, which commutes with multiplying residuals by cluster weights; the period
    effects stay as exact (T-1)-column terms. Every bootstrap quantity is then a product of
    the weights with G x T cluster-by-period sums, so a draw costs O(G T) and no G x G
    or n x (units) matrix is formed; the t* statistics are linear (numerator) and quadratic
    (variance) in the null value, so inverting the test for the interval reuses the draws.
    On a balanced panel without controls (every township in every month once) the same
    statistics come from the two-way demeaned grids and the treatment paths (cohorts), so
    a draw costs O(G P) for P paths (:func:`_wild_balanced`; the same weights, t* equal to
    the general computation's to about 1e-13 of the largest |t*|): 9,999 draws at 40,000
    townships x 96 months take about 2 s, the weights' generation about half of it.
    Works on unbalanced panels: rows without an outcome are dropped (counted in
    ``diagnostics``) and the rest used as they are (missing at random given unit and
    period). Requires the townships to be nested in the clusters.
    """
    data, outcome, unit, time, cohort, indicator, cluster, covariates = _resolve(
        data, "wild_cluster_bootstrap", outcome=outcome, unit=unit, time=time, cohort=cohort, indicator=indicator,
        cluster=cluster, supports_cluster=True, covariates=covariates, supports_covariates=True)
    cluster = cluster or unit
    d = data.dropna(subset=[outcome])
    if d.empty:
        raise EstimationError(f"no rows with '{outcome}'")
    k = len(covariates)
    X = _check_controls(d, covariates, unit=unit, time=time) if k else None
    u_codes, N = factorize(d[unit])
    t_codes, T = factorize(d[time])
    g_codes, uniques = pd.factorize(d[cluster], sort=True)
    G, n = len(uniques), len(d)
    if G < 2:
        raise EstimationError("the wild cluster bootstrap needs at least two clusters")
    if not nested_in(u_codes, g_codes):
        raise EstimationError(f"townships ('{unit}') must be nested in the clusters ('{cluster}'): "
                              "cluster by township or by a level above it (e.g. county)")
    if T < 2:
        raise EstimationError("the panel needs at least two periods")
    y = d[outcome].to_numpy(float)
    D = treatment_indicator(d, time=time, cohort=cohort).to_numpy(float)
    if _BALANCED_FAST_PATH and not k and n == N * T and bool(
            (np.bincount(u_codes * T + t_codes, minlength=N * T) == 1).all()):
        beta, se, ssc, draw = _wild_balanced(y, D, u_codes, t_codes, g_codes, N=N, T=T, G=G, impose_null=impose_null,
                                             squares=weights_type != "rademacher")
    else:
        beta, se, ssc, draw = _wild_general(y, D, X, covariates, u_codes, t_codes, g_codes, N=N, T=T, G=G,
                                            impose_null=impose_null)
    if not se > 0:
        raise EstimationError("the cluster-robust standard error is zero")
    rng = np.random.default_rng(seed)
    n_weights, enumerated, chunks = _bootstrap_weights(G, draws, weights_type, rng, max_enumerate)
    pieces = np.empty((5, n_weights))                                         # num0, num1, A, B, C per draw
    start = 0
    with _single_blas_thread():  # many small products: one BLAS thread (see _single_blas_thread)
        for V in chunks:
            stop = start + len(V)
            pieces[:, start:stop] = draw(V)
            start = stop
    num0, num1, A, B, C = pieces

    def t_star(r: float) -> np.ndarray:
        var = ssc * np.maximum(A - 2 * r * B + r * r * C, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (num0 - r * num1) / np.sqrt(var)

    def p_value(r: float) -> float:
        # ties count as "at least as extreme" (the all-ones draw reproduces t exactly)
        t_r = abs(beta - r) / se
        return float(np.mean(np.abs(t_star(r if impose_null else 0.0)) >= t_r * (1 - 1e-10)))

    p0 = p_value(0.0)
    if impose_null:
        low, high = _invert(p_value, beta, se, alpha)
    else:
        q = float(np.quantile(np.abs(t_star(0.0)), 1 - alpha))
        low, high = beta - q * se, beta + q * se
    label = "restricted (null imposed)" if impose_null else "unrestricted, percentile-t interval"
    effect = Effect(estimand="att", estimate=beta, std_error=se, ci_low=low, ci_high=high, p_value=p0,
                    method="two-way fixed effects (unit and period)"
                    + (f" with controls ({', '.join(covariates)})" if k else ""),
                    inference=(f"wild cluster bootstrap-t, {label}, {weights_type} weights, "
                               + (f"all {n_weights:,} sign vectors" if enumerated
                                  else f"{n_weights:,} draws (seed {seed})")
                               + f", {G} clusters"),
                    n_obs=n, n_units=N, n_treated=d.loc[D != 0, unit].nunique(),
                    indicator=indicator, alpha=alpha, p_floor=1 / n_weights,
                    extra={"enumerated": enumerated, "t": beta / se})
    return Estimates(effects=[effect], method=effect.method, plot_data=pd.DataFrame({"t_star": t_star(0.0)}),
                     kind="wild_cluster_bootstrap", wald=False,
                     diagnostics={"enumerated": enumerated, "draws": n_weights, "clusters": G, "observations": n,
                                  "dropped_missing_rows": int(len(data) - n),
                                  **({"controls": list(covariates)} if k else {})})
