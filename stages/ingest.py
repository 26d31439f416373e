"""Stage `ingest`: the track table every later stage uses.

    python stages/ingest.py --corpus data/corpus/tracks.csv --out data/library --reports data/reports

Writes <out>/tracks.csv and <out>/aliases.csv, <reports>/skipped.csv and <reports>/ingest.json.
What the checks find is kept in compute.cache_dir, so a re-run decodes only new audio.
"""
from __future__ import annotations

import argparse
import sys

from songspace import config, errors, ingest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="the corpus stage's tracks.csv")
    parser.add_argument("--out", required=True, help="folder for tracks.csv and aliases.csv")
    parser.add_argument("--reports", required=True, help="folder for skipped.csv and ingest.json")
    parser.add_argument("--params", default=config.PARAMS_FILE)
    parser.add_argument("--workers", type=int, default=2, help="processes checking files")
    args = parser.parse_args(argv)
    params = config.load(args.params)
    lib = ingest.ingest(params, args.corpus, workers=args.workers)
    warnings, error = ingest.problems(lib)
    ingest.write(lib, args.out, args.reports)
    print(ingest.summary(lib))
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if error:
        raise ingest.IngestError(f"{error} ({args.reports}/skipped.csv)")
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "ingest"))
