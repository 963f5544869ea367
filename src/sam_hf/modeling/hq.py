"""SAM-HQ's mask decoder (Ke et al., "Segment Anything in High Quality"; `segment_anything_hq`'s `MaskDecoderHQ`,
transformers' `SamHQMaskDecoder`): SAM's decoder plus one HQ output token with its own hypernetwork MLP. The HQ
token's mask is computed on HQ features: SAM's upscaled image tokens refined by two 3x3 convolutions, plus the image
embedding and an early ViT feature (the first global-attention block's output), each upscaled 4x by two transposed
convolutions.

Parameter names are transformers' (`hq_token`, `hq_mask_mlp`, `compress_vit_*`, `encoder_*`, `mask_*`), so that
`syscv-community/sam-hq-vit-*` checkpoints load as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from ..configuration_sam import SamMaskDecoderConfig
from ..prompts import is_tracing
from .common import SamFeedForward, SamLayerNorm2d
from .mask_decoder import SamMaskDecoder


class SamHQMaskDecoder(SamMaskDecoder):
    """SAM-HQ's decoder. Its image embeddings are `(batch_size, C + vit_dim, h, w)`: SAM's image embedding followed,
    on the channel axis, by the early ViT feature (`SamModel.get_image_embeddings` builds them); with `C` channels
    only, the HQ features come from the image embedding alone (transformers' `SamHQModel` without
    `intermediate_embeddings`)."""

    def __init__(self, config: SamMaskDecoderConfig) -> None:
        super().__init__(config)
        hidden_size = config.hidden_size
        self.hq_token = nn.Embedding(1, hidden_size)
        self.hq_mask_mlp = SamFeedForward(hidden_size, hidden_size, hidden_size // 8, 3)
        # The early ViT feature, 4x upscaled to the mask resolution (official `compress_vit_feat`).
        self.compress_vit_conv1 = nn.ConvTranspose2d(config.vit_dim, hidden_size, kernel_size=2, stride=2)
        self.compress_vit_norm = SamLayerNorm2d(hidden_size)
        self.compress_vit_conv2 = nn.ConvTranspose2d(hidden_size, hidden_size // 8, kernel_size=2, stride=2)
        # The image embedding, 4x upscaled (official `embedding_encoder`).
        self.encoder_conv1 = nn.ConvTranspose2d(hidden_size, hidden_size // 4, kernel_size=2, stride=2)
        self.encoder_norm = SamLayerNorm2d(hidden_size // 4)
        self.encoder_conv2 = nn.ConvTranspose2d(hidden_size // 4, hidden_size // 8, kernel_size=2, stride=2)
        # Refines SAM's upscaled image tokens (official `embedding_maskfeature`).
        self.mask_conv1 = nn.Conv2d(hidden_size // 8, hidden_size // 4, kernel_size=3, padding=1)
        self.mask_norm = SamLayerNorm2d(hidden_size // 4)
        self.mask_conv2 = nn.Conv2d(hidden_size // 4, hidden_size // 8, kernel_size=3, padding=1)
        # The last image's HQ features (`_image_hq_features`): a plain attribute, never saved.
        self._hq_features_cache: tuple | None = None

    def _output_tokens(self) -> torch.Tensor:
        """`(num_mask_tokens + 2, C)`: the IoU token, the mask tokens, then the HQ token."""
        return torch.cat([self.iou_token.weight, self.mask_tokens.weight, self.hq_token.weight])

    def hq_features(self, image_embeddings: torch.Tensor, vit_features: torch.Tensor | None) -> torch.Tensor:
        """Per-image HQ features `(batch_size, C // 8, 4h, 4w)` from the image embedding `(batch_size, C, h, w)` and
        the early ViT feature `(batch_size, vit_dim, h, w)` (or `None`: the embedding's part alone)."""
        features = self.encoder_conv1(image_embeddings)
        features = self.encoder_conv2(self.activation(self.encoder_norm(features)))
        if vit_features is not None:
            compressed = self.compress_vit_conv1(vit_features)
            features = features + self.compress_vit_conv2(self.activation(self.compress_vit_norm(compressed)))
        return features

    def _image_hq_features(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """`hq_features` of `image_embeddings (batch_size, C [+ vit_dim], h, w)`, reused while the same embedding tensor
        comes back unchanged (a predictor prompting one image: ~6 GFLOP per call for vit_b's 768-wide feature, more
        than the rest of a one-prompt decode). Outside autograd only; the cache is keyed by the tensor's identity and
        version counter and by the fusion weights' storage and versions, so an in-place edit, `load_state_dict`, an
        optimiser step or `.to()` recomputes it (edits through `.data`, which bypass version counters as they bypass
        autograd, do not)."""
        channels = self.config.hidden_size
        vit_features = image_embeddings[:, channels:] if image_embeddings.shape[1] > channels else None
        if torch.is_grad_enabled() or is_tracing() or image_embeddings.is_inference():
            return self.hq_features(image_embeddings[:, :channels], vit_features)
        weights = [*self.encoder_conv1.parameters(), *self.encoder_norm.parameters(), *self.encoder_conv2.parameters()]
        if vit_features is not None:
            weights += [*self.compress_vit_conv1.parameters(), *self.compress_vit_norm.parameters()]
            weights += [*self.compress_vit_conv2.parameters()]
        key = (image_embeddings._version, *((w.data_ptr(), w._version) for w in weights))
        cached = self._hq_features_cache
        if cached is not None and cached[0] is image_embeddings and cached[1] == key:
            return cached[2]
        features = self.hq_features(image_embeddings[:, :channels], vit_features)
        self._hq_features_cache = (image_embeddings, key, features)
        return features

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_positional_embeddings: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor | None,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool | None,
        sparse_padding_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        hq_token_only: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """As `SamMaskDecoder.forward`, with transformers' `SamHQMaskDecoder` outputs:

        - `multimask_output=True`: the `num_multimask_outputs` SAM masks sorted by predicted IoU (best first), each
          plus the HQ mask, and their sorted IoUs; the first is the official SAM-HQ's output (its best mask);
        - `multimask_output=False`: the single-mask token's mask plus the HQ mask, and its IoU;
        - `hq_token_only`: the HQ mask alone (one mask), IoUs as above;
        - `multimask_output=None` (for the ONNX graph): every SAM mask token's mask, then the HQ mask, unfused
          (`num_mask_tokens + 1` masks), and every SAM token's IoU.

        Args:
            image_embeddings: `(batch_size, C + vit_dim, h, w)` or `(batch_size, C, h, w)` (class docstring).
            hq_token_only: return the HQ mask alone instead of the sum of the SAM and HQ masks.
            (others): as in `SamMaskDecoder.forward`.

        Returns:
            masks: `(batch_size, point_batch_size, num_masks, 4h, 4w)` low-resolution logits.
            iou_predictions: `(batch_size, point_batch_size, num_ious)`.
            attentions (only when `output_attentions`): as in `SamMaskDecoder.forward`.
        """
        hq_features = self._image_hq_features(image_embeddings)
        tokens, image_tokens, attentions = self._two_way(
            image_embeddings[:, : self.config.hidden_size],
            image_positional_embeddings,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            sparse_padding_mask,
            output_attentions,
        )
        iou_predictions = self.iou_prediction_head(tokens[:, :, 0])
        # The SAM masks that are returned or fused; none when only the HQ mask is returned.
        selected = self.selected_tokens(multimask_output)
        if hq_token_only and multimask_output is not None:
            selected = range(0)
        hyper_in = [self.output_hypernetworks_mlps[i](tokens[:, :, 1 + i]) for i in selected]
        hyper_in.append(self.hq_mask_mlp(tokens[:, :, 1 + self.num_mask_tokens]))
        hyper_in = torch.stack(hyper_in, dim=2)

        def sam_and_hq_masks(rows: slice) -> torch.Tensor:
            upscaled = self._upscale(image_tokens[:, rows])
            hq_masks = self._hq_masks(upscaled, hq_features, hyper_in[:, rows, -1:])
            return torch.cat([self._project(upscaled, hyper_in[:, rows, :-1]), hq_masks], dim=2)

        masks = self._in_chunks(image_tokens, sam_and_hq_masks)
        if multimask_output is None:
            outputs = (masks, iou_predictions)
        else:
            sam_masks, hq_masks = masks[:, :, :-1], masks[:, :, -1:]
            iou_predictions = iou_predictions[..., 1:] if multimask_output else iou_predictions[..., :1]
            if multimask_output:
                iou_predictions, order = torch.sort(iou_predictions, dim=-1, descending=True)
                if not hq_token_only:
                    sam_masks = torch.take_along_dim(sam_masks, order[..., None, None], dim=2)
            outputs = (hq_masks if hq_token_only else sam_masks + hq_masks, iou_predictions)
        return (*outputs, attentions) if output_attentions else outputs

    def _hq_masks(self, upscaled: torch.Tensor, hq_features: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
        """The HQ token's masks: SAM's upscaled features (`_upscale`'s `(B, P, h, w, 2, 2, 2, 2, C // 8)`) refined by
        the mask convolutions, plus the image's `hq_features (B, C // 8, 4h, 4w)`, dotted with `hyper_in
        (B, P, 1, C // 8)` -> `(B, P, 1, 4h, 4w)`."""
        batch_size, prompts, height, width = upscaled.shape[:4]
        spatial = upscaled.permute(0, 1, 8, 2, 4, 6, 3, 5, 7).reshape(batch_size * prompts, -1, 4 * height, 4 * width)
        refined = self.mask_conv2(self.activation(self.mask_norm(self.mask_conv1(spatial))))
        refined = refined.unflatten(0, (batch_size, prompts)) + hq_features[:, None]
        masks = hyper_in @ refined.flatten(3)  # (B, P, 1, 16 h w)
        return masks.unflatten(-1, (4 * height, 4 * width))


def official_hq_outputs(
    config: SamMaskDecoderConfig, pred_masks: torch.Tensor, iou_scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`SamModel` outputs `(B, P, M, h, w)`, `(B, P, M)` as `segment_anything_hq`'s predictor and automatic mask
    generator see them: one mask per prompt for SAM-HQ (the first of the model's IoU-sorted ones is the official best
    candidate plus the HQ mask), every mask for SAM."""
    if config.hq_token:
        return pred_masks[:, :, :1], iou_scores[:, :, :1]
    return pred_masks, iou_scores
