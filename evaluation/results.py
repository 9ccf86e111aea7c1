"""The one result type every estimator returns, and the tidy table of any list of them.

An :class:`Effect` is one estimated quantity: its estimand (ATT, level change, slope
change, effect at horizon h, ATT at event time k, ...), estimate, standard error,
confidence interval and p-value, the inference method that produced them, and the
counts behind them. An :class:`Estimates` is what one fitted model returns: its effects,
the data a plot needs, diagnostics, and the fitted model for whoever wants more.
Notebooks and the summary chapter consume only these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

TIDY_COLUMNS = ["indicator", "method", "estimand", "term", "estimate", "std_error", "ci_low", "ci_high",
                "p_value", "scale", "inference", "alpha", "n_obs", "n_units", "n_treated"]


@dataclass(frozen=True)
class Effect:
    """One estimate with its uncertainty and provenance."""

    estimand: str            # att, level_change, slope_change, effect_at_horizon, att_event_time, ...
    estimate: float
    std_error: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str              # e.g. "ITS segmented regression (OLS)"
    inference: str           # e.g. "Newey-West HAC, 4 lags"
    n_obs: int
    n_units: int = 1
    n_treated: int = 1
    term: str = ""           # which one of the estimand: "h=12", "k=-2", "g=2004,t=2006", ...
    scale: str = "indicator"  # indicator | log | rate_ratio | relative | ...
    indicator: str | None = None
    alpha: float = 0.05
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_normal(cls, estimand: str, estimate: float, std_error: float, *, alpha: float = 0.05,
                    df: float | None = None, **kwargs) -> Effect:
        """Effect with a Wald interval and two-sided p-value (normal, or t with ``df``)."""
        dist = stats.t(df) if df is not None else stats.norm()
        crit = dist.ppf(1 - alpha / 2)
        z = estimate / std_error if std_error > 0 else np.nan
        p = 2 * dist.sf(abs(z)) if np.isfinite(z) else np.nan
        return cls(estimand=estimand, estimate=float(estimate), std_error=float(std_error),
                   ci_low=float(estimate - crit * std_error), ci_high=float(estimate + crit * std_error),
                   p_value=float(p), alpha=alpha, **kwargs)

    def exp(self, estimand: str | None = None) -> Effect:
        """The same effect on the exponentiated scale (log rate ratio -> rate ratio).

        The interval is the exponentiated interval; the standard error is the delta-method
        one, exp(b) * se(b); the p-value (of the null ratio = 1) is unchanged.
        """
        return Effect(estimand=estimand or self.estimand, estimate=float(np.exp(self.estimate)),
                      std_error=float(np.exp(self.estimate) * self.std_error),
                      ci_low=float(np.exp(self.ci_low)), ci_high=float(np.exp(self.ci_high)),
                      p_value=self.p_value, method=self.method, inference=self.inference,
                      n_obs=self.n_obs, n_units=self.n_units, n_treated=self.n_treated, term=self.term,
                      scale="rate_ratio", indicator=self.indicator, alpha=self.alpha, extra=dict(self.extra))

    def covers(self, value: float) -> bool:
        return bool(self.ci_low <= value <= self.ci_high)

    def as_row(self) -> dict:
        row = asdict(self)
        row.pop("extra")
        return row


@dataclass
class Estimates:
    """Effects from one fitted model, with what a plot and a reader need."""

    effects: list[Effect]
    method: str
    plot_data: pd.DataFrame | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    model: Any = None

    def __iter__(self):
        return iter(self.effects)

    def __len__(self) -> int:
        return len(self.effects)

    def get(self, estimand: str, term: str = "") -> Effect:
        """The one effect with this estimand (and term, when several share the estimand)."""
        matches = [e for e in self.effects if e.estimand == estimand and (not term or e.term == term)]
        if len(matches) == 1:
            return matches[0]
        have = ", ".join(f"{e.estimand}[{e.term}]" if e.term else e.estimand for e in self.effects)
        what = "several" if matches else "no"
        raise KeyError(f"{what} effects '{estimand}' term '{term}'; this fit has: {have}")

    def tidy(self) -> pd.DataFrame:
        return tidy(self.effects)

    def summary(self) -> pd.DataFrame:
        """Method and diagnostics as a caption, the effects as a table (for notebooks)."""
        table = self.tidy()
        diag = "; ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in self.diagnostics.items()
                         if not isinstance(v, (dict, list, tuple, pd.DataFrame, np.ndarray)))
        table.attrs["caption"] = f"{self.method}" + (f" — {diag}" if diag else "")
        return table


def tidy(results: Iterable[Effect | Estimates]) -> pd.DataFrame:
    """One row per effect, from any mix of effects and fitted models."""
    rows = []
    for r in results:
        if isinstance(r, Estimates):
            rows.extend(e.as_row() for e in r.effects)
        elif isinstance(r, Effect):
            rows.append(r.as_row())
        else:
            raise TypeError(f"tidy() takes Effect or Estimates objects, got {type(r).__name__}")
    return pd.DataFrame(rows, columns=TIDY_COLUMNS) if not rows else pd.DataFrame(rows)[TIDY_COLUMNS]
