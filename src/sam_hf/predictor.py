"""`SamPredictor`: embed an image once, then prompt it many times, in original-image pixels (the official
`SamPredictor` interface over `SamModel` + `SamProcessor`)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .modeling import SamModel
from .processing import SamProcessor
from .processing.processing_sam import to_lists
from .processing.tokenization import check_text

# `predict`'s arguments and the processor / model arguments they become: errors name the one the caller passed.
_ARGUMENT_NAMES = {
    "input_points": "point_coords",
    "input_labels": "point_labels",
    "input_boxes": "box",
    "input_masks": "mask_input",
}


@contextlib.contextmanager
def _named_as_predict_arguments() -> Iterator[None]:
    """Re-raises a `ValueError`/`TypeError` of the processor or the model with `predict`'s argument names."""
    try:
        yield
    except (ValueError, TypeError) as error:
        message = re.sub("|".join(_ARGUMENT_NAMES), lambda match: _ARGUMENT_NAMES[match.group()], str(error))
        if message == str(error):
            raise
        raise type(error)(message) from error


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


@dataclass
class Prediction:
    """Masks for one prompt, best candidates as the model ordered them.

    Args:
        masks: `(num_masks, height, width)` bool masks in original-image pixels (float logits with `return_logits`).
        scores: `(num_masks,)` predicted IoU of each mask.
        low_res_logits: `(num_masks, h, w)` low-resolution logits, to feed back as `mask_input`.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: torch.Tensor


class SamPredictor:
    """Prompts one image at a time, like the official `SamPredictor`, on any sam_hf model.

    `embed(image)` returns an `EmbeddedImage` that `predict(..., image=...)` takes, so one model can serve many images
    or users; `set_image(image)` keeps one for the official stateful style.

    Args:
        model: a sam_hf `SamModel`.
        processor: its processor; one matching the model's input size if omitted.
    """

    def __init__(self, model: SamModel, processor: SamProcessor | None = None) -> None:
        if not isinstance(model, SamModel):
            raise TypeError(f"model must be a sam_hf SamModel, got {type(model).__name__}.")
        self.model = model
        self.processor = processor or SamProcessor.for_config(model.config)
        self.image: EmbeddedImage | None = None

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

    def set_image(self, image: Any) -> None:
        """Embeds `image` and makes it the one `predict` prompts by default."""
        self.image = self.embed(image)

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
    ) -> Prediction:
        """Masks for one prompt, in original-image pixels.

        Args:
            point_coords: `(N, 2)` (x, y) points.
            point_labels: `(N,)` labels, 1 foreground and 0 background; all foreground if omitted.
            box: `(4,)` box x1, y1, x2, y2.
            mask_input: `(1, h, w)` low-resolution logits of a previous prediction (`Prediction.low_res_logits[i:i+1]`).
            multimask_output: three candidate masks (for an ambiguous prompt) instead of one.
            return_logits: return upscaled logits instead of bool masks.
            image: the embedded image to prompt; the one of `set_image` if omitted.
            text: a text prompt, for models with a trained text token (`config.text_config`); see `segment_text` for
                text on any model.
        """
        image = self.image if image is None else image
        if image is None:
            raise ValueError("No image: call set_image(image) first or pass image=predictor.embed(image).")
        if not isinstance(image, EmbeddedImage):
            raise TypeError(f"image must be an EmbeddedImage from predictor.embed(image), got {type(image).__name__}.")
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
            prompts["input_boxes"] = [[to_lists("box", box, 1, "(4,) box x1, y1, x2, y2", leaf_size=4)]]
        with _named_as_predict_arguments():
            inputs = self.processor(original_sizes=[image.original_size], **prompts) if prompts else {}
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
            inputs["input_masks"] = mask_input[None].to(self.model.device, self.model.dtype)
        inputs = {
            key: value.to(self.model.device, self.model.dtype if value.is_floating_point() else value.dtype)
            for key, value in inputs.items()
            if key != "original_sizes"
        }
        with _named_as_predict_arguments():
            outputs = self.model(image_embeddings=image.image_embeddings, multimask_output=multimask_output, **inputs)
        masks = self.processor.post_process_masks(
            outputs.pred_masks.float(), [image.original_size], [image.reshaped_size], binarize=not return_logits
        )[0][0]
        return Prediction(masks.cpu().numpy(), outputs.iou_scores[0, 0].float().cpu().numpy(), outputs.pred_masks[0, 0])
