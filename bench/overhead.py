"""What the reference frame costs: S2V vs stock CogVideoX transformer forward.

S2V runs the stock `CogVideoXTransformer3DModel` on the clean reference latent prepended
as latent frame 0 (`s2v.model.predict(..., reference_latents=ref)`); stock CogVideoX is the
same call without it (`reference_latents=None, frame_offset=0`). For CogVideoX-5B at
480x720, 49 frames, that is 226 text + 13 x 1350 video tokens, plus 1350 reference tokens.

Printed:
  1. FLOPs per forward of the full 5B, counted analytically, for both, and their ratio.
     The same formula is cross-checked against `torch.utils.flop_counter` on a real
     forward of the reduced model below.
  2. Wall time of both forwards on a reduced model, measured side by side (interleaved,
     several repeats, median), and the time ratio next to the FLOP ratios.
  3. The achieved FLOP/s of those forwards as a fraction of a plain fp32 matmul's,
     measured in the same run, so the time ratio can be judged against the hardware.

Why a reduced model: a 5B forward takes about an hour on 2 CPU cores. The reduced model
keeps what sets the overhead: the head size (64), the 13:1 video:reference frame
proportion, the text:video token proportion, and the tokens/width ratio (~5.8), which
fixes attention's share of the FLOPs (attention is quadratic in tokens, the linears
are linear) and hence the S2V/stock FLOP ratio. Width, depth and the spatial grid shrink.
Batch 1; classifier-free guidance doubles both forwards alike, so the ratios hold.

Run from the repository root: `python bench/overhead.py [--repeats N] [--layers N] [--quick]`
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import CogVideoXTransformer3DModel
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from s2v.model import predict
from s2v.tiny import COGVIDEOX_5B_TRANSFORMER as FIVE_B_CONFIG

FFN_MULT = 4
"""diffusers' `FeedForward` default, which `CogVideoXBlock` uses (no `ff_inner_dim`)."""


@dataclass(frozen=True)
class Layout:
    """One forward's token layout: text tokens, latent frames and the latent grid."""

    text_tokens: int
    frames: int
    latent_height: int
    latent_width: int

    def frame_tokens(self, patch: int) -> int:
        return (self.latent_height // patch) * (self.latent_width // patch)

    def tokens(self, patch: int, reference: bool) -> int:
        return self.text_tokens + (self.frames + reference) * self.frame_tokens(patch)


FIVE_B_LAYOUT = Layout(text_tokens=226, frames=13, latent_height=60, latent_width=90)
"""480x720, 49 frames: 13 latent frames of 30x45 tokens after the 8x VAE and 2x2 patches."""

# Reduced: 4 heads x 64 (width 256) and 8x14 = 112 tokens per frame, so tokens/width is
# (19 + 13*112) / 256 = 5.76 against the 5B's (226 + 13*1350) / 3072 = 5.79; 19 text
# tokens = 226 scaled by the per-frame token count (112 / 1350).
REDUCED_HEADS = 4
REDUCED_LAYOUT = Layout(text_tokens=19, frames=13, latent_height=16, latent_width=28)


def reduced_config(layers: int) -> dict:
    """The 5B config with fewer heads and layers and a base grid equal to the reduced latent grid."""
    return {
        **FIVE_B_CONFIG,
        "num_attention_heads": REDUCED_HEADS,
        "num_layers": layers,
        # RoPE positions are relative to this base grid; matching it keeps them uncropped, as at 480x720.
        "sample_height": REDUCED_LAYOUT.latent_height,
        "sample_width": REDUCED_LAYOUT.latent_width,
        "max_text_seq_length": REDUCED_LAYOUT.text_tokens,
    }


def linear_flops(rows: int, fan_in: int, fan_out: int) -> int:
    return 2 * rows * fan_in * fan_out


def analytic_flops(config: dict, layout: Layout, reference: bool) -> int:
    """Matmul/conv/attention FLOPs of one batch-1 forward, as `FlopCounterMode` counts them.

    Elementwise work (norms, RoPE, gates, softmax) is left out, as the counter leaves it out.
    """
    width = config["num_attention_heads"] * config["attention_head_dim"]
    patch = config["patch_size"]
    temb = config["time_embed_dim"]
    video = (layout.frames + reference) * layout.frame_tokens(patch)
    joint = layout.text_tokens + video  # text and video share every block's attention and FFN

    embed = (
        linear_flops(video, config["in_channels"] * patch * patch, width)  # patch conv
        + linear_flops(layout.text_tokens, config["text_embed_dim"], width)  # text_proj
        + linear_flops(1, width, temb)  # time_embedding.linear_1
        + linear_flops(1, temb, temb)  # time_embedding.linear_2
    )
    block = (
        2 * linear_flops(1, temb, 6 * width)  # norm1 / norm2 AdaLN: once per sample, not per token
        + 4 * linear_flops(joint, width, width)  # to_q, to_k, to_v, to_out
        + 2 * linear_flops(joint, joint, width)  # QK^T and AV over all heads
        + 2 * linear_flops(joint, width, FFN_MULT * width)  # FFN up and down
    )
    head = linear_flops(1, temb, 2 * width) + linear_flops(video, width, patch * patch * config["out_channels"])
    return embed + config["num_layers"] * block + head


def _cpu_sdpa_flops(
    query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: object, **kwargs: object
) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's flop registry knows the CUDA SDPA kernels but not the CPU one, which it would count as 0.
SDPA_CPU = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


@dataclass
class Inputs:
    latents: torch.Tensor
    reference: torch.Tensor
    timestep: torch.Tensor
    text: torch.Tensor


def make_inputs(config: dict, layout: Layout, seed: int = 0) -> Inputs:
    gen = torch.Generator().manual_seed(seed)
    grid = (config["in_channels"], layout.latent_height, layout.latent_width)
    return Inputs(
        latents=torch.randn(1, layout.frames, *grid, generator=gen),
        reference=torch.randn(1, 1, *grid, generator=gen),
        timestep=torch.tensor([500]),
        text=torch.randn(1, layout.text_tokens, config["text_embed_dim"], generator=gen),
    )


def forward_fns(model: CogVideoXTransformer3DModel, inputs: Inputs) -> dict[str, Callable[[], torch.Tensor]]:
    """The two forwards under test, both through `predict` so both pay for building RoPE."""
    args = (model, inputs.latents, inputs.timestep, inputs.text)
    return {
        "stock": lambda: predict(*args, reference_latents=None, frame_offset=0),
        "s2v": lambda: predict(*args, reference_latents=inputs.reference),
    }


def counted_flops(fn: Callable[[], torch.Tensor]) -> int:
    with FlopCounterMode(display=False, custom_mapping=SDPA_CPU) as counter:
        fn()
    return counter.get_total_flops()


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call, calling the functions in turn (ABAB...) so machine noise hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def matmul_fn(rows: int, fan_in: int, fan_out: int, calls: int) -> Callable[[], object]:
    """`calls` fp32 [rows, fan_in] @ [fan_in, fan_out] in a row: the hardware's practical ceiling here."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(rows, fan_in, generator=gen)
    b = torch.randn(fan_in, fan_out, generator=gen)
    return lambda: [a @ b for _ in range(calls)]


def fmt_tokens(config: dict, layout: Layout, reference: bool) -> str:
    video = (layout.frames + reference) * layout.frame_tokens(config["patch_size"])
    return f"{layout.text_tokens}+{video}"


def print_flops(reduced: dict, counted: dict[str, int]) -> None:
    print("FLOPs per forward (batch 1; matmul, conv and attention; 1 multiply-add = 2 FLOPs)")
    print(f"  {'model':<34}{'tokens stock':>14}{'tokens s2v':>14}{'stock':>14}{'s2v':>14}{'s2v/stock':>11}")
    rows = [
        ("CogVideoX-5B, 480x720x49", FIVE_B_CONFIG, FIVE_B_LAYOUT),
        (_reduced_name(reduced), reduced, REDUCED_LAYOUT),
    ]
    for name, config, layout in rows:
        stock, s2v = (analytic_flops(config, layout, ref) for ref in (False, True))
        print(
            f"  {name:<34}{fmt_tokens(config, layout, False):>14}{fmt_tokens(config, layout, True):>14}"
            f"{_si(stock):>14}{_si(s2v):>14}{s2v / stock:>11.4f}"
        )
    print("  cross-check on the reduced model, analytic vs torch FlopCounterMode on a real forward:")
    for name, measured in counted.items():
        analytic = analytic_flops(reduced, REDUCED_LAYOUT, name == "s2v")
        print(f"    {name:<6}{analytic:>16,} vs {measured:>16,}  ({measured / analytic - 1:+.4%})")


def _reduced_name(config: dict) -> str:
    return f"reduced {config['num_attention_heads']}x64 heads, {config['num_layers']} layers"


def _si(flops: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops / 1e6:.2f} MFLOP"


def print_times(times: dict[str, list[float]], flops: dict[str, int], label: str) -> None:
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"\nWall time per call, {label}")
    print(f"  {'':<8}{'median':>10}{'min':>10}{'max':>10}{'GFLOP/s':>10}{'of matmul':>11}")
    mm_rate = flops["matmul"] / medians["matmul"]
    for name, t in times.items():
        rate = flops[name] / medians[name]
        print(
            f"  {name:<8}{medians[name] * 1e3:>8.1f}ms{min(t) * 1e3:>8.1f}ms{max(t) * 1e3:>8.1f}ms"
            f"{rate / 1e9:>10.1f}{rate / mm_rate:>11.1%}"
        )
    spread = max(max(t) / min(t) for t in times.values())
    if spread > 1.5:
        # Identical calls should take the same time; a wide spread means other processes took the cores.
        print(f"  NOTE: identical calls varied up to {spread:.1f}x: the machine was busy, so the timings are noisy.")


def print_ratios(times: dict[str, list[float]], counted: dict[str, int]) -> None:
    five_b = [analytic_flops(FIVE_B_CONFIG, FIVE_B_LAYOUT, ref) for ref in (False, True)]
    stock, s2v = times["stock"], times["s2v"]
    # Each pair is timed back to back, so its ratio cancels load that drifts slower than one pair.
    pairs = [b / a for a, b in zip(stock, s2v, strict=True)]
    print("\nS2V / stock")
    print(f"  time, reduced model: ratio of medians     {statistics.median(s2v) / statistics.median(stock):.4f}")
    print(f"  time, reduced model: median pair ratio    {statistics.median(pairs):.4f}", end="")
    print(f"  (pairs range {min(pairs):.3f}-{max(pairs):.3f})")
    # Load from other processes only ever adds time, so the fastest calls are the least disturbed.
    print(f"  time, reduced model: ratio of minimums    {min(s2v) / min(stock):.4f}")
    print(f"  FLOPs, reduced model (counted)            {counted['s2v'] / counted['stock']:.4f}")
    print(f"  FLOPs, CogVideoX-5B (analytic)            {five_b[1] / five_b[0]:.4f}")
    rate = counted["stock"] / statistics.median(stock)
    minutes = [flops / rate / 60 for flops in five_b]
    print(
        f"\nAt the reduced stock forward's median rate, one 5B forward here would take ~{minutes[0]:.0f} min stock,"
        f" ~{minutes[1]:.0f} min S2V\n(5B FLOPs / that rate; the 5B's larger matmuls may run somewhat faster)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls of each forward (default 15)")
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks in the reduced model (default 4)")
    parser.add_argument("--quick", action="store_true", help="2 layers, 3 repeats: a smoke run")
    args = parser.parse_args()
    layers, repeats = (2, 3) if args.quick else (args.layers, args.repeats)

    torch.manual_seed(0)
    config = reduced_config(layers)
    model = CogVideoXTransformer3DModel(**config).eval()
    fns = forward_fns(model, make_inputs(config, REDUCED_LAYOUT))
    print(f"s2v overhead: torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU\n")
    with torch.no_grad():
        flops = {name: counted_flops(fn) for name, fn in fns.items()}
        print_flops(config, flops)

        # The reference matmul: the model's biggest linear (FFN up-projection at the stock token count),
        # repeated to about one forward's FLOPs so each sample sees as much machine noise as a forward.
        width = config["num_attention_heads"] * config["attention_head_dim"]
        m, k, n = REDUCED_LAYOUT.tokens(config["patch_size"], False), width, FFN_MULT * width
        calls = max(1, round(flops["stock"] / linear_flops(m, k, n)))
        fns["matmul"] = matmul_fn(m, k, n, calls)
        flops["matmul"] = calls * linear_flops(m, k, n)
        times = time_interleaved(fns, repeats)

    print_times(times, flops, f"{_reduced_name(config)} ({repeats} repeats interleaved, after 1 warm-up)")
    print(f"  matmul = {calls} x fp32 [{m}x{k}] @ [{k}x{n}]")
    print_ratios(times, flops)


if __name__ == "__main__":
    main()
