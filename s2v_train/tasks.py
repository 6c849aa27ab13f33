"""The two objectives of METHOD §5 and the switch between them.

Identity injection: a subject-image pair, the target trained as a one-frame video at
RoPE index 1, the prompt led by `<cls>`, the reference always present. Motion
preservation: an unpaired clip, a random frame of it (or its listed subject image) as the
reference, the whole reference stream dropped with probability q, a plain caption. Every micro-batch is all
one task; the reference-token forward itself is `s2v.model.predict`.

A batch is built one way whatever feeds it: a source yields each drawn item's encodings (encoded
now by `EncodingPairs`/`EncodingVideos`, or read from a prepared cache), and `identity_batch` /
`motion_batch` make the random draws and assemble them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_snr
from PIL import Image

from s2v.model import predict
from s2v.pipeline import S2VPipeline
from s2v.text import strip_reference_token, with_reference_token

from .config import SUBJECT_REFERENCE, TEXT_TO_VIDEO, TaskConfig, TrainConfig, subject_references
from .data import PairSample, Samples, VideoSample, open_datasets

IDENTITY, MOTION, IMAGE = "identity", "motion", "image"
RELEASE_FRAME_GRID = 9
"""The release picks the reference from frames 0, 9, 18, ... of the clip."""


class TaskSchedule:
    """Which task each micro-batch trains, for every ablation mode of one flag."""

    def __init__(self, config: TaskConfig, max_steps: int):
        self.mode = config.mode
        self.p = config.motion_share
        self.image_share = config.image_share
        self.identity_steps = round((1 - self.p) * max_steps)

    def task(self, step: int, rng: np.random.Generator) -> str:
        if self.mode == "two-stage":
            return IDENTITY if step < self.identity_steps else MOTION
        if self.image_share:
            return IMAGE if rng.random() < self.image_share else MOTION
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
    """Index of the candidate used as the reference on the motion task (a subject image is the only one)."""
    if how in ("first", SUBJECT_REFERENCE):
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


@dataclass
class EncodedPair:
    """One direction of a subject-image pair as the frozen encoders give it, encoded now or read from a cache."""

    reference: DiagonalGaussianDistribution
    """The VAE's posterior of the reference image as a one-frame clip, `[1, C, 1, h, w]`."""
    target: DiagonalGaussianDistribution
    prompt_embeds: torch.Tensor
    """[L, D]: the `<cls>` prompt."""
    prompt: str


@dataclass
class EncodedClip:
    """An unpaired clip as the frozen encoders give it, encoded now or read from a cache."""

    video: DiagonalGaussianDistribution
    """The VAE's posterior of the whole clip, `[1, C, T', h, w]`."""
    frames: Sequence[DiagonalGaussianDistribution] | None
    """The candidate references, each a one-frame clip: every frame of the clip, or only its subject image
    with `reference_frame=subject`; None when no step can keep a reference (q = 1: a text-to-video base)."""
    prompt_embeds: torch.Tensor
    prompt: str


class EncodingPairs:
    """Pairs encoded as they are drawn (no cache); an unreadable pair raises as the dataset's item would."""

    def __init__(self, pipe: S2VPipeline, pairs: Samples[PairSample]):
        self.pipe, self.pairs = pipe, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> EncodedPair:
        sample = self.pairs[index]
        prompt = with_reference_token(sample.caption)
        reference, target = (self.pipe.reference_distribution(image) for image in (sample.reference, sample.target))
        return EncodedPair(reference, target, encode_text(self.pipe, [prompt])[0], prompt)


class EncodingVideos:
    """Clips encoded as they are drawn (no cache); a reference frame is encoded only once a step picks it."""

    def __init__(self, pipe: S2VPipeline, videos: Samples[VideoSample], with_frames: bool, subject: bool = False):
        self.pipe, self.videos, self.with_frames, self.subject = pipe, videos, with_frames, subject

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> EncodedClip:
        sample = self.videos[index]
        prompt = strip_reference_token(sample.caption)
        frames = None
        if self.with_frames:
            images = np.asarray(sample.subject)[None] if self.subject else sample.frames
            frames = _FramesOnDemand(self.pipe, images)
        return EncodedClip(
            video_distribution(self.pipe, sample.frames), frames, encode_text(self.pipe, [prompt])[0], prompt
        )


class _FramesOnDemand:
    def __init__(self, pipe: S2VPipeline, frames: np.ndarray):
        self.pipe, self.frames = pipe, frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> DiagonalGaussianDistribution:
        return self.pipe.reference_distribution(Image.fromarray(self.frames[index]))


def encoding_sources(pipe: S2VPipeline, config: TrainConfig) -> tuple[EncodingPairs | None, EncodingVideos | None]:
    """The run's datasets as sources of encodings, for a run without a prepared cache."""
    pairs, videos = open_datasets(config)
    return (
        None if pairs is None else EncodingPairs(pipe, pairs),
        None
        if videos is None
        else EncodingVideos(pipe, videos, needs_reference_frames(config.tasks), subject_references(config.tasks)),
    )


def needs_reference_frames(config: TaskConfig) -> bool:
    """Whether any step can keep a motion clip's reference, so its frames must be encodable."""
    return drop_probability(config) < 1


def identity_batch(items: list[EncodedPair], generator: torch.Generator, scaling: float, device) -> Batch:
    """The identity micro-batch: every reference drawn from the generator, then every target."""
    references = sample_latents([item.reference for item in items], generator, scaling)
    targets = sample_latents([item.target for item in items], generator, scaling)
    keep = torch.ones(len(items), dtype=torch.bool)
    embeds, prompts = _texts(items, device)
    return Batch(IDENTITY, targets.to(device), references.to(device), keep, embeds, prompts, [None] * len(items))


def motion_batch(
    items: list[EncodedClip],
    config: TaskConfig,
    rng: np.random.Generator,
    generator: torch.Generator,
    scaling: float,
    device,
) -> Batch:
    """The motion micro-batch: reference frames and kept streams from `rng`, then every clip's latents and
    every reference from the generator. Clips without frames (q = 1) get zero references, all dropped."""
    referenced = all(item.frames is not None for item in items)
    indices = [reference_frame(len(item.frames), config.reference_frame, rng) if referenced else None for item in items]
    keep = keep_mask(len(items), config, rng)
    latents = sample_latents([item.video for item in items], generator, scaling)
    if referenced:
        frames = [item.frames[index] for item, index in zip(items, indices, strict=True)]
        references = sample_latents(frames, generator, scaling)
    else:
        references = torch.zeros_like(latents[:, :1])
    embeds, prompts = _texts(items, device)
    return Batch(MOTION, latents.to(device), references.to(device), keep, embeds, prompts, indices)


def image_batch(items: list[EncodedClip], generator: torch.Generator, scaling: float, device) -> Batch:
    """A text-to-video base's image micro-batch: each clip's first latent frame with the clip's caption, no
    reference. The first frame of a video is where the sampler's shapes must first appear; alone it costs a
    fifth of the clip's tokens, so a step sees several times the subjects."""
    latents = sample_latents([item.video for item in items], generator, scaling)[:, :1]
    keep = torch.zeros(len(items), dtype=torch.bool)
    embeds, prompts = _texts(items, device)
    references = torch.zeros_like(latents)
    return Batch(IMAGE, latents.to(device), references.to(device), keep, embeds, prompts, [None] * len(items))


def sample_latents(
    posteriors: list[DiagonalGaussianDistribution], generator: torch.Generator, scaling: float
) -> torch.Tensor:
    """One fp32 draw from each posterior in turn, as `[B, T, C, h, w]` latents scaled by the VAE's factor."""
    draws = [DiagonalGaussianDistribution(p.parameters.float()).sample(generator=generator) for p in posteriors]
    return torch.cat(draws).permute(0, 2, 1, 3, 4) * scaling


def _texts(items: list[EncodedPair] | list[EncodedClip], device) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([item.prompt_embeds for item in items]).to(device), [item.prompt for item in items]


def drop_captions(batch: Batch, empty_prompt: torch.Tensor, probability: float, rng: np.random.Generator) -> Batch:
    """Replace each caption by the empty prompt with `probability`: what CFG's unconditional branch is trained on."""
    dropped = rng.random(len(batch.prompts)) < probability
    if not dropped.any():
        return batch
    embeds = batch.prompt_embeds.clone()
    embeds[torch.from_numpy(dropped).to(embeds.device)] = empty_prompt.to(embeds)
    prompts = ["" if drop else prompt for drop, prompt in zip(dropped, batch.prompts, strict=True)]
    return replace(batch, prompt_embeds=embeds, prompts=prompts)


def video_distribution(pipe: S2VPipeline, frames: np.ndarray) -> DiagonalGaussianDistribution:
    """The VAE's posterior for a uint8 [T, H, W, 3] clip (mean and log-variance `[1, C, T', h, w]`)."""
    return pipe.vae.encode(clip_pixels(pipe, frames)).latent_dist


def clip_pixels(pipe: S2VPipeline, frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] frames as the VAE takes them, `[1, 3, T, H, W]` in [-1, 1] on the execution device:
    diffusers' video processor, as the pipeline prepares a subject."""
    images = [Image.fromarray(frame) for frame in frames]
    pixels = pipe.video_processor.preprocess_video(images, frames.shape[1], frames.shape[2])
    return pixels.to(pipe._execution_device, pipe.vae.dtype)


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
    logit_normal: tuple[float, float] | None = None,
) -> torch.Tensor:
    """v-prediction MSE over the video latents; kept and dropped references as two forwards, the videos without
    one at RoPE frames `unreferenced_offset`.. (see `unreferenced_frame_offset`).

    Each sample's mean squared error is weighted (1, or min-SNR-gamma's `min(SNR, gamma) / (SNR + 1)`) and the
    result is the mean over the whole micro-batch, whichever group a sample is in. `config` is the
    transformer's (it may be wrapped). Timesteps are uniform, or logit-normal with `logit_normal` = (mean, std).
    """
    latents = batch.latents
    size = latents.shape[0]
    timesteps = sample_timesteps(scheduler.config.num_train_timesteps, size, generator, logit_normal)
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


def sample_timesteps(
    count: int, size: int, generator: torch.Generator, logit_normal: tuple[float, float] | None = None
) -> torch.Tensor:
    """`size` training timesteps in 0..count-1: uniform, or SD3's logit-normal (mean, std) mapped onto them."""
    if logit_normal is None:
        return torch.randint(0, count, (size,), generator=generator)
    mean, std = logit_normal
    u = compute_density_for_timestep_sampling("logit_normal", size, mean, std, generator=generator)
    return (u * count).long().clamp(max=count - 1)


def _loss_weights(scheduler, timesteps: torch.Tensor, snr_gamma: float | None) -> torch.Tensor:
    """Per-sample loss weights: all 1, or min-SNR-gamma for v-prediction (diffusers' `compute_snr`)."""
    if snr_gamma is None:
        return torch.ones(timesteps.shape, device=timesteps.device)
    snr = compute_snr(scheduler, timesteps).float()
    return snr.clamp(max=snr_gamma) / (snr + 1)
