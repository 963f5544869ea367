"""Image processor of sam_hf: the official `SamPredictor` preprocessing (PIL resize of the longest side, 0-255
normalisation, bottom/right zero padding) and `Sam.postprocess_masks`, bit for bit, behind the transformers API.

transformers resolves saved image processors by class name and ships its own `SamImageProcessor` (0-1 scale, other
config keys), so the class is named `SamHfImageProcessor` and exported under both names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import resize as tv_resize
from transformers import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

# The official `Sam` defaults, on the 0-255 scale.
OFFICIAL_PIXEL_MEAN = (123.675, 116.28, 103.53)
OFFICIAL_PIXEL_STD = (58.395, 57.12, 57.375)

MAX_SIDE = 2**31  # image sides must be below this (PIL's own limit): larger "sizes" are mistakes

IMAGES_FORM = (
    "a PIL image, an HxWxC / CxHxW uint8 array or tensor (C in 1, 3, 4; float in [0, 1] also accepted), "
    "an HxW grayscale array, or a non-empty list of those"
)


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


def to_uint8_hwc(image: Any, do_convert_rgb: bool) -> np.ndarray:
    """One input image -> an RGB uint8 array of shape (H, W, 3), the input of the official `apply_image`."""
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
            channels_last = array.shape[-1] in (1, 3, 4)
            channels_first = array.shape[0] in (1, 3, 4)
            # A tensor is CxHxW unless only its last axis looks like channels; an array is HxWxC unless only the first.
            if channels_first and (is_tensor or not channels_last):
                array = array.transpose(1, 2, 0)
            elif not channels_last:
                raise ValueError(
                    f"images must have 1, 3 or 4 channels, got shape {array.shape}; expected {IMAGES_FORM}."
                )
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
    if array.shape[-1] != 3:
        if not do_convert_rgb:
            raise ValueError(f"images must have 3 channels when do_convert_rgb=False, got shape {array.shape}.")
        array = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]
    return np.ascontiguousarray(array)


class SamImagesKwargs(ImagesKwargs, total=False):
    """Names `from_pretrained(..., **kwargs)` may override (transformers' own plus `longest_edge`)."""

    longest_edge: int


class SamHfImageProcessor(BaseImageProcessor):
    r"""Resizes the longest side to `longest_edge` with PIL bilinear (as the official `ResizeLongestSide.apply_image`),
    normalises `(pixels - image_mean) / image_std` on the 0-255 scale in float32 and zero-pads bottom/right to
    `pad_size` x `pad_size` (as `Sam.preprocess`).

    Args:
        longest_edge: target length of the longest image side.
        pad_size: side of the square model input; must be >= `longest_edge` (the model's `image_size`).
        image_mean / image_std: per-channel RGB statistics on the 0-255 scale.
        do_convert_rgb: convert grayscale / palette / RGBA / CMYK images (and 1- or 4-channel arrays) to RGB.

    A transformers SAM image processor config (`facebook/sam-vit-*`: `size`, `pad_size` dict, 0-1 statistics and
    `rescale_factor`) is translated on load.
    """

    valid_kwargs = SamImagesKwargs

    def __init__(
        self,
        longest_edge: int = 1024,
        pad_size: int = 1024,
        image_mean: Sequence[float] = OFFICIAL_PIXEL_MEAN,
        image_std: Sequence[float] = OFFICIAL_PIXEL_STD,
        do_convert_rgb: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("image_processor_type", None)  # written by `to_dict`
        kwargs.pop("processor_class", None)
        if "size" in kwargs:  # transformers' SAM layout
            longest_edge = kwargs.pop("size")["longest_edge"]
            pad_size = pad_size["height"] if isinstance(pad_size, dict) else pad_size
            rescale_factor = kwargs.pop("rescale_factor", 1 / 255)
            scale = 1 / rescale_factor if kwargs.pop("do_rescale", True) else 1.0
            image_mean = [round(m * scale, 6) for m in image_mean]
            image_std = [round(s * scale, 6) for s in image_std]
            # What sam_hf always does (bilinear resize, normalise, pad) and segmentation-map settings it does not use.
            for ignored in ("do_resize", "do_normalize", "do_pad", "resample", "mask_size", "mask_pad_size"):
                kwargs.pop(ignored, None)
        if kwargs:
            raise ValueError(f"SamImageProcessor got unknown options {sorted(kwargs)}.")
        if not (isinstance(longest_edge, int) and isinstance(pad_size, int) and 0 < longest_edge <= pad_size):
            raise ValueError(f"Need integers 0 < longest_edge <= pad_size, got {longest_edge} and {pad_size}.")
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError(f"image_mean / image_std must be 3 values (std > 0), got {image_mean} / {image_std}.")
        super().__init__()
        self.longest_edge = longest_edge
        self.pad_size = pad_size
        self.image_mean = [float(m) for m in image_mean]
        self.image_std = [float(s) for s in image_std]
        self.do_convert_rgb = do_convert_rgb

    def preprocess(self, images: Any, return_tensors: str = "pt") -> BatchFeature:
        """Preprocesses one image or a list of images of any sizes (see `IMAGES_FORM`; a 4-D array / tensor is a
        batch).

        Returns:
            `BatchFeature` with `pixel_values` float32 (batch_size, 3, pad_size, pad_size), `original_sizes` int64
            (batch_size, 2) and `reshaped_input_sizes` int64 (batch_size, 2), both as (height, width).
        """
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt', got {return_tensors!r}.")
        if isinstance(images, (list, tuple)) or (isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4):
            if len(images) == 0:
                raise ValueError(f"images must not be an empty list; expected {IMAGES_FORM}.")
            images = list(images)
        else:
            images = [images]
        # Same dtype and op order as the official `Sam.preprocess` buffers, for bit-identical float32 results.
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(-1, 1, 1)
        pixel_values, original_sizes, reshaped_sizes = [], [], []
        for image in images:
            if isinstance(image, (list, tuple)):
                raise TypeError(f"images must be {IMAGES_FORM}; got a nested list.")
            array = to_uint8_hwc(image, self.do_convert_rgb)
            size = get_preprocess_shape(array.shape[0], array.shape[1], self.longest_edge)
            resized = torch.as_tensor(np.array(tv_resize(PIL.Image.fromarray(array), list(size))))
            normalized = (resized.permute(2, 0, 1).contiguous() - mean) / std
            pad = (0, self.pad_size - size[1], 0, self.pad_size - size[0])
            pixel_values.append(F.pad(normalized, pad))
            original_sizes.append(array.shape[:2])
            reshaped_sizes.append(size)
        return BatchFeature(
            {
                "pixel_values": torch.stack(pixel_values),
                "original_sizes": torch.tensor(original_sizes, dtype=torch.int64),
                "reshaped_input_sizes": torch.tensor(reshaped_sizes, dtype=torch.int64),
            }
        )

    def resize_coordinates(self, coords: torch.Tensor | np.ndarray, original_size: Sequence[int]) -> torch.Tensor:
        """Maps (x, y) coordinates `(..., 2)` in original-image pixels to the resized frame, as the official
        `apply_coords` (float64 math) followed by the predictor's float32 cast. Boxes are `(..., 2, 2)` corners.

        Args:
            coords: `(..., 2)` coordinates.
            original_size: (height, width) of the original image.

        Returns:
            float32 tensor of the same shape.
        """
        old_h, old_w = int(original_size[0]), int(original_size[1])
        new_h, new_w = get_preprocess_shape(old_h, old_w, self.longest_edge)
        coords = torch.as_tensor(coords, dtype=torch.float64).clone()
        coords[..., 0] *= new_w / old_w
        coords[..., 1] *= new_h / old_h
        return coords.to(torch.float32)

    def post_process_masks(
        self,
        masks: torch.Tensor | Sequence[torch.Tensor],
        original_sizes: torch.Tensor | Sequence[Sequence[int]],
        reshaped_input_sizes: torch.Tensor | Sequence[Sequence[int]],
        mask_threshold: float = 0.0,
        binarize: bool = True,
    ) -> list[torch.Tensor]:
        """Upscales low-resolution mask logits to each original image size (the official `Sam.postprocess_masks`:
        bilinear to pad_size x pad_size, crop the unpadded region, bilinear to the original size).

        Args:
            masks: `(batch_size, point_batch_size, num_masks, h, w)` logits, or a list of per-image
                `(point_batch_size, num_masks, h, w)`.
            original_sizes / reshaped_input_sizes: `(batch_size, 2)` (height, width), as the preprocessing returned.
            mask_threshold: logit threshold of the binarised masks.
            binarize: return `logits > mask_threshold` (bool) instead of the upscaled logits (float).

        Returns:
            list of `batch_size` tensors `(point_batch_size, num_masks, height, width)`.
        """
        masks = list(masks)
        for image_masks in masks:
            if not isinstance(image_masks, torch.Tensor) or image_masks.ndim != 4:
                raise ValueError(
                    "masks must be a (batch_size, point_batch_size, num_masks, h, w) tensor or a list of "
                    f"(point_batch_size, num_masks, h, w) tensors, got {getattr(image_masks, 'shape', image_masks)}."
                )
        original_sizes = check_sizes("original_sizes", original_sizes)
        reshaped_input_sizes = check_sizes("reshaped_input_sizes", reshaped_input_sizes)
        if not len(masks) == len(original_sizes) == len(reshaped_input_sizes):
            raise ValueError(
                f"masks, original_sizes and reshaped_input_sizes must have one entry per image, got lengths "
                f"{len(masks)}, {len(original_sizes)} and {len(reshaped_input_sizes)}."
            )
        if (reshaped_input_sizes > self.pad_size).any():
            raise ValueError(f"reshaped_input_sizes must be <= pad_size ({self.pad_size}), got {reshaped_input_sizes}.")
        outputs = []
        for image_masks, (orig_h, orig_w), (new_h, new_w) in zip(
            masks, original_sizes.tolist(), reshaped_input_sizes.tolist(), strict=True
        ):
            upscaled = F.interpolate(
                image_masks.float(), (self.pad_size, self.pad_size), mode="bilinear", align_corners=False
            )
            upscaled = upscaled[..., :new_h, :new_w]
            upscaled = F.interpolate(upscaled, (orig_h, orig_w), mode="bilinear", align_corners=False)
            outputs.append(upscaled > mask_threshold if binarize else upscaled)
        return outputs


SamImageProcessor = SamHfImageProcessor
