"""Everything mode's helpers, apart from the generator as the official `segment_anything/utils/amg.py` keeps them: point
grids, crop boxes, the stability score, the crop-edge test, small-region removal, RLE encoding / decoding / areas, and
`MaskData`, the masks kept so far. Boxes follow `sam_hf.geometry`'s convention (XYXY, inclusive end)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from itertools import chain, product
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from scipy import ndimage

MASK_THRESHOLD = 0.0  # logit threshold of a binary mask (the official `Sam.mask_threshold`)
CROP_EDGE_TOLERANCE = 20.0  # pixels: a box this close to a crop edge that is not an image edge touches it


def build_point_grid(points_per_side: int) -> np.ndarray:
    """`(points_per_side**2, 2)` float64 (x, y) cell centres of a regular grid over [0, 1]^2, x varying fastest."""
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    return np.stack(np.meshgrid(side, side), axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(points_per_side: int, crop_n_layers: int, downscale_factor: int) -> list[np.ndarray]:
    """One grid per crop layer; layer `i` has `int(points_per_side / downscale_factor**i)` points per side."""
    return [build_point_grid(int(points_per_side / downscale_factor**i)) for i in range(crop_n_layers + 1)]


def generate_crop_boxes(
    image_size: tuple[int, int], crop_n_layers: int, crop_overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes XYXY in image pixels (exclusive end: slice bounds) and their layer: the whole image (layer 0), then
    `(2**i)**2` overlapping crops in layer `i` (official `generate_crop_boxes`, same integer arithmetic)."""
    height, width = image_size
    boxes, layers = [[0, 0, width, height]], [0]
    for layer in range(1, crop_n_layers + 1):
        n_per_side = 2**layer
        overlap = int(crop_overlap_ratio * min(height, width) * (2 / n_per_side))
        crop_w = math.ceil((overlap * (n_per_side - 1) + width) / n_per_side)
        crop_h = math.ceil((overlap * (n_per_side - 1) + height) / n_per_side)
        x0s = [(crop_w - overlap) * i for i in range(n_per_side)]
        y0s = [(crop_h - overlap) * i for i in range(n_per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layers.append(layer)
    return boxes, layers


def stability_score(logits: torch.Tensor, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at `MASK_THRESHOLD + offset` and `- offset` (one contains the other):
    `(n, h, w)` logits -> `(n,)` float32; NaN for masks empty at both thresholds."""
    intersections = (logits > MASK_THRESHOLD + offset).sum(dim=(-2, -1))
    unions = (logits > MASK_THRESHOLD - offset).sum(dim=(-2, -1))
    return intersections / unions


def is_box_near_crop_edge(boxes: torch.Tensor, crop_box: list[int], image_size: tuple[int, int]) -> torch.Tensor:
    """`(n, 4)` mask boxes in the crop's frame -> `(n,)` bool: the box is within `CROP_EDGE_TOLERANCE` of an edge of
    `crop_box` (in image pixels) that is not an image edge, so the mask is probably cut by the crop."""
    crop_box_t = torch.tensor(crop_box, dtype=torch.float)
    image_box = torch.tensor([0, 0, image_size[1], image_size[0]], dtype=torch.float)
    image_frame = (boxes + crop_box_t[:2].repeat(2)).float()
    at_crop_edge = torch.isclose(image_frame, crop_box_t, atol=CROP_EDGE_TOLERANCE, rtol=0)
    at_image_edge = torch.isclose(image_frame, image_box, atol=CROP_EDGE_TOLERANCE, rtol=0)
    return (at_crop_edge & ~at_image_edge).any(dim=1)


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fills holes (`mode="holes"`) or removes islands (`"islands"`) smaller than `min_area` pixels in a `(h, w)`
    mask, with 8-connectivity as the official code's `cv2.connectedComponentsWithStats`. If every island is small,
    the largest is kept. Returns the bool mask and whether it changed."""
    fill_holes = mode == "holes"
    labels, n_regions = ndimage.label(mask != fill_holes, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=n_regions + 1)[1:]
    small = sizes < min_area
    if not small.any():
        return mask.astype(bool), False
    # keep[label]: label 0 is the mask itself when filling holes and the background when removing islands.
    keep = np.concatenate([[fill_holes], small if fill_holes else ~small])
    if not keep.any():
        keep[np.argmax(sizes) + 1] = True
    return keep[labels], True


def encode_rles(masks: torch.Tensor, crop_box: list[int], image_size: tuple[int, int]) -> list[dict[str, Any]]:
    """`(n, crop_h, crop_w)` bool masks -> COCO RLEs of the masks pasted at `crop_box` in the full image."""
    x0, y0, x1, y1 = crop_box
    # (n, W, H) in C order is (H, W, n) in the Fortran order pycocotools encodes from, without another copy.
    full = np.zeros((len(masks), image_size[1], image_size[0]), dtype=np.uint8)
    full[:, x0:x1, y0:y1] = masks.transpose(1, 2).cpu().numpy()
    return mask_utils.encode(full.transpose(2, 1, 0))


def rle_areas(rles: list[dict[str, Any]]) -> list[int]:
    """Pixel counts of COCO RLEs. One RLE per pycocotools call: its `area` of a list sizes a scratch array by the
    list's length in uint8, which overflows from 256 RLEs on (numpy 2)."""
    return [int(mask_utils.area(rle)) for rle in rles]


def rle_to_json(rle: dict[str, Any]) -> dict[str, Any]:
    """A pycocotools RLE -> the JSON-ready COCO RLE of `coco_rle` records: `{"size": [h, w], "counts": str}`."""
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("utf-8")}


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """A `(h, w)` mask -> JSON-ready COCO RLE, the form of everything mode's `coco_rle` records."""
    return rle_to_json(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """The official uncompressed RLE of a `(h, w)` mask: column-major run lengths, starting with a (maybe empty) run
    of zeros. pycocotools only exposes the compressed form."""
    flat = mask.ravel(order="F").astype(bool)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": [0, *counts] if flat[0] else counts}


def decode_segmentation(segmentation: np.ndarray | dict[str, Any]) -> np.ndarray:
    """A record's `segmentation` in any output mode -> `(h, w)` bool mask."""
    if isinstance(segmentation, np.ndarray):
        return segmentation.astype(bool)
    if isinstance(segmentation["counts"], list):  # uncompressed, as the official `coco_encode_rle` converts it
        segmentation = mask_utils.frPyObjects(segmentation, *segmentation["size"])
    return mask_utils.decode(segmentation).astype(bool)


@dataclass
class MaskData:
    """Masks kept so far, one row per mask: COCO `rles` of the full image, `boxes` XYXY int64 (`sam_hf.geometry`'s
    convention) and `crop_boxes` XYXY in image pixels, `iou_preds` / `stability_score` float32, `points` (x, y) float64
    image pixels of the prompt."""

    rles: list[dict[str, Any]]
    boxes: torch.Tensor
    iou_preds: torch.Tensor
    stability_score: torch.Tensor
    points: torch.Tensor
    crop_boxes: torch.Tensor

    @classmethod
    def empty(cls) -> MaskData:
        """No masks: every field with zero rows."""
        long, float_ = torch.zeros(0, 4, dtype=torch.long), torch.zeros(0)
        return cls([], long, float_, float_, torch.zeros(0, 2, dtype=torch.float64), long)

    @classmethod
    def cat(cls, parts: list[MaskData]) -> MaskData:
        """The rows of `parts`, concatenated in order."""
        return cls(**{f.name: _cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def select(self, index: torch.Tensor) -> MaskData:
        """Rows `index` (int64 indices), in that order."""
        return MaskData(
            **{
                f.name: [value[i] for i in index.tolist()] if isinstance(value, list) else value[index]
                for f in fields(self)
                for value in [getattr(self, f.name)]
            }
        )


def _cat(values: list) -> list | torch.Tensor:
    return list(chain.from_iterable(values)) if isinstance(values[0], list) else torch.cat(values)
