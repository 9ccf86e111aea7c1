"""Saturated staggered-adoption regressions: Sun and Abraham's interaction-weighted event
study and Wooldridge's extended two-way fixed effects (linear and Poisson).

Both fit one regression with a dummy for every treated cohort x period cell (so no cohort's
effect stands in for another's, the problem of plain TWFE event studies with heterogeneous
effects; Sun and Abraham 2021, Goodman-Bacon 2021), and aggregate the cells with weights treated
as fixed and a delta-method covariance from the regression's cluster-robust one (cluster by
unit unless ``cluster`` says otherwise; fixest's small-sample adjustment, t intervals with
G - 1 degrees of freedom).

The linear fits never form the rows x cells dummy design: :func:`_cell_ols` computes the
least-squares fit with unit (or cohort) and period effects from per-cohort period x period
count tables and per-cluster sums (Frisch-Waugh-Lovell, as the count-table event study of
:mod:`evaluation.estimators.did`), with the numbers of ``fe_ols`` on the dense design
(:func:`_dense_cell_ols`, kept as the reference of its tests) and memory linear in the rows.
The Poisson fit does the same with weighted tables at each IRLS step (:func:`_cell_poisson`;
the numbers of :func:`fe_poisson` on the dense design, :func:`_dense_cell_poisson`).

Rows: those with an outcome (an unbalanced panel uses the rows present). The cohort is
the first treated period on the ``time`` scale, 0 or missing for never treated; it must be
constant within a unit. Cohorts starting after the last period are never treated in the
data and count as such (as R did and fixest's ``sunab``); cohorts with no untreated row
(treated from the first period: always treated) are dropped, as both do. Without
never-treated units the last-treated cohort is the comparison and every period from its
start is dropped (Sun and Abraham 2021: only effects before the last cohort's start are
identified); ``diagnostics["control"]`` says which comparison was used. fixest's ``sunab``
differs here: it takes as reference only cohorts never observed treated, and with none it
leaves the collinear dummies to be dropped.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

from evaluation.errors import EstimationError
from evaluation.estimators.did import _check, _period_inverse, _solve_within, _sum_table
from evaluation.estimators.fixed_effects import (
    FEFit,
    _poisson_irls,
    _sorted_balanced,
    factorize,
    fe_ols,
    fe_poisson,
    nested_in,
    small_sample_factor,
)
from evaluation.estimators.imputation import _columns
from evaluation.results import Effect, Estimates, vcov_frame

COHORT, PERIOD = "_cohort_", "_period_"


# ----------------------------------------------------------------------------- shared steps

def _prepare(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str, cluster: str,
             needed: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict]:
    """The rows used, with the numeric cohort (0: comparison) in ``_cohort_`` and the
    period in ``_period_``, and what was dropped and why."""
    # only the columns used: the rows kept are a copy (other columns of the frame, names, text, are not copied)
    d = _check(_columns(data, unit, time, outcome, cohort, cluster, *needed), unit, time, outcome, None,
               needed=[cohort, cluster, *needed])
    notes: dict = {"dropped_missing_rows": int(len(data) - len(d))}
    try:
        t = d[time].astype(float).to_numpy()
        g = d[cohort].fillna(0).astype(float).to_numpy()
    except (TypeError, ValueError) as err:
        raise EstimationError(f"'{time}' and '{cohort}' must be numeric on one time scale ({err})") from None
    if (g < 0).any():
        raise EstimationError(f"'{cohort}' has negative values: use 0 or missing for never treated")
    if (pd.Series(g).groupby(d[unit].to_numpy()).nunique() > 1).any():
        raise EstimationError(f"'{cohort}' varies within a unit: it must be the unit's first treated period")
    late = np.unique(g[g > t.max()])
    if len(late):
        g = np.where(g > t.max(), 0.0, g)
        notes["cohorts_after_last_period"] = late.tolist()
    pre_rows = pd.Series((g > 0) & (t < g)).groupby(g).any()
    always = [c for c in pre_rows.index if c > 0 and not pre_rows[c]]
    if always:
        keep = ~np.isin(g, always)
        notes["dropped_always_treated_units"] = int(d.loc[~keep, unit].nunique())
        d, t, g = d[keep], t[keep], g[keep]
    if not (g > 0).any():
        raise EstimationError(f"no treated units with a pre-treatment period: every '{cohort}' is 0, missing, "
                              "after the last period or at the first")
    if (g == 0).any():
        notes["control"] = "never-treated units"
    else:
        last = g.max()
        keep = t < last
        notes["control"] = (f"last-treated cohort {last:g} (no never-treated units); periods from {last:g} on "
                            "dropped")
        notes["dropped_periods_rows"] = int((~keep).sum())
        d, t, g = d[keep], t[keep], np.where(g[keep] == last, 0.0, g[keep])
        if not (g > 0).any():
            raise EstimationError(f"a single cohort and no never-treated units in '{cohort}': nothing to compare")
    d = d.assign(**{COHORT: g, PERIOD: t})
    return d, notes


def _cells(g: np.ndarray, t: np.ndarray, in_cell: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """Code of each row's cohort x period cell (-1: none) and the cells (cohort, period,
    event_time, n_obs), sorted by cohort then period."""
    periods, t_code = np.unique(t, return_inverse=True)
    cohorts, g_code = np.unique(g, return_inverse=True)
    key = g_code.astype(np.int64) * len(periods) + t_code
    used, inverse, counts = np.unique(key[in_cell], return_inverse=True, return_counts=True)
    code = np.full(len(g), -1, dtype=np.int64)
    code[in_cell] = inverse
    table = pd.DataFrame({"cohort": cohorts[used // len(periods)], "period": periods[used % len(periods)],
                          "n_obs": counts})
    table["event_time"] = (table["period"] - table["cohort"]).round().astype(int)
    return code, table[["cohort", "period", "event_time", "n_obs"]]


def _dummies(code: np.ndarray, k: int) -> np.ndarray:
    X = np.zeros((len(code), k), order="F")
    rows = np.flatnonzero(code >= 0)
    X[rows, code[rows]] = 1.0
    return X


def _dense_cell_ols(y: np.ndarray, code: np.ndarray, names: list[str], group: np.ndarray, period: np.ndarray,
                    cohort: np.ndarray, clusters: np.ndarray, adjustment: str) -> FEFit:
    """:func:`_cell_ols` on the dense rows x cells design (``fe_ols``): the implementation
    it replaced, kept as the reference of its tests (``cohort`` is not needed here)."""
    return fe_ols(y, _dummies(code, len(names)), names, [group, period], clusters, adjustment=adjustment)


_SCORE_BLOCK = 1 << 21  # entries of one block of cluster scores (clusters x (cells + periods)): 16 MiB


def _cell_ols(y: np.ndarray, code: np.ndarray, names: list[str], group: np.ndarray, period: np.ndarray,
              cohort: np.ndarray, clusters: np.ndarray, adjustment: str, combine: np.ndarray | None = None,
              keep: dict | None = None) -> FEFit:
    """OLS of y on K cohort x period cell dummies with ``group`` (unit or cohort) and period
    fixed effects and CR1 errors: the numbers of ``fe_ols`` on the dense rows x K design
    (:func:`_dense_cell_ols`), computed from per-cohort period x period tables and
    per-cluster sums, never a rows x cells array (nor a units x cells one, except the
    constant parts c below when a unit spans clusters).

    ``code``: each row's cell (0..K-1, -1: none); ``cohort``: each row's cohort code (any
    integers, constant within a group); a cell is every row of one (cohort, period) pair
    (checked). Frisch-Waugh-Lovell as in :func:`evaluation.estimators.did._event_study_ols`
    (A the group, P the period dummies, M = M_A - M_A P S^+ P' M_A, S = P' M_A P), with
    the count tables written per cohort: with O the group x period incidence (counts), n_a
    a group's rows and W_h = sum over the groups a of cohort h of O_a O_a' / n_a (T x T),
    X' M_A X = diag(N_k) - W_h[t_k, t_l] for cells k, l of one cohort h (0 across cohorts),
    P' M_A X = N_k e_{t_k} - W_h[:, t_k] and S = diag(m_t) - sum_h W_h. Complete groups
    (each period once) add 11'/T to their W_h in closed form. The cluster scores are
    s_g = (cluster x cell sums of u) - (cluster x period sums of u) Q [- (cluster x group
    sums of u) c when groups span clusters], Q = S^+ P' M_A X, c_a = (C_a - O_a Q) / n_a,
    accumulated over blocks of clusters (rows sorted by cluster when more than one block).

    ``combine`` (cells x regressors, ``names`` the regressors): the regressors are sums of
    cells, X L (event-time dummies as sums of one cell per cohort): every table above is
    taken times L. ``keep``: a dict that receives ``bread`` ((X~'X~)^-1) and ``scores``
    (clusters x regressors, the s_g)."""
    # one BLAS thread: the products here are small (T x T, K x K) or thin, and threaded
    # OpenBLAS stalls on them on a busy machine (a 285 x 285 Cholesky: 0.28 s on 2 threads, 2 ms on one)
    with threadpool_limits(limits=1, user_api="blas"):
        return _cell_ols_arrays(y, code, names, group, period, cohort, clusters, adjustment, combine, keep)


def _cell_layout(code: np.ndarray, group: np.ndarray, period: np.ndarray, cohort: np.ndarray, K: int, N: int,
                 T: int) -> tuple:
    """Where the K cells lie: the rows in a cell (``on``) and their cells (``c_on``), each
    row's cohort index, the number of cohorts, each group's cohort, each cell's cohort and
    period, and the rows per cell. Raises unless every cell holds all the rows of one
    (cohort, period) pair, as the count tables assume."""
    on = np.flatnonzero(code >= 0)
    c_on = code[on]
    cohorts, coh = np.unique(cohort, return_inverse=True)
    H = len(cohorts)
    group_cohort = np.zeros(N, dtype=np.int64)
    group_cohort[group] = coh
    first = np.zeros(K, dtype=np.int64)
    first[c_on] = on  # a row of each cell
    cell_cohort, cell_period = coh[first], period[first]
    rows = np.bincount(c_on, minlength=K)
    pairs = np.bincount(coh * T + period, minlength=H * T)
    if ((rows == 0).any() or not np.array_equal(pairs[cell_cohort * T + cell_period], rows)
            or not np.array_equal(coh[on], cell_cohort[c_on]) or not np.array_equal(period[on], cell_period[c_on])):
        raise EstimationError("internal: a cell must hold every row of one (cohort, period) pair")
    return on, c_on, coh, H, group_cohort, cell_cohort, cell_period, rows


def _cell_tables(code: np.ndarray, group: np.ndarray, period: np.ndarray, cohort: np.ndarray, K: int) -> dict:
    """The count tables of :func:`_cell_ols` that do not involve the outcome: S^+, X'M_A X,
    P'M_A X (K cells) and the group x period incidence of the incomplete groups."""
    N, T = int(group.max()) + 1, int(period.max()) + 1
    n_a = np.bincount(group, minlength=N).astype(float)
    m_t = np.bincount(period, minlength=T).astype(float)
    on, c_on, coh, H, group_cohort, cell_cohort, cell_period, rows = _cell_layout(code, group, period, cohort,
                                                                                 K, N, T)
    N_k = rows.astype(float)

    # W_h: complete groups in closed form, the others from their incidence rows
    if _sorted_balanced(group, period) is not None:
        complete = np.ones(N, bool)
    else:
        unique_cells = not pd.Series(group.astype(np.int64) * T + period).duplicated().any()
        complete = n_a == T if unique_cells else np.zeros(N, bool)
    incomplete = np.flatnonzero(~complete)
    W = np.zeros((H, T, T))
    W += (np.bincount(group_cohort[complete], minlength=H) / T)[:, None, None]
    O_inc, inc_cohort = None, group_cohort[incomplete]
    if len(incomplete):
        slot = np.full(N, -1)
        slot[incomplete] = np.arange(len(incomplete))
        partial = ~complete[group]
        O_inc = _sum_table(slot[group[partial]], period[partial], np.ones(int(partial.sum())),
                           (len(incomplete), T))  # dense, or CSR when the table is sparse
        for h in np.unique(inc_cohort):
            rows = np.flatnonzero(inc_cohort == h)
            O_h = O_inc[rows]
            scaled = O_h.multiply(1 / n_a[incomplete[rows]][:, None]) if hasattr(O_h, "multiply") else \
                O_h / n_a[incomplete[rows]][:, None]
            prod = O_h.T @ scaled
            W[h] += prod.toarray() if hasattr(prod, "toarray") else prod
    S_plus = _period_inverse(np.diag(m_t) - W.sum(axis=0))  # groups and periods as units and periods

    XtX_A = np.diag(N_k)                                              # X' M_A X
    PMX = np.empty((T, K))
    for h in np.unique(cell_cohort):
        idx = np.flatnonzero(cell_cohort == h)
        tk = cell_period[idx]
        XtX_A[np.ix_(idx, idx)] -= W[h][np.ix_(tk, tk)]
        PMX[:, idx] = -W[h][:, tk]
    PMX[cell_period, np.arange(K)] += N_k                             # P' M_A X  (T x K)
    return {"N": N, "T": T, "n_a": n_a, "on": on, "c_on": c_on, "S_plus": S_plus, "XtX_A": XtX_A, "PMX": PMX,
            "complete": complete, "incomplete": incomplete, "O_inc": O_inc, "inc_cohort": inc_cohort,
            "group_cohort": group_cohort, "cell_cohort": cell_cohort, "cell_period": cell_period}


def _cell_ols_arrays(y: np.ndarray, code: np.ndarray, names: list[str], group: np.ndarray, period: np.ndarray,
                     cohort: np.ndarray, clusters: np.ndarray, adjustment: str, combine: np.ndarray | None = None,
                     keep: dict | None = None) -> FEFit:
    n, K = len(y), len(names)
    cells = K if combine is None else combine.shape[0]
    tab = _cell_tables(code, group, period, cohort, cells)
    N, T, n_a, on, c_on, S_plus = (tab[k] for k in ("N", "T", "n_a", "on", "c_on", "S_plus"))
    G = int(clusters.max()) + 1
    XtX_A, PMX = tab["XtX_A"], tab["PMX"]
    if combine is not None:
        XtX_A, PMX = combine.T @ XtX_A @ combine, PMX @ combine
    Q = S_plus @ PMX
    XtX = XtX_A - PMX.T @ Q
    y_within = y - (np.bincount(group, y, minlength=N) / n_a)[group]
    Xty = np.bincount(c_on, y_within[on], minlength=cells)
    if combine is not None:
        Xty = combine.T @ Xty
    Xty = Xty - Q.T @ np.bincount(period, y_within, minlength=T)
    del y_within
    bread, coef = _solve_within(XtX, Xty, names)

    resid = y.copy()
    resid[on] -= (coef if combine is None else combine @ coef)[c_on]
    resid -= (np.bincount(group, resid, minlength=N) / n_a)[group]   # M_A (y - Xb)
    h = (S_plus @ np.bincount(period, resid, minlength=T))[period]
    resid -= h
    h = np.bincount(group, h, minlength=N) / n_a
    resid += h[group]                                                  # M (y - Xb)
    del h

    fe_nested = [nested_in(group, clusters, levels=N), nested_in(period, clusters, levels=T)]
    c = None
    if not fe_nested[0]:  # a group spans clusters: its constant part c_a = (C_a - O_a Q) / n_a (N x K)
        complete, incomplete, O_inc = tab["complete"], tab["incomplete"], tab["O_inc"]
        cell_cohort, cell_period, group_cohort = tab["cell_cohort"], tab["cell_period"], tab["group_cohort"]
        c = np.zeros((N, cells))
        for hh in np.unique(cell_cohort):
            idx = np.flatnonzero(cell_cohort == hh)
            members = np.flatnonzero(complete & (group_cohort == hh))
            c[np.ix_(members, idx)] = 1.0
            if len(incomplete):
                rows = np.flatnonzero(tab["inc_cohort"] == hh)
                block = O_inc[rows][:, cell_period[idx]]
                c[np.ix_(incomplete[rows], idx)] = block.toarray() if hasattr(block, "toarray") else block
        if combine is not None:
            c = c @ combine
        c[complete] -= Q.sum(axis=0)
        if len(incomplete):
            c[incomplete] -= O_inc @ Q
        c /= n_a[:, None]
    scores = np.zeros((G, K)) if keep is not None else None
    meat = _cell_meat(resid, code, group, period, clusters, Q, c, K, T, N, G, combine=combine, scores=scores)
    factor, df_k = small_sample_factor(adjustment, n=n, k=K, fe_levels=[N, T], fe_nested=fe_nested, n_clusters=G)
    vcov = factor * bread @ meat @ bread
    if keep is not None:
        keep.update(bread=bread, scores=scores)
    return FEFit(names=list(names), coef=coef, vcov=vcov, n_obs=n, n_clusters=G, df_k=df_k,
                 adjustment=adjustment, resid=resid, fitted=y - resid)


def _cell_meat(u: np.ndarray, code: np.ndarray, group: np.ndarray, period: np.ndarray, clusters: np.ndarray,
               Q: np.ndarray, c: np.ndarray | None, K: int, T: int, N: int, G: int, combine: np.ndarray | None = None,
               scores: np.ndarray | None = None) -> np.ndarray:
    """sum over clusters of s_g s_g', s_g = (cluster x cell sums of u) [L] - (cluster x
    period sums of u) Q [- (cluster x group sums of u) c], accumulated over blocks of
    clusters of at most :data:`_SCORE_BLOCK` entries (rows sorted by cluster when more than
    one block); ``combine``: L (cells x K); ``scores``: a G x K array that receives the s_g."""
    cells = K if combine is None else combine.shape[0]
    meat = np.zeros((K, K))
    per_block = max(1, _SCORE_BLOCK // (cells + T + (N if c is not None else 0)))
    if G <= per_block:
        blocks = [(0, G, slice(None))]
    else:
        order = np.argsort(clusters, kind="stable")
        bounds = np.searchsorted(clusters[order], np.arange(0, G + per_block, per_block).clip(max=G))
        blocks = [(lo, min(lo + per_block, G), order[bounds[i]:bounds[i + 1]])
                  for i, lo in enumerate(range(0, G, per_block))]
    for lo, hi, rows in blocks:
        B = hi - lo
        cl, ur, k_r = clusters[rows] - lo, u[rows], code[rows]
        inside = k_r >= 0
        # (float: bincount of no rows, a block without a cell row, returns integers)
        s = np.bincount(cl[inside] * cells + k_r[inside], weights=ur[inside], minlength=B * cells).reshape(B, cells)
        s = s.astype(float, copy=False)
        if combine is not None:
            s = s @ combine
        s -= np.bincount(cl * T + period[rows], weights=ur, minlength=B * T).reshape(B, T) @ Q
        if c is not None:
            s -= _sum_table(cl, group[rows], ur, (B, N)) @ c
        meat += s.T @ s
        if scores is not None:
            scores[lo:hi] = s
    return meat


def _dense_cell_poisson(y: np.ndarray, code: np.ndarray, names: list[str], group: np.ndarray, period: np.ndarray,
                        cohort: np.ndarray, clusters: np.ndarray, offset: np.ndarray | None,
                        adjustment: str) -> FEFit:
    """:func:`_cell_poisson` on the dense rows x cells design (``fe_poisson``): the
    implementation it replaced, kept as the reference of its tests (``cohort`` is not needed)."""
    return fe_poisson(y, _dummies(code, len(names)), names, [group, period], clusters, offset=offset,
                      adjustment=adjustment)


def _cell_poisson(y: np.ndarray, code: np.ndarray, names: list[str], group: np.ndarray, period: np.ndarray,
                  cohort: np.ndarray, clusters: np.ndarray, offset: np.ndarray | None, adjustment: str,
                  tol: float = 1e-10, max_iter: int = 100) -> FEFit:
    """Poisson pseudo-maximum likelihood of y on K cohort x period cell dummies with
    ``group`` (unit or cohort) and period fixed effects, offset, and CR1 errors: the numbers
    of ``fe_poisson`` on the dense rows x K design (:func:`_dense_cell_poisson`; the same
    IRLS from the same start, the same stopping rule), with memory linear in the rows.

    Each IRLS step is the weighted least squares of the working outcome on the cells and
    the two fixed effects (weights mu), solved exactly by Frisch-Waugh-Lovell from weighted
    count tables as :func:`_cell_ols` does: with O the group x period table of the
    weights (n_a its row sums, m_t its column sums) and W_h = sum over the groups a of
    cohort h of O_a O_a' / n_a (T x T), X'WM_A X = diag(N_k) - W_h[t_k, t_l] within a
    cohort, P'WM_A X = N_k e_{t_k} - W_h[:, t_k], S = diag(m_t) - sum_h W_h and Q = S^+
    P'WM_A X; the residual M(z - Xb) comes from group and period sums. ``fe_poisson``
    demeans by alternating projections (to 1e-12 of the columns' scale), this solves the
    projection exactly: the two agree to that precision. Cluster scores at the estimate
    (u = y - mu, final weights): s_g = sum over g's rows of u_i (X_i - Q[t_i] - c_a), c_a
    = (C_a - O_a Q) / n_a; when each group lies in one cluster the c part is folded into
    the rows, (u_i - mu_i U_a / n_a)(X_i - Q[t_i]) (U_a the group's sum of u), so no
    groups x cells array is formed (it is, as in :func:`_cell_ols`, when groups span
    clusters). Groups whose outcome is zero throughout must have been dropped
    (:func:`_informative`)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _cell_poisson_arrays(y, code, names, group, period, cohort, clusters, offset, adjustment, tol,
                                    max_iter)


def _cell_poisson_arrays(y, code, names, group, period, cohort, clusters, offset, adjustment, tol,
                         max_iter) -> FEFit:
    n, K = len(y), len(names)
    N, T, G = int(group.max()) + 1, int(period.max()) + 1, int(clusters.max()) + 1
    y = np.asarray(y, dtype=float)
    offset = np.zeros(n) if offset is None else np.asarray(offset, dtype=float)
    on, c_on, coh, H, group_cohort, cell_cohort, cell_period, _ = _cell_layout(code, group, period, cohort, K, N, T)
    by_cohort = [(h, np.flatnonzero(cell_cohort == h), np.flatnonzero(group_cohort == h))
                 for h in np.unique(cell_cohort)]
    members_of = [np.flatnonzero(group_cohort == h) for h in range(H)]

    def projection(w: np.ndarray):
        """O (groups x periods, dense or CSR), n_a, S^+, Q and X'WMX at the weights w."""
        n_a = np.bincount(group, w, minlength=N)
        m_t = np.bincount(period, w, minlength=T)
        N_k = np.bincount(c_on, w[on], minlength=K)
        table = _sum_table(group, period, w, (N, T))
        W = np.zeros((H, T, T))
        for h in range(H):
            if len(members_of[h]):
                O_h = table[members_of[h]]
                scaled = O_h.multiply(1 / n_a[members_of[h]][:, None]) if hasattr(O_h, "multiply") else \
                    O_h / n_a[members_of[h]][:, None]
                prod = O_h.T @ scaled
                W[h] = prod.toarray() if hasattr(prod, "toarray") else prod
        S_plus = _period_inverse(np.diag(m_t) - W.sum(axis=0))
        XtX_A = np.diag(N_k)
        PMX = np.empty((T, K))
        for h, idx, _ in by_cohort:
            tk = cell_period[idx]
            XtX_A[np.ix_(idx, idx)] -= W[h][np.ix_(tk, tk)]
            PMX[:, idx] = -W[h][:, tk]
        PMX[cell_period, np.arange(K)] += N_k
        Q = S_plus @ PMX
        return table, n_a, S_plus, Q, XtX_A - PMX.T @ Q

    def wls(z: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients of the weighted within regression of z, and its residual M(z - Xb)."""
        _, n_a, S_plus, Q, XtX = projection(w)
        wz = w * (z - (np.bincount(group, w * z, minlength=N) / n_a)[group])       # W M_A z
        Xtz = np.bincount(c_on, wz[on], minlength=K) - Q.T @ np.bincount(period, wz, minlength=T)
        del wz
        coef = _solve_within(XtX, Xtz, names)[1]
        r = z.copy()
        r[on] -= coef[c_on]
        r -= (np.bincount(group, w * r, minlength=N) / n_a)[group]                  # M_A (z - Xb)
        h = (S_plus @ np.bincount(period, w * r, minlength=T))[period]
        r -= h
        r += (np.bincount(group, w * h, minlength=N) / n_a)[group]                  # M (z - Xb)
        return coef, r

    def solve(z: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coef, r = wls(z, mu)
        r -= z
        np.negative(r, out=r)  # z - r, in r's memory
        return coef, r

    coef, eta, mu = _poisson_irls(y, offset, solve, tol=tol, max_iter=max_iter)  # as fe_poisson

    # CR1 at the estimate, with the final weights
    table, n_a, _, Q, XtX = projection(mu)
    bread = np.linalg.inv(XtX)
    u = y - mu
    fe_nested = [nested_in(group, clusters, levels=N), nested_in(period, clusters, levels=T)]
    c = None
    if fe_nested[0]:
        scores_u = u - mu * (np.bincount(group, u, minlength=N) / n_a)[group]
    else:  # a group spans clusters: its constant part c_a = (C_a - O_a Q) / n_a (groups x cells)
        scores_u = u
        c = np.zeros((N, K))
        for _, idx, members in by_cohort:
            block = table[members][:, cell_period[idx]]
            c[np.ix_(members, idx)] = block.toarray() if hasattr(block, "toarray") else block
        c -= table @ Q
        c /= n_a[:, None]
    meat = _cell_meat(scores_u, code, group, period, clusters, Q, c, K, T, N, G)
    del scores_u
    factor, df_k = small_sample_factor(adjustment, n=n, k=K, fe_levels=[N, T], fe_nested=fe_nested, n_clusters=G)
    return FEFit(names=list(names), coef=coef, vcov=factor * bread @ meat @ bread, n_obs=n, n_clusters=G,
                 df_k=df_k, adjustment=adjustment, family="poisson", resid=u, fitted=mu,
                 dropped={"all_zero_groups_rows": 0})


def _cohort_sizes(d: pd.DataFrame, unit: str) -> dict[float, int]:
    """Units per cohort among the rows used."""
    return {float(c): int(n) for c, n in d.groupby(COHORT)[unit].nunique().items()}


def _wald(b: np.ndarray, V: np.ndarray, df: int) -> tuple[float, float, int]:
    q = len(b)
    F = float(b @ np.linalg.solve(V, b) / q)
    return F, float(stats.f.sf(F, q, df)), q


def _inference(fit: FEFit) -> str:
    return f"cluster-robust CR1 by {fit.n_clusters} clusters, {fit.adjustment} small-sample adjustment"


def _combine(R: np.ndarray, coef: np.ndarray, vcov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear combinations R b and their covariance R V R' (weights fixed)."""
    return R @ coef, R @ vcov @ R.T


def _plot(effects: list[Effect], reference: int = -1) -> pd.DataFrame:
    rows = [{"event_time": e.event_time, "estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high}
            for e in effects if e.estimand == "att_event_time"]
    rows.append({"event_time": reference, "estimate": 0.0, "ci_low": 0.0, "ci_high": 0.0})
    return pd.DataFrame(rows).sort_values("event_time").reset_index(drop=True)


# ----------------------------------------------------------------------------- Sun and Abraham

def sun_abraham(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                event_window: tuple[int, int] | None = None, cluster: str | None = None,
                adjustment: Literal["fixest", "dummies", "linearmodels", "none"] = "fixest",
                alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Sun and Abraham's interaction-weighted (IW) event study (Sun and Abraham 2021,
    J Econometrics 225:175-199).

    Regresses the outcome on unit and period fixed effects and a dummy for every treated
    cohort g x event time e = t - g except e = -1 (each cohort's reference), with the
    never-treated units as the comparison (see the module docstring when there are none).
    The coefficient of (g, e) is CATT(g, e), the average effect on cohort g e periods after
    its start, under parallel trends between every cohort and the comparison and no
    anticipation; unlike the binned TWFE event study (:func:`evaluation.estimators.did.event_study`)
    it is not contaminated by other event times' effects. The event-time effect (estimand
    ``att_event_time``, ``event_time`` = e) averages CATT(g, e) over the cohorts observed
    at e, weighted by their shares of the rows at e; the overall ``att`` averages every
    post-treatment cell (e >= 0) weighted by its rows (fixest's ``summary(agg = "ATT")``).
    Both treat the weights as fixed, as fixest's ``aggregate`` does (Sun and Abraham's own
    variance adds a term for estimating the shares; it is omitted here), so the covariance
    is W V W' with V the clustered covariance of the cells.

    The regression is always fully saturated, like fixest's ``sunab`` and pyfixest's
    saturated event study: no event times are binned (binning forces one effect on cohorts
    at different horizons, which reintroduces the contamination) and none are dropped.
    ``event_window=(first, last)`` only chooses which event-time effects are reported
    (default: all); ``att`` always uses every post-treatment cell. The joint Wald test of the
    reported leads (e < -1) is ``diagnostics["pretrend_F"]`` / ``["pretrend_p"]``; the cells
    are ``diagnostics["cells"]``.
    """
    cluster = cluster or unit
    d, notes = _prepare(data, outcome=outcome, unit=unit, time=time, cohort=cohort, cluster=cluster)
    treated = d[COHORT].to_numpy() > 0
    rel = np.where(treated, d[PERIOD].to_numpy() - d[COHORT].to_numpy(), np.nan)
    has_ref = pd.Series(np.isclose(rel, -1.0)).groupby(d[COHORT].to_numpy()).any()
    lacking = [c for c in has_ref.index if c > 0 and not has_ref[c]]
    if lacking:
        # without a row at e = -1 the cohort's dummies span its units' fixed effects
        keep = ~np.isin(d[COHORT].to_numpy(), lacking)
        notes["dropped_cohorts_without_reference"] = lacking
        d, rel, treated = d[keep], rel[keep], treated[keep]
    in_cell = treated & ~np.isclose(rel, -1.0)
    code, cells = _cells(d[COHORT].to_numpy(), d[PERIOD].to_numpy(), in_cell)
    names = [f"g={g:g}, e={e}" for g, e in zip(cells["cohort"], cells["event_time"], strict=True)]
    fit = _cell_ols(d[outcome].to_numpy(float), code, names, factorize(d[unit])[0], factorize(d[PERIOD])[0],
                    d[COHORT].to_numpy(), factorize(d[cluster])[0], adjustment)
    cells["estimate"], cells["std_error"] = fit.coef, fit.se

    e_all = cells["event_time"].to_numpy()
    n = cells["n_obs"].to_numpy(float)
    first, last = (-np.inf, np.inf) if event_window is None else (int(event_window[0]), int(event_window[1]))
    if first > last:
        raise EstimationError(f"event_window must be (first, last) with first <= last, got {event_window}")
    times = [int(k) for k in np.unique(e_all) if first <= k <= last]
    post = e_all >= 0
    if not post.any():
        raise EstimationError("no post-treatment rows: no cohort is observed from its start on")
    R = np.zeros((len(times) + 1, len(cells)))
    for i, k in enumerate(times):
        R[i, e_all == k] = n[e_all == k] / n[e_all == k].sum()
    R[-1, post] = n[post] / n[post].sum()
    est, V = _combine(R, fit.coef, fit.vcov)
    se = np.sqrt(np.diag(V))

    method = "Sun-Abraham interaction-weighted event study"
    inference = _inference(fit)
    size = _cohort_sizes(d, unit)
    n_units = int(d[unit].nunique())
    g_all = cells["cohort"].to_numpy()
    effects = []
    for i, k in enumerate(times):
        n_treated = sum(size[c] for c in np.unique(g_all[e_all == k]))
        effects.append(Effect.from_normal("att_event_time", est[i], se[i], alpha=alpha, df=fit.df_t, method=method,
                                          inference=inference, n_obs=fit.n_obs, n_units=n_units,
                                          n_treated=n_treated, term=f"k={k}", indicator=indicator, event_time=k))
    n_treated = sum(size[c] for c in np.unique(g_all[post]))
    effects.append(Effect.from_normal("att", est[-1], se[-1], alpha=alpha, df=fit.df_t, method=method,
                                      inference=inference, n_obs=fit.n_obs, n_units=n_units, n_treated=n_treated,
                                      term="ATT", indicator=indicator))
    diagnostics = {**notes, "reference": -1, "event_window": None if event_window is None else (first, last),
                   "observations": fit.n_obs, "clusters": fit.n_clusters, "cells": cells,
                   "weights": pd.DataFrame(R, index=[e.label for e in effects], columns=names)}
    leads = [i for i, k in enumerate(times) if k < -1]
    if leads:
        diagnostics["pretrend_F"], diagnostics["pretrend_p"], diagnostics["pretrend_df"] = _wald(
            est[leads], V[np.ix_(leads, leads)], fit.df_t)
    spec = {"estimator": "sun_abraham", "data": data, "outcome": outcome, "unit": unit, "time": time,
            "cohort": cohort, "event_window": event_window, "cluster": cluster, "adjustment": adjustment,
            "alpha": alpha, "indicator": indicator}
    return Estimates(effects=effects, method=method, plot_data=_plot(effects), diagnostics=diagnostics, model=fit,
                     kind="sun_abraham", vcov=vcov_frame(V, effects), spec=spec)


# ----------------------------------------------------------------------------- extended TWFE

def extended_twfe(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                  family: Literal["linear", "poisson"] = "linear", exposure: str | None = None,
                  control_group: Literal["not_yet_treated", "never_treated"] = "not_yet_treated",
                  fixed_effects: Literal["unit", "cohort"] = "unit", cluster: str | None = None,
                  adjustment: Literal["fixest", "dummies", "linearmodels", "none"] = "fixest",
                  alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Wooldridge's extended two-way fixed effects (ETWFE): one regression with a dummy for
    every treated cohort x period cell (g, t >= g), and unit (or cohort) and period fixed
    effects (Wooldridge 2021, "Two-Way Fixed Effects, the Two-Way Mundlak Regression, and
    Difference-in-Differences Estimators", working paper, published 2025 in Empirical
    Economics; Poisson: Wooldridge 2023, Econometrics Journal 26:C31-C66).

    ``control_group="not_yet_treated"`` (Wooldridge's and R etwfe's default): every row
    outside a treated cell is a comparison, so not-yet-treated periods of later cohorts are
    used; ``"never_treated"``: the cells also cover each cohort's pre-treatment periods
    except t = g - 1, so only never-treated units are comparisons (with unit fixed effects
    this is :func:`sun_abraham`'s regression) and the pre-treatment cells are placebo
    effects. The cell coefficient is ATT(g, t) under parallel trends (in levels for
    ``linear``; in the log mean for ``poisson``) and no anticipation.

    Effects: every cell (``att_group_time``, with ``cohort``, ``calendar_time``,
    ``event_time``), the cohort averages over post-treatment periods (``att_cohort``),
    event-time averages (``att_event_time``; pre-treatment ones only with never-treated
    controls) and the simple ``att`` over all post-treatment cells, each aggregate weighting
    cells by their rows (R etwfe's ``emfx``, Stata jwdid's ``estat``), weights fixed,
    delta-method covariance.

    ``fixed_effects``: ``"unit"`` (default) or ``"cohort"`` dummies (R etwfe's default); on a
    balanced panel without covariates the linear cells are the same either way (Wooldridge
    2021), the clustered errors differ slightly.

    ``family="poisson"``: Poisson pseudo-maximum likelihood (IRLS as :func:`fe_poisson`,
    from weighted count tables, :func:`_cell_poisson`; consistent
    with unit fixed effects, which is the default here; ``fixed_effects="cohort"`` is
    Wooldridge's pooled form) on the count ``outcome`` with offset log(``exposure``). The
    effects are on the outcome's scale: ATT(g, t) = mean over the cell's rows of
    exp(x b + d_gt) - exp(x b) = mu (1 - exp(-d_gt)) (Wooldridge 2023), the
    aggregates the row-weighted averages of these, with delta-method errors holding the
    fixed effects at their estimates (as R etwfe's ``emfx`` via marginaleffects). One more
    ``att`` (``scale="rate_ratio"``, term ``ATT (rate ratio)``) is the ratio of the fitted
    to the counterfactual expected count summed over all treated rows. The cells'
    log-scale coefficients are ``diagnostics["cells"]``.
    """
    if family not in ("linear", "poisson"):
        raise EstimationError(f"family must be 'linear' or 'poisson', got {family!r}")
    if control_group not in ("not_yet_treated", "never_treated"):
        raise EstimationError(f"control_group must be 'not_yet_treated' or 'never_treated', got {control_group!r}")
    if fixed_effects not in ("unit", "cohort"):
        raise EstimationError(f"fixed_effects must be 'unit' or 'cohort', got {fixed_effects!r}")
    if exposure and family != "poisson":
        raise EstimationError("exposure is the offset of the Poisson form: use family='poisson'")
    cluster = cluster or unit
    d, notes = _prepare(data, outcome=outcome, unit=unit, time=time, cohort=cohort, cluster=cluster,
                        needed=(exposure,) if exposure else ())
    if control_group == "never_treated" and notes["control"] != "never-treated units":
        raise EstimationError(f"control_group='never_treated' but no unit is never treated by '{cohort}'")
    y = d[outcome].to_numpy(float)
    offset = None
    if family == "poisson":
        if (y < 0).any():
            raise EstimationError(f"the count '{outcome}' has negative values")
        if exposure:
            if not (d[exposure] > 0).all():
                raise EstimationError(f"the exposure '{exposure}' must be positive in every row")
            offset = np.log(d[exposure].to_numpy(float))
    g, t = d[COHORT].to_numpy(), d[PERIOD].to_numpy()
    if control_group == "not_yet_treated":
        in_cell = (g > 0) & (t >= g)
    else:
        has_ref = pd.Series(np.isclose(t - g, -1.0) & (g > 0)).groupby(g).any()
        lacking = [c for c in has_ref.index if c > 0 and not has_ref[c]]
        if lacking:
            keep = ~np.isin(g, lacking)
            notes["dropped_cohorts_without_reference"] = lacking
            d, y, g, t = d[keep], y[keep], g[keep], t[keep]
            offset = None if offset is None else offset[keep]
        in_cell = (g > 0) & ~np.isclose(t - g, -1.0)
    fe = [factorize(d[unit] if fixed_effects == "unit" else g)[0], factorize(t)[0]]
    clusters = factorize(d[cluster])[0]
    if family == "poisson":
        keep = _informative(y, fe)
        if not keep.all():
            notes["dropped_all_zero_rows"] = int((~keep).sum())
            d, y, g, t, in_cell = d[keep], y[keep], g[keep], t[keep], in_cell[keep]
            offset = None if offset is None else offset[keep]
            fe = [factorize(c[keep])[0] for c in fe]
            clusters = factorize(clusters[keep])[0]
    code, cells = _cells(g, t, in_cell)
    if not len(cells) or not (cells["event_time"] >= 0).any():
        raise EstimationError("no treated cohort x period cell: no cohort is observed from its start on")
    names = [f"g={a:g}, t={b:g}" for a, b in zip(cells["cohort"], cells["period"], strict=True)]
    # from (weighted) count tables and cluster sums, no rows x cells design
    if family == "linear":
        fit = _cell_ols(y, code, names, fe[0], fe[1], g, clusters, adjustment)
    else:
        fit = _cell_poisson(y, code, names, fe[0], fe[1], g, clusters, offset, adjustment)
    cells["coef"], cells["coef_std_error"] = fit.coef, fit.se

    # the aggregates: rows of J (one per effect) over the cells' coefficients
    n = cells["n_obs"].to_numpy(float)
    e_all, g_all, t_all = cells["event_time"].to_numpy(), cells["cohort"].to_numpy(), cells["period"].to_numpy()
    post = e_all >= 0
    if family == "linear":
        cell_value, cell_grad = fit.coef, n          # the cell's effect, and the sum over its rows of d effect / d coef
    else:
        mu = fit.fitted
        rows = code >= 0
        mu_sum = np.bincount(code[rows], weights=mu[rows], minlength=len(cells))
        cell_value = mu_sum * (1 - np.exp(-fit.coef)) / n
        cell_grad = mu_sum
    parts: list[tuple[str, str, dict, np.ndarray]] = []
    for j in range(len(cells)):
        mask = np.zeros(len(cells), bool)
        mask[j] = True
        parts.append(("att_group_time", names[j], {"cohort": float(g_all[j]), "calendar_time": float(t_all[j]),
                                                   "event_time": int(e_all[j])}, mask))
    for c in np.unique(g_all[post]):
        parts.append(("att_cohort", f"g={c:g}", {"cohort": float(c)}, post & (g_all == c)))
    for k in np.unique(e_all):
        parts.append(("att_event_time", f"k={k}", {"event_time": int(k)}, e_all == k))
    parts.append(("att", "ATT" if family == "linear" else "ATT (level)", {}, post))
    J = np.zeros((len(parts), len(cells)))
    values = np.zeros(len(parts))
    for i, (_, _, _, mask) in enumerate(parts):
        values[i] = (cell_value[mask] * n[mask]).sum() / n[mask].sum()
        J[i, mask] = cell_grad[mask] / n[mask].sum()
    V = J @ fit.vcov @ J.T
    if family == "poisson":
        # ratio of fitted to counterfactual expected counts over every treated post row
        s1 = mu_sum[post].sum()
        s0 = (mu_sum[post] * np.exp(-fit.coef[post])).sum()
        grad_log = np.zeros(len(cells))
        grad_log[post] = mu_sum[post] / s1
        log_rr = float(np.log(s1 / s0))
        J_all = np.vstack([J, grad_log])
        V_log = J_all @ fit.vcov @ J_all.T
    se = np.sqrt(np.diag(V))

    name = "extended TWFE" + (" Poisson (PPML)" if family == "poisson" else "")
    method = (f"{name}, {'unit' if fixed_effects == 'unit' else 'cohort'} and period effects, "
              f"{control_group.replace('_', '-')} controls" + (f", offset log({exposure})" if exposure else ""))
    inference = _inference(fit)
    size = _cohort_sizes(d, unit)
    n_units = int(d[unit].nunique())
    effects = []
    for (estimand, term, fields, mask), v, s in zip(parts, values, se, strict=True):
        n_treated = sum(size[c] for c in np.unique(g_all[mask]))
        effects.append(Effect.from_normal(estimand, v, s, alpha=alpha, df=fit.df_t, method=method,
                                          inference=inference, n_obs=fit.n_obs, n_units=n_units,
                                          n_treated=n_treated, term=term, indicator=indicator, **fields))
    vcov = V
    if family == "poisson":
        rr = Effect.from_normal("att", log_rr, float(np.sqrt(V_log[-1, -1])), alpha=alpha, df=fit.df_t,
                                method=method, inference=inference, n_obs=fit.n_obs, n_units=n_units,
                                n_treated=effects[-1].n_treated, term="ATT (rate ratio)", scale="log",
                                indicator=indicator).exp()
        effects.append(rr)
        scale = np.ones(len(J_all))
        scale[-1] = rr.estimate  # d RR = RR d log RR
        vcov = V_log * np.outer(scale, scale)
        cells["rate_ratio"] = np.exp(fit.coef)
    cells = cells.rename(columns={"period": "calendar_time"})
    diagnostics = {**notes, "observations": fit.n_obs, "clusters": fit.n_clusters, "family": family,
                   "control_group": control_group, "fixed_effects": fixed_effects, "cells": cells}
    spec = {"estimator": "extended_twfe", "data": data, "outcome": outcome, "unit": unit, "time": time,
            "cohort": cohort, "family": family, "exposure": exposure, "control_group": control_group,
            "fixed_effects": fixed_effects, "cluster": cluster, "adjustment": adjustment, "alpha": alpha,
            "indicator": indicator}
    return Estimates(effects=effects, method=method, plot_data=_plot(effects), diagnostics=diagnostics, model=fit,
                     kind="extended_twfe" + ("_poisson" if family == "poisson" else ""),
                     vcov=vcov_frame(vcov, effects), spec=spec)


def _informative(y: np.ndarray, fixed_effects: list[np.ndarray]) -> np.ndarray:
    """Rows outside fixed-effect groups whose outcome is zero throughout (they carry no
    information in Poisson; :func:`fe_poisson` drops them the same way, done here first so
    that its fitted values line up with the rows)."""
    keep = np.ones(len(y), bool)
    while True:
        drop = np.zeros(len(y), bool)
        for codes in fixed_effects:
            sums = np.bincount(codes[keep], weights=y[keep], minlength=int(codes.max()) + 1)
            drop |= keep & (sums[codes] == 0)
        if not drop.any():
            return keep
        keep &= ~drop
