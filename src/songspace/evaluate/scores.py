"""Per-quartet odd-one-out scores and the distance x scaler grid with bootstrap intervals.

A quartet is three test songs (a, b, c) and the index (0, 1 or 2) of the annotated odd one.
Under a distance, the model's answer is the song left out of the closest pair; chance is
1/3. The grid scores every distance (`distances.NAMES`) under every scaler
(`scalers.NAMES`); scalers and distance statistics are fitted on the training embeddings.

Pair j of a quartet is the pair that leaves out song j (`PAIRS`), so the index of the
closest pair is the predicted odd index. When several pairs are equally close (within
`TIE_RTOL`/`TIE_ATOL`, see `tie_scores`) the quartet scores the expected accuracy of a
random tie-break: 1/k if the right pair is among the k tied pairs, else 0.

Confidence intervals are percentile bootstraps over quartets: resamples of the quartet
indices, the same resamples for every cell and every embedding (so differences between
cells, or between the model and a baseline, are paired bootstraps).

Layers, from the inside out:
* `tie_scores`, `quartet_pair_distances`, `cell_scores` - per-quartet scores, no randomness;
* `bootstrap_means`, `grid`, `headline` - accuracy with confidence intervals;
* `odd_one_out_accuracy` - the quick single-number check used during training;
* `random_quartets` - random quartets of distinct tracks (tests and benchmarks).
"""
from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from songspace import distances, scalers

CHANCE = 1.0 / 3.0
PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (0, 2), (0, 1))  # pair j leaves out song j
# Two pair distances count as tied when d - d_min <= TIE_ATOL + TIE_RTOL * |d_min|:
# wide enough to absorb float rounding (the same distance computed along different paths
# differs by ~1e-16 relative), far narrower than any real difference between songs.
TIE_RTOL = 1e-9
TIE_ATOL = 1e-12
CELLS: tuple[tuple[str, str], ...] = tuple(
    (d, s) for d in distances.NAMES for s in scalers.NAMES
)
_BOOTSTRAP_CHUNK_ENTRIES = 4_000_000  # resample-count entries held in memory at once
_CHUNK_QUARTETS = 512  # quartets per chunk: 512 x 128 float64 = 0.5 MB per gathered song, cache-sized
_MATRIX_MAX_TRACKS = 4096  # largest test set for a full pairwise matrix (128 MB)
_GRAM_FACTOR = 32  # a BLAS matrix product is >= ~32x cheaper per pair than row-wise numpy


# ---------------------------------------------------------------- input checks


def _embeddings(x, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty (tracks, dims) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.all(np.isfinite(x), axis=1))
        raise ValueError(f"{what}: {len(bad)} row(s) hold NaN or inf (first: row {bad[0]})")
    return x


def check_quartets(quartets, odd, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate quartets (q, 3) of indices into the test tracks and odd (q,) in {0, 1, 2}."""
    quartets = np.asarray(quartets)
    odd = np.asarray(odd)
    if quartets.ndim != 2 or quartets.shape[1] != 3 or len(quartets) == 0:
        raise ValueError(f"quartets: expected a non-empty (q, 3) array, got shape {quartets.shape}")
    if not np.issubdtype(quartets.dtype, np.integer):
        raise ValueError(f"quartets: expected integer track indices, got {quartets.dtype}")
    if odd.shape != (len(quartets),):
        raise ValueError(f"odd: expected shape ({len(quartets)},), got {odd.shape}")
    if not np.issubdtype(odd.dtype, np.integer) or np.any((odd < 0) | (odd > 2)):
        raise ValueError("odd: every entry must be 0, 1 or 2 (the position of the odd song)")
    bad = np.flatnonzero(np.any((quartets < 0) | (quartets >= n_test), axis=1))
    if len(bad):
        raise ValueError(
            f"quartets: {len(bad)} quartet(s) name a track outside the {n_test} test tracks "
            f"(first: quartet {bad[0]} = {quartets[bad[0]].tolist()})"
        )
    return quartets.astype(np.int64), odd.astype(np.int64)


# ---------------------------------------------------------------- per-quartet scores


def tie_scores(pair_dist: np.ndarray, odd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-quartet score under the random tie-break rule, and which pairs tie for closest.

    pair_dist: (q, 3), column j the distance of the pair that leaves out song j.
    odd: (q,) in {0, 1, 2}. Returns scores (q,) in {0, 1/3, 1/2, 1} and tied (q, 3) bool
    (True for each pair within the tie tolerance of the closest).
    """
    dmin = pair_dist.min(axis=1, keepdims=True)
    tied = pair_dist - dmin <= TIE_ATOL + TIE_RTOL * np.abs(dmin)
    k = tied.sum(axis=1)
    scores = tied[np.arange(len(odd)), odd] / k
    return scores, tied


def _pair_rows(emb: np.ndarray, quartets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two songs of every pair as contiguous rows (3q, d): row 3 i + j is pair j of quartet i."""
    first = np.asarray([i for i, _ in PAIRS])
    second = np.asarray([j for _, j in PAIRS])
    return np.take(emb, quartets[:, first].ravel(), axis=0), np.take(emb, quartets[:, second].ravel(), axis=0)


def quartet_pair_distances(emb: np.ndarray, quartets: np.ndarray, distance: str, ctx: dict) -> np.ndarray:
    """Distances (q, 3) of the three pairs of each quartet (q, 3) of rows of emb (n, d).

    Column j is the pair that leaves out song j. ctx as from `distances.fit_context`.
    """
    u, v = _pair_rows(emb, quartets)
    return distances.rowwise(distance, u, v, **ctx).reshape(len(quartets), 3)


def _use_matrix(dist: distances.Distance, n_test: int, q: int, path: str) -> bool:
    """Whether to compute all (n_test, n_test) distances once rather than 3q pair rows."""
    if path not in ("auto", "rows", "matrix"):
        raise ValueError(f"path must be auto, rows or matrix, got {path!r}")
    if path != "auto":
        return path == "matrix"
    if n_test > _MATRIX_MAX_TRACKS:
        return False
    # a matrix product costs far less per pair than row-wise numpy; cdist about the same
    return n_test**2 <= 3 * q * (_GRAM_FACTOR if dist.gram else 1)


def _pair_distances(
    train: np.ndarray, test: np.ndarray, scaler: str, names: list[str], quartets: np.ndarray,
    minkowski_p: float, path: str,
) -> np.ndarray:
    """Pair distances (q, 3, len(names)) of the quartets under one scaler and several distances.

    Each track is prepared once per distance family (unit rows for cosine, codes for the
    boolean metrics, ...); under one scaler the same preparation gives the same rows, so
    hamming and kulsinski share their codes. Then each distance takes its matrix or its
    row-wise path (`_use_matrix`).
    """
    q = len(quartets)
    tr, te = scalers.fit_apply(scaler, train, test)
    dists = [distances.get(n) for n in names]
    ctxs = [distances.fit_context(n, tr, minkowski_p) for n in names]
    prepared = {}
    for dist, ctx in zip(dists, ctxs):
        if dist.prepare not in prepared:
            prepared[dist.prepare] = dist.prepare(te, ctx)
    out = np.empty((q, 3, len(names)))
    first = quartets[:, [a for a, _ in PAIRS]]  # (q, 3) track indices of each pair's songs
    second = quartets[:, [b for _, b in PAIRS]]
    by_rows = []
    for k, (dist, ctx) in enumerate(zip(dists, ctxs)):
        if _use_matrix(dist, len(te), q, path):
            p = prepared[dist.prepare]
            out[:, :, k] = dist.core_pairwise(p, p, ctx)[first, second]
        else:
            by_rows.append(k)
    inputs = {dists[k].prepare: prepared[dists[k].prepare] for k in by_rows}
    # Chunks of quartets small enough that the gathered songs and every temporary stay in
    # cache while all row-wise distances run on them (~3x faster than whole arrays, which
    # are memory-bound); each song of a chunk is gathered once into a reused buffer (fresh
    # buffers cost page faults), then each pair is two views of those buffers.
    n_max = min(q, _CHUNK_QUARTETS)
    bufs = {key: np.empty((3, n_max, x.shape[1]), x.dtype) for key, x in inputs.items()}
    for start in range(0, q if by_rows else 0, _CHUNK_QUARTETS):
        chunk = quartets[start : start + _CHUNK_QUARTETS]
        n = len(chunk)
        songs = {}
        for key, x in inputs.items():
            for i in range(3):
                np.take(x, chunk[:, i], axis=0, out=bufs[key][i, :n])
            songs[key] = bufs[key][:, :n]
        for k in by_rows:
            s3 = songs[dists[k].prepare]
            for j, (a, b) in enumerate(PAIRS):
                out[start : start + n, j, k] = dists[k].core(s3[a], s3[b], ctxs[k])
    return out


def cell_scores(
    train_emb,
    test_emb,
    quartets,
    odd,
    minkowski_p: float = distances.DEFAULT_MINKOWSKI_P,
    cells: tuple[tuple[str, str], ...] = CELLS,
    path: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-quartet scores of every grid cell, vectorised over quartets.

    train_emb (n_train, d), test_emb (n_test, d), quartets (q, 3) indices into test_emb,
    odd (q,). Returns scores (q, len(cells)) and any_tie (q, len(cells)) bool, columns in
    the order of `cells` ((distance, scaler) pairs).

    Each distance's pair distances come either from its row-wise form on the 3q pairs
    (in cache-sized chunks) or, when the test set is small next to the number of pairs,
    from its pairwise matrix over the test tracks, indexed by the pairs. Both give the same
    numbers (to rounding, which the tie tolerance absorbs). `path`: "auto" chooses by cost,
    "rows" or "matrix" force one (tests use both).
    """
    train = _embeddings(train_emb, "training embeddings")
    test = _embeddings(test_emb, "test embeddings")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"training embeddings have {train.shape[1]} dims, test {test.shape[1]}")
    quartets, odd = check_quartets(quartets, odd, len(test))
    q = len(quartets)
    scores = np.empty((q, len(cells)))
    ties = np.empty((q, len(cells)), dtype=bool)
    by_scaler: dict[str, list[int]] = {}
    for c, (d, s) in enumerate(cells):
        distances.get(d), scalers.make(s)  # unknown names fail before any work
        by_scaler.setdefault(s, []).append(c)
    # The matrix products here are small: BLAS threads only contend for the cores (on a
    # busy 2-core machine a threaded 500 x 500 product ran 10x slower than one thread).
    with threadpool_limits(limits=1, user_api="blas"):
        for s, cols in by_scaler.items():
            pair_dist = _pair_distances(train, test, s, [cells[c][0] for c in cols], quartets,
                                        minkowski_p, path)
            for k, c in enumerate(cols):
                sc, tied = tie_scores(pair_dist[:, :, k], odd)
                scores[:, c] = sc
                ties[:, c] = tied.sum(axis=1) > 1
    return scores, ties


# ---------------------------------------------------------------- bootstrap and grid


def bootstrap_means(scores: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Mean score of each column over `n_resamples` bootstrap resamples of the rows.

    scores: (q,) or (q, c) per-quartet scores. Returns (n_resamples,) or (n_resamples, c).
    Resample b draws q quartet indices with replacement; the draws depend only on
    (q, n_resamples, seed), so every column (cell, model, baseline) sees the same
    resamples and column differences are paired bootstraps.
    """
    scores = np.asarray(scores, dtype=np.float64)
    flat = scores.ndim == 1
    s2 = scores[:, None] if flat else scores
    q = len(s2)
    if n_resamples < 1:
        raise ValueError(f"bootstrap: need at least one resample, got {n_resamples}")
    # Tie-rule scores are multiples of 1/6 (0, 1/3, 1/2, 1): times 6 they are small
    # integers, and float32 sums of count * integer stay exact below 2**24, so the
    # resample means come from a fast float32 product without rounding.
    mul, dtype = 1.0, np.float64
    six = s2 * 6.0
    if 6 * q < 2**24 and np.array_equal(six, np.round(six)) and six.min() >= 0:
        mul, dtype = 6.0, np.float32
    s2_mul = (s2 * mul).astype(dtype)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_ENTRIES // q)
    out = np.empty((n_resamples, s2.shape[1]))
    with threadpool_limits(limits=1, user_api="blas"):  # small products, see cell_scores
        for start in range(0, n_resamples, chunk):
            b = min(chunk, n_resamples - start)
            idx = rng.integers(0, q, size=(b, q))
            # counts[r, i]: how often quartet i is drawn in resample r; means = counts @ scores / q
            counts = np.bincount((idx + q * np.arange(b)[:, None]).ravel(), minlength=b * q)
            sums = counts.reshape(b, q).astype(dtype) @ s2_mul  # exact integers on the float32 path
            out[start : start + b] = sums.astype(np.float64) / (q * mul)
    return out[:, 0] if flat else out


def percentile_ci(means: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap means (B,) or (B, c) at `confidence` (e.g. 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def _grid_rows(
    scores: np.ndarray, ties: np.ndarray, means: np.ndarray, confidence: float, cells=CELLS
) -> list[dict]:
    lo, hi = percentile_ci(means, confidence)
    acc = scores.mean(axis=0)
    return [
        {
            "distance": d,
            "scaler": s,
            "accuracy": float(acc[c]),
            "ci_low": float(lo[c]),
            "ci_high": float(hi[c]),
            "n": int(len(scores)),
            "tie_rate": float(ties[:, c].mean()),
        }
        for c, (d, s) in enumerate(cells)
    ]


def grid(
    train_emb,
    test_emb,
    quartets,
    odd,
    minkowski_p: float = distances.DEFAULT_MINKOWSKI_P,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """Odd-one-out accuracy of every distance x scaler cell, with bootstrap intervals.

    train_emb (n_train, d): fits the scalers and distance statistics. test_emb (n_test, d):
    the songs the quartets (q, 3) index; odd (q,) in {0, 1, 2}. Returns one row per cell
    (order of `CELLS`): distance, scaler, accuracy, ci_low, ci_high, n (quartets),
    tie_rate (share of quartets where two or more pairs tie for closest).
    """
    scores, ties = cell_scores(train_emb, test_emb, quartets, odd, minkowski_p)
    return _grid_rows(scores, ties, bootstrap_means(scores, bootstrap, seed), confidence)


def _cell_name(cell: tuple[str, str]) -> str:
    return f"{cell[0]}/{cell[1]}"


def headline(
    scores: np.ndarray, means: np.ndarray, confidence: float, cells=CELLS
) -> dict:
    """The best cell, and whether it beats the runner-up and chance.

    scores (q, c) per-quartet scores, means (B, c) their bootstrap means (same resamples
    for all columns). The runner-up is the best cell whose per-quartet scores differ from
    the best's: cells that give the very same answers (euclidean and cosine on
    L2-normalised rows rank pairs identically) are listed in `equivalent_cells` instead, as
    comparing them would be comparing a cell with itself. `significant_vs_next`: the
    paired-bootstrap interval of (best - runner-up) lies above 0. `above_chance`: the
    best's interval lies above 1/3.
    """
    acc = scores.mean(axis=0)
    best = int(np.argmax(acc))
    lo, hi = percentile_ci(means, confidence)
    same = [c for c in range(len(cells)) if c != best and np.array_equal(scores[:, c], scores[:, best])]
    others = [c for c in range(len(cells)) if c != best and c not in same]
    out = {
        "best_distance": cells[best][0],
        "best_scaler": cells[best][1],
        "accuracy": float(acc[best]),
        "ci_low": float(lo[best]),
        "ci_high": float(hi[best]),
        "chance": CHANCE,
        "above_chance": bool(lo[best] > CHANCE),
        "equivalent_cells": ", ".join(_cell_name(cells[c]) for c in same),
        "next_distance": None,
        "next_scaler": None,
        "next_accuracy": None,
        "diff_ci_low": None,
        "diff_ci_high": None,
        "significant_vs_next": None,
    }
    if others:
        nxt = max(others, key=lambda c: (acc[c], -c))
        dlo, dhi = percentile_ci(means[:, best] - means[:, nxt], confidence)
        out.update(
            next_distance=cells[nxt][0],
            next_scaler=cells[nxt][1],
            next_accuracy=float(acc[nxt]),
            diff_ci_low=float(dlo),
            diff_ci_high=float(dhi),
            significant_vs_next=bool(dlo > 0),
        )
    return out


# ---------------------------------------------------------------- during training


def odd_one_out_accuracy(emb, quartets, odd, distance: str = "cosine") -> float:
    """Odd-one-out accuracy of embeddings emb (n, d) on quartets (q, 3) / odd (q,).

    The quick check for validation during training: no scaler, no bootstrap, the same tie
    rule as the grid. Distance statistics (seuclidean variances, boolean-code medians) are
    taken from emb itself; minkowski uses p = 3. Accepts a torch tensor.
    """
    x = _embeddings(emb, "embeddings")
    quartets, odd = check_quartets(quartets, odd, len(x))
    ctx = distances.fit_context(distance, x)
    return float(tie_scores(quartet_pair_distances(x, quartets, distance, ctx), odd)[0].mean())


# ---------------------------------------------------------------- random quartets


def random_quartets(n_tracks: int, n_quartets: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Quartets (n_quartets, 3) of three distinct tracks and a random odd (n_quartets,)."""
    if n_tracks < 3:
        raise ValueError("quartets need at least three tracks")
    quartets = rng.integers(0, n_tracks, size=(n_quartets, 3))
    while True:  # redraw the quartets that name a track twice
        bad = (quartets[:, 0] == quartets[:, 1]) | (quartets[:, 0] == quartets[:, 2]) | (
            quartets[:, 1] == quartets[:, 2]
        )
        if not bad.any():
            break
        quartets[bad] = rng.integers(0, n_tracks, size=(int(bad.sum()), 3))
    return quartets.astype(np.int64), rng.integers(0, 3, size=n_quartets)
