"""musicnn in PyTorch against the original TensorFlow model's outputs; its checkpoint reader; the
registry's fine-tunable backbone.

tests/data/musicnn_reference.npz holds ten 3 s windows, the original's log-mel of each and the
original model's outputs for both checkpoints (how it was made: its README, kept beside the
project's shared fixtures: musicnn 0.1.0's TensorFlow code under tensorflow-cpu 2.15.1).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from songspace import config, losses, models
from songspace.models import musicnn, musicnn_weights, tfcheckpoint
from songspace.errors import UserError
from songspace.models.tfcheckpoint import CheckpointError

REFERENCE = np.load(Path(__file__).parent / "data" / "musicnn_reference.npz")
PARAMS = config.load(Path(__file__).resolve().parents[1] / "params.yaml")
OUTPUTS = ("taggram", "mean_pool", "max_pool", "penultimate")


@pytest.fixture(scope="module", params=musicnn.CHECKPOINTS)
def pretrained(request):
    return request.param, musicnn.load_pretrained(request.param)


def _reference_input() -> torch.Tensor:
    """The fixture's (10, 187, 96) log-mels in the project's layout (10, 1, 96, 187)."""
    return torch.from_numpy(REFERENCE["logmel_input"]).transpose(1, 2)[:, None]


def test_every_output_matches_the_original_from_its_logmel(pretrained):
    name, net = pretrained
    with torch.no_grad():
        out = net(_reference_input())
    for key in OUTPUTS:
        ours, ref = getattr(out, key).numpy(), REFERENCE[f"{name}/{key}"]
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 1e-3, f"{name}/{key}"


def test_our_frontend_and_network_match_the_original_from_audio(pretrained):
    name, net = pretrained
    mel = musicnn.logmel(torch.from_numpy(REFERENCE["audio_16k"]))
    assert mel.shape == (10, musicnn.N_MELS, 48000 // musicnn.HOP_LENGTH + 1)
    mel = mel[..., : musicnn.WINDOW_FRAMES]
    # the front end alone: same log-mel as librosa's, up to float16 rounding of the power
    assert (mel - _reference_input()[:, 0]).abs().max() < 2e-3
    with torch.no_grad():
        ours = net.penultimate(mel[:, None]).numpy()
    ref = REFERENCE[f"{name}/penultimate"]
    for a, b in zip(ours, ref):
        assert np.corrcoef(a, b)[0, 1] >= 0.999


@pytest.mark.parametrize("name", musicnn.CHECKPOINTS)
def test_checkpoint_variables_are_the_originals(name):
    tensors = tfcheckpoint.read_bundle(musicnn_weights.checkpoint_dir(name))
    listed = sorted(f"{k} {list(v.shape)}" for k, v in tensors.items())
    assert listed == sorted(REFERENCE[f"{name}/variables"])
    assert all(v.dtype == np.float32 for v in tensors.values())


def test_batch_equals_one_window_at_a_time():
    net = musicnn.load_pretrained("MSD_musicnn")
    x = _reference_input()[:3]
    with torch.no_grad():
        batched = net.penultimate(x)
        looped = torch.cat([net.penultimate(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-4)


def test_input_of_the_wrong_shape_is_an_error():
    net = musicnn.Musicnn()
    with pytest.raises(models.ModelError, match="96"):
        net(torch.zeros(1, 1, 64, 187))
    with pytest.raises(models.ModelError, match="samples"):
        musicnn.logmel(torch.zeros(100))


# ---------------------------------------------------------------- bad checkpoints


@pytest.fixture
def bundle_copy(tmp_path):
    folder = tmp_path / "MSD_musicnn"
    folder.mkdir()
    for part in (".index", ".data-00000-of-00001"):
        shutil.copy(musicnn_weights.checkpoint_dir("MSD_musicnn") / part, folder / part)
    return folder


def test_truncated_data_file_names_the_file(bundle_copy):
    data = bundle_copy / ".data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1_000_000])
    with pytest.raises(CheckpointError, match="truncated") as err:
        tfcheckpoint.read_bundle(bundle_copy)
    assert str(data) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"model_checkpoint_path: \"/home/x/\"\n" * 4],
                         ids=["empty", "text"])
def test_empty_or_foreign_index_names_the_file(bundle_copy, content):
    index = bundle_copy / ".index"
    index.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        tfcheckpoint.read_bundle(bundle_copy)
    assert str(index) in str(err.value)
    assert isinstance(err.value, UserError)   # one line and exit 2 from any stage or the CLI


def test_truncated_index_names_the_file(bundle_copy):
    index = bundle_copy / ".index"
    index.write_bytes(index.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="not a readable") as err:
        tfcheckpoint.read_bundle(bundle_copy)
    assert str(index) in str(err.value)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file") as err:
        tfcheckpoint.read_bundle(tmp_path)
    assert str(tmp_path / ".index") in str(err.value)


def test_a_bundle_of_other_variables_is_not_musicnn(bundle_copy):
    tensors = tfcheckpoint.read_bundle(bundle_copy)
    del tensors["dense/kernel"]
    with pytest.raises(CheckpointError, match="dense/kernel"):
        musicnn_weights.state_dict_from_tf(tensors)


# ---------------------------------------------------------------- the registry's backbone


def _registry_model(freeze: str, lr_factor: float = 0.1, seed: int = 0) -> torch.nn.Module:
    params = dataclasses.replace(PARAMS.models["musicnn_mtt"], freeze=freeze, lr_factor=lr_factor)
    net = models.build(params, musicnn.N_MELS, musicnn.WINDOW_FRAMES, seed=seed)
    assert net.input_frontend == "musicnn" and net.normalise_input is False
    return net


def _train_step(net: torch.nn.Module, lr: float = 1e-2) -> None:
    x = musicnn.logmel(torch.from_numpy(REFERENCE["audio_16k"][:6, :8_000]))[:, None]
    opt = torch.optim.Adam(models.param_groups(net, lr))
    loss = losses.build("triplet")(net(x))    # [anchors; positives; negatives], 2 each
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_registry_model_starts_from_the_pretrained_penultimate_layer():
    net = _registry_model("none").eval()
    x = _reference_input()[:2]
    with torch.no_grad():
        hidden = net.backbone.penultimate(x).numpy()
        emb = net(x)
    assert np.abs(hidden - REFERENCE["MTT_musicnn/penultimate"][:2]).max() <= 1e-3
    assert emb.shape == (2, PARAMS.models["musicnn_mtt"].embedding_dim)


@pytest.mark.parametrize("freeze", ["backbone", "frontend", "none"])
def test_training_step_moves_only_what_is_not_frozen(freeze):
    net = _registry_model(freeze).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _train_step(net)
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("head.") and k.endswith(".weight") for k in changed)
    frontend = {k for k in before if k.startswith("backbone.frontend.")}
    rest = {k for k in before if k.startswith(("backbone.midend.", "backbone.backend."))}
    if freeze == "backbone":
        assert not changed & (frontend | rest)       # weights and batch-norm statistics alike
    elif freeze == "frontend":
        assert not changed & frontend
        assert "backbone.midend.layers.0.conv.weight" in changed
    else:
        assert "backbone.frontend.timbral.0.conv.weight" in changed


@pytest.mark.parametrize("head_hidden,band_stats", [(0, False), (0, True), (24, False), (24, True)])
def test_head_sees_the_penultimate_layer_and_optionally_band_statistics(head_hidden, band_stats):
    params = dataclasses.replace(PARAMS.models["musicnn_msd"], head_hidden=head_hidden, band_stats=band_stats)
    net = models.build(params, musicnn.N_MELS, musicnn.WINDOW_FRAMES, seed=0).eval()
    x = _reference_input()[:3]
    with torch.no_grad():
        trunk, emb = net.trunk(x).numpy(), net(x)
    assert trunk.shape == (3, net.trunk_dim) and emb.shape == (3, params.embedding_dim)
    assert np.abs(trunk[:, :200] - REFERENCE["MSD_musicnn/penultimate"][:3]).max() <= 1e-3
    if band_stats:
        bands = x[:, 0].numpy().astype(np.float64)     # (3, 96, frames)
        np.testing.assert_allclose(trunk[:, 200:296], bands.mean(2), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(trunk[:, 296:], bands.std(2), rtol=1e-5, atol=1e-5)
    else:
        assert net.trunk_dim == 200
    # a plain linear head keeps the state-dict names of earlier checkpoints
    assert ("head.weight" in net.state_dict()) == (head_hidden == 0 and not band_stats)
    assert net.trunk_frozen == (params.freeze == "backbone")


def test_band_flux_follows_the_band_statistics_and_is_each_bands_mean_absolute_change():
    params = dataclasses.replace(PARAMS.models["musicnn_msd"], band_flux=True)
    net = models.build(params, musicnn.N_MELS, musicnn.WINDOW_FRAMES, seed=0).eval()
    plain = models.build(PARAMS.models["musicnn_msd"], musicnn.N_MELS, musicnn.WINDOW_FRAMES, seed=0).eval()
    x = _reference_input()[:3]
    with torch.no_grad():
        trunk, without = net.trunk(x).numpy(), plain.trunk(x).numpy()
    assert net.trunk_dim == trunk.shape[1] == 200 + 192 + 96
    np.testing.assert_array_equal(trunk[:, :392], without)
    bands = x[:, 0].numpy().astype(np.float64)
    np.testing.assert_allclose(trunk[:, 392:], np.abs(np.diff(bands, axis=2)).mean(2), rtol=1e-5, atol=1e-5)
    by_hand = musicnn.band_flux(torch.tensor([[[0.0, 1.0, 3.0, 2.0]], [[5.0, 5.0, 5.0, 5.0]]]))
    np.testing.assert_allclose(by_hand.numpy(), [[4 / 3], [0.0]])
    assert musicnn.band_flux(torch.ones(2, 96, 1)).shape == (2, 96)   # one frame: no change, zeros
    assert not musicnn.band_flux(torch.ones(2, 96, 1)).any()


def test_a_trunk_of_both_networks_follows_the_first_with_the_others_penultimate_layer():
    params = dataclasses.replace(PARAMS.models["musicnn_msd"], pretrained="MSD_musicnn+MTT_musicnn")
    net = models.build(params, musicnn.N_MELS, musicnn.WINDOW_FRAMES, seed=0).eval()
    one = models.build(PARAMS.models["musicnn_msd"], musicnn.N_MELS, musicnn.WINDOW_FRAMES, seed=0).eval()
    x = _reference_input()[:3]
    with torch.no_grad():
        trunk, single = net.trunk(x).numpy(), one.trunk(x).numpy()
    assert net.trunk_dim == trunk.shape[1] == 200 + 192 + 200
    np.testing.assert_array_equal(trunk[:, :392], single)
    assert np.abs(trunk[:, 392:] - REFERENCE["MTT_musicnn/penultimate"][:3]).max() <= 1e-3
    assert net.frozen_modules() == [net.backbone, *net.others]
    groups = models.param_groups(net, lr=1e-3)
    assert [len(g["params"]) for g in groups] == [len(list(net.head.parameters()))]  # both networks frozen


def test_frozen_parts_stay_in_eval_mode():
    net = _registry_model("frontend").train()
    assert not net.backbone.frontend.training
    assert net.backbone.midend.training and net.head.training
    net.eval().train()
    assert not net.backbone.frontend.training


def test_param_groups_honour_lr_factor_and_leave_frozen_parameters_out():
    net = _registry_model("frontend", lr_factor=0.1)
    groups = models.param_groups(net, lr=1e-3, weight_decay=1e-5)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4])
    assert all(g["weight_decay"] == 1e-5 for g in groups)
    head, pretrained = ({id(p) for p in g["params"]} for g in groups)
    assert head == {id(p) for p in net.head.parameters()}
    assert pretrained == {id(p) for p in net.backbone.parameters() if p.requires_grad}
    assert not pretrained & {id(p) for p in net.backbone.frontend.parameters()}
    # wrapped as the training loop does, and any other arch: one group
    assert len(models.param_groups(torch.nn.Sequential(net), 1e-3)) == 2
    other = models.build_by_name("model1", PARAMS.models, 64, 94)
    (group,) = models.param_groups(other, lr=1e-3)
    assert group["lr"] == 1e-3 and len(group["params"]) == len(list(other.parameters()))


def test_describe_lists_musicnn_without_loading_weights():
    rows = {r["name"]: r for r in models.describe(PARAMS.models, PARAMS.features.n_mels, PARAMS.features.frames)}
    for name in ("musicnn_msd", "musicnn_mtt"):
        assert rows[name]["input_shape"] == (1, musicnn.N_MELS, musicnn.WINDOW_FRAMES)
        assert rows[name]["output_shape"] == (128,)
        net = models.build_by_name(name, PARAMS.models, musicnn.N_MELS, musicnn.WINDOW_FRAMES)
        assert rows[name]["parameters"] == models.count_parameters(net)
    assert models.input_frontend(PARAMS.models["musicnn_msd"]) == "musicnn"
    assert models.input_frontend(PARAMS.models["model6"]) == "db"


def test_bad_musicnn_settings_are_errors():
    with pytest.raises(models.ModelError, match="96 mel bands"):
        models.build(PARAMS.models["musicnn_mtt"], 64, 94)
    raw = {"model": "musicnn_mtt", "models": {"musicnn_mtt": {"arch": "musicnn", "freeze": "head"}}}
    with pytest.raises(config.ConfigError, match="freeze"):
        config.from_dict(raw)
    raw["models"]["musicnn_mtt"] = {"arch": "musicnn", "pretrained": "MSD_vgg"}
    with pytest.raises(config.ConfigError, match="MSD_musicnn"):
        config.from_dict(raw)


def test_pooling_before_the_batch_norm_in_eval_mode_is_the_same_function():
    """In eval mode a frequency-pooled block pools first, then ReLU and batch norm (they are
    monotone per filter); with negative batch-norm scales too, it equals the plain order."""
    from torch.nn import functional as F

    torch.manual_seed(0)
    block = musicnn._FrequencyPooledConv(6, (3, 5), (1, 1)).eval()
    with torch.no_grad():
        block.bn.weight.copy_(torch.tensor([1.5, -0.7, 0.2, -2.0, 0.9, 1e-3]))
        block.bn.bias.normal_()
        block.bn.running_mean.normal_()
        block.bn.running_var.uniform_(0.5, 2.0)
        x = torch.randn(4, 1, 20, 12)
        plain = block.bn(F.relu(block.conv(F.pad(x, (0, 0, 1, 1))))).amax(dim=3)
        torch.testing.assert_close(block(x), plain, rtol=1e-6, atol=1e-6)
