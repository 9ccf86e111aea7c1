"""The indicator catalogue (``indicators.yml``) and the computation of indicator values.

Each indicator is defined once: its numerator and denominator columns of the data
contract, its kind, the direction that counts as improvement, an optional policy target
with its source, and the default model family of the estimators. A study may override
targets (they differ by province) but not definitions.

Rates per 1,000 residents are counts *per period* of the data: a quarterly panel's rate is
about three times a monthly panel's. They are labelled with their period, never
annualised (the numbers stay those of the data and of any target written on that scale):
:meth:`Indicator.unit_for` turns the catalogue's ``per 1,000 residents per period`` into
``每千常住人口每季度 / per 1,000 residents per quarter``; a study's indicators carry their
analysis frequency (:meth:`Indicator.at_frequency`) so that every chapter, figure and the
scorecard show :attr:`Indicator.unit_label`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from evaluation.paths import INDICATOR_CATALOGUE

# Every numeric column the data contract knows (counts, and the cost total in yuan).
MEASURE_COLUMNS = (
    "visits_total", "visits_in_county", "visits_primary", "admissions_total",
    "referrals_out_county", "thc_outpatient_visits", "thc_admissions",
    "inpatient_cost_total", "services_offered", "referrals_down",
)

Kind = Literal["share", "rate", "mean", "count"]
PER_PERIOD = "per period"
_PERIOD_ZH = {"month": "月", "quarter": "季度", "year": "年"}
_PER_ZH = {1000: "千", 10_000: "万", 100_000: "十万"}

# Units an export may state for a column (in a unit row, a header such as 住院总费用（万元）,
# or the study's data.units), with the factor that brings a value to the data contract's
# unit (yuan, persons, visits, items) and the kind of quantity each measures.
UNIT_FACTORS: dict[str, float] = {
    "元": 1.0, "千元": 1e3, "万元": 1e4, "百万元": 1e6, "亿元": 1e8,
    "人": 1.0, "人次": 1.0, "例": 1.0, "户": 1.0, "千人": 1e3, "万人": 1e4, "千人次": 1e3, "万人次": 1e4,
    "个": 1.0, "项": 1.0, "次": 1.0, "张": 1.0, "床": 1.0,
}
MONEY_UNITS = frozenset({"元", "千元", "万元", "百万元", "亿元"})
# Contract columns measured in money (every other measure and the population count people,
# visits or items).
MONEY_COLUMNS = frozenset({"inpatient_cost_total"})


def unit_fits(unit: str, column: str) -> bool:
    """Whether ``unit`` can measure the contract column ``column`` (money for money)."""
    return (unit in MONEY_UNITS) == (column in MONEY_COLUMNS)


ModelFamily = Literal["binomial", "poisson_offset", "loglinear", "poisson"]

class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float
    comparison: Literal[">=", "<="]
    source: str

class Plausible(BaseModel):
    """The range inside which a township's typical value must lie (indicator scale).

    Rates are per ``per`` residents **per month**; for quarterly or annual data the bounds
    are multiplied by the months of a period (:meth:`Indicator.plausible_range`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise ValueError(f"plausible min {self.min} above max {self.max}")
        return self


MONTHS_PER_PERIOD = {"month": 1, "quarter": 3, "year": 12}


class Indicator(BaseModel):
    """One policy indicator. ``value = numerator / denominator * per`` (``per`` = 1 but for rates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    name_zh: str
    name_en: str
    kind: Kind
    numerator: str
    denominator: str | None
    per: float = 1.0
    unit: str
    direction: Literal["increase", "decrease"]
    target: Target | None = None
    model_family: ModelFamily
    frequency: Literal["month", "quarter", "year"] | None = None  # of the analysis: set by at_frequency
    plausible: Plausible | None = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.kind == "count" and self.denominator is not None:
            raise ValueError(f"{self.id}: a count indicator has no denominator")
        if self.kind != "count" and self.denominator is None:
            raise ValueError(f"{self.id}: a {self.kind} indicator needs a denominator")
        if self.kind == "rate" and self.denominator != "population":
            raise ValueError(f"{self.id}: a rate indicator is per population")
        return self

    @property
    def columns(self) -> tuple[str, ...]:
        """Contract columns this indicator needs."""
        return tuple(c for c in (self.numerator, self.denominator) if c is not None)

    def plausible_range(self, frequency: str = "month") -> tuple[float, float] | None:
        """(min, max) of a plausible township value at ``frequency`` (rates scale with the months)."""
        if self.plausible is None:
            return None
        k = MONTHS_PER_PERIOD[frequency] if self.kind == "rate" else 1
        return self.plausible.min * k, self.plausible.max * k

    @property
    def label(self) -> str:
        return f"{self.name_zh} / {self.name_en}"

    def unit_for(self, frequency: str | None) -> str:
        """The unit as a reader sees it at ``frequency``: a per-period rate names its period
        (``每千常住人口每季度 / per 1,000 residents per quarter``); other units are unchanged.
        Rates are labelled, not annualised (module docstring)."""
        if PER_PERIOD not in self.unit or frequency is None:
            return self.unit
        en = self.unit.replace(PER_PERIOD, f"per {frequency}")
        if self.kind == "rate":
            per = _PER_ZH.get(int(self.per), f"{self.per:g}")
            return f"每{per}常住人口每{_PERIOD_ZH[frequency]} / {en}"
        return en

    @property
    def unit_label(self) -> str:
        """:meth:`unit_for` at the indicator's analysis frequency (see :meth:`at_frequency`)."""
        return self.unit_for(self.frequency)

    def at_frequency(self, frequency: str) -> Indicator:
        """This indicator on data of ``frequency`` (what :attr:`unit_label` shows)."""
        return self.model_copy(update={"frequency": frequency})

    def values(self, data: pd.DataFrame) -> pd.Series:
        """Indicator value of each row (township-period). Undefined (0/0) cells are NaN."""
        num = data[self.numerator].astype(float)
        if self.denominator is None:
            return num.rename(self.id)
        den = data[self.denominator].astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = num / den.where(den > 0) * self.per
        return out.rename(self.id)

    def aggregate(self, data: pd.DataFrame, by) -> pd.Series:
        """Indicator of pooled groups as a ratio of sums (e.g. pilot vs non-pilot by month).

        Counts are averaged over the group's townships; ratios are sum(num)/sum(den).
        """
        grouped = data.groupby(by, observed=True)
        if self.denominator is None:
            return grouped[self.numerator].mean().rename(self.id)
        sums = grouped[[self.numerator, self.denominator]].sum(min_count=1)
        den = sums[self.denominator].where(sums[self.denominator] > 0)
        return (sums[self.numerator] / den * self.per).rename(self.id)

    def meets_target(self, value):
        """True where ``value`` attains the target (NaN-safe); None without a target."""
        if self.target is None:
            return None
        value = np.asarray(value, dtype=float)
        if self.target.comparison == ">=":
            return value >= self.target.value
        return value <= self.target.value

@dataclass(frozen=True)
class Catalogue:
    """The indicators by id, in catalogue order."""

    indicators: tuple[Indicator, ...]
    path: Path

    def __getitem__(self, indicator_id: str) -> Indicator:
        for ind in self.indicators:
            if ind.id == indicator_id:
                return ind
        raise KeyError(f"unknown indicator '{indicator_id}'; the catalogue ({self.path.name}) "
                       f"has: {', '.join(self.ids)}")

    def __iter__(self):
        return iter(self.indicators)

    def __len__(self) -> int:
        return len(self.indicators)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.indicators]

    def select(self, ids=None, targets: dict[str, float | None] | None = None) -> list[Indicator]:
        """Indicators ``ids`` (all when None) with study target overrides applied.

        ``targets`` maps an indicator id to a new target value (keeping comparison and
        source, marked as a study override), or to None to drop the target.
        """
        chosen = [self[i] for i in (ids or self.ids)]
        targets = targets or {}
        for key in targets:
            self[key]  # unknown ids raise
        out = []
        for ind in chosen:
            if ind.id in targets:
                value = targets[ind.id]
                if value is None:
                    ind = ind.model_copy(update={"target": None})
                else:
                    base = ind.target or Target(
                        value=value, comparison=">=" if ind.direction == "increase" else "<=",
                        source="")
                    ind = ind.model_copy(update={"target": Target(
                        value=value, comparison=base.comparison,
                        source=f"study override (catalogue: {base.value if ind.target else 'none'})")})
            out.append(ind)
        return out

@lru_cache(maxsize=4)
def load_catalogue(path: Path | str = INDICATOR_CATALOGUE) -> Catalogue:
    """Read and check the catalogue. Ids must be unique."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        indicators = tuple(Indicator(**entry) for entry in raw["indicators"])
    except (KeyError, TypeError, ValidationError) as exc:
        raise ValueError(f"{path}: malformed indicator catalogue: {exc}") from exc
    ids = [i.id for i in indicators]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate indicator ids")
    return Catalogue(indicators, path)

def required_columns(indicators) -> list[str]:
    """Contract count columns the given indicators need (population excluded), in order."""
    out: list[str] = []
    for ind in indicators:
        for col in ind.columns:
            if col != "population" and col not in out:
                out.append(col)
    return out

def share_pairs(indicators) -> list[tuple[str, str]]:
    """(numerator, denominator) pairs where the numerator may never exceed the denominator."""
    pairs: list[tuple[str, str]] = []
    for ind in indicators:
        if ind.kind == "share" and (ind.numerator, ind.denominator) not in pairs:
            pairs.append((ind.numerator, ind.denominator))
    return pairs

def compute_indicators(data: pd.DataFrame, indicators) -> pd.DataFrame:
    """One column per indicator beside the panel's key columns."""
    keys = [c for c in ("county", "township_id", "township_name", "period", "treated", "post",
                        "cohort", "event_time", "model") if c in data.columns]
    values = pd.concat([ind.values(data) for ind in indicators], axis=1)
    return pd.concat([data[keys], values], axis=1)
