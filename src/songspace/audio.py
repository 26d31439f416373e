"""The only place that decodes audio: a path becomes mono float32 at a requested rate.

Decoding goes through soundfile (libsndfile: wav, flac, ogg/vorbis, opus, mp3). Sections are
read by seeking, so a one-hour file costs only the seconds asked for. Resampling is
torchaudio's band-limited sinc resampler.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
# Peak amplitude under which a file counts as silent (about -100 dBFS).
SILENCE_PEAK = 1e-5
WRITE_BLOCK_FRAMES = 1 << 16


class AudioError(Exception):
    """A file that cannot be used as audio; the message names the file and the problem."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


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


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return text[:200]


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
    try:
        with path.open("rb") as raw, sf.SoundFile(raw) as f:
            if start:
                f.seek(min(start, meta.frames))
            data = f.read(frames=frames, dtype="float32", always_2d=True)
    except Exception as err:
        raise AudioError(path, f"decoding failed ({_short(err)})") from None
    if data.size == 0:
        raise AudioError(path, "decoded to no samples (truncated?)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioError(path, "decoded samples are not finite")
    return resample(mono, meta.sample_rate, rate)


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
