"""What judgements are worth, and whether asking the uncertain ones pays: a simulated listener's
odd-one-out judgements, chosen by the model's uncertainty or at random, added to the training
triplets of a finished pipeline run, each model scored on the run's test quartets.

    PYTHONPATH=src:. python -m benchmarks.judge_value --run <a finished pipeline run> \\
        --out /tmp/judge_value --seeds 42 1 -n 300 --pool 20000

(--params, --features, ... are read relative to --run, the run's project folder.)

How it is measured:

- Questions: three distinct training tracks (split `train` of splits.csv), drawn uniformly
  (`evaluate.random_quartets`) into a pool of `--pool` draws (repeated three-song sets kept once).
- The listener answers from the labels (tracks.csv `label`): when exactly two of the three share
  a label, the third is the odd one; when all three share one or all differ, the answer is
  "all alike" and the question yields nothing (counted as `alike`).
- Uncertain: the `-n` answered questions of the pool with the smallest gap between the closest
  and second-closest pair distance (`explorer.judge.certainty_gap`, `pair_distances`) in the
  space of the index (`--index`, built with `--model`, the run's current model). Random: the
  first `-n` answered questions in the pool's (uniform) draw order, as the judge view asks its
  `random` questions. `asked` is how many questions each way took to get `-n` answers.
- Training: the default P x K sampler draws from labels and never reads triplets, so the three
  models are trained with `train.sampler: triplets` (triplet loss, `train.mining` as set):
  baseline = the run's train_triplets.csv; +uncertain and +random = the same plus two triplets
  per judgement (`groundtruth.quartet_triplets`). Everything else is params.yaml's (epochs,
  `train.steps_per_epoch`, so the same number of steps for all three; early stopping on the
  validation quartets; best.pt is the one scored). The frozen trunk's outputs are computed
  once (`train.cache_trunk`) and given to all trainings, which then run `train.setup`,
  `train_epoch` and `end_epoch` as `train.fit` does; this needs a `trunk_frozen` model with
  `train.cached_segments` set and no spectrogram augmentation.
- Seeds: each `--seeds` value seeds one whole replicate: the pool, the random questions and the
  training (weights, batch order).
- Scoring: per-quartet scores of the 27 distance x scaler cells (`evaluate.cell_scores`) on
  test_quartets.csv, scalers fitted on the training tracks' embeddings (as the evaluate stage
  does), for the index's cell and for each model's best cell (chosen on these same quartets,
  so slightly optimistic, as in eval.json). Intervals: percentile bootstrap over quartets with
  the same resamples for every model (`evaluate.bootstrap_means`, seed params.yaml `seed`), so
  the differences against the baseline are paired. The run's own model (`--model`, P x K) is
  scored the same way, for reference.

Writes `<out>/judge_value.json` (all numbers), `<out>/judgements_<seed>_<how>.csv` (the
simulated judgements) and `<out>/trunk.npz` (the trunk outputs, reused by a rerun on the same
tracks); prints the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from songspace import config, embed, errors, evaluate, features, groundtruth, ingest, models, train
from songspace.explorer import judge
from songspace.index.api import Library

ALIKE = -1      # the listener's answer when no two songs share a label, or all three do


def listener_odd(labels: np.ndarray) -> np.ndarray:
    """The odd song's position (m,) in 0..2 for the labels (m, 3) of three songs, `ALIKE` where
    all three labels agree or all differ."""
    a, b, c = labels[:, 0], labels[:, 1], labels[:, 2]
    odd = np.full(len(labels), ALIKE)
    odd[(b == c) & (a != b)] = 0
    odd[(a == c) & (b != a)] = 1
    odd[(a == b) & (c != a)] = 2
    return odd


def first_answered(order: np.ndarray, odd: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """The first n questions of `order` the listener answered, and how many were asked for them."""
    answered = order[odd[order] != ALIKE]
    if len(answered) < n:
        raise ValueError(f"only {len(answered)} answered questions in the pool: raise --pool")
    chosen = answered[:n]
    return chosen, int(np.flatnonzero(order == chosen[-1])[0]) + 1


def choose(space, train_ids: list[str], label_of: dict, n: int, pool: int, seed: int) -> dict:
    """The uncertain and random judgements ({how: quartet DataFrame}) and their counts."""
    rows = evaluate.random_quartets(len(train_ids), pool, np.random.default_rng([seed, 23]))[0]
    _, first = np.unique(np.sort(rows, axis=1), axis=0, return_index=True)
    rows = rows[np.sort(first)]                   # each three-song set once, in draw order
    ids = np.array(train_ids)
    songs = ids[rows]
    labels = np.vectorize(lambda t: str(label_of[t]))(songs)
    odd = listener_odd(labels)
    d = judge.pair_distances(space, np.vectorize(space.row_of.get)(songs))
    gap, model = judge.certainty_gap(d), judge.model_odd(d)
    out = {"pool": len(rows), "alike": int((odd == ALIKE).sum()),
           "all_same": int(((labels[:, 0] == labels[:, 1]) & (labels[:, 1] == labels[:, 2])).sum()),
           "judgements": {}, "asked": {}, "model_agreement": {}, "mean_gap": {}}
    orders = {"uncertain": np.argsort(gap, kind="stable"), "random": np.arange(len(rows))}
    for how, order in orders.items():
        chosen, asked = first_answered(order, odd, n)
        q = pd.DataFrame(songs[chosen], columns=["song1", "song2", "song3"])
        q["odd"] = songs[chosen, odd[chosen]]
        out["judgements"][how] = q
        out["asked"][how] = asked
        out["model_agreement"][how] = float((model[chosen] == odd[chosen]).mean())
        out["mean_gap"][how] = float(gap[chosen].mean())
    return out


def with_judgements(data: train.TrainData, quartets: pd.DataFrame) -> train.TrainData:
    """The training data with two triplets per judged quartet added to its triplets."""
    pos = {t: i for i, t in enumerate(data.train_tracks)}
    extra = groundtruth.quartet_triplets(quartets).apply(lambda c: c.map(pos)).to_numpy(np.int64)
    return dataclasses.replace(data, triplets=np.concatenate([data.triplets, extra]))


def fit_head(params, data: train.TrainData, cache: embed.TrunkCache, out_dir: Path) -> embed.Embedder:
    """`train.fit` on a trunk cache computed beforehand; the best epoch's model (best.pt)."""
    for name in ("best.pt", "last.pt"):
        (out_dir / name).unlink(missing_ok=True)
    no_cache = dataclasses.replace(params, train=dataclasses.replace(params.train, cached_segments=None))
    run = train.setup(no_cache, data, out_dir)    # builds the model without computing the trunk
    data.trunk_cache, run.net = cache, embed.Head(run.model)
    while run.state["epoch"] < params.train.epochs and run.state["stale"] < params.train.patience:
        loss = train.train_epoch(run, params, data, progress=False)
        train.end_epoch(run, params, data, loss)
    return embed.load_checkpoint(out_dir / "best.pt")[0]


def trunk_outputs(params, data: train.TrainData, spectra: features.Spectra, test_ids: list[str],
                  path: Path) -> tuple[embed.TrunkCache, np.ndarray, pd.DataFrame]:
    """The frozen trunk's outputs: the training cache and the test tracks' segments (with their
    index); read from `path` when it holds them for these tracks, else computed and saved."""
    if path.is_file():
        z = np.load(path)
        if [list(z[k]) for k in ("train_ids", "val_ids", "test_ids")] == \
                [data.train_tracks, data.val_tracks, test_ids]:
            cache = embed.TrunkCache(torch.from_numpy(z["train"]),
                                     np.split(z["train_rows"], np.cumsum(z["train_counts"])[:-1]),
                                     torch.from_numpy(z["val"]), _index(z["val_row_ids"]))
            print(f"trunk outputs read from {path}")
            return cache, z["test"], _index(z["test_row_ids"])
    model = embed.build(params.model_params, params.features)
    cache = train.cache_trunk(model, data, params, "cpu")
    if cache is None:
        raise ValueError("the model has no frozen trunk to cache (or train.cached_segments is off, "
                         "or spectrogram augmentation is on): this benchmark needs one")
    windows, index = spectra.segments(test_ids)
    print(f"frozen trunk: {len(index)} test segments")
    test = embed.embed_segments(embed.Trunk(model), windows, batch_size=64, progress=True)
    np.savez(path, train=cache.train.numpy(), train_rows=np.concatenate(cache.rows),
             train_counts=[len(r) for r in cache.rows], val=cache.val.numpy(),
             val_row_ids=cache.val_index["track_id"].to_numpy(str), test=test,
             test_row_ids=index["track_id"].to_numpy(str), train_ids=data.train_tracks,
             val_ids=data.val_tracks, test_ids=test_ids)
    return cache, test, index


def _index(row_ids: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"row": np.arange(len(row_ids)), "track_id": [str(t) for t in row_ids]})


def score(model, cache: embed.TrunkCache, test_out, test_index, test_ids, quartets, odd, p) -> np.ndarray:
    """Per-quartet scores (q, 27 cells) of a model's head on the cached trunk outputs."""
    emb = embed.apply_head(model, cache.train)
    train_emb = np.stack([emb[r].mean(axis=0) for r in cache.rows])
    test_emb = embed.track_means(embed.apply_head(model, test_out), test_index, test_ids)
    return evaluate.cell_scores(train_emb, test_emb, quartets, odd, p)[0]


def test_quartets(gt: Path, test_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The test quartets (q, 3) as positions into test_ids, and the odd song's position (q,)."""
    q = groundtruth.read_quartets(gt / "test_quartets.csv")
    q = q[q[["song1", "song2", "song3"]].isin(set(test_ids)).all(axis=1)]
    songs = q[["song1", "song2", "song3"]].to_numpy()
    pos = {t: i for i, t in enumerate(test_ids)}
    return np.vectorize(pos.get)(songs).astype(np.int64), np.argmax(songs == q["odd"].to_numpy()[:, None], axis=1)


def summarise(scores: dict[str, np.ndarray], cell: tuple[str, str], params, base_of: dict) -> list[dict]:
    """Per model: accuracy at the index's cell and at its best cell, with intervals, and the
    paired difference against its baseline (`base_of[name]`)."""
    names = list(scores)
    n_cells, conf = len(evaluate.CELLS), params.evaluate.confidence
    means = evaluate.bootstrap_means(np.hstack([scores[n] for n in names]), params.evaluate.bootstrap, params.seed)
    at = lambda n, c: means[:, names.index(n) * n_cells + c]  # noqa: E731
    fixed = evaluate.CELLS.index(cell)
    out = []
    for n in names:
        acc = scores[n].mean(axis=0)
        best = int(np.argmax(acc))
        row = {"model": n, "cell": f"{cell[0]}/{cell[1]}", "best_cell": "/".join(evaluate.CELLS[best])}
        for key, c in (("index_cell", fixed), ("best", best)):
            lo, hi = evaluate.percentile_ci(at(n, c), conf)
            row[key] = {"accuracy": float(acc[c]), "ci_low": float(lo), "ci_high": float(hi)}
            base = base_of.get(n)
            if base is not None:
                b = fixed if key == "index_cell" else int(np.argmax(scores[base].mean(axis=0)))
                dlo, dhi = evaluate.percentile_ci(at(n, c) - at(base, b), conf)
                row[key].update(diff=float(acc[c] - scores[base][:, b].mean()), diff_ci_low=float(dlo),
                                diff_ci_high=float(dhi))
        out.append(row)
    return out


def print_table(rows: list[dict]) -> None:
    print(f"\n{'model':<22} {'index cell':>26} {'diff vs baseline':>24}   {'best cell':>44}")
    for r in rows:
        parts = []
        for key in ("index_cell", "best"):
            v = r[key]
            acc = f"{v['accuracy']:.4f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
            diff = (f"{v['diff']:+.4f} [{v['diff_ci_low']:+.3f}, {v['diff_ci_high']:+.3f}]" if "diff" in v
                    else "")
            parts.append(f"{acc:>26} {diff:>24}")
        print(f"{r['model']:<22} {parts[0]}   {parts[1]} {r['best_cell']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=".", help="the pipeline run's folder: the paths below are in it")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    ap.add_argument("--features", default="data/features")
    ap.add_argument("--views", default="data/views")
    ap.add_argument("--groundtruth", default="data/groundtruth")
    ap.add_argument("--tracks", default="data/library/tracks.csv")
    ap.add_argument("--index", default="data/index")
    ap.add_argument("--model", default="data/models/best.pt")
    ap.add_argument("--out", default="/tmp/judge_value")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("-n", type=int, default=300, help="judgements chosen each way")
    ap.add_argument("--pool", type=int, default=20000, help="random three-song draws to choose from")
    args = ap.parse_args()
    for key in ("params", "features", "views", "groundtruth", "tracks", "index", "model"):
        setattr(args, key, str(Path(args.run) / getattr(args, key)))
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    params = config.load(args.params)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, sampler="triplets"))
    if params.loss != "triplet":
        raise ValueError(f"loss {params.loss!r}: triplets are only read by the triplet loss")
    frontend = models.input_frontend(params.model_params)
    data = train.load_data(args.features, args.groundtruth, args.tracks,
                           args.views if Path(args.views).is_dir() else None, frontend, params.features)
    spectra = features.load_spectra(args.features, frontend, params.features)
    splits = groundtruth.read_splits(Path(args.groundtruth) / "splits.csv")
    test_ids = groundtruth.split_tracks(splits, "test", spectra)
    if params.train.cached_segments != params.features.max_segments:
        raise ValueError("train.cached_segments differs from features.max_segments: the training "
                         "tracks' cached segments would not be the ones the evaluate stage embeds")
    quartets, odd = test_quartets(Path(args.groundtruth), test_ids)
    cache, test_out, test_index = trunk_outputs(params, data, spectra, test_ids, out / "trunk.npz")
    lib = Library.open(args.index, args.model)
    cell = (lib.index.distance, lib.index.scaler_name)
    label_of = dict(zip(*(ingest.read_tracks(args.tracks, required=("track_id", "label"))[c]
                          for c in ("track_id", "label"))))
    score_of = lambda m: score(m, cache, test_out, test_index, test_ids, quartets, odd,  # noqa: E731
                               params.evaluate.minkowski_p)
    scores = {"pk_default (run's model)": score_of(lib.model[0])}
    base_of, chosen_log, history = {}, {}, {}
    for seed in args.seeds:
        p = dataclasses.replace(params, seed=seed)
        chosen = choose(lib.space, data.train_tracks, label_of, args.n, args.pool, seed)
        chosen_log[seed] = {k: v for k, v in chosen.items() if k != "judgements"}
        variants = {"baseline": data, **{how: with_judgements(data, q) for how, q in chosen["judgements"].items()}}
        for how, q in chosen["judgements"].items():
            groundtruth.write_quartets(q, out / f"judgements_{seed}_{how}.csv")
        for name, d in variants.items():
            key = f"{name} (seed {seed})"
            print(f"\n== {key}: {len(d.triplets)} triplets")
            scores[key] = score_of(fit_head(p, d, cache, out / f"seed{seed}" / name))
            history[key] = len(d.triplets)
            if name != "baseline":
                base_of[key] = f"baseline (seed {seed})"
    rows = summarise(scores, cell, params, base_of)
    wall = time.perf_counter() - t0
    result = {"rows": rows, "choice": {str(k): v for k, v in chosen_log.items()}, "triplets": history,
              "n_test_quartets": int(len(odd)), "wall_s": round(wall, 1), "args": vars(args)}
    (out / "judge_value.json").write_text(json.dumps(result, indent=1) + "\n")
    for seed, c in chosen_log.items():
        print(f"seed {seed}: pool {c['pool']} distinct draws, {c['alike']} all alike "
              f"({c['all_same']} one label, {c['alike'] - c['all_same']} three labels); asked for "
              f"{args.n} answers: {c['asked']}; current model agrees on {c['model_agreement']}")
    print_table(rows)
    print(f"\n{len(odd)} test quartets; wall {wall:.0f} s; {out / 'judge_value.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "judge_value"))
