"""Front ends: what a model reads, each one object (`Frontend`) that knows its name, sample rate,
hop, mel bands, frames per segment and how to compute its spectrogram.

- `db` (`DbFrontend`, `db(params)`): the params-driven log-mel in dB (torchaudio, HTK mel
  scale), clipped `TOP_DB` below the loudest bin of each call (a whole track or a segment);
- `musicnn` (`models.musicnn.FRONTEND`): the pretrained musicnn network's own input (16 kHz,
  n_fft 512, hop 256, 96 Slaney mel bands, `log10(10000 x + 1)`, windows of 187 frames),
  whatever `features.*` says.

`features.frontend(name, params)` picks one by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
import torchaudio

from songspace.config import FeatureParams

TOP_DB = 80.0


@dataclass(frozen=True)
class Frontend:
    """What a model's input is: the log-mel's shape and rate, one segment's frames, and how it is
    computed (`spectrogram`; in parts, `frame_values` then `finish`)."""

    name: str
    sample_rate: int
    hop_length: int
    n_mels: int
    segment_frames: int

    # whether a frame's value depends on the whole track (then `finish` needs its loudest value)
    whole_track: ClassVar[bool] = False

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def n_fft(self, params: FeatureParams) -> int:
        """Samples under one frame's window."""
        raise NotImplementedError

    def frame_values(self, wave: torch.Tensor, params: FeatureParams) -> torch.Tensor:
        """`(..., samples)` -> `(..., n_mels, frames)`: each frame's values before any step that
        looks at the whole track."""
        raise NotImplementedError

    def finish(self, values: torch.Tensor, loudest: torch.Tensor | None, params: FeatureParams):
        """`frame_values`' frames -> the spectrogram's, given the whole track's `loudest` value."""
        return values

    def spectrogram(self, wave: np.ndarray | torch.Tensor, params: FeatureParams) -> np.ndarray:
        """`(..., samples)` at `sample_rate` -> `(..., n_mels, frames)` float32."""
        raise NotImplementedError


@lru_cache(maxsize=8)
def _db_transform(params: FeatureParams) -> torch.nn.Module:
    return torch.nn.Sequential(
        torchaudio.transforms.MelSpectrogram(
            sample_rate=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length,
            n_mels=params.n_mels, f_min=params.f_min, f_max=params.f_max, power=2.0),
        torchaudio.transforms.AmplitudeToDB(stype="power", top_db=TOP_DB),
    )


def logmel(wave: np.ndarray | torch.Tensor, params: FeatureParams) -> torch.Tensor:
    """The `db` front end: `(..., samples)` -> `(..., n_mels, frames)` float32 log-mel in dB.

    `top_db` clipping is relative to the loudest bin of each call (a whole track or a segment).
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    with torch.no_grad():
        return _db_transform(params)(x)


class DbFrontend(Frontend):
    """The params-driven log-mel in dB: its frame values are mel power, and the dB floor lies
    `TOP_DB` under the whole track's loudest bin."""

    whole_track = True

    def n_fft(self, params: FeatureParams) -> int:
        return params.n_fft

    def frame_values(self, wave: torch.Tensor, params: FeatureParams) -> torch.Tensor:
        return _db_transform(params)[0](wave)

    def finish(self, values: torch.Tensor, loudest: torch.Tensor | None, params: FeatureParams) -> np.ndarray:
        to_db = _db_transform(params)[1]
        scale = (to_db.multiplier, to_db.amin, to_db.db_multiplier)
        db = torchaudio.functional.amplitude_to_DB(values, *scale, top_db=None)
        floor = torchaudio.functional.amplitude_to_DB(loudest, *scale, top_db=None) - to_db.top_db
        return torch.maximum(db, floor).numpy()

    def spectrogram(self, wave: np.ndarray | torch.Tensor, params: FeatureParams) -> np.ndarray:
        return logmel(wave, params).numpy()


def db(params: FeatureParams) -> DbFrontend:
    """The `db` front end under `params`."""
    return DbFrontend("db", params.sample_rate, params.hop_length, params.n_mels, params.frames)
