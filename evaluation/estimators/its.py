"""Interrupted time series (ITS): segmented regression of one series, and controlled ITS.

The model of a series y_t (t = 0, 1, ... periods since the series' first period) is

    g(E[y_t]) = b0 + b1 t + sum_k [ level_k D_k(t) + slope_k (t - T_k) D_k(t) ]
                + seasonality + spring_festival + covid phases + covariates (+ offset)

with D_k(t) = 1 from interruption k's start T_k on (an announcement, then the
implementation, say). ``level_change`` is the jump at T_k beyond the pre-period trend,
``slope_change`` the change in trend per period. The identifying assumption is that,
without the pilot, the pre-period trend and seasonal pattern would have continued
(Bernal, Cummins and Gasparrini 2017, Int J Epidemiol 46:348-355; Wagner et al. 2002,
J Clin Pharm Ther 27:299-309).

Options follow that tutorial: calendar-month or Fourier seasonality; a Spring Festival
regressor; COVID-19 phase terms or exclusion; Newey-West (HAC) errors by default with the lag
rule floor(4 (n/100)^(2/9)) (Newey and West 1994), regression with ARIMA errors
(statsmodels SARIMAX) or conventional errors; Poisson (quasi-Poisson) and negative
binomial models with a log-population offset for counts, reported as rate ratios.
A transition (phase-in) window after the last interruption can be left out: the level
change is then the jump at the end of the window.

Frequencies. ``t`` counts periods of the series' frequency (month, quarter or year), and so
do the transition window and the horizons. Seasonality is by calendar month on monthly
series, by quarter on quarterly series and absent on annual series (one period a year).
The Spring Festival term is the share of each period's days inside the festival window
(:func:`evaluation.data.calendar.festival_day_share`, one definition for months and
quarters). On quarterly data the window always lies inside the first quarter, so with
quarterly seasonality the term is (up to leap years) the first-quarter dummy over six: it
is then left out, the first-quarter term absorbs the festival, and
``diagnostics["spring_festival"]`` says so; without seasonality it is kept. Annual series
get no festival term (every year holds one festival). A COVID-19 phase may be written in
months, quarters or years whatever the series' frequency: its term is the share of each
period's days inside the phase (:func:`evaluation.study.periods.span_share`: 1 in a month
of the phase, 30/91 in a quarter that holds one of its months), and
``covid="exclude"`` leaves out every period that shares at least one day with a phase.
A phase term the fitted periods cannot tell apart from the other terms (on annual data a
phase that lies only in the few post-start years repeats the level and slope terms) is left
out and named in ``diagnostics["covid_left_out"]``.

Missing periods. A series may lack periods or outcome values (townships with gaps). The
series is reindexed to every period from its first to its last, so ``t`` keeps the true
spacing; OLS, GLM and negative binomial fits (Newey-West, conventional) drop the missing
periods, and so do the Durbin-Watson and Ljung-Box diagnostics (computed on the periods
fitted, in order: with gaps they are approximate, as Newey-West's lags then span the gap);
ARIMA errors keep them in the state-space model as missing values, which the Kalman filter
skips (Durbin and Koopman 2012, Time Series Analysis by State Space Methods, 4.10).
``diagnostics["missing_periods"]`` lists them. A period also counts as missing when its
offset (counts) or a covariate is missing.

Horizon effects compare the fitted series with its counterfactual (all interruption
terms set to zero) ``h`` periods after the last interruption's start, in absolute and
relative terms, with delta-method intervals.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.diagnostic import acorr_ljungbox
from statsmodels.stats.stattools import durbin_watson

from evaluation.data.calendar import festival_day_share
from evaluation.errors import CovidOverlapWarning, ITSError
from evaluation.results import Effect, Estimates, vcov_frame
from evaluation.study.catalogue import Indicator
from evaluation.study.periods import FREQUENCIES, parse_period, period_label, span_share

MIN_PRE_PERIODS = 8
Family = Literal["gaussian", "poisson", "negbin"]
Inference = Literal["hac", "conventional", "arima"]


@dataclass(frozen=True)
class Interruption:
    """A change point: its first period, and whether it changes the level, the slope, or both."""

    start: str | pd.Period
    name: str = "pilot"
    level: bool = True
    slope: bool = True


@dataclass(frozen=True)
class CovidPhase:
    """A COVID-19 phase from the first day of ``start`` to the last day of ``end``; labels
    may be months, quarters or years whatever the series' frequency (``2020-01``,
    ``2020Q1``, ``2020``)."""

    name: str
    start: str | pd.Period
    end: str | pd.Period


@dataclass
class _ITSSpec:
    """Everything that defines an ITS model besides the data (internal: the public
    functions list these options as keywords)."""

    outcome: str
    interruptions: list[Interruption]
    frequency: str = "month"
    transition: int = 0
    seasonality: Literal["month", "fourier"] | None = "month"
    harmonics: int = 2
    spring_festival: bool = True
    covid: Literal["phases", "exclude", "ignore"] = "phases"
    covid_phases: list[CovidPhase] = field(default_factory=list)
    covariates: list[str] = field(default_factory=list)
    family: Family = "gaussian"
    offset: str | None = None
    per: float = 1.0
    inference: Inference = "hac"
    hac_lags: int | None = None
    arima_order: tuple[int, int, int] = (1, 0, 0)
    quasi: bool = True
    horizons: tuple[int, ...] = (12, 24)
    alpha: float = 0.05
    indicator: str | None = None


def newey_west_lags(n: int) -> int:
    """Newey and West (1994) rule of thumb: floor(4 (n / 100)^(2/9))."""
    return int(math.floor(4 * (n / 100) ** (2 / 9)))


# ----------------------------------------------------------------------------- series

def indicator_series(panel, indicator: Indicator, townships: Sequence[str] | str = "pilots",
                     weighting: Literal["pooled", "mean"] = "pooled") -> pd.DataFrame:
    """One series from a panel: the indicator of a group of townships by period.

    ``townships`` is ``"pilots"``, ``"comparison"``, ``"all"`` or a list of township ids.
    ``weighting="pooled"`` gives the group's indicator as a ratio of sums (the group as one
    population); ``"mean"`` the unweighted mean of the townships' indicators. Columns:
    ``value`` (the indicator), ``numerator``, ``denominator`` and ``population`` (sums),
    ``townships`` (how many contributed).

    Each period's value, sums and count come from the townships *observed* in that period:
    a township-period counts only when the indicator's numerator and denominator (and the
    population) are present, so the numerator and the population sums always describe the
    same townships. With gaps the group's composition may therefore change from period to
    period (``townships`` says how many contributed); a period where no selected township
    is observed is absent from the series (the ITS treats it as missing).
    """
    data = panel.data
    if isinstance(townships, str):
        select = {"pilots": data["treated"] == 1, "comparison": data["treated"] == 0,
                  "all": np.ones(len(data), bool)}
        if townships not in select:
            raise ITSError(f"townships must be 'pilots', 'comparison', 'all' or a list of ids, got {townships!r}")
        data = data[select[townships]]
    else:
        unknown = sorted(set(townships) - set(data["township_id"]))
        if unknown:
            raise ITSError(f"townships not in the panel: {unknown}")
        data = data[data["township_id"].isin(list(townships))]
    if data.empty:
        raise ITSError("no townships selected")
    observed = data[list(indicator.columns) + ["population"]].notna().all(axis=1)
    data = data[observed]
    if data.empty:
        raise ITSError(f"the selected townships have no observed values of '{indicator.id}'")
    grouped = data.groupby("period", sort=True)
    out = pd.DataFrame(index=pd.PeriodIndex(sorted(data["period"].unique()), name="period"))
    if weighting == "pooled":
        out["value"] = indicator.aggregate(data, "period")
    elif weighting == "mean":
        out["value"] = indicator.values(data).groupby(data["period"]).mean()
    else:
        raise ITSError(f"weighting must be 'pooled' or 'mean', got {weighting!r}")
    out["numerator"] = grouped[indicator.numerator].sum(min_count=1)
    if indicator.denominator is not None:
        out["denominator"] = grouped[indicator.denominator].sum(min_count=1)
    out["population"] = grouped["population"].sum()
    out["townships"] = grouped["township_id"].nunique()
    return out


# ----------------------------------------------------------------------------- design

def _as_period_index(series: pd.DataFrame, frequency: str) -> pd.DataFrame:
    freq = FREQUENCIES[frequency]
    if isinstance(series.index, pd.PeriodIndex):
        out = series.copy()
        out.index = out.index.asfreq(freq)
    elif "period" in series.columns:
        out = series.set_index(pd.PeriodIndex([parse_period(p, frequency) for p in series["period"]],
                                              freq=freq, name="period"))
    else:
        raise ITSError("the series needs a PeriodIndex or a 'period' column")
    return out.sort_index()


def _design(index: pd.PeriodIndex, series: pd.DataFrame, spec: _ITSSpec, starts: list[pd.Period],
            effective_last: pd.Period) -> tuple[pd.DataFrame, dict]:
    """Regressors for every period of ``index`` (factual values), and notes on terms left out."""
    notes: dict = {}
    t0 = index[0]
    t = np.array([(p - t0).n for p in index], dtype=float)
    X = pd.DataFrame({"const": 1.0, "trend": t}, index=index)
    for k, (intr, start) in enumerate(zip(spec.interruptions, starts, strict=True)):
        s = effective_last if k == len(starts) - 1 else start
        ts = float((s - t0).n)
        on = (t >= ts).astype(float)
        if intr.level:
            X[f"level:{intr.name}"] = on
        if intr.slope:
            X[f"slope:{intr.name}"] = (t - ts) * on
    per_year = {"month": 12, "quarter": 4, "year": 1}[spec.frequency]
    seasonal: list[str] = []
    if spec.seasonality and per_year == 1:
        notes["seasonality"] = "none: an annual series has one period a year"
    if spec.seasonality and per_year > 1:
        pos = np.array([(p.month - 1) if spec.frequency == "month" else (p.quarter - 1) for p in index])
        if spec.seasonality == "month":
            label = "month" if spec.frequency == "month" else "quarter"
            for m in range(1, per_year):
                X[f"{label}_{m + 1}"] = (pos == m).astype(float)
                seasonal.append(f"{label}_{m + 1}")
        elif spec.seasonality == "fourier":
            if not 1 <= spec.harmonics <= per_year // 2:
                raise ITSError(f"harmonics must be between 1 and {per_year // 2}, got {spec.harmonics}")
            for k in range(1, spec.harmonics + 1):
                if 2 * k != per_year:  # the sine of the Nyquist harmonic is zero at every period
                    X[f"sin{k}"] = np.sin(2 * np.pi * k * pos / per_year)
                    seasonal.append(f"sin{k}")
                X[f"cos{k}"] = np.cos(2 * np.pi * k * pos / per_year)
                seasonal.append(f"cos{k}")
        else:
            raise ITSError(f"seasonality must be 'month', 'fourier' or None, got {spec.seasonality!r}")
    if spec.spring_festival and spec.frequency == "year":
        notes["spring_festival"] = "not used: every year holds one festival (the intercept absorbs it)"
    elif spec.spring_festival:
        share = festival_day_share(index)
        if seasonal and _spanned(share, X[["const", *seasonal]].to_numpy()):
            notes["spring_festival"] = ("left out: the festival window lies inside the same season every year "
                                        f"(the first {spec.frequency}), whose seasonal term absorbs it")
        else:
            X["spring_festival"] = share
    if spec.covid == "phases":
        for phase in spec.covid_phases:
            inside = span_share(index, phase.start, phase.end)
            if inside.any():
                X[f"covid:{phase.name}"] = inside
    for cov in spec.covariates:
        if cov not in series.columns:
            raise ITSError(f"covariate '{cov}' is not a column of the series")
        X[cov] = series[cov].reindex(index).astype(float)
    return X, notes


def _drop_unidentified_covid(X: pd.DataFrame, rows: np.ndarray) -> tuple[pd.DataFrame, list[str]]:
    """Leave out COVID-19 phase terms that the fitted ``rows`` cannot tell apart from the
    other terms. On annual (or short quarterly) series a phase that falls only after the
    start, in as many periods as there are post-period terms, repeats the level and slope
    terms; its share is then carried by the pilot terms, and the fit says which phases it
    left out (``diagnostics["covid_left_out"]``). Other collinearity is still an error."""
    dropped = []
    covid = [c for c in X.columns if c.startswith("covid:")]
    for c in covid:
        others = [k for k in X.columns if k != c and k not in dropped and
                  (not k.startswith("covid:") or covid.index(k) < covid.index(c))]
        if _spanned(X.loc[rows, c].to_numpy(), X.loc[rows, others].to_numpy(), tolerance=1e-8):
            dropped.append(c)
    return X.drop(columns=dropped), [c.removeprefix("covid:") for c in dropped]


def _spanned(column: np.ndarray, Z: np.ndarray, tolerance: float = 0.02) -> bool:
    """Whether ``column`` is (nearly) a linear combination of the columns of ``Z``: its
    least-squares residual on them is below ``tolerance`` of its largest value."""
    coef, *_ = np.linalg.lstsq(Z, column, rcond=None)
    scale = np.abs(column).max()
    return bool(scale == 0 or np.abs(column - Z @ coef).max() < tolerance * scale)


def _counterfactual(X: pd.DataFrame) -> pd.DataFrame:
    X0 = X.copy()
    for c in X0.columns:
        if c.startswith(("level:", "slope:", "group:level:", "group:slope:")):
            X0[c] = 0.0
    return X0


# ----------------------------------------------------------------------------- fit

def _interruptions(arg) -> list[Interruption]:
    """A start period, an Interruption, or a list of either -> list of Interruption."""
    items = list(arg) if isinstance(arg, (list, tuple)) else [arg]
    return [i if isinstance(i, Interruption) else Interruption(start=i) for i in items]


def segmented_regression(data: pd.DataFrame, *, outcome: str, start, frequency: str = "month",
                         transition: int = 0, seasonality: Literal["month", "fourier"] | None = "month",
                         harmonics: int = 2, spring_festival: bool = True,
                         covid: Literal["phases", "exclude", "ignore"] = "phases",
                         covid_phases: Sequence[CovidPhase] = (), covariates: Sequence[str] = (),
                         family: Family = "gaussian", offset: str | None = None, per: float = 1.0,
                         inference: Inference = "hac", hac_lags: int | None = None,
                         arima_order: tuple[int, int, int] = (1, 0, 0), quasi: bool = True,
                         horizons: Sequence[int] = (12, 24), alpha: float = 0.05,
                         indicator: str | None = None) -> Estimates:
    """Fit an ITS segmented regression to one series; the module docstring gives the model
    and its assumption (the pre-period trend and seasonality would have continued).

    ``data``: the series, a frame with a PeriodIndex (or a ``period`` column), the
    ``outcome`` column, and for count families the ``offset`` column (population).
    ``start``: the first period of the pilot (a label such as "2019-07" or a Period), an
    :class:`Interruption` (name, level and/or slope change), or a list of either in time
    order. Options:

    * ``frequency``: "month", "quarter" or "year" of the series; lengths below are periods of it.
    * ``transition``: periods after the last start left out as a phase-in window.
    * ``seasonality``: "month" (one dummy per calendar month, or per quarter on quarterly
      series), "fourier" (``harmonics`` pairs) or None; annual series have none.
    * ``spring_festival``: the festival regressor, the share of each period's days in the
      festival window (months and quarters; see the module docstring for quarters and years).
    * ``covid``: "phases" (for each of ``covid_phases``, the share of each period's days in
      the phase), "exclude" (drop the periods that overlap a phase) or "ignore".
    * ``covariates``: further columns of the series as regressors.
    * ``family``: "gaussian", "poisson" or "negbin"; ``offset``: log-offset column for
      counts; ``per``: rates per this many (e.g. 1000) in horizon effects and the plot.
    * ``inference``: "hac" (Newey-West, ``hac_lags`` or the rule of thumb),
      "conventional" (quasi-Poisson when ``quasi``) or "arima" (``arima_order`` errors).
    * ``horizons``: periods after the last start at which to report the effect.

    Returns level and slope changes per interruption (rate ratios for count families,
    the interruption's name in ``term``), effects at the horizons (absolute and
    relative, h in ``horizon``), the counterfactual for the plot in ``plot_data``, and
    Durbin-Watson and Ljung-Box diagnostics of the residuals. Missing periods and values
    are allowed (module docstring): the fit uses the periods observed.
    """
    spec = _ITSSpec(outcome=outcome, interruptions=_interruptions(start), frequency=frequency,
                    transition=transition, seasonality=seasonality, harmonics=harmonics,
                    spring_festival=spring_festival, covid=covid, covid_phases=list(covid_phases),
                    covariates=list(covariates), family=family, offset=offset, per=per, inference=inference,
                    hac_lags=hac_lags, arima_order=tuple(arima_order), quasi=quasi, horizons=tuple(horizons),
                    alpha=alpha, indicator=indicator)
    return _fit(data, spec)


def _prepare(series: pd.DataFrame, spec: _ITSSpec):
    if spec.family not in ("gaussian", "poisson", "negbin"):
        raise ITSError(f"family must be 'gaussian', 'poisson' or 'negbin', got {spec.family!r}")
    if spec.inference not in ("hac", "conventional", "arima"):
        raise ITSError(f"inference must be 'hac', 'conventional' or 'arima', got {spec.inference!r}")
    if spec.inference == "arima" and spec.family != "gaussian":
        raise ITSError("ARIMA errors need family='gaussian'")
    data = _as_period_index(series, spec.frequency)
    if spec.outcome not in data.columns:
        raise ITSError(f"outcome '{spec.outcome}' is not a column of the series")
    if data.index.has_duplicates:
        raise ITSError(f"the series has duplicate periods: {sorted(set(data.index[data.index.duplicated()].astype(str)))}")
    if data.empty:
        raise ITSError("the series is empty")
    # every period from the first to the last: t keeps the true spacing, gaps become NaN
    data = data.reindex(pd.period_range(data.index[0], data.index[-1], freq=data.index.freq, name="period"))
    y = data[spec.outcome].astype(float)
    observed = y.notna()
    for col in ([spec.offset] if spec.offset and spec.family != "gaussian" else []) + list(spec.covariates):
        if col in data.columns:
            observed &= data[col].notna()
    if spec.family != "gaussian":
        yo = y[observed]
        if (yo < 0).any() or not np.allclose(yo, np.round(yo)):
            raise ITSError(f"a {spec.family} model needs whole, non-negative counts in '{spec.outcome}'")
        if spec.offset is not None:
            if spec.offset not in data.columns:
                raise ITSError(f"offset column '{spec.offset}' is not in the series")
            bad = data.index[observed.to_numpy() & ~(data[spec.offset].astype(float) > 0).to_numpy()]
            if len(bad):
                raise ITSError(f"offset '{spec.offset}' must be positive; it is not in "
                               f"{', '.join(period_label(p) for p in bad[:12])}")
    starts = []
    for intr in spec.interruptions:
        s = parse_period(intr.start, spec.frequency)
        if not data.index[0] < s <= data.index[-1]:
            raise ITSError(f"interruption '{intr.name}' starts {period_label(s)}, outside the series "
                           f"{period_label(data.index[0])}..{period_label(data.index[-1])}")
        starts.append(s)
    if starts != sorted(starts):
        raise ITSError("interruptions must be given in time order")
    if spec.transition < 0:
        raise ITSError("transition must be 0 or more periods")
    effective_last = starts[-1] + spec.transition
    if effective_last > data.index[-1]:
        raise ITSError("the transition window runs past the end of the series")

    keep = observed.copy()
    transition = (data.index >= starts[-1]) & (data.index < effective_last)
    keep[transition] = False
    covid_periods = set()
    for phase in spec.covid_phases:
        covid_periods |= set(data.index[span_share(data.index, phase.start, phase.end) > 0])
    if spec.covid == "exclude":
        keep[[p in covid_periods for p in data.index]] = False
    pre = data.index[(data.index < starts[0]) & keep.to_numpy()]
    if len(pre) < MIN_PRE_PERIODS:
        raise ITSError(f"only {len(pre)} pre-period points before {period_label(starts[0])}"
                       + (f" ({int((~observed[data.index < starts[0]]).sum())} missing)" if not observed.all() else "")
                       + f"; at least {MIN_PRE_PERIODS} are needed")
    last_pre = starts[0] - 1
    if spec.covid != "ignore" and last_pre in covid_periods:
        warnings.warn(f"the pre-period ends in {period_label(last_pre)}, inside a COVID-19 phase; "
                      "the counterfactual trend may be distorted", CovidOverlapWarning, stacklevel=3)
    return data, y, starts, effective_last, keep


def _fit(series: pd.DataFrame, spec: _ITSSpec) -> Estimates:
    data, y, starts, effective_last, keep = _prepare(series, spec)
    X, notes = _design(data.index, data, spec, starts, effective_last)
    X = X.loc[:, (X.loc[keep.to_numpy()] != 0).any() | (X.columns == "const")]  # drop all-zero columns
    X, unidentified = _drop_unidentified_covid(X, keep.to_numpy())
    if unidentified:
        notes["covid_left_out"] = unidentified
    needed = [c for c in ([spec.offset] if spec.offset and spec.family != "gaussian" else []) + spec.covariates
              if c in data.columns]
    absent = y.isna() | data[needed].isna().any(axis=1)  # as in _prepare: outcome, offset or covariate missing
    missing = [period_label(p) for p in y.index[absent.to_numpy()]]
    offset = np.log(data[spec.offset].astype(float)) if spec.offset else None
    n_fit = int(keep.sum())
    lags = spec.hac_lags if spec.hac_lags is not None else newey_west_lags(n_fit)
    Xf, yf = X[keep.to_numpy()], y[keep.to_numpy()]
    if np.linalg.matrix_rank(Xf.to_numpy()) < Xf.shape[1]:
        raise ITSError(f"collinear regressors {list(Xf.columns)}: too few periods for this many terms, "
                       "or a covariate that repeats another term")
    off_f = offset[keep.to_numpy()] if offset is not None else None

    if spec.family == "gaussian" and spec.inference != "arima":
        model = sm.OLS(yf, Xf)
        fit = (model.fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": True}, use_t=True)
               if spec.inference == "hac" else model.fit())
        params, cov = fit.params, fit.cov_params()
        resid = fit.resid
        method = "ITS segmented regression (OLS)"
    elif spec.family == "gaussian":
        # excluded and missing periods stay in the state-space model as missing values (the
        # Kalman filter skips them), so a missing covariate there does not enter the likelihood
        endog = y.where(keep)
        model = sm.tsa.SARIMAX(endog, exog=X.fillna(0.0), order=spec.arima_order, trend="n")
        fit = model.fit(disp=False, method="bfgs", maxiter=1000)
        if not fit.mle_retvals.get("converged", True):
            warnings.warn("ARIMA-error model: maximum likelihood did not converge; check "
                          "diagnostics['converged'] and consider inference='hac'", RuntimeWarning, stacklevel=3)
        params, cov = fit.params[X.columns], fit.cov_params().loc[X.columns, X.columns]
        resid = fit.resid[keep.to_numpy()]
        method = f"ITS segmented regression with ARIMA{spec.arima_order} errors"
    elif spec.family == "poisson":
        model = sm.GLM(yf, Xf, family=sm.families.Poisson(), offset=off_f)
        if spec.inference == "hac":
            fit = model.fit(cov_type="HAC", cov_kwds={"maxlags": lags})
        else:
            fit = model.fit(scale="X2" if spec.quasi else 1.0)
        params, cov = fit.params, fit.cov_params()
        resid = fit.resid_pearson
        method = "ITS Poisson regression" + (" (quasi-Poisson)" if spec.quasi and spec.inference != "hac" else "")
    else:
        model = sm.NegativeBinomial(yf, Xf, offset=off_f, loglike_method="nb2")
        kwargs = {"cov_type": "HAC", "cov_kwds": {"maxlags": lags}} if spec.inference == "hac" else {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = model.fit(disp=0, method="lbfgs", maxiter=2000, **kwargs)
        if not fit.mle_retvals.get("converged", True):
            warnings.warn("negative binomial model: maximum likelihood did not converge",
                          RuntimeWarning, stacklevel=3)
        if fit.params["alpha"] < 1e-4 or any("Hessian" in str(w.message) for w in caught):
            warnings.warn(f"negative binomial dispersion alpha = {fit.params['alpha']:.2g}: the series shows "
                          "no overdispersion, so the model is at its Poisson boundary; use family='poisson'",
                          RuntimeWarning, stacklevel=3)
        params, cov = fit.params[X.columns], fit.cov_params().loc[X.columns, X.columns]
        resid = (yf - fit.predict()) / np.sqrt(fit.predict() * (1 + fit.params["alpha"] * fit.predict()))
        method = "ITS negative binomial regression (NB2)"
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(np.diag(cov)))):
        raise ITSError("the model could not be estimated (collinear regressors or too little data)")
    inference = {"hac": f"Newey-West HAC, {lags} lags", "conventional": "conventional",
                 "arima": f"ARIMA{spec.arima_order} errors (maximum likelihood)"}[spec.inference]
    if spec.family == "poisson" and spec.inference == "conventional" and spec.quasi:
        inference = "quasi-Poisson (Pearson dispersion)"
    df = fit.df_resid if getattr(fit, "use_t", False) else None
    common = dict(method=method, inference=inference, n_obs=n_fit, indicator=spec.indicator, alpha=spec.alpha)

    effects: list[Effect] = []
    grads: list[np.ndarray] = []
    count = spec.family != "gaussian"
    for intr in spec.interruptions:
        for kind in ("level", "slope"):
            col = f"{kind}:{intr.name}"
            if col not in params.index:
                continue
            e = Effect.from_normal(f"{kind}_change", params[col], math.sqrt(cov.loc[col, col]), df=df,
                                   term=intr.name, scale="log" if count else "indicator", **common)
            effects.append(e.exp() if count else e)
            g = (params.index == col).astype(float)
            grads.append(g * math.exp(params[col]) if count else g)

    horizon_effects, horizon_grads, skipped = _horizon_effects(X, data, params, cov, spec, starts[-1],
                                                               effective_last, offset, df, common)
    effects += horizon_effects
    grads += horizon_grads
    G = np.array(grads).reshape(len(grads), len(params))
    vcov = vcov_frame(G @ cov.loc[params.index, params.index].to_numpy() @ G.T, effects)
    plot = _plot_data(X, data, y, keep, params, cov, spec, offset)
    diagnostics = {
        "n_obs": n_fit, "pre_periods": int(((data.index < starts[0]) & keep.to_numpy()).sum()),
        "hac_lags": lags if spec.inference == "hac" else None,
        "durbin_watson": float(durbin_watson(np.asarray(resid))),
        "ljung_box_p": float(acorr_ljungbox(np.asarray(resid), lags=[min(12, max(1, n_fit // 5))])
                             ["lb_pvalue"].iloc[0]),
        "horizons_beyond_series": skipped,
        "missing_periods": missing,
        "regressors": list(X.columns),
        **notes,
        "converged": bool((getattr(fit, "mle_retvals", None) or {}).get("converged", True)),
    }
    if spec.family == "poisson":
        mu = np.exp(Xf.to_numpy() @ params.to_numpy() + (off_f if off_f is not None else 0))
        diagnostics["pearson_dispersion"] = float(((yf - mu) ** 2 / mu).sum() / (n_fit - len(params)))
    return Estimates(effects=effects, method=method, plot_data=plot, diagnostics=diagnostics, model=fit,
                     kind="segmented_regression", vcov=vcov)


def _horizon_effects(X, data, params, cov, spec, last_start, effective_last, offset, df, common):
    out, grads, skipped = [], [], []
    V = cov.loc[params.index, params.index].to_numpy()
    X0 = _counterfactual(X)
    for h in spec.horizons:
        p = last_start + h
        if p not in X.index or p < effective_last or (offset is not None and not np.isfinite(offset.loc[p])):
            skipped.append(h)  # beyond the series, inside the phase-in, or no population to scale by
            continue
        x1 = X.loc[p, params.index].to_numpy()
        x0 = X0.loc[p, params.index].to_numpy()
        b = params.to_numpy()
        if spec.family == "gaussian":
            absolute, g_abs = float((x1 - x0) @ b), x1 - x0
            c = float(x0 @ b)
            relative = absolute / c
            g_rel = g_abs / c - absolute * x0 / c**2
            unit = spec.per
            absolute, g_abs = absolute * unit, g_abs * unit
        else:
            off = float(offset.loc[p]) if offset is not None else 0.0
            mu1, mu0 = math.exp(x1 @ b + off), math.exp(x0 @ b + off)
            scale = spec.per / math.exp(off) if offset is not None else 1.0
            absolute = (mu1 - mu0) * scale
            g_abs = (mu1 * x1 - mu0 * x0) * scale
            relative = mu1 / mu0 - 1
            g_rel = (mu1 / mu0) * (x1 - x0)
        for estimand, value, grad, scale_name in (("effect_at_horizon", absolute, g_abs, "indicator"),
                                                  ("relative_effect_at_horizon", relative, g_rel, "relative")):
            se = math.sqrt(float(grad @ V @ grad))
            out.append(Effect.from_normal(estimand, value, se, df=df, term=f"h={h}", scale=scale_name, horizon=int(h),
                                          extra={"period": period_label(p)}, **common))
            grads.append(np.asarray(grad, float))
    return out, grads, skipped


def _plot_data(X, data, y, keep, params, cov, spec, offset) -> pd.DataFrame:
    """Observed, fitted and counterfactual series with the counterfactual's band."""
    z = stats.norm.ppf(1 - spec.alpha / 2)
    V = cov.loc[params.index, params.index].to_numpy()
    Xm = X[params.index].to_numpy()
    X0 = _counterfactual(X)[params.index].to_numpy()
    eta1, eta0 = Xm @ params.to_numpy(), X0 @ params.to_numpy()
    se0 = np.sqrt(np.einsum("ij,jk,ik->i", X0, V, X0))
    if spec.family == "gaussian":
        scale = spec.per
        fitted, cf, lo, hi = eta1 * scale, eta0 * scale, (eta0 - z * se0) * scale, (eta0 + z * se0) * scale
        observed = y.to_numpy() * scale
    else:
        off = offset.to_numpy() if offset is not None else 0.0
        scale = spec.per / np.exp(off) if offset is not None else 1.0
        fitted = np.exp(eta1 + off) * scale
        cf, lo, hi = (np.exp(eta0 + off) * scale, np.exp(eta0 - z * se0 + off) * scale,
                      np.exp(eta0 + z * se0 + off) * scale)
        observed = y.to_numpy() * scale
    starts = [parse_period(i.start, spec.frequency) for i in spec.interruptions]
    segment = np.full(len(X), "pre", dtype=object)
    for intr, s in zip(spec.interruptions, starts, strict=True):
        segment[X.index >= s] = intr.name
    segment[~keep.to_numpy()] = "excluded"
    return pd.DataFrame({"observed": observed, "fitted": fitted, "counterfactual": cf,
                         "counterfactual_low": lo, "counterfactual_high": hi, "segment": segment,
                         "used_in_fit": keep.to_numpy()}, index=X.index)


# ----------------------------------------------------------------------------- designs

def controlled_its(data: pd.DataFrame, *, control: pd.DataFrame, outcome: str, start, frequency: str = "month",
                   seasonality: Literal["month", "fourier"] | None = "month", harmonics: int = 2,
                   spring_festival: bool = True, covid: Literal["phases", "exclude", "ignore"] = "phases",
                   covid_phases: Sequence[CovidPhase] = (), covariates: Sequence[str] = (),
                   family: Literal["gaussian", "poisson"] = "gaussian", offset: str | None = None,
                   inference: Literal["hac", "conventional"] = "hac", hac_lags: int | None = None,
                   quasi: bool = True, alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Comparative ITS: the pilot series (``data``) against a ``control`` series in one model.

    Both series share seasonality, Spring Festival and COVID-19 terms; the pilot series
    gets its own intercept, trend and interruption terms on top of the control's. The
    estimands are the *differences* in level change and in slope change (pilot minus
    control), under the assumption that the control series shows what the pilot series
    would have done without the pilot beyond their pre-period difference in level and
    trend (Lopez Bernal, Cummins and Gasparrini 2018, Int J Epidemiol 47:2082-2093).
    ``start`` and the options are those of :func:`segmented_regression` (no transition
    window, horizons or ARIMA errors here); periods missing from either series are left
    out of the fit. ``inference``: panel Newey-West (HAC by
    series, ``hac_lags`` or the rule of thumb) by default, or "conventional".
    Effects: ``difference_in_level_change``, ``difference_in_slope_change`` and the
    control's own ``control_level_change`` / ``control_slope_change`` per interruption.
    """
    pilot = data
    spec = _ITSSpec(outcome=outcome, interruptions=_interruptions(start), frequency=frequency,
                    seasonality=seasonality, harmonics=harmonics, spring_festival=spring_festival, covid=covid,
                    covid_phases=list(covid_phases), covariates=list(covariates), family=family, offset=offset,
                    inference=inference, hac_lags=hac_lags, quasi=quasi, horizons=(), alpha=alpha,
                    indicator=indicator)
    if spec.inference == "arima":
        raise ITSError("controlled ITS supports inference='hac' or 'conventional'")
    if spec.transition:
        raise ITSError("controlled ITS does not take a transition window; start the interruption after it")
    parts = []
    for g, frame in ((0, control), (1, pilot)):
        data, y, starts, effective_last, keep = _prepare(frame, spec)
        X, _ = _design(data.index, data, spec, starts, effective_last)
        for c in [c for c in X.columns if c.startswith(("level:", "slope:"))] + ["const", "trend"]:
            X[f"group:{c}"] = X[c] * g
        X["_y"] = y
        X["_group"] = g
        X["_keep"] = keep.to_numpy()
        X["_offset"] = np.log(data[spec.offset].astype(float)) if spec.offset else 0.0
        parts.append(X)
    stacked = pd.concat(parts)
    stacked = stacked[stacked["_keep"]]
    if parts[0].index.tolist() != parts[1].index.tolist():
        raise ITSError("pilot and control series must cover the same periods")
    Xcols = [c for c in stacked.columns if not c.startswith("_")]
    Xcols = [c for c in Xcols if (stacked[c] != 0).any() or c == "const"]
    kept, unidentified = _drop_unidentified_covid(stacked[Xcols], np.ones(len(stacked), bool))
    Xcols = list(kept.columns)
    X, y = stacked[Xcols].reset_index(drop=True), stacked["_y"].reset_index(drop=True)
    groups = stacked["_group"].to_numpy()
    n_per = int(len(stacked) / 2)
    lags = spec.hac_lags if spec.hac_lags is not None else newey_west_lags(n_per)
    kwargs = ({"cov_type": "hac-panel", "cov_kwds": {"groups": groups, "maxlags": lags}}
              if spec.inference == "hac" else {})
    if spec.family == "gaussian":
        fit = sm.OLS(y, X).fit(**kwargs)
    elif spec.family == "poisson":
        fit = sm.GLM(y, X, family=sm.families.Poisson(), offset=stacked["_offset"].to_numpy()).fit(
            **(kwargs or {"scale": "X2" if spec.quasi else 1.0}))
    else:
        raise ITSError("controlled ITS supports family 'gaussian' or 'poisson'")
    params, cov = fit.params, fit.cov_params()
    inference = f"panel Newey-West HAC by series, {lags} lags" if spec.inference == "hac" else "conventional"
    df = fit.df_resid if getattr(fit, "use_t", False) else None
    method = "controlled ITS (pilot vs control series)"
    common = dict(method=method, inference=inference, n_obs=len(y), n_units=2, n_treated=1,
                  indicator=spec.indicator, alpha=spec.alpha)
    count = spec.family != "gaussian"
    effects, grads = [], []
    for intr in spec.interruptions:
        for kind in ("level", "slope"):
            for prefix, estimand in (("group:", f"difference_in_{kind}_change"), ("", f"control_{kind}_change")):
                col = f"{prefix}{kind}:{intr.name}"
                if col in params.index:
                    e = Effect.from_normal(estimand, params[col], math.sqrt(cov.loc[col, col]), df=df,
                                           term=intr.name, scale="log" if count else "indicator", **common)
                    effects.append(e.exp() if count else e)
                    g = (params.index == col).astype(float)
                    grads.append(g * math.exp(params[col]) if count else g)
    G = np.array(grads).reshape(len(grads), len(params))
    return Estimates(effects=effects, method=method, diagnostics={"n_obs": len(y), "hac_lags": lags,
                                                                   "covid_left_out": unidentified},
                     model=fit, kind="controlled_its", vcov=vcov_frame(G @ np.asarray(cov) @ G.T, effects))


def its_by_township(data, *, indicator: Indicator, frequency: str = "month", transition: int = 0,
                    seasonality: Literal["month", "fourier"] | None = "month", harmonics: int = 2,
                    spring_festival: bool = True, covid: Literal["phases", "exclude", "ignore"] = "phases",
                    covid_phases: Sequence[CovidPhase] = (), family: Family = "gaussian",
                    offset: str | None = None, per: float = 1.0, inference: Inference = "hac",
                    hac_lags: int | None = None, arima_order: tuple[int, int, int] = (1, 0, 0),
                    quasi: bool = True, horizons: Sequence[int] = (12, 24), alpha: float = 0.05) -> Estimates:
    """One ITS (:func:`segmented_regression`, same assumption) per pilot township at its own
    start (pilots start in different periods); lengths are periods of ``frequency``, and a
    township's missing periods are left out of its fit.

    ``data``: the study panel (:class:`evaluation.data.panel.Panel`); ``indicator``: the
    catalogue :class:`~evaluation.study.catalogue.Indicator` whose township series is
    fitted (its id is carried into the effects). The options are those of
    :func:`segmented_regression`. Returns one :class:`Estimates` (kind
    ``its_by_township``) with every township's effects, the township in each effect's
    ``unit``; ``model`` maps township id -> that township's fit.
    """
    out, effects = {}, []
    for row in data.pilots.itertuples():
        series = indicator_series(data, indicator, [row.township_id])
        fit = segmented_regression(series, outcome="value", start=row.pilot_start, frequency=frequency,
                                   transition=transition, seasonality=seasonality, harmonics=harmonics,
                                   spring_festival=spring_festival, covid=covid, covid_phases=covid_phases,
                                   family=family, offset=offset, per=per, inference=inference, hac_lags=hac_lags,
                                   arima_order=arima_order, quasi=quasi, horizons=horizons, alpha=alpha,
                                   indicator=indicator.id)
        out[row.township_id] = fit
        effects += [replace(e, unit=str(row.township_id)) for e in fit.effects]
    method = "ITS segmented regression, each pilot township at its own start"
    return Estimates(effects=effects, method=method, model=out, kind="its_by_township",
                     diagnostics={"townships": len(out)})
