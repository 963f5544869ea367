"""Image processor of sam_hf: transformers' `SamImageProcessor`, option for option, computed so that with the default
options its pixels equal the official `SamPredictor` preprocessing (PIL resize of the longest side, normalisation,
bottom/right zero padding) bit for bit, and `post_process_masks` equals `Sam.postprocess_masks`.

transformers resolves saved image processors by class name and ships its own `SamImageProcessor`, so the class is
named `SamHfImageProcessor` and exported under both names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers import BaseImageProcessor, BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict

from . import image_inputs
from .image_inputs import (
    IMAGES_FORM,
    MAPS_FORM,
    as_list,
    check_sizes,
    get_preprocess_shape,
    pil_to_rgb,
    to_label_map,
    to_uint8_hwc,
)
from .image_options import DEFAULTS, SamImagesKwargs, check_options, drop_no_ops, height_width_size, upgrade_legacy
from .mask_generation import MaskGenerationMixin

__all__ = ["SamHfImageProcessor", "SamImageProcessor", "get_preprocess_shape", "pil_to_rgb", "to_uint8_hwc"]

RETURN_TENSORS = ("pt", "np")


def _pad(tensor: torch.Tensor, pad_size: SizeDict, name: str) -> torch.Tensor:
    """Zero-pads `(..., h, w)` at the bottom / right to `pad_size`."""
    height, width = tensor.shape[-2:]
    if height > pad_size.height or width > pad_size.width:
        raise ValueError(
            f"An image of {height}x{width} (after resizing) does not fit in {name} {dict(pad_size)}: "
            f"raise {name} or resize to a smaller longest edge."
        )
    return F.pad(tensor, (0, pad_size.width - width, 0, pad_size.height - height))


class SamHfImageProcessor(MaskGenerationMixin, BaseImageProcessor):
    r"""transformers' `SamImageProcessor`: resizes the longest side to `size["longest_edge"]` with PIL, rescales,
    normalises and zero-pads bottom/right to `pad_size`; segmentation maps go the same way (nearest neighbour,
    `mask_size`, `mask_pad_size`, no rescale / normalisation) into `labels`.

    With the defaults, `pixel_values` equal the official `ResizeLongestSide` + `Sam.preprocess` bit for bit: rescaling
    and normalising together is computed as `(pixels - mean / rescale_factor) / (std / rescale_factor)` on the 0-255
    scale in float32, the official operation.

    Args:
        do_resize: resize the longest side to `size["longest_edge"]` (`int(side * scale + 0.5)`, as the official).
        size: `{"longest_edge": int}`.
        resample: PIL filter of the image resize (`PILImageResampling`; bilinear as the official).
        do_rescale: multiply the pixels by `rescale_factor`.
        rescale_factor: scale of the rescaling (1/255: 0-255 -> 0-1).
        do_normalize: subtract `image_mean` and divide by `image_std` (on the rescaled scale).
        image_mean / image_std: one number or 3 per-channel RGB numbers; ImageNet's (the official SAM statistics).
        do_pad: zero-pad bottom/right to `pad_size`.
        pad_size: `{"height": int, "width": int}` (or one integer for a square); the model's input is square.
        mask_size / mask_pad_size: the same for `segmentation_maps` (the model's low-resolution mask size).
        do_convert_rgb: convert grayscale / palette / RGBA / CMYK images (and 1- or 4-channel arrays) to RGB.

    sam_hf's older layout (`longest_edge`, an integer `pad_size`, 0-255 statistics) still loads.
    """

    valid_kwargs = SamImagesKwargs

    def __init__(
        self,
        do_resize: bool | None = None,
        size: dict[str, int] | None = None,
        resample: PILImageResampling | int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        do_pad: bool | None = None,
        pad_size: dict[str, int] | int | None = None,
        mask_size: dict[str, int] | None = None,
        mask_pad_size: dict[str, int] | int | None = None,
        do_convert_rgb: bool | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("image_processor_type", None)  # written by `to_dict`
        kwargs.pop("processor_class", None)
        given = {name: value for name, value in locals().items() if name in DEFAULTS}
        options = drop_no_ops(upgrade_legacy({**{k: v for k, v in given.items() if v is not None}, **kwargs}))
        super().__init__()
        for name, value in check_options({**DEFAULTS, **options}).items():
            setattr(self, name, value)

    @classmethod
    def from_dict(cls, image_processor_dict: dict[str, Any], **kwargs: Any) -> Any:
        """As transformers' (options in `kwargs` override the saved ones, other kwargs are ignored), with a saved
        config of sam_hf's older layout translated first, so that an override in either layout applies."""
        saved = upgrade_legacy(image_processor_dict)
        if "longest_edge" in kwargs:
            kwargs["size"] = {"longest_edge": kwargs.pop("longest_edge")}
        return super().from_dict(saved, **kwargs)

    def _options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(overrides) - set(DEFAULTS))
        if unknown:
            raise TypeError(f"SamImageProcessor got unknown options {unknown}; it takes {sorted(DEFAULTS)}.")
        return check_options({**{name: getattr(self, name) for name in DEFAULTS}, **overrides})

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of an image of `height` x `width` after this processor's resizing (none if `do_resize` is
        off)."""
        return get_preprocess_shape(height, width, self.size["longest_edge"]) if self.do_resize else (height, width)

    def check_model_input(self, image_size: int) -> None:
        """Raises a `ValueError` unless this processor produces the `image_size` x `image_size` input of a model
        (`config.vision_config.image_size`): padding on, to that square."""
        if not (self.do_pad and self.pad_size == SizeDict(height=image_size, width=image_size)):
            raise ValueError(
                f"The processor pads to {dict(self.pad_size)} (do_pad={self.do_pad}), but the model takes "
                f"{image_size}x{image_size} images: use SamProcessor.for_config(model.config) or pad_size="
                f"{{'height': {image_size}, 'width': {image_size}}}."
            )

    def _image(self, image: np.ndarray, options: dict[str, Any]) -> torch.Tensor:
        """RGB uint8 `(H, W, 3)` -> `(3, h, w)` resized, rescaled, normalised (float32; uint8 if neither)."""
        if options["do_resize"]:
            height, width = get_preprocess_shape(*image.shape[:2], options["size"].longest_edge)
            image = PIL.Image.fromarray(image).resize((width, height), options["resample"])
        pixels = torch.tensor(np.asarray(image)).permute(2, 0, 1)
        rescale = options["rescale_factor"] if options["do_rescale"] else 1.0
        if options["do_normalize"]:
            # Folding the rescale factor into the statistics keeps the official float32 operation (x - m) / s.
            mean, std = (np.asarray(options[k], dtype=np.float64) / rescale for k in ("image_mean", "image_std"))
            view = (-1, 1, 1)
            return (pixels - torch.tensor(mean, dtype=torch.float32).view(view)) / torch.tensor(
                std, dtype=torch.float32
            ).view(view)
        if options["do_rescale"]:  # float64 product, rounded once to float32 (as transformers does)
            return (pixels.double() * rescale).float()
        return pixels

    def _label_map(self, segmentation_map: Any, options: dict[str, Any]) -> torch.Tensor:
        """One segmentation map -> `(h, w)` int64 class ids, nearest-neighbour resized to `mask_size`, padded."""
        label_map = to_label_map(segmentation_map)
        if options["do_resize"]:
            height, width = get_preprocess_shape(*label_map.shape, options["mask_size"].longest_edge)
            resized = PIL.Image.fromarray(label_map).resize((width, height), PILImageResampling.NEAREST)
            label_map = np.asarray(resized)
        labels = torch.from_numpy(label_map.astype(np.int64))
        return _pad(labels, options["mask_pad_size"], "mask_pad_size") if options["do_pad"] else labels

    def preprocess(
        self,
        images: Any,
        segmentation_maps: Any = None,
        return_tensors: str = "pt",
        input_data_format: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Preprocesses one image or a list of images of any sizes (see `IMAGES_FORM`; a 4-D array / tensor is a
        batch), and optionally their segmentation maps.

        Args:
            images: the images.
            segmentation_maps: one map per image (`MAPS_FORM`), class ids in 0-255.
            return_tensors: "pt" (torch tensors) or "np" (numpy arrays).
            input_data_format: "channels_first" / "channels_last" layout of array / tensor images (inferred if None).
            kwargs: any option of the constructor, for this call only.

        Returns:
            `BatchFeature` with `pixel_values` float32 `(batch_size, 3, pad_size["height"], pad_size["width"])`
            (unpadded images must share a size to be batched), `original_sizes` int64 `(batch_size, 2)` and
            `reshaped_input_sizes` int64 `(batch_size, 2)`, both as (height, width), and with `segmentation_maps`
            `labels` int64 `(batch_size, mask_pad_size["height"], mask_pad_size["width"])`.
        """
        if return_tensors not in RETURN_TENSORS:
            raise ValueError(f"return_tensors must be one of {RETURN_TENSORS}, got {return_tensors!r}.")
        options = self._options(kwargs)
        images = as_list("images", images, IMAGES_FORM)
        arrays = [to_uint8_hwc(image, options["do_convert_rgb"], input_data_format) for image in images]
        pixel_values = [self._image(array, options) for array in arrays]
        data = {
            "original_sizes": torch.tensor([array.shape[:2] for array in arrays], dtype=torch.int64),
            "reshaped_input_sizes": torch.tensor([image.shape[-2:] for image in pixel_values], dtype=torch.int64),
        }
        if options["do_pad"]:
            pixel_values = [_pad(image, options["pad_size"], "pad_size") for image in pixel_values]
        elif len({image.shape for image in pixel_values}) > 1:
            raise ValueError("With do_pad=False, the images must have the same size after resizing to be batched.")
        data["pixel_values"] = torch.stack(pixel_values)
        if segmentation_maps is not None:
            maps = as_list("segmentation_maps", segmentation_maps, MAPS_FORM)
            if len(maps) != len(images):
                raise ValueError(f"segmentation_maps must have one map per image: {len(maps)} for {len(images)}.")
            labels = [self._label_map(label_map, options) for label_map in maps]
            if len({label_map.shape for label_map in labels}) > 1:
                raise ValueError("With do_pad=False, the segmentation maps must have the same size to be batched.")
            data["labels"] = torch.stack(labels)
        if return_tensors == "np":
            data = {key: value.numpy() for key, value in data.items()}
        return BatchFeature(data)

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
        new_h, new_w = self.resized_size(old_h, old_w)
        coords = torch.as_tensor(coords, dtype=torch.float64).clone()
        coords[..., 0] *= new_w / old_w
        coords[..., 1] *= new_h / old_h
        return coords.to(torch.float32)

    def _get_preprocess_shape(self, old_shape: Sequence[int], longest_edge: int) -> tuple[int, int]:
        # transformers' `SamProcessor` calls this when it wraps this image processor (from `AutoImageProcessor`).
        return get_preprocess_shape(int(old_shape[0]), int(old_shape[1]), longest_edge)

    def post_process_masks(
        self,
        masks: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
        original_sizes: torch.Tensor | np.ndarray | Sequence[Sequence[int]],
        reshaped_input_sizes: torch.Tensor | np.ndarray | Sequence[Sequence[int]],
        mask_threshold: float = 0.0,
        binarize: bool = True,
        pad_size: dict[str, int] | int | None = None,
    ) -> list[torch.Tensor]:
        """Upscales low-resolution mask logits to each original image size (the official `Sam.postprocess_masks`:
        bilinear to the padded size, crop the unpadded region, bilinear to the original size).

        Args:
            masks: `(batch_size, point_batch_size, num_masks, h, w)` logits, or a list of per-image
                `(point_batch_size, num_masks, h, w)` torch tensors or numpy arrays.
            original_sizes / reshaped_input_sizes: `(batch_size, 2)` (height, width), as the preprocessing returned.
            mask_threshold: logit threshold of the binarised masks.
            binarize: return `logits > mask_threshold` (bool) instead of the upscaled logits.
            pad_size: the size the images were padded to (`{"height", "width"}` or an integer); `self.pad_size` if
                None.

        Returns:
            list of `batch_size` tensors `(point_batch_size, num_masks, height, width)`.

        Raises:
            ValueError: naming the argument, e.g. an original size of more than `MAX_IMAGE_PIXELS` pixels.
        """
        pad_size = self.pad_size if pad_size is None else height_width_size("pad_size", pad_size)
        masks = [torch.from_numpy(m) if isinstance(m, np.ndarray) else m for m in masks]
        for image_masks in masks:
            if not isinstance(image_masks, torch.Tensor):
                raise TypeError(
                    f"masks must be a list of torch tensors or numpy arrays, got {type(image_masks).__name__}."
                )
            if image_masks.ndim != 4:
                raise ValueError(
                    "masks must be a (batch_size, point_batch_size, num_masks, h, w) tensor or a list of "
                    f"(point_batch_size, num_masks, h, w) tensors, got {tuple(image_masks.shape)}."
                )
        original_sizes = check_sizes("original_sizes", original_sizes)
        max_pixels = image_inputs.MAX_IMAGE_PIXELS
        if (original_sizes.prod(dim=1) > max_pixels).any():
            raise ValueError(
                f"original_sizes {original_sizes.tolist()}: masks of more than MAX_IMAGE_PIXELS={max_pixels} pixels "
                "an image are refused (the size open_image reads); raise "
                "sam_hf.processing.image_inputs.MAX_IMAGE_PIXELS to upscale to larger images."
            )
        reshaped_input_sizes = check_sizes("reshaped_input_sizes", reshaped_input_sizes)
        if not len(masks) == len(original_sizes) == len(reshaped_input_sizes):
            raise ValueError(
                f"masks, original_sizes and reshaped_input_sizes must have one entry per image, got lengths "
                f"{len(masks)}, {len(original_sizes)} and {len(reshaped_input_sizes)}."
            )
        if (reshaped_input_sizes > torch.tensor([pad_size.height, pad_size.width])).any():
            raise ValueError(f"reshaped_input_sizes must be <= pad_size {dict(pad_size)}, got {reshaped_input_sizes}.")
        outputs = []
        for image_masks, (orig_h, orig_w), (new_h, new_w) in zip(
            masks, original_sizes.tolist(), reshaped_input_sizes.tolist(), strict=True
        ):
            logits = image_masks if image_masks.dtype == torch.float64 else image_masks.float()
            upscaled = F.interpolate(logits, (pad_size.height, pad_size.width), mode="bilinear", align_corners=False)
            upscaled = upscaled[..., :new_h, :new_w]
            upscaled = F.interpolate(upscaled, (orig_h, orig_w), mode="bilinear", align_corners=False)
            outputs.append(upscaled > mask_threshold if binarize else upscaled)
        return outputs


SamImageProcessor = SamHfImageProcessor
