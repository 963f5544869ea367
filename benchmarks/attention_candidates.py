"""Times the candidate implementations of one global-attention block of vit_b's image encoder (12 heads, 64x64 tokens,
head_dim 64, decomposed relative-position bias) on the same inputs, interleaved in one process, on an idle machine and
with one competing single-threaded busy process, and prints a markdown table. sam_hf keeps the fastest (issue #22):

- `per-head blocks`: the previous code, one head and one 4 MiB block of query rows at a time, the bias added in place
  into the block's logits (hundreds of small matrix products per block);
- `all-head blocks`: the same loop with all heads in one batched product per block of rows;
- `SDPA, bias chunks of R rows`: sam_hf's `SamVisionAttention`: `scaled_dot_product_attention` over all heads for R
  query rows at a time, the bias of those rows built as its additive mask (R from `BIAS_CHUNK_ELEMENTS`, and others);
- `augmented query/key`: the bias folded into the dot product exactly (queries carry their rel_h / rel_w rows, keys a
  one-hot of their row and column), one SDPA call without a mask, at three times the query-key multiply-adds;
- `FlexAttention, compiled`: `torch.nn.attention.flex_attention` under `torch.compile` with the bias as its
  `score_mod`, added inside the kernel (no mask in memory); the compile is in the warm-up round;
- `fused kernel`: sam_hf's `cpu_kernels` (C++, one OpenMP region over (head, 2 grid rows = 128 queries) tasks handed
  out dynamically, each task computing its rows' bias and adding it to their logits in cache).

    python -m benchmarks.attention_candidates [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from benchmarks.benchmark_models import busy_process
from sam_hf.configuration_sam import PRESETS, SamVisionConfig
from sam_hf.modeling import cpu_kernels, image_encoder

HEADS, SIDE, HEAD_DIM = 12, 64, 64
TOKENS = SIDE * SIDE


def global_attention() -> image_encoder.SamVisionAttention:
    """vit_b's global-attention module with seeded random relative-position tables."""
    attention = image_encoder.SamVisionAttention(SamVisionConfig(**PRESETS["vit_b"]), window_size=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for table in (attention.rel_pos_h, attention.rel_pos_w):
            table.copy_(torch.randn(table.shape, generator=generator) * 0.1)
    return attention


def inputs(attention: image_encoder.SamVisionAttention) -> dict[str, torch.Tensor]:
    """Seeded query, key, value `(1, heads, tokens, head_dim)`; bias terms rel_h, rel_w `(1, heads, tokens, 64)`."""
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, HEADS, TOKENS, HEAD_DIM, generator=generator) for _ in range(3))
    rel_h, rel_w = attention.decomposed_relative_position(query, SIDE, SIDE)
    return {"query": query, "key": key, "value": value, "rel_h": rel_h, "rel_w": rel_w}


def head_blocks(x: dict[str, torch.Tensor], all_heads: bool, block_elements: int = 1 << 20) -> torch.Tensor:
    """Softmax attention a block of query rows at a time, bias added in place into the block's logits; one head per
    product, or all heads batched."""
    query, value, rel_h, rel_w = x["query"][0], x["value"][0], x["rel_h"][0], x["rel_w"][0]
    scaled_key_t = x["key"][0].transpose(-1, -2) * HEAD_DIM**-0.5
    output = torch.empty_like(query)
    rows = block_elements // TOKENS
    for head in [slice(None)] if all_heads else [slice(h, h + 1) for h in range(HEADS)]:
        for start in range(0, TOKENS, rows):
            block = slice(start, start + rows)
            logits = query[head, block] @ scaled_key_t[head]
            grid = logits.view(logits.shape[0], -1, SIDE, SIDE)
            grid.add_(rel_h[head, block, :, None]).add_(rel_w[head, block, None, :])
            output[head, block] = torch.softmax(logits, dim=-1) @ value[head]
    return output[None]


def sdpa_chunks(attention: image_encoder.SamVisionAttention, x: dict[str, torch.Tensor], rows: int) -> torch.Tensor:
    """sam_hf's attention without the fused kernel (SDPA over all heads, its bias as the additive mask) with chunks of
    `rows` query rows."""
    kept = image_encoder.BIAS_CHUNK_ELEMENTS
    image_encoder.BIAS_CHUNK_ELEMENTS = rows * HEADS * TOKENS
    kept_setting = os.environ.get("SAM_HF_CPU_KERNELS")
    os.environ["SAM_HF_CPU_KERNELS"] = "0"
    try:
        return attention._attention_with_relative_position(x["query"], x["key"], x["value"], SIDE, SIDE)
    finally:
        image_encoder.BIAS_CHUNK_ELEMENTS = kept
        if kept_setting is None:
            del os.environ["SAM_HF_CPU_KERNELS"]
        else:
            os.environ["SAM_HF_CPU_KERNELS"] = kept_setting


def augmented(x: dict[str, torch.Tensor]) -> torch.Tensor:
    """The bias as part of the dot product: [q * scale, rel_h, rel_w] . [k, onehot(row), onehot(column)]."""
    rows, columns = torch.arange(TOKENS) // SIDE, torch.arange(TOKENS) % SIDE
    one_hot = torch.cat([F.one_hot(rows, SIDE), F.one_hot(columns, SIDE)], dim=-1).float()
    query = torch.cat([x["query"] * HEAD_DIM**-0.5, x["rel_h"], x["rel_w"]], dim=-1)
    key = torch.cat([x["key"], one_hot.expand(1, HEADS, TOKENS, 2 * SIDE)], dim=-1)
    return F.scaled_dot_product_attention(query, key, x["value"], scale=1.0)


def flex(compiled: Callable[..., torch.Tensor], x: dict[str, torch.Tensor]) -> torch.Tensor:
    """FlexAttention with the decomposed bias as its score modification: key k sits at row k // 64, column k % 64."""
    rel_h, rel_w = x["rel_h"], x["rel_w"]

    def add_bias(score, batch, head, query_index, key_index):
        return (
            score
            + rel_h[batch, head, query_index, key_index // SIDE]
            + rel_w[batch, head, query_index, key_index % SIDE]
        )

    return compiled(x["query"], x["key"], x["value"], score_mod=add_bias)


def candidates(
    attention: image_encoder.SamVisionAttention, x: dict[str, torch.Tensor]
) -> dict[str, Callable[[], torch.Tensor]]:
    """The candidates by table label, each a call on the same inputs."""
    kept_rows = image_encoder.BIAS_CHUNK_ELEMENTS // (HEADS * TOKENS)
    found = {
        "per-head blocks (previous)": partial(head_blocks, x, all_heads=False),
        "all-head blocks": partial(head_blocks, x, all_heads=True, block_elements=1 << 22),
    }
    for rows in sorted({128, kept_rows, 512, 1024}):
        label = f"SDPA, bias chunks of {rows} rows" + (" (sam_hf without the kernel)" if rows == kept_rows else "")
        found[label] = partial(sdpa_chunks, attention, x, rows)
    found["augmented query/key"] = partial(augmented, x)
    found["FlexAttention, compiled"] = partial(flex, torch.compile(flex_attention), x)
    if cpu_kernels.load_kernel() is not None:
        arguments = (x["query"], x["key"], x["value"], attention.rel_pos_h, attention.rel_pos_w, (SIDE, SIDE))
        found["fused kernel (sam_hf)"] = partial(cpu_kernels.relative_position_attention, *arguments)
    return found


def time_round_robin(functions: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, called in turn `repeats` times after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(1 + repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    attention = global_attention()
    x = inputs(attention)
    functions = candidates(attention, x)
    with torch.inference_mode():
        expected = functions["per-head blocks (previous)"]()
        errors = {name: (function() - expected).abs().max().item() for name, function in functions.items()}
        idle = time_round_robin(functions, args.repeats)
        with busy_process():
            busy = time_round_robin(functions, args.repeats)
    previous = "per-head blocks (previous)"
    print(f"one global block of vit_b (12 heads, 4096 tokens), {args.threads} threads, median of {args.repeats}\n")
    print("| candidate | idle (ms) | vs previous | 1 busy process (ms) | vs previous | max abs diff |")
    print("|---|---|---|---|---|---|")
    for name in functions:
        print(
            f"| {name} | {idle[name] * 1e3:.0f} | {idle[previous] / idle[name]:.2f}x | {busy[name] * 1e3:.0f} | "
            f"{busy[previous] / busy[name]:.2f}x | {errors[name]:.1e} |"
        )


if __name__ == "__main__":
    main()
