"""Scoring embeddings on odd-one-out quartets: the distance x scaler grid, baselines, retrieval.

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
* `handcrafted_features`, `handcrafted_baselines`, `retrieval`, `confusion_counts`;
* `run` -> the content of metrics/eval.json; `evaluate_and_plot` writes it and the plots;
* `odd_one_out_accuracy` - the quick single-number check used during training;
* `random_quartets` - random quartets of distinct tracks (tests and benchmarks).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy.fft import dct
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from songspace import distances, scalers
from songspace.config import EvaluateParams

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
N_MFCC = 20
RETRIEVAL_K = 10  # precision@10
_BOOTSTRAP_CHUNK_ENTRIES = 4_000_000  # resample-count entries held in memory at once
_CHUNK_QUARTETS = 512  # quartets per chunk: 512 x 128 float64 = 0.5 MB per gathered song, cache-sized
_MATRIX_MAX_TRACKS = 4096  # largest test set for a full pairwise matrix (128 MB)
_GRAM_FACTOR = 32  # a BLAS matrix product is >= ~32x cheaper per pair than row-wise numpy
_KNN_BLOCK = 1024  # retrieval queries ranked per block


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


# ---------------------------------------------------------------- baselines


def handcrafted_features(logmel, segment_track, n_tracks: int | None = None) -> dict[str, np.ndarray]:
    """Per-track summary features of log-mel segments, the hand-crafted baselines.

    logmel: (n_segments, n_mels, frames) log-mel segments; segment_track: (n_segments,)
    the track each segment belongs to, in [0, n_tracks). Returns
    * "logmel_stats": (n_tracks, 2 * n_mels), mean then std of each mel band over all
      frames of all the track's segments;
    * "mfcc_stats": (n_tracks, 2 * N_MFCC), the same for MFCCs: the orthonormal DCT-II of
      the log-mel over the mel axis, first N_MFCC = 20 coefficients per frame (all n_mels
      when there are fewer), as librosa.feature.mfcc computes them from a log-mel.
    Standard deviations are population (ddof=0) over frames.
    """
    logmel = np.asarray(logmel, dtype=np.float64)
    seg = np.asarray(segment_track)
    if logmel.ndim != 3:
        raise ValueError(f"logmel: expected (n_segments, n_mels, frames), got shape {logmel.shape}")
    if seg.shape != (len(logmel),) or not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"segment_track: expected ({len(logmel)},) integers, got {seg.shape} {seg.dtype}")
    if len(seg) and seg.min() < 0:
        raise ValueError("segment_track: negative track index")
    n_tracks = int(seg.max()) + 1 if n_tracks is None else n_tracks
    if len(seg) and seg.max() >= n_tracks:
        raise ValueError(f"segment_track: index {seg.max()} outside the {n_tracks} tracks")
    frames_per_track = np.bincount(seg, minlength=n_tracks) * logmel.shape[2]
    empty = np.flatnonzero(frames_per_track == 0)
    if len(empty):
        raise ValueError(f"{len(empty)} track(s) have no segments (first: track {empty[0]})")
    n_mfcc = min(N_MFCC, logmel.shape[1])
    mfcc = dct(logmel, type=2, axis=1, norm="ortho")[:, :n_mfcc]

    def stats(x: np.ndarray) -> np.ndarray:
        n = frames_per_track[:, None]
        total = np.zeros((n_tracks, x.shape[1]))
        np.add.at(total, seg, x.sum(axis=2))
        mean = total / n
        sq = np.zeros_like(total)  # two passes: sum of squared deviations, no cancellation
        np.add.at(sq, seg, ((x - mean[seg][:, :, None]) ** 2).sum(axis=2))
        return np.concatenate([mean, np.sqrt(sq / n)], axis=1)

    return {"logmel_stats": stats(logmel), "mfcc_stats": stats(mfcc)}


def handcrafted_baselines(
    logmel, segment_track, train_tracks, test_tracks
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`handcrafted_features` split into (train (n_train, f), test (n_test, f)) per name.

    logmel (n_segments, n_mels, frames) and segment_track (n_segments,) as in
    `handcrafted_features`; train_tracks, test_tracks: track indices (as in segment_track)
    of the training and test tracks. Segments of other tracks are ignored.
    """
    seg = np.asarray(segment_track)
    train_tracks, test_tracks = np.asarray(train_tracks), np.asarray(test_tracks)
    used = np.unique(np.concatenate([train_tracks, test_tracks]))
    missing = np.setdiff1d(used, seg)
    if len(missing):
        raise ValueError(f"{len(missing)} evaluated track(s) have no segments (first: track {missing[0]})")
    keep = np.isin(seg, used)
    feats = handcrafted_features(
        np.asarray(logmel)[keep], np.searchsorted(used, seg[keep]), n_tracks=len(used)
    )
    rows_train, rows_test = np.searchsorted(used, train_tracks), np.searchsorted(used, test_tracks)
    return {k: (v[rows_train], v[rows_test]) for k, v in feats.items()}


PRETRAINED_BASELINES = {"musicnn_msd": "MSD_musicnn", "musicnn_mtt": "MTT_musicnn"}


def pretrained_baselines(spectra, train_tracks: list[str], test_tracks: list[str],
                         batch_size: int = 64, progress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The pretrained musicnn embeddings, no training: the 200-d penultimate layer, mean over each
    track's segments, for the MSD and MTT checkpoints: name -> (train (n_train, 200), test).

    spectra: `features.Spectra` of the `musicnn` front end.
    """
    from songspace import embed
    from songspace.models import musicnn

    windows, index = spectra.segments(list(train_tracks) + list(test_tracks))
    out = {}
    for name, checkpoint in PRETRAINED_BASELINES.items():
        net = musicnn.Penultimate(musicnn.load_pretrained(checkpoint)).eval()
        emb = embed.embed_segments(net, windows, batch_size=batch_size, progress=progress)
        out[name] = (embed.track_means(emb, index, list(train_tracks)),
                     embed.track_means(emb, index, list(test_tracks)))
    return out


# ---------------------------------------------------------------- retrieval


def _knn_func(distance: str, ctx: dict):
    """A knn_func for AccuracyCalculator ranking references by `distance` (exact, ties by index)."""
    import torch

    def knn(query, k, reference, ref_includes_query=False):
        q = query.detach().cpu().double().numpy()
        r = reference.detach().cpu().double().numpy()
        dist_k = np.empty((len(q), k))
        idx_k = np.empty((len(q), k), dtype=np.int64)
        for start in range(0, len(q), _KNN_BLOCK):  # bounded memory: a block of rows at a time
            rows = np.arange(start, min(start + _KNN_BLOCK, len(q)))
            dist = distances.pairwise(distance, q[rows], r, **ctx)
            if ref_includes_query:  # the first len(query) references are the queries themselves
                dist[np.arange(len(rows)), rows] = np.inf
            order = np.argsort(dist, axis=1, kind="stable")[:, :k]
            idx_k[rows] = order
            dist_k[rows] = np.take_along_axis(dist, order, axis=1)
        return torch.from_numpy(dist_k).to(query.device), torch.from_numpy(idx_k).to(query.device)

    return knn


def _retrieval_calculator(distance: str, ctx: dict, k: int | str):
    import torch
    from pytorch_metric_learning.utils import accuracy_calculator as ac

    class Calculator(ac.AccuracyCalculator):
        def calculate_precision_at_10(self, knn_labels, query_labels, not_lone_query_mask, label_counts, **kwargs):
            knn_labels, query_labels = ac.try_getting_not_lone_labels(
                knn_labels, query_labels, not_lone_query_mask
            )
            if knn_labels is None:
                return ac.nan_accuracy(label_counts[0], self.return_per_class)
            return ac.precision_at_k(
                knn_labels, query_labels[:, None], min(RETRIEVAL_K, knn_labels.shape[1]),
                self.avg_of_avgs, self.return_per_class, self.label_comparison_fn,
            )

        def requires_knn(self):
            return super().requires_knn() + ["precision_at_10"]

    return Calculator(
        include=("precision_at_1", "precision_at_10", "r_precision", "mean_average_precision_at_r"),
        k=k,
        device=torch.device("cpu"),
        knn_func=_knn_func(distance, ctx),
    )


def retrieval(
    train_emb,
    test_emb,
    test_labels,
    distance: str,
    scaler: str,
    minkowski_p: float = distances.DEFAULT_MINKOWSKI_P,
) -> dict:
    """Label retrieval among the test tracks under one grid cell.

    Each test track (n_test, d) queries all the other test tracks, ranked by `distance`
    after `scaler` (both fitted on train_emb (n_train, d)); a result is relevant when it has
    the query's label. Computed by pytorch-metric-learning's AccuracyCalculator with an
    exact knn over our `distances.pairwise` (so every grid distance, kulsinski included,
    works; equal distances rank by track index). AccuracyCalculator hands the knn float32
    copies of the scaled embeddings: distances agree with the grid's to ~1e-7. Tracks whose label occurs once have no
    relevant result and are left out (`n_queries`). precision_at_10 uses
    k = min(10, n_test - 1).
    """
    train = _embeddings(train_emb, "training embeddings")
    test = _embeddings(test_emb, "test embeddings")
    labels = np.asarray(test_labels)
    if labels.shape != (len(test),):
        raise ValueError(f"test_labels: expected ({len(test)},), got shape {labels.shape}")
    if len(test) < 2:
        raise ValueError("retrieval needs at least two test tracks")
    tr, te = scalers.fit_apply(scaler, train, test)
    ctx = distances.fit_context(distance, tr, minkowski_p)
    if "thresholds" in ctx:  # 0/1 codes survive AccuracyCalculator's float32 cast exactly
        te = (te > ctx["thresholds"]).astype(np.float64)
        ctx = {"thresholds": np.full(te.shape[1], 0.5)}
    _, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    # enough neighbours for precision@10 and for R = (tracks of the label) - 1
    k = "max_bin_count" if counts.max() - 1 >= RETRIEVAL_K else min(RETRIEVAL_K, len(te) - 1)
    calc = _retrieval_calculator(distance, ctx, k)
    out = calc.get_accuracy(te, codes.astype(np.int64))
    return {
        "distance": distance,
        "scaler": scaler,
        "precision_at_1": float(out["precision_at_1"]),
        "precision_at_10": float(out["precision_at_10"]),
        "r_precision": float(out["r_precision"]),
        "map_at_r": float(out["mean_average_precision_at_r"]),
        "n_queries": int((counts[codes] >= 2).sum()),
    }


# ---------------------------------------------------------------- confusion


def confusion_counts(
    pair_dist: np.ndarray, quartets: np.ndarray, odd: np.ndarray, test_labels
) -> tuple[list[str], np.ndarray]:
    """Which labels the wrong answers put together, as a symmetric (L, L) matrix.

    pair_dist (q, 3) as in `tie_scores`, quartets (q, 3), odd (q,), test_labels (n_test,).
    A wrong answer judges a pair closest that is not the right one; that pair's two labels
    are the confusion. Each quartet adds its chance of choosing each wrong pair (1/k per
    wrong tied pair) to [label_x, label_y] and to [label_y, label_x] (once on the
    diagonal), so the upper triangle with the diagonal sums to the number of wrong answers,
    q * (1 - accuracy). Returns (label names, matrix).
    """
    names, lab = np.unique(np.asarray(test_labels), return_inverse=True)
    lab = lab.ravel()
    _, tied = tie_scores(pair_dist, odd)
    k = tied.sum(axis=1)
    m = np.zeros((len(names), len(names)))
    for j, (x, y) in enumerate(PAIRS):
        w = tied[:, j] / k * (odd != j)
        la, lb = lab[quartets[:, x]], lab[quartets[:, y]]
        np.add.at(m, (la, lb), w)
        off = la != lb
        np.add.at(m, (lb[off], la[off]), w[off])
    return [str(n) for n in names], m


# ---------------------------------------------------------------- the whole evaluation


def _best_summary(rows: list[dict]) -> dict:
    best = max(range(len(rows)), key=lambda c: (rows[c]["accuracy"], -c))
    r = rows[best]
    return {k: r[k] for k in ("distance", "scaler", "accuracy", "ci_low", "ci_high", "tie_rate")}


def _evaluate(model_train, model_test, baselines, quartets, odd, test_labels, params, seed):
    """`run`'s result plus what the plots need."""
    for reserved in ("model", "chance"):
        if reserved in baselines:
            raise ValueError(f"baselines: the name '{reserved}' is reserved; rename that baseline")
    test = _embeddings(model_test, "model test embeddings")
    labels = np.asarray(test_labels)
    if labels.shape != (len(test),):
        raise ValueError(f"test_labels: expected ({len(test)},), got shape {labels.shape}")
    quartets, odd = check_quartets(quartets, odd, len(test))
    for name, (_, b_test) in baselines.items():
        if len(b_test) != len(test):
            raise ValueError(f"baseline '{name}': {len(b_test)} test rows, the model has {len(test)}")
    p, n_cells = params.minkowski_p, len(CELLS)
    sets = {"model": (model_train, model_test), **baselines}
    scores, ties = {}, {}
    for name, (tr, te) in tqdm(sets.items(), desc="evaluation grid", unit="embedding"):
        scores[name], ties[name] = cell_scores(tr, te, quartets, odd, p)
    names = list(sets)
    all_scores = np.hstack([scores[n] for n in names] + [np.full((len(odd), 1), CHANCE)])
    means = bootstrap_means(all_scores, params.bootstrap, seed)
    col = {n: slice(i * n_cells, (i + 1) * n_cells) for i, n in enumerate(names)}
    grids = {n: _grid_rows(scores[n], ties[n], means[:, col[n]], params.confidence) for n in names}

    head = headline(scores["model"], means[:, col["model"]], params.confidence)
    best_col = CELLS.index((head["best_distance"], head["best_scaler"]))
    head["tie_rate"] = grids["model"][best_col]["tie_rate"]
    summaries = {n: _best_summary(grids[n]) for n in names[1:]}
    summaries["chance"] = {
        "distance": None, "scaler": None, "accuracy": CHANCE, "ci_low": CHANCE,
        "ci_high": CHANCE, "tie_rate": 0.0,
    }
    def margin_over(name: str) -> dict:
        """The model's best cell minus baseline `name`'s best cell, with its paired interval."""
        if name == "chance":
            other = all_scores.shape[1] - 1
        else:
            other = col[name].start + CELLS.index((summaries[name]["distance"], summaries[name]["scaler"]))
        lo, hi = percentile_ci(means[:, col["model"].start + best_col] - means[:, other], params.confidence)
        return {"margin": head["accuracy"] - summaries[name]["accuracy"], "ci_low": float(lo),
                "ci_high": float(hi), "significant": bool(lo > 0)}

    margins = {n: margin_over(n) for n in summaries}
    base = max(summaries, key=lambda n: summaries[n]["accuracy"])
    head.update(
        best_baseline=base,
        best_baseline_accuracy=summaries[base]["accuracy"],
        margin_over_baseline=margins[base]["margin"],
        margin_ci_low=margins[base]["ci_low"],
        margin_ci_high=margins[base]["ci_high"],
        margin_significant=margins[base]["significant"],
        n_quartets=int(len(odd)),
        bootstrap=int(params.bootstrap),
        confidence=float(params.confidence),
    )
    retr = retrieval(model_train, model_test, labels, head["best_distance"], head["best_scaler"], p)
    result = {
        "headline": head,
        "grid": grids["model"],
        "baselines": summaries,
        "margins": margins,  # the model's best cell over each baseline's best cell, paired
        "baseline_grids": {n: grids[n] for n in names[1:]},
        "retrieval": retr,
        "n_quartets": int(len(odd)),
    }
    return result, {"quartets": quartets, "odd": odd, "labels": labels}


def run(
    model_train,
    model_test,
    baselines: dict[str, tuple[np.ndarray, np.ndarray]],
    quartets,
    odd,
    test_labels,
    params: EvaluateParams,
    seed: int,
) -> dict:
    """The whole evaluation: the content of metrics/eval.json.

    model_train (n_train, d) and model_test (n_test, d): the learned embeddings of the
    training and test tracks. baselines: name -> (train (n_train, f), test (n_test, f)),
    e.g. a random-weights network and `handcrafted_baselines`; each goes through the same
    grid and the same quartets (q, 3) / odd (q,); chance (exactly 1/3) is added.
    test_labels (n_test,): labels for retrieval. Returns
    {"headline": flat scalars (best cell, CI, runner-up test, chance test, margin over the
    best baseline with its paired CI), "grid": 27 rows, "baselines": best cell per
    baseline, "baseline_grids": 27 rows per baseline, "retrieval": {...}, "n_quartets": q}.
    The best cell is chosen on these same quartets, for the model and each baseline alike,
    so its accuracy is a slightly optimistic estimate for all of them.
    """
    return _evaluate(model_train, model_test, baselines, quartets, odd, test_labels, params, seed)[0]


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(result: dict, path: str | Path) -> Path:
    """Write an evaluation result as indented JSON (NaN -> null), creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(result), indent=2, allow_nan=False) + "\n")
    return path


def evaluate_and_plot(
    model_train,
    model_test,
    baselines: dict[str, tuple[np.ndarray, np.ndarray]],
    quartets,
    odd,
    test_labels,
    params: EvaluateParams,
    seed: int,
    metrics_path: str | Path = "metrics/eval.json",
    plots_dir: str | Path = "plots",
) -> dict:
    """`run`, then write metrics_path (JSON) and the plots; returns the result.

    Writes in plots_dir: grid.png (accuracy per cell), grid.csv (the same, tidy, for
    `dvc plots`), baselines.png and baselines.csv (best cell of the model and of each
    baseline), embedding_map.png (test tracks in 2-D by label, under the best cell),
    confusion.png and confusion.csv (label pairs the wrong answers put together).
    """
    from songspace import plots

    result, det = _evaluate(model_train, model_test, baselines, quartets, odd, test_labels, params, seed)
    write_json(result, metrics_path)
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    head = result["headline"]
    best = (head["best_distance"], head["best_scaler"])

    plots.write_grid_csv(result["grid"], plots_dir / "grid.csv")
    plots.grid_heatmap(result["grid"], plots_dir / "grid.png", best=best)
    summary = {"model": {k: head[k] for k in ("accuracy", "ci_low", "ci_high")}}
    summary["model"].update(distance=best[0], scaler=best[1])
    summary.update(result["baselines"])
    plots.write_baselines_csv(summary, plots_dir / "baselines.csv")
    plots.baseline_bars(summary, plots_dir / "baselines.png")

    tr, te = scalers.fit_apply(best[1], _embeddings(model_train, "training embeddings"),
                               _embeddings(model_test, "test embeddings"))
    ctx = distances.fit_context(best[0], tr, params.minkowski_p)
    dist_matrix = None
    if len(te) <= plots.TSNE_MAX_TRACKS:
        dist_matrix = distances.pairwise(best[0], te, te, **ctx)
    plots.embedding_map(
        te, det["labels"], plots_dir / "embedding_map.png", dist_matrix=dist_matrix,
        seed=seed, what=f"{best[0]} after {best[1]}",
    )
    pair_dist = quartet_pair_distances(te, det["quartets"], best[0], ctx)
    names, matrix = confusion_counts(pair_dist, det["quartets"], det["odd"], det["labels"])
    plots.write_confusion_csv(names, matrix, plots_dir / "confusion.csv")
    plots.confusion_heatmap(names, matrix, plots_dir / "confusion.png", what=_cell_name(best))
    return result


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
