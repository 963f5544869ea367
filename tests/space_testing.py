"""Shared by the Space tests: the app module, the bundled model loaded once, an in-process server, scene files."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

from sam_hf.data import generate_scene
from sam_hf.data.scenes import Scene
from sam_hf.geometry import mask_iou
from space import app


@functools.cache
def bundled_segmenter() -> app.Segmenter:
    return app.Segmenter.load()


@contextmanager
def running_space(segmenter: app.Segmenter, **options: Any) -> Iterator[str]:
    """The Space launched in this process on a free local port (`options`: more `build_demo` arguments); yields its
    URL."""
    demo = app.build_demo(segmenter=segmenter, **options)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **app.launch_options())
    try:
        yield url
    finally:
        demo.close()


def write_scene(directory: Path, seed: int, size: int = 128, upscale: int = 1) -> tuple[str, Scene, np.ndarray]:
    """A generated scene saved as PNG (optionally upscaled by an integer factor): (path, scene, ground-truth masks at
    the saved size)."""
    scene = generate_scene(seed, size)
    image = PIL.Image.fromarray(scene.image)
    masks = scene.masks
    if upscale > 1:
        image = image.resize((size * upscale, size * upscale), PIL.Image.Resampling.NEAREST)
        masks = masks.repeat(upscale, axis=1).repeat(upscale, axis=2)
    path = directory / f"scene_{seed}_{upscale}.png"
    image.save(path)
    return str(path), scene, masks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mask IoU of two `(H, W)` masks; two empty masks are the same mask (1.0)."""
    return float(mask_iou(a, b, empty=1.0))
