"""A trained network and log-mel segments -> segment and track embeddings.

`Embedder` wraps a backbone with the input normalisation fitted on the training segments, so a
checkpoint holds everything needed to embed new audio. A track's embedding is the mean of its
segments' embeddings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import checkpoint, features, filesegments, models
from .config import FeatureParams, ModelParams
from .errors import one_line


class Embedder(torch.nn.Module):
    """`(batch, 1, n_mels, frames)` log-mel in dB -> `(batch, embedding_dim)`."""

    def __init__(self, backbone: torch.nn.Module, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)

    @property
    def trunk_frozen(self) -> bool:
        """Whether the backbone splits into a fixed trunk and a trainable head (`Trunk`, `Head`)."""
        return bool(getattr(self.backbone, "trunk_frozen", False))


class Trunk(torch.nn.Module):
    """The fixed part of an embedder whose `trunk_frozen`: log-mel segments -> the head's input."""

    def __init__(self, embedder: Embedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedder
        return e.backbone.trunk((x - e.mean) / e.std)


class Head(torch.nn.Module):
    """The trainable part of an embedder whose `trunk_frozen`: `Trunk` outputs -> embeddings."""

    def __init__(self, embedder: Embedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedder.backbone.head(x)


def build(model_params: ModelParams, feature_params: FeatureParams,
          mean: float = 0.0, std: float = 1.0) -> Embedder:
    """A fresh embedder for a model's settings (random weights, or pretrained ones where the model
    starts from a pretrained network), for segments of its front end."""
    fe = features.frontend(models.input_frontend(model_params), feature_params)
    backbone = models.build(model_params, fe.n_mels, fe.segment_frames)
    return Embedder(backbone, mean, std)


def select_device(name: str, key: str = "device") -> torch.device:
    """cpu, cuda, or auto (cuda when available); `key` names the setting in the error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{key} is 'cuda' but no CUDA device is available")
    return torch.device(name)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Embedder, dict]:
    """Rebuild a model from a checkpoint file alone: `(embedder in eval mode, metadata)`."""
    path = Path(path)
    ckpt = checkpoint.load(path, map_location=device)
    try:
        model_params = ModelParams(**ckpt["model_params"])
        feature_params = FeatureParams(**ckpt["feature_params"])
        model = build(model_params, feature_params)
        model.load_state_dict(ckpt["model"])
    except checkpoint.CheckpointError:
        raise  # pretrained weights the model is built on (musicnn's): that file is named, not this one
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise checkpoint.CheckpointError(f"{path}: not a songspace checkpoint ({one_line(err)})") from None
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scheduler", "rng")}
    meta["feature_params"] = feature_params
    meta["model_params"] = model_params
    return model.to(device).eval(), meta


def embed_segments(model: torch.nn.Module, segments: np.ndarray, batch_size: int = 256,
                   device: str | torch.device = "cpu", progress: bool = False) -> np.ndarray:
    """Embed log-mel segments `(n, n_mels, frames)` -> `(n, d)` float32, in eval mode, no grad."""
    model.eval()
    out = []
    starts = range(0, len(segments), batch_size)
    with torch.no_grad():
        for s in tqdm(starts, desc="embed", unit="batch", disable=not progress):
            x = torch.from_numpy(np.array(segments[s : s + batch_size], dtype=np.float32))
            out.append(model(x.unsqueeze(1).to(device)).float().cpu().numpy())
    if not out:
        dim = getattr(model, "embedding_dim", 128)
        return np.zeros((0, dim), np.float32)
    return np.concatenate(out)


def apply_head(model: Embedder, trunk_out, batch_size: int = 4096,
               device: str | torch.device = "cpu") -> np.ndarray:
    """Embeddings `(n, d)` float32 (on the CPU) from the outputs `(n, trunk_dim)` (array or tensor)
    of a `trunk_frozen` model's trunk (`Trunk`), in eval mode, no grad."""
    model.eval()
    head, x = Head(model), torch.as_tensor(np.asarray(trunk_out, np.float32))
    with torch.no_grad():
        parts = [head(part.to(device)).float().cpu() for part in x.split(batch_size)]
        return torch.cat(parts or [head(x.to(device)).float().cpu()]).numpy()


@dataclass
class TrunkCache:
    """Outputs of a model's frozen trunk, computed once per segment: the head trains on these rows
    instead of crops (identical inputs to the head, without the backbone's cost every step)."""

    train: torch.Tensor                  # (n, trunk_dim) of the training tracks' segments
    rows: list[np.ndarray]               # per training track: its rows of `train`
    val: torch.Tensor                    # (m, trunk_dim) of the validation tracks' segments
    val_index: pd.DataFrame              # per row of `val`: its track_id (`Spectra.segments` index)


def cache_trunk(model: Embedder, spectra: features.Spectra, train_tracks: list[str],
                val_tracks: list[str], n: int, device="cpu", verbose: bool = True) -> TrunkCache:
    """A `trunk_frozen` model's trunk outputs for up to `n` segments of each training track (spread
    over the whole track like `features.segment_starts`) and for the validation tracks' segments
    (`spectra`'s own settings)."""
    grid = features.Spectra(spectra.array, spectra.table, spectra.fe,
                            dataclasses.replace(spectra.params, max_segments=n))
    trunk = Trunk(model)
    windows, index = grid.segments(train_tracks)
    if verbose:
        print(f"frozen trunk: computing its outputs for {len(index)} training segments once")
    train = embed_segments(trunk, windows, batch_size=64, device=device, progress=verbose)
    by_track = features.rows_by_track(index)
    vwindows, vindex = spectra.segments(val_tracks)
    val = embed_segments(trunk, vwindows, batch_size=64, device=device)
    return TrunkCache(torch.from_numpy(train), [by_track[t] for t in train_tracks],
                      torch.from_numpy(val), vindex)


def track_means(segment_emb: np.ndarray, index: pd.DataFrame, track_ids: list[str]) -> np.ndarray:
    """Mean segment embedding per track, in the order of `track_ids`: `(len(track_ids), d)`."""
    rows = features.rows_by_track(index)
    missing = [t for t in track_ids if t not in rows]
    if missing:
        raise KeyError(f"no segments for {len(missing)} track(s), e.g. {missing[:3]}")
    return np.stack([segment_emb[rows[t]].mean(axis=0) for t in track_ids]).astype(np.float32)


def embed_tracks(model: torch.nn.Module, segments: np.ndarray, index: pd.DataFrame,
                 track_ids: list[str], batch_size: int = 256, device: str = "cpu",
                 progress: bool = False) -> np.ndarray:
    """Embeddings of the given tracks (mean of their segments): `(len(track_ids), d)`."""
    rows = features.rows_by_track(index)
    wanted = np.concatenate([rows[t] for t in track_ids]) if track_ids else np.zeros(0, int)
    sub_index = index.iloc[wanted].copy()
    sub_index["row"] = np.arange(len(wanted))
    # windows are read batch by batch: the whole library's segments need not fit in memory
    subset = segments.take(wanted) if isinstance(segments, features.Windows) else segments[wanted]
    emb = embed_segments(model, subset, batch_size, device, progress)
    return track_means(emb, sub_index, track_ids)


def embed_file(model: torch.nn.Module, path: str | Path, feature_params: FeatureParams,
               device: str = "cpu", max_seconds: float | None = None) -> np.ndarray:
    """Embedding `(d,)` of one audio file, outside any library: the mean over its segments.

    Only the segments' audio is decoded; a file longer than `max_seconds` (None: no limit) is
    refused from its header with audio.AudioTooLong (`filesegments.file_segments`)."""
    fe = features.frontend(frontend_of(model), feature_params)
    segments = filesegments.file_segments(path, fe, feature_params, max_seconds)
    return embed_segments(model, segments, device=device).mean(axis=0)


def frontend_of(model: torch.nn.Module) -> str:
    """The front end an embedder reads ('db' unless its backbone says otherwise)."""
    backbone = getattr(model, "backbone", model)
    return getattr(backbone, "input_frontend", "db")
