"""MobileSAM's image encoder (TinyViT) against vit_b's, and against the official TinyViT on the same weights, in one
process, interleaved (each round times every contender once), on one 1024x1024 input; prints and writes a markdown
table of median times and ratios.

    python -m benchmarks.benchmark_mobile_sam [--threads 2] [--repeats 3] [--warmup 1] [--json PATH]

Contenders (CPU, fp32, `torch.inference_mode()`):
- `sam_hf mobile-sam`: sam_hf's TinyViT encoder, holding the official model's (perturbed random) weights, converted;
- `official mobile-sam`: `segment_anything_hq.sam_model_registry_baseline["vit_tiny"]`'s encoder, those weights;
- `sam_hf vit_b`: sam_hf's ViT-B encoder, random weights (time does not depend on the values).
A first, untimed call of each counts its FLOPs (`torch.utils.flop_counter`); the largest difference between the two
TinyViT embeddings is reported too. Run from the repository root; the machine's load average is recorded (timings on
a shared machine are only comparable within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from sam_hf import SamConfig, SamModel
from sam_hf.conversion import build_model

RESULTS = Path(__file__).resolve().parent / "results"


def official_mobile_sam(seed: int = 0) -> torch.nn.Module:
    """The official MobileSAM with every parameter and floating-point buffer perturbed by 0.02 * randn."""
    with warnings.catch_warnings():  # segment_anything_hq imports timm's deprecated paths
        warnings.simplefilter("ignore")
        from segment_anything_hq import sam_model_registry_baseline

        model = sam_model_registry_baseline["vit_tiny"]()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point() and not name.startswith("pixel_"):
                tensor.add_(0.02 * torch.randn(tensor.shape, generator=generator))
    return model.eval()  # eval() also rebuilds the official attention-bias cache from the perturbed biases


def encoders(official: torch.nn.Module) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """name -> `pixels (1, 3, 1024, 1024)` -> `(1, 256, 64, 64)` image embedding."""
    mobile = build_model(official.state_dict())
    torch.manual_seed(0)
    vit_b = SamModel(SamConfig.from_preset("vit_b")).eval()

    return {
        "sam_hf mobile-sam": mobile.get_image_embeddings,
        "official mobile-sam": lambda pixels: official.image_encoder(pixels)[0],
        "sam_hf vit_b": vit_b.get_image_embeddings,
    }


def flops(encode: Callable[[torch.Tensor], torch.Tensor], pixels: torch.Tensor) -> int:
    """FLOPs of one call (a multiply-add counts 2)."""
    with FlopCounterMode(display=False) as counter:
        encode(pixels)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed rounds after the first (FLOP-counting) one")
    parser.add_argument("--json", type=Path, default=RESULTS / "mobile_sam.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    official = official_mobile_sam()
    contenders = encoders(official)
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    outputs = {}
    gflops = {}
    with torch.inference_mode():
        for name, encode in contenders.items():  # the first, untimed call of each counts its FLOPs
            gflops[name] = flops(encode, pixels) / 1e9
        for round_index in range(args.warmup + args.repeats):
            for name, encode in contenders.items():
                start = time.perf_counter()
                outputs[name] = encode(pixels)
                if round_index >= args.warmup:
                    times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    mobile = medians["sam_hf mobile-sam"]
    result = {
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "seconds": times,
        "median_seconds": medians,
        "gflops": gflops,
        "vit_b_over_mobile_sam": medians["sam_hf vit_b"] / mobile,
        "official_over_sam_hf_mobile_sam": medians["official mobile-sam"] / mobile,
        "max_abs_diff_official_vs_sam_hf": (outputs["official mobile-sam"] - outputs["sam_hf mobile-sam"])
        .abs()
        .max()
        .item(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    table = markdown(result)
    args.json.with_suffix(".md").write_text(table)
    print(table)
    return result


def markdown(result: dict) -> str:
    """The result as a markdown table with the ratios below it."""
    lines = [
        f"MobileSAM encoder, one 1024x1024 image, CPU fp32, {result['threads']} threads, torch {result['torch']}; "
        f"median of {result['repeats']} interleaved rounds after 1 + {result['warmup']} warm-up; load average "
        f"{result['load_average_before_after'][0]:.1f} before, {result['load_average_before_after'][1]:.1f} after "
        "(a shared machine: compare ratios within this run only).",
        "",
        "| encoder | median s | all runs s |",
        "|---|---|---|",
    ]
    for name, median in result["median_seconds"].items():
        runs = ", ".join(f"{t:.2f}" for t in result["seconds"][name])
        lines.append(f"| {name} | {median:.2f} | {runs} |")
    gflops = result["gflops"]
    lines += [
        "",
        f"- vit_b / MobileSAM encoder time (sam_hf both): **{result['vit_b_over_mobile_sam']:.1f}x**; FLOPs "
        f"{gflops['sam_hf vit_b']:.0f} / {gflops['sam_hf mobile-sam']:.1f} GFLOP = "
        f"{gflops['sam_hf vit_b'] / gflops['sam_hf mobile-sam']:.1f}x",
        f"- official TinyViT / sam_hf TinyViT, same weights: **{result['official_over_sam_hf_mobile_sam']:.2f}x** "
        f"(embeddings differ by at most {result['max_abs_diff_official_vs_sam_hf']:.1e})",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
