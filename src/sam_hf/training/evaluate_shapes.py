"""Score a model on held-out generated scenes (seeds never used in training): mIoU over objects for one foreground
click at the object's centre (best of the three masks, and the top-scored one), for its tight box, and for its name as
a text prompt in scenes of at least three objects (learned text token, and zero-shot with a CLIP when given).

    python -m sam_hf.training.evaluate_shapes src/sam_hf/bundled/sam-hf-shapes [--scenes 200] \
        [--clip src/sam_hf/bundled/sam-hf-shapes-clip]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from ..clip_scoring import ClipScorer
from ..data import generate_scene
from ..loading import load_clip
from ..modeling import SamModel
from ..modeling.loss import mask_iou
from ..predictor import SamPredictor
from ..processing import SamProcessor
from ..text_to_mask import segment_text
from .shapes import HELD_OUT_SEED, IMAGE_SIZE

MIN_OBJECTS_FOR_TEXT = 3  # the named object must be told apart from at least two others


def centre_point(mask: np.ndarray) -> list[float]:
    """The mask pixel farthest from the background (x, y): the standard single-click evaluation point."""
    y, x = np.unravel_index(np.argmax(distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]), mask.shape)
    return [float(x), float(y)]


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def text_iou(predictor: SamPredictor, scene, method: str, clip: ClipScorer | None = None) -> list[float]:
    """IoU of the text prompt's mask with each named object of `scene` (0 when nothing is found)."""
    ious = []
    for obj in scene.objects:
        result = segment_text(predictor, scene.image, obj.name, method=method, clip=clip)
        found = result.masks[0] if result.found else np.zeros_like(obj.mask)
        ious.append(float(mask_iou(torch.from_numpy(found), torch.from_numpy(obj.mask))))
    return ious


@torch.no_grad()
def evaluate(
    model: SamModel,
    processor: SamProcessor,
    num_scenes: int = 200,
    seed: int = HELD_OUT_SEED,
    clip: ClipScorer | None = None,
) -> dict:
    """mIoU over every object of `num_scenes` scenes: `point_best_of_3`, `point_top_scored`, `box`, and over the
    objects of scenes with >= 3 objects: `text_learned` (models with a text token), `text_zero_shot` (with `clip`)."""
    scores: dict[str, list[float]] = {"point_best_of_3": [], "point_top_scored": [], "box": []}
    predictor = SamPredictor(model, processor)
    if model.config.text_config is not None:
        scores["text_learned"] = []
    if clip is not None:
        scores["text_zero_shot"] = []
    for index in range(num_scenes):
        scene = generate_scene(seed + index, IMAGE_SIZE)
        gt = torch.from_numpy(scene.masks)
        inputs = processor(images=scene.image, input_points=[[[centre_point(m)] for m in scene.masks]])
        embeddings = model.get_image_embeddings(inputs["pixel_values"])
        sizes = (inputs["original_sizes"], inputs["reshaped_input_sizes"])
        points = model(image_embeddings=embeddings, input_points=inputs["input_points"])
        iou = mask_iou(processor.post_process_masks(points.pred_masks, *sizes)[0], gt[:, None])  # (objects, 3)
        scores["point_best_of_3"] += iou.max(dim=1).values.tolist()
        scores["point_top_scored"] += iou.gather(1, points.iou_scores[0].argmax(dim=1, keepdim=True))[:, 0].tolist()
        boxes = processor(input_boxes=[[tight_box(m) for m in scene.masks]], original_sizes=inputs["original_sizes"])
        box = model(image_embeddings=embeddings, multimask_output=False, **boxes)
        scores["box"] += mask_iou(processor.post_process_masks(box.pred_masks, *sizes)[0][:, 0], gt).tolist()
        if len(scene.objects) >= MIN_OBJECTS_FOR_TEXT:
            if "text_learned" in scores:
                scores["text_learned"] += text_iou(predictor, scene, "learned")
            if clip is not None:
                scores["text_zero_shot"] += text_iou(predictor, scene, "zero-shot", clip)
    return {name: float(np.mean(values)) for name, values in scores.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model directory or Hub id")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--clip", help="also score zero-shot text prompts with this CLIP (see sam_hf.load_clip)")
    args = parser.parse_args(argv)
    model = SamModel.from_pretrained(args.model).eval()
    clip = load_clip(args.clip) if args.clip else None
    results = evaluate(model, SamProcessor.from_pretrained(args.model), args.scenes, clip=clip)
    print("| prompt | mIoU |\n|---|---|")
    for name, value in results.items():
        print(f"| {name.replace('_', ' ')} | {value:.3f} |")


if __name__ == "__main__":
    main()
