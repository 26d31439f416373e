"""The model zoo: shapes, parameter counts, the registry's errors, the thesis presets."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from songspace import config, models
from songspace.config import ModelParams
from songspace.models.cnn import feature_shape

PARAMS = config.load(Path(__file__).resolve().parents[1] / "params.yaml")
N_MELS, FRAMES = PARAMS.features.n_mels, PARAMS.features.frames
EMBEDDING = 128


# archs with their own input (musicnn: 96 bands, its own front end) are tested in their own files
LOGMEL_MODELS = sorted(n for n, p in PARAMS.models.items() if p.arch not in models.OWN_INPUTS)


def _segments(batch: int, n_mels: int = N_MELS, frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 1, n_mels, frames, generator=torch.Generator().manual_seed(seed))


def test_default_input_is_the_documented_one():
    assert (N_MELS, FRAMES) == (64, 94)


@pytest.mark.parametrize("name", LOGMEL_MODELS)
def test_every_configured_model_embeds_default_segments(name):
    net = models.build_by_name(name, PARAMS.models, N_MELS, FRAMES, seed=0).eval()
    with torch.no_grad():
        out = net(_segments(2))
    assert out.shape == (2, EMBEDDING)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", LOGMEL_MODELS)
def test_every_configured_model_trains(name):
    # the ResNets' backward pass is the slowest check here; their size is free (global pool)
    n_mels, frames = (32, 33) if PARAMS.models[name].arch == "resnet" else (N_MELS, FRAMES)
    net = models.build_by_name(name, PARAMS.models, n_mels, frames, seed=0).train()
    out = net(_segments(2, n_mels, frames))
    assert out.shape == (2, EMBEDDING)
    assert torch.isfinite(out).all()
    out.pow(2).mean().backward()
    # every weight, the first conv's included, is reached by the gradient
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


CNNS = sorted(n for n in LOGMEL_MODELS if PARAMS.models[n].arch != "resnet")


@pytest.mark.parametrize("name", CNNS)
@pytest.mark.parametrize("n_mels, frames", [(40, 63), (128, 188)])
def test_flatten_size_follows_the_input_shape(name, n_mels, frames):
    net = models.build_by_name(name, PARAMS.models, n_mels, frames, seed=0).eval()
    x = _segments(2, n_mels, frames)
    with torch.no_grad():
        assert net(x).shape == (2, EMBEDDING)
        features = net.features(x)
    assert tuple(features.shape[1:]) == feature_shape(PARAMS.models[name], n_mels, frames)


@pytest.mark.parametrize("name", ["model3", "model6", "resnet18"])
def test_batch_forward_equals_one_segment_at_a_time(name):
    net = models.build_by_name(name, PARAMS.models, N_MELS, FRAMES, seed=0).eval()
    x = _segments(4)
    with torch.no_grad():
        batched = net(x)
        looped = torch.cat([net(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5)


def test_model1_parameters_and_flops_by_hand():
    k = 3
    # two conv blocks each followed by a 2x2 pool, then the final 2x2 pool: 64x94 -> 8x11
    h, w = 64 // 2 // 2 // 2, 94 // 2 // 2 // 2
    conv1 = 1 * 32 * k * k + 32
    conv2 = 32 * 64 * k * k + 64
    fc = 64 * h * w * 128 + 128
    expected = conv1 + conv2 + fc
    assert expected == 739_840
    net = models.build_by_name("model1", PARAMS.models, N_MELS, FRAMES)
    assert models.count_parameters(net) == expected
    # a multiply-add is 2 FLOPs; conv2 runs on the 32x47 map after the first pool
    flops = 2 * (32 * k * k * 64 * 94 + 32 * 64 * k * k * 32 * 47 + 64 * h * w * 128)
    (row,) = models.describe({"model1": PARAMS.models["model1"]}, N_MELS, FRAMES)
    assert row["mflops"] == pytest.approx(flops / 1e6)


def test_describe_reports_what_the_built_models_have():
    rows = models.describe(PARAMS.models, N_MELS, FRAMES)
    assert [r["name"] for r in rows] == list(PARAMS.models)
    for row in rows:
        shape = models.input_shape(PARAMS.models[row["name"]], N_MELS, FRAMES)
        assert row["input_shape"] == (1, *shape)
        net = models.build_by_name(row["name"], PARAMS.models, *shape)
        assert row["parameters"] == models.count_parameters(net)
        assert row["arch"] == PARAMS.models[row["name"]].arch
        assert row["output_shape"] == (EMBEDDING,)
        assert row["batch_size"] == PARAMS.models[row["name"]].batch_size
        assert row["mflops"] > 0


def test_count_parameters_skips_frozen_ones():
    net = models.build_by_name("model1", PARAMS.models, N_MELS, FRAMES)
    total = models.count_parameters(net)
    net.features[0].weight.requires_grad_(False)
    assert models.count_parameters(net) == total - net.features[0].weight.numel()


@pytest.mark.parametrize("name, depth", [("resnet18", 18), ("resnet50", 50)])
def test_resnet_takes_one_channel_and_gives_the_embedding(name, depth):
    params = PARAMS.models[name]
    assert params.depth == depth
    net = models.build_by_name(name, PARAMS.models, N_MELS, FRAMES)
    conv = net.conv1
    assert (conv.in_channels, conv.out_channels) == (1, 64)
    assert conv.kernel_size == (7, 7) and conv.stride == (2, 2) and conv.padding == (3, 3)
    assert conv.bias is None
    assert net.fc.out_features == EMBEDDING
    assert net.fc.in_features == (512 if depth == 18 else 2048)


def test_cnn_layout_follows_the_thesis_order():
    net = models.build_by_name("model3", PARAMS.models, N_MELS, FRAMES)
    kinds = [type(m) for m in net.features]
    block = [nn.Conv2d, nn.ReLU, nn.MaxPool2d]
    assert kinds == block * 4 + [nn.MaxPool2d, nn.Dropout2d]
    assert [type(m) for m in net.head] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [m.out_features for m in net.head if isinstance(m, nn.Linear)] == [512, 256, 128]
    assert all(m.kernel_size == (3, 3) for m in net.features if isinstance(m, nn.Conv2d))


def test_model6_layout():
    net = models.build_by_name("model6", PARAMS.models, N_MELS, FRAMES)
    block = [nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU, nn.MaxPool2d]
    assert [type(m) for m in net.features] == block * 4  # pool: 1 adds nothing
    assert [type(m) for m in net.head] == [
        nn.Dropout, nn.Linear, nn.LeakyReLU, nn.Linear, nn.LeakyReLU, nn.Linear
    ]
    assert [m.out_channels for m in net.features if isinstance(m, nn.Conv2d)] == [32, 64, 128, 64]


@pytest.mark.parametrize("name", sorted(models.THESIS_PRESETS))
def test_thesis_preset_builds_and_is_the_tables_layout(name):
    preset = models.thesis_preset(name)
    if preset.arch == "resnet":
        # nothing of the thesis's ResNets differs from the configured ones, built above
        assert preset == PARAMS.models[name]
        return
    # small input: at 64x94 the 1x1 thesis layouts carry up to ~790M weights
    net = models.build(preset, 16, 24, seed=0).eval()
    with torch.no_grad():
        assert net(_segments(2, 16, 24)).shape == (2, EMBEDDING)
    assert preset.kernel == preset.block_pool == preset.pool == 1
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (1, 1) for c in convs)
    configured = PARAMS.models[name]
    assert (preset.arch, preset.channels, preset.fc, preset.batch_size) == (
        configured.arch,
        configured.channels,
        configured.fc,
        configured.batch_size,
    )


def test_thesis_presets_describe_at_full_size_without_allocating():
    rows = {r["name"]: r for r in models.describe(models.THESIS_PRESETS, N_MELS, FRAMES)}
    # model1 as printed: 1x1 convs, no pooling, so the linear layer sees all 64x94 bins
    assert rows["model1"]["parameters"] == (32 + 32) + (32 * 64 + 64) + (64 * 64 * 94 * 128 + 128)
    assert set(rows) == {f"model{i}" for i in range(1, 7)} | {"resnet18", "resnet50"}


def test_block_pool_and_pool_of_one_is_the_thesis_layout():
    params = dataclasses.replace(PARAMS.models["model1"], kernel=1, block_pool=1, pool=1)
    net = models.build(params, 16, 24)
    assert [type(m) for m in net.features] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Dropout2d]
    assert net.head[0].in_features == 64 * 16 * 24
    assert models.count_parameters(net) == models.count_parameters(
        models.build(models.thesis_preset("model1"), 16, 24)
    )


def test_seeded_build_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = models.build_by_name("model2", PARAMS.models, N_MELS, FRAMES, seed=7)
    b = models.build_by_name("model2", PARAMS.models, N_MELS, FRAMES, seed=7)
    c = models.build_by_name("model2", PARAMS.models, N_MELS, FRAMES, seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(models.ModelError) as err:
        models.build_by_name("model9", PARAMS.models, N_MELS, FRAMES)
    message = str(err.value)
    assert "model9" in message
    assert all(name in message for name in PARAMS.models)


def test_unknown_arch_lists_the_registered_ones():
    with pytest.raises(models.ModelError) as err:
        models.build_by_name("mine", {"mine": ModelParams(arch="transformer")}, N_MELS, FRAMES)
    message = str(err.value)
    assert "models.mine" in message and "transformer" in message
    assert all(arch in message for arch in models.ARCHS)


def test_unknown_resnet_depth_lists_the_valid_ones():
    with pytest.raises(models.ModelError, match="depth 20.*18, 34, 50, 101, 152"):
        models.build(ModelParams(arch="resnet", depth=20), N_MELS, FRAMES)


def test_unknown_thesis_preset_lists_the_valid_ones():
    with pytest.raises(models.ModelError, match="model1.*resnet50"):
        models.thesis_preset("model7")


def test_input_too_small_for_the_pools_is_an_error():
    with pytest.raises(models.ModelError, match=r"models\.model5: input 16x16 .* too small"):
        models.build_by_name("model5", PARAMS.models, 16, 16)


def test_last_linear_must_give_the_embedding():
    params = dataclasses.replace(PARAMS.models["model1"], fc=(64,))
    with pytest.raises(models.ModelError, match="fc\\[-1\\] is 64 but embedding_dim is 128"):
        models.build(params, N_MELS, FRAMES)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"channels": ()}, "channels"),
        ({"fc": ()}, "fc"),
        ({"kernel": 0}, "kernel"),
        ({"pool": 0}, "pool"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_cnn_params_are_errors(change, message):
    params = dataclasses.replace(PARAMS.models["model3"], **change)
    with pytest.raises(models.ModelError, match=message):
        models.build(params, N_MELS, FRAMES)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(PARAMS.models))
def test_models_train_on_cuda_with_mixed_precision(name):
    net = models.build_by_name(name, PARAMS.models, N_MELS, FRAMES, seed=0).cuda().train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net(_segments(8).cuda())
    assert out.shape == (8, EMBEDDING) and torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in net.parameters())
