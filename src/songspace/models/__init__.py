"""The model zoo: a registry of builders by `arch`, and models by name.

Every model maps log-mel segments `(batch, 1, n_mels, frames)` to embeddings
`(batch, embedding_dim)`. params.yaml names the model (`model: model3`); `models.model3` holds
its hyper-parameters, whose `arch` picks the builder in `ARCHS`.

    net = build_by_name(params.model, params.models, n_mels, frames)
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from songspace.config import ModelParams
from songspace.frontends import Frontend
from songspace.models import musicnn, musicnn_head
from songspace.models.cnn import THESIS_CNNS, ModelError, build_cnn, build_cnn_bn
from songspace.models.resnet import THESIS_RESNETS, build_resnet

__all__ = [
    "ARCHS",
    "THESIS_PRESETS",
    "ModelError",
    "build",
    "build_by_name",
    "count_parameters",
    "describe",
    "input_frontend",
    "input_shape",
    "param_groups",
    "thesis_preset",
]

Builder = Callable[[ModelParams, int, int], nn.Module]

ARCHS: dict[str, Builder] = {
    "cnn": build_cnn,
    "cnn_bn": build_cnn_bn,
    "resnet": build_resnet,
    "musicnn": musicnn_head.build_musicnn,
}

# Archs that take their own input instead of the features stage's log-mel: arch -> its front end
OWN_INPUTS: dict[str, Frontend] = {
    "musicnn": musicnn.FRONTEND,
}

# The eight models exactly as the thesis's tables print them (1x1 kernels, pools of size 1).
THESIS_PRESETS: dict[str, ModelParams] = {**THESIS_CNNS, **THESIS_RESNETS}


def build(params: ModelParams, n_mels: int, frames: int, seed: int | None = None) -> nn.Module:
    """The network `params` describes, for inputs `(batch, 1, n_mels, frames)`.

    With `seed`, the initial weights are a function of the seed alone: they are drawn from a
    forked RNG, so the caller's global torch RNG state is neither used nor changed.
    """
    if params.arch not in ARCHS:
        raise ModelError(
            f"arch '{params.arch}' is unknown; choose one of: {', '.join(sorted(ARCHS))}"
        )
    if seed is None:
        return ARCHS[params.arch](params, n_mels, frames)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ARCHS[params.arch](params, n_mels, frames)


def build_by_name(
    name: str,
    models: dict[str, ModelParams],
    n_mels: int,
    frames: int,
    seed: int | None = None,
) -> nn.Module:
    """The model `models[name]` (params.yaml's `models:` section), for `(n_mels, frames)` inputs."""
    if name not in models:
        raise ModelError(f"model '{name}' is unknown; choose one of: {', '.join(sorted(models))}")
    try:
        return build(models[name], n_mels, frames, seed=seed)
    except ModelError as err:
        raise ModelError(f"models.{name}: {err}") from None


def thesis_preset(name: str) -> ModelParams:
    """The thesis's own layout of model `name` (1x1 kernels, pools of size 1).

    These are faithful, not practical: at 64x94 the first linear layers of model1-model5 see
    every bin of the last conv's output (model4 and model5: about 790M parameters).
    """
    if name not in THESIS_PRESETS:
        raise ModelError(
            f"no thesis preset for '{name}'; choose one of: {', '.join(sorted(THESIS_PRESETS))}"
        )
    return THESIS_PRESETS[name]


def input_frontend(params: ModelParams) -> str:
    """The front end (`features.FRONTENDS`) a model reads: "db" (the params-driven log-mel) or
    the arch's own ("musicnn": `musicnn.logmel`, not mean/std normalised)."""
    return OWN_INPUTS[params.arch].name if params.arch in OWN_INPUTS else "db"


def input_shape(params: ModelParams, n_mels: int, frames: int) -> tuple[int, int]:
    """`(n_mels, frames)` of one input segment: the features stage's, or the arch's own."""
    if params.arch in OWN_INPUTS:
        fe = OWN_INPUTS[params.arch]
        return fe.n_mels, fe.segment_frames
    return n_mels, frames


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups: the pretrained layers at `lr * lr_factor`, the rest at `lr`;
    parameters without gradient (frozen) are left out.

    `model` may be wrapped (DDP, an Embedder): the pretrained parts are found among its modules.
    Models without pretrained layers give one group.
    """
    pretrained: dict[int, float] = {}
    for module in model.modules():
        if isinstance(module, musicnn_head.MusicnnEmbedding):
            pretrained.update({id(p): module.lr_factor for p in module.pretrained_parameters()})
    groups: dict[float, list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(pretrained.get(id(p), 1.0), []).append(p)
    return [{"params": ps, "lr": lr * factor, "weight_decay": weight_decay, "lr_factor": factor}
            for factor, ps in sorted(groups.items(), reverse=True)]


class ProjectionHead(nn.Module):
    """SimCLR projection head (dim -> dim -> out), used only during contrastive training."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out))

    def forward(self, x):
        return self.net(x)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe(models: dict[str, ModelParams], n_mels: int, frames: int) -> list[dict]:
    """One row per model: name, arch, parameters, output_shape, mflops, batch_size, input_shape.

    `output_shape` is the embedding shape of one segment; `mflops` the forward pass's
    floating-point operations for one `(1, 1, n_mels, frames)` segment in millions (a
    multiply-add counts 2; convolutions and linear layers only, as torch's FlopCounterMode
    counts). An arch with its own input (`OWN_INPUTS`) is described for that input. Models are
    built on the meta device: no weights are allocated and nothing is
    computed, so describing the thesis presets is cheap too.
    """
    rows = []
    for name in models:
        shape = input_shape(models[name], n_mels, frames)
        with torch.device("meta"):
            model = build_by_name(name, models, *shape).eval()
        x = torch.empty(1, 1, *shape, device="meta")
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            out = model(x)
        rows.append(
            {
                "name": name,
                "arch": models[name].arch,
                "parameters": count_parameters(model),
                "output_shape": tuple(out.shape[1:]),
                "mflops": counter.get_total_flops() / 1e6,
                "batch_size": models[name].batch_size,
                "input_shape": (1, *shape),
            }
        )
    return rows

