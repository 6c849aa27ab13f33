"""Tests for s2v_train.data: Subjects200K and JSONL pairs, video clips, the sampler, the synthetic set.

All data is made here in tmp_path (tiny PNGs, parquet and 32x48 clips); nothing touches the network.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from s2v.errors import S2VError, S2VWarning
from s2v.video import save_video
from s2v_train.data import (
    SUBJECTS200K_ID,
    PairDataset,
    SkipCounter,
    UnreadableSample,
    VideoDataset,
    draw,
    resize_and_crop,
    write_synthetic_dataset,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
YELLOW = (255, 255, 0)
WHITE = (255, 255, 255)
HEIGHT, WIDTH = 32, 48


def assert_all(image: Image.Image, colour: tuple, tolerance: int = 3) -> None:
    """Every pixel within `tolerance` of `colour`: a single white (padding) pixel fails it."""
    difference = np.abs(np.asarray(image, dtype=int) - np.array(colour)).max()
    assert difference <= tolerance, f"a pixel is {difference} away from {colour}"


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# Subjects200K


def composite(left: tuple, right: tuple, half: int = 32, padding: int = 8) -> bytes:
    """A Subjects200K-style image: two `half`-pixel squares side by side, each in a white `padding` border."""
    side = half + 2 * padding
    image = Image.new("RGB", (2 * side, side), WHITE)
    image.paste(Image.new("RGB", (half, half), left), (padding, padding))
    image.paste(Image.new("RGB", (half, half), right), (side + padding, padding))
    return png_bytes(image)


def scores(structure: int, consistency: int, quality: int) -> dict:
    return {"compositeStructure": structure, "objectConsistency": consistency, "imageQuality": quality}


ROWS = [  # name, quality assessment, image bytes
    ("kept", scores(5, 5, 5), composite(RED, BLUE)),
    ("one-four", scores(5, 4, 5), composite(RED, BLUE)),
    ("unassessed", None, composite(RED, BLUE)),
    ("best", scores(9, 8, 7), composite(GREEN, YELLOW)),
    ("corrupt-dropped", scores(1, 1, 1), b"not an image"),
    ("corrupt-kept", scores(6, 6, 6), b"not an image"),
]


@pytest.fixture
def hf_cache(monkeypatch, tmp_path) -> Path:
    """datasets caches its arrow conversion here, not in the user's ~/.cache."""
    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    return cache


def write_subjects_parquet(path: Path, rows: list = ROWS) -> Path:
    descriptions = [
        {
            "item": name,
            "description_0": f"{name} left",
            "description_1": f"{name} right",
            "category": "test",
            "description_valid": True,
        }
        for name, _, _ in rows
    ]
    table = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": data, "path": None} for _, _, data in rows],
            "description": descriptions,
            "quality_assessment": [assessment for _, assessment, _ in rows],
            "collection": ["collection_1"] * len(rows),
        }
    ).cast_column("image", datasets.Image())
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(path))
    return path


@pytest.fixture
def subjects_parquet(tmp_path, hf_cache) -> Path:
    return write_subjects_parquet(tmp_path / "subjects" / "data" / "part-0.parquet")


def test_subjects200k_keeps_rows_whose_three_scores_are_all_at_least_min_quality(subjects_parquet):
    pairs = PairDataset.from_subjects200k(str(subjects_parquet), HEIGHT, WIDTH)
    assert len(pairs) == 2 * 3  # kept, best, corrupt-kept: both directions
    assert [pairs[index].caption for index in (0, 2)] == ["kept right", "best right"]
    strict = PairDataset.from_subjects200k(str(subjects_parquet), HEIGHT, WIDTH, min_quality=7)
    assert [strict[index].caption for index in range(len(strict))] == ["best right", "best left"]


def test_subjects200k_halves_are_split_inside_the_padding(subjects_parquet):
    pairs = PairDataset.from_subjects200k(str(subjects_parquet), HEIGHT, WIDTH)
    assert_all(pairs[0].reference, RED)
    assert_all(pairs[0].target, BLUE)
    assert_all(pairs[2].reference, GREEN)
    assert_all(pairs[2].target, YELLOW)


def test_subjects200k_uses_both_directions_with_the_target_halfs_caption(subjects_parquet):
    pairs = PairDataset.from_subjects200k(str(subjects_parquet), HEIGHT, WIDTH)
    forward, backward = pairs[0], pairs[1]
    assert forward.caption == "kept right" and backward.caption == "kept left"
    assert_all(backward.reference, BLUE)
    assert_all(backward.target, RED)


@pytest.mark.parametrize("height, width", [(32, 48), (48, 32), (24, 24)])
def test_subjects200k_halves_are_resized_to_the_requested_size(subjects_parquet, height, width):
    sample = PairDataset.from_subjects200k(str(subjects_parquet), height, width)[0]
    assert sample.reference.size == sample.target.size == (width, height)
    assert sample.reference.mode == sample.target.mode == "RGB"


def test_subjects200k_filtering_decodes_no_image(subjects_parquet, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded while filtering")

    with monkeypatch.context() as patch:
        patch.setattr(Image, "open", refuse)
        pairs = PairDataset.from_subjects200k(str(subjects_parquet), HEIGHT, WIDTH)
    assert len(pairs) == 6  # the corrupt rows did not fail the construction either
    for index in (4, 5):
        with pytest.raises(UnreadableSample, match="row 5 of"):
            pairs[index]


def test_subjects200k_reads_a_file_a_folder_or_a_glob(subjects_parquet, tmp_path):
    write_subjects_parquet(tmp_path / "subjects" / "data" / "part-1.parquet", ROWS[:1])
    sources = [subjects_parquet, tmp_path / "subjects", tmp_path / "subjects" / "data" / "*.parquet"]
    assert [len(PairDataset.from_subjects200k(str(source), HEIGHT, WIDTH)) for source in sources] == [6, 8, 8]


def test_subjects200k_missing_path_says_to_download_the_parquet(tmp_path, hf_cache):
    missing = tmp_path / "nowhere" / "subjects.parquet"
    with pytest.raises(S2VError, match="local parquet folder") as error:
        PairDataset.from_subjects200k(str(missing), HEIGHT, WIDTH)
    assert str(missing) in str(error.value)


def test_subjects200k_without_any_passing_row_is_an_error(tmp_path, hf_cache):
    path = write_subjects_parquet(tmp_path / "low.parquet", ROWS[1:3])
    with pytest.raises(S2VError, match="No row .* has all three quality scores >= 5"):
        PairDataset.from_subjects200k(str(path), HEIGHT, WIDTH)


def test_subjects200k_hub_id_offline_fails_fast_with_what_to_do(monkeypatch, hf_cache):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    outcome: dict[str, BaseException] = {}

    def load() -> None:
        try:
            PairDataset.from_subjects200k(SUBJECTS200K_ID, HEIGHT, WIDTH)
        except Exception as error:
            outcome["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():
        pytest.skip("datasets went to the network despite HF_HUB_OFFLINE=1")
    error = outcome.get("error")
    assert isinstance(error, S2VError), error
    assert SUBJECTS200K_ID in str(error) and "local parquet folder" in str(error)
    assert time.monotonic() - started < 10


# JSONL pairs


@pytest.fixture
def pairs_jsonl(tmp_path) -> Path:
    """Two pairs: a relative red/blue one and an absolute green/yellow one, with blank lines between."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 40), RED).save(tmp_path / "images" / "red.png")
    Image.new("RGB", (60, 30), BLUE).save(tmp_path / "images" / "blue.png")
    Image.new("RGB", (30, 60), GREEN).save(tmp_path / "green.png")
    Image.new("RGBA", (50, 50), YELLOW + (255,)).save(tmp_path / "yellow.png")
    lines = [
        {"subject": "images/red.png", "target": "images/blue.png", "subject_caption": "red", "target_caption": "blue"},
        {"subject": str(tmp_path / "green.png"), "target": "yellow.png", "subject_caption": "g", "target_caption": "y"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n" + json.dumps(lines[0]) + "\n\n" + json.dumps(lines[1]) + "\n")
    return path


def test_jsonl_pairs_use_both_directions_with_the_target_caption(pairs_jsonl):
    pairs = PairDataset.from_jsonl(pairs_jsonl, HEIGHT, WIDTH)
    assert len(pairs) == 4
    forward, backward = pairs[0], pairs[1]
    assert_all(forward.reference, RED)
    assert_all(forward.target, BLUE)
    assert forward.caption == "blue"
    assert_all(backward.reference, BLUE)
    assert_all(backward.target, RED)
    assert backward.caption == "red"


def test_jsonl_paths_are_relative_to_the_file_or_absolute(pairs_jsonl, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path.parent)
    sample = PairDataset.from_jsonl(pairs_jsonl, HEIGHT, WIDTH)[2]
    assert_all(sample.reference, GREEN)
    assert_all(sample.target, YELLOW)
    assert sample.caption == "y" and sample.reference.size == (WIDTH, HEIGHT) and sample.target.mode == "RGB"


@pytest.mark.parametrize(
    "bad_line, message",
    [("{not json", "line 3 is not valid JSON"), ('{"subject": "a.png"}', "line 3: needs 'target'"), ("[1]", "line 3")],
)
def test_jsonl_malformed_line_is_an_error_naming_the_line(pairs_jsonl, bad_line, message):
    lines = pairs_jsonl.read_text().splitlines()
    pairs_jsonl.write_text("\n".join(lines[:2] + [bad_line] + lines[2:]) + "\n")
    with pytest.raises(S2VError, match=message):
        PairDataset.from_jsonl(pairs_jsonl, HEIGHT, WIDTH)


def test_jsonl_missing_or_corrupt_image_is_unreadable_only_when_drawn(pairs_jsonl, tmp_path):
    (tmp_path / "images" / "blue.png").unlink()
    (tmp_path / "green.png").write_bytes(os.urandom(200))
    pairs = PairDataset.from_jsonl(pairs_jsonl, HEIGHT, WIDTH)
    with pytest.raises(UnreadableSample, match="blue.png"):
        pairs[0]
    with pytest.raises(UnreadableSample, match="green.png"):
        pairs[3]


# Videos


def counting_clip(path: Path, count: int, fps: int = 24) -> Path:
    """`count` grey frames where frame i has brightness 8 * i, so a decoded frame tells its index."""
    frames = np.zeros((count, HEIGHT, WIDTH, 3), np.uint8)
    for index in range(count):
        frames[index] = 8 * index
    return save_video(frames, path, fps=fps)


def frame_indices(frames: np.ndarray) -> list[int]:
    return [round(frame.mean() / 8) for frame in frames]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A folder with a 30-frame and a 10-frame counting clip at 24 fps, and two files that are not videos."""
    folder = tmp_path_factory.mktemp("clips")
    counting_clip(folder / "a.mp4", 30)
    counting_clip(folder / "short.mp4", 10)
    (folder / "notes.txt").write_text("not a video")
    Image.new("RGB", (8, 8)).save(folder / "still.png")
    return folder


@pytest.mark.parametrize("fps, expected", [(8, [0, 3, 6, 9, 12, 15, 18, 21]), (10, [0, 2, 5, 7, 10, 12, 14, 17])])
def test_video_resamples_to_the_nearest_source_frame(clips, fps, expected):
    videos = VideoDataset.from_folder(clips, HEIGHT, WIDTH, num_frames=8, fps=fps)
    assert frame_indices(videos[0].frames) == expected


def test_video_keeps_the_first_frames_at_the_requested_size(clips):
    videos = VideoDataset.from_folder(clips, 16, 20, num_frames=5, fps=24)
    frames = videos[0].frames
    assert frames.shape == (5, 16, 20, 3) and frames.dtype == np.uint8
    assert frame_indices(frames) == [0, 1, 2, 3, 4]


def test_video_decoding_stops_once_it_has_the_frames(clips, monkeypatch):
    import imageio_ffmpeg

    read_frames, decoded = imageio_ffmpeg.read_frames, []

    def counting_reader(*args, **kwargs):
        for item in read_frames(*args, **kwargs):
            decoded.append(item)
            yield item

    monkeypatch.setattr(imageio_ffmpeg, "read_frames", counting_reader)
    VideoDataset.from_folder(clips, HEIGHT, WIDTH, num_frames=3, fps=12)[0]
    assert len(decoded) == 1 + 5  # the metadata, then source frames 0 to 4 of 30


def test_video_too_short_clip_is_unreadable(clips):
    videos = VideoDataset.from_folder(clips, HEIGHT, WIDTH, num_frames=8, fps=8)
    assert [path.name for path in videos.files] == ["a.mp4", "short.mp4"]
    with pytest.raises(UnreadableSample, match="short.mp4 is too short: has 10 frames at 24 fps, needs 22"):
        videos[1]


def test_video_corrupt_file_is_unreadable(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    videos = VideoDataset.from_folder(tmp_path, HEIGHT, WIDTH, num_frames=2, fps=8)
    with pytest.raises(UnreadableSample, match="broken.mp4: not a readable video"):
        videos[0]


def test_video_folder_lists_video_suffixes_in_any_case_sorted(clips, tmp_path):
    for name in ("c.webm", "b.MOV", "a.mp4", "notes.txt", "clip.mp4.json"):
        (tmp_path / name).write_bytes((clips / "a.mp4").read_bytes())
    videos = VideoDataset.from_folder(tmp_path, HEIGHT, WIDTH, num_frames=2, fps=8)
    assert [path.name for path in videos.files] == ["a.mp4", "b.MOV", "c.webm"]
    assert frame_indices(videos[1].frames) == [0, 3]


def test_video_folder_without_videos_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no clips here")
    with pytest.raises(S2VError, match="No .mp4/.webm/.mov files"):
        VideoDataset.from_folder(tmp_path, HEIGHT, WIDTH, num_frames=2, fps=8)


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_video_captions_are_matched_by_file_name(clips, tmp_path, kind):
    captions = tmp_path / f"captions.{kind}"
    if kind == "csv":
        captions.write_text('file,caption\nsub/a.mp4,"grey, brightening"\nother.mp4,unused\n')
    else:
        captions.write_text(json.dumps({"file": "a.mp4", "caption": "grey, brightening"}) + "\n\n")
    videos = VideoDataset.from_folder(clips, HEIGHT, WIDTH, num_frames=2, fps=8, captions=captions)
    assert videos[0].caption == "grey, brightening"
    assert videos.captions.get("short.mp4", "") == ""


def test_video_captions_without_the_columns_are_an_error(clips, tmp_path):
    captions = tmp_path / "captions.csv"
    captions.write_text("name,text\na.mp4,grey\n")
    with pytest.raises(S2VError, match="'file' and 'caption' columns"):
        VideoDataset.from_folder(clips, HEIGHT, WIDTH, num_frames=2, fps=8, captions=captions)


# draw


class FakeDataset:
    """Item i is the integer i, or an UnreadableSample for the indices in `unreadable`."""

    def __init__(self, size: int, unreadable=lambda index: False):
        self.size, self.unreadable = size, unreadable

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        if self.unreadable(index):
            raise UnreadableSample(f"item {index} is broken")
        return index


def test_draw_skips_unreadable_items_with_a_warning_and_counts_them():
    dataset, counter, rng = FakeDataset(1000, lambda index: index % 2 == 0), SkipCounter(), np.random.default_rng(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drawn = [draw(dataset, rng, counter) for _ in range(200)]
    assert all(index % 2 == 1 for index in drawn)
    assert counter.skipped == len(caught) > 50
    assert all(issubclass(warning.category, S2VWarning) for warning in caught)
    assert "is broken" in str(caught[0].message) and "\n" not in str(caught[0].message)
    assert len(counter.reasons) == 20 and counter.reasons[-1] in str(caught[-1].message)


def test_draw_raises_when_every_try_is_unreadable():
    counter = SkipCounter()
    with pytest.warns(S2VWarning), pytest.raises(S2VError, match="100 of the last 100 samples were unreadable"):
        draw(FakeDataset(10, lambda index: True), np.random.default_rng(0), counter)
    assert counter.skipped == 100


def test_draw_sequence_is_a_function_of_the_rng_state():
    dataset, counter = FakeDataset(1000, lambda index: index % 3 == 0), SkipCounter()
    rng = np.random.default_rng(42)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", S2VWarning)
        first = [draw(dataset, rng, counter) for _ in range(20)]
        state = rng.bit_generator.state
        rest = [draw(dataset, rng, counter) for _ in range(20)]
        again = np.random.default_rng(42)
        assert [draw(dataset, again, counter) for _ in range(40)] == first + rest
        resumed = np.random.default_rng()
        resumed.bit_generator.state = state
        assert [draw(dataset, resumed, counter) for _ in range(20)] == rest


def test_draw_covers_the_whole_dataset():
    rng, counter = np.random.default_rng(0), SkipCounter()
    small = [draw(FakeDataset(1000), rng, counter) for _ in range(20_000)]
    assert min(small) == 0 and max(small) == 999 and len(set(small)) == 1000
    large = {draw(FakeDataset(200_000), rng, counter) for _ in range(20_000)}
    assert len(large) > 18_000  # the release's sampler would stay within ~4K pairs


def test_skip_counter_keeps_only_the_latest_reasons():
    counter = SkipCounter()
    for index in range(30):
        counter.count(f"reason {index}")
    assert counter.skipped == 30
    assert counter.reasons == [f"reason {index}" for index in range(10, 30)]


# resize_and_crop


@pytest.mark.parametrize("size", [(100, 100), (200, 50), (37, 101), (8, 8), (48, 32)])
def test_resize_and_crop_gives_exactly_the_requested_size(size):
    assert resize_and_crop(Image.new("RGB", size), HEIGHT, WIDTH).size == (WIDTH, HEIGHT)


def test_resize_and_crop_square_half_follows_method_720_then_centre_480():
    noise = np.random.default_rng(0).integers(0, 256, (528, 528, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    expected = image.resize((720, 720), Image.Resampling.LANCZOS).crop((0, 120, 720, 600))
    assert np.array_equal(np.asarray(resize_and_crop(image, 480, 720)), np.asarray(expected))


def test_resize_and_crop_covers_and_cuts_the_sides_evenly():
    image = Image.new("RGB", (200, 100), RED)  # 2:1 into 3:2: scaled to 64x32, 8 columns cut each side
    image.paste(Image.new("RGB", (25, 100), BLUE), (0, 0))
    image.paste(Image.new("RGB", (25, 100), GREEN), (175, 0))
    result = np.asarray(resize_and_crop(image, HEIGHT, WIDTH), dtype=int)
    assert np.abs(result[:, 3:-3] - np.array(RED)).max() <= 3
    assert result[:, :, 1].mean() < 20 and result[:, :, 2].mean() < 20


# write_synthetic_dataset


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_synthetic_dataset_is_the_same_for_the_same_seed(tmp_path):
    settings = dict(num_pairs=3, num_videos=2)
    write_synthetic_dataset(tmp_path / "one", **settings, seed=3)
    write_synthetic_dataset(tmp_path / "two", **settings, seed=3)
    write_synthetic_dataset(tmp_path / "other", **settings, seed=4)
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")
    assert folder_bytes(tmp_path / "one") != folder_bytes(tmp_path / "other")


def test_synthetic_dataset_loads_in_both_dataset_classes(tmp_path):
    pairs_path, videos_folder, captions_path = write_synthetic_dataset(tmp_path)
    pairs = PairDataset.from_jsonl(pairs_path, HEIGHT, WIDTH)
    assert len(pairs) == 64
    sample = pairs[1]
    assert sample.reference.size == sample.target.size == (WIDTH, HEIGHT)
    assert sample.caption.endswith(" on white")
    assert_all(sample.target.crop((0, 0, 2, 2)), WHITE)
    videos = VideoDataset.from_folder(videos_folder, HEIGHT, WIDTH, num_frames=9, fps=8, captions=captions_path)
    assert len(videos) == 16
    clip = videos[0]
    assert clip.frames.shape == (9, HEIGHT, WIDTH, 3)
    assert " moves " in clip.caption
    assert not np.array_equal(clip.frames[0], clip.frames[-1])
