"""A tiny random-weight CogVideoX, built in-process: the wiring check and the test model; and the
5B's transformer config, for building it with random weights (bench/ and the tests' parameter counts).

Same classes as CogVideoX-5B (transformer, VAE, T5, DPM scheduler), shrunk to run in a
fraction of a second on a CPU. Its videos are noise. The T5 keeps the real model's quirk
that its embedding matrix has more rows than the tokenizer has entries, so `<cls>`
lands on an existing padding row exactly as in METHOD §3.
"""

from __future__ import annotations

import string

import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel
from transformers import T5Config, T5EncoderModel, T5Tokenizer

EMBEDDING_PADDING_ROWS = 28
"""CogVideoX's T5 has 32128 embedding rows for 32100 tokenizer entries."""

SCHEDULER_CONFIG = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    set_alpha_to_one=True,
    snr_shift_scale=1.0,
    steps_offset=0,
    timestep_spacing="trailing",
    num_train_timesteps=1000,
)
"""CogVideoX-5B's scheduler settings (METHOD §5)."""

TRANSFORMER_CONFIG = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=4,
    time_embed_dim=32,
    text_embed_dim=32,
    num_layers=2,
    sample_width=12,
    sample_height=8,
    sample_frames=49,
    patch_size=2,
    max_text_seq_length=32,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
)

# The sample size sets the VAE's tile size: the 5B's, so tiling never cuts a tiny frame.
VAE_CONFIG = dict(
    down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4,
    block_out_channels=(8, 8, 8, 8),
    latent_channels=4,
    layers_per_block=1,
    norm_num_groups=2,
    temporal_compression_ratio=4,
    sample_height=480,
    sample_width=720,
    scaling_factor=0.7,
)


def tiny_tokenizer() -> T5Tokenizer:
    """An offline character-level T5 tokenizer: any prompt tokenizes, nothing is downloaded."""
    words = ["▁" + letter for letter in string.ascii_lowercase]
    characters = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,;:!?'\"-()")
    pieces = ["<pad>", "</s>", "<unk>", "▁"] + words + characters
    return T5Tokenizer(vocab=[(piece, -float(rank)) for rank, piece in enumerate(pieces)], extra_ids=0)


def tiny_components(seed: int = 0) -> dict:
    """Tokenizer, T5, VAE, transformer and scheduler with seeded random weights, in eval mode."""
    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer) + EMBEDDING_PADDING_ROWS,
                d_model=TRANSFORMER_CONFIG["text_embed_dim"],
                d_kv=16,
                d_ff=64,
                num_layers=2,
                num_heads=2,
                relative_attention_num_buckets=8,
                dropout_rate=0.0,
            )
        ).eval()
        vae = AutoencoderKLCogVideoX(**VAE_CONFIG).eval()
        _narrow_posterior(vae)
        transformer = CogVideoXTransformer3DModel(**TRANSFORMER_CONFIG).eval()
    return dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=CogVideoXDPMScheduler(**SCHEDULER_CONFIG),
    )


def _narrow_posterior(vae: AutoencoderKLCogVideoX, log_variance: float = -12.0) -> None:
    """Give the random VAE a trained VAE's narrow posterior.

    At random init the encoder's log-variance is near 0, so every latent sample would be
    mostly noise and nothing downstream (training above all) could learn from it.
    """
    conv = vae.encoder.conv_out.conv
    channels = vae.config.latent_channels
    with torch.no_grad():
        conv.weight[channels:] = 0.0
        conv.bias[channels:] = log_variance


COGVIDEOX_5B_TRANSFORMER = dict(
    num_attention_heads=48,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    time_embed_dim=512,
    text_embed_dim=4096,
    num_layers=42,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    max_text_seq_length=226,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=False,
    activation_fn="gelu-approximate",
    flip_sin_to_cos=True,
    freq_shift=0,
    norm_eps=1e-5,
    timestep_activation_fn="silu",
    spatial_interpolation_scale=1.875,
    temporal_interpolation_scale=1.0,
    attention_bias=True,
)
"""THUDM/CogVideoX-5b's transformer config, for meta-device checks and FLOP counts."""
"""THUDM/CogVideoX-5b's transformer/config.json, for random-weight builds of its exact shapes."""
