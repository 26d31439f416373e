"""musicnn (Pons & Serra, 2019) in PyTorch, its pretrained weights and the front end it was trained with.

The network, as `musicnn/models.py` of the `musicnn==0.1.0` wheel defines `build_musicnn`:

- front end, over a batch-normalised log-mel `(frames, 96)`: two timbral convolutions
  (7 frames x 38 and x 67 mel bands, 204 filters each) and three temporal ones (128, 64 and 32
  frames x 1 band, 51 filters each); each is conv -> ReLU -> batch norm -> max over frequency,
  and their outputs are stacked: 561 features per frame;
- mid end: three 1-D convolutions over time (7 frames, 64 filters; conv -> ReLU -> batch norm),
  the second and third with residual connections; the front end's and the three layers'
  outputs are stacked (dense connections): 753 features per frame;
- back end: max and mean over time (753 each, interleaved as the original flattens them),
  batch norm, dropout 0.5, a 200-unit dense layer -> ReLU -> batch norm (the *penultimate*
  layer), dropout 0.5, the 50-tag output layer (sigmoid: the taggram).

The wheel's TensorFlow checkpoints (`MSD_musicnn`: Million Song Dataset tags; `MTT_musicnn`:
MagnaTagATune tags) are read and mapped onto `Musicnn` by `musicnn_weights`;
TensorFlow itself is never imported, nor is the wheel's Python code (it imports TensorFlow):
only its data files are used. `logmel` is the input those weights expect.

    net = load_pretrained("MTT_musicnn")               # eval mode
    out = net(logmel(wave)[:, None, :, :WINDOW_FRAMES]) # wave: (batch, samples) at 16 kHz
    out.penultimate                                     # (batch, 200)
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torchaudio
from torch import nn
from torch.nn import functional as F

from songspace.frontends import Frontend as InputFrontend
from songspace.models.cnn import ModelError
from songspace.models.musicnn_weights import CHECKPOINTS, load_weights

# The input the pretrained weights were trained on (musicnn/configuration.py, config.json)
SAMPLE_RATE = 16_000        # Hz, mono
N_FFT = 512                 # samples (32 ms)
HOP_LENGTH = 256            # samples (16 ms)
N_MELS = 96                 # mel bands (Slaney scale and norm, 0 Hz to Nyquist)
WINDOW_FRAMES = 187         # frames in one input window (3 s)
WINDOW_SECONDS = WINDOW_FRAMES * HOP_LENGTH / SAMPLE_RATE   # 2.992 s
LOG_GAIN = 10_000.0         # log10(LOG_GAIN * power + 1)

N_TAGS = 50
FRONTEND_FEATURES = 2 * 204 + 3 * 51            # 561 per frame
MIDEND_FILTERS = 64
POOLED_FEATURES = FRONTEND_FEATURES + 3 * MIDEND_FILTERS   # 753 per frame
PENULTIMATE_UNITS = 200
TF_BATCH_NORM_EPS = 1e-3    # tf.compat.v1.layers.batch_normalization's default (torch's is 1e-5)


class Outputs(NamedTuple):
    """Every output the original model exposes that the port checks; `taggram` is None
    for a network built without its tag layer."""

    taggram: torch.Tensor | None    # (batch, 50) sigmoid tag probabilities
    mean_pool: torch.Tensor         # (batch, 753) mid-end features, mean over time
    max_pool: torch.Tensor          # (batch, 753) the same, max over time
    penultimate: torch.Tensor       # (batch, 200)


# ---------------------------------------------------------------- front end (signal)


def logmel(wave: torch.Tensor | np.ndarray) -> torch.Tensor:
    """musicnn's input: 16 kHz mono `(..., samples)` -> `(..., 96, frames)` float32.

    Power mel spectrogram (n_fft 512, hop 256, Hann window, centred with reflect padding;
    Slaney mel scale and norm, as librosa's defaults), rounded through float16 as the
    original's extractor does, then `log10(10000 x + 1)`. `frames = samples // 256 + 1`; the
    network's training windows are `WINDOW_FRAMES` long.
    """
    wave = torch.as_tensor(wave, dtype=torch.float32)
    if wave.shape[-1] <= N_FFT // 2:
        raise ModelError(f"musicnn's front end needs more than {N_FFT // 2} samples (reflect padding), "
                         f"got {wave.shape[-1]}")
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, f_min=0.0,
        f_max=SAMPLE_RATE / 2, power=2.0, center=True, pad_mode="reflect", norm="slaney",
        mel_scale="slaney",
    ).to(wave.device)
    power = mel(wave).half().float()
    return torch.log10(LOG_GAIN * power + 1.0)


class MusicnnInput(InputFrontend):
    """musicnn's front end as a `frontends.Frontend`: `logmel`, fixed by the pretrained weights."""

    def n_fft(self, params=None) -> int:
        return N_FFT

    def frame_values(self, wave: torch.Tensor, params=None) -> torch.Tensor:
        return logmel(wave)

    def spectrogram(self, wave: torch.Tensor | np.ndarray, params=None) -> np.ndarray:
        with torch.no_grad():
            return logmel(wave).numpy()


FRONTEND = MusicnnInput("musicnn", SAMPLE_RATE, HOP_LENGTH, N_MELS, WINDOW_FRAMES)


# ---------------------------------------------------------------- network


def _batch_norm(dims: int, channels: int) -> nn.Module:
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(channels, eps=TF_BATCH_NORM_EPS)


class _FrequencyPooledConv(nn.Module):
    """conv -> ReLU -> batch norm -> max over frequency: `(b, 1, frames, mels)` -> `(b, filters, frames)`.

    `time_pad` (before, after) zero-pads the time axis first (the original pads explicitly for
    the timbral filters and uses TensorFlow's 'same' for the temporal ones: the same zeros)."""

    def __init__(self, filters: int, kernel: tuple[int, int], time_pad: tuple[int, int]):
        super().__init__()
        self.time_pad = time_pad
        self.conv = nn.Conv2d(1, filters, kernel)
        self.bn = _batch_norm(2, filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.pad(x, (0, 0, *self.time_pad)))
        if self.bn.training:
            return self.bn(F.relu(x)).amax(dim=3)
        # In eval mode the batch norm is a fixed affine map per filter, and it and the ReLU are
        # monotone: both commute with the max over frequency (a filter whose scale is negative
        # takes the min instead), so they run on the pooled `(b, filters, frames)` alone, not on
        # every band. The same function, a third less time (README "Performance").
        bn = self.bn
        pooled = x.amax(dim=3)
        falling = bn.weight < 0
        if falling.is_meta or bool(falling.any()):
            pooled = torch.where(falling[None, :, None], x.amin(dim=3), pooled)
        return F.batch_norm(F.relu(pooled), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                            False, 0.0, bn.eps)


def _same(kernel: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding for a stride-1 kernel: the odd extra zero goes after."""
    return (kernel - 1) // 2, kernel // 2


class Frontend(nn.Module):
    """Input batch norm + timbral and temporal filters: `(b, 1, frames, 96)` -> `(b, 561, frames)`."""

    def __init__(self, n_mels: int = N_MELS):
        super().__init__()
        self.input_bn = _batch_norm(2, 1)
        self.timbral = nn.ModuleList(
            _FrequencyPooledConv(204, (7, int(share * n_mels)), (3, 3)) for share in (0.4, 0.7)
        )
        self.temporal = nn.ModuleList(
            _FrequencyPooledConv(51, (k, 1), _same(k)) for k in (128, 64, 32)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_bn(x)
        return torch.cat([block(x) for block in (*self.timbral, *self.temporal)], dim=1)


class _TemporalConv(nn.Module):
    """conv over time (7 frames, zero-padded) -> ReLU -> batch norm: `(b, c, t)` -> `(b, 64, t)`."""

    def __init__(self, in_channels: int, filters: int = MIDEND_FILTERS):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, filters, 7, padding=3)
        self.bn = _batch_norm(1, filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Midend(nn.Module):
    """Dense 1-D convolutions with residuals: `(b, 561, t)` -> `(b, 753, t)` (input and the
    three layers' outputs stacked)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(
            [_TemporalConv(FRONTEND_FEATURES), _TemporalConv(MIDEND_FILTERS), _TemporalConv(MIDEND_FILTERS)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.layers[0](x)
        out2 = self.layers[1](out1) + out1
        out3 = self.layers[2](out2) + out2
        return torch.cat([x, out1, out2, out3], dim=1)


class Backend(nn.Module):
    """Temporal pooling and the dense layers: `(b, 753, t)` -> pools, penultimate, logits."""

    def __init__(self, n_tags: int | None = N_TAGS):
        super().__init__()
        self.pool_bn = _batch_norm(1, 2 * POOLED_FEATURES)
        self.dense = nn.Linear(2 * POOLED_FEATURES, PENULTIMATE_UNITS)
        self.dense_bn = _batch_norm(1, PENULTIMATE_UNITS)
        self.dropout = nn.Dropout(0.5)
        self.tags = nn.Linear(PENULTIMATE_UNITS, n_tags) if n_tags else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        max_pool, mean_pool = x.amax(dim=2), x.mean(dim=2)
        # the original concatenates (b, 753, 1) pools on the last axis, then flattens:
        # max and mean alternate feature by feature
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)
        hidden = self.dropout(self.pool_bn(pooled))
        penultimate = self.dense_bn(F.relu(self.dense(hidden)))
        logits = self.tags(self.dropout(penultimate)) if self.tags is not None else None
        return mean_pool, max_pool, penultimate, logits


class Musicnn(nn.Module):
    """musicnn: `(batch, 1, 96, frames)` log-mels (`logmel`) -> `Outputs`.

    The project's layout is `(batch, 1, n_mels, frames)`; musicnn's own is `(batch, frames, 96)`:
    the transpose happens here. Any number of frames >= 1 works; the weights were trained on
    windows of `WINDOW_FRAMES`. `n_tags=None` leaves the tag layer out (a backbone).
    """

    input_frontend = FRONTEND.name  # needs `logmel`, not the features stage's log-mel
    normalise_input = False         # its first layer is a batch norm with trained statistics

    def __init__(self, n_tags: int | None = N_TAGS):
        super().__init__()
        self.frontend = Frontend()
        self.midend = Midend()
        self.backend = Backend(n_tags)

    def forward(self, x: torch.Tensor) -> Outputs:
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != N_MELS:
            raise ModelError(f"musicnn takes (batch, 1, {N_MELS}, frames) log-mels, got {tuple(x.shape)}")
        features = self.midend(self.frontend(x.transpose(2, 3)))
        mean_pool, max_pool, penultimate, logits = self.backend(features)
        return Outputs(torch.sigmoid(logits) if logits is not None else None, mean_pool, max_pool, penultimate)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The 200-unit penultimate layer of `(batch, 1, 96, frames)` log-mels: `(batch, 200)`."""
        return self.forward(x).penultimate


# ---------------------------------------------------------------- pretrained weights


def checkpoints_of(pretrained: str) -> list[str]:
    """The wheel checkpoints a `pretrained` setting names: one, or several joined by '+'."""
    names = pretrained.split("+")
    for name in names:
        if name not in CHECKPOINTS:
            raise ModelError(f"pretrained '{name}' is unknown; choose one of: {', '.join(CHECKPOINTS)}")
    return names


def load_pretrained(name: str, n_tags: int | None = N_TAGS) -> Musicnn:
    """musicnn with the weights of checkpoint `name` ("MSD_musicnn" | "MTT_musicnn"), in eval mode."""
    return load_weights(Musicnn(n_tags), name).eval()


class Penultimate(nn.Module):
    """A pretrained musicnn as a fixed embedder: `(batch, 1, 96, frames)` -> its 200-unit
    penultimate layer `(batch, 200)` (the untrained-embedding baseline)."""

    input_frontend = FRONTEND.name

    def __init__(self, net: Musicnn):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.penultimate(x)


# ---------------------------------------------------------------- statistics of the input


def band_flux(bands: torch.Tensor) -> torch.Tensor:
    """`(batch, bands, frames)` log-mels -> `(batch, bands)`: each band's mean absolute change
    from one frame to the next (0 for a single frame)."""
    if bands.shape[-1] < 2:
        return bands.new_zeros(bands.shape[:-1])
    return bands.diff(dim=-1).abs().mean(-1)
