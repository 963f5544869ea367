"""Shared fixtures: official segment-anything models on random weights, and the same weights in sam_hf (plain helpers
are in helpers.py)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from segment_anything.modeling import Sam

from sam_hf import SamModel
from sam_hf.conversion import build_model, convert_state_dict
from tests.helpers import perturb_, small_official_sam, small_sam_config, tiny_config


@pytest.fixture(scope="session")
def small_pair() -> tuple[Sam, SamModel]:
    """`small_official_sam()` with perturbed random weights, and the same weights converted into sam_hf."""
    torch.manual_seed(0)
    official = perturb_(small_official_sam(), seed=1)
    model = SamModel(small_sam_config())
    model.load_state_dict(convert_state_dict(official.state_dict()), strict=True)
    return official, model.eval()


@pytest.fixture(scope="session")
def vit_b_pair() -> tuple[Sam, SamModel]:
    """The official vit_b with perturbed random weights, and the same weights converted into sam_hf."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    official = perturb_(sam_model_registry["vit_b"](checkpoint=None), seed=2)
    return official, build_model(official.state_dict())


@pytest.fixture
def tiny_model() -> SamModel:
    """`tiny_config()` with random weights, perturbed so that no table is all zeros."""
    torch.manual_seed(0)
    return perturb_(SamModel(tiny_config()), seed=7)
