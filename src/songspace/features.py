"""Waveform -> log-mel spectrograms: whole tracks, their segments, and training crops.

Each track's log-mel is computed once over the whole track, with the front end its model was
built for, and stored as one array `(total_frames, n_mels)` float16 plus a table of where each
track starts (`<frontend>.npy`, `<frontend>.csv`). From it:

- **segments** cover the whole track: windows of `segment_seconds`, every `segment_hop_seconds`,
  at most `max_segments` per track (spread evenly when a long track has more); a track's
  embedding averages them all;
- **training crops** start anywhere in the track, freshly drawn every epoch (`Spectra.crop`).

Front ends (`FRONTENDS`, `frontend`): `db`, the params-driven log-mel in dB, and `musicnn`, the
pretrained network's own input (see `frontends`). One audio file outside any library:
`filesegments`.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import audio, frontends
from . import skipped as skipped_list
from .config import FeatureParams
from .errors import UserError
from .frontends import Frontend
from .models import musicnn

FRONTENDS = ("db", "musicnn")
STORE_DTYPE = np.float16  # log-mel values are far coarser than float16's 11-bit mantissa
# The longest file a query may be (20 minutes; the explorer's serve.max_query_seconds): a query
# is decoded from its header's length, so a file claiming hours is refused, not decoded.
DEFAULT_MAX_QUERY_SECONDS = 1200.0


class FeatureError(UserError):
    """Stored features that are missing, or whose files disagree with each other."""


def frontend(name: str, params: FeatureParams) -> Frontend:
    """The front end called `name` ('db' follows `params`; 'musicnn' is fixed by its weights)."""
    if name == "db":
        return frontends.db(params)
    if name == "musicnn":
        return musicnn.FRONTEND
    raise FeatureError(f"front end '{name}' is unknown; choose one of: {', '.join(FRONTENDS)}")


def fit_length(wave: np.ndarray, samples: int) -> np.ndarray:
    """Cut or zero-pad a mono signal to exactly `samples` samples."""
    if wave.shape[0] >= samples:
        return wave[:samples]
    return np.pad(wave, (0, samples - wave.shape[0]))


def fit_frames(spec: np.ndarray, frames: int) -> np.ndarray:
    """Cut a `(n_mels, T)` log-mel to `frames`, or pad it with its own minimum (silence)."""
    if spec.shape[-1] >= frames:
        return spec[..., :frames]
    fill = float(spec.min()) if spec.size else 0.0
    pad = [(0, 0)] * (spec.ndim - 1) + [(0, frames - spec.shape[-1])]
    return np.pad(spec, pad, constant_values=fill)


def segment_starts(n_frames: int, fe: Frontend, params: FeatureParams) -> np.ndarray:
    """First frames of a track's segments: they cover all `n_frames` frames.

    Windows of `fe.segment_frames` every `segment_hop_seconds`, the last one ending at the end;
    more than `max_segments` are thinned to that many, evenly spread. A track shorter than one
    window has one segment at 0 (padded when read).
    """
    win = fe.segment_frames
    if n_frames <= win:
        return np.zeros(1, dtype=np.int64)
    span = n_frames - win
    hop = max(1, int(round(params.segment_hop_seconds * fe.frames_per_second)))
    count = min(-(-span // hop) + 1, params.max_segments)
    return np.round(np.linspace(0, span, count)).astype(np.int64)


def segment_offsets(duration_s: float, count: int, segment_seconds: float) -> np.ndarray:
    """Start times (s) of `count` sections evenly spread over a track, first at 0, last at the end."""
    span = max(0.0, duration_s - segment_seconds)
    if count == 1:
        return np.array([span / 2.0])
    return np.linspace(0.0, span, count)


def track_spectrogram(path: str | Path, fe: Frontend, params: FeatureParams) -> np.ndarray:
    """The whole track's log-mel `(n_mels, frames)` float32. Raises audio.AudioError for a file
    that cannot be decoded or is silent."""
    wave = audio.load(path, fe.sample_rate)
    if audio.is_silent(wave):
        raise audio.AudioError(path, "silent (no sample above -100 dBFS)")
    return fe.spectrogram(wave, params)


def _extract_one(job):
    track_id, path, _duration_s, fe, params = job
    try:
        spec = track_spectrogram(path, fe, params)
        return track_id, spec.T.astype(STORE_DTYPE), None
    except audio.AudioError as err:
        return track_id, None, err.reason


def _chunk(n_jobs: int, workers: int) -> int:
    """Tracks per task: a few at a time, but never so many that a worker idles."""
    return max(1, min(4, -(-n_jobs // (4 * workers))))


@contextmanager
def _one_thread():
    """One torch thread for per-file work in this process (more only contend)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker() -> None:
    # Each worker process works on one file at a time; more threads only contend for 2 cores.
    torch.set_num_threads(1)


def map_tracks(fn, tracks: pd.DataFrame, extra: tuple, desc: str, workers: int | None,
               progress: bool) -> list:
    """`fn((track_id, path, duration_s, *extra))` for every track, in `workers` processes."""
    workers = workers or min(2, os.cpu_count() or 1)
    durations = tracks["duration_s"] if "duration_s" in tracks else [None] * len(tracks)
    jobs = [(str(t), str(p), None if d is None else float(d), *extra)
            for t, p, d in zip(tracks["track_id"], tracks["path"], durations)]
    bar = dict(total=len(jobs), desc=desc, unit="track", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
            return list(tqdm(pool.map(fn, jobs, chunksize=_chunk(len(jobs), workers)), **bar))
    with _one_thread():
        return [fn(j) for j in tqdm(jobs, **bar)]


def extract_library(tracks: pd.DataFrame, params: FeatureParams, frontend_name: str = "db",
                    workers: int | None = None, progress: bool = True) -> tuple["Spectra", pd.DataFrame]:
    """Whole-track log-mels of every track of a track table (columns track_id, path[, duration_s]).

    Returns `(spectra, skipped)`: `skipped` (a `skipped.table`) lists the tracks that could
    not be decoded instead of stopping the run.
    """
    fe = frontend(frontend_name, params)
    results = map_tracks(_extract_one, tracks, (fe, params), f"log-mel ({fe.name})", workers, progress)
    path_of = dict(zip(tracks["track_id"].astype(str), tracks["path"].astype(str)))
    arrays, rows, skipped, start = [], [], [], 0
    for track_id, spec, reason in results:
        if reason is not None:
            skipped.append({"track_id": track_id, "path": path_of[track_id], "reason": skipped_list.UNUSABLE,
                            "detail": reason})
            continue
        arrays.append(spec)
        rows.append({"track_id": track_id, "start": start, "frames": len(spec)})
        start += len(spec)
    array = np.concatenate(arrays) if arrays else np.zeros((0, fe.n_mels), STORE_DTYPE)
    table = pd.DataFrame(rows, columns=["track_id", "start", "frames"])
    return Spectra(array, table, fe, params), skipped_list.table(skipped)


class Windows:
    """Segments of tracks as one array-like `(n_segments, n_mels, segment_frames)` float32.

    Reads windows out of a `(total_frames, n_mels)` spectrogram store on demand, so the segments of
    a whole library never need to sit in memory at once.
    """

    def __init__(self, store: np.ndarray, starts: np.ndarray, ends: np.ndarray, frames: int):
        self.store, self.starts, self.ends, self.frames = store, starts, ends, frames

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), self.store.shape[1], self.frames)

    def _one(self, i: int) -> np.ndarray:
        s = int(self.starts[i])
        part = np.asarray(self.store[s : min(s + self.frames, int(self.ends[i]))], dtype=np.float32).T
        return fit_frames(part, self.frames)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._one(int(key))
        idx = np.arange(len(self))[key]
        if len(idx) == 0:
            return np.zeros((0, *self.shape[1:]), np.float32)
        return np.stack([self._one(int(i)) for i in idx])

    def take(self, rows: np.ndarray) -> "Windows":
        """The windows at `rows`, still read on demand."""
        rows = np.asarray(rows, dtype=np.int64)
        return Windows(self.store, self.starts[rows], self.ends[rows], self.frames)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class Spectra:
    """Whole-track log-mels of a library: `array (total_frames, n_mels)` + `table` (track_id,
    start, frames) + the front end that made them."""

    def __init__(self, array: np.ndarray, table: pd.DataFrame, fe: Frontend, params: FeatureParams):
        self.array, self.table, self.fe, self.params = array, table.reset_index(drop=True), fe, params
        self._pos = {t: i for i, t in enumerate(self.table["track_id"].astype(str))}

    def __contains__(self, track_id: str) -> bool:
        return track_id in self._pos

    @property
    def track_ids(self) -> list[str]:
        return list(self._pos)

    def span(self, track_id: str) -> tuple[int, int]:
        """`(first frame, frame count)` of a track in `array`."""
        row = self.table.iloc[self._pos[track_id]]
        return int(row["start"]), int(row["frames"])

    def crop(self, track_id: str, offset: int, frames: int | None = None) -> np.ndarray:
        """`(n_mels, frames)` float32 from `offset` frames into the track (padded past its end)."""
        frames = frames or self.fe.segment_frames
        start, n = self.span(track_id)
        offset = min(max(0, offset), max(0, n - 1))
        part = np.asarray(self.array[start + offset : start + min(n, offset + frames)], np.float32).T
        return fit_frames(part, frames)

    def random_crop(self, track_id: str, rng: np.random.Generator) -> np.ndarray:
        """A segment starting at a uniformly drawn frame of the track (anywhere it fits whole)."""
        _, n = self.span(track_id)
        return self.crop(track_id, int(rng.integers(max(1, n - self.fe.segment_frames + 1))))

    def track(self, track_id: str) -> np.ndarray:
        """The whole track: `(n_mels, frames)` float32."""
        start, n = self.span(track_id)
        return np.asarray(self.array[start : start + n], np.float32).T

    def segments(self, track_ids: list[str] | None = None) -> tuple[Windows, pd.DataFrame]:
        """The segments of the tracks (all by default): `(windows, index)`; the index has one row
        per segment (row, track_id, segment, offset_s), in track order."""
        ids = self.track_ids if track_ids is None else list(track_ids)
        starts, ends, rows = [], [], []
        for t in ids:
            start, n = self.span(t)
            offs = segment_starts(n, self.fe, self.params)
            starts.append(start + offs)
            ends.append(np.full(len(offs), start + n))
            rows += [(t, s, round(float(o) / self.fe.frames_per_second, 4)) for s, o in enumerate(offs)]
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
        index = pd.DataFrame(rows, columns=["track_id", "segment", "offset_s"])
        index.insert(0, "row", np.arange(len(index)))
        return Windows(self.array, cat(starts), cat(ends), self.fe.segment_frames), index


def save(out_dir: str | Path, spectra: Spectra) -> None:
    """Write `<frontend>.npy` (frames) and `<frontend>.csv` (track table) under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = spectra.fe.name
    np.save(out / f"{name}.npy", spectra.array)
    spectra.table.to_csv(out / f"{name}.csv", index=False)
    (out / f"{name}.params.json").write_text(json.dumps(
        {"frontend": asdict(spectra.fe), "features": asdict(spectra.params)}, indent=1) + "\n")


def load_spectra(out_dir: str | Path, frontend_name: str = "db", params: FeatureParams | None = None,
                 mmap: bool = True) -> Spectra:
    """Read back what `save` wrote (memory-mapped by default). `params` overrides the stored
    segment settings (the stored ones are used when None)."""
    out = Path(out_dir)
    files = [out / f"{frontend_name}.{ext}" for ext in ("npy", "csv", "params.json")]
    for f in files:
        if not f.exists():
            raise FeatureError(f"{f}: no such feature file (run `dvc repro features`)")
    meta = json.loads(files[2].read_text())
    stored = FeatureParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["features"].items()})
    array = np.load(files[0], mmap_mode="r" if mmap else None)
    table = pd.read_csv(files[1], dtype={"track_id": str})
    if len(table) and int(table["start"].iloc[-1] + table["frames"].iloc[-1]) != len(array):
        raise FeatureError(f"{files[1]}: its tracks span {int(table['start'].iloc[-1] + table['frames'].iloc[-1])} "
                         f"frames but {files[0]} holds {len(array)}")
    params = params or stored
    return Spectra(array, table, frontend(frontend_name, params), params)


def load(out_dir: str | Path, frontend_name: str = "db",
         params: FeatureParams | None = None) -> tuple[Windows, pd.DataFrame]:
    """The segments of every track in `out_dir`: `(windows, index)` (see `Spectra.segments`)."""
    return load_spectra(out_dir, frontend_name, params).segments()


def rows_by_track(index: pd.DataFrame) -> dict[str, np.ndarray]:
    """track_id -> the array rows of its segments."""
    return {t: g["row"].to_numpy() for t, g in index.groupby("track_id", sort=False)}
