"""The thesis's plain CNNs (model1-model5, arch `cnn`) and its batch-normalised CNN (model6, arch `cnn_bn`).

Both map log-mel segments `(batch, 1, n_mels, frames)` to embeddings `(batch, embedding_dim)`.

`cnn`:    [conv -> ReLU -> max-pool(block_pool)] per entry of `channels`, then one max-pool(pool),
          Dropout2d, then the linear layers of `fc` with ReLU between them (none after the last).
`cnn_bn`: [conv -> BatchNorm -> LeakyReLU -> max-pool(block_pool)] per entry of `channels`, then
          one max-pool(pool), dropout, then the linear layers of `fc` with LeakyReLU between them.

The thesis's tables print 1x1 kernels and pools of size 1 (`THESIS_CNNS`); with those the
first linear layer sees every time-frequency bin of every channel (model5: 64*64*94 inputs to a
2048-unit layer, 789M weights at 64x94). The defaults in params.yaml instead use 3x3 kernels
and a 2x2 max-pool after every conv block (`block_pool`), which see local time-frequency
patterns and keep the linear layers small. A pool of size 1 is the identity and is left out of
the network, so `block_pool: 1, pool: 1` is exactly the thesis's layout.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from songspace.config import ModelParams
from songspace.errors import UserError


class ModelError(UserError, ValueError):
    """A model's hyper-parameters cannot build a network for the given input."""


class ConvNet(nn.Module):
    """Convolutional features followed by a fully connected head.

    `features`: `(batch, 1, n_mels, frames)` -> `(batch, channels[-1], h, w)`;
    `head`: flattened `(batch, channels[-1] * h * w)` -> `(batch, fc[-1])`.
    """

    def __init__(self, features: nn.Sequential, head: nn.Sequential):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def feature_shape(params: ModelParams, n_mels: int, frames: int) -> tuple[int, int, int]:
    """`(channels, height, width)` of the conv features for an `(n_mels, frames)` input.

    Convolutions keep the size ('same' padding); each max-pool of size k floors it to size // k,
    as `nn.MaxPool2d(k)` does.
    """
    height, width = n_mels, frames
    pools = [params.block_pool] * len(params.channels) + [params.pool]
    for k in pools:
        height, width = height // k, width // k
    if height < 1 or width < 1:
        raise ModelError(
            f"input {n_mels}x{frames} (n_mels x frames) is too small for {len(params.channels)} "
            f"conv blocks with block_pool {params.block_pool} and pool {params.pool}: the features "
            f"shrink to {height}x{width}; use smaller pools, fewer channels or longer segments"
        )
    return params.channels[-1], height, width


def _check(params: ModelParams) -> None:
    if not params.channels:
        raise ModelError(f"arch '{params.arch}' needs at least one entry in `channels`")
    if not params.fc:
        raise ModelError(f"arch '{params.arch}' needs at least one entry in `fc`")
    if params.fc[-1] != params.embedding_dim:
        raise ModelError(
            f"the last linear layer gives the embedding: fc[-1] is {params.fc[-1]} but "
            f"embedding_dim is {params.embedding_dim}"
        )
    if min(params.channels) < 1 or min(params.fc) < 1:
        raise ModelError(f"channels and fc must be positive, got {params.channels} and {params.fc}")
    if params.kernel < 1 or params.block_pool < 1 or params.pool < 1:
        raise ModelError(
            f"kernel, block_pool and pool must be >= 1, got {params.kernel}, "
            f"{params.block_pool} and {params.pool}"
        )
    if not 0.0 <= params.dropout < 1.0:
        raise ModelError(f"dropout must lie in [0, 1), got {params.dropout}")


def _pool(size: int) -> list[nn.Module]:
    return [nn.MaxPool2d(size)] if size > 1 else []


def _head(in_features: int, sizes: tuple[int, ...], activation: type[nn.Module]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, size in enumerate(sizes):
        if i:
            layers.append(activation())
        layers.append(nn.Linear(in_features, size))
        in_features = size
    return layers


def _conv_blocks(params: ModelParams, after_conv) -> list[nn.Module]:
    """One block per entry of params.channels: a same-padded convolution, `after_conv(channels)`
    (activation, normalisation), then the block pooling."""
    _check(params)
    layers: list[nn.Module] = []
    in_channels = 1
    for out_channels in params.channels:
        layers += [nn.Conv2d(in_channels, out_channels, params.kernel, padding="same"),
                   *after_conv(out_channels), *_pool(params.block_pool)]
        in_channels = out_channels
    return layers


def build_cnn(params: ModelParams, n_mels: int, frames: int) -> ConvNet:
    """model1-model5: `(batch, 1, n_mels, frames)` -> `(batch, embedding_dim)`."""
    layers = _conv_blocks(params, lambda c: [nn.ReLU()])
    layers += [*_pool(params.pool), nn.Dropout2d(params.dropout)]
    flat = math.prod(feature_shape(params, n_mels, frames))
    return ConvNet(nn.Sequential(*layers), nn.Sequential(*_head(flat, params.fc, nn.ReLU)))


def build_cnn_bn(params: ModelParams, n_mels: int, frames: int) -> ConvNet:
    """model6: `(batch, 1, n_mels, frames)` -> `(batch, embedding_dim)`."""
    layers = _conv_blocks(params, lambda c: [nn.BatchNorm2d(c), nn.LeakyReLU()])
    layers += _pool(params.pool)
    flat = math.prod(feature_shape(params, n_mels, frames))
    head = [nn.Dropout(params.dropout), *_head(flat, params.fc, nn.LeakyReLU)]
    return ConvNet(nn.Sequential(*layers), nn.Sequential(*head))


# The thesis's tables: 1x1 kernels, pools of size 1 (one after the convs; model6 one per block).
THESIS_CNNS: dict[str, ModelParams] = {
    name: ModelParams(
        arch=arch, channels=channels, fc=fc, kernel=1, block_pool=1, pool=1, batch_size=batch
    )
    for name, arch, channels, fc, batch in [
        ("model1", "cnn", (32, 64), (128,), 32),
        ("model2", "cnn", (32, 64, 128), (512, 256, 128), 32),
        ("model3", "cnn", (32, 64, 128, 128), (512, 256, 128), 128),
        ("model4", "cnn", (32, 64, 128, 128), (1024, 512, 256, 128), 128),
        ("model5", "cnn", (32, 64, 128, 128, 64), (2048, 1024, 512, 256, 128), 128),
        ("model6", "cnn_bn", (32, 64, 128, 64), (1024, 256, 128), 64),
    ]
}
