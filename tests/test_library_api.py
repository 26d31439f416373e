"""Growing the index safely: concurrent adds both land, added songs survive a rebuild, a failed
write leaves the previous index, k is capped at the library size, damaged files are named."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from songspace import Library, index
from songspace.audio import AudioError
from songspace.checkpoint import CheckpointError
from songspace.cli import main
from tests.conftest import write_tone
from tests.test_index import build_tiny_library

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_library(tmp_path_factory.mktemp("api_library"))


@pytest.fixture
def work(tiny, tmp_path):
    shutil.copytree(tiny["index"], tmp_path / "data" / "index")
    return {**tiny, "index": tmp_path / "data" / "index"}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_concurrent_adds_keep_every_track(work, tmp_path):
    songs = [write_tone(tmp_path / f"new{i}.wav", freqs=(300.0 + 40 * i,), seconds=1.5, seed=20 + i)
             for i in range(2)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([sys.executable, "-m", "songspace", "add", str(s), "--index", str(work["index"]),
                               "--model", str(work["model"])], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in songs]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    lib = Library.open(work["index"], work["model"])
    assert {"new0", "new1"} <= set(lib.index.tracks["track_id"])
    assert lib.index.n_tracks == len(work["tracks"]) + 2 == lib.index.searcher.ntotal
    listed = index.read_added(index.added_list_path(work["index"]))
    assert sorted(listed["track_id"]) == ["new0", "new1"]


def test_added_songs_survive_a_rebuild_of_the_index(work, tmp_path):
    song = write_tone(tmp_path / "extra.wav", freqs=(500.0,), seconds=1.5, seed=31)
    Library.open(work["index"], work["model"]).add([song], label="mine", progress=False)
    added = index.added_list_path(work["index"])
    root = work["root"]
    rebuilt = index.build_from_pipeline(root / "features", root / "tracks.csv", root / "groundtruth" / "splits.csv",
                                        work["model"], work["params"], eval_json=None, progress=False,
                                        added_csv=added)
    row = rebuilt.tracks[rebuilt.tracks["track_id"] == "extra"]
    assert len(row) == 1 and row["label"].iat[0] == "mine"
    assert rebuilt.meta["added_tracks"] == 1 and rebuilt.meta["added_missing"] == []
    # and the stage is told about them: dvc.yaml lists the added-songs list as an input of `index`
    assert "data/added/tracks.csv" in (ROOT / "dvc.yaml").read_text().split("index:")[-1]


def test_a_name_that_is_not_utf8_is_refused_before_anything_changes(work, tmp_path):
    before = _files(work["index"])
    bad = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.wav"))  # a Latin-1 name
    os.rename(write_tone(tmp_path / "cafe.wav", seconds=1.5), bad)
    with pytest.raises(AudioError, match="not valid UTF-8"):
        Library.open(work["index"], work["model"]).add([bad], progress=False)
    assert _files(work["index"]) == before


def test_a_failed_write_leaves_the_previous_index(work):
    before = _files(work["index"])
    built = index.SongIndex.load(work["index"])
    built.tracks["path"] = built.tracks["path"].astype(object)  # pandas' Arrow strings refuse it at once
    built.tracks.loc[0, "path"] = os.fsdecode(b"/music/caf\xe9.wav")  # cannot be written as UTF-8
    with pytest.raises(UnicodeEncodeError):
        built.save(work["index"])
    assert _files(work["index"]) == before
    assert not list(work["index"].parent.glob(".index.*-*"))  # nothing left aside


def test_k_is_capped_at_the_library_size(work):
    lib = Library.open(work["index"], work["model"])
    track = work["tracks"]["track_id"].iloc[0]
    t0 = time.perf_counter()
    found = lib.similar(track, k=10**9)
    assert time.perf_counter() - t0 < 5
    assert len(found) == lib.index.n_tracks - 1


def test_damaged_faiss_and_checkpoint_files_are_named(work, tmp_path):
    vectors = work["index"] / index.FILES["vectors"]
    vectors.write_bytes(vectors.read_bytes()[:40])
    with pytest.raises(index.IndexNotFound, match="corrupt or truncated faiss index"):
        index.SongIndex.load(work["index"])
    model = tmp_path / "best.pt"
    model.write_bytes(Path(work["model"]).read_bytes()[:1000])
    shutil.copytree(work["root"] / "index", tmp_path / "index2")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Library.open(tmp_path / "index2", model)


# ---------------------------------------------------------------- the added-songs list and the index as one


def _rebuild(work, added_csv):
    root = work["root"]
    return index.build_from_pipeline(root / "features", root / "tracks.csv", root / "groundtruth" / "splits.csv",
                                     work["model"], work["params"], eval_json=None, progress=False,
                                     added_csv=added_csv)


def test_a_song_added_from_another_folder_survives_the_index_stage(work, tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    write_tone(elsewhere / "songs" / "away.wav", freqs=(450.0,), seconds=1.5, seed=41)
    monkeypatch.chdir(elsewhere)
    assert main(["add", "songs/away.wav", "--index", str(work["index"]), "--model", str(work["model"])]) == 0
    listed = index.read_added(index.added_list_path(work["index"]))
    assert listed["path"].tolist() == [str(elsewhere / "songs" / "away.wav")]
    monkeypatch.chdir(work["root"])  # where `dvc repro` runs the stage
    rebuilt = _rebuild(work, index.added_list_path(work["index"]))
    assert rebuilt.meta["added_missing"] == [] and "away" in set(rebuilt.tracks["track_id"])
    capsys.readouterr()


def test_a_kill_before_the_list_is_written_is_completed_by_the_retry(work, tmp_path):
    song = write_tone(tmp_path / "late.wav", freqs=(520.0,), seconds=1.5, seed=42)
    added = index.added_list_path(work["index"])
    Library.open(work["index"], work["model"]).add([write_tone(tmp_path / "first.wav", seed=43)], progress=False)
    before = added.read_bytes()
    Library.open(work["index"], work["model"]).add([song], progress=False)
    # what a kill after the index's swap and before the list's rename leaves: the index has the
    # song, the list is as before, with the list's half-written replacement beside it
    added.write_bytes(before)
    (added.parent / f".{added.name}.new-99999").write_text("track_id,pa")
    for _ in range(2):  # the retry, and a retry of the retry
        report = Library.open(work["index"], work["model"]).add([song], progress=False)
        assert report["added"].tolist() == [False]
        listed = index.read_added(added)
        assert listed["track_id"].tolist() == ["first", "late"]
    assert sorted(p.name for p in added.parent.iterdir()) == ["tracks.csv"]
    assert index.SongIndex.load(work["index"]).tracks["track_id"].tolist().count("late") == 1


def test_a_kill_in_the_middle_of_the_swap_keeps_the_new_index(work, tmp_path):
    from songspace.index import folder

    song = write_tone(tmp_path / "swapped.wav", freqs=(610.0,), seconds=1.5, seed=44)
    lib = Library.open(work["index"], work["model"])
    lib.add([song], save=False, progress=False)  # in memory: what the killed add was writing
    folder.write_aside(work["index"], lib.index.write_files)
    folder.move_aside(work["index"])  # the swap's first rename, then the kill
    retry = Library.open(work["index"], work["model"])
    assert "swapped" in set(retry.index.tracks["track_id"])
    assert retry.add([song], progress=False)["added"].tolist() == [False]
    assert index.read_added(index.added_list_path(work["index"]))["track_id"].tolist() == ["swapped"]
    assert not list(work["index"].parent.glob(".index.*-*"))


def test_an_add_skips_what_another_add_put_in_meanwhile(work, tmp_path):
    songs = [write_tone(tmp_path / f"both{i}.wav", freqs=(330.0 + 70 * i,), seconds=1.5, seed=50 + i)
             for i in range(2)]
    first, second = (Library.open(work["index"], work["model"]) for _ in range(2))
    first.add(songs[:1], progress=False)
    report = second.add(songs, progress=False)  # opened before the first add landed
    assert report["added"].tolist() == [False, True] and "same bytes as track both0" in report["note"].iat[0]
    tracks = index.SongIndex.load(work["index"]).tracks["track_id"].tolist()
    assert tracks.count("both0") == 1 and tracks.count("both1") == 1
    assert index.read_added(index.added_list_path(work["index"]))["track_id"].tolist() == ["both0", "both1"]


def test_add_embeds_before_it_waits_for_the_lock(work, tmp_path, capsys):
    import threading

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEnot audio")
    lib = Library.open(work["index"], work["model"])
    ready, done = threading.Event(), threading.Event()

    def hold():
        with index.index_lock(work["index"]):
            ready.set()
            done.wait(30)
    holder = threading.Thread(target=hold)
    holder.start()
    assert ready.wait(10)
    try:
        with pytest.raises(AudioError, match="bad.wav"):  # found while embedding, with the lock still held
            lib.add([bad], progress=False)
    finally:
        done.set()
        holder.join()
    assert "waiting for the index lock" not in capsys.readouterr().err
