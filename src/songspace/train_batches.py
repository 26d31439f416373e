"""How an epoch's batches are made: the sampler, item type, batch size and order (`plan_batches`),
and the items themselves, each drawn from its own (seed, epoch, item) generator so that a run is
reproducible whatever the number of loader workers."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from . import augment
from .config import TRIPLET_LOSSES, AugmentParams, Params
from .train_data import TrainData


def sample_rng(seed: int, epoch: int, item: int) -> np.random.Generator:
    """The generator of one sample (item >= 0) or of the epoch's order (item = -1)."""
    return np.random.default_rng([seed, epoch, item + 1])


def _draw(data: TrainData, track: int, rng: np.random.Generator, aug: AugmentParams,
          per_draw: int = 1) -> torch.Tensor:
    """One training input `(1, n_mels, frames)` of a track, spectrogram-augmented: a cached
    augmented view with probability `aug.view_p`, else a crop starting anywhere in the track.
    With a trunk cache: the trunk's output `(trunk_dim,)` of one of the track's cached segments, or
    the mean of `per_draw` distinct ones (`train.segments_per_draw`: a track's embedding is its
    segments' mean, which a linear head maps from the mean of their trunk outputs)."""
    if data.trunk_cache is not None:
        rows = data.trunk_cache.rows[track]
        if per_draw == 1:
            return data.trunk_cache.train[int(rows[rng.integers(len(rows))])]
        picked = rows[rng.choice(len(rows), size=min(per_draw, len(rows)), replace=False)]
        return data.trunk_cache.train[torch.from_numpy(np.sort(picked))].mean(0)
    rows = data.view_rows[track]
    if len(rows) and rng.random() < aug.view_p:
        spec = np.array(data.views[int(rows[rng.integers(len(rows))])], dtype=np.float32)
    else:
        spec = data.spectra.random_crop(data.train_tracks[track], rng)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return augment.augment_spectrogram(torch.from_numpy(spec), aug, gen).unsqueeze(0)


def pk_order(labels: np.ndarray, p: int, k: int, n_batches: int, rng: np.random.Generator) -> np.ndarray:
    """Track positions of `n_batches` batches, each K tracks of each of P labels: `(n_batches * P * K,)`.

    Labels are drawn without replacement within a batch (all of them when there are fewer than
    P); tracks without replacement within a label, with replacement when the label has fewer
    than K (its tracks then recur with different crops).
    """
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    p = min(p, len(groups))
    out = []
    for _ in range(n_batches):
        for g in rng.choice(len(groups), size=p, replace=False):
            out.append(rng.choice(groups[g], size=k, replace=len(groups[g]) < k))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class _Samples(Dataset):
    """An epoch's items, in `order`; each item draws from its own (seed, epoch, item) generator."""

    def __init__(self, data: TrainData, aug: AugmentParams, seed: int, order: np.ndarray, epoch: int,
                 views: int = 1, per_draw: int = 1):
        self.data, self.aug, self.seed, self.order, self.epoch = data, aug, seed, order, epoch
        self.views, self.per_draw = views, per_draw

    def __len__(self) -> int:
        return len(self.order)


class TripletSamples(_Samples):
    """Item i: the inputs `(3, 1, n_mels, frames)` of triplet i and its tracks' labels `(3,)`."""

    def __getitem__(self, i: int):
        rng = sample_rng(self.seed, self.epoch, i)
        trip = self.data.triplets[self.order[i]]
        x = torch.stack([_draw(self.data, int(t), rng, self.aug, self.per_draw) for t in trip])
        return x, torch.from_numpy(self.data.train_labels[trip])


class TrackSamples(_Samples):
    """Item i: `views` crops `(views, 1, n_mels, frames)` of track order[i] and its label."""

    def __getitem__(self, i: int):
        rng = sample_rng(self.seed, self.epoch, i)
        track = int(self.order[i])
        x = torch.stack([_draw(self.data, track, rng, self.aug, self.per_draw) for _ in range(self.views)])
        return x, torch.tensor(self.data.train_labels[track])


@dataclass
class BatchPlan:
    """How an epoch's batches are made."""

    sampler: str                 # pk | triplets
    make: type                   # the Dataset class of the items
    views: int                   # crops per item (TrackSamples)
    batch: int                   # items per batch and process
    steps: int                   # batches per epoch and process
    order: Callable[[np.random.Generator], np.ndarray]  # rng -> item order, whole batches
    notes: list[str]


def plan_batches(params: Params, data: TrainData, world: int = 1) -> BatchPlan:
    """The sampler, item type, batch size and epoch order that `params` asks for on `data`.

    - `pk`: each batch holds K crops-of-tracks of each of P labels (`train.labels_per_batch` x
      `train.tracks_per_label`); the loss mines within the batch (triplet with `train.mining`,
      supcon) or pairs two crops per track (contrastive). Needs at least two labels: with one
      (e.g. annotated quartets and no labels) it falls back to `triplets`.
    - `triplets`: ground-truth triplets (triplet loss) or a permutation of the training tracks,
      two crops each (contrastive, supcon).
    """
    if len(data.train_tracks) < 2:
        raise ValueError("fewer than two training tracks: nothing to learn from")
    notes: list[str] = []
    if _sampler(params, data, notes) == "pk":
        return _pk_plan(params, data, world, notes)
    return _triplets_plan(params, data, world, notes)


def _sampler(params: Params, data: TrainData, notes: list[str]) -> str:
    """`train.sampler`, or the one that works on `data` instead (why, appended to `notes`)."""
    sampler = params.train.sampler
    if data.self_supervised and sampler == "triplets" and params.loss in TRIPLET_LOSSES:
        notes.append("no labels: triplets come from the batch (train.sampler pk), a track's "
                     "segments being each other's positives")
        sampler = "pk"
    if sampler == "pk" and data.n_labels < 2:
        notes.append("train.sampler pk needs at least two labels among the training tracks: "
                     "using the ground-truth triplets instead")
        sampler = "triplets"
    return sampler


def _pk_plan(params: Params, data: TrainData, world: int, notes: list[str]) -> BatchPlan:
    """Batches of K tracks of each of P labels (`pk_order`)."""
    tp = params.train
    k = tp.tracks_per_label
    counts = np.bincount(data.train_labels)
    small = int((counts[counts > 0] < k).sum())
    if data.self_supervised:
        notes.append(f"no labels: each batch holds {k} segments of each of its tracks, a "
                     "track's segments being each other's positives (self-supervised)")
    elif small:
        notes.append(f"warning: {small} of {data.n_labels} labels have fewer than "
                     f"train.tracks_per_label={k} training tracks: their tracks recur within a "
                     "batch (with different crops)")
    p = min(tp.labels_per_batch, data.n_labels)
    if p < tp.labels_per_batch:
        notes.append(f"warning: only {p} labels for train.labels_per_batch="
                     f"{tp.labels_per_batch}: batches hold {p} labels")
    batch = p * k
    steps = tp.steps_per_epoch or max(1, math.ceil(len(data.train_tracks) / batch / world))
    views = 2 if params.loss == "contrastive" else 1
    order = lambda rng: pk_order(data.train_labels, p, k, steps * world, rng)  # noqa: E731
    return BatchPlan("pk", TrackSamples, views, batch, steps, order, notes)


def _triplets_plan(params: Params, data: TrainData, world: int, notes: list[str]) -> BatchPlan:
    """Batches of ground-truth triplets (triplet loss) or of training tracks, in whole passes."""
    tp = params.train
    batch = max(1, params.batch_size // world)
    if params.loss in TRIPLET_LOSSES:
        if tp.mining == "none" and len(data.triplets) == 0:
            raise ValueError("no training triplets: check data/groundtruth/train_triplets.csv")
        n_pool, make = len(data.triplets), TripletSamples
    else:
        n_pool, make = len(data.train_tracks), TrackSamples
    steps = tp.steps_per_epoch or max(1, math.ceil(n_pool / batch / world))
    n_items = steps * batch * world
    views = 2 if params.loss in ("contrastive", "supcon") else 1

    def order(rng: np.random.Generator) -> np.ndarray:
        # Whole passes, each a fresh permutation: an item repeats within a batch only where two
        # passes meet.
        return np.concatenate([rng.permutation(n_pool) for _ in range(-(-n_items // n_pool))])[:n_items]

    return BatchPlan("triplets", make, views, batch, steps, order, notes)
