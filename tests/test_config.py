"""params.yaml: unknown keys and values out of range are one ConfigError naming the key; the
`check` command and every stage report it as one line with exit code 2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from songspace import config
from songspace.cli import main

ROOT = Path(__file__).resolve().parents[1]
BAD = [("train.batch_size", 0), ("train.steps_per_epoch", -1), ("train.epochs", 0), ("train.patience", 0),
       ("features.segment_seconds", 0), ("features.segments_per_track", 0), ("features.n_mels", 0),
       ("features.hop_length", 0), ("train.lr", -1), ("train.device", "tpu"), ("evaluate.bootstrap", 0),
       ("evaluate.confidence", 2), ("index.distance", "nope")]


def _raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("key, value", BAD)
def test_each_bad_value_names_its_key(key, value):
    raw = _raw()
    section, name = key.split(".")
    raw[section][name] = value
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        config.from_dict(raw)


def test_check_command_rejects_an_unknown_key(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text("modle: resnet18\n" + (ROOT / "params.yaml").read_text())
    assert main(["check", "--params", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key(s) modle" in err[0]
    assert main(["check", "--params", str(ROOT / "params.yaml")]) == 0
    # dvc.yaml's first stage depends on the whole file, so any edit reruns the check
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert next(iter(stages)) == "params" and stages["params"]["params"] == [{"params.yaml": None}]


def test_a_stage_reports_a_config_error_in_one_line(tmp_path):
    raw = _raw()
    raw["features"]["hop_length"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "features.py"), "--tracks", "x.csv",
                           "--out", str(tmp_path / "f"), "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: error:") and "features.hop_length" in lines[0]


def _numeric_keys(cls=config.Params, prefix="") -> list[tuple[str, type]]:
    """Every int or float key of the params tree (models.* excluded: a dict of models)."""
    import dataclasses
    import typing

    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if dataclasses.is_dataclass(args[0]):
            keys += _numeric_keys(args[0], f"{prefix}{f.name}.")
        elif args[0] in (int, float):
            keys.append((f"{prefix}{f.name}", args[0]))
    return keys


def _set(raw: dict, key: str, value) -> dict:
    *path, last = key.split(".")
    node = raw
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


def _check(tmp_path, text: str, capsys) -> tuple[int, str]:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    code = main(["check", "--params", str(path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 1, err  # one line, never a traceback
    return code, err[0] if err else ""


@pytest.mark.parametrize("key, tp", _numeric_keys())
@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_every_number_must_be_finite_and_not_a_boolean(key, tp, value):
    raw = _set(_raw(), key, value)
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        config.from_dict(raw)


@pytest.mark.parametrize("line, key", [
    ("evaluate: {minkowski_p: .inf}", "evaluate.minkowski_p"),
    ("evaluate: {minkowski_p: 0.5}", "evaluate.minkowski_p"),
    ("evaluate: {confidence: .nan}", "evaluate.confidence"),
    ("features: {segment_seconds: .nan}", "features.segment_seconds"),
    ("serve: {max_upload_mb: .inf}", "serve.max_upload_mb"),
    ("train: {epochs: true}", "train.epochs"),
    ("corpus: {sample_rate: 4000}", "corpus.sample_rate"),
    ("corpus: {max_seconds: 45}", "corpus.max_seconds"),
    ("corpus: {classes: [bach, bach]}", "corpus.classes"),
    ("corpus: {classes: [bach, nope]}", "corpus.classes"),
    ("model: [model3, model6]", "model"),
    ("augment: {resample: {p: 0.3, min_rate: 15950}}", "augment.resample.min_rate"),  # no 100 Hz step below 16 kHz
    ("models: {m: {arch: cnn, channels: [4], fc: [8]}}", "models.m.fc"),  # fc[-1] is the embedding: 128
    ("models: {m: {arch: resnet, depth: 20}}", "models.m.depth"),
])
def test_check_refuses_what_a_stage_would(tmp_path, capsys, line, key):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    section = line.split(":")[0]
    merged = {**raw, section: {**raw[section], **yaml.safe_load(line)[section]}} \
        if isinstance(raw.get(section), dict) else {**raw, **yaml.safe_load(line)}
    if section == "models":
        merged["model"] = "m"
    code, err = _check(tmp_path, yaml.safe_dump(merged), capsys)
    assert code == 2 and key in err, err


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, capsys):
    text = (ROOT / "params.yaml").read_text() + "\nseed: 1\nseed: 2\n"
    code, err = _check(tmp_path, text, capsys)
    assert code == 2 and "'seed' given twice" in err and "first on line" in err


def test_an_empty_params_file_says_it_is_empty(tmp_path, capsys):
    code, err = _check(tmp_path, "\n# nothing\n", capsys)
    assert code == 2 and "is empty" in err


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path, capsys):
    # 9 levels of 9 references: 9**9 (387 million) strings once expanded
    levels = ["&a [" + ", ".join(["x"] * 9) + "]"]
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"&{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    raw = _raw()
    raw["corpus"]["classes"] = ["PLACEHOLDER"]
    text = yaml.safe_dump(raw).replace("- PLACEHOLDER", "- " + "\n  - ".join(levels))
    code, err = _check(tmp_path, text, capsys)
    assert code == 2 and "corpus.classes[0]: expected a single str, got a list" in err and len(err) < 300, err


def test_yaml_merge_keys_still_work(tmp_path, capsys):
    raw = _raw()
    text = yaml.safe_dump(raw) + "\n"
    model = raw["model"]
    text = text.replace("models:\n", "models:\n  _base: &base {arch: cnn, channels: [4], fc: [128]}\n"
                                     "  merged: {<<: *base, kernel: 5}\n", 1)
    code, err = _check(tmp_path, text, capsys)
    assert code == 0, err
    params = config.load(tmp_path / "params.yaml")
    assert params.models["merged"].kernel == 5 and params.models["merged"].channels == (4,)
    assert params.model == model


# ---------------------------------------------------------------- one declaration per parameter


def _differences(code, shipped, where="") -> list[str]:
    """The keys whose value differs between two params trees, walked field by field."""
    import dataclasses

    if dataclasses.is_dataclass(code):
        return [d for f in dataclasses.fields(code)
                for d in _differences(getattr(code, f.name), getattr(shipped, f.name), f"{where}.{f.name}")]
    if isinstance(code, dict):
        if set(code) != set(shipped):
            return [f"{where}: {sorted(code)} != {sorted(shipped)}"]
        return [d for k in code for d in _differences(code[k], shipped[k], f"{where}.{k}")]
    return [] if code == shipped else [f"{where}: code {code!r}, params.yaml {shipped!r}"]


def _yaml_keys(raw: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if prefix == "models.":
            keys += [f"models.*.{name}" for name in v]
        elif isinstance(v, dict):
            keys += _yaml_keys(v, f"{key}.")
        else:
            keys.append(key)
    return keys


def test_the_code_defaults_are_what_params_yaml_ships():
    raw = _raw()
    assert _differences(config.Params(), config.from_dict(raw)) == []
    assert config.Params() == config.load(ROOT / "params.yaml")
    declared = {key for key, _ in config.declared()}
    assert [k for k in _yaml_keys(raw) if k not in declared] == []
    assert all(f.metadata.get("help") for _, f in config.declared()), "every parameter says what it means"


@pytest.mark.parametrize("arch, key, value", [
    ("cnn", "freeze", "backbone"), ("cnn_bn", "pretrained", "MSD_musicnn"), ("resnet", "channels", [8]),
    ("musicnn", "depth", 18), ("musicnn", "dropout", 0.1), ("resnet", "band_stats", True),
])
def test_a_model_key_of_another_arch_is_refused(tmp_path, capsys, arch, key, value):
    name = next(n for n, m in config.DEFAULT_MODELS.items() if m.arch == arch)
    raw = _set(_raw(), f"models.{name}.{key}", value)
    code, err = _check(tmp_path, yaml.safe_dump(raw), capsys)
    assert code == 2 and f"models.{name}.{key}: not a key of arch {arch}" in err, err


def test_a_model_needs_a_known_arch(tmp_path, capsys):
    raw = _raw()
    raw["models"]["mine"] = {"channels": [4], "fc": [128]}
    code, err = _check(tmp_path, yaml.safe_dump(raw), capsys)
    assert code == 2 and "models.mine.arch: not set" in err, err
    raw["models"]["mine"]["arch"] = "transformer"
    code, err = _check(tmp_path, yaml.safe_dump(raw), capsys)
    assert code == 2 and "models.mine.arch 'transformer' is unknown" in err, err


def test_the_declared_names_are_the_registries():
    from songspace import augment, distances, models
    from songspace.groundtruth import files
    from songspace.models import musicnn, musicnn_head, resnet

    assert set(config.ARCHS) == set(models.ARCHS) and config.CNN_ARCHS == ("cnn", "cnn_bn")
    assert config.RESNET_DEPTHS == tuple(resnet.DEPTHS)
    assert musicnn.CHECKPOINTS is config.PRETRAINED and musicnn_head.FREEZE is config.FREEZE
    assert files.SPLIT_METHODS is config.SPLIT_METHODS and augment.RESAMPLE_STEP_HZ == config.RESAMPLE_STEP_HZ
    with pytest.raises(ValueError, match="p >= 1"):
        distances.get("minkowski").pairwise(np.zeros((1, 2)), np.zeros((1, 2)), p=config.MINKOWSKI_MIN_P - 0.5)


def _outside(field, tp) -> list:
    """Values just outside a field's declared range, or not among its choices."""
    low, high, low_ok, high_ok = field.metadata.get("range", (None, None, True, True))
    step = 1 if tp is int else 1e-3
    values = []
    if low is not None:
        values.append(low - step if low_ok else low)
    if high is not None:
        values.append(high + step if high_ok else high)
    if "choices" in field.metadata:
        values.append(99 if tp is int else "no-such-choice")
    return values


def _constraints() -> list:
    import typing

    cases = []
    for key, f in config.declared():
        owner = config.ModelParams if key.startswith("models.") else None
        tp = typing.get_type_hints(owner or _owner(key))[f.name]
        args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        item, is_list = (typing.get_args(args[0])[0], True) if typing.get_origin(args[0]) is tuple else (args[0], False)
        if key.startswith("models."):
            name = next(n for n, m in config.DEFAULT_MODELS.items() if m.arch in f.metadata.get("arch", (m.arch,)))
            key = key.replace("*", name)
        values = [[v] if is_list else v for v in _outside(f, item)] + ([[]] if f.metadata.get("nonempty") else [])
        cases += [pytest.param(key, value, id=f"{key}={value}") for value in values]
    return cases


def _owner(key: str) -> type:
    cls = config.Params
    for part in key.split(".")[:-1]:
        cls = next(f.default_factory for f in config.dataclasses.fields(cls) if f.name == part)
    return cls


@pytest.mark.parametrize("key, value", _constraints())
def test_check_refuses_a_value_just_outside_each_declared_constraint(tmp_path, capsys, key, value):
    code, err = _check(tmp_path, yaml.safe_dump(_set(_raw(), key, value)), capsys)
    assert code == 2 and key in err, err
