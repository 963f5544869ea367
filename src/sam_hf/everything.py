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
import numbers
from dataclasses import dataclass, fields
from itertools import chain, product
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from scipy import ndimage
from torchvision.ops import batched_nms, box_area, box_convert, masks_to_boxes
from tqdm.auto import tqdm

from .modeling import SamModel
from .processing import SamProcessor
from .processing.image_processing_sam import to_uint8_hwc

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
MASK_THRESHOLD = 0.0  # logit threshold of a binary mask (the official `Sam.mask_threshold`)
CROP_EDGE_TOLERANCE = 20.0  # pixels: a box this close to a crop edge that is not an image edge touches it
UPSCALE_CHUNK = 16  # masks upscaled to crop resolution at once: bounds memory independently of points_per_batch
# Sanity limits far beyond any useful setting, so that a typo fails at once instead of building a grid that exhausts
# memory (points_per_side 10**5: 10**10 prompts) or looping over 4**crop_n_layers crops.
MAX_POINTS_PER_SIDE = 1024  # 1,048,576 prompts per crop
MAX_CROP_N_LAYERS = 10  # 4**10 crops in the last layer


def build_point_grid(points_per_side: int) -> np.ndarray:
    """`(points_per_side**2, 2)` float64 (x, y) cell centres of a regular grid over [0, 1]^2, x varying fastest."""
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    return np.stack(np.meshgrid(side, side), axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(points_per_side: int, crop_n_layers: int, downscale_factor: int) -> list[np.ndarray]:
    """One grid per crop layer; layer `i` has `int(points_per_side / downscale_factor**i)` points per side."""
    return [build_point_grid(int(points_per_side / downscale_factor**i)) for i in range(crop_n_layers + 1)]


def generate_crop_boxes(
    image_size: tuple[int, int], crop_n_layers: int, crop_overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes XYXY in image pixels and their layer: the whole image (layer 0), then `(2**i)**2` overlapping crops
    in layer `i` (official `generate_crop_boxes`, same integer arithmetic)."""
    height, width = image_size
    boxes, layers = [[0, 0, width, height]], [0]
    for layer in range(1, crop_n_layers + 1):
        n_per_side = 2**layer
        overlap = int(crop_overlap_ratio * min(height, width) * (2 / n_per_side))
        crop_w = math.ceil((overlap * (n_per_side - 1) + width) / n_per_side)
        crop_h = math.ceil((overlap * (n_per_side - 1) + height) / n_per_side)
        x0s = [(crop_w - overlap) * i for i in range(n_per_side)]
        y0s = [(crop_h - overlap) * i for i in range(n_per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layers.append(layer)
    return boxes, layers


def stability_score(logits: torch.Tensor, offset: float) -> torch.Tensor:
    """IoU of the masks thresholded at `MASK_THRESHOLD + offset` and `- offset` (one contains the other):
    `(n, h, w)` logits -> `(n,)` float32; NaN for masks empty at both thresholds."""
    intersections = (logits > MASK_THRESHOLD + offset).sum(dim=(-2, -1))
    unions = (logits > MASK_THRESHOLD - offset).sum(dim=(-2, -1))
    return intersections / unions


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fills holes (`mode="holes"`) or removes islands (`"islands"`) smaller than `min_area` pixels in a `(h, w)`
    mask, with 8-connectivity as the official code's `cv2.connectedComponentsWithStats`. If every island is small,
    the largest is kept. Returns the bool mask and whether it changed."""
    fill_holes = mode == "holes"
    labels, n_regions = ndimage.label(mask != fill_holes, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=n_regions + 1)[1:]
    small = sizes < min_area
    if not small.any():
        return mask.astype(bool), False
    # keep[label]: label 0 is the mask itself when filling holes and the background when removing islands.
    keep = np.concatenate([[fill_holes], small if fill_holes else ~small])
    if not keep.any():
        keep[np.argmax(sizes) + 1] = True
    return keep[labels], True


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """The official uncompressed RLE of a `(h, w)` mask: column-major run lengths, starting with a (maybe empty) run
    of zeros. pycocotools only exposes the compressed form."""
    flat = mask.ravel(order="F").astype(bool)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": [0, *counts] if flat[0] else counts}


def decode_segmentation(segmentation: np.ndarray | dict[str, Any]) -> np.ndarray:
    """A record's `segmentation` in any output mode -> `(h, w)` bool mask."""
    if isinstance(segmentation, np.ndarray):
        return segmentation.astype(bool)
    if isinstance(segmentation["counts"], list):  # uncompressed, as the official `coco_encode_rle` converts it
        segmentation = mask_utils.frPyObjects(segmentation, *segmentation["size"])
    return mask_utils.decode(segmentation).astype(bool)


def _encode_rles(masks: torch.Tensor, crop_box: list[int], image_size: tuple[int, int]) -> list[dict[str, Any]]:
    """`(n, crop_h, crop_w)` bool masks -> COCO RLEs of the masks pasted at `crop_box` in the full image."""
    x0, y0, x1, y1 = crop_box
    # (n, W, H) in C order is (H, W, n) in the Fortran order pycocotools encodes from, without another copy.
    full = np.zeros((len(masks), image_size[1], image_size[0]), dtype=np.uint8)
    full[:, x0:x1, y0:y1] = masks.transpose(1, 2).cpu().numpy()
    return mask_utils.encode(full.transpose(2, 1, 0))


@dataclass
class MaskData:
    """Masks kept so far, one row per mask: COCO `rles` of the full image, `boxes` XYXY int64 (inclusive max, zeros
    when empty) and `crop_boxes` XYXY in image pixels, `iou_preds` / `stability_score` float32, `points` (x, y) float64
    image pixels of the prompt."""

    rles: list[dict[str, Any]]
    boxes: torch.Tensor
    iou_preds: torch.Tensor
    stability_score: torch.Tensor
    points: torch.Tensor
    crop_boxes: torch.Tensor

    @classmethod
    def empty(cls) -> MaskData:
        long, float_ = torch.zeros(0, 4, dtype=torch.long), torch.zeros(0)
        return cls([], long, float_, float_, torch.zeros(0, 2, dtype=torch.float64), long)

    @classmethod
    def cat(cls, parts: list[MaskData]) -> MaskData:
        return cls(**{f.name: _cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def select(self, index: torch.Tensor) -> MaskData:
        """Rows `index` (int64 indices), in that order."""
        return MaskData(
            **{
                f.name: [value[i] for i in index.tolist()] if isinstance(value, list) else value[index]
                for f in fields(self)
                for value in [getattr(self, f.name)]
            }
        )


def _cat(values: list) -> list | torch.Tensor:
    return list(chain.from_iterable(values)) if isinstance(values[0], list) else torch.cat(values)


def _fits_float(value: numbers.Real) -> bool:
    """Finite, and within the float range (an int beyond it would overflow where it meets a tensor)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_number(
    name: str, value: Any, low: float, high: float, high_open: bool = False, integer: bool = False
) -> None:
    kind = numbers.Integral if integer else numbers.Real
    in_range = isinstance(value, kind) and not isinstance(value, bool) and low <= value <= high
    if not in_range or not (integer or _fits_float(value)) or (high_open and value == high):
        interval = f"[{low}, {high}{')' if high_open else ']'}" if math.isfinite(high) else f">= {low}"
        try:
            shown = repr(value)[:100]
        except ValueError:  # an int too long to print
            shown = f"a {type(value).__name__}"
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'} {interval}, got {shown}.")


class SamAutomaticMaskGenerator:
    r"""Generates masks for an entire image from a grid of point prompts, as the official `SamAutomaticMaskGenerator`
    (same parameters, defaults and records; the defaults were tuned for ViT-H).

    Args:
        model: the `SamModel`.
        points_per_side: points along one side of the grid (`points_per_side**2` prompts); `None` if `point_grids`
            are given.
        points_per_batch: prompts decoded at once; more is faster and uses more memory.
        pred_iou_thresh: keep masks whose predicted IoU is above this, in [0, 1].
        stability_score_thresh: keep masks whose stability score is at least this, in [0, 1].
        stability_score_offset: logit shift of the two thresholds that define the stability score.
        box_nms_thresh: box IoU above which a crop's duplicate masks are suppressed (the higher predicted IoU wins).
        crop_n_layers: also run on crops: layer `i` has `(2**i)**2` crops.
        crop_nms_thresh: box IoU above which duplicates across crops are suppressed (masks of smaller crops win).
        crop_overlap_ratio: overlap of the first layer's crops, as a fraction of the image's short side, in [0, 1).
        crop_n_points_downscale_factor: layer `i` has `points_per_side / factor**i` points per side.
        point_grids: explicit `(n, 2)` grids of (x, y) in [0, 1], one per crop layer; exclusive with
            `points_per_side`.
        min_mask_region_area: if > 0, fill holes and remove islands smaller than this many pixels, then run NMS again
            (threshold `max(box_nms_thresh, crop_nms_thresh)`), preferring masks that did not change.
        output_mode: `"binary_mask"` (`(h, w)` bool arrays), `"uncompressed_rle"` or `"coco_rle"` (JSON-ready).
        processor: the `SamProcessor`; by default one whose image processor matches the model's input size.
        progress_bar: show a tqdm progress bar over the decoded batches.
    """

    def __init__(
        self,
        model: SamModel,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        processor: SamProcessor | None = None,
        progress_bar: bool = False,
    ) -> None:
        if not isinstance(model, SamModel):
            raise TypeError(f"model must be a sam_hf SamModel, got {type(model).__name__}.")
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("Pass exactly one of points_per_side or point_grids.")
        for name, value, low, high, high_open, integer in (
            ("points_per_batch", points_per_batch, 1, math.inf, False, True),
            ("pred_iou_thresh", pred_iou_thresh, 0, 1, False, False),
            ("stability_score_thresh", stability_score_thresh, 0, 1, False, False),
            ("stability_score_offset", stability_score_offset, 0, math.inf, False, False),
            ("box_nms_thresh", box_nms_thresh, 0, 1, False, False),
            ("crop_n_layers", crop_n_layers, 0, MAX_CROP_N_LAYERS, False, True),
            ("crop_nms_thresh", crop_nms_thresh, 0, 1, False, False),
            ("crop_overlap_ratio", crop_overlap_ratio, 0, 1, True, False),
            ("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1, math.inf, False, True),
            ("min_mask_region_area", min_mask_region_area, 0, math.inf, False, False),
        ):
            _check_number(name, value, low, high, high_open, integer)
        if not isinstance(output_mode, str) or output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}.")
        if points_per_side is not None:
            _check_number("points_per_side", points_per_side, 1, MAX_POINTS_PER_SIDE, integer=True)
            if points_per_side < crop_n_points_downscale_factor**crop_n_layers:
                raise ValueError(
                    f"crop_n_points_downscale_factor {crop_n_points_downscale_factor} leaves no points in crop layer "
                    f"{crop_n_layers} of a {points_per_side}-point grid; lower it or crop_n_layers."
                )
            point_grids = build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            try:
                point_grids = [np.asarray(grid, dtype=np.float64) for grid in point_grids]
            except (TypeError, ValueError, OverflowError) as error:
                raise TypeError(f"point_grids must be a list of (n, 2) arrays of numbers: {error}") from error
            if len(point_grids) != crop_n_layers + 1:
                raise ValueError(
                    f"point_grids needs one grid per crop layer (crop_n_layers + 1 = {crop_n_layers + 1}), "
                    f"got {len(point_grids)}."
                )
            for grid in point_grids:
                if grid.ndim != 2 or grid.shape[1] != 2 or not len(grid) or not ((grid >= 0) & (grid <= 1)).all():
                    raise ValueError(f"point_grids must be non-empty (n, 2) arrays of (x, y) in [0, 1], got {grid}.")
        if processor is None:
            processor = SamProcessor.for_config(model.config)
        self.model = model
        self.processor = processor
        self.point_grids = point_grids
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.progress_bar = progress_bar

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
        image_size = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes(image_size, self.crop_n_layers, self.crop_overlap_ratio)
        if any(x1 <= x0 or y1 <= y0 for x0, y0, x1, y1 in crop_boxes):
            raise ValueError(f"crop_n_layers {self.crop_n_layers} makes empty crops of a {image_size} image.")
        total = sum(math.ceil(len(self.point_grids[layer]) / self.points_per_batch) for layer in layers)
        with tqdm(total=total, desc="everything", disable=not self.progress_bar) as progress:
            data = MaskData.cat(
                [
                    self._process_crop(image, box, layer, progress, image_embeddings if layer == 0 else None)
                    for box, layer in zip(crop_boxes, layers, strict=True)
                ]
            )
        if len(crop_boxes) > 1:  # duplicates across crops: prefer masks from smaller crops
            scores = 1 / box_area(data.crop_boxes)
            data = data.select(batched_nms(data.boxes.float(), scores, torch.zeros(len(scores)), self.crop_nms_thresh))
        if self.min_mask_region_area > 0:
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
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            batches.append(self._process_batch(embeddings, batch, crop_box, image.shape[:2], inputs))
            progress.update()
        data = MaskData.cat(batches)
        nms = batched_nms(data.boxes.float(), data.iou_preds, torch.zeros(len(data.rles)), self.box_nms_thresh)
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
        device = self.model.device
        crop_size, input_size = inputs["original_sizes"][0].tolist(), inputs["reshaped_input_sizes"][0].tolist()
        model_points = self.processor.image_processor.resize_coordinates(points, crop_size).to(device)
        outputs = self.model(
            image_embeddings=embeddings,
            input_points=model_points[None, :, None],
            input_labels=torch.ones(1, len(points), 1, dtype=torch.long, device=device),
            multimask_output=True,
        )
        iou_preds = outputs.iou_scores[0].flatten().float().cpu()  # (p * num_masks,), point-major as the official
        low_res = outputs.pred_masks[0].flatten(0, 1)
        # The predicted IoU needs no mask: filter before the costly upscaling, then upscale a few masks at a time.
        keep = torch.arange(len(iou_preds))
        if self.pred_iou_thresh > 0:
            keep = keep[iou_preds > self.pred_iou_thresh]
        image_box = torch.tensor([0, 0, image_size[1], image_size[0]], dtype=torch.float)
        crop_box_t = torch.tensor(crop_box, dtype=torch.float)
        parts = []
        for chunk in keep.split(UPSCALE_CHUNK):
            logits = self.processor.post_process_masks(
                [low_res[chunk.to(device), None]], [crop_size], [input_size], binarize=False
            )[0][:, 0]
            stability = stability_score(logits, self.stability_score_offset)
            passed = stability >= self.stability_score_thresh
            if self.stability_score_thresh == 0:  # as the official, also keep masks empty at both thresholds (NaN)
                passed = torch.ones_like(passed)
            masks = (logits[passed] > MASK_THRESHOLD).cpu()
            chunk, stability = chunk[passed.cpu()], stability[passed].cpu()
            boxes = masks_to_boxes(masks).long()
            # Masks touching a crop edge that is not an image edge are probably cut by the crop.
            image_frame = (boxes + crop_box_t[:2].repeat(2)).float()
            at_crop_edge = torch.isclose(image_frame, crop_box_t, atol=CROP_EDGE_TOLERANCE, rtol=0)
            at_image_edge = torch.isclose(image_frame, image_box, atol=CROP_EDGE_TOLERANCE, rtol=0)
            inside = ~(at_crop_edge & ~at_image_edge).any(dim=1)
            chunk = chunk[inside]
            parts.append(
                MaskData(
                    rles=_encode_rles(masks[inside], crop_box, image_size),
                    boxes=boxes[inside],
                    iou_preds=iou_preds[chunk],
                    stability_score=stability[inside],
                    points=points[chunk // outputs.iou_scores.shape[-1]],
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
        for i, rle in enumerate(data.rles):
            mask, holes_changed = remove_small_regions(mask_utils.decode(rle), self.min_mask_region_area, "holes")
            mask, islands_changed = remove_small_regions(mask, self.min_mask_region_area, "islands")
            boxes.append(masks_to_boxes(torch.from_numpy(mask)[None]).long())
            unchanged.append(not (holes_changed or islands_changed))
            if not unchanged[-1]:
                changed_rles[i] = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
        boxes = torch.cat(boxes)
        scores = torch.tensor(unchanged, dtype=torch.float)
        nms_thresh = max(self.box_nms_thresh, self.crop_nms_thresh)
        keep = batched_nms(boxes.float(), scores, torch.zeros(len(scores)), nms_thresh)
        for i in keep.tolist():
            if i in changed_rles:
                data.rles[i] = changed_rles[i]
                data.boxes[i] = boxes[i]
        return data.select(keep)

    def _records(self, data: MaskData) -> list[dict[str, Any]]:
        if self.output_mode == "coco_rle":
            segmentations = [{"size": rle["size"], "counts": rle["counts"].decode("utf-8")} for rle in data.rles]
        else:
            masks = [mask_utils.decode(rle).astype(bool) for rle in data.rles]
            segmentations = masks if self.output_mode == "binary_mask" else [uncompressed_rle(m) for m in masks]
        areas = mask_utils.area(data.rles).tolist() if data.rles else []
        columns = zip(
            segmentations,
            areas,
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
