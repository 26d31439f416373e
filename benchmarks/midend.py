"""Would the head gain from musicnn's mid-end features? A paired cross-validation of heads over the
MSD network's mid-end mean/max pools (753 + 753 values per segment, the layer below the 200-unit
penultimate one), against the defaults on the same units (`benchmarks/heads.py`'s design).

    python -m benchmarks.midend --out /tmp/midend.json               # in a project after `dvc repro`
    python -m benchmarks.midend --open-set --out /tmp/midend_open.json

The pipeline's per-song store keeps the penultimate layer and the band statistics only, so this
study runs the network once more over every non-test track's segments (the same segments: each
track's stored columns are checked against the store's; ~3 minutes for 113 tracks on 2
cores, kept in `--rows` and reread while it holds exactly these segments). The candidates' heads are the defaults' (batch-norm
standardisation and a linear layer, or an MLP) built over the wider rows; everything else is
`train.fit` on the defaults' params, as in `benchmarks/heads.py`.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from benchmarks import heads
from songspace import config, library_features, models, persong
from songspace.models import musicnn

P, M, B = musicnn.PENULTIMATE_UNITS, musicnn.POOLED_FEATURES, 2 * musicnn.N_MELS


class PoolWorker(persong.SongWorker):
    """The per-song worker with wider trunk rows: penultimate, mid-end mean and max pools, band
    mean and std, `(segments, 200 + 753 + 753 + 192)`."""

    def _trunk(self, ckpt: str, segs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(segs).unsqueeze(1).to(self.device)
        with torch.no_grad():
            out = self.nets[ckpt](x)
            bands = x.flatten(1, -2)
            rows = torch.cat([out.penultimate, out.mean_pool, out.max_pool, bands.mean(-1),
                              bands.std(-1, correction=0)], dim=1)
        return rows.cpu().numpy().astype(np.float32, copy=False)


STORED = np.r_[0:P, P + 2 * M:P + 2 * M + B]  # the wide rows' columns that the per-song store keeps


def wide_rows(lib: heads.Library, params: config.Params, path: Path) -> library_features.TrunkRows:
    """The wide rows of every non-test track: read from `path` when it holds exactly the stored
    trunk's segments of these tracks, else computed (and written there)."""
    stored = lib.trunk("MSD_musicnn")
    if path.exists():
        try:
            with np.load(path) as z:
                index = pd.DataFrame({"track_id": z["track_id"].astype(str), "segment": z["segment"],
                                      "offset_s": z["offset_s"]})
                wide = library_features.TrunkRows(z["array"], index.assign(row=np.arange(len(index))), "MSD_musicnn")
        except (OSError, ValueError, KeyError) as err:
            print(f"{path}: not a file of wide rows ({err}): computing them again")
        else:
            if sorted(wide.track_ids) == sorted(lib.ids) and all(_same(wide, stored, t) for t in lib.ids):
                return wide
            print(f"{path}: made for other tracks or segments than the stored trunk's: computing it again")
    worker = PoolWorker(persong.Plan(params.features, (), ("MSD_musicnn",), False))
    where = dict(zip(lib.tracks["track_id"].astype(str), lib.tracks["path"].astype(str)))
    arrays, index, t0 = [], [], time.perf_counter()
    for n, track in enumerate(lib.ids):
        got = worker.one({"key": track, "path": where[track], "need": ["trunk-MSD_musicnn"]})
        if got["error"]:
            raise SystemExit(f"{where[track]}: {got['error']}")
        arrays.append(got["arrays"]["trunk-MSD_musicnn"]["rows"])
        index += [(track, s, float(o)) for s, o in enumerate(got["arrays"]["trunk-MSD_musicnn"]["offsets"])]
        if n % 20 == 19:
            print(f"  {n + 1}/{len(lib.ids)} tracks ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = pd.DataFrame(index, columns=["track_id", "segment", "offset_s"])
    wide = library_features.TrunkRows(np.concatenate(arrays), table.assign(row=np.arange(len(table))), "MSD_musicnn")
    for track in lib.ids:
        if not _same(wide, stored, track):
            raise SystemExit(f"{where[track]}: its recomputed segments differ from the stored trunk's")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, array=wide.array, **{c: table[c].to_numpy() for c in table.columns})
    return wide


def _same(wide: library_features.TrunkRows, stored: library_features.TrunkRows, track: str) -> bool:
    """Whether `track`'s wide rows extend its stored rows (same segments, same stored columns)."""
    a = np.asarray(wide.array[wide.rows(track)], np.float32)
    b = np.asarray(stored.array[stored.rows(track)], np.float32)
    return a.shape == (len(b), P + 2 * M + B) and np.allclose(a[:, STORED], b, atol=1e-3)


VARIANTS = {  # name -> the columns of the wide rows the head reads
    "mid-end pools + bands": np.r_[P:P + 2 * M + B],
    "penultimate + mid-end pools + bands": np.r_[0:P + 2 * M + B],
    "mid-end mean pool + bands": np.r_[P:P + M, P + 2 * M:P + 2 * M + B],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="data/midend_rows.npz", help="the wide rows, computed once")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quartets", type=int, default=600)
    ap.add_argument("--open-set", action="store_true")
    ap.add_argument("--out", help="the table and per-unit scores (JSON)")
    args = ap.parse_args()
    raw = yaml.safe_load(Path(config.PARAMS_FILE).read_text())
    params = config.from_dict(raw)
    lib = heads.Library("data/features", "data/groundtruth", "data/library/tracks.csv", params,
                        Path(tempfile.mkdtemp(prefix="midend-")))
    wide = wide_rows(lib, params, Path(args.rows))
    width = [0]

    def build(p, n_mels, frames):  # the defaults' head over `width[0]` trunk values
        model = musicnn.build_musicnn(p, n_mels, frames)
        if width[0]:
            layers: list[nn.Module] = [nn.BatchNorm1d(width[0], affine=False)]
            if p.head_hidden:
                layers += [nn.Linear(width[0], p.head_hidden), nn.ReLU()]
            model.head, model.trunk_dim = nn.Sequential(*layers, nn.Linear(p.head_hidden or width[0], p.embedding_dim)), width[0]
        return model

    models.ARCHS["musicnn"] = build
    units = [u for r in range(args.repeats) for u in heads.folds_of(lib.labels, args.folds, args.quartets, r, args.open_set)]
    results: dict[str, list[dict]] = {}

    def run(name: str, spec: dict) -> None:
        t0, scored = time.perf_counter(), []
        for unit in units:
            with tempfile.TemporaryDirectory() as tmp:
                scored.append(heads.score(heads.embeddings(lib, spec, raw, unit, Path(tmp)), unit))
        results[name] = scored
        print(f"  {name}: cosine {np.mean([u['cosine/none'] for u in scored]):.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    run("defaults", {})
    for name, cols in VARIANTS.items():
        lib.fitted.clear()  # the fits are keyed by params alone: these rows are not the stored ones
        lib._trunks["MSD_musicnn"] = library_features.TrunkRows(  # the head's input: these columns
            np.ascontiguousarray(wide.array[:, cols]), wide.index, "MSD_musicnn")
        width[0] = len(cols)
        run(name, {})
        run(f"{name}, MLP 256", {"@head_hidden": 256})
    rows = heads.table(results, "defaults", 1 / (args.folds - 1))
    heads.print_table(rows, "defaults")
    if args.out:
        design = {"folds": args.folds, "repeats": args.repeats, "quartets": args.quartets, "tracks": len(lib.ids),
                  "labels": int(len(np.unique(lib.labels))), "open_set": args.open_set}
        Path(args.out).write_text(json.dumps({"design": design, "table": rows, "units": results}, indent=1))


if __name__ == "__main__":
    main()
