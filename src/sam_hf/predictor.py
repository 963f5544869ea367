"""`SamPredictor`: embed an image once, then prompt it many times, in original-image pixels. The official
`segment_anything.SamPredictor` interface, call for call (`set_image`, `set_torch_image`, `predict`, `predict_torch`,
`transform`, `get_image_embedding`, `reset_image`, ...), over `SamModel` + `SamProcessor`, with the same numbers."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import resize, to_pil_image

from .modeling import SamModel
from .modeling.hq import official_hq_outputs
from .processing import SamProcessor, get_preprocess_shape
from .processing.image_processing_sam import to_uint8_hwc
from .processing.processing_sam import to_lists
from .processing.tokenization import check_text
from .prompts import check_prompts

# The model's arguments and the ones `predict` / `predict_torch` take: errors name the one the caller passed.
_PREDICT_NAMES = {
    "input_points": "point_coords",
    "input_labels": "point_labels",
    "input_boxes": "box",
    "input_masks": "mask_input",
}
_PREDICT_TORCH_NAMES = {**_PREDICT_NAMES, "input_boxes": "boxes"}

IMAGE_FORMATS = ("RGB", "BGR")
MODEL_IMAGE_FORMAT = "RGB"  # what sam_hf's image processor takes (the official `Sam.image_format`)


@contextlib.contextmanager
def _named_as(names: dict[str, str]) -> Iterator[None]:
    """Re-raises a `ValueError`/`TypeError` of the processor or the model with the caller's argument names."""
    try:
        yield
    except (ValueError, TypeError) as error:
        message = re.sub("|".join(names), lambda match: names[match.group()], str(error))
        if message == str(error):
            raise
        raise type(error)(message) from error


def box_coordinates(box: Any) -> list[float]:
    """One box as `SamPredictor.predict` takes it, `(4,)` or the official `(1, 4)`, -> `[x1, y1, x2, y2]`; a
    `ValueError`/`TypeError` naming `box` otherwise."""
    if isinstance(box, (list, tuple, np.ndarray, torch.Tensor)) and getattr(box, "ndim", 1) and len(box) == 1:
        box = box[0]  # the official form (1, 4)
    return to_lists("box", box, 1, "(4,) or (1, 4) box x1, y1, x2, y2", leaf_size=4)


class ImageNotSetError(RuntimeError, ValueError):
    """Prompting or reading the embedding before `set_image`: a `RuntimeError` as in the official predictor, and a
    `ValueError` as sam_hf's other input errors, so either `except` catches it."""


@dataclass
class EmbeddedImage:
    """What prompting an image needs: its embedding and sizes. Cheap to keep per image (a cache, a session).

    Args:
        image_embeddings: `(1, C, h, w)` image embedding.
        original_size: (height, width) of the image as given.
        reshaped_size: (height, width) after resizing the longest side to the model's input size.
    """

    image_embeddings: torch.Tensor
    original_size: tuple[int, int]
    reshaped_size: tuple[int, int]


class Prediction(NamedTuple):
    """Masks for one prompt, best candidates as the model ordered them. Unpacks as the official
    `masks, scores, logits = predictor.predict(...)`.

    Args:
        masks: `(C, H, W)` bool masks in original-image pixels (float32 logits with `return_logits`); C is 3 with
            `multimask_output`, else 1.
        scores: `(C,)` predicted IoU of each mask.
        low_res_logits: `(C, 256, 256)` low-resolution logits; `low_res_logits[i:i+1]` is a `mask_input`.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray


class CachedEmbedding(NamedTuple):
    """`EmbeddingCache.embed`'s answer.

    Args:
        image: the embedded image.
        key: the image's content hash (its cache key).
        cached: whether it came from the cache (no image encoder run).
    """

    image: EmbeddedImage
    key: str
    cached: bool


class EmbeddingCache:
    """A least-recently-used cache of image embeddings keyed by the image's content (a hash of its RGB pixels), so that
    prompting an image again, or sending it again (an app, a labelling loop), costs no image encoder.

    One cache serves one model: `embed(predictor, image)` takes the predictor at each call, so the cache itself holds
    only embeddings (cheap to copy or keep per user).

    Args:
        max_size: embeddings kept; the least recently used one goes first (vit_b: 4 MB each in float32).
    """

    def __init__(self, max_size: int = 4) -> None:
        if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
            raise ValueError(f"max_size must be a positive integer, got {max_size!r}.")
        self.max_size = max_size
        self._images: OrderedDict[str, EmbeddedImage] = OrderedDict()

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, key: object) -> bool:
        return key in self._images

    @staticmethod
    def key(image: Any) -> str:
        """The content hash of `image` (PIL, `(H, W, 3)` uint8 array, ...): equal pixels, equal key."""
        pixels = to_uint8_hwc(image, do_convert_rgb=True)
        return hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()

    def embed(self, predictor: SamPredictor, image: Any) -> CachedEmbedding:
        """`predictor.embed(image)` from the cache, computed (and cached) on a miss."""
        key = self.key(image)
        if key in self._images:
            self._images.move_to_end(key)
            return CachedEmbedding(self._images[key], key, True)
        embedded = predictor.embed(image)
        self._images[key] = embedded
        while len(self._images) > self.max_size:
            self._images.popitem(last=False)
        return CachedEmbedding(embedded, key, False)

    def clear(self) -> None:
        """Forgets every embedding."""
        self._images.clear()


class ResizeLongestSide:
    """The official `segment_anything.utils.transforms.ResizeLongestSide`: maps images, points and boxes to the
    model's input frame (longest side `target_length`), with sam_hf's `get_preprocess_shape` (at least 1 pixel a side).

    Args:
        target_length: the model's input size (`config.vision_config.image_size`).
    """

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """(height, width) after resizing the longest side of an `oldh` x `oldw` image to `long_side_length`."""
        return get_preprocess_shape(oldh, oldw, long_side_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """`(H, W, 3)` uint8 image -> `(h, w, 3)` uint8, resized with PIL bilinear as `SamProcessor` resizes."""
        target_size = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.array(resize(to_pil_image(image), list(target_size)))

    def _scale(self, coords: Any, original_size: tuple[int, ...]) -> Any:
        new_h, new_w = self.get_preprocess_shape(original_size[0], original_size[1], self.target_length)
        coords[..., 0] = coords[..., 0] * (new_w / original_size[1])
        coords[..., 1] = coords[..., 1] * (new_h / original_size[0])
        return coords

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """`(..., 2)` (x, y) in original pixels of an image of `original_size` (height, width) -> float64 input-frame
        coordinates."""
        return self._scale(np.array(coords, dtype=float), original_size)

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        """`(B, 4)` (or `(4,)`) XYXY boxes -> `(B, 4)` float64 boxes in the input frame."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` float images -> resized with antialiased bilinear interpolation (close to, not equal to,
        `apply_image`). The official sizes this from the batch and channel axes; this uses height and width."""
        target_size = self.get_preprocess_shape(image.shape[-2], image.shape[-1], self.target_length)
        return F.interpolate(image, target_size, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """`(..., 2)` (x, y) tensor in original pixels -> float32 input-frame coordinates."""
        return self._scale(coords.to(torch.float, copy=True), original_size)

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        """`(B, 4)` XYXY box tensor in original pixels -> `(B, 4)` float32 boxes in the input frame."""
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


def _check_tensor(name: str, value: Any, shape: str, ndim: int, last: int | None = None) -> None:
    """`predict_torch`'s own layout checks (before its prompts are reshaped into the model's)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(value).__name__}.")
    if value.ndim != ndim or (last is not None and value.shape[-1] != last):
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}.")


class SamPredictor:
    """Prompts one image at a time, like the official `SamPredictor`, on any sam_hf model.

    Official code runs unchanged: `set_image(image, image_format)`, `predict(...)` unpacking as
    `masks, scores, logits`, `predict_torch` with `predictor.transform`, `set_torch_image`, `get_image_embedding`,
    `reset_image`, and the attributes `features`, `is_image_set`, `original_size`, `input_size`, `device`, `model`.
    `embed(image)` returns an `EmbeddedImage` that `predict(..., image=...)` takes, so one model can serve many images
    or users.

    Args:
        model: a sam_hf `SamModel`.
        processor: its processor; one matching the model's input size if omitted.
    """

    def __init__(self, model: SamModel, processor: SamProcessor | None = None) -> None:
        if not isinstance(model, SamModel):
            raise TypeError(f"model must be a sam_hf SamModel, got {type(model).__name__}.")
        self.model = model
        self.processor = processor or SamProcessor.for_config(model.config)
        self.processor.image_processor.check_model_input(model.config.vision_config.image_size)
        self.transform = ResizeLongestSide(model.config.vision_config.image_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return self.model.device

    @property
    def image(self) -> EmbeddedImage | None:
        """The image `predict` prompts by default, or `None` (built from `features` / `original_size` /
        `input_size`, so code that restores those attributes by hand, as done with the official predictor, works)."""
        if not self.is_image_set:
            return None
        return EmbeddedImage(self.features, tuple(self.original_size), tuple(self.input_size))

    @image.setter
    def image(self, image: EmbeddedImage | None) -> None:
        """Makes `image` (from `embed`) the current image, or forgets the current one with `None`."""
        if image is not None and not isinstance(image, EmbeddedImage):
            raise TypeError(f"image must be an EmbeddedImage from predictor.embed(image), got {type(image).__name__}.")
        self.reset_image()
        if image is not None:
            self._use(image)

    def reset_image(self) -> None:
        """Forgets the current image."""
        self.is_image_set = False
        self.features = self.original_size = self.input_size = None
        self.orig_h = self.orig_w = self.input_h = self.input_w = None

    def _use(self, image: EmbeddedImage) -> None:
        self.features = image.image_embeddings
        self.original_size = image.original_size
        self.input_size = image.reshaped_size
        self.orig_h, self.orig_w = image.original_size
        self.input_h, self.input_w = image.reshaped_size
        self.is_image_set = True

    @torch.no_grad()
    def embed(self, image: Any) -> EmbeddedImage:
        """Runs the image encoder on one image (PIL, `(H, W, 3)` uint8 array, ...; see `SamImageProcessor`)."""
        inputs = self.processor.image_processor(image)
        if len(inputs["pixel_values"]) != 1:
            raise ValueError("image must be a single image, got a batch.")
        pixel_values = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        return EmbeddedImage(
            self.model.get_image_embeddings(pixel_values),
            tuple(inputs["original_sizes"][0].tolist()),
            tuple(inputs["reshaped_input_sizes"][0].tolist()),
        )

    def set_image(self, image: Any, image_format: str = "RGB") -> None:
        """Embeds `image` and makes it the one `predict` prompts by default.

        Args:
            image: a PIL image, an `(H, W, 3)` uint8 array, ... (see `SamImageProcessor`).
            image_format: `"RGB"`, or `"BGR"` for an `(H, W, 3)` array in OpenCV's channel order.
        """
        if image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}.")
        if image_format != MODEL_IMAGE_FORMAT:
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[-1] != 3:
                raise ValueError(
                    f"image_format={image_format!r} needs an (H, W, 3) array, got "
                    f"{getattr(image, 'shape', type(image).__name__)}."
                )
            image = image[..., ::-1]
        self.reset_image()
        self._use(self.embed(image))

    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Embeds an image already resized by `predictor.transform.apply_image` (the official `set_torch_image`).

        Args:
            transformed_image: `(1, 3, h, w)` pixels in 0-255 (uint8, or whole-number floats), longest side the model's
                input size.
            original_image_size: (height, width) of the image before `apply_image`.
        """
        size = self.transform.target_length
        form = f"(1, 3, h, w) 0-255 pixels with long side {size} (from predictor.transform.apply_image)"
        _check_tensor("transformed_image", transformed_image, form, 4)
        if transformed_image.shape[:2] != (1, 3) or max(transformed_image.shape[2:]) != size:
            raise ValueError(f"transformed_image must be {form}, got {tuple(transformed_image.shape)}.")
        original = to_lists("original_image_size", original_image_size, 1, "(height, width)", leaf_size=2)
        if min(original) < 1 or original != [round(side) for side in original]:
            raise ValueError(f"original_image_size must be positive integers (height, width), got {original}.")
        pixels = transformed_image[0].permute(1, 2, 0).detach().cpu()
        if pixels.dtype != torch.uint8:
            # The processor's normalisation is the official one on uint8 pixels; other values would be rounded.
            if not (pixels.is_floating_point() and torch.equal(pixels, pixels.round().clamp(0, 255))):
                raise ValueError(f"transformed_image must be {form}, got dtype {pixels.dtype} with other values.")
            pixels = pixels.to(torch.uint8)
        # Resizing an image whose long side is already the model's size is the identity, so this only normalises/pads.
        embedded = self.embed(pixels.numpy())
        self.reset_image()
        self._use(
            EmbeddedImage(embedded.image_embeddings, (int(original[0]), int(original[1])), embedded.reshaped_size)
        )

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's `(1, C, h, w)` embedding (for SAM-HQ without the early ViT feature that follows it in
        `features`, as `segment_anything_hq`'s predictor keeps that apart)."""
        if not self.is_image_set:
            raise ImageNotSetError("An image must be set with .set_image(...) to generate an embedding.")
        return self.features[:, : self.model.config.prompt_encoder_config.hidden_size]

    def _image(self, image: EmbeddedImage | None) -> EmbeddedImage:
        image = self.image if image is None else image
        if image is None:
            raise ImageNotSetError("No image: call set_image(image) first or pass image=predictor.embed(image).")
        if not isinstance(image, EmbeddedImage):
            raise TypeError(f"image must be an EmbeddedImage from predictor.embed(image), got {type(image).__name__}.")
        return image

    def _decode(
        self,
        image: EmbeddedImage,
        inputs: dict[str, torch.Tensor],
        multimask_output: bool,
        return_logits: bool,
        names: dict[str, str],
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model inputs in the input frame -> masks `(B, C, H, W)`, scores `(B, C)`, low-res logits `(B, C, h, w)`.
        SAM-HQ gives one mask per prompt, as `segment_anything_hq`'s predictor: with `multimask_output`, the best SAM
        candidate (plus the HQ mask), which is the first of the model's IoU-sorted ones."""
        inputs = {
            key: value.to(self.model.device, self.model.dtype if value.is_floating_point() else value.dtype)
            for key, value in inputs.items()
        }
        with _named_as(names):
            # The model's own check does not count the prompts of a request: everything mode sizes its batches itself.
            check_prompts(
                inputs.get("input_points"), inputs.get("input_labels"), inputs.get("input_boxes"), request=True
            )
            outputs = self.model(
                image_embeddings=image.image_embeddings,
                multimask_output=multimask_output,
                hq_token_only=hq_token_only,
                **inputs,
            )
        config = self.model.config.mask_decoder_config
        pred_masks, iou_scores = official_hq_outputs(config, outputs.pred_masks, outputs.iou_scores)
        masks = self.processor.post_process_masks(
            pred_masks.float(), [image.original_size], [image.reshaped_size], binarize=not return_logits
        )[0]
        return masks, iou_scores[0], pred_masks[0]

    @torch.no_grad()
    def predict(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        mask_input: torch.Tensor | np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        image: EmbeddedImage | None = None,
        text: str | None = None,
        hq_token_only: bool = False,
    ) -> Prediction:
        """Masks for one prompt, in original-image pixels.

        Args:
            point_coords: `(N, 2)` (x, y) points.
            point_labels: `(N,)` labels, 1 foreground and 0 background; all foreground if omitted.
            box: `(4,)` or `(1, 4)` box x1, y1, x2, y2.
            mask_input: `(1, 256, 256)` low-resolution logits of a previous prediction (`logits[i:i+1]`).
            multimask_output: three candidate masks (for an ambiguous prompt) instead of one.
            return_logits: return upscaled logits instead of bool masks.
            image: the embedded image to prompt; the one of `set_image` if omitted.
            text: a text prompt, for models with a trained text token (`config.text_config`); see `segment_text` for
                text on any model.
            hq_token_only: SAM-HQ models: the HQ token's mask alone instead of its sum with SAM's (as
                `segment_anything_hq`'s `predict`). SAM-HQ returns one mask (`C` = 1) either way.

        Returns:
            `Prediction(masks, scores, low_res_logits)`, numpy arrays of shapes `(C, H, W)`, `(C,)`, `(C, 256, 256)`.
        """
        image = self._image(image)
        if point_coords is None and box is None and mask_input is None and text is None:
            raise ValueError("Pass point_coords, box, mask_input and/or text to prompt the model.")
        if point_labels is not None and point_coords is None:
            raise ValueError("point_labels needs point_coords: one label per point.")
        prompts = {}
        if point_coords is not None:
            prompts["input_points"] = [[to_lists("point_coords", point_coords, 2, "(N, 2) points x, y", leaf_size=2)]]
            if point_labels is not None:
                labels = to_lists("point_labels", point_labels, 1, "(N,) labels, 1 foreground and 0 background")
                if len(labels) != len(prompts["input_points"][0][0]):
                    raise ValueError(f"point_labels must have one label per point of point_coords, got {len(labels)}.")
                prompts["input_labels"] = [[labels]]
        if box is not None:
            prompts["input_boxes"] = [[box_coordinates(box)]]
        with _named_as(_PREDICT_NAMES):
            inputs = self.processor(original_sizes=[image.original_size], **prompts) if prompts else {}
        inputs.pop("original_sizes", None)
        if text is not None:
            inputs["input_text_ids"] = self.processor(text=check_text(text))["input_text_ids"]
        if mask_input is not None:
            try:
                mask_input = torch.as_tensor(mask_input)
            except (TypeError, ValueError, RuntimeError) as error:
                raise TypeError(f"mask_input must be (1, h, w) low-resolution logits: {error}") from error
            if mask_input.ndim != 3 or len(mask_input) != 1:
                raise ValueError(f"mask_input must be (1, h, w) low-resolution logits, got {tuple(mask_input.shape)}.")
            if mask_input.is_complex():
                raise TypeError(f"mask_input must be real low-resolution logits, got dtype {mask_input.dtype}.")
            inputs["input_masks"] = mask_input[None]
        masks, scores, low_res = self._decode(
            image, dict(inputs), multimask_output, return_logits, _PREDICT_NAMES, hq_token_only
        )
        return Prediction(masks[0].cpu().numpy(), scores[0].float().cpu().numpy(), low_res[0].float().cpu().numpy())

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks for B prompts at once, given in the model's input frame (`predictor.transform.apply_coords_torch` /
        `apply_boxes_torch` of original-image pixels), as the official `predict_torch`.

        Args:
            point_coords: `(B, N, 2)` (x, y) points.
            point_labels: `(B, N)` labels, 1 foreground, 0 background, -1 not a point; all foreground if omitted.
            boxes: `(B, 4)` XYXY boxes.
            mask_input: `(B, 1, 256, 256)` (or `(1, 1, 256, 256)`, shared) low-resolution logits.
            multimask_output: three candidate masks per prompt instead of one.
            return_logits: return upscaled logits instead of bool masks.
            hq_token_only: as in `predict` (SAM-HQ models).

        Returns:
            torch tensors on the model's device: masks `(B, C, H, W)` in original-image pixels, predicted IoU `(B, C)`
            and low-resolution logits `(B, C, 256, 256)`.
        """
        image = self._image(None)
        if point_coords is None and boxes is None and mask_input is None:
            raise ValueError("Pass point_coords, boxes and/or mask_input to prompt the model.")
        if point_labels is not None and point_coords is None:
            raise ValueError("point_labels needs point_coords: one label per point.")
        inputs = {}
        if point_coords is not None:
            _check_tensor("point_coords", point_coords, "(B, N, 2) points x, y in the input frame", 3, 2)
            inputs["input_points"] = point_coords[None]
            if point_labels is not None:
                _check_tensor("point_labels", point_labels, "(B, N) labels", 2)
                inputs["input_labels"] = point_labels[None]
        if boxes is not None:
            _check_tensor("boxes", boxes, "(B, 4) boxes x1, y1, x2, y2 in the input frame", 2, 4)
            inputs["input_boxes"] = boxes[None]
        if mask_input is not None:
            _check_tensor("mask_input", mask_input, "(B, 1, 256, 256) low-resolution logits", 4)
            if mask_input.shape[1] != 1:
                raise ValueError(f"mask_input must have shape (B, 1, 256, 256), got {tuple(mask_input.shape)}.")
            inputs["input_masks"] = mask_input[:, 0][None]
        return self._decode(image, inputs, multimask_output, return_logits, _PREDICT_TORCH_NAMES, hq_token_only)
