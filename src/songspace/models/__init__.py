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
    "thesis_preset",
]

Builder = Callable[[ModelParams, int, int], nn.Module]

ARCHS: dict[str, Builder] = {
    "cnn": build_cnn,
    "cnn_bn": build_cnn_bn,
    "resnet": build_resnet,
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


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe(models: dict[str, ModelParams], n_mels: int, frames: int) -> list[dict]:
    """One row per model: name, arch, parameters, output_shape, mflops, batch_size.

    `output_shape` is the embedding shape of one segment; `mflops` the forward pass's
    floating-point operations for one `(1, 1, n_mels, frames)` segment in millions (a
    multiply-add counts 2; convolutions and linear layers only, as torch's FlopCounterMode
    counts). Models are built on the meta device: no weights are allocated and nothing is
    computed, so describing the thesis presets is cheap too.
    """
    rows = []
    for name in models:
        with torch.device("meta"):
            model = build_by_name(name, models, n_mels, frames).eval()
        x = torch.empty(1, 1, n_mels, frames, device="meta")
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
            }
        )
    return rows


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups: every trainable parameter at `lr`."""
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr,
             "weight_decay": weight_decay}]
