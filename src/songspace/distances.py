"""The nine distances of the evaluation grid, each row-wise and pairwise.

Every distance is registered by name in `DISTANCES` with two vectorised forms:

* `rowwise(u (n, d), v (n, d), **ctx) -> (n,)`: the distance between row i of u and row i of v;
* `pairwise(x (n, d), y (m, d), **ctx) -> (n, m)`: every row of x against every row of y.

Both compute the same number (tests check each against scipy.spatial.distance or, for
kulsinski, a plain loop). `ctx` carries what a distance needs from the *training*
embeddings, made by `fit_context(name, train)`:

* minkowski: `p`, the order of the norm (params.yaml `evaluate.minkowski_p`);
* seuclidean: `variances (d,)`, the per-dimension variance of the training embeddings;
* hamming, kulsinski: `thresholds (d,)`, the per-dimension training median.

Boolean metrics run on binary codes. Hamming counts coordinates that are *unequal*: on
float embeddings two songs virtually never share an exact coordinate, so every pair is at
distance ~1, all three pairs of a quartet tie and the score is chance. Kulsinski treats
any non-zero value as True, which after scaling is nearly every value, so it degenerates
the same way. Each dimension is therefore thresholded at its training median (code =
value > median): a balanced bit per dimension that says on which side of a typical song
the track lies. Boolean inputs are used as they are.

Distances with no defined value in scipy (cosine or correlation of an all-zero or constant
row: 0/0) are defined here as 1, the distance of two uncorrelated vectors, so that a
degenerate embedding neither wins nor poisons a comparison with NaN.

Each distance is a per-row preparation followed by a core on prepared rows
(`Distance.prepare`, `Distance.core`): cosine divides each row by its norm and takes
1 - dot, correlation centres the row first, seuclidean divides by the training standard
deviation and takes the euclidean distance, the boolean metrics code the row. Callers that
compare the same tracks many times (the evaluation grid, an index) prepare each track once.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist

from songspace.config_schema import MINKOWSKI_MIN_P

DEFAULT_MINKOWSKI_P = 3.0
_BLOCK_ELEMENTS = 1 << 18  # elements of one broadcast block in a pairwise form (2 MB)


# ---------------------------------------------------------------- checks


def _floats(a, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (rows, dims), got shape {a.shape}")
    return a


def _same_shape(u: np.ndarray, v: np.ndarray) -> None:
    if u.shape != v.shape:
        raise ValueError(f"row-wise distance: u {u.shape} and v {v.shape} differ in shape")


def _same_dims(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"pairwise distance: x has {x.shape[1]} dims, y has {y.shape[1]}")


def _check_p(p: float) -> float:
    if not p >= MINKOWSKI_MIN_P:
        raise ValueError(f"minkowski needs p >= {MINKOWSKI_MIN_P:g} (a norm), got {p}")
    return float(p)


# ---------------------------------------------------------------- per-row preparations


def _identity(x, ctx: dict, what: str = "embeddings") -> np.ndarray:
    return _floats(x, what)


def _unit(x, ctx: dict, what: str = "embeddings") -> np.ndarray:
    """Rows divided by their L2 norm; all-zero rows stay zero (so 1 - dot = 1)."""
    x = _floats(x, what)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.where(norm == 0, 1.0, norm)[:, None]


def _centred_unit(x, ctx: dict, what: str = "embeddings") -> np.ndarray:
    """Rows minus their mean, then divided by their L2 norm (constant rows -> zero)."""
    x = _floats(x, what)
    return _unit(x - x.mean(axis=1, keepdims=True), ctx, what)


def _standardised(x, ctx: dict, what: str = "embeddings") -> np.ndarray:
    """Rows divided by the training standard deviation per dimension (V = 0 -> weight 0)."""
    x = _floats(x, what)
    variances = ctx.get("variances")
    if variances is None:
        raise ValueError(
            "seuclidean needs `variances` (d,), the per-dimension variance of the training "
            "embeddings (distances.fit_context)"
        )
    variances = np.asarray(variances, dtype=np.float64)
    if variances.shape != (x.shape[1],):
        raise ValueError(f"variances has shape {variances.shape}, expected ({x.shape[1]},)")
    if np.any(np.isnan(variances)) or np.any(variances < 0):
        raise ValueError("variances must be non-negative numbers")
    with np.errstate(divide="ignore"):
        scale = np.where(variances == 0, 0.0, 1.0 / np.sqrt(variances))
    return x * scale


def _codes(x, ctx: dict, what: str = "embeddings") -> np.ndarray:
    """Binary codes (rows, d) bool: as given when boolean, else value > threshold."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (rows, dims), got shape {x.shape}")
    if x.dtype == bool:
        return x
    thresholds = ctx.get("thresholds")
    if thresholds is None:
        raise ValueError(
            f"{what}: a boolean metric needs boolean codes or `thresholds` (the training "
            "medians, from distances.fit_context)"
        )
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (x.shape[1],):
        raise ValueError(f"thresholds has shape {thresholds.shape}, expected ({x.shape[1]},)")
    return np.asarray(x, dtype=np.float64) > thresholds


# ---------------------------------------------------------------- cores on prepared rows


def _absdiff(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    diff = np.subtract(u, v)
    return np.abs(diff, out=diff)


def _chebyshev_core(u, v, ctx):
    return _absdiff(u, v).max(axis=1)


def _euclidean_core(u, v, ctx):
    diff = np.subtract(u, v)
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def _power_sum_root(absdiff: np.ndarray, p: float) -> np.ndarray:
    """(sum over the last axis of absdiff^p)^(1/p); absdiff may be overwritten."""
    if p in (2.0, 3.0):  # small integer powers by multiplication, much faster than pow
        powered = absdiff * absdiff
        if p == 3.0:
            powered *= absdiff
    else:
        powered = np.power(absdiff, p, out=absdiff)
    return powered.sum(axis=-1) ** (1.0 / p)


def _minkowski_core(u, v, ctx):
    return _power_sum_root(_absdiff(u, v), _check_p(ctx.get("p", DEFAULT_MINKOWSKI_P)))


def _minkowski_pairwise(x, y, ctx):
    # scipy's cdist calls pow per element (~10x slower for p = 3): broadcast in blocks
    p = _check_p(ctx.get("p", DEFAULT_MINKOWSKI_P))
    out = np.empty((len(x), len(y)))
    block = max(1, _BLOCK_ELEMENTS // max(1, len(y) * x.shape[1]))
    for start in range(0, len(x), block):
        diff = np.subtract(x[start : start + block, None, :], y[None, :, :])
        out[start : start + block] = _power_sum_root(np.abs(diff, out=diff), p)
    return out


def _cityblock_core(u, v, ctx):
    return _absdiff(u, v).sum(axis=1)


def _one_minus_dot_core(u, v, ctx):
    return np.clip(1.0 - np.einsum("ij,ij->i", u, v), 0.0, 2.0)


def _hamming_core(u, v, ctx):
    return np.count_nonzero(u != v, axis=1) / u.shape[1]


def _kulsinski_core(u, v, ctx):
    d = u.shape[1]
    ctt = np.count_nonzero(u & v, axis=1)
    ctf = np.count_nonzero(u, axis=1) - ctt
    cft = np.count_nonzero(v, axis=1) - ctt
    return (ctf + cft - ctt + d) / (ctf + cft + d)


def _cdist_core(metric: str):
    def core(x, y, ctx):
        return cdist(x, y, metric=metric)

    return core


def _one_minus_dot_pairwise(x, y, ctx):
    return np.clip(1.0 - x @ y.T, 0.0, 2.0)


def _hamming_pairwise(x, y, ctx):
    fx, fy = x.astype(np.float64), y.astype(np.float64)
    # unequal = ones in x + ones in y - 2 * common ones; integer-valued, exact in float64
    unequal = fx.sum(1)[:, None] + fy.sum(1)[None, :] - 2.0 * (fx @ fy.T)
    return unequal / x.shape[1]


def _kulsinski_pairwise(x, y, ctx):
    d = x.shape[1]
    fx, fy = x.astype(np.float64), y.astype(np.float64)
    ctt = fx @ fy.T
    ctf = fx.sum(1)[:, None] - ctt
    cft = fy.sum(1)[None, :] - ctt
    return (ctf + cft - ctt + d) / (ctf + cft + d)


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Distance:
    """One registered distance.

    `prepare(x (n, d), ctx) -> (n, d)` transforms each row on its own; `core(u, v, ctx)
    -> (n,)` and `core_pairwise(x, y, ctx) -> (n, m)` work on prepared rows. `needs`: the
    ctx keys it reads. `formula`: its definition. `gram`: core_pairwise is a single matrix
    product, so a full (n, m) matrix costs little more than n * m scalars.
    """

    name: str
    formula: str
    prepare: Callable[..., np.ndarray]
    core: Callable[..., np.ndarray]
    core_pairwise: Callable[..., np.ndarray]
    boolean: bool = False
    needs: tuple[str, ...] = ()
    gram: bool = False  # core_pairwise is one matrix product (BLAS), cheap for many pairs

    def _check_ctx(self, ctx: dict) -> None:
        unknown = set(ctx) - set(self.needs)
        if unknown:
            raise TypeError(
                f"{self.name} takes {', '.join(self.needs) or 'no context'}; "
                f"got unexpected {', '.join(sorted(unknown))}"
            )

    def rowwise(self, u, v, **ctx) -> np.ndarray:
        """The distance between row i of u (n, d) and row i of v (n, d) -> (n,)."""
        self._check_ctx(ctx)
        pu, pv = self.prepare(u, ctx, "u"), self.prepare(v, ctx, "v")
        _same_shape(pu, pv)
        return self.core(pu, pv, ctx)

    def pairwise(self, x, y, **ctx) -> np.ndarray:
        """The distance of every row of x (n, d) against every row of y (m, d) -> (n, m)."""
        self._check_ctx(ctx)
        px, py = self.prepare(x, ctx, "x"), self.prepare(y, ctx, "y")
        _same_dims(px, py)
        return self.core_pairwise(px, py, ctx)


DISTANCES: dict[str, Distance] = {
    d.name: d
    for d in (
        Distance(
            "chebyshev", "max_k |u_k - v_k|",
            _identity, _chebyshev_core, _cdist_core("chebyshev"),
        ),
        Distance(
            "euclidean", "sqrt(sum_k (u_k - v_k)^2)",
            _identity, _euclidean_core, _cdist_core("euclidean"),
        ),
        Distance(
            "minkowski", "(sum_k |u_k - v_k|^p)^(1/p), p >= 1 (ctx p)",
            _identity, _minkowski_core, _minkowski_pairwise, needs=("p",),
        ),
        Distance(
            "hamming",
            "(1/d) sum_k [b(u)_k != b(v)_k], b(x)_k = x_k > training median_k",
            _codes, _hamming_core, _hamming_pairwise, boolean=True, needs=("thresholds",), gram=True,
        ),
        Distance(
            "cosine", "1 - u.v / (|u| |v|), in [0, 2]; 1 when a row is all zeros",
            _unit, _one_minus_dot_core, _one_minus_dot_pairwise, gram=True,
        ),
        Distance(
            "cityblock", "sum_k |u_k - v_k|",
            _identity, _cityblock_core, _cdist_core("cityblock"),
        ),
        Distance(
            "seuclidean",
            "sqrt(sum_k (u_k - v_k)^2 / V_k), V_k the training variance (V_k = 0: weight 0)",
            _standardised, _euclidean_core, _cdist_core("euclidean"), needs=("variances",),
        ),
        Distance(
            "correlation",
            "1 - (u - mean u).(v - mean v) / (|u - mean u| |v - mean v|); 1 for a constant row",
            _centred_unit, _one_minus_dot_core, _one_minus_dot_pairwise, gram=True,
        ),
        Distance(
            "kulsinski",
            "(c_TF + c_FT - c_TT + d) / (c_TF + c_FT + d) on codes b (scipy <= 1.10)",
            _codes, _kulsinski_core, _kulsinski_pairwise, boolean=True, needs=("thresholds",),
            gram=True,
        ),
    )
}
NAMES: tuple[str, ...] = tuple(DISTANCES)


def get(name: str) -> Distance:
    """The registered distance `name`; an unknown name lists the valid ones."""
    try:
        return DISTANCES[name]
    except KeyError:
        raise KeyError(f"unknown distance '{name}'; choose one of: {', '.join(NAMES)}") from None


def fit_context(name: str, train, minkowski_p: float = DEFAULT_MINKOWSKI_P) -> dict:
    """What distance `name` needs from the (scaled) training embeddings (n_train, d).

    Returns the keyword arguments for its rowwise/pairwise forms: `{"p": minkowski_p}`,
    `{"variances": (d,)}` (variance with ddof=1, scipy's default for seuclidean; ddof=0
    for a single row), `{"thresholds": (d,)}` (per-dimension median), or `{}`.
    """
    dist = get(name)
    train = _floats(train, "training embeddings")
    if len(train) == 0:
        raise ValueError("training embeddings are empty")
    if "p" in dist.needs:
        return {"p": _check_p(minkowski_p)}
    if "variances" in dist.needs:
        return {"variances": train.var(axis=0, ddof=1 if len(train) > 1 else 0)}
    if "thresholds" in dist.needs:
        return {"thresholds": np.median(train, axis=0)}
    return {}


def rowwise(name: str, u, v, **ctx) -> np.ndarray:
    """Distance `name` between row i of u (n, d) and row i of v (n, d) -> (n,)."""
    return get(name).rowwise(u, v, **ctx)


def pairwise(name: str, x, y, **ctx) -> np.ndarray:
    """Distance `name` of every row of x (n, d) against every row of y (m, d) -> (n, m)."""
    return get(name).pairwise(x, y, **ctx)


# ---------------------------------------------------------------- named functions
# The same distances as plain functions, for readers and for scipy-style calls.


def chebyshev(u, v):
    """max_k |u_k - v_k|; u, v (n, d) -> (n,)."""
    return rowwise("chebyshev", u, v)


def euclidean(u, v):
    """sqrt(sum_k (u_k - v_k)^2); u, v (n, d) -> (n,)."""
    return rowwise("euclidean", u, v)


def minkowski(u, v, p: float = DEFAULT_MINKOWSKI_P):
    """(sum_k |u_k - v_k|^p)^(1/p), p >= 1; u, v (n, d) -> (n,)."""
    return rowwise("minkowski", u, v, p=p)


def hamming(u, v, thresholds=None):
    """(1/d) sum_k [b(u)_k != b(v)_k] on codes b(x) = x > thresholds (or boolean u, v) -> (n,)."""
    return rowwise("hamming", u, v, **({} if thresholds is None else {"thresholds": thresholds}))


def cosine(u, v):
    """1 - u.v / (|u| |v|), in [0, 2], 1 for an all-zero row; u, v (n, d) -> (n,)."""
    return rowwise("cosine", u, v)


def cityblock(u, v):
    """sum_k |u_k - v_k|; u, v (n, d) -> (n,)."""
    return rowwise("cityblock", u, v)


def seuclidean(u, v, variances):
    """sqrt(sum_k (u_k - v_k)^2 / V_k), V the training variances (d,); u, v (n, d) -> (n,)."""
    return rowwise("seuclidean", u, v, variances=variances)


def correlation(u, v):
    """1 - centred cosine, in [0, 2], 1 for a constant row; u, v (n, d) -> (n,)."""
    return rowwise("correlation", u, v)


def kulsinski(u, v, thresholds=None):
    """(c_TF + c_FT - c_TT + d) / (c_TF + c_FT + d) on binary codes; u, v (n, d) -> (n,).

    c_TF counts dimensions where u's code is True and v's False, and so on; d is the
    number of dimensions (scipy <= 1.10's kulsinski). Not a metric: d(u, u) = c_FF / d.
    """
    return rowwise("kulsinski", u, v, **({} if thresholds is None else {"thresholds": thresholds}))
