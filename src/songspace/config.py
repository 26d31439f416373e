"""Typed, frozen views of params.yaml.

`load()` reads params.yaml into a `Params` tree of frozen dataclasses, declared in
`config_schema` (each parameter's type, default, range and meaning). Every key must be known:
a typo in params.yaml is an error naming the key and the valid ones, not a silently ignored
setting; a `models.<name>` key that does not apply to the model's `arch` is refused too. Then
every declared constraint is checked (`config_schema.check`), and here the checks across
fields and against the registries (corpus classes and programs, distances, scalers), so that a
value a stage would refuse stops `songspace check`, not the fourth stage.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from songspace.config_schema import (  # noqa: F401 - the names the rest of the code imports from config
    ARCHS, CNN_ARCHS, DEFAULT_MODELS, DEVICES, ENGINES, FREEZE, GROUP_TAGS, LABEL_TAGS, LOSSES, MAX_CLIP_SECONDS,
    MINING, MINKOWSKI_MIN_P, PRETRAINED, RESAMPLE_STEP_HZ, RESNET_DEPTHS, SAMPLERS, SOURCES, SPLIT_METHODS,
    TRIPLET_LOSSES,
    AugmentParams, ComputeParams, ConfigError, CorpusParams, DataParams, EvaluateParams, FeatureParams, FreqMaskParams,
    GroundTruthParams, IndexParams, ModelParams, NoiseParams, Params, PitchShiftParams, RandomMaskParams,
    ResampleParams, ServeParams, SplitParams, TimeMaskParams, TimeStretchParams, TrainParams, arch_keys, check,
    declared,
)
from songspace.errors import one_line

PARAMS_FILE = "params.yaml"


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type `tp`, recursing into dataclasses."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {_short(value)}")
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_short(value)}")
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {_short(value)}")
        return value
    if tp in (int, float, str):
        return _scalar(tp, value, where)
    return value


def _short(value: Any) -> str:
    """A value for an error message, cut short (a YAML alias bomb must not be expanded)."""
    return reprlib.repr(value)


def _scalar(tp: type, value: Any, where: str) -> int | float | str:
    """A YAML scalar as int, float (finite) or str; lists, mappings and booleans are refused."""
    if value is None:
        raise ConfigError(f"{where}: must not be empty")
    if isinstance(value, (list, tuple, dict)):
        raise ConfigError(f"{where}: expected a single {tp.__name__}, got a "
                          f"{'mapping' if isinstance(value, dict) else 'list'} {_short(value)}")
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected {'a number' if tp is not str else 'a string'}, got {value}")
    if tp is str:
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value}")
    if tp is int and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    try:
        number = tp(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: expected {tp.__name__}, got {_short(value)}") from err
    if not math.isfinite(number):
        raise ConfigError(f"{where}: must be a finite number, got {_short(value)}")
    return number


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'params'}: expected a mapping, got {_short(raw)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{where}.{k}'.lstrip('.') for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(sorted(known))}"
        )
    if cls is ModelParams:
        _check_arch_keys(raw, where)
    kwargs = {
        name: _convert(hints[name], value, f"{where}.{name}".lstrip("."))
        for name, value in raw.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where or 'params'}: {err}") from err


def _check_arch_keys(raw: dict, where: str) -> None:
    """A `models.<name>` mapping: its arch is set and known, and every key applies to that arch."""
    arch = raw.get("arch")
    if arch is None:
        raise ConfigError(f"{where}.arch: not set; choose one of: {', '.join(ARCHS)}")
    if arch not in ARCHS:
        raise ConfigError(f"{where}.arch '{arch}' is unknown; choose one of: {', '.join(ARCHS)}")
    foreign = sorted(set(raw) - set(arch_keys(arch)))
    if foreign:
        raise ConfigError(f"{', '.join(f'{where}.{k}' for k in foreign)}: not a key of arch {arch}; "
                          f"its keys: {', '.join(arch_keys(arch))}")


def _check_tag_choice(key: str, value: str, tags: tuple[str, ...], others: str) -> None:
    bad_tag = value.startswith("tag:") and value[4:] not in tags
    if bad_tag or (key == "data.groups" and value != "none" and not value.startswith("tag:")):
        raise ConfigError(f"{key} '{value}' is unknown; choose {others} or one of: "
                          f"{', '.join('tag:' + t for t in tags)}")


def validate(params: Params) -> Params:
    """Every declared constraint, then the checks across fields and against the registries."""
    check(params)
    if params.data.source == "folder" and not params.data.audio_dir:
        raise ConfigError("data.source is 'folder' but data.audio_dir is not set")
    _check_tag_choice("data.labels", params.data.labels, LABEL_TAGS, "folders, a labels CSV")
    _check_tag_choice("data.groups", params.data.groups, GROUP_TAGS, "none")
    if params.split.open_set and (params.data.quartets or params.data.labels == "none"):
        raise ConfigError("split.open_set puts whole labels on the test side: it needs labels and "
                          "no data.quartets (annotated quartets keep their own split)")
    device = params.train.device
    if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"train.device '{device}' is unknown; choose one of: {', '.join(DEVICES)}, cuda:<index>")
    params.model_params  # noqa: B018 - raises for an unconfigured model
    for name, mp in params.models.items():
        _check_model(f"models.{name}", mp)
    _check_features(params)
    _check_registries(params)
    return params


def _check_model(where: str, mp: ModelParams) -> None:
    if mp.arch in CNN_ARCHS and mp.fc[-1] != mp.embedding_dim:
        raise ConfigError(f"{where}.fc: the last linear layer gives the embedding: fc[-1] is {mp.fc[-1]} "
                          f"but {where}.embedding_dim is {mp.embedding_dim}")


def _check_features(params: Params) -> None:
    fp = params.features
    if fp.f_max <= fp.f_min or fp.f_max > fp.sample_rate / 2:
        raise ConfigError(f"features.f_max: {fp.f_max:g} must lie above features.f_min ({fp.f_min:g}) "
                          f"and at most half of features.sample_rate ({fp.sample_rate / 2:g})")
    if fp.hop_length > fp.segment_samples:
        raise ConfigError(f"features.hop_length: {fp.hop_length} is longer than a segment "
                          f"({fp.segment_samples} samples)")
    min_rate = params.augment.resample.min_rate
    if -(-min_rate // RESAMPLE_STEP_HZ) * RESAMPLE_STEP_HZ >= fp.sample_rate:
        raise ConfigError(f"augment.resample.min_rate: {min_rate} Hz leaves no rate below features.sample_rate "
                          f"({fp.sample_rate} Hz) on the {RESAMPLE_STEP_HZ} Hz grid")


def _check_registries(params: Params) -> None:
    """Names that registries of other modules define; those modules import no torch."""
    from songspace import corpus, distances, scalers

    try:
        corpus.validate(params.corpus)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if params.index.distance != "best" and params.index.distance not in distances.NAMES:
        raise ConfigError(f"index.distance '{params.index.distance}' is unknown; choose best or one of: "
                          f"{', '.join(distances.NAMES)}")
    if params.index.scaler != "best" and params.index.scaler not in scalers.NAMES:
        raise ConfigError(f"index.scaler '{params.index.scaler}' is unknown; choose best or one of: "
                          f"{', '.join(scalers.NAMES)}")


def from_dict(raw: dict) -> Params:
    return validate(_build(Params, raw, ""))


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml where built
    """YAML's safe loader that refuses a key given twice in one mapping (the last would win)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"line {line}: key '{key}' given twice (first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such parameter file")
    try:
        with path.open(encoding="utf-8") as f:
            raw = yaml.load(f, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not readable YAML ({one_line(err)})") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; it must set at least `model` and `models`")
    try:
        return from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
