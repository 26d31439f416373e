"""Radio, paths, playlists and M3U8 on a space of real vectors and a track table with tags."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from songspace import distances, playlists
from songspace.playlists import PlaylistError, Space

ARTISTS = ["Zoë", "Bob", "Ann", "Cid"]


def make_space(tmp_path: Path, n: int = 60, distance: str = "euclidean", seed: int = 0) -> Space:
    """n songs on a noisy ring in 8-d (a path has somewhere to go), 4 artists, 2 albums each."""
    rng = np.random.default_rng(seed)
    angle = np.sort(rng.uniform(0, 2 * np.pi, n))
    vectors = np.zeros((n, 8))
    vectors[:, 0], vectors[:, 1] = np.cos(angle), np.sin(angle)
    vectors[:, 2:] = 0.05 * rng.standard_normal((n, 6))
    rows = []
    for i in range(n):
        artist = ARTISTS[i % 4]
        rows.append({"track_id": f"t{i:02d}", "path": str(tmp_path / "music" / artist / f"{i:02d} Song.flac"),
                     "title": f"Song {i}", "artist": artist, "album": f"{artist} {i % 8 // 4}",
                     "genre": "Ambient" if i < n // 2 else "Folk", "duration_s": 100.0 + i, "sha1": f"{i:040x}"})
    return Space(vectors, distance, distances.fit_context(distance, vectors), pd.DataFrame(rows))


def ids(entries) -> list[str]:
    return [e.track_id for e in entries]


def test_similarity_is_the_share_of_pairs_farther_apart(tmp_path):
    space = make_space(tmp_path, n=30, distance="cosine")
    all_pairs = [distances.cosine(space.vectors[[i]], space.vectors[[j]])[0]
                 for i in range(30) for j in range(i + 1, 30)]
    for d in (0.0, 0.01, 0.3, 1.0, 2.5):
        want = 1.0 if d == 0 else np.mean(np.array(all_pairs) > d)
        assert space.similarity(d) == pytest.approx(want)
    sims = space.similarity(space.distances_to(space.vectors[0]))
    assert sims[0] == 1.0 and ((0 <= sims) & (sims <= 1)).all()


def test_radio_without_diversity_is_the_seeds_neighbours_in_order(tmp_path):
    space = make_space(tmp_path)
    got = playlists.radio(space, "t10", n=12, diversity=0.0)
    d = np.array([distances.euclidean(space.vectors[[10]], space.vectors[[i]])[0] for i in range(60)])
    assert ids(got) == [f"t{i:02d}" for i in np.argsort(d, kind="stable")[:12]]
    sims = [e.similarity for e in got]
    assert sims[0] == 1.0 and sims == sorted(sims, reverse=True)


@pytest.mark.parametrize("diversity", [0.0, 0.5, 1.0])
def test_radio_honours_its_constraints(tmp_path, diversity):
    space = make_space(tmp_path)
    got = playlists.radio(space, "t10", n=10, max_per_artist=2, diversity=diversity)
    assert got[0].track_id == "t10" and len(set(ids(got))) == len(got) == 8  # 4 artists x 2
    assert max(pd.Series([e.artist for e in got]).value_counts()) == 2
    one_each = playlists.radio(space, "t10", n=30, no_same_album=True, diversity=diversity)
    assert len(one_each) == 8 and len({e.album for e in one_each}) == 8
    close = playlists.radio(space, "t10", n=60, min_similarity=0.9, diversity=diversity)
    assert all(e.similarity >= 0.9 for e in close) and 1 < len(close) < 60


def test_walking_radio_drifts_further_than_a_staying_one(tmp_path):
    space = make_space(tmp_path)
    stay = playlists.radio(space, "t10", n=20, diversity=0.0)
    walk = playlists.radio(space, "t10", n=20, diversity=1.0)
    assert np.mean([e.similarity for e in walk]) < np.mean([e.similarity for e in stay])


def test_copies_of_one_song_come_once(tmp_path):
    space = make_space(tmp_path, n=20)
    tracks = space.tracks.copy()
    tracks.loc[11, ["title", "artist"]] = ["song 10 (Live)", "zoë"]   # a live copy of t10
    tracks.loc[10, ["title", "artist"]] = ["Song 10", "Zoë"]
    tracks.loc[12, "sha1"] = tracks.loc[13, "sha1"]                    # the same audio twice
    vectors = space.vectors.copy()
    space = Space(vectors, "euclidean", {}, tracks)
    got = ids(playlists.radio(space, "t10", n=20, diversity=0.0))
    assert "t11" not in got and len(got) == 18 and ("t12" in got) != ("t13" in got)


def test_a_path_goes_from_a_to_b_in_smaller_steps_than_two_neighbour_lists(tmp_path):
    space = make_space(tmp_path)
    got = playlists.path(space, "t00", "t30", n=12)
    assert ids(got)[0] == "t00" and ids(got)[-1] == "t30" and len(set(ids(got))) == 12

    def mean_step(rows):
        v = space.vectors[rows]
        return float(np.mean(distances.euclidean(v[:-1], v[1:])))

    rows = [space.row(t) for t in ids(got)]
    near_a = [i for i in np.argsort(space.distances_to(space.vectors[0])) if i not in (0, 30)][:5]
    near_b = [i for i in np.argsort(space.distances_to(space.vectors[30])) if i not in (0, 30)][:5]
    assert mean_step(rows) < mean_step([0, *near_a, *near_b[::-1], 30])
    assert all(0 <= e.similarity <= 1 for e in got)
    with pytest.raises(PlaylistError, match="same song"):
        playlists.path(space, "t00", "t00")
    with pytest.raises(PlaylistError, match="not a track"):
        playlists.path(space, "t00", "nope")


def test_playlists_cover_the_library_and_are_named_by_tags(tmp_path):
    space = make_space(tmp_path)
    lists = playlists.playlists(space, k=4)
    assert len(lists) == 4
    assert sorted(t for p in lists for t in ids(p.entries)) == sorted(space.ids)
    assert all(p.name.split(" / ")[0] in ("Ambient", "Folk") for p in lists)
    assert len({p.name for p in lists}) == 4
    for p in lists:
        sims = [e.similarity for e in p.entries]
        assert sims == sorted(sims, reverse=True)
    with pytest.raises(PlaylistError, match="k must lie"):
        playlists.playlists(space, k=61)


def test_m3u8_paths_are_relative_to_the_playlist_and_utf8(tmp_path):
    space = make_space(tmp_path, n=8)
    got = playlists.radio(space, "t00", n=3)
    out = playlists.write_m3u8(got, tmp_path / "lists" / "radio.m3u8", title="Radio: Zoë")
    lines = out.read_bytes().decode("utf-8").splitlines()
    assert lines[:2] == ["#EXTM3U", "#PLAYLIST:Radio: Zoë"]
    for k, e in enumerate(got):
        info, where = lines[2 + 2 * k], lines[3 + 2 * k]
        assert info == f"#EXTINF:{int(round(e.duration_s))},{e.artist} - {e.title}"
        assert where.startswith("../music/") and (out.parent / where).resolve() == Path(e.path).resolve()
    assert playlists.entries_json(got)[0]["name"] == f"{got[0].title} - {got[0].artist}"


def test_a_playlist_emptied_by_min_similarity_is_dropped(tmp_path):
    space = make_space(tmp_path)
    lists = playlists.playlists(space, k=6, min_similarity=0.99)
    assert all(p.entries for p in lists) and len(lists) <= 6
    assert all(e.similarity >= 0.99 for p in lists for e in p.entries)
