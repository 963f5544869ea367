"""Labels as Parquet shards, the output of every engine (single process, accelerate, Ray Data): one row per image
with its everything-mode records (the SA-1B fields per mask), in `OUT/data/*.parquet` beside `OUT/labelling.json` (the
settings they were made with). The directory is a Hugging Face dataset: `datasets.load_dataset("parquet",
data_dir="OUT/data")`, or `push_to_hub` it; `export_coco` writes one COCO file from it.

Every engine applies the same resume rule (`pending`: an image whose name and bytes already have a row is skipped),
writes through the same `ParquetLabels.write` and ends with the same `ParquetLabels.finish`.

Columns: `image_id` (position in the source), `file_name` (the image's key: path in the folder, or dataset row),
`height`, `width`, `sha256` (of the encoded image), `error` (why it could not be read, else null) and `masks`, a list of
`{segmentation: {size, counts} (COCO RLE), area, bbox (XYWH), predicted_iou, stability_score, point_coords,
crop_box (XYWH)}`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .results import coco_dataset, write_json_atomic
from .sources import SourceImage

MASK_TYPE = pa.struct(
    [
        ("segmentation", pa.struct([("size", pa.list_(pa.int64())), ("counts", pa.string())])),
        ("area", pa.int64()),
        ("bbox", pa.list_(pa.int64())),
        ("predicted_iou", pa.float64()),
        ("stability_score", pa.float64()),
        ("point_coords", pa.list_(pa.list_(pa.float64()))),
        ("crop_box", pa.list_(pa.int64())),
    ]
)
SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("file_name", pa.string()),
        ("height", pa.int64()),
        ("width", pa.int64()),
        ("sha256", pa.string()),
        ("error", pa.string()),
        ("masks", pa.list_(MASK_TYPE)),
    ]
)
KEYS = ["file_name", "sha256"]
ROWS_PER_SHARD = 1000  # images per Parquet shard (the last one of a run, or of an interrupted one, may have fewer)


def text(name: str) -> str:
    """`name` as valid UTF-8 for a Parquet string: the undecodable bytes of a file name that is not UTF-8 (kept by
    Python as surrogates) become `\\xNN` escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def pending(images: Iterable[SourceImage], done: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The resume rule of every engine: the images of `images` that have no row yet, or whose bytes changed since.

    Args:
        images: the images to label (a process's or a read task's share of a source).
        done: `file_name -> sha256` of the rows already written (`ParquetLabels.done`).

    Yields:
        `{"image_id", "file_name", "sha256", "data" (the encoded image), "shown_as" (how errors name it: its path, or
        the dataset row)}`.
    """
    for image in images:
        data, name = image.read(), text(image.name)
        sha256 = hashlib.sha256(data).hexdigest()
        if done.get(name) != sha256:
            shown_as = text(os.fspath(image.path)) if image.path is not None else name
            yield {"image_id": image.index, "file_name": name, "sha256": sha256, "data": data, "shown_as": shown_as}


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Writes `table` to a temporary file beside `path` (not a `*.parquet` name, so never read as a shard), then renames
    it: `path` is never half-written."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        pq.write_table(table, temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (`image_id`, `file_name`, `sha256` and `label_image`'s `height`, `width`, `masks` or `error`) as a
    table of `SCHEMA`."""
    columns = {name: [row.get(name) for row in rows] for name in SCHEMA.names}
    columns["file_name"] = [text(name) for name in columns["file_name"]]
    return pa.table(columns, schema=SCHEMA)


class ParquetLabels:
    """The Parquet label directory `out` (see the module): the settings check, what is done, clean-up after a run,
    COCO export and upload.

    Args:
        out: the directory (created by `start`).
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.data_dir = self.out / "data"
        self.manifest = self.out / "labelling.json"
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"out must be a directory for Parquet shards, got the file {os.fspath(self.out)!r}.")

    def settings(self) -> dict | None:
        """The settings the shards were made with, or `None` before the first run."""
        return json.loads(self.manifest.read_text())["settings"] if self.manifest.is_file() else None

    def start(self, settings: dict, source: str) -> None:
        """Checks that `out` holds labels made with `settings` (or none yet) and records them: shards made otherwise
        would mix in silently. Several processes may call it at once with the same settings."""
        settings = json.loads(json.dumps(settings))
        stored = self.settings()
        if stored is not None and stored != settings:
            changed = sorted(key for key in {*stored, *settings} if stored.get(key) != settings.get(key))
            raise ValueError(
                f"{os.fspath(self.out)!r} holds labels made with other settings ({', '.join(changed)}); label into "
                "another directory."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.manifest, {"settings": settings, "source": source})

    def shards(self) -> list[Path]:
        """The readable shards, oldest first. A shard that cannot be read (a run killed while writing it) is renamed
        to `*.parquet.broken`, with a warning: its images are labelled again."""
        readable = []
        for shard in sorted(self.data_dir.glob("*.parquet"), key=lambda path: (path.stat().st_mtime_ns, path.name)):
            try:
                pq.read_metadata(shard)
            except (OSError, pa.ArrowException) as error:
                message = f"unreadable shard {os.fspath(shard)!r} set aside, its images are redone: {error}"
                warnings.warn(message, stacklevel=2)
                with contextlib.suppress(FileNotFoundError):  # another process set it aside first
                    shard.rename(shard.with_name(shard.name + ".broken"))
            else:
                readable.append(shard)
        return readable

    def write(self, table: pa.Table, prefix: str = "shard") -> Path:
        """Writes `table` (`SCHEMA`'s columns, e.g. from `rows_table`) as a new shard, atomically (a temporary file
        renamed): a run killed meanwhile leaves no half-written shard. Returns its path."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / f"{prefix}-{time.time_ns()}-{secrets.token_hex(4)}.parquet"
        _write_atomic(table.select(SCHEMA.names).cast(SCHEMA), path)
        return path

    def done(self) -> dict[str, str]:
        """`file_name -> sha256` of every image with a row (the newest row where a changed image has two)."""
        done = {}
        for shard in self.shards():
            done.update(zip(*pq.read_table(shard, columns=KEYS).to_pydict().values(), strict=True))
        return done

    def drop_replaced_rows(self) -> int:
        """Keeps one row per image, the newest: an image that changed since it was labelled gets a new row in a newer
        shard, and its old row is removed from the older one (rewritten atomically). Returns how many rows went."""
        shards = self.shards()
        newest = {}
        for position, shard in enumerate(shards):
            newest.update(dict.fromkeys(pq.read_table(shard, columns=["file_name"])["file_name"].to_pylist(), position))
        dropped = 0
        for position, shard in enumerate(shards):
            table = pq.read_table(shard)
            keep = [newest[name] == position for name in table["file_name"].to_pylist()]
            if all(keep):
                continue
            dropped += keep.count(False)
            table = table.filter(pa.array(keep))
            if table.num_rows:
                _write_atomic(table, shard)
            else:
                shard.unlink()
        return dropped

    def finish(self, before: dict[str, str]) -> dict[str, Any]:
        """Ends a run (in one process): drops the rows that newer ones replaced, and sums it up.

        Args:
            before: `done()` when the run started.

        Returns:
            `{"labelled": images labelled by the run, "images": rows in out, "failed": [{"file_name", "error"}, ...]}`.
        """
        self.drop_replaced_rows()
        after = self.done()
        labelled = sum(before.get(key) != value for key, value in after.items())
        return {"labelled": labelled, "images": len(after), "failed": self.failed()}

    def results(self) -> Iterator[dict[str, Any]]:
        """Every row as a `label_image`-style result with its `image_id`, `file_name` and `sha256`, in source order
        (`image_id`, then `file_name`)."""
        shards = self.shards()
        if not shards:
            return
        table = pq.read_table(shards, schema=SCHEMA).sort_by([("image_id", "ascending"), ("file_name", "ascending")])
        for batch in table.to_batches():
            yield from batch.to_pylist()

    def failed(self) -> list[dict[str, Any]]:
        """`{"file_name", "error"}` of every image that could not be read, in source order."""
        shards = self.shards()
        if not shards:
            return []
        table = pq.read_table(shards, columns=["image_id", "file_name", "error"])
        table = table.filter(pc.is_valid(table["error"])).sort_by(
            [("image_id", "ascending"), ("file_name", "ascending")]
        )
        return table.select(["file_name", "error"]).to_pylist()

    def export_coco(self, path: str | os.PathLike) -> dict[str, Any]:
        """Writes (atomically) and returns one COCO file of every image in the shards (as `coco_dataset`)."""
        coco = coco_dataset(self.results(), self.settings())
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, coco)
        return coco

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None) -> Any:
        """Uploads the shards and `labelling.json` as the Hub dataset `repo_id` (created if missing); returns the
        commit info. `datasets.load_dataset(repo_id)` then reads the shards (the Hub finds `data/*.parquet`)."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=self.out,
            allow_patterns=["data/*.parquet", self.manifest.name],
            commit_message="sam_hf everything-mode labels",
        )
