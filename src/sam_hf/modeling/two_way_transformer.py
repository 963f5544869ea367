"""The two-way transformer of the mask decoder: prompt tokens and image tokens attend to each other.

Tensors carry a prompt axis: tokens are `(batch, point_batch_size, num_tokens, C)` and image tokens
`(batch, 1 or point_batch_size, height * width, C)`. Image tokens start out shared by every prompt of an image (size 1
on the prompt axis, unless each prompt has its own mask input) and broadcast, so the first layer projects them once
per image instead of once per prompt.

Once image tokens are per prompt, a cross-attention between a prompt's few tokens (T, about 7) and its 4096 image
tokens is computed in factored form: instead of projecting every image token to queries / keys / values and back
(four `(4096, C) x (C, C / 2)` products), the projections are folded into the T x heads token side
(`(q W_k) x^T` rather than `q (W_k x)^T`, `(A x) W_v^T` rather than `A (x W_v^T)`, and the output projection applied
to each value before the weighting). The result is the same attention up to float rounding, with about half the
multiply-adds and no per-prompt copies of projected image tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration_sam import SamMaskDecoderConfig
from .common import SamMLPBlock


class SamAttention(nn.Module):
    """Multi-head attention whose queries, keys and values are projected to `hidden_size // downsample_rate`.
    Leading dimensions of query and key/value broadcast against each other. `forward` runs SDPA, or plain matrix
    products and softmax when `config._attn_implementation == "eager"`; the factored forms are plain products."""

    def __init__(self, config: SamMaskDecoderConfig, downsample_rate: int = 1) -> None:
        super().__init__()
        self.config = config
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
        if self.config._attn_implementation == "eager":
            logits = (query * query.shape[-1] ** -0.5) @ key.transpose(-1, -2)
            if attn_mask is not None:
                logits = logits.masked_fill(~attn_mask, float("-inf"))
            attn_output = torch.softmax(logits, dim=-1) @ value
        else:
            attn_output = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
        attn_output = attn_output.transpose(1, 2).flatten(2).unflatten(0, leading)
        return self.out_proj(attn_output)

    def _split_heads(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(*, N, C)` -> `(prod(*), heads, N, C // heads)`."""
        hidden_states = hidden_states.reshape(-1, *hidden_states.shape[-2:])
        return hidden_states.unflatten(-1, (self.num_attention_heads, -1)).transpose(1, 2)

    def _head_weight(self, linear: nn.Linear) -> torch.Tensor:
        """The weight of a projection to the internal width as `(heads, head_dim, C)`."""
        return linear.weight.unflatten(0, (self.num_attention_heads, -1))

    def factored_is_cheaper(self, num_tokens: int) -> bool:
        """Whether the factored forms cost fewer multiply-adds than projecting the image tokens: they work on
        `heads * num_tokens` vectors of width C per image token instead of the internal width."""
        return self.num_attention_heads * num_tokens <= self.q_proj.out_features

    def tokens_to_image(
        self, tokens: torch.Tensor, image_keys: torch.Tensor, image_values: torch.Tensor
    ) -> torch.Tensor:
        """Tokens attend to image tokens, factored: `forward(tokens, image_keys, image_values)` up to rounding.

        Args:
            tokens: `(B, P, T, C)` queries.
            image_keys, image_values: `(B, P, N, C)`, one set per prompt.

        Returns:
            `(B, P, T, C)`.
        """
        heads = self.num_attention_heads
        query = self.q_proj(tokens).unflatten(-1, (heads, -1)).transpose(-2, -3)  # (B, P, H, T, d)
        scale = query.shape[-1] ** -0.5
        # q . (W_k x + b_k) = (q W_k) . x + q . b_k; the last term is the same for every key, so softmax drops it.
        query_keys = (query * scale) @ self._head_weight(self.k_proj)  # (B, P, H, T, C)
        logits = query_keys.flatten(-3, -2) @ image_keys.transpose(-1, -2)  # (B, P, H * T, N)
        weighted = torch.softmax(logits, dim=-1) @ image_values  # (B, P, H * T, C)
        # sum_i a_i (W_v x_i + b_v) = W_v (sum_i a_i x_i) + b_v, as each head's weights sum to 1.
        values = weighted.unflatten(-2, (heads, -1)) @ self._head_weight(self.v_proj).transpose(-1, -2)
        values = values + self.v_proj.bias.unflatten(0, (heads, 1, -1))  # (B, P, H, T, d)
        return self.out_proj(values.transpose(-2, -3).flatten(-2))

    def image_to_tokens(
        self,
        image_queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Image tokens attend to tokens, factored: `forward(image_queries, keys, values, mask)` up to rounding.

        Args:
            image_queries: `(B, 1 or P, N, C)` image tokens (with positional encoding).
            keys, values: `(B, P, T, C)` tokens; `key_padding_mask` bool `(B, P, T)`, `True` = ignore that key.

        Returns:
            `(B, P, N, C)`.
        """
        heads = self.num_attention_heads
        key = self.k_proj(keys).unflatten(-1, (heads, -1)).transpose(-2, -3)  # (B, P, H, T, d)
        value = self.v_proj(values).unflatten(-1, (heads, -1)).transpose(-2, -3)
        scale = key.shape[-1] ** -0.5
        # (W_q x + b_q) . k = x . (W_q^T k) + b_q . k: one (C,)-vector and one offset per (head, token).
        key_queries = ((key * scale) @ self._head_weight(self.q_proj)).flatten(-3, -2)  # (B, P, H * T, C)
        offsets = (key * scale) @ self.q_proj.bias.unflatten(0, (heads, -1, 1))  # (B, P, H, T, 1)
        if key_padding_mask is not None:
            offsets = offsets.masked_fill(key_padding_mask[:, :, None, :, None], float("-inf"))
        # The output projection goes onto each value; its bias is spread over the heads (each head's weights sum to
        # 1), so that the weighted sum is the block's output directly.
        projected = value @ self.out_proj.weight.unflatten(1, (heads, -1)).permute(1, 2, 0)  # (B, P, H, T, C)
        projected = (projected + self.out_proj.bias / heads).flatten(-3, -2)  # (B, P, H * T, C)
        # Logits as (H * T, N), not (N, H * T): softmax over a short non-last axis vectorises along the 4096 image
        # tokens, over a last axis of ~7 it does not (10x slower).
        prompts = key_queries.shape[1]
        if image_queries.shape[1] == 1 and prompts > 1:
            # Image tokens shared by the prompts: one (P * H * T, C) x (C, N) product instead of P small ones.
            logits = key_queries.flatten(1, 2) @ image_queries[:, 0].transpose(1, 2)  # (B, P * H * T, N)
            logits = logits.unflatten(1, (prompts, -1))
        else:
            logits = key_queries @ image_queries.transpose(-1, -2)  # (B, P, H * T, N)
        logits = logits.unflatten(-2, (heads, -1)) + offsets  # (B, P, H, T, N)
        weights = torch.softmax(logits, dim=-2).flatten(-3, -2)
        return torch.matmul(weights.transpose(-1, -2), projected)


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
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns the new tokens and image tokens, and (when `output_attentions`) the image -> tokens attention's
        output `(batch, point_batch_size, height * width, C)`: what transformers returns as a mask decoder
        attention."""
        if self.skip_first_layer_pe:  # the first layer's tokens are their own positional encoding
            queries = self.self_attn(queries, queries, queries, padding_mask)
        else:
            query = queries + query_pe
            queries = queries + self.self_attn(query, query, queries, padding_mask)
        queries = self.layer_norm1(queries)

        keys_with_pe = keys + key_pe
        attn_output = attend_tokens_to_image(self.cross_attn_token_to_image, queries + query_pe, keys_with_pe, keys)
        queries = self.layer_norm2(queries + attn_output)
        queries = self.layer_norm3(queries + self.mlp(queries))

        attention = self.cross_attn_image_to_token
        if attention.factored_is_cheaper(queries.shape[-2]):
            attn_output = attention.image_to_tokens(keys_with_pe, queries + query_pe, queries, padding_mask)
        else:
            attn_output = attention(keys_with_pe, queries + query_pe, queries, padding_mask)
        # In place into the fresh (batch, prompts, N, C) output unless it is returned: no second tensor that size.
        keys = keys + attn_output if output_attentions else attn_output.add_(keys)
        return queries, self.layer_norm4(keys), attn_output if output_attentions else None


def attend_tokens_to_image(
    attention: SamAttention, tokens: torch.Tensor, image_keys: torch.Tensor, image_values: torch.Tensor
) -> torch.Tensor:
    """`attention(tokens, image_keys, image_values)`: factored when the image tokens are per prompt and that is
    cheaper; image tokens shared by the prompts (`(B, 1, N, C)`) are projected once instead."""
    if image_keys.shape[1] == tokens.shape[1] and attention.factored_is_cheaper(tokens.shape[-2]):
        return attention.tokens_to_image(tokens, image_keys, image_values)
    return attention(tokens, image_keys, image_values)


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
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """
        Args:
            point_embeddings: `(batch, point_batch_size, num_tokens, C)` output and prompt tokens.
            image_embeddings: `(batch, 1 or point_batch_size, height * width, C)`.
            image_positional_embeddings: `(1, 1, height * width, C)`.
            padding_mask: bool `(batch, point_batch_size, num_tokens)`, `True` for tokens to ignore.

        Returns:
            The updated tokens `(batch, point_batch_size, num_tokens, C)` and image tokens
            `(batch, point_batch_size, height * width, C)`, and when `output_attentions` each layer's image -> tokens
            attention output `(batch, point_batch_size, height * width, C)` (else `None`).
        """
        queries, keys = point_embeddings, image_embeddings
        attentions = () if output_attentions else None
        for layer in self.layers:
            queries, keys, attn_output = layer(
                queries, keys, point_embeddings, image_positional_embeddings, padding_mask, output_attentions
            )
            if output_attentions:
                attentions += (attn_output,)
        attn_output = attend_tokens_to_image(
            self.final_attn_token_to_image, queries + point_embeddings, keys + image_positional_embeddings, keys
        )
        return self.layer_norm_final_attn(queries + attn_output), keys, attentions
