"""How far does a DiD conclusion survive a violation of parallel trends? Honest
confidence sets of Rambachan and Roth (2023, Rev Econ Stud 90:2555-2591).

An event study's coefficients are beta = tau + delta: the effect plus a bias delta that
parallel trends says is zero after the start and that the pre-period coefficients
reveal before it. Instead of assuming delta_post = 0, the analyst bounds how far it can
depart from the pre-period's behaviour, and gets a confidence set for theta = l' tau_post
(by default the first post-period effect, as the authors' HonestDiD package):

* relative magnitudes, Delta^RM(Mbar): no post-period change in the bias
  |delta_{t+1} - delta_t| exceeds Mbar times the largest pre-period change. Confidence
  set by the conditional-least-favourable hybrid test of Andrews, Roth and Pakes (2023,
  Rev Econ Stud) over a grid of theta, as the union over which pre-period change is the
  largest and its sign ("C-LF", the package's default).
* smoothness, Delta^SD(M): the slope of the bias changes by at most M per period (M = 0:
  a linear trend extrapolated from the pre-period). Confidence set: the optimal
  fixed-length interval around an affine estimator ("FLCI", the package's default).

The breakdown value is the largest Mbar (or M) at which the confidence set still
excludes zero. The implementation follows HonestDiD (R) and its port in ``moderndid``;
the relative-magnitude sets use 1,000 simulated draws for the least-favourable critical
value (seeded), so their ends move by about 1e-4 with the seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import optimize, stats

from evaluation.errors import EstimationError
from evaluation.results import Effect, Estimates


def _post_weights(l_post, n_post: int) -> np.ndarray:
    if l_post is None:
        out = np.zeros(n_post)
        out[0] = 1.0
        return out
    out = np.asarray(l_post, float).ravel()
    if len(out) != n_post:
        raise EstimationError(f"l_post has {len(out)} weights for {n_post} post-periods")
    return out


def _check(beta, sigma, n_pre: int, n_post: int):
    beta = np.asarray(beta, float).ravel()
    sigma = np.asarray(sigma, float)
    if len(beta) != n_pre + n_post or sigma.shape != (len(beta), len(beta)):
        raise EstimationError(f"{len(beta)} coefficients and a {sigma.shape} covariance for {n_pre} pre- and "
                              f"{n_post} post-periods")
    if not np.allclose(sigma, sigma.T, atol=1e-12 * max(1.0, np.abs(sigma).max())):
        raise EstimationError("the covariance matrix is not symmetric")
    return beta, sigma


# ----------------------------------------------------------------------------- smoothness: FLCI

def _folded_normal_quantile(p: float, mu: float) -> float:
    """p-quantile of |N(mu, 1)| (cv_alpha in Rambachan and Roth)."""
    mu = abs(mu)
    if mu == 0:
        return float(stats.halfnorm.ppf(p))

    def cdf(x):
        return stats.norm.cdf(x - mu) - stats.norm.cdf(-x - mu) - p

    upper = mu + 8.0
    while cdf(upper) < 0:
        upper *= 2
    return float(optimize.brentq(cdf, 0.0, upper, xtol=1e-14))


class _FLCIProblem:
    """Affine estimators l_pre' beta_pre + l_post' beta_post with l_pre = D w (D: first
    differences), sum w = sum_s s l_post,s; worst-case bias over Delta^SD(M) is
    M (c + sum_s |cumsum(w)_s|) (Rambachan and Roth 2023, sec. 4.1; HonestDiD)."""

    def __init__(self, sigma: np.ndarray, n_pre: int, n_post: int, l_post: np.ndarray):
        self.n_pre, self.l_post = n_pre, l_post
        D = np.eye(n_pre) - np.eye(n_pre, k=-1)
        self.D = D
        self.Q = D.T @ sigma[:n_pre, :n_pre] @ D
        self.a = 2 * D.T @ sigma[:n_pre, n_pre:] @ l_post
        self.c_var = float(l_post @ sigma[n_pre:, n_pre:] @ l_post)
        s = np.arange(1, n_post + 1)
        self.target = float(s @ l_post)
        self.bias_constant = sum(abs(float(np.arange(1, k + 1) @ l_post[n_post - k:])) for k in range(1, n_post + 1)) \
            - self.target
        self.L = np.tril(np.ones((n_pre, n_pre)))

    def variance(self, w):
        return float(w @ self.Q @ w + self.a @ w + self.c_var)

    def min_variance(self) -> tuple[float, np.ndarray]:
        n = self.n_pre
        K = np.zeros((n + 1, n + 1))
        K[:n, :n], K[:n, n], K[n, :n] = 2 * self.Q, 1.0, 1.0
        w = np.linalg.lstsq(K, np.concatenate([-self.a, [self.target]]), rcond=None)[0][:n]
        return math.sqrt(max(self.variance(w), 0.0)), w

    def min_bias_sd(self) -> float:
        w = np.zeros(self.n_pre)
        w[-1] = self.target
        return math.sqrt(self.variance(w))

    def min_bias(self, h: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """Smallest worst-case bias (per unit of M) among estimators with SD at most h."""
        n, L = self.n_pre, self.L
        z0 = np.concatenate([np.abs(L @ start) + 1e-9, start])
        cons = [
            {"type": "ineq", "fun": lambda z: z[:n] - L @ z[n:], "jac": lambda z: np.hstack([np.eye(n), -L])},
            {"type": "ineq", "fun": lambda z: z[:n] + L @ z[n:], "jac": lambda z: np.hstack([np.eye(n), L])},
            {"type": "ineq", "fun": lambda z: 1.0 - self.variance(z[n:]) / h**2,
             "jac": lambda z: np.concatenate([np.zeros(n), -(2 * self.Q @ z[n:] + self.a) / h**2])},
            {"type": "eq", "fun": lambda z: np.sum(z[n:]) - self.target,
             "jac": lambda z: np.concatenate([np.zeros(n), np.ones(n)])},
        ]
        res = optimize.minimize(lambda z: np.sum(z[:n]), z0, jac=lambda z: np.concatenate([np.ones(n), np.zeros(n)]),
                                constraints=cons, method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000})
        w = res.x[n:]
        return self.bias_constant + float(np.sum(np.abs(L @ w))), w


def flci_smoothness(beta, sigma, n_pre: int, n_post: int, M: float, *, l_post=None, alpha: float = 0.05) -> dict:
    """Fixed-length confidence interval for theta = l_post' tau under Delta^SD(M).

    Chooses the affine estimator that minimises the half-length
    chi = sd * cv_alpha(M bias / sd) over the standard deviations between the
    minimum-variance and the minimum-bias estimators (golden-section search, as
    HonestDiD's ``findOptimalFLCI``). Returns the interval, the estimate and weights."""
    beta, sigma = _check(beta, sigma, n_pre, n_post)
    if M < 0:
        raise EstimationError("M must be non-negative")
    l_post = _post_weights(l_post, n_post)
    prob = _FLCIProblem(sigma, n_pre, n_post, l_post)
    h_lo, w_lo = prob.min_variance()
    h_hi = prob.min_bias_sd()

    warm = [w_lo]

    def half_length(h):
        bias, w = prob.min_bias(h, warm[0])
        warm[0] = w  # neighbouring h have neighbouring solutions
        return h * _folded_normal_quantile(1 - alpha, M * bias / h), w

    if M == 0 or h_hi <= h_lo * (1 + 1e-9):
        h_opt, w = h_lo, w_lo
        chi = h_lo * _folded_normal_quantile(1 - alpha, M * (prob.bias_constant + np.sum(np.abs(prob.L @ w))) / h_lo)
    else:
        golden = (1 + math.sqrt(5)) / 2
        a, b = h_lo, h_hi
        c, d = b - (b - a) / golden, a + (b - a) / golden
        fc, fd = half_length(c)[0], half_length(d)[0]
        tol = (b - a) * 1e-3  # the half-length is flat at its minimum
        while abs(b - a) > tol:
            if fc < fd:
                b, d, fd = d, c, fc
                c = b - (b - a) / golden
                fc = half_length(c)[0]
            else:
                a, c, fc = c, d, fd
                d = a + (b - a) / golden
                fd = half_length(d)[0]
        h_opt = (a + b) / 2
        chi, w = half_length(h_opt)
    l_pre = prob.D @ w
    estimate = float(l_pre @ beta[:n_pre] + l_post @ beta[n_pre:])
    return {"ci_low": estimate - chi, "ci_high": estimate + chi, "estimate": estimate, "half_length": chi,
            "l_pre": l_pre, "sd": h_opt}


# ----------------------------------------------------------------------------- relative magnitudes: C-LF

def _rm_constraints(n_pre: int, n_post: int, Mbar: float, s: int, positive: bool) -> np.ndarray:
    """A with A delta <= 0 iff delta in Delta^RM_{s,sign}(Mbar): every first difference of
    delta is bounded by (Mbar after the start) times the change from s to s+1."""
    total = n_pre + n_post + 1
    first = np.zeros((n_pre + n_post, total))
    for r in range(n_pre + n_post):
        first[r, r:r + 2] = [-1.0, 1.0]
    v = np.zeros(total)
    v[n_pre + s:n_pre + s + 2] = [-1.0, 1.0]
    if not positive:
        v = -v
    bound = np.vstack([np.tile(v, (n_pre, 1)), np.tile(Mbar * v, (n_post, 1))])
    A = np.vstack([first - bound, -first - bound])
    A = A[~np.all(np.abs(A) <= 1e-10, axis=1)]
    return np.delete(A, n_pre, axis=1)  # period 0 (the reference) is normalised to 0


def _eta_lp(y, X, sd):
    """min eta s.t. y - X delta <= eta sd; returns eta, and the multipliers."""
    k = X.shape[1]
    res = optimize.linprog(np.concatenate([[1.0], np.zeros(k)]), A_ub=-np.column_stack([sd, X]), b_ub=-y,
                           bounds=[(None, None)] * (k + 1), method="highs-ds")
    if not res.success:
        return math.nan, None
    return float(res.x[0]), -res.ineqlin.marginals


def _truncated_normal_quantile(p: float, lower: float, upper: float) -> float:
    if math.isinf(lower) and math.isinf(upper):
        return float(stats.norm.ppf(p))
    pl = stats.norm.cdf(lower) if not math.isinf(lower) else 0.0
    pu = stats.norm.cdf(upper) if not math.isinf(upper) else 1.0
    q = pl + p * (pu - pl)
    if q <= pl:
        return lower
    if q >= pu:
        return upper
    return float(stats.norm.ppf(q))


def _dual_bounds(eta: float, y, gamma, sigma, W) -> tuple[float, float]:
    """Truncation points of the conditional test when the LP's solution is degenerate
    (ARP 2023, appendix; HonestDiD's ``.vlo_vup_dual_fn``), by bisection on the LP."""
    sg = float(gamma @ sigma @ gamma)
    b = sigma @ gamma / sg
    s = y - b * float(gamma @ y)
    A_eq = W.T
    b_eq = np.zeros(A_eq.shape[0])
    b_eq[0] = 1.0

    def solve(c):
        res = optimize.linprog(-(s + b * c), A_eq=A_eq, b_eq=b_eq, bounds=[(0, None)] * len(s), method="highs")
        return res, bool(res.success and abs(c - (-res.fun)) <= 1e-6)

    def edge(start: float, far: float, upward: bool) -> float:
        res, ok = solve(far)
        if ok:
            return math.inf if upward else -math.inf
        mid = far
        for _ in range(9):
            if not res.success:
                break
            denom = 1 - float(res.x @ b)
            value = float(res.x @ s)
            mid = (0.0 if abs(value) < np.finfo(float).eps ** 0.75 else value) / denom
            res, ok = solve(mid)
            if ok:
                break
        lo, hi = (start, mid) if upward else (mid, start)
        for _ in range(200):
            if hi - lo <= 1e-6:
                break
            m = (lo + hi) / 2
            if solve(m)[1] == upward:
                lo = m
            else:
                hi = m
        return (lo + hi) / 2

    if not solve(eta)[1]:
        return eta, math.inf
    sd_b = math.sqrt(sg)
    return (edge(eta, min(-100.0, eta - 20 * sd_b), False), edge(eta, max(100.0, eta + 20 * sd_b), True))


def _dual_vertices(X, sd, limit: int = 50_000) -> np.ndarray | None:
    """Vertices of {lambda >= 0, sd' lambda = 1, X' lambda = 0}, the dual of the eta LP
    (columns), or None when there are too many candidate supports to enumerate."""
    from itertools import combinations

    m, k1 = X.shape[0], X.shape[1] + 1
    if sum(math.comb(m, j) for j in range(1, min(k1, m) + 1)) > limit:
        return None
    W = np.column_stack([sd, X]).T                                    # (k+1) x m
    rhs = np.zeros(k1)
    rhs[0] = 1.0
    found = []
    for j in range(1, min(k1, m) + 1):
        for support in combinations(range(m), j):
            Ws = W[:, support]
            if np.linalg.matrix_rank(Ws) < j:
                continue
            lam = np.linalg.lstsq(Ws, rhs, rcond=None)[0]
            if np.all(lam > 1e-12) and np.allclose(Ws @ lam, rhs, atol=1e-10):
                v = np.zeros(m)
                v[list(support)] = lam
                found.append(v)
    return np.array(found).T if found else None


def _lf_critical_value(X, sigma, kappa: float, rng, vertices: np.ndarray | None, sims: int = 1000) -> float:
    """1 - kappa quantile of eta(xi) = min_delta max_i (xi_i - X_i delta) / sd_i over
    xi ~ N(0, sigma): the least-favourable critical value of the hybrid test. By LP
    duality eta(xi) is the largest v' xi over the dual polytope's vertices v; when they
    are few they are enumerated once (exact, and far faster than 1,000 LPs)."""
    sd = np.sqrt(np.diag(sigma))
    draws = rng.multivariate_normal(np.zeros(len(sd)), sigma, size=sims)
    if vertices is not None:
        etas = (draws @ vertices).max(axis=1)
    else:
        etas = np.array([_eta_lp(xi, X, sd)[0] for xi in draws])
        etas = etas[np.isfinite(etas)]
    if not len(etas):
        raise EstimationError("the least-favourable critical value could not be simulated")
    return float(np.quantile(etas, 1 - kappa))


def _vertex_bounds(y, gamma, sigma, vertices: np.ndarray) -> tuple[float, float]:
    """The same truncation points in closed form from the enumerated dual vertices v:
    gamma stays optimal while v' y <= gamma' y for every v, with y = s + b c, c = gamma' y."""
    sg = float(gamma @ sigma @ gamma)
    b = sigma @ gamma / sg
    s = y - b * float(gamma @ y)
    slope = 1.0 - vertices.T @ b
    level = vertices.T @ s
    up, down = slope > 1e-10, slope < -1e-10
    lo = float(np.max(level[up] / slope[up])) if up.any() else -math.inf
    hi = float(np.min(level[down] / slope[down])) if down.any() else math.inf
    return lo, hi


def _conditional_test(y, X, sigma, alpha: float, kappa: float, lf_cv: float,
                      vertices: np.ndarray | None = None) -> bool:
    """The hybrid conditional / least-favourable test of ARP; True when it rejects."""
    sd = np.sqrt(np.diag(sigma))
    eta, lam = _eta_lp(y, X, sd)
    if lam is None:
        return False
    if eta > lf_cv:
        return True
    size = (alpha - kappa) / (1 - kappa)
    k = X.shape[1]
    binding = lam > 1e-6
    degenerate = binding.sum() != k + 1
    Xb = X[binding]
    full_rank = Xb.size > 0 and np.linalg.matrix_rank(Xb) == min(Xb.shape)
    if degenerate or not full_rank:
        W = np.column_stack([sd, X])
        sg = float(lam @ sigma @ lam)
        if sg <= np.finfo(float).eps:
            return eta > 0
        lo, hi = (_vertex_bounds(y, lam, sigma, vertices) if vertices is not None
                  else _dual_bounds(eta, y, lam, sigma, W))
        sd_b = math.sqrt(sg)
        stat, zlo, zup = eta / sd_b, lo / sd_b, min(hi, lf_cv) / sd_b
    else:
        eye = np.eye(len(y))
        Wb, Wbc = np.column_stack([sd[binding], Xb]), np.column_stack([sd[~binding], X[~binding]])
        Sb, Sbc = eye[binding], eye[~binding]
        Wb_inv = np.linalg.inv(Wb)
        gamma_b = Wbc @ Wb_inv @ Sb - Sbc
        v_b = Sb.T @ Wb_inv.T[:, 0]
        s2 = float(v_b @ sigma @ v_b)
        sd_b = math.sqrt(s2)
        rho = gamma_b @ sigma @ v_b / s2
        vy = float(v_b @ y)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = -(gamma_b @ y) / rho + vy
        lo = np.max(ratio[rho > 0]) if np.any(rho > 0) else -math.inf
        hi = np.min(ratio[rho < 0]) if np.any(rho < 0) else math.inf
        stat, zlo, zup = eta / sd_b, lo / sd_b, min(hi, lf_cv) / sd_b
    if not zlo <= stat <= zup:
        return False
    return stat > max(0.0, _truncated_normal_quantile(1 - size, zlo, zup))


def _gamma(l_post: np.ndarray) -> np.ndarray:
    n = len(l_post)
    drop = int(np.argmax(np.abs(l_post)))
    G = np.zeros((n, n))
    G[0] = l_post
    for row, i in enumerate([i for i in range(n) if i != drop], start=1):
        G[row, i] = 1.0
    return G


def _rm_identified_bounds(beta, n_pre, n_post, Mbar, l_post) -> tuple[float, float]:
    """The identified set of theta under Delta^RM(Mbar), taking beta as the truth."""
    lows, highs = [], []
    f = np.concatenate([np.zeros(n_pre), l_post])
    eq = np.hstack([np.eye(n_pre), np.zeros((n_pre, n_post))])
    for s in range(-(n_pre - 1), 1):
        for positive in (True, False):
            A = _rm_constraints(n_pre, n_post, Mbar, s, positive)
            kw = dict(A_ub=A, b_ub=np.zeros(len(A)), A_eq=eq, b_eq=beta[:n_pre], bounds=[(None, None)] * len(f),
                      method="highs")
            hi, lo = optimize.linprog(-f, **kw), optimize.linprog(f, **kw)
            base = float(l_post @ beta[n_pre:])
            if hi.success and lo.success:
                lows.append(base + hi.fun)
                highs.append(base - lo.fun)
    if not lows:
        base = float(l_post @ beta[n_pre:])
        return base, base
    return min(lows), max(highs)


def rm_confidence_set(beta, sigma, n_pre: int, n_post: int, Mbar: float, *, l_post=None, alpha: float = 0.05,
                      grid_points: int = 1000, seed: int = 0) -> dict:
    """Confidence set for theta = l_post' tau under Delta^RM(Mbar) by the C-LF hybrid test
    (kappa = alpha / 10), inverted over ``grid_points`` values of theta spanning the
    identified set +- 20 SDs; the union over the largest pre-period change's location and
    sign. Needs at least two pre-periods and two post-periods."""
    return _rm_search(beta, sigma, n_pre, n_post, Mbar, l_post=l_post, alpha=alpha, grid_points=grid_points,
                      seed=seed)


def _rm_search(beta, sigma, n_pre: int, n_post: int, Mbar: float, *, l_post=None, alpha: float = 0.05,
               grid_points: int = 1000, seed: int = 0, only_excludes_zero: bool = False):
    """:func:`rm_confidence_set`; with ``only_excludes_zero`` just whether that set
    excludes 0 (it is not empty and lies on one side of 0), which is all the breakdown
    search asks: for each location and sign of the largest pre-period change, an accepted
    grid point and at most the two grid points next to 0 are tested, not both ends of the
    accepted run. Exact whenever the run is an interval, which the search for its ends
    assumes anyway (:func:`_accepted_interval`): the same answer with a tenth of the tests."""
    beta, sigma = _check(beta, sigma, n_pre, n_post)
    if n_pre < 2:
        raise EstimationError("relative-magnitude bounds need at least two pre-period coefficients")
    if n_post < 2:
        raise EstimationError("relative-magnitude bounds are implemented for two or more post-periods")
    if Mbar < 0:
        raise EstimationError("Mbar must be non-negative")
    l_post = _post_weights(l_post, n_post)
    kappa = alpha / 10
    id_lo, id_hi = _rm_identified_bounds(beta, n_pre, n_post, Mbar, l_post)
    sd_theta = math.sqrt(float(l_post @ sigma[n_pre:, n_pre:] @ l_post))
    grid = np.linspace(id_lo - 20 * sd_theta, id_hi + 20 * sd_theta, grid_points)
    G_inv = np.linalg.inv(_gamma(l_post))
    accept = np.zeros(grid_points, bool)
    at_or_below = int(np.searchsorted(grid, 0.0, side="right")) - 1  # last grid point <= 0 (-1: none)
    at_or_above = int(np.searchsorted(grid, 0.0, side="left"))  # first grid point >= 0 (grid_points: none)
    found, below, above = False, False, False  # an accepted point; one <= 0; one >= 0
    for s in range(-(n_pre - 1), 0):
        for positive in (True, False):
            A = _rm_constraints(n_pre, n_post, Mbar, s, positive)
            rows = np.flatnonzero(np.any(A[:, n_pre:] != 0, axis=1))
            AG = A[:, n_pre:] @ G_inv
            y0 = (A @ beta)[rows]
            sig_y = (A @ sigma @ A.T)[np.ix_(rows, rows)]
            X = AG[rows, 1:]
            vertices = _dual_vertices(X, np.sqrt(np.diag(sig_y)))
            lf_cv = _lf_critical_value(X, sig_y, kappa, np.random.default_rng(seed), vertices)

            def accepted(i, y0=y0, a1=AG[rows, 0], X=X, sig_y=sig_y, lf_cv=lf_cv, vertices=vertices):
                return not _conditional_test(y0 - grid[i] * a1, X, sig_y, alpha, kappa, lf_cv, vertices)

            if only_excludes_zero:
                start = _accepted_seed(accepted, grid_points)
                if start is None:
                    continue
                found = True
                # the run holds a point <= 0 iff it reaches the last one (start being above it), alike >= 0
                below = below or start <= at_or_below or (at_or_below >= 0 and accepted(at_or_below))
                above = above or start >= at_or_above or (at_or_above < grid_points and accepted(at_or_above))
                if below and above:
                    return False
                continue
            lo_idx, hi_idx = _accepted_interval(accepted, grid_points)
            if lo_idx is not None:
                accept[lo_idx:hi_idx + 1] = True
    if only_excludes_zero:
        return found and not (below and above)
    if not accept.any():
        return {"ci_low": math.nan, "ci_high": math.nan, "identified": (id_lo, id_hi), "open": False}
    idx = np.flatnonzero(accept)
    return {"ci_low": float(grid[idx[0]]), "ci_high": float(grid[idx[-1]]), "identified": (id_lo, id_hi),
            "open": bool(accept[0] or accept[-1])}


def _accepted_seed(accepted, n: int) -> int | None:
    """An accepted grid index, sought outward from the middle (None: none is)."""
    mid = n // 2
    for offset in range(n):
        for i in (mid - offset, mid + offset):
            if 0 <= i < n and accepted(i):
                return i
        if mid - offset < 0 and mid + offset >= n:
            break
    return None


def _accepted_interval(accepted, n: int):
    """First and last accepted grid index, assuming the accepted set is an interval
    (binary search from an accepted point found outward from the middle)."""
    seed = _accepted_seed(accepted, n)
    if seed is None:
        return None, None
    lo, hi = 0, seed
    if not accepted(0):
        while lo < hi:
            m = (lo + hi) // 2
            if accepted(m):
                hi = m
            else:
                lo = m + 1
    first = lo
    lo, hi = seed, n - 1
    if not accepted(n - 1):
        while lo < hi:
            m = (lo + hi + 1) // 2
            if accepted(m):
                lo = m
            else:
                hi = m - 1
    else:
        lo = n - 1
    return first, lo


# ----------------------------------------------------------------------------- on an event study

BOUNDS = {"relative_magnitude": "Mbar", "smoothness": "M"}


def event_study_coefficients(fit: Estimates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(event times, coefficients, covariance) of an event study: the TWFE one of
    :func:`evaluation.did.event_study` or Callaway-Sant'Anna's event-time aggregation
    (``aggregate("dynamic")``; use ``base_period="universal"`` so that the pre-period
    estimates are, like the event study's, relative to the period before the start).
    The reference period (estimate 0) is left out."""
    idx = [i for i, e in enumerate(fit.effects) if e.estimand == "att_event_time" and e.event_time is not None]
    if not idx:
        raise EstimationError("no event-time effects: pass an event study or aggregate('dynamic')")
    effects = [fit.effects[i] for i in idx]
    times = np.array([e.event_time for e in effects])
    beta = np.array([e.estimate for e in effects])
    if fit.vcov is None:
        raise EstimationError("this fit carries no covariance matrix of its event-time effects")
    V = fit.vcov.to_numpy()[np.ix_(idx, idx)]
    keep = ~((beta == 0) & (np.diag(V) == 0))
    order = np.argsort(times[keep])
    return times[keep][order], beta[keep][order], V[np.ix_(keep, keep)][np.ix_(order, order)]


def smoothness_upper_bound(beta, sigma, n_pre: int, alpha: float = 0.05) -> float:
    """Largest pre-period change in slope plus its one-sided 1 - alpha margin: a data-based
    upper end for M (HonestDiD's ``DeltaSD_upperBound_Mpre``). The pre-period coefficients
    are completed with the reference period's 0."""
    if n_pre < 2:
        raise EstimationError("a slope change needs at least two pre-period coefficients")
    pre = np.concatenate([np.asarray(beta, float)[:n_pre], [0.0]])
    Vp = np.zeros((n_pre + 1, n_pre + 1))
    Vp[:n_pre, :n_pre] = np.asarray(sigma, float)[:n_pre, :n_pre]
    A = np.zeros((n_pre - 1, n_pre + 1))
    for r in range(n_pre - 1):
        A[r, r:r + 3] = [1.0, -2.0, 1.0]
    margin = stats.norm.ppf(1 - alpha) * np.sqrt(np.diag(A @ Vp @ A.T))
    return float(np.max(np.abs(A @ pre) + margin))


def honest_sensitivity(fit: Estimates, *, bound: Literal["relative_magnitude", "smoothness"] = "relative_magnitude",
                       values: Sequence[float] | Literal["around_breakdown"] | None = None,
                       l_post: Sequence[float] | None = None, event_window: tuple[int | None, int | None] | None = None,
                       alpha: float = 0.05, seed: int = 0, breakdown: bool = True,
                       indicator: str | None = None) -> Estimates:
    """Confidence sets for theta = l_post' tau (default: the effect at event time 0) from
    an event study, over a grid of ``values`` of Mbar (relative magnitudes; default 0.5,
    1, 1.5, 2) or M (smoothness; default 5 values from 0 to the upper confidence bound of
    the largest pre-period slope change, :func:`smoothness_upper_bound`), or
    ``"around_breakdown"`` (0, and 0.5 and 2 times the breakdown value to 2 digits), with
    the conventional interval first and the breakdown value (the largest bound at which
    the set still excludes 0, found by bisection to 1%) in ``diagnostics``.

    ``fit``: an event study (:func:`evaluation.estimators.did.event_study`) or a
    Callaway-Sant'Anna ``aggregate("dynamic")``. ``event_window=(first, last)`` keeps the
    coefficients with first <= event time <= last (either may be None), which keeps the
    C-LF computation small on monthly event studies; the reference period -1 has no
    coefficient, so ``(-4, 2)`` keeps the pre-period coefficients -4, -3, -2 and the
    post-period ones 0, 1, 2 (the old ``max_pre=3, max_post=2``). Assumption: the
    post-period violation of parallel trends is bounded by ``Mbar`` times the largest
    pre-period one (relative magnitudes) or its slope changes by at most M per period
    (smoothness); Rambachan and Roth (2023, Rev Econ Stud 90:2555-2591).
    """
    if bound not in BOUNDS:
        raise EstimationError(f"bound must be one of {list(BOUNDS)}, got {bound!r}")
    times, beta, V = event_study_coefficients(fit)
    pre, post = times < 0, times >= 0
    first, last = (None, None) if event_window is None else event_window
    if first is not None:
        pre &= times >= first
    if last is not None:
        post &= times <= last
    sel = pre | post
    times, beta, V = times[sel], beta[sel], V[np.ix_(sel, sel)]
    n_pre, n_post = int((times < 0).sum()), int((times >= 0).sum())
    if n_pre < 1 or n_post < 1:
        raise EstimationError(f"{n_pre} pre-period and {n_post} post-period coefficients: both are needed")
    gaps = np.diff(times[times < 0]).tolist() + np.diff(times[times >= 0]).tolist()
    if any(g != 1 for g in gaps):
        raise EstimationError(f"event times must be consecutive, got {times.tolist()}")
    l_post = _post_weights(l_post, n_post)
    theta, sd = float(l_post @ beta[n_pre:]), math.sqrt(float(l_post @ V[n_pre:, n_pre:] @ l_post))
    def interval(v: float) -> tuple[float, float]:
        if bound == "relative_magnitude":
            r = rm_confidence_set(beta, V, n_pre, n_post, v, l_post=l_post, alpha=alpha, seed=seed)
        else:
            r = flci_smoothness(beta, V, n_pre, n_post, v, l_post=l_post, alpha=alpha)
        return r["ci_low"], r["ci_high"]

    def excludes_zero(v: float) -> bool:  # relative magnitudes: without searching the set's ends
        return _rm_search(beta, V, n_pre, n_post, v, l_post=l_post, alpha=alpha, seed=seed, only_excludes_zero=True)

    excludes_zero = excludes_zero if bound == "relative_magnitude" else None
    name = BOUNDS[bound]
    breakdown_value = None
    if isinstance(values, str):
        if values != "around_breakdown":
            raise EstimationError(f"values must be numbers or 'around_breakdown', got {values!r}")
        breakdown_value = _breakdown(interval, theta, sd, bound, excludes_zero)
        # 2 significant digits, and not the breakdown itself, where the set's end sits on 0
        # and its printed digits are noise
        scale = float(f"{breakdown_value:.2g}") if np.isfinite(breakdown_value) and breakdown_value > 0 else None
        values = [0.0] + ([0.5 * scale, 2 * scale] if scale else [])
    elif values is None:
        if bound == "relative_magnitude":
            values = [0.5, 1.0, 1.5, 2.0]
        else:
            values = np.linspace(0.0, smoothness_upper_bound(beta, V, n_pre, alpha), 5).tolist()

    original = Effect.from_normal("att_event_time", theta, sd, alpha=alpha, method="event study",
                                  inference="conventional (parallel trends exact)", term="original",
                                  n_obs=0, indicator=indicator, extra={"bound": None})
    method = ("honest DiD, relative magnitudes (C-LF)" if bound == "relative_magnitude"
              else "honest DiD, smoothness (FLCI)")
    effects, rows = [original], [{"bound": 0.0, "ci_low": original.ci_low, "ci_high": original.ci_high,
                                  "label": "original"}]
    for v in values:
        lo, hi = interval(float(v))
        # the FLCI is centred on its own (trend-adjusted) affine estimator
        centre = (lo + hi) / 2 if bound == "smoothness" else theta
        effects.append(Effect(estimand="att_event_time", estimate=centre, std_error=sd, ci_low=lo, ci_high=hi,
                              p_value=math.nan, method=method, inference=f"{name} = {v:.4g}", n_obs=0,
                              term=f"{name}={v:.4g}", indicator=indicator, alpha=alpha,
                              extra={"bound": float(v)}))
        rows.append({"bound": float(v), "ci_low": lo, "ci_high": hi, "label": f"{name}={v:.4g}"})
    diagnostics = {"bound": name, "pre_periods": n_pre, "post_periods": n_post, "l_post": l_post.tolist()}
    if breakdown:
        diagnostics["breakdown"] = (breakdown_value if breakdown_value is not None
                                    else _breakdown(interval, theta, sd, bound, excludes_zero))
    return Estimates(effects=effects, method=method, plot_data=pd.DataFrame(rows), diagnostics=diagnostics,
                     kind="honest_sensitivity", wald=False)


def _breakdown(interval, theta: float, sd: float, bound: str, excludes_zero=None) -> float:
    """Largest bound at which the confidence set excludes 0 (0 if even the exact-parallel-
    trends set does not; inf if none up to 2^10 times the first trial does). ``excludes_zero``
    answers that for a bound directly, when it can without computing the set."""
    def excludes(v):
        if excludes_zero is not None:
            return bool(excludes_zero(v))
        lo, hi = interval(v)
        return bool(np.isfinite(lo) and (lo > 0 or hi < 0))

    if not excludes(0.0):
        return 0.0
    high = 1.0 if bound == "relative_magnitude" else max(sd, 1e-12)
    for _ in range(10):
        if not excludes(high):
            break
        high *= 2
    else:
        return math.inf
    low = 0.0
    while high - low > 0.01 * high:
        mid = (low + high) / 2
        if excludes(mid):
            low = mid
        else:
            high = mid
    return low
