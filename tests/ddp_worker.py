"""Run by tests/test_ddp.py under `torchrun`: a few real training steps per process, then each
process saves its weights so the test can compare them."""
import os
import pickle
import sys
from pathlib import Path

import torch

from songspace import config, train
from tests.tiny import TINY_PARAMS

paths = pickle.loads(bytes.fromhex(sys.argv[1]))
out, loss = Path(sys.argv[2]), sys.argv[3]
params = config.from_dict({**TINY_PARAMS, "loss": loss,
                           "train": {**TINY_PARAMS["train"], "epochs": 2, "device": "cpu"}})
data = train.load_data(paths["features"], paths["groundtruth"], paths["tracks"], paths["views"])
result = train.fit(params, data, out, progress=False)
torch.save(result.model.state_dict(), out / f"rank{os.environ['RANK']}.pt")
