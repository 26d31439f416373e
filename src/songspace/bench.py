"""Benchmarks of songspace's hot paths against the obvious alternative, timed in the same run.

Each benchmark is a pure function returning a list of *items* (JSON-able dicts). An item
compares two sides, `ours` and `alt`, each timed `repeats` times (round-robin, so both sides
see the same background load) after a warm-up run:

    {"item": "extract.1core.clip.ogg", "group": "extraction", "title": "...",
     "ours": {"label": ..., "median_s": ..., "runs_s": [...]},
     "alt":  {"label": ..., "median_s": ..., "runs_s": [...]},
     "ratio": alt median / ours median   (> 1: ours is faster),
     "goal": "text" or None, "goal_value": the measured number the goal is about,
     "goal_met": True | False | None (no goal), "extra": {...}}

Every median is a time in seconds (lower is better), so `ratio` is always a speed-up of `ours`
over `alt`; rates (times real time, segments per second) are in `extra` and in each side's
`rate`. Absolute times on shared machines are noisy; the ratios are the figures to quote.

| group | ours | alt | goal |
|---|---|---|---|
| extraction, 1 core | `features.track_segments` (sections only) | `librosa.load` + `melspectrogram` | clips >= 300x real time; songs >= 3x librosa |
| extraction, 2 cores | `features.extract_library(workers=2)` | librosa in a 2-process pool | >= 1.8x our one-core rate |
| sections vs whole | `track_segments` | songspace decoding the whole file | none (checks `WHOLE_FILE_SHARE`) |
| grid | `evaluate.bench_grid` vectorised | its per-quartet scipy loop | >= 50x |
| training | each model's step | model3's step (the default) | none |
| training, AMP | step under fp16 autocast (CUDA) | the same model in fp32 | none |
| queries | faiss exact / HNSW | numpy brute force | none |
| musicnn, 1 core | `musicnn.logmel` + pretrained forward pass | librosa's log-mel (as the original) + the same forward | none |

The 2-core items list each file several times (up to `parallel_files` decodes), so that pool
start-up and `extract_library`'s chunks of 4 tracks do not dominate a handful of files.

`read_stage_times` reads per-stage wall times of `dvc repro` from a file (DVC itself does not
record them). `run` runs the chosen benchmarks; `format_table` and `markdown_table` print it.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from songspace import audio, features
from songspace.config import FeatureParams, ModelParams, Params

ITEMS = ("extraction", "grid", "training", "musicnn", "queries", "pipeline")

# Goals (what the project promises; an item records whether this run met them).
CLIP_REALTIME_GOAL = 300.0      # x real time on one core for 30 s clips, decoding included
SONG_SPEEDUP_GOAL = 3.0         # full-length songs: x faster than librosa's whole-file path
TWO_CORE_SCALING_GOAL = 1.8     # extract_library(workers=2) rate / one-core rate
GRID_SPEEDUP_GOAL = 50.0        # vectorised grid vs per-quartet scipy loop
REFERENCE_MODEL = "model3"      # training throughput is compared with the default model

TEST_AUDIO_RATE = 44_100        # Hz, the rate of most music files
WRITE_BLOCK_FRAMES = 1 << 16


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does. `FULL` is `make bench`; `QUICK` is `--quick`."""

    n_clips: int = 16
    clip_seconds: float = 30.0
    n_songs: int = 4
    song_seconds: float = 240.0
    formats: tuple[str, ...] = ("wav", "ogg", "mp3")
    workers: int = 2
    parallel_files: int = 64      # decodes per multi-process run (files repeated as needed)
    n_quartets: int = 10_000
    bootstrap: int = 1000
    loop_quartets: int = 300
    train_models: tuple[str, ...] | None = None   # None: every model in params.yaml
    train_batch: int = 32
    train_steps: int = 5
    n_synthetic: int = 1_000_000
    n_queries: int = 200
    brute_timed: int = 50
    query_threads: int | None = None  # faiss OpenMP and numpy BLAS threads; None: all cores
    musicnn_seconds: float = 30.0     # audio per musicnn embedding run (10 windows of 3 s)


FULL = Sizes()
QUICK = Sizes(n_clips=4, n_songs=1, song_seconds=180.0, formats=("wav", "ogg"), parallel_files=16,
              n_quartets=1000, loop_quartets=100, train_models=(REFERENCE_MODEL, "model1"),
              train_steps=2, n_synthetic=10_000, n_queries=50, brute_timed=20, musicnn_seconds=9.0)


# ---------------------------------------------------------------- timing and items


def _median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


def paired_runs(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each function over `repeats` rounds; in each round every function runs once.

    Round-robin rather than one side after the other, so that a burst of background load
    hits both sides alike. `warmup` untimed rounds first (imports, caches, JIT, allocators).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
    return runs


def side(label: str, runs_s: list[float], rate_per_s: float | None = None, rate_unit: str | None = None) -> dict:
    """One side of an item: its label, median and runs (s); `rate` = rate_per_s / median."""
    med = _median(runs_s)
    out = {"label": label, "median_s": med, "runs_s": [float(r) for r in runs_s]}
    if rate_per_s is not None:
        out["rate"] = rate_per_s / med if med > 0 else float("inf")
        out["rate_unit"] = rate_unit
    return out


def item(key: str, group: str, title: str, ours: dict, alt: dict, goal: str | None = None,
         goal_value: float | None = None, goal_met: bool | None = None, **extra) -> dict:
    """An item comparing `ours` with `alt` (dicts from `side`); ratio = alt / ours median time."""
    ratio = alt["median_s"] / ours["median_s"] if ours["median_s"] > 0 else float("inf")
    return {"item": key, "group": group, "title": title, "ours": ours, "alt": alt, "ratio": ratio,
            "goal": goal, "goal_value": goal_value,
            "goal_met": None if goal_met is None else bool(goal_met), "extra": extra}


@contextlib.contextmanager
def single_thread():
    """One core: torch intra-op threads and BLAS/OpenMP pools set to 1, restored on exit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- machine


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception:  # noqa: BLE001 - a missing optional package is reported as null
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """The machine and software a benchmark ran on (JSON-able).

    cores: logical CPUs; usable_cores: those this process may run on (affinity / containers);
    load_average: 1, 5 and 15 minute load when the run started (other work skews timings).
    """
    import soundfile as sf

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "gpu": gpu,
        "load_average": load,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "torch": torch.__version__,
            "torchaudio": _version("torchaudio"),
            "numpy": np.__version__,
            "scipy": _version("scipy"),
            "faiss": _version("faiss"),
            "librosa": _version("librosa"),
            "soundfile": sf.__version__,
            "libsndfile": sf.__libsndfile_version__,
        },
        "git_commit": _git_commit(),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------- test audio


def _midi_hz(note: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(note, dtype=np.float64) - 69.0) / 12.0)


def synth_music(seconds: float, rate: int, rng: np.random.Generator, channels: int = 2) -> np.ndarray:
    """Synthetic music `(samples, channels)` float32, peak 0.8: a melody and a bass line of
    harmonic tones with attack/decay envelopes, a noise hi-hat on every beat, and a noise floor.

    Not meant to sound good: meant to give decoders and codecs (vorbis, mp3) realistic work,
    with pitched partials, transients and noise, at a random tempo and key.
    """
    n = int(round(seconds * rate))
    out = np.zeros((channels, n), dtype=np.float32)
    beat = 60.0 / rng.uniform(80, 160)
    scale = rng.integers(0, 12) + np.array([0, 2, 4, 5, 7, 9, 11])
    pans = np.linspace(0.25, 0.75, channels) if channels > 1 else np.array([0.5])

    def voice(octave: int, beats: tuple[float, ...], harmonics: int, decay_s: float, gain: float, pan: float):
        t = 0.0
        while t < seconds:
            dur = beat * float(rng.choice(beats))
            start = int(t * rate)
            length = min(int(dur * rate), n - start)
            if length <= 0:
                break
            note = 12 * octave + scale[rng.integers(len(scale))]
            tt = np.arange(length, dtype=np.float32) / rate
            env = (1 - np.exp(-tt / 0.005)) * np.exp(-tt / decay_s)
            h = np.arange(1, harmonics + 1, dtype=np.float32)[:, None]
            tone = (np.sin(2 * np.pi * _midi_hz(note) * h * tt + rng.uniform(0, 2 * np.pi, (harmonics, 1)))
                    / h).sum(axis=0)
            sig = (gain * env * tone).astype(np.float32)
            gains = 1.0 - np.abs(np.linspace(0, 1, channels) - pan) if channels > 1 else np.ones(1)
            out[:, start:start + length] += gains[:, None].astype(np.float32) * sig
            t += dur

    voice(5, (0.5, 1.0, 1.0, 2.0), 6, 0.4, 0.5, float(pans[-1]))
    voice(3, (2.0, 4.0), 4, 1.0, 0.6, float(pans[0]))
    hat = int(0.05 * rate)
    burst = (np.exp(-np.arange(hat) / (0.01 * rate)) * 0.15).astype(np.float32)
    for start in np.arange(0, n - hat, int(beat * rate)):
        out[:, start:start + hat] += burst * rng.standard_normal(hat).astype(np.float32)
    out += 0.003 * rng.standard_normal(out.shape).astype(np.float32)
    out *= 0.8 / max(float(np.abs(out).max()), 1e-9)
    return out.T.copy()


_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
            "mp3": ("MP3", "MPEG_LAYER_III")}


def write_test_audio(out_dir: str | Path, n_clips: int, clip_seconds: float, n_songs: int,
                     song_seconds: float, formats: tuple[str, ...] = ("wav", "ogg", "mp3"),
                     rate: int = TEST_AUDIO_RATE, channels: int = 2, seed: int = 0,
                     progress: bool = True) -> pd.DataFrame:
    """Write `n_clips` clips and `n_songs` songs of `synth_music`, each piece in every format.

    Returns a track table: track_id, path, kind ("clip" | "song"), format, duration_s (from
    the file's header, as ingest would record it). The same music is written in each format.
    """
    from tqdm import tqdm

    unknown = [f for f in formats if f not in _FORMATS]
    if unknown:
        raise ValueError(f"unknown test audio format(s) {unknown}; choose from {', '.join(_FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    import soundfile as sf

    pieces = [("clip", i, clip_seconds) for i in range(n_clips)] + [("song", i, song_seconds) for i in range(n_songs)]
    rows = []
    for kind, i, seconds in tqdm(pieces, desc="test audio", unit="piece", disable=not progress):
        wave = synth_music(seconds, rate, rng, channels)
        for fmt in formats:
            path = out / f"{kind}{i:03d}.{fmt}"
            major, subtype = _FORMATS[fmt]
            # In blocks: libvorbis allocates the whole call's buffer on the stack, so one
            # call of more than about 90 s of 44.1 kHz stereo crashes the process.
            with sf.SoundFile(str(path), "w", rate, channels, subtype, format=major) as f:
                for start in range(0, len(wave), WRITE_BLOCK_FRAMES):
                    f.write(wave[start:start + WRITE_BLOCK_FRAMES])
            rows.append({"track_id": f"{kind}{i:03d}-{fmt}", "path": str(path), "kind": kind,
                         "format": fmt, "duration_s": audio.info(path).duration_s})
    return pd.DataFrame(rows, columns=["track_id", "path", "kind", "format", "duration_s"])


# ---------------------------------------------------------------- extraction


def librosa_segments(path: str | Path, params: FeatureParams) -> np.ndarray:
    """The librosa way: `librosa.load(sr=...)` of the whole file, then log-mel of the same
    segments songspace takes: `(segments_per_track, n_mels, frames)` float32.

    The mel spectrogram is computed on the segments only (not the whole file), which favours
    librosa: the comparison is about decoding, resampling and the transform, not extra frames.
    """
    import librosa

    y, sr = librosa.load(str(path), sr=params.sample_rate, mono=True)
    starts = np.round(features.segment_offsets(len(y) / sr, params) * sr).astype(int)
    waves = np.stack([features.fit_length(y[s:], params.segment_samples) for s in starts])
    mel = librosa.feature.melspectrogram(y=waves, sr=sr, n_fft=params.n_fft, hop_length=params.hop_length,
                                         n_mels=params.n_mels, fmin=params.f_min, fmax=params.f_max, power=2.0,
                                         htk=True, norm=None)  # torchaudio's mel scale
    return librosa.power_to_db(mel, top_db=features.TOP_DB).astype(np.float32)


def whole_file_segments(path: str | Path, params: FeatureParams) -> np.ndarray:
    """songspace's decoding of the whole file (its branch for short files), then the same log-mel
    segments as `features.track_segments`: `(segments_per_track, n_mels, frames)` float32."""
    wave = audio.load(path, params.sample_rate)
    starts = np.round(features.segment_offsets(len(wave) / params.sample_rate, params)
                      * params.sample_rate).astype(int)
    waves = np.stack([features.fit_length(wave[s:], params.segment_samples) for s in starts])
    return features.logmel(waves, params).numpy()


def _librosa_job(job: tuple[str, FeatureParams]) -> tuple[int, ...]:
    path, params = job
    return librosa_segments(path, params).shape


def _one_thread_worker() -> None:
    torch.set_num_threads(1)
    threadpool_limits(limits=1)  # not as a context: the limit stays for the worker's life


def librosa_pool(paths: list[str], params: FeatureParams, workers: int) -> list[tuple[int, ...]]:
    """`librosa_segments` of every path in a pool of `workers` one-thread processes (created here,
    as `extract_library` creates its own), with the same chunking as `extract_library`."""
    with ProcessPoolExecutor(workers, initializer=_one_thread_worker) as pool:
        return list(pool.map(_librosa_job, [(p, params) for p in paths], chunksize=4))


def bench_extraction(files: pd.DataFrame, params: FeatureParams, repeats: int = 3, workers: int = 2,
                     parallel_files: int = 64, warmup: int = 1, progress: bool = True) -> list[dict]:
    """Decoding + log-mel of `files` (a `write_test_audio` table), per (kind, format) group.

    Three items per group, all timing the whole group of files:
    - `extract.1core.<kind>.<fmt>`: `features.track_segments` vs `librosa_segments`, one process,
      one thread each. Rates in times real time (total track seconds / wall seconds). Goal:
      clips >= CLIP_REALTIME_GOAL x real time; songs >= SONG_SPEEDUP_GOAL x librosa.
    - `extract.sections.<kind>.<fmt>`: `track_segments` vs `whole_file_segments` (one thread).
    - `extract.<workers>cores.<kind>.<fmt>`: `features.extract_library(workers)` vs `librosa_pool`
      over at least `parallel_files` decodes (the group's files repeated); goal: our rate >=
      TWO_CORE_SCALING_GOAL x our one-core rate (only with `workers` >= 2 usable cores).
    """
    from tqdm import tqdm

    items = []
    groups = list(files.groupby(["kind", "format"], sort=False))
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    for (kind, fmt), g in tqdm(groups, desc="extraction", unit="group", disable=not progress):
        paths = g["path"].astype(str).tolist()
        durations = g["duration_s"].astype(float).tolist()
        audio_s = float(sum(durations))
        name = (f"{len(g)} {kind}{'s' if len(g) > 1 else ''} of {np.mean(durations):.0f} s "
                f"({fmt}, {TEST_AUDIO_RATE / 1000:g} kHz stereo)")
        rt = dict(rate_per_s=audio_s, rate_unit="x real time")

        def ours():
            return [features.track_segments(p, params, d) for p, d in zip(paths, durations)]

        def alt():
            return [librosa_segments(p, params) for p in paths]

        def whole():
            return [whole_file_segments(p, params) for p in paths]

        with single_thread():
            runs = paired_runs({"ours": ours, "alt": alt, "whole": whole}, repeats, warmup)
        one = side("songspace track_segments (sections)", runs["ours"], **rt)
        lib = side("librosa.load + melspectrogram", runs["alt"], **rt)
        one_core = item(f"extract.1core.{kind}.{fmt}", "extraction", f"{name}, one core", one, lib,
                        files=len(g), audio_s=audio_s, format=fmt, kind=kind)
        if kind == "clip":
            one_core.update(goal=f">= {CLIP_REALTIME_GOAL:g}x real time on one core",
                            goal_value=one["rate"], goal_met=one["rate"] >= CLIP_REALTIME_GOAL)
        else:
            one_core.update(goal=f">= {SONG_SPEEDUP_GOAL:g}x librosa's whole-file path",
                            goal_value=one_core["ratio"], goal_met=one_core["ratio"] >= SONG_SPEEDUP_GOAL)
        items.append(one_core)
        items.append(item(f"extract.sections.{kind}.{fmt}", "extraction",
                          f"{name}: sections vs whole file, one core", one,
                          side("songspace, whole file decoded", runs["whole"], **rt),
                          files=len(g), audio_s=audio_s, format=fmt, kind=kind,
                          whole_file_share=features.WHOLE_FILE_SHARE))

        # The group's files, listed again as often as needed to reach `parallel_files` decodes:
        # enough work that pool start-up does not dominate, and enough chunks (extract_library
        # hands out 4 tracks at a time) that every worker gets a share.
        reps = max(1, -(-parallel_files // len(g)))
        table = pd.concat([g[["track_id", "path", "duration_s"]].assign(
            track_id=lambda t, r=r: t["track_id"] + f"#{r}") for r in range(reps)], ignore_index=True)
        many_paths = table["path"].tolist()
        many_rt = dict(rate_per_s=audio_s * reps, rate_unit="x real time")
        runs = paired_runs({
            "ours": lambda: features.extract_library(table, params, workers=workers, progress=False),
            "alt": lambda: librosa_pool(many_paths, params, workers),
        }, repeats, warmup)
        many = side(f"songspace extract_library(workers={workers})", runs["ours"], **many_rt)
        scaling = many["rate"] / one["rate"]
        it = item(f"extract.{workers}cores.{kind}.{fmt}", "extraction",
                  f"{name}, each decoded {reps}x, {workers} processes",
                  many, side(f"librosa, {workers}-process pool", runs["alt"], **many_rt),
                  files=len(table), distinct_files=len(g), audio_s=audio_s * reps, format=fmt, kind=kind,
                  workers=workers, usable_cores=usable, scaling_vs_one_core=scaling)
        if workers >= 2 and usable >= workers:
            it.update(goal=f">= {TWO_CORE_SCALING_GOAL:g}x the one-core rate", goal_value=scaling,
                      goal_met=scaling >= TWO_CORE_SCALING_GOAL)
        items.append(it)
    return items


# ---------------------------------------------------------------- evaluation grid


def bench_grid(n_quartets: int = 10_000, bootstrap: int = 1000, repeats: int = 3, n_tracks: int = 500,
               dim: int = 128, loop_quartets: int = 300, seed: int = 0) -> list[dict]:
    """The 27-cell grid with bootstrap (`evaluate.bench_grid`, run `repeats` times) vs its
    per-quartet scipy loop. The loop is timed on `loop_quartets` quartets and 3 cells of
    bootstrap and extrapolated linearly (as `evaluate.bench_grid` does). Goal >= GRID_SPEEDUP_GOAL."""
    from songspace import evaluate

    runs = [evaluate.bench_grid(n_quartets=n_quartets, n_tracks=n_tracks, dim=dim, seed=seed,
                                bootstrap=bootstrap, loop_quartets=loop_quartets, repeats=1)
            for _ in range(max(1, repeats))]
    ours = side("vectorised grid (cell_scores + bootstrap)", [r["vectorised_s"] for r in runs])
    alt = side("per-quartet scipy loop (extrapolated)", [r["loop_s"] for r in runs])
    it = item("grid", "grid", f"evaluation grid: 27 cells, {n_quartets:,} quartets, {bootstrap} bootstrap",
              ours, alt, goal=f">= {GRID_SPEEDUP_GOAL:g}x", n_quartets=n_quartets, n_tracks=n_tracks,
              dim=dim, bootstrap=bootstrap, loop_quartets_timed=runs[0]["loop_quartets_timed"],
              agree=all(r["agree"] for r in runs),
              **{f"median_{k}": _median(r[k] for r in runs) for k in
                 ("vectorised_scores_s", "vectorised_bootstrap_s", "loop_scores_s", "loop_bootstrap_s")},
              speedup_cpu_time=_median(r["speedup_cpu"] for r in runs))
    it.update(goal_value=it["ratio"], goal_met=it["ratio"] >= GRID_SPEEDUP_GOAL)
    return [it]


# ---------------------------------------------------------------- training


def train_step_times(model_params: ModelParams, n_mels: int, frames: int, batch: int = 32, steps: int = 5,
                     repeats: int = 3, loss: str = "triplet", device: str | torch.device = "cpu",
                     amp: bool = False, seed: int = 0, warmup_steps: int = 2) -> list[float]:
    """Seconds per training step (forward + backward + Adam) of a fresh model, one value per run.

    Input: `(batch, 1, n_mels, frames)` Gaussian noise. Loss: the project's (`losses.build`):
    triplet on the first 3 * (batch // 3) embeddings laid out as [anchors; positives;
    negatives], contrastive on the two halves. `amp`: fp16 autocast with a GradScaler, as
    `train.fit` does on CUDA (ignored elsewhere). Each run times `steps` steps; CUDA is
    synchronised before the clock is read.
    """
    from songspace import losses, models

    device = torch.device(device)
    use_amp = amp and device.type == "cuda"
    n_mels, frames = models.input_shape(model_params, n_mels, frames)
    net = models.build(model_params, n_mels, frames, seed=seed).to(device).train()
    loss_fn = losses.build(loss).to(device)
    opt = torch.optim.Adam(models.param_groups(net, lr=1e-4))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, n_mels, frames, generator=gen).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            emb = net(x)
        emb = emb.float()
        if loss == "triplet":
            value = loss_fn(emb[: 3 * (batch // 3)])
        else:
            half = batch // 2
            value = loss_fn(emb[:half], emb[half: 2 * half])
        opt.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup_steps):
        step()
    sync()
    runs = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        runs.append((time.perf_counter() - t0) / steps)
    del net, opt
    return runs


def bench_training(models: dict[str, ModelParams], n_mels: int, frames: int, names: Iterable[str] | None = None,
                   batch: int = 32, steps: int = 5, repeats: int = 3, loss: str = "triplet",
                   reference: str = REFERENCE_MODEL, threads: int | None = None, seed: int = 0,
                   cuda: bool | None = None, progress: bool = True) -> list[dict]:
    """Training throughput (segments per second) of each model vs `reference` (model3).

    CPU always (`threads` torch threads; None: torch's default); on CUDA when available (or
    `cuda=True`), in fp32 (`train.cuda.<name>`, vs the reference in fp32) and with fp16 autocast
    (`train.cuda_amp.<name>`, vs the same model in fp32). Items: `train.cpu.<name>` etc.
    """
    from tqdm import tqdm

    names = list(names) if names is not None else list(models)
    unknown = [n for n in [*names, reference] if n not in models]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; params.yaml `models:` has {', '.join(models)}")
    if reference not in names:
        names = [reference, *names]
    cuda = torch.cuda.is_available() if cuda is None else cuda
    configs = [("cpu", False)] + ([("cuda", False), ("cuda", True)] if cuda else [])
    per_s = dict(rate_per_s=float(batch), rate_unit="segments/s")
    items = []
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        times: dict[tuple[str, bool, str], list[float]] = {}
        jobs = [(dev, amp, n) for dev, amp in configs for n in names]
        for dev, amp, n in tqdm(jobs, desc="training", unit="model", disable=not progress):
            times[dev, amp, n] = train_step_times(models[n], n_mels, frames, batch, steps, repeats, loss,
                                                  dev, amp, seed)
        for dev, amp in configs:
            tag = {("cpu", False): "cpu", ("cuda", False): "cuda", ("cuda", True): "cuda_amp"}[dev, amp]
            n_threads = torch.get_num_threads()
            where = (f"CPU, {n_threads} thread{'s' if n_threads > 1 else ''}" if dev == "cpu"
                     else torch.cuda.get_device_name(0))
            for n in names:
                ours = side(f"{n}{' fp16 autocast' if amp else ''}", times[dev, amp, n], **per_s)
                if amp:
                    alt = side(f"{n} fp32", times[dev, False, n], **per_s)
                    ref = times[dev, True, reference]
                    extra = {"vs_reference_amp": _median(ref) / ours["median_s"]}
                else:
                    alt = side(f"{reference}{' (reference)' if n == reference else ''}",
                               times[dev, False, reference], **per_s)
                    extra = {}
                items.append(item(f"train.{tag}.{n}", "training",
                                  f"training step {n}, batch {batch} x {n_mels}x{frames}, {where}"
                                  + (", fp16 vs fp32" if amp else f", vs {reference}"),
                                  ours, alt, model=n, device=dev, amp=amp, batch=batch, loss=loss,
                                  threads=torch.get_num_threads() if dev == "cpu" else None, **extra))
    finally:
        torch.set_num_threads(before)
    return items


def bench_musicnn(seconds: float = 30.0, repeats: int = 3, checkpoint: str = "MTT_musicnn",
                  seed: int = 0) -> list[dict]:
    """Pretrained musicnn's embedding of `seconds` of 16 kHz audio on one core, in x real time:
    front end (`musicnn.logmel`) + forward pass to the penultimate layer over consecutive
    3 s windows, against librosa's log-mel (the original's front end) + the same forward pass.
    `extra.frontend_share`: the share of our time spent in the front end."""
    import librosa

    from songspace.models import musicnn

    rate, hop, win = musicnn.SAMPLE_RATE, musicnn.HOP_LENGTH, musicnn.WINDOW_FRAMES
    wave = synth_music(seconds, rate, np.random.default_rng(seed), channels=1)[:, 0]
    net = musicnn.load_pretrained(checkpoint)

    def windows(mel: torch.Tensor) -> torch.Tensor:   # (96, frames) -> (n, 1, 96, 187)
        n = mel.shape[-1] // win
        return mel[:, : n * win].reshape(musicnn.N_MELS, n, win).permute(1, 0, 2)[:, None]

    def ours_frontend() -> torch.Tensor:
        return windows(musicnn.logmel(wave))

    def librosa_frontend() -> torch.Tensor:
        power = librosa.feature.melspectrogram(y=wave, sr=rate, n_fft=musicnn.N_FFT, hop_length=hop,
                                               n_mels=musicnn.N_MELS, pad_mode="reflect")
        mel = np.log10(musicnn.LOG_GAIN * power.astype(np.float16).astype(np.float32) + 1)
        return windows(torch.from_numpy(mel))

    def embed(frontend: Callable[[], torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return net.penultimate(frontend()).mean(dim=0)
        return run

    with single_thread():
        runs = paired_runs({"ours": embed(ours_frontend), "alt": embed(librosa_frontend),
                            "frontend": ours_frontend}, repeats)
    per_s = dict(rate_per_s=seconds, rate_unit="x real time")
    ours = side(f"musicnn.logmel + {checkpoint}", runs["ours"], **per_s)
    alt = side(f"librosa log-mel + {checkpoint}", runs["alt"], **per_s)
    return [item("embed.1core.musicnn", "musicnn",
                 f"pretrained musicnn embedding of {seconds:g} s of 16 kHz audio (front end + forward pass), "
                 "one core", ours, alt, seconds=seconds, checkpoint=checkpoint,
                 frontend_share=_median(runs["frontend"]) / ours["median_s"])]


# ---------------------------------------------------------------- similar-song queries


def base_embeddings(index_dir: str | Path = "data/index", features_dir: str | Path = "data/features",
                    model_path: str | Path = "data/models/best.pt", params: Params | None = None,
                    seed: int = 0) -> tuple[np.ndarray, str]:
    """The library's track embeddings for the query benchmark, and a line saying where they came from.

    In order of preference: the song index's embeddings (scaled with its own fitted scaler, as
    searched); the features' segments embedded with the trained checkpoint (track means, not
    scaled); the features embedded with a freshly initialised `params.model` (seeded); and, with
    no pipeline outputs at all, 240 Gaussian vectors of 128 dimensions.
    """
    from songspace import embed, index

    index_dir, features_dir, model_path = Path(index_dir), Path(features_dir), Path(model_path)
    if (index_dir / index.FILES["meta"]).exists():
        try:
            built = index.SongIndex.load(index_dir)
            scaled = built.scaler.transform(np.asarray(built.embeddings, dtype=np.float64))
            return (np.asarray(scaled, dtype=np.float32),
                    f"{index_dir}/embeddings.npy ({len(scaled)} tracks, scaled with the index's {built.scaler_name})")
        except index.LibraryError:
            pass
    if (features_dir / "segments.npy").exists():
        segments, seg_index = features.load(features_dir)
        ids = list(dict.fromkeys(seg_index["track_id"].astype(str)))
        if model_path.exists():
            model, _ = embed.load_checkpoint(model_path)
            what = f"{features_dir} embedded with {model_path}"
        else:
            from songspace import models

            from songspace import config

            params = params or config.load()
            fp = params.features
            model = embed.Embedder(models.build(params.model_params, fp.n_mels, fp.frames, seed=seed))
            what = f"{features_dir} embedded with an untrained {params.model} (seed {seed})"
        emb = embed.embed_tracks(model, segments, seg_index, ids)
        return emb, f"{what} ({len(emb)} tracks, raw)"
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((240, 128)).astype(np.float32),
            "240 Gaussian vectors of 128 dims (no pipeline outputs found)")


def bench_queries(base: np.ndarray, source: str, n_synthetic: int = 1_000_000, n_queries: int = 200,
                  brute_timed: int = 50, seed: int = 0, threads: int | None = None,
                  progress: bool = True) -> list[dict]:
    """Single-query latency of faiss exact and HNSW vs numpy brute force (`index.bench_queries`),
    at the library's size and at `n_synthetic` vectors around it.

    Medians are over single queries (brute force: the first `brute_timed`; HNSW: `n_queries`),
    not over repeats: one run builds the HNSW index once (minutes at a million vectors).
    """
    from songspace import index

    # `threads` limits numpy's BLAS as well as faiss's OpenMP, so both sides get the same cores.
    with threadpool_limits(limits=threads, user_api="blas") if threads else contextlib.nullcontext():
        res = index.bench_queries(base, n_synthetic=n_synthetic, n_queries=n_queries, seed=seed,
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


# ---------------------------------------------------------------- pipeline stage times


TOTAL_NAMES = ("total", "repro", "dvc_repro")
_TIME = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)$")


def _seconds(text: str) -> float | None:
    """'12.3' -> 12.3; '1:02.5' (m:ss) -> 62.5; '1:00:00' (h:mm:ss) -> 3600; else None."""
    m = _TIME.match(text)
    if not m:
        return None
    a, b, s = m.groups()
    if b is not None:
        return int(a) * 3600 + int(b) * 60 + float(s)
    if a is not None:
        return int(a) * 60 + float(s)
    return float(s)


def read_stage_times(path: str | Path, dvc_yaml: str | Path | None = "dvc.yaml") -> dict:
    """Wall time per `dvc repro` stage from a file of lines `stage seconds` (DVC records none).

    Seconds may be `12.3` or `m:ss.ss` / `h:mm:ss` (/usr/bin/time's %e or %E). A stage that
    appears several times gets the median. A line named `total` (or `repro`) is the whole
    `dvc repro`; the time it spends outside the stage lines (DVC hashing, checking, caching
    outputs) is reported as `outside_stages_s`. Blank lines, `#` comments and lines that are not
    `name seconds` (e.g. /usr/bin/time's "Command exited with non-zero status 1") are skipped and
    counted. With `dvc_yaml`, stages it defines that the file lacks are listed in `missing`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such stage-times file (lines `stage seconds`)")
    runs: dict[str, list[float]] = {}
    skipped = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        secs = _seconds(parts[-1]) if len(parts) == 2 else None
        if secs is None:
            skipped.append(no)
            continue
        runs.setdefault(parts[0], []).append(secs)
    if not runs:
        raise ValueError(f"{path}: no `stage seconds` lines found")
    total_runs = [s for name in TOTAL_NAMES for s in runs.pop(name, [])]
    stages = [{"stage": s, "median_s": _median(r), "runs_s": r} for s, r in runs.items()]
    stage_sum = float(sum(s["median_s"] for s in stages))
    for s in stages:
        s["share"] = s["median_s"] / stage_sum if stage_sum > 0 else None
    total = _median(total_runs) if total_runs else None
    out = {"source": str(path), "stages": stages, "stages_sum_s": stage_sum, "total_s": total,
           "outside_stages_s": (total - stage_sum) if total is not None else None,
           "skipped_lines": skipped}
    if dvc_yaml is not None and Path(dvc_yaml).exists():
        import yaml

        defined = list((yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages", {}))
        out["missing"] = [s for s in defined if s not in runs]
        out["unknown"] = [s for s in runs if s not in defined]
    return out


# ---------------------------------------------------------------- the whole run


def run(items: Iterable[str], sizes: Sizes, params: Params, repeats: int = 3, stage_times: str | Path | None = None,
        audio_dir: str | Path | None = None, root: str | Path = ".", seed: int = 0,
        progress: bool = True) -> dict:
    """Run the chosen benchmarks (`ITEMS`) at `sizes`: `{"machine", "settings", "items", "pipeline"}`.

    audio_dir: where the test audio goes (kept); None: a temporary folder, removed afterwards.
    root: the project folder (data/index, data/features, dvc.yaml are looked up under it).
    """
    items = list(items)
    bad = [i for i in items if i not in ITEMS]
    if bad:
        raise ValueError(f"unknown benchmark(s) {bad}; choose from {', '.join(ITEMS)}")
    root = Path(root)
    result: dict = {"machine": machine_info(),
                    "settings": {"repeats": repeats, "sizes": asdict(sizes), "items": items, "seed": seed,
                                 "features": asdict(params.features)},
                    "items": [], "pipeline": None}
    fp = params.features
    if "extraction" in items:
        with contextlib.ExitStack() as stack:
            folder = audio_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="songspace-bench-"))
            files = write_test_audio(folder, sizes.n_clips, sizes.clip_seconds, sizes.n_songs, sizes.song_seconds,
                                     sizes.formats, seed=seed, progress=progress)
            result["items"] += bench_extraction(files, fp, repeats, sizes.workers, sizes.parallel_files,
                                                progress=progress)
    if "grid" in items:
        result["items"] += bench_grid(sizes.n_quartets, sizes.bootstrap, repeats,
                                      loop_quartets=sizes.loop_quartets, seed=seed)
    if "training" in items:
        result["items"] += bench_training(params.models, fp.n_mels, fp.frames, sizes.train_models,
                                          sizes.train_batch, sizes.train_steps, repeats, params.loss,
                                          seed=seed, progress=progress)
    if "musicnn" in items:
        result["items"] += bench_musicnn(sizes.musicnn_seconds, repeats, seed=seed)
    if "queries" in items:
        base, source = base_embeddings(root / "data/index", root / "data/features",
                                       root / "data/models/best.pt", params, seed)
        result["settings"]["query_base"] = source
        result["items"] += bench_queries(base, source, sizes.n_synthetic, sizes.n_queries, sizes.brute_timed,
                                         seed=seed, threads=sizes.query_threads, progress=progress)
    try:
        result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if "pipeline" in items:
        if stage_times is not None:
            result["pipeline"] = read_stage_times(stage_times, root / "dvc.yaml")
        else:
            result["settings"]["pipeline"] = "not timed: no stage-times file given"
    return result


# ---------------------------------------------------------------- printing


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def _fmt_side(sd: dict) -> str:
    text = _fmt_time(sd["median_s"])
    if sd.get("rate") is not None:
        unit = sd.get("rate_unit") or ""
        rate = sd["rate"]
        text += f" ({rate:,.0f} {unit})" if rate >= 100 else f" ({rate:,.1f} {unit})"
    return text


def _fmt_goal(it: dict) -> str:
    if it["goal"] is None:
        return ""
    v = it["goal_value"]
    return f"{it['goal']}: {v:,.2f} {'met' if it['goal_met'] else 'MISSED'}"


def rows(result: dict) -> list[list[str]]:
    """Table rows: item, ours, alt, ratio, goal."""
    out = []
    for it in result["items"]:
        out.append([it["item"], f"{it['ours']['label']}: {_fmt_side(it['ours'])}",
                    f"{it['alt']['label']}: {_fmt_side(it['alt'])}", f"{it['ratio']:.2f}x", _fmt_goal(it)])
    return out


def _machine_line(m: dict) -> str:
    gpu = m["gpu"] or "no GPU"
    load = "/".join(f"{x:g}" for x in m["load_average"]) if m.get("load_average") else "?"
    v = m["versions"]
    return (f"{m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable), {gpu}; load {load} at start; "
            f"torch {v['torch']}, numpy {v['numpy']}, faiss {v['faiss']}, librosa {v['librosa']}")


def _pipeline_lines(p: dict | None) -> list[str]:
    if not p:
        return []
    lines = [f"dvc repro stage wall times (from {p['source']}):"]
    for s in p["stages"]:
        share = f" {100 * s['share']:.0f}%" if s.get("share") is not None else ""
        lines.append(f"  {s['stage']:<12} {s['median_s']:9.1f} s{share}")
    lines.append(f"  {'sum':<12} {p['stages_sum_s']:9.1f} s")
    if p.get("total_s") is not None:
        lines.append(f"  {'total':<12} {p['total_s']:9.1f} s ({p['outside_stages_s']:.1f} s outside the stages)")
    if p.get("missing"):
        lines.append(f"  not timed: {', '.join(p['missing'])}")
    return lines


BUSY_LOAD_PER_CORE = 0.25


def busy_warning(machine: dict) -> list[str]:
    """A warning line when other work was running (1-minute load average above
    BUSY_LOAD_PER_CORE per usable core at the start or the end of the run)."""
    loads = [x[0] for x in (machine.get("load_average"), machine.get("load_average_end")) if x]
    cores = machine.get("usable_cores") or machine.get("cores") or 1
    if not loads or max(loads) <= BUSY_LOAD_PER_CORE * cores:
        return []
    return [f"WARNING: load average up to {max(loads):.1f} on {cores} cores: other work was running. "
            "Multi-threaded and multi-process timings (2-process extraction, training, queries) suffer most: "
            "a thread that waits for a descheduled sibling can make a 0.1 ms query take 10 ms."]


def format_table(result: dict) -> str:
    """A plain-text table of every item, the machine, pipeline times and missed goals."""
    head = ["item", "ours (median)", "alternative (median)", "ratio", "goal"]
    body = rows(result)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [_machine_line(result["machine"]), *busy_warning(result["machine"]),
           "ratio = alternative time / ours (> 1: ours is faster)", "",
           line(head), line(["-" * w for w in widths]), *map(line, body)]
    if result.get("pipeline"):
        out += ["", *_pipeline_lines(result["pipeline"])]
    elif result["settings"].get("pipeline"):
        out += ["", f"pipeline: {result['settings']['pipeline']} (--stage-times FILE, lines `stage seconds`)"]
    missed = [it for it in result["items"] if it["goal_met"] is False]
    if missed:
        out += ["", f"GOALS MISSED ({len(missed)}):"]
        out += [f"  {it['item']}: {it['goal']}, measured {it['goal_value']:,.2f}" for it in missed]
    elif any(it["goal_met"] for it in result["items"]):
        out += ["", "all goals met"]
    return "\n".join(out)


def markdown_table(result: dict, command: str = "make bench") -> str:
    """The same table in Markdown, with the machine and the command, for the README."""
    md = ["| benchmark | songspace | alternative | speed-up | goal |", "|---|---|---|---|---|"]
    for it in result["items"]:
        goal = ""
        if it["goal"] is not None:
            goal = f"{it['goal']}: {'met' if it['goal_met'] else '**missed**'} ({it['goal_value']:,.2f})"
        md.append(f"| {it['title']} | {it['ours']['label']}: {_fmt_side(it['ours'])} | "
                  f"{it['alt']['label']}: {_fmt_side(it['alt'])} | {it['ratio']:.2f}x | {goal} |")
    p = result.get("pipeline")
    if p:
        md += ["", "| stage | wall time | share |", "|---|---|---|"]
        md += [f"| {s['stage']} | {s['median_s']:.1f} s | {100 * (s['share'] or 0):.0f}% |" for s in p["stages"]]
        if p.get("total_s") is not None:
            md.append(f"| whole `dvc repro` | {p['total_s']:.1f} s | ({p['outside_stages_s']:.1f} s outside stages) |")
    md += ["", f"Measured with `{command}` (medians of {result['settings']['repeats']} runs) on "
           f"{_machine_line(result['machine'])}. Speed-up = the alternative's time / songspace's."]
    md += [f"> {w}" for w in busy_warning(result["machine"])]
    return "\n".join(md)


def ratios(result: dict) -> dict:
    """`{item: {ratio, ours_s, alt_s}}`: the flat part of a result that `dvc metrics diff` compares
    (it skips the `items` list)."""
    return {it["item"]: {"ratio": it["ratio"], "ours_s": it["ours"]["median_s"], "alt_s": it["alt"]["median_s"]}
            for it in result.get("items", [])}


def save(result: dict, path: str | Path) -> Path:
    """Write the result as JSON (atomically: a crash leaves the previous file whole), with the
    flat `ratios` summary."""
    result = {**result, "ratios": ratios(result)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    os.replace(tmp, path)
    return path
