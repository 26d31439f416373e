"""A tiny real project for training tests: tone tracks of two labels, their log-mel segments,
ground-truth files and params small enough to train in seconds on a CPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from songspace import config, features, groundtruth, ingest
from songspace import views as cached_views
from tests.conftest import write_tone

LABEL_FREQS = {"low": (220.0, 330.0), "high": (1760.0, 2637.0)}
TINY_PARAMS = {
    "seed": 7,
    "model": "model1",
    "features": {"n_mels": 16, "n_fft": 256, "hop_length": 128, "segment_seconds": 0.5,
                 "segment_hop_seconds": 0.5, "max_segments": 2},
    # every augmentation on (params.yaml ships the spectrogram ones and the cached views off)
    "augment": {"views": 1, "segments": 2, "view_p": 0.25, "noise": {"p": 1.0, "strength": 0.5},
                "random_mask": {"p": 0.2}, "time_mask": {"p": 0.5}, "freq_mask": {"p": 0.5}},
    # one pass over the training data per epoch (params.yaml: 100 batches)
    "train": {"epochs": 3, "lr": 0.003, "batch_size": 8, "patience": 10, "num_workers": 0,
              "steps_per_epoch": None, "cached_segments": None},
    "models": {"model1": {"arch": "cnn", "channels": [4, 8], "fc": [32, 128], "batch_size": 8}},
    "groundtruth": {"train_triplets": 48, "test_quartets": 20, "val_quartets": 20},
}


def make_project(root: Path, tracks_per_label: int = 6, **overrides) -> tuple[config.Params, dict]:
    """Write tracks, features, views and ground truth under `root`; return (params, paths)."""
    raw = {**TINY_PARAMS, **overrides}
    params = config.from_dict(raw)
    rng = np.random.default_rng(0)
    rows = []
    for label, freqs in LABEL_FREQS.items():
        for i in range(tracks_per_label):
            f = tuple(x * (1 + 0.03 * i) for x in freqs)
            path = write_tone(root / "audio" / f"{label}{i}.wav", freqs=f, seconds=1.5, seed=i)
            rows.append({"track_id": f"{label}{i}", "path": str(path), "label": label, "duration_s": 1.5})
    tracks = pd.DataFrame(rows)
    ingest.write_tracks(tracks, root / "tracks.csv")
    split = {t: ("val" if int(t[-1]) >= tracks_per_label - 2 else "train") for t in tracks["track_id"]}
    gt = root / "groundtruth"
    gt.mkdir()
    groundtruth.write_splits(pd.DataFrame({"track_id": list(split), "split": list(split.values())}), gt / "splits.csv")
    train = [t for t, s in split.items() if s == "train"]
    val = [t for t, s in split.items() if s == "val"]
    lab = dict(zip(tracks["track_id"], tracks["label"]))
    trip = []
    for _ in range(params.groundtruth.train_triplets):
        a = rng.choice(train)
        p = rng.choice([t for t in train if lab[t] == lab[a] and t != a])
        n = rng.choice([t for t in train if lab[t] != lab[a]])
        trip.append((a, p, n))
    groundtruth.write_triplets(pd.DataFrame(trip, columns=list(groundtruth.TRIPLET_COLUMNS)), gt / "train_triplets.csv")
    quartets = []
    for _ in range(params.groundtruth.val_quartets):
        a = rng.choice(val)
        b = rng.choice([t for t in val if lab[t] == lab[a] and t != a])
        odd = rng.choice([t for t in val if lab[t] != lab[a]])
        songs = list(rng.permutation([a, b, odd]))
        quartets.append((*songs, odd))
    groundtruth.write_quartets(pd.DataFrame(quartets, columns=list(groundtruth.QUARTET_COLUMNS)), gt / "val_quartets.csv")
    spectra, _ = features.extract_library(tracks, params.features, workers=1, progress=False)
    features.save(root / "features", spectra)
    views, vindex, skipped = cached_views.extract_views(tracks[tracks["track_id"].isin(train)], params.features,
                                              params.augment, 1, params.seed, workers=1, progress=False)
    cached_views.save_views(root / "views", views, vindex, skipped)
    paths = {"features": root / "features", "views": root / "views", "groundtruth": gt,
             "tracks": root / "tracks.csv"}
    return params, paths
