"""The Python API for similar songs: `Library` joins a trained model and its song index.

    from songspace import Library
    lib = Library.open()                       # data/index + data/models/best.pt
    lib.similar("song.mp3", k=10)              # [(track_id, label, distance), ...]
    lib.similar("bach-chorale-012", k=5, as_frame=True)
    lib.add(["new/a.flac", "new/b.wav"], label="reel")
    lib.embed(["x.wav"])                       # (1, 128) raw embeddings
    lib.info()

Opening checks that the checkpoint is the one the index was built with (its sha256); a
changed checkpoint raises `StaleIndex` telling the user to run `dvc repro index`. Heavy
modules (torch, faiss) are imported on first use, so `import songspace` stays quick.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from songspace.index.store import SongIndex

from songspace.index import DEFAULT_INDEX_DIR, DEFAULT_MODEL_PATH


class Neighbour(NamedTuple):
    """One similar track: its id, its label and its distance from the query (grid units)."""

    track_id: str
    label: str
    distance: float


def load_model(model_path: str | Path = DEFAULT_MODEL_PATH, device: str = "cpu"):
    """`(embedder, checkpoint metadata)`; `LibraryError` naming the file when it is missing or not a checkpoint."""
    from songspace import embed
    from songspace.index.store import LibraryError

    try:
        return embed.load_checkpoint(model_path, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise LibraryError(str(err)) from None


def embed_files(paths, model=None, feature_params=None, model_path: str | Path = DEFAULT_MODEL_PATH,
                device: str = "cpu", progress: bool = True,
                max_seconds: float | None = None) -> "np.ndarray":
    """Raw track embeddings (len(paths), d) float32 of audio files, in order.

    Each file is embedded as the pipeline embeds a track (mean over its segments). Raises
    audio.AudioError naming the first file that is missing or cannot be decoded, or is longer
    than `max_seconds` by its header (audio.AudioTooLong; None: no limit).
    """
    import numpy as np
    from tqdm.auto import tqdm

    from songspace import embed

    if model is None:
        model, meta = load_model(model_path, device)
        feature_params = meta["feature_params"]
    paths = [Path(p) for p in paths]
    rows = [embed.embed_file(model, p, feature_params, device=device, max_seconds=max_seconds)
            for p in tqdm(paths, desc="embed", unit="file", disable=not progress or len(paths) < 2)]
    dim = rows[0].shape[0] if rows else 0
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)


def _same_file(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


class Library:
    """A song index with the model that made it: similar songs, adding songs, embedding files."""

    def __init__(self, index: "SongIndex", index_path: str | Path, model_path: str | Path,
                 device: str = "cpu"):
        self.index = index
        self.index_path = Path(index_path)
        self.model_path = Path(model_path)
        self.device = device
        self._model = None
        self._space = None

    @classmethod
    def open(cls, index_path: str | Path = DEFAULT_INDEX_DIR, model_path: str | Path = DEFAULT_MODEL_PATH,
             device: str = "cpu", check_model: bool = True) -> "Library":
        """Open an index folder; with check_model, refuse it unless model_path is the checkpoint it was built with."""
        from songspace.index.store import SongIndex

        index = SongIndex.load(index_path)
        if check_model:
            index.check_model(model_path)
        return cls(index, index_path, model_path, device)

    # ------------------------------------------------------------ the model

    @property
    def model(self):
        """`(embedder, checkpoint metadata)`, loaded on first use."""
        if self._model is None:
            self._model = load_model(self.model_path, self.device)
        return self._model

    def embed(self, paths, progress: bool = True, max_seconds: float | None = None) -> "np.ndarray":
        """Raw embeddings (len(paths), d) of audio files with the index's model (`embed_files`)."""
        model, meta = self.model
        return embed_files(paths, model, meta["feature_params"], device=self.device, progress=progress,
                           max_seconds=max_seconds)

    # ------------------------------------------------------------ queries

    def _rows_with(self, column: str, value: str) -> list[int]:
        return [int(i) for i in (self.index.tracks[column] == value).to_numpy().nonzero()[0]]

    def resolve(self, query: str | Path, max_seconds: float | None = None
                ) -> tuple["np.ndarray", set[int], str]:
        """A query's raw embedding (d,), the library rows that are the query itself, and a description.

        A path to an existing file is the song in that file; it is the library's own track when
        a track has the same bytes (sha1) or the same path, and then that track's stored
        embedding is used and the track excluded. Otherwise a track_id of the index. A file
        that must be embedded and is longer than `max_seconds` raises audio.AudioTooLong.
        """
        from songspace import audio, ingest
        from songspace.index.store import UnknownTrack

        tracks = self.index.tracks
        path = Path(query)
        if path.is_file():
            try:
                digest = ingest.sha1_of(path)
            except OSError as err:
                raise audio.AudioError(path, f"cannot read ({err.strerror or err})") from None
            same_bytes = self._rows_with("sha1", digest)
            same_path = [i for i, p in enumerate(tracks["path"]) if p and _same_file(p, path)]
            itself = set(same_bytes) | set(same_path)
            if same_bytes:
                return self.index.embeddings[same_bytes[0]], itself, str(path)
            return self.embed([path], progress=False, max_seconds=max_seconds)[0], itself, str(path)
        rows = self._rows_with("track_id", str(query))
        if rows:
            return self.index.embeddings[rows[0]], set(rows), f"track {query}"
        if path.exists():  # a folder, a device
            raise audio.AudioError(path, "not a regular file")
        raise UnknownTrack(f"{query}: no such file, and no track with that id in the index")

    def similar(self, query: str | Path, k: int = 10, as_frame: bool = False,
                max_seconds: float | None = None):
        """The k tracks nearest to a song (a file, in the library or not, or a track_id).

        Returns a list of `Neighbour(track_id, label, distance)`, nearest first, or with
        as_frame the table of `nearest`. The query's own track (same bytes, same path or the
        track_id given) is never returned. A query file is decoded only if it is no longer than
        `max_seconds` (`resolve`).
        """
        vector, itself, _ = self.resolve(query, max_seconds)
        frame = self.nearest(vector, k, itself)
        if as_frame:
            return frame
        return [Neighbour(r.track_id, r.label, r.distance) for r in frame.itertuples()]

    def nearest(self, vector: "np.ndarray", k: int, itself: set[int] = frozenset()) -> "pd.DataFrame":
        """The k tracks nearest a raw embedding (d,), rows `itself` left out: rank, track_id,
        name ('title - artist' where tagged, else the file name), label, distance, similarity
        (in [0, 1], `playlists.Space.similarity`), path. A read-only search: no lock, no model."""
        import pandas as pd

        from songspace import tags

        found, dist = self.index.search(vector[None, :], k, exclude=[set(itself)])
        keep = found[0] >= 0
        rows, dist = [int(r) for r in found[0][keep]], [float(d) for d in dist[0][keep]]
        t = self.index.tracks
        return pd.DataFrame({
            "rank": range(1, len(rows) + 1),
            "track_id": [t["track_id"].iat[r] for r in rows],
            "name": [tags.display_name(t["title"].iat[r], t["artist"].iat[r], Path(t["path"].iat[r]).name)
                     for r in rows],
            "label": [t["label"].iat[r] for r in rows],
            "distance": dist,
            "similarity": [round(float(s), 4) for s in self.space.similarity(dist)] if rows else [],
            "path": [t["path"].iat[r] for r in rows],
        })

    def result_json(self, query: str, frame: "pd.DataFrame", k: int) -> dict:
        """A neighbour table as `songspace similar --json` prints it (and the explorer sends it)."""
        return {"query": query, "k": k, "distance": self.index.distance, "scaler": self.index.scaler_name,
                "exact": self.index.meta.get("exact"), "neighbours": frame.to_dict(orient="records")}

    # ------------------------------------------------------------ listening

    @property
    def space(self) -> "playlists.Space":
        """The index's space for radio, paths and playlists (rebuilt when the index grows)."""
        from songspace import playlists

        if self._space is None or len(self._space.ids) != self.index.n_tracks:
            self._space = playlists.Space.from_index(self.index)
        return self._space

    def track_id(self, query: str | Path) -> str:
        """The library track a query names: its track_id, or its file (same bytes or path)."""
        from songspace.index.store import UnknownTrack

        if self._rows_with("track_id", str(query)):
            return str(query)
        _, rows, _ = self.resolve(query)
        if not rows:
            raise UnknownTrack(f"{query}: not a song of the index; add it first (`songspace add`)")
        return str(self.index.tracks["track_id"].iat[min(rows)])

    def radio(self, seed: str | Path, n: int = 30, **constraints) -> list["playlists.Entry"]:
        """`playlists.radio` from a library song (track id or file); constraints as there."""
        from songspace import playlists

        return playlists.radio(self.space, self.track_id(seed), n, **constraints)

    def path(self, start: str | Path, end: str | Path, n: int = 12, min_similarity: float = 0.0
             ) -> list["playlists.Entry"]:
        """`playlists.path` between two library songs (track ids or files)."""
        from songspace import playlists

        return playlists.path(self.space, self.track_id(start), self.track_id(end), n, min_similarity)

    def playlists(self, k: int = 20, min_similarity: float = 0.0) -> list["playlists.Playlist"]:
        """The library as k playlists (`playlists.playlists`)."""
        from songspace import playlists

        return playlists.playlists(self.space, k, min_similarity=min_similarity)

    # ------------------------------------------------------------ growing the library

    def _new_id(self, stem: str, taken: set[str]) -> str:
        candidate, n = stem, 1
        while candidate in taken:
            n += 1
            candidate = f"{stem}-{n}"
        return candidate

    def add(self, paths, label: str | None = None, save: bool = True,
            progress: bool = True) -> "pd.DataFrame":
        """Embed audio files and add them to the index without rebuilding it.

        Each file becomes a track (track_id from its file name, made unique; label as given, or
        'unlabelled'; its absolute path). Files whose bytes are already in the index (or
        repeated in `paths`) are not added again, so a retried add adds nothing twice. Every
        file is checked and embedded before any is added, so a missing or undecodable file, or
        a name that is not UTF-8 (audio.AudioError), leaves the index unchanged. With save,
        the files are embedded first; then, under the index's lock, the index is read again
        as it is on disk (another add may have grown it: files it now holds are skipped), the
        new tracks are added, the folder is replaced whole and the added-songs list
        (`index.added_list_path`, read again by `dvc repro index`) is brought up to the
        index's added tracks. Returns a table: track_id, path, label, added (bool), note.
        """
        import numpy as np
        import pandas as pd

        from songspace import audio, ingest
        from songspace.index.store import SongIndex, added_list_path, index_lock, sync_added

        paths = [Path(os.path.abspath(p)) for p in paths]
        for p in paths:
            try:
                str(p).encode("utf-8")
            except UnicodeEncodeError:
                raise audio.AudioError(p, "the file name is not valid UTF-8; rename the file") from None
            if not p.is_file():
                raise audio.AudioError(p, "no such file" if not p.exists() else "not a regular file")
        digests = [ingest.sha1_of(p) for p in paths]
        vectors: dict[str, "np.ndarray"] = {}
        report, new = self._plan_add(paths, digests, label)
        self._embed_new(new, vectors, progress)  # outside the lock: the slow part
        if save:
            with index_lock(self.index_path):
                self.index = SongIndex._read(self.index_path)  # as another add may have left it
                report, new = self._plan_add(paths, digests, label)
                self._embed_new(new, vectors, progress)  # only songs the index lost meanwhile
                if new:
                    self.index.add(np.stack([vectors[r["sha1"]] for r in new]), pd.DataFrame(new))
                    self.index._write(self.index_path)
                sync_added(added_list_path(self.index_path), self.index.added)
        elif new:
            self.index.add(np.stack([vectors[r["sha1"]] for r in new]), pd.DataFrame(new))
        return pd.DataFrame(report, columns=["track_id", "path", "label", "added", "note"])

    def _embed_new(self, new: list[dict], vectors: dict, progress: bool) -> None:
        """Embed the planned tracks not in `vectors` yet (keyed by sha1)."""
        todo = [r for r in new if r["sha1"] not in vectors]
        if todo:
            vectors.update(zip([r["sha1"] for r in todo], self.embed([r["path"] for r in todo], progress=progress)))

    def _plan_add(self, paths: list[Path], digests: list[str], label: str | None
                  ) -> tuple[list[dict], list[dict]]:
        """(report rows, new track rows) for files to add to the index as it is now."""
        from songspace import audio, ingest, tags

        known = dict(zip(self.index.tracks["sha1"], self.index.tracks["track_id"]))
        taken = set(self.index.tracks["track_id"])
        report, new = [], []
        for p, digest in zip(paths, digests):
            if digest in known:
                report.append({"track_id": known[digest], "path": str(p), "label": "", "added": False,
                               "note": f"same bytes as track {known[digest]}: not added again"})
                continue
            track_id = self._new_id(p.stem, taken)
            taken.add(track_id)
            known[digest] = track_id
            row = {"track_id": track_id, "path": str(p), "label": label or ingest.UNLABELLED, "sha1": digest,
                   "duration_s": f"{audio.info(p).duration_s:.3f}", **tags.read(p)}
            new.append(row)
            report.append({**{k: row[k] for k in ("track_id", "path", "label")}, "added": True, "note": ""})
        return report, new

    # ------------------------------------------------------------ facts

    def info(self) -> dict:
        """Facts about the index: model, size, cell, index type, recall, freshness, and when its
        folder was last written (meta.json's modification time: the files hold no clock time)."""
        from songspace.index.files import FILES
        from songspace.index.store import StaleIndex

        meta = dict(self.index.meta)
        try:
            self.index.check_model(self.model_path)
            fresh = "up to date"
        except StaleIndex:
            fresh = "STALE: the checkpoint changed since the build; run `dvc repro index`"
        except Exception as err:  # a missing checkpoint: info still describes the index
            fresh = f"unknown ({err})"
        model = meta.get("model") or {}
        recall = meta.get("recall") or {}
        return {
            "index": str(self.index_path),
            "model": model.get("model_name"),
            "checkpoint": model.get("path"),
            "checkpoint_sha256": model.get("sha256"),
            "model_status": fresh,
            "tracks": self.index.n_tracks,
            "added_tracks": meta.get("added_tracks", 0),
            "labels": int(self.index.tracks["label"].nunique()),
            "distance": self.index.distance,
            "scaler": self.index.scaler_name,
            "chosen_by": meta.get("chosen_by"),
            "faiss_metric": meta.get("faiss_metric"),
            "index_type": meta.get("searcher"),
            "exact": meta.get("exact"),
            "recall_at_10": recall.get("recall_at_k"),
            "written_at": _modified_at(self.index_path / FILES["meta"]),
            "dim": self.index.dim,
        }



def _modified_at(path: Path) -> str | None:
    """A file's modification time, UTC, to the second (None when it cannot be read)."""
    import datetime as dt

    try:
        stamp = path.stat().st_mtime
    except OSError:
        return None
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).isoformat(timespec="seconds")
