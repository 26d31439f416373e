"""The benchmark harness: timing, items, the machine, stage times, printing and saving.

Each benchmark (`extraction`, `grid`, `training`, `queries`) is a pure function returning a list
of *items* (JSON-able dicts). An item compares two sides, `ours` and `alt`, each timed `repeats`
times (round-robin, so both sides see the same background load) after a warm-up run:

    {"item": "extract.1core.clip.ogg", "group": "extraction", "title": "...",
     "ours": {"label": ..., "median_s": ..., "runs_s": [...]},
     "alt":  {"label": ..., "median_s": ..., "runs_s": [...]},
     "ratio": alt median / ours median   (> 1: ours is faster),
     "goal": "text" or None, "goal_value": the measured number the goal is about,
     "goal_met": True | False | None (no goal), "extra": {...}}

Every median is a time in seconds (lower is better), so `ratio` is always a speed-up of `ours`
over `alt`; rates (times real time, segments per second) are in `extra` and in each side's
`rate`. Absolute times on shared machines are noisy; the ratios are the figures to quote.

`read_stage_times` reads per-stage wall times of `dvc repro` from a file (DVC itself does not
record them). `format_table` and `markdown_table` print a result; `save` writes it.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from threadpoolctl import threadpool_limits


# ---------------------------------------------------------------- timing and items


def median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


def paired_runs(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each function over `repeats` rounds; in each round every function runs once.

    Round-robin rather than one side after the other, so that a burst of background load
    hits both sides alike. `warmup` untimed rounds first (imports, caches, JIT, allocators).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
    return runs


def side(label: str, runs_s: list[float], rate_per_s: float | None = None, rate_unit: str | None = None) -> dict:
    """One side of an item: its label, median and runs (s); `rate` = rate_per_s / median."""
    med = median(runs_s)
    out = {"label": label, "median_s": med, "runs_s": [float(r) for r in runs_s]}
    if rate_per_s is not None:
        out["rate"] = rate_per_s / med if med > 0 else float("inf")
        out["rate_unit"] = rate_unit
    return out


def item(key: str, group: str, title: str, ours: dict, alt: dict, goal: str | None = None,
         goal_value: float | None = None, goal_met: bool | None = None, **extra) -> dict:
    """An item comparing `ours` with `alt` (dicts from `side`); ratio = alt / ours median time."""
    ratio = alt["median_s"] / ours["median_s"] if ours["median_s"] > 0 else float("inf")
    return {"item": key, "group": group, "title": title, "ours": ours, "alt": alt, "ratio": ratio,
            "goal": goal, "goal_value": goal_value,
            "goal_met": None if goal_met is None else bool(goal_met), "extra": extra}


@contextlib.contextmanager
def single_thread():
    """One core: torch intra-op threads and BLAS/OpenMP pools set to 1, restored on exit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- machine


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception:  # noqa: BLE001 - a missing optional package is reported as null
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """The machine and software a benchmark ran on (JSON-able).

    cores: logical CPUs; usable_cores: those this process may run on (affinity / containers);
    load_average: 1, 5 and 15 minute load when the run started (other work skews timings).
    """
    import soundfile as sf

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "gpu": gpu,
        "load_average": load,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "torch": torch.__version__,
            "torchaudio": _version("torchaudio"),
            "numpy": np.__version__,
            "scipy": _version("scipy"),
            "faiss": _version("faiss"),
            "librosa": _version("librosa"),
            "soundfile": sf.__version__,
            "libsndfile": sf.__libsndfile_version__,
        },
        "git_commit": _git_commit(),
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }



# ---------------------------------------------------------------- pipeline stage times


TOTAL_NAMES = ("total", "repro", "dvc_repro")
_TIME = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)$")


def _seconds(text: str) -> float | None:
    """'12.3' -> 12.3; '1:02.5' (m:ss) -> 62.5; '1:00:00' (h:mm:ss) -> 3600; else None."""
    m = _TIME.match(text)
    if not m:
        return None
    a, b, s = m.groups()
    if b is not None:
        return int(a) * 3600 + int(b) * 60 + float(s)
    if a is not None:
        return int(a) * 60 + float(s)
    return float(s)


def read_stage_times(path: str | Path, dvc_yaml: str | Path | None = "dvc.yaml") -> dict:
    """Wall time per `dvc repro` stage from a file of lines `stage seconds` (DVC records none).

    Seconds may be `12.3` or `m:ss.ss` / `h:mm:ss` (/usr/bin/time's %e or %E). A stage that
    appears several times gets the median. A line named `total` (or `repro`) is the whole
    `dvc repro`; the time it spends outside the stage lines (DVC hashing, checking, caching
    outputs) is reported as `outside_stages_s`. Blank lines, `#` comments and lines that are not
    `name seconds` (e.g. /usr/bin/time's "Command exited with non-zero status 1") are skipped and
    counted. With `dvc_yaml`, stages it defines that the file lacks are listed in `missing`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such stage-times file (lines `stage seconds`)")
    runs: dict[str, list[float]] = {}
    skipped = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        parts = text.split()
        secs = _seconds(parts[-1]) if len(parts) == 2 else None
        if secs is None:
            skipped.append(no)
            continue
        runs.setdefault(parts[0], []).append(secs)
    if not runs:
        raise ValueError(f"{path}: no `stage seconds` lines found")
    total_runs = [s for name in TOTAL_NAMES for s in runs.pop(name, [])]
    stages = [{"stage": s, "median_s": median(r), "runs_s": r} for s, r in runs.items()]
    stage_sum = float(sum(s["median_s"] for s in stages))
    for s in stages:
        s["share"] = s["median_s"] / stage_sum if stage_sum > 0 else None
    total = median(total_runs) if total_runs else None
    out = {"source": str(path), "stages": stages, "stages_sum_s": stage_sum, "total_s": total,
           "outside_stages_s": (total - stage_sum) if total is not None else None,
           "skipped_lines": skipped}
    if dvc_yaml is not None and Path(dvc_yaml).exists():
        import yaml

        defined = list((yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages", {}))
        out["missing"] = [s for s in defined if s not in runs]
        out["unknown"] = [s for s in runs if s not in defined]
    return out



# ---------------------------------------------------------------- printing


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def _fmt_side(sd: dict) -> str:
    text = _fmt_time(sd["median_s"])
    if sd.get("rate") is not None:
        unit = sd.get("rate_unit") or ""
        rate = sd["rate"]
        text += f" ({rate:,.0f} {unit})" if rate >= 100 else f" ({rate:,.1f} {unit})"
    return text


def _fmt_goal(it: dict) -> str:
    if it["goal"] is None:
        return ""
    v = it["goal_value"]
    return f"{it['goal']}: {v:,.2f} {'met' if it['goal_met'] else 'MISSED'}"


def rows(result: dict) -> list[list[str]]:
    """Table rows: item, ours, alt, ratio, goal."""
    out = []
    for it in result["items"]:
        out.append([it["item"], f"{it['ours']['label']}: {_fmt_side(it['ours'])}",
                    f"{it['alt']['label']}: {_fmt_side(it['alt'])}", f"{it['ratio']:.2f}x", _fmt_goal(it)])
    return out


def _machine_line(m: dict) -> str:
    gpu = m["gpu"] or "no GPU"
    load = "/".join(f"{x:g}" for x in m["load_average"]) if m.get("load_average") else "?"
    v = m["versions"]
    return (f"{m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable), {gpu}; load {load} at start; "
            f"torch {v['torch']}, numpy {v['numpy']}, faiss {v['faiss']}, librosa {v['librosa']}")


def _pipeline_lines(p: dict | None) -> list[str]:
    if not p:
        return []
    lines = [f"dvc repro stage wall times (from {p['source']}):"]
    for s in p["stages"]:
        share = f" {100 * s['share']:.0f}%" if s.get("share") is not None else ""
        lines.append(f"  {s['stage']:<12} {s['median_s']:9.1f} s{share}")
    lines.append(f"  {'sum':<12} {p['stages_sum_s']:9.1f} s")
    if p.get("total_s") is not None:
        lines.append(f"  {'total':<12} {p['total_s']:9.1f} s ({p['outside_stages_s']:.1f} s outside the stages)")
    if p.get("missing"):
        lines.append(f"  not timed: {', '.join(p['missing'])}")
    return lines


BUSY_LOAD_PER_CORE = 0.25


def busy_warning(machine: dict) -> list[str]:
    """A warning line when other work was running (1-minute load average above
    BUSY_LOAD_PER_CORE per usable core at the start or the end of the run)."""
    loads = [x[0] for x in (machine.get("load_average"), machine.get("load_average_end")) if x]
    cores = machine.get("usable_cores") or machine.get("cores") or 1
    if not loads or max(loads) <= BUSY_LOAD_PER_CORE * cores:
        return []
    return [f"WARNING: load average up to {max(loads):.1f} on {cores} cores: other work was running. "
            "Multi-threaded and multi-process timings (2-process extraction, training, queries) suffer most: "
            "a thread that waits for a descheduled sibling can make a 0.1 ms query take 10 ms."]


def format_table(result: dict) -> str:
    """A plain-text table of every item, the machine, pipeline times and missed goals."""
    head = ["item", "ours (median)", "alternative (median)", "ratio", "goal"]
    body = rows(result)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [_machine_line(result["machine"]), *busy_warning(result["machine"]),
           "ratio = alternative time / ours (> 1: ours is faster)", "",
           line(head), line(["-" * w for w in widths]), *map(line, body)]
    if result.get("pipeline"):
        out += ["", *_pipeline_lines(result["pipeline"])]
    elif result["settings"].get("pipeline"):
        out += ["", f"pipeline: {result['settings']['pipeline']} (--stage-times FILE, lines `stage seconds`)"]
    missed = [it for it in result["items"] if it["goal_met"] is False]
    if missed:
        out += ["", f"GOALS MISSED ({len(missed)}):"]
        out += [f"  {it['item']}: {it['goal']}, measured {it['goal_value']:,.2f}" for it in missed]
    elif any(it["goal_met"] for it in result["items"]):
        out += ["", "all goals met"]
    return "\n".join(out)


def markdown_table(result: dict, command: str = "make bench") -> str:
    """The same table in Markdown, with the machine and the command, for the README."""
    md = ["| benchmark | songspace | alternative | speed-up | goal |", "|---|---|---|---|---|"]
    for it in result["items"]:
        goal = ""
        if it["goal"] is not None:
            goal = f"{it['goal']}: {'met' if it['goal_met'] else '**missed**'} ({it['goal_value']:,.2f})"
        md.append(f"| {it['title']} | {it['ours']['label']}: {_fmt_side(it['ours'])} | "
                  f"{it['alt']['label']}: {_fmt_side(it['alt'])} | {it['ratio']:.2f}x | {goal} |")
    p = result.get("pipeline")
    if p:
        md += ["", "| stage | wall time | share |", "|---|---|---|"]
        md += [f"| {s['stage']} | {s['median_s']:.1f} s | {100 * (s['share'] or 0):.0f}% |" for s in p["stages"]]
        if p.get("total_s") is not None:
            md.append(f"| whole `dvc repro` | {p['total_s']:.1f} s | ({p['outside_stages_s']:.1f} s outside stages) |")
    md += ["", f"Measured with `{command}` (medians of {result['settings']['repeats']} runs) on "
           f"{_machine_line(result['machine'])}. Speed-up = the alternative's time / songspace's."]
    md += [f"> {w}" for w in busy_warning(result["machine"])]
    return "\n".join(md)


def ratios(result: dict) -> dict:
    """`{item: {ratio, ours_s, alt_s}}`: the flat part of a result that `dvc metrics diff` compares
    (it skips the `items` list)."""
    return {it["item"]: {"ratio": it["ratio"], "ours_s": it["ours"]["median_s"], "alt_s": it["alt"]["median_s"]}
            for it in result.get("items", [])}


def save(result: dict, path: str | Path) -> Path:
    """Write the result as JSON (atomically: a crash leaves the previous file whole), with the
    flat `ratios` summary."""
    result = {**result, "ratios": ratios(result)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    os.replace(tmp, path)
    return path
