"""The files of an index folder: the one writer (`write_files`) and the one reader (`read_files`).

meta.json (model identity, cell, index type, build facts), tracks.csv (`TRACK_TABLE`),
embeddings.npy (raw model embeddings, (n, d) float32), state.npz (`fitted_on` (n,) bool: the
rows the scaler and distance context were fitted on; `ctx.<name>`: the distance's context) and
vectors.faiss (absent for the distances searched by brute force). meta.json is written last:
a folder holding one is complete.

Reading checks every file against the others before anything is used: a missing, empty,
truncated or foreign file, NaN or inf in the embeddings, or files that disagree (row counts,
widths, the faiss metric) are one `IndexNotFound` naming the file, never a traceback and
never a search that quietly answers nothing.
"""
from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from songspace import distances, scalers
from songspace.errors import one_line
from songspace.index.errors import IndexNotFound
from songspace.tags import TAG_COLUMNS
from songspace.index.forms import _FAISS_METRICS, FORMS, BruteForce, new_searcher

FORMAT_VERSION = 2   # 2: the scaler is refitted on the stored rows `fitted_on`
FILES = {
    "meta": "meta.json",
    "tracks": "tracks.csv",
    "embeddings": "embeddings.npy",
    "state": "state.npz",
    "vectors": "vectors.faiss",
}
TRACK_TABLE = ("track_id", "path", "label", "sha1")
INFO_COLUMNS = ("duration_s", *TAG_COLUMNS)   # kept where known, '' elsewhere; older indexes lack them
REBUILD = "rebuild it with `dvc repro index`"
# optional meta.json keys the code reads, and the JSON types they must have
META_TYPES = {"model": (dict,), "recall": (dict, type(None)), "hnsw_ef_search": (int,),
              "added_tracks": (int,), "dim": (int,), "n_tracks": (int,), "minkowski_p": (int, float)}
# what numpy, zipfile and zlib raise on an empty, truncated or foreign file
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


@dataclass
class Stored:
    """An index folder's contents, checked: meta, tracks (n rows), embeddings (n, d) float32,
    fitted_on (n,) bool, the distance's context, and the faiss index (None when brute force)."""

    meta: dict
    tracks: pd.DataFrame
    embeddings: np.ndarray
    fitted_on: np.ndarray
    ctx: dict
    searcher: object | None


def write_files(out: Path, meta: dict, tracks: pd.DataFrame, embeddings: np.ndarray,
                fitted_on: np.ndarray, ctx: dict, searcher) -> None:
    """Write an index's files into the (new, empty) folder `out`, meta.json last."""
    state = {"fitted_on": np.asarray(fitted_on, bool), **{f"ctx.{k}": np.asarray(v) for k, v in ctx.items()}}
    with open(out / FILES["embeddings"], "wb") as f:  # a file object: numpy would append .npy to a name
        np.save(f, np.asarray(embeddings, np.float32))
    with open(out / FILES["state"], "wb") as f:
        np.savez(f, **state)
    tracks.to_csv(out / FILES["tracks"], index=False, encoding="utf-8")
    if isinstance(searcher, faiss.IndexBinary):
        faiss.write_index_binary(searcher, str(out / FILES["vectors"]))
    elif not isinstance(searcher, BruteForce):  # brute force is rebuilt from the embeddings
        faiss.write_index(searcher, str(out / FILES["vectors"]))
    (out / FILES["meta"]).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def read_files(folder: Path) -> Stored:
    """Read and cross-check the files of the index folder `folder`.

    `IndexNotFound` when there is no meta.json (no index here), and when any file is
    unreadable or disagrees with the others (the message names the file).
    """
    if not (folder / FILES["meta"]).is_file():
        raise IndexNotFound(f"{folder}: no song index here (missing {FILES['meta']}); build it with "
                            "`dvc repro index`")
    meta = _read_meta(folder / FILES["meta"])
    tracks = _read_tracks(folder / FILES["tracks"])
    embeddings = _read_embeddings(folder / FILES["embeddings"], tracks)
    fitted_on, ctx = _read_state(folder / FILES["state"], meta["distance"], embeddings.shape)
    n, dim = embeddings.shape
    for key, value in (("n_tracks", n), ("dim", dim)):
        if key in meta and meta[key] != value:
            raise _damaged(folder / FILES["meta"], f"says {key} {meta[key]}, but "
                           f"{FILES['embeddings']} holds {n} rows of width {dim}")
    if not 0 <= meta.get("added_tracks", 0) <= n:
        raise _damaged(folder / FILES["meta"], f"added_tracks {meta['added_tracks']} for {n} tracks")
    searcher = None
    if FORMS[meta["distance"]][0] != "bool":
        searcher = _read_vectors(folder / FILES["vectors"], meta["distance"], n, dim, ctx)
    return Stored(meta, tracks, embeddings, fitted_on, ctx, searcher)


def track_table(tracks: pd.DataFrame) -> pd.DataFrame:
    """`tracks` as a `TRACK_TABLE` + `INFO_COLUMNS` of strings ("" where a column is missing)."""
    if "track_id" not in tracks:
        raise ValueError("track table: needs a track_id column")
    out = pd.DataFrame({c: (tracks[c] if c in tracks else "") for c in (*TRACK_TABLE, *INFO_COLUMNS)})
    return out.fillna("").astype(str).reset_index(drop=True)


def _damaged(path: Path, problem: str) -> IndexNotFound:
    return IndexNotFound(f"{path}: {problem}; {REBUILD}")


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _damaged(path, f"unreadable song index ({err})") from None
    if not isinstance(meta, dict):
        raise _damaged(path, f"expected a JSON object, found {type(meta).__name__}")
    if meta.get("format") != FORMAT_VERSION:
        raise _damaged(path, f"unreadable song index (format {meta.get('format')}, this songspace reads "
                             f"{FORMAT_VERSION})")
    for key, names in (("distance", distances.NAMES), ("scaler", scalers.NAMES)):
        if meta.get(key) not in names:
            raise _damaged(path, f"unknown {key} {meta.get(key)!r} (one of: {', '.join(names)})")
    for key, types in META_TYPES.items():
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool)):
            raise _damaged(path, f"{key} is {json.dumps(meta[key])}, expected "
                                 f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}")
    return meta


def _read_tracks(path: Path) -> pd.DataFrame:
    try:
        tracks = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError) as err:  # pandas' EmptyDataError and ParserError are ValueErrors
        raise _damaged(path, f"unreadable track table ({one_line(err)})") from None
    missing = [c for c in TRACK_TABLE if c not in tracks.columns]
    if missing:
        raise _damaged(path, f"missing column(s) {', '.join(missing)} (expected {', '.join(TRACK_TABLE)})")
    dup = tracks["track_id"].duplicated()
    if dup.any():
        raise _damaged(path, f"track_id '{tracks['track_id'][dup].iloc[0]}' appears twice")
    for column in INFO_COLUMNS:
        if column not in tracks.columns:
            tracks[column] = ""
    return tracks[[*TRACK_TABLE, *INFO_COLUMNS]]


def _read_embeddings(path: Path, tracks: pd.DataFrame) -> np.ndarray:
    try:
        emb = np.load(path, allow_pickle=False)
    except READ_ERRORS as err:
        raise _damaged(path, f"unreadable embeddings ({one_line(err)})") from None
    if isinstance(emb, np.lib.npyio.NpzFile):
        emb.close()
    if not isinstance(emb, np.ndarray) or emb.dtype.kind != "f" or emb.ndim != 2 or emb.shape[1] == 0:
        what = f"{emb.dtype} array of shape {emb.shape}" if isinstance(emb, np.ndarray) else "an archive"
        raise _damaged(path, f"expected a float (n, d) array of embeddings, found {what}")
    if len(emb) != len(tracks):
        raise IndexNotFound(f"{path.parent}: inconsistent index ({len(tracks)} tracks, {len(emb)} "
                            f"embeddings); {REBUILD}")
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise _damaged(path, f"NaN or inf in {int(bad.sum())} embedding(s) (first: row {first}, "
                             f"track {tracks['track_id'].iat[first]})")
    return emb.astype(np.float32, copy=False)


def _read_state(path: Path, distance: str, shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """`(fitted_on (n,) bool, ctx)` from state.npz, checked against the distance and the embeddings."""
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise _damaged(path, "expected an .npz archive, found a single array")
        with z:
            state = {k: z[k] for k in z.files}
    except READ_ERRORS as err:
        raise _damaged(path, f"unreadable index state ({one_line(err)})") from None
    fitted_on = state.get("fitted_on")
    if fitted_on is None or fitted_on.dtype != bool or fitted_on.shape != (shape[0],) or not fitted_on.any():
        raise IndexNotFound(f"{path.parent}: inconsistent index (no fitted rows for its {shape[0]} "
                            f"embeddings in {path.name}); {REBUILD}")
    ctx = {k[4:]: v for k, v in state.items() if k.startswith("ctx.")}
    needs = set(distances.get(distance).needs)
    if set(ctx) != needs:
        raise _damaged(path, f"{distance} needs context {sorted(needs)}, found {sorted(ctx)}")
    for key, value in ctx.items():
        want = () if key == "p" else (shape[1],)
        if value.shape != want or value.dtype.kind not in "fiu" or not np.isfinite(value).all():
            raise _damaged(path, f"ctx.{key}: expected finite numbers of shape {want}, found "
                                 f"{value.dtype} {value.shape}")
    return fitted_on, {k: (v.item() if v.ndim == 0 else v) for k, v in ctx.items()}


def _read_vectors(path: Path, distance: str, n: int, dim: int, ctx: dict):
    """The faiss index in `path`, checked: the distance's metric and width, one vector per track."""
    if not path.is_file():
        raise _damaged(path, "missing")
    kind, metric = FORMS[distance]
    read = faiss.read_index_binary if kind == "binary" else faiss.read_index
    try:
        searcher = read(str(path))
    except RuntimeError as err:
        raise IndexNotFound(f"{path}: corrupt or truncated faiss index ({one_line(err)}); {REBUILD}") from None
    want = new_searcher(distance, dim, ctx)
    if searcher.d != want.d:
        raise _damaged(path, f"holds vectors of width {searcher.d}, but the {dim}-wide embeddings "
                             f"need {want.d} for {distance}")
    if kind == "float" and (searcher.metric_type != _FAISS_METRICS[metric]
                            or (metric == "lp" and searcher.metric_arg != float(ctx["p"]))):
        raise _damaged(path, f"faiss metric {searcher.metric_type} (argument {searcher.metric_arg:g}) is "
                             f"not {distance}'s ({metric})")
    if searcher.ntotal != n:
        raise IndexNotFound(f"{path.parent}: inconsistent index ({n} tracks, {n} embeddings, "
                            f"{searcher.ntotal} vectors); {REBUILD}")
    return searcher
