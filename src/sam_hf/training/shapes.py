"""The bundled model's recipe: its config, and batches of generated scenes in the form the trainer consumes."""

from __future__ import annotations

import numpy as np
import torch

from ..configuration_sam import SamConfig
from ..data import generate_scene
from ..processing import SamProcessor

IMAGE_SIZE = 128
PROMPTS_PER_IMAGE = 4  # every object of a scene is prompted each step (the decoder is cheap next to the encoder)
HELD_OUT_SEED = 1_000_000_000  # evaluation scenes start here; training seeds stay far below


def bundled_config() -> SamConfig:
    """A 1.8M-parameter SAM: 128x128 input, 8x8 patches (16x16 tokens), 4 ViT blocks of width 128 (global attention
    in blocks 1 and 3), 128-wide prompt encoder and decoder, 64x64 low-resolution masks."""
    return SamConfig(
        vision_config={
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "hidden_size": 128,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "window_size": 8,
            "global_attn_indexes": [1, 3],
            "output_channels": 128,
            "num_pos_feats": 64,
        },
        prompt_encoder_config={"image_size": IMAGE_SIZE, "patch_size": 8, "hidden_size": 128},
        mask_decoder_config={"hidden_size": 128, "mlp_dim": 512, "num_attention_heads": 8, "iou_head_hidden_dim": 128},
    )


def bundled_processor() -> SamProcessor:
    return SamProcessor.for_config(bundled_config())


def scene_batch(seeds: list[int], processor: SamProcessor) -> tuple[torch.Tensor, torch.Tensor]:
    """`pixel_values (B, 3, 128, 128)` and bool ground truth `(B, PROMPTS_PER_IMAGE, 128, 128)`: each scene's objects,
    cycled to fill the prompt slots."""
    scenes = [generate_scene(seed, IMAGE_SIZE) for seed in seeds]
    pixel_values = processor(images=[scene.image for scene in scenes])["pixel_values"]
    masks = [np.resize(np.arange(len(scene.objects)), PROMPTS_PER_IMAGE) for scene in scenes]
    gt = np.stack([scene.masks[order] for scene, order in zip(scenes, masks, strict=True)])
    return pixel_values, torch.from_numpy(gt)
