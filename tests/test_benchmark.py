"""`s2v eval`: subjects x prompts, resumable generation, per-video scores and the table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from metric_models import translation_flow, write_tiny_clip, write_tiny_dino
from PIL import Image
from test_cli import run as run_cli

from s2v.benchmark import MetricModels, Protocol, Scorers, read_items, run
from s2v.errors import S2VError
from s2v.metrics import ClipScorer, DinoScorer
from s2v.pipeline import S2VPipeline
from s2v.tiny import tiny_components

SMALL = Protocol(model="tiny", lora=None, height=32, width=48, num_frames=9, fps=8, steps=2)


@pytest.fixture(scope="module")
def metric_folders(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip")), write_tiny_dino(tmp_path_factory.mktemp("dino"))


@pytest.fixture(scope="module")
def scorers(metric_folders) -> Scorers:
    clip, dino = metric_folders
    return Scorers(ClipScorer.load(str(clip)), DinoScorer.load(str(dino)), translation_flow)


@pytest.fixture
def bench(tmp_path, subject_array):
    subjects = tmp_path / "subjects"
    subjects.mkdir()
    Image.fromarray(subject_array).save(subjects / "red_toy.png")
    Image.fromarray(subject_array[:, ::-1].copy()).save(subjects / "dog.jpg")
    (subjects / "classes.json").write_text(json.dumps({"red_toy": "toy", "dog": "dog"}))
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "a {class} runs on the beach"}, {"subject": "dog", "prompt": "a dog sleeps"}]
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return subjects, prompts


class FixedScorers(Scorers):
    """Known scores per prompt, counting what it is asked to score."""

    def __init__(self, metrics=("smoothness", "dynamic", "clip_t", "clip_i", "dino_i")):
        super().__init__(None, None, None, metrics=metrics)
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def score(self, prompt, reference, frames, fps, metrics):
        self.asked.append((prompt, tuple(metrics)))
        value = 10.0 * len(prompt.split())
        return {metric: value + index for index, metric in enumerate(metrics)}


def prompts_by_id(items) -> dict[str, str]:
    return {item.id: item.prompt for item in items}


class CountingPipeline:
    def __init__(self):
        self.pipe = S2VPipeline(**tiny_components(seed=0))
        self.pipe.set_progress_bar_config(disable=True)
        self.prompts: list[str] = []

    def __call__(self, **kwargs):
        self.prompts.append(kwargs["prompt"])
        return self.pipe(**kwargs)


def test_each_subject_gets_the_shared_prompts_and_its_own_with_class_names_filled_in(bench):
    items = read_items(*bench)
    assert [(item.subject, item.prompt) for item in items] == [
        ("dog", "a dog runs on the beach"),
        ("dog", "a dog sleeps"),
        ("red_toy", "a toy runs on the beach"),
    ]
    assert len({item.id for item in items}) == 3 and all(item.id.startswith(item.subject + "-") for item in items)


def test_an_edited_prompt_or_a_replaced_image_is_a_new_video(bench, subject_array):
    subjects, prompts = bench
    before = prompts_by_id(read_items(subjects, prompts))
    prompts.write_text(prompts.read_text().replace("sleeps", "runs"))
    Image.fromarray(subject_array // 2).save(subjects / "red_toy.png")
    after = prompts_by_id(read_items(subjects, prompts))
    assert set(before) & set(after) == {next(key for key, p in before.items() if p == "a dog runs on the beach")}


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "a cat", "subject": "cat"}', "no image.*cat"),
        ("not json", "line 1 is not JSON"),
        ('{"text": "a dog"}', 'line 1 needs a "prompt"'),
    ],
)
def test_a_bad_prompts_file_is_refused_with_its_line(bench, line, message):
    subjects, prompts = bench
    prompts.write_text(line + "\n")
    with pytest.raises(S2VError, match=message):
        read_items(subjects, prompts)


def test_a_prompts_file_that_is_neither_jsonl_nor_text_is_refused(bench):
    subjects, prompts = bench
    with pytest.raises(S2VError, match="not prompts.json"):
        read_items(subjects, prompts.rename(prompts.with_suffix(".json")))


def test_two_images_of_one_name_are_refused(bench, subject_array):
    subjects, prompts = bench
    Image.fromarray(subject_array).save(subjects / "dog.png")
    with pytest.raises(S2VError, match="two images named dog"):
        read_items(subjects, prompts)


def test_a_broken_subject_image_is_refused_before_any_model_loads(bench):
    subjects, prompts = bench
    (subjects / "dog.jpg").write_bytes(b"not an image")
    with pytest.raises(S2VError, match="dog.jpg"):
        read_items(subjects, prompts)


def test_a_class_placeholder_without_a_class_name_is_refused(bench):
    subjects, prompts = bench
    (subjects / "classes.json").unlink()
    with pytest.raises(S2VError, match="no class for dog"):
        read_items(subjects, prompts)


def test_a_run_writes_videos_scores_and_the_table_beside_the_papers(tmp_path, bench, scorers):
    out = tmp_path / "results"
    pipe = CountingPipeline()
    table = run(read_items(*bench), SMALL, out, scorers, lambda: pipe)

    items = read_items(*bench)
    assert sorted(path.name for path in (out / "videos").iterdir()) == sorted(f"{item.id}.mp4" for item in items)
    assert pipe.prompts == ["a dog runs on the beach", "a dog sleeps", "a toy runs on the beach"]
    per_video = (out / "per_video.csv").read_text().splitlines()
    assert per_video[0] == "id,subject,image,prompt,smoothness,dynamic,clip_t,clip_i,dino_i" and len(per_video) == 4
    ours = table["rows"]["ours"]
    assert 90 < ours["smoothness"] <= 100 and ours["clip_i"] < 100 and ours["dino_i"] < 100
    markdown = (out / "table.md").read_text()
    assert "| paper (2504.17816) | 98.72 | 60.19 | 32.24 | 73.70 | 59.29 |" in markdown
    assert "motion smooth. †" in markdown and "not VBench's AMT-S" in markdown
    assert "openai/clip-vit-base-patch32" in json.loads((out / "table.json").read_text())["checkpoints"]["clip"]
    assert (out / "table.csv").read_text().startswith("method,smoothness,dynamic,clip_t,clip_i,dino_i\n")


def test_the_table_holds_the_mean_of_the_per_video_scores(tmp_path, bench):
    out = tmp_path / "results"
    table = run(read_items(*bench), SMALL, out, FixedScorers(), CountingPipeline)
    # prompts of 6, 3 and 6 words score 60, 30, 60 (+ the metric's index)
    assert table["rows"]["ours"] == {
        "smoothness": 50.0,
        "dynamic": 51.0,
        "clip_t": 52.0,
        "clip_i": 53.0,
        "dino_i": 54.0,
    }
    assert ",a dog sleeps,30.0000,31.0000,32.0000,33.0000,34.0000" in (out / "per_video.csv").read_text()
    assert "| **ours** (3 videos) | 50.00 | 51.00 | 52.00 | 53.00 | 54.00 |" in (out / "table.md").read_text()


def test_a_rerun_regenerates_and_rescores_only_missing_videos(tmp_path, bench):
    out = tmp_path / "results"
    items = read_items(*bench)
    run(items, SMALL, out, FixedScorers(), CountingPipeline)
    sleeps = next(item for item in items if item.prompt == "a dog sleeps")
    (out / "videos" / f"{sleeps.id}.mp4").unlink()
    pipe, scorers = CountingPipeline(), FixedScorers()

    run(items, SMALL, out, scorers, lambda: pipe)

    assert pipe.prompts == ["a dog sleeps"] and [prompt for prompt, _ in scorers.asked] == ["a dog sleeps"]


def test_a_rerun_with_more_metrics_computes_only_the_new_ones(tmp_path, bench):
    out = tmp_path / "results"
    items = read_items(*bench)
    run(items, SMALL, out, FixedScorers(metrics=("clip_t",)), CountingPipeline)
    scorers = FixedScorers(metrics=("clip_t", "dino_i"))

    table = run(items, SMALL, out, scorers, None)

    assert {metrics for _, metrics in scorers.asked} == {("dino_i",)}
    assert table["rows"]["ours"]["clip_t"] == 50.0 and table["rows"]["ours"]["smoothness"] is None


def test_damaged_bookkeeping_is_one_clear_message(tmp_path, bench):
    out = tmp_path / "results"
    items = read_items(*bench)[:1]
    run(items, SMALL, out, FixedScorers(), CountingPipeline)
    (out / "scores.json").write_text("{")
    with pytest.raises(S2VError, match="scores.json is damaged"):
        run(items, SMALL, out, FixedScorers(), None)


def test_an_unreadable_video_names_its_item_and_the_way_out(tmp_path, bench):
    out = tmp_path / "results"
    items = read_items(*bench)[:1]
    run(items, SMALL, out, FixedScorers(), CountingPipeline)
    (out / "videos" / f"{items[0].id}.mp4").write_bytes(b"broken")
    (out / "scores.json").unlink()
    with pytest.raises(S2VError, match=f"{items[0].id}.*Delete the file"):
        run(items, SMALL, out, FixedScorers(), None)


def test_a_finished_folder_loads_no_model(tmp_path, bench, scorers):
    out = tmp_path / "results"
    items = read_items(*bench)
    run(items, SMALL, out, scorers, CountingPipeline)

    def fail():
        raise AssertionError("the pipeline was loaded")

    run(items, SMALL, out, scorers, fail)


def test_videos_of_another_protocol_are_never_mixed_in(tmp_path, bench, scorers):
    out = tmp_path / "results"
    items = read_items(*bench)[:1]
    run(items, SMALL, out, scorers, CountingPipeline)
    with pytest.raises(S2VError, match="steps 2 -> 3"):
        run(items, Protocol(**{**SMALL.__dict__, "steps": 3}), out, scorers, CountingPipeline)


def test_score_only_names_the_missing_videos(tmp_path, bench, scorers):
    with pytest.raises(S2VError, match="3 of 3 videos"):
        run(read_items(*bench), SMALL, tmp_path / "results", scorers, None)


def test_another_clip_checkpoint_is_flagged_as_not_comparable():
    flagged = MetricModels(clip="my/clip").not_comparable()
    assert set(flagged) == {"smoothness", "clip_t", "clip_i"}


def test_local_copies_named_like_the_papers_checkpoints_are_comparable():
    local = MetricModels(
        clip="./clip-vit-base-patch32", dino="/m/dino-vits16", raft_weights="raft_large_C_T_V1-22a6c225.pth"
    )
    assert set(local.not_comparable()) == {"smoothness"}
    assert set(MetricModels(raft_weights="my_raft.pth").not_comparable()) == {"smoothness", "dynamic"}


def test_the_cli_scores_clip_and_dino_without_a_flow_model(tmp_path, bench, metric_folders, capsys):
    subjects, prompts = bench
    clip, dino = metric_folders
    out = tmp_path / "results"
    flags = ["--preset", "tiny", "--height", "32", "--width", "48", "--frames", "9", "--steps", "2"]
    metrics = ["--metrics", "clip-t,clip-i,dino-i", "--clip-model", clip, "--dino-model", dino]
    code, stdout, _ = run_cli(
        capsys, "eval", "--subjects", subjects, "--prompts", prompts, "--out", out, *flags, *metrics
    )

    assert code == 0, stdout
    assert "| **ours** (3 videos) | n/a | n/a |" in stdout
    assert (out / "per_video.csv").read_text().startswith("id,subject,image,prompt,clip_t,clip_i,dino_i\n")


def test_the_cli_refuses_an_unknown_metric_before_generating(tmp_path, bench, capsys):
    subjects, prompts = bench
    code, _, stderr = run_cli(
        capsys, "eval", "--subjects", subjects, "--prompts", prompts, "--out", tmp_path / "r", "--metrics", "fvd"
    )
    assert code == 2 and "unknown metrics fvd" in stderr and not (tmp_path / "r").exists()


def test_reference_frames_are_the_subject_on_white_as_the_model_saw_it(tmp_path, bench, scorers, subject_array):
    subjects, prompts = bench
    Image.fromarray(subject_array[:, :40]).save(subjects / "dog.jpg")  # square: white bands left and right
    out = tmp_path / "results"
    run(read_items(subjects, prompts)[:1], SMALL, out, scorers, CountingPipeline)
    reference = np.asarray(Image.open(out / "references" / "dog.png"))
    assert reference.shape == (32, 48, 3) and (reference[:, 0] == 255).all()
