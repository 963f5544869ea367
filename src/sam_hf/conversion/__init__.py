"""Checkpoints in other formats -> sam_hf, and sam_hf -> ONNX.

- `official`: the official Segment Anything `.pth` checkpoints, converted in memory (`load_official`) or to a sam_hf
  directory (`convert_checkpoint`, `sam-hf convert`).
- `onnx_export`: two ONNX graphs with the official ONNX interface (`export_onnx`, `sam-hf export-onnx`); imported on
  use, as it needs the `onnx` extra.

The model layer never imports this package: it sits above the model, beside the base modules.
"""

from .official import (
    OFFICIAL_SUFFIXES,
    build_model,
    config_from_official,
    convert_checkpoint,
    convert_key,
    convert_state_dict,
    detect_model_size,
    load_official,
    load_official_checkpoint,
)

__all__ = [
    "OFFICIAL_SUFFIXES",
    "build_model",
    "config_from_official",
    "convert_checkpoint",
    "convert_key",
    "convert_state_dict",
    "detect_model_size",
    "load_official",
    "load_official_checkpoint",
]
