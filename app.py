"""s2v's web demo: upload a subject, write a prompt, watch the video appear.

This file only wires Gradio widgets to `s2v`; the model, the subject preprocessing and
the video writing all live in the library. Run `python app.py --help` for the flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from s2v import (
    PRESETS,
    LoadSettings,
    Preset,
    S2VError,
    S2VPipeline,
    S2VWarning,
    load_pipeline,
    prepare_subject,
    save_video,
)
from s2v.loading import OFFLOAD_MODES, QUANTIZE_MODES, default_preset_name, resolve_device
from s2v.presets import AUTHORS_CHECKPOINT_HINT

try:
    import spaces  # Hugging Face ZeroGPU; absent everywhere else
except ImportError:
    spaces = None

EXAMPLES = Path(__file__).parent / "assets" / "examples"
EXAMPLE_PROMPTS = {
    "chelsea.png": "a cat chasing a butterfly across a sunny meadow",
    "coffee.png": "a cup of coffee on a table in a cozy cafe, steam rising",
    "rocket.jpg": "a rocket lifting off into a clear blue sky",
    "astronaut.png": "an astronaut floating through a space station",
}
NANO_EXAMPLE_PROMPTS = {
    "nano/disc-red-checks-white.png": "it moves in a circle on grass",
    "nano/triangle-cyan-checks-black.png": "it moves left in the sky",
    "nano/square-blue-dots-black.png": "it comes closer on a wooden floor",
    "nano/diamond-yellow-stripes-black.png": "it moves up at night",
}
"""Held-out subjects: the nano model never saw them in training."""
NANO_TIPS = """**The nano world's words**
- Motion: *moves left / right / up / down*, *moves in a circle*, *comes closer*, *moves away*, *stays still*.
- Scene: *on grass*, *in the sky*, *on a wooden floor*, *at night*.
- Start with "it": "it moves left on grass". The subject comes from the image; other words are unknown to it.
- Subjects: a flat disc, square, triangle, diamond or bar in one colour, plain or with stripes, dots or checks,
  on white. The examples below are subjects it never saw in training.
"""
PROMPT_TIPS = """**Prompt tips**
- Say what the subject *does* and *where*: "a cat surfing a wave at sunset".
- You don't need to describe the subject's looks — the photo does that.
- Motion words ("runs", "spins", "flies past the camera") give livelier videos.
- A photo of the subject alone, on a plain background, works best; tick *Remove background* otherwise.
"""
MAX_UPLOAD = "10mb"
QUEUE_SIZE = 16

log = logging.getLogger("s2v.app")


@dataclass
class Model:
    """What the page serves: the pipeline (None when it cannot run) and how it was set up."""

    pipe: S2VPipeline | None
    preset: Preset
    settings: LoadSettings
    label: str
    unavailable: str | None = None
    """Why generation is switched off, shown on the page (e.g. the method's LoRA is missing)."""


class CancelFlags:
    """One cancel flag per browser session, so Cancel stops only its own run."""

    def __init__(self):
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def flag(self, session: str) -> threading.Event:
        with self._lock:
            return self._flags.setdefault(session, threading.Event())


def load_model(args: argparse.Namespace) -> Model:
    """The model the flags and environment ask for, loaded once for the whole process."""
    preset = PRESETS[args.preset or default_preset_name()]
    settings = LoadSettings(
        preset=preset.name, model=args.model, lora=args.lora, offload=args.offload, quantize=args.quantize
    )
    label = f"{args.model or preset.model or preset.name}" + (f" + LoRA {args.lora}" if args.lora else "")
    if (preset.wiring_check or preset.lora) and not args.model and not args.lora:
        label = f"{preset.name}: {preset.description}"
    if preset.needs_lora and not args.lora:
        reason = f"Without the method's LoRA, {preset.model} ignores your subject, so generation is off. "
        return Model(None, preset, settings, label, unavailable=reason + AUTHORS_CHECKPOINT_HINT)
    pipe = load_pipeline(settings)
    pipe.set_progress_bar_config(disable=True)
    return Model(pipe, preset, settings, label)


def gpu_seconds(steps: float, frames: float) -> int:
    """ZeroGPU time to ask for: one 5B step is about 4 s at 49 frames with guidance, on an H200."""
    latent_frames = (int(frames) - 1) // 4 + 1
    return int(30 + int(steps) * latent_frames * 0.35)


def build_demo(model: Model, output_dir: Path | None = None) -> gr.Blocks:
    """The page: inputs on the left, the video on the right, a status line underneath."""
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="s2v-app-"))
    cancel_flags = CancelFlags()
    preset = model.preset
    resolutions = [f"{h}x{w}" for h, w in preset.resolutions]
    frame_choices = model.pipe.frame_choices if model.pipe else [preset.num_frames]
    status = {"last": "no run yet"}

    def status_line() -> str:
        device = resolve_device(model.settings.device)
        memory = f"offload {model.settings.offload}, quantize {model.settings.quantize}"
        return f"**Device** {device} · **Model** {model.label} · **Memory** {memory} · **Last run** {status['last']}"

    def preview(subject, resolution, remove_background):
        if not subject:
            return None
        height, width = parse_resolution(resolution)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", S2VWarning)
                image = prepare_subject(subject, width, height, remove_background=remove_background)
        except S2VError as error:
            gr.Warning(str(error))
            return None
        show_warnings(caught)
        return image

    def arm(request: gr.Request):
        cancel_flags.flag(request.session_hash).clear()

    def cancel(request: gr.Request):
        cancel_flags.flag(request.session_hash).set()
        gr.Info("Cancelling at the next denoising step…")

    def generate(
        subject,
        prompt,
        negative_prompt,
        remove_background,
        steps,
        guidance,
        dynamic_cfg,
        frames,
        fps,
        resolution,
        seed,
        random_seed,
        request: gr.Request,
        progress=gr.Progress(),
    ):
        if model.pipe is None:
            raise gr.Error(model.unavailable)
        if not subject:
            raise gr.Error("Upload a photo of your subject first.")
        flag = cancel_flags.flag(request.session_hash) if request and request.session_hash else threading.Event()
        height, width = parse_resolution(resolution)
        steps = int(steps)

        def on_step(pipe, step, timestep, tensors):
            progress((step + 1, steps), desc=f"Denoising step {step + 1}/{steps}")
            if flag.is_set():
                pipe._interrupt = True
            return tensors

        started = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", S2VWarning)
                output = model.pipe(
                    image=subject,
                    prompt=prompt,
                    negative_prompt=negative_prompt,
                    height=height,
                    width=width,
                    num_frames=int(frames),
                    num_inference_steps=steps,
                    guidance_scale=float(guidance),
                    use_dynamic_cfg=bool(dynamic_cfg),
                    seed=None if random_seed else whole_number(seed),
                    remove_background=bool(remove_background),
                    callback_on_step_end=on_step,
                )
                show_warnings(caught)
                if output.interrupted:
                    gr.Warning("Cancelled: the run stopped before its last denoising step.")
                    return None, "Cancelled.", status_line(), seed
                prune(output_dir)
                path = save_video(output.frames, output_dir / f"{uuid.uuid4().hex}.mp4", fps=int(fps))
        except S2VError as error:
            raise gr.Error(str(error)) from None
        except Exception:
            log.exception("generation failed")
            raise gr.Error("Something went wrong on the server (details are in its log). Please try again.") from None
        seconds = time.perf_counter() - started
        status["last"] = f"{seconds:.1f} s"
        settings = (
            f"**Prompt** {prompt}  \n**Seed** {output.seed} · **Steps** {steps} · **Guidance** {guidance}"
            f"{' (dynamic)' if dynamic_cfg else ''} · **Frames** {frames} @ {fps} fps · **Size** {height}x{width}"
            f" · **Time** {seconds:.1f} s"
        )
        return str(path), settings, status_line(), output.seed

    if spaces is not None:
        generate = spaces.GPU(duration=lambda *args, **kwargs: gpu_seconds(args[4], args[7]))(generate)

    with gr.Blocks(title="s2v — subject-driven video", delete_cache=(3600, 86400)) as demo:
        gr.Markdown(
            "# s2v — your subject, in motion\n"
            "Upload a photo of a subject (a toy, a pet, a product), say what it should do, and get a short "
            "video of *that* subject doing it. Method: [arXiv 2504.17816](https://arxiv.org/abs/2504.17816)."
        )
        if preset.name == "nano":
            gr.Markdown(
                "> **s2v-nano.** This machine has no CUDA GPU, so the page serves s2v-nano: the same method and code, "
                "trained on this project's miniature world of toy subjects on a CPU (48x48 pixels, 9 frames). "
                "It draws the subject you upload when it is one of that world's shapes; see the words it knows below."
            )
        if preset.wiring_check:
            gr.Markdown(
                f"> **Wiring demo.** This machine has no CUDA GPU, so the page runs the *{preset.name}* preset: "
                "a tiny random-weight model that exercises the whole pipeline but draws noise, not your subject."
            )
        if model.unavailable:
            gr.Markdown(f"> **Generation is off.** {model.unavailable}")
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    subject = gr.Image(
                        label="Subject photo", type="filepath", sources=["upload", "clipboard"], elem_id="subject"
                    )
                    seen = gr.Image(label="What the model sees", interactive=False, format="png", elem_id="seen")
                remove_background = gr.Checkbox(label="Remove background (rembg)", value=False)
                prompt = gr.Textbox(
                    label="Prompt",
                    placeholder="it moves left on grass" if preset.name == "nano" else "a cat surfing a wave at sunset",
                    lines=2,
                    elem_id="prompt",
                )
                with gr.Row():
                    run = gr.Button(
                        "Generate", variant="primary", interactive=model.pipe is not None, elem_id="generate"
                    )
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
                with gr.Accordion("Generation settings", open=False):
                    negative_prompt = gr.Textbox(label="Negative prompt", placeholder="blurry, low quality")
                    with gr.Row():
                        steps = gr.Slider(
                            1, 200, value=preset.num_inference_steps, step=1, label="Denoising steps", elem_id="steps"
                        )
                        guidance = gr.Slider(1, 15, value=preset.guidance_scale, step=0.5, label="Guidance")
                    dynamic_cfg = gr.Checkbox(label="Dynamic guidance (cosine schedule)", value=False)
                    with gr.Row():
                        frames = gr.Dropdown(
                            frame_choices, value=min(preset.num_frames, frame_choices[-1]), label="Frames"
                        )
                        fps = gr.Slider(4, 24, value=preset.fps, step=1, label="Frames per second")
                        resolution = gr.Dropdown(resolutions, value=resolutions[0], label="Size (height x width)")
                    with gr.Row():
                        seed = gr.Number(value=42, precision=0, minimum=0, label="Seed")
                        random_seed = gr.Checkbox(value=True, label="Random seed")
            with gr.Column():
                video = gr.Video(
                    label="Video", autoplay=True, loop=True, buttons=["download"], interactive=False, elem_id="video"
                )
                settings_shown = gr.Markdown(elem_id="run-settings")
                gr.Markdown(NANO_TIPS if preset.name == "nano" else PROMPT_TIPS)
        examples = NANO_EXAMPLE_PROMPTS if preset.name == "nano" else EXAMPLE_PROMPTS
        gr.Examples(
            examples=[[str(EXAMPLES / name), text] for name, text in examples.items()],
            inputs=[subject, prompt],
            label="Examples",
        )
        status_shown = gr.Markdown(status_line(), elem_id="status")

        for trigger in (subject.change, resolution.change, remove_background.change):
            trigger(preview, [subject, resolution, remove_background], seen, queue=False, api_visibility="private")
        inputs = [
            subject,
            prompt,
            negative_prompt,
            remove_background,
            steps,
            guidance,
            dynamic_cfg,
            frames,
            fps,
            resolution,
            seed,
            random_seed,
        ]
        run.click(arm, None, None, queue=False, api_visibility="private").then(
            generate,
            inputs,
            [video, settings_shown, status_shown, seed],
            api_name="generate",
            concurrency_limit=1,
            concurrency_id="model",
        )
        stop.click(cancel, None, None, queue=False, api_visibility="private")
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return demo


def prune(folder: Path, max_age: float = 3600.0) -> None:
    """Drop our videos older than an hour: Gradio has served its own copy by then."""
    cutoff = time.time() - max_age
    for video in folder.glob("*.mp4"):
        if video.stat().st_mtime < cutoff:
            video.unlink(missing_ok=True)


def parse_resolution(choice: str) -> tuple[int, int]:
    """ "480x720" -> (480, 720); the dropdown only lets through its own choices."""
    height, width = (int(side) for side in choice.split("x"))
    return height, width


def whole_number(value) -> int:
    """A seed from the number box (which already rounds and refuses negatives); 0 is a seed."""
    if value is None or value == "":
        raise S2VError("Enter a seed, or tick Random seed.")
    return int(value)


def show_warnings(caught: list[warnings.WarningMessage]) -> None:
    for warning in caught:
        if issubclass(warning.category, S2VWarning):
            gr.Warning(str(warning.message))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="s2v web demo")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=env("S2V_PRESET"),
        help="model preset (default: cogvideox-5b with CUDA, nano without; env S2V_PRESET)",
    )
    parser.add_argument("--model", default=env("S2V_MODEL"), help="base model hub id or folder (env S2V_MODEL)")
    parser.add_argument("--lora", default=env("S2V_LORA"), help="the method's LoRA: file, folder or hub id")
    parser.add_argument("--offload", choices=OFFLOAD_MODES, default=env("S2V_OFFLOAD", "none"))
    parser.add_argument("--quantize", choices=QUANTIZE_MODES, default=env("S2V_QUANTIZE", "none"))
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to listen on")
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also publish a temporary gradio.live link")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        model = load_model(args)
    except S2VError as error:
        print(f"error: {error}")
        return 2
    demo = build_demo(model)
    demo.launch(
        server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD, show_error=True
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
