"""Ingest edges: linked label folders are followed once, loops and special files are listed,
undecodable names are skipped with a reason; quartet CSV header detection drops no row."""
from __future__ import annotations

import os

import pytest

from songspace import groundtruth, ingest
from tests.conftest import write_tone


def test_linked_folder_loop_fifo_and_bad_name(tmp_path):
    root = tmp_path / "music"
    write_tone(root / "jazz" / "a.wav", seconds=1.5)
    write_tone(tmp_path / "elsewhere" / "b.wav", seconds=1.5, seed=1)
    os.symlink(tmp_path / "elsewhere", root / "folk")            # a label folder kept elsewhere
    os.symlink(root / "jazz", root / "jazz" / "again")           # a loop
    os.mkfifo(root / "jazz" / "pipe.wav")                        # would hang a hash
    os.rename(write_tone(root / "jazz" / "x.wav", seconds=1.5, seed=2),
              os.fsdecode(bytes(root / "jazz") + b"/caf\xe9.wav"))
    found = ingest.find_in_folder(root, "folders", keep_unlabelled=False)
    labels = {c.track_id: c.label for c in found.candidates}
    assert labels["folk/b.wav"] == "folk" and labels["jazz/a.wav"] == "jazz"
    reasons = {r for _, r, _ in found.skipped}
    assert {"symlink_loop", "bad_name"} <= reasons
    checks = ingest.check_files([c.path for c in found.candidates], 1.0, workers=1, progress=False)
    lib = ingest.assemble(found, checks, "folder")
    skipped = dict(zip(lib.skipped["reason"], lib.skipped["path"]))
    assert skipped["not_a_file"].endswith("pipe.wav")
    assert "\\xe9" in skipped["bad_name"]
    ingest.write(lib, tmp_path / "out", tmp_path / "reports")  # every path writes as UTF-8
    assert "not_a_file" in (tmp_path / "reports" / "skipped.csv").read_text()


def test_latin1_labels_csv_is_named(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes("path,label\ncaf\u00e9.wav,jazz\n".encode("latin-1"))
    with pytest.raises(ingest.IngestError, match="not UTF-8"):
        ingest.read_labels_csv(path)


def test_a_headerless_first_row_is_data_not_a_header(tmp_path):
    lookup = {"jazz/a.wav": "a", "jazz/b.wav": "b", "folk/c.wav": "c"}
    rows = [(1, ["jazz/a", "jazz/b", "folk/c", "folk/c"]), (2, ["jazz/a.wav", "jazz/b.wav", "folk/c.wav", "folk/c.wav"])]
    with pytest.raises(groundtruth.GroundTruthError, match="line 1: unknown track"):
        groundtruth.parse_quartets(rows, lookup)
    ok = groundtruth.parse_quartets([(1, ["song1", "song2", "song3", "odd"])] + rows[1:], lookup)
    assert ok.header == ["song1", "song2", "song3", "odd"] and len(ok.quartets) == 1
