"""Robustness checks of the DiD estimate, each returned as the shared result type:
a placebo start inside the pre-period, leaving one pilot township out at a time,
excluding the COVID-19 months, and not-yet-treated instead of never-treated comparisons.

All use Callaway and Sant'Anna's simple ATT (:mod:`evaluation.estimators.staggered`), the package's
recommended estimator under staggered starts. Inference comparisons for few pilots
(wild cluster bootstrap, randomization inference) belong to the inference module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.estimators.staggered import callaway_santanna
from evaluation.results import Effect, Estimates

KEYS = dict(outcome="value", unit="township_id", time="time", first_treat="first_treat")


def _att(frame: pd.DataFrame, **options) -> Effect:
    return callaway_santanna(frame, KEYS["outcome"], KEYS["unit"], KEYS["time"], KEYS["first_treat"],
                             **options).aggregate("simple").get("att")


def _relabel(effect: Effect, estimand: str, term: str) -> Effect:
    return Effect(**{**effect.__dict__, "estimand": estimand, "term": term})


def placebo_in_time(frame: pd.DataFrame, shift: int = 12, **options) -> Effect:
    """Pretend every pilot started ``shift`` periods earlier and use only the periods
    before the real starts: under parallel trends and no anticipation the placebo ATT is 0."""
    d = frame[(frame["first_treat"] == 0) | (frame["time"] < frame["first_treat"])]
    last_pre = d.loc[d["first_treat"] > 0, "time"].max()
    d = d[d["time"] <= last_pre]
    # keep the panel balanced: periods every unit still has
    d = d[d["time"] < frame.loc[frame["first_treat"] > 0, "first_treat"].min()]
    fake = frame.loc[frame["first_treat"] > 0, "first_treat"].min() - shift
    d = d.assign(first_treat=np.where(d["first_treat"] > 0, fake, 0))
    if fake <= d["time"].min():
        raise ValueError(f"a placebo start {shift} periods earlier leaves no pre-period")
    return _relabel(_att(d, **options), "placebo_att", f"start {shift} periods early")


def leave_one_out(frame: pd.DataFrame, **options) -> Estimates:
    """The ATT with each pilot township left out in turn."""
    pilots = sorted(frame.loc[frame["first_treat"] > 0, "township_id"].unique())
    effects = [_relabel(_att(frame[frame["township_id"] != p], **options), "att_leave_one_out", f"without {p}")
               for p in pilots]
    return Estimates(effects=effects, method="leave one pilot out (Callaway-Sant'Anna)")


def exclude_periods(frame: pd.DataFrame, periods, **options) -> Effect:
    """The ATT with the given periods (e.g. the COVID-19 months) dropped for every township."""
    labels = frame["period"].astype(str)
    keep = ~labels.isin([str(p) for p in periods])
    return _relabel(_att(frame[keep], **options), "att_excluding_periods", f"{(~keep).sum() // frame['township_id'].nunique()} periods dropped")


def comparison_groups(frame: pd.DataFrame, **options) -> Estimates:
    """Never-treated against not-yet-treated comparisons."""
    effects = [_relabel(_att(frame, control_group=c, **options), "att", c.replace("_", "-"))
               for c in ("never_treated", "not_yet_treated")]
    return Estimates(effects=effects, method="comparison group (Callaway-Sant'Anna)")


def robustness_table(frame: pd.DataFrame, covid_periods=(), shift: int = 12, **options) -> list[Effect]:
    """Every check above in one list (for the robustness chapter); ``shift`` periods for the placebo start."""
    out = list(comparison_groups(frame, **options).effects)
    if len(covid_periods):
        out.append(exclude_periods(frame, covid_periods, **options))
    out.append(placebo_in_time(frame, shift=shift, **options))
    out.extend(leave_one_out(frame, **options).effects)
    return out
