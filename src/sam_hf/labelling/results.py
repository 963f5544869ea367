"""One image's labels, and the COCO form of many.

`decode` and `label_image` are the per-image steps every engine runs (single process, accelerate, Ray Data): encoded
bytes -> pixels or the error that kept them from being read -> everything-mode records. `coco_dataset` turns per-image
results into one COCO dictionary (the Parquet shards are exported through it).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from ..loading import decode_image

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}  # everything mode finds masks, not classes
RECORD_FIELDS = ("predicted_iou", "stability_score", "point_coords", "crop_box")  # kept in COCO beside the usual ones


def decode(data: bytes, shown_as: str) -> np.ndarray | ValueError:
    """An encoded image -> `(H, W, 3)` uint8 RGB pixels (`open_image`'s checks), or the `ValueError` naming `shown_as`
    that says why it cannot be read (returned, not raised: an unreadable image is recorded, the batch goes on)."""
    try:
        return np.asarray(decode_image(data, shown_as))
    except ValueError as error:
        return error


def label_image(generator: Any, image: PIL.Image.Image | np.ndarray | ValueError) -> dict[str, Any]:
    """Everything mode on one decoded image: `{"height", "width", "masks"}` (`masks`: the generator's records, COCO
    RLE), or `{"error"}` when `image` is the `ValueError` that reading it raised.

    Args:
        generator: a `SamAutomaticMaskGenerator` with `output_mode="coco_rle"` (anything with its `generate`).
        image: an RGB PIL image or `(H, W, 3)` uint8 array, or the reading error.
    """
    if isinstance(image, ValueError):
        return {"error": str(image)}
    height, width = np.asarray(image).shape[:2]
    return {"height": int(height), "width": int(width), "masks": generator.generate(image)}


def write_json_atomic(path: Path, value: Any) -> None:
    """Writes `value` as JSON to a temporary file beside `path`, then renames it: `path` is never half-written.

    The file gets the permissions of any new file (0666 less the umask), not a private temporary file's 0600."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(value, file)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def coco_annotation(record: dict[str, Any], annotation_id: int, image_id: int) -> dict[str, Any]:
    """A COCO annotation from one everything-mode record (`output_mode="coco_rle"`); the score is the predicted IoU,
    the record's other fields are kept."""
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": CATEGORY["id"],
        "segmentation": record["segmentation"],
        "area": record["area"],
        "bbox": record["bbox"],
        "iscrowd": 0,
        "score": record["predicted_iou"],
        **{key: record[key] for key in RECORD_FIELDS},
    }


def coco_dataset(results: Iterable[dict[str, Any]], settings: dict) -> dict[str, Any]:
    """One COCO dictionary from per-image results in source order (`file_name` and `height`, `width`, `masks`, or
    `error`): image ids 1.. over the readable images, annotation ids 1..; the images that could not be read are listed
    with their errors in `info["failed"]`."""
    images, annotations, failed = [], [], []
    for result in results:
        if result.get("error") is not None:
            failed.append({"file_name": result["file_name"], "error": result["error"]})
            continue
        image_id = len(images) + 1
        size = {"height": result["height"], "width": result["width"]}
        images.append({"id": image_id, "file_name": result["file_name"], **size})
        for record in result["masks"]:
            annotations.append(coco_annotation(record, len(annotations) + 1, image_id))
    return {
        "info": {"description": "SAM everything-mode masks (sam_hf)", "settings": settings, "failed": failed},
        "images": images,
        "annotations": annotations,
        "categories": [CATEGORY],
    }
