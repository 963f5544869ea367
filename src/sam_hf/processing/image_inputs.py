"""Turning what users pass as images, segmentation maps and sizes into the arrays the image processor works on, with
a clear `ValueError`/`TypeError` for anything else."""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch

MAX_SIDE = 2**31  # image sides must be below this (PIL's own limit): larger "sizes" are mistakes
# Images above this many pixels are refused (decompression bombs): by `open_image` before decoding (raise it with
# `open_image(..., max_pixels=...)`), by `post_process_masks` before upscaling masks to such a size (read at call time:
# raise it by assigning `sam_hf.processing.image_inputs.MAX_IMAGE_PIXELS`).
MAX_IMAGE_PIXELS = 178_956_970  # PIL's own hard limit: 2 x its 89.5 MP warning threshold

IMAGES_FORM = (
    "a PIL image, an HxWxC / CxHxW uint8 array or tensor (C in 1, 3, 4; float in [0, 1] also accepted), "
    "an HxW grayscale array, or a non-empty list of those"
)
MAPS_FORM = "a PIL image or an HxW (or 1xHxW) integer / bool array or tensor with values in 0-255, or a list of those"
CHANNEL_LAYOUTS = ("channels_first", "channels_last")


def get_preprocess_shape(height: int, width: int, longest_edge: int) -> tuple[int, int]:
    """Size `(new_height, new_width)` of an image resized so that its longest side is `longest_edge` (official
    `ResizeLongestSide.get_preprocess_shape`), at least 1 pixel per side (the official rounds a side of extreme
    aspect ratios, e.g. 1 x 5000, down to 0 and fails)."""
    scale = longest_edge * 1.0 / max(height, width)
    return max(int(height * scale + 0.5), 1), max(int(width * scale + 0.5), 1)


def check_sizes(name: str, sizes: Any) -> torch.Tensor:
    """`(batch_size, 2)` positive integer (height, width) sizes -> int64 tensor, or a `ValueError` naming `name`."""
    try:
        array = np.asarray(sizes, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{name} must be (batch_size, 2) sizes as (height, width), got {sizes!r}.") from err
    if (
        array.ndim != 2
        or array.shape[1] != 2
        or not (np.isfinite(array) & (array > 0) & (array < MAX_SIDE) & (array == array.round())).all()
    ):
        raise ValueError(
            f"{name} must be (batch_size, 2) positive integer sizes (< {MAX_SIDE}) as (height, width), got {sizes!r}."
        )
    return torch.as_tensor(array, dtype=torch.int64)


def as_list(name: str, value: Any, form: str) -> list:
    """One item or a batch (list / tuple, or a 4-D array / tensor) -> a non-empty list of items."""
    if isinstance(value, (list, tuple)) or (isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 4):
        if len(value) == 0:
            raise ValueError(f"{name} must not be an empty list; expected {form}.")
        items = list(value)
    else:
        items = [value]
    if any(isinstance(item, (list, tuple)) for item in items):
        raise TypeError(f"{name} must be {form}; got a nested list.")
    return items


def pil_to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Any PIL mode -> RGB: 16/32-bit grayscale scaled to 8 bits (PIL's own conversion clips it to white), palette
    with transparency through RGBA, alpha dropped, CMYK / YCbCr / grayscale converted."""
    if 0 in image.size:  # nothing to scale (and no maximum); refused as empty by the caller
        return image.convert("RGB")
    if image.mode.startswith("I;16") or (image.mode == "I" and np.asarray(image).max() > 255):
        # 16-bit files; a 32-bit "I" image within 0-255 (e.g. converted from 8 bits) is left to PIL.
        array = np.asarray(image).astype(np.float64)
        top = max(65535.0, float(array.max()))
        image = PIL.Image.fromarray(np.clip(array / top * 255 + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _channels_last(array: np.ndarray, is_tensor: bool, input_data_format: str | None) -> np.ndarray:
    """A 3-D array -> HxWxC: as `input_data_format` says, else a tensor is CxHxW unless only its last axis looks like
    channels, and an array is HxWxC unless only its first axis does."""
    if input_data_format is None:
        channels_last = array.shape[-1] in (1, 3, 4)
        channels_first = array.shape[0] in (1, 3, 4)
        if not (channels_first or channels_last):
            raise ValueError(f"images must have 1, 3 or 4 channels, got shape {array.shape}; expected {IMAGES_FORM}.")
        input_data_format = "channels_first" if channels_first and (is_tensor or not channels_last) else "channels_last"
    return array.transpose(1, 2, 0) if input_data_format == "channels_first" else array


def to_uint8_hwc(image: Any, do_convert_rgb: bool, input_data_format: str | None = None) -> np.ndarray:
    """One input image -> an RGB uint8 array of shape (H, W, 3), the input of the official `apply_image`.

    `input_data_format` ("channels_first" / "channels_last") fixes the layout of 3-D arrays and tensors, which is
    otherwise inferred.
    """
    if input_data_format is not None and str(input_data_format) not in CHANNEL_LAYOUTS:
        raise ValueError(f"input_data_format must be one of {CHANNEL_LAYOUTS} or None, got {input_data_format!r}.")
    input_data_format = None if input_data_format is None else str(input_data_format)
    if isinstance(image, PIL.Image.Image):
        if do_convert_rgb and image.mode != "RGB":
            image = pil_to_rgb(image)
        array = np.asarray(image)
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        is_tensor = isinstance(image, torch.Tensor)
        if is_tensor:
            image = image.detach().cpu()
            image = image.float() if image.is_floating_point() else image  # numpy has no bfloat16
        array = np.asarray(image)
        if array.ndim == 3:
            array = _channels_last(array, is_tensor, input_data_format)
        elif array.ndim != 2:
            raise ValueError(f"images must be 2-D or 3-D per image, got shape {array.shape}; expected {IMAGES_FORM}.")
    else:
        raise TypeError(f"images must be {IMAGES_FORM}; got {type(image).__name__}.")

    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"images must not be empty, got an image of shape {array.shape}.")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError("images contain NaN or infinite values.")
        if array.min() < 0 or array.max() > 1:
            raise ValueError("float images must be in [0, 1]; pass uint8 for 0-255 pixels.")
        # The official pipeline resizes uint8 PIL images, so floats are quantised first.
        array = np.round(array * 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (or float in [0, 1]), got dtype {array.dtype}.")
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must have 1, 3 or 4 channels, got shape {array.shape}; expected {IMAGES_FORM}.")
    if array.shape[-1] != 3:
        if not do_convert_rgb:
            raise ValueError(f"images must have 3 channels when do_convert_rgb=False, got shape {array.shape}.")
        array = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]
    return np.ascontiguousarray(array)


def to_label_map(segmentation_map: Any) -> np.ndarray:
    """One segmentation map -> an (H, W) uint8 array of class ids (what transformers' SAM image processor resizes).

    PIL images are read as their stored values (mode "1" as 0/1, "P" as palette indices); arrays and tensors must be
    integer or bool with values in 0-255.
    """
    if isinstance(segmentation_map, PIL.Image.Image):
        array = np.asarray(segmentation_map)
    elif isinstance(segmentation_map, (np.ndarray, torch.Tensor)):
        array = np.asarray(
            segmentation_map.detach().cpu() if isinstance(segmentation_map, torch.Tensor) else segmentation_map
        )
    else:
        raise TypeError(f"segmentation_maps must be {MAPS_FORM}; got {type(segmentation_map).__name__}.")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(
            f"segmentation_maps must be non-empty HxW maps, got shape {array.shape}; expected {MAPS_FORM}."
        )
    if array.dtype.kind not in "biu":
        raise TypeError(f"segmentation_maps must be integer or bool class ids, got dtype {array.dtype}.")
    if array.dtype != bool and (array.min() < 0 or array.max() > 255):
        raise ValueError(
            f"segmentation_maps values must be in 0-255, got [{array.min()}, {array.max()}]; expected {MAPS_FORM}."
        )
    return array.astype(np.uint8)
