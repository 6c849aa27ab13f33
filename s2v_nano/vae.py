"""The nano VAE: a small AutoencoderKLCogVideoX trained from scratch on world frames.

It keeps the 5B VAE's structure (causal 3D convolutions, the first frame encoded on its own)
at 4x spatial and 2x time compression: a 48x48, 9-frame clip becomes 5 latent frames of 12x12.
The 5B compresses time 4x; at this size that merges 4 frames of a moving subject into one
latent and the measured ceiling fell to 69% identity (ghosted shapes), so time is halved only.
Each step trains on a batch of clips (the temporal layers) and a batch of single frames
(what identity pairs and references are encoded as), so both encodings stay sharp.

The posterior is sampled during training, which drives its variance down: the s2v code
samples latents from it, and a wide posterior would drown the signal (see s2v/tiny.py).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX
from PIL import Image

from s2v.errors import S2VError
from s2v.video import atomic_folder

from .analyze import analyze_clip
from .world import MOTIONS, SCENES, Identity, render_clip, world_paths

FRAME_SIZE = 48

CHANNELS = (16, 32, 64)
"""Channels per resolution level, full resolution first; a VAE with fewer levels keeps the first ones."""

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("CogVideoXDownBlock3D",) * 3,
    up_block_types=("CogVideoXUpBlock3D",) * 3,
    block_out_channels=CHANNELS,
    latent_channels=16,
    layers_per_block=1,
    norm_num_groups=8,
    temporal_compression_ratio=2,
    sample_height=480,
    sample_width=720,
)
"""The sample size sets diffusers' tile size: the 5B's, so tiling never cuts a 48x48 frame into tiles."""


@dataclass
class VAETrainConfig:
    steps: int = 2400
    clip_batch: int = 4
    image_batch: int = 8
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    kl_weight: float = 1e-6
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 200
    """Steps between resumable checkpoints, so a long VAE run survives an interrupted build."""
    spatial_compression: int = 4
    """Pixels per latent cell along each side: 4 (12x12 latents, the first nano) or 2 (24x24: finer shapes)."""
    channels: tuple[int, ...] = CHANNELS
    """Channels per resolution level, full resolution first (wider: more time training, caching and decoding)."""


def new_vae(
    seed: int = 0, spatial_compression: int = 4, channels: tuple[int, ...] = CHANNELS
) -> AutoencoderKLCogVideoX:
    levels = {2: 2, 4: 3}.get(spatial_compression)
    if levels is None:
        raise S2VError(f"The nano VAE compresses space 2x or 4x, not {spatial_compression}x.")
    if len(channels) < levels or any(c <= 0 or c % VAE_CONFIG["norm_num_groups"] for c in channels):
        raise S2VError(
            f"A {spatial_compression}x nano VAE takes {levels} channel counts, each a positive multiple of "
            f"{VAE_CONFIG['norm_num_groups']} (its normalisation groups), not {tuple(channels)}."
        )
    torch.manual_seed(seed)
    config = dict(
        VAE_CONFIG,
        down_block_types=("CogVideoXDownBlock3D",) * levels,
        up_block_types=("CogVideoXUpBlock3D",) * levels,
        block_out_channels=tuple(channels[:levels]),
    )
    return AutoencoderKLCogVideoX(**config)


def world_frames(world: Path) -> tuple[np.ndarray, np.ndarray]:
    """Training clips ([N, T, H, W, 3] uint8, memory-mapped) and single frames (subjects on white and pair targets)."""
    paths = world_paths(world)
    clips = np.load(paths.base_frames, mmap_mode="r")
    records = [json.loads(line) for line in paths.pairs.read_text().splitlines() if line]
    images = [
        np.asarray(Image.open(paths.pairs.parent / r[key]).convert("RGB"))
        for r in records
        for key in ("subject", "target")
    ]
    return clips, np.stack(images)


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> float [B, 3, T, H, W] in [-1, 1], as the VAE takes it."""
    return torch.from_numpy(np.array(frames)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 4, 1).numpy()


def reconstruction_loss(vae: AutoencoderKLCogVideoX, pixels: torch.Tensor, kl_weight: float, generator) -> torch.Tensor:
    posterior = vae.encode(pixels).latent_dist
    decoded = vae.decode(posterior.sample(generator)).sample
    error = decoded - pixels
    return error.pow(2).mean() + error.abs().mean() + kl_weight * posterior.kl().mean()


def train_vae(world: str | Path, output: str | Path, config: VAETrainConfig | None = None) -> Path:
    """Train on the world's base clips and pair images; save a diffusers folder with a measured scaling factor.

    Every `checkpoint_every` steps the whole state (weights, optimizer, schedule, both generators, log) goes
    to `<output>.checkpoint`, and a run started again with the same config continues from it exactly."""
    config = config or VAETrainConfig()
    world, output = Path(world), Path(output)
    if world_paths(world).base_frames is None:
        raise S2VError(f"{world} is not a nano world written with arrays (no base/frames.npy); run write_world first.")
    clips, images = world_frames(world)
    state = _TrainState.start(config, output.with_name(output.name + ".checkpoint"))
    vae, rng, generator = state.vae, state.rng, state.generator
    while state.step < config.steps:
        clip_batch = to_pixels(clips[np.sort(rng.choice(len(clips), config.clip_batch, replace=False))])
        image_batch = to_pixels(images[rng.choice(len(images), config.image_batch, replace=False)][:, None])
        loss = reconstruction_loss(vae, clip_batch, config.kl_weight, generator)
        loss = loss + reconstruction_loss(vae, image_batch, config.kl_weight, generator)
        state.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        state.optimizer.step()
        state.schedule.step()
        state.step += 1
        if state.step % config.log_every == 0 or state.step == config.steps:
            state.log.append({"step": state.step, "loss": loss.item(), "seconds": round(state.seconds(), 1)})
            print(json.dumps(state.log[-1]), flush=True)
        if state.step % config.checkpoint_every == 0 and state.step < config.steps:
            state.save()
    vae.eval()
    vae.register_to_config(scaling_factor=latent_scaling(vae, clips))
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(output) as staging:
        vae.save_pretrained(staging)
        (staging / "train_log.json").write_text(json.dumps({"config": asdict(config), "log": state.log}, indent=1))
    state.discard()
    return output


@dataclass
class _TrainState:
    """Everything a VAE run needs to continue exactly where it stopped."""

    config: VAETrainConfig
    path: Path
    vae: AutoencoderKLCogVideoX
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    rng: np.random.Generator
    generator: torch.Generator
    step: int = 0
    log: list = field(default_factory=list)
    elapsed: float = 0.0
    started: float = 0.0

    @classmethod
    def start(cls, config: VAETrainConfig, path: Path) -> _TrainState:
        """A fresh run, or the checkpoint at `path` when it was written with this very config."""
        vae = new_vae(config.seed, config.spatial_compression, config.channels).train()
        optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _cosine(step, config))
        rng, generator = np.random.default_rng(config.seed), torch.Generator().manual_seed(config.seed)
        state = cls(config, path, vae, optimizer, schedule, rng, generator, started=time.time())
        saved = torch.load(path) if path.is_file() else None
        if saved is not None and {**asdict(VAETrainConfig()), **saved["config"]} != asdict(config):
            print(f"{path} was written by a VAE run with another config; starting again", flush=True)
        elif saved is not None:
            vae.load_state_dict(saved["vae"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            rng.bit_generator.state = saved["rng"]
            generator.set_state(saved["generator"])
            state.step, state.log, state.elapsed = saved["step"], saved["log"], saved["elapsed"]
            print(f"resuming the VAE at step {state.step} from {path}", flush=True)
        return state

    def seconds(self) -> float:
        return self.elapsed + time.time() - self.started

    def save(self) -> None:
        """Written beside, then renamed over the last one: an interruption mid-write keeps the previous."""
        staging = self.path.with_suffix(".partial")
        torch.save(
            {
                "config": asdict(self.config),
                "vae": self.vae.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "rng": self.rng.bit_generator.state,
                "generator": self.generator.get_state(),
                "step": self.step,
                "log": self.log,
                "elapsed": self.seconds(),
            },
            staging,
        )
        staging.replace(self.path)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _cosine(step: int, config: VAETrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def latent_scaling(vae: AutoencoderKLCogVideoX, clips: np.ndarray, count: int = 256) -> float:
    """1 / std of the latent means over `count` clips, so scaled latents have unit variance as diffusion expects."""
    means = [vae.encode(to_pixels(clips[i : i + 32])).latent_dist.mean for i in range(0, min(count, len(clips)), 32)]
    return float(1.0 / torch.cat(means).std())


@dataclass
class Ceiling:
    """What the analyzer still reads after a VAE round trip, beside what it reads on the originals."""

    psnr: float
    posterior_std: float
    accuracy: dict[str, float]
    original: dict[str, float]


@torch.no_grad()
def reconstruction_ceiling(
    vae: AutoencoderKLCogVideoX, identities: list[Identity], clips_per_identity: int = 4, seed=0
):
    """Render clips of `identities` (the held-out ones), round-trip them through the VAE and analyze both."""
    rng = np.random.default_rng(seed)
    size = FRAME_SIZE
    truth, frames = [], []
    for identity in identities:
        for _ in range(clips_per_identity):
            scene, motion = rng.choice(list(SCENES)), rng.choice(MOTIONS)
            frames.append(render_clip(identity, scene, motion, size, size, rng=rng).frames)
            truth.append({**asdict(identity), "scene": scene, "motion": motion})
    originals = np.stack(frames)
    posterior = vae.encode(to_pixels(originals)).latent_dist
    decoded = to_uint8(vae.decode(posterior.sample(torch.Generator().manual_seed(seed))).sample)
    error = (decoded.astype(np.float32) - originals.astype(np.float32)) / 255
    psnr = float(10 * np.log10(1 / np.mean(error**2)))
    return Ceiling(
        psnr=round(psnr, 2),
        posterior_std=float(torch.exp(0.5 * posterior.logvar).mean() * vae.config.scaling_factor),
        accuracy=_accuracy([analyze_clip(clip) for clip in decoded], truth),
        original=_accuracy([analyze_clip(clip) for clip in originals], truth),
    )


def _accuracy(analyses, truth: list[dict]) -> dict[str, float]:
    keys = ("shape", "colour", "pattern", "accent", "scene", "motion")
    scores = {key: np.mean([getattr(a, key) == t[key] for a, t in zip(analyses, truth, strict=True)]) for key in keys}
    scores["identity"] = np.mean(
        [all(getattr(a, k) == t[k] for k in keys[:4]) for a, t in zip(analyses, truth, strict=True)]
    )
    return {key: round(float(value) * 100, 1) for key, value in scores.items()}
