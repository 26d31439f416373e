"""`songspace radio | path | playlists` on a small real index with tagged songs added to it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from songspace import Library
from tests.conftest import write_tone
from tests.test_cli import assert_user_error, run
from tests.test_index import build_tiny_library
from tests.test_tags import write_tagged

pytest.importorskip("mutagen")

# tagged songs added to the index: (artist, album, title, base frequency)
TAGGED = [("Zoë", "Nord", "Été", 220.0), ("Zoë", "Nord", "Hiver", 230.0), ("Zoë", "Süd", "Mai", 240.0),
          ("Bob", "Live", "One", 1760.0), ("Bob", "Live", "One (Live)", 1770.0), ("Bob", "Best", "Two", 1800.0)]


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    root = tmp_path_factory.mktemp("radio")
    tiny = build_tiny_library(root)
    songs = []
    for i, (artist, album, title, freq) in enumerate(TAGGED):
        path = root / "tagged" / artist / f"{i} {title}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_tone(path, freqs=(freq, freq * 1.5), seconds=1.5, seed=100 + i)
        write_tagged(path, {"artist": [artist], "album": [album], "title": [title]}, keep_audio=True)
        songs.append(path)
    lib = Library.open(tiny["index"], tiny["model"])
    added = lib.add(songs, label="tagged", progress=False)
    return {**tiny, "songs": songs, "ids": list(added["track_id"])}


def test_radio_json_starts_at_the_seed_and_honours_the_artist_limit(tagged, capsys):
    seed = tagged["ids"][0]
    code, out, _ = run(capsys, "radio", seed, "-n", 6, "--max-per-artist", 2, "--json",
                       "--index", tagged["index"], "--model", tagged["model"])
    assert code == 0
    songs = json.loads(out)["songs"]
    assert songs[0]["track_id"] == seed and songs[0]["name"] == "Été - Zoë" and songs[0]["similarity"] == 1.0
    assert len(songs) == 6 and len({s["track_id"] for s in songs}) == 6
    assert sum(s["artist"] == "Zoë" for s in songs) <= 2 and sum(s["artist"] == "Bob" for s in songs) <= 2
    assert all(0 <= s["similarity"] <= 1 for s in songs)


def test_a_live_copy_never_follows_its_song(tagged, capsys):
    code, out, _ = run(capsys, "radio", tagged["ids"][3], "-n", 30, "--json", "--diversity", 0,
                       "--index", tagged["index"], "--model", tagged["model"])
    names = [s["title"] for s in json.loads(out)["songs"]]
    assert code == 0 and "One" in names and "One (Live)" not in names


def test_radio_m3u8_opens_with_relative_paths_and_tags(tagged, capsys, tmp_path):
    out_file = tmp_path / "lists" / "radio.m3u8"
    code, out, _ = run(capsys, "radio", str(tagged["songs"][0]), "-n", 3, "--m3u", out_file,
                       "--index", tagged["index"], "--model", tagged["model"])
    assert code == 0 and "Radio: Été - Zoë" in out and f"wrote {out_file}" in out
    lines = out_file.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#EXTM3U" and lines[2] == "#EXTINF:2,Zoë - Été"
    for where in lines[3::2]:
        assert not Path(where).is_absolute() and (out_file.parent / where).is_file()


def test_path_and_playlists(tagged, capsys, tmp_path):
    a, b = tagged["ids"][0], tagged["ids"][5]
    code, out, _ = run(capsys, "path", a, b, "-n", 5, "--json", "--index", tagged["index"], "--model", tagged["model"])
    songs = [s["track_id"] for s in json.loads(out)["songs"]]
    assert code == 0 and songs[0] == a and songs[-1] == b and len(set(songs)) == 5
    folder = tmp_path / "lists"
    code, out, _ = run(capsys, "playlists", "-k", 2, "--m3u", folder,
                       "--index", tagged["index"], "--model", tagged["model"])
    assert code == 0 and out.count(" songs): ") == 2
    files = sorted(folder.glob("*.m3u8"))
    assert len(files) == 2 and all(f.read_text(encoding="utf-8").startswith("#EXTM3U\n#PLAYLIST:") for f in files)


def test_bad_requests_are_one_line(tagged, capsys):
    paths = ["--index", tagged["index"], "--model", tagged["model"]]
    assert_user_error(*run(capsys, "radio", "nope", *paths)[::2], "nope")
    assert_user_error(*run(capsys, "path", tagged["ids"][0], tagged["ids"][0], *paths)[::2], "same song")
    assert_user_error(*run(capsys, "playlists", "-k", 999, *paths)[::2], "k must lie between 1 and")
    with pytest.raises(SystemExit) as exit_:
        run(capsys, "radio", tagged["ids"][0], "--diversity", 2, *paths)
    assert exit_.value.code == 2 and "must lie in [0, 1]" in capsys.readouterr().err
