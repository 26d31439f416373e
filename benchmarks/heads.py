"""Choosing the embedding head on validation data alone: K-fold cross-validation over a project's
training and validation tracks (its test tracks are never read).

    python benchmarks/heads.py                 # in a project after `dvc repro` (reads data/)
    python benchmarks/heads.py --folds 5 --steps 2000 --seeds 0 1

The frozen musicnn trunk (MSD weights: the 200-unit penultimate layer + each mel band's mean and
std, `models.musicnn.MusicnnEmbedding.trunk`) is run once over up to `--segments` segments of every
non-test track. The tracks are split into K folds stratified by label; for each fold, each head
below trains on the other folds exactly as `train.fit` trains a frozen-trunk model (Adam, the
triplet loss on every valid triplet of P x K batches, a cosine learning-rate schedule per epoch of
100 steps) and is scored on quartets drawn from the held-out fold's labels (two tracks of one
label, one of another), track = mean of its segments' embeddings, through the 9 x 3 grid. Printed
per head: the accuracy of each cell averaged over the folds, for the best such cell and for cosine
without a scaler (what training's validation reports), with the per-fold values.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from songspace import config, embed, evaluate, features, groundtruth, ingest, library_features, losses, models, train
from songspace.config import FeatureParams
from songspace.groundtruth.labels import draw_pairs_with_odd
from songspace.models import musicnn

# name -> (head_hidden, band_stats, mining); None: the trunk's own outputs, untrained
HEADS = {
    "musicnn MSD penultimate, no training": None,
    "mel-band mean/std of the segments, no training": "bands",
    "linear head on the penultimate layer": (0, False, "none"),
    "linear head on penultimate + band statistics": (0, True, "none"),
    "the same, batch-hard mining": (0, True, "batch_hard"),
    "MLP head (256 hidden) on penultimate + band statistics": (256, True, "none"),
}
STEPS_PER_EPOCH = 100


def folds_of(labels: np.ndarray, k: int, quartets: int, rng: np.random.Generator):
    """K (train rows, held-out rows, quartets (q, 3) into held-out rows, odd (q,)) of a label array."""
    fold = np.zeros(len(labels), int)
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        fold[rows] = (np.arange(len(rows)) + rng.integers(k)) % k
    out = []
    for f in range(k):
        held, rest = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        rows = draw_pairs_with_odd(labels[held], quartets, rng)      # (a, b, odd)
        order = rng.permuted(np.tile([0, 1, 2], (len(rows), 1)), axis=1)
        out.append((rest, held, np.take_along_axis(rows, order, 1), np.argmax(order == 2, axis=1)))
    return out


def train_head(head: torch.nn.Module, x: torch.Tensor, rows: list[np.ndarray], labels: np.ndarray,
               tp: config.TrainParams, steps: int, mining: str, seed: int) -> torch.nn.Module:
    """`head` trained on trunk outputs `x`: track i's segments are rows[i], its label labels[i]."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    loss_fn = losses.build("triplet", tp.margin, mining, from_labels=True)
    opt = torch.optim.Adam(head.parameters(), lr=tp.lr, weight_decay=tp.weight_decay)
    epochs = max(1, steps // STEPS_PER_EPOCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    k = tp.tracks_per_label
    p = min(tp.labels_per_batch, len(np.unique(labels)))
    head.train()
    for _ in range(epochs):
        order = train.pk_order(labels, p, k, STEPS_PER_EPOCH, rng).reshape(-1, p * k)
        for batch in order:
            pick = [rows[t][rng.integers(len(rows[t]))] for t in batch]
            loss = loss_fn(head(x[pick]), torch.from_numpy(labels[batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return head.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="data/features")
    ap.add_argument("--groundtruth", default="data/groundtruth")
    ap.add_argument("--tracks", default="data/library/tracks.csv")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--quartets", type=int, default=600, help="per held-out fold")
    ap.add_argument("--steps", type=int, default=2000, help="training steps per head and fold")
    ap.add_argument("--segments", type=int, default=16, help="trunk outputs per track (at most)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    params = config.load(args.params)
    mp = dataclasses.replace(params.models["musicnn_msd"], freeze="backbone", band_stats=True, head_hidden=0)

    splits = groundtruth.read_splits(f"{args.groundtruth}/splits.csv")
    tracks = ingest.read_tracks(args.tracks, required=("track_id", "label"))
    label_of = dict(zip(tracks["track_id"], tracks["label"]))
    t0 = time.perf_counter()
    if library_features.has_trunk(args.features, mp.pretrained):
        # the features stage's stored trunk outputs (its max_segments per track): nothing to compute
        stored = library_features.load_trunk(args.features, mp.pretrained)
        ids = [t for t in splits.loc[splits["split"] != "test", "track_id"] if t in stored]
        trunk, index = stored.segments(ids)
        source = f"{args.features}/trunk-{mp.pretrained}.npy"
    else:
        spectra = features.load_spectra(args.features, "musicnn",
                                        dataclasses.replace(params.features, max_segments=args.segments))
        ids = [t for t in splits.loc[splits["split"] != "test", "track_id"] if t in spectra]
        windows, index = spectra.segments(ids)
        trunk = embed.embed_segments(embed.Trunk(embed.build(mp, FeatureParams())), windows, batch_size=64,
                                     progress=True)
        source = "computed"
    labels = np.unique([label_of[t] for t in ids], return_inverse=True)[1].ravel()
    print(f"trunk outputs of {len(index)} segments of {len(ids)} non-test tracks "
          f"({len(np.unique(labels))} labels; {source}) in {time.perf_counter() - t0:.0f} s")
    by_track = features.rows_by_track(index)
    rows = [by_track[t] for t in ids]
    x = torch.from_numpy(trunk)

    def track_means(emb: np.ndarray) -> np.ndarray:
        return np.stack([emb[r].mean(axis=0) for r in rows])

    print(f"{args.folds}-fold cross-validation, {args.steps} steps per head, seeds {args.seeds}")
    for name, spec in HEADS.items():
        per_fold = []
        for seed in args.seeds:
            for rest, held, q, odd in folds_of(labels, args.folds, args.quartets, np.random.default_rng(seed)):
                if spec is None or spec == "bands":
                    cols = slice(0, musicnn.PENULTIMATE_UNITS) if spec is None else slice(musicnn.PENULTIMATE_UNITS, None)
                    emb = track_means(trunk[:, cols])
                else:
                    hidden, bands, mining = spec
                    net = models.build(dataclasses.replace(mp, head_hidden=hidden, band_stats=bands),
                                       musicnn.N_MELS, musicnn.WINDOW_FRAMES, seed=seed)
                    cols = slice(0, net.trunk_dim)
                    fold_rows = [rows[i] for i in rest]
                    head = train_head(net.head, x[:, cols], fold_rows, labels[rest], params.train,
                                      args.steps, mining, seed)
                    with torch.no_grad():
                        emb = track_means(head(x[:, cols]).numpy())
                grid = evaluate.grid(emb[rest], emb[held], q, odd, bootstrap=1)
                cells = {(r["distance"], r["scaler"]): r["accuracy"] for r in grid}
                cells[("cosine", "none")] = evaluate.odd_one_out_accuracy(emb[held], q, odd, "cosine")
                per_fold.append(cells)
        mean = {cell: float(np.mean([f[cell] for f in per_fold])) for cell in per_fold[0]}
        cos = mean.pop(("cosine", "none"))
        best = max(mean, key=mean.get)
        print(f"{name:58s} best cell {best[0]}/{best[1]} {mean[best]:.3f} "
              f"(folds {', '.join(f'{f[best]:.2f}' for f in per_fold)}); cosine {cos:.3f}", flush=True)


if __name__ == "__main__":
    main()
