"""The built-in corpus: real music21 scores rendered to real audio, on a tiny scale."""
from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pandas as pd
import pytest
import yaml

from songspace import audio, corpus
from songspace.config import CorpusParams

ROOT = Path(__file__).resolve().parents[1]
TINY = CorpusParams(classes=("bach", "monteverdi", "jig"), pieces_per_class=2, bars=4,
                    max_seconds=8.0, sample_rate=16000, programs=(0, 24, 40, 56, 73))
BAD_REPEATS = "ryansMammoth/BossJig.abc"  # music21: "badly formed repeats"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return out, corpus.build_corpus(TINY, seed=3, out_dir=out, workers=2)


def midi_file(tracks: list[list[tuple[str, dict]]], tempo_qpm: float = 120.0) -> bytes:
    """Standard MIDI bytes from per-track lists of (message type, fields); ticks per beat 480."""
    mid = mido.MidiFile(ticks_per_beat=480)
    for i, messages in enumerate(tracks):
        track = mido.MidiTrack()
        if i == 0:
            track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_qpm), time=0))
        track.extend(mido.Message(kind, **fields) for kind, fields in messages)
        mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def note(key: int, beats: float, program: int | None = None, channel: int = 0):
    msgs = [] if program is None else [
        ("program_change", dict(program=program, channel=channel, time=0))]
    return msgs + [("note_on", dict(note=key, velocity=90, channel=channel, time=0)),
                   ("note_off", dict(note=key, velocity=0, channel=channel, time=int(beats * 480)))]


def test_clips_are_mono_bounded_normalised_audio(built):
    out, tracks = built
    assert list(tracks.columns) == list(corpus.CORPUS_COLUMNS)
    assert tracks.label.value_counts().to_dict() == {"bach": 2, "monteverdi": 2, "jig": 2}
    assert list(tracks.track_id) == sorted(tracks.track_id) and tracks.track_id.is_unique
    for track_id, label in zip(tracks.track_id, tracks.label):
        assert track_id.startswith(f"{label}-") and track_id.isascii()
    on_disk = pd.read_csv(out / "tracks.csv")
    pd.testing.assert_frame_equal(on_disk, tracks, check_dtype=False)
    assert sorted(p.name for p in out.glob("*.wav")) == sorted(f"{t}.wav" for t in tracks.track_id)
    for row in tracks.itertuples():
        assert row.path == str(out / f"{row.track_id}.wav")
        info = audio.info(row.path)
        assert (info.channels, info.sample_rate) == (1, 16000)
        assert 0 < info.duration_s <= TINY.max_seconds
        assert info.duration_s == pytest.approx(row.duration_s, abs=1e-3)
        wave = audio.load(row.path, 16000)
        assert not audio.is_silent(wave)
        # peak at -1 dBFS (16-bit rounding aside): loudness gives no class away
        assert np.max(np.abs(wave)) == pytest.approx(10 ** (corpus.PEAK_DBFS / 20), abs=1e-3)
        assert np.sqrt(np.mean(wave**2)) > 0.01  # music, not a click
    assert list(pd.read_csv(out / "failed.csv").columns) == list(corpus.FAILED_COLUMNS)


def test_same_seed_same_bytes_whatever_the_workers(built, tmp_path):
    out, tracks = built
    again = corpus.build_corpus(TINY, seed=3, out_dir=tmp_path, workers=1)
    assert list(again.track_id) == list(tracks.track_id)
    assert list(again.source) == list(tracks.source)
    for t in tracks.track_id:
        assert (tmp_path / f"{t}.wav").read_bytes() == (out / f"{t}.wav").read_bytes()


def test_selection_and_programs_follow_the_seed():
    pieces = corpus.candidates("bach")
    assert len(pieces) > 300 and len({p.source for p in pieces}) == len(pieces)
    assert corpus.draw_order(pieces, 3, "bach") == corpus.draw_order(pieces, 3, "bach")
    assert corpus.draw_order(pieces, 3, "bach")[:10] != corpus.draw_order(pieces, 4, "bach")[:10]
    sources = [p.source for p in pieces[:40]]
    progs = {s: [corpus.choose_program(TINY.programs, seed, s) for seed in (3, 4)] for s in sources}
    assert any(a != b for a, b in progs.values())


def test_every_class_draws_from_the_one_shared_pool():
    pool = (4, 19, 40, 73)
    for label in corpus.CLASSES:
        sources = [p.source for p in corpus.candidates(label)[:48]]
        chosen = [corpus.choose_program(pool, 42, s) for s in sources]
        assert set(chosen) == set(pool), label
    # uniform over the pool: a plain count over many sources, against its expectation
    counts = np.zeros(len(pool))
    for i in range(4000):
        counts[pool.index(corpus.choose_program(pool, 42, f"x/{i}.abc"))] += 1
    assert np.all(np.abs(counts - 1000) < 4 * np.sqrt(1000 * 0.75))


def test_every_part_plays_the_drawn_program_on_its_own_channel():
    # two tracks asking for program 53 (voice), both playing middle C
    data = midi_file([note(60, 2, program=53), note(60, 1, program=53)])
    events, used, end = corpus.midi_events(data)
    kinds = {type(e.action).__name__ for e in events}
    assert "ProgramChange" not in kinds
    assert len(used) == 2 and 9 not in used  # unison voices on separate channels
    assert end == pytest.approx(1.0)  # two beats at 120 qpm
    voice = corpus.render_midi(data, 53, 16000, 5.0)
    flute = corpus.render_midi(data, 73, 16000, 5.0)
    stripped = midi_file([note(60, 2), note(60, 1)])
    assert np.array_equal(corpus.render_midi(stripped, 73, 16000, 5.0), flute)
    assert not np.allclose(voice, flute)
    # the unison: with one channel the short note's note-off would end both voices
    assert np.abs(flute[int(0.6 * 16000):int(0.9 * 16000)]).max() > 0.01


def test_render_length_is_bounded():
    long_note = midi_file([note(60, 200)])  # 100 s
    assert len(corpus.render_midi(long_note, 0, 16000, 2.0)) == 2 * 16000
    short = corpus.render_midi(midi_file([note(60, 1)]), 0, 16000, 30.0)
    assert len(short) == int(round((0.5 + corpus.RELEASE_SECONDS) * 16000))
    with pytest.raises(corpus.CorpusError, match="no notes"):
        corpus.render_midi(midi_file([[]]), 0, 16000, 2.0)


def test_first_bars_matches_expanding_the_whole_score():
    from music21 import corpus as m21corpus, stream

    for source in ("ryansMammoth/AcrobatsHornpipe.abc", "ryansMammoth/7thRegimentReel.abc",
                   "bach/bwv269.mxl"):
        score = m21corpus.parse(source)
        for bars in (3, 12):
            quick = corpus.first_bars(score, bars)
            whole = score.expandRepeats().measures(0, bars, indicesNotNumbers=True)
            assert len(quick.parts[0].getElementsByClass(stream.Measure)) == bars
            assert corpus.score_to_midi(quick) == corpus.score_to_midi(whole), (source, bars)


def test_unknown_class_names_the_valid_ones(tmp_path):
    params = CorpusParams(classes=("bach", "polka"))
    with pytest.raises(ValueError, match="polka.*valid classes: bach, palestrina"):
        corpus.build_corpus(params, seed=1, out_dir=tmp_path)
    with pytest.raises(ValueError, match="programs"):
        corpus.build_corpus(CorpusParams(programs=(0, 200)), seed=1, out_dir=tmp_path)


def test_failing_pieces_are_listed_and_replaced(tmp_path, monkeypatch):
    # its first 4 bars play; its first 16 cannot be expanded
    bars16 = dataclasses.replace(TINY, bars=16, max_seconds=3.0)
    assert len(corpus.render_piece(corpus.Piece("jig", BAD_REPEATS, "jig-boss"), 0, TINY))
    with pytest.raises(corpus.CorpusError, match="badly formed repeats"):
        corpus.render_piece(corpus.Piece("jig", BAD_REPEATS, "jig-boss"), 0, bars16)
    good = [p for p in corpus.candidates("reel") if "7thRegiment" in p.source
            or "BenButlers" in p.source]
    mixed = [corpus.Piece("mixed", BAD_REPEATS, "mixed-boss"),
             corpus.Piece("mixed", "ryansMammoth/NoSuchTune.abc", "mixed-nosuch"),
             *(corpus.Piece("mixed", p.source, f"mixed-{i}") for i, p in enumerate(good))]
    monkeypatch.setitem(corpus.CLASSES, "mixed", lambda label: mixed)
    (tmp_path / "stale.wav").write_bytes(b"old")
    params = dataclasses.replace(bars16, classes=("mixed",), pieces_per_class=3)
    with pytest.warns(UserWarning, match="'mixed': only 2 of 3"):
        tracks = corpus.build_corpus(params, seed=0, out_dir=tmp_path, workers=1)
    assert sorted(tracks.track_id) == ["mixed-0", "mixed-1"]
    failed = pd.read_csv(tmp_path / "failed.csv")
    assert sorted(failed.source) == sorted([BAD_REPEATS, "ryansMammoth/NoSuchTune.abc"])
    assert failed.reason.str.len().gt(0).all() and set(failed.label) == {"mixed"}
    assert not (tmp_path / "stale.wav").exists()


def test_stage_writes_an_empty_table_for_a_users_library(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(source="folder", audio_dir=str(tmp_path))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "corpus"
    run = subprocess.run([sys.executable, str(ROOT / "stages" / "corpus.py"), "--out", str(out),
                          "--params", str(params_file)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "empty" in run.stdout
    assert (out / "tracks.csv").read_text().strip() == ",".join(corpus.CORPUS_COLUMNS)
