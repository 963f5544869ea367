"""sam_hf gives the official segment-anything numbers for the same weights (REFERENCE.md section 4).

Every case runs on a small official-architecture model (fast) and on the full vit_b at 1024x1024 (heavy), both with
random weights perturbed by 0.02 * randn, converted by the conversion code.
"""

from __future__ import annotations

import pytest
import torch

from sam_hf.prompts import PAD_LABEL
from tests.helpers import make_prompts, run_sam_hf

EMBEDDING_ATOL = 5e-5
LOGITS_ATOL = 1e-4
PAIRS = ["small_pair", pytest.param("vit_b_pair", marks=pytest.mark.heavy)]
_embeddings: dict[str, torch.Tensor] = {}


@pytest.fixture(params=PAIRS)
def pair(request):
    official, model = request.getfixturevalue(request.param)
    return request.param, official, model


def official_embedding(name: str, official) -> torch.Tensor:
    """The official image embedding of one seeded random image, computed once per model pair."""
    if name not in _embeddings:
        size = official.image_encoder.img_size
        pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            _embeddings[name] = official.image_encoder(pixels)
    return _embeddings[name]


def run_official(official, embedding, prompts, multimask_output):
    points = None if prompts["coords"] is None else (prompts["coords"], prompts["labels"])
    with torch.no_grad():
        sparse, dense = official.prompt_encoder(points=points, boxes=prompts["boxes"], masks=prompts["masks"])
        return official.mask_decoder(
            image_embeddings=embedding,
            image_pe=official.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )


def test_image_embeddings_match(pair):
    name, official, model = pair
    size = official.image_encoder.img_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model.get_image_embeddings(pixels)
    torch.testing.assert_close(ours, official_embedding(name, official), atol=EMBEDDING_ATOL, rtol=0)


@pytest.mark.parametrize("multimask_output", [True, False])
@pytest.mark.parametrize(
    "case",
    ["point", "points", "box", "points_box", "points_mask", "mask_only", "batch16_points", "batch16_box_mask"],
)
def test_masks_and_iou_match(pair, case, multimask_output):
    name, official, model = pair
    embedding = official_embedding(name, official)
    prompts = make_prompts(case, official.image_encoder.img_size, 4 * embedding.shape[-1])
    expected_masks, expected_iou = run_official(official, embedding, prompts, multimask_output)
    masks, iou = run_sam_hf(model, embedding, prompts, multimask_output)
    assert masks.shape == expected_masks.shape
    torch.testing.assert_close(masks, expected_masks, atol=LOGITS_ATOL, rtol=0)
    torch.testing.assert_close(iou, expected_iou, atol=LOGITS_ATOL, rtol=0)


def test_padded_prompt_gives_its_unpadded_masks(small_pair):
    """A prompt padded with PAD_LABEL in a ragged batch gets exactly the masks it gets alone."""
    official, model = small_pair
    embedding = official_embedding("small_pair", official)
    size = official.image_encoder.img_size
    short = make_prompts("point", size, 64)
    long = make_prompts("points", size, 64)
    points = torch.zeros(1, 2, 2, 2)
    labels = torch.full((1, 2, 2), PAD_LABEL)
    points[0, 0, :1], labels[0, 0, :1] = short["coords"][0], short["labels"][0]
    points[0, 1], labels[0, 1] = long["coords"][0], long["labels"][0]
    with torch.no_grad():
        output = model(image_embeddings=embedding, input_points=points, input_labels=labels)
    for index, prompts in enumerate([short, long]):
        expected_masks, expected_iou = run_official(official, embedding, prompts, True)
        torch.testing.assert_close(output.pred_masks[0, index], expected_masks[0], atol=LOGITS_ATOL, rtol=0)
        torch.testing.assert_close(output.iou_scores[0, index], expected_iou[0], atol=LOGITS_ATOL, rtol=0)


def test_pixels_to_masks_end_to_end(small_pair):
    """`forward(pixel_values=...)` runs the encoder and decoder like the official model."""
    official, model = small_pair
    size = official.image_encoder.img_size
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))
    prompts = make_prompts("points_box", size, 64)
    with torch.no_grad():
        output = model(
            pixel_values=pixels,
            input_points=prompts["coords"][None].expand(2, -1, -1, -1),
            input_labels=prompts["labels"][None].expand(2, -1, -1),
            input_boxes=prompts["boxes"][None].expand(2, -1, -1),
        )
        for image in range(2):
            expected, expected_iou = run_official(
                official, official.image_encoder(pixels[image : image + 1]), prompts, True
            )
            torch.testing.assert_close(output.pred_masks[image], expected, atol=LOGITS_ATOL, rtol=0)
            torch.testing.assert_close(output.iou_scores[image], expected_iou, atol=LOGITS_ATOL, rtol=0)
    assert output.image_embeddings.shape == (2, 256, size // 16, size // 16)
