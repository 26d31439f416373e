"""The track table: real files of every format, broken files of every kind, real decoding."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from songspace import config, ingest, skipped
from songspace.ingest import IngestError, UNLABELLED

ROOT = Path(__file__).resolve().parents[1]
OPUS = {"format": "OGG", "subtype": "OPUS"}

# name -> (seconds, rate, channels, extra soundfile.write arguments); every format, mixed
# rates and channel counts; the suffix case varies on purpose.
GOOD = {
    "low/a.wav": (1.5, 22050, 1, {}),
    "low/b.FLAC": (1.5, 44100, 2, {}),
    "low/c.ogg": (1.5, 32000, 1, {}),
    "high/d.opus": (1.5, 48000, 2, OPUS),
    "high/e.mp3": (1.5, 44100, 1, {}),
    "high/f.wav": (1.5, 16000, 2, {}),
    "solo/g.flac": (1.2, 8000, 1, {}),
}
# name -> the reason it must be skipped with
BROKEN = {
    "low/corrupt.flac": "corrupt",
    "high/corrupt.mp3": "corrupt",
    "low/cut.wav": "truncated",
    "high/cut.mp3": "truncated",
    "high/cut.opus": "truncated",
    "low/cut.ogg": "truncated",
    "low/zero.wav": "empty",
    "high/header_only.wav": "empty",
    "low/silent.flac": "silent",
    "high/short.ogg": "too_short",
    "low/readme.mp3": "not_audio",
    "high/noise.wav": "not_audio",
    "high/a copy.wav": "duplicate",
    "loose.wav": "unlabelled",
}


def tone(seconds: float, rate: int, channels: int, freq: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.4 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    return np.stack([wave * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def write(path: Path, seconds=1.5, rate=16000, channels=1, freq=330.0, seed=0, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, rate, channels, freq, seed), rate, **kw)
    return path


def cut(src: Path, dst: Path, share: float = 0.5) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * share)])


def make_library(root: Path) -> Path:
    """GOOD files plus one of each kind of BROKEN file, and files that must be ignored."""
    for i, (name, (sec, rate, ch, kw)) in enumerate(GOOD.items()):
        write(root / name, sec, rate, ch, freq=220.0 * (1 + i / 4), seed=i, **kw)
    scratch = root.parent / f"{root.name}-scratch"
    scratch.mkdir()
    rng = np.random.default_rng(0)
    flac = (root / "low/b.FLAC").read_bytes()
    (root / "low/corrupt.flac").write_bytes(flac[:200] + rng.bytes(len(flac) - 200))
    mp3 = (root / "high/e.mp3").read_bytes()
    (root / "high/corrupt.mp3").write_bytes(mp3[:64] + rng.bytes(len(mp3) - 64))
    cut(write(scratch / "long.wav", 3.0), root / "low/cut.wav")
    cut(write(scratch / "long.mp3", 3.0, 44100), root / "high/cut.mp3")
    cut(write(scratch / "long.opus", 3.0, 48000, **OPUS), root / "high/cut.opus")
    cut(write(scratch / "long.ogg", 3.0, 44100), root / "low/cut.ogg")
    (root / "low/zero.wav").write_bytes(b"")
    sf.write(str(root / "high/header_only.wav"), np.zeros((0, 1), np.float32), 16000)
    sf.write(str(root / "low/silent.flac"), np.zeros(32000, np.float32), 16000)
    write(root / "high/short.ogg", 0.3, 16000)
    (root / "low/readme.mp3").write_text("These are not the songs you are looking for.\n" * 20)
    (root / "high/noise.wav").write_bytes(rng.bytes(4000))
    # sorts before low/a.wav, but the shorter id is the one kept
    shutil.copy(root / "low/a.wav", root / "high/a copy.wav")
    write(root / "loose.wav", 1.5)
    # ignored: not audio by suffix, hidden (macOS resource forks), hidden folders
    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff" + bytes(100))
    (root / "high/._e.mp3").write_bytes(b"\x00\x05\x16\x07" + bytes(100))
    write(root / ".trash/old.wav", 1.5)
    return root


@pytest.fixture(scope="module")
def lib_root(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("lib") / "music")


@pytest.fixture(scope="module")
def checked(lib_root):
    """find + check (in-process) + assemble on the fixture library."""
    found = ingest.find_in_folder(lib_root, "folders", keep_unlabelled=False)
    checks = ingest.check_files([c.path for c in found.candidates], 1.0, workers=1,
                                 progress=False)
    return found, checks, ingest.assemble(found, checks, "folder")


def test_every_good_file_decodes_with_its_facts(checked, lib_root):
    _, _, lib = checked
    tracks = lib.tracks.set_index("track_id")
    assert list(lib.tracks.columns) == list(ingest.TRACK_COLUMNS)
    assert sorted(tracks.index) == sorted(GOOD)
    for name, (sec, rate, ch, _) in GOOD.items():
        row = tracks.loc[name]
        assert row.path == (lib_root / name).as_posix()
        assert row.label == name.split("/")[0]
        assert row.group == name  # no groups given: each track is its own
        assert (row.sample_rate, row.channels) == (rate, ch), name
        assert abs(row.duration_s - sec) < 0.03, (name, row.duration_s)
        assert row.sha1 == hashlib.sha1((lib_root / name).read_bytes()).hexdigest()


def test_every_broken_file_is_skipped_with_its_reason(checked, lib_root):
    _, _, lib = checked
    got = {Path(p).relative_to(lib_root).as_posix(): r
           for p, r in zip(lib.skipped["path"], lib.skipped["reason"])}
    assert got == BROKEN
    assert list(lib.skipped.columns) == list(skipped.COLUMNS) and set(lib.skipped["track_id"]) == {""}
    assert set(lib.skipped["reason"]) <= set(ingest.REASONS)
    assert lib.skipped["detail"].str.len().min() > 10  # a sentence, not just a code
    detail = dict(zip(lib.skipped["path"], lib.skipped["detail"]))
    assert "looks like text" in detail[(lib_root / "low/readme.mp3").as_posix()]
    assert "data chunk declares" in detail[(lib_root / "low/cut.wav").as_posix()]
    assert "low/a.wav" in detail[(lib_root / "high/a copy.wav").as_posix()]


def test_report_counts_everything(checked):
    found, checks, lib = checked
    r = lib.report
    assert r["files_found"] == len(GOOD) + len(BROKEN)
    assert r["files_ignored"] == {"hidden": 2, "other": 1}  # ._e.mp3 + .trash; cover.jpg
    assert r["decoded"] == len(GOOD) + 1  # the duplicate decodes too
    assert r["tracks"] == len(GOOD)
    expected = pd.Series(list(BROKEN.values())).value_counts().sort_index()
    assert r["skipped"] == {k: int(v) for k, v in expected.items()}
    assert r["labels"] == {"high": 3, "low": 3, "solo": 1}
    assert r["single_track_labels"] == ["solo"]
    assert r["duplicates"] == [{"path": next(p for p in lib.skipped["path"] if "a copy" in p),
                                "same_as": "low/a.wav"}]
    assert r["total_duration_s"] == pytest.approx(sum(v[0] for v in GOOD.values()), abs=0.1)
    # aliases map both the duplicate's path and its would-be id to the kept track
    assert set(lib.aliases["track_id"]) == {"low/a.wav"}
    assert "high/a copy.wav" in set(lib.aliases["path"])
    warns, error = ingest.problems(lib)
    assert error is None and any("single track (solo)" in w for w in warns)
    text = ingest.summary(lib)
    assert "7 track(s) kept" in text and "truncated" in text and "solo" in text


def test_two_processes_give_the_same_verdicts(checked):
    found, checks, _ = checked
    paths = [c.path for c in found.candidates]
    assert ingest.check_files(paths, 1.0, workers=2, progress=False) == checks


def test_scan_in_blocks_matches_a_whole_read(lib_root):
    for name in GOOD:
        path = lib_root / name
        with path.open("rb") as f:  # a file object: high/._e.mp3 would derail a path open
            whole = sf.read(f, dtype="float32", always_2d=True)[0]
        s = ingest.scan(path, block_frames=1000)
        assert s.frames == len(whole)
        assert s.peak == pytest.approx(float(np.abs(whole).max()))


def test_scan_memory_does_not_grow_with_length(tmp_path):
    path = write(tmp_path / "long.wav", 30.0, 44100, 2)  # 30 s stereo: 10.6 MB as float32
    tracemalloc.start()
    try:
        s = ingest.scan(path, block_frames=ingest.BLOCK_FRAMES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert s.frames == 30 * 44100
    block_bytes = ingest.BLOCK_FRAMES * 2 * 4
    assert peak < 3 * block_bytes < 30 * 44100 * 2 * 4 / 5


def test_macos_sidecar_does_not_hide_the_song(tmp_path):
    """libsndfile opening a path reads "._song.mp3" as an SD2 resource fork and fails."""
    song = write(tmp_path / "song.mp3", 1.5, 44100)
    (tmp_path / "._song.mp3").write_bytes(b"\x00\x05\x16\x07" + bytes(100))  # AppleDouble
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(song))
    assert ingest.scan(song).frames == int(1.5 * 44100)


def test_not_audio_and_damage_are_told_apart(tmp_path):
    good = write(tmp_path / "x.wav", 1.5)
    (tmp_path / "page.flac").write_text("<html><body>404</body></html>")
    (tmp_path / "notes.mp3").write_text("la la la\n")
    (tmp_path / "img.ogg").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (tmp_path / "bad.wav").write_bytes(good.read_bytes()[:12] + bytes(300))
    for name, kind, words in (("page.flac", "not_audio", "HTML"),
                              ("notes.mp3", "not_audio", "text"),
                              ("img.ogg", "not_audio", "PNG"),
                              ("bad.wav", "corrupt", "cannot be opened")):
        with pytest.raises(ingest.BadAudio) as err:
            ingest.scan(tmp_path / name)
        assert err.value.kind == kind and words in str(err.value)
        assert str(tmp_path / name) in str(err.value)  # the message names the file


def test_labels_csv_gives_labels_and_groups(tmp_path):
    root = tmp_path / "music"
    for name in ("x/1.wav", "x/2.flac", "y/3.ogg", "y/4.wav", "z/5.wav"):
        write(root / name, 1.5, seed=len(name) + ord(name[-5]))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,group\n./x/1.wav,rock,album1\nx\\2.flac,rock,album1\n"
                      "y/3.ogg,jazz,\ny/4.wav,jazz,album2\nnot/there.mp3,jazz,\n")
    found = ingest.find_in_folder(root, str(labels), keep_unlabelled=False, labels_csv=labels)
    got = {c.track_id: (c.label, c.group) for c in found.candidates}
    assert got == {"x/1.wav": ("rock", "album1"), "x/2.flac": ("rock", "album1"),
                   "y/3.ogg": ("jazz", "y/3.ogg"), "y/4.wav": ("jazz", "album2")}
    reasons = {Path(p).relative_to(root).as_posix(): r for p, r, _ in found.skipped}
    assert reasons == {"z/5.wav": "unlabelled", "not/there.mp3": "missing"}
    # with annotations as ground truth, unlabelled files stay in the library
    found = ingest.find_in_folder(root, str(labels), keep_unlabelled=True, labels_csv=labels)
    assert {c.track_id: c.label for c in found.candidates}["z/5.wav"] == UNLABELLED


@pytest.mark.parametrize("text, words", [
    ("file,label\na.wav,x\n", "missing column(s) path"),
    ("path,label\na.wav,x\nb.wav,\n", "line 3: empty label"),
    ("path,label\na.wav,x\nb.wav,y\na.wav,z\n", "line 4: 'a.wav' is labelled 'z' but line 2"),
])
def test_bad_labels_csv_names_the_problem(tmp_path, text, words):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(IngestError, match="labels.csv") as err:
        ingest.read_labels_csv(path)
    assert words in str(err.value)


def test_unusable_folders_say_what_to_do(tmp_path):
    with pytest.raises(IngestError, match="does not exist: set data.audio_dir"):
        ingest.walk_audio(tmp_path / "nowhere")
    (tmp_path / "empty" / "jazz").mkdir(parents=True)
    (tmp_path / "empty" / "jazz" / "notes.txt").write_text("x")
    with pytest.raises(IngestError, match="no audio files .* one sub-folder per label"):
        ingest.find_in_folder(tmp_path / "empty", "folders", keep_unlabelled=False)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(IngestError, match="is a file"):
        ingest.walk_audio(tmp_path / "afile")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their permissions")
def test_unreadable_subfolder_is_reported(tmp_path):
    write(tmp_path / "ok" / "a.wav")
    locked = tmp_path / "locked"
    write(locked / "b.wav")
    locked.chmod(0)
    try:
        rels, bad, _ = ingest.walk_audio(tmp_path)
    finally:
        locked.chmod(0o755)
    assert rels == ["ok/a.wav"] and bad[0][1] == "unreadable"


def test_nothing_usable_is_an_error(tmp_path):
    root = tmp_path / "music"
    (root / "x").mkdir(parents=True)
    (root / "x" / "a.mp3").write_text("text")
    found = ingest.find_in_folder(root, "folders", keep_unlabelled=False)
    lib = ingest.assemble(found, ingest.check_files([str(root / "x/a.mp3")], 1.0, 1, False),
                           "folder")
    warns, error = ingest.problems(lib)
    assert lib.tracks.empty and "all 1 file(s) were skipped" in error


def test_corpus_table_keeps_its_ids(tmp_path):
    corpus = tmp_path / "corpus"
    write(corpus / "bach-1.wav", 1.5, seed=1)
    write(corpus / "reel-1.wav", 1.5, seed=2)
    pd.DataFrame({"track_id": ["bach-1", "reel-1"], "path": ["bach-1.wav", "reel-1.wav"],
                  "label": ["bach", "reel"], "source": ["s1", "s2"], "duration_s": [1.5, 1.5]},
                 ).to_csv(corpus / "tracks.csv", index=False)
    found = ingest.find_in_corpus(corpus / "tracks.csv")
    assert [(c.track_id, c.label, c.group) for c in found.candidates] == [
        ("bach-1", "bach", "bach-1"), ("reel-1", "reel", "reel-1")]
    assert all(Path(c.path).exists() for c in found.candidates)
    (corpus / "empty.csv").write_text("track_id,path,label,source,duration_s\n")
    with pytest.raises(IngestError, match="lists no tracks.*data.source 'folder'"):
        ingest.find_in_corpus(corpus / "empty.csv")


def _load_stage(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ingest_stage_writes_table_and_reports(lib_root, tmp_path, capsys):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(source="folder", audio_dir=str(lib_root))
    raw["compute"]["cache_dir"] = str(tmp_path / "cache")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("track_id,path,label,source,duration_s\n")
    out, reports = tmp_path / "library", tmp_path / "reports"
    rc = _load_stage("ingest").main(["--corpus", str(corpus), "--out", str(out), "--reports",
                                     str(reports), "--params", str(tmp_path / "params.yaml")])
    assert rc == 0
    tracks = ingest.read_tracks(out / "tracks.csv")
    assert sorted(tracks["track_id"]) == sorted(GOOD)
    left_out = skipped.read(reports / skipped.FILE_NAME)
    assert len(left_out) == len(BROKEN)
    report = json.loads((reports / "ingest.json").read_text())
    assert report["tracks"] == len(GOOD) and report["skipped"]["truncated"] == 4
    assert "7 track(s) kept" in capsys.readouterr().out
    assert config.load(tmp_path / "params.yaml").data.source == "folder"
