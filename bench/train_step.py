"""What the reference tokens cost in training: our step vs a plain CogVideoX LoRA step.

Our fine-tuning (s2v_train/, METHOD §5) trains each micro-batch on one of two tasks. Identity
injection: 8 images, each a one-frame video with its reference image prepended as a second
latent frame. Motion preservation: 1 clip of 13 latent frames with a reference frame
prepended, or (probability q) with the whole reference stream dropped. The switch picks
motion with probability p. A plain CogVideoX LoRA fine-tune on the same data trains the
same images and clips without reference tokens (`predict(..., reference_latents=None,
frame_offset=0)`), with the same LoRA (METHOD §4's targets) and the same AdamW. For the
5B at 480x720x49 that is, per sample, 226 text + 13 x 1350 video tokens (+1350 reference)
for a clip and 226 + 1350 (+1350) for an image: the image task doubles its frame tokens.

One training step = forward and v-prediction MSE (ours: `s2v_train.tasks.batch_loss`; plain: the
same without the reference), backward (with gradient checkpointing, as s2v_train/ by default),
gradient clipping, AdamW step and zero_grad, as in s2v_train/loop.py minus accelerate and the
LR schedule, which cost the same either way. fp32, as s2v_train/ runs on a CPU.

Printed:
  1. Per case: batch, tokens per sample, and FLOPs per training step for the full 5B
     (LoRA rank 128) and the reduced model, counted by `torch.utils.flop_counter` on the
     meta device (no weights, no compute) and cross-checked against the count of a real
     step of the reduced model.
  2. Wall time per step and per sample of every case on the reduced model, interleaved
     over several rounds in alternating order (median, min, max), and the switched-training
     mix: the expected time per optimizer step, (1-p) identity + p ((1-q) kept + q dropped
     motion), against a plain fine-tune on the same data mix, (1-p) image + p video.
  3. Ours/plain ratios, per task and for the mix: tokens, forward FLOPs (bench/overhead.py's
     analytic formula), training-step FLOPs, and time.

Not measured: the frozen T5 and VAE that encode each micro-batch (the batches here are random
latents and embeddings of the right shapes). T5 costs the same both ways: prompts are padded
to 226 tokens and `<cls>` takes the place of a padding one. The VAE encodes one extra image
per sample for us, the reference; s2v_train/ encodes on the fly, so it pays that there, outside
the transformer step, and it is gone wherever latents are cached ahead of training.

Why a reduced model: a 5B training step takes hours on 2 CPU cores. The reduced model is
bench/overhead.py's (4 heads x 64, 8x14 tokens per frame, 19 text tokens, same tokens/width
as the 5B, so attention's share of the FLOPs and hence the ratios carry over), with the
LoRA rank scaled with the width (128 x 256 / 3072 ~ 11) so the LoRA's share of the linear
FLOPs carries over too.

Run from the repository root: `python bench/train_step.py [--repeats N] [--layers N] [--quick]`
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXTransformer3DModel
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count

from s2v.model import predict
from s2v.tiny import COGVIDEOX_5B_TRANSFORMER as FIVE_B_CONFIG
from s2v.tiny import SCHEDULER_CONFIG
from s2v_train.config import TrainConfig
from s2v_train.loop import make_optimizer, make_trainable
from s2v_train.tasks import IDENTITY, MOTION, Batch, batch_loss


def _load_overhead():
    """bench/overhead.py, loaded by path, for its token layouts, reduced config and FLOP formula."""
    spec = importlib.util.spec_from_file_location("bench_overhead", Path(__file__).with_name("overhead.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


overhead = _load_overhead()
TASKS = TrainConfig().tasks
P, Q = TASKS.motion_probability, TASKS.drop_probability
FIVE_B_RANK = TrainConfig().model.lora_rank


@dataclass(frozen=True)
class Case:
    """One micro-batch shape and the loss that trains it."""

    label: str
    ours: bool
    """`s2v_train.tasks.batch_loss` (reference frame, video at RoPE 1..T), or the plain loss (RoPE 0..T-1)."""
    task: str
    batch: int
    frames: int
    reference: bool
    """Whether the reference tokens are in the forward."""

    def layout(self, base):
        return dataclasses.replace(base, frames=self.frames)

    def tokens(self, config: dict, base) -> int:
        return self.layout(base).tokens(config["patch_size"], self.reference)


CASES = {
    "kept": Case("ours  motion, reference kept", True, MOTION, TASKS.video_batch_size, 13, True),
    "dropped": Case("ours  motion, reference dropped", True, MOTION, TASKS.video_batch_size, 13, False),
    "video": Case("plain video", False, MOTION, TASKS.video_batch_size, 13, False),
    "identity": Case("ours  identity", True, IDENTITY, TASKS.image_batch_size, 1, True),
    "image": Case("plain image", False, IDENTITY, TASKS.image_batch_size, 1, False),
}
"""Timed in this order, then in reverse, and so on: each plain case runs next to ours of its shape."""

SAMPLES_PER_STEP = (1 - P) * TASKS.image_batch_size + P * TASKS.video_batch_size


def mix(values: dict[str, float], ours: bool) -> float:
    """The expectation per optimizer step of the switched training (ours) or of plain LoRA on the same data."""
    if ours:
        return (1 - P) * values["identity"] + P * ((1 - Q) * values["kept"] + Q * values["dropped"])
    return (1 - P) * values["image"] + P * values["video"]


def motion(values: dict[str, float]) -> float:
    """The expectation of one motion step of ours, reference kept or dropped."""
    return (1 - Q) * values["kept"] + Q * values["dropped"]


def plain_loss(transformer, config, scheduler, batch: Batch, generator: torch.Generator) -> torch.Tensor:
    """Stock CogVideoX LoRA fine-tuning: `batch_loss`'s draws and v-prediction MSE, no reference tokens."""
    latents = batch.latents
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
    noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(latents.device)
    timesteps = timesteps.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = scheduler.get_velocity(latents, noise, timesteps)
    prediction = predict(transformer, noisy, timesteps, batch.prompt_embeds, None, frame_offset=0, config=config)
    return torch.nn.functional.mse_loss(prediction.float(), target.float())


def make_batch(config: dict, case: Case, base, device: str = "cpu", seed: int = 0) -> Batch:
    """Random clean latents and text embeddings of the case's shape: the encoders' output, without the encoders."""
    gen = torch.Generator().manual_seed(seed)
    grid = (config["in_channels"], base.latent_height, base.latent_width)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(device)

    size = case.batch
    return Batch(
        task=case.task,
        latents=randn(size, case.frames, *grid),
        reference=randn(size, 1, *grid),
        keep=torch.full((size,), case.reference),
        prompt_embeds=randn(size, base.text_tokens, config["text_embed_dim"]),
        prompts=[""] * size,
        frame_indices=[None] * size,
    )


def train_config(rank: int) -> TrainConfig:
    """s2v_train/'s defaults (AdamW settings, clipping), with the LoRA rank given."""
    config = TrainConfig()
    config.model.lora_rank = rank
    return config


@dataclass
class Trainer:
    """What s2v_train/loop.py holds across steps: the LoRA-wrapped transformer, optimizer, scheduler, generator."""

    model: CogVideoXTransformer3DModel
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: CogVideoXDPMScheduler
    generator: torch.Generator
    max_grad_norm: float


def make_trainer(config: dict, rank: int, checkpointing: bool) -> Trainer:
    """The frozen transformer with s2v_train/'s LoRA and AdamW (`s2v_train.loop.make_trainable`, `make_optimizer`)."""
    train = train_config(rank)
    model = CogVideoXTransformer3DModel(**config)
    model.requires_grad_(False)
    trainable = make_trainable(model, train)
    if checkpointing:
        model.enable_gradient_checkpointing()
    return Trainer(
        model=model.train(),
        trainable=trainable,
        optimizer=make_optimizer(trainable, train),
        scheduler=CogVideoXDPMScheduler(**SCHEDULER_CONFIG),
        generator=torch.Generator().manual_seed(0),
        max_grad_norm=train.optim.max_grad_norm,
    )


def step_fn(trainer: Trainer, case: Case, batch: Batch) -> Callable[[], None]:
    """One optimizer step on `batch`, as s2v_train/loop.py takes it (minus accelerate and the LR schedule)."""
    loss_fn = batch_loss if case.ours else plain_loss

    def step() -> None:
        loss = loss_fn(trainer.model, trainer.model.config, trainer.scheduler, batch, trainer.generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.trainable, trainer.max_grad_norm)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()

    return step


def time_rounds(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call, in rounds that call every function once, alternately forward and backward (ABC CBA ...).

    Interleaving makes machine noise hit all alike; alternating the order puts every function at
    every place on average, so none always runs first or always after the same neighbour.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for index in range(repeats):
        for name in list(fns) if index % 2 == 0 else reversed(list(fns)):
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


# ---- FLOPs -------------------------------------------------------------------------------------


def _cpu_sdpa_backward_flops(
    grad_shape: torch.Size, query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args, **kwargs
) -> int:
    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


SDPA_CPU = {
    **overhead.SDPA_CPU,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}
"""torch counts the CUDA attention kernels but not the CPU ones (forward and backward)."""


def _flash_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """`F.scaled_dot_product_attention` as the CPU flash kernel, whose backward recomputes the scores.

    On the meta device torch would pick the math attention, whose backward keeps them; the fused
    kernels that train (flash on this CPU, flash or memory-efficient on a GPU) recompute them.
    """
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return op(query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


def counted_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False, custom_mapping=SDPA_CPU) as counter:
        fn()
    return counter.get_total_flops()


def meta_step_flops(config: dict, base, rank: int, checkpointing: bool) -> dict[str, int]:
    """FLOPs of one training step per case, counted on the meta device (shapes only, no compute).

    Every block is identical, so models with no block and with one give the count at any depth.
    The optimizer's update is elementwise, which the counter leaves out.
    """
    counts = []
    for layers in (0, 1):
        with torch.device("meta"):
            trainer = make_trainer({**config, "num_layers": layers}, rank, checkpointing)
        with mock.patch("torch.nn.functional.scaled_dot_product_attention", _flash_attention):
            counts.append(
                {
                    name: counted_flops(step_fn(trainer, case, make_batch(config, case, base, "meta")))
                    for name, case in CASES.items()
                }
            )
    none, one = counts
    return {name: none[name] + config["num_layers"] * (one[name] - none[name]) for name in CASES}


def forward_flops(config: dict, base) -> dict[str, int]:
    """bench/overhead.py's analytic forward FLOPs (matmul, conv, attention), times the batch."""
    return {
        name: case.batch * overhead.analytic_flops(config, case.layout(base), case.reference)
        for name, case in CASES.items()
    }


# ---- Printing ----------------------------------------------------------------------------------

RATIOS: list[tuple[str, Callable[[dict], float], Callable[[dict], float]]] = [
    ("video, reference kept", lambda v: v["kept"], lambda v: v["video"]),
    ("video, reference dropped", lambda v: v["dropped"], lambda v: v["video"]),
    (f"motion step (q={Q})", motion, lambda v: v["video"]),
    ("image (identity step)", lambda v: v["identity"], lambda v: v["image"]),
    (f"switched mix (p={P}), same data", lambda v: mix(v, ours=True), lambda v: mix(v, ours=False)),
]
"""Ours / plain, as functions of per-case values (tokens, FLOPs or seconds per step)."""


def _si(flops: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops / 1e6:.2f} MFLOP"


def _tokens(case: Case, config: dict, base) -> str:
    layout = case.layout(base)
    video = (layout.frames + case.reference) * layout.frame_tokens(config["patch_size"])
    return f"{layout.text_tokens}+{video}"


def _model_name(config: dict, rank: int) -> str:
    heads = f"{config['num_attention_heads']}x{config['attention_head_dim']} heads"
    return f"{heads}, {config['num_layers']} layers, LoRA rank {rank}"


def print_flops(reduced: dict, rank: int, five_b: dict, small: dict, real: dict, checkpointing: bool) -> None:
    what = "forward, checkpoint recompute, backward" if checkpointing else "forward, backward"
    print(f"Cases, and FLOPs per training step ({what}), counted on the meta device")
    print(f"  5B: CogVideoX-5B at 480x720x49, {_model_name(FIVE_B_CONFIG, FIVE_B_RANK)}")
    print(f"  reduced: {_model_name(reduced, rank)}, 8x14 tokens per frame")
    group = 11 + 15 + 14
    print(f"  {'':<32}{'':>6}  {' 5B ':-^{group - 2}}  {' reduced ':-^{group - 2}}")
    columns = f"{'tokens':>11}{'step':>15}{'per sample':>14}"
    print(f"  {'case':<32}{'batch':>6}{columns}{columns}")
    for name, case in CASES.items():
        print(f"  {case.label:<32}{case.batch:>6}", end="")
        for flops, config, base in (
            (five_b, FIVE_B_CONFIG, overhead.FIVE_B_LAYOUT),
            (small, reduced, overhead.REDUCED_LAYOUT),
        ):
            tokens, per_sample = _tokens(case, config, base), flops[name] / case.batch
            print(f"{tokens:>11}{_si(flops[name]):>15}{_si(per_sample):>14}", end="")
        print()
    print("  tokens: per sample, text + video (with the reference frame where there is one)")
    worst = max(abs(real[name] / small[name] - 1) for name in CASES)
    print(f"  cross-check, reduced model: the meta counts and the counts of real steps differ by at most {worst:.4%}")


def _series(times: dict[str, list[float]], fn: Callable[[dict], float]) -> list[float]:
    """`fn` of each round's times: a derived quantity, per round, so its spread shows like a case's."""
    rounds = len(next(iter(times.values())))
    return [fn({name: t[i] for name, t in times.items()}) for i in range(rounds)]


def print_times(times: dict[str, list[float]], label: str) -> None:
    print(f"\nWall time per training step, {label}")
    print(f"  {'case':<40}{'median':>10}{'min':>10}{'max':>10}{'per sample':>12}")
    rows = [(case.label, times[name], case.batch) for name, case in CASES.items()]
    rows += [
        ("ours  switched, per optimizer step", _series(times, lambda v: mix(v, ours=True)), SAMPLES_PER_STEP),
        ("plain LoRA on the same data mix", _series(times, lambda v: mix(v, ours=False)), SAMPLES_PER_STEP),
    ]
    for name, t, samples in rows:
        median = statistics.median(t)
        print(
            f"  {name:<40}{median * 1e3:>8.0f}ms{min(t) * 1e3:>8.0f}ms{max(t) * 1e3:>8.0f}ms"
            f"{median / samples * 1e3:>10.1f}ms"
        )
    ours, plain = f"{1 - P:g} identity + {P:g} ({1 - Q:g} kept + {Q:g} dropped)", f"{1 - P:g} image + {P:g} video"
    print(f"  switched = {ours}; plain = {plain}")
    print(f"  (p = {P:g}, q = {Q:g}: trainer defaults; {SAMPLES_PER_STEP:g} samples per optimizer step, on average)")
    spread = max(max(t) / min(t) for t in times.values())
    if spread > 1.5:
        # Identical steps should take the same time; a wide spread means other processes took the cores.
        print(f"  NOTE: identical steps varied up to {spread:.1f}x: the machine was busy, so the timings are noisy.")


def print_ratios(times: dict[str, list[float]], tokens: dict, forward: dict, five_b: dict, small: dict) -> float:
    """Print ours/plain for every row of RATIOS and return the switched mix's median pair ratio of time."""
    print("\nOurs / plain")
    print(f"  {'':<34}{'tokens':>8}{'fwd FLOPs':>11}{'step FLOPs':>12}{'step FLOPs':>12}", end="")
    print(f"{'time':>9}{'time, median of':>24}{'time':>8}")
    print(f"  {'':<34}{'5B':>8}{'5B':>11}{'5B':>12}{'reduced':>12}{'medians':>9}{'pairs (range)':>24}{'mins':>8}")
    medians = {name: statistics.median(t) for name, t in times.items()}
    mins = {name: min(t) for name, t in times.items()}
    pair_medians = []
    for label, ours, plain in RATIOS:
        counts = "".join(f"{ours(v) / plain(v):>{w}.3f}" for v, w in ((tokens, 8), (forward, 11), (five_b, 12)))
        # Both sides of a pair run in the same round, so its ratio cancels load that drifts slower than a round.
        pairs = [a / b for a, b in zip(_series(times, ours), _series(times, plain), strict=True)]
        pair_medians.append(statistics.median(pairs))
        print(
            f"  {label:<34}{counts}{ours(small) / plain(small):>12.3f}{ours(medians) / plain(medians):>9.3f}"
            f"{pair_medians[-1]:>10.3f} ({min(pairs):.3f}-{max(pairs):.3f}){ours(mins) / plain(mins):>8.3f}"
        )
    print("  tokens: per step (batch x tokens/sample); fwd FLOPs: bench/overhead.py's analytic forward, x batch;")
    print("  step FLOPs: the counts above; time: the reduced model (other processes only add time, so the minimums")
    print("  are the least disturbed)")
    return pair_medians[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8, help="timed steps of each case (default 8)")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks in the reduced model (default 4)")
    parser.add_argument("--rank", type=int, help="LoRA rank of the reduced model (default: 128 x its width / 3072)")
    parser.add_argument("--no-checkpointing", action="store_true", help="no gradient checkpointing (training uses it)")
    parser.add_argument("--quick", action="store_true", help="2 layers, 2 repeats, no extra warm-up: a smoke run")
    args = parser.parse_args()
    layers, repeats, warmup = (2, 2, 0) if args.quick else (args.layers, args.repeats, 1)
    checkpointing = TrainConfig().model.gradient_checkpointing and not args.no_checkpointing

    torch.manual_seed(0)
    reduced = overhead.reduced_config(layers)

    def width(config: dict) -> int:
        return config["num_attention_heads"] * config["attention_head_dim"]

    rank = args.rank or round(FIVE_B_RANK * width(reduced) / width(FIVE_B_CONFIG))
    print(f"s2v train step: torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU\n")
    five_b = meta_step_flops(FIVE_B_CONFIG, overhead.FIVE_B_LAYOUT, FIVE_B_RANK, checkpointing)
    small = meta_step_flops(reduced, overhead.REDUCED_LAYOUT, rank, checkpointing)

    # One trainer for all cases, as in training: the same LoRA and AdamW state, whichever the task.
    trainer = make_trainer(reduced, rank, checkpointing)
    steps = {
        name: step_fn(trainer, case, make_batch(reduced, case, overhead.REDUCED_LAYOUT, seed=index))
        for index, (name, case) in enumerate(CASES.items())
    }
    real = {name: counted_flops(step) for name, step in steps.items()}  # also the first warm-up
    print_flops(reduced, rank, five_b, small, real, checkpointing)

    times = time_rounds(steps, repeats, warmup)
    warmups = f"{warmup + 1} warm-up{'s' if warmup else ''}"
    print_times(times, f"reduced {_model_name(reduced, rank)} ({repeats} rounds, after {warmups})")
    tokens = {name: case.batch * case.tokens(FIVE_B_CONFIG, overhead.FIVE_B_LAYOUT) for name, case in CASES.items()}
    forward = forward_flops(FIVE_B_CONFIG, overhead.FIVE_B_LAYOUT)
    time_ratio = print_ratios(times, tokens, forward, five_b, small)
    print(
        f"\nSwitched training vs a plain CogVideoX LoRA fine-tune on the same data: {time_ratio:.2f}x the time per"
        f" optimizer step\n(reduced model, median of pairs), {mix(five_b, True) / mix(five_b, False):.2f}x the"
        " training FLOPs on the 5B."
    )


if __name__ == "__main__":
    main()
