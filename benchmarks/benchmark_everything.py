"""Times everything mode (automatic mask generation) on the same random weights and image: the official
`SamAutomaticMaskGenerator`, transformers' `mask-generation` pipeline (its `SamModel` + `SamImageProcessor`) and
sam_hf's `SamAutomaticMaskGenerator`, each in its own process (so peak RSS is that contender's alone).

    python -m benchmarks.benchmark_everything [--size vit_b] [--points-per-side 16] [--image PATH] [--json PATH]
        [--variants eager compiled int8]

Run from the repository root. Model loading, weights and the environment header come from `benchmark_models`.
"""

from __future__ import annotations

import argparse
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from benchmarks.benchmark_models import (
    REPO_ROOT,
    apply_variant,
    base_parser,
    environment,
    environment_line,
    jobs,
    load_model,
    markdown_table,
    measure,
    ratio_columns,
    run_cli,
    run_workers,
    write_results,
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
    model = apply_variant(args.worker, load_model(args.worker, args.weights, args.size), args.variant)
    generate = generate_fn(args.worker, model, args)
    image = np.asarray(PIL.Image.open(args.image).convert("RGB"))
    with torch.inference_mode():
        # A compiled model's first call compiles: never time it.
        warmup = max(args.warmup, 1) if args.variant == "compiled" else args.warmup
        seconds, boxes, first = measure(lambda: generate(image), warmup, args.repeats)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {
        "name": args.worker,
        "variant": args.variant,
        "seconds": seconds,
        "first_call_seconds": first,
        "peak_rss_gib": peak_gib,
        "boxes": boxes,
    }


def table(args: argparse.Namespace, env: dict[str, Any], workers: dict[str, dict[str, Any]]) -> str:
    image = Path(args.image)
    size = PIL.Image.open(image).size
    ratios = ratio_columns(workers)
    rows = [
        (label, {column: worker[key] for column, worker in workers.items()})
        for label, key in (
            ("everything mode (s)", "seconds"),
            ("first call (s)", "first_call_seconds"),
            ("peak RSS (GiB)", "peak_rss_gib"),
        )
    ]
    lines = [
        f"{image.name} {size[0]}x{size[1]}, {args.points_per_side}x{args.points_per_side} grid, points_per_batch "
        f"{args.points_per_batch}, pred_iou_thresh {args.pred_iou_thresh}, stability_score_thresh "
        f"{args.stability_score_thresh}; {environment_line(env)}",
        "",
        *markdown_table(rows, workers),
        "| masks | " + " | ".join([str(len(w["boxes"])) for w in workers.values()] + [""] * len(ratios)) + " |",
    ]
    if "official" in workers:
        for column, worker in workers.items():
            if worker["name"] == "sam_hf":
                same = workers["official"]["boxes"] == worker["boxes"]
                lines.append(
                    f"\n{column} and official masks have {'the same' if same else 'DIFFERENT'} boxes, in order"
                )
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
    workers = run_workers("benchmarks.benchmark_everything", jobs(args), args.size, shared)
    env = environment(args)
    payload = {"environment": env, "settings": vars(args), "workers": workers}
    write_results(args, table(args, env, workers), payload)


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
