"""Times everything mode (automatic mask generation) on the same random weights and image: the official
`SamAutomaticMaskGenerator`, transformers' `mask-generation` pipeline (its `SamModel` + `SamImageProcessor`) and
sam_hf's `SamAutomaticMaskGenerator`, each in its own process (so peak RSS is that contender's alone).

    python -m benchmarks.benchmark_everything [--size vit_b] [--points-per-side 16] [--image PATH] [--json PATH]

Run from the repository root. Model loading, weights and the environment header come from `benchmark_models`.
"""

from __future__ import annotations

import argparse
import json
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from benchmarks.benchmark_models import (
    CONTENDERS,
    REPO_ROOT,
    base_parser,
    environment,
    load_model,
    measure,
    run_cli,
    run_workers,
)

DEFAULT_IMAGE = REPO_ROOT.parent / "shared" / "images" / "dog.jpg"


def generate_fn(name: str, model: torch.nn.Module, args: argparse.Namespace) -> Callable[[np.ndarray], list]:
    """`image (h, w, 3) uint8 -> XYXY boxes of the masks` for one contender, with the official defaults except the
    grid size and the two thresholds."""
    params = {
        "points_per_batch": args.points_per_batch,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_score_thresh,
    }
    if name == "transformers":
        import transformers

        pipe = transformers.pipeline(
            "mask-generation", model=model, image_processor=transformers.SamImageProcessor(), device="cpu"
        )
        return lambda image: pipe(
            PIL.Image.fromarray(image), points_per_crop=args.points_per_side, output_bboxes_mask=True, **params
        )["bounding_boxes"].tolist()
    if name == "official":
        from segment_anything import SamAutomaticMaskGenerator
    else:
        from sam_hf import SamAutomaticMaskGenerator

    generator = SamAutomaticMaskGenerator(model, points_per_side=args.points_per_side, **params)
    return lambda image: [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in generator.generate(image))]


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    generate = generate_fn(args.worker, load_model(args.worker, args.weights, args.size), args)
    image = np.asarray(PIL.Image.open(args.image).convert("RGB"))
    with torch.inference_mode():
        seconds, boxes = measure(lambda: generate(image), args.warmup, args.repeats)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"name": args.worker, "seconds": seconds, "peak_rss_gib": peak_gib, "boxes": boxes}


def table(args: argparse.Namespace, env: dict[str, Any], workers: dict[str, dict[str, Any]]) -> str:
    names = [name for name in CONTENDERS if name in workers]
    references = [name for name in ("official", "transformers") if name in workers and "sam_hf" in workers]
    malloc = " ".join(f"{key}={value}" for key, value in env["malloc_env"].items()) or "none"
    image = Path(args.image)
    size = PIL.Image.open(image).size
    lines = [
        f"{env['size']}, {image.name} {size[0]}x{size[1]}, {args.points_per_side}x{args.points_per_side} grid, "
        f"points_per_batch {args.points_per_batch}, pred_iou_thresh {args.pred_iou_thresh}, stability_score_thresh "
        f"{args.stability_score_thresh}; torch {env['torch']}, transformers {env['transformers']}, {env['threads']} "
        f"threads, CPU: {env['cpu']}, MALLOC_* env: {malloc}; median of {env['repeats']} after {env['warmup']} warmup",
        "",
        "| measurement | " + " | ".join(names + [f"sam_hf vs {ref}" for ref in references]) + " |",
        "|---" * (1 + len(names) + len(references)) + "|",
    ]
    for label, key in (("everything mode (s)", "seconds"), ("peak RSS (GiB)", "peak_rss_gib")):
        cells = [f"{workers[name][key]:.3g}" for name in names]
        cells += [f"{workers[ref][key] / workers['sam_hf'][key]:.2f}x" for ref in references]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = [str(len(workers[name]["boxes"])) for name in names] + [""] * len(references)
    lines.append("| masks | " + " | ".join(cells) + " |")
    if "official" in workers and "sam_hf" in workers:
        same = workers["official"]["boxes"] == workers["sam_hf"]["boxes"]
        lines += ["", f"sam_hf and official masks have {'the same' if same else 'DIFFERENT'} boxes, in the same order"]
    return "\n".join(lines)


def run_parent(args: argparse.Namespace) -> None:
    shared = ["--size", args.size, "--threads", str(args.threads), "--warmup", str(args.warmup)]
    shared += [
        "--repeats",
        str(args.repeats),
        "--image",
        str(args.image),
        "--points-per-side",
        str(args.points_per_side),
    ]
    shared += ["--points-per-batch", str(args.points_per_batch), "--pred-iou-thresh", str(args.pred_iou_thresh)]
    shared += ["--stability-score-thresh", str(args.stability_score_thresh)]
    workers = run_workers("benchmarks.benchmark_everything", args.contenders, args.size, shared)
    env = environment(args)
    print(table(args, env, workers))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps({"environment": env, "settings": vars(args), "workers": workers}, default=str) + "\n"
    )
    print(f"\nraw results: {args.json}")


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__, "everything.json", warmup=0, repeats=1)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88)
    parser.add_argument("--stability-score-thresh", type=float, default=0.95)
    run_cli(parser, argv, run_worker, run_parent)


if __name__ == "__main__":
    main()
