"""LoRA files: the authors' release layout, our own saves, and files that do not fit (METHOD §4)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from accelerate import init_empty_weights
from conftest import random_inputs
from diffusers import CogVideoXTransformer3DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from s2v.errors import S2VError
from s2v.loading import (
    AUTHORS_LORA_FILE,
    LORA_TARGET_MODULES,
    OUR_LORA_FILE,
    authors_lora_modules,
    load_lora,
    save_lora,
)
from s2v.model import predict
from s2v.pipeline import S2VPipeline
from s2v.tiny import COGVIDEOX_5B_TRANSFORMER, tiny_components


def lora_state_dict(rank: int, alpha: int, seed: int = 1, targets=LORA_TARGET_MODULES) -> dict[str, torch.Tensor]:
    """A random, non-zero LoRA for the tiny transformer, keyed as diffusers saves it."""
    transformer = tiny_components(seed=0)["transformer"]
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets)))
    generator = torch.Generator().manual_seed(seed)
    state = get_peft_model_state_dict(transformer)
    return {f"transformer.{key}": 0.05 * torch.randn(value.shape, generator=generator) for key, value in state.items()}


def write_authors_file(folder, name: str = AUTHORS_LORA_FILE) -> tuple:
    """The release's file: their name, their keys, rank 128, and no adapter metadata."""
    state = lora_state_dict(rank=128, alpha=128)
    path = folder / name
    save_file(state, str(path), metadata={"format": "pt"})
    return path, state


def merged_by_hand(transformer, state: dict[str, torch.Tensor], scale: float):
    """A copy of the base transformer with W += scale * B @ A written into each weight."""
    merged = copy.deepcopy(transformer)
    modules = dict(merged.named_modules())
    with torch.no_grad():
        for key, a in state.items():
            if ".lora_A." not in key:
                continue
            name = key.removeprefix("transformer.").split(".lora_A.")[0]
            b = state[key.replace(".lora_A.", ".lora_B.")]
            weight = modules[name].weight
            weight += scale * (b.flatten(1) @ a.flatten(1)).reshape(weight.shape)
    return merged


@torch.no_grad()
def test_authors_file_loads_at_alpha_64_with_every_key_matched(tmp_path, tiny_pipe):
    path, state = write_authors_file(tmp_path)
    base = copy.deepcopy(tiny_pipe.transformer)
    info = load_lora(tiny_pipe, str(tmp_path))

    assert (info.rank, info.alpha, info.effective_scale) == (128, 64, 0.5)
    assert "authors" in info.alpha_from
    loaded = set(get_peft_model_state_dict(tiny_pipe.transformer, adapter_name="s2v"))
    assert loaded == {key.removeprefix("transformer.") for key in state}
    wrapped = {key.removeprefix("transformer.").split(".lora_")[0] for key in state}
    assert wrapped == authors_lora_modules(base)

    latents, reference, text, timestep = random_inputs(base)
    ours = predict(tiny_pipe.transformer, latents, timestep, text, reference)
    at_half = predict(merged_by_hand(base, state, 0.5), latents, timestep, text, reference)
    at_full = predict(merged_by_hand(base, state, 1.0), latents, timestep, text, reference)
    torch.testing.assert_close(ours, at_half, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ours, at_full, atol=1e-3)


def test_same_tensors_under_another_name_follow_diffusers_default(tmp_path, tiny_pipe):
    path, _ = write_authors_file(tmp_path, name="renamed.safetensors")
    info = load_lora(tiny_pipe, str(path))
    assert info.alpha == info.rank == 128 and info.effective_scale == 1.0


def test_explicit_alpha_overrides_the_authors_rule(tmp_path, tiny_pipe):
    write_authors_file(tmp_path)
    info = load_lora(tiny_pipe, str(tmp_path), alpha=32)
    assert info.alpha == 32 and info.effective_scale == 0.25
    layer = tiny_pipe.transformer.transformer_blocks[0].attn1.to_q
    assert layer.scaling["s2v"] == 0.25


def test_scale_multiplies_the_strength(tmp_path, tiny_pipe):
    write_authors_file(tmp_path)
    load_lora(tiny_pipe, str(tmp_path), scale=0.5)
    assert tiny_pipe.transformer.transformer_blocks[0].attn1.to_q.scaling["s2v"] == 0.25


def test_file_metadata_wins_over_the_authors_rule(tmp_path, tiny_pipe):
    state = lora_state_dict(rank=128, alpha=128)
    metadata = {
        "transformer.r": 128,
        "transformer.lora_alpha": 16,
        "transformer.target_modules": list(LORA_TARGET_MODULES),
    }
    save_file(state, str(tmp_path / AUTHORS_LORA_FILE), metadata={"lora_adapter_metadata": json.dumps(metadata)})
    info = load_lora(tiny_pipe, str(tmp_path))
    assert info.alpha == 16 and info.alpha_from == "file metadata"


@torch.no_grad()
def test_our_save_and_load_round_trip_is_bit_identical(tmp_path):
    source = S2VPipeline(**tiny_components(seed=0))
    source.transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=2, target_modules=list(LORA_TARGET_MODULES), init_lora_weights=False),
        adapter_name="s2v",
    )
    path = save_lora(source.transformer, tmp_path)
    assert path.name == OUR_LORA_FILE

    target = S2VPipeline(**tiny_components(seed=0))
    info = load_lora(target, str(tmp_path))
    assert (info.rank, info.alpha, info.alpha_from) == (4, 2, "file metadata")
    saved = get_peft_model_state_dict(source.transformer, adapter_name="s2v")
    loaded = get_peft_model_state_dict(target.transformer, adapter_name="s2v")
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)
    latents, reference, text, timestep = random_inputs(source.transformer)
    assert torch.equal(
        predict(source.transformer, latents, timestep, text, reference),
        predict(target.transformer, latents, timestep, text, reference),
    )


def test_a_lora_for_another_model_is_refused_and_leaves_no_adapter(tmp_path, tiny_pipe):
    state = lora_state_dict(rank=4, alpha=4)
    state["transformer.transformer_blocks.7.attn1.to_q.lora_A.weight"] = torch.zeros(4, 32)
    state["transformer.transformer_blocks.7.attn1.to_q.lora_B.weight"] = torch.zeros(32, 4)
    save_file(state, str(tmp_path / "other.safetensors"))
    with pytest.raises(S2VError, match="does not fit this model"):
        load_lora(tiny_pipe, str(tmp_path / "other.safetensors"))
    assert "s2v" not in getattr(tiny_pipe.transformer, "peft_config", {})


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("weights.bin", b"\x80\x02}q\x00.", "only .safetensors"),
        ("broken.safetensors", b"not a safetensors file", "not a readable safetensors"),
    ],
)
def test_unsafe_or_unreadable_files_are_refused(tmp_path, tiny_pipe, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(S2VError, match=message):
        load_lora(tiny_pipe, str(tmp_path / name))


def test_a_checkpoint_that_is_not_a_lora_is_refused(tmp_path, tiny_pipe):
    save_file({"transformer.proj_out.weight": torch.zeros(4, 4)}, str(tmp_path / "full.safetensors"))
    with pytest.raises(S2VError, match="not a LoRA"):
        load_lora(tiny_pipe, str(tmp_path / "full.safetensors"))


def test_missing_lora_paths_say_where_the_checkpoint_comes_from(tmp_path, tiny_pipe):
    with pytest.raises(S2VError, match="carpedkm/disentangled-subject-to-vid"):
        load_lora(tiny_pipe, str(tmp_path / "nowhere" / "lora.safetensors"))
    with pytest.raises(S2VError, match="No single LoRA file"):
        load_lora(tiny_pipe, str(tmp_path))


def test_unreachable_hub_lora_gives_one_clear_message(tiny_pipe):
    with pytest.raises(S2VError, match="not in the local cache.*Download the file and pass its local path"):
        load_lora(tiny_pipe, "someone/s2v-lora")


def test_5b_transformer_with_the_method_lora_has_about_502m_trainable_parameters():
    with init_empty_weights():
        transformer = CogVideoXTransformer3DModel(**COGVIDEOX_5B_TRANSFORMER)
        transformer.add_adapter(LoraConfig(r=128, lora_alpha=64, target_modules=list(LORA_TARGET_MODULES)))
    trainable = sum(p.numel() for p in transformer.parameters() if p.requires_grad)
    assert 500e6 < trainable < 504e6, trainable
    wrapped = {name for name, module in transformer.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == authors_lora_modules(transformer)
    assert len(wrapped) == 2 + 42 * 8  # patch_embed.proj, text_proj; 8 per block
