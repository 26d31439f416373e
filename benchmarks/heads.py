"""Choosing the model by repeated, paired cross-validation on a project's non-test tracks (its test
tracks are never read).

    python -m benchmarks.heads                          # in a project after `dvc repro` (reads data/)
    python -m benchmarks.heads --folds 5 --repeats 3 --only defaults "MLP head, 256 hidden"
    python -m benchmarks.heads --list                   # the candidates

Every candidate is a set of params overrides (dotted keys, as `dvc exp run -S` takes them) on the
project's params.yaml, trained by the pipeline's own loop (`train.fit`) on the stored frozen-trunk
outputs of the features stage. Repeat r (seed r) splits the training and validation tracks into K
folds stratified by label and draws quartets from each held-out fold (two tracks of one label, one
of another); every candidate trains on the other folds with params seed r and is scored on the
same quartets, so each (repeat, fold) unit gives a paired difference between two candidates.

Printed per candidate: odd-one-out accuracy (cosine, no scaler: what training's validation
reads; and the 9 x 3 grid's best cell, chosen per candidate on the means over units), and its
paired difference from the reference candidate (`--reference`, default "defaults") with the
interval of the corrected resampled t-test (Nadeau & Bengio 2003: the variance across the R x K
units is inflated by n_test / n_train for the overlap of the training folds). A candidate beats
the reference when that interval lies above 0.

Training runs a fixed `train.epochs` (no validation inside a fold: the held-out fold is the score,
and stopping on it would choose on it); the final weights are scored.

`--judgements QUARTETS.csv` (song1,song2,song3,odd, as `data.quartets` takes it) trains every
candidate on odd-one-out judgements alone instead of the labels: on the triplets (two per
quartet) of the quartets whose three songs all lie in the unit's training folds, with the
ground-truth triplet sampler. The held-out folds, their quartets and the scoring stay the same.

`--open-set` makes folds of whole labels (at least two a fold), so every held-out quartet asks
about labels the candidate never trained on: the protocol of `split.open_set`, within the
non-test tracks.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from songspace import config, embed, evaluate, groundtruth, ingest, library_features, train
from songspace.groundtruth.labels import draw_pairs_with_odd, quartet_triplets
from songspace.models import musicnn

# name -> params overrides (dotted keys; `@key`: the selected model's own `models.<model>.key`) for
# a trained head, or ("untrained", checkpoint(s) joined by "+", columns) for pretrained networks'
# own stored outputs averaged per track. Two keys change how a track's embedding is made from the
# trained heads rather than params: `~l2` (L2-normalise each segment's embedding before the
# track's mean), `~seeds` (the mean of the track embeddings of that many seeds' heads) and `~mix`
# (w: each segment's embedding is [its unit-length head output, w x its unit-length trunk output
# standardised by the training segments' mean and deviation], before the track's mean).
CANDIDATES: dict[str, dict | tuple] = {
    "untrained MSD penultimate": ("untrained", "MSD_musicnn", "penultimate"),
    "untrained MTT penultimate": ("untrained", "MTT_musicnn", "penultimate"),
    "untrained MSD + MTT penultimate": ("untrained", "MSD_musicnn+MTT_musicnn", "penultimate"),
    "mel-band mean/std, untrained": ("untrained", "MSD_musicnn", "bands"),
    "defaults": {},
    "MTT trunk": {"model": "musicnn_mtt"},
    "both networks' trunk": {"@pretrained": "MSD_musicnn+MTT_musicnn"},
    "both networks' trunk, MLP 256": {"@pretrained": "MSD_musicnn+MTT_musicnn", "@head_hidden": 256},
    "MLP head, 256 hidden": {"@head_hidden": 256},
    "mid-end pools": {"@mid_end": True},
    "mid-end pools, MLP 256": {"@mid_end": True, "@head_hidden": 256},
    "mid-end pools, MLP 512": {"@mid_end": True, "@head_hidden": 512},
    "mid-end pools, no bands, MLP 256": {"@mid_end": True, "@band_stats": False, "@head_hidden": 256},
    "MLP head, 1024 hidden": {"@head_hidden": 1024},
    "band flux": {"@band_flux": True},
    "band flux, MLP 256": {"@band_flux": True, "@head_hidden": 256},
    "band flux, mid-end pools, MLP 256": {"@band_flux": True, "@mid_end": True, "@head_hidden": 256},
    "embedding 256": {"@embedding_dim": 256},
    "embedding 64": {"@embedding_dim": 64},
    "batch-hard mining": {"train.mining": "batch_hard"},
    "semihard mining": {"train.mining": "semihard"},
    "supervised contrastive": {"loss": "supcon"},
    "multi-similarity loss": {"loss": "multisimilarity"},
    "margin 0.5": {"train.margin": 0.5},
    "lr 3e-3": {"train.lr": 0.003},
    "lr 3e-4": {"train.lr": 0.0003},
    "weight decay 1e-3": {"train.weight_decay": 0.001},
    "weight decay 1e-2": {"train.weight_decay": 0.01},
    "weight decay 1e-1": {"train.weight_decay": 0.1},
    "40 epochs": {"train.epochs": 40},
    "8 cached segments": {"train.cached_segments": 8},
    "means of 4 segments": {"train.segments_per_draw": 4},
    "means of 8 segments": {"train.segments_per_draw": 8},
    "means of 16 segments": {"train.segments_per_draw": 16},
    "L2-normalised segments": {"~l2": True},
    "ensemble of 3 seeds": {"~seeds": 3},
    "mixed with the trunk, 0.3": {"~mix": 0.3},
    "mixed with the trunk, 0.5": {"~mix": 0.5},
    "mixed with the trunk, 1.0": {"~mix": 1.0},
    "16 labels per batch": {"train.labels_per_batch": 16},
}


@dataclass(frozen=True)
class Fold:
    """One (repeat, fold) unit: training rows, held-out rows, quartets (q, 3) into the held-out
    rows and the odd one's position (q,)."""

    repeat: int
    fold: int
    rest: np.ndarray
    held: np.ndarray
    quartets: np.ndarray
    odd: np.ndarray


def folds_of(labels: np.ndarray, k: int, quartets: int, repeat: int, open_set: bool = False
             ) -> list[Fold]:
    """K label-stratified folds of `labels` (one int per track) and `quartets` quartets per held-out
    fold, all from the generator seeded by `repeat`. With `open_set` each label lies in one fold
    (at least two labels a fold), so a held-out fold asks only about labels training never saw."""
    rng = np.random.default_rng(repeat)
    fold = np.zeros(len(labels), int)
    if open_set:
        names = np.unique(labels)
        if len(names) < 2 * k:
            raise SystemExit(f"open-set folds need at least 2 labels a fold: {len(names)} labels, {k} folds")
        of_label = dict(zip(rng.permutation(names), np.arange(len(names)) % k))
        fold = np.array([of_label[c] for c in labels], int)
    for c in np.unique(labels) if not open_set else ():
        rows = rng.permutation(np.flatnonzero(labels == c))
        fold[rows] = (np.arange(len(rows)) + rng.integers(k)) % k
    out = []
    for f in range(k):
        held, rest = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        rows = draw_pairs_with_odd(labels[held], quartets, rng)      # (a, b, odd)
        order = rng.permuted(np.tile([0, 1, 2], (len(rows), 1)), axis=1)
        out.append(Fold(repeat, f, rest, held, np.take_along_axis(rows, order, 1),
                        np.argmax(order == 2, axis=1)))
    return out


def corrected_interval(diffs: np.ndarray, test_over_train: float, confidence: float = 0.95
                       ) -> tuple[float, float, float]:
    """(mean, low, high) of paired differences over repeated K-fold units, with the corrected
    resampled t-test's variance `(1/J + n_test/n_train) * s^2` (J units, t with J - 1 dof)."""
    diffs = np.asarray(diffs, float)
    j, mean = len(diffs), float(np.mean(diffs))
    if j < 2:
        return mean, math.nan, math.nan
    se = math.sqrt((1 / j + test_over_train) * float(np.var(diffs, ddof=1)))
    half = float(stats.t.ppf(0.5 + confidence / 2, j - 1)) * se
    return mean, mean - half, mean + half


def judgement_triplets(quartets: pd.DataFrame, ids: list[str]) -> np.ndarray:
    """(n, 3) positions into `ids` of (anchor, positive, negative): two triplets for each quartet
    (song1, song2, song3, odd) whose three songs are all in `ids`; the others are left out."""
    pos = {t: i for i, t in enumerate(ids)}
    inside = quartets[quartets[["song1", "song2", "song3"]].isin(set(pos)).all(axis=1)]
    trip = quartet_triplets(inside)
    return np.stack([trip[c].map(pos).to_numpy(np.int64) for c in ("anchor", "positive", "negative")],
                    axis=1).reshape(-1, 3)


def with_overrides(raw: dict, overrides: dict) -> config.Params:
    """The params of `raw` (params.yaml as loaded) with dotted-key overrides; `@key` names a key
    of the selected model's own settings (`models.<model>.key`)."""
    raw = copy.deepcopy(raw)
    model = overrides.get("model", raw["model"])
    for key, value in overrides.items():
        if key.startswith("@"):
            key = f"models.{model}.{key[1:]}"
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return config.from_dict(raw)


class Library:
    """The non-test tracks' labels and the stored trunk outputs of each checkpoint."""

    def __init__(self, features_dir: str, groundtruth_dir: str, tracks_csv: str, params: config.Params,
                 workdir: Path, judgements: pd.DataFrame | None = None):
        self.features_dir, self.params, self.workdir = features_dir, params, workdir
        self.judgements = judgements  # train on these quartets' triplets instead of the labels
        splits = groundtruth.read_splits(f"{groundtruth_dir}/splits.csv")
        tracks = self.tracks = ingest.read_tracks(tracks_csv, required=("track_id", "label"))
        label_of = dict(zip(tracks["track_id"], tracks["label"]))
        self._trunks: dict[str, library_features.TrunkRows] = {}
        self.fitted: dict[tuple, object] = {}  # (spec, repeat, fold, seed) -> train.fit's result
        self.ids: list[str] | None = None
        stored = self.trunk("MSD_musicnn")
        self.ids = [t for t in splits.loc[splits["split"] != "test", "track_id"] if t in stored]
        self.label_names = np.array([str(label_of[t]) for t in self.ids])
        self.labels = np.unique(self.label_names, return_inverse=True)[1].ravel()

    def trunk(self, checkpoint: str) -> library_features.TrunkRows:
        if checkpoint in self._trunks:
            return self._trunks[checkpoint]
        if library_features.has_trunk(self.features_dir, checkpoint):
            self._trunks[checkpoint] = library_features.load_trunk(self.features_dir, checkpoint)
        else:  # a network the selected model does not read: its outputs from the per-song store
            # (what the store lacks for the non-test tracks computed first: pools, flux, or all after a code change)
            print(f"{checkpoint}: reading its stored outputs from {self.params.compute.cache_dir}")
            tracks = self.tracks if self.ids is None else self.tracks[self.tracks["track_id"].isin(set(self.ids))]
            self._trunks[checkpoint] = library_features.export_trunk(tracks, self.params, checkpoint,
                                                                     self.workdir / checkpoint)
            lacking = [t for t in self.ids or [] if t not in self._trunks[checkpoint]]
            if lacking:
                raise SystemExit(f"{checkpoint}: the per-song store could not give {len(lacking)} of the "
                                 f"{len(self.ids)} non-test tracks (first: {lacking[0]})")
        return self._trunks[checkpoint]

    def track_means(self, checkpoint: str, rows: list[int], segment_emb=None) -> np.ndarray:
        """Mean over segments per track (`rows` into `ids`) of `segment_emb(trunk rows)`."""
        trunk = self.trunk(checkpoint)
        out = []
        for i in rows:
            x = np.asarray(trunk.array[trunk.rows(self.ids[i])], np.float32)
            out.append((segment_emb(x) if segment_emb else x).mean(axis=0))
        return np.stack(out)


def embeddings(lib: Library, spec, raw: dict, unit: Fold, workdir: Path) -> np.ndarray:
    """Track embeddings `(n_ids, d)` of every non-test track under a candidate trained on the
    unit's training folds (or the untrained outputs)."""
    everyone = list(range(len(lib.ids)))
    if isinstance(spec, tuple):
        _, ckpts, part = spec
        cols = slice(0, musicnn.PENULTIMATE_UNITS) if part == "penultimate" \
            else slice(musicnn.PENULTIMATE_UNITS, None)
        return np.concatenate([lib.track_means(c, everyone, lambda x: x[:, cols])
                               for c in ckpts.split("+")], axis=1)
    spec = dict(spec)
    l2, seeds, mix = spec.pop("~l2", False), spec.pop("~seeds", 1), float(spec.pop("~mix", 0.0))
    if seeds > 1:
        return np.mean([_trained(lib, spec, raw, unit, workdir / str(s), 1000 * s + unit.repeat, l2, mix)
                        for s in range(seeds)], axis=0)
    return _trained(lib, spec, raw, unit, workdir, unit.repeat, l2, mix)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _trained(lib: Library, spec: dict, raw: dict, unit: Fold, workdir: Path, seed: int,
             l2: bool, mix: float = 0.0) -> np.ndarray:
    everyone = list(range(len(lib.ids)))
    judged = lib.judgements is not None
    params = with_overrides(raw, {**spec, "seed": seed, **({"train.sampler": "triplets"} if judged else {})})
    ckpt = library_features.trunk_checkpoint(params)
    if ckpt is None or not library_features.trains_on_trunk(params):
        raise SystemExit(f"{spec}: the candidate must train on a stored frozen trunk")
    trunks = lib.trunk(ckpt)
    ids = [lib.ids[i] for i in unit.rest]
    labels = lib.labels[unit.rest]
    if judged:  # one label for all: the sampler draws the judgements' triplets
        labels, triplets = np.zeros(len(ids), np.int64), judgement_triplets(lib.judgements, ids)
    else:
        labels, triplets = np.unique(labels, return_inverse=True)[1].ravel().astype(np.int64), np.zeros((0, 3), np.int64)
    data = train.TrainData(spectra=None, views=np.zeros((0, 1, 1), np.float32),
                           view_rows=[np.zeros(0, int)] * len(ids), train_tracks=ids,
                           train_labels=labels, triplets=triplets, trunks=trunks)
    key = (json.dumps(spec, sort_keys=True), unit.repeat, unit.fold, seed)
    if key not in lib.fitted:  # candidates that differ only in `~mix` or `~l2` share one fit
        with contextlib.redirect_stdout(io.StringIO()):  # a line per epoch and fold: too many to read
            lib.fitted[key] = train.fit(params, data, workdir, progress=False)
    result = lib.fitted[key]

    if mix:  # the trunk standardised by its training segments' mean and deviation
        seen = np.concatenate([np.asarray(trunks.array[trunks.rows(t)], np.float64) for t in ids])
        mean, dev = seen.mean(axis=0), np.maximum(seen.std(axis=0), 1e-6)

    def segment_emb(x: np.ndarray) -> np.ndarray:
        e = embed.apply_head(result.model, x)
        if mix:
            return np.concatenate([unit_rows(e), mix * unit_rows((x - mean) / dev)], axis=1)
        return unit_rows(e) if l2 else e

    return lib.track_means(ckpt, everyone, segment_emb)


def score(emb: np.ndarray, unit: Fold) -> dict:
    """Cosine (no scaler) accuracy and every grid cell's accuracy of a unit's quartets."""
    grid = evaluate.grid(emb[unit.rest], emb[unit.held], unit.quartets, unit.odd, bootstrap=1)
    cells = {f"{r['distance']}/{r['scaler']}": float(r["accuracy"]) for r in grid}
    cells["cosine/none"] = float(evaluate.odd_one_out_accuracy(emb[unit.held], unit.quartets, unit.odd, "cosine"))
    return cells


def table(results: dict[str, list[dict]], reference: str, test_over_train: float) -> list[dict]:
    """Per candidate: cosine mean, best cell and its mean, paired difference from the reference."""
    rows = []
    ref = np.array([u["cosine/none"] for u in results[reference]]) if reference in results else None
    for name, units in results.items():
        cos = np.array([u["cosine/none"] for u in units])
        grid_cells = [c for c in units[0] if c != "cosine/none"]
        best = max(grid_cells, key=lambda c: np.mean([u[c] for u in units]))
        row = {"candidate": name, "cosine": float(cos.mean()), "best_cell": best,
               "best_cell_accuracy": float(np.mean([u[best] for u in units])), "units": len(units)}
        if ref is not None and name != reference:
            mean, low, high = corrected_interval(cos - ref, test_over_train)
            row.update(diff=mean, diff_low=low, diff_high=high, wins=int((cos > ref).sum()))
        rows.append(row)
    return rows


def print_table(rows: list[dict], reference: str) -> None:
    print(f"\n{'candidate':34s} {'cosine':>7s} {'best cell':>27s}   paired diff vs {reference} (cosine) [95% CI]")
    for r in rows:
        diff = "reference" if "diff" not in r else (
            f"{r['diff']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}] wins {r['wins']}/{r['units']}"
            + ("  BETTER" if r["diff_low"] > 0 else "  worse" if r["diff_high"] < 0 else ""))
        if "diff" not in r and r["candidate"] != reference:
            diff = ""
        print(f"{r['candidate']:34s} {r['cosine']:7.3f} {r['best_cell']:>21s} {r['best_cell_accuracy']:.3f}   {diff}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="data/features")
    ap.add_argument("--groundtruth", default="data/groundtruth")
    ap.add_argument("--tracks", default="data/library/tracks.csv")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quartets", type=int, default=600, help="per held-out fold")
    ap.add_argument("--only", nargs="+", help="candidates to run (default: all)")
    ap.add_argument("--reference", default="defaults")
    ap.add_argument("--out", help="write the table and per-unit scores here (JSON)")
    ap.add_argument("--reuse", nargs="+", help="JSON files of --out whose candidates need no rerun")
    ap.add_argument("--judgements", help="a quartet CSV (song1,song2,song3,odd): train on its judgements, not the labels")
    ap.add_argument("--open-set", action="store_true",
                    help="folds of whole labels: each held-out fold's labels are unseen in training")
    ap.add_argument("--first-repeat", type=int, default=0,
                    help="seed of the first repeat: new units for a study that confirms a choice made on others")
    ap.add_argument("--pool", nargs="+", metavar="JSON",
                    help="no training: the table over the units of these --out files together (e.g. one per library)")
    ap.add_argument("--list", action="store_true", help="list the candidates and exit")
    args = ap.parse_args()
    if args.list:
        for name, spec in CANDIDATES.items():
            print(f"{name:34s} {spec}")
        return
    if args.pool:
        pooled(args.pool, args.reference, args.only)
        return
    wanted = args.only or list(CANDIDATES)
    unknown = [n for n in wanted if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {unknown}; see --list")
    raw = yaml.safe_load(Path(args.params).read_text())
    judgements = None
    if args.judgements:
        judgements = pd.read_csv(args.judgements, dtype=str, keep_default_na=False)
        if list(judgements.columns[:4]) != ["song1", "song2", "song3", "odd"]:
            raise SystemExit(f"{args.judgements}: expected the columns song1,song2,song3,odd, "
                             f"found {list(judgements.columns)}")
    with tempfile.TemporaryDirectory(prefix="heads-") as tmp_root:  # another network's exported outputs
        study(args, wanted, raw, Library(args.features, args.groundtruth, args.tracks, config.from_dict(raw),
                                         Path(tmp_root), judgements))


def study(args: argparse.Namespace, wanted: list[str], raw: dict, lib: Library) -> None:
    """Score every wanted candidate on every unit (or reuse earlier scores), print the table."""
    first = getattr(args, "first_repeat", 0)
    units = [u for r in range(first, first + args.repeats)
             for u in folds_of(lib.labels, args.folds, args.quartets, r, getattr(args, "open_set", False))]
    print(f"{len(lib.ids)} non-test tracks, {len(np.unique(lib.labels))} labels; {args.repeats} x "
          f"{args.folds}-fold cross-validation, {len(units[0].quartets)} quartets per held-out fold")
    design = {"folds": args.folds, "repeats": args.repeats, "quartets": args.quartets,
              "tracks": len(lib.ids), "labels": int(len(np.unique(lib.labels)))}
    if first:
        design["first_repeat"] = first
        print(f"repeats {first} to {first + args.repeats - 1}: units no earlier study of the defaults used")
    if getattr(args, "open_set", False):
        design["open_set"] = True
        print("open set: each held-out fold holds whole labels that its training folds never saw")
    if lib.judgements is not None:
        inside = int(lib.judgements[["song1", "song2", "song3"]].isin(set(lib.ids)).all(axis=1).sum())
        print(f"trained on judgements alone: {inside} of {len(lib.judgements)} quartets lie in the "
              "non-test tracks; each unit trains on those inside its training folds")
        design["judgements"] = getattr(args, "judgements", None)
    results: dict[str, list[dict]] = {}
    for path in args.reuse or []:  # units of candidates scored before, on the same design
        old = json.loads(Path(path).read_text())
        if old["design"] != design:
            raise SystemExit(f"{path}: made with {old['design']}, not {design}")
        results.update({n: u for n, u in old["units"].items() if n in wanted})
    test_over_train = 1 / (args.folds - 1)
    for name in wanted:
        if name in results:
            continue
        t0 = time.perf_counter()
        scored = []
        for unit in units:
            with tempfile.TemporaryDirectory() as tmp:
                emb = embeddings(lib, CANDIDATES[name], raw, unit, Path(tmp))
            scored.append(score(emb, unit))
        results[name] = scored
        cos = np.mean([u["cosine/none"] for u in scored])
        print(f"  {name}: cosine {cos:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if args.out:  # after each candidate: a long study stopped early keeps what it scored
            rows = table(results, args.reference, test_over_train)
            Path(args.out).write_text(json.dumps({"design": design, "reference": args.reference,
                                                  "table": rows, "units": results}, indent=1))
    print_table(table({n: results[n] for n in wanted}, args.reference, test_over_train), args.reference)


def pooled(paths: list[str], reference: str, only: list[str] | None = None) -> list[dict]:
    """The table over the units of several studies together (`--out` files of the same folds, on
    different libraries or seeds), for the candidates that every study scored; printed and returned."""
    studies = [json.loads(Path(p).read_text()) for p in paths]
    folds = {s["design"]["folds"] for s in studies}
    if len(folds) != 1:
        raise SystemExit(f"{', '.join(paths)}: made with different numbers of folds {sorted(folds)}")
    names = [n for n in studies[0]["units"] if all(n in s["units"] for s in studies) and (not only or n in only)]
    if reference not in names:
        raise SystemExit(f"the reference '{reference}' is not scored in every one of {', '.join(paths)}")
    results = {n: [u for s in studies for u in s["units"][n]] for n in names}
    sizes = ", ".join(f"{s['design']['tracks']} tracks" for s in studies)
    print(f"pooled: {len(results[reference])} units of {len(paths)} studies ({sizes})")
    rows = table(results, reference, 1 / (folds.pop() - 1))
    print_table(rows, reference)
    return rows


if __name__ == "__main__":
    main()
