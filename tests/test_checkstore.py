"""Ingest pays once per song: a re-run on an unchanged library opens no file, a moved, renamed
or re-tagged song is hashed but not decoded, a changed one is checked again, and a damaged or
half-written index costs time, never a wrong table."""
from __future__ import annotations

import builtins
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from songspace import checkstore, config, filecheck, ingest
from tests.conftest import write_tone
from tests.test_audiokey import retag
from tests.test_tags import write_tagged

pytest.importorskip("mutagen")

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("library/tracks.csv", "library/aliases.csv", "reports/skipped.csv", "reports/ingest.json")


def make_songs(root: Path) -> Path:
    """Six songs of four formats with tags, a short, a silent and a corrupt file, and a copy."""
    for name, title in (("jazz/a.wav", "A"), ("jazz/b.flac", "B"), ("folk/c.ogg", "C"),
                        ("folk/d.mp3", "D"), ("folk/e.opus", "E")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_tagged(root / name, {"title": [title], "artist": ["Ann"]})
    write_tone(root / "jazz" / "f.wav", seconds=1.2, seed=5)
    write_tone(root / "folk" / "short.wav", seconds=0.5, seed=6)
    write_tone(root / "folk" / "silent.wav", seconds=1.0, noise=0.0, freqs=(0.0,))
    (root / "jazz" / "corrupt.flac").write_bytes(b"fLaC" + bytes(300))
    shutil.copy(root / "jazz" / "b.flac", root / "folk" / "b copy.flac")
    return root


FILES = 10
AUDIO = 9  # distinct audio keys: the copy shares b.flac's


def params_for(root: Path, cache: Path, **data) -> config.Params:
    return config.from_dict({"models": {"m": {"arch": "cnn", "channels": [4], "fc": [128]}}, "model": "m",
                             "data": {"source": "folder", "audio_dir": str(root),
                                      "min_seconds": 0.8, **data},
                             "compute": {"cache_dir": str(cache)}})


def run(params: config.Params, out: Path, corpus: str = "unused.csv"):
    """ingest + write; returns (the library, the bytes of every output)."""
    lib = ingest.ingest(params, corpus, workers=1, progress=False)
    ingest.write(lib, out / "library", out / "reports")
    return lib, {name: (out / name).read_bytes() for name in OUTPUTS}


def watch(monkeypatch, root: Path) -> dict[str, list[str]]:
    """From now on: the file names decoded, hashed and whose tags are read, and every audio
    file under `root` that anything opens."""
    calls: dict[str, list[str]] = {"decode": [], "hash": [], "tags": [], "open": []}

    def counted(name, fn):
        def spy(path, *args, **kwargs):
            calls[name].append(Path(path).name)
            return fn(path, *args, **kwargs)
        return spy

    monkeypatch.setattr(filecheck, "decode", counted("decode", filecheck.decode))
    monkeypatch.setattr(checkstore, "file_keys", counted("hash", checkstore.file_keys))
    monkeypatch.setattr(filecheck, "read_tags", counted("tags", filecheck.read_tags))
    real_open = builtins.open

    def opened(file, *args, **kwargs):
        name = os.fsdecode(file) if isinstance(file, (str, bytes, os.PathLike)) else ""
        if name.startswith(str(root)) and ingest.is_audio_path(name):
            calls["open"].append(Path(name).name)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", opened)
    monkeypatch.setattr(io, "open", opened)  # pathlib and soundfile open through io.open
    return calls


@pytest.fixture
def songs(tmp_path) -> tuple[Path, Path]:
    return make_songs(tmp_path / "music"), tmp_path / "cache"


def test_an_unchanged_library_is_not_opened_again(songs, tmp_path, monkeypatch):
    root, cache = songs
    params = params_for(root, cache)
    first, want = run(params, tmp_path / "one")
    assert (first.reuse.decoded, first.reuse.reused, first.reuse.hashed) == (AUDIO, 0, FILES)
    assert first.report["tracks"] == 6 and set(first.skipped["reason"]) == {
        "too_short", "silent", "corrupt", "duplicate"}
    calls = watch(monkeypatch, root)
    again, got = run(params, tmp_path / "two")
    assert calls == {"decode": [], "hash": [], "tags": [], "open": []}
    assert got == want  # every output, byte for byte
    assert again.reuse.by_stat == FILES
    assert f"reused {FILES} of {FILES} checks ({FILES} by stat alone" in ingest.summary(again)
    tracks = ingest.read_tracks(tmp_path / "two" / "library" / "tracks.csv").set_index("track_id")
    for name in tracks.index:
        assert tracks.loc[name, "sha1"] == hashlib.sha1((root / name).read_bytes()).hexdigest()
    assert list(tracks.columns).index("audio_key") == list(tracks.columns).index("sha1") + 1


def test_stat_alone_is_trusted_until_the_mtime_changes(songs, tmp_path):
    """The rule, shown by a file rewritten behind its back with its old size and mtime: it is
    not read, so its old facts stay; a new mtime has it read again."""
    root, cache = songs
    params = params_for(root, cache)
    _, want = run(params, tmp_path / "one")
    song = root / "jazz" / "b.flac"
    st = song.stat()
    song.write_bytes(bytes(st.st_size))
    os.utime(song, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run(params, tmp_path / "two")[1] == want
    os.utime(song)
    lib, _ = run(params, tmp_path / "three")
    assert lib.skipped.set_index("path").loc[song.as_posix(), "reason"] == "not_audio"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_files_are_not_missed_when_unchanged(songs, tmp_path):
    root, cache = songs
    params = params_for(root, cache)
    _, want = run(params, tmp_path / "one")
    files = [p for p in root.rglob("*") if p.is_file()]
    for p in files:
        p.chmod(0)
    try:
        assert run(params, tmp_path / "two")[1] == want
    finally:
        for p in files:
            p.chmod(0o644)


def test_moved_renamed_and_retagged_songs_are_hashed_not_decoded(songs, tmp_path, monkeypatch):
    root, cache = songs
    params = params_for(root, cache)
    first, _ = run(params, tmp_path / "one")
    before = first.tracks.set_index("track_id")
    os.rename(root / "jazz" / "a.wav", root / "folk" / "a moved.wav")  # another label
    os.rename(root / "folk" / "d.mp3", root / "folk" / "d renamed.mp3")
    retag(root / "folk" / "c.ogg", {"title": ["A new title"], "album": ["Nord"]})
    calls = watch(monkeypatch, root)
    lib, _ = run(params, tmp_path / "two")
    moved = ["a moved.wav", "c.ogg", "d renamed.mp3"]
    assert calls["decode"] == [] and sorted(calls["hash"]) == moved == sorted(calls["tags"])
    assert lib.reuse.by_key == 3 and lib.reuse.by_stat == FILES - 3
    tracks = lib.tracks.set_index("track_id")
    assert "jazz/a.wav" not in tracks.index and tracks.loc["folk/a moved.wav", "label"] == "folk"
    assert tracks.loc["folk/a moved.wav", "audio_key"] == before.loc["jazz/a.wav", "audio_key"]
    assert tracks.loc["folk/d renamed.mp3", "title"] == "D"
    c = tracks.loc["folk/c.ogg"]
    assert (c.title, c.album, c.audio_key) == ("A new title", "Nord", before.loc["folk/c.ogg", "audio_key"])
    assert c.sha1 == hashlib.sha1((root / "folk" / "c.ogg").read_bytes()).hexdigest() != before.loc["folk/c.ogg", "sha1"]


def test_a_changed_song_is_checked_again(songs, tmp_path, monkeypatch):
    root, cache = songs
    params = params_for(root, cache)
    run(params, tmp_path / "one")
    write_tone(root / "folk" / "c.ogg", seconds=2.0, seed=9)
    calls = watch(monkeypatch, root)
    lib, _ = run(params, tmp_path / "two")
    assert calls["decode"] == calls["hash"] == ["c.ogg"]
    assert lib.tracks.set_index("track_id").loc["folk/c.ogg", "duration_s"] == pytest.approx(2.0, abs=0.01)
    assert lib.reuse.decoded == 1 and f"reused {FILES - 1} of {FILES} checks" in ingest.summary(lib)


def test_a_new_min_seconds_decodes_nothing(songs, tmp_path, monkeypatch):
    root, cache = songs
    run(params_for(root, cache), tmp_path / "one")
    calls = watch(monkeypatch, root)
    lib, _ = run(params_for(root, cache, min_seconds=0.3), tmp_path / "two")
    assert calls["decode"] == calls["hash"] == [] and calls["tags"] == ["short.wav"]
    assert "folk/short.wav" in set(lib.tracks["track_id"])
    run(params_for(root, cache, min_seconds=0.3), tmp_path / "three")
    assert calls["tags"] == ["short.wav"]  # kept with the file's stat entry


def test_reused_checks_are_the_checks(tmp_path):
    """Every kind of broken file of the ingest tests: the same verdicts fresh, on a first run
    (two processes) and on a run that reuses them all."""
    from tests.test_ingest import make_library

    root = make_library(tmp_path / "lib" / "music")
    paths = [c.path for c in ingest.find_in_folder(root, "folders", keep_unlabelled=False).candidates]
    fresh = filecheck.check_files(paths, 1.0, workers=1, progress=False)
    first, r1 = checkstore.check_all(paths, 1.0, tmp_path / "cache", workers=2, progress=False)
    again, r2 = checkstore.check_all(paths, 1.0, tmp_path / "cache", workers=1, progress=False)
    assert first == fresh and again == fresh
    assert r1.reused == 0 and r2.by_stat == r2.files == len(paths) and r2.decoded == r2.hashed == 0


@pytest.mark.parametrize("damage", ["garbage", "half"])
def test_a_damaged_index_is_set_aside(songs, tmp_path, damage):
    root, cache = songs
    params = params_for(root, cache)
    _, want = run(params, tmp_path / "one")
    db = cache / checkstore.DB_NAME
    data = db.read_bytes()
    db.write_bytes(b"not a database " * 200 if damage == "garbage" else data[: len(data) // 2])
    lib, got = run(params, tmp_path / "two")
    assert got == want
    if damage == "garbage":
        assert (cache / f"{checkstore.DB_NAME}.damaged").exists()
        assert any("set aside" in n for n in lib.reuse.notes) and "note:" in ingest.summary(lib)
    lib, got = run(params, tmp_path / "three")
    assert got == want and lib.reuse.notes == []


def test_a_killed_run_keeps_what_it_committed(tmp_path):
    """A process killed (SIGKILL) inside a transaction that had reached the disk: the next one
    rolls it back and finds what was committed before."""
    cache = tmp_path / "cache"
    code = f"""
import os, signal
from songspace import checkstore
ix = checkstore.Index.open({str(cache)!r})
ix.put_file(b"/music/kept.wav", 10, 20, "s" * 40, "k" * 40)
ix.commit()
ix.db.execute("PRAGMA cache_size = 5")
for i in range(3000):
    ix.put_file(b"/music/lost-%d.wav" % i, 10, 20, "s" * 40, "k" * 40)
assert os.path.exists({str(cache / checkstore.DB_NAME) + "-journal"!r})
os.kill(os.getpid(), signal.SIGKILL)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    ix = checkstore.Index.open(cache)
    try:
        assert ix.notes == []
        assert ix.file(b"/music/kept.wav", 10, 20) == checkstore.Known("s" * 40, "k" * 40, None)
        assert ix.file(b"/music/lost-7.wav", 10, 20) is None
        assert ix.file(b"/music/kept.wav", 10, 21) is None  # another mtime: not known
    finally:
        ix.close()


def test_an_interrupted_ingest_resumes_its_checks(songs, tmp_path, monkeypatch):
    root, cache = songs
    params = params_for(root, cache)
    real = filecheck.decode
    done = []

    def decode_then_stop(path, *args, **kwargs):
        if len(done) == 3:
            raise KeyboardInterrupt
        done.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(filecheck, "decode", decode_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(params, tmp_path / "one")
    monkeypatch.setattr(filecheck, "decode", real)
    calls = watch(monkeypatch, root)
    lib, _ = run(params, tmp_path / "two")
    assert len(calls["decode"]) == AUDIO - 3 and calls["hash"] == []
    assert lib.report["tracks"] == 6


def test_the_corpus_goes_through_the_same_path(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    for i, label in enumerate(("bach", "reel")):
        write_tone(corpus / f"{label}-1.wav", seconds=1.5, seed=i)
    pd.DataFrame({"track_id": ["bach-1", "reel-1"], "path": ["bach-1.wav", "reel-1.wav"],
                  "label": ["bach", "reel"], "source": ["s1", "s2"], "duration_s": [1.5, 1.5]},
                 ).to_csv(corpus / "tracks.csv", index=False)
    params = params_for(tmp_path, tmp_path / "cache", source="corpus")
    _, want = run(params, tmp_path / "one", str(corpus / "tracks.csv"))
    calls = watch(monkeypatch, corpus)
    lib, got = run(params, tmp_path / "two", str(corpus / "tracks.csv"))
    assert got == want and calls["open"] == [] and lib.reuse.by_stat == 2


def test_an_older_track_table_reads_with_its_sha1_as_audio_key(tmp_path):
    path = tmp_path / "tracks.csv"
    path.write_text("track_id,path,label,group,duration_s,sample_rate,channels,sha1\n"
                    "a,a.wav,x,a,1.5,16000,1,0123abc\n")
    table = ingest.read_tracks(path)
    assert table.loc[0, "audio_key"] == "0123abc"
    assert list(table.columns)[:9] == list(ingest.TRACK_COLUMNS)[:9]


def test_without_a_usable_cache_folder_every_file_is_checked(songs, tmp_path):
    root, _ = songs
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    lib, _ = run(params_for(root, blocked / "cache"), tmp_path / "one")
    assert lib.report["tracks"] == 6 and lib.reuse.decoded == AUDIO
    assert "cannot be used" in lib.reuse.notes[0]
