"""A validated panel at a coarser frequency: months to quarters or years, quarters to years.

``analysis.frequency`` in a study file (:mod:`evaluation.study.plan`) asks for the
analysis to run at a coarser frequency than the data's; :func:`load_panel` then passes the
validated panel through :func:`aggregate_panel`. The rules:

* **Counts are summed** over the months (or quarters) of the new period: visits,
  admissions, referrals, services, the cost total in yuan. Ratios (shares, rates, cost
  per admission) are recomputed from the sums by the indicator catalogue, so a quarter's
  share is the share of the quarter's visits, not a mean of monthly shares.
* **Population**, a stock, is **averaged** over the months present.
* **A period counts only when complete.** A township's quarter is formed only when all
  three of its months are in the panel (all twelve for a year; all four quarters for a
  year from quarterly data); otherwise the quarter is missing for that township and is
  listed in the panel's ``gaps``, like any missing period. A sum over fewer months would
  understate the count, and scaling it up would invent data. Likewise a count cell is
  missing in the new period when any of its months has that cell missing (cells are never
  partly summed). A partial first or last quarter of the study window therefore drops out.
* **A pilot's start maps to the period containing its start month**: a pilot starting in
  August 2019 has 2019Q3 as its first treated quarter. That quarter is partly treated (one
  untreated month), which dilutes the effect at event time 0; the alternative, the next
  quarter, would put treated months into the last pre-period, which the event studies use
  as their reference period and the ITS as the end of its baseline trend, contaminating
  the comparison every estimate rests on. Dilution at the start is the smaller harm, and
  the ITS phase-in window leaves the partly treated quarter out of the fit anyway.
  A pilot whose start maps into the panel's first period (no pre-period left) or after its
  last complete period is rejected, naming the pilot table's row.

``time``, ``first_treat``, ``event_time``, ``post`` and ``cohort`` (now ``2019Q3``) are
re-derived by :mod:`evaluation.data.panel`'s own derivation.
"""

from __future__ import annotations

import dataclasses
import warnings

import pandas as pd

from evaluation.data import panel as panel_module
from evaluation.errors import DataValidationError
from evaluation.study.periods import FREQUENCIES, is_coarser, period_label

_PERIODS_PER_YEAR = {"month": 12, "quarter": 4, "year": 1}


def aggregate_panel(panel: panel_module.Panel, frequency: str) -> panel_module.Panel:
    """``panel`` at ``frequency`` (coarser than, or equal to, ``panel.frequency``), by the
    rules of the module docstring. The same panel is returned when the frequencies agree."""
    if frequency not in FREQUENCIES:
        raise ValueError(f"frequency must be one of {sorted(FREQUENCIES)}, got {frequency!r}")
    if frequency == panel.frequency:
        return panel
    if not is_coarser(frequency, panel.frequency):
        raise ValueError(f"cannot split {panel.frequency}ly data into {frequency}s; aggregate to a coarser frequency")
    freq = FREQUENCIES[frequency]
    parts = _PERIODS_PER_YEAR[panel.frequency] // _PERIODS_PER_YEAR[frequency]
    source = panel.data
    counts = [c for c in panel_module.MEASURE_COLUMNS if c in source.columns]
    controls = [c for c in panel.controls if c in source.columns]
    frame = source[["county", "township_id", "township_name", "period", "population", *counts, *controls]].copy()
    frame["_new"] = pd.PeriodIndex(frame["period"]).asfreq(freq)
    keys = ["township_id", "_new"]
    grouped = frame.groupby(keys, sort=True)
    out = grouped[["county", "township_name"]].first()
    out["_months"] = grouped["period"].nunique()
    out["population"] = grouped["population"].mean()
    for col in controls:  # a time-varying control, like population, is averaged over the months present
        out[col] = grouped[col].mean()
    for col in counts:
        out[col] = grouped[col].sum(min_count=parts).where(grouped[col].count() == parts)
    out = out[out["_months"] == parts].drop(columns="_months").reset_index()
    out = out.rename(columns={"_new": "period"})
    if out.empty:
        raise DataValidationError(panel.panel_path, f"no township has a complete {frequency}",
                                  column="period", expected=f"all {parts} periods of a {frequency} for some township")
    data = out[["county", "township_id", "township_name", "period", "population", *counts, *controls]].copy()
    data["period"] = pd.PeriodIndex(data["period"], freq=freq)
    for col in ("county", "township_id", "township_name"):  # text columns as the loader makes them
        data[col] = data[col].astype(object)

    pilots = panel.pilots[["township_id", "pilot_start", "model"]].copy()
    pilots["pilot_start"] = pd.PeriodIndex(pilots["pilot_start"]).asfreq(freq)
    first, last = data["period"].min(), data["period"].max()
    known = set(data["township_id"])
    absent = pilots.index[~pilots["township_id"].isin(known)]
    if len(absent):
        raise DataValidationError(
            panel.pilots_path, f"pilot township has no complete {frequency}", column="township_id",
            rows=list(absent), details=[f"row {r}: {pilots.at[r, 'township_id']}" for r in absent],
            expected=f"all {parts} {panel.frequency}s of at least one {frequency} in the panel")
    early = pilots.index[pilots["pilot_start"] <= first]
    if len(early):
        raise DataValidationError(
            panel.pilots_path, f"pilot start in the panel's first {frequency}", column="pilot_start", rows=list(early),
            details=[f"row {r}: {pilots.at[r, 'township_id']} starts {period_label(pilots.at[r, 'pilot_start'])}"
                     for r in early],
            expected=f"a start after {period_label(first)} (at least one complete pre-period {frequency})")
    late = pilots.index[pilots["pilot_start"] > last]
    if len(late):
        raise DataValidationError(
            panel.pilots_path, f"pilot start after the panel's last complete {frequency}", column="pilot_start",
            rows=list(late),
            details=[f"row {r}: {pilots.at[r, 'township_id']} starts {period_label(pilots.at[r, 'pilot_start'])}"
                     for r in late],
            expected=f"a start no later than {period_label(last)}")
    pilots["cohort"] = pilots["pilot_start"].map(period_label)
    derived = panel_module._derive_treatment(data.reset_index(drop=True), pilots, frequency)
    gaps = panel_module._find_gaps(derived, frequency)
    if not gaps.empty:
        listing = "; ".join(f"{g.township_id} ({g.township_name}): {g.missing_periods}" for g in gaps.head(5).itertuples())
        warnings.warn(f"{panel.panel_path}: {len(gaps)} township(s) lack {frequency}s (a {frequency} with a missing "
                      f"{panel.frequency} is missing, not filled): {listing}", panel_module.PanelGapWarning, stacklevel=3)
    # what the loader left out, converted or noted stays with the coarser panel
    return dataclasses.replace(panel, data=derived, pilots=pilots.reset_index(drop=True), frequency=frequency,
                               indicators=list(panel.indicators), gaps=gaps)
