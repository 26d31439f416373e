"""The similar-song index: a library's embeddings in a faiss index, under one cell of the grid.

An index is built for one (distance, scaler) cell: the scaler and whatever the distance needs
(`distances.fit_context`: minkowski's p, seuclidean's variances, the binary codes' medians)
are fitted on the *training* tracks' embeddings, as in evaluation, then every track of the
library is scaled, mapped onto faiss and added. The nine distances map onto faiss as follows;
every flat form is exact, returning the grid's own distance values:

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
|             |                                                  | `distances.kulsinski_pairwise` |

Kulsinski is not a metric (d(u, u) != 0) and has no faiss form: its search is always exact
brute force with the grid's own function, chunked over the library.

Above `approximate_above` tracks the flat index is replaced by HNSW: IndexHNSWFlat with the
same metric for the float forms (inner product, L2, and also L1 / Linf / Lp, which faiss's
HNSW supports through the flat storage's metric), IndexBinaryHNSW for hamming; kulsinski
stays brute force (exact, O(n) per query). An approximate index's recall@10 against the
exact one is measured on a sample of library tracks at build time and stored in meta.json.

On disk an index is a folder (`FILES`): meta.json (model identity: checkpoint sha256 and
model name; cell; index type; build time; recall), tracks.csv (track_id, path, label, sha1),
embeddings.npy (raw model embeddings, (n, d) float32), state.npz (the fitted scaler and the
distance context) and vectors.faiss. The checkpoint's sha256 is checked on opening, so an
index built with another model is refused (`StaleIndex`), never silently used.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from songspace import distances, scalers
from songspace.errors import UserError

FORMAT_VERSION = 1
DEFAULT_INDEX_DIR = Path("data/index")
DEFAULT_MODEL_PATH = Path("data/models/best.pt")
DEFAULT_EVAL_JSON = Path("metrics/eval.json")
FILES = {
    "meta": "meta.json",
    "tracks": "tracks.csv",
    "embeddings": "embeddings.npy",
    "state": "state.npz",
    "vectors": "vectors.faiss",
}
TRACK_TABLE = ("track_id", "path", "label", "sha1")
RECALL_K = 10
LOCK_TIMEOUT_S = 600.0       # how long a reader or writer waits for another one's lock
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


class LibraryError(UserError):
    """A problem with the index, the model or a query that a user can fix; the message says how."""


class IndexNotFound(LibraryError):
    """No index where one was expected."""


class StaleIndex(LibraryError):
    """The index was built with another model checkpoint than the one given."""


class UnknownTrack(LibraryError):
    """A query names neither an existing file nor a track of the index."""


# ---------------------------------------------------------------- choosing the cell


def resolve_cell(distance: str, scaler: str, eval_json: str | Path | None = DEFAULT_EVAL_JSON
                 ) -> tuple[str, str, str]:
    """The (distance, scaler) to index, and where the choice came from.

    `best` for either takes the evaluation's choice from eval_json (metrics/eval.json): the
    headline's best cell when both are `best`; with one of them fixed, the best cell of the
    grid with that distance (or scaler). Names are checked against the registries.
    """
    if distance != "best":
        distances.get(distance)
    if scaler != "best":
        scalers.make(scaler)
    if distance != "best" and scaler != "best":
        return distance, scaler, "params.yaml index.distance / index.scaler"
    from songspace import evaluate

    path = Path(eval_json) if eval_json is not None else None
    if path is None or not path.exists():
        raise LibraryError(
            f"index.distance/index.scaler is 'best' but {path or 'no evaluation file'} does not "
            "exist: run `dvc repro evaluate`, or name a distance and a scaler in params.yaml"
        )
    try:
        result = evaluate.read_json(path)
    except evaluate.EvalJsonError as err:
        raise LibraryError(str(err)) from None
    rows = [r for r in result.get("grid") or [] if r.get("accuracy") is not None]
    if distance != "best" or scaler != "best":
        fixed = {"distance": distance} if distance != "best" else {"scaler": scaler}
        (key, value), = fixed.items()
        match = [r for r in rows if r.get(key) == value]
        if match:
            best = max(match, key=lambda r: r["accuracy"])
            return best["distance"], best["scaler"], f"{path} grid: best cell with {key} {value}"
        raise LibraryError(f"{path}: the grid has no cell with {key} '{value}'")
    d, s = evaluate.best_cell(result)
    if not d or not s:
        raise LibraryError(f"{path}: no best cell in its headline (keys best_distance, best_scaler)")
    distances.get(d), scalers.make(s)
    return d, s, f"{path} headline (best cell)"


# ---------------------------------------------------------------- distance -> faiss


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


# ---------------------------------------------------------------- scaler state


def scaler_state(scaler) -> dict[str, np.ndarray]:
    """The fitted attributes of a scikit-learn scaler (`mean_`, `scale_`, ...) as arrays."""
    return {k: np.asarray(v) for k, v in vars(scaler).items() if k.endswith("_") and not k.startswith("_")}


def restore_scaler(name: str, state: dict[str, np.ndarray]):
    """A scaler `name` with the fitted attributes `state` (from `scaler_state`)."""
    scaler = scalers.make(name)
    for k, v in state.items():
        setattr(scaler, k, v.item() if v.ndim == 0 else v)
    return scaler


# ---------------------------------------------------------------- the index


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(path: str | Path, model_name: str | None = None) -> dict:
    """What identifies a checkpoint: {"path", "sha256", "model_name"}."""
    return {"path": str(path), "sha256": file_sha256(path), "model_name": model_name}


@dataclass
class SongIndex:
    """A library's embeddings searchable under one (distance, scaler) cell.

    tracks: one row per indexed track (`TRACK_TABLE`), row i <-> faiss id i <-> embeddings[i].
    embeddings: raw model embeddings (n, d) float32. scaler: the fitted scaler; ctx: the
    distance's fitted context (`distances.fit_context`). searcher: the faiss index (or
    `BruteForce`). meta: JSON-able facts (model identity, build time, recall, ...).
    """

    distance: str
    scaler_name: str
    scaler: object
    ctx: dict
    tracks: pd.DataFrame
    embeddings: np.ndarray
    searcher: object
    meta: dict = field(default_factory=dict)

    @property
    def n_tracks(self) -> int:
        return len(self.tracks)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def approximate(self) -> bool:
        return hasattr(self.searcher, "hnsw")

    def vectors(self, raw: np.ndarray) -> np.ndarray:
        """Raw embeddings (n, d) -> what the searcher stores (scaled, then `index_vectors`)."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != self.dim:
            raise ValueError(f"embeddings: expected (n, {self.dim}), got shape {raw.shape}")
        return index_vectors(self.distance, self.scaler.transform(raw), self.ctx)

    @classmethod
    def build(cls, embeddings: np.ndarray, tracks: pd.DataFrame, train_mask: np.ndarray,
              distance: str, scaler: str, minkowski_p: float = distances.DEFAULT_MINKOWSKI_P,
              approximate_above: int = 200_000, hnsw_m: int = 32, hnsw_ef_search: int = 128,
              model: dict | None = None, seed: int = 0, progress: bool = True,
              extra_meta: dict | None = None) -> "SongIndex":
        """Index the tracks' raw embeddings (n, d) under (distance, scaler).

        tracks: a table with at least track_id (and path, label, sha1 when known), in the order
        of `embeddings`. train_mask (n,) bool: the rows the scaler and the distance context are
        fitted on (the training tracks; all rows when none is marked). HNSW replaces the flat
        index when n > approximate_above; its recall@10 is then measured and stored.
        """
        t0 = time.perf_counter()
        distances.get(distance)
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) == 0:
            raise ValueError(f"embeddings: expected a non-empty (n, d) array, got shape {emb.shape}")
        if not np.all(np.isfinite(emb)):
            raise ValueError("embeddings: NaN or inf in the model's output")
        if len(tracks) != len(emb):
            raise ValueError(f"{len(tracks)} tracks but {len(emb)} embeddings")
        table = _track_table(tracks)
        if table["track_id"].duplicated().any():
            dup = table.loc[table["track_id"].duplicated(), "track_id"].iloc[0]
            raise ValueError(f"track_id '{dup}' appears twice in the track table")
        mask = np.asarray(train_mask, dtype=bool)
        if mask.shape != (len(emb),):
            raise ValueError(f"train_mask: expected ({len(emb)},), got {mask.shape}")
        fit_rows = emb[mask] if mask.any() else emb
        fitted = scalers.fit(scaler, fit_rows)
        ctx = distances.fit_context(distance, fitted.transform(fit_rows.astype(np.float64)), minkowski_p)
        approximate = len(emb) > approximate_above and FORMS[distance][1] != "brute"
        searcher = new_searcher(distance, emb.shape[1], ctx, approximate, hnsw_m, hnsw_ef_search)
        index = cls(distance, scaler, fitted, ctx, table, emb, searcher)
        vecs = index.vectors(emb)
        _add(searcher, vecs, progress)
        meta = {
            "format": FORMAT_VERSION,
            "model": model or {},
            "distance": distance,
            "scaler": scaler,
            "minkowski_p": float(minkowski_p),
            "kind": FORMS[distance][0],
            "faiss_metric": FORMS[distance][1],
            "searcher": describe_searcher(searcher),
            "exact": not approximate,
            "approximate_above": int(approximate_above),
            "hnsw_m": int(hnsw_m),
            "hnsw_ef_search": int(hnsw_ef_search),
            "n_tracks": int(len(emb)),
            "n_fitted_on": int(len(fit_rows)),
            "dim": int(emb.shape[1]),
            "recall": None,
        }
        if approximate:
            exact = new_searcher(distance, emb.shape[1], ctx, approximate=False)
            exact.add(vecs)
            meta["recall"] = measure_recall(searcher, exact, vecs, distance, ctx, emb.shape[1], seed=seed)
        meta["build_seconds"] = round(time.perf_counter() - t0, 3)
        meta["built_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        meta["added_tracks"] = 0
        meta.update(extra_meta or {})
        index.meta = meta
        return index

    def search(self, raw_queries: np.ndarray, k: int = 10,
               exclude: list[set[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest tracks of each raw query embedding (q, d).

        exclude: per query, track rows never to return (the query itself). Returns
        `(rows (q, k) int64, distances (q, k) float64)` nearest first, in the grid's units;
        rows past the end of a short library are -1 with distance NaN.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        k = min(k, max(1, self.n_tracks))  # no more neighbours than tracks: k = 10**9 answers at once
        q = self.vectors(np.atleast_2d(raw_queries))
        exclude = exclude or [set() for _ in range(len(q))]
        extra = max((len(e) for e in exclude), default=0)
        raw, ids = _search(self.searcher, q, k + extra)
        dist = grid_distance(self.distance, raw, self.ctx, self.dim)
        rows = np.full((len(q), k), -1, dtype=np.int64)
        out = np.full((len(q), k), np.nan)
        for j in range(len(q)):
            keep = [c for c in range(ids.shape[1]) if ids[j, c] >= 0 and ids[j, c] not in exclude[j]][:k]
            rows[j, : len(keep)] = ids[j, keep]
            out[j, : len(keep)] = dist[j, keep]
        return rows, out

    def add(self, raw: np.ndarray, tracks: pd.DataFrame, progress: bool = False) -> None:
        """Append tracks (table rows) with their raw embeddings (m, d); the fit stays as built."""
        raw = np.asarray(raw, dtype=np.float32)
        table = _track_table(tracks)
        if len(table) != len(raw):
            raise ValueError(f"{len(table)} tracks but {len(raw)} embeddings")
        clash = sorted(set(table["track_id"]) & set(self.tracks["track_id"]))
        if clash or table["track_id"].duplicated().any():
            raise ValueError(f"track_id already in the index: {(clash or list(table['track_id']))[0]}")
        _add(self.searcher, self.vectors(raw), progress)
        self.embeddings = np.concatenate([self.embeddings, raw])
        self.tracks = pd.concat([self.tracks, table], ignore_index=True)
        self.meta["n_tracks"] = self.n_tracks
        self.meta["added_tracks"] = int(self.meta.get("added_tracks", 0)) + len(table)
        self.meta["updated_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    def save(self, out_dir: str | Path) -> Path:
        """Write the index folder (`FILES`) under its lock, replacing the old folder whole.

        The new folder is written aside and renamed into place, so a crash or an error while
        writing leaves the previous index intact, and a reader never sees half of each.
        """
        with index_lock(out_dir):
            return self._write(Path(out_dir))

    def _write(self, final: Path) -> Path:
        """`save` without taking the lock (the caller holds it)."""
        _recover(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        out = final.with_name(f".{final.name}.new-{os.getpid()}")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        try:
            self._write_files(out)
            _swap_in(out, final)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return final

    def _write_files(self, out: Path) -> None:
        def put(name: str, write) -> None:
            write(out / FILES[name])

        state = {f"scaler.{k}": v for k, v in scaler_state(self.scaler).items()}
        state.update({f"ctx.{k}": np.asarray(v) for k, v in self.ctx.items()})
        put("embeddings", lambda p: _write_bytes(p, lambda f: np.save(f, self.embeddings)))
        put("state", lambda p: _write_bytes(p, lambda f: np.savez(f, **state)))
        put("tracks", lambda p: self.tracks.to_csv(p, index=False))
        vectors = out / FILES["vectors"]
        if isinstance(self.searcher, BruteForce):
            vectors.unlink(missing_ok=True)  # rebuilt from the embeddings on loading
        elif isinstance(self.searcher, faiss.IndexBinary):
            put("vectors", lambda p: faiss.write_index_binary(self.searcher, str(p)))
        else:
            put("vectors", lambda p: faiss.write_index(self.searcher, str(p)))
        # meta.json last: a folder with a meta.json is complete
        put("meta", lambda p: Path(p).write_text(json.dumps(self.meta, indent=2) + "\n"))

    @classmethod
    def load(cls, index_dir: str | Path) -> "SongIndex":
        """Read an index folder written by `save` (under its lock); `IndexNotFound` when there is none."""
        with index_lock(index_dir):
            return cls._read(Path(index_dir))

    @classmethod
    def _read(cls, folder: Path) -> "SongIndex":
        """`load` without taking the lock (the caller holds it)."""
        _recover(folder)
        meta_file = folder / FILES["meta"]
        if not meta_file.exists():
            raise IndexNotFound(
                f"{folder}: no song index here (missing {FILES['meta']}); build it with "
                "`dvc repro index`"
            )
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format')}, this songspace reads {FORMAT_VERSION}")
            tracks = pd.read_csv(folder / FILES["tracks"], dtype=str, keep_default_na=False)
            embeddings = np.load(folder / FILES["embeddings"])
            with np.load(folder / FILES["state"]) as z:
                state = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as err:
            raise IndexNotFound(f"{folder}: unreadable song index ({err}); rebuild it with `dvc repro index`") from None
        distance, scaler_name = meta["distance"], meta["scaler"]
        scaler = restore_scaler(scaler_name, {k[7:]: v for k, v in state.items() if k.startswith("scaler.")})
        ctx = {k[4:]: (v.item() if v.ndim == 0 else v) for k, v in state.items() if k.startswith("ctx.")}
        kind = FORMS[distance][0]
        if kind == "bool":
            searcher = BruteForce(distance, ctx, embeddings.shape[1])
        else:
            path = folder / FILES["vectors"]
            if not path.exists():
                raise IndexNotFound(f"{path}: missing; rebuild the index with `dvc repro index`")
            read = faiss.read_index_binary if kind == "binary" else faiss.read_index
            try:
                searcher = read(str(path))
            except RuntimeError as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else "unreadable"
                raise IndexNotFound(f"{path}: corrupt or truncated faiss index ({first}); rebuild it "
                                    "with `dvc repro index`") from None
            if hasattr(searcher, "hnsw"):  # efSearch is a search-time setting, not saved
                searcher.hnsw.efSearch = int(meta.get("hnsw_ef_search", 128))
        index = cls(distance, scaler_name, scaler, ctx, tracks, embeddings.astype(np.float32), searcher, meta)
        if kind == "bool":
            searcher.add(index.vectors(index.embeddings))
        if searcher.ntotal != len(tracks) or len(embeddings) != len(tracks):
            raise IndexNotFound(
                f"{folder}: inconsistent index ({len(tracks)} tracks, {len(embeddings)} embeddings, "
                f"{searcher.ntotal} vectors); rebuild it with `dvc repro index`"
            )
        return index

    def check_model(self, model_path: str | Path) -> None:
        """Raise `StaleIndex` unless model_path holds the very checkpoint the index was built with."""
        model = self.meta.get("model") or {}
        built = model.get("sha256")
        path = Path(model_path)
        if not path.exists():
            raise LibraryError(f"{path}: no such model checkpoint (run `dvc repro train`)")
        now = file_sha256(path)
        if built != now:
            from songspace import checkpoint

            checkpoint.load(path)  # a damaged checkpoint is named as such, not as a stale index
            raise StaleIndex(
                f"the index was built with {model.get('model_name') or 'a model'} from checkpoint "
                f"{model.get('path', '?')} (sha256 {str(built)[:12]}), but {path} is now "
                f"sha256 {now[:12]}: the index is stale; run `dvc repro index`"
            )


def index_lock(index_dir: str | Path, timeout_s: float = LOCK_TIMEOUT_S):
    """The lock every reader and writer of an index folder holds: `.<name>.lock` beside it.

    Two `songspace add` runs on one index take turns, so neither loses the other's tracks.
    """
    from filelock import FileLock, Timeout

    folder = Path(index_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder.with_name(f".{folder.name}.lock")), timeout=timeout_s)

    @contextlib.contextmanager
    def held():
        try:
            lock.acquire()
        except Timeout:
            raise LibraryError(f"{folder}: still locked by another songspace process after "
                               f"{timeout_s:g} s ({lock.lock_file})") from None
        except PermissionError:  # a read-only place: nobody can write there either
            yield
            return
        try:
            yield
        finally:
            lock.release()

    return held()


def added_list_path(index_dir: str | Path) -> Path:
    """Where the songs added with `songspace add` are listed: `added/tracks.csv` beside the index.

    DVC never overwrites it (it is an input of the `index` stage, not an output), so the songs
    listed there survive `dvc repro`: the stage embeds them again with the current model.
    """
    return Path(index_dir).parent / "added" / "tracks.csv"


def read_added(path: str | Path) -> pd.DataFrame:
    """The added-songs list (`TRACK_TABLE` columns); empty when there is none."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(TRACK_TABLE))
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise LibraryError(f"{path}: unreadable list of added songs ({err})") from None
    missing = [c for c in TRACK_TABLE if c not in table.columns]
    if missing:
        raise LibraryError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(TRACK_TABLE)})")
    return table[list(TRACK_TABLE)]


def append_added(path: str | Path, rows: pd.DataFrame) -> None:
    """Add rows to the added-songs list, replacing the file whole (write aside, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.concat([read_added(path), _track_table(rows)], ignore_index=True)
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    table.to_csv(tmp, index=False, encoding="utf-8")
    os.replace(tmp, path)


def _swap_in(new: Path, final: Path) -> None:
    """Rename the folder `new` to `final`, moving an existing `final` aside first, then dropping it."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def _recover(final: Path) -> None:
    """After a crash between `_swap_in`'s two renames, put the previous index back."""
    if final.exists():
        return
    olds = sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and (olds[-1] / FILES["meta"]).exists():
        os.replace(olds[-1], final)


def _write_bytes(path: Path, write) -> None:
    with open(path, "wb") as f:  # a file object: numpy would append .npy / .npz to a name
        write(f)


def _track_table(tracks: pd.DataFrame) -> pd.DataFrame:
    if "track_id" not in tracks:
        raise ValueError("track table: needs a track_id column")
    out = pd.DataFrame({c: (tracks[c] if c in tracks else "") for c in TRACK_TABLE})
    return out.fillna("").astype(str).reset_index(drop=True)


# ---------------------------------------------------------------- the pipeline's index


def build_from_pipeline(features_dir: str | Path, tracks_csv: str | Path, splits_csv: str | Path | None,
                        model_path: str | Path, params, eval_json: str | Path | None = DEFAULT_EVAL_JSON,
                        device: str = "cpu", progress: bool = True,
                        added_csv: str | Path | None = None) -> SongIndex:
    """Embed every track with features (the `features` stage's segments) and index them.

    added_csv: the list of songs added with `songspace add` (`added_list_path`); each is
    embedded again from its file with this model and added after the library's tracks
    (meta: added_tracks, added_missing for listed files no longer on disk).

    params: the `config.Params` (index.*, evaluate.minkowski_p, seed). The scaler is fitted on
    the tracks splits_csv marks `train`. Tracks without segments (skipped as undecodable by
    the features stage) are not indexed. device: cpu, cuda or auto (cuda when available).
    """
    import torch

    from songspace import embed, features, models

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"

    ip = params.index
    distance, scaler, chosen = resolve_cell(ip.distance, ip.scaler, eval_json)
    model, meta = embed.load_checkpoint(model_path, device=device)
    spectra = features.load_spectra(features_dir, models.input_frontend(meta["model_params"]), params.features)
    tracks = pd.read_csv(tracks_csv, dtype=str, keep_default_na=False)
    have = set(spectra.track_ids)
    tracks = tracks[tracks["track_id"].isin(have)].reset_index(drop=True)
    if tracks.empty:
        raise LibraryError(f"{features_dir}: no segments for any track of {tracks_csv}")
    tracks["sha1"] = _sha1_column(tracks)
    segments, seg_index = spectra.segments(list(tracks["track_id"]))
    t0 = time.perf_counter()
    emb = embed.embed_tracks(model, segments, seg_index, list(tracks["track_id"]),
                             device=device, progress=progress)
    embed_s = time.perf_counter() - t0
    train = set()
    if splits_csv is not None and Path(splits_csv).exists():
        splits = pd.read_csv(splits_csv, dtype=str)
        train = set(splits.loc[splits["split"] == "train", "track_id"])
    mask = tracks["track_id"].isin(train).to_numpy()
    identity = model_identity(model_path, meta.get("model_name"))
    extra = {"chosen_by": chosen, "embed_seconds": round(embed_s, 3), "device": str(device),
             "feature_params": dataclasses.asdict(meta["feature_params"]),
             "sources": {"features": str(features_dir), "tracks": str(tracks_csv),
                         "splits": str(splits_csv)}}
    built = SongIndex.build(emb, tracks, mask, distance, scaler, params.evaluate.minkowski_p,
                            ip.approximate_above, ip.hnsw_m, ip.hnsw_ef_search, identity,
                            seed=params.seed, progress=progress, extra_meta=extra)
    if added_csv is not None:
        _take_in_added(built, read_added(added_csv), model, meta["feature_params"], device)
    return built


def _take_in_added(built: SongIndex, added: pd.DataFrame, model, feature_params, device: str) -> None:
    """Add the listed songs to a freshly built index: embedded from their files, once each."""
    from songspace import embed

    have = set(built.tracks["sha1"]) - {""}
    taken = set(built.tracks["track_id"])
    rows, vectors, missing = [], [], []
    for row in added.drop_duplicates("sha1").itertuples(index=False):
        if row.sha1 and row.sha1 in have:
            continue  # the song has since come into the library itself
        if not Path(row.path).is_file():
            missing.append(row.path)
            continue
        track_id, n = row.track_id, 1
        while track_id in taken:
            n += 1
            track_id = f"{row.track_id}-{n}"
        taken.add(track_id)
        vectors.append(embed.embed_file(model, row.path, feature_params, device=device))
        rows.append({**row._asdict(), "track_id": track_id})
    if rows:
        built.add(np.stack(vectors), pd.DataFrame(rows))
    built.meta["added_missing"] = missing


def _sha1_column(tracks: pd.DataFrame) -> list[str]:
    """The tracks' content hashes: ingest's sha1 column, or hashed here where it is missing."""
    from songspace.library import sha1_of

    known = tracks["sha1"] if "sha1" in tracks else pd.Series([""] * len(tracks))
    return [h if h else (sha1_of(p) if Path(p).is_file() else "")
            for h, p in zip(known.fillna(""), tracks["path"])]
