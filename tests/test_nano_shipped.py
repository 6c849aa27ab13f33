"""The shipped s2v-nano model (`assets/nano`) on held-out subjects: a regression check against measured floors.

48 items (6 held-out subjects x 8 identity-free prompts, 25 steps, CFG 3), scored by the nano analyzer.
`MEASURED` holds what the weights scored here when they were shipped (the build's switched p = 0.4 run with
subject references at the clips' size, 3,000 steps); each floor is that share minus two standard errors.
Shape and pattern do not transfer yet (at chance; see the README), so no floor is set on them or on full
identity."""

from __future__ import annotations

import pytest

from s2v import LoadSettings, load_pipeline
from s2v.presets import NANO_FOLDER
from s2v_nano.evaluate import CHANCE, EvalSettings, evaluate

MEASURED = dict(
    colour=(41, 48), motion=(40, 48), motion_strict=(34, 48), present=(42, 48), scene=(48, 48), colour_none=(4, 48)
)
"""k of n on this test's items when the weights were shipped: with the reference, and (`colour_none`) the same
prompts and seeds without one (`s2v-nano eval --limit 48 --conditions reference,none` prints them as % of 48)."""


def standard_error(k: int, n: int) -> float:
    """In %, from (k+1)/(n+2), so that k = n or k = 0 still leaves room for one miss."""
    p = (k + 1) / (n + 2)
    return 100 * (p * (1 - p) / n) ** 0.5


def floor(k: int, n: int) -> float:
    """The measured share minus two standard errors, in %: what a correct install still scores with near
    certainty."""
    return 100 * k / n - 2 * standard_error(k, n)


@pytest.fixture(scope="module")
def report():
    if not (NANO_FOLDER / "base" / "model_index.json").is_file():
        pytest.fail(f"{NANO_FOLDER} holds no shipped nano model; build it with `s2v-nano build --ship`")
    pipe = load_pipeline(LoadSettings(preset="nano"))
    pipe.set_progress_bar_config(disable=True)
    return evaluate(pipe, EvalSettings(limit=48, conditions=("reference", "none")), progress=False)


def test_the_reference_gives_held_out_subjects_their_colour_and_without_it_colour_is_near_chance(report):
    given, without = report.scores["reference"], report.scores["none"]
    assert given.attributes["colour"] >= floor(*MEASURED["colour"]) > CHANCE["colour"], report.table()
    k, n = MEASURED["colour_none"]
    assert without.attributes["colour"] <= 100 * k / n + 2 * standard_error(k, n), report.table()


def test_the_subject_stays_in_every_frame_and_follows_the_prompted_motion_and_scene(report):
    given = report.scores["reference"]
    assert given.present >= floor(*MEASURED["present"]), report.table()
    assert given.motion >= floor(*MEASURED["motion"]) > CHANCE["motion"], report.table()
    assert given.motion_strict >= floor(*MEASURED["motion_strict"]), report.table()
    assert given.scene >= floor(*MEASURED["scene"]), report.table()
