"""Where per-song work runs: this machine (`compute.engine: local`) or a Ray cluster (`ray`).

The work is a *worker*: an object built once per process (it loads its networks once) and then
called on batches of songs, `worker(batch: list[dict]) -> list[dict]`, one result per song.
`make_worker()` builds it; it must pickle (a class or a `functools.partial` of one), because it
travels to the worker processes. Results come back to the calling process, which alone writes
them (`songstore`), so a batch a crashed worker had half done and that is then retried can never
leave an entry written twice or half written.

- `local`: `compute.workers` processes of this machine (one: in this process); no Ray needed.
- `ray`: Ray Data `map_batches` over an actor pool of `compute.workers` actors, each reserving
  `cpus_per_worker` CPUs and `gpus_per_worker` GPUs, on the cluster at `compute.address`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from songspace.config import ComputeParams

Worker = Callable[[list[dict]], list[dict]]

_WORKER: Worker | None = None  # the one worker of a local worker process


def batches(items: list[dict], size: int) -> list[list[dict]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _init_local(make_worker: Callable[[], Worker]) -> None:
    import torch

    torch.set_num_threads(1)  # one song at a time per process; more threads only contend
    global _WORKER
    _WORKER = make_worker()


def _run_local(batch: list[dict]) -> list[dict]:
    assert _WORKER is not None
    return _WORKER(batch)


def _local(make_worker: Callable[[], Worker], items: list[dict], compute: ComputeParams) -> Iterator[dict]:
    workers = max(1, min(compute.workers, os.cpu_count() or 1))
    parts = batches(items, compute.batch_size)
    if workers == 1 or len(parts) == 1:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)  # the same arithmetic as in a worker process: identical outputs
        try:
            worker = make_worker()
            for part in parts:
                yield from worker(part)
        finally:
            torch.set_num_threads(before)
        return
    with ProcessPoolExecutor(workers, initializer=_init_local, initargs=(make_worker,)) as pool:
        for out in pool.map(_run_local, parts):
            yield from out


def map_songs(make_worker: Callable[[], Worker], items: list[dict], compute: ComputeParams,
              desc: str, progress: bool = True) -> Iterator[dict]:
    """Run the worker over `items` (one dict per song) on the configured engine; yields each
    song's result as it arrives (order not guaranteed), with a progress bar (rate and ETA)."""
    if not items:
        return
    if compute.engine == "ray":
        from songspace import compute_ray

        results = compute_ray.map_songs(make_worker, items, compute)
    else:
        results = _local(make_worker, items, compute)
    yield from tqdm(results, total=len(items), desc=desc, unit="song", disable=not progress)
