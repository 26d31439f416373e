"""The numbers behind `distances`: the input checks, the per-row preparations (unit rows,
centred unit rows, standardised rows, binary codes) and the cores on prepared rows, row-wise
`(n,)` and pairwise `(n, m)`, all vectorised numpy (scipy's cdist where it is as fast)."""
from __future__ import annotations

import numpy as np

from songspace.config_schema import MINKOWSKI_MIN_P

DEFAULT_MINKOWSKI_P = 3.0
_BLOCK_ELEMENTS = 1 << 18  # elements of one broadcast block in a pairwise form (2 MB)


# ---------------------------------------------------------------- checks


def floats(a, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (rows, dims), got shape {a.shape}")
    return a


def same_shape(u: np.ndarray, v: np.ndarray) -> None:
    if u.shape != v.shape:
        raise ValueError(f"row-wise distance: u {u.shape} and v {v.shape} differ in shape")


def same_dims(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"pairwise distance: x has {x.shape[1]} dims, y has {y.shape[1]}")


def check_p(p: float) -> float:
    if not p >= MINKOWSKI_MIN_P:
        raise ValueError(f"minkowski needs p >= {MINKOWSKI_MIN_P:g} (a norm), got {p}")
    return float(p)


# ---------------------------------------------------------------- per-row preparations


def identity(x, ctx: dict, what: str = "embeddings") -> np.ndarray:
    return floats(x, what)


def unit(x, ctx: dict, what: str = "embeddings") -> np.ndarray:
    """Rows divided by their L2 norm; all-zero rows stay zero (so 1 - dot = 1)."""
    x = floats(x, what)
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.where(norm == 0, 1.0, norm)[:, None]


def centred_unit(x, ctx: dict, what: str = "embeddings") -> np.ndarray:
    """Rows minus their mean, then divided by their L2 norm (constant rows -> zero)."""
    x = floats(x, what)
    return unit(x - x.mean(axis=1, keepdims=True), ctx, what)


def standardised(x, ctx: dict, what: str = "embeddings") -> np.ndarray:
    """Rows divided by the training standard deviation per dimension (V = 0 -> weight 0)."""
    x = floats(x, what)
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


def codes(x, ctx: dict, what: str = "embeddings") -> np.ndarray:
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


def chebyshev_core(u, v, ctx):
    return _absdiff(u, v).max(axis=1)


def euclidean_core(u, v, ctx):
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


def minkowski_core(u, v, ctx):
    return _power_sum_root(_absdiff(u, v), check_p(ctx.get("p", DEFAULT_MINKOWSKI_P)))


def minkowski_pairwise(x, y, ctx):
    # scipy's cdist calls pow per element (~10x slower for p = 3): broadcast in blocks
    p = check_p(ctx.get("p", DEFAULT_MINKOWSKI_P))
    out = np.empty((len(x), len(y)))
    block = max(1, _BLOCK_ELEMENTS // max(1, len(y) * x.shape[1]))
    for start in range(0, len(x), block):
        diff = np.subtract(x[start : start + block, None, :], y[None, :, :])
        out[start : start + block] = _power_sum_root(np.abs(diff, out=diff), p)
    return out


def cityblock_core(u, v, ctx):
    return _absdiff(u, v).sum(axis=1)


def one_minus_dot_core(u, v, ctx):
    return np.clip(1.0 - np.einsum("ij,ij->i", u, v), 0.0, 2.0)


def hamming_core(u, v, ctx):
    return np.count_nonzero(u != v, axis=1) / u.shape[1]


def kulsinski_core(u, v, ctx):
    d = u.shape[1]
    ctt = np.count_nonzero(u & v, axis=1)
    ctf = np.count_nonzero(u, axis=1) - ctt
    cft = np.count_nonzero(v, axis=1) - ctt
    return (ctf + cft - ctt + d) / (ctf + cft + d)


def cdist_core(metric: str):
    def core(x, y, ctx):
        # scipy.spatial's import (0.3 s) only where a distance is computed: every stage's params
        # check reads the names of this registry
        from scipy.spatial.distance import cdist

        return cdist(x, y, metric=metric)

    return core


def one_minus_dot_pairwise(x, y, ctx):
    return np.clip(1.0 - x @ y.T, 0.0, 2.0)


def hamming_pairwise(x, y, ctx):
    fx, fy = x.astype(np.float64), y.astype(np.float64)
    # unequal = ones in x + ones in y - 2 * common ones; integer-valued, exact in float64
    unequal = fx.sum(1)[:, None] + fy.sum(1)[None, :] - 2.0 * (fx @ fy.T)
    return unequal / x.shape[1]


def kulsinski_pairwise(x, y, ctx):
    d = x.shape[1]
    fx, fy = x.astype(np.float64), y.astype(np.float64)
    ctt = fx @ fy.T
    ctf = fx.sum(1)[:, None] - ctt
    cft = fy.sum(1)[None, :] - ctt
    return (ctf + cft - ctt + d) / (ctf + cft + d)
