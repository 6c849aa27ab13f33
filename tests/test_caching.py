"""Cache acceleration (`s2v.caching`): switched on for one run only, deterministic, and really skipping work.

On s2v-nano's trained weights, where neighbouring steps are alike enough for a cache to act (random
weights never are)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diffusers.hooks import FirstBlockCacheConfig

from s2v import LoadSettings, load_pipeline
from s2v.caching import CACHE_METHODS, calibrate_mag
from s2v.errors import S2VError

SUBJECT = "assets/examples/nano/disc-red-checks-white.png"
PROMPT = "it moves left on grass"
OFFERED = [method for method in CACHE_METHODS if method not in ("none", "mag")]


@pytest.fixture(scope="module")
def pipe():
    pipe = load_pipeline(LoadSettings(preset="nano"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def video(pipe, cache="none", seed=7, steps=None) -> np.ndarray:
    return pipe(SUBJECT, PROMPT, seed=seed, cache=cache, num_inference_steps=steps).frames


class Calls:
    """How many feed-forwards and attentions ran while counting: a cache skips the computation, not the
    module call, so the projections inside are what stop being called."""

    def __init__(self, transformer):
        self.transformer, self.blocks, self.attention = transformer, 0, 0

    def __enter__(self):
        self.handles = [
            hook
            for block in self.transformer.transformer_blocks
            for hook in (
                block.ff.register_forward_pre_hook(lambda *_: self._count("blocks")),
                block.attn1.to_q.register_forward_pre_hook(lambda *_: self._count("attention")),
            )
        ]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def _count(self, name):
        setattr(self, name, getattr(self, name) + 1)


def test_no_cache_gives_the_video_s2v_made_before_caches_existed(pipe):
    """Sums made by 13a973a's code (before `cache=` existed) with today's shipped weights and the nano preset's
    subject size (0.42), tolerant only of float rounding across CPUs."""
    frames = np.asarray(video(pipe), dtype=np.float64)
    assert frames.shape == (9, 48, 48, 3)
    assert frames.sum() == pytest.approx(21889.044990748167, rel=1e-6)
    assert (frames**2).sum() == pytest.approx(9556.615096303882, rel=1e-6)


@pytest.mark.parametrize("method", OFFERED)
def test_a_cache_computes_less_for_one_run_only_and_repeats_itself(pipe, method):
    with Calls(pipe.transformer) as full:
        never_cached = video(pipe)
    with Calls(pipe.transformer) as cached_calls:
        cached = video(pipe, method)
    assert full.blocks == full.attention == 6 * 25  # nano: 6 blocks, 25 steps, guidance in one batched forward
    assert cached_calls.blocks < full.blocks or cached_calls.attention < full.attention, method
    assert not np.array_equal(cached, never_cached), f"{method} changed nothing"
    assert np.array_equal(video(pipe, method), cached)  # fresh cache state each run: same seed, same video
    assert np.array_equal(video(pipe), never_cached)  # and no trace of it on the next run
    assert not pipe.transformer.is_cache_enabled


def test_a_diffusers_config_tries_other_settings(pipe):
    loose, strict = FirstBlockCacheConfig(threshold=0.3), FirstBlockCacheConfig(threshold=1e-6)
    assert np.array_equal(video(pipe, strict), video(pipe))
    assert not np.array_equal(video(pipe, loose), video(pipe))


def test_impossible_caches_are_refused_before_any_work(pipe):
    with pytest.raises(S2VError, match="calibrate-mag"):
        video(pipe, "mag")
    with pytest.raises(S2VError, match="not offered: .*does nothing"):
        video(pipe, "sea")
    with pytest.raises(S2VError, match="Unknown --cache 'fast'"):
        video(pipe, "fast")
    assert not pipe.transformer.is_cache_enabled


def test_the_cli_takes_a_cache_and_refuses_one_it_does_not_offer(tmp_path, capsys):
    from s2v.__main__ import main

    out = tmp_path / "frames"
    args = ["generate", "--preset", "nano", "--subject", SUBJECT, "--prompt", PROMPT, "--seed", "7", "--out", str(out)]
    assert main([*args, "--cache", "pab"]) == 0 and len(list(out.glob("*.png"))) == 9
    with pytest.raises(SystemExit) as refused:
        main([*args, "--cache", "sea"])
    assert refused.value.code == 2 and "invalid choice: 'sea'" in capsys.readouterr().err


def test_mag_is_refused_before_loading_or_claiming_a_results_folder(tmp_path, capsys):
    from s2v.__main__ import main

    subjects = tmp_path / "subjects"
    subjects.mkdir()
    (subjects / "disc.png").write_bytes(open(SUBJECT, "rb").read())
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPT + "\n")
    out = tmp_path / "results"
    args = ["eval", "--preset", "tiny", "--subjects", str(subjects), "--prompts", str(prompts), "--out", str(out)]
    assert main([*args, "--cache", "mag", "--score-only"]) == 2
    assert "s2v calibrate-mag" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--cache", "mag", "--mag-ratios", str(tmp_path / "none.json"), "--score-only"]) == 2
    assert "no such file" in capsys.readouterr().err and not out.exists()


def test_calibrated_ratios_let_mag_skip_blocks_for_one_run_only(pipe):
    ratios = calibrate_mag(pipe, SUBJECT, PROMPT, 25, seeds=(0, 1))
    assert len(ratios) == 25 and ratios[0] == 1.0 and all(0.5 < r < 1.5 for r in ratios)
    assert ratios != calibrate_mag(pipe, SUBJECT, PROMPT, 25, seeds=(0,))  # an average of two runs, not the first
    never_cached = video(pipe)
    pipe.mag_ratios = ratios
    try:
        with Calls(pipe.transformer) as calls:
            cached = video(pipe, "mag")
        assert calls.blocks < 6 * 25 and np.array_equal(video(pipe, "mag"), cached)
    finally:
        pipe.mag_ratios = None
    assert np.array_equal(video(pipe), never_cached) and not pipe.transformer.is_cache_enabled


def test_the_cli_calibrates_mag_and_generates_with_the_ratios(tmp_path, capsys):
    from s2v.__main__ import main

    ratios = tmp_path / "ratios.json"
    model = ["--preset", "nano", "--subject", SUBJECT]
    assert main(["calibrate-mag", *model, "--prompt", PROMPT, "--out", str(ratios), "--runs", "1"]) == 0
    saved = json.loads(ratios.read_text())
    assert saved["num_inference_steps"] == 25 and len(saved["mag_ratios"]) == 25 and saved["runs"] == 1
    out = tmp_path / "frames"
    generate = ["generate", *model, "--prompt", PROMPT, "--seed", "7", "--out", str(out), "--cache", "mag"]
    assert main([*generate, "--mag-ratios", str(ratios)]) == 0 and len(list(out.glob("*.png"))) == 9
    ratios.write_text('{"mag_ratios": [1.0, -2]}')
    assert main([*generate, "--mag-ratios", str(ratios)]) == 2
    assert "positive numbers" in capsys.readouterr().err


def test_a_config_diffusers_cannot_apply_here_is_refused_in_words(pipe):
    from diffusers.hooks import SeaCacheConfig

    with pytest.raises(S2VError, match="not SeaCacheConfig"):
        video(pipe, SeaCacheConfig())
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    try:
        with pytest.raises(S2VError, match="already has a cache enabled"):
            video(pipe, "pab")
    finally:
        pipe.transformer.disable_cache()
