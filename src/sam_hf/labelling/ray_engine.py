"""The Ray Data engine: everything mode over a source on a Ray cluster (or a local Ray), into Parquet shards.

    read (Ray tasks: file / dataset bytes, SHA-256, skip what is done) -> decode (Ray tasks) ->
    label (an actor pool, one model per actor: one per GPU, or per CPU slot) -> write (`ParquetLabels.write`, streamed)

Ray Data streams the images through with backpressure, so memory stays bounded however many there are; an actor that
dies is restarted and its batch retried by Ray (a batch's rows reach the output only once it has finished), so every
image is labelled exactly once. A re-run skips the images already in the shards (same name, same bytes), by the rule
and through the writer the single-process and accelerate engine use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
import torch

from .parquet import ROWS_PER_SHARD, ParquetLabels, pending, rows_table
from .results import decode, label_image
from .sources import DatasetSource, FolderSource
from .sources import open_source as _open_source

READ_BLOCK_ROWS = 16  # images per block leaving a read task: small blocks keep memory low and actors busy
READ_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("file_name", pa.string()),
        ("sha256", pa.string()),
        ("data", pa.binary()),
        ("shown_as", pa.string()),  # how errors name the image: its path, or the dataset row
    ]
)


class SourceDatasource(ray.data.Datasource):
    """A `FolderSource` / `DatasetSource` as a Ray datasource: read tasks yield `image_id`, `file_name`, `sha256` and
    the encoded `data` of the images not done yet.

    Args:
        source: the images.
        done: `file_name -> sha256` of the images already labelled (skipped when their bytes are unchanged).
    """

    def __init__(self, source: FolderSource | DatasetSource, done: dict[str, str]) -> None:
        super().__init__()
        self.source, self.done = source, done

    def estimate_inmemory_data_size(self) -> int | None:
        """Unknown before reading (images are streamed)."""
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, **kwargs: Any) -> list:
        """One read task per `parallelism`-th share of a folder's files; one for a dataset (one ordered stream)."""
        count = max(1, min(parallelism, len(self.source.names))) if isinstance(self.source, FolderSource) else 1
        metadata = ray.data.block.BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
        return [
            ray.data.ReadTask(lambda start=start: self._read(start, count), metadata, per_task_row_limit=None)
            for start in range(count)
        ]

    def _read(self, start: int, step: int) -> Iterator[pa.Table]:
        rows = []
        for row in pending(self.source.images(start, step), self.done):
            rows.append(row)
            if len(rows) == READ_BLOCK_ROWS:
                yield pa.Table.from_pylist(rows, schema=READ_SCHEMA)
                rows = []
        if rows:
            yield pa.Table.from_pylist(rows, schema=READ_SCHEMA)


def decode_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray task: encoded images -> `pixels` (`(H, W, 3)` uint8; `(0, 0, 3)` for an unreadable one) and `error` (`""`
    when readable: a column of nulls may reach the actors as NaN floats)."""
    pixels, errors = [], []
    for name, data in zip(batch.pop("shown_as"), batch.pop("data"), strict=True):
        image = decode(bytes(data), str(name))
        readable = not isinstance(image, ValueError)
        pixels.append(image if readable else np.zeros((0, 0, 3), dtype=np.uint8))
        errors.append("" if readable else str(image))
    batch["pixels"] = np.empty(len(pixels), dtype=object)  # one image per cell, whatever the shapes
    for index, image in enumerate(pixels):
        batch["pixels"][index] = image
    batch["error"] = np.array(errors, dtype=object)
    return batch


class LabelSink(ray.data.Datasink):
    """Ray Data's end of the pipeline: writes the rows through `ParquetLabels.write`, `rows_per_shard` images per
    shard, on the driver's machine (where `out` is, as for the other engines).

    Args:
        out: the label directory.
        rows_per_shard: images per shard (the last of a run may have fewer).
    """

    def __init__(self, out: str | os.PathLike, rows_per_shard: int) -> None:
        self.labels, self.rows_per_shard = ParquetLabels(out), rows_per_shard

    @property
    def min_rows_per_write(self) -> int:
        """Ray gathers this many rows for each `write`."""
        return self.rows_per_shard

    @property
    def supports_distributed_writes(self) -> bool:
        """Writes run on the driver's node: `out` need not be shared storage."""
        return False

    def write(self, blocks: Iterator[pa.Table], ctx: Any) -> None:
        """Writes the rows of `blocks` as one shard."""
        tables = [block for block in blocks if block.num_rows]
        if tables:
            self.labels.write(pa.concat_tables(tables), prefix="ray")


class ImageLabellerActor:
    """Ray actor: holds one generator (`make_generator(device)`, on this actor's GPU if it has one) and labels batches
    of decoded images with `label_image`, returning Parquet rows."""

    def __init__(self, make_generator: Callable[[torch.device], Any]) -> None:
        device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")  # Ray shows an actor only its own GPUs
        self.generator = make_generator(device)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Labels every image of the batch (an unreadable one gets its error)."""
        rows = []
        for index, image_id in enumerate(batch["image_id"]):
            error = batch["error"][index]
            image = ValueError(error) if isinstance(error, str) and error else np.asarray(batch["pixels"][index])
            row = {"image_id": int(image_id), "file_name": batch["file_name"][index], "sha256": batch["sha256"][index]}
            rows.append(row | label_image(self.generator, image))
        return rows_table(rows)


def label_with_ray(
    source: str | os.PathLike | FolderSource | DatasetSource,
    out: str | os.PathLike,
    make_generator: Callable[[torch.device], Any],
    settings: dict,
    *,
    address: str | None = None,
    concurrency: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    decode_cpus: float = 0.5,
    batch_size: int = 1,
    rows_per_shard: int = ROWS_PER_SHARD,
    local_cpus: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Labels `source` with Ray Data into the Parquet directory `out` (see `sam_hf.labelling.parquet`); resumable.

    Uses the Ray this process is already connected to; else connects to `address` (an existing cluster, e.g.
    `"127.0.0.1:6379"`, `"ray://head:10001"` or `"auto"`), or to `RAY_ADDRESS` when that is set (as in a Ray job), and
    disconnects at the end, leaving the cluster running; else starts a local Ray of its own with `local_cpus` logical
    CPUs (default: the machine's, at least enough for the actors plus a reading and a writing task) and stops it at the
    end (never joining another one found on the machine).

    Args:
        source: an image file or directory, or a source from `open_source` (e.g. a `DatasetSource`).
        out: the label directory.
        make_generator: builds an actor's generator on a device (`output_mode="coco_rle"`); pickled to the actors, so
            it must be importable there (a module-level function or a closure over picklable values).
        settings: what determines the masks; `out` must hold labels of the same settings (or none).
        concurrency: actors, each holding one model.
        num_cpus / num_gpus: Ray resources per actor (`num_gpus=1`: one model per GPU).
        decode_cpus: Ray CPUs per decoding task (less than an actor's, so decoding stays in tasks apart from the
            actors and runs ahead of them).
        batch_size: images per actor call.
        rows_per_shard: images per Parquet shard.
        local_cpus: logical CPUs of a local Ray started here (an error with a cluster to connect to).
        progress: Ray Data's progress bars.

    Returns:
        `{"labelled": images labelled now, "images": rows in out, "failed": [{"file_name", "error"}, ...]}`.
    """
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}.")
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("decode_cpus", decode_cpus)):
        if not isinstance(value, (int, float)) or not 0 <= value < 1e6:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if not isinstance(source, (FolderSource, DatasetSource)):
        source = _open_source(source)
    labels = ParquetLabels(out)
    labels.start(settings, source.description)
    before = labels.done()
    cpus = local_cpus or max(os.cpu_count() or 1, int(np.ceil(concurrency * num_cpus + 2 * decode_cpus)))
    started = _connect(address, cpus, local_cpus is not None)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        # Reading and decoding share small CPU slots (fused into one task); the actors hold whole ones.
        dataset = ray.data.read_datasource(SourceDatasource(source, before), num_cpus=decode_cpus)
        dataset = dataset.map_batches(decode_batch, batch_size=READ_BLOCK_ROWS, num_cpus=decode_cpus)
        dataset = dataset.map_batches(
            ImageLabellerActor,
            fn_constructor_args=(make_generator,),
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            batch_size=batch_size,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
        )
        dataset.write_datasink(LabelSink(out, rows_per_shard), ray_remote_args={"num_cpus": decode_cpus})
    finally:
        if started:
            ray.shutdown()  # stops a Ray started here; from a cluster, it only disconnects
    return labels.finish(before)


def _connect(address: str | None, local_cpus: int, local_cpus_given: bool) -> bool:
    """Connects this process to Ray as `label_with_ray` says, unless it is already; returns whether it called
    `ray.init` (then `ray.shutdown` undoes it)."""
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address is not None and address != current:
            raise ValueError(
                f"address is {address!r}, but this process is already connected to the Ray cluster at {current!r}; "
                "call ray.shutdown() first, or pass no address to use that one."
            )
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None and local_cpus_given:
        raise ValueError(f"local_cpus applies to a local Ray started here, not to the cluster at {address!r}.")
    if address is None:  # "local": a Ray of our own, even when another one runs on this machine
        ray.init(address="local", num_cpus=local_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return True
