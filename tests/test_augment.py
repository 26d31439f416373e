"""Augmentations: shapes, strength, seeding, and what each one does to real signals."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from songspace import augment as A
from songspace import plots, specaugment
from songspace.config import AugmentParams, FeatureParams

RATE = 16000


def tone(freq_hz: float, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def peak_hz(wave: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spectrum) * rate / wave.size)


def band_energy(wave: np.ndarray, lo_hz: float, hi_hz: float, rate: int = RATE) -> float:
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1 / rate)
    return float(power[(freqs >= lo_hz) & (freqs < hi_hz)].sum())


@pytest.fixture
def music() -> np.ndarray:
    """Two seconds of a harmonic chord with a little noise, as a stand-in for a rendered clip."""
    rng = np.random.default_rng(0)
    t = np.arange(2 * RATE) / RATE
    wave = sum(np.sin(2 * np.pi * f * k * t) / k for f in (220, 277, 330) for k in (1, 2, 3, 4))
    wave = 0.1 * wave + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


@pytest.fixture
def spec() -> torch.Tensor:
    """A log-mel-like batch (4, 1, 64, 94) in dB with per-item offsets."""
    g = torch.Generator().manual_seed(0)
    return -40 + 10 * torch.randn(4, 1, 64, 94, generator=g) + torch.arange(4.0)[:, None, None, None]


# every augmentation on (params.yaml ships the spectrogram ones off)
ON = {"noise": {"p": 1.0, "strength": 0.5}, "random_mask": {"p": 0.2}, "time_mask": {"p": 0.5},
      "freq_mask": {"p": 0.5}}


def params(**changes) -> AugmentParams:
    """AugmentParams with every augmentation on and sub-sections replaced, e.g. params(noise={"p": 0})."""
    base = AugmentParams()
    changes = {**ON, **changes}
    return dataclasses.replace(
        base, **{k: dataclasses.replace(getattr(base, k), **v) for k, v in changes.items()}
    )


OFF = {
    "pitch_shift": {"p": 0.0}, "time_stretch": {"p": 0.0}, "resample": {"p": 0.0},
    "noise": {"p": 0.0}, "random_mask": {"p": 0.0}, "time_mask": {"p": 0.0},
    "freq_mask": {"p": 0.0},
}


# --- registries -----------------------------------------------------------------------------


def test_registries_and_get():
    assert list(A.WAVEFORM_AUGMENTATIONS) == ["pitch_shift", "time_stretch", "resample"]
    assert list(A.SPECTROGRAM_AUGMENTATIONS) == ["noise", "random_mask", "time_mask", "freq_mask"]
    assert A.get("noise") is A.SPECTROGRAM_AUGMENTATIONS["noise"]
    assert A.get("resample") is A.WAVEFORM_AUGMENTATIONS["resample"]
    with pytest.raises(ValueError, match="unknown augmentation 'reverb'.*pitch_shift.*freq_mask"):
        A.get("reverb")


def test_every_registry_entry_matches_a_params_section():
    names = {f.name for f in dataclasses.fields(AugmentParams)} - {"views", "segments", "view_p"}
    assert names == set(A.WAVEFORM_AUGMENTATIONS) | set(A.SPECTROGRAM_AUGMENTATIONS)


@pytest.mark.parametrize(
    "section, change, key",
    [
        ("noise", {"p": 1.5}, "augment.noise.p"),
        ("noise", {"strength": -1.0}, "augment.noise.strength"),
        ("time_stretch", {"max_change": 1.0}, "augment.time_stretch.max_change"),
        ("resample", {"min_rate": 0}, "augment.resample.min_rate"),
        ("time_mask", {"count": -1}, "augment.time_mask.count"),
    ],
)
def test_bad_settings_name_the_key(section, change, key):
    with pytest.raises(A.AugmentError, match=key.replace(".", r"\.")):
        A.validate(params(**{section: change}))


def test_min_rate_above_signal_rate_is_a_clear_error(music):
    bad = params(resample={"p": 1.0, "min_rate": RATE})
    with pytest.raises(A.AugmentError, match="min_rate .*16000 Hz"):
        A.augment_waveform(music, RATE, bad, np.random.default_rng(0))


def test_waveform_input_must_be_mono():
    with pytest.raises(A.AugmentError, match=r"mono.*\(2, 100\)"):
        A.pitch_shift(np.zeros((2, 100), np.float32), RATE, 1.0)


# --- waveform cores -------------------------------------------------------------------------


@pytest.mark.parametrize("semitones, expected_hz", [(12, 880.0), (-12, 220.0)])
def test_pitch_shift_octave_moves_the_peak_an_octave(semitones, expected_hz):
    shifted = A.pitch_shift(tone(440.0), RATE, semitones)
    assert shifted.shape == (RATE,) and shifted.dtype == np.float32
    assert abs(peak_hz(shifted) - expected_hz) <= 2.0  # bins are 1 Hz wide


def test_pitch_shift_moves_the_peak_in_proportion_to_semitones():
    x = tone(440.0)
    for semitones in (-2.5, -0.5, 1.0, 3.0, 7.0):
        assert abs(peak_hz(A.pitch_shift(x, RATE, semitones)) - 440.0 * 2 ** (semitones / 12)) <= 2.0
    # the waveform change grows with the shift
    changes = [np.abs(A.pitch_shift(x, RATE, s) - x).mean() for s in (0.0, 0.25, 2.0)]
    assert changes[0] == 0.0 and changes[0] < changes[1] < changes[2]


def test_pitch_fraction_is_within_half_a_cent():
    for semitones in np.linspace(-12, 12, 97):
        frac = A._pitch_fraction(float(semitones))
        assert abs(1200 * np.log2(float(frac)) - 100 * semitones) <= A.PITCH_TOLERANCE_CENTS
        assert frac.denominator <= 1024


def test_pitch_shift_keeps_length_and_level(music):
    shifted = A.pitch_shift(music, RATE, 2.0)
    assert shifted.shape == music.shape and shifted.dtype == np.float32
    rms = lambda w: np.sqrt(np.mean(w**2))  # noqa: E731
    assert 0.7 < rms(shifted) / rms(music) < 1.3


@pytest.mark.parametrize("factor, length", [(2.0, RATE // 2), (0.5, 2 * RATE), (1.25, 12800)])
def test_time_stretch_scales_length_and_keeps_pitch(factor, length):
    stretched = A.time_stretch(tone(440.0), factor, RATE)
    assert stretched.shape == (length,) and stretched.dtype == np.float32
    assert abs(peak_hz(stretched) - 440.0) <= 2.0 * RATE / length


def test_time_stretch_by_one_is_the_identity(music):
    out = A.time_stretch(music, 1.0, RATE)
    assert np.array_equal(out, music) and out is not music


def test_time_stretch_handles_a_clip_shorter_than_the_window():
    out = A.time_stretch(tone(440.0, seconds=0.01), 2.0, RATE)
    assert out.shape == (80,)


def test_resample_band_limits_and_keeps_the_band_below():
    white = np.random.default_rng(1).standard_normal(RATE).astype(np.float32)
    out = A.resample_band_limit(white, RATE, 6000)
    assert out.shape == white.shape and out.dtype == np.float32
    above = band_energy(out, 3000, 8000) / band_energy(white, 3000, 8000)
    below = band_energy(out, 0, 2550) / band_energy(white, 0, 2550)  # 0.85 x the cut-off
    assert 10 * np.log10(above) < -40  # dB
    assert abs(10 * np.log10(below)) < 0.5


def test_resample_band_limit_removes_more_as_the_rate_drops():
    white = np.random.default_rng(2).standard_normal(RATE).astype(np.float32)
    kept = [band_energy(A.resample_band_limit(white, RATE, r), 0, 8000) for r in (16000, 12000, 6000)]
    assert kept[0] > kept[1] > kept[2]
    assert np.array_equal(A.resample_band_limit(white, RATE, RATE), white)


# --- waveform random wrappers ---------------------------------------------------------------


def test_augment_waveform_is_seeded(music):
    on = params(pitch_shift={"p": 1.0}, time_stretch={"p": 1.0}, resample={"p": 1.0})
    a = A.augment_waveform(music, RATE, on, np.random.default_rng(7))
    b = A.augment_waveform(music, RATE, on, np.random.default_rng(7))
    c = A.augment_waveform(music, RATE, on, np.random.default_rng(8))
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert a.shape != c.shape or not np.allclose(a, c)


def test_augment_waveform_with_every_p_zero_is_the_identity(music):
    copy = music.copy()
    out = A.augment_waveform(music, RATE, params(**OFF), np.random.default_rng(0))
    assert np.array_equal(out, music) and np.array_equal(music, copy)


def test_wrappers_draw_within_their_ranges():
    x = tone(440.0)
    ps = params(pitch_shift={"p": 1.0, "max_semitones": 2.0}).pitch_shift
    ts = params(time_stretch={"p": 1.0, "max_change": 0.2}).time_stretch
    peaks, lengths = [], []
    for seed in range(6):
        peaks.append(peak_hz(A.get("pitch_shift")(x, RATE, ps, np.random.default_rng(seed))))
        lengths.append(A.get("time_stretch")(x, RATE, ts, np.random.default_rng(seed)).size)
    assert all(440 * 2 ** (-2 / 12) - 2 <= p <= 440 * 2 ** (2 / 12) + 2 for p in peaks)
    assert len(set(peaks)) > 1
    assert all(RATE / 1.2 - 1 <= n <= RATE / 0.8 + 1 for n in lengths) and len(set(lengths)) > 1


def test_wrapper_strength_zero_is_the_identity(music):
    rng = np.random.default_rng(0)
    still = params(pitch_shift={"p": 1.0, "max_semitones": 0.0},
                   time_stretch={"p": 1.0, "max_change": 0.0}, resample={"p": 0.0})
    assert np.array_equal(A.augment_waveform(music, RATE, still, rng), music)


def test_random_resample_removes_energy_above_the_drawn_rate():
    white = np.random.default_rng(3).standard_normal(RATE).astype(np.float32)
    rs = params(resample={"p": 1.0, "min_rate": 6000}).resample
    for seed in range(4):
        out = A.get("resample")(white, RATE, rs, np.random.default_rng(seed))
        assert out.shape == white.shape
        assert band_energy(out, 7950, 8001) < 1e-3 * band_energy(white, 7950, 8001)
        assert abs(10 * np.log10(band_energy(out, 0, 2800) / band_energy(white, 0, 2800))) < 0.5


# --- spectrogram level ----------------------------------------------------------------------


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(64, 94), (4, 64, 94), (4, 1, 64, 94)])
@pytest.mark.parametrize("name", list(A.SPECTROGRAM_AUGMENTATIONS))
def test_spectrogram_augmentations_keep_shape_dtype_and_input(shape, name):
    x = torch.randn(shape, generator=gen(1)).double()
    before = x.clone()
    strong = params(**{n: {"p": 1.0} for n in A.SPECTROGRAM_AUGMENTATIONS})
    out = A.get(name)(x, getattr(strong, name), gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before) and not torch.equal(out, x)


def test_band_mask_matches_a_loop():
    g = gen(3)
    starts = torch.randint(0, 90, (5, 3), generator=g)
    widths = torch.randint(0, 10, (5, 3), generator=g)
    expected = torch.zeros(5, 94, dtype=torch.bool)
    for i in range(5):
        for j in range(3):
            for t in range(starts[i, j], min(94, starts[i, j] + widths[i, j])):
                expected[i, t] = True
    assert torch.equal(specaugment._band_mask(starts, widths, 94), expected)


def test_noise_scales_with_each_items_own_std(spec):
    for strength in (0.0, 0.25, 0.5, 1.0):
        out = A.noise(spec, strength, gen())
        for i in range(spec.shape[0]):  # per item, against its own std
            expected = strength * spec[i].std(unbiased=False)
            assert abs((out[i] - spec[i]).std() - expected) <= 0.03 * expected
        if strength == 0:
            assert torch.equal(out, spec)
    changes = [(A.noise(spec, s, gen()) - spec).abs().mean() for s in (0.25, 0.5, 1.0)]
    assert changes[0] < changes[1] < changes[2]
    assert torch.isclose(changes[2] / changes[0], torch.tensor(4.0), rtol=1e-4)


def test_noise_probability_picks_items(spec):
    out = A.noise(spec, 0.5, gen(), p=0.0)
    assert torch.equal(out, spec)
    many = spec[:1].expand(200, 1, 64, 94)
    noised = (A.noise(many, 0.5, gen(), p=0.3) != many).flatten(1).any(1).float().mean()
    assert 0.2 < noised < 0.4


def test_random_mask_sets_a_share_p_of_bins_to_the_items_minimum(spec):
    for p in (0.0, 0.2, 0.5):
        out = A.random_mask(spec, p, gen())
        for i in range(spec.shape[0]):
            changed = out[i] != spec[i]
            assert abs(changed.float().mean() - p) < 0.02
            assert torch.all(out[i][changed] == spec[i].min())
    assert torch.equal(A.random_mask(spec, 0.0, gen()), spec)


@pytest.mark.parametrize("axis, fn", [(-1, A.time_mask), (-2, A.freq_mask)])
def test_specaugment_masks_whole_bands_with_the_mean(spec, axis, fn):
    out = fn(spec, 10, 2, gen())
    for i in range(spec.shape[0]):
        x, y = spec[i, 0], out[i, 0]
        lines = (y != x).any(dim=0 if axis == -1 else 1)  # masked frames / bins
        assert 1 <= lines.sum() <= 20
        band = y[:, lines] if axis == -1 else y[lines, :]
        assert torch.all(band == x.mean())
    assert torch.equal(fn(spec, 0, 2, gen()), spec)
    assert torch.equal(fn(spec, 10, 0, gen()), spec)
    assert torch.equal(fn(spec, 10, 2, gen(), p=0.0), spec)


@pytest.mark.parametrize("fn", [A.time_mask, A.freq_mask])
def test_specaugment_masks_grow_with_max_width(spec, fn):
    many = spec[:1].expand(300, 1, 64, 94)
    share = [(fn(many, w, 2, gen()) != many).float().mean() for w in (2, 6, 12)]
    assert share[0] < share[1] < share[2]


def test_augment_spectrogram_is_seeded_and_independent_per_item(spec):
    p = params()
    a = A.augment_spectrogram(spec, p, gen(5))
    b = A.augment_spectrogram(spec, p, gen(5))
    c = A.augment_spectrogram(spec, p, gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    same = spec[:1].expand(4, 1, 64, 94)
    out = A.augment_spectrogram(same, p, gen(5))
    assert not torch.equal(out[0], out[1])


def test_augment_spectrogram_never_modifies_its_input(spec):
    before = spec.clone()
    out = A.augment_spectrogram(spec, params(**OFF), gen())
    assert torch.equal(out, spec) and out.data_ptr() != spec.data_ptr()
    A.augment_spectrogram(spec, params(), gen())
    assert torch.equal(spec, before)


def test_augment_spectrogram_change_grows_with_noise_strength(spec):
    only_noise = {**OFF, "noise": {"p": 1.0}}
    changes = [
        (A.augment_spectrogram(spec, params(**{**only_noise, "noise": {"p": 1.0, "strength": s}}),
                               gen()) - spec).abs().mean()
        for s in (0.0, 0.5, 1.0)
    ]
    assert changes[0] == 0 and changes[0] < changes[1] < changes[2]


def test_augment_spectrogram_keeps_half_precision(spec):
    out = A.augment_spectrogram(spec.half(), params(), gen())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_spectrogram_must_be_floating():
    with pytest.raises(A.AugmentError, match="floating"):
        A.augment_spectrogram(torch.zeros(64, 94, dtype=torch.long), params(), gen())


# --- plot -----------------------------------------------------------------------------------


def test_plot_augmentations_writes_a_png(music, tmp_path):
    out = plots.plot_augmentations(music, RATE, FeatureParams(), params(), tmp_path / "aug.png", seed=0)
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figure_keeps_the_stamp_it_was_drawn_with(music, tmp_path):
    from songspace import views

    stamped = plots.plot_augmentations(music, RATE, FeatureParams(), params(), tmp_path / "a.png", seed=0,
                                       stamp="0123abc")
    plain = plots.plot_augmentations(music, RATE, FeatureParams(), params(), tmp_path / "b.png", seed=0)
    (tmp_path / "c.png").write_text("not a picture")
    assert views.drawn_stamp(stamped) == "0123abc"
    assert views.drawn_stamp(plain) is None
    assert views.drawn_stamp(tmp_path / "c.png") is None and views.drawn_stamp(tmp_path / "none.png") is None


def test_the_figure_shows_the_same_clip_when_songs_are_added_or_renamed():
    import pandas as pd

    from songspace import views

    train = pd.DataFrame({"track_id": ["b/x", "a/y", "c/z"], "path": ["x.ogg", "y.ogg", "z.ogg"],
                          "audio_key": ["7f", "3c", "a0"]})
    assert views.plot_clip(train)["track_id"] == "a/y"
    grown = pd.concat([train, pd.DataFrame({"track_id": ["0/new"], "path": ["n.ogg"], "audio_key": ["9e"]})],
                      ignore_index=True)
    renamed = train.assign(track_id=["b/x", "moved/y", "c/z"])
    assert views.plot_clip(grown)["track_id"] == "a/y"
    assert views.plot_clip(renamed)["audio_key"] == "3c"


def test_the_figure_stamp_follows_what_it_is_drawn_from():
    import pandas as pd

    from songspace import views

    clip = pd.Series({"track_id": "a/y", "path": "y.ogg", "audio_key": "3c"})
    stamp = views.plot_stamp(clip, FeatureParams(), params(), 0)
    assert stamp == views.plot_stamp(clip.copy(), FeatureParams(), params(), 0)
    assert stamp == views.plot_stamp(clip.replace("a/y", "moved/y"), FeatureParams(), params(), 0)
    others = [views.plot_stamp(clip.replace("3c", "3d"), FeatureParams(), params(), 0),
              views.plot_stamp(clip, FeatureParams(), params(), 1),
              views.plot_stamp(clip, dataclasses.replace(FeatureParams(), n_mels=48), params(), 0),
              views.plot_stamp(clip, FeatureParams(), params(time_stretch={"max_change": 0.3}), 0)]
    assert len({stamp, *others}) == 5
