"""Effect heterogeneity by township characteristics (异质性分析), valid with few pilots.

Subgroups of a covariate: a binary covariate's two values, a continuous covariate split at
its median over all townships (``low``: at or below, ``high``: above). Each subgroup's
effect is the two-way fixed-effects DiD on the subgroup's own townships, pilots and
comparison townships alike (the split-sample analysis of the Chinese evaluation
literature), under parallel trends within the subgroup; its p-value and interval come from
randomization inference (pilot histories re-assigned among the subgroup's townships,
exact when small; :func:`evaluation.inference.few_clusters.randomization_inference`), so
they hold with one or two pilots in a subgroup, unlike a cluster-robust test.

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
from evaluation.inference.few_clusters import randomization_inference
from evaluation.results import Estimates

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
                                event_window: tuple[int, int] = (-12, 24), draws: int = 999,
                                seed: int | None = None, alpha: float = 0.05, max_exact: int = 5000,
                                indicator: str | None = None) -> Estimates:
    """The ATT in each subgroup of each covariate in ``by`` and the test of their difference.

    ``data``: the long panel with the time-invariant covariates as columns (constant within
    a unit; a unit with a missing value is left out of that covariate's analysis and counted
    in ``diagnostics``). ``event_window`` (first, last): the pilot-level DiDs of the
    difference test compare event times ``first .. -1`` with ``0 .. last``. Effects: one
    ``att_subgroup`` per subgroup (``by`` the covariate, ``group`` its label, ``extra``:
    ``difference`` = high minus low (or 1 minus 0) of the covariate's pilot-DiD means,
    ``p_difference`` and ``n_relabellings``). See the module docstring for the assumptions.
    """
    kinds = kinds or {}
    if not by:
        raise EstimationError("no covariate to form subgroups from (analysis.heterogeneity is empty)")
    missing = [c for c in (outcome, unit, time, cohort, *by) if c not in data.columns]
    if missing:
        raise EstimationError(f"columns not in the data: {missing}")
    rng_seed = seed
    first, last = event_window
    if first >= 0 or last < 0:
        raise EstimationError(f"event_window must run from a negative to a non-negative event time, got {event_window}")
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
        difference, p_difference, n_relabel = _difference_test(labelled, outcome=outcome, unit=unit, time=time,
                                                               cohort=cohort, window=(first, last), groups=groups,
                                                               max_exact=max_exact, draws=draws, seed=rng_seed)
        for g in groups:
            sample = labelled[labelled["_group"] == g].drop(columns="_group")
            try:
                ri = randomization_inference(sample, outcome=outcome, unit=unit, time=time, cohort=cohort,
                                             draws=draws, seed=seed, alpha=alpha, max_exact=max_exact,
                                             indicator=indicator)
            except EstimationError as exc:
                skipped[f"{column}:{g}"] = str(exc)
                continue
            e = ri.effects[0]
            extra = {**e.extra, "by": column, "group": g, "median": median, "difference": difference,
                     "p_difference": p_difference, "n_relabellings": n_relabel,
                     "n_comparison": int(sample.loc[sample[cohort].fillna(0) <= 0, unit].nunique())}
            effects.append(replace(e, term=f"{column}:{g}", estimand="att_subgroup", by=column, group=g,
                                   method=f"two-way fixed effects on the townships with {column} {g} "
                                          "(split sample), randomization inference", extra=extra))
    if not effects:
        raise EstimationError("no subgroup could be estimated: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return Estimates(effects=effects, method="effects by covariate subgroup (split samples), randomization inference;"
                     " difference by permuting the characteristic among the pilots", kind="heterogeneity",
                     wald=False, diagnostics={"not_estimable": skipped, "left_out_missing": left_out,
                                              "medians": medians})


def pilot_did(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
              window: tuple[int, int], comparison_group: str | None = None) -> pd.Series:
    """Each pilot's own 2x2 DiD: its mean ``outcome`` over event times ``0..last`` minus
    over ``first..-1``, minus the same difference of the comparison townships' period means
    (of its ``comparison_group`` value when given) over the same calendar periods.
    Pilots without an observation in either window are left out (NaN dropped)."""
    first, last = window
    starts = data[cohort].fillna(0)
    comp = data[starts <= 0]
    pilots = data[starts > 0]
    out = {}
    for u, rows in pilots.groupby(unit):
        g = rows[cohort].iloc[0]
        pre_t = np.arange(g + first, g)
        post_t = np.arange(g, g + last + 1)
        c = comp if comparison_group is None else comp[comp[comparison_group] == rows[comparison_group].iloc[0]]
        if c.empty:
            continue
        means = c.groupby(time)[outcome].mean()
        own = rows.set_index(time)[outcome]
        pre_own, post_own = own.reindex(pre_t).mean(), own.reindex(post_t).mean()
        pre_c, post_c = means.reindex(pre_t).mean(), means.reindex(post_t).mean()
        out[u] = (post_own - pre_own) - (post_c - pre_c)
    return pd.Series(out, dtype=float).dropna()


def _difference_test(labelled: pd.DataFrame, *, outcome, unit, time, cohort, window, groups, max_exact, draws,
                     seed) -> tuple[float, float, int]:
    """Difference of the two groups' mean pilot DiDs and its relabelling p-value (NaN when
    the covariate has more than two groups or a group has no pilot)."""
    if len(groups) != 2:
        return np.nan, np.nan, 0
    did = pilot_did(labelled, outcome=outcome, unit=unit, time=time, cohort=cohort, window=window,
                    comparison_group="_group")
    label = labelled.drop_duplicates(unit).set_index(unit)["_group"].reindex(did.index)
    in_second = (label == groups[1]).to_numpy()
    n, k = len(did), int(in_second.sum())
    if k == 0 or k == n:
        return np.nan, np.nan, 0
    values = did.to_numpy()
    observed = values[in_second].mean() - values[~in_second].mean()
    total = comb(n, k)
    if total <= max_exact:
        stats = np.array([_split_mean_difference(values, list(chosen)) for chosen in combinations(range(n), k)])
    else:
        rng = np.random.default_rng(seed)
        stats = np.array([_split_mean_difference(values, list(rng.choice(n, size=k, replace=False)))
                          for _ in range(draws)])
        stats = np.append(stats, observed)  # the observed labelling counts among the draws
    p = float(np.mean(np.abs(stats) >= abs(observed) - 1e-12))
    return float(observed), p, int(len(stats))


def _split_mean_difference(values: np.ndarray, chosen: list[int]) -> float:
    mask = np.zeros(len(values), bool)
    mask[chosen] = True
    return values[mask].mean() - values[~mask].mean()
