"""Shared fixtures: official segment-anything models on random weights, and the same weights in sam_hf."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from conversion.convert_official_to_sam_hf import build_model, convert_state_dict
from sam_hf import SamConfig, SamModel

SHARED_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"

# A small official-architecture SAM: 256 input, 16x16 tokens (padded to 21x21 by the 7x7 windows), 2 blocks.
SMALL = {"image_size": 256, "embed_dim": 64, "depth": 2, "heads": 2, "window": 7, "global": [1], "prompt_dim": 256}


def perturb_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Adds 0.02 * randn to every parameter: zero/one-initialised tables would hide key-mapping mistakes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def small_official_sam() -> Sam:
    embedding_size = SMALL["image_size"] // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=SMALL["image_size"],
            embed_dim=SMALL["embed_dim"],
            depth=SMALL["depth"],
            num_heads=SMALL["heads"],
            window_size=SMALL["window"],
            global_attn_indexes=SMALL["global"],
            out_chans=SMALL["prompt_dim"],
            norm_layer=lambda dim: torch.nn.LayerNorm(dim, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=SMALL["prompt_dim"],
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(SMALL["image_size"], SMALL["image_size"]),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=SMALL["prompt_dim"], mlp_dim=2048, num_heads=8),
            transformer_dim=SMALL["prompt_dim"],
        ),
    )


def small_sam_config() -> SamConfig:
    return SamConfig(
        vision_config={
            "image_size": SMALL["image_size"],
            "hidden_size": SMALL["embed_dim"],
            "num_hidden_layers": SMALL["depth"],
            "num_attention_heads": SMALL["heads"],
            "window_size": SMALL["window"],
            "global_attn_indexes": SMALL["global"],
        },
        prompt_encoder_config={"image_size": SMALL["image_size"]},
    )


@pytest.fixture(scope="session")
def small_pair() -> tuple[Sam, SamModel]:
    torch.manual_seed(0)
    official = perturb_(small_official_sam(), seed=1)
    model = SamModel(small_sam_config())
    model.load_state_dict(convert_state_dict(official.state_dict()), strict=True)
    return official, model.eval()


@pytest.fixture(scope="session")
def vit_b_pair() -> tuple[Sam, SamModel]:
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    official = perturb_(sam_model_registry["vit_b"](checkpoint=None), seed=2)
    return official, build_model(official.state_dict())


def tiny_config() -> SamConfig:
    """A fast model for API, input-checking and training tests: 128 input, 2 blocks of width 32, 64-wide decoder."""
    return SamConfig(
        vision_config={
            "image_size": 128,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "window_size": 4,
            "global_attn_indexes": [1],
            "output_channels": 64,
            "num_pos_feats": 32,
        },
        prompt_encoder_config={"image_size": 128, "hidden_size": 64},
        mask_decoder_config={"hidden_size": 64, "mlp_dim": 128, "num_attention_heads": 2, "iou_head_hidden_dim": 64},
    )


@pytest.fixture
def tiny_model() -> SamModel:
    """`tiny_config()` with random weights, perturbed so that no table is all zeros."""
    torch.manual_seed(0)
    return perturb_(SamModel(tiny_config()), seed=7)
