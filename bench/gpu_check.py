"""The GPU check: s2v's costs at CogVideoX-5B's size on one CUDA GPU, in one run of under 5 minutes.

A GPU is lent to this project rarely, for minutes, without network, and CI never has one. So what is worth
measuring there is in this one prepared script: it downloads nothing (random weights of the real shapes), writes
each row the moment it is measured (a run cut short keeps what it measured), and turns whatever cannot run (no
CUDA, a missing package, an error, the time budget spent) into a row that says why, then goes on. `--smoke` runs
the same code on tiny sizes on a CPU, so CI keeps it working between GPU runs.

Parts (--parts, run in the order given):
  tiny    the tiny preset end to end through `load_pipeline` on the device: the wiring runs there at all.
  vae     the tiled decode of 13 latent frames of 60x90 by a random VAE of the 5B's config: seconds, peak memory.
  steps   the 5B transformer (random bf16 weights) with the method's LoRA (rank 128), CFG batch 2, 49x480x720:
          seconds per denoising step without and with the reference frame, with torch.compile, and with each
          cache (the mean over a short loop, and the cost of a step it skips); the 5B speed-ups these costs imply
          at the skip rates measured on nano (--skip-rates, written by bench/cache.py) are estimates, marked so.
  memory  peak memory of one step and of a 2-step generation under each of s2v's --offload and --quantize modes,
          each loaded as users load it (`load_pipeline`, from a random pipeline saved for the purpose).

Usage, from anywhere (s2v need not be installed):
  python bench/gpu_check.py --smoke --out /tmp/gpu_check.md    # a CPU, tiny sizes, well under a minute
  python bench/gpu_check.py --out gpu_check.md                  # one CUDA GPU
  python bench/gpu_check.py --parts steps --skip-rates runs/cache/skip_rates.json
bench/gpu_wheels.sh fetches the wheels the GPU machine lacks and prints the command to run there.
Rows not yet begun after --budget seconds (default 240) are marked so rather than run: the run ends within its
minutes even where a part is slower than planned, and the marked rows say which --parts to run next. The exit
status is 1 when a row failed with an error; rows that cannot run here are not errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU machine has no network: fail at once instead of waiting
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if importlib.util.find_spec("s2v") is None:  # a bare checkout, as on the GPU machine: use this checkout's s2v
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:  # a missing package makes each part a row that names it, not a crash before the table
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel
    from peft import LoraConfig
    from transformers import T5Config, T5EncoderModel

    from s2v.caching import CACHE_METHODS, cache_config, cache_enabled
    from s2v.errors import S2VError
    from s2v.loading import (
        ADAPTER_NAME,
        AUTHORS_ALPHA,
        AUTHORS_RANK,
        DTYPES,
        LORA_TARGET_MODULES,
        OFFLOAD_MODES,
        QUANTIZE_MODES,
        LoadSettings,
        check_memory_settings,
        load_pipeline,
        resolve_device,
        save_lora,
    )
    from s2v.model import predict
    from s2v.pipeline import S2VPipeline
    from s2v.presets import PRESETS
    from s2v.tiny import COGVIDEOX_5B_TRANSFORMER, EMBEDDING_PADDING_ROWS, SCHEDULER_CONFIG, VAE_CONFIG, tiny_tokenizer

    MISSING = None
except ModuleNotFoundError as error:
    MISSING = error.name

PARTS = ("tiny", "vae", "steps", "memory")
NOT_RUN = "not run"
PROMPT = "a dog runs"
"""Short enough for the smoke model's 16 text tokens, in the tiny tokenizer's letters."""
FIVE_B_VAE = {"scaling_factor": 0.7}
"""`AutoencoderKLCogVideoX`'s defaults are CogVideoX's VAE; the 5B's scaling factor is 0.7."""
SMOKE_TRANSFORMER = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=2,
    time_embed_dim=32,
    text_embed_dim=32,
    sample_height=8,
    sample_width=12,
    max_text_seq_length=16,
)
"""Shrinks the 5B's config, keeping its other settings (activation, biases, RoPE), so the code paths match."""
PACKAGES = ("diffusers", "transformers", "peft", "accelerate", "bitsandbytes", "torchao")
NEVER = 10**6


@dataclass(frozen=True)
class Skips:
    """How a cache saves work: which of nano's shares counts it (bench/cache.py counts "blocks" run and
    "attention" calls run), and settings that make it skip all it can after its first steps, so one short loop
    shows what a skipped step costs on the 5B."""

    counted: str
    always: dict


CACHES = {
    "first-block": Skips("blocks", dict(threshold=float("inf"))),
    "mag": Skips("blocks", dict(threshold=float("inf"), max_skip_steps=NEVER, retention_ratio=0.0)),
    "taylorseer": Skips("attention", dict(cache_interval=NEVER)),
    "pab": Skips(
        "attention", dict(spatial_attention_block_skip_range=NEVER, spatial_attention_timestep_skip_range=(-1, NEVER))
    ),
    "faster": Skips(
        "attention",
        dict(
            spatial_attention_block_skip_range=NEVER,
            spatial_attention_timestep_skip_range=(-1, NEVER),
            unconditional_batch_skip_range=NEVER,
            unconditional_batch_timestep_skip_range=(-1, NEVER),
        ),
    ),
}


class NotHere(Exception):
    """A row that cannot run on this machine; its message says why."""


@dataclass(frozen=True)
class Sizes:
    """The shapes a run measures: the 5B's on a GPU, tiny ones for --smoke."""

    label: str
    transformer: dict
    vae: dict
    frames: int
    """Latent frames."""
    latent_height: int
    latent_width: int
    lora_rank: int
    device: str
    dtype: torch.dtype
    compile_backend: str

    @property
    def channels(self) -> int:
        return self.transformer["in_channels"]

    @property
    def text_tokens(self) -> int:
        return self.transformer["max_text_seq_length"]

    @property
    def text_dim(self) -> int:
        return self.transformer["text_embed_dim"]

    @property
    def video(self) -> tuple[int, int, int]:
        """(frames, height, width) of the video the latents decode to."""
        return 4 * (self.frames - 1) + 1, 8 * self.latent_height, 8 * self.latent_width

    @property
    def latents(self) -> str:
        return f"{self.frames}x{self.latent_height}x{self.latent_width}"


def sizes_for(smoke: bool) -> Sizes:
    if not smoke:
        return Sizes(
            label="CogVideoX-5B",
            transformer=COGVIDEOX_5B_TRANSFORMER,
            vae=FIVE_B_VAE,
            frames=13,
            latent_height=60,
            latent_width=90,
            lora_rank=AUTHORS_RANK,
            device="cuda",
            dtype=torch.bfloat16,
            compile_backend="inductor",
        )
    return Sizes(
        label="smoke (tiny sizes)",
        transformer={**COGVIDEOX_5B_TRANSFORMER, **SMOKE_TRANSFORMER},
        # Tiles of half the sample size, 48x80 pixels, cut the 8x12 latent grid as the 5B's cut its 60x90, and fit
        # it (diffusers' tiling overshoots a grid its tiles do not fit: 32x48 tiles decode 8x12 to 70x110).
        vae={**VAE_CONFIG, "latent_channels": 16, "sample_height": 96, "sample_width": 160},
        frames=3,
        latent_height=8,
        latent_width=12,
        lora_rank=4,
        device="cpu",
        dtype=torch.bfloat16,
        compile_backend="eager",  # dynamo's capture without inductor's minutes of C++ builds on two cores
    )


class Report:
    """The markdown table, each row printed and appended to the file the moment it is known."""

    def __init__(self, path: Path, budget: float):
        self.path, self.budget, self.errors = path, budget, 0
        self.started = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self._write("| part | measurement | result | note | at (s) |")
        self._write("|---|---|---|---|---|")

    def row(self, part: str, what: str, result: str, note: str = "") -> None:
        cells = (part, what, result, note, f"{time.perf_counter() - self.started:.0f}")
        self._write("| " + " | ".join(" ".join(str(cell).replace("|", "/").split()) for cell in cells) + " |")

    def measure(self, part: str, what: str, fn: Callable[[Callable[..., None]], object]) -> object:
        """`fn(say)`'s value, `say(result, note, what=...)` writing its rows; or None and a row saying why it did
        not run or failed. One broken mode must not cost the rows after it."""
        if time.perf_counter() - self.started > self.budget:
            self.row(part, what, NOT_RUN, f"the time budget (--budget {self.budget:.0f} s) was spent; --parts {part}")
            return None
        try:
            return fn(lambda result, note="", what=what: self.row(part, what, result, note))
        except NotHere as reason:
            self.row(part, what, NOT_RUN, str(reason))
        except ImportError as error:  # a package missing, or a version diffusers refuses
            missing = isinstance(error, ModuleNotFoundError)
            self.row(part, what, NOT_RUN, f"{error.name} is not installed" if missing else str(error).strip()[:300])
        except Exception as error:
            self.errors += 1
            traceback.print_exc()
            self.row(part, what, "error", f"{type(error).__name__}: {str(error).strip()[:300]}")
        finally:
            free_memory()
        return None

    def _write(self, line: str) -> None:
        print(line, flush=True)
        with self.path.open("a") as handle:
            handle.write(line + "\n")


def free_memory() -> None:
    """Give the GPU back what the last row held (hooks and adapters keep modules in reference cycles)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def timed(fn: Callable[[], object], device: str) -> tuple[float, object]:
    """Seconds of `fn()` and its value; on a GPU, the queued kernels are waited for on both sides."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, value


def median_seconds(fn: Callable[[], object], device: str, repeats: int) -> float:
    """The median of `repeats` timed calls after one untimed warm-up (kernel loading, autotuning)."""
    fn()
    return statistics.median(timed(fn, device)[0] for _ in range(repeats))


def reset_peak(device: str) -> None:
    free_memory()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak(device: str) -> str:
    if device != "cuda":
        return "ran (peak n/a: CPU)"
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


@dataclass
class StepInputs:
    """One denoising step's transformer inputs: CFG batch 2, random text embeddings in T5-XXL's place."""

    latents: torch.Tensor
    reference: torch.Tensor
    text: torch.Tensor
    timestep: torch.Tensor


def step_inputs(sizes: Sizes) -> StepInputs:
    generator = torch.Generator().manual_seed(0)
    grid = (sizes.channels, sizes.latent_height, sizes.latent_width)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(sizes.device, sizes.dtype)

    return StepInputs(
        latents=randn(2, sizes.frames, *grid),
        reference=randn(2, 1, *grid),
        text=randn(2, sizes.text_tokens, sizes.text_dim),
        timestep=torch.full((2,), 500, device=sizes.device),
    )


def step(transformer, inputs: StepInputs, reference: bool, timestep: torch.Tensor | None = None) -> torch.Tensor:
    """One guided denoising forward as the pipeline makes it (cache context included), with or without the
    reference frame; without it the video sits at RoPE frames 0.. as in stock CogVideoX."""
    with torch.no_grad(), transformer.cache_context("cond_uncond"):
        return predict(
            transformer,
            inputs.latents,
            inputs.timestep if timestep is None else timestep,
            inputs.text,
            inputs.reference if reference else None,
            frame_offset=1 if reference else 0,
        )


def random_transformer(sizes: Sizes) -> CogVideoXTransformer3DModel:
    """Built on the device itself: a 5B initialised on a CPU would take minutes of the GPU's lease."""
    torch.manual_seed(0)
    with torch.device(sizes.device):
        return CogVideoXTransformer3DModel(**sizes.transformer).to(sizes.dtype).eval()


def add_lora(transformer, rank: int) -> None:
    """METHOD §4's LoRA, unmerged as s2v loads it: its matmuls are part of every step's cost."""
    config = LoraConfig(
        r=rank,
        lora_alpha=rank * AUTHORS_ALPHA / AUTHORS_RANK,
        target_modules=list(LORA_TARGET_MODULES),
        init_lora_weights=True,
    )
    transformer.add_adapter(config, adapter_name=ADAPTER_NAME)


def build_row(say, sizes: Sizes):
    seconds, transformer = timed(lambda: random_transformer(sizes), sizes.device)
    add_lora(transformer, sizes.lora_rank)
    lora = sum(p.numel() for name, p in transformer.named_parameters() if "lora_" in name)
    total = sum(p.numel() for p in transformer.parameters())
    say(f"{seconds:.1f} s", f"{total - lora:,} weights + {lora:,} LoRA, {sizes.dtype}, random")
    return transformer


def step_row(say, transformer, inputs: StepInputs, reference: bool, repeats: int, device: str, plain=None):
    seconds = median_seconds(lambda: step(transformer, inputs, reference), device, repeats)
    note = f"median of {repeats} after a warm-up; CFG batch 2"
    if plain:
        note += f"; x{seconds / plain:.3f} the step without reference"
    say(f"{seconds:.3f} s", note)
    return seconds


def cache_loop(transformer, inputs: StepInputs, config_for: Callable, steps: int, device: str) -> list[float]:
    """Seconds of each step of a `steps`-step loop with a cache on, at the timesteps the sampler walks."""
    scheduler = CogVideoXDPMScheduler(**SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps, device=device)
    now = {}
    times = []
    with cache_enabled(transformer, config_for(lambda: now["t"])):
        for t in scheduler.timesteps:
            now["t"] = t
            times.append(timed(lambda t=t: step(transformer, inputs, True, t.expand(2)), device)[0])
    return times


def cache_rows(say, transformer, inputs: StepInputs, method: str, full: float | None, steps: int, device: str):
    """The mean step with s2v's settings, and the cost of a skipped step (the fastest, with all it can skip
    skipped): on random weights which steps a cache skips means nothing, but what each kind of step costs does."""
    if method not in CACHES:
        raise NotHere(f"no always-skip setting for {method} in {Path(__file__).name}")
    ratios = [1.0] * steps if method == "mag" else None  # the 5B has no calibrated ratios: placeholders

    def settings(clock):
        return cache_config(method, ratios, steps, True, clock)

    mean = statistics.mean(cache_loop(transformer, inputs, settings, steps, device))
    versus = f"; x{full / mean:.2f} the uncached step's speed" if full else ""
    placeholder = ", placeholder ratios of 1.0" if ratios else ""
    say(
        f"{mean:.3f} s",
        f"mean of {steps} steps, s2v's settings{placeholder}{versus}",
        what=f"cache {method}: mean step",
    )

    def always(clock):
        return dataclasses.replace(settings(clock), **CACHES[method].always)

    skipped = min(cache_loop(transformer, inputs, always, steps, device))
    share = f"{skipped / full:.0%} of a full step; " if full else ""
    say(
        f"{skipped:.3f} s",
        f"{share}fastest of {steps} steps set to skip all it can",
        what=f"cache {method}: skipped step",
    )
    return skipped


def estimate_rows(say, label: str, full: float | None, skipped: dict, path: Path | None) -> None:
    """Speed-up = this model's step costs x nano's shares: a setting that computes `share` of what its method can
    skip costs skipped + share x (full - skipped) a step. An estimate, never a measurement."""
    if path is None or not path.is_file():
        say(
            "not available", "no nano skip rates: run `python bench/cache.py --skip-rates PATH`, pass --skip-rates PATH"
        )
        return
    if full is None or not any(skipped.values()):
        say("not available", "the step and cache rows above did not run")
        return
    rows = 0
    for setting, shares in json.loads(path.read_text()).items():
        method = setting.split()[0]
        if skipped.get(method) is None:
            continue
        kind, cost = CACHES[method].counted, skipped[method]
        step_cost = cost + shares[kind] * (full - cost)
        note = f"nano runs {shares[kind]:.0%} of its {kind}; {label} step {full:.3f} s, skipped {cost:.3f} s"
        say(f"x{full / step_cost:.2f}", note, what=f"cache speed-up, {setting} (ESTIMATE)")
        rows += 1
    if not rows:
        say("not available", f"no setting in {path} names a cache measured here")


def compiled_rows(say, transformer, inputs: StepInputs, sizes: Sizes, eager: float | None, repeats: int) -> None:
    """Regional compilation (each transformer block, as diffusers' `compile_repeated_blocks`): the 42 blocks
    share one compiled graph, so the warm-up stays within the run's minutes."""
    for block in transformer.transformer_blocks:
        block.compile(backend=sizes.compile_backend)
    try:
        warm_up = timed(lambda: step(transformer, inputs, True), sizes.device)[0]
        say(
            f"{warm_up:.1f} s",
            f"first call, compiling ({sizes.compile_backend}); not in the row below",
            what="compile warm-up",
        )
        seconds = median_seconds(lambda: step(transformer, inputs, True), sizes.device, repeats)
        versus = f"; x{eager / seconds:.2f} the eager step's speed" if eager else ""
        say(f"{seconds:.3f} s", f"median of {repeats}{versus}", what="step with reference, compiled")
    finally:
        torch._dynamo.reset()


def part_steps(report: Report, sizes: Sizes, args: argparse.Namespace) -> None:
    device = sizes.device
    build = f"build: {sizes.label} transformer + LoRA r{sizes.lora_rank}"
    transformer = report.measure("steps", build, lambda say: build_row(say, sizes))
    if transformer is None:
        return
    inputs = step_inputs(sizes)
    frames, height, width = sizes.video
    shape = f"{frames}x{height}x{width}"
    plain = report.measure(
        "steps",
        f"step {shape}, no reference (stock)",
        lambda say: step_row(say, transformer, inputs, False, args.repeats, device),
    )
    full = report.measure(
        "steps",
        f"step {shape}, with reference (s2v)",
        lambda say: step_row(say, transformer, inputs, True, args.repeats, device, plain),
    )
    skipped = {
        method: report.measure(
            "steps",
            f"cache {method}",
            lambda say, m=method: cache_rows(say, transformer, inputs, m, full, args.cache_steps, device),
        )
        for method in CACHE_METHODS
        if method != "none"
    }
    report.measure(
        "steps",
        "cache speed-up (ESTIMATE)",
        lambda say: estimate_rows(say, sizes.label, full, skipped, args.skip_rates),
    )
    report.measure(
        "steps", "torch.compile", lambda say: compiled_rows(say, transformer, inputs, sizes, full, args.repeats)
    )


def small_components(sizes: Sizes) -> dict:
    """Tokenizer, text encoder, VAE and scheduler around the transformer. The T5 is a 1-layer stand-in of the
    5B's width: T5-XXL's weights would come from the Hub, and this check downloads nothing."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    with torch.device(sizes.device):
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer) + EMBEDDING_PADDING_ROWS,
                d_model=sizes.text_dim,
                d_kv=64,
                d_ff=256,
                num_layers=1,
                num_heads=2,
                relative_attention_num_buckets=8,
                dropout_rate=0.0,
            )
        )
        vae = AutoencoderKLCogVideoX(**sizes.vae)
    return dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder.to(sizes.dtype).eval(),
        vae=vae.to(sizes.dtype).eval(),
        scheduler=CogVideoXDPMScheduler(**SCHEDULER_CONFIG),
    )


def subject_image(height: int, width: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))


def generate(pipe, sizes: Sizes) -> np.ndarray:
    frames, height, width = sizes.video
    return pipe(
        subject_image(height, width),
        PROMPT,
        height=height,
        width=width,
        num_frames=frames,
        num_inference_steps=2,
        guidance_scale=6.0,
        seed=0,
        output_type="np",
    ).frames


@dataclass(frozen=True)
class Saved:
    """A random pipeline of the run's sizes on disk and its LoRA file: what `load_pipeline` reads."""

    model: Path
    lora: Path


def save_row(say, sizes: Sizes, folder: Path) -> Saved:
    """One random pipeline saved for every memory mode to load: diffusers quantizes only while loading, and
    `load_pipeline` is what users run, so each mode is s2v's own, LoRA and all."""
    started = time.perf_counter()
    transformer = random_transformer(sizes)
    S2VPipeline(transformer=transformer, **small_components(sizes)).save_pretrained(folder / "model")
    add_lora(transformer, sizes.lora_rank)  # after saving the base: its weights must not carry the adapter
    lora = save_lora(transformer, folder / "lora")
    written = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    note = f"{written / 2**30:.2f} GiB: transformer, VAE, a 1-layer T5 stand-in (not T5-XXL), LoRA r{sizes.lora_rank}"
    say(f"{time.perf_counter() - started:.0f} s", note)
    return Saved(folder / "model", lora)


def memory_rows(say, what: str, sizes: Sizes, saved: Saved, offload: str = "none", quantize: str = "none") -> None:
    settings = LoadSettings(
        preset="cogvideox-5b",
        model=str(saved.model),
        lora=str(saved.lora),
        dtype={dtype: name for name, dtype in DTYPES.items()}[sizes.dtype],
        device=sizes.device,
        offload=offload,
        quantize=quantize,
    )
    try:
        check_memory_settings(settings, PRESETS[settings.preset], resolve_device(settings.device))
    except S2VError as refusal:  # s2v's own reason this mode cannot run here
        raise NotHere(str(refusal)) from None
    device = sizes.device
    ready, pipe = timed(lambda: load_pipeline(settings), device)
    pipe.set_progress_bar_config(disable=True)
    inputs = step_inputs(sizes)
    reset_peak(device)
    seconds = timed(lambda: step(pipe.transformer, inputs, True), device)[0]
    say(peak(device), f"CFG step with reference, {seconds:.1f} s; loaded in {ready:.0f} s", what=f"{what}: one step")
    reset_peak(device)
    seconds = timed(lambda: generate(pipe, sizes), device)[0]
    frames, height, width = sizes.video
    note = f"{seconds:.1f} s, tiled decode included; T5 is a 1-layer stand-in"
    say(peak(device), note, what=f"{what}: 2-step generation {frames}x{height}x{width}")


def part_memory(report: Report, sizes: Sizes, args: argparse.Namespace) -> None:
    """Peak memory under each of s2v's `--offload` modes (no quantization) and `--quantize` modes (no offload)."""
    modes = [(f"offload {mode}", dict(offload=mode)) for mode in OFFLOAD_MODES]
    modes += [(f"quantize {mode}", dict(quantize=mode)) for mode in QUANTIZE_MODES if mode != "none"]
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        saved = report.measure("memory", "save the random pipeline", lambda say: save_row(say, sizes, Path(folder)))
        if saved is None:
            return
        for what, mode in modes:
            report.measure("memory", what, lambda say, w=what, m=mode: memory_rows(say, w, sizes, saved, **m))


def vae_row(say, sizes: Sizes) -> None:
    torch.manual_seed(0)
    with torch.device(sizes.device):
        vae = AutoencoderKLCogVideoX(**sizes.vae).to(sizes.dtype).eval()
    vae.enable_tiling()
    latents = torch.randn(1, sizes.channels, sizes.frames, sizes.latent_height, sizes.latent_width)
    latents = latents.to(sizes.device, sizes.dtype)
    with torch.no_grad():
        vae.decode(latents[:, :, :1])  # loads the kernels, so the timing below is the decode's own
        reset_peak(sizes.device)
        seconds, video = timed(lambda: vae.decode(latents).sample, sizes.device)
    decoded = tuple(video.shape[2:])
    if decoded != sizes.video:
        raise ValueError(f"decoded {decoded} frames x height x width, not {sizes.video}")
    say(f"{seconds:.2f} s; {peak(sizes.device)}", f"-> {decoded[0]}x{decoded[1]}x{decoded[2]} video; random weights")


def part_vae(report: Report, sizes: Sizes, args: argparse.Namespace) -> None:
    report.measure("vae", f"tiled decode of {sizes.latents} latents", lambda say: vae_row(say, sizes))


def tiny_row(say, sizes: Sizes) -> None:
    pipe = load_pipeline(LoadSettings(preset="tiny", device=sizes.device))
    pipe.set_progress_bar_config(disable=True)
    preset = pipe.preset
    subject = subject_image(preset.height, preset.width)
    size = dict(height=preset.height, width=preset.width, num_frames=preset.num_frames)
    seconds, frames = timed(lambda: pipe(subject, PROMPT, seed=0, output_type="np", **size).frames, sizes.device)
    finite = bool(np.isfinite(frames).all())
    say(f"{seconds:.2f} s", f"{preset.num_inference_steps} steps -> frames {frames.shape}, all finite: {finite}")


def part_tiny(report: Report, sizes: Sizes, args: argparse.Namespace) -> None:
    report.measure("tiny", f"tiny preset end to end on {sizes.device}", lambda say: tiny_row(say, sizes))


RUN = {"tiny": part_tiny, "vae": part_vae, "steps": part_steps, "memory": part_memory}


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def env_rows(report: Report) -> None:
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "no CUDA GPU"
    report.row("env", "device", device, f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    packages = ", ".join(f"{name} {version(name)}" for name in PACKAGES)
    report.row("env", "packages", packages, f"python {platform.python_version()}")


def run_part(report: Report, part: str, args: argparse.Namespace) -> None:
    if MISSING:
        report.row(part, "all", NOT_RUN, f"{MISSING} is not installed")
        return
    sizes = sizes_for(args.smoke)
    if sizes.device == "cuda" and not torch.cuda.is_available():
        report.row(part, "all", NOT_RUN, "no CUDA GPU here; --smoke runs the same code on tiny sizes on a CPU")
        return
    RUN[part](report, sizes, args)
    free_memory()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated, run in order (default {','.join(PARTS)})"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("gpu_check.md"), help="the table's file (default gpu_check.md)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on a CPU: the code paths, not the numbers")
    parser.add_argument("--skip-rates", type=Path, help="nano's cache shares, as `bench/cache.py --skip-rates` writes")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per step row, after a warm-up (default 3)")
    parser.add_argument("--cache-steps", type=int, default=4, help="steps of each cache loop (default 4)")
    parser.add_argument("--budget", type=float, default=240, help="seconds after which rows not yet begun are skipped")
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}: choose from {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report(args.out, args.budget)
    env_rows(report)
    for part in args.parts:
        run_part(report, part, args)
    print(f"table written to {args.out}", file=sys.stderr)
    return 1 if report.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
