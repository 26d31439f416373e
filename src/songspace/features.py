"""Waveform -> log-mel spectrogram segments.

A track becomes `segments_per_track` log-mel segments of `segment_seconds` each, spread evenly
over the track. Only the needed sections are decoded, so a one-hour file costs as much as a
thirty-second one. The whole library is stored as one array `(n_segments, n_mels, frames)` plus an
index table (track_id, segment, offset_s), never one file per segment.
"""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio
from tqdm import tqdm

from . import audio
from .config import AugmentParams, FeatureParams

# Decode the whole file once instead of section by section when the sections cover at least
# this share of it (seeking costs more than it saves for short clips).
WHOLE_FILE_SHARE = 0.5
TOP_DB = 80.0


@lru_cache(maxsize=8)
def _transforms(params: FeatureParams) -> torch.nn.Module:
    return torch.nn.Sequential(
        torchaudio.transforms.MelSpectrogram(
            sample_rate=params.sample_rate,
            n_fft=params.n_fft,
            hop_length=params.hop_length,
            n_mels=params.n_mels,
            f_min=params.f_min,
            f_max=params.f_max,
            power=2.0,
        ),
        torchaudio.transforms.AmplitudeToDB(stype="power", top_db=TOP_DB),
    )


def logmel(wave: np.ndarray | torch.Tensor, params: FeatureParams) -> torch.Tensor:
    """Log-mel power spectrogram in dB: `(..., samples)` -> `(..., n_mels, frames)` float32.

    `top_db` clipping is per call, so pass one segment (or a batch of equal footing) at a time.
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    with torch.no_grad():
        return _transforms(params)(x)


def fit_length(wave: np.ndarray, samples: int) -> np.ndarray:
    """Cut or zero-pad a mono signal to exactly `samples` samples."""
    if wave.shape[0] >= samples:
        return wave[:samples]
    return np.pad(wave, (0, samples - wave.shape[0]))


def segment_offsets(duration_s: float, params: FeatureParams) -> np.ndarray:
    """Start times (s) of the segments of a track: evenly spread, first at 0, last ending at the end.

    A track shorter than one segment gets `segments_per_track` offsets of 0 (zero-padded later).
    """
    span = max(0.0, duration_s - params.segment_seconds)
    if params.segments_per_track == 1:
        return np.array([span / 2.0])
    return np.linspace(0.0, span, params.segments_per_track)


def track_waves(path: str | Path, params: FeatureParams, duration_s: float | None = None,
                extra_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Decode the sections a track's segments need.

    Returns `(waves (segments_per_track, samples), offsets_s)`; `samples` is the segment length
    plus `extra_s` seconds (augmentations that shorten audio need a little more). Raises
    audio.AudioError for a file that cannot be decoded or is silent.
    """
    if duration_s is None:
        duration_s = audio.info(path).duration_s
    offsets = segment_offsets(duration_s, params)
    seconds = params.segment_seconds + extra_s
    samples = int(round(seconds * params.sample_rate))
    needed = min(duration_s, len(offsets) * seconds)
    if duration_s <= 0 or needed >= WHOLE_FILE_SHARE * duration_s:
        whole = audio.load(path, params.sample_rate)
        starts = np.round(offsets * params.sample_rate).astype(int)
        waves = np.stack([fit_length(whole[s:], samples) for s in starts])
    else:
        waves = np.stack([
            fit_length(audio.load(path, params.sample_rate, offset_s=o, duration_s=seconds), samples)
            for o in offsets
        ])
    if audio.is_silent(waves):
        raise audio.AudioError(path, "silent (no sample above -100 dBFS in the analysed sections)")
    return waves.astype(np.float32, copy=False), offsets


def track_segments(path: str | Path, params: FeatureParams,
                   duration_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel segments of one track: `(segments_per_track, n_mels, frames)` float32, offsets (s)."""
    waves, offsets = track_waves(path, params, duration_s)
    spec = logmel(waves[:, : params.segment_samples], params)
    return spec.numpy(), offsets


def _extract_one(job: tuple[str, str, float | None, FeatureParams]):
    track_id, path, duration_s, params = job
    try:
        spec, offsets = track_segments(path, params, duration_s)
        return track_id, spec[None], offsets, None
    except audio.AudioError as err:
        return track_id, None, None, err.reason


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


def _map_tracks(fn, tracks: pd.DataFrame, extra: tuple, desc: str, workers: int | None,
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


def _collect(results: list, tracks: pd.DataFrame, params: FeatureParams,
             with_views: bool) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Stack per-track `(views, segments, n_mels, frames)` results into one array + index."""
    specs, rows, skipped = [], [], []
    path_of = dict(zip(tracks["track_id"].astype(str), tracks["path"].astype(str)))
    for track_id, spec, offsets, reason in results:
        if reason is not None:
            skipped.append({"track_id": track_id, "path": path_of[track_id], "reason": reason})
            continue
        for v in range(spec.shape[0]):
            view = {"view": v} if with_views else {}
            rows += [{"track_id": track_id, **view, "segment": s, "offset_s": round(float(o), 4)}
                     for s, o in enumerate(offsets)]
        specs.append(spec.reshape(-1, *spec.shape[2:]))
    shape = (0, params.n_mels, params.frames)
    array = np.concatenate(specs).astype(np.float32) if specs else np.zeros(shape, np.float32)
    columns = ["track_id"] + (["view"] if with_views else []) + ["segment", "offset_s"]
    index = pd.DataFrame(rows, columns=columns)
    index.insert(0, "row", np.arange(len(index)))
    return array, index, pd.DataFrame(skipped, columns=["track_id", "path", "reason"])


def extract_library(tracks: pd.DataFrame, params: FeatureParams, workers: int | None = None,
                    progress: bool = True) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Log-mel segments of every track of a track table (columns track_id, path[, duration_s]).

    Returns `(segments (n_segments, n_mels, frames) float32, index, skipped)`: `index` has one row
    per segment (row, track_id, segment, offset_s), in track order; `skipped` lists tracks that
    could not be decoded (track_id, path, reason) instead of stopping the run.
    """
    results = _map_tracks(_extract_one, tracks, (params,), "log-mel", workers, progress)
    return _collect(results, tracks, params, with_views=False)


def _views_one(job):
    track_id, path, duration_s, params, aug, views, seed = job
    from . import augment  # imported here: augment builds on this module's log-mel

    try:
        # A little extra audio so that a faster time stretch still fills a segment.
        extra_s = params.segment_seconds * aug.time_stretch.max_change * aug.time_stretch.p
        waves, offsets = track_waves(path, params, duration_s, extra_s=extra_s)
    except audio.AudioError as err:
        return track_id, None, None, err.reason
    specs = []
    for view in range(views):
        # One generator per (seed, track, view): the same views whatever the worker count.
        digest = int(hashlib.sha1(track_id.encode()).hexdigest()[:15], 16)
        rng = np.random.default_rng([seed, digest, view])
        out = [fit_length(augment.augment_waveform(w, params.sample_rate, aug, rng), params.segment_samples)
               for w in waves]
        specs.append(logmel(np.stack(out), params).numpy())
    return track_id, np.stack(specs), offsets, None


def extract_views(tracks: pd.DataFrame, params: FeatureParams, aug: AugmentParams, views: int,
                  seed: int, workers: int | None = None,
                  progress: bool = True) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Waveform-augmented views of each track, as log-mel segments.

    Every track gets `views` versions of each of its segments, each through
    `augment.augment_waveform` (pitch shift, time stretch, resampling with their probabilities).
    Returns `(views (n_tracks * views * segments_per_track, n_mels, frames), index, skipped)`;
    the index has columns row, track_id, view, segment, offset_s.
    """
    if views <= 0:
        tracks = tracks.iloc[:0]
    results = _map_tracks(_views_one, tracks, (params, aug, views, seed), "augmented views", workers, progress)
    return _collect(results, tracks, params, with_views=True)


def save(out_dir: str | Path, name: str, array: np.ndarray, index: pd.DataFrame,
         params: FeatureParams) -> None:
    """Write `<name>.npy` (the segments) and `<name>.csv` (the index) under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{name}.npy", array)
    index.to_csv(out / f"{name}.csv", index=False)
    pd.Series(asdict(params)).to_json(out / f"{name}.params.json")


def load(out_dir: str | Path, name: str = "segments", mmap: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Read back what `save` wrote: `(segments, index)`; the array is memory-mapped by default."""
    out = Path(out_dir)
    array = np.load(out / f"{name}.npy", mmap_mode="r" if mmap else None)
    index = pd.read_csv(out / f"{name}.csv", dtype={"track_id": str})
    if len(index) != len(array):
        raise ValueError(f"{out}/{name}: index has {len(index)} rows but the array {len(array)}")
    return array, index


def rows_by_track(index: pd.DataFrame) -> dict[str, np.ndarray]:
    """track_id -> the array rows of its segments."""
    return {t: g["row"].to_numpy() for t, g in index.groupby("track_id", sort=False)}
