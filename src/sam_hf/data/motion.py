"""Generated video with exact masks: the named shapes of `scenes.py` in motion, for scoring video segmentation.

A clip has 2-4 objects that translate on smooth periodic paths, rotate and scale; they cross and occlude each other
(a fixed depth order: masks are what stays visible), some leave the frame and come back, and the textured, cluttered
background pans under them. Frames are drawn on demand (`clip.frame(t)`, `iter(clip)`), so a clip of any length costs
the memory of one frame. Everything is a pure function of the seed; clips use their own random stream, so a clip seed
never reproduces a training scene. Evaluation uses the clip seeds `CLIP_HELD_OUT_SEED + 0..9999` and tuning (choosing
`VideoSettings`) the disjoint validation seeds from `CLIP_VALIDATION_SEED` on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .scenes import COLORS, HELD_OUT_SEED, MIN_VISIBLE_FRACTION, SHAPES, _background, _texture, draw_shape

CLIP_HELD_OUT_SEED = HELD_OUT_SEED  # evaluation clips: seeds from here on (the bundled model never saw a clip)
CLIP_VALIDATION_SEED = HELD_OUT_SEED + 1_000_000  # validation clips for tuning: never the evaluation clips
_MOTION_STREAM = 20_251_202  # mixed into every clip's seed: clip randomness differs from scene randomness
_PLACEMENT_TRIES = 50  # first-frame layouts tried until every object is mostly visible


@dataclass(frozen=True)
class MovingObject:
    """One object of a clip and its motion: centre `(x0 + ax sin(wx t + px), y0 + ay sin(wy t + py))` minus the
    `phase` offset at t = 0, rotation `angle0 + spin t`, radius `radius0 (1 + grow sin(wg t))`, all in pixels, radians
    and frames."""

    shape: str
    color: str
    x0: float
    y0: float
    ax: float
    ay: float
    wx: float
    wy: float
    px: float
    py: float
    radius0: float
    grow: float
    wg: float
    angle0: float
    spin: float
    ratio: float
    inner: float
    texture_seed: int

    @property
    def name(self) -> str:
        """`"color shape"`, e.g. `"red circle"`."""
        return f"{self.color} {self.shape}"

    def pose(self, t: int) -> tuple[float, float, float, float]:
        """`(cx, cy, radius, angle)` at frame `t` (the path passes through `(x0, y0)` at t = 0)."""
        cx = self.x0 + self.ax * (math.sin(self.wx * t + self.px) - math.sin(self.px))
        cy = self.y0 + self.ay * (math.sin(self.wy * t + self.py) - math.sin(self.py))
        return cx, cy, self.radius0 * (1 + self.grow * math.sin(self.wg * t)), self.angle0 + self.spin * t

    def full_mask(self, t: int, size: int) -> np.ndarray:
        """`(size, size)` bool: the whole object at frame `t`, before occlusion."""
        cx, cy, radius, angle = self.pose(t)
        return draw_shape(self.shape, (size, size), cx, cy, radius, angle, self.ratio, self.inner)


@dataclass(frozen=True)
class ClipFrame:
    """Frame `index` of a clip: `image` `(H, W, 3)` uint8 and `masks` `(num_objects, H, W)` bool, the visible part of
    each object in the clip's object order (all False when hidden or outside the frame)."""

    index: int
    image: np.ndarray
    masks: np.ndarray


class MotionClip:
    """A generated clip (see the module docstring). `len(clip)` frames; `clip.frame(t)` draws frame `t`;
    iterating yields the frames in order, one at a time.

    Args:
        seed: the clip's seed (everything follows from it).
        num_frames: frames in the clip.
        size: frame side in pixels (square frames, as the scenes).
        min_objects / max_objects: objects per clip.
    """

    def __init__(
        self, seed: int, num_frames: int = 48, size: int = 128, min_objects: int = 2, max_objects: int = 4
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be positive, got {num_frames}.")
        if not 1 <= min_objects <= max_objects <= len(SHAPES) * len(COLORS):
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}.")
        self.seed, self.num_frames, self.size = seed, num_frames, size
        rng = np.random.default_rng([seed, _MOTION_STREAM])
        count = int(rng.integers(min_objects, max_objects + 1))
        kinds = rng.choice(len(SHAPES) * len(COLORS), size=count, replace=False)
        self.objects = self._place(kinds, rng)
        # The background is twice the frame size: the camera pans across it along a slow ellipse.
        self._background = _background(2 * size, rng)
        self._pan = rng.uniform(0.15, 0.35) * size, rng.uniform(0.15, 0.35) * size, rng.uniform(0.03, 0.08)
        self._textures = [
            _texture(COLORS[obj.color], 2 * size, np.random.default_rng(obj.texture_seed)) for obj in self.objects
        ]

    def _place(self, kinds: np.ndarray, rng: np.random.Generator) -> list[MovingObject]:
        size = self.size
        for _ in range(_PLACEMENT_TRIES):
            objects = []
            for kind in kinds:
                shape, color = SHAPES[kind % len(SHAPES)], list(COLORS)[kind // len(SHAPES)]
                radius = rng.uniform(0.1, 0.2) * size
                # One object in three travels far enough to leave the frame and come back within a few seconds.
                reach = rng.uniform(0.55, 0.8) if rng.random() < 1 / 3 else rng.uniform(0.1, 0.3)
                direction = rng.uniform(0, 2 * math.pi)
                objects.append(
                    MovingObject(
                        shape=shape,
                        color=color,
                        x0=rng.uniform(radius, size - radius),
                        y0=rng.uniform(radius, size - radius),
                        ax=reach * size * abs(math.cos(direction)) + 2,
                        ay=reach * size * abs(math.sin(direction)) + 2,
                        wx=rng.uniform(0.05, 0.13),
                        wy=rng.uniform(0.05, 0.13),
                        px=rng.uniform(0, 2 * math.pi),
                        py=rng.uniform(0, 2 * math.pi),
                        radius0=radius,
                        grow=rng.uniform(0.0, 0.25),
                        wg=rng.uniform(0.05, 0.15),
                        angle0=rng.uniform(0, 2 * math.pi),
                        spin=rng.uniform(-0.08, 0.08),
                        ratio=rng.uniform(0.45, 0.7) if shape == "ellipse" else 1.0,
                        inner=rng.uniform(0.45, 0.6),
                        texture_seed=int(rng.integers(2**31)),
                    )
                )
            visible, full = self._visible(objects, 0)
            if all(v.sum() >= MIN_VISIBLE_FRACTION * f.sum() and v.any() for v, f in zip(visible, full, strict=True)):
                return objects
        raise ValueError(f"seed {self.seed}: no layout with every object visible on frame 0; try another seed.")

    def _visible(self, objects: list[MovingObject], t: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        full = [obj.full_mask(t, self.size) for obj in objects]
        visible, covered = [], np.zeros((self.size, self.size), dtype=bool)
        for mask in reversed(full):  # later objects are in front
            visible.append(mask & ~covered)
            covered |= mask
        return visible[::-1], full

    @property
    def names(self) -> list[str]:
        """Each object's name (`"red circle"`, ...), in object order."""
        return [obj.name for obj in self.objects]

    def __len__(self) -> int:
        return self.num_frames

    def frame(self, t: int) -> ClipFrame:
        """Draws frame `t` (0 <= t < len(clip)) with its exact masks."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} of a {self.num_frames}-frame clip.")
        size = self.size
        ox, oy, speed = self._pan
        x = round(size / 2 + ox * math.sin(speed * t))
        y = round(size / 2 + oy * math.cos(speed * t) - oy)
        image = self._background[y + size // 2 : y + size // 2 + size, x : x + size].copy()
        visible, full = self._visible(self.objects, t)
        for obj, mask, texture in zip(self.objects, full, self._textures, strict=True):
            cx, cy, _, _ = obj.pose(t)
            # The texture moves with the object: a window of the larger texture that follows its centre.
            tx, ty = round(size / 2 - (cx - obj.x0)) % size, round(size / 2 - (cy - obj.y0)) % size
            image = np.where(mask[..., None], texture[ty : ty + size, tx : tx + size], image)
        noise = np.random.default_rng([self.seed, _MOTION_STREAM, t]).normal(0, 3, size=image.shape)
        return ClipFrame(t, np.clip(image + noise, 0, 255).astype(np.uint8), np.stack(visible))

    def __iter__(self) -> Iterator[ClipFrame]:
        return (self.frame(t) for t in range(self.num_frames))

    @property
    def images(self) -> Sequence[np.ndarray]:
        """The frames' images as a sequence drawn on demand (a video for `sam_hf.video.open_video`)."""
        return _ClipImages(self)


class _ClipImages(Sequence):
    """`clip.images`: `len` and indexing, each frame drawn when asked for."""

    def __init__(self, clip: MotionClip) -> None:
        self.clip = clip

    def __len__(self) -> int:
        return len(self.clip)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("clip.images takes one frame index at a time.")
        return self.clip.frame(index).image


def generate_clip(
    seed: int, num_frames: int = 48, size: int = 128, min_objects: int = 2, max_objects: int = 4
) -> MotionClip:
    """A clip of `num_frames` frames with `min_objects..max_objects` moving named objects, deterministic in `seed`
    (see `MotionClip`)."""
    return MotionClip(seed, num_frames, size, min_objects, max_objects)
