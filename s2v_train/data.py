"""Training data for METHOD §5: identity pairs, motion clips, and a sampler that survives bad files.

Both datasets decode lazily: opening one reads only metadata (scores, file lists, captions), so
200K Subjects200K rows open in seconds, and a corrupt item raises `UnreadableSample` when it is
drawn. `draw` turns that into a warning and another draw, never a crash hours into a run.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import operator
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from s2v.errors import S2VError, S2VWarning, first_line
from s2v.subject import WHITE, load_subject
from s2v.video import save_video

from .config import subject_references

if TYPE_CHECKING:
    from .config import TrainConfig

SUBJECTS200K_ID = "Yuanshi/Subjects200K"
QUALITY_SCORES = ("compositeStructure", "objectConsistency", "imageQuality")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov")
MAX_REASONS = 20
"""`SkipCounter` keeps this many recent reasons: enough to spot a pattern, bounded over a long run."""
SYNTHETIC_SUBJECT_SIZE = 0.6
"""Box side of the synthetic set's subjects on white, as a fraction of the frame's shorter side."""

DOWNLOAD_HINT = (
    f"Download the dataset on a connected machine (e.g. `huggingface-cli download --repo-type dataset "
    f"{SUBJECTS200K_ID} --local-dir DIR`) and pass the local parquet folder (DIR/data)."
)

# The synthetic set: shapes and colours that stay distinct after H.264 and resizing.
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "yellow": (240, 210, 40), "purple": (140, 60, 180)}
BACKGROUNDS = {"grass": (80, 150, 60), "sand": (215, 195, 150), "the night sky": (20, 25, 60), "wood": (150, 100, 60)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

Sample = TypeVar("Sample", covariant=True)


class Samples(Protocol[Sample]):
    """Anything `draw` can sample from: a length and integer indexing."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


class UnreadableSample(Exception):
    """One item cannot be decoded; the message names the file or row and why, in one line."""


@dataclass
class PairSample:
    """Identity task: the subject in one setting is the reference for the other setting."""

    reference: Image.Image
    target: Image.Image
    caption: str
    """Describes the target half, as plain text: the training loop adds the `<cls>` token."""


@dataclass
class VideoSample:
    """Motion task: `frames` is uint8 `[num_frames, height, width, 3]`."""

    frames: np.ndarray
    caption: str
    subject: Image.Image | None = None
    """The clip's subject as a user would upload it (its captions line's `reference` image), when listed."""


@dataclass
class SkipCounter:
    """How many draws were skipped as unreadable, and the latest reasons, for the training log."""

    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def count(self, reason: str) -> None:
        self.skipped += 1
        self.reasons = [*self.reasons, reason][-MAX_REASONS:]


def draw(dataset: Samples[Sample], rng: np.random.Generator, counter: SkipCounter, max_tries: int = 100) -> Sample:
    """A uniformly random item of the whole dataset, drawn again while items are unreadable.

    Indices depend only on `rng`, so restoring its state resumes the exact sequence; sampling
    with replacement from the full set avoids the release's sampler, which cycled through ~4K pairs.
    """
    if len(dataset) == 0:
        raise S2VError("Cannot draw from an empty dataset.")
    for _ in range(max_tries):
        try:
            return dataset[int(rng.integers(len(dataset)))]
        except UnreadableSample as error:
            warnings.warn(f"Skipped an unreadable training sample: {error}", S2VWarning)
            counter.count(str(error))
    raise S2VError(
        f"{max_tries} of the last {max_tries} samples were unreadable; check the data (latest: {counter.reasons[-1]})."
    )


def resize_and_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Scale (LANCZOS, aspect kept) until the image covers `width` x `height`, then cut out the centre.

    METHOD §5 resizes each square half to 720x720 and centre-crops 720x480; this is that rule for any sizes.
    """
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return image.resize(size, Image.Resampling.LANCZOS).crop((left, top, left + width, top + height))


class _Pair(NamedTuple):
    first: Image.Image
    second: Image.Image
    first_caption: str
    second_caption: str


class PairDataset:
    """Identity pairs in both directions: item 2k takes pair k's first image as the reference, 2k+1 its second."""

    def __init__(self, pairs: Samples[_Pair], height: int, width: int):
        _check_size(height, width)
        self.pairs, self.height, self.width = pairs, height, width

    def __len__(self) -> int:
        return 2 * len(self.pairs)

    def __getitem__(self, index: int) -> PairSample:
        pair, direction = divmod(_check_index(index, len(self)), 2)
        first, second, first_caption, second_caption = self.pairs[pair]
        first, second = (resize_and_crop(image, self.height, self.width) for image in (first, second))
        if direction == 0:
            return PairSample(reference=first, target=second, caption=second_caption)
        return PairSample(reference=second, target=first, caption=first_caption)

    @classmethod
    def from_subjects200k(
        cls, source: str, height: int, width: int, min_quality: int = 5, padding: int = 8
    ) -> PairDataset:
        """OminiControl's side-by-side pairs from local parquet (file, folder or glob) or a Hub id.

        Keeps rows whose three quality scores are all >= `min_quality`, reading only the score
        column: no image is decoded until its pair is drawn.
        """
        _check_size(height, width)
        if padding < 0:
            raise S2VError(f"padding must be 0 or more pixels, not {padding}.")
        table = _load_subjects200k(str(source))
        if "image" not in table.column_names:
            raise S2VError(f"{source} has no 'image' column; is it the Subjects200K dataset?")
        kept = _rows_passing(table, min_quality)
        if not kept:
            raise S2VError(
                f"No row of {source} has all three quality scores >= {min_quality} ({len(table)} rows read)."
            )
        rows = _Subjects200KRows(table, kept, str(source), padding)
        return cls(rows, height, width)

    @classmethod
    def from_jsonl(cls, path: str | Path, height: int, width: int) -> PairDataset:
        """Pairs listed one a line as {"subject", "target", "subject_caption", "target_caption"}.

        Image paths may be absolute or relative to the JSONL's folder; they are opened only when drawn.
        """
        path = Path(path)
        pairs = [_pair_files(record, path.parent, where) for where, record in _read_jsonl(path)]
        if not pairs:
            raise S2VError(f"{path} lists no pairs.")
        return cls(_JsonlPairs(pairs), height, width)


class VideoDataset:
    """Clips in a folder, decoded when drawn to `num_frames` frames at `fps`, `height` x `width`."""

    def __init__(
        self,
        files: list[Path],
        captions: dict[str, str],
        height: int,
        width: int,
        num_frames: int,
        fps: float,
        subjects: dict[str, Path] | None = None,
    ):
        _check_size(height, width)
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise S2VError(f"num_frames must be a whole number of at least 1, not {num_frames}.")
        if not fps > 0:
            raise S2VError(f"fps must be positive, not {fps}.")
        self.files, self.captions, self.subjects = files, captions, subjects or {}
        self.height, self.width, self.num_frames, self.fps = height, width, num_frames, fps

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> VideoSample:
        path = self.files[_check_index(index, len(self))]
        frames = [
            np.asarray(resize_and_crop(Image.fromarray(frame), self.height, self.width))
            for frame in _read_clip(path, self.num_frames, self.fps)
        ]
        subject = self.subjects.get(path.name)
        if subject is not None:
            subject = resize_and_crop(_read_image(subject, f"{path.name}'s reference"), self.height, self.width)
        return VideoSample(frames=np.stack(frames), caption=self.captions.get(path.name, ""), subject=subject)

    def missing_subjects(self) -> list[str]:
        """Clips whose captions line lists no `reference` image: they cannot train with `reference_frame=subject`."""
        return [path.name for path in self.files if path.name not in self.subjects]

    @classmethod
    def from_folder(
        cls,
        folder: str | Path,
        height: int,
        width: int,
        num_frames: int,
        fps: float,
        captions: str | Path | None = None,
    ) -> VideoDataset:
        """The .mp4/.webm/.mov files directly in `folder`, sorted by name so indices are reproducible.

        `captions` is a CSV (`file`, `caption` columns) or JSONL ({"file", "caption"}) matched by file name; an
        optional `reference` field names an image of the clip's subject, relative to the captions file.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise S2VError(f"Video folder not found: {folder}")
        files = sorted(path for path in folder.iterdir() if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file())
        if not files:
            raise S2VError(f"No {'/'.join(VIDEO_SUFFIXES)} files in {folder}.")
        texts, subjects = _read_captions(Path(captions)) if captions is not None else ({}, {})
        return cls(files, texts, height, width, num_frames, fps, subjects)


def open_datasets(config: TrainConfig) -> tuple[PairDataset | None, VideoDataset | None]:
    """The run's identity pairs and its clips, each None when no step of the run can use it.

    With `data.synthetic`, the small synthetic set is written under output_dir/data first, once:
    run this under `accelerator.main_process_first()` so the other processes find it written.
    """
    data = config.data
    pairs, videos, captions = data.pairs, data.videos, data.video_captions
    if data.synthetic:
        folder = Path(config.run.output_dir) / "data"
        if not (folder / "captions.jsonl").exists():
            write_synthetic_dataset(
                folder, height=data.height, width=data.width, num_frames=data.num_frames, seed=config.run.seed
            )
        pairs, videos, captions = folder / "pairs.jsonl", folder / "videos", folder / "captions.jsonl"
    pair_set = _open_pairs(str(pairs), data) if config.uses_pairs else None
    video_set = None
    if config.uses_videos:
        video_set = VideoDataset.from_folder(videos, data.height, data.width, data.num_frames, data.fps, captions)
        if len(video_set) == 0:
            raise S2VError(f"No clips (.mp4, .webm, .mov) in {videos}; check data.videos.")
        if subject_references(config.tasks) and (missing := video_set.missing_subjects()):
            raise S2VError(
                f"tasks.reference_frame=subject needs each clip's subject image (a 'reference' field in "
                f"{captions}); {len(missing)} of {len(video_set)} clips have none, e.g. {missing[0]}."
            )
    return pair_set, video_set


def _open_pairs(pairs: str, data) -> PairDataset:
    if pairs.endswith(".jsonl"):
        return PairDataset.from_jsonl(pairs, data.height, data.width)
    return PairDataset.from_subjects200k(pairs, data.height, data.width, data.min_quality, data.pair_padding)


def write_synthetic_dataset(
    folder: str | Path,
    num_pairs: int = 32,
    num_videos: int = 16,
    height: int = 32,
    width: int = 48,
    num_frames: int = 9,
    seed: int = 0,
) -> tuple[Path, Path, Path]:
    """A tiny training set of coloured shapes, the same for the same seed, for smoke runs and tests.

    Pairs show a shape on white and then on a coloured background; clips show a shape crossing a
    background, each listing its shape on white as its `reference`. Returns (pairs JSONL, video folder,
    captions JSONL).
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    (folder / "pairs").mkdir(parents=True, exist_ok=True)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    pair_lines = [_write_synthetic_pair(folder, index, height, width, rng) for index in range(num_pairs)]
    caption_lines = [
        _write_synthetic_clip(folder, index, height, width, num_frames, rng) for index in range(num_videos)
    ]
    pairs_path, captions_path = folder / "pairs.jsonl", folder / "captions.jsonl"
    pairs_path.write_text("".join(json.dumps(line) + "\n" for line in pair_lines))
    captions_path.write_text("".join(json.dumps(line) + "\n" for line in caption_lines))
    return pairs_path, folder / "videos", captions_path


class _Subjects200KRows:
    """The kept rows of a Subjects200K table; a row's composite is decoded only when its pair is asked for."""

    def __init__(self, table, rows: list[int], source: str, padding: int):
        from datasets import Image as ImageFeature

        columns = [name for name in ("image", "description") if name in table.column_names]
        self.table = table.select_columns(columns).cast_column("image", ImageFeature(decode=False))
        self.rows, self.source, self.padding = rows, source, padding

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, pair: int) -> _Pair:
        row_index = self.rows[pair]
        row = self.table[row_index]
        where = f"row {row_index} of {self.source}"
        data = (row["image"] or {}).get("bytes")
        if not data:
            raise UnreadableSample(f"{where}: the row has no image bytes")
        left, right = _split_halves(_read_image(data, where), self.padding, where)
        description = row.get("description") or {}
        return _Pair(left, right, description.get("description_0") or "", description.get("description_1") or "")


def _load_subjects200k(source: str):
    """The `datasets` table for local parquet files, or for a Hub id when `source` is not a local path."""
    import datasets

    files = _parquet_files(source)
    try:
        if files is None:
            return datasets.load_dataset(source, split="train")
        return datasets.load_dataset("parquet", data_files=files, split="train")
    except Exception as error:  # datasets raises anything from fsspec, pyarrow or the Hub client
        if files is None:
            raise S2VError(
                f"'{source}' is neither a local path nor a dataset reachable on the Hugging Face Hub "
                f"({first_line(error)}). {DOWNLOAD_HINT}"
            ) from None
        raise S2VError(f"Cannot read the parquet data in {source}: {first_line(error)}") from None


def _parquet_files(source: str) -> list[str] | None:
    """The parquet files `source` names (a file, a folder or a glob), or None when it reads as a Hub id."""
    path = Path(source).expanduser()
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        files = sorted(str(file) for file in path.rglob("*.parquet"))
        if not files:
            raise S2VError(f"No .parquet files under {source}. {DOWNLOAD_HINT}")
        return files
    if any(char in source for char in "*?["):
        files = sorted(glob.glob(os.path.expanduser(source), recursive=True))
        if not files:
            raise S2VError(f"No files match {source}. {DOWNLOAD_HINT}")
        return files
    if re.fullmatch(r"(\w[\w.-]*/)?\w[\w.-]*", source) and not source.endswith(".parquet"):
        return None
    raise S2VError(f"Subjects200K data not found at {source}. {DOWNLOAD_HINT}")


def _rows_passing(table, min_quality: int) -> list[int]:
    """Rows whose three scores all reach `min_quality`, from the score column alone; no assessment fails."""
    if "quality_assessment" not in table.column_names:
        return []
    scores = table.data.column("quality_assessment").to_pylist()
    return [row for row, score in enumerate(scores) if _passes(score, min_quality)]


def _passes(score: dict | None, min_quality: int) -> bool:
    values = [(score or {}).get(name) for name in QUALITY_SCORES]
    return all(value is not None and value >= min_quality for value in values)


def _split_halves(image: Image.Image, padding: int, where: str) -> tuple[Image.Image, Image.Image]:
    """The left and right images of a side-by-side composite, without the `padding` border around each."""
    width, height = image.size
    half = width // 2
    if half <= 2 * padding or height <= 2 * padding:
        raise UnreadableSample(f"{where}: {width}x{height} is too small for two halves with {padding} px padding")
    return (
        image.crop((padding, padding, half - padding, height - padding)),
        image.crop((half + padding, padding, width - padding, height - padding)),
    )


class _PairFiles(NamedTuple):
    subject: Path
    target: Path
    subject_caption: str
    target_caption: str
    where: str


class _JsonlPairs:
    """JSONL pair records whose images are opened only when their pair is asked for."""

    def __init__(self, records: list[_PairFiles]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, pair: int) -> _Pair:
        record = self.records[pair]
        subject, target = _read_image(record.subject, record.where), _read_image(record.target, record.where)
        return _Pair(subject, target, record.subject_caption, record.target_caption)


def _pair_files(record: dict, folder: Path, where: str) -> _PairFiles:
    """One JSONL pair record, checked now so a typo fails at start-up and not mid-run."""
    for key in ("subject", "target"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise S2VError(f"{where}: needs '{key}', the path of an image.")
    for key in ("subject_caption", "target_caption"):
        if not isinstance(record.get(key, ""), str):
            raise S2VError(f"{where}: '{key}' must be text.")
    return _PairFiles(
        folder / record["subject"],
        folder / record["target"],
        record.get("subject_caption", ""),
        record.get("target_caption", ""),
        where,
    )


def _read_image(source: Path | bytes, where: str) -> Image.Image:
    """RGB on white through s2v's own loader; any decoding failure becomes `UnreadableSample`."""
    try:
        return load_subject(Image.open(io.BytesIO(source)) if isinstance(source, bytes) else source)
    except UnidentifiedImageError:  # only for bytes: load_subject turns it into an S2VError for files
        raise UnreadableSample(f"{where}: the image is in no format PIL can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # S2VError is a ValueError
        raise UnreadableSample(f"{where}: {first_line(error)}") from None


def _read_clip(path: Path, num_frames: int, fps: float) -> list[np.ndarray]:
    """Source frames nearest to the times k / fps, k < num_frames; stops decoding once it has them."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
        source_fps = float(meta.get("fps") or 0)
        if source_fps <= 0:
            raise UnreadableSample(f"{path.name}: the file gives no frame rate")
        wanted = [math.floor(k * source_fps / fps + 0.5) for k in range(num_frames)]
        width, height = meta["size"]
        frames: dict[int, np.ndarray] = {}
        count = 0
        for data in reader:
            if count in wanted:
                frames[count] = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            count += 1
            if count > wanted[-1]:
                break
    except (OSError, RuntimeError, ValueError) as error:
        raise UnreadableSample(f"{path.name}: not a readable video ({first_line(error)})") from None
    finally:
        reader.close()  # stops ffmpeg instead of decoding the rest of a long clip
    if count <= wanted[-1]:
        raise UnreadableSample(
            f"{path.name} is too short: has {count} frames at {source_fps:g} fps, needs {wanted[-1] + 1} "
            f"for {num_frames} frames at {fps:g} fps"
        )
    return [frames[index] for index in wanted]


def _read_captions(path: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """File name -> caption, and file name -> subject image where a row gives one (`reference`), from a CSV
    with `file` and `caption` columns or a JSONL of {"file", "caption"}."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".json"):
        raise S2VError(f"Captions must be a .csv or .jsonl file, not {path.name}.")
    captions, subjects = {}, {}
    for where, row in _read_csv(path) if suffix == ".csv" else _read_jsonl(path):
        if not isinstance(row.get("file"), str) or not isinstance(row.get("caption"), str):
            raise S2VError(f"{where}: needs text 'file' and 'caption' fields.")
        captions[Path(row["file"]).name] = row["caption"]
        if row.get("reference"):
            if not isinstance(row["reference"], str):
                raise S2VError(f"{where}: 'reference' must be the path of an image.")
            subjects[Path(row["file"]).name] = path.parent / row["reference"]
    return captions, subjects


def _read_csv(path: Path) -> list[tuple[str, dict]]:
    if not path.is_file():
        raise S2VError(f"Captions file not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"file", "caption"} <= set(reader.fieldnames or ()):
            raise S2VError(f"{path.name} needs a header row with 'file' and 'caption' columns.")
        return [(f"{path.name} line {reader.line_num}", row) for row in reader]


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    """(where, object) for each non-blank line; `where` names the file and line for error messages."""
    if not path.is_file():
        raise S2VError(f"File not found: {path}")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise S2VError(f"{where} is not valid JSON: {error.msg}.") from None
        if not isinstance(record, dict):
            raise S2VError(f"{where} must be a JSON object, not {type(record).__name__}.")
        records.append((where, record))
    return records


def _check_size(height: int, width: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise S2VError(f"{name} must be a whole number of pixels, at least 1, not {value}.")


def _check_index(index: int, length: int) -> int:
    index = operator.index(index)
    if not 0 <= index < length:
        raise IndexError(f"index {index} is out of range for {length} items")
    return index


def _write_synthetic_pair(folder: Path, index: int, height: int, width: int, rng: np.random.Generator) -> dict:
    """One shape centred on white (subject) and at a random place and size on a background (target)."""
    shape, colour, background = _pick(rng, SHAPES), _pick(rng, list(COLOURS)), _pick(rng, list(BACKGROUNDS))
    side = min(height, width)
    subject = _synthetic_subject(height, width, shape, colour)
    size = int(rng.integers(round(0.3 * side), round(SYNTHETIC_SUBJECT_SIZE * side) + 1))
    corner = (int(rng.integers(width - size + 1)), int(rng.integers(height - size + 1)))
    target = _shape_image(height, width, BACKGROUNDS[background], shape, COLOURS[colour], (*corner, size))
    names = {"subject": f"pairs/pair_{index:03d}_subject.png", "target": f"pairs/pair_{index:03d}_target.png"}
    subject.save(folder / names["subject"])
    target.save(folder / names["target"])
    return {
        **names,
        "subject_caption": f"a {colour} {shape} on white",
        "target_caption": f"a {colour} {shape} on {background}",
    }


def _write_synthetic_clip(
    folder: Path, index: int, height: int, width: int, num_frames: int, rng: np.random.Generator
) -> dict:
    """A shape crossing a background in a straight line, from one edge towards the other."""
    shape, colour, background = _pick(rng, SHAPES), _pick(rng, list(COLOURS)), _pick(rng, list(BACKGROUNDS))
    direction = _pick(rng, list(DIRECTIONS))
    size = max(1, min(height, width) // 3)
    step_x, step_y = DIRECTIONS[direction]
    start = (int(rng.integers(width - size + 1)), int(rng.integers(height - size + 1)))
    frames = []
    for frame in range(num_frames):
        progress = frame / max(1, num_frames - 1)
        x = start[0] if step_x == 0 else round((width - size) * (progress if step_x > 0 else 1 - progress))
        y = start[1] if step_y == 0 else round((height - size) * (progress if step_y > 0 else 1 - progress))
        frames.append(_shape_image(height, width, BACKGROUNDS[background], shape, COLOURS[colour], (x, y, size)))
    name = f"clip_{index:03d}.mp4"
    save_video(frames, folder / "videos" / name, fps=8)
    subject = f"videos/clip_{index:03d}_subject.png"
    _synthetic_subject(height, width, shape, colour).save(folder / subject)
    return {"file": name, "caption": f"a {colour} {shape} moves {direction} over {background}", "reference": subject}


def _synthetic_subject(height: int, width: int, shape: str, colour: str) -> Image.Image:
    """The shape centred on white, its box `SYNTHETIC_SUBJECT_SIZE` of the shorter side: a pair's or clip's subject."""
    size = round(SYNTHETIC_SUBJECT_SIZE * min(height, width))
    return _shape_image(height, width, WHITE, shape, COLOURS[colour], _centred(height, width, size))


def _shape_image(
    height: int, width: int, background: tuple, shape: str, colour: tuple, box: tuple[int, int, int]
) -> Image.Image:
    """`shape` filling the square `box` = (left, top, size) on a plain `background`."""
    image = Image.new("RGB", (width, height), background)
    pen = ImageDraw.Draw(image)
    left, top, size = box
    right, bottom = left + size - 1, top + size - 1
    if shape == "circle":
        pen.ellipse((left, top, right, bottom), fill=colour)
    elif shape == "square":
        pen.rectangle((left, top, right, bottom), fill=colour)
    else:
        pen.polygon([(left, bottom), (right, bottom), ((left + right) / 2, top)], fill=colour)
    return image


def _centred(height: int, width: int, size: int) -> tuple[int, int, int]:
    return (width - size) // 2, (height - size) // 2, size


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]
