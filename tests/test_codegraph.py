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


def test_augment_with_no_views_and_its_figure_kept_runs_without_torch(tmp_path):
    """`augment` reruns whenever a song is added; with no views to draw (the default) and its
    figure unchanged it imports no torch, and writes the empty views that training reads."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from songspace import groundtruth, ingest
    from songspace import views as cached_views
    from tests.conftest import write_tone

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    paths = [write_tone(tmp_path / "audio" / f"{name}.wav", freqs=(f,), seconds=7.0, seed=i)
             for i, (name, f) in enumerate([("a", 220.0), ("b", 440.0)])]
    tracks = pd.DataFrame({"track_id": ["a", "b"], "path": [str(p) for p in paths], "label": ["x", "y"],
                           "duration_s": [7.0, 7.0]})
    ingest.write_tracks(tracks, tmp_path / "tracks.csv")
    groundtruth.write_splits(pd.DataFrame({"track_id": ["a", "b"], "split": ["train", "train"]}),
                             tmp_path / "splits.csv")
    code = ("import runpy, sys\n"
            f"sys.argv = ['augment', '--tracks', 'tracks.csv', '--splits', 'splits.csv', '--out', 'views',"
            f" '--plot', 'aug.png']\n"
            "try:\n"
            f"    runpy.run_path({str(root / 'stages' / 'augment.py')!r}, run_name='__main__')\n"
            "except SystemExit as stop:\n"
            "    assert not stop.code, stop.code\n"
            "print('torch' in sys.modules)\n")
    runs = [subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
            for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr[-2000:]
    assert "drawn in aug.png" in runs[0].stdout and runs[0].stdout.split()[-1] == "True"
    assert "unchanged, kept" in runs[1].stdout and runs[1].stdout.split()[-1] == "False"
    array, index = cached_views.load_views(tmp_path / "views")
    assert array.shape[0] == 0 and len(index) == 0 and list(index.columns)[:2] == ["row", "track_id"]
    assert isinstance(array, np.ndarray)


def test_library_versions_are_read_without_importing_the_library():
    """The per-song store's digest names torch's version; reading it costs no torch import, and
    gives what `torch.__version__` says, local tag included."""
    import subprocess
    import sys

    import torch
    import torchaudio

    code = ("import sys\nfrom songspace import songstore\n"
            "print(songstore.package_version('torch'), songstore.package_version('torchaudio'),"
            " 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [torch.__version__, torchaudio.__version__, "False"]
