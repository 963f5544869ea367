"""Times the official `segment_anything` package, transformers' `SamModel` and sam_hf's `SamModel` on the same random
weights and inputs, each in its own process (so peak RSS is that contender's alone), and prints a markdown table.

    python -m benchmarks.benchmark_models [--size vit_b] [--prompts 1 64] [--threads N] [--json PATH]

Run from the repository root. The parent builds the official model, perturbs its weights, saves them with safetensors
and re-runs this module as `--worker NAME` for every contender; each worker prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("official", "transformers", "sam_hf")
ENCODER = "image encoder, 1 image 1024x1024"
MEMORY = "peak RSS"

Encode = Callable[[torch.Tensor], torch.Tensor]  # pixels (1, 3, 1024, 1024) -> embedding (1, 256, 64, 64)
Decode = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # embedding, points, labels -> IoU


def prompt_label(count: int) -> str:
    return f"prompt -> mask, {count} prompt{'s' if count > 1 else ''}"


def measure(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, Any]:
    """Median wall time of `repeats` calls after `warmup` calls, and the last call's result."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def load_model(name: str, weights: Path, size: str) -> torch.nn.Module:
    """The official `Sam`, transformers' `SamModel` (sdpa) or sam_hf's `SamModel`, holding the official weights stored
    at `weights`, in eval mode."""
    from safetensors.torch import load_file

    state_dict = load_file(weights)
    if name == "official":
        from segment_anything import sam_model_registry

        model = sam_model_registry[size]()
        model.load_state_dict(state_dict, strict=True)
    elif name == "transformers":
        import transformers

        from conversion.convert_official_to_sam_hf import convert_state_dict
        from sam_hf.configuration_sam import PRESETS

        config = transformers.SamConfig(vision_config=dict(PRESETS[size]), attn_implementation="sdpa")
        model = transformers.SamModel(config)
        model.load_state_dict(convert_state_dict(state_dict), strict=True)
    else:
        from conversion.convert_official_to_sam_hf import build_model

        model = build_model(state_dict, size)
    return model.eval()


def load_contender(name: str, weights: Path, size: str) -> tuple[Encode, Decode]:
    """`(encode, decode)` of one contender holding the official weights stored at `weights`."""
    model = load_model(name, weights, size)
    if name == "official":

        def decode_official(embedding: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            sparse, dense = model.prompt_encoder(points=(points, labels), boxes=None, masks=None)
            _, iou = model.mask_decoder(
                image_embeddings=embedding,
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            return iou

        return model.image_encoder, decode_official

    def decode_hf(embedding: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = model(image_embeddings=embedding, input_points=points[None], input_labels=labels[None])
        return out.iou_scores

    return model.get_image_embeddings, decode_hf


def prompts(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` single foreground points in [0, 1024): points (count, 1, 2), labels (count, 1); seeded by `count`."""
    points = torch.rand(count, 1, 2, generator=torch.Generator().manual_seed(count)) * 1024
    return points, torch.ones(count, 1, dtype=torch.long)


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    encode, decode = load_contender(args.worker, args.weights, args.size)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, 1024, 1024, generator=generator)
    embedding = torch.randn(1, 256, 64, 64, generator=generator)  # stands in for the encoder's under --skip-encoder
    results: dict[str, float] = {}
    with torch.inference_mode():
        if not args.skip_encoder:
            results[ENCODER], embedding = measure(partial(encode, pixels), args.warmup, args.repeats)
        for count in args.prompts:
            decode_count = partial(decode, embedding, *prompts(count))
            results[prompt_label(count)], _ = measure(decode_count, args.warmup, args.repeats)
        iou = decode(embedding, *prompts(1)).flatten().tolist()
    results[MEMORY] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"name": args.worker, "results": results, "iou_1_prompt": iou}


def environment(args: argparse.Namespace) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")
    return {
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "threads": args.threads,
        "cpu": cpu,
        "malloc_env": {key: value for key, value in os.environ.items() if key.startswith("MALLOC_")},
        "size": args.size,
        "warmup": args.warmup,
        "repeats": args.repeats,
    }


def random_official_weights(size: str, path: Path) -> None:
    """The official model's state dict, every parameter perturbed by 0.02 * randn (seeded), saved to `path`."""
    from safetensors.torch import save_file
    from segment_anything import sam_model_registry

    sam = sam_model_registry[size](checkpoint=None)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in sam.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    save_file({key: value.contiguous() for key, value in sam.state_dict().items()}, str(path))


def table(args: argparse.Namespace, env: dict[str, Any], workers: dict[str, dict[str, Any]]) -> str:
    names = [name for name in CONTENDERS if name in workers]
    references = [name for name in ("official", "transformers") if name in workers and "sam_hf" in workers]
    rows = ([] if args.skip_encoder else [ENCODER]) + [prompt_label(count) for count in args.prompts] + [MEMORY]
    malloc = " ".join(f"{key}={value}" for key, value in env["malloc_env"].items()) or "none"
    lines = [
        f"{env['size']}, torch {env['torch']}, transformers {env['transformers']}, {env['threads']} threads, "
        f"CPU: {env['cpu']}, MALLOC_* env: {malloc}; median of {env['repeats']} after {env['warmup']} warmup",
        "",
        "| measurement | " + " | ".join(names + [f"sam_hf vs {ref}" for ref in references]) + " |",
        "|---" * (1 + len(names) + len(references)) + "|",
    ]
    for row in rows:
        values = {name: workers[name]["results"][row] for name in names}
        unit = "GiB" if row == MEMORY else "s"
        cells = [f"{values[name]:.3g}" for name in names]
        cells += [f"{values[ref] / values['sam_hf']:.2f}x" for ref in references]
        lines.append(f"| {row} ({unit}) | " + " | ".join(cells) + " |")
    lines.append("")
    iou = {name: torch.tensor(workers[name]["iou_1_prompt"]) for name in names}
    for ref in references:
        diff = (iou["sam_hf"] - iou[ref]).abs().max().item()
        lines.append(f"parity, 1 prompt: max |IoU(sam_hf) - IoU({ref})| = {diff:.2e}")
    return "\n".join(lines)


def run_workers(module: str, names: list[str], size: str, worker_args: list[str]) -> dict[str, dict[str, Any]]:
    """Saves perturbed official weights, then runs `python -m module --worker NAME --weights PATH *worker_args` for
    each name in a fresh process and returns the JSON each prints last, by name."""
    workers: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "official.safetensors"
        random_official_weights(size, weights)
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            command = [sys.executable, "-m", module, "--worker", name, "--weights", str(weights), *worker_args]
            done = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=True)
            workers[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return workers


def run_parent(args: argparse.Namespace) -> None:
    shared = ["--size", args.size, "--threads", str(args.threads), "--warmup", str(args.warmup)]
    shared += ["--repeats", str(args.repeats), "--prompts", *map(str, args.prompts)]
    shared += ["--skip-encoder"] if args.skip_encoder else []
    workers = run_workers("benchmarks.benchmark_models", args.contenders, args.size, shared)
    env = environment(args)
    print(table(args, env, workers))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"environment": env, "workers": workers}, indent=2) + "\n")
    print(f"\nraw results: {args.json}")


def base_parser(description: str, json_name: str, warmup: int, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark here shares: model size, contenders, threads, warm-up and repeat counts, the JSON
    path under benchmarks/results/ and the hidden worker options."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "benchmarks" / "results" / json_name)
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    return parser


def run_cli(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    run_worker: Callable[[argparse.Namespace], dict[str, Any]],
    run_parent: Callable[[argparse.Namespace], None],
) -> None:
    """Parses `argv`: as `--worker NAME`, prints the worker's JSON line; otherwise runs the parent."""
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
    else:
        run_parent(args)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__, "latest.json", warmup=1, repeats=3)
    parser.add_argument("--prompts", nargs="+", type=int, default=[1, 64], help="prompt counts to time")
    parser.add_argument("--skip-encoder", action="store_true", help="decode from a random embedding instead")
    run_cli(parser, argv, run_worker, run_parent)


if __name__ == "__main__":
    main()
