"""The library folder's manifest (the `scan` stage): stats only, so pipes and link loops cannot
stop it; its bytes change only when the library does; `ingest` depends on it, not the folder."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from songspace import manifest
from songspace.config import DataParams
from songspace.ingest import IngestError
from tests.conftest import write_tone

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: a blocked open() of a named pipe is interrupted by SIGALRM."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")
    before = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


def _library(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    write_tone(root / "jazz" / "a.wav", seconds=1.0)
    write_tone(root / "folk" / "b.flac", seconds=1.0, seed=1)
    return root


def _bytes(data: DataParams, out: Path) -> bytes:
    return manifest.write(manifest.build(data), out).read_bytes()


def test_manifest_changes_only_when_the_library_does(tmp_path):
    root = _library(tmp_path)
    data = DataParams(source="folder", audio_dir=str(root))
    table = manifest.build(data)
    assert table["path"].tolist() == ["folk/b.flac", "jazz/a.wav"]
    assert table["kind"].tolist() == ["audio", "audio"]
    assert table["size"].tolist() == [os.path.getsize(root / p) for p in table["path"]]
    assert table["mtime_ns"].tolist() == [os.stat(root / p).st_mtime_ns for p in table["path"]]
    out = tmp_path / "manifest.csv"
    first = _bytes(data, out)
    assert manifest.read(out).equals(table)
    (root / "jazz" / "notes.txt").write_text("not audio")
    (root / ".DS_Store").write_bytes(b"\0")
    assert _bytes(data, out) == first  # files ingest ignores do not rerun it
    write_tone(root / "jazz" / "a.wav", seconds=1.5)  # the same song, re-encoded
    changed = _bytes(data, out)
    assert changed != first
    write_tone(root / "jazz" / "c.ogg", seconds=1.0)
    assert _bytes(data, out) != changed
    corpus = DataParams(source="corpus", audio_dir=str(root))
    assert manifest.build(corpus).empty  # the corpus stage's output is hashed by DVC itself


def test_labels_csv_is_listed_and_a_missing_folder_is_a_user_error(tmp_path):
    root = _library(tmp_path)
    (root / "labels.csv").write_text("path,label\njazz/a.wav,jazz\n")
    table = manifest.build(DataParams(source="folder", audio_dir=str(root), labels="labels.csv"))
    assert dict(zip(table["kind"], table["path"]))["data.labels"] == str(root / "labels.csv")
    table = manifest.build(DataParams(source="folder", audio_dir=str(root), labels="gone.csv"))
    assert "missing" in set(table["kind"])  # ingest names the problem when it runs
    with pytest.raises(IngestError, match="does not exist: set data.audio_dir"):
        manifest.build(DataParams(source="folder", audio_dir=str(tmp_path / "nowhere")))


def test_a_pipe_a_device_link_and_a_link_loop_neither_block_nor_fail_the_scan(tmp_path):
    root = _library(tmp_path)
    os.mkfifo(root / "jazz" / "pipe.wav")                 # opening it would wait for a writer
    os.symlink(root / "jazz", root / "jazz" / "again")    # a folder link back to itself
    os.symlink("self.mp3", root / "folk" / "self.mp3")    # a file link to itself
    os.symlink("/dev/zero", root / "folk" / "zero.wav")   # endless bytes
    with deadline(20):
        table = manifest.build(DataParams(source="folder", audio_dir=str(root)))
    kinds = dict(zip(table["path"], table["kind"]))
    assert kinds["jazz/pipe.wav"] == "not_a_file" and kinds["folk/zero.wav"] == "not_a_file"
    assert kinds["folk/self.mp3"] == "unreadable"
    assert kinds[str(root / "jazz" / "again")] == "symlink_loop"
    assert kinds["jazz/a.wav"] == kinds["folk/b.flac"] == "audio"


def test_ingest_depends_on_the_manifest_not_on_the_folder():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    scan, ingest = stages["scan"], stages["ingest"]
    assert scan["always_changed"] is True
    out = scan["outs"][0]
    assert out in ingest["deps"] and "data/corpus" in ingest["deps"]
    assert all("audio_dir" not in str(d) for s in stages.values() for d in s.get("deps", []))


@pytest.mark.slow
def test_dvc_repro_ingest_with_a_pipe_and_a_link_loop_in_the_library(tmp_path):
    """The real `dvc repro ingest` in a temporary copy: it finishes, skips both, and reruns
    ingest only when the library changes."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, repo / name)
    shutil.copytree(ROOT / "stages", repo / "stages")
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    root = _library(tmp_path)
    os.mkfifo(root / "jazz" / "pipe.wav")
    os.symlink(root / "jazz", root / "jazz" / "again")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"].update(source="folder", audio_dir=str(root))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(repo / "src")}

    def dvc(*args) -> str:
        done = subprocess.run([str(venv_bin / "dvc"), *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    dvc("init", "--no-scm", "-q")
    first = dvc("repro", "ingest")
    assert "Running stage 'ingest'" in first
    skipped = (repo / "data" / "reports" / "skipped.csv").read_text()
    assert "not_a_file" in skipped and "symlink_loop" in skipped
    again = dvc("repro", "ingest")
    assert "Running stage 'scan'" in again and "Running stage 'ingest'" not in again
    write_tone(root / "folk" / "new.wav", seconds=1.2, seed=3)
    third = dvc("repro", "ingest")
    assert "Running stage 'ingest'" in third
    assert "reused 2 of 3 checks (2 by stat alone" in third  # compute.cache_dir: only the new song decoded
    assert "folk/new.wav" in (repo / "data" / "library" / "tracks.csv").read_text()
