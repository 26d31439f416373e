"""The only place that decodes audio: a path becomes mono float32 at a requested rate.

Decoding goes through soundfile (libsndfile: wav, flac, ogg/vorbis, opus, mp3). Sections are
read by seeking, so a one-hour file costs only the seconds asked for. Resampling is
torchaudio's band-limited sinc resampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

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
        raise AudioError(path, f"not decodable audio ({short_error(err)})") from None
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
    # torch is imported here, not above: the stages that only list and check files (scan, ingest,
    # groundtruth) never pay its 4-5 s import.
    import torchaudio

    return torchaudio.transforms.Resample(orig_rate, rate)


def resample(wave: np.ndarray, orig_rate: int, rate: int) -> np.ndarray:
    """Resample a mono float32 signal (samples,) from `orig_rate` to `rate` Hz."""
    if orig_rate == rate:
        return wave.astype(np.float32, copy=False)
    import torch

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
        raise AudioError(path, f"decoding failed ({short_error(err)})") from None
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


def short_error(err: Exception) -> str:
    """The gist of a libsndfile error, without the file object's repr."""
    text = str(err).strip()
    text = text.splitlines()[-1] if text else type(err).__name__
    if text.startswith("Error opening") and ": " in text:
        text = text.split(": ", 1)[1]
    return text[:160]
