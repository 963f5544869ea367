"""The documented request limits (README "Limits"): points per prompt and prompts per request, refused where prompts
enter with a `ValueError` that names the argument, the limit and how to raise it; the decoder's memory stays linear in
the points of a prompt; `post_process_masks` refuses output sizes beyond the image pixel limit."""

from __future__ import annotations

import pytest
import torch

from sam_hf import SamPredictor, SamProcessor, prompts
from sam_hf.processing import image_inputs
from sam_hf.prompts import MAX_POINTS_PER_PROMPT, MAX_PROMPTS_PER_REQUEST
from tests.helpers import LargestTensor


@pytest.fixture
def processor(tiny_model):
    return SamProcessor.for_config(tiny_model.config)


def points(batch: int, prompts_per_image: int, num_points: int) -> list:
    return [[[[float(i % 100), 5.0] for i in range(num_points)]] * prompts_per_image] * batch


def test_points_per_prompt_at_the_limit_pass_one_more_is_refused(processor, tiny_model):
    sizes = [[100, 120]]
    inputs = processor(input_points=points(1, 1, MAX_POINTS_PER_PROMPT), original_sizes=sizes)
    assert inputs["input_points"].shape == (1, 1, MAX_POINTS_PER_PROMPT, 2)
    with pytest.raises(ValueError, match=r"input_points has 1025 points per prompt.*MAX_POINTS_PER_PROMPT=1024.*raise"):
        processor(input_points=points(1, 1, MAX_POINTS_PER_PROMPT + 1), original_sizes=sizes)
    # The model refuses it too (tensors built without the processor), before decoding.
    embeddings = torch.zeros(1, 64, 8, 8)
    with pytest.raises(ValueError, match="input_points has 1025 points per prompt"):
        tiny_model(image_embeddings=embeddings, input_points=torch.zeros(1, 1, MAX_POINTS_PER_PROMPT + 1, 2))


def test_boxes_per_request_at_the_limit_pass_one_more_is_refused(processor):
    box = [0.0, 0.0, 10.0, 10.0]
    inputs = processor(input_boxes=[[box] * MAX_PROMPTS_PER_REQUEST], original_sizes=[[100, 120]])
    assert inputs["input_boxes"].shape == (1, MAX_PROMPTS_PER_REQUEST, 4)
    with pytest.raises(ValueError, match=r"input_boxes has 1025 prompts per request.*MAX_PROMPTS_PER_REQUEST=1024"):
        processor(input_boxes=[[box] * (MAX_PROMPTS_PER_REQUEST + 1)], original_sizes=[[100, 120]])


def test_prompts_per_request_are_counted_over_the_batch(processor, monkeypatch):
    monkeypatch.setattr(prompts, "MAX_PROMPTS_PER_REQUEST", 4)
    sizes = [[100, 120]] * 2
    assert processor(input_points=points(2, 2, 1), original_sizes=sizes)["input_points"].shape[:2] == (2, 2)
    with pytest.raises(ValueError, match=r"input_points has 6 prompts per request.*MAX_PROMPTS_PER_REQUEST=4"):
        processor(input_points=points(2, 3, 1), original_sizes=sizes)
    boxes = [[[0.0, 0.0, 10.0, 10.0]] * 3] * 2
    with pytest.raises(ValueError, match=r"input_boxes has 6 prompts per request.*sam_hf.prompts.MAX_PROMPTS_PER"):
        processor(input_boxes=boxes, original_sizes=sizes)


def test_limits_are_raised_by_assigning_them(processor, monkeypatch):
    monkeypatch.setattr(prompts, "MAX_POINTS_PER_PROMPT", 2000)
    inputs = processor(input_points=points(1, 1, 1500), original_sizes=[[100, 120]])
    assert inputs["input_points"].shape == (1, 1, 1500, 2)


def test_predictor_counts_the_boxes_of_predict_torch(tiny_model, monkeypatch):
    predictor = SamPredictor(tiny_model)
    predictor.set_image(torch.zeros(60, 80, 3, dtype=torch.uint8).numpy())
    monkeypatch.setattr(prompts, "MAX_PROMPTS_PER_REQUEST", 3)
    boxes = torch.tensor([[0.0, 0.0, 50.0, 40.0]] * 3)
    assert predictor.predict_torch(None, None, boxes=boxes)[0].shape[0] == 3
    with pytest.raises(ValueError, match=r"boxes has 4 prompts per request.*MAX_PROMPTS_PER_REQUEST=3"):
        predictor.predict_torch(None, None, boxes=torch.cat([boxes, boxes[:1]]))


def test_the_model_decodes_large_prompt_batches_for_everything_mode(tiny_model, monkeypatch):
    """`SamModel.forward` is not held to the per-request limit: everything mode sizes its own batches."""
    monkeypatch.setattr(prompts, "MAX_PROMPTS_PER_REQUEST", 2)
    outputs = tiny_model(image_embeddings=torch.zeros(1, 64, 8, 8), input_points=torch.rand(1, 5, 1, 2) * 128)
    assert outputs.iou_scores.shape == (1, 5, 3)


def test_decoder_memory_is_linear_in_the_points_of_a_prompt(tiny_model):
    """The points' self-attention costs time quadratic in their number (exact SAM math), but no tensor of
    points x points is ever made: SDPA computes it in blocks."""
    num_points = 4000
    many_points = torch.rand(1, 1, num_points, 2) * 128
    recorder = LargestTensor()
    with torch.inference_mode(), recorder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(prompts, "MAX_POINTS_PER_PROMPT", num_points)
        outputs = tiny_model(image_embeddings=torch.randn(1, 64, 8, 8), input_points=many_points)
    assert outputs.iou_scores.shape == (1, 1, 3)
    assert recorder.numel < num_points * num_points  # tokens x width and tokens x image tokens only


def test_post_process_masks_refuses_sizes_beyond_the_image_pixel_limit(processor, monkeypatch):
    """A 10^6 x 10^6 original size asked for a 12 TB tensor (a RuntimeError from torch); now a ValueError naming it."""
    masks = torch.zeros(1, 1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"original_sizes \[\[1000000, 1000000\]\].*MAX_IMAGE_PIXELS=178956970"):
        processor.post_process_masks(masks, [[10**6, 10**6]], [[128, 128]])
    side = int(image_inputs.MAX_IMAGE_PIXELS**0.5)
    with pytest.raises(ValueError, match=r"raise sam_hf\.processing\.image_inputs\.MAX_IMAGE_PIXELS"):
        processor.post_process_masks(masks, [[side + 1, side + 1]], [[128, 128]])
    monkeypatch.setattr(image_inputs, "MAX_IMAGE_PIXELS", 100 * 120)
    assert processor.post_process_masks(masks, [[100, 120]], [[107, 128]])[0].shape == (1, 3, 100, 120)
    with pytest.raises(ValueError, match="original_sizes"):
        processor.post_process_masks(masks, [[100, 121]], [[106, 128]])
