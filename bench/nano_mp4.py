"""What the user sees against what the model made: nano verdicts on raw frames vs the mp4 written from them.

Generates the held-out items with the shipped s2v-nano model, reads each video with the world's
analyzer as raw 48 px frames and again after an H.264 round trip (yuv420: chroma at half size),
once written at 1x and once at the preset's display scale (each pixel a square block), and prints
how many verdicts of colour, shape and motion the mp4 changes (k/n).

    python bench/nano_mp4.py              # 96 items
    python bench/nano_mp4.py --items 192
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from s2v import PRESETS, LoadSettings, load_pipeline, save_video
from s2v.video import read_video
from s2v_nano.analyze import analyze_clip
from s2v_nano.evaluate import EvalSettings, _generate
from s2v_nano.world import eval_items, render_subject, split_identities

VERDICTS = ("colour", "shape", "motion")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=96, help="held-out items to generate (default 96, at most 192)")
    args = parser.parse_args()
    torch.manual_seed(0)
    pipe = load_pipeline(LoadSettings(preset="nano"))
    pipe.set_progress_bar_config(disable=True)
    held = split_identities(0)[1]
    items = eval_items(held, 8)[: args.items]
    references = {identity.id: render_subject(identity, 48, 48) for identity in held}
    videos = _generate(pipe, items, [references[i["identity"]] for i in items], EvalSettings(), False, "reference")
    raw = [analyze_clip(video) for video in videos]
    scale = PRESETS["nano"].display_scale
    print("| written as | changed colour | changed shape | changed motion | any of the three |\n|---|---|---|---|---|")
    for factor in sorted({1, scale}):
        seen = [analyze_clip(mp4_round_trip(video, factor)) for video in videos]
        changed = {v: [getattr(a, v) != getattr(b, v) for a, b in zip(raw, seen, strict=True)] for v in VERDICTS}
        any_change = np.any([changed[v] for v in VERDICTS], axis=0)
        cells = [f"{sum(changed[v])}/{len(videos)}" for v in VERDICTS] + [f"{int(any_change.sum())}/{len(videos)}"]
        print(f"| mp4 at {factor}x ({48 * factor} px) | " + " | ".join(cells) + " |")
    return 0


def mp4_round_trip(video: np.ndarray, factor: int) -> np.ndarray:
    """The frames a viewer gets back from the mp4, averaged back onto the 48 px grid the analyzer reads."""
    with tempfile.TemporaryDirectory() as folder:
        frames, _ = read_video(save_video(video, Path(folder) / "clip.mp4", fps=8, scale=factor))
    count, height, width, _ = frames.shape
    blocks = frames.reshape(count, height // factor, factor, width // factor, factor, 3).astype(np.float32)
    return blocks.mean(axis=(2, 4)).round().astype(np.uint8)


if __name__ == "__main__":
    raise SystemExit(main())
