"""Time one s2v-nano video on this machine: a 9-frame 48x48 clip at the preset's settings.

Printed, measured in one run after a warm-up:
  1. seconds for one video at the nano preset (25 DPM steps, CFG 3, batch of 1), median of
     several runs, split into denoising and the rest (subject, text, VAE decode);
  2. seconds per video when 16 are generated as one batch (what eval-nano does), and the
     ratio to 1, so the batching gain is measured beside the single-video time.

Run from the repository root: `python bench/nano_video.py [--repeats N] [--steps N]`
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from s2v import LoadSettings, load_pipeline

SUBJECT = Path(__file__).resolve().parents[1] / "assets" / "examples" / "nano" / "disc-red-checks-white.png"
PROMPT = "it moves in a circle on grass"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the preset's)")
    args = parser.parse_args()
    pipe = load_pipeline(LoadSettings(preset="nano"))
    pipe.set_progress_bar_config(disable=True)
    steps = args.steps or 25
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, nano preset, {steps} steps, CFG 3")

    def one(batch: int) -> tuple[float, float]:
        """(total seconds, seconds of denoising: the mean step time x steps) for one call of `batch` videos."""
        marks = []
        started = time.perf_counter()
        pipe(
            [SUBJECT] * batch if batch > 1 else SUBJECT,
            [PROMPT] * batch if batch > 1 else PROMPT,
            num_inference_steps=steps,
            guidance_scale=3.0,
            seed=0,
            callback_on_step_end=lambda *a: marks.append(time.perf_counter()) or {},
        )
        total = time.perf_counter() - started
        per_step = (marks[-1] - marks[0]) / max(1, len(marks) - 1)
        return total, per_step * len(marks)

    one(1)  # warm-up: first-call allocations and kernel selection
    singles = [one(1) for _ in range(args.repeats)]
    total = statistics.median(t for t, _ in singles)
    denoise = statistics.median(d for _, d in singles)
    print(f"one 9-frame video: {total:.2f} s (denoising {denoise:.2f} s, the rest {total - denoise:.2f} s)")
    batched = statistics.median(one(16)[0] for _ in range(max(1, args.repeats // 2))) / 16
    print(f"batch of 16: {batched:.2f} s per video ({total / batched:.1f}x the throughput of one at a time)")


if __name__ == "__main__":
    main()
