"""The Gradio app on the tiny preset: API, concurrency, errors, and a real browser."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from s2v import prepare_subject

EXAMPLE = Path(app.EXAMPLES) / "chelsea.png"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
"""Screenshots land here (git ignores it) for a person or CI to look at."""
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StepCounter:
    """Counts transformer calls (one per denoising step) and can slow each one down."""

    def __init__(self, transformer):
        self.calls, self.delay = 0, 0.0
        transformer.register_forward_pre_hook(self.step)

    def step(self, module, args):
        self.calls += 1
        time.sleep(self.delay)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on 127.0.0.1 with the tiny preset, launched once for this module."""
    model = app.load_model(app.parse_args(["--preset", "tiny"]))
    counter = StepCounter(model.pipe.transformer)
    demo = app.build_demo(model, output_dir=tmp_path_factory.mktemp("videos"))
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, max_file_size=app.MAX_UPLOAD
    )
    yield f"http://127.0.0.1:{port}/", model, counter
    demo.close()


def generate_args(prompt="a cat surfing", steps=2, frames=9, resolution="64x96", seed=0, random_seed=False):
    return [handle_file(str(EXAMPLE)), prompt, "", False, steps, 6, False, frames, 8, resolution, seed, random_seed]


def mp4_facts(path) -> tuple[int, tuple[int, int], str]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return sum(1 for _ in reader), tuple(meta["size"]), meta["codec"]


def test_api_generate_returns_an_mp4_with_the_requested_frames(served):
    url, _, _ = served
    video, settings, status, seed = Client(url, verbose=False).predict(
        *generate_args(frames=17, resolution="96x64", seed=0), api_name="/generate"
    )
    assert mp4_facts(video) == (17, (64, 96), "h264")
    assert "**Seed** 0" in settings and seed == 0
    assert "Last run" in status and "cpu" in status


def test_random_seed_reports_the_seed_used_and_it_reproduces(served):
    client = Client(served[0], verbose=False)
    first, _, _, seed = client.predict(*generate_args(seed=5, random_seed=True), api_name="/generate")
    again, _, _, same = client.predict(*generate_args(seed=seed, random_seed=False), api_name="/generate")
    assert same == seed
    frames = [
        np.stack(list(imageio_ffmpeg.read_frames(str(path), output_params=["-f", "rawvideo"]))[1:])
        for path in (first, again)
    ]
    assert frames[0].tobytes() == frames[1].tobytes()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"prompt": ""}, "Write a prompt"),
        ({"resolution": "64 by 96"}, "not in the list of choices"),
        ({"seed": -3}, "less than minimum value 0"),
        ({"seed": None}, "Enter a seed, or tick Random seed"),
        ({"frames": 12}, "not in the list of choices"),
    ],
)
def test_bad_inputs_come_back_as_clear_errors(served, override, message):
    with pytest.raises(AppError, match=message):
        Client(served[0], verbose=False).predict(*generate_args(**override), api_name="/generate")


def test_uploads_over_the_size_limit_are_refused(served, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (2200, 2200, 3), dtype=np.uint8)
    big = tmp_path / "big.png"
    Image.fromarray(noise).save(big, compress_level=0)
    assert big.stat().st_size > 10_000_000
    arguments = generate_args()
    arguments[0] = handle_file(str(big))
    with pytest.raises(ValueError, match="exceeds the maximum file size of 10485760 bytes"):
        Client(served[0], verbose=False).predict(*arguments, api_name="/generate")


def test_an_internal_failure_shows_a_plain_message_not_a_traceback(served, monkeypatch):
    url, model, _ = served

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory deep inside a library")

    monkeypatch.setattr(model.pipe.transformer, "forward", broken)
    with pytest.raises(AppError) as error:
        Client(url, verbose=False).predict(*generate_args(), api_name="/generate")
    assert "Something went wrong" in str(error.value)
    assert "Traceback" not in str(error.value) and "CUDA" not in str(error.value)


def test_concurrent_clients_are_all_served_in_order(served):
    url = served[0]
    finished, errors = [], []

    def request(index):
        try:
            Client(url, verbose=False).predict(*generate_args(seed=index), api_name="/generate")
            finished.append(index)
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = []
    for index in range(4):
        threads.append(threading.Thread(target=request, args=(index,)))
        threads[-1].start()
        time.sleep(0.5)  # join the queue in a known order
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and finished == [0, 1, 2, 3]


def test_preview_is_exactly_what_the_pipeline_prepares(tmp_path):
    model = app.Model(None, app.PRESETS["tiny"], app.LoadSettings(), "tiny")
    demo = app.build_demo(model, output_dir=tmp_path)
    preview = next(fn for fn in demo.fns.values() if fn.name == "preview").fn
    shown = preview(str(EXAMPLE), "96x64", False)
    expected = prepare_subject(str(EXAMPLE), 64, 96)
    assert shown.size == (64, 96) and np.array_equal(np.asarray(shown), np.asarray(expected))


def test_without_the_method_lora_generation_is_off_and_says_where_to_get_it():
    model = app.load_model(app.parse_args(["--preset", "cogvideox-5b"]))
    assert model.pipe is None and "carpedkm/disentangled-subject-to-vid" in model.unavailable


def test_on_spaces_generation_asks_zero_gpu_for_time_from_steps_and_frames(tmp_path, monkeypatch):
    durations = []

    class FakeSpaces:
        @staticmethod
        def GPU(duration):  # noqa: N802 - the spaces package's name
            durations.append(duration)
            return lambda fn: fn

    monkeypatch.setattr(app, "spaces", FakeSpaces)
    app.build_demo(app.Model(None, app.PRESETS["tiny"], app.LoadSettings(), "tiny"), output_dir=tmp_path)
    (duration,) = durations
    inputs = ["cat.png", "a cat", "", False, 50, 6.0, False, 49, 8, "64x96", 0, True]
    assert duration(*inputs) == app.gpu_seconds(50, 49)


def test_old_videos_are_pruned_and_new_ones_kept(tmp_path):
    old, new = tmp_path / "old.mp4", tmp_path / "new.mp4"
    old.write_bytes(b"old")
    new.write_bytes(b"new")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    app.prune(tmp_path)
    assert not old.exists() and new.exists()


def test_zero_gpu_duration_covers_a_full_run():
    assert app.gpu_seconds(50, 49) > 60  # ZeroGPU's default would cut a 50-step video short
    assert app.gpu_seconds(10, 9) < app.gpu_seconds(50, 9) < app.gpu_seconds(50, 49)


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (.ci/run installs it)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.goto(served[0])
    page.wait_for_selector("#generate")
    yield page
    context.close()


def fill_form(page, prompt: str, steps: int) -> None:
    page.set_input_files("#subject input[type=file]", str(EXAMPLE))
    page.wait_for_selector("#seen img")  # the preview came back from prepare_subject
    page.fill("#prompt textarea", prompt)
    page.get_by_text("Generation settings").click()
    page.fill("#steps input[type=number]", str(steps))
    page.press("#steps input[type=number]", "Enter")


def video_ready_state(page, previous_src: str | None = None) -> tuple[int, str]:
    page.wait_for_function(
        "prev => { const v = document.querySelector('#video video'); return v && v.src && v.src !== prev"
        " && v.readyState >= 2; }",
        arg=previous_src,
        timeout=60_000,
    )
    return page.evaluate("() => { const v = document.querySelector('#video video'); return [v.readyState, v.src]; }")


def test_browser_upload_prompt_generate_and_play(page, tmp_path):
    fill_form(page, "a cat surfing a wave", steps=2)
    page.click("#generate")
    ready, src = video_ready_state(page)
    assert ready >= 2
    served_video = tmp_path / "served.mp4"
    urllib.request.urlretrieve(src, served_video)
    assert mp4_facts(served_video)[0] == app.PRESETS["tiny"].num_frames
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
    assert Image.open(ARTIFACTS / "app.png").size[0] == 1280


def test_browser_cancel_stops_denoising_and_the_next_run_starts_promptly(page, served):
    _, _, counter = served
    fill_form(page, "a cat surfing a wave", steps=200)
    counter.calls, counter.delay = 0, 0.05
    page.click("#generate")
    page.wait_for_function("() => document.body.innerText.includes('Denoising step')", timeout=30_000)
    page.click("#cancel")
    page.wait_for_function(
        "() => document.querySelector('#run-settings').innerText.includes('Cancelled')", timeout=30_000
    )
    assert 0 < counter.calls < 200
    counter.delay = 0.0

    page.fill("#steps input[type=number]", "2")
    page.press("#steps input[type=number]", "Enter")
    started = time.perf_counter()
    page.click("#generate")
    ready, _ = video_ready_state(page)
    assert ready >= 2 and time.perf_counter() - started < 30
