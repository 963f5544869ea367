"""SAM-HQ's decoder overhead against SAM's, on the same weights where they are shared, in one process, interleaved.

Contenders (vit_b size, fp32, CPU): the prompt encoder + mask decoder of
- `segment_anything` (SAM) and `segment_anything_hq` (SAM-HQ), the official packages;
- sam_hf with a SAM config and with the `sam-hq-vit-b` config.
The official SAM-HQ model is built with random weights perturbed by 0.02 * randn; the official SAM gets its shared
weights (everything but the HQ token, its MLP and the fusion convolutions); both sam_hf models are converted from
those state dicts. Each round times every contender once per prompt count, in turn (so machine load hits all alike);
the medians and the ratios HQ / SAM are written as markdown and JSON. sam_hf's SAM-HQ is timed as a predictor
prompts one image (the same embedding tensor each call: its per-image HQ features are computed once and reused), and
on a new embedding tensor each call (`sam_hf SAM-HQ, new image`: the features computed every time). The image encoder
is the same ViT for both (SAM-HQ only keeps its first global block's output); one interleaved encoder timing of the two
sam_hf models shows it.

    python -m benchmarks.benchmark_sam_hq [--prompts 1 16] [--rounds 3] [--threads 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from segment_anything import sam_model_registry as sam_registry
from segment_anything_hq import sam_model_registry as hq_registry

from sam_hf.conversion import build_model

RESULTS = Path(__file__).resolve().parent / "results"
ENCODER_ROW = "image encoder, 1 image 1024x1024"


def perturbed_models() -> dict[str, torch.nn.Module]:
    """The four models: official SAM-HQ (perturbed), official SAM with its shared weights, and both in sam_hf."""
    torch.manual_seed(0)
    official_hq = hq_registry["vit_b"](checkpoint=None).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in [*official_hq.parameters(), *official_hq.prompt_encoder.buffers()]:
            tensor.add_(0.02 * torch.randn(tensor.shape, generator=generator))
    official_sam = sam_registry["vit_b"](checkpoint=None).eval()
    shared = {key: value for key, value in official_hq.state_dict().items() if key in official_sam.state_dict()}
    official_sam.load_state_dict(shared, strict=True)
    return {
        "official SAM": official_sam,
        "official SAM-HQ": official_hq,
        "sam_hf SAM": build_model(official_sam.state_dict()),
        "sam_hf SAM-HQ": build_model(official_hq.state_dict()),
    }


def decoder_call(name: str, model: torch.nn.Module, prompts: int) -> Callable[[], object]:
    """One prompt encoder + mask decoder call on a fixed random embedding: `prompts` single-click prompts, multimask
    output (the official SAM-HQ returns its one fused mask per prompt)."""
    generator = torch.Generator().manual_seed(prompts)
    embedding = torch.randn(1, 256, 64, 64, generator=generator)
    early = torch.randn(1, 64, 64, 768, generator=generator)  # SAM-HQ's first global block's output
    points = torch.rand(prompts, 1, 2, generator=generator) * 1024
    labels = torch.ones(prompts, 1, dtype=torch.long)
    if name.startswith("official"):
        hq = name.endswith("HQ")

        def official() -> object:
            sparse, dense = model.prompt_encoder(points=(points, labels), boxes=None, masks=None)
            extra = {"hq_token_only": False, "interm_embeddings": [early]} if hq else {}
            return model.mask_decoder(embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, True, **extra)

        return official
    embeddings = torch.cat([embedding, early.permute(0, 3, 1, 2)], 1) if "HQ" in name else embedding
    if name.endswith("new image"):  # an equal copy is another tensor: nothing cached applies
        return lambda: model(image_embeddings=embeddings.clone(), input_points=points[None], input_labels=labels[None])
    return lambda: model(image_embeddings=embeddings, input_points=points[None], input_labels=labels[None])


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark and writes `benchmarks/results/sam_hq.{md,json}` (or `--json PATH` and its `.md`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=RESULTS / "sam_hq.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = perturbed_models()
    models["sam_hf SAM-HQ, new image"] = models["sam_hf SAM-HQ"]
    calls = {
        (name, count): decoder_call(name, model, count) for name, model in models.items() for count in args.prompts
    }
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(5))
    for name in ("sam_hf SAM", "sam_hf SAM-HQ"):
        calls[(name, ENCODER_ROW)] = lambda model=models[name]: model.get_image_embeddings(pixels)
    times: dict[tuple[str, object], list[float]] = {key: [] for key in calls}
    for round_index in range(args.rounds + 1):  # round 0 warms up
        for key, fn in calls.items():
            elapsed = timed(fn)
            if round_index:
                times[key].append(elapsed)
    medians = {key: statistics.median(values) for key, values in times.items()}
    rows = [(f"prompt encoder + decoder, {count} prompt{'s' * (count > 1)}", count) for count in args.prompts]
    rows.append((ENCODER_ROW, ENCODER_ROW))
    lines = [
        f"SAM-HQ vs SAM, vit_b weights shared, fp32, {args.threads} threads, median of {args.rounds} interleaved "
        f"rounds after 1 warm-up (seconds; torch {torch.__version__})",
        "",
        "| step | official SAM | official SAM-HQ | HQ / SAM | sam_hf SAM | sam_hf SAM-HQ | HQ / SAM |",
        "|---|---|---|---|---|---|---|",
    ]
    results = []
    for label, key in rows:
        cells, record = [label], {"step": label}
        for family in ("official", "sam_hf"):
            sam, hq = medians.get((f"{family} SAM", key)), medians.get((f"{family} SAM-HQ", key))
            if sam is None:
                cells += ["-", "-", "-"]
                continue
            cells += [f"{sam:.3f}", f"{hq:.3f}", f"{hq / sam:.2f}x"]
            record[family] = {"sam_s": sam, "hq_s": hq, "ratio": hq / sam}
        lines.append("| " + " | ".join(cells) + " |")
        new_image = medians.get(("sam_hf SAM-HQ, new image", key))
        if new_image is not None:
            record["sam_hf_hq_new_image_s"] = new_image
            lines.append(
                f"| {label}, sam_hf SAM-HQ on a new image (HQ features computed) | | | | | {new_image:.3f} | "
                f"{new_image / medians[('sam_hf SAM', key)]:.2f}x |"
            )
        results.append(record)
    table = "\n".join(lines)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "results": results}, indent=2))
    args.json.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
