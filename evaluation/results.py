"""The one result type every estimator returns, and the tidy table of any list of them.

An :class:`Effect` is one estimated quantity: its estimand (ATT, level change, slope
change, effect at horizon h, ATT at event time k, ...), estimate, standard error,
confidence interval and p-value, the inference method that produced them, and the
counts behind them. An :class:`Estimates` is what one fitted model returns: its effects,
the data a plot needs, diagnostics, and the fitted model for whoever wants more.
Notebooks and the summary chapter consume only these.

Which one of an estimand an effect is lives in structured fields, never in the text of
``term`` (a label for people): ``event_time`` (k of an event study, e of
Callaway-Sant'Anna), ``cohort`` (the first treated period g on the time scale),
``calendar_time`` (period t), ``horizon`` (h periods after an ITS start), ``unit``
(the township of a per-township effect) and ``by`` / ``group`` (a subgroup's column and
value: ``model`` / ``托管``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from evaluation.errors import EffectNotFoundError, EstimationError, NotAResultError

TIDY_COLUMNS = ["indicator", "method", "estimand", "term", "event_time", "cohort", "horizon", "calendar_time",
                "unit", "estimate", "std_error", "ci_low", "ci_high", "p_value", "scale", "inference", "alpha",
                "n_obs", "n_units", "n_treated", "p_floor", "by", "group"]


def _critical_value(alpha: float, df: float | None) -> float:
    """The two-sided critical value: the 1 - alpha/2 quantile of t(df), or of the normal."""
    return float(special.stdtrit(df, 1 - alpha / 2) if df is not None else special.ndtri(1 - alpha / 2))


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
    term: str = ""           # a label for people only ("k=-2", "g=2004"): read the fields below, never parse it
    scale: str = "indicator"  # indicator | log | rate_ratio | percent_change | relative | ...
    indicator: str | None = None
    alpha: float = 0.05
    extra: Mapping[str, Any] = field(default_factory=dict)
    event_time: int | None = None       # event time k (e = t - g)
    cohort: float | None = None         # first treated period g on the time scale
    horizon: int | None = None          # periods after the (last) ITS start
    calendar_time: float | None = None  # period t on the time scale
    unit: str | None = None             # the township of a per-township effect
    df: float | None = None             # degrees of freedom of a t-based Wald interval (None: normal)
    p_floor: float | None = None        # resampling p-values: the smallest the draws can give (1/(B+1))
    by: str | None = None               # a subgroup effect: the column it splits by (model, cohort, comparison)
    group: str | None = None            # ... and the group's value (托管, 2018-07, never_treated)

    @classmethod
    def from_normal(cls, estimand: str, estimate: float, std_error: float, *, alpha: float = 0.05,
                    df: float | None = None, **fields) -> Effect:
        """Effect with a Wald interval and two-sided p-value (normal, or t with ``df``)."""
        crit = _critical_value(alpha, df)
        z = estimate / std_error if std_error > 0 else np.nan
        if not np.isfinite(z):
            p = np.nan
        else:  # 2 P(T > |z|), by the distribution functions directly (a frozen scipy.stats one costs ~0.3 ms)
            p = 2 * (special.stdtr(df, -abs(z)) if df is not None else special.ndtr(-abs(z)))
        return cls(estimand=estimand, estimate=float(estimate), std_error=float(std_error),
                   ci_low=float(estimate - crit * std_error), ci_high=float(estimate + crit * std_error),
                   p_value=float(p), alpha=alpha, df=None if df is None else float(df), **fields)

    def exp(self, estimand: str | None = None) -> Effect:
        """The same effect on the exponentiated scale (log rate ratio -> rate ratio).

        The interval is the exponentiated interval; the standard error is the delta-method
        one, exp(b) * se(b); the p-value (of the null ratio = 1) is unchanged.
        """
        return replace(self, estimand=estimand or self.estimand, estimate=float(np.exp(self.estimate)),
                       std_error=float(np.exp(self.estimate) * self.std_error),
                       ci_low=float(np.exp(self.ci_low)), ci_high=float(np.exp(self.ci_high)),
                       scale="rate_ratio", extra=dict(self.extra))

    @property
    def label(self) -> str:
        """The term, or the estimand when there is no term (for tables and plots)."""
        return self.term or self.estimand

    def covers(self, value: float) -> bool:
        return bool(self.ci_low <= value <= self.ci_high)

    def wald_interval(self, alpha: float) -> tuple[float, float]:
        """The Wald interval at another ``alpha`` from the estimate and standard error (on
        the log scale for rate ratios and percent changes, as the fit computed it)."""
        crit = _critical_value(alpha, self.df)
        if self.scale == "rate_ratio":
            se_log = self.std_error / self.estimate
            return (float(self.estimate * math.exp(-crit * se_log)), float(self.estimate * math.exp(crit * se_log)))
        if self.scale == "percent_change":
            ratio = 1 + self.estimate / 100
            se_log = self.std_error / 100 / ratio
            return (float(100 * (ratio * math.exp(-crit * se_log) - 1)),
                    float(100 * (ratio * math.exp(crit * se_log) - 1)))
        return float(self.estimate - crit * self.std_error), float(self.estimate + crit * self.std_error)

    def as_row(self) -> dict:
        row = asdict(self)
        row.pop("extra")
        row.pop("df")
        return row


def _labels(effects: list[Effect]) -> list[str]:
    """One distinct label per effect (term or estimand; the scale or position added to repeats)."""
    labels = [e.label for e in effects]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} [{e.scale}]" if labels.count(lab) > 1 else lab for lab, e in zip(labels, effects,
                                                                                           strict=True)]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} #{i}" for i, lab in enumerate(labels)]
    return labels


@dataclass
class Estimates:
    """Effects from one fitted model, with what a plot and a reader need.

    ``kind`` is a short machine name of the estimator ("twfe", "event_study",
    "callaway_santanna_dynamic", ...); ``vcov`` the covariance of the effects (rows and
    columns in the order of ``effects``, labelled as :meth:`conf_int`), where the method
    has one; ``wald`` whether the intervals are estimate +- critical value x standard
    error (False when they come from resampling or test inversion); ``spec`` the call
    that produced the fit (data and keyword arguments), so that inference on the same
    model can reuse it.
    """

    effects: list[Effect]
    method: str
    plot_data: pd.DataFrame | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    kind: str = ""
    vcov: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    wald: bool = True
    spec: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __iter__(self):
        return iter(self.effects)

    def __len__(self) -> int:
        return len(self.effects)

    def get(self, estimand: str, term: str = "", *, event_time: int | None = None, cohort: float | None = None,
            horizon: int | None = None, calendar_time: float | None = None, unit: str | None = None) -> Effect:
        """The one effect with this estimand (and term or structured fields, when several
        share the estimand)."""
        wanted = {"event_time": event_time, "cohort": cohort, "horizon": horizon, "calendar_time": calendar_time,
                  "unit": unit}
        matches = [e for e in self.effects if e.estimand == estimand and (not term or e.term == term)
                   and all(v is None or getattr(e, k) == v for k, v in wanted.items())]
        if len(matches) == 1:
            return matches[0]
        have = ", ".join(f"{e.estimand}[{e.term}]" if e.term else e.estimand for e in self.effects)
        what = "several" if matches else "no"
        raise EffectNotFoundError(f"{what} effects '{estimand}' term '{term}'; this fit has: {have}")

    def tidy(self) -> pd.DataFrame:
        return tidy(self.effects)

    def labels(self) -> list[str]:
        """One distinct label per effect, the index of :meth:`conf_int` and ``vcov``."""
        return _labels(self.effects)

    def conf_int(self, alpha: float | None = None) -> pd.DataFrame:
        """Lower and upper limits of every effect's interval, at the fit's alpha (default)
        or at another ``alpha`` (recomputed from estimate and standard error; only for
        Wald intervals, since a resampling interval exists only at the fit's alpha)."""
        rows = []
        for e in self.effects:
            if alpha is None or math.isclose(alpha, e.alpha):
                rows.append((e.ci_low, e.ci_high))
            elif not self.wald:
                raise EstimationError(f"the intervals of this fit ({self.method}; {e.inference}) come from "
                                      f"resampling or test inversion at alpha = {e.alpha:g}; refit with "
                                      f"alpha={alpha:g} for another level")
            else:
                rows.append(e.wald_interval(alpha))
        return pd.DataFrame(rows, columns=["lower", "upper"], index=pd.Index(self.labels(), name="effect"),
                            dtype=float)

    def _caption(self) -> str:
        diag = "; ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in self.diagnostics.items()
                         if not isinstance(v, (dict, list, tuple, pd.DataFrame, np.ndarray)))
        return f"{self.method}" + (f" — {diag}" if diag else "")

    def summary(self) -> Summary:
        """Method, kind and inference as a header, the effects as a table: prints as text
        (statsmodels-like), displays as HTML in a notebook; ``.table`` is the DataFrame."""
        return Summary(self)

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()

    def plot(self, ax=None):
        """Effects with their intervals: against ``event_time`` when the effects have one,
        else one row per effect. Returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 4) if any(e.event_time is not None for e in self.effects)
                                   else (7, 1 + 0.35 * max(1, len(self.effects))))
        else:
            fig = ax.figure
        timed = [e for e in self.effects if e.event_time is not None]
        if timed:
            x = np.array([e.event_time for e in timed], float)
            est = np.array([e.estimate for e in timed])
            lo, hi = np.array([e.ci_low for e in timed]), np.array([e.ci_high for e in timed])
            ax.errorbar(x, est, yerr=[est - lo, hi - est], fmt="o", capsize=2)
            ax.axhline(0.0, color="grey", lw=0.8)
            ax.axvline(-0.5, color="grey", lw=0.8, ls="--")
            ax.set_xlabel("event time")
            ax.set_ylabel("effect")
        else:
            labels = self.labels()
            y = np.arange(len(self.effects))[::-1]
            est = np.array([e.estimate for e in self.effects])
            lo, hi = np.array([e.ci_low for e in self.effects]), np.array([e.ci_high for e in self.effects])
            ax.errorbar(est, y, xerr=[np.nan_to_num(est - lo), np.nan_to_num(hi - est)], fmt="o", capsize=2)
            ax.set_yticks(y, labels)
            ax.axvline(0.0, color="grey", lw=0.8)
            ax.set_xlabel("effect")
        ax.set_title(self.method, fontsize=9)
        fig.tight_layout()
        return fig


class Summary:
    """What :meth:`Estimates.summary` returns: text when printed, HTML in a notebook."""

    def __init__(self, fit: Estimates):
        self.fit = fit
        table = fit.tidy()[["estimand", "term", "estimate", "std_error", "ci_low", "ci_high", "p_value", "scale"]]
        table.index = pd.Index(fit.labels(), name="effect")
        table.attrs["caption"] = fit._caption()
        self.table = table

    def _header(self) -> list[tuple[str, str]]:
        fit = self.fit
        inference = sorted({e.inference for e in fit.effects})
        rows = [("Method", fit.method), ("Kind", fit.kind or "-"), ("Inference", "; ".join(inference) or "-")]
        if fit.effects:
            e = fit.effects[0]
            rows += [("Observations", f"{e.n_obs:,}"), ("Units (treated)", f"{e.n_units:,} ({e.n_treated:,})"),
                     ("Alpha", f"{e.alpha:g}")]
        rows += [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in self.fit.diagnostics.items()
                 if isinstance(v, (int, float, str, bool, np.integer, np.floating))]
        return rows

    def __str__(self) -> str:
        head = "\n".join(f"{k + ':':<18}{v}" for k, v in self._header())
        body = self.table.drop(columns=["estimand", "term"]).to_string(float_format=lambda v: f"{v:.4g}")
        rule = "=" * max(40, max(len(line) for line in body.splitlines()))
        return f"{rule}\n{head}\n{rule}\n{body}\n{rule}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                       f"{html.escape(v)}</td></tr>" for k, v in self._header())
        table = self.table.to_html(escape=True, float_format=lambda v: f"{v:.4g}", na_rep="")
        return (f"<div><p><b>{html.escape(self.fit.method)}</b></p><table>{head}</table>{table}</div>")


def tidy(results: Iterable[Effect | Estimates]) -> pd.DataFrame:
    """One row per effect, from any mix of effects and fitted models."""
    rows = []
    for r in results:
        if isinstance(r, Estimates):
            rows.extend(e.as_row() for e in r.effects)
        elif isinstance(r, Effect):
            rows.append(r.as_row())
        else:
            raise NotAResultError(f"tidy() takes Effect or Estimates objects, got {type(r).__name__}")
    return pd.DataFrame(rows, columns=TIDY_COLUMNS) if not rows else pd.DataFrame(rows)[TIDY_COLUMNS]


def vcov_frame(matrix, effects: list[Effect]) -> pd.DataFrame:
    """A covariance matrix labelled by the effects' labels (rows in the effects' order)."""
    labels = _labels(effects)
    return pd.DataFrame(np.asarray(matrix, float), index=labels, columns=labels)
