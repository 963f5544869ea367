"""One image's labels, and the per-image result files of the single-process / accelerate engines.

`label_image` is the per-image step every engine runs (single process, accelerate, Ray Data): an image -> its
everything-mode records, or the error that kept it from being read. `ImageLabeller` keeps each result in its own JSON
file, written atomically, so an interrupted run resumes; `coco_dataset` turns results into one COCO dictionary (the
Parquet shards of the Ray engine are exported through it too).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from .sources import SourceImage

CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}  # everything mode finds masks, not classes
RECORD_FIELDS = ("predicted_iou", "stability_score", "point_coords", "crop_box")  # kept in COCO beside the usual ones


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


class ImageLabeller:
    """Runs everything mode over images and keeps one result file per image in `work_dir`.

    Args:
        generator: the configured `SamAutomaticMaskGenerator` (its `output_mode` must be `"coco_rle"`).
        work_dir: where the per-image results go; created if missing.
        settings: everything that determines the masks (model, dtype, generator parameters). A stored result is
            reused only if it was made with the same settings from the same, unchanged image.
        process_index: this process's rank, recorded with its results.
    """

    def __init__(self, generator: Any, work_dir: str | os.PathLike, settings: dict, process_index: int = 0) -> None:
        if generator.output_mode != "coco_rle":
            raise ValueError(f"generator.output_mode must be 'coco_rle', got {generator.output_mode!r}.")
        self.generator = generator
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.settings = json.loads(json.dumps(settings))  # as it reads back from JSON, to compare with stored ones
        self.process_index = process_index

    def result_path(self, name: str) -> Path:
        """Result file of the image `name` (a hash: names may contain directories and any character, including the
        undecodable bytes of a file name that is not UTF-8, which Python keeps as surrogates)."""
        return self.work_dir / f"{hashlib.sha1(os.fsencode(name)).hexdigest()[:20]}.json"

    def load_result(self, image: SourceImage) -> dict[str, Any] | None:
        """The stored result of `image`, or `None` if missing, unreadable, or made otherwise than now."""
        try:
            result = json.loads(self.result_path(image.name).read_text())
        except (OSError, ValueError):
            return None
        current = {"file_name": image.name, "settings": self.settings, "source": image.fingerprint()}
        return result if all(result.get(key) == value for key, value in current.items()) else None

    def label(self, image: SourceImage) -> dict[str, Any]:
        """Runs everything mode on one image and stores the result (`file_name`, `height`, `width`, `masks`: the
        generator's records). An image that cannot be read gets a result with its `error` instead."""
        result = {
            "file_name": image.name,
            "settings": self.settings,
            "source": image.fingerprint(),
            "process_index": self.process_index,
        }
        try:
            decoded = image.open()
        except ValueError as error:  # missing, not an image, truncated, too large: recorded, the batch goes on
            decoded = error
        result |= label_image(self.generator, decoded)
        write_json_atomic(self.result_path(image.name), result)
        return result

    def label_all(self, images: Iterable[SourceImage], progress: bool = True) -> int:
        """Labels the images not done yet (an unreadable one counts as done, with its error); returns how many were
        labelled now."""
        done = 0
        for image in tqdm(images, desc="images", unit="image", disable=not progress):
            if self.load_result(image) is None:
                self.label(image)
                done += 1
        return done

    def merge(self, images: Iterable[SourceImage]) -> dict[str, Any]:
        """One COCO dictionary from the stored results of `images` (see `coco_dataset`)."""
        results = []
        for image in images:
            result = self.load_result(image)
            if result is None:
                raise ValueError(f"no up-to-date result for image {image.name!r} in {os.fspath(self.work_dir)!r}.")
            results.append(result)
        return coco_dataset(results, self.settings)


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
