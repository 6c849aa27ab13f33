"""The Gradio app on the tiny preset: API, concurrency, errors, and a real browser."""

from __future__ import annotations

import inspect
import math
import os
import re
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import imageio_ffmpeg
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageFile
from raw_client import RawSession, error_text

import app
from s2v import LoadSettings, S2VError, load_pipeline, prepare_subject
from s2v.loading import model_missing_its_lora

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
def started_as_the_app_starts():
    """`app.configure_process()` as `python app.py` runs it (heartbeat shortened for tests), undone afterwards."""
    pixels, heartbeat = Image.MAX_IMAGE_PIXELS, os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "0.5"
    app.configure_process()
    yield
    Image.MAX_IMAGE_PIXELS = pixels
    if heartbeat is None:
        del os.environ["GRADIO_HEARTBEAT_INTERVAL"]
    else:
        os.environ["GRADIO_HEARTBEAT_INTERVAL"] = heartbeat


@pytest.fixture(scope="module")
def served(tmp_path_factory, started_as_the_app_starts):
    """The app on 127.0.0.1 with the tiny preset, launched once for this module."""
    model = app.load_model(app.parse_args(["--preset", "tiny"]))
    counter = StepCounter(model.pipe.transformer)
    demo = app.build_demo(model, output_dir=tmp_path_factory.mktemp("videos"))
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, max_file_size=app.MAX_UPLOAD
    )
    yield f"http://127.0.0.1:{port}/", model, counter, handlers_of(demo)
    demo.close()


def handlers_of(demo) -> app.Handlers:
    return next(fn.fn for fn in demo.fns.values() if fn.name == "generate").__self__


def generate_args(prompt="a cat surfing", steps=2, frames=9, resolution="64x96", seed=0, random_seed=False):
    return [handle_file(str(EXAMPLE)), prompt, "", False, steps, 6, False, frames, 8, resolution, seed, random_seed]


def mp4_facts(path) -> tuple[int, tuple[int, int], str]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return sum(1 for _ in reader), tuple(meta["size"]), meta["codec"]


def test_api_generate_returns_an_mp4_with_the_requested_frames(served):
    url, _, _, _ = served
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
        ({"seed": -3}, "Seed must be a whole number from 0"),
        ({"seed": None}, "Enter a seed, or tick Random seed"),
        ({"frames": 12}, "Frames must be one of 9, 17"),
    ],
)
def test_bad_inputs_come_back_as_clear_errors(served, override, message):
    with pytest.raises(AppError, match=message):
        Client(served[0], verbose=False).predict(*generate_args(**override), api_name="/generate")


def named_fields(subject, **override) -> dict:
    """The /generate inputs by name, in page order."""
    fields = dict(subject=subject, prompt="a cat surfing", negative_prompt="", remove_background=False, steps=2)
    fields.update(guidance=6, dynamic_cfg=False, frames=9, fps=8, resolution="64x96", seed=0, random_seed=False)
    return fields | {"quality": app.FULL} | override


def raw_fields(upload: dict, **override) -> list:
    """The /generate inputs in page order, as a raw client sends them (NaN and Infinity included)."""
    return list(named_fields(upload, **override).values())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"steps": math.nan}, "Denoising steps must be a whole number from 1 to 200, not nan"),
        ({"steps": 0}, "Denoising steps must be .*not 0"),
        ({"steps": 1e9}, "Denoising steps must be"),
        ({"steps": 2.5}, "Denoising steps must be a whole number"),
        ({"fps": math.nan}, "Frames per second must be .*not nan"),
        ({"fps": 0}, "Frames per second must be .*not 0"),
        ({"fps": -8}, "Frames per second must be"),
        ({"guidance": math.inf}, "Guidance must be a number from 0.0 to 15.0, not inf"),
        ({"guidance": -1}, "Guidance must be"),
        ({"seed": math.nan}, "Seed must be a whole number .*not nan"),
        ({"seed": 1.5}, "Seed must be a whole number"),
        ({"seed": "7"}, "Seed must be a whole number"),
        ({"frames": 0}, "Frames must be one of 9, 17"),
        ({"frames": math.nan}, "Frames must be one of"),
        ({"frames": "\u00b2"}, "Frames must be one of"),
        ({"guidance": 10**400}, "Guidance must be a number"),
        ({"seed": 10**400}, "Seed must be a whole number .*not a number of more than 40 digits"),
        ({"remove_background": "false"}, "Remove background must be true or false"),
        ({"resolution": None}, "Size must be one of 64x96"),
    ],
)
def test_every_bad_number_from_a_raw_client_names_its_field_before_any_work(served, override, message):
    url, _, counter, _ = served
    session = RawSession(url, heartbeat=False)
    before = counter.calls
    reply = session.call("generate", raw_fields(session.upload(EXAMPLE), **override))
    assert reply["success"] is False and re.search(message, error_text(reply))
    assert "Traceback" not in error_text(reply) and counter.calls == before


def test_a_zero_seed_and_zero_guidance_are_used_as_given(served):
    video, settings, _, seed = Client(served[0], verbose=False).predict(
        *generate_args(seed=0)[:5], 0, *generate_args(seed=0)[6:], api_name="/generate"
    )
    assert seed == 0 and "**Seed** 0" in settings and "**Guidance** 0 " in settings and Path(video).is_file()


def test_the_api_needs_only_the_subject_and_the_prompt(served):
    client = Client(served[0], verbose=False)
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
    required = [p["parameter_name"] for p in parameters if not p["parameter_has_default"]]
    assert required == ["subject", "prompt"]
    video, settings, _, _ = client.predict(handle_file(str(EXAMPLE)), "a cat", api_name="/generate")
    preset = app.PRESETS["tiny"]
    assert mp4_facts(video)[0] == preset.num_frames and f"**Steps** {preset.num_inference_steps}" in settings


def test_the_api_keeps_the_parameter_names_and_order_the_readme_documents(served):
    client = Client(served[0], verbose=False)
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == list(named_fields(None))


PAGE_LABELS = dict(
    subject="Subject photo",
    prompt="Prompt",
    negative_prompt="Negative prompt",
    remove_background="Remove background (rembg)",
    steps="Denoising steps",
    guidance="Guidance",
    dynamic_cfg="Dynamic guidance (cosine schedule)",
    frames="Frames",
    fps="Frames per second",
    resolution="Size (height x width)",
    seed="Seed",
    random_seed="Random seed",
    quality="Quality",
)
"""The component each handler parameter should read, by the label a visitor sees on it."""


@pytest.mark.parametrize("event", ["generate", "preview"])
def test_each_handler_parameter_is_fed_by_the_component_labelled_for_it(tmp_path, event):
    model = app.Model(None, app.PRESETS["tiny"], app.LoadSettings(), "tiny")
    demo = app.build_demo(model, output_dir=tmp_path)
    wired = [fn for fn in demo.fns.values() if fn.name == event]
    assert wired
    for fn in wired:
        parameters = [name for name in inspect.signature(fn.fn).parameters if name not in ("request", "progress")]
        assert [component.label for component in fn.inputs] == [PAGE_LABELS[name] for name in parameters]


def test_the_rest_route_around_the_queue_is_closed(served):
    response = httpx.post(served[0] + "gradio_api/run/generate", json={"data": generate_args()}, timeout=30)
    assert response.status_code == 404 and "join the queue" in response.text


def frames_of(path) -> bytes:
    return b"".join(list(imageio_ffmpeg.read_frames(str(path), output_params=["-f", "rawvideo"]))[1:])


def test_videos_made_beside_other_requests_equal_the_same_videos_made_alone(served):
    url = served[0]
    solo = frames_of(Client(url, verbose=False).predict(*generate_args(steps=20, seed=11), api_name="/generate")[0])
    results, threads = {}, []

    def request(name, steps, seed):
        results[name] = Client(url, verbose=False).predict(*generate_args(steps=steps, seed=seed), api_name="/generate")

    def rest():
        results["rest"] = httpx.post(url + "gradio_api/run/generate", json={"data": generate_args()}, timeout=30)

    for target, args in ((request, ("short", 3, 5)), (request, ("long", 20, 11)), (rest, ()), (request, ("b", 3, 7))):
        threads.append(threading.Thread(target=target, args=args))
        threads[-1].start()
    for thread in threads:
        thread.join(timeout=120)
    assert frames_of(results["long"][0]) == solo
    assert results["rest"].status_code == 404


def test_a_client_cancel_stops_denoising_and_frees_the_model(served):
    url, model, counter, handlers = served
    counter.calls, counter.delay = 0, 0.05
    try:
        job = Client(url, verbose=False).submit(*generate_args(steps=200), api_name="/generate")
        wait_for(lambda: counter.calls >= 3)
        job.cancel()
        wait_for(lambda: not model.pipe._run_lock.locked())
        stopped_at = counter.calls
        time.sleep(0.5)
        assert counter.calls == stopped_at < 200
    finally:
        counter.delay = 0.0
    assert mp4_facts(Client(url, verbose=False).predict(*generate_args(), api_name="/generate")[0])[0] == 9


def test_a_client_that_disconnects_mid_run_stops_its_run_and_leaves_no_state(served):
    url, model, counter, handlers = served
    counter.calls, counter.delay = 0, 0.05
    try:
        session = RawSession(url)
        assert session.join("generate", raw_fields(session.upload(EXAMPLE), steps=200)).status_code == 200
        messages = session.messages()
        wait_for(lambda: counter.calls >= 3)
        messages.close()
        session.leave()
        wait_for(lambda: not model.pipe._run_lock.locked(), timeout=20)
        stopped_at = counter.calls
        time.sleep(0.5)
        assert counter.calls == stopped_at < 200 and len(handlers.runs) == 0
    finally:
        counter.delay = 0.0


def test_run_state_lasts_only_as_long_as_the_run():
    runs = app.ActiveRuns()
    with runs.run("a") as first, runs.run("b") as other:
        assert len(runs) == 2
        runs.stop("a")
        assert first.is_set() and not other.is_set()
    assert len(runs) == 0
    runs.stop("gone")  # a session that ends with nothing running
    assert len(runs) == 0


@pytest.mark.parametrize("name", ["notes.png", "drawing.svg", "empty.png"])
def test_an_upload_that_is_no_image_gets_a_message_without_server_paths(served, tmp_path, name):
    upload = tmp_path / name
    upload.write_bytes(b"" if name == "empty.png" else b"<svg>not quite</svg> or plain text")
    arguments = generate_args()
    arguments[0] = handle_file(str(upload))
    with pytest.raises(AppError) as error:
        Client(served[0], verbose=False).predict(*arguments, api_name="/generate")
    assert re.search("not an image|empty", str(error.value)) and "/tmp" not in str(error.value)


def test_on_zero_gpu_the_task_crosses_to_its_worker_by_pickle(tmp_path, monkeypatch):
    """ZeroGPU pickles a task's arguments into a forked worker: a pipeline, an Event or a Progress would fail."""
    import pickle

    tasks = []

    class FakeSpaces:
        @staticmethod
        def GPU(duration):  # noqa: N802 - the spaces package's name
            def wrap(task):
                tasks.append(task)
                return lambda *args: task(*pickle.loads(pickle.dumps(args)))

            return wrap

    monkeypatch.setattr(app, "spaces", FakeSpaces)
    model = app.load_model(app.parse_args(["--preset", "tiny"]))
    handlers = handlers_of(app.build_demo(model, output_dir=tmp_path))
    job = app.check_job(model, **named_fields(str(EXAMPLE), prompt="a cat"))
    path, seed = handlers.zero_gpu_task(job, tmp_path)
    assert tasks == [app.render_on_zero_gpu] and seed == 0 and mp4_facts(path)[0] == 9


def test_a_fast_preview_runs_the_presets_preview_steps_and_cache_from_the_same_seed(served):
    url, model, counter, _ = served
    client = Client(url, verbose=False)
    preset = model.preset
    counter.calls = 0
    video, settings, _, seed = client.predict(*generate_args(), quality=app.PREVIEW, api_name="/generate")
    assert counter.calls == preset.preview_steps < preset.num_inference_steps and seed == 0
    assert "Fast preview" in settings and f"{preset.preview_steps} steps" in settings and mp4_facts(video)[0] == 9
    job = app.check_job(model, **named_fields(str(EXAMPLE), quality=app.PREVIEW))
    assert (job.steps, job.cache, job.seed) == (preset.preview_steps, preset.preview_cache, 0)
    with pytest.raises(S2VError, match="Quality must be"):
        app.check_job(model, **named_fields(str(EXAMPLE), quality="draft"))


def test_a_huge_image_is_refused_from_its_header_without_decoding_its_pixels(served, tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (12_000, 12_000)).save(bomb)  # 144 MP in a small file
    assert bomb.stat().st_size < 1_000_000
    decoded = []
    real_load = ImageFile.ImageFile.load

    def load(image):
        decoded.append(image.size)
        return real_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    arguments = generate_args()
    arguments[0] = handle_file(str(bomb))
    with pytest.raises(AppError, match="more pixels than the 40 MP s2v accepts"):
        Client(served[0], verbose=False).predict(*arguments, api_name="/generate")
    assert (12_000, 12_000) not in decoded


def test_a_large_image_under_the_bomb_limit_is_refused_by_s2v_before_decoding(served, tmp_path, monkeypatch):
    large = tmp_path / "large.png"
    Image.new("L", (7_000, 7_000)).save(large)  # 49 MP: past s2v's 40, short of PIL's error at twice that
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda image: decoded.append(image.size) or real_load(image))
    arguments = generate_args()
    arguments[0] = handle_file(str(large))
    with pytest.raises(AppError, match="decompression bomb|40 MP"):
        Client(served[0], verbose=False).predict(*arguments, api_name="/generate")
    assert (7_000, 7_000) not in decoded


def test_a_transparent_subject_reaches_the_model_on_white(served, tmp_path, monkeypatch):
    url, model, _, _ = served
    cutout = np.zeros((40, 60, 4), dtype=np.uint8)
    cutout[10:30, 20:40] = (220, 30, 30, 255)
    path = tmp_path / "cutout.png"
    Image.fromarray(cutout, "RGBA").save(path)
    seen = []
    real_encode = model.pipe.encode_reference
    monkeypatch.setattr(
        model.pipe,
        "encode_reference",
        lambda subject, generator: seen.append(subject) or real_encode(subject, generator),
    )
    arguments = generate_args()
    arguments[0] = handle_file(str(path))
    Client(url, verbose=False).predict(*arguments, api_name="/generate")
    pixels = np.asarray(seen[0])
    assert tuple(pixels[0, 0]) == (255, 255, 255) and tuple(pixels[32, 48]) == (220, 30, 30)


def test_a_prompt_over_the_token_limit_is_not_echoed_back_whole(served):
    long_prompt = " ".join(["a cat surfing a wave at sunset"] * 200)
    session = RawSession(served[0], heartbeat=False)
    reply = session.call("generate", raw_fields(session.upload(EXAMPLE), prompt=long_prompt))
    (warning,) = [log for log in reply["logs"] if "longer than" in log]
    assert reply["success"] is True and len(warning) < 200 and "are ignored, from" in warning


def test_videos_are_stored_once_pruned_after_any_request_and_their_folder_removed_at_exit(
    served, started_as_the_app_starts, monkeypatch
):
    model, cleanups = served[1], []
    monkeypatch.setattr(app.atexit, "register", lambda *call: cleanups.append(call))
    demo = app.build_demo(model)  # the app's own folder, inside Gradio's cache
    folder = handlers_of(demo).output_dir
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        session = RawSession(f"http://127.0.0.1:{port}/", heartbeat=False)
        upload = session.upload(EXAMPLE)
        served_path = Path(session.call("generate", raw_fields(upload))["output"]["data"][0]["path"])
        assert served_path.parent == folder  # served from where it was written: no second copy
        copies = [p for p in Path(app.gr.Video().GRADIO_CACHE).rglob("*.mp4") if p.name == served_path.name]
        assert copies == [served_path]
        old = folder / "old.mp4"
        old.write_bytes(b"an hour-old video")
        os.utime(old, (time.time() - 2 * app.VIDEO_MAX_AGE,) * 2)
        assert session.call("generate", raw_fields(upload, steps=0))["success"] is False
        assert not old.exists() and served_path.exists()
    finally:
        demo.close()
    for function, *arguments in cleanups:
        function(*arguments)
    assert not folder.exists()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


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
    url, model, _, _ = served

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


def test_s2v_names_the_model_that_needs_the_missing_lora_and_refuses_to_load_it():
    assert model_missing_its_lora(LoadSettings(preset="cogvideox-5b")) == app.PRESETS["cogvideox-5b"].model
    assert model_missing_its_lora(LoadSettings(preset="cogvideox-5b", lora="authors.safetensors")) is None
    assert model_missing_its_lora(LoadSettings(preset="tiny")) is None
    assert model_missing_its_lora(LoadSettings(preset="nano")) is None
    with pytest.raises(S2VError, match="Without the method's LoRA, THUDM/CogVideoX-5b ignores the subject"):
        load_pipeline(LoadSettings(preset="cogvideox-5b"))


def test_on_spaces_generation_asks_zero_gpu_for_time_from_steps_and_frames(tmp_path, monkeypatch):
    durations = []

    class FakeSpaces:
        @staticmethod
        def GPU(duration):  # noqa: N802 - the spaces package's name
            durations.append(duration)
            return lambda fn: fn

    monkeypatch.setattr(app, "spaces", FakeSpaces)
    model = app.Model(None, app.PRESETS["tiny"], app.LoadSettings(), "tiny")
    app.build_demo(model, output_dir=tmp_path)
    (duration,) = durations
    job = app.Job("cat.png", "a cat", "", False, 50, 6.0, False, 49, 8, 64, 96, 0)
    assert duration(job, tmp_path) == app.gpu_seconds(50, 49)


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
    _, _, counter, _ = served
    fill_form(page, "a cat surfing a wave", steps=200)
    counter.calls, counter.delay = 0, 0.05
    page.click("#generate")
    wait_for(lambda: counter.calls >= 2)  # denoising has begun
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
