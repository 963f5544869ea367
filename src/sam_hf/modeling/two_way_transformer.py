"""The two-way transformer of the mask decoder: prompt tokens and image tokens attend to each other.

Tensors carry a prompt axis: tokens are `(batch, point_batch_size, num_tokens, C)` and image tokens
`(batch, 1 or point_batch_size, height * width, C)`. Image tokens start out shared by every prompt of an image (size 1
on the prompt axis, unless each prompt has its own mask input) and broadcast, so the first layer projects them once
per image instead of once per prompt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration_sam import SamMaskDecoderConfig
from .common import SamMLPBlock


class SamAttention(nn.Module):
    """Multi-head attention whose queries, keys and values are projected to `hidden_size // downsample_rate`.
    Leading dimensions of query and key/value broadcast against each other."""

    def __init__(self, config: SamMaskDecoderConfig, downsample_rate: int = 1) -> None:
        super().__init__()
        internal_dim = config.hidden_size // downsample_rate
        if internal_dim % config.num_attention_heads:
            raise ValueError(f"num_attention_heads ({config.num_attention_heads}) must divide {internal_dim}.")
        self.num_attention_heads = config.num_attention_heads
        self.q_proj = nn.Linear(config.hidden_size, internal_dim)
        self.k_proj = nn.Linear(config.hidden_size, internal_dim)
        self.v_proj = nn.Linear(config.hidden_size, internal_dim)
        self.out_proj = nn.Linear(internal_dim, config.hidden_size)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query `(*, Nq, C)`, key/value `(*, Nk, C)`; `key_padding_mask` bool `(*, Nk)`, `True` = ignore that key.
        Returns `(*, Nq, C)` with `*` the broadcast leading shape."""
        query, key, value = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        leading = torch.broadcast_shapes(query.shape[:-2], key.shape[:-2])
        query, key, value = (self._split_heads(x.expand(*leading, *x.shape[-2:])) for x in (query, key, value))
        attn_mask = None
        if key_padding_mask is not None:
            attn_mask = ~key_padding_mask.expand(*leading, key.shape[-2]).reshape(-1, 1, 1, key.shape[-2])
        attn_output = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
        attn_output = attn_output.transpose(1, 2).flatten(2).unflatten(0, leading)
        return self.out_proj(attn_output)

    def _split_heads(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(*, N, C)` -> `(prod(*), heads, N, C // heads)`."""
        hidden_states = hidden_states.reshape(-1, *hidden_states.shape[-2:])
        return hidden_states.unflatten(-1, (self.num_attention_heads, -1)).transpose(1, 2)


class SamTwoWayAttentionBlock(nn.Module):
    """Self-attention of the tokens, tokens -> image cross-attention, token MLP, image -> tokens cross-attention;
    each followed by a residual connection and LayerNorm."""

    def __init__(self, config: SamMaskDecoderConfig, skip_first_layer_pe: bool) -> None:
        super().__init__()
        eps, rate = config.layer_norm_eps, config.attention_downsample_rate
        self.self_attn = SamAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.cross_attn_token_to_image = SamAttention(config, downsample_rate=rate)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = SamMLPBlock(config.hidden_size, config.mlp_dim, config.hidden_act)
        self.layer_norm3 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.layer_norm4 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.cross_attn_image_to_token = SamAttention(config, downsample_rate=rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        padding_mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:  # the first layer's tokens are their own positional encoding
            queries = self.self_attn(queries, queries, queries, padding_mask)
        else:
            query = queries + query_pe
            queries = queries + self.self_attn(query, query, queries, padding_mask)
        queries = self.layer_norm1(queries)

        keys_with_pe = keys + key_pe
        queries = self.layer_norm2(queries + self.cross_attn_token_to_image(queries + query_pe, keys_with_pe, keys))
        queries = self.layer_norm3(queries + self.mlp(queries))

        attn_output = self.cross_attn_image_to_token(keys_with_pe, queries + query_pe, queries, padding_mask)
        keys = self.layer_norm4(keys + attn_output)
        return queries, keys


class SamTwoWayTransformer(nn.Module):
    """Stack of two-way blocks and a final tokens -> image attention."""

    def __init__(self, config: SamMaskDecoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SamTwoWayAttentionBlock(config, skip_first_layer_pe=i == 0) for i in range(config.num_hidden_layers)
        )
        self.final_attn_token_to_image = SamAttention(config, downsample_rate=config.attention_downsample_rate)
        self.layer_norm_final_attn = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        point_embeddings: torch.Tensor,
        image_embeddings: torch.Tensor,
        image_positional_embeddings: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            point_embeddings: `(batch, point_batch_size, num_tokens, C)` output and prompt tokens.
            image_embeddings: `(batch, 1 or point_batch_size, height * width, C)`.
            image_positional_embeddings: `(1, 1, height * width, C)`.
            padding_mask: bool `(batch, point_batch_size, num_tokens)`, `True` for tokens to ignore.

        Returns:
            The updated tokens `(batch, point_batch_size, num_tokens, C)` and image tokens
            `(batch, point_batch_size, height * width, C)`.
        """
        queries, keys = point_embeddings, image_embeddings
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embeddings, image_positional_embeddings, padding_mask)
        attn_output = self.final_attn_token_to_image(
            queries + point_embeddings, keys + image_positional_embeddings, keys
        )
        return self.layer_norm_final_attn(queries + attn_output), keys
