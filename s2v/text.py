"""The reference text token `<cls>` (METHOD §3).

Prompts for subject-driven generation start with `<cls>`, a token added to the T5
tokenizer. CogVideoX's T5 has 32128 embedding rows but 32100 tokenizer entries, so the
new token gets id 32100 — an existing, never-trained padding row — and resizing the
embeddings to `len(tokenizer)` shrinks the matrix to 32101 rows. No random row is made;
the row stays frozen and the transformer's LoRA learns to read it.
"""

from __future__ import annotations

import re

from transformers import PreTrainedModel, PreTrainedTokenizerBase

REFERENCE_TOKEN = "<cls>"
_TOKEN_PATTERN = re.compile(r"\s*" + re.escape(REFERENCE_TOKEN) + r"\s*")


def add_reference_token(tokenizer: PreTrainedTokenizerBase, text_encoder: PreTrainedModel) -> int:
    """Give the tokenizer `<cls>` and fit T5's embeddings to it; returns the token's id.

    Idempotent: a tokenizer that already has the token (e.g. a saved s2v pipeline) is left
    as it is, and the embeddings are only resized when their row count differs. Must run
    before quantization or offload hooks are attached to the text encoder.
    """
    if REFERENCE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [REFERENCE_TOKEN]})
    if text_encoder.get_input_embeddings().num_embeddings != len(tokenizer):
        text_encoder.resize_token_embeddings(len(tokenizer))
    return tokenizer.convert_tokens_to_ids(REFERENCE_TOKEN)


def strip_reference_token(prompt: str) -> str:
    """The prompt with every `<cls>` removed and whitespace tidied."""
    return " ".join(_TOKEN_PATTERN.sub(" ", prompt).split())


def with_reference_token(prompt: str) -> str:
    """The prompt with exactly one leading `<cls>`, whether or not the user typed it."""
    text = strip_reference_token(prompt)
    return f"{REFERENCE_TOKEN} {text}" if text else REFERENCE_TOKEN
