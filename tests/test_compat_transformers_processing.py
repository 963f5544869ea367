"""transformers' own SAM image-processor and processor tests (tests/models/sam/test_image_processing_sam.py,
test_processing_sam.py and the common image-processor / processor mixins they run), its integration tests' and
documentation's call forms, run against sam_hf's classes; the numbers are compared with transformers'
`SamImageProcessorPil` (the backend equal to the official pipeline) and `SamProcessor`, the labels with both backends.

Ported test cases are marked "port:" with the transformers test they come from.
"""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoImageProcessor, SamImageProcessorPil
from transformers import SamImageProcessor as TransformersSamImageProcessor
from transformers import SamProcessor as TransformersSamProcessor

from sam_hf.processing import SamImageProcessor, SamProcessor, register_auto_classes
from tests.helpers import hub_preprocessor_config

# port: SamImageProcessingTester (options of transformers' image processor tests).
TESTER_OPTIONS = {
    "size": {"longest_edge": 20},
    "pad_size": {"height": 20, "width": 20},
    "mask_size": {"longest_edge": 12},
    "mask_pad_size": {"height": 12, "width": 12},
}
ATTRIBUTES = (
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_pad",
    "pad_size",
    "mask_size",
    "mask_pad_size",
    "do_convert_rgb",
)
# transformers' float path (rescale, then normalise) rounds differently from the official one sam_hf follows.
PIXEL_ATOL = 2e-6


def image_inputs(kind: str = "pil", count: int = 3, seed: int = 0, channels: int = 3) -> list:
    """port: prepare_image_inputs (random sizes, PIL / numpy HxWxC / torch CxHxW)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        height, width = rng.integers(30, 80, 2)
        array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        images.append(
            {"pil": PIL.Image.fromarray(array), "np": array, "pt": torch.from_numpy(array).permute(2, 0, 1)}[kind]
        )
    return images


def segmentation_maps_for(images: list, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 5, np.asarray(image).shape[:2], dtype=np.uint8) for image in images]


def assert_same_encoding(ours, theirs, atol: float = PIXEL_ATOL) -> None:
    """Same keys, shapes and (up to float rounding of the pixels) values."""
    assert set(ours) == set(theirs), (set(ours), set(theirs))
    for key in ours:
        a, b = torch.as_tensor(np.asarray(ours[key])), torch.as_tensor(np.asarray(theirs[key]))
        assert a.shape == b.shape, (key, a.shape, b.shape)
        if key == "pixel_values" and a.is_floating_point():
            torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=0)
        else:
            assert torch.equal(a, b.to(a.dtype)), key


# ----------------------------------------------------------------------------------------------- image processor


def test_init_without_params_and_attributes():
    """port: test_init_without_params, test_image_processor_properties: every option, transformers' defaults."""
    ours, theirs = SamImageProcessor(), SamImageProcessorPil()
    for name in ATTRIBUTES:
        assert getattr(ours, name) == getattr(theirs, name), name
    configured = SamImageProcessor(**TESTER_OPTIONS)
    for name, value in TESTER_OPTIONS.items():
        assert getattr(configured, name) == value


def test_to_dict_and_json_string():
    """port: test_image_processor_to_json_string (and the same dict as transformers', but for the class name)."""
    for options in ({}, TESTER_OPTIONS, {"do_normalize": False, "image_mean": 0.5, "resample": 0}):
        ours = json.loads(SamImageProcessor(**options).to_json_string())
        theirs = json.loads(SamImageProcessorPil(**options).to_json_string())
        assert ours.pop("image_processor_type") == "SamHfImageProcessor"
        theirs.pop("image_processor_type")
        assert ours == theirs
        for key, value in options.items():
            assert ours[key] == value


def test_to_json_file_and_save_pretrained_round_trip(tmp_path):
    """port: test_image_processor_to_json_file, test_image_processor_from_and_save_pretrained,
    test_image_processor_save_load_with_autoimageprocessor."""
    register_auto_classes()
    first = SamImageProcessor(**TESTER_OPTIONS, do_rescale=False, image_std=[2.0, 3.0, 4.0])
    first.to_json_file(tmp_path / "image_processor.json")
    assert SamImageProcessor.from_json_file(tmp_path / "image_processor.json").to_dict() == first.to_dict()
    first.save_pretrained(tmp_path / "saved")
    for second in (
        SamImageProcessor.from_pretrained(tmp_path / "saved"),
        AutoImageProcessor.from_pretrained(tmp_path / "saved"),
    ):
        assert type(second) is SamImageProcessor
        assert second.to_dict() == first.to_dict()


def test_from_dict_kwargs_like_transformers():
    """`from_dict(..., **kwargs)`: options override, other names are ignored (or returned with
    `return_unused_kwargs`)."""
    saved = SamImageProcessor(**TESTER_OPTIONS).to_dict()
    ours, unused = SamImageProcessor.from_dict(saved, do_normalize=False, padding_value=1.0, return_unused_kwargs=True)
    theirs, their_unused = SamImageProcessorPil.from_dict(
        saved, do_normalize=False, padding_value=1.0, return_unused_kwargs=True
    )
    assert unused == their_unused and unused["padding_value"] == 1.0
    for name in ATTRIBUTES:
        assert getattr(ours, name) == getattr(theirs, name), name


@pytest.mark.parametrize("kind", ["pil", "np", "pt"])
def test_call_matches_transformers(kind):
    """port: test_call_pil, test_call_numpy, test_call_pytorch (shapes), with transformers' numbers."""
    images = image_inputs(kind)
    ours, theirs = SamImageProcessor(**TESTER_OPTIONS), SamImageProcessorPil(**TESTER_OPTIONS)
    single = ours(images[0], return_tensors="pt")
    assert single["pixel_values"].shape == (1, 3, 20, 20)
    assert_same_encoding(single, theirs(images[0], return_tensors="pt"))
    batched = ours(images, return_tensors="pt")
    assert batched["pixel_values"].shape == (3, 3, 20, 20)
    assert_same_encoding(batched, theirs(images, return_tensors="pt"))


def test_call_numpy_4_channels():
    """port: test_call_numpy_4_channels (channels_last, scalar statistics; shapes). sam_hf drops the alpha channel
    where transformers composites onto white, so the numbers are compared on opaque images."""
    images = image_inputs("np", channels=4)
    kwargs = dict(return_tensors="pt", input_data_format="channels_last", image_mean=0.0, image_std=1.0)
    ours = SamImageProcessor(**TESTER_OPTIONS)(images, **kwargs)
    assert ours["pixel_values"].shape == (3, 3, 20, 20)
    for image in images:
        image[..., 3] = 255
    ours = SamImageProcessor(**TESTER_OPTIONS)(images, **kwargs)
    assert_same_encoding(ours, SamImageProcessorPil(**TESTER_OPTIONS)(images, **kwargs))


def test_cast_dtype_device():
    """port: test_cast_dtype_device."""
    encoding = SamImageProcessor(**TESTER_OPTIONS)(image_inputs("pt"), return_tensors="pt")
    assert encoding.pixel_values.dtype == torch.float32 and encoding.pixel_values.device.type == "cpu"
    assert encoding.to(torch.float16).pixel_values.dtype == torch.float16
    assert encoding.to("cpu", torch.bfloat16).pixel_values.dtype == torch.bfloat16
    with pytest.raises(TypeError):
        encoding.to(torch.bfloat16, "cpu")


def test_unknown_preprocess_argument_raises():
    """port: test_image_processor_preprocess_arguments (an unknown keyword raises a TypeError, as in transformers)."""
    image = image_inputs("np", count=1)[0]
    with pytest.raises(TypeError):
        SamImageProcessorPil()(image, extra_argument=True)
    with pytest.raises(TypeError, match="extra_argument"):
        SamImageProcessor()(image, extra_argument=True)


def test_call_segmentation_maps():
    """port: test_call_segmentation_maps (shapes, dtype, range), with transformers' labels."""
    images = image_inputs("pt")
    maps = [torch.zeros(image.shape[-2:]).long() for image in images]
    processor = SamImageProcessor(**TESTER_OPTIONS)
    single = processor(images[0], maps[0], return_tensors="pt")
    assert single["pixel_values"].shape == (1, 3, 20, 20)
    assert single["labels"].shape == (1, 12, 12) and single["labels"].dtype == torch.long
    batched = processor(images, maps, return_tensors="pt")
    assert batched["labels"].shape == (3, 12, 12)
    pil_images = image_inputs("pil", seed=3)
    pil_maps = [PIL.Image.fromarray(m) for m in segmentation_maps_for(pil_images)]
    encoding = processor(pil_images, pil_maps, return_tensors="pt")
    assert encoding["labels"].min() >= 0 and encoding["labels"].max() <= 255
    assert_same_encoding(encoding, SamImageProcessorPil(**TESTER_OPTIONS)(pil_images, pil_maps, return_tensors="pt"))


@pytest.mark.parametrize("batched", [False, True])
def test_backends_equivalence(batched):
    """port: test_backends_equivalence(_batched): sam_hf against both transformers backends (pixels within their
    tolerance, labels equal)."""
    images = image_inputs("pil", count=2 if batched else 1, seed=4)
    maps = segmentation_maps_for(images, seed=5)
    ours = SamImageProcessor(**TESTER_OPTIONS)(images, segmentation_maps=maps, return_tensors="pt")
    for backend in (SamImageProcessorPil, TransformersSamImageProcessor):
        theirs = backend(**TESTER_OPTIONS)(images, segmentation_maps=maps, return_tensors="pt")
        torch.testing.assert_close(ours.pixel_values, theirs.pixel_values, atol=1e-1, rtol=0)
        assert (ours.pixel_values - theirs.pixel_values).abs().mean() <= 1e-3
        assert torch.equal(ours.labels, theirs.labels)


def test_segmentation_map_forms():
    """PIL modes "L", "P" and "1" (the documentation's `.convert("1")`), uint8 / bool / int64 arrays and tensors."""
    image = image_inputs("np", count=1, seed=6)[0]
    label_map = segmentation_maps_for([image], seed=7)[0]
    forms = {
        "L": PIL.Image.fromarray(label_map),
        "P": PIL.Image.fromarray(label_map).convert("P"),
        "1": PIL.Image.fromarray(label_map * 60).convert("1"),
        "bool": label_map > 2,
        "int64_tensor": torch.from_numpy(label_map).long(),
        "channel_axis": label_map[None],
    }
    for name, form in forms.items():
        ours = SamImageProcessor()(image, segmentation_maps=form)["labels"]
        theirs = SamImageProcessorPil()(image, segmentation_maps=form, return_tensors="pt")["labels"]
        assert torch.equal(ours, theirs), name
    with pytest.raises(ValueError, match="0-255"):
        SamImageProcessor()(image, segmentation_maps=label_map.astype(np.int64) * 100)
    with pytest.raises(ValueError, match="one map per image"):
        SamImageProcessor()(image, segmentation_maps=[label_map, label_map])


OPTION_CASES = {  # every option of transformers' SamImageProcessor, off its default
    "no_resize": {"do_resize": False},
    "no_rescale": {"do_rescale": False},
    "no_normalize": {"do_normalize": False},
    "no_rescale_no_normalize": {"do_rescale": False, "do_normalize": False},
    "rescale_factor": {"rescale_factor": 1 / 127.5, "image_mean": 1.0, "image_std": 1.0},
    "statistics": {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]},
    "no_pad_square_image": {"do_pad": False},
    "non_square_pad": {"pad_size": {"height": 1024, "width": 1100}},
    "resample_nearest": {"resample": 0},
    "resample_bicubic": {"resample": PIL.Image.Resampling.BICUBIC},
    "longest_edge": {"size": {"longest_edge": 300}, "pad_size": {"height": 320, "width": 310}},
    "mask_sizes": {"mask_size": {"longest_edge": 64}, "mask_pad_size": {"height": 70, "width": 80}},
    "no_convert_rgb": {"do_convert_rgb": False},
}


@pytest.mark.parametrize("case", OPTION_CASES)
def test_every_option_matches_transformers(case):
    """Each option given to the constructor and per call gives transformers' pixels and labels."""
    options = OPTION_CASES[case]
    side = 60 if case == "no_pad_square_image" else None
    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, (side or 45, side or 70, 3), dtype=np.uint8)
    label_map = rng.integers(0, 4, image.shape[:2], dtype=np.uint8)
    theirs = SamImageProcessorPil(**options)(image, segmentation_maps=label_map, return_tensors="pt")
    for ours in (
        SamImageProcessor(**options)(image, segmentation_maps=label_map),
        SamImageProcessor()(image, segmentation_maps=label_map, **options),
    ):
        assert_same_encoding(ours, theirs, atol=1e-4 if case == "no_rescale" else PIXEL_ATOL)


def test_options_that_cannot_be_honoured_raise():
    image = np.zeros((600, 500, 3), np.uint8)
    with pytest.raises(ValueError, match="pad_size"):  # the resized image does not fit the padding
        SamImageProcessor(size={"longest_edge": 1024}, pad_size={"height": 512, "width": 1024})(image)
    with pytest.raises(ValueError, match="do_pad=False"):
        SamImageProcessor(do_pad=False)([image, np.zeros((5, 6, 3), np.uint8)])
    with pytest.raises(ValueError, match="size must be"):
        SamImageProcessor(size={"height": 512, "width": 512})
    with pytest.raises(ValueError, match="cannot honour"):
        SamImageProcessor(do_center_crop=True, crop_size={"height": 5, "width": 5})
    with pytest.raises(ValueError, match="resample"):
        SamImageProcessor(resample=17)
    with pytest.raises(ValueError, match="image_std"):
        SamImageProcessor(image_std=[1.0, 0.0, 1.0])
    with pytest.raises(TypeError, match="do_normalize"):
        SamImageProcessor(do_normalize="no")


@pytest.mark.parametrize("return_tensors", ["pt", "np"])
def test_return_tensors(return_tensors):
    image = image_inputs("np", count=1, seed=9)[0]
    maps = segmentation_maps_for([image])
    ours = SamImageProcessor(**TESTER_OPTIONS)(image, maps, return_tensors=return_tensors)
    theirs = SamImageProcessorPil(**TESTER_OPTIONS)(image, maps, return_tensors=return_tensors)
    array_type = torch.Tensor if return_tensors == "pt" else np.ndarray
    assert all(isinstance(value, array_type) for value in ours.values())
    assert {k: v.dtype for k, v in ours.items()} == {k: v.dtype for k, v in theirs.items()}
    assert_same_encoding(ours, theirs)


# ------------------------------------------------------------------------------------------- saved configurations


def test_sam_hf_config_loads_in_transformers(tmp_path):
    """A sam_hf-saved processor loads in transformers' SamImageProcessor (by class) and SamProcessor (by name, with
    sam_hf registered), with equal pixel values."""
    register_auto_classes()
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": 512}, pad_size={"height": 512, "width": 600}))
    processor.save_pretrained(tmp_path)
    image = image_inputs("np", count=1, seed=10)[0]
    expected = processor(image)
    transformers_image_processor = SamImageProcessorPil.from_pretrained(tmp_path)
    assert_same_encoding(expected, transformers_image_processor(image, return_tensors="pt"))
    transformers_processor = TransformersSamProcessor.from_pretrained(tmp_path)
    theirs = transformers_processor(images=image, input_points=[[[10, 20]]], return_tensors="pt")
    ours = processor(images=image, input_points=[[[10, 20]]])
    assert torch.equal(theirs["pixel_values"], ours["pixel_values"])
    assert torch.equal(theirs["input_points"].float(), ours["input_points"])


def test_transformers_config_loads_in_sam_hf(tmp_path):
    """port: test_save_load_pretrained_additional_features, and transformers' saved processor loaded by sam_hf."""
    TransformersSamProcessor(SamImageProcessorPil(**TESTER_OPTIONS)).save_pretrained(tmp_path)
    image = image_inputs("np", count=1, seed=11)[0]
    loaded = SamProcessor.from_pretrained(tmp_path)
    assert type(loaded.image_processor) is SamImageProcessor
    assert_same_encoding(loaded(image), SamImageProcessorPil(**TESTER_OPTIONS)(image, return_tensors="pt"))
    with_kwargs = SamProcessor.from_pretrained(tmp_path, do_normalize=False, padding_value=1.0)
    expected = SamImageProcessor.from_pretrained(tmp_path, do_normalize=False, padding_value=1.0)
    assert with_kwargs.image_processor.to_json_string() == expected.to_json_string()
    assert with_kwargs.image_processor.do_normalize is False


def test_hub_preprocessor_config_loads(tmp_path):
    """The `facebook/sam-vit-*` preprocessor_config.json (no mask sizes) gives the official pixels."""
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(hub_preprocessor_config()))
    image = image_inputs("np", count=1, seed=12)[0]
    theirs = SamImageProcessorPil.from_pretrained(tmp_path)(image, return_tensors="pt")
    for loaded in (SamProcessor.from_pretrained(tmp_path).image_processor, SamImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is SamImageProcessor
        assert loaded.to_dict() == {**SamImageProcessor().to_dict()}
        assert_same_encoding(loaded(image), theirs)


# ------------------------------------------------------------------------------------------------------ processor


def test_processor_image_processor_no_masks():
    """port: test_image_processor_no_masks (pt, and np as in its earlier version)."""
    image_processor = SamImageProcessor()
    processor = SamProcessor(image_processor)
    image = [PIL.Image.fromarray(np.random.default_rng(13).integers(0, 256, (30, 400, 3), dtype=np.uint8))]
    for return_tensors in ("pt", "np"):
        from_image_processor = image_processor(image, return_tensors=return_tensors)
        from_processor = processor(images=image, return_tensors=return_tensors)
        for key in from_image_processor:
            assert abs(from_image_processor[key].sum() - from_processor[key].sum()) <= 1e-2
        assert from_image_processor.pixel_values[0].shape == (3, 1024, 1024)
        np.testing.assert_array_equal(from_image_processor.original_sizes[0], np.array([30, 400]))
        np.testing.assert_array_equal(from_image_processor.reshaped_input_sizes[0], np.array([77, 1024]))


def test_processor_image_processor_with_masks():
    """port: test_image_processor_with_masks."""
    image_processor = SamImageProcessor()
    processor = SamProcessor(image_processor)
    rng = np.random.default_rng(14)
    image = [PIL.Image.fromarray(rng.integers(0, 256, (30, 400, 3), dtype=np.uint8))]
    mask = [PIL.Image.fromarray(rng.integers(0, 255, (30, 400), dtype=np.uint8))]
    for return_tensors in ("pt", "np"):
        from_image_processor = image_processor(images=image, segmentation_maps=mask, return_tensors=return_tensors)
        from_processor = processor(images=image, segmentation_maps=mask, return_tensors=return_tensors)
        for key in from_image_processor:
            assert abs(from_image_processor[key].sum() - from_processor[key].sum()) <= 1e-2
        assert from_image_processor.labels[0].shape == (256, 256)
    theirs = TransformersSamProcessor(SamImageProcessorPil())(images=image, segmentation_maps=mask, return_tensors="pt")
    assert torch.equal(processor(images=image, segmentation_maps=mask)["labels"], theirs["labels"])


def test_post_process_masks():
    """port: test_post_process_masks (torch / numpy masks and sizes, the TypeError for other masks)."""
    processor = SamProcessor()
    dummy_masks = [torch.ones((1, 3, 5, 5))]
    original_sizes, reshaped_input_size = [[1764, 2646]], [[683, 1024]]
    masks = processor.post_process_masks(dummy_masks, original_sizes, reshaped_input_size)
    assert masks[0].shape == (1, 3, 1764, 2646)
    masks = processor.post_process_masks(dummy_masks, torch.tensor(original_sizes), torch.tensor(reshaped_input_size))
    assert masks[0].shape == (1, 3, 1764, 2646)
    masks = processor.post_process_masks(
        [np.ones((1, 3, 5, 5))], np.array(original_sizes), np.array(reshaped_input_size)
    )
    assert masks[0].shape == (1, 3, 1764, 2646)
    for post_process_masks in (processor.post_process_masks, SamImageProcessorPil().post_process_masks):
        with pytest.raises(TypeError):
            post_process_masks([[1, 0], [0, 1]], np.array(original_sizes), np.array(reshaped_input_size))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"binarize": False},
        {"mask_threshold": 0.7},
        {"pad_size": {"height": 1024, "width": 1100}, "binarize": False},
    ],
)
@pytest.mark.parametrize("as_numpy", [False, True])
def test_post_process_masks_match_transformers(kwargs, as_numpy):
    logits = torch.randn(2, 2, 3, 16, 16, generator=torch.Generator().manual_seed(15)) * 3
    original_sizes, reshaped_sizes = torch.tensor([[60, 90], [41, 23]]), torch.tensor([[683, 1024], [1024, 574]])
    masks = [m.numpy() for m in logits] if as_numpy else logits
    ours = SamProcessor().post_process_masks(masks, original_sizes, reshaped_sizes, **kwargs)
    theirs = SamImageProcessorPil().post_process_masks(list(masks), original_sizes, reshaped_sizes, **kwargs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_non_square_pad_size_post_processing_uses_the_pad_size():
    """A non-square `pad_size` is upscaled to as transformers does; the model-side check names the mismatch."""
    pad_size = {"height": 512, "width": 640}
    processor = SamProcessor(SamImageProcessor(size={"longest_edge": 512}, pad_size=pad_size))
    logits = torch.randn(1, 1, 1, 16, 20, generator=torch.Generator().manual_seed(16))
    sizes = (torch.tensor([[300, 500]]), torch.tensor([[307, 512]]))
    theirs = SamImageProcessorPil(size={"longest_edge": 512}, pad_size=pad_size).post_process_masks(logits, *sizes)
    assert torch.equal(processor.post_process_masks(logits, *sizes)[0], theirs[0])
    with pytest.raises(ValueError, match="the model takes 512x512 images"):
        processor.image_processor.check_model_input(512)
    SamProcessor(SamImageProcessor(size={"longest_edge": 512}, pad_size=512)).image_processor.check_model_input(512)


def car_and_dog() -> list[np.ndarray]:
    rng = np.random.default_rng(17)
    return [rng.integers(0, 256, (1764, 2646, 3), dtype=np.uint8), rng.integers(0, 256, (600, 640, 3), dtype=np.uint8)]


CALL_FORMS = {  # port: SamModelIntegrationTest and the documentation's processor calls
    "one_point_one_bb": (1, {"input_boxes": [[[650, 900, 1000, 1250]]], "input_points": [[[820, 1080]]]}),
    "batched_points_batched_images": (
        2,
        {
            "input_points": [
                [[[820, 1080]], [[820, 1080]], [[820, 1080]], [[820, 1080]]],
                [[[510, 1080]], [[820, 1080]], [[820, 1080]], [[820, 1080]]],
            ]
        },
    ),
    "one_point_one_bb_zero": (
        1,
        {"input_boxes": [[[620, 900, 1000, 1255]]], "input_points": [[[820, 1080]]], "input_labels": [[0]]},
    ),
    "one_point": (1, {"input_points": [[[400, 650]]], "input_labels": [[1]]}),
    "one_point_no_label": (1, {"input_points": [[[400, 650]]]}),
    "two_points": (1, {"input_points": [[[400, 650], [800, 650]]], "input_labels": [[1, 1]]}),
    "two_points_no_labels": (1, {"input_points": [[[400, 650], [800, 650]]]}),
    "one_box": (1, {"input_boxes": [[[75, 275, 1725, 850]]]}),
    "batched_image_one_point": (2, {"input_points": [[[820, 1080]], [[220, 470]]]}),
    "two_points_point_batch_tensor": (1, {"input_points": torch.Tensor([[[400, 650]], [[220, 470]]]).unsqueeze(0)}),
    "three_boxes_point_batch_tensor": (
        1,
        {"input_boxes": torch.Tensor([[[620, 900, 1000, 1255]], [[75, 275, 1725, 850]], [[75, 275, 1725, 850]]])[None]},
    ),
    "doc_window_point": (1, {"input_points": [[[450, 600]]]}),
}


@pytest.mark.parametrize("case", CALL_FORMS)
def test_call_forms_match_transformers(case):
    """Every prompt nesting of transformers' integration tests and docs: same keys, shapes and numbers."""
    num_images, prompts = CALL_FORMS[case]
    images = car_and_dog()[:num_images]
    images = images[0] if num_images == 1 else images
    ours = SamProcessor()(images, **prompts)
    theirs = TransformersSamProcessor(SamImageProcessorPil())(images, return_tensors="pt", **prompts)
    if "input_points" in theirs and "input_labels" not in theirs:  # sam_hf always returns the (default) labels
        assert torch.equal(ours.pop("input_labels"), torch.ones(ours["input_points"].shape[:3], dtype=torch.int64))
    assert_same_encoding(ours, theirs)


def test_different_point_counts_per_image_are_padded():
    """port: test_inference_mask_generation_two_points_batched: transformers pads coordinates and labels with -10;
    sam_hf pads the label with -10 too (the point is then ignored, whatever its coordinates)."""
    images = car_and_dog()
    prompts = {"input_points": [[[400, 650], [800, 650]], [[400, 650]]], "input_labels": [[1, 1], [1]]}
    ours = SamProcessor()(images, **prompts)
    theirs = TransformersSamProcessor(SamImageProcessorPil())(images, return_tensors="pt", **prompts)
    assert ours["input_points"].shape == theirs["input_points"].shape == (2, 1, 2, 2)
    assert torch.equal(ours["input_labels"], theirs["input_labels"])
    assert torch.equal(ours["input_points"][0], theirs["input_points"][0].float())
    assert torch.equal(ours["input_points"][1, :, :1], theirs["input_points"][1, :, :1].float())
    with_minus_one = SamProcessor()(images, point_pad_value=-1, **prompts)["input_labels"]
    assert with_minus_one[1].tolist() == [[1, -1]]


def test_documentation_example_with_segmentation_map():
    """The documentation's `processor(raw_image, input_points=..., segmentation_maps=map.convert("1"))`."""
    image = car_and_dog()[1]
    segmentation_map = PIL.Image.fromarray(image[..., 0]).convert("1")
    prompts = {"input_points": [[[450, 600]]], "segmentation_maps": segmentation_map}
    ours = SamProcessor()(image, **prompts)
    theirs = TransformersSamProcessor(SamImageProcessorPil())(image, return_tensors="pt", **prompts)
    ours.pop("input_labels")
    assert_same_encoding(ours, theirs)


def test_processor_image_options_per_call():
    """transformers' processor passes image-processor options through the call."""
    image = car_and_dog()[1]
    ours = SamProcessor()(image, input_boxes=[[[1, 2, 30, 40]]], do_normalize=False)
    theirs = TransformersSamProcessor(SamImageProcessorPil())(
        image, input_boxes=[[[1, 2, 30, 40]]], do_normalize=False, return_tensors="pt"
    )
    assert_same_encoding(ours, theirs)


def test_processor_return_tensors_numpy():
    image = car_and_dog()[1]
    ours = SamProcessor()(image, input_points=[[[[450, 600]]]], return_tensors="np")
    assert all(isinstance(value, np.ndarray) for value in ours.values())
    pt = SamProcessor()(image, input_points=[[[[450, 600]]]])
    for key in ours:
        assert np.array_equal(ours[key], pt[key].numpy()), key


def test_transformers_processor_with_sam_hf_image_processor():
    """transformers' SamProcessor wrapping sam_hf's image processor (what `from_pretrained` gives it for a
    sam_hf-saved directory once sam_hf is registered)."""
    image = car_and_dog()[1]
    theirs = TransformersSamProcessor(SamImageProcessor())(image, input_boxes=[[[1, 2, 30, 40]]], return_tensors="pt")
    ours = SamProcessor()(image, input_boxes=[[[1, 2, 30, 40]]])
    assert torch.equal(theirs["pixel_values"], ours["pixel_values"])
    assert torch.equal(theirs["input_boxes"].float(), ours["input_boxes"])
