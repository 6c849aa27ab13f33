"""Tiny random CLIP and DINO of the real classes, written as folders the real loaders read; and a real flow
estimator for global translations (phase correlation), so metric tests run on constructed motion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast, ViTConfig, ViTModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

WORDS = ["<pad>", "<unk>", "<s>", "</s>", "a", "dog", "cat", "runs", "sleeps", "on", "the", "beach", "red", "toy"]


def write_tiny_clip(folder: Path) -> Path:
    vocab = {word: index for index, word in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    small = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(WORDS), max_position_embeddings=77, eos_token_id=3, **small),
        vision_config=dict(image_size=224, patch_size=32, **small),
        projection_dim=16,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil().save_pretrained(folder)
    return folder


def write_tiny_dino(folder: Path) -> Path:
    config = ViTConfig(
        image_size=224, patch_size=16, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def translation_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The global shift taking frame `a` to frame `b` (phase correlation, whole pixels), as a flow field."""
    grey_a, grey_b = a.astype(np.float64).mean(-1), b.astype(np.float64).mean(-1)
    spectrum = np.fft.fft2(grey_b) * np.conj(np.fft.fft2(grey_a))
    peak = np.fft.ifft2(spectrum / np.maximum(np.abs(spectrum), 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(peak), peak.shape)
    height, width = peak.shape
    dy, dx = (dy + height // 2) % height - height // 2, (dx + width // 2) % width - width // 2
    return np.broadcast_to(np.array([dx, dy], np.float32), (*a.shape[:2], 2)).copy()


def sliding_texture(num_frames: int, shifts: list[int], height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """uint8 [T, H, W, 3]: a smooth random texture, frame k moved right by shifts[0] + ... + shifts[k-1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8, width // 8, 3)).astype(np.float32)
    texture = torch.nn.functional.interpolate(
        torch.from_numpy(coarse).permute(2, 0, 1)[None], size=(height, width), mode="bicubic", align_corners=False
    )[0].permute(1, 2, 0)
    texture = np.clip(texture.numpy(), 0, 255).astype(np.uint8)
    offsets = np.concatenate([[0], np.cumsum(shifts)])[:num_frames]
    return np.stack([np.roll(texture, int(offset), axis=1) for offset in offsets])
