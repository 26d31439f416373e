"""Audio keys of real files of every format: unchanged by mutagen rewriting the tags (added,
changed, removed), changed by one sample of audio; the whole file's sha1 from the same read."""
from __future__ import annotations

import hashlib
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songspace import audiokey

mutagen = pytest.importorskip("mutagen")

SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")
RATE = {".opus": 48000, ".mp3": 44100}
FORMAT = {".opus": {"format": "OGG", "subtype": "OPUS"}, ".mp3": {"format": "MP3"}}


def tone(seconds=1.0, rate=16000, nudge: int | None = None) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * np.pi * 440.0 * t) + 0.1 * np.sin(2 * np.pi * 1234.5 * t)
    if nudge is not None:
        wave[nudge] += 0.3  # one sample changed
    return wave.astype(np.float32)


def write(path: Path, nudge: int | None = None) -> Path:
    rate = RATE.get(path.suffix, 16000)
    sf.write(str(path), tone(rate=rate, nudge=nudge), rate, **FORMAT.get(path.suffix, {}))
    return path


def retag(path: Path, fields: dict[str, list[str]] | None) -> None:
    """Tags rewritten by mutagen: `fields` set (Vorbis / EasyID3 names), or all removed (None)."""
    if fields is None:
        f = mutagen.File(path)
        f.delete()
        if path.suffix in (".ogg", ".opus", ".flac"):
            f.save()
        return
    if path.suffix == ".wav":
        from mutagen import id3
        from mutagen.wave import WAVE

        f = WAVE(path)
        if f.tags is None:
            f.add_tags()
        frames = {"artist": id3.TPE1, "album": id3.TALB, "title": id3.TIT2, "genre": id3.TCON}
        for key, values in fields.items():
            f.tags.delall(frames[key].__name__)
            f.tags.add(frames[key](encoding=3, text=values))
        f.save()
        return
    f = mutagen.File(path, easy=True)
    if f.tags is None:
        f.add_tags()
    f.update(fields)
    f.save()


def keys(path: Path) -> tuple[str, str]:
    sha1, key = audiokey.file_keys(path)
    assert sha1 == hashlib.sha1(path.read_bytes()).hexdigest()
    assert key == audiokey.audio_key(path)
    return sha1, key


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_retagging_keeps_the_key_and_changes_the_sha1(tmp_path, suffix):
    path = write(tmp_path / f"song{suffix}")
    sha1, key = keys(path)
    assert key != sha1  # the container was parsed, not hashed whole
    seen = {sha1}
    for fields in ({"title": ["Été"], "artist": ["Zoë"], "album": ["Nord"]},
                   {"title": ["A much longer title " * 40], "genre": ["x" * 20000]},  # pages, padding
                   {"title": ["Short"]},
                   None):
        retag(path, fields)
        new_sha1, new_key = keys(path)
        assert new_key == key, fields
        seen.add(new_sha1)
    assert len(seen) >= 4  # the bytes did change
    assert sf.info(str(path)).frames > 0


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_one_sample_changes_the_key(tmp_path, suffix):
    a = write(tmp_path / f"a{suffix}")
    b = write(tmp_path / f"b{suffix}", nudge=4000)
    assert keys(a)[1] != keys(b)[1]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_same_audio_other_tags_same_key(tmp_path, suffix):
    a = write(tmp_path / f"a{suffix}")
    b = tmp_path / f"b{suffix}"
    shutil.copy(a, b)
    retag(a, {"title": ["One"], "artist": ["Ann"]})
    retag(b, {"title": ["Two"], "album": ["Another album, another length"]})
    assert a.read_bytes() != b.read_bytes()
    assert keys(a)[1] == keys(b)[1]


def _id3v24(footer: bool) -> bytes:
    """An ID3v2.4 tag with one TIT2 frame (and its footer when asked), built by hand."""
    text = b"\x03Hand-made title\x00"
    frame = b"TIT2" + len(text).to_bytes(4, "big") + b"\x00\x00" + text  # size < 128: syncsafe as is
    body = frame + bytes(300)  # padding
    size = len(body)
    syncsafe = bytes(((size >> s) & 0x7F) for s in (21, 14, 7, 0))
    flags = 0x10 if footer else 0
    tag = b"ID3\x04\x00" + bytes([flags]) + syncsafe + body
    return tag + (b"3DI\x04\x00" + bytes([flags]) + syncsafe if footer else b"")


def test_mp3_tags_front_and_back(tmp_path):
    """ID3v2 with and without a footer, ID3v1 and APEv2: all outside the audio."""
    from mutagen.apev2 import APEv2

    bare = write(tmp_path / "bare.mp3")
    key = keys(bare)[1]
    audio = bare.read_bytes()
    for footer in (False, True):
        tagged = tmp_path / f"v24-{footer}.mp3"
        tagged.write_bytes(_id3v24(footer) + audio)
        assert keys(tagged)[1] == key
    v1 = tmp_path / "v1.mp3"
    v1.write_bytes(audio + b"TAG" + b"Title".ljust(30, b"\x00") + bytes(95))
    assert keys(v1)[1] == key
    ape = tmp_path / "ape.mp3"
    shutil.copy(v1, ape)
    tags = APEv2()
    tags["Title"] = "An APE title"
    tags.save(ape)  # mutagen appends it after the ID3v1 tag
    assert ape.read_bytes()[-32:-24] == b"APETAGEX"
    assert keys(ape)[1] == key
    ape_first = tmp_path / "ape-first.mp3"  # the usual order: APEv2, then ID3v1
    ape_first.write_bytes(audio + ape.read_bytes()[len(audio) + 128:] + v1.read_bytes()[-128:])
    assert keys(ape_first)[1] == key
    retag(ape, {"title": ["And ID3v2 in front"]})
    assert keys(ape)[1] == key


def test_wav_info_chunk_flac_picture_and_id3_in_front(tmp_path):
    bare = write(tmp_path / "bare.wav")
    with sf.SoundFile(str(tmp_path / "info.wav"), "w", 16000, 1) as f:  # a LIST/INFO chunk
        f.title, f.artist = "Title", "Artist"
        f.write(tone())
    assert b"LIST" in (tmp_path / "info.wav").read_bytes()
    assert keys(tmp_path / "info.wav")[1] == keys(bare)[1]
    flac = write(tmp_path / "bare.flac")
    prefixed = tmp_path / "id3.flac"
    prefixed.write_bytes(_id3v24(False) + flac.read_bytes())
    assert keys(prefixed)[1] == keys(flac)[1]
    from mutagen.flac import FLAC, Picture

    pictured = tmp_path / "cover.flac"
    shutil.copy(flac, pictured)
    f = FLAC(pictured)
    cover = Picture()
    cover.type, cover.mime, cover.data = 3, "image/png", b"\x89PNG" + bytes(50000)
    f.add_picture(cover)
    f.save()
    assert keys(pictured)[1] == keys(flac)[1]


def test_what_is_not_parsed_keys_by_all_its_bytes(tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("not a song\n" * 10)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    wav = write(tmp_path / "a.wav").read_bytes()
    cut_wav = tmp_path / "cut.wav"
    cut_wav.write_bytes(wav[: len(wav) // 2])  # the data chunk declares more than is there
    ogg = write(tmp_path / "a.ogg").read_bytes()
    cut_ogg = tmp_path / "cut.ogg"
    cut_ogg.write_bytes(ogg[: len(ogg) // 2])  # a page cut short
    for path in (text, empty, cut_wav, cut_ogg):
        sha1, key = keys(path)
        assert key == sha1, path.name


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_small_blocks_give_the_same_keys(tmp_path, suffix, monkeypatch):
    path = write(tmp_path / f"song{suffix}")
    retag(path, {"title": ["Tagged"]})
    want = keys(path)
    monkeypatch.setattr(audiokey, "BLOCK_BYTES", 7)
    assert audiokey.file_keys(path) == want


@pytest.mark.parametrize("suffix", (".wav", ".ogg"))
def test_memory_does_not_grow_with_length(tmp_path, suffix, monkeypatch):
    monkeypatch.setattr(audiokey, "BLOCK_BYTES", 1 << 16)
    path = tmp_path / f"long{suffix}"
    rng = np.random.default_rng(0)
    sf.write(str(path), (0.3 * rng.standard_normal((44100 * 40, 2))).astype(np.float32), 44100)
    bound = 4 * audiokey.BLOCK_BYTES  # an Ogg page is at most 65,307 bytes
    assert path.stat().st_size > 2 * bound
    tracemalloc.start()
    try:
        audiokey.file_keys(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < bound
