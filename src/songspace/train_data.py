"""What training reads: `TrainData` (features, cached views, ground truth) from the earlier
stages' files (`load_data`), and the frozen trunk's outputs it may train on (`cache_trunk`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import augment, embed, features, groundtruth, ingest, library_features
from . import views as cached_views
from .config import FeatureParams, Params

SONGS = ["song1", "song2", "song3"]


@dataclass
class TrainData:
    """Everything the loop needs, in memory or memory-mapped."""

    spectra: features.Spectra | None     # whole-track log-mels of every track (the model's front end)
    views: np.ndarray                    # (n_views, n_mels, frames) cached augmented views
    view_rows: list[np.ndarray]          # per training track: its rows of `views`
    train_tracks: list[str]
    train_labels: np.ndarray             # (n_train,) int label per training track
    triplets: np.ndarray                 # (n_triplets, 3) positions into train_tracks
    val_tracks: list[str] = field(default_factory=list)
    val_quartets: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), int))
    val_odd: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    # ground truth left out because a track has no features (skipped as undecodable)
    dropped: dict = field(default_factory=dict)
    # a frozen trunk's outputs, set by `setup` when training draws from them (`cache_trunk`)
    trunk_cache: embed.TrunkCache | None = None
    # no labels (`data.labels: none`): each training track is its own label, validation is on halves
    self_supervised: bool = False
    # a frozen trunk's stored outputs of every segment (the features stage's trunk file), when the
    # model trains on them; then `spectra` is None
    trunks: library_features.TrunkRows | None = None

    @property
    def input_stats(self) -> tuple[float, float]:
        """Mean and standard deviation of the training tracks' log-mel (up to 20,000 frames)."""
        spans = [self.spectra.span(t) for t in self.train_tracks]
        rows = np.concatenate([np.arange(s, s + n) for s, n in spans])
        rows = rows[:: max(1, len(rows) // 20000)]
        sample = np.asarray(self.spectra.array[rows], dtype=np.float64)
        return float(sample.mean()), float(sample.std() + 1e-6)

    @property
    def n_labels(self) -> int:
        return len(np.unique(self.train_labels))


def cache_trunk(model: embed.Embedder, data: TrainData, params: Params, device,
                verbose: bool = True) -> embed.TrunkCache | None:
    """`embed.cache_trunk` for the training and validation tracks when the settings allow it: None
    when `train.cached_segments` is off, the model has no frozen trunk, or spectrogram augmentation
    / cached views are on (their inputs differ at every draw: crops are used then)."""
    n, aug = params.train.cached_segments, params.augment
    if data.trunks is not None:
        return stored_trunk_cache(data, n)
    if n is None or not model.trunk_frozen:
        return None
    if aug.view_p > 0 or any(getattr(aug, name).p > 0 for name in augment.SPECTROGRAM_AUGMENTATIONS):
        if verbose:
            print("train.cached_segments is ignored: spectrogram augmentation or cached views are "
                  "on, so every draw is a fresh crop through the whole network")
        return None
    return embed.cache_trunk(model, data.spectra, data.train_tracks, data.val_tracks, n, device, verbose)


def stored_trunk_cache(data: TrainData, n: int | None) -> embed.TrunkCache:
    """The trunk cache from the stored trunk outputs: up to `n` of each training track's segments
    (evenly spread over its stored ones; all when None) and every segment of the validation tracks."""
    assert data.trunks is not None
    rows, picked, start = [], [], 0
    for t in data.train_tracks:
        r = data.trunks.rows(t)
        if n is not None and len(r) > n:
            r = r[np.round(np.linspace(0, len(r) - 1, n)).astype(np.int64)]
        picked.append(r)
        rows.append(np.arange(start, start + len(r)))
        start += len(r)
    train = np.asarray(data.trunks.array[np.concatenate(picked)], np.float32)
    val, val_index = data.trunks.segments(data.val_tracks)
    return embed.TrunkCache(torch.from_numpy(train), rows, torch.from_numpy(val), val_index)


def load_data(features_dir: str | Path, groundtruth_dir: str | Path, tracks_csv: str | Path,
              views_dir: str | Path | None = None, frontend: str = "db",
              feature_params: FeatureParams | None = None, self_supervised: bool = False,
              trunk: str | None = None) -> TrainData:
    """Read the features, cached augmented views and ground truth written by earlier stages.

    `frontend` names the log-mel the model reads; `feature_params` sets the validation tracks'
    segments (the stored settings when None). `self_supervised` (no labels): every training
    track is a label of its own (its segments are each other's positives) and the validation
    quartets name track halves (`groundtruth.halves`). `trunk` names the checkpoint whose stored
    trunk outputs the model trains on (`library_features.trains_on_trunk`): they are read instead
    of log-mels.
    """
    gt = Path(groundtruth_dir)
    splits = groundtruth.read_splits(gt / "splits.csv")
    trunks, spectra = None, None
    if trunk is not None:
        trunks = catalog = library_features.load_trunk(features_dir, trunk)  # halves included
    else:
        spectra = catalog = features.load_spectra(features_dir, frontend, feature_params)
    if self_supervised and spectra is not None:
        val_whole = groundtruth.split_tracks(splits, "val", spectra)
        spectra = catalog = groundtruth.halves.with_halves(spectra, val_whole)

    train_tracks = groundtruth.split_tracks(splits, "train", catalog)
    views, view_rows = _training_views(views_dir, spectra, train_tracks)
    triplets, dropped_triplets = _training_triplets(gt / "train_triplets.csv", train_tracks)
    val_tracks, val_q, val_odd, dropped_val = _validation_quartets(gt / "val_quartets.csv", catalog)
    labels = _label_codes(ingest.read_tracks(tracks_csv, required=("track_id", "label")), train_tracks)
    if self_supervised:
        labels = np.arange(len(train_tracks), dtype=np.int64)
    return TrainData(spectra=spectra, views=views, view_rows=view_rows, train_tracks=train_tracks,
                     train_labels=labels, triplets=triplets, val_tracks=val_tracks,
                     val_quartets=val_q, val_odd=val_odd,
                     dropped={"train_triplets": dropped_triplets, "val_quartets": dropped_val},
                     self_supervised=self_supervised, trunks=trunks)


def _training_views(views_dir: str | Path | None, spectra: features.Spectra | None,
                    train_tracks: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The cached augmented views `(n_views, n_mels, frames)` (none without `views_dir`) and each
    training track's rows of them."""
    shape = (0, spectra.fe.n_mels, spectra.fe.segment_frames) if spectra is not None else (0, 1, 1)
    views, vindex = np.zeros(shape, np.float32), None
    if views_dir is not None:
        views, vindex = cached_views.load_views(views_dir)
    vrows = features.rows_by_track(vindex) if vindex is not None and len(vindex) else {}
    return views, [vrows.get(t, np.zeros(0, int)) for t in train_tracks]


def _training_triplets(path: Path, train_tracks: list[str]) -> tuple[np.ndarray, int]:
    """The ground-truth triplets `(n, 3)` as positions into `train_tracks`, and how many were left
    out for naming a track not among them."""
    pos = {t: i for i, t in enumerate(train_tracks)}
    trip = groundtruth.read_triplets(path)
    keep = trip.isin(set(pos)).all(axis=1)
    triplets = trip[keep].apply(lambda c: c.map(pos)).to_numpy(dtype=np.int64)
    return triplets, int((~keep).sum())


def _validation_quartets(path: Path, catalog) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """The validation tracks (sorted), quartets `(n, 3)` as positions into them, each quartet's odd
    position `(n,)`, and how many quartets were left out for naming a track without features.
    Nothing when the file does not exist."""
    if not path.exists():
        return [], np.zeros((0, 3), int), np.zeros(0, int), 0
    vq = groundtruth.read_quartets(path)
    usable = vq[SONGS].map(lambda t: t in catalog).all(axis=1)
    dropped = int((~usable).sum())
    vq = vq[usable]
    val_tracks = sorted(set(vq[SONGS].to_numpy().ravel()))
    vpos = {t: i for i, t in enumerate(val_tracks)}
    quartets = vq[SONGS].apply(lambda c: c.map(vpos)).to_numpy(dtype=np.int64)
    odd = np.argmax(vq[SONGS].to_numpy() == vq["odd"].to_numpy()[:, None], axis=1)
    return val_tracks, quartets, odd, dropped


def _label_codes(tracks: pd.DataFrame, train_tracks: list[str]) -> np.ndarray:
    """Each training track's label as an int `(n_train,)`: labels numbered in sorted order."""
    label_of = dict(zip(tracks["track_id"], tracks["label"]))
    names = sorted({str(label_of.get(t, "")) for t in train_tracks})
    code = {n: i for i, n in enumerate(names)}
    return np.array([code[str(label_of.get(t, ""))] for t in train_tracks], dtype=np.int64)
