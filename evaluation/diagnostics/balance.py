"""Covariate balance between pilot and comparison townships, and entropy-balancing weights.

Both functions read the long panel every estimator receives (one row per township and
period) and take each township's characteristics from its rows: a covariate used here
must be constant within a township (a time-invariant characteristic, or a baseline value
already carried on every row). A pilot is a township with a ``cohort`` (first treated
period) above 0; ``cohort`` 0 or missing means never treated.

* :func:`balance_table` -- means, standard deviations, standardized mean differences
  (Austin 2009, Statistics in Medicine 28: 3083-3107) and variance ratios of pilots and
  comparison townships, before and (given weights) after matching or weighting, computed
  the way cobalt and MatchIt compute them (Greifer, cobalt FAQ; Stuart 2010, Statistical
  Science 25: 1-21): the standardization factor is the unweighted pooled SD, the same
  before and after, so that a change in the SMD is a change in the means.
* :func:`entropy_balance` -- comparison-township weights whose weighted covariate means
  (and variances) equal the pilots' exactly while staying as close as possible to uniform
  weights in Kullback-Leibler divergence (Hainmueller 2012, Political Analysis 20: 25-46).

They return a table and a weight vector, not :class:`evaluation.results.Estimates`: they
estimate no effect (they are listed as utilities in tests/test_conventions.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from evaluation.errors import EstimationError

PILOT, COMPARISON = "pilot", "comparison"

# columns of :func:`balance_table`, in order (the *_after columns only with weights)
BEFORE_COLUMNS = ("covariate", "kind", "n_pilots", "n_comparison", "pilot_mean", "pilot_sd", "comparison_mean",
                  "comparison_sd", "smd_before", "variance_ratio_before")
AFTER_COLUMNS = ("n_pilots_after", "effective_n_comparison", "pilot_mean_after", "pilot_sd_after",
                 "comparison_mean_after", "comparison_sd_after", "smd_after", "variance_ratio_after")


# ----------------------------------------------------------------------------- townships

def _townships(data: pd.DataFrame, unit: str, cohort: str, covariates: Sequence[str]) -> pd.DataFrame:
    """One row per township (indexed by ``unit``): its covariates and ``pilot`` (bool).
    Every covariate must be numeric, present in every row, and constant within a township."""
    covariates = list(covariates)
    if not covariates:
        raise EstimationError("no covariates given")
    if isinstance(data, pd.Series) or not isinstance(data, pd.DataFrame):
        raise EstimationError(f"data must be a DataFrame (the long panel), got {type(data).__name__}")
    missing = [c for c in dict.fromkeys([unit, cohort, *covariates]) if c not in data.columns]
    if missing:
        raise EstimationError(f"columns not in the data: {missing}")
    if len(set(covariates)) != len(covariates):
        raise EstimationError(f"a covariate is listed twice: {covariates}")
    if data.empty:
        raise EstimationError("the data have no rows")
    if data[unit].isna().any():
        raise EstimationError(f"the unit column '{unit}' is missing in {int(data[unit].isna().sum())} row(s)")
    for c in covariates:
        values = data[c]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            raise EstimationError(f"covariate '{c}' is not numeric (dtype {values.dtype}); binary covariates are 0/1")
        blank = values.isna() | ~np.isfinite(values.astype(float))
        if blank.any():
            where = data.loc[blank, unit].iloc[0]
            raise EstimationError(f"covariate '{c}' has a missing value (township '{where}', "
                                  f"{int(blank.sum())} row(s) in all)")
    if not (pd.api.types.is_numeric_dtype(data[cohort]) or data[cohort].isna().all()):
        raise EstimationError(f"cohort '{cohort}' is not numeric (dtype {data[cohort].dtype}): it holds the first "
                              "treated period on the time scale, 0 or missing for never treated")
    start = data[cohort].astype(float).fillna(0.0)
    if (start < 0).any():
        where = data.loc[start < 0, unit].iloc[0]
        raise EstimationError(f"cohort '{cohort}' is negative for township '{where}'; 0 or missing means never treated")
    frame = data[[unit, *covariates]].assign(**{"_pilot": start > 0})
    grouped = frame.groupby(unit, sort=True)
    for c in [*covariates, "_pilot"]:
        spread = grouped[c].nunique()
        varies = spread[spread > 1]
        if len(varies):
            name = f"covariate '{c}'" if c != "_pilot" else f"cohort '{cohort}'"
            first = varies.index[0]
            shown = sorted(frame.loc[frame[unit] == first, c].unique().tolist())[:4]
            raise EstimationError(f"{name} varies within township '{first}' (values {shown}); "
                                  f"{len(varies)} township(s) in all: balance needs one value per township "
                                  "(a time-invariant characteristic or a baseline value)")
    towns = grouped.first()
    towns[covariates] = towns[covariates].astype(float)
    towns = towns.rename(columns={"_pilot": PILOT})
    if not towns[PILOT].any():
        raise EstimationError(f"no pilot townships: every '{cohort}' is 0 or missing")
    if towns[PILOT].all():
        raise EstimationError(f"no comparison townships: every township has a '{cohort}' above 0")
    for c in covariates:
        if towns[c].nunique() < 2:
            raise EstimationError(f"covariate '{c}' is constant ({towns[c].iloc[0]:g} in every township): "
                                  "it cannot differ between pilots and comparison townships")
    return towns


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.isin(values, (0.0, 1.0)).all())


def _weighted_mean(x: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum(w * x) / np.sum(w))


def _weighted_var(x: np.ndarray, w: np.ndarray, binary: bool) -> float:
    """A binary covariate's p(1-p); a continuous one's weighted variance with the
    reliability-weights correction sum(w)^2 / (sum(w)^2 - sum(w^2)), which is the sample
    variance (n - 1 in the denominator) when every weight is 1 (cobalt's ``col_w_var``)."""
    m = _weighted_mean(x, w)
    if binary:
        return m * (1.0 - m)
    sw, sw2 = np.sum(w), np.sum(w ** 2)
    if sw ** 2 - sw2 <= 0:
        return np.nan
    return float(np.sum(w * (x - m) ** 2) * sw / (sw ** 2 - sw2))


def _unit_weights(towns: pd.DataFrame, weights) -> np.ndarray:
    """Every township's weight: the given weight, 1 for a pilot not in ``weights``, 0 for a
    comparison township not in it (unmatched)."""
    if not isinstance(weights, pd.Series):
        raise EstimationError(f"weights must be a pandas Series indexed by township, got {type(weights).__name__}")
    if weights.index.has_duplicates:
        twice = weights.index[weights.index.duplicated()][0]
        raise EstimationError(f"weights: township '{twice}' has more than one weight")
    unknown = weights.index.difference(towns.index)
    if len(unknown):
        raise EstimationError(f"weights: township '{unknown[0]}' is not in the data ({len(unknown)} unknown in all)")
    w = pd.to_numeric(weights, errors="coerce")
    bad = w.isna() | ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise EstimationError(f"weights: township '{w.index[bad][0]}' has weight {weights[bad].iloc[0]}; "
                              "weights must be finite and non-negative")
    full = pd.Series(np.where(towns[PILOT], 1.0, 0.0), index=towns.index)
    full.loc[w.index] = w.to_numpy(float)
    if full[~towns[PILOT]].sum() <= 0:
        raise EstimationError("weights: every comparison township has weight 0")
    if full[towns[PILOT]].sum() <= 0:
        raise EstimationError("weights: every pilot township has weight 0")
    return full.to_numpy(float)


def balance_table(data: pd.DataFrame, *, unit: str, cohort: str, covariates: Sequence[str],
                  weights: pd.Series | None = None) -> pd.DataFrame:
    """Balance of township characteristics between pilots and comparison townships.

    One row per covariate: ``kind`` (``binary`` when every township's value is 0 or 1,
    else ``continuous``), the number of pilots and comparison townships, each group's mean
    and standard deviation, the standardized mean difference ``smd_before`` and the
    variance ratio ``variance_ratio_before`` (pilot variance over comparison variance;
    blank for a binary covariate, whose variance is fixed by its mean).

    The SMD is (pilot mean - comparison mean) / sqrt((s_1^2 + s_0^2) / 2) (Austin 2009,
    Statistics in Medicine 28: 3083-3107; Imbens and Rubin 2015, ch. 14, "normalized
    difference"), with s^2 the sample variance of a continuous covariate and p(1 - p) for
    a binary one (a proportion). |SMD| above 0.1 is the usual sign of imbalance.

    ``weights`` (a Series indexed by township: matching weights, inverse-probability odds,
    entropy-balancing weights) adds the same statistics after weighting: the ``*_after``
    columns and ``effective_n_comparison`` (Kish's (sum w)^2 / sum w^2). Comparison
    townships missing from ``weights`` weigh 0 (unmatched); pilots weigh 1 unless
    ``weights`` gives them a weight (0 for a pilot trimmed off the common support). As in
    cobalt and MatchIt, ``smd_after`` keeps the unweighted denominator of ``smd_before``
    (so the two differ only through the means), and weighted variances use the
    reliability-weights correction, which is the sample variance when all weights are 1.

    The data are the long panel (one row per township and period): each covariate must be
    constant within a township, numeric, never missing, and vary across townships;
    otherwise :class:`evaluation.errors.EstimationError` names the covariate and a township.
    """
    covariates = list(covariates)
    towns = _townships(data, unit, cohort, covariates)
    pilot = towns[PILOT].to_numpy(bool)
    after = weights is not None
    w = _unit_weights(towns, weights) if after else None
    rows = []
    for c in covariates:
        x = towns[c].to_numpy(float)
        binary = _is_binary(x)
        x1, x0 = x[pilot], x[~pilot]
        one1, one0 = np.ones(len(x1)), np.ones(len(x0))
        m1, m0 = _weighted_mean(x1, one1), _weighted_mean(x0, one0)
        v1, v0 = _weighted_var(x1, one1, binary), _weighted_var(x0, one0, binary)
        pooled = np.sqrt((np.nan_to_num(v1) + np.nan_to_num(v0)) / 2.0)
        row = {"covariate": c, "kind": "binary" if binary else "continuous", "n_pilots": int(pilot.sum()),
               "n_comparison": int((~pilot).sum()), "pilot_mean": m1, "pilot_sd": np.sqrt(v1), "comparison_mean": m0,
               "comparison_sd": np.sqrt(v0), "smd_before": (m1 - m0) / pooled if pooled > 0 else np.nan,
               "variance_ratio_before": np.nan if binary or not v0 > 0 else v1 / v0}
        if after:
            w1, w0 = w[pilot], w[~pilot]
            k1, k0 = w1 > 0, w0 > 0
            a1, a0 = _weighted_mean(x1[k1], w1[k1]), _weighted_mean(x0[k0], w0[k0])
            u1, u0 = _weighted_var(x1[k1], w1[k1], binary), _weighted_var(x0[k0], w0[k0], binary)
            row |= {"n_pilots_after": int(k1.sum()), "effective_n_comparison": float(w0.sum() ** 2 / np.sum(w0 ** 2)),
                    "pilot_mean_after": a1, "pilot_sd_after": np.sqrt(u1), "comparison_mean_after": a0,
                    "comparison_sd_after": np.sqrt(u0), "smd_after": (a1 - a0) / pooled if pooled > 0 else np.nan,
                    "variance_ratio_after": np.nan if binary or not u0 > 0 else u1 / u0}
        rows.append(row)
    return pd.DataFrame(rows, columns=[*BEFORE_COLUMNS, *(AFTER_COLUMNS if after else ())])


# ----------------------------------------------------------------------------- entropy balancing

def _dual_newton(C: np.ndarray, max_iterations: int, tolerance: float) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Minimise the convex dual f(l) = log sum_i exp(C_i l) over l by Newton's method with
    backtracking; C holds each comparison unit's constraint functions minus their targets.
    At the minimum the gradient sum_i w_i C_i is 0 with w = softmax(C l): the weighted
    moments equal the targets. Returns (normalised weights, l, iterations, converged)."""
    n, k = C.shape
    lam = np.zeros(k)

    def value(lam):
        z = C @ lam
        top = z.max()
        return top + np.log(np.exp(z - top).sum()), z

    f, z = value(lam)
    for it in range(1, max_iterations + 1):
        w = np.exp(z - z.max())
        w /= w.sum()
        grad = C.T @ w
        if np.max(np.abs(grad)) < tolerance:
            return w, lam, it - 1, True
        centred = C - grad
        hess = (centred * w[:, None]).T @ centred
        step = -np.linalg.lstsq(hess + 1e-14 * np.eye(k), grad, rcond=None)[0]
        slope = grad @ step
        if not slope < 0:  # Hessian numerically singular in the step's direction: fall back on the gradient
            step, slope = -grad, -(grad @ grad)
        t = 1.0
        while True:
            f_new, z_new = value(lam + t * step)
            if f_new <= f + 1e-4 * t * slope or t < 1e-12:
                break
            t /= 2.0
        if t < 1e-12 and f_new >= f:  # no progress possible
            break
        lam, f, z = lam + t * step, f_new, z_new
    w = np.exp(z - z.max())
    w /= w.sum()
    return w, lam, max_iterations, bool(np.max(np.abs(C.T @ w)) < tolerance)


def entropy_balance(data: pd.DataFrame, *, unit: str, cohort: str, covariates: Sequence[str], moments: int = 1,
                    max_iterations: int = 200, tolerance: float = 1e-10) -> pd.Series:
    """Entropy-balancing weights of the comparison townships (Hainmueller 2012, Political
    Analysis 20: 25-46).

    The weights w minimise the Kullback-Leibler divergence sum_i w_i log(w_i / q_i) from
    uniform base weights q subject to the balance constraints: the weighted mean of every
    covariate over the comparison townships equals the pilots' mean, and with
    ``moments=2`` also the weighted variance of every continuous covariate equals the
    pilots' variance (both with divisor n, as the constraints on raw second moments in
    Hainmueller's ``ebal`` imply; a binary covariate's variance follows from its mean).
    :func:`balance_table` writes sample variances (divisor n - 1, and the reliability-weights
    correction for the weighted comparison group), so its variance ratio after entropy
    balancing on two moments is n_1 / (n_1 - 1) * (1 - sum p_i^2) (p the normalised
    weights), near 1 but not exactly 1 with few pilots, as cobalt shows for ``ebal`` weights.
    The problem is solved through its convex dual by Newton's method, so the weights have
    the form w_i proportional to exp(lambda' c(X_i)); the constraints then hold to
    ``tolerance`` (on covariates scaled by their SD). Reweighting the comparison
    townships this way estimates the pilots' counterfactual (ATT) under selection on the
    balanced moments of the covariates.

    Returns a Series indexed by the comparison townships, named ``entropy_weight``,
    summing to the number of pilots (a weight of 1 is one pilot's worth), ready to pass
    as ``weights`` to :func:`balance_table`. ``attrs`` records the iterations, the dual
    solution and the moments balanced.

    Balance is infeasible, and :class:`evaluation.errors.EstimationError` names the
    covariate, when a pilot mean lies outside the comparison townships' range (or on its
    edge), or when the constraints cannot be met together (the message names the
    covariate furthest from balance). Covariates must be constant within a township.
    """
    if moments not in (1, 2):
        raise EstimationError(f"moments must be 1 (means) or 2 (means and variances), got {moments!r}")
    if not (isinstance(max_iterations, int) and max_iterations > 0):
        raise EstimationError(f"max_iterations must be a positive integer, got {max_iterations!r}")
    if not tolerance > 0:
        raise EstimationError(f"tolerance must be positive, got {tolerance!r}")
    covariates = list(covariates)
    towns = _townships(data, unit, cohort, covariates)
    pilot = towns[PILOT].to_numpy(bool)
    comparison = towns.index[~pilot]
    columns, targets, names = [], [], []
    for c in covariates:
        x = towns[c].to_numpy(float)
        x1, x0 = x[pilot], x[~pilot]
        m1 = x1.mean()
        lo, hi = x0.min(), x0.max()
        span = max(x.std(), 1e-300)
        if not lo < m1 < hi:
            edge = "outside" if (m1 < lo or m1 > hi) else "on the edge of"
            raise EstimationError(
                f"entropy balancing is infeasible: the pilots' mean of covariate '{c}' ({m1:g}) is {edge} the "
                f"comparison townships' range [{lo:g}, {hi:g}]; no positive weights can reproduce it. "
                f"Drop '{c}' or the pilots beyond the comparison townships' range")
        columns.append((x0 - m1) / span)
        targets.append(m1)
        names.append(f"mean of '{c}'")
        if moments == 2 and not _is_binary(x):
            v1 = x1.var()  # divisor n
            squares = (x0 - m1) ** 2
            if not squares.min() < v1 < squares.max():
                raise EstimationError(
                    f"entropy balancing is infeasible: the pilots' variance of covariate '{c}' ({v1:g}) cannot be "
                    f"reproduced by the comparison townships' squared distances from the pilots' mean (range "
                    f"[{squares.min():g}, {squares.max():g}]). Balance the mean of '{c}' only (moments=1)")
            columns.append((squares - v1) / v1)
            targets.append(v1)
            names.append(f"variance of '{c}'")
    C = np.column_stack(columns)
    w, lam, iterations, converged = _dual_newton(C, max_iterations, tolerance)
    gap = np.abs(C.T @ w)
    if not converged:
        worst = int(np.argmax(gap))
        raise EstimationError(
            f"entropy balancing did not converge in {iterations} Newton steps: the {names[worst]} stays "
            f"{gap[worst]:.3g} SD from the pilots' value; the constraints cannot be met together with positive "
            "weights (too few comparison townships like the pilots, or collinear covariates with conflicting "
            "targets). Balance fewer moments or covariates")
    weights = pd.Series(w * pilot.sum(), index=comparison, name="entropy_weight")
    weights.attrs = {"iterations": iterations, "moments": moments, "constraints": names, "dual": lam.tolist(),
                     "max_constraint_gap_sd": float(gap.max())}
    return weights
