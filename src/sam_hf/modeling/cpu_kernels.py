"""The image encoder's CPU kernels (`csrc/cpu_kernels.cpp`, issue #22): whole ViT blocks and, for layers the block
kernels cannot run (an adapted or quantised linear layer, another activation), attention with the decomposed
relative-position bias and the GELU MLP. Each parallel region covers a whole step of a layer over tasks handed out
dynamically (a window, a band of query rows of one head, a block of tokens), so a thread that another process delays
does fewer tasks instead of holding the layer up, and each task's intermediate values stay in cache: no bias tensor,
no large fresh allocation.

They are compiled with `torch.utils.cpp_extension` on first use, once per machine, torch install and kernel source
(about a minute; cached under `TORCH_EXTENSIONS_DIR`, by default `~/.cache/torch_extensions`, in a folder named by
`extension_name()`), and need a C++ compiler with OpenMP.
Where they cannot be built, or do not apply (autograd, tracing, `torch.compile`, ONNX export, another device or dtype,
the parts of a layer that are quantised or adapted), the encoder runs the same computation in ATen calls: the same
numbers up to rounding (max abs diff ~1e-6). `SAM_HF_CPU_KERNELS=0` turns them off.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import nn
from transformers.activations import GELUActivation

from ..prompts import is_tracing
from .common import relative_position_table

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cpp"
ROWS_PER_TASK = 128  # query rows per attention task (whole grid rows): 2 MiB of logits over vit's 4096 keys, in cache
TOKENS_PER_TASK = 256  # tokens per MLP or qkv task: 3 MiB of vit_b's hidden activations

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
                name=extension_name(),
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


def extension_name() -> str:
    """The extension's name, and so its build folder: it carries a digest of the kernel source (its path, which the
    build file names, and its content) and of the torch install it links against, so that two checkouts or virtual
    environments sharing the build cache each keep their own build instead of rebuilding over each other's."""
    digest = hashlib.sha256(SOURCE.read_bytes())
    digest.update(f"{SOURCE.resolve()} {torch.__version__} {Path(torch.__file__).parent}".encode())
    return f"sam_hf_cpu_kernels_{digest.hexdigest()[:12]}"


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
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor | None:
    """`softmax(query key^T / sqrt(head_dim) + rel_h[q, kh] + rel_w[q, kw]) value` with the decomposed
    relative-position bias of `SamVisionAttention.decomposed_relative_position`, computed a task at a time, or `None`
    where the kernels do not apply or could not be built (see `applies`).

    Args:
        query, key, value: `(batch, heads, height * width, head_dim)`, any strides with a unit one along `head_dim`
            (views of the qkv projection's output are read in place).
        rel_pos_h, rel_pos_w: `(2 * height - 1, head_dim)` and `(2 * width - 1, head_dim)` embeddings of the offsets.
        size: the grid's `(height, width)`.

    Returns:
        `(batch, heads, height * width, head_dim)`, a transposed view of a contiguous `(batch, tokens, heads,
        head_dim)` tensor (the layout the output projection reads).
    """
    if not applies(query, key, value, rel_pos_h, rel_pos_w) or load_kernel() is None:
        return None
    height, width = size
    query, key, value = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    table_h, table_w = relative_position_table(height, rel_pos_h), relative_position_table(width, rel_pos_w)
    return _kernel.relative_attention(query, key, value, table_h, table_w, _band_rows(width))


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


def vision_block(hidden_states: torch.Tensor, layer: nn.Module) -> torch.Tensor | None:
    """A `SamVisionLayer`'s block on `(batch, height, width, channels)` tokens, or `None` where the kernels do not
    apply (see `applies`; the layer's linear layers, norms and GELU must be the plain torch ones, with the
    relative-position bias) or could not be built. A windowed block is one task per window; a global block three
    parallel regions (norm1 and qkv, attention, the rest)."""
    attention, mlp = layer.attn, layer.mlp
    linears = (attention.qkv, attention.proj, mlp.lin1, mlp.lin2)
    norms = (layer.layer_norm1, layer.layer_norm2)
    if (
        any(type(linear) is not nn.Linear for linear in linears)
        or any(linear.bias is None for linear in linears[1:])
        or any(type(norm) is not nn.LayerNorm or norm.weight is None or norm.bias is None for norm in norms)
        or not attention.use_rel_pos
        or not _is_exact_gelu(mlp.act)
    ):
        return None
    if not applies(hidden_states, *layer.parameters()) or load_kernel() is None:
        return None
    qkv_bias = attention.qkv.bias
    if qkv_bias is None:  # the padding's qkv is then the projection of zero: zero
        qkv_bias = attention.qkv.weight.new_zeros(attention.qkv.out_features)
    weights = [
        *(layer.layer_norm1.weight, layer.layer_norm1.bias, attention.qkv.weight, qkv_bias),
        *(attention.proj.weight, attention.proj.bias, layer.layer_norm2.weight, layer.layer_norm2.bias),
        *(mlp.lin1.weight, mlp.lin1.bias, mlp.lin2.weight, mlp.lin2.bias),
    ]
    hidden_states = hidden_states.contiguous()
    window, (height, width) = attention.window_size, hidden_states.shape[1:3]
    arguments = (
        hidden_states,
        weights,
        layer.layer_norm1.eps,
        layer.layer_norm2.eps,
        relative_position_table(window or height, attention.rel_pos_h),
        relative_position_table(window or width, attention.rel_pos_w),
        attention.num_attention_heads,
    )
    if window > 0:
        return _kernel.windowed_block(*arguments)
    return _kernel.global_block(*arguments, _band_rows(width), TOKENS_PER_TASK)


def _band_rows(width: int) -> int:
    """Query grid rows per attention task: `ROWS_PER_TASK` query rows, rounded down to whole grid rows."""
    return max(1, ROWS_PER_TASK // width)


def _is_exact_gelu(activation: nn.Module) -> bool:
    """transformers' `ACT2FN["gelu"]` or torch's `nn.GELU()`: the erf GELU that `at::gelu` computes."""
    if isinstance(activation, nn.GELU):
        return activation.approximate == "none"
    return type(activation) is GELUActivation and activation.act is nn.functional.gelu
