"""Scoring a model on images with known masks, the way the SAM paper scores single prompts: mIoU over objects for
one foreground click at the object's centre (best of the three masks, and the top-scored one), for its tight box,
and for its name as a text prompt (learned text token, and zero-shot with a CLIP when given)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ..clip_scoring import ClipScorer
from ..data import Scene
from ..geometry import centre_point, mask_boxes, mask_iou
from ..modeling import SamModel
from ..predictor import SamPredictor
from ..processing import SamProcessor
from ..text_to_mask import segment_text

MIN_OBJECTS_FOR_TEXT = 3  # the named object must be told apart from at least two others


def text_iou(predictor: SamPredictor, scene: Scene, method: str, clip: ClipScorer | None = None) -> list[float]:
    """IoU of the text prompt's mask with each named object of `scene` (0 when nothing is found)."""
    ious = []
    for obj in scene.objects:
        result = segment_text(predictor, scene.image, obj.name, method=method, clip=clip)
        found = result.masks[0] if result.found else np.zeros_like(obj.mask)
        ious.append(float(mask_iou(found, obj.mask, empty=1.0)))
    return ious


@torch.no_grad()
def evaluate(
    model: SamModel, processor: SamProcessor, scenes: Iterable[Scene], clip: ClipScorer | None = None
) -> dict[str, float]:
    """mIoU over every object of `scenes`: `point_best_of_3`, `point_top_scored`, `box`, and over the objects of
    scenes with >= 3 objects: `text_learned` (models with a text token), `text_zero_shot` (with `clip`)."""
    scores: dict[str, list[float]] = {"point_best_of_3": [], "point_top_scored": [], "box": []}
    predictor = SamPredictor(model, processor)
    if model.config.text_config is not None:
        scores["text_learned"] = []
    if clip is not None:
        scores["text_zero_shot"] = []
    for scene in scenes:
        gt = torch.from_numpy(scene.masks)
        inputs = processor(images=scene.image, input_points=[[[centre_point(m)] for m in scene.masks]])
        embeddings = model.get_image_embeddings(inputs["pixel_values"])
        sizes = (inputs["original_sizes"], inputs["reshaped_input_sizes"])
        points = model(image_embeddings=embeddings, input_points=inputs["input_points"])
        masks = processor.post_process_masks(points.pred_masks, *sizes)[0]
        iou = mask_iou(masks, gt[:, None], empty=1.0)  # (objects, 3)
        scores["point_best_of_3"] += iou.max(dim=1).values.tolist()
        scores["point_top_scored"] += iou.gather(1, points.iou_scores[0].argmax(dim=1, keepdim=True))[:, 0].tolist()
        boxes = processor(input_boxes=[mask_boxes(gt).float().tolist()], original_sizes=inputs["original_sizes"])
        box = model(image_embeddings=embeddings, multimask_output=False, **boxes)
        scores["box"] += mask_iou(processor.post_process_masks(box.pred_masks, *sizes)[0][:, 0], gt, empty=1.0).tolist()
        if len(scene.objects) >= MIN_OBJECTS_FOR_TEXT:
            if "text_learned" in scores:
                scores["text_learned"] += text_iou(predictor, scene, "learned")
            if clip is not None:
                scores["text_zero_shot"] += text_iou(predictor, scene, "zero-shot", clip)
    return {name: float(np.mean(values)) for name, values in scores.items()}
