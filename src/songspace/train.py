"""The training loop: fit(params, data, out_dir) -> history, with checkpoints.

- Triplet loss on ground-truth triplets (or triplets mined by label), or NT-Xent on two augmented
  views per track (contrastive), chosen by `params.loss`.
- Each sample draws its segment, its view and its spectrogram augmentation from a generator seeded
  by (seed, epoch, sample), so a run is reproducible whatever the number of loader workers.
- Validation odd-one-out accuracy per epoch, early stopping on it, `best.pt` and `last.pt`.
- Resume: `last.pt` holds model, optimiser, scheduler, RNG state and epoch; a killed run started
  again continues from it.
- CUDA when available (mixed precision), several GPUs or CPU processes with `torchrun` (DDP).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import augment, embed, evaluate, features, groundtruth, ingest, library_features, losses, models
from . import checkpoint, codegraph
from . import views as cached_views
from .checkpoint import load as read_checkpoint
from .config import AugmentParams, FeatureParams, Params


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
        val_whole = [t for t in splits.loc[splits["split"] == "val", "track_id"] if t in spectra]
        spectra = catalog = groundtruth.halves.with_halves(spectra, val_whole)
    tracks = ingest.read_tracks(tracks_csv, required=("track_id", "label"))
    label_of = dict(zip(tracks["track_id"], tracks["label"]))

    train_tracks = [t for t in splits.loc[splits["split"] == "train", "track_id"] if t in catalog]
    pos = {t: i for i, t in enumerate(train_tracks)}
    shape = (0, spectra.fe.n_mels, spectra.fe.segment_frames) if spectra is not None else (0, 1, 1)
    views, vindex = np.zeros(shape, np.float32), None
    if views_dir is not None:
        views, vindex = cached_views.load_views(views_dir)
    vrows = features.rows_by_track(vindex) if vindex is not None and len(vindex) else {}
    view_rows = [vrows.get(t, np.zeros(0, int)) for t in train_tracks]
    trip = groundtruth.read_triplets(gt / "train_triplets.csv")
    keep = trip.isin(set(pos)).all(axis=1)
    triplets = trip[keep].apply(lambda c: c.map(pos)).to_numpy(dtype=np.int64)

    val_tracks: list[str] = []
    dropped_val = 0
    val_q = np.zeros((0, 3), int)
    val_odd = np.zeros(0, int)
    vq_file = gt / "val_quartets.csv"
    if vq_file.exists():
        vq = groundtruth.read_quartets(vq_file)
        usable = vq[["song1", "song2", "song3"]].map(lambda t: t in catalog).all(axis=1)
        dropped_val = int((~usable).sum())
        vq = vq[usable]
        val_tracks = sorted(set(vq[["song1", "song2", "song3"]].to_numpy().ravel()))
        vpos = {t: i for i, t in enumerate(val_tracks)}
        val_q = vq[["song1", "song2", "song3"]].apply(lambda c: c.map(vpos)).to_numpy(dtype=np.int64)
        songs = vq[["song1", "song2", "song3"]].to_numpy()
        val_odd = np.argmax(songs == vq["odd"].to_numpy()[:, None], axis=1)

    names = sorted({str(label_of.get(t, "")) for t in train_tracks})
    code = {n: i for i, n in enumerate(names)}
    labels = np.array([code[str(label_of.get(t, ""))] for t in train_tracks], dtype=np.int64)
    if self_supervised:
        labels = np.arange(len(train_tracks), dtype=np.int64)
    return TrainData(spectra=spectra, views=views, view_rows=view_rows, train_tracks=train_tracks,
                     train_labels=labels, triplets=triplets, val_tracks=val_tracks,
                     val_quartets=val_q, val_odd=val_odd,
                     dropped={"train_triplets": int((~keep).sum()), "val_quartets": dropped_val},
                     self_supervised=self_supervised, trunks=trunks)


def _rng(seed: int, epoch: int, item: int) -> np.random.Generator:
    """The generator of one sample (item >= 0) or of the epoch's order (item = -1)."""
    return np.random.default_rng([seed, epoch, item + 1])


def _draw(data: TrainData, track: int, rng: np.random.Generator, aug: AugmentParams) -> torch.Tensor:
    """One training input `(1, n_mels, frames)` of a track, spectrogram-augmented: a cached
    augmented view with probability `aug.view_p`, else a crop starting anywhere in the track.
    With a trunk cache: the trunk's output `(trunk_dim,)` of one of the track's cached segments."""
    if data.trunk_cache is not None:
        rows = data.trunk_cache.rows[track]
        return data.trunk_cache.train[int(rows[rng.integers(len(rows))])]
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
                 views: int = 1):
        self.data, self.aug, self.seed, self.order, self.epoch = data, aug, seed, order, epoch
        self.views = views

    def __len__(self) -> int:
        return len(self.order)


class TripletSamples(_Samples):
    """Item i: the inputs `(3, 1, n_mels, frames)` of triplet i and its tracks' labels `(3,)`."""

    def __getitem__(self, i: int):
        rng = _rng(self.seed, self.epoch, i)
        trip = self.data.triplets[self.order[i]]
        x = torch.stack([_draw(self.data, int(t), rng, self.aug) for t in trip])
        return x, torch.from_numpy(self.data.train_labels[trip])


class TrackSamples(_Samples):
    """Item i: `views` crops `(views, 1, n_mels, frames)` of track order[i] and its label."""

    def __getitem__(self, i: int):
        rng = _rng(self.seed, self.epoch, i)
        track = int(self.order[i])
        x = torch.stack([_draw(self.data, track, rng, self.aug) for _ in range(self.views)])
        return x, torch.tensor(self.data.train_labels[track])


def training_code() -> list[Path]:
    """The code a run's result depends on: this module and every package module it imports,
    transitively (`codegraph.code_files`; the train stage's deps in dvc.yaml are checked against
    the same walk). A change in any of them starts training afresh."""
    return codegraph.code_files(__name__)


def run_identity(params: Params, data: TrainData) -> str:
    """Identity of a run: settings, inputs and training code.

    A checkpoint is resumed only by a run of the same identity, so a killed run continues, while
    new data, code or settings start afresh.
    """
    h = hashlib.sha1()
    keys = {"model": params.model, "loss": params.loss, "seed": params.seed,
            "model_params": dataclasses.asdict(params.model_params),
            "train": dataclasses.asdict(params.train), "augment": dataclasses.asdict(params.augment),
            "features": dataclasses.asdict(params.features)}
    h.update(json.dumps(keys, sort_keys=True).encode())
    for path in training_code():
        h.update(path.read_bytes())
    h.update(json.dumps([data.train_tracks, data.val_tracks]).encode())
    for arr in (data.triplets, data.train_labels, data.val_quartets, data.val_odd):
        h.update(np.ascontiguousarray(arr).tobytes())
    stored = data.spectra.array if data.spectra is not None else data.trunks.array
    h.update(np.ascontiguousarray(stored).tobytes())
    h.update(np.ascontiguousarray(data.views).tobytes())
    return h.hexdigest()[:16]


def will_resume(params: Params, data: TrainData, out_dir: str | Path) -> bool:
    """Whether `fit` would continue the unfinished run in out_dir/last.pt (so its logs continue too)."""
    last = Path(out_dir) / "last.pt"
    if not last.exists():
        return False
    ckpt = read_checkpoint(last)
    state, ckpt_ident = ckpt.get("state", {}), ckpt.get("ident")
    finished = state.get("epoch", 0) >= params.train.epochs or state.get("stale", 0) >= params.train.patience
    return ckpt_ident == run_identity(params, data) and not finished


def _dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) under torchrun; (0, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def validation_accuracy(model: torch.nn.Module, data: TrainData, device, batch_size: int) -> float:
    """Odd-one-out accuracy (cosine) of the validation quartets; NaN without validation data."""
    if len(data.val_quartets) == 0:
        return float("nan")
    cache = data.trunk_cache
    if cache is not None:
        emb = embed.track_means(embed.apply_head(model, cache.val, device=device), cache.val_index,
                                data.val_tracks)
        return float(evaluate.odd_one_out_accuracy(emb, data.val_quartets, data.val_odd, "cosine"))
    segments, index = data.spectra.segments(data.val_tracks)
    emb = embed.embed_tracks(model, segments, index, data.val_tracks, batch_size=batch_size,
                             device=device)
    return float(evaluate.odd_one_out_accuracy(emb, data.val_quartets, data.val_odd, "cosine"))


@dataclass
class TrainResult:
    history: list[dict]          # per epoch: epoch, loss, val_accuracy, lr
    model: torch.nn.Module       # the weights after the last epoch (best ones are in best.pt)


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
    tp = params.train
    notes: list[str] = []
    sampler = tp.sampler
    n_train = len(data.train_tracks)
    if n_train < 2:
        raise ValueError("fewer than two training tracks: nothing to learn from")
    if data.self_supervised and sampler == "triplets" and params.loss == "triplet":
        notes.append("no labels: triplets come from the batch (train.sampler pk), a track's "
                     "segments being each other's positives")
        sampler = "pk"
    if sampler == "pk" and data.n_labels < 2:
        notes.append("train.sampler pk needs at least two labels among the training tracks: "
                     "using the ground-truth triplets instead")
        sampler = "triplets"
    views = 2 if params.loss in ("contrastive", "supcon") else 1
    if sampler == "pk":
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
        steps = tp.steps_per_epoch or max(1, math.ceil(n_train / batch / world))
        views = 2 if params.loss == "contrastive" else 1
        order = lambda rng: pk_order(data.train_labels, p, k, steps * world, rng)  # noqa: E731
        return BatchPlan("pk", TrackSamples, views, batch, steps, order, notes)

    batch = max(1, params.batch_size // world)
    if params.loss == "triplet":
        if tp.mining == "none" and len(data.triplets) == 0:
            raise ValueError("no training triplets: check data/groundtruth/train_triplets.csv")
        n_pool, make = len(data.triplets), TripletSamples
    else:
        n_pool, make = n_train, TrackSamples
    steps = tp.steps_per_epoch or max(1, math.ceil(n_pool / batch / world))
    n_items = steps * batch * world

    def order(rng: np.random.Generator) -> np.ndarray:
        # Whole passes, each a fresh permutation: an item repeats within a batch only where two
        # passes meet.
        return np.concatenate([rng.permutation(n_pool) for _ in range(-(-n_items // n_pool))])[:n_items]

    return BatchPlan("triplets", make, views, batch, steps, order, notes)


@dataclass
class Run:
    """What `setup` builds for a training run and the epochs carry forward."""

    model: torch.nn.Module        # the embedder (its weights go into the checkpoints)
    net: torch.nn.Module          # the model, wrapped in DistributedDataParallel when distributed
    head: torch.nn.Module | None  # the projection head of the contrastive losses
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    plan: BatchPlan
    device: torch.device
    use_amp: bool
    ident: str                    # `run_identity`: which checkpoint may be resumed
    out: Path
    rank: int = 0
    world: int = 1
    state: dict = field(default_factory=lambda: {"epoch": 0, "best": -math.inf, "stale": 0, "history": []})


def setup(params: Params, data: TrainData, out_dir: str | Path) -> Run:
    """Device (and the process group under torchrun), batch plan, model, loss and optimiser;
    resumed from `out_dir/last.pt` when a run of the same identity left it unfinished."""
    tp = params.train
    rank, local_rank, world = _dist_info()
    device = embed.select_device(tp.device, "train.device")
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(data.train_tracks) < 2:
        raise ValueError("fewer than two training tracks: nothing to learn from")
    plan = plan_batches(params, data, world)
    if rank == 0:
        for line in plan.notes:
            print(line)

    torch.manual_seed(params.seed)  # initial weights and dropout: the only users of global RNG
    # musicnn reads its own front end as it was trained; the others a standardised log-mel
    mean, std = data.input_stats if models.input_frontend(params.model_params) == "db" else (0.0, 1.0)
    model = embed.build(params.model_params, params.features, mean, std).to(device)
    data.trunk_cache = cache_trunk(model, data, params, device, verbose=rank == 0)
    head = None
    groups = models.param_groups(model, tp.lr, tp.weight_decay)
    if params.loss in ("contrastive", "supcon"):
        head = models.ProjectionHead(params.model_params.embedding_dim, tp.projection_dim).to(device)
        groups.append({"params": list(head.parameters()), "lr": tp.lr, "weight_decay": tp.weight_decay})
    loss_fn = losses.build(params.loss, tp.margin, tp.mining, tp.temperature, world > 1,
                           from_labels=plan.sampler == "pk").to(device)
    optimizer = torch.optim.Adam(groups, lr=tp.lr, weight_decay=tp.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, tp.epochs))
    use_amp = tp.amp and device.type == "cuda"
    run = Run(model, model, head, loss_fn, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=use_amp),
              plan, device, use_amp, run_identity(params, data), out, rank, world)
    _resume(run, params)
    if data.trunk_cache is not None:
        run.net = embed.Head(model)  # steps feed the cached trunk outputs to the head alone
    if world > 1:
        run.net = torch.nn.parallel.DistributedDataParallel(
            run.net, device_ids=[device.index] if device.type == "cuda" else None)
    return run


def _resume(run: Run, params: Params) -> None:
    """Continue from last.pt when a run of the same identity left it unfinished."""
    last = run.out / "last.pt"
    if not last.exists():
        return
    ckpt = read_checkpoint(last, map_location=run.device)
    finished = ckpt.get("state", {}).get("epoch", 0) >= params.train.epochs or \
        ckpt.get("state", {}).get("stale", 0) >= params.train.patience
    if ckpt.get("ident") == run.ident and finished:
        if run.rank == 0:
            print(f"{last} is a finished run: starting afresh")
    elif ckpt.get("ident") == run.ident:
        run.model.load_state_dict(ckpt["model"])
        if run.head is not None and ckpt.get("head"):
            run.head.load_state_dict(ckpt["head"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        run.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["rng"])
        run.state = ckpt["state"]
        if run.rank == 0:
            print(f"resuming from {last} after epoch {run.state['epoch']}")
    elif run.rank == 0:
        print(f"{last} was made with other settings, data or code: starting afresh")


def save_checkpoint(run: Run, params: Params, path: Path) -> None:
    """The run as it stands: the model to embed with, and all that resuming needs."""
    checkpoint.save({
        "model_name": params.model, "model_params": dataclasses.asdict(params.model_params),
        "feature_params": dataclasses.asdict(params.features), "loss": params.loss,
        "seed": params.seed, "ident": run.ident, "model": run.model.state_dict(),
        "head": run.head.state_dict() if run.head is not None else None,
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(), "rng": torch.get_rng_state(), "state": run.state,
    }, path)


def train_epoch(run: Run, params: Params, data: TrainData, live=None, progress: bool = True) -> float:
    """One epoch of optimiser steps over this process's share of the batches; the mean loss."""
    tp, plan, device = params.train, run.plan, run.device
    epoch, batch = run.state["epoch"], plan.batch
    order = plan.order(_rng(params.seed, epoch, -1))
    # equal shares of whole batches: DDP needs equal step counts, P x K batches stay whole
    order = order.reshape(-1, batch)[run.rank::run.world][:plan.steps].ravel()
    dataset = plan.make(data, params.augment, params.seed, order, epoch, plan.views)
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=tp.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    run.model.train()
    if run.head is not None:
        run.head.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tp.epochs}", unit="batch",
               total=min(len(loader), plan.steps), disable=not progress or run.rank != 0)
    for x, labels in bar:
        x = x.to(device, non_blocking=True)
        labels = labels.to(device)
        b, k = x.shape[:2]
        if labels.dim() == 1:  # one label per track: the same for each of its k views
            labels = labels[:, None].expand(b, k)
        with torch.autocast(device.type, dtype=torch.float16, enabled=run.use_amp):
            # views laid out [view 0 of every item; view 1 of every item; ...]
            emb = run.net(x.transpose(0, 1).reshape(b * k, *x.shape[2:]))
            flat = labels.transpose(0, 1).reshape(-1)
            if params.loss == "triplet":
                loss = run.loss_fn(emb.float(), flat)
            elif params.loss == "supcon":
                loss = run.loss_fn(run.head(emb).float(), flat)
            else:
                z = run.head(emb).float()
                loss = run.loss_fn(z[:b], z[b:])
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        total += float(loss.detach())
        count += 1
        if live is not None and run.rank == 0:
            live.log_metric("train/loss", float(loss.detach()))
            live.next_step()
        bar.set_postfix(loss=f"{total / count:.4f}")
    return total / max(1, count)


def end_epoch(run: Run, params: Params, data: TrainData, loss: float, live=None) -> None:
    """After an epoch: the scheduler's step, validation, early-stopping count, logs, checkpoints."""
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    state, epoch = run.state, run.state["epoch"]
    val = validation_accuracy(run.model, data, run.device, 256) if run.rank == 0 else float("nan")
    state["epoch"] = epoch + 1
    improved = not math.isnan(val) and val > state["best"]
    if math.isnan(val) or improved:
        state["best"] = val if improved else state["best"]
        state["stale"] = 0
    else:
        state["stale"] += 1
    row = {"epoch": epoch + 1, "loss": loss, "val_accuracy": val, "lr": lr}
    state["history"].append(row)
    if run.rank == 0:
        if live is not None:
            live.log_metric("epoch", epoch + 1, plot=False)
            live.log_metric("train/epoch_loss", row["loss"])
            live.log_metric("val/odd_one_out_accuracy", val)
            live.log_metric("train/lr", lr)
        if improved or math.isnan(val) or not (run.out / "best.pt").exists():
            save_checkpoint(run, params, run.out / "best.pt")
        save_checkpoint(run, params, run.out / "last.pt")
        print(f"epoch {epoch + 1}: loss {row['loss']:.4f}  val odd-one-out {val:.3f}  lr {lr:.2e}"
              + ("  (best)" if improved else ""))
    if run.world > 1:
        # DDP hands rank 0's buffers to every process at each forward, so each process's last
        # batch-norm update differs; end every epoch with rank 0's, as the checkpoint has them
        for buffer in run.model.buffers():
            dist.broadcast(buffer, 0)
        # every process follows rank 0's early-stopping decision
        flag = torch.tensor([state["stale"]], device=run.device)
        dist.broadcast(flag, 0)
        state["stale"] = int(flag.item())


def fit(params: Params, data: TrainData, out_dir: str | Path, live=None,
        progress: bool = True) -> TrainResult:
    """Train the configured model; write `last.pt` and `best.pt` under `out_dir`.

    Resumes from `out_dir/last.pt` when it was written by a run of the same settings.
    """
    tp = params.train
    run = setup(params, data, out_dir)
    while run.state["epoch"] < tp.epochs and run.state["stale"] < tp.patience:
        loss = train_epoch(run, params, data, live, progress)
        end_epoch(run, params, data, loss, live)
    if run.rank == 0 and run.state["stale"] >= tp.patience:
        print(f"early stop: no validation gain for {tp.patience} epochs")
    return TrainResult(run.state["history"], run.model)
