"""The README and docs/*.md against the code as it is.

Every fenced snippet is checked by its info string: `yaml` (a params.yaml fragment, merged onto
params.yaml and passed through `songspace check`), `sh` and `console` (each command: `songspace
...` parsed by the CLI's own parser and its options listed by its `--help`, `dvc ...` parsed by
DVC's, with its stages in dvc.yaml and its `-S` overrides through `songspace check`, `make`
targets in the Makefile, scripts and their options, the explorer's routes and parameters),
`python` (compiles; the names it takes from songspace exist). `text` and `csv` are output and
data examples, not checked. The README stays a short page that links every
docs page, and its code-layout table names every module of src/songspace.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
CHECKED = ("sh", "console", "yaml", "python")
EXAMPLES = ("text", "csv")  # what a command prints, a file's content: shown, not run
README_MAX_LINES = 250
FENCE = re.compile(r"^( *)```(.*)$")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int  # of the opening fence, 1-based
    info: str
    text: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced(page: Path) -> list[Snippet]:
    """The fenced blocks of a Markdown page, their indentation (inside a list item) removed."""
    found, lines, i = [], page.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, info, body = len(opening.group(1)), opening.group(2).strip(), []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        assert i < len(lines), f"{page.name}: a fence is never closed"
        found.append(Snippet(page, i - len(body), info, "\n".join(body)))
        i += 1
    return found


SNIPPETS = [s for page in PAGES for s in fenced(page)]


def _of(*infos: str) -> list:
    return [pytest.param(s, id=str(s)) for s in SNIPPETS if s.info in infos]


# ---------------------------------------------------------------- the checks, per program


def commands(snippet: Snippet) -> list[list[str]]:
    """The commands of a shell snippet as argv lists (continuations joined, comments and leading
    VAR=value assignments dropped); in a `console` snippet only the `$ ` lines are commands."""
    lines = snippet.text.splitlines()
    if snippet.info == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    argvs = []
    for line in joined.splitlines():
        argv = shlex.split(line, comments=True)
        while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
            argv.pop(0)
        if argv:
            argvs.append(argv)
    return argvs


def params_raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def merged(base: dict, fragment: dict) -> dict:
    out = dict(base)
    for key, value in fragment.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = merged(base[key], value) if nested else value
    return out


def songspace_check(raw: dict, tmp_path: Path, what: str) -> None:
    """`songspace check --params` on raw written to a file: exit code 0, or the error it printed."""
    from songspace import cli

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(["check", "--params", str(path)])
    assert code == 0, f"{what}: songspace check refuses it: {err.getvalue().strip()}"


def parse_with(parser, argv: list[str], what: str):
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except BaseException as exc:  # argparse exits; DVC's parser raises its own error
        message = err.getvalue().strip().splitlines()[-1:] or [repr(exc)]
        pytest.fail(f"{what}: {' '.join(argv)}: {message[0]}")


def check_songspace(argv: list[str], what: str, tmp_path: Path) -> None:
    """The command parses as written, and its `--help` lists each option given."""
    from songspace import cli

    parse_with(cli.build_parser(), argv, what)
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), pytest.raises(SystemExit):
        cli.build_parser().parse_args([argv[0], "--help"])
    for option in (a.split("=")[0] for a in argv[1:] if a.startswith("-")):
        assert option in shown.getvalue(), f"{what}: `songspace {argv[0]} --help` does not list {option}"


def check_dvc(argv: list[str], what: str, tmp_path: Path) -> None:
    from dvc.cli.parser import get_main_parser

    args = parse_with(get_main_parser(), argv, what)
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for target in getattr(args, "targets", None) or []:
        assert target in stages, f"{what}: no stage '{target}' in dvc.yaml (stages: {', '.join(stages)})"
    raw = params_raw()
    for setting in getattr(args, "set_param", None) or []:
        key, _, value = setting.partition("=")
        node, *path = raw, *key.split(".")
        for part in path[:-1]:
            assert isinstance(node.get(part), dict), f"{what}: -S {setting}: no '{part}' in params.yaml"
            node = node[part]
        node[path[-1]] = yaml.safe_load(value)
    if getattr(args, "set_param", None):
        songspace_check(raw, tmp_path, f"{what}: {' '.join(argv)}")


def check_make(argv: list[str], what: str, tmp_path: Path) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", makefile, re.M))
    for target in (a for a in argv if "=" not in a and not a.startswith("-")):
        assert target in targets, f"{what}: no target '{target}' in the Makefile"


def check_script(path: Path, argv: list[str], what: str) -> None:
    """The script exists and each option given is one it declares."""
    assert path.is_file(), f"{what}: no such script {path.relative_to(ROOT)}"
    source = path.read_text(encoding="utf-8")
    given = (a.split("=")[0] for a in argv if a.startswith("-") and a != "-")
    for option in (o for o in given if not (o in ("-h", "--help") and "argparse" in source)):
        assert f'"{option}"' in source, f"{what}: {path.relative_to(ROOT)} has no option {option}"


def check_python(argv: list[str], what: str, tmp_path: Path) -> None:
    if argv[:2] == ["-m", "songspace"]:
        return check_songspace(argv[2:], what, tmp_path)
    if argv[:1] == ["-m"]:
        module = argv[1]
        assert module.startswith("benchmarks."), f"{what}: no check for python -m {module}"
        return check_script(ROOT / (module.replace(".", "/") + ".py"), argv[2:], what)
    assert argv and argv[0].endswith(".py"), f"{what}: no check for python {' '.join(argv)}"
    check_script(ROOT / argv[0], argv[1:], what)


def check_torchrun(argv: list[str], what: str, tmp_path: Path) -> None:
    script = next(i for i, a in enumerate(argv) if a.endswith(".py"))
    check_script(ROOT / argv[script], argv[script + 1:], what)


def check_bash(argv: list[str], what: str, tmp_path: Path) -> None:
    assert (ROOT / argv[0]).is_file(), f"{what}: no such script {argv[0]}"


def check_curl(argv: list[str], what: str, tmp_path: Path) -> None:
    """The explorer serves the route, and reads each query parameter named."""
    source = (ROOT / "src/songspace/explorer/server.py").read_text(encoding="utf-8")
    routes = set(re.findall(r'Route\("([^"]+)"', source))
    url = urlsplit(next(a for a in argv if a.startswith("http")))
    assert url.path in routes, f"{what}: the explorer has no route {url.path} (routes: {sorted(routes)})"
    names = [name for name, _ in parse_qsl(url.query)]
    if "-G" in argv:  # the data options become the query
        names += [argv[i + 1].split("=")[0] for i, a in enumerate(argv[:-1]) if a in ("-d", "--data-urlencode")]
    for name in names:
        assert f'"{name}"' in source, f"{what}: {url.path} reads no parameter '{name}'"


def check_ray(argv: list[str], what: str, tmp_path: Path) -> None:
    """Ray's CLI is in the environment and declares each option given (read from its source:
    starting it would start a cluster)."""
    assert (Path(sys.executable).parent / "ray").is_file(), f"{what}: no ray command beside {sys.executable}"
    source = Path(importlib.util.find_spec("ray.scripts.scripts").origin).read_text(encoding="utf-8")
    assert f"def {argv[0]}(" in source, f"{what}: ray has no command {argv[0]}"
    for option in (a.split("=")[0] for a in argv[1:] if a.startswith("--")):
        assert f'"{option}"' in source, f"{what}: ray {argv[0]} has no option {option}"


PROGRAMS = {"songspace": check_songspace, "dvc": check_dvc, "make": check_make, "python": check_python,
            "torchrun": check_torchrun, "bash": check_bash, "curl": check_curl, ".venv/bin/ray": check_ray}


# ---------------------------------------------------------------- the snippets


@pytest.mark.parametrize("snippet", _of("sh", "console"))
def test_shell_snippet_runs_as_written(snippet, tmp_path):
    argvs = commands(snippet)
    assert argvs, f"{snippet}: a shell snippet without a command (mark output as ```text)"
    for argv in argvs:
        check = PROGRAMS.get(argv[0])
        assert check, f"{snippet}: no check for `{argv[0]}` (known: {', '.join(PROGRAMS)})"
        check(argv[1:], str(snippet), tmp_path)


@pytest.mark.parametrize("snippet", _of("yaml"))
def test_yaml_snippet_passes_songspace_check(snippet, tmp_path):
    fragment = yaml.safe_load(snippet.text)
    assert isinstance(fragment, dict), f"{snippet}: not a params.yaml fragment"
    songspace_check(merged(params_raw(), fragment), tmp_path, str(snippet))


@pytest.mark.parametrize("snippet", _of("python"))
def test_python_snippet_names_exist(snippet):
    import songspace

    compile(snippet.text, str(snippet), "exec")
    for names in re.findall(r"^from songspace import (.+)$", snippet.text, re.M):
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(songspace, name), f"{snippet}: songspace has no {name}"
    for method in re.findall(r"\blib\.(\w+)", snippet.text):
        assert hasattr(songspace.Library, method), f"{snippet}: Library has no {method}"


def test_every_snippet_says_what_it_is():
    unmarked = [f"{s} ```{s.info}" for s in SNIPPETS if s.info not in CHECKED + EXAMPLES]
    assert not unmarked, f"fences need one of {CHECKED + EXAMPLES}: {unmarked}"
    assert len(_of(*CHECKED)) >= 20  # the pages' commands are found at all


def test_no_indented_code_blocks():
    """An indented block would escape the checks above: snippets are fenced."""
    for page in PAGES:
        inside, previous = False, ""
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if FENCE.match(line):
                inside = not inside
            elif not inside and line.startswith("    ") and not previous.strip():
                pytest.fail(f"{page.relative_to(ROOT)}:{number}: an indented code block; fence it")
            previous = line


# ---------------------------------------------------------------- the pages


def test_readme_is_short_and_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    unlinked = [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in text]
    assert not unlinked, f"README.md links no {unlinked}"


def test_relative_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            assert (page.parent / target.split("#")[0]).exists(), f"{page.relative_to(ROOT)}: broken link {target}"


def layout_rows() -> dict[str, str]:
    """The README's code-layout table: each name of its first column -> its row."""
    section = README.read_text(encoding="utf-8").split("## Code layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and "`" in cells[1]:
            for name in re.findall(r"`([^`]+)`", cells[1]):
                rows[name] = line
    return rows


def test_code_layout_names_every_module():
    package = ROOT / "src" / "songspace"
    modules = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    packages = {p.name + "/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    rows = layout_rows()
    assert set(rows) == modules | packages, (
        f"not in the table: {sorted((modules | packages) - set(rows))}; "
        f"in the table but not in src/songspace: {sorted(set(rows) - modules - packages)}")
    for name in packages:
        for sub in (package / name).glob("*.py"):
            if sub.stem != "__init__":
                assert f"`{sub.stem}`" in rows[name], f"the code layout's {name} row does not name `{sub.stem}`"


def test_default_model_is_the_one_params_yaml_names():
    from songspace import config

    params = config.load(ROOT / "params.yaml")
    for page in PAGES:
        for named in re.findall(r"`model: (\w+)`", page.read_text(encoding="utf-8")):
            assert named == params.model, f"{page.relative_to(ROOT)}: `model: {named}`; params.yaml: {params.model}"
    listing = next(s for s in SNIPPETS if s.info == "text" and "* = params.yaml's model" in s.text)
    rows = [line.split() for line in listing.text.splitlines()[2:]]
    assert [r[1] for r in rows if r[0] == "*"] == [params.model], f"{listing}: * marks another model"
    assert [r[-6] for r in rows] == list(params.models), f"{listing}: not the models of params.yaml"
