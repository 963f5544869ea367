"""The image encoder: an MAE-pretrained ViT with windowed and global attention, decomposed relative position bias,
and a convolutional neck that maps `(batch, 3, 1024, 1024)` pixels to a `(batch, 256, 64, 64)` image embedding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from ..configuration_sam import SamVisionConfig
from ..prompts import is_tracing
from .common import SamLayerNorm2d, SamMLPBlock, relative_position_table
from .cpu_kernels import gelu_mlp, relative_position_attention, vision_block

# Attention runs a chunk of queries at a time with at most this many bias values (32 MiB in fp32, small enough to stay
# in the allocator's pool; larger chunks are freshly mapped, and page faults, on every call): one global block of vit_b
# is then 25 fused SDPA calls instead of a 800 MB bias (benchmarks/attention_candidates.py).
BIAS_CHUNK_ELEMENTS = 1 << 23
# A layer's largest activations stay under this many elements (16 MiB in fp32): the MLP runs a block of tokens at a
# time, a windowed layer a band of window rows. Whole, vit_b's are 38-50 MB, above glibc's largest pooled size (32 MiB),
# so they would be freshly mapped, and page-faulted, in every layer: 560k page faults per image, 0.7-1.3 s of ~9 s.
ACTIVATION_CHUNK_ELEMENTS = 1 << 22


def chunks_activations(hidden_states: torch.Tensor) -> bool:
    """Whether a layer runs in chunks (`ACTIVATION_CHUNK_ELEMENTS`): on the CPU, in eager mode. Traced, compiled and
    exported graphs keep whole tensors, with symbolic shapes."""
    return hidden_states.device.type == "cpu" and not is_tracing()


@dataclass
class SamVisionEncoderOutput(ModelOutput):
    """
    Args:
        last_hidden_state: `(batch_size, output_channels, grid, grid)` image embeddings (the neck's output).
        hidden_states: when `output_hidden_states`, the ViT tokens `(batch_size, grid, grid, hidden_size)` after the
            patch and position embedding and after each layer (`num_hidden_layers + 1` tensors).
        attentions: when `output_attentions`, each layer's softmax attention weights, as transformers returns them:
            `(batch_size * num_windows * num_heads, tokens, tokens)` (`num_windows` 1 for global layers, `tokens` the
            padded window's or the whole grid's).
    """

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class SamVisionAttention(nn.Module):
    """Multi-head self-attention over a `(batch, height, width, channels)` grid of tokens, within `window_size`
    windows (or globally when `window_size == 0`), with the decomposed relative position bias of MViTv2 added to the
    attention logits.

    `config._attn_implementation` picks the code: `"sdpa"` (default) runs fused attention a chunk of queries at a
    time, never materialising the attention weights; `"eager"`, or `output_attentions=True`, computes and returns
    them."""

    def __init__(self, config: SamVisionConfig, window_size: int = 0) -> None:
        super().__init__()
        self.config = config
        self.window_size = window_size
        self.num_attention_heads = config.num_attention_heads
        head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, config.hidden_size * 3, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.use_rel_pos = config.use_rel_pos
        if self.use_rel_pos:
            input_size = window_size if window_size > 0 else config.image_size // config.patch_size
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size - 1, head_dim))

    def decomposed_relative_position(self, query: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
        """The query's dot products with the embeddings of its vertical and horizontal offsets to every key row and
        column: `(batch, heads, height * width, height)` and `(batch, heads, height * width, width)`."""
        batch_size, num_heads, _, head_dim = query.shape
        grid_query = query.reshape(batch_size, num_heads, height, width, head_dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", grid_query, relative_position_table(height, self.rel_pos_h))
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", grid_query, relative_position_table(width, self.rel_pos_w))
        return rel_h.flatten(2, 3), rel_w.flatten(2, 3)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(batch, height, width, channels)` -> the same shape, and the attention weights
        `(batch * num_windows * heads, tokens, tokens)` when `output_attentions` (else `None`).

        Windowed attention pads the grid to whole windows, and the padding takes part in attention, as in the
        official model. The input and output projections run on the unpadded grid: a padded token's qkv is the qkv
        bias (its input is zero), and the padded outputs are cropped before the output projection."""
        size = hidden_states.shape[1:3]
        qkv = self.qkv(hidden_states)
        if self.window_size > 0:
            # A padding token's qkv: the projection of a zero token (its bias; any Linear, int8 ones included).
            padding_qkv = self.qkv(hidden_states.new_zeros(1, hidden_states.shape[-1]))[0]
            qkv, padded_size = window_partition(qkv, self.window_size, pad_value=padding_qkv)
        attn_output, attn_weights = self._attention(qkv, output_attentions)
        if self.window_size > 0:
            attn_output = window_unpartition(attn_output, self.window_size, padded_size, size)
        return self.proj(attn_output), attn_weights

    def _attention(self, qkv: torch.Tensor, output_attentions: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(batch, height, width, 3 * channels)` queries, keys and values -> `(batch, height, width, channels)`
        attention output, and the weights when `output_attentions`."""
        batch_size, height, width, _ = qkv.shape
        qkv = qkv.reshape(batch_size, height * width, 3, self.num_attention_heads, -1)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, tokens, head_dim)
        attn_weights = None
        if output_attentions or self.config._attn_implementation == "eager":
            attn_output, attn_weights = self._eager_attention(query, key, value, height, width)
            attn_weights = attn_weights.flatten(0, 1) if output_attentions else None
        elif self.use_rel_pos:
            attn_output = self._attention_with_relative_position(query, key, value, height, width)
        else:
            attn_output = F.scaled_dot_product_attention(query, key, value)
        return attn_output.transpose(1, 2).reshape(batch_size, height, width, -1), attn_weights

    def _eager_attention(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention with its weights materialised: `(batch, heads, tokens, head_dim)` output and
        `(batch, heads, tokens, tokens)` softmax weights (tokens x tokens floats per head: large for global blocks)."""
        logits = (query * query.shape[-1] ** -0.5) @ key.transpose(-1, -2)
        if self.use_rel_pos:
            rel_h, rel_w = self.decomposed_relative_position(query, height, width)
            logits = logits + (rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2)
        attn_weights = torch.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
        return attn_weights @ value, attn_weights

    def _attention_with_relative_position(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        # The bias of key (kh, kw) is rel_h[kh] + rel_w[kw]. Expanded, it is heads x tokens x tokens floats (800 MB
        # per global block of vit_b), so it is built for a chunk of queries at a time and each chunk is one fused SDPA
        # call over all heads: few, large operations, which keep their speed when other processes share the cores
        # (a loop of small per-head products loses most of it, each waiting for the slowest thread). On the CPU the
        # fused kernel does better still: one parallel region, the bias added in cache (`cpu_kernels`).
        fused = relative_position_attention(query, key, value, self.rel_pos_h, self.rel_pos_w, (height, width))
        if fused is not None:
            return fused
        rel_h, rel_w = self.decomposed_relative_position(query, height, width)
        batch_size, num_heads, num_tokens = query.shape[:3]
        chunk = max(1, BIAS_CHUNK_ELEMENTS // (batch_size * num_heads * num_tokens))
        outputs = []
        for start in range(0, num_tokens, chunk):
            rows = slice(start, start + chunk)
            bias = (rel_h[:, :, rows, :, None] + rel_w[:, :, rows, None, :]).flatten(-2)
            outputs.append(F.scaled_dot_product_attention(query[:, :, rows], key, value, attn_mask=bias))
        return torch.cat(outputs, dim=2)


def window_partition(
    hidden_states: torch.Tensor, window_size: int, pad_value: torch.Tensor | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """`(batch, height, width, channels)` -> `(batch * num_windows, window_size, window_size, channels)`, padding the
    grid to a multiple of `window_size` with zeros, or with the `(channels,)` vector `pad_value` (the padding takes
    part in attention, as in the official model)."""
    batch_size, height, width, channels = hidden_states.shape
    pad_h, pad_w = (-height) % window_size, (-width) % window_size
    hidden_states = F.pad(hidden_states, (0, 0, 0, pad_w, 0, pad_h))
    if pad_value is not None and (pad_h or pad_w):
        hidden_states[:, height:] = pad_value
        hidden_states[:, :height, width:] = pad_value
    padded_h, padded_w = height + pad_h, width + pad_w
    windows = hidden_states.view(
        batch_size, padded_h // window_size, window_size, padded_w // window_size, window_size, channels
    )
    windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, channels)
    return windows, (padded_h, padded_w)


def window_unpartition(
    windows: torch.Tensor, window_size: int, padded_size: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`, cropping the padding: returns `(batch, height, width, channels)`."""
    (padded_h, padded_w), (height, width) = padded_size, size
    batch_size = windows.shape[0] // (padded_h * padded_w // window_size**2)
    hidden_states = windows.view(
        batch_size, padded_h // window_size, padded_w // window_size, window_size, window_size, -1
    )
    hidden_states = hidden_states.permute(0, 1, 3, 2, 4, 5).reshape(batch_size, padded_h, padded_w, -1)
    return hidden_states[:, :height, :width, :].contiguous()


class SamVisionLayer(GradientCheckpointingLayer):
    """Pre-norm ViT block; attends within `window_size` windows, or globally when `window_size == 0`."""

    def __init__(self, config: SamVisionConfig, window_size: int) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = SamVisionAttention(config, window_size)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SamMLPBlock(config.hidden_size, config.mlp_dim, config.hidden_act)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(batch, height, width, channels)` -> the same shape, and the attention weights when `output_attentions`.

        On the CPU the block runs in the CPU kernel where it applies. Else, since windows never attend across a row of
        windows, a windowed layer runs a band of window rows at a time: the same numbers, with activations under
        `ACTIVATION_CHUNK_ELEMENTS`."""
        window_size = self.attn.window_size
        if not output_attentions and chunks_activations(hidden_states):
            output = vision_block(hidden_states, self)
            if output is not None:
                return output, None
            if window_size > 0:
                batch_size, _, width, _ = hidden_states.shape
                window_row_elements = batch_size * window_size * width * self.mlp.lin1.out_features
                band = window_size * max(1, ACTIVATION_CHUNK_ELEMENTS // window_row_elements)
                if band < hidden_states.shape[1]:
                    bands = [self._block(part)[0] for part in hidden_states.split(band, dim=1)]
                    return torch.cat(bands, dim=1), None
        return self._block(hidden_states, output_attentions)

    def _block(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block on these tokens (the whole grid, or a band of window rows)."""
        residual = hidden_states
        hidden_states, attn_weights = self.attn(self.layer_norm1(hidden_states), output_attentions)
        hidden_states = residual + hidden_states
        return hidden_states + self._mlp(self.layer_norm2(hidden_states)), attn_weights

    def _mlp(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The MLP on `(batch, height, width, channels)` tokens: by the CPU kernel where it applies, else a block of
        tokens at a time in eager CPU code, else whole."""
        if not chunks_activations(hidden_states):
            return self.mlp(hidden_states)
        tokens = hidden_states.flatten(0, -2)
        output = gelu_mlp(tokens, self.mlp)
        if output is None:
            rows = max(1, ACTIVATION_CHUNK_ELEMENTS // self.mlp.lin1.out_features)
            output = torch.cat([self.mlp(chunk) for chunk in tokens.split(rows)])
        return output.view_as(hidden_states)


class SamVisionNeck(nn.Module):
    """1x1 conv -> LayerNorm2d -> 3x3 conv -> LayerNorm2d, from the ViT width to `output_channels`."""

    def __init__(self, config: SamVisionConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(config.hidden_size, config.output_channels, kernel_size=1, bias=False)
        self.layer_norm1 = SamLayerNorm2d(config.output_channels, eps=config.layer_norm_eps)
        self.conv2 = nn.Conv2d(config.output_channels, config.output_channels, kernel_size=3, padding=1, bias=False)
        self.layer_norm2 = SamLayerNorm2d(config.output_channels, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """ViT tokens channels first `(batch, hidden_size, h, w)` -> `(batch, output_channels, h, w)`."""
        hidden_states = self.layer_norm1(self.conv1(hidden_states))
        return self.layer_norm2(self.conv2(hidden_states))


class SamPatchEmbeddings(nn.Module):
    """Non-overlapping `patch_size` patches to tokens: `(batch, 3, H, W)` -> `(batch, H/p, W/p, hidden_size)`."""

    def __init__(self, config: SamVisionConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(batch, num_channels, H, W)` -> `(batch, H / patch_size, W / patch_size, hidden_size)`."""
        return self.projection(pixel_values).permute(0, 2, 3, 1)


class SamVisionEncoder(nn.Module):
    """`pixel_values (batch, num_channels, image_size, image_size)` -> image embeddings
    `(batch, output_channels, image_size // patch_size, image_size // patch_size)`."""

    def __init__(self, config: SamVisionConfig) -> None:
        super().__init__()
        self.config = config
        grid_size = config.image_size // config.patch_size
        self.patch_embed = SamPatchEmbeddings(config)
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, grid_size, grid_size, config.hidden_size)) if config.use_abs_pos else None
        )
        self.layers = nn.ModuleList(
            SamVisionLayer(config, window_size=0 if i in config.global_attn_indexes else config.window_size)
            for i in range(config.num_hidden_layers)
        )
        self.neck = SamVisionNeck(config)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_hidden_state: int | None = None,
    ) -> SamVisionEncoderOutput | tuple[torch.Tensor, ...]:
        """transformers' `SamVisionEncoder` call: the flags default to the config's; `return_dict=False` gives the
        output's non-`None` fields as a tuple. Without `output_hidden_states`, `return_hidden_state=i` returns the
        hidden state of that index alone (0 the embedding, `i` layer `i - 1`'s output) as `hidden_states`, e.g.
        SAM-HQ's early feature, without keeping the others."""
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        if return_hidden_state is not None and not 0 <= return_hidden_state <= len(self.layers):
            raise ValueError(f"return_hidden_state must be in [0, {len(self.layers)}], got {return_hidden_state}.")
        kept = range(len(self.layers) + 1) if output_hidden_states else (return_hidden_state,)
        hidden_states = self.patch_embed(pixel_values)
        if self.pos_embed is not None:
            hidden_states = hidden_states + self.pos_embed
        all_hidden_states = (hidden_states,) if 0 in kept else ()
        all_attentions = () if output_attentions else None
        for index, layer in enumerate(self.layers, start=1):
            hidden_states, attn_weights = layer(hidden_states, output_attentions)
            if index in kept:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        output = SamVisionEncoderOutput(
            last_hidden_state=self.neck(hidden_states.permute(0, 3, 1, 2)),
            hidden_states=all_hidden_states or None,
            attentions=all_attentions,
        )
        return output if (config.return_dict if return_dict is None else return_dict) else output.to_tuple()
