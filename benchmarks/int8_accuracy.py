"""Mask agreement of the int8 path (`sam_hf.acceleration.quantize_int8`) with fp32, on the parity scenes:

- vit_b with the benchmarks' random weights (official weights perturbed by 0.02 * randn) on the shared photos
  (../shared/images), an 8x8 grid of single-point prompts per photo, 3 masks each, at the photo's size;
- the bundled model (trained) on generated scenes, one point at the centre of each object.

    python -m benchmarks.int8_accuracy [--scenes 100] [--threads N] [--json PATH]

Prints a markdown table of mask IoU (int8 vs fp32: mean, 5th percentile, minimum, share of masks >= 0.97) and writes
it next to the JSON (`.md`). Timing is not measured here (benchmark_models does), so it may run on a busy machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch

import sam_hf
from benchmarks.benchmark_models import REPO_ROOT, random_official_weights
from sam_hf import SamModel, SamProcessor
from sam_hf.acceleration import INT8_MIN_MASK_IOU, quantize_int8
from sam_hf.data import generate_scene
from sam_hf.geometry import mask_iou

PHOTOS = REPO_ROOT.parent / "shared" / "images"


def compare(
    fp32: SamModel, other: SamModel, processor: SamProcessor, image: np.ndarray, points: list[list[float]]
) -> torch.Tensor:
    """Mask IoU of `other` (int8, half precision) vs fp32 of every mask of the single-point prompts `points` ([x, y]
    in image pixels) on `image`, at the image's size: `(len(points) * 3,)`."""
    inputs = processor(images=image, input_points=[[[point] for point in points]])
    masks = []
    with torch.inference_mode():
        for model in (fp32, other):
            outputs = model(**inputs)
            masks.append(
                processor.post_process_masks(
                    outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
                )[0]
            )
    return mask_iou(*masks, empty=1.0).flatten()  # both empty: the variants agree


def summary(ious: torch.Tensor) -> dict[str, float]:
    return {
        "masks": len(ious),
        "mean": ious.mean().item(),
        "p5": ious.quantile(0.05).item(),
        "min": ious.min().item(),
        f"share >= {INT8_MIN_MASK_IOU}": (ious >= INT8_MIN_MASK_IOU).float().mean().item(),
    }


def photo_ious(grid: int) -> torch.Tensor:
    """vit_b, random weights, every shared photo, `grid x grid` points."""
    from safetensors.torch import load_file

    from sam_hf.conversion import build_model

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "official.safetensors"
        random_official_weights("vit_b", weights)
        fp32 = build_model(load_file(weights), "vit_b").eval()
    int8 = quantize_int8(copy.deepcopy(fp32))
    processor = SamProcessor.for_config(fp32.config)
    ious = []
    for path in sorted(PHOTOS.glob("*.jpg")):
        image = np.asarray(PIL.Image.open(path).convert("RGB"))
        height, width = image.shape[:2]
        side = (np.arange(grid) + 0.5) / grid
        points = [[float(x * width), float(y * height)] for y in side for x in side]
        ious.append(compare(fp32, int8, processor, image, points))
        print(f"{path.name}: mean mask IoU {ious[-1].mean():.4f}", flush=True)
    return torch.cat(ious)


def scene_ious(scenes: int, variant: Callable[[SamModel], SamModel] = quantize_int8) -> torch.Tensor:
    """The bundled model against `variant` of it (int8 by default; e.g. `lambda model: model.to(torch.bfloat16)`),
    `scenes` generated scenes (held-out seeds), one centre point per object."""
    fp32 = SamModel.from_pretrained(sam_hf.BUNDLED_MODEL_PATH).eval()
    other = variant(copy.deepcopy(fp32))
    processor = SamProcessor.from_pretrained(sam_hf.BUNDLED_MODEL_PATH)
    ious = []
    for seed in range(50_000, 50_000 + scenes):
        scene = generate_scene(seed)
        centres = [np.argwhere(obj.mask).mean(axis=0) for obj in scene.objects]  # (y, x)
        ious.append(compare(fp32, other, processor, scene.image, [[float(x), float(y)] for y, x in centres]))
    return torch.cat(ious)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "int8_accuracy.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {
        f"vit_b random weights, {len(list(PHOTOS.glob('*.jpg')))} photos x {args.grid**2} points": photo_ious(
            args.grid
        ),
        f"bundled model, {args.scenes} generated scenes": scene_ious(args.scenes),
    }
    rows = {name: summary(ious) for name, ious in results.items()}
    columns = list(next(iter(rows.values())))
    lines = [
        f"int8 (dynamic, per-channel, encoder linear layers) vs fp32 mask IoU; torch {torch.__version__}",
        "",
        "| scenes | " + " | ".join(columns) + " |",
        "|---" * (1 + len(columns)) + "|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4g}" for c in columns) + " |")
    text = "\n".join(lines)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
