"""Reading nano-world frames back into their attributes: the judge for reconstructions and generated videos.

Backgrounds are flat or gently textured, so the subject is every pixel far from the frame's median
border colour (with enclosed holes filled: a background-coloured accent stays part of it). From that mask:

- shape: each shape's outline is fitted to the mask (size from its area, centre from its centroid,
  then a small search over scale and +-1 px offsets) and scored by soft IoU, averaged over frames;
- colour and accent: the interior pixels are fitted as mixtures of one body colour and one accent,
  so blurred pattern edges (body + accent) still point at the right pair;
- pattern: "plain" when the interior holds almost no accent, otherwise the pattern whose template,
  placed by the fitted outline (+-1 px), correlates best with the accent map;
- scene: the median border colour's nearest scene colour;
- motion: the centroid and size track against the eight motions (see `_motion`);
- smoothness: how steady the subject's per-frame speed is (see `_smoothness`).

Every decision takes the nearest prototype or the best score, never a hard rule on one pixel, and
reports a confidence (the margin to the runner-up) so blurry or generated frames can be filtered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from s2v.errors import S2VError

from .world import (
    ACCENTS,
    CIRCLE_RADIUS,
    COLOURS,
    INSET,
    PATTERNS,
    SCENES,
    SHAPES,
    TRAVEL,
    ZOOM_RATIO,
    pattern_distance,
    shape_distance,
    shape_stats,
)

MASK_DISTANCE = 50.0
"""RGB distance from the background that marks a subject pixel: half the smallest body-to-scene gap."""
MIN_AREA = 12
"""Frames whose subject covers fewer pixels give no attributes (a lost or vanishing subject)."""
BORDER = 2
SCALES = (0.92, 1.0, 1.08)
OFFSETS = (-1.0, -0.5, 0.0, 0.5, 1.0)
PATTERN_SHIFTS = (-1.0, 0.0, 1.0)
SHAPE_FRAMES = 3
PLAIN_LEVEL = 0.1
"""Mean accent share of the interior below which a subject is plain; patterns cover 20-50%."""
MOVE_DISTANCE, MOVE_ZOOM = 0.05, 0.1
"""A clip moves when its subject gets this far from its first position (fraction of the frame side) or
changes size by this log ratio; the world's motions travel ~0.42 side, loop at radius 0.12, zoom by 0.62."""
STEADY_SPEED = 0.005
"""Mean speed (frame sides per frame) below which a track counts as still, hence perfectly smooth."""

_BODY = np.array(list(COLOURS.values()), np.float32)
_INK = np.array(list(ACCENTS.values()), np.float32)
_MOTION_SCALE = {"line": float(np.mean(TRAVEL)), "circle": CIRCLE_RADIUS, "zoom": float(np.log(ZOOM_RATIO))}


@dataclass(frozen=True)
class SubjectAnalysis:
    """The subject's attributes (None when no subject was found); `accent` is None for plain subjects."""

    shape: str | None
    colour: str | None
    pattern: str | None
    accent: str | None
    confidence: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipAnalysis:
    """A clip's subject, scene and motion, with the per-frame track they were read from.

    `centres` [T, 2] are the subject's centroids (x, y in pixels, NaN where there is none) and
    `areas` [T] its areas in pixels, both from soft edge coverage; `moving` says the subject really
    moves; `smoothness` is in [0, 1], 1 for a steady speed; `confidence` holds each decision's
    margin over the runner-up (0 = a tie).
    """

    shape: str | None
    colour: str | None
    pattern: str | None
    accent: str | None
    scene: str
    motion: str | None
    moving: bool
    smoothness: float
    centres: np.ndarray
    areas: np.ndarray
    confidence: dict[str, float]
    found: np.ndarray | None = None
    """[T] bools: the frames where a subject was found (at least `MIN_AREA` pixels off the background)."""


@dataclass(frozen=True)
class _Frame:
    """One frame prepared for the subject fits: float RGB pixels and the subject mask."""

    pixels: np.ndarray
    mask: np.ndarray


def analyze_clip(frames: np.ndarray) -> ClipAnalysis:
    """Read a clip, uint8 [T, H, W, 3] (or floats in [0, 1]), of one subject in one scene."""
    pixels = _as_float_frames(frames)
    backgrounds = np.stack([_border_colour(frame) for frame in pixels])
    masks = _subject_masks(pixels, backgrounds)
    valid = masks.sum(axis=(1, 2)) >= MIN_AREA
    subject, body = _subject([_Frame(frame, mask) for frame, mask, ok in zip(pixels, masks, valid, strict=True) if ok])
    weights = masks.astype(np.float32) if body is None else _coverage(pixels, backgrounds, masks, body)
    areas, centres = weights.sum(axis=(1, 2)), np.stack([_centroid(weight) for weight in weights])
    scene, scene_confidence = _nearest(np.median(backgrounds, axis=0), SCENES)
    side = min(pixels.shape[1:3])
    track, sizes = centres[valid] / side, np.sqrt(areas[valid]) / side
    motion, moving, motion_confidence = _motion(track, sizes)
    return ClipAnalysis(
        shape=subject.shape,
        colour=subject.colour,
        pattern=subject.pattern,
        accent=subject.accent,
        scene=scene,
        motion=motion,
        moving=moving,
        smoothness=_smoothness(track, sizes),
        centres=centres,
        areas=areas,
        confidence={**subject.confidence, "scene": scene_confidence, "motion": motion_confidence},
        found=valid,
    )


def analyze_image(image: Image.Image | np.ndarray) -> SubjectAnalysis:
    """Read one image's subject, e.g. a reference on white or a generated frame."""
    array = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    pixels = _as_float_frames(array[None])
    mask = _subject_masks(pixels, _border_colour(pixels[0])[None])[0]
    return _subject([_Frame(pixels[0], mask)] if mask.sum() >= MIN_AREA else [])[0]


def _as_float_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise S2VError(f"Expected frames as [frames, height, width, 3], got shape {frames.shape}.")
    if min(frames.shape[1:3]) <= 2 * BORDER + 2:
        raise S2VError(f"Frames of {frames.shape[2]}x{frames.shape[1]} are too small to analyse.")
    if np.issubdtype(frames.dtype, np.floating):
        return np.clip(frames, 0.0, 1.0).astype(np.float32) * 255
    return frames.astype(np.float32)


def _border_colour(frame: np.ndarray) -> np.ndarray:
    """Median colour of the `BORDER`-pixel frame edge: the background, even where the subject touches it."""
    edge = np.concatenate(
        [frame[:BORDER].reshape(-1, 3), frame[-BORDER:].reshape(-1, 3)]
        + [frame[BORDER:-BORDER, :BORDER].reshape(-1, 3), frame[BORDER:-BORDER, -BORDER:].reshape(-1, 3)]
    )
    return np.median(edge, axis=0)


def _subject_masks(frames: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
    """[T, H, W]: pixels far from their frame's background, plus every pixel with subject on all four sides.

    The second part fills the holes a background-coloured accent leaves (white on white, black at
    night). It is exact for the world's convex shapes; on a generated blob it may fill a bay,
    which only rounds the outline.
    """
    far = np.linalg.norm(frames - backgrounds[:, None, None, :], axis=-1) > MASK_DISTANCE
    enclosed = np.ones_like(far)
    for axis in (1, 2):
        for flip in (False, True):
            seen = np.flip(far, axis) if flip else far
            seen = np.logical_or.accumulate(seen, axis=axis)
            enclosed &= np.flip(seen, axis) if flip else seen
    return far | enclosed


def _coverage(frames: np.ndarray, backgrounds: np.ndarray, masks: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Soft subject coverage [T, H, W]: 1 inside the mask, and along its edge each pixel's mix of background and body.

    A binary mask grows in whole rows and columns, so its area and centroid move in steps; this
    moves them smoothly with the subject (the outline is always body-coloured).
    """
    direction = body - backgrounds
    share = ((frames - backgrounds[:, None, None]) * direction[:, None, None]).sum(-1)
    share = np.clip(share / (direction**2).sum(-1)[:, None, None], 0, 1)
    inner = _shrink(masks)
    edge = ~inner & ~_shrink(~masks)
    return np.where(inner, 1.0, np.where(edge, share, 0.0)).astype(np.float32)


def _shrink(masks: np.ndarray) -> np.ndarray:
    """[T, H, W] masks minus every pixel with a 4-neighbour outside them (or at the frame edge)."""
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    return masks & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]


def _centroid(weight: np.ndarray) -> np.ndarray:
    total = weight.sum()
    if total <= 0:
        return np.full(2, np.nan)
    rows, cols = np.arange(weight.shape[0]) + 0.5, np.arange(weight.shape[1]) + 0.5
    return np.array([(weight.sum(axis=0) * cols).sum() / total, (weight.sum(axis=1) * rows).sum() / total])


def _subject(frames: list[_Frame]) -> tuple[SubjectAnalysis, np.ndarray | None]:
    """The subject's attributes from every frame that shows it, and its body colour as measured (None if absent).

    Every shape is scored on up to `SHAPE_FRAMES` frames spread over the clip; only the winner
    is then placed on the rest, to find each frame's interior and pattern area.
    """
    if not frames:
        unknown = dict.fromkeys(("shape", "colour", "pattern", "accent"), 0.0)
        return SubjectAnalysis(None, None, None, None, unknown), None
    sample = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), SHAPE_FRAMES)).round().astype(int))
    scores = np.mean([_fit_shapes(frames[index].mask, SHAPES)[0] for index in sample], axis=0)
    shape = SHAPES[int(np.argmax(scores))]
    poses = [_fit_shapes(frame.mask, (shape,))[1][0] for frame in frames]
    regions = [_regions(shape, pose, frame.mask.shape) for pose, frame in zip(poses, frames, strict=True)]
    interior, pattern_area = (
        np.concatenate([frame.pixels[region[part]] for frame, region in zip(frames, regions, strict=True)])
        for part in (0, 1)
    )
    colour, ink, confidence, body = _fit_colours(interior, pattern_area)
    pattern, confidence["pattern"] = _pattern(frames, poses, regions, _BODY[colour], _INK[ink])
    if pattern == "plain":
        confidence["accent"] = 0.0
    analysis = SubjectAnalysis(
        shape=shape,
        colour=list(COLOURS)[colour],
        pattern=pattern,
        accent=None if pattern == "plain" else list(ACCENTS)[ink],
        confidence={"shape": _margin(scores), **confidence},
    )
    return analysis, body


def _fit_shapes(mask: np.ndarray, shapes: tuple[str, ...]) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Per shape: the best soft IoU with the mask and the pose (box centre x, y and side) that gives it.

    The box side comes from the mask's area and the shape's fill ratio, the centre from its
    centroid and the shape's own centroid offset (a triangle's sits low); a small search over
    `SCALES` x `OFFSETS` then absorbs the blur and rasterisation of the measured mask.
    """
    rows, cols = np.nonzero(mask)
    area, x, y = float(rows.size), float(cols.mean()) + 0.5, float(rows.mean()) + 0.5
    margin = 2 + int(0.15 * np.sqrt(area))
    top, left = max(0, rows.min() - margin), max(0, cols.min() - margin)
    crop = mask[top : rows.max() + margin + 1, left : cols.max() + margin + 1].astype(np.float32)
    xs = left + np.arange(crop.shape[1], dtype=np.float32) + 0.5
    ys = top + np.arange(crop.shape[0], dtype=np.float32) + 0.5
    grids = np.meshgrid(np.float32(OFFSETS), np.float32(OFFSETS), np.float32(SCALES))
    dx, dy, scale = (grid.ravel()[:, None, None] for grid in grids)
    scores, poses = np.zeros(len(shapes)), []
    for index, shape in enumerate(shapes):
        fill, centre_u, centre_v = shape_stats(shape)
        size = np.sqrt(area / fill) * scale
        px, py = x - centre_u * size + dx, y - centre_v * size + dy
        template = np.clip(0.5 - shape_distance(shape, (xs - px) / size, (ys[:, None] - py) / size) * size, 0, 1)
        iou = np.minimum(template, crop).sum(axis=(1, 2)) / np.maximum(template, crop).sum(axis=(1, 2))
        best = int(np.argmax(iou))
        scores[index] = iou[best]
        poses.append((float(px[best, 0, 0]), float(py[best, 0, 0]), float(size[best, 0, 0])))
    return scores, poses


def _regions(shape: str, pose: tuple[float, float, float], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the fitted subject's interior (>= 1 px from the outline) and of its pattern area (inside the inset)."""
    x, y, side = pose
    u = (np.arange(size[1]) + 0.5 - x)[None, :] / side
    v = (np.arange(size[0]) + 0.5 - y)[:, None] / side
    distance = shape_distance(shape, u, v)
    return distance * side < -1.0, distance < -INSET - 0.5 / side


def _fit_colours(interior: np.ndarray, pattern_area: np.ndarray) -> tuple[int, int, dict[str, float], np.ndarray]:
    """(body index, accent index, confidences, the body colour as measured) from [N, 3] pixel lists.

    The body is the palette colour that, mixed with some accent, explains the interior best. The
    accent is judged on the pattern area alone, deeper inside: near the outline, blur mixes in the
    background, and a dark background would pass for a black accent.
    """
    cost, share = _mixture_costs(interior, _BODY)
    colour = int(np.argmin(cost.min(axis=1)))
    accent_cost = _mixture_costs(pattern_area, _BODY[colour : colour + 1])[0][0] if len(pattern_area) else cost[colour]
    accent = int(np.argmin(accent_cost))
    plain = share[colour, accent] < 0.25
    measured = interior[plain].mean(axis=0) if plain.any() else _BODY[colour]
    confidence = {"colour": _cost_margin(cost.min(axis=1)), "accent": _cost_margin(accent_cost)}
    return colour, accent, confidence, measured


def _mixture_costs(pixels: np.ndarray, bodies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per (body, accent): the mean distance of the pixels to the body-accent segment (capped, so a few
    stray pixels cannot decide) [B, 2], and each pixel's position along it [B, 2, N]."""
    body, ink = bodies[:, None, None, :], _INK[None, :, None, :]
    segment = ink - body
    share = np.clip(((pixels - body) * segment).sum(-1) / (segment**2).sum(-1), 0, 1)
    residual = np.linalg.norm(pixels - body - share[..., None] * segment, axis=-1)
    return np.minimum(residual, 80.0).mean(axis=-1), share


def _pattern(frames: list[_Frame], poses: list, regions: list, body: np.ndarray, ink: np.ndarray) -> tuple[str, float]:
    """The pattern and its confidence from the accent map: where each pixel sits between body and accent.

    Plain below `PLAIN_LEVEL` mean accent; otherwise the pattern whose template correlates best,
    averaged over frames by their pattern area.
    """
    segment = ink - body
    maps = [np.clip(((frame.pixels - body) @ segment) / (segment @ segment), 0, 1) for frame in frames]
    accent = np.concatenate([share[area] for share, (_, area) in zip(maps, regions, strict=True)])
    level = float(accent.mean()) if accent.size else 0.0
    if level < PLAIN_LEVEL:
        return "plain", 1.0 - level / PLAIN_LEVEL
    weights = np.array([area.sum() for _, area in regions], float)
    if weights.max() < 4:
        return "plain", 0.0
    pairs = zip(maps, poses, regions, strict=True)
    correlations = [_correlations(share, pose, area) for share, pose, (_, area) in pairs]
    mean = np.average(correlations, axis=0, weights=weights)
    return PATTERNS[1 + int(np.argmax(mean))], min(1.0, _margin(mean), (level - PLAIN_LEVEL) * 10)


def _correlations(share: np.ndarray, pose: tuple, area: np.ndarray) -> np.ndarray:
    """Per non-plain pattern: the best correlation of the accent map with it, placed by the pose +-1 px."""
    x, y, side = pose
    rows, cols = np.nonzero(area)
    if rows.size < 4:
        return np.zeros(len(PATTERNS) - 1)
    observed = share[rows, cols] - share[rows, cols].mean()
    dx, dy = (grid.ravel()[:, None] for grid in np.meshgrid(PATTERN_SHIFTS, PATTERN_SHIFTS))
    u, v = (cols + 0.5 - x - dx) / side, (rows + 0.5 - y - dy) / side
    best = []
    for pattern in PATTERNS[1:]:
        template = np.clip(0.5 - pattern_distance(pattern, u, v) * side, 0, 1)
        template = template - template.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(template, axis=1) * np.linalg.norm(observed)
        best.append(float(np.max(template @ observed / np.maximum(norms, 1e-6))))
    return np.array(best)


def _motion(track: np.ndarray, sizes: np.ndarray) -> tuple[str | None, bool, float]:
    """(motion, moving, confidence) from centroids [N, 2] and sqrt-area sizes [N], both in frame sides.

    A track that never leaves its first position by `MOVE_DISTANCE` nor changes size by `MOVE_ZOOM`
    is still. Otherwise each motion scores its own evidence against the world's amplitude: net
    displacement (first to last frame) for the four directions, the smaller principal spread of
    the track (a loop's radius; ~0 for straight paths) for circle, the log size ratio for zooms.
    """
    if len(track) < 2:
        return None, False, 0.0
    drift = float(np.linalg.norm(track - track[0], axis=1).max())
    growth = np.log(sizes / sizes[0])
    moving = drift > MOVE_DISTANCE or float(np.abs(growth).max()) > MOVE_ZOOM
    if not moving:
        return "still", False, 1.0 - max(drift / MOVE_DISTANCE, float(np.abs(growth).max()) / MOVE_ZOOM)
    net_x, net_y = (track[-1] - track[0]) / _MOTION_SCALE["line"]
    spread = np.sqrt(2 * max(0.0, float(np.linalg.eigvalsh(np.cov(track.T, bias=True))[0])))
    zoom = float(growth[-1]) / _MOTION_SCALE["zoom"]
    scores = {
        "left": -net_x,
        "right": net_x,
        "up": -net_y,
        "down": net_y,
        "circle": spread / _MOTION_SCALE["circle"],
        "zoom in": zoom,
        "zoom out": -zoom,
    }
    values = np.array(list(scores.values()))
    return max(scores, key=scores.get), True, _margin(values)


def _smoothness(track: np.ndarray, sizes: np.ndarray) -> float:
    """1 - the coefficient of variation of the subject's per-frame speed in (x, y, size), in [0, 1].

    Every world motion has a steady speed (a loop and a linear zoom included), so a clean clip
    scores ~1; jumps, stalls and flicker in the track (e.g. frames a VAE ghosts together) lower it.
    A track that barely moves scores 1.
    """
    if len(track) < 3:
        return 1.0
    speed = np.linalg.norm(np.diff(np.column_stack([track, sizes]), axis=0), axis=1)
    if speed.mean() < STEADY_SPEED:
        return 1.0
    return float(np.clip(1 - speed.std() / speed.mean(), 0, 1))


def _nearest(colour: np.ndarray, palette: dict) -> tuple[str, float]:
    distances = np.linalg.norm(np.array(list(palette.values()), np.float32) - colour, axis=1)
    return list(palette)[int(np.argmin(distances))], _cost_margin(distances)


def _margin(scores: np.ndarray) -> float:
    """Best score minus the runner-up: higher is surer."""
    top = np.sort(np.asarray(scores, float))[-2:]
    return float(top[1] - top[0])


def _cost_margin(costs: np.ndarray) -> float:
    """1 - best cost / runner-up cost, in [0, 1]: 0 when two candidates fit equally well."""
    low = np.sort(np.asarray(costs, float))[:2]
    return float(1 - low[0] / low[1]) if low[1] > 0 else 0.0
