"""Stage `corpus`: render the built-in music library from music21's score corpus.

    python stages/corpus.py --out data/corpus [--params params.yaml] [--workers 2]

Writes <out>/<track_id>.wav, <out>/tracks.csv and <out>/failed.csv. With data.source other
than 'corpus' it writes a header-only tracks.csv (the `ingest` stage reads the user's folder).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from songspace import config, corpus, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the clips, tracks.csv, failed.csv")
    parser.add_argument("--params", default=config.PARAMS_FILE)
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    args = parser.parse_args(argv)
    params = config.load(args.params)
    out = Path(args.out)
    if params.data.source != "corpus":
        corpus.write_empty(out)
        print(f"corpus: data.source is '{params.data.source}', not 'corpus'; "
              f"wrote an empty {out / corpus.TRACKS_FILE}")
        return 0
    start = time.perf_counter()
    try:
        tracks = corpus.build_corpus(params.corpus, params.seed, out, workers=args.workers)
    except ValueError as err:  # parameters the corpus cannot be built from
        raise corpus.CorpusError(f"{args.params}: {err}") from None
    print(corpus.summary(tracks, out, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "corpus"))
