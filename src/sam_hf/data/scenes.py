"""Procedural scenes of named shapes with exact masks: the data the bundled model is trained and evaluated on.

Each scene has 2-4 objects ("red circle", "blue star", ...) with textures, partial occlusion (later objects cover
earlier ones; masks are what stays visible) and a cluttered background of lines and dots that are not objects.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 40),
    "purple": (135, 55, 185),
    "orange": (240, 135, 30),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "star", "ellipse", "ring", "hexagon", "cross")
MIN_VISIBLE_FRACTION = 0.4  # objects mostly hidden by others are dropped, so every name is recognisable
# The held-out split: scenes from this seed on are for evaluation only; the bundled model trained on seeds far below.
HELD_OUT_SEED = 1_000_000_000


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene: its `shape`, `color` and visible `mask` `(H, W)` bool."""

    shape: str
    color: str
    mask: np.ndarray  # (H, W) bool, the visible part

    @property
    def name(self) -> str:
        """`"color shape"`, e.g. `"red circle"`."""
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A generated scene: `image` `(H, W, 3)` uint8 and its `objects` in drawing order (later ones cover earlier
    ones; mostly hidden ones are dropped)."""

    image: np.ndarray  # (H, W, 3) uint8
    objects: list[SceneObject]

    @property
    def masks(self) -> np.ndarray:
        """`(num_objects, H, W)` bool."""
        return np.stack([obj.mask for obj in self.objects])

    @property
    def names(self) -> list[str]:
        """Each object's name (`"red circle"`, ...), in `objects` order."""
        return [obj.name for obj in self.objects]


def _regular_polygon(cx: float, cy: float, radius: float, sides: int, angle: float) -> list[tuple[float, float]]:
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * i / sides),
            cy + radius * math.sin(angle + 2 * math.pi * i / sides),
        )
        for i in range(sides)
    ]


def _shape_mask(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random placement, scale and rotation of `shape` as an (size, size) bool mask."""
    radius = rng.uniform(0.1, 0.22) * size
    cx, cy = rng.uniform(radius * 0.6, size - radius * 0.6, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    ratio = rng.uniform(0.45, 0.7) if shape == "ellipse" else 1.0
    inner = rng.uniform(0.45, 0.6) if shape == "ring" else 0.0
    return draw_shape(shape, (size, size), cx, cy, radius, angle, ratio, inner)


def draw_shape(
    shape: str,
    canvas_size: tuple[int, int],
    cx: float,
    cy: float,
    radius: float,
    angle: float,
    ratio: float = 1.0,
    inner: float = 0.5,
) -> np.ndarray:
    """`shape` drawn at centre (`cx`, `cy`) with `radius` (pixels) and rotation `angle` (radians) as an `(H, W)` bool
    mask of `canvas_size` (height, width); `ratio` is an ellipse's minor / major axis, `inner` a ring's hole / outer
    radius. The shapes of `generate_scene` (and of `sam_hf.data.motion`'s clips)."""
    height, width = canvas_size
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=1)
    elif shape in ("ellipse", "ring"):
        points = [(radius * math.cos(t), ratio * radius * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 48)]
        rotated = [(cx + x * math.cos(angle) - y * math.sin(angle), cy + x * math.sin(angle) + y * math.cos(angle))
                   for x, y in points]  # fmt: skip
        draw.polygon(rotated, fill=1)
        if shape == "ring":
            hole = radius * inner
            draw.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=0)
    elif shape == "star":
        outer = _regular_polygon(cx, cy, radius, 5, angle)
        inner_points = _regular_polygon(cx, cy, radius * 0.45, 5, angle + math.pi / 5)
        draw.polygon([p for pair in zip(outer, inner_points, strict=True) for p in pair], fill=1)
    elif shape == "cross":
        arm = radius * 0.35
        for corners in ([(-radius, -arm), (radius, arm)], [(-arm, -radius), (arm, radius)]):
            (x0, y0), (x1, y1) = corners
            rect = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            draw.polygon(
                [(cx + x * math.cos(angle) - y * math.sin(angle), cy + x * math.sin(angle) + y * math.cos(angle))
                 for x, y in rect], fill=1)  # fmt: skip
    else:
        sides = {"square": 4, "triangle": 3, "hexagon": 6}[shape]
        draw.polygon(_regular_polygon(cx, cy, radius, sides, angle), fill=1)
    return np.asarray(canvas, dtype=bool)


def _texture(color: tuple[int, int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) float fill: the colour, plain or with stripes, checks or noise that keep it recognisable."""
    base = np.array(color, dtype=np.float32)
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 1:  # stripes
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 10)
        shade = 0.8 + 0.2 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    elif kind == 2:  # checks
        cell = int(rng.integers(3, 7))
        shade = np.where((xx // cell + yy // cell) % 2 == 0, 1.0, 0.8)
    elif kind == 3:  # noise
        shade = 1 + rng.normal(0, 0.08, size=(size, size))
    else:
        shade = np.ones((size, size), dtype=np.float32)
    return base * shade[..., None]


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) float: a dull gradient with noise and clutter (lines, dots) that belongs to no object."""
    start, end = rng.uniform(60, 190, size=(2, 3))
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    image = start + (end - start) * ramp
    image = np.repeat(image, size, axis=1) if rng.random() < 0.5 else np.repeat(image, size, axis=1).transpose(1, 0, 2)
    canvas = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(3, 12)):
        colour = tuple(int(c) for c in rng.integers(40, 220, size=3))
        if rng.random() < 0.5:
            draw.line([tuple(rng.uniform(0, size, size=2)), tuple(rng.uniform(0, size, size=2))], fill=colour, width=1)
        else:
            x, y, r = *rng.uniform(0, size, size=2), rng.uniform(1, 2.5)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    return np.asarray(canvas, dtype=np.float32) + rng.normal(0, 6, size=(size, size, 3))


def generate_scene(seed: int, size: int = 128, min_objects: int = 2, max_objects: int = 4) -> Scene:
    """A scene of `min_objects..max_objects` distinct named objects, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    image = _background(size, rng)
    count = int(rng.integers(min_objects, max_objects + 1))
    kinds = rng.choice(len(SHAPES) * len(COLORS), size=count, replace=False)
    full_masks, names = [], []
    for kind in kinds:
        shape, color = SHAPES[kind % len(SHAPES)], list(COLORS)[kind // len(SHAPES)]
        mask = _shape_mask(shape, size, rng)
        image = np.where(mask[..., None], _texture(COLORS[color], size, rng), image)
        full_masks.append(mask)
        names.append((shape, color))
    objects = []
    covered = np.zeros((size, size), dtype=bool)
    for mask, (shape, color) in reversed(list(zip(full_masks, names, strict=True))):  # top-most object first
        visible = mask & ~covered
        covered |= mask
        if visible.sum() >= MIN_VISIBLE_FRACTION * mask.sum() and visible.any():
            objects.append(SceneObject(shape=shape, color=color, mask=visible))
    image = np.clip(image + rng.normal(0, 3, size=image.shape), 0, 255).astype(np.uint8)
    return Scene(image=image, objects=objects[::-1])


class ShapesDataset(torch.utils.data.Dataset):
    """`num_scenes` scenes with seeds `seed, seed + 1, ...`; item `i` is `generate_scene(seed + i, size)`."""

    def __init__(self, num_scenes: int, seed: int = 0, size: int = 128) -> None:
        if num_scenes <= 0:
            raise ValueError(f"num_scenes must be positive, got {num_scenes}.")
        self.num_scenes, self.seed, self.size = num_scenes, seed, size

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, index: int) -> Scene:
        if not 0 <= index < self.num_scenes:
            raise IndexError(index)
        return generate_scene(self.seed + index, self.size)
