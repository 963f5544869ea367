"""The model this project trains and ships: it loads offline from the package and segments held-out scenes."""

from __future__ import annotations

import pytest

from sam_hf import BUNDLED_MODEL_PATH, SamModel, SamProcessor
from sam_hf.training.evaluate_shapes import evaluate

# Quality floors a few points under the model card's 200-scene measurement (point best of 3 0.811, top-scored 0.759,
# box 0.815), on a smaller sample to keep the test fast. The project's targets (0.85 / 0.90) are not reached yet.
FLOORS = {"point_best_of_3": 0.76, "point_top_scored": 0.70, "box": 0.76}


@pytest.fixture(scope="module")
def bundled():
    return SamModel.from_pretrained(BUNDLED_MODEL_PATH).eval(), SamProcessor.from_pretrained(BUNDLED_MODEL_PATH)


def test_bundled_model_is_small_safetensors(bundled):
    model, processor = bundled
    assert sum(p.numel() for p in model.parameters()) < 3_000_000
    assert processor.image_processor.longest_edge == model.config.vision_config.image_size == 128


@pytest.fixture(scope="module")
def held_out_scores(bundled):
    return evaluate(*bundled, num_scenes=40)


@pytest.mark.parametrize(("prompt", "floor"), sorted(FLOORS.items()))
def test_bundled_model_segments_held_out_scenes(held_out_scores, prompt, floor):
    assert held_out_scores[prompt] >= floor, held_out_scores
