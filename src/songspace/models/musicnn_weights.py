"""musicnn's pretrained weights: the TensorFlow checkpoints inside the `musicnn==0.1.0` wheel,
found (not imported: the wheel's modules import TensorFlow), read by `tfcheckpoint` and mapped
onto the PyTorch port's state dict (`models.musicnn.Musicnn`).

    load_weights(model, "MTT_musicnn")   # strict: every shape must match
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from songspace.config_schema import PRETRAINED
from songspace.errors import one_line
from songspace.models.cnn import ModelError
from songspace.models.tfcheckpoint import CheckpointError, read_bundle

CHECKPOINTS = PRETRAINED  # the checkpoints in the musicnn wheel
WHEEL = "musicnn==0.1.0"


def checkpoint_dir(name: str) -> Path:
    """The folder of checkpoint `name` inside the installed musicnn wheel (found, not imported:
    the wheel's modules import TensorFlow)."""
    if name not in CHECKPOINTS:
        raise ModelError(f"pretrained '{name}' is unknown; choose one of: {', '.join(CHECKPOINTS)}")
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"the musicnn weights are not installed: pip install --no-deps {WHEEL} "
                              "(`make setup` does)")
    return Path(list(spec.submodule_search_locations)[0]) / name


def _conv_weight(kernel: np.ndarray) -> np.ndarray:
    """TensorFlow's conv kernel (kh, kw, in, out) -> torch's Conv2d weight (out, in, kh, kw)."""
    return kernel.transpose(3, 2, 0, 1)


def _conv1d_weight(kernel: np.ndarray) -> np.ndarray:
    """A mid-end kernel (7, features, 1, out), a conv2d spanning every feature -> Conv1d (out, features, 7)."""
    return kernel[:, :, 0, :].transpose(2, 1, 0)


def state_dict_from_tf(tensors: dict[str, np.ndarray], tags: bool = True) -> dict[str, torch.Tensor]:
    """`Musicnn`'s state dict from the checkpoint's variables (Adam slots are ignored).

    TensorFlow names layers by creation order (`conv2d`, `conv2d_1`, ...;
    `batch_normalization`, `_1`, ...), which follows `build_musicnn`: the input batch norm,
    the five front-end blocks, the three mid-end layers, the two back-end batch norms.
    """
    def tf_name(base: str, i: int) -> str:
        return base if i == 0 else f"{base}_{i}"

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    bns = ["frontend.input_bn",
           *[f"frontend.timbral.{i}.bn" for i in range(2)],
           *[f"frontend.temporal.{i}.bn" for i in range(3)],
           *[f"midend.layers.{i}.bn" for i in range(3)],
           "backend.pool_bn", "backend.dense_bn"]
    convs = [*[f"frontend.timbral.{i}.conv" for i in range(2)],
             *[f"frontend.temporal.{i}.conv" for i in range(3)]]
    mids = [f"midend.layers.{i}.conv" for i in range(3)]
    dense = [("backend.dense", "dense")] + ([("backend.tags", "dense_1")] if tags else [])
    try:
        state: dict[str, torch.Tensor] = {}
        for i, ours in enumerate(bns):
            tf = tf_name("batch_normalization", i)
            state[f"{ours}.weight"] = t(tensors[f"{tf}/gamma"])
            state[f"{ours}.bias"] = t(tensors[f"{tf}/beta"])
            state[f"{ours}.running_mean"] = t(tensors[f"{tf}/moving_mean"])
            state[f"{ours}.running_var"] = t(tensors[f"{tf}/moving_variance"])
            state[f"{ours}.num_batches_tracked"] = torch.tensor(0)
        for i, ours in enumerate(convs + mids):
            tf = tf_name("conv2d", i)
            convert = _conv_weight if ours in convs else _conv1d_weight
            state[f"{ours}.weight"] = t(convert(tensors[f"{tf}/kernel"]))
            state[f"{ours}.bias"] = t(tensors[f"{tf}/bias"])
        for ours, tf in dense:
            state[f"{ours}.weight"] = t(tensors[f"{tf}/kernel"].T)   # (in, out) -> (out, in)
            state[f"{ours}.bias"] = t(tensors[f"{tf}/bias"])
    except KeyError as err:
        raise CheckpointError(f"the checkpoint has no variable {err}: not a musicnn checkpoint") from None
    return state


def load_weights(model: nn.Module, name: str) -> nn.Module:
    """Copy checkpoint `name` (one of `CHECKPOINTS`) into `model`, a `Musicnn` (strictly: every shape must
    match) and return it."""
    folder = checkpoint_dir(name)
    reinstall = (f"the musicnn wheel's {name} weights are missing or damaged: reinstall it "
                 f"(pip install --force-reinstall --no-deps {WHEEL})")
    try:
        tensors = read_bundle(folder)   # its errors start with the file's path
    except CheckpointError as err:
        raise CheckpointError(f"{err}; {reinstall}") from None
    try:
        state = state_dict_from_tf(tensors, tags=model.backend.tags is not None)
    except CheckpointError as err:
        raise CheckpointError(f"{folder}: {err}; {reinstall}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{folder}: does not fit musicnn ({one_line(err)}); {reinstall}") from None
    return model
