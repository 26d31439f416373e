"""A song's audio key: the hex sha1 of a file's audio alone, the same after its tags are
rewritten and different when its audio changes.

Everything derived from a song's audio is stored under this key (`checkstore`, `songstore`), so
moving, renaming or re-tagging a file recomputes nothing. The containers are parsed here, simply
and defensively; what is hashed:

- WAV (RIFF/WAVE): the `fmt ` and `data` chunks; LIST, id3 and every other chunk are skipped.
- FLAC: STREAMINFO and the frames after the last metadata block; every other block is skipped
  (VORBIS_COMMENT, PICTURE, PADDING, SEEKTABLE, ...).
- MP3: the bytes between a leading ID3v2 tag (its syncsafe size, plus the footer when flagged)
  and a trailing ID3v1 tag (`TAG`, 128 bytes) and APEv2 tag.
- Ogg (Vorbis, Opus, FLAC): every packet but each stream's second (the comment header), and the
  granule positions of audio pages. Page headers are not hashed: a retag re-paginates the header
  packets and renumbers the pages after them, which changes their sequence numbers and CRCs.

Leading ID3v2 tags are skipped before the container is recognised (some taggers prepend one to
FLAC files). Any other file, or one whose structure does not add up (a chunk or a page cut
short, a streamed WAV without sizes), is keyed by the sha1 of all its bytes: still a key of its
content, only a retag changes it. A file is read once, front to back, in blocks (memory does not
grow with its length), and that one read also gives the sha1 of the whole file (`file_keys`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

BLOCK_BYTES = 1 << 20      # read size: 1 MiB
VERSION = b"songspace audio key 1\n"  # hashed first: a new rule here gives new keys
HEAD_BYTES = 12            # enough to tell the containers apart (RIFF....WAVE)
ID3V2_HEADER_BYTES = 10
ID3V1_BYTES = 128
APE_FOOTER_BYTES = 32
OGG_HEADER_BYTES = 27      # a page header before its segment table
OGG_NO_GRANULE = (0, (1 << 64) - 1)  # header pages, and pages where no packet ends


class _Unparsed(Exception):
    """The container's structure does not add up: the file is keyed by all its bytes."""


class _Reader:
    """A file read once, front to back: every byte goes into the whole file's sha1, the ranges
    `take`n with `audio=True` also into the audio hash."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.whole = hashlib.sha1()
        self.audio = hashlib.sha1(VERSION)
        self.buf = bytearray(BLOCK_BYTES)

    def read(self, n: int) -> bytes:
        """The next `n` bytes (a header: small); fewer only at the end of the file."""
        data = self.f.read(n)
        self.whole.update(data)
        return data

    def exact(self, n: int) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise _Unparsed
        return data

    def take(self, n: int | None, audio: bool) -> None:
        """The next `n` bytes (None: all the rest), in blocks; _Unparsed if the file ends first."""
        view = memoryview(self.buf)
        while n is None or n > 0:
            got = self.f.readinto(view[: BLOCK_BYTES if n is None else min(n, BLOCK_BYTES)])
            if not got:
                if n is None:
                    return
                raise _Unparsed
            self.whole.update(view[:got])
            if audio:
                self.audio.update(view[:got])
            if n is not None:
                n -= got


def _peek(f: BinaryIO, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def _id3v2_bytes(head: bytes) -> int | None:
    """Length of the ID3v2 tag whose header is `head` (10 bytes), footer included; None if it
    is not a valid header."""
    if len(head) < ID3V2_HEADER_BYTES or head[:3] != b"ID3" or 0xFF in head[3:5] or \
            any(b & 0x80 for b in head[6:10]):
        return None
    size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]  # syncsafe: 7 bits a byte
    footer = ID3V2_HEADER_BYTES if head[5] & 0x10 else 0
    return ID3V2_HEADER_BYTES + size + footer


def _mpeg_sync(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0


def _mp3_end(f: BinaryIO, start: int, size: int) -> int:
    """Where an mp3's frames end: before the ID3v1 and APEv2 tags at its end, in either order
    (an APEv2 tag goes before an ID3v1 tag, but mutagen appends one after it)."""
    end = size
    for _ in range(4):
        if end - start >= ID3V1_BYTES and _peek(f, end - ID3V1_BYTES, 3) == b"TAG":
            end -= ID3V1_BYTES
            continue
        foot = _peek(f, end - APE_FOOTER_BYTES, APE_FOOTER_BYTES) if end - start >= APE_FOOTER_BYTES else b""
        if foot[:8] != b"APETAGEX":
            break
        tag = int.from_bytes(foot[12:16], "little")  # items + footer, not the header
        if int.from_bytes(foot[20:24], "little") & (1 << 31):  # a header too
            tag += APE_FOOTER_BYTES
        if not APE_FOOTER_BYTES <= tag <= end - start:
            break
        end -= tag
    return end


def _plan(f: BinaryIO, size: int) -> tuple[str, int, int] | None:
    """(container, where it starts, where an mp3's frames end) from a few peeked bytes; None:
    not a container parsed here."""
    start, head = 0, _peek(f, 0, HEAD_BYTES)
    while head[:3] == b"ID3":
        length = _id3v2_bytes(head)
        if length is None or start + length > size:
            return None
        start += length
        head = _peek(f, start, HEAD_BYTES)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav", start, size
    if head[:4] in (b"fLaC", b"OggS"):
        return ("flac" if head[:4] == b"fLaC" else "ogg"), start, size
    if start or _mpeg_sync(head):
        return "mp3", start, _mp3_end(f, start, size)
    return None


def _wav(r: _Reader, start: int, end: int) -> None:
    r.exact(12)  # RIFF, its size (a retag changes it), WAVE
    found = set()
    while len(head := r.read(8)) == 8:
        cid, n = head[:4], int.from_bytes(head[4:], "little")
        if cid in (b"fmt ", b"data"):
            if n in (0, 0xFFFFFFFF) and cid == b"data":  # a streamed WAV: its length unknown
                raise _Unparsed
            r.audio.update(cid + n.to_bytes(8, "little"))
            r.take(n, audio=True)
            found.add(cid)
        else:
            try:
                r.take(n, audio=False)
            except _Unparsed:  # a chunk other than the audio's cut short: the audio is whole
                break
        if n & 1:
            r.read(1)  # chunks are padded to an even length
    if found != {b"fmt ", b"data"}:
        raise _Unparsed


def _flac(r: _Reader, start: int, end: int) -> None:
    r.exact(4)  # fLaC
    streaminfo, last = False, False
    while not last:
        head = r.exact(4)
        last, kind, n = bool(head[0] & 0x80), head[0] & 0x7F, int.from_bytes(head[1:], "big")
        if kind == 127:  # invalid by the specification
            raise _Unparsed
        if kind == 0:
            r.audio.update(b"STREAMINFO" + n.to_bytes(4, "big"))
            streaminfo = True
        r.take(n, audio=kind == 0)
    if not streaminfo:
        raise _Unparsed
    r.audio.update(b"FRAMES")
    r.take(None, audio=True)


def _mp3(r: _Reader, start: int, end: int) -> None:
    r.audio.update(b"MPEG")
    r.take(end - start, audio=True)


def _ogg(r: _Reader, start: int, end: int) -> None:
    # Three streams, each the same however the packets are laid out in pages: the payload of
    # the packets, their lacing values (a packet's are fixed by its length) and the granule
    # positions of audio pages (a retag re-paginates only the header packets)
    payload_h, lacing_h, granule_h = hashlib.sha1(), hashlib.sha1(), hashlib.sha1()
    packets: dict[int, int] = {}  # serial -> index of the packet being read, counted up to 2
    while head := r.read(OGG_HEADER_BYTES):
        if len(head) < OGG_HEADER_BYTES or head[:4] != b"OggS" or head[4] != 0:
            raise _Unparsed
        granule, serial = int.from_bytes(head[6:14], "little"), int.from_bytes(head[14:18], "little")
        lacing = r.exact(head[26])
        payload = r.exact(sum(lacing))
        index = packets.get(serial, 0)
        if index >= 2:  # past the comment header: the whole page
            payload_h.update(payload)
            lacing_h.update(lacing)
        else:
            at = 0
            for i, n in enumerate(lacing):
                if index != 1:  # the second packet is the comment header
                    payload_h.update(payload[at : at + n])
                    lacing_h.update(lacing[i : i + 1])
                at += n
                index += n < 255  # a segment shorter than 255 bytes ends its packet
            packets[serial] = index
        if granule not in OGG_NO_GRANULE:
            granule_h.update(head[6:14])
    r.audio.update(payload_h.digest() + lacing_h.digest() + granule_h.digest())


_PARSERS = {"wav": _wav, "flac": _flac, "mp3": _mp3, "ogg": _ogg}


def file_keys(path: str | Path) -> tuple[str, str]:
    """(sha1 of the whole file, audio key) of one file, both hex, from one read. Raises OSError."""
    with open(path, "rb", buffering=BLOCK_BYTES) as f:
        plan = _plan(f, os.fstat(f.fileno()).st_size)
        f.seek(0)
        r = _Reader(f)
        try:
            if plan is None:
                raise _Unparsed
            container, start, end = plan
            r.take(start, audio=False)
            r.audio.update(container.encode() + b"\n")
            _PARSERS[container](r, start, end)
            key = r.audio.hexdigest()
        except _Unparsed:
            key = None
        r.take(None, audio=False)
    whole = r.whole.hexdigest()
    return whole, key or whole


def audio_key(path: str | Path) -> str:
    """Hex sha1 of a file's audio alone (the module docstring says what that is per container)."""
    return file_keys(path)[1]
