"""Stage `features`: every library track -> log-mel segments (one array + an index)."""
import argparse
import sys
from pathlib import Path

import pandas as pd

from songspace import config, errors, features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", required=True, help="track table from the ingest stage")
    ap.add_argument("--out", required=True, help="folder for segments.npy / segments.csv")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    args = ap.parse_args()
    params = config.load(args.params)
    tracks = pd.read_csv(args.tracks, dtype={"track_id": str})
    array, index, skipped = features.extract_library(tracks, params.features)
    features.save(args.out, "segments", array, index, params.features)
    skipped.to_csv(Path(args.out) / "skipped.csv", index=False)
    for row in skipped.itertuples():
        print(f"skipped {row.path}: {row.reason}")
    print(f"{len(index)} segments of {index['track_id'].nunique()} tracks, shape {array.shape}, "
          f"{array.nbytes / 2**20:.1f} MiB; {len(skipped)} skipped")


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "features"))
