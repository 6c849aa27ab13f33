"""What the memory modes that run on a CPU cost s2v-nano: changed verdicts against no mode, and speed.

Generates the held-out items with the shipped s2v-nano model under `--quantize none` and under each
mode (fp8-layerwise; int8-torchao where torchao is installed) with the same seeds, reads every video
with the world's analyzer, and prints per mode how many verdicts of colour, shape, motion and scene
differ from those under none (k/n), beside seconds per video, all from one run: wall-clock, and the
process's CPU time, which holds when another job shares the core.

    python bench/memory.py              # 48 items
    python bench/memory.py --items 96
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from s2v import LoadSettings, load_pipeline
from s2v.loading import TORCHAO_MINIMUM, torchao_problem
from s2v_nano.analyze import ClipAnalysis, analyze_clip
from s2v_nano.evaluate import EvalSettings, _generate
from s2v_nano.world import eval_items, render_subject, split_identities

MODES = ("none", "fp8-layerwise", "int8-torchao")
VERDICTS = ("colour", "shape", "motion", "scene")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48, help="held-out items to generate (default 48, at most 192)")
    args = parser.parse_args()
    held = split_identities(0)[1]
    items = eval_items(held, 8)[: args.items]
    references = {identity.id: render_subject(identity, 48, 48) for identity in held}
    subjects = [references[item["identity"]] for item in items]
    if problem := torchao_problem():
        print(f"int8-torchao left out: it needs torchao {TORCHAO_MINIMUM} or newer, and {problem}\n")
    modes = [mode for mode in MODES if mode != "int8-torchao" or not problem]
    print_table({mode: generate(mode, items, subjects) for mode in modes})
    return 0


def print_table(runs: dict[str, tuple[list[ClipAnalysis], float, float]]) -> None:
    base = runs["none"][0]
    count = len(base)
    print("| --quantize | " + " | ".join(f"changed {v}" for v in VERDICTS) + " | any | s / video | CPU s / video |")
    print("|---" * (len(VERDICTS) + 4) + "|")
    for mode, (analyses, wall, cpu) in runs.items():
        changed = {v: [getattr(a, v) != getattr(b, v) for a, b in zip(base, analyses, strict=True)] for v in VERDICTS}
        any_change = np.any([changed[v] for v in VERDICTS], axis=0)
        cells = [f"{sum(changed[v])}/{count}" for v in VERDICTS] + [f"{int(any_change.sum())}/{count}"]
        print(f"| {mode} | " + " | ".join(cells) + f" | {wall:.2f} | {cpu:.2f} |")


def generate(mode: str, items: list[dict], subjects: list) -> tuple[list[ClipAnalysis], float, float]:
    """The analyzer's reading of every item's video under one mode, and the wall and CPU seconds per video."""
    torch.manual_seed(0)
    pipe = load_pipeline(LoadSettings(preset="nano", quantize=mode))
    pipe.set_progress_bar_config(disable=True)
    wall, cpu = time.perf_counter(), time.process_time()
    videos = _generate(pipe, items, subjects, EvalSettings(), False, "reference")
    wall, cpu = (time.perf_counter() - wall) / len(items), (time.process_time() - cpu) / len(items)
    return [analyze_clip(video) for video in videos], wall, cpu


if __name__ == "__main__":
    raise SystemExit(main())
