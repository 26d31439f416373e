"""Similar songs: the faiss index of a library's embeddings and the Python API over it.

* `forms` - each grid distance in faiss: stored vectors, flat / HNSW / brute-force search, recall;
* `store` - `SongIndex`: build, search, add, save and load;
* `files` - the index folder's files: their one writer and one reader (damaged files named);
* `folder` - the folder as a unit: lock, atomic save, recovery after a kill, the added-songs list;
* `errors` - the index's user errors;
* `pipeline` - the `index` stage: embed the pipeline's tracks and index them;
* `api` - `Library`, a model with its index: similar songs, adding songs, embedding files.

Names are looked up in their module on first use (`index.SongIndex`, `index.Library`), so
`import songspace` does not load faiss or torch.
"""
from __future__ import annotations

import importlib
from pathlib import Path

DEFAULT_INDEX_DIR = Path("data/index")
DEFAULT_MODEL_PATH = Path("data/models/best.pt")
DEFAULT_EVAL_JSON = Path("metrics/eval.json")

_HOMES = {
    "forms": ("FORMS", "BruteForce", "new_searcher", "describe_searcher", "index_vectors", "grid_distance",
              "recall_at_k", "rescore", "measure_recall", "RECALL_K", "RECALL_SAMPLE", "RECALL_RTOL"),
    "errors": ("LibraryError", "IndexNotFound", "StaleIndex", "UnknownTrack"),
    "store": ("SongIndex", "resolve_cell"),
    "files": ("FILES", "TRACK_TABLE", "FORMAT_VERSION", "read_files", "write_files"),
    "folder": ("index_lock", "added_list_path", "read_added", "sync_added", "recover"),
    "pipeline": ("build_from_pipeline",),
    "api": ("Library", "Neighbour", "load_model", "embed_files"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    if name in _HOMES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_INDEX_DIR", "DEFAULT_MODEL_PATH", "DEFAULT_EVAL_JSON", *_MODULE_OF]
