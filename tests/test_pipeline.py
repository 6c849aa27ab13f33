"""S2VPipeline end to end on the tiny model: inputs, guidance, seeds, callbacks, interruption."""

from __future__ import annotations

import math
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from conftest import SMALL

from s2v.errors import S2VError, S2VWarning
from s2v.text import REFERENCE_TOKEN


class TransformerInputs:
    """Records what the transformer is given at each denoising step."""

    def __init__(self, transformer):
        self.calls = []
        transformer.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        self.calls.append({k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()})


def test_frames_come_out_at_the_requested_count_and_size(tiny_pipe, subject_array):
    output = tiny_pipe(subject_array, "a cat surfing", seed=0, **SMALL)
    assert output.frames.shape == (9, 32, 48, 3)
    assert output.frames.min() >= 0 and output.frames.max() <= 1
    assert output.subject.size == (48, 32) and not output.interrupted and output.seed == 0


def test_same_seed_gives_identical_frames_and_another_seed_does_not(tiny_pipe, subject_array):
    first = tiny_pipe(subject_array, "a cat surfing", seed=7, **SMALL).frames
    again = tiny_pipe(subject_array, "a cat surfing", seed=7, **SMALL).frames
    other = tiny_pipe(subject_array, "a cat surfing", seed=8, **SMALL).frames
    assert np.array_equal(first, again)
    assert not np.allclose(first, other, atol=1e-3)


def test_a_generator_works_like_a_seed_and_no_seed_draws_one_that_reproduces(tiny_pipe, subject_array):
    by_seed = tiny_pipe(subject_array, "a cat", seed=3, **SMALL).frames
    by_generator = tiny_pipe(subject_array, "a cat", generator=torch.Generator().manual_seed(3), **SMALL)
    assert np.array_equal(by_seed, by_generator.frames) and by_generator.seed is None
    drawn = tiny_pipe(subject_array, "a cat", **SMALL)
    assert isinstance(drawn.seed, int) and drawn.seed >= 0
    assert np.array_equal(drawn.frames, tiny_pipe(subject_array, "a cat", seed=drawn.seed, **SMALL).frames)


def test_seed_zero_is_a_seed(tiny_pipe, subject_array):
    assert tiny_pipe(subject_array, "a cat", seed=0, **SMALL).seed == 0


def test_no_subject_is_the_stock_text_to_video_path_bit_for_bit(tiny_pipe):
    """`image=None` is the baseline: what diffusers' CogVideoXPipeline makes from the same prompt and noise."""
    from diffusers import CogVideoXPipeline

    prompts = ["a cat surfing", "a dog"]
    ours = tiny_pipe(None, prompts, guidance_scale=6.0, generator=torch.Generator().manual_seed(4), **SMALL)
    length = tiny_pipe.transformer.config.max_text_seq_length
    stock = CogVideoXPipeline.__call__(
        tiny_pipe, prompts, max_sequence_length=length, guidance_scale=6.0, output_type="np",
        generator=torch.Generator().manual_seed(4), **SMALL,
    ).frames  # fmt: skip
    assert ours.subject is None and np.array_equal(ours.frames, stock)
    single = tiny_pipe(None, "a cat surfing", seed=4, **SMALL)
    assert single.frames.shape == (9, 32, 48, 3)
    captured = TransformerInputs(tiny_pipe.transformer)
    tiny_pipe(None, f"{REFERENCE_TOKEN} a cat", seed=4, **SMALL)
    tiny_pipe(None, "a cat", seed=4, **SMALL)
    typed, plain = captured.calls[0], captured.calls[len(captured.calls) // 2]
    assert typed["hidden_states"].shape[1] == 3  # the video's latent frames only
    assert torch.equal(typed["encoder_hidden_states"], plain["encoder_hidden_states"])  # a typed <cls> is not fed


def test_the_subject_changes_the_video(tiny_pipe, subject_array):
    red = tiny_pipe(subject_array, "a cat", seed=1, **SMALL).frames
    green = tiny_pipe(np.full_like(subject_array, (20, 200, 20)), "a cat", seed=1, **SMALL).frames
    assert not np.allclose(red, green, atol=1e-3)


def test_unconditional_branch_keeps_the_clean_reference(tiny_pipe, subject_array):
    inputs = TransformerInputs(tiny_pipe.transformer)
    tiny_pipe(subject_array, "a cat", guidance_scale=6.0, seed=0, **SMALL)
    first = inputs.calls[0]["hidden_states"]
    assert first.shape[0] == 2 and first.shape[1] == 1 + 3  # [uncond, cond] x [reference + 3 latent frames]
    assert torch.equal(first[0, 0], first[1, 0]) and first[0, 0].abs().sum() > 0
    for call in inputs.calls[1:]:
        assert torch.equal(call["hidden_states"][:, 0], first[:, 0]), "the reference is clean at every step"
    text = inputs.calls[0]["encoder_hidden_states"]
    assert not torch.equal(text[0], text[1])


def test_without_guidance_there_is_one_branch(tiny_pipe, subject_array):
    inputs = TransformerInputs(tiny_pipe.transformer)
    tiny_pipe(subject_array, "a cat", guidance_scale=1.0, seed=0, **SMALL)
    assert inputs.calls[0]["hidden_states"].shape[0] == 1


def test_reference_token_leads_the_prompt_once_and_never_the_negative_prompt(tiny_pipe, subject_array, monkeypatch):
    seen = {}
    encode = tiny_pipe.encode_prompt

    def spy(prompt, negative_prompt, **kwargs):
        seen.update(prompt=prompt, negative_prompt=negative_prompt)
        return encode(prompt, negative_prompt, **kwargs)

    monkeypatch.setattr(tiny_pipe, "encode_prompt", spy)
    with pytest.warns(S2VWarning, match="removed from the negative prompt"):
        tiny_pipe(subject_array, "<cls> a cat surfing", negative_prompt="<cls> blurry", seed=0, **SMALL)
    assert seen == {"prompt": [f"{REFERENCE_TOKEN} a cat surfing"], "negative_prompt": "blurry"}


def test_a_batch_gives_each_prompt_its_own_subject(tiny_pipe, subject_array):
    other, third = 255 - subject_array, np.roll(subject_array, 16, axis=1)
    first = tiny_pipe([subject_array, other], ["a cat", "a dog"], seed=0, **SMALL)
    second = tiny_pipe([subject_array, third], ["a cat", "a dog"], seed=0, **SMALL)
    assert first.frames.shape == (2, *tiny_pipe(subject_array, "a cat", seed=0, **SMALL).frames.shape)
    assert len(first.subject) == 2
    np.testing.assert_array_equal(first.frames[0], second.frames[0])
    assert not np.allclose(first.frames[1], second.frames[1], atol=1e-4)


def test_words_the_tokenizer_cannot_read_are_named_in_a_warning(tiny_pipe, subject_array):
    with pytest.warns(S2VWarning, match="reads them as unknown: café, naïve"):
        tiny_pipe(subject_array, "a café cat, naïve", seed=0, **SMALL)


def test_a_batch_needs_as_many_subjects_as_prompts(tiny_pipe, subject_array):
    with pytest.raises(S2VError, match="as many subjects as prompts"):
        tiny_pipe([subject_array], ["a cat", "a dog"], seed=0, **SMALL)
    with pytest.raises(S2VError, match="a list of subjects and a list of prompts"):
        tiny_pipe(subject_array, ["a cat"], seed=0, **SMALL)


def test_dynamic_cfg_changes_the_result(tiny_pipe, subject_array):
    plain = tiny_pipe(subject_array, "a cat", seed=0, **SMALL).frames
    dynamic = tiny_pipe(subject_array, "a cat", seed=0, use_dynamic_cfg=True, **SMALL).frames
    assert not np.allclose(plain, dynamic, atol=1e-4)


def test_callback_sees_each_step_and_can_interrupt(tiny_pipe, subject_array):
    steps = []

    def stop_after_two(pipe, step, timestep, tensors):
        steps.append(step)
        assert set(tensors) == {"latents"}
        if step == 1:
            pipe._interrupt = True
        return tensors

    inputs = TransformerInputs(tiny_pipe.transformer)
    output = tiny_pipe(
        subject_array, "a cat", seed=0, callback_on_step_end=stop_after_two, **{**SMALL, "num_inference_steps": 6}
    )
    assert steps == [0, 1] and len(inputs.calls) == 2
    assert output.interrupted and output.frames is None


def test_latent_output_has_the_video_frames_only(tiny_pipe, subject_array):
    latents = tiny_pipe(subject_array, "a cat", seed=0, output_type="latent", **SMALL).frames
    assert latents.shape == (3, 4, 4, 6)


def test_long_prompts_warn_about_what_is_cut(tiny_pipe, subject_array):
    with pytest.warns(S2VWarning, match="longer than 32 tokens"):
        tiny_pipe(subject_array, "a cat surfing a wave at sunset near the beach", seed=0, **SMALL)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"prompt": ""}, "Write a prompt"),
        ({"prompt": "<cls>"}, "Write a prompt"),
        ({"prompt": None}, "Write a prompt"),
        ({"negative_prompt": 3}, "negative prompt must be text"),
        ({"num_frames": 10}, "8k\\+1"),
        ({"num_frames": 8}, "8k\\+1"),
        ({"num_frames": 1}, "8k\\+1"),
        ({"num_frames": 57}, "between 9 and 49"),
        ({"height": 40}, "height must be a multiple of 16"),
        ({"width": 0}, "width must be a multiple of 16"),
        ({"width": 4096}, "between 16 and 2048"),
        ({"height": 32.0}, "height must be"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": math.nan}, "guidance_scale"),
        ({"seed": -1}, "seed must be"),
        ({"seed": 2**64}, "seed must be"),
        ({"seed": True}, "seed must be"),
        ({"seed": 1, "generator": torch.Generator()}, "either a seed or a generator"),
        ({"output_type": "mp4"}, "output_type"),
        ({"callback_on_step_end_tensor_inputs": ["noise_pred"]}, "Callbacks can receive"),
        ({"image": "/no/such/cat.png"}, "not found"),
        ({"image": np.zeros((4, 4, 2))}, "HxW"),
    ],
)
def test_each_bad_input_gets_a_clear_message_before_any_work(tiny_pipe, subject_array, override, message):
    inputs = TransformerInputs(tiny_pipe.transformer)
    arguments = {"image": subject_array, "prompt": "a cat", **SMALL, **override}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", S2VWarning)
        with pytest.raises(S2VError, match=message):
            tiny_pipe(**arguments)
    assert inputs.calls == []


def test_two_threads_on_one_pipeline_get_the_videos_each_gets_alone(tiny_pipe, subject_array):
    settings = {**SMALL, "num_inference_steps": 6}
    alone_a = tiny_pipe(subject_array, "a cat", seed=1, guidance_scale=6.0, **settings).frames
    alone_b = tiny_pipe(subject_array, "a dog", seed=2, guidance_scale=2.0, **settings).frames
    a_running, results = threading.Event(), {}

    def slow_a(pipe, step, timestep, tensors):
        a_running.set()
        time.sleep(0.05)  # a long step: B arrives while A is mid-run
        return tensors

    def run_a():
        results["a"] = tiny_pipe(
            subject_array, "a cat", seed=1, guidance_scale=6.0, callback_on_step_end=slow_a, **settings
        ).frames

    def run_b():
        a_running.wait(10)
        results["b"] = tiny_pipe(subject_array, "a dog", seed=2, guidance_scale=2.0, **settings).frames

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert np.array_equal(results["a"], alone_a) and np.array_equal(results["b"], alone_b)


def test_one_runs_interrupt_never_stops_another_run(tiny_pipe, subject_array):
    settings = {**SMALL, "num_inference_steps": 6}
    a_running, results = threading.Event(), {}

    def interrupt_a(pipe, step, timestep, tensors):
        a_running.set()
        time.sleep(0.05)
        pipe._interrupt = True
        return tensors

    def run_a():
        results["a"] = tiny_pipe(subject_array, "a cat", seed=1, callback_on_step_end=interrupt_a, **settings)

    def run_b():
        a_running.wait(10)
        results["b"] = tiny_pipe(subject_array, "a dog", seed=2, **settings)

    threads = [threading.Thread(target=run_a), threading.Thread(target=run_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results["a"].interrupted and not results["b"].interrupted and results["b"].frames is not None


def test_a_run_that_failed_midway_leaves_nothing_behind_for_the_next(tiny_pipe, subject_array):
    alone = tiny_pipe(subject_array, "a cat", seed=4, guidance_scale=6.0, **SMALL).frames

    def fail(pipe, step, timestep, tensors):
        pipe._interrupt = True
        raise RuntimeError("the client went away")

    with pytest.raises(RuntimeError):
        tiny_pipe(subject_array, "a dog", seed=5, guidance_scale=2.0, callback_on_step_end=fail, **SMALL)
    assert np.array_equal(tiny_pipe(subject_array, "a cat", seed=4, guidance_scale=6.0, **SMALL).frames, alone)


def test_an_over_long_prompt_is_quoted_only_where_it_is_cut(tiny_pipe, subject_array):
    long_prompt = " ".join(["a cat surfing a wave at sunset"] * 200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", S2VWarning)
        tiny_pipe(subject_array, long_prompt, seed=0, **SMALL)
    (message,) = [str(w.message) for w in caught if "longer than" in str(w.message)]
    assert len(message) < 200 and "are ignored, from" in message
