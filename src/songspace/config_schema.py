"""Every parameter of params.yaml, declared once: its type, default, range and meaning.

Each section of params.yaml is a frozen dataclass; each field's default is the value
params.yaml ships (a test compares them), and its metadata holds what `check` enforces:
`range` (lowest, highest, lowest allowed itself, highest allowed itself; None: unbounded;
for a list, each item), `choices` (the valid names), `nonempty` (a list needs an item) and
`arch` (the model archs a `models.<name>` key applies to; absent: every arch), beside
`help`, the meaning. `check` reads nothing else: a constraint added here is enforced.
Checks across fields and against registries (corpus classes, distances) live in `config`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from songspace.errors import UserError

MAX_CLIP_SECONDS = 30.0   # the longest clip the built-in corpus renders
MINKOWSKI_MIN_P = 1.0     # below an order of 1 a Minkowski "distance" is no metric
RESAMPLE_STEP_HZ = 100    # augment.resample draws its rates on this grid (augment.low_rates)

LOSSES = ("triplet", "multisimilarity", "contrastive", "supcon")
TRIPLET_LOSSES = ("triplet", "multisimilarity")  # on ground-truth triplets, or on a batch's labelled items
SOURCES = ("corpus", "folder")
MINING = ("none", "semihard", "hard", "batch_hard")
SAMPLERS = ("pk", "triplets")
SPLIT_METHODS = ("partition", "hash")
ENGINES = ("local", "ray")
DEVICES = ("auto", "cpu", "cuda")   # or cuda:<index>
LABEL_TAGS = ("genre", "artist", "album", "albumartist")   # data.labels: tag:<one of these>
GROUP_TAGS = ("album", "artist")                             # data.groups: tag:<one of these>
ARCHS = ("cnn", "cnn_bn", "resnet", "musicnn")               # the builders of models.ARCHS
CNN_ARCHS = ("cnn", "cnn_bn")
RESNET_DEPTHS = (18, 34, 50, 101, 152)
PRETRAINED = ("MSD_musicnn", "MTT_musicnn")                  # the checkpoints in the musicnn wheel
BOTH_NETWORKS = "+".join(PRETRAINED)                          # a trunk of both networks' outputs
FREEZE = ("none", "frontend", "backbone")


class ConfigError(UserError, ValueError):
    """params.yaml does not describe a valid configuration."""


def _meta(help: str, **constraints: Any) -> dict[str, Any]:
    return {"help": help, **{k: v for k, v in constraints.items() if v is not None}}


def num(default: Any, low: float | None = None, high: float | None = None, *, help: str,
        low_ok: bool = True, high_ok: bool = True, nonempty: bool | None = None,
        arch: tuple[str, ...] | None = None) -> Any:
    """A number (or a list of numbers) in [low, high]; `low_ok`/`high_ok` False: the bound excluded."""
    return field(default=default, metadata=_meta(help, range=(low, high, low_ok, high_ok), nonempty=nonempty,
                                                 arch=arch))


def pick(default: str, choices: tuple[str, ...], *, help: str, arch: tuple[str, ...] | None = None) -> Any:
    """One of `choices`."""
    return field(default=default, metadata=_meta(help, choices=choices, arch=arch))


def free(default: Any, *, help: str, nonempty: bool | None = None, arch: tuple[str, ...] | None = None) -> Any:
    """A value whose only constraint is its type (or one checked across fields in `config`)."""
    return field(default=default, metadata=_meta(help, nonempty=nonempty, arch=arch))


def section(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata=_meta(help))


@dataclass(frozen=True)
class DataParams:
    source: str = pick("corpus", SOURCES, help="corpus: the built-in library rendered from scores | folder")
    audio_dir: str | None = free("data/corpus", help="folder: root of the music library")
    labels: str = free("folders", help="folders: first sub-folder | a CSV path,label[,group] | tag:<tag> | none")
    groups: str = free("none", help="none | tag:album | tag:artist: a group never straddles splits")
    quartets: str | None = free(None, help="optional CSV of human odd-one-out judgements")
    min_seconds: float = num(1.0, 0, help="files shorter than this many seconds are skipped")


@dataclass(frozen=True)
class CorpusParams:
    classes: tuple[str, ...] = free(("bach", "palestrina", "monteverdi", "reel", "jig", "hornpipe"),
                                    help="the corpus's classes, each once", nonempty=True)
    pieces_per_class: int = num(40, 1, help="clips rendered per class")
    bars: int = num(16, 1, help="first bars of each piece")
    max_seconds: float = num(30.0, 0, MAX_CLIP_SECONDS, low_ok=False, help="renders are cut to this length")
    sample_rate: int = num(16000, 8000, help="Hz of the rendered clips")
    programs: tuple[int, ...] = num((0, 4, 6, 11, 19, 21, 24, 40, 42, 48, 52, 56, 60, 68, 71, 73), 0, 127,
                                    nonempty=True, help="General MIDI programs every clip draws its instrument from")


@dataclass(frozen=True)
class SplitParams:
    test_fraction: float = num(0.3, 0, 1, low_ok=False, high_ok=False, help="share of tracks for testing")
    val_fraction: float = num(0.15, 0, 1, high_ok=False, help="share of training tracks for validation")
    method: str = pick("partition", SPLIT_METHODS, help="with annotated quartets: partition keeps the most | "
                                                        "hash: stable when songs are added")
    open_set: bool = free(False, help="whole labels on the test side: test quartets of unseen labels only")
    open_set_labels: float = num(0.3, 0, 1, low_ok=False, high_ok=False,
                                 help="with open_set: the share of labels put on the test side")


@dataclass(frozen=True)
class GroundTruthParams:
    test_quartets: int = num(2000, 1, help="test quartets derived from labels")
    val_quartets: int = num(500, 0, help="validation quartets derived from labels")
    train_triplets: int = num(4000, 0, help="training triplets derived from labels")
    min_val_quartets: int = num(100, 0, help="fewer annotated val quartets: training ones are held out")


@dataclass(frozen=True)
class FeatureParams:
    sample_rate: int = num(16000, 1000, help="Hz audio is decoded at")
    n_fft: int = num(1024, 16, help="STFT window, samples")
    hop_length: int = num(512, 1, help="STFT hop, samples")
    n_mels: int = num(64, 1, help="mel bands")
    f_min: float = num(0.0, 0, help="lowest mel frequency, Hz")
    f_max: float = num(8000.0, 0, low_ok=False, help="highest mel frequency, Hz (at most half the rate)")
    segment_seconds: float = num(3.0, 0, low_ok=False, help="length of one segment")
    segment_hop_seconds: float = num(3.0, 0, low_ok=False, help="segments cover the whole track, one every hop")
    max_segments: int = num(16, 1, help="per track; a longer track's segments are spread evenly")

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Frames of one segment's log-mel (torchaudio's centred STFT)."""
        return self.segment_samples // self.hop_length + 1


def _p(default: float) -> Any:
    return num(default, 0, 1, help="probability of applying it")


@dataclass(frozen=True)
class PitchShiftParams:
    p: float = _p(0.5)
    max_semitones: float = num(2.0, 0, 12, help="shift drawn from [-m, m] semitones")


@dataclass(frozen=True)
class TimeStretchParams:
    p: float = _p(0.5)
    max_change: float = num(0.15, 0, 1, high_ok=False, help="rate drawn from [1 - c, 1 + c]")


@dataclass(frozen=True)
class ResampleParams:
    p: float = _p(0.3)
    min_rate: int = num(6000, 1000, help="Hz: down to a rate in [min_rate, rate) and back (band limit)")


@dataclass(frozen=True)
class NoiseParams:
    p: float = _p(0.0)
    strength: float = num(0.1, 0, help="Gaussian noise, std = strength x the spectrogram's own std")


@dataclass(frozen=True)
class RandomMaskParams:
    p: float = num(0.0, 0, 1, help="each time-frequency bin set to the minimum with this probability")


@dataclass(frozen=True)
class TimeMaskParams:
    p: float = _p(0.0)
    max_frames: int = num(12, 0, help="SpecAugment: widest mask, frames")
    count: int = num(2, 0, help="masks per spectrogram")


@dataclass(frozen=True)
class FreqMaskParams:
    p: float = _p(0.0)
    max_bins: int = num(8, 0, help="SpecAugment: widest mask, mel bands")
    count: int = num(2, 0, help="masks per spectrogram")


@dataclass(frozen=True)
class AugmentParams:
    views: int = num(0, 0, help="cached waveform-level augmented views of each section (0: off)")
    segments: int = num(4, 1, help="sections per training track that get cached views")
    view_p: float = num(0.0, 0, 1, help="share of training draws from the cached views (else a fresh crop)")
    pitch_shift: PitchShiftParams = section(PitchShiftParams, "waveform: pitch shift")
    time_stretch: TimeStretchParams = section(TimeStretchParams, "waveform: time stretch")
    resample: ResampleParams = section(ResampleParams, "waveform: down to a lower rate and back")
    noise: NoiseParams = section(NoiseParams, "spectrogram: additive Gaussian noise")
    random_mask: RandomMaskParams = section(RandomMaskParams, "spectrogram: random bins silenced")
    time_mask: TimeMaskParams = section(TimeMaskParams, "spectrogram: SpecAugment time masks")
    freq_mask: FreqMaskParams = section(FreqMaskParams, "spectrogram: SpecAugment frequency masks")


@dataclass(frozen=True)
class TrainParams:
    epochs: int = num(20, 1, help="most epochs")
    lr: float = num(1e-3, 0, low_ok=False, help="learning rate")
    batch_size: int | None = num(None, 2, help="null: the model's own batch size (models.<name>.batch_size)")
    margin: float = num(0.2, 0, help="triplet margin")
    weight_decay: float = num(0.0, 0, help="Adam weight decay (L2)")
    patience: int = num(10, 1, help="early stopping: epochs without a better validation accuracy")
    mining: str = pick("none", MINING, help="triplets of a batch: none (every valid one) | semihard | hard "
                                            "| batch_hard")
    sampler: str = pick("pk", SAMPLERS, help="pk: P labels x K tracks per batch | triplets: ground-truth triplets")
    labels_per_batch: int = num(8, 2, help="P")
    tracks_per_label: int = num(4, 2, help="K")
    temperature: float = num(0.1, 0, low_ok=False, help="NT-Xent temperature (contrastive, supcon)")
    projection_dim: int = num(64, 1, help="projection head (contrastive), dropped after training")
    steps_per_epoch: int | None = num(100, 1, help="batches per epoch (null: one pass over the training data)")
    cached_segments: int | None = num(16, 1, help="frozen backbone: its outputs for this many segments per "
                                                  "training track computed once (null: crops every step)")
    segments_per_draw: int = num(1, 1, help="with cached segments: a draw of a track is the mean of this many "
                                           "of them, distinct (all when fewer)")
    device: str = free("auto", help="auto | cpu | cuda | cuda:<index>")
    amp: bool = free(True, help="mixed precision (CUDA only)")
    num_workers: int = num(0, 0, help="data loader processes")


_MUSICNN = ("musicnn",)


@dataclass(frozen=True)
class ModelParams:
    """One model's hyper-parameters; a key whose `arch` metadata leaves out the model's arch is refused."""

    arch: str = field(metadata=_meta("the builder: " + " | ".join(ARCHS), choices=ARCHS))
    channels: tuple[int, ...] = num((), 1, nonempty=True, arch=CNN_ARCHS, help="conv blocks' channels")
    fc: tuple[int, ...] = num((), 1, nonempty=True, arch=CNN_ARCHS, help="linear layers; the last is the embedding")
    kernel: int = num(3, 1, arch=CNN_ARCHS, help="conv kernel size")
    block_pool: int = num(2, 1, arch=CNN_ARCHS, help="max-pool after each conv block")
    pool: int = num(2, 1, arch=CNN_ARCHS, help="max-pool after the last block")
    dropout: float = num(0.25, 0, 1, high_ok=False, arch=CNN_ARCHS, help="dropout before the linear layers")
    depth: int = field(default=18, metadata=_meta("layers", choices=RESNET_DEPTHS, arch=("resnet",)))
    batch_size: int = num(128, 2, help="the model's batch size (train.batch_size overrides it)")
    embedding_dim: int = num(128, 1, help="dimensions of the embedding")
    pretrained: str = pick("MTT_musicnn", PRETRAINED + (BOTH_NETWORKS,), arch=_MUSICNN,
                           help="the checkpoint in the musicnn wheel, or both ('+': the trunk joins their outputs)")
    freeze: str = pick("none", FREEZE, arch=_MUSICNN, help="the pretrained part without gradient")
    lr_factor: float = num(1.0, 0, arch=_MUSICNN, help="learning-rate factor of the pretrained layers")
    head_hidden: int = num(0, 0, arch=_MUSICNN, help="hidden units of the embedding head (0: linear head)")
    band_stats: bool = free(False, arch=_MUSICNN, help="the head also sees each mel band's mean and std")
    band_flux: bool = free(False, arch=_MUSICNN,
                           help="the head also sees each mel band's mean absolute change from one frame to the next")
    mid_end: bool = free(False, arch=_MUSICNN,
                         help="the head also sees the first network's mid-end features, mean and max over time")


def arch_keys(arch: str) -> tuple[str, ...]:
    """The `models.<name>` keys that apply to `arch`."""
    return tuple(f.name for f in dataclasses.fields(ModelParams) if arch in f.metadata.get("arch", (arch,)))


def _cnn(arch: str, channels: tuple[int, ...], fc: tuple[int, ...], pool: int, batch: int) -> ModelParams:
    return ModelParams(arch=arch, channels=channels, fc=fc, kernel=3, block_pool=2, pool=pool, dropout=0.25,
                       batch_size=batch)


def _musicnn(pretrained: str, freeze: str, lr_factor: float = 1.0) -> ModelParams:
    return ModelParams(arch="musicnn", pretrained=pretrained, freeze=freeze, lr_factor=lr_factor, band_stats=True,
                       head_hidden=0, batch_size=32)


# The models params.yaml ships (its `models:`; a `models:` of one's own replaces them all).
DEFAULT_MODELS: dict[str, ModelParams] = {
    "model1": _cnn("cnn", (32, 64), (128,), 2, 32),
    "model2": _cnn("cnn", (32, 64, 128), (512, 256, 128), 2, 32),
    "model3": _cnn("cnn", (32, 64, 128, 128), (512, 256, 128), 2, 128),
    "model4": _cnn("cnn", (32, 64, 128, 128), (1024, 512, 256, 128), 2, 128),
    "model5": _cnn("cnn", (32, 64, 128, 128, 64), (2048, 1024, 512, 256, 128), 1, 128),
    "model6": _cnn("cnn_bn", (32, 64, 128, 64), (1024, 256, 128), 1, 64),
    "resnet18": ModelParams(arch="resnet", depth=18, batch_size=128),
    "resnet50": ModelParams(arch="resnet", depth=50, batch_size=128),
    "musicnn_msd": _musicnn("MSD_musicnn", "backbone"),
    "musicnn_mtt": _musicnn("MTT_musicnn", "backbone"),
    "musicnn_msd_ft": _musicnn("MSD_musicnn", "frontend", lr_factor=0.1),
}


@dataclass(frozen=True)
class EvaluateParams:
    minkowski_p: float = num(3.0, MINKOWSKI_MIN_P, help="order of the Minkowski distance")
    bootstrap: int = num(1000, 1, help="bootstrap resamples of the confidence intervals")
    confidence: float = num(0.95, 0, 1, low_ok=False, high_ok=False, help="level of the confidence intervals")


@dataclass(frozen=True)
class IndexParams:
    distance: str = free("best", help="best: the evaluation's best cell | one of the distances")
    scaler: str = free("best", help="best | one of the scalers")
    approximate_above: int = num(200_000, 1, help="exact flat search below this many tracks, HNSW above")
    hnsw_m: int = num(32, 2, help="HNSW links per node")
    hnsw_ef_search: int = num(128, 1, help="HNSW search breadth")


@dataclass(frozen=True)
class ServeParams:
    max_upload_mb: float = num(50.0, 0, low_ok=False, help="larger query uploads are refused (413)")
    neighbours: int = num(10, 1, help="nearest tracks listed per track")
    max_query_seconds: float = num(1200.0, 0, low_ok=False, help="uploads declaring more audio are refused (413)")
    judge_uncertain_share: float = num(0.5, 0, 1, help="judge view: share of questions the model is least sure of")


@dataclass(frozen=True)
class ComputeParams:
    engine: str = pick("local", ENGINES, help="local: this machine, no Ray | ray: Ray Data over a cluster")
    address: str = free("auto", help="ray: auto (the cluster `ray start` runs here) | host:port")
    workers: int = num(2, 1, help="processes (local) or actors (ray) doing per-song work at once")
    cpus_per_worker: float = num(1.0, 0, low_ok=False, help="ray: CPUs each actor reserves")
    gpus_per_worker: float = num(0.0, 0, help="ray: GPUs each actor reserves (> 0: the networks run on a GPU)")
    batch_size: int = num(8, 1, help="songs per task handed to a worker")
    cache_dir: str = free("data/cache", help="per-song results, keyed by content and settings")


@dataclass(frozen=True)
class Params:
    seed: int = num(42, 0, help="seed of every random draw")
    model: str = free("musicnn_msd", help="a key of `models`")
    loss: str = pick("triplet", LOSSES, help="triplet | multisimilarity | contrastive (NT-Xent) | supcon (supervised "
                     "contrastive)")
    data: DataParams = section(DataParams, "the music library")
    corpus: CorpusParams = section(CorpusParams, "the built-in corpus")
    split: SplitParams = section(SplitParams, "train / val / test split")
    groundtruth: GroundTruthParams = section(GroundTruthParams, "quartets and triplets")
    features: FeatureParams = section(FeatureParams, "log-mel segments")
    augment: AugmentParams = section(AugmentParams, "training augmentation")
    train: TrainParams = section(TrainParams, "training")
    models: dict[str, ModelParams] = field(default_factory=lambda: dict(DEFAULT_MODELS),
                                           metadata=_meta("models by name"))
    evaluate: EvaluateParams = section(EvaluateParams, "the evaluation grid")
    index: IndexParams = section(IndexParams, "the similar-song index")
    serve: ServeParams = section(ServeParams, "`songspace serve` and the exported explorer")
    compute: ComputeParams = section(ComputeParams, "where per-song work runs")

    @property
    def model_params(self) -> ModelParams:
        """The hyper-parameters of the selected model."""
        if self.model not in self.models:
            raise ConfigError(f"model '{self.model}' is not configured; choose one of: "
                              f"{', '.join(sorted(self.models))}")
        return self.models[self.model]

    @property
    def batch_size(self) -> int:
        return self.train.batch_size or self.model_params.batch_size


def declared(cls: type = Params, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """(key, field) of every leaf parameter, sections walked (`models.<name>` as `models.*`)."""
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name == "models" and cls is Params:
            yield from declared(ModelParams, "models.*.")
        elif isinstance(f.default_factory, type) and dataclasses.is_dataclass(f.default_factory):
            yield from declared(f.default_factory, f"{key}.")
        else:
            yield key, f


def in_range(key: str, value: float | None, low: float | None, high: float | None, low_ok: bool, high_ok: bool) -> None:
    """ConfigError naming `key` unless `value` lies in the range (None: an optional key left empty)."""
    if value is None:
        return
    too_low = low is not None and (value < low or (value == low and not low_ok))
    too_high = high is not None and (value > high or (value == high and not high_ok))
    if too_low or too_high:
        lo = "" if low is None else f"{'>=' if low_ok else '>'} {low:g}"
        hi = "" if high is None else f"{'<=' if high_ok else '<'} {high:g}"
        raise ConfigError(f"{key}: {value!r} is out of range; it must be {' and '.join(x for x in (lo, hi) if x)}")


def check(obj: Any, where: str = "") -> None:
    """Every declared constraint of `obj` (a section, or the whole `Params`) and its sections."""
    for f in dataclasses.fields(obj):
        key, value = f"{where}.{f.name}".lstrip("."), getattr(obj, f.name)
        if "arch" in f.metadata and obj.arch not in f.metadata["arch"]:
            continue  # a key of other archs: left at its default, unused
        if dataclasses.is_dataclass(value):
            check(value, key)
        elif isinstance(value, dict):
            for name, item in value.items():
                check(item, f"{key}.{name}")
        else:
            check_value(key, value, f.metadata)


def check_value(key: str, value: Any, meta: dict) -> None:
    """One value against its field's declared constraints."""
    if meta.get("nonempty") and not value:
        raise ConfigError(f"{key}: must name at least one item")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key} '{value}' is unknown; choose one of: {', '.join(map(str, meta['choices']))}")
    if "range" in meta:
        for item in value if isinstance(value, tuple) else (value,):
            in_range(key, item, *meta["range"])
