"""The package's import graph, read from the source (`ast`), never by importing it.

An edge goes from a module to each songspace module it imports, at the top or inside a
function, absolute (`from songspace.index import files`) or relative (`from . import audio`),
except under `if TYPE_CHECKING:` (never run):
`from P import N` is an edge to the module P.N when there is one, else to the module that
defines N (P itself, or, for a package that hands out names lazily through a module-level
`__getattr__`, the submodule whose top level defines N). Importing a lazy package as a module
(`from songspace import index`) is an edge to each module named by `index.NAME` in the
importer. The imports inside a lazy package's `__getattr__` are not edges: they are reached
by name, as above.

`code_files` is the code a script's result depends on: the modules it reaches through these
edges, with the `__init__.py` of every package on the way (importing songspace.a.b runs
songspace/__init__.py and songspace/a/__init__.py). dvc.yaml's `deps` are checked against it
(tests/test_dvc_deps.py) and training's run identity hashes it (`train.training_code`).
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "songspace"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_path(module: str) -> Path | None:
    """The source file of a songspace module (`songspace.index.api`), None when there is none."""
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    base = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    """The dotted name of a file under the package (`.../songspace/index/api.py` -> songspace.index.api)."""
    parts = Path(path).resolve().relative_to(PACKAGE_DIR).with_suffix("").parts
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def modules() -> list[str]:
    """Every module of the package, sorted."""
    return sorted(module_name(p) for p in PACKAGE_DIR.rglob("*.py"))


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _lazy_getattr(tree: ast.Module) -> ast.FunctionDef | None:
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"), None)


def _top_level_names(tree: ast.Module, with_imports: bool) -> set[str]:
    """Names bound at a module's top level (defs, classes, assignments; imports when asked)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif with_imports and isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _home_of(package: str, name: str) -> str:
    """The module `from package import name` runs: a submodule, the package, or, for a lazy
    package, the submodule whose top level defines name."""
    sub = f"{package}.{name}"
    if module_path(sub) is not None:
        return sub
    path = module_path(package)
    tree = _tree(path)
    if path.name != "__init__.py" or _lazy_getattr(tree) is None or name in _top_level_names(tree, True):
        return package
    for candidate in sorted(PACKAGE_DIR.joinpath(*package.split(".")[1:]).rglob("*.py")):
        if name in _top_level_names(_tree(candidate), False):
            return module_name(candidate)
    return package


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = importer.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _attributes_of(tree: ast.Module, alias: str) -> set[str]:
    return {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == alias}


def _edges_from(tree: ast.Module, importer: str, is_package: bool) -> set[str]:
    lazy = _lazy_getattr(tree)
    skip = {id(n) for n in ast.walk(lazy)} if lazy is not None else set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found: set[str] = set()

    def add_module(module: str, alias: str) -> None:
        path = module_path(module)
        if path is None:
            return
        found.add(module)
        if path.name == "__init__.py" and _lazy_getattr(_tree(path)) is not None:
            found.update(_home_of(module, attr) for attr in _attributes_of(tree, alias))

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                add_module(a.name, a.asname or a.name)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, importer, is_package)
            if module_path(source) is None:
                continue
            for a in node.names:
                home = _home_of(source, a.name)
                if home == f"{source}.{a.name}":
                    add_module(home, a.asname or a.name)
                else:
                    found.add(home)
    found.discard(importer)
    return found


@lru_cache(maxsize=None)
def imports_of(module: str) -> frozenset[str]:
    """The songspace modules `module` imports (see the module docstring for what counts)."""
    path = module_path(module)
    return frozenset(_edges_from(_tree(path), module, path.name == "__init__.py"))


def graph() -> dict[str, frozenset[str]]:
    """Every package module -> the modules it imports."""
    return {m: imports_of(m) for m in modules()}


def cycles(edges: dict[str, frozenset[str]] | None = None) -> list[list[str]]:
    """The import circles among the modules: each strongly connected component of more than
    one module (or a module importing itself), its members sorted; [] when there is none."""
    edges = graph() if edges is None else edges
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:   # Tarjan's algorithm; the graph has ~80 nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def code_files(script: str | Path) -> list[Path]:
    """The package files a script or module's result depends on, sorted: the modules it imports,
    transitively, and the `__init__.py` of each package on the way.

    script: a file outside the package (a stage script, `stages/train.py`: not in the list) or
    a module name (`songspace.train`: in the list).
    """
    if isinstance(script, Path) or str(script).endswith(".py"):
        start = _edges_from(_tree(Path(script).resolve()), "__main__", False)
    else:
        start = {str(script)}
    seen: set[str] = set()
    todo = sorted(start)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend((set(imports_of(m)) | set(_parents(m))) - seen)
    return sorted(module_path(m) for m in seen)


def dvc_deps(script: str | Path, root: str | Path) -> list[str]:
    """The code entries of a stage's `deps` in dvc.yaml: the script itself, then `code_files`
    relative to root (the repository), a package folder named whole when every module in it
    is among them (its other files, such as the explorer's static ones, come with it)."""
    root = Path(root).resolve()
    files = {p.resolve() for p in code_files(script)}
    entries: list[str] = [Path(script).as_posix()]

    def walk(folder: Path) -> None:
        for path in sorted(folder.iterdir()):
            if path.is_dir() and (path / "__init__.py").is_file():
                if set(path.rglob("*.py")) <= files:
                    entries.append(path.relative_to(root).as_posix())
                else:
                    walk(path)
            elif path.suffix == ".py" and path in files:
                entries.append(path.relative_to(root).as_posix())

    walk(PACKAGE_DIR)
    return entries
