"""The work done once per song: decode, log-mels, the pretrained networks' outputs, baseline
statistics. Each result is a *product* of the per-song store (`songstore`), keyed by the song's
audio and by exactly the settings and code that shape it:

| product                 | per song                                                      | shaped by                                   |
|-------------------------|---------------------------------------------------------------|---------------------------------------------|
| `logmel-db`             | the whole track's `db` log-mel `(frames, n_mels)` float16     | features.{sample_rate, n_fft, hop_length, n_mels, f_min, f_max} |
| `logmel-musicnn`        | the whole track's musicnn log-mel `(frames, 96)` float16      | musicnn's fixed front end                   |
| `handcrafted`           | log-mel and MFCC statistics of the `db` segments              | all of `features`                           |
| `trunk-<checkpoint>`    | per segment: the pretrained network's 200-unit penultimate layer and each mel band's mean and std `(segments, 392)` float32 | features.{segment_hop_seconds, max_segments}, the weights |
| `pools-<checkpoint>`    | per segment: the network's mid-end features, mean then max over time `(segments, 1506)` float32; only for a model with `mid_end` | the same as `trunk-<checkpoint>` |
| `flux`                  | per segment: each musicnn mel band's mean absolute change from frame to frame `(segments, 96)` float32; only for a model with `band_flux` | features.{segment_hop_seconds, max_segments} |

With `data.labels: none` the last four are also kept for each half of the track (`-halves`).
Whole-track log-mels are kept only when the model trains on crops anywhere in the track (a
model whose backbone is not frozen); otherwise only the segments' outputs are kept, about
26 KB per song and network.

Every song is computed alone, its segments in one batch, with one torch thread: its results do
not depend on which other songs are computed with it, or where.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from songspace import audio, features, frontends, songstore
from songspace.config import FeatureParams
from songspace.groundtruth import halves as halves_mod
from songspace.models import musicnn, musicnn_weights

CODE = songstore.code_files("audio", "features", "frontends", "persong")
NETWORK_CODE = songstore.code_files("models.musicnn", "models.musicnn_weights", "models.tfcheckpoint")
BASELINE_CODE = songstore.code_files("evaluate.baselines")


@dataclass(frozen=True)
class Plan:
    """Which products the pipeline needs for every song."""

    features: FeatureParams
    logmels: tuple[str, ...] = ()                           # front ends whose whole log-mel is kept
    networks: tuple[str, ...] = musicnn.CHECKPOINTS         # checkpoints whose segment outputs are kept
    halves: bool = False                                    # also each half's (data.labels: none)
    pools: tuple[str, ...] = ()                             # checkpoints whose mid-end pools are kept
    flux: bool = False                                      # each segment's band flux is kept

    def products(self, root: str | Path) -> dict[str, songstore.Product]:
        """name -> its `songstore.Product` under `root`."""
        fp = dataclasses.asdict(self.features)
        spectral = {k: fp[k] for k in ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max")}
        grid = {k: fp[k] for k in ("segment_hop_seconds", "max_segments")}
        out = {}
        for fe in self.logmels:
            out[f"logmel-{fe}"] = songstore.Product(root, f"logmel-{fe}", spectral if fe == "db" else {},
                                                    CODE + (NETWORK_CODE if fe == "musicnn" else ()))
        for part in self.parts:
            out[f"handcrafted{part}"] = songstore.Product(root, f"handcrafted{part}", fp, CODE + BASELINE_CODE)
            if self.flux:
                out[f"flux{part}"] = songstore.Product(root, f"flux{part}", grid, CODE + NETWORK_CODE)
            for ckpt in self.networks:
                files = tuple(str(p) for p in sorted(musicnn_weights.checkpoint_dir(ckpt).iterdir()) if p.is_file())
                for kind in ("trunk",) + (("pools",) if ckpt in self.pools else ()):
                    out[f"{kind}{part}-{ckpt}"] = songstore.Product(
                        root, f"{kind}{part}-{ckpt}", {**grid, "checkpoint": ckpt}, CODE + NETWORK_CODE, files)
        return out

    @property
    def parts(self) -> tuple[str, ...]:
        return ("", "-halves") if self.halves else ("",)


def _one_song_spectra(spec: np.ndarray, fe: frontends.Frontend, params: FeatureParams,
                      track_id: str, halves: bool) -> features.Spectra:
    """A library of one track (and its halves): the same segments as the whole library's."""
    table = pd.DataFrame([{"track_id": track_id, "start": 0, "frames": len(spec)}])
    spectra = features.Spectra(spec, table, fe, params)
    return halves_mod.with_halves(spectra, [track_id]) if halves else spectra


def _part_ids(track_id: str, part: str) -> list[str]:
    return list(halves_mod.half_ids(track_id)) if part else [track_id]


class SongWorker:
    """Computes the missing products of songs (`compute.map_songs`'s worker): built once per
    process, it loads each pretrained network once."""

    def __init__(self, plan: Plan, device: str = "cpu"):
        self.plan, self.device = plan, torch.device(device)
        self.nets = {c: musicnn.load_pretrained(c, n_tags=None).eval().to(self.device) for c in plan.networks}

    def __call__(self, batch: list[dict]) -> list[dict]:
        return [self.one(item) for item in batch]

    def one(self, item: dict) -> dict:
        """item: key, path, need (product names). -> key, arrays {product: {name: array}}, error."""
        try:
            return {"key": item["key"], "arrays": self._compute(item["path"], set(item["need"])), "error": None}
        except audio.AudioError as err:
            return {"key": item["key"], "arrays": {}, "error": err.reason}
        except musicnn.ModelError as err:  # e.g. audio too short for the network's front end
            return {"key": item["key"], "arrays": {}, "error": str(err)}

    def _spectrogram(self, path: str, fe: frontends.Frontend, waves: dict) -> np.ndarray:
        if fe.sample_rate not in waves:
            wave = audio.load(path, fe.sample_rate)
            if audio.is_silent(wave):
                raise audio.AudioError(path, "silent (no sample above -100 dBFS)")
            waves[fe.sample_rate] = wave
        # rounded through float16 as whole-track log-mels are stored
        return fe.spectrogram(waves[fe.sample_rate], self.plan.features).T.astype(features.STORE_DTYPE)

    def _compute(self, path: str, need: set[str]) -> dict[str, dict[str, np.ndarray]]:
        plan, out, waves = self.plan, {}, {}
        for name in ("db", "musicnn"):
            fe = features.frontend(name, plan.features)
            wanted = [n for n in need if n == f"logmel-{name}" or
                      (n.startswith("handcrafted") if name == "db" else n.startswith(("trunk", "pools", "flux")))]
            if not wanted:
                continue
            spec = self._spectrogram(path, fe, waves)
            if f"logmel-{name}" in need:
                out[f"logmel-{name}"] = {"array": spec}
            for part in plan.parts:
                spectra = _one_song_spectra(spec, fe, plan.features, "song", bool(part))
                for pid, key in zip(_part_ids("song", part), ("1", "2") if part else ("",)):
                    windows, index = spectra.segments([pid])
                    segs = np.asarray(windows[:], np.float32)
                    if name == "db" and f"handcrafted{part}" in need:
                        out.setdefault(f"handcrafted{part}", {}).update(_handcrafted(segs, key))
                    if name == "musicnn" and f"flux{part}" in need:
                        out.setdefault(f"flux{part}", {}).update(
                            {f"rows{key}": musicnn.band_flux(torch.from_numpy(segs)).numpy(),
                             f"offsets{key}": index["offset_s"].to_numpy(np.float64)})
                    for ckpt in plan.networks:
                        wanted = [k for k in ("trunk", "pools") if f"{k}{part}-{ckpt}" in need]
                        if name != "musicnn" or not wanted:
                            continue
                        rows = self._trunk(ckpt, segs)
                        for kind in wanted:
                            out.setdefault(f"{kind}{part}-{ckpt}", {}).update(
                                {f"rows{key}": rows[kind], f"offsets{key}": index["offset_s"].to_numpy(np.float64)})
        return out

    def _trunk(self, ckpt: str, segs: np.ndarray) -> dict[str, np.ndarray]:
        """`(segments, 96, frames)` -> trunk: `(segments, 392)`, the penultimate layer, then each
        band's mean and std over the segment's frames (`musicnn_head.MusicnnEmbedding.trunk` with
        band_stats); pools: `(segments, 1506)`, the mid-end's mean and max over time."""
        x = torch.from_numpy(segs).unsqueeze(1).to(self.device)
        with torch.no_grad():
            out = self.nets[ckpt](x)
            bands = x.flatten(1, -2)
            rows = torch.cat([out.penultimate, bands.mean(-1), bands.std(-1, correction=0)], dim=1)
            pools = torch.cat([out.mean_pool, out.max_pool], dim=1)
        return {name: t.cpu().numpy().astype(np.float32, copy=False) for name, t in (("trunk", rows), ("pools", pools))}


def _handcrafted(segs: np.ndarray, key: str) -> dict[str, np.ndarray]:
    from songspace.evaluate import baselines

    stats = baselines.handcrafted_features(segs, np.zeros(len(segs), np.int64), n_tracks=1)
    return {f"{name}{key}": value[0] for name, value in stats.items()}
