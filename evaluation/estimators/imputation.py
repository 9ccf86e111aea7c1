"""The imputation estimator of Borusyak, Jaravel and Spiess for staggered adoption.

Borusyak K, Jaravel X, Spiess J (2024), "Revisiting Event-Study Designs: Robust and
Efficient Estimation", Review of Economic Studies 91:3253-3285 (BJS below).

Model of the untreated outcome: Y_it(0) = a_i + l_t + e_it (unit and period effects,
parallel trends) and no anticipation. Step 1 fits a_i and l_t by least squares on the
untreated observations only (never-treated rows and not-yet-treated rows, t < cohort).
Step 2 imputes Y_it(0) for every treated observation and takes tau_it = Y_it - Yhat_it(0).
Step 3 averages: the ATT over all treated observations (equal weight per treated
observation) and the ATT at each event time k = t - cohort. Under the two assumptions
each average is unbiased however effects vary across cohorts and over time, and it is
the efficient linear unbiased estimator when the errors are homoskedastic and
independent (BJS Theorem 2). It equals Gardner's two-stage DiD (``did2s``) point for point.

Every estimate is linear in the outcome, sum_it v_it Y_it, with v_it = w_it (the
estimand's weight) on treated observations and v_0 = -Z_0 (Z_0'Z_0)^-1 Z_1' w_1 on
untreated ones (Z the unit and period dummies; BJS eq. 5). Standard errors are BJS
Theorem 3's conservative variance, clustered by unit (or ``cluster``):
sum_g (sum_{it in g} v_it e_it)^2, with e_it the step-1 residual on untreated rows and
tau_it - tau~_it on treated rows, tau~ the v^2-weighted average of tau within the
cohort x period cell (BJS section 4.3; the default of their Stata ``did_imputation``
and of R ``didimputation``). No small-sample factor, normal intervals, as both do. The
variance is exact when effects are the same within a cell and conservative otherwise;
with few units per cell it is biased down (BJS suggest coarser cells or a leave-out
average then).

Pre-trends (BJS section 4.4, "Test 1"): a separate regression on the untreated
observations only of Y on unit and period effects and lead dummies for k = first..-1,
clustered CR1 (fixest's small-sample factor, t with G - 1 degrees of freedom, as their
Stata command uses reghdfe; computed from count tables, each lead the sum of one cohort x
period cell per cohort, never a rows x leads design); the leads are reported as ``att_event_time`` effects with
k < 0 and their joint F test as ``pretrend_F`` / ``pretrend_p`` / ``pretrend_df``. The
leads are relative to the untreated observations outside the window (never-treated
units and treated units' earlier periods), not to k = -1. When the leads cannot be
separated from the unit and period effects (no treated unit has an untreated period
before ``first``; without never-treated units, one more) the earliest leads are the
reference (estimate 0, in ``plot_data`` and the list ``diagnostics['pretrend_reference']``).
Post-period estimates never use the leads: they assume parallel trends.

Gaps: rows without an outcome are dropped and the rest used as an unbalanced panel (the
fixed effects by the package's alternating-projections engine). A unit with no untreated
row (treated from its first observed period) cannot be imputed: it is dropped and named
in ``diagnostics['dropped_units']``. A treated period without any untreated row (every
unit already treated, no never-treated unit) cannot be imputed either: that is an
:class:`~evaluation.errors.EstimationError` naming the periods.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from evaluation.errors import EstimationError
from evaluation.estimators.did import TREATED, _check
from evaluation.estimators.fixed_effects import demean, factorize, fe_ols, nested_in, small_sample_factor
from evaluation.results import Effect, Estimates, vcov_frame

METHOD = "imputation DiD (Borusyak, Jaravel and Spiess)"
SHOWN = 5  # units or periods an error message names


def _columns(data: pd.DataFrame, *names: str) -> pd.DataFrame:
    """The frame's columns among ``names`` (each once; those absent are left to ``_check`` to name)."""
    return data[[c for c in dict.fromkeys(names) if c in data.columns]]


def _listed(values, shown: int = SHOWN) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:shown])
    return text + (f" and {len(values) - shown} more" if len(values) > shown else "")


def _imputation_weights(uc: np.ndarray, tc: np.ndarray, n_units: int, n_periods: int, untreated: np.ndarray,
                        b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit and period parts (a, l) of the untreated weights v_0 = -(a_i + l_t) of BJS eq. 5,
    v_0 = -Z_0 (Z_0'Z_0)^+ Z_1' w_1, for several estimands at once.

    ``b`` (units x estimands) and ``c`` (periods x estimands) are Z_1'w_1: each
    estimand's weights on treated rows summed by unit and by period. The normal equations
    of the unit and period dummies are solved exactly by eliminating the units (a Schur
    complement over the periods, periods x periods): n_i a_i + sum_t B_it l_t = b_i,
    sum_i B_it a_i + m_t l_t = c_t, B the untreated rows per unit and period. The system
    is singular by one level per connected set of units and periods; the least-squares
    solution gives the unique v_0."""
    B = np.bincount(uc[untreated] * n_periods + tc[untreated], minlength=n_units * n_periods)
    B = B.reshape(n_units, n_periods).astype(float)
    n, m = B.sum(axis=1), B.sum(axis=0)
    Bn = B / n[:, None]
    schur = np.diag(m) - B.T @ Bn
    lam = np.linalg.lstsq(schur, c - Bn.T @ b, rcond=None)[0]
    a = (b - B @ lam) / n[:, None]
    return a, lam


def _lead_fit(y0: np.ndarray, k0: np.ndarray, g0: np.ndarray, leads: list[int], unit0: np.ndarray,
              period0: np.ndarray, cl0c: np.ndarray):
    """BJS Test 1's regression on the untreated rows: ``y0`` (step 1's residual) on the lead
    dummies (``k0`` each row's event time, NaN for never-treated units; ``g0`` the cohorts
    and ``period0`` the periods on the time scale) with unit and period effects, CR1 by ``cl0c`` (fixest's factor), from count tables (``saturated._cell_ols``:
    a lead is the sum of one cohort x period cell per cohort, all the untreated rows of
    that pair), never the rows x leads design; the numbers of :func:`_dense_lead_fit`.

    When the leads cannot all be separated from the unit and period effects (every treated
    unit's untreated rows in the window: they add up to unit effects) the earliest become
    the reference, as many as the rank of X~'X~ needs. Returns the leads kept, the reference
    leads, the fit and the leads' cluster scores (clusters of ``cl0c`` x leads) scaled so
    that scores' scores is the fit's CR1 covariance (for the joint covariance with the ATTs)."""
    from evaluation.estimators.saturated import _cell_ols, _cell_tables, _cells

    leads, reference = list(leads), []
    fe0 = [factorize(unit0)[0], factorize(period0)[0]]
    in_lead = np.isfinite(k0) & (k0 >= leads[0])
    code, cells = _cells(g0, period0, in_lead)
    event = cells["event_time"].to_numpy()
    L = (event[:, None] == np.array(leads)[None, :]).astype(float)  # cells x leads
    tab = _cell_tables(code, fe0[0], fe0[1], g0, len(cells))
    full = tab["XtX_A"] - tab["PMX"].T @ tab["S_plus"] @ tab["PMX"]  # the cells' X~'X~
    while leads and np.linalg.matrix_rank(L.T @ full @ L) < len(leads):
        reference.append(leads.pop(0))
        L = L[:, 1:]
    if not leads:
        return leads, reference, None, None
    keep: dict = {}
    try:
        fit = _cell_ols(y0, code, [f"k={k}" for k in leads], fe0[0], fe0[1], g0, cl0c, "fixest", combine=L,
                        keep=keep)
    except EstimationError as exc:
        raise EstimationError(f"the pre-trend leads {leads} cannot be separated from the unit and period "
                              f"effects ({exc}); use a shorter event_window") from exc
    return leads, reference, fit, _scaled(keep["scores"] @ keep["bread"], fe0, cl0c, len(k0), len(leads))


def _dense_lead_fit(y0: np.ndarray, k0: np.ndarray, g0: np.ndarray, leads: list[int], unit0: np.ndarray,
                    period0: np.ndarray, cl0c: np.ndarray):
    """:func:`_lead_fit` on the dense rows x leads design (``fe_ols``): the implementation it
    replaced, kept as the reference of its tests (``g0`` is not needed here)."""
    leads, reference = list(leads), []
    fe0 = [factorize(unit0)[0], factorize(period0)[0]]
    Xt = np.zeros((len(k0), len(leads)), order="F")
    for j, k in enumerate(leads):
        Xt[:, j] = k0 == k
    Xt = demean(Xt, fe0, copy=False)
    while leads and np.linalg.matrix_rank(Xt.T @ Xt) < len(leads):
        reference.append(leads.pop(0))
        Xt = np.asfortranarray(Xt[:, 1:])
    if not leads:
        return leads, reference, None, None
    try:
        fit = fe_ols(y0, Xt, [f"k={k}" for k in leads], fe0, cl0c)
    except EstimationError as exc:
        raise EstimationError(f"the pre-trend leads {leads} cannot be separated from the unit and period "
                              f"effects ({exc}); use a shorter event_window") from exc
    sums = np.column_stack([np.bincount(cl0c, weights=Xt[:, j] * fit.resid, minlength=int(cl0c.max()) + 1)
                            for j in range(len(leads))])
    return leads, reference, fit, _scaled(sums @ np.linalg.inv(Xt.T @ Xt), fe0, cl0c, len(k0), len(leads))


def _scaled(scores: np.ndarray, fe0: list[np.ndarray], cl0c: np.ndarray, n: int, k: int) -> np.ndarray:
    """Cluster scores times the square root of fixest's small-sample factor."""
    factor, _ = small_sample_factor("fixest", n=n, k=k, fe_levels=[int(f.max()) + 1 for f in fe0],
                                    fe_nested=[nested_in(f, cl0c) for f in fe0], n_clusters=int(cl0c.max()) + 1)
    return np.sqrt(factor) * scores


def imputation_did(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                   event_window: tuple[int, int] | None = None, cluster: str | None = None, alpha: float = 0.05,
                   indicator: str | None = None) -> Estimates:
    """ATT of a staggered pilot by the imputation estimator (Borusyak, Jaravel and Spiess
    2024, Review of Economic Studies 91:3253-3285; the module docstring gives the method).

    ``cohort`` is the first treated period on the ``time`` scale (0 or missing: never
    treated); treatment is absorbing from it on. Unit and period effects are fitted on the
    untreated rows (never treated and not yet treated), Y(0) is imputed for the treated
    rows and tau_it = Y_it - Yhat_it(0) averaged. Assumptions: parallel trends (the
    two-way model of Y(0)) and no anticipation; effects may vary freely.

    Effects: the ATT over every treated observation (estimand ``att``, equal weight per
    treated observation, whatever ``event_window`` says) and the ATT at each event time
    k = 0..last (``att_event_time``, ``event_time`` = k); with a lead in ``event_window``
    also BJS's pre-trend coefficients for k = first..-1 (``att_event_time`` with k < 0,
    from the separate regression of their Test 1) and the joint test in ``diagnostics``
    (``pretrend_F``, ``pretrend_p``, ``pretrend_df``). ``event_window=None`` takes every
    event time in the data (on a long panel that is many leads, each a column of the
    pre-trend regression: pass a window there). Standard errors: BJS Theorem 3's conservative variance
    clustered by ``cluster`` (default the unit) for the ATTs, CR1 for the leads; ``vcov``
    holds the covariance of all of them (BJS Stata's joint one).

    ``plot_data`` has one row per event time (``event_time``, ``estimate``,
    ``std_error``, ``ci_low``, ``ci_high``). ``model`` is a dict: ``tau`` (the imputed
    effect of each treated row, indexed as ``data``), ``y0_hat`` (a_i + l_t of step 1 on
    every row: the fitted or imputed Y(0)), ``unit_weights`` and ``period_weights``
    (per estimand, a_i and l_t such that an untreated row's weight is -(a_i + l_t); a
    treated row's is the estimand's w_it) and ``pretrend`` (the fitted Test 1 regression).
    """
    cluster = cluster or unit
    # only the columns used: the rows kept are a copy (other columns of the frame, names, text, are not copied)
    d = _check(_columns(data, unit, time, outcome, cohort, cluster), unit, time, outcome, cohort, needed=[cluster])
    dropped_missing = int(len(data) - len(d))
    if event_window is not None:
        first, last = (int(v) for v in event_window)
        if first > 0 or last < 0:
            raise EstimationError(f"event_window must run from a lead (<= 0) to a lag (>= 0), got {event_window}")
    treated = d[TREATED].to_numpy() != 0
    g = d[cohort].fillna(0).to_numpy(float)
    g = np.where(g > 0, g, 0.0)
    t_values = d[time].to_numpy(float)

    # one cohort per unit, one row per unit and period
    uc, n_units = factorize(d[unit])
    per_unit = pd.DataFrame({"u": uc, "g": g}).groupby("u")["g"].agg(["min", "max"])
    if (per_unit["min"] != per_unit["max"]).any():
        bad = d[unit].to_numpy()[np.isin(uc, per_unit.index[per_unit["min"] != per_unit["max"]])]
        raise EstimationError(f"'{cohort}' must be the same in every row of a unit; it changes within "
                              f"{_listed(pd.unique(bad))}")
    tc, n_periods = factorize(d[time])
    twice = np.bincount(uc * n_periods + tc, minlength=n_units * n_periods) > 1
    if twice.any():
        row = np.flatnonzero(twice[uc * n_periods + tc])[0]
        raise EstimationError(f"unit '{d[unit].iloc[row]}' has period {d[time].iloc[row]} twice: the imputation "
                              "estimator needs one row per unit and period")
    k_all = np.where(g > 0, t_values - g, np.nan)
    if not np.allclose(k_all[g > 0], np.round(k_all[g > 0])):
        raise EstimationError(f"'{time}' - '{cohort}' is not a whole number of periods in some rows: put the "
                              "cohort on the time scale (the first treated period)")

    # units treated from their first observed row have no untreated row: dropped
    untreated_rows = np.bincount(uc[~treated], minlength=n_units)
    lacking = untreated_rows == 0
    dropped_units = []
    if lacking.any():
        drop = lacking[uc]
        dropped_units = sorted(pd.unique(d[unit].to_numpy()[drop]).tolist())
        d, treated, g, t_values, k_all = d[~drop], treated[~drop], g[~drop], t_values[~drop], k_all[~drop]
        if not treated.any():
            raise EstimationError(f"no treated row can be imputed: every treated unit ({_listed(dropped_units)}) "
                                  "is treated from its first observed period, so it has no untreated row")
        uc, n_units = factorize(d[unit])
        tc, n_periods = factorize(d[time])
    untreated = ~treated

    # a treated period needs untreated rows to estimate its period effect
    periods = np.sort(d[time].unique())
    m0 = np.bincount(tc[untreated], minlength=n_periods)
    m1 = np.bincount(tc[treated], minlength=n_periods)
    empty = (m0 == 0) & (m1 > 0)
    if empty.any():
        raise EstimationError(f"no untreated row in period(s) {_listed(periods[empty])} of '{time}' (no never-treated "
                              "unit and every unit already treated): their Y(0) cannot be imputed; drop these "
                              "periods or add never-treated units")
    # ... and the unit and the period of each treated row must be connected through untreated rows
    graph = sparse.coo_matrix((np.ones(int(untreated.sum())), (uc[untreated], n_units + tc[untreated])),
                              shape=(n_units + n_periods,) * 2)
    _, component = connected_components(graph, directed=False)
    cut = component[uc[treated]] != component[n_units + tc[treated]]
    if cut.any():
        pairs = d.loc[treated, [unit, time]].to_numpy()[cut]
        raise EstimationError("the unit and period effects of some treated rows are not connected through "
                              f"untreated rows, so Y(0) cannot be imputed: {_listed(map(tuple, pairs))}")

    # BJS Test 1's leads: dummies for k = first..-1 on the untreated rows of treated units
    k0 = k_all[untreated]
    has_lead = np.isfinite(k0)
    if event_window is not None:
        lead_first = first
    else:
        lead_first = int(k0[has_lead].min()) if has_lead.any() else 0
    leads = [int(k) for k in np.unique(k0[has_lead]) if lead_first <= k <= -1]

    # steps 1 and 2: unit and period effects fitted on the untreated rows alone (weight 0 on treated rows):
    # the demeaned outcome is the residual on untreated rows and tau = Y - Yhat(0) on treated rows
    y = d[outcome].to_numpy(float)
    resid = demean(y, [uc, tc], weights=untreated.astype(float))[:, 0]
    tau = resid[treated]
    fixed = y - resid  # a_i + l_t on every row

    # step 3: the estimands' weights on the treated rows
    k1 = np.round(k_all[treated]).astype(np.int64)
    lag_max = int(k1.max()) if event_window is None else last
    lags = [int(k) for k in np.unique(k1) if 0 <= k <= lag_max]
    n1 = int(treated.sum())
    lag_index = np.full(int(k1.max()) + 1, -1)
    lag_index[lags] = np.arange(len(lags))
    col = lag_index[k1]  # event-time estimand of each treated row (-1: beyond the window)
    in_lag = col >= 0
    counts = np.bincount(col[in_lag], minlength=len(lags)).astype(float)
    n_est = 1 + len(lags)
    uc1, tc1 = uc[treated], tc[treated]
    b = np.zeros((n_units, n_est))
    c = np.zeros((n_periods, n_est))
    b[:, 0] = np.bincount(uc1, minlength=n_units) / n1
    c[:, 0] = np.bincount(tc1, minlength=n_periods) / n1
    w_lag = 1.0 / counts[col[in_lag]]
    n_lags = len(lags)
    b[:, 1:] = np.bincount(uc1[in_lag] * n_lags + col[in_lag], weights=w_lag,
                           minlength=n_units * n_lags).reshape(n_units, n_lags)
    c[:, 1:] = np.bincount(tc1[in_lag] * n_lags + col[in_lag], weights=w_lag,
                           minlength=n_periods * n_lags).reshape(n_periods, n_lags)
    estimates = np.concatenate([[tau.mean()], np.bincount(col[in_lag], weights=tau[in_lag],
                                                          minlength=len(lags)) / counts])
    a_w, l_w = _imputation_weights(uc, tc, n_units, n_periods, untreated, b, c)

    # BJS Theorem 3: e = residual (untreated) or tau - tau~ (treated), tau~ the mean of tau in its cohort x
    # period cell (the v^2-weighted mean, equal weights within a cell for every estimand here)
    cell, _ = factorize(g[treated] * (n_periods + 1) + tc1)
    cell_mean = np.bincount(cell, weights=tau) / np.bincount(cell)
    e1 = tau - cell_mean[cell]
    e0 = resid[untreated]
    clc, n_clusters = factorize(d[cluster])
    cl0, cl1 = clc[untreated], clc[treated]
    by_unit = sparse.csr_matrix((e0, (cl0, uc[untreated])), shape=(n_clusters, n_units))
    by_period = sparse.csr_matrix((e0, (cl0, tc[untreated])), shape=(n_clusters, n_periods))
    scores = -(by_unit @ a_w + by_period @ l_w)
    scores[:, 0] += np.bincount(cl1, weights=e1, minlength=n_clusters) / n1
    if lags:
        scores[:, 1:] += sparse.csr_matrix((e1[in_lag] * w_lag, (cl1[in_lag], col[in_lag])),
                                           shape=(n_clusters, len(lags))).toarray()
    se = np.sqrt(np.einsum("gj,gj->j", scores, scores))
    del by_unit, by_period, e0, e1, w_lag, cell, cl1, k_all  # row-long: not needed below

    n_obs, n_units_used = int(len(d)), int(n_units)
    # one row per unit and period: a unit has at most one row at each event time, so the units behind an
    # event time are its rows
    n_treated_units = [int(np.unique(uc1).size)] + [int(n) for n in counts]
    # cohort x period averages of tau in the variance (BJS section 4.3); the cluster column is in diagnostics
    inference = f"BJS (2024) Theorem 3 conservative variance by {n_clusters} clusters"
    post = []
    treated_rows = [n1] + [int(n) for n in counts]
    for j in range(n_est):
        fields = {} if j == 0 else {"event_time": lags[j - 1], "term": f"k={lags[j - 1]}"}
        post.append(Effect.from_normal(
            "att" if j == 0 else "att_event_time", estimates[j], se[j], alpha=alpha, method=METHOD,
            inference=inference, n_obs=n_obs, n_units=n_units_used,
            n_treated=n_treated_units[j], indicator=indicator,
            extra={"treated_obs": treated_rows[j]}, **fields))

    # BJS Test 1: the leads regressed on the untreated rows only (step 1's residual on the lead dummies with
    # unit and period effects, from count tables: _lead_fit)
    lead_effects, lead_scores, pretrend_fit, reference = [], None, None, []
    diagnostics: dict = {}
    if leads:
        cl0c, n_cl0 = factorize(cl0)
        leads, reference, pretrend_fit, scores0 = _lead_fit(resid[untreated], k0, g[untreated], leads,
                                                            uc[untreated], t_values[untreated], cl0c)
    if leads:
        names = [f"k={k}" for k in leads]
        lead_scores = np.zeros((n_clusters, len(leads)))
        lead_scores[np.unique(cl0)] = scores0  # cl0c's codes are the ranks of the untreated rows' clusters
        lead_inference = (f"cluster-robust CR1 by {pretrend_fit.n_clusters} clusters, fixest small-sample "
                          "adjustment (BJS Test 1: leads regressed on untreated observations)")
        for j, k in enumerate(leads):
            lead_effects.append(Effect.from_normal(
                "att_event_time", pretrend_fit.coef[j], pretrend_fit.se[j], alpha=alpha, df=pretrend_fit.df_t,
                method=METHOD, inference=lead_inference, n_obs=pretrend_fit.n_obs, n_units=n_units_used,
                n_treated=int((k0 == k).sum()), indicator=indicator, event_time=k,
                term=f"k={k}", extra={"pretrend": "BJS Test 1"}))
        treated_clusters = int(pd.unique(cl0[has_lead & (k0 >= lead_first)]).size)
        if len(leads) < treated_clusters:
            F, p, q = pretrend_fit.wald(names)
            diagnostics.update(pretrend_F=F, pretrend_p=p, pretrend_df=q)
        else:
            diagnostics.update(pretrend_F=np.nan, pretrend_p=np.nan, pretrend_df=len(leads),
                               pretrend_note=f"{len(leads)} leads but {treated_clusters} treated clusters: the joint "
                                             "test is not reliable; use a shorter event_window")

    # the overall ATT first, then the event times in order (leads, lags)
    effects = post[:1] + lead_effects + post[1:]
    all_scores = scores if lead_scores is None else np.column_stack([scores[:, :1], lead_scores, scores[:, 1:]])
    vcov = all_scores.T @ all_scores
    timed = [e for e in effects if e.event_time is not None]
    plot = pd.DataFrame({"event_time": [e.event_time for e in timed], "estimate": [e.estimate for e in timed],
                         "std_error": [e.std_error for e in timed], "ci_low": [e.ci_low for e in timed],
                         "ci_high": [e.ci_high for e in timed]})
    if reference:
        plot = pd.concat([plot, pd.DataFrame([{"event_time": k, "estimate": 0.0, "std_error": 0.0, "ci_low": 0.0,
                                               "ci_high": 0.0} for k in reference])], ignore_index=True)
    plot = plot.sort_values("event_time").reset_index(drop=True)

    diagnostics.update({
        "event_window": None if event_window is None else (first, last),
        "observations": n_obs, "untreated_obs": int(untreated.sum()), "treated_obs": n1,
        "treated_obs_beyond_window": int((~in_lag).sum()), "clusters": int(n_clusters),
        "dropped_missing_rows": dropped_missing, "dropped_units": dropped_units,
        "dropped_units_count": len(dropped_units)})
    if dropped_units:
        diagnostics["dropped_units_note"] = (f"{len(dropped_units)} unit(s) treated from their first observed period "
                                             "have no untreated row, so their Y(0) cannot be imputed: dropped")
    if reference:
        diagnostics["pretrend_reference"] = reference
    labels = ["att"] + [f"k={k}" for k in lags]
    units_index = pd.Index(pd.factorize(d[unit], sort=True)[1], name=unit)
    model = {
        "tau": pd.Series(tau, index=d.index[treated], name="tau"),
        "y0_hat": pd.Series(fixed, index=d.index, name="y0_hat"),
        "unit_weights": pd.DataFrame(a_w, index=units_index, columns=labels),
        "period_weights": pd.DataFrame(l_w, index=pd.Index(periods, name=time), columns=labels),
        "pretrend": pretrend_fit,
    }
    spec = {"estimator": "imputation_did", "data": data, "outcome": outcome, "unit": unit, "time": time,
            "cohort": cohort, "event_window": event_window, "cluster": cluster, "alpha": alpha, "indicator": indicator}
    return Estimates(effects=effects, method=METHOD, plot_data=plot, diagnostics=diagnostics, model=model,
                     kind="imputation", vcov=vcov_frame(vcov, effects), spec=spec)
