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
(`Distance.prepare`, `Distance.core`, both from `distance_cores`): cosine divides each row by
its norm and takes 1 - dot, correlation centres the row first, seuclidean divides by the
training standard deviation and takes the euclidean distance, the boolean metrics code the
row. Callers that compare the same tracks many times (the evaluation grid, an index) prepare
each track once.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from songspace import distance_cores as cores
from songspace.distance_cores import DEFAULT_MINKOWSKI_P


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
        cores.same_shape(pu, pv)
        return self.core(pu, pv, ctx)

    def pairwise(self, x, y, **ctx) -> np.ndarray:
        """The distance of every row of x (n, d) against every row of y (m, d) -> (n, m)."""
        self._check_ctx(ctx)
        px, py = self.prepare(x, ctx, "x"), self.prepare(y, ctx, "y")
        cores.same_dims(px, py)
        return self.core_pairwise(px, py, ctx)


DISTANCES: dict[str, Distance] = {
    d.name: d
    for d in (
        Distance(
            "chebyshev", "max_k |u_k - v_k|",
            cores.identity, cores.chebyshev_core, cores.cdist_core("chebyshev"),
        ),
        Distance(
            "euclidean", "sqrt(sum_k (u_k - v_k)^2)",
            cores.identity, cores.euclidean_core, cores.cdist_core("euclidean"),
        ),
        Distance(
            "minkowski", "(sum_k |u_k - v_k|^p)^(1/p), p >= 1 (ctx p)",
            cores.identity, cores.minkowski_core, cores.minkowski_pairwise, needs=("p",),
        ),
        Distance(
            "hamming",
            "(1/d) sum_k [b(u)_k != b(v)_k], b(x)_k = x_k > training median_k",
            cores.codes, cores.hamming_core, cores.hamming_pairwise, boolean=True, needs=("thresholds",),
            gram=True,
        ),
        Distance(
            "cosine", "1 - u.v / (|u| |v|), in [0, 2]; 1 when a row is all zeros",
            cores.unit, cores.one_minus_dot_core, cores.one_minus_dot_pairwise, gram=True,
        ),
        Distance(
            "cityblock", "sum_k |u_k - v_k|",
            cores.identity, cores.cityblock_core, cores.cdist_core("cityblock"),
        ),
        Distance(
            "seuclidean",
            "sqrt(sum_k (u_k - v_k)^2 / V_k), V_k the training variance (V_k = 0: weight 0)",
            cores.standardised, cores.euclidean_core, cores.cdist_core("euclidean"),
            needs=("variances",),
        ),
        Distance(
            "correlation",
            "1 - (u - mean u).(v - mean v) / (|u - mean u| |v - mean v|); 1 for a constant row",
            cores.centred_unit, cores.one_minus_dot_core, cores.one_minus_dot_pairwise, gram=True,
        ),
        Distance(
            "kulsinski",
            "(c_TF + c_FT - c_TT + d) / (c_TF + c_FT + d) on codes b (scipy <= 1.10)",
            cores.codes, cores.kulsinski_core, cores.kulsinski_pairwise, boolean=True, needs=("thresholds",),
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
    train = cores.floats(train, "training embeddings")
    if len(train) == 0:
        raise ValueError("training embeddings are empty")
    if "p" in dist.needs:
        return {"p": cores.check_p(minkowski_p)}
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
