"""Reference tokens on the stock CogVideoX transformer (METHOD §2).

The three-stream block of the paper — text, reference and video streams, the reference
sharing the video's AdaLN modulation, gates, patch projection and feed-forward — computes
exactly what the stock `CogVideoXTransformer3DModel` computes when the clean reference
latent is prepended to the video latents as an extra first frame, RoPE is built for T+1
frames (reference at frame 0, video at 1..T) and frame 0 of the output is dropped.
So there is no custom module here: the transformer stays stock, and offloading,
quantization, LoRA loading, compile and cache hooks keep working on it.

This module knows nothing of images, prompts or files: only latents and embeddings.
"""

from __future__ import annotations

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

from .errors import S2VError

REFERENCE_FRAME = 0
"""The temporal RoPE index of the reference; the video starts right after it."""


def check_supported(transformer: CogVideoXTransformer3DModel) -> None:
    """Reject transformer variants whose token layout the reference frame does not fit."""
    config = transformer.config
    if config.patch_size_t is not None:
        raise S2VError(
            "This transformer patches time (CogVideoX 1.5, patch_size_t="
            f"{config.patch_size_t}); s2v's reference frame is defined for CogVideoX 1.0 "
            "models such as THUDM/CogVideoX-5b."
        )
    if not config.use_rotary_positional_embeddings or config.use_learned_positional_embeddings:
        raise S2VError(
            "This transformer uses absolute positional embeddings; the reference frame needs "
            "a RoPE-only CogVideoX such as THUDM/CogVideoX-5b."
        )


def rotary_embedding(
    config,
    latent_height: int,
    latent_width: int,
    num_frames: int,
    first_frame: int = 0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """3D RoPE (cos, sin) for latent frames `first_frame .. first_frame + num_frames - 1`.

    Built the way CogVideoX 1.0 builds it (positions relative to the model's base grid),
    for the actual latent grid, so any resolution the model accepts works — the reference
    shares the video's spatial grid rather than a hard-coded 720x480 one. `config` is the
    transformer's config.
    """
    p = config.patch_size
    grid = (latent_height // p, latent_width // p)
    crops = get_resize_crop_region_for_grid(grid, config.sample_width // p, config.sample_height // p)
    cos, sin = get_3d_rotary_pos_embed(
        embed_dim=config.attention_head_dim,
        crops_coords=crops,
        grid_size=grid,
        temporal_size=first_frame + num_frames,
        device=device,
    )
    skip = first_frame * grid[0] * grid[1]
    return cos[skip:], sin[skip:]


def predict(
    transformer: CogVideoXTransformer3DModel,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    reference_latents: torch.Tensor | None,
    frame_offset: int = 1,
    attention_kwargs: dict | None = None,
    config=None,
) -> torch.Tensor:
    """The transformer's prediction for the video latents `[B, T, C, h, w]`.

    `reference_latents` (`[B, 1, C, h, w]`, clean and scaled) enter as latent frame 0 with
    the video at RoPE frames 1..T; the output keeps only the video's T frames. Without a
    reference, the video sits at RoPE frames `frame_offset .. frame_offset + T - 1`:
    0 is plain CogVideoX text-to-video, 1 is training's dropped-reference case, where the
    video keeps the positions it has when the reference is present. Pass `config` when
    `transformer` is wrapped (e.g. by DistributedDataParallel) and has none of its own.
    """
    num_frames, height, width = latents.shape[1], latents.shape[3], latents.shape[4]
    if reference_latents is not None:
        if frame_offset != REFERENCE_FRAME + 1:
            raise ValueError(f"with a reference the video starts at frame 1, not {frame_offset}")
        if reference_latents.shape[1] != 1 or reference_latents.shape[2:] != latents.shape[2:]:
            raise ValueError(
                f"reference latents {tuple(reference_latents.shape)} must be one frame on the "
                f"video's grid {tuple(latents.shape[2:])}"
            )
        latents = torch.cat([reference_latents.to(latents.dtype), latents], dim=1)
        first_frame = REFERENCE_FRAME
    else:
        first_frame = frame_offset
    config = transformer.config if config is None else config
    rope = rotary_embedding(config, height, width, latents.shape[1], first_frame, latents.device)
    output = transformer(
        hidden_states=latents,
        encoder_hidden_states=encoder_hidden_states,
        timestep=timestep,
        image_rotary_emb=rope,
        attention_kwargs=attention_kwargs,
        return_dict=False,
    )[0]
    return output[:, -num_frames:]
