"""Parsing of period labels (month, quarter, year) into ``pandas.Period``.

Statistical reports write months in many ways; all of these are read as March 2019:
``2019-03``, ``2019-3``, ``2019/03``, ``2019.03``, ``201903``, ``2019年3月`` and an Excel
date cell. Quarters: ``2019Q1``, ``2019-Q1``, ``2019q1``, ``2019年第1季度``. Years: ``2019``,
``2019年``.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd

from evaluation.errors import PeriodParseError, excerpt  # noqa: F401 (PeriodParseError re-exported)

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
            raise PeriodParseError(f"{excerpt(value)} is not {expected_format(frequency)}")
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
    raise PeriodParseError(f"{excerpt(text)} is not {expected_format(frequency)}")


def period_label(period: pd.Period) -> str:
    """Canonical label: ``2019-03``, ``2019Q1`` or ``2019``."""
    if period.freqstr.startswith("M"):
        return f"{period.year:04d}-{period.month:02d}"
    if period.freqstr.startswith("Q"):
        return f"{period.year:04d}Q{period.quarter}"
    return f"{period.year:04d}"


# ----------------------------------------------------------------------------- spans across frequencies

FREQUENCY_ORDER = ("month", "quarter", "year")  # finest first


def frequency_of(period: pd.Period) -> str:
    """``"month"``, ``"quarter"`` or ``"year"`` of a period."""
    code = period.freqstr[0]
    return {"M": "month", "Q": "quarter", "Y": "year", "A": "year"}[code]


def is_coarser(frequency: str, than: str) -> bool:
    """Whether ``frequency`` has longer periods than ``than`` (year > quarter > month)."""
    return FREQUENCY_ORDER.index(frequency) > FREQUENCY_ORDER.index(than)


def parse_any_period(value: object, prefer: str = "month") -> pd.Period:
    """A period label at whichever frequency it is written in: ``2020-01`` is a month,
    ``2020Q1`` a quarter, ``2020`` a year (the spellings of :func:`parse_period`). The
    ``prefer`` frequency is tried first (it decides an Excel date cell or a ``Period``,
    which carry no label); raise :class:`PeriodParseError` naming the three formats."""
    if isinstance(value, pd.Period):
        return value
    order = [prefer] + [f for f in FREQUENCY_ORDER if f != prefer]
    for frequency in order:
        try:
            return parse_period(value, frequency)
        except PeriodParseError:
            continue
    raise PeriodParseError(f"{excerpt(str(value).strip())} is not a month (2020-01), a quarter (2020Q1) or a year (2020)")


def span_days(start: object, end: object, prefer: str = "month") -> tuple[pd.Timestamp, pd.Timestamp]:
    """The days from the first day of ``start`` to the last day of ``end`` (labels at any
    frequency, :func:`parse_any_period`), as two normalised timestamps (both included)."""
    a, b = parse_any_period(start, prefer), parse_any_period(end, prefer)
    return a.start_time.normalize(), b.end_time.normalize()


def span_share(index, start: object, end: object) -> np.ndarray:
    """Share (0..1) of each period's days that fall between the first day of ``start`` and
    the last day of ``end``. ``index``: periods of one frequency (month, quarter, year);
    ``start``/``end``: labels at any frequency. A phase written in months, ``2020-01`` to
    ``2020-04``, is 1 in each of its months; on quarterly data 1 in 2020Q1 and 30/91 in
    2020Q2; on annual data 121/366 in 2020."""
    first, last = span_days(start, end, _frequency_of_index(index))
    out = np.zeros(len(index))
    for i, p in enumerate(index):
        a, b = p.start_time.normalize(), p.end_time.normalize()
        lo, hi = max(a, first), min(b, last)
        if lo <= hi:
            out[i] = ((hi - lo).days + 1) / ((b - a).days + 1)
    return out


def overlapping_periods(start: object, end: object, frequency: str) -> pd.PeriodIndex:
    """Every period of ``frequency`` that shares at least one day with the span from
    ``start`` to ``end`` (labels at any frequency)."""
    first, last = span_days(start, end, frequency)
    freq = FREQUENCIES[frequency]
    return pd.period_range(pd.Period(first, freq=freq), pd.Period(last, freq=freq), freq=freq)


def _frequency_of_index(index) -> str:
    index = pd.PeriodIndex(index)
    return frequency_of(index[0]) if len(index) else "month"
