"""Designs for one pilot township, or pilots chosen for being different: synthetic control
and synthetic difference-in-differences.

Synthetic control (Abadie, Diamond and Hainmueller 2010, JASA 105:493-505; Abadie 2021,
J Econ Lit 59:391-425): the pilot's counterfactual is a weighted average of non-pilot
townships (donors), weights non-negative and summing to one, chosen so that the
synthetic township reproduces the pilot's pre-period outcomes (or, with predictors, a
set of pre-period characteristics weighted by the nested predictor-weight optimisation).
The effect at each post period is the gap between the pilot and its synthetic twin.
Assumption: the pilot's untreated path is the same weighted combination of the donors'
after the start as before it (a factor model the donors span); it fails when the pilot
lies outside the donors' convex hull, which a poor pre-period fit shows. Inference is by
placebo in space: every donor in turn is the fake pilot, and the pilot's post/pre
RMSPE ratio is ranked among theirs.

Synthetic difference-in-differences (Arkhangelsky, Athey, Hirshberg, Imbens and Wager
2021, AER 111:4088-4118): unit weights that make the donors' pre-period path parallel
to the pilots' (with an intercept and a ridge penalty zeta = (N1 T1)^(1/4) sigma), time
weights that make the pre-periods resemble the post-period on average for the donors,
and a weighted DiD with those weights. Assumption: parallel trends holds after
re-weighting (weaker than SC's exact fit, weaker than DiD's unweighted parallel trends).
The weights are solved as the authors' ``synthdid`` package does (Frank-Wolfe with its
stopping rule and sparsification), so its numbers are reproduced.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import minimize, nnls

from evaluation.errors import EstimationError, PoorPreFitWarning, UnbalancedPanelError
from evaluation.estimators.fixed_effects import balanced_wide
from evaluation.estimators.staggered import _check_covariates
from evaluation.results import Effect, Estimates, vcov_frame

# ----------------------------------------------------------------------------- weights

def simplex_least_squares(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin ||A w - b|| over w >= 0, sum w = 1 (the synthetic-control weights).

    Solved as non-negative least squares with the adding-up constraint as a heavily
    weighted extra row (Lawson-Hanson active set; exact up to 1e-10 of the constraint).
    """
    A = np.asarray(A, float)
    b = np.asarray(b, float)
    scale = max(1.0, float(np.abs(A).max()), float(np.abs(b).max()))
    big = 1e5 * scale
    w, _ = nnls(np.vstack([A, np.full((1, A.shape[1]), big)]), np.concatenate([b, [big]]), maxiter=50 * A.shape[1])
    total = w.sum()
    if not total > 0:
        raise EstimationError("synthetic-control weights could not be found")
    return w / total


def frank_wolfe_weights(A: np.ndarray, b: np.ndarray, zeta: float, *, intercept: bool, start: np.ndarray | None = None,
                        min_decrease: float, max_iter: int) -> np.ndarray:
    """Simplex weights minimising zeta^2 |x|^2 + |A x - b|^2 / rows(A) (columns of A and b
    centred first when ``intercept``), by Frank-Wolfe with exact line search; stops when
    an iteration lowers the objective by less than ``min_decrease``^2 (``synthdid``'s
    ``sc.weight.fw``, Arkhangelsky et al. 2021, Algorithm 1)."""
    A = np.asarray(A, float)
    b = np.asarray(b, float)
    if intercept:
        A = A - A.mean(axis=0)
        b = b - b.mean()
    rows, cols = A.shape
    x = np.full(cols, 1.0 / cols) if start is None else np.asarray(start, float).copy()
    eta = rows * zeta**2
    # the Gram form: each step updates G x and three scalars in O(cols)
    G, Ab, bb = A.T @ A, A.T @ b, float(b @ b)
    Gx = G @ x
    xx, xGx, xAb = float(x @ x), float(x @ Gx), float(x @ Ab)
    zeta2, threshold = zeta**2, min_decrease**2
    previous = math.inf
    for t in range(max_iter):
        i = int(np.argmin(Gx - Ab + eta * x))
        xi, Gxi, Gii = float(x[i]), float(Gx[i]), float(G[i, i])
        # direction e_i - x: error change d = A_i - A x
        d_dot_r = (Gxi - Ab[i]) - (xGx - xAb)
        d_dot_d = Gii - 2 * Gxi + xGx
        x_dot_dx, dx_dot_dx = xi - xx, xx - 2 * xi + 1.0
        if dx_dot_dx > 0:
            step = -(d_dot_r + eta * x_dot_dx) / (d_dot_d + eta * dx_dot_dx)
            step = min(1.0, max(0.0, step))
            if step > 0:
                keep = 1.0 - step
                xx = keep * keep * xx + 2 * step * keep * xi + step * step
                xGx = keep * keep * xGx + 2 * step * keep * Gxi + step * step * Gii
                xAb = keep * xAb + step * Ab[i]
                x *= keep
                x[i] += step
                Gx *= keep
                Gx += step * G[:, i]
        value = zeta2 * xx + (xGx - 2 * xAb + bb) / rows
        if t >= 1 and previous - value <= threshold:
            break
        previous = value
    return x


def _sparsify(v: np.ndarray) -> np.ndarray:
    v = np.where(v <= v.max() / 4, 0.0, v)
    return v / v.sum()


def synthdid_weights(Y: np.ndarray, n_control: int, n_pre: int, kind: str = "sdid") -> tuple[np.ndarray, np.ndarray]:
    """Unit weights (controls) and time weights (pre-periods) of ``kind``: "sdid"
    (synthetic DiD), "sc" (synthetic control: no intercept, no time weights) or "did"
    (uniform). ``Y``: units x periods, the ``n_control`` controls first, the
    ``n_pre`` pre-periods first (``synthdid``'s conventions and defaults)."""
    N, T = Y.shape
    N0, T0 = n_control, n_pre
    N1, T1 = N - N0, T - T0
    if kind == "did":
        return np.full(N0, 1.0 / N0), np.full(T0, 1.0 / T0)
    noise = float(np.std(np.diff(Y[:N0, :T0], axis=1), ddof=1)) if T0 > 1 else 1.0
    min_decrease, max_iter = 1e-5 * noise, 10_000
    collapsed = np.empty((N0 + 1, T0 + 1))
    collapsed[:N0, :T0] = Y[:N0, :T0]
    collapsed[:N0, T0] = Y[:N0, T0:].mean(axis=1)
    collapsed[N0, :T0] = Y[N0:, :T0].mean(axis=0)
    collapsed[N0, T0] = Y[N0:, T0:].mean()

    def solve(A, b, zeta, intercept):
        first = frank_wolfe_weights(A, b, zeta, intercept=intercept, min_decrease=min_decrease, max_iter=100)
        return frank_wolfe_weights(A, b, zeta, intercept=intercept, start=_sparsify(first),
                                   min_decrease=min_decrease, max_iter=max_iter)

    if kind == "sc":
        omega = solve(collapsed[:N0, :T0].T, collapsed[N0, :T0], 1e-6 * noise, False)
        return omega, np.zeros(T0)
    if kind != "sdid":
        raise EstimationError(f"kind must be 'sdid', 'sc' or 'did', got {kind!r}")
    lam = solve(collapsed[:N0, :T0], collapsed[:N0, T0], 1e-6 * noise, True)
    zeta_omega = (N1 * T1) ** 0.25 * noise
    omega = solve(collapsed[:N0, :T0].T, collapsed[N0, :T0], zeta_omega, True)
    return omega, lam


def synthdid_estimate(Y: np.ndarray, n_control: int, n_pre: int, kind: str = "sdid") -> dict:
    """The weighted DiD of ``kind`` on a units x periods matrix (controls first,
    pre-periods first): (mean treated - omega'controls) over the post-periods minus the
    same with the time weights over the pre-periods. ``kind="sc"`` is the synthetic
    control in synthdid's form (the mean post-period gap); "did" is the plain DiD."""
    Y = np.asarray(Y, float)
    N0, T0 = n_control, n_pre
    omega, lam = synthdid_weights(Y, N0, T0, kind)
    treated, controls = Y[N0:].mean(axis=0), omega @ Y[:N0]
    gap = treated - controls
    tau = gap[T0:].mean() - lam @ gap[:T0]
    return {"estimate": float(tau), "omega": omega, "lambda": lam, "gap": gap, "treated": treated,
            "synthetic": controls}


# ----------------------------------------------------------------------------- inputs

def _wide(data: pd.DataFrame, outcome: str, unit: str, time: str, cohort: str, method: str):
    """The outcome as a complete unit x period matrix; a township lacking a period or a
    value raises :class:`UnbalancedPanelError` naming ``method`` and the townships (the
    weights are fitted on every pre-period of every donor: drop or impute them first)."""
    try:
        Y, units, periods = balanced_wide(data, outcome, unit, time, method=method)
    except UnbalancedPanelError as exc:
        exc.args = (f"'{outcome}': {exc} (synthetic control needs every township in every period)",)
        raise
    ft = data.groupby(unit)[cohort].first().reindex(units).fillna(0).to_numpy(float)
    return Y, units, periods, ft


def _pre_post(periods: np.ndarray, start: float, min_pre: int) -> int:
    T0 = int(np.searchsorted(periods, start))
    if T0 < min_pre:
        raise EstimationError(f"only {T0} pre-period(s) before the start {start:g}; at least {min_pre} are needed "
                              "to fit the weights")
    if T0 >= len(periods):
        raise EstimationError(f"the start {start:g} is after the last period: no post-period")
    return T0


def _check_fit(y1_pre: np.ndarray, donors_pre: np.ndarray, synthetic_pre: np.ndarray, label: str) -> dict:
    """Convex-hull and pre-fit diagnostics; a warning when the pilot lies outside the hull."""
    above = np.mean(y1_pre > donors_pre.max(axis=0))
    below = np.mean(y1_pre < donors_pre.min(axis=0))
    rmspe = float(np.sqrt(np.mean((y1_pre - synthetic_pre) ** 2)))
    spread = float(np.std(y1_pre, ddof=1)) if len(y1_pre) > 1 else math.nan
    outside = max(above, below)
    poor = outside > 0.5 or (np.isfinite(spread) and spread > 0 and rmspe > spread)
    if poor:
        warnings.warn(f"{label}: the pilot lies outside the donors' range in {outside:.0%} of pre-periods and the "
                      f"pre-period RMSPE is {rmspe:.3g} (the pilot's own pre-period SD is {spread:.3g}); the "
                      "synthetic control extrapolates and its effect should not be reported on its own",
                      PoorPreFitWarning, stacklevel=3)
    return {"pre_rmspe": rmspe, "share_pre_outside_hull": float(outside), "poor_pre_fit": bool(poor)}


# ----------------------------------------------------------------------------- synthetic control

def _predictor_weights(X1: np.ndarray, X0: np.ndarray, y1_pre: np.ndarray, Y0_pre: np.ndarray,
                       fixed: np.ndarray | None = None) -> tuple:
    """Nested optimisation (Abadie, Diamond and Hainmueller 2010): predictor weights V
    (diagonal, summing to one) minimising the pre-period outcome MSPE of the synthetic
    control whose donor weights minimise the V-weighted predictor distance
    sum_k v_k (X1_k - X0_k w)^2. Predictors are divided by their SD across the pilot and
    the donors (ddof 1). V is found as pysyncon 1.7's ``Synth.fit`` defaults do:
    Nelder-Mead (at most 1000 iterations) over x with V = |x| / sum |x|, from equal
    weights; the inner problem is solved exactly (:func:`simplex_least_squares`;
    pysyncon uses SLSQP). ``fixed``: a given V (pysyncon's ``custom_V``, Stata synth's
    ``customV``), normalised to sum to one; only W is then solved."""
    sd = np.concatenate([X1[:, None], X0], axis=1).std(axis=1, ddof=1)
    sd[sd == 0] = 1.0
    Z1, Z0 = X1 / sd, X0 / sd[:, None]
    k = len(X1)

    def weights_for(x):
        v = np.abs(np.asarray(x, float))
        v = v / v.sum()
        r = np.sqrt(v)
        return simplex_least_squares(Z0 * r[:, None], Z1 * r), v

    def loss(x):
        if not np.abs(x).sum() > 0:
            return math.inf
        w, _ = weights_for(x)
        return float(np.mean((y1_pre - w @ Y0_pre) ** 2))

    if fixed is not None:
        return weights_for(fixed)
    start = np.full(k, 1.0 / k)
    x = start if k == 1 else minimize(loss, start, method="Nelder-Mead", options={"maxiter": 1000}).x
    return weights_for(x)


def _sc_fit(y1: np.ndarray, Y0: np.ndarray, T0: int, X1=None, X0=None,
            fixed_v: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Donor weights, and the predictor weights when there are predictors."""
    if X1 is None:
        return simplex_least_squares(Y0[:, :T0].T, y1[:T0]), None
    return _predictor_weights(X1, X0, y1[:T0], Y0[:, :T0], fixed_v)


def _gap_stats(gap: np.ndarray, T0: int) -> tuple[float, float, float]:
    pre = float(np.sqrt(np.mean(gap[:T0] ** 2)))
    post = float(np.sqrt(np.mean(gap[T0:] ** 2)))
    return float(gap[T0:].mean()), pre, post


def synthetic_control(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                      pilot=None, covariates: Sequence[str] = (), predictors: list[str] | None = None,
                      predictor_weights: Sequence[float] | None = None, donors: list | None = None,
                      placebo: bool = True, max_pre_rmspe_ratio: float | None = None, alpha: float = 0.05,
                      min_pre_periods: int = 5, indicator: str | None = None) -> Estimates:
    """Synthetic control for one pilot township (Abadie, Diamond and Hainmueller 2010).

    ``cohort``: the first treated period on the ``time`` scale (0 or missing: never).
    ``pilot``: the township (default: the only one with a cohort). Donors: the
    townships never treated (other pilots are left out), or ``donors``. Without
    ``covariates`` the weights fit the pilot's pre-period outcomes directly.

    With ``covariates`` (township characteristics or time-varying controls; ``predictors``
    is the older name of the same list) the donor weights match predictors (ADH 2010,
    sec. 2-3): each covariate's mean over the pilot's pre-period, per township, beside
    the pre-period outcomes, entered as the outcome's mean over each third of the
    pre-period (early, middle, late: one predictor per period when there are fewer than
    three; ADH 2010 used three pre-period years of cigarette sales). The predictor weights
    V minimise the pre-period outcome MSPE (the nested optimisation, as pysyncon's
    ``Synth.fit`` defaults: see :func:`_predictor_weights`), or are given as
    ``predictor_weights`` (one per predictor in the order of
    ``diagnostics["predictor_weights"]``: the covariates, then the three outcome
    means). Each placebo re-runs the same procedure (with a given V, that V).
    Assumption as without covariates, with the pilot's untreated path now spanned by
    donors that also resemble it in the characteristics. A covariate missing in a row
    with the outcome, non-numeric, or constant is an
    :class:`evaluation.errors.EstimationError` naming it.

    Returns the ATT (mean post-period gap) with placebo-in-space inference: every donor
    as the fake pilot (fitted from the other donors); the p-value is the pilot's rank of
    the post/pre RMSPE ratio, (1 + #placebos with a ratio at least as large) / (1 +
    #placebos); the interval is the ATT minus the placebo ATTs' quantiles and the
    "standard error" their SD. ``max_pre_rmspe_ratio`` drops placebos whose pre-period
    RMSPE exceeds that multiple of the pilot's (ADH 2010 use 5) from the interval.
    ``plot_data``: the pilot, its synthetic twin and the gap by period;
    ``diagnostics["weights"]`` the donor weights, ``diagnostics["placebo_gaps"]`` the
    placebo gap paths (long), and the pre-fit checks.
    """
    Y, units, periods, ft = _wide(data, outcome, unit, time, cohort, "synthetic_control")
    pilots = units[ft > 0]
    if pilot is None:
        if len(pilots) != 1:
            raise EstimationError(f"{len(pilots)} pilot townships: name one with pilot=, or use "
                                  "synthetic_control_by_pilot() for each")
        pilot = pilots[0]
    where = np.flatnonzero(units == pilot)
    if len(where) == 0:
        raise EstimationError(f"pilot township {pilot!r} is not in the panel")
    p = int(where[0])
    if not ft[p] > 0:
        raise EstimationError(f"township {pilot!r} has no start ('{cohort}' is empty or 0)")
    donor_mask = (ft == 0) if donors is None else np.isin(units, list(donors))
    donor_mask[p] = False
    if donor_mask.sum() < 2:
        raise EstimationError(f"{int(donor_mask.sum())} donor township(s): synthetic control needs at least two "
                              "never-treated townships")
    T0 = _pre_post(periods, ft[p], min_pre_periods)
    Y0, donor_ids = Y[donor_mask], units[donor_mask]
    covariates = list(dict.fromkeys([*covariates, *(predictors or [])]))
    X, predictor_names, fixed_v = None, [], None
    if covariates:
        X, predictor_names = _predictor_table(data, covariates, Y, units, periods, T0, outcome=outcome, unit=unit,
                                              time=time)
        if predictor_weights is not None:
            fixed_v = np.asarray(predictor_weights, float)
            if fixed_v.shape != (len(predictor_names),) or (fixed_v < 0).any() or not fixed_v.sum() > 0:
                raise EstimationError(f"predictor_weights must be {len(predictor_names)} non-negative numbers (not "
                                      f"all zero), one for each of {predictor_names}")
    elif predictor_weights is not None:
        raise EstimationError("predictor_weights needs covariates (the predictors they weight)")
    label = f"synthetic control of {pilot} ({outcome})"
    X0 = None if X is None else X[:, donor_mask]
    w, v = _sc_fit(Y[p], Y0, T0, None if X is None else X[:, p], X0, fixed_v)
    synthetic = w @ Y0
    gap = Y[p] - synthetic
    att, pre_rmspe, post_rmspe = _gap_stats(gap, T0)
    fit = _check_fit(Y[p, :T0], Y0[:, :T0], synthetic[:T0], label)
    ratio = post_rmspe / pre_rmspe if pre_rmspe > 0 else math.inf
    placebo_rows, placebo_att, placebo_ratio, placebo_pre = [], [], [], []
    if placebo:
        for j in range(len(donor_ids)):
            others = np.arange(len(donor_ids)) != j
            wj, _ = _sc_fit(Y0[j], Y0[others], T0, None if X0 is None else X0[:, j],
                            None if X0 is None else X0[:, others], fixed_v)
            gj = Y0[j] - wj @ Y0[others]
            a, pre_j, post_j = _gap_stats(gj, T0)
            placebo_att.append(a)
            placebo_pre.append(pre_j)
            placebo_ratio.append(post_j / pre_j if pre_j > 0 else math.inf)
            placebo_rows.append(pd.DataFrame({"township": donor_ids[j], "period": periods, "gap": gj}))
    placebo_att, placebo_ratio, placebo_pre = map(np.asarray, (placebo_att, placebo_ratio, placebo_pre))
    if placebo and len(placebo_att):
        p_value = float((1 + np.sum(placebo_ratio >= ratio)) / (1 + len(placebo_ratio)))
        keep = np.ones(len(placebo_att), bool)
        if max_pre_rmspe_ratio is not None:
            keep = placebo_pre <= max_pre_rmspe_ratio * pre_rmspe
        band = placebo_att[keep]
        if len(band) < 2:
            raise EstimationError(f"only {len(band)} placebo(s) fit well enough for the interval; "
                                  "raise max_pre_rmspe_ratio")
        sd = float(np.std(band, ddof=1))
        low, high = att - np.quantile(band, 1 - alpha / 2), att - np.quantile(band, alpha / 2)
        inference = (f"placebo in space: {len(placebo_att)} donors as fake pilots; p from the post/pre RMSPE "
                     f"ratio rank; interval from {len(band)} placebo ATTs")
    else:
        p_value = sd = low = high = math.nan
        inference = "no inference (placebo=False)"
    effect = Effect(estimand="att", estimate=att, std_error=sd, ci_low=float(low), ci_high=float(high),
                    p_value=p_value, method=("synthetic control" + (" with predictors" if X is not None else "")),
                    inference=inference, n_obs=int(Y[p].size + Y0.size), n_units=len(donor_ids) + 1, n_treated=1,
                    term=str(pilot), indicator=indicator, alpha=alpha, unit=str(pilot), cohort=float(ft[p]),
                    p_floor=1 / (1 + len(placebo_ratio)) if placebo and len(placebo_att) else None,
                    extra={"pre_rmspe": pre_rmspe, "post_rmspe": post_rmspe, "rmspe_ratio": ratio})
    weights = (pd.DataFrame({"township": donor_ids, "weight": w}).sort_values("weight", ascending=False)
               .reset_index(drop=True))
    plot = pd.DataFrame({"period": periods, "pilot": Y[p], "synthetic": synthetic, "gap": gap,
                         "post": np.arange(len(periods)) >= T0})
    diagnostics = {"pilot": pilot, "pre_periods": T0, "donors": len(donor_ids), **fit, "post_rmspe": post_rmspe,
                   "rmspe_ratio": ratio, "weights": weights,
                   "placebo_gaps": pd.concat(placebo_rows, ignore_index=True) if placebo_rows else pd.DataFrame(),
                   "placebos": pd.DataFrame({"township": donor_ids, "att": placebo_att, "pre_rmspe": placebo_pre,
                                             "rmspe_ratio": placebo_ratio}) if placebo else pd.DataFrame()}
    if v is not None:
        x1, x0 = X[:, p], X0 @ w
        diagnostics["predictor_weights"] = pd.DataFrame({"predictor": predictor_names, "weight": v, "pilot": x1,
                                                         "synthetic": x0, "donor_mean": X0.mean(axis=1)})
    return Estimates(effects=[effect], method=effect.method, plot_data=plot, diagnostics=diagnostics,
                     kind="synthetic_control", wald=False)


def _predictor_table(data: pd.DataFrame, covariates: list[str], Y: np.ndarray, units: np.ndarray,
                     periods: np.ndarray, T0: int, *, outcome: str, unit: str, time: str) -> tuple[np.ndarray, list]:
    """The predictors (k x units): each covariate's mean over the first ``T0`` periods,
    then the outcome's mean over each third of them; and their names."""
    missing = [c for c in covariates if c not in data.columns]
    if missing:
        raise EstimationError(f"covariates not in the data: {missing}")
    d = data.loc[data[outcome].notna(), [unit, time, *covariates]]
    _check_covariates(d, covariates, unit=unit)
    pre = d[d[time].isin(periods[:T0])]
    table = pre.groupby(unit)[covariates].mean().reindex(units)
    for c in covariates:
        if table[c].isna().any():
            raise EstimationError(f"covariate '{c}' has no pre-period value for {unit} "
                                  f"{table.index[table[c].isna()][0]!r}")
    blocks = np.array_split(np.arange(T0), min(3, T0))
    outcome_means = np.column_stack([Y[:, b].mean(axis=1) for b in blocks])
    names = list(covariates) + [f"{outcome} (mean {_label(periods[b[0]])}" + (
        f" to {_label(periods[b[-1]])})" if len(b) > 1 else ")") for b in blocks]
    return np.column_stack([table.to_numpy(float), outcome_means]).T, names


def _label(x) -> str:
    return str(x.item() if hasattr(x, "item") else x)


def synthetic_control_by_pilot(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                               covariates: Sequence[str] = (), predictors: list[str] | None = None,
                               donors: list | None = None,
                               placebo: bool = True, max_pre_rmspe_ratio: float | None = None,
                               alpha: float = 0.05, min_pre_periods: int = 5,
                               indicator: str | None = None) -> Estimates:
    """:func:`synthetic_control` for each pilot township in turn (donors: never treated,
    or ``donors``; the other options as there), one ``att_township`` effect per pilot with
    the township in ``unit`` and its start in ``cohort``, so a report can name which
    township moved. Same assumption, ``covariates`` and inference as :func:`synthetic_control`."""
    pilots = data.loc[data[cohort].fillna(0) > 0, unit].unique()
    if len(pilots) == 0:
        raise EstimationError(f"no pilot township (no row has a '{cohort}')")
    effects, fits = [], {}
    for pilot in sorted(pilots):
        fit = synthetic_control(data, outcome=outcome, unit=unit, time=time, cohort=cohort, pilot=pilot,
                                covariates=covariates, predictors=predictors, donors=donors, placebo=placebo,
                                max_pre_rmspe_ratio=max_pre_rmspe_ratio, alpha=alpha,
                                min_pre_periods=min_pre_periods, indicator=indicator)
        e = fit.effects[0]
        effects.append(Effect(**{**e.__dict__, "estimand": "att_township"}))
        fits[pilot] = fit
    return Estimates(effects=effects, method="synthetic control, each pilot township",
                     plot_data=pd.concat([f.plot_data.assign(township=k) for k, f in fits.items()], ignore_index=True),
                     diagnostics={"pilots": len(fits)}, model=fits, kind="synthetic_control_by_pilot", wald=False)


# ----------------------------------------------------------------------------- synthetic DiD

def _cohort_blocks(Y: np.ndarray, ft: np.ndarray, periods: np.ndarray, min_pre: int):
    controls = np.flatnonzero(ft == 0)
    if len(controls) < 2:
        raise EstimationError(f"{len(controls)} never-treated township(s): synthetic DiD needs at least two")
    blocks = []
    for g in np.unique(ft[ft > 0]):
        treated = np.flatnonzero(ft == g)
        T0 = _pre_post(periods, g, min_pre)
        blocks.append((g, treated, T0))
    return controls, blocks


def synthetic_did(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                  inference: Literal["placebo", "jackknife", "none"] = "placebo", draws: int = 200,
                  seed: int | None = None, alpha: float = 0.05, min_pre_periods: int = 2,
                  indicator: str | None = None) -> Estimates:
    """Synthetic difference-in-differences (Arkhangelsky et al. 2021).

    Each cohort (pilots sharing a start period ``cohort``; 0 or missing: never treated)
    is compared with the never-treated townships over all its periods; the overall ATT averages the cohorts' estimates
    weighted by their treated township-periods (N1 x T1), as in Clarke, Pailanir, Athey
    and Imbens (2023, Stata Journal, ``sdid``). ``inference``: ``"placebo"`` (the
    paper's Algorithm 4, for few pilots: ``draws`` times, never-treated townships drawn at
    random as fake cohorts of the same sizes, weights re-fitted; needs more never-treated
    than pilots), ``"jackknife"`` (Algorithm 3, leaving out one township at a time with the
    weights fixed; needs two or more pilots per cohort), or ``"none"``. The interval is
    normal. Effects: the overall ``att``, then one ``att_cohort`` per cohort (``cohort``).
    """
    if inference not in ("placebo", "jackknife", "none"):
        raise EstimationError(f"inference must be 'placebo', 'jackknife' or 'none', got {inference!r}")
    se, replications = inference, draws
    Y, units, periods, ft = _wide(data, outcome, unit, time, cohort, "synthetic_did")
    controls, blocks = _cohort_blocks(Y, ft, periods, min_pre_periods)
    T = len(periods)

    def estimate(ctrl: np.ndarray, cohorts: list, fixed: dict | None = None) -> tuple[float, list]:
        out = []
        for g, treated, T0 in cohorts:
            M = Y[np.concatenate([ctrl, treated])]
            if fixed is None:
                res = synthdid_estimate(M, len(ctrl), T0)
            else:
                omega = fixed[g]["omega"] / fixed[g]["omega"].sum()
                gap = M[len(ctrl):].mean(axis=0) - omega @ M[:len(ctrl)]
                res = {"estimate": float(gap[T0:].mean() - fixed[g]["lambda"] @ gap[:T0])}
            out.append((g, len(treated) * (T - T0), res))
        weight = np.array([w for _, w, _ in out], float)
        return float(weight @ np.array([r["estimate"] for *_, r in out]) / weight.sum()), out

    tau, parts = estimate(controls, blocks)
    n_treated = sum(len(t) for _, t, _ in blocks)
    rng = np.random.default_rng(seed)
    draws = np.array([])
    if se == "placebo":
        if len(controls) <= n_treated:
            raise EstimationError(f"placebo standard errors need more never-treated townships ({len(controls)}) "
                                  f"than pilots ({n_treated}); use inference='jackknife' or 'none'")
        draws = []
        for _ in range(replications):
            perm = rng.permutation(controls)
            fake, start, rest = [], 0, None
            for g, treated, T0 in blocks:
                fake.append((g, perm[start:start + len(treated)], T0))
                start += len(treated)
            rest = perm[start:]
            total, cohort_parts = estimate(rest, fake)
            draws.append([total] + [r["estimate"] for *_, r in cohort_parts])
        draws = np.asarray(draws)
        std_errors = np.sqrt((replications - 1) / replications) * np.std(draws, axis=0, ddof=1)
        centred = draws - draws.mean(axis=0)
        cov = centred.T @ centred / replications  # (B-1)/B times the sample covariance, as the SEs
        label = f"placebo standard error, {replications} draws (seed {seed})"
    elif se == "jackknife":
        if any(len(t) < 2 for _, t, _ in blocks):
            raise EstimationError("jackknife standard errors need at least two pilots in every cohort; "
                                  "use inference='placebo'")
        fixed = {g: {"omega": r["omega"], "lambda": r["lambda"]} for g, _, r in parts}
        values = []
        for drop in np.concatenate([controls, *[t for _, t, _ in blocks]]):
            ctrl_keep = controls != drop
            cohorts = [(g, t[t != drop], T0) for g, t, T0 in blocks]
            fixed_j = {g: {"omega": fixed[g]["omega"][ctrl_keep], "lambda": fixed[g]["lambda"]} for g in fixed}
            total, cohort_parts = estimate(controls[ctrl_keep], cohorts, fixed_j)
            values.append([total] + [r["estimate"] for *_, r in cohort_parts])
        values = np.asarray(values)
        n = len(values)
        std_errors = np.sqrt((n - 1) / n * np.sum((values - values.mean(axis=0)) ** 2, axis=0))
        centred = values - values.mean(axis=0)
        cov = (n - 1) / n * centred.T @ centred
        draws = values
        label = f"jackknife standard error ({n} townships left out in turn, weights fixed)"
    else:
        std_errors = np.full(1 + len(blocks), math.nan)
        cov = None
        label = "no standard error (inference='none')"
    method = "synthetic difference-in-differences"

    def effect(estimand: str, value: float, std_error: float, **counts) -> Effect:
        if np.isfinite(std_error) and std_error > 0:
            return Effect.from_normal(estimand, value, std_error, method=method, inference=label,
                                      indicator=indicator, alpha=alpha, **counts)
        return Effect(estimand=estimand, estimate=value, std_error=math.nan, ci_low=math.nan, ci_high=math.nan,
                      p_value=math.nan, method=method, inference=label, indicator=indicator, alpha=alpha,
                      **counts)

    effects = [effect("att", tau, float(std_errors[0]), n_obs=int((len(controls) + n_treated) * T),
                      n_units=len(controls) + n_treated, n_treated=n_treated)]
    rows, weight_rows = [], []
    for k, ((g, treated, T0), (_, _, res)) in enumerate(zip(blocks, parts, strict=True)):
        effects.append(effect("att_cohort", res["estimate"], float(std_errors[1 + k]), term=f"g={g:g}",
                              cohort=float(g),
                              n_obs=int((len(controls) + len(treated)) * T), n_units=len(controls) + len(treated),
                              n_treated=len(treated)))
        rows.append(pd.DataFrame({"cohort": g, "period": periods, "pilots": res["treated"],
                                  "synthetic": res["synthetic"], "post": np.arange(T) >= T0,
                                  "time_weight": np.concatenate([res["lambda"], np.full(T - T0, np.nan)])}))
        weight_rows.append(pd.DataFrame({"cohort": g, "township": units[controls], "weight": res["omega"]}))
    return Estimates(effects=effects, method=method, plot_data=pd.concat(rows, ignore_index=True),
                     kind="synthetic_did", vcov=None if cov is None else vcov_frame(cov, effects),
                     diagnostics={"cohorts": len(blocks), "never_treated": len(controls),
                                  "unit_weights": pd.concat(weight_rows, ignore_index=True),
                                  "cohort_weights": {g: w for g, w, _ in parts}, "se_draws": draws})


def synthetic_did_by_pilot(data: pd.DataFrame, *, outcome: str, unit: str, time: str, cohort: str,
                           draws: int = 200, seed: int | None = None, alpha: float = 0.05,
                           min_pre_periods: int = 2, indicator: str | None = None) -> Estimates:
    """Synthetic DiD (Arkhangelsky et al. 2021; assumption as :func:`synthetic_did`) for
    each pilot township alone against the never-treated townships, one ``att_township``
    effect per pilot (township in ``unit``, start in ``cohort``); ``draws`` placebo draws
    per cohort. Standard errors by the placebo method
    (Arkhangelsky et al. 2021, Algorithm 4, with one treated unit): never-treated
    townships drawn as fake pilots with the same start; the draws depend only on the
    start period, so they are computed once per cohort and shared by its pilots."""
    replications = draws
    Y, units, periods, ft = _wide(data, outcome, unit, time, cohort, "synthetic_did_by_pilot")
    controls, blocks = _cohort_blocks(Y, ft, periods, min_pre_periods)
    if len(controls) < 3:
        raise EstimationError("placebo standard errors for one pilot need at least three never-treated townships")
    rng = np.random.default_rng(seed)
    effects, rows = [], []
    for g, treated, T0 in blocks:
        values = []
        for _ in range(replications):
            fake = rng.choice(len(controls), size=1, replace=False)[0]
            rest = np.delete(controls, fake)
            values.append(synthdid_estimate(Y[np.concatenate([rest, [controls[fake]]])], len(rest), T0)["estimate"])
        std_error = float(np.sqrt((replications - 1) / replications) * np.std(values, ddof=1))
        for i in treated:
            res = synthdid_estimate(Y[np.concatenate([controls, [i]])], len(controls), T0)
            effects.append(Effect.from_normal(
                "att_township", res["estimate"], std_error, alpha=alpha, method="synthetic difference-in-differences",
                inference=f"placebo standard error for one pilot starting at {g:g}, {replications} draws (seed {seed})",
                n_obs=int((len(controls) + 1) * len(periods)), n_units=len(controls) + 1, n_treated=1,
                term=str(units[i]), indicator=indicator, unit=str(units[i]), cohort=float(g)))
            rows.append(pd.DataFrame({"township": units[i], "period": periods, "pilot": res["treated"],
                                      "synthetic": res["synthetic"], "post": np.arange(len(periods)) >= T0}))
    return Estimates(effects=effects, method="synthetic difference-in-differences, each pilot township",
                     plot_data=pd.concat(rows, ignore_index=True), diagnostics={"pilots": len(effects)},
                     kind="synthetic_did_by_pilot")
