"""Preprocessing and post-processing: `SamImageProcessor` (images, masks, coordinates) and `SamProcessor` (images
and prompts), exact to the official `segment_anything` pipeline."""

from __future__ import annotations

from transformers import AutoImageProcessor, AutoProcessor

from ..configuration_sam import SamConfig
from .image_processing_sam import SamHfImageProcessor, SamImageProcessor, get_preprocess_shape
from .processing_sam import SamHfProcessor, SamProcessor

__all__ = [
    "SamHfImageProcessor",
    "SamHfProcessor",
    "SamImageProcessor",
    "SamProcessor",
    "get_preprocess_shape",
    "register_auto_classes",
]


def register_auto_classes() -> None:
    """Lets `AutoImageProcessor` / `AutoProcessor.from_pretrained` load saved sam_hf processors. Idempotent.

    `exist_ok=True` because transformers maps configs by class name and has its own `SamConfig`.
    """
    AutoImageProcessor.register(
        SamConfig,
        image_processor_classes={"pil": SamHfImageProcessor, "torchvision": SamHfImageProcessor},
        exist_ok=True,
    )
    AutoProcessor.register(SamConfig, SamHfProcessor, exist_ok=True)
