"""s2v's web demo: upload a subject, write a prompt, watch the video appear.

This file only wires Gradio widgets to `s2v`; the model, the subject preprocessing and
the video writing all live in the library. Run `python app.py --help` for the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import inspect
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

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
from s2v.loading import OFFLOAD_MODES, QUANTIZE_MODES, default_preset_name, model_missing_its_lora, resolve_device
from s2v.numbers import real_number, whole_number
from s2v.pipeline import MAX_SEED
from s2v.presets import AUTHORS_CHECKPOINT_HINT
from s2v.subject import MAX_SUBJECT_PIXELS

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
- Motion: *moves left / right / up / down*, *comes closer*, *moves away*; *moves in a circle* and *stays still*
  rarely come out right yet.
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
PREVIEW_CONCURRENCY = 2
"""Previews decode uploads: a few at a time bounds their memory, beside the one generation."""
VIDEO_MAX_AGE = 3600.0
"""Seconds a finished video stays on the server: long enough to watch and download it."""
HEARTBEAT_SECONDS = 2
"""How often a client's heartbeat is checked: a vanished client's run stops within this and one step."""
STEPS_RANGE, GUIDANCE_RANGE, FPS_RANGE = (1, 200), (0.0, 15.0), (1, 30)
LABELS = dict(steps="Denoising steps", guidance="Guidance", frames="Frames", fps="Frames per second", seed="Seed")
"""Each number's label on the page; its error messages name it the same way."""
FILLED_BY_GRADIO = ("request", "progress")
"""Handler parameters Gradio supplies itself; every other parameter is a page component of the same name."""
FULL, PREVIEW = "Full quality", "Fast preview"
"""The run's quality: the settings as given, or the preset's few preview steps with its cache (same seed)."""

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


@dataclass(frozen=True)
class Job:
    """One generation request, every field checked: what reaches the model and what the page reports."""

    subject: str
    prompt: str
    negative_prompt: str
    remove_background: bool
    steps: int
    guidance: float
    dynamic_cfg: bool
    frames: int
    fps: int
    height: int
    width: int
    seed: int | None
    cache: str = "none"
    preview: bool = False


class ActiveRuns:
    """The stop switch of each run in progress, by browser session.

    An entry lives exactly as long as its run, so nothing accumulates per visitor; a session
    that goes away (tab closed, client disconnected) stops its own runs and no one else's.
    """

    def __init__(self):
        self._runs: dict[str | None, set[threading.Event]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def run(self, session: str | None) -> Iterator[threading.Event]:
        stop = threading.Event()
        with self._lock:
            self._runs.setdefault(session, set()).add(stop)
        try:
            yield stop
        finally:
            with self._lock:
                self._runs[session].discard(stop)
                if not self._runs[session]:
                    del self._runs[session]

    def stop(self, session: str | None) -> None:
        with self._lock:
            for stop in self._runs.get(session, ()):
                stop.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)


def load_model(args: argparse.Namespace) -> Model:
    """The model the flags and environment ask for, loaded once for the whole process."""
    preset = PRESETS[args.preset or default_preset_name()]
    settings = LoadSettings(
        preset=preset.name, model=args.model, lora=args.lora, offload=args.offload, quantize=args.quantize
    )
    label = f"{args.model or preset.model or preset.name}" + (f" + LoRA {args.lora}" if args.lora else "")
    if (preset.wiring_check or preset.lora) and not args.model and not args.lora:
        label = f"{preset.name}: {preset.description}"
    if (base := model_missing_its_lora(settings)) is not None:
        reason = f"Without the method's LoRA, {base} ignores your subject, so generation is off. "
        return Model(None, preset, settings, label, unavailable=reason + AUTHORS_CHECKPOINT_HINT)
    pipe = load_pipeline(settings)
    pipe.set_progress_bar_config(disable=True)
    return Model(pipe, preset, settings, label)


def gpu_seconds(steps: float, frames: float) -> int:
    """ZeroGPU time to ask for: one 5B step is about 4 s at 49 frames with guidance, on an H200."""
    latent_frames = (int(frames) - 1) // 4 + 1
    return int(30 + int(steps) * latent_frames * 0.35)


def check_job(
    model: Model,
    *,
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
    quality=FULL,
) -> Job:
    """Every field of a request checked before any work, each refusal naming the field as the page labels it."""
    if model.pipe is None:
        raise S2VError(model.unavailable)
    if not subject:
        raise S2VError("Upload a photo of your subject first.")
    if not isinstance(prompt, str) or not isinstance(negative_prompt, (str, type(None))):
        raise S2VError("The prompt and the negative prompt must be text.")
    random_seed = switch(random_seed, "Random seed")
    if not random_seed and (seed is None or seed == ""):
        raise S2VError("Enter a seed, or tick Random seed.")
    height, width = checked_size(model, resolution)
    job = Job(
        subject=subject,
        prompt=prompt,
        negative_prompt=negative_prompt or "",
        remove_background=switch(remove_background, "Remove background"),
        steps=whole_number(steps, LABELS["steps"], *STEPS_RANGE, whole_floats=True),
        guidance=real_number(guidance, LABELS["guidance"], *GUIDANCE_RANGE),
        dynamic_cfg=switch(dynamic_cfg, "Dynamic guidance"),
        frames=checked_frames(model, frames),
        fps=whole_number(fps, LABELS["fps"], *FPS_RANGE, whole_floats=True),
        height=height,
        width=width,
        seed=None if random_seed else whole_number(seed, LABELS["seed"], 0, MAX_SEED, whole_floats=True),
    )
    return at_quality(job, quality, model.preset)


def at_quality(job: Job, quality, preset: Preset) -> Job:
    """A fast preview keeps every checked field and the seed, and takes the preset's preview steps and cache."""
    if quality not in (FULL, PREVIEW):
        raise S2VError(f"Quality must be {FULL!r} or {PREVIEW!r}, not {quality!r}.")
    if quality == FULL:
        return job
    return replace(job, steps=preset.preview_steps, cache=preset.preview_cache, preview=True)


def checked_frames(model: Model, frames) -> int:
    choices = model.pipe.frame_choices
    if isinstance(frames, str) and frames.strip().isdecimal() and frames.strip().isascii():  # typed into the list
        frames = int(frames)
    if isinstance(frames, bool) or frames not in choices:
        raise S2VError(f"{LABELS['frames']} must be one of {', '.join(map(str, choices))}, not {frames!r}.")
    return int(frames)


def checked_size(model: Model, resolution) -> tuple[int, int]:
    choices = size_choices(model.preset)
    if resolution not in choices:
        raise S2VError(f"Size must be one of {', '.join(choices)}, not {resolution!r}.")
    return parse_resolution(resolution)


def size_choices(preset: Preset) -> list[str]:
    """The size dropdown's choices, "HxW", the preset's default first; what `checked_size` accepts."""
    return [f"{h}x{w}" for h, w in preset.resolutions]


def switch(value, label: str) -> bool:
    """A checkbox's value: a JSON client's "false" is a string, and `bool("false")` would be True."""
    if not isinstance(value, (bool, np.bool_)):
        raise S2VError(f"{label} must be true or false, not {value!r}.")
    return bool(value)


def render(model: Model, job: Job, output_dir: Path, stop: threading.Event, progress) -> tuple[Path | None, int]:
    """Generate and write one video (None when stopped); runs in a worker thread."""

    def on_step(pipe, step, timestep, tensors):
        progress((step + 1, job.steps), desc=f"Denoising step {step + 1}/{job.steps}")
        if stop.is_set():
            pipe._interrupt = True
        return tensors

    with warnings_to_page():
        output = model.pipe(
            image=job.subject,
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            height=job.height,
            width=job.width,
            num_frames=job.frames,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance,
            use_dynamic_cfg=job.dynamic_cfg,
            seed=job.seed,
            remove_background=job.remove_background,
            callback_on_step_end=on_step,
            cache=job.cache,
        )
    if output.interrupted:
        return None, output.seed
    try:
        path = output_dir / f"{uuid.uuid4().hex}.mp4"
        return save_video(output.frames, path, fps=job.fps, scale=model.preset.display_scale), output.seed
    except S2VError as error:  # its text names a server path
        log.error("could not store a video: %s", error)
        raise S2VError("The server could not store the video (its disk may be full); please try again.") from None


_zero_gpu_model: Model | None = None
"""The model a ZeroGPU worker renders with: the worker is a fork of this process, so it has its own copy."""


def render_on_zero_gpu(job: Job, output_dir: Path) -> tuple[Path | None, int]:
    """`render` as a ZeroGPU task. ZeroGPU pickles a task's arguments into its worker process, which a
    pipeline (its run lock), a stop event or a progress tracker cannot cross: only the job and the folder
    go, and Cancel frees the queue while the GPU task runs to its end (ZeroGPU bounds it by its duration)."""
    return render(_zero_gpu_model, job, output_dir, threading.Event(), lambda *args, **kwargs: None)


def zero_gpu_duration(job: Job, output_dir: Path) -> int:
    """ZeroGPU calls this with the task's own arguments: the checked job, whose fields it reads by name."""
    return gpu_seconds(job.steps, job.frames)


def zero_gpu_task(model: Model):
    """`render_on_zero_gpu` as ZeroGPU runs it, with `model` set for the worker processes it forks."""
    global _zero_gpu_model
    _zero_gpu_model = model
    return spaces.GPU(duration=zero_gpu_duration)(render_on_zero_gpu)


class Handlers:
    """The page's generation and session handlers, bound to one model.

    Methods rather than partials, so Gradio sees their `gr.Request` and `gr.Progress` parameters;
    per-request state lives in each call (and in `runs` while a run lasts), never on this object.
    """

    def __init__(self, model: Model, output_dir: Path, zero_gpu_task=None):
        self.model, self.output_dir, self.zero_gpu_task = model, output_dir, zero_gpu_task
        self.runs = ActiveRuns()

    async def generate(
        self,
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
        quality=FULL,
        request: gr.Request = None,
        progress=gr.Progress(),
    ):
        """The page's and the API's generation. This signature is the /generate endpoint: Gradio names the API's
        parameters after it and the page hands it the components of the same names, in its order."""
        fields = dict(
            subject=subject,
            prompt=prompt,
            negative_prompt=negative_prompt,
            remove_background=remove_background,
            steps=steps,
            guidance=guidance,
            dynamic_cfg=dynamic_cfg,
            frames=frames,
            fps=fps,
            resolution=resolution,
            seed=seed,
            random_seed=random_seed,
            quality=quality,
        )
        return await self._generate(fields, request.session_hash if request else None, progress)

    async def _generate(self, fields: dict, session: str | None, progress):
        """Checks, then the model in a worker thread that stops with the request: Cancel and a client's
        `job.cancel()` cancel this coroutine, a closed session calls `end_session`. It returns only once the
        model is free, so the queue never starts a run beside a stopping one."""
        started = time.perf_counter()
        try:
            with errors_in_words():
                job = check_job(self.model, **fields)
                with self.runs.run(session) as stop:
                    path, used_seed = await self._run(job, stop, progress)
        finally:
            prune(self.output_dir)
        if path is None:
            gr.Warning("Cancelled: the run stopped before its last denoising step.")
            return None, "Cancelled.", status_line(self.model), fields["seed"]
        seconds = time.perf_counter() - started
        return str(path), run_settings(job, used_seed, seconds), status_line(self.model, seconds), used_seed

    async def _run(self, job: Job, stop: threading.Event, progress) -> tuple[Path | None, int]:
        if self.zero_gpu_task is not None:
            call = partial(self.zero_gpu_task, job, self.output_dir)
        else:
            call = partial(render, self.model, job, self.output_dir, stop, progress)
        work = asyncio.ensure_future(asyncio.to_thread(call))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            await finish_stopped(work, stop)
            raise

    def preview(self, subject, resolution, remove_background):
        """Exactly what the model will see (the preset's subject placement included), shown beside the upload."""
        if not subject:
            return None
        try:
            height, width = checked_size(self.model, resolution)
            with warnings_to_page():
                return prepare_subject(
                    subject,
                    width,
                    height,
                    remove_background=switch(remove_background, "Remove background"),
                    subject_size=self.model.preset.subject_size,
                )
        except S2VError as error:
            gr.Warning(str(error))
            return None

    def end_session(self, request: gr.Request) -> None:
        """A closed tab or a disconnected client: its runs stop, so no GPU works minutes for nobody."""
        self.runs.stop(request.session_hash)


@contextmanager
def errors_in_words() -> Iterator[None]:
    """A failed request reaches its client as a sentence: s2v's refusals as they are, anything else as a plain
    apology, its details (server paths, library internals) left in the log."""
    try:
        yield
    except S2VError as error:
        raise gr.Error(str(error)) from None
    except gr.Error:
        raise
    except Exception:
        log.exception("generation failed")
        raise gr.Error("Something went wrong on the server (details are in its log). Please try again.") from None


async def finish_stopped(work: asyncio.Future, stop: threading.Event) -> None:
    """Stop a run whose request was cancelled and wait (through further cancels) until the model is free."""
    stop.set()
    while not work.done():
        try:
            await asyncio.wait({work})
        except asyncio.CancelledError:
            continue
    if not work.cancelled() and work.exception() is not None:
        log.warning("a cancelled run failed: %s", work.exception())


def cancelled() -> str:
    gr.Info("Cancelling at the next denoising step…")
    return "Cancelled."


def run_settings(job: Job, seed: int, seconds: float) -> str:
    preview = (
        f"**Fast preview** ({job.steps} steps, {job.cache} cache): choose {FULL} with this seed (untick Random "
        "seed) for the finished video.  \n"
        if job.preview
        else ""
    )
    return preview + (
        f"**Prompt** {job.prompt}  \n**Seed** {seed} · **Steps** {job.steps} · **Guidance** {job.guidance:g}"
        f"{' (dynamic)' if job.dynamic_cfg else ''} · **Frames** {job.frames} @ {job.fps} fps · "
        f"**Size** {job.height}x{job.width} · **Time** {seconds:.1f} s"
    )


def status_line(model: Model, seconds: float | None = None) -> str:
    device = resolve_device(model.settings.device)
    memory = f"offload {model.settings.offload}, quantize {model.settings.quantize}"
    last = "no run yet" if seconds is None else f"{seconds:.1f} s"
    return f"**Device** {device} · **Model** {model.label} · **Memory** {memory} · **Last run** {last}"


_page_warnings: ContextVar[list[str] | None] = ContextVar("s2v_page_warnings", default=None)


@contextmanager
def warnings_to_page() -> Iterator[None]:
    """Show the s2v warnings raised inside the block to the request that raised them.

    `warnings.catch_warnings` swaps process-wide state, so concurrent requests (a preview
    beside a generation) would lose or swap each other's warnings; instead one process-wide
    hook hands each warning to the list of the context (request) it was raised in.
    """
    _route_s2v_warnings()
    caught: list[str] = []
    token = _page_warnings.set(caught)
    try:
        yield
    finally:
        _page_warnings.reset(token)
        for message in caught:
            gr.Warning(message)


def _route_s2v_warnings() -> None:
    """Install the hook (again, if something such as a test harness restored the default)."""
    if getattr(warnings.showwarning, "s2v_router", False):
        return
    shown = warnings.showwarning

    def route(message, category, *args, **kwargs):
        caught = _page_warnings.get()
        if caught is not None and issubclass(category, S2VWarning):
            caught.append(str(message))
        else:
            shown(message, category, *args, **kwargs)

    route.s2v_router = True
    warnings.filterwarnings("always", category=S2VWarning)
    warnings.showwarning = route


def refusing_bombs_in_words(image: gr.Image) -> gr.Image:
    """The upload component, its header read by Gradio (`image_mode=None` hands s2v the path unconverted);
    a header past PIL's bomb limit or no image at all gets a message, where Gradio shows a bare "Error". An instance
    override, not a subclass: Gradio writes a .pyi stub beside any file that subclasses a component."""
    preprocess = image.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except Image.DecompressionBombError:
            raise gr.Error(
                f"The subject image has far more pixels than the {MAX_SUBJECT_PIXELS // 1_000_000} MP s2v accepts; "
                "scale it down first."
            ) from None
        except (Image.UnidentifiedImageError, OSError):
            raise gr.Error("The upload is not an image PIL can read (PNG, JPEG, WebP, ...).") from None

    image.preprocess = checked
    return image


def checked_by_s2v(slider: gr.Slider) -> gr.Slider:
    """A slider whose value reaches `check_job` as sent, so an API client's NaN, 0 or 1e9 gets the same
    message naming the field as everything else (Gradio's own bounds check names no field and lets NaN by)."""
    slider.preprocess = lambda payload: payload
    return slider


Parts = dict[str, gr.components.Component]
"""A part of the page's components by name; a handler's parameters name the components it reads."""


def build_demo(model: Model, output_dir: Path | None = None) -> gr.Blocks:
    """The page: inputs on the left, the video on the right, a status line underneath."""
    handlers = Handlers(model, video_folder() if output_dir is None else Path(output_dir))
    if spaces is not None:
        handlers.zero_gpu_task = zero_gpu_task(model)
    with gr.Blocks(title="s2v — subject-driven video", delete_cache=(3600, 86400)) as demo:
        gr.Markdown(
            "# s2v — your subject, in motion\n"
            "Upload a photo of a subject (a toy, a pet, a product), say what it should do, and get a short "
            "video of *that* subject doing it. Method: [arXiv 2504.17816](https://arxiv.org/abs/2504.17816)."
        )
        for note in page_notes(model):
            gr.Markdown(note)
        with gr.Row():
            with gr.Column():
                parts = input_column(model)
            with gr.Column():
                parts |= output_column(model)
        parts |= examples_and_status(model, parts)
        wire_events(parts, handlers)
        demo.unload(handlers.end_session)
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE, api_open=False)  # no route around the queue
    return demo


def video_folder() -> Path:
    """A folder of our own inside Gradio's cache, so videos are served from where they are written (no copy),
    removed when the process exits."""
    cache = Path(gr.Video().GRADIO_CACHE)
    cache.mkdir(parents=True, exist_ok=True)  # a fresh container has none until the first upload
    folder = Path(tempfile.mkdtemp(prefix="s2v-app-", dir=cache))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def input_column(model: Model) -> Parts:
    """The subject beside what the model will see of it, the prompt and the buttons; the settings folded away."""
    with gr.Row():
        subject = refusing_bombs_in_words(
            gr.Image(
                label="Subject photo",
                type="filepath",
                image_mode=None,  # s2v decodes it once, alpha included, after checking its size
                sources=["upload", "clipboard"],
                elem_id="subject",
            )
        )
        seen = gr.Image(label="What the model sees", interactive=False, format="png", elem_id="seen")
    remove_background = gr.Checkbox(label="Remove background (rembg)", value=False)
    prompt = gr.Textbox(
        label="Prompt",
        placeholder="it moves left on grass" if model.preset.name == "nano" else "a cat surfing a wave at sunset",
        lines=2,
        elem_id="prompt",
    )
    with gr.Row():
        run = gr.Button("Generate", variant="primary", interactive=model.pipe is not None, elem_id="generate")
        cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
    quality = gr.Radio(
        [FULL, PREVIEW],
        value=FULL,
        label="Quality",
        info=f"{PREVIEW}: {model.preset.preview_steps} steps with a {model.preset.preview_cache} cache, to try a "
        "prompt before the full run",
        elem_id="quality",
    )
    parts = dict(subject=subject, seen=seen, remove_background=remove_background, prompt=prompt, run=run, cancel=cancel)
    parts["quality"] = quality
    return parts | settings_accordion(model)


def settings_accordion(model: Model) -> Parts:
    """Everything past the subject and the prompt, folded away, each at the preset's default."""
    preset = model.preset
    frame_choices = model.pipe.frame_choices if model.pipe else [preset.num_frames]
    resolutions = size_choices(preset)
    parts: Parts = {}
    with gr.Accordion("Generation settings", open=False):
        parts["negative_prompt"] = gr.Textbox(value="", label="Negative prompt", placeholder="blurry, low quality")
        with gr.Row():
            parts["steps"] = checked_by_s2v(
                gr.Slider(
                    *STEPS_RANGE, value=preset.num_inference_steps, step=1, label=LABELS["steps"], elem_id="steps"
                )
            )
            parts["guidance"] = checked_by_s2v(
                gr.Slider(*GUIDANCE_RANGE, value=preset.guidance_scale, step=0.5, label=LABELS["guidance"])
            )
        parts["dynamic_cfg"] = gr.Checkbox(label="Dynamic guidance (cosine schedule)", value=False)
        with gr.Row():
            parts["frames"] = gr.Dropdown(
                frame_choices,
                value=min(preset.num_frames, frame_choices[-1]),
                label=LABELS["frames"],
                allow_custom_value=True,  # checked by check_job, which names the field
            )
            parts["fps"] = checked_by_s2v(gr.Slider(*FPS_RANGE, value=preset.fps, step=1, label=LABELS["fps"]))
            parts["resolution"] = gr.Dropdown(resolutions, value=resolutions[0], label="Size (height x width)")
        with gr.Row():
            parts["seed"] = gr.Number(value=42, precision=None, label=LABELS["seed"])
            parts["random_seed"] = gr.Checkbox(value=True, label="Random seed")
    return parts


def output_column(model: Model) -> Parts:
    """The video, the settings it was made with, and what to write for this model."""
    video = gr.Video(label="Video", autoplay=True, loop=True, buttons=["download"], interactive=False, elem_id="video")
    run_settings = gr.Markdown(elem_id="run-settings")
    gr.Markdown(NANO_TIPS if model.preset.name == "nano" else PROMPT_TIPS)
    return dict(video=video, run_settings=run_settings)


def examples_and_status(model: Model, parts: Parts) -> Parts:
    """Example subjects with prompts that suit this model, and the status line under the page."""
    examples = NANO_EXAMPLE_PROMPTS if model.preset.name == "nano" else EXAMPLE_PROMPTS
    gr.Examples(
        examples=[[str(EXAMPLES / name), text] for name, text in examples.items()],
        inputs=[parts["subject"], parts["prompt"]],
        label="Examples",
    )
    return dict(status=gr.Markdown(status_line(model), elem_id="status"))


def wire_events(parts: Parts, handlers: Handlers) -> None:
    """The preview follows its inputs, Generate runs (and is the /generate API), Cancel stops it."""
    previewed = list(inputs_of(handlers.preview, parts).values())
    for component in previewed:
        component.change(
            handlers.preview,
            previewed,
            parts["seen"],
            api_visibility="private",
            concurrency_limit=PREVIEW_CONCURRENCY,
            concurrency_id="preview",
        )
    generation = parts["run"].click(
        handlers.generate,
        list(inputs_of(handlers.generate, parts).values()),
        [parts["video"], parts["run_settings"], parts["status"], parts["seed"]],
        api_name="generate",
        concurrency_limit=1,
        concurrency_id="model",
    )
    parts["cancel"].click(
        cancelled, None, parts["run_settings"], cancels=[generation], queue=False, api_visibility="private"
    )


def inputs_of(handler, parts: Parts) -> Parts:
    """The components a handler reads: those named as its parameters (all but the ones Gradio fills itself), in
    their order. Gradio passes values by position, so the order is taken from the one place it must match."""
    return {name: parts[name] for name in inspect.signature(handler).parameters if name not in FILLED_BY_GRADIO}


def page_notes(model: Model) -> list[str]:
    """What this server can and cannot do, said at the top of the page."""
    notes = []
    if model.preset.name == "nano":
        notes.append(
            "> **s2v-nano.** This machine has no CUDA GPU, so the page serves s2v-nano: the same method and code, "
            "trained on this project's miniature world of toy subjects on a CPU (48x48 pixels, 9 frames). "
            "It carries your subject's colour into the video and follows the motion and scene you write; it does "
            "not keep the subject's shape or pattern yet (see the README). The words it knows are below."
        )
    if model.preset.wiring_check:
        notes.append(
            f"> **Wiring demo.** This machine has no CUDA GPU, so the page runs the *{model.preset.name}* preset: "
            "a tiny random-weight model that exercises the whole pipeline but draws noise, not your subject."
        )
    if model.unavailable:
        notes.append(f"> **Generation is off.** {model.unavailable}")
    return notes


def prune(folder: Path, max_age: float = VIDEO_MAX_AGE) -> None:
    """Drop our videos older than `max_age`, after every request whatever its outcome."""
    cutoff = time.time() - max_age
    for video in folder.glob("*.mp4"):
        try:
            if video.stat().st_mtime < cutoff:
                video.unlink(missing_ok=True)
        except FileNotFoundError:  # pruned by Gradio's own cache timer meanwhile
            continue


def parse_resolution(choice: str) -> tuple[int, int]:
    """ "480x720" -> (480, 720), for a choice `checked_size` has already accepted."""
    height, width = (int(side) for side in choice.split("x"))
    return height, width


def configure_process() -> None:
    """Process-wide settings that only the app may choose (a library must not change them for its users):
    PIL's bomb limit at s2v's subject limit, wherever this process decodes an image; and a heartbeat short
    enough that a closed tab or a dead client is noticed within seconds, so its run stops (unless set)."""
    Image.MAX_IMAGE_PIXELS = MAX_SUBJECT_PIXELS
    os.environ.setdefault("GRADIO_HEARTBEAT_INTERVAL", str(HEARTBEAT_SECONDS))


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
    configure_process()
    demo = build_demo(model)
    # show_error stays off: Gradio's own exception texts carry server paths; s2v's messages arrive as gr.Error.
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
