"""The official notebooks' flows (`predictor_example.ipynb`, `automatic_mask_generator_example.ipynb`) and README
calls, run call for call against `segment_anything` and against `sam_hf` with only the import changed, on the same
random weights; every result is compared.

Left out: the plotting, `sam_model_registry[...](checkpoint=...)` (the model is built by the fixture), and the
notebook's last section, which calls the official `Sam.forward(batched_input, ...)` rather than the predictor.
"""

from __future__ import annotations

import copy
import types

import cv2
import numpy as np
import pytest
import segment_anything
import torch
from pycocotools import mask as mask_utils

import sam_hf
from sam_hf.conversion import convert_state_dict
from sam_hf.predictor import ImageNotSetError, Prediction, ResizeLongestSide
from tests.helpers import photo, scene_image

# Bool masks of the two implementations may differ where |logit| is at float32 rounding level: at most this fraction.
MASK_MISMATCH = 1e-4


# (height, width) of the README photos the notebooks use.
PHOTO_SIZES = {"truck.jpg": (1200, 1800), "groceries.jpg": (534, 800), "dog.jpg": (534, 800)}


def read_bgr(name: str, source: str = "scene") -> np.ndarray:
    """The notebooks' `cv2.imread(path)` of the README photo `name` (`source="photo"`, an extra), or of a generated
    scene of its size through the same JPEG round trip (the default: the tests make their own images)."""
    if source == "photo":
        return cv2.imread(str(photo(name)))
    scene = cv2.cvtColor(scene_image(len(name), *PHOTO_SIZES[name]), cv2.COLOR_RGB2BGR)
    return cv2.imdecode(cv2.imencode(".jpg", scene)[1], cv2.IMREAD_COLOR)


def read_rgb(name: str, source: str = "scene") -> np.ndarray:
    """The notebooks' `cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)`, of `read_bgr`'s image."""
    return cv2.cvtColor(read_bgr(name, source), cv2.COLOR_BGR2RGB)


def predictor_notebook(api: types.ModuleType, sam: torch.nn.Module, image: np.ndarray) -> dict[str, tuple]:
    """`predictor_example.ipynb` on the truck image, call for call; each call's outputs, by the notebook's section."""
    predictor = api.SamPredictor(sam)
    predictor.set_image(image)
    results = {"embedding": (predictor.get_image_embedding(),)}

    input_point = np.array([[500, 375]])
    input_label = np.array([1])
    masks, scores, logits = predictor.predict(point_coords=input_point, point_labels=input_label, multimask_output=True)
    results["one point"] = (masks, scores, logits)

    input_point = np.array([[500, 375], [1125, 625]])
    input_label = np.array([1, 1])
    mask_input = logits[np.argmax(scores), :, :]  # the model's best mask
    results["two points + mask"] = predictor.predict(
        point_coords=input_point, point_labels=input_label, mask_input=mask_input[None, :, :], multimask_output=False
    )
    input_label = np.array([1, 0])
    results["background point + mask"] = predictor.predict(
        point_coords=input_point, point_labels=input_label, mask_input=mask_input[None, :, :], multimask_output=False
    )

    input_box = np.array([425, 600, 700, 875])
    results["box"] = predictor.predict(
        point_coords=None, point_labels=None, box=input_box[None, :], multimask_output=False
    )
    input_point = np.array([[575, 750]])
    input_label = np.array([0])
    results["box + point"] = predictor.predict(
        point_coords=input_point, point_labels=input_label, box=input_box, multimask_output=False
    )

    input_boxes = torch.tensor(
        [[75, 275, 1725, 850], [425, 600, 700, 875], [1375, 550, 1650, 800], [1240, 675, 1400, 750]],
        device=predictor.device,
    )
    transformed_boxes = predictor.transform.apply_boxes_torch(input_boxes, image.shape[:2])
    results["batched boxes"] = predictor.predict_torch(
        point_coords=None, point_labels=None, boxes=transformed_boxes, multimask_output=False
    )
    return results


def assert_same_results(expected: dict[str, tuple], actual: dict[str, tuple]) -> dict[str, list[float]]:
    """Same keys, types, shapes and dtypes; bool masks equal up to `MASK_MISMATCH`, numbers to 1e-4. Returns the max
    abs difference (mismatch fraction for bool masks) of each output."""
    assert actual.keys() == expected.keys()
    diffs = {}
    for key, want in expected.items():
        got = actual[key]
        assert len(got) == len(want), key
        diffs[key] = []
        for ours, theirs in zip(got, want, strict=True):
            assert type(ours) is type(theirs), key
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, key
            ours, theirs = torch.as_tensor(ours), torch.as_tensor(theirs)
            if theirs.dtype == torch.bool:
                diffs[key].append((ours != theirs).float().mean().item())
                assert diffs[key][-1] <= MASK_MISMATCH, key
            else:
                diffs[key].append((ours - theirs).abs().max().item())
                torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0, msg=key)
    return diffs


@pytest.mark.parametrize(
    ("pair", "source"),
    [("small_pair", "scene"), ("small_pair", "photo"), pytest.param("vit_b_pair", "scene", marks=pytest.mark.heavy)],
)
def test_predictor_notebook_runs_unchanged_with_the_same_numbers(request, pair, source):
    official, model = request.getfixturevalue(pair)
    image = read_rgb("truck.jpg", source)
    expected = predictor_notebook(segment_anything, official, image)
    actual = predictor_notebook(sam_hf, model, image)
    diffs = assert_same_results(expected, actual)
    # The notebook's printed shapes, and sam_hf's named fields beside the unpacking.
    assert actual["one point"][0].shape == (3, 1200, 1800) and actual["box"][0].shape == (1, 1200, 1800)
    assert actual["batched boxes"][0].shape == (4, 1, 1200, 1800)
    assert isinstance(actual["box"], Prediction) and actual["box"].low_res_logits is actual["box"][2]
    print(pair, {key: [f"{value:.2e}" for value in values] for key, values in diffs.items()})


def test_readme_predictor_call_and_image_state(small_pair):
    official, model = small_pair
    image = read_rgb("groceries.jpg")
    reference = segment_anything.SamPredictor(official)
    predictor = sam_hf.SamPredictor(model)
    for each in (reference, predictor):
        assert not each.is_image_set
        each.set_image(image)
    assert predictor.is_image_set and predictor.device == reference.device
    assert predictor.original_size == reference.original_size and predictor.input_size == reference.input_size
    assert predictor.features.shape == reference.features.shape
    masks, _, _ = predictor.predict(np.array([[400, 200]]), np.array([1]))
    reference_masks, _, _ = reference.predict(np.array([[400, 200]]), np.array([1]))
    assert (masks != reference_masks).mean() <= MASK_MISMATCH

    predictor.reset_image()
    assert not predictor.is_image_set and predictor.features is None
    for error in (RuntimeError, ValueError):  # the official's type and sam_hf's
        with pytest.raises(error, match="set_image"):
            predictor.get_image_embedding()
        with pytest.raises(error, match="set_image"):
            predictor.predict(np.array([[400, 200]]), np.array([1]))
    with pytest.raises(ImageNotSetError):
        predictor.predict_torch(None, None, boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0]]))


def test_bgr_images_and_set_torch_image(small_pair):
    official, model = small_pair
    rgb = read_rgb("dog.jpg")
    bgr = read_bgr("dog.jpg")
    reference = segment_anything.SamPredictor(official)
    reference.set_image(rgb)
    predictor = sam_hf.SamPredictor(model)
    predictor.set_image(bgr, image_format="BGR")
    torch.testing.assert_close(predictor.get_image_embedding(), reference.get_image_embedding(), atol=5e-5, rtol=0)
    from_rgb = predictor.predict(np.array([[300, 200]]), np.array([1]), return_logits=True)

    # The official `set_image` steps spelled out: resize with `predictor.transform`, then `set_torch_image`.
    input_image = predictor.transform.apply_image(rgb)
    input_image_torch = torch.as_tensor(input_image, device=predictor.device).permute(2, 0, 1).contiguous()[None]
    predictor.set_torch_image(input_image_torch, rgb.shape[:2])
    assert predictor.original_size == reference.original_size and predictor.input_size == reference.input_size
    torch.testing.assert_close(predictor.get_image_embedding(), reference.get_image_embedding(), atol=5e-5, rtol=0)
    from_torch = predictor.predict(np.array([[300, 200]]), np.array([1]), return_logits=True)
    np.testing.assert_array_equal(from_torch.masks, from_rgb.masks)

    with pytest.raises(ValueError, match="image_format must be one of"):
        predictor.set_image(rgb, image_format="HSV")
    with pytest.raises(ValueError, match=r"image_format='BGR' needs an \(H, W, 3\) array"):
        predictor.set_image(rgb[..., 0], image_format="BGR")
    with pytest.raises(ValueError, match="transformed_image must be"):
        predictor.set_torch_image(input_image_torch[:, :, :100, :100], rgb.shape[:2])
    with pytest.raises(ValueError, match="transformed_image must be"):
        predictor.set_torch_image(input_image_torch / 255.0, rgb.shape[:2])
    with pytest.raises(ValueError, match="original_image_size"):
        predictor.set_torch_image(input_image_torch, (0, 800))


def test_transform_matches_resize_longest_side(small_pair):
    from segment_anything.utils.transforms import ResizeLongestSide as OfficialResize

    official, model = small_pair
    predictor = sam_hf.SamPredictor(model)
    reference = segment_anything.SamPredictor(official).transform
    assert isinstance(predictor.transform, ResizeLongestSide)
    assert predictor.transform.target_length == reference.target_length
    image = read_rgb("dog.jpg")[:301, :457]
    np.testing.assert_array_equal(predictor.transform.apply_image(image), reference.apply_image(image))
    coords = np.random.default_rng(0).uniform(0, 450, (5, 3, 2))
    boxes = np.random.default_rng(1).uniform(0, 300, (6, 4))
    for size in [(301, 457), (1200, 1800), (7, 3000)]:
        assert predictor.transform.get_preprocess_shape(*size, 1024) == OfficialResize.get_preprocess_shape(*size, 1024)
        np.testing.assert_array_equal(
            predictor.transform.apply_coords(coords, size), reference.apply_coords(coords, size)
        )
        np.testing.assert_array_equal(predictor.transform.apply_boxes(boxes, size), reference.apply_boxes(boxes, size))
        for ours, theirs, value in (
            (predictor.transform.apply_coords_torch, reference.apply_coords_torch, torch.as_tensor(coords)),
            (predictor.transform.apply_boxes_torch, reference.apply_boxes_torch, torch.as_tensor(boxes)),
        ):
            torch.testing.assert_close(ours(value, size), theirs(value, size), atol=0, rtol=0)
    # The official sizes `apply_image_torch` from the batch and channel axes (a bug): here from height and width, and
    # close to the PIL resize of `apply_image`.
    batch = torch.as_tensor(image).permute(2, 0, 1)[None].float()
    resized = predictor.transform.apply_image_torch(batch)
    assert resized.shape == (1, 3, *predictor.transform.apply_image(image).shape[:2])
    pil = torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)[None].float()
    assert (resized - pil).abs().mean() < 2


@pytest.mark.parametrize("multimask_output", [True, False])
def test_predict_torch_batched_points_and_masks(small_pair, multimask_output):
    official, model = small_pair
    image = read_rgb("groceries.jpg")
    points = torch.tensor([[[100, 100], [400, 300]], [[600, 250], [50, 500]], [[700, 60], [300, 400]]])
    labels = torch.tensor([[1, 0], [1, 1], [1, -1]])
    outputs = []
    for api, sam in ((segment_anything, official), (sam_hf, model)):
        predictor = api.SamPredictor(sam)
        predictor.set_image(image)
        coords = predictor.transform.apply_coords_torch(points, image.shape[:2])
        boxes = predictor.transform.apply_boxes_torch(torch.tensor([[50, 40, 500, 400]] * 3), image.shape[:2])
        first = predictor.predict_torch(coords, labels, multimask_output=multimask_output, return_logits=True)
        again = predictor.predict_torch(
            coords, labels, boxes, first[2][:, :1], multimask_output=multimask_output, return_logits=False
        )
        outputs.append({"points": first, "points + boxes + masks": again})
    assert_same_results(*outputs)

    predictor = sam_hf.SamPredictor(model)
    predictor.set_image(image)
    with pytest.raises(ValueError, match=r"boxes must have shape \(B, 4\)"):
        predictor.predict_torch(None, None, boxes=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(TypeError, match=r"point_coords must be a torch\.Tensor"):
        predictor.predict_torch(np.zeros((1, 1, 2)), torch.ones(1, 1))
    with pytest.raises(ValueError, match="point_labels must have one label per point"):
        predictor.predict_torch(torch.zeros(2, 3, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"mask_input must have shape \(B, 1, 256, 256\)"):
        predictor.predict_torch(torch.zeros(2, 1, 2), torch.ones(2, 1), mask_input=torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="point_labels needs point_coords"):
        predictor.predict_torch(None, torch.ones(1, 1), boxes=torch.zeros(1, 4))


def test_predict_errors_name_the_official_arguments(small_pair):
    predictor = sam_hf.SamPredictor(small_pair[1])
    predictor.set_image(read_rgb("dog.jpg"))
    with pytest.raises(ValueError, match="box entries must have 4 coordinates, got 3"):
        predictor.predict(box=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="box has too many nesting levels"):
        predictor.predict(box=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="point_labels needs point_coords"):
        predictor.predict(point_labels=np.array([1]), box=np.array([0, 0, 5, 5]))
    with pytest.raises(ValueError, match="point_labels must have one label per point"):
        predictor.predict(np.array([[1, 1], [2, 2]]), np.array([1]))
    with pytest.raises(ValueError, match=r"mask_input must be \(1, h, w\)"):
        predictor.predict(np.array([[1, 1]]), np.array([1]), mask_input=np.zeros((256, 256)))


def confident_pair(pair: tuple) -> tuple:
    """`small_pair` with its masks made sharp and its IoU predictions high (output weights x300, IoU bias +1), so that
    the official generator's default thresholds keep masks, in both implementations alike."""
    official = copy.deepcopy(pair[0])
    with torch.no_grad():
        for mlp in official.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(300)
        official.mask_decoder.iou_prediction_head.layers[-1].bias.add_(1.0)
    model = copy.deepcopy(pair[1])
    model.load_state_dict(convert_state_dict(official.state_dict()), strict=True)
    return official, model


NOTEBOOK_GENERATORS = {
    "README / default": {},
    "custom": {
        "points_per_side": 32,
        "pred_iou_thresh": 0.86,
        "stability_score_thresh": 0.92,
        "crop_n_layers": 1,
        "crop_n_points_downscale_factor": 2,
        "min_mask_region_area": 100,  # Requires open-cv to run post-processing
    },
}


# The notebook's 32x32 grid is 1,024-2,048 prompts through the full-width decoder: about a minute per generator here.
@pytest.mark.heavy
@pytest.mark.parametrize("settings", NOTEBOOK_GENERATORS)
def test_automatic_mask_generator_notebook(small_pair, settings):
    official, model = confident_pair(small_pair)
    image = read_rgb("dog.jpg")
    expected = segment_anything.SamAutomaticMaskGenerator(official, **NOTEBOOK_GENERATORS[settings]).generate(image)
    actual = sam_hf.SamAutomaticMaskGenerator(model=model, **NOTEBOOK_GENERATORS[settings]).generate(image)
    assert len(expected) >= 1, "the weights must give masks to compare"
    assert len(actual) == len(expected)
    assert actual[0].keys() == expected[0].keys()
    # The notebook's `show_anns` order: by area, largest first.
    by_area = sorted(actual, key=lambda x: x["area"], reverse=True)
    for ours, theirs in zip(by_area, sorted(expected, key=lambda x: x["area"], reverse=True), strict=True):
        assert ours["segmentation"].shape == image.shape[:2]
        iou = mask_utils.iou(
            [mask_utils.encode(np.asfortranarray(theirs["segmentation"]))],
            [mask_utils.encode(np.asfortranarray(ours["segmentation"]))],
            [0],
        )
        assert iou[0, 0] >= 0.999
        assert ours["bbox"] == theirs["bbox"] and ours["crop_box"] == [int(v) for v in theirs["crop_box"]]
        assert ours["point_coords"] == theirs["point_coords"]
        assert ours["predicted_iou"] == pytest.approx(theirs["predicted_iou"], abs=1e-4)
        assert ours["stability_score"] == pytest.approx(theirs["stability_score"], abs=1e-3)
