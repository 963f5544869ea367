"""Everything mode: SAM's automatic mask generator over `SamModel` + `SamProcessor`, with the parameters, defaults and
decisions of the official `SamAutomaticMaskGenerator` (segment_anything/automatic_mask_generator.py).

A grid of single-point prompts is decoded over the image and over optional overlapping crops; masks are kept if their
predicted IoU and stability score pass the thresholds, dropped if they touch a crop edge that is not an image edge,
deduplicated by box NMS per crop and across crops (smaller crops preferred), optionally cleaned of small holes and
islands, and returned as the official records.

Where it differs from the official code, it does the same work in a cheaper order, with the same numbers: masks are
filtered by predicted IoU before they are upscaled, upscaled a few at a time, and compressed to COCO RLE as soon as they
survive, so memory stays bounded whatever the grid size.
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision.ops import batched_nms, box_area, box_convert
from tqdm.auto import tqdm

from ..geometry import mask_boxes
from ..modeling import SamModel
from ..modeling.hq import official_hq_outputs
from ..processing import SamProcessor
from ..processing.image_processing_sam import to_uint8_hwc
from . import amg
from .amg import MaskData
from .settings import EverythingSettings

UPSCALE_CHUNK = 16  # masks upscaled to crop resolution at once: bounds memory independently of points_per_batch
SETTING_NAMES = frozenset(setting.name for setting in fields(EverythingSettings))


class SamAutomaticMaskGenerator:
    """Generates masks for an entire image from a grid of point prompts, as the official `SamAutomaticMaskGenerator`
    (same parameters, defaults and records; the defaults were tuned for ViT-H).

    A drop-in for the official constructor: `SamAutomaticMaskGenerator(model, points_per_side=32, ...)`, positionally
    in the official order or by keyword; or `settings=` an `EverythingSettings` (e.g. a preset), which keywords then
    override. The settings are also readable as the official attributes (`generator.pred_iou_thresh`, ...);
    `point_grids` is the list of `(n, 2)` float64 grids, one per crop layer.

    Args:
        model: the `SamModel`.
        *args / **kwargs: the `EverythingSettings` fields (`points_per_side`, `points_per_batch`, `pred_iou_thresh`,
            `stability_score_thresh`, `stability_score_offset`, `box_nms_thresh`, `crop_n_layers`, `crop_nms_thresh`,
            `crop_overlap_ratio`, `crop_n_points_downscale_factor`, `point_grids`, `min_mask_region_area`,
            `output_mode`), described there.
        processor: the `SamProcessor`; by default one whose image processor matches the model's input size.
        progress_bar: show a tqdm progress bar over the decoded batches.
        settings: all settings at once, instead of `*args`.
    """

    def __init__(
        self,
        model: SamModel,
        *args: Any,
        processor: SamProcessor | None = None,
        progress_bar: bool = False,
        settings: EverythingSettings | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, SamModel):
            raise TypeError(f"model must be a sam_hf SamModel, got {type(model).__name__}.")
        if settings is None:
            settings = EverythingSettings(*args, **kwargs)
        elif not isinstance(settings, EverythingSettings):
            raise TypeError(f"settings must be an EverythingSettings, got {type(settings).__name__}.")
        elif args:
            raise TypeError("Pass the settings as settings= or positionally, not both.")
        elif kwargs:
            settings = replace(settings, **kwargs)
        self.model = model
        self.processor = SamProcessor.for_config(model.config) if processor is None else processor
        self.processor.image_processor.check_model_input(model.config.vision_config.image_size)
        self.settings = settings
        self.point_grids = settings.layer_point_grids()
        self.progress_bar = progress_bar

    def __getattr__(self, name: str) -> Any:
        """The official generator's attributes (`points_per_batch`, `output_mode`, ...): the settings' fields."""
        if name in SETTING_NAMES and "settings" in self.__dict__:
            return getattr(self.settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @torch.inference_mode()
    def generate(self, image: Any, image_embeddings: torch.Tensor | None = None) -> list[dict[str, Any]]:
        """Generates masks for one image (a PIL image, an HxWxC / CxHxW uint8 array or tensor, ...: the forms
        `SamProcessor` accepts).

        `image_embeddings`, the `(1, C, h, w)` embedding of the whole image (`SamPredictor.embed(image)
        .image_embeddings`), skips the image encoder for the full-image crop: an app that already embedded the image
        for point prompts pays only for the decoder.

        Returns:
            one record per mask, sorted as the official generator sorts them:
            `segmentation` (`(h, w)` bool array or RLE dict, per `output_mode`), `area` (pixels), `bbox` (XYWH),
            `predicted_iou`, `point_coords` (`[[x, y]]` of the prompt), `stability_score`, `crop_box` (XYWH).
        """
        if isinstance(image, (list, tuple)):
            raise ValueError("generate takes one image; call it once per image.")
        if image_embeddings is not None and (
            not isinstance(image_embeddings, torch.Tensor) or image_embeddings.ndim != 4 or len(image_embeddings) != 1
        ):
            raise ValueError(
                "image_embeddings must be the (1, C, h, w) embedding of this one image, got "
                f"{getattr(image_embeddings, 'shape', type(image_embeddings).__name__)}."
            )
        image = to_uint8_hwc(image, self.processor.image_processor.do_convert_rgb)
        image_size, settings = image.shape[:2], self.settings
        crop_boxes, layers = amg.generate_crop_boxes(image_size, settings.crop_n_layers, settings.crop_overlap_ratio)
        if any(x1 <= x0 or y1 <= y0 for x0, y0, x1, y1 in crop_boxes):
            raise ValueError(f"crop_n_layers {settings.crop_n_layers} makes empty crops of a {image_size} image.")
        total = sum(math.ceil(len(self.point_grids[layer]) / settings.points_per_batch) for layer in layers)
        with tqdm(total=total, desc="everything", disable=not self.progress_bar) as progress:
            data = MaskData.cat(
                [
                    self._process_crop(image, box, layer, progress, image_embeddings if layer == 0 else None)
                    for box, layer in zip(crop_boxes, layers, strict=True)
                ]
            )
        if len(crop_boxes) > 1:  # duplicates across crops: prefer masks from smaller crops
            scores = 1 / box_area(data.crop_boxes)
            keep = batched_nms(data.boxes.float(), scores, torch.zeros(len(scores)), settings.crop_nms_thresh)
            data = data.select(keep)
        if settings.min_mask_region_area > 0:
            data = self._remove_small_regions(data)
        return self._records(data)

    def _process_crop(
        self,
        image: np.ndarray,
        crop_box: list[int],
        layer: int,
        progress: tqdm,
        embeddings: torch.Tensor | None = None,
    ) -> MaskData:
        """Embeds the crop once (unless its `embeddings` are given), decodes its grid in batches, removes duplicates
        within the crop and moves boxes and points to the image frame."""
        x0, y0, x1, y1 = crop_box
        inputs = self.processor.image_processor(image[y0:y1, x0:x1])
        if embeddings is None:
            embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.model.device))
        else:
            embeddings = embeddings.to(self.model.device, self.model.dtype)
        points = torch.from_numpy(self.point_grids[layer] * np.array([x1 - x0, y1 - y0], dtype=np.float64))
        batches = []
        for start in range(0, len(points), self.settings.points_per_batch):
            batch = points[start : start + self.settings.points_per_batch]
            batches.append(self._process_batch(embeddings, batch, crop_box, image.shape[:2], inputs))
            progress.update()
        data = MaskData.cat(batches)
        nms = batched_nms(data.boxes.float(), data.iou_preds, torch.zeros(len(data.rles)), self.settings.box_nms_thresh)
        data = data.select(nms)
        offset = torch.tensor([x0, y0])
        data.boxes += offset.repeat(2)
        data.points += offset
        data.crop_boxes = torch.tensor([crop_box]).repeat(len(data.rles), 1)
        return data

    def _process_batch(
        self,
        embeddings: torch.Tensor,
        points: torch.Tensor,
        crop_box: list[int],
        image_size: tuple[int, int],
        inputs: dict[str, torch.Tensor],
    ) -> MaskData:
        """`points` `(p, 2)` float64 (x, y) in crop pixels -> the masks that pass the predicted-IoU, stability and
        crop-edge filters, with boxes and points still in the crop frame (`crop_boxes` left empty)."""
        device, settings = self.model.device, self.settings
        crop_size, input_size = inputs["original_sizes"][0].tolist(), inputs["reshaped_input_sizes"][0].tolist()
        model_points = self.processor.image_processor.resize_coordinates(points, crop_size).to(device)
        outputs = self.model(
            image_embeddings=embeddings,
            input_points=model_points[None, :, None],
            input_labels=torch.ones(1, len(points), 1, dtype=torch.long, device=device),
            multimask_output=True,
        )
        pred_masks, iou_scores = official_hq_outputs(
            self.model.config.mask_decoder_config, outputs.pred_masks, outputs.iou_scores
        )
        iou_preds = iou_scores[0].flatten().float().cpu()  # (p * num_masks,), point-major as the official
        low_res = pred_masks[0].flatten(0, 1)
        # The predicted IoU needs no mask: filter before the costly upscaling, then upscale a few masks at a time.
        keep = torch.arange(len(iou_preds))
        if settings.pred_iou_thresh > 0:
            keep = keep[iou_preds > settings.pred_iou_thresh]
        parts = []
        for chunk in keep.split(UPSCALE_CHUNK):
            logits = self.processor.post_process_masks(
                [low_res[chunk.to(device), None]], [crop_size], [input_size], binarize=False
            )[0][:, 0]
            stability = amg.stability_score(logits, settings.stability_score_offset)
            passed = stability >= settings.stability_score_thresh
            if settings.stability_score_thresh == 0:  # as the official, also keep masks empty at both thresholds (NaN)
                passed = torch.ones_like(passed)
            masks = (logits[passed] > amg.MASK_THRESHOLD).cpu()
            chunk, stability = chunk[passed.cpu()], stability[passed].cpu()
            boxes = mask_boxes(masks)
            inside = ~amg.is_box_near_crop_edge(boxes, crop_box, image_size)
            chunk = chunk[inside]
            parts.append(
                MaskData(
                    rles=amg.encode_rles(masks[inside], crop_box, image_size),
                    boxes=boxes[inside],
                    iou_preds=iou_preds[chunk],
                    stability_score=stability[inside],
                    points=points[chunk // iou_scores.shape[-1]],
                    crop_boxes=torch.empty(len(chunk), 4, dtype=torch.long),
                )
            )
        return MaskData.cat(parts) if parts else MaskData.empty()

    def _remove_small_regions(self, data: MaskData) -> MaskData:
        """Fills small holes and removes small islands, then suppresses new duplicates by box NMS, preferring masks
        that did not change; kept masks that changed get their new RLE and box."""
        if not data.rles:
            return data
        changed_rles, boxes, unchanged = {}, [], []
        min_area = self.settings.min_mask_region_area
        for i, rle in enumerate(data.rles):
            mask, holes_changed = amg.remove_small_regions(mask_utils.decode(rle), min_area, "holes")
            mask, islands_changed = amg.remove_small_regions(mask, min_area, "islands")
            boxes.append(mask_boxes(mask))
            unchanged.append(not (holes_changed or islands_changed))
            if not unchanged[-1]:
                changed_rles[i] = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        boxes = torch.stack(boxes)
        scores = torch.tensor(unchanged, dtype=torch.float)
        nms_thresh = max(self.settings.box_nms_thresh, self.settings.crop_nms_thresh)
        keep = batched_nms(boxes.float(), scores, torch.zeros(len(scores)), nms_thresh)
        for i in keep.tolist():
            if i in changed_rles:
                data.rles[i] = changed_rles[i]
                data.boxes[i] = boxes[i]
        return data.select(keep)

    def _records(self, data: MaskData) -> list[dict[str, Any]]:
        output_mode = self.settings.output_mode
        if output_mode == "coco_rle":
            segmentations = [amg.rle_to_json(rle) for rle in data.rles]
        else:
            masks = [mask_utils.decode(rle).astype(bool) for rle in data.rles]
            segmentations = masks if output_mode == "binary_mask" else [amg.uncompressed_rle(m) for m in masks]
        columns = zip(
            segmentations,
            amg.rle_areas(data.rles),
            box_convert(data.boxes, "xyxy", "xywh").tolist(),
            data.iou_preds.tolist(),
            data.points.tolist(),
            data.stability_score.tolist(),
            box_convert(data.crop_boxes, "xyxy", "xywh").tolist(),
            strict=True,
        )
        keys = ("segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box")
        records = [dict(zip(keys, values, strict=True)) for values in columns]
        for record in records:
            record["point_coords"] = [record["point_coords"]]
        return records
