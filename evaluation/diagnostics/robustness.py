"""Robustness checks of the DiD estimate, each returned as the shared result type:
a placebo start inside the pre-period, leaving one pilot township out at a time,
excluding the COVID-19 months, and not-yet-treated instead of never-treated comparisons.

All use Callaway and Sant'Anna's simple ATT (:mod:`evaluation.estimators.staggered`), the
package's recommended estimator under staggered starts, with its assumptions (parallel
trends, no anticipation); each check asks whether the estimate survives a change of
the data or comparison that should not matter under them. The column keywords default
to the names of :func:`evaluation.data.frames.did_frame`; the estimator options are
those of :func:`evaluation.estimators.staggered.callaway_santanna`. Inference
comparisons for few pilots (wild cluster bootstrap, randomization inference) belong to
the inference module.

Gaps: every check runs on the rows present. Callaway and Sant'Anna's estimator drops rows
without an outcome and, on an unbalanced panel, compares the observations present in
each pair of periods (R did's ``allow_unbalanced_panel``; missing at random given unit
and period). Dropping the COVID-19 months removes the same periods from every township
and nothing else, so on a balanced panel the rest stays balanced and the panel
estimator runs as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np
import pandas as pd

from evaluation.errors import EstimationError
from evaluation.estimators.staggered import callaway_santanna
from evaluation.results import Effect, Estimates

ControlGroup = Literal["never_treated", "not_yet_treated"]


def _att(frame: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str, control_group: ControlGroup,
         covariates: Sequence[str], method: Literal["dr", "reg"], base_period: Literal["varying", "universal"],
         anticipation: int, alpha: float, indicator: str | None) -> Effect:
    return callaway_santanna(frame, outcome=outcome, unit=unit, time=time, cohort=cohort,
                             control_group=control_group, covariates=covariates, method=method,
                             base_period=base_period, anticipation=anticipation, alpha=alpha,
                             indicator=indicator).aggregate("simple").get("att")


def _relabel(effect: Effect, estimand: str, term: str, **fields) -> Effect:
    return replace(effect, estimand=estimand, term=term, **fields)


def placebo_in_time(data: pd.DataFrame, *, shift: int = 12, outcome: str = "value", unit: str = "township_id",
                    time: str = "time", cohort: str = "first_treat", control_group: ControlGroup = "never_treated",
                    covariates: Sequence[str] = (), method: Literal["dr", "reg"] = "dr",
                    base_period: Literal["varying", "universal"] = "varying", anticipation: int = 0,
                    alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Pretend every pilot started ``shift`` periods before the earliest real start and
    use only the periods before the real starts: under parallel trends and no
    anticipation the placebo ATT (estimand ``placebo_att``; its start in ``cohort``) is 0."""
    options = dict(outcome=outcome, unit=unit, time=time, cohort=cohort, control_group=control_group,
                   covariates=covariates, method=method, base_period=base_period, anticipation=anticipation,
                   alpha=alpha, indicator=indicator)
    d = data[(data[cohort] == 0) | (data[time] < data[cohort])]
    last_pre = d.loc[d[cohort] > 0, time].max()
    d = d[d[time] <= last_pre]
    # keep the panel balanced: periods every unit still has
    first_start = data.loc[data[cohort] > 0, cohort].min()
    d = d[d[time] < first_start]
    fake = first_start - shift
    d = d.assign(**{cohort: np.where(d[cohort] > 0, fake, 0)})
    if fake <= d[time].min():
        raise EstimationError(f"a placebo start {shift} periods earlier leaves no pre-period")
    effect = _relabel(_att(d, **options), "placebo_att", f"start {shift} periods early", cohort=float(fake))
    return Estimates(effects=[effect], method="placebo start in the pre-period (Callaway-Sant'Anna)",
                     kind="placebo_in_time", diagnostics={"shift": shift})


def leave_one_out(data: pd.DataFrame, *, outcome: str = "value", unit: str = "township_id", time: str = "time",
                  cohort: str = "first_treat", control_group: ControlGroup = "never_treated",
                  covariates: Sequence[str] = (), method: Literal["dr", "reg"] = "dr",
                  base_period: Literal["varying", "universal"] = "varying", anticipation: int = 0,
                  alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """The ATT with each pilot township left out in turn (estimand ``att_leave_one_out``,
    the township left out in ``unit``)."""
    options = dict(outcome=outcome, unit=unit, time=time, cohort=cohort, control_group=control_group,
                   covariates=covariates, method=method, base_period=base_period, anticipation=anticipation,
                   alpha=alpha, indicator=indicator)
    pilots = sorted(data.loc[data[cohort] > 0, unit].unique())
    effects = [_relabel(_att(data[data[unit] != p], **options), "att_leave_one_out", f"without {p}", unit=str(p))
               for p in pilots]
    return Estimates(effects=effects, method="leave one pilot out (Callaway-Sant'Anna)", kind="leave_one_out")


def exclude_periods(data: pd.DataFrame, *, periods: Sequence, period_column: str = "period", outcome: str = "value",
                    unit: str = "township_id", time: str = "time", cohort: str = "first_treat",
                    control_group: ControlGroup = "never_treated", covariates: Sequence[str] = (),
                    method: Literal["dr", "reg"] = "dr", base_period: Literal["varying", "universal"] = "varying",
                    anticipation: int = 0, alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """The ATT with the given ``periods`` (labels of ``period_column``, e.g. the COVID-19
    months) dropped for every township (estimand ``att_excluding_periods``)."""
    options = dict(outcome=outcome, unit=unit, time=time, cohort=cohort, control_group=control_group,
                   covariates=covariates, method=method, base_period=base_period, anticipation=anticipation,
                   alpha=alpha, indicator=indicator)
    labels = data[period_column].astype(str)
    keep = ~labels.isin([str(p) for p in periods])
    dropped = int(labels[~keep].nunique())  # periods, not rows: a gap elsewhere does not change the count
    effect = _relabel(_att(data[keep], **options), "att_excluding_periods", f"{dropped} periods dropped")
    return Estimates(effects=[effect], method="periods excluded (Callaway-Sant'Anna)", kind="exclude_periods",
                     diagnostics={"periods_dropped": dropped})


def comparison_groups(data: pd.DataFrame, *, outcome: str = "value", unit: str = "township_id", time: str = "time",
                      cohort: str = "first_treat", covariates: Sequence[str] = (), method: Literal["dr", "reg"] = "dr",
                      base_period: Literal["varying", "universal"] = "varying", anticipation: int = 0,
                      alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Never-treated against not-yet-treated comparisons (estimand ``att``, the comparison
    in ``term``)."""
    effects = [_relabel(_att(data, outcome=outcome, unit=unit, time=time, cohort=cohort, control_group=c,
                             covariates=covariates, method=method, base_period=base_period,
                             anticipation=anticipation, alpha=alpha, indicator=indicator),
                        "att", c.replace("_", "-"), by="comparison", group=c)
               for c in ("never_treated", "not_yet_treated")]
    return Estimates(effects=effects, method="comparison group (Callaway-Sant'Anna)", kind="comparison_groups")


def robustness_table(data: pd.DataFrame, *, covid_periods: Sequence = (), shift: int = 12,
                     period_column: str = "period", outcome: str = "value", unit: str = "township_id",
                     time: str = "time", cohort: str = "first_treat", control_group: ControlGroup = "never_treated",
                     covariates: Sequence[str] = (), method: Literal["dr", "reg"] = "dr",
                     base_period: Literal["varying", "universal"] = "varying", anticipation: int = 0,
                     alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Every check above in one :class:`Estimates` (kind ``robustness``), in this order:
    the two comparison groups, the excluded ``covid_periods`` (when given), the placebo
    start ``shift`` periods early, and each pilot left out. ``control_group`` applies to
    all but the comparison-group check."""
    columns = dict(outcome=outcome, unit=unit, time=time, cohort=cohort)
    rest = dict(covariates=covariates, method=method, base_period=base_period, anticipation=anticipation,
                alpha=alpha, indicator=indicator)
    out = list(comparison_groups(data, **columns, **rest).effects)
    if len(covid_periods):
        out += exclude_periods(data, periods=covid_periods, period_column=period_column, **columns,
                               control_group=control_group, **rest).effects
    out += placebo_in_time(data, shift=shift, **columns, control_group=control_group, **rest).effects
    out += leave_one_out(data, **columns, control_group=control_group, **rest).effects
    return Estimates(effects=out, method="robustness checks (Callaway-Sant'Anna)", kind="robustness")
