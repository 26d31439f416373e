"""Checking a whole audio file: decode it completely, in blocks, and say whether it is usable.

`scan` reads every frame (memory O(block)), tells a damaged or cut-off file from one that is not
audio at all (`BadAudio` with a kind: empty / not_audio / corrupt / truncated), and reports the
decoded length and peak; silence and length are facts, not errors. Decoding itself is `audio`'s.
"""
from __future__ import annotations

import contextlib
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from songspace.audio import AudioError, short_error

BLOCK_FRAMES = 1 << 16  # decoding block: 64 Ki frames (1.5 s at 44.1 kHz)
# A stream that decodes to fewer than this share of the frames its header declares is cut
# short. Headers of VBR mp3s without a Xing frame only estimate the length, hence the slack.
TRUNCATION_TOLERANCE = 0.01
OGG_MAX_PAGE_BYTES = 27 + 255 + 255 * 255


class BadAudio(AudioError):
    """A file that is not usable audio; `kind` is one of REASONS."""

    def __init__(self, path: str | Path, kind: str, reason: str):
        self.kind = kind
        super().__init__(path, reason)


# ---------------------------------------------------------------------------------------------
# One file: decode it completely in blocks


@dataclass(frozen=True)
class Scan:
    """What decoding a whole file found. frames: decoded frames; peak: max |sample| (0..1)."""

    sample_rate: int
    channels: int
    frames: int
    declared_frames: int
    peak: float

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


# Leading bytes of container formats: a file starting with one of these is audio (maybe
# damaged), anything else is some other kind of file with an audio suffix.
_AUDIO_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"ID3", b"FORM", b"caff", b".snd")
_OTHER_MAGIC = {
    b"%PDF": "a PDF document", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image",
    b"PK\x03\x04": "a ZIP archive", b"GIF8": "a GIF image", b"<!DO": "an HTML page",
    b"<htm": "an HTML page", b"\x7fELF": "a program",
}


def _looks_like_audio(head: bytes) -> bool:
    if head.startswith(_AUDIO_MAGIC):
        return True
    # MPEG audio frame sync: 11 set bits
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0


def _describe(head: bytes) -> str:
    """What a non-audio file looks like, from its first bytes."""
    for magic, what in _OTHER_MAGIC.items():
        if head.startswith(magic):
            return f"looks like {what}"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and sum(c.isprintable() or c.isspace() for c in text) >= 0.95 * len(text):
        return "looks like text"
    return f"unrecognised content starting {head[:8]!r}"


def _wav_truncation(path: Path, size: int) -> str | None:
    """A RIFF/WAVE file whose data chunk declares more bytes than the file holds."""
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        for _ in range(64):  # a WAV has a handful of chunks before `data`
            f.seek(offset)
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                available = size - offset - 8
                # 0 and 0xFFFFFFFF mark streamed WAVs whose writer never knew the length
                if csize not in (0, 0xFFFFFFFF) and csize > available:
                    return f"data chunk declares {csize} bytes, the file holds {available}"
                return None
            offset += 8 + csize + (csize & 1)
    return None


def _ogg_truncation(path: Path, size: int) -> str | None:
    """An Ogg file whose last page is incomplete or lacks the end-of-stream flag.

    A complete file ends exactly where its last page ends, and that page is flagged
    end-of-stream; a cut file ends inside a page or after a page without the flag.
    """
    with path.open("rb") as f:
        if f.read(4) != b"OggS":
            return None
        start = max(0, size - OGG_MAX_PAGE_BYTES - 4)
        f.seek(start)
        tail = f.read()
    at = len(tail)
    while (at := tail.rfind(b"OggS", 0, at)) >= 0:
        if at + 27 > len(tail) or tail[at + 4] != 0:  # version byte is 0
            continue
        segments = tail[at + 26]
        if at + 27 + segments > len(tail):
            continue
        end = at + 27 + segments + sum(tail[at + 27:at + 27 + segments])
        if end == len(tail):
            if tail[at + 5] & 0x04:
                return None
            return "the last Ogg page lacks the end-of-stream flag"
    return "the last Ogg page is cut off"


def scan(path: str | Path, block_frames: int = BLOCK_FRAMES) -> Scan:
    """Decode a whole file in blocks of `block_frames` frames; memory stays O(block_frames).

    Raises BadAudio (an AudioError) with kind empty / not_audio / corrupt / truncated. Silence
    and length are facts in the result, not errors: whether they disqualify is policy.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise BadAudio(path, "empty", "empty file (0 bytes)")
    # Through a file object, not the path: given a path, libsndfile takes a macOS "._name"
    # sidecar (AppleDouble, common on copied libraries) for an SD2 resource fork and fails.
    with path.open("rb") as raw:
        head = raw.read(16)
        raw.seek(0)
        try:
            sound = sf.SoundFile(raw)
        except Exception as err:  # libsndfile's errors vary by format and version
            if _looks_like_audio(head):
                why = short_error(err)
                if "does not exist" in why:  # libsndfile's words for an mp3 without a frame
                    why = "no valid audio frame found"
                raise BadAudio(path, "corrupt",
                               f"an audio header but it cannot be opened ({why})") from None
            raise BadAudio(path, "not_audio", f"not an audio file ({_describe(head)})") from None
        with sound:
            return _decode(path, sound, head, size, block_frames)


def _decode(path: Path, sound: sf.SoundFile, head: bytes, size: int, block_frames: int) -> Scan:
    """scan's second half: container checks, then every frame decoded block by block."""
    cut = _wav_truncation(path, size) if head[:4] == b"RIFF" else (
        _ogg_truncation(path, size) if head[:4] == b"OggS" else None)
    if cut:
        raise BadAudio(path, "truncated", f"truncated: {cut}")
    rate, channels, declared = sound.samplerate, sound.channels, max(sound.frames, 0)
    if rate <= 0:
        raise BadAudio(path, "corrupt", "header gives no sample rate")
    frames, peak = 0, 0.0
    while True:
        try:
            block = sound.read(block_frames, dtype="float32", always_2d=True)
        except Exception as err:
            raise BadAudio(
                path, "corrupt",
                f"decoding failed at {frames / rate:.2f} s of {declared / rate:.2f} s "
                f"({short_error(err)}); the file is damaged or truncated",
            ) from None
        if len(block) == 0:
            break
        if not np.all(np.isfinite(block)):
            raise BadAudio(path, "corrupt", f"non-finite samples near {frames / rate:.2f} s")
        peak = max(peak, float(np.max(np.abs(block))))
        frames += len(block)
    if frames == 0:
        raise BadAudio(path, "empty", "the header is there but no audio frames decode")
    if frames < (1 - TRUNCATION_TOLERANCE) * declared:
        raise BadAudio(
            path, "truncated",
            f"truncated: {frames / rate:.2f} s decode of the {declared / rate:.2f} s "
            "its header declares",
        )
    return Scan(sample_rate=rate, channels=channels, frames=frames,
                declared_frames=declared, peak=peak)



@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level stderr (libmpg123 prints resync notes for damaged mp3s)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        sys.stderr.flush()
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
