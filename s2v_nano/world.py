"""The nano world: flat-coloured subjects moving over simple scenes, with every attribute known.

An identity is shape x body colour x pattern x accent (the pattern's colour). A plain subject has
no accent, so all 5 x 6 x (1 + 3 x 2) = 210 identities look different. Subjects keep a band of
body colour along their outline (`INSET`) and draw the pattern only inside it: the silhouette is
always body-coloured, so a white accent on a white reference, or a black one at night, never
eats into the outline the analyzer measures.

Everything is deterministic per seed: each clip, pair and split draws from its own generator
`default_rng([seed, stream, index])`, so one set never shifts another.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from s2v.errors import S2VError
from s2v.subject import WHITE
from s2v.video import atomic_folder

SHAPES = ("disc", "square", "triangle", "diamond", "bar")
"""Outlines inscribed in one square box, told apart even as blurred blobs: the triangle points up, the
diamond stands tall (like the card suit), the bar lies wide. A plus-shaped cross was dropped: at blur
sigma 1.5 px its notches fill in and it reads as a disc. "disc", not "circle": "circle" is a motion,
and evaluation prompts must carry no shape word."""

COLOURS = {
    "red": (225, 35, 35),
    "orange": (250, 130, 0),
    "yellow": (245, 225, 40),
    "magenta": (225, 45, 200),
    "cyan": (20, 210, 220),
    "blue": (45, 70, 235),
}
"""Saturated hues at least 100 RGB units from every scene, from white and black, and from each other."""

PATTERNS = ("plain", "stripes", "dots", "checks")
ACCENTS = {"black": (20, 20, 20), "white": (255, 255, 255)}

SCENES = {
    "grass": (70, 140, 50),
    "sky": (150, 200, 245),
    "wooden floor": (160, 115, 70),
    "night": (20, 24, 56),
}
"""Each scene's mean colour; the drawn backgrounds add gentle texture (at most ~20 units) around it."""

MOTIONS = ("left", "right", "up", "down", "circle", "zoom in", "zoom out", "still")

SCENE_PHRASES = {"grass": "on grass", "sky": "in the sky", "wooden floor": "on a wooden floor", "night": "at night"}
MOTION_PHRASES = {
    "left": "moves left",
    "right": "moves right",
    "up": "moves up",
    "down": "moves down",
    "circle": "moves in a circle",
    "zoom in": "comes closer",
    "zoom out": "moves away",
    "still": "stays still",
}
IDENTITY_WORDS = frozenset((*SHAPES, *COLOURS, *PATTERNS, *ACCENTS))
"""Words that name an identity attribute; evaluation prompts contain none of them."""

FPS = 8
HELD_OUT = 24
SUBJECT_SETS = ("held-out", "seen")
"""Whose items an evaluation scores: held-out subjects measure the model; as many training ("seen") subjects
beside them tell an attribute never learned from one learned only inside the identities seen."""
SUPERSAMPLE = 4
INSET = 0.1
"""Width of the body-coloured band along the outline, as a fraction of the subject's box."""
BAR_HALF_HEIGHT, DIAMOND_HALF_WIDTH = 0.3, 0.38
STRIPE_PERIOD, CHECK_CELL, DOT_PERIOD, DOT_RADIUS = 0.4, 0.25, 0.3, 0.1
"""Pattern sizes in box units: features of ~4 px on a 19 px subject, the finest a small VAE keeps."""

SUBJECT_SIZE = 0.42
"""Box side of a reference subject on white, as a fraction of the frame's shorter side: about the clips' own
(`CLIP_SIZE`), so the reference shows the subject over as many tokens as the video draws it with. At 0.65, on
the same base, recipe and budget, the shipped recipe kept its subject in every frame of 104/192 clips; at
0.42, 135/192 (README, issue 13)."""
CLIP_SIZE = (0.36, 0.46)
PAIR_SIZE = (0.3, 0.55)
TRAVEL = (0.38, 0.46)
"""Distance a left/right/up/down subject covers in one clip, as a fraction of the frame side."""
CIRCLE_SIZE, CIRCLE_RADIUS = (0.34, 0.42), 0.12
ZOOM_START, ZOOM_RATIO = (0.26, 0.3), 1.85
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}

UNNAMED = "it"
PARTIAL_FORMS = ("shape", "no-look", "no-colour")
"""How a partial caption names its subject: by shape alone, without its pattern, or without its colour."""
NAMED_SHARE = 0.5
"""Share of training captions that name their subject; the rest say "it", as evaluation prompts do. So the
base model knows prompts without identity words, and an identity pair cannot be solved from its caption
alone: the reference is the only way to the subject, as a dog's photo is in the paper's data."""

_SPLIT, _CELLS, _BASE, _PAIRS, _MOTION, _PAIR_ORDER, _NAMING, _PARTIAL = range(8)
"""Generator streams: `default_rng([seed, stream, index])`."""


@dataclass(frozen=True)
class Identity:
    """One subject's look. `accent` colours the pattern and is None exactly when the pattern is plain."""

    shape: str
    colour: str
    pattern: str
    accent: str | None = None

    def __post_init__(self):
        for value, names, what in (
            (self.shape, SHAPES, "shape"),
            (self.colour, COLOURS, "colour"),
            (self.pattern, PATTERNS, "pattern"),
        ):
            _check_name(value, names, what)
        if (self.pattern == "plain") != (self.accent is None):
            raise S2VError(f"A {self.pattern} subject needs {'no' if self.pattern == 'plain' else 'an'} accent.")
        if self.accent is not None:
            _check_name(self.accent, ACCENTS, "accent")

    @property
    def id(self) -> str:
        """Stable and readable, e.g. "disc-red-stripes-white" or "disc-red-plain"."""
        return "-".join(value for value in (self.shape, self.colour, self.pattern, self.accent) if value)

    @property
    def words(self) -> str:
        """How captions name the subject: "plain red disc" or "red disc with white stripes"."""
        if self.pattern == "plain":
            return f"plain {self.colour} {self.shape}"
        return f"{self.colour} {self.shape} with {self.accent} {self.pattern}"

    def partial_words(self, form: str) -> str:
        """The subject named by some of its attributes (`PARTIAL_FORMS`): "disc", "red disc", "plain disc"."""
        if form == "shape":
            return self.shape
        if form == "no-look":
            return f"{self.colour} {self.shape}"
        if form == "no-colour" and self.pattern == "plain":
            return f"plain {self.shape}"
        if form == "no-colour":
            return f"{self.shape} with {self.accent} {self.pattern}"
        raise S2VError(f"Unknown partial form {form!r}; choose from {', '.join(PARTIAL_FORMS)}.")

    @classmethod
    def from_id(cls, text: str) -> Identity:
        """The identity an `id` names, e.g. from world.json's held-out list."""
        parts = text.split("-")
        if len(parts) not in (3, 4):
            raise S2VError(f"'{text}' is not an identity id like 'disc-red-stripes-white'.")
        return cls(*parts)


@dataclass(frozen=True)
class Clip:
    """Frames with their ground truth: the subject's box centre (x, y in pixels) and box side per frame.

    `scales` is the box side as a fraction of the frame's shorter side.
    """

    frames: np.ndarray
    centres: np.ndarray
    scales: np.ndarray


@dataclass(frozen=True)
class WorldPaths:
    """Where `write_world` put each set; `base_frames`/`motion_frames` are None without `arrays`."""

    root: Path
    manifest: Path
    base: Path
    base_captions: Path
    pairs: Path
    motion: Path
    motion_captions: Path
    eval: Path
    base_frames: Path | None
    motion_frames: Path | None


def all_identities() -> list[Identity]:
    """Every identity, in a fixed order (shape, colour, then pattern and accent)."""
    looks = [("plain", None)] + [(pattern, accent) for pattern in PATTERNS[1:] for accent in ACCENTS]
    return [Identity(shape, colour, *look) for shape in SHAPES for colour in COLOURS for look in looks]


def split_identities(seed: int, held_out: int = HELD_OUT) -> tuple[list[Identity], list[Identity]]:
    """(train, held out): held-out identities are unseen combinations of values that training all has.

    Picked greedily in a seeded order, each time the identity whose shape, colour and look are
    least used so far, so the held-out set spreads evenly over every value.
    """
    identities = all_identities()
    if not 1 <= held_out <= len(identities) // 2:
        raise S2VError(f"held_out must be between 1 and {len(identities) // 2}, not {held_out}.")
    chosen = _spread(identities, held_out, [seed, _SPLIT, 0])
    held = set(chosen)
    remaining = [identity for identity in identities if identity not in held]
    missing = {value for identity in identities for value in _values(identity)} - {
        value for identity in remaining for value in _values(identity)
    }
    if missing:
        raise S2VError(f"Holding out {held_out} identities leaves no training example of {sorted(missing)}.")
    return remaining, chosen


def seen_subjects(seed: int, count: int = HELD_OUT) -> list[Identity]:
    """`count` training identities spread over every value as the held-out set is: scored beside the held-out
    ones, they tell a model that has not learned an attribute from one that learned it only inside the whole
    identities it saw."""
    train, _ = split_identities(seed)
    return _spread(train, count, [seed, _SPLIT, 1])


def _spread(identities: list[Identity], count: int, stream: list[int]) -> list[Identity]:
    """`count` identities, each the least used in shape, colour and look so far, ties broken in a seeded order."""
    order = np.random.default_rng(stream).permutation(len(identities))
    remaining = [identities[index] for index in order]
    used: Counter = Counter()
    chosen = []
    for _ in range(count):
        pick = min(remaining, key=lambda identity: sum(used[key] for key in _values(identity)))
        remaining.remove(pick)
        used.update(_values(pick))
        chosen.append(pick)
    return chosen


def clip_caption(identity: Identity | None, scene: str, motion: str, form: str | None = None) -> str:
    """E.g. "a red disc with white stripes moves left on grass", "it moves left on grass" unnamed, or with a
    partial `form` (`PARTIAL_FORMS`) "a red disc moves left on grass"."""
    return f"{_subject_words(identity, form)} {MOTION_PHRASES[motion]} {SCENE_PHRASES[scene]}"


def subject_caption(identity: Identity | None) -> str:
    return f"{_subject_words(identity)} on a white background"


def scene_caption(identity: Identity | None, scene: str) -> str:
    return f"{_subject_words(identity)} {SCENE_PHRASES[scene]}"


def eval_prompt(scene: str, motion: str) -> str:
    """E.g. "it moves left on grass": no identity word, so identity can only come from the reference."""
    return clip_caption(None, scene, motion)


def _subject_words(identity: Identity | None, form: str | None = None) -> str:
    if identity is None:
        return UNNAMED
    return _with_article(identity.words if form is None else identity.partial_words(form))


def _named(stream: list[int], index: int, share: float = NAMED_SHARE) -> bool:
    """Whether training caption `index` of a set names its subject (`share` of them), from its own generator."""
    return bool(np.random.default_rng([*stream, index, _NAMING]).random() < share)


def base_captions_named(world: str | Path, share: float, partial: float = 0.0) -> list[dict]:
    """The base clips' caption lines with `share` of them naming their subject, the clips unchanged: a base
    lever. Each clip keeps its own draw, so `NAMED_SHARE` gives back the world's file and a larger share only
    names more clips.

    `partial` of the named captions name only some attributes (a form of `PARTIAL_FORMS`, each equally
    likely), so each word is also seen apart from the others: a model that learns "disc" only inside whole
    identities it has seen draws blobs for a new combination.
    """
    for value, what in ((share, "A named share"), (partial, "A partial share")):
        if not 0 <= value <= 1:
            raise S2VError(f"{what} is a fraction from 0 to 1, not {value}.")
    paths = world_paths(world)
    seed = json.loads(paths.manifest.read_text())["seed"]
    lines = [json.loads(line) for line in paths.base_captions.read_text().splitlines()]
    return [
        {**line, "caption": clip_caption(
            Identity.from_id(line["identity"]) if _named([seed, _BASE], index, share) else None,
            line["scene"], line["motion"], _partial_form([seed, _BASE], index, partial),
        )}
        for index, line in enumerate(lines)
    ]  # fmt: skip


def _partial_form(stream: list[int], index: int, share: float) -> str | None:
    """The partial form caption `index` would take if named (None: the whole identity), from its own generator."""
    rng = np.random.default_rng([*stream, index, _PARTIAL])
    return str(rng.choice(PARTIAL_FORMS)) if rng.random() < share else None


def shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to the outline in box units (box = [-0.5, 0.5]^2, y down), negative inside."""
    au, av = np.abs(u), np.abs(v)
    if shape == "disc":
        return np.hypot(u, v) - 0.5
    if shape == "square":
        return np.maximum(au, av) - 0.5
    if shape == "diamond":  # taller than wide, like the playing-card suit
        return (au / DIAMOND_HALF_WIDTH + av / 0.5 - 1) / np.hypot(1 / DIAMOND_HALF_WIDTH, 2)
    if shape == "triangle":  # apex at the top centre, base along the bottom
        return np.maximum(v - 0.5, (2 * au - v - 0.5) / np.sqrt(5))
    if shape == "bar":  # lying down, wider than tall
        return np.maximum(au - 0.5, av - BAR_HALF_HEIGHT)
    raise S2VError(f"Unknown shape '{shape}'; choose from {', '.join(SHAPES)}.")


def pattern_distance(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to the pattern's accent areas in box units, negative on the accent; anchored at the centre.

    Stripes: vertical bands 0.2 wide at u = +-0.2 (they fit the wide bar). Checks: 0.25 cells meeting
    at the centre, so they never look like a centred dot. Dots: a 0.3-period lattice of 0.1-radius
    dots, one at the centre.
    """
    if pattern == "plain":
        return np.full(np.broadcast_shapes(np.shape(u), np.shape(v)), np.inf)
    if pattern == "stripes":
        distance = (np.abs(np.mod(u / STRIPE_PERIOD, 1.0) - 0.5) - 0.25) * STRIPE_PERIOD
        return np.broadcast_to(distance, np.broadcast_shapes(np.shape(u), np.shape(v)))
    if pattern == "checks":
        a, b = u / CHECK_CELL, v / CHECK_CELL
        edge = np.minimum(0.5 - np.abs(np.mod(a, 1.0) - 0.5), 0.5 - np.abs(np.mod(b, 1.0) - 0.5)) * CHECK_CELL
        accent = (np.floor(a) + np.floor(b)) % 2 == 0
        return np.where(accent, -edge, edge)
    if pattern == "dots":
        du = u - DOT_PERIOD * np.round(u / DOT_PERIOD)
        dv = v - DOT_PERIOD * np.round(v / DOT_PERIOD)
        return np.hypot(du, dv) - DOT_RADIUS
    raise S2VError(f"Unknown pattern '{pattern}'; choose from {', '.join(PATTERNS)}.")


@cache
def shape_stats(shape: str) -> tuple[float, float, float]:
    """(area, centroid u, centroid v) of a shape in box units, for fitting it to a measured blob."""
    grid = (np.arange(400) + 0.5) / 400 - 0.5
    inside = shape_distance(shape, grid[None, :], grid[:, None]) <= 0
    rows, cols = np.nonzero(inside)
    return float(inside.mean()), float(grid[cols].mean()), float(grid[rows].mean())


def scene_background(scene: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The scene as float RGB [H, W, 3]: its colour with a gentle, seeded texture."""
    _check_name(scene, SCENES, "scene")
    image = np.broadcast_to(np.array(SCENES[scene], np.float32), (height, width, 3)).copy()
    rows = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None, None]
    if scene == "grass":  # blades: soft vertical streaks
        streaks = np.convolve(rng.normal(0, 1, width + 2), [0.25, 0.5, 0.25], "valid").astype(np.float32)
        image += streaks[None, :, None] * np.array([5, 9, 4], np.float32)
    elif scene == "sky":  # lighter towards the horizon
        image += rows * np.array([30, 20, 8], np.float32)
    elif scene == "wooden floor":  # planks of slightly different tone, dark seams
        plank = max(4, round(height / 6))
        offset = np.arange(height) + int(rng.integers(plank))
        tone = rng.normal(0, 6, offset.max() // plank + 1)[offset // plank] - 14 * (offset % plank == 0)
        image += tone.astype(np.float32)[:, None, None] * np.array([1.0, 0.75, 0.45], np.float32)
    else:  # night: darker overhead
        image += rows * np.array([0, 4, 16], np.float32)
    return image


def render_subject(identity: Identity, height: int, width: int, background: tuple = WHITE) -> Image.Image:
    """The subject centred on a flat colour, its box `SUBJECT_SIZE` of the shorter side: a reference image."""
    canvas = np.broadcast_to(np.array(background, np.float32), (height, width, 3))
    centre = np.array([[width / 2, height / 2]])
    frames = _draw(identity, canvas, centre, np.array([SUBJECT_SIZE * min(height, width)]))
    return Image.fromarray(frames[0])


def render_clip(
    identity: Identity,
    scene: str,
    motion: str,
    height: int,
    width: int,
    num_frames: int = 9,
    *,
    rng: np.random.Generator,
) -> Clip:
    """A clip of `identity` doing `motion` in `scene`; placement, size and texture come from `rng`."""
    _check_name(motion, MOTIONS, "motion")
    if num_frames < 2:
        raise S2VError(f"A clip needs at least 2 frames to show motion, not {num_frames}.")
    canvas = scene_background(scene, height, width, rng)
    centres, sizes = _trajectory(motion, num_frames, height, width, rng)
    return Clip(_draw(identity, canvas, centres, sizes), centres, sizes / min(height, width))


def render_scene_image(
    identity: Identity, scene: str, height: int, width: int, rng: np.random.Generator
) -> Image.Image:
    """The subject somewhere in `scene` at a random size (`PAIR_SIZE`): the scene half of an identity pair."""
    canvas = scene_background(scene, height, width, rng)
    size = rng.uniform(*PAIR_SIZE) * min(height, width)
    centre = _uniform_centre(rng, height, width, size / 2)
    return Image.fromarray(_draw(identity, canvas, centre[None], np.array([size]))[0])


def write_world(
    folder: str | Path,
    seed: int = 0,
    height: int = 48,
    width: int = 48,
    num_frames: int = 9,
    base_clips: int = 3000,
    pairs: int = 2000,
    motion_clips: int = 1000,
    eval_per_subject: int = 8,
    held_out: int = HELD_OUT,
    arrays: bool = True,
) -> WorldPaths:
    """Write the four sets and `world.json` into `folder` (new or empty); the same seed gives the same bytes.

    (a) `base/`: text-to-video clips + captions.jsonl; (b) `pairs/pairs.jsonl`: subject on white <->
    the subject in a scene; (c) `motion/`: clips for the motion task; (d) `eval/eval.jsonl`: held-out
    subjects x identity-free prompts. (a)-(c) use only training identities, and (a) and (c) share no
    (identity, scene, motion) combination. With `arrays`, (a) and (c) are also stored uncompressed as
    `frames.npy` ([N, T, H, W, 3] uint8, in file-name order): the exact renders, free to read.
    """
    folder = Path(folder)
    _check_world_args(height, width, num_frames, base_clips, pairs, motion_clips, eval_per_subject)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise S2VError(f"{folder} already exists and is not an empty folder; choose a new folder for the world.")
    train, held = split_identities(seed, held_out)
    base_cells, motion_cells = _split_cells(train, seed, base_clips, motion_clips)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder) as staging:
        size = (height, width, num_frames)
        _write_clips(staging / "base", "base", base_cells, base_clips, size, [seed, _BASE], arrays)
        _write_clips(staging / "motion", "motion", motion_cells, motion_clips, size, [seed, _MOTION], arrays)
        write_clip_subjects(staging / "motion", height, width)
        _write_pairs(staging / "pairs", train, pairs, height, width, seed)
        eval_items = _write_eval(staging / "eval", held, eval_per_subject, height, width)
        counts = {
            "identities": len(train) + len(held),
            "train_identities": len(train),
            "held_out": len(held),
            "base_clips": base_clips,
            "pairs": pairs,
            "motion_clips": motion_clips,
            "eval_items": eval_items,
        }
        _write_manifest(staging / "world.json", seed, height, width, num_frames, counts, held, arrays)
    return world_paths(folder)


def world_paths(folder: str | Path) -> WorldPaths:
    """Where a written world keeps each set: the one place the build, the VAE and the trainer's data read it from."""
    folder = Path(folder)
    arrays = (folder / "base" / "frames.npy").is_file()
    return WorldPaths(
        root=folder,
        manifest=folder / "world.json",
        base=folder / "base",
        base_captions=folder / "base" / "captions.jsonl",
        pairs=folder / "pairs" / "pairs.jsonl",
        motion=folder / "motion",
        motion_captions=folder / "motion" / "captions.jsonl",
        eval=folder / "eval" / "eval.jsonl",
        base_frames=folder / "base" / "frames.npy" if arrays else None,
        motion_frames=folder / "motion" / "frames.npy" if arrays else None,
    )


def _check_world_args(height: int, width: int, num_frames: int, *counts: int) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 16 or value % 2:
            raise S2VError(f"{name} must be an even whole number of pixels, at least 16 (H.264), not {value}.")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 2:
        raise S2VError(f"num_frames must be a whole number of at least 2, not {num_frames}.")
    if any(isinstance(count, bool) or not isinstance(count, int) or count < 1 for count in counts):
        raise S2VError(f"Every count (clips, pairs, prompts per subject) must be at least 1, not {counts}.")


def _split_cells(
    train: list[Identity], seed: int, base_clips: int, motion_clips: int
) -> tuple[list[tuple], list[tuple]]:
    """Disjoint (identity, scene, motion) cells for (a) and (c), in a seeded order.

    When both counts fit, each clip gets a cell of its own; otherwise the cells are shared out in
    proportion to the counts and each set cycles through its share (same cell, new placement).
    """
    cells = [(identity, scene, motion) for identity in train for scene in SCENES for motion in MOTIONS]
    order = np.random.default_rng([seed, _CELLS, 0]).permutation(len(cells))
    shuffled = [cells[index] for index in order]
    if base_clips + motion_clips <= len(cells):
        cut = base_clips
    else:
        cut = min(len(cells) - 1, max(1, round(len(cells) * base_clips / (base_clips + motion_clips))))
    return shuffled[:cut], shuffled[cut:]


def _write_clips(
    folder: Path, prefix: str, cells: list[tuple], count: int, size: tuple, stream: list[int], arrays: bool
) -> None:
    """`count` clips as `{prefix}_NNNNN.mp4` + captions.jsonl (+ frames.npy); clip k uses generator [*stream, k]."""
    height, width, num_frames = size
    folder.mkdir(parents=True)
    store = None
    if arrays:
        shape = (count, num_frames, height, width, 3)
        store = np.lib.format.open_memmap(folder / "frames.npy", mode="w+", dtype=np.uint8, shape=shape)
    lines = []
    with _mp4_segments(folder, prefix, count, height, width, num_frames) as send:
        for index in range(count):
            identity, scene, motion = cells[index % len(cells)]
            rng = np.random.default_rng([*stream, index])
            clip = render_clip(identity, scene, motion, height, width, num_frames, rng=rng)
            send(clip.frames)
            if store is not None:
                store[index] = clip.frames
            caption = clip_caption(identity if _named(stream, index) else None, scene, motion)
            name = f"{prefix}_{index:05d}.mp4"
            lines.append({"file": name, "caption": caption, "identity": identity.id, "scene": scene, "motion": motion})
    if store is not None:
        store.flush()
        del store
    _write_jsonl(folder / "captions.jsonl", lines)


def write_clip_subjects(folder: str | Path, height: int = 48, width: int = 48) -> None:
    """Each clip's subject on white as a user uploads it (`render_subject`) into `subjects/`, named in
    `captions.jsonl` as its `reference`: what `s2v-train`'s `tasks.reference_frame=subject` trains on. Rerun
    on a world written before it, it adds them and changes nothing else."""
    folder = Path(folder)
    lines = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]
    (folder / "subjects").mkdir(exist_ok=True)
    for identity in sorted({line["identity"] for line in lines}):
        render_subject(Identity.from_id(identity), height, width).save(folder / "subjects" / f"{identity}.png")
    _write_jsonl(
        folder / "captions.jsonl", [{**line, "reference": f"subjects/{line['identity']}.png"} for line in lines]
    )


@contextmanager
def _mp4_segments(folder: Path, prefix: str, count: int, height: int, width: int, num_frames: int) -> Iterator:
    """One ffmpeg process cutting a stream of clips into `count` mp4 files, every clip starting on a key frame.

    `s2v.video.save_video` starts ffmpeg once per file, ~65 ms each here: 4,000 clips would take
    minutes. This writes the same H.264 (yuv420p, CRF 25 as save_video, faststart) at ~2 ms a clip.
    One thread keeps the bytes identical on every machine.
    """
    import imageio_ffmpeg

    cuts = ",".join(str(num_frames * index) for index in range(1, count)) or str(num_frames)
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
        "-s", f"{width}x{height}", "-r", str(FPS), "-i", "-",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "25", "-threads", "1",
        "-force_key_frames", f"expr:eq(mod(n,{num_frames}),0)",
        "-f", "segment", "-segment_frames", cuts, "-reset_timestamps", "1",
        "-segment_format", "mp4", "-segment_format_options", "movflags=+faststart",
        str(folder / f"{prefix}_%05d.mp4"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield lambda frames: process.stdin.write(np.ascontiguousarray(frames).tobytes())
    except BrokenPipeError:
        pass  # ffmpeg quit early; the check below reports its message
    finally:
        _, errors = process.communicate()
    written = len(list(folder.glob(f"{prefix}_*.mp4")))
    if process.returncode != 0 or written != count:
        raise S2VError(f"ffmpeg wrote {written} of {count} clips in {folder}: {errors.decode(errors='replace')[-500:]}")


def _write_pairs(folder: Path, train: list[Identity], count: int, height: int, width: int, seed: int) -> None:
    """Identity pairs: the subject on white (one image per identity) <-> the subject in a random scene.

    Identities are dealt out in a seeded order, round after round, so each has about the same number of pairs.
    """
    (folder / "subjects").mkdir(parents=True)
    (folder / "targets").mkdir()
    order = np.random.default_rng([seed, _PAIR_ORDER, 0]).permutation(len(train))
    written, lines = set(), []
    for index in range(count):
        identity = train[order[index % len(train)]]
        rng = np.random.default_rng([seed, _PAIRS, index])
        scene = list(SCENES)[int(rng.integers(len(SCENES)))]
        subject, target = f"subjects/{identity.id}.png", f"targets/target_{index:05d}.png"
        if identity not in written:
            render_subject(identity, height, width).save(folder / subject)
            written.add(identity)
        render_scene_image(identity, scene, height, width, rng).save(folder / target)
        named = identity if _named([seed, _PAIRS], index) else None
        lines.append(
            {
                "subject": subject,
                "target": target,
                "subject_caption": subject_caption(named),
                "target_caption": scene_caption(named, scene),
                "identity": identity.id,
                "scene": scene,
            }
        )
    _write_jsonl(folder / "pairs.jsonl", lines)


def eval_items(held: list[Identity], per_subject: int = 8) -> list[dict]:
    """Each held-out subject x `per_subject` identity-free prompts over a balanced motion x scene grid.

    Prompt j of subject k asks for motion j mod 8 in scene (j + j // 8 + k) mod 4: every subject gets
    every motion once per 8 prompts, and each motion meets each scene equally often over the subjects.
    Each item carries a `seed` (its index) so every method compared samples the same noise.
    """
    scenes, lines = list(SCENES), []
    for k, identity in enumerate(held):
        for j in range(per_subject):
            motion, scene = MOTIONS[j % len(MOTIONS)], scenes[(j + j // len(MOTIONS) + k) % len(scenes)]
            lines.append(
                {
                    "id": f"eval_{len(lines):05d}",
                    "identity": identity.id,
                    "shape": identity.shape,
                    "colour": identity.colour,
                    "pattern": identity.pattern,
                    "accent": identity.accent,
                    "reference": f"refs/{identity.id}.png",
                    "prompt": eval_prompt(scene, motion),
                    "scene": scene,
                    "motion": motion,
                    "caption": clip_caption(identity, scene, motion),
                    "seed": len(lines),
                }
            )
    return lines


def _write_eval(folder: Path, held: list[Identity], per_subject: int, height: int, width: int) -> int:
    """`eval.jsonl` and each held-out subject's reference on white under `refs/`."""
    (folder / "refs").mkdir(parents=True)
    for identity in held:
        render_subject(identity, height, width).save(folder / f"refs/{identity.id}.png")
    lines = eval_items(held, per_subject)
    _write_jsonl(folder / "eval.jsonl", lines)
    return len(lines)


def _write_manifest(
    path: Path, seed: int, height: int, width: int, num_frames: int, counts: dict, held: list, arrays: bool
) -> None:
    manifest = {
        "seed": seed,
        "height": height,
        "width": width,
        "num_frames": num_frames,
        "fps": FPS,
        "shapes": list(SHAPES),
        "colours": {name: list(rgb) for name, rgb in COLOURS.items()},
        "patterns": list(PATTERNS),
        "accents": {name: list(rgb) for name, rgb in ACCENTS.items()},
        "scenes": {name: list(rgb) for name, rgb in SCENES.items()},
        "motions": list(MOTIONS),
        "counts": counts,
        "held_out": [identity.id for identity in held],
        "arrays": arrays,
        "subject_size": SUBJECT_SIZE,
    }
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def _trajectory(
    motion: str, num_frames: int, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame box centres [T, 2] (x, y, pixels) and box sides [T] for `motion`, kept wholly inside the frame."""
    progress = np.linspace(0.0, 1.0, num_frames)
    side = min(height, width)
    if motion in ("zoom in", "zoom out"):
        small = rng.uniform(*ZOOM_START) * side
        growth = progress if motion == "zoom in" else 1 - progress
        sizes = small * (1 + (ZOOM_RATIO - 1) * growth)
        centre = _uniform_centre(rng, height, width, small * ZOOM_RATIO / 2)
        return np.repeat(centre[None], num_frames, axis=0), sizes
    if motion == "circle":  # one clockwise loop (y points down), back where it started
        size = rng.uniform(*CIRCLE_SIZE) * side
        centre = _uniform_centre(rng, height, width, size / 2 + CIRCLE_RADIUS * side)
        angle = rng.uniform(0, 2 * np.pi) + 2 * np.pi * progress
        centres = centre + CIRCLE_RADIUS * side * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        return centres, np.full(num_frames, size)
    size = rng.uniform(*CLIP_SIZE) * side
    step = np.array(DIRECTIONS[motion], float)
    spans = np.array([width, height], float) - size
    distance = min(rng.uniform(*TRAVEL) * side, float(spans[np.abs(step).argmax()]))
    low = size / 2 - np.minimum(0, step * distance)
    high = np.array([width, height]) - size / 2 - np.maximum(0, step * distance)
    start = rng.uniform(low, high)
    return start + step * distance * progress[:, None], np.full(num_frames, size)


def _uniform_centre(rng: np.random.Generator, height: int, width: int, margin: float) -> np.ndarray:
    return rng.uniform([margin, margin], [width - margin, height - margin])


def _draw(identity: Identity, canvas: np.ndarray, centres: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The subject over `canvas` once per (centre, size): uint8 [T, H, W, 3], anti-aliased by supersampling.

    All frames are sampled at once, each only in a window around its subject, `SUPERSAMPLE`^2 points a pixel.
    """
    height, width = canvas.shape[:2]
    window = np.minimum([width, height], int(np.ceil(sizes.max())) + 1)
    corners = np.clip(np.floor(centres - sizes[:, None] / 2), 0, [width, height] - window).astype(int)
    cover, ink = _coverage(identity, centres, sizes, corners, window)
    body = np.array(COLOURS[identity.colour], np.float32)
    accent = np.array(ACCENTS.get(identity.accent, COLOURS[identity.colour]), np.float32)
    paint = (cover - ink)[..., None] * body + ink[..., None] * accent
    frames = np.repeat(canvas[None], len(sizes), axis=0).astype(np.float32)
    for frame, (left, top), alpha, colour in zip(frames, corners, cover, paint, strict=True):
        region = frame[top : top + window[1], left : left + window[0]]
        region[:] = region * (1 - alpha[..., None]) + colour
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _coverage(
    identity: Identity, centres: np.ndarray, sizes: np.ndarray, corners: np.ndarray, window: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame and window pixel [T, h, w]: the share covered by the subject, and by its accent."""
    n = SUPERSAMPLE
    samples = [(np.arange(extent * n) + 0.5) / n for extent in window]
    u = ((corners[:, :1] + samples[0] - centres[:, :1]) / sizes[:, None]).astype(np.float32)[:, None, :]
    v = ((corners[:, 1:] + samples[1] - centres[:, 1:]) / sizes[:, None]).astype(np.float32)[:, :, None]
    outline = shape_distance(identity.shape, u, v)
    inside = outline <= 0
    accent = inside & (outline < -INSET) & (pattern_distance(identity.pattern, u, v) < 0)
    shape = (len(sizes), window[1], n, window[0], n)
    return (mask.reshape(shape).sum(axis=(2, 4), dtype=np.float32) / n**2 for mask in (inside, accent))


def _values(identity: Identity) -> tuple:
    """The values a held-out set must leave in training: shape, colour and look (pattern with accent)."""
    return (("shape", identity.shape), ("colour", identity.colour), ("look", identity.pattern, identity.accent))


def _with_article(words: str) -> str:
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _check_name(value, names, what: str) -> None:
    if value not in names:
        raise S2VError(f"Unknown {what} '{value}'; choose from {', '.join(names)}.")
