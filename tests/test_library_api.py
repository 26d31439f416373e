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
