"""Text prompts: tokenizer, the text token in the model, save/load, the zero-shot selection, and the entry point."""

import json
import warnings

import numpy as np
import open_clip
import pytest
import safetensors.torch
import torch

from sam_hf import Prediction, SamConfig, SamModel, SamPredictor, SamProcessor, TextSegmentation
from sam_hf.clip_scoring import ClipScorer, region_view
from sam_hf.data import ShapesDataset, generate_scene
from sam_hf.geometry import mask_iou
from sam_hf.loading import load_sam
from sam_hf.processing.tokenization import tokenize
from sam_hf.text_to_mask import rank_regions, segment_prompts, segment_text
from sam_hf.training import train_text_token
from tests.helpers import TINY_CLIP, perturb_, tiny_clip_scorer, tiny_config, tiny_text_config


@pytest.fixture(scope="module")
def text_model() -> SamModel:
    return perturb_(SamModel(tiny_text_config()), seed=3)


# --- tokenizer -------------------------------------------------------------------------------------------------------


def test_tokenizer_works_offline_with_start_end_and_padding():
    ids = tokenize(["red circle", "ünïcödé 日本"], context_length=12)
    assert ids.shape == (2, 12) and ids.dtype == torch.int64
    start, end = 49406, 49407
    assert ids[0, 0] == start and (ids[0] == end).sum() == 1 and ids[0, -1] == 0
    assert (ids[1] > 0).sum() > 2  # non-ASCII text is tokenized, not dropped


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_tokenizer_rejects_empty_text(text):
    with pytest.raises(ValueError, match="empty or whitespace"):
        tokenize([text])


def test_tokenizer_truncates_long_text_with_a_warning():
    with pytest.warns(UserWarning, match="truncated to the context length 12"):
        ids = tokenize(["one two three " * 10], context_length=12)
    assert ids.shape == (1, 12) and ids[0, -1] == 49407  # the end token survives truncation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize(["short"], context_length=12)


def test_processor_text_forms_and_errors():
    processor = SamProcessor.for_config(tiny_text_config())
    assert processor.text_context_length == 12
    assert processor(text="a")["input_text_ids"].shape == (1, 1, 12)
    assert processor(text=["a", "b"])["input_text_ids"].shape == (1, 2, 12)
    assert processor(text=[["a"], ["b"]])["input_text_ids"].shape == (2, 1, 12)
    image = np.zeros((30, 40, 3), np.uint8)
    both = processor(images=image, input_points=[[[[1, 2]], [[3, 4]]]], text=["a", "b"])
    assert both["input_text_ids"].shape == (1, 2, 12) and both["input_points"].shape == (1, 2, 1, 2)
    with pytest.raises(ValueError, match="one text per prompt"):
        processor(images=image, input_points=[[[[1, 2]]]], text=["a", "b"])
    with pytest.raises(ValueError, match="same, non-zero number of prompts"):
        processor(text=[["a"], ["b", "c"]])
    with pytest.raises(TypeError, match="text must be"):
        processor(text=3)
    with pytest.raises(ValueError, match="text must have one entry per image"):
        processor(images=[image, image], text=[["a"]])


# --- the model -------------------------------------------------------------------------------------------------------


def test_text_config_resolves_open_clip_architectures():
    named = SamConfig(text_config={"clip_model_name": "ViT-B-32"}).text_config
    assert (named.embed_dim, named.context_length) == (512, 77)
    with pytest.raises(ValueError, match="not an open_clip architecture"):
        SamConfig(text_config={"clip_model_name": "no-such-clip"})
    assert SamConfig().text_config is None


def test_text_prompt_shapes_alone_and_with_points(text_model):
    processor = SamProcessor.for_config(text_model.config)
    image = np.random.default_rng(0).integers(0, 256, (100, 128, 3), dtype=np.uint8)
    inputs = processor(images=image, text=["red circle", "blue star"])
    with torch.no_grad():
        alone = text_model(**inputs)
        with_points = text_model(**processor(images=image, input_points=[[[[5, 5]], [[60, 40]]]], text=["x", "y"]))
    assert alone.pred_masks.shape == (1, 2, 3, 32, 32) and alone.pred_masks.dtype == torch.float32
    assert alone.iou_scores.shape == (1, 2, 3)
    assert with_points.pred_masks.shape == (1, 2, 3, 32, 32)
    assert not torch.allclose(alone.pred_masks, with_points.pred_masks)


def test_text_ids_and_precomputed_embeddings_agree_and_text_matters(text_model):
    processor = SamProcessor.for_config(text_model.config)
    ids = processor(text=["red circle", "green cross"])["input_text_ids"]
    embeddings = torch.randn(1, text_model.config.vision_config.output_channels, 8, 8)
    with torch.no_grad():
        from_ids = text_model(image_embeddings=embeddings, input_text_ids=ids)
        text_embeds = text_model.get_text_embeddings(ids)
        from_embeds = text_model(image_embeddings=embeddings, text_embeds=text_embeds * 3.0)  # normalised inside
    assert text_embeds.shape == (1, 2, 32)
    torch.testing.assert_close(text_embeds.norm(dim=-1), torch.ones(1, 2))
    torch.testing.assert_close(from_ids.pred_masks, from_embeds.pred_masks, atol=1e-5, rtol=0)
    assert not torch.allclose(from_ids.pred_masks[0, 0], from_ids.pred_masks[0, 1])


def test_text_weights_survive_save_and_load(text_model, tmp_path):
    text_model.save_pretrained(tmp_path)
    loaded, info = SamModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for key, value in text_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0, msg=key)
    # The causal mask of the CLIP tower is not in the checkpoint and must be rebuilt, not left uninitialised.
    torch.testing.assert_close(loaded.text_encoder.clip.attn_mask, text_model.text_encoder.clip.attn_mask)
    ids = SamProcessor.for_config(text_model.config)(text="red circle")["input_text_ids"]
    embeddings = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        expected = text_model(image_embeddings=embeddings, input_text_ids=ids).pred_masks
        torch.testing.assert_close(loaded(image_embeddings=embeddings, input_text_ids=ids).pred_masks, expected)


def test_clip_tower_is_frozen_and_projection_trains(text_model):
    trainable = {name for name, p in text_model.named_parameters() if p.requires_grad and "text" in name}
    assert trainable == {
        "prompt_encoder.text_projection.weight",
        "prompt_encoder.text_projection.bias",
        "prompt_encoder.text_type_embed.weight",
    }
    unfrozen = SamModel(tiny_text_config(freeze_text_encoder=False))
    assert all(p.requires_grad for p in unfrozen.text_encoder.parameters())


def test_pretrained_clip_text_tower_is_loaded_from_a_local_file(tmp_path):
    clip = open_clip.model.CLIP(**TINY_CLIP)
    path = tmp_path / "clip.safetensors"
    safetensors.torch.save_file(clip.state_dict(), path)
    model = SamModel(tiny_text_config(pretrained=str(path)))
    torch.testing.assert_close(model.text_encoder.clip.token_embedding.weight, clip.token_embedding.weight)
    torch.testing.assert_close(model.text_encoder.clip.text_projection, clip.text_projection)


def test_checkpoint_without_text_points_to_zero_shot():
    model = SamModel(tiny_config())
    ids = torch.zeros(1, 1, 77, dtype=torch.long)
    with pytest.raises(ValueError, match=r"no trained text projection.*zero-shot"):
        model(image_embeddings=torch.zeros(1, 64, 8, 8), input_text_ids=ids)


def test_bad_text_inputs_are_rejected(text_model):
    embeddings = torch.zeros(1, 64, 8, 8)
    cases = [
        ({"input_text_ids": torch.zeros(1, 1, 5, dtype=torch.long)}, ValueError, "context_length|12"),
        ({"input_text_ids": torch.zeros(1, 1, 12)}, TypeError, "integer"),
        ({"input_text_ids": torch.full((1, 1, 12), 10**6)}, ValueError, "token ids"),
        ({"text_embeds": torch.zeros(1, 1, 7)}, ValueError, "text_embeds must have shape"),
        ({"text_embeds": torch.full((1, 1, 32), float("nan"))}, ValueError, "NaN"),
        ({"text_embeds": torch.zeros(2, 1, 32)}, ValueError, "batch size"),
        ({"text_embeds": torch.zeros(1, 2, 32), "input_points": torch.zeros(1, 1, 1, 2)}, ValueError, "match"),
        ({"text_embeds": torch.zeros(1, 1, 32), "input_text_ids": torch.zeros(1, 1, 12, dtype=torch.long)}, ValueError,
         "not both"),
    ]  # fmt: skip
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            text_model(image_embeddings=embeddings, **kwargs)


# --- zero-shot selection ---------------------------------------------------------------------------------------------


def test_rank_regions_orders_thresholds_and_can_answer_absent():
    regions = torch.eye(4)[:3]  # three regions, unit vectors
    text = torch.nn.functional.normalize(torch.tensor([0.3, 0.9, 0.1, 0.0]), dim=0)
    order, scores = rank_regions(regions, text, torch.empty(0, 4), threshold=0.05)
    assert order.tolist() == [1, 0, 2]
    order, _ = rank_regions(regions, text, torch.empty(0, 4), threshold=0.5)
    assert order.tolist() == [1]
    background = torch.tensor([[0.0, 1.0, 0.0, 0.0]])  # region 1 looks more like background than like the text
    order, _ = rank_regions(regions, text, background, threshold=0.05)
    assert order.tolist() == [0, 2]
    order, _ = rank_regions(regions, text, background, threshold=0.99)
    assert order.tolist() == []
    torch.testing.assert_close(scores, regions @ text)


class ControlledScorer(ClipScorer):
    """A fake CLIP: a region's cosine similarity to the name of the scene object it overlaps most is that IoU (when
    > 0.5, else the region is background), so the best proposal of an object ranks first; a text's embedding is the
    one-hot of the name."""

    def __init__(self, scene, threshold: float = 0.5):
        self.scene, self.names = scene, [*scene.names, "background"]
        self.templates, self.background, self.threshold = ("{}",), ("background",), threshold

    def _one_hot(self, index: int) -> torch.Tensor:
        return torch.eye(len(self.names) + 2)[index]  # names, then an unknown-text axis, then a spare axis

    def embed_regions(self, image, masks):
        def embedding(mask):
            ious = mask_iou(mask, self.scene.masks, empty=0.0)  # (objects,)
            best = int(ious.argmax())
            iou = float(ious[best])
            if iou <= 0.5:
                return self._one_hot(len(self.names) - 1)
            # cosine `iou` with the name, the rest of the unit vector on the spare last axis
            return iou * self._one_hot(best) + (1 - iou**2) ** 0.5 * self._one_hot(len(self.names) + 1)

        return torch.stack([embedding(mask) for mask in masks])

    def embed_texts(self, texts):
        return torch.stack([self._one_hot(self.names.index(t) if t in self.names else len(self.names)) for t in texts])


@pytest.fixture(scope="module")
def bundled_predictor():
    model, processor = load_sam()
    return SamPredictor(model, processor)


def test_zero_shot_picks_the_named_object_and_says_absent(bundled_predictor):
    scene = generate_scene(1_000_000_003, 128)
    scorer = ControlledScorer(scene)
    found = 0
    for obj in scene.objects:
        result = segment_text(bundled_predictor, scene.image, obj.name, method="zero-shot", clip=scorer)
        assert result.method == "zero-shot"
        if result.found:  # an object no proposal covers is (rightly) not found: the fake CLIP calls it background
            found += 1
            assert result.masks.shape == (1, 128, 128) and result.scores.shape == (1,) and result.boxes.shape == (1, 4)
            # the fake CLIP matches only IoU > 0.5
            assert mask_iou(result.masks[0], obj.mask, empty=0.0) > 0.6, obj.name
    assert found >= 2
    absent = segment_text(bundled_predictor, scene.image, "purple unicorn", method="zero-shot", clip=scorer)
    assert not absent.found and absent.masks.shape == (0, 128, 128)
    strict = ControlledScorer(scene, threshold=1.5)  # no cosine reaches it
    assert not segment_text(bundled_predictor, scene.image, scene.names[0], method="zero-shot", clip=strict).found


def test_zero_shot_uses_the_user_prompt_as_a_proposal(bundled_predictor):
    scene = generate_scene(1_000_000_003, 128)
    target = scene.objects[0]
    ys, xs = np.nonzero(target.mask)
    box = [xs.min(), ys.min(), xs.max(), ys.max()]
    scorer = ControlledScorer(scene)
    result = segment_text(
        bundled_predictor, scene.image, target.name, method="zero-shot", clip=scorer, box=box, points_per_side=2
    )
    assert result.found and mask_iou(result.masks[0], target.mask, empty=0.0) > 0.7


def test_segment_text_argument_errors(bundled_predictor):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="no trained text token"):
        segment_text(SamPredictor(SamModel(tiny_config())), image, "x", method="learned")
    with pytest.raises(ValueError, match="needs clip"):
        segment_text(bundled_predictor, image, "x", method="zero-shot")
    with pytest.raises(ValueError, match="method must be one of"):
        segment_text(bundled_predictor, image, "x", method="magic")
    with pytest.raises(ValueError, match="top_k"):
        segment_text(bundled_predictor, image, "x", top_k=0, clip=tiny_clip_scorer())
    with pytest.raises(ValueError, match="empty or whitespace"):
        segment_text(bundled_predictor, image, " ", clip=tiny_clip_scorer())
    with pytest.raises(TypeError, match="text must be a string"):
        segment_text(bundled_predictor, image, ["x"], clip=tiny_clip_scorer())


def test_learned_method_is_auto_for_text_models(text_model):
    predictor = SamPredictor(text_model)
    image = np.random.default_rng(1).integers(0, 256, (90, 128, 3), dtype=np.uint8)
    result = segment_text(predictor, image, "red circle", top_k=3)
    assert result.method == "learned" and result.masks.shape == (3, 90, 128)
    assert list(result.scores) == sorted(result.scores, reverse=True)
    with pytest.raises(ValueError, match="zero-shot' only"):
        segment_text(predictor, image, "red circle", points_per_side=4)


def test_real_clip_scorer_embeds_views_and_round_trips(tmp_path):
    scene = generate_scene(5, 128)
    scorer = tiny_clip_scorer(templates=("{}",), background=("background",), threshold=0.4)
    for kind in ("blur", "grey", "black", "keep"):
        assert region_view(scene.image, scene.masks[0], background=kind).size[0] >= 1
    with pytest.raises(ValueError, match="background must be"):
        region_view(scene.image, scene.masks[0], background="sepia")
    embeddings = scorer.embed_regions(scene.image, list(scene.masks))
    assert embeddings.shape == (len(scene.objects), 32)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(len(scene.objects)))
    scorer.save(tmp_path)
    loaded = ClipScorer.from_pretrained(tmp_path)
    assert (loaded.templates, loaded.background, loaded.threshold) == (("{}",), ("background",), 0.4)
    torch.testing.assert_close(loaded.embed_regions(scene.image, list(scene.masks)), embeddings)


# --- training the text token -----------------------------------------------------------------------------------------


def test_text_token_training_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    model = SamModel(tiny_config())
    scenes = [(scene.image, scene.masks) for scene in ShapesDataset(50 * 4)]  # (image, masks) for 50 batches of 4
    log = train_text_token(
        model, SamProcessor.for_config(model.config), tiny_clip_scorer(), scenes, tmp_path,
        steps=50, batch_size=4, learning_rate=1e-3, warmup_steps=5,
    )  # fmt: skip
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]
    assert json.loads((tmp_path / "training_log.json").read_text()) == log
    trained = SamModel.from_pretrained(tmp_path)
    assert trained.config.text_config is not None
    assert SamProcessor.from_pretrained(tmp_path).text_context_length == 12


def test_segment_prompts_dispatches_and_checks_like_the_library(bundled_predictor):
    scene = generate_scene(1_000_000_003, 128)
    embedded = bundled_predictor.embed(scene.image)
    point = [[40, 50, 1], [5, 5, 0]]
    got = segment_prompts(bundled_predictor, scene.image, point, multimask=False, embedded=embedded)
    want = bundled_predictor.predict([[40, 50], [5, 5]], [1, 0], multimask_output=False, image=embedded)
    assert isinstance(got, Prediction)
    np.testing.assert_array_equal(got.masks, want.masks)
    assert segment_prompts(bundled_predictor, scene.image, [[40, 50]]).masks.shape == (3, 128, 128)  # label 1
    text = segment_prompts(bundled_predictor, scene.image, point, text="red circle", multimask=False, embedded=embedded)
    assert isinstance(text, TextSegmentation) and text.method == "learned" and len(text.masks) == 1
    for points, error, message in [
        ([[1, 2, 1.7]], ValueError, "point labels must be 1"),
        ([[1, 2, True]], TypeError, "points must contain numbers, got bool"),
        ([[1, 2, 3, 4]], ValueError, "points entries must have 2 or 3 values"),
        ([[float("nan"), 2]], ValueError, "points contain NaN"),
    ]:
        with pytest.raises(error, match=message):
            segment_prompts(bundled_predictor, scene.image, points, embedded=embedded)
    with pytest.raises(ValueError, match="Add at least one point, a box or a text"):
        segment_prompts(bundled_predictor, scene.image, embedded=embedded)
    with pytest.raises(ValueError, match=r"points must lie inside the image \(0 <= x <= 128.*\[\[130\.0, 5\.0\]\]"):
        segment_prompts(bundled_predictor, scene.image, [[40, 50], [130, 5]], embedded=embedded)
    with pytest.raises(TypeError, match="box must contain numbers, got str"):  # its form first, named
        segment_prompts(bundled_predictor, scene.image, box=[1, 2, "x", 4], embedded=embedded)
    with pytest.raises(ValueError, match=r"box must overlap the image \(128x128 pixels\)"):
        segment_prompts(bundled_predictor, scene.image, box=[200, 0, 300, 50], embedded=embedded)
    cut = segment_prompts(bundled_predictor, scene.image, box=[-20, -20, 60, 60], multimask=False, embedded=embedded)
    assert cut.masks.shape == (1, 128, 128)  # a box past the border is an object the border cuts
    with pytest.raises(TypeError, match="text must be a string, got int"):
        segment_prompts(bundled_predictor, scene.image, text=5, embedded=embedded)
