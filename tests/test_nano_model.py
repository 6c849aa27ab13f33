"""Tests for s2v-nano's model side: the vocabulary, the VAE trainer, eval-nano's scoring, the whole
build chain shrunk to a few steps (so no stage's code rots), and the shipped model's scores.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from s2v.__main__ import main as cli
from s2v_nano.__main__ import main as nano_cli
from s2v_nano.analyze import analyze_clip
from s2v_nano.base import TEXT_LENGTH, nano_tokenizer
from s2v_nano.build import ABLATIONS, BuildPlan, build, ship_model
from s2v_nano.evaluate import CONDITIONS, EvalReport, score
from s2v_nano.grid import CANDIDATES, grid
from s2v_nano.vae import VAETrainConfig, reconstruction_ceiling, train_vae
from s2v_nano.world import (
    MOTIONS,
    SCENES,
    Identity,
    base_captions_named,
    clip_caption,
    eval_items,
    render_clip,
    render_subject,
    scene_caption,
    split_identities,
    subject_caption,
    write_world,
)

SMALL_WORLD = dict(base_clips=8, pairs=6, motion_clips=6, eval_per_subject=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The smoke build: every stage of `s2v-nano build` at toy sizes, the shipping chain then the ablations,
    once for the module; also what the shipping chain alone had trained and scored."""
    folder = tmp_path_factory.mktemp("nano") / "build"
    chain = build(folder, BuildPlan.smoke())
    trained = sorted(path.name for path in (folder / "runs").iterdir())
    scores = build(folder, BuildPlan.smoke(), ablations=True)
    return folder, scores, chain, trained


def test_every_world_caption_is_in_the_vocabulary_and_fits(tmp_path):
    tokenizer = nano_tokenizer()
    identities, _ = split_identities(0)
    captions = [
        clip_caption(identity, scene, motion) for identity in identities[:12] for scene in SCENES for motion in MOTIONS
    ]
    captions += [subject_caption(None), scene_caption(identities[0], "night")]
    captions += [item["prompt"] for item in eval_items(split_identities(0)[1])]
    for caption in captions:
        ids = tokenizer(caption).input_ids
        assert tokenizer.unk_token_id not in ids, caption
        assert len(ids) + 1 <= TEXT_LENGTH  # + <cls>
    assert tokenizer("a dog").input_ids.count(tokenizer.unk_token_id) == 1


def test_vae_training_writes_a_loadable_folder_with_a_measured_scaling_factor(tmp_path):
    from diffusers import AutoencoderKLCogVideoX

    world = write_world(tmp_path / "world", **SMALL_WORLD).root
    config = VAETrainConfig(steps=2, clip_batch=2, image_batch=2, warmup_steps=1, log_every=1)
    vae = AutoencoderKLCogVideoX.from_pretrained(train_vae(world, tmp_path / "vae", config))
    log = json.loads((tmp_path / "vae" / "train_log.json").read_text())
    assert [entry["step"] for entry in log["log"]] == [1, 2]
    assert vae.config.scaling_factor != 1.0 and np.isfinite(vae.config.scaling_factor)
    ceiling = reconstruction_ceiling(vae, split_identities(0)[1][:2], clips_per_identity=1)
    assert ceiling.original["identity"] == 100.0 and ceiling.original["motion"] == 100.0
    assert 0 < ceiling.psnr < 40


def test_a_vae_is_as_wide_as_its_config_says(tmp_path):
    world = write_world(tmp_path / "world", **SMALL_WORLD).root
    config = VAETrainConfig(steps=1, clip_batch=2, image_batch=2, warmup_steps=1, channels=(8, 16, 24))
    saved = json.loads((train_vae(world, tmp_path / "vae", config) / "config.json").read_text())
    assert saved["block_out_channels"] == [8, 16, 24]


def test_a_vae_with_channels_its_normalisation_cannot_divide_is_refused():
    from s2v.errors import S2VError
    from s2v_nano.vae import new_vae

    with pytest.raises(S2VError, match="multiple of 8"):
        new_vae(channels=(16, 20, 64))
    with pytest.raises(S2VError, match="3 channel counts"):
        new_vae(channels=(16, 32))


def test_an_interrupted_vae_run_resumes_from_its_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    import s2v_nano.vae as vae_module

    world = write_world(tmp_path / "world", **SMALL_WORLD).root
    config = VAETrainConfig(steps=4, clip_batch=2, image_batch=2, warmup_steps=1, log_every=1, checkpoint_every=2)
    whole = load_file(train_vae(world, tmp_path / "whole", config) / "diffusion_pytorch_model.safetensors")
    assert not (tmp_path / "whole.checkpoint").exists()  # gone once the folder is written

    real, calls = vae_module.reconstruction_loss, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 5:  # the first loss of step 3, after step 2's checkpoint
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(vae_module, "reconstruction_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_vae(world, tmp_path / "resumed", config)
    assert (tmp_path / "resumed.checkpoint").is_file() and not (tmp_path / "resumed").exists()
    monkeypatch.setattr(vae_module, "reconstruction_loss", real)
    resumed = load_file(train_vae(world, tmp_path / "resumed", config) / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    log = json.loads((tmp_path / "resumed" / "train_log.json").read_text())["log"]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4]


def _clips(items: list[dict]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        render_clip(Identity.from_id(item["identity"]), item["scene"], item["motion"], 48, 48, rng=rng).frames
        for item in items
    ]


def test_scores_of_ground_truth_videos_are_perfect_and_a_wrong_reference_scores_against_what_was_shown():
    held = split_identities(0)[1]
    items = eval_items(held[:4], per_subject=8)
    videos = _clips(items)
    analyses = [analyze_clip(video) for video in videos]
    references = {identity.id: render_subject(identity, 48, 48) for identity in held}
    truth = score(items, [item["identity"] for item in items], analyses, videos, references)
    assert truth.identity == truth.identity_of_item == truth.motion == truth.scene == 100.0
    assert truth.dynamic == 87.5  # "stays still" is 1 of 8 motions
    assert truth.copy == 0.0
    wrong = [held[(held.index(Identity.from_id(item["identity"])) + 12) % len(held)].id for item in items]
    shuffled = score(items, wrong, analyses, videos, references)
    assert shuffled.identity == 0.0 and shuffled.identity_of_item == 100.0


def test_strict_motion_is_counted_per_prompted_motion():
    held = split_identities(0)[1]
    items = eval_items(held[:4], per_subject=8)
    videos = _clips(items)
    circling = [i for i, item in enumerate(items) if item["motion"] == "circle"]
    for i in circling:  # a circle prompt answered by the next prompt's (other) motion
        videos[i] = videos[i + 1]
    analyses = [analyze_clip(video) for video in videos]
    references = {identity.id: render_subject(identity, 48, 48) for identity in held}
    result = score(items, [item["identity"] for item in items], analyses, videos, references)
    assert result.strict_by_motion == {motion: [0 if motion == "circle" else 4, 4] for motion in MOTIONS}
    report = EvalReport(settings={}, scores={"reference": result})
    assert "| reference | " in report.motion_table() and "| 0/4 |" in report.motion_table()


def test_a_video_that_repeats_its_reference_counts_as_a_copy():
    held = split_identities(0)[1]
    items = eval_items(held[:1], per_subject=2)
    reference = render_subject(held[0], 48, 48)
    videos = [np.repeat(np.asarray(reference)[None], 9, axis=0)] * 2
    result = score(items, [held[0].id] * 2, [analyze_clip(v) for v in videos], videos, {held[0].id: reference})
    assert result.copy == 100.0 and result.dynamic == 0.0


def test_the_shipping_chain_trains_and_scores_only_the_shipped_run(built):
    _, _, chain, trained = built
    assert trained == [BuildPlan.smoke().shipped] and set(chain) == {"base", BuildPlan.smoke().shipped}


def test_smoke_build_runs_every_stage_and_scores_every_run(built):
    folder, scores, _, _ = built
    log = json.loads((folder / "build_log.json").read_text())
    plan = BuildPlan.smoke()
    expected = {"world", "vae", "vae ceiling", "base-untrained", "base captions", "base-cache", "base-train", "base"}
    expected |= {"eval base"}
    expected |= {"s2v-cache"}
    runs = [*plan.ablations, "switched-seed1", "switched-rank4", "switched-full"]
    expected |= {f"s2v {name}" for name in runs} | {f"eval {name}" for name in runs}
    assert set(log["stages"]) == expected
    assert set(scores) == {"base", *runs} and set(plan.ablations) <= set(ABLATIONS)
    assert set(scores["base"]["scores"]) == {"none", "named"}
    assert set(scores["switched"]["scores"]) == set(CONDITIONS)
    assert set(scores["image-only"]["scores"]) == {"reference"}
    table = (folder / "results" / "table.md").read_text()
    assert "| switched |" in table and "| switched, no reference |" in table and "| image-only |" in table
    assert "| base, no reference |" in table
    task_log = json.loads((folder / "runs" / "image-only" / "task_log.json").read_text())
    assert set(task_log) == {"identity"}
    assert "| switched-seed1 |" in table


def test_a_second_seed_trains_the_same_recipe_from_other_draws(built):
    folder, _, _, _ = built
    first, second = (folder / "runs" / name / "train_log.jsonl" for name in ("switched", "switched-seed1"))
    lines = [[json.loads(line) for line in path.read_text().splitlines()] for path in (first, second)]
    assert len(lines[0]) == len(lines[1])
    assert [line["loss"] for line in lines[0]] != [line["loss"] for line in lines[1]]


def test_the_rank_runs_train_the_shipped_recipe_at_another_rank_and_as_a_full_fine_tune(built):
    from safetensors.torch import load_file

    folder, scores, _, _ = built
    lora = load_file(folder / "runs" / "switched-rank4" / "lora" / "pytorch_lora_weights.safetensors")
    assert {tensor.shape[0] for name, tensor in lora.items() if "lora_A" in name} == {4}
    full = folder / "runs" / "switched-full"
    assert not (full / "lora").exists() and set(scores["switched-full"]["scores"]) == {"reference"}
    weights = "transformer/diffusion_pytorch_model.safetensors"
    tuned, base = load_file(full / weights), load_file(folder / "base" / weights)
    assert any(not torch.equal(tuned[k], base[k]) for k in base)
    assert (full / "model" / weights).read_bytes() == (full / weights).read_bytes()  # what was scored


def test_the_build_trains_its_base_on_captions_naming_the_plans_share_of_subjects(built):
    folder, *_ = built
    plan = BuildPlan.smoke()
    lines = [json.loads(line) for line in (folder / "base-captions.jsonl").read_text().splitlines()]
    assert lines == base_captions_named(folder / "world", plan.base_named_share)
    world = (folder / "world" / "base" / "captions.jsonl").read_text().splitlines()
    named = sum(not line["caption"].startswith("it ") for line in lines)
    assert named > sum(not json.loads(line)["caption"].startswith("it ") for line in world)
    index = json.loads((folder / "cache" / "base" / "index.json").read_text())
    assert any(source.endswith("base-captions.jsonl") for source in index["fingerprint"]["sources"])


def test_an_interrupted_build_continues_without_redoing_finished_stages(built):
    folder, *_ = built
    before = (folder / "build_log.json").read_text()
    lora = folder / "runs" / "switched" / "lora" / "pytorch_lora_weights.safetensors"
    stamp = lora.stat().st_mtime_ns
    (folder / "results" / "image-only.json").unlink()
    build(folder, BuildPlan.smoke(), ablations=True)
    assert lora.stat().st_mtime_ns == stamp
    assert json.loads((folder / "build_log.json").read_text())["stages"].keys() == json.loads(before)["stages"].keys()
    assert (folder / "results" / "image-only.json").is_file()


def test_a_build_folder_refuses_another_plan(built):
    from s2v.errors import S2VError

    folder, *_ = built
    with pytest.raises(S2VError, match="another plan"):
        build(folder, BuildPlan.full())


def test_a_build_folder_keeps_its_chain_when_only_the_comparison_runs_change(built):
    folder, *_ = built
    lora = folder / "runs" / "switched" / "lora" / "pytorch_lora_weights.safetensors"
    stamp = lora.stat().st_mtime_ns
    scores = build(folder, replace(BuildPlan.smoke(), ranks=(), second_seeds=()), ablations=True)
    assert "switched" in scores and lora.stat().st_mtime_ns == stamp


def test_a_plan_must_ship_one_of_its_runs(tmp_path):
    from s2v.errors import S2VError

    plan = BuildPlan.smoke()
    plan.shipped = "two-stage"
    with pytest.raises(S2VError, match="'two-stage' is not one of the plan's runs"):
        build(tmp_path / "build", plan)
    assert not (tmp_path / "build").exists()


def test_shipping_copies_the_named_run_and_halves_the_base(built, tmp_path):
    from safetensors.torch import load_file

    folder, *_ = built
    ship_model(folder, "image-only", tmp_path / "nano")
    shipped = tmp_path / "nano" / "lora" / "pytorch_lora_weights.safetensors"
    assert shipped.read_bytes() == (folder / "runs" / "image-only" / "lora" / shipped.name).read_bytes()
    weights = load_file(tmp_path / "nano" / "base" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float16}
    assert (tmp_path / "nano" / "results.md").read_text() == (folder / "results" / "table.md").read_text()


def test_shipping_a_run_that_was_not_trained_keeps_the_shipped_model(built, tmp_path):
    from s2v.errors import S2VError

    folder, *_ = built
    ship_model(folder, "switched", tmp_path / "nano")
    before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*"))
    with pytest.raises(S2VError, match="no trained LoRA"):
        ship_model(folder, "two-stage", tmp_path / "nano")
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*")) == before


def test_nano_eval_command_refuses_bad_options_before_loading(capsys):
    assert nano_cli(["eval", "--conditions", "reference,sideways"]) == 2
    assert "--conditions" in capsys.readouterr().err
    assert nano_cli(["eval", "--out", "scores.txt"]) == 2
    assert ".json" in capsys.readouterr().err
    assert nano_cli(["eval", "--limit", "0"]) == 2
    assert nano_cli(["eval", "--per-subject", "0"]) == 2 and "--per-subject" in capsys.readouterr().err
    assert nano_cli(["eval", "--steps", "0"]) == 2 and "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        nano_cli(["eval", "--subjects", "everyone"])
    assert "--subjects" in capsys.readouterr().err


def test_the_nano_base_is_a_cogvideox_folder_that_generates_from_the_command_line(built, tmp_path, capsys):
    folder, *_ = built
    subject = folder / "world" / "eval" / "refs"
    reference = next(subject.glob("*.png"))
    out = tmp_path / "nano.mp4"
    code = cli(
        ["generate", "--model", str(folder / "base"), "--lora", str(folder / "runs" / "switched" / "lora"),
         "--subject", str(reference), "--prompt", "it moves left on grass", "--height", "48", "--width", "48",
         "--steps", "2", "--seed", "1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0 and out.stat().st_size > 0


def test_the_base_grid_gives_each_candidate_its_measured_budget_and_resumes_without_retraining(tmp_path):
    folder = tmp_path / "grid"
    scores = grid(folder, ["reference", "named-0.9-batch-4", "vae-2x"], minutes=0.02, plan=BuildPlan.smoke())
    assert set(scores) == {"reference", "named-0.9-batch-4", "vae-2x"} and set(scores["vae-2x"]["scores"]) == {"named"}
    # one cache per VAE, and one more for other captions
    assert sorted(path.name for path in folder.glob("cache-*")) == [
        "cache-vae-2x",
        "cache-vae-4x",
        "cache-vae-4x-named-0.9",
    ]
    assert not list((folder / "candidates").glob("*/cache"))
    named = folder / "candidates" / "named-0.9-batch-4"
    assert (named / "captions.jsonl").resolve() == (folder / "captions" / "named-0.9.jsonl").resolve()
    assert (named / "captions.jsonl").read_text().count("\n") == len(
        (folder / "world" / "base" / "captions.jsonl").read_text().splitlines()
    )
    captions = json.loads((named / "results" / "captions.json").read_text())
    assert set(captions["accuracy"]) == {"shape", "colour", "pattern", "motion"} and captions["items"] == 2
    budget = json.loads((folder / "candidates" / "vae-2x" / "budget.json").read_text())
    assert budget["steps"] >= 1 and budget["seconds_per_step"] > 0
    assert not list((folder / "candidates" / "vae-2x").glob("probe-*"))
    latents = json.loads((folder / "candidates" / "vae-2x" / "base" / "transformer" / "config.json").read_text())
    assert latents["sample_width"] == 24  # the 2x VAE's grid
    table = (folder / "grid.md").read_text()
    assert "| vae-2x | VAE 2x |" in table and "| reference | VAE 4x |" in table and "named share 0.9 |" in table
    assert "| vae-2x | " in table.split("| candidate")[0] and "/24 (" in table  # the ceilings, as k/n
    trained = (folder / "candidates" / "reference" / "base-train" / "task_log.json").stat().st_mtime
    grid(folder, ["reference"], minutes=0.02, plan=BuildPlan.smoke())
    assert (folder / "candidates" / "reference" / "base-train" / "task_log.json").stat().st_mtime == trained


def test_candidates_with_the_same_captions_lever_share_one_captions_file_and_cache():
    named, images = CANDIDATES["named-0.9-batch-4"], CANDIDATES["images-named-0.9-batch-4"]
    partial = CANDIDATES["partial-named-0.9-batch-4"]
    assert named.captions == images.captions == "named-0.9" and partial.captions == "named-0.9-partial-0.5"
    assert CANDIDATES["batch-4"].captions is None and partial.lever.endswith("named share 0.9, partial share 0.5")


def test_captions_reads_a_base_or_its_checkpoint_and_refuses_other_folders(built, tmp_path, capsys):
    folder, *_ = built
    assert nano_cli(["captions", "--model", str(folder / "base"), "--limit", "1"]) == 0
    out = capsys.readouterr().out
    assert "text -> shape" in out and "/1 (chance 20%)" in out and "motion" in out
    transformer = folder / "base-train" / "transformer"
    assert (
        nano_cli(["captions", "--model", str(folder / "base"), "--transformer", str(transformer), "--limit", "1"]) == 0
    )
    assert nano_cli(["captions", "--model", str(tmp_path)]) == 2
    assert "is not a base folder" in capsys.readouterr().err
