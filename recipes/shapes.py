"""The bundled model's recipe: its config, and batches of generated scenes in the form the trainer consumes."""

from __future__ import annotations

import torch

from sam_hf import SamConfig, SamProcessor
from sam_hf.data import generate_scene
from sam_hf.training import interactive_batch

IMAGE_SIZE = 128


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
    """`interactive_batch` of the scenes `seeds`: `pixel_values (B, 3, 128, 128)`, bool `(B, 4, 128, 128)`."""
    scenes = [generate_scene(seed, IMAGE_SIZE) for seed in seeds]
    return interactive_batch([(scene.image, scene.masks) for scene in scenes], processor)


class GeneratedScenes(torch.utils.data.Dataset):
    """Generated scenes `first_seed, first_seed + 1, ...`, endless: `data[i]` -> `(image, masks)`, the examples
    `sam_hf.training.train_text_token` reads."""

    def __init__(self, first_seed: int = 0) -> None:
        self.first_seed = first_seed

    def __getitem__(self, index: int):
        scene = generate_scene(self.first_seed + index, IMAGE_SIZE)
        return scene.image, scene.masks
