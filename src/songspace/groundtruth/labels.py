"""Quartets and triplets drawn from labels: two songs of one label and one of another, distinct
draws, shuffled; and the two triplets each quartet gives."""
from __future__ import annotations


import numpy as np
import pandas as pd

from songspace.ingest import UNLABELLED
from songspace.groundtruth.files import MAX_DRAW_ROUNDS, QUARTET_COLUMNS, TRIPLET_COLUMNS



def possible_draws(labels: np.ndarray) -> int:
    """Distinct (unordered pair of one label, odd song of another) among tracks with `labels`:
    sum over labels of C(n_l, 2) * (N - n_l)."""
    _, counts = np.unique(labels, return_counts=True)
    n = len(labels)
    return int(sum(c * (c - 1) // 2 * (n - c) for c in counts))


def draw_pairs_with_odd(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(m, 3) indices into `labels`: rows (a, b, odd), label[a] == label[b] != label[odd].

    m = min(n, possible_draws(labels)); rows are distinct as (unordered {a, b}, odd). The
    pair's label is drawn uniformly among labels with >= 2 tracks (classes weigh equally), the
    pair and the odd song uniformly within. Small pools are enumerated and subsampled.
    """
    labels = np.asarray(labels)
    possible = possible_draws(labels)
    target = min(n, possible)
    if target <= 0:
        return np.zeros((0, 3), dtype=np.int64)
    codes = np.unique(labels, return_inverse=True)[1].ravel()
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.cumsum(counts) - counts
    total = len(labels)
    if possible <= 2 * target:
        rows = _enumerate(order, counts, starts, total)
        pick = np.sort(rng.choice(len(rows), size=target, replace=False))
        rows = rows[pick]
        rows = rows[rng.permutation(target)]
        flip = rng.random(target) < 0.5
        rows[flip, :2] = rows[flip, 1::-1]
        return rows
    pair_labels = np.flatnonzero((counts >= 2) & (counts < total))
    rows = np.zeros((0, 3), dtype=np.int64)
    for _ in range(MAX_DRAW_ROUNDS):
        need = target - len(rows)
        if need <= 0:
            break
        m = 2 * need + 16
        lab = pair_labels[rng.integers(len(pair_labels), size=m)]
        c, s = counts[lab], starts[lab]
        i = rng.integers(c)
        j = rng.integers(c - 1)
        j = j + (j >= i)  # j != i
        k = rng.integers(total - c)
        k = k + c * (k >= s)  # skip the pair label's block
        new = np.stack([order[s + i], order[s + j], order[k]], axis=1)
        rows = _unique_rows(np.concatenate([rows, new]))
    return rows[:target]


def _enumerate(order: np.ndarray, counts: np.ndarray, starts: np.ndarray, total: int) -> np.ndarray:
    parts = []
    for c, s in zip(counts, starts):
        if c < 2 or c == total:
            continue
        members = order[s:s + c]
        others = np.concatenate([order[:s], order[s + c:]])
        a, b = np.triu_indices(c, k=1)
        pa = np.repeat(members[a], len(others))
        pb = np.repeat(members[b], len(others))
        po = np.tile(others, len(a))
        parts.append(np.stack([pa, pb, po], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """Rows distinct as ({a, b}, odd), keeping first occurrences in order."""
    canon = np.stack([rows[:, :2].min(axis=1), rows[:, :2].max(axis=1), rows[:, 2]], axis=1)
    _, first = np.unique(canon, axis=0, return_index=True)
    return rows[np.sort(first)]


def shuffle_quartets(ids: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """(song1, song2, song3, odd) from (a, b, odd) index rows, the three songs in random order."""
    perm = rng.permuted(np.tile(np.arange(3), (len(draws), 1)), axis=1)
    three = np.take_along_axis(draws, perm, axis=1)
    return pd.DataFrame({
        "song1": ids[three[:, 0]], "song2": ids[three[:, 1]], "song3": ids[three[:, 2]],
        "odd": ids[draws[:, 2]],
    }, columns=list(QUARTET_COLUMNS))


def derive_quartets(tracks: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Up to n distinct quartets from the tracks given (one split's): two of one label + one
    of another, which is the odd song."""
    tracks = tracks[tracks["label"] != UNLABELLED]
    draws = draw_pairs_with_odd(tracks["label"].to_numpy(), n, rng)
    return shuffle_quartets(tracks["track_id"].to_numpy(), draws, rng)


def derive_triplets(tracks: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Up to n distinct (anchor, positive, negative): anchor and positive share a label."""
    tracks = tracks[tracks["label"] != UNLABELLED]
    ids = tracks["track_id"].to_numpy()
    d = draw_pairs_with_odd(tracks["label"].to_numpy(), n, rng)
    return pd.DataFrame(
        {"anchor": ids[d[:, 0]], "positive": ids[d[:, 1]], "negative": ids[d[:, 2]]},
        columns=list(TRIPLET_COLUMNS))


def quartet_triplets(quartets: pd.DataFrame) -> pd.DataFrame:
    """Two triplets per quartet: each non-odd song as anchor, the other as positive, the odd
    song as negative."""
    three = quartets[["song1", "song2", "song3"]].to_numpy()
    odd = quartets["odd"].to_numpy()
    keep = three != odd[:, None]                      # (n, 3), two True per row
    pair = three[keep].reshape(-1, 2)
    anchors = np.stack([pair[:, 0], pair[:, 1]], axis=1).ravel()
    positives = np.stack([pair[:, 1], pair[:, 0]], axis=1).ravel()
    return pd.DataFrame({"anchor": anchors, "positive": positives, "negative": np.repeat(odd, 2)},
                        columns=list(TRIPLET_COLUMNS))
