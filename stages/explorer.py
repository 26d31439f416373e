"""Stage `explorer`: the explorer page of this run as one self-contained HTML file."""
import argparse
import sys

from songspace import config, errors
from songspace.explorer import data, export


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--index", required=True, help="index folder, e.g. data/index")
    ap.add_argument("--model", required=True, help="the checkpoint the index was built with")
    ap.add_argument("--eval", required=True, help="metrics/eval.json")
    ap.add_argument("--live", required=True, help="dvclive folder of the training run")
    ap.add_argument("--cache", required=True, help="folder for the map's cached projection")
    ap.add_argument("--out", required=True, help="HTML file to write, e.g. plots/explorer.html")
    ap.add_argument("--params", default=config.PARAMS_FILE)
    args = ap.parse_args()
    params = config.load(args.params)
    library = params.data.audio_dir or "data/corpus"
    explorer = data.Explorer.open(args.index, args.model, library, args.eval, args.live, args.cache,
                                  seed=params.seed)
    out = export.write_html(explorer, args.out, k=params.serve.neighbours)
    n = explorer.lib.index.n_tracks
    print(f"{out}: {n} tracks, {params.serve.neighbours} neighbours each, audio linked from {library}; "
          f"{out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "explorer"))
