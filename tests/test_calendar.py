"""Periods as researchers write them, and the Spring Festival regressor."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from evaluation.data.calendar import spring_festival_date, spring_festival_share
from evaluation.study.periods import PeriodParseError, parse_period, period_label


@pytest.mark.parametrize("text", ["2019-03", "2019-3", "2019/03", "2019.03", "201903", "2019年3月",
                                  " 2019-03 ", dt.date(2019, 3, 1), pd.Timestamp("2019-03-31")])
def test_month_spellings(text):
    assert parse_period(text, "month") == pd.Period("2019-03", "M")


@pytest.mark.parametrize("text", ["2019Q2", "2019-Q2", "2019q2", "2019年第2季度", "2019年二季度"])
def test_quarter_spellings(text):
    assert parse_period(text, "quarter") == pd.Period("2019Q2", "Q")


@pytest.mark.parametrize("text, freq", [("2019-13", "month"), ("2019-00", "month"), ("March", "month"),
                                        ("2019Q5", "quarter"), ("19", "year"), ("", "month"),
                                        (2019.5, "year")])
def test_bad_periods(text, freq):
    with pytest.raises(PeriodParseError):
        parse_period(text, freq)


def test_labels():
    assert period_label(parse_period(2019, "year")) == "2019"
    assert period_label(parse_period("2019年第1季度", "quarter")) == "2019Q1"
    assert period_label(parse_period("201901", "month")) == "2019-01"


@pytest.mark.parametrize("year, date", [(2016, "2016-02-08"), (2017, "2017-01-28"), (2020, "2020-01-25"),
                                        (2023, "2023-01-22"), (2024, "2024-02-10"), (2030, "2030-02-03")])
def test_spring_festival_dates(year, date):
    assert spring_festival_date(year) == dt.date.fromisoformat(date)


def test_festival_share_by_month():
    periods = pd.period_range("2016-01", "2024-12", freq="M")
    share = pd.Series(spring_festival_share(periods), index=periods.astype(str))
    assert share["2016-02"] == 1.0 and share["2016-01"] == 0.0          # 8 February: 1-15 Feb
    assert share["2017-01"] == pytest.approx(11 / 15)                   # 28 January: 21 Jan - 4 Feb
    assert share["2017-02"] == pytest.approx(4 / 15)
    assert share["2023-01"] == 1.0
    by_year = share.groupby(share.index.str[:4]).sum()
    np.testing.assert_allclose(by_year.to_numpy(), 1.0)
    assert share[~share.index.str[5:].isin(["01", "02"])].eq(0).all()
