"""The reference text token `<cls>` (METHOD §3)."""

from __future__ import annotations

import pytest
import torch
from transformers import T5Config, T5EncoderModel

from s2v.text import (
    REFERENCE_TOKEN,
    add_reference_token,
    strip_reference_token,
    with_reference_token,
)
from s2v.tiny import EMBEDDING_PADDING_ROWS, tiny_tokenizer


@pytest.fixture
def t5_like():
    """A tokenizer and a T5 whose embedding matrix has padding rows beyond the vocabulary, as in CogVideoX."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer) + EMBEDDING_PADDING_ROWS, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2
    )
    return tokenizer, T5EncoderModel(config).eval()


def test_reference_token_takes_the_first_padding_row_and_keeps_its_weights(t5_like):
    tokenizer, text_encoder = t5_like
    vocabulary = len(tokenizer)
    row_before = text_encoder.get_input_embeddings().weight[vocabulary].clone()
    token_id = add_reference_token(tokenizer, text_encoder)
    assert token_id == vocabulary
    embeddings = text_encoder.get_input_embeddings().weight
    assert embeddings.shape[0] == vocabulary + 1  # shrunk from vocabulary + 28: no new random row
    assert torch.equal(embeddings[token_id], row_before)


def test_adding_the_token_twice_changes_nothing(t5_like):
    tokenizer, text_encoder = t5_like
    first = add_reference_token(tokenizer, text_encoder)
    weights = text_encoder.get_input_embeddings().weight.clone()
    assert add_reference_token(tokenizer, text_encoder) == first
    assert len(tokenizer) == first + 1
    assert torch.equal(text_encoder.get_input_embeddings().weight, weights)


def test_reference_token_is_one_token_at_the_start(t5_like):
    tokenizer, text_encoder = t5_like
    token_id = add_reference_token(tokenizer, text_encoder)
    ids = tokenizer(with_reference_token("a cat surfing")).input_ids
    assert ids[0] == token_id and ids.count(token_id) == 1


@pytest.mark.parametrize(
    "typed",
    [
        "a cat surfing",
        "<cls> a cat surfing",
        "<cls>a cat surfing",
        "  <cls>  <cls> a cat surfing ",
        "a <cls> cat surfing",
    ],
)
def test_prefix_is_added_exactly_once_whatever_the_user_typed(typed):
    assert with_reference_token(typed) == f"{REFERENCE_TOKEN} a cat surfing"


def test_strip_removes_every_reference_token():
    assert strip_reference_token("<cls> blurry, <cls>low quality") == "blurry, low quality"
    assert strip_reference_token("") == ""
