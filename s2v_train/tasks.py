"""The two objectives of METHOD §5 and the switch between them.

Identity injection: a subject-image pair, the target trained as a one-frame video at
RoPE index 1, the prompt led by `<cls>`, the reference always present. Motion
preservation: an unpaired clip, a random frame of it as the reference, the whole
reference stream dropped with probability q, a plain caption. Every micro-batch is all
one task; the reference-token forward itself is `s2v.model.predict`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from diffusers.training_utils import compute_snr
from PIL import Image

from s2v.model import predict
from s2v.pipeline import S2VPipeline
from s2v.text import strip_reference_token, with_reference_token

from .config import TEXT_TO_VIDEO, TaskConfig
from .data import PairSample, VideoSample

IDENTITY, MOTION = "identity", "motion"
RELEASE_FRAME_GRID = 9
"""The release picks the reference from frames 0, 9, 18, ... of the clip."""


class TaskSchedule:
    """Which task each micro-batch trains, for every ablation mode of one flag."""

    def __init__(self, config: TaskConfig, max_steps: int):
        self.mode = config.mode
        self.p = config.motion_share
        self.identity_steps = round((1 - self.p) * max_steps)

    def task(self, step: int, rng: np.random.Generator) -> str:
        if self.mode == "two-stage":
            return IDENTITY if step < self.identity_steps else MOTION
        return MOTION if rng.random() < self.p else IDENTITY


def drop_probability(config: TaskConfig) -> float:
    """q, forced to 1 in the joint text-to-video ablation (the reference is never seen on videos) and when
    pretraining a text-to-video base."""
    return 1.0 if config.mode in ("joint-t2v", TEXT_TO_VIDEO) else config.drop_probability


def unreferenced_frame_offset(config: TaskConfig) -> int:
    """The RoPE frame a video without a reference starts at: 0 when pretraining a text-to-video base (stock
    CogVideoX's positions, which its pipeline samples at), 1 in the method's runs, where a dropped reference
    leaves the video where the reference would push it (METHOD §2)."""
    return 0 if config.mode == TEXT_TO_VIDEO else 1


def keep_mask(size: int, config: TaskConfig, rng: np.random.Generator) -> torch.Tensor:
    """Per sample: True keeps the reference stream, False drops all of it (probability q)."""
    return torch.from_numpy(rng.random(size) >= drop_probability(config))


def reference_frame(num_frames: int, how: str, rng: np.random.Generator) -> int:
    """Index of the clip frame used as the reference on the motion task."""
    if how == "first":
        return 0
    if how == "grid":
        return int(rng.choice(np.arange(0, num_frames, RELEASE_FRAME_GRID)))
    return int(rng.integers(num_frames))


@dataclass
class Batch:
    """One micro-batch, encoded: what the transformer is trained on."""

    task: str
    latents: torch.Tensor
    """[B, T, C, h, w] clean latents, scaled once by the VAE's factor (T = 1 for identity)."""
    reference: torch.Tensor
    """[B, 1, C, h, w] clean reference latents (ignored where `keep` is False)."""
    keep: torch.Tensor
    """[B] bool: which samples keep their reference stream."""
    prompt_embeds: torch.Tensor
    prompts: list[str]
    frame_indices: list[int | None]


def identity_batch(pipe: S2VPipeline, samples: list[PairSample], generator: torch.Generator) -> Batch:
    references = torch.cat([pipe.encode_reference(sample.reference, generator) for sample in samples])
    targets = torch.cat([pipe.encode_reference(sample.target, generator) for sample in samples])
    prompts = [with_reference_token(sample.caption) for sample in samples]
    keep = torch.ones(len(samples), dtype=torch.bool)
    return Batch(IDENTITY, targets, references, keep, encode_text(pipe, prompts), prompts, [None] * len(samples))


def motion_batch(
    pipe: S2VPipeline,
    samples: list[VideoSample],
    config: TaskConfig,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> Batch:
    indices = [reference_frame(len(sample.frames), config.reference_frame, rng) for sample in samples]
    keep = keep_mask(len(samples), config, rng)
    latents = torch.cat([encode_video(pipe, sample.frames, generator) for sample in samples])
    references = torch.cat(
        [pipe.encode_reference(Image.fromarray(s.frames[i]), generator) for s, i in zip(samples, indices, strict=True)]
    )
    prompts = [strip_reference_token(sample.caption) for sample in samples]
    return Batch(MOTION, latents, references, keep, encode_text(pipe, prompts), prompts, indices)


def drop_captions(batch: Batch, empty_prompt: torch.Tensor, probability: float, rng: np.random.Generator) -> Batch:
    """Replace each caption by the empty prompt with `probability`: what CFG's unconditional branch is trained on."""
    dropped = rng.random(len(batch.prompts)) < probability
    if not dropped.any():
        return batch
    embeds = batch.prompt_embeds.clone()
    embeds[torch.from_numpy(dropped).to(embeds.device)] = empty_prompt.to(embeds)
    prompts = ["" if drop else prompt for drop, prompt in zip(dropped, batch.prompts, strict=True)]
    return replace(batch, prompt_embeds=embeds, prompts=prompts)


def encode_video(pipe: S2VPipeline, frames: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [1, T', C, h, w] latents, sampled from the run's generator, scaled once."""
    latent = video_distribution(pipe, frames).sample(generator=generator)
    return latent.permute(0, 2, 1, 3, 4) * pipe.vae.config.scaling_factor


def video_distribution(pipe: S2VPipeline, frames: np.ndarray):
    """The VAE's posterior for a uint8 [T, H, W, 3] clip (mean and log-variance `[1, C, T', h, w]`)."""
    pixels = torch.from_numpy(frames).permute(3, 0, 1, 2).unsqueeze(0).float() / 127.5 - 1.0
    return pipe.vae.encode(pixels.to(pipe._execution_device, pipe.vae.dtype)).latent_dist


def encode_text(pipe: S2VPipeline, prompts: list[str]) -> torch.Tensor:
    embeds, _ = pipe.encode_prompt(
        prompts,
        do_classifier_free_guidance=False,
        max_sequence_length=pipe.transformer.config.max_text_seq_length,
        device=pipe._execution_device,
    )
    return embeds


def batch_loss(
    transformer,
    config,
    scheduler,
    batch: Batch,
    generator: torch.Generator,
    snr_gamma: float | None = None,
    unreferenced_offset: int = 1,
) -> torch.Tensor:
    """v-prediction MSE over the video latents; kept and dropped references as two forwards, the videos without
    one at RoPE frames `unreferenced_offset`.. (see `unreferenced_frame_offset`).

    Each sample's mean squared error is weighted (1, or min-SNR-gamma's `min(SNR, gamma) / (SNR + 1)`) and the
    result is the mean over the whole micro-batch, whichever group a sample is in. `config` is the
    transformer's (it may be wrapped).
    """
    latents = batch.latents
    size = latents.shape[0]
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (size,), generator=generator)
    noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(latents.device)
    timesteps = timesteps.to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = scheduler.get_velocity(latents, noise, timesteps)
    weights = _loss_weights(scheduler, timesteps, snr_gamma)
    total = latents.new_zeros(())
    for kept in (True, False):
        group = (batch.keep == kept).nonzero().flatten().to(latents.device)
        if len(group) == 0:
            continue
        prediction = predict(
            transformer,
            noisy[group],
            timesteps[group],
            batch.prompt_embeds[group],
            batch.reference[group] if kept else None,
            frame_offset=1 if kept else unreferenced_offset,
            config=config,
        )
        errors = (prediction.float() - target[group].float()).pow(2).flatten(1).mean(dim=1)
        total = total + (errors * weights[group]).sum()
    return total / size


def _loss_weights(scheduler, timesteps: torch.Tensor, snr_gamma: float | None) -> torch.Tensor:
    """Per-sample loss weights: all 1, or min-SNR-gamma for v-prediction (diffusers' `compute_snr`)."""
    if snr_gamma is None:
        return torch.ones(timesteps.shape, device=timesteps.device)
    snr = compute_snr(scheduler, timesteps).float()
    return snr.clamp(max=snr_gamma) / (snr + 1)
