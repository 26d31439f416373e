"""Listening in the space: a radio from a seed song, a path from one song to another, the
library clustered into playlists, and M3U8 files of any of them.

Everything works on a `Space`: the index's scaled embeddings under its own distance (the grid
cell the index was built for), with the track table (ids, paths, tags). Songs are compared
with the index's distance; what a user sees is a *similarity* in [0, 1]: the share of the
library's song pairs that lie farther apart (1 - the empirical CDF of the distances between
random pairs of the library's songs, `PAIR_SAMPLE` of them, seeded). A similarity of 0.95 means
"closer than 95% of pairs in this library", whatever the distance; a song and itself score 1.

Duplicates of one song (the same audio bytes, or the same artist and title once case, space and
a bracketed suffix such as "(Live)" or "[Remastered]" are set aside) appear once in any list.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from songspace import distances, tags
from songspace.errors import UserError

PAIR_SAMPLE = 20_000       # random song pairs behind the similarity scale
_BRACKETED = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]\s*")


class PlaylistError(UserError):
    """A radio, path or playlist request that cannot be met; the message says why."""


@dataclass(frozen=True)
class Entry:
    """One song of a list, with its similarity (radio: to the seed; path: to the song before;
    playlists: to the playlist's centre)."""

    track_id: str
    path: str
    title: str
    artist: str
    album: str
    duration_s: float | None
    similarity: float

    @property
    def name(self) -> str:
        return tags.display_name(self.title, self.artist, Path(self.path).name)


def _column(tracks: pd.DataFrame, name: str) -> list[str]:
    if name not in tracks:
        return [""] * len(tracks)
    return ["" if pd.isna(v) else str(v) for v in tracks[name]]


def _codes(values: list[str]) -> np.ndarray:
    """Each value's code: 1, 2, ... by sorted value; 0 for an empty one."""
    code = {v: i for i, v in enumerate(sorted({v for v in values if v}), 1)}
    return np.array([code.get(v, 0) for v in values], dtype=np.int64)


class Space:
    """Scaled embeddings `(n, d)` under one distance, and their track table (row i = track i)."""

    def __init__(self, vectors: np.ndarray, distance: str, ctx: dict, tracks: pd.DataFrame, seed: int = 0):
        self.vectors = np.asarray(vectors, dtype=np.float64)
        if self.vectors.ndim != 2 or len(self.vectors) != len(tracks):
            raise ValueError(f"vectors {self.vectors.shape} do not match {len(tracks)} tracks")
        self.distance, self.ctx = distance, dict(ctx)
        self.tracks = tracks.reset_index(drop=True)
        self.ids = [str(t) for t in self.tracks["track_id"]]
        self.row_of = {t: i for i, t in enumerate(self.ids)}
        # integer codes (0: none) so that a list's constraints are array operations
        self.artist = _codes([tags.first(a).casefold() for a in _column(self.tracks, "artist")])
        self.album = _codes([a.casefold() for a in _column(self.tracks, "album")])
        self.dup_key = np.array(self._duplicate_keys(), dtype=np.int64)
        self._scale = self._pair_distances(seed)

    @classmethod
    def from_index(cls, index, seed: int = 0) -> "Space":
        """The space of a `SongIndex`: its embeddings scaled as it searches them."""
        scaled = index.scaler.transform(np.asarray(index.embeddings, dtype=np.float64))
        return cls(scaled, index.distance, index.ctx, index.tracks, seed)

    def _duplicate_keys(self) -> list[int]:
        """One key per song: rows with the same audio (sha1) or the same artist and title share it."""
        parent = list(range(len(self.ids)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        first_of: dict[str, int] = {}
        sha = _column(self.tracks, "sha1")
        titles, artists = _column(self.tracks, "title"), _column(self.tracks, "artist")
        for i, (s, t, a) in enumerate(zip(sha, titles, artists)):
            t, a = " ".join(_BRACKETED.sub(" ", t).casefold().split()), " ".join(a.casefold().split())
            for key in ([f"sha:{s}"] if s else []) + ([f"tag:{a}\x1f{t}"] if t and a else []):
                j = first_of.setdefault(key, i)
                parent[root(i)] = root(j)
        return [root(i) for i in range(len(self.ids))]

    def _pair_distances(self, seed: int) -> np.ndarray:
        n = len(self.vectors)
        if n < 2:
            return np.zeros(1)
        rng = np.random.default_rng(seed)
        if n * (n - 1) // 2 <= PAIR_SAMPLE:
            i, j = np.triu_indices(n, k=1)
        else:
            i = rng.integers(0, n, PAIR_SAMPLE)
            j = (i + rng.integers(1, n, PAIR_SAMPLE)) % n  # never i itself
        return np.sort(distances.rowwise(self.distance, self.vectors[i], self.vectors[j], **self.ctx))

    def distances_to(self, x: np.ndarray) -> np.ndarray:
        """The distance of every song to the point(s) x `(d,)` -> `(n,)`, or `(m, d)` -> `(m, n)`."""
        x = np.asarray(x, dtype=np.float64)
        d = distances.pairwise(self.distance, np.atleast_2d(x), self.vectors, **self.ctx)
        return d[0] if x.ndim == 1 else d

    def similarity(self, d) -> np.ndarray:
        """Similarity in [0, 1] of distance(s) d: the share of the library's pairs farther apart."""
        d = np.asarray(d, dtype=np.float64)
        farther = len(self._scale) - np.searchsorted(self._scale, d, side="right")
        return np.where(d <= 0, 1.0, farther / len(self._scale))

    def row(self, track_id: str) -> int:
        try:
            return self.row_of[track_id]
        except KeyError:
            raise PlaylistError(f"'{track_id}' is not a track of the index") from None

    def entry(self, i: int, similarity: float) -> Entry:
        t = self.tracks.iloc[i]
        dur = t.get("duration_s")
        dur = None if dur is None or pd.isna(dur) or dur == "" else float(dur)
        return Entry(self.ids[i], str(t["path"]), str(t.get("title", "") or ""), str(t.get("artist", "") or ""),
                     str(t.get("album", "") or ""), dur, round(float(similarity), 4))


class _Taken:
    """What a list holds so far: its rows, and which songs (duplicate keys), how many songs per
    artist and which albums it has, as arrays indexed by `Space` codes."""

    def __init__(self, space: Space):
        self.rows: list[int] = []
        self.keys = np.zeros(len(space.ids), bool)
        self.artists = np.zeros(int(space.artist.max(initial=0)) + 1, np.int64)
        self.albums = np.zeros(int(space.album.max(initial=0)) + 1, bool)

    def add(self, space: Space, i: int) -> None:
        self.rows.append(i)
        self.keys[space.dup_key[i]] = True
        self.artists[space.artist[i]] += 1
        self.albums[space.album[i]] = True


def _allowed(space: Space, taken: _Taken, max_per_artist: int | None, no_same_album: bool) -> np.ndarray:
    """(n,) bool: songs that may still join the list (code 0, no artist or album, never limits)."""
    ok = ~taken.keys[space.dup_key]
    if max_per_artist is not None:
        ok &= (space.artist == 0) | (taken.artists[space.artist] < max_per_artist)
    if no_same_album:
        ok &= (space.album == 0) | ~taken.albums[space.album]
    return ok


def radio(space: Space, seed: str, n: int = 30, max_per_artist: int | None = None, no_same_album: bool = False,
          diversity: float = 0.3, min_similarity: float = 0.0) -> list[Entry]:
    """A list that starts at the seed song and stays near it, no song twice.

    Each next song is the allowed one nearest to a blend of the seed and the song before:
    distance (1 - diversity) * d(seed, x) + diversity * d(previous, x); diversity 0 keeps to the
    seed's neighbours in order, 1 walks from song to song. Songs whose similarity to the seed is
    below min_similarity are never taken. max_per_artist counts the seed; no_same_album keeps
    every album (the seed's too) to one song. Entries carry their similarity to the seed.
    """
    if not 0 <= diversity <= 1 or not math.isfinite(diversity):
        raise PlaylistError(f"diversity must lie in [0, 1], got {diversity}")
    if n < 1 or (max_per_artist is not None and max_per_artist < 1):
        raise PlaylistError("the list's length and --max-per-artist must be at least 1")
    s = space.row(seed)
    to_seed = space.distances_to(space.vectors[s])
    sim_seed = space.similarity(to_seed)
    taken = _Taken(space)
    taken.add(space, s)
    out = [space.entry(s, 1.0)]
    prev = s
    while len(out) < n:
        ok = _allowed(space, taken, max_per_artist, no_same_album) & (sim_seed >= min_similarity)
        if not ok.any():
            break
        score = (1 - diversity) * to_seed + diversity * space.distances_to(space.vectors[prev])
        nxt = int(np.flatnonzero(ok)[np.argmin(score[ok])])
        taken.add(space, nxt)
        out.append(space.entry(nxt, sim_seed[nxt]))
        prev = nxt
    return out


def path(space: Space, start: str, end: str, n: int = 12, min_similarity: float = 0.0) -> list[Entry]:
    """`n` songs from start to end (both included), each step close to the one before.

    The straight line from start to end in the scaled space is cut into n - 1 equal steps; each
    inner point takes the allowed song nearest to it and to the song before (the sum of both
    distances), never a song twice nor a copy of one already taken. min_similarity drops songs
    less similar than that to the song before (the end is always kept, however far). Entries
    carry their similarity to the song before (the start: 1). Fewer than n songs come back when
    the library runs out.
    """
    if n < 2:
        raise PlaylistError("a path needs at least 2 songs (its two ends)")
    a, b = space.row(start), space.row(end)
    if space.dup_key[a] == space.dup_key[b]:
        raise PlaylistError(f"'{start}' and '{end}' are the same song")
    taken = _Taken(space)
    taken.keys[space.dup_key[b]] = True  # the end comes last, and only there
    taken.add(space, a)
    out, prev = [space.entry(a, 1.0)], a
    va, vb = space.vectors[a], space.vectors[b]
    for step in range(1, n - 1):
        target = va + (vb - va) * step / (n - 1)
        to_prev = space.distances_to(space.vectors[prev])
        ok = _allowed(space, taken, None, False) & (space.similarity(to_prev) >= min_similarity)
        if not ok.any():
            break
        score = space.distances_to(target) + to_prev
        nxt = int(np.flatnonzero(ok)[np.argmin(score[ok])])
        taken.add(space, nxt)
        out.append(space.entry(nxt, space.similarity(to_prev[nxt])))
        prev = nxt
    out.append(space.entry(b, space.similarity(space.distances_to(space.vectors[prev])[b])))
    return out


@dataclass(frozen=True)
class Playlist:
    name: str
    entries: list[Entry]


def _name(space: Space, rows: np.ndarray, number: int) -> str:
    """A cluster's name from its most common genre and artist (else label), e.g. 'Ambient / Zoë'."""
    parts = []
    for column in ("genre", "artist", "label"):
        values = [tags.first(v) for v in np.asarray(_column(space.tracks, column), dtype=object)[rows]]
        common = Counter(v for v in values if v and v != "_unlabelled").most_common(1)
        if common and (column != "label" or not parts):
            parts.append(common[0][0])
    return " / ".join(parts[:2]) or f"Playlist {number}"


def playlists(space: Space, k: int = 20, seed: int = 0, min_similarity: float = 0.0) -> list[Playlist]:
    """The library cut into k playlists by k-means on the scaled embeddings (scikit-learn),
    biggest first; each ordered by similarity to its centre, duplicates collapsed. Songs less
    similar than min_similarity to their centre are left out (a playlist left empty is dropped)."""
    from sklearn.cluster import KMeans

    n = len(space.ids)
    if not 1 <= k <= n:
        raise PlaylistError(f"k must lie between 1 and the {n} songs of the index, got {k}")
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(space.vectors)
    result = []
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        if not len(rows):
            continue
        centre = space.vectors[rows].mean(axis=0)
        sim = space.similarity(space.distances_to(centre)[rows])
        keys, entries = set(), []
        for i, s in sorted(zip(rows, sim), key=lambda r: (-r[1], space.ids[r[0]])):
            if space.dup_key[i] in keys or s < min_similarity:
                continue
            keys.add(space.dup_key[i])
            entries.append(space.entry(int(i), s))
        if entries:  # min_similarity may leave a cluster empty: no playlist then
            result.append((rows, entries))
    result.sort(key=lambda r: (-len(r[1]), space.ids[r[0][0]]))
    names: Counter = Counter()
    out = []
    for number, (rows, entries) in enumerate(result, 1):
        name = _name(space, rows, number)
        names[name] += 1
        out.append(Playlist(name if names[name] == 1 else f"{name} ({names[name]})", entries))
    return out


def entries_json(entries: list[Entry]) -> list[dict]:
    """A list as JSON-able dicts (`Entry` fields plus the display name)."""
    return [{**asdict(e), "name": e.name} for e in entries]


def m3u8_text(entries: list[Entry], playlist_path: str | Path, title: str | None = None) -> str:
    """Extended M3U in UTF-8: `#EXTINF:seconds,artist - title` and the file's path relative to
    the playlist's folder (absolute where no relative path exists, e.g. another drive)."""
    folder = Path(playlist_path).resolve().parent
    lines = ["#EXTM3U"] + ([f"#PLAYLIST:{title}"] if title else [])
    for e in entries:
        seconds = -1 if e.duration_s is None else int(round(e.duration_s))
        shown = f"{e.artist} - {e.title}" if e.artist and e.title else e.name
        target = Path(e.path).resolve()
        try:
            where = Path(os.path.relpath(target, folder)).as_posix()
        except ValueError:
            where = target.as_posix()
        lines += [f"#EXTINF:{seconds},{shown.replace(chr(10), ' ')}", where]
    return "\n".join(lines) + "\n"


def write_m3u8(entries: list[Entry], out: str | Path, title: str | None = None) -> Path:
    """Write an M3U8 file atomically (a temporary file in the same folder, then renamed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = m3u8_text(entries, out, title)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, out)
    return out
