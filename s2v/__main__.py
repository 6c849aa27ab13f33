"""`s2v`: generate a video from a subject image and a prompt, `eval` a benchmark, or `info`.

This file only turns flags into one `load_pipeline` and one pipeline call; user errors
print one line and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from .caching import CACHE_METHODS, check_cache, read_mag_ratios
from .errors import S2VError, S2VWarning
from .numbers import real_number, whole_number
from .presets import PRESETS

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "preset", "") is None:
        from .loading import default_preset_name

        args.preset = default_preset_name()
    with warnings.catch_warnings():
        warnings.simplefilter("always", S2VWarning)
        warnings.showwarning = _show_warning
        try:
            return args.command(args)
        except S2VError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


def generate(args: argparse.Namespace) -> int:
    from .loading import load_pipeline
    from .pipeline import MAX_SEED, MAX_STEPS
    from .video import MAX_SCALE, check_output, save_video

    preset = PRESETS[args.preset]
    shape, fps = _video_shape(args, preset)  # impossible numbers and unwritable paths fail before any loading
    steps = None if args.steps is None else whole_number(args.steps, "--steps", 1, MAX_STEPS)  # None: the preset's
    guidance = None if args.guidance is None else real_number(args.guidance, "--guidance", 0.0)
    seed = None if args.seed is None else whole_number(args.seed, "--seed", 0, MAX_SEED)
    scale = whole_number(_given(args.scale, preset.display_scale), "--scale", 1, MAX_SCALE)
    check_cache(args.cache, given_mag_ratios(args))
    check_output(args.out)
    if preset.wiring_check and not args.model:
        print(f"note: --preset {preset.name} is a {preset.description}.", file=sys.stderr)
    pipe = load_pipeline(load_settings(args))
    started = time.perf_counter()
    output = pipe(
        image=args.subject,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        **shape,
        num_inference_steps=steps,
        guidance_scale=guidance,
        use_dynamic_cfg=args.dynamic_cfg,
        seed=seed,
        remove_background=args.remove_background,
        cache=args.cache,
    )
    path = save_video(output.frames, args.out, fps=fps, scale=scale)
    seconds = time.perf_counter() - started
    lora = pipe.lora_info
    strength = "" if lora is None else f", LoRA {Path(lora.path).name} at {lora.effective_scale:g}x (rank {lora.rank})"
    print(f"wrote {path} ({len(output.frames)} frames, seed {output.seed}{strength}, {seconds:.1f} s)")
    return 0


def info(args: argparse.Namespace) -> int:
    import diffusers
    import torch
    from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE

    from .loading import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    lines = {
        "device": f"{device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "dtype": str(resolve_dtype(args.dtype, device)).removeprefix("torch."),
        "memory mode": f"offload {args.offload}, quantize {args.quantize}",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "presets": ", ".join(f"{p.name} ({p.model or 'built in-process'})" for p in PRESETS.values()),
        "weights": f"Hugging Face cache {HF_HUB_CACHE}"
        + (" (offline)" if HF_HUB_OFFLINE else "")
        + "; --model takes a hub id or a local folder, --lora a .safetensors file, folder or hub id",
    }
    width = max(map(len, lines))
    for key, value in lines.items():
        print(f"{key:<{width}}  {value}")
    return 0


def eval_benchmark(args: argparse.Namespace) -> int:
    from functools import partial

    from tqdm.auto import tqdm

    from .benchmark import MetricModels, Protocol, Scorers, read_items, run
    from .loading import effective_lora, load_pipeline, resolve_device
    from .metrics import CLIP_MODEL, DINO_MODEL
    from .pipeline import MAX_SEED, MAX_STEPS

    preset, settings = PRESETS[args.preset], load_settings(args)
    shape, fps = _video_shape(args, preset)
    items = read_items(args.subjects, args.prompts)
    mag_ratios = given_mag_ratios(args)
    check_cache(args.cache, mag_ratios)  # before the results folder is claimed for this protocol
    protocol = Protocol(
        model=args.model or preset.model or preset.name,
        lora=effective_lora(settings),
        **shape,
        fps=fps,
        steps=whole_number(args.steps, "--steps", 1, MAX_STEPS),
        guidance=real_number(args.guidance, "--guidance", 0.0),
        seed=whole_number(args.seed, "--seed", 0, MAX_SEED),
        lora_alpha=args.lora_alpha,
        lora_scale=args.lora_scale,
        dtype=args.dtype,
        quantize=args.quantize,
        cache=args.cache,
        mag_ratios=mag_ratios if args.cache == "mag" else None,
    )
    metrics = tuple(name.strip().replace("-", "_") for name in args.metrics.split(",") if name.strip())
    names = MetricModels(args.clip_model or CLIP_MODEL, args.dino_model or DINO_MODEL, args.raft_weights)
    scorers = Scorers.load(names, metrics, str(resolve_device(args.device)))

    def pipeline():
        pipe = load_pipeline(settings)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    started = time.perf_counter()
    run(items, protocol, args.out, scorers, None if args.score_only else pipeline, partial(tqdm, desc="videos"))
    print((args.out / "table.md").read_text(), end="")
    print(f"{len(items)} videos; tables and per-video scores in {args.out} ({time.perf_counter() - started:.0f} s)")
    return 0


def calibrate(args: argparse.Namespace) -> int:
    from .caching import calibrate_mag, write_mag_ratios
    from .loading import effective_lora, load_pipeline
    from .pipeline import MAX_STEPS

    preset, settings = PRESETS[args.preset], load_settings(args)
    steps = whole_number(_given(args.steps, preset.num_inference_steps), "--steps", 2, MAX_STEPS)
    runs = whole_number(args.runs, "--runs", 1)
    check_json_path(args.out, "the ratios")
    pipe = load_pipeline(settings)
    started = time.perf_counter()
    ratios = calibrate_mag(pipe, args.subject, args.prompt, steps, seeds=range(runs))
    about = dict(model=args.model or preset.model or preset.name, lora=effective_lora(settings), runs=runs)
    path = write_mag_ratios(args.out, ratios, steps, about)
    print(
        f"wrote {path} ({steps} ratios from {runs} runs, {time.perf_counter() - started:.0f} s); "
        f"use them with --cache mag --mag-ratios {path} and the same model flags"
    )
    return 0


def check_json_path(path: Path, what: str) -> None:
    """Refuse an --out that cannot take the JSON before any model loads or video is generated."""
    if path.suffix != ".json":
        raise S2VError(f"--out names a .json file for {what}, not {path}.")
    if path.is_dir():
        raise S2VError(f"--out {path} is a folder; name a .json file.")


def given_mag_ratios(args: argparse.Namespace) -> list[float] | None:
    """The --mag-ratios file's ratios, read (and refused in words) before any model loads."""
    return None if args.mag_ratios is None else read_mag_ratios(args.mag_ratios)


def _given(value, default):
    """The flag's value, or the default when the flag is absent: a 0 the user typed is kept (and checked)."""
    return default if value is None else value


def _video_shape(args: argparse.Namespace, preset) -> tuple[dict, int]:
    """--height/--width/--frames (pipeline keywords) and --fps, each the preset's when absent, checked up front.

    Multiples of the model's grid and its frame limit are the pipeline's to check once it is loaded;
    everything that needs no model (0, negatives, 8k+1) is refused here, before minutes of loading.
    """
    frames = whole_number(_given(args.frames, preset.num_frames), "--frames", 1)
    if frames < 9 or (frames - 1) % 8:
        raise S2VError(f"--frames must be 8k+1 (9, 17, 25, ...), not {frames}: other counts decode wrongly.")
    shape = dict(
        height=whole_number(_given(args.height, preset.height), "--height", 1),
        width=whole_number(_given(args.width, preset.width), "--width", 1),
        num_frames=frames,
    )
    return shape, whole_number(_given(args.fps, preset.fps), "--fps", 1)


def load_settings(args: argparse.Namespace):
    """The model flags (`add_model_options`) as `LoadSettings`; shared with nano's evaluator CLI."""
    from .loading import LoadSettings

    return LoadSettings(
        preset=args.preset,
        model=args.model,
        lora=args.lora,
        lora_alpha=args.lora_alpha,
        lora_scale=args.lora_scale,
        dtype=args.dtype,
        device=args.device,
        offload=args.offload,
        quantize=args.quantize,
        vae_tiling=not args.no_vae_tiling,
        vae_slicing=not args.no_vae_slicing,
        mag_ratios=args.mag_ratios,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2v", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="command")

    gen = commands.add_parser("generate", help="make a video of a subject", description="Make a video of a subject.")
    gen.set_defaults(command=generate)
    gen.add_argument("--subject", required=True, help="image of the subject (PNG, JPEG, WebP, ...)")
    gen.add_argument("--prompt", required=True, help="what the subject does; <cls> is added for you")
    gen.add_argument("--negative-prompt", default="", help="what to steer away from")
    gen.add_argument("--out", type=Path, default=Path("s2v.mp4"), help=".mp4, .gif, or a folder for PNG frames")
    gen.add_argument("--steps", type=int, help="denoising steps (preset default)")
    gen.add_argument("--guidance", type=float, help="classifier-free guidance scale (preset default)")
    gen.add_argument("--dynamic-cfg", action="store_true", help="CogVideoX's cosine guidance schedule")
    _add_video_shape_options(gen)
    _add_cache_option(gen)
    gen.add_argument("--seed", type=int, help="any whole number >= 0; random when left out (printed)")
    gen.add_argument("--remove-background", action="store_true", help="cut the subject out with rembg first")
    gen.add_argument(
        "--scale",
        type=int,
        help="write each pixel as an N x N block, so H.264 keeps a tiny video's colours (preset default: 8 on nano)",
    )
    add_model_options(gen)

    bench = commands.add_parser(
        "eval",
        help="the paper's metrics over subjects x prompts, beside its Table 1",
        description="Generate (or reuse) a video per subject and prompt, score CLIP-T, CLIP-I, DINO-I, dynamic "
        "degree and motion smoothness, and write per_video.csv and table.{md,csv,json} to --out. Resumable.",
    )
    bench.set_defaults(command=eval_benchmark)
    bench.add_argument(
        "--subjects", type=Path, required=True, help="folder of subject images (+ optional classes.json)"
    )
    bench.add_argument("--prompts", type=Path, required=True, help=".jsonl ({'prompt', optional 'subject'}) or .txt")
    bench.add_argument("--out", type=Path, required=True, help="results folder (resumes what is already there)")
    bench.add_argument("--steps", type=int, default=50, help="denoising steps (default 50, the paper's)")
    bench.add_argument("--guidance", type=float, default=6.0, help="guidance scale (default 6, the paper's)")
    bench.add_argument("--seed", type=int, default=42, help="seed of every video (default 42, the paper's)")
    _add_video_shape_options(bench)
    _add_cache_option(bench)
    bench.add_argument(
        "--metrics", default="smoothness,dynamic,clip-t,clip-i,dino-i", help="which to compute (default: all five)"
    )
    bench.add_argument("--clip-model", help="CLIP for CLIP-T/CLIP-I (default openai/clip-vit-base-patch32)")
    bench.add_argument("--dino-model", help="DINO for DINO-I (default facebook/dino-vits16)")
    bench.add_argument("--raft-weights", help="local RAFT-large C_T_V1 state dict (default: torchvision's download)")
    bench.add_argument("--score-only", action="store_true", help="score the videos already in --out; load no model")
    add_model_options(bench)

    cal = commands.add_parser(
        "calibrate-mag",
        help="calibrate MagCache for a model (for --cache mag)",
        description="Run the model with every block computed and write MagCache's per-step ratios (diffusers' "
        "calibration, averaged over --runs seeds) to --out, for --cache mag --mag-ratios FILE.",
    )
    cal.set_defaults(command=calibrate)
    cal.add_argument("--subject", required=True, help="image of a subject (PNG, JPEG, WebP, ...)")
    cal.add_argument("--prompt", required=True, help="what the subject does")
    cal.add_argument("--out", type=Path, required=True, help=".json file for the ratios")
    cal.add_argument("--steps", type=int, help="denoising steps to calibrate for (preset default)")
    cal.add_argument("--runs", type=int, default=3, help="runs (seeds 0..N-1) to average (default 3)")
    add_model_options(cal)

    show = commands.add_parser("info", help="device, versions, memory mode and where weights are looked for")
    show.set_defaults(command=info)
    add_model_options(show)
    return parser


def _add_cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache",
        choices=CACHE_METHODS,
        default="none",
        help="reuse work between denoising steps (diffusers' cache hooks): faster, slightly different videos; "
        "see the README's speed table (default none)",
    )


def _add_video_shape_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, help="8k+1 frames: 9, 17, ..., 49 (preset default)")
    parser.add_argument("--height", type=int, help="multiple of 16 (preset default)")
    parser.add_argument("--width", type=int, help="multiple of 16 (preset default)")
    parser.add_argument("--fps", type=int, help="frames per second of the written video (preset default)")


def add_model_options(parser: argparse.ArgumentParser, default_preset: str | None = None) -> None:
    from .loading import DTYPES, OFFLOAD_MODES, QUANTIZE_MODES

    group = parser.add_argument_group("model and memory")
    group.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=default_preset,
        help=f"model preset (default: {default_preset or 'cogvideox-5b with CUDA, nano without'})",
    )
    group.add_argument("--model", help="base model: hub id or local folder (overrides the preset's)")
    group.add_argument("--lora", help="the method's LoRA: .safetensors file, folder or hub repo id")
    group.add_argument(
        "--lora-alpha",
        type=float,
        help="override the LoRA's alpha (default: file metadata; 64 for the authors' file)",
    )
    group.add_argument("--lora-scale", type=float, default=1.0, help="LoRA strength on top of alpha/rank (default 1.0)")
    group.add_argument("--dtype", choices=["auto", *DTYPES], default="auto", help="auto: bf16 on GPU, fp32 on CPU")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument(
        "--offload",
        choices=OFFLOAD_MODES,
        default="none",
        help="keep weights in CPU RAM between uses: whole models, layers, or blocks on CUDA streams (GPU only)",
    )
    group.add_argument(
        "--quantize",
        choices=QUANTIZE_MODES,
        default="none",
        help="int8/nf4: bitsandbytes on transformer and T5 (GPU only); fp8-layerwise: transformer weights stored "
        "in fp8; int8-torchao: transformer int8 weight-only (pip install 's2v[torchao]')",
    )
    group.add_argument("--mag-ratios", help="MagCache ratios for --cache mag, from `s2v calibrate-mag`")
    group.add_argument("--no-vae-tiling", action="store_true", help="decode whole frames (more memory)")
    group.add_argument("--no-vae-slicing", action="store_true", help="decode the batch at once (more memory)")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as one plain line; library warnings keep their usual form."""
    if issubclass(category, S2VWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
