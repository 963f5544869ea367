"""`transformers.pipeline()` with sam_hf models, offline from directories written by `save_pretrained`: transformers'
own "mask-generation" pipeline (same numbers as on transformers' SamModel), the official generator as
`pipeline_class=SamMaskGenerationPipeline`, and "promptable-mask-generation"."""

from __future__ import annotations

import logging

import numpy as np
import PIL.Image
import pytest
import torch
import transformers
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil
from transformers.pipelines import MaskGenerationPipeline, check_task

from sam_hf import (
    SamImageProcessor,
    SamMaskGenerationPipeline,
    SamModel,
    SamProcessor,
    SamPromptableMaskGenerationPipeline,
)
from sam_hf.everything import SamAutomaticMaskGenerator, decode_segmentation, uncompressed_rle
from tests.helpers import perturb_, scene_image

IMAGE = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
LOW = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small_pair) -> tuple[str, SamProcessor]:
    """The small sam_hf model and its 256-pixel processor, saved to a directory."""
    path = tmp_path_factory.mktemp("sam_hf_small")
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": 256}, pad_size=256))
    small_pair[1].save_pretrained(path)
    processor.save_pretrained(path)
    return str(path), processor


def test_mask_generation_from_directory(saved, small_pair):
    path, processor = saved
    pipe = transformers.pipeline("mask-generation", model=path, device="cpu", pipeline_class=SamMaskGenerationPipeline)
    assert isinstance(pipe, SamMaskGenerationPipeline)
    assert pipe.image_processor.to_dict() == processor.image_processor.to_dict()
    out = pipe(IMAGE, output_bboxes_mask=True, output_rle_mask=True, **LOW)

    expected = SamAutomaticMaskGenerator(small_pair[1], processor=processor, **LOW).generate(IMAGE)
    assert len(expected) >= 3 and len(out["masks"]) == len(expected)
    for record, want, mask, box, rle in zip(
        out["annotations"], expected, out["masks"], out["bounding_boxes"], out["rle_mask"], strict=True
    ):
        np.testing.assert_array_equal(mask, want["segmentation"])
        assert {k: v for k, v in record.items() if k != "segmentation"} == {
            k: v for k, v in want.items() if k != "segmentation"
        }
        x, y, w, h = want["bbox"]
        assert box.tolist() == [x, y, x + w, y + h]
        assert rle == uncompressed_rle(mask)
    torch.testing.assert_close(out["scores"], torch.tensor([r["predicted_iou"] for r in expected]))


def test_mask_generation_names_and_modes(saved, small_pair):
    pipe = transformers.pipeline(
        "mask-generation",
        model=small_pair[1],
        image_processor=saved[1].image_processor,
        pipeline_class=SamMaskGenerationPipeline,
    )
    assert isinstance(pipe, SamMaskGenerationPipeline)
    settings = {key: value for key, value in LOW.items() if key != "points_per_side"}
    official_names = pipe(IMAGE, points_per_side=2, output_mode="coco_rle", **settings)
    transformers_names = pipe(IMAGE, points_per_crop=2, crops_n_layers=0, crops_nms_thresh=0.7, **settings)
    assert len(official_names["masks"]) >= 2
    for a, b, record in zip(
        official_names["masks"], transformers_names["masks"], official_names["annotations"], strict=True
    ):
        assert isinstance(record["segmentation"]["counts"], str)
        np.testing.assert_array_equal(a, decode_segmentation(record["segmentation"]))
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="points_per_crop or points_per_side"):
        pipe(IMAGE, points_per_crop=2, points_per_side=2)
    with pytest.raises(TypeError, match="max_hole_area"):
        pipe(IMAGE, max_hole_area=10)
    with pytest.raises(ValueError, match="output_mode"):
        pipe(IMAGE, output_mode="png")


def test_transformers_tasks_and_logging_are_untouched():
    """`import sam_hf` registers through public APIs only: transformers' "mask-generation" entry is its own, and no
    transformers logger has been muted."""
    impl = check_task("mask-generation")[1]["impl"]  # the class, or its dotted name in transformers 5.x's table
    assert impl in (MaskGenerationPipeline, f"{MaskGenerationPipeline.__module__}.{MaskGenerationPipeline.__name__}")
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict if "transformers" in name}
    assert not {name: level for name, level in levels.items() if level >= logging.ERROR}


def test_transformers_mask_generation_pipeline_runs_sam_hf_with_its_numbers(tmp_path):
    """Code written for transformers' SAM, `pipeline("mask-generation", model=...)`, gives on a sam_hf checkpoint the
    masks it gives on transformers' SamModel with the same weights."""
    config = transformers.SamConfig(
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "global_attn_indexes": [1]},
    )
    torch.manual_seed(0)
    reference = perturb_(transformers.SamModel(config), seed=3)
    reference.save_pretrained(tmp_path / "transformers")
    model = SamModel.from_pretrained(tmp_path / "transformers").eval()
    model.save_pretrained(tmp_path / "sam_hf")
    SamProcessor.for_config(model.config).save_pretrained(tmp_path / "sam_hf")

    image = PIL.Image.fromarray(scene_image(5, 60, 80))
    settings = {"points_per_crop": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    want = transformers.pipeline("mask-generation", model=reference, image_processor=SamImageProcessorPil())(
        image, output_bboxes_mask=True, **settings
    )
    pipe = transformers.pipeline("mask-generation", model=str(tmp_path / "sam_hf"))
    assert type(pipe) is MaskGenerationPipeline
    assert isinstance(pipe.model, SamModel) and isinstance(pipe.image_processor, SamImageProcessor)
    got = pipe(image, output_bboxes_mask=True, **settings)

    assert len(got["masks"]) == len(want["masks"]) >= 1
    # The only numeric difference: the official decoder LayerNorm epsilon (1e-5) against transformers' 1e-6.
    torch.testing.assert_close(got["scores"], want["scores"], atol=1e-4, rtol=0)
    torch.testing.assert_close(got["bounding_boxes"], want["bounding_boxes"], atol=1, rtol=0)
    for a, b in zip(got["masks"], want["masks"], strict=True):
        assert (a & b).sum() / (a | b).sum() > 0.99


def test_promptable_from_directory_matches_model(saved, small_pair):
    path, processor = saved
    pipe = transformers.pipeline("promptable-mask-generation", model=path, device="cpu")
    assert isinstance(pipe, SamPromptableMaskGenerationPipeline)
    model = small_pair[1]

    points, labels, boxes = [[[10, 20], [30, 25]], [[40, 8]]], [[1, 0], [1]], [[2, 3, 30, 35], [20, 1, 55, 39]]
    out = pipe(IMAGE, points=points, labels=labels, boxes=boxes, multimask_output=False)
    inputs = processor(images=IMAGE, input_points=[points], input_labels=[labels], input_boxes=[boxes])
    with torch.no_grad():
        expected = model(**inputs, multimask_output=False)
    masks = processor.post_process_masks(expected.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    assert out["masks"].shape == (2, 1, 40, 56) and out["masks"].dtype == torch.bool
    torch.testing.assert_close(out["masks"], masks[0])
    torch.testing.assert_close(out["scores"], expected.iou_scores[0])

    one_prompt = pipe(IMAGE, points=[[10, 20]], boxes=[2, 3, 30, 35])  # one prompt without the prompt level
    nested = pipe(IMAGE, points=[[[10, 20]]], labels=[[1]], boxes=[[2, 3, 30, 35]])
    assert one_prompt["masks"].shape == (1, 3, 40, 56)
    torch.testing.assert_close(one_prompt["masks"], nested["masks"])
    torch.testing.assert_close(one_prompt["scores"], nested["scores"])


def test_promptable_errors(small_pair):
    pipe = transformers.pipeline("promptable-mask-generation", model=small_pair[1])
    assert pipe.image_processor.pad_size == {"height": 256, "width": 256}  # built from the model's config
    with pytest.raises(ValueError, match="points and/or boxes"):
        pipe(IMAGE)
    with pytest.raises(ValueError, match="needs clip"):
        pipe(IMAGE, text="a dog")  # no text token in this model, and no CLIP to score regions
    with pytest.raises(TypeError, match="unexpected"):
        pipe(IMAGE, points=[[1, 2]], colour="red")
    with pytest.raises(ValueError, match="input_boxes"):
        pipe(IMAGE, boxes=[30, 3, 2, 35])
    with pytest.raises(TypeError, match="sam_hf SamModel"):
        SamPromptableMaskGenerationPipeline(model=torch.nn.Linear(2, 2))
