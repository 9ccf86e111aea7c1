"""Effect heterogeneity by township characteristics (异质性分析), valid with few pilots.

Subgroups of a covariate: a binary covariate's two values, a continuous covariate split at
its median over all townships (``low``: at or below, ``high``: above). Each subgroup is
analysed on its own townships, pilots and comparison townships alike (the split-sample
analysis of the Chinese evaluation literature). Its effect is the average of the pilots'
own 2x2 DiDs, each pilot's mean outcome from its start to the end of the data minus its
mean over the ``pre_periods`` before the start, less the same change of the subgroup's
never-treated townships over the same calendar periods, weighted by the pilot's number
of treated periods: the ATT over every treated township-period (the simple aggregation
of Callaway and Sant'Anna 2021, with a longer base), which, unlike a two-way fixed-effects
coefficient, is not biased by effects that grow after the start in staggered cohorts
(Goodman-Bacon 2021). Its p-value and interval come from randomization inference: pilot
histories (start dates, cohort sizes kept) re-assigned among the subgroup's townships,
exactly when there are at most ``max_exact`` assignments, the interval inverting the test
under constant additive effects; they hold with one or two pilots in a subgroup, unlike a
cluster-robust test.

With ``covariates`` each subgroup's outcome is first adjusted for period effects linear in
them (conditional parallel trends: without the pilot, townships with the same
characteristics move alike, the characteristics' effect free to change every period, as in
Callaway and Sant'Anna's outcome-regression estimator; Heckman, Ichimura and Todd 1997):
on the subgroup's comparison townships, each period's deviation from the township's mean
is regressed on the covariates that vary within the subgroup, and every township's outcome
has its covariates' fitted deviation removed. The adjustment is estimated once per
subgroup and held fixed in the permutations. On the selection demo (``data_raw/
demo_selection``), where the characteristics drive selection, trends and effects, the
adjusted 95% intervals covered 32 of 36 subgroup truths (9 indicators, 4 subgroups, 199
draws), the unadjusted ones 9.

The difference between the two subgroups is tested by permuting the characteristic's
labels among the pilots (exactly, over every relabelling when there are at most
``max_exact``): each pilot's own DiD, its mean change from the ``pre`` window before its
start to the ``post`` window after it minus the same change of its subgroup's comparison
townships over the same calendar periods, keeps its value; the statistic is the difference
of the two subgroups' mean pilot DiDs. Under the null that a pilot's effect is unrelated
to the characteristic (the pilots' effects exchangeable across its values) the relabelled
statistics are its exact null distribution (Fisher 1935; for treatment-effect variation,
Ding, Feller and Miratrix 2016, JRSS B 78(3)); the shared noise of a subgroup's comparison
mean is ignored, so the test is approximate when comparison townships are few.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import combinations
from math import comb

import numpy as np
import pandas as pd

from evaluation.errors import EstimationError
from evaluation.inference.few_clusters import _Assignments, _invert
from evaluation.results import Effect, Estimates

LOW, HIGH = "low", "high"


def subgroup_labels(data: pd.Series, *, kind: str | None = None) -> tuple[pd.Series, float | None]:
    """Each township's subgroup of one covariate (index: township), and the median used.

    Binary (two distinct values, or ``kind='binary'``): ``"1"``/``"0"``; continuous:
    ``low`` (at or below the median over all townships) and ``high``. Missing values stay
    missing (those townships are left out). ``data``: one covariate's values by township."""
    values = data
    known = values.dropna()
    if known.nunique() <= 1:
        raise EstimationError(f"covariate '{values.name}' has one value for every township: no subgroups")
    if kind == "binary" or (kind is None and set(known.unique()) <= {0, 1}):
        return values.map(lambda v: v if pd.isna(v) else str(int(v))), None
    median = float(known.median())
    labels = values.map(lambda v: v if pd.isna(v) else (LOW if v <= median else HIGH))
    if labels.dropna().nunique() < 2:
        raise EstimationError(f"covariate '{values.name}': every township is at or below the median {median:g}")
    return labels, median


def heterogeneity_randomization(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                                by: Sequence[str], kinds: dict[str, str] | None = None,
                                covariates: Sequence[str] = (), pre_periods: int = 12, draws: int = 999,
                                seed: int | None = None, alpha: float = 0.05, max_exact: int = 5000,
                                indicator: str | None = None) -> Estimates:
    """The ATT in each subgroup of each covariate in ``by`` and the test of their difference.

    ``data``: the long panel with the time-invariant covariates as columns (constant within
    a unit; a unit with a missing value is left out of that covariate's analysis and counted
    in ``diagnostics``). ``event_window`` (first, last): the pilot-level DiDs of the
    difference test compare event times ``first .. -1`` with ``0 .. last``. Effects: one
    ``att_subgroup`` per subgroup (``by`` the covariate, ``group`` its label, ``extra``:
    ``difference`` = high minus low (or 1 minus 0) of the covariate's pilot-DiD means,
    ``p_difference`` and ``n_relabellings``). ``covariates``: adjust for period effects
    linear in them (module docstring). See the module docstring for the assumptions.
    """
    kinds = kinds or {}
    if not by:
        raise EstimationError("no covariate to form subgroups from (analysis.heterogeneity is empty)")
    missing = [c for c in (outcome, unit, time, cohort, *by) if c not in data.columns]
    if missing:
        raise EstimationError(f"columns not in the data: {missing}")
    rng_seed = seed
    if pre_periods < 1:
        raise EstimationError(f"pre_periods must be at least 1, got {pre_periods}")
    adjusted = list(covariates) or None
    effects, skipped, left_out, medians = [], {}, {}, {}
    for column in by:
        per_unit = data.groupby(unit)[column]
        varying = per_unit.nunique(dropna=True)
        if (varying > 1).any():
            bad = varying.index[varying > 1][0]
            raise EstimationError(f"covariate '{column}' varies within {unit} {bad}: subgroups need a time-invariant "
                                  "characteristic (a township table or baseline value)")
        labels, median = subgroup_labels(per_unit.first().rename(column), kind=kinds.get(column))
        medians[column] = median
        left_out[column] = [str(u) for u in labels.index[labels.isna()]]
        labelled = data.assign(_group=data[unit].map(labels)).dropna(subset=["_group"])
        groups = sorted(labelled["_group"].unique(), key=lambda g: {LOW: "0", HIGH: "1"}.get(g, g))
        samples, failed = {}, {}
        for g in groups:
            sample = labelled[labelled["_group"] == g]
            varying = [c for c in covariates if sample.groupby(unit)[c].first().nunique() > 1]
            try:
                if varying:  # the group's own comparison townships: covariate effects may differ by group
                    sample = sample.assign(**{outcome: adjust_for_covariates(
                        sample, outcome=outcome, unit=unit, time=time, cohort=cohort, covariates=varying)})
            except EstimationError as exc:
                failed[g] = str(exc)
            samples[g] = sample
        difference, p_difference, n_relabel = _difference_test(pd.concat(samples.values()), outcome=outcome,
                                                               unit=unit, time=time, cohort=cohort,
                                                               pre_periods=pre_periods, groups=groups,
                                                               max_exact=max_exact, draws=draws, seed=rng_seed)
        for g in groups:
            try:
                if g in failed:
                    raise EstimationError(failed[g])
                e = _subgroup_effect(samples[g].drop(columns="_group"), outcome=outcome, unit=unit, time=time,
                                     cohort=cohort, pre_periods=pre_periods, draws=draws, seed=seed, alpha=alpha,
                                     max_exact=max_exact, indicator=indicator)
            except EstimationError as exc:
                skipped[f"{column}:{g}"] = str(exc)
                continue
            extra = {**e.extra, "by": column, "group": g, "median": median, "difference": difference,
                     "p_difference": p_difference, "n_relabellings": n_relabel}
            effects.append(replace(e, term=f"{column}:{g}", by=column, group=g, extra=extra,
                                   method=f"pilot-level DiD on the townships with {column} {g} (split sample)"
                                          + (", adjusted for covariate period effects" if adjusted else "")))
    if not effects:
        raise EstimationError("no subgroup could be estimated: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return Estimates(effects=effects, method="effects by covariate subgroup (split samples, pilot-level DiD), "
                     "randomization inference; difference by permuting the characteristic among the pilots",
                     kind="heterogeneity",
                     wald=False, diagnostics={"not_estimable": skipped, "left_out_missing": left_out,
                                              "medians": medians, "adjusted_for": adjusted})


def adjust_for_covariates(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                          covariates: Sequence[str]) -> pd.Series:
    """``outcome`` less its covariates' fitted period effects (module docstring): on the
    comparison townships (``cohort`` 0 or missing), the deviation of each period's outcome
    from the township's mean is regressed on the covariates period by period (with an
    intercept); each township's outcome loses x_i'(d_t - mean_t d_t). Covariates must be
    constant within a township and known; a period with fewer comparison townships than
    covariates + 2 is left unadjusted (its slopes are set to their mean)."""
    columns = list(covariates)
    per_unit = data.groupby(unit)[columns]
    if (per_unit.nunique(dropna=True) > 1).any().any():
        bad = next(c for c in columns if (per_unit[c].nunique(dropna=True) > 1).any())
        raise EstimationError(f"covariate '{bad}' varies within a {unit}: the adjustment needs time-invariant "
                              "characteristics")
    x = per_unit.first()
    if x.isna().any().any():
        bad = x.columns[x.isna().any()][0]
        raise EstimationError(f"covariate '{bad}' is missing for {unit} {x.index[x[bad].isna()][0]}")
    comparison = data[(data[cohort].fillna(0) <= 0) & data[outcome].notna()]
    deviation = comparison[outcome] - comparison.groupby(unit)[outcome].transform("mean")
    times = np.sort(data[time].unique())
    slopes = np.full((len(times), len(columns)), np.nan)
    for k, t in enumerate(times):
        rows = comparison[time] == t
        if rows.sum() < len(columns) + 2:
            continue
        design = np.column_stack([np.ones(int(rows.sum())), x.loc[comparison.loc[rows, unit]].to_numpy(float)])
        coef, *_ = np.linalg.lstsq(design, deviation[rows].to_numpy(float), rcond=None)
        slopes[k] = coef[1:]
    if np.isnan(slopes).all():
        raise EstimationError("too few comparison townships in every period to adjust for the covariates")
    mean = np.nanmean(slopes, axis=0)
    slopes = np.where(np.isnan(slopes), mean, slopes) - mean
    by_time = pd.DataFrame(slopes, index=times, columns=columns)
    fitted = (by_time.loc[data[time]].to_numpy() * x.loc[data[unit]].to_numpy(float)).sum(axis=1)
    return data[outcome] - fitted


def pilot_did(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str, pre_periods: int = 12,
              comparison_group: str | None = None) -> pd.DataFrame:
    """Each pilot's own 2x2 DiD (module docstring): ``did`` = its mean ``outcome`` from its
    start to the last period minus its mean over the ``pre_periods`` before, less the same
    change of the never-treated townships' period means (of its ``comparison_group`` value
    when given); ``weight`` = its number of observed treated periods. Pilots without an
    observation in either window are left out."""
    starts = data[cohort].fillna(0)
    comp = data[(starts <= 0) & data[outcome].notna()]
    pilots = data[(starts > 0) & data[outcome].notna()]
    last = data[time].max()
    out = {}
    for u, rows in pilots.groupby(unit):
        g = rows[cohort].iloc[0]
        c = comp if comparison_group is None else comp[comp[comparison_group] == rows[comparison_group].iloc[0]]
        if c.empty:
            continue
        means = c.groupby(time)[outcome].mean()
        own = rows.set_index(time)[outcome]
        pre = (own.index >= g - pre_periods) & (own.index < g)
        post = own.index >= g
        if not pre.any() or not post.any():
            continue
        pre_c = means[(means.index >= g - pre_periods) & (means.index < g)]
        post_c = means[(means.index >= g) & (means.index <= last)]
        out[u] = ((own[post].mean() - own[pre].mean()) - (post_c.mean() - pre_c.mean()), int(post.sum()))
    return pd.DataFrame.from_dict(out, orient="index", columns=["did", "weight"]).dropna()


def _statistic(Y: np.ndarray, observed: np.ndarray, assignment: np.ndarray, pre_periods: int) -> float:
    """The cell-weighted mean pilot DiD of a unit x period matrix (NaN: not observed) under
    an ``assignment`` (start column per unit, -1 never); ``observed`` is ~isnan(Y)."""
    T = Y.shape[1]
    Y0 = np.where(observed, Y, 0.0)
    never = assignment < 0
    col_sum, col_n = Y0[never].sum(axis=0), observed[never].sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        comparison = col_sum / col_n
    has = col_n > 0
    c_sum = np.concatenate([[0.0], np.cumsum(np.where(has, comparison, 0.0))])
    c_n = np.concatenate([[0], np.cumsum(has)])
    y_sum = np.concatenate([np.zeros((len(Y), 1)), np.cumsum(Y0, axis=1)], axis=1)
    y_n = np.concatenate([np.zeros((len(Y), 1), int), np.cumsum(observed, axis=1)], axis=1)
    total, weight = 0.0, 0.0
    for i in np.flatnonzero(~never):
        c = assignment[i]
        a = max(0, c - pre_periods)
        n_pre, n_post = y_n[i, c] - y_n[i, a], y_n[i, T] - y_n[i, c]
        m_pre, m_post = c_n[c] - c_n[a], c_n[T] - c_n[c]
        if not (n_pre and n_post and m_pre and m_post):
            continue
        d = ((y_sum[i, T] - y_sum[i, c]) / n_post - (y_sum[i, c] - y_sum[i, a]) / n_pre
             - ((c_sum[T] - c_sum[c]) / m_post - (c_sum[c] - c_sum[a]) / m_pre))
        total += n_post * d
        weight += n_post
    return total / weight if weight else np.nan


def _subgroup_effect(sample: pd.DataFrame, *, outcome, unit, time, cohort, pre_periods, draws, seed, alpha,
                     max_exact, indicator) -> Effect:
    """The subgroup's ATT (cell-weighted mean pilot DiD) with randomization inference."""
    d = sample[sample[outcome].notna()]
    units, periods = np.sort(d[unit].unique()), np.sort(d[time].unique())
    Y = np.full((len(units), len(periods)), np.nan)
    Y[np.searchsorted(units, d[unit].to_numpy()), np.searchsorted(periods, d[time].to_numpy())] = d[outcome]
    observed = ~np.isnan(Y)
    starts = d.groupby(unit)[cohort].first().reindex(units).fillna(0).to_numpy(float)
    cohort_index = np.array([np.searchsorted(periods, g) if g > 0 else -1 for g in starts])
    if (cohort_index < 0).all():
        raise EstimationError("no pilot township in the group")
    if (cohort_index >= 0).all():
        raise EstimationError("no comparison township in the group")
    D = np.zeros_like(Y)
    for i, c in enumerate(cohort_index):
        if c >= 0:
            D[i, c:] = 1.0
    D = np.where(observed, D, np.nan)
    estimate = _statistic(Y, observed, cohort_index, pre_periods)
    if not np.isfinite(estimate):
        raise EstimationError("no pilot township has observations both before and after its start")
    design = _Assignments(cohort_index, None, np.random.default_rng(seed))
    n_assign = design.count()
    exact = n_assign <= max_exact
    assignments = design.all() if exact else np.vstack([cohort_index[None, :], design.random(draws)])
    stats = np.array([_statistic(Y, observed, a, pre_periods) for a in assignments])
    overlap = np.array([_statistic(D, observed, a, pre_periods) for a in assignments])
    keep = np.isfinite(stats)
    stats, overlap = stats[keep], overlap[keep]

    def p_value(tau0: float) -> float:
        return float(np.mean(np.abs(stats - tau0 * overlap) >= abs(estimate - tau0) - 1e-12 * max(1.0, abs(estimate))))

    sd = float(np.std(stats, ddof=1))
    low, high = _invert(p_value, estimate, sd, alpha)
    n_total = len(stats)
    return Effect(estimand="att_subgroup", estimate=float(estimate), std_error=sd, ci_low=low, ci_high=high,
                  p_value=p_value(0.0), method="pilot-level DiD",
                  inference=(f"randomization inference, {'all ' if exact else ''}{n_total:,} assignments"
                             + ("" if exact else f" (seed {seed})")),
                  n_obs=int(observed.sum()), n_units=len(units), n_treated=int((cohort_index >= 0).sum()),
                  indicator=indicator, alpha=alpha, p_floor=1 / n_total,
                  extra={"exact": exact, "assignments": n_total, "n_comparison": int((cohort_index < 0).sum())})


def _difference_test(labelled: pd.DataFrame, *, outcome, unit, time, cohort, pre_periods, groups, max_exact, draws,
                     seed) -> tuple[float, float, int]:
    """Difference of the two groups' cell-weighted mean pilot DiDs and its relabelling
    p-value (NaN when the covariate has more than two groups or a group has no pilot)."""
    if len(groups) != 2:
        return np.nan, np.nan, 0
    did = pilot_did(labelled, outcome=outcome, unit=unit, time=time, cohort=cohort, pre_periods=pre_periods,
                    comparison_group="_group")
    label = labelled.drop_duplicates(unit).set_index(unit)["_group"].reindex(did.index)
    in_second = (label == groups[1]).to_numpy()
    n, k = len(did), int(in_second.sum())
    if k == 0 or k == n:
        return np.nan, np.nan, 0
    values, weights = did["did"].to_numpy(), did["weight"].to_numpy(float)
    observed = _split_mean_difference(values, weights, np.flatnonzero(in_second))
    total = comb(n, k)
    if total <= max_exact:
        stats = np.array([_split_mean_difference(values, weights, list(chosen))
                          for chosen in combinations(range(n), k)])
    else:
        rng = np.random.default_rng(seed)
        stats = np.array([_split_mean_difference(values, weights, rng.choice(n, size=k, replace=False))
                          for _ in range(draws)])
        stats = np.append(stats, observed)  # the observed labelling counts among the draws
    p = float(np.mean(np.abs(stats) >= abs(observed) - 1e-12))
    return float(observed), p, int(len(stats))


def _split_mean_difference(values: np.ndarray, weights: np.ndarray, chosen) -> float:
    mask = np.zeros(len(values), bool)
    mask[list(chosen)] = True
    return float(np.average(values[mask], weights=weights[mask]) - np.average(values[~mask], weights=weights[~mask]))
