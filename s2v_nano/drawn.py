"""Subjects as a user would draw them: a second renderer, independent of the world's.

The world rasterises signed distances on a fixed 48 px frame; a user's file is anything else. Here
PIL's own polygons and ellipses (anti-aliased by drawing 4x larger and shrinking) on white or
off-white canvases of any size and aspect, the subject filling 10-90% of the shorter side, placed
anywhere, its colours a few units off the world's palette, some files saved as JPEG. s2v-nano is
measured on these beside the world's own renderings of the same identities: the nano preset's
subject placement (`s2v.subject.prepare_subject`'s `subject_size`) has to bring them to the
world's framing.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from .world import ACCENTS, COLOURS, Identity

OVERSAMPLE = 4
FILL = (0.1, 0.9)
"""The subject's box side as a share of the canvas's shorter side."""
CANVAS = (64, 720)
"""Each canvas side is drawn from this range, independently: any size, any aspect."""
INNER = {"disc": 0.8, "square": 0.8, "bar": 0.8, "triangle": 0.62, "diamond": 0.7}
"""The pattern stays inside the outline scaled by this about the box's centre: a band of body colour, about
as wide as the world's (wider along the triangle's base and the bar's long sides: a drawing, not a copy)."""


def draw_subject(identity: Identity, rng: np.random.Generator) -> Image.Image:
    """One drawing of `identity` on a canvas of random size, fill, place and background."""
    width, height = (int(side) for side in rng.integers(*CANVAS, size=2))
    box = rng.uniform(*FILL) * min(width, height)
    centre = (rng.uniform(box / 2, width - box / 2), rng.uniform(box / 2, height - box / 2))
    paper = tuple(int(c) for c in 255 - rng.integers(0, 12) - rng.integers(0, 4, size=3))
    body = _jittered(COLOURS[identity.colour], rng)
    big = Image.new("RGB", (width * OVERSAMPLE, height * OVERSAMPLE), paper)
    scaled_centre, scaled_box = tuple(c * OVERSAMPLE for c in centre), box * OVERSAMPLE
    outline = _shape_mask(identity.shape, big.size, scaled_centre, scaled_box, 1.0)
    big.paste(body, mask=outline)
    if identity.pattern != "plain":
        inner = _shape_mask(identity.shape, big.size, scaled_centre, scaled_box, INNER[identity.shape])
        pattern = _pattern_mask(identity.pattern, big.size, scaled_centre, scaled_box)
        accent = Image.fromarray(np.minimum(np.asarray(inner), np.asarray(pattern)))
        big.paste(_jittered(ACCENTS[identity.accent], rng), mask=accent)
    return big.resize((width, height), Image.Resampling.LANCZOS)


def drawings(identities: list[Identity], per_identity: int = 2, seed: int = 0) -> list[tuple[str, Identity, bytes]]:
    """(file name, identity, the file's bytes) for `per_identity` drawings of each identity, every third a JPEG;
    the same seed gives the same bytes."""
    result = []
    for index, identity in enumerate(identity for identity in identities for _ in range(per_identity)):
        rng = np.random.default_rng([seed, index])
        image, encoded = draw_subject(identity, rng), io.BytesIO()
        name = f"drawn_{index:03d}.{'jpg' if index % 3 == 2 else 'png'}"
        if name.endswith(".jpg"):
            image.save(encoded, format="JPEG", quality=int(rng.integers(70, 96)))
        else:
            image.save(encoded, format="PNG")
        result.append((name, identity, encoded.getvalue()))
    return result


def open_drawing(data: bytes) -> Image.Image:
    """A drawing's bytes decoded as a user's upload would be."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _shape_mask(shape: str, size: tuple[int, int], centre: tuple[float, float], box: float, scale: float):
    """An L mask of the shape, its box `box * scale` wide around `centre`."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    x, y, half = centre[0], centre[1], box * scale / 2
    if shape == "disc":
        draw.ellipse([x - half, y - half, x + half, y + half], fill=255)
    elif shape == "square":
        draw.rectangle([x - half, y - half, x + half, y + half], fill=255)
    elif shape == "bar":
        draw.rectangle([x - half, y - 0.6 * half, x + half, y + 0.6 * half], fill=255)
    elif shape == "triangle":
        draw.polygon([(x, y - half), (x + half, y + half), (x - half, y + half)], fill=255)
    else:  # diamond, taller than wide
        draw.polygon([(x, y - half), (x + 0.76 * half, y), (x, y + half), (x - 0.76 * half, y)], fill=255)
    return mask


def _pattern_mask(pattern: str, size: tuple[int, int], centre: tuple[float, float], box: float):
    """An L mask of the accent: vertical stripes, a dot lattice or checks, anchored at the subject's centre."""
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    x, y = centre
    if pattern == "stripes":  # bands 0.2 box wide, 0.4 apart, centred at +-0.2
        for k in range(-3, 3):
            left = x + (0.1 + 0.4 * k) * box
            draw.rectangle([left, 0, left + 0.2 * box, size[1]], fill=255)
    elif pattern == "dots":  # radius 0.1 on a 0.3 lattice, one dot at the centre
        for i in range(-3, 4):
            for j in range(-3, 4):
                cx, cy, r = x + 0.3 * i * box, y + 0.3 * j * box, 0.1 * box
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:  # checks: 0.25 cells meeting at the centre
        cell = 0.25 * box
        for i in range(-4, 4):
            for j in range(-4, 4):
                if (i + j) % 2 == 0:
                    draw.rectangle([x + i * cell, y + j * cell, x + (i + 1) * cell, y + (j + 1) * cell], fill=255)
    return mask


def _jittered(colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    """A user's red is not the world's red: each channel a few units off."""
    return tuple(int(np.clip(c + rng.integers(-8, 9), 0, 255)) for c in colour)
