"""Stage `train`: fit the configured model; checkpoints `best.pt` / `last.pt`, dvclive curves."""
import argparse
import contextlib
import os
import sys

from dvclive import Live

from songspace import config, errors, groundtruth, library_features, models, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features", required=True)
    ap.add_argument("--views", required=True)
    ap.add_argument("--groundtruth", required=True)
    ap.add_argument("--tracks", required=True)
    ap.add_argument("--out", required=True, help="folder for best.pt and last.pt")
    ap.add_argument("--live", default="dvclive", help="dvclive folder")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    args = ap.parse_args()
    params = config.load(args.params)
    data = train.load_data(args.features, args.groundtruth, args.tracks, args.views,
                           frontend=models.input_frontend(params.model_params), feature_params=params.features,
                           self_supervised=groundtruth.halves.in_use(params.data),
                           trunk=library_features.trunk_checkpoint(params)
                           if library_features.trains_on_trunk(params) else None)
    for what, n in data.dropped.items():
        if n:
            print(f"{n} {what.replace('_', ' ')} left out: they name tracks without features "
                  f"(see {args.features}/skipped.csv)")
    print(f"{params.model} / {params.loss}: {len(data.train_tracks)} training tracks, "
          f"{len(data.triplets)} triplets, {len(data.val_quartets)} validation quartets, "
          f"{data.n_labels} labels")
    # dvclive's files are kept between runs (persist in dvc.yaml): a resumed run appends to
    # its curves, steps continuing; a fresh run starts them anew.
    resume = train.will_resume(params, data, args.out)
    # Under torchrun only the first process logs.
    first = os.environ.get("RANK", "0") == "0"
    logger = Live(args.live, resume=resume, dvcyaml=None, save_dvc_exp=False) if first else contextlib.nullcontext()
    with logger as live:
        if live is not None:
            live.log_params({"model": params.model, "loss": params.loss})
            if resume:
                train.continue_steps(live)
        train.fit(params, data, args.out, live=live)


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "train"))
