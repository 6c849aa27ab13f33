"""`s2v eval`: the paper's benchmark protocol over a folder of subjects and a file of prompts.

Every subject meets each of its prompts once (the paper: 30 subjects x 4 prompts, 50 steps, CFG 6,
seed 42). Videos are written atomically and never regenerated, so an interrupted run resumes where it
stopped; they are scored from the written files, and the scores land in a per-video CSV and in a
table (Markdown, CSV, JSON) beside the paper's Table 1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import S2VError
from .metrics import (
    CLIP_MODEL,
    DINO_MODEL,
    INTERPOLATOR,
    PAPER_INTERPOLATOR,
    RAFT_CHECKPOINT,
    RAFT_FILE,
    ClipScorer,
    DinoScorer,
    dynamic_degree,
    flow_midpoint,
    motion_smoothness,
    raft_flow,
)
from .subject import load_subject, prepare_subject
from .video import atomic_file, read_video, save_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CLASSES_FILE = "classes.json"
CLASS_PLACEHOLDER = "{class}"

METRICS = ("smoothness", "dynamic", "clip_t", "clip_i", "dino_i")
HEADERS = {
    "smoothness": "motion smooth.",
    "dynamic": "dynamic deg.",
    "clip_t": "CLIP-T",
    "clip_i": "CLIP-I",
    "dino_i": "DINO-I",
}
PAPER_TABLE = {
    "VideoBooth": (96.95, 51.67, 29.59, 66.06, 34.54),
    "OmniControl + I2V": (98.21, 51.67, 31.89, 72.58, 54.16),
    "BLIP + I2V": (97.53, 49.17, 28.19, 79.29, 56.58),
    "IP-Adapter + I2V": (97.21, 55.83, 26.97, 73.86, 45.18),
    "paper (2504.17816)": (98.72, 60.19, 32.24, 73.70, 59.29),
}
"""The paper's Table 1 (METHOD §6), in `METRICS` order."""


@dataclass(frozen=True)
class Protocol:
    """Everything that shapes a video; a results folder holds videos of one protocol only."""

    model: str
    lora: str | None
    height: int
    width: int
    num_frames: int
    fps: int
    steps: int = 50
    guidance: float = 6.0
    seed: int = 42
    lora_alpha: float | None = None
    lora_scale: float = 1.0
    dtype: str = "auto"
    quantize: str = "none"
    cache: str = "none"
    mag_ratios: list[float] | None = None
    """With `cache="mag"`: the ratios it ran on (other ratios, other videos)."""


@dataclass(frozen=True)
class MetricModels:
    """Which checkpoints score the videos (named in the table)."""

    clip: str = CLIP_MODEL
    dino: str = DINO_MODEL
    raft_weights: str | None = None
    """A local RAFT-large state dict; None is torchvision's C_T_V1 download."""
    interpolator: str = INTERPOLATOR

    def not_comparable(self) -> dict[str, str]:
        """Metric -> why its number cannot sit beside the paper's.

        A local folder or file counts as the paper's checkpoint when it carries that checkpoint's
        name (`./clip-vit-base-patch32`, `raft_large_C_T_V1-22a6c225.pth`), as our download advice makes it.
        """
        reasons = {"smoothness": f"interpolated with {self.interpolator}, not VBench's {PAPER_INTERPOLATOR}"}
        if not _same_checkpoint(self.clip, CLIP_MODEL):
            reasons["clip_t"] = reasons["clip_i"] = f"{self.clip} instead of {CLIP_MODEL}"
        if not _same_checkpoint(self.dino, DINO_MODEL):
            reasons["dino_i"] = f"{self.dino} instead of {DINO_MODEL}"
        if self.raft_weights is not None and Path(self.raft_weights).name != RAFT_FILE:
            reasons["dynamic"] = f"RAFT weights {self.raft_weights} instead of {RAFT_CHECKPOINT}"
        return reasons

    @property
    def flow(self) -> str:
        return RAFT_CHECKPOINT if self.raft_weights is None else f"RAFT-large from {self.raft_weights}"


@dataclass(frozen=True)
class Item:
    """One video of the benchmark: a subject and one of its prompts.

    Its id carries a hash of the image and the prompt, so an edited prompt or a replaced image is a new
    video, never an old one reused.
    """

    id: str
    subject: str
    image: Path
    prompt: str


@dataclass
class Scorers:
    """The loaded metric models; `flow` is a plain function (see `s2v.metrics`), so tests pass a constructed one.

    Only `metrics` are computed: without torchvision, CLIP-T, CLIP-I and DINO-I still run.
    """

    clip: ClipScorer | None
    dino: DinoScorer | None
    flow: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
    names: MetricModels = field(default_factory=MetricModels)
    metrics: tuple[str, ...] = METRICS

    @classmethod
    def load(cls, names: MetricModels, metrics: tuple[str, ...] = METRICS, device: str = "cpu") -> Scorers:
        """Every model the chosen metrics need, loaded up front so a missing one fails before any generation."""
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown or not metrics:
            raise S2VError(f"unknown metrics {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRICS)}.")
        flow = raft_flow(device, names.raft_weights) if {"dynamic", "smoothness"} & set(metrics) else None
        clip = ClipScorer.load(names.clip, device) if {"clip_t", "clip_i"} & set(metrics) else None
        dino = DinoScorer.load(names.dino, device) if "dino_i" in metrics else None
        return cls(clip, dino, flow, names, tuple(metric for metric in METRICS if metric in metrics))

    def score(
        self, prompt: str, reference: Image.Image, frames: np.ndarray, fps: float, metrics: Iterable[str]
    ) -> dict[str, float]:
        wanted, values = set(metrics), {}
        if {"clip_t", "clip_i"} & wanted:
            values["clip_t"], values["clip_i"] = self.clip.scores(prompt, reference, frames)
        if "dino_i" in wanted:
            values["dino_i"] = self.dino.image_score(reference, frames)
        if "dynamic" in wanted:
            values["dynamic"] = 100.0 * dynamic_degree(frames, fps, self.flow).dynamic
        if "smoothness" in wanted:
            values["smoothness"] = 100 * motion_smoothness(frames, flow_midpoint(self.flow))
        return {metric: values[metric] for metric in metrics}


def read_items(subjects: Path, prompts: Path) -> list[Item]:
    """Subjects (image files, names from their stems) x their prompts, checked before anything runs.

    The prompts file is JSON Lines (`{"prompt": ...}` for every subject, `{"subject": "dog", "prompt":
    ...}` for one) or plain text, one prompt a line. `{class}` in a prompt becomes the subject's class
    name from `classes.json` in the subjects folder (`{"dog": "dog", "duck_toy": "toy"}`).
    """
    if not subjects.is_dir():
        raise S2VError(f"--subjects {subjects} is not a folder of subject images.")
    files = [path for path in sorted(subjects.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise S2VError(f"{subjects} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    stems = [path.stem for path in files]
    twins = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twins:
        raise S2VError(f"{subjects} has two images named {', '.join(twins)}; subject names must be unique.")
    images = dict(zip(stems, files, strict=True))
    classes = _read_classes(subjects / CLASSES_FILE)
    lines = _read_prompts(prompts)
    unknown = sorted({name for name, _ in lines if name is not None} - set(images))
    if unknown:
        raise S2VError(f"{prompts} names subjects with no image in {subjects}: {', '.join(unknown)}.")
    items = []
    for name, image in images.items():
        load_subject(image)  # a broken image stops the run here, before any model loads
        digest = hashlib.sha256(image.read_bytes())
        for prompt in (prompt for subject, prompt in lines if subject in (None, name)):
            if CLASS_PLACEHOLDER in prompt:
                if name not in classes:
                    raise S2VError(
                        f"a prompt uses {CLASS_PLACEHOLDER} but {subjects / CLASSES_FILE} gives no class for {name}."
                    )
                prompt = prompt.replace(CLASS_PLACEHOLDER, classes[name])
            key = digest.copy()
            key.update(prompt.encode())
            items.append(Item(f"{name}-{key.hexdigest()[:10]}", name, image, prompt))
    if not items:
        raise S2VError(f"{prompts} gives no prompt to any subject in {subjects}.")
    return items


def run(
    items: list[Item],
    protocol: Protocol,
    out: Path,
    scorers: Scorers,
    load_pipeline: Callable[[], object] | None,
    progress: Callable[[Iterable], Iterable] = lambda values: values,
) -> dict:
    """Generate what is missing, score what is unscored, write the per-video CSV and the table.

    `load_pipeline` is called only if some video is missing; None means score existing videos only.
    Returns the table as a dict (also written as `table.json`).
    """
    _claim(out, protocol)
    missing = [item for item in items if not _video_path(out, item).is_file()]
    if missing and load_pipeline is None:
        raise S2VError(f"{len(missing)} of {len(items)} videos are not in {out / 'videos'} yet (e.g. {missing[0].id}).")
    pipe = load_pipeline() if missing else None
    scores = _read_scores(out, scorers.names)
    references: dict[str, Image.Image] = {}
    for item in progress(items):
        if item.subject not in references:
            references[item.subject] = _reference(out, item, protocol)
        if not _video_path(out, item).is_file():
            _generate(pipe, item, references[item.subject], protocol, out)
            scores["rows"].pop(item.id, None)
        row = scores["rows"].setdefault(item.id, {})
        missing_metrics = [metric for metric in scorers.metrics if metric not in row]
        if missing_metrics:
            row.update(_score(scorers, item, references[item.subject], _video_path(out, item), missing_metrics))
            _write_json(out / "scores.json", scores)
    rows = [{**asdict(item), "image": str(item.image), **scores["rows"][item.id]} for item in items]
    _write_text(out / "per_video.csv", _csv(rows, ["id", "subject", "image", "prompt", *scorers.metrics]))
    return write_table(out, rows, protocol, scorers.names, scorers.metrics)


def write_table(
    out: Path, rows: list[dict], protocol: Protocol, names: MetricModels, metrics: tuple[str, ...] = METRICS
) -> dict:
    """Our means beside the paper's Table 1, as Markdown, CSV and JSON; metrics not computed show as n/a."""
    ours = {metric: float(np.mean([row[metric] for row in rows])) if metric in metrics else None for metric in METRICS}
    flagged = names.not_comparable()
    table = {
        "videos": len(rows),
        "protocol": asdict(protocol),
        "checkpoints": asdict(names),
        "not_comparable": flagged,
        "rows": {
            **{name: dict(zip(METRICS, values, strict=True)) for name, values in PAPER_TABLE.items()},
            "ours": ours,
        },
    }
    _write_json(out / "table.json", table)
    header = [HEADERS[metric] + (" †" if metric in flagged else "") for metric in METRICS]
    lines = [f"| method | {' | '.join(header)} |", "|---" * (len(METRICS) + 1) + "|"]
    for name, values in table["rows"].items():
        label = f"**ours** ({len(rows)} videos)" if name == "ours" else name
        cells = ["n/a" if values[metric] is None else f"{values[metric]:.2f}" for metric in METRICS]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    notes = [f"† {HEADERS[metric]}: {reason}" for metric, reason in flagged.items()]
    checkpoints = (
        f"Checkpoints: CLIP {names.clip}; DINO {names.dino}; flow {names.flow}; interpolator {names.interpolator}."
    )
    setup = (
        f"Ours: {protocol.model}{' + ' + protocol.lora if protocol.lora else ''}, {protocol.steps} steps, CFG "
        f"{protocol.guidance:g}, seed {protocol.seed}, {protocol.width}x{protocol.height}, "
        f"{protocol.num_frames} frames{'' if protocol.cache == 'none' else f', --cache {protocol.cache}'}."
    )
    _write_text(out / "table.md", "\n".join([*lines, "", *notes, checkpoints, setup]) + "\n")
    csv_rows = [{"method": name, **values} for name, values in table["rows"].items()]
    _write_text(out / "table.csv", _csv(csv_rows, ["method", *METRICS]))
    return table


def _score(scorers: Scorers, item: Item, reference: Image.Image, video: Path, metrics: list[str]) -> dict:
    try:
        frames, fps = read_video(video)
        return scorers.score(item.prompt, reference, frames, fps, metrics)
    except S2VError as error:
        raise S2VError(f"{item.id}: {error} Delete the file to have it generated again.") from None


def _same_checkpoint(source: str, checkpoint: str) -> bool:
    return source == checkpoint or Path(source).name == checkpoint.split("/")[-1]


def _claim(out: Path, protocol: Protocol) -> None:
    """Refuse to mix videos of two protocols in one folder."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "protocol.json"
    wanted = asdict(protocol)
    if path.is_file():
        defaults = {f.name: f.default for f in fields(Protocol) if f.default is not MISSING}
        recorded = {**defaults, **_read_json(path)}  # a folder made before a setting existed used its default
        if recorded != wanted:
            changed = ", ".join(
                f"{key} {recorded.get(key)} -> {wanted[key]}" for key in wanted if recorded.get(key) != wanted[key]
            )
            raise S2VError(f"{out} holds videos made another way ({changed}); use another --out.")
    else:
        _write_json(path, wanted)


def _reference(out: Path, item: Item, protocol: Protocol) -> Image.Image:
    """The subject as the model sees it (on white, fitted to the frame): what CLIP-I and DINO-I compare with."""
    reference = prepare_subject(item.image, protocol.width, protocol.height)
    path = out / "references" / f"{item.subject}.png"
    path.parent.mkdir(exist_ok=True)
    with atomic_file(path) as temporary:
        reference.save(temporary, format="PNG")
    return reference


def _generate(pipe, item: Item, reference: Image.Image, protocol: Protocol, out: Path) -> None:
    output = pipe(
        image=reference,
        prompt=item.prompt,
        height=protocol.height,
        width=protocol.width,
        num_frames=protocol.num_frames,
        num_inference_steps=protocol.steps,
        guidance_scale=protocol.guidance,
        seed=protocol.seed,
        cache=protocol.cache,
    )
    save_video(output.frames, _video_path(out, item), fps=protocol.fps)


def _video_path(out: Path, item: Item) -> Path:
    return out / "videos" / f"{item.id}.mp4"


def _read_scores(out: Path, names: MetricModels) -> dict:
    """Scores kept from an earlier run, if they were computed with the same checkpoints."""
    path = out / "scores.json"
    if path.is_file():
        kept = _read_json(path)
        if kept.get("checkpoints") == asdict(names):
            return kept
    return {"checkpoints": asdict(names), "rows": {}}


def _read_classes(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        classes = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise S2VError(f"{path} is not valid JSON ({error}).") from None
    if not isinstance(classes, dict) or not all(isinstance(value, str) for value in classes.values()):
        raise S2VError(f'{path} must map subject names to class names, e.g. {{"dog": "dog"}}.')
    return classes


def _read_prompts(path: Path) -> list[tuple[str | None, str]]:
    """(subject or None for every subject, prompt) per line; blank lines are skipped."""
    if not path.is_file():
        raise S2VError(f"--prompts {path} is not a file.")
    if path.suffix.lower() not in (".jsonl", ".txt"):
        raise S2VError(f"--prompts takes a .jsonl or .txt file, not {path.name}.")
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix.lower() != ".jsonl":
            lines.append((None, line.strip()))
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise S2VError(f"{path} line {number} is not JSON ({error.msg}).") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("prompt"), str) or not entry["prompt"].strip():
            raise S2VError(f'{path} line {number} needs a "prompt" string.')
        subject = entry.get("subject")
        lines.append((None if subject is None else str(subject), re.sub(r"\s+", " ", entry["prompt"]).strip()))
    if not lines:
        raise S2VError(f"{path} holds no prompts.")
    return lines


def _csv(rows: list[dict], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {key: f"{value:.4f}" if isinstance(value, float) else value for key, value in row.items()} for row in rows
    )
    return buffer.getvalue()


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise S2VError(f"{path} is damaged ({error}); delete it and run again.") from None
    if not isinstance(value, dict):
        raise S2VError(f"{path} is damaged (not a JSON object); delete it and run again.")
    return value


def _write_json(path: Path, value: dict) -> None:
    _write_text(path, json.dumps(value, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
