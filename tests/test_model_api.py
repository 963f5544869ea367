"""SamConfig / SamModel on the transformers API: presets, save/load, Auto classes, transformers checkpoints, and the
errors bad input gets at the public boundary."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel
from transformers import SamConfig as TransformersSamConfig
from transformers import SamModel as TransformersSamModel

from sam_hf import SamConfig, SamModel
from sam_hf.conversion import convert_state_dict
from tests.helpers import perturb_

# Official totals (REFERENCE.md section 1); sam_hf also stores the 2x128 positional matrix, a buffer officially.
OFFICIAL_BUILDERS = ["vit_b", "vit_l", "vit_h"]


@pytest.mark.parametrize("size", OFFICIAL_BUILDERS)
def test_presets_have_the_official_parameters(size):
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        official = sam_model_registry[size](checkpoint=None)
        model = SamModel(SamConfig.from_preset(size))
    expected = {key: value.shape for key, value in convert_state_dict(official.state_dict()).items()}
    assert {key: value.shape for key, value in model.state_dict().items()} == expected
    official_count = sum(p.numel() for p in official.parameters())
    assert sum(p.numel() for p in model.parameters()) == official_count + 2 * 128


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="vit_b"):
        SamConfig.from_preset("vit_x")


def test_save_load_round_trip_and_auto_classes(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    assert isinstance(AutoConfig.from_pretrained(tmp_path), SamConfig)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is SamModel
    expected_state = tiny_model.state_dict()
    assert all(torch.equal(value, expected_state[key]) for key, value in loaded.state_dict().items())
    embedding = torch.randn(1, 64, 8, 8)
    points = torch.tensor([[[[30.0, 40.0], [90.0, 20.0]]]])
    with torch.no_grad():
        expected = tiny_model(image_embeddings=embedding, input_points=points)
        actual = loaded(image_embeddings=embedding, input_points=points)
    torch.testing.assert_close(actual.pred_masks, expected.pred_masks)


def test_transformers_checkpoint_loads_and_matches(tmp_path):
    """A checkpoint saved by transformers' own SamModel loads with no missing or unexpected key and gives
    transformers' outputs, up to its decoder LayerNorm eps (1e-6 there, the official 1e-5 here)."""
    config = TransformersSamConfig(
        vision_config={
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "global_attn_indexes": [1],
            "image_size": 256,
            "window_size": 7,
        },
        prompt_encoder_config={"image_size": 256},
    )
    torch.manual_seed(0)
    reference = perturb_(TransformersSamModel(config), seed=4)
    reference.save_pretrained(tmp_path)
    model, info = SamModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.mask_decoder_config.layer_norm_eps == 1e-5

    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(6))
    points = torch.tensor([[[[40.0, 200.0], [120.0, 30.0]], [[10.0, 10.0], [250.0, 240.0]]]])
    labels = torch.tensor([[[1, 0], [1, 1]]])
    boxes = torch.tensor([[[20.0, 30.0, 200.0, 220.0], [0.0, 0.0, 128.0, 100.0]]])
    with torch.no_grad():
        expected = reference(pixel_values=pixels, input_points=points, input_labels=labels, input_boxes=boxes)
        actual = model(pixel_values=pixels, input_points=points, input_labels=labels, input_boxes=boxes)
    torch.testing.assert_close(actual.iou_scores, expected.iou_scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.pred_masks, expected.pred_masks, atol=1e-4, rtol=0)


def test_sam2_configs_are_refused_by_name(tmp_path):
    """transformers' SAM 2 configs (another model, memory attention): a ValueError naming the type and the supported
    ones, from the config and the model, instead of an AttributeError on a field sam_hf derives. (SAM-HQ's `sam_hq`
    configs load: tests/test_sam_hq.py.)"""
    from transformers import Sam2Config

    Sam2Config().save_pretrained(tmp_path)
    for load in (SamConfig.from_pretrained, SamModel.from_pretrained):
        with pytest.raises(ValueError, match=r"model_type 'sam2'.*'sam_hf'.*'sam'"):
            load(tmp_path)


def test_hub_layout_config_still_loads(tmp_path):
    """`model_type: "sam"` (the facebook/sam-vit-* files) keeps loading."""
    TransformersSamConfig().save_pretrained(tmp_path)
    config = SamConfig.from_pretrained(tmp_path)
    assert config.vision_config.hidden_size == 768 and config.prompt_encoder_config.image_embedding_size == 64


EMBEDDING = torch.zeros(1, 64, 8, 8)
POINTS = torch.tensor([[[[10.0, 20.0]]]])


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"input_points": torch.tensor([[[10.0, 20.0]]])}, ValueError, "input_points"),
        ({"input_points": [[[[10.0, 20.0]]]]}, TypeError, "input_points"),
        ({"input_points": torch.tensor([[[[10, 20]]]])}, TypeError, "input_points"),
        ({"input_points": torch.tensor([[[[float("nan"), 20.0]]]])}, ValueError, "input_points"),
        ({"input_points": torch.tensor([[[[float("inf"), 20.0]]]])}, ValueError, "input_points"),
        ({"input_points": POINTS, "input_labels": torch.tensor([[[2]]])}, ValueError, "input_labels"),
        ({"input_points": POINTS, "input_labels": torch.tensor([[[1, 1]]])}, ValueError, "input_labels"),
        ({"input_points": POINTS.expand(2, -1, -1, -1)}, ValueError, "input_points"),
        ({"input_boxes": torch.tensor([[[50.0, 10.0, 40.0, 60.0]]])}, ValueError, "input_boxes"),
        ({"input_boxes": torch.tensor([[[10.0, 60.0, 40.0, 50.0]]])}, ValueError, "input_boxes"),
        ({"input_boxes": torch.tensor([[[10.0, float("nan"), 40.0, 50.0]]])}, ValueError, "input_boxes"),
        ({"input_boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]])}, ValueError, "input_boxes"),
        ({"input_points": POINTS, "input_boxes": torch.zeros(1, 2, 4)}, ValueError, "input_boxes"),
        ({"input_masks": torch.zeros(1, 1, 64, 64)}, ValueError, "input_masks"),
        ({"input_masks": torch.zeros(1, 1, 32, 32, dtype=torch.long)}, TypeError, "input_masks"),
        ({"input_points": POINTS, "input_masks": torch.zeros(1, 3, 32, 32)}, ValueError, "input_masks"),
    ],
)
def test_bad_prompts_name_the_argument(tiny_model, kwargs, error, argument):
    with pytest.raises(error, match=argument):
        tiny_model(image_embeddings=EMBEDDING, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"pixel_values": torch.zeros(1, 3, 64, 64)}, ValueError, "pixel_values"),
        ({"pixel_values": torch.zeros(1, 3, 128, 128, dtype=torch.uint8)}, TypeError, "pixel_values"),
        ({"pixel_values": torch.full((1, 3, 128, 128), float("nan"))}, ValueError, "pixel_values"),
        ({"image_embeddings": torch.zeros(1, 32, 8, 8)}, ValueError, "image_embeddings"),
        ({"image_embeddings": EMBEDDING, "pixel_values": torch.zeros(1, 3, 128, 128)}, ValueError, "exactly one"),
        ({}, ValueError, "exactly one"),
    ],
)
def test_bad_images_name_the_argument(tiny_model, kwargs, error, argument):
    with pytest.raises(error, match=argument):
        tiny_model(**kwargs)


def test_prompts_without_labels_are_foreground(tiny_model):
    with torch.no_grad():
        implicit = tiny_model(image_embeddings=EMBEDDING, input_points=POINTS)
        explicit = tiny_model(image_embeddings=EMBEDDING, input_points=POINTS, input_labels=torch.ones(1, 1, 1))
        background = tiny_model(image_embeddings=EMBEDDING, input_points=POINTS, input_labels=torch.zeros(1, 1, 1))
    torch.testing.assert_close(implicit.pred_masks, explicit.pred_masks, atol=0, rtol=0)
    assert not torch.allclose(implicit.pred_masks, background.pred_masks)
