"""Processing parity with the official `segment_anything` pipeline (`ResizeLongestSide`, `Sam.preprocess`,
`Sam.postprocess_masks`, `apply_coords` / `apply_boxes`), prompt batching, saving / loading, and input errors."""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from transformers import AutoImageProcessor, AutoProcessor, SamImageProcessorPil, pipeline
from transformers import SamProcessor as TransformersSamProcessor

from sam_hf import SamAutomaticMaskGenerator, SamModel, SamPredictor
from sam_hf.processing import SamImageProcessor, SamProcessor, register_auto_classes
from sam_hf.prompts import FOREGROUND_LABEL, PAD_LABEL
from tests.helpers import photo, scene_image, tiny_config

# landscape, odd, portrait, tiny, downscaled, and a height of exactly 2.5 after scaling (int(x + 0.5), not round)
SIZES = [(480, 640), (333, 517), (700, 301), (7, 5), (1300, 900), (5, 2048)]
_DEFAULTS = inspect.signature(Sam.__init__).parameters


def official_sam(img_size: int = 1024, mean=None, std=None) -> SimpleNamespace:
    """The attributes `Sam.preprocess` / `Sam.postprocess_masks` read, built like `Sam.__init__` builds them."""
    mean = _DEFAULTS["pixel_mean"].default if mean is None else mean
    std = _DEFAULTS["pixel_std"].default if std is None else std
    return SimpleNamespace(
        pixel_mean=torch.Tensor(mean).view(-1, 1, 1),
        pixel_std=torch.Tensor(std).view(-1, 1, 1),
        image_encoder=SimpleNamespace(img_size=img_size),
    )


def official_pixel_values(image: np.ndarray, longest_edge: int = 1024, sam: SimpleNamespace | None = None):
    """`SamPredictor.set_image` up to the encoder: (1, 3, img_size, img_size)."""
    resized = ResizeLongestSide(longest_edge).apply_image(image)
    return Sam.preprocess(sam or official_sam(), torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None])


def random_image(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    shape = (height, width, channels) if channels else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_pixel_values_match_official(height, width):
    image = random_image(height, width, seed=height)
    out = SamImageProcessor()(image)
    assert out["pixel_values"].dtype == torch.float32
    assert torch.equal(out["pixel_values"], official_pixel_values(image))  # bit-exact on uint8 input
    assert out["original_sizes"].tolist() == [[height, width]]
    assert out["reshaped_input_sizes"].tolist() == [list(ResizeLongestSide.get_preprocess_shape(height, width, 1024))]
    assert out["original_sizes"].dtype == out["reshaped_input_sizes"].dtype == torch.int64


@pytest.mark.parametrize("source", ["scene", "photo"])
def test_jpeg_file_matches_official(source, tmp_path):
    """An opened JPEG file, as PIL image and as array: a generated scene saved as JPEG, and the README's dog photo as
    an extra."""
    if source == "scene":
        path = tmp_path / "scene.jpg"
        PIL.Image.fromarray(scene_image(2, 534, 800)).save(path, quality=90)
    else:
        path = photo("dog.jpg")
    image = PIL.Image.open(path)
    expected = official_pixel_values(np.asarray(image.convert("RGB")))
    processor = SamImageProcessor()
    assert max_diff(processor(image)["pixel_values"], expected) <= 1e-6
    assert max_diff(processor(np.asarray(image))["pixel_values"], expected) <= 1e-6


def test_input_forms_agree_with_official():
    image = random_image(37, 23, seed=1)
    expected = official_pixel_values(image)
    chw = torch.from_numpy(image).permute(2, 0, 1)
    forms = {
        "pil": PIL.Image.fromarray(image),
        "numpy_hwc": image,
        "numpy_chw": image.transpose(2, 0, 1),
        "tensor_chw": chw,
        "tensor_hwc": torch.from_numpy(image),
        "tensor_float": chw.float() / 255,
        "tensor_float_rounded": (chw.float() - 0.4).clamp(min=0) / 255,  # quantised with round(x * 255)
        "numpy_float64": image.astype(np.float64) / 255,
    }
    for name, form in forms.items():
        assert max_diff(SamImageProcessor()(form)["pixel_values"], expected) <= 1e-6, name


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I"])
def test_pil_modes_are_converted_to_rgb(mode):
    image = PIL.Image.fromarray(random_image(21, 34, seed=2)).convert(mode)
    expected = official_pixel_values(np.asarray(image.convert("RGB")))
    assert max_diff(SamImageProcessor()(image)["pixel_values"], expected) <= 1e-6


def test_gray_and_rgba_arrays_are_converted_to_rgb():
    gray = random_image(19, 30, seed=3, channels=0)
    rgba = random_image(19, 30, seed=4, channels=4)
    gray_rgb = official_pixel_values(np.repeat(gray[..., None], 3, axis=-1))
    processor = SamImageProcessor()
    assert max_diff(processor(gray)["pixel_values"], gray_rgb) <= 1e-6
    assert max_diff(processor(gray[..., None])["pixel_values"], gray_rgb) <= 1e-6
    assert max_diff(processor(rgba)["pixel_values"], official_pixel_values(np.ascontiguousarray(rgba[..., :3]))) <= 1e-6
    with pytest.raises(ValueError, match="images"):
        SamImageProcessor(do_convert_rgb=False)(gray)


def test_batch_of_different_sizes():
    images = [random_image(h, w, seed=h) for h, w in SIZES[:3]]
    out = SamImageProcessor()(images)
    assert out["pixel_values"].shape == (3, 3, 1024, 1024)
    for i, image in enumerate(images):
        assert max_diff(out["pixel_values"][i : i + 1], official_pixel_values(image)) <= 1e-6
        assert out["original_sizes"][i].tolist() == list(image.shape[:2])
    stacked = torch.from_numpy(np.stack([random_image(9, 14, seed=s) for s in range(2)])).permute(0, 3, 1, 2)
    batched = SamImageProcessor()(stacked)["pixel_values"]
    assert max_diff(batched, torch.cat([SamImageProcessor()(image)["pixel_values"] for image in stacked])) == 0


def test_custom_sizes_and_statistics_match_official():
    mean, std = [100.0, 110.5, 120.25], [50.0, 60.0, 70.0]
    image = random_image(333, 517, seed=5)
    expected = official_pixel_values(image, longest_edge=512, sam=official_sam(640, mean, std))
    processor = SamImageProcessor(
        size={"longest_edge": 512},
        pad_size={"height": 640, "width": 640},
        image_mean=[m / 255 for m in mean],
        image_std=[s / 255 for s in std],
    )
    assert torch.equal(processor(image)["pixel_values"], expected)
    # sam_hf's older layout: `longest_edge`, an integer `pad_size`, statistics on the 0-255 scale.
    legacy = SamImageProcessor(longest_edge=512, pad_size=640, image_mean=mean, image_std=std)
    assert legacy.to_dict() == processor.to_dict()
    assert torch.equal(legacy(image)["pixel_values"], expected)


def test_default_statistics_are_imagenet_on_the_0_1_scale():
    """Regression: transformers-style options without statistics once gave mean/std multiplied by 255."""
    processor = SamImageProcessor(size={"longest_edge": 1024})
    assert processor.image_mean == (0.485, 0.456, 0.406) and processor.image_std == (0.229, 0.224, 0.225)
    image = random_image(48, 64, seed=12)
    assert torch.equal(processor(image)["pixel_values"], official_pixel_values(image))


def test_bundled_legacy_config_loads_with_equal_pixels():
    """The bundled model's processor was saved in sam_hf's older layout (`longest_edge`, 0-255 statistics)."""
    path = Path(__file__).resolve().parents[1] / "src" / "sam_hf" / "bundled" / "sam-hf-shapes"
    loaded = SamProcessor.from_pretrained(path)
    assert loaded.image_processor.size == {"longest_edge": 128}
    assert loaded.image_processor.pad_size == {"height": 128, "width": 128}
    image = random_image(90, 70, seed=13)
    assert torch.equal(loaded(image)["pixel_values"], official_pixel_values(image, 128, official_sam(128)))


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_resize_coordinates_match_official(height, width):
    rng = np.random.default_rng(height)
    coords = rng.uniform(0, max(height, width), (4, 3, 2)).astype(np.float32)
    boxes = np.sort(rng.uniform(0, max(height, width), (5, 2, 2)), axis=1).reshape(5, 4)
    transform, processor = ResizeLongestSide(1024), SamImageProcessor()
    expected_coords = torch.as_tensor(transform.apply_coords(coords, (height, width)), dtype=torch.float)
    assert torch.equal(processor.resize_coordinates(coords, (height, width)), expected_coords)
    expected_boxes = torch.as_tensor(transform.apply_boxes(boxes, (height, width)), dtype=torch.float)
    got_boxes = processor.resize_coordinates(torch.as_tensor(boxes).view(-1, 2, 2), (height, width)).view(-1, 4)
    assert torch.equal(got_boxes, expected_boxes)


def test_processor_prompts_match_official():
    rng = np.random.default_rng(6)
    images = [random_image(333, 517, seed=6), random_image(700, 301, seed=7)]
    points = [rng.uniform(0, 300, (2, 3, 2)) for _ in images]
    labels = [rng.integers(0, 2, (2, 3)) for _ in images]
    boxes = [np.sort(rng.uniform(0, 300, (2, 2, 2)), axis=1).reshape(2, 4) for _ in images]
    as_lists = dict(input_points=[p.tolist() for p in points], input_labels=[lab.tolist() for lab in labels])
    out = SamProcessor()(images, input_boxes=[b.tolist() for b in boxes], **as_lists)
    transform = ResizeLongestSide(1024)
    for i, image in enumerate(images):
        size = image.shape[:2]
        assert torch.equal(out["input_points"][i], torch.as_tensor(transform.apply_coords(points[i], size)).float())
        assert torch.equal(out["input_boxes"][i], torch.as_tensor(transform.apply_boxes(boxes[i], size)).float())
        assert torch.equal(out["input_labels"][i], torch.as_tensor(labels[i]))
    assert out["input_points"].dtype == out["input_boxes"].dtype == torch.float32
    assert out["input_labels"].dtype == torch.int64
    assert torch.equal(out["pixel_values"], SamImageProcessor()(images)["pixel_values"])
    # Prompts for already-embedded images: sizes given instead of images.
    without_images = SamProcessor()(original_sizes=out["original_sizes"], **as_lists)
    assert set(without_images) == {"input_points", "input_labels"}
    assert torch.equal(without_images["input_points"], out["input_points"])
    from_tensors = SamProcessor()(images, input_points=torch.as_tensor(np.stack(points)))
    assert torch.equal(from_tensors["input_points"], out["input_points"])


def test_ragged_points_are_padded():
    points = [[[[10, 20]], [[30, 40], [50, 60], [70, 80]]]]
    size = (100, 200)
    out = SamProcessor()(original_sizes=[size], input_points=points, input_labels=[[[0], [1, 0, 1]]])
    assert out["input_points"].shape == (1, 2, 3, 2)
    assert out["input_labels"][0, 0].tolist() == [0, PAD_LABEL, PAD_LABEL]
    assert out["input_labels"][0, 1].tolist() == [1, 0, 1]
    assert not out["input_points"][0, 0, 1:].any()
    transform = ResizeLongestSide(1024)
    for j, prompt in enumerate(points[0]):
        expected = torch.as_tensor(transform.apply_coords(np.array(prompt), size)).float()
        assert torch.equal(out["input_points"][0, j, : len(prompt)], expected)
    default_labels = SamProcessor()(original_sizes=[size], input_points=points)["input_labels"]
    assert default_labels[0].tolist() == [[FOREGROUND_LABEL, PAD_LABEL, PAD_LABEL], [FOREGROUND_LABEL] * 3]


def test_post_process_masks_match_official():
    images = [random_image(333, 517, seed=8), random_image(7, 5, seed=9)]
    processor = SamProcessor()
    encoding = processor(images)
    logits = torch.randn(2, 2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 4
    logits[..., :64, :] = 0  # exactly at the threshold: not part of the mask
    sam = official_sam()
    expected = [
        Sam.postprocess_masks(sam, logits[i], tuple(encoding["reshaped_input_sizes"][i].tolist()), image.shape[:2])
        for i, image in enumerate(images)
    ]
    sizes = (encoding["original_sizes"], encoding["reshaped_input_sizes"])
    upscaled = processor.post_process_masks(logits, *sizes, binarize=False)
    binary = processor.post_process_masks(list(logits), *sizes)
    thresholded = processor.post_process_masks(logits, *sizes, mask_threshold=1.5)
    for i in range(len(images)):
        assert max_diff(upscaled[i], expected[i]) <= 1e-5
        assert binary[i].dtype == torch.bool
        assert torch.equal(binary[i], expected[i] > 0)
        assert torch.equal(thresholded[i], expected[i] > 1.5)


def test_image_processor_save_load_round_trip(tmp_path):
    processor = SamImageProcessor(
        size={"longest_edge": 512}, pad_size={"height": 640, "width": 600}, image_mean=[0.1, 0.2, 0.3], image_std=0.5
    )
    processor.save_pretrained(tmp_path)
    loaded = SamImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SamImageProcessor
    assert loaded.to_dict() == processor.to_dict()
    image = random_image(40, 30, seed=10)
    assert torch.equal(loaded(image)["pixel_values"], processor(image)["pixel_values"])
    overridden = SamImageProcessor.from_pretrained(tmp_path, size={"longest_edge": 256}, pad_size=320)
    assert (overridden.size["longest_edge"], overridden.pad_size) == (256, {"height": 320, "width": 320})
    assert overridden.image_mean == processor.image_mean
    legacy_override = SamImageProcessor.from_pretrained(tmp_path, longest_edge=300)
    assert legacy_override.size == {"longest_edge": 300} and legacy_override.image_std == 0.5
    with pytest.raises(ValueError, match="size"):  # overrides are validated like constructor arguments
        SamImageProcessor.from_pretrained(tmp_path, size={"longest_edge": 1024})


def test_processor_save_load_round_trip_and_auto_classes(tmp_path):
    register_auto_classes()
    register_auto_classes()  # idempotent
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": 256}, pad_size=256))
    processor.save_pretrained(tmp_path)
    for loaded in (SamProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is SamProcessor
        assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
    auto_image_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(auto_image_processor) is SamImageProcessor
    assert auto_image_processor.to_dict() == processor.image_processor.to_dict()


def test_loads_transformers_sam_processor_config(tmp_path):
    """`facebook/sam-vit-*` ship transformers' SAM preprocessor config (0-1 statistics, `size` / `pad_size` dicts)."""
    TransformersSamProcessor(SamImageProcessorPil()).save_pretrained(tmp_path / "processor")
    SamImageProcessorPil().save_pretrained(tmp_path / "image_processor")
    image = random_image(333, 517, seed=11)
    expected = official_pixel_values(image)
    loaded = [SamProcessor.from_pretrained(tmp_path / "processor").image_processor]
    loaded.append(SamImageProcessor.from_pretrained(tmp_path / "image_processor"))
    for image_processor in loaded:
        assert type(image_processor) is SamImageProcessor
        assert max_diff(image_processor(image)["pixel_values"], expected) <= 1e-6


BAD_IMAGES = {
    "zero_height": (np.zeros((0, 5, 3), np.uint8), ValueError),
    "zero_width_pil": (PIL.Image.new("RGB", (0, 4)), ValueError),
    "one_dim": (np.zeros(5, np.uint8), ValueError),
    "five_dim": (np.zeros((1, 2, 5, 5, 3), np.uint8), ValueError),
    "two_channels": (np.zeros((5, 6, 2), np.uint8), ValueError),
    "five_channel_tensor": (torch.zeros(5, 6, 5, dtype=torch.uint8), ValueError),
    "int16": (np.zeros((5, 6, 3), np.int16), TypeError),
    "nan": (np.full((5, 6, 3), np.nan, np.float32), ValueError),
    "float_above_one": (np.full((5, 6, 3), 2.0, np.float32), ValueError),
    "path_string": ("dog.jpg", TypeError),
    "empty_list": ([], ValueError),
    "nested_list": ([[np.zeros((5, 6, 3), np.uint8)]], TypeError),
}


@pytest.mark.parametrize("case", BAD_IMAGES)
def test_bad_images_raise(case):
    images, error = BAD_IMAGES[case]
    with pytest.raises(error, match="images"):
        SamImageProcessor()(images)
    with pytest.raises(error, match="images"):
        SamProcessor()(images)


ONE_IMAGE = {"original_sizes": [[100, 200]]}
BAD_PROMPTS = {  # case: (prompts, error, start of the message)
    "points_missing_two_levels": (dict(input_points=[[1, 2]]), ValueError, "input_points has too few"),
    "boxes_missing_batch_level": (dict(input_boxes=[[1, 2, 3, 4]]), ValueError, "input_boxes has too few"),
    "boxes_too_deep": (dict(input_boxes=[[[[[1, 2, 3, 4]]]]]), ValueError, "input_boxes has too many"),
    "points_too_deep": (dict(input_points=[[[[[1, 2]]]]]), ValueError, "input_points has too many"),
    "points_three_coordinates": (dict(input_points=[[[[1, 2, 3]]]]), ValueError, "input_points entries must have 2"),
    "points_non_numeric": (dict(input_points=[[[["a", 2]]]]), TypeError, "input_points must contain numbers"),
    "points_nan": (dict(input_points=[[[[math.nan, 2]]]]), ValueError, "input_points contains NaN"),
    "points_inf": (dict(input_points=[[[[math.inf, 2]]]]), ValueError, "input_points contains NaN or infinite"),
    "points_empty_prompt": (dict(input_points=[[[]]]), ValueError, "input_points must not contain empty"),
    "points_batch_mismatch": (dict(input_points=[[[[1, 2]]], [[[3, 4]]]]), ValueError, "input_points must have one"),
    "boxes_x2_below_x1": (dict(input_boxes=[[[5, 1, 2, 4]]]), ValueError, "input_boxes must be x1, y1, x2, y2"),
    "boxes_y2_below_y1": (dict(input_boxes=[[[1, 5, 2, 4]]]), ValueError, "input_boxes must be x1, y1, x2, y2"),
    "boxes_three_coordinates": (dict(input_boxes=[[[1, 2, 3]]]), ValueError, "input_boxes entries must have 4"),
    "boxes_nan": (dict(input_boxes=[[[1, 2, math.nan, 4]]]), ValueError, "input_boxes contains NaN"),
    "boxes_other_prompt_count": (
        dict(input_points=[[[[1, 2]]]], input_boxes=[[[1, 2, 3, 4], [1, 2, 3, 4]]]),
        ValueError,
        "input_boxes and input_points must describe the same prompts",
    ),
    "labels_count_mismatch": (
        dict(input_points=[[[[1, 2], [3, 4]]]], input_labels=[[[1]]]),
        ValueError,
        "input_labels must have one label per point",
    ),
    "labels_bad_value": (dict(input_points=[[[[1, 2]]]], input_labels=[[[2]]]), ValueError, "input_labels must be 1"),
    "labels_not_integer": (
        dict(input_points=[[[[1, 2]]]], input_labels=[[[0.5]]]),
        ValueError,
        "input_labels must be integers",
    ),
    "labels_without_points": (dict(input_labels=[[[1]]]), ValueError, "input_labels were given without"),
}


@pytest.mark.parametrize("case", BAD_PROMPTS)
def test_bad_prompts_raise(case):
    prompts, error, message = BAD_PROMPTS[case]
    with pytest.raises(error, match=f"^{message}"):
        SamProcessor()(**ONE_IMAGE, **prompts)


def test_images_need_the_same_number_of_prompts():
    images = [random_image(10, 12, seed=s) for s in range(2)]
    points = [[[[1, 2]]], [[[1, 2]], [[3, 4]]]]
    with pytest.raises(ValueError, match="input_points: all images need the same number of prompts"):
        SamProcessor()(images, input_points=points)
    with pytest.raises(ValueError, match="input_boxes: all images need the same number of prompts"):
        SamProcessor()(original_sizes=[[10, 12]] * 2, input_boxes=[[[1, 2, 3, 4]], [[1, 2, 3, 4]] * 2])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(input_points=[[[[1, 2]]]]),  # no images, no sizes
        dict(original_sizes=[[100]], input_points=[[[[1, 2]]]]),
        dict(original_sizes=[[0, 100]], input_points=[[[[1, 2]]]]),
        dict(images=np.zeros((5, 6, 3), np.uint8), original_sizes=[[5, 6]]),
    ],
)
def test_bad_original_sizes_raise(kwargs):
    with pytest.raises(ValueError, match="original_sizes"):
        SamProcessor()(**kwargs)


def test_bad_calls_raise():
    with pytest.raises(ValueError, match="Nothing to process"):
        SamProcessor()()
    with pytest.raises(ValueError, match="return_tensors"):
        SamImageProcessor()(np.zeros((5, 6, 3), np.uint8), return_tensors="tf")
    with pytest.raises(ValueError, match="size longest_edge 2048 does not fit in pad_size"):
        SamImageProcessor(size={"longest_edge": 2048}, pad_size=1024)
    with pytest.raises(ValueError, match="cannot honour"):
        SamImageProcessor(do_center_crop=True)
    with pytest.raises(TypeError, match="unknown options"):
        SamImageProcessor()(np.zeros((5, 6, 3), np.uint8), foo=1)
    with pytest.raises(TypeError, match="image_processor"):
        SamProcessor(SamImageProcessorPil())


@pytest.mark.parametrize(
    ("masks", "original_sizes", "reshaped_sizes", "argument"),
    [
        (torch.zeros(2, 3, 256, 256), [[10, 20]], [[512, 1024]], "masks"),  # missing the batch axis
        (torch.zeros(2, 1, 3, 256, 256), [[10, 20]], [[512, 1024]], "masks"),  # one size for two images
        (torch.zeros(1, 1, 3, 256, 256), [[10, 20, 30]], [[512, 1024]], "original_sizes"),
        (torch.zeros(1, 1, 3, 256, 256), [[10, 20]], [[512, 2048]], "reshaped_input_sizes"),
        (torch.zeros(1, 1, 3, 256, 256), [[10, 20]], [[-1, 1024]], "reshaped_input_sizes"),
    ],
)
def test_bad_post_process_inputs_raise(masks, original_sizes, reshaped_sizes, argument):
    with pytest.raises(ValueError, match=argument):
        SamProcessor().post_process_masks(masks, original_sizes, reshaped_sizes)


def test_processor_that_does_not_fit_the_model_raises_where_they_meet():
    """A processor padding to another size than the model's square input fails with a clear error in the predictor,
    the everything-mode generator and the pipelines, not deep in torch; `for_config` always fits."""
    model = SamModel(tiny_config())  # 128 x 128 input
    SamProcessor.for_config(model.config).image_processor.check_model_input(128)
    for processor in (SamProcessor(), SamProcessor(SamImageProcessor(size={"longest_edge": 128}, do_pad=False))):
        with pytest.raises(ValueError, match="the model takes 128x128 images"):
            SamPredictor(model, processor)
        with pytest.raises(ValueError, match="the model takes 128x128 images"):
            SamAutomaticMaskGenerator(model, processor=processor)
        with pytest.raises(ValueError, match="the model takes 128x128 images"):
            pipeline("promptable-mask-generation", model=model, image_processor=processor.image_processor)
