"""The prompt encoder: points and box corners become sparse tokens (random Fourier positional encoding plus a learned
embedding per kind), a CLIP embedding (text) becomes one more sparse token (learned projection plus a learned type
embedding), mask prompts become a dense embedding (strided convs down to the image-embedding grid)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from ..configuration_sam import SamPromptEncoderConfig
from ..prompts import BACKGROUND_LABEL, FOREGROUND_LABEL, NOT_A_POINT_LABEL, PAD_LABEL, values_readable
from .common import SamLayerNorm2d


class SamPositionalEmbedding(nn.Module):
    """Random Fourier features of 2-D coordinates in [0, 1]: `(..., 2)` -> `(..., 2 * num_pos_feats)`.
    One instance is shared by the prompt encoder (prompt positions) and the decoder (image-grid positions)."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        # A fixed random matrix (a buffer in the official model, hence no gradient), std 1 as there: larger scales
        # give very high frequencies that train badly from scratch.
        self.positional_embedding = nn.Parameter(torch.randn(2, num_pos_feats), requires_grad=False)

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Coordinates in [0, 1] `(..., 2)` -> `(..., 2 * num_pos_feats)` sine and cosine features."""
        coordinates = (2 * coordinates - 1).to(self.positional_embedding.dtype)
        coordinates = 2 * math.pi * (coordinates @ self.positional_embedding)
        return torch.cat([torch.sin(coordinates), torch.cos(coordinates)], dim=-1)

    def grid_embedding(self, size: int) -> torch.Tensor:
        """Encoding of every cell centre of a `size x size` grid: `(1, 2 * num_pos_feats, size, size)`."""
        centres = (torch.arange(size, device=self.positional_embedding.device, dtype=torch.float32) + 0.5) / size
        grid = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1)  # (y, x, [x, y])
        return self.forward(grid).permute(2, 0, 1).unsqueeze(0)


class SamMaskEmbedding(nn.Module):
    """Mask logits `(n, 1, 4h, 4w)` -> dense embedding `(n, hidden_size, h, w)`: two stride-2 convs with LayerNorm
    and activation, then a 1x1 conv to the embedding width."""

    def __init__(self, config: SamPromptEncoderConfig) -> None:
        super().__init__()
        hidden_channels = config.mask_input_channels // 4
        self.conv1 = nn.Conv2d(1, hidden_channels, kernel_size=2, stride=2)
        self.layer_norm1 = SamLayerNorm2d(hidden_channels, eps=config.layer_norm_eps)
        self.conv2 = nn.Conv2d(hidden_channels, config.mask_input_channels, kernel_size=2, stride=2)
        self.layer_norm2 = SamLayerNorm2d(config.mask_input_channels, eps=config.layer_norm_eps)
        self.conv3 = nn.Conv2d(config.mask_input_channels, config.hidden_size, kernel_size=1)
        self.activation = ACT2FN[config.hidden_act]

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        """Mask logits `(n, 1, 4h, 4w)` -> dense embedding `(n, hidden_size, h, w)`."""
        hidden_states = self.activation(self.layer_norm1(self.conv1(masks)))
        hidden_states = self.activation(self.layer_norm2(self.conv2(hidden_states)))
        return self.conv3(hidden_states)


class SamPromptEncoder(nn.Module):
    """Embeds points, boxes and masks of `point_batch_size` prompts per image (layout in `sam_hf.prompts`)."""

    def __init__(
        self,
        config: SamPromptEncoderConfig,
        shared_embedding: SamPositionalEmbedding,
        text_embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.input_image_size = config.image_size
        self.image_embedding_size = config.image_embedding_size
        self.shared_embedding = shared_embedding
        self.mask_embed = SamMaskEmbedding(config)
        self.no_mask_embed = nn.Embedding(1, config.hidden_size)
        # background, foreground, box top-left corner, box bottom-right corner
        self.point_embed = nn.ModuleList(nn.Embedding(1, config.hidden_size) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, config.hidden_size)
        if text_embed_dim is not None:  # only models with a text encoder
            self.text_projection = nn.Linear(text_embed_dim, config.hidden_size)
            self.text_type_embed = nn.Embedding(1, config.hidden_size)

    def _embed_coordinates(self, coordinates: torch.Tensor) -> torch.Tensor:
        # +0.5 moves integer pixel coordinates to pixel centres before normalising to [0, 1].
        return self.shared_embedding((coordinates + 0.5) / self.input_image_size)

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Points `(..., N, 2)` in the input frame with labels `(..., N)` (`sam_hf.prompts`) -> tokens `(..., N, C)`."""
        labels = labels[..., None]
        embedding = self._embed_coordinates(points)
        embedding = torch.where(labels == NOT_A_POINT_LABEL, self.not_a_point_embed.weight, embedding)
        embedding = torch.where(labels == PAD_LABEL, torch.zeros_like(embedding), embedding)
        embedding = torch.where(labels == BACKGROUND_LABEL, embedding + self.point_embed[0].weight, embedding)
        return torch.where(labels == FOREGROUND_LABEL, embedding + self.point_embed[1].weight, embedding)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = self._embed_coordinates(boxes.unflatten(-1, (2, 2)))
        return corners + torch.cat([self.point_embed[2].weight, self.point_embed[3].weight])

    def forward(
        self,
        input_points: torch.Tensor | None,
        input_labels: torch.Tensor | None,
        input_boxes: torch.Tensor | None,
        input_masks: torch.Tensor | None,
        text_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """
        Args:
            input_labels: the points' labels; `None` makes every point foreground.
            text_embeds: `(batch_size, point_batch_size, embed_dim)` CLIP embeddings (L2-normalised here), one text
                token per prompt.

        Returns:
            sparse_embeddings: `(batch_size, point_batch_size, num_tokens, hidden_size)` or `None` without points,
                boxes and text; points (followed by one not-a-point token when there is no box), box corners, text.
            sparse_padding_mask: bool `(batch_size, point_batch_size, num_tokens)`, `True` for `PAD_LABEL` points
                that the decoder must ignore, or `None` when there is no padding.
            dense_embeddings: `(batch_size, point_batch_size or 1, hidden_size, h, w)` from `input_masks`, or the
                learned no-mask embedding `(1, 1, hidden_size, h, w)`.
        """
        sparse, labels = [], []
        if input_points is not None and input_labels is None:  # unlabelled points are foreground
            input_labels = torch.full(input_points.shape[:3], FOREGROUND_LABEL, device=input_points.device)
        if input_points is not None:
            if input_boxes is None:  # the official model appends a not-a-point token to box-less point prompts
                input_points = torch.cat([input_points, torch.zeros_like(input_points[:, :, :1])], dim=2)
                input_labels = torch.cat(
                    [input_labels, torch.full_like(input_labels[:, :, :1], NOT_A_POINT_LABEL)], dim=2
                )
            sparse.append(self.embed_points(input_points, input_labels))
            labels.append(input_labels)
        if input_boxes is not None:
            sparse.append(self._embed_boxes(input_boxes))
            labels.append(torch.full_like(input_boxes[..., :2], FOREGROUND_LABEL, dtype=torch.long))
        if text_embeds is not None:
            text_token = self.text_projection(F.normalize(text_embeds, dim=-1)) + self.text_type_embed.weight
            sparse.append(text_token.unsqueeze(2))
            labels.append(torch.full_like(text_embeds[..., :1], FOREGROUND_LABEL, dtype=torch.long))
        sparse_embeddings = torch.cat(sparse, dim=2) if sparse else None
        padding = torch.cat([label.long() for label in labels], dim=2) == PAD_LABEL if labels else None
        # Without padding the decoder skips masking (faster); traced or on meta, the mask stays (no value to test).
        if padding is not None and values_readable(padding) and not padding.any():
            padding = None
        sparse_padding_mask = padding

        if input_masks is not None:
            dense = self.mask_embed(input_masks.flatten(0, 1).unsqueeze(1))
            dense_embeddings = dense.unflatten(0, input_masks.shape[:2])
        else:
            dense_embeddings = self.no_mask_embed.weight.reshape(1, 1, -1, 1, 1).expand(
                -1, -1, -1, self.image_embedding_size, self.image_embedding_size
            )
        return sparse_embeddings, sparse_padding_mask, dense_embeddings
