"""The image encoder of every SAM-1 family member that loads into sam_hf, timed in one process, interleaved (each round
times every member once), on one 1024x1024 input: the "encoder, 1 image, this CPU" column of README's family table.

    python -m benchmarks.benchmark_family [--threads 2] [--repeats 2] [--members vit_b mobile-sam ...] [--json PATH]

Random weights (an encoder's time does not depend on its values), CPU, fp32, `torch.inference_mode()`. SAM-HQ
presets run the ViT of their SAM size (plus the early feature they keep), so they are not repeated here. Run from the
repository root; the load average is recorded (timings on a shared machine are only comparable within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from sam_hf import SamConfig, SamModel

RESULTS = Path(__file__).resolve().parent / "results"
# member -> the config that builds it (SlimSAM: the pruned widths of nielsr/slimsam-*-uniform's config.json).
MEMBERS = {
    "vit_b": lambda: SamConfig.from_preset("vit_b"),
    "vit_l": lambda: SamConfig.from_preset("vit_l"),
    "vit_h": lambda: SamConfig.from_preset("vit_h"),
    "slimsam-50": lambda: SamConfig(vision_config={"hidden_size": 384, "mlp_dim": 1536}),
    "slimsam-77": lambda: SamConfig(vision_config={"hidden_size": 168, "mlp_dim": 696}),
    "mobile-sam": lambda: SamConfig.from_preset("mobile-sam"),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds (median reported)")
    parser.add_argument("--members", nargs="+", choices=list(MEMBERS), default=list(MEMBERS))
    parser.add_argument("--json", type=Path, default=RESULTS / "family.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = {name: SamModel(MEMBERS[name]()).eval() for name in args.members}
    pixels = torch.randn(1, 3, 1024, 1024)
    times: dict[str, list[float]] = {name: [] for name in models}
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, model in models.items():
                start = time.perf_counter()
                model.get_image_embeddings(pixels)
                times[name].append(time.perf_counter() - start)
    reference = statistics.median(times["vit_b"]) if "vit_b" in times else None
    rows = []
    for name, model in models.items():
        median = statistics.median(times[name])
        encoder_parameters = sum(p.numel() for p in model.vision_encoder.parameters())
        row = {"member": name, "encoder_parameters": encoder_parameters, "median_s": median, "times_s": times[name]}
        if reference is not None:
            row["vit_b_time_over_this"] = reference / median
        rows.append(row)
    result = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "torch": torch.__version__,
        "rows": rows,
    }
    lines = ["| member | encoder parameters | median time | vit_b time / this |", "|---|---|---|---|"]
    for row in rows:
        ratio = f"{row['vit_b_time_over_this']:.2f}x" if "vit_b_time_over_this" in row else "-"
        parameters = f"{row['encoder_parameters'] / 1e6:.1f}M"
        lines.append(f"| {row['member']} | {parameters} | {row['median_s']:.2f} s | {ratio} |")
    table = "\n".join(lines)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(
        f"Encoders, 1024x1024, {args.threads} threads, median of {args.repeats} interleaved rounds, load average "
        f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}:\n\n{table}\n"
    )
    return result


if __name__ == "__main__":
    main()
