"""Tests for s2v.video: browser-playable mp4, GIF and PNG folders, written atomically.

Frames are tiny (16x32) and few, so the whole file runs in a couple of seconds.
"""

from __future__ import annotations

import gc
import os
import struct
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from s2v.errors import S2VError
from s2v.video import atomic_folder, check_output, frames_to_uint8, read_video, save_video

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
HEIGHT, WIDTH = 16, 32


def solid_frames(*colours, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    frames = np.zeros((len(colours), height, width, 3), np.uint8)
    for index, colour in enumerate(colours):
        frames[index] = colour
    return frames


def decode_mp4(path: Path) -> tuple[dict, list[np.ndarray]]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]
    return meta, frames


def top_level_boxes(path: Path) -> list[str]:
    """The types of an mp4's top-level boxes, in file order."""
    data = path.read_bytes()
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        assert size >= 8, f"broken box at byte {offset}"
        boxes.append(kind.decode("latin-1"))
        offset += size
    return boxes


def folder_listing(folder: Path) -> list[str]:
    """Every name in the folder, hidden temporary files included."""
    return sorted(entry.name for entry in folder.iterdir())


def close_to(actual, expected, tolerance: int) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, dtype=int) - np.asarray(expected, dtype=int)) <= tolerance))


# --- mp4 -------------------------------------------------------------------------------------


def test_mp4_is_h264_yuv420p_with_requested_frame_count_and_size(tmp_path):
    path = save_video(solid_frames(RED, GREEN, BLUE, WHITE, BLACK), tmp_path / "clip.mp4", fps=8)

    assert path == tmp_path / "clip.mp4"
    meta, frames = decode_mp4(path)
    assert meta["codec"] == "h264"
    assert meta["pix_fmt"].split("(")[0] == "yuv420p"
    assert tuple(meta["size"]) == (WIDTH, HEIGHT)
    assert meta["fps"] == pytest.approx(8)
    assert len(frames) == 5
    frame_count, seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert frame_count == 5
    assert seconds == pytest.approx(5 / 8, abs=0.05)


def test_mp4_index_comes_before_media_data_for_streaming(tmp_path):
    path = save_video(solid_frames(RED, BLUE, GREEN), tmp_path / "clip.mp4")

    boxes = top_level_boxes(path)

    assert "moov" in boxes and "mdat" in boxes, boxes
    assert boxes.index("moov") < boxes.index("mdat"), f"no faststart: boxes are {boxes}"


def test_mp4_keeps_frame_colours_in_order(tmp_path):
    colours = [RED, GREEN, BLUE, WHITE, BLACK]
    path = save_video(solid_frames(*colours), tmp_path / "clip.mp4")

    _, frames = decode_mp4(path)

    for index, (frame, colour) in enumerate(zip(frames, colours, strict=True)):
        mean = frame.reshape(-1, 3).mean(axis=0)
        assert close_to(mean, colour, tolerance=12), f"frame {index} is {mean}, expected {colour}"


def test_read_video_gives_back_every_frame_and_the_frame_rate(tmp_path):
    colours = [RED, GREEN, BLUE]
    frames, fps = read_video(save_video(solid_frames(*colours), tmp_path / "clip.mp4", fps=12))

    assert fps == 12 and frames.shape == (3, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert close_to(frames[1].reshape(-1, 3).mean(axis=0), GREEN, tolerance=12)


def test_read_video_of_a_broken_file_says_which_file(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(S2VError, match="broken.mp4"):
        read_video(broken)


def test_mp4_replaces_an_existing_file(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"old video")

    save_video(solid_frames(RED, BLUE), path)

    assert imageio_ffmpeg.count_frames_and_secs(str(path))[0] == 2
    assert folder_listing(tmp_path) == ["clip.mp4"]


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif"])
def test_written_file_is_world_readable_0o644(tmp_path, name):
    path = save_video(solid_frames(RED, BLUE), tmp_path / name)

    assert path.stat().st_mode & 0o777 == 0o644


# --- GIF -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fps", "duration_ms", "tolerance_ms"), [(10, 100, 0), (4, 250, 0), (8, 125, 10)])
def test_gif_has_every_frame_loops_forever_and_timing_from_fps(tmp_path, fps, duration_ms, tolerance_ms):
    colours = [RED, GREEN, BLUE, WHITE]
    path = save_video(solid_frames(*colours), tmp_path / "clip.gif", fps=fps)

    with Image.open(path) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == 4
        assert gif.size == (WIDTH, HEIGHT)
        assert gif.info["loop"] == 0, "0 means loop forever"
        for index, colour in enumerate(colours):
            gif.seek(index)
            # GIF stores centiseconds, so 125 ms can only be approximated.
            assert abs(gif.info["duration"] - duration_ms) <= tolerance_ms
            assert close_to(np.asarray(gif.convert("RGB")), colour, tolerance=0)


# --- PNG folder ------------------------------------------------------------------------------


def test_png_folder_holds_one_lossless_png_per_frame_in_order(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (3, HEIGHT, WIDTH, 3), dtype=np.uint8)

    path = save_video(frames, tmp_path / "frames")

    assert path == tmp_path / "frames" and path.is_dir()
    assert folder_listing(path) == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    for index, name in enumerate(folder_listing(path)):
        assert np.array_equal(np.asarray(Image.open(path / name).convert("RGB")), frames[index])
    assert folder_listing(tmp_path) == ["frames"], "no staging folder may be left behind"


def test_png_frames_may_go_into_an_existing_empty_folder(tmp_path):
    (tmp_path / "frames").mkdir()

    save_video(solid_frames(RED, BLUE), tmp_path / "frames")

    assert folder_listing(tmp_path / "frames") == ["frame_0000.png", "frame_0001.png"]


def test_png_frames_refuse_a_non_empty_existing_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")

    with pytest.raises(S2VError, match="already exists and is not an empty folder"):
        save_video(solid_frames(RED, BLUE), folder)

    assert folder_listing(folder) == ["keep.txt"]
    assert (folder / "keep.txt").read_text() == "mine"
    assert folder_listing(tmp_path) == ["frames"]


# --- input forms -----------------------------------------------------------------------------


def test_list_of_pil_images_in_any_mode_is_accepted(tmp_path):
    images = [
        Image.new("RGB", (WIDTH, HEIGHT), RED),
        Image.new("L", (WIDTH, HEIGHT), 77),
        Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 255, 255)),
    ]

    path = save_video(images, tmp_path / "frames")

    written = [np.asarray(Image.open(path / name).convert("RGB")) for name in folder_listing(path)]
    assert len(written) == 3
    assert close_to(written[0], RED, tolerance=0)
    assert close_to(written[1], (77, 77, 77), tolerance=0)
    assert close_to(written[2], BLUE, tolerance=0)


def test_uint8_array_is_used_as_is():
    frames = np.random.default_rng(1).integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)

    converted = frames_to_uint8(frames)

    assert converted.dtype == np.uint8
    assert np.array_equal(converted, frames)


def test_float_array_is_scaled_from_unit_range_and_clipped(tmp_path):
    frames = np.zeros((1, 2, 4, 3), np.float32)
    frames[0, :, :, 0] = [0.0, 0.5, 1.0, 1.7]
    frames[0, :, :, 1] = [-0.4, 0.2, 1.0, 0.0]

    path = save_video(frames, tmp_path / "frames")

    written = np.asarray(Image.open(path / "frame_0000.png").convert("RGB")).astype(int)
    assert written[0, :, 0].tolist() == [0, 128, 255, 255]
    assert written[0, :, 1].tolist() == [0, 51, 255, 0]


# --- bad requests ----------------------------------------------------------------------------


def test_unknown_extension_is_refused_before_writing_anything(tmp_path):
    with pytest.raises(S2VError, match=r"clip\.avi.*\.mp4 or \.gif"):
        save_video(solid_frames(RED, BLUE), tmp_path / "clip.avi")

    assert folder_listing(tmp_path) == []


def test_unknown_extension_does_not_create_the_parent_folder(tmp_path):
    """A refused name is refused before anything is created on disk."""
    with pytest.raises(S2VError, match=r"\.mp4 or \.gif"):
        save_video(solid_frames(RED, BLUE), tmp_path / "new_folder" / "clip.avi")

    assert folder_listing(tmp_path) == [], "a refused request must not create folders"


@pytest.mark.parametrize(("height", "width"), [(15, 32), (16, 31), (15, 31)])
def test_mp4_with_odd_frame_size_is_refused(tmp_path, height, width):
    with pytest.raises(S2VError, match=rf"even frame sizes; got {width}x{height}"):
        save_video(solid_frames(RED, BLUE, height=height, width=width), tmp_path / "clip.mp4")

    assert folder_listing(tmp_path) == []


def test_gif_and_png_accept_odd_frame_sizes(tmp_path):
    frames = solid_frames(RED, BLUE, height=15, width=31)

    with Image.open(save_video(frames, tmp_path / "clip.gif")) as gif:
        assert gif.size == (31, 15)
    assert Image.open(save_video(frames, tmp_path / "frames") / "frame_0000.png").size == (31, 15)


@pytest.mark.parametrize(
    "frames",
    [[], np.zeros((0, HEIGHT, WIDTH, 3), np.uint8), np.zeros((HEIGHT, WIDTH, 3), np.uint8)],
    ids=["empty-list", "zero-frames", "single-frame-without-frame-axis"],
)
def test_empty_or_shapeless_frames_are_refused(tmp_path, frames):
    with pytest.raises(S2VError, match=r"\[frames, height, width, 3\]"):
        save_video(frames, tmp_path / "clip.mp4")

    assert folder_listing(tmp_path) == []


@pytest.mark.parametrize("fps", [0, -3, 0.5])
def test_fps_below_one_is_refused(tmp_path, fps):
    with pytest.raises(S2VError, match="fps must be a whole number of at least 1"):
        save_video(solid_frames(RED, BLUE), tmp_path / "clip.mp4", fps=fps)

    assert folder_listing(tmp_path) == []


# --- atomicity -------------------------------------------------------------------------------


class FailingWriter:
    """Wraps imageio-ffmpeg's frame writer and fails on the second frame.

    `inside=True` raises inside the real writer (like a broken ffmpeg pipe); `inside=False`
    raises in the caller's loop, before the frame reaches the writer (like Ctrl-C or a bad
    frame), leaving the real writer and its ffmpeg process running.
    """

    def __init__(self, writer, inside: bool):
        self.writer, self.inside, self.frames = writer, inside, 0

    def send(self, frame):
        if frame is not None:
            self.frames += 1
            if self.frames == 2:
                if self.inside:
                    return self.writer.throw(OSError("disk full"))
                raise OSError("disk full")
        return self.writer.send(frame)

    def close(self):
        self.writer.close()


def make_mp4_writer_fail(monkeypatch, inside: bool) -> None:
    real_write_frames = imageio_ffmpeg.write_frames

    def failing_write_frames(*args, **kwargs):
        return FailingWriter(real_write_frames(*args, **kwargs), inside)

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", failing_write_frames)


def test_failed_mp4_write_leaves_existing_file_untouched_and_no_temp_file(tmp_path, monkeypatch):
    path = save_video(solid_frames(GREEN, GREEN), tmp_path / "clip.mp4")
    good = path.read_bytes()
    make_mp4_writer_fail(monkeypatch, inside=True)

    with pytest.raises(S2VError, match="Could not write .*disk full"):
        save_video(solid_frames(RED, BLUE, RED, BLUE), path)

    assert path.read_bytes() == good
    assert folder_listing(tmp_path) == ["clip.mp4"]


def test_failed_mp4_write_leaves_no_file_at_a_new_target(tmp_path, monkeypatch):
    make_mp4_writer_fail(monkeypatch, inside=True)

    with pytest.raises(S2VError, match="Could not write .*disk full"):
        save_video(solid_frames(RED, BLUE, RED, BLUE), tmp_path / "clip.mp4")

    assert folder_listing(tmp_path) == []


def test_mp4_write_failing_between_frames_leaves_no_temp_file(tmp_path, monkeypatch):
    """When the frame loop fails, ffmpeg is closed before the temporary file is removed,
    so it cannot recreate '.clip.*.mp4' afterwards."""
    path = save_video(solid_frames(GREEN, GREEN), tmp_path / "clip.mp4")
    good = path.read_bytes()
    make_mp4_writer_fail(monkeypatch, inside=False)

    with pytest.raises(S2VError, match="Could not write .*disk full"):
        save_video(solid_frames(RED, BLUE, RED, BLUE), path)
    gc.collect()  # let an abandoned writer finish, as it would sooner or later

    assert path.read_bytes() == good
    assert folder_listing(tmp_path) == ["clip.mp4"], "a failed write must leave no temporary file"


def test_failed_gif_write_leaves_existing_file_untouched_and_no_temp_file(tmp_path, monkeypatch):
    path = save_video(solid_frames(GREEN, GREEN), tmp_path / "clip.gif")
    good = path.read_bytes()

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)

    with pytest.raises(S2VError, match="Could not write .*disk full"):
        save_video(solid_frames(RED, BLUE), path)

    assert path.read_bytes() == good
    assert folder_listing(tmp_path) == ["clip.gif"]


def test_png_write_failing_midway_leaves_no_folder_and_no_staging_folder(tmp_path, monkeypatch):
    """A frame that fails to save leaves neither the target nor a hidden staging folder."""
    real_save = Image.Image.save
    saved = []

    def save_then_fail(self, *args, **kwargs):
        saved.append(args)
        if len(saved) == 2:
            raise OSError("disk full")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_fail)

    with pytest.raises(S2VError, match="Could not write .*disk full"):
        save_video(solid_frames(RED, GREEN, BLUE), tmp_path / "frames")

    assert not (tmp_path / "frames").exists()
    assert folder_listing(tmp_path) == [], "a failed write must leave no staging folder"


def test_no_temporary_files_after_successful_writes(tmp_path):
    frames = solid_frames(RED, BLUE)
    for name in ("a.mp4", "b.gif", "c"):
        save_video(frames, tmp_path / name)

    assert folder_listing(tmp_path) == ["a.mp4", "b.gif", "c"]
    assert os.access(tmp_path / "c", os.R_OK | os.X_OK)


def test_integer_frames_other_than_uint8_are_refused_not_misread(tmp_path):
    frames = np.full((2, 16, 32, 3), 200, dtype=np.int64)
    with pytest.raises(S2VError, match="uint8 .* or floats"):
        save_video(frames, tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


def test_frames_of_different_sizes_are_refused(tmp_path):
    frames = [Image.new("RGB", (32, 16)), Image.new("RGB", (16, 16))]
    with pytest.raises(S2VError, match="one size"):
        save_video(frames, tmp_path / "clip.gif")


def test_png_frames_refuse_a_target_that_is_a_file(tmp_path):
    (tmp_path / "frames").write_text("mine")
    with pytest.raises(S2VError, match="not an empty folder"):
        save_video(np.zeros((2, 16, 32, 3), dtype=np.uint8), tmp_path / "frames")
    assert (tmp_path / "frames").read_text() == "mine"


def test_a_replacing_atomic_folder_swaps_in_whole_or_keeps_the_old_one(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(folder, replace=True) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("copy failed half-way")
    assert [path.name for path in tmp_path.rglob("*")] == ["model", "old.txt"]
    with atomic_folder(folder, replace=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [path.name for path in tmp_path.rglob("*")] == ["model", "new.txt"]


def test_an_atomic_folder_refuses_to_replace_a_full_folder_unless_asked(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "frame_0000.png").write_bytes(b"x")
    with pytest.raises(OSError), atomic_folder(folder) as staging:
        (staging / "frame_0000.png").write_bytes(b"y")
    assert (folder / "frame_0000.png").read_bytes() == b"x"


def test_an_unwritable_output_is_refused_before_any_frames_exist(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    (tmp_path / "clip.mp4").mkdir()
    with pytest.raises(S2VError, match="Cannot write .*a-file"):
        check_output(blocker / "deeper" / "clip.mp4")
    with pytest.raises(S2VError, match="is a folder; name a .mp4 file"):
        check_output(tmp_path / "clip.mp4")
    assert check_output(tmp_path / "new" / "clip.gif") == "gif" and (tmp_path / "new").is_dir()
    assert list((tmp_path / "new").iterdir()) == []  # the writability probe leaves nothing behind


def test_a_scaled_video_writes_each_pixel_as_a_square_block(tmp_path):
    frames = solid_frames(RED, BLUE)
    frames[:, 0, 0] = GREEN  # one odd pixel per frame: it must come back as a 4x4 block
    written = save_video(frames, tmp_path / "frames", scale=4)
    first = np.asarray(Image.open(written / "frame_0000.png"))
    assert first.shape[:2] == (frames.shape[1] * 4, frames.shape[2] * 4)
    assert (first[:4, :4] == GREEN).all() and (first[4:8, 4:8] == frames[0, 1, 1]).all()
    with pytest.raises(S2VError, match="scale must be a whole number from 1 to 16, not 0"):
        save_video(frames, tmp_path / "clip.mp4", scale=0)
