"""Shared fixtures: tiny random-weight models built in-process; never the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from s2v.pipeline import S2VPipeline  # noqa: E402
from s2v.tiny import tiny_components  # noqa: E402

SMALL = dict(height=32, width=48, num_frames=9, num_inference_steps=2)
"""The smallest valid generation: 4x6 latent grid, 3 latent frames."""


@pytest.fixture
def tiny_pipe() -> S2VPipeline:
    pipe = S2VPipeline(**tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def subject_array() -> np.ndarray:
    """A red square on a blue background, 40x60."""
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, :, 2] = 200
    image[10:30, 20:40] = (220, 30, 30)
    return image


def random_inputs(transformer, frames: int = 3, grid: tuple[int, int] = (4, 6), batch: int = 1, seed: int = 0):
    """Noisy latents, a clean reference, text embeddings and a timestep for one forward."""
    config = transformer.config
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, frames, config.in_channels, *grid, generator=generator)
    reference = torch.randn(batch, 1, config.in_channels, *grid, generator=generator)
    text = torch.randn(batch, config.max_text_seq_length, config.text_embed_dim, generator=generator)
    timestep = torch.full((batch,), 500, dtype=torch.long)
    return latents, reference, text, timestep
