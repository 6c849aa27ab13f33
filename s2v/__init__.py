"""s2v: zero-shot subject-driven video generation (arXiv 2504.17816) on diffusers."""

from .errors import S2VError, S2VWarning
from .loading import LoadSettings, load_lora, load_pipeline, save_lora
from .pipeline import S2VPipeline, S2VPipelineOutput
from .presets import PRESETS, Preset
from .subject import prepare_subject
from .text import REFERENCE_TOKEN
from .video import save_video

__all__ = [
    "PRESETS",
    "REFERENCE_TOKEN",
    "LoadSettings",
    "Preset",
    "S2VError",
    "S2VPipeline",
    "S2VPipelineOutput",
    "S2VWarning",
    "load_lora",
    "load_pipeline",
    "prepare_subject",
    "save_lora",
    "save_video",
]
