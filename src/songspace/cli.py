"""`songspace ...`: the command line. Parsing and printing only; the work is done by the library.

    songspace similar SONG [-k 10] [--json]     nearest tracks of a song (file or track id)
    songspace embed FILES... -o out.npy          raw embeddings of audio files
    songspace add FILES... [--label L]           extend the index without rebuilding it
    songspace radio SEED [-n 30] [--m3u F]       a playlist that starts at a song (cli_playlists)
    songspace path A B [-n 12]                   songs leading from A to B
    songspace playlists [-k 20]                  the library clustered into k playlists
    songspace info                               model, library size, metric, index type, when written
    songspace models                             the model registry with parameter counts
    songspace check                              params.yaml: known keys, values in range
    songspace report                             the headline of metrics/eval.json (and the
                                                 judgements used, kept per split, annotators' agreement)
    songspace serve [--port 8000] [--host H]     the explorer page: map, neighbours, evaluation,
                    [--judgements F]             and the judge view (answers appended to F)

Default paths are the pipeline's (data/index, data/models/best.pt, metrics/eval.json,
params.yaml); each has an option. A user error (a missing or undecodable file, a missing or
stale index, a missing model, a bad params.yaml) ends with exit code 2 and one line on stderr
naming the file and the problem.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from songspace import __version__, cli_playlists
from songspace.errors import EXIT_USER_ERROR, UserError, one_line

PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".html")


# ---------------------------------------------------------------- printing helpers


def _table(rows: list[list[str]], header: list[str], right: set[int] = frozenset()) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header)] + [line(r) for r in rows])


def _num(x, fmt: str = ".3f") -> str | None:
    if isinstance(x, (int, float)) and not (isinstance(x, float) and math.isnan(x)):
        return format(x, fmt)
    return None


# ---------------------------------------------------------------- commands


def cmd_similar(args) -> int:
    from songspace.features import DEFAULT_MAX_QUERY_SECONDS
    from songspace.index.api import Library

    lib = Library.open(args.index, args.model)
    frame = lib.similar(args.song, k=args.k, as_frame=True, max_seconds=DEFAULT_MAX_QUERY_SECONDS)
    if args.json:
        print(json.dumps(lib.result_json(args.song, frame, args.k), indent=2))
        return 0
    meta = lib.index.meta
    print(f"nearest to {args.song}: {lib.index.distance} after {lib.index.scaler_name}, "
          f"{meta.get('searcher')}, {lib.index.n_tracks} tracks")
    rows = [[r.rank, r.track_id, r.label, f"{r.distance:.4f}"] for r in frame.itertuples()]
    print(_table(rows, ["rank", "track_id", "label", "distance"], right={0, 3}))
    return 0


def cmd_embed(args) -> int:
    import numpy as np

    from songspace.features import DEFAULT_MAX_QUERY_SECONDS
    from songspace.index.api import embed_files

    emb = embed_files(args.files, model_path=args.model, max_seconds=DEFAULT_MAX_QUERY_SECONDS)
    out = Path(args.output)
    if out.suffix != ".npy":  # np.save would add it; say the name actually written
        out = out.with_name(out.name + ".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb)
    print(f"wrote {out}: {emb.shape[0]} x {emb.shape[1]} float32, rows in the order of the files given")
    return 0


def cmd_add(args) -> int:
    from songspace.index.api import Library

    lib = Library.open(args.index, args.model)
    report = lib.add(args.files, label=args.label)
    for r in report.itertuples():
        print(f"added {r.track_id} ({r.label}): {r.path}" if r.added else f"skipped {r.path}: {r.note}")
    from songspace.index import added_list_path

    print(f"{args.index}: {lib.index.n_tracks} tracks ({int(report['added'].sum())} added); "
          f"listed in {added_list_path(args.index)}, which `dvc repro` embeds again")
    return 0


def cmd_info(args) -> int:
    from songspace.index.api import Library

    info = Library.open(args.index, args.model, check_model=False).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if value is None:
            continue
        if key == "recall_at_10":
            value = f"{value:.3f} (approximate index against exact search)"
        print(f"{key.replace('_', ' '):<{width}}  {value}")
    return 0


def cmd_models(args) -> int:
    from songspace import config

    params = config.load(args.params)
    from songspace import models  # torch: imported once the parameters are known to be readable

    fp = params.features
    rows = models.describe(params.models, fp.n_mels, fp.frames)
    print(f"input: one log-mel segment (1, {fp.n_mels}, {fp.frames}) "
          f"({fp.segment_seconds:g} s at {fp.sample_rate} Hz); * = params.yaml's model")
    table = [[("* " if r["name"] == params.model else "  ") + r["name"], r["arch"], f"{r['parameters']:,}",
              "x".join(str(s) for s in r["output_shape"]), f"{r['mflops']:.1f}", r["batch_size"]]
             for r in rows]
    print(_table(table, ["  model", "arch", "parameters", "embedding", "MFLOPs", "batch"], right={2, 4, 5}))
    return 0


def cmd_check(args) -> int:
    from songspace import config

    params = config.load(args.params)
    print(f"{args.params}: valid (model {params.model}, loss {params.loss}, data.source {params.data.source})")
    return 0


def cmd_report(args) -> int:
    from songspace.evaluate.report import best_cell, read_json  # no torch

    path = Path(args.metrics)
    result = read_json(path)
    head = result.get("headline") or {}
    cell = " / ".join(name or "?" for name in best_cell(result))
    print(f"{path}")
    print(f"  best cell        {cell}")
    acc = _num(head.get("accuracy"))
    if acc:
        conf = head.get("confidence")
        ci = ""
        if _num(head.get("ci_low")) and _num(head.get("ci_high")):
            level = f"{conf:.0%} " if isinstance(conf, (int, float)) else ""
            ci = f" ({level}CI {head['ci_low']:.3f} to {head['ci_high']:.3f})"
        chance = _num(head.get("chance"))
        print(f"  accuracy         {acc}{ci}" + (f"; chance {chance}" if chance else ""))
    n_q = head.get("n_quartets", result.get("n_quartets"))
    if n_q is not None:
        print(f"  test quartets    {n_q}")
    if head.get("next_distance"):
        sig = head.get("significant_vs_next")
        print(f"  runner-up        {head['next_distance']} / {head.get('next_scaler')} "
              f"{_num(head.get('next_accuracy')) or '?'}"
              + ("" if sig is None else f" (best is {'significantly' if sig else 'not significantly'} better)"))
    if head.get("best_baseline") is not None and _num(head.get("margin_over_baseline"), "+.3f"):
        ci = ""
        if _num(head.get("margin_ci_low")) and _num(head.get("margin_ci_high")):
            ci = f" (CI {head['margin_ci_low']:+.3f} to {head['margin_ci_high']:+.3f})"
        print(f"  best baseline    {head['best_baseline']} {_num(head.get('best_baseline_accuracy')) or '?'}; "
              f"margin {head['margin_over_baseline']:+.3f}{ci}")
    if not head:
        print("  (no headline in this file)")
    gt_path = Path(args.groundtruth)
    if gt_path.exists():
        from songspace.groundtruth import agreement_line, judgement_lines, read_report
        try:
            gt = read_report(gt_path)
            lines = judgement_lines(gt)
            lines = _used_lines(gt, head, n_q) + ["  judgements  " + line.strip() for line in lines]
            lines += [f"  annotators       {agreement_line(gt)}"] if agreement_line(gt) else []
        except (ValueError, KeyError, TypeError) as err:
            lines = [f"  judgements  (unreadable: {err})"]
        for line in lines:
            print(line)
    plots = Path(args.plots)
    found = sorted(p for p in plots.glob("*") if p.suffix in PLOT_SUFFIXES) if plots.is_dir() else []
    print(f"  plots            {', '.join(str(p) for p in found) if found else f'none under {plots}/'}")
    return 0


def _used_lines(gt: dict, head: dict, n_test) -> list[str]:
    """How many annotated judgements the run used and what the accuracy above was measured on,
    from groundtruth.json (nothing when the ground truth came from labels)."""
    a = gt.get("annotations")
    if gt.get("mode") != "annotations" or not a:
        return []
    kept = a.get("quartets") or {}
    out = [f"  judgements used  {a['lines']} line(s) of data.quartets, {a['distinct_quartets']} distinct "
           f"quartet(s): train {kept.get('train', '?')}, val {kept.get('val', '?')}, "
           f"test {kept.get('test', '?')}"]
    acc = _num(head.get("accuracy"))
    if acc:
        out.append(f"  judged test      the accuracy above ({acc}) is on the {n_test if n_test is not None else '?'} "
                   "judged test quartets")
    return out


def cmd_serve(args) -> int:
    from songspace import config

    params = config.load(args.params)
    from songspace.explorer import data, guard, server

    server.check_options(args.host, args.port, args.allowed_host)
    library = args.library or params.data.audio_dir or "data/corpus"
    explorer = data.Explorer.open(args.index, args.model, library, args.metrics, args.live, seed=params.seed)
    from songspace.explorer import judge

    referee = judge.open_judge(explorer, args.judgements, args.splits, params.serve.judge_uncertain_share,
                               params.seed, params.split.test_fraction, params.split.val_fraction)
    sock = server.bind(args.host, args.port)
    port = sock.getsockname()[1]
    warning = server.exposure_warning(args.host)
    if warning:
        print(f"songspace: warning: {warning}", file=sys.stderr)
    print(f"songspace explorer: {server.page_url(args.host, port)} ({explorer.lib.index.n_tracks} tracks, "
          f"audio from {explorer.root}); Ctrl-C stops it", flush=True)
    print(f"  judgements go to {referee.store.path} (splits from {referee.splits_source})", flush=True)
    server.serve(explorer, sock, guard.allowed_hosts(args.host, port, args.allowed_host), params.serve,
                 referee)
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="songspace", description="songspace: a learned metric space for music.")
    ap.add_argument("--version", action="version", version=f"songspace {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    paths = argparse.ArgumentParser(add_help=False)
    paths.add_argument("--index", default="data/index", help="index folder (default: %(default)s)")
    paths.add_argument("--model", default="data/models/best.pt", help="model checkpoint (default: %(default)s)")

    _add_index_parsers(sub, paths)
    _add_project_parsers(sub)
    cli_playlists.add_parsers(sub, [paths])
    _add_serve_parser(sub, paths)
    return ap


def _add_index_parsers(sub, paths: argparse.ArgumentParser) -> None:
    """similar, embed, add, info: the commands on the index and the model."""
    p = sub.add_parser("similar", parents=[paths], help="the tracks nearest to a song")
    p.add_argument("song", help="an audio file (in the library or not) or a track id of the index")
    p.add_argument("-k", type=int, default=10, help="number of neighbours (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("embed", help="embed audio files with the model into a .npy file")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-o", "--output", required=True, help="output .npy: (files, dim) float32")
    p.add_argument("--model", default="data/models/best.pt", help="model checkpoint (default: %(default)s)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("add", parents=[paths], help="add audio files to the index without rebuilding it")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--label", default=None, help="label of the added songs (default: unlabelled)")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("info", parents=[paths], help="what the index holds and how it was built")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)


def _add_project_parsers(sub) -> None:
    """models, check, report: the commands on the project's parameters and results."""
    p = sub.add_parser("models", help="the model registry with parameter counts")
    p.add_argument("--params", default="params.yaml", help="parameter file (default: %(default)s)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("check", help="check params.yaml: every key known, every value in range")
    p.add_argument("--params", default="params.yaml", help="parameter file (default: %(default)s)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("report", help="the headline of the evaluation")
    p.add_argument("--metrics", default="metrics/eval.json", help="evaluation JSON (default: %(default)s)")
    p.add_argument("--plots", default="plots", help="plots folder (default: %(default)s)")
    p.add_argument("--groundtruth", default="data/reports/groundtruth.json",
                   help="the groundtruth stage's report: annotated quartets kept and dropped "
                        "per split (default: %(default)s)")
    p.set_defaults(func=cmd_report)


def _add_serve_parser(sub, paths: argparse.ArgumentParser) -> None:
    """serve: the explorer page."""
    p = sub.add_parser("serve", parents=[paths], help="the explorer page: map, listening, neighbours, evaluation")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s, this machine only; any other "
                        "address makes the library reachable from the network)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME[:PORT]",
                   help="a further Host name the page may be opened under (repeatable); without "
                        "it only the bound address (and localhost for a loopback bind) is answered")
    p.add_argument("--library", default=None,
                   help="the library folder audio is served from (default: params.yaml data.audio_dir)")
    p.add_argument("--metrics", default="metrics/eval.json", help="evaluation JSON (default: %(default)s)")
    p.add_argument("--live", default="dvclive", help="dvclive folder of the run (default: %(default)s)")
    p.add_argument("--judgements", default="data/judgements/quartets.csv",
                   help="the judge view's quartet CSV, appended to (default: %(default)s; point "
                        "params.yaml data.quartets at it to train on it)")
    p.add_argument("--splits", default="data/groundtruth/splits.csv",
                   help="each track's split, which a judged quartet follows (default: %(default)s; "
                        "when absent, the hash of (seed, track))")
    p.add_argument("--params", default="params.yaml", help="parameter file (default: %(default)s)")
    p.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 user error)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "k", 1) < 1:
        print("songspace: error: -k must be at least 1", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("songspace: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, (FileNotFoundError, UserError)):  # every module's user errors derive from UserError
            print(f"songspace: error: {one_line(err)}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise
