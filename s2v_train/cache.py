"""The frozen encoders, run once: `s2v-train prepare --config ...`.

T5 and the VAE never train, so their outputs can be computed ahead and reused every
epoch. What the random choices of a step may need is all cached: both halves of each
pair (either can be the reference) with both directions' `<cls>` prompts, and for each
clip the whole video plus every frame on its own (any frame can be the reference).
Latents are stored as the VAE's distribution (mean, log-variance) and read back as the
same posteriors a fresh encoding gives, so `tasks`' one batch builder samples both alike.

Layout: `<cache>/index.json`, `<cache>/pairs/0000000.safetensors`,
`<cache>/videos/0000000.safetensors`.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from s2v.errors import S2VError
from s2v.loading import load_base_pipeline, resolve_device
from s2v.text import strip_reference_token, with_reference_token

from .config import TrainConfig, subject_references
from .data import UnreadableSample, open_datasets
from .tasks import (
    EncodedClip,
    EncodedPair,
    clip_pixels,
    encode_text,
    needs_reference_frames,
    video_distribution,
)

FORMAT = 1
INDEX = "index.json"


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
    frames = needs_reference_frames(config.tasks)
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
    videos = None
    if config.uses_videos:
        videos = CachedVideos(sorted((cache / "videos").glob("*.safetensors")), subject_references(config.tasks))
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

    def __getitem__(self, index: int) -> EncodedPair:
        pair, direction = divmod(index, 2)
        tensors, captions = _read(self.files[pair])
        first = posterior(tensors["first_mean"], tensors["first_logvar"])
        second = posterior(tensors["second_mean"], tensors["second_logvar"])
        if direction == 0:
            return EncodedPair(first, second, tensors["prompt_for_second"], captions[1])
        return EncodedPair(second, first, tensors["prompt_for_first"], captions[0])


class CachedVideos:
    """Prepared clips, like `VideoDataset`, each with its frames' encodings when the run can keep references
    (or its subject image's, with `subject`)."""

    def __init__(self, files: list[Path], subject: bool = False):
        self.files, self.subject = files, subject
        if subject and files and "subject_mean" not in _read(files[0])[0]:
            raise S2VError(
                f"{files[0].parent} was prepared without the clips' subject images that "
                "tasks.reference_frame=subject trains on; list them as 'reference' in the captions and prepare again."
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> EncodedClip:
        tensors, (caption,) = _read(self.files[index])
        video = posterior(tensors["video_mean"], tensors["video_logvar"])
        kind = "subject" if self.subject else "frames"
        frames = (
            _CachedFrames(tensors[f"{kind}_mean"], tensors[f"{kind}_logvar"]) if f"{kind}_mean" in tensors else None
        )
        return EncodedClip(video, frames, tensors["prompt"], caption)


class _CachedFrames:
    def __init__(self, means: torch.Tensor, logvars: torch.Tensor):
        self.means, self.logvars = means, logvars

    def __len__(self) -> int:
        return len(self.means)

    def __getitem__(self, index: int) -> DiagonalGaussianDistribution:
        return posterior(self.means[index], self.logvars[index])


def posterior(mean: torch.Tensor, logvar: torch.Tensor) -> DiagonalGaussianDistribution:
    """A stored `[C, T, h, w]` mean and log-variance as the VAE's posterior of one clip, batch 1."""
    return DiagonalGaussianDistribution(torch.cat([mean, logvar]).unsqueeze(0))


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
        if clip.subject is not None:
            subject = pipe.reference_distribution(clip.subject)
            tensors["subject_mean"], tensors["subject_logvar"] = subject.mean, subject.logvar  # [1, C, 1, h, w]
    return tensors, [prompt]


def frame_distributions(pipe, frames: np.ndarray, chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Every frame of a uint8 [T, H, W, 3] clip as its own one-frame clip: mean and log-variance [T, C, 1, h, w].

    Frames go through the VAE `chunk` at a time, as a batch: the same posteriors as one by one, far faster.
    """
    means, logvars = [], []
    for start in range(0, len(frames), chunk):
        pixels = clip_pixels(pipe, frames[start : start + chunk]).permute(2, 1, 0, 3, 4)  # each frame a clip
        encoded = pipe.vae.encode(pixels).latent_dist
        means.append(encoded.mean)
        logvars.append(encoded.logvar)
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
        "reference_frames": needs_reference_frames(config.tasks),
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
