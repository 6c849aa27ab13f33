"""Which caption a base model finds likeliest for a real clip: its text knowledge, apart from its drawing.

A base that draws every subject as a blob may still have learned that "square" means a square:
its denoising error on a real clip of a square is then lowest under the caption that says
"square". For each held-out item this renders the real clip, then scores the captions that
differ from the true one in a single attribute (each shape, each colour, each pattern, each
motion) by the model's v-prediction error at a few noise levels, with the same noise for every
caption. The attribute is read as the caption with the lowest error (a diffusion classifier, as
in Li et al. 2023). Chance is one over the attribute's choices. It is the grid's early signal: it
moves long before shapes come out of the sampler.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from s2v.model import predict
from s2v_train.tasks import video_distribution

from .evaluate import CHANCE
from .vae import FRAME_SIZE
from .world import COLOURS, MOTIONS, PATTERNS, SHAPES, Identity, clip_caption, eval_items, render_clip, split_identities

TIMESTEPS = (300, 500, 700)
"""Noise levels the error is summed over: where layout and shape are decided, away from both ends."""
ALTERNATIVES = {"shape": SHAPES, "colour": tuple(COLOURS), "pattern": PATTERNS, "motion": MOTIONS}


@torch.no_grad()
def caption_accuracy(
    pipe, seed: int = 0, per_subject: int = 8, limit: int | None = None, frame_offset: int = 0
) -> dict:
    """Percent of held-out items whose true value of each attribute has the lowest error; plus chance levels.

    `frame_offset`: the RoPE frame the base was trained to start its videos at (0 for a text-to-video base).
    """
    _, held = split_identities(seed)
    items = eval_items(held, per_subject)[:limit]
    right = {attribute: [] for attribute in ALTERNATIVES}
    for item in items:
        identity = Identity.from_id(item["identity"])
        clip = render_clip(
            identity, item["scene"], item["motion"], FRAME_SIZE, FRAME_SIZE, rng=np.random.default_rng(item["seed"])
        )
        latents = _latents(pipe, clip.frames)
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(item["seed"]))
        for attribute, choices in ALTERNATIVES.items():
            captions = [_caption(identity, item, attribute, choice) for choice in choices]
            errors = _errors(pipe, latents, noise, captions, frame_offset)
            right[attribute].append(choices[int(errors.argmin())] == _value(identity, item, attribute))
    scores = {attribute: round(float(np.mean(values)) * 100, 1) for attribute, values in right.items()}
    return {"items": len(items), "accuracy": scores, "chance": {a: CHANCE[a] for a in ALTERNATIVES}}


def _latents(pipe, frames: np.ndarray) -> torch.Tensor:
    """[1, T', C, h, w] scaled posterior mean: the clip as training sees it, without the posterior's noise."""
    mean = video_distribution(pipe, frames).mean
    return mean.permute(0, 2, 1, 3, 4).float() * pipe.vae.config.scaling_factor


def _errors(pipe, latents: torch.Tensor, noise: torch.Tensor, captions: list[str], frame_offset: int) -> torch.Tensor:
    """Each caption's v-prediction squared error summed over `TIMESTEPS`, one batch per noise level."""
    embeds, _ = pipe.encode_prompt(
        captions, do_classifier_free_guidance=False, max_sequence_length=pipe.transformer.config.max_text_seq_length
    )
    total = torch.zeros(len(captions))
    for step in TIMESTEPS:
        t = torch.full((len(captions),), step)
        clean, fixed = latents.expand(len(captions), -1, -1, -1, -1), noise.expand(len(captions), -1, -1, -1, -1)
        noisy = pipe.scheduler.add_noise(clean, fixed, t)
        target = pipe.scheduler.get_velocity(clean, fixed, t)
        prediction = predict(pipe.transformer, noisy, t, embeds, None, frame_offset=frame_offset).float()
        total += (prediction - target).pow(2).flatten(1).mean(dim=1)
    return total


def _caption(identity: Identity, item: dict, attribute: str, choice: str) -> str:
    if attribute == "motion":
        return clip_caption(identity, item["scene"], choice)
    if attribute == "pattern":
        accent = None if choice == "plain" else identity.accent or "black"
        identity = replace(identity, pattern=choice, accent=accent)
    else:
        identity = replace(identity, **{attribute: choice})
    return clip_caption(identity, item["scene"], item["motion"])


def _value(identity: Identity, item: dict, attribute: str) -> str:
    return item["motion"] if attribute == "motion" else getattr(identity, attribute)
