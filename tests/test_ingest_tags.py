"""Tags at ingest: the track table holds what mutagen wrote, labels and groups come from tags,
and no group straddles the split."""
from __future__ import annotations

from pathlib import Path

import pytest

from songspace import config, groundtruth as gt, ingest, tags
from tests.test_tags import write_tagged

pytest.importorskip("mutagen")

# file -> tags written (Vorbis / EasyID3 names); two artists, two albums each, every format
LIBRARY = {
    "a/01.flac": {"artist": ["Zoë"], "album": ["Nord"], "title": ["Été"], "genre": ["Folk"], "date": ["2001"]},
    "a/02.ogg": {"artist": ["Zoë"], "album": ["Nord"], "title": ["Hiver"], "genre": ["Folk"], "tracknumber": ["2/9"]},
    "a/03.mp3": {"artist": ["Zoë"], "album": ["Süd"], "title": ["Mai"], "genre": ["Folk"]},
    "a/04.opus": {"artist": ["Zoë"], "album": ["Süd"], "title": ["Juni"], "genre": ["Jazz"]},
    "b/05.wav": {"artist": ["Bob", "Ann"], "album": ["Live"], "title": ["One"], "genre": ["Jazz"]},
    "b/06.flac": {"artist": ["Bob"], "album": ["Live"], "title": ["Two"], "genre": ["Jazz"]},
    "b/07.mp3": {"artist": ["Bob"], "album": ["Greatest Hits"], "title": ["Three"], "genre": ["Jazz"]},
    "b/08.ogg": {"artist": ["Bob"], "albumartist": ["Various"], "album": ["Greatest Hits"], "title": ["Four"]},
    "c/09.wav": {},
}


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tagged") / "music"
    for name, fields in LIBRARY.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_tagged(root / name, fields)
    return root


def run(root: Path, **data) -> ingest.Ingested:
    params = config.from_dict({"models": {"m": {"arch": "cnn", "channels": [4], "fc": [128]}}, "model": "m",
                               "data": {"source": "folder", "audio_dir": str(root), **data},
                               "compute": {"cache_dir": str(root.parent / "cache")}})
    return ingest.ingest(params, "unused.csv", workers=1, progress=False)


def test_the_track_table_holds_the_tags_written(library, tmp_path):
    lib = run(library)
    ingest.write_tracks(lib.tracks, tmp_path / "tracks.csv")
    table = ingest.read_tracks(tmp_path / "tracks.csv").set_index("track_id")
    for name, fields in LIBRARY.items():
        want = tags.empty()
        for key, values in fields.items():
            want[{"date": "year"}.get(key, key)] = tags.MULTI_SEP.join(values)
        want["tracknumber"] = want["tracknumber"].split("/")[0]
        assert {k: table.loc[name, k] for k in tags.TAG_COLUMNS} == want, name
    assert lib.report["tagged"] == 8 and table.loc["c/09.wav", "label"] == "c"


def test_labels_and_groups_from_tags(library):
    lib = run(library, labels="tag:artist", groups="tag:album")
    got = {r.track_id: (r.label, r.group) for r in lib.tracks.itertuples()}
    assert got["b/05.wav"] == ("Bob", "Bob / Live")            # the first of two artists
    assert got["b/08.ogg"] == ("Bob", "Various / Greatest Hits")  # the album artist owns the album
    assert got["b/07.mp3"] == ("Bob", "Bob / Greatest Hits")
    assert "c/09.wav" not in got
    assert lib.skipped.set_index("path").loc[str(library / "c/09.wav"), "reason"] == "unlabelled"
    by_genre = run(library, labels="tag:genre", groups="tag:artist")
    assert set(by_genre.tracks["label"]) == {"Folk", "Jazz"}   # b/08 has no genre: skipped
    assert set(by_genre.tracks["group"]) == {"Zoë", "Bob"}


def test_no_album_straddles_the_split(library):
    lib = run(library, labels="tag:artist", groups="tag:album")
    t = lib.tracks
    songs = t["track_id"].iloc[[0, 1, 4]].tolist()
    q = gt.parse_quartets([(1, [*songs, songs[2]])], gt.track_lookup(t)).quartets
    for seed in range(5):
        hashed = gt.assign_splits(t, seed, 0.3, 0.3)
        parted = gt.partition_splits(t, q, hashed, seed, 0.3, 0.3)
        for splits in (hashed, parted):
            assert splits.groupby(t["group"])["split"].nunique().max() == 1


@pytest.mark.parametrize("key, value", [("labels", "tag:mood"), ("groups", "tag:genre"), ("groups", "album")])
def test_unknown_tag_choices_are_refused(key, value):
    with pytest.raises(config.ConfigError, match=f"data.{key} '{value}' is unknown"):
        config.from_dict({"models": {"m": {"arch": "cnn", "channels": [4], "fc": [128]}}, "model": "m", "data": {key: value}})
