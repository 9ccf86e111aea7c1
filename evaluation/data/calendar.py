"""Spring Festival (春节) timing for monthly, quarterly and annual series.

Visits to township health centres dip around the Spring Festival, which falls between
21 January and 20 February. A month dummy cannot capture a holiday that moves between
months, so seasonal models carry a moving-holiday regressor (the approach of
regression-based holiday adjustment, e.g. X-13's moving-holiday regressors). The
lunar-to-solar conversion comes from ``lunardate``. Two forms:

* :func:`festival_day_share` (the ITS regressor, any frequency): the share of the
  *period's days* that fall in the festival window. If the daily rate of visits drops by
  a fraction d on festival days, a period's count drops by d times this share, whether
  the period is a month or a quarter, so one definition serves every frequency and its
  coefficient is the log change of a period made entirely of festival days.
* :func:`spring_festival_share` (monthly only; the demo generator's dip): the share of
  the *festival window* that falls in each month, summing to 1 over a year.

On quarterly data the window (at most 14 January to 27 February with the default
7 days either side of New Year's Day) always lies inside the first quarter, so the
quarterly regressor is 15/90 or 15/91 every first quarter and 0 otherwise: it varies
only with leap years and is absorbed by a first-quarter seasonal term. On annual data it
is 15/365 or 15/366 every year, absorbed by the intercept.
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


def festival_day_share(periods, days_before: int = DEFAULT_DAYS_BEFORE,
                       days_after: int = DEFAULT_DAYS_AFTER) -> np.ndarray:
    """Share (0..1) of each period's days that fall in its year's festival window.

    ``periods``: ``pandas.Period`` of one frequency (month, quarter or year). For a month
    wholly inside the window the share is 1; for February 2016 (window 1-15 February) it is
    15/29; for the first quarter of 2017 (window 21 January - 4 February) 15/90.
    """
    index = pd.PeriodIndex(periods)
    out = np.zeros(len(index))
    windows: dict[int, pd.DatetimeIndex] = {}
    for i, p in enumerate(index):
        a, b = p.start_time.normalize(), p.end_time.normalize()
        days = 0
        for year in range(a.year, b.year + 2):  # a wide window may reach back into December
            if year not in windows:
                windows[year] = festival_window(year, days_before, days_after)
            w = windows[year]
            days += int(((w >= a) & (w <= b)).sum())
        out[i] = days / ((b - a).days + 1)
    return out
