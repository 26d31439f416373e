"""The Ray engine of `compute`: per-song work as Ray Data `map_batches` over an actor pool.

Each actor builds the worker once (`make_worker()`) and is then handed batches of
`compute.batch_size` songs. Songs and results travel through Ray as pickled bytes, one row per
song (`{"i": position in items, "item"|"result": bytes}`): results hold arrays of varying
shapes, strings and None, which Ray's columnar blocks do not carry as they are. The driver
decodes each result as it streams in and alone writes it (`compute`).

Exactly once: an actor whose process dies in the middle of a batch (killed, out of memory, a
crash in native code) is restarted, and its batch is rerun on it, up to `TASK_RETRIES` times;
then the run fails. The driver drops any result whose song (its position in `items`, which
holds even where two items share a key) has come back already, so every song yields exactly
one result even if Ray ever delivered a rerun batch's results twice.

Ray is imported here only: the local engine runs without it.
"""
from __future__ import annotations

import pickle
import sys
import warnings
from collections.abc import Callable, Iterator

import numpy as np

from songspace.config import ComputeParams
from songspace.errors import UserError

Worker = Callable[[list[dict]], list[dict]]

TASK_RETRIES = 3  # reruns of a batch whose actor died; a song that kills every worker fails the run


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise UserError("compute.engine ray needs Ray Data: pip install 'ray[data]' "
                        "(requirements.txt pins its version)") from err
    return ray


def connect(address: str) -> None:
    """Join the Ray cluster at `address` (`auto`: the one `ray start --head` runs on this
    machine; or host:port). With `auto` and no cluster running, start a local one in this
    process; it lives as long as the process. A cluster joined is never shut down here."""
    ray = _import_ray()
    if ray.is_initialized():  # joined already: an earlier run in this process, or the caller's own
        return
    try:
        ray.init(address=address)
    except ConnectionError as err:
        if address != "auto":
            raise UserError(f"compute.address {address}: no Ray cluster answers there ({err}); "
                            "start one with `ray start --head`") from err
        print("compute: no Ray cluster on this machine (`ray start --head` starts one); "
              "running on a local Ray started in this process")
        ray.init(address="local")  # "local": a new instance, never a search for one again


class _Batches:
    """One actor of the pool: builds the worker once, then maps batches of pickled songs."""

    def __init__(self, make_worker: Callable[[], Worker], threads: int):
        self.worker = make_worker()
        # Torch's threads: the CPUs this actor reserved. A worker that loads no networks has not
        # imported torch and needs none (were it to load torch later, Ray's OMP_NUM_THREADS, the
        # same count, would apply).
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [pickle.loads(b) for b in batch["item"]]
        results = self.worker(items)
        if len(results) != len(items):
            raise RuntimeError(f"a worker returned {len(results)} results for {len(items)} songs")
        out = np.empty(len(results), dtype=object)
        out[:] = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in results]
        return {"i": batch["i"], "result": out}


def map_songs(make_worker: Callable[[], Worker], items: list[dict],
              compute: ComputeParams) -> Iterator[dict]:
    """Each song's result, as it arrives (in no set order), from `compute.workers` actors each
    reserving `cpus_per_worker` CPUs and `gpus_per_worker` GPUs on the cluster at
    `compute.address`. Joins the cluster at once (before any progress bar); the work starts on
    the first result asked for."""
    ray = _import_ray()
    connect(compute.address)
    rows = [{"i": i, "item": pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)}
            for i, item in enumerate(items)]
    n_batches = -(-len(rows) // compute.batch_size)
    # One block per batch: a retry reruns one batch, and batches spread evenly over the actors.
    ds = ray.data.from_items(rows, override_num_blocks=n_batches)
    with warnings.catch_warnings():
        # Ray 2.60 takes restarts and retries only as `ray_remote_args`, which it marks as
        # deprecated; its own default (-1, -1) would retry a song that kills every worker forever.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map_batches(
            _Batches,
            fn_constructor_args=(make_worker, max(1, int(compute.cpus_per_worker))),
            compute=ray.data.ActorPoolStrategy(size=compute.workers),
            batch_size=compute.batch_size,
            batch_format="numpy",
            num_cpus=compute.cpus_per_worker,
            num_gpus=compute.gpus_per_worker,
            udf_modifying_row_count=False,
            max_restarts=-1,
            max_task_retries=TASK_RETRIES,
        )
    ds.context.enable_progress_bars = False  # compute.map_songs draws the one progress bar
    ds.context.print_on_execution_start = False
    return _results(ray, ds, len(items))


def _results(ray, ds, n: int) -> Iterator[dict]:
    """The decoded results of `ds`'s rows as they stream in, each song's once."""
    seen: set[int] = set()
    try:
        for row in ds.iter_rows():
            i = int(row["i"])
            if i in seen:
                continue
            seen.add(i)
            yield pickle.loads(row["result"])
    except ray.exceptions.RayActorError as err:
        raise RuntimeError(f"compute: a Ray worker process died on each of {TASK_RETRIES + 1} "
                           "tries at one batch (out of memory, or a crash in native code on one "
                           "of its songs)") from err
    if len(seen) != n:
        raise RuntimeError(f"compute: Ray returned {len(seen)} of {n} songs' results")
