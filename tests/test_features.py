import numpy as np
import pandas as pd
import pytest
import torch
import torchaudio

from songspace import audio, features
from songspace.config import FeatureParams

P = FeatureParams(segment_seconds=1.0, segments_per_track=3, n_mels=32, n_fft=512, hop_length=256)


def test_logmel_shape_and_peak(tone_file):
    path = tone_file(freqs=(1000.0,), seconds=2.0)
    spec, offsets = features.track_segments(path, P)
    assert spec.shape == (3, P.n_mels, P.frames) and spec.dtype == np.float32
    assert offsets.tolist() == pytest.approx([0.0, 0.5, 1.0])
    mel_hz = torchaudio.functional.melscale_fbanks(P.n_fft // 2 + 1, P.f_min, P.f_max, P.n_mels, P.sample_rate)
    peak_bin = int(spec.mean(axis=(0, 2)).argmax())
    centre = float((mel_hz[:, peak_bin] * torch.linspace(0, P.sample_rate / 2, P.n_fft // 2 + 1)).sum()
                   / mel_hz[:, peak_bin].sum())
    assert abs(centre - 1000.0) < 150.0


def test_sections_equal_whole_file_decoding(tone_file):
    """Seeking to the sections gives the same segments as slicing the whole decoded file."""
    path = tone_file(freqs=(300.0, 2000.0), seconds=20.0, rate=22050, channels=2)
    waves, offsets = features.track_waves(path, P)  # 3 s of 20 s: read by seeking
    whole = audio.load(path, P.sample_rate)
    for w, o in zip(waves, offsets):
        start = int(round(o * P.sample_rate))
        ref = whole[start : start + P.segment_samples]
        # resampling a section differs from the whole file only near its edges
        assert np.allclose(w[200:-200], ref[200:-200], atol=2e-3)


def test_short_track_is_padded(tone_file):
    path = tone_file(seconds=0.5)
    waves, offsets = features.track_waves(path, P)
    assert waves.shape == (3, P.segment_samples) and np.all(offsets == 0)
    assert np.all(waves[:, int(0.6 * P.sample_rate):] == 0)


def test_extract_library_skips_bad_files(tmp_path, tone_file):
    good = tone_file("a.wav", seconds=3.0)
    silent = tone_file("silent.wav", seconds=3.0)
    import soundfile as sf
    sf.write(str(silent), np.zeros(48000, np.float32), 16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF1234WAVEfmt garbage")
    tracks = pd.DataFrame({"track_id": ["a", "s", "b"], "path": [str(good), str(silent), str(broken)]})
    array, index, skipped = features.extract_library(tracks, P, workers=1, progress=False)
    assert array.shape == (3, P.n_mels, P.frames)
    assert index["track_id"].tolist() == ["a"] * 3 and index["row"].tolist() == [0, 1, 2]
    reasons = dict(zip(skipped["track_id"], skipped["reason"]))
    assert set(reasons) == {"s", "b"} and "silent" in reasons["s"] and "decod" in reasons["b"]


def test_save_load_round_trip(tmp_path, tone_file):
    tracks = pd.DataFrame({"track_id": ["x", "y"], "path": [str(tone_file("x.wav")), str(tone_file("y.flac"))]})
    array, index, _ = features.extract_library(tracks, P, workers=2, progress=False)
    features.save(tmp_path / "f", "segments", array, index, P)
    back, bindex = features.load(tmp_path / "f")
    assert np.array_equal(back, array) and bindex.equals(index)
    assert {k: v.tolist() for k, v in features.rows_by_track(bindex).items()} == {"x": [0, 1, 2], "y": [3, 4, 5]}
