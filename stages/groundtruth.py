"""Stage `groundtruth`: train/val/test splits, test and val quartets, training triplets.

    python stages/groundtruth.py --tracks data/library/tracks.csv --out data/groundtruth --reports data/reports

Reads data.quartets (human judgements) when set, else derives quartets from labels; with an
annotator column, the report carries the annotators' agreement. Duplicate
paths named in the judgements are resolved through aliases.csv next to tracks.csv.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from songspace import config, errors, groundtruth, ingest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", required=True, help="the ingest stage's tracks.csv")
    parser.add_argument("--out", required=True, help="folder for splits, quartets, triplets")
    parser.add_argument("--reports", required=True, help="folder for groundtruth.json")
    parser.add_argument("--params", default=config.PARAMS_FILE)
    args = parser.parse_args(argv)
    p = config.load(args.params)
    tracks = ingest.read_tracks(args.tracks)
    annotations = None
    if p.data.quartets:
        aliases_csv = Path(args.tracks).with_name("aliases.csv")
        aliases = ingest.read_aliases(aliases_csv) if aliases_csv.exists() else None
        path = ingest.resolve_param_path(p.data.quartets, p.data.audio_dir, "data.quartets")
        rows, lookup = groundtruth.read_quartet_rows(path), groundtruth.track_lookup(tracks, aliases)
        annotations = groundtruth.parse_quartets(rows, lookup, source=str(path))
    gt = groundtruth.build(
        tracks, p.seed, p.split.test_fraction, p.split.val_fraction,
        p.groundtruth.test_quartets, p.groundtruth.val_quartets, p.groundtruth.train_triplets,
        annotations, p.split.method, p.groundtruth.min_val_quartets, halves=groundtruth.halves.in_use(p.data),
        open_set_labels=p.split.open_set_labels if p.split.open_set else None)
    if annotations is not None:
        agreement = groundtruth.annotator_agreement(rows, lookup)
        if agreement:
            gt.report["annotations"]["annotators"] = agreement
    groundtruth.write(gt, args.out, args.reports)
    print(groundtruth.summary(gt))
    if groundtruth.agreement_line(gt.report):
        print(f"  {groundtruth.agreement_line(gt.report)}")
    for w in gt.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "groundtruth"))
