"""dvc.yaml's code dependencies against the code: each stage depends on every package module its
script imports (`codegraph.code_files`), and on no package code it does not import."""
import re
from pathlib import Path

import pytest
import yaml

from songspace import codegraph, train

ROOT = Path(__file__).resolve().parent.parent
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _script(cmd: str) -> str:
    """The stage script of a cmd (`python stages/x.py ...`), or its module (`python -m songspace ...`)."""
    found = re.match(r"python (stages/\w+\.py)\b", cmd)
    if found:
        return found.group(1)
    module = re.match(r"python -m ([\w.]+)", cmd).group(1)
    return f"{module}.__main__" if codegraph.module_path(f"{module}.__main__") else module


def _deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_a_stage_depends_on_the_code_it_imports_and_no_other(name):
    stage = STAGES[name]
    script, deps = _script(stage["cmd"]), _deps(stage)
    code = [p.relative_to(ROOT).as_posix() for p in codegraph.code_files(script)]
    if script.endswith(".py"):
        code.append(script)
    missing = [p for p in code if not _covered(p, deps)]
    unused = [d for d in deps if d.startswith(("src/", "stages/"))
              and not any(_covered(p, [d]) for p in code)]
    hint = "\n".join(f"      - {e}" for e in codegraph.dvc_deps(script, ROOT)) if script.endswith(".py") else ""
    assert missing == [] and unused == [], (
        f"dvc.yaml stage {name}: deps lack {missing}, name code it does not import {unused}; "
        f"its code deps are:\n{hint}")


def test_features_depends_on_the_musicnn_front_end():
    assert _covered("src/songspace/models/musicnn.py", _deps(STAGES["features"]))


def test_training_identity_hashes_the_code_the_train_stage_depends_on():
    files = train.training_code()
    assert codegraph.module_path("songspace.train") in files
    assert codegraph.module_path("songspace.losses") in files
    stage = [p.relative_to(ROOT).as_posix() for p in files]
    assert all(_covered(p, _deps(STAGES["train"])) for p in stage)
