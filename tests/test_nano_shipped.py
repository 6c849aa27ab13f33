"""The shipped s2v-nano model (`assets/nano`) on held-out subjects: a regression check against measured floors.

Measured on these 48 items (6 held-out subjects x 8 identity-free prompts, 25 steps, CFG 3) when the
weights (switched, p = 0.4) were shipped: with the reference, colour 95.8% and motion 66.7%; without it,
colour 8.3% and motion 35.4%. The floors sit well below those and well above chance (colour 1/6, motion
1/8); the p = 0.2 run scored colour 75.0% and motion 47.9% here, under them. Shape and pattern do not
transfer yet (at chance; see the README), so no floor is set on them or on full identity."""

from __future__ import annotations

import pytest

from s2v import LoadSettings, load_pipeline
from s2v.presets import NANO_FOLDER
from s2v_nano.evaluate import CHANCE, EvalSettings, evaluate

FLOORS = dict(colour=80.0, colour_over_no_reference=60.0, motion=50.0, scene=90.0)


@pytest.fixture(scope="module")
def report():
    if not (NANO_FOLDER / "base" / "model_index.json").is_file():
        pytest.fail(f"{NANO_FOLDER} holds no shipped nano model; build it with `s2v-nano build --ship`")
    pipe = load_pipeline(LoadSettings(preset="nano"))
    pipe.set_progress_bar_config(disable=True)
    return evaluate(pipe, EvalSettings(limit=48, conditions=("reference", "none")), progress=False)


def test_the_reference_gives_held_out_subjects_their_colour(report):
    given, without = report.scores["reference"], report.scores["none"]
    assert given.attributes["colour"] >= FLOORS["colour"], report.table()
    assert given.attributes["colour"] - without.attributes["colour"] >= FLOORS["colour_over_no_reference"], (
        report.table()
    )


def test_videos_follow_the_prompted_motion_and_scene(report):
    given = report.scores["reference"]
    assert given.motion >= FLOORS["motion"] > CHANCE["motion"], report.table()
    assert given.scene >= FLOORS["scene"], report.table()
