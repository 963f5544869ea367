"""Batch labelling: everything mode over many images, on one machine or a cluster.

- `sources`: where the images come from (a folder, or a Hugging Face dataset, streamed).
- `results`: `label_image`, the per-image step every engine runs; per-image JSON results and the COCO merge.
- `local`: the single-process / `accelerate launch` engine (`label_images`), into one COCO file.
- `parquet` and `ray_engine` (the `ray` extra, imported only when used): `label_with_ray`, the Ray Data engine, into
  Parquet shards (`ParquetLabels`: COCO export, Hub upload).
"""

from .local import BARRIER_TIMEOUT, label_images
from .results import CATEGORY, ImageLabeller, coco_annotation, coco_dataset, label_image, write_json_atomic
from .sources import IMAGE_SUFFIXES, DatasetSource, FolderSource, SourceImage, find_images, open_source

__all__ = [
    "BARRIER_TIMEOUT",
    "CATEGORY",
    "IMAGE_SUFFIXES",
    "DatasetSource",
    "FolderSource",
    "ImageLabeller",
    "SourceImage",
    "coco_annotation",
    "coco_dataset",
    "find_images",
    "label_image",
    "label_images",
    "open_source",
    "write_json_atomic",
]
