"""Prompt tensors: their layout, label values, and the checks that both the processor and the model run at their
public boundary, so that bad input fails with a `ValueError`/`TypeError` that names the argument.

Layout (images x prompts-per-image x points-per-prompt):

- `input_points`: float `(batch_size, point_batch_size, num_points, 2)`, (x, y) in the model's input frame.
- `input_labels`: integer `(batch_size, point_batch_size, num_points)`, values in `POINT_LABELS`.
- `input_boxes`: float `(batch_size, point_batch_size, 4)`, XYXY; box `j` belongs to prompt `j`.
- `input_masks`: float `(batch_size, point_batch_size or 1, mask_size, mask_size)` low-resolution mask logits
  (a previous `pred_masks`), one per prompt; a size of 1 on the prompt axis is shared by every prompt.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FOREGROUND_LABEL = 1
BACKGROUND_LABEL = 0
NOT_A_POINT_LABEL = -1  # the official "not a point" token (also what the model appends after points without box)
PAD_LABEL = -10  # ragged prompts: the point is ignored entirely, as if the prompt had fewer points
POINT_LABELS = (FOREGROUND_LABEL, BACKGROUND_LABEL, NOT_A_POINT_LABEL, PAD_LABEL)

# Documented limits (README "Limits"), read at call time: raise them by assigning the module attribute, as with PIL's
# `Image.MAX_IMAGE_PIXELS` (`sam_hf.prompts.MAX_POINTS_PER_PROMPT = 4096`).
# A prompt's points attend to each other in the decoder, so its decode time grows with the square of their number
# (measured on the bundled model: 1k points 0.5 s, 16k 9 s, 32k 65 s); checked wherever prompts are checked.
MAX_POINTS_PER_PROMPT = 1024
# Prompts (boxes and / or point sets) decoded for one request, all images of the batch together: time and memory grow
# linearly with them. Checked where requests enter (the processor and the predictor), not by `SamModel.forward`, whose
# batches everything mode sizes itself (`points_per_batch`).
MAX_PROMPTS_PER_REQUEST = 1024


def is_tracing() -> bool:
    """Whether `torch.compile`, `torch.export` / ONNX export or `torch.jit.trace` is tracing the model. Checks that read
    tensor values (`.all()`, `.item()`) are skipped then, as they would break the graph; in eager use (and at the
    processor and predictor boundary) they always run."""
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def values_readable(tensor: torch.Tensor) -> bool:
    """Whether checks may read `tensor`'s values: not while tracing (`is_tracing`), nor on the meta device, where
    tensors have shapes but no values (models are built there, and tests run them there to catch device mix-ups)."""
    return not (is_tracing() or tensor.is_meta)


def _check_tensor(name: str, value: object, ndim: int, last_dim: int | None, form: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {form}, got {type(value).__name__}.")
    if value.ndim != ndim or (last_dim is not None and value.shape[-1] != last_dim):
        raise ValueError(f"{name} must have shape {form}, got {tuple(value.shape)}.")
    if 0 in value.shape[:2]:
        raise ValueError(f"{name} needs at least one image and one prompt: shape {form}, got {tuple(value.shape)}.")
    if value.is_floating_point() and values_readable(value) and not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return value


def check_prompts(
    input_points: torch.Tensor | None = None,
    input_labels: torch.Tensor | None = None,
    input_boxes: torch.Tensor | None = None,
    input_masks: torch.Tensor | None = None,
    mask_size: int | None = None,
    request: bool = False,
) -> None:
    """Raises `ValueError`/`TypeError` naming the argument if the prompts do not follow the module's layout, or have
    more than `MAX_POINTS_PER_PROMPT` points per prompt.

    `mask_size` is the expected side of `input_masks` (the model's low-resolution mask size); `None` skips that check.
    `request`: the prompts of one user request, also held to `MAX_PROMPTS_PER_REQUEST`.
    """
    if input_points is not None:
        _check_tensor("input_points", input_points, 4, 2, "(batch_size, point_batch_size, num_points, 2)")
        if not input_points.is_floating_point():
            raise TypeError(f"input_points must be a floating point tensor, got {input_points.dtype}.")
        _check_limit("input_points", "points per prompt", input_points.shape[2], "MAX_POINTS_PER_PROMPT")
    if input_labels is not None:
        if input_points is None:
            raise ValueError("input_labels were given without input_points.")
        _check_tensor("input_labels", input_labels, 3, None, "(batch_size, point_batch_size, num_points)")
        if input_labels.shape != input_points.shape[:3]:
            raise ValueError(
                f"input_labels must have one label per point: expected shape {tuple(input_points.shape[:3])}, "
                f"got {tuple(input_labels.shape)}."
            )
        if values_readable(input_labels):
            if input_labels.is_floating_point() and not torch.equal(input_labels, input_labels.round()):
                raise ValueError("input_labels must be integers.")
            allowed = torch.tensor(POINT_LABELS, device=input_labels.device)
            if not torch.isin(input_labels.to(allowed.dtype), allowed).all():
                raise ValueError(
                    f"input_labels must be 1 (foreground), 0 (background), -1 (not a point) or -10 (padding), "
                    f"got values {sorted(set(input_labels.unique().tolist()) - set(POINT_LABELS))}."
                )
    if input_boxes is not None:
        _check_tensor("input_boxes", input_boxes, 3, 4, "(batch_size, point_batch_size, 4) as x1, y1, x2, y2")
        if not input_boxes.is_floating_point():
            raise TypeError(f"input_boxes must be a floating point tensor, got {input_boxes.dtype}.")
        if values_readable(input_boxes) and (input_boxes[..., 2:] < input_boxes[..., :2]).any():
            raise ValueError("input_boxes must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1.")
        if input_points is not None and input_boxes.shape[:2] != input_points.shape[:2]:
            raise ValueError(
                "input_boxes and input_points must describe the same prompts: got "
                f"{tuple(input_boxes.shape[:2])} boxes and {tuple(input_points.shape[:2])} point prompts "
                "(batch_size, point_batch_size)."
            )
    if input_masks is not None:
        form = "(batch_size, point_batch_size or 1, mask_size, mask_size)"
        _check_tensor("input_masks", input_masks, 4, None, form)
        if not input_masks.is_floating_point():
            raise TypeError(f"input_masks must be floating point mask logits, got {input_masks.dtype}.")
        if mask_size is not None and input_masks.shape[-2:] != (mask_size, mask_size):
            raise ValueError(
                f"input_masks must be {mask_size}x{mask_size} low-resolution logits, got {form} = "
                f"{tuple(input_masks.shape)}."
            )
        sparse = input_points if input_points is not None else input_boxes
        if sparse is not None and (
            input_masks.shape[0] != sparse.shape[0] or input_masks.shape[1] not in (1, sparse.shape[1])
        ):
            raise ValueError(
                f"input_masks shape {tuple(input_masks.shape)} does not match the prompts' "
                f"(batch_size, point_batch_size) = {tuple(sparse.shape[:2])}."
            )
    if request:
        for name, sparse in (("input_points", input_points), ("input_boxes", input_boxes)):
            if sparse is not None:
                _check_limit(name, "prompts per request", sparse.shape[0] * sparse.shape[1], "MAX_PROMPTS_PER_REQUEST")


def _check_limit(name: str, what: str, count: int, limit_name: str) -> None:
    """`ValueError` naming the argument, the limit and how to raise it when `count` is above the limit (in eager use:
    like the value checks, not while tracing, where reading the module's globals would break the graph)."""
    if is_tracing():
        return
    limit = globals()[limit_name]  # at call time, so that assigning the module attribute raises it
    if count > limit:
        raise ValueError(
            f"{name} has {count} {what}, more than the limit {limit_name}={limit}; split the request, or raise the "
            f"limit with sam_hf.prompts.{limit_name} = ..."
        )


def check_inside_image(
    size: tuple[int, int], points: np.ndarray | None = None, box: Any = None, image: str = "the image"
) -> None:
    """`ValueError` naming `points` / `box` when a point of `points` `(N, 2)` (x, y) lies outside the `size` =
    (height, width) image or `box` (4 numbers x1, y1, x2, y2) misses it entirely: prompts in another image's pixels (a
    resized copy, x and y swapped), which SAM would answer with a mask of something else. A box may reach past the
    border (an object the border cuts). Both are already checked for their form."""
    height, width = size
    if points is not None and len(points):
        x, y = np.asarray(points, dtype=np.float64).T
        outside = (x < 0) | (x > width) | (y < 0) | (y > height)
        if outside.any():
            raise ValueError(
                f"points must lie inside {image} (0 <= x <= {width}, 0 <= y <= {height} pixels), got "
                f"{np.asarray(points)[outside].tolist()}."
            )
    if box is not None:
        x1, y1, x2, y2 = (float(value) for value in box)
        if x2 < 0 or y2 < 0 or x1 > width or y1 > height:
            raise ValueError(
                f"box must overlap {image} ({width}x{height} pixels), got {[x1, y1, x2, y2]}, entirely outside it."
            )
