"""Extraction benchmarks: a whole track's log-mel, songspace against librosa, on generated music.

Test audio: `synth_music` (melody, bass, hi-hat, noise floor) written by `write_test_audio` as
30 s clips and 4-minute songs, 44.1 kHz stereo, in wav, ogg (vorbis) and mp3.

- one core: `features.track_spectrogram` (the `db` front end, the whole track) against
  `librosa.load` + `melspectrogram` + `power_to_db` of the whole file (`librosa_logmel`);
- two processes: `features.extract_library(workers=2)` against librosa in a 2-process pool;
- musicnn: the pretrained musicnn embedding with its front end (`musicnn.logmel`) against
  librosa's log-mel (the original's) followed by the same network.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from benchmarks.harness import item, median, paired_runs, side, single_thread
from songspace import audio, features, frontends
from songspace.config import FeatureParams

# Goals (what the project promises; an item records whether this run met them).
CLIP_REALTIME_GOAL = 300.0      # x real time on one core for 30 s clips, decoding included
SONG_SPEEDUP_GOAL = 1.0         # full-length songs: no slower than librosa (both decode the whole file)
TWO_CORE_SCALING_GOAL = 1.8     # extract_library(workers=2) rate / one-core rate

TEST_AUDIO_RATE = 44_100        # Hz, the rate of most music files
WRITE_BLOCK_FRAMES = 1 << 16


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


def librosa_logmel(path: str | Path, params: FeatureParams) -> np.ndarray:
    """The librosa way: `librosa.load(sr=...)` of the whole file, then the log-mel of the whole
    track: `(n_mels, frames)` float32, the same shape as `features.track_spectrogram`'s `db`
    front end (HTK mel scale without area normalisation, as torchaudio's; dB clipped `TOP_DB`
    below the loudest bin)."""
    import librosa

    y, sr = librosa.load(str(path), sr=params.sample_rate, mono=True)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=params.n_fft, hop_length=params.hop_length,
                                         n_mels=params.n_mels, fmin=params.f_min, fmax=params.f_max, power=2.0,
                                         htk=True, norm=None)  # torchaudio's mel scale
    return librosa.power_to_db(mel, top_db=frontends.TOP_DB).astype(np.float32)


def _librosa_job(job: tuple[str, FeatureParams]) -> tuple[int, ...]:
    path, params = job
    return librosa_logmel(path, params).shape


def _one_thread_worker() -> None:
    torch.set_num_threads(1)
    threadpool_limits(limits=1)  # not as a context: the limit stays for the worker's life


def librosa_pool(paths: list[str], params: FeatureParams, workers: int) -> list[tuple[int, ...]]:
    """`librosa_logmel` of every path in a pool of `workers` one-thread processes (created here,
    as `extract_library` creates its own), handed out in chunks as `extract_library` does."""
    chunk = max(1, min(4, -(-len(paths) // (4 * workers))))
    with ProcessPoolExecutor(workers, initializer=_one_thread_worker) as pool:
        return list(pool.map(_librosa_job, [(p, params) for p in paths], chunksize=chunk))


def bench_extraction(files: pd.DataFrame, params: FeatureParams, repeats: int = 3, workers: int = 2,
                     parallel_files: int = 64, warmup: int = 1, progress: bool = True) -> list[dict]:
    """Decoding + whole-track log-mel of `files` (a `write_test_audio` table), per (kind, format).

    Two items per group, each timing the whole group of files:
    - `extract.1core.<kind>.<fmt>`: `features.track_spectrogram` (`db` front end) vs
      `librosa_logmel`, one process, one thread each. Rates in times real time (total track
      seconds / wall seconds). Goal: clips >= CLIP_REALTIME_GOAL x real time; songs >=
      SONG_SPEEDUP_GOAL x librosa.
    - `extract.<workers>cores.<kind>.<fmt>`: `features.extract_library(workers)` vs `librosa_pool`
      over at least `parallel_files` decodes (the group's files repeated); goal: our rate >=
      TWO_CORE_SCALING_GOAL x our one-core rate (only with `workers` >= 2 usable cores).
    """
    from tqdm import tqdm

    fe = features.frontend("db", params)
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
            return [features.track_spectrogram(p, fe, params) for p in paths]

        def alt():
            return [librosa_logmel(p, params) for p in paths]

        with single_thread():
            runs = paired_runs({"ours": ours, "alt": alt}, repeats, warmup)
        one = side("songspace track_spectrogram", runs["ours"], **rt)
        lib = side("librosa.load + melspectrogram", runs["alt"], **rt)
        one_core = item(f"extract.1core.{kind}.{fmt}", "extraction", f"{name}, whole-track log-mel, one core",
                        one, lib, files=len(g), audio_s=audio_s, format=fmt, kind=kind)
        if kind == "clip":
            one_core.update(goal=f">= {CLIP_REALTIME_GOAL:g}x real time on one core",
                            goal_value=one["rate"], goal_met=one["rate"] >= CLIP_REALTIME_GOAL)
        else:
            one_core.update(goal=f">= {SONG_SPEEDUP_GOAL:g}x librosa",
                            goal_value=one_core["ratio"], goal_met=one_core["ratio"] >= SONG_SPEEDUP_GOAL)
        items.append(one_core)

        # The group's files, listed again as often as needed to reach `parallel_files` decodes:
        # enough work that pool start-up does not dominate, and enough chunks (extract_library
        # hands out up to 4 tracks at a time) that every worker gets a share.
        reps = max(1, -(-parallel_files // len(g)))
        table = pd.concat([g[["track_id", "path", "duration_s"]].assign(
            track_id=lambda t, r=r: t["track_id"] + f"#{r}") for r in range(reps)], ignore_index=True)
        many_paths = table["path"].tolist()
        many_rt = dict(rate_per_s=audio_s * reps, rate_unit="x real time")
        runs = paired_runs({
            "ours": lambda: features.extract_library(table, params, "db", workers=workers, progress=False),
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


# ---------------------------------------------------------------- musicnn


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
                 frontend_share=median(runs["frontend"]) / ours["median_s"])]

