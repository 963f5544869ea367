"""The mask decoder: output tokens (one IoU token, 1 + num_multimask_outputs mask tokens) and prompt tokens go through
the two-way transformer; the image tokens are upscaled 4x and each mask token's hypernetwork MLP turns them into
mask logits; the IoU token predicts each mask's quality."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration_sam import SamMaskDecoderConfig
from .common import SamFeedForward, SamLayerNorm2d
from .two_way_transformer import SamTwoWayTransformer

UPSCALE_CHUNK_ELEMENTS = 1 << 22  # upscaled-feature values computed at once: 16 MiB in fp32


class SamMaskDecoder(nn.Module):
    """Image and prompt embeddings -> mask logits and predicted IoUs: the IoU token and the
    `num_multimask_outputs + 1` mask tokens go with the prompt tokens through the two-way transformer; each mask
    token's hypernetwork MLP turns the 4x-upscaled image tokens into a mask, the IoU head scores every mask."""

    def __init__(self, config: SamMaskDecoderConfig) -> None:
        super().__init__()
        self.config = config
        hidden_size = config.hidden_size
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, hidden_size)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, hidden_size)
        self.transformer = SamTwoWayTransformer(config)
        self.upscale_conv1 = nn.ConvTranspose2d(hidden_size, hidden_size // 4, kernel_size=2, stride=2)
        self.upscale_layer_norm = SamLayerNorm2d(hidden_size // 4)
        self.upscale_conv2 = nn.ConvTranspose2d(hidden_size // 4, hidden_size // 8, kernel_size=2, stride=2)
        self.activation = nn.GELU()
        self.output_hypernetworks_mlps = nn.ModuleList(
            SamFeedForward(hidden_size, hidden_size, hidden_size // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = SamFeedForward(
            hidden_size, config.iou_head_hidden_dim, self.num_mask_tokens, config.iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_positional_embeddings: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor | None,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool | None,
        sparse_padding_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """
        Args:
            image_embeddings: `(batch_size, C, h, w)` from the image encoder.
            image_positional_embeddings: `(1, C, h, w)` encoding of the embedding grid.
            sparse_prompt_embeddings: `(batch_size, point_batch_size, num_tokens, C)` or `None`.
            dense_prompt_embeddings: `(batch_size or 1, point_batch_size or 1, C, h, w)`.
            multimask_output: return the `num_multimask_outputs` masks instead of the single-mask token's; `None`:
                every mask token's, single-mask token first (the official ONNX interface).
            sparse_padding_mask: bool `(batch_size, point_batch_size, num_tokens)`, `True` for ignored tokens.
            output_attentions: also return each two-way layer's image -> tokens attention output.

        Returns:
            masks: `(batch_size, point_batch_size, num_masks, 4h, 4w)` low-resolution logits.
            iou_predictions: `(batch_size, point_batch_size, num_masks)`.
            attentions (only when `output_attentions`): per layer `(batch_size, point_batch_size, h * w, C)`.
        """
        tokens, image_tokens, attentions = self._two_way(
            image_embeddings,
            image_positional_embeddings,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            sparse_padding_mask,
            output_attentions,
        )
        # Only the returned masks are computed: tokens 1.. for multimask output, token 0 otherwise.
        selected = self.selected_tokens(multimask_output)
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](tokens[:, :, 1 + i]) for i in selected], dim=2)
        masks = self._in_chunks(
            image_tokens, lambda rows: self._project(self._upscale(image_tokens[:, rows]), hyper_in[:, rows])
        )
        iou_predictions = self.iou_prediction_head(tokens[:, :, 0])[..., selected.start : selected.stop]
        return (masks, iou_predictions, attentions) if output_attentions else (masks, iou_predictions)

    def selected_tokens(self, multimask_output: bool | None) -> range:
        """Indexes of the mask tokens whose masks are returned: all (`None`), 1.. (`True`) or 0 (`False`)."""
        if multimask_output is None:
            return range(self.num_mask_tokens)
        return range(1, self.num_mask_tokens) if multimask_output else range(1)

    def _output_tokens(self) -> torch.Tensor:
        """`(num_output_tokens, C)`: the IoU token, then the mask tokens."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight])

    def _two_way(
        self,
        image_embeddings: torch.Tensor,
        image_positional_embeddings: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor | None,
        dense_prompt_embeddings: torch.Tensor,
        sparse_padding_mask: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The output tokens and prompt tokens through the two-way transformer with the image tokens.

        Returns:
            tokens: `(B, P, num_output_tokens + num_prompt_tokens, C)`.
            image_tokens: `(B, P, h, w, C)`.
            attentions: as in `forward`, or `None`.
        """
        batch_size, _, height, width = image_embeddings.shape
        if sparse_prompt_embeddings is not None:
            point_batch_size = sparse_prompt_embeddings.shape[1]
        else:
            point_batch_size = dense_prompt_embeddings.shape[1]
        output_tokens = self._output_tokens()
        tokens = output_tokens.expand(batch_size, point_batch_size, -1, -1)
        padding_mask = sparse_padding_mask
        if sparse_prompt_embeddings is not None:
            tokens = torch.cat([tokens, sparse_prompt_embeddings.to(tokens.dtype)], dim=2)
        if padding_mask is not None:
            padding_mask = torch.cat(
                [padding_mask.new_zeros(*padding_mask.shape[:2], len(output_tokens)), padding_mask], 2
            )

        image_tokens = (image_embeddings[:, None] + dense_prompt_embeddings).flatten(3).transpose(2, 3)
        image_pe = image_positional_embeddings.flatten(2).transpose(1, 2)[:, None]
        tokens, image_tokens, attentions = self.transformer(
            tokens, image_tokens, image_pe, padding_mask, output_attentions
        )
        image_tokens = image_tokens.expand(batch_size, point_batch_size, -1, -1).unflatten(2, (height, width))
        return tokens, image_tokens, attentions

    @staticmethod
    def _in_chunks(image_tokens: torch.Tensor, compute: Callable[[slice], torch.Tensor]) -> torch.Tensor:
        """`compute(prompts)` for a few prompts at a time, concatenated on the prompt axis: the upscaled features are
        8 MiB per prompt in fp32; in chunks of a few MiB they are reused from the allocator's pool instead of being
        page-faulted in afresh for every call. `image_tokens`: `(B, P, h, w, C)`."""
        batch_size, prompts, height, width, channels = image_tokens.shape
        chunk = max(1, UPSCALE_CHUNK_ELEMENTS // (batch_size * height * width * 16 * channels // 8))
        return torch.cat([compute(slice(start, start + chunk)) for start in range(0, prompts, chunk)], dim=1)

    def _upscale(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """The official `upscaling` (ConvTranspose 2x2 stride 2, LayerNorm2d, GELU, ConvTranspose, GELU), computed
        channels-last.

        A 2x2 stride-2 transposed convolution is one matrix product per pixel, `(C_in) -> (2, 2, C_out)`; kept in
        the token layout (channels last, the 2x2 sub-pixels as extra axes) it needs no transposes, the LayerNorm
        runs over the contiguous last axis, and the sub-pixels are put in place only once, on the few mask logits.

        Args:
            image_tokens: `(B, P, h, w, C)`.

        Returns:
            `(B, P, h, w, 2, 2, 2, 2, C // 8)` over `(y, x, i1, j1, i2, j2)`: pixel `(4y + 2 i1 + i2, 4x + 2 j1 + j2)`.
        """
        upscaled = _conv_transpose_2x2_channels_last(image_tokens, self.upscale_conv1)  # (B, P, h, w, 2, 2, C/4)
        norm = self.upscale_layer_norm
        upscaled = self.activation(F.layer_norm(upscaled, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
        return self.activation(_conv_transpose_2x2_channels_last(upscaled, self.upscale_conv2))

    @staticmethod
    def _project(upscaled: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """The dot product of the upscaled features `(B, P, h, w, 2, 2, 2, 2, C // 8)` (from `_upscale`) with each
        mask's hypernetwork output `hyper_in (B, P, M, C // 8)` -> `(B, P, M, 4h, 4w)` mask logits."""
        batch_size, prompts, height, width = upscaled.shape[:4]
        masks = upscaled.flatten(2, -2) @ hyper_in.transpose(-1, -2)  # (B, P, h * w * 16, M)
        masks = masks.unflatten(2, (height, width, 2, 2, 2, 2)).permute(0, 1, 8, 2, 4, 6, 3, 5, 7)
        return masks.reshape(batch_size, prompts, -1, 4 * height, 4 * width)


def _conv_transpose_2x2_channels_last(hidden_states: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """`conv` (kernel 2, stride 2) on channels-last input `(*, C_in)` -> `(*, 2, 2, C_out)`, the new axes being the
    sub-pixel row and column."""
    weight = conv.weight.permute(2, 3, 1, 0).flatten(0, 2)  # (2 * 2 * C_out, C_in), rows ordered (i, j, out)
    output = F.linear(hidden_states, weight, conv.bias.repeat(4))
    return output.unflatten(-1, (2, 2, -1))
