"""`SamPredictor` and `load_sam` against the official `SamPredictor` on the same (small, random) weights."""

import numpy as np
import PIL.Image
import pytest
import torch
from segment_anything import SamPredictor as OfficialPredictor

from sam_hf import BUNDLED_MODEL_PATH, EmbeddingCache, SamPredictor, load_sam
from sam_hf.loading import open_image
from sam_hf.processing import SamProcessor

PROMPTS = [
    {"point_coords": np.array([[120.0, 90.0]]), "point_labels": np.array([1])},
    {"point_coords": np.array([[120.0, 90.0], [30.0, 200.0]]), "point_labels": np.array([1, 0])},
    {"box": np.array([20.0, 30.0, 250.0, 180.0])},
    {"point_coords": np.array([[60.0, 70.0]]), "point_labels": np.array([1]), "box": np.array([10, 10, 200, 150])},
]


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("multimask_output", [True, False])
def test_predict_matches_the_official_predictor(small_pair, prompt, multimask_output):
    official, model = small_pair
    image = np.random.default_rng(0).integers(0, 256, (240, 300, 3), dtype=np.uint8)
    reference = OfficialPredictor(official)
    reference.set_image(image)
    ref_logits, ref_scores, ref_low_res = reference.predict(
        **prompt, multimask_output=multimask_output, return_logits=True
    )
    predictor = SamPredictor(model, SamProcessor.for_config(model.config))
    predictor.set_image(image)
    ours = predictor.predict(**prompt, multimask_output=multimask_output, return_logits=True)
    np.testing.assert_allclose(ours.masks, ref_logits, atol=1e-4)
    np.testing.assert_allclose(ours.scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(ours.low_res_logits, ref_low_res, atol=1e-4)
    # The previous logits fed back as a mask prompt, as with the official predictor.
    ref_again = reference.predict(**prompt, mask_input=ref_low_res[:1], multimask_output=False, return_logits=True)
    again = predictor.predict(**prompt, mask_input=ours.low_res_logits[:1], multimask_output=False)
    assert again.masks.dtype == bool
    np.testing.assert_array_equal(again.masks, ref_again[0] > 0)


def test_predict_on_an_embedded_image_leaves_the_current_image_alone(small_pair):
    _, model = small_pair
    predictor = SamPredictor(model)
    first, second = (np.full((100, 120, 3), value, dtype=np.uint8) for value in (30, 220))
    predictor.set_image(first)
    other = predictor.embed(second)
    on_other = predictor.predict([[50, 50]], image=other)
    assert on_other.masks.shape == (3, 100, 120)
    assert not torch.equal(predictor.image.image_embeddings, other.image_embeddings)
    predictor.image = other  # the same as set_image(second)
    assert predictor.is_image_set and predictor.features is other.image_embeddings
    np.testing.assert_array_equal(predictor.predict([[50, 50]]).masks, on_other.masks)
    predictor.image = None
    assert not predictor.is_image_set and predictor.image is None
    with pytest.raises(TypeError, match="image must be an EmbeddedImage"):
        predictor.image = second


def test_predict_rejects_missing_image_and_prompts(small_pair):
    predictor = SamPredictor(small_pair[1])
    with pytest.raises(ValueError, match="set_image"):
        predictor.predict([[1, 1]])
    predictor.set_image(np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="point_coords, box"):
        predictor.predict()
    with pytest.raises(ValueError, match="point_labels needs point_coords"):
        predictor.predict(point_labels=[1], box=[0, 0, 5, 5])
    with pytest.raises(ValueError, match="mask_input"):
        predictor.predict([[1, 1]], mask_input=torch.zeros(64, 64))
    with pytest.raises(ValueError, match=r"point_coords has too few nesting levels: expected \(N, 2\)"):
        predictor.predict([1, 1, 1])  # errors name predict's arguments, not the processor's
    with pytest.raises(ValueError, match="box must be x1, y1, x2, y2 with x2 >= x1"):
        predictor.predict(box=[5, 5, 0, 0])
    with pytest.raises(TypeError, match="image must be an EmbeddedImage"):
        predictor.predict([[1, 1]], image=np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="SamModel"):
        SamPredictor(torch.nn.Linear(1, 1))


def test_load_sam_defaults_to_the_bundled_model():
    model, processor = load_sam(dtype="float32")
    assert model.name_or_path == BUNDLED_MODEL_PATH and not model.training
    assert processor.image_processor.size["longest_edge"] == model.config.vision_config.image_size
    with pytest.raises(ValueError, match="dtype"):
        load_sam(dtype="float8")
    with pytest.raises(ValueError, match="device"):
        load_sam(device="nowhere")


def test_open_image_names_the_bad_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        open_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.png"):
        open_image(tmp_path / "notes.png")


def test_embedding_cache_is_an_lru_keyed_by_content(small_pair):
    predictor = SamPredictor(small_pair[1])
    calls = []
    embed = predictor.embed
    predictor.embed = lambda image: calls.append(1) or embed(image)
    cache = EmbeddingCache(max_size=2)
    images = [np.full((20, 30, 3), value, np.uint8) for value in (10, 20, 30)]
    first = cache.embed(predictor, images[0])
    again = cache.embed(predictor, images[0].copy())  # equal pixels, another array: the same entry
    assert not first.cached and again.cached and again.image is first.image and len(calls) == 1
    assert cache.embed(predictor, PIL.Image.fromarray(images[0])).cached  # a PIL image of the same pixels too
    cache.embed(predictor, images[1])
    cache.embed(predictor, images[0])  # most recently used: images[1] is the oldest now
    cache.embed(predictor, images[2])
    assert len(cache) == 2 and first.key in cache and cache.key(images[1]) not in cache and len(calls) == 3
    torch.testing.assert_close(first.image.image_embeddings, embed(images[0]).image_embeddings)
    with pytest.raises(ValueError, match="max_size must be a positive integer"):
        EmbeddingCache(0)
