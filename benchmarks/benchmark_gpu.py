"""Times the official `segment_anything`, transformers' `SamModel` and sam_hf's `SamModel` on one CUDA GPU, on the same
random weights and inputs: the image encoder (1 image, and a batch), prompt -> mask with 1, 64 and 256 prompts, the
encoder's peak activation memory, and each contender's IoU against the official model in fp32.

    python -m benchmarks.benchmark_gpu [--size vit_b] [--dtypes float32 bfloat16 float16] [--batch 8] [--repeats 20]

fp32 runs the fp32 models. bf16 / fp16 run every contender's fp32 weights under `torch.autocast` (the one way all three
take half precision: the official prompt encoder mixes fp32 coordinates with its buffers), and sam_hf also with its
weights cast (`model.to(dtype)`, which sam_hf supports: it casts its fp32 inputs). The contenders live in one process
and are timed interleaved (official, transformers, sam_hf, again ...), each call closed by `torch.cuda.synchronize()`;
medians are reported. Run from the repository root; results in benchmarks/results/gpu.md / .json.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from benchmarks.benchmark_models import (
    CONTENDERS,
    REPO_ROOT,
    contender_calls,
    interleaved_medians,
    load_model,
    prompts,
    random_official_weights,
)

CAST = "sam_hf, weights cast"  # the extra half-precision contender


def peak_activation_gib(call: Callable[[], Any]) -> float:
    """GPU memory `call` allocates at its peak beyond what was allocated before it, in GiB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    call()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**30


def contenders(
    weights: Path, size: str, dtype: torch.dtype, device: torch.device
) -> dict[str, tuple[Callable, Callable, Callable[[], contextlib.AbstractContextManager]]]:
    """Column name -> `(encode, decode, context factory: autocast or none)` on `device` for `dtype`."""
    models = {name: load_model(name, weights, size).to(device) for name in CONTENDERS}
    if dtype == torch.float32:
        return {name: (*contender_calls(name, model), contextlib.nullcontext) for name, model in models.items()}

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=dtype)

    columns = {name: (*contender_calls(name, model), autocast) for name, model in models.items()}
    cast = copy.deepcopy(models["sam_hf"]).to(dtype)
    columns[CAST] = (*contender_calls("sam_hf", cast), contextlib.nullcontext)
    return columns


def run_dtype(args: argparse.Namespace, weights: Path, dtype: torch.dtype) -> dict[str, dict[str, float]]:
    """Measurement row -> column -> value for one dtype, plus the `embedding` and `iou` outputs per column."""
    device = torch.device(args.device)
    columns = contenders(weights, args.size, dtype, device)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.batch, 3, 1024, 1024, generator=generator).to(device)
    rows: dict[str, dict[str, Any]] = {}
    embeddings: dict[str, torch.Tensor] = {}

    def timed(row: str, make_call: Callable[[str, Callable, Callable], Callable[[], Any]], scale: float = 1.0) -> None:
        calls = {}
        for name, (encode, decode, context) in columns.items():
            call = make_call(name, encode, decode)

            def in_context(call: Callable = call, context: Callable = context) -> Any:
                with context():
                    return call()

            calls[name] = in_context
        medians = interleaved_medians(calls, args.warmup, args.repeats)
        rows[row] = {name: seconds * 1000 / scale for name, seconds in medians.items()}

    with torch.inference_mode():
        timed("image encoder, 1 image (ms)", lambda name, encode, _: lambda: encode(pixels[:1]))
        batch_row = f"image encoder, batch of {args.batch} (ms per image)"
        timed(batch_row, lambda name, encode, _: lambda: encode(pixels), scale=args.batch)
        for name, (encode, _, context) in columns.items():
            with context():
                embeddings[name] = encode(pixels[:1])
        for count in args.prompts:
            points, labels = (tensor.to(device) for tensor in prompts(count))
            row = f"prompt -> mask, {count} prompt{'s' if count > 1 else ''} (ms)"
            timed(row, lambda name, _, decode, at=points, of=labels: lambda: decode(embeddings[name], at, of))
        if device.type == "cuda":
            memory = {}
            for name, (encode, _, context) in columns.items():

                def encode_batch(encode: Callable = encode, context: Callable = context) -> None:
                    with context():
                        encode(pixels)

                memory[name] = peak_activation_gib(encode_batch)
            rows[f"image encoder peak activation memory, batch of {args.batch} (GiB)"] = memory
        points, labels = (tensor.to(device) for tensor in prompts(1))
        iou = {}
        for name, (_, decode, context) in columns.items():
            with context():
                iou[name] = decode(embeddings[name], points, labels).float().flatten().cpu().tolist()
    rows["embeddings"] = {name: value.float().cpu() for name, value in embeddings.items()}
    rows["iou"] = iou
    return rows


def markdown(dtype: str, rows: dict[str, dict[str, Any]], reference: dict[str, Any]) -> list[str]:
    """One table for `dtype`: the measurement rows, the speed ratios of sam_hf against each reference, and each
    column's parity with the official fp32 model (`reference`: its `embeddings` and `iou`)."""
    names = list(rows["iou"])
    ours = [name for name in names if name.startswith("sam_hf")]
    ratios = [(f"{mine} vs {theirs}", mine, theirs) for mine in ours for theirs in ("official", "transformers")]
    lines = [
        f"**{dtype}**",
        "",
        "| measurement | " + " | ".join(names + [header for header, _, _ in ratios]) + " |",
        "|---" * (1 + len(names) + len(ratios)) + "|",
    ]
    for row, values in rows.items():
        if row in ("embeddings", "iou"):
            continue
        cells = [f"{values[name]:.3g}" for name in names]
        cells += [f"{values[theirs] / values[mine]:.2f}x" for _, mine, theirs in ratios]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    official_embedding = reference["embeddings"]["official"]
    official_iou = torch.tensor(reference["iou"]["official"])
    embedding_diffs = [(rows["embeddings"][name] - official_embedding).abs().max().item() for name in names]
    iou_diffs = [(torch.tensor(rows["iou"][name]) - official_iou).abs().max().item() for name in names]
    for label, diffs in (("the embedding", embedding_diffs), ("IoU (1 prompt)", iou_diffs)):
        cells = [f"{diff:.2e}" for diff in diffs] + [""] * len(ratios)
        lines.append(f"| max abs diff of {label} vs official fp32 | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=8, help="images per encoder call in the batch row")
    parser.add_argument("--prompts", nargs="+", type=int, default=[1, 64, 256])
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda", help="cpu only to try the script out: its figures are for GPUs")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "gpu.json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("benchmark_gpu needs a CUDA GPU (torch.cuda.is_available() is False).")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: parity with the official model is reported
    torch.backends.cudnn.allow_tf32 = False
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "official.safetensors"
        random_official_weights(args.size, weights)
        for dtype in ["float32", *(name for name in args.dtypes if name != "float32")]:
            results[dtype] = run_dtype(args, weights, getattr(torch, dtype))
            torch.cuda.empty_cache()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    header = (
        f"{args.size} on {device_name}, torch {torch.__version__}, transformers "
        f"{version('transformers')}, TF32 off; median of {args.repeats} interleaved rounds after {args.warmup} "
        "warm-up rounds. "
        "Ratios: the reference's time over sam_hf's (above 1x: sam_hf is faster)."
    )
    lines = [header, ""]
    for dtype in args.dtypes:
        lines += markdown(dtype, results[dtype], results["float32"])
    text = "\n".join(lines)
    print(text)
    payload = {
        "environment": header,
        "results": {
            dtype: {key: value for key, value in rows.items() if key != "embeddings"} for dtype, rows in results.items()
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
