"""The spectrogram-level augmentation cores, and the error every augmentation raises.

Log-mel tensors `(..., n_mels, frames)`; every leading index is one item with its own draws from
a `torch.Generator`. `noise`, `random_mask`, `time_mask` (SpecAugment) and `freq_mask` take an
explicit strength; `augment` draws their settings from params.yaml's `augment:` and applies
them (`augment.augment_spectrogram`).
"""
from __future__ import annotations

import torch

from songspace.errors import UserError


class AugmentError(UserError, ValueError):
    """An augmentation name or setting that cannot be used; the message says which and why."""


def _items(spec: torch.Tensor) -> torch.Tensor:
    """View `(..., n_mels, frames)` as `(items, n_mels, frames)`; every leading index is one item."""
    if spec.ndim < 2:
        raise AugmentError(f"expected a spectrogram (..., n_mels, frames), got shape {tuple(spec.shape)}")
    if not spec.is_floating_point():
        raise AugmentError(f"expected a floating-point spectrogram, got {spec.dtype}")
    return spec.reshape(-1, *spec.shape[-2:])


def _rand(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(like.device)


def noise(
    spec: torch.Tensor, strength: float, generator: torch.Generator, p: float = 1.0
) -> torch.Tensor:
    """Additive Gaussian noise scaled to each item's own standard deviation.

    spec `(..., n_mels, frames)` -> same shape and dtype: `x + strength * std(x) * N(0, 1)`, std
    over the item's (n_mels, frames); each item is noised with probability `p`.
    """
    x = _items(spec)
    apply = _rand((x.shape[0],), generator, x) < p
    gauss = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
    scale = strength * x.float().std(dim=(1, 2), unbiased=False) * apply
    return (x + (scale[:, None, None] * gauss).to(x.dtype)).reshape(spec.shape)


def random_mask(spec: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Set each time-frequency bin to its item's minimum (silence) with probability `p`.

    spec `(..., n_mels, frames)` -> same shape and dtype.
    """
    x = _items(spec)
    masked = _rand(tuple(x.shape), generator, x) < p
    floor = x.amin(dim=(1, 2), keepdim=True)
    return torch.where(masked, floor, x).reshape(spec.shape)


def _band_mask(starts: torch.Tensor, widths: torch.Tensor, size: int) -> torch.Tensor:
    """`(items, count)` band starts and widths -> bool `(items, size)`, True inside any band."""
    index = torch.arange(size, device=starts.device)
    inside = (index >= starts[..., None]) & (index < (starts + widths)[..., None])
    return inside.any(dim=1)


def _draw_bands(
    items: int, count: int, max_width: int, size: int, p: float, generator: torch.Generator,
    like: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random bands: widths uniform in [0, max_width] (0 for items not drawn with `p`), starts
    uniform over the positions where the band fits in `size`."""
    apply = _rand((items,), generator, like) < p
    max_width = min(int(max_width), size)
    widths = (_rand((items, count), generator, like) * (max_width + 1)).long().clamp(max=max_width)
    widths = widths * apply[:, None]
    starts = (_rand((items, count), generator, like) * (size - widths + 1)).long()
    return starts, widths


def fill_bands(x: torch.Tensor, starts: torch.Tensor, widths: torch.Tensor, axis: int) -> torch.Tensor:
    """Set bands of `x` `(items, n_mels, frames)` along `axis` (1: mel bins, 2: frames) to each
    item's mean; starts and widths `(items, count)`."""
    masked = _band_mask(starts, widths, x.shape[axis]).unsqueeze(3 - axis)
    return torch.where(masked, x.mean(dim=(1, 2), keepdim=True), x)


def time_mask(
    spec: torch.Tensor, max_frames: int, count: int, generator: torch.Generator, p: float = 1.0
) -> torch.Tensor:
    """SpecAugment time masking: `count` bands of up to `max_frames` frames set to the item's mean.

    spec `(..., n_mels, frames)` -> same shape and dtype; each item is masked with probability `p`.
    """
    return _mask_bands(spec, max_frames, count, generator, p, axis=2)


def freq_mask(
    spec: torch.Tensor, max_bins: int, count: int, generator: torch.Generator, p: float = 1.0
) -> torch.Tensor:
    """SpecAugment frequency masking: `count` bands of up to `max_bins` mel bins set to the mean.

    spec `(..., n_mels, frames)` -> same shape and dtype; each item is masked with probability `p`.
    """
    return _mask_bands(spec, max_bins, count, generator, p, axis=1)


def _mask_bands(spec: torch.Tensor, max_width: int, count: int, generator: torch.Generator, p: float,
                axis: int) -> torch.Tensor:
    """`count` bands of up to `max_width` along `axis` (1: mel bins, 2: frames) set to the mean."""
    x = _items(spec)
    starts, widths = _draw_bands(x.shape[0], count, max_width, x.shape[axis], p, generator, x)
    return fill_bands(x, starts, widths, axis=axis).reshape(spec.shape)
