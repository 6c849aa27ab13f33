"""The reference-token formulation (s2v.model) against METHOD §2 written out by hand."""

from __future__ import annotations

import pytest
import torch
from conftest import random_inputs
from diffusers import CogVideoXTransformer3DModel
from peft import LoraConfig
from three_stream import three_stream_forward

from s2v.loading import LORA_TARGET_MODULES
from s2v.model import predict, rotary_embedding
from s2v.tiny import TRANSFORMER_CONFIG, tiny_components

ATOL = 1e-5


@pytest.fixture
def transformer() -> CogVideoXTransformer3DModel:
    return tiny_components(seed=0)["transformer"]


def add_random_lora(transformer: CogVideoXTransformer3DModel, rank: int = 4, alpha: int = 2) -> None:
    """A LoRA on METHOD §4's targets with A and B both random and non-zero."""
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(LORA_TARGET_MODULES)))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in transformer.named_parameters():
            if "lora_" in name:
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))


@torch.no_grad()
def test_stock_transformer_on_prepended_reference_equals_three_stream_block(transformer):
    latents, reference, text, timestep = random_inputs(transformer)
    ours = predict(transformer, latents, timestep, text, reference)
    explicit = three_stream_forward(transformer, latents, timestep, text, reference)
    assert ours.shape == latents.shape
    torch.testing.assert_close(ours, explicit, atol=ATOL, rtol=1e-4)


@torch.no_grad()
def test_equivalence_holds_with_a_lora_on_every_stream(transformer):
    latents, reference, text, timestep = random_inputs(transformer)
    before = predict(transformer, latents, timestep, text, reference)
    add_random_lora(transformer)
    ours = predict(transformer, latents, timestep, text, reference)
    explicit = three_stream_forward(transformer, latents, timestep, text, reference)
    assert (ours - before).abs().max() > 1e-2, "the LoRA must change the output for this test to mean anything"
    torch.testing.assert_close(ours, explicit, atol=ATOL, rtol=1e-4)


@torch.no_grad()
def test_reference_at_rope_frame_one_is_a_different_model(transformer):
    latents, reference, text, timestep = random_inputs(transformer)
    ours = predict(transformer, latents, timestep, text, reference)
    mutant = three_stream_forward(transformer, latents, timestep, text, reference, reference_rope_frame=1)
    assert not torch.allclose(ours, mutant, atol=1e-3)


@torch.no_grad()
def test_without_reference_and_offset_zero_output_equals_stock_cogvideox(transformer):
    latents, _, text, timestep = random_inputs(transformer)
    stock = transformer(
        hidden_states=latents,
        encoder_hidden_states=text,
        timestep=timestep,
        image_rotary_emb=rotary_embedding(transformer.config, 4, 6, latents.shape[1]),
        return_dict=False,
    )[0]
    ours = predict(transformer, latents, timestep, text, None, frame_offset=0)
    assert torch.equal(ours, stock)


@torch.no_grad()
def test_rope_built_like_the_stock_pipeline(tiny_pipe):
    """Our RoPE for T frames from 0 is what CogVideoXPipeline builds for the same video."""
    cos, sin = rotary_embedding(tiny_pipe.transformer.config, 4, 6, 3)
    stock_cos, stock_sin = tiny_pipe._prepare_rotary_positional_embeddings(32, 48, 3, torch.device("cpu"))
    assert torch.equal(cos, stock_cos) and torch.equal(sin, stock_sin)


@torch.no_grad()
def test_dropped_reference_offset_is_explicit_and_shifts_the_video_positions(transformer):
    latents, _, text, timestep = random_inputs(transformer)
    offset_zero = predict(transformer, latents, timestep, text, None, frame_offset=0)
    offset_one = predict(transformer, latents, timestep, text, None, frame_offset=1)
    assert not torch.allclose(offset_zero, offset_one, atol=1e-4)
    with pytest.raises(ValueError, match="frame 1"):
        predict(transformer, latents, timestep, text, torch.zeros_like(latents[:, :1]), frame_offset=0)


class RecordingProcessor:
    """Wraps an attention processor and keeps the RoPE tensors and sequence it was given."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, attn, hidden_states, encoder_hidden_states, image_rotary_emb=None, **kwargs):
        self.calls.append((hidden_states.shape[1], image_rotary_emb))
        return self.inner(attn, hidden_states, encoder_hidden_states, image_rotary_emb=image_rotary_emb, **kwargs)


@torch.no_grad()
def test_attention_sees_reference_at_frame_zero_and_video_at_frames_one_to_t(transformer):
    latents, reference, text, timestep = random_inputs(transformer, frames=3)
    recorder = RecordingProcessor(transformer.transformer_blocks[0].attn1.processor)
    transformer.transformer_blocks[0].attn1.set_processor(recorder)
    predict(transformer, latents, timestep, text, reference)

    patch = TRANSFORMER_CONFIG["patch_size"]
    tokens_per_frame = (4 // patch) * (6 // patch)
    ((sequence, (cos, sin)),) = recorder.calls
    assert sequence == 4 * tokens_per_frame  # reference + 3 video frames, text kept apart
    frame_rope = [rotary_embedding(transformer.config, 4, 6, 1, first_frame=frame) for frame in range(4)]
    for frame, (expected_cos, expected_sin) in enumerate(frame_rope):
        tokens = slice(frame * tokens_per_frame, (frame + 1) * tokens_per_frame)
        assert torch.equal(cos[tokens], expected_cos) and torch.equal(sin[tokens], expected_sin)
    assert not torch.equal(frame_rope[0][0], frame_rope[1][0]), "frames 0 and 1 must differ in time"


@torch.no_grad()
def test_reference_changes_the_prediction(transformer):
    latents, reference, text, timestep = random_inputs(transformer)
    with_reference = predict(transformer, latents, timestep, text, reference)
    other_reference = predict(transformer, latents, timestep, text, reference.flip(-1))
    assert (with_reference - other_reference).abs().max() > 1e-3
