"""The single-process and accelerate engine: everything mode over a source into Parquet shards, in every process that
`accelerate launch` started (or alone).

Every process labels every n-th image of the same, fixed order, skips what already has a row (`parquet.pending`), and
writes its rows as shards of its own (every `rows_per_shard` images, and whatever is done when it stops, an interruption
included), so a run started again labels only the rest. After all processes finished, the main process tidies up and
sums up (`ParquetLabels.finish`), as the Ray engine does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from .parquet import ROWS_PER_SHARD, ParquetLabels, pending, rows_table
from .results import decode, label_image
from .sources import DatasetSource, FolderSource, open_source

# Processes wait for the slowest one at the end: long enough for very uneven shares of a large data set.
BARRIER_TIMEOUT = timedelta(hours=48)


def label_images(
    source: str | os.PathLike | FolderSource | DatasetSource,
    out: str | os.PathLike,
    make_generator: Callable[[torch.device], Any],
    settings: dict,
    *,
    rows_per_shard: int = ROWS_PER_SHARD,
    progress: bool = True,
    cpu: bool = False,
) -> dict[str, Any] | None:
    """Labels an image, a directory of images or a dataset into the Parquet directory `out` (see
    `sam_hf.labelling.parquet`), in every process started by `accelerate launch` (or alone); resumable.

    Args:
        source: an image file or directory, or a source from `open_source` (e.g. a `DatasetSource`).
        out: the label directory; it must hold labels of the same settings, or none.
        make_generator: builds this process's generator on its device (accelerate's `PartialState().device`: its
            GPU, or the CPU), `output_mode="coco_rle"`; called once the first image of this process needs labelling
            (a re-run with nothing left to do loads no model).
        settings: what determines the masks (model, dtype, generator parameters), recorded in `out`.
        rows_per_shard: images per shard a process writes (fewer when it stops).
        progress: show a progress bar (local main process only).
        cpu: the processes run on CPUs: accelerate then joins them with the gloo backend (it only does so when told).

    Returns:
        In the main process `{"labelled": images labelled now, "images": rows in out, "failed": [{"file_name",
        "error"}, ...]}`; `None` in the others.
    """
    if not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be an integer >= 1, got {rows_per_shard!r}.")
    if not isinstance(source, (FolderSource, DatasetSource)):
        source = open_source(source)
    labels = ParquetLabels(out)
    labels.start(settings, source.description)  # every process: a refusal stops all of them, before any waits
    state = PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)
    before = labels.done() if state.is_main_process else None
    state.wait_for_everyone()  # the main process counted what was there before any process writes
    generator = None
    done = before if before is not None else labels.done()
    mine = source.images(state.process_index, state.num_processes)
    bar = tqdm(mine, desc="images", unit="image", disable=not (progress and state.is_local_main_process))
    prefix, rows = f"process{state.process_index}", []
    try:
        for row in pending(bar, done):
            if generator is None:
                generator = make_generator(state.device)
            row |= label_image(generator, decode(row.pop("data"), row.pop("shown_as")))
            rows.append(row)
            if len(rows) == rows_per_shard:
                labels.write(rows_table(rows), prefix)
                rows = []
    finally:  # an interruption keeps what is done
        if rows:
            labels.write(rows_table(rows), prefix)
    state.wait_for_everyone()
    return labels.finish(before) if state.is_main_process else None
