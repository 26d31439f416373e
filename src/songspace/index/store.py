"""The similar-song index: a library's embeddings searchable under one cell of the grid.

An index is built for one (distance, scaler) cell: the scaler and whatever the distance needs
(`distances.fit_context`: minkowski's p, seuclidean's variances, the binary codes' medians)
are fitted on the *training* tracks' embeddings, as in evaluation, then every track of the
library is scaled, mapped onto faiss (`forms`) and added.

On disk an index is a folder (`files`: meta.json with the model identity, the cell, the index
type and recall; tracks.csv; embeddings.npy; state.npz; vectors.faiss), replaced
whole under its lock (`folder`). The checkpoint's sha256 is checked on opening, so an index
built with another model is refused (`StaleIndex`), never silently used.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from songspace import checkpoint, distances, scalers
from songspace.index import DEFAULT_EVAL_JSON, files, folder
from songspace.index.errors import IndexNotFound, LibraryError, StaleIndex, UnknownTrack  # noqa: F401
from songspace.index.files import FILES, FORMAT_VERSION, TRACK_TABLE, track_table  # noqa: F401
from songspace.index.folder import (added_list_path, index_lock, read_added,  # noqa: F401
                                    sync_added)
from songspace.index.forms import (FORMS, BruteForce, _add, _search, describe_searcher, grid_distance,
                                   index_vectors, measure_recall, new_searcher)


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


# ---------------------------------------------------------------- the index


def _build_inputs(embeddings: np.ndarray, tracks: pd.DataFrame, train_mask: np.ndarray
                  ) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """`SongIndex.build`'s inputs checked: (embeddings (n, d) float32, the track table, the rows
    (n,) bool to fit on: those of train_mask, all when none is marked). ValueError otherwise."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or len(emb) == 0:
        raise ValueError(f"embeddings: expected a non-empty (n, d) array, got shape {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise ValueError("embeddings: NaN or inf in the model's output")
    if len(tracks) != len(emb):
        raise ValueError(f"{len(tracks)} tracks but {len(emb)} embeddings")
    table = track_table(tracks)
    if table["track_id"].duplicated().any():
        dup = table.loc[table["track_id"].duplicated(), "track_id"].iloc[0]
        raise ValueError(f"track_id '{dup}' appears twice in the track table")
    mask = np.asarray(train_mask, dtype=bool)
    if mask.shape != (len(emb),):
        raise ValueError(f"train_mask: expected ({len(emb)},), got {mask.shape}")
    return emb, table, mask if mask.any() else np.ones(len(emb), bool)


@dataclass
class SongIndex:
    """A library's embeddings searchable under one (distance, scaler) cell.

    tracks: one row per indexed track (`TRACK_TABLE`), row i <-> faiss id i <-> embeddings[i].
    embeddings: raw model embeddings (n, d) float32. scaler: the fitted scaler; ctx: the
    distance's fitted context (`distances.fit_context`). searcher: the faiss index (or
    `BruteForce`). meta: JSON-able facts (model identity, cell, recall, ...), written to
    meta.json: no wall-clock time or timing, so the same inputs write the same bytes.
    timings: how long this process took to build it (seconds, by step; never written).
    """

    distance: str
    scaler_name: str
    scaler: object
    ctx: dict
    tracks: pd.DataFrame
    embeddings: np.ndarray
    searcher: object
    meta: dict = field(default_factory=dict)
    fitted_on: np.ndarray | None = None   # (n,) bool: the rows the scaler and context were fitted on
    timings: dict = field(default_factory=dict)

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
        emb, table, fitted_on = _build_inputs(embeddings, tracks, train_mask)
        fit_rows = emb[fitted_on]
        fitted = scalers.fit(scaler, fit_rows)
        ctx = distances.fit_context(distance, fitted.transform(fit_rows.astype(np.float64)), minkowski_p)
        approximate = len(emb) > approximate_above and FORMS[distance][1] != "brute"
        searcher = new_searcher(distance, emb.shape[1], ctx, approximate, hnsw_m, hnsw_ef_search)
        index = cls(distance, scaler, fitted, ctx, table, emb, searcher, fitted_on=fitted_on)
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
        meta["added_tracks"] = 0
        meta.update(extra_meta or {})
        index.meta = meta
        index.timings["build_seconds"] = time.perf_counter() - t0
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
        table = track_table(tracks)
        if len(table) != len(raw):
            raise ValueError(f"{len(table)} tracks but {len(raw)} embeddings")
        clash = sorted(set(table["track_id"]) & set(self.tracks["track_id"]))
        if clash or table["track_id"].duplicated().any():
            raise ValueError(f"track_id already in the index: {(clash or list(table['track_id']))[0]}")
        _add(self.searcher, self.vectors(raw), progress)
        self.embeddings = np.concatenate([self.embeddings, raw])
        self.fitted_on = np.concatenate([self.fitted_on, np.zeros(len(raw), bool)])
        self.tracks = pd.concat([self.tracks, table], ignore_index=True)
        self.meta["n_tracks"] = self.n_tracks
        self.meta["added_tracks"] = int(self.meta.get("added_tracks", 0)) + len(table)

    @property
    def added(self) -> pd.DataFrame:
        """The tracks added after the build (`add`; the last meta["added_tracks"] rows)."""
        n_added = int(self.meta.get("added_tracks", 0))
        return self.tracks.iloc[self.n_tracks - n_added:].reset_index(drop=True)

    def save(self, out_dir: str | Path) -> Path:
        """Write the index folder under its lock, replacing the old folder whole.

        The new folder is written aside and renamed into place (`folder.save`), so a crash or
        an error while writing leaves the previous index intact, and a reader never sees half
        of each.
        """
        with index_lock(out_dir):
            return self._write(folder.absolute(out_dir))

    def _write(self, final: Path) -> Path:
        """`save` without taking the lock (the caller holds it)."""
        return folder.save(final, self.write_files)

    def write_files(self, out: Path) -> None:
        """Write the index's files into the new, empty folder `out` (no lock, no swap: `save` does both)."""
        files.write_files(out, self.meta, self.tracks, self.embeddings, self.fitted_on, self.ctx, self.searcher)

    @classmethod
    def load(cls, index_dir: str | Path) -> "SongIndex":
        """Read an index folder written by `save` (under its lock).

        `IndexNotFound` when there is none, or when a file of it is missing or damaged.
        """
        with index_lock(index_dir):
            return cls._read(folder.absolute(index_dir))

    @classmethod
    def _read(cls, path: Path) -> "SongIndex":
        """`load` without taking the lock (the caller holds it)."""
        folder.recover(path)
        stored = files.read_files(path)
        meta, emb = stored.meta, stored.embeddings
        distance = meta["distance"]
        scaler = scalers.fit(meta["scaler"], emb[stored.fitted_on])
        searcher = stored.searcher
        if searcher is None:
            searcher = BruteForce(distance, stored.ctx, emb.shape[1])
        elif hasattr(searcher, "hnsw"):  # efSearch is a search-time setting, not saved
            searcher.hnsw.efSearch = int(meta.get("hnsw_ef_search", 128))
        index = cls(distance, meta["scaler"], scaler, stored.ctx, stored.tracks, emb, searcher, meta,
                    fitted_on=stored.fitted_on)
        if stored.searcher is None:
            searcher.add(index.vectors(emb))
        return index

    def check_model(self, model_path: str | Path) -> None:
        """Raise `StaleIndex` unless model_path holds the very checkpoint the index was built with."""
        model = self.meta.get("model") or {}
        built = model.get("sha256")
        path = Path(model_path)
        if not path.exists():
            raise LibraryError(f"{path}: no such model checkpoint (run `dvc repro train`)")
        now = checkpoint.fingerprint(path)
        if built != now:
            checkpoint.load(path)  # a damaged checkpoint is named as such, not as a stale index
            raise StaleIndex(
                f"the index was built with {model.get('model_name') or 'a model'} from checkpoint "
                f"{model.get('path', '?')} (sha256 {str(built)[:12]}), but {path} is now "
                f"sha256 {now[:12]}: the index is stale; run `dvc repro index`"
            )

