"""The single-process and accelerate engine: everything mode over a source into one COCO file, in every process that
`accelerate launch` started (or alone).

Each image's result is written to its own JSON file in a work directory as soon as it is done (atomically), so an
interrupted run skips the images already done when started again, and several processes can share the images and the
directory; the main process then merges everything into one COCO file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from accelerate import PartialState

from .results import ImageLabeller, write_json_atomic
from .sources import DatasetSource, FolderSource

# Processes wait for the slowest one at the end: long enough for very uneven shards of a large data set.
BARRIER_TIMEOUT = timedelta(hours=48)


def label_images(
    source: str | os.PathLike | FolderSource | DatasetSource,
    output: str | os.PathLike,
    make_generator: Callable[[PartialState], Any],
    settings: dict,
    work_dir: str | os.PathLike | None = None,
    progress: bool = True,
    cpu: bool = False,
) -> dict[str, Any] | None:
    """Labels an image, a directory of images or a dataset into one COCO file, in every process started by
    `accelerate launch` (or alone): each process labels every n-th image, then the main process merges and writes
    `output` atomically.

    Args:
        source: an image file or directory, or a source from `open_source` (e.g. a `DatasetSource`).
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
    if not isinstance(source, (FolderSource, DatasetSource)):
        source = FolderSource(source)
    output = Path(output)
    if output.is_dir():
        raise ValueError(f"output must be a file path, got the directory {os.fspath(output)!r}.")
    output.parent.mkdir(parents=True, exist_ok=True)
    state = PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)
    work_dir = work_dir or output.with_name(output.name + ".parts")
    labeller = ImageLabeller(make_generator(state), work_dir, settings, state.process_index)
    # Every process takes every n-th image of the same, fixed order and skips its own finished images: a list of
    # pending images could differ between processes that look at the directory at different times.
    mine = source.images(state.process_index, state.num_processes)
    labeller.label_all(mine, progress=progress and state.is_local_main_process)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    coco = labeller.merge(source.images())
    write_json_atomic(output, coco)
    return coco
