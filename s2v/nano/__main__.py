"""`python -m s2v.nano build`: rebuild s2v-nano from nothing (world, VAE, base, S2V, ablations, scores).

Run from the repository root. The full plan takes about two hours on a 2-core CPU; `--smoke`
runs every stage at toy sizes in about a minute. `--ship` copies the result into assets/nano.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from s2v.errors import S2VError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2v.nano", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="command")
    build = commands.add_parser("build", help="run every stage not yet done")
    build.add_argument("--folder", type=Path, default=Path("runs/nano"), help="where to build (default runs/nano)")
    build.add_argument("--smoke", action="store_true", help="toy sizes: checks every stage runs, in about a minute")
    build.add_argument("--ship", action="store_true", help="copy the model and its scores into assets/nano")
    args = parser.parse_args(argv)
    from .build import BuildPlan
    from .build import build as run_build

    try:
        run_build(args.folder, BuildPlan.smoke() if args.smoke else BuildPlan.full(), ship=args.ship)
    except S2VError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"built {args.folder}; scores in {args.folder / 'results' / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
