"""The options of transformers' `SamImageProcessor`, with its names, defaults and stored forms (`SizeDict` sizes,
`PILImageResampling`, tuple statistics), checked once; and the translation of sam_hf's older saved layout."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs

from ..configuration_sam import MAX_IMAGE_SIZE

# transformers' `SamImageProcessor` class defaults.
DEFAULTS: dict[str, Any] = {
    "do_resize": True,
    "size": {"longest_edge": 1024},
    "resample": PILImageResampling.BILINEAR,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": IMAGENET_DEFAULT_MEAN,
    "image_std": IMAGENET_DEFAULT_STD,
    "do_pad": True,
    "pad_size": {"height": 1024, "width": 1024},
    "mask_size": {"longest_edge": 256},
    "mask_pad_size": {"height": 256, "width": 256},
    "do_convert_rgb": True,
}
# Options of transformers' generic image processors that SAM's never uses: accepted in saved configs only with the
# value that does nothing (`None` for any of them).
NO_OP_VALUES = {"do_center_crop": False, "data_format": "channels_first", "default_to_square": True}


class SamImagesKwargs(ImagesKwargs, total=False):
    """Names `from_pretrained(..., **kwargs)` may override: transformers' SAM options plus sam_hf's older
    `longest_edge`."""

    mask_size: dict[str, int]
    mask_pad_size: dict[str, int]
    longest_edge: int


def _positive_int(name: str, value: Any) -> int:
    """A size in pixels: an integer in [1, MAX_IMAGE_SIZE] (the bound of the models' input size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 < value <= MAX_IMAGE_SIZE:
        raise ValueError(f"{name} must be a positive integer of at most {MAX_IMAGE_SIZE} pixels, got {value!r}.")
    return int(value)


def longest_edge_size(name: str, value: Any) -> SizeDict:
    """`{"longest_edge": N}` (dict or `SizeDict`) -> `SizeDict(longest_edge=N)`."""
    entries = {k: v for k, v in dict(value).items() if v is not None} if isinstance(value, (Mapping, SizeDict)) else {}
    if set(entries) != {"longest_edge"}:
        raise ValueError(f"{name} must be {{'longest_edge': int}} (SAM resizes the longest side), got {value!r}.")
    return SizeDict(longest_edge=_positive_int(f"{name}['longest_edge']", entries["longest_edge"]))


def height_width_size(name: str, value: Any) -> SizeDict:
    """`{"height": H, "width": W}` (dict or `SizeDict`), or one integer for a square -> `SizeDict(height, width)`."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = {"height": value, "width": value}
    entries = {k: v for k, v in dict(value).items() if v is not None} if isinstance(value, (Mapping, SizeDict)) else {}
    if set(entries) != {"height", "width"}:
        raise ValueError(f"{name} must be {{'height': int, 'width': int}} or an integer, got {value!r}.")
    return SizeDict(**{key: _positive_int(f"{name}['{key}']", entries[key]) for key in ("height", "width")})


def statistics(name: str, value: Any) -> float | tuple[float, ...]:
    """A number or 3 per-channel numbers, finite (and positive for `image_std`)."""
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    values = [value] if is_number else list(value) if isinstance(value, (list, tuple)) else []
    if len(values) not in (1, 3) or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be a number or 3 per-channel numbers (RGB), got {value!r}.")
    floats = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in floats) or (name == "image_std" and min(floats) <= 0):
        raise ValueError(f"{name} must be finite{' and positive' if name == 'image_std' else ''}, got {value!r}.")
    return floats[0] if is_number else floats


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Every option of `DEFAULTS`, checked and in transformers' stored form; a `ValueError`/`TypeError` naming it."""
    checked = {}
    for name in ("do_resize", "do_rescale", "do_normalize", "do_pad", "do_convert_rgb"):
        if not isinstance(options[name], bool):
            raise TypeError(f"{name} must be True or False, got {options[name]!r}.")
        checked[name] = options[name]
    checked["size"] = longest_edge_size("size", options["size"])
    checked["mask_size"] = longest_edge_size("mask_size", options["mask_size"])
    checked["pad_size"] = height_width_size("pad_size", options["pad_size"])
    checked["mask_pad_size"] = height_width_size("mask_pad_size", options["mask_pad_size"])
    try:
        checked["resample"] = PILImageResampling(options["resample"])
    except ValueError as err:
        raise ValueError(f"resample must be a PIL resampling filter (0-5), got {options['resample']!r}.") from err
    factor = options["rescale_factor"]
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 0 < factor < math.inf:
        raise ValueError(f"rescale_factor must be a positive number, got {factor!r}.")
    checked["rescale_factor"] = float(factor)
    checked["image_mean"] = statistics("image_mean", options["image_mean"])
    checked["image_std"] = statistics("image_std", options["image_std"])
    for size, pad in (("size", "pad_size"), ("mask_size", "mask_pad_size")):
        if checked["do_resize"] and checked["do_pad"]:
            longest, pad_size = checked[size].longest_edge, checked[pad]
            if longest > max(pad_size.height, pad_size.width):
                raise ValueError(f"{size} longest_edge {longest} does not fit in {pad} {dict(pad_size)}.")
    return checked


def upgrade_legacy(options: dict[str, Any]) -> dict[str, Any]:
    """sam_hf's older layout (`longest_edge`, an integer `pad_size`, statistics on the 0-255 scale) -> transformers'.

    `longest_edge` marks that layout: its statistics are divided by 255 (the rescale factor it implied).
    """
    options = dict(options)
    if "longest_edge" not in options:
        return options
    if options.get("size") is not None or {"do_rescale", "rescale_factor"} & options.keys():
        raise ValueError(
            "longest_edge is sam_hf's older option (with 0-255 statistics); with size / do_rescale / rescale_factor, "
            "pass size={'longest_edge': N} instead."
        )
    options["size"] = {"longest_edge": options.pop("longest_edge")}
    for name in ("image_mean", "image_std"):
        if options.get(name) is not None:
            value = statistics(name, options[name])
            options[name] = value / 255 if isinstance(value, float) else tuple(v / 255 for v in value)
    return options


def drop_no_ops(options: dict[str, Any]) -> dict[str, Any]:
    """Removes saved-config keys that change nothing; raises for any other option this processor cannot honour."""
    unknown = {}
    for name, value in options.items():
        if name not in DEFAULTS and value is not None and NO_OP_VALUES.get(name, object()) != value:
            unknown[name] = value
    if unknown:
        raise ValueError(
            f"SamImageProcessor cannot honour the options {unknown}; it takes {sorted(DEFAULTS)} "
            "(transformers' SamImageProcessor options)."
        )
    return {name: value for name, value in options.items() if name in DEFAULTS}
