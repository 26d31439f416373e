"""Each grid distance in faiss: what an index stores, the faiss index that searches it, and
recall of an approximate index against the exact one.

The nine distances map onto faiss as follows; every flat form is exact, returning the grid's
own distance values. The stored vectors are the distance's own per-row preparation
(`distances.Distance.prepare`), so the index and the grid compute the same numbers:

| distance    | vectors stored                                   | faiss index (flat)           |
|-------------|--------------------------------------------------|------------------------------|
| cosine      | scaled rows divided by their L2 norm             | IndexFlatIP, d = 1 - ip      |
| correlation | rows centred on their own mean, then as cosine   | IndexFlatIP, d = 1 - ip      |
| euclidean   | scaled rows                                      | IndexFlatL2, d = sqrt(l2^2)  |
| seuclidean  | rows divided by the training std per dimension   | IndexFlatL2, d = sqrt(l2^2)  |
| cityblock   | scaled rows                                      | IndexFlat METRIC_L1          |
| chebyshev   | scaled rows                                      | IndexFlat METRIC_Linf        |
| minkowski   | scaled rows                                      | IndexFlat METRIC_Lp (p), d = s^(1/p) |
| hamming     | bits (value > training median), packed           | IndexBinaryFlat, d = bits / dim |
| kulsinski   | the same bits                                    | none: numpy brute force with |
|             |                                                  | `distance_cores.kulsinski_pairwise`|

Kulsinski is not a metric (d(u, u) != 0) and has no faiss form: its search is always exact
brute force with the grid's own function, chunked over the library.

Above `approximate_above` tracks the flat index is replaced by HNSW: IndexHNSWFlat with the
same metric for the float forms (inner product, L2, and also L1 / Linf / Lp, which faiss's
HNSW supports through the flat storage's metric), IndexBinaryHNSW for hamming; kulsinski
stays brute force (exact, O(n) per query). An approximate index's recall@10 against the
exact one is measured on a sample of library tracks at build time (`measure_recall`).
"""
from __future__ import annotations

import faiss
import numpy as np
from tqdm.auto import tqdm

from songspace import distances

RECALL_K = 10
RECALL_SAMPLE = 500          # library tracks queried to measure an approximate index's recall
ADD_CHUNK = 50_000           # vectors added to a flat index at a time (progress bar steps)
BRUTE_CHUNK = 65_536         # library rows per block of a brute-force search
# A returned neighbour counts as a hit when it is no farther than the exact k-th neighbour
# within this relative tolerance (float32 distances computed along different code paths).
RECALL_RTOL = 1e-5

# distance -> (kind of vectors, faiss metric name); "brute": no faiss form
FORMS: dict[str, tuple[str, str]] = {
    "cosine": ("float", "ip"),
    "correlation": ("float", "ip"),
    "euclidean": ("float", "l2"),
    "seuclidean": ("float", "l2"),
    "cityblock": ("float", "l1"),
    "chebyshev": ("float", "linf"),
    "minkowski": ("float", "lp"),
    "hamming": ("binary", "hamming"),
    "kulsinski": ("bool", "brute"),
}
_FAISS_METRICS = {
    "ip": faiss.METRIC_INNER_PRODUCT,
    "l2": faiss.METRIC_L2,
    "l1": faiss.METRIC_L1,
    "linf": faiss.METRIC_Linf,
    "lp": faiss.METRIC_Lp,
}


def index_vectors(distance: str, scaled: np.ndarray, ctx: dict) -> np.ndarray:
    """What the index stores for scaled embeddings (n, d) under `distance`.

    float forms: (n, d) float32 (normalised, centred or standardised as the table in the module
    docstring says); hamming: packed bits (n, ceil(d / 8)) uint8; kulsinski: bits (n, d) bool.
    """
    kind, metric = FORMS[distances.get(distance).name]
    x = np.asarray(scaled, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings: expected (n, d), got shape {x.shape}")
    if kind in ("binary", "bool"):
        bits = x > np.asarray(ctx["thresholds"], dtype=np.float64)
        return np.packbits(bits, axis=1) if kind == "binary" else bits
    if distance == "correlation":
        x = x - x.mean(axis=1, keepdims=True)
    if metric == "ip":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        # all-zero rows stay zero: inner product 0, distance 1, as the grid defines it
        x = x / np.where(norm == 0, 1.0, norm)
    if distance == "seuclidean":
        var = np.asarray(ctx["variances"], dtype=np.float64)
        with np.errstate(divide="ignore"):
            x = x / np.sqrt(np.where(var == 0, np.inf, var))  # zero variance: weight 0
    return np.ascontiguousarray(x, dtype=np.float32)


def grid_distance(distance: str, raw: np.ndarray, ctx: dict, dim: int) -> np.ndarray:
    """faiss's raw search scores (q, k) -> the grid's distance values (q, k) float64."""
    metric = FORMS[distance][1]
    raw = np.asarray(raw, dtype=np.float64)
    if metric == "ip":
        return np.clip(1.0 - raw, 0.0, 2.0)
    if metric == "l2":
        return np.sqrt(np.maximum(raw, 0.0))
    if metric == "lp":
        return np.maximum(raw, 0.0) ** (1.0 / float(ctx["p"]))
    if metric == "hamming":
        return raw / dim
    return raw


class BruteForce:
    """Exact search with the grid's own pairwise function, for distances faiss cannot express.

    Holds the stored vectors (n, d) and mimics the part of faiss's interface the index uses:
    `ntotal`, `add(x)`, `search(q, k) -> (scores (q, k), ids (q, k))`, -1 ids past the end.
    """

    def __init__(self, distance: str, ctx: dict, dim: int):
        self.distance, self.ctx, self.d = distance, dict(ctx), dim
        self.vectors = np.zeros((0, dim), dtype=bool)
        self.ntotal = 0

    def add(self, x: np.ndarray) -> None:
        self.vectors = np.concatenate([self.vectors, np.asarray(x, dtype=self.vectors.dtype)])
        self.ntotal = len(self.vectors)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ctx = {key: v for key, v in self.ctx.items() if key != "thresholds"}  # inputs are bits
        best_d = np.full((len(q), 0), np.inf)
        best_i = np.zeros((len(q), 0), dtype=np.int64)
        for start in range(0, self.ntotal, BRUTE_CHUNK):
            block = self.vectors[start : start + BRUTE_CHUNK]
            d = distances.pairwise(self.distance, q, block, **ctx)
            best_d = np.hstack([best_d, d])
            best_i = np.hstack([best_i, np.broadcast_to(start + np.arange(len(block)), d.shape)])
            if best_d.shape[1] > k:
                keep = np.argpartition(best_d, k - 1, axis=1)[:, :k]
                best_d = np.take_along_axis(best_d, keep, axis=1)
                best_i = np.take_along_axis(best_i, keep, axis=1)
        order = np.argsort(best_d, axis=1, kind="stable")
        best_d = np.take_along_axis(best_d, order, axis=1)
        best_i = np.take_along_axis(best_i, order, axis=1)
        pad = k - best_d.shape[1]
        if pad > 0:
            best_d = np.hstack([best_d, np.full((len(q), pad), np.inf)])
            best_i = np.hstack([best_i, np.full((len(q), pad), -1)])
        return best_d, best_i


def new_searcher(distance: str, dim: int, ctx: dict, approximate: bool = False,
                 hnsw_m: int = 32, ef_search: int = 128):
    """An empty index for `distance` on dim-dimensional embeddings (flat, or HNSW if approximate)."""
    kind, metric = FORMS[distances.get(distance).name]
    if kind == "bool":
        return BruteForce(distance, ctx, dim)
    if kind == "binary":
        nbits = 8 * ((dim + 7) // 8)  # packbits pads with zeros: equal bits, no distance
        if not approximate:
            return faiss.IndexBinaryFlat(nbits)
        index = faiss.IndexBinaryHNSW(nbits, hnsw_m)
        index.hnsw.efSearch = ef_search
        return index
    fmetric = _FAISS_METRICS[metric]
    if approximate:
        index = faiss.IndexHNSWFlat(dim, hnsw_m, fmetric)
        index.hnsw.efSearch = ef_search
        storage = faiss.downcast_index(index.storage)
    else:
        index = storage = faiss.IndexFlat(dim, fmetric)
    if metric == "lp":
        index.metric_arg = storage.metric_arg = float(ctx["p"])
    return index


def describe_searcher(searcher) -> str:
    """A one-line description: class, metric, HNSW settings."""
    if isinstance(searcher, BruteForce):
        return f"numpy brute force ({searcher.distance}, exact)"
    name = type(searcher).__name__
    if hasattr(searcher, "hnsw"):
        return f"{name} M={searcher.hnsw.nb_neighbors(1)} efSearch={searcher.hnsw.efSearch} (approximate)"
    return f"{name} (exact)"


def _search(searcher, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = max(1, min(k, searcher.ntotal)) if searcher.ntotal else 1
    if searcher.ntotal == 0:
        return np.full((len(q), k), np.inf), np.full((len(q), k), -1, dtype=np.int64)
    if len(q) == 1 and hasattr(faiss, "omp_get_max_threads"):
        # One query is too little work to share: a second thread only waits for the first
        # (measured on a busy 2-core machine: 0.07 ms with one thread, 16 ms with two).
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            d, i = searcher.search(q, k)
        finally:
            faiss.omp_set_num_threads(threads)
    else:
        d, i = searcher.search(q, k)
    return np.asarray(d, dtype=np.float64), np.asarray(i, dtype=np.int64)


def _add(searcher, x: np.ndarray, progress: bool = False) -> None:
    if hasattr(searcher, "hnsw"):
        # One call: an HNSW graph grown by several add() batches has markedly lower recall
        # (measured: 300k vectors in 50k batches, recall@10 0.89 against 0.99 in one batch).
        with tqdm(total=len(x), desc="HNSW", unit="vector", disable=not progress) as bar:
            searcher.add(x)
            bar.update(len(x))
        return
    starts = range(0, len(x), ADD_CHUNK)
    for s in tqdm(starts, desc="index", unit="chunk", disable=not progress or len(starts) < 2):
        searcher.add(x[s : s + ADD_CHUNK])


def recall_at_k(exact_dist: np.ndarray, approx_dist: np.ndarray, approx_ids: np.ndarray,
                k: int = RECALL_K) -> float:
    """Share of approximate neighbours (q, k) no farther than the exact k-th neighbour.

    For continuous data this is the usual |approx ids & exact ids| / k; with ties at the k-th
    distance (binary codes tie often) any tied neighbour is as good as the exact one returned.
    """
    kth = exact_dist[:, k - 1 : k]
    ok = (approx_ids[:, :k] >= 0) & (approx_dist[:, :k] <= kth + RECALL_RTOL * np.abs(kth) + 1e-9)
    return float(ok.mean())


def rescore(distance: str, q: np.ndarray, vectors: np.ndarray, ids: np.ndarray, ctx: dict,
            dim: int) -> np.ndarray:
    """The grid distance of query j to stored vector ids[j, c], recomputed in float64: (nq, k).

    q and vectors as the index stores them (`index_vectors`); ids -1 give inf. faiss computes
    in float32 along several code paths (BLAS for batches, direct loops for single queries),
    so two searches can order near-ties differently; recall is judged on these values.
    """
    kind, metric = FORMS[distance]
    safe = np.where(ids >= 0, ids, 0)
    if kind == "binary":
        xor = np.bitwise_xor(vectors[safe], q[:, None, :])
        out = np.unpackbits(xor, axis=2).sum(axis=2) / dim
    else:
        diff = vectors[safe].astype(np.float64) - q[:, None, :].astype(np.float64)
        if metric == "ip":
            out = 1.0 - np.einsum("jcd,jd->jc", vectors[safe].astype(np.float64), q.astype(np.float64))
        elif metric == "l2":
            out = np.sqrt((diff**2).sum(axis=2))
        elif metric == "l1":
            out = np.abs(diff).sum(axis=2)
        elif metric == "linf":
            out = np.abs(diff).max(axis=2)
        else:
            p = float(ctx["p"])
            out = (np.abs(diff) ** p).sum(axis=2) ** (1.0 / p)
    return np.where(ids >= 0, out, np.inf)


def measure_recall(approx, exact, vectors: np.ndarray, distance: str, ctx: dict, dim: int,
                   k: int = RECALL_K, sample: int = RECALL_SAMPLE, seed: int = 0) -> dict:
    """recall@k of `approx` against `exact` (both holding `vectors`), queried with a sample of them.

    Each query is a library vector; its own entry is dropped from both result lists, so the
    trivial self-match does not count. Both answers are rescored in float64 (`rescore`), then
    `recall_at_k`. Returns {"recall_at_k", "k", "queries"}.
    """
    rng = np.random.default_rng(seed)
    n = len(vectors)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    q = vectors[rows]
    kk = min(k + 1, n)
    _, ei = _search(exact, q, kk)
    _, ai = _search(approx, q, kk)

    def drop_self(i):
        keep = i != rows[:, None]
        order = np.argsort(~keep, axis=1, kind="stable")[:, : kk - 1]  # stable: rank order kept
        ids = np.take_along_axis(i, order, axis=1)
        return rescore(distance, q, vectors, ids, ctx, dim), ids

    ed, _ = drop_self(ei)
    ad, ai = drop_self(ai)
    kr = min(k, ed.shape[1])
    if kr == 0:
        return {"recall_at_k": 1.0, "k": k, "queries": int(len(rows))}
    return {"recall_at_k": recall_at_k(np.sort(ed, axis=1), ad, ai, kr), "k": k, "queries": int(len(rows))}
