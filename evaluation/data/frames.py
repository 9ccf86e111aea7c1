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
    ``value`` (the indicator), ``numerator``, ``denominator`` and ``population``."""
    d = panel.data
    cols = ["county", "township_id", "township_name", "period", "time", "treated", "post", "first_treat",
            "cohort", "event_time", "model", "population"]
    out = d[cols].copy()
    out["value"] = indicator.values(d)
    out["numerator"] = d[indicator.numerator].astype(float)
    out["denominator"] = d[indicator.denominator].astype(float) if indicator.denominator else np.nan
    return out.reset_index(drop=True)
