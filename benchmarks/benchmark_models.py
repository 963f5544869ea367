"""Times the official `segment_anything` package, transformers' `SamModel` and sam_hf's `SamModel` on the same random
weights and inputs, each in its own process (so peak RSS is that contender's alone), and prints a markdown table.
Besides fp32 eager, sam_hf (and with `--accelerate-references` the references too) also runs compiled
(`torch.compile`) and with an int8 image encoder (dynamic quantisation of its linear layers).

The image encoder is also timed on a busy machine: the benchmark starts one competing single-threaded busy process,
re-times every contender and variant under it, and stops it. Beside the separate processes, one process holds the
eager contenders and times their encoders interleaved (official, transformers, sam_hf, again ...), idle and busy, so
that slow drifts of the machine hit every contender alike.

    python -m benchmarks.benchmark_models [--size vit_b] [--prompts 1 64 256] [--variants eager compiled int8]
        [--threads N] [--no-busy] [--json PATH]

Run from the repository root. The parent builds the official model, perturbs its weights, saves them with safetensors
and re-runs this module as `--worker NAME --variant VARIANT` for every contender and variant (and `--worker
interleaved`); each worker prints one JSON line. The markdown table is also written next to the JSON (`.md`).
The parent builds sam_hf's CPU kernels first (once per machine and install, cached), so that the first-call row
times what every new process pays, not that one-time build.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("official", "transformers", "sam_hf")
VARIANTS = ("eager", "compiled", "int8")
ENCODER = "image encoder, 1 image 1024x1024"
ENCODER_FIRST = "image encoder, first call (compiles)"
MEMORY = "peak RSS"
ENCODER_BUSY = "image encoder, 1 other busy process"
ENCODER_INTERLEAVED = "image encoder, one process interleaved"
ENCODER_INTERLEAVED_BUSY = "image encoder, one process interleaved, 1 other busy process"
INTERLEAVED = "interleaved"  # the worker that holds every eager contender in one process
ENCODER_ATTRIBUTE = {"official": "image_encoder", "transformers": "vision_encoder", "sam_hf": "vision_encoder"}
DECODER_ATTRIBUTE = {"official": "mask_decoder", "transformers": "mask_decoder", "sam_hf": "mask_decoder"}

Encode = Callable[[torch.Tensor], torch.Tensor]  # pixels (1, 3, 1024, 1024) -> embedding (1, 256, 64, 64)
Decode = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # embedding, points, labels -> IoU


def prompt_label(count: int) -> str:
    return f"prompt -> mask, {count} prompt{'s' if count > 1 else ''}"


def job_label(name: str, variant: str) -> str:
    """`official`, `sam_hf`, `sam_hf compiled`, ...: the column of one worker."""
    return name if variant == "eager" else f"{name} {variant}"


def synchronize() -> None:
    """Waits for the GPU's queue to drain (nothing to wait for on the CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def synchronized_seconds(fn: Callable[[], Any]) -> float:
    """Wall time of one call of `fn`, the GPU's queue drained before and after."""
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def interleaved_medians(calls: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds of each call over `repeats` rounds (every call once per round, in turn), after `warmup` rounds."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_index in range(warmup + repeats):
        for name, call in calls.items():
            seconds = synchronized_seconds(call)
            if round_index >= warmup:
                times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(fn: Callable[[], Any], warmup: int, repeats: int) -> tuple[float, Any, float]:
    """Median wall time of `repeats` calls after `warmup` calls, the last call's result and the wall time of the very
    first call (with a compiled model, mostly compilation)."""
    times = []
    for _ in range(warmup + repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:]), result, times[0]


def apply_variant(name: str, model: torch.nn.Module, variant: str) -> torch.nn.Module:
    """`model` compiled or with an int8 image encoder; sam_hf through its own `sam_hf.acceleration` API, the
    references the same way by hand (`torch.compile` of encoder and decoder; dynamic per-channel int8 of the
    encoder's `nn.Linear` layers)."""
    if variant == "eager":
        return model
    if name == "sam_hf":
        from sam_hf.acceleration import compile_for_inference, quantize_int8

        return compile_for_inference(model) if variant == "compiled" else quantize_int8(model)
    encoder = getattr(model, ENCODER_ATTRIBUTE[name])
    if variant == "compiled":
        encoder.compile()
        getattr(model, DECODER_ATTRIBUTE[name]).compile()
    else:
        torch.ao.quantization.quantize_dynamic(
            encoder, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, torch.qint8, inplace=True
        )
    return model


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

        from sam_hf.configuration_sam import PRESETS
        from sam_hf.conversion import convert_state_dict

        config = transformers.SamConfig(vision_config=dict(PRESETS[size]), attn_implementation="sdpa")
        model = transformers.SamModel(config)
        model.load_state_dict(convert_state_dict(state_dict), strict=True)
    else:
        from sam_hf.conversion import build_model

        model = build_model(state_dict, size)
    return model.eval()


def load_contender(name: str, weights: Path, size: str, variant: str = "eager") -> tuple[Encode, Decode]:
    """`(encode, decode)` of one contender holding the official weights stored at `weights`, as `variant`."""
    return contender_calls(name, apply_variant(name, load_model(name, weights, size), variant))


def contender_calls(name: str, model: torch.nn.Module) -> tuple[Encode, Decode]:
    """`(encode, decode)` of contender `name`'s `model` (see `load_model`)."""
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
    if args.worker == INTERLEAVED:
        return run_interleaved_worker(args)
    torch.set_num_threads(args.threads)
    encode, decode = load_contender(args.worker, args.weights, args.size, args.variant)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(1, 3, 1024, 1024, generator=generator)
    embedding = torch.randn(1, 256, 64, 64, generator=generator)  # stands in for the encoder's under --skip-encoder
    results: dict[str, float] = {}
    with torch.inference_mode():
        if not args.skip_encoder:
            results[ENCODER], embedding, results[ENCODER_FIRST] = measure(
                partial(encode, pixels), args.warmup, args.repeats
            )
        for count in [] if args.encoder_only else args.prompts:
            decode_count = partial(decode, embedding, *prompts(count))
            results[prompt_label(count)], _, _ = measure(decode_count, args.warmup, args.repeats)
        iou = decode(embedding, *prompts(1)).flatten().tolist()
    results[MEMORY] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"name": args.worker, "variant": args.variant, "results": results, "iou_1_prompt": iou}


def run_interleaved_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Every eager contender's encoder in this one process, timed round-robin: `{"results": {name: median s}}`."""
    torch.set_num_threads(args.threads)
    encoders = {name: load_contender(name, args.weights, args.size)[0] for name in args.contenders}
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        calls = {name: partial(encode, pixels) for name, encode in encoders.items()}
        return {"results": interleaved_medians(calls, args.warmup, args.repeats)}


@contextlib.contextmanager
def busy_process() -> Iterator[None]:
    """One competing single-threaded process spinning on a core for the duration: the load a data loader, a second
    model or a browser puts on a user's machine."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # let the scheduler see it before timing starts
        yield
    finally:
        spinner.kill()
        spinner.wait()


def matmul_speeds(threads: int, repeats: int = 10) -> dict[str, float]:
    """The CPU's fp32 matrix-product speed on the encoder's largest layer shape (4096 tokens x 768 -> 3072, best of
    `repeats`), in GFLOP/s, and the same layer dynamically quantised to int8 as a speed-up over fp32: the ceiling of
    what the encoder's linear layers can reach."""
    torch.set_num_threads(threads)
    tokens = torch.randn(4096, 768, generator=torch.Generator().manual_seed(0))
    layer = torch.nn.Linear(768, 3072)
    int8_layer = torch.ao.quantization.quantize_dynamic(
        torch.nn.Sequential(torch.nn.Linear(768, 3072)), {torch.nn.Linear}, torch.qint8
    )
    with torch.inference_mode():
        fp32 = min(measure(partial(layer, tokens), 1, 1)[0] for _ in range(repeats))
        int8 = min(measure(partial(int8_layer, tokens), 1, 1)[0] for _ in range(repeats))
    return {"fp32 GFLOP/s": 2 * 4096 * 768 * 3072 / fp32 / 1e9, "int8 vs fp32 linear": fp32 / int8}


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
        "load": args.load,
        "matmul": matmul_speeds(args.threads),
    }


def random_official_weights(size: str, path: Path) -> None:
    """The official model's state dict from its default initialisation, every parameter perturbed by 0.02 * randn,
    saved to `path`; both seeded, so that every run measures the same weights."""
    from safetensors.torch import save_file
    from segment_anything import sam_model_registry

    with torch.random.fork_rng():
        torch.manual_seed(0)
        sam = sam_model_registry[size](checkpoint=None)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in sam.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    save_file({key: value.contiguous() for key, value in sam.state_dict().items()}, str(path))


def ratio_columns(workers: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """`(header, numerator column, denominator column)` of the ratio columns: sam_hf against each reference in the same
    variant, and each sam_hf variant against sam_hf eager. Above 1x: the second is faster or smaller."""
    columns = []
    for label, worker in workers.items():
        name, variant = worker["name"], worker["variant"]
        ours = job_label("sam_hf", variant)
        if name != "sam_hf" and ours in workers:
            columns.append((f"{ours} vs {label}", label, ours))
    for label, worker in workers.items():
        if worker["name"] == "sam_hf" and worker["variant"] != "eager" and "sam_hf" in workers:
            columns.append((f"{label} vs sam_hf", "sam_hf", label))
    return columns


def environment_line(env: dict[str, Any]) -> str:
    malloc = " ".join(f"{key}={value}" for key, value in env["malloc_env"].items()) or "none"
    return (
        f"{env['size']}, torch {env['torch']}, transformers {env['transformers']}, {env['threads']} threads, "
        f"CPU: {env['cpu']}, MALLOC_* env: {malloc}, load: {env['load']}; median of {env['repeats']} after "
        f"{env['warmup']} warmup"
    ) + (
        f"; fp32 matmul peak {env['matmul']['fp32 GFLOP/s']:.0f} GFLOP/s, int8 linear "
        f"{env['matmul']['int8 vs fp32 linear']:.2f}x fp32 (4096x768 -> 3072)"
        if "matmul" in env
        else ""
    )


def markdown_table(rows: list[tuple[str, dict[str, float]]], workers: dict[str, dict[str, Any]]) -> list[str]:
    """`rows` of `(label with unit, value per column)`, one column per worker and the ratio columns."""
    ratios = ratio_columns(workers)
    lines = [
        "| measurement | " + " | ".join(list(workers) + [header for header, _, _ in ratios]) + " |",
        "|---" * (1 + len(workers) + len(ratios)) + "|",
    ]
    for label, values in rows:
        cells = [f"{values[column]:.3g}" if column in values else "" for column in workers]
        cells += [
            f"{values[num] / values[den]:.2f}x" if num in values and den in values else "" for _, num, den in ratios
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def table(
    args: argparse.Namespace,
    env: dict[str, Any],
    workers: dict[str, dict[str, Any]],
    interleaved: dict[str, dict[str, float]] | None = None,
) -> str:
    """The markdown report: one row per measurement (the busy and interleaved encoder rows when they ran), the ratio
    columns, and the IoU parity lines."""
    names = ([] if args.skip_encoder else [ENCODER, ENCODER_FIRST]) + [prompt_label(c) for c in args.prompts]
    names += [ENCODER_BUSY] if any(ENCODER_BUSY in worker["results"] for worker in workers.values()) else []
    rows = []
    for row in [*names, MEMORY]:
        values = {label: worker["results"][row] for label, worker in workers.items() if row in worker["results"]}
        rows.append((f"{row} ({'GiB' if row == MEMORY else 's'})", values))
    for row, values in (interleaved or {}).items():
        rows.append((f"{row} (s)", values))
    lines = [environment_line(env), "", *markdown_table(rows, workers), ""]
    if "official" in workers:
        reference = torch.tensor(workers["official"]["iou_1_prompt"])
        for label, worker in workers.items():
            if label != "official":
                diff = (torch.tensor(worker["iou_1_prompt"]) - reference).abs().max().item()
                lines.append(f"parity, 1 prompt: max |IoU({label}) - IoU(official)| = {diff:.2e}")
    return "\n".join(lines)


def jobs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """`(contender, variant)` pairs to run: every contender eager, and the other variants for sam_hf (and for the
    references with `--accelerate-references`)."""
    pairs = [(name, "eager") for name in args.contenders]
    for variant in (v for v in args.variants if v != "eager"):
        names = args.contenders if args.accelerate_references else ["sam_hf"]
        pairs += [(name, variant) for name in names if name in args.contenders]
    return pairs


def run_workers(
    module: str,
    pairs: list[tuple[str, str]],
    size: str,
    worker_args: list[str],
    weights: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Runs `python -m module --worker NAME --variant VARIANT --weights PATH *worker_args` for each pair in a fresh
    process and returns the JSON each prints last, by `job_label`. `weights` defaults to perturbed official weights
    saved for this call (`random_official_weights`)."""
    if weights is None:
        with tempfile.TemporaryDirectory() as tmp:
            random_official_weights(size, Path(tmp) / "official.safetensors")
            return run_workers(module, pairs, size, worker_args, Path(tmp) / "official.safetensors")
    workers: dict[str, dict[str, Any]] = {}
    for name, variant in pairs:
        print(f"running {job_label(name, variant)} ...", file=sys.stderr, flush=True)
        command = [sys.executable, "-m", module, "--worker", name, "--variant", variant, "--weights", str(weights)]
        done = subprocess.run(command + worker_args, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=True)
        workers[job_label(name, variant)] = json.loads(done.stdout.strip().splitlines()[-1])
    return workers


def write_results(args: argparse.Namespace, text: str, payload: dict[str, Any]) -> None:
    """Prints the table and writes it to `args.json` with suffix `.md`, and `payload` as JSON to `args.json`."""
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    args.json.with_suffix(".md").write_text(text + "\n")
    print(f"\nraw results: {args.json}, table: {args.json.with_suffix('.md')}")


def run_parent(args: argparse.Namespace) -> None:
    shared = ["--size", args.size, "--threads", str(args.threads), "--warmup", str(args.warmup)]
    shared += ["--repeats", str(args.repeats), "--prompts", *map(str, args.prompts)]
    shared += ["--contenders", *args.contenders] + (["--skip-encoder"] if args.skip_encoder else [])
    module = "benchmarks.benchmark_models"
    interleaved: dict[str, dict[str, float]] = {}
    if "sam_hf" in args.contenders:
        from sam_hf.modeling.cpu_kernels import load_kernel

        load_kernel()
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "official.safetensors"
        random_official_weights(args.size, weights)
        workers = run_workers(module, jobs(args), args.size, shared, weights)
        if args.busy and not args.skip_encoder:
            with busy_process():
                busy = run_workers(module, jobs(args), args.size, [*shared, "--encoder-only"], weights)
            for label, worker in busy.items():
                workers[label]["results"][ENCODER_BUSY] = worker["results"][ENCODER]
        if args.interleaved and not args.skip_encoder:
            pair = [(INTERLEAVED, "eager")]
            interleaved[ENCODER_INTERLEAVED] = run_workers(module, pair, args.size, shared, weights)[INTERLEAVED]
            with busy_process():
                results = run_workers(module, pair, args.size, shared, weights)[INTERLEAVED]
            interleaved[ENCODER_INTERLEAVED_BUSY] = results
    env = environment(args)
    interleaved = {row: result["results"] for row, result in interleaved.items()}
    payload = {"environment": env, "workers": workers, "interleaved": interleaved}
    write_results(args, table(args, env, workers, interleaved), payload)


def base_parser(description: str, json_name: str, warmup: int, repeats: int) -> argparse.ArgumentParser:
    """The options every benchmark here shares: model size, contenders, threads, warm-up and repeat counts, the JSON
    path under benchmarks/results/ and the hidden worker options."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="sam_hf variants")
    parser.add_argument("--accelerate-references", action="store_true", help="run the variants for all contenders")
    parser.add_argument("--load", default="quiet", help="what else ran on the machine, for the header")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "benchmarks" / "results" / json_name)
    parser.add_argument("--worker", choices=[*CONTENDERS, INTERLEAVED], help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, default="eager", help=argparse.SUPPRESS)
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
    parser.add_argument("--prompts", nargs="+", type=int, default=[1, 64, 256], help="prompt counts to time")
    parser.add_argument("--skip-encoder", action="store_true", help="decode from a random embedding instead")
    parser.add_argument("--no-busy", dest="busy", action="store_false", help="skip the busy-machine encoder row")
    parser.add_argument(
        "--no-interleaved", dest="interleaved", action="store_false", help="skip the one-process interleaved rows"
    )
    parser.add_argument("--encoder-only", action="store_true", help=argparse.SUPPRESS)
    run_cli(parser, argv, run_worker, run_parent)


if __name__ == "__main__":
    main()
