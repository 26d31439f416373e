"""Reading a quartet CSV of judgements at scale: `parse_quartets` and the ground truth built from
it, for growing numbers of lines; the time per line should stay flat (linear cost).

    PYTHONPATH=src python -m benchmarks.quartets --lines 10000 30000 100000

Random judgements over 300 tracks (so repeats and conflicting judgements occur, as they do when
several listeners answer); the table gives seconds and microseconds per line for parsing and for
`groundtruth.build` (splits, partition, quartets and triplets).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from songspace import errors, groundtruth as gt


def library(n_tracks: int = 300) -> pd.DataFrame:
    ids = [f"{label}/{i:03d}.wav" for label in ("p", "q", "r") for i in range(n_tracks // 3)]
    return pd.DataFrame({"track_id": ids, "path": [f"music/{t}" for t in ids], "label": [t[0] for t in ids],
                         "group": ""})


def judgements(tracks: pd.DataFrame, n: int, seed: int = 0) -> list[tuple[int, list[str]]]:
    rng = np.random.default_rng(seed)
    ids = tracks["track_id"].tolist()
    picks = np.argsort(rng.random((n, len(ids))), axis=1)[:, :3]
    return [(line, [ids[a], ids[b], ids[c], ids[c]]) for line, (a, b, c) in enumerate(picks, 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    args = ap.parse_args()
    tracks = library()
    lookup = gt.track_lookup(tracks)
    print(f"{'lines':>8} {'parse s':>8} {'us/line':>8} {'build s':>8} {'us/line':>8}")
    for n in args.lines:
        rows = judgements(tracks, n)
        t0 = time.perf_counter()
        ann = gt.parse_quartets(rows, lookup)
        t1 = time.perf_counter()
        gt.build(tracks, 42, 0.3, 0.15, 0, 0, 0, annotations=ann, split_method="partition")
        t2 = time.perf_counter()
        print(f"{n:>8} {t1 - t0:8.2f} {1e6 * (t1 - t0) / n:8.1f} {t2 - t1:8.2f} {1e6 * (t2 - t1) / n:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "quartets"))
