"""Stage `scan`: the library folder's manifest, which `ingest` depends on instead of the folder.

    python stages/scan.py --out data/scan/manifest.csv

Runs on every `dvc repro` (always_changed): a walk that stats each file and opens none, so
named pipes, devices and folder link loops in the library cannot stop it.
"""
from __future__ import annotations

import argparse
import sys

from songspace import config, errors, manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the manifest CSV to write")
    parser.add_argument("--params", default=config.PARAMS_FILE)
    args = parser.parse_args(argv)
    data = config.load(args.params).data
    table = manifest.build(data)
    manifest.write(table, args.out)
    print(manifest.summary(table, data))
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_stage(main, "scan"))
