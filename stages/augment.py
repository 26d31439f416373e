"""Stage `augment`: K waveform-augmented views of every training track, cached as log-mel segments."""
import argparse
import time
import sys
from pathlib import Path

from songspace import config, errors, groundtruth, ingest, views


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", required=True, help="track table from the ingest stage")
    ap.add_argument("--splits", required=True, help="splits.csv from the groundtruth stage")
    ap.add_argument("--out", required=True, help="folder for views.npy / views.csv")
    ap.add_argument("--plot", help="PNG showing one clip before and after each augmentation")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    args = ap.parse_args()
    params = config.load(args.params)
    tracks = ingest.read_tracks(args.tracks, required=("track_id", "path"))
    splits = groundtruth.read_splits(args.splits)
    train = tracks[tracks["track_id"].isin(groundtruth.split_tracks(splits, "train"))]
    start = time.perf_counter()
    if params.augment.views > 0 and len(train):
        from songspace import models  # torch: only with views to draw (none by default)

        array, index, skipped = views.extract_views(
            train, params.features, params.augment, params.augment.views, params.seed,
            frontend_name=models.input_frontend(params.model_params))
    else:
        array, index, skipped = views.no_views()
    views.save_views(args.out, array, index, skipped)
    if args.plot and len(train):
        # persist: true in dvc.yaml keeps the figure between runs; it is drawn again only when
        # what it shows changes (the clip's audio, the settings, the code), not when songs are added
        clip = views.plot_clip(train)
        stamp = views.plot_stamp(clip, params.features, params.augment, params.seed)
        if views.drawn_stamp(args.plot) == stamp:
            print(f"augmentations of {clip['track_id']} in {args.plot}: unchanged, kept")
        else:
            from songspace import audio, plots

            wave = audio.load(clip["path"], params.features.sample_rate, duration_s=views.PLOT_SECONDS)
            plots.plot_augmentations(wave, params.features.sample_rate, params.features, params.augment,
                                     Path(args.plot), seed=params.seed, stamp=stamp)
            print(f"augmentations of {clip['track_id']} drawn in {args.plot}")
    print(f"{params.augment.views} views x {len(train)} training tracks -> {len(index)} segments "
          f"in {time.perf_counter() - start:.1f} s; {len(skipped)} skipped")


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "augment"))
