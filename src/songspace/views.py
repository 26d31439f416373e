"""Waveform-augmented views of the training tracks, computed once and cached as log-mel segments.

The `augment` stage draws `augment.views` versions of `augment.segments` sections of every
training track through `augment.augment_waveform` (pitch shift, time stretch, resampling) and
stores their log-mels (`views.npy`, `views.csv`); training reads them back (`load_views`).
Each (seed, track, view) has its own generator, so the views do not depend on the worker count.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from songspace import skipped as skipped_list
from songspace.config import AugmentParams, FeatureParams


def _views_one(job):
    """One track's views: (track_id, (views, segments, n_mels, frames) or None, offsets, reason)."""
    from songspace import audio, augment, features

    track_id, path, duration_s, fe, params, aug, views, seed = job
    try:
        if duration_s is None:
            duration_s = audio.info(path).duration_s
        # A little extra audio so that a faster time stretch still fills a segment.
        seconds = fe.segment_frames / fe.frames_per_second
        extra_s = seconds * aug.time_stretch.max_change * aug.time_stretch.p
        offsets = features.segment_offsets(duration_s, aug.segments, seconds)
        samples = int(round((seconds + extra_s) * fe.sample_rate))
        waves = [features.fit_length(audio.load(path, fe.sample_rate, offset_s=o, duration_s=seconds + extra_s),
                                     samples) for o in offsets]
    except audio.AudioError as err:
        return track_id, None, None, err.reason
    seg_samples = int(round(seconds * fe.sample_rate))
    specs = []
    for view in range(views):
        # One generator per (seed, track, view): the same views whatever the worker count.
        digest = int(hashlib.sha1(track_id.encode()).hexdigest()[:15], 16)
        rng = np.random.default_rng([seed, digest, view])
        out = [features.fit_length(augment.augment_waveform(w, fe.sample_rate, aug, rng), seg_samples)
               for w in waves]
        specs.append(features.fit_frames(fe.spectrogram(np.stack(out), params), fe.segment_frames))
    return track_id, np.stack(specs), offsets, None


def extract_views(tracks: pd.DataFrame, params: FeatureParams, aug: AugmentParams, views: int,
                  seed: int, frontend_name: str = "db", workers: int | None = None,
                  progress: bool = True) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Waveform-augmented views of `aug.segments` sections of each track, as log-mel segments.

    Every section gets `views` versions, each through `augment.augment_waveform` (pitch shift,
    time stretch, resampling with their probabilities). Returns
    `(views (n_tracks * views * aug.segments, n_mels, segment_frames) float32, index, skipped)`;
    the index has columns row, track_id, view, segment, offset_s.
    """
    if views <= 0 or not len(tracks):
        return no_views()
    from songspace import features  # torch and torchaudio: not for `no_views`

    fe = features.frontend(frontend_name, params)
    results = features.map_tracks(_views_one, tracks, (fe, params, aug, views, seed), "augmented views",
                                  workers, progress)
    specs, rows, skipped = [], [], []
    path_of = dict(zip(tracks["track_id"].astype(str), tracks["path"].astype(str)))
    for track_id, spec, offsets, reason in results:
        if reason is not None:
            skipped.append({"track_id": track_id, "path": path_of[track_id], "reason": skipped_list.UNUSABLE,
                            "detail": reason})
            continue
        for v in range(spec.shape[0]):
            rows += [{"track_id": track_id, "view": v, "segment": s, "offset_s": round(float(o), 4)}
                     for s, o in enumerate(offsets)]
        specs.append(spec.reshape(-1, *spec.shape[2:]))
    shape = (0, fe.n_mels, fe.segment_frames)
    array = np.concatenate(specs).astype(np.float32) if specs else np.zeros(shape, np.float32)
    index = pd.DataFrame(rows, columns=["track_id", "view", "segment", "offset_s"])
    index.insert(0, "row", np.arange(len(index)))
    return array, index, skipped_list.table(skipped)


def no_views() -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """`extract_views` with no views to draw or no tracks: empty, without importing torch (the
    `augment` stage reruns whenever a song is added, and draws no views by default)."""
    index = pd.DataFrame(columns=["row", "track_id", "view", "segment", "offset_s"])
    return np.zeros((0, 1, 1), np.float32), index, skipped_list.table([])


def save_views(out_dir: str | Path, array: np.ndarray, index: pd.DataFrame, skipped: pd.DataFrame) -> None:
    """Write `views.npy`, `views.csv` and `skipped.csv` (the tracks left out) under out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "views.npy", array)
    index.to_csv(out / "views.csv", index=False)
    skipped_list.write(skipped, out / skipped_list.FILE_NAME)


def load_views(out_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """`(views (n, n_mels, frames), index)`; empty when the folder holds none."""
    out = Path(out_dir)
    if not (out / "views.npy").exists():
        return no_views()[:2]
    array = np.load(out / "views.npy", mmap_mode="r")
    index = pd.read_csv(out / "views.csv", dtype={"track_id": str})
    if len(index) != len(array):
        from songspace import features

        raise features.FeatureError(f"{out}/views.csv has {len(index)} rows but views.npy {len(array)}")
    return array, index


PLOT_SECONDS = 6.0   # length of the clip the augmentation figure shows


def plot_clip(train: pd.DataFrame) -> pd.Series:
    """The training track the augmentation figure shows: the one with the smallest audio key, so
    that adding, renaming or moving other songs leaves the choice (and the figure) as it was."""
    keys = train["audio_key"] if "audio_key" in train.columns else train["track_id"]
    return train.loc[keys.astype(str).sort_values(kind="stable").index[0]]


def plot_stamp(clip: pd.Series, fe: FeatureParams, aug: AugmentParams, seed: int) -> str:
    """A digest of everything the augmentation figure of `clip` is drawn from: the clip's audio,
    the settings, the seed, the code and the libraries. The same stamp means the same figure."""
    import dataclasses

    import matplotlib

    from songspace import songstore

    settings = {"audio_key": str(clip.get("audio_key", clip["track_id"])), "seconds": PLOT_SECONDS,
                "features": dataclasses.asdict(fe), "augment": dataclasses.asdict(aug), "seed": seed,
                "matplotlib": matplotlib.__version__}
    code = songstore.code_files("plots", "augment", "specaugment", "frontends", "audio", "views")
    return songstore.Product(".", "augmentation-plot", settings, code).digest


def drawn_stamp(path: str | Path) -> str | None:
    """The stamp a figure was written with (`plots.plot_augmentations(stamp=...)`), or None when
    the file is missing, unreadable or has none."""
    from PIL import Image

    from songspace.songstore import STAMP_KEY

    try:  # PIL's UnidentifiedImageError is an OSError
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(STAMP_KEY)
    except OSError:
        return None
