"""The nano base model: the stand-in for pretrained CogVideoX, in CogVideoX's own classes and folder layout.

A word-level T5 tokenizer over the world's vocabulary (built offline, one piece per word), a
small frozen random T5, the trained nano VAE, and a small CogVideoXTransformer3DModel that
`s2v-train` trains from scratch as text-to-video. Written as a diffusers folder, the
whole thing loads through `--model`, exactly as THUDM/CogVideoX-5b does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from s2v.pipeline import S2VPipeline
from s2v.tiny import EMBEDDING_PADDING_ROWS, SCHEDULER_CONFIG
from s2v.video import atomic_folder

from .vae import FRAME_SIZE
from .world import ACCENTS, COLOURS, MOTION_PHRASES, PATTERNS, SCENE_PHRASES, SHAPES, UNNAMED

VOCABULARY = sorted(
    {*SHAPES, *COLOURS, *PATTERNS, *ACCENTS, UNNAMED, "a", "an", "with", "on", "white", "background"}
    | {word for phrase in (*MOTION_PHRASES.values(), *SCENE_PHRASES.values()) for word in phrase.split()}
)
"""Every word a world caption or prompt uses; any other word reads as <unk>."""

TEXT_LENGTH = 16
"""Tokens per prompt: the longest caption (14 words), `<cls>` and `</s>`."""

T5_CONFIG = dict(
    d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2, relative_attention_num_buckets=8, dropout_rate=0.0
)

TRANSFORMER_CONFIG = dict(
    num_attention_heads=4,
    attention_head_dim=32,
    in_channels=16,
    out_channels=16,
    time_embed_dim=128,
    text_embed_dim=T5_CONFIG["d_model"],
    num_layers=6,
    sample_width=12,
    sample_height=12,
    sample_frames=9,
    patch_size=2,
    max_text_seq_length=TEXT_LENGTH,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
)
"""48x48 frames are 12x12 latents: 36 tokens a latent frame, 180 for a 9-frame clip (5 latent frames)."""


def nano_tokenizer() -> T5Tokenizer:
    """One piece per vocabulary word, so a 14-word caption is 14 tokens; built offline."""
    pieces = ["<pad>", "</s>", "<unk>"] + ["▁" + word for word in VOCABULARY]
    return T5Tokenizer(vocab=[(piece, -float(rank)) for rank, piece in enumerate(pieces)], extra_ids=0)


def transformer_config(vae: AutoencoderKLCogVideoX, **overrides) -> dict:
    """`TRANSFORMER_CONFIG` on the VAE's latent grid (48 px over its spatial factor), with `overrides`
    (patch size, width, depth) on top: the levers the base grid compares."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    side = FRAME_SIZE // factor
    return {**TRANSFORMER_CONFIG, "sample_width": side, "sample_height": side, **overrides}


def untrained_base(vae: AutoencoderKLCogVideoX, seed: int = 0, transformer: dict | None = None) -> S2VPipeline:
    """The trained VAE with a seeded random T5 (kept frozen forever) and a random transformer to train."""
    tokenizer = nano_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        config = T5Config(vocab_size=len(tokenizer) + EMBEDDING_PADDING_ROWS, **T5_CONFIG)
        text_encoder = T5EncoderModel(config).eval()
        transformer = CogVideoXTransformer3DModel(**transformer_config(vae, **(transformer or {})))
    return S2VPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae.eval(),
        transformer=transformer.eval(),
        scheduler=CogVideoXDPMScheduler(**SCHEDULER_CONFIG),
    )


def write_untrained_base(
    vae_folder: str | Path, output: str | Path, seed: int = 0, transformer: dict | None = None
) -> Path:
    """The folder `s2v-train` starts the base text-to-video training from."""
    vae = AutoencoderKLCogVideoX.from_pretrained(vae_folder)
    with atomic_folder(Path(output)) as staging:
        untrained_base(vae, seed, transformer).save_pretrained(staging)
    return Path(output)
