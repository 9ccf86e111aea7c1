"""Spring Festival (春节) timing for monthly series.

Visits to township health centres dip around the Spring Festival, which falls between
21 January and 20 February. A month dummy cannot capture a holiday that moves between
months, so seasonal models use the *share of the festival window that falls in each
month* (the approach of regression-based holiday adjustment, e.g. X-13's moving-holiday
regressors). The lunar-to-solar conversion comes from ``lunardate``.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

import numpy as np
import pandas as pd
from lunardate import LunarDate

# Days before and after New Year's Day (正月初一) that count as the festival window:
# the travel and holiday period from 腊月廿三 (little new year) to 正月十五 (Lantern Festival)
# is about -7..+14; the dip in clinic visits concentrates on the official week, so the
# default is 7 days before to 7 days after.
DEFAULT_DAYS_BEFORE = 7
DEFAULT_DAYS_AFTER = 7


@cache
def spring_festival_date(year: int) -> dt.date:
    """Gregorian date of Chinese New Year's Day (正月初一) in ``year``."""
    return LunarDate(year, 1, 1).to_solar_date()


def festival_window(year: int, days_before: int = DEFAULT_DAYS_BEFORE,
                    days_after: int = DEFAULT_DAYS_AFTER) -> pd.DatetimeIndex:
    day = pd.Timestamp(spring_festival_date(year))
    return pd.date_range(day - pd.Timedelta(days=days_before), day + pd.Timedelta(days=days_after))


def spring_festival_share(periods, days_before: int = DEFAULT_DAYS_BEFORE,
                          days_after: int = DEFAULT_DAYS_AFTER) -> np.ndarray:
    """Share (0..1) of each year's festival window that falls in each monthly period.

    ``periods`` is an iterable of monthly ``pandas.Period``. Each year's shares sum to 1
    over that year's months, so the festival effect is the same size whether it falls in
    January or February.
    """
    periods = pd.PeriodIndex(periods, freq="M")
    out = np.zeros(len(periods))
    cache: dict[int, pd.Series] = {}
    for i, p in enumerate(periods):
        # the window lies within 14 January .. 27 February, so it never spans two years
        if p.year not in cache:
            days = festival_window(p.year, days_before, days_after)
            cache[p.year] = days.to_period("M").value_counts() / len(days)
        out[i] = cache[p.year].get(p, 0.0)
    return out
