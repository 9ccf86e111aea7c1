"""Least squares and Poisson regression with absorbed fixed effects, and cluster-robust
variances with named small-sample adjustments.

Fixed effects are projected out by the method of alternating projections (weighted group
demeaning until nothing changes; Gaure 2013, the method of R's ``fixest`` and of
``pyfixest``). On a balanced panel without weights two sweeps are exact; when its rows are
sorted (by unit, then period, or the other way round) each column is reshaped to the unit x
period table and demeaned by its row and column means (``two_way_demean_balanced``), with
no group sums. When, moreover, the regressors depend on the unit only through its group (a
cohort's treatment or event-time dummies), ``_fe_ols_grid`` never forms them: the normal
equations and the clustered scores come from the outcome's grid times group x period
tables (the grid fast path of ``did.twfe`` and ``did.event_study``).

The cluster-robust (CR1) variance is (X'WX)^-1 (sum_g s_g s_g') (X'WX)^-1 times one of
these adjustments:

``fixest`` (default) G/(G-1) * (N-1)/(N-K), K the slopes plus the fixed-effect levels
            not nested in the clusters (R fixest's and pyfixest's default ``ssc()``);
            t-tests with G-1 degrees of freedom.
``dummies`` G/(G-1) * (N-1)/(N-K), K counting every fixed-effect level: what OLS with
            dummy variables gives in statsmodels or Stata's ``regress, cluster()``.
``linearmodels`` N/(N-K) with K as for ``dummies`` and no G/(G-1): what
            ``PanelOLS(...).fit(cov_type="clustered")`` reports by default.
``none``   no adjustment (CR0).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.errors import EstimationError, UnbalancedPanelError

ADJUSTMENTS = ("fixest", "dummies", "linearmodels", "none")


def factorize(values) -> tuple[np.ndarray, int]:
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, np.dtype) and (dtype.kind == "i" or dtype.kind == "u" and dtype.itemsize < 8) and len(values):
        # integer codes over a range not much wider than the data: the sorted ranks from a
        # presence table (what pd.factorize(sort=True) returns, without hashing)
        arr = np.asarray(values)
        low, high = int(arr.min()), int(arr.max())
        if high - low <= 2 * len(arr) + 1024:
            offset = arr.astype(np.int64, copy=False) - low if low else arr
            present = np.zeros(high - low + 1, dtype=bool)
            present[offset] = True
            if present.all():  # consecutive values (ids 1..N, months 1..T): the ranks are the offsets
                return (offset if offset is not arr else offset.astype(np.int64)), len(present)
            rank = np.cumsum(present, dtype=np.int64) - 1
            return rank[offset], int(rank[-1]) + 1
    codes, uniques = pd.factorize(pd.Series(values), sort=True)
    if (codes < 0).any():
        raise EstimationError("missing values in a fixed-effect or cluster variable")
    return codes.astype(np.int64), len(uniques)


def demean(X: np.ndarray, fixed_effects: list[np.ndarray], weights: np.ndarray | None = None,
           tol: float = 1e-12, max_iter: int = 10_000, copy: bool = True) -> np.ndarray:
    """Residuals of the columns of X after projecting out the fixed effects.

    ``fixed_effects`` are integer code arrays (0..G-1). Weighted group means when
    ``weights`` is given. Iterates until the largest change is below ``tol`` times the
    columns' scale. Group sums run column by column on a column-major copy
    (``np.bincount``), to keep memory at one copy of X. ``copy=False`` works in place when X is already a float, column-major array.
    """
    X = np.array(X, dtype=float, order="F", copy=copy or None)
    if X.ndim == 1:
        X = X[:, None]
    if not fixed_effects:
        return X
    return _demean(X, fixed_effects, weights, tol, max_iter)


def _demean(X: np.ndarray, fixed_effects: list[np.ndarray], weights: np.ndarray | None, tol: float = 1e-12,
            max_iter: int = 10_000, sizes: list[int] | None = None, layout: tuple | None | bool = False) -> np.ndarray:
    """:func:`demean` in place on X (float, column-major, 2-D). ``sizes`` (the levels of each
    fixed effect) and ``layout`` (:func:`_sorted_layout` of two fixed effects) when the caller
    has them; ``layout=False``: not known yet."""
    w = None if weights is None else np.asarray(weights, dtype=float)
    sizes = sizes or [int(codes.max()) + 1 for codes in fixed_effects]

    def sweep(codes, g, gw) -> np.ndarray:
        change = np.zeros(X.shape[1])
        for j in range(X.shape[1]):
            col = X[:, j]
            means = np.bincount(codes, weights=col if w is None else w * col, minlength=g) / gw
            col -= means[codes]
            change[j] = np.abs(means).max()
        return change

    if weights is None and len(fixed_effects) == 2:
        if layout is False:
            layout = _sorted_layout(*fixed_effects, sizes=sizes)
        if layout is not None:
            shape = layout[1]
            # rows in (outer, inner) order with every pair once: each column is an outer x inner
            # table, and two_way_demean_balanced's one sweep is exact (done in place, no bincount)
            for j in range(X.shape[1]):
                table = X[:, j].reshape(shape)
                table -= table.mean(axis=1, keepdims=True)
                table -= table.mean(axis=0, keepdims=True)
            return X
    group_weight = [np.bincount(codes, weights=w, minlength=g) for codes, g in zip(fixed_effects, sizes, strict=True)]
    if weights is None and len(fixed_effects) == 2 and _balanced(*fixed_effects):
        # every pair of levels once: one sweep per dimension is the exact projection
        for args in zip(fixed_effects, sizes, group_weight, strict=True):
            sweep(*args)
        return X
    scale = np.maximum(np.abs(X).max(axis=0), 1.0)
    for _ in range(max_iter):
        change = np.zeros(X.shape[1])
        for args in zip(fixed_effects, sizes, group_weight, strict=True):
            change = np.maximum(change, sweep(*args))
        if len(fixed_effects) == 1 or np.all(change <= tol * scale):
            return X
    raise EstimationError(f"fixed effects did not converge in {max_iter} sweeps")


def _sorted_balanced(a: np.ndarray, b: np.ndarray) -> tuple[int, int] | None:
    """(outer levels, inner levels) when the rows run through every pair of levels once in
    nested order (all of one code's levels within each level of the other, both ascending),
    as a unit x period panel sorted by unit then period; else None."""
    layout = _sorted_layout(a, b)
    return None if layout is None else layout[1]


def _sorted_layout(a: np.ndarray, b: np.ndarray, sizes: list[int] | None = None) -> tuple[int, tuple[int, int]] | None:
    """As :func:`_sorted_balanced`, with which of the two is the outer one: ``(0, (levels
    of a, levels of b))`` when the rows run through b within a, ``(1, (levels of b, levels
    of a))`` the other way round; None when neither."""
    na, nb = sizes if sizes else (int(a.max()) + 1, int(b.max()) + 1)
    n = len(a)
    if n != na * nb:
        return None
    for which, (outer, inner, no, ni) in enumerate(((a, b, na, nb), (b, a, nb, na))):
        if (outer[0] == 0 and outer[-1] == no - 1 and inner[0] == 0 and inner[ni - 1] == ni - 1
                and np.array_equal(inner.reshape(no, ni), np.broadcast_to(np.arange(ni), (no, ni)))
                and np.array_equal(outer.reshape(no, ni), np.broadcast_to(np.arange(no)[:, None], (no, ni)))):
            return which, (no, ni)
    return None


def _balanced(a: np.ndarray, b: np.ndarray) -> bool:
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    return len(a) == na * nb and bool((np.bincount(a * nb + b, minlength=na * nb) == 1).all())


_NESTED_CHUNK = 1 << 16  # rows per block of nested_in: its temporaries stay in cache, a contradiction ends it early


def nested_in(inner: np.ndarray, outer: np.ndarray, *, levels: int | None = None) -> bool:
    """True when every level of ``inner`` lies within one level of ``outer`` (``levels``:
    the number of ``inner`` levels, when known). Read in blocks of rows, each checked
    against the outer level first seen for its inner levels, so that periods in clusters,
    say, are found not nested in the first block."""
    if inner is outer:
        return True
    if len(inner) == len(outer) and all(np.array_equal(inner[s:s + _NESTED_CHUNK], outer[s:s + _NESTED_CHUNK])
                                        for s in range(0, len(inner), _NESTED_CHUNK)):
        return True  # the same codes (units clustered by unit)
    seen = np.full(int(inner.max()) + 1 if levels is None else levels, -1, dtype=np.int64)
    for start in range(0, len(inner), _NESTED_CHUNK):
        i, o = inner[start:start + _NESTED_CHUNK], outer[start:start + _NESTED_CHUNK]
        before = seen[i]
        known = before >= 0
        if not np.array_equal(before[known], o[known]):
            return False
        seen[i] = o
        if not np.array_equal(seen[i], o):  # two outer levels for one inner level within the block
            return False
    return True


def small_sample_factor(adjustment: str, *, n: int, k: int, fe_levels: list[int], fe_nested: list[bool],
                        n_clusters: int) -> tuple[float, int]:
    """The multiplier of the CR0 variance, and K (the parameters counted)."""
    if adjustment not in ADJUSTMENTS:
        raise EstimationError(f"adjustment must be one of {ADJUSTMENTS}, got {adjustment!r}")
    if adjustment == "none":
        return 1.0, k
    n_fe = len(fe_levels)
    if adjustment == "fixest":
        # pyfixest.utils.utils.get_ssc with k_fixef="nonnested": one level per extra
        # dimension is a reference; a fully nested dimension counts as one parameter.
        k_fe_adj = sum(fe_levels) - (n_fe - 1) if n_fe > 1 else sum(fe_levels)
        nested_levels = sum(lv for lv, nest in zip(fe_levels, fe_nested, strict=True) if nest)
        n_fully_nested = sum(fe_nested)
        df_k = k + k_fe_adj - nested_levels + n_fully_nested if nested_levels else k + k_fe_adj
    else:
        # intercept + (levels - 1) per dimension, as dummy variables would have them
        df_k = k + (sum(fe_levels) - n_fe + 1 if n_fe else 0)
    if adjustment == "linearmodels":
        return n / (n - df_k), df_k
    return (n - 1) / (n - df_k) * n_clusters / (n_clusters - 1), df_k


class _OnFirstUse:
    """A field of :class:`FEFit` that a fast path may leave to be computed when first read:
    the n-long residuals and fitted values, which the coefficients and their errors do not
    need (on a 3.84M-row panel, writing them is two fresh 30 MB arrays). ``FEFit.deferred``,
    when set, returns both; it runs once."""

    def __set_name__(self, owner, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return None  # the dataclass default
        if obj.__dict__.get(self.slot) is None and obj.__dict__.get("deferred") is not None:
            obj.__dict__["_resid"], obj.__dict__["_fitted"] = obj.deferred()
            obj.deferred = None
        return obj.__dict__.get(self.slot)

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.slot] = value


@dataclass
class FEFit:
    """Coefficients, clustered covariance and what produced them."""

    names: list[str]
    coef: np.ndarray
    vcov: np.ndarray
    n_obs: int
    n_clusters: int
    df_k: int
    adjustment: str
    family: str = "gaussian"
    resid: np.ndarray | None = _OnFirstUse()
    fitted: np.ndarray | None = _OnFirstUse()
    dropped: dict = field(default_factory=dict)
    deferred: Callable[[], tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        """For pickling and copying: the deferred residuals computed first (a closure does not pickle)."""
        if self.deferred is not None:
            _ = self.resid
        return self.__dict__.copy()

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diag(self.vcov))

    @property
    def df_t(self) -> int:
        """Degrees of freedom of t-tests: G-1 under clustering (fixest's convention)."""
        return self.n_clusters - 1

    def index(self, name: str) -> int:
        return self.names.index(name)

    def wald(self, names: list[str]) -> tuple[float, float, int]:
        """Joint test that the named coefficients are zero: F statistic, p-value, df1.

        F = b' V^-1 b / q against F(q, G-1), as ``fixest::wald``.
        """
        idx = [self.index(n) for n in names]
        b, V = self.coef[idx], self.vcov[np.ix_(idx, idx)]
        q = len(idx)
        F = float(b @ np.linalg.solve(V, b) / q)
        return F, float(stats.f.sf(F, q, self.df_t)), q


def _cluster_meat(X: np.ndarray, u: np.ndarray, clusters: np.ndarray, *, n_clusters: int | None = None,
                  blocks: tuple[int, int] | None = None) -> np.ndarray:
    """sum over clusters g of s_g s_g', s_g = sum_{i in g} x_i u_i (column by column).

    ``blocks=(B, L)``: the rows form B consecutive blocks of L rows, each within one
    cluster (a panel sorted by unit, clustered by unit or by a grouping of units): each
    block's x'u is a row-wise dot product of the reshaped columns (no n-long temporary),
    then summed by cluster."""
    G = int(clusters.max()) + 1 if n_clusters is None else n_clusters
    if blocks is not None:
        B, L = blocks
        U = u.reshape(B, L)
        of_block = clusters[::L]
        if G == B and np.array_equal(of_block, np.arange(B)):  # a cluster per block, in order
            sums = np.column_stack([np.einsum("ij,ij->i", X[:, j].reshape(B, L), U) for j in range(X.shape[1])])
        else:
            sums = np.column_stack([np.bincount(of_block, weights=np.einsum("ij,ij->i", X[:, j].reshape(B, L), U),
                                                minlength=G) for j in range(X.shape[1])])
        return sums.T @ sums
    sums = np.column_stack([np.bincount(clusters, weights=X[:, j] * u, minlength=G) for j in range(X.shape[1])])
    return sums.T @ sums


def _clustered_vcov(bread: np.ndarray, X: np.ndarray, u: np.ndarray, clusters: np.ndarray,
                    fixed_effects: list[np.ndarray], adjustment: str, *, levels: list[int] | None = None,
                    layout: tuple | None = None) -> tuple[np.ndarray, int, int]:
    """CR1 variance bread * meat * bread with the named small-sample factor; also G and K.
    ``levels`` and ``layout`` (:func:`_sorted_layout`) of the fixed effects when known: on a
    sorted balanced panel whose outer fixed effect is nested in the clusters the scores are
    summed block by block (:func:`_cluster_meat`)."""
    G = int(clusters.max() + 1)
    levels = levels or [int(c.max() + 1) for c in fixed_effects]
    nested = [nested_in(c, clusters, levels=lv) for c, lv in zip(fixed_effects, levels, strict=True)]
    factor, df_k = small_sample_factor(adjustment, n=len(u), k=X.shape[1], fe_levels=levels, fe_nested=nested,
                                       n_clusters=G)
    blocks = layout[1] if layout is not None and nested[layout[0]] else None
    return factor * bread @ _cluster_meat(X, u, clusters, n_clusters=G, blocks=blocks) @ bread, G, df_k


def _incomplete_units(data: pd.DataFrame, *, outcome: str, unit: str, time: str) -> pd.DataFrame:
    """One row per unit that lacks a period (no row) or an outcome value (a row whose
    ``outcome`` is missing), with ``missing_periods`` and ``missing_values`` as lists of
    ``time`` values; empty when every unit has a value in every period of the data."""
    periods = np.sort(data[time].unique())
    records = []
    for u, rows in data.groupby(unit, sort=True):
        present = rows[time].to_numpy()
        lacking = periods[~np.isin(periods, present)]
        empty = np.sort(rows.loc[rows[outcome].isna(), time].unique())
        if len(lacking) or len(empty):
            records.append({"unit": u, "missing_periods": lacking.tolist(), "missing_values": empty.tolist()})
    return pd.DataFrame(records, columns=["unit", "missing_periods", "missing_values"])


def _require_balanced(data: pd.DataFrame, *, outcome: str, unit: str, time: str, method: str) -> None:
    """Raise :class:`UnbalancedPanelError` naming ``method`` and the incomplete units when
    some unit lacks a period or an outcome value."""
    incomplete = _incomplete_units(data, outcome=outcome, unit=unit, time=time)
    if len(incomplete):
        raise UnbalancedPanelError(method, incomplete, periods=int(data[time].nunique()),
                                   units=int(data[unit].nunique()))


def balanced_wide(data: pd.DataFrame, column: str, unit: str, time: str, *, method: str | None = None):
    """A column as a (unit x period) array, with the sorted units and periods; the panel
    must hold every unit in every period exactly once (and, with ``method``, a value of
    ``column`` in each: otherwise :class:`UnbalancedPanelError` names the method and the
    incomplete units). A unit with a period twice is an :class:`EstimationError`."""
    units = np.sort(data[unit].unique())
    periods = np.sort(data[time].unique())
    u = np.searchsorted(units, data[unit].to_numpy())
    t = np.searchsorted(periods, data[time].to_numpy())
    counts = np.bincount(u * len(periods) + t, minlength=len(units) * len(periods))
    if (counts > 1).any():
        raise EstimationError("the panel is not balanced (some unit has a period twice)")
    if method is not None:
        _require_balanced(data, outcome=column, unit=unit, time=time, method=method)
    if not (counts == 1).all():
        raise EstimationError("the panel is not balanced (some unit lacks a period, or has it twice)")
    out = np.empty((len(units), len(periods)))
    out[u, t] = data[column].to_numpy(float)
    return out, units, periods


def two_way_demean_balanced(Y: np.ndarray) -> np.ndarray:
    """Y minus unit and period means plus the grand mean (exact on a balanced panel)."""
    return Y - Y.mean(axis=1, keepdims=True) - Y.mean(axis=0, keepdims=True) + Y.mean()


_EINSUM_COLUMNS = 4  # fe_ols forms X'X and X'y with einsum up to this many regressors, with BLAS above


def fe_ols(y: np.ndarray, X: np.ndarray, names: list[str], fixed_effects: list[np.ndarray],
           clusters: np.ndarray, weights: np.ndarray | None = None, adjustment: str = "fixest") -> FEFit:
    """OLS (or WLS) of y on X with absorbed fixed effects and CR1 clustered errors."""
    n = len(y)
    Z = np.empty((n, X.shape[1] + 1), order="F")
    Z[:, 0] = y
    Z[:, 1:] = X
    levels = [int(c.max()) + 1 for c in fixed_effects]
    layout = _sorted_layout(*fixed_effects, sizes=levels) if weights is None and len(fixed_effects) == 2 else None
    if fixed_effects:
        Z = _demean(Z, fixed_effects, weights, sizes=levels, layout=layout)
    y_t, X_t = Z[:, 0], Z[:, 1:]
    w = None if weights is None else np.asarray(weights, dtype=float)
    k = X_t.shape[1]
    if w is None and k <= _EINSUM_COLUMNS:
        # a few columns: einsum loops, one read of X~ each; threaded BLAS takes 4-8 ms for
        # a 1 x 1 product over 3.84M rows here (its threads wake up), one thread 0.6 ms
        XtWX, XtWy = np.einsum("ij,ik->jk", X_t, X_t), np.einsum("ij,i->j", X_t, y_t)
    else:
        XtW = X_t.T if w is None else (X_t * w[:, None]).T
        XtWX, XtWy = XtW @ X_t, XtW @ y_t
    if np.linalg.matrix_rank(XtWX) < k:
        bad = [nm for nm, v in zip(names, np.abs(X_t).max(axis=0), strict=True) if v < 1e-10]
        raise EstimationError("regressors are collinear with the fixed effects"
                              + (f" (no variation left in {bad})" if bad else ""))
    bread = np.linalg.inv(XtWX)
    coef = bread @ XtWy
    if k == 1:
        resid = np.multiply(X_t[:, 0], coef[0])
    else:
        resid = X_t @ coef
    np.subtract(y_t, resid, out=resid)  # y~ - X~b, without a second n-long temporary
    vcov, G, df_k = _clustered_vcov(bread, X_t, resid if w is None else w * resid, clusters, fixed_effects,
                                    adjustment, levels=levels, layout=layout)
    return FEFit(names=list(names), coef=coef, vcov=vcov, n_obs=n, n_clusters=G, df_k=df_k,
                 adjustment=adjustment, resid=resid, fitted=y - resid)


@functools.cache
def _blas_threads():
    from threadpoolctl import ThreadpoolController  # created once: 40 ms; each limit() after it 0.01 ms

    return ThreadpoolController()


def _one_blas_thread(cells: int):
    """Context in which numpy's BLAS runs on one thread, for products over a grid of
    ``cells`` values: at 3.84M cells each reads 30 MB, which a second BLAS thread made up to
    ten times slower on a busy machine (``few_clusters._single_blas_thread``,
    benchmarks/threads.py). Below 2**20 cells nothing is changed (and threadpoolctl, 13 ms
    to import and set up, is not loaded for the report's small panels)."""
    if cells < 1 << 20:
        return contextlib.nullcontext()
    return _blas_threads().limit(limits=1, user_api="blas")


_SPARSE_COLUMN = 8  # _times: a column with at most this many nonzeros is read from the grid's columns


def _times(Y: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Y @ M for a T x J table M of the grid's regressors (cohort x period dummies and their
    period means), by its structure: the columns with more than ``_SPARSE_COLUMN`` nonzeros
    (a treatment from the start on, an end-point bin) by BLAS (one matrix-vector product
    each over the periods it spans, up to three: faster than a thin matrix product here);
    the others (an event time, one period per cohort) from the grid's columns they touch:
    ``np.take`` of r periods per column (r the most nonzeros of one; a shorter column padded
    with weight 0), then one einsum over the r, written in place when the columns are
    adjacent. The same sums as Y @ M, in another order. Call under :func:`_one_blas_thread`."""
    N, T = Y.shape
    out = np.empty((N, M.shape[1]))
    nnz = np.count_nonzero(M, axis=0)
    out[:, nnz == 0] = 0.0
    dense = np.flatnonzero(nnz > _SPARSE_COLUMN)
    if len(dense) > 3:
        out[:, dense] = Y @ M[:, dense]
    else:
        for j in dense:  # over the periods from its first nonzero to its last only
            t0, t1 = np.flatnonzero(M[:, j])[[0, -1]]
            out[:, j] = Y[:, t0:t1 + 1] @ np.ascontiguousarray(M[t0:t1 + 1, j])
    sparse = np.flatnonzero((nnz > 0) & (nnz <= _SPARSE_COLUMN))
    if len(sparse):
        counts = nnz[sparse]
        k, t = np.nonzero(M[:, sparse].T)                   # by column, then period
        q = np.arange(len(k)) - np.repeat(np.cumsum(counts) - counts, counts)  # rank within its column
        periods = np.zeros((counts.max(), len(sparse)), dtype=np.intp)
        weights = np.zeros((counts.max(), len(sparse)))
        periods[q, k], weights[q, k] = t, M[t, sparse[k]]
        taken = np.take(Y, periods.ravel(), axis=1).reshape(N, *periods.shape)
        if sparse[-1] - sparse[0] == len(sparse) - 1:  # adjacent columns: written in place
            np.einsum("iqj,qj->ij", taken, weights, out=out[:, sparse[0]:sparse[-1] + 1])
        else:
            out[:, sparse] = np.einsum("iqj,qj->ij", taken, weights)
    return out


def _full_rank(A: np.ndarray) -> bool:
    """Whether the symmetric positive semi-definite A is of full rank: its Cholesky factor
    exists and no pivot is below the relative size ``matrix_rank`` tolerates (dim x machine
    epsilon); a 20 x 20 check in microseconds, not an SVD."""
    try:
        pivots = np.diag(np.linalg.cholesky((A + A.T) / 2)) ** 2
    except np.linalg.LinAlgError:
        return False
    return bool(pivots.min() > pivots.max() * len(A) * np.finfo(float).eps)


def _grid_shape(unit: np.ndarray, time: np.ndarray) -> tuple[int, int] | None:
    """(N, T) when the rows are a unit x period grid, unit-major: the first T rows hold one
    unit's T periods, the next T another unit's, ..., every unit the same periods in the
    same increasing order, and no unit in two blocks (the units themselves may come in any
    order, e.g. by county first). :func:`_sorted_layout`'s unit-major case, read from the
    raw values (numbers, or the codes of :func:`factorize`) in one comparison pass over
    each column, with no factorizing; a missing value (NaN) fails the comparisons: None."""
    n = len(unit)
    if n < 2 or len(time) != n:
        return None
    first, T, start, step = unit[0], n, 0, 256  # T: the first unit's run, found in growing chunks
    while start < n:
        change = np.flatnonzero(unit[start:start + step] != first)
        if len(change):
            T = start + int(change[0])
            break
        start, step = start + step, step * 2
    if T < 2 or n % T:
        return None
    N = n // T
    units, periods = unit[::T], time[:T]
    if not np.all(periods[1:] > periods[:-1]):
        return None
    if not np.all(units[1:] > units[:-1]):  # blocks not in increasing order: each unit in one block all the same
        ordered = np.sort(units)
        if not np.all(ordered[1:] > ordered[:-1]):
            return None
    if not (_constant_in_blocks(unit, T) and np.array_equal(time[T:], time[:-T])):  # each row's period as T above
        return None
    return N, T


def _constant_in_blocks(values: np.ndarray, T: int) -> bool:
    """Whether ``values`` is constant within each block of T consecutive rows (a missing
    value, NaN, never is): every change between neighbours falls on a block boundary. Flat
    comparisons of the whole column (about twice as fast as comparing its N x T view with
    the blocks' first values)."""
    changes = values[1:] != values[:-1]
    return int(np.count_nonzero(changes)) == int(np.count_nonzero(changes[T - 1::T]))


def _fe_ols_grid(Y: np.ndarray, group: np.ndarray, E: np.ndarray, names: list[str], clusters: np.ndarray | None,
                 adjustment: str = "fixest", column_sums: np.ndarray | None = None, owner: object = None) -> FEFit:
    """:func:`fe_ols` with unit and period effects on a sorted balanced panel (``Y`` the
    outcome as the N x T grid of :func:`_grid_shape`) whose regressors depend on the unit
    only through its group: x_it = E[group_i, t] (``E``: groups x T x K; a cohort's
    treatment or event-time dummies). The same coefficients, CR1 covariance, small-sample
    factor, residuals and fitted values, from the grid's row and column sums and the
    group x period tables, without the n x K design or its demeaned copy.

    On the grid the two-way projection is exact in one step: x~_it = x_it - a_i - b_t + g
    (unit, period and grand means; the within transformation of a balanced two-way panel,
    Baltagi 2021, Econometric Analysis of Panel Data, 6th ed., ch. 3), so a unit of group c
    has x~_it = F[c, t] with F[c] = E[c] - a_c - (b - g); X~'X~ = sum_c n_c F[c]'F[c] (no
    cancellation), and X~'y = sum_i F[c_i]' y_i with F[c]' y_i = E[c]' y_i - a_c (sum_t
    y_it) - (b - g)' y_i: the grid's row sums, its product with the period means b
    (:func:`_times`, by their structure) and, for the rows of the groups with regressors,
    their product with E[c]. The score of unit i is sum_t x~_it u_it
    = F[c_i]' (y_i - ybar) - F[c_i]'F[c_i] beta (u the residual, ybar the period means;
    x~ has zero unit means, so the unit means of y drop out), and a cluster's the sum over
    its units: ``clusters`` holds each unit's cluster code (None: the units are the
    clusters), so every unit is nested in its cluster. The residuals and fitted values are
    computed when first read (:class:`FEFit`'s ``deferred``), from ``Y`` as it was: pass as
    ``owner`` the pandas Series that ``Y`` views (while the fit holds it, pandas copies the
    frame's block before writing to it, copy-on-write), or a ``Y`` that nothing writes to.
    """
    N, T = Y.shape
    m, _, K = E.shape
    n_c = np.bincount(group, minlength=m).astype(float)
    a = E.mean(axis=1)                                     # unit means of x, by group (m x K)
    b = np.einsum("c,ctk->tk", n_c, E) / N                  # period means (T x K)
    g = b.mean(axis=0)
    e = b - g
    F = E - a[:, None, :] - e[None, :, :]                   # x~ of a unit of each group (m x T x K)
    XtX = np.einsum("c,ctk,ctl->kl", n_c, F, F)
    H = np.einsum("ctk,ctl->ckl", F, F)                     # sum_t x~ x~' of one unit, by group
    ybar = (Y.sum(axis=0) if column_sums is None else column_sums) / N
    members = [(c, np.flatnonzero(group == c)) for c in range(m) if n_c[c] and E[c].any()]
    if not _full_rank(XtX):
        bad = [nm for nm, v in zip(names, np.abs(F[n_c > 0]).max(axis=(0, 1)), strict=True) if v < 1e-10]
        raise EstimationError("regressors are collinear with the fixed effects"
                              + (f" (no variation left in {bad})" if bad else ""))
    bread = np.linalg.inv(XtX)
    with _one_blas_thread(N * T):
        row_sums = Y @ np.ones(T)
        # F[c]' y_i = E[c]' y_i - a_c sum_t y_it - (b - g)' y_i; E[c] and a_c are 0 outside the members' groups
        W = _times(Y, -b)
        W += np.multiply.outer(row_sums, g)
        for c, rows in members:
            W[rows] += _times(np.take(Y, rows, axis=0), E[c]) - np.multiply.outer(row_sums[rows], a[c])
        coef = bread @ W.sum(axis=0)
        # the units' scores: W - F[c]' ybar - F[c]'F[c] beta; F[c] = -(b - g) outside the members' groups
        shift = np.einsum("ctk,t->ck", F, ybar) + H @ coef
        base = -e.T @ ybar + (e.T @ e) @ coef
        W -= base
        for c, rows in members:
            W[rows] -= shift[c] - base
        if clusters is None:
            G, scores = N, W
        else:
            G = int(clusters.max()) + 1
            scores = np.column_stack([np.bincount(clusters, weights=W[:, j], minlength=G) for j in range(K)])
        meat = np.einsum("gk,gl->kl", scores, scores) if K <= _EINSUM_COLUMNS else scores.T @ scores
    factor, df_k = small_sample_factor(adjustment, n=N * T, k=K, fe_levels=[N, T], fe_nested=[True, G == 1],
                                       n_clusters=G)

    def residuals(owner=owner) -> tuple[np.ndarray, np.ndarray]:
        # u = y - (ybar_i - a_c b) - (ybar_t - ybar - e_t b) - E[c, t] b; owner keeps Y unchanged
        u = Y - (row_sums / T - a[group] @ coef)[:, None]
        u -= (ybar - ybar.mean() - e @ coef)[None, :]
        for c, rows in members:
            u[rows] -= E[c] @ coef
        return u.ravel(), (Y - u).ravel()

    return FEFit(names=list(names), coef=coef, vcov=factor * bread @ meat @ bread, n_obs=N * T, n_clusters=G,
                 df_k=df_k, adjustment=adjustment, deferred=residuals)


def _poisson_irls(y: np.ndarray, offset: np.ndarray, solve, *, tol: float, max_iter: int):
    """Iteratively reweighted least squares for a Poisson model with fixed effects (as
    ppmlhdfe; Correia, Guimaraes and Zylkin 2020, Stata Journal 20:95-115): from mu =
    (y + mean y) / 2, each step fits the working outcome z = eta - offset + (y - mu) / mu
    by weighted least squares with weights mu, ``solve(z, mu)`` -> (coefficients, fitted
    z), until the deviance changes by less than ``tol`` (relative). Returns (coefficients,
    eta, mu) at the last step; raises when ``max_iter`` steps do not converge."""
    mu = (y + y.mean()) / 2
    eta = np.log(mu)
    deviance_old = np.inf
    for _ in range(max_iter):
        z = eta - offset + (y - mu) / mu
        coef, fitted = solve(z, mu)
        del z
        eta = fitted + offset
        del fitted
        mu = np.exp(eta)
        with np.errstate(divide="ignore", invalid="ignore"):
            deviance = 2 * np.sum(np.where(y > 0, y * np.log(y / mu), 0.0) - (y - mu))
        if abs(deviance - deviance_old) / (0.1 + abs(deviance)) < tol:
            return coef, eta, mu
        deviance_old = deviance
    raise EstimationError(f"Poisson IRLS did not converge in {max_iter} iterations")


def fe_poisson(y: np.ndarray, X: np.ndarray, names: list[str], fixed_effects: list[np.ndarray],
               clusters: np.ndarray, offset: np.ndarray | None = None, adjustment: str = "fixest",
               tol: float = 1e-10, max_iter: int = 100) -> FEFit:
    """Poisson pseudo-maximum likelihood with absorbed fixed effects (IRLS, as fixest's
    ``fepois``), and CR1 clustered errors. Fixed-effect groups whose outcome is zero
    throughout carry no information and are dropped first (their count is reported)."""
    y = np.asarray(y, dtype=float)
    offset = np.zeros(len(y)) if offset is None else np.asarray(offset, dtype=float)
    keep = np.ones(len(y), bool)
    while True:  # drop all-zero groups until none is left
        drop = np.zeros(len(y), bool)
        for codes in fixed_effects:
            sums = np.bincount(codes[keep], weights=y[keep], minlength=codes.max() + 1)
            drop |= keep & (sums[codes] == 0)
        if not drop.any():
            break
        keep &= ~drop
    n_dropped = int((~keep).sum())
    if keep.sum() == 0:
        raise EstimationError("the outcome is zero in every group")
    y, X, offset, clusters = y[keep], np.asarray(X, float)[keep], offset[keep], clusters[keep]
    fixed_effects = [pd.factorize(c[keep], sort=True)[0] for c in fixed_effects]
    clusters = pd.factorize(clusters, sort=True)[0]

    def solve(z: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Z = demean(np.column_stack([z, X]), fixed_effects, mu)
        z_t, X_t = Z[:, 0], Z[:, 1:]
        XtW = X_t.T * mu
        coef = np.linalg.solve(XtW @ X_t, XtW @ z_t)
        return coef, z - (z_t - X_t @ coef)

    coef, eta, mu = _poisson_irls(y, offset, solve, tol=tol, max_iter=max_iter)
    Z = demean(X, fixed_effects, mu)
    XtWX = (Z.T * mu) @ Z
    bread = np.linalg.inv(XtWX)
    vcov, G, df_k = _clustered_vcov(bread, Z, y - mu, clusters, fixed_effects, adjustment)
    return FEFit(names=list(names), coef=coef, vcov=vcov, n_obs=len(y), n_clusters=G,
                 df_k=df_k, adjustment=adjustment, family="poisson", resid=y - mu, fitted=mu,
                 dropped={"all_zero_groups_rows": n_dropped})
