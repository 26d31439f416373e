"""What the explorer page shows, as JSON-able dicts: the map, neighbours, uploads, radio, paths,
playlists and the evaluation.

`Explorer.open` joins a song index and its model (`Library.open`: a stale index is refused
with `StaleIndex`, the CLI's message), the library's root folder (audio is served only from
below it), metrics/eval.json and the dvclive folder of the run. The server and the static
export both read through this class; neither touches files or the index on its own.

The map is a 2-D projection of the index's space, computed once per index and cached in
`cache_dir` (keyed by the embeddings and the cell): t-SNE on the index's own distances up to
`plots.TSNE_MAX_TRACKS` tracks, PCA of the scaled embeddings above (as `plots.project_2d`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from pathlib import Path

import numpy as np

from songspace import playlists, tags
from songspace.evaluate.report import EvalJsonError, read_json
from songspace.index import LibraryError, UnknownTrack
from songspace.index import DEFAULT_INDEX_DIR, DEFAULT_MODEL_PATH, Library

DEFAULT_EVAL_JSON = Path("metrics/eval.json")
DEFAULT_LIVE_DIR = Path("dvclive")
DEFAULT_CACHE_DIR = Path("data/explorer")
MAP_CACHE_VERSION = 1      # bump when the projection changes, so old caches are not reused
SEARCH_CHUNK = 4096        # queries per batch when listing every track's neighbours


class Forbidden(LibraryError):
    """A track whose file lies outside the library folder (a symlink or a path out of it)."""


class QueryTooLong(LibraryError):
    """An uploaded file whose header declares more audio than a query may decode."""


def project(index, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates (n, 2) of the index's tracks in its own geometry, and the method's name."""
    from songspace import distances, plots

    scaled = index.scaler.transform(np.asarray(index.embeddings, dtype=np.float64))
    dist = None
    if plots.TSNE_MIN_TRACKS <= len(scaled) <= plots.TSNE_MAX_TRACKS:
        dist = distances.pairwise(index.distance, scaled, scaled, **index.ctx)
    return plots.project_2d(scaled, dist, seed)


def _map_key(index, seed: int) -> str:
    h = hashlib.sha256(np.ascontiguousarray(index.embeddings, dtype=np.float32).tobytes())
    h.update(json.dumps([MAP_CACHE_VERSION, index.distance, index.scaler_name, seed,
                         list(index.tracks["track_id"])]).encode())
    return h.hexdigest()[:20]


def cached_projection(index, cache_dir: str | Path | None, seed: int = 0) -> tuple[np.ndarray, str]:
    """`project`, read from cache_dir when this index was projected before (written otherwise)."""
    path = Path(cache_dir) / f"map-{_map_key(index, seed)}.npz" if cache_dir else None
    if path is not None and path.exists():
        try:
            with np.load(path) as z:
                coords, method = z["coords"], str(z["method"])
            if coords.shape == (index.n_tracks, 2):
                return coords, method
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is recomputed and replaced
    coords, method = project(index, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, coords=coords, method=np.array(method))
        os.replace(tmp, path)
    return coords, method


def _unit_square(coords: np.ndarray) -> np.ndarray:
    """Coordinates scaled into [0, 1] x [0, 1], keeping the aspect ratio."""
    c = np.asarray(coords, dtype=np.float64)
    if len(c) == 0:
        return c
    lo, span = c.min(axis=0), np.ptp(c, axis=0).max()
    out = (c - lo) / (span if span > 0 else 1.0)
    return out + (1.0 - out.max(axis=0)) / 2  # centre the shorter side


def read_curves(live_dir: str | Path) -> dict[str, list[list[float]]]:
    """dvclive's step-wise metrics: {"train/loss": [[step, value], ...], ...}; {} when absent."""
    root = Path(live_dir) / "plots" / "metrics"
    curves: dict[str, list[list[float]]] = {}
    for tsv in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        rows = []
        for line in tsv.read_text().splitlines()[1:]:
            parts = line.split("\t")
            try:
                rows.append([float(parts[0]), float(parts[1])])
            except (IndexError, ValueError):
                continue  # a torn last line of a run still being written
        if rows:
            curves[str(tsv.relative_to(root).with_suffix(""))] = rows
    return curves


def headline_words(head: dict, model: str | None) -> str:
    """The evaluation's headline as one or two sentences (empty when there is none)."""
    if not head or head.get("accuracy") is None:
        return ""
    cell = f"{head.get('best_distance', '?')} after {head.get('best_scaler', '?')}"
    words = (f"{model or 'The model'} answers {head['accuracy']:.1%} of "
             f"{head.get('n_quartets', '?')} test quartets right under {cell}")
    if head.get("ci_low") is not None:
        words += f" (95% CI {head['ci_low']:.1%} to {head['ci_high']:.1%})"
    words += f"; chance is {head.get('chance', 1 / 3):.1%}."
    if head.get("best_baseline") and head.get("margin_over_baseline") is not None:
        sig = head.get("margin_significant")
        words += (f" The best baseline, {head['best_baseline']}, scores "
                  f"{head.get('best_baseline_accuracy', float('nan')):.1%}: the model is "
                  f"{abs(head['margin_over_baseline']) * 100:.1f} points "
                  + ("ahead" if head["margin_over_baseline"] >= 0 else "behind")
                  + ("" if sig is None else (", significantly." if sig else ", not significantly.")))
    return words


class Explorer:
    """A library opened for the explorer. Methods return JSON-able dicts; errors are LibraryErrors."""

    def __init__(self, lib: Library, library_root: str | Path, eval_json: str | Path | None,
                 live_dir: str | Path | None, cache_dir: str | Path | None, seed: int = 0):
        self.lib = lib
        self.root = Path(os.path.realpath(library_root))
        self.base = Path.cwd()  # the index's relative track paths are relative to the project
        self.eval_json = Path(eval_json) if eval_json else None
        self.live_dir = Path(live_dir) if live_dir else None
        self.cache_dir = cache_dir
        self.seed = seed
        # One upload embedded at a time (the model is not shared between threads, and each
        # decoded query holds its audio in memory). Only the embedding holds it: searching
        # the index is read-only, so neighbour lookups never wait behind an upload.
        self.embed_lock = threading.Lock()
        self._model_stamp = self._stamp()
        self._ids = {t: i for i, t in enumerate(lib.index.tracks["track_id"])}
        self._space_lock = threading.Lock()  # the space is built once, on the first list asked for
        self._coords: np.ndarray | None = None
        self._method = ""

    @classmethod
    def open(cls, index_dir: str | Path = DEFAULT_INDEX_DIR, model_path: str | Path = DEFAULT_MODEL_PATH,
             library_root: str | Path = "data/corpus", eval_json: str | Path | None = DEFAULT_EVAL_JSON,
             live_dir: str | Path | None = DEFAULT_LIVE_DIR, cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
             seed: int = 0) -> "Explorer":
        """Open the index with its model (`StaleIndex` when they do not match) and the library folder."""
        root = Path(library_root)
        if not root.is_dir():
            raise LibraryError(f"{root}: the library folder does not exist (give it with --library)")
        return cls(Library.open(index_dir, model_path), root, eval_json, live_dir, cache_dir, seed)

    # ------------------------------------------------------------ freshness

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self.lib.model_path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check_fresh(self) -> None:
        """`StaleIndex` (the CLI's message) when the checkpoint changed since the index was built."""
        stamp = self._stamp()
        if stamp != self._model_stamp:
            self.lib.index.check_model(self.lib.model_path)  # hashes only when the file changed
            self._model_stamp = stamp
            self.lib._model = None  # the same bytes rewritten: reload them anyway

    # ------------------------------------------------------------ the map

    def coords(self) -> tuple[np.ndarray, str]:
        if self._coords is None:
            coords, self._method = cached_projection(self.lib.index, self.cache_dir, self.seed)
            self._coords = _unit_square(coords)
        return self._coords, self._method

    def tracks(self) -> dict:
        """Every track with its label, name ('title - artist' where tagged, else the file name)
        and map position; the labels; the index's facts."""
        coords, method = self.coords()
        table = self.lib.index.tracks
        labels = sorted(set(table["label"]))
        meta = self.lib.index.meta
        names = [tags.display_name(title, artist, Path(p).name if p else t) for t, p, title, artist
                 in zip(table["track_id"], table["path"], table["title"], table["artist"])]
        return {
            "tracks": [{"id": t, "label": lab, "name": name, "x": round(float(x), 5), "y": round(float(y), 5)}
                       for t, lab, name, (x, y) in zip(table["track_id"], table["label"], names, coords)],
            "labels": labels,
            "projection": method,
            "index": {"tracks": self.lib.index.n_tracks, "distance": self.lib.index.distance,
                      "scaler": self.lib.index.scaler_name, "searcher": meta.get("searcher"),
                      "model": (meta.get("model") or {}).get("model_name")},
        }

    # ------------------------------------------------------------ neighbours

    def _row(self, track_id: str) -> int:
        """The index row of a track id (`UnknownTrack` if none: an id is never read as a file path)."""
        row = self._ids.get(track_id)
        if row is None:
            raise UnknownTrack(f"{track_id}: no track with that id in the index")
        return row

    def neighbours(self, track_id: str, k: int) -> dict:
        """`songspace similar TRACK_ID -k K --json` for a track of the index (`UnknownTrack` if not).

        The track's stored embedding is searched; nothing is decoded or embedded, no lock taken.
        """
        row = self._row(track_id)
        index = self.lib.index
        return self.lib.result_json(track_id, self.lib.nearest(index.embeddings[row], k, {row}), k)

    def all_neighbours(self, k: int) -> dict[str, list[dict]]:
        """Every track's k nearest tracks (itself excluded): {track_id: [{id, label, distance}]}."""
        index = self.lib.index
        ids, labels = list(index.tracks["track_id"]), list(index.tracks["label"])
        out: dict[str, list[dict]] = {}
        for start in range(0, index.n_tracks, SEARCH_CHUNK):
            rows = range(start, min(start + SEARCH_CHUNK, index.n_tracks))
            found, dist = index.search(index.embeddings[rows.start:rows.stop], k, exclude=[{r} for r in rows])
            for r, f_row, d_row in zip(rows, found, dist):
                out[ids[r]] = [{"track_id": ids[f], "label": labels[f], "distance": float(d)}
                               for f, d in zip(f_row, d_row) if f >= 0]
        return out

    # ------------------------------------------------------------ lists to listen to

    def space(self) -> playlists.Space:
        """The index's scaled space (built once, on the first call)."""
        with self._space_lock:  # built once, not by two first requests at the same time
            return self.lib.space

    def radio(self, seed: str, n: int, **constraints) -> dict:
        """`songspace radio SEED -n N --json` for a track of the index; constraints as
        `playlists.radio` (max_per_artist, no_same_album, diversity, min_similarity)."""
        self._row(seed)
        songs = playlists.radio(self.space(), seed, n, **constraints)
        return {"seed": seed, "n": n, **constraints, "songs": playlists.entries_json(songs)}

    def path(self, start: str, end: str, n: int, min_similarity: float = 0.0) -> dict:
        """`songspace path A B -n N --json` between two tracks of the index."""
        for track_id in (start, end):
            self._row(track_id)
        songs = playlists.path(self.space(), start, end, n, min_similarity)
        return {"from": start, "to": end, "n": n, "min_similarity": min_similarity,
                "songs": playlists.entries_json(songs)}

    def playlists(self, k: int, min_similarity: float = 0.0) -> dict:
        """`songspace playlists -k K --json`: the library clustered into k playlists."""
        lists = playlists.playlists(self.space(), k, min_similarity=min_similarity)
        return {"k": k, "min_similarity": min_similarity,
                "playlists": [{"name": p.name, "songs": playlists.entries_json(p.entries)} for p in lists]}

    def query_file(self, path: str | Path, name: str, k: int, max_seconds: float | None = None) -> dict:
        """Neighbours of an uploaded file (at path, shown as name), embedded as `songspace similar` does.

        max_seconds: `QueryTooLong` when the file's header declares more audio than this,
        checked before anything is decoded. Only the embedding holds `embed_lock`.
        """
        from songspace import audio

        try:
            if max_seconds is not None:
                seconds = audio.info(path).duration_s
                if seconds > max_seconds:
                    raise QueryTooLong(
                        f"{name}: {round(seconds, 1):g} s of audio, more than the {max_seconds:g} s a query may "
                        "decode (params.yaml serve.max_query_seconds)")
            with self.embed_lock:
                self.check_fresh()
                vector, itself, _ = self.lib.resolve(Path(path))
        except audio.AudioError as err:
            raise audio.AudioError(name, err.reason) from None
        return self.lib.result_json(name, self.lib.nearest(vector, k, itself), k)

    # ------------------------------------------------------------ audio

    def audio_path(self, track_id: str) -> Path:
        """The file of an indexed track; `UnknownTrack` (not indexed, no file) or `Forbidden`."""
        stored = self.lib.index.tracks["path"].iat[self._row(track_id)]
        if not stored:
            raise UnknownTrack(f"{track_id}: the index has no file for this track")
        real = Path(os.path.realpath(self.base / stored))
        if not real.is_relative_to(self.root):
            raise Forbidden(f"{track_id}: its file is outside the library folder {self.root}")
        if not real.is_file():
            raise UnknownTrack(f"{track_id}: its file {stored} is missing")
        return real

    def relative_audio(self, track_id: str, start: str | Path) -> str | None:
        """The track's file relative to folder `start` (for links in an exported page), or None."""
        try:
            real = self.audio_path(track_id)
        except LibraryError:
            return None
        return Path(os.path.relpath(real, os.path.realpath(start))).as_posix()

    # ------------------------------------------------------------ evaluation

    def evaluation(self) -> dict:
        """The run's grid, baselines, retrieval and headline (eval.json), training curves, in words.

        An evaluation file that is missing, unreadable or of the wrong shape is reported in
        `words` with `available` false; the curves are shown either way.
        """
        result: dict = {}
        note = ""
        if self.eval_json is None:
            note = "no evaluation file (run `dvc repro evaluate`)"
        else:
            try:
                result = read_json(self.eval_json)
                check_evaluation(result, self.eval_json)
            except EvalJsonError as err:
                result, note = {}, str(err)
        head = result.get("headline") or {}
        model = (self.lib.index.meta.get("model") or {}).get("model_name")
        return _finite({
            "available": bool(result),
            "headline": head,
            "words": headline_words(head, model) or note,
            "grid": result.get("grid") or [],
            "baselines": {"model": {k: head.get(k2) for k, k2 in
                                    (("distance", "best_distance"), ("scaler", "best_scaler"),
                                     ("accuracy", "accuracy"), ("ci_low", "ci_low"), ("ci_high", "ci_high"))},
                          **(result.get("baselines") or {})} if head else {},
            "retrieval": result.get("retrieval") or {},
            "curves": read_curves(self.live_dir) if self.live_dir else {},
            "model": model,
        })


# the parts of eval.json the page reads, and their JSON types
EVAL_PARTS = {"headline": dict, "grid": list, "baselines": dict, "retrieval": dict}
HEADLINE_NUMBERS = ("accuracy", "ci_low", "ci_high", "chance", "best_baseline_accuracy",
                    "margin_over_baseline")
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def _json_type(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def check_evaluation(result: dict, path: str | Path) -> None:
    """`EvalJsonError` naming the file and key when a part the page reads has the wrong type."""
    for key, kind in EVAL_PARTS.items():
        value = result.get(key)
        if value is not None and not isinstance(value, kind):
            raise EvalJsonError(f"{path}: '{key}' is {_json_type(value)}, expected {_JSON_TYPES[kind]}")
    rows = [(f"grid[{i}]", row) for i, row in enumerate(result.get("grid") or [])]
    rows += [(f"baselines.{name}", b) for name, b in (result.get("baselines") or {}).items()]
    for where, row in rows:
        if not isinstance(row, dict):
            raise EvalJsonError(f"{path}: '{where}' is {_json_type(row)}, expected an object")
    head = result.get("headline") or {}
    for key in HEADLINE_NUMBERS:
        value = head.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise EvalJsonError(f"{path}: 'headline.{key}' is {_json_type(value)}, expected a number")


def _finite(x):
    """NaN and inf (not JSON) -> None, recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x
