"""Tests for s2v.subject: from whatever the user uploads to the picture the model sees.

Everything here is offline: the background-removal tests point rembg at a temporary
$U2NET_HOME, use either a missing or a tiny hand-built ONNX model, and refuse sockets.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s2v import subject
from s2v.errors import S2VError, S2VWarning
from s2v.subject import fit_to_frame, load_subject, prepare_subject

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
EXIF_ORIENTATION = 0x0112


def rgb(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def close_to(actual, expected, tolerance: int = 0) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, dtype=int) - np.asarray(expected, dtype=int)) <= tolerance))


def save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size; a blank one compresses to almost nothing."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def non_white_box(image: Image.Image, tolerance: int = 8) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), exclusive, of every pixel not (nearly) white."""
    ys, xs = np.nonzero((255 - rgb(image)).max(axis=2) > tolerance)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


# --- EXIF orientation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "size", "red_corner"),
    [
        (3, (40, 20), "bottom-right"),  # rotated 180 degrees: same size, content moved
        (6, (20, 40), "top-right"),  # stored rotated 90 degrees counter-clockwise
        (8, (20, 40), "bottom-left"),  # stored rotated 90 degrees clockwise
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, size, red_corner):
    stored = np.full((20, 40, 3), 128, np.uint8)  # 40 wide, 20 tall, grey
    stored[:8, :8] = RED  # red in the stored top-left corner
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = save(Image.fromarray(stored), tmp_path / "phone.jpg", exif=exif, quality=95)

    image = load_subject(path)

    assert image.mode == "RGB"
    assert image.size == size
    pixels = rgb(image)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    ys, xs = np.nonzero(red)
    width, height = size
    expected_rows = range(0, 8) if red_corner.startswith("top") else range(height - 8, height)
    expected_cols = range(0, 8) if red_corner.endswith("left") else range(width - 8, width)
    assert set(ys) == set(expected_rows), f"red rows {sorted(set(ys))}, expected the {red_corner} corner"
    assert set(xs) == set(expected_cols), f"red columns {sorted(set(xs))}, expected the {red_corner} corner"


# --- every PIL mode becomes RGB on white -----------------------------------------------------


def test_rgba_transparent_pixels_become_white(tmp_path):
    pixels = np.zeros((4, 6, 4), np.uint8)
    pixels[:, :2] = (255, 0, 0, 0)  # fully transparent red: the colour must not show
    pixels[:, 2:4] = (0, 255, 0, 255)  # opaque green
    pixels[:, 4:] = (0, 0, 0, 128)  # half-transparent black: grey on white
    path = save(Image.fromarray(pixels, "RGBA"), tmp_path / "cutout.png")

    image = load_subject(path)

    assert image.mode == "RGB"
    assert close_to(rgb(image)[:, :2], WHITE)
    assert close_to(rgb(image)[:, 2:4], GREEN)
    assert close_to(rgb(image)[:, 4:], (127, 127, 127), tolerance=1)


def test_palette_image_transparent_index_becomes_white(tmp_path):
    palette_image = Image.new("P", (6, 4), 0)
    palette_image.putpalette(list(RED) + list(GREEN) + [0, 0, 0] * 254)
    palette_image.paste(1, (3, 0, 6, 4))  # right half uses index 1 (green)
    path = save(palette_image, tmp_path / "logo.png", transparency=0)  # index 0 (red) is transparent
    assert Image.open(path).mode == "P"

    image = load_subject(path)

    assert image.mode == "RGB"
    assert close_to(rgb(image)[:, :3], WHITE)
    assert close_to(rgb(image)[:, 3:], GREEN)


def test_rgb_png_with_colour_key_transparency_becomes_white(tmp_path):
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[:, :3] = RED
    pixels[:, 3:] = BLUE
    path = save(Image.fromarray(pixels), tmp_path / "keyed.png", transparency=RED)

    image = load_subject(path)

    assert close_to(rgb(image)[:, :3], WHITE)
    assert close_to(rgb(image)[:, 3:], BLUE)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (16, 8), (0, 0, 0, 0))  # no ink: white
    cmyk.paste((255, 0, 0, 0), (0, 0, 8, 8))  # full cyan
    path = save(cmyk, tmp_path / "print.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"

    image = load_subject(path)

    assert image.mode == "RGB"
    assert close_to(rgb(image)[2:6, 2:6], (0, 255, 255), tolerance=6)
    assert close_to(rgb(image)[2:6, 10:14], WHITE, tolerance=6)


def test_16_bit_greyscale_png_is_scaled_to_8_bit(tmp_path):
    values = (np.arange(24, dtype=np.uint16).reshape(4, 6) * 2800).astype(np.uint16)  # up to 64400
    values[0, 0] = 65535
    path = save(Image.fromarray(values), tmp_path / "depth.png")
    assert Image.open(path).mode in ("I;16", "I")

    image = load_subject(path)

    pixels = rgb(image)
    assert image.size == (6, 4)
    assert close_to(pixels[..., 0], values / 257, tolerance=1), "a 16-bit value v should become about v/257"
    assert pixels[0, 0, 0] == 255
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])


def test_greyscale_l_becomes_grey_rgb(tmp_path):
    values = np.array([[0, 77, 200, 255]], np.uint8).repeat(3, axis=0)
    path = save(Image.fromarray(values, "L"), tmp_path / "grey.png")

    image = load_subject(path)

    assert image.mode == "RGB"
    assert np.array_equal(rgb(image), np.stack([values] * 3, axis=2))


def test_greyscale_with_alpha_la_transparent_pixels_become_white(tmp_path):
    pixels = np.zeros((3, 4, 2), np.uint8)
    pixels[:, :2] = (40, 0)  # transparent dark grey
    pixels[:, 2:] = (40, 255)  # opaque dark grey
    path = save(Image.fromarray(pixels, "LA"), tmp_path / "grey_alpha.png")
    assert Image.open(path).mode == "LA"

    image = load_subject(path)

    assert image.mode == "RGB"
    assert close_to(rgb(image)[:, :2], WHITE)
    assert close_to(rgb(image)[:, 2:], (40, 40, 40))


def test_bilevel_1_bit_image_becomes_black_and_white_rgb(tmp_path):
    bits = Image.new("1", (4, 2), 0)
    bits.putpixel((1, 0), 1)
    bits.putpixel((3, 1), 1)
    path = save(bits, tmp_path / "bits.png")
    assert Image.open(path).mode == "1"

    image = load_subject(path)

    expected = np.zeros((2, 4, 3), int)
    expected[0, 1] = WHITE
    expected[1, 3] = WHITE
    assert image.mode == "RGB"
    assert np.array_equal(rgb(image), expected)


def test_pil_image_is_accepted_directly():
    source = Image.new("RGBA", (5, 3), (0, 0, 255, 0))

    image = load_subject(source)

    assert image.mode == "RGB" and image.size == (5, 3)
    assert close_to(rgb(image), WHITE)


# --- numpy arrays ----------------------------------------------------------------------------


def test_uint8_rgb_array_keeps_its_pixels():
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)

    image = load_subject(array)

    assert image.mode == "RGB" and image.size == (7, 5)
    assert np.array_equal(np.asarray(image), array)


def test_uint8_rgba_array_transparent_pixels_become_white():
    array = np.zeros((2, 4, 4), np.uint8)
    array[:, :2] = (255, 0, 0, 0)
    array[:, 2:] = (0, 0, 255, 255)

    image = load_subject(array)

    assert image.mode == "RGB"
    assert close_to(rgb(image)[:, :2], WHITE)
    assert close_to(rgb(image)[:, 2:], BLUE)


@pytest.mark.parametrize("shape", [(3, 5), (3, 5, 1)], ids=["HxW", "HxWx1"])
def test_greyscale_array_becomes_grey_rgb(shape):
    array = np.arange(15, dtype=np.uint8).reshape(shape) * 17

    image = load_subject(array)

    assert image.mode == "RGB" and image.size == (5, 3)
    assert np.array_equal(rgb(image), np.stack([array.reshape(3, 5)] * 3, axis=2))


def test_uint16_array_is_scaled_to_8_bit():
    array = np.array([[0, 257, 25700, 65535, 1000]], np.uint16)

    image = load_subject(array)

    assert rgb(image)[0, :, 0].tolist() == [0, 1, 100, 255, 4]


def test_float_array_in_unit_range_is_scaled_and_clipped():
    array = np.array([[0.0, 0.5, 1.0, -0.3, 1.7]], np.float32)

    image = load_subject(array)

    assert rgb(image)[0, :, 0].tolist() == [0, 128, 255, 0, 255]


def test_bool_array_becomes_black_and_white():
    array = np.array([[True, False], [False, True]])

    image = load_subject(array)

    assert rgb(image)[..., 0].tolist() == [[255, 0], [0, 255]]


@pytest.mark.parametrize("shape", [(4, 5, 2), (2, 4, 5, 3), (12,)], ids=["HxWx2", "4-D", "1-D"])
def test_array_of_wrong_shape_is_refused(shape):
    with pytest.raises(S2VError, match=r"HxW.*shape"):
        load_subject(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("dtype", [np.complex64, np.int64, np.int8, object])
def test_array_of_unsupported_dtype_is_refused(dtype):
    with pytest.raises(S2VError, match=r"uint8, uint16, bool or float"):
        load_subject(np.zeros((4, 4, 3), dtype))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_array_with_nan_or_infinity_is_refused(bad):
    array = np.full((4, 4, 3), 0.5)
    array[1, 2, 0] = bad

    with pytest.raises(S2VError, match="NaN or infinite"):
        load_subject(array)


def test_array_with_no_pixels_is_refused():
    with pytest.raises(S2VError, match="no pixels"):
        load_subject(np.zeros((0, 8, 3), np.uint8))


def test_huge_array_is_refused_before_conversion():
    huge = np.broadcast_to(np.uint8(0), (8000, 6000))  # 48 MP, but no memory behind it

    started = time.perf_counter()
    with pytest.raises(S2VError, match=r"6000x8000 pixels, more than the 40 MP"):
        load_subject(huge)
    assert time.perf_counter() - started < 1.0


# --- fitting into the frame ------------------------------------------------------------------


def subject_with_marked_corners(width: int, height: int) -> np.ndarray:
    """Red, with a blue top-left corner and a green bottom-right corner (to see nothing is cut)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:] = RED
    corner = max(width, height) // 6
    pixels[:corner, :corner] = BLUE
    pixels[-corner:, -corner:] = GREEN
    return pixels


@pytest.mark.parametrize(
    ("source_size", "frame_size", "padded"),
    [
        ((30, 90), (96, 64), "left-right"),  # tall subject, wide frame
        ((90, 30), (32, 64), "top-bottom"),  # wide subject, tall frame
        ((10, 20), (64, 64), "left-right"),  # small subject is scaled up, still not stretched
        ((48, 32), (24, 16), "none"),  # same aspect ratio: fills the frame exactly
    ],
    ids=["tall-into-wide", "wide-into-tall", "small-scaled-up", "same-ratio"],
)
def test_prepare_subject_fits_without_stretching_or_cropping(source_size, frame_size, padded):
    source_width, source_height = source_size
    frame_width, frame_height = frame_size

    image = prepare_subject(subject_with_marked_corners(source_width, source_height), frame_width, frame_height)

    assert image.mode == "RGB"
    assert image.size == frame_size
    left, top, right, bottom = non_white_box(image)
    content_width, content_height = right - left, bottom - top
    if padded == "left-right":
        assert (top, bottom) == (0, frame_height), "the subject should fill the height"
        assert left > 0 and right < frame_width, "white padding expected left and right"
        assert abs(left - (frame_width - right)) <= 1, "the subject should be centred"
        assert abs(content_width - frame_height * source_width / source_height) <= 1, "stretched"
    elif padded == "top-bottom":
        assert (left, right) == (0, frame_width), "the subject should fill the width"
        assert top > 0 and bottom < frame_height, "white padding expected top and bottom"
        assert abs(top - (frame_height - bottom)) <= 1, "the subject should be centred"
        assert abs(content_height - frame_width * source_height / source_width) <= 1, "stretched"
    else:
        assert (left, top, right, bottom) == (0, 0, frame_width, frame_height)
    pixels = rgb(image)
    # Never cropped: both marked corners are still at the corners of the subject's box.
    assert close_to(pixels[top, left], BLUE, tolerance=40)
    assert close_to(pixels[bottom - 1, right - 1], GREEN, tolerance=40)
    # Padding is pure white.
    outside = np.ones(pixels.shape[:2], bool)
    outside[top:bottom, left:right] = False
    assert close_to(pixels[outside], WHITE)


def test_fit_to_frame_returns_exact_size_for_awkward_ratios():
    image = fit_to_frame(Image.new("RGB", (7, 3), RED), 17, 11)

    assert image.size == (17, 11)
    left, top, right, bottom = non_white_box(image)
    assert (left, right) == (0, 17)
    assert abs((bottom - top) - 17 * 3 / 7) <= 1


# --- refusals --------------------------------------------------------------------------------


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(S2VError, match=r"not found.*nothere\.png"):
        load_subject(tmp_path / "nothere.png")


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")

    with pytest.raises(S2VError, match=r"empty\.jpg is empty \(0 bytes\)"):
        load_subject(path)


def test_text_file_named_png_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n" * 10)

    with pytest.raises(S2VError, match=r"notes\.png is not an image"):
        load_subject(path)


@pytest.mark.parametrize("format_name", ["PNG", "JPEG"])
def test_truncated_image_is_refused(tmp_path, format_name):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = save(Image.fromarray(noise), tmp_path / f"whole.{format_name.lower()}", format=format_name)
    data = whole.read_bytes()
    path = tmp_path / f"cut.{format_name.lower()}"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(S2VError, match=r"cut\.\w+ is damaged or truncated"):
        load_subject(path)


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (20000, 20000, r"bomb\.png is refused as a decompression bomb"),  # beyond PIL's hard limit
        (10000, 10000, r"bomb\.png is refused as a decompression bomb"),  # PIL's warning zone
        (8000, 6000, r"bomb\.png is 8000x6000 pixels, more than the 40 MP"),  # s2v's own limit
    ],
    ids=["20000x20000", "10000x10000", "8000x6000"],
)
def test_decompression_bomb_is_refused_fast_without_decoding(tmp_path, width, height, message):
    path = tmp_path / "bomb.png"
    path.write_bytes(bilevel_png(width, height))
    assert path.stat().st_size < 100_000, "the bomb should be a small file"

    started = time.perf_counter()
    with pytest.raises(S2VError, match=message):
        load_subject(path)
    assert time.perf_counter() - started < 1.0, "decoding the bomb would take far longer"


def open_descriptors_for(path: Path) -> list[str]:
    descriptors = Path("/proc/self/fd")
    return [fd.name for fd in descriptors.iterdir() if os.path.realpath(fd) == str(path.resolve())]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to list open files")
@pytest.mark.parametrize("problem", ["over-40-MP", "truncated"])
def test_refused_image_file_is_closed(tmp_path, problem):
    """A refused upload is closed at once, not kept open for as long as the error lives
    (on Windows an open file cannot even be deleted or replaced)."""
    path = tmp_path / "upload.png"
    if problem == "over-40-MP":
        path.write_bytes(bilevel_png(8000, 6000))
    else:
        noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        data = save(Image.fromarray(noise), tmp_path / "whole.png").read_bytes()
        path.write_bytes(data[: len(data) // 2])

    with pytest.raises(S2VError) as refusal:
        load_subject(path)

    assert open_descriptors_for(path) == [], f"{path.name} is still open after: {refusal.value}"


@pytest.mark.parametrize("source", [42, None, b"\x89PNG", [[0, 0, 0]]], ids=["int", "None", "bytes", "list"])
def test_unsupported_source_type_is_refused(source):
    with pytest.raises(S2VError, match=f"file path, a PIL image or an array, not {type(source).__name__}"):
        load_subject(source)


# --- background removal ----------------------------------------------------------------------


@pytest.fixture
def offline_rembg(tmp_path, monkeypatch):
    """An empty $U2NET_HOME, no sockets, and no rembg session cached from another test."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in the s2v tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    home = tmp_path / "u2net_home"
    (home / "models" / "u2net_custom").mkdir(parents=True)
    monkeypatch.setenv("U2NET_HOME", str(home))
    subject._background_session.cache_clear()
    yield home
    subject._background_session.cache_clear()


def red_square_on_blue() -> np.ndarray:
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:] = BLUE
    pixels[10:30, 20:40] = RED
    return pixels


@pytest.mark.parametrize("model", ["missing-onnx", "unknown-name"])
def test_background_removal_without_model_warns_and_keeps_image(offline_rembg, model):
    background_model = (
        str(offline_rembg / "models" / "u2net_custom" / "missing.onnx") if model == "missing-onnx" else "no-such-model"
    )
    source = red_square_on_blue()

    with pytest.warns(S2VWarning, match=r"Background removal skipped.*U2NET_HOME") as record:
        image = prepare_subject(source, 60, 40, remove_background=True, background_model=background_model)

    (skipped,) = [warning for warning in record if issubclass(warning.category, S2VWarning)]
    assert background_model in str(skipped.message)
    assert np.array_equal(np.asarray(image), np.asarray(prepare_subject(source, 60, 40)))


def red_channel_mask_model(path: Path) -> Path:
    """A one-node ONNX 'segmenter': the mask is the input's red channel (a 1x1 conv)."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])
    weights = helper.make_tensor("pick_red", TensorProto.FLOAT, [1, 3, 1, 1], [1.0, 0.0, 0.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "pick_red"], ["mask"])], "red_mask", [image], [mask], [weights]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_background_removal_with_model_keeps_subject_and_whitens_background(offline_rembg):
    model = red_channel_mask_model(offline_rembg / "models" / "u2net_custom" / "red_mask.onnx")

    with warnings.catch_warnings():
        warnings.simplefilter("error", S2VWarning)  # the model is there: no "skipped" warning
        image = prepare_subject(red_square_on_blue(), 60, 40, remove_background=True, background_model=str(model))

    pixels = rgb(image)
    assert image.size == (60, 40)
    assert close_to(pixels[13:27, 23:37], RED, tolerance=10), "the red subject should be kept"
    background = np.ones((40, 60), bool)
    background[7:33, 17:43] = False  # leave a margin for the resized mask's soft edge
    assert close_to(pixels[background], WHITE, tolerance=10), "the blue background should become white"


def test_a_missing_background_model_is_tried_once_per_process_and_every_request_still_warns(offline_rembg, monkeypatch):
    import rembg

    attempts = []

    def failing_session(*args, **kwargs):
        attempts.append(args)
        raise OSError("download failed: no network")

    monkeypatch.setattr(rembg, "new_session", failing_session)
    for _ in range(3):
        with pytest.warns(S2VWarning, match="Background removal skipped.*download failed"):
            prepare_subject(red_square_on_blue(), 60, 40, remove_background=True, background_model="u2net")
    assert len(attempts) == 1


def test_a_preset_subject_size_finds_the_subject_and_scales_it_whatever_the_framing(tmp_path):
    canvas = np.full((400, 640, 3), (246, 244, 240), np.uint8)  # off-white paper
    canvas[300:340, 500:560] = RED  # a small bar near a corner: 60 px wide, a tenth of the canvas
    path = tmp_path / "drawing.jpg"
    Image.fromarray(canvas).save(path, quality=80)
    placed = rgb(prepare_subject(path, 48, 48, subject_size=0.65))
    subject = np.linalg.norm(placed.astype(np.float32) - np.array(WHITE, np.float32), axis=2) > 60
    rows, cols = np.flatnonzero(subject.any(axis=1)), np.flatnonzero(subject.any(axis=0))
    assert abs((cols[-1] - cols[0] + 1) - 0.65 * 48) <= 1.5  # its longer side: 0.65 of the frame
    assert abs((rows[0] + rows[-1]) / 2 - 23.5) <= 1 and abs((cols[0] + cols[-1]) / 2 - 23.5) <= 1  # centred
    assert close_to(placed[0:5, 0:5], WHITE, tolerance=3)  # the paper's tint is gone
    assert close_to(placed[22:26, 22:26], RED, tolerance=25)


def test_a_tight_crop_with_no_paper_around_it_is_taken_as_the_subjects_box():
    crop = np.zeros((30, 30, 3), np.uint8)
    crop[:] = BLUE
    crop[10:20, 10:20] = (20, 20, 20)  # a dark patch inside: it must not become "the subject"
    placed = rgb(prepare_subject(crop, 48, 48, subject_size=0.65))
    blue = np.all(np.abs(placed.astype(int) - BLUE) < 40, axis=2)
    rows, cols = np.flatnonzero(blue.any(axis=1)), np.flatnonzero(blue.any(axis=0))
    assert abs((cols[-1] - cols[0] + 1) - 0.65 * 48) <= 1.5 and abs((rows[-1] - rows[0] + 1) - 0.65 * 48) <= 1.5
    assert close_to(placed[0:4, 0:4], WHITE)
