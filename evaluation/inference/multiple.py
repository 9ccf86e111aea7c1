"""Multiple-testing adjustment across the report's indicators.

The scorecard shows one headline effect per indicator (about nine): read one at a time,
some will look significant by chance alone. This module adjusts the indicators'
p-values as one family.

- :func:`holm`: the Holm (1979, Scand J Statist 6:65-70) step-down, which controls the
  family-wise error rate (the chance of any false rejection) under any dependence.
- :func:`benjamini_hochberg`: Benjamini and Hochberg (1995, J R Stat Soc B 57:289-300)
  q-values, which control the false discovery rate (the expected share of false ones
  among the rejections) for independent or positively dependent tests.
- :func:`romano_wolf`: the Romano and Wolf (2005, Econometrica 73:1237-1282) step-down
  with the maximum |t| over the hypotheses not yet rejected, computed from joint null
  draws of the statistics (Romano and Wolf 2016, Stat Probab Letters 113:38-40, for the
  adjusted p-values). It controls the family-wise error rate and, unlike Holm, uses the
  dependence between the indicators (outcomes of the same townships move together), so
  it rejects more when they are correlated.
- :func:`randomization_romano_wolf`: Romano-Wolf on randomization-inference draws of the
  TWFE coefficient (:func:`evaluation.inference.few_clusters.randomization_inference`):
  with the same seed and the same townships every indicator is recomputed under the same
  pilot assignments, so row b of every indicator's draws is the same assignment and the
  draws are joint. Valid in finite samples under the sharp null of no effect on any
  indicator for any township, with exchangeable townships (as the single-indicator test).
- :func:`multiplier_draws`: joint draws of Callaway-Sant'Anna estimates from their
  per-township influence functions (multiplier bootstrap, the same township weights for
  every indicator; Callaway and Sant'Anna 2021, J Econometrics 225:200-230, sec. 4),
  to feed :func:`romano_wolf` when the headline uses analytic standard errors; valid as
  the number of townships grows.

These are array-level engines: they take p-values, statistics and draws, not a panel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd

from evaluation.errors import EstimationError

# randomization_inference counts a permuted coefficient as extreme when |beta_b| >= |beta| - TIE * max(1, |beta|)
RI_TIE = 1e-12


def _pvalues(p) -> np.ndarray:
    arr = np.asarray(p, dtype=float)
    if arr.ndim != 1:
        raise EstimationError(f"p-values must be one-dimensional, got shape {arr.shape}")
    finite = arr[~np.isnan(arr)]
    if ((finite < 0) | (finite > 1)).any():
        raise EstimationError(f"p-values must lie in [0, 1], got {finite[(finite < 0) | (finite > 1)][:3].tolist()}")
    return arr


def _sorted_pvalues(p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The p-values as an array, an all-NaN array of their shape for the adjusted ones, and
    the positions of the non-missing p-values in increasing order (ties stay in order)."""
    arr = _pvalues(p)
    idx = np.flatnonzero(~np.isnan(arr))
    return arr, np.full(arr.shape, np.nan), idx[np.argsort(arr[idx], kind="mergesort")]


def holm(p) -> np.ndarray:
    """Holm (1979, Scand J Statist 6:65-70) adjusted p-values.

    With the m p-values sorted, p(1) <= ... <= p(m), the adjusted p(i) is
    max over j <= i of min(1, (m - j + 1) p(j)). Rejecting where it is <= alpha keeps the
    family-wise error rate at alpha under any dependence between the tests. NaN (an
    indicator without a p-value) stays NaN and is not counted in m. Returns an array in
    the input order.
    """
    arr, out, order = _sorted_pvalues(p)
    m = len(order)
    if not m:
        return out
    scaled = arr[order] * np.arange(m, 0, -1)
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


def benjamini_hochberg(p) -> np.ndarray:
    """Benjamini and Hochberg (1995, J R Stat Soc B 57:289-300) adjusted p-values (q-values).

    With the m p-values sorted, q(i) = min over j >= i of min(1, m p(j) / j). Rejecting
    where q <= alpha keeps the false discovery rate at alpha m0 / m for independent tests
    (and positively dependent ones, Benjamini and Yekutieli 2001, Ann Statist
    29:1165-1188). NaN stays NaN and is not counted in m. Returns an array in the input
    order.
    """
    arr, out, order = _sorted_pvalues(p)
    m = len(order)
    if not m:
        return out
    raw = arr[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(1.0, np.minimum.accumulate(raw[::-1])[::-1])
    return out


def romano_wolf(statistics, null_draws, *, observed_included: bool = False, tolerance=0.0) -> np.ndarray:
    """Romano-Wolf step-down adjusted p-values from joint null draws.

    ``statistics``: the K observed statistics, on one scale (t statistics: estimate over
    its standard error). ``null_draws``: a B x K array of the same statistics under the
    null, drawn jointly (row b of every column from the same resample: the same bootstrap
    weights or the same pilot assignment), already centred (bootstrap: estimate_b minus
    estimate, over the standard error; randomization: the statistic under the re-assigned
    pilots). Two-sided: absolute values are compared.

    Algorithm (Romano and Wolf 2005, Econometrica 73:1237-1282, Algorithm 4.1; the
    p-values of Romano and Wolf 2016, Stat Probab Letters 113:38-40): order the hypotheses
    by |t| from the largest; at step s the raw p is the share of draws whose maximum |t|
    over the hypotheses from s on (those not yet rejected) is at least the s-th largest
    observed |t|; the adjusted p-values are the running maximum of these, so that a more
    significant statistic never gets a larger adjusted p (monotonicity). The family-wise
    error rate is controlled at any alpha when the draws reproduce the joint null
    distribution (asymptotically for a bootstrap; exactly for randomization under the
    sharp null). The adjusted p is at least the hypothesis's own resampling p.

    The observed draw. ``observed_included=False`` (a bootstrap): the observed statistics
    are counted as one more draw, p = (1 + #{draws at least as large}) / (B + 1), so p is
    never 0 and the test is exact when the draws are exchangeable with the data; this is
    also pyfixest's ``rwolf`` (0.60.0, ``_get_rwolf_pval``). ``observed_included=True``
    (randomization inference, where the observed assignment is already one of the B
    rows): p = #{draws at least as large} / B, as the single-indicator randomization
    p-value, so p >= 1/B.

    ``tolerance``: a draw counts as at least as large when |draw| >= |t| - tolerance
    (scalar or one per hypothesis, in the statistic's units), to keep ties that floating
    point breaks (0: exact comparison). A hypothesis whose statistic is NaN gets NaN and
    is left out of the family; non-finite draws of the others raise
    :class:`evaluation.errors.EstimationError`. Returns an array of K adjusted p-values.
    """
    t = np.abs(np.asarray(statistics, dtype=float))
    if t.ndim != 1:
        raise EstimationError(f"statistics must be one-dimensional (K,), got shape {t.shape}")
    draws = np.abs(np.asarray(null_draws, dtype=float))
    if draws.ndim != 2 or draws.shape[1] != len(t):
        raise EstimationError(f"null_draws must be B x K with K = {len(t)} columns, got shape {draws.shape}")
    if draws.shape[0] < 1:
        raise EstimationError("null_draws has no rows")
    tol = np.broadcast_to(np.asarray(tolerance, dtype=float), t.shape)
    if (tol < 0).any() or not np.isfinite(tol).all():
        raise EstimationError(f"tolerance must be finite and >= 0, got {tolerance!r}")
    out = np.full(t.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(t))
    if not len(idx):
        return out
    bad = [int(k) for k in idx if not np.isfinite(draws[:, k]).all()]
    if bad:
        raise EstimationError(f"null_draws has non-finite values in column(s) {bad}")
    order = idx[np.argsort(-t[idx], kind="mergesort")]   # from the most significant
    ordered = draws[:, order]
    # tail_max[:, s] = max |draw| over the hypotheses order[s:], those not rejected before step s
    tail_max = np.maximum.accumulate(ordered[:, ::-1], axis=1)[:, ::-1]
    exceed = (tail_max >= (t[order] - tol[order])[None, :]).sum(axis=0)
    extra = 0 if observed_included else 1
    step = np.minimum(1.0, (exceed + extra) / (draws.shape[0] + extra))
    out[order] = np.maximum.accumulate(step)
    return out


def randomization_romano_wolf(observed: Mapping[str, float] | pd.Series, *, permuted: pd.DataFrame) -> pd.DataFrame:
    """Randomization p-values of the indicators' TWFE coefficients, adjusted as a family.

    ``observed``: each indicator's TWFE coefficient (the ``estimate`` of
    :func:`evaluation.inference.few_clusters.randomization_inference`). ``draws``: B x K,
    a column per indicator, each that function's ``plot_data["permuted_estimate"]``. The
    draws must be joint: every indicator run with the same townships, cohorts, ``seed``,
    ``draws``, ``strata`` and ``max_exact``, so that row b is the same pilot assignment in
    every column (with random draws row 0 is the observed assignment; with exact
    enumeration the observed assignment is one of the rows). Only then do the adjusted
    p-values use the dependence between the indicators.

    Studentization: the coefficients of different indicators are on different scales
    (rates, shares, yuan), so each indicator's observed and permuted coefficients are
    divided by its permutation standard deviation (the SD of its B draws, ddof 1, the
    ``std_error`` that randomization inference reports) before the maximum is taken; the
    per-indicator tests are unchanged by this, and as the SD is a symmetric function of all
    the draws (the observed one included) the randomization test stays exact. The Romano-Wolf step-down
    (:func:`romano_wolf`) then runs with the observed assignment among the draws
    (``observed_included=True``): p = share of the B assignments at least as extreme,
    >= 1/B. Under the sharp null of no effect on any indicator for any township the
    family-wise error rate is at most alpha in finite samples (randomization
    hypothesis; Romano and Wolf 2005, Econometrica 73:1237-1282, sec. 3-4).

    Returns a frame indexed by indicator (the order of ``observed``) with ``estimate``,
    ``permutation_sd``, ``p_value`` (the raw randomization p, equal to
    randomization_inference's), ``p_romano_wolf``, ``p_holm`` (Holm on the raw p) and
    ``q_benjamini_hochberg`` (BH on the raw p). An indicator whose observed value is NaN
    (no estimate) gets NaN p-values and is left out of the family.
    """
    obs = pd.Series(observed, dtype=float) if not isinstance(observed, pd.Series) else observed.astype(float)
    if not isinstance(permuted, pd.DataFrame):
        raise EstimationError("permuted must be a DataFrame: one column of permuted coefficients per indicator")
    if obs.index.has_duplicates:
        raise EstimationError(f"observed names an indicator twice: {obs.index[obs.index.duplicated()].tolist()}")
    missing = [k for k in obs.index if k not in permuted.columns]
    if missing:
        raise EstimationError(f"permuted has no column for indicator(s) {missing}")
    B = len(permuted)
    if B < 2:
        raise EstimationError(f"permuted needs at least 2 rows (assignments), got {B}")
    D = permuted[list(obs.index)].to_numpy(dtype=float)
    est = obs.to_numpy()
    valid = ~np.isnan(est)
    for k in np.flatnonzero(valid):
        if not np.isfinite(D[:, k]).all():
            raise EstimationError(f"permuted coefficients of indicator '{obs.index[k]}' have missing or infinite values")
    sd = np.full(len(est), np.nan)
    sd[valid] = D[:, valid].std(axis=0, ddof=1)
    flat = [obs.index[k] for k in np.flatnonzero(valid) if not sd[k] > 0]
    if flat:
        raise EstimationError(f"the permuted coefficients of indicator(s) {flat} do not vary: nothing to test")
    if valid.any():
        close = np.abs(D[:, valid] - est[valid]) <= 1e-9 * np.maximum(np.abs(est[valid]), sd[valid])
        if not close.all(axis=1).any():
            raise EstimationError("no row of the permuted coefficients holds every indicator's observed coefficient: the draws must come "
                                  "from randomization_inference with the same townships, seed and draws for each "
                                  "indicator (row b the same pilot assignment in every column)")
    tie = RI_TIE * np.maximum(1.0, np.abs(est))
    # the single-indicator randomization p, as randomization_inference computes it
    raw = np.full(len(est), np.nan)
    raw[valid] = np.mean(np.abs(D[:, valid]) >= (np.abs(est[valid]) - tie[valid]), axis=0)
    with np.errstate(invalid="ignore"):
        t = est / sd
        scaled = np.where(valid, D / np.where(valid, sd, 1.0), 0.0)
    rw = romano_wolf(t, scaled, observed_included=True, tolerance=np.where(valid, tie / np.where(valid, sd, 1.0), 0))
    out = pd.DataFrame({"estimate": est, "permutation_sd": sd, "p_value": raw, "p_romano_wolf": rw,
                        "p_holm": holm(raw), "q_benjamini_hochberg": benjamini_hochberg(raw)},
                       index=pd.Index(obs.index, name="indicator"))
    return out


def multiplier_draws(influence, *, draws: int = 999, seed: int | None = None,
                     weights: Literal["rademacher", "mammen"] = "rademacher") -> np.ndarray:
    """Joint multiplier-bootstrap draws of K estimates from their influence functions.

    ``influence``: n_units x K, column k the per-township influence function of estimate
    k, scaled as in :mod:`evaluation.estimators.staggered` (and R did): var(estimate_k) =
    sum_i influence_ik^2 / n^2. Row i must be the same township in every column (a
    township absent from an indicator contributes 0). Draw b is V_b' influence / n with
    one weight V_bi per township shared by all K columns, so the draws keep the
    covariance between the indicators: their covariance is influence' influence / n^2,
    the analytic one (Callaway and Sant'Anna 2021, J Econometrics 225:200-230, sec. 4;
    R did's ``mboot``). Returns a B x K array of estimate deviations, estimate_b -
    estimate, centred at 0 (asymptotically the distribution of estimate - true value).

    ``weights``: ``"rademacher"`` (+1 or -1, each with probability 1/2) or ``"mammen"``
    (Mammen 1993, Ann Statist 21:255-285: (1 - sqrt5)/2 with probability
    (sqrt5 + 1)/(2 sqrt5), else (1 + sqrt5)/2; R did's choice). With ``"mammen"`` and the
    fit's seed the draws are those of ``GroupTimeEffects.uniform_band`` (over sqrt(n)).

    For Romano-Wolf across indicators: t = estimate / se and null_draws = draws / se, se
    the analytic standard errors, then :func:`romano_wolf` (``observed_included=False``).
    """
    from evaluation.inference.few_clusters import _single_blas_thread

    inf = np.asarray(influence, dtype=float)
    if inf.ndim == 1:
        inf = inf[:, None]
    if inf.ndim != 2 or inf.shape[0] < 2:
        raise EstimationError(f"influence must be n_units x K with at least 2 units, got shape {inf.shape}")
    if not np.isfinite(inf).all():
        bad = np.flatnonzero(~np.isfinite(inf).all(axis=0)).tolist()
        raise EstimationError(f"influence has missing or infinite values in column(s) {bad}")
    if weights not in ("rademacher", "mammen"):
        raise EstimationError(f"weights must be 'rademacher' or 'mammen', got {weights!r}")
    if int(draws) < 1:
        raise EstimationError(f"draws must be at least 1, got {draws}")
    draws = int(draws)
    n = inf.shape[0]
    rng = np.random.default_rng(seed)
    if weights == "mammen":
        sqrt5 = np.sqrt(5.0)
        cut, low, high = (sqrt5 + 1) / (2 * sqrt5), (1 - sqrt5) / 2, (1 + sqrt5) / 2
    else:
        cut, low, high = 0.5, -1.0, 1.0
    out = np.empty((draws, inf.shape[1]))
    chunk = max(1, 2**21 // n)   # rows of weights at a time (about 16 MB)
    with _single_blas_thread():   # one BLAS thread: faster on a busy machine, same draws to the last bits
        for start in range(0, draws, chunk):
            stop = min(draws, start + chunk)
            # one uniform per township and draw, in the order uniform_band takes them
            v = np.where(rng.random((stop - start, n)) < cut, low, high)
            out[start:stop] = v @ inf / n
    return out
