"""The three scalers of the evaluation grid, fitted on training embeddings only.

`classes()` maps a name to its scikit-learn class (imported there: checking params needs only
`NAMES`, not scikit-learn's 2 s import). `fit_apply` fits a fresh scaler on the
training embeddings and applies that same fitted scaler to both sets, so no statistic of
the test set (its minimum, mean or spread) ever reaches the embeddings being scored.

* MinMaxScaler: (x - train min) / (train max - train min), per dimension; test values may
  fall outside [0, 1].
* StandardScaler: (x - train mean) / train std, per dimension (std 0 -> 1).
* Normalizer: each row divided by its own L2 norm; it has no fitted statistics.
"""
from __future__ import annotations

import numpy as np

NAMES: tuple[str, ...] = ("MinMaxScaler", "StandardScaler", "Normalizer")


def classes() -> dict[str, type]:
    """Each scaler's scikit-learn class, by name."""
    from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler

    return {"MinMaxScaler": MinMaxScaler, "StandardScaler": StandardScaler, "Normalizer": Normalizer}


def make(name: str):
    """A new, unfitted scaler `name`; an unknown name lists the valid ones."""
    try:
        return classes()[name]()
    except KeyError:
        raise KeyError(f"unknown scaler '{name}'; choose one of: {', '.join(NAMES)}") from None


def fit(name: str, train: np.ndarray):
    """Scaler `name` fitted on the training embeddings (n_train, d)."""
    train = np.asarray(train, dtype=np.float64)
    if train.ndim != 2 or len(train) == 0:
        raise ValueError(f"training embeddings: expected (n_train > 0, d), got {train.shape}")
    return make(name).fit(train)


def fit_apply(
    name: str, train: np.ndarray, *others: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Fit scaler `name` on `train` (n_train, d); return train and each of `others` scaled.

    All outputs are float64 with the input shapes. `others` (e.g. the test embeddings
    (n_test, d)) are only transformed, never fitted on.
    """
    scaler = fit(name, train)
    out = [scaler.transform(np.asarray(train, dtype=np.float64))]
    for x in others:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != out[0].shape[1]:
            raise ValueError(
                f"embeddings to scale: expected (n, {out[0].shape[1]}), got {x.shape}"
            )
        out.append(scaler.transform(x))
    return tuple(out)
