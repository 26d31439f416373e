"""The package's import graph: no circle among its modules, deferred imports included."""
from songspace import codegraph


def test_no_import_circle_among_the_package_modules():
    assert codegraph.cycles() == []


def test_the_graph_sees_relative_deferred_and_lazy_imports():
    # features: relative imports at the top; plots: the augmentation figure's imports inside a function
    assert "songspace.models.musicnn" in codegraph.imports_of("songspace.features")
    assert {"songspace.augment", "songspace.frontends"} <= codegraph.imports_of("songspace.plots")
    assert "songspace.augment" not in codegraph.imports_of("songspace.features")
    # `from songspace import index` then `index.build_from_pipeline`: the lazy name's own module
    stage = codegraph.code_files("stages/index.py")
    assert codegraph.module_path("songspace.index.pipeline") in stage
    # `import songspace` runs its __init__, which imports nothing of the index until asked
    assert codegraph.imports_of("songspace") == frozenset()


def test_cycles_names_each_circle_once():
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"d"}),
             "e": frozenset({"a"})}
    assert codegraph.cycles(edges) == [["a", "b", "c"], ["d"]]


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_modules_and_functions_stay_small():
    """Past ~400 lines a module, past ~60 a function, usually holds two things (STYLE)."""
    import ast
    from pathlib import Path

    package = Path(codegraph.module_path("songspace")).parent
    too_long = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = path.relative_to(package.parent)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []
