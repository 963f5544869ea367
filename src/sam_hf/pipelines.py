"""`transformers.pipeline()` glue for sam_hf models, registered on `import sam_hf` through transformers' public APIs.

- `"mask-generation"` is transformers' own task, left as it is: its `MaskGenerationPipeline` runs sam_hf models too
  (sam_hf's image processor has the `generate_crop_boxes` / `filter_masks` / `post_process_for_mask_generation` it
  calls) and gives the numbers it gives on transformers' `SamModel`. The official automatic mask generator (per-crop
  NMS, small-region removal, COCO RLE; `sam_hf.everything`) is `SamMaskGenerationPipeline`:
  `pipeline("mask-generation", model=..., pipeline_class=SamMaskGenerationPipeline)`.
- `"promptable-mask-generation"`: `SamPromptableMaskGenerationPipeline`, masks and scores for point / box / text
  prompts (text through `sam_hf.segment_text`).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_convert
from transformers import AutoModelForMaskGeneration, Pipeline
from transformers.image_utils import load_image
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_sam import SamConfig
from .everything import EverythingSettings, SamAutomaticMaskGenerator, decode_segmentation, uncompressed_rle
from .modeling import SamModel
from .predictor import SamPredictor
from .processing import SamImageProcessor, SamProcessor
from .text_to_mask import segment_text

PROMPTABLE_MASK_GENERATION = "promptable-mask-generation"

# Names of transformers' mask-generation pipeline -> the official generator's.
TRANSFORMERS_ALIASES = {
    "points_per_crop": "points_per_side",
    "crops_n_layers": "crop_n_layers",
    "crops_nms_thresh": "crop_nms_thresh",
}
GENERATOR_PARAMS = tuple(setting.name for setting in fields(EverythingSettings))


def _load(image: Any, timeout: float | None) -> Any:
    """Paths and URLs -> PIL image; images in any form `SamProcessor` accepts pass through."""
    return load_image(image, timeout=timeout) if isinstance(image, str) else image


class _SamPipeline(Pipeline):
    """Holds a sam_hf `SamModel` and a `SamProcessor`, given, loaded with the model, or matching the model's size."""

    _load_processor = None  # optional: a saved processor or image processor is used when there is one
    _load_image_processor = None
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, model: SamModel, processor: SamProcessor | None = None, **kwargs: Any) -> None:
        if not isinstance(model, SamModel):
            raise TypeError(
                f"{type(self).__name__} needs a sam_hf SamModel, got {type(model).__name__}; load checkpoints with "
                "sam_hf.SamModel.from_pretrained."
            )
        super().__init__(model=model, processor=processor, **kwargs)
        if not isinstance(self.processor, SamProcessor):
            if isinstance(self.image_processor, SamImageProcessor):
                self.processor = SamProcessor(self.image_processor)
            else:
                self.processor = SamProcessor.for_config(model.config)
        self.image_processor = self.processor.image_processor
        self.image_processor.check_model_input(model.config.vision_config.image_size)


class SamMaskGenerationPipeline(_SamPipeline):
    """Everything mode for sam_hf models with the official automatic mask generator:
    `pipeline("mask-generation", model=..., pipeline_class=SamMaskGenerationPipeline)`.

    Call parameters: the official generator's (`points_per_side`, `pred_iou_thresh`, ..., `output_mode`; see
    `EverythingSettings`), transformers' names `points_per_crop` / `crops_n_layers` / `crops_nms_thresh`,
    `output_bboxes_mask`, `output_rle_mask` and `timeout`.

    Returns:
        dict with transformers' keys `masks` (list of `(h, w)` bool arrays) and `scores` (`(n,)` predicted IoU), plus
        `bounding_boxes` (`(n, 4)` XYXY) / `rle_mask` (uncompressed RLEs) when asked, and `annotations`: the official
        records (`segmentation` per `output_mode`, `area`, `bbox`, `predicted_iou`, ...).
    """

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        preprocess = {"timeout": kwargs.pop("timeout")} if "timeout" in kwargs else {}
        postprocess = {key: kwargs.pop(key) for key in ("output_bboxes_mask", "output_rle_mask") if key in kwargs}
        forward = {TRANSFORMERS_ALIASES.get(key, key): value for key, value in kwargs.items()}
        both = [alias for alias, name in TRANSFORMERS_ALIASES.items() if alias in kwargs and name in kwargs]
        if both:
            raise TypeError(f"Pass {both[0]} or {TRANSFORMERS_ALIASES[both[0]]}, not both.")
        unknown = set(forward) - set(GENERATOR_PARAMS)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected parameters {sorted(unknown)}.")
        return preprocess, forward, postprocess

    def preprocess(self, image: Any, timeout: float | None = None) -> dict[str, Any]:
        """`{"image": image}`, a path or URL loaded as a PIL image (other images pass through)."""
        return {"image": _load(image, timeout)}

    def _forward(self, model_inputs: dict[str, Any], **generator_params: Any) -> dict[str, Any]:
        settings = EverythingSettings(**generator_params)
        generator = SamAutomaticMaskGenerator(self.model, processor=self.processor, settings=settings)
        return {"annotations": generator.generate(model_inputs["image"])}

    def postprocess(
        self, model_outputs: dict[str, Any], output_bboxes_mask: bool = False, output_rle_mask: bool = False
    ) -> dict[str, Any]:
        """The generator's records -> `masks` (`(h, w)` bool arrays), `scores` `(n,)` and `annotations`, plus
        `bounding_boxes` `(n, 4)` XYXY and `rle_mask` (uncompressed RLEs) when asked."""
        annotations = model_outputs["annotations"]
        masks = [decode_segmentation(record["segmentation"]) for record in annotations]
        outputs = {
            "masks": masks,
            "scores": torch.tensor([record["predicted_iou"] for record in annotations]),
            "annotations": annotations,
        }
        if output_bboxes_mask:
            boxes = torch.tensor([record["bbox"] for record in annotations], dtype=torch.long).reshape(-1, 4)
            outputs["bounding_boxes"] = box_convert(boxes, "xywh", "xyxy")
        if output_rle_mask:
            outputs["rle_mask"] = [uncompressed_rle(mask) for mask in masks]
        return outputs


class SamPromptableMaskGenerationPipeline(_SamPipeline):
    """Masks for prompts on one image (`"promptable-mask-generation"`).

    Call: `pipe(image, points=..., labels=..., boxes=..., multimask_output=True, mask_threshold=0.0)`, in original
    image pixels. One prompt: `points` `[[x, y], ...]` with `labels` `[1, 0, ...]` (1 foreground, 0 background;
    default all foreground) and/or `boxes` `[x1, y1, x2, y2]`. Several prompts: one more nesting level,
    `points` `[[[x, y], ...], ...]`, `labels` `[[...], ...]`, `boxes` `[[x1, y1, x2, y2], ...]`; ragged point lists are
    padded.

    Text: `pipe(image, text="red circle", top_k=1, text_method="auto")`, optionally with one prompt's `points` /
    `labels` / `boxes`, runs `sam_hf.segment_text` (the learned text token when the model has one, else zero-shot with
    the `clip` given when building the pipeline: `pipeline(..., clip=ClipScorer.from_open_clip(...))`).

    Returns:
        dict with `masks` bool `(num_prompts, num_masks, height, width)` and `scores` (predicted IoU)
        `(num_prompts, num_masks)`; `num_masks` is 3 with `multimask_output` and 1 without. For text: one prompt with
        up to `top_k` masks, `scores` the text scores (see `TextSegmentation`), and `found`.
    """

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        preprocess = {key: kwargs.pop(key) for key in ("points", "labels", "boxes", "text", "timeout") if key in kwargs}
        forward = {
            key: kwargs.pop(key) for key in ("multimask_output", "clip", "top_k", "text_method") if key in kwargs
        }
        postprocess = {"mask_threshold": kwargs.pop("mask_threshold")} if "mask_threshold" in kwargs else {}
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected parameters {sorted(kwargs)}.")
        return preprocess, forward, postprocess

    def preprocess(
        self,
        image: Any,
        points: Any = None,
        labels: Any = None,
        boxes: Any = None,
        text: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """`image` (a path or URL loaded as a PIL image) and the prompts as the model takes them: `SamProcessor`
        outputs, a single prompt nested one level deeper; with `text`, the image and prompts for `segment_text`."""
        image = _load(image, timeout)
        if text is not None:  # one prompt, handled whole by `segment_text`
            return {"image": image, "text": text, "point_coords": points, "point_labels": labels, "box": boxes}
        prompts = {}
        for name, value, single_ndim in (("points", points, 2), ("labels", labels, 1), ("boxes", boxes, 1)):
            if value is not None:
                prompts[f"input_{name}"] = [[value] if _ndim(value) == single_ndim else value]
        if "input_points" not in prompts and "input_boxes" not in prompts:
            raise ValueError("Pass points and/or boxes (or text) to prompt the model.")
        return dict(self.processor(images=image, **prompts))

    def _forward(
        self,
        model_inputs: dict[str, Any],
        multimask_output: bool = True,
        clip: Any = None,
        top_k: int = 1,
        text_method: str = "auto",
    ) -> dict[str, Any]:
        if "text" in model_inputs:
            predictor = SamPredictor(self.model, self.processor)
            return {"text_result": segment_text(predictor, **model_inputs, method=text_method, clip=clip, top_k=top_k)}
        sizes = {key: model_inputs.pop(key) for key in ("original_sizes", "reshaped_input_sizes")}
        outputs = self.model(**model_inputs, multimask_output=multimask_output)
        return {"pred_masks": outputs.pred_masks, "iou_scores": outputs.iou_scores, **sizes}

    def postprocess(self, model_outputs: dict[str, Any], mask_threshold: float = 0.0) -> dict[str, Any]:
        """Masks at the original image size, thresholded at `mask_threshold`: `masks` bool
        `(num_prompts, num_masks, height, width)` and `scores` `(num_prompts, num_masks)`; for text, one prompt with
        the text result's masks and scores, and `found`."""
        if "text_result" in model_outputs:
            result = model_outputs["text_result"]
            masks, scores = torch.from_numpy(result.masks)[None], torch.from_numpy(result.scores)[None]
            return {"masks": masks, "scores": scores, "found": result.found}
        masks = self.processor.post_process_masks(
            model_outputs["pred_masks"],
            model_outputs["original_sizes"],
            model_outputs["reshaped_input_sizes"],
            mask_threshold=mask_threshold,
        )
        return {"masks": masks[0], "scores": model_outputs["iou_scores"][0]}


def _ndim(value: Any) -> int | None:
    """Nesting depth of a rectangular numeric prompt, `None` if ragged (ragged prompts come fully nested)."""
    try:
        return np.asarray(value, dtype=np.float64).ndim
    except (TypeError, ValueError):
        return None


def register_pipelines() -> None:
    """Registers sam_hf's models with `AutoModelForMaskGeneration` (so `pipeline("mask-generation", model=<local dir>)`
    loads them) and adds the `"promptable-mask-generation"` task. Idempotent; transformers' own tasks are untouched."""
    AutoModelForMaskGeneration.register(SamConfig, SamModel, exist_ok=True)
    if PROMPTABLE_MASK_GENERATION not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            PROMPTABLE_MASK_GENERATION,
            pipeline_class=SamPromptableMaskGenerationPipeline,
            pt_model=AutoModelForMaskGeneration,
            type="multimodal",
        )
