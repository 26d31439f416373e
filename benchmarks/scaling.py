"""`make bench` scaling item: the per-song stages' cost per song as the library grows, and the
cost of adding 1% new songs to the largest library.

A base library of `songs` generated songs (`extraction.synth_music`, a different seed per file:
distinct content) is grown to 1x, 4x and 16x. On each, from an empty per-song store, the
per-song stages run as the pipeline runs them: ingest (`ingest.ingest`: scan, check, hash,
tags), features (`library_features.build`: decode, log-mels, both pretrained networks' trunks,
baselines, the stage's files) and the index's embedding (the model's head over the stored trunk
outputs, then the track means). Then 1% more songs are copied into the 16x library and the
same stages run again with the store kept.

Each run also pays a fixed start that does not depend on the library's size (worker processes,
both networks loaded, the store's digests): the same stages on a library of one song, from its
own empty store, measure it (the faster of two runs). The cost per song is given both ways: the
run's total over its songs, and what the run costs beyond that fixed start over its songs less
one. The first falls as the library grows, since the start is spread over more songs; the second
is the per-song work itself, and is what the flatness goal judges.

Goals: cost per song beyond the fixed start flat within 20% from 1x to 16x (the largest over
the smallest); adding 1% costs at most 5% of the 16x library's full run of those stages.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.extraction import synth_music
from benchmarks.harness import item, side
from songspace import audio, config, embed, ingest, library_features

RATE = 22_050   # Hz, as many music files are not at the model's 16 kHz: decoding resamples


def _write_songs(folder: Path, start: int, count: int, seconds: float) -> None:
    for i in range(start, start + count):
        label = f"style{i % 4}"
        wave = synth_music(seconds, RATE, np.random.default_rng(1000 + i), channels=2)
        (folder / label).mkdir(parents=True, exist_ok=True)
        audio.write(folder / label / f"song{i:05d}.flac", wave, RATE)


def _run_stages(params: config.Params, work: Path) -> dict[str, float]:
    """Wall seconds of ingest, features and the index embedding on params' library."""
    times = {}
    t0 = time.perf_counter()
    lib = ingest.ingest(params, None, workers=params.compute.workers, progress=False)
    times["ingest"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    library_features.build(lib.tracks, params, work / "features", progress=False)
    times["features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ckpt = library_features.trunk_checkpoint(params)
    rows = library_features.load_trunk(work / "features", ckpt)
    ids = rows.track_ids
    torch_model = embed.build(params.model_params, params.features).eval()
    segments, index = rows.segments(ids)
    embed.track_means(embed.apply_head(torch_model, segments), index, ids)
    times["index_embedding"] = time.perf_counter() - t0
    return times


def _on_library(params: config.Params, lib: Path, workers: int) -> config.Params:
    """params for the generated library under `lib` (its own per-song store)."""
    return dataclasses.replace(
        params, data=dataclasses.replace(params.data, source="folder", audio_dir=str(lib / "music"),
                                         labels="folders", quartets=None),
        compute=dataclasses.replace(params.compute, engine="local", cache_dir=str(lib / "cache"),
                                    workers=workers))


def bench_scaling(params: config.Params, songs: int = 16, seconds: float = 20.0,
                  factors: tuple[int, ...] = (1, 4, 16), workers: int = 2) -> list[dict]:
    """The scaling items (see the module docstring) with the defaults' model and features."""
    if library_features.trunk_checkpoint(params) is None:
        raise ValueError(f"the scaling bench needs a model with a frozen trunk; {params.model} has none")
    if songs * min(factors) < 2:
        raise ValueError(f"the scaling bench's smallest library needs at least 2 songs, not {songs * min(factors)}")
    results, per_song = {}, {}
    with tempfile.TemporaryDirectory(prefix="songspace-scaling-") as tmp:
        root = Path(tmp)
        warm = root / "warmup"   # untimed: imports and first loads land here, not on the 1x library
        _write_songs(warm / "music", 0, 2, seconds)
        _run_stages(_on_library(params, warm, workers), warm)
        starts = []
        for attempt in range(2):
            one = root / f"one{attempt}"
            _write_songs(one / "music", 0, 1, seconds)
            starts.append(sum(_run_stages(_on_library(params, one, workers), one).values()))
        start = min(starts)
        print(f"scaling: fixed start (1 song) {start:.1f} s (runs: {', '.join(f'{t:.1f}' for t in starts)})")
        beyond = {}
        for factor in factors:
            n = songs * factor
            lib = root / f"x{factor}"
            _write_songs(lib / "music", 0, n, seconds)
            run = _on_library(params, lib, workers)
            times = _run_stages(run, lib)
            results[factor] = {"songs": n, **times, "total": sum(times.values())}
            per_song[factor] = results[factor]["total"] / n
            beyond[factor] = (results[factor]["total"] - start) / (n - 1)
            print(f"scaling {factor}x ({n} songs): " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
        largest = max(factors)
        n = songs * largest
        added = max(1, math.ceil(0.01 * n))
        _write_songs(root / f"x{largest}" / "music", n, added, seconds)
        times = _run_stages(run, root / f"x{largest}")
        results["added"] = {"songs": added, **times, "total": sum(times.values())}
        print(f"scaling: +{added} songs to {n}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    spread = max(beyond.values()) / min(beyond.values())
    spread_with_start = max(per_song.values()) / min(per_song.values())
    share = results["added"]["total"] / results[largest]["total"]
    small, big = min(factors), largest
    flat = item("scaling.per_song", "scaling",
                f"per-song stages (ingest, features incl. both trunks, index embedding) per song beyond "
                f"the fixed start, {songs * small} vs {songs * big} songs of {seconds:g} s",
                side(f"{songs * big} songs", [results[big]["total"]], rate_per_s=songs * big, rate_unit="songs/s"),
                side(f"{songs * small} songs", [results[small]["total"]], rate_per_s=songs * small,
                     rate_unit="songs/s"),
                goal="cost per song beyond the fixed start flat within 20% from 1x to 16x", goal_value=spread,
                goal_met=spread <= 1.2, fixed_start_s=round(start, 3), fixed_start_runs_s=[round(t, 3) for t in starts],
                per_song_beyond_start_s={f"{f}x": round(v, 4) for f, v in beyond.items()},
                per_song_s={f"{f}x": round(v, 4) for f, v in per_song.items()},
                spread_with_start=round(spread_with_start, 4), runs=results)
    incr = item("scaling.add_1pct", "scaling",
                f"adding {added} songs ({100 * added / n:.1f}%) to {n}: the per-song stages again, store kept",
                side(f"+{added} songs", [results["added"]["total"]]),
                side(f"all {n} songs from scratch", [results[largest]["total"]]),
                goal="adding 1% costs at most 5% of the full run", goal_value=share, goal_met=share <= 0.05,
                runs={"added": results["added"], "full": results[largest]})
    return [flat, incr]
