"""Batch labelling: everything mode over many images, on one machine or a cluster.

- `sources`: where the images come from (a folder, or a Hugging Face dataset, streamed).
- `results`: `decode` and `label_image`, the per-image steps every engine runs; the COCO form of the results.
- `parquet`: the output of every engine, Parquet shards (`ParquetLabels`: the resume rule, the one writer, COCO export,
  Hub upload).
- `local`: the single-process / `accelerate launch` engine (`label_images`).
- `ray_engine` (the `ray` extra, imported only when used): `label_with_ray`, the Ray Data engine.
"""

from .local import BARRIER_TIMEOUT, label_images
from .parquet import ParquetLabels
from .results import CATEGORY, coco_annotation, coco_dataset, decode, label_image, write_json_atomic
from .sources import IMAGE_SUFFIXES, DatasetSource, FolderSource, SourceImage, find_images, open_source

__all__ = [
    "BARRIER_TIMEOUT",
    "CATEGORY",
    "IMAGE_SUFFIXES",
    "DatasetSource",
    "FolderSource",
    "ParquetLabels",
    "SourceImage",
    "coco_annotation",
    "coco_dataset",
    "decode",
    "find_images",
    "label_image",
    "label_images",
    "open_source",
    "write_json_atomic",
]
