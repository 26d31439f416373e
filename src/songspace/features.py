"""Waveform -> log-mel spectrograms: whole tracks, their segments, and training crops.

Each track's log-mel is computed once over the whole track, with the front end its model was
built for, and stored as one array `(total_frames, n_mels)` float16 plus a table of where each
track starts (`<frontend>.npy`, `<frontend>.csv`). From it:

- **segments** cover the whole track: windows of `segment_seconds`, every `segment_hop_seconds`,
  at most `max_segments` per track (spread evenly when a long track has more); a track's
  embedding averages them all;
- **training crops** start anywhere in the track, freshly drawn every epoch (`Spectra.crop`).

Front ends (`FRONTENDS`): `db` is the params-driven log-mel in dB (torchaudio, HTK mel scale);
`musicnn` is the pretrained musicnn network's own input (16 kHz, n_fft 512, hop 256, 96 Slaney
mel bands, `log10(10000 x + 1)`, windows of 187 frames), whatever `features.*` says.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio
from tqdm import tqdm

from . import audio
from . import skipped as skipped_list
from .config import FeatureParams
from .errors import UserError
from .models import musicnn

TOP_DB = 80.0
FRONTENDS = ("db", "musicnn")
STORE_DTYPE = np.float16  # log-mel values are far coarser than float16's 11-bit mantissa
# The longest file a query may be (20 minutes; the explorer's serve.max_query_seconds): a query
# is decoded from its header's length, so a file claiming hours is refused, not decoded.
DEFAULT_MAX_QUERY_SECONDS = 1200.0
QUERY_BLOCK_SECONDS = 60.0  # audio per block of a pass over a whole query file


class FeatureError(UserError):
    """Stored features that are missing, or whose files disagree with each other."""


@dataclass(frozen=True)
class Frontend:
    """What a model's input is: the log-mel's shape and rate, and one segment's frames."""

    name: str
    sample_rate: int
    hop_length: int
    n_mels: int
    segment_frames: int

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


def frontend(name: str, params: FeatureParams) -> Frontend:
    """The front end called `name` ('db' follows `params`; 'musicnn' is fixed)."""
    if name == "db":
        return Frontend("db", params.sample_rate, params.hop_length, params.n_mels, params.frames)
    if name == "musicnn":
        # fixed by the pretrained weights
        return Frontend("musicnn", musicnn.SAMPLE_RATE, musicnn.HOP_LENGTH, musicnn.N_MELS,
                        musicnn.WINDOW_FRAMES)
    raise FeatureError(f"front end '{name}' is unknown; choose one of: {', '.join(FRONTENDS)}")


@lru_cache(maxsize=8)
def _db_transform(params: FeatureParams) -> torch.nn.Module:
    return torch.nn.Sequential(
        torchaudio.transforms.MelSpectrogram(
            sample_rate=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length,
            n_mels=params.n_mels, f_min=params.f_min, f_max=params.f_max, power=2.0),
        torchaudio.transforms.AmplitudeToDB(stype="power", top_db=TOP_DB),
    )


def logmel(wave: np.ndarray | torch.Tensor, params: FeatureParams) -> torch.Tensor:
    """The `db` front end: `(..., samples)` -> `(..., n_mels, frames)` float32 log-mel in dB.

    `top_db` clipping is relative to the loudest bin of each call (a whole track or a segment).
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    with torch.no_grad():
        return _db_transform(params)(x)


def spectrogram(wave: np.ndarray | torch.Tensor, fe: Frontend, params: FeatureParams) -> np.ndarray:
    """`(..., samples)` at `fe.sample_rate` -> `(..., n_mels, frames)` float32 through front end `fe`."""
    if fe.name == "musicnn":
        with torch.no_grad():
            return musicnn.logmel(wave).numpy()
    return logmel(wave, params).numpy()


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
    return spectrogram(wave, fe, params)


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


class _FileFrames:
    """Frames of one file's whole-track spectrogram, each computed from only the audio it needs.

    `frames(first, count)` equals, to float rounding, columns `[first, first + count)` of the
    front end applied to the whole decoded track: the STFT is centred, so a frame needs
    `n_fft / 2` samples either side (the track's own reflect padding at its two ends), and
    `audio.load_samples` decodes exactly those samples. For `db` the frames are mel power (the
    dB floor depends on the whole track's loudest bin); for `musicnn` its log-mel.
    """

    def __init__(self, path: str | Path, fe: Frontend, params: FeatureParams, meta: audio.AudioInfo):
        self.path, self.fe, self.params, self.meta = path, fe, params, meta
        self.samples = audio.resampled_length(meta.frames, meta.sample_rate, fe.sample_rate)
        self.n_frames = self.samples // fe.hop_length + 1   # torch.stft, centred
        self.half = (params.n_fft if fe.name == "db" else musicnn.N_FFT) // 2
        self.peak = 0.0  # max |sample| of what was decoded

    def frames(self, first: int, count: int) -> torch.Tensor:
        """`(n_mels, count)` float32: whole-track frames `first .. first + count - 1`."""
        hop = self.fe.hop_length
        back = -(-self.half // hop)  # frames before `first` whose centres lie in its window
        # from a frame edge, and at least n_fft / 2 + 1 samples before the track's end: the
        # reflect padding there reads them
        lo = max(0, min(first - back, (self.samples - self.half - 1) // hop) * hop)
        hi = min(self.samples, (first + count - 1) * hop + self.half + 1)
        wave = audio.load_samples(self.path, self.fe.sample_rate, lo, hi, self.meta)
        self.peak = max(self.peak, float(np.max(np.abs(wave))) if wave.size else 0.0)
        x = torch.from_numpy(wave)
        with torch.no_grad():
            spec = musicnn.logmel(x) if self.fe.name == "musicnn" else _db_transform(self.params)[0](x)
        skip = first - lo // hop  # frame j of the section is centred on sample lo + j * hop
        return spec[:, skip : skip + count]


def _to_db(power: torch.Tensor, loudest: torch.Tensor, params: FeatureParams) -> np.ndarray:
    """The `db` front end's dB scale with its `top_db` floor under the whole track's `loudest` bin."""
    to_db = _db_transform(params)[1]
    scale = (to_db.multiplier, to_db.amin, to_db.db_multiplier)
    db = torchaudio.functional.amplitude_to_DB(power, *scale, top_db=None)
    floor = torchaudio.functional.amplitude_to_DB(loudest, *scale, top_db=None) - to_db.top_db
    return torch.maximum(db, floor).numpy()


def _frames_by_blocks(track: _FileFrames, starts: list[int], counts: list[int]
                      ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One pass over the whole track in blocks of `QUERY_BLOCK_SECONDS`: the segments' frames
    (`(n_mels, count)` each) and the loudest bin of the track. Memory: the segments and a block."""
    n, step = track.n_frames, max(1, int(QUERY_BLOCK_SECONDS * track.fe.frames_per_second))
    parts, loudest = [None] * len(starts), torch.tensor(0.0)
    for b in range(0, n, step):
        block = track.frames(b, min(step, n - b))
        loudest = torch.maximum(loudest, block.max())
        for i, (s, c) in enumerate(zip(starts, counts)):
            lo, hi = max(s, b), min(s + c, b + block.shape[1])
            if lo < hi:
                if parts[i] is None:
                    parts[i] = torch.empty(block.shape[0], c)
                parts[i][:, lo - s : hi - s] = block[:, lo - b : hi - b]
    return parts, loudest


def file_segments(path: str | Path, fe: Frontend, params: FeatureParams,
                  max_seconds: float | None = None) -> np.ndarray:
    """The segments of one audio file outside any library: `(n, n_mels, segment_frames)` float32.

    The same segments, to float rounding, as the library path (`track_spectrogram`, then
    `Spectra.segments`), decoded within bounds: the length comes from the header, and a file
    longer than `max_seconds` (None: no limit) is refused before any decoding
    (audio.AudioTooLong). Memory grows with `max_segments`, not with the file: when the
    segments cover little of the track only their own audio is decoded; otherwise, and always
    for `db` (its `top_db` floor is relative to the whole track's loudest bin), one pass in
    blocks decodes the track once, keeping only the segments' frames.
    """
    meta = audio.check_length(path, max_seconds, "serve.max_query_seconds")
    track = _FileFrames(path, fe, params, meta)
    n, win = track.n_frames, fe.segment_frames
    starts = [int(s) for s in segment_starts(n, fe, params)]
    counts = [min(win, n - s) for s in starts]
    if fe.name == "db" or sum(counts) >= n / 2:
        parts, loudest = _frames_by_blocks(track, starts, counts)
    else:
        parts = [track.frames(s, c) for s, c in zip(starts, counts)]
    if track.peak < audio.SILENCE_PEAK:
        raise audio.AudioError(path, "silent (no sample above -100 dBFS)")
    if fe.name == "db":
        parts = [_to_db(p, loudest, params) for p in parts]
    return np.stack([fit_frames(np.asarray(p), win) for p in parts]).astype(np.float32, copy=False)
