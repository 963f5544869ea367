"""Opt-in inference accelerations of a `SamModel`; the default eager fp32 model needs none of them.

- `compile_for_inference(model)`: `torch.compile` of the image encoder and the mask decoder, in place. Same numbers up
  to float rounding; the first call of each compiles (about a minute for vit_b on a CPU), later calls are faster.
- `quantize_int8(model)`: dynamic int8 quantisation of the image encoder's linear layers (qkv, attention output and
  MLP, ~70 % of its multiply-adds), for CPU inference: int8 weights per output channel, activations quantised per
  call. Masks change slightly (`tests/test_acceleration.py` holds mask IoU against fp32 above `INT8_MIN_MASK_IOU`).

Measured costs and gains: README "Performance" and benchmarks/README.md.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from .modeling import SamModel

INT8_MIN_MASK_IOU = 0.97  # the accuracy floor of the int8 path: mask IoU against the fp32 model


def compile_for_inference(model: SamModel, *, decoder: bool = True, **compile_kwargs: Any) -> SamModel:
    """Compiles `model.vision_encoder` (and `model.mask_decoder` if `decoder`) with `torch.compile` in place and puts
    the model in eval mode; returns `model`. State dict keys do not change, so saving and loading work as before.

    `compile_kwargs` go to `torch.compile` (e.g. `mode="max-autotune"`). The decoder sees a different prompt count
    per call; after the second count it is compiled with a dynamic prompt axis, so it does not recompile each time.
    """
    model.eval()
    model.vision_encoder.compile(**compile_kwargs)
    if decoder:
        model.mask_decoder.compile(**compile_kwargs)
    return model


def quantize_int8(model: SamModel) -> SamModel:
    """Replaces every `nn.Linear` of the image encoder (chosen by type, so any backbone's: the ViT's and TinyViT's
    attention and MLP layers) by a dynamically quantised int8 one (CPU only), in place, and puts the model in eval mode;
    returns `model`.

    Only the encoder is quantised: it holds almost all of the compute of one image, and the decoder's attention uses
    its weights directly (its factored attention), which quantised modules do not expose. Quantised models cannot
    be trained or saved with `save_pretrained`; quantise after loading. It uses `torch.ao.quantization`, which
    torch has deprecated in favour of torchao (not a dependency here); its deprecation warnings are silenced.
    """
    if model.device.type != "cpu":
        raise ValueError(f"int8 dynamic quantisation runs on the CPU; the model is on {model.device}.")
    model.eval()
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; it still works here
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*are deprecated")
        torch.ao.quantization.quantize_dynamic(
            model.vision_encoder,
            {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            dtype=torch.qint8,
            inplace=True,
        )
    return model
