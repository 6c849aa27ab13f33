"""`s2v-train --config tiny` (a shipped config's name or a YAML file; or under `accelerate launch -m s2v_train`).

Trains the method's LoRA as the config says; `--resume latest` continues a stopped run
exactly, and `section.key=value` arguments override the config. `s2v-train prepare
--config ...` first encodes the data into `data.cache`, so training skips the frozen encoders.
"""

from __future__ import annotations

import argparse
import logging
import sys

from s2v.errors import S2VError

from .config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s2v-train [prepare]", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a YAML file or a shipped config's name, e.g. tiny")
    parser.add_argument("--resume", help="'latest' or a checkpoints/step_* folder")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.max_steps=100")
    argv = sys.argv[1:] if argv is None else argv
    preparing = bool(argv) and argv[0] == "prepare"
    args = parser.parse_args(argv[1:] if preparing else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        if preparing:
            from .cache import prepare

            print(f"prepared: {prepare(config)}")
            return 0
        from .loop import train

        print(f"done: {train(config, resume=args.resume)}")
    except S2VError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
