"""The user's path, image to full-size masks, against the official `SamPredictor` on the same weights: on a generated
scene, and on the README's dog photo as an extra."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam_hf import SamProcessor
from tests.helpers import photo, scene_image

pytestmark = pytest.mark.heavy


@pytest.mark.parametrize("source", ["scene", "photo"])
def test_processor_and_model_give_the_official_predictor_masks(vit_b_pair, source):
    from segment_anything import SamPredictor

    # A landscape image the size of the photo (534x800): resized to 683x1024, then padded.
    image = scene_image(5, 534, 800) if source == "scene" else np.array(Image.open(photo("dog.jpg")).convert("RGB"))
    official, model = vit_b_pair
    height, width = image.shape[:2]
    point = [width * 0.5, height * 0.55]
    box = [width * 0.2, height * 0.25, width * 0.8, height * 0.9]

    predictor = SamPredictor(official)
    predictor.set_image(image)
    official_point = predictor.predict(np.array([point]), np.array([1]), multimask_output=True, return_logits=True)
    official_box = predictor.predict(box=np.array(box), multimask_output=False, return_logits=True)

    processor = SamProcessor()
    inputs = processor(images=Image.fromarray(image), input_points=[[[point]]])
    with torch.no_grad():
        embeddings = model.get_image_embeddings(inputs["pixel_values"])
        point_output = model(image_embeddings=embeddings, **{k: v for k, v in inputs.items() if k != "pixel_values"})
        box_inputs = processor(input_boxes=[[box]], original_sizes=inputs["original_sizes"])
        box_output = model(image_embeddings=embeddings, multimask_output=False, **box_inputs)
    torch.testing.assert_close(embeddings, predictor.features, atol=5e-5, rtol=0)

    for output, (masks, scores, low_res) in [(point_output, official_point), (box_output, official_box)]:
        torch.testing.assert_close(output.pred_masks[0, 0], torch.from_numpy(low_res), atol=1e-4, rtol=0)
        torch.testing.assert_close(output.iou_scores[0, 0], torch.from_numpy(scores), atol=1e-4, rtol=0)
        logits = processor.post_process_masks(
            output.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"], binarize=False
        )[0][0]
        assert logits.shape == (masks.shape[0], height, width)
        torch.testing.assert_close(logits, torch.from_numpy(masks), atol=1e-4, rtol=0)
        binary = processor.post_process_masks(
            output.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )
        # Pixels whose logit is within float noise of the threshold may flip; nothing else may.
        disagree = binary[0][0] != torch.from_numpy(masks > 0)
        assert (torch.from_numpy(np.abs(masks))[disagree] < 1e-4).all()
