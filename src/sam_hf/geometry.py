"""Mask and box geometry, written once for the whole package (base layer: numpy, torch and torchvision only).

One box convention everywhere: XYXY in pixels with an **inclusive** end, `(x_min, y_min, x_max, y_max)` being the
first and last column and row a mask covers, so a one-pixel mask at (x, y) has the box `(x, y, x, y)` and the box
spans `x_max - x_min + 1` pixels. It is what `torchvision.ops.masks_to_boxes` and the official generator's
`batched_mask_to_box` return, what the everything-mode records' `bbox` (XYWH, `w = x_max - x_min`) is converted from,
and what a tight box prompt to SAM is. An empty mask's box is `(0, 0, 0, 0)`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt
from torchvision.ops import masks_to_boxes

Masks = torch.Tensor | np.ndarray


def mask_iou(a: Masks, b: Masks, *, empty: float) -> torch.Tensor:
    """IoU of binary masks over their last two axes, leading axes broadcast: `(..., H, W)`, `(..., H, W)` -> `(...)`
    float32.

    `empty` is the IoU of two empty masks, which callers define differently: 1.0 where two empty masks agree (the
    loss's IoU target, a prediction scored against a ground truth), 0.0 where an empty mask must not count as a match.
    """
    a, b = torch.as_tensor(a).bool(), torch.as_tensor(b).bool()
    intersection = (a & b).sum(dim=(-2, -1)).float()
    union = (a | b).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.full_like(union, empty))


def mask_boxes(masks: Masks) -> torch.Tensor:
    """Boxes of binary masks in the package's convention: `(..., H, W)` -> `(..., 4)` int64 XYXY with an inclusive
    end, zeros for an empty mask."""
    masks = torch.as_tensor(masks)
    flat = masks.reshape(-1, *masks.shape[-2:])
    if flat.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.long, device=masks.device)
    return masks_to_boxes(flat).long().reshape(*masks.shape[:-2], 4)


def widened_boxes(masks: Masks, margin: float) -> torch.Tensor:
    """The boxes of binary masks `(..., H, W)` widened by `margin` of their side on each side, clipped to the mask
    frame: `(..., 4)` float XYXY (inclusive end). How a followed object's mask prompts it on the next video frame
    (room for its motion), in `sam_hf.video` and in the training that teaches the decoder that prompt."""
    masks = torch.as_tensor(masks)
    box = mask_boxes(masks).double()
    pad = margin * (box[..., 2:] - box[..., :2] + 1)
    high = torch.tensor([masks.shape[-1] - 1, masks.shape[-2] - 1], dtype=box.dtype, device=box.device)
    return torch.cat([(box[..., :2] - pad).clamp(min=0), torch.minimum(box[..., 2:] + pad, high)], dim=-1)


def touches_border(mask: np.ndarray) -> bool:
    """Whether an `(H, W)` mask reaches the first or last row or column: the frame cuts it (part of the object may be
    outside)."""
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def centre_point(mask: np.ndarray) -> list[float]:
    """`[x, y]` of the pixel of a non-empty `(H, W)` mask farthest from the background (the image border counts as
    background): the standard single-click evaluation point."""
    y, x = np.unravel_index(np.argmax(distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]), mask.shape)
    return [float(x), float(y)]
