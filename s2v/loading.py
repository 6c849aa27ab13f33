"""Loading: presets, base models from the Hub or a folder, LoRA files, memory modes.

Everything a user can get wrong here (a missing model, a LoRA that does not fit, 8-bit
without a GPU) ends in one `S2VError` that says where s2v looked and what to do.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import CogVideoXDPMScheduler
from diffusers.utils.peft_utils import get_peft_kwargs
from packaging.version import Version
from peft.utils import get_peft_model_state_dict
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .caching import read_mag_ratios
from .errors import S2VError, first_line, missing_model_message
from .pipeline import S2VPipeline
from .presets import AUTHORS_CHECKPOINT_HINT, NANO_FOLDER, PRESETS, Preset
from .tiny import tiny_components

OFFLOAD_MODES = ("none", "model", "sequential", "group")
QUANTIZE_MODES = ("none", "int8", "nf4", "fp8-layerwise", "int8-torchao")
BITSANDBYTES_MODES = ("int8", "nf4")
LOAD_TIME_MODES = (*BITSANDBYTES_MODES, "int8-torchao")
"""Modes diffusers applies while reading the weights, so only to a model loaded from the Hub or a folder."""
TORCHAO_MINIMUM = "0.15"
"""The oldest torchao diffusers' `TorchAoConfig` accepts."""
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

ADAPTER_NAME = "s2v"
AUTHORS_LORA_FILE = "pytorch_lora_weights_transformer.safetensors"
OUR_LORA_FILE = "pytorch_lora_weights.safetensors"
AUTHORS_RANK = 128
AUTHORS_ALPHA = 64
LORA_TARGET_MODULES = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj",
    "text_proj",
    "norm1.linear",
    "norm2.linear",
    "ff.net.2",
)
"""METHOD §4; peft matches by suffix, so `proj` also wraps `patch_embed.proj` and `ff.net.0.proj`."""
METADATA_KEY = "lora_adapter_metadata"


@dataclass
class LoadSettings:
    """How to build a pipeline; the CLI's and the app's flags map onto these fields."""

    preset: str = "tiny"
    model: str | None = None
    """Hub id or local folder of the base model; overrides the preset's."""
    lora: str | None = None
    """LoRA file, folder or hub repo (safetensors only)."""
    lora_alpha: float | None = None
    """Overrides the alpha from the file's metadata or the authors' layout rule."""
    lora_scale: float = 1.0
    """Strength on top of alpha / rank (1.0 = as trained)."""
    dtype: str = "auto"
    device: str = "auto"
    offload: str = "none"
    quantize: str = "none"
    vae_tiling: bool = True
    vae_slicing: bool = True
    tiny_seed: int = 0
    mag_ratios: str | None = None
    """A file of MagCache ratios (`s2v calibrate-mag`) for `cache="mag"`; None: the model has none."""


@dataclass
class LoraInfo:
    """Which LoRA was loaded and at what strength (alpha / rank x scale)."""

    path: str
    rank: int
    alpha: float
    scale: float
    alpha_from: str
    keys: int = 0

    @property
    def effective_scale(self) -> float:
        return self.alpha / self.rank * self.scale


def effective_lora(settings: LoadSettings) -> str | None:
    """The LoRA a load uses: the one named, else the preset's own, unless another base model is named."""
    return settings.lora or (_preset(settings.preset).lora if settings.model is None else None)


def model_missing_its_lora(settings: LoadSettings) -> str | None:
    """The base model these settings would load without the method's LoRA, which it needs to follow the subject
    at all; None when they can generate. `load_pipeline` refuses by this rule, and the app, which then starts with
    generation off instead, asks it too: one rule, so the two cannot disagree."""
    preset = _preset(settings.preset)
    return (settings.model or preset.model) if preset.needs_lora and not settings.lora else None


def load_pipeline(settings: LoadSettings) -> S2VPipeline:
    """Build the pipeline a `LoadSettings` describes, ready to call."""
    preset = _preset(settings.preset)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    check_memory_settings(settings, preset, device)
    mag_ratios = None if settings.mag_ratios is None else read_mag_ratios(settings.mag_ratios)
    if (base := model_missing_its_lora(settings)) is not None:
        raise S2VError(f"Without the method's LoRA, {base} ignores the subject. {AUTHORS_CHECKPOINT_HINT}")

    pipe = load_base_pipeline(preset, settings.model, dtype, settings.quantize, settings.tiny_seed)
    lora = effective_lora(settings)
    if lora:
        pipe.lora_info = load_lora(pipe, lora, settings.lora_alpha, settings.lora_scale)
    if settings.quantize == "fp8-layerwise":
        # After the LoRA, so diffusers' default skips its layers too; before offloading, so weights travel as fp8.
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    if settings.vae_tiling:
        pipe.vae.enable_tiling()
    if settings.vae_slicing:
        pipe.vae.enable_slicing()
    _place_weights(pipe, settings.offload, device)
    pipe.mag_ratios = mag_ratios
    return pipe


def _place_weights(pipe: S2VPipeline, offload: str, device: torch.device) -> None:
    """Offloaded weights stay in RAM until used: moving the pipeline to the device first would save almost nothing."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif offload == "group":
        _enable_group_offload(pipe, device)
    else:
        pipe.to(device)  # diffusers leaves bitsandbytes weights where they are and moves the rest


def _enable_group_offload(pipe: S2VPipeline, device: torch.device) -> None:
    """Diffusers' group offload, per component as its memory guide lays it out for CogVideoX.

    The transformer runs its blocks every step, so each block is fetched on a CUDA stream while the one
    before it computes. T5 runs once per prompt and has no top-level block list: it comes on whole and
    goes back. The VAE goes layer by layer without streams, since diffusers warns that streams misplace
    weights when the VAE's first pass is tiled, and tiling is on by default here.
    """
    from diffusers.hooks import apply_group_offloading

    pipe.transformer.enable_group_offload(
        onload_device=device, offload_type="block_level", num_blocks_per_group=1, use_stream=True
    )
    apply_group_offloading(pipe.text_encoder, onload_device=device, offload_type="block_level", num_blocks_per_group=1)
    pipe.vae.enable_group_offload(onload_device=device, offload_type="leaf_level")


def load_base_pipeline(
    preset: Preset | str,
    model: str | None = None,
    dtype: torch.dtype = torch.float32,
    quantize: str = "none",
    tiny_seed: int = 0,
) -> S2VPipeline:
    """The base model with `<cls>` and the DPM scheduler, no LoRA, not yet on a device (training starts here)."""
    preset = _preset(preset) if isinstance(preset, str) else preset
    if preset.name == "nano" and model is None and not (NANO_FOLDER / "base" / "model_index.json").is_file():
        raise S2VError(
            f"s2v-nano's weights are not in {NANO_FOLDER}. Build them (about two hours on a CPU) with "
            "`s2v-nano build --ship`, or pass --model and --lora."
        )
    if preset.model is None and model is None:
        pipe = S2VPipeline(**tiny_components(tiny_seed))
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
    else:
        pipe = _from_pretrained(model or preset.model, dtype, quantize)
    pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.preset = preset
    return pipe


def default_preset_name() -> str:
    """The real model where it can run (a CUDA GPU); elsewhere s2v-nano, or the tiny wiring check without its files."""
    if torch.cuda.is_available():
        return "cogvideox-5b"
    return "nano" if (NANO_FOLDER / "base" / "model_index.json").is_file() else "tiny"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise S2VError(f"--device {device} was asked for, but this machine has no usable CUDA GPU.")
    try:
        return torch.device(device)
    except RuntimeError:
        raise S2VError(f"Unknown device '{device}': use auto, cpu, cuda or cuda:N.") from None


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """bf16 on a GPU (the model's own precision), fp32 on a CPU, where bf16 is slow."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise S2VError(f"Unknown dtype '{name}': use auto, {', '.join(DTYPES)}.")
    return DTYPES[name]


def check_memory_settings(settings: LoadSettings, preset: Preset, device: torch.device) -> None:
    """Refuse memory modes that cannot work here, or not together, before any weight is read."""
    if settings.offload not in OFFLOAD_MODES:
        raise S2VError(f"Unknown --offload '{settings.offload}': use {', '.join(OFFLOAD_MODES)}.")
    if settings.quantize not in QUANTIZE_MODES:
        raise S2VError(f"Unknown --quantize '{settings.quantize}': use {', '.join(QUANTIZE_MODES)}.")
    _check_modes_fit(settings, preset, device)
    _check_modes_combine(settings.quantize, settings.offload)


def _check_modes_fit(settings: LoadSettings, preset: Preset, device: torch.device) -> None:
    """Each mode on its own: the hardware, the packages and the model it needs."""
    offload, quantize = settings.offload, settings.quantize
    if offload != "none" and device.type != "cuda":
        raise S2VError(
            f"--offload {offload} moves weights between the CPU and a GPU, and there is no GPU "
            "here; on a CPU all weights already live in RAM: use --offload none."
        )
    if quantize in BITSANDBYTES_MODES and device.type != "cuda":
        raise S2VError(
            f"--quantize {quantize} uses bitsandbytes, which needs a CUDA GPU to quantize the "
            "transformer; on this machine use --quantize none, fp8-layerwise or int8-torchao."
        )
    if quantize == "int8-torchao" and (problem := torchao_problem()):
        raise S2VError(
            f"--quantize int8-torchao needs torchao {TORCHAO_MINIMUM} or newer, and {problem}: "
            'pip install "s2v[torchao]" (or pip install torchao).'
        )
    if quantize in LOAD_TIME_MODES and preset.model is None and settings.model is None:
        raise S2VError(
            f"--quantize {quantize} quantizes while loading from the Hub or a folder, so not the {preset.name} "
            "preset, which is built in-process; --quantize fp8-layerwise works on it."
        )


def _check_modes_combine(quantize: str, offload: str) -> None:
    """Pairs diffusers cannot run; fp8-layerwise and int8-torchao go with every offload mode."""
    if quantize in BITSANDBYTES_MODES and offload == "sequential":
        raise S2VError(
            f"--quantize {quantize} with --offload sequential: accelerate's layer-by-layer offload cannot move "
            "bitsandbytes-quantized weights; use --offload model."
        )
    if quantize == "int8" and offload == "group":
        raise S2VError(
            "--quantize int8 with --offload group: bitsandbytes' 8-bit layers keep their own reference to the "
            "weights and put it back after every call, so group offloading can neither move nor free them "
            "(diffusers' tests mark the pair as failing); use --quantize nf4 or --offload model."
        )


def torchao_problem() -> str | None:
    """Why torchao cannot serve `--quantize int8-torchao` here, or None when it can."""
    try:
        installed = importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        return "it is not installed"
    if Version(installed) < Version(TORCHAO_MINIMUM):
        return f"torchao {installed} is installed"
    return None


def quantization_config(mode: str, compute_dtype: torch.dtype):
    """What diffusers quantizes while loading: bitsandbytes on the transformer (diffusers) and T5 (transformers),
    or torchao's int8 weight-only on the transformer; None for the modes applied after loading."""
    if mode == "int8-torchao":
        return torchao_config()
    if mode not in BITSANDBYTES_MODES:
        return None
    from diffusers import BitsAndBytesConfig as DiffusersBnb
    from diffusers import PipelineQuantizationConfig
    from transformers import BitsAndBytesConfig as TransformersBnb

    if mode == "int8":
        options = dict(load_in_8bit=True)
    else:
        options = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    return PipelineQuantizationConfig(
        quant_mapping={"transformer": DiffusersBnb(**options), "text_encoder": TransformersBnb(**options)}
    )


def torchao_config():
    """int8 weights, activations in the pipeline's dtype, on the transformer only as in diffusers' CogVideoX guide:
    its weights are held through every step, while T5 runs once per prompt."""
    from diffusers import PipelineQuantizationConfig, TorchAoConfig
    from torchao.quantization import Int8WeightOnlyConfig

    return PipelineQuantizationConfig(quant_mapping={"transformer": TorchAoConfig(Int8WeightOnlyConfig())})


def _preset(name: str) -> Preset:
    if name not in PRESETS:
        raise S2VError(f"Unknown preset '{name}': choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


def _from_pretrained(model: str, dtype: torch.dtype, quantize: str) -> S2VPipeline:
    """The base model from a local folder (CogVideoX's layout) or a hub id / the HF cache."""
    local = Path(model).expanduser()
    looks_local = local.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        if not (local / "model_index.json").is_file():
            raise S2VError(
                f"{local} is not a diffusers model folder: expected model_index.json with transformer/, "
                "vae/, text_encoder/, tokenizer/ and scheduler/ beside it (the layout of THUDM/CogVideoX-5b)."
            )
        source = str(local)
    else:
        source = model
    try:
        return S2VPipeline.from_pretrained(
            source, torch_dtype=dtype, quantization_config=quantization_config(quantize, dtype)
        )
    except S2VError:
        raise
    except (OSError, ValueError, RuntimeError) as error:
        raise S2VError(missing_model_message(model, looks_local, error)) from None


def load_lora(
    pipe: S2VPipeline, source: str, alpha: float | None = None, scale: float = 1.0, adapter_name: str = ADAPTER_NAME
) -> LoraInfo:
    """Load a transformer LoRA (the authors' file as is, or ours) and check it fits exactly.

    Alpha rule (METHOD §4): the file's metadata wins; without metadata, the authors'
    layout (their file name, the §4 key set at rank 128) gets alpha 64; anything else
    follows diffusers' default (alpha = rank); an explicit `alpha` overrides all.
    """
    path = resolve_lora_file(source)
    state_dict, metadata = read_lora_file(path)
    config, alpha_from = lora_config(pipe, path, state_dict, metadata, alpha)
    pipe.load_lora_into_transformer(
        state_dict,
        transformer=pipe.transformer,
        adapter_name=adapter_name,
        metadata={f"transformer.{key}": value for key, value in config.items()},
        _pipeline=pipe,
    )
    _check_lora_fits(pipe, state_dict, adapter_name, path)
    if scale != 1.0:
        pipe.set_adapters([adapter_name], [scale])
    return LoraInfo(str(path), config["r"], config["lora_alpha"], scale, alpha_from, len(state_dict))


def save_lora(transformer, folder: str | os.PathLike, adapter_name: str = ADAPTER_NAME) -> Path:
    """Write a transformer adapter in diffusers' LoRA format, with its metadata (rank and alpha)."""
    S2VPipeline.save_lora_weights(
        folder,
        transformer_lora_layers=get_peft_model_state_dict(transformer, adapter_name=adapter_name),
        transformer_lora_adapter_metadata=transformer.peft_config[adapter_name].to_dict(),
        weight_name=OUR_LORA_FILE,
    )
    return Path(folder) / OUR_LORA_FILE


def resolve_lora_file(source: str) -> Path:
    """A local .safetensors file, a folder holding one, or a hub repo id holding one."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise S2VError(f"{path.name}: only .safetensors LoRA files are loaded (pickle files can run code).")
        return path
    if path.is_dir():
        for name in (AUTHORS_LORA_FILE, OUR_LORA_FILE):
            if (path / name).is_file():
                return path / name
        candidates = sorted(path.glob("*.safetensors"))
        if len(candidates) == 1:
            return candidates[0]
        raise S2VError(
            f"No single LoRA file in {path}: expected {AUTHORS_LORA_FILE} or {OUR_LORA_FILE} "
            f"(found {len(candidates)} .safetensors files)."
        )
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise S2VError(
            f"LoRA not found: {source} is neither a file, a folder nor a hub repo id. {AUTHORS_CHECKPOINT_HINT}"
        )
    return _download_lora(source)


def _download_lora(repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    reason = ""
    for name in (AUTHORS_LORA_FILE, OUR_LORA_FILE):
        try:
            return Path(hf_hub_download(repo_id, name))
        except LocalEntryNotFoundError:
            reason = "not in the local cache, and the Hub is offline or unreachable"
            break
        except EntryNotFoundError:
            reason = f"no {AUTHORS_LORA_FILE} or {OUR_LORA_FILE} in the repo"
        except (OSError, ValueError) as error:
            reason = first_line(error, limit=300)
            break
    raise S2VError(
        f"Could not get the LoRA '{repo_id}' from the Hugging Face Hub or its cache ({reason}). "
        "Download the file and pass its local path to --lora."
    )


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The tensors and diffusers' adapter metadata (None when the file carries none)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        state_dict = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise S2VError(f"{path.name} is not a readable safetensors file: {error}") from None
    if not state_dict or not all(".lora_A." in key or ".lora_B." in key for key in state_dict):
        raise S2VError(f"{path.name} is not a LoRA: its keys should end in lora_A.weight / lora_B.weight.")
    if not all(key.startswith("transformer.") for key in state_dict):
        raise S2VError(f"{path.name} is not a transformer LoRA in diffusers' format (keys start with 'transformer.').")
    metadata = json.loads(header[METADATA_KEY]) if METADATA_KEY in header else None
    return state_dict, metadata


def lora_config(pipe, path: Path, state_dict: dict, metadata: dict | None, alpha: float | None) -> tuple[dict, str]:
    """peft LoraConfig arguments for this file, and where its alpha came from."""
    if metadata:
        config = {key.removeprefix("transformer."): value for key, value in metadata.items()}
        alpha_from = "file metadata"
    else:
        unprefixed = {key.removeprefix("transformer."): value for key, value in state_dict.items()}
        ranks = {f"^{key}": value.shape[1] for key, value in unprefixed.items() if "lora_B" in key}
        config = get_peft_kwargs(ranks, None, unprefixed)
        if _is_authors_layout(pipe.transformer, path, unprefixed, config):
            config["lora_alpha"] = AUTHORS_ALPHA
            alpha_from = f"authors' release layout (alpha {AUTHORS_ALPHA}, rank {AUTHORS_RANK})"
        else:
            alpha_from = "diffusers default (alpha = rank)"
    if alpha is not None:
        if not alpha > 0:
            raise S2VError(f"--lora-alpha must be positive, not {alpha}.")
        config = {**config, "lora_alpha": alpha, "alpha_pattern": {}}
        alpha_from = "--lora-alpha"
    return config, alpha_from


def authors_lora_modules(transformer) -> set[str]:
    """The module paths METHOD §4's target list wraps in this transformer."""
    names = set()
    for name, module in transformer.named_modules():
        is_layer = isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) or hasattr(module, "base_layer")
        if is_layer and any(name == target or name.endswith("." + target) for target in LORA_TARGET_MODULES):
            names.add(name)
    return names


def _is_authors_layout(transformer, path: Path, state_dict: dict, config: dict) -> bool:
    modules = {key.split(".lora_")[0] for key in state_dict}
    return (
        path.name == AUTHORS_LORA_FILE
        and config["r"] == AUTHORS_RANK
        and not config["rank_pattern"]
        and modules == authors_lora_modules(transformer)
    )


def _check_lora_fits(pipe, state_dict: dict, adapter_name: str, path: Path) -> None:
    """Every tensor in the file found its module, and every wrapped module got its tensors."""
    loaded = set(get_peft_model_state_dict(pipe.transformer, adapter_name=adapter_name))
    wanted = {key.removeprefix("transformer.") for key in state_dict}
    unexpected, missing = sorted(wanted - loaded), sorted(loaded - wanted)
    if unexpected or missing:
        pipe.delete_adapters(adapter_name)
        raise S2VError(
            f"{path.name} does not fit this model: {len(unexpected)} of its tensors match no module "
            f"({', '.join(unexpected[:3])}) and {len(missing)} expected tensors are missing "
            f"({', '.join(missing[:3])}). Is it a LoRA for this base model?"
        )
