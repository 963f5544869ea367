"""The model this project trains and ships: it loads offline from the package and segments held-out scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sam_hf import BUNDLED_CLIP_PATH, BUNDLED_MODEL_PATH, SamModel, SamProcessor
from sam_hf.data import HELD_OUT_SEED, generate_scene
from sam_hf.training import evaluate

# Quality floors a few points under the model card's 200-scene measurement (point best of 3 0.931, top-scored 0.908,
# box 0.923, learned text token 0.824 over objects of scenes with >= 3 objects), on a smaller sample to keep the test
# fast (measured on these 40 scenes: 0.932 / 0.923 / 0.931 / 0.824).
FLOORS = {"point_best_of_3": 0.89, "point_top_scored": 0.87, "box": 0.89, "text_learned": 0.77}


@pytest.fixture(scope="module")
def bundled():
    return SamModel.from_pretrained(BUNDLED_MODEL_PATH).eval(), SamProcessor.from_pretrained(BUNDLED_MODEL_PATH)


def test_bundled_model_is_small_safetensors_with_a_text_token(bundled):
    model, processor = bundled
    sam_parameters = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("text_encoder."))
    assert sam_parameters < 3_000_000
    assert processor.image_processor.size["longest_edge"] == model.config.vision_config.image_size == 128
    assert model.config.text_config is not None
    assert processor.text_context_length == model.config.text_config.context_length == 8
    bundled_files = [*Path(BUNDLED_MODEL_PATH).iterdir(), *Path(BUNDLED_CLIP_PATH).iterdir()]
    assert sum(file.stat().st_size for file in bundled_files) < 30 * 2**20
    assert not [file for file in bundled_files if file.suffix in (".bin", ".pt", ".pth", ".pkl")]


@pytest.fixture(scope="module")
def held_out_scores(bundled):
    return evaluate(*bundled, (generate_scene(HELD_OUT_SEED + index) for index in range(40)))


@pytest.mark.parametrize(("prompt", "floor"), sorted(FLOORS.items()))
def test_bundled_model_segments_held_out_scenes(held_out_scores, prompt, floor):
    assert held_out_scores[prompt] >= floor, held_out_scores
