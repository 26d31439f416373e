"""The `features` stage's outputs, assembled from the per-song store (`persong`, `songstore`).

Per song the store holds what `persong.Plan` asks for; this module computes what is missing on
the configured engine (`compute`), then writes, in the track table's order:

- `trunk-<name>.npy` `(segments, trunk_dim)` float32 + `trunk-<name>.csv` (row, track_id,
  segment, offset_s): the frozen trunk's outputs of every segment, exactly the columns the head
  reads (`trunk_checkpoint` names them), for a model whose backbone is frozen (train, evaluate
  and the index read these, never the network's trunk again);
- `baselines.npz` (`logmel_stats`, `mfcc_stats`, `musicnn_msd`, `musicnn_mtt`: one row per track)
  + `baselines.csv` (track_id): the baselines' per-track vectors;
- `<frontend>.npy` / `.csv` / `.params.json` (`features.save`): whole-track log-mels, only for
  a model that trains on crops (its backbone not frozen);
- `skipped.csv`: tracks that could not be decoded; `store.json`: the bytes each song takes.

With `data.labels: none` the trunk and baseline files also hold each track's halves
(`groundtruth.halves.half_ids`). The outputs depend on the inputs alone: a run that computes
everything and a run that finds everything in the store write the same bytes.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from songspace import compute, features, models, persong
from songspace import skipped as skipped_list
from songspace.config import ModelParams, Params
from songspace.groundtruth import halves as halves_mod
from songspace.models import musicnn

BASELINE_FILE, BASELINE_TABLE = "baselines.npz", "baselines.csv"
PRETRAINED_BASELINES = {"musicnn_msd": "MSD_musicnn", "musicnn_mtt": "MTT_musicnn"}
NO_BANDS, FLUX, MID_END = "nobands", "flux", "midend"  # the trunk name's flags (after '~'), in this order


def trunk_checkpoint(params: Params | ModelParams) -> str | None:
    """The name of the frozen trunk a model reads (None: the model has no frozen trunk), which
    names the features stage's `trunk-<name>` file: its checkpoint(s) ('+'-joined), then
    `~nobands` for a head without band statistics, `~flux` for one with the band flux and
    `~midend` for one with the mid-end pools (`trunk_parts`); `params`: the whole params (the
    selected model) or one model's."""
    mp = params.model_params if isinstance(params, Params) else params
    if mp.arch != "musicnn" or mp.freeze != "backbone":
        return None
    return (mp.pretrained + ("" if mp.band_stats else f"~{NO_BANDS}") + (f"~{FLUX}" if mp.band_flux else "")
            + (f"~{MID_END}" if mp.mid_end else ""))


class TrunkParts(NamedTuple):
    """What a trunk name (`trunk_checkpoint`) holds, in its columns' order."""

    checkpoints: list[str]
    bands: bool   # the band statistics
    mid: bool     # the first network's mid-end pools
    flux: bool    # the band flux


def trunk_parts(name: str) -> TrunkParts:
    """A trunk name (`trunk_checkpoint`) -> its checkpoints and which of its flags it carries."""
    base, *flags = name.split("~")
    order = [NO_BANDS, FLUX, MID_END]
    if set(flags) - set(order) or flags != sorted(set(flags), key=order.index):
        raise features.FeatureError(f"trunk '{name}': flags must be some of ~{NO_BANDS}, ~{FLUX}, ~{MID_END} "
                                    f"in this order, got {'~'.join(flags)}")
    return TrunkParts(musicnn.checkpoints_of(base), NO_BANDS not in flags, MID_END in flags, FLUX in flags)


def trains_on_trunk(params: Params) -> bool:
    """Whether training reads stored trunk outputs rather than crops (`train.cache_trunk`)."""
    from songspace import augment

    aug = params.augment
    crops = aug.view_p > 0 or any(getattr(aug, n).p > 0 for n in augment.SPECTROGRAM_AUGMENTATIONS)
    return trunk_checkpoint(params) is not None and params.train.cached_segments is not None and not crops


def plan(params: Params, trunk: str | None = None) -> persong.Plan:
    """What every song needs under `params` (and for the trunk named `trunk` too, if given)."""
    logmels = () if trains_on_trunk(params) else (models.input_frontend(params.model_params),)
    parts = [trunk_parts(n) for n in (trunk_checkpoint(params), trunk) if n]
    pools = tuple(dict.fromkeys(p.checkpoints[0] for p in parts if p.mid))
    return persong.Plan(params.features, logmels, musicnn.CHECKPOINTS, halves_mod.in_use(params.data), pools,
                        flux=any(p.flux for p in parts))


def song_key(tracks: pd.DataFrame) -> pd.Series:
    """The store key of each track: the hash of its audio (`audio_key`), else of its file (`sha1`,
    hashed here where the table has none)."""
    from songspace import filecheck

    def column(name: str) -> pd.Series:
        values = tracks[name] if name in tracks else pd.Series([""] * len(tracks), index=tracks.index)
        return values.fillna("").astype(str)

    key = column("audio_key").where(lambda k: k != "", column("sha1"))
    missing = key == ""
    key[missing] = [filecheck.sha1_of(p) for p in tracks.loc[missing, "path"].astype(str)]
    return key


def fill_store(tracks: pd.DataFrame, keys: pd.Series, params: Params, progress: bool = True,
               the_plan: persong.Plan | None = None) -> dict[str, str]:
    """Compute every product a track lacks (`keys`: `song_key(tracks)`; `the_plan`: `plan(params)`
    unless given); returns {key: reason} of songs that failed."""
    the_plan = the_plan or plan(params)
    products = the_plan.products(params.compute.cache_dir)
    items, seen = [], set()
    for key, path in zip(keys, tracks["path"].astype(str)):
        need = [n for n, p in products.items() if not p.has(key)]
        if need and key not in seen:
            items.append({"key": key, "path": path, "need": need})
            seen.add(key)
    if progress:
        print(f"per-song store {params.compute.cache_dir}: {len(set(keys)) - len(items)} songs found, "
              f"{len(items)} to compute ({params.compute.engine} engine)")
    failed = {}
    # GPU actors (compute.gpus_per_worker > 0, ray) run the networks there: the same outputs to
    # float rounding, not bit for bit; CPU workers give the same bytes on every engine
    device = "cuda" if params.compute.engine == "ray" and params.compute.gpus_per_worker > 0 else "cpu"
    worker = partial(persong.SongWorker, the_plan, device)
    for res in compute.map_songs(worker, items, params.compute, "per-song features", progress):
        if res["error"] is not None:
            failed[res["key"]] = res["error"]
            continue
        for name, arrays in res["arrays"].items():
            products[name].save(res["key"], arrays)
    return failed


def build(tracks: pd.DataFrame, params: Params, out_dir: str | Path, progress: bool = True) -> pd.DataFrame:
    """Fill the store, then write the stage's files under `out_dir`; returns the skipped tracks
    (a `skipped.table`)."""
    keys = song_key(tracks)
    failed = fill_store(tracks, keys, params, progress)
    the_plan = plan(params)
    products = the_plan.products(params.compute.cache_dir)  # file digests: computed once per process
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ok = ~keys.isin(set(failed))
    skipped = skipped_list.table({"track_id": t, "path": p, "reason": skipped_list.UNUSABLE, "detail": failed[k]}
                                 for t, p, k in zip(tracks["track_id"][~ok], tracks["path"][~ok], keys[~ok]))
    kept = tracks[ok].reset_index(drop=True)
    kkeys = keys[ok].tolist()
    ids = kept["track_id"].astype(str).tolist()

    def songs(what: str):
        return tqdm(list(zip(ids, kkeys)), desc=f"reading the store: {what}", unit="song", disable=not progress)

    for fe in the_plan.logmels:
        _write_logmels(out, fe, params, products[f"logmel-{fe}"], songs(f"{fe} log-mels"))
    ckpt = trunk_checkpoint(params)
    if ckpt is not None:
        _write_trunk(out, ckpt, the_plan, products, songs("trunk outputs"))
    _write_baselines(out, the_plan, products, songs("baselines"))
    skipped_list.write(skipped, out / skipped_list.FILE_NAME)
    per_song = {name: p.bytes(kkeys) / max(1, len(set(kkeys))) for name, p in products.items()}
    (out / "store.json").write_text(json.dumps(
        {"songs": len(set(kkeys)), "store_bytes_per_song": {k: round(v) for k, v in per_song.items()},
         "output_bytes_per_song": round(sum(f.stat().st_size for f in out.glob("*.np*")) / max(1, len(kkeys)))},
        indent=1) + "\n")
    return skipped


def export_trunk(tracks: pd.DataFrame, params: Params, checkpoint: str, out_dir: str | Path) -> TrunkRows:
    """The stored outputs of the trunk named `checkpoint` (`trunk_checkpoint`: of the plan's
    networks, whether or not the selected model reads it) for the tracks the store holds, written
    as the features stage writes its own trunk file; for studies that compare networks and heads
    (`benchmarks/heads.py`). What the store lacks for these tracks (mid-end pools or band flux that
    the features stage did not keep, or everything, after a change of the code that shapes it) is
    computed first; a track that cannot be decoded is left out."""
    ckpts, _, mid, flux = trunk_parts(checkpoint)
    the_plan = plan(params, checkpoint)
    products = the_plan.products(params.compute.cache_dir)
    names = [f"trunk-{c}" for c in ckpts] + ([f"pools-{ckpts[0]}"] if mid else []) + (["flux"] if flux else [])
    keys = song_key(tracks)
    fill_store(tracks, keys, params, progress=True, the_plan=the_plan)
    have = [(t, k) for t, k in zip(tracks["track_id"].astype(str), keys)
            if all(products[name].has(k) for name in names)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_trunk(out, checkpoint, the_plan, products, have)
    return load_trunk(out, checkpoint)


def _write_logmels(out: Path, fe_name: str, params: Params, product, songs) -> None:
    ids, arrays = [], []
    for track_id, key in songs:
        ids.append(track_id)
        arrays.append(product.load(key)["array"])
    table = pd.DataFrame({"track_id": ids, "frames": [len(a) for a in arrays]})
    table.insert(1, "start", np.concatenate([[0], np.cumsum(table["frames"])[:-1]]).astype(np.int64))
    fe = features.frontend(fe_name, params.features)
    array = np.concatenate(arrays) if arrays else np.zeros((0, fe.n_mels), features.STORE_DTYPE)
    features.save(out, features.Spectra(array, table, fe, params.features))


def _parts(the_plan: persong.Plan, track_id: str):
    """(product suffix, array suffix, the id of the part) for a track's whole and halves."""
    yield "", "", track_id
    if the_plan.halves:
        for key, pid in zip(("1", "2"), halves_mod.half_ids(track_id)):
            yield "-halves", key, pid


def _write_trunk(out: Path, ckpt: str, the_plan, products, songs) -> None:
    """The trunk file named `ckpt` (`trunk_checkpoint`), in the columns of
    `musicnn_head.MusicnnEmbedding.trunk`: the first network's penultimate layer, the band statistics
    (unless `~nobands`), the band flux (`~flux`), each other network's penultimate layer (several
    joined by '+': the model's `others`), then the first network's mid-end pools (`~midend`)."""
    (first, *others), bands, mid, flux = trunk_parts(ckpt)
    rows, index = [], []
    for track_id, key in songs:
        entries = {(part, c): products[f"trunk{part}-{c}"].load(key)
                   for part in the_plan.parts for c in (first, *others)}
        pools = {part: products[f"pools{part}-{first}"].load(key) for part in the_plan.parts} if mid else {}
        fluxes = {part: products[f"flux{part}"].load(key) for part in the_plan.parts} if flux else {}
        for part, akey, pid in _parts(the_plan, track_id):
            r, offs = entries[part, first][f"rows{akey}"], entries[part, first][f"offsets{akey}"]
            cols = [r if bands else r[:, :musicnn.PENULTIMATE_UNITS],
                    *([fluxes[part][f"rows{akey}"]] if flux else []),
                    *(entries[part, c][f"rows{akey}"][:, :musicnn.PENULTIMATE_UNITS] for c in others),
                    *([pools[part][f"rows{akey}"]] if mid else [])]
            rows.append(np.concatenate(cols, axis=1) if len(cols) > 1 else cols[0])
            index += [(pid, s, float(o)) for s, o in enumerate(offs)]
    write_trunk(out, ckpt, np.concatenate(rows) if rows else np.zeros((0, persong_dim(ckpt)), np.float32),
                pd.DataFrame(index, columns=["track_id", "segment", "offset_s"]))


def persong_dim(ckpt: str = "MSD_musicnn") -> int:
    """The width of the rows of the trunk named `ckpt` (`musicnn_head.MusicnnEmbedding.trunk_dim`)."""
    ckpts, bands, mid, flux = trunk_parts(ckpt)
    return (musicnn.PENULTIMATE_UNITS * len(ckpts) + (2 * musicnn.N_MELS if bands else 0)
            + (musicnn.N_MELS if flux else 0) + (2 * musicnn.POOLED_FEATURES if mid else 0))


def _write_baselines(out: Path, the_plan, products, songs) -> None:
    cols: dict[str, list] = {"logmel_stats": [], "mfcc_stats": [], **{n: [] for n in PRETRAINED_BASELINES}}
    names = []
    for track_id, key in songs:
        hand = {part: products[f"handcrafted{part}"].load(key) for part in the_plan.parts}
        nets = {(part, c): products[f"trunk{part}-{c}"].load(key)
                for part in the_plan.parts for c in PRETRAINED_BASELINES.values()}
        for part, akey, pid in _parts(the_plan, track_id):
            names.append(pid)
            cols["logmel_stats"].append(hand[part][f"logmel_stats{akey}"])
            cols["mfcc_stats"].append(hand[part][f"mfcc_stats{akey}"])
            for name, ckpt in PRETRAINED_BASELINES.items():
                pen = nets[(part, ckpt)][f"rows{akey}"][:, : musicnn.PENULTIMATE_UNITS]
                cols[name].append(pen.mean(axis=0, dtype=np.float32))
    np.savez(out / BASELINE_FILE, **{k: np.stack(v) if v else np.zeros((0, 1)) for k, v in cols.items()})
    pd.DataFrame({"track_id": names}).to_csv(out / BASELINE_TABLE, index=False)


# ---------------------------------------------------------------- readers and writers


class TrunkRows:
    """A frozen trunk's outputs for every segment of the library: `array (segments, dim)` +
    `index` (row, track_id, segment, offset_s), in track order."""

    def __init__(self, array: np.ndarray, index: pd.DataFrame, checkpoint: str):
        self.array, self.index, self.checkpoint = array, index.reset_index(drop=True), checkpoint
        self._rows = features.rows_by_track(self.index)

    def __contains__(self, track_id: str) -> bool:
        return track_id in self._rows

    @property
    def track_ids(self) -> list[str]:
        return list(self._rows)

    def rows(self, track_id: str) -> np.ndarray:
        return self._rows[track_id]

    def segments(self, track_ids: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
        """The rows of `track_ids` `(n, dim)` and their index (row renumbered from 0)."""
        wanted = np.concatenate([self._rows[t] for t in track_ids]) if track_ids else np.zeros(0, np.int64)
        index = self.index.iloc[wanted].copy()
        index["row"] = np.arange(len(wanted))
        return np.asarray(self.array[wanted], np.float32), index.reset_index(drop=True)


def write_trunk(out: Path, checkpoint: str, array: np.ndarray, index: pd.DataFrame) -> None:
    index = index.copy()
    index.insert(0, "row", np.arange(len(index)))
    np.save(out / f"trunk-{checkpoint}.npy", array.astype(np.float32, copy=False))
    index.to_csv(out / f"trunk-{checkpoint}.csv", index=False)


def has_trunk(features_dir: str | Path, checkpoint: str) -> bool:
    return (Path(features_dir) / f"trunk-{checkpoint}.npy").is_file()


def load_trunk(features_dir: str | Path, checkpoint: str) -> TrunkRows:
    out = Path(features_dir)
    npy, csv = out / f"trunk-{checkpoint}.npy", out / f"trunk-{checkpoint}.csv"
    for f in (npy, csv):
        if not f.exists():
            raise features.FeatureError(f"{f}: no such feature file (run `dvc repro features`)")
    array = np.load(npy, mmap_mode="r")
    index = pd.read_csv(csv, dtype={"track_id": str})
    if len(index) != len(array):
        raise features.FeatureError(f"{csv} lists {len(index)} segments but {npy} holds {len(array)}")
    return TrunkRows(array, index, checkpoint)


def load_baselines(features_dir: str | Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """The baselines' per-track vectors {name: (tracks, dim)} and the track ids of their rows."""
    out = Path(features_dir)
    npz, csv = out / BASELINE_FILE, out / BASELINE_TABLE
    for f in (npz, csv):
        if not f.exists():
            raise features.FeatureError(f"{f}: no such feature file (run `dvc repro features`)")
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, pd.read_csv(csv, dtype={"track_id": str})["track_id"].tolist()
