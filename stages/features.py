"""Stage `features`: every library track -> whole-track log-mels of each front end (one array + a
track table per front end): `db` (params-driven, also the hand-crafted baselines' input) and
`musicnn` (the pretrained network's input)."""
import argparse
import sys
from pathlib import Path

import pandas as pd

from songspace import config, errors, features, ingest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", required=True, help="track table from the ingest stage")
    ap.add_argument("--out", required=True, help="folder for <frontend>.npy / <frontend>.csv")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    args = ap.parse_args()
    params = config.load(args.params)
    tracks = ingest.read_tracks(args.tracks, required=("track_id", "path"))
    skipped_all = []
    for name in features.FRONTENDS:
        spectra, skipped = features.extract_library(tracks, params.features, name)
        features.save(args.out, spectra)
        skipped_all.append(skipped)
        windows, _ = spectra.segments()
        hours = len(spectra.array) / spectra.fe.frames_per_second / 3600
        print(f"{name}: {len(spectra.table)} tracks, {hours:.2f} h, {len(windows)} segments of "
              f"{spectra.fe.segment_frames} frames x {spectra.fe.n_mels} bands, "
              f"{spectra.array.nbytes / 2**20:.1f} MiB")
    skipped = pd.concat(skipped_all).drop_duplicates("track_id")
    skipped.to_csv(Path(args.out) / "skipped.csv", index=False)
    for row in skipped.itertuples():
        print(f"skipped {row.path}: {row.reason}")
    print(f"{len(skipped)} skipped")


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "features"))
