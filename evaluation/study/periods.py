"""Parsing of period labels (month, quarter, year) into ``pandas.Period``.

Statistical reports write months in many ways; all of these are read as March 2019:
``2019-03``, ``2019-3``, ``2019/03``, ``2019.03``, ``201903``, ``2019年3月`` and an Excel
date cell. Quarters: ``2019Q1``, ``2019-Q1``, ``2019q1``, ``2019年第1季度``. Years: ``2019``,
``2019年``.
"""

from __future__ import annotations

import datetime as dt
import re

import pandas as pd

from evaluation.errors import PeriodParseError  # noqa: F401 (re-exported)

FREQUENCIES = {"month": "M", "quarter": "Q", "year": "Y"}

_MONTH = re.compile(r"^(\d{4})\s*(?:[-/.]\s*|年\s*)?(\d{1,2})\s*月?$")
_QUARTER = re.compile(r"^(\d{4})\s*(?:[-/ ]?\s*[Qq]\s*([1-4])|年\s*第?\s*([1-4一二三四])\s*季度?)$")
_YEAR = re.compile(r"^(\d{4})\s*年?$")
_CN_DIGITS = {"一": "1", "二": "2", "三": "3", "四": "4"}


def expected_format(frequency: str) -> str:
    return {
        "month": "a month such as 2019-03 (YYYY-MM)",
        "quarter": "a quarter such as 2019Q1 (YYYYQn)",
        "year": "a year such as 2019 (YYYY)",
    }[frequency]


def parse_period(value: object, frequency: str) -> pd.Period:
    """Parse one period label; raise :class:`PeriodParseError` when it is not one."""
    if frequency not in FREQUENCIES:
        raise ValueError(f"frequency must be one of {sorted(FREQUENCIES)}, got {frequency!r}")
    freq = FREQUENCIES[frequency]
    if isinstance(value, pd.Period):
        return value.asfreq(freq)
    if isinstance(value, (dt.date, dt.datetime, pd.Timestamp)):
        return pd.Period(pd.Timestamp(value), freq=freq)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if float(value).is_integer():
            value = str(int(value))
        else:
            raise PeriodParseError(f"{value!r} is not {expected_format(frequency)}")
    text = str(value).strip()
    if frequency == "month":
        m = _MONTH.match(text)
        if m and 1 <= int(m.group(2)) <= 12 and 1900 <= int(m.group(1)) <= 2100:
            return pd.Period(year=int(m.group(1)), month=int(m.group(2)), freq="M")
    elif frequency == "quarter":
        m = _QUARTER.match(text)
        if m:
            q = m.group(2) or _CN_DIGITS.get(m.group(3), m.group(3))
            return pd.Period(year=int(m.group(1)), quarter=int(q), freq="Q")
    else:
        m = _YEAR.match(text)
        if m:
            return pd.Period(year=int(m.group(1)), freq="Y")
    raise PeriodParseError(f"{text!r} is not {expected_format(frequency)}")


def period_label(period: pd.Period) -> str:
    """Canonical label: ``2019-03``, ``2019Q1`` or ``2019``."""
    if period.freqstr.startswith("M"):
        return f"{period.year:04d}-{period.month:02d}"
    if period.freqstr.startswith("Q"):
        return f"{period.year:04d}Q{period.quarter}"
    return f"{period.year:04d}"
