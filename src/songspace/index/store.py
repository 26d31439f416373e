"""The similar-song index: a library's embeddings searchable under one cell of the grid, and
its folder on disk.

An index is built for one (distance, scaler) cell: the scaler and whatever the distance needs
(`distances.fit_context`: minkowski's p, seuclidean's variances, the binary codes' medians)
are fitted on the *training* tracks' embeddings, as in evaluation, then every track of the
library is scaled, mapped onto faiss (`forms`) and added.

On disk an index is a folder (`FILES`): meta.json (model identity: checkpoint sha256 and
model name; cell; index type; build time; recall), tracks.csv (track_id, path, label, sha1),
embeddings.npy (raw model embeddings, (n, d) float32), state.npz (the fitted scaler and the
distance context) and vectors.faiss. The checkpoint's sha256 is checked on opening, so an
index built with another model is refused (`StaleIndex`), never silently used. Every reader
and writer holds the folder's lock (`index_lock`); a save replaces the folder whole.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from songspace import checkpoint, distances, scalers
from songspace.errors import UserError
from songspace.index import DEFAULT_EVAL_JSON
from songspace.index.forms import (FORMS, BruteForce, _add, _search, describe_searcher, grid_distance,
                                   index_vectors, measure_recall, new_searcher)

FORMAT_VERSION = 2   # 2: the scaler is refitted on the stored rows `fitted_on`
FILES = {
    "meta": "meta.json",
    "tracks": "tracks.csv",
    "embeddings": "embeddings.npy",
    "state": "state.npz",
    "vectors": "vectors.faiss",
}
TRACK_TABLE = ("track_id", "path", "label", "sha1")
LOCK_TIMEOUT_S = 600.0       # how long a reader or writer waits for another one's lock


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


# ---------------------------------------------------------------- the index


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
    fitted_on: np.ndarray | None = None   # (n,) bool: the rows the scaler and context were fitted on

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
        fitted_on = mask if mask.any() else np.ones(len(emb), bool)
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
        self.fitted_on = np.concatenate([self.fitted_on, np.zeros(len(raw), bool)])
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

        # the scaler is stored as the rows it was fitted on: loading fits it again, exactly
        state = {"fitted_on": np.asarray(self.fitted_on, bool)}
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
        fitted_on = state.get("fitted_on")
        if fitted_on is None or fitted_on.dtype != bool or fitted_on.shape != (len(embeddings),) \
                or not fitted_on.any():
            raise IndexNotFound(f"{folder}: inconsistent index (no fitted rows for its {len(embeddings)} "
                                "embeddings); rebuild it with `dvc repro index`")
        scaler = scalers.fit(scaler_name, embeddings[fitted_on])
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
        index = cls(distance, scaler_name, scaler, ctx, tracks, embeddings.astype(np.float32), searcher, meta,
                    fitted_on=fitted_on)
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
        now = checkpoint.fingerprint(path)
        if built != now:
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
