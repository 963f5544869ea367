"""Where the images to label come from: a folder (or one file), or a Hugging Face `datasets` dataset (a local
`save_to_disk` directory, a directory of Parquet files, or a Hub id), always read as a stream, never loaded whole.

Every source yields `SourceImage`s in one fixed order; `SourceImage.index` is the position in it. An image is known by
its `name`: the path relative to the folder, or the dataset row's index (as text).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image

from ..loading import decode_image, open_image

IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
DEFAULT_SPLIT, DEFAULT_IMAGE_COLUMN = "train", "image"


@dataclass(frozen=True)
class SourceImage:
    """One image of a source, not decoded yet.

    Attributes:
        index: position in the source's order (sorted file names, dataset rows).
        name: the image's key: path relative to the folder (POSIX), or the dataset row index as text.
        path: the file, for a folder source.
        data: the encoded image bytes, for a dataset source.
    """

    index: int
    name: str
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        """The encoded image bytes (a missing file reads as `b""`, which then fails to decode with its error)."""
        if self.data is not None:
            return self.data
        try:
            return self.path.read_bytes()
        except OSError:
            return b""

    def fingerprint(self) -> dict[str, Any]:
        """Size and SHA-256 of the encoded image: a stored result is reused only for the same bytes (a size + mtime
        check misses a file replaced with `cp -p` or `rsync -t`)."""
        if self.data is not None:
            return {"size": len(self.data), "sha256": hashlib.sha256(self.data).hexdigest()}
        digest = hashlib.sha256()
        with open(self.path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        return {"size": self.path.stat().st_size, "sha256": digest.hexdigest()}

    def open(self) -> PIL.Image.Image:
        """The decoded RGB image (`open_image`'s checks); `ValueError` naming the image when it cannot be read."""
        if self.path is not None:
            return open_image(self.path)
        return decode_image(self.data, self.name)


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


class FolderSource:
    """The image files under a directory (recursively, sorted by name), or one image file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.root, self.names = find_images(path)
        self.description = f"folder {os.fspath(path)!r}"

    def images(self, start: int = 0, step: int = 1) -> Iterator[SourceImage]:
        """Every `step`-th image from position `start` (a process's share)."""
        for index in range(start, len(self.names), step):
            name = self.names[index]
            yield SourceImage(index, name, path=self.root / name)


class DatasetSource:
    """The image column of a Hugging Face dataset, streamed (`datasets.IterableDataset`): a `save_to_disk` directory,
    a directory of Parquet files, or a Hub id (`split`). Images are taken as stored (bytes), decoded when labelled.

    Args:
        path: the directory or Hub id.
        split: the split to read (Hub ids and `load_dataset`-style directories; a `save_to_disk` directory of a
            `DatasetDict` too).
        image_column: the column holding the images (a `datasets.Image` feature, or `{"bytes": ...}` structs).
    """

    def __init__(self, path: str, split: str = DEFAULT_SPLIT, image_column: str = DEFAULT_IMAGE_COLUMN) -> None:
        self.path, self.split, self.image_column = path, split, image_column
        self.description = f"dataset {path!r} (split {split!r}, column {image_column!r})"
        self._stream()  # fails now, with the reason, rather than inside a worker

    def _stream(self) -> Any:
        import datasets

        local = Path(self.path)
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(self.path)
            if isinstance(loaded, datasets.DatasetDict):
                if self.split not in loaded:
                    raise ValueError(f"split must be one of {sorted(loaded)} for {self.path!r}, got {self.split!r}.")
                loaded = loaded[self.split]
            stream = loaded.to_iterable_dataset()
        else:
            kwargs = {"data_dir": self.path} if local.is_dir() else {}
            name = "parquet" if local.is_dir() else self.path
            try:
                stream = datasets.load_dataset(name, split=self.split, streaming=True, **kwargs)
            except (ValueError, FileNotFoundError, ConnectionError) as error:
                raise ValueError(f"cannot read {self.description}: {error}") from error
        if self.image_column not in (stream.column_names or [self.image_column]):
            raise ValueError(
                f"image_column must be a column of {self.path!r} ({', '.join(stream.column_names)}), got "
                f"{self.image_column!r}."
            )
        if isinstance((stream.features or {}).get(self.image_column), datasets.Image):
            stream = stream.cast_column(self.image_column, datasets.Image(decode=False))  # decoded by the labeller
        return stream.select_columns([self.image_column])

    def images(self, start: int = 0, step: int = 1) -> Iterator[SourceImage]:
        """Every `step`-th row's image from row `start`, in the dataset's order."""
        for index, row in enumerate(self._stream()):
            if index % step == start:
                yield SourceImage(index, str(index), data=_image_bytes(row[self.image_column]))


def _image_bytes(value: Any) -> bytes:
    """The encoded image of a dataset cell: bytes, or a `datasets.Image` struct holding bytes or a local path
    (anything else reads as `b""`, which fails to decode with its error)."""
    if isinstance(value, dict):
        if value.get("bytes") is None and value.get("path") and Path(value["path"]).is_file():
            return Path(value["path"]).read_bytes()
        value = value.get("bytes")
    return value if isinstance(value, bytes) else b""


def open_source(
    path: str | os.PathLike, split: str | None = None, image_column: str | None = None
) -> FolderSource | DatasetSource:
    """The source named by `path`: a dataset (a `save_to_disk` directory, a directory holding Parquet files, or a Hub
    id `org/name` that is not a local path), else an image folder or file.

    `split` and `image_column` apply to datasets only (defaults `"train"`, `"image"`); given for a folder, they are an
    error rather than ignored.
    """
    local = Path(path)
    is_dataset = (local / "state.json").is_file() or (local / "dataset_dict.json").is_file()
    is_dataset = is_dataset or (local.is_dir() and next(local.rglob("*.parquet"), None) is not None)
    text = os.fspath(path)
    hub_id = not local.exists() and not text.startswith(("/", ".", "~")) and text.count("/") == 1
    if is_dataset or hub_id:
        return DatasetSource(text, split or DEFAULT_SPLIT, image_column or DEFAULT_IMAGE_COLUMN)
    if split is not None or image_column is not None:
        raise ValueError(f"split / image_column apply to datasets; {text!r} is an image file or folder.")
    return FolderSource(path)
