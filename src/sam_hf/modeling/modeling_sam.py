"""`SamModel`: the image encoder, prompt encoder and mask decoder behind the transformers `PreTrainedModel` API."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..configuration_sam import SamConfig
from ..prompts import check_prompts, values_readable
from .backbones import TinyViTVisionEncoder
from .hq import SamHQMaskDecoder
from .image_encoder import SamVisionAttention, SamVisionEncoder
from .loss import sam_loss
from .mask_decoder import SamMaskDecoder
from .prompt_encoder import SamPositionalEmbedding, SamPromptEncoder
from .text_encoder import SamTextEncoder

# The image encoder of each `SamVisionConfig.backbone`.
VISION_ENCODERS: dict[str, type[nn.Module]] = {"vit": SamVisionEncoder, "tiny_vit": TinyViTVisionEncoder}
# Keys of `SamProcessor` outputs that are for post-processing only.
PROCESSOR_ONLY_KEYS = {"original_sizes", "reshaped_input_sizes"}


@dataclass
class SamImageSegmentationOutput(ModelOutput):
    """transformers' `SamImageSegmentationOutput` (same fields, same order), plus `loss` first and `image_embeddings`
    last, so that `return_dict=False` tuples index as transformers' do.

    Args:
        loss: scalar training loss (`sam_hf.modeling.loss.sam_loss`), when `labels` are given.
        iou_scores: `(batch_size, point_batch_size, num_masks)` predicted IoU of each mask.
        pred_masks: `(batch_size, point_batch_size, num_masks, 256, 256)` low-resolution mask logits (threshold 0);
            `SamProcessor.post_process_masks` maps them to the original image size.
        vision_hidden_states: with `output_hidden_states` and `pixel_values`, the image encoder's tokens
            `(batch_size, 64, 64, hidden_size)` after the embeddings and after each layer.
        vision_attentions: with `output_attentions` and `pixel_values`, each encoder layer's attention weights
            `(batch_size * num_windows * num_heads, tokens, tokens)` (whatever `attn_implementation`).
        mask_decoder_attentions: with `output_attentions`, each two-way layer's image -> tokens attention output
            `(batch_size, point_batch_size, 64 * 64, 256)`, as transformers records it.
        image_embeddings: `(batch_size, 256, 64, 64)` image embeddings, when computed from `pixel_values`, so that
            further prompts can reuse them.
    """

    loss: torch.Tensor | None = None
    iou_scores: torch.Tensor | None = None
    pred_masks: torch.Tensor | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    vision_attentions: tuple[torch.Tensor, ...] | None = None
    mask_decoder_attentions: tuple[torch.Tensor, ...] | None = None
    image_embeddings: torch.Tensor | None = None


class SamPreTrainedModel(PreTrainedModel):
    """Base of sam_hf's `SamModel`: `SamConfig`, weight initialisation, and a `from_pretrained` that reads pickled
    weights only through the weights-only unpickler."""

    config_class = SamConfig
    config: SamConfig
    base_model_prefix = "sam"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules: ClassVar[list[str]] = ["SamVisionLayer", "TinyViTLayer"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    accepts_loss_kwargs = False  # the loss is a per-prompt mean: Trainer must not pass `num_items_in_batch`

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any
    ) -> SamPreTrainedModel:
        """transformers' `from_pretrained` on a directory or a Hub id: `model.safetensors` when there is one, else
        `pytorch_model.bin` read by torch's weights-only unpickler (which executes nothing and refuses a file holding
        anything but tensors), as transformers does. `weights_only=False` is refused. An official checkpoint file
        (`sam_vit_b_01ec64.pth`) is not a model directory: `sam_hf.load_sam(path)` converts it in memory."""
        if kwargs.get("weights_only", True) is not True:
            raise ValueError("weights_only must be True: sam_hf reads pickled weights with the weights-only unpickler.")
        name = pretrained_model_name_or_path
        if isinstance(name, (str, os.PathLike)) and os.path.isfile(name):
            raise ValueError(
                f"{os.fspath(name)!r} is a file; from_pretrained takes a model directory or a "
                "Hub id. Load an official checkpoint file (.pth) with sam_hf.load_sam(path), or convert it with "
                "`sam-hf convert CHECKPOINT OUT_DIR`."
            )
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, SamVisionAttention) and module.use_rel_pos:
            init.zeros_(module.rel_pos_h)
            init.zeros_(module.rel_pos_w)
        elif isinstance(module, SamVisionEncoder) and module.pos_embed is not None:
            init.zeros_(module.pos_embed)
        elif isinstance(module, SamPositionalEmbedding):
            init.normal_(module.positional_embedding, std=1.0)
        elif hasattr(module, "build_causal_mask") and module.attn_mask is not None:
            # open_clip's text tower (recognised by its method, so that open_clip is imported only with a text encoder):
            # its causal mask is a non-persistent buffer, not in checkpoints, so rebuilt after `from_pretrained`'s
            # meta-device initialisation.
            init.copy_(module.attn_mask, module.build_causal_mask())


class SamModel(SamPreTrainedModel):
    """Segment Anything: embeds an image once (`get_image_embeddings`), then turns prompts into masks.

    Example:

    ```python
    >>> from sam_hf import SamModel, SamProcessor
    >>> model = SamModel.from_pretrained("facebook/sam-vit-base")
    >>> processor = SamProcessor.from_pretrained("facebook/sam-vit-base")
    >>> inputs = processor(images=image, input_points=[[[[450, 600]]]], return_tensors="pt")
    >>> outputs = model(**inputs)
    >>> masks = processor.post_process_masks(
    ...     outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    ... )
    ```
    """

    # The random Fourier matrix is shared by the image grid and the prompt coordinates (one module, two names).
    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "prompt_encoder.shared_embedding.positional_embedding": "shared_image_embedding.positional_embedding"
    }

    def __init__(self, config: SamConfig) -> None:
        super().__init__(config)
        # The encoder and decoder read the attention implementation from their sub-configs, as transformers' do.
        for sub_config in (config.vision_config, config.mask_decoder_config):
            sub_config._attn_implementation = config._attn_implementation
        self.shared_image_embedding = SamPositionalEmbedding(config.vision_config.num_pos_feats)
        self.vision_encoder = VISION_ENCODERS[config.vision_config.backbone](config.vision_config)
        text = config.text_config
        self.prompt_encoder = SamPromptEncoder(
            config.prompt_encoder_config, self.shared_image_embedding, text.embed_dim if text else None
        )
        decoder = SamHQMaskDecoder if config.mask_decoder_config.hq_token else SamMaskDecoder
        self.mask_decoder = decoder(config.mask_decoder_config)
        self.text_encoder = SamTextEncoder(text) if text else None
        self.post_init()
        if text and text.pretrained and not self.prompt_encoder.no_mask_embed.weight.is_meta:
            # After post_init, which would re-initialise them; `from_pretrained` builds on the meta device instead.
            self.text_encoder.load_open_clip_weights(text)

    def get_input_embeddings(self) -> nn.Module:
        """The image encoder's patch embedding (transformers' `get_input_embeddings`)."""
        return self.vision_encoder.patch_embed

    def get_image_wide_positional_embeddings(self) -> torch.Tensor:
        """`(1, 256, 64, 64)` positional encoding of the image-embedding grid."""
        return self.shared_image_embedding.grid_embedding(self.config.prompt_encoder_config.image_embedding_size)

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        vision = self.config.vision_config
        form = f"(batch_size, {vision.num_channels}, {vision.image_size}, {vision.image_size})"
        if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
            raise TypeError(f"pixel_values must be a floating point torch.Tensor of shape {form}; use SamProcessor.")
        expected = (vision.num_channels, vision.image_size, vision.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected or pixel_values.shape[0] == 0:
            raise ValueError(f"pixel_values must have shape {form}, got {tuple(pixel_values.shape)}; use SamProcessor.")
        if values_readable(pixel_values) and not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values contains NaN or infinite values.")

    def get_image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`pixel_values (batch_size, 3, 1024, 1024)` -> image embeddings `(batch_size, 256, 64, 64)`; for SAM-HQ
        `(batch_size, 256 + vit_dim, 64, 64)`, the early ViT feature its decoder fuses following on the channel axis
        (so that every caller passes one tensor on to `forward(image_embeddings=...)`)."""
        self._check_pixel_values(pixel_values)
        return self._encode(pixel_values)[1]

    def _encode(
        self, pixel_values: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> tuple[Any, torch.Tensor]:
        """The vision encoder's output and the decoder's image embeddings (`get_image_embeddings`). SAM-HQ's early
        feature is the first global-attention block's output (TinyViT: the second stage's), the one hidden state the
        encoder keeps for it (all of them only with `output_hidden_states`)."""
        hq = self.config.mask_decoder_config.hq_token
        vision = self.config.vision_config
        # hidden_states[0] is the embedding (ViT) or the stem's output (TinyViT, whose second stage's merged output,
        # hidden_states[2], the official light HQ model fuses).
        early_index = (2 if vision.backbone == "tiny_vit" else vision.global_attn_indexes[0] + 1) if hq else None
        outputs = self.vision_encoder(
            pixel_values.to(self.dtype),
            output_attentions,
            output_hidden_states,
            return_dict=True,
            return_hidden_state=early_index,
        )
        embeddings = outputs.last_hidden_state
        if hq:
            early = outputs.hidden_states[early_index if output_hidden_states else 0]
            embeddings = torch.cat([embeddings, early.permute(0, 3, 1, 2)], dim=1)
            if not output_hidden_states:
                outputs.hidden_states = None
        return outputs, embeddings

    def get_prompt_embeddings(
        self,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """transformers' `get_prompt_embeddings`: the prompt encoder's output for prompts laid out as in `forward`.

        Returns:
            sparse_embeddings: `(batch_size, point_batch_size, num_tokens, 256)` (points with the not-a-point token
                appended when there is no box, then box corners), or `None` without points and boxes.
            dense_embeddings: `(batch_size, point_batch_size or 1, 256, 64, 64)`, from `input_masks` or the no-mask
                embedding.
        """
        check_prompts(
            input_points, input_labels, input_boxes, input_masks, self.config.prompt_encoder_config.mask_input_size
        )
        sparse, _, dense = self.prompt_encoder(input_points, input_labels, input_boxes, input_masks)
        prompts = next((x for x in (input_points, input_boxes, input_masks) if x is not None), None)
        return sparse, dense.expand(1 if prompts is None else prompts.shape[0], -1, -1, -1, -1)

    def _check_text(self, input_text_ids: torch.Tensor | None, text_embeds: torch.Tensor | None) -> None:
        if input_text_ids is None and text_embeds is None:
            return
        text = self.config.text_config
        if text is None:
            raise ValueError(
                "This checkpoint has no text encoder and no trained text projection (config.text_config is None, as "
                "in every official SAM checkpoint). Use the zero-shot path instead: sam_hf.segment_text(..., "
                "method='zero-shot', clip=...) scores SAM's masks with a CLIP model."
            )
        if input_text_ids is not None and text_embeds is not None:
            raise ValueError("Pass input_text_ids or text_embeds, not both.")
        if input_text_ids is not None:
            form = f"(batch_size, point_batch_size, {text.context_length}) int64 token ids from SamProcessor(text=...)"
            if not isinstance(input_text_ids, torch.Tensor) or input_text_ids.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"input_text_ids must be an integer (int64 or int32) torch.Tensor {form}.")
            if (
                input_text_ids.ndim != 3
                or input_text_ids.shape[-1] != text.context_length
                or 0 in input_text_ids.shape[:2]
            ):
                raise ValueError(f"input_text_ids must have shape {form}, got {tuple(input_text_ids.shape)}.")
            vocab_size = self.text_encoder.clip.vocab_size
            if values_readable(input_text_ids) and (input_text_ids.min() < 0 or input_text_ids.max() >= vocab_size):
                raise ValueError(f"input_text_ids must be token ids in [0, {vocab_size}).")
        else:
            form = f"(batch_size, point_batch_size, {text.embed_dim}) CLIP embeddings"
            if not isinstance(text_embeds, torch.Tensor) or not text_embeds.is_floating_point():
                raise TypeError(f"text_embeds must be a floating point torch.Tensor {form}.")
            if text_embeds.ndim != 3 or text_embeds.shape[-1] != text.embed_dim or 0 in text_embeds.shape[:2]:
                raise ValueError(f"text_embeds must have shape {form}, got {tuple(text_embeds.shape)}.")
            if values_readable(text_embeds) and not torch.isfinite(text_embeds).all():
                raise ValueError("text_embeds contains NaN or infinite values.")

    def get_text_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids `(..., context_length)` -> L2-normalised CLIP text embeddings `(..., embed_dim)`."""
        self._check_text(input_ids if input_ids.ndim == 3 else input_ids.reshape(1, -1, input_ids.shape[-1]), None)
        return self.text_encoder(input_ids.flatten(0, -2)).unflatten(0, input_ids.shape[:-1])

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_masks: torch.Tensor | None = None,
        input_text_ids: torch.Tensor | None = None,
        text_embeds: torch.Tensor | None = None,
        image_embeddings: torch.Tensor | None = None,
        multimask_output: bool = True,
        hq_token_only: bool = False,
        intermediate_embeddings: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: torch.Tensor,
    ) -> SamImageSegmentationOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            pixel_values: `(batch_size, 3, 1024, 1024)` normalised, padded images from `SamProcessor`.
            input_points: `(batch_size, point_batch_size, num_points, 2)` (x, y) in the resized 1024 frame.
            input_labels: `(batch_size, point_batch_size, num_points)`: 1 foreground, 0 background, -1 not a point,
                -10 padding (ignored, so ragged prompts give the masks they would give alone). Defaults to 1.
            input_boxes: `(batch_size, point_batch_size, 4)` XYXY, one box per prompt.
            input_masks: `(batch_size, point_batch_size or 1, 256, 256)` low-resolution mask logits, e.g. a previous
                `pred_masks` selection, one per prompt (size 1 on the prompt axis is shared by every prompt).
            input_text_ids: `(batch_size, point_batch_size, context_length)` CLIP token ids (`SamProcessor(text=...)`),
                one text per prompt, alone or with points / boxes; models with a `text_config` only.
            text_embeds: `(batch_size, point_batch_size, embed_dim)` precomputed CLIP embeddings instead of
                `input_text_ids` (text embeddings, or CLIP image embeddings of mask crops as in the paper's training).
            image_embeddings: `(batch_size, 256, 64, 64)` from `get_image_embeddings`, instead of `pixel_values`
                (SAM-HQ: `(batch_size, 256 + vit_dim, 64, 64)`, or `(batch_size, 256, 64, 64)` with
                `intermediate_embeddings`, or alone as transformers' `SamHQModel` allows).
            multimask_output: 3 masks per prompt (for ambiguous single clicks) or 1 (for multi-prompt input). SAM-HQ
                returns them as transformers' `SamHQModel` does: sorted by predicted IoU, each plus the HQ mask.
            hq_token_only: SAM-HQ only: return the HQ token's mask alone (one mask per prompt) instead of its sum
                with SAM's masks; the IoU scores stay SAM's (as in `segment_anything_hq` and transformers).
            intermediate_embeddings: SAM-HQ only, transformers' `SamHQModel` argument: the ViT's global-attention
                block outputs `(batch_size, 64, 64, vit_dim)` (the first is used), with 256-channel
                `image_embeddings`.
            labels: `(batch_size, point_batch_size, H, W)` ground-truth masks in the model's input frame (any
                resolution, e.g. 256x256 or 1024x1024); `loss` is then the paper's training loss.
            output_attentions: also return `vision_attentions` (with `pixel_values`; the encoder then materialises
                its attention weights, whatever `attn_implementation`) and `mask_decoder_attentions`; default
                `config.output_attentions`.
            output_hidden_states: also return `vision_hidden_states` (with `pixel_values`); default
                `config.output_hidden_states`.
            return_dict: `False` returns the output's non-`None` fields as a tuple; default `config.return_dict`.
            kwargs: only the processor's `original_sizes` / `reshaped_input_sizes`, accepted so that
                `model(**processor(...))` works; they matter to `post_process_masks`, not to the model.

        Returns:
            [`SamImageSegmentationOutput`] with `iou_scores (batch_size, point_batch_size, num_masks)` and
            `pred_masks (batch_size, point_batch_size, num_masks, 256, 256)`, or its tuple.
        """
        unexpected = set(kwargs) - PROCESSOR_ONLY_KEYS
        if unexpected:
            raise TypeError(f"SamModel.forward got unexpected arguments {sorted(unexpected)}.")
        if (pixel_values is None) == (image_embeddings is None):
            raise ValueError("Pass exactly one of pixel_values or image_embeddings.")
        # Every input is checked before the (expensive) image encoder runs.
        if pixel_values is not None:
            self._check_pixel_values(pixel_values)
        else:
            image_embeddings = self._with_intermediate(image_embeddings, intermediate_embeddings)
            self._check_image_embeddings(image_embeddings)
        if not self.config.mask_decoder_config.hq_token and (hq_token_only or intermediate_embeddings is not None):
            raise ValueError("hq_token_only and intermediate_embeddings are for SAM-HQ models (hq_token); this is not.")
        if pixel_values is not None and intermediate_embeddings is not None:
            raise ValueError("intermediate_embeddings go with image_embeddings; pixel_values compute their own.")
        if labels is not None and hq_token_only and multimask_output:
            raise ValueError(
                "labels with hq_token_only need multimask_output=False: the HQ mask is one mask, but the IoU scores "
                "would be the 3 multimask candidates'."
            )
        check_prompts(
            input_points, input_labels, input_boxes, input_masks, self.config.prompt_encoder_config.mask_input_size
        )
        self._check_text(input_text_ids, text_embeds)
        text = input_text_ids if input_text_ids is not None else text_embeds
        batch_size = (pixel_values if pixel_values is not None else image_embeddings).shape[0]
        for name, prompt in (
            ("input_points", input_points),
            ("input_boxes", input_boxes),
            ("input_masks", input_masks),
            ("input_text_ids" if input_text_ids is not None else "text_embeds", text),
        ):
            if prompt is not None and prompt.shape[0] != batch_size:
                raise ValueError(f"{name} has batch size {prompt.shape[0]}, but there are {batch_size} images.")
        other = input_points if input_points is not None else input_boxes
        if text is not None and other is not None and text.shape[1] != other.shape[1]:
            text_name = "input_text_ids" if input_text_ids is not None else "text_embeds"
            other_name = "input_points" if input_points is not None else "input_boxes"
            raise ValueError(
                f"{text_name} has {text.shape[1]} prompts per image, {other_name} {other.shape[1]}: the text prompts "
                "must match the point / box prompts."
            )
        config = self.config
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        computed_embeddings = vision_outputs = None
        if pixel_values is not None:
            vision_outputs, image_embeddings = self._encode(pixel_values, output_attentions, output_hidden_states)
            computed_embeddings = image_embeddings
        image_embeddings = image_embeddings.to(self.dtype)
        if input_masks is not None:
            input_masks = input_masks.to(self.dtype)

        if input_text_ids is not None:
            text_embeds = self.get_text_embeddings(input_text_ids)
        if text_embeds is not None:
            text_embeds = text_embeds.to(self.dtype)
        sparse, padding_mask, dense = self.prompt_encoder(
            input_points, input_labels, input_boxes, input_masks, text_embeds
        )
        pred_masks, iou_scores, *decoder_attentions = self.mask_decoder(
            image_embeddings=image_embeddings,
            image_positional_embeddings=self.get_image_wide_positional_embeddings(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            sparse_padding_mask=padding_mask,
            output_attentions=output_attentions,
            **({"hq_token_only": hq_token_only} if config.mask_decoder_config.hq_token else {}),
        )
        loss = None
        if labels is not None:
            self._check_labels(labels, pred_masks)
            loss = sam_loss(pred_masks, iou_scores, labels).total
        output = SamImageSegmentationOutput(
            loss=loss,
            iou_scores=iou_scores,
            pred_masks=pred_masks,
            vision_hidden_states=vision_outputs.hidden_states if vision_outputs is not None else None,
            vision_attentions=vision_outputs.attentions if vision_outputs is not None else None,
            mask_decoder_attentions=decoder_attentions[0] if output_attentions else None,
            image_embeddings=computed_embeddings,
        )
        return output if (config.return_dict if return_dict is None else return_dict) else output.to_tuple()

    @staticmethod
    def _check_labels(labels: torch.Tensor, pred_masks: torch.Tensor) -> None:
        form = f"(batch_size, point_batch_size, H, W) = ({pred_masks.shape[0]}, {pred_masks.shape[1]}, H, W)"
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor of ground-truth masks {form}.")
        if labels.ndim != 4 or labels.shape[:2] != pred_masks.shape[:2] or 0 in labels.shape[2:]:
            raise ValueError(f"labels must be ground-truth masks of shape {form}, got {tuple(labels.shape)}.")

    def _check_image_embeddings(self, image_embeddings: torch.Tensor) -> None:
        size = self.config.prompt_encoder_config.image_embedding_size
        channels = allowed = self.config.prompt_encoder_config.hidden_size
        form = f"(batch_size, {channels}, {size}, {size})"
        decoder = self.config.mask_decoder_config
        if decoder.hq_token:
            allowed = (channels, channels + decoder.vit_dim)
            form = f"(batch_size, {channels} + {decoder.vit_dim}, {size}, {size}) from get_image_embeddings, or {form}"
        if not isinstance(image_embeddings, torch.Tensor) or not image_embeddings.is_floating_point():
            raise TypeError(f"image_embeddings must be a floating point torch.Tensor of shape {form}.")
        if (
            image_embeddings.ndim != 4
            or image_embeddings.shape[1] not in (allowed if decoder.hq_token else (channels,))
            or tuple(image_embeddings.shape[2:]) != (size, size)
            or image_embeddings.shape[0] == 0
        ):
            raise ValueError(f"image_embeddings must have shape {form}, got {tuple(image_embeddings.shape)}.")

    def _with_intermediate(
        self, image_embeddings: torch.Tensor, intermediate_embeddings: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """transformers' SAM-HQ inputs (256-channel embeddings, ViT block outputs) as sam_hf's one tensor."""
        if intermediate_embeddings is None or not self.config.mask_decoder_config.hq_token:
            return image_embeddings
        size = self.config.prompt_encoder_config.image_embedding_size
        form = f"a list of (batch_size, {size}, {size}, {self.config.mask_decoder_config.vit_dim}) tensors"
        if not isinstance(intermediate_embeddings, (list, tuple)) or not intermediate_embeddings:
            raise TypeError(f"intermediate_embeddings must be {form}, got {type(intermediate_embeddings).__name__}.")
        early = intermediate_embeddings[0]
        channels = self.config.prompt_encoder_config.hidden_size
        if not isinstance(image_embeddings, torch.Tensor) or image_embeddings.shape[1:2] != (channels,):
            raise ValueError(f"with intermediate_embeddings, image_embeddings must have {channels} channels.")
        expected = (image_embeddings.shape[0], size, size, self.config.mask_decoder_config.vit_dim)
        if not isinstance(early, torch.Tensor) or tuple(early.shape) != expected:
            shape = tuple(early.shape) if isinstance(early, torch.Tensor) else type(early).__name__
            raise ValueError(f"intermediate_embeddings must be {form}, got {shape} first.")
        return torch.cat([image_embeddings, early.permute(0, 3, 1, 2).to(image_embeddings.dtype)], dim=1)
