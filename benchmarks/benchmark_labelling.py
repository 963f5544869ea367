"""Batch labelling throughput of the three engines on the same images and model, and whether their labels agree.

    python -m benchmarks.benchmark_labelling [--images 200] [--size 128] [--points-per-side 8] [--load "..."]

Labels `--images` generated scenes with the bundled model, once per engine, one after the other in this one run, each
as a user runs it (a fresh process, model loading and any start-up included in the wall time):

- single: `sam-hf everything DIR --out single.json` (one process, torch's default threads);
- accelerate: `accelerate launch --multi_gpu --num_processes 2 -m sam_hf everything ...` (two CPU processes, one
  thread each);
- ray: `sam-hf everything DIR --engine ray --concurrency 2 --out DIR --coco ray.json` (a local Ray started and stopped
  by the command, two actors with one CPU each, decoding in Ray tasks).

Then it compares the three COCO files annotation by annotation against the single-process one: same images, same
number of masks, identical RLEs, largest score / stability / box differences. Results: benchmarks/results/labelling.md
and .json. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from benchmarks.benchmark_models import REPO_ROOT
from sam_hf.data import generate_scene
from sam_hf.everything import decode_segmentation
from sam_hf.geometry import mask_iou

SEED = 5000  # scenes SEED.. (apart from the training and held-out seeds of the bundled model)


def engine_commands(images: Path, work: Path, flags: list[str]) -> dict[str, tuple[list[str], dict[str, str], Path]]:
    """`engine -> (command, extra environment, COCO file it writes)`."""
    cli = [sys.executable, "-m", "sam_hf", "everything", str(images)]
    ray_out = ["--engine", "ray", "--concurrency", "2", "--out", str(work / "ray"), "--coco", str(work / "ray.json")]
    with socket.socket() as free:  # a free port for accelerate's rendezvous
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(port), "-m", "sam_hf", "everything", str(images)]
    return {
        "single": ([*cli, "--out", str(work / "single.json"), *flags], {}, work / "single.json"),
        "accelerate": (
            [*launch, "--out", str(work / "accelerate.json"), *flags],
            {"OMP_NUM_THREADS": "1"},
            work / "accelerate.json",
        ),
        "ray": (
            [*cli, *ray_out, *flags],
            {},
            work / "ray.json",
        ),
    }


def compare(got: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """How far `got`'s labels are from `want`'s (COCO dictionaries of the same images)."""
    same_images = got["images"] == want["images"] and got["info"]["failed"] == want["info"]["failed"]
    pairs = list(zip(got["annotations"], want["annotations"], strict=False))
    same_records = len(got["annotations"]) == len(want["annotations"]) and all(
        a["image_id"] == b["image_id"] for a, b in pairs
    )
    differences = {"predicted_iou": 0.0, "stability_score": 0.0, "bbox": 0.0}
    identical, lowest_iou = 0, 1.0
    for a, b in pairs:
        identical += a["segmentation"] == b["segmentation"]
        for key in ("predicted_iou", "stability_score"):
            differences[key] = max(differences[key], abs(a[key] - b[key]))
        differences["bbox"] = max(differences["bbox"], float(np.abs(np.subtract(a["bbox"], b["bbox"])).max()))
        if a["segmentation"] != b["segmentation"]:
            masks = [decode_segmentation(annotation["segmentation"]) for annotation in (a, b)]
            lowest_iou = min(lowest_iou, mask_iou(*masks, empty=1.0))
    return {
        "same_images": same_images,
        "same_record_count": same_records,
        "masks": len(got["annotations"]),
        "identical_rles": identical,
        "lowest_mask_iou": lowest_iou,
        "max_abs_diff": differences,
    }


def main(argv: list[str] | None = None) -> None:
    """Runs the three engines and writes the table and the raw results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=128, help="scene side in pixels")
    parser.add_argument("--points-per-side", type=int, default=8)
    parser.add_argument("--load", default="quiet", help="what else ran on the machine, for the header")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "labelling.json")
    args = parser.parse_args(argv)
    flags = ["--points-per-side", str(args.points_per_side), "--pred-iou-thresh", "0.6"]
    flags += ["--stability-score-thresh", "0.8", "--device", "cpu", "--no-progress"]
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        images = work / "images"
        images.mkdir()
        for i in range(args.images):
            PIL.Image.fromarray(generate_scene(SEED + i, args.size).image).save(images / f"{i:05d}.png")
        runs, cocos = {}, {}
        for engine, (command, env, coco_path) in engine_commands(images, work, flags).items():
            start = time.perf_counter()
            result = subprocess.run(
                command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}
            )
            wall = time.perf_counter() - start
            if result.returncode != 0:
                raise SystemExit(f"{engine} failed:\n{result.stderr[-3000:]}")
            runs[engine] = {"wall_s": wall, "images_per_s": args.images / wall, "command": command}
            cocos[engine] = json.loads(coco_path.read_text())
            print(f"{engine}: {wall:.1f} s", flush=True)
    equality = {engine: compare(cocos[engine], cocos["single"]) for engine in ("accelerate", "ray")}
    cpu = os.cpu_count()
    lines = [
        f"Batch labelling, bundled model, {args.images} generated {args.size}x{args.size} scenes, points_per_side "
        f"{args.points_per_side}, {cpu} CPUs, load: {args.load}; one run, engines one after the other; wall time of "
        "the whole command (process / Ray start-up and model loading included).",
        "",
        "| engine | wall s | images/s | vs single |",
        "|---|---|---|---|",
    ]
    for engine, run in runs.items():
        ratio = runs["single"]["wall_s"] / run["wall_s"]
        lines.append(f"| {engine} | {run['wall_s']:.1f} | {run['images_per_s']:.2f} | {ratio:.2f}x |")
    lines += [
        "",
        "Labels against the single-process run:",
        "",
        "| engine | same images | masks | identical RLEs | lowest mask IoU | max |score diff| | max |bbox diff| |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine, found in equality.items():
        differences = found["max_abs_diff"]
        lines.append(
            f"| {engine} | {found['same_images'] and found['same_record_count']} | {found['masks']} / "
            f"{len(cocos['single']['annotations'])} | {found['identical_rles']} | {found['lowest_mask_iou']:.4f} | "
            f"{differences['predicted_iou']:.2e} | {differences['bbox']:.0f} |"
        )
    text = "\n".join(lines)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {"settings": vars(args) | {"json": str(args.json)}, "cpus": cpu, "runs": runs, "equality": equality}
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
