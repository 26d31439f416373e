"""`make bench`: songspace's hot paths against the obvious alternative, timed in the same run.

    python -m benchmarks.bench --out metrics/bench.json                   # everything (`make bench`)
    python -m benchmarks.bench --out /tmp/b.json --quick                   # small sizes, a minute or two
    python -m benchmarks.bench --out metrics/bench.json --only grid,training --repeats 5
    python -m benchmarks.bench --out metrics/bench.json --only pipeline --stage-times stage_times.txt

Run from the project root. A stage-times file has lines `stage seconds`, e.g. from
    for s in corpus ingest groundtruth features augment train evaluate index; do
        /usr/bin/time -f "$s %e" -a -o stage_times.txt dvc repro -s -f $s; done
(plus an optional `total SECONDS` line for a whole `dvc repro`). Not a DVC stage.

| item | ours | alt | goal |
|---|---|---|---|
| extraction, 1 core | `features.track_spectrogram`, whole track (`db`) | `librosa.load` + `melspectrogram` + `power_to_db` | clips >= 300x real time; songs >= 1x librosa |
| extraction, 2 cores | `features.extract_library(workers=2)` | librosa in a 2-process pool | >= 1.8x our one-core rate |
| grid | vectorised `evaluate.cell_scores` + bootstrap | a per-quartet scipy loop | >= 50x |
| training | each model's step | model3's step (the default) | none |
| training, AMP | step under fp16 autocast (CUDA) | the same model in fp32 | none |
| queries | faiss exact / HNSW | numpy brute force | none |
| musicnn, 1 core | `musicnn.logmel` + pretrained forward pass | librosa's log-mel (as the original) + the same forward | none |
| scaling | ingest + features + index embedding per song on 1x, 4x, 16x a base library; then +1% songs | | per song beyond each run's fixed start flat within 20%; +1% <= 5% of the full run |
| pipeline | per-stage wall times of `dvc repro`, read from a file | | |

The harness (items, timing, printing) is `benchmarks/harness.py`; each group has its module:
`extraction.py` (with musicnn), `grid.py`, `training.py`, `queries.py`. The 2-core items list
each file several times (up to `parallel_files` decodes), so that pool start-up and
`extract_library`'s chunks of tracks do not dominate a handful of files.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from benchmarks.extraction import bench_extraction, bench_musicnn, write_test_audio
from benchmarks.grid import bench_grid
from benchmarks.harness import format_table, machine_info, markdown_table, read_stage_times, save
from benchmarks.queries import base_embeddings, bench_queries
from benchmarks.training import REFERENCE_MODEL, bench_training
from songspace import config, errors
from songspace.config import Params

ITEMS = ("extraction", "grid", "training", "musicnn", "queries", "scaling", "pipeline")


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
    scaling_songs: int = 16           # the scaling item's base library (1x); 4x and 16x of it
    scaling_seconds: float = 20.0     # length of each of its songs


FULL = Sizes()
QUICK = Sizes(n_clips=4, n_songs=1, song_seconds=180.0, formats=("wav", "ogg"), parallel_files=16,
              n_quartets=1000, loop_quartets=100, train_models=(REFERENCE_MODEL, "model1"),
              train_steps=2, n_synthetic=10_000, n_queries=50, brute_timed=20, musicnn_seconds=9.0,
              scaling_songs=4, scaling_seconds=8.0)



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
    if "scaling" in items:
        from benchmarks.scaling import bench_scaling

        result["items"] += bench_scaling(params, sizes.scaling_songs, sizes.scaling_seconds,
                                         workers=sizes.workers)
    if "pipeline" in items:
        if stage_times is not None:
            result["pipeline"] = read_stage_times(stage_times, root / "dvc.yaml")
        else:
            result["settings"]["pipeline"] = "not timed: no stage-times file given"
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write (e.g. metrics/bench.json)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes (few files, 1000 quartets, 10k synthetic vectors, 2 models)")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated subset of: {', '.join(ITEMS)} (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 5; --quick 3)")
    ap.add_argument("--stage-times", default=None, help="file of `stage seconds` lines (the `pipeline` item)")
    ap.add_argument("--audio-dir", default=None, help="keep the generated test audio here (default: a temp folder)")
    ap.add_argument("--query-threads", type=int, default=None,
                    help="faiss/BLAS threads for the query benchmark (default: all cores; 1 on a busy machine)")
    ap.add_argument("--markdown", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--strict", action="store_true", help="exit with status 1 when a goal is missed")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    args = ap.parse_args()

    items = ITEMS if args.only is None else tuple(s.strip() for s in args.only.split(",") if s.strip())
    if "pipeline" in items and args.stage_times is None and args.only is not None:
        ap.error("the pipeline item needs --stage-times FILE")
    repeats = args.repeats or (3 if args.quick else 5)
    try:
        sizes = dataclasses.replace(QUICK if args.quick else FULL, query_threads=args.query_threads)
        result = run(items, sizes, config.load(args.params),
                     repeats=repeats, stage_times=args.stage_times, audio_dir=args.audio_dir)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"bench: {err}") from None
    command = " ".join(["python -m benchmarks.bench", *sys.argv[1:]])
    result["settings"]["command"] = command
    save(result, args.out)
    print(format_table(result))
    md = markdown_table(result, command)
    print("\nMarkdown:\n\n" + md)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md + "\n")
    print(f"\nwrote {args.out}")
    if args.strict and any(it["goal_met"] is False for it in result["items"]):
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "bench"))

