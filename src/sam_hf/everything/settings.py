"""Everything-mode settings, described and validated once: `EverythingSettings` (the official generator's parameters,
defaults and meaning) and the named presets that the generator, the CLI, the pipeline, the Space and text-to-mask
share."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .amg import build_all_layer_point_grids

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
# Sanity limits far beyond any useful setting, so that a typo fails at once instead of building a grid that exhausts
# memory (points_per_side 10**5: 10**10 prompts) or looping over 4**crop_n_layers crops.
MAX_POINTS_PER_SIDE = 1024  # 1,048,576 prompts per crop
MAX_CROP_N_LAYERS = 10  # 4**10 crops in the last layer


def _number(
    default: float | None, help: str, low: float, high: float = math.inf, high_open: bool = False, integer: bool = False
) -> Any:
    """A numeric setting: its default, help text and valid range (`[low, high]`, or `[low, high)`) as field metadata,
    read by the validation and by the CLI's flags."""
    return field(default=default, metadata={"help": help, "range": (low, high, high_open), "integer": integer})


def _fits_float(value: numbers.Real) -> bool:
    """Finite, and within the float range (an int beyond it would overflow where it meets a tensor)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_number(
    name: str, value: Any, low: float, high: float, high_open: bool = False, integer: bool = False
) -> None:
    kind = numbers.Integral if integer else numbers.Real
    in_range = isinstance(value, kind) and not isinstance(value, bool) and low <= value <= high
    if not in_range or not (integer or _fits_float(value)) or (high_open and value == high):
        interval = f"[{low}, {high}{')' if high_open else ']'}" if math.isfinite(high) else f">= {low}"
        try:
            shown = repr(value)[:100]
        except ValueError:  # an int too long to print
            shown = f"a {type(value).__name__}"
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} {interval}, got {shown}.")


@dataclass(frozen=True)
class EverythingSettings:
    """The settings of everything mode, in the official `SamAutomaticMaskGenerator`'s order and with its defaults
    (tuned for ViT-H), validated on construction (`ValueError` / `TypeError` naming the setting). Frozen: derive
    variants with `dataclasses.replace(settings, name=value)`. Each field's `metadata` holds its `help` text (and, for
    numbers, the valid `range` and whether it is an `integer`), which the CLI's flags are built from.
    `point_grids` is stored as tuples of `(x, y)` floats, so that settings compare and hash by value.

    Args:"""

    points_per_side: int | None = _number(
        32,
        "points along one side of the grid (points_per_side**2 prompts per crop); None if point_grids are given",
        1,
        MAX_POINTS_PER_SIDE,
        integer=True,
    )
    points_per_batch: int = _number(64, "prompts decoded at once: more is faster and uses more memory", 1, integer=True)
    pred_iou_thresh: float = _number(0.88, "keep masks whose predicted IoU is above this", 0, 1)
    stability_score_thresh: float = _number(0.95, "keep masks whose stability score is at least this", 0, 1)
    stability_score_offset: float = _number(1.0, "logit shift of the two thresholds that define the stability score", 0)
    box_nms_thresh: float = _number(
        0.7, "box IoU above which a crop's duplicate masks are suppressed (the higher predicted IoU wins)", 0, 1
    )
    crop_n_layers: int = _number(
        0, "also run on crops: layer i has (2**i)**2 crops", 0, MAX_CROP_N_LAYERS, integer=True
    )
    crop_nms_thresh: float = _number(
        0.7, "box IoU above which duplicates across crops are suppressed (masks of smaller crops win)", 0, 1
    )
    crop_overlap_ratio: float = _number(
        512 / 1500, "overlap of the first layer's crops, as a fraction of the image's short side", 0, 1, high_open=True
    )
    crop_n_points_downscale_factor: int = _number(
        1, "crop layer i has points_per_side / factor**i points per side", 1, integer=True
    )
    point_grids: tuple[tuple[tuple[float, float], ...], ...] | None = field(
        default=None,
        metadata={
            "help": "explicit (n, 2) grids of (x, y) in [0, 1], one per crop layer; exclusive with points_per_side"
        },
    )
    min_mask_region_area: int = _number(
        0,
        "if > 0, fill holes and remove islands smaller than this many pixels, then run box NMS again (threshold "
        "max(box_nms_thresh, crop_nms_thresh)), preferring masks that did not change",
        0,
    )
    output_mode: str = field(
        default="binary_mask",
        metadata={"help": "'binary_mask' ((h, w) bool arrays), 'uncompressed_rle' or 'coco_rle' (JSON-ready)"},
    )

    def __post_init__(self) -> None:
        if (self.points_per_side is None) == (self.point_grids is None):
            raise ValueError("Pass exactly one of points_per_side or point_grids.")
        for setting in fields(self):
            value = getattr(self, setting.name)
            # points_per_side may be None (then point_grids are given, as checked above); every other number may not.
            if "range" in setting.metadata and not (setting.name == "points_per_side" and value is None):
                _check_number(setting.name, value, *setting.metadata["range"], setting.metadata["integer"])
        if not isinstance(self.output_mode, str) or self.output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {self.output_mode!r}.")
        if self.points_per_side is not None:
            if self.points_per_side < self.crop_n_points_downscale_factor**self.crop_n_layers:
                raise ValueError(
                    f"crop_n_points_downscale_factor {self.crop_n_points_downscale_factor} leaves no points in crop "
                    f"layer {self.crop_n_layers} of a {self.points_per_side}-point grid; lower it or crop_n_layers."
                )
            return
        try:
            grids = [np.asarray(grid, dtype=np.float64) for grid in self.point_grids]
        except (TypeError, ValueError, OverflowError) as error:
            raise TypeError(f"point_grids must be a list of (n, 2) arrays of numbers: {error}") from error
        if len(grids) != self.crop_n_layers + 1:
            raise ValueError(
                f"point_grids needs one grid per crop layer (crop_n_layers + 1 = {self.crop_n_layers + 1}), "
                f"got {len(grids)}."
            )
        for grid in grids:
            if grid.ndim != 2 or grid.shape[1] != 2 or not len(grid) or not ((grid >= 0) & (grid <= 1)).all():
                raise ValueError(f"point_grids must be non-empty (n, 2) arrays of (x, y) in [0, 1], got {grid}.")
        object.__setattr__(self, "point_grids", tuple(tuple(map(tuple, grid.tolist())) for grid in grids))

    def layer_point_grids(self) -> list[np.ndarray]:
        """One `(n, 2)` float64 grid of (x, y) in [0, 1] per crop layer: `point_grids`, or built from
        `points_per_side` and `crop_n_points_downscale_factor`."""
        if self.point_grids is not None:
            return [np.array(grid, dtype=np.float64) for grid in self.point_grids]
        factor = self.crop_n_points_downscale_factor
        return build_all_layer_point_grids(self.points_per_side, self.crop_n_layers, factor)


EverythingSettings.__doc__ += "".join(f"\n        {s.name}: {s.metadata['help']}." for s in fields(EverythingSettings))

# The official generator's defaults (ViT-H-tuned): 32x32 points, predicted IoU > 0.88, stability >= 0.95.
OFFICIAL_SETTINGS = EverythingSettings()
# The bundled small model's predicted IoUs are lower (it was trained on generated scenes for minutes): thresholds that
# keep its good masks on those scenes, and a grid as fine as their objects need.
BUNDLED_SETTINGS = EverythingSettings(points_per_side=16, pred_iou_thresh=0.5, stability_score_thresh=0.7)
# Proposals for zero-shot text prompts need recall more than precision (CLIP does the choosing), so the filters are
# much looser: on 40 held-out scenes with the bundled pair, the best proposal's mean IoU with the named object is 0.80
# here, 0.73 at (0.5, 0.7) and 0.63 at (0.7, 0.8), and CLIP's pick follows it (0.76 / 0.71 / 0.62). The cost is more
# regions for CLIP to embed (~19 per 128-pixel scene here; more on photos).
ZERO_SHOT_SETTINGS = EverythingSettings(points_per_side=16, pred_iou_thresh=0.0, stability_score_thresh=0.5)
