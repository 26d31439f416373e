"""The training loop: fit(params, data, out_dir) -> history, with checkpoints.

- Triplet loss on ground-truth triplets (or triplets mined by label), or NT-Xent on two augmented
  views per track (contrastive), chosen by `params.loss`.
- The data it reads is `train_data.TrainData`; its batches are planned and drawn by
  `train_batches`, each sample from a generator seeded by (seed, epoch, sample), so a run is
  reproducible whatever the number of loader workers.
- Validation odd-one-out accuracy per epoch, early stopping on it, `best.pt` and `last.pt`.
- Resume: `last.pt` holds model, optimiser, scheduler, RNG state and epoch; a killed run started
  again continues from it.
- CUDA when available (mixed precision), several GPUs or CPU processes with `torchrun` (DDP).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import checkpoint, codegraph, embed, evaluate, losses, models
from .checkpoint import load as read_checkpoint
from .config import TRIPLET_LOSSES, Params
# what training reads and how its batches are made: importable from here too
from .train_batches import BatchPlan, TrackSamples, TripletSamples, pk_order, plan_batches, sample_rng  # noqa: F401
from .train_data import TrainData, cache_trunk, load_data, stored_trunk_cache  # noqa: F401


@functools.cache
def training_code() -> tuple[Path, ...]:
    """The code a run's result depends on: this module and every package module it imports,
    transitively (`codegraph.code_files`; the train stage's deps in dvc.yaml are checked against
    the same walk). A change in any of them starts training afresh. Walked once per process."""
    return tuple(codegraph.code_files(__name__))


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
class Run:
    """What `setup` builds for a training run and the epochs carry forward."""

    model: torch.nn.Module        # the embedder (its weights go into the checkpoints)
    net: torch.nn.Module          # the model, wrapped in DistributedDataParallel when distributed
    projection: torch.nn.Module | None  # the projection head of the contrastive losses
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    grad_scaler: torch.amp.GradScaler  # mixed precision's loss scaling
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
    if data.trunk_cache is None and tp.segments_per_draw > 1 and rank == 0:
        print(f"train.segments_per_draw: {tp.segments_per_draw} is ignored: it averages cached trunk "
              "outputs, and this run trains on crops")
    projection = None
    groups = models.param_groups(model, tp.lr, tp.weight_decay)
    if params.loss in ("contrastive", "supcon"):
        projection = models.ProjectionHead(params.model_params.embedding_dim, tp.projection_dim).to(device)
        groups.append({"params": list(projection.parameters()), "lr": tp.lr, "weight_decay": tp.weight_decay})
    loss_fn = losses.build(params.loss, tp.margin, tp.mining, tp.temperature, world > 1,
                           from_labels=plan.sampler == "pk").to(device)
    optimizer = torch.optim.Adam(groups, lr=tp.lr, weight_decay=tp.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, tp.epochs))
    use_amp = tp.amp and device.type == "cuda"
    run = Run(model, model, projection, loss_fn, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=use_amp),
              plan, device, use_amp, run_identity(params, data), out, rank, world)
    _resume(run, params)
    if data.trunk_cache is not None:
        run.net = embed.Head(model)  # steps feed the cached trunk outputs to the embedding head alone
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
        if run.projection is not None and ckpt.get("projection"):
            run.projection.load_state_dict(ckpt["projection"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        run.grad_scaler.load_state_dict(ckpt["grad_scaler"])
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
        "projection": run.projection.state_dict() if run.projection is not None else None,
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "grad_scaler": run.grad_scaler.state_dict(), "rng": torch.get_rng_state(), "state": run.state,
    }, path)


def train_epoch(run: Run, params: Params, data: TrainData, live=None, progress: bool = True) -> float:
    """One epoch of optimiser steps over this process's share of the batches; the mean loss."""
    tp, plan, device = params.train, run.plan, run.device
    epoch, batch = run.state["epoch"], plan.batch
    order = plan.order(sample_rng(params.seed, epoch, -1))
    # equal shares of whole batches: DDP needs equal step counts, P x K batches stay whole
    order = order.reshape(-1, batch)[run.rank::run.world][:plan.steps].ravel()
    dataset = plan.make(data, params.augment, params.seed, order, epoch, plan.views,
                        tp.segments_per_draw)
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=tp.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    run.model.train()
    if run.projection is not None:
        run.projection.train()
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
            if params.loss in TRIPLET_LOSSES:
                loss = run.loss_fn(emb.float(), flat)
            elif params.loss == "supcon":
                loss = run.loss_fn(run.projection(emb).float(), flat)
            else:
                z = run.projection(emb).float()
                loss = run.loss_fn(z[:b], z[b:])
        run.optimizer.zero_grad(set_to_none=True)
        run.grad_scaler.scale(loss).backward()
        run.grad_scaler.step(run.optimizer)
        run.grad_scaler.update()
        total += float(loss.detach())
        count += 1
        if live is not None and run.rank == 0:
            # A row per batch, written at once; dvclive's summary and report once per epoch
            # (`end_epoch`): its `next_step` rereads every curve, which per batch grows with the run.
            live.log_metric("train/loss", float(loss.detach()))
            live.step += 1
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
        if live is not None:
            live.sync()
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


def continue_steps(live) -> None:
    """Move a resumed dvclive run's step past every row its curves hold: dvclive resumes from the
    step of its last summary (written once per epoch), and a run killed mid-epoch has logged
    batches after it."""
    last = live.step - 1
    for tsv in Path(live.plots_dir, "metrics").rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if len(lines) > 1:
            last = max(last, int(lines[-1].split("\t", 1)[0]))
    live.step = last + 1


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
