"""The metric-learning model on musicnn (arch `musicnn`): the pretrained network up to its
penultimate layer (`musicnn.Musicnn`), what the head reads beside it, and the new embedding head.

It lives apart from the network (`musicnn`) because the per-song store stamps its products with
the network's code (`persong.NETWORK_CODE`): a change to the head or to what it reads changes no
stored network output, so it costs no song its work again.
"""
from __future__ import annotations

import torch
from torch import nn

from songspace.config_schema import FREEZE
from songspace.models.cnn import ModelError
from songspace.models.musicnn import (FRONTEND, N_MELS, PENULTIMATE_UNITS, POOLED_FEATURES, Musicnn, band_flux,
                                      checkpoints_of)
from songspace.models.musicnn_weights import load_weights


class MusicnnEmbedding(nn.Module):
    """Pretrained musicnn up to its penultimate layer + a new embedding head:
    `(batch, 1, 96, frames)` log-mels (`logmel`) -> `(batch, embedding_dim)`.

    `forward(x) = head(trunk(x))`. The trunk is the 200-unit penultimate layer, followed with
    `band_stats` by each mel band's mean and standard deviation over the segment's frames (the
    timbre summary that log-mel statistics capture and the tag-trained layers partly discard),
    then with `band_flux` by each band's mean absolute change from one frame to the next
    (`band_flux`: how fast the sound moves in each band, which a mean and a deviation do not tell),
    then by the penultimate layers of `others` more pretrained networks (`others`: their count;
    `build_musicnn` loads a checkpoint into each), then with `mid_end` by the first network's
    mid-end features pooled over the segment's time, mean then max (753 + 753: the layer below the
    penultimate one, before the tag-trained dense layer reduces it to 200).
    The head is a linear layer (`head_hidden` 0), or, with `head_hidden` units, batch-norm
    standardisation of the trunk's output, a hidden ReLU layer and the linear output; with
    `band_stats`, `band_flux` or `mid_end` and no hidden layer, standardisation and the linear output.

    `freeze` names the pretrained part that gets no gradient: "none", "frontend" (input batch
    norm and the timbral/temporal filters) or "backbone" (everything but the head). Frozen parts
    stay in eval mode when the model trains (batch-norm statistics fixed, dropout off). With the
    backbone frozen the trunk is a fixed function, so training may compute it once per segment
    (`trunk_frozen`, `train.cached_segments`). `lr_factor` scales the learning rate of the
    pretrained layers (`models.param_groups`).
    """

    input_frontend = FRONTEND.name
    normalise_input = False

    def __init__(self, embedding_dim: int = 128, freeze: str = "none", lr_factor: float = 1.0,
                 head_hidden: int = 0, band_stats: bool = False, others: int = 0, mid_end: bool = False,
                 band_flux: bool = False):
        super().__init__()
        if freeze not in FREEZE:
            raise ModelError(f"freeze '{freeze}' is unknown; choose one of: {', '.join(FREEZE)}")
        if not lr_factor >= 0:
            raise ModelError(f"lr_factor must be >= 0, got {lr_factor}")
        if head_hidden < 0:
            raise ModelError(f"head_hidden must be >= 0, got {head_hidden}")
        self.backbone = Musicnn(n_tags=None)
        self.others = nn.ModuleList(Musicnn(n_tags=None) for _ in range(others))
        self.band_stats, self.mid_end, self.band_flux = bool(band_stats), bool(mid_end), bool(band_flux)
        self.trunk_dim = (PENULTIMATE_UNITS * (1 + others) + (2 * N_MELS if self.band_stats else 0)
                          + (N_MELS if self.band_flux else 0) + (2 * POOLED_FEATURES if self.mid_end else 0))
        if head_hidden == 0 and not (self.band_stats or self.mid_end or self.band_flux):
            self.head: nn.Module = nn.Linear(self.trunk_dim, embedding_dim)
        else:
            layers: list[nn.Module] = [nn.BatchNorm1d(self.trunk_dim, affine=False)]
            if head_hidden:
                layers += [nn.Linear(self.trunk_dim, head_hidden), nn.ReLU()]
            layers.append(nn.Linear(head_hidden or self.trunk_dim, embedding_dim))
            self.head = nn.Sequential(*layers)
        self.freeze = freeze
        self.lr_factor = float(lr_factor)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train()

    @property
    def trunk_frozen(self) -> bool:
        """Whether `trunk` has no trainable part (its output for a segment never changes)."""
        return self.freeze == "backbone"

    def frozen_modules(self) -> list[nn.Module]:
        nets = [self.backbone, *self.others]
        return {"none": [], "frontend": [n.frontend for n in nets], "backbone": nets}[self.freeze]

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """The parameters of the pretrained networks (`models.param_groups` scales their lr)."""
        return [p for n in (self.backbone, *self.others) for p in n.parameters()]

    def train(self, mode: bool = True) -> MusicnnEmbedding:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """`(batch, 1, 96, frames)` -> `(batch, trunk_dim)`: the input of the head."""
        first = self.backbone(x)
        parts = [first.penultimate]
        bands = x.flatten(1, -2)  # (batch, 96, frames)
        if self.band_stats:
            parts += [bands.mean(-1), bands.std(-1, correction=0)]
        if self.band_flux:
            parts.append(band_flux(bands))
        parts += [net.penultimate(x) for net in self.others]
        if self.mid_end:
            parts += [first.mean_pool, first.max_pool]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def build_musicnn(params, n_mels: int, frames: int) -> MusicnnEmbedding:
    """The registry's builder (arch `musicnn`): `MusicnnEmbedding` with checkpoint
    `params.pretrained` loaded, for `(batch, 1, 96, frames)` inputs.

    On the meta device (`models.describe`) the weights are not loaded: shapes only.
    """
    if n_mels != N_MELS:
        raise ModelError(f"musicnn takes {N_MELS} mel bands (its own front end, `musicnn.logmel`), "
                         f"got {n_mels}")
    if frames < 1:
        raise ModelError(f"musicnn needs at least one frame, got {frames}")
    names = checkpoints_of(params.pretrained)
    model = MusicnnEmbedding(params.embedding_dim, params.freeze, params.lr_factor,
                             params.head_hidden, params.band_stats, others=len(names) - 1,
                             mid_end=params.mid_end, band_flux=params.band_flux)
    if not next(model.head.parameters()).is_meta:
        for net, name in zip((model.backbone, *model.others), names):
            load_weights(net, name)
    return model
