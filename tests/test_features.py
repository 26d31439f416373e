import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torchaudio

from songspace import audio, features, filesegments, frontends
from songspace.config import FeatureParams

P = FeatureParams(segment_seconds=1.0, segment_hop_seconds=1.0, max_segments=8, n_mels=32,
                  n_fft=512, hop_length=256)
DB = features.frontend("db", P)


def test_logmel_shape_and_peak(tone_file):
    path = tone_file(freqs=(1000.0,), seconds=2.0)
    spec = features.track_spectrogram(path, DB, P)
    assert spec.shape == (P.n_mels, 2 * 16000 // 256 + 1) and spec.dtype == np.float32
    mel_hz = torchaudio.functional.melscale_fbanks(P.n_fft // 2 + 1, P.f_min, P.f_max, P.n_mels, P.sample_rate)
    peak_bin = int(spec.mean(axis=1).argmax())
    centre = float((mel_hz[:, peak_bin] * torch.linspace(0, P.sample_rate / 2, P.n_fft // 2 + 1)).sum()
                   / mel_hz[:, peak_bin].sum())
    assert abs(centre - 1000.0) < 150.0


def test_whole_track_equals_its_decoded_file(tone_file):
    """The stored whole-track log-mel is the front end applied to the whole decoded file."""
    path = tone_file(freqs=(300.0, 2000.0), seconds=5.0, rate=22050, channels=2)
    spec = features.track_spectrogram(path, DB, P)
    ref = frontends.logmel(audio.load(path, P.sample_rate), P).numpy()
    assert np.array_equal(spec, ref)


@pytest.mark.parametrize("seconds", [0.5, 3.0, 10.0, 60.0, 600.0])
def test_segment_count_grows_with_duration_and_covers_the_track(seconds):
    n_frames = int(seconds * DB.frames_per_second) + 1
    starts = features.segment_starts(n_frames, DB, P)
    win = DB.segment_frames
    expected = 1 if n_frames <= win else min(-(-(n_frames - win) // round(DB.frames_per_second)) + 1, P.max_segments)
    assert len(starts) == expected
    assert starts[0] == 0 and np.all(np.diff(starts) > 0)
    if n_frames > win:
        assert starts[-1] + win == n_frames  # the last segment ends at the track's end
        gaps = np.diff(np.concatenate([starts, [n_frames]]))
        if len(starts) < P.max_segments:
            assert gaps.max() <= win  # every frame lies in some segment
        else:  # capped: evenly spread over the whole track
            assert gaps[:-1].max() - gaps[:-1].min() <= 1


def test_more_segments_for_longer_tracks():
    counts = [len(features.segment_starts(int(s * DB.frames_per_second), DB, P)) for s in (2, 4, 6, 8)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_musicnn_front_end_shape(tone_file):
    path = tone_file(freqs=(440.0,), seconds=4.0, rate=44100)
    fe = features.frontend("musicnn", P)
    spec = features.track_spectrogram(path, fe, P)
    assert fe.n_mels == 96 and fe.segment_frames == 187 and spec.shape == (96, 4 * 16000 // 256 + 1)
    assert spec.min() >= 0.0  # log10(10000 x + 1) of a power spectrogram


def test_extract_library_skips_bad_files(tmp_path, tone_file):
    good = tone_file("a.wav", seconds=3.0)
    silent = tone_file("silent.wav", seconds=3.0)
    sf.write(str(silent), np.zeros(48000, np.float32), 16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF1234WAVEfmt garbage")
    tracks = pd.DataFrame({"track_id": ["a", "s", "b"], "path": [str(good), str(silent), str(broken)]})
    spectra, skipped = features.extract_library(tracks, P, workers=1, progress=False)
    assert spectra.table["track_id"].tolist() == ["a"] and spectra.array.shape == (188, P.n_mels)
    assert set(skipped["reason"]) == {"unusable"}
    reasons = dict(zip(skipped["track_id"], skipped["detail"]))
    assert set(reasons) == {"s", "b"} and "silent" in reasons["s"] and "decod" in reasons["b"]


def test_save_load_round_trip_and_windows(tmp_path, tone_file):
    tracks = pd.DataFrame({"track_id": ["x", "y"],
                           "path": [str(tone_file("x.wav", seconds=4.0)), str(tone_file("y.flac", seconds=2.5))]})
    spectra, _ = features.extract_library(tracks, P, workers=2, progress=False)
    features.save(tmp_path / "f", spectra)
    back = features.load_spectra(tmp_path / "f")
    assert np.array_equal(back.array, spectra.array) and back.table.equals(spectra.table)
    windows, index = features.load(tmp_path / "f")
    rows = features.rows_by_track(index)
    assert len(rows["x"]) > len(rows["y"]) >= 2
    assert windows.shape == (len(index), P.n_mels, DB.segment_frames)
    # a window is exactly the stored frames it starts at
    start, _ = back.span("y")
    off = int(round(index.loc[rows["y"][1], "offset_s"] * DB.frames_per_second))
    expect = np.asarray(back.array[start + off : start + off + DB.segment_frames], np.float32).T
    assert np.array_equal(windows[int(rows["y"][1])], expect)
    assert np.array_equal(windows.take(rows["y"])[:], windows[rows["y"]])


def test_random_crops_are_seeded_and_reach_the_whole_track(tmp_path, tone_file):
    tracks = pd.DataFrame({"track_id": ["x"], "path": [str(tone_file("x.wav", seconds=20.0))]})
    spectra, _ = features.extract_library(tracks, P, workers=1, progress=False)
    _, n = spectra.span("x")
    starts = []
    for i in range(200):
        crop = spectra.random_crop("x", np.random.default_rng([1, i]))
        again = spectra.random_crop("x", np.random.default_rng([1, i]))
        assert crop.shape == (P.n_mels, DB.segment_frames) and np.array_equal(crop, again)
        starts.append(int(np.random.default_rng([1, i]).integers(n - DB.segment_frames + 1)))
    assert min(starts) < 0.1 * n and max(starts) > 0.8 * (n - DB.segment_frames)


def test_file_segments_match_the_library_path(tmp_path, tone_file):
    path = tone_file("x.ogg", seconds=7.0)
    tracks = pd.DataFrame({"track_id": ["x"], "path": [str(path)]})
    spectra, _ = features.extract_library(tracks, P, workers=1, progress=False)
    lib = spectra.segments()[0][:]
    one = filesegments.file_segments(path, DB, P)
    assert one.shape == lib.shape and np.allclose(one, lib, atol=0.05)  # float16 storage


def test_missing_or_inconsistent_features_are_user_errors(tmp_path, tone_file):
    """A stage given no features, or a track table that does not fit the array, ends with one
    line naming the file (errors.run_stage), not a traceback."""
    from songspace import errors

    with pytest.raises(features.FeatureError, match="db.npy: no such feature file"):
        features.load_spectra(tmp_path / "none")
    tracks = pd.DataFrame({"track_id": ["x"], "path": [str(tone_file("x.wav", seconds=2.0))]})
    spectra, _ = features.extract_library(tracks, P, workers=1, progress=False)
    features.save(tmp_path / "f", spectra)
    np.save(tmp_path / "f" / "db.npy", np.asarray(spectra.array)[:-5])  # cut short
    with pytest.raises(features.FeatureError, match="db.csv: its tracks span 126 frames but"):
        features.load_spectra(tmp_path / "f")
    assert errors.run_stage(lambda: features.load_spectra(tmp_path / "f"), "train") == 2
