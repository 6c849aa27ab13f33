"""The frozen encoders, run once: `s2v-train prepare --config ...`.

T5 and the VAE never train, so their outputs can be computed ahead and reused every
epoch. What the random choices of a step may need is all cached: both halves of each
pair (either can be the reference) with both directions' `<cls>` prompts, and for each
clip the whole video plus every frame on its own (any frame can be the reference).
Latents are stored as the VAE's distribution (mean, log-variance) and sampled with the
run's generator at load time, as the uncached path samples them.

Layout: `<cache>/index.json`, `<cache>/pairs/0000000.safetensors`,
`<cache>/videos/0000000.safetensors`.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from s2v.errors import S2VError
from s2v.loading import load_base_pipeline, resolve_device
from s2v.text import strip_reference_token, with_reference_token

from .config import TrainConfig
from .data import UnreadableSample, open_datasets
from .tasks import (
    IDENTITY,
    MOTION,
    Batch,
    drop_probability,
    encode_text,
    keep_mask,
    reference_frame,
    video_distribution,
)

FORMAT = 1
INDEX = "index.json"
Posterior = tuple[torch.Tensor, torch.Tensor]


@dataclass
class CachedPair:
    reference: Posterior
    target: Posterior
    prompt_embeds: torch.Tensor
    prompt: str


@dataclass
class CachedClip:
    video: Posterior
    """[C, T', h, w] mean and log-variance of the whole clip."""
    frames: Posterior | None
    """[T, C, 1, h, w]: every frame as a one-frame clip, the candidate references; None when the run
    drops every reference (q = 1, a text-to-video base), which needs none."""
    prompt_embeds: torch.Tensor
    prompt: str


def prepare(config: TrainConfig) -> Path:
    """Encode the whole dataset into `data.cache`; unreadable items are skipped and listed."""
    if not config.data.cache:
        raise S2VError("Set data.cache to the folder the encodings should go to.")
    cache = Path(config.data.cache)
    device = resolve_device("auto")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    pipe = load_base_pipeline(config.model.preset, config.model.model, dtype).to(device)
    pairs, videos = open_datasets(config)
    skipped: list[str] = []
    frames = _needs_frames(config)
    with torch.no_grad():
        pair_count = clip_count = 0
        if pairs is not None:
            read_pair = lambda i: (pairs[2 * i], pairs[2 * i + 1])  # noqa: E731
            encode_pair = lambda both: _pair_tensors(pipe, *both)  # noqa: E731
            pair_count = _encode_all(len(pairs) // 2, cache / "pairs", read_pair, encode_pair, skipped)
        if videos is not None:
            encode_clip = lambda clip: _clip_tensors(pipe, clip, frames)  # noqa: E731
            clip_count = _encode_all(len(videos), cache / "videos", videos.__getitem__, encode_clip, skipped)
    index = {
        "format": FORMAT,
        "fingerprint": _fingerprint(config),
        "scaling_factor": pipe.vae.config.scaling_factor,
        "pairs": pair_count,
        "videos": clip_count,
        "skipped": skipped,
    }
    (cache / INDEX).write_text(json.dumps(index, indent=2))
    return cache


def open_cache(config: TrainConfig) -> tuple[CachedPairs | None, CachedVideos | None]:
    """The prepared encodings, after checking they were made for this data and model."""
    cache = Path(config.data.cache)
    if not (cache / INDEX).is_file():
        raise S2VError(f"{cache} holds no prepared encodings; run `s2v-train prepare --config ...` first.")
    index = json.loads((cache / INDEX).read_text())
    if index.get("format") != FORMAT or index.get("fingerprint") != _fingerprint(config):
        raise S2VError(
            f"{cache} was prepared for other data or another model ({index.get('fingerprint')}); "
            "run `s2v-train prepare` again for this config."
        )
    pairs = CachedPairs(sorted((cache / "pairs").glob("*.safetensors"))) if config.uses_pairs else None
    videos = CachedVideos(sorted((cache / "videos").glob("*.safetensors"))) if config.uses_videos else None
    for name, items in (("pairs", pairs), ("clips", videos)):
        if items is not None and len(items) == 0:
            raise S2VError(f"{cache} has no usable {name}; check the data and prepare again.")
    return pairs, videos


class CachedPairs:
    """Prepared pairs in both directions, like `PairDataset`: item 2k is pair k forward, 2k+1 backward."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return 2 * len(self.files)

    def __getitem__(self, index: int) -> CachedPair:
        pair, direction = divmod(index, 2)
        tensors, captions = _read(self.files[pair])
        first = (tensors["first_mean"], tensors["first_logvar"])
        second = (tensors["second_mean"], tensors["second_logvar"])
        if direction == 0:
            return CachedPair(first, second, tensors["prompt_for_second"], captions[1])
        return CachedPair(second, first, tensors["prompt_for_first"], captions[0])


class CachedVideos:
    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> CachedClip:
        tensors, (caption,) = _read(self.files[index])
        video = (tensors["video_mean"], tensors["video_logvar"])
        frames = (tensors["frames_mean"], tensors["frames_logvar"]) if "frames_mean" in tensors else None
        return CachedClip(video, frames, tensors["prompt"], caption)


def cached_identity_batch(items: list[CachedPair], scaling: float, generator, device) -> Batch:
    """The identity micro-batch from cached encodings; the same shapes as `tasks.identity_batch`."""
    references = torch.stack([sample(item.reference, generator) for item in items]).permute(0, 2, 1, 3, 4)
    targets = torch.stack([sample(item.target, generator) for item in items]).permute(0, 2, 1, 3, 4)
    embeds = torch.stack([item.prompt_embeds for item in items])
    keep = torch.ones(len(items), dtype=torch.bool)
    prompts = [item.prompt for item in items]
    return Batch(
        IDENTITY,
        (targets * scaling).to(device),
        (references * scaling).to(device),
        keep,
        embeds.to(device),
        prompts,
        [None] * len(items),
    )


def cached_motion_batch(items: list[CachedClip], config, rng: np.random.Generator, generator, scaling, device) -> Batch:
    """The motion micro-batch from cached encodings; the same draws as `tasks.motion_batch`.

    A cache prepared without reference frames (q = 1) gives zero references, all dropped.
    """
    without_frames = any(item.frames is None for item in items)
    indices = [
        None if without_frames else reference_frame(item.frames[0].shape[0], config.reference_frame, rng)
        for item in items
    ]
    keep = keep_mask(len(items), config, rng)
    latents = torch.stack([sample(item.video, generator) for item in items]).permute(0, 2, 1, 3, 4)
    if without_frames:
        references = torch.zeros_like(latents[:, :1])
    else:
        pairs = zip(items, indices, strict=True)
        references = torch.stack([sample((item.frames[0][i], item.frames[1][i]), generator) for item, i in pairs])
        references = references.permute(0, 2, 1, 3, 4)
    embeds = torch.stack([item.prompt_embeds for item in items])
    prompts = [item.prompt for item in items]
    return Batch(
        MOTION,
        (latents * scaling).to(device),
        (references * scaling).to(device),
        keep,
        embeds.to(device),
        prompts,
        indices,
    )


def sample(posterior: Posterior, generator: torch.Generator) -> torch.Tensor:
    """A draw from the VAE's diagonal Gaussian, with its log-variance clamp."""
    mean, logvar = (tensor.float() for tensor in posterior)
    noise = torch.randn(mean.shape, generator=generator)
    return mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise


def _encode_all(count: int, folder: Path, read, encode, skipped: list[str]) -> int:
    """Write one file per item (atomically); returns how many were written.

    `read(index)` (decoding files) runs a few items ahead on a worker thread, overlapping `encode`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for future in tqdm(_read_ahead(read, count), total=count, desc=f"prepare {folder.name}"):
        try:
            tensors, captions = encode(future.result())
        except UnreadableSample as error:
            skipped.append(str(error))
            continue
        temporary = folder / f".{written:07d}.tmp"
        save_file(
            {k: v.contiguous().cpu() for k, v in tensors.items()},
            str(temporary),
            metadata={"captions": json.dumps(captions)},
        )
        temporary.rename(folder / f"{written:07d}.safetensors")
        written += 1
    return written


def _read_ahead(read, count: int, ahead: int = 4) -> Iterator[Future]:
    """Futures of read(0), ..., read(count - 1), in order, with at most `ahead` in flight."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = deque(pool.submit(read, index) for index in range(min(ahead, count)))
        for index in range(count):
            if index + ahead < count:
                pending.append(pool.submit(read, index + ahead))
            yield pending.popleft()


def _needs_frames(config: TrainConfig) -> bool:
    """Whether any step can keep a motion clip's reference, so every frame's encoding must be cached."""
    return drop_probability(config.tasks) < 1


def _pair_tensors(pipe, forward, backward) -> tuple[dict[str, torch.Tensor], list[str]]:
    first = pipe.reference_distribution(forward.reference)
    second = pipe.reference_distribution(forward.target)
    prompts = [with_reference_token(backward.caption), with_reference_token(forward.caption)]
    embeds = encode_text(pipe, prompts)
    tensors = {
        "first_mean": first.mean[0],
        "first_logvar": first.logvar[0],
        "second_mean": second.mean[0],
        "second_logvar": second.logvar[0],
        "prompt_for_first": embeds[0],
        "prompt_for_second": embeds[1],
    }
    return tensors, prompts


def _clip_tensors(pipe, clip, with_frames: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    video = video_distribution(pipe, clip.frames)
    prompt = strip_reference_token(clip.caption)
    tensors = {"video_mean": video.mean[0], "video_logvar": video.logvar[0], "prompt": encode_text(pipe, [prompt])[0]}
    if with_frames:
        tensors["frames_mean"], tensors["frames_logvar"] = frame_distributions(pipe, clip.frames)
    return tensors, [prompt]


def frame_distributions(pipe, frames: np.ndarray, chunk: int = 8) -> Posterior:
    """Every frame of a uint8 [T, H, W, 3] clip as its own one-frame clip: mean and log-variance [T, C, 1, h, w].

    Frames go through the VAE `chunk` at a time, as a batch: the same posteriors as one by one, far faster.
    """
    means, logvars = [], []
    for start in range(0, len(frames), chunk):
        pixels = torch.from_numpy(np.array(frames[start : start + chunk])).permute(0, 3, 1, 2).unsqueeze(2)
        pixels = pixels.to(pipe._execution_device, pipe.vae.dtype) / 127.5 - 1.0
        posterior = pipe.vae.encode(pixels).latent_dist
        means.append(posterior.mean)
        logvars.append(posterior.logvar)
    return torch.cat(means), torch.cat(logvars)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            captions = json.loads(handle.metadata()["captions"])
        return load_file(str(path)), captions
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise UnreadableSample(f"{path.name}: unreadable cache file ({error})") from None


def _fingerprint(config: TrainConfig) -> dict:
    """What the encodings depend on: the data, its geometry, and the frozen model's VAE and text encoder.

    Local paths are resolved through links and kept relative to the cache, so models that link the same
    frozen parts (the base grid's candidates differ only in their transformer) share one cache, and a folder
    holding both the data and the cache can move.
    """
    data, model = config.data, config.model
    root = Path(data.cache).resolve()
    sources = [data.pairs, data.videos, data.video_captions] if not data.synthetic else ["synthetic", config.run.seed]
    return {
        "sources": [_relative(source, root) for source in sources],
        "size": [data.height, data.width, data.num_frames, data.fps],
        "model": _frozen_parts(model.model or model.preset, root),
        "reference_frames": _needs_frames(config),
    }


def _frozen_parts(model: str, root: Path) -> str | dict[str, str]:
    """A local model folder's encoding parts, as the folders they really are; a hub id or preset as named."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    return {part: _relative(str(folder / part), root) for part in ("vae", "text_encoder", "tokenizer")}


def _relative(source, root: Path) -> str:
    if not isinstance(source, str) or not Path(source).exists():
        return str(source)
    return os.path.relpath(Path(source).resolve(), root)
