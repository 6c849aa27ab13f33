"""Presets: which model to load and its defaults (sampling, size, subject framing), for the pipeline,
the CLI and the app alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NANO_FOLDER = Path(__file__).resolve().parents[1] / "assets" / "nano"
"""s2v-nano's shipped weights: `base/` (a CogVideoX folder) and `lora/`, written by `s2v-nano build`."""

AUTHORS_CHECKPOINT_HINT = (
    "The method's LoRA (pytorch_lora_weights_transformer.safetensors) is published by the "
    "paper's authors outside the Hugging Face Hub: see 'Get Checkpoint' in "
    "https://github.com/carpedkm/disentangled-subject-to-vid (a Google Drive download). "
    "Download it and pass --lora <folder or .safetensors file>."
)


@dataclass(frozen=True)
class Preset:
    """A model and the settings that suit it."""

    name: str
    model: str | None
    """Hub id of the base model; None for a model built in-process."""
    description: str
    height: int
    width: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    fps: int
    resolutions: tuple[tuple[int, int], ...]
    """(height, width) choices offered in the app; the first is the default."""
    needs_lora: bool
    """Whether the base model needs the method's LoRA to follow the subject at all."""
    wiring_check: bool = False
    """Random weights: output is noise, useful only to check that everything runs."""
    lora: str | None = None
    """The LoRA loaded when the user names neither a model nor a LoRA."""
    subject_size: float | None = None
    """Where the model was trained on subjects of one size: the subject is found in the photo and scaled so
    its box's longer side is this share of the frame (`prepare_subject`); None fits the whole photo."""
    display_scale: int = 1
    """Videos are written this many times larger, each pixel a square block (`save_video(scale=...)`), so a
    tiny model's pixels survive H.264's half-resolution colour."""
    preview_steps: int = 10
    """A fast preview's denoising steps (the app's *Fast preview*); nano's is chosen from `bench/cache.py`'s
    table, the others are set by analogy until measured."""
    preview_cache: str = "pab"
    """A fast preview's cache acceleration (`s2v.caching.CACHE_METHODS`): with fewer steps, pyramid attention
    broadcast changed the fewest motion verdicts on nano (3/48 at 12 steps, against 6/48 without it)."""


DEFAULTS_PRESET = "cogvideox-5b"
"""Whose sampling settings a pipeline has when it was built without a preset (diffusers' own 50 steps at 6)."""

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        model=None,
        description="tiny random-weight CogVideoX built in-process (a wiring check: its videos are noise)",
        height=64,
        width=96,
        num_frames=9,
        num_inference_steps=4,
        guidance_scale=6.0,
        fps=8,
        resolutions=((64, 96), (96, 64), (64, 64)),
        needs_lora=False,
        wiring_check=True,
        preview_steps=2,
    ),
    "nano": Preset(
        name="nano",
        model=str(NANO_FOLDER / "base"),
        lora=str(NANO_FOLDER / "lora"),
        description="s2v-nano: the method trained on this project's miniature world of toy subjects, on a CPU",
        height=48,
        width=48,
        num_frames=9,
        num_inference_steps=25,
        guidance_scale=3.0,
        fps=8,
        resolutions=((48, 48),),
        needs_lora=False,
        subject_size=0.42,  # s2v_nano.world.SUBJECT_SIZE: how the world draws its references
        display_scale=8,
        preview_steps=12,
    ),
    "cogvideox-5b": Preset(
        name="cogvideox-5b",
        model="THUDM/CogVideoX-5b",
        description="CogVideoX-5B with the method's subject LoRA (arXiv 2504.17816)",
        height=480,
        width=720,
        num_frames=49,
        num_inference_steps=50,
        guidance_scale=6.0,
        fps=8,
        resolutions=((480, 720), (720, 480), (480, 480)),
        needs_lora=True,
        preview_steps=25,  # half the steps, as nano's preview; unmeasured on the 5B (no GPU here yet)
    ),
}
