"""Stage `features`: the per-song work (decode, log-mels, the pretrained networks' outputs), done
once per song in the per-song store, then the library's feature files (`library_features`)."""
import argparse
import json
import sys
from pathlib import Path

from songspace import config, errors, ingest, library_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", required=True, help="track table from the ingest stage")
    ap.add_argument("--out", required=True, help="folder for the feature files")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    args = ap.parse_args()
    params = config.load(args.params)
    tracks = ingest.read_tracks(args.tracks, required=("track_id", "path", "sha1"))
    skipped = library_features.build(tracks, params, args.out)
    for row in skipped.itertuples():
        print(f"skipped {row.path}: {row.detail}")
    about = json.loads((Path(args.out) / "store.json").read_text())
    per_song = sum(about["store_bytes_per_song"].values())
    print(f"{about['songs']} songs: {per_song / 1024:.1f} KiB per song in the store, "
          f"{about['output_bytes_per_song'] / 1024:.1f} KiB per song in {args.out}; {len(skipped)} skipped")


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "features"))
