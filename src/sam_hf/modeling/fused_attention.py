"""The fused CPU kernel of the image encoder's attention with the decomposed relative-position bias
(`csrc/relative_attention.cpp`, issue #22): one parallel region per layer, the bias added to a block of query rows'
logits in cache, no bias tensor in memory.

It is compiled with `torch.utils.cpp_extension` on first use, once per machine and torch version (about a minute;
cached under `TORCH_EXTENSIONS_DIR`, by default `~/.cache/torch_extensions`), and needs a C++ compiler with OpenMP.
Where it cannot be built, or does not apply (autograd, tracing, `torch.compile`, ONNX export, another device or dtype),
`SamVisionAttention` runs `scaled_dot_product_attention` in chunks instead: the same numbers (max abs diff ~1e-6).
`SAM_HF_FUSED_ATTENTION=0` turns it off.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import ModuleType

import torch

from ..prompts import is_tracing

SOURCE = Path(__file__).with_name("csrc") / "relative_attention.cpp"
ROWS_PER_TASK = 128  # query rows per task: 2 MiB of logits over vit's 4096 keys, which stay in cache

_kernel: ModuleType | None = None
_unavailable: str | None = None  # why the kernel could not be built


def load_kernel() -> ModuleType | None:
    """The compiled kernel (building it on the first call), or `None` when it cannot be built; the reason is warned
    once and kept in `unavailable_reason()`."""
    global _kernel, _unavailable
    if _kernel is None and _unavailable is None:
        from torch.utils.cpp_extension import load

        try:
            _kernel = load(
                name="sam_hf_relative_attention",
                sources=[str(SOURCE)],
                extra_cflags=["-O3", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
            )
        except (OSError, RuntimeError, ImportError, ValueError) as error:  # no compiler, no OpenMP, no headers
            _unavailable = f"{type(error).__name__}: {error}".splitlines()[0]
            warnings.warn(
                f"sam_hf's fused attention kernel could not be built ({_unavailable}); the image encoder runs "
                "chunked scaled_dot_product_attention instead (same results, slower on a busy CPU).",
                stacklevel=2,
            )
    return _kernel


def unavailable_reason() -> str | None:
    """Why the kernel could not be built (`None` if it was, or was not tried yet)."""
    return _unavailable


def applies(*tensors: torch.Tensor) -> bool:
    """Whether the kernel can run these tensors: enabled, float32 on the CPU, no gradient wanted, not traced,
    compiled or exported (those see the SDPA path)."""
    if os.environ.get("SAM_HF_FUSED_ATTENTION", "1") == "0":
        return False
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return not is_tracing()


def relative_position_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
) -> torch.Tensor | None:
    """`softmax(query key^T / sqrt(head_dim) + rel_h[q, kh] + rel_w[q, kw]) value`, or `None` where the kernel does
    not apply or could not be built (see `applies`).

    Args:
        query, key, value: `(batch, heads, tokens, head_dim)`, any strides with a unit one along `head_dim` (views
            of the qkv projection's output are read in place).
        rel_h, rel_w: `(batch, heads, tokens, height)` and `(batch, heads, tokens, width)`, tokens = height * width
            (`SamVisionAttention.decomposed_relative_position`).

    Returns:
        `(batch, heads, tokens, head_dim)`, a transposed view of a contiguous `(batch, tokens, heads, head_dim)`
        tensor (the layout the output projection reads).
    """
    if not applies(query, key, value, rel_h, rel_w) or load_kernel() is None:
        return None
    query, key, value = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    output = _kernel.relative_attention(
        query, key, value, rel_h.contiguous(), rel_w.contiguous(), query.shape[-1] ** -0.5, ROWS_PER_TASK
    )
    return output.transpose(1, 2)
