"""transformers' mask-generation API on sam_hf's image processor, so that transformers' own `MaskGenerationPipeline`
(`pipeline("mask-generation", model=<sam_hf model or directory>)`) runs sam_hf models and gives the numbers it gives on
transformers' `SamModel` with the same weights.

The three steps that pipeline asks of an image processor are transformers' own code, not a copy: sam_hf's
official-exact everything mode (`sam_hf.everything`, or `pipeline(..., pipeline_class=SamMaskGenerationPipeline)`)
is a separate, fuller algorithm (per-crop NMS, small-region removal, COCO RLE).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil


@functools.cache
def _transformers_processor() -> SamImageProcessorPil:
    # The PIL backend: its crops are the arrays whose resized pixels equal sam_hf's (and the official) exactly.
    return SamImageProcessorPil()


class MaskGenerationMixin:
    """`generate_crop_boxes`, `filter_masks` and `post_process_for_mask_generation` of transformers'
    `SamImageProcessor`, for its `MaskGenerationPipeline`."""

    def generate_crop_boxes(
        self,
        image: Any,
        target_size: int,
        crop_n_layers: int = 0,
        overlap_ratio: float = 512 / 1500,
        points_per_crop: int | None = 32,
        crop_n_points_downscale_factor: int = 1,
        device: torch.device | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[Any], torch.Tensor]:
        """transformers' `SamImageProcessor.generate_crop_boxes`: the crop boxes `(n_crops, 4)` XYXY, the point grid
        `(1, n_points, n_crops, 2)` in `target_size` coordinates, the cropped images and their labels
        `(1, n_points, n_crops)`."""
        return _transformers_processor().generate_crop_boxes(
            image, target_size, crop_n_layers, overlap_ratio, points_per_crop, crop_n_points_downscale_factor, device
        )

    def filter_masks(self, *args: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], torch.Tensor, torch.Tensor]:
        """transformers' `SamImageProcessor.filter_masks`: the masks of one batch of points kept by the predicted-IoU
        and stability thresholds and away from crop edges, as RLEs, with their scores and XYXY boxes."""
        return _transformers_processor().filter_masks(*args, **kwargs)

    def post_process_for_mask_generation(
        self,
        all_masks: list[dict[str, Any]],
        all_scores: torch.Tensor,
        all_boxes: torch.Tensor,
        crops_nms_thresh: float,
    ) -> tuple[list[Any], torch.Tensor, list[dict[str, Any]], torch.Tensor]:
        """transformers' `SamImageProcessor.post_process_for_mask_generation`: box NMS over every crop's masks."""
        return _transformers_processor().post_process_for_mask_generation(
            all_masks, all_scores, all_boxes, crops_nms_thresh
        )
