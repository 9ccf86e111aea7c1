"""Difference-in-differences: the 2x2 design, two-way fixed effects, event studies,
Poisson DiD for counts, and effects by integration model or cohort.

Every estimator takes a long DataFrame first and the names of its columns as keywords
(``outcome``, ``unit``, ``time``, ``cohort``: the first treated period on the ``time``
scale, 0 or missing for never treated), so it runs on the study panel
(:func:`evaluation.data.frames.did_frame`) and on public data alike, and returns
:class:`evaluation.results.Estimates`. Where a binary treatment is needed it is derived
from the cohort: D_it = 1 when the unit has a cohort and t >= cohort (absorbing).

Gaps: rows whose outcome (or another column the model needs) is missing are dropped and
the rest fitted as an unbalanced panel (the fixed effects by alternating projections, the
clustered errors on the rows used); ``n_obs`` of each effect and
``diagnostics["observations"]`` count the rows used, ``diagnostics["dropped_missing_rows"]``
the rows dropped. This is valid when the gaps are unrelated to the potential outcomes
given the unit and period effects (missing at random; Wooldridge 2010, ch. 17.7.2, for
fixed effects on unbalanced panels).

Identifying assumption throughout: parallel trends (without the pilot, pilot and
comparison townships would have changed alike) and no anticipation. With staggered
adoption and effects that grow or differ by cohort, TWFE averages comparisons that use
already-treated units as controls and can be biased (Goodman-Bacon 2021, J Econometrics
225:254-277; :mod:`evaluation.diagnostics.bacon`); Callaway and Sant'Anna's estimator
(:mod:`evaluation.estimators.staggered`) avoids them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import sparse

from evaluation.errors import EstimationError
from evaluation.estimators.fixed_effects import (
    FEFit,
    _constant_in_blocks,
    _fe_ols_grid,
    _full_rank,
    _grid_shape,
    _sorted_layout,
    factorize,
    fe_ols,
    fe_poisson,
    nested_in,
    small_sample_factor,
)
from evaluation.estimators.staggered import _check_covariates
from evaluation.results import Effect, Estimates, vcov_frame

INFERENCE_2X2 = {"conventional": "conventional OLS", "robust": "heteroskedasticity-robust (HC1)",
                 "cluster": "cluster-robust (CR1)"}


TREATED = "D"  # the name of the derived treatment in the fitted model


def treatment_indicator(data: pd.DataFrame, *, time: str, cohort: str) -> pd.Series:
    """D_it = 1 when unit i has a cohort (first treated period > 0) and t >= cohort."""
    c = data[cohort].fillna(0).astype(float)
    return ((c > 0) & (data[time].astype(float) >= c)).astype(float)


def _check(data: pd.DataFrame, unit: str, time: str, outcome: str, cohort: str | None,
           needed: Sequence[str] = ()) -> pd.DataFrame:
    """The rows with an outcome (and every needed column); with ``cohort``, the derived
    treatment in column ``D`` (checked to vary and to have comparison rows).

    Works on the columns' arrays: a frame without missing values is not copied (a shallow,
    copy-on-write copy is returned), and the checks are single passes (no hashing)."""
    missing = [c for c in dict.fromkeys([unit, time, outcome, *([cohort] if cohort else []), *needed])
               if c not in data.columns]
    if missing:
        raise EstimationError(f"columns not in the data: {missing}")
    lacking = _missing_rows(data, [outcome])
    if lacking is not None and lacking.all():
        raise EstimationError(f"the outcome '{outcome}' is missing in every row")
    others = _missing_rows(data, [c for c in dict.fromkeys(needed) if c != outcome])
    if others is not None:
        lacking = others if lacking is None else lacking | others
    d = data[~lacking] if lacking is not None else data.copy(deep=False)
    if not _two_values(d[time]):
        raise EstimationError(f"a single period ('{time}' takes one value): DiD needs periods before and after")
    if cohort:
        treated = _treated_rows(d, time=time, cohort=cohort)
        n_treated = int(np.count_nonzero(treated))
        if n_treated == len(treated):
            raise EstimationError(f"no comparison units: every row is treated (by '{cohort}')")
        if n_treated == 0:
            raise EstimationError(f"the treatment never varies: no unit-period is treated by '{cohort}'")
        # a Series over the new array: assign() would copy a bare array once more
        d = d.assign(**{TREATED: pd.Series(treated.astype(float), index=d.index, copy=False)})
    return d


def _numeric(series: pd.Series) -> bool:
    """Whether the column holds a plain numpy number or boolean type (no object, string or extension type)."""
    return isinstance(series.dtype, np.dtype) and series.dtype.kind in "biuf"


def _missing_rows(data: pd.DataFrame, columns: Sequence[str]) -> np.ndarray | None:
    """The rows missing a value in any of ``columns`` (boolean), None when no row is;
    integer and boolean columns, which cannot hold one, are not read."""
    lacking = None
    for c in columns:
        s = data[c]
        if isinstance(s.dtype, np.dtype) and s.dtype.kind in "biu":
            continue
        m = np.isnan(s.to_numpy()) if _numeric(s) else s.isna().to_numpy()
        if m.any():
            lacking = m if lacking is None else lacking | m
    return lacking


def _two_values(series: pd.Series) -> bool:
    """Whether the column takes at least two distinct non-missing values (``nunique() >= 2``
    by its least and largest value, for numbers)."""
    if not _numeric(series):
        return series.nunique() >= 2
    v = series.to_numpy()
    if len(v) == 0:
        return False
    if v.dtype.kind == "f":  # fmin / fmax pass over NaN; both are NaN only when every value is
        low, high = np.fmin.reduce(v), np.fmax.reduce(v)
        return bool(not np.isnan(low) and low != high)
    return bool(v.min() != v.max())


def _treated_rows(d: pd.DataFrame, *, time: str, cohort: str) -> np.ndarray:
    """:func:`treatment_indicator` as a boolean array (a missing cohort is 0: never treated),
    on the numpy arrays when both columns are numbers."""
    if _numeric(d[time]) and _numeric(d[cohort]):
        c, t = d[cohort].to_numpy(), d[time].to_numpy()
        return (c > 0) & (t >= c)  # a missing cohort (NaN) compares False: never treated
    return treatment_indicator(d, time=time, cohort=cohort).to_numpy() != 0


def _effect(fit: FEFit, name: str, estimand: str, *, method: str, n_units: int, n_treated: int,
            alpha: float, indicator: str | None, term: str = "", scale: str = "indicator", **fields) -> Effect:
    i = fit.index(name)
    inference = f"cluster-robust CR1 by {fit.n_clusters} clusters, {fit.adjustment} small-sample adjustment"
    return Effect.from_normal(estimand, fit.coef[i], fit.se[i], alpha=alpha, df=fit.df_t, method=method,
                              inference=inference, n_obs=fit.n_obs, n_units=n_units, n_treated=n_treated,
                              term=term, scale=scale, indicator=indicator, **fields)


# ----------------------------------------------------------------------------- the grid fast path

_GRID_FAST_PATH = True  # tests switch it off to compare the fast path with the general one


@dataclass
class _Grid:
    """A panel sorted by unit, then period, with every unit in every period once and no
    missing value: the outcome as an N x T view of its column (no copy), the periods'
    ``time`` values, each unit's cohort, its cluster code (None: the unit is the cluster)."""

    Y: np.ndarray
    periods: np.ndarray
    cohort: np.ndarray
    clusters: np.ndarray | None
    column_sums: np.ndarray
    outcome: pd.Series  # the column Y views: held by the fit, it keeps Y unchanged (copy-on-write)


def _codes_or_values(series: pd.Series) -> np.ndarray | None:
    """A column's numbers as they are (numbers compare and sort as their codes would), else
    the codes of :func:`factorize` (sorted ranks); None when a value is missing."""
    if _numeric(series):
        return series.to_numpy()
    try:
        return factorize(series)[0]
    except EstimationError:
        return None


def _grid_panel(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                cluster: str) -> _Grid | None:
    """The panel as a :class:`_Grid` when it is one, else None (the general path then runs,
    and raises its errors). Read in about one pass over each column: the layout
    (:func:`~evaluation.estimators.fixed_effects._grid_shape`), the outcome's period sums
    (a missing or infinite outcome makes one of them not finite: None, the general path
    drops those rows), the cohort and the cluster checked constant within each unit."""
    if not _GRID_FAST_PATH or any(c not in data.columns for c in (outcome, unit, time, cohort, cluster)):
        return None
    t, c, y = data[time], data[cohort], data[outcome]
    if not (_numeric(t) and _numeric(c) and _numeric(y)):
        return None
    unit_values = _codes_or_values(data[unit])
    if unit_values is None:
        return None
    shape = _grid_shape(unit_values, t.to_numpy())
    if shape is None:
        return None
    N, T = shape
    Y = np.ascontiguousarray(y.to_numpy(), dtype=float).reshape(N, T)
    column_sums = Y.sum(axis=0)
    if not np.isfinite(column_sums).all():
        return None
    per_unit = []
    for name in [cohort] + ([cluster] if cluster != unit else []):
        values = c.to_numpy() if name == cohort else _codes_or_values(data[name])
        if values is None:
            return None
        if not _constant_in_blocks(values, T):  # also False for a missing value (NaN)
            return None
        per_unit.append(values[::T])
    clusters = factorize(per_unit[1])[0] if cluster != unit else None
    return _Grid(Y=Y, periods=t.to_numpy()[:T], cohort=per_unit[0], clusters=clusters, column_sums=column_sums,
                 outcome=y)


def _groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values (sorted) and each element's index among them."""
    codes, m = factorize(values)
    uniques = np.empty(m, dtype=values.dtype)
    uniques[codes] = values
    return uniques, codes


# ----------------------------------------------------------------------------- 2x2

def did_2x2(data: pd.DataFrame, *, outcome: str, time: str, cohort: str,
            inference: Literal["conventional", "robust", "cluster"] = "conventional", cluster: str | None = None,
            covariates: Sequence[str] = (), alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Canonical group-by-period DiD: OLS of the outcome on group, post and group x post.

    The group is the units with a ``cohort`` (> 0; 0 or missing: comparison), the post
    period is ``time`` >= the treated units' cohort (one cohort only: with staggered starts
    use :func:`twfe` or Callaway-Sant'Anna). On a two-period design coded 0/1 (e.g.
    Wooldridge's ``y81``) the cohort column is the 0/1 group indicator itself. The
    coefficient of the interaction is the ATT under parallel trends (Card and Krueger
    1994; Wooldridge 2010, ch. 6.5). ``inference``: ``conventional``, ``robust`` (HC1) or
    ``cluster`` (CR1 by ``cluster``, statsmodels' G/(G-1)(N-1)/(N-K) adjustment).
    """
    if inference not in INFERENCE_2X2:
        raise EstimationError(f"inference must be one of {list(INFERENCE_2X2)}, got {inference!r}")
    if inference == "cluster" and not cluster:
        raise EstimationError("inference='cluster' needs the cluster column")
    d = _check(data, cohort, time, outcome, None, needed=list(covariates) + ([cluster] if cluster else []))
    c = d[cohort].fillna(0).astype(float)
    starts = np.unique(c[c > 0])
    if len(starts) == 0 or (c > 0).all():
        raise EstimationError(f"the group never varies: '{cohort}' must be > 0 for treated and 0 for comparison units")
    if len(starts) > 1:
        raise EstimationError(f"{len(starts)} cohorts in '{cohort}' ({starts.tolist()}): the 2x2 design has one start; "
                              "use twfe() or callaway_santanna() for staggered starts")
    group = (c > 0).astype(float)
    post = (d[time].astype(float) >= starts[0]).astype(float)
    if post.nunique() < 2:
        raise EstimationError(f"the post period never varies: every '{time}' is on one side of the start {starts[0]:g}")
    frame = pd.DataFrame({"y": d[outcome].astype(float), "g": group, "p": post})
    for i, cov in enumerate(covariates):
        frame[f"x{i}"] = d[cov].astype(float)
    frame["gp"] = frame["g"] * frame["p"]
    formula = "y ~ g + p + gp" + "".join(f" + x{i}" for i in range(len(covariates)))
    model = smf.ols(formula, frame)
    if inference == "conventional":
        fit = model.fit()
    elif inference == "robust":
        fit = model.fit(cov_type="HC1")
    else:
        fit = model.fit(cov_type="cluster", cov_kwds={"groups": factorize(d[cluster])[0]})
    df = fit.df_resid if inference != "cluster" else int(d[cluster].nunique()) - 1
    effect = Effect.from_normal("att", fit.params["gp"], fit.bse["gp"], alpha=alpha, df=df,
                                method="2x2 difference-in-differences (OLS)", inference=INFERENCE_2X2[inference],
                                n_obs=int(fit.nobs), n_units=int(len(d)), n_treated=int(group.sum()),
                                indicator=indicator, cohort=float(starts[0]))
    return Estimates(effects=[effect], method=effect.method, model=fit, kind="did_2x2",
                     vcov=vcov_frame([[fit.bse["gp"] ** 2]], [effect]),
                     plot_data=frame.groupby(["g", "p"])["y"].mean().rename("mean").reset_index())


# ----------------------------------------------------------------------------- TWFE

def twfe(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
         cluster: str | None = None, weights: str | None = None, covariates: Sequence[str] = (),
         adjustment: Literal["fixest", "dummies", "linearmodels", "none"] = "fixest", alpha: float = 0.05,
         indicator: str | None = None) -> Estimates:
    """Two-way fixed effects: y_it = a_i + l_t + b D_it (+ covariates) + e_it, with
    D_it = 1 from the unit's ``cohort`` (first treated period) on.

    ``b`` is the ATT when effects are the same for every pilot and period (parallel trends,
    no anticipation); with staggered starts and growing effects it is a weighted average
    that can even take the wrong sign (Goodman-Bacon 2021; see
    :mod:`evaluation.diagnostics.bacon`). Errors are clustered by ``cluster`` (default the
    unit; pass the county column to cluster by county) with the named small-sample
    adjustment (:mod:`evaluation.estimators.fixed_effects`; default fixest's). ``weights``
    (e.g. population) gives weighted least squares. The call is kept in ``spec`` so that
    the few-pilot inference functions can take the fit itself.

    ``covariates``: time-varying controls entering linearly beside the township and
    period effects (``feols("y ~ D + x1 + x2 | unit + time")``); ``b`` is then the ATT
    under parallel trends conditional on them, which requires the controls not to be
    affected by the pilot (Angrist and Pischke 2009, sec. 3.2.3, "bad controls"). Their
    coefficients and standard errors are in ``diagnostics["controls"]``; the effect
    stays the one ``att``. A control that does not vary within any township (a
    time-invariant characteristic), or only by period, is collinear with the fixed
    effects and is refused with an error naming it (rather than silently dropped, as
    fixest does); so is a control missing where the outcome is present, or constant.

    On a panel whose rows run through every period of one unit after another (sorted by
    unit, then period; every unit in every period once, no missing value), without weights
    or controls, the fit is computed from the outcome's unit x period grid (its row and
    column sums, its products with cohort x period tables; ``_twfe_grid``): the same
    numbers as the general path, in a few passes over the columns; the residuals and fitted
    values are computed when first read.
    """
    cluster = cluster or unit
    covariates = list(covariates)
    grid = None if covariates or weights else _grid_panel(data, outcome=outcome, unit=unit, time=time,
                                                          cohort=cohort, cluster=cluster)
    fitted = _twfe_grid(grid, adjustment) if grid is not None else None
    if fitted is not None:
        fit, n_units, treated_units = fitted
        dropped = 0
    else:
        if covariates:
            _check_covariates(_rows_with_outcome(data, outcome, [unit, time, *covariates]), covariates, unit=unit,
                             absorbed_by=[unit, time])
        d = _check(data, unit, time, outcome, cohort,
                   needed=list(covariates) + [cluster] + ([weights] if weights else []))
        if weights and not (d[weights] > 0).all():
            raise EstimationError(f"weights '{weights}' must be positive")
        names = [TREATED, *covariates]
        unit_codes, n_units = factorize(d[unit])  # once: the unit is usually the cluster too
        fit = fe_ols(d[outcome].to_numpy(float), d[names].to_numpy(float), names,
                     [unit_codes, factorize(d[time])[0]], unit_codes if cluster == unit else factorize(d[cluster])[0],
                     weights=d[weights].to_numpy(float) if weights else None, adjustment=adjustment)
        treated_units = int(np.unique(unit_codes[d[TREATED].to_numpy() != 0]).size)
        dropped = int(len(data) - len(d))
    method = "two-way fixed effects (unit and period)" + (" WLS" if weights else "")
    effect = _effect(fit, TREATED, "att", method=method, n_units=n_units, n_treated=treated_units,
                     alpha=alpha, indicator=indicator)
    spec = {"estimator": "twfe", "data": data, "outcome": outcome, "unit": unit, "time": time, "cohort": cohort,
            "cluster": cluster, "weights": weights, "covariates": tuple(covariates), "adjustment": adjustment,
            "alpha": alpha, "indicator": indicator}
    diagnostics = {"dropped_missing_rows": dropped, "observations": fit.n_obs, "clusters": fit.n_clusters}
    if covariates:
        diagnostics["controls"] = _controls_table(fit, covariates)
    return Estimates(effects=[effect], method=method, model=fit, kind="twfe",
                     vcov=vcov_frame(fit.vcov[:1, :1], [effect]), spec=spec, diagnostics=diagnostics)


def _twfe_grid(grid: _Grid, adjustment: str) -> tuple[FEFit, int, int] | None:
    """TWFE on a :class:`_Grid`: the treatment D_it = 1 when the unit's cohort is > 0 and
    t >= cohort is, for the units of one cohort, one row of a cohort x period table, which
    is all :func:`~evaluation.estimators.fixed_effects._fe_ols_grid` needs (the fit, the
    units and the treated units); None when no row or every row is treated (the general
    path raises)."""
    N, T = grid.Y.shape
    values, group = _groups(grid.cohort)
    treated = (values > 0)[:, None] & (grid.periods[None, :] >= values[:, None])  # cohort x period
    n_c = np.bincount(group, minlength=len(values))
    rows_treated = int(n_c @ treated.sum(axis=1))
    if rows_treated == 0 or rows_treated == N * T:
        return None
    fit = _fe_ols_grid(grid.Y, group, treated[:, :, None].astype(float), [TREATED], grid.clusters, adjustment,
                       grid.column_sums, owner=grid.outcome)
    return fit, N, int(n_c[treated.any(axis=1)].sum())


def _rows_with_outcome(data: pd.DataFrame, outcome: str, columns: Sequence[str]) -> pd.DataFrame:
    """The rows that have the outcome (where a control must be present too)."""
    missing = [c for c in dict.fromkeys([outcome, *columns]) if c not in data.columns]
    if missing:
        raise EstimationError(f"columns not in the data: {missing}")
    return data.loc[data[outcome].notna(), list(dict.fromkeys(columns))]


def _controls_table(fit: FEFit, covariates: Sequence[str]) -> pd.DataFrame:
    """The controls' coefficients and CR1 standard errors (nuisance terms, not effects)."""
    idx = [fit.index(c) for c in covariates]
    return pd.DataFrame({"term": list(covariates), "estimate": fit.coef[idx], "std_error": fit.se[idx]})


# ----------------------------------------------------------------------------- event study

def _sum_table(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]):
    """sum of ``values`` by (row, column) cell: a dense array when the table is no larger
    than a few columns of the data, a sparse (CSR) matrix otherwise."""
    if shape[0] * shape[1] <= 4 * len(values) + 1024:
        flat = np.bincount(rows * shape[1] + cols, weights=values, minlength=shape[0] * shape[1])
        return flat.reshape(shape)
    return sparse.csr_matrix((values, (rows, cols)), shape=shape)


def _period_inverse(S: np.ndarray) -> np.ndarray:
    """A generalized inverse of the period block S = P' M_A P of the two-way projection:
    the inverse with the first period as reference when the units and periods are
    connected, else the pseudo-inverse (any generalized inverse projects)."""
    S = (S + S.T) / 2
    S_plus = np.zeros_like(S)
    if _full_rank(S[1:, 1:]):
        S_plus[1:, 1:] = np.linalg.inv(S[1:, 1:])
    else:
        S_plus = np.linalg.pinv(S, rtol=1e-10, hermitian=True)
    return S_plus


def _solve_within(XtX: np.ndarray, Xty: np.ndarray, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(X~'X~)^-1 and the coefficients of the within-transformed regression; regressors
    collinear with the fixed effects are an error naming those with no variation left."""
    if not _full_rank(XtX):
        bad = [nm for nm, v in zip(names, np.diag(XtX), strict=True) if v < 1e-20]
        raise EstimationError("regressors are collinear with the fixed effects"
                              + (f" (no variation left in {bad})" if bad else ""))
    bread = np.linalg.inv(XtX)
    return bread, bread @ Xty


def _event_study_ols(y: np.ndarray, column: np.ndarray, names: list[str], unit: np.ndarray, period: np.ndarray,
                     clusters: np.ndarray, adjustment: str) -> FEFit:
    """OLS of y on K event-time dummies with unit and period effects and CR1 errors, equal to
    ``fe_ols`` on the dense n x K design (the same coefficients, covariance, residuals and
    small-sample factor) but computed from count tables, never the design itself.

    ``column`` is each row's dummy (0..K-1, -1: none). By Frisch-Waugh-Lovell, with A the
    unit and P the period dummies, M = M_A - M_A P S^+ P' M_A, S = P' M_A P (T x T), the
    projection the project uses on unbalanced panels (``few_clusters._Projection``; Gaure
    2013 for the algebra of two-way effects). With C the unit x event-time counts, n_i the
    rows of unit i and O the unit x period incidence: X'M_A X = diag(N_k) - C' diag(1/n) C,
    P'M_A X = (period x event-time counts) - O' diag(1/n) C and S = diag(m_t) - O' diag(1/n) O,
    where units seen once in every period (complete) enter O in closed form. Products over
    the units or clusters are einsum loops, not BLAS calls (threaded BLAS stalls on a busy
    machine for a K x K result with a long inner dimension). The residual
    is M(y - Xb), one vector; the cluster scores sum_g x~_i u_i need only the cluster x
    event-time and cluster x period sums of u (and the cluster x unit sums when a unit
    spans clusters), because x~_it = x_it - Q_t - c_i with Q = S^+ P'M_A X.
    """
    n, K = len(y), len(names)
    N, T, G = int(unit.max()) + 1, int(period.max()) + 1, int(clusters.max()) + 1
    n_i = np.bincount(unit, minlength=N).astype(float)
    m_t = np.bincount(period, minlength=T).astype(float)
    on = np.flatnonzero(column >= 0)
    u_on, c_on = unit[on], column[on]
    C = np.bincount(u_on * K + c_on, minlength=N * K).reshape(N, K).astype(float)
    Cn = C / n_i[:, None]
    C_period = np.bincount(period[on] * K + c_on, minlength=T * K).reshape(T, K).astype(float)

    # complete units (every period exactly once) enter O' diag(1/n) (.) in closed form; a
    # panel sorted by unit then period is a N x T grid: unit and period sums are row and
    # column sums of a reshaped view, not gathers and scatters over the rows
    layout = _sorted_layout(unit, period, [N, T])
    grid = layout is not None and layout[0] == 0
    if layout is not None:
        complete = np.ones(N, bool)
    else:
        unique_cells = not pd.Series(unit.astype(np.int64) * T + period).duplicated().any()
        complete = n_i == T if unique_cells else np.zeros(N, bool)
    incomplete = np.flatnonzero(~complete)
    slot = np.full(N, -1)
    slot[incomplete] = np.arange(len(incomplete))
    partial = ~complete[unit]
    incid = sparse.csr_matrix((np.ones(int(partial.sum())), (slot[unit[partial]], period[partial])),
                          shape=(len(incomplete), T))  # duplicates add up: counts

    def incidence_times(M: np.ndarray) -> np.ndarray:
        """O' M (T x columns of M), M one row per unit."""
        return M[complete].sum(axis=0)[None, :] + incid.T @ M[incomplete]

    S = np.diag(m_t) - np.full((T, T), complete.sum() / T) - (incid.T @ sparse.diags(1 / n_i[incomplete]) @ incid).toarray()
    S_plus = _period_inverse(S)

    PMX = C_period - incidence_times(Cn)                           # P' M_A X  (T x K)
    Q = S_plus @ PMX
    XtX = np.diag(C_period.sum(axis=0)) - np.einsum("ik,il->kl", C, Cn) - PMX.T @ Q  # X~'X~
    if grid:
        Y = y.reshape(N, T)
        y_within = (Y - Y.mean(axis=1, keepdims=True)).ravel()
        period_sums = y_within.reshape(N, T).sum(axis=0)
    else:
        y_within = y - (np.bincount(unit, y, minlength=N) / n_i)[unit]
        period_sums = np.bincount(period, y_within, minlength=T)
    Xty = np.bincount(c_on, y_within[on], minlength=K) - Q.T @ period_sums
    bread, coef = _solve_within(XtX, Xty, names)

    del y_within
    resid = y.copy()
    resid[on] -= coef[c_on]
    if grid:  # the same steps on the N x T view
        R = resid.reshape(N, T)
        R -= R.mean(axis=1, keepdims=True)                           # M_A (y - Xb)
        h = S_plus @ R.sum(axis=0)
        R -= h[None, :]
        R += h.mean()                                                # M (y - Xb)
    else:
        resid -= (np.bincount(unit, resid, minlength=N) / n_i)[unit]    # M_A (y - Xb)
        h = (S_plus @ np.bincount(period, resid, minlength=T))[period]
        resid -= h
        h = np.bincount(unit, h, minlength=N) / n_i
        resid += h[unit]                                                 # M (y - Xb)

    fe_nested = [nested_in(unit, clusters), nested_in(period, clusters)]
    scores = np.bincount(clusters[on] * K + c_on, weights=resid[on], minlength=G * K).reshape(G, K)
    if grid and G == N and np.array_equal(clusters[::T], np.arange(N)) and fe_nested[0]:
        scores -= resid.reshape(N, T) @ Q                            # clusters are the units: the grid's rows
    else:
        scores -= _sum_table(clusters, period, resid, (G, T)) @ Q
    if not fe_nested[0]:  # a unit spans clusters: its constant part c_i = C_i/n_i - mean of Q over its periods
        over_periods = np.empty((N, K))  # O Q: the sum of Q over each unit's rows
        over_periods[complete] = Q.sum(axis=0)
        over_periods[incomplete] = incid @ Q
        c = Cn - over_periods / n_i[:, None]
        scores -= _sum_table(clusters, unit, resid, (G, N)) @ c
    factor, df_k = small_sample_factor(adjustment, n=n, k=K, fe_levels=[N, T], fe_nested=fe_nested, n_clusters=G)
    vcov = factor * bread @ np.einsum("gk,gl->kl", scores, scores) @ bread
    return FEFit(names=list(names), coef=coef, vcov=vcov, n_obs=n, n_clusters=G, df_k=df_k,
                 adjustment=adjustment, resid=resid, fitted=y - resid)


def _event_columns(rel: np.ndarray, *, leads: int, lags: int, reference: int) -> tuple[list[int], np.ndarray]:
    """The event times that get a coefficient (those present in ``rel``, the event times
    within the window, NaN for never-treated, except ``reference``) and each element's
    column among them (-1: none), for an array of any shape (rows, or cohorts x periods)."""
    on = ~np.isnan(rel)
    seen = np.bincount(rel[on].astype(int) + leads, minlength=leads + lags + 1) > 0  # counts, not hashing
    event_times = [k for k in range(-leads, lags + 1) if k != reference and seen[k + leads]]
    lookup = np.full(leads + lags + 1, -1)  # event time + leads -> column (-1: reference)
    for j, k in enumerate(event_times):
        lookup[k + leads] = j
    column = np.full(rel.shape, -1)  # the event-time column of each element (-1: none)
    column[on] = lookup[rel[on].astype(int) + leads]
    return event_times, column


def _event_study_grid(grid: _Grid, *, leads: int, lags: int, reference: int,
                      adjustment: str) -> tuple[FEFit, list[int], int, int, int] | None:
    """The binned event study on a :class:`_Grid`: a unit's event-time dummies are those of
    its cohort, one cohort x period x event-time table for
    :func:`~evaluation.estimators.fixed_effects._fe_ols_grid`. The fit, the event times,
    the units, the treated units and the clusters with one; None when no unit or every
    unit is treated, or no event time is left (the general path raises)."""
    values, group = _groups(grid.cohort)
    cohorts = values.astype(float)
    treated = cohorts > 0
    if not treated.any() or treated.all():
        return None
    with np.errstate(invalid="ignore"):
        rel = np.where(treated[:, None], grid.periods.astype(float)[None, :] - cohorts[:, None], np.nan)
    event_times, column = _event_columns(np.clip(rel, -leads, lags), leads=leads, lags=lags, reference=reference)
    if not event_times:
        return None
    E = (column[:, :, None] == np.arange(len(event_times))).astype(float)  # cohort x period x event time
    fit = _fe_ols_grid(grid.Y, group, E, [f"k={k}" for k in event_times], grid.clusters, adjustment,
                       grid.column_sums, owner=grid.outcome)
    units = treated[group]
    n_treated = int(np.count_nonzero(units))
    clusters = n_treated if grid.clusters is None else int(np.count_nonzero(np.bincount(grid.clusters[units])))
    return fit, event_times, len(group), n_treated, clusters


def event_study(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                event_window: tuple[int, int] = (-6, 12), bin_endpoints: bool = True, reference: int = -1,
                cluster: str | None = None, weights: str | None = None, covariates: Sequence[str] = (),
                adjustment: Literal["fixest", "dummies", "linearmodels", "none"] = "fixest",
                alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Leads and lags of the pilot start in a two-way fixed-effects regression.

    ``cohort`` is the first treated period on the ``time`` scale (0 or missing for
    never-treated units). Event times k = t - cohort from ``event_window[0]`` (first,
    negative) to ``event_window[1]`` (last) get one coefficient each, relative to
    ``reference`` (-1, the last pre-period, which gets none). With ``bin_endpoints`` the
    end points collect everything beyond them (the first event time collects all earlier
    periods, the last all later ones); without, observations outside the window are
    dropped. The joint Wald test of all leads (k < reference) is the pre-trend test.
    Coefficients (effects with ``event_time`` = k) are ATTs at each event time under
    parallel trends, no anticipation and effects homogeneous across cohorts (Sun and
    Abraham 2021, J Econometrics 225:175-199, show what they average otherwise).

    Without ``weights`` the regression is computed from unit / period x event-time count
    tables (Frisch-Waugh-Lovell, exact on unbalanced panels too), never the n x K dummy
    design; the numbers are those of ``fe_ols`` on that design, which weighted fits still use.
    On a panel sorted by unit, then period, with every unit in every period once and no
    missing value (and ``bin_endpoints``), it is computed from the outcome's unit x period
    grid and cohort x period x event-time tables instead (``_event_study_grid``; the same
    numbers, as for :func:`twfe`).

    ``covariates``: time-varying controls beside the township and period effects, as in
    :func:`twfe` (same checks: a time-invariant control is refused with an error naming
    it); the fit then uses ``fe_ols`` on the dense design, the effects are still the
    event-time coefficients and the controls' are in ``diagnostics["controls"]``.
    """
    first, last = (int(v) for v in event_window)
    if first > 0 or last < 0:
        raise EstimationError(f"event_window must run from a lead (<= 0) to a lag (>= 0), got {event_window}")
    leads, lags = -first, last
    cluster = cluster or unit
    covariates = list(covariates)
    grid = None if covariates or weights or not bin_endpoints else _grid_panel(
        data, outcome=outcome, unit=unit, time=time, cohort=cohort, cluster=cluster)
    fitted = _event_study_grid(grid, leads=leads, lags=lags, reference=reference,
                               adjustment=adjustment) if grid is not None else None
    if fitted is not None:
        fit, event_times, n_units, n_treated, treated_clusters = fitted
        dropped = 0
    else:
        if covariates:
            _check_covariates(_rows_with_outcome(data, outcome, [unit, time, *covariates]), covariates, unit=unit,
                             absorbed_by=[unit, time])
        d = _check(data, unit, time, outcome, None,
                   needed=[cohort, cluster, *covariates] + ([weights] if weights else []))
        dropped = int(len(data) - len(d))
        ft = d[cohort].to_numpy(float)
        ft = np.where(np.isnan(ft), 0.0, ft)
        treated = ft > 0
        if not treated.any():
            raise EstimationError(f"no treated units: every '{cohort}' is 0 or missing")
        if treated.all():
            raise EstimationError(f"no comparison units: every unit has a '{cohort}'")
        with np.errstate(invalid="ignore"):
            rel_values = np.where(treated, d[time].to_numpy(float) - ft, np.nan)  # event time; NaN never treated
        if bin_endpoints:
            rel_values = np.clip(rel_values, -leads, lags)  # NaN stays NaN
        else:
            keep = ~treated | ((rel_values >= -leads) & (rel_values <= lags))
            d, rel_values = d[keep], rel_values[keep]
        event_times, column = _event_columns(rel_values, leads=leads, lags=lags, reference=reference)
        names = [f"k={k}" for k in event_times]
        y = d[outcome].to_numpy(float)
        unit_codes, n_units = factorize(d[unit])
        time_codes = factorize(d[time])[0]
        cluster_codes = unit_codes if cluster == unit else factorize(d[cluster])[0]
        if weights or covariates:
            # weighted least squares and controls keep the dense n x K design and fe_ols: the
            # count tables of _event_study_ols are unweighted and have no other regressors
            X = np.zeros((len(rel_values), len(event_times) + len(covariates)), order="F")
            on = np.flatnonzero(column >= 0)
            X[on, column[on]] = 1.0
            for j, c in enumerate(covariates):
                X[:, len(event_times) + j] = d[c].to_numpy(float)
            fit = fe_ols(y, X, names + covariates, [unit_codes, time_codes], cluster_codes,
                         weights=d[weights].to_numpy(float) if weights else None, adjustment=adjustment)
        else:
            fit = _event_study_ols(y, column, names, unit_codes, time_codes, cluster_codes, adjustment)
        in_window = ~np.isnan(rel_values)  # pilot rows: every event time, binned or inside the window
        n_treated = int(np.count_nonzero(np.bincount(unit_codes[in_window], minlength=n_units)))
        treated_clusters = int(np.count_nonzero(np.bincount(cluster_codes[in_window])))
    names = [f"k={k}" for k in event_times]
    method = "event study (two-way fixed effects)"
    effects = [_effect(fit, nm, "att_event_time", term=nm, method=method, n_units=n_units, n_treated=n_treated,
                       alpha=alpha, indicator=indicator, event_time=k) for nm, k in zip(names, event_times,
                                                                                        strict=True)]
    pre = [nm for nm, k in zip(names, event_times, strict=True) if k < reference]
    diagnostics = {"reference": reference, "binned": bin_endpoints, "event_window": (first, last),
                   "dropped_missing_rows": dropped, "observations": fit.n_obs}
    if covariates:
        diagnostics["controls"] = _controls_table(fit, covariates)
    if pre and len(pre) < treated_clusters:
        F, p, q = fit.wald(pre)
        diagnostics.update(pretrend_F=F, pretrend_p=p, pretrend_df=q)
    elif pre:
        # the leads' covariance rests on the treated clusters alone: with as many leads as
        # treated clusters it is singular in effect and the F statistic explodes
        diagnostics.update(pretrend_F=np.nan, pretrend_p=np.nan, pretrend_df=len(pre),
                           pretrend_note=f"{len(pre)} leads but {treated_clusters} treated clusters: "
                                         "the joint test is not reliable; use a shorter event_window")
    points = sorted([(e.event_time, e.estimate, e.ci_low, e.ci_high) for e in effects] + [(reference, 0.0, 0.0, 0.0)])
    plot = pd.DataFrame(points, columns=["event_time", "estimate", "ci_low", "ci_high"])  # by event time
    return Estimates(effects=effects, method=method, model=fit, diagnostics=diagnostics, kind="event_study",
                     vcov=vcov_frame(fit.vcov[:len(names), :len(names)], effects), plot_data=plot)


# ----------------------------------------------------------------------------- Poisson

def poisson_did(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                exposure: str | None = None, cluster: str | None = None,
                adjustment: Literal["fixest", "dummies", "linearmodels", "none"] = "fixest",
                alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Poisson (PPML) DiD for counts: log E[y_it] = a_i + l_t + b D_it + log(exposure_it),
    with D_it = 1 from the unit's ``cohort`` on; ``outcome`` is the count.

    ``exposure`` is the denominator (population, or the count a share is taken of), so a
    changing population changes the expected count, not the effect. exp(b) is the rate
    ratio of pilot townships after the start against their counterfactual, under parallel
    trends in the log rate; PPML is consistent without assuming a Poisson variance
    (Santos Silva and Tenreyro 2006, Rev Econ Stat 88:641-658). Reported as the rate
    ratio, the percent change and the log rate ratio (in that order).
    """
    cluster = cluster or unit
    d = _check(data, unit, time, outcome, cohort, needed=[cluster] + ([exposure] if exposure else []))
    if (d[outcome] < 0).any():
        raise EstimationError(f"the count '{outcome}' has negative values")
    if exposure and not (d[exposure] > 0).all():
        raise EstimationError(f"the exposure '{exposure}' must be positive in every row")
    fit = fe_poisson(d[outcome].to_numpy(float), d[[TREATED]].to_numpy(float), [TREATED],
                     [factorize(d[unit])[0], factorize(d[time])[0]], factorize(d[cluster])[0],
                     offset=np.log(d[exposure].to_numpy(float)) if exposure else None, adjustment=adjustment)
    method = "Poisson (PPML) DiD with unit and period effects" + (f", offset log({exposure})" if exposure else "")
    n_units, n_treated = d[unit].nunique(), d.loc[d[TREATED] != 0, unit].nunique()
    log_effect = _effect(fit, TREATED, "att", method=method, n_units=n_units, n_treated=n_treated, alpha=alpha,
                         indicator=indicator, scale="log")
    rate_ratio = log_effect.exp()
    percent = Effect(estimand="att", estimate=100 * (rate_ratio.estimate - 1), std_error=100 * rate_ratio.std_error,
                     ci_low=100 * (rate_ratio.ci_low - 1), ci_high=100 * (rate_ratio.ci_high - 1),
                     p_value=rate_ratio.p_value, method=method, inference=rate_ratio.inference,
                     n_obs=fit.n_obs, n_units=n_units, n_treated=n_treated, scale="percent_change",
                     indicator=indicator, alpha=alpha, df=log_effect.df)
    effects = [rate_ratio, percent, log_effect]
    grad = np.array([rate_ratio.estimate, 100 * rate_ratio.estimate, 1.0])  # delta method from the log scale
    return Estimates(effects=effects, method=method, model=fit, kind="poisson_did",
                     vcov=vcov_frame(np.outer(grad, grad) * fit.vcov[0, 0], effects),
                     diagnostics={"dropped_all_zero_rows": fit.dropped["all_zero_groups_rows"],
                                  "dropped_missing_rows": int(len(data) - len(d)), "observations": fit.n_obs})


# ----------------------------------------------------------------------------- heterogeneity

def effects_by_group(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                     by: str | Sequence[str], cluster: str | None = None, weights: str | None = None,
                     adjustment: Literal["fixest", "dummies", "linearmodels", "none"] = "fixest",
                     alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """TWFE with the treatment (D_it = 1 from the unit's ``cohort`` on) split by ``by``
    (the integration model, the cohort label, or both: ``by=["model", "cohort"]`` fits one
    regression per column): an ATT per group, each against the same comparison townships,
    under parallel trends and effects homogeneous within a group. Terms read ``model=托管``;
    ``extra`` holds ``by`` (the column) and ``group`` (its value)."""
    cluster = cluster or unit
    columns = [by] if isinstance(by, str) else list(by)
    d = _check(data, unit, time, outcome, cohort, needed=[cluster] + ([weights] if weights else []))
    effects, fits = [], {}
    treated = d[TREATED].to_numpy(float)
    for column in columns:
        groups = sorted(d.loc[treated != 0, column].dropna().astype(str).unique())
        if not groups:
            raise EstimationError(f"'{column}' is missing for every treated row")
        labels = d[column].astype(str)
        X = np.column_stack([(treated * (labels == g).to_numpy()) for g in groups])
        names = [f"{column}={g}" for g in groups]
        fit = fe_ols(d[outcome].to_numpy(float), X, names, [factorize(d[unit])[0], factorize(d[time])[0]],
                     factorize(d[cluster])[0], weights=d[weights].to_numpy(float) if weights else None,
                     adjustment=adjustment)
        fits[column] = fit
        method = f"two-way fixed effects, ATT by {column}"
        for g, nm in zip(groups, names, strict=True):
            n_treated = d.loc[(treated != 0) & (labels == g).to_numpy(), unit].nunique()
            effects.append(_effect(fit, nm, "att", term=nm, method=method, n_units=d[unit].nunique(),
                                   n_treated=n_treated, alpha=alpha, indicator=indicator, by=column, group=g,
                                   extra={"by": column, "group": g}))
    # one regression per column: their effects' covariance is known within a regression only
    vcov = vcov_frame(fits[columns[0]].vcov, effects) if len(columns) == 1 else None
    return Estimates(effects=effects, method="two-way fixed effects, ATT by " + " and by ".join(columns),
                     model=fits, kind="effects_by_group", vcov=vcov,
                     diagnostics={"dropped_missing_rows": int(len(data) - len(d)), "observations": len(d)})
