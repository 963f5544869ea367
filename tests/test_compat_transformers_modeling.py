"""transformers' own SAM model tests (`tests/models/sam/test_modeling_sam.py`: `SamModelTester` and the checks of
`SamModelTest`), run against sam_hf's `SamModel` with random weights, and compared number for number with
transformers' `SamModel` holding the same weights.

transformers' decoder LayerNorms use eps 1e-6 where the official model (and sam_hf's converted checkpoints) use 1e-5:
the sam_hf model here is given transformers' value so that the outputs can be compared closely.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import SamConfig as TransformersSamConfig
from transformers import SamModel as TransformersSamModel

from sam_hf import SamConfig, SamModel
from tests.helpers import perturb_

# SamModelTester's sizes: 24x24 input, patch 2 -> 12x12 tokens, padded to one 14x14 window; 2 windowed layers.
BATCH_SIZE = 2
NUM_HIDDEN_LAYERS = 2
NUM_ATTENTION_HEADS = 4
HIDDEN_SIZE = 36
OUTPUT_CHANNELS = 32
TESTER_CONFIG = {
    "vision_config": {
        "image_size": 24,
        "patch_size": 2,
        "hidden_size": HIDDEN_SIZE,
        "num_hidden_layers": NUM_HIDDEN_LAYERS,
        "num_attention_heads": NUM_ATTENTION_HEADS,
        "output_channels": OUTPUT_CHANNELS,
        "window_size": 14,
        "global_attn_indexes": [2, 5, 8, 11],
        "num_pos_feats": 16,
    },
    "prompt_encoder_config": {"image_size": 24, "patch_size": 2, "mask_input_channels": 4, "hidden_size": 32},
    "mask_decoder_config": {
        "hidden_size": 32,
        "mlp_dim": 64,
        "num_attention_heads": 4,
        "iou_head_hidden_dim": 32,
        "layer_norm_eps": 1e-6,
    },
}
ATOL = 1e-4  # fp32, different operation order (measured differences are ~1e-6)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A transformers `SamModel` with the tester's config and perturbed random weights, saved by transformers."""
    torch.manual_seed(0)
    reference = perturb_(TransformersSamModel(TransformersSamConfig(**TESTER_CONFIG)), seed=11)
    path = tmp_path_factory.mktemp("transformers_sam")
    reference.save_pretrained(path)
    return str(path)


def load_pair(checkpoint: str, attn_implementation: str = "eager") -> tuple[TransformersSamModel, SamModel]:
    reference = TransformersSamModel.from_pretrained(checkpoint, attn_implementation=attn_implementation).eval()
    config = SamConfig.from_pretrained(checkpoint)
    config.mask_decoder_config.layer_norm_eps = reference.config.mask_decoder_config.layer_norm_eps
    model = SamModel.from_pretrained(checkpoint, config=config, attn_implementation=attn_implementation).eval()
    return reference, model


@pytest.fixture(scope="module")
def pair(checkpoint) -> tuple[TransformersSamModel, SamModel]:
    return load_pair(checkpoint)


@pytest.fixture(scope="module")
def pixel_values() -> torch.Tensor:
    return torch.randn(BATCH_SIZE, 3, 24, 24, generator=torch.Generator().manual_seed(3))


def assert_all_close(actual: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...]) -> None:
    assert len(actual) == len(expected)
    for actual_tensor, expected_tensor in zip(actual, expected, strict=True):
        torch.testing.assert_close(actual_tensor, expected_tensor, atol=ATOL, rtol=0)


def test_model(pair, pixel_values):
    """`create_and_check_model`: images alone (no prompt) give one prompt of 3 masks per image."""
    reference, model = pair
    with torch.no_grad():
        expected, result = reference(pixel_values), model(pixel_values)
    assert result.iou_scores.shape == (BATCH_SIZE, 1, 3)
    assert result.pred_masks.shape[:3] == (BATCH_SIZE, 1, 3)
    torch.testing.assert_close(result.iou_scores, expected.iou_scores, atol=ATOL, rtol=0)
    torch.testing.assert_close(result.pred_masks, expected.pred_masks, atol=ATOL, rtol=0)


def test_get_image_features(pair, pixel_values):
    reference, model = pair
    with torch.no_grad():
        result = model.get_image_embeddings(pixel_values)
        expected = reference.get_image_embeddings(pixel_values)
    assert result[0].shape == (OUTPUT_CHANNELS, 12, 12)
    torch.testing.assert_close(result, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("return_dict", [True, False])
def test_image_hidden_states(checkpoint, pixel_values, return_dict):
    # Fresh models: calling transformers' `vision_encoder` directly installs its output hooks a second time, after
    # which that model's `SamModel` records every vision attention twice.
    reference, model = load_pair(checkpoint)
    with torch.no_grad():
        result = model.vision_encoder(pixel_values, output_hidden_states=True, return_dict=return_dict)
        expected = reference.vision_encoder(pixel_values, output_hidden_states=True, return_dict=return_dict)
    assert len(result[1]) == NUM_HIDDEN_LAYERS + 1
    assert result[1][0].shape == (BATCH_SIZE, 12, 12, HIDDEN_SIZE)
    assert_all_close(result[1], expected[1])
    torch.testing.assert_close(result[0], expected[0], atol=ATOL, rtol=0)


def test_attention_outputs(checkpoint, pair, pixel_values):
    """By argument and by `config.output_attentions`; shapes as transformers' test expects them, values as its
    eager model returns them."""
    reference, model = pair
    expected_vision_shape = (BATCH_SIZE * NUM_ATTENTION_HEADS, 196, 196)
    expected_decoder_shape = (BATCH_SIZE, 1, 144, 32)
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, output_attentions=True, output_hidden_states=False)
        expected = reference(pixel_values=pixel_values, output_attentions=True)
    assert len(outputs.vision_attentions) == NUM_HIDDEN_LAYERS
    assert len(outputs.mask_decoder_attentions) == 2
    assert outputs.vision_hidden_states is None
    assert_all_close(outputs.vision_attentions, expected.vision_attentions)
    assert_all_close(outputs.mask_decoder_attentions, expected.mask_decoder_attentions)

    _, model = load_pair(checkpoint)
    model.config.output_attentions = True
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values)
    assert len(outputs.vision_attentions) == NUM_HIDDEN_LAYERS
    assert len(outputs.mask_decoder_attentions) == 2
    assert tuple(outputs.vision_attentions[0].shape) == expected_vision_shape
    assert tuple(outputs.mask_decoder_attentions[0].shape) == expected_decoder_shape


def test_sdpa_model_returns_attentions_too(checkpoint, pair, pixel_values):
    """transformers' SDPA model returns no vision attentions; sam_hf's falls back to the eager code for them."""
    reference, _ = pair
    _, model = load_pair(checkpoint, "sdpa")
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, output_attentions=True)
        expected = reference(pixel_values=pixel_values, output_attentions=True)
    assert_all_close(outputs.vision_attentions, expected.vision_attentions)


def test_model_outputs_equivalence(pair, pixel_values):
    """`return_dict=False` gives the non-`None` fields in transformers' order."""
    reference, model = pair
    points = torch.tensor([[[[3.0, 5.0]]], [[[20.0, 11.0]]]])
    for kwargs in ({}, {"output_attentions": True, "output_hidden_states": True}):
        with torch.no_grad():
            as_dict = model(pixel_values=pixel_values, input_points=points, **kwargs)
            as_tuple = model(pixel_values=pixel_values, input_points=points, return_dict=False, **kwargs)
            expected = reference(pixel_values=pixel_values, input_points=points, return_dict=False, **kwargs)
        assert len(as_tuple) == len(as_dict.to_tuple()) == len(expected) + 1  # + image_embeddings, last
        for actual, wanted in zip(as_tuple, expected, strict=False):
            if isinstance(wanted, tuple):
                assert_all_close(actual, wanted)
            else:
                torch.testing.assert_close(actual, wanted, atol=ATOL, rtol=0)
        torch.testing.assert_close(as_tuple[-1], as_dict.image_embeddings, atol=0, rtol=0)


def test_prompts_match_transformers(pair, pixel_values):
    """Points with labels, points with boxes, and a mask prompt (one per image, transformers' layout)."""
    reference, model = pair
    points = torch.tensor([[[[3.0, 5.0], [17.0, 9.0]]], [[[20.0, 11.0], [2.0, 2.0]]]])
    labels = torch.tensor([[[1, 0]], [[1, 1]]])
    boxes = torch.tensor([[[1.0, 2.0, 15.0, 20.0]], [[4.0, 0.0, 23.0, 12.0]]])
    masks = torch.randn(BATCH_SIZE, 1, 48, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixel_values)
        for prompts in (
            {"input_points": points, "input_labels": labels},
            {"input_points": points, "input_labels": labels, "input_boxes": boxes},
            {"input_boxes": boxes, "input_masks": masks},
        ):
            for multimask in (True, False):
                result = model(image_embeddings=embeddings, multimask_output=multimask, **prompts)
                expected = reference(image_embeddings=embeddings, multimask_output=multimask, **prompts)
                torch.testing.assert_close(result.iou_scores, expected.iou_scores, atol=ATOL, rtol=0)
                torch.testing.assert_close(result.pred_masks, expected.pred_masks, atol=ATOL, rtol=0)


def test_get_prompt_embeddings(pair):
    reference, model = pair
    points = torch.tensor([[[[3.0, 5.0]]], [[[20.0, 11.0]]]])
    labels = torch.tensor([[[1]], [[0]]])
    boxes = torch.tensor([[[1.0, 2.0, 15.0, 20.0]], [[4.0, 0.0, 23.0, 12.0]]])
    with torch.no_grad():
        for prompts in ({"input_points": points, "input_labels": labels}, {"input_boxes": boxes}):
            sparse, dense = model.get_prompt_embeddings(**prompts)
            expected_sparse, expected_dense = reference.get_prompt_embeddings(**prompts)
            torch.testing.assert_close(sparse, expected_sparse, atol=ATOL, rtol=0)
            assert dense.shape == (BATCH_SIZE, 1, *expected_dense.shape[1:])
            torch.testing.assert_close(dense[:, 0], expected_dense, atol=0, rtol=0)


def test_model_get_set_embeddings(pair):
    _, model = pair
    assert isinstance(model.get_input_embeddings(), nn.Module)
    assert model.get_output_embeddings() is None


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_sdpa_can_dispatch_composite_models(checkpoint, pixel_values, monkeypatch, attn_implementation):
    """The requested implementation reaches the encoder and decoder configs and selects the code: transformers'
    test looks for classes named `*SdpaAttention`; this one counts the calls to SDPA, which eager must not make."""
    _, model = load_pair(checkpoint, attn_implementation)
    assert model.config._attn_implementation == attn_implementation
    assert model.vision_encoder.config._attn_implementation == attn_implementation
    assert model.mask_decoder.config._attn_implementation == attn_implementation
    calls, sdpa = [], F.scaled_dot_product_attention

    def counting_sdpa(*args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    with torch.no_grad():
        model(pixel_values=pixel_values)
    assert (len(calls) > 0) == (attn_implementation == "sdpa")


def test_eager_matches_sdpa_inference(checkpoint, pixel_values):
    _, eager = load_pair(checkpoint, "eager")
    _, sdpa = load_pair(checkpoint, "sdpa")
    points = torch.tensor([[[[3.0, 5.0]]], [[[20.0, 11.0]]]])
    with torch.no_grad():
        expected = eager(pixel_values=pixel_values, input_points=points)
        actual = sdpa(pixel_values=pixel_values, input_points=points)
    torch.testing.assert_close(actual.pred_masks, expected.pred_masks, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.iou_scores, expected.iou_scores, atol=1e-5, rtol=0)
