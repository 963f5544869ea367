"""Batch labelling: everything mode over many images, as one COCO annotation file, resumable and sharded across
processes (`accelerate launch`).

Each image's masks are written to their own JSON file in a work directory as soon as they are done (atomically: a
temporary file, then `os.replace`), so an interrupted run skips the images already done when started again, and
several processes can share the images and the directory; the main process then merges everything into one COCO file.
A file that cannot be read as an image is recorded with its error (COCO `info["failed"]`) and the others are labelled.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from accelerate import PartialState
from tqdm.auto import tqdm

from .everything import SamAutomaticMaskGenerator
from .loading import open_image

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}  # everything mode finds masks, not classes
# Processes wait for the slowest one at the end: long enough for very uneven shards of a large data set.
BARRIER_TIMEOUT = timedelta(hours=48)


def find_images(path: str | os.PathLike) -> tuple[Path, list[str]]:
    """The images to label: `path` itself, or every image file under the directory `path` (recursively, sorted).

    Returns:
        `(root, names)`: names are POSIX paths relative to `root` (the COCO `file_name`s).
    """
    path = Path(path)
    if path.is_file():
        return path.parent, [path.name]
    if not path.is_dir():
        raise ValueError(f"image file or directory not found: {os.fspath(path)!r}.")
    names = sorted(
        file.relative_to(path).as_posix()
        for file in path.rglob("*")
        if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES
    )
    if not names:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in directory {os.fspath(path)!r}.")
    return path, names


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


def file_fingerprint(file: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file's content: a stored result is reused only for the same bytes (a size + mtime check
    misses a file replaced with `cp -p` or `rsync -t`)."""
    digest = hashlib.sha256()
    with open(file, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": file.stat().st_size, "sha256": digest.hexdigest()}


class ImageLabeller:
    """Runs everything mode over images and keeps one result file per image in `work_dir`.

    Args:
        generator: the configured `SamAutomaticMaskGenerator` (its `output_mode` must be `"coco_rle"`).
        work_dir: where the per-image results go; created if missing.
        settings: everything that determines the masks (model, dtype, generator parameters). A stored result is
            reused only if it was made with the same settings from the same, unchanged file.
        process_index: this process's rank, recorded with its results.
    """

    def __init__(
        self,
        generator: SamAutomaticMaskGenerator,
        work_dir: str | os.PathLike,
        settings: dict,
        process_index: int = 0,
    ) -> None:
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

    def load_result(self, root: Path, name: str) -> dict[str, Any] | None:
        """The stored result of image `name`, or `None` if missing, unreadable, or made otherwise than now."""
        try:
            result = json.loads(self.result_path(name).read_text())
        except (OSError, ValueError):
            return None
        current = {"file_name": name, "settings": self.settings, "source": file_fingerprint(root / name)}
        return result if all(result.get(key) == value for key, value in current.items()) else None

    def label(self, root: Path, name: str) -> dict[str, Any]:
        """Runs everything mode on one image and stores the result (`file_name`, `height`, `width`, `masks`: the
        generator's records). A file that cannot be read as an image gets a result with its `error` instead."""
        result = {
            "file_name": name,
            "settings": self.settings,
            "source": file_fingerprint(root / name),
            "process_index": self.process_index,
        }
        try:
            image = open_image(root / name)
        except ValueError as error:  # missing, not an image, truncated, too large: recorded, the batch goes on
            result["error"] = str(error)
        else:
            result |= {"height": image.height, "width": image.width, "masks": self.generator.generate(image)}
        write_json_atomic(self.result_path(name), result)
        return result

    def label_all(self, root: Path, names: Iterable[str], progress: bool = True) -> int:
        """Labels the images not done yet (an unreadable file counts as done, with its error); returns how many were
        labelled now."""
        names = list(names)
        done = 0
        for name in tqdm(names, desc="images", unit="image", disable=not progress):
            if self.load_result(root, name) is None:
                self.label(root, name)
                done += 1
        return done

    def merge(self, root: Path, names: Sequence[str]) -> dict[str, Any]:
        """One COCO dictionary from the stored results of `names` (image ids 1.. in that order of the readable images);
        the files that could not be read are listed with their errors in `info["failed"]`."""
        images, annotations, failed = [], [], []
        for name in names:
            result = self.load_result(root, name)
            if result is None:
                raise ValueError(f"no up-to-date result for image {name!r} in {os.fspath(self.work_dir)!r}.")
            if "error" in result:
                failed.append({"file_name": name, "error": result["error"]})
                continue
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": name, "height": result["height"], "width": result["width"]})
            for record in result["masks"]:
                annotations.append(coco_annotation(record, len(annotations) + 1, image_id))
        return {
            "info": {"description": "SAM everything-mode masks (sam_hf)", "settings": self.settings, "failed": failed},
            "images": images,
            "annotations": annotations,
            "categories": [CATEGORY],
        }


def coco_annotation(record: dict[str, Any], annotation_id: int, image_id: int) -> dict[str, Any]:
    """A COCO annotation from one everything-mode record (`output_mode="coco_rle"`); the score is the predicted IoU,
    the record's other fields are kept."""
    extra = {key: record[key] for key in ("predicted_iou", "stability_score", "point_coords", "crop_box")}
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": CATEGORY["id"],
        "segmentation": record["segmentation"],
        "area": record["area"],
        "bbox": record["bbox"],
        "iscrowd": 0,
        "score": record["predicted_iou"],
        **extra,
    }


def label_images(
    path: str | os.PathLike,
    output: str | os.PathLike,
    make_generator: Callable[[PartialState], SamAutomaticMaskGenerator],
    settings: dict,
    work_dir: str | os.PathLike | None = None,
    progress: bool = True,
    cpu: bool = False,
) -> dict[str, Any] | None:
    """Labels an image or a directory of images into one COCO file, in every process started by `accelerate launch`
    (or alone): each process labels its share, then the main process merges and writes `output` atomically.

    Args:
        path: an image file or a directory of images.
        output: the COCO JSON file to write.
        make_generator: builds the generator for this process (the model goes on `state.device` unless told
            otherwise); called only after the inputs are checked.
        settings: what determines the masks, stored with each result (see `ImageLabeller`).
        work_dir: per-image results; `<output>.parts` if `None`. Kept afterwards, so that a later run with more
            images only labels the new ones.
        progress: show a progress bar (main process only).
        cpu: the processes run on CPUs: accelerate then joins them with the gloo backend (it only does so when told).

    Returns:
        The COCO dictionary in the main process, `None` in the others.
    """
    root, names = find_images(path)
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"output must be a file path, got the directory {os.fspath(output)!r}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    state = PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)
    work_dir = work_dir or output.with_name(output.name + ".parts")
    labeller = ImageLabeller(make_generator(state), work_dir, settings, state.process_index)
    # Every process splits the full, sorted list the same way and skips its own finished images: a list of pending
    # images could differ between processes that look at the directory at different times.
    with state.split_between_processes(names) as mine:
        labeller.label_all(root, mine, progress=progress and state.is_local_main_process)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    coco = labeller.merge(root, names)
    write_json_atomic(output, coco)
    return coco
