"""torchvision ResNets adapted to one-channel log-mel segments (arch `resnet`).

`(batch, 1, n_mels, frames)` -> `(batch, embedding_dim)`. The network is torchvision's, built
with `weights=None` (randomly initialised; nothing is downloaded). Two layers change: the first
conv takes one channel instead of three (7x7, stride 2, padding 3, no bias, as torchvision's),
and the classifier `fc` gives `embedding_dim` outputs. The network downsamples by 32 and ends
in a global average pool, so any input size works; 64x94 reaches layer4 as 2x3.
"""
from __future__ import annotations

from torch import nn

from songspace.config import ModelParams
from songspace.models.cnn import ModelError

# torchvision's builder of each depth, by name: torchvision is imported when a ResNet is built
# (its import pulls in torch's compiler, seconds that every stage would pay otherwise)
DEPTHS: dict[int, str] = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}


def build_resnet(params: ModelParams, n_mels: int, frames: int) -> nn.Module:
    """A ResNet of `params.depth` layers: `(batch, 1, n_mels, frames)` -> `(batch, embedding_dim)`.

    `n_mels` and `frames` do not change the network (global average pool); they are taken so that
    every builder has the same signature.
    """
    if params.depth not in DEPTHS:
        raise ModelError(
            f"resnet depth {params.depth} is unknown; choose one of: "
            f"{', '.join(str(d) for d in DEPTHS)}"
        )
    import torchvision

    model = getattr(torchvision.models, DEPTHS[params.depth])(weights=None)
    model.conv1 = nn.Conv2d(1, model.conv1.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Linear(model.fc.in_features, params.embedding_dim)
    return model


THESIS_RESNETS: dict[str, ModelParams] = {
    "resnet18": ModelParams(arch="resnet", depth=18, batch_size=128),
    "resnet50": ModelParams(arch="resnet", depth=50, batch_size=128),
}
