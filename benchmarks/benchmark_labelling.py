"""Batch labelling throughput of the three engines on the same images and model, and whether their labels agree.

    python -m benchmarks.benchmark_labelling [--images 200] [--warm 4] [--size 128] [--points-per-side 8]

Labels `--images` generated scenes with the bundled model, once per engine, one after the other in this one run, each
as a user runs it (a fresh process, model loading included):

- single: `sam-hf everything DIR --out single --coco single.json` (one process, torch's default threads);
- accelerate: `accelerate launch --multi_gpu --num_processes 2 -m sam_hf everything ...` (two CPU processes, one
  thread each);
- ray: `sam-hf everything DIR --engine ray --concurrency 2 --address HEAD ...` (two actors with one CPU each, decoding
  in Ray tasks) on a Ray started beforehand with `ray start --head --num-cpus 3`, whose start-up is timed on its own.

Every engine also labels the first `--warm` scenes alone (a fresh output): the difference between the two runs gives
its steady-state rate, `(images - warm) / (wall - warm wall)`, free of start-up and model loading, and its fixed cost.
Then it compares the three outputs against the single-process one: the same Parquet rows (images, sizes, bytes,
errors), and their COCO exports annotation by annotation (same number of masks, identical RLEs, largest score / box
differences). Results: benchmarks/results/labelling.md and .json. Run from the repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
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
from sam_hf.labelling import ParquetLabels

SEED = 5000  # scenes SEED.. (apart from the training and held-out seeds of the bundled model)
ROW_KEYS = ("image_id", "file_name", "height", "width", "sha256", "error")
HEAD_CPUS = 3  # as a local Ray of `sam-hf everything --engine ray --concurrency 2`: 2 actors + reading / writing


def free_port() -> int:
    """A port free now (for Ray's head)."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        return free.getsockname()[1]


@contextlib.contextmanager
def ray_head(cpus: int, work: Path):
    """`ray start --head --block` in a session of its own; yields `(address, seconds until it was ready)`, stops it
    (SIGTERM, then SIGKILL to its process group)."""
    address, log = f"127.0.0.1:{free_port()}", work / "head.log"
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus", str(cpus)]
    command += ["--port", address.split(":")[1], "--temp-dir", str(work / "ray"), "--include-dashboard", "false"]
    command += ["--disable-usage-stats"]
    start = time.perf_counter()
    with open(log, "w") as output:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # the driver connects by address, without a token
        head = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while "Ray runtime started" not in log.read_text():
            if head.poll() is not None:
                raise SystemExit(f"ray start failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield address, time.perf_counter() - start
    finally:
        head.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def engine_commands(images: Path, out: Path, flags: list[str], address: str) -> dict[str, tuple[list[str], dict]]:
    """`engine -> (command, extra environment)`, each writing `out/ENGINE` and `out/ENGINE.json`."""
    cli = [sys.executable, "-m", "sam_hf", "everything", str(images)]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["-m", "sam_hf", "everything", str(images)]
    ray = ["--engine", "ray", "--concurrency", "2", "--address", address]

    def output(engine: str) -> list[str]:
        return ["--out", str(out / engine), "--coco", str(out / f"{engine}.json"), *flags]

    return {
        "single": ([*cli, *output("single")], {}),
        # The rendezvous binds a free port itself (torchrun --standalone, through its environment variable).
        "accelerate": ([*launch, *output("accelerate")], {"OMP_NUM_THREADS": "1", "PET_STANDALONE": "1"}),
        "ray": ([*cli, *ray, *output("ray")], {}),
    }


def run(command: list[str], env: dict[str, str], name: str) -> float:
    """Runs one engine's command; its wall time in seconds."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    return wall


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
    """Runs the three engines (warm-up size, then full size) and writes the table and the raw results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--warm", type=int, default=4, help="scenes of the short run that measures fixed costs")
    parser.add_argument("--size", type=int, default=128, help="scene side in pixels")
    parser.add_argument("--points-per-side", type=int, default=8)
    parser.add_argument("--load", default="quiet", help="what else ran on the machine, for the header")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "labelling.json")
    args = parser.parse_args(argv)
    if not 0 < args.warm < args.images:
        parser.error(f"--warm must be in [1, --images), got {args.warm}.")
    flags = ["--points-per-side", str(args.points_per_side), "--pred-iou-thresh", "0.6"]
    flags += ["--stability-score-thresh", "0.8", "--device", "cpu", "--no-progress"]
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="labelling", dir="/tmp") as directory:
        work = Path(directory)
        images, warm_images = work / "images", work / "warm"
        images.mkdir()
        warm_images.mkdir()
        for i in range(args.images):
            PIL.Image.fromarray(generate_scene(SEED + i, args.size).image).save(images / f"{i:05d}.png")
            if i < args.warm:
                (warm_images / f"{i:05d}.png").write_bytes((images / f"{i:05d}.png").read_bytes())
        with ray_head(HEAD_CPUS, work) as (address, ray_start_s):
            print(f"ray start --head: {ray_start_s:.1f} s", flush=True)
            warm = engine_commands(warm_images, work / "warm-out", flags, address)
            full = engine_commands(images, work / "out", flags, address)
            for engine in full:
                warm_s = run(*warm[engine], f"{engine} ({args.warm} images)")
                wall = run(*full[engine], engine)
                rate = (args.images - args.warm) / (wall - warm_s) if wall > warm_s else float("nan")
                fixed = warm_s - args.warm / rate if rate == rate else float("nan")
                runs[engine] = {
                    "wall_s": wall,
                    "images_per_s": args.images / wall,
                    "warm_wall_s": warm_s,
                    "steady_images_per_s": rate,
                    "fixed_s": fixed,
                    "command": full[engine][0],
                }
                print(f"{engine}: {wall:.1f} s ({args.warm} images: {warm_s:.1f} s)", flush=True)
        outputs = {engine: work / "out" / engine for engine in runs}
        rows = {engine: list(ParquetLabels(out).results()) for engine, out in outputs.items()}
        cocos = {engine: json.loads(out.with_suffix(".json").read_text()) for engine, out in outputs.items()}
    key_rows = {engine: [[row[key] for key in ROW_KEYS] for row in found] for engine, found in rows.items()}
    equality = {engine: compare(cocos[engine], cocos["single"]) for engine in ("accelerate", "ray")}
    for engine in equality:
        equality[engine]["same_rows"] = key_rows[engine] == key_rows["single"] and len(rows[engine]) == args.images
    cpu = os.cpu_count()
    lines = [
        f"Batch labelling, bundled model, {args.images} generated {args.size}x{args.size} scenes, points_per_side "
        f"{args.points_per_side}, {cpu} CPUs, load: {args.load}; one run, engines one after the other, each a fresh "
        f"command (wall: process start-up and model loading included; Ray's on a cluster started beforehand, "
        f"`ray start --head`: {ray_start_s:.1f} s until ready, not in the wall). Steady state: "
        f"`(images - {args.warm}) / (wall - wall of {args.warm} images)`; fixed: what the {args.warm}-image run spent "
        "beyond that rate.",
        "",
        "| engine | wall s | images/s (wall) | steady images/s | fixed s | steady vs single |",
        "|---|---|---|---|---|---|",
    ]
    for engine, found in runs.items():
        ratio = found["steady_images_per_s"] / runs["single"]["steady_images_per_s"]
        lines.append(
            f"| {engine} | {found['wall_s']:.1f} | {found['images_per_s']:.2f} | "
            f"{found['steady_images_per_s']:.2f} | {found['fixed_s']:.1f} | {ratio:.2f}x |"
        )
    lines += [
        f"| ray start-up (`ray start --head`) | {ray_start_s:.1f} | | | | |",
        "",
        "Labels against the single-process run:",
        "",
        "| engine | same rows | same images | masks | identical RLEs | lowest mask IoU | max |score diff| | "
        "max |bbox diff| |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for engine, found in equality.items():
        differences = found["max_abs_diff"]
        lines.append(
            f"| {engine} | {found['same_rows']} | {found['same_images'] and found['same_record_count']} | "
            f"{found['masks']} / {len(cocos['single']['annotations'])} | {found['identical_rles']} | "
            f"{found['lowest_mask_iou']:.4f} | {differences['predicted_iou']:.2e} | {differences['bbox']:.0f} |"
        )
    text = "\n".join(lines)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": vars(args) | {"json": str(args.json)},
        "cpus": cpu,
        "ray_start_s": ray_start_s,
        "runs": runs,
        "equality": equality,
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
