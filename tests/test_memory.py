"""Memory modes beside CPU offload and bitsandbytes: diffusers' group offload, fp8 layerwise casting and torchao's
int8 weight-only; each refused before loading where it cannot run, and the default left bit for bit as it was."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch
from PIL import Image

import s2v.loading
from s2v import LoadSettings, load_pipeline
from s2v.__main__ import main
from s2v.errors import S2VError
from s2v.loading import check_memory_settings, load_base_pipeline, load_lora, torchao_problem
from s2v.presets import PRESETS

SMALL = dict(height=32, width=48, num_frames=9, num_inference_steps=2, output_type="np")
NANO = dict(num_inference_steps=4, output_type="np")
GPU = torch.device("cuda")
needs_torchao = pytest.mark.skipif(torchao_problem() is not None, reason="torchao is not installed")


@pytest.fixture
def nothing_loads(monkeypatch):
    """A refusal must come before any weight is read."""

    def load(*args, **kwargs):
        raise AssertionError("weights were loaded before the refusal")

    monkeypatch.setattr(s2v.loading, "load_base_pipeline", load)


def generate(pipe, subject: np.ndarray, **options) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(subject, "it moves left on grass", seed=0, **options).frames


def layer(transformer, name: str = "transformer_blocks.0.attn1.to_q"):
    """The Linear under a name, whether or not a LoRA wraps it."""
    module = transformer.get_submodule(name)
    return getattr(module, "base_layer", module)


@pytest.mark.parametrize("offload", ["group", "model", "sequential"])
def test_every_offload_mode_is_refused_without_a_gpu_before_loading(nothing_loads, offload):
    with pytest.raises(S2VError, match=f"--offload {offload} moves weights between the CPU and a GPU.*no GPU here"):
        load_pipeline(LoadSettings(preset="tiny", offload=offload, device="cpu"))


def test_the_command_line_offers_group_offload_and_refuses_it_here_in_one_line(tmp_path, subject_array, capsys):
    Image.fromarray(subject_array).save(tmp_path / "cat.png")
    argv = ["generate", "--preset", "tiny", "--subject", str(tmp_path / "cat.png"), "--prompt", "a cat"]
    assert main([*argv, "--offload", "group", "--out", str(tmp_path / "cat.mp4")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no GPU here" in errors[0]


@pytest.mark.parametrize(
    ("quantize", "offload", "reason"),
    [
        ("int8", "group", "keep their own reference to the weights"),
        ("int8", "sequential", "cannot move bitsandbytes-quantized weights"),
        ("nf4", "sequential", "cannot move bitsandbytes-quantized weights"),
    ],
)
def test_pairs_diffusers_cannot_run_are_refused_naming_both_flags_and_why(quantize, offload, reason):
    settings = LoadSettings(preset="cogvideox-5b", quantize=quantize, offload=offload)
    with pytest.raises(S2VError) as refused:
        check_memory_settings(settings, PRESETS["cogvideox-5b"], GPU)
    assert f"--quantize {quantize}" in str(refused.value) and f"--offload {offload}" in str(refused.value)
    assert reason in str(refused.value)


@pytest.mark.parametrize("offload", ["none", "model", "sequential", "group"])
@pytest.mark.parametrize("quantize", ["fp8-layerwise", pytest.param("int8-torchao", marks=needs_torchao)])
def test_fp8_and_torchao_pass_the_checks_with_every_offload_mode_on_a_gpu(quantize, offload):
    settings = LoadSettings(preset="cogvideox-5b", quantize=quantize, offload=offload)
    check_memory_settings(settings, PRESETS["cogvideox-5b"], GPU)


@pytest.mark.parametrize("quantize", ["int8", "nf4", "int8-torchao"])
def test_modes_that_quantize_while_loading_are_refused_on_the_in_process_preset(monkeypatch, quantize):
    monkeypatch.setattr(s2v.loading, "torchao_problem", lambda: None)
    with pytest.raises(S2VError, match=f"--quantize {quantize} quantizes while loading.*fp8-layerwise works"):
        check_memory_settings(LoadSettings(preset="tiny", quantize=quantize), PRESETS["tiny"], GPU)


def test_torchao_missing_is_refused_before_loading_with_the_install_command(nothing_loads, monkeypatch):
    def version(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(s2v.loading.importlib.metadata, "version", version)
    with pytest.raises(S2VError, match=r'it is not installed: pip install "s2v\[torchao\]"'):
        load_pipeline(LoadSettings(preset="nano", quantize="int8-torchao"))


def test_fp8_layerwise_stores_transformer_weights_in_float8_and_computes_in_fp32_on_a_cpu(subject_array):
    plain = generate(load_pipeline(LoadSettings(preset="tiny")), subject_array, **SMALL)
    pipe = load_pipeline(LoadSettings(preset="tiny", quantize="fp8-layerwise"))
    transformer = pipe.transformer
    assert layer(transformer).weight.dtype == torch.float8_e4m3fn
    assert transformer.norm_final.weight.dtype == transformer.patch_embed.proj.weight.dtype == torch.float32
    assert transformer.dtype == torch.float32
    frames = generate(pipe, subject_array, **SMALL)
    assert np.isfinite(frames).all() and 0 < np.abs(frames - plain).max() < 0.1


def test_fp8_layerwise_on_nano_keeps_the_lora_in_full_precision_and_makes_a_video(subject_array):
    pipe = load_pipeline(LoadSettings(preset="nano", quantize="fp8-layerwise"))
    to_q = pipe.transformer.get_submodule("transformer_blocks.0.attn1.to_q")
    assert to_q.base_layer.weight.dtype == torch.float8_e4m3fn
    assert to_q.lora_A[s2v.loading.ADAPTER_NAME].weight.dtype == torch.float32
    frames = generate(pipe, subject_array, **NANO)
    assert frames.shape == (9, 48, 48, 3) and np.isfinite(frames).all()


@needs_torchao
def test_int8_torchao_quantizes_the_nano_transformer_under_its_lora_and_makes_a_video_on_a_cpu(subject_array):
    from torchao.utils import TorchAOBaseTensor

    pipe = load_pipeline(LoadSettings(preset="nano", quantize="int8-torchao"))
    weight = layer(pipe.transformer).weight
    assert isinstance(weight, TorchAOBaseTensor) and weight.qdata.dtype == torch.int8
    assert pipe.lora_info.keys > 0 and not isinstance(pipe.text_encoder.shared.weight, TorchAOBaseTensor)
    frames = generate(pipe, subject_array, **NANO)
    assert frames.shape == (9, 48, 48, 3) and np.isfinite(frames).all()


@pytest.mark.parametrize("preset", ["tiny", "nano"])
def test_without_a_memory_mode_the_video_is_bit_identical_to_an_untouched_pipeline(subject_array, preset):
    untouched = load_base_pipeline(preset)
    if PRESETS[preset].lora:
        load_lora(untouched, PRESETS[preset].lora)
    options = SMALL if preset == "tiny" else NANO
    expected = generate(untouched, subject_array, **options)
    assert np.array_equal(generate(load_pipeline(LoadSettings(preset=preset)), subject_array, **options), expected)
