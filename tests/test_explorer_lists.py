"""The explorer's radio, path and playlist routes over real HTTP, on the folder library of
tests/test_explorer.py with tagged songs added to a copy of its index (awkward ids both ways:
paths through folders with `#`, `?`, `%` and non-ASCII names, and tag names with accents)."""
from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("mutagen")

from songspace import Library, playlists  # noqa: E402
from songspace.explorer import data  # noqa: E402
from tests.conftest import write_tone  # noqa: E402
from tests.test_cli_playlists import TAGGED  # noqa: E402
from tests.test_explorer import fetch, q, running, shared_run  # noqa: E402
from tests.test_tags import write_tagged  # noqa: E402

_TAGGED_RUNS: dict = {}


def tagged_run(tmp_path_factory) -> dict:
    """`shared_run`'s library with TAGGED songs added to a copy of its index (once per session).

    The songs lie in `<basetemp>/explorer-lists/Zoë & Co/50% #1/` as `<i> <title> #<i> ?.wav`;
    the library folder is the test session's base folder, which holds both sets of files.
    """
    base = tmp_path_factory.getbasetemp()
    if base not in _TAGGED_RUNS:
        run = shared_run(tmp_path_factory)
        root = base / "explorer-lists"
        shutil.copytree(run["index"], root / "index")
        songs = []
        for i, (artist, album, title, freq) in enumerate(TAGGED):
            path = root / f"{artist} & Co" / "50% #1" / f"{i} {title} #{i} ?.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_tone(path, freqs=(freq, freq * 1.5), seconds=1.5, seed=100 + i)
            write_tagged(path, {"artist": [artist], "album": [album], "title": [title]}, keep_audio=True)
            songs.append(path)
        added = Library.open(root / "index", run["model"]).add(songs, label="tagged", progress=False)
        _TAGGED_RUNS[base] = {**run, "index": root / "index", "library": base, "songs": songs,
                              "ids": list(added["track_id"])}
    return _TAGGED_RUNS[base]


def open_tagged(run: dict) -> data.Explorer:
    return data.Explorer.open(run["index"], run["model"], run["library"], run["eval"], run["live"], cache_dir=None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tagged_run(tmp_path_factory)


@pytest.fixture(scope="module")
def served(run):
    explorer = open_tagged(run)
    with running(explorer) as base:
        yield base, explorer


def get(url: str) -> tuple[int, dict]:
    status, _, body = fetch(url)
    return status, json.loads(body)


def test_tracks_and_neighbours_are_named_by_title_and_artist_where_tagged(served, run):
    base, _ = served
    status, body = get(base + "/api/tracks")
    names = {t["id"]: t["name"] for t in body["tracks"]}
    assert status == 200 and names[run["ids"][0]] == "Été - Zoë" and names[run["ids"][3]] == "One - Bob"
    untagged = run["tracks"]["track_id"].iloc[0]
    assert names[untagged] == run["tracks"]["path"].iloc[0].rsplit("/", 1)[1]  # the file name
    status, body = get(f"{base}/api/neighbours?id={q(run['ids'][1])}&k=17")  # every other track
    assert status == 200 and all(n["name"] == names[n["track_id"]] for n in body["neighbours"])
    assert {"Été - Zoë", "Two - Bob", names[untagged]} <= {n["name"] for n in body["neighbours"]}


def test_radio_honours_n_and_the_artist_limit_as_the_python_api(served, run):
    base, _ = served
    seed = run["ids"][0]
    status, body = get(f"{base}/api/radio?seed={q(seed)}&n=6&max_per_artist=2")
    songs = body["songs"]
    assert status == 200 and body["seed"] == seed and len(songs) == 6
    assert songs[0]["track_id"] == seed and songs[0]["name"] == "Été - Zoë"
    assert len({s["track_id"] for s in songs}) == 6 and all(0 <= s["similarity"] <= 1 for s in songs)
    assert max(Counter(s["artist"] for s in songs if s["artist"]).values()) <= 2
    lib = Library.open(run["index"], run["model"])
    assert songs == playlists.entries_json(lib.radio(seed, 6, max_per_artist=2))
    status, body = get(f"{base}/api/radio?seed={q(seed)}&n=30&no_same_album=1&diversity=0")
    albums = [s["album"] for s in body["songs"] if s["album"]]
    assert status == 200 and len(albums) == len(set(albums)) == 4  # Nord, Süd, Live, Best


def test_path_starts_and_ends_right_without_repeats(served, run):
    base, _ = served
    start = next(t for t in run["tracks"]["track_id"] if "#" in t and "?" in t and "%" in t)
    end = run["ids"][5]
    status, body = get(f"{base}/api/path?from={q(start)}&to={q(end)}&n=5")
    ids = [s["track_id"] for s in body["songs"]]
    assert status == 200 and (body["from"], body["to"]) == (start, end)
    assert ids[0] == start and ids[-1] == end and len(ids) == len(set(ids)) == 5


def test_playlists_are_k_lists_of_the_librarys_songs(served, run):
    base, _ = served
    status, body = get(f"{base}/api/playlists?k=3")
    lists = body["playlists"]
    assert status == 200 and body["k"] == 3 and len(lists) == 3
    ids = [s["track_id"] for p in lists for s in p["songs"]]
    assert all(p["name"] and p["songs"] for p in lists) and len(ids) == len(set(ids))
    assert set(ids) <= set(run["tracks"]["track_id"]) | set(run["ids"])


@pytest.mark.parametrize("query, status, message", [
    ("radio?seed={seed}&n=0", 400, "n=0: must lie between 1 and 500"),
    ("radio?seed={seed}&n=501", 400, "n=501: must lie between 1 and 500"),
    ("radio?seed={seed}&n=2.5", 400, "n='2.5': not a whole number"),
    ("radio?seed={seed}&diversity=1.5", 400, "diversity=1.5: must lie in [0, 1]"),
    ("radio?seed={seed}&diversity=nan", 400, "diversity=nan: must lie in [0, 1]"),
    ("radio?seed={seed}&min_similarity=inf", 400, "min_similarity=inf: must lie in [0, 1]"),
    ("radio?seed={seed}&max_per_artist=0", 400, "max_per_artist=0: must lie between 1"),
    ("radio?seed={seed}&no_same_album=maybe", 400, "no_same_album='maybe': must be 0 or 1"),
    ("radio?n=3", 400, "name the track: /api/radio?seed=TRACK_ID"),
    ("radio?seed=nope", 404, "nope: no track with that id in the index"),
    ("radio?seed={file}", 404, "no track with that id in the index"),  # a file path is not an id
    ("path?from={seed}&to={seed}", 400, "are the same song"),
    ("path?from={seed}&to={live}", 400, "are the same song"),  # "One" and "One (Live)", one song
    ("path?from={seed}&to={other}&n=1", 400, "n=1: must lie between 2 and 500"),
    ("path?from={seed}&to=nope", 404, "nope: no track with that id in the index"),
    ("path?from={seed}", 400, "name the track: /api/path?from=TRACK_ID&to=TRACK_ID"),
    ("playlists?k=0", 400, "k=0: must lie between 1 and 200"),
    ("playlists?k=201", 400, "k=201: must lie between 1 and 200"),
    ("playlists?k=50", 400, "k must lie between 1 and the 18 songs of the index, got 50"),
])
def test_bad_parameters_are_json_errors(served, run, query, status, message):
    base, _ = served
    words = {"seed": q(run["ids"][0]), "other": q(run["ids"][1]), "file": q(str(run["songs"][0]))}
    if "{live}" in query:
        words["seed"], words["live"] = q(run["ids"][3]), q(run["ids"][4])
    got, body = get(f"{base}/api/{query.format(**words)}")
    assert got == status and message in body["error"], body


def test_a_host_not_allowed_is_refused_on_the_list_routes(served, run):
    base, _ = served
    port = base.rsplit(":", 1)[1]
    for route in (f"radio?seed={q(run['ids'][0])}", f"path?from={q(run['ids'][0])}&to={q(run['ids'][5])}",
                  "playlists?k=2"):
        status, _, body = fetch(f"{base}/api/{route}", headers={"Host": f"attacker.test:{port}"})
        assert status == 400 and "is not served here" in json.loads(body)["error"], route
        assert b"songs" not in body and "Zoë".encode() not in body


def test_the_lists_are_refused_to_another_sites_pages(served, run):
    base, _ = served
    seed = f"radio?seed={q(run['ids'][0])}&n=3"
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://attacker.test"}):
        status, _, body = fetch(f"{base}/api/{seed}", headers=headers)
        assert status == 403 and "refused" in json.loads(body)["error"], headers
    status, _, body = fetch(f"{base}/api/{seed}", headers={"Sec-Fetch-Site": "same-origin"})
    assert status == 200 and len(json.loads(body)["songs"]) == 3
    status, _, _ = fetch(f"{base}/api/neighbours?id={q(run['ids'][0])}", headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 200  # a cheap read: only the Host check (a cross-site page cannot read the answer)
