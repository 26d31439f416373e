"""The pipeline's index: every track with features embedded by the trained model and indexed,
then the songs added with `songspace add` embedded again with that model."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from songspace import checkpoint, groundtruth, ingest
from songspace.index import DEFAULT_EVAL_JSON
from songspace.index.store import LibraryError, SongIndex, read_added, resolve_cell


def build_from_pipeline(features_dir: str | Path, tracks_csv: str | Path, splits_csv: str | Path | None,
                        model_path: str | Path, params, eval_json: str | Path | None = DEFAULT_EVAL_JSON,
                        device: str = "cpu", progress: bool = True,
                        added_csv: str | Path | None = None) -> SongIndex:
    """Embed every track with features (the `features` stage's segments) and index them.

    added_csv: the list of songs added with `songspace add` (`added_list_path`); each is
    embedded again from its file with this model and added after the library's tracks
    (meta: added_tracks, added_missing for listed files no longer on disk).

    params: the `config.Params` (index.*, evaluate.minkowski_p, seed). The scaler is fitted on
    the tracks splits_csv marks `train`. Tracks without segments (skipped as undecodable by
    the features stage) are not indexed. device: cpu, cuda or auto (cuda when available); it
    and the time embedding took go to the index's `timings`, not to its files.
    """
    from songspace import embed, features, library_features, models

    device = str(embed.select_device(device))

    ip = params.index
    distance, scaler, chosen = resolve_cell(ip.distance, ip.scaler, eval_json)
    model, meta = embed.load_checkpoint(model_path, device=device)
    ckpt = library_features.trunk_checkpoint(meta["model_params"])
    if ckpt is not None:   # the frozen trunk's stored outputs: only the head runs here
        catalog = library_features.load_trunk(features_dir, ckpt)
    else:
        catalog = features.load_spectra(features_dir, models.input_frontend(meta["model_params"]), params.features)
    tracks = ingest.read_tracks(tracks_csv, required=("track_id", "path"))
    have = set(catalog.track_ids)
    tracks = tracks[tracks["track_id"].isin(have)].reset_index(drop=True)
    if tracks.empty:
        raise LibraryError(f"{features_dir}: no segments for any track of {tracks_csv}")
    tracks["sha1"] = _sha1_column(tracks)
    ids = list(tracks["track_id"])
    segments, seg_index = catalog.segments(ids)
    t0 = time.perf_counter()
    if ckpt is not None:
        emb = embed.track_means(embed.apply_head(model, segments, device=device), seg_index, ids)
    else:
        emb = embed.embed_tracks(model, segments, seg_index, ids, device=device, progress=progress)
    embed_s = time.perf_counter() - t0
    train = set()
    if splits_csv is not None and Path(splits_csv).exists():
        splits = groundtruth.read_splits(splits_csv)
        train = set(groundtruth.split_tracks(splits, "train"))
    mask = tracks["track_id"].isin(train).to_numpy()
    identity = checkpoint.identity(model_path, meta.get("model_name"))
    extra = {"chosen_by": chosen, "feature_params": dataclasses.asdict(meta["feature_params"]),
             "sources": {"features": str(features_dir), "tracks": str(tracks_csv),
                         "splits": str(splits_csv)}}
    built = SongIndex.build(emb, tracks, mask, distance, scaler, params.evaluate.minkowski_p,
                            ip.approximate_above, ip.hnsw_m, ip.hnsw_ef_search, identity,
                            seed=params.seed, progress=progress, extra_meta=extra)
    built.timings.update(embed_seconds=embed_s, device=device)
    if added_csv is not None:
        _take_in_added(built, read_added(added_csv), model, meta["feature_params"], device)
    return built


def _take_in_added(built: SongIndex, added: pd.DataFrame, model, feature_params, device: str) -> None:
    """Add the listed songs to a freshly built index: embedded from their files, once each."""
    from songspace import embed

    have = set(built.tracks["sha1"]) - {""}
    taken = set(built.tracks["track_id"])
    rows, vectors, missing = [], [], []
    for row in added.drop_duplicates("sha1").itertuples(index=False):
        if row.sha1 and row.sha1 in have:
            continue  # the song has since come into the library itself
        if not Path(row.path).is_file():
            missing.append(row.path)
            continue
        track_id, n = row.track_id, 1
        while track_id in taken:
            n += 1
            track_id = f"{row.track_id}-{n}"
        taken.add(track_id)
        vectors.append(embed.embed_file(model, row.path, feature_params, device=device))
        rows.append({**row._asdict(), "track_id": track_id})
    if rows:
        built.add(np.stack(vectors), pd.DataFrame(rows))
    built.meta["added_missing"] = missing


def _sha1_column(tracks: pd.DataFrame) -> list[str]:
    """The tracks' content hashes: ingest's sha1 column, or hashed here where it is missing."""
    known = tracks["sha1"] if "sha1" in tracks else pd.Series([""] * len(tracks))
    return [h if h else (ingest.sha1_of(p) if Path(p).is_file() else "")
            for h, p in zip(known.fillna(""), tracks["path"])]
