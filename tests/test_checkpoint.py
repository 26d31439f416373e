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


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_missing_or_damaged_musicnn_weights_are_named_as_such(tmp_path, monkeypatch, capsys, damage):
    """A songspace checkpoint of a musicnn model is fine; the weights it is built on are not."""
    import dataclasses
    import shutil

    from songspace import config
    from songspace.models import musicnn, musicnn_weights

    raw = {**TINY_PARAMS, "model": "mm", "features": {**TINY_PARAMS["features"], "n_mels": musicnn.N_MELS},
           "models": {"mm": {"arch": "musicnn", "pretrained": "MSD_musicnn", "freeze": "backbone"}}}
    params = config.from_dict(raw)
    model = embed.build(params.model_params, params.features)  # with the installed weights
    ckpt = tmp_path / "musicnn.pt"
    torch.save({"model_name": "mm", "model_params": dataclasses.asdict(params.model_params),
                "feature_params": dataclasses.asdict(params.features), "model": model.state_dict()}, ckpt)
    # a musicnn wheel whose weights are missing or damaged, found first on the path
    weights = tmp_path / "site" / "musicnn" / "MSD_musicnn"
    weights.mkdir(parents=True)
    (weights.parent / "__init__.py").write_text("")
    if damage == "truncated":
        for part in (".index", ".data-00000-of-00001"):
            shutil.copy(musicnn_weights.checkpoint_dir("MSD_musicnn") / part, weights / part)
        data = weights / ".data-00000-of-00001"
        data.write_bytes(data.read_bytes()[:1000])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert musicnn_weights.checkpoint_dir("MSD_musicnn") == weights
    song = write_tone(tmp_path / "song.wav", seconds=4.0)
    code = main(["embed", str(song), "--model", str(ckpt), "-o", str(tmp_path / "out.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    named = weights / (".index" if damage == "missing" else ".data-00000-of-00001")
    assert code == 2 and len(err) == 1 and err[0].startswith(f"songspace: error: {named}: "), err
    assert "musicnn wheel's MSD_musicnn weights are missing or damaged" in err[0]
    assert "not a songspace checkpoint" not in err[0]
