"""Stage `evaluate`: the 9 x 3 odd-one-out grid for the trained model and its baselines,
retrieval metrics, metrics JSON and plots."""
import argparse
import sys

import numpy as np
import pandas as pd
import torch

from songspace import config, embed, errors, evaluate, features, groundtruth, ingest, library_features, models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="checkpoint (best.pt)")
    ap.add_argument("--features", required=True)
    ap.add_argument("--groundtruth", required=True)
    ap.add_argument("--tracks", required=True)
    ap.add_argument("--metrics", required=True, help="output JSON")
    ap.add_argument("--plots", required=True, help="output folder for plots")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    args = ap.parse_args()
    params = config.load(args.params)

    model, meta = embed.load_checkpoint(args.model)
    ckpt = library_features.trunk_checkpoint(meta["model_params"])
    halves = groundtruth.halves.in_use(params.data)  # no labels, no judgements: judged on halves
    if ckpt is not None:
        # the frozen trunk's stored outputs (halves included): the trunk never runs again here
        catalog = library_features.load_trunk(args.features, ckpt)
    else:
        catalog = features.load_spectra(args.features, models.input_frontend(meta["model_params"]), params.features)
    have = set(catalog.track_ids)
    tracks = ingest.read_tracks(args.tracks, required=("track_id", "label")).set_index("track_id")
    splits = groundtruth.read_splits(f"{args.groundtruth}/splits.csv")
    train_ids = groundtruth.split_tracks(splits, "train", have)
    test_ids = groundtruth.split_tracks(splits, "test", have)
    if halves:
        test_ids = [h for t in test_ids for h in groundtruth.halves.half_ids(t)]
        if ckpt is None:
            catalog = groundtruth.halves.with_halves(catalog, [groundtruth.halves.whole_id(t) for t in test_ids[::2]])
        print("no labels: the test tracks' halves are the tracks to judge (a track's other half is its match)")
    q = groundtruth.read_quartets(f"{args.groundtruth}/test_quartets.csv")
    usable = q[["song1", "song2", "song3"]].isin(set(test_ids)).all(axis=1)
    if (~usable).any():
        print(f"{int((~usable).sum())} test quartet(s) name tracks without features: left out")
    q = q[usable]
    pos = {t: i for i, t in enumerate(test_ids)}
    songs = q[["song1", "song2", "song3"]].to_numpy()
    quartets = np.vectorize(pos.get)(songs).astype(np.int64) if len(q) else np.zeros((0, 3), np.int64)
    odd = np.argmax(songs == q["odd"].to_numpy()[:, None], axis=1)

    segments, index = catalog.segments(train_ids + test_ids)
    print(f"embedding {len(train_ids)} training and {len(test_ids)} test tracks ({len(index)} segments) "
          f"with {meta['model_name']}")
    # The same network, untrained: what the architecture gives before any learning.
    torch.manual_seed(params.seed + 1)
    random_net = embed.build(meta["model_params"], meta["feature_params"],
                             float(model.mean), float(model.std)).eval()
    if ckpt is not None:
        emb, random_emb = (embed.apply_head(net, segments) for net in (model, random_net))
    else:
        emb = embed.embed_segments(model, segments, progress=True)
        random_emb = embed.embed_segments(random_net, segments)
    model_train, model_test = (embed.track_means(emb, index, ids) for ids in (train_ids, test_ids))
    baselines = {"random_weights": tuple(embed.track_means(random_emb, index, ids)
                                         for ids in (train_ids, test_ids))}
    stored, names = library_features.load_baselines(args.features)
    row = {t: i for i, t in enumerate(names)}
    for name, vectors in stored.items():
        baselines[name] = tuple(vectors[[row[t] for t in ids]] for ids in (train_ids, test_ids))
    # the retrieval metrics' relevance: a label; without labels, a half's match is its other half
    test_labels = (np.array([groundtruth.halves.whole_id(t) for t in test_ids]) if halves
                   else tracks.loc[test_ids, "label"].to_numpy())

    result = evaluate.evaluate_and_plot(
        model_train, model_test, baselines, quartets, odd, test_labels,
        params.evaluate, params.seed, metrics_path=args.metrics, plots_dir=args.plots)
    head = result["headline"]
    print(f"best cell {head.get('best_distance')} / {head.get('best_scaler')}: odd-one-out accuracy "
          f"{head.get('accuracy', float('nan')):.3f} over {len(quartets)} test quartets (chance 0.333)")


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "evaluate"))
