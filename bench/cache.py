"""Quality per speed of each cache acceleration and of fast previews, side by side on s2v-nano.

Generates the held-out items (reference condition) with the shipped nano model under the full run
(no cache, the preset's steps) and under each setting, with the same seeds, the settings taking
turns batch by batch so that machine noise falls on all of them alike. For each setting it prints
the time ratio against the full run, end to end and for denoising alone (time inside the
transformer), the share of transformer blocks (attention modules, for the attention caches) it
still computes, each attribute's accuracy (k/n, strict motion: the subject in every frame), and
how many items change verdict against the full run (k/n). The blocks' shares go to a JSON file
that `bench/gpu_check.py` multiplies with the 5B's measured step costs.

    python bench/cache.py                  # 96 items
    python bench/cache.py --items 192 --skip-rates runs/cache/skip_rates.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.hooks import FirstBlockCacheConfig

from s2v import LoadSettings, load_pipeline
from s2v.caching import calibrate_mag
from s2v_nano.analyze import analyze_clip
from s2v_nano.world import Identity, eval_items, render_subject, split_identities

VERDICTS = ("colour", "shape", "pattern", "motion")
CALIBRATION_SUBJECT, CALIBRATION_PROMPT = "assets/examples/nano/disc-red-checks-white.png", "it moves left on grass"
BATCH = 16


@dataclass(frozen=True)
class Setting:
    name: str
    cache: object = "none"
    """A `--cache` name, or a diffusers config to try other settings."""
    steps: int | None = None
    """None: the preset's."""


SETTINGS = (
    Setting("full"),
    Setting("first-block 0.2", FirstBlockCacheConfig(threshold=0.2)),
    Setting("first-block 0.3", FirstBlockCacheConfig(threshold=0.3)),
    Setting("taylorseer", "taylorseer"),
    Setting("pab", "pab"),
    Setting("faster", "faster"),
    Setting("mag", "mag"),
    Setting("15 steps", steps=15),
    Setting("12 steps", steps=12),
    Setting("12 steps + pab", "pab", steps=12),
    Setting("10 steps + pab", "pab", steps=10),
    Setting("8 steps", steps=8),
)


@dataclass
class Tally:
    """What one setting's runs added up to."""

    seconds: float = 0.0
    denoising: float = 0.0
    blocks: int = 0
    attention: int = 0
    verdicts: list = field(default_factory=list)


class Meter:
    """Time inside the transformer, and how many feed-forwards and attentions ran, by hooks: a cache skips a
    block's (or an attention's) computation, so the query projection inside it is not called."""

    def __init__(self, transformer):
        self.denoising, self.blocks, self.attention, self._started = 0.0, 0, 0, 0.0
        transformer.register_forward_pre_hook(self._start)
        transformer.register_forward_hook(self._stop)
        for block in transformer.transformer_blocks:
            block.ff.register_forward_pre_hook(self._block)
            block.attn1.to_q.register_forward_pre_hook(self._attention)

    def _start(self, module, args):
        self._started = time.perf_counter()

    def _stop(self, module, args, output):
        self.denoising += time.perf_counter() - self._started

    def _block(self, module, args):
        self.blocks += 1

    def _attention(self, module, args):
        self.attention += 1


def run_batch(pipe, meter: Meter, setting: Setting, items, references, tally: Tally) -> None:
    before = (meter.denoising, meter.blocks, meter.attention)
    started = time.perf_counter()
    frames = pipe(
        references,
        [item["prompt"] for item in items],
        height=48,
        width=48,
        num_frames=9,
        num_inference_steps=setting.steps,
        generator=torch.Generator().manual_seed(items[0]["seed"]),
        cache=setting.cache,
    ).frames
    tally.seconds += time.perf_counter() - started
    tally.denoising += meter.denoising - before[0]
    tally.blocks += meter.blocks - before[1]
    tally.attention += meter.attention - before[2]
    for video in frames:
        analysis = analyze_clip((np.asarray(video) * 255).round().astype(np.uint8))
        tally.verdicts.append({v: getattr(analysis, v) for v in VERDICTS} | {"present": bool(analysis.found.all())})


def table(tallies: dict[str, Tally], items: list[dict]) -> str:
    full, n = tallies["full"], len(items)
    truth = [_truth(item) for item in items]
    lines = [
        "| setting | end to end | denoising | blocks run | attention run | shape | colour | pattern | strict motion "
        "| verdicts changed (colour, shape, motion) | all three agree |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, tally in tallies.items():
        right = {v: sum(got[v] == want[v] for got, want in zip(tally.verdicts, truth, strict=True)) for v in VERDICTS}
        strict = sum(g["present"] and g["motion"] == t["motion"] for g, t in zip(tally.verdicts, truth, strict=True))
        pairs = list(zip(tally.verdicts, full.verdicts, strict=True))
        changed = [sum(a[v] != b[v] for a, b in pairs) for v in ("colour", "shape", "motion")]
        agree = sum(all(a[v] == b[v] for v in ("colour", "shape", "motion")) for a, b in pairs)
        lines.append(
            f"| {name} | {full.seconds / tally.seconds:.2f}x | {full.denoising / tally.denoising:.2f}x "
            f"| {tally.blocks / full.blocks:.0%} | {tally.attention / full.attention:.0%} | {right['shape']}/{n} "
            f"| {right['colour']}/{n} | {right['pattern']}/{n} | {strict}/{n} | "
            + ", ".join(f"{k}/{n}" for k in changed)
            + f" | {agree}/{n} |"
        )
    return "\n".join(lines)


def _truth(item: dict) -> dict:
    subject = Identity.from_id(item["identity"])
    return {"colour": subject.colour, "shape": subject.shape, "pattern": subject.pattern, "motion": item["motion"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=96, help="held-out items (default 96, at most 192)")
    parser.add_argument("--skip-rates", type=Path, help="write each cache's share of blocks computed here (JSON)")
    args = parser.parse_args()
    pipe = load_pipeline(LoadSettings(preset="nano"))
    pipe.set_progress_bar_config(disable=True)
    meter = Meter(pipe.transformer)
    steps = pipe.preset.num_inference_steps  # an example subject and seeds no item uses: as a user calibrates
    pipe.mag_ratios = calibrate_mag(pipe, CALIBRATION_SUBJECT, CALIBRATION_PROMPT, steps, seeds=(1000, 1001, 1002))
    held = split_identities(0)[1]
    items = eval_items(held, 8)[: args.items]
    references = {identity.id: render_subject(identity, 48, 48) for identity in held}
    tallies = {setting.name: Tally() for setting in SETTINGS}
    warm = items[:BATCH]  # the first run of a process pays for one-time set-up: timed by nobody
    run_batch(pipe, meter, SETTINGS[0], warm, [references[i["identity"]] for i in warm], Tally())
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        shown = [references[item["identity"]] for item in batch]
        for setting in SETTINGS:
            run_batch(pipe, meter, setting, batch, shown, tallies[setting.name])
        print(f"{start + len(batch)}/{len(items)} items", flush=True)
    print(table(tallies, items))
    if args.skip_rates:
        full = tallies["full"]
        rates = {
            name: {"blocks": t.blocks / full.blocks, "attention": t.attention / full.attention}
            for name, t in tallies.items()
        }
        args.skip_rates.write_text(json.dumps(rates, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
