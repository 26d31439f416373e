"""The segments of one audio file outside any library (a query), decoded within bounds.

`file_segments` gives, to float rounding, the same segments as the library path
(`features.track_spectrogram`, then `features.Spectra.segments`), but decodes only the audio it
needs: the length comes from the header, a file longer than a limit is refused before any
decoding, and memory grows with `max_segments`, not with the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from songspace import audio, features
from songspace.config import FeatureParams
from songspace.frontends import Frontend

QUERY_BLOCK_SECONDS = 60.0  # audio per block of a pass over a whole query file


class _FileFrames:
    """Frames of one file's whole-track spectrogram, each computed from only the audio it needs.

    `frames(first, count)` equals, to float rounding, columns `[first, first + count)` of the
    front end applied to the whole decoded track: the STFT is centred, so a frame needs
    `n_fft / 2` samples either side (the track's own reflect padding at its two ends), and
    `audio.load_samples` decodes exactly those samples. For `db` the frames are mel power (the
    dB floor depends on the whole track's loudest bin); for `musicnn` its log-mel.
    """

    def __init__(self, path: str | Path, fe: Frontend, params: FeatureParams, meta: audio.AudioInfo):
        self.path, self.fe, self.params, self.meta = path, fe, params, meta
        self.samples = audio.resampled_length(meta.frames, meta.sample_rate, fe.sample_rate)
        self.n_frames = self.samples // fe.hop_length + 1   # torch.stft, centred
        self.half = fe.n_fft(params) // 2
        self.peak = 0.0  # max |sample| of what was decoded

    def frames(self, first: int, count: int) -> torch.Tensor:
        """`(n_mels, count)` float32: whole-track frames `first .. first + count - 1`."""
        hop = self.fe.hop_length
        back = -(-self.half // hop)  # frames before `first` whose centres lie in its window
        # from a frame edge, and at least n_fft / 2 + 1 samples before the track's end: the
        # reflect padding there reads them
        lo = max(0, min(first - back, (self.samples - self.half - 1) // hop) * hop)
        hi = min(self.samples, (first + count - 1) * hop + self.half + 1)
        wave = audio.load_samples(self.path, self.fe.sample_rate, lo, hi, self.meta)
        self.peak = max(self.peak, float(np.max(np.abs(wave))) if wave.size else 0.0)
        x = torch.from_numpy(wave)
        with torch.no_grad():
            spec = self.fe.frame_values(x, self.params)
        skip = first - lo // hop  # frame j of the section is centred on sample lo + j * hop
        return spec[:, skip : skip + count]


def _frames_by_blocks(track: _FileFrames, starts: list[int], counts: list[int]
                      ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One pass over the whole track in blocks of `QUERY_BLOCK_SECONDS`: the segments' frames
    (`(n_mels, count)` each) and the loudest bin of the track. Memory: the segments and a block."""
    n, step = track.n_frames, max(1, int(QUERY_BLOCK_SECONDS * track.fe.frames_per_second))
    parts, loudest = [None] * len(starts), torch.tensor(0.0)
    for b in range(0, n, step):
        block = track.frames(b, min(step, n - b))
        loudest = torch.maximum(loudest, block.max())
        for i, (s, c) in enumerate(zip(starts, counts)):
            lo, hi = max(s, b), min(s + c, b + block.shape[1])
            if lo < hi:
                if parts[i] is None:
                    parts[i] = torch.empty(block.shape[0], c)
                parts[i][:, lo - s : hi - s] = block[:, lo - b : hi - b]
    return parts, loudest


def file_segments(path: str | Path, fe: Frontend, params: FeatureParams,
                  max_seconds: float | None = None) -> np.ndarray:
    """The segments of one audio file outside any library: `(n, n_mels, segment_frames)` float32.

    The same segments, to float rounding, as the library path (`track_spectrogram`, then
    `Spectra.segments`), decoded within bounds: the length comes from the header, and a file
    longer than `max_seconds` (None: no limit) is refused before any decoding
    (audio.AudioTooLong). Memory grows with `max_segments`, not with the file: when the
    segments cover little of the track only their own audio is decoded; otherwise, and always
    for `db` (its `top_db` floor is relative to the whole track's loudest bin), one pass in
    blocks decodes the track once, keeping only the segments' frames.
    """
    meta = audio.check_length(path, max_seconds, "serve.max_query_seconds")
    track = _FileFrames(path, fe, params, meta)
    n, win = track.n_frames, fe.segment_frames
    starts = [int(s) for s in features.segment_starts(n, fe, params)]
    counts = [min(win, n - s) for s in starts]
    loudest = None
    if fe.whole_track or sum(counts) >= n / 2:
        parts, loudest = _frames_by_blocks(track, starts, counts)
    else:
        parts = [track.frames(s, c) for s, c in zip(starts, counts)]
    if track.peak < audio.SILENCE_PEAK:
        raise audio.AudioError(path, "silent (no sample above -100 dBFS)")
    parts = [fe.finish(p, loudest, params) for p in parts]
    return np.stack([features.fit_frames(np.asarray(p), win) for p in parts]).astype(np.float32, copy=False)
