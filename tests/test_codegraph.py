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


def test_the_stages_that_list_and_check_files_start_without_torch():
    """scan, ingest, groundtruth, index and explorer rerun when a song is added: torch's import
    (4-5 s on 2 cores) would be most of their cost. The stages import it only where they use it."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import runpy, sys\n"
            "for stage in ('scan', 'ingest', 'groundtruth', 'index', 'explorer'):\n"
            "    sys.argv = [stage, '--help']\n"
            "    try:\n"
            "        runpy.run_path(f'stages/{stage}.py', run_name='__main__')\n"
            "    except SystemExit:\n"
            "        pass\n"
            "    assert 'torch' not in sys.modules, stage\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
