"""A radio over a large synthetic library: building the `playlists.Space` and a 30-song radio
with artist and album limits.

    PYTHONPATH=src python -m benchmarks.radio --songs 100000

Random 128-d embeddings under cosine; 5,000 artists and 20,000 albums, every song its own audio.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from songspace import errors, playlists


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=100_000)
    ap.add_argument("-n", type=int, default=30)
    args = ap.parse_args()
    n = args.songs
    vectors = np.random.default_rng(0).standard_normal((n, 128))
    tracks = pd.DataFrame({"track_id": [f"t{i}" for i in range(n)], "path": [f"/music/{i}.mp3" for i in range(n)],
                           "artist": [f"a{i % 5000}" for i in range(n)], "album": [f"al{i % 20000}" for i in range(n)],
                           "title": [f"s{i}" for i in range(n)], "sha1": [f"{i:040x}" for i in range(n)]})
    t0 = time.perf_counter()
    space = playlists.Space(vectors, "cosine", {}, tracks)
    t1 = time.perf_counter()
    songs = playlists.radio(space, "t0", n=args.n, max_per_artist=2, no_same_album=True)
    t2 = time.perf_counter()
    print(f"{n} songs: space {t1 - t0:.2f} s; radio of {len(songs)} (max 2 per artist, one per album) {t2 - t1:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "radio"))
