"""Peak memory of Ray Data labelling over a large generated dataset, streamed: does it stay bounded?

    python -m benchmarks.labelling_memory [--images 10000] [--size 64] [--concurrency 2] [--points-per-side 4]

Writes `--images` generated scenes as a Hugging Face dataset (`save_to_disk`, PNG bytes), labels it with
`label_with_ray` (a local Ray started here, two actors holding the bundled model), and samples every 0.5 s the resident
memory (RSS) of this process and of every process it started (Ray's GCS, raylet, workers and actors). It reports the
peak of the sum, the largest single process, and the sum at each tenth of the run: memory that stays flat while the
image count grows is bounded by the pipeline, not by the dataset. Results: benchmarks/results/labelling_memory.md/.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import datasets
import PIL.Image
import psutil

from benchmarks.benchmark_models import REPO_ROOT
from sam_hf.data import generate_scene
from sam_hf.everything import EverythingSettings, SamAutomaticMaskGenerator
from sam_hf.labelling import DatasetSource
from sam_hf.labelling.ray_engine import label_with_ray
from sam_hf.loading import load_sam

GIB = 1 << 30


def scenes(count: int, size: int) -> Any:
    """Rows `{"image": {"bytes": PNG}}` of generated scenes, made one at a time."""
    for seed in range(count):
        buffer = io.BytesIO()
        PIL.Image.fromarray(generate_scene(seed, size).image).save(buffer, format="PNG")
        yield {"image": {"bytes": buffer.getvalue(), "path": None}}


class Generator:
    """The bundled model's generator with these settings, on an actor's device."""

    def __init__(self, points_per_side: int) -> None:
        self.points_per_side = points_per_side

    def __call__(self, device: Any) -> SamAutomaticMaskGenerator:
        model, processor = load_sam(None, device)
        settings = EverythingSettings(
            points_per_side=self.points_per_side,
            pred_iou_thresh=0.6,
            stability_score_thresh=0.8,
            output_mode="coco_rle",
        )
        return SamAutomaticMaskGenerator(model, processor=processor, settings=settings)


class Sampler(threading.Thread):
    """Samples the RSS of this process and all its descendants until stopped."""

    def __init__(self, out: Path, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.out, self.interval, self.samples, self.stopped = out, interval, [], threading.Event()

    def run(self) -> None:
        """Samples `(seconds, total RSS, largest process RSS, Parquet rows written so far)`."""
        me, start = psutil.Process(), time.perf_counter()
        while not self.stopped.wait(self.interval):
            sizes = []
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # exited meanwhile
                    sizes.append(process.memory_info().rss)
            self.samples.append((time.perf_counter() - start, sum(sizes), max(sizes), self._written()))

    def _written(self) -> int:
        import pyarrow.parquet as pq

        rows = 0
        for shard in (self.out / "data").glob("*.parquet"):
            with contextlib.suppress(OSError, ValueError):  # being written
                rows += pq.read_metadata(shard).num_rows
        return rows


def main(argv: list[str] | None = None) -> None:
    """Builds the dataset, labels it while sampling memory, writes the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=64, help="scene side in pixels")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--points-per-side", type=int, default=4)
    parser.add_argument("--rows-per-shard", type=int, default=1000)
    parser.add_argument("--load", default="quiet", help="what else ran on the machine, for the header")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "labelling_memory.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        features = datasets.Features({"image": datasets.Image()})
        dataset = datasets.Dataset.from_generator(
            scenes, features=features, gen_kwargs={"count": args.images, "size": args.size}
        )
        dataset.save_to_disk(work / "scenes")
        del dataset
        sampler = Sampler(work / "labels")
        sampler.start()
        start = time.perf_counter()
        summary = label_with_ray(
            DatasetSource(str(work / "scenes")),
            work / "labels",
            Generator(args.points_per_side),
            {"points_per_side": args.points_per_side},
            concurrency=args.concurrency,
            rows_per_shard=args.rows_per_shard,
            progress=False,
        )
        wall = time.perf_counter() - start
        sampler.stopped.set()
        sampler.join()
    samples = sampler.samples
    peak_total, peak_process = max(s[1] for s in samples), max(s[2] for s in samples)
    tenths = []
    for tenth in range(1, 11):
        upto = [s for s in samples if s[0] <= wall * tenth / 10]
        tenths.append(
            {"at_s": wall * tenth / 10, "rows_written": upto[-1][3], "peak_total_gib": max(s[1] for s in upto) / GIB}
        )
    lines = [
        f"Ray Data labelling of {args.images} generated {args.size}x{args.size} scenes (a streamed `save_to_disk` "
        f"dataset), bundled model, points_per_side {args.points_per_side}, {args.concurrency} actors, "
        f"{args.rows_per_shard} rows per shard; load: {args.load}.",
        "",
        f"Labelled {summary['labelled']} images in {wall:.0f} s ({summary['labelled'] / wall:.1f} images/s). Peak RSS, "
        f"all processes together (driver + Ray): {peak_total / GIB:.2f} GiB; largest single process: "
        f"{peak_process / GIB:.2f} GiB.",
        "",
        "| time s | rows written | peak RSS so far, all processes GiB |",
        "|---|---|---|",
        *(f"| {t['at_s']:.0f} | {t['rows_written']} | {t['peak_total_gib']:.2f} |" for t in tenths),
    ]
    text = "\n".join(lines)
    print(text)
    payload = {
        "settings": vars(args) | {"json": str(args.json)},
        "summary": {"labelled": summary["labelled"], "images": summary["images"], "failed": len(summary["failed"])},
        "wall_s": wall,
        "peak_total_rss_bytes": peak_total,
        "peak_process_rss_bytes": peak_process,
        "tenths": tenths,
        "samples": samples,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload) + "\n")
    args.json.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
