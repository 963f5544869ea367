"""Everything mode: `SamAutomaticMaskGenerator` (generator.py), its settings and presets (settings.py) and the crop /
grid / stability / RLE / small-region helpers (amg.py), laid out as the official `segment_anything` keeps them."""

from .amg import (
    MaskData,
    build_all_layer_point_grids,
    build_point_grid,
    coco_rle,
    decode_segmentation,
    generate_crop_boxes,
    is_box_near_crop_edge,
    remove_small_regions,
    rle_areas,
    rle_to_json,
    stability_score,
    uncompressed_rle,
)
from .generator import SamAutomaticMaskGenerator
from .settings import BUNDLED_SETTINGS, OFFICIAL_SETTINGS, OUTPUT_MODES, ZERO_SHOT_SETTINGS, EverythingSettings

__all__ = [
    "BUNDLED_SETTINGS",
    "OFFICIAL_SETTINGS",
    "OUTPUT_MODES",
    "ZERO_SHOT_SETTINGS",
    "EverythingSettings",
    "MaskData",
    "SamAutomaticMaskGenerator",
    "build_all_layer_point_grids",
    "build_point_grid",
    "coco_rle",
    "decode_segmentation",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "remove_small_regions",
    "rle_areas",
    "rle_to_json",
    "stability_score",
    "uncompressed_rle",
]
