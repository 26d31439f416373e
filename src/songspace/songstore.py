"""Per-song results, computed once: a content-addressed folder beside DVC's cache.

Everything derived from one audio file (its log-mels, the frozen trunk's outputs for its
segments, its baseline statistics) is stored under the song's key (the hash of its audio,
`ingest`'s `audio_key` column) and a digest of exactly what shapes it: the settings, the
source files of the code that computes it, and the versions of the libraries doing the
arithmetic. A product whose digest changes is a new folder; nothing already stored is ever
rewritten. Moving, renaming or re-tagging a file keeps its key, so nothing is recomputed.

Layout: `<root>/<product>-<digest[:16]>/<key[:2]>/<key>.npz`, with `about.json` in each product
folder saying what its digest stands for. Writes are atomic (a temporary file, then a rename),
so a killed run leaves either the whole entry or none.

The stage outputs built from it (`data/features`) stay ordinary DVC outputs, reproducible from
their inputs alone: the store only saves work, it is never an input. Deleting it costs time,
not results.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from songspace.errors import UserError

SRC = Path(__file__).resolve().parent
STAMP_KEY = "songspace-drawn-from"  # a figure's PNG text field: the digest of what it is drawn from


class StoreError(UserError):
    """A stored entry that cannot be read back."""


@lru_cache(maxsize=64)
def file_digest(path: str) -> str:
    """sha1 of a file's bytes (source code, pretrained weights), once per process."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def code_files(*modules: str) -> tuple[str, ...]:
    """Source files of songspace modules by dotted name relative to the package ('features',
    'models.musicnn'), as paths for `Product`'s digest."""
    return tuple(str(SRC.joinpath(*m.split(".")).with_suffix(".py")) for m in modules)


@lru_cache(maxsize=None)
def package_version(package: str) -> str:
    """`package.__version__`, without importing the package when it is not loaded yet: torch's
    import takes seconds, and a stage that finds all it needs stored (the augmentation figure's
    stamp, a rerun of `features`) needs no torch. torch and torchaudio write their version,
    local tag included ("2.14.1+cu130"), into `<package>/version.py`; the metadata's lacks it."""
    if package in sys.modules:
        return sys.modules[package].__version__
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"no package named {package!r}")
    version_py = Path(next(iter(spec.submodule_search_locations)), "version.py")
    found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", version_py.read_text(), re.M) \
        if version_py.is_file() else None
    return found.group(1) if found else importlib.import_module(package).__version__


def _versions() -> dict[str, str]:
    return {"numpy": np.__version__, "torch": package_version("torch"),
            "torchaudio": package_version("torchaudio")}


class Product:
    """One kind of per-song result under one set of settings: `key -> {name: array}`."""

    def __init__(self, root: str | Path, name: str, settings: dict, code: tuple[str, ...] = (),
                 files: tuple[str, ...] = ()):
        about = {"product": name, "settings": settings, "versions": _versions(),
                 "code": {Path(f).name: file_digest(f) for f in code},
                 "files": {Path(f).name: file_digest(f) for f in files}}
        self.about = json.loads(json.dumps(about, sort_keys=True, default=str))
        self.digest = hashlib.sha1(json.dumps(self.about, sort_keys=True).encode()).hexdigest()
        self.name = name
        self.dir = Path(root) / f"{name}-{self.digest[:16]}"

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npz"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str) -> dict[str, np.ndarray]:
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise StoreError(f"{path}: not in the per-song store") from None
        except (OSError, ValueError) as err:
            raise StoreError(f"{path}: unreadable per-song entry ({err}); delete it to recompute") from None

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> bool:
        """Store `arrays` under `key` unless it is there already (then False: never rewritten)."""
        path = self.path(key)
        if path.is_file():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        about = self.dir / "about.json"
        if not about.exists():
            _atomic_write(about, (json.dumps(self.about, indent=1, sort_keys=True) + "\n").encode())
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def missing(self, keys) -> list[str]:
        """The keys of `keys` with no entry, each once, in order."""
        seen, out = set(), []
        for k in keys:
            if k not in seen and not self.has(k):
                out.append(k)
            seen.add(k)
        return out

    def bytes(self, keys) -> int:
        """Disk taken by the entries of `keys` (those present)."""
        return sum(self.path(k).stat().st_size for k in set(keys) if self.has(k))


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
