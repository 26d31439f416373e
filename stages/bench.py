"""Benchmarks: songspace's hot paths against the obvious alternative, timed in the same run.

    python stages/bench.py --out metrics/bench.json                      # everything (`make bench`)
    python stages/bench.py --out /tmp/b.json --quick                      # small sizes, a minute or two
    python stages/bench.py --out metrics/bench.json --only grid,training --repeats 5
    python stages/bench.py --out metrics/bench.json --only pipeline --stage-times stage_times.txt

A stage-times file has lines `stage seconds`, e.g. from
    for s in corpus ingest groundtruth features augment train evaluate index; do
        /usr/bin/time -f "$s %e" -a -o stage_times.txt dvc repro -s -f $s; done
(plus an optional `total SECONDS` line for a whole `dvc repro`). Not a DVC stage itself.
"""
import argparse
import dataclasses
import sys

from songspace import bench, config, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file to write (e.g. metrics/bench.json)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes (few files, 1000 quartets, 10k synthetic vectors, 2 models)")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated subset of: {', '.join(bench.ITEMS)} (default: all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 5; --quick 3)")
    ap.add_argument("--stage-times", default=None, help="file of `stage seconds` lines (the `pipeline` item)")
    ap.add_argument("--audio-dir", default=None, help="keep the generated test audio here (default: a temp folder)")
    ap.add_argument("--query-threads", type=int, default=None,
                    help="faiss/BLAS threads for the query benchmark (default: all cores; 1 on a busy machine)")
    ap.add_argument("--markdown", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--strict", action="store_true", help="exit with status 1 when a goal is missed")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    args = ap.parse_args()

    items = bench.ITEMS if args.only is None else tuple(s.strip() for s in args.only.split(",") if s.strip())
    if "pipeline" in items and args.stage_times is None and args.only is not None:
        ap.error("the pipeline item needs --stage-times FILE")
    repeats = args.repeats or (3 if args.quick else 5)
    try:
        sizes = dataclasses.replace(bench.QUICK if args.quick else bench.FULL, query_threads=args.query_threads)
        result = bench.run(items, sizes, config.load(args.params),
                           repeats=repeats, stage_times=args.stage_times, audio_dir=args.audio_dir)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"bench: {err}") from None
    command = " ".join(["python stages/bench.py", *sys.argv[1:]])
    result["settings"]["command"] = command
    bench.save(result, args.out)
    print(bench.format_table(result))
    md = bench.markdown_table(result, command)
    print("\nMarkdown:\n\n" + md)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md + "\n")
    print(f"\nwrote {args.out}")
    if args.strict and any(it["goal_met"] is False for it in result["items"]):
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "bench"))
