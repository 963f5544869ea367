"""The image encoder's CPU kernels (`csrc/cpu_kernels.cpp`, issue #22): attention with the decomposed
relative-position bias, and the GELU MLP. Each runs a layer in one parallel region over tasks handed out dynamically
(a block of query rows of one head, a block of tokens), so a thread that another process delays does fewer tasks
instead of holding the layer up, and each task's intermediate values stay in cache: no bias tensor, no large fresh
allocation.

They are compiled with `torch.utils.cpp_extension` on first use, once per machine and torch version (about a minute;
cached under `TORCH_EXTENSIONS_DIR`, by default `~/.cache/torch_extensions`), and need a C++ compiler with OpenMP.
Where they cannot be built, or do not apply (autograd, tracing, `torch.compile`, ONNX export, another device or dtype,
quantised or adapted linear layers), the encoder runs the same computation in ATen calls: the same numbers up to
rounding (max abs diff ~1e-6). `SAM_HF_CPU_KERNELS=0` turns them off.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import nn
from transformers.activations import GELUActivation

from ..prompts import is_tracing

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cpp"
ROWS_PER_TASK = 128  # query rows per attention task: 2 MiB of logits over vit's 4096 keys, which stay in cache
TOKENS_PER_TASK = 256  # tokens per MLP task: 3 MiB of vit_b's hidden activations

_kernel: ModuleType | None = None
_unavailable: str | None = None  # why the kernels could not be built


def load_kernel() -> ModuleType | None:
    """The compiled kernels (building them on the first call), or `None` when they cannot be built; the reason is
    warned once and kept in `unavailable_reason()`."""
    global _kernel, _unavailable
    if _kernel is None and _unavailable is None:
        from torch.utils.cpp_extension import load

        try:
            _kernel = load(
                name="sam_hf_cpu_kernels",
                sources=[str(SOURCE)],
                extra_cflags=["-O3", "-fopenmp"],
                extra_ldflags=["-fopenmp"],
            )
        except (OSError, RuntimeError, ImportError, ValueError) as error:  # no compiler, no OpenMP, no headers
            _unavailable = f"{type(error).__name__}: {error}".splitlines()[0]
            warnings.warn(
                f"sam_hf's CPU kernels could not be built ({_unavailable}); the image encoder runs its attention and "
                "MLP in ATen calls instead (same results, slower, above all on a busy CPU).",
                stacklevel=2,
            )
    return _kernel


def unavailable_reason() -> str | None:
    """Why the kernels could not be built (`None` if they were, or were not tried yet)."""
    return _unavailable


def applies(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can run these tensors: enabled, float32 on the CPU, no gradient wanted, not traced,
    compiled or exported (those see the ATen path)."""
    if os.environ.get("SAM_HF_CPU_KERNELS", "1") == "0":
        return False
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return not is_tracing()


def relative_position_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
) -> torch.Tensor | None:
    """`softmax(query key^T / sqrt(head_dim) + rel_h[q, kh] + rel_w[q, kw]) value`, or `None` where the kernels do
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


def gelu_mlp(tokens: torch.Tensor, mlp: nn.Module) -> torch.Tensor | None:
    """`mlp(tokens)` for a `SamMLPBlock` with plain `nn.Linear` layers and exact GELU, or `None` where the kernels do
    not apply (see `applies`; quantised or adapted layers, another activation) or could not be built.

    Args:
        tokens: `(tokens, hidden_size)`.

    Returns:
        `(tokens, hidden_size)`.
    """
    linears = (mlp.lin1, mlp.lin2)
    if any(type(linear) is not nn.Linear or linear.bias is None for linear in linears) or not _is_exact_gelu(mlp.act):
        return None
    weights = [tensor for linear in linears for tensor in (linear.weight, linear.bias)]
    if not applies(tokens, *weights) or load_kernel() is None:
        return None
    return _kernel.gelu_mlp(tokens.contiguous(), *weights, TOKENS_PER_TASK)


def _is_exact_gelu(activation: nn.Module) -> bool:
    """transformers' `ACT2FN["gelu"]` or torch's `nn.GELU()`: the erf GELU that `at::gelu` computes."""
    if isinstance(activation, nn.GELU):
        return activation.approximate == "none"
    return type(activation) is GELUActivation and activation.act is nn.functional.gelu
