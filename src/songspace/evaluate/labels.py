"""How the embeddings group labels: retrieval under one grid cell, and which labels the wrong
odd-one-out answers confuse."""
from __future__ import annotations

import numpy as np

from songspace import distances, scalers
from songspace.evaluate.scores import PAIRS, _embeddings, tie_scores

RETRIEVAL_K = 10  # precision@10
_KNN_BLOCK = 1024  # retrieval queries ranked per block



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
