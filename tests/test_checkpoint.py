"""Checkpoints are read with weights_only=True: a crafted pickle is refused, never run; damaged
and foreign files are named as such."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from songspace import checkpoint, embed
from songspace.checkpoint import CheckpointError
from songspace.cli import main
from tests.conftest import write_tone
from tests.tiny import TINY_PARAMS

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this calls Path.touch(marker): what an attacker's code would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def real_checkpoint(tmp_path) -> Path:
    from songspace import config

    params = config.from_dict(TINY_PARAMS)
    model = embed.build(params.model_params, params.features)
    path = tmp_path / "real.pt"
    import dataclasses
    torch.save({"model_name": params.model, "model_params": dataclasses.asdict(params.model_params),
                "feature_params": dataclasses.asdict(params.features), "model": model.state_dict(),
                "state": {"epoch": 1, "best": float("-inf"), "history": []}, "rng": torch.get_rng_state()},
               path)
    return path


def test_a_real_checkpoint_loads_with_weights_only(real_checkpoint):
    model, meta = embed.load_checkpoint(real_checkpoint)
    assert meta["model_name"] == "model1" and not model.training


def test_a_crafted_pickle_is_refused_and_never_run(tmp_path, real_checkpoint, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    ckpt = torch.load(real_checkpoint, weights_only=True)
    ckpt["extra"] = Payload(marker)
    torch.save(ckpt, evil)
    with pytest.raises(CheckpointError, match="refused"):
        embed.load_checkpoint(evil)
    song = write_tone(tmp_path / "song.wav", seconds=1.0)
    code = main(["embed", str(song), "--model", str(evil), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "evil.pt: refused" in err[0]
    assert not marker.exists()
    # as last.pt of a training run too
    from songspace import train
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "last.pt").write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match="refused"):
        train.read_checkpoint(tmp_path / "models" / "last.pt")
    assert not marker.exists()


@pytest.mark.parametrize("damage, words", [
    (lambda b: b[: len(b) // 2], "corrupt or truncated"),
    (lambda b: b"", "empty file"),
    (lambda b: b"not a checkpoint at all" * 10, "corrupt or truncated"),
])
def test_damaged_checkpoints_are_named(tmp_path, real_checkpoint, damage, words):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(damage(real_checkpoint.read_bytes()))
    with pytest.raises(CheckpointError, match=words):
        checkpoint.load(bad)


def test_a_foreign_torch_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a songspace checkpoint"):
        embed.load_checkpoint(path)


def test_embed_output_name_is_the_one_written(tmp_path, real_checkpoint, capsys):
    song = write_tone(tmp_path / "song.wav", seconds=1.0)
    assert main(["embed", str(song), "--model", str(real_checkpoint), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "out.npy").exists() and f"wrote {tmp_path / 'out.npy'}:" in out
