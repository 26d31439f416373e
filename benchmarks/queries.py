"""Query benchmarks: single-query latency of faiss exact and HNSW against numpy brute force.

Measured on the library's own embeddings (`base_embeddings`: the index's, else the features
embedded with the checkpoint or an untrained model, else Gaussian vectors) and on a million
synthetic vectors drawn around them (`gaussian_mixture`), one query at a time, as
`songspace similar` asks. `time_queries` does the measuring; `bench_queries` makes the items.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from benchmarks.harness import item
from songspace import features
from songspace.config import Params
from songspace.index import recall_at_k, rescore


def gaussian_mixture(base: np.ndarray, n: int, rng: np.random.Generator, spread: float = 0.25,
                     chunk: int = 200_000) -> np.ndarray:
    """n synthetic vectors (n, d) float32 around the real embeddings base (m, d).

    Each vector picks a base row as its component's centre and adds Gaussian noise with the
    covariance of the base embeddings scaled by spread**2 (plus a 1e-3 isotropic floor, so a
    rank-deficient base still gives full-rank noise): a cloud shaped like the real embedding
    space, much denser than it, not uniform noise.
    """
    base = np.asarray(base, dtype=np.float64)
    m, d = base.shape
    centred = base - base.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    sd = s / np.sqrt(max(1, m - 1))
    floor = 1e-3 * float(np.sqrt((sd**2).sum() / d)) if len(sd) else 1e-3
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        centre = base[rng.integers(m, size=size)]
        z = rng.standard_normal((size, len(sd))) * (spread * sd)
        iso = rng.standard_normal((size, d)) * floor
        out[start : start + size] = centre + z @ vt + iso
    return out


def _latencies_ms(search_one, queries: np.ndarray) -> dict:
    times = []
    for q in queries:
        t0 = time.perf_counter()
        search_one(q[None, :])
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return {"median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)),
            "mean_ms": float(t.mean())}


def numpy_knn(data: np.ndarray, sq_norms: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared-L2 k-NN of queries q (nq, d) in data (n, d) with numpy: (dist2, ids) (nq, k)."""
    d2 = sq_norms[None, :] - 2.0 * (q @ data.T) + (q * q).sum(axis=1)[:, None]
    idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(d2, idx, axis=1)
    order = np.argsort(part, axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _time_one(data: np.ndarray, tune_q: np.ndarray, test_q: np.ndarray, k: int, hnsw_m: int,
               ef_construction: int, target_recall: float, ef_ladder: tuple[int, ...],
               brute_timed: int, progress: bool) -> dict:
    n, d = data.shape
    out: dict = {"n": int(n)}
    flat = faiss.IndexFlatL2(d)
    flat.add(data)

    def truth(q):  # exact k-th distances, float64, from the float32 exact top 2k
        _, ids = flat.search(q, min(2 * k, n))
        return np.sort(rescore("euclidean", q, data, ids, {}, d), axis=1)[:, :k]

    def recall(q, ids, kth):
        return recall_at_k(kth, rescore("euclidean", q, data, ids, {}, d), ids, k)

    t_tune, t_test = truth(tune_q), truth(test_q)
    timed = test_q[:brute_timed]
    out["faiss_exact"] = _latencies_ms(lambda q: flat.search(q, k), timed)
    out["faiss_exact"]["recall_at_10"] = recall(test_q, flat.search(test_q, k)[1], t_test)
    sq = (data * data).sum(axis=1)
    out["numpy"] = _latencies_ms(lambda q: numpy_knn(data, sq, q, k), timed)
    out["numpy"]["recall_at_10"] = recall(test_q, numpy_knn(data, sq, test_q, k)[1], t_test)
    del flat

    hnsw = faiss.IndexHNSWFlat(d, hnsw_m)
    hnsw.hnsw.efConstruction = ef_construction
    t0 = time.perf_counter()
    # one add() call: a graph grown in several batches has markedly lower recall (see index/forms.py)
    with tqdm(total=n, desc="HNSW", unit="vector", disable=not progress) as bar:
        hnsw.add(data)
        bar.update(n)
    build_s = time.perf_counter() - t0
    tuning = []
    chosen = ef_ladder[-1]
    for ef in ef_ladder:  # smallest efSearch reaching the target on the tuning queries
        hnsw.hnsw.efSearch = ef
        r = recall(tune_q, hnsw.search(tune_q, k)[1], t_tune)
        tuning.append({"ef_search": ef, "recall_at_10": r})
        if r >= target_recall:
            chosen = ef
            break
    hnsw.hnsw.efSearch = chosen
    lat = _latencies_ms(lambda q: hnsw.search(q, k), test_q)
    lat.update(recall_at_10=recall(test_q, hnsw.search(test_q, k)[1], t_test), m=hnsw_m, ef_search=chosen,
               ef_construction=ef_construction, build_s=build_s, tuning=tuning)
    out["faiss_hnsw"] = lat
    out["speedup_hnsw_vs_exact"] = out["faiss_exact"]["median_ms"] / lat["median_ms"]
    out["speedup_hnsw_vs_numpy"] = out["numpy"]["median_ms"] / lat["median_ms"]
    return out


def time_queries(base_embeddings: np.ndarray, n_synthetic: int = 1_000_000, k: int = 10,
                  n_queries: int = 200, seed: int = 0, hnsw_m: int = 32, ef_construction: int = 40,
                  target_recall: float = 0.95, ef_ladder: tuple[int, ...] = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512),
                  spread: float = 0.25, brute_timed: int = 50, threads: int | None = None,
                  progress: bool = True) -> dict:
    """Query latency of faiss exact, faiss HNSW and numpy brute force (squared L2, k nearest).

    base_embeddings (n, d): the real library's (scaled) embeddings. Measured twice: on the
    library as it is (queries: mixture samples around it) and on n_synthetic vectors from
    `gaussian_mixture` around it. Latency is per single query, one query at a time (what
    `songspace similar` does), median / p95 / mean in ms over n_queries. HNSW's efSearch is the
    smallest of ef_ladder whose recall@10 reaches target_recall on a separate set of n_queries
    tuning queries; its recall@10 is then reported on the timed queries. The two brute-force
    searches are timed on the first brute_timed queries only (each costs a full scan).
    Recall counts a neighbour as found when its float64 distance is within the exact 10th's
    (`recall_at_k`), so float32 near-ties are not misses. Returns a dict
    (JSON-able) with "library" and "synthetic" results, the thread count and the settings.
    """
    if threads:
        faiss.omp_set_num_threads(int(threads))
    rng = np.random.default_rng(seed)
    base = np.ascontiguousarray(base_embeddings, dtype=np.float32)
    if base.ndim != 2 or len(base) < 2:
        raise ValueError(f"base_embeddings: expected (n >= 2, d), got shape {base.shape}")
    queries = gaussian_mixture(base, 2 * n_queries, rng, spread)
    tune_q, test_q = queries[:n_queries], queries[n_queries:]
    args = (k, hnsw_m, ef_construction, target_recall, tuple(ef_ladder), brute_timed, progress)
    result = {"threads": faiss.omp_get_max_threads(), "k": k, "n_queries": n_queries, "seed": seed,
              "spread": spread, "dim": int(base.shape[1]), "target_recall": target_recall}
    result["library"] = _time_one(base, tune_q, test_q, *args)
    if n_synthetic:
        t0 = time.perf_counter()
        synth = gaussian_mixture(base, n_synthetic, rng, spread)
        result["synthetic_generation_s"] = time.perf_counter() - t0
        result["synthetic"] = _time_one(synth, tune_q, test_q, *args)
    return result



def base_embeddings(index_dir: str | Path = "data/index", features_dir: str | Path = "data/features",
                    model_path: str | Path = "data/models/best.pt", params: Params | None = None,
                    seed: int = 0) -> tuple[np.ndarray, str]:
    """The library's track embeddings for the query benchmark, and a line saying where they came from.

    In order of preference: the song index's embeddings (scaled with its own fitted scaler, as
    searched); the stored whole-track log-mels (`features.load_spectra`) cut into segments and
    embedded with the trained checkpoint (track means, not scaled); the same with a freshly
    initialised `params.model` (seeded); and, with no pipeline outputs at all (or no log-mels of
    the model's front end), 240 Gaussian vectors of 128 dimensions.
    """
    from songspace import config, embed, index, models

    index_dir, features_dir, model_path = Path(index_dir), Path(features_dir), Path(model_path)
    if (index_dir / index.FILES["meta"]).exists():
        try:
            built = index.SongIndex.load(index_dir)
            scaled = built.scaler.transform(np.asarray(built.embeddings, dtype=np.float64))
            return (np.asarray(scaled, dtype=np.float32),
                    f"{index_dir}/embeddings.npy ({len(scaled)} tracks, scaled with the index's {built.scaler_name})")
        except index.LibraryError:
            pass
    if any((features_dir / f"{name}.npy").exists() for name in features.FRONTENDS):
        if model_path.exists():
            model, meta = embed.load_checkpoint(model_path)
            fp = meta["feature_params"]
            what = f"{features_dir} embedded with {model_path}"
        else:
            params = params or config.load()
            fp = params.features
            fe = features.frontend(models.input_frontend(params.model_params), fp)
            model = embed.Embedder(models.build(params.model_params, fe.n_mels, fe.segment_frames, seed=seed))
            what = f"{features_dir} embedded with an untrained {params.model} (seed {seed})"
        name = embed.frontend_of(model)
        if (features_dir / f"{name}.npy").exists():
            spectra = features.load_spectra(features_dir, name, fp)
            segments, seg_index = spectra.segments()
            emb = embed.embed_tracks(model, segments, seg_index, spectra.track_ids)
            return emb, f"{what} ({len(emb)} tracks, {name} front end, raw)"
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((240, 128)).astype(np.float32),
            "240 Gaussian vectors of 128 dims (no index, and no log-mels for the model, found)")


def bench_queries(base: np.ndarray, source: str, n_synthetic: int = 1_000_000, n_queries: int = 200,
                  brute_timed: int = 50, seed: int = 0, threads: int | None = None,
                  progress: bool = True) -> list[dict]:
    """Single-query latency of faiss exact and HNSW vs numpy brute force (`time_queries`),
    at the library's size and at `n_synthetic` vectors around it.

    Medians are over single queries (brute force: the first `brute_timed`; HNSW: `n_queries`),
    not over repeats: one run builds the HNSW index once (minutes at a million vectors).
    """
    # `threads` limits numpy's BLAS as well as faiss's OpenMP, so both sides get the same cores.
    with threadpool_limits(limits=threads, user_api="blas") if threads else contextlib.nullcontext():
        res = time_queries(base, n_synthetic=n_synthetic, n_queries=n_queries, seed=seed,
                                  brute_timed=brute_timed, threads=threads, progress=progress)
    items = []
    for where in ("library", "synthetic"):
        if where not in res:
            continue
        r = res[where]
        numpy_side = {"label": "numpy brute force", "median_s": r["numpy"]["median_ms"] / 1e3,
                      "runs_s": None, "p95_s": r["numpy"]["p95_ms"] / 1e3, "median_over": f"{brute_timed} queries",
                      "recall_at_10": r["numpy"]["recall_at_10"]}
        for key, label, over in (("faiss_exact", "faiss IndexFlatL2 (exact)", brute_timed),
                                 ("faiss_hnsw", "faiss IndexHNSWFlat", n_queries)):
            s = r[key]
            ours = {"label": label, "median_s": s["median_ms"] / 1e3, "runs_s": None,
                    "p95_s": s["p95_ms"] / 1e3, "median_over": f"{over} queries",
                    "recall_at_10": s["recall_at_10"]}
            extra = {"n": r["n"], "dim": res["dim"], "k": res["k"], "threads": res["threads"], "base": source}
            if key == "faiss_hnsw":
                extra.update(ef_search=s["ef_search"], m=s["m"], build_s=s["build_s"])
            items.append(item(f"queries.{where}.{key.removeprefix('faiss_')}", "queries",
                              f"k=10 query, {r['n']:,} vectors ({where}), {label}", ours, numpy_side, **extra))
    return items

