"""Shared fixtures: tiny real audio written to disk."""
import os
from pathlib import Path

# Under `make test` two test processes share the cores: one thread each for torch and the BLAS
# pools, here and in the stages they start (more only contend).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import numpy as np
import pytest
import soundfile as sf


def write_tone(path: Path, freqs=(440.0,), seconds=4.0, rate=16000, channels=1, noise=0.01, seed=0):
    """A sine mixture plus a little noise, written with soundfile (format from the suffix)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs) * 0.5
    wave = wave + noise * rng.standard_normal(len(t))
    data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data.astype(np.float32), rate)
    return path


@pytest.fixture
def tone_file(tmp_path):
    def make(name="tone.wav", **kw):
        return write_tone(tmp_path / name, **kw)
    return make


# The longest test files first: `make test` hands whole files to two processes in this order,
# so the real `dvc repro` runs start at once instead of last.
LONGEST_FIRST = ("test_pipeline.py", "test_pipeline_tags.py", "test_manifest.py", "test_ddp.py",
                 "test_compute.py", "test_train.py", "test_halves.py", "test_bench.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
