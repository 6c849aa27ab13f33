"""Writing generated frames (browser-playable mp4, GIF, or a folder of PNGs) and reading an mp4 back.

Every writer goes through a temporary name and an atomic rename, so a file at the
target path is always complete (the app and eval runners rely on that).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import S2VError, first_line
from .numbers import whole_number

Frames = Sequence[Image.Image] | np.ndarray
VIDEO_FORMATS = ("mp4", "gif", "png")
MAX_SCALE = 16
"""The largest `save_video` scale: a block of 16x16 per pixel already turns 48 px into 768."""


def video_format(path: str | os.PathLike) -> str:
    """The format a path asks for: its extension, or PNG frames for a folder-like path."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("mp4", "gif"):
        return suffix
    if suffix == "":
        return "png"
    raise S2VError(f"Cannot write '{path}': use a .mp4 or .gif name, or a folder name for PNG frames.")


def check_output(path: str | os.PathLike) -> str:
    """Refuse a path the video could not be written to, before minutes of generation; returns its format.

    The parent folder is created (as the writer would) and a scratch file made in it, so a parent
    that is a file, a read-only disk or a missing permission fails here, not after the run.
    """
    path = Path(path)
    kind = video_format(path)
    if kind == "png" and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise S2VError(f"{path} already exists and is not an empty folder; choose a new folder for PNG frames.")
    if kind != "png" and path.is_dir():
        raise S2VError(f"{path} is a folder; name a .{kind} file.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as error:
        raise S2VError(f"Cannot write {path}: {first_line(error)}.") from None
    return kind


def save_video(frames: Frames, path: str | os.PathLike, fps: int = 8, scale: int = 1) -> Path:
    """Write `frames` to `path` in the format its name asks for; returns the path.

    `scale` > 1 writes each pixel as a `scale` x `scale` block first: H.264 in yuv420 keeps colour at
    half resolution, which on a tiny video (s2v-nano's 48 px) blurs colours and shapes the model drew
    crisply; blocks of 2x2 or more keep what the viewer sees what the model made.
    """
    path = Path(path)
    kind = check_output(path)
    fps = whole_number(fps, "fps", 1)
    scale = whole_number(scale, "scale", 1, MAX_SCALE)
    array = frames_to_uint8(frames)
    if scale > 1:
        array = array.repeat(scale, axis=1).repeat(scale, axis=2)
    if kind == "mp4" and (array.shape[1] % 2 or array.shape[2] % 2):
        raise S2VError(f"H.264 needs even frame sizes; got {array.shape[2]}x{array.shape[1]}.")
    try:
        {"mp4": _write_mp4, "gif": _write_gif, "png": _write_png_frames}[kind](array, path, fps)
    except OSError as error:  # a disk that filled up or vanished during the write
        raise S2VError(f"Could not write {path}: {first_line(error)}.") from None
    return path


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Every frame of a video file as uint8 `[F, H, W, 3]`, and its frame rate."""
    import imageio_ffmpeg

    path = Path(path)
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(data, np.uint8).reshape(height, width, 3) for data in reader]
    except (OSError, RuntimeError, StopIteration) as error:
        raise S2VError(f"{path} is not a readable video ({first_line(error)}).") from None
    fps = float(meta.get("fps") or 0)
    if not frames or fps <= 0:
        raise S2VError(f"{path} has no frames or no frame rate.")
    return np.stack(frames), fps


def frames_to_uint8(frames: Frames) -> np.ndarray:
    """`[F, H, W, 3]` uint8 from PIL frames, uint8 arrays or floats in [0, 1]."""
    if isinstance(frames, np.ndarray):
        array = frames
    else:
        sizes = {frame.size for frame in frames}
        if len(sizes) > 1:
            raise S2VError(f"All frames must have one size; got {sorted(sizes)}.")
        array = np.stack([np.asarray(frame.convert("RGB")) for frame in frames]) if sizes else np.zeros(0)
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise S2VError(f"Expected frames as [frames, height, width, 3], got shape {array.shape}.")
    if np.issubdtype(array.dtype, np.floating):
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise S2VError(f"Frames must be uint8 (0-255) or floats in [0, 1], not {array.dtype}.")
    return np.ascontiguousarray(array)


def _write_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    """H.264 in yuv420p with the index up front: what every browser plays."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    with atomic_file(path) as temporary:
        writer = imageio_ffmpeg.write_frames(
            str(temporary),
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=2,
            output_params=["-movflags", "+faststart", "-f", "mp4"],
        )
        writer.send(None)
        try:
            for frame in frames:
                writer.send(frame)
        finally:
            writer.close()  # ffmpeg must exit before the temporary file is removed or renamed


def _write_gif(frames: np.ndarray, path: Path, fps: int) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    with atomic_file(path) as temporary:
        images[0].save(
            temporary, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0
        )


def _write_png_frames(frames: np.ndarray, path: Path, fps: int) -> None:
    """One PNG per frame in a folder; the folder appears whole or not at all."""
    with atomic_folder(path) as staging:
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(staging / f"frame_{index:04d}.png")


@contextmanager
def atomic_folder(path: Path, replace: bool = False) -> Iterator[Path]:
    """A hidden sibling folder that becomes `path` on success and vanishes on failure. `path` must be absent or
    empty unless `replace`, which removes what it holds only once the new folder is complete."""
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes it private; what it holds is meant to be read
        if replace:
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.rmdir()
        os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path` that replaces it on success and vanishes on failure."""
    handle, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a served video must be readable
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
