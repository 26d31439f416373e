import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.tiny import make_project

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["triplet", "contrastive", "frozen_trunk"])
def test_torchrun_two_processes_end_with_identical_weights(tmp_path, loss):
    _, paths = make_project(tmp_path / "data")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(ROOT / "tests" / "ddp_worker.py"), pickle.dumps(paths).hex(), str(out), loss]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    w0 = torch.load(out / "rank0.pt")
    w1 = torch.load(out / "rank1.pt")
    assert set(w0) == set(w1)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    initial = torch.load(out / "last.pt", weights_only=False)["state"]["history"]
    assert len(initial) == 2  # both epochs ran, rank 0 wrote the checkpoint
