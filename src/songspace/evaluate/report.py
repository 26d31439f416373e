"""The whole evaluation, and the one reader and writer of its file, metrics/eval.json.

`run` -> the content of eval.json; `write_json` / `read_json` write and read it;
`best_cell` says which (distance, scaler) it chose; `evaluate_and_plot` writes it and the plots.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from songspace import distances, scalers
from songspace.config import EvaluateParams
from songspace.errors import UserError
from songspace.evaluate.labels import confusion_counts, retrieval
from songspace.evaluate.scores import (CELLS, CHANCE, _cell_name, _embeddings, _grid_rows, bootstrap_means,
                                       cell_scores, check_quartets, headline, percentile_ci,
                                       quartet_pair_distances)



def _best_summary(rows: list[dict]) -> dict:
    best = max(range(len(rows)), key=lambda c: (rows[c]["accuracy"], -c))
    r = rows[best]
    return {k: r[k] for k in ("distance", "scaler", "accuracy", "ci_low", "ci_high", "tie_rate")}


def _checked_inputs(model_test, baselines, quartets, odd, test_labels):
    """(labels (n_test,), quartets, odd) once the inputs agree: ValueError naming what does not."""
    for reserved in ("model", "chance"):
        if reserved in baselines:
            raise ValueError(f"baselines: the name '{reserved}' is reserved; rename that baseline")
    test = _embeddings(model_test, "model test embeddings")
    labels = np.asarray(test_labels)
    if labels.shape != (len(test),):
        raise ValueError(f"test_labels: expected ({len(test)},), got shape {labels.shape}")
    quartets, odd = check_quartets(quartets, odd, len(test))
    for name, (_, b_test) in baselines.items():
        if len(b_test) != len(test):
            raise ValueError(f"baseline '{name}': {len(b_test)} test rows, the model has {len(test)}")
    return labels, quartets, odd


def _margin_over(name: str, head: dict, summaries: dict, means: np.ndarray, col: dict[str, slice],
                 best_col: int, confidence: float) -> dict:
    """The model's best cell minus baseline `name`'s best cell, with its paired interval.

    `means`: (bootstrap, cells) bootstrap means, each set's cells at `col[set]`, chance last."""
    if name == "chance":
        other = means.shape[1] - 1
    else:
        other = col[name].start + CELLS.index((summaries[name]["distance"], summaries[name]["scaler"]))
    lo, hi = percentile_ci(means[:, col["model"].start + best_col] - means[:, other], confidence)
    return {"margin": head["accuracy"] - summaries[name]["accuracy"], "ci_low": float(lo),
            "ci_high": float(hi), "significant": bool(lo > 0)}


def _evaluate(model_train, model_test, baselines, quartets, odd, test_labels, params, seed):
    """`run`'s result plus what the plots need."""
    labels, quartets, odd = _checked_inputs(model_test, baselines, quartets, odd, test_labels)
    p, n_cells = params.minkowski_p, len(CELLS)
    sets = {"model": (model_train, model_test), **baselines}
    scores, ties = {}, {}
    for name, (tr, te) in tqdm(sets.items(), desc="evaluation grid", unit="embedding"):
        scores[name], ties[name] = cell_scores(tr, te, quartets, odd, p)
    names = list(sets)
    all_scores = np.hstack([scores[n] for n in names] + [np.full((len(odd), 1), CHANCE)])
    means = bootstrap_means(all_scores, params.bootstrap, seed)
    col = {n: slice(i * n_cells, (i + 1) * n_cells) for i, n in enumerate(names)}
    grids = {n: _grid_rows(scores[n], ties[n], means[:, col[n]], params.confidence) for n in names}

    head = headline(scores["model"], means[:, col["model"]], params.confidence)
    best_col = CELLS.index((head["best_distance"], head["best_scaler"]))
    head["tie_rate"] = grids["model"][best_col]["tie_rate"]
    summaries = {n: _best_summary(grids[n]) for n in names[1:]}
    summaries["chance"] = {
        "distance": None, "scaler": None, "accuracy": CHANCE, "ci_low": CHANCE,
        "ci_high": CHANCE, "tie_rate": 0.0,
    }
    margins = {n: _margin_over(n, head, summaries, means, col, best_col, params.confidence)
               for n in summaries}
    base = max(summaries, key=lambda n: summaries[n]["accuracy"])
    head.update(
        best_baseline=base,
        best_baseline_accuracy=summaries[base]["accuracy"],
        margin_over_baseline=margins[base]["margin"],
        margin_ci_low=margins[base]["ci_low"],
        margin_ci_high=margins[base]["ci_high"],
        margin_significant=margins[base]["significant"],
        n_quartets=int(len(odd)),
        bootstrap=int(params.bootstrap),
        confidence=float(params.confidence),
    )
    retr = retrieval(model_train, model_test, labels, head["best_distance"], head["best_scaler"], p)
    result = {
        "headline": head,
        "grid": grids["model"],
        "baselines": summaries,
        "margins": margins,  # the model's best cell over each baseline's best cell, paired
        "baseline_grids": {n: grids[n] for n in names[1:]},
        "retrieval": retr,
        "n_quartets": int(len(odd)),
    }
    return result, {"quartets": quartets, "odd": odd, "labels": labels}


Baselines = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (train (n_train, f), test (n_test, f))


def run(model_train, model_test, baselines: Baselines, quartets, odd, test_labels,
        params: EvaluateParams, seed: int) -> dict:
    """The whole evaluation: the content of metrics/eval.json.

    model_train (n_train, d) and model_test (n_test, d): the learned embeddings of the
    training and test tracks. baselines: name -> (train (n_train, f), test (n_test, f)),
    e.g. a random-weights network and `handcrafted_baselines`; each goes through the same
    grid and the same quartets (q, 3) / odd (q,); chance (exactly 1/3) is added.
    test_labels (n_test,): labels for retrieval. Returns
    {"headline": flat scalars (best cell, CI, runner-up test, chance test, margin over the
    best baseline with its paired CI), "grid": 27 rows, "baselines": best cell per
    baseline, "baseline_grids": 27 rows per baseline, "retrieval": {...}, "n_quartets": q}.
    The best cell is chosen on these same quartets, for the model and each baseline alike,
    so its accuracy is a slightly optimistic estimate for all of them.
    """
    return _evaluate(model_train, model_test, baselines, quartets, odd, test_labels, params, seed)[0]


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(result: dict, path: str | Path) -> Path:
    """Write an evaluation result as indented JSON (NaN -> null), creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(result), indent=2, allow_nan=False) + "\n")
    return path


class EvalJsonError(UserError, FileNotFoundError):
    """metrics/eval.json is missing or not readable JSON."""


def read_json(path: str | Path) -> dict:
    """An evaluation result written by `write_json`.

    Raises EvalJsonError naming the file when it does not exist or is not readable JSON.
    """
    path = Path(path)
    if not path.exists():
        raise EvalJsonError(f"{path}: no evaluation yet (run `dvc repro evaluate`)")
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EvalJsonError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(result, dict):
        raise EvalJsonError(f"{path}: not an evaluation result (expected a JSON object)")
    return result


def best_cell(result: dict) -> tuple[str | None, str | None]:
    """The (distance, scaler) an evaluation chose; (None, None) when its headline names none.

    Reads the headline's best_distance / best_scaler, or distance / scaler in older files.
    """
    head = result.get("headline") or {}
    return head.get("best_distance", head.get("distance")), head.get("best_scaler", head.get("scaler"))


def evaluate_and_plot(model_train, model_test, baselines: Baselines, quartets, odd, test_labels,
                      params: EvaluateParams, seed: int, metrics_path: str | Path = "metrics/eval.json",
                      plots_dir: str | Path = "plots") -> dict:
    """`run`, then write metrics_path (JSON) and the plots; returns the result.

    Writes in plots_dir: grid.png (accuracy per cell), grid.csv (the same, tidy, for
    `dvc plots`), baselines.png and baselines.csv (best cell of the model and of each
    baseline), embedding_map.png (test tracks in 2-D by label, under the best cell),
    confusion.png and confusion.csv (label pairs the wrong answers put together).
    """
    from songspace import plots

    result, det = _evaluate(model_train, model_test, baselines, quartets, odd, test_labels, params, seed)
    write_json(result, metrics_path)
    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    head = result["headline"]
    best = (head["best_distance"], head["best_scaler"])

    plots.write_grid_csv(result["grid"], plots_dir / "grid.csv")
    plots.grid_heatmap(result["grid"], plots_dir / "grid.png", best=best)
    summary = {"model": {k: head[k] for k in ("accuracy", "ci_low", "ci_high")}}
    summary["model"].update(distance=best[0], scaler=best[1])
    summary.update(result["baselines"])
    plots.write_baselines_csv(summary, plots_dir / "baselines.csv")
    plots.baseline_bars(summary, plots_dir / "baselines.png")

    tr, te = scalers.fit_apply(best[1], _embeddings(model_train, "training embeddings"),
                               _embeddings(model_test, "test embeddings"))
    ctx = distances.fit_context(best[0], tr, params.minkowski_p)
    dist_matrix = None
    if len(te) <= plots.TSNE_MAX_TRACKS:
        dist_matrix = distances.pairwise(best[0], te, te, **ctx)
    plots.embedding_map(
        te, det["labels"], plots_dir / "embedding_map.png", dist_matrix=dist_matrix,
        seed=seed, what=f"{best[0]} after {best[1]}",
    )
    pair_dist = quartet_pair_distances(te, det["quartets"], best[0], ctx)
    names, matrix = confusion_counts(pair_dist, det["quartets"], det["odd"], det["labels"])
    plots.write_confusion_csv(names, matrix, plots_dir / "confusion.csv")
    plots.confusion_heatmap(names, matrix, plots_dir / "confusion.png", what=_cell_name(best))
    return result
