"""Model checkpoints: the one writer (`save`), the one reader (`load`) and their fingerprint.

Checkpoints are read with `torch.load(..., weights_only=True)`: only tensors, numbers,
strings and containers are unpickled, so a crafted `.pt` file cannot run code. Anything that
is not a checkpoint this project wrote (an unsafe pickle, an empty, truncated or foreign file)
is one `CheckpointError` naming the file.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

from songspace.errors import UserError, one_line

# Keys every checkpoint written by train.fit holds.
REQUIRED_KEYS = ("model_name", "model_params", "feature_params", "model")


class CheckpointError(UserError, ValueError):
    """A weights file (a songspace checkpoint, or a TensorFlow bundle of the pretrained musicnn)
    that is missing, unsafe, damaged or not what it should be."""


def load(path: str | Path, map_location="cpu") -> dict:
    """The dict saved in a songspace checkpoint, read with weights_only=True.

    Raises CheckpointError: no such file; a pickle that needs more than weights (refused,
    never run); an empty or truncated file; or a file that holds something else.
    """
    import torch  # on first use: fingerprinting a checkpoint needs no torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model checkpoint (run `dvc repro train`)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a model checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "unsupported global" in text.lower() or "GLOBAL" in text:  # an object, not data
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects other than weights (an unsafe "
                "pickle that could run code); only checkpoints written by songspace are read"
            ) from None
        raise CheckpointError(f"{path}: corrupt or truncated model checkpoint (not a pickle of "
                              "weights)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated model checkpoint ({one_line(err)})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(
            f"{path}: not a songspace checkpoint (expected a dict with {', '.join(REQUIRED_KEYS)})")
    return ckpt


def save(ckpt: dict, path: str | Path) -> Path:
    """Write a checkpoint dict (`REQUIRED_KEYS` and whatever training adds) with torch.save.

    Written aside and renamed into place, so a kill mid-write leaves the previous file whole.
    """
    path = Path(path)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint for {path}: missing key(s) {', '.join(missing)}")
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def fingerprint(path: str | Path) -> str:
    """The sha256 of a checkpoint file, hex: what an index records to detect a changed model."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def identity(path: str | Path, model_name: str | None = None) -> dict:
    """What identifies a checkpoint: {"path", "sha256", "model_name"}."""
    return {"path": str(path), "sha256": fingerprint(path), "model_name": model_name}
