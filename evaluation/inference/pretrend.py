"""A pre-trend test that keeps its size with few pilot townships, and what it could detect.

The usual pre-trend test is the joint Wald test of the event study's leads with a
cluster-robust covariance. With few treated townships that covariance rests on a handful
of clusters and the test over-rejects: on simulated panels with parallel trends by
construction it rejected 13-21% of the time at the 5% level with 8 pilots (see
``docs/pretrend_size.md``). Here the leads' Wald statistic, with the covariance of the
leads over the randomization distribution in place of the cluster-robust one, is referred
to that distribution: pilot histories (each pilot's start) are re-assigned among the
townships, keeping the cohorts' sizes (Fisher 1935; MacKinnon and Webb 2020,
J Econometrics 218:435-450), and the p-value is the share of assignments whose statistic
is at least the observed one. Under the sharp null that no township's path depends on its
assignment before the start, and with exchangeable townships, the test has exact size
whatever the number of pilots.

Speed, on a balanced panel: an event-study regressor matrix depends on a township only
through its start, and the period means of the regressors depend only on the cohorts'
sizes, which a permutation keeps. So every piece of the two-way demeaned regression is a
small (township, start) table, and each assignment's coefficients, residual scores and
cluster-robust covariance cost O(townships x event times^2), without a refit (tests
compare them with :func:`evaluation.estimators.did.event_study` refits).

What the test could have detected (Roth 2022, AER: Insights 4:305-322): a pre-test that
does not reject is weak evidence when it has little power. :func:`pretrend_randomization`
reports the slope of a linear pre-trend that the joint test would detect with 50% and
80% probability, with the bias such a trend would put into the average post-period
event-study coefficient, and an equivalence bound (two one-sided tests: every lead lies
within +-bound at level alpha; Hartman and Hidalgo 2018, AJPS 62:1000-1013), both from the
permutation covariance of the leads.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, stats

from evaluation.errors import EstimationError
from evaluation.estimators.fixed_effects import balanced_wide, small_sample_factor, two_way_demean_balanced
from evaluation.inference.few_clusters import _Assignments
from evaluation.results import Effect, Estimates


def _event_design(periods: np.ndarray, start: float, first: int, last: int, columns: list[int]) -> np.ndarray:
    """The T x K event-time dummies of a township starting at ``start`` (0: never),
    event times binned at the window's ends, one column per event time in ``columns``."""
    X = np.zeros((len(periods), len(columns)))
    if start <= 0:
        return X
    k = np.clip(periods - start, first, last).astype(int)
    for j, e in enumerate(columns):
        X[k == e, j] = 1.0
    return X


def pretrend_randomization(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                           event_window: tuple[int, int] = (-3, 12), reference: int = -1, draws: int = 999,
                           seed: int | None = None, strata: str | None = None, alpha: float = 0.05,
                           max_exact: int = 5000, indicator: str | None = None) -> Estimates:
    """Joint test that the event study's leads are zero, by randomization inference.

    The event study is :func:`evaluation.estimators.did.event_study`'s: township and
    period effects, event-time dummies from ``event_window[0]`` to ``event_window[1]``
    binned at the ends, ``reference`` left out. The statistic is the Wald statistic of the
    leads (event times below ``reference``) with their covariance over the assignments;
    its p-value is the share of re-assignments of the pilot starts among the
    townships (within ``strata`` if given; all of them when there are at most
    ``max_exact``, else ``draws`` random ones plus the observed) with a statistic at least
    as large. Needs a balanced panel (raises
    :class:`evaluation.errors.UnbalancedPanelError`; callers drop incomplete townships).

    Effects: one per lead (estimand ``att_event_time``, ``event_time`` = k) with the
    standard deviation of its permutation distribution as standard error and its own
    randomization p-value (no interval). ``diagnostics``: ``statistic``, ``p_value``
    (randomization), ``p_cluster_robust`` (F(q, G-1) reference distribution, as
    fixest::wald: unreliable with few pilots), ``df`` (leads tested), ``assignments``,
    ``exact``, ``F`` (the cluster-robust, CR1 by township, F statistic of the leads, as
    the event study reports it), and the power statements: ``slope_50``/``slope_80`` (per period of the
    linear pre-trend detected with that probability: normal approximation with the
    permutation covariance of the leads and the chi-square critical value),
    ``bias_80`` (the bias that trend, continued after the start, puts into the average
    post-period coefficient) and ``equivalence_bound``.
    """
    first, last = (int(v) for v in event_window)
    if first >= reference or last < 0:
        raise EstimationError(f"event_window {event_window} has no lead before the reference event time {reference}")
    for column in (outcome, unit, time, cohort, *([strata] if strata else [])):
        if column not in data.columns:
            raise EstimationError(f"column '{column}' is not in the data")
    Y, units, periods = balanced_wide(data, outcome, unit, time, method="pretrend_randomization")
    starts = data.groupby(unit)[cohort].first().reindex(units).fillna(0).to_numpy(float)
    if not (starts > 0).any():
        raise EstimationError(f"no treated units: every '{cohort}' is 0 or missing")
    if (starts > 0).all():
        raise EstimationError(f"no comparison units: every unit has a '{cohort}'")
    cohorts = np.unique(starts[starts > 0])
    present = set()
    for g in cohorts:
        present |= set(np.clip(periods - g, first, last).astype(int).tolist())
    columns = [k for k in range(first, last + 1) if k != reference and k in present]
    leads = [j for j, k in enumerate(columns) if k < reference]
    if not leads:
        raise EstimationError(f"no lead before event time {reference} is observed for any pilot")
    N, T, K = len(units), len(periods), len(columns)

    # demeaned designs by start (last slot: never treated)
    options = np.r_[cohorts, 0.0]
    designs = np.stack([_event_design(periods, g, first, last, columns) for g in options])    # S x T x K
    label = np.searchsorted(cohorts, starts)
    label[starts <= 0] = len(cohorts)
    sizes = np.bincount(label, minlength=len(options)).astype(float)
    period_mean = np.einsum("s,stk->tk", sizes, designs) / N                                   # same for every assignment
    Xt = designs - designs.mean(axis=1, keepdims=True) - period_mean[None] + period_mean.mean(axis=0)[None, None]
    Yt = two_way_demean_balanced(Y)
    R = np.einsum("stk,it->isk", Xt, Yt)                                                       # N x S x K: X~(s)' y~_i
    Q = np.einsum("stk,stl->skl", Xt, Xt)                                                      # S x K x K
    A = np.einsum("s,skl->kl", sizes, Q)
    if np.linalg.matrix_rank(A) < K:
        raise EstimationError("the event-time dummies are collinear with the township and period effects")
    A_inv = np.linalg.inv(A)
    factor, _ = small_sample_factor("fixest", n=N * T, k=K, fe_levels=[N, T], fe_nested=[True, False], n_clusters=N)

    rng = np.random.default_rng(seed)
    strata_values = None
    if strata:
        strata_values = pd.factorize(data.groupby(unit)[strata].first().reindex(units))[0]
    design = _Assignments(np.where(starts > 0, label, -1), strata_values, rng)
    n_assign = design.count()
    exact = n_assign <= max_exact
    assignments = design.all() if exact else np.vstack([np.where(starts > 0, label, -1)[None, :],
                                                          design.random(draws)])
    assignments = np.where(assignments < 0, len(cohorts), assignments)
    observed_row = int(np.flatnonzero((assignments == label[None, :]).all(axis=1))[0])

    chunk = max(1, int(1e6 // max(1, N * K)))  # b x N x K arrays of at most a million entries (8 MB)
    beta = np.empty((len(assignments), K))
    statistic = np.empty(len(assignments))
    rows = np.arange(N)[None, :]
    for lo in range(0, len(assignments), chunk):
        a = assignments[lo:lo + chunk]
        r = R[rows, a]                                                                         # b x N x K
        b = r.sum(axis=1) @ A_inv.T
        Qb = np.einsum("skl,bl->bsk", Q, b)                                                   # b x options x K
        scores = r - Qb[np.arange(len(a))[:, None], a]                                         # no b x N x K x K
        meat = np.einsum("bik,bil->bkl", scores, scores)
        V = factor * A_inv[None] @ meat @ A_inv.T[None]
        bL, VL = b[:, leads], V[:, leads][:, :, leads]
        with np.errstate(invalid="ignore"):  # the cluster-robust Wald statistic, shown beside the test
            statistic[lo:lo + chunk] = np.einsum("bk,bk->b", bL, np.linalg.solve(VL, bL[..., None])[..., 0])
        beta[lo:lo + chunk] = b
    observed = beta[observed_row]
    # the test's statistic: the leads' Wald statistic with their permutation covariance
    # (one covariance for every assignment, so its power follows the chi-square
    # approximation below); the cluster-robust F is reported beside it
    lead_draws = beta[:, leads]
    sigma = np.atleast_2d(np.cov(lead_draws, rowvar=False))
    wald = np.einsum("bk,bk->b", lead_draws, np.linalg.solve(sigma, lead_draws.T).T)
    observed_stat = float(wald[observed_row])
    tolerance = 1e-10 * max(1.0, abs(observed_stat))
    p_joint = float(np.mean(wald >= observed_stat - tolerance))
    q = len(leads)
    F = float(statistic[observed_row]) / q
    p_cluster = float(stats.f.sf(F, q, N - 1))

    sd = lead_draws.std(axis=0, ddof=1)
    lead_times = [columns[j] for j in leads]
    effects = []
    n_treated = int((starts > 0).sum())
    inference = (f"randomization inference, {'all ' if exact else ''}{len(assignments):,} assignments"
                 + (f" within {strata}" if strata else "") + ("" if exact else f" (seed {seed})"))
    for j, (k, s) in zip(leads, zip(lead_times, sd, strict=True), strict=True):
        p_k = float(np.mean(np.abs(beta[:, j]) >= abs(observed[j]) - 1e-12 * max(1.0, abs(observed[j]))))
        effects.append(Effect(estimand="att_event_time", estimate=float(observed[j]), std_error=float(s),
                              ci_low=math.nan, ci_high=math.nan, p_value=p_k,
                              method="event study (two-way fixed effects), pre-trend leads", inference=inference,
                              n_obs=N * T, n_units=N, n_treated=n_treated, term=f"k={k}", indicator=indicator,
                              alpha=alpha, event_time=k, p_floor=1 / len(assignments)))
    # a linear violation delta * (k - reference) in the pilots' paths, before and after the
    # start: the coefficients it puts into this regression per unit of delta (binning included)
    trend = np.where(starts[:, None] > 0, periods[None, :] - starts[:, None] - reference, 0.0)
    trend_by_option = np.zeros((len(Xt), T))  # the demeaned trend summed over the units of each option
    np.add.at(trend_by_option, label, two_way_demean_balanced(trend))
    trend_beta = A_inv @ np.einsum("stk,st->k", Xt, trend_by_option)
    power = _detectable(lead_draws, trend_beta[leads], trend_beta[[j for j, k in enumerate(columns) if k >= 0]],
                        alpha)
    bound = float(np.max(np.abs(observed[leads]) + stats.norm.ppf(1 - alpha) * sd))
    diagnostics = {"statistic": observed_stat, "F": F, "df": q, "p_value": p_joint, "p_cluster_robust": p_cluster,
                   "assignments": len(assignments), "possible_assignments": n_assign, "exact": exact,
                   "p_floor": 1 / len(assignments), "equivalence_bound": bound, "reference": reference,
                   "event_window": (first, last), "leads": lead_times, **power}
    return Estimates(effects=effects, method="pre-trend test (event-study leads)", kind="pretrend_randomization",
                     wald=False, diagnostics=diagnostics,
                     plot_data=pd.DataFrame({"statistic": wald, "cluster_robust_statistic": statistic}))


def _detectable(lead_draws: np.ndarray, lead_shift: np.ndarray, post_shift: np.ndarray, alpha: float) -> dict:
    """Roth (2022): the slope delta of a linear violation of parallel trends that the joint
    test detects with 50% and 80% probability (power of a Wald test with the leads'
    permutation covariance: noncentral chi-square), and the bias it puts into the average
    post-period coefficient. ``lead_shift`` / ``post_shift``: what a unit slope adds to the
    lead and post-period coefficients."""
    v = np.asarray(lead_shift, float)
    sigma = np.atleast_2d(np.cov(lead_draws, rowvar=False))
    try:
        precision = float(v @ np.linalg.solve(sigma, v))
    except np.linalg.LinAlgError:
        precision = math.nan
    q = len(v)
    critical = stats.chi2.ppf(1 - alpha, q)
    out = {}
    for level in (50, 80):
        if not np.isfinite(precision) or precision <= 0:
            out[f"slope_{level}"] = math.nan
            continue
        nc = optimize.brentq(lambda lam, lv=level: stats.ncx2.sf(critical, q, lam) - lv / 100, 1e-9, 1e4)
        out[f"slope_{level}"] = float(math.sqrt(nc / precision))
    out["bias_80"] = float(out["slope_80"] * np.mean(post_shift)) if len(post_shift) else math.nan
    return out
