"""A study of more per-segment statistics beside the defaults' trunk, outside the per-song store:
each candidate appends its columns to the stored trunk rows of the non-test tracks, and the defaults'
linear head (or an MLP head of 256 units) is trained on them by `benchmarks.heads`'s units and
`train.fit`. Run in a project after `dvc repro`:

    python -m benchmarks.segment_stats flux,pct,loud,mod,flux+pct+loud+mod --out /tmp/stats.json
    python -m benchmarks.heads --pool /tmp/stats_lib1.json /tmp/stats_lib2.json

Statistics of each segment's musicnn log-mel `(96 bands, 187 frames)`: `flux` each band's mean
absolute change from one frame to the next (96); `flux4` the same over 4 frames (96); `fluxsd` the
standard deviation of those changes (96); `pct` each band's 10th and 90th percentiles (192); `loud`
the mean band's deviation, 10th/50th/90th percentiles and mean absolute change (5); `mod` a
modulation spectrum: 8 groups of 12 bands, the log magnitude of their time series in 8 bands from
0.3 to 20 Hz (64). A name ending in `+mlp` trains the MLP head.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from torch import nn

from benchmarks import heads
from songspace import audio, config, features, library_features, persong
from songspace.models import musicnn

EDGES = np.array([0.3, 0.7, 1.2, 2, 3, 5, 8, 12, 20])
FRAMES_PER_SECOND = 16000 / 256


def statistics(segs: np.ndarray) -> dict[str, np.ndarray]:
    n, _, f = segs.shape
    d = np.abs(np.diff(segs, axis=2))
    loud = segs.mean(1)
    groups = segs.reshape(n, 8, 12, f).mean(2)
    spec = np.abs(np.fft.rfft(groups - groups.mean(2, keepdims=True), axis=2))
    freqs = np.fft.rfftfreq(f, 1 / FRAMES_PER_SECOND)
    mods = [spec[:, :, (freqs >= lo) & (freqs < hi)].mean(2) for lo, hi in zip(EDGES[:-1], EDGES[1:])]
    out = {"flux": d.mean(2), "flux4": np.abs(segs[:, :, 4:] - segs[:, :, :-4]).mean(2), "fluxsd": d.std(2),
           "pct": np.concatenate([np.percentile(segs, 10, axis=2), np.percentile(segs, 90, axis=2)], 1),
           "loud": np.stack([loud.std(1), *np.percentile(loud, [10, 50, 90], axis=1),
                             np.abs(np.diff(loud, axis=1)).mean(1)], 1),
           "mod": np.log1p(np.stack(mods, 2).reshape(n, 64))}
    return {k: v.astype(np.float32) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", help="comma-separated: blocks joined by '+', optionally ending in '+mlp'")
    ap.add_argument("--out", required=True)
    ap.add_argument("--first-repeat", type=int, default=0)
    ap.add_argument("--no-defaults", action="store_true", help="leave out the defaults (scored by an earlier run)")
    args = ap.parse_args()
    raw = yaml.safe_load(Path(config.PARAMS_FILE).read_text())
    params = config.from_dict(raw)
    lib = heads.Library("data/features", "data/groundtruth", "data/library/tracks.csv", params,
                        Path(tempfile.mkdtemp(prefix="stats-")))
    trunk = lib.trunk("MSD_musicnn")
    path_of = dict(zip(lib.tracks["track_id"], lib.tracks["path"]))
    fe = features.frontend("musicnn", params.features)
    t0, stats = time.perf_counter(), {}
    for t in lib.ids:  # the same segments as the store's trunk rows
        spec = fe.spectrogram(audio.load(path_of[t], fe.sample_rate), params.features).T.astype(features.STORE_DTYPE)
        windows, _ = persong._one_song_spectra(spec, fe, params.features, "song", False).segments(["song"])
        segs = np.asarray(windows[:], np.float32)
        assert len(segs) == len(trunk.rows(t)), t
        stats[t] = statistics(segs)
    print(f"statistics of {len(stats)} tracks in {time.perf_counter() - t0:.0f} s", flush=True)

    extra = {"dim": 0}  # the head's trunk grows by the candidate's columns (the `mid_end` key marks it)
    plain_init = musicnn.MusicnnEmbedding.__init__

    def init(self, embedding_dim=128, freeze="none", lr_factor=1.0, head_hidden=0, band_stats=False,
             others=0, mid_end=False, band_flux=False):
        plain_init(self, embedding_dim, freeze, lr_factor, head_hidden, band_stats, others, mid_end, band_flux)
        if mid_end:  # the head built for the pools replaced by one for the candidate's columns
            self.trunk_dim += extra["dim"] - 2 * musicnn.POOLED_FEATURES
            layers = [nn.BatchNorm1d(self.trunk_dim, affine=False)]
            layers += [nn.Linear(self.trunk_dim, head_hidden), nn.ReLU()] if head_hidden else []
            self.head = nn.Sequential(*layers, nn.Linear(head_hidden or self.trunk_dim, embedding_dim))
    musicnn.MusicnnEmbedding.__init__ = init

    units = [u for r in range(args.first_repeat, args.first_repeat + 2) for u in heads.folds_of(lib.labels, 5, 600, r)]
    design = {"folds": 5, "repeats": 2, "quartets": 600, "tracks": len(lib.ids), "labels": int(len(np.unique(lib.labels)))}
    if args.first_repeat:
        design["first_repeat"] = args.first_repeat
    wanted = ([] if args.no_defaults else ["defaults"]) + args.candidates.split(",")
    results: dict[str, list[dict]] = {}
    for name in wanted:
        t0, spec = time.perf_counter(), {}
        if name != "defaults":
            blocks = name.removesuffix("+mlp").split("+")
            spec = {"@mid_end": True, **({"@head_hidden": 256} if name.endswith("+mlp") else {})}
            cols = np.zeros((len(trunk.array), sum(stats[lib.ids[0]][b].shape[1] for b in blocks)), np.float32)
            for t in lib.ids:
                cols[trunk.rows(t)] = np.concatenate([stats[t][b] for b in blocks], 1)
            extra["dim"] = cols.shape[1]
            lib._trunks["MSD_musicnn~midend"] = library_features.TrunkRows(
                np.concatenate([np.asarray(trunk.array, np.float32), cols], 1), trunk.index, "MSD_musicnn~midend")
            lib.fitted.clear()
        scored = []
        for unit in units:
            with tempfile.TemporaryDirectory() as tmp:
                scored.append(heads.score(heads.embeddings(lib, spec, raw, unit, Path(tmp)), unit))
        results[name] = scored
        print(f"  {name}: cosine {np.mean([u['cosine/none'] for u in scored]):.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        Path(args.out).write_text(json.dumps({"design": design, "reference": "defaults", "units": results}, indent=1))
    if "defaults" in results:
        heads.print_table(heads.table(results, "defaults", 1 / 4), "defaults")


if __name__ == "__main__":
    main()
