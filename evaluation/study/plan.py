"""The analysis plan: every choice the chapters and the scorecard make, in the study file.

The ``analysis:`` block of a study file is read into :class:`AnalysisPlan` (typed, each
key with a documented default; the defaults reproduce the demo report). Lengths of time
are written either as a number of periods of the study's frequency (``12``) or in
calendar units (``"1 year"``, ``"6 months"``, ``"2 quarters"``), so that one plan reads
the same on monthly, quarterly and annual data. :meth:`AnalysisPlan.resolve` turns the
plan into :class:`Settings`: plain integers in periods of the study's frequency, which is
what the chapters use and what the results store records beside every result.

``analysis.frequency`` (``quarter`` or ``year``; default: the study's ``frequency``) runs
the whole analysis on a coarser frequency than the data's: the validated panel is
aggregated (:mod:`evaluation.data.aggregate`) and the plan's lengths resolve against the
analysis frequency (``1 year`` = 4 quarters), not the file's. One floor applies at
coarse frequencies: the smoothness bound uses at least 2 pre periods (the reference period
and one coefficient), so its default ``1 year`` is 2 years on annual data; the resolved
:class:`Settings`, stored beside every result and quoted by the chapters, show the value used.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from evaluation.errors import excerpt

PERIODS_PER_YEAR = {"month": 12, "quarter": 4, "year": 1}
_UNIT_PERIODS_PER_YEAR = {"year": 1, "quarter": 4, "month": 12}
_DURATION = re.compile(r"^\s*([+-]?\d+)\s*(year|yr|quarter|qtr|month|mo|period)s?\s*$", re.IGNORECASE)
_UNIT_ALIASES = {"yr": "year", "qtr": "quarter", "mo": "month"}

Duration = int | str


class DurationError(ValueError):
    """A length of time that is not whole periods of the study's frequency."""


def periods(value: Duration, frequency: str) -> int:
    """A length of time in periods of ``frequency``: ``12`` stays 12; ``"1 year"`` is 12
    months, 4 quarters or 1 year; ``"6 months"`` on quarterly data is 2 quarters, and on
    annual data an error (it is not a whole number of years)."""
    if isinstance(value, bool):
        raise DurationError(f"expected a number of periods or a length such as '1 year', got {excerpt(value)}")
    if isinstance(value, int):
        return value
    match = _DURATION.match(str(value))
    if not match:
        raise DurationError(f"expected a number of periods or a length such as '1 year', '6 months', "
                            f"'2 quarters', got {excerpt(value)}")
    count, unit = int(match.group(1)), match.group(2).lower()
    unit = _UNIT_ALIASES.get(unit, unit)
    if unit == "period":
        return count
    per_year = PERIODS_PER_YEAR[frequency]
    numerator = count * per_year
    denominator = _UNIT_PERIODS_PER_YEAR[unit]
    if numerator % denominator:
        raise DurationError(f"{excerpt(value)} is not a whole number of {frequency}s")
    return numerator // denominator


def period_text(count: int, frequency: str) -> tuple[str, str]:
    """``12`` months -> ("12个月", "12 months"); quarters and years likewise."""
    zh = {"month": "个月", "quarter": "个季度", "year": "年"}[frequency]
    en = frequency + ("" if abs(count) == 1 else "s")
    return f"{count}{zh}", f"{count} {en}"


MAX_SEED = 2**32 - 1  # numpy's legacy seeding and most peer libraries take 32-bit seeds
MAX_ALPHA = 0.5      # a two-sided test at a level above 0.5 is not a test


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True, allow_inf_nan=False)


class Draws(_Strict):
    """Resampling draws, one name per method."""

    randomization: int = Field(999, ge=99, strict=True, description="randomization inference: permutations of pilot histories")
    wild_bootstrap: int = Field(9999, ge=99, strict=True, description="wild cluster bootstrap draws")
    uniform_band: int = Field(999, ge=99, strict=True, description="multiplier-bootstrap draws of the event study's uniform band")
    synthetic_did: int = Field(200, ge=10, strict=True, description="synthetic DiD placebo replications")


class FastDraws(Draws):
    """Draws for a quick run (``fast=True``: the test suite and previews)."""

    randomization: int = Field(199, ge=99, strict=True)
    wild_bootstrap: int = Field(999, ge=99, strict=True)
    uniform_band: int = Field(199, ge=99, strict=True)
    synthetic_did: int = Field(50, ge=10, strict=True)


class ITSPlan(_Strict):
    phase_in: Duration = "1 year"          # periods after the start left out of the fit
    errors: Literal["arima", "hac", "conventional"] = "arima"   # the pooled series
    township_errors: Literal["arima", "hac", "conventional"] = "conventional"  # one ITS per pilot township
    horizons: list[Duration] = Field(default_factory=lambda: ["1 year", "2 years"],
                                     min_length=1)  # effects this long after the start
    township_horizons: list[Duration] = Field(default_factory=lambda: ["1 year"],
                                              min_length=1)  # the same, one ITS per township
    series: Literal["mean", "pooled"] = "mean"  # mean of the townships' values, or the group as one population


class RelativeMagnitudePlan(_Strict):
    pre_periods: int = Field(3, ge=1, strict=True)       # pre-period coefficients used (the reference period not counted)
    post_periods: int = Field(3, ge=2, strict=True)      # the target: the mean effect of the first post periods
    values: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [0.5, 1.0, 2.0],
                                                        min_length=1)  # Mbar grid


class SmoothnessPlan(_Strict):
    pre_periods: Duration = "1 year"        # pre periods, the reference period included; at least 2 are used
    post_periods: Duration = "1 year"       # the target: the mean effect of the first post periods
    values: Annotated[list[Annotated[float, Field(ge=0)]], Field(min_length=1)] | Literal["around_breakdown"] = (
        "around_breakdown")  # M grid (0 is always included)


class SensitivityPlan(_Strict):
    relative_magnitude: RelativeMagnitudePlan = RelativeMagnitudePlan()
    smoothness: SmoothnessPlan = SmoothnessPlan()


class MatchingPlan(_Strict):
    """Propensity-score matching for PSM-DID (:func:`evaluation.estimators.matching.psm_did`).

    ``method``: ``nearest`` (``neighbours`` nearest comparison townships on the logit of
    the score, ``replacement`` or not, within ``caliper`` standard deviations of the logit
    score, Austin 2011; ``null`` for no caliper) or ``kernel`` (Epanechnikov weights
    within ``bandwidth`` standard deviations of the logit score, Heckman, Ichimura and Todd
    1997; ``null``: Silverman's rule).
    """

    method: Literal["nearest", "kernel"] = "nearest"
    neighbours: int = Field(1, ge=1, strict=True)
    replacement: bool = True
    caliper: float | None = Field(0.2, gt=0)
    bandwidth: float | None = Field(None, gt=0)


class AnalysisPlan(_Strict):
    """The ``analysis:`` block of a study file (see the README, "The analysis plan")."""

    seed: int = Field(ge=0, le=MAX_SEED, strict=True)  # a whole number, not true/false
    frequency: Literal["month", "quarter", "year"] | None = None  # analyse at this (coarser) frequency
    alpha: float = Field(0.05, gt=0, le=MAX_ALPHA)
    cluster: Literal["township", "county"] = "township"
    comparison: Literal["never_treated", "not_yet_treated"] = "never_treated"
    event_window: tuple[Duration, Duration] = ("-1 year", "2 years")
    pretrend_leads: int = Field(3, ge=2, strict=True)
    subgroups: list[Literal["model", "cohort", "county"]] = Field(default_factory=lambda: ["model", "cohort"])
    placebo_shift: Duration = "1 year"
    target_window: Duration = "1 year"
    outlier_z: float = Field(5.0, gt=0)
    few_pilots: int = Field(15, ge=2, strict=True)
    very_few_pilots: int = Field(5, ge=1, strict=True)
    multiple_testing: Literal["romano_wolf", "holm", "benjamini_hochberg"] = "romano_wolf"
    wild_bootstrap_weights: Literal["rademacher", "webb"] = "webb"
    synthetic_did_inference: Literal["auto", "placebo", "jackknife"] = "auto"
    its: ITSPlan = ITSPlan()
    sensitivity: SensitivityPlan = SensitivityPlan()
    draws: Draws = Draws()
    fast_draws: FastDraws = FastDraws()
    # Covariates (names declared in the study's covariates: block); None: every declared one.
    covariates: list[str] | None = None      # propensity score, balance, doubly-robust estimation
    controls: list[str] | None = None        # time-varying controls of the TWFE models
    matching: MatchingPlan = MatchingPlan()
    heterogeneity: list[str] | None = None   # effects by subgroups of these covariates
    mechanisms: dict[str, list[str]] = Field(default_factory=dict)  # outcome indicator -> its channels

    @field_validator("subgroups", "covariates", "controls", "heterogeneity")
    @classmethod
    def _distinct(cls, value):
        if value is None:
            return value
        twice = sorted({v for v in value if value.count(v) > 1})
        if twice:
            raise ValueError(f"{twice} listed twice")
        return value

    @field_validator("very_few_pilots")
    @classmethod
    def _few_above_very_few(cls, value, info: ValidationInfo):
        few = info.data.get("few_pilots")
        if few is not None and value > few:
            raise ValueError(f"very_few_pilots ({value}) is above few_pilots ({few}): 'very few' must be at most "
                             "'few'")
        return value

    @field_validator("event_window", mode="before")
    @classmethod
    def _pair(cls, value):
        if isinstance(value, list | tuple) and len(value) != 2:
            raise ValueError("expected [first, last] event times, e.g. ['-1 year', '2 years'] or [-12, 24]")
        return value

    def resolve(self, frequency: str, fast: bool = False) -> Settings:
        """The plan in periods of ``frequency`` (raises :class:`DurationError` naming the key)."""
        def p(key: str, value: Duration) -> int:
            try:
                return periods(value, frequency)
            except DurationError as exc:
                raise DurationError(f"analysis.{key}: {exc}") from None

        first, last = p("event_window.0", self.event_window[0]), p("event_window.1", self.event_window[1])
        if not first < 0 <= last:
            raise DurationError(f"analysis.event_window: expected a negative first and a non-negative last event "
                                f"time, got {first} and {last} periods")
        at_least = {"placebo_shift": (self.placebo_shift, 1), "target_window": (self.target_window, 1),
                    "its.phase_in": (self.its.phase_in, 0),
                    "sensitivity.smoothness.pre_periods": (self.sensitivity.smoothness.pre_periods, 1),
                    "sensitivity.smoothness.post_periods": (self.sensitivity.smoothness.post_periods, 1)}
        at_least |= {f"its.horizons.{i}": (h, 1) for i, h in enumerate(self.its.horizons)}
        at_least |= {f"its.township_horizons.{i}": (h, 1) for i, h in enumerate(self.its.township_horizons)}
        for key, (value, floor) in at_least.items():
            if p(key, value) < floor:
                raise DurationError(f"analysis.{key}: expected at least {floor} period{'s' * (floor != 1)}, got "
                                    f"{excerpt(value)} ({p(key, value)} {frequency}s)")
        draws = self.fast_draws if fast else self.draws
        sm = self.sensitivity.smoothness
        return Settings(
            frequency=frequency, fast=fast, seed=self.seed, alpha=self.alpha,
            cluster="county" if self.cluster == "county" else "township_id",
            comparison=self.comparison, event_window=(first, last), pretrend_leads=self.pretrend_leads,
            subgroups=tuple(self.subgroups), placebo_shift=p("placebo_shift", self.placebo_shift),
            target_window=p("target_window", self.target_window), outlier_z=self.outlier_z,
            few_pilots=self.few_pilots, very_few_pilots=self.very_few_pilots, multiple_testing=self.multiple_testing,
            wild_bootstrap_weights=self.wild_bootstrap_weights,
            synthetic_did_inference=self.synthetic_did_inference,
            its_phase_in=p("its.phase_in", self.its.phase_in), its_errors=self.its.errors,
            its_township_errors=self.its.township_errors,
            its_horizons=tuple(p(f"its.horizons.{i}", h) for i, h in enumerate(self.its.horizons)),
            its_township_horizons=tuple(p(f"its.township_horizons.{i}", h)
                                        for i, h in enumerate(self.its.township_horizons)),
            its_series=self.its.series,
            rm_pre_periods=self.sensitivity.relative_magnitude.pre_periods,
            rm_post_periods=self.sensitivity.relative_magnitude.post_periods,
            rm_values=tuple(self.sensitivity.relative_magnitude.values),
            # at least 2 periods (the reference period and one coefficient): "1 year" is 2 years on annual data
            sd_pre_periods=max(2, p("sensitivity.smoothness.pre_periods", sm.pre_periods)),
            sd_post_periods=p("sensitivity.smoothness.post_periods", sm.post_periods),
            sd_values=sm.values if isinstance(sm.values, str) else tuple(sm.values),
            draws_randomization=draws.randomization, draws_wild_bootstrap=draws.wild_bootstrap,
            draws_uniform_band=draws.uniform_band, draws_synthetic_did=draws.synthetic_did,
            covariates=tuple(self.covariates or ()), controls=tuple(self.controls or ()),
            matching_method=self.matching.method, matching_neighbours=self.matching.neighbours,
            matching_replacement=self.matching.replacement, matching_caliper=self.matching.caliper,
            matching_bandwidth=self.matching.bandwidth, heterogeneity=tuple(self.heterogeneity or ()),
            mechanisms=tuple((k, tuple(v)) for k, v in self.mechanisms.items()),
        )


@dataclass(frozen=True)
class Settings:
    """The analysis plan resolved for one study and run: lengths in periods of the study's
    frequency, the draws of this run (full or fast), the cluster as a column name."""

    frequency: str  # the analysis frequency (the data's, or analysis.frequency)
    fast: bool
    seed: int
    alpha: float
    cluster: str
    comparison: str
    event_window: tuple[int, int]
    pretrend_leads: int
    subgroups: tuple[str, ...]
    placebo_shift: int
    target_window: int
    outlier_z: float
    few_pilots: int
    very_few_pilots: int
    multiple_testing: str
    wild_bootstrap_weights: str
    synthetic_did_inference: str
    its_phase_in: int
    its_errors: str
    its_township_errors: str
    its_horizons: tuple[int, ...]
    its_township_horizons: tuple[int, ...]
    its_series: str
    rm_pre_periods: int
    rm_post_periods: int
    rm_values: tuple[float, ...]
    sd_pre_periods: int
    sd_post_periods: int
    sd_values: tuple[float, ...] | str
    draws_randomization: int
    draws_wild_bootstrap: int
    draws_uniform_band: int
    draws_synthetic_did: int
    covariates: tuple[str, ...] = ()       # filled from the study's declaration by Study.settings
    controls: tuple[str, ...] = ()
    matching_method: str = "nearest"
    matching_neighbours: int = 1
    matching_replacement: bool = True
    matching_caliper: float | None = 0.2
    matching_bandwidth: float | None = None
    heterogeneity: tuple[str, ...] = ()
    mechanisms: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def as_dict(self) -> dict:
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        out["mechanisms"] = {outcome: list(channels) for outcome, channels in self.mechanisms}
        return out

    def text(self, count: int) -> tuple[str, str]:
        """A number of periods in words, Chinese and English (``12`` -> 12个月 / 12 months)."""
        return period_text(count, self.frequency)
