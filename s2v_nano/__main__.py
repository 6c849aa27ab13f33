"""`s2v-nano build|grid|captions|eval`: rebuild s2v-nano, compare base recipes, or score a nano model.

`build` runs every stage not yet done (world, VAE, base, S2V, ablations, scores); `--smoke` runs
each at toy sizes in about a minute and `--ship` copies the result into assets/nano. `grid` trains
each base candidate for the same minutes and scores it on the named-subject condition. `captions`
reads what a base (or a checkpoint of it) knows from text, from real clips (`s2v_nano.captions`). `eval`
scores held-out subjects x identity-free prompts, beside the no-reference and shuffled-reference
baselines, read by the world's analyzer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from s2v.__main__ import add_model_options, check_json_path, given_mag_ratios, load_settings
from s2v.caching import CACHE_METHODS, check_cache
from s2v.errors import S2VError, S2VWarning
from s2v.numbers import real_number, whole_number
from s2v.pipeline import MAX_STEPS
from s2v.presets import PRESETS

from .world import SUBJECT_SETS


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", S2VWarning)
        try:
            return args.command(args)
        except S2VError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2


def build(args: argparse.Namespace) -> int:
    from .build import BuildPlan
    from .build import build as run_build

    plan = BuildPlan.smoke() if args.smoke else BuildPlan.full()
    run_build(args.folder, plan, ship=args.ship, ablations=args.ablations)
    print(f"built {args.folder}; scores in {args.folder / 'results' / 'table.md'}")
    return 0


def grid(args: argparse.Namespace) -> int:
    from .grid import CANDIDATES
    from .grid import grid as run_grid

    names = list(CANDIDATES) if args.candidates == "all" else [n.strip() for n in args.candidates.split(",")]
    minutes = real_number(args.minutes, "--minutes", 0.01)
    run_grid(args.folder, names, minutes)
    print((args.folder / "grid.md").read_text(), end="")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from s2v.loading import load_pipeline

    from .evaluate import CHANCE, EvalSettings
    from .evaluate import evaluate as run_evaluation

    settings = _eval_settings(args)
    if args.out:
        check_json_path(args.out, "the scores")
    pipe = load_pipeline(load_settings(args))
    pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    report = run_evaluation(pipe, EvalSettings(**settings))
    report.settings.update(model=args.model or PRESETS[args.preset].model, lora=args.lora)
    print(report.table())
    print(f"chance: {json.dumps(CHANCE)}; {time.perf_counter() - started:.0f} s")
    print("\nstrict motion by prompted motion (chance 1/8):\n" + report.motion_table())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report.to_json())
        print(f"wrote {args.out}")
    return 0


def captions(args: argparse.Namespace) -> int:
    """What a base knows from text, read from real clips: cheap enough to follow a long run checkpoint by
    checkpoint, long before its samples show it."""
    from diffusers import CogVideoXTransformer3DModel

    from s2v.pipeline import S2VPipeline

    from .captions import caption_accuracy

    limit = None if args.limit is None else whole_number(args.limit, "--limit", 1)
    for folder, what in ((args.model, "a base folder"), (args.transformer, "a transformer folder")):
        if (
            folder is not None
            and not (folder / "config.json").is_file()
            and not (folder / "model_index.json").is_file()
        ):
            raise S2VError(f"{folder} is not {what} (no config.json or model_index.json).")
    pipe = S2VPipeline.from_pretrained(args.model)
    if args.transformer is not None:
        pipe.transformer = CogVideoXTransformer3DModel.from_pretrained(args.transformer).eval()
    result = caption_accuracy(pipe, args.world_seed, limit=limit)
    cells = [f"{k} {round(v * result['items'] / 100)}/{result['items']} (chance {result['chance'][k]:g}%)"
             for k, v in result["accuracy"].items()]  # fmt: skip
    print("text -> " + "; ".join(cells))
    return 0


def _eval_settings(args: argparse.Namespace) -> dict:
    """The evaluator's flags, each refused before the model loads when impossible."""
    from .evaluate import CONDITIONS

    conditions = tuple(args.conditions.split(","))
    if set(conditions) - set(CONDITIONS) or not conditions:
        raise S2VError(f"--conditions takes a comma-separated list of {', '.join(CONDITIONS)}.")
    return dict(
        seed=args.world_seed,
        subjects=args.subjects,
        per_subject=whole_number(args.per_subject, "--per-subject", 1),
        limit=None if args.limit is None else whole_number(args.limit, "--limit", 1),
        steps=None if args.steps is None else whole_number(args.steps, "--steps", 1, MAX_STEPS),
        guidance=None if args.guidance is None else real_number(args.guidance, "--guidance", 0.0),
        cache=_checked_cache(args),
        batch_size=whole_number(args.batch_size, "--batch-size", 1),
        conditions=conditions,
    )


def _checked_cache(args: argparse.Namespace) -> str:
    """Refused before the model loads, as `s2v generate` refuses it."""
    check_cache(args.cache, given_mag_ratios(args))
    return args.cache


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2v-nano", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="command")
    make = commands.add_parser("build", help="run every stage not yet done")
    make.set_defaults(command=build)
    make.add_argument("--folder", type=Path, default=Path("runs/nano"), help="where to build (default runs/nano)")
    make.add_argument("--smoke", action="store_true", help="toy sizes: checks every stage runs, in about a minute")
    make.add_argument("--ship", action="store_true", help="copy the model and its scores into assets/nano")
    make.add_argument(
        "--ablations",
        action="store_true",
        help="after the shipped run, also the paper's ablations, second seeds, other LoRA ranks and a full fine-tune",
    )

    levers = commands.add_parser("grid", help="base candidates, each trained for the same minutes and scored")
    levers.set_defaults(command=grid)
    levers.add_argument("--folder", type=Path, default=Path("runs/nano-grid"), help="default runs/nano-grid")
    levers.add_argument("--minutes", type=float, default=25.0, help="training minutes per candidate (default 25)")
    levers.add_argument("--candidates", default="all", help="comma-separated names, or all (the default)")

    reading = commands.add_parser(
        "captions", help="what a base (or one of its checkpoints) knows from text, read from real clips"
    )
    reading.set_defaults(command=captions)
    reading.add_argument("--model", type=Path, required=True, help="a nano base folder (CogVideoX layout)")
    reading.add_argument("--transformer", type=Path, help="a checkpoint's transformer/ folder to read instead")
    reading.add_argument("--limit", type=int, help="only the first N of the 192 items")
    reading.add_argument("--world-seed", type=int, default=0, help="seed of the world the model was trained on")

    score = commands.add_parser(
        "eval",
        help="score a nano model on held-out subjects against ground truth",
        description="Score a nano model: held-out subjects x identity-free prompts, beside "
        "no-reference and shuffled-reference baselines, read by the world's analyzer.",
    )
    score.set_defaults(command=evaluate)
    score.add_argument("--steps", type=int, help="denoising steps (default: the nano preset's)")
    score.add_argument("--guidance", type=float, help="guidance scale (default: the nano preset's)")
    score.add_argument("--cache", choices=CACHE_METHODS, default="none", help="a cache acceleration (default none)")
    score.add_argument("--limit", type=int, help="only the first N of the items (a quick look)")
    score.add_argument(
        "--per-subject", type=int, default=8, help="prompts per subject, a motion each in turn (default 8: 192 items)"
    )
    score.add_argument("--batch-size", type=int, default=16, help="videos generated together (default 16)")
    score.add_argument(
        "--conditions", default="reference,shuffled,none", help="any of reference,shuffled,none,named,drawn"
    )
    score.add_argument("--world-seed", type=int, default=0, help="seed of the world the model was trained on")
    score.add_argument(
        "--subjects",
        choices=SUBJECT_SETS,
        default="held-out",
        help="held-out subjects (the default), or as many training subjects: how far the model generalises",
    )
    score.add_argument("--out", type=Path, help="write the scores as JSON here")
    add_model_options(score, default_preset="nano")
    return parser


if __name__ == "__main__":
    sys.exit(main())
