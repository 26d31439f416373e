"""Tags read back from real files of every format songspace decodes, tagged with mutagen."""
from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from songspace import tags
from tests.conftest import write_tone

mutagen = pytest.importorskip("mutagen")

SONG = {"artist": ["Zoë Keating", "Ärger & Co"], "albumartist": ["Various"], "album": ["Ünder 1/2"],
        "title": ["Café #1 ?"], "genre": ["Ambient"], "date": ["2009-05-01"], "tracknumber": ["3/12"]}
WANT = {"artist": "Zoë Keating; Ärger & Co", "albumartist": "Various", "album": "Ünder 1/2",
        "title": "Café #1 ?", "genre": "Ambient", "year": "2009", "tracknumber": "3"}


def _audio(path: Path) -> Path:
    if path.suffix == ".opus":
        write_tone(path.with_suffix(".wav"), seconds=1.0, rate=48000)
        data, rate = sf.read(path.with_suffix(".wav"))
        sf.write(path, data, rate, format="OGG", subtype="OPUS")
        path.with_suffix(".wav").unlink()
        return path
    if path.suffix == ".mp3":
        data, rate = sf.read(write_tone(path.with_suffix(".wav"), seconds=1.0, rate=44100))
        sf.write(path, data, rate, format="MP3")
        path.with_suffix(".wav").unlink()
        return path
    return write_tone(path, seconds=1.0)


def write_tagged(path: Path, fields: dict[str, list[str]], id3_encoding: int = 3, keep_audio: bool = False) -> Path:
    """An audio file at path (a tone, unless keep_audio: the file there) with fields
    (Vorbis/EasyID3 names) written by mutagen."""
    if not keep_audio:
        _audio(path)
    if path.suffix == ".wav":
        from mutagen import id3
        from mutagen.wave import WAVE

        f = WAVE(path)
        f.add_tags()
        frames = {"artist": id3.TPE1, "albumartist": id3.TPE2, "album": id3.TALB, "title": id3.TIT2,
                  "genre": id3.TCON, "date": id3.TDRC, "tracknumber": id3.TRCK}
        for key, values in fields.items():
            f.tags.add(frames[key](encoding=id3_encoding, text=values))
        f.save()
        return path
    f = mutagen.File(path, easy=True)
    if f.tags is None:
        f.add_tags()
    for key, values in fields.items():
        f[key] = values
    f.save()
    return path


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".opus", ".mp3"])
def test_tags_read_back_in_every_format(tmp_path, suffix):
    path = write_tagged(tmp_path / f"song{suffix}", SONG)
    assert tags.read(path) == WANT
    assert sf.info(str(path)).frames > 0  # still audio


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_missing_tags_are_empty_fields(tmp_path, suffix):
    path = _audio(tmp_path / f"bare{suffix}")
    assert tags.read(path) == tags.empty()
    partial = write_tagged(tmp_path / f"part{suffix}", {"title": ["Only a title"]})
    assert tags.read(partial) == {**tags.empty(), "title": "Only a title"}


def test_latin1_id3_and_control_characters(tmp_path):
    path = write_tagged(tmp_path / "old.wav", {"artist": ["Caf\u00e9 Tacvba"], "title": ["A\nB\tC  ", "Second"]},
                        id3_encoding=0)
    got = tags.read(path)
    assert got["artist"] == "Café Tacvba" and got["title"] == "A B C; Second"  # ID3 keeps values apart with NUL


def test_broken_tags_and_non_audio_give_empty_fields(tmp_path):
    path = write_tagged(tmp_path / "song.mp3", SONG)
    data = bytearray(path.read_bytes())
    data[6:10] = b"\x7f\x7f\x7f\x7f"  # an ID3 header claiming a tag far past the file's end
    path.write_bytes(bytes(data))
    assert tags.read(path) == tags.empty()
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"fLaC" + b"\xff" * 64)
    assert tags.read(junk) == tags.empty()
    assert tags.read(tmp_path / "missing.ogg") == tags.empty()


def test_first_value_and_display_name():
    assert tags.first("Zoë Keating; Ärger & Co") == "Zoë Keating"
    assert tags.display_name("Café", "Zoë", "x.wav") == "Café - Zoë"
    assert tags.display_name("", "Zoë", "x.wav") == "x.wav"
    assert tags.display_name("Café", "", "x.wav") == "Café"
    assert len(tags.clean(["x" * 500])) == tags.MAX_TAG_CHARS
