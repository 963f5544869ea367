"""Official Segment Anything checkpoints (`sam_vit_{b,l,h}_*.pth` as downloaded) -> sam_hf: key mapping, the model
configuration read off the tensor shapes, in-memory loading, and conversion to a sam_hf directory.

Pickled checkpoints are read with `torch.load(..., weights_only=True)`: tensors only, nothing is executed.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..configuration_sam import HQ_PRESETS, MOBILE_SAM_TINY_VIT, PRESETS, TINY_VIT_STEM_STRIDE, SamConfig
from ..modeling import SamModel
from ..processing import SamProcessor

# File endings of official (pickled) checkpoints; `load_sam` converts these in memory.
OFFICIAL_SUFFIXES = (".pth", ".pt")

# Official name -> transformers/sam_hf name, applied in order to every key.
KEY_RULES: list[tuple[str, str]] = [
    (r"iou_prediction_head\.layers\.0\.", "iou_prediction_head.proj_in."),
    (r"iou_prediction_head\.layers\.1\.", "iou_prediction_head.layers.0."),
    (r"iou_prediction_head\.layers\.2\.", "iou_prediction_head.proj_out."),
    (r"output_hypernetworks_mlps\.(\d+)\.layers\.0\.", r"output_hypernetworks_mlps.\1.proj_in."),
    (r"output_hypernetworks_mlps\.(\d+)\.layers\.1\.", r"output_hypernetworks_mlps.\1.layers.0."),
    (r"output_hypernetworks_mlps\.(\d+)\.layers\.2\.", r"output_hypernetworks_mlps.\1.proj_out."),
    # SAM-HQ's decoder (`sam_hq_vit_*.pth`) -> transformers' SamHQModel names.
    (r"mask_decoder\.hf_token\.", "mask_decoder.hq_token."),
    (r"mask_decoder\.hf_mlp\.layers\.0\.", "mask_decoder.hq_mask_mlp.proj_in."),
    (r"mask_decoder\.hf_mlp\.layers\.1\.", "mask_decoder.hq_mask_mlp.layers.0."),
    (r"mask_decoder\.hf_mlp\.layers\.2\.", "mask_decoder.hq_mask_mlp.proj_out."),
    (r"mask_decoder\.compress_vit_feat\.0\.", "mask_decoder.compress_vit_conv1."),
    (r"mask_decoder\.compress_vit_feat\.1\.", "mask_decoder.compress_vit_norm."),
    (r"mask_decoder\.compress_vit_feat\.3\.", "mask_decoder.compress_vit_conv2."),
    (r"mask_decoder\.embedding_encoder\.0\.", "mask_decoder.encoder_conv1."),
    (r"mask_decoder\.embedding_encoder\.1\.", "mask_decoder.encoder_norm."),
    (r"mask_decoder\.embedding_encoder\.3\.", "mask_decoder.encoder_conv2."),
    (r"mask_decoder\.embedding_maskfeature\.0\.", "mask_decoder.mask_conv1."),
    (r"mask_decoder\.embedding_maskfeature\.1\.", "mask_decoder.mask_norm."),
    (r"mask_decoder\.embedding_maskfeature\.3\.", "mask_decoder.mask_conv2."),
    (r"mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"mask_downscaling\.0\.", "mask_embed.conv1."),
    (r"mask_downscaling\.1\.", "mask_embed.layer_norm1."),
    (r"mask_downscaling\.3\.", "mask_embed.conv2."),
    (r"mask_downscaling\.4\.", "mask_embed.layer_norm2."),
    (r"mask_downscaling\.6\.", "mask_embed.conv3."),
    (r"point_embeddings\.", "point_embed."),
    (r"pe_layer\.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    (r"^image_encoder\.", "vision_encoder."),
    (r"neck\.0\.", "neck.conv1."),
    (r"neck\.1\.", "neck.layer_norm1."),
    (r"neck\.2\.", "neck.conv2."),
    (r"neck\.3\.", "neck.layer_norm2."),
    (r"patch_embed\.proj\.", "patch_embed.projection."),
    (r"\.norm", ".layer_norm"),
    (r"\.blocks\.", ".layers."),
]
DROPPED_KEYS = {"pixel_mean", "pixel_std"}  # the processor normalises
# A key every official SAM checkpoint has, and no transformers-layout one.
OFFICIAL_MARKER_KEY = "image_encoder.patch_embed.proj.weight"
# SAM-HQ's checkpoints (`sam_hq_vit_*.pth`) have its HQ token.
HQ_MARKER_KEY = "mask_decoder.hf_token.weight"
# MobileSAM (`mobile_sam.pt`): TinyViT's first stem convolution, instead of the ViT's patch embedding.
TINY_VIT_MARKER_KEY = "image_encoder.patch_embed.seq.0.c.weight"
# TinyViT's image-encoder names, applied before `KEY_RULES` (whose `.norm`, `.blocks.` and neck rules then apply).
TINY_VIT_KEY_RULES: list[tuple[str, str]] = [
    (r"^image_encoder\.layers\.", "image_encoder.stages."),
    (r"patch_embed\.seq\.0\.", "patch_embed.conv1."),
    (r"patch_embed\.seq\.2\.", "patch_embed.conv2."),
    (r"\.c\.", ".conv."),
    (r"\.bn\.", ".batch_norm."),
]
# TinyViT's ImageNet classifier, left over from its pretraining: MobileSAM never runs it.
TINY_VIT_DROPPED_KEYS = {
    f"image_encoder.{name}.{kind}" for name in ("norm_head", "head") for kind in ("weight", "bias")
}


def convert_key(key: str, tiny_vit: bool = False) -> str:
    """One official parameter name -> its sam_hf (= transformers) name; `tiny_vit` for MobileSAM's checkpoint."""
    rules = (TINY_VIT_KEY_RULES if tiny_vit and key.startswith("image_encoder.") else []) + KEY_RULES
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official SAM (or MobileSAM) state dict -> sam_hf (= transformers) state dict."""
    tiny_vit = TINY_VIT_MARKER_KEY in state_dict
    dropped = DROPPED_KEYS | (TINY_VIT_DROPPED_KEYS if tiny_vit else set())
    converted = {convert_key(key, tiny_vit): value for key, value in state_dict.items() if key not in dropped}
    gaussian = "prompt_encoder.shared_embedding.positional_embedding"
    if gaussian in converted:  # tied: the decoder's image-grid encoding uses the same matrix
        converted["shared_image_embedding.positional_embedding"] = converted[gaussian]
    return converted


def _count(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of numbered submodules `prefix.N.` in the state dict."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indexes = {int(match.group(1)) for key in state_dict if (match := pattern.match(key))}
    return max(indexes) + 1 if indexes else 0


def _vit_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The `SamVisionConfig` fields of an official SAM ViT, read off its shapes."""
    hidden, channels, patch, _ = state_dict[OFFICIAL_MARKER_KEY].shape
    depth = _count(state_dict, "image_encoder.blocks")
    # Relative position tables are (2 * side - 1, head_dim): side is the window, or the whole grid if global.
    tables = [state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape for i in range(depth)]
    pos_embed = state_dict.get("image_encoder.pos_embed")
    grid = pos_embed.shape[1] if pos_embed is not None else 1024 // patch
    global_blocks = [i for i, (rows, _) in enumerate(tables) if rows == 2 * grid - 1]
    window = next(((rows + 1) // 2 for rows, _ in tables if rows != 2 * grid - 1), grid)
    return {
        "hidden_size": hidden,
        "num_channels": channels,
        "patch_size": patch,
        "image_size": grid * patch,
        "num_hidden_layers": depth,
        "num_attention_heads": hidden // tables[0][1],
        "window_size": window,
        "global_attn_indexes": global_blocks,
        "mlp_dim": state_dict["image_encoder.blocks.0.mlp.lin1.weight"].shape[0],
        "output_channels": state_dict["image_encoder.neck.0.weight"].shape[0],
        "num_pos_feats": state_dict["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape[1],
        "use_abs_pos": pos_embed is not None,
    }


def _tiny_vit_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The `SamVisionConfig` fields of MobileSAM's TinyViT, read off its shapes. The merge strides and the input size
    are not in them: MobileSAM's are assumed (the official builder's), and its values for the first (convolutional)
    stage's unused heads and window."""
    stages = "image_encoder.layers"
    num_stages = _count(state_dict, stages)
    mbconv = state_dict[f"{stages}.0.blocks.0.conv1.c.weight"].shape  # (hidden, width, 1, 1)
    attention_stages = range(1, num_stages)
    biases = [state_dict[f"{stages}.{i}.blocks.0.attn.attention_biases"].shape for i in attention_stages]
    embed_dims = [mbconv[1]] + [
        state_dict[f"{stages}.{i}.blocks.0.attn.proj.weight"].shape[0] for i in attention_stages
    ]
    merge_strides = MOBILE_SAM_TINY_VIT["merge_strides"]
    patch = TINY_VIT_STEM_STRIDE * math.prod(merge_strides)
    return {
        "backbone": "tiny_vit",
        "hidden_size": embed_dims[-1],
        "num_channels": state_dict[TINY_VIT_MARKER_KEY].shape[1],
        "patch_size": patch,
        "image_size": 1024,  # the official builder's input size
        "embed_dims": embed_dims,
        "depths": [_count(state_dict, f"{stages}.{i}.blocks") for i in range(num_stages)],
        "num_heads": MOBILE_SAM_TINY_VIT["num_heads"][:1] + [heads for heads, _ in biases],
        "window_sizes": MOBILE_SAM_TINY_VIT["window_sizes"][:1] + [math.isqrt(offsets) for _, offsets in biases],
        "merge_strides": merge_strides,
        "mlp_ratio": state_dict[f"{stages}.1.blocks.0.mlp.fc1.weight"].shape[0] / embed_dims[1],
        "mbconv_expand_ratio": mbconv[0] / mbconv[1],
        "local_conv_size": state_dict[f"{stages}.1.blocks.0.local_conv.c.weight"].shape[-1],
        "output_channels": state_dict["image_encoder.neck.0.weight"].shape[0],
        "num_pos_feats": state_dict["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].shape[1],
    }


def config_from_official(state_dict: Mapping[str, torch.Tensor]) -> SamConfig:
    """The `SamConfig` of an official state dict, read off its tensor shapes (vit_b/l/h give their presets; smaller
    or retrained official-architecture models work too). The decoder's head count is not in the shapes: the
    official 8 is assumed. MobileSAM's `mobile_sam.pt` (TinyViT) gives the `"mobile-sam"` preset. Raises
    `ValueError` when the state dict is not an official SAM one."""
    tiny_vit = TINY_VIT_MARKER_KEY in state_dict
    if OFFICIAL_MARKER_KEY not in state_dict and not tiny_vit:
        raise ValueError(
            f"Not an official SAM checkpoint: no {OFFICIAL_MARKER_KEY} (SAM's ViT) or {TINY_VIT_MARKER_KEY} "
            "(MobileSAM's TinyViT)."
        )
    try:
        vision = _tiny_vit_config(state_dict) if tiny_vit else _vit_config(state_dict)
        grid, patch = vision["image_size"] // vision["patch_size"], vision["patch_size"]
        token_to_image = "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight"
        decoder_hidden = state_dict["mask_decoder.iou_token.weight"].shape[1]
        prompt = {
            "hidden_size": decoder_hidden,
            "image_size": grid * patch,
            "patch_size": patch,
            "mask_input_channels": state_dict["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            "num_point_embeddings": _count(state_dict, "prompt_encoder.point_embeddings"),
        }
        decoder = {
            "hidden_size": decoder_hidden,
            "mlp_dim": state_dict["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            "num_hidden_layers": _count(state_dict, "mask_decoder.transformer.layers"),
            "attention_downsample_rate": decoder_hidden // state_dict[token_to_image].shape[0],
            "num_multimask_outputs": state_dict["mask_decoder.mask_tokens.weight"].shape[0] - 1,
            "iou_head_depth": _count(state_dict, "mask_decoder.iou_prediction_head.layers"),
            "iou_head_hidden_dim": state_dict["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
        }
        if HQ_MARKER_KEY in state_dict:  # SAM-HQ: ConvTranspose2d weights are (in, out, k, k), in = the ViT width
            decoder |= {"hq_token": True, "vit_dim": state_dict["mask_decoder.compress_vit_feat.0.weight"].shape[0]}
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"Not a complete official SAM checkpoint: cannot read {error} off its shapes.") from None
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def detect_model_size(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The preset (`"vit_b"`, `"vit_l"`, `"vit_h"`, `"mobile-sam"`) the official state dict has, else `None`."""
    config = config_from_official(state_dict).to_dict()
    names = (*PRESETS, *HQ_PRESETS)
    return next((name for name in names if SamConfig.from_preset(name).to_dict() == config), None)


def load_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads tensors only: safetensors, or a `.pth` through `torch.load(weights_only=True)`; a checkpoint saved as
    `{"model": state_dict}` is unwrapped. Raises `ValueError` for a pickle holding anything but tensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: not repeated here
        raise ValueError(
            f"{path} holds objects other than tensors; refusing to unpickle them (only tensors are read, with torch's "
            "weights-only unpickler)."
        ) from None
    except (SafetensorError, RuntimeError, EOFError) as error:  # cut short or corrupt: zip reader, pickle stream
        raise ValueError(f"cannot read {path}: truncated or corrupt ({error}).") from None
    state_dict = state_dict.get("model", state_dict) if isinstance(state_dict, dict) else state_dict
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} holds a {type(state_dict).__name__}, not a state dict of tensors.")
    return state_dict


def build_model(state_dict: Mapping[str, torch.Tensor], model_size: str | None = None) -> SamModel:
    """A `SamModel` (eval mode) holding the official weights, its configuration read off the shapes.

    Args:
        state_dict: official parameter names -> tensors.
        model_size: `"vit_b"`, `"vit_l"` or `"vit_h"` to insist on that size; `None` to accept any.

    Raises:
        ValueError: the size differs from `model_size`, or a key is missing or unexpected (all are named).
    """
    config = config_from_official(state_dict)
    if model_size is not None:
        if model_size not in PRESETS and model_size not in HQ_PRESETS:
            raise ValueError(f"model_size must be one of {sorted(PRESETS) + sorted(HQ_PRESETS)}, got {model_size!r}.")
        detected = detect_model_size(state_dict)
        if model_size != detected:
            which = detected or f"not an official size (hidden_size {config.vision_config.hidden_size})"
            raise ValueError(f"--model-size {model_size} does not match the checkpoint, which is {which}.")
    converted = convert_state_dict(state_dict)
    with torch.device("meta"):  # no random init: every parameter is assigned below
        model = SamModel(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unexpected:
        raise ValueError(
            f"Checkpoint does not match its shapes' model: missing keys {missing}, unexpected keys {unexpected}."
        )
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval()


def load_official(path: str | os.PathLike, model_size: str | None = None) -> SamModel:
    """An official checkpoint file (`sam_vit_b_01ec64.pth`, ...) as a `SamModel`, converted in memory."""
    return build_model(load_official_checkpoint(path), model_size)


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_size: str | None = None,
    push_to_hub: str | None = None,
) -> SamModel:
    """Writes the official `checkpoint` as a sam_hf directory (`config.json`, `model.safetensors`, processor config)
    that `SamModel.from_pretrained` / `load_sam` read; also uploads it when `push_to_hub` names a Hub repository."""
    model = load_official(checkpoint, model_size)
    processor = SamProcessor.for_config(model.config)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    if push_to_hub:
        model.push_to_hub(push_to_hub)
        processor.push_to_hub(push_to_hub)
    return model
