"""The analysis frames the estimators take, built from a validated panel.

Estimators take a long DataFrame and the names of its columns; on a study, these frames
give them the indicator's values beside the keys and the derived treatment columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from evaluation.study.catalogue import Indicator


def did_frame(panel, indicator: Indicator) -> pd.DataFrame:
    """The study panel as a long frame for the estimators: keys, treatment columns,
    ``value`` (the indicator), ``numerator``, ``denominator``, ``population`` and the
    study's covariates (time-invariant ones constant within a township, time-varying
    controls) when it declares any."""
    d = panel.data
    cols = ["county", "township_id", "township_name", "period", "time", "treated", "post", "first_treat",
            "cohort", "event_time", "model", "population"]
    covariates = getattr(panel, "covariates", None)
    if covariates is not None:
        cols += [c for c in covariates.names if c in d.columns and c not in cols]
    out = d[cols].copy()
    out["value"] = indicator.values(d)
    out["numerator"] = d[indicator.numerator].astype(float)
    out["denominator"] = d[indicator.denominator].astype(float) if indicator.denominator else np.nan
    return out.reset_index(drop=True)


# Methods defined on a balanced panel (the estimators raise UnbalancedPanelError on an
# incomplete one, see evaluation.estimators.NEEDS_BALANCED_PANEL): the report gives them
# the complete townships (:func:`complete_townships`); every other method uses every observation.
NEEDS_COMPLETE_PANEL = frozenset({"Goodman-Bacon", "synthetic control", "synthetic DiD", "pre-trend randomization"})

DROPPED_COLUMNS = ["township_id", "township_name", "pilot", "missing_periods", "empty_values"]


def complete_townships(frame: pd.DataFrame, *, outcome: str = "value", unit: str = "township_id",
                       time: str = "time") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame restricted to townships observed, with an outcome, in every period.

    Synthetic control, synthetic DiD and the Goodman-Bacon decomposition are defined on a
    balanced panel; on an incomplete one they take this frame. The second frame lists the
    townships left out (``township_id``, ``township_name``, ``pilot``, ``missing_periods``,
    ``empty_values``), which the report states beside the method's results.
    """
    periods = frame[time].nunique()
    observed = frame[frame[outcome].notna()]
    counts = observed.groupby(unit)[time].nunique().reindex(frame[unit].unique(), fill_value=0)
    rows = frame.groupby(unit).size()
    keep = counts.index[counts == periods]
    out = frame[frame[unit].isin(keep)].reset_index(drop=True)
    lost = counts.index[counts < periods]
    info = frame.drop_duplicates(unit).set_index(unit)
    dropped = pd.DataFrame({
        "township_id": list(lost),
        "township_name": [info.at[u, "township_name"] if "township_name" in info else "" for u in lost],
        "pilot": [bool(info.at[u, "treated"]) if "treated" in info else False for u in lost],
        "missing_periods": [int(periods - rows[u]) for u in lost],
        "empty_values": [int(rows[u] - counts[u]) for u in lost],
    }, columns=DROPPED_COLUMNS)
    return out, dropped
