"""A query file is decoded within bounds: its length comes from the header (a file claiming hours
is refused before decoding), only its segments' audio is decoded, and the segments equal the
library path's (whole-track log-mel, then segments)."""
from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from songspace import audio, features, filesegments, frontends
from songspace.cli import main
from songspace.config import FeatureParams
from tests.conftest import write_tone
from tests.test_index import build_tiny_library

P = FeatureParams(segment_seconds=1.0, segment_hop_seconds=1.0, max_segments=4, n_mels=32,
                  n_fft=512, hop_length=256)


def whole_track_segments(path: Path, fe: frontends.Frontend, params: FeatureParams) -> np.ndarray:
    """The library path for one file: the whole track's spectrogram, then its segments."""
    spec = features.track_spectrogram(path, fe, params)
    spectra = features.Spectra(np.ascontiguousarray(spec.T), pd.DataFrame(
        {"track_id": ["x"], "start": [0], "frames": [spec.shape[1]]}), fe, params)
    return spectra.segments()[0][:]


def sparse_wav(path: Path, claimed_seconds: float, rate: int = 16000) -> Path:
    """A real 16-bit WAV whose header (and size, as a sparse file) says `claimed_seconds`; only
    its first second holds a tone, the rest reads as zeros."""
    write_tone(path, seconds=1.0, rate=rate)
    data_bytes = int(claimed_seconds * rate) * 2
    with path.open("r+b") as f:
        at = f.read(256).index(b"data")
        f.seek(4)
        f.write(struct.pack("<I", at + data_bytes))  # RIFF size: the file less 8 bytes
        f.seek(at + 4)
        f.write(struct.pack("<I", data_bytes))
        f.truncate(at + 8 + data_bytes)
    return path


@pytest.mark.parametrize("frontend", ["db", "musicnn"])
@pytest.mark.parametrize("name, kw", [
    ("short.wav", dict(seconds=0.6, rate=48000)),                # one padded segment
    ("mid.ogg", dict(seconds=3.2, rate=22050)),                  # every frame in a segment
    ("long.flac", dict(seconds=9.3, rate=44100, channels=2)),    # thinned to max_segments
    ("sparse.mp3", dict(seconds=26.0, rate=32000)),              # musicnn: each segment alone
])
@pytest.mark.parametrize("block_seconds", [filesegments.QUERY_BLOCK_SECONDS, 2.1])
def test_query_segments_equal_the_library_path(tone_file, monkeypatch, frontend, name, kw, block_seconds):
    """Every way of decoding a query (segment by segment, or one pass in blocks, segments
    straddling block edges) gives the library's segments."""
    monkeypatch.setattr(filesegments, "QUERY_BLOCK_SECONDS", block_seconds)
    path = tone_file(name, freqs=(310.0, 1900.0), **kw)
    fe = features.frontend(frontend, P)
    ref = whole_track_segments(path, fe, P)
    got = filesegments.file_segments(path, fe, P, max_seconds=features.DEFAULT_MAX_QUERY_SECONDS)
    assert got.shape == ref.shape and got.dtype == np.float32
    # float rounding only: an mp3 decoded after a seek differs in the last bits, and musicnn
    # rounds its power through float16 (a flipped last bit there is ~3e-4 after its log)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-2 if name.endswith(".mp3") else 1e-3)


def test_db_floor_is_relative_to_the_loudest_bin_outside_the_segments(tmp_path):
    """A loud burst between thinned segments sets the whole track's top_db floor."""
    rate, rng = 16000, np.random.default_rng(0)
    wave = 1e-6 * rng.standard_normal(int(9.5 * rate)).astype(np.float32)
    wave[int(4.0 * rate):int(4.4 * rate)] = 0.9 * np.sin(np.arange(int(0.4 * rate)) * 0.3)
    path = tmp_path / "burst.wav"
    sf.write(str(path), wave, rate, subtype="FLOAT")
    fe = features.frontend("db", P)
    starts = features.segment_starts(int(9.5 * rate) // P.hop_length + 1, fe, P) / fe.frames_per_second
    assert not any(s <= 4.2 <= s + P.segment_seconds for s in starts)  # the burst is in no segment
    ref = whole_track_segments(path, fe, P)
    assert ref.max() < ref.min() + frontends.TOP_DB - 1  # the floor comes from outside them
    np.testing.assert_allclose(filesegments.file_segments(path, fe, P), ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("orig_rate, rate", [(44100, 16000), (22050, 16000), (16000, 16000), (8000, 22050)])
def test_a_decoded_section_is_the_slice_of_the_whole_decode(tmp_path, orig_rate, rate):
    path = write_tone(tmp_path / "x.flac", seconds=2.3, rate=orig_rate, channels=2)
    whole = audio.load(path, rate)
    assert audio.resampled_length(audio.info(path).frames, orig_rate, rate) == len(whole)
    rng = np.random.default_rng(1)
    spans = [(0, 100), (0, len(whole)), (len(whole) - 7, len(whole)), (-5, 20), (10, len(whole) + 9)]
    spans += [tuple(sorted(rng.integers(0, len(whole), 2))) for _ in range(6)]
    for start, stop in spans:
        part = audio.load_samples(path, rate, start, stop)
        np.testing.assert_allclose(part, whole[max(0, start):stop], rtol=0, atol=1e-6)


def test_a_header_claiming_hours_is_refused_before_decoding(tmp_path):
    big = sparse_wav(tmp_path / "big.wav", claimed_seconds=62_500)  # 2 GB, 17 h 21 min
    assert big.stat().st_size > 2_000_000_000
    fe = features.frontend("db", P)
    tracemalloc.start()
    began = time.perf_counter()
    try:
        with pytest.raises(audio.AudioTooLong) as err:
            filesegments.file_segments(big, fe, P, max_seconds=features.DEFAULT_MAX_QUERY_SECONDS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - began < 2.0 and peak < 5_000_000
    text = str(err.value)
    for words in (str(big), "17:21:40", "1200 s", "serve.max_query_seconds"):
        assert words in text


def test_without_a_limit_only_the_segments_are_decoded(tmp_path):
    big = sparse_wav(tmp_path / "big.wav", claimed_seconds=62_500)
    fe = features.frontend("musicnn", P)
    tracemalloc.start()
    try:
        segments = filesegments.file_segments(big, fe, P, max_seconds=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert segments.shape == (P.max_segments, fe.n_mels, fe.segment_frames)
    assert peak < 50_000_000  # the whole file would be 4 GB of float32
    assert segments[0].max() > segments[-1].max()  # the tone at the start, zeros at the end


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_library(tmp_path_factory.mktemp("query_library"))


def test_similar_and_embed_refuse_a_file_too_long_with_one_line(tiny, tmp_path, capsys):
    big = sparse_wav(tmp_path / "two hours.wav", claimed_seconds=7200)
    for argv in (["similar", big, "--index", tiny["index"], "--model", tiny["model"]],
                 ["embed", big, "--model", tiny["model"], "-o", tmp_path / "out.npy"]):
        code = main([str(a) for a in argv])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1, lines
        assert lines[0].startswith("songspace: error: ") and "two hours.wav" in lines[0]
        assert "2:00:00" in lines[0] and "1200 s" in lines[0]
    assert not (tmp_path / "out.npy").exists()
    # a library track's own file is still its own nearest track, at distance ~0
    from songspace import Library

    lib = Library.open(tiny["index"], tiny["model"])
    song = lib.index.tracks["path"].iloc[2]
    assert main(["embed", song, "--model", str(tiny["model"]), "-o", str(tmp_path / "one.npy")]) == 0
    rows, dist = lib.index.search(np.load(tmp_path / "one.npy"), 1)
    assert rows[0][0] == 2 and abs(dist[0][0]) < 1e-3
