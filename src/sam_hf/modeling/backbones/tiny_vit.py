"""MobileSAM's image encoder: TinyViT (Wu et al., 2022) distilled from SAM's ViT-H, mapping `(batch, 3, 1024, 1024)`
pixels to the same `(batch, 256, 64, 64)` image embedding as the ViT, through SAM's neck.

A stem of two stride-2 convolutions, a convolutional stage of MBConv blocks, then stages of windowed-attention blocks
(each attention with its own learned bias per head and relative offset, and a depthwise convolution between attention
and MLP); patch merging between stages. Convolutions carry BatchNorm: eval mode uses the running statistics, and
`freeze_batch_norm` (default) keeps them so in `model.train()` too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from ...configuration_sam import SamVisionConfig
from ...prompts import is_tracing
from ..image_encoder import SamVisionEncoderOutput, SamVisionNeck, window_partition, window_unpartition

# TinyViT's block LayerNorms use torch's default epsilon (the neck's is `config.layer_norm_eps`, as in SAM).
BLOCK_LAYER_NORM_EPS = 1e-5


def attention_bias_index(window_size: int, device: torch.device) -> torch.Tensor:
    """`(tokens, tokens)` column of each (query, key) pair of a square window in the `(heads, window_size ** 2)` bias
    table: the offset `(|dy|, |dx|)` is column `|dy| * window_size + |dx|`, the official table's order of first
    appearance."""
    positions = torch.arange(window_size, device=device)
    rows, cols = (grid.flatten() for grid in torch.meshgrid(positions, positions, indexing="ij"))
    return (rows[:, None] - rows[None, :]).abs() * window_size + (cols[:, None] - cols[None, :]).abs()


class TinyViTConvBatchNorm(nn.Module):
    """Convolution without bias, then BatchNorm (the official `Conv2d_BN`)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.batch_norm = nn.BatchNorm2d(out_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, in_channels, h, w)` -> `(batch, out_channels, h / stride, w / stride)`."""
        norm = self.batch_norm
        if norm.training:  # the batch's statistics
            return norm(self.conv(hidden_states))
        # With running statistics BatchNorm is a per-channel affine map: folded into the convolution's weight and bias
        # (per call, so never stale), it costs no pass over the activations (~9 % of the encoder's time).
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        weight = self.conv.weight * scale[:, None, None, None]
        bias = norm.bias - norm.running_mean * scale
        conv = self.conv
        return F.conv2d(hidden_states, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class TinyViTPatchEmbeddings(nn.Module):
    """Stem: two stride-2 3x3 convolutions, `(batch, 3, H, W)` -> `(batch, embed_dims[0], H / 4, W / 4)`."""

    def __init__(self, config: SamVisionConfig) -> None:
        super().__init__()
        width = config.embed_dims[0]
        self.conv1 = TinyViTConvBatchNorm(config.num_channels, width // 2, kernel_size=3, stride=2)
        self.conv2 = TinyViTConvBatchNorm(width // 2, width, kernel_size=3, stride=2)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(batch, num_channels, H, W)` -> `(batch, embed_dims[0], H / 4, W / 4)`."""
        return self.conv2(F.gelu(self.conv1(pixel_values)))


class TinyViTMBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, 3x3 depthwise, 1x1 projection, residual, GELU; `(batch, C, h, w)`."""

    def __init__(self, width: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(width * expand_ratio)
        self.conv1 = TinyViTConvBatchNorm(width, hidden)
        self.conv2 = TinyViTConvBatchNorm(hidden, hidden, kernel_size=3, groups=hidden)
        self.conv3 = TinyViTConvBatchNorm(hidden, width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, width, h, w)` -> the same shape."""
        residual = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(hidden_states)))))
        return F.gelu(hidden_states + residual)


class TinyViTPatchMerging(nn.Module):
    """Between stages: 1x1 to the next width, 3x3 depthwise with `stride`, 1x1;
    `(batch, width, h, w)` -> `(batch, out_width, h / stride, w / stride)`."""

    def __init__(self, width: int, out_width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = TinyViTConvBatchNorm(width, out_width)
        self.conv2 = TinyViTConvBatchNorm(out_width, out_width, kernel_size=3, stride=stride, groups=out_width)
        self.conv3 = TinyViTConvBatchNorm(out_width, out_width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, width, h, w)` -> `(batch, out_width, h / stride, w / stride)`."""
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(hidden_states)))))


class TinyViTAttention(nn.Module):
    """Pre-norm multi-head self-attention inside one square window, plus a learned bias per head and relative offset
    `(|dy|, |dx|)` (`attention_biases`, `(heads, window_size ** 2)`): `(windows, tokens, width)` -> the same shape."""

    def __init__(self, width: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.layer_norm = nn.LayerNorm(width, eps=BLOCK_LAYER_NORM_EPS)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size**2))
        # `attention_bias_index` flattened, built on first use on each device: not a buffer, so not in the state dict,
        # and it depends on the window size alone, so it cannot go stale (the biases themselves are gathered per call).
        self._bias_index: torch.Tensor | None = None

    def relative_bias(self, device: torch.device) -> torch.Tensor:
        """`(heads, tokens, tokens)`: each head's learned bias of every (query, key) pair of the window."""
        tokens = self.window_size**2
        if is_tracing():  # built in the graph: a cached tensor would be a mutable attribute to the tracer
            index = attention_bias_index(self.window_size, device).flatten()
        else:
            index = self._bias_index
            if index is None or index.device != device:
                with torch.inference_mode(False):  # an inference tensor could not be saved for backward later
                    index = self._bias_index = attention_bias_index(self.window_size, device).flatten()
        # index_select: ~6x faster than advanced indexing with the 2-D index (0.34 vs 2.2 ms for a 14x14 window).
        return self.attention_biases.index_select(1, index).view(-1, tokens, tokens)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(windows, tokens, width)` -> the same shape, and the softmax weights `(windows * heads, tokens, tokens)`
        when `output_attentions` (else `None`)."""
        num_windows, num_tokens, width = hidden_states.shape
        qkv = self.qkv(self.layer_norm(hidden_states)).view(num_windows, num_tokens, self.num_heads, -1)
        # Per head, the official layout is [query | key | value] (not three width-wide blocks).
        query, key, value = qkv.transpose(1, 2).chunk(3, dim=-1)  # each (windows, heads, tokens, head_dim)
        # Computed explicitly whatever `attn_implementation`: for MobileSAM's windows (49 and 196 tokens) with a bias,
        # torch's CPU SDPA measured 1.5-2x slower than these three operations, and the weights are small.
        logits = (query * query.shape[-1] ** -0.5) @ key.transpose(-1, -2)
        logits.add_(self.relative_bias(hidden_states.device))
        attn_weights = torch.softmax(logits, dim=-1)
        attn_output = attn_weights @ value
        attn_output = self.proj(attn_output.transpose(1, 2).reshape(num_windows, num_tokens, width))
        return attn_output, attn_weights.flatten(0, 1) if output_attentions else None


class TinyViTMLP(nn.Module):
    """Pre-norm MLP of an attention block: `fc2(gelu(fc1(layer_norm(x))))`, `(..., width)` -> `(..., width)`."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(width, eps=BLOCK_LAYER_NORM_EPS)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(..., width)` -> `(..., width)`."""
        return self.fc2(F.gelu(self.fc1(self.layer_norm(hidden_states))))


class TinyViTLayer(GradientCheckpointingLayer):
    """Attention block: windowed attention (the grid zero-padded to whole windows, the padding attended to, as in the
    official model), residual; 3x3 depthwise convolution; MLP, residual. `(batch, h, w, width)` -> the same shape."""

    def __init__(self, config: SamVisionConfig, width: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = TinyViTAttention(width, num_heads, window_size)
        self.local_conv = TinyViTConvBatchNorm(width, width, kernel_size=config.local_conv_size, groups=width)
        self.mlp = TinyViTMLP(width, int(width * config.mlp_ratio))

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`(batch, h, w, width)` -> the same shape, and the attention weights when `output_attentions`."""
        size = hidden_states.shape[1:3]
        windows, padded_size = window_partition(hidden_states, self.window_size)
        attn_output, attn_weights = self.attn(windows.flatten(1, 2), output_attentions)
        attn_output = window_unpartition(
            attn_output.unflatten(1, windows.shape[1:3]), self.window_size, padded_size, size
        )
        hidden_states = hidden_states + attn_output
        hidden_states = self.local_conv(hidden_states.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return hidden_states + self.mlp(hidden_states), attn_weights


class TinyViTStage(nn.Module):
    """One stage: MBConv blocks (the first stage) or attention blocks, then the patch merging to the next stage's
    width (all but the last stage). Takes and returns channels-first `(batch, width, h, w)` maps."""

    def __init__(self, config: SamVisionConfig, index: int) -> None:
        super().__init__()
        width = config.embed_dims[index]
        self.is_convolutional = index == 0
        if self.is_convolutional:
            blocks = [TinyViTMBConv(width, config.mbconv_expand_ratio) for _ in range(config.depths[index])]
        else:
            heads, window = config.num_heads[index], config.window_sizes[index]
            blocks = [TinyViTLayer(config, width, heads, window) for _ in range(config.depths[index])]
        self.layers = nn.ModuleList(blocks)
        last = index == len(config.embed_dims) - 1
        self.downsample = (
            None if last else TinyViTPatchMerging(width, config.embed_dims[index + 1], config.merge_strides[index])
        )

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """`(batch, width, h, w)` -> the stage's output `(batch, next_width, h / stride, w / stride)` (after the
        patch merging; the blocks' output in the last stage) and the attention blocks' weights when
        `output_attentions` (else `()`)."""
        attentions = ()
        if self.is_convolutional:
            for block in self.layers:
                hidden_states = block(hidden_states)
        else:
            hidden_states = hidden_states.permute(0, 2, 3, 1)
            for block in self.layers:
                hidden_states, attn_weights = block(hidden_states, output_attentions)
                attentions += (attn_weights,) if output_attentions else ()
            hidden_states = hidden_states.permute(0, 3, 1, 2)
        return hidden_states if self.downsample is None else self.downsample(hidden_states), attentions


class TinyViTVisionEncoder(nn.Module):
    """`pixel_values (batch, num_channels, image_size, image_size)` -> image embeddings
    `(batch, output_channels, image_size // patch_size, image_size // patch_size)`, the ViT encoder's interface.

    Attributes:
        freeze_batch_norm: keep every BatchNorm in eval mode (running statistics used, not updated) even when the
            model is put in training mode: fine-tuning batches of a few images would give poor statistics. The
            BatchNorm scale and shift still train when the encoder's parameters require grad. Set it to `False` to
            update the statistics in training mode.
    """

    def __init__(self, config: SamVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.freeze_batch_norm = True
        self.patch_embed = TinyViTPatchEmbeddings(config)
        self.stages = nn.ModuleList(TinyViTStage(config, index) for index in range(len(config.embed_dims)))
        self.neck = SamVisionNeck(config)

    def train(self, mode: bool = True) -> TinyViTVisionEncoder:
        """`nn.Module.train`, with the BatchNorm layers kept in eval mode while `freeze_batch_norm`."""
        super().train(mode)
        if mode and self.freeze_batch_norm:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_hidden_state: int | None = None,
    ) -> SamVisionEncoderOutput | tuple[torch.Tensor, ...]:
        """transformers' `SamVisionEncoder` call. `hidden_states` holds the stem's output and each stage's output
        (after its patch merging, as the official `TinyViT.layers[i]` returns it), channels last `(batch, h, w, C)`
        with each stage's resolution and width; `attentions` each attention block's weights
        `(batch * num_windows * heads, tokens, tokens)`. Without `output_hidden_states`, `return_hidden_state=i`
        returns the hidden state of that index alone (0 the stem's, `i` stage `i - 1`'s), as the ViT encoder does."""
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        if return_hidden_state is not None and not 0 <= return_hidden_state <= len(self.stages):
            raise ValueError(f"return_hidden_state must be in [0, {len(self.stages)}], got {return_hidden_state}.")
        kept = range(len(self.stages) + 1) if output_hidden_states else (return_hidden_state,)
        # Channels last from here on: the depthwise and 1x1 convolutions run ~20 % faster on the CPU that way, and the
        # attention stages' (batch, h, w, C) views of the maps are then contiguous.
        hidden_states = self.patch_embed(pixel_values).contiguous(memory_format=torch.channels_last)
        all_hidden_states = (hidden_states.permute(0, 2, 3, 1),) if 0 in kept else ()
        all_attentions = () if output_attentions else None
        for index, stage in enumerate(self.stages, start=1):
            hidden_states, attentions = stage(hidden_states, output_attentions)
            if index in kept:
                all_hidden_states += (hidden_states.permute(0, 2, 3, 1),)
            if output_attentions:
                all_attentions += attentions
        output = SamVisionEncoderOutput(
            last_hidden_state=self.neck(hidden_states),
            hidden_states=all_hidden_states or None,
            attentions=all_attentions,
        )
        return output if (config.return_dict if return_dict is None else return_dict) else output.to_tuple()
