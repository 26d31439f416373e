"""The only place that decodes audio: a path becomes mono float32 at a requested rate.

Decoding goes through soundfile (libsndfile: wav, flac, ogg/vorbis, opus, mp3). Sections are
read by seeking, so a one-hour file costs only the seconds asked for. Resampling is
torchaudio's band-limited sinc resampler.
"""
from __future__ import annotations

import contextlib
import math
import os
import struct
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from songspace.errors import UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
# Peak amplitude under which a file counts as silent (about -100 dBFS).
SILENCE_PEAK = 1e-5
WRITE_BLOCK_FRAMES = 1 << 16
# Frames decoded and dropped before a section that starts after a seek: an mp3 decoder needs
# about 3,000 frames before its output is right again (measured: 8,192 suffice; twice that here)
SEEK_PREROLL_FRAMES = 1 << 14


class AudioError(UserError):
    """A file that cannot be used as audio; the message names the file and the problem."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class AudioTooLong(AudioError):
    """A file longer than a limit on decoding (a query): refused from its header, before decoding."""

    def __init__(self, path: str | Path, duration_s: float, max_seconds: float, setting: str):
        self.duration_s, self.max_seconds = duration_s, max_seconds
        super().__init__(path, f"{_hms(duration_s)} of audio by its header, longer than the "
                               f"{max_seconds:g} s a query may be ({setting}); query a shorter excerpt")


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d} ({seconds:.0f} s)"


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def info(path: str | Path) -> AudioInfo:
    """Header facts of an audio file, without decoding it."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        # Through a file object: given a path, libsndfile reads a neighbouring macOS "._name"
        # sidecar as a resource fork and fails on the real file.
        with path.open("rb") as raw:
            i = sf.info(raw)
    except Exception as err:  # libsndfile raises RuntimeError/LibsndfileError variants
        raise AudioError(path, f"not decodable audio ({_short(err)})") from None
    if i.frames <= 0 or i.samplerate <= 0:
        raise AudioError(path, "no audio frames")
    return AudioInfo(sample_rate=int(i.samplerate), channels=int(i.channels), frames=int(i.frames))


def check_length(path: str | Path, max_seconds: float | None, setting: str) -> AudioInfo:
    """`info(path)`, refusing a file whose header gives more than `max_seconds` (None: no limit)
    with AudioTooLong naming `setting`, the setting that sets the limit."""
    meta = info(path)
    if max_seconds is not None and meta.duration_s > max_seconds:
        raise AudioTooLong(path, meta.duration_s, max_seconds, setting)
    return meta


@lru_cache(maxsize=16)
def _resampler(orig_rate: int, rate: int) -> torchaudio.transforms.Resample:
    # The transform builds its sinc kernel once; the functional form rebuilds it on every call.
    return torchaudio.transforms.Resample(orig_rate, rate)


def resample(wave: np.ndarray, orig_rate: int, rate: int) -> np.ndarray:
    """Resample a mono float32 signal (samples,) from `orig_rate` to `rate` Hz."""
    if orig_rate == rate:
        return wave.astype(np.float32, copy=False)
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    with torch.no_grad():
        return _resampler(int(orig_rate), int(rate))(x).numpy()


def load(
    path: str | Path,
    rate: int,
    offset_s: float = 0.0,
    duration_s: float | None = None,
) -> np.ndarray:
    """Decode `duration_s` seconds from `offset_s` of a file: mono float32 (samples,) at `rate`.

    Channels are averaged. Only the requested section is decoded (soundfile seeks), so memory
    and time scale with `duration_s`, not with the file's length. Raises AudioError naming the
    file for anything that is not decodable audio.
    """
    path = Path(path)
    meta = info(path)
    start = max(0, int(round(offset_s * meta.sample_rate)))
    frames = -1 if duration_s is None else max(0, int(round(duration_s * meta.sample_rate)))
    return resample(_read_mono(path, meta, start, frames), meta.sample_rate, rate)


def _read_mono(path: Path, meta: AudioInfo, start: int, frames: int, preroll: int = 0) -> np.ndarray:
    """Frames `[start, start + frames)` of a file (all the rest for -1), channels averaged.

    With `preroll`, decoding starts that many frames earlier and they are dropped: the first
    frames decoded after an mp3 seek are wrong (the decoder has not seen the frames before).
    """
    lead = min(preroll, start)
    try:
        with path.open("rb") as raw, sf.SoundFile(raw) as f:
            if start:
                f.seek(min(start - lead, meta.frames))
            data = f.read(frames=frames if frames < 0 else frames + lead, dtype="float32",
                          always_2d=True)[lead:]
    except Exception as err:
        raise AudioError(path, f"decoding failed ({_short(err)})") from None
    if data.size == 0:
        raise AudioError(path, "decoded to no samples (truncated?)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioError(path, "decoded samples are not finite")
    return mono


def resampled_length(frames: int, orig_rate: int, rate: int) -> int:
    """Samples that `resample` makes of `frames` samples at `orig_rate`: ceil(frames x rate / orig_rate)."""
    if orig_rate == rate:
        return frames
    g = math.gcd(orig_rate, rate)
    return -(-frames * (rate // g) // (orig_rate // g))


def load_samples(path: str | Path, rate: int, start: int, stop: int,
                 meta: AudioInfo | None = None) -> np.ndarray:
    """Samples `[start, stop)` of the whole file decoded at `rate`: mono float32 (stop - start,).

    Equal, to float rounding, to `load(path, rate)[start:stop]`, but only those samples are
    decoded, with the few input samples either side that the resampler's sinc kernel reaches:
    memory and time scale with `stop - start`, not with the file. The resampler works on blocks
    of `orig_rate / gcd` input samples (one phase cycle), so the section starts on a block edge.
    Samples past the end of a stream shorter than its header (an estimated mp3 length) are zeros.
    """
    path = Path(path)
    meta = meta or info(path)
    orig = meta.sample_rate
    start, stop = max(0, start), min(stop, resampled_length(meta.frames, orig, rate))
    if stop <= start:
        return np.zeros(0, np.float32)
    if orig == rate:
        first_in, end_in, first_out = start, stop, start
    else:
        g = math.gcd(orig, rate)
        block_in, block_out = orig // g, rate // g
        margin = -(-_resampler(orig, rate).width // block_in) + 1  # blocks the kernel reaches
        first = max(0, start // block_out - margin)
        first_in, first_out = first * block_in, first * block_out
        end_in = min(meta.frames, ((stop - 1) // block_out + 1 + margin) * block_in)
    wave = resample(_read_mono(path, meta, first_in, end_in - first_in, SEEK_PREROLL_FRAMES), orig, rate)
    part = wave[start - first_out : stop - first_out]
    return np.pad(part, (0, stop - start - len(part))) if len(part) < stop - start else part


def is_silent(wave: np.ndarray) -> bool:
    return wave.size == 0 or float(np.max(np.abs(wave))) < SILENCE_PEAK


def write(path: str | Path, wave: np.ndarray, rate: int) -> None:
    """Write mono float32 audio as 16-bit PCM WAV (or the format the suffix names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(wave, -1.0, 1.0)
    # In blocks: libvorbis fails on single very long writes.
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1 if data.ndim == 1 else data.shape[1]) as f:
        for start in range(0, len(data), WRITE_BLOCK_FRAMES):
            f.write(data[start : start + WRITE_BLOCK_FRAMES])


# ---------------------------------------------------------------------------------------------
# Checking a whole file: decode it completely, in blocks

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
                why = _short(err)
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
                f"({_short(err)}); the file is damaged or truncated",
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


def _short(err: Exception) -> str:
    """The gist of a libsndfile error, without the file object's repr."""
    text = str(err).strip()
    text = text.splitlines()[-1] if text else type(err).__name__
    if text.startswith("Error opening") and ": " in text:
        text = text.split(": ", 1)[1]
    return text[:160]


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
