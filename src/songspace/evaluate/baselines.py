"""Baselines scored through the same grid as the model: hand-crafted log-mel and MFCC
statistics, and the pretrained musicnn embeddings (no training)."""
from __future__ import annotations

import numpy as np
from scipy.fft import dct

N_MFCC = 20

def handcrafted_features(logmel, segment_track, n_tracks: int | None = None) -> dict[str, np.ndarray]:
    """Per-track summary features of log-mel segments, the hand-crafted baselines.

    logmel: (n_segments, n_mels, frames) log-mel segments; segment_track: (n_segments,)
    the track each segment belongs to, in [0, n_tracks). Returns
    * "logmel_stats": (n_tracks, 2 * n_mels), mean then std of each mel band over all
      frames of all the track's segments;
    * "mfcc_stats": (n_tracks, 2 * N_MFCC), the same for MFCCs: the orthonormal DCT-II of
      the log-mel over the mel axis, first N_MFCC = 20 coefficients per frame (all n_mels
      when there are fewer), as librosa.feature.mfcc computes them from a log-mel.
    Standard deviations are population (ddof=0) over frames.
    """
    logmel = np.asarray(logmel, dtype=np.float64)
    seg = np.asarray(segment_track)
    if logmel.ndim != 3:
        raise ValueError(f"logmel: expected (n_segments, n_mels, frames), got shape {logmel.shape}")
    if seg.shape != (len(logmel),) or not np.issubdtype(seg.dtype, np.integer):
        raise ValueError(f"segment_track: expected ({len(logmel)},) integers, got {seg.shape} {seg.dtype}")
    if len(seg) and seg.min() < 0:
        raise ValueError("segment_track: negative track index")
    n_tracks = int(seg.max()) + 1 if n_tracks is None else n_tracks
    if len(seg) and seg.max() >= n_tracks:
        raise ValueError(f"segment_track: index {seg.max()} outside the {n_tracks} tracks")
    frames_per_track = np.bincount(seg, minlength=n_tracks) * logmel.shape[2]
    empty = np.flatnonzero(frames_per_track == 0)
    if len(empty):
        raise ValueError(f"{len(empty)} track(s) have no segments (first: track {empty[0]})")
    n_mfcc = min(N_MFCC, logmel.shape[1])
    mfcc = dct(logmel, type=2, axis=1, norm="ortho")[:, :n_mfcc]

    def stats(x: np.ndarray) -> np.ndarray:
        n = frames_per_track[:, None]
        total = np.zeros((n_tracks, x.shape[1]))
        np.add.at(total, seg, x.sum(axis=2))
        mean = total / n
        sq = np.zeros_like(total)  # two passes: sum of squared deviations, no cancellation
        np.add.at(sq, seg, ((x - mean[seg][:, :, None]) ** 2).sum(axis=2))
        return np.concatenate([mean, np.sqrt(sq / n)], axis=1)

    return {"logmel_stats": stats(logmel), "mfcc_stats": stats(mfcc)}


def handcrafted_baselines(
    logmel, segment_track, train_tracks, test_tracks
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`handcrafted_features` split into (train (n_train, f), test (n_test, f)) per name.

    logmel (n_segments, n_mels, frames) and segment_track (n_segments,) as in
    `handcrafted_features`; train_tracks, test_tracks: track indices (as in segment_track)
    of the training and test tracks. Segments of other tracks are ignored.
    """
    seg = np.asarray(segment_track)
    train_tracks, test_tracks = np.asarray(train_tracks), np.asarray(test_tracks)
    used = np.unique(np.concatenate([train_tracks, test_tracks]))
    missing = np.setdiff1d(used, seg)
    if len(missing):
        raise ValueError(f"{len(missing)} evaluated track(s) have no segments (first: track {missing[0]})")
    keep = np.isin(seg, used)
    feats = handcrafted_features(
        np.asarray(logmel)[keep], np.searchsorted(used, seg[keep]), n_tracks=len(used)
    )
    rows_train, rows_test = np.searchsorted(used, train_tracks), np.searchsorted(used, test_tracks)
    return {k: (v[rows_train], v[rows_test]) for k, v in feats.items()}


PRETRAINED_BASELINES = {"musicnn_msd": "MSD_musicnn", "musicnn_mtt": "MTT_musicnn"}


def pretrained_baselines(spectra, train_tracks: list[str], test_tracks: list[str],
                         batch_size: int = 64, progress: bool = True,
                         known: dict[str, np.ndarray] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The pretrained musicnn embeddings, no training: the 200-d penultimate layer, mean over each
    track's segments, for the MSD and MTT checkpoints: name -> (train (n_train, 200), test).

    spectra: `features.Spectra` of the `musicnn` front end. known: checkpoint -> its penultimate
    outputs already computed for `spectra.segments(train_tracks + test_tracks)`, row for row
    (that checkpoint is then not run again).
    """
    from songspace import embed
    from songspace.models import musicnn

    windows, index = spectra.segments(list(train_tracks) + list(test_tracks))
    out = {}
    for name, checkpoint in PRETRAINED_BASELINES.items():
        emb = (known or {}).get(checkpoint)
        if emb is None:
            net = musicnn.Penultimate(musicnn.load_pretrained(checkpoint)).eval()
            emb = embed.embed_segments(net, windows, batch_size=batch_size, progress=progress)
        elif len(emb) != len(index):
            raise ValueError(f"known {checkpoint} outputs: {len(emb)} rows for {len(index)} segments")
        out[name] = (embed.track_means(emb, index, list(train_tracks)),
                     embed.track_means(emb, index, list(test_tracks)))
    return out
