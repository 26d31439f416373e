"""How smooth `songspace path` is: the mean distance between consecutive songs of `path A B`
against the plain alternative, A's nearest songs followed by B's (reversed), on a built index.

    PYTHONPATH=src python -m benchmarks.paths --index data/index --model data/models/best.pt --pairs 20 -n 12

For each of `--pairs` random pairs (A, B) (seeded), both lists have n songs from A to B: the
path, and A, A's (n - 2) / 2 nearest, B's nearest reversed, B (songs in both taken once). Both
are scored by the index's own distance between consecutive songs; the table gives each pair and
the means, and how often the path's steps are the smaller.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from songspace import distances, errors, playlists
from songspace.index.api import Library


def mean_step(space: playlists.Space, rows: list[int]) -> float:
    """Mean distance between consecutive songs of a list of rows."""
    v = space.vectors[rows]
    return float(np.mean(distances.rowwise(space.distance, v[:-1], v[1:], **space.ctx)))


def neighbour_list(space: playlists.Space, a: int, b: int, n: int) -> list[int]:
    """A, A's nearest, B's nearest reversed, B: n songs, none twice."""
    half = (n - 2) // 2
    order_a = [int(i) for i in np.argsort(space.distances_to(space.vectors[a]), kind="stable") if i not in (a, b)]
    order_b = [int(i) for i in np.argsort(space.distances_to(space.vectors[b]), kind="stable") if i not in (a, b)]
    near_a = order_a[:half]
    near_b = [i for i in order_b if i not in near_a][: n - 2 - half]
    return [a, *near_a, *near_b[::-1], b]


def compare(space: playlists.Space, pairs: int, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(pairs):
        a, b = (int(x) for x in rng.choice(len(space.ids), 2, replace=False))
        path = [space.row(e.track_id) for e in playlists.path(space, space.ids[a], space.ids[b], n)]
        out.append({"from": space.ids[a], "to": space.ids[b], "path": mean_step(space, path),
                    "neighbours": mean_step(space, neighbour_list(space, a, b, n)), "songs": len(path)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default="data/index")
    ap.add_argument("--model", default="data/models/best.pt")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("-n", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    lib = Library.open(args.index, args.model)
    rows = compare(lib.space, args.pairs, args.n, args.seed)
    print(f"{lib.index.n_tracks} tracks, {lib.index.distance} after {lib.index.scaler_name}; "
          f"{args.pairs} pairs, {args.n} songs each")
    print(f"{'from':<40} {'to':<40} {'path':>8} {'A+B nn':>8}")
    for r in rows:
        print(f"{r['from'][:40]:<40} {r['to'][:40]:<40} {r['path']:8.4f} {r['neighbours']:8.4f}")
    p, q = np.array([r["path"] for r in rows]), np.array([r["neighbours"] for r in rows])
    print(f"mean step: path {p.mean():.4f}, A's then B's neighbours {q.mean():.4f} "
          f"(ratio {p.mean() / q.mean():.3f}); the path's steps smaller in {int((p < q).sum())} of {len(rows)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "paths"))
