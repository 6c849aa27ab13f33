"""`s2v-nano eval`: the nano model measured against the world's ground truth.

Every video is generated from an identity-free prompt ("it moves left on grass") for a
held-out subject, so the subject can only come from the reference image. Each run is
measured beside two baselines on the same prompts and seeds: no reference (the stock
text-to-video path), and a shuffled reference (another held-out subject's image). The
analyzer reads shape, colour, pattern, accent, scene and trajectory from every video.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from s2v.errors import S2VError

from .analyze import ClipAnalysis, analyze_clip
from .world import MOTIONS, SUBJECT_SETS, Identity, eval_items, render_subject, seen_subjects, split_identities

CONDITIONS = ("reference", "shuffled", "none", "named", "drawn")
"""The subject's own reference; another held-out subject's; none at all; none, but the prompt names the
subject ("a red disc with white checks moves left on grass"): can text alone reach an unseen combination?;
the subject as a user would draw it (`s2v_nano.drawn`: another renderer, any canvas, some JPEG)."""
DRAWINGS_PER_SUBJECT = 2
ATTRIBUTES = ("shape", "colour", "pattern", "accent")
CHANCE = {"shape": 20.0, "colour": 16.7, "pattern": 25.0, "motion": 12.5, "scene": 25.0}
COPY_DIFFERENCE = 0.1
"""A video copies its reference when its median frame is within this mean absolute difference (0-1 scale)."""


@dataclass
class EvalSettings:
    seed: int = 0
    """The world's seed: which subjects are held out."""
    subjects: str = "held-out"
    """Whose items: the held-out subjects (`SUBJECT_SETS`), or as many training subjects ("seen"), spread alike."""
    per_subject: int = 8
    """Prompts per subject, one motion each in turn: 8 gives 24 items of each motion, 16 gives 48."""
    limit: int | None = None
    """Evaluate only the first `limit` items (a quick look); the full set is 24 subjects x `per_subject` prompts."""
    steps: int | None = None
    """Denoising steps; None: the model's preset's (the app's and the CLI's)."""
    guidance: float | None = None
    """Guidance scale; None: the model's preset's."""
    cache: str = "none"
    """A cache acceleration (`s2v.caching.CACHE_METHODS`), to measure what it changes."""
    batch_size: int = 16
    size: int = 48
    conditions: tuple[str, ...] = CONDITIONS


@dataclass
class ConditionScores:
    """Percentages over one condition's videos (smoothness and reference similarity are 0-1 means)."""

    videos: int
    identity: float
    """All four attributes match the subject shown (the reference), or the item's own subject without one."""
    attributes: dict[str, float]
    identity_of_item: float
    """All four attributes match the item's own subject, whatever was shown: chance-level for `shuffled`."""
    motion: float
    dynamic: float
    scene: float
    smoothness: float
    copy: float
    detected: float
    present: float
    """The subject is found in every frame (it never fades in, vanishes or leaves)."""
    motion_strict: float
    """The right motion with the subject present in every frame: motion read from a partial track does not count."""
    strict_by_motion: dict[str, list[int]] = field(default_factory=dict)
    """Strict motion per prompted motion as [right, items]: "still" and "circle" fail apart from the rest."""


@dataclass
class EvalReport:
    settings: dict
    scores: dict[str, ConditionScores] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"settings": self.settings, "scores": {k: asdict(v) for k, v in self.scores.items()}}, indent=1
        )

    def table(self) -> str:
        """Markdown: one row per condition, chance levels in the header."""
        header = (
            "| condition | identity | shape | colour | pattern | accent | motion | strict motion | present | dynamic "
            "| scene | smooth | copy |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        )
        rows = []
        for name, s in self.scores.items():
            a = s.attributes
            rows.append(
                f"| {name} | {s.identity:.1f} | {a['shape']:.1f} | {a['colour']:.1f} | {a['pattern']:.1f} | "
                f"{a['accent']:.1f} | {s.motion:.1f} | {s.motion_strict:.1f} | {s.present:.1f} | {s.dynamic:.1f} | "
                f"{s.scene:.1f} | {s.smoothness:.3f} | {s.copy:.1f} |"
            )
        return header + "\n".join(rows)

    def motion_table(self) -> str:
        """Markdown: strict motion per prompted motion, k/n items, one row per condition (chance 1/8)."""
        header = f"| condition | {' | '.join(MOTIONS)} |\n|---|{'---|' * len(MOTIONS)}\n"
        rows = []
        for name, s in self.scores.items():
            cells = [f"{k}/{n}" for k, n in (s.strict_by_motion.get(m, (0, 0)) for m in MOTIONS)]
            rows.append(f"| {name} | {' | '.join(cells)} |")
        return header + "\n".join(rows)


def evaluate(pipe, settings: EvalSettings | None = None, progress: bool = True) -> EvalReport:
    """Generate every item under every condition and score the videos with the analyzer."""
    settings = settings or EvalSettings()
    preset = pipe.preset
    settings = replace(
        settings,
        steps=preset.num_inference_steps if settings.steps is None else settings.steps,
        guidance=preset.guidance_scale if settings.guidance is None else settings.guidance,
    )
    unknown = set(settings.conditions) - set(CONDITIONS)
    if unknown:
        raise S2VError(f"Unknown condition(s) {sorted(unknown)}; choose from {', '.join(CONDITIONS)}.")
    if settings.subjects not in SUBJECT_SETS:
        raise S2VError(f"Unknown subjects {settings.subjects!r}; choose from {', '.join(SUBJECT_SETS)}.")
    held = split_identities(settings.seed)[1] if settings.subjects == "held-out" else seen_subjects(settings.seed)
    items = eval_items(held, settings.per_subject)[: settings.limit]
    references = {identity.id: render_subject(identity, settings.size, settings.size) for identity in held}
    shown = {
        "reference": [item["identity"] for item in items],
        "shuffled": [_shuffled(held, item["identity"]) for item in items],
        "none": [None] * len(items),
        "named": [None] * len(items),
        "drawn": [item["identity"] for item in items],
    }
    report = EvalReport(settings=asdict(settings))
    for condition in settings.conditions:
        if condition == "drawn":
            images = _drawn_references(held, items, settings.seed, settings.per_subject)
        else:
            images = [references.get(identity) for identity in shown[condition]]
        videos = _generate(pipe, items, images, settings, progress, condition)
        analyses = [analyze_clip(video) for video in videos]
        report.scores[condition] = score(items, shown[condition], analyses, videos, references)
    return report


def score(
    items: list[dict], shown: list[str | None], analyses: list[ClipAnalysis], videos, references
) -> ConditionScores:
    """The condition's percentages; `shown[i]` is the identity id whose image was the reference (or None)."""
    targets = [Identity.from_id(s or item["identity"]) for item, s in zip(items, shown, strict=True)]
    own = [Identity.from_id(item["identity"]) for item in items]

    def matches(identities: list[Identity], attribute: str) -> np.ndarray:
        return np.array(
            [getattr(a, attribute) == getattr(t, attribute) for a, t in zip(analyses, identities, strict=True)]
        )

    every = np.all([matches(targets, name) for name in ATTRIBUTES], axis=0)
    present = [bool(a.found.all()) for a in analyses]
    every_own = np.all([matches(own, name) for name in ATTRIBUTES], axis=0)
    copies = [s is not None and _copies(video, references[s]) for video, s in zip(videos, shown, strict=True)]
    right = [p and a.motion == item["motion"] for p, a, item in zip(present, analyses, items, strict=True)]
    asked = [item["motion"] for item in items]
    by_motion = {
        motion: [sum(r for r, m in zip(right, asked, strict=True) if m == motion), asked.count(motion)]
        for motion in MOTIONS
        if motion in asked
    }
    return ConditionScores(
        videos=len(items),
        identity=_percent(every),
        attributes={name: _percent(matches(targets, name)) for name in ATTRIBUTES},
        identity_of_item=_percent(every_own),
        motion=_percent([a.motion == item["motion"] for a, item in zip(analyses, items, strict=True)]),
        dynamic=_percent([a.moving for a in analyses]),
        scene=_percent([a.scene == item["scene"] for a, item in zip(analyses, items, strict=True)]),
        smoothness=round(float(np.mean([a.smoothness for a in analyses])), 4),
        copy=_percent(copies),
        detected=_percent([a.shape is not None for a in analyses]),
        present=_percent(present),
        motion_strict=_percent(right),
        strict_by_motion=by_motion,
    )


def _generate(pipe, items, references, settings: EvalSettings, progress: bool, condition: str) -> list[np.ndarray]:
    """uint8 videos, generated in batches; each batch's noise comes from its first item's seed."""
    videos = []
    batches = range(0, len(items), settings.batch_size)
    for start in tqdm(batches, desc=f"eval-nano {condition}", disable=not progress):
        chunk = items[start : start + settings.batch_size]
        prompts = [item["caption" if condition == "named" else "prompt"] for item in chunk]
        generator = torch.Generator().manual_seed(chunk[0]["seed"])
        common = dict(
            height=settings.size,
            width=settings.size,
            num_frames=9,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            generator=generator,
            output_type="np",
            cache=settings.cache,
        )
        subjects = None if references[0] is None else references[start : start + len(chunk)]
        frames = pipe(subjects, prompts, **common).frames
        videos.extend((np.asarray(frames) * 255).round().astype(np.uint8))
    return videos


def _drawn_references(held: list[Identity], items: list[dict], seed: int, per_subject: int) -> list[Image.Image]:
    """Each item's subject as drawn by the second renderer: its subject's drawings taken in turn."""
    from .drawn import drawings, open_drawing

    drawn: dict[str, list[Image.Image]] = {}
    for _, identity, data in drawings(held, DRAWINGS_PER_SUBJECT, seed):
        drawn.setdefault(identity.id, []).append(open_drawing(data))
    return [
        drawn[item["identity"]][(index + index // per_subject) % DRAWINGS_PER_SUBJECT]  # each motion meets each
        for index, item in enumerate(items)
    ]


def _shuffled(held: list[Identity], identity: str) -> str:
    """Another held-out subject: the one half the list away, so a subject never gets its own image."""
    ids = [h.id for h in held]
    return ids[(ids.index(identity) + len(ids) // 2) % len(ids)]


def _copies(video: np.ndarray, reference: Image.Image) -> bool:
    difference = np.abs(video.astype(np.float32) - np.asarray(reference, np.float32)[None]).mean(axis=(1, 2, 3))
    return bool(np.median(difference) / 255 < COPY_DIFFERENCE)


def _percent(values) -> float:
    return round(float(np.mean(values)) * 100, 1) if len(values) else 0.0
