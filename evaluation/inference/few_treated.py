"""One rule for p-values from few treated townships, and subgroup effects that obey it.

Cluster-robust (CR1) and analytic influence-function standard errors rest on the treated
clusters: with one or two treated townships the "standard error" is the spread of one or
two residual sums and the test rejects a true null most of the time (MacKinnon and Webb
2017, J Applied Econometrics 32:233-254; Conley and Taber 2011, Rev Econ Stat 93:113-125).
On the demo's design the CR1 test of a true null rejected 75% of the time with 1 pilot,
32% with 2 and 9% with 4, and 5.5% with 10 (``docs/power.md``).

The rule (:func:`withhold_clustered`): an effect whose inference is cluster-robust or
analytic and whose number of treated townships is below the plan's ``very_few_pilots``
(default 5) is shown with its estimate only; its standard error, interval and p-value are
withheld and the reason is written in their place. Effects with inference that is valid
for any number of treated townships (randomization inference, wild cluster bootstrap,
CR2 with Bell-McCaffrey degrees of freedom, synthetic-control placebo ranks, a
township's own time series) keep theirs. Every chapter table and every export applies
this one function.

Subgroups (integration model, cohort, county) are estimated by
:func:`subgroup_randomization`: each group's pilots against the comparison townships,
with randomization inference, which holds for one pilot as for twenty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from evaluation.errors import EstimationError
from evaluation.inference.few_clusters import randomization_inference
from evaluation.results import Estimates

# How the estimators name inference that rests on the treated clusters (the prefixes of
# their ``inference`` texts: evaluation.estimators.did._effect, staggered._effect,
# saturated._inference and imputation's Theorem 3 variance).
CLUSTER_ROBUST = ("cluster-robust CR1", "analytic influence-function", "BJS (2024) Theorem 3")
WITHHELD = "not shown"
_WITHHELD_TEXT = re.compile(r"^not shown: cluster-robust inference from (\d+) pilot townships?, fewer than (\d+)")


def rests_on_clusters(inference) -> bool:
    """Whether an effect's ``inference`` is cluster-robust or analytic (valid only with
    enough treated townships)."""
    return isinstance(inference, str) and inference.startswith(CLUSTER_ROBUST)


def withheld_reason(n_treated: int, min_treated: int) -> str:
    """The text that replaces a withheld inference (``Reader.method`` translates it)."""
    noun = "township" if int(n_treated) == 1 else "townships"
    return (f"{WITHHELD}: cluster-robust inference from {int(n_treated)} pilot {noun}, fewer than {int(min_treated)}"
            " (unreliable: see randomization inference)")


def parse_withheld(inference) -> tuple[int, int] | None:
    """(pilots, threshold) of a withheld inference text, else ``None``."""
    match = _WITHHELD_TEXT.match(inference) if isinstance(inference, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


def withhold_clustered(effects: pd.DataFrame, *, min_treated: int) -> pd.DataFrame:
    """The rule, on a tidy effects table (:func:`evaluation.results.tidy`): rows whose
    inference rests on the treated clusters and have fewer than ``min_treated`` treated
    townships keep their estimate; standard error, interval and p-value become missing
    and ``inference`` says why. Other rows are unchanged. Returns a copy."""
    out = effects.copy()
    if out.empty or "inference" not in out or "n_treated" not in out:
        return out
    n_treated = pd.to_numeric(out["n_treated"], errors="coerce")
    hit = out["inference"].map(rests_on_clusters).astype(bool) & (n_treated < min_treated).to_numpy()
    if not hit.any():
        return out
    for column in ("std_error", "ci_low", "ci_high", "p_value", "p_floor"):
        if column in out:
            out[column] = out[column].astype(float)
            out.loc[hit, column] = np.nan
    out["inference"] = out["inference"].astype(object)
    out.loc[hit, "inference"] = [withheld_reason(n, min_treated) for n in n_treated[hit]]
    return out


def subgroup_randomization(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                           by: str | Sequence[str], draws: int = 999, seed: int | None = None, alpha: float = 0.05,
                           max_exact: int = 5000, indicator: str | None = None) -> Estimates:
    """The ATT of each subgroup of pilots, with inference valid for its number of pilots.

    For each value of ``by`` among the pilots (``cohort`` > 0), the two-way fixed-effects
    DiD coefficient on that group's pilots and every comparison township (the other pilots
    left out), under parallel trends between the group and the comparison townships, with
    randomization inference (:func:`evaluation.inference.few_clusters.randomization_inference`:
    the group's pilot histories re-assigned among the group and the comparison townships,
    exact when there are at most ``max_exact`` assignments) and the interval that inverts
    it. Effects carry ``by`` and ``group``; a group whose test cannot be made (e.g. no
    variation left) is reported with its reason in ``diagnostics['not_estimable']``.
    """
    columns = [by] if isinstance(by, str) else list(by)
    missing = [c for c in (outcome, unit, time, cohort, *columns) if c not in data.columns]
    if missing:
        raise EstimationError(f"columns not in the data: {missing}")
    starts = data[cohort].fillna(0)
    pilots, comparison = data[starts > 0], data[starts <= 0]
    if pilots.empty:
        raise EstimationError(f"no treated units: every '{cohort}' is 0 or missing")
    if comparison.empty:
        raise EstimationError(f"no comparison units: every unit has a '{cohort}'")
    effects, skipped = [], {}
    for column in columns:
        labels = pilots[column].astype(str).where(pilots[column].notna())
        groups = sorted(labels.dropna().unique())
        if not groups:
            raise EstimationError(f"'{column}' is missing for every pilot row")
        for g in groups:
            sample = pd.concat([pilots[(labels == g).to_numpy()], comparison])
            try:
                ri = randomization_inference(sample, outcome=outcome, unit=unit, time=time, cohort=cohort, draws=draws,
                                             seed=seed, alpha=alpha, max_exact=max_exact, indicator=indicator)
            except EstimationError as exc:
                skipped[f"{column}={g}"] = str(exc)
                continue
            e = ri.effects[0]
            effects.append(replace(e, term=f"{column}={g}", by=column, group=g,
                                   method=f"two-way fixed effects, ATT by {column} (the group's pilots against the "
                                          "comparison townships)", extra={**e.extra, "by": column, "group": g}))
    if not effects:
        raise EstimationError("no subgroup could be estimated: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return Estimates(effects=effects, method="two-way fixed effects by subgroup, randomization inference",
                     kind="subgroup_randomization", wald=False, diagnostics={"not_estimable": skipped})
