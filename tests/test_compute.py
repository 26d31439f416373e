"""Per-song work on each engine: the same results locally (one or two processes) and on a real
two-CPU Ray cluster, every song exactly once even when a worker process dies mid-batch."""
from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from songspace import compute, compute_ray
from songspace.config import ComputeParams
from songspace.errors import UserError

# Ray's own DataContext warns of its deprecated settings each time it copies itself.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


class Ragged:
    """A worker whose results have a shape of their own per song, a string and a None."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def result(self, item: dict) -> dict:
        rng = np.random.default_rng(item["seed"])
        frames = self.scale * rng.standard_normal((item["frames"], 3)).astype(np.float32)
        return {"key": item["key"], "frames": frames, "name": item["key"].upper(), "none": None}

    def __call__(self, batch: list[dict]) -> list[dict]:
        return [self.result(item) for item in batch]


class DiesOnce(Ragged):
    """Kills its own process in the middle of the batch holding `victim`, the first time only
    (the marker file remembers, across processes)."""

    def __init__(self, marker: str, victim: str):
        super().__init__()
        self.marker, self.victim = Path(marker), victim

    def __call__(self, batch: list[dict]) -> list[dict]:
        out = []
        for item in batch:
            if item["key"] == self.victim and not self.marker.exists():
                self.marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            out.append(self.result(item))
        return out


class AlwaysDies(Ragged):
    def __call__(self, batch: list[dict]) -> list[dict]:
        os.kill(os.getpid(), signal.SIGKILL)


def songs(n: int = 13) -> list[dict]:
    return [{"key": f"song{i:02d}", "seed": i, "frames": 1 + (i * 7) % 5} for i in range(n)]


def by_key(results) -> dict[str, dict]:
    results = list(results)
    keyed = {r["key"]: r for r in results}
    assert len(keyed) == len(results)  # each song once
    return keyed


def assert_same(got: dict[str, dict], want: dict[str, dict]) -> None:
    assert sorted(got) == sorted(want)
    for key, w in want.items():
        g = got[key]
        np.testing.assert_array_equal(g["frames"], w["frames"])
        assert g["frames"].dtype == w["frames"].dtype
        assert (g["name"], g["none"]) == (w["name"], None)


def run(make_worker, items, **settings) -> dict[str, dict]:
    params = dataclasses.replace(ComputeParams(), batch_size=4, **settings)
    return by_key(compute.map_songs(make_worker, items, params, desc="test", progress=False))


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    # Two actors of one CPU each, and a third CPU for Ray Data's own tasks: an actor pool that
    # holds every CPU of a cluster can leave Ray Data nothing to schedule on (ray-project/ray#44687).
    ray.init(num_cpus=3, include_dashboard=False)
    yield
    ray.shutdown()


# Before the cluster fixture: the two-process local run forks this process, which is safest
# before Ray's threads start.
@pytest.mark.parametrize("workers", [1, 2])
def test_local_engine_matches_a_plain_loop(workers):
    items = songs()
    want = by_key(Ragged(2.0)(items))
    assert_same(run(functools.partial(Ragged, 2.0), items, engine="local", workers=workers), want)


def test_ray_engine_matches_a_plain_loop(cluster):
    items = songs()
    want = by_key(Ragged(2.0)(items))
    got = run(functools.partial(Ragged, 2.0), items, engine="ray", workers=2)
    assert_same(got, want)


def test_ray_reruns_the_batch_of_a_worker_killed_mid_batch(cluster, tmp_path):
    items = songs(10)
    marker = tmp_path / "died"
    make = functools.partial(DiesOnce, str(marker), victim="song05")  # the 2nd of its batch of 4
    got = run(make, items, engine="ray", workers=2)
    assert marker.exists()  # a worker did die
    assert_same(got, by_key(Ragged()(items)))


def test_ray_engine_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(UserError, match=r"pip install 'ray\[data\]'"):
        run(Ragged, songs(2), engine="ray")


def test_ray_fails_a_batch_whose_worker_dies_every_time(cluster, monkeypatch):
    monkeypatch.setattr(compute_ray, "TASK_RETRIES", 0)  # fail at the first death, not the 4th
    with pytest.raises(RuntimeError, match=r"died on each of 1 tries at one batch"):
        run(AlwaysDies, songs(4), engine="ray", workers=1)


def test_the_features_stage_on_ray_writes_what_the_local_engine_writes(cluster, tmp_path):
    """The real per-song work (decode, log-mels, both pretrained trunks) on a 2-actor cluster."""
    import hashlib

    from songspace import config, filecheck, library_features
    from tests.conftest import write_tone
    from tests.test_library_features import PARAMS

    rows = []
    for i in range(3):
        path = write_tone(tmp_path / "audio" / f"t{i}.wav", freqs=(220.0 * (i + 1),), seconds=4.0, seed=i)
        rows.append({"track_id": f"t{i}", "path": str(path), "sha1": filecheck.sha1_of(path)})
    tracks = pd.DataFrame(rows)
    outputs = {}
    # The local run in this process (1 worker): forking a process that runs Ray's threads is unsafe.
    for engine, workers in (("local", 1), ("ray", 2)):
        params = config.from_dict({**PARAMS, "compute": {"engine": engine, "workers": workers, "batch_size": 1,
                                                         "cache_dir": str(tmp_path / f"cache-{engine}")}})
        library_features.build(tracks, params, tmp_path / engine, progress=False)
        outputs[engine] = {f.name: hashlib.sha1(f.read_bytes()).hexdigest()
                           for f in sorted((tmp_path / engine).iterdir())}
    assert outputs["ray"] == outputs["local"]
