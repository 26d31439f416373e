"""Run by tests/test_ddp.py under `torchrun`: a few real training steps per process, then each
process saves its weights so the test can compare them. `mode` is a loss name, or
`frozen_trunk`: musicnn with its backbone frozen, the head trained on cached trunk outputs."""
import os
import pickle
import sys
from pathlib import Path

import pandas as pd
import torch

from songspace import augment, config, features, train
from tests.tiny import TINY_PARAMS

paths = pickle.loads(bytes.fromhex(sys.argv[1]))
out, mode = Path(sys.argv[2]), sys.argv[3]
raw = {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "epochs": 2, "device": "cpu"}}
frontend, views = "db", paths["views"]
if mode == "frozen_trunk":
    frontend, views = "musicnn", None
    if os.environ["RANK"] == "0" and not (Path(paths["features"]) / "musicnn.npy").exists():
        tracks = pd.read_csv(paths["tracks"], dtype=str)
        spectra, _ = features.extract_library(tracks, config.from_dict(raw).features, "musicnn", workers=1,
                                              progress=False)
        features.save(paths["features"], spectra)
    torch.distributed.init_process_group("gloo")
    torch.distributed.barrier()  # rank 0 wrote the musicnn features
    raw.update(model="head", models={"head": {"arch": "musicnn", "pretrained": "MSD_musicnn", "freeze": "backbone",
                                              "band_stats": True, "batch_size": 8}},
               augment={"views": 0, "view_p": 0.0, **{n: {"p": 0.0} for n in augment.SPECTROGRAM_AUGMENTATIONS}})
    raw["train"].update(cached_segments=2, steps_per_epoch=3, labels_per_batch=2, tracks_per_label=2)
else:
    raw["loss"] = mode
params = config.from_dict(raw)
data = train.load_data(paths["features"], paths["groundtruth"], paths["tracks"], views, frontend=frontend)
result = train.fit(params, data, out, progress=False)
assert (data.trunk_cache is not None) == (mode == "frozen_trunk")
torch.save(result.model.state_dict(), out / f"rank{os.environ['RANK']}.pt")
