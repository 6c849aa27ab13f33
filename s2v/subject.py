"""From whatever the user uploads to the exact picture the model sees.

`prepare_subject` is the one entry point: the pipeline calls it, and the app calls the
same function for its preview, so what the user sees is what the model gets.
"""

from __future__ import annotations

import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import S2VError, S2VWarning, first_line

SubjectSource = str | os.PathLike | Image.Image | np.ndarray

MAX_SUBJECT_PIXELS = 40_000_000
"""Larger uploads are refused before decoding: a subject photo never needs 40 MP, and a
small file that claims more is a decompression bomb."""

WHITE = (255, 255, 255)
SUBJECT_CONTRAST = 60.0
"""RGB distance from the background's colour past which a pixel is subject: above JPEG noise and an
off-white tint, below the gap between a saturated subject and white."""
SPECK_PIXELS = 2
"""A row or column belongs to the subject's box only with this many subject pixels: a lone JPEG speck does not."""
PLACED_TOLERANCE = 1.5
PAPER_LEVEL, PAPER_TINT = 200.0, 40.0
"""A border is paper when its darkest channel is at least this and its channels differ by at most this."""
DEFAULT_BACKGROUND_MODEL = "u2net"

log = logging.getLogger(__name__)


def prepare_subject(
    source: SubjectSource,
    width: int,
    height: int,
    remove_background: bool = False,
    background_model: str = DEFAULT_BACKGROUND_MODEL,
    subject_size: float | None = None,
) -> Image.Image:
    """The subject as the model sees it: RGB on white, fitted into `width` x `height`.

    With `subject_size` (a preset's setting), the subject is found and scaled so that the longer side of
    its box is that share of the frame's shorter side: a model trained on subjects of one size (s2v-nano's
    references) gets that size whatever the photo's framing, canvas or margins.
    """
    image = load_subject(source)
    if remove_background:
        image = remove_subject_background(image, background_model)
    if subject_size is None:
        return fit_to_frame(image, width, height)
    if image.size == (width, height) and _already_placed(image, subject_size):
        return image
    return place_subject(isolate_subject(image), width, height, subject_size)


def isolate_subject(image: Image.Image) -> Image.Image:
    """The subject's box, what surrounds it turned white: pixels far from the paper's colour are subject.

    The paper is the border's colour when that is light and grey (white, off-white, JPEG noise included);
    any other border means the picture is already the subject's box (a tight crop, or a photo), kept whole.
    """
    found = _subject_box(image)
    if found is None:
        return image
    box, pixels, distance = found
    weight = np.clip(distance[box] / SUBJECT_CONTRAST, 0, 1)[..., None]
    on_white = weight * pixels[box] + (1 - weight) * np.array(WHITE, np.float32)
    return Image.fromarray(on_white.round().astype(np.uint8))


def _subject_box(image: Image.Image):
    """((rows, cols) slices of the subject's box, RGB pixels, distance from the paper), or None without paper."""
    pixels = np.asarray(image.convert("RGB"), np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    paper = np.median(border, axis=0)
    if paper.min() < PAPER_LEVEL or paper.max() - paper.min() > PAPER_TINT:
        return None
    distance = np.linalg.norm(pixels - paper, axis=2)
    subject = distance > SUBJECT_CONTRAST
    rows = np.flatnonzero(subject.sum(axis=1) >= SPECK_PIXELS)
    cols = np.flatnonzero(subject.sum(axis=0) >= SPECK_PIXELS)
    if len(rows) == 0 or len(cols) == 0:
        return None
    return (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)), pixels, distance


def place_subject(image: Image.Image, width: int, height: int, subject_size: float) -> Image.Image:
    """`image` (a subject's box) scaled so its longer side is `subject_size` of the frame's shorter side,
    centred on white."""
    scale = subject_size * min(width, height) / max(image.width, image.height)
    return _paste_centred(image, width, height, scale)


def _already_placed(image: Image.Image, subject_size: float) -> bool:
    """Whether a frame-sized picture already holds its subject at the right size and centred, within what
    finding an anti-aliased edge can be off by: resampling it (the world's own references) would only blur it."""
    found = _subject_box(image)
    if found is None:
        return False
    rows, cols = found[0]
    side = subject_size * min(image.size)
    centre = ((cols.start + cols.stop) / 2 - image.width / 2, (rows.start + rows.stop) / 2 - image.height / 2)
    extent = max(rows.stop - rows.start, cols.stop - cols.start)
    return abs(extent - side) <= PLACED_TOLERANCE and max(map(abs, centre)) <= PLACED_TOLERANCE


def load_subject(source: SubjectSource) -> Image.Image:
    """Open and validate a path, PIL image or array; returns upright RGB on white."""
    if isinstance(source, np.ndarray):
        image = _image_from_array(source)
    elif isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (str, os.PathLike)):
        image = _open_file(Path(source))
    else:
        raise S2VError(f"The subject must be an image file path, a PIL image or an array, not {type(source).__name__}.")
    _check_pixel_count(image.width, image.height, "The subject image")
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError):
        warnings.warn("The subject image's EXIF orientation is unreadable; using it as stored.", S2VWarning)
    return _to_rgb_on_white(image)


def fit_to_frame(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to fit inside the frame and pad the rest with white: never stretched or cropped."""
    return _paste_centred(image, width, height, min(width / image.width, height / image.height))


def _paste_centred(image: Image.Image, width: int, height: int, scale: float) -> Image.Image:
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new("RGB", (width, height), WHITE)
    canvas.paste(image.resize(size, Image.Resampling.LANCZOS), ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


def remove_subject_background(image: Image.Image, model: str = DEFAULT_BACKGROUND_MODEL) -> Image.Image:
    """Cut the subject out onto white with rembg; if that cannot run, warn and keep the image."""
    session = _background_session(model)
    try:
        if isinstance(session, str):
            raise RuntimeError(session)
        from rembg import remove

        cutout = remove(image, session=session)
    except Exception as error:  # rembg raises anything from pooch, requests or onnxruntime
        warnings.warn(
            f"Background removal skipped, the image is used as it is: rembg model '{model}' is "
            f"unavailable ({first_line(error)}). Put the model's .onnx file under "
            "$U2NET_HOME/models/<name>/ or let rembg download it on a connected machine.",
            S2VWarning,
        )
        return image
    return _to_rgb_on_white(cutout)


@lru_cache(maxsize=2)
def _background_session(model: str):
    """One rembg session per model (loading it costs seconds); a path means a custom .onnx.

    A model that cannot load gives the reason instead, kept for the process: a failed download
    is tried once, not again on every request (restart to try again).
    """
    try:
        from rembg import new_session

        if model.endswith(".onnx"):
            return new_session("u2net_custom", model_path=model)
        return new_session(model)
    except Exception as error:
        log.warning("rembg model %r is unavailable, background removal is off: %s", model, first_line(error))
        return first_line(error)


def _open_file(path: Path) -> Image.Image:
    if not path.is_file():
        raise S2VError(f"Subject image not found: {path}")
    if path.stat().st_size == 0:  # the name only: an app's upload path is the server's business
        raise S2VError(f"The subject file {path.name} is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise S2VError(f"{path.name} is refused as a decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise S2VError(f"{path.name} is not an image PIL can read (PNG, JPEG, WebP, ...).") from None
    try:
        _check_pixel_count(image.width, image.height, path.name)
        image.load()
    except OSError as error:
        image.close()
        raise S2VError(f"{path.name} is damaged or truncated: {error}") from None
    except S2VError:
        image.close()
        raise
    return image


def _check_pixel_count(width: int, height: int, what: str) -> None:
    if width * height > MAX_SUBJECT_PIXELS:
        raise S2VError(
            f"{what} is {width}x{height} pixels, more than the {MAX_SUBJECT_PIXELS // 1_000_000} MP "
            "s2v accepts; scale it down first."
        )
    if width == 0 or height == 0:
        raise S2VError(f"{what} has no pixels ({width}x{height}).")


def _image_from_array(array: np.ndarray) -> Image.Image:
    """Arrays as HxW, HxWx1, HxWx3 or HxWx4; uint8, uint16, bool, or float in [0, 1]."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise S2VError(f"A subject array must be HxW, HxWx3 or HxWx4, not shape {array.shape}.")
    _check_pixel_count(array.shape[1], array.shape[0], "The subject array")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.uint16:
        pixels = (array.astype(np.float32) / 257).round().astype(np.uint8)
    elif array.dtype == bool:
        pixels = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise S2VError("The subject array contains NaN or infinite values.")
        pixels = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    else:
        raise S2VError(f"A subject array must be uint8, uint16, bool or float, not {array.dtype}.")
    return Image.fromarray(np.ascontiguousarray(pixels))


def _to_rgb_on_white(image: Image.Image) -> Image.Image:
    """Every PIL mode to RGB; transparency is composited onto white, 16-bit scaled to 8."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _sixteen_bit_to_grey(image)
    if image.mode == "RGB" and not image.has_transparency_data:
        return image
    if image.has_transparency_data or image.mode in ("LA", "La", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba).convert("RGB")
    return image.convert("RGB")


def _sixteen_bit_to_grey(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    peak = 255.0 if image.mode == "F" and values.max(initial=0) <= 255 else 65535.0
    return Image.fromarray((np.clip(values, 0, peak) / peak * 255).round().astype(np.uint8), mode="L")
