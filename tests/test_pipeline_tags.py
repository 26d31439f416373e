"""End to end on a tagged folder library: the real `dvc repro` with labels from the artist tag
and groups from the album tag; no album straddles the split."""
import json

import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import write_tone
from tests.test_pipeline import TINY, _run, project_copy
from tests.test_tags import write_tagged

pytest.importorskip("mutagen")

ARTISTS = {"Zoë": 220.0, "Bob": 880.0, "Ann & Cid": 3520.0}   # each artist its own register
SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def tagged_library(root):
    """3 artists x 3 albums x 2 songs, in every tagged format, in folders that say nothing."""
    n = 0
    for artist, base in ARTISTS.items():
        for album in range(3):
            for song in range(2):
                path = root / f"disc{n % 4}" / f"{n:02d}{SUFFIXES[n % 4]}"
                freq = base * (1 + 0.05 * album + 0.01 * song)
                wav = write_tone(path.with_suffix(".wav"), freqs=(freq, freq * 1.5), seconds=4.0, rate=22050, seed=n)
                if path.suffix != ".wav":
                    data, rate = sf.read(wav)
                    sf.write(path, data, rate)
                    wav.unlink()
                write_tagged(path, {"artist": [artist], "album": [f"{artist} {album}"], "title": [f"Song {n}"]},
                             keep_audio=True)
                n += 1


@pytest.mark.slow
def test_dvc_repro_with_labels_and_groups_from_tags(tmp_path):
    library = tmp_path / "music"
    tagged_library(library)
    repo = tmp_path / "repo"
    # seed 17: the hash split of these 9 albums puts every artist in test (each album whole)
    over = {**TINY, "seed": 17, "data": {"source": "folder", "audio_dir": str(library), "labels": "tag:artist",
                             "groups": "tag:album"},
            "split": {"test_fraction": 0.35, "val_fraction": 0.3, "method": "hash"},
            "groundtruth": {"test_quartets": 20, "val_quartets": 10, "train_triplets": 40}}
    env, venv_bin = project_copy(repo, over)
    assert "Running stage 'evaluate'" in _run([str(venv_bin / "dvc"), "repro"], repo, env)
    tracks = pd.read_csv(repo / "data" / "library" / "tracks.csv", dtype=str, keep_default_na=False)
    assert len(tracks) == 18 and set(tracks["label"]) == set(ARTISTS)
    assert tracks["group"].nunique() == 9 and (tracks["title"] != "").all()
    splits = pd.read_csv(repo / "data" / "groundtruth" / "splits.csv", dtype=str)
    side = tracks.merge(splits, on="track_id")
    assert side.groupby("group")["split"].nunique().max() == 1
    result = json.loads((repo / "metrics" / "eval.json").read_text())
    assert len(result["grid"]) == 27 and result["headline"]["n_quartets"] > 0
    index = pd.read_csv(repo / "data" / "index" / "tracks.csv", dtype=str, keep_default_na=False)
    assert set(index["artist"]) == set(ARTISTS) and (index["title"] != "").all()
