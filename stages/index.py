"""Stage `index`: embed every library track with the trained model; build the similar-song index."""
import argparse
import sys

from songspace import config, errors, index, ingest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features", required=True, help="folder of segments.npy / segments.csv")
    ap.add_argument("--tracks", required=True, help="the library's tracks.csv")
    ap.add_argument("--splits", required=True, help="splits.csv: the scaler is fitted on 'train'")
    ap.add_argument("--model", required=True, help="checkpoint, e.g. data/models/best.pt")
    ap.add_argument("--eval", required=True, help="metrics/eval.json (for index.* = best)")
    ap.add_argument("--out", required=True, help="index folder to write")
    ap.add_argument("--added", default=None,
                    help="songs added with `songspace add` (data/added/tracks.csv), embedded again")
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    args = ap.parse_args()
    params = config.load(args.params)
    built = index.build_from_pipeline(args.features, args.tracks, args.splits, args.model, params,
                                      eval_json=args.eval, device=args.device, added_csv=args.added)
    built.save(args.out)
    meta = built.meta
    listed = len(ingest.read_tracks(args.tracks, required=("track_id",)))
    if listed > meta["n_tracks"]:
        print(f"{listed - meta['n_tracks']} track(s) of {args.tracks} have no features "
              f"(see {args.features}/skipped.csv) and are not indexed")
    for path in meta.get("added_missing", []):
        print(f"warning: {path}: listed in {args.added} but no longer on disk; not indexed", file=sys.stderr)
    recall = meta["recall"]
    print(f"{args.out}: {meta['n_tracks']} tracks, {meta['distance']} after {meta['scaler']} "
          f"({meta['chosen_by']}); {meta['searcher']}"
          + (f", recall@10 {recall['recall_at_k']:.3f} on {recall['queries']} tracks" if recall else "")
          + f"; built in {built.timings['build_seconds']:.1f} s, embedded in "
          f"{built.timings['embed_seconds']:.1f} s on {built.timings['device']}")


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "index"))
