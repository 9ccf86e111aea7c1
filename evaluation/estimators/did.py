"""Difference-in-differences: the 2x2 design, two-way fixed effects, event studies,
Poisson DiD for counts, and effects by integration model or cohort.

Every estimator takes a long DataFrame and the names of its unit, time, outcome and
treatment columns, so it runs on the study panel (:func:`evaluation.data.frames.did_frame`) and on public data
alike, and returns :class:`evaluation.results.Estimates`.

Identifying assumption throughout: parallel trends (without the pilot, pilot and
comparison townships would have changed alike) and no anticipation. With staggered
adoption and effects that grow or differ by cohort, TWFE averages comparisons that use
already-treated units as controls and can be biased (Goodman-Bacon 2021, J Econometrics
225:254-277; :mod:`evaluation.diagnostics.bacon`); Callaway and Sant'Anna's estimator
(:mod:`evaluation.estimators.staggered`) avoids them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from evaluation.estimators.fixed_effects import EstimationError, FEFit, factorize, fe_ols, fe_poisson
from evaluation.results import Effect, Estimates

INFERENCE_2X2 = {"conventional": "conventional OLS", "robust": "heteroskedasticity-robust (HC1)",
                 "cluster": "cluster-robust (CR1)"}


def _check(data: pd.DataFrame, unit: str, time: str, outcome: str, treatment: str | None,
           needed: Sequence[str] = ()) -> pd.DataFrame:
    missing = [c for c in [unit, time, outcome, *( [treatment] if treatment else []), *needed] if c not in data.columns]
    if missing:
        raise EstimationError(f"columns not in the data: {missing}")
    if data[outcome].isna().all():
        raise EstimationError(f"the outcome '{outcome}' is missing in every row")
    d = data.dropna(subset=[outcome, *needed])
    if d[time].nunique() < 2:
        raise EstimationError(f"a single period ('{time}' takes one value): DiD needs periods before and after")
    if treatment:
        if not (d[treatment] == 0).any():
            raise EstimationError(f"no comparison units: '{treatment}' is never 0")
        if d[treatment].nunique() < 2:
            raise EstimationError(f"the treatment '{treatment}' never varies (always {d[treatment].iloc[0]})")
    return d


def _effect(fit: FEFit, name: str, estimand: str, *, method: str, n_units: int, n_treated: int,
            alpha: float, indicator: str | None, term: str = "", scale: str = "indicator") -> Effect:
    i = fit.index(name)
    inference = f"cluster-robust CR1 by {fit.n_clusters} clusters, {fit.adjustment} small-sample adjustment"
    return Effect.from_normal(estimand, fit.coef[i], fit.se[i], alpha=alpha, df=fit.df_t, method=method,
                              inference=inference, n_obs=fit.n_obs, n_units=n_units, n_treated=n_treated,
                              term=term, scale=scale, indicator=indicator)


# ----------------------------------------------------------------------------- 2x2

def did_2x2(data: pd.DataFrame, outcome: str, group: str, post: str, *, se: str = "conventional",
            cluster: str | None = None, covariates: Sequence[str] = (), alpha: float = 0.05,
            indicator: str | None = None) -> Estimates:
    """Canonical group-by-period DiD: OLS of the outcome on group, post and group x post.

    The coefficient of the interaction is the ATT under parallel trends. ``se``:
    ``conventional``, ``robust`` (HC1) or ``cluster`` (CR1 by ``cluster``, statsmodels'
    G/(G-1)(N-1)/(N-K) adjustment).
    """
    if se not in INFERENCE_2X2:
        raise ValueError(f"se must be one of {list(INFERENCE_2X2)}, got {se!r}")
    if se == "cluster" and not cluster:
        raise ValueError("se='cluster' needs the cluster column")
    d = _check(data, group, post, outcome, None, needed=list(covariates) + ([cluster] if cluster else []))
    for col in (group, post):
        if set(d[col].unique()) - {0, 1}:
            raise EstimationError(f"'{col}' must be 0/1")
        if d[col].nunique() < 2:
            raise EstimationError(f"'{col}' never varies")
    frame = pd.DataFrame({"y": d[outcome].astype(float), "g": d[group].astype(float),
                          "p": d[post].astype(float)})
    for i, c in enumerate(covariates):
        frame[f"x{i}"] = d[c].astype(float)
    frame["gp"] = frame["g"] * frame["p"]
    formula = "y ~ g + p + gp" + "".join(f" + x{i}" for i in range(len(covariates)))
    model = smf.ols(formula, frame)
    if se == "conventional":
        fit = model.fit()
    elif se == "robust":
        fit = model.fit(cov_type="HC1")
    else:
        fit = model.fit(cov_type="cluster", cov_kwds={"groups": factorize(d[cluster])[0]})
    df = fit.df_resid if se != "cluster" else int(d[cluster].nunique()) - 1
    effect = Effect.from_normal("att", fit.params["gp"], fit.bse["gp"], alpha=alpha, df=df,
                                method="2x2 difference-in-differences (OLS)", inference=INFERENCE_2X2[se],
                                n_obs=int(fit.nobs), n_units=int(len(d)), n_treated=int(d[group].sum()),
                                indicator=indicator)
    return Estimates(effects=[effect], method=effect.method, model=fit,
                     plot_data=frame.groupby(["g", "p"])["y"].mean().rename("mean").reset_index())


# ----------------------------------------------------------------------------- TWFE

def twfe(data: pd.DataFrame, outcome: str, unit: str, time: str, treatment: str, *,
         cluster: str | None = None, weights: str | None = None, covariates: Sequence[str] = (),
         adjustment: str = "fixest", alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Two-way fixed effects: y_it = a_i + l_t + b D_it (+ covariates) + e_it.

    ``b`` is the ATT when effects are the same for every pilot and period; with staggered
    starts and growing effects it is a weighted average that can even take the wrong sign
    (see :mod:`evaluation.diagnostics.bacon`). Errors are clustered by ``cluster`` (default the unit;
    pass the county column to cluster by county) with the named small-sample adjustment
    (:mod:`evaluation.estimators.fixed_effects`; default fixest's). ``weights`` (e.g. population)
    gives weighted least squares.
    """
    cluster = cluster or unit
    d = _check(data, unit, time, outcome, treatment,
               needed=list(covariates) + [cluster] + ([weights] if weights else []))
    if weights and not (d[weights] > 0).all():
        raise EstimationError(f"weights '{weights}' must be positive")
    names = [treatment, *covariates]
    fit = fe_ols(d[outcome].to_numpy(float), d[names].to_numpy(float), names,
                 [factorize(d[unit])[0], factorize(d[time])[0]], factorize(d[cluster])[0],
                 weights=d[weights].to_numpy(float) if weights else None, adjustment=adjustment)
    treated_units = d.loc[d[treatment] != 0, unit].nunique()
    method = "two-way fixed effects (unit and period)" + (" WLS" if weights else "")
    effect = _effect(fit, treatment, "att", method=method, n_units=d[unit].nunique(), n_treated=treated_units,
                     alpha=alpha, indicator=indicator)
    return Estimates(effects=[effect], method=method, model=fit,
                     diagnostics={"dropped_missing_rows": int(len(data) - len(d)), "clusters": fit.n_clusters})


# ----------------------------------------------------------------------------- event study

def event_study(data: pd.DataFrame, outcome: str, unit: str, time: str, first_treat: str, *,
                leads: int = 6, lags: int = 12, bin_endpoints: bool = True, reference: int = -1,
                cluster: str | None = None, weights: str | None = None, adjustment: str = "fixest",
                alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Leads and lags of the pilot start in a two-way fixed-effects regression.

    ``first_treat`` is the first treated period on the ``time`` scale (0 or missing for
    never-treated units). Event times from -``leads`` to ``lags`` get one coefficient each,
    relative to ``reference`` (-1, the last pre-period). With ``bin_endpoints`` the end
    points collect everything beyond them (-leads collects all earlier periods, lags all
    later ones); without, observations outside the window are dropped. The joint Wald
    test of all leads (k < -1) is the pre-trend test. Coefficients are ATTs at each event
    time under parallel trends and homogeneous effects across cohorts (Sun and Abraham
    2021 show what they average otherwise).
    """
    cluster = cluster or unit
    d = _check(data, unit, time, outcome, None, needed=[cluster] + ([weights] if weights else []))
    ft = d[first_treat].fillna(0).astype(float)
    treated = ft > 0
    if not treated.any():
        raise EstimationError("no treated units: every first_treat is 0 or missing")
    if treated.all():
        raise EstimationError("no comparison units: every unit has a first_treat")
    rel = (d[time].astype(float) - ft).where(treated)
    if bin_endpoints:
        rel = rel.clip(lower=-leads, upper=lags)
    else:
        d, rel = d[~treated | rel.between(-leads, lags)], rel[~treated | rel.between(-leads, lags)]
    rel_values = rel.to_numpy(float)
    present = set(np.unique(rel_values[~np.isnan(rel_values)]).astype(int))
    event_times = [k for k in range(-leads, lags + 1) if k != reference and k in present]
    lookup = np.full(leads + lags + 1, -1)  # event time + leads -> column (-1: reference)
    for j, k in enumerate(event_times):
        lookup[k + leads] = j
    X = np.zeros((len(rel_values), len(event_times)), order="F")
    rows = np.flatnonzero(~np.isnan(rel_values))
    cols = lookup[rel_values[rows].astype(int) + leads]
    X[rows[cols >= 0], cols[cols >= 0]] = 1.0
    names = [f"k={k}" for k in event_times]
    fit = fe_ols(d[outcome].to_numpy(float), X, names, [factorize(d[unit])[0], factorize(d[time])[0]],
                 factorize(d[cluster])[0], weights=d[weights].to_numpy(float) if weights else None,
                 adjustment=adjustment)
    method = "event study (two-way fixed effects)"
    n_units, n_treated = d[unit].nunique(), d.loc[rel.notna(), unit].nunique()
    effects = [_effect(fit, nm, "att_event_time", term=nm, method=method, n_units=n_units, n_treated=n_treated,
                       alpha=alpha, indicator=indicator) for nm in names]
    pre = [nm for nm, k in zip(names, event_times, strict=True) if k < reference]
    diagnostics = {"reference": reference, "binned": bin_endpoints}
    treated_clusters = d.loc[rel.notna(), cluster].nunique()
    if pre and len(pre) < treated_clusters:
        F, p, q = fit.wald(pre)
        diagnostics.update(pretrend_F=F, pretrend_p=p, pretrend_df=q)
    elif pre:
        # the leads' covariance rests on the treated clusters alone: with as many leads as
        # treated clusters it is singular in effect and the F statistic explodes
        diagnostics.update(pretrend_F=np.nan, pretrend_p=np.nan, pretrend_df=len(pre),
                           pretrend_note=f"{len(pre)} leads but {treated_clusters} treated clusters: "
                                         "the joint test is not reliable; use fewer leads")
    plot = pd.DataFrame([{"event_time": int(e.term[2:]), "estimate": e.estimate, "ci_low": e.ci_low,
                          "ci_high": e.ci_high} for e in effects]
                        + [{"event_time": reference, "estimate": 0.0, "ci_low": 0.0, "ci_high": 0.0}])
    return Estimates(effects=effects, method=method, model=fit, diagnostics=diagnostics,
                     plot_data=plot.sort_values("event_time").reset_index(drop=True))


# ----------------------------------------------------------------------------- Poisson

def poisson_did(data: pd.DataFrame, count: str, unit: str, time: str, treatment: str, *,
                exposure: str | None = None, cluster: str | None = None, adjustment: str = "fixest",
                alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """Poisson (PPML) DiD for counts: log E[y_it] = a_i + l_t + b D_it + log(exposure_it).

    ``exposure`` is the denominator (population, or the count a share is taken of), so a
    changing population changes the expected count, not the effect. exp(b) is the rate
    ratio of pilot townships after the start against their counterfactual, under parallel
    trends in the log rate; PPML is consistent without assuming a Poisson variance
    (Santos Silva and Tenreyro 2006). Reported as the rate ratio and as the percent change.
    """
    cluster = cluster or unit
    d = _check(data, unit, time, count, treatment, needed=[cluster] + ([exposure] if exposure else []))
    if (d[count] < 0).any():
        raise EstimationError(f"the count '{count}' has negative values")
    if exposure and not (d[exposure] > 0).all():
        raise EstimationError(f"the exposure '{exposure}' must be positive in every row")
    fit = fe_poisson(d[count].to_numpy(float), d[[treatment]].to_numpy(float), [treatment],
                     [factorize(d[unit])[0], factorize(d[time])[0]], factorize(d[cluster])[0],
                     offset=np.log(d[exposure].to_numpy(float)) if exposure else None, adjustment=adjustment)
    method = "Poisson (PPML) DiD with unit and period effects" + (f", offset log({exposure})" if exposure else "")
    n_units, n_treated = d[unit].nunique(), d.loc[d[treatment] != 0, unit].nunique()
    log_effect = _effect(fit, treatment, "att", method=method, n_units=n_units, n_treated=n_treated, alpha=alpha,
                         indicator=indicator, scale="log")
    rate_ratio = log_effect.exp()
    percent = Effect(estimand="att", estimate=100 * (rate_ratio.estimate - 1), std_error=100 * rate_ratio.std_error,
                     ci_low=100 * (rate_ratio.ci_low - 1), ci_high=100 * (rate_ratio.ci_high - 1),
                     p_value=rate_ratio.p_value, method=method, inference=rate_ratio.inference,
                     n_obs=fit.n_obs, n_units=n_units, n_treated=n_treated, scale="percent_change",
                     indicator=indicator, alpha=alpha)
    return Estimates(effects=[rate_ratio, percent, log_effect], method=method, model=fit,
                     diagnostics={"dropped_all_zero_rows": fit.dropped["all_zero_groups_rows"]})


# ----------------------------------------------------------------------------- heterogeneity

def effects_by_group(data: pd.DataFrame, outcome: str, unit: str, time: str, treatment: str,
                     by: str | Sequence[str], *, cluster: str | None = None, weights: str | None = None,
                     adjustment: str = "fixest", alpha: float = 0.05, indicator: str | None = None) -> Estimates:
    """TWFE with the treatment split by ``by`` (the integration model, the cohort, or
    both: ``by=["model", "cohort"]`` fits one regression per column): an ATT per group,
    each against the same comparison townships. Terms read ``model=托管``."""
    cluster = cluster or unit
    columns = [by] if isinstance(by, str) else list(by)
    d = _check(data, unit, time, outcome, treatment, needed=[cluster] + ([weights] if weights else []))
    effects, fits = [], {}
    for column in columns:
        groups = sorted(d.loc[d[treatment] != 0, column].dropna().astype(str).unique())
        if not groups:
            raise EstimationError(f"'{column}' is missing for every treated row")
        labels = d[column].astype(str)
        X = np.column_stack([(d[treatment].to_numpy(float) * (labels == g).to_numpy()) for g in groups])
        names = [f"{column}={g}" for g in groups]
        fit = fe_ols(d[outcome].to_numpy(float), X, names, [factorize(d[unit])[0], factorize(d[time])[0]],
                     factorize(d[cluster])[0], weights=d[weights].to_numpy(float) if weights else None,
                     adjustment=adjustment)
        fits[column] = fit
        method = f"two-way fixed effects, ATT by {column}"
        for g, nm in zip(groups, names, strict=True):
            n_treated = d.loc[(d[treatment] != 0) & (labels == g), unit].nunique()
            effects.append(_effect(fit, nm, "att", term=nm, method=method, n_units=d[unit].nunique(),
                                   n_treated=n_treated, alpha=alpha, indicator=indicator))
    return Estimates(effects=effects, method="two-way fixed effects, ATT by " + " and by ".join(columns),
                     model=fits)
