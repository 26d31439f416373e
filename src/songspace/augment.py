"""Waveform and spectrogram augmentations, seeded.

Two levels, as in the training recipe:

* **Waveform level** (costly, computed once by the `augment` stage and cached as features, one
  set of `augment.views` views per training track): `pitch_shift`, `time_stretch`, `resample`.
  Signals are mono float32 numpy arrays `(samples,)` at `rate` Hz. Randomness comes from a
  `numpy.random.Generator`.
* **Spectrogram level** (cheap, applied on the fly by the training data loader to log-mel
  tensors `(..., n_mels, frames)`): `noise`, `random_mask`, `time_mask`, `freq_mask` (their
  cores in `specaugment`).
  Randomness comes from a `torch.Generator`; every leading index is one item with its own draws.

Strength conventions (the knobs in params.yaml `augment:`):

=============  ===========================================================================
pitch_shift    semitones drawn uniformly in [-max_semitones, +max_semitones]; length kept
time_stretch   rate drawn uniformly in [1 - max_change, 1 + max_change]; rate 2 halves the
               length, pitch kept (phase vocoder)
resample       down to a rate drawn in [min_rate, rate) on a 100 Hz grid and back up: a band
               limit at half the drawn rate (flat to ~0.9 of it, >= 45 dB down above it),
               length kept
noise          x + strength * std(x) * N(0, 1), std over the item's own (n_mels, frames), so
               strength 0.5 is noise at half the spectrogram's own spread (thesis default 0.5)
random_mask    each time-frequency bin set to the item's minimum (silence: what zeroing the
               power would give in dB) with probability p (thesis default 0.2); here `p` is the
               per-bin probability, so the augmentation always runs and p = 0 is the identity
time_mask      SpecAugment: `count` bands of width uniform in [0, max_frames] frames, set to
               the item's mean (the SpecAugment paper's zero on mean-normalised features)
freq_mask      as time_mask, over mel bins (width in [0, max_bins])
=============  ===========================================================================

Every augmentation except random_mask is applied with its probability `p`. Each random wrapper
draws the same amount of randomness whatever its probability and strength (only a SpecAugment
`count` changes how much is drawn), so tuning one augmentation does not reshuffle the draws of
the others. The waveform cores `pitch_shift`, `time_stretch` and `resample_band_limit` are
deterministic given their arguments (the draw happens in the registered wrapper); `noise`,
`random_mask`, `time_mask` and `freq_mask` take an explicit strength and a generator.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import torch
import torchaudio.functional as AF

from songspace.specaugment import AugmentError, freq_mask, noise, random_mask, time_mask
from .config import (
    RESAMPLE_STEP_HZ,
    AugmentParams,
    ConfigError,
    FreqMaskParams,
    NoiseParams,
    PitchShiftParams,
    RandomMaskParams,
    ResampleParams,
    TimeMaskParams,
    TimeStretchParams,
    check,
)

# Phase-vocoder analysis window: about 64 ms (1024 samples at 16 kHz), hop a quarter of it.
STFT_WINDOW_SECONDS = 0.064
# Resampling rates are drawn on a RESAMPLE_STEP_HZ grid so that rate / low_rate reduces to small
# integers (torchaudio's sinc kernel grows with the reduced ratio: a prime low rate would cost ~100x).
# The band limit's resampler: resampy's / librosa's "kaiser_best" filter. torchaudio's default
# (6 zero crossings, Hann window) leaves energy only ~5-20 dB down in the first 15% above the
# cut-off, which is no band limit; this one is ~50 dB down from low_rate / 2.
BAND_LIMIT_RESAMPLER = dict(
    lowpass_filter_width=64,
    rolloff=0.9475937167399596,
    resampling_method="sinc_interp_kaiser",
    beta=14.769656459379492,
)
# A pitch ratio 2**(semitones / 12) is approximated by a fraction p/q (q as small as possible)
# within this many cents, keeping the resampling step cheap; 0.5 cent is far below hearing.
PITCH_TOLERANCE_CENTS = 0.5


# ---------------------------------------------------------------------------------------------
# Waveform level: deterministic cores
# ---------------------------------------------------------------------------------------------


def as_wave(wave: np.ndarray) -> torch.Tensor:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise AugmentError(f"expected a mono waveform (samples,), got shape {wave.shape}")
    return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))


def _fit_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """Trim or zero-pad the last axis to `length` samples."""
    if wave.shape[-1] >= length:
        return wave[..., :length]
    return torch.nn.functional.pad(wave, (0, length - wave.shape[-1]))


def _stft_size(rate: int) -> int:
    """Power-of-two phase-vocoder window of about STFT_WINDOW_SECONDS at `rate` Hz."""
    return 1 << max(4, round(math.log2(STFT_WINDOW_SECONDS * rate)))


def _stretch(wave: torch.Tensor, rate_factor: float, rate: int, length: int) -> torch.Tensor:
    """Phase-vocoder time stretch of a float32 `(samples,)` tensor to exactly `length` samples."""
    n_fft = _stft_size(rate)
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    # Zero padding (not reflect) so that clips shorter than half a window still work.
    spec = torch.stft(
        wave, n_fft, hop, window=window, center=True, pad_mode="constant", return_complex=True
    )
    phase_advance = torch.linspace(0, math.pi * hop, n_fft // 2 + 1)[:, None]
    stretched = AF.phase_vocoder(spec, rate_factor, phase_advance)
    return torch.istft(stretched, n_fft, hop, window=window, center=True, length=length)


def time_stretch(wave: np.ndarray, rate_factor: float, rate: int = 16000) -> np.ndarray:
    """Play `wave` `rate_factor` times faster without changing its pitch (phase vocoder).

    wave: mono float32 `(samples,)`; returns float32 `(round(samples / rate_factor),)`: a factor
    of 2 halves the length, 0.5 doubles it, 1 returns an unchanged copy. `rate` (Hz) only sets
    the analysis window (about 64 ms).
    """
    if rate_factor <= 0:
        raise AugmentError(f"time_stretch: rate_factor must be positive, got {rate_factor}")
    x = as_wave(wave)
    if rate_factor == 1 or x.numel() == 0:
        return x.numpy().copy()
    length = max(1, int(round(x.numel() / rate_factor)))
    return _stretch(x, float(rate_factor), rate, length).numpy().astype(np.float32, copy=False)


def _pitch_fraction(semitones: float) -> Fraction:
    """The simplest fraction within PITCH_TOLERANCE_CENTS of 2**(semitones / 12)."""
    ratio = 2.0 ** (semitones / 12.0)
    denominator = 8
    while True:
        frac = Fraction(ratio).limit_denominator(denominator)
        if abs(1200.0 * math.log2(float(frac) / ratio)) <= PITCH_TOLERANCE_CENTS:
            return frac
        denominator *= 2


def pitch_shift(wave: np.ndarray, rate: int, semitones: float) -> np.ndarray:
    """Shift the pitch of `wave` by `semitones` (+12: one octave up), keeping its length.

    wave: mono float32 `(samples,)` at `rate` Hz; returns float32 `(samples,)`. The signal is
    time-stretched by the pitch ratio with a phase vocoder, then resampled back to its length.
    The ratio is a small fraction p/q within 0.5 cent of 2**(semitones/12) so that the resampler
    stays cheap. 0 semitones returns an unchanged copy.
    """
    x = as_wave(wave)
    if semitones == 0 or x.numel() == 0:
        return x.numpy().copy()
    frac = _pitch_fraction(float(semitones))
    up, down = frac.numerator, frac.denominator
    longer = max(1, int(round(x.numel() * up / down)))
    stretched = _stretch(x, down / up, rate, longer)
    # Playing `longer` samples up/down times faster: every frequency rises by up/down.
    shifted = AF.resample(stretched, up, down)
    return _fit_length(shifted, x.numel()).numpy().astype(np.float32, copy=False)


def resample_band_limit(wave: np.ndarray, rate: int, low_rate: int) -> np.ndarray:
    """Resample `wave` from `rate` down to `low_rate` Hz and back: removes content above low_rate/2.

    wave: mono float32 `(samples,)` at `rate` Hz; returns float32 `(samples,)` at `rate` Hz
    (torchaudio's Kaiser-windowed sinc resampler with the "kaiser_best" settings: flat to about
    0.9 x low_rate/2, at least 45 dB down from low_rate/2 on). A `low_rate` at or above `rate`
    returns an unchanged copy.
    """
    if low_rate <= 0:
        raise AugmentError(f"resample: low_rate must be positive, got {low_rate}")
    x = as_wave(wave)
    if low_rate >= rate or x.numel() == 0:
        return x.numpy().copy()
    g = math.gcd(int(rate), int(low_rate))
    down = AF.resample(x, rate // g, low_rate // g, **BAND_LIMIT_RESAMPLER)
    back = AF.resample(down, low_rate // g, rate // g, **BAND_LIMIT_RESAMPLER)
    return _fit_length(back, x.numel()).numpy().astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# Waveform level: random wrappers (draw, then call the core)
# ---------------------------------------------------------------------------------------------


def _random_pitch_shift(
    wave: np.ndarray, rate: int, params: PitchShiftParams, rng: np.random.Generator
) -> np.ndarray:
    apply = rng.random() < params.p
    semitones = rng.uniform(-params.max_semitones, params.max_semitones)
    return pitch_shift(wave, rate, semitones if apply else 0.0)


def _random_time_stretch(
    wave: np.ndarray, rate: int, params: TimeStretchParams, rng: np.random.Generator
) -> np.ndarray:
    apply = rng.random() < params.p
    factor = rng.uniform(1.0 - params.max_change, 1.0 + params.max_change)
    return time_stretch(wave, factor if apply else 1.0, rate)


def low_rates(rate: int, min_rate: int) -> np.ndarray:
    """The candidate band-limit rates: multiples of RESAMPLE_STEP_HZ in [min_rate, rate)."""
    first = -(-min_rate // RESAMPLE_STEP_HZ) * RESAMPLE_STEP_HZ
    rates = np.arange(first, rate, RESAMPLE_STEP_HZ)
    if rates.size == 0:
        raise AugmentError(
            f"augment.resample.min_rate ({min_rate} Hz) leaves no rate below the signal's "
            f"{rate} Hz on the {RESAMPLE_STEP_HZ} Hz grid; lower it"
        )
    return rates


def _random_resample(
    wave: np.ndarray, rate: int, params: ResampleParams, rng: np.random.Generator
) -> np.ndarray:
    rates = low_rates(rate, params.min_rate)
    apply = rng.random() < params.p
    low_rate = int(rates[rng.integers(rates.size)])
    return resample_band_limit(wave, rate, low_rate if apply else rate)


WaveformAugmentation = Callable[[np.ndarray, int, object, np.random.Generator], np.ndarray]

# name -> fn(wave (samples,), rate Hz, its params dataclass, numpy Generator); applied in this order.
WAVEFORM_AUGMENTATIONS: dict[str, WaveformAugmentation] = {
    "pitch_shift": _random_pitch_shift,
    "time_stretch": _random_time_stretch,
    "resample": _random_resample,
}


def augment_waveform(
    wave: np.ndarray, rate: int, params: AugmentParams, rng: np.random.Generator
) -> np.ndarray:
    """One augmented view of a mono float32 `(samples,)` clip at `rate` Hz.

    Applies pitch_shift, time_stretch and resample in turn, each with its probability `p`.
    Returns float32 `(samples',)`: the length changes only through time_stretch. The input is
    never modified.
    """
    validate(params)
    low_rates(rate, params.resample.min_rate)  # fail before the costly steps, not after
    out = as_wave(wave).numpy()
    for name, fn in WAVEFORM_AUGMENTATIONS.items():
        out = fn(out, rate, getattr(params, name), rng)
    return out


# ---------------------------------------------------------------------------------------------
# Spectrogram level
# ---------------------------------------------------------------------------------------------


def _random_noise(spec: torch.Tensor, params: NoiseParams, generator: torch.Generator) -> torch.Tensor:
    return noise(spec, params.strength, generator, p=params.p)


def _random_random_mask(
    spec: torch.Tensor, params: RandomMaskParams, generator: torch.Generator
) -> torch.Tensor:
    return random_mask(spec, params.p, generator)


def _random_time_mask(
    spec: torch.Tensor, params: TimeMaskParams, generator: torch.Generator
) -> torch.Tensor:
    return time_mask(spec, params.max_frames, params.count, generator, p=params.p)


def _random_freq_mask(
    spec: torch.Tensor, params: FreqMaskParams, generator: torch.Generator
) -> torch.Tensor:
    return freq_mask(spec, params.max_bins, params.count, generator, p=params.p)


SpectrogramAugmentation = Callable[[torch.Tensor, object, torch.Generator], torch.Tensor]

# name -> fn(spec (..., n_mels, frames), its params dataclass, torch Generator); applied in this
# order (noise first, so that masked regions are clean constants).
SPECTROGRAM_AUGMENTATIONS: dict[str, SpectrogramAugmentation] = {
    "noise": _random_noise,
    "random_mask": _random_random_mask,
    "time_mask": _random_time_mask,
    "freq_mask": _random_freq_mask,
}


def augment_spectrogram(
    spec: torch.Tensor, params: AugmentParams, generator: torch.Generator
) -> torch.Tensor:
    """Apply noise, random_mask, time_mask and freq_mask in turn, each with its probability.

    spec: log-mel `(n_mels, frames)` or a batch `(B, [1,] n_mels, frames)` (any leading dims;
    every leading index is one item with independent draws). Returns a new tensor of the same
    shape, dtype and device; the input is never modified. The generator may live on the CPU
    whatever the spectrogram's device.
    """
    validate(params)
    out = spec
    for name, fn in SPECTROGRAM_AUGMENTATIONS.items():
        out = fn(out, getattr(params, name), generator)
    return out.clone() if out is spec else out


def get(name: str) -> Callable:
    """The random augmentation registered under `name` (waveform or spectrogram level)."""
    if name in WAVEFORM_AUGMENTATIONS:
        return WAVEFORM_AUGMENTATIONS[name]
    if name in SPECTROGRAM_AUGMENTATIONS:
        return SPECTROGRAM_AUGMENTATIONS[name]
    raise AugmentError(
        f"unknown augmentation '{name}'; choose one of: "
        f"{', '.join([*WAVEFORM_AUGMENTATIONS, *SPECTROGRAM_AUGMENTATIONS])}"
    )


def validate(params: AugmentParams) -> AugmentParams:
    """The `augment:` section against its declared ranges (`config_schema`); errors name the key."""
    try:
        check(params, "augment")
    except ConfigError as err:
        raise AugmentError(str(err)) from None
    return params
