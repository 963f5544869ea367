"""Configuration of sam_hf's SAM: one sub-config per part of the model (vision encoder, prompt encoder, mask
decoder, optional CLIP text encoder), with the field names of transformers' SAM so that `facebook/sam-vit-*`
`config.json` files load as is.

The sizes of the paper's three image encoders are available as presets: `SamConfig.from_preset("vit_b")`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN
from transformers.configuration_utils import SubConfigSpec

# Official decoder LayerNorm epsilon (torch's nn.LayerNorm default). transformers' SAM defaults to 1e-6, which shifts
# logits by ~3e-5; checkpoints converted from transformers' layout are official weights, so they get this value too.
OFFICIAL_DECODER_LAYER_NORM_EPS = 1e-5

# Bounds of config values (README "Limits"), checked when a config is built or loaded, so that a broken or absurd
# checkpoint is refused by field name before any module is built. Generous for every released SAM: vit_h is 32 layers,
# 1280 wide (MLP 5120), 16 heads, 1024 / 16 = 64 tokens a side; SAM-HQ, MobileSAM and SAM 2 stay well inside.
MAX_IMAGE_SIZE = 8192  # input side in pixels (also the processor's longest_edge, pad_size and mask sizes)
MAX_EMBEDDING_SIZE = 256  # side of the image-embedding grid, image_size // patch_size
MAX_WIDTH = 8192  # any channel width: hidden sizes, MLP widths, positional features
MAX_LAYERS = 128  # blocks of a stack, layers of a head
MAX_HEADS = 128  # attention heads
MAX_MULTIMASK_OUTPUTS = 16


def check_config_values(
    config: PreTrainedConfig,
    integers: dict[str, tuple[int, int]] | None = None,
    floats: dict[str, tuple[float, float]] | None = None,
    flags: tuple[str, ...] = (),
    activations: tuple[str, ...] = (),
) -> None:
    """Checks fields of `config`: `integers` / `floats` map a field to its inclusive `(low, high)` bounds (floats must
    be finite), `flags` are booleans, `activations` names in transformers' `ACT2FN`. Raises a `ValueError` naming the
    field as `<sub-config>.<field>`, e.g. `vision_config.patch_size`, for a wrong type too: config values come from
    files, where a wrong type is a bad value."""
    prefix = f"{config.base_config_key}." if getattr(config, "base_config_key", "") else ""
    for name, (low, high) in (integers or {}).items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{prefix}{name} must be an integer in [{low}, {high}], got {value!r}.")
        if not low <= value <= high:
            raise ValueError(f"{prefix}{name} must be an integer in [{low}, {high}], got {value}.")
        setattr(config, name, int(value))
    for name, (low, high) in (floats or {}).items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{prefix}{name} must be a number in [{low}, {high}], got {value!r}.")
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{prefix}{name} must be a finite number in [{low}, {high}], got {value}.")
        setattr(config, name, float(value))
    for name in flags:
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{prefix}{name} must be True or False, got {getattr(config, name)!r}.")
    for name in activations:
        value = getattr(config, name)
        if not isinstance(value, str) or value not in ACT2FN:
            raise ValueError(f"{prefix}{name} must be an activation name of transformers' ACT2FN, got {value!r}.")


def _check_input_size(config: PreTrainedConfig) -> None:
    """`image_size` / `patch_size`: bounded, and the patches tile the input in a bounded grid."""
    check_config_values(config, integers={"image_size": (1, MAX_IMAGE_SIZE), "patch_size": (1, MAX_IMAGE_SIZE)})
    if config.image_size % config.patch_size or config.image_size // config.patch_size > MAX_EMBEDDING_SIZE:
        raise ValueError(
            f"{config.base_config_key}.image_size ({config.image_size}) must be a multiple of patch_size "
            f"({config.patch_size}), with at most {MAX_EMBEDDING_SIZE} patches a side."
        )


# Decoder LayerNorm epsilons and the like: positive, and small enough not to swamp the variance they stabilise.
EPS_BOUNDS = (1e-12, 1.0)

# Image encoders `SamVisionConfig.backbone` selects: the paper's ViT, MobileSAM's TinyViT.
BACKBONES = ("vit", "tiny_vit")
# MobileSAM's TinyViT (`segment_anything_hq.build_sam_baseline.build_sam_vit_t`, the official `mobile_sam.pt`): the
# values `None` TinyViT fields take. The last merge keeps the resolution (stride 1), so that 1024 / (4 * 2 * 2) = 64.
MOBILE_SAM_TINY_VIT: dict[str, Any] = {
    "embed_dims": [64, 128, 160, 320],
    "depths": [2, 2, 6, 2],
    "num_heads": [2, 4, 5, 10],
    "window_sizes": [7, 7, 14, 7],
    "merge_strides": [2, 2, 1],
    "mbconv_expand_ratio": 4.0,
    "local_conv_size": 3,
}
# The stem (two stride-2 convolutions) downsamples by this much before the first stage.
TINY_VIT_STEM_STRIDE = 4


class SamVisionConfig(PreTrainedConfig):
    r"""MAE-style ViT image encoder with windowed and global attention, relative position bias and a conv neck.

    Args:
        hidden_size: width of the ViT.
        output_channels: channels of the image embedding produced by the neck.
        num_hidden_layers / num_attention_heads: depth and heads of the ViT.
        num_channels: input image channels.
        image_size / patch_size: square input resolution and patch size (1024 / 16 -> 64x64 tokens).
        hidden_act: activation of the ViT MLP.
        layer_norm_eps: epsilon of every LayerNorm in the encoder (ViT blocks and neck).
        qkv_bias: bias on the fused query/key/value projection.
        mlp_ratio / mlp_dim: MLP width, `mlp_dim` defaults to `hidden_size * mlp_ratio`.
        use_abs_pos: learned absolute position embedding of shape (1, tokens, tokens, hidden_size).
        use_rel_pos: decomposed relative position bias in every attention block.
        window_size: window of the local attention blocks (tokens are zero-padded to a multiple of it).
        global_attn_indexes: blocks that attend over the whole image instead of windows.
        num_pos_feats: half the width of the random Fourier positional encoding shared with the prompt encoder.
        backbone: `"vit"` (the fields above) or `"tiny_vit"`, MobileSAM's TinyViT (`sam_hf.modeling.backbones`):
            a convolutional stage of MBConv blocks, then windowed-attention stages, patch merging between stages,
            and the same neck. With `"tiny_vit"`, `hidden_size` is the last stage's width (the neck's input),
            `patch_size` the total downsampling (4 in the stem times the merge strides), `layer_norm_eps` the neck's;
            the ViT-only fields (`num_hidden_layers`, `num_attention_heads`, `window_size`, `global_attn_indexes`,
            `mlp_dim`, `qkv_bias`, `use_abs_pos`, `use_rel_pos`) are unused. TinyViT fields (`None` for the ViT;
            with `"tiny_vit"`, `None` means MobileSAM's value):
        embed_dims / depths: width and number of blocks of each stage (the first is the convolutional one).
        num_heads / window_sizes: attention heads and window of each stage (the first stage's are unused).
        merge_strides: stride of the patch merging after each stage but the last (1 or 2).
        mbconv_expand_ratio: hidden width of the MBConv blocks, relative to the stage's.
        local_conv_size: kernel of the depthwise convolution between attention and MLP in each attention block.
    """

    model_type: ClassVar[str] = "sam_hf_vision"
    base_config_key: ClassVar[str] = "vision_config"

    hidden_size: int = 768
    output_channels: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 1024
    patch_size: int = 16
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    mlp_ratio: float = 4.0
    mlp_dim: int | None = None
    use_abs_pos: bool = True
    use_rel_pos: bool = True
    window_size: int = 14
    global_attn_indexes: list[int] | tuple[int, ...] = (2, 5, 8, 11)
    num_pos_feats: int = 128
    backbone: str = "vit"
    embed_dims: list[int] | None = None
    depths: list[int] | None = None
    num_heads: list[int] | None = None
    window_sizes: list[int] | None = None
    merge_strides: list[int] | None = None
    mbconv_expand_ratio: float | None = None
    local_conv_size: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        check_config_values(
            self,
            integers={
                **dict.fromkeys(("hidden_size", "output_channels", "num_pos_feats"), (1, MAX_WIDTH)),
                "num_hidden_layers": (1, MAX_LAYERS),
                "num_attention_heads": (1, MAX_HEADS),
                "num_channels": (1, 4),
            },
            floats={"layer_norm_eps": EPS_BOUNDS, "mlp_ratio": (1 / 64, 64.0)},
            flags=("qkv_bias", "use_abs_pos", "use_rel_pos"),
            activations=("hidden_act",),
        )
        _check_input_size(self)
        # A window larger than the token grid pads the grid to the window (transformers' own SAM tests put 14 over 12),
        # but a 256-token window over 8x8 tokens is 65536 tokens of attention: at most twice the grid.
        check_config_values(self, integers={"window_size": (0, 2 * (self.image_size // self.patch_size))})
        if self.mlp_dim is None:
            self.mlp_dim = int(self.hidden_size * self.mlp_ratio)
        check_config_values(self, integers={"mlp_dim": (1, MAX_WIDTH)})
        # Indexes past the stack select no block, as in transformers and the official code (transformers' SAM tests
        # keep vit_b's [2, 5, 8, 11] on 2 blocks), so only the form and MAX_LAYERS are checked.
        indexes = self.global_attn_indexes
        if not isinstance(indexes, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < MAX_LAYERS for i in indexes
        ):
            raise ValueError(
                f"vision_config.global_attn_indexes must be block indexes in [0, {MAX_LAYERS}), got {indexes!r}."
            )
        self.global_attn_indexes = list(indexes)
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {list(BACKBONES)}, got {self.backbone!r}.")
        if self.backbone == "tiny_vit":
            _check_tiny_vit(self)
        elif given := [name for name in MOBILE_SAM_TINY_VIT if getattr(self, name) is not None]:
            raise ValueError(f"{given} are TinyViT fields: set backbone='tiny_vit' to use them.")
        elif self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        super().__post_init__(**kwargs)


def _check_tiny_vit(config: SamVisionConfig) -> None:
    """Fills a TinyViT config's `None` fields with MobileSAM's values and checks them (`ValueError` naming the
    field)."""
    for name, value in MOBILE_SAM_TINY_VIT.items():
        if getattr(config, name) is None:
            setattr(config, name, list(value) if isinstance(value, list) else value)
    if not isinstance(config.embed_dims, (list, tuple)) or len(config.embed_dims) < 2:
        raise ValueError(
            "embed_dims must be a list of at least 2 stage widths (a convolutional stage, then attention stages), "
            f"got {config.embed_dims!r}."
        )
    num_stages = len(config.embed_dims)
    expected_lengths = {"embed_dims": num_stages, "depths": num_stages, "num_heads": num_stages}
    expected_lengths |= {"window_sizes": num_stages, "merge_strides": num_stages - 1}
    for name, length in expected_lengths.items():
        value = getattr(config, name)
        if (
            not isinstance(value, (list, tuple))
            or len(value) != length
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise ValueError(
                f"{name} must be a list of {length} positive ints (one per stage of embed_dims; merge_strides one per "
                f"stage but the last), got {value!r}."
            )
        setattr(config, name, list(value))
    if any(stride not in (1, 2) for stride in config.merge_strides):
        raise ValueError(f"merge_strides must each be 1 or 2, got {config.merge_strides}.")
    for stage in range(1, num_stages):
        if config.embed_dims[stage] % config.num_heads[stage]:
            raise ValueError(
                f"embed_dims[{stage}] ({config.embed_dims[stage]}) must be divisible by num_heads[{stage}] "
                f"({config.num_heads[stage]})."
            )
    if config.hidden_size != config.embed_dims[-1]:
        raise ValueError(
            f"hidden_size ({config.hidden_size}) must equal embed_dims[-1] ({config.embed_dims[-1]}) with backbone "
            "'tiny_vit': it is the width of the last stage, the neck's input."
        )
    stride = TINY_VIT_STEM_STRIDE * math.prod(config.merge_strides)
    if config.patch_size != stride:
        raise ValueError(
            f"patch_size ({config.patch_size}) must equal TinyViT's total downsampling {TINY_VIT_STEM_STRIDE} * "
            f"prod(merge_strides) = {stride} with backbone 'tiny_vit'."
        )
    if not (isinstance(config.mbconv_expand_ratio, (int, float)) and config.mbconv_expand_ratio > 0):
        raise ValueError(f"mbconv_expand_ratio must be a positive number, got {config.mbconv_expand_ratio!r}.")
    size = config.local_conv_size
    if not (isinstance(size, int) and not isinstance(size, bool) and size > 0 and size % 2):
        raise ValueError(f"local_conv_size must be a positive odd int (a 'same' convolution), got {size!r}.")
    # The bounds of the ViT's fields (`check_config_values`), per stage: a depth of 10**6 is refused, not built.
    for name, high in (
        ("embed_dims", MAX_WIDTH),
        ("depths", MAX_LAYERS),
        ("num_heads", MAX_HEADS),
        ("window_sizes", MAX_EMBEDDING_SIZE),
    ):
        if max(getattr(config, name)) > high:
            raise ValueError(f"vision_config.{name} must each be at most {high}, got {getattr(config, name)}.")
    check_config_values(
        config, integers={"local_conv_size": (1, MAX_EMBEDDING_SIZE)}, floats={"mbconv_expand_ratio": (1 / 64, 64.0)}
    )


def _check_tiny_vit_hq(vision: SamVisionConfig, decoder: SamMaskDecoderConfig) -> None:
    """SAM-HQ on TinyViT (the official light `vit_tiny` HQ) fuses the second stage's output, after its patch merging:
    it needs a third stage, no downsampling after that merge, and `vit_dim` = `embed_dims[2]`."""
    if len(vision.embed_dims) < 3 or math.prod(vision.merge_strides[2:]) != 1:
        raise ValueError(
            "mask_decoder_config.hq_token on a TinyViT fuses the second stage's output at the embedding grid: "
            "vision_config needs at least 3 stages and merge_strides of 1 after the second merge, got "
            f"embed_dims {vision.embed_dims}, merge_strides {vision.merge_strides}."
        )
    if decoder.vit_dim != vision.embed_dims[2]:
        raise ValueError(
            f"mask_decoder_config.vit_dim ({decoder.vit_dim}) must equal vision_config.embed_dims[2] "
            f"({vision.embed_dims[2]}): it is the width of the TinyViT feature SAM-HQ fuses."
        )


class SamPromptEncoderConfig(PreTrainedConfig):
    r"""Prompt encoder: points, box corners, and dense mask prompts.

    Args:
        hidden_size: width of prompt tokens and of the dense embedding (the image embedding's channels).
        image_size / patch_size: must equal the vision encoder's; they fix the coordinate frame and the
            embedding grid (`image_embedding_size = image_size // patch_size`).
        mask_input_channels: channels after the second mask downscaling conv.
        num_point_embeddings: background, foreground, box top-left and box bottom-right embeddings.
        hidden_act: activation between the mask downscaling convs.
        layer_norm_eps: epsilon of the mask downscaling LayerNorms.
    """

    model_type: ClassVar[str] = "sam_hf_prompt_encoder"
    base_config_key: ClassVar[str] = "prompt_encoder_config"

    hidden_size: int = 256
    image_size: int = 1024
    patch_size: int = 16
    mask_input_channels: int = 16
    num_point_embeddings: int = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6

    def __post_init__(self, **kwargs: Any) -> None:
        check_config_values(
            self,
            integers={
                "hidden_size": (1, MAX_WIDTH),
                "mask_input_channels": (4, MAX_WIDTH),
                "num_point_embeddings": (4, 4),
            },
            floats={"layer_norm_eps": EPS_BOUNDS},
            activations=("hidden_act",),
        )
        _check_input_size(self)
        super().__post_init__(**kwargs)

    @property
    def image_embedding_size(self) -> int:
        """Side of the image-embedding grid, `image_size // patch_size` (64 for a 1024 input)."""
        return self.image_size // self.patch_size

    @property
    def mask_input_size(self) -> int:
        """Side of the low-resolution mask prompt (4x the embedding grid: 256 for a 1024 input)."""
        return 4 * self.image_embedding_size


class SamMaskDecoderConfig(PreTrainedConfig):
    r"""Two-way transformer mask decoder with hypernetwork mask heads and an IoU head.

    Args:
        hidden_size: token and image-embedding width.
        hidden_act: activation of the two-way transformer MLP.
        mlp_dim: width of that MLP.
        num_hidden_layers / num_attention_heads: two-way transformer depth and heads.
        attention_downsample_rate: token<->image cross-attention works at `hidden_size // rate`.
        num_multimask_outputs: masks returned with `multimask_output=True` (plus one single-mask token).
        iou_head_depth / iou_head_hidden_dim: MLP predicting each mask's IoU.
        layer_norm_eps: epsilon of the transformer LayerNorms; 1e-5 in the official model.
        hq_token: SAM-HQ's decoder: an extra HQ output token and its MLP, whose mask is computed on the upscaled image
            tokens fused with an early ViT feature (the output of the first global-attention block) and the image
            embedding (transformers' `SamHQMaskDecoder`).
        vit_dim: channels of that early feature (the ViT width); required with `hq_token`.
    """

    model_type: ClassVar[str] = "sam_hf_mask_decoder"
    base_config_key: ClassVar[str] = "mask_decoder_config"

    hidden_size: int = 256
    hidden_act: str = "relu"
    mlp_dim: int = 2048
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    layer_norm_eps: float = OFFICIAL_DECODER_LAYER_NORM_EPS
    hq_token: bool = False
    vit_dim: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        check_config_values(
            self,
            integers={
                **dict.fromkeys(("hidden_size", "mlp_dim", "iou_head_hidden_dim"), (1, MAX_WIDTH)),
                "num_hidden_layers": (1, MAX_LAYERS),
                "num_attention_heads": (1, MAX_HEADS),
                "attention_downsample_rate": (1, MAX_WIDTH),
                "num_multimask_outputs": (1, MAX_MULTIMASK_OUTPUTS),
                "iou_head_depth": (2, MAX_LAYERS),  # input and output layers at least
            },
            floats={"layer_norm_eps": EPS_BOUNDS},
            activations=("hidden_act",),
        )
        internal = self.hidden_size // self.attention_downsample_rate
        if internal == 0 or self.hidden_size % self.num_attention_heads or internal % self.num_attention_heads:
            raise ValueError(
                f"mask_decoder_config.num_attention_heads ({self.num_attention_heads}) must divide hidden_size "
                f"({self.hidden_size}) and hidden_size // attention_downsample_rate ({internal})."
            )
        if not isinstance(self.hq_token, bool):
            raise ValueError(f"hq_token must be a bool, got {self.hq_token!r}.")
        if self.hq_token and (not isinstance(self.vit_dim, int) or isinstance(self.vit_dim, bool) or self.vit_dim < 1):
            raise ValueError(
                f"vit_dim must be a positive int (the ViT width) when hq_token is set, got {self.vit_dim!r}."
            )
        if not self.hq_token and self.vit_dim is not None:
            raise ValueError(
                f"vit_dim ({self.vit_dim}) is only used by the SAM-HQ decoder: set hq_token=True or drop it."
            )
        super().__post_init__(**kwargs)


class SamTextConfig(PreTrainedConfig):
    r"""The text prompt: a CLIP text encoder (open_clip) whose L2-normalised embedding becomes one sparse prompt token
    through a learned projection plus a learned text-type embedding (the SAM paper, section 7.5).

    Args:
        clip_model_name: open_clip architecture name (`open_clip.list_models()`), e.g. `"ViT-B-16"`.
        clip_architecture: an open_clip model config (`embed_dim`, `text_cfg`, `vision_cfg`) instead of a named one,
            for small custom CLIPs such as the bundled model's.
        pretrained: open_clip pretrained tag (e.g. `"laion2b_s34b_b88k"`) or a local checkpoint file whose text tower
            is loaded when a model is built from this config; saved sam_hf checkpoints carry their own text tower.
        freeze_text_encoder: keep the CLIP text tower out of training (only the projection and type embedding learn).
    """

    model_type: ClassVar[str] = "sam_hf_text"
    base_config_key: ClassVar[str] = "text_config"

    clip_model_name: str = "ViT-B-16"
    clip_architecture: dict | None = None
    pretrained: str | None = None
    freeze_text_encoder: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        if self.clip_architecture is None and self.architecture is None:
            raise ValueError(
                f"clip_model_name {self.clip_model_name!r} is not an open_clip architecture; expected one of "
                "open_clip.list_models(), or pass clip_architecture."
            )
        architecture = self.architecture
        if not {"embed_dim", "text_cfg"} <= set(architecture):
            raise ValueError(f"clip_architecture needs 'embed_dim' and 'text_cfg', got keys {sorted(architecture)}.")
        super().__post_init__(**kwargs)

    @property
    def architecture(self) -> dict[str, Any]:
        """The open_clip model config: `clip_architecture`, or the registered one of `clip_model_name`."""
        if self.clip_architecture is not None:
            return self.clip_architecture
        import open_clip  # only for configs with a text encoder: importing it takes seconds

        return open_clip.get_model_config(self.clip_model_name)

    @property
    def embed_dim(self) -> int:
        """Width of the CLIP embedding (text and image)."""
        return self.architecture["embed_dim"]

    @property
    def context_length(self) -> int:
        """Tokens per text, start and end tokens included."""
        return self.architecture["text_cfg"].get("context_length", 77)


# Sizes of the official builders (`segment_anything.build_sam`); everything else is shared.
PRESETS: dict[str, dict[str, Any]] = {
    "vit_b": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "global_attn_indexes": [2, 5, 8, 11],
    },
    "vit_l": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "global_attn_indexes": [5, 11, 17, 23],
    },
    "vit_h": {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "global_attn_indexes": [7, 15, 23, 31],
    },
    # MobileSAM: TinyViT (5.7M parameters) distilled from vit_h, with SAM's own prompt encoder and decoder.
    "mobile-sam": {"backbone": "tiny_vit", "hidden_size": MOBILE_SAM_TINY_VIT["embed_dims"][-1], **MOBILE_SAM_TINY_VIT},
}


# SAM-HQ (`segment_anything_hq.sam_model_registry`, transformers' `syscv-community/sam-hq-vit-*`): the ViT size of
# that preset with the HQ decoder fusing its first global-attention block's output.
HQ_PRESETS: dict[str, str] = {"sam-hq-vit-b": "vit_b", "sam-hq-vit-l": "vit_l", "sam-hq-vit-h": "vit_h"}


class SamConfig(PreTrainedConfig):
    r"""Configuration of [`SamModel`].

    Args:
        vision_config: [`SamVisionConfig`] or its dict.
        prompt_encoder_config: [`SamPromptEncoderConfig`] or its dict.
        mask_decoder_config: [`SamMaskDecoderConfig`] or its dict.
        text_config: [`SamTextConfig`] or its dict, for text prompts; `None` (every official checkpoint) for none.
        initializer_range: std of the normal init of linear and embedding weights.

    Example:

    ```python
    >>> from sam_hf import SamConfig, SamModel
    >>> config = SamConfig.from_preset("vit_b")
    >>> model = SamModel(config)  # random weights
    ```
    """

    model_type: ClassVar[str] = "sam_hf"
    sub_configs_defaults: ClassVar[dict] = {
        "vision_config": SamVisionConfig,
        "prompt_encoder_config": SamPromptEncoderConfig,
        "mask_decoder_config": SamMaskDecoderConfig,
        "text_config": SubConfigSpec(SamTextConfig, optional=True),
    }

    vision_config: dict | SamVisionConfig | None = None
    prompt_encoder_config: dict | SamPromptEncoderConfig | None = None
    mask_decoder_config: dict | SamMaskDecoderConfig | None = None
    text_config: dict | SamTextConfig | None = None
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        check_config_values(self, floats={"initializer_range": (0.0, 1.0)})
        super().__post_init__(**kwargs)
        vision, prompt = self.vision_config, self.prompt_encoder_config
        if (vision.image_size, vision.patch_size) != (prompt.image_size, prompt.patch_size):
            raise ValueError(
                "prompt_encoder_config.image_size/patch_size must equal vision_config's, got "
                f"{prompt.image_size}/{prompt.patch_size} and {vision.image_size}/{vision.patch_size}."
            )
        if vision.output_channels != prompt.hidden_size or prompt.hidden_size != self.mask_decoder_config.hidden_size:
            raise ValueError(
                "vision_config.output_channels, prompt_encoder_config.hidden_size and mask_decoder_config.hidden_size "
                f"must be equal, got {vision.output_channels}, {prompt.hidden_size}, "
                f"{self.mask_decoder_config.hidden_size}."
            )
        if 2 * vision.num_pos_feats != prompt.hidden_size:
            raise ValueError(
                f"vision_config.num_pos_feats ({vision.num_pos_feats}) must be half of "
                f"prompt_encoder_config.hidden_size ({prompt.hidden_size}): the positional encoding is added to the "
                "prompt tokens."
            )
        decoder = self.mask_decoder_config
        layers = vision.num_hidden_layers
        if decoder.hq_token and vision.backbone == "tiny_vit":
            _check_tiny_vit_hq(vision, decoder)
        elif decoder.hq_token and not (vision.global_attn_indexes and vision.global_attn_indexes[0] < layers):
            raise ValueError(
                "mask_decoder_config.hq_token needs a ViT with global attention: its first global block's "
                f"output is the early feature SAM-HQ fuses; vision_config.global_attn_indexes "
                f"{vision.global_attn_indexes} selects no block of {layers}."
            )
        elif decoder.hq_token and decoder.vit_dim != vision.hidden_size:
            raise ValueError(
                f"mask_decoder_config.vit_dim ({decoder.vit_dim}) must equal vision_config.hidden_size "
                f"({vision.hidden_size}): it is the width of the ViT feature SAM-HQ fuses."
            )

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> SamConfig:
        """Config of an official model size: `"vit_b"`, `"vit_l"` or `"vit_h"`, or SAM-HQ's `"sam-hq-vit-b"`,
        `"sam-hq-vit-l"`, `"sam-hq-vit-h"`."""
        if name in HQ_PRESETS:
            vision = PRESETS[HQ_PRESETS[name]]
            decoder = {"hq_token": True, "vit_dim": vision["hidden_size"]}
            return cls(vision_config=dict(vision), mask_decoder_config=decoder, **kwargs)
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS) + sorted(HQ_PRESETS)}.")
        return cls(vision_config=dict(PRESETS[name]), **kwargs)

    @classmethod
    def get_config_dict(cls, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """transformers' `get_config_dict`, reading transformers' SAM configs (`model_type: "sam"`) as sam_hf ones;
        configs of other model types are refused."""
        config_dict, kwargs = super().get_config_dict(*args, **kwargs)
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type in (TRANSFORMERS_MODEL_TYPE, TRANSFORMERS_HQ_MODEL_TYPE):
            config_dict = _from_transformers_layout(config_dict)
        elif model_type != cls.model_type:
            # Other families (sam_hq, sam2, ...) have other sub-config fields and weights: refuse them by name rather
            # than fail later on a field that sam_hf derives (e.g. `image_embedding_size`).
            raise ValueError(
                f"sam_hf cannot load a config of model_type {model_type!r}: supported are {cls.model_type!r} "
                f"(sam_hf's own checkpoints), {TRANSFORMERS_MODEL_TYPE!r} (transformers' SamModel, e.g. the "
                f"facebook/sam-vit-* and SlimSAM checkpoints) and {TRANSFORMERS_HQ_MODEL_TYPE!r} (transformers' "
                "SamHQModel, syscv-community/sam-hq-vit-*)."
            )
        return config_dict, kwargs


# `model_type` of transformers' SAM (`facebook/sam-vit-*`), whose configs sam_hf translates on load.
TRANSFORMERS_MODEL_TYPE = "sam"
# `model_type` of transformers' SamHQModel (`syscv-community/sam-hq-vit-*`): the same layout plus the HQ decoder.
TRANSFORMERS_HQ_MODEL_TYPE = "sam_hq"
# Keys of transformers' SAM configs that sam_hf derives instead of storing.
_DERIVED_KEYS = {"model_type", "image_embedding_size", "scale"}


def _from_transformers_layout(config_dict: dict[str, Any]) -> dict[str, Any]:
    """Reads a transformers SAM config (`model_type: "sam"`, the `facebook/sam-vit-*` files, or `"sam_hq"`, the
    `syscv-community/sam-hq-vit-*` files) as a sam_hf one."""
    translated = {key: value for key, value in config_dict.items() if key != "model_type"}
    for key in ("vision_config", "prompt_encoder_config", "mask_decoder_config"):
        translated[key] = {k: v for k, v in (config_dict.get(key) or {}).items() if k not in _DERIVED_KEYS}
    translated["mask_decoder_config"]["layer_norm_eps"] = OFFICIAL_DECODER_LAYER_NORM_EPS
    if config_dict.get("model_type") == TRANSFORMERS_HQ_MODEL_TYPE:  # SamHQMaskDecoderConfig's vit_dim defaults to 768
        translated["mask_decoder_config"]["hq_token"] = True
        translated["mask_decoder_config"].setdefault("vit_dim", 768)
    translated["model_type"] = SamConfig.model_type
    return translated
