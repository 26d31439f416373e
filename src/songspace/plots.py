"""Figures and tidy CSVs of an evaluation, for people and for `dvc plots`.

Each function takes plain data (rows from `evaluate`, arrays, labels) and one output path,
writes one file and returns its path. Matplotlib runs on the Agg backend (no display).

* `grid_heatmap`: accuracy of each distance x scaler cell, CI in the cell, chance marked;
* `baseline_bars`: best cell of the model and of each baseline, CI error bars, chance line;
* `embedding_map`: test tracks in 2-D (t-SNE on the best cell's distances, or PCA), by label;
* `confusion_heatmap`: which label pairs the wrong answers put together;
* `write_grid_csv`, `write_baselines_csv`, `write_confusion_csv`: the same data, tidy;
* `plot_augmentations`: one clip's log-mel before and after each augmentation (the `augment`
  stage's figure).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from songspace.songstore import STAMP_KEY  # noqa: E402

if TYPE_CHECKING:
    from songspace.config import AugmentParams, FeatureParams

CHANCE = 1.0 / 3.0
DPI = 120
TSNE_MIN_TRACKS = 10  # below this t-SNE is meaningless: PCA instead
TSNE_MAX_TRACKS = 400  # exact t-SNE takes ~5 s at 300 tracks on 2 cores: PCA above this


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _write_csv(path: str | Path, header: list[str], rows: list[list]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _fmt(x) -> str:
    return "" if x is None else f"{x:.6g}"


# ---------------------------------------------------------------- tidy CSVs


def write_grid_csv(rows: list[dict], path: str | Path) -> Path:
    """The grid as tidy CSV: one row per cell with distance, scaler, cell, accuracy, CI, tie_rate."""
    return _write_csv(
        path,
        ["distance", "scaler", "cell", "accuracy", "ci_low", "ci_high", "tie_rate"],
        [
            [r["distance"], r["scaler"], f"{r['distance']}/{r['scaler']}", _fmt(r["accuracy"]),
             _fmt(r["ci_low"]), _fmt(r["ci_high"]), _fmt(r["tie_rate"])]
            for r in rows
        ],
    )


def write_baselines_csv(summary: dict[str, dict], path: str | Path) -> Path:
    """Best cell per embedding (model and baselines) as tidy CSV."""
    return _write_csv(
        path,
        ["embedding", "distance", "scaler", "accuracy", "ci_low", "ci_high"],
        [
            [name, s.get("distance") or "", s.get("scaler") or "", _fmt(s["accuracy"]),
             _fmt(s["ci_low"]), _fmt(s["ci_high"])]
            for name, s in summary.items()
        ],
    )


def write_confusion_csv(names: list[str], matrix: np.ndarray, path: str | Path) -> Path:
    """The confusion matrix as tidy CSV: label_a, label_b, wrong (expected count), a <= b."""
    n = len(names)
    return _write_csv(
        path,
        ["label_a", "label_b", "wrong"],
        [[names[i], names[j], _fmt(matrix[i, j])] for i in range(n) for j in range(i, n)],
    )


# ---------------------------------------------------------------- figures


def grid_heatmap(
    rows: list[dict], path: str | Path, best: tuple[str, str] | None = None,
    title: str = "Odd-one-out accuracy per distance and scaler",
) -> Path:
    """Heat-map of accuracy (distance rows x scaler columns) with the CI in each cell.

    Colours diverge at chance (1/3, white): red below, blue above. `best` (distance,
    scaler) gets a black frame.
    """
    dists = list(dict.fromkeys(r["distance"] for r in rows))
    scls = list(dict.fromkeys(r["scaler"] for r in rows))
    acc = np.full((len(dists), len(scls)), np.nan)
    text = [["" for _ in scls] for _ in dists]
    for r in rows:
        i, j = dists.index(r["distance"]), scls.index(r["scaler"])
        acc[i, j] = r["accuracy"]
        text[i][j] = f"{r['accuracy']:.3f}\n[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    fig, ax = plt.subplots(figsize=(2.3 * len(scls) + 2.5, 0.62 * len(dists) + 1.8))
    norm = TwoSlopeNorm(vcenter=CHANCE, vmin=min(0.0, np.nanmin(acc)), vmax=max(1.0, np.nanmax(acc)))
    im = ax.imshow(acc, cmap="RdBu", norm=norm, aspect="auto")
    for i in range(len(dists)):
        for j in range(len(scls)):
            dark = abs(norm(acc[i, j]) - 0.5) > 0.3
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    if best is not None and best[0] in dists and best[1] in scls:
        ax.add_patch(Rectangle((scls.index(best[1]) - 0.5, dists.index(best[0]) - 0.5), 1, 1,
                               fill=False, lw=2.5, edgecolor="black"))
    ax.set_xticks(range(len(scls)), scls)
    ax.set_yticks(range(len(dists)), dists)
    ax.set_xlabel("scaler (fitted on training embeddings)")
    ax.set_ylabel("distance")
    n = rows[0]["n"] if rows else 0
    ax.set_title(f"{title}\n{n} quartets; cell: accuracy [95% bootstrap CI]; frame: best")
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("accuracy (white = chance, 1/3)")
    cbar.ax.axhline(CHANCE, color="black", lw=1.5)
    return _save(fig, path)


def baseline_bars(
    summary: dict[str, dict], path: str | Path,
    title: str = "Learned embedding vs baselines (best cell of each)",
) -> Path:
    """Bars of accuracy with CI error bars for each embedding, chance as a dashed line.

    summary: name -> {accuracy, ci_low, ci_high, distance, scaler}.
    """
    names = list(summary)
    acc = np.array([summary[n]["accuracy"] for n in names])
    lo = np.array([summary[n]["ci_low"] for n in names])
    hi = np.array([summary[n]["ci_high"] for n in names])
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2.5, 4.5))
    colours = ["tab:blue" if n == "model" else "tab:gray" for n in names]
    ax.bar(range(len(names)), acc, color=colours,
           yerr=np.vstack([acc - lo, hi - acc]), capsize=5, ecolor="black")
    ax.axhline(CHANCE, color="tab:red", ls="--", lw=1.5, label="chance (1/3)")
    for i, n in enumerate(names):
        cell = summary[n].get("distance")
        label = f"{acc[i]:.3f}" + (f"\n{cell}/{summary[n].get('scaler')}" if cell else "")
        ax.text(i, hi[i] + 0.015, label, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylim(0, min(1.15, max(1.0, float(hi.max()) + 0.15)))
    ax.set_ylabel("odd-one-out accuracy")
    ax.set_xlabel("embedding")
    ax.set_title(f"{title}\nerror bars: 95% bootstrap CI over quartets")
    ax.legend(loc="upper right")
    return _save(fig, path)


def project_2d(emb: np.ndarray, dist_matrix: np.ndarray | None, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates (n, 2) of tracks, and the method's name.

    t-SNE (exact gradient, seeded) on the precomputed distances (n, n), so the map shows
    the geometry the evaluation scores, when given and TSNE_MIN_TRACKS <= n <=
    TSNE_MAX_TRACKS; otherwise PCA of the embeddings emb (n, d) (t-SNE's cost grows as n^2
    per iteration; below ~10 tracks it is meaningless).
    """
    n = len(emb)
    if dist_matrix is not None and TSNE_MIN_TRACKS <= n <= TSNE_MAX_TRACKS:
        from sklearn.manifold import TSNE

        d = np.array(dist_matrix, dtype=np.float64)
        np.fill_diagonal(d, 0.0)  # kulsinski's self-distance is not 0
        d = np.maximum((d + d.T) / 2, 0.0)
        tsne = TSNE(n_components=2, metric="precomputed", init="random", method="exact",
                    perplexity=float(min(30.0, (n - 1) / 3)), random_state=seed)
        return tsne.fit_transform(d), "t-SNE"
    from sklearn.decomposition import PCA

    coords = np.zeros((n, 2))
    k = min(2, n, emb.shape[1])
    if n > 1:
        coords[:, :k] = PCA(n_components=k, random_state=seed).fit_transform(emb)
    return coords, "PCA"


def embedding_map(
    emb: np.ndarray, labels, path: str | Path, dist_matrix: np.ndarray | None = None,
    seed: int = 0, what: str = "",
) -> Path:
    """Scatter of the test tracks (n, d) in 2-D, coloured by label (see `project_2d`)."""
    labels = np.asarray(labels)
    coords, method = project_2d(np.asarray(emb, dtype=np.float64), dist_matrix, seed)
    names = np.unique(labels)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for k, name in enumerate(names):
        sel = labels == name
        ax.scatter(coords[sel, 0], coords[sel, 1], s=28, color=cmap(k % cmap.N),
                   label=f"{name} ({sel.sum()})", alpha=0.85, edgecolors="none")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    source = f"distances: {what}" if method == "t-SNE" else f"embeddings: {what}"
    ax.set_title(f"Test tracks by label\n{method} of the {source}")
    ax.legend(title="label (tracks)", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return _save(fig, path)


def confusion_heatmap(
    names: list[str], matrix: np.ndarray, path: str | Path, what: str = "",
) -> Path:
    """Heat-map of the label pairs that wrong answers judged closest (symmetric matrix)."""
    m = np.asarray(matrix, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(0.7 * len(names) + 3, 0.6 * len(names) + 2.5))
    im = ax.imshow(m, cmap="Reds", vmin=0)
    top = m.max() if m.size else 0
    for i in range(len(names)):
        for j in range(len(names)):
            if m[i, j] > 0:
                ax.text(j, i, f"{m[i, j]:.3g}",
                        ha="center", va="center", fontsize=8,
                        color="white" if m[i, j] > 0.6 * top else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("label of one song of the pair judged closest")
    ax.set_ylabel("label of the other song")
    wrong = float(np.triu(m).sum())
    ax.set_title(f"Wrong answers: labels of the pair judged closest{f' ({what})' if what else ''}\n"
                 f"{wrong:.1f} wrong quartets in all (ties count by their chance)")
    fig.colorbar(im, ax=ax, label="wrong answers (expected count)")
    return _save(fig, path)


# ---------------------------------------------------------------- the augmentations


def _logmel(wave: np.ndarray, fp: FeatureParams) -> np.ndarray:
    """The `db` front end's log-mel: `(samples,)` -> `(n_mels, frames)`."""
    from songspace import frontends

    return frontends.logmel(np.ascontiguousarray(wave, dtype=np.float32), fp).numpy()


def _mel_centres_hz(fp: FeatureParams) -> np.ndarray:
    """Centre frequency (Hz) of each mel bin, HTK mel scale as torchaudio's default."""
    mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    points = np.linspace(mel(fp.f_min), mel(fp.f_max), fp.n_mels + 2)[1:-1]
    return 700.0 * (10.0 ** (points / 2595.0) - 1.0)


def plot_augmentations(
    wave: np.ndarray,
    rate: int,
    feature_params: FeatureParams,
    params: AugmentParams,
    out_png: str | Path,
    seed: int = 0,
    stamp: str | None = None,
) -> Path:
    """One clip's log-mel before and after each augmentation, each at its strongest setting.

    wave: mono float32 `(samples,)` at `rate` Hz (resampled to features.sample_rate if needed).
    One panel per augmentation, titled with its strength, shared dB colour scale, time in
    seconds, frequency as mel bins labelled in Hz. Spectrogram-level randomness (noise, mask
    positions) comes from `seed`. Writes and returns `out_png`; `stamp`, if given, is kept in
    the PNG's text (`views.drawn_stamp` reads it back) to say what the figure was drawn from.
    """
    from songspace import augment as A

    A.validate(params)
    x = _clip_at(wave, rate, feature_params.sample_rate)
    panels = _augmentation_panels(x, feature_params, params, seed)
    stretch = 1.0 + params.time_stretch.max_change
    return _draw_augmentations(panels, x.size, feature_params, stretch, seed, out_png, stamp)


def _clip_at(wave: np.ndarray, rate: int, sr: int) -> np.ndarray:
    """A mono clip at `rate` Hz as float32 at `sr` Hz."""
    import math

    import torch
    import torchaudio.functional as AF

    from songspace import augment as A

    x = A.as_wave(wave).numpy()
    if rate != sr:
        g = math.gcd(int(rate), int(sr))
        x = AF.resample(torch.from_numpy(x), rate // g, sr // g).numpy()
    return x


def _augmentation_panels(x: np.ndarray, fp: FeatureParams, params: AugmentParams, seed: int) -> list:
    """The figure's panels: (title, log-mel (n_mels, frames), masked bands to outline as
    (axis, start, stop)), the original first, then each augmentation at its strongest."""
    import torch

    from songspace import augment as A

    sr = fp.sample_rate
    base = torch.from_numpy(_logmel(x, fp))
    gen = torch.Generator().manual_seed(seed)
    ps, ts, rs = params.pitch_shift, params.time_stretch, params.resample
    nz, rm = params.noise, params.random_mask
    low_rate = int(A.low_rates(sr, rs.min_rate)[0])
    stretch = 1.0 + ts.max_change
    return [
        ("original", base, []),
        (f"pitch shift +{ps.max_semitones:g} semitones",
         _logmel(A.pitch_shift(x, sr, ps.max_semitones), fp), []),
        (f"time stretch rate {stretch:g} (faster)", _logmel(A.time_stretch(x, stretch, sr), fp), []),
        (f"resample via {low_rate} Hz (band limit {low_rate / 2000:g} kHz)",
         _logmel(A.resample_band_limit(x, sr, low_rate), fp), []),
        (f"noise, strength {nz.strength:g} x spectrogram std", A.noise(base, nz.strength, gen), []),
        (f"random mask, p = {rm.p:g} per bin", A.random_mask(base, rm.p, gen), []),
        *_mask_panels(base, params, gen),
    ]


def _mask_panels(base, params: AugmentParams, gen) -> list:
    """SpecAugment masks at their widest (training draws widths in [0, max]), outlined because
    a band at the mean hides among mid-level bins."""
    import torch

    from songspace import specaugment

    tm, fm = params.time_mask, params.freq_mask
    panels = []
    for axis, name, unit, width, count in ((2, "time", "frames", tm.max_frames, tm.count),
                                            (1, "freq", "mel bins", fm.max_bins, fm.count)):
        size = base.shape[axis - 1]
        width = min(width, size)
        starts = (torch.rand((1, count), generator=gen) * (size - width + 1)).long()
        masked = specaugment.fill_bands(base[None], starts, torch.full_like(starts, width), axis)[0]
        outline = [(axis, int(a), int(a) + width) for a in starts[0]]
        panels.append((f"{name} mask, {count} x {width} {unit} (max; outlined)", masked, outline))
    return panels


def _draw_augmentations(panels: list, samples: int, fp: FeatureParams, stretch: float, seed: int,
                        out_png: str | Path, stamp: str | None = None) -> Path:
    """The panels in a 4 x 2 grid on the original's dB scale; writes and returns `out_png`."""
    base = panels[0][1]
    vmin, vmax = float(base.min()), float(base.max())
    sr = fp.sample_rate
    seconds = samples / sr
    hop_s = fp.hop_length / sr
    centres = _mel_centres_hz(fp)
    ticks = np.linspace(0, fp.n_mels - 1, 5).round().astype(int)

    fig, axes = plt.subplots(4, 2, figsize=(13, 11), sharex=True, sharey=True, layout="constrained")
    for ax, (title, spec, outline) in zip(axes.flat, panels):
        spec = np.asarray(spec)
        for axis, lo, hi in outline:
            span = ax.axvspan(lo * hop_s, hi * hop_s) if axis == 2 else ax.axhspan(lo - 0.5, hi - 0.5)
            span.set(fill=False, edgecolor="cyan", linestyle="--", linewidth=1.2)
        image = ax.imshow(
            spec, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax,
            extent=(0, spec.shape[1] * hop_s, -0.5, fp.n_mels - 0.5), interpolation="nearest",
        )
        ax.set_title(title, fontsize=11)
        ax.set_xlim(0, max(seconds, seconds / stretch) + hop_s)
        ax.set_yticks(ticks, [f"{centres[t]:.0f} Hz (bin {t})" for t in ticks], fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    for ax in axes[:, 0]:
        ax.set_ylabel("mel bin (centre frequency)")
    fig.colorbar(image, ax=axes, shrink=0.6, label="log-mel power (dB)")
    fig.suptitle(
        f"Augmentations at their strongest settings ({seconds:.1f} s clip, {sr} Hz, seed {seed})",
        fontsize=13,
    )
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100, metadata={STAMP_KEY: stamp} if stamp else None)
    plt.close(fig)
    return out_png
