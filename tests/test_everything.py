"""Everything mode against the official `SamAutomaticMaskGenerator`, on the same random weights (`small_pair`)."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment
from segment_anything import SamAutomaticMaskGenerator as OfficialGenerator
from segment_anything.utils import amg

from sam_hf import SamImageProcessor, SamModel, SamProcessor
from sam_hf.everything import (
    BUNDLED_SETTINGS,
    OFFICIAL_SETTINGS,
    OUTPUT_MODES,
    ZERO_SHOT_SETTINGS,
    EverythingSettings,
    SamAutomaticMaskGenerator,
    build_all_layer_point_grids,
    decode_segmentation,
    generate_crop_boxes,
    remove_small_regions,
    rle_areas,
    stability_score,
    uncompressed_rle,
)
from tests.helpers import SMALL, photo, scene_image, tiny_config

# Random weights give faint masks (|logits| < 0.5) spread over the whole image: stability is measured at +-0.05 and the
# thresholds are low, so that dozens of masks pass. Their boxes all span the image, so box NMS would keep one: it is
# off (1.0) where the count matters, and a thumbnail, where every crop edge lies within 20 px of an image edge, keeps
# crop masks alive; the "nms" case runs the default box NMS over 21 crops, with a cross-crop threshold low enough that
# the preference for smaller crops decides which masks stay.
LOW = {"pred_iou_thresh": 0.02, "stability_score_thresh": 0.3, "stability_score_offset": 0.05}
CASES = {
    "grid": ("full", {"points_per_side": 8, "box_nms_thresh": 1.0}, 10),
    "crop_layer": (
        "thumbnail",
        {"points_per_side": 4, "crop_n_layers": 1, "box_nms_thresh": 1.0, "crop_nms_thresh": 1.0},
        10,
    ),
    "small_regions": ("full", {"points_per_side": 8, "box_nms_thresh": 1.0, "min_mask_region_area": 2000}, 10),
    "nms": ("thumbnail", {"points_per_side": 2, "crop_n_layers": 2, "crop_nms_thresh": 0.3}, 3),
}


@pytest.fixture(scope="module", params=["scene", "photo"])
def images(request) -> dict[str, np.ndarray]:
    """A 534x800 image and its 48x32 thumbnail: a generated scene, and the README's dog photo as an extra."""
    if request.param == "scene":
        image = Image.fromarray(scene_image(1, 534, 800))
    else:
        image = Image.open(photo("dog.jpg")).convert("RGB")
    return {"full": np.asarray(image), "thumbnail": np.asarray(image.resize((48, 32), Image.BILINEAR))}


def small_generator(model, **kwargs) -> SamAutomaticMaskGenerator:
    image_processor = SamImageProcessor(size={"longest_edge": SMALL["image_size"]}, pad_size=SMALL["image_size"])
    processor = SamProcessor(image_processor)
    return SamAutomaticMaskGenerator(model, processor=processor, **kwargs)


@pytest.mark.parametrize("case", CASES)
def test_matches_official_generator(small_pair, images, case):
    official, model = small_pair
    image_name, settings, min_masks = CASES[case]
    kwargs = {**LOW, **settings, "output_mode": "coco_rle"}
    image = images[image_name]
    expected = OfficialGenerator(official, **kwargs).generate(image)
    actual = small_generator(model, **kwargs).generate(image)

    assert len(expected) >= min_masks, "the settings must keep enough masks to compare"
    assert len(actual) == len(expected)
    iou = mask_utils.iou([r["segmentation"] for r in expected], [r["segmentation"] for r in actual], [0] * len(actual))
    rows, cols = linear_sum_assignment(iou, maximize=True)
    assert iou[rows, cols].min() >= 0.99
    for i, j in zip(rows, cols, strict=True):
        want, got = expected[i], actual[j]
        assert got["bbox"] == want["bbox"]
        assert got["crop_box"] == [int(v) for v in want["crop_box"]]  # float in the official when a crop is empty
        assert got["point_coords"] == want["point_coords"]
        assert got["predicted_iou"] == pytest.approx(want["predicted_iou"], abs=1e-4)
        assert got["stability_score"] == pytest.approx(want["stability_score"], abs=1e-3)
        assert abs(got["area"] - want["area"]) <= 0.01 * want["area"]


def test_helpers_match_official():
    for size in [(534, 800), (32, 48), (1200, 1800), (5, 7)]:
        for layers in range(4):
            for ratio in (0.0, 512 / 1500, 0.9):
                assert generate_crop_boxes(size, layers, ratio) == amg.generate_crop_boxes(size, layers, ratio)
    for side, layers, factor in [(32, 0, 1), (16, 2, 2), (7, 3, 1), (9, 2, 3)]:
        ours, theirs = (
            build_all_layer_point_grids(side, layers, factor),
            amg.build_all_layer_point_grids(side, layers, factor),
        )
        assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    logits = torch.randn(6, 40, 50, generator=torch.Generator().manual_seed(0)) * 2
    logits[0] = -5  # empty at both thresholds: NaN in both
    torch.testing.assert_close(
        stability_score(logits, 0.7), amg.calculate_stability_score(logits, 0.0, 0.7), equal_nan=True
    )


def blobs(seed: int, shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    """A random bool mask with islands and holes of many sizes."""
    noise = torch.randn(1, 1, shape[0] // 4, shape[1] // 4, generator=torch.Generator().manual_seed(seed))
    return (torch.nn.functional.interpolate(noise, shape, mode="bilinear")[0, 0] > 0.3).numpy()


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("min_area", [1, 20, 200, 10_000])  # 10_000: every island is small, the largest stays
def test_remove_small_regions_matches_official(mode, min_area):
    changed_any = False
    for seed in range(5):
        mask = blobs(seed)
        got, changed = remove_small_regions(mask, min_area, mode)
        want, want_changed = amg.remove_small_regions(mask, min_area, mode)
        assert changed == want_changed
        np.testing.assert_array_equal(got, want)
        changed_any |= changed
    assert changed_any or min_area == 1


def test_rle_helpers_match_official():
    masks = torch.from_numpy(np.stack([blobs(seed) for seed in range(4)]))
    masks[2] = True  # starts with a foreground run
    masks[3] = False
    for mask, want in zip(masks, amg.mask_to_rle_pytorch(masks), strict=True):
        got = uncompressed_rle(mask.numpy())
        assert got == want
        np.testing.assert_array_equal(decode_segmentation(got), mask.numpy())
        coco = amg.coco_encode_rle(want)
        np.testing.assert_array_equal(decode_segmentation(coco), mask.numpy())


@pytest.fixture(scope="module")
def records_by_mode(small_pair, images) -> dict[str, list[dict]]:
    kwargs = {**LOW, **CASES["crop_layer"][1], "points_per_side": 3, "crop_nms_thresh": 0.7}
    return {
        mode: small_generator(small_pair[1], output_mode=mode, **kwargs).generate(images["thumbnail"])
        for mode in OUTPUT_MODES
    }


def test_output_modes_round_trip(records_by_mode):
    binary, uncompressed, coco = (records_by_mode[mode] for mode in OUTPUT_MODES)
    assert len(binary) >= 5 and len(binary) == len(uncompressed) == len(coco)
    json.dumps(uncompressed), json.dumps(coco)  # the RLE modes are JSON-ready
    for b, u, c in zip(binary, uncompressed, coco, strict=True):
        mask = b["segmentation"]
        assert mask.dtype == bool and mask.shape == (32, 48)
        np.testing.assert_array_equal(decode_segmentation(u["segmentation"]), mask)
        np.testing.assert_array_equal(decode_segmentation(c["segmentation"]), mask)
        assert {k: v for k, v in b.items() if k != "segmentation"} == {
            k: v for k, v in c.items() if k != "segmentation"
        }
        assert b["area"] == mask.sum()
        ys, xs = np.nonzero(mask)
        assert b["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
        x, y, w, h = b["crop_box"]
        assert not mask[:y].any() and not mask[:, :x].any() and not mask[y + h :].any() and not mask[:, x + w :].any()


def test_no_masks_and_progress_bar(small_pair, images, capsys):
    generator = small_generator(
        small_pair[1], points_per_side=2, pred_iou_thresh=1.0, min_mask_region_area=10, progress_bar=True
    )
    assert generator.generate(images["thumbnail"]) == []
    assert "everything" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"points_per_side": 0}, "points_per_side"),
        ({"points_per_side": 2.5}, "points_per_side"),
        ({"points_per_side": None}, "points_per_side or point_grids"),
        ({"point_grids": [np.full((4, 2), 0.5)]}, "points_per_side or point_grids"),
        ({"points_per_side": None, "point_grids": [np.full((4, 2), 0.5)], "crop_n_layers": 1}, "point_grids"),
        ({"points_per_side": None, "point_grids": [np.full((4, 2), 1.5)]}, "point_grids"),
        ({"points_per_batch": 0}, "points_per_batch"),
        ({"pred_iou_thresh": 1.5}, "pred_iou_thresh"),
        ({"stability_score_thresh": -0.1}, "stability_score_thresh"),
        ({"stability_score_offset": -1.0}, "stability_score_offset"),
        ({"box_nms_thresh": float("nan")}, "box_nms_thresh"),
        ({"crop_nms_thresh": 2}, "crop_nms_thresh"),
        ({"crop_n_layers": -1}, "crop_n_layers"),
        ({"crop_n_layers": None}, "crop_n_layers"),
        ({"crop_overlap_ratio": 1.0}, "crop_overlap_ratio"),
        ({"crop_n_points_downscale_factor": 0}, "crop_n_points_downscale_factor"),
        (
            {"points_per_side": 4, "crop_n_layers": 3, "crop_n_points_downscale_factor": 2},
            "crop_n_points_downscale_factor",
        ),
        ({"min_mask_region_area": -5}, "min_mask_region_area"),
        ({"output_mode": "png"}, "output_mode"),
    ],
)
def test_bad_parameters(tiny_model, kwargs, name):
    with pytest.raises(ValueError, match=name):
        SamAutomaticMaskGenerator(tiny_model, **kwargs)
    with pytest.raises(ValueError, match=name):  # the same check, once, in the settings
        EverythingSettings(**kwargs)


def test_settings_are_the_official_constructor_arguments():
    """Same names, order and defaults as the official constructor, so positional calls are drop-in too."""
    official = list(inspect.signature(OfficialGenerator).parameters.values())[1:]  # after `model`
    fields = dataclasses.fields(EverythingSettings)
    assert [f.name for f in fields] == [p.name for p in official]
    assert [f.default for f in fields] == [p.default for p in official]
    assert [getattr(OFFICIAL_SETTINGS, p.name) for p in official] == [p.default for p in official]


def test_generator_takes_settings_keywords_or_positions(tiny_model):
    by_keyword = SamAutomaticMaskGenerator(tiny_model, points_per_side=4, pred_iou_thresh=0.5)
    by_position = SamAutomaticMaskGenerator(tiny_model, 4, 64, 0.5)
    by_settings = SamAutomaticMaskGenerator(tiny_model, settings=EverythingSettings(4, pred_iou_thresh=0.5))
    assert by_keyword.settings == by_position.settings == by_settings.settings
    assert by_keyword.pred_iou_thresh == 0.5 and by_keyword.output_mode == "binary_mask"  # the official attributes
    np.testing.assert_array_equal(by_settings.point_grids[0], build_all_layer_point_grids(4, 0, 1)[0])
    overridden = SamAutomaticMaskGenerator(tiny_model, settings=BUNDLED_SETTINGS, output_mode="coco_rle")
    assert overridden.settings == dataclasses.replace(BUNDLED_SETTINGS, output_mode="coco_rle")
    with pytest.raises(TypeError, match="settings"):
        SamAutomaticMaskGenerator(tiny_model, 4, settings=BUNDLED_SETTINGS)
    with pytest.raises(TypeError, match="EverythingSettings"):
        SamAutomaticMaskGenerator(tiny_model, settings={"points_per_side": 4})
    with pytest.raises(TypeError, match="points_per_sid"):
        SamAutomaticMaskGenerator(tiny_model, points_per_sid=4)
    with pytest.raises(AttributeError, match="no attribute"):
        _ = by_keyword.points_per_crop


def test_settings_are_frozen_values():
    grids = [np.array([[0.25, 0.5], [1.0, 0.0]])]
    a = EverythingSettings(points_per_side=None, point_grids=grids)
    b = EverythingSettings(points_per_side=None, point_grids=[grids[0].tolist()])
    assert a == b and hash(a) == hash(b) and a != dataclasses.replace(a, pred_iou_thresh=0.5)
    np.testing.assert_array_equal(a.layer_point_grids()[0], grids[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.pred_iou_thresh = 0.1
    with pytest.raises(ValueError, match="pred_iou_thresh"):  # variants are validated too
        dataclasses.replace(OFFICIAL_SETTINGS, pred_iou_thresh=2)
    assert (ZERO_SHOT_SETTINGS.points_per_side, ZERO_SHOT_SETTINGS.pred_iou_thresh) == (16, 0.0)
    assert (BUNDLED_SETTINGS.pred_iou_thresh, BUNDLED_SETTINGS.stability_score_thresh) == (0.5, 0.7)


def test_more_than_255_masks():
    """pycocotools' `area` of a list of 256+ RLEs overflows a uint8 scratch array (issue 17): every mask of a
    10x10 grid (3 per point, no filter, no NMS) survives here."""
    torch.manual_seed(0)
    config = tiny_config()
    generator = SamAutomaticMaskGenerator(
        SamModel(config),
        processor=SamProcessor.for_config(config),
        points_per_side=10,
        pred_iou_thresh=0,
        stability_score_thresh=0,
        box_nms_thresh=1.0,
    )
    records = generator.generate(np.full((96, 96, 3), 128, np.uint8))
    assert len(records) == 300
    assert [record["area"] for record in records] == [int(record["segmentation"].sum()) for record in records]
    rles = [mask_utils.encode(np.asfortranarray(np.eye(5, k=i % 5, dtype=np.uint8))) for i in range(300)]
    assert rle_areas(rles) == [5 - i % 5 for i in range(300)]


def test_bad_images(tiny_model):
    generator = SamAutomaticMaskGenerator(tiny_model, points_per_side=2)
    with pytest.raises(ValueError, match="one image"):
        generator.generate([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="images"):
        generator.generate(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        generator.generate(np.zeros((8, 8, 3), np.int32))
    with pytest.raises(ValueError, match="crop_n_layers"):
        SamAutomaticMaskGenerator(tiny_model, points_per_side=2, crop_n_layers=2).generate(
            np.zeros((2, 2, 3), np.uint8)
        )
    with pytest.raises(TypeError, match="SamModel"):
        SamAutomaticMaskGenerator(torch.nn.Linear(2, 2))
