"""`python -m s2v eval`: subjects x prompts, resumable generation, per-video scores and the table."""

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

SMALL = Protocol(model="tiny", lora=None, steps=2, guidance=6.0, seed=42, height=32, width=48, num_frames=9, fps=8)


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
    assert [(item.id, item.prompt) for item in items] == [
        ("dog-00", "a dog runs on the beach"),
        ("dog-01", "a dog sleeps"),
        ("red_toy-00", "a toy runs on the beach"),
    ]


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


def test_a_class_placeholder_without_a_class_name_is_refused(bench):
    subjects, prompts = bench
    (subjects / "classes.json").unlink()
    with pytest.raises(S2VError, match="no class for dog"):
        read_items(subjects, prompts)


def test_a_run_writes_videos_scores_and_the_table_beside_the_papers(tmp_path, bench, scorers):
    out = tmp_path / "results"
    pipe = CountingPipeline()
    table = run(read_items(*bench), SMALL, out, scorers, lambda: pipe)

    assert sorted(path.name for path in (out / "videos").iterdir()) == ["dog-00.mp4", "dog-01.mp4", "red_toy-00.mp4"]
    assert pipe.prompts == ["a dog runs on the beach", "a dog sleeps", "a toy runs on the beach"]
    per_video = (out / "per_video.csv").read_text().splitlines()
    assert per_video[0] == "id,subject,image,prompt,smoothness,dynamic,clip_t,clip_i,dino_i" and len(per_video) == 4
    ours = table["rows"]["ours"]
    assert 0 <= ours["smoothness"] <= 100 and ours["dynamic"] in (0.0, 100 / 3, 200 / 3, 100.0)
    assert -100 <= ours["clip_i"] <= 100 and -100 <= ours["dino_i"] <= 100
    markdown = (out / "table.md").read_text()
    assert "| paper (2504.17816) | 98.72 | 60.19 | 32.24 | 73.70 | 59.29 |" in markdown
    assert "motion smooth. †" in markdown and "not VBench's AMT-S" in markdown
    assert "openai/clip-vit-base-patch32" in json.loads((out / "table.json").read_text())["checkpoints"]["clip"]
    assert (out / "table.csv").read_text().startswith("method,smoothness,dynamic,clip_t,clip_i,dino_i\n")


def test_a_rerun_regenerates_only_missing_videos_and_keeps_earlier_scores(tmp_path, bench, scorers):
    out = tmp_path / "results"
    items = read_items(*bench)
    run(items, SMALL, out, scorers, CountingPipeline)
    first = json.loads((out / "scores.json").read_text())["rows"]
    (out / "videos" / "dog-01.mp4").unlink()
    del first["dog-01"]
    pipe = CountingPipeline()

    run(items, SMALL, out, scorers, lambda: pipe)

    assert pipe.prompts == ["a dog sleeps"]
    again = json.loads((out / "scores.json").read_text())["rows"]
    assert {key: again[key] for key in first} == first


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
