"""Quartets kept by the hash split and by the partition, on two designs of annotated quartets
(and on a real library's quartets.csv when given).

    python benchmarks/splits.py                       # the two designs, 212 songs, 3000 quartets
    python benchmarks/splits.py --library /tmp/devmusic   # also tracks.csv + quartets.csv there

random: each quartet is three songs drawn uniformly. clustered: the songs carry 12 labels in
4 clusters of 3; a quartet draws a cluster, two songs of one of its labels and one of another
(the odd one), as annotators asked about songs of a few related styles would see.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from songspace import groundtruth as gt
from songspace import ingest

SONGS, QUARTETS, LABELS, CLUSTER_LABELS = 212, 3000, 12, 3


def design_tracks(n_songs: int = SONGS, n_labels: int = LABELS) -> pd.DataFrame:
    """n_songs tracks, labels assigned round-robin, each track its own group."""
    ids = [f"song{i:04d}.wav" for i in range(n_songs)]
    return pd.DataFrame({"track_id": ids, "path": ids, "group": ids,
                         "label": [f"l{i % n_labels:02d}" for i in range(n_songs)]})


def random_quartets(tracks: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    ids = tracks["track_id"].to_numpy()
    three = np.array([rng.choice(len(ids), 3, replace=False) for _ in range(n)])
    return _frame(ids, three, three[np.arange(n), rng.integers(3, size=n)])


def clustered_quartets(tracks: pd.DataFrame, n: int, rng: np.random.Generator,
                       cluster_labels: int = CLUSTER_LABELS) -> pd.DataFrame:
    ids, labels = tracks["track_id"].to_numpy(), tracks["label"].to_numpy()
    names = np.unique(labels)
    clusters = names.reshape(-1, cluster_labels)
    rows, odd = [], []
    for _ in range(n):
        pair_label, odd_label = rng.choice(clusters[rng.integers(len(clusters))], 2, replace=False)
        a, b = rng.choice(np.flatnonzero(labels == pair_label), 2, replace=False)
        o = rng.choice(np.flatnonzero(labels == odd_label))
        rows.append(rng.permutation([a, b, o]))
        odd.append(o)
    return _frame(ids, np.array(rows), np.array(odd))


def _frame(ids: np.ndarray, three: np.ndarray, odd: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"song1": ids[three[:, 0]], "song2": ids[three[:, 1]],
                         "song3": ids[three[:, 2]], "odd": ids[odd]})


def compare(tracks: pd.DataFrame, quartets: pd.DataFrame, seed: int = 42,
            test_fraction: float = 0.3, val_fraction: float = 0.15) -> dict:
    """Kept quartets per split (and tracks per split) under the hash split and the partition."""
    hashed = gt.assign_splits(tracks, seed, test_fraction, val_fraction)
    t0 = time.perf_counter()
    parted = gt.partition_splits(tracks, quartets, hashed, seed, test_fraction, val_fraction)
    seconds = time.perf_counter() - t0
    out = {}
    for name, splits in (("hash", hashed), ("partition", parted)):
        j = gt.judgement_counts(quartets, splits)
        tracks_per = splits["split"].value_counts()
        out[name] = {s: (j[s]["kept"], int(tracks_per.get(s, 0))) for s in gt.SPLITS}
        out[name]["all"] = (j["all"]["kept"], len(splits))
    out["seconds"] = seconds
    return out


def _print(title: str, n_quartets: int, result: dict) -> None:
    print(f"{title}: {n_quartets} distinct quartets; kept quartets (tracks) per split; "
          f"partition search {result['seconds']:.1f} s")
    for name in ("hash", "partition"):
        r = result[name]
        print(f"  {name:<9} " + "  ".join(f"{s} {r[s][0]:>4} ({r[s][1]})" for s in gt.SPLITS)
              + f"  all {r['all'][0]:>4} of {n_quartets} ({100 * r['all'][0] / n_quartets:.0f}%)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", type=Path, help="a folder with tracks.csv and quartets.csv")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tracks = design_tracks()
    for name, make in (("random", random_quartets), ("clustered", clustered_quartets)):
        q = make(tracks, QUARTETS, np.random.default_rng(args.seed))
        q = q.drop_duplicates().reset_index(drop=True)
        _print(f"{name} ({SONGS} songs)", len(q), compare(tracks, q))
    if args.library:
        # the library's own files, read as the pipeline reads a user's labels and judgements
        lib = ingest.read_labels_csv(args.library / "tracks.csv")
        lib = lib.assign(track_id=lib["path"])
        notes = gt.parse_quartets(gt.read_quartet_rows(args.library / "quartets.csv"), gt.track_lookup(lib))
        q = notes.quartets[list(gt.QUARTET_COLUMNS)]
        _print(f"{args.library} ({len(lib)} songs)", len(q), compare(lib, q))


if __name__ == "__main__":
    main()
