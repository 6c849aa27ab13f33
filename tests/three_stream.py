"""METHOD §2 written out by hand: the paper's three-stream MM-DiT, from raw weights.

Independent of `s2v.model`: text, reference and video are separate streams, each with
its own residual and gates; the reference uses the video's modulation; attention runs
over `[text | reference | video]`; the feed-forward is shared; only the video reaches the
output head. LoRA deltas are folded into the weights by hand (W + alpha/r * B @ A).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_3d_rotary_pos_embed, get_timestep_embedding
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid


def weight(module: torch.nn.Module) -> torch.Tensor:
    """The effective weight of a plain or peft-wrapped Linear / Conv2d."""
    if not hasattr(module, "base_layer"):
        return module.weight
    base = module.base_layer.weight
    delta = torch.zeros_like(base)
    for name in module.active_adapters:
        a, b = module.lora_A[name].weight, module.lora_B[name].weight
        product = b.flatten(1) @ a.flatten(1)
        delta = delta + module.scaling[name] * product.reshape(base.shape)
    return base + delta


def bias(module: torch.nn.Module) -> torch.Tensor | None:
    return module.base_layer.bias if hasattr(module, "base_layer") else module.bias


def linear(x: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    return F.linear(x, weight(module), bias(module))


def layer_norm(x: torch.Tensor, module: torch.nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + rotated * sin


def rope_by_frame(transformer, grid: tuple[int, int], frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [frames, tokens per frame, head dim]."""
    config = transformer.config
    p = config.patch_size
    crops = get_resize_crop_region_for_grid(grid, config.sample_width // p, config.sample_height // p)
    cos, sin = get_3d_rotary_pos_embed(config.attention_head_dim, crops, grid, frames)
    return cos.unflatten(0, (frames, -1)), sin.unflatten(0, (frames, -1))


def patchify(latents: torch.Tensor, transformer) -> torch.Tensor:
    """[B, F, C, H, W] -> [B, F * h * w, D] with the shared patch projection."""
    proj = transformer.patch_embed.proj
    b, f = latents.shape[:2]
    x = F.conv2d(latents.flatten(0, 1), weight(proj), bias(proj), stride=transformer.config.patch_size)
    return x.flatten(2).transpose(1, 2).reshape(b, -1, x.shape[1])


def attention(block, text, ref, video, rope_ref, rope_video) -> tuple[torch.Tensor, ...]:
    attn = block.attn1
    joint = torch.cat([text, ref, video], dim=1)
    heads = attn.heads

    def project(module, norm):
        x = linear(joint, module).unflatten(-1, (heads, -1)).transpose(1, 2)
        x = layer_norm(x, norm)
        t, r, v = x.split([text.shape[1], ref.shape[1], video.shape[1]], dim=2)
        return torch.cat([t, rope(r, *rope_ref), rope(v, *rope_video)], dim=2)

    q, k = project(attn.to_q, attn.norm_q), project(attn.to_k, attn.norm_k)
    v = linear(joint, attn.to_v).unflatten(-1, (heads, -1)).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    out = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
    out = linear(out, attn.to_out[0])
    return out.split([text.shape[1], ref.shape[1], video.shape[1]], dim=1)


def modulation(norm, temb: torch.Tensor) -> list[torch.Tensor]:
    return [c[:, None, :] for c in linear(F.silu(temb), norm.linear).chunk(6, dim=1)]


def block_forward(block, text, ref, video, temb, rope_ref, rope_video):
    """One three-stream block: each stream keeps its own residual; ref uses the video's chunks."""
    shift, scale, gate, t_shift, t_scale, t_gate = modulation(block.norm1, temb)
    n_text = layer_norm(text, block.norm1.norm) * (1 + t_scale) + t_shift
    n_ref = layer_norm(ref, block.norm1.norm) * (1 + scale) + shift
    n_video = layer_norm(video, block.norm1.norm) * (1 + scale) + shift
    a_text, a_ref, a_video = attention(block, n_text, n_ref, n_video, rope_ref, rope_video)
    text, ref, video = text + t_gate * a_text, ref + gate * a_ref, video + gate * a_video

    shift, scale, gate, t_shift, t_scale, t_gate = modulation(block.norm2, temb)
    n_text = layer_norm(text, block.norm2.norm) * (1 + t_scale) + t_shift
    n_ref = layer_norm(ref, block.norm2.norm) * (1 + scale) + shift
    n_video = layer_norm(video, block.norm2.norm) * (1 + scale) + shift
    hidden = linear(torch.cat([n_text, n_ref, n_video], dim=1), block.ff.net[0].proj)
    ff = linear(F.gelu(hidden, approximate="tanh"), block.ff.net[2])
    f_text, f_ref, f_video = ff.split([text.shape[1], ref.shape[1], video.shape[1]], dim=1)
    return text + t_gate * f_text, ref + gate * f_ref, video + gate * f_video


def three_stream_forward(
    transformer, latents, timestep, text_embeds, reference, reference_rope_frame: int = 0
) -> torch.Tensor:
    """The paper's forward; `reference_rope_frame` other than 0 builds a deliberately wrong model."""
    config = transformer.config
    b, frames, channels, height, width = latents.shape
    p = config.patch_size
    grid = (height // p, width // p)

    t_emb = get_timestep_embedding(
        timestep,
        config.attention_head_dim * config.num_attention_heads,
        flip_sin_to_cos=config.flip_sin_to_cos,
        downscale_freq_shift=config.freq_shift,
    )
    temb = linear(F.silu(linear(t_emb, transformer.time_embedding.linear_1)), transformer.time_embedding.linear_2)

    text = linear(text_embeds, transformer.patch_embed.text_proj)
    ref = patchify(reference, transformer)
    video = patchify(latents, transformer)

    cos, sin = rope_by_frame(transformer, grid, frames + 1)
    rope_ref = (cos[reference_rope_frame], sin[reference_rope_frame])
    rope_video = (cos[1:].flatten(0, 1), sin[1:].flatten(0, 1))

    for block in transformer.transformer_blocks:
        text, ref, video = block_forward(block, text, ref, video, temb, rope_ref, rope_video)

    video = layer_norm(video, transformer.norm_final)
    shift, scale = linear(F.silu(temb), transformer.norm_out.linear).chunk(2, dim=1)
    video = layer_norm(video, transformer.norm_out.norm) * (1 + scale[:, None]) + shift[:, None]
    video = linear(video, transformer.proj_out)
    out = video.reshape(b, frames, grid[0], grid[1], channels, p, p)
    return out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, frames, channels, height, width)
