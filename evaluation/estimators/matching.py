"""Propensity-score-matched difference-in-differences (PSM-DID).

Three steps, each usable on its own:

1. :func:`propensity_score`: the logit of pilot status (``cohort`` > 0) on each
   township's time-invariant characteristics, one row per township, fitted by Newton's
   method (iteratively reweighted least squares); the numbers are those of statsmodels'
   ``Logit``. Missing values, constant covariates, covariates that vary within a township,
   collinear covariates and (quasi-)complete separation are refused with the covariate named.
2. :func:`matching_weights`: who is matched to whom on the score (or its logit):
   nearest neighbours (k, with or without replacement, a caliper in standard deviations
   of the logit score, Austin 2011, Pharm Stat 10:150-161) or Epanechnikov kernel weights
   (Heckman, Ichimura and Todd 1997, Rev Econ Stud 64:605-654; 1998, Rev Econ Stud
   65:261-294).
3. :func:`psm_did`: the matching difference-in-differences of Heckman, Ichimura and Todd
   (1997): per pilot, the change of its mean outcome from a pre-window before its start to
   a post-window after it, minus the matched never-treated townships' weighted change over
   the same calendar periods; the ATT is the mean over matched pilots (per cohort, and
   pilot-weighted over cohorts).

Identifying assumption: conditional parallel trends -- given the characteristics in the
score, pilots' outcomes would have changed as those of comparison townships with the same
score (Heckman, Ichimura and Todd 1997; Smith and Todd 2005, J Econometrics 125:305-353),
with overlap (pilots' scores inside the comparison townships' range), no anticipation
within the pre-window, and characteristics not affected by the pilot (they are measured
before it or do not change).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.special import expit

from evaluation.errors import EstimationError
from evaluation.results import Effect, Estimates, vcov_frame

SEPARATION_TOL = 1e-7  # the separation LP's value (on standardized covariates) above which the data are separated


# ----------------------------------------------------------------------------- the propensity score

@dataclass(frozen=True)
class PropensityScore:
    """A fitted propensity score: the logit of pilot status on township characteristics.

    ``coefficients`` (``const`` first, then the covariates) and ``vcov`` (the inverse of the
    information matrix, statsmodels' ``cov_params()``), and per township (indexed by the
    unit) ``scores`` (the fitted probability of being a pilot), ``linear`` (its logit,
    X b) and ``pilot`` (True for pilots). ``covariates`` is the table the model was fitted
    on (one row per township).
    """

    coefficients: pd.Series
    vcov: pd.DataFrame
    scores: pd.Series
    linear: pd.Series
    pilot: pd.Series
    covariates: pd.DataFrame
    log_likelihood: float
    iterations: int

    def frame(self) -> pd.DataFrame:
        """One row per township: ``pilot``, ``score``, ``logit_score`` and the covariates."""
        return pd.concat([self.pilot.rename("pilot"), self.scores.rename("score"),
                          self.linear.rename("logit_score"), self.covariates], axis=1)


def _township_table(data: pd.DataFrame, unit: str, cohort: str, covariates: Sequence[str]) -> pd.DataFrame:
    """One row per township: its cohort (0 = never) and its time-invariant covariates,
    after the checks every covariate gets (named culprit)."""
    covariates = list(covariates)
    if not covariates:
        raise EstimationError("the propensity score needs at least one covariate")
    missing = [c for c in dict.fromkeys([unit, cohort, *covariates]) if c not in data.columns]
    if missing:
        raise EstimationError(f"columns not in the data: {missing}")
    if data[unit].isna().any():
        raise EstimationError(f"the unit column '{unit}' has missing values")
    for c in covariates:
        values = pd.to_numeric(data[c], errors="coerce")
        bad = values.isna() & data[c].notna()
        if bad.any():
            row = data.loc[bad].iloc[0]
            raise EstimationError(f"covariate '{c}' is not numeric: township '{row[unit]}' has {row[c]!r}")
        if values.isna().any():
            township = data.loc[values.isna(), unit].iloc[0]
            raise EstimationError(f"covariate '{c}' has missing values (township '{township}', "
                                  f"{int(data.loc[values.isna(), unit].nunique())} township(s) in all)")
    frame = data[[unit, cohort, *covariates]].copy()
    frame[cohort] = pd.to_numeric(frame[cohort], errors="coerce").fillna(0.0).astype(float)
    for c in covariates:
        frame[c] = pd.to_numeric(frame[c]).astype(float)
    grouped = frame.groupby(unit, sort=True)
    spread = grouped.agg(["min", "max"])
    for c in [cohort, *covariates]:
        varies = spread[(c, "min")] != spread[(c, "max")]
        if varies.any():
            township = varies.index[varies.to_numpy()][0]
            what = "the cohort" if c == cohort else "covariate"
            raise EstimationError(
                f"{what} '{c}' varies within township '{township}' (from {spread.loc[township, (c, 'min')]:g} to "
                f"{spread.loc[township, (c, 'max')]:g}; {int(varies.sum())} township(s) in all): the propensity "
                "score needs time-invariant characteristics (take the value at a baseline period)")
    table = grouped.first()
    for c in covariates:
        if table[c].nunique() < 2:
            raise EstimationError(f"covariate '{c}' is constant ({table[c].iloc[0]:g} in all {len(table)} townships "
                                  "used): it cannot enter the propensity score")
    return table


def _full_rank(X: np.ndarray, names: list[str]) -> None:
    """Refuse collinear covariates, naming the first that adds no new direction."""
    kept = []
    for j in range(X.shape[1]):
        candidate = X[:, kept + [j]]
        scaled = candidate / np.maximum(np.abs(candidate).max(axis=0), 1e-300)
        if np.linalg.matrix_rank(scaled, tol=1e-10 * np.sqrt(len(X))) < len(kept) + 1:
            others = ", ".join(f"'{names[k]}'" for k in kept if names[k] != "const") or "the constant"
            raise EstimationError(f"covariate '{names[j]}' is collinear with {others} among the townships used: "
                                  "drop one of them from the propensity score")
        kept.append(j)


def _univariate_separation(x: np.ndarray, pilot: np.ndarray, name: str) -> str | None:
    """A message when one covariate alone separates pilots from comparison townships
    (every comparison township at or below every pilot, or the other way round)."""
    xp, xc = x[pilot], x[~pilot]
    if xc.max() <= xp.min():
        return (f"pilot status is perfectly predicted by '{name}': every comparison township has '{name}' <= "
                f"{xc.max():g} and every pilot >= {xp.min():g}")
    if xp.max() <= xc.min():
        return (f"pilot status is perfectly predicted by '{name}': every pilot has '{name}' <= {xp.max():g} "
                f"and every comparison township >= {xc.min():g}")
    return None


def _separation(X: np.ndarray, pilot: np.ndarray) -> tuple[int, np.ndarray] | None:
    """Whether the data are (quasi-)completely separated: a direction b != 0 with x_i'b >= 0
    for every pilot and <= 0 for every comparison township exists iff the linear program
    max sum_i s_i x_i'b, s_i x_i'b >= 0, -1 <= b <= 1 (s = +1 / -1) has a positive value
    (Albert and Anderson 1984; Konis 2007, the LP of R's safeBinaryRegression). Run on
    standardized covariates; returns (townships perfectly predicted, the direction in
    standardized units) or None."""
    from scipy.optimize import linprog

    sd = X.std(axis=0)
    Z = np.where(sd > 0, (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 1.0)
    s = np.where(pilot, 1.0, -1.0)
    A = s[:, None] * Z
    res = linprog(-A.sum(axis=0), A_ub=-A, b_ub=np.zeros(len(A)), bounds=[(-1, 1)] * X.shape[1], method="highs")
    if res.status != 0 or -res.fun <= SEPARATION_TOL * len(A):
        return None
    margins = A @ res.x
    return int(np.sum(margins > SEPARATION_TOL)), res.x


def _logit_newton(X: np.ndarray, y: np.ndarray, max_iter: int, tol: float) -> tuple[np.ndarray, int, bool]:
    """Newton-Raphson (= IRLS) for the logit, from zero, with step halving; returns the
    coefficients, the iterations and whether the steps converged."""
    b = np.zeros(X.shape[1])

    def loglik(beta):
        eta = X @ beta
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    ll = loglik(b)
    for it in range(1, max_iter + 1):
        p = expit(X @ b)
        w = p * (1 - p)
        H = (X * w[:, None]).T @ X
        g = X.T @ (y - p)
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            return b, it, False
        t = 1.0
        while True:
            new = b + t * step
            new_ll = loglik(new)
            if new_ll >= ll - 1e-12 * (1 + abs(ll)) or t < 1e-10:
                break
            t /= 2
        b, ll = new, new_ll
        if np.max(np.abs(t * step)) <= tol * (1 + np.max(np.abs(b))):
            return b, it, True
    return b, max_iter, False


def _fit_logit(X: np.ndarray, pilot: np.ndarray, names: list[str], *, max_iter: int = 100,
               tol: float = 1e-10) -> tuple[np.ndarray, int]:
    """The logit MLE on arrays (constant first), or EstimationError naming what separates."""
    y = pilot.astype(float)
    if y.sum() == 0 or y.sum() == len(y):
        raise EstimationError("the propensity score needs pilots and comparison townships: "
                              f"{int(y.sum())} pilot(s) among {len(y)} townships")
    _full_rank(X, names)
    for j, name in enumerate(names):
        if name == "const":
            continue
        message = _univariate_separation(X[:, j], pilot, name)
        if message:
            raise EstimationError(f"perfect separation in the propensity model: {message}; the logit has no "
                                  "finite maximum (matching would compare townships that cannot be compared). "
                                  "Drop or coarsen the covariate, or use townships with overlapping values")
    separating = _separation(X, pilot)
    if separating is not None:
        decided, direction = separating
        diverging = [nm for nm, v in zip(names, direction, strict=True) if nm != "const" and abs(v) > 1e-6]
        raise EstimationError(
            f"(quasi-)complete separation in the propensity model: pilot status is perfectly predicted by "
            f"{' and '.join(repr(d) for d in diverging)} together for {decided} of {len(y)} townships (their "
            "coefficients diverge: fitted scores of 0 or 1, the logit has no finite maximum). Drop or coarsen those "
            "covariates: a score of 0 or 1 means no comparison township is comparable")
    b, iterations, converged = _logit_newton(X, y, max_iter, tol)
    if not converged:
        raise EstimationError(f"the propensity model did not converge in {iterations} Newton iterations "
                              f"(covariates {names[1:]}); rescale or drop covariates")
    return b, iterations


def propensity_score(data: pd.DataFrame, *, unit: str, cohort: str, covariates: Sequence[str],
                     max_iter: int = 100, tol: float = 1e-10) -> PropensityScore:
    """The propensity score: a logit of pilot status (``cohort`` > 0; 0 or missing: never
    treated) on each township's time-invariant characteristics ``covariates``, one row per
    township (Rosenbaum and Rubin 1983, Biometrika 70:41-55).

    Fitted by Newton's method (= iteratively reweighted least squares) from zero, with
    step halving, until no coefficient moves by more than ``tol`` (relative); the
    coefficients, covariance and fitted scores are statsmodels' ``Logit(...).fit()``.
    ``data`` is the long panel (or a township table); covariates must be constant within
    a township.

    Raises EstimationError naming the covariate (and a township) for a missing or
    non-numeric value, a covariate that varies within a township, a constant covariate,
    collinear covariates, and for perfect or quasi-complete separation (a covariate that
    alone separates pilots from comparison townships, or fitted scores of 0 or 1, naming
    the covariates whose standardized coefficients diverge): the maximum likelihood
    estimate does not exist then (Albert and Anderson 1984, Biometrika 71:1-10).
    """
    table = _township_table(data, unit, cohort, covariates)
    covariates = list(covariates)
    pilot = (table[cohort] > 0).to_numpy()
    names = ["const", *covariates]
    X = np.column_stack([np.ones(len(table)), table[covariates].to_numpy(float)])
    b, iterations = _fit_logit(X, pilot, names, max_iter=max_iter, tol=tol)
    eta = X @ b
    p = expit(eta)
    H = (X * (p * (1 - p))[:, None]).T @ X
    index = table.index.rename(unit)
    return PropensityScore(
        coefficients=pd.Series(b, index=names, name="coefficient"),
        vcov=pd.DataFrame(np.linalg.inv(H), index=names, columns=names),
        scores=pd.Series(p, index=index, name="score"),
        linear=pd.Series(eta, index=index, name="logit_score"),
        pilot=pd.Series(pilot, index=index, name="pilot"),
        covariates=table[covariates],
        log_likelihood=float(np.sum(pilot * eta - np.logaddexp(0.0, eta))),
        iterations=iterations)


# ----------------------------------------------------------------------------- matching

def _epanechnikov(u: np.ndarray) -> np.ndarray:
    return np.where(np.abs(u) < 1.0, 0.75 * (1.0 - u * u), 0.0)


def matching_weights(treated: np.ndarray, control: np.ndarray, *, method: Literal["nearest", "kernel"] = "nearest",
                     neighbours: int = 1, replacement: bool = True, caliper: float | None = None,
                     bandwidth: float | None = None, tol: float = 1e-10) -> np.ndarray:
    """Matching weights W (treated x control; each matched row sums to 1, an unmatched
    row is all zero) from the matching variable of treated and control units.

    ``nearest`` with replacement: each treated unit's ``neighbours`` nearest controls and
    every control tied with the last of them (distance within ``tol`` of it), weight one
    over their number -- the set J_M(i) of Abadie and Imbens (2006, Econometrica
    74:235-267), the ties of Stata's ``nnmatch``. Without replacement: greedy, treated
    units taken in decreasing order of the matching variable (the hardest to match first,
    MatchIt's default ``m.order = "largest"``), each taking its nearest ``neighbours``
    still unused controls (ties broken by position); a control serves once. ``caliper``
    (in the units of the matching variable): matches farther away are not used, and a
    treated unit with none within it stays unmatched. ``kernel``: Epanechnikov weights
    K((c_j - t_i) / h) / sum_j K(...), K(u) = 3/4 (1 - u^2) on |u| < 1, h = ``bandwidth``
    (Heckman, Ichimura and Todd 1997); a treated unit with no control within h stays
    unmatched.
    """
    t = np.asarray(treated, float)
    c = np.asarray(control, float)
    W = np.zeros((len(t), len(c)))
    if len(c) == 0:
        return W
    D = np.abs(t[:, None] - c[None, :])
    if method == "kernel":
        if bandwidth is None or not bandwidth > 0:
            raise EstimationError(f"kernel matching needs a positive bandwidth, got {bandwidth!r}")
        K = _epanechnikov(D / bandwidth)
        total = K.sum(axis=1)
        ok = total > 0
        W[ok] = K[ok] / total[ok, None]
        return W
    if method != "nearest":
        raise EstimationError(f"method must be 'nearest' or 'kernel', got {method!r}")
    if neighbours < 1:
        raise EstimationError(f"neighbours must be at least 1, got {neighbours}")
    limit = np.inf if caliper is None else float(caliper)
    if replacement:
        m = min(neighbours, len(c))
        kth = np.partition(D, m - 1, axis=1)[:, m - 1]
        scale = tol * max(1.0, float(np.max(np.abs(np.r_[t, c]))))
        chosen = (D <= kth[:, None] + scale) & (D <= limit + scale)
        counts = chosen.sum(axis=1)
        ok = counts > 0
        W[ok] = chosen[ok] / counts[ok, None]
        return W
    available = np.ones(len(c), bool)
    for i in np.argsort(-t, kind="stable"):
        if not available.any():
            break
        d = np.where(available, D[i], np.inf)
        order = np.argsort(d, kind="stable")[:neighbours]
        order = order[np.isfinite(d[order]) & (d[order] <= limit)]
        if len(order):
            W[i, order] = 1.0 / len(order)
            available[order] = False
    return W


# ----------------------------------------------------------------------------- PSM-DID

@dataclass
class _Townships:
    """What the matching DiD needs per township (arrays over townships in ``units`` order)."""

    units: np.ndarray          # township ids
    cohort: np.ndarray         # first treated period (0: never)
    X: np.ndarray              # constant + covariates
    change: dict               # cohort g -> outcome change of every township over g's windows (NaN: no data)
    windows: dict              # cohort g -> (first pre, last pre, first post, last post), or why there is none


def _changes(data: pd.DataFrame, outcome: str, unit: str, time: str, units: np.ndarray, cohorts: np.ndarray,
             event_window: tuple[int, int] | None) -> tuple[dict, dict]:
    """Per cohort g, every township's mean outcome over g's post-window minus its mean over
    g's pre-window (calendar periods g + first .. g - 1 and g .. g + last)."""
    d = data[[unit, time, outcome]].dropna(subset=[outcome])
    t = pd.to_numeric(d[time], errors="coerce")
    if t.isna().any():
        raise EstimationError(f"the time column '{time}' must be numeric (period codes on the cohort's scale)")
    wide = d.assign(**{time: t.astype(float)}).pivot_table(index=unit, columns=time, values=outcome,
                                                           aggfunc="mean").reindex(units)
    periods = wide.columns.to_numpy(float)
    Y = wide.to_numpy(float)
    changes, windows = {}, {}
    for g in cohorts:
        first, last = (-np.inf, np.inf) if event_window is None else event_window
        pre = (periods < g) & (periods >= g + first)
        post = (periods >= g) & (periods <= g + last)
        if not pre.any() or not post.any():  # the cohort's pilots are dropped, with this reason
            side = "before" if not pre.any() else "from"
            windows[g] = f"no period of '{time}' {side} the start {g:g}" + (
                f" within event_window {tuple(event_window)}" if event_window is not None else "")
            changes[g] = np.full(len(units), np.nan)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a window without data: NaN, handled by the caller
            changes[g] = np.nanmean(Y[:, post], axis=1) - np.nanmean(Y[:, pre], axis=1)
        windows[g] = (float(periods[pre].min()), float(periods[pre].max()), float(periods[post].min()),
                      float(periods[post].max()))
    return changes, windows


def _silverman(values: np.ndarray) -> float:
    """Silverman's (1986) rule of thumb, 1.06 n^(-1/5), in standard deviations."""
    return 1.06 * len(values) ** (-0.2)


@dataclass
class _Match:
    """One matching of every cohort's pilots to never-treated townships."""

    att: float
    att_cohort: dict           # g -> ATT of cohort g
    pilots: dict               # g -> indices (into the township arrays) of matched pilots
    controls: dict             # g -> indices of the cohort's comparison pool
    weights: dict              # g -> matched pilots x pool weights
    dropped: list              # (township index, cohort, reason)
    scale: np.ndarray          # the matching variable of every township
    caliper: float | None      # absolute, on the matching variable
    bandwidth: float | None
    excluded: dict             # g -> never-treated townships left out of the pool (no outcome in a window)


def _match_all(tw: _Townships, p: np.ndarray, eta: np.ndarray, *, method: str, neighbours: int, replacement: bool,
               caliper: float | None, bandwidth: float | None, match_on: str, common_support: bool) -> _Match:
    scale = eta if match_on == "logit" else p
    sd = float(np.std(scale, ddof=1))
    cal = None if caliper is None or method != "nearest" else caliper * sd
    bw = None
    if method == "kernel":
        bw = (bandwidth if bandwidth is not None else _silverman(scale)) * sd
    never = tw.cohort == 0
    pilots, controls, weights, dropped, att_g, excluded = {}, {}, {}, [], {}, {}
    for g in sorted(set(tw.cohort[~never])):
        change = tw.change[g]
        members = np.flatnonzero(tw.cohort == g)
        pool = np.flatnonzero(never & np.isfinite(change))
        excluded[g] = [tw.units[j] for j in np.flatnonzero(never & ~np.isfinite(change))]
        no_data = members[~np.isfinite(change[members])]
        no_window = tw.windows[g] if isinstance(tw.windows[g], str) else None
        dropped += [(i, g, no_window or "no outcome in the pre- or post-window") for i in no_data]
        members = members[np.isfinite(change[members])]
        if len(pool) == 0:
            dropped += [(i, g, "no comparison township with outcomes in the cohort's windows") for i in members]
            continue
        if common_support:
            low, high = scale[pool].min(), scale[pool].max()
            outside = (scale[members] < low) | (scale[members] > high)
            dropped += [(i, g, f"off common support (score {p[i]:.4g} outside the comparison range "
                               f"[{p[pool].min():.4g}, {p[pool].max():.4g}])") for i in members[outside]]
            members = members[~outside]
        W = matching_weights(scale[members], scale[pool], method=method, neighbours=neighbours,
                             replacement=replacement, caliper=cal, bandwidth=bw)
        matched = W.sum(axis=1) > 0
        if method == "kernel":
            reason = "no comparison township within the kernel bandwidth"
        elif replacement:
            reason = "no comparison township within the caliper"
        else:
            reason = ("no comparison township left" + (" within the caliper" if cal is not None else "")
                      + " (without replacement each serves one pilot)")
        dropped += [(i, g, reason) for i in members[~matched]]
        if not matched.any():
            continue
        pilots[g], controls[g], weights[g] = members[matched], pool, W[matched]
        att_g[g] = float(np.mean(change[members[matched]] - W[matched] @ change[pool]))
    if not att_g:
        raise EstimationError("no pilot could be matched: " + _dropped_text(tw, dropped))
    n = {g: len(v) for g, v in pilots.items()}
    att = sum(att_g[g] * n[g] for g in att_g) / sum(n.values())
    return _Match(att=att, att_cohort=att_g, pilots=pilots, controls=controls, weights=weights, dropped=dropped,
                  scale=scale, caliper=cal, bandwidth=bw, excluded=excluded)


def _dropped_text(tw: _Townships, dropped: list) -> str:
    shown = "; ".join(f"'{tw.units[i]}' (cohort {g:g}): {why}" for i, g, why in dropped[:6])
    return shown + (f"; and {len(dropped) - 6} more" if len(dropped) > 6 else "")


def _residual_variances(values: np.ndarray, scale: np.ndarray, J: int) -> np.ndarray:
    """J/(J+1) (y_j - mean of y over j's J nearest other units on the matching variable)^2:
    the residuals whose products estimate conditional (co)variances (Abadie and Imbens
    2006, sec. 4.1); returned as the residuals times sqrt(J/(J+1)). Ties among the
    neighbours are broken by position."""
    n = len(values)
    if n < 2:
        return np.zeros(n)
    J = min(J, n - 1)
    D = np.abs(scale[:, None] - scale[None, :])
    np.fill_diagonal(D, np.inf)
    near = np.argsort(D, axis=1, kind="stable")[:, :J]
    return np.sqrt(J / (J + 1)) * (values - values[near].mean(axis=1))


def _ai_variance(tw: _Townships, match: _Match, J: int, cohorts: list) -> float:
    """Abadie-Imbens (2006) variance of the matching estimator of the population ATT over
    the pilots of ``cohorts``:

    V = 1/N1^2 [ sum_i (tau_i - tau)^2 + sum_j { (sum_g W_jg e_jg)^2 - sum_g sum_i w_ijg^2 e_jg^2 } ]

    tau_i the pilot's matched DiD, W_jg = sum_i w_ijg the weight comparison township j gets
    in cohort g, e_jg the residual of its change against its J nearest pool neighbours
    (times sqrt(J/(J+1))). With one cohort and weights 1/M this is Abadie and Imbens'
    sum_i (tau_i - tau)^2 + sum_j K_M(j)(K_M(j) - 1)/M^2 sigma^2(X_j), their estimator of the
    variance of the population ATT (see also Abadie, Drukker, Herr and Imbens 2004, Stata J
    4:290-311); across cohorts the products
    e_jg e_jg' estimate the covariance of a township's changes over different windows.
    """
    taus, extra = [], {}
    for g in cohorts:
        pilots, pool, W = match.pilots[g], match.controls[g], match.weights[g]
        change = tw.change[g]
        taus.append(change[pilots] - W @ change[pool])
        e = _residual_variances(change[pool], match.scale[pool], J)
        used = W.sum(axis=0) > 0
        for j, Wj, sq, ej in zip(pool[used], W.sum(axis=0)[used], (W ** 2).sum(axis=0)[used], e[used],
                                 strict=True):
            lin, diag = extra.get(j, (0.0, 0.0))
            extra[j] = (lin + Wj * ej, diag + sq * ej * ej)
    tau_i = np.concatenate(taus)
    n1 = len(tau_i)
    total = float(np.sum((tau_i - tau_i.mean()) ** 2)) + sum(lin * lin - diag for lin, diag in extra.values())
    return max(total, 0.0) / n1 ** 2


def _prepare(data, outcome, unit, time, cohort, covariates, event_window) -> tuple[_Townships, pd.DataFrame, dict]:
    for c in (outcome, time):
        if c not in data.columns:
            raise EstimationError(f"columns not in the data: ['{c}']")
    if data[outcome].isna().all():
        raise EstimationError(f"the outcome '{outcome}' is missing in every row")
    table = _township_table(data, unit, cohort, covariates)
    cohorts = np.sort(table.loc[table[cohort] > 0, cohort].unique())
    if len(cohorts) == 0:
        raise EstimationError(f"no pilots: every '{cohort}' is 0 or missing")
    if not (table[cohort] == 0).any():
        raise EstimationError(f"no never-treated townships (every township has a '{cohort}'): PSM-DID matches "
                              "pilots to never-treated townships")
    if event_window is not None:
        first, last = event_window
        if not first < 0 <= last:
            raise EstimationError(f"event_window must run from a pre-period (< 0) to a post-period (>= 0), "
                                  f"got {event_window}")
    units = table.index.to_numpy()
    change, windows = _changes(data, outcome, unit, time, units, cohorts, event_window)
    X = np.column_stack([np.ones(len(table)), table[list(covariates)].to_numpy(float)])
    return (_Townships(units=units, cohort=table[cohort].to_numpy(float), X=X, change=change, windows=windows),
            table, windows)


def psm_did(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str, covariates: Sequence[str],
            method: Literal["nearest", "kernel"] = "nearest", neighbours: int = 1, replacement: bool = True,
            caliper: float | None = 0.2, bandwidth: float | None = None,
            match_on: Literal["logit", "score"] = "logit", common_support: bool = True,
            event_window: tuple[int, int] | None = None, variance_neighbours: int = 2, alpha: float = 0.05,
            draws: int = 499, seed: int | None = None, indicator: str | None = None) -> Estimates:
    """Propensity-score-matched difference-in-differences (PSM-DID): the matching DiD of
    Heckman, Ichimura and Todd (1997, Rev Econ Stud 64:605-654).

    Estimand: the ATT of the pilots. For pilot i of cohort g (``cohort``: first treated
    period on the ``time`` scale, 0 or missing: never treated), dY_i is its mean
    ``outcome`` over the post-window (periods g + 0 .. g + last) minus its mean over the
    pre-window (g + first .. g - 1), ``event_window=(first, last)``, first < 0 <= last
    (default: every period before the start and every period from it on). Its matched
    DiD is tau_i = dY_i - sum_j w_ij dY_j^g, the comparison townships j being never
    treated and their change taken over the same calendar periods. ATT per cohort
    (effects ``att_cohort``) is the mean of tau_i over its matched pilots; the overall
    ``att`` is the pilot-weighted average of the cohorts' (each cohort is matched to the
    never-treated townships on its own). Identification: parallel trends conditional on
    the score's characteristics, overlap, no anticipation.

    Score: :func:`propensity_score`, one logit of pilot status (any cohort) on the
    time-invariant ``covariates`` over all townships. ``match_on``: the logit of the score
    (default; Rosenbaum and Rubin 1985, Am Stat 39:33-38) or the score itself.
    ``common_support``: pilots whose score lies outside the min-max range of the
    comparison townships' are dropped first (Dehejia and Wahba 1999, JASA 94:1053-1062).
    ``method``:

    * ``nearest``: ``neighbours`` nearest comparison townships, ``replacement`` or not
      (without: a comparison township serves one pilot of a cohort; each cohort draws on
      all never-treated townships), ties kept (see :func:`matching_weights`); ``caliper``
      in standard deviations of the matching variable over all townships (default 0.2 of
      the logit score, Austin 2011, Pharm Stat 10:150-161; None: no caliper); a pilot with
      none within it is dropped. ``draws`` and ``seed`` are not used.
      Standard errors: the Abadie and Imbens (2006, Econometrica 74:235-267) variance of
      the matching estimator of the population ATT applied to the outcome changes, the
      conditional variances estimated by matching each comparison township to its
      ``variance_neighbours`` nearest comparison townships (Stata's ``vce(robust, nn(2))``).
      The score is treated as known: no Abadie and Imbens (2016, Econometrica 84:781-807)
      adjustment for its estimation (for the ATT that adjustment can go either way). The
      bootstrap is not used: it is invalid for nearest-neighbour matching (Abadie and
      Imbens 2008, Econometrica 76:1537-1557).
    * ``kernel``: Epanechnikov kernel weights on every comparison township within
      ``bandwidth`` (in standard deviations of the matching variable; default Silverman's
      1.06 n^(-1/5)); a pilot with none within it is dropped. Standard errors: a township
      bootstrap (``draws`` resamples of townships with replacement within pilots of each
      cohort and never-treated, ``seed``) that re-estimates the score, the common support
      and the weights in every draw; Wald intervals from the bootstrap standard error.
      Draws whose logit separates are skipped and counted.

    Dropped pilots (no outcome in a window, a cohort without a pre- or post-window, off
    common support, nothing within the caliper or bandwidth) are listed in ``diagnostics["dropped_pilots"]`` and in the effects'
    ``extra``; the estimand is then the ATT of the pilots kept (on common support), not of
    all pilots. When none is left the call raises EstimationError naming them.

    ``diagnostics``: ``propensity_scores`` and ``logit_scores`` (per township),
    ``weights`` (per township: 1 for a matched pilot, 0 for a dropped one, the summed
    matching weight for a comparison township, i.e. the number of pilots it stands for;
    what a balance table after matching takes), ``comparison_weights`` (the same, comparison
    townships only), ``matches`` (pilot, comparison township, cohort, weight),
    ``dropped_pilots`` (unit, cohort, reason), ``distinct_controls``, ``caliper`` and
    ``bandwidth`` (on the matching variable), ``windows`` per cohort (first and last pre-,
    first and last post-period), ``excluded_comparisons`` (never-treated townships left out
    of a cohort's pool for want of an outcome in its windows). ``model`` is the
    :class:`PropensityScore`; ``plot_data`` one row per township (score, pilot, weight).
    """
    if method not in ("nearest", "kernel"):
        raise EstimationError(f"method must be 'nearest' or 'kernel', got {method!r}")
    if match_on not in ("logit", "score"):
        raise EstimationError(f"match_on must be 'logit' or 'score', got {match_on!r}")
    if caliper is not None and not caliper > 0:
        raise EstimationError(f"caliper must be positive (standard deviations of the matching variable) or None, "
                              f"got {caliper!r}")
    if bandwidth is not None and not bandwidth > 0:
        raise EstimationError(f"bandwidth must be positive (standard deviations of the matching variable) or None, "
                              f"got {bandwidth!r}")
    if neighbours < 1:
        raise EstimationError(f"neighbours must be at least 1, got {neighbours}")
    covariates = list(covariates)
    tw, table, windows = _prepare(data, outcome, unit, time, cohort, covariates, event_window)
    score = propensity_score(table.reset_index(), unit=unit, cohort=cohort, covariates=covariates)
    p, eta = score.scores.to_numpy(), score.linear.to_numpy()
    options = dict(method=method, neighbours=neighbours, replacement=replacement, caliper=caliper,
                   bandwidth=bandwidth, match_on=match_on, common_support=common_support)
    match = _match_all(tw, p, eta, **options)
    cohorts = sorted(match.att_cohort)
    n_matched = {g: len(match.pilots[g]) for g in cohorts}

    draws_used, failed = 0, 0
    if method == "nearest":
        se_all = np.sqrt(_ai_variance(tw, match, variance_neighbours, cohorts))
        se_g = {g: np.sqrt(_ai_variance(tw, match, variance_neighbours, [g])) for g in cohorts}
        vcov = np.array([[se_all ** 2]]) if len(cohorts) == 1 else None
        inference = (f"Abadie-Imbens (2006) variance of the matching estimator (ATT of the matched pilots; "
                     f"conditional variances from {variance_neighbours} nearest comparison townships); the score is "
                     "treated as known (no Abadie-Imbens 2016 adjustment)")
    else:
        boot = _bootstrap(tw, options, cohorts, draws=draws, seed=seed)
        draws_used, failed = len(boot), draws - len(boot)
        if draws_used < 2:
            raise EstimationError(f"the bootstrap failed: {failed} of {draws} draws had a propensity model "
                                  "without a maximum or no matched pilot")
        vcov = np.cov(boot, rowvar=False, ddof=1).reshape(len(cohorts) + 1, len(cohorts) + 1)
        se_all = float(np.sqrt(vcov[0, 0]))
        se_g = {g: float(np.sqrt(vcov[k + 1, k + 1])) for k, g in enumerate(cohorts)}
        inference = (f"township bootstrap, {draws_used} draws (score re-estimated and townships re-matched in "
                     f"each{f'; {failed} draws skipped: separation or no match' if failed else ''})")

    if method == "nearest":
        label = (f"{neighbours}-nearest-neighbour {'with' if replacement else 'without'} replacement"
                 + (f", caliper {caliper:g} SD" if caliper is not None else ""))
    else:
        label = f"Epanechnikov kernel, bandwidth {match.bandwidth:.4g}"
    method_text = f"PSM-DID (matching DiD, {label} on the {'logit of the ' if match_on == 'logit' else ''}score)"
    dropped = pd.DataFrame([(tw.units[i], float(g), why) for i, g, why in match.dropped],
                           columns=["unit", "cohort", "reason"])
    used_controls = sorted({int(j) for g in cohorts for j in match.controls[g][match.weights[g].sum(axis=0) > 0]})
    n_pilots = sum(n_matched.values())
    used = [int(i) for g in cohorts for i in match.pilots[g]] + used_controls
    n_obs = int(data[unit].isin(tw.units[used]).sum())
    common = dict(method=method_text, inference=inference, n_obs=n_obs, n_units=n_pilots + len(used_controls),
                  indicator=indicator, alpha=alpha)
    extra = {"dropped_pilots": dropped["unit"].tolist(), "distinct_controls": len(used_controls)}
    effects = [Effect.from_normal("att", match.att, se_all, n_treated=n_pilots, extra=extra, **common)]
    if len(cohorts) > 1:
        for g in cohorts:
            effects.append(Effect.from_normal("att_cohort", match.att_cohort[g], se_g[g], n_treated=n_matched[g],
                                              term=f"g={g:g}", cohort=float(g), by="cohort", group=f"{g:g}",
                                              **common))
    else:
        effects[0] = Effect.from_normal("att", match.att, se_all, n_treated=n_pilots, extra=extra,
                                        cohort=float(cohorts[0]), **common)

    # per-township weights: what a balance table after matching and the density figure take
    w = np.zeros(len(tw.units))
    rows = []
    for g in cohorts:
        w[match.pilots[g]] = 1.0
        W = match.weights[g]
        w[match.controls[g]] += W.sum(axis=0)
        pi, cj = np.nonzero(W)
        rows += [(tw.units[match.pilots[g][a]], tw.units[match.controls[g][b]], float(g), float(W[a, b]))
                 for a, b in zip(pi, cj, strict=True)]
    index = pd.Index(tw.units, name=unit)
    weights = pd.Series(w, index=index, name="weight")
    never = tw.cohort == 0
    diagnostics = {
        "propensity_scores": score.scores, "logit_scores": score.linear, "weights": weights,
        "comparison_weights": weights[never], "matches": pd.DataFrame(rows, columns=["pilot", "control", "cohort",
                                                                                      "weight"]),
        "dropped_pilots": dropped, "n_dropped_pilots": len(dropped), "distinct_controls": len(used_controls),
        "matched_pilots": n_pilots, "caliper": match.caliper, "bandwidth": match.bandwidth,
        "match_on": match_on, "common_support": common_support,
        "windows": {float(g): windows[g] for g in cohorts}, "covariates": tuple(covariates),
        "excluded_comparisons": {float(g): v for g, v in match.excluded.items() if v},
    }
    if method == "kernel":
        diagnostics.update(bootstrap_draws=draws_used, bootstrap_failed=failed)
    plot = pd.DataFrame({unit: tw.units, "cohort": tw.cohort, "pilot": ~never, "score": p, "logit_score": eta,
                         "weight": w})
    spec = {"estimator": "psm_did", "data": data, "outcome": outcome, "unit": unit, "time": time, "cohort": cohort,
            "covariates": tuple(covariates), "alpha": alpha, "indicator": indicator, "event_window": event_window,
            **options}
    return Estimates(effects=effects, method=method_text, plot_data=plot, diagnostics=diagnostics, model=score,
                     kind="psm_did", vcov=None if vcov is None else vcov_frame(vcov if len(cohorts) > 1
                                                                               else vcov[:1, :1], effects),
                     wald=True, spec=spec)


def _bootstrap(tw: _Townships, options: dict, cohorts: list, *, draws: int, seed: int | None) -> np.ndarray:
    """Township bootstrap of the kernel-matching DiD: resample townships with replacement
    within each cohort's pilots and within the never-treated, re-estimate the logit,
    re-trim and re-match; rows (att, att per cohort), draws that fail left out."""
    from threadpoolctl import threadpool_limits  # one BLAS thread: many small products (benchmarks/threads.py)

    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(tw.cohort == g) for g in [0.0, *cohorts]]
    names = ["const", *[f"x{k}" for k in range(tw.X.shape[1] - 1)]]
    out = []
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(draws):
            idx = np.concatenate([rng.choice(s, size=len(s), replace=True) for s in strata])
            sub = _Townships(units=tw.units[idx], cohort=tw.cohort[idx], X=tw.X[idx],
                             change={g: v[idx] for g, v in tw.change.items()}, windows=tw.windows)
            try:
                b, _ = _fit_logit(sub.X, sub.cohort > 0, names)
                eta = sub.X @ b
                m = _match_all(sub, expit(eta), eta, **options)
            except EstimationError:
                continue
            if set(m.att_cohort) != set(cohorts):
                continue
            out.append([m.att, *[m.att_cohort[g] for g in cohorts]])
    return np.array(out).reshape(-1, len(cohorts) + 1)
