#!/usr/bin/env python3
"""Scan built development libraries for near-identical recordings (same tune, other file).

    python3 near_dupes.py OUTDIR [OUTDIR ...]

reads each OUTDIR/tracks.csv and prints every pair of tracks, within and across the libraries
given, whose spectral shape matches at some time lag with a score >= 0.4 (`*` marks pairs of
two labels). It decodes the first 240 s of each track once; about 100 s for 159 tracks and
5 min for 300 on 2 cores. Needs numpy and soundfile (the build's python has both).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys

THRESHOLD = 0.4  # unrelated tracks score ~0.05; one recording in two encodings > 0.8
SECONDS = 240.0  # of each track, from its start
HOP_SECONDS = 0.1  # one spectral frame per hop
MIN_OVERLAP_SECONDS = 30.0


def band_frames(path: str, seconds: float = SECONDS, hop_s: float = HOP_SECONDS):
    """(frames, 48) float32: log band energies (60-8000 Hz) with loudness and mean spectrum removed.

    Each frame is normalised to unit length, so a dot product of two frames is a cosine;
    the quietest 10% of frames are zeroed (silence would match silence).
    """
    import numpy as np
    import soundfile as sf

    with sf.SoundFile(path) as f:
        sr = f.samplerate
        x = f.read(frames=int(seconds * sr), dtype="float32", always_2d=True).mean(1)
    hop = int(hop_s * sr)
    n = len(x) // hop
    spec = np.abs(np.fft.rfft(x[: n * hop].reshape(n, hop) * np.hanning(hop), axis=1))
    idx = np.searchsorted(np.fft.rfftfreq(hop, 1 / sr), np.geomspace(60, 8000, 49))
    bands = np.log(np.stack([spec[:, a:max(b, a + 1)].sum(1) for a, b in zip(idx[:-1], idx[1:])], 1) + 1e-3)
    loud = bands.mean(1)
    b = bands - loud[:, None]
    b -= b.mean(0)
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-6
    b[loud < np.percentile(loud, 10)] = 0
    return b.astype(np.float32)


def read_tracks(outdirs: list[str]) -> dict[str, tuple[str, str]]:
    """{library path: (audio file, label)} over the libraries; a path in two of them is an error."""
    tracks = {}
    for outdir in outdirs:
        with open(os.path.join(outdir, "tracks.csv"), newline="") as f:
            for r in csv.DictReader(f):
                if r["path"] in tracks:
                    raise ValueError(f"{outdir}/tracks.csv: {r['path']} is also in another library given")
                tracks[r["path"]] = (os.path.join(outdir, "library", r["path"]), r["label"])
    return tracks


def near_duplicates(outdirs: list[str], threshold: float = THRESHOLD, hop_s: float = HOP_SECONDS):
    """[(score, lag in s, path a, path b, across labels?)], best first, for pairs scoring >= threshold.

    The score at a lag is the mean frame cosine over the overlap, which must be >= 30 s and
    >= 30% of the shorter track; the best lag of each pair counts.
    """
    import numpy as np

    tracks = read_tracks(outdirs)
    feats = {k: band_frames(path, hop_s=hop_s) for k, (path, _) in tracks.items()}
    size = 2 * max(len(v) for v in feats.values())
    ffts = {k: np.fft.rfft(np.pad(v, ((0, size - len(v)), (0, 0))), axis=0) for k, v in feats.items()}
    lags = np.arange(size)
    lags = np.where(lags > size // 2, lags - size, lags)
    found = []
    for a, b in itertools.combinations(sorted(feats), 2):
        # summing the bands before the inverse FFT is the same as after (it is linear)
        cc = np.fft.irfft((ffts[a] * np.conj(ffts[b])).sum(1), n=size)
        la, lb = len(feats[a]), len(feats[b])
        overlap = np.minimum(la, lb + lags) - np.maximum(0, lags)
        need = max(MIN_OVERLAP_SECONDS / hop_s, 0.3 * min(la, lb))
        score = np.where(overlap >= need, cc / np.maximum(overlap, 1), -1.0)
        k = int(np.argmax(score))
        if score[k] >= threshold:
            found.append((float(score[k]), float(lags[k] * hop_s), a, b, tracks[a][1] != tracks[b][1]))
    return sorted(found, reverse=True)


def print_pairs(found) -> None:
    print(f"near-identical pairs (score >= {THRESHOLD}; * = across labels):")
    for score, lag, a, b, cross in found:
        print(f"  {'*' if cross else ' '} {score:.3f} lag {lag:+7.1f} s  {a}  ~  {b}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdirs", nargs="+", help="built library folders (each holds tracks.csv and library/)")
    args = ap.parse_args(argv)
    print_pairs(near_duplicates([os.path.abspath(d) for d in args.outdirs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
