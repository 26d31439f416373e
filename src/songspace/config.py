"""Typed, frozen views of params.yaml.

`load()` reads params.yaml into a `Params` tree of frozen dataclasses. Every key must be
known: a typo in params.yaml is an error naming the key and the valid ones, not a silently
ignored setting.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from songspace.errors import UserError, one_line

PARAMS_FILE = "params.yaml"
MAX_CLIP_SECONDS = 30.0    # the longest clip the built-in corpus renders


class ConfigError(UserError, ValueError):
    """params.yaml does not describe a valid configuration."""


@dataclass(frozen=True)
class DataParams:
    source: str = "corpus"
    audio_dir: str | None = None
    labels: str = "folders"           # folders | a labels CSV | tag:genre | tag:artist | tag:album | tag:albumartist | none
    groups: str = "none"              # none | tag:album | tag:artist: a group never straddles splits
    quartets: str | None = None
    min_seconds: float = 1.0


@dataclass(frozen=True)
class CorpusParams:
    classes: tuple[str, ...] = ("bach", "palestrina", "monteverdi", "reel", "jig", "hornpipe")
    pieces_per_class: int = 40
    bars: int = 16
    max_seconds: float = 30.0
    sample_rate: int = 16000
    programs: tuple[int, ...] = (0, 24, 40, 48, 56, 73)


@dataclass(frozen=True)
class SplitParams:
    test_fraction: float = 0.3
    val_fraction: float = 0.15
    method: str = "partition"
    open_set: bool = False           # whole labels on the test side: test quartets of unseen labels only
    open_set_labels: float = 0.3     # with open_set: the fraction of labels put on the test side


@dataclass(frozen=True)
class GroundTruthParams:
    test_quartets: int = 2000
    val_quartets: int = 500
    train_triplets: int = 4000
    min_val_quartets: int = 100


@dataclass(frozen=True)
class FeatureParams:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8000.0
    segment_seconds: float = 3.0
    segment_hop_seconds: float = 3.0   # segments cover the whole track, one every hop
    max_segments: int = 64             # per track; a longer track's segments are spread evenly

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Frames of one segment's log-mel (torchaudio's centred STFT)."""
        return self.segment_samples // self.hop_length + 1


@dataclass(frozen=True)
class PitchShiftParams:
    p: float = 0.5
    max_semitones: float = 2.0


@dataclass(frozen=True)
class TimeStretchParams:
    p: float = 0.5
    max_change: float = 0.15


@dataclass(frozen=True)
class ResampleParams:
    p: float = 0.3
    min_rate: int = 6000


@dataclass(frozen=True)
class NoiseParams:
    p: float = 1.0
    strength: float = 0.5


@dataclass(frozen=True)
class RandomMaskParams:
    p: float = 0.2


@dataclass(frozen=True)
class TimeMaskParams:
    p: float = 0.5
    max_frames: int = 12
    count: int = 2


@dataclass(frozen=True)
class FreqMaskParams:
    p: float = 0.5
    max_bins: int = 8
    count: int = 2


@dataclass(frozen=True)
class AugmentParams:
    views: int = 2
    segments: int = 4        # sections per training track that get cached views
    view_p: float = 0.25     # share of training draws taken from the cached views (else a fresh crop)
    pitch_shift: PitchShiftParams = field(default_factory=PitchShiftParams)
    time_stretch: TimeStretchParams = field(default_factory=TimeStretchParams)
    resample: ResampleParams = field(default_factory=ResampleParams)
    noise: NoiseParams = field(default_factory=NoiseParams)
    random_mask: RandomMaskParams = field(default_factory=RandomMaskParams)
    time_mask: TimeMaskParams = field(default_factory=TimeMaskParams)
    freq_mask: FreqMaskParams = field(default_factory=FreqMaskParams)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int | None = None
    margin: float = 0.2
    weight_decay: float = 0.0
    patience: int = 5
    mining: str = "none"
    sampler: str = "pk"
    labels_per_batch: int = 8
    tracks_per_label: int = 4
    temperature: float = 0.1
    projection_dim: int = 64
    steps_per_epoch: int | None = None
    cached_segments: int | None = None
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0


@dataclass(frozen=True)
class ModelParams:
    """One model's hyper-parameters; which fields matter depends on `arch`."""

    arch: str
    channels: tuple[int, ...] = ()
    fc: tuple[int, ...] = ()
    kernel: int = 3
    block_pool: int = 2
    pool: int = 2
    dropout: float = 0.25
    depth: int = 18
    batch_size: int = 128
    embedding_dim: int = 128
    pretrained: str = "MTT_musicnn"   # arch musicnn: the checkpoint in the musicnn wheel
    freeze: str = "none"              # arch musicnn: none | frontend | backbone (no gradient)
    lr_factor: float = 1.0            # arch musicnn: learning-rate factor of the pretrained layers
    head_hidden: int = 0              # arch musicnn: hidden units of the embedding head (0: linear head)
    band_stats: bool = False          # arch musicnn: the head also sees each mel band's mean and std


@dataclass(frozen=True)
class EvaluateParams:
    minkowski_p: float = 3.0
    bootstrap: int = 1000
    confidence: float = 0.95


@dataclass(frozen=True)
class IndexParams:
    distance: str = "best"
    scaler: str = "best"
    approximate_above: int = 200_000
    hnsw_m: int = 32
    hnsw_ef_search: int = 128


@dataclass(frozen=True)
class ServeParams:
    max_upload_mb: float = 50.0  # `songspace serve`: larger uploads are refused (413)
    neighbours: int = 10         # k of the explorer's neighbour lists (server and exported page)
    max_query_seconds: float = 1200.0  # uploads whose header declares more audio are refused (413)
    judge_uncertain_share: float = 0.5  # judge view: share of questions the model is least sure of (rest random)


@dataclass(frozen=True)
class ComputeParams:
    engine: str = "local"        # local (this machine, no Ray) | ray (Ray Data over a cluster)
    address: str = "auto"        # ray: the cluster to join (auto: the one `ray start` runs here) | host:port
    workers: int = 2             # processes (local) or actors (ray) doing per-song work at once
    cpus_per_worker: float = 1.0  # ray: CPUs each actor reserves (its torch threads)
    gpus_per_worker: float = 0.0  # ray: GPUs each actor reserves (> 0: the networks run on a GPU)
    batch_size: int = 8          # songs per task handed to a worker
    cache_dir: str = "data/cache"  # per-song results, keyed by content and settings (README "Scale")


@dataclass(frozen=True)
class Params:
    seed: int = 42
    model: str = "model3"
    loss: str = "triplet"
    data: DataParams = field(default_factory=DataParams)
    corpus: CorpusParams = field(default_factory=CorpusParams)
    split: SplitParams = field(default_factory=SplitParams)
    groundtruth: GroundTruthParams = field(default_factory=GroundTruthParams)
    features: FeatureParams = field(default_factory=FeatureParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    train: TrainParams = field(default_factory=TrainParams)
    models: dict[str, ModelParams] = field(default_factory=dict)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    index: IndexParams = field(default_factory=IndexParams)
    serve: ServeParams = field(default_factory=ServeParams)
    compute: ComputeParams = field(default_factory=ComputeParams)

    @property
    def model_params(self) -> ModelParams:
        """The hyper-parameters of the selected model."""
        if self.model not in self.models:
            raise ConfigError(
                f"model '{self.model}' is not configured; choose one of: "
                f"{', '.join(sorted(self.models))}"
            )
        return self.models[self.model]

    @property
    def batch_size(self) -> int:
        return self.train.batch_size or self.model_params.batch_size


LOSSES = ("triplet", "contrastive", "supcon")
SOURCES = ("corpus", "folder")
MINING = ("none", "semihard", "hard", "batch_hard")
SAMPLERS = ("pk", "triplets")
SPLIT_METHODS = ("partition", "hash")
PRETRAINED = ("MSD_musicnn", "MTT_musicnn")
FREEZE = ("none", "frontend", "backbone")
ENGINES = ("local", "ray")


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
    kwargs = {
        name: _convert(hints[name], value, f"{where}.{name}".lstrip("."))
        for name, value in raw.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where or 'params'}: {err}") from err


LABEL_TAGS = ("genre", "artist", "album", "albumartist")   # data.labels: tag:<one of these>
GROUP_TAGS = ("album", "artist")                             # data.groups: tag:<one of these>


def _check_tag_choice(key: str, value: str, tags: tuple[str, ...], others: str) -> None:
    if value.startswith("tag:") and value[4:] not in tags:
        raise ConfigError(f"{key} '{value}' is unknown; choose {others} or one of: "
                          f"{', '.join('tag:' + t for t in tags)}")
    if key == "data.groups" and value != "none" and not value.startswith("tag:"):
        raise ConfigError(f"{key} '{value}' is unknown; choose {others} or one of: "
                          f"{', '.join('tag:' + t for t in tags)}")


def validate(params: Params) -> Params:
    """Cross-field checks that a single field's type cannot express."""
    if params.loss not in LOSSES:
        raise ConfigError(f"loss '{params.loss}' is unknown; choose one of: {', '.join(LOSSES)}")
    if params.data.source not in SOURCES:
        raise ConfigError(
            f"data.source '{params.data.source}' is unknown; choose one of: {', '.join(SOURCES)}"
        )
    if params.data.source == "folder" and not params.data.audio_dir:
        raise ConfigError("data.source is 'folder' but data.audio_dir is not set")
    _check_tag_choice("data.labels", params.data.labels, LABEL_TAGS, "folders, a labels CSV")
    _check_tag_choice("data.groups", params.data.groups, GROUP_TAGS, "none")
    if params.train.mining not in MINING:
        raise ConfigError(
            f"train.mining '{params.train.mining}' is unknown; choose one of: {', '.join(MINING)}"
        )
    if params.train.sampler not in SAMPLERS:
        raise ConfigError(
            f"train.sampler '{params.train.sampler}' is unknown; choose one of: {', '.join(SAMPLERS)}"
        )
    if params.split.method not in SPLIT_METHODS:
        raise ConfigError(f"split.method '{params.split.method}' is unknown; choose one of: "
                          f"{', '.join(SPLIT_METHODS)}")
    if not 0 < params.split.test_fraction < 1:
        raise ConfigError("split.test_fraction must lie between 0 and 1")
    if not 0 <= params.split.val_fraction < 1:
        raise ConfigError("split.val_fraction must lie in [0, 1)")
    if not 0 < params.split.open_set_labels < 1:
        raise ConfigError("split.open_set_labels must lie between 0 and 1")
    if params.split.open_set and (params.data.quartets or params.data.labels == "none"):
        raise ConfigError("split.open_set puts whole labels on the test side: it needs labels and "
                          "no data.quartets (annotated quartets keep their own split)")
    for name, mp in params.models.items():
        if mp.pretrained not in PRETRAINED:
            raise ConfigError(f"models.{name}.pretrained '{mp.pretrained}' is unknown; choose one of: "
                              f"{', '.join(PRETRAINED)}")
        if mp.freeze not in FREEZE:
            raise ConfigError(f"models.{name}.freeze '{mp.freeze}' is unknown; choose one of: {', '.join(FREEZE)}")
        if not mp.lr_factor >= 0:
            raise ConfigError(f"models.{name}.lr_factor must be >= 0, got {mp.lr_factor}")
    if not params.serve.max_upload_mb > 0 or params.serve.neighbours < 1:
        raise ConfigError("serve.max_upload_mb must be positive and serve.neighbours at least 1")
    if params.compute.engine not in ENGINES:
        raise ConfigError(f"compute.engine '{params.compute.engine}' is unknown; choose one of: "
                          f"{', '.join(ENGINES)}")
    params.model_params  # noqa: B018 - raises for an unconfigured model
    _check_ranges(params)
    return params


DEVICES = ("auto", "cpu", "cuda")

# key -> (lowest, highest, lowest allowed itself, highest allowed itself); None: unbounded.
# Checked when params are loaded, so a bad value stops the first stage, not the fourth.
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "seed": (0, None, True, True),
    "data.min_seconds": (0, None, True, True),
    "corpus.pieces_per_class": (1, None, True, True),
    "corpus.bars": (1, None, True, True),
    "corpus.max_seconds": (0, MAX_CLIP_SECONDS, False, True),
    "corpus.sample_rate": (8000, None, True, True),
    "groundtruth.test_quartets": (1, None, True, True),
    "groundtruth.val_quartets": (0, None, True, True),
    "groundtruth.train_triplets": (0, None, True, True),
    "features.sample_rate": (1000, None, True, True),
    "features.n_fft": (16, None, True, True),
    "features.hop_length": (1, None, True, True),
    "features.n_mels": (1, None, True, True),
    "features.f_min": (0, None, True, True),
    "features.f_max": (0, None, False, True),
    "features.segment_seconds": (0, None, False, True),
    "features.segment_hop_seconds": (0, None, False, True),
    "features.max_segments": (1, None, True, True),
    "groundtruth.min_val_quartets": (0, None, True, True),
    "augment.views": (0, None, True, True),
    "augment.segments": (1, None, True, True),
    "augment.view_p": (0, 1, True, True),
    "train.labels_per_batch": (2, None, True, True),
    "train.tracks_per_label": (2, None, True, True),
    "serve.max_upload_mb": (0, None, False, True),
    "serve.neighbours": (1, None, True, True),
    "serve.max_query_seconds": (0, None, False, True),
    "serve.judge_uncertain_share": (0, 1, True, True),
    "augment.pitch_shift.max_semitones": (0, 12, True, True),
    "augment.time_stretch.max_change": (0, 1, True, False),
    "augment.resample.min_rate": (1000, None, True, True),
    "augment.noise.strength": (0, None, True, True),
    "augment.time_mask.max_frames": (0, None, True, True),
    "augment.time_mask.count": (0, None, True, True),
    "augment.freq_mask.max_bins": (0, None, True, True),
    "augment.freq_mask.count": (0, None, True, True),
    "train.epochs": (1, None, True, True),
    "train.lr": (0, None, False, True),
    "train.batch_size": (2, None, True, True),
    "train.margin": (0, None, True, True),
    "train.weight_decay": (0, None, True, True),
    "train.patience": (1, None, True, True),
    "train.temperature": (0, None, False, True),
    "train.projection_dim": (1, None, True, True),
    "train.steps_per_epoch": (1, None, True, True),
    "train.cached_segments": (1, None, True, True),
    "train.num_workers": (0, None, True, True),
    "evaluate.minkowski_p": (1, None, True, True),   # a norm; below 1 no metric
    "evaluate.bootstrap": (1, None, True, True),
    "evaluate.confidence": (0, 1, False, False),
    "index.approximate_above": (1, None, True, True),
    "index.hnsw_m": (2, None, True, True),
    "index.hnsw_ef_search": (1, None, True, True),
    "compute.workers": (1, None, True, True),
    "compute.cpus_per_worker": (0, None, False, True),
    "compute.gpus_per_worker": (0, None, True, True),
    "compute.batch_size": (1, None, True, True),
}
_PROBABILITIES = ("pitch_shift", "time_stretch", "resample", "noise", "random_mask", "time_mask",
                  "freq_mask")
_MODEL_RANGES = {"kernel": 1, "block_pool": 1, "pool": 1, "depth": 1, "batch_size": 2, "embedding_dim": 1,
                 "head_hidden": 0}


def _in_range(key: str, value: float | None, low, high, low_ok: bool, high_ok: bool) -> None:
    if value is None:  # an optional key left empty
        return
    too_low = low is not None and (value < low or (value == low and not low_ok))
    too_high = high is not None and (value > high or (value == high and not high_ok))
    if too_low or too_high:
        lo = "" if low is None else f"{'>=' if low_ok else '>'} {low:g}"
        hi = "" if high is None else f"{'<=' if high_ok else '<'} {high:g}"
        raise ConfigError(f"{key}: {value!r} is out of range; it must be {' and '.join(x for x in (lo, hi) if x)}")


def _check_ranges(params: Params) -> None:
    """Every numeric value in its range, every name in its registry: ConfigError naming the key."""
    for key, bounds in _RANGES.items():
        value: Any = params
        for part in key.split("."):
            value = getattr(value, part)
        _in_range(key, value, *bounds)
    for name in _PROBABILITIES:
        _in_range(f"augment.{name}.p", getattr(params.augment, name).p, 0, 1, True, True)
    fp = params.features
    if fp.f_max <= fp.f_min or fp.f_max > fp.sample_rate / 2:
        raise ConfigError(f"features.f_max: {fp.f_max:g} must lie above features.f_min ({fp.f_min:g}) "
                          f"and at most half of features.sample_rate ({fp.sample_rate / 2:g})")
    if fp.hop_length > fp.segment_samples:
        raise ConfigError(f"features.hop_length: {fp.hop_length} is longer than a segment "
                          f"({fp.segment_samples} samples)")
    if not params.corpus.classes:
        raise ConfigError("corpus.classes: must name at least one class")
    from songspace import corpus  # its registry of classes and its soundfont's programs

    try:
        corpus.validate(params.corpus)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not params.corpus.programs or not all(0 <= p <= 127 for p in params.corpus.programs):
        raise ConfigError("corpus.programs: General MIDI programs, each from 0 to 127")
    device = params.train.device
    if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"train.device '{device}' is unknown; choose one of: {', '.join(DEVICES)}")
    for name, mp in params.models.items():
        for field_name, low in _MODEL_RANGES.items():
            _in_range(f"models.{name}.{field_name}", getattr(mp, field_name), low, None, True, True)
        _in_range(f"models.{name}.dropout", mp.dropout, 0, 1, True, False)
        if any(c < 1 for c in (*mp.channels, *mp.fc)):
            raise ConfigError(f"models.{name}: channels and fc sizes must be at least 1")
    from songspace import distances, scalers  # the registries; numpy / scipy / sklearn only

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
