"""The switched fine-tuning (s2v_train/) on the tiny preset with synthetic data made in the tests."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import CogVideoXTransformer3DModel
from safetensors.torch import load_file

from s2v import LoadSettings, load_pipeline
from s2v.errors import S2VError
from s2v.loading import OUR_LORA_FILE, load_base_pipeline
from s2v.model import rotary_embedding
from s2v.text import REFERENCE_TOKEN
from s2v.tiny import COGVIDEOX_5B_TRANSFORMER
from s2v_train.config import ModelConfig, TaskConfig, TrainConfig, load_config, subject_references
from s2v_train.data import PairDataset, VideoDataset, write_synthetic_dataset
from s2v_train.loop import TRAIN_LOG, make_trainable, train
from s2v_train.tasks import (
    IDENTITY,
    IMAGE,
    MOTION,
    EncodingPairs,
    EncodingVideos,
    TaskSchedule,
    batch_loss,
    identity_batch,
    image_batch,
    keep_mask,
    motion_batch,
    needs_reference_frames,
    reference_frame,
    unreferenced_frame_offset,
    video_distribution,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "s2v_train" / "configs" / "tiny.yaml"


def tiny_config(tmp_path, *overrides: str) -> TrainConfig:
    """The shipped CPU config, shrunk to a few steps, writing into tmp_path."""
    base = [
        f"run.output_dir={tmp_path / 'run'}",
        "run.validation=[]",
        "run.log_with=none",
        "optim.max_steps=4",
        "optim.warmup_steps=1",
        "tasks.image_batch_size=2",
    ]
    return load_config(TINY, [*base, *overrides])


def read_log(config: TrainConfig) -> list[dict]:
    path = Path(config.run.output_dir) / TRAIN_LOG
    return [json.loads(line) for line in path.read_text().splitlines()]


def lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / OUR_LORA_FILE))


@pytest.mark.parametrize("mode", ["switched", "image-only", "two-stage", "joint-t2v"])
def test_every_mode_trains_with_finite_losses_and_logs_its_tasks(tmp_path, mode):
    config = tiny_config(tmp_path, f"tasks.mode={mode}", "tasks.motion_probability=0.5")
    final = train(config)
    log = read_log(config)
    assert [entry["step"] for entry in log] == [1, 2, 3, 4]
    assert all(math.isfinite(entry["loss"]) for entry in log)
    tasks = [entry["task"] for entry in log]
    expected = {
        "image-only": [IDENTITY] * 4,
        "two-stage": [IDENTITY, IDENTITY, MOTION, MOTION],
    }
    if mode in expected:
        assert tasks == expected[mode]
    if mode == "joint-t2v":
        assert all(entry["reference_kept"] == 0.0 for entry in log if entry["task"] == MOTION)
    assert (final / OUR_LORA_FILE).is_file()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    pairs, videos, captions = write_synthetic_dataset(folder, num_pairs=4, num_videos=2, height=32, width=48)
    return (
        PairDataset.from_jsonl(pairs, 32, 48),
        VideoDataset.from_folder(videos, 32, 48, num_frames=9, fps=8, captions=captions),
    )


def fresh_identity_batch(pipe, pairs, indices, generator):
    """The identity batch from pairs encoded now, as a run without a cache builds it."""
    items = [EncodingPairs(pipe, pairs)[index] for index in indices]
    return identity_batch(items, generator, pipe.vae.config.scaling_factor, "cpu")


def fresh_motion_batch(pipe, videos, indices, config, rng, generator):
    sources = EncodingVideos(pipe, videos, needs_reference_frames(config), subject_references(config))
    items = [sources[index] for index in indices]
    return motion_batch(items, config, rng, generator, pipe.vae.config.scaling_factor, "cpu")


class Captured:
    """The transformer's inputs at each forward, recorded by a hook."""

    def __init__(self, transformer):
        self.calls = []
        transformer.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module, args, kwargs):
        self.calls.append(kwargs)


@pytest.fixture
def pipe():
    pipe = load_base_pipeline("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def test_identity_task_feeds_reference_frame_0_and_a_one_frame_target_at_frame_1(pipe, synthetic):
    pairs, _ = synthetic
    samples = [pairs[0], pairs[1]]
    generator = torch.Generator().manual_seed(0)
    batch = fresh_identity_batch(pipe, pairs, [0, 1], generator)

    replay = torch.Generator().manual_seed(0)
    expected_reference = pipe.encode_reference(samples[0].reference, replay)
    assert torch.equal(batch.reference[0], expected_reference[0])
    assert all(prompt.startswith(REFERENCE_TOKEN + " ") for prompt in batch.prompts)

    captured = Captured(pipe.transformer)
    batch_loss(pipe.transformer, pipe.transformer.config, pipe.scheduler, batch, generator)
    (call,) = captured.calls
    hidden = call["hidden_states"]
    assert hidden.shape[1] == 2  # reference + the target as a one-frame video
    assert torch.equal(hidden[:, 0], batch.reference[:, 0])
    cos, _ = call["image_rotary_emb"]
    assert torch.equal(cos, rotary_embedding(pipe.transformer.config, 4, 6, 2, first_frame=0)[0])
    token = pipe.tokenizer.convert_tokens_to_ids(REFERENCE_TOKEN)
    ids = pipe.tokenizer(batch.prompts).input_ids
    assert all(row[0] == token for row in ids)


@torch.no_grad()
def test_motion_task_uses_a_frame_of_the_clip_and_drops_the_whole_reference_stream(pipe, synthetic):
    _, videos = synthetic
    samples = [videos[0], videos[1]]
    config = TaskConfig(drop_probability=0.5)
    rng = np.random.default_rng(3)
    batch = fresh_motion_batch(pipe, videos, [0, 1], config, rng, torch.Generator().manual_seed(0))
    assert not any(REFERENCE_TOKEN in prompt for prompt in batch.prompts)

    from PIL import Image

    replay = torch.Generator().manual_seed(0)
    for sample in samples:
        video_distribution(pipe, sample.frames).sample(generator=replay)
    first_reference = pipe.encode_reference(Image.fromarray(samples[0].frames[batch.frame_indices[0]]), replay)
    assert torch.equal(batch.reference[0], first_reference[0])

    batch.keep = torch.tensor([True, False])
    captured = Captured(pipe.transformer)
    batch_loss(pipe.transformer, pipe.transformer.config, pipe.scheduler, batch, torch.Generator().manual_seed(1))
    kept, dropped = captured.calls
    latent_frames = batch.latents.shape[1]
    assert kept["hidden_states"].shape[1] == latent_frames + 1
    assert torch.equal(kept["hidden_states"][0, 0], batch.reference[0, 0])
    assert dropped["hidden_states"].shape[1] == latent_frames
    video_positions = rotary_embedding(pipe.transformer.config, 4, 6, latent_frames, first_frame=1)[0]
    assert torch.equal(dropped["image_rotary_emb"][0], video_positions)
    tokens_per_frame = (4 // 2) * (6 // 2)
    assert torch.equal(kept["image_rotary_emb"][0][tokens_per_frame:], video_positions)


@torch.no_grad()
def test_subject_references_give_the_motion_task_the_clips_subject_image_and_never_a_frame(pipe, synthetic):
    _, videos = synthetic
    samples = [videos[0], videos[1]]
    config = TaskConfig(reference_frame="subject", drop_probability=0.0)
    batch = fresh_motion_batch(pipe, videos, [0, 1], config, np.random.default_rng(0), torch.Generator().manual_seed(0))
    replay = torch.Generator().manual_seed(0)
    for sample in samples:
        video_distribution(pipe, sample.frames).sample(generator=replay)
    for index, sample in enumerate(samples):
        assert torch.equal(batch.reference[index], pipe.encode_reference(sample.subject, replay)[0])
        assert not any(np.array_equal(np.asarray(sample.subject), frame) for frame in sample.frames)


def test_subject_references_are_refused_for_clips_that_list_no_subject_image(tmp_path):
    folder = tmp_path / "data"
    pairs, videos, captions = write_synthetic_dataset(folder, num_pairs=1, num_videos=2, height=32, width=48)
    lines = [json.loads(line) for line in captions.read_text().splitlines()]
    del lines[1]["reference"]
    captions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    paths = [f"data.pairs={pairs}", f"data.videos={videos}", f"data.video_captions={captions}", "data.synthetic=false"]
    config = tiny_config(tmp_path, *paths, "tasks.reference_frame=subject")
    with pytest.raises(S2VError, match="1 of 2 clips have none, e.g. clip_001.mp4"):
        train(config)

    from s2v_train.cache import open_cache, prepare

    cache = f"data.cache={tmp_path / 'cache'}"
    captions.write_text(
        "".join(json.dumps({k: v for k, v in line.items() if k != "reference"}) + "\n" for line in lines)
    )
    prepare(tiny_config(tmp_path, *paths, cache))
    with pytest.raises(S2VError, match="prepared without the clips' subject images"):
        open_cache(tiny_config(tmp_path, *paths, cache, "tasks.reference_frame=subject"))


def test_a_text_to_video_base_trains_its_videos_where_the_stock_pipeline_samples_them(pipe, synthetic):
    """RoPE frames 0..T-1, as CogVideoX was pretrained; the method's dropped references keep 1..T."""
    _, videos = synthetic
    config = TaskConfig(mode="text-to-video")
    batch = fresh_motion_batch(pipe, videos, [0], config, np.random.default_rng(0), torch.Generator().manual_seed(0))
    assert not batch.keep.any()
    offsets = {mode: unreferenced_frame_offset(TaskConfig(mode=mode)) for mode in ("text-to-video", "switched")}
    assert offsets == {"text-to-video": 0, "switched": 1}
    captured = Captured(pipe.transformer)
    generator = torch.Generator().manual_seed(1)
    batch_loss(pipe.transformer, pipe.transformer.config, pipe.scheduler, batch, generator, None, 0)
    (call,) = captured.calls
    stock = rotary_embedding(pipe.transformer.config, 4, 6, batch.latents.shape[1], first_frame=0)[0]
    assert torch.equal(call["image_rotary_emb"][0], stock)


def test_task_and_drop_shares_match_p_and_q_within_binomial_bounds():
    draws = 20_000
    for p in (0.2, 0.5):
        schedule = TaskSchedule(TaskConfig(motion_probability=p), max_steps=draws)
        rng = np.random.default_rng(0)
        share = np.mean([schedule.task(step, rng) == MOTION for step in range(draws)])
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / draws)
    for q in (0.5, 0.3):
        kept = keep_mask(draws, TaskConfig(drop_probability=q), np.random.default_rng(1)).float().mean().item()
        assert abs((1 - kept) - q) < 4 * math.sqrt(q * (1 - q) / draws)
    assert keep_mask(100, TaskConfig(mode="joint-t2v"), np.random.default_rng(2)).sum() == 0


def test_reference_frames_cover_the_clip_or_follow_the_chosen_rule():
    rng = np.random.default_rng(0)
    assert {reference_frame(49, "random", rng) for _ in range(3000)} == set(range(49))
    assert {reference_frame(49, "grid", rng) for _ in range(500)} == {0, 9, 18, 27, 36, 45}
    assert {reference_frame(49, "first", rng) for _ in range(50)} == {0}
    assert {reference_frame(1, "subject", rng) for _ in range(50)} == {0}  # a clip's one subject image


def test_5b_with_the_training_lora_has_about_502m_trainable_parameters():
    with init_empty_weights():
        transformer = CogVideoXTransformer3DModel(**COGVIDEOX_5B_TRANSFORMER)
        transformer.requires_grad_(False)
        parameters = make_trainable(transformer, TrainConfig(model=ModelConfig()))
    assert 500e6 < sum(p.numel() for p in parameters) < 504e6
    assert all(p.dtype == torch.float32 for p in parameters)


def test_one_sample_overfits(tmp_path):
    """One pair whose two halves are the same picture, so both directions are one sample."""
    folder = tmp_path / "one"
    made, _, _ = write_synthetic_dataset(folder, num_pairs=1, num_videos=1, height=32, width=48)
    record = json.loads(made.read_text().splitlines()[0])
    pairs = folder / "one.jsonl"
    pairs.write_text(json.dumps({**record, "subject": record["target"], "subject_caption": record["target_caption"]}))
    config = tiny_config(
        tmp_path,
        f"data.pairs={pairs}",
        "data.synthetic=false",
        "tasks.mode=image-only",
        "tasks.image_batch_size=1",
        "model.lora_rank=16",
        "model.lora_alpha=16",
        "optim.max_steps=120",
        "optim.learning_rate=1.0e-2",
        "run.checkpoint_every=1000",
    )
    final = train(config)

    dataset = PairDataset.from_jsonl(pairs, 32, 48)

    def fixed_loss(pipe) -> float:
        with torch.no_grad():
            losses = []
            for seed in range(8):
                generator = torch.Generator().manual_seed(seed)
                batch = fresh_identity_batch(pipe, dataset, [0], generator)
                losses.append(batch_loss(pipe.transformer, pipe.transformer.config, pipe.scheduler, batch, generator))
        return float(torch.stack(losses).mean())

    before = fixed_loss(load_pipeline(LoadSettings(preset="tiny")))
    after = fixed_loss(load_pipeline(LoadSettings(preset="tiny", lora=str(final))))
    assert after < 0.5 * before, (before, after)


def test_exported_lora_loads_in_s2v_and_changes_its_output(tmp_path, subject_array):
    config = tiny_config(tmp_path, "optim.max_steps=3")
    final = train(config)
    base = load_pipeline(LoadSettings(preset="tiny"))
    tuned = load_pipeline(LoadSettings(preset="tiny", lora=str(final)))
    assert (tuned.lora_info.rank, tuned.lora_info.alpha) == (8, 8)
    for pipe in (base, tuned):
        pipe.set_progress_bar_config(disable=True)
    options = dict(seed=0, height=32, width=48, num_frames=9, num_inference_steps=2)
    before, after = (pipe(subject_array, "a cat", **options).frames for pipe in (base, tuned))
    assert not np.allclose(before, after)


def test_corrupt_video_and_image_are_skipped_and_counted(tmp_path):
    folder = tmp_path / "data"
    pairs, videos, captions = write_synthetic_dataset(folder, num_pairs=1, num_videos=1, height=32, width=48)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pairs.open("a") as handle:
        handle.write(
            json.dumps({"subject": "broken.png", "target": "broken.png", "subject_caption": "x", "target_caption": "y"})
            + "\n"
        )
    (videos / "broken.mp4").write_bytes(os.urandom(2000))
    config = tiny_config(
        tmp_path,
        f"data.pairs={pairs}",
        f"data.videos={videos}",
        f"data.video_captions={captions}",
        "data.synthetic=false",
        "tasks.motion_probability=0.5",
        "tasks.image_batch_size=4",
        "optim.max_steps=6",
    )
    with pytest.warns(Warning):
        train(config)
    log = read_log(config)
    assert len(log) == 6 and log[-1]["skipped_samples"] > 0


RUNNER = textwrap.dedent(
    """
    import os, signal, sys
    import accelerate
    import s2v_train.loop
    kill_at, during_write = int(os.environ["KILL_AT"]), os.environ["KILL_DURING_WRITE"] == "1"
    original_save_state, original_checkpoint = accelerate.Accelerator.save_state, s2v_train.loop.save_checkpoint

    def save_state(self, folder, *args, **kwargs):
        result = original_save_state(self, folder, *args, **kwargs)
        if during_write and folder.endswith(f"step_{kill_at:07d}"):
            os.kill(os.getpid(), signal.SIGKILL)  # half-written: the rename never happens
        return result

    def checkpoint(accelerator, output_dir, state, keep):
        path = original_checkpoint(accelerator, output_dir, state, keep)
        if not during_write and state.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    accelerate.Accelerator.save_state = save_state
    s2v_train.loop.save_checkpoint = checkpoint
    from s2v_train.__main__ import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize(
    ("kill_at", "during_write", "every", "averaged"), [(3, False, 3, False), (4, True, 2, False), (3, False, 3, True)]
)
def test_a_killed_run_resumes_to_bit_identical_weights_and_task_log(tmp_path, kill_at, during_write, every, averaged):
    """With a weight average (EMA) too: its state resumes with the checkpoint, so the export is the same."""
    settings = [
        "tasks.motion_probability=0.5",
        "tasks.drop_probability=0.5",
        "optim.max_steps=6",
        f"run.checkpoint_every={every}",
        "run.keep_checkpoints=5",
        *(["optim.ema_decay=0.9"] if averaged else []),
    ]
    reference = tiny_config(tmp_path / "whole", *settings)
    train(reference)

    interrupted = tiny_config(tmp_path / "killed", *settings)
    overrides = [
        f"run.output_dir={interrupted.run.output_dir}",
        "run.validation=[]",
        "run.log_with=none",
        "optim.warmup_steps=1",
        "tasks.image_batch_size=2",
        *settings,
    ]
    env = {**os.environ, "KILL_AT": str(kill_at), "KILL_DURING_WRITE": str(int(during_write)), "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", RUNNER, "--config", str(TINY), *overrides],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    leftovers = list((Path(interrupted.run.output_dir) / "checkpoints").glob(".tmp-*"))
    assert bool(leftovers) == during_write

    train(interrupted, resume="latest")
    whole, resumed = Path(reference.run.output_dir), Path(interrupted.run.output_dir)
    assert json.loads((whole / "task_log.json").read_text()) == json.loads((resumed / "task_log.json").read_text())
    assert len(set(json.loads((whole / "task_log.json").read_text()))) == 2, "p = 0.5 must give both tasks"
    expected, got = lora_weights(whole / "lora"), lora_weights(resumed / "lora")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert [entry["step"] for entry in read_log(interrupted)] == [1, 2, 3, 4, 5, 6]
    last_step = lora_weights(whole / "checkpoints" / "step_0000006" / "lora")
    assert any(not torch.equal(last_step[k], expected[k]) for k in expected) == averaged


def test_two_cpu_processes_train_data_parallel_and_save_a_checkpoint(tmp_path):
    """torchrun, as `accelerate launch --multi_gpu` runs it: accelerate 1.x would need MPI for CPU processes."""
    output = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "s2v_train",
        "--config",
        str(TINY),
        f"run.output_dir={output}",
        "run.validation=[]",
        "run.log_with=none",
        "optim.max_steps=2",
        "run.checkpoint_every=2",
        "tasks.image_batch_size=2",
        "optim.warmup_steps=1",
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = output / "checkpoints" / "step_0000002"
    assert (checkpoint / "trainer_state_0.json").is_file() and (checkpoint / "trainer_state_1.json").is_file()
    assert (checkpoint / "lora" / OUR_LORA_FILE).is_file()


def test_unknown_or_impossible_settings_are_refused_before_loading(tmp_path):
    with pytest.raises(S2VError, match="Unknown setting"):
        tiny_config(tmp_path, "tasks.motion_probabilty=0.3")
    with pytest.raises(S2VError, match="between 0 and 1"):
        tiny_config(tmp_path, "tasks.drop_probability=1.5")
    with pytest.raises(S2VError, match="8k\\+1"):
        tiny_config(tmp_path, "data.num_frames=12")
    with pytest.raises(S2VError, match="tasks.mode"):
        tiny_config(tmp_path, "tasks.mode=three-stage")
    assert tiny_config(tmp_path, "optim.learning_rate=2e-3").optim.learning_rate == 0.002  # YAML reads text
    with pytest.raises(S2VError, match="optim.learning_rate must be a number"):
        tiny_config(tmp_path, "optim.learning_rate=fast")
    with pytest.raises(S2VError, match="snr_gamma must be above 0"):
        tiny_config(tmp_path, "optim.snr_gamma=0")
    with pytest.raises(S2VError, match="ema_decay must be between 0 and 1"):
        tiny_config(tmp_path, "optim.ema_decay=1")


def test_a_shipped_config_is_found_by_name_from_any_folder(tmp_path, monkeypatch):

    monkeypatch.chdir(tmp_path)
    assert load_config("tiny") == load_config(TINY) == load_config("tiny.yaml")
    with pytest.raises(S2VError, match="shipped config's name: .*nano_base.*tiny"):
        load_config("tiyn")


def test_min_snr_weighting_ignores_pure_noise_and_caps_nearly_clean_steps(pipe, synthetic):
    from s2v_train.tasks import _loss_weights

    scheduler = pipe.scheduler
    steps = torch.tensor([999, 500, 0])
    weights = _loss_weights(scheduler, steps, 5.0)
    snr = scheduler.alphas_cumprod[steps] / (1 - scheduler.alphas_cumprod[steps])
    assert (
        weights[0] == 0 and 0 < weights[1] < 1 and float(weights[2]) == pytest.approx(float(5 / (snr[2] + 1)), rel=1e-5)
    )
    assert torch.equal(_loss_weights(scheduler, steps, None), torch.ones(3))
    batch = fresh_identity_batch(pipe, synthetic[0], [0, 1], torch.Generator().manual_seed(0))
    losses = [
        batch_loss(
            pipe.transformer, pipe.transformer.config, pipe.scheduler, batch, torch.Generator().manual_seed(3), g
        )
        for g in (None, 5.0)
    ]
    assert losses[0] != losses[1]


def test_logit_normal_timesteps_lean_toward_noise_and_uniform_ones_are_unchanged(tmp_path, pipe, synthetic):
    from s2v.errors import S2VError
    from s2v_train.tasks import sample_timesteps

    uniform = sample_timesteps(1000, 4096, torch.Generator().manual_seed(0))
    assert torch.equal(uniform, torch.randint(0, 1000, (4096,), generator=torch.Generator().manual_seed(0)))
    noisy = sample_timesteps(1000, 4096, torch.Generator().manual_seed(0), (1.0, 1.0))
    assert noisy.min() >= 0 and noisy.max() <= 999 and noisy.dtype == torch.int64
    assert noisy.float().median() > 650 and (noisy < 200).float().mean() < 0.05  # sigmoid(1) = 0.73
    assert torch.equal(noisy, sample_timesteps(1000, 4096, torch.Generator().manual_seed(0), (1.0, 1.0)))
    batch = fresh_identity_batch(pipe, synthetic[0], [0, 1], torch.Generator().manual_seed(0))
    args = (pipe.transformer, pipe.transformer.config, pipe.scheduler, batch)
    uniform_loss = batch_loss(*args, torch.Generator().manual_seed(3))
    assert batch_loss(*args, torch.Generator().manual_seed(3), logit_normal=None) == uniform_loss
    assert batch_loss(*args, torch.Generator().manual_seed(3), logit_normal=(1.0, 1.0)) != uniform_loss
    with pytest.raises(S2VError, match="timestep_logit_std must be above 0"):
        tiny_config(tmp_path, "optim.timestep_logit_mean=0.5", "optim.timestep_logit_std=0")


def assert_same_batch(cached, fresh):
    assert (cached.task, cached.prompts, cached.frame_indices) == (fresh.task, fresh.prompts, fresh.frame_indices)
    assert torch.equal(cached.keep, fresh.keep)
    for name in ("latents", "reference", "prompt_embeds"):  # one encoder run batched, one not: rounding only
        torch.testing.assert_close(getattr(cached, name), getattr(fresh, name), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "mode, reference", [("switched", "random"), ("switched", "subject"), ("text-to-video", "random")]
)
def test_a_prepared_cache_gives_the_batch_fresh_encodings_give_for_the_same_state(tmp_path, mode, reference):
    from s2v_train.cache import open_cache, prepare
    from s2v_train.tasks import encoding_sources

    config = tiny_config(
        tmp_path,
        f"data.cache={tmp_path / 'cache'}",
        f"tasks.mode={mode}",
        "tasks.drop_probability=0.5",
        f"tasks.reference_frame={reference}",
    )
    prepare(config)
    pipe = load_base_pipeline("tiny")
    scaling = pipe.vae.config.scaling_factor
    sources = {"cached": open_cache(config), "fresh": encoding_sources(pipe, config)}
    batches = {}
    for name, (pairs, videos) in sources.items():
        rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
        identity = None if pairs is None else identity_batch([pairs[1], pairs[6]], generator, scaling, "cpu")
        motion = motion_batch([videos[i] for i in (0, 3, 5)], config.tasks, rng, generator, scaling, "cpu")
        batches[name] = identity, motion
    (cached_identity, cached_motion), (fresh_identity, fresh_motion) = batches["cached"], batches["fresh"]
    assert_same_batch(cached_motion, fresh_motion)
    assert (cached_identity is None) == (mode == "text-to-video")
    if cached_identity is not None:
        assert_same_batch(cached_identity, fresh_identity)
        assert cached_identity.prompts[0].startswith(REFERENCE_TOKEN)
        assert cached_motion.keep.any() and None not in cached_motion.frame_indices
    else:
        assert not cached_motion.keep.any() and cached_motion.frame_indices == [None] * 3


def test_training_from_a_prepared_cache_gives_finite_losses(tmp_path):
    from s2v_train.cache import open_cache, prepare

    config = tiny_config(tmp_path, f"data.cache={tmp_path / 'cache'}", "tasks.motion_probability=0.5")
    prepare(config)
    pairs, videos = open_cache(config)
    assert len(pairs) == 2 * 32 and len(videos) == 16  # the synthetic set's defaults, both pair directions
    train(config)
    assert all(math.isfinite(entry["loss"]) for entry in read_log(config))


def test_a_cache_prepared_for_other_data_is_refused(tmp_path):
    from s2v.errors import S2VError
    from s2v_train.cache import open_cache, prepare

    prepare(tiny_config(tmp_path, f"data.cache={tmp_path / 'cache'}"))
    with pytest.raises(S2VError, match="prepare` again"):
        open_cache(tiny_config(tmp_path, f"data.cache={tmp_path / 'cache'}", "data.height=48"))


def test_validation_videos_are_written_and_logged_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_config(
        tmp_path,
        "run.log_with=tensorboard",
        "optim.max_steps=2",
        "run.validate_every=2",
        "run.validation_steps=2",
        f"run.validation=[{{subject: {ROOT / 'assets/examples/chelsea.png'}, prompt: a cat running, seed: 1}}]",
    )
    train(config)
    video = Path(config.run.output_dir) / "validation" / "step_0000002" / "00.mp4"
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == 9
    events = EventAccumulator(str(next((Path(config.run.output_dir) / "logs").rglob("events*"))))
    events.Reload()
    assert "validation/00" in events.Tags()["images"] and "loss" in events.Tags()["scalars"]


def test_a_text_to_video_base_trains_from_a_cache_without_pairs_or_reference_frames(tmp_path):
    """The nano base's recipe: every step a video with its reference dropped, the whole transformer trained."""
    from safetensors import safe_open

    from s2v_train.cache import open_cache, prepare

    config = tiny_config(
        tmp_path,
        "data.pairs=null",
        f"data.cache={tmp_path / 'cache'}",
        "tasks.mode=text-to-video",
        "tasks.caption_dropout=0.5",
        "optim.lr_schedule=cosine",
        "model.lora_rank=0",
        "optim.max_steps=2",
    )
    assert not config.uses_pairs
    prepare(config)
    pairs, videos = open_cache(config)
    assert pairs is None and videos[0].frames is None
    with safe_open(str(videos.files[0]), framework="pt") as handle:
        assert "frames_mean" not in handle.keys()
    final = train(config)
    assert (final / "diffusion_pytorch_model.safetensors").is_file()
    assert [entry["task"] for entry in read_log(config)] == ["motion", "motion"]
    assert read_log(config)[-1]["lr"] == 0.0  # cosine ends at zero


@torch.no_grad()
def test_a_base_image_batch_is_each_clips_first_latent_frame_at_the_stock_first_position(pipe, synthetic):
    _, videos = synthetic
    config = TaskConfig(mode="text-to-video")
    whole = fresh_motion_batch(pipe, videos, [0, 1], config, np.random.default_rng(0), torch.Generator().manual_seed(3))
    items = [EncodingVideos(pipe, videos, False)[index] for index in (0, 1)]
    images = image_batch(items, torch.Generator().manual_seed(3), pipe.vae.config.scaling_factor, "cpu")
    assert images.task == IMAGE and not images.keep.any() and images.prompts == whole.prompts
    assert torch.equal(images.latents, whole.latents[:, :1])
    captured = Captured(pipe.transformer)
    batch_loss(pipe.transformer, pipe.transformer.config, pipe.scheduler, images, torch.Generator(), None, 0)
    (call,) = captured.calls
    assert call["hidden_states"].shape[1] == 1
    stock = rotary_embedding(pipe.transformer.config, 4, 6, 1, first_frame=0)[0]
    assert torch.equal(call["image_rotary_emb"][0], stock)


def test_a_base_with_an_image_share_trains_images_and_videos_and_the_method_refuses_one(tmp_path):
    schedule = TaskSchedule(TaskConfig(mode="text-to-video", image_share=0.5), max_steps=4000)
    rng = np.random.default_rng(0)
    share = np.mean([schedule.task(step, rng) == IMAGE for step in range(4000)])
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / 4000)
    plain, rng = TaskSchedule(TaskConfig(mode="text-to-video"), max_steps=50), np.random.default_rng(0)
    assert {plain.task(step, rng) for step in range(50)} == {MOTION}
    config = tiny_config(
        tmp_path,
        "data.pairs=null",
        "tasks.mode=text-to-video",
        "tasks.image_share=0.5",
        "tasks.image_batch_size=3",
        "model.lora_rank=0",
        "optim.max_steps=6",
    )
    train(config)
    log = read_log(config)
    assert {entry["task"] for entry in log} == {IMAGE, MOTION} and all(math.isfinite(e["loss"]) for e in log)
    for mode, share in (("switched", 0.5), ("text-to-video", 1.0)):
        with pytest.raises(S2VError, match="tasks.image_share"):
            tiny_config(tmp_path, f"tasks.mode={mode}", f"tasks.image_share={share}")


def test_dropped_captions_become_the_empty_prompt_and_the_rest_stay(pipe, synthetic):
    from s2v_train.tasks import drop_captions, encode_text

    batch = fresh_identity_batch(pipe, synthetic[0], range(8), torch.Generator().manual_seed(0))
    empty = encode_text(pipe, [""])[0]
    dropped = drop_captions(batch, empty, 0.5, np.random.default_rng(0))
    gone = [prompt == "" for prompt in dropped.prompts]
    assert 0 < sum(gone) < 8
    for index, is_gone in enumerate(gone):
        expected = empty if is_gone else batch.prompt_embeds[index]
        torch.testing.assert_close(dropped.prompt_embeds[index], expected)
    assert drop_captions(batch, empty, 0.0, np.random.default_rng(0)) is batch


def test_lr_schedule_must_be_known(tmp_path):
    from s2v.errors import S2VError

    with pytest.raises(S2VError, match="lr_schedule"):
        tiny_config(tmp_path, "optim.lr_schedule=linear-ish")
