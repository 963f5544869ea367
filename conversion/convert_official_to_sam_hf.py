"""Convert an official Segment Anything checkpoint (`sam_vit_{b,l,h}_*.pth`) into a sam_hf model directory
(`config.json`, `model.safetensors`, processor config) that `SamModel.from_pretrained` loads.

    python conversion/convert_official_to_sam_hf.py sam_vit_b_01ec64.pth ./sam-vit-base [--model-size vit_b]
        [--push-to-hub USER/REPO]

The checkpoint is read with `torch.load(..., weights_only=True)`: tensors only, no arbitrary pickled objects.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

from sam_hf import SamConfig, SamModel
from sam_hf.configuration_sam import PRESETS
from sam_hf.processing import SamProcessor

# Official name -> transformers/sam_hf name, applied in order to every key.
KEY_RULES: list[tuple[str, str]] = [
    (r"iou_prediction_head\.layers\.0\.", "iou_prediction_head.proj_in."),
    (r"iou_prediction_head\.layers\.1\.", "iou_prediction_head.layers.0."),
    (r"iou_prediction_head\.layers\.2\.", "iou_prediction_head.proj_out."),
    (r"output_hypernetworks_mlps\.(\d+)\.layers\.0\.", r"output_hypernetworks_mlps.\1.proj_in."),
    (r"output_hypernetworks_mlps\.(\d+)\.layers\.1\.", r"output_hypernetworks_mlps.\1.layers.0."),
    (r"output_hypernetworks_mlps\.(\d+)\.layers\.2\.", r"output_hypernetworks_mlps.\1.proj_out."),
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
WIDTH_TO_PRESET = {preset["hidden_size"]: name for name, preset in PRESETS.items()}


def convert_key(key: str) -> str:
    for pattern, replacement in KEY_RULES:
        key = re.sub(pattern, replacement, key)
    return key


def detect_model_size(state_dict: Mapping[str, torch.Tensor]) -> str:
    """`"vit_b"`, `"vit_l"` or `"vit_h"` from the width of the patch embedding."""
    weight = state_dict.get("image_encoder.patch_embed.proj.weight")
    if weight is None:
        raise ValueError("Not an official SAM checkpoint: no image_encoder.patch_embed.proj.weight.")
    width = weight.shape[0]
    if width not in WIDTH_TO_PRESET:
        raise ValueError(f"Unknown image encoder width {width}; expected one of {sorted(WIDTH_TO_PRESET)}.")
    return WIDTH_TO_PRESET[width]


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official SAM state dict -> sam_hf (= transformers) state dict."""
    converted = {convert_key(key): value for key, value in state_dict.items() if key not in DROPPED_KEYS}
    gaussian = "prompt_encoder.shared_embedding.positional_embedding"
    if gaussian in converted:  # tied: the decoder's image-grid encoding uses the same matrix
        converted["shared_image_embedding.positional_embedding"] = converted[gaussian]
    return converted


def load_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads tensors only: safetensors, or a `.pth` through `torch.load(weights_only=True)`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    if path.suffix == ".safetensors":
        return load_file(path)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path} holds objects other than tensors; refusing to unpickle them ({error}).") from None
    return state_dict.get("model", state_dict) if isinstance(state_dict, dict) else state_dict


def build_model(state_dict: Mapping[str, torch.Tensor], model_size: str | None = None) -> SamModel:
    """A `SamModel` holding the official weights; raises `ValueError` listing any missing or unexpected key."""
    detected = detect_model_size(state_dict)
    if model_size is not None and model_size != detected:
        raise ValueError(f"--model-size {model_size} does not match the checkpoint, which is {detected}.")
    model = SamModel(SamConfig.from_preset(detected))
    converted = convert_state_dict(state_dict)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or unexpected:
        raise ValueError(f"Checkpoint does not match {detected}: missing keys {missing}, unexpected keys {unexpected}.")
    model.load_state_dict(converted, strict=True)
    return model.eval()


def convert_checkpoint(
    checkpoint: str | Path, output_dir: str | Path, model_size: str | None = None, push_to_hub: str | None = None
) -> SamModel:
    model = build_model(load_official_checkpoint(checkpoint), model_size)
    processor = SamProcessor()
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    if push_to_hub:
        model.push_to_hub(push_to_hub)
        processor.push_to_hub(push_to_hub)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="official .pth (or .safetensors) checkpoint")
    parser.add_argument("output_dir", help="directory to write the sam_hf model to")
    parser.add_argument("--model-size", choices=sorted(PRESETS), help="default: detected from the weights")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload to this Hub repository")
    args = parser.parse_args(argv)
    try:
        convert_checkpoint(args.checkpoint, args.output_dir, args.model_size, args.push_to_hub)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"Wrote {args.output_dir}")


if __name__ == "__main__":
    main()
