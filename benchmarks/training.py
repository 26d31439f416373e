"""Training benchmarks: segments per second of each model's training step, against model3.

One step is forward + backward + Adam on a batch of Gaussian noise shaped like log-mel
segments, with the project's loss. CPU always; on CUDA also in fp32 and under fp16 autocast.
"""
from __future__ import annotations

import time
from typing import Iterable

import torch

from benchmarks.harness import item, median, side
from songspace.config import ModelParams

REFERENCE_MODEL = "model3"      # training throughput is compared with the default model


def train_step_times(model_params: ModelParams, n_mels: int, frames: int, batch: int = 32, steps: int = 5,
                     repeats: int = 3, loss: str = "triplet", device: str | torch.device = "cpu",
                     amp: bool = False, seed: int = 0, warmup_steps: int = 2) -> list[float]:
    """Seconds per training step (forward + backward + Adam) of a fresh model, one value per run.

    Input: `(batch, 1, n_mels, frames)` Gaussian noise. Loss: the project's (`losses.build`):
    triplet on the first 3 * (batch // 3) embeddings laid out as [anchors; positives;
    negatives], contrastive on the two halves. `amp`: fp16 autocast with a GradScaler, as
    `train.fit` does on CUDA (ignored elsewhere). Each run times `steps` steps; CUDA is
    synchronised before the clock is read.
    """
    from songspace import losses, models

    device = torch.device(device)
    use_amp = amp and device.type == "cuda"
    n_mels, frames = models.input_shape(model_params, n_mels, frames)
    net = models.build(model_params, n_mels, frames, seed=seed).to(device).train()
    loss_fn = losses.build(loss).to(device)
    opt = torch.optim.Adam(models.param_groups(net, lr=1e-4))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, n_mels, frames, generator=gen).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            emb = net(x)
        emb = emb.float()
        if loss == "triplet":
            value = loss_fn(emb[: 3 * (batch // 3)])
        else:
            half = batch // 2
            value = loss_fn(emb[:half], emb[half: 2 * half])
        opt.zero_grad(set_to_none=True)
        scaler.scale(value).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup_steps):
        step()
    sync()
    runs = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        runs.append((time.perf_counter() - t0) / steps)
    del net, opt
    return runs


def bench_training(models: dict[str, ModelParams], n_mels: int, frames: int, names: Iterable[str] | None = None,
                   batch: int = 32, steps: int = 5, repeats: int = 3, loss: str = "triplet",
                   reference: str = REFERENCE_MODEL, threads: int | None = None, seed: int = 0,
                   cuda: bool | None = None, progress: bool = True) -> list[dict]:
    """Training throughput (segments per second) of each model vs `reference` (model3).

    CPU always (`threads` torch threads; None: torch's default); on CUDA when available (or
    `cuda=True`), in fp32 (`train.cuda.<name>`, vs the reference in fp32) and with fp16 autocast
    (`train.cuda_amp.<name>`, vs the same model in fp32). Items: `train.cpu.<name>` etc.
    """
    from tqdm import tqdm

    names = list(names) if names is not None else list(models)
    unknown = [n for n in [*names, reference] if n not in models]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; params.yaml `models:` has {', '.join(models)}")
    if reference not in names:
        names = [reference, *names]
    cuda = torch.cuda.is_available() if cuda is None else cuda
    configs = [("cpu", False)] + ([("cuda", False), ("cuda", True)] if cuda else [])
    per_s = dict(rate_per_s=float(batch), rate_unit="segments/s")
    items = []
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        times: dict[tuple[str, bool, str], list[float]] = {}
        jobs = [(dev, amp, n) for dev, amp in configs for n in names]
        for dev, amp, n in tqdm(jobs, desc="training", unit="model", disable=not progress):
            times[dev, amp, n] = train_step_times(models[n], n_mels, frames, batch, steps, repeats, loss,
                                                  dev, amp, seed)
        for dev, amp in configs:
            tag = {("cpu", False): "cpu", ("cuda", False): "cuda", ("cuda", True): "cuda_amp"}[dev, amp]
            n_threads = torch.get_num_threads()
            where = (f"CPU, {n_threads} thread{'s' if n_threads > 1 else ''}" if dev == "cpu"
                     else torch.cuda.get_device_name(0))
            for n in names:
                ours = side(f"{n}{' fp16 autocast' if amp else ''}", times[dev, amp, n], **per_s)
                if amp:
                    alt = side(f"{n} fp32", times[dev, False, n], **per_s)
                    ref = times[dev, True, reference]
                    extra = {"vs_reference_amp": median(ref) / ours["median_s"]}
                else:
                    alt = side(f"{reference}{' (reference)' if n == reference else ''}",
                               times[dev, False, reference], **per_s)
                    extra = {}
                items.append(item(f"train.{tag}.{n}", "training",
                                  f"training step {n}, batch {batch} x {n_mels}x{frames}, {where}"
                                  + (", fp16 vs fp32" if amp else f", vs {reference}"),
                                  ours, alt, model=n, device=dev, amp=amp, batch=batch, loss=loss,
                                  threads=torch.get_num_threads() if dev == "cpu" else None, **extra))
    finally:
        torch.set_num_threads(before)
    return items

