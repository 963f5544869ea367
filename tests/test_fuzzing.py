"""Fuzzing (hypothesis) of the public entry points: `SamProcessor.__call__`, `SamModel.forward` (tiny config),
`SamAutomaticMaskGenerator(...)` and `.generate`, `segment_text`, `SamPredictor.predict`, the CLI's `parse_point` /
`parse_box` and config values (`SamConfig` from dicts), with random shapes, dtypes, NaN / inf, huge and negative
coordinates, empty lists, mismatched batch sizes and random unicode.

The property: a call either succeeds with outputs of the documented shapes, or raises a `ValueError` / `TypeError`
whose message names one of the arguments the call was given (the CLI parsers: `argparse.ArgumentTypeError`, which
argparse reports with the flag's name). Any other exception fails, and so does a hang (hypothesis `deadline`, plus an
alarm that interrupts a call that never returns).

Every CI run checks a small, fixed (derandomized) sample. The thorough run draws fresh random examples, about
`SAM_HF_FUZZ_EXAMPLES` per test (fewer for the slow everything-mode and text tests; the totals are in README):

    SAM_HF_FUZZ_EXAMPLES=1000 OMP_NUM_THREADS=1 python -m pytest -q tests/test_fuzzing.py --hypothesis-show-statistics
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from sam_hf import SamAutomaticMaskGenerator, SamConfig, SamModel, SamPredictor, SamProcessor
from sam_hf.cli import parse_box, parse_point
from sam_hf.everything import OUTPUT_MODES, decode_segmentation
from sam_hf.predictor import EmbeddedImage
from sam_hf.processing.image_processing_sam import to_uint8_hwc
from sam_hf.prompts import POINT_LABELS
from sam_hf.text_to_mask import METHODS, TextSegmentation, segment_text
from tests.helpers import perturb_, tiny_clip_scorer, tiny_config, tiny_text_config

THOROUGH_EXAMPLES = int(os.environ.get("SAM_HF_FUZZ_EXAMPLES", "0"))  # 0: the CI sample
HANG_SECONDS = 120  # a call still running after this is a hang (the slowest legitimate one takes ~1 s)


def fuzz_settings(ci_examples: int, thorough_share: float = 1.0, deadline_s: float = 30) -> settings:
    """`ci_examples` per CI run (derandomized: the same sample every run); `SAM_HF_FUZZ_EXAMPLES * thorough_share`
    fresh random ones in the thorough run. The deadline is generous: it catches hangs, not slowness."""
    thorough = THOROUGH_EXAMPLES > 0
    return settings(
        max_examples=max(ci_examples, round(THOROUGH_EXAMPLES * thorough_share)) if thorough else ci_examples,
        derandomize=not thorough,
        deadline=timedelta(seconds=deadline_s),
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


class Hang(Exception):
    """Not a ValueError / TypeError: a call interrupted by the alarm fails the property."""


@contextmanager
def hang_guard(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Interrupts the block with `Hang` after `seconds` (the deadline alone only reports a call once it returns)."""

    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def call(fn: Callable[[], Any], names: set[str]) -> Any:
    """`fn()`'s result, or `None` when it raised a `ValueError`/`TypeError` naming one of `names` (the arguments the
    call was given); any other outcome fails the test."""
    try:
        with hang_guard(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. text truncated to the context length
            result = fn()
    except (ValueError, TypeError) as error:
        message = str(error)
        assert any(name in message for name in names), f"{type(error).__name__} names none of {sorted(names)}: {error}"
        record(f"refused: {type(error).__name__}")
        return None
    record("succeeded")
    return result


def record(outcome: str) -> None:
    """Counts outcomes: --hypothesis-show-statistics shows the split between successes and refusals."""
    if currently_in_test_context():
        event(outcome)


# --- shared strategies -----------------------------------------------------------------------------------------------

# Each example is either clean (well-formed arguments with random valid values: huge and negative coordinates
# included, so that the success path is fuzzed too) or hostile (anything, mostly slightly broken).
VALID_COORDINATES = st.one_of(st.integers(-3000, 3000), st.floats(-3000, 3000), st.integers(-(10**12), 10**12))
COORDINATES = st.one_of(
    VALID_COORDINATES,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),  # any size, also beyond the float range
    st.sampled_from([10**400, -(10**400), 1e308, -1e308, 2**63, 0.5, -0.0]),
)
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    st.just(object()),
    st.just({}),
)
# Unicode of every kind: lone surrogates, control and format characters, combining marks, spaces.
TEXTS = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Mn", "Zs", "Zl", "So"]), max_size=6),
    st.sampled_from(["", " ", "\n\t", "red circle", "blue square", "{}", "a" * 300]),
    st.text(min_size=100, max_size=300),
)
VALID_TEXTS = TEXTS.filter(lambda text: text.strip())
SEEDS = st.integers(0, 2**32 - 1)


def regular(value: Any) -> bool:
    """Whether nested lists of numbers form a regular (rectangular) array, convertible to numpy / torch."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return np.asarray(value).dtype.kind in "iuf"
    except (ValueError, TypeError, OverflowError, np.exceptions.VisibleDeprecationWarning):
        return False


@st.composite
def nested_numbers(
    draw: st.DrawFn, sizes: list[int], leaf: int | None, values: st.SearchStrategy, hostile: bool = True
) -> Any:
    """Nested lists `sizes` deep (then `leaf` values, if given) as lists, tuples, a numpy array or a tensor; if
    `hostile`, often broken: a level too many or too few, an empty list, a wrong leaf length, a ragged level, junk at
    a leaf."""
    dims = [*sizes, leaf] if leaf is not None else list(sizes)

    def build(level: int) -> Any:
        if level == len(dims):
            return draw(values)
        count = dims[level]
        if hostile and draw(st.integers(0, 9)) == 0:  # ragged or empty at this level
            count = draw(st.integers(0, 4))
        return [build(level + 1) for _ in range(count)]

    value = build(0)
    mutation = draw(st.sampled_from(["none"] * 6 + ["deeper", "shallower", "junk_leaf", "empty"])) if hostile else ""
    if mutation == "deeper":
        value = [value]
    elif mutation == "shallower" and isinstance(value, list) and value:
        value = value[0]
    elif mutation == "junk_leaf":
        target = value
        while isinstance(target, list) and target and isinstance(target[0], list):
            target = target[0]
        if isinstance(target, list) and target:
            target[0] = draw(JUNK)
    elif mutation == "empty":
        value = []
    container = draw(st.sampled_from(["list", "list", "tuple", "numpy", "tensor"]))
    if container == "tuple" and isinstance(value, list):
        return tuple(value)
    if container in ("numpy", "tensor") and regular(value):
        dtype = draw(st.sampled_from(["float64", "float32", "int64", "float16"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow to inf in float16 / float32: fine, it is fuzzing
            try:
                array = np.asarray(value, dtype=dtype)
            except (OverflowError, ValueError):  # NaN / huge ints do not fit int64
                return value
        return torch.from_numpy(array) if container == "tensor" else array
    return value


@st.composite
def valid_images(draw: st.DrawFn, max_side: int = 24) -> tuple[Any, tuple[int, int]]:
    """(an image in a documented form, its (height, width)): uint8 HWC / HW / CHW tensor, float in [0, 1], PIL;
    sometimes of an extreme aspect ratio."""
    side = st.one_of(st.integers(1, max_side), st.integers(1, max_side), st.sampled_from([1, 700]))
    height, width = draw(side), draw(side)
    if height * width > 700 * max_side:
        height = min(height, max_side)
    rng = np.random.default_rng(draw(SEEDS))
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    form = draw(st.sampled_from(["hwc", "hw", "chw_tensor", "float", "pil", "pil_gray", "rgba"]))
    image = {
        "hwc": lambda: pixels,
        "hw": lambda: pixels[..., 0],
        "chw_tensor": lambda: torch.from_numpy(pixels).permute(2, 0, 1),
        "float": lambda: pixels.astype(np.float32) / 255,
        "pil": lambda: PIL.Image.fromarray(pixels),
        "pil_gray": lambda: PIL.Image.fromarray(pixels[..., 0]),
        "rgba": lambda: np.concatenate([pixels, pixels[..., :1]], axis=-1),
    }[form]()
    return image, (height, width)


@st.composite
def images(draw: st.DrawFn, max_side: int = 24, hostile: bool = True) -> Any:
    """One image in a documented form, or (`hostile`) in any form: numpy / tensor (HWC, CHW), PIL in many modes,
    random dtypes and ranks, empty and extreme aspect ratios, NaN / inf / out-of-range floats; rarely junk."""
    if not hostile:
        return draw(valid_images(max_side))[0]
    form = draw(st.sampled_from(["numpy"] * 4 + ["tensor", "tensor_chw", "pil", "pil_mode", "junk"]))
    if form == "junk":
        return draw(JUNK)
    if form == "pil_mode":
        mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "CMYK", "I;16", "I", "F", "1", "LA", "YCbCr"]))
        size = (draw(st.integers(0, max_side)), draw(st.integers(0, max_side)))
        image = PIL.Image.new(mode, size)
        if mode == "P" and draw(st.booleans()):
            image.info["transparency"] = 0
        return image
    side = st.one_of(st.integers(0, max_side), st.sampled_from([1, 3, 4, 700]))
    ndim = draw(st.sampled_from([3, 3, 3, 2, 4, 1, 0]))
    shape = [draw(side) for _ in range(ndim)]
    if ndim == 3 and draw(st.booleans()):
        shape[2] = draw(st.sampled_from([1, 3, 4]))
    if ndim == 4:
        shape[0] = draw(st.integers(0, 2))
    if np.prod(shape) > 3 * 700 * max_side:  # two 700-pixel sides: pointlessly large
        shape = [min(s, max_side) for s in shape]
    dtype = draw(st.sampled_from(["uint8"] * 4 + ["float32", "float64", "float16", "int16", "int64", "bool"]))
    rng = np.random.default_rng(draw(SEEDS))
    array = np.asarray(rng.random(shape))
    if np.dtype(dtype).kind == "f" and array.size:
        special = draw(st.sampled_from(["none", "none", "nan", "inf", "out_of_range"]))
        array.flat[0] = {"none": array.flat[0], "nan": np.nan, "inf": np.inf, "out_of_range": 1.5}[special]
    else:
        array = array * 255
    array = np.asarray(array.astype(dtype))  # 0-d arrays become numpy scalars
    if form == "pil" and ndim in (2, 3) and dtype == "uint8" and (ndim == 2 or shape[2] in (3, 4)) and all(shape):
        return PIL.Image.fromarray(array)
    if form == "tensor":
        return torch.from_numpy(array)
    if form == "tensor_chw" and ndim == 3:
        return torch.from_numpy(array).permute(2, 0, 1)
    return array


# --- SamProcessor.__call__ -------------------------------------------------------------------------------------------

PROCESSOR = SamProcessor.for_config(tiny_config())  # 128 x 128 model input


@st.composite
def processor_arguments(draw: st.DrawFn) -> dict[str, Any]:
    hostile = draw(st.booleans())
    kwargs: dict[str, Any] = {}
    batch = draw(st.integers(1, 2))
    source = draw(st.sampled_from(["image", "images", "original_sizes"] + ["none"] * hostile))
    if source == "image":
        kwargs["images"], batch = draw(images(hostile=hostile)), 1
    elif source == "images":
        kwargs["images"] = draw(st.lists(images(hostile=hostile), min_size=0 if hostile else batch, max_size=batch))
    elif source == "original_sizes":
        sizes = st.one_of(st.integers(-5, 2000), COORDINATES) if hostile else st.integers(1, 5000)
        kwargs["original_sizes"] = draw(nested_numbers([batch], 2, sizes, hostile))
    if hostile and draw(st.integers(0, 9)) == 0:  # both, which is an error
        kwargs["images"], kwargs["original_sizes"] = draw(images()), [[10, 10]]
    if hostile:
        batch = draw(st.sampled_from([batch, batch, batch, batch + 1]))  # sometimes one image too many
    prompts, num_points = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    coordinates = COORDINATES if hostile else VALID_COORDINATES
    if draw(st.booleans()):
        kwargs["input_points"] = draw(nested_numbers([batch, prompts, num_points], 2, coordinates, hostile))
        if draw(st.booleans()):
            labels = st.one_of(st.sampled_from(POINT_LABELS), st.integers(-20, 5), COORDINATES)
            labels = labels if hostile else st.sampled_from(POINT_LABELS)
            kwargs["input_labels"] = draw(nested_numbers([batch, prompts, num_points], None, labels, hostile))
    elif hostile and draw(st.integers(0, 5)) == 0:  # labels without points
        kwargs["input_labels"] = [[[1]]]
    if draw(st.booleans()):
        if hostile:
            boxes = nested_numbers([batch, draw(st.sampled_from([prompts, 1])), 4], None, COORDINATES)
        else:  # x1 <= x2, y1 <= y2
            corners = st.lists(VALID_COORDINATES, min_size=4, max_size=4).map(
                lambda c: [min(c[0], c[2]), min(c[1], c[3]), max(c[0], c[2]), max(c[1], c[3])]
            )
            boxes = nested_numbers([batch, prompts], None, corners, hostile=False)
        kwargs["input_boxes"] = draw(boxes)
    if draw(st.integers(0, 2)) == 0:
        if hostile:
            kwargs["text"] = draw(
                st.one_of(
                    TEXTS,
                    st.lists(TEXTS, min_size=0, max_size=3),
                    st.lists(st.lists(TEXTS, min_size=0, max_size=3), min_size=0, max_size=batch),
                    JUNK,
                )
            )
        else:
            kwargs["text"] = [[draw(VALID_TEXTS) for _ in range(prompts)] for _ in range(batch)]
    if hostile and draw(st.integers(0, 19)) == 0:
        kwargs["return_tensors"] = draw(st.sampled_from(["np", "pt", None]))
    if not hostile and not set(kwargs) & {"images", "input_points", "input_boxes", "text"}:
        kwargs["input_points"] = [[[[1, 2]]]] * batch
    return kwargs


@fuzz_settings(ci_examples=120)
@given(kwargs=processor_arguments())
def test_processor(kwargs: dict[str, Any]) -> None:
    # A missing argument is named too: "Prompts without images need original_sizes", "Nothing to process: pass images".
    outputs = call(lambda: PROCESSOR(**kwargs), set(kwargs) | {"original_sizes", "images"})
    if outputs is None:
        return
    sizes = {len(value) for value in outputs.values()}
    assert len(sizes) == 1, {key: value.shape for key, value in outputs.items()}  # one batch size
    batch = sizes.pop()
    if "pixel_values" in outputs:
        assert outputs["pixel_values"].shape == (batch, 3, 128, 128) and outputs["pixel_values"].dtype == torch.float32
        assert torch.isfinite(outputs["pixel_values"]).all()
        for key in ("original_sizes", "reshaped_input_sizes"):
            assert outputs[key].shape == (batch, 2) and outputs[key].dtype == torch.int64 and (outputs[key] > 0).all()
        assert (outputs["reshaped_input_sizes"] <= 128).all()
    prompts = set()
    if "input_points" in outputs:
        points, labels = outputs["input_points"], outputs["input_labels"]
        assert points.ndim == 4 and points.shape[-1] == 2 and points.dtype == torch.float32
        assert labels.shape == points.shape[:3] and labels.dtype == torch.int64
        assert torch.isfinite(points).all() and torch.isin(labels, torch.tensor(POINT_LABELS)).all()
        prompts.add(points.shape[1])
    if "input_boxes" in outputs:
        boxes = outputs["input_boxes"]
        assert boxes.shape == (batch, boxes.shape[1], 4) and boxes.dtype == torch.float32
        assert torch.isfinite(boxes).all()
        prompts.add(boxes.shape[1])
    if "input_text_ids" in outputs:
        assert outputs["input_text_ids"].shape[2] == PROCESSOR.text_context_length
        assert outputs["input_text_ids"].dtype == torch.int64
        prompts.add(outputs["input_text_ids"].shape[1])
    assert len(prompts) <= 1 and 0 not in prompts  # the same prompts per image across points, boxes and text


# --- SamModel.forward ------------------------------------------------------------------------------------------------


# Built once, on first use (module-level rather than fixtures: hypothesis prints a failing test's arguments).
@functools.cache
def tiny_model() -> SamModel:
    torch.manual_seed(0)
    return perturb_(SamModel(tiny_config()), seed=7)


@functools.cache
def text_model() -> SamModel:
    torch.manual_seed(0)
    return perturb_(SamModel(tiny_text_config()), seed=3)


@functools.cache
def text_predictor() -> SamPredictor:
    return SamPredictor(text_model())


@functools.cache
def clips() -> dict[str, Any]:
    # threshold -1: every proposal matches, so the ranking and refinement paths run too.
    return {"matching": tiny_clip_scorer(threshold=-1.0, background=()), "default": tiny_clip_scorer()}


@functools.cache
def predictors() -> dict[str, tuple[SamPredictor, EmbeddedImage]]:
    image = np.random.default_rng(0).integers(0, 256, (15, 22, 3), dtype=np.uint8)
    return {
        name: (predictor, predictor.embed(image))
        for name, predictor in (("plain", SamPredictor(tiny_model())), ("text", SamPredictor(text_model())))
    }


@st.composite
def tensors(
    draw: st.DrawFn, shape: tuple[int, ...], dtype: torch.dtype, low: float = 0, high: float = 1, hostile: bool = True
) -> Any:
    """A tensor of `shape` and `dtype` with values in [low, high); if `hostile`, sometimes of another rank, size,
    batch or dtype, with NaN / inf / huge values, or not a tensor at all."""
    shape = list(shape)
    kinds = ["ok"] * 8 + ["rank", "size", "zero", "batch", "dtype", "nan", "inf", "huge", "list"] * hostile
    kind = draw(st.sampled_from(kinds))
    if kind == "rank":
        shape = shape[1:] if draw(st.booleans()) and shape else [1, *shape]
    elif kind == "size" and shape:
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(0, 5))
    elif kind == "zero" and shape:
        shape[draw(st.integers(0, len(shape) - 1))] = 0
    elif kind == "batch" and shape:
        shape[0] += 1
    if kind == "dtype":
        types = [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8, torch.bool]
        dtype = draw(st.sampled_from([*types, torch.complex64]))
    generator = torch.Generator().manual_seed(draw(SEEDS))
    values = torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low
    if kind in ("nan", "inf", "huge") and values.numel():
        values.view(-1)[0] = {"nan": float("nan"), "inf": float("inf"), "huge": 3e38}[kind]
    if not (dtype.is_floating_point or dtype.is_complex):
        values = values.round()
    tensor = values.to(dtype)
    return tensor.tolist() if kind == "list" else tensor


@st.composite
def forward_arguments(draw: st.DrawFn, model: str) -> dict[str, Any]:
    config = (text_model() if model == "text" else tiny_model()).config
    prompt_config = config.prompt_encoder_config
    batch, prompts, points = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(0, 3))
    size, mask_size = prompt_config.image_embedding_size, prompt_config.mask_input_size
    kwargs: dict[str, Any] = {}
    if draw(st.integers(0, 9)) == 0:
        image = config.vision_config.image_size
        kwargs["pixel_values"] = draw(tensors((batch, 3, image, image), torch.float32, -2, 2))
    else:
        kwargs["image_embeddings"] = draw(tensors((batch, prompt_config.hidden_size, size, size), torch.float32, -1, 1))
    if draw(st.integers(0, 19)) == 0:  # both or neither
        kwargs.pop("image_embeddings" if "image_embeddings" in kwargs else "pixel_values")
        if draw(st.booleans()):
            kwargs["pixel_values"] = kwargs["image_embeddings"] = torch.zeros(1)
    scale = draw(st.sampled_from([128.0, 1.0, 1e6]))
    if draw(st.booleans()):
        kwargs["input_points"] = draw(tensors((batch, prompts, points, 2), torch.float32, -0.1 * scale, scale))
        if draw(st.booleans()):
            labels = draw(tensors((batch, prompts, points), torch.int64, 0, 1))
            if isinstance(labels, torch.Tensor) and labels.numel() and draw(st.booleans()):
                labels.view(-1)[0] = draw(st.sampled_from([*POINT_LABELS, 2, -2, 100]))
            kwargs["input_labels"] = labels
    if draw(st.booleans()):
        corners = draw(tensors((batch, prompts, 4), torch.float32, 0, scale))
        if isinstance(corners, torch.Tensor) and corners.is_floating_point() and corners.shape[-1:] == (4,):
            corners = torch.cat([corners[..., :2], corners[..., :2] + corners[..., 2:].abs()], dim=-1)  # x2 >= x1
        kwargs["input_boxes"] = corners
    if draw(st.integers(0, 3)) == 0:
        masks_prompts = draw(st.sampled_from([prompts, 1]))
        kwargs["input_masks"] = draw(tensors((batch, masks_prompts, mask_size, mask_size), torch.float32, -5, 5))
    if config.text_config is not None and draw(st.booleans()):
        context, width = config.text_config.context_length, config.text_config.embed_dim
        if draw(st.booleans()):
            kwargs["input_text_ids"] = draw(tensors((batch, prompts, context), torch.int64, 0, 49407))
        else:
            kwargs["text_embeds"] = draw(tensors((batch, prompts, width), torch.float32, -1, 1))
    if draw(st.integers(0, 9)) == 0:
        kwargs["labels"] = draw(tensors((batch, prompts, mask_size, mask_size), torch.float32, 0, 1))
    if draw(st.integers(0, 19)) == 0:
        kwargs[draw(st.sampled_from(["original_sizes", "unknown_argument"]))] = torch.ones(batch, 2)
    kwargs["multimask_output"] = draw(st.booleans())
    return kwargs


def check_forward(model: SamModel, kwargs: dict[str, Any]) -> None:
    with torch.no_grad():  # a missing image is named too: "Pass exactly one of pixel_values or image_embeddings"
        outputs = call(lambda: model(**kwargs), set(kwargs) | {"pixel_values", "image_embeddings"})
    if outputs is None:
        return
    sources = [kwargs.get(key) for key in ("input_points", "input_boxes", "input_masks", "input_text_ids")]
    batch = len(kwargs.get("image_embeddings", kwargs.get("pixel_values")))
    prompts = next((len(s[0]) for s in sources if s is not None and (s is not kwargs.get("input_masks"))), None)
    num_masks = 3 if kwargs["multimask_output"] else 1
    mask_size = model.config.prompt_encoder_config.mask_input_size
    assert outputs.iou_scores.shape[0] == batch and outputs.iou_scores.shape[2] == num_masks
    if prompts is not None:
        assert outputs.iou_scores.shape[1] == prompts
    assert outputs.pred_masks.shape == (*outputs.iou_scores.shape, mask_size, mask_size)
    assert (outputs.loss is not None) == ("labels" in kwargs)
    if outputs.loss is not None:
        assert outputs.loss.ndim == 0


@fuzz_settings(ci_examples=120)
@given(data=st.data())
def test_model_forward(data: st.DataObject) -> None:
    check_forward(tiny_model(), data.draw(forward_arguments("plain")))


@fuzz_settings(ci_examples=60)
@given(data=st.data())
def test_model_forward_with_text(data: st.DataObject) -> None:
    check_forward(text_model(), data.draw(forward_arguments("text")))


# --- SamAutomaticMaskGenerator ---------------------------------------------------------------------------------------


def number(low: float, high: float, integer: bool = False) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """(valid settings, hostile ones: often valid, sometimes edge or junk values)."""
    valid = st.integers(int(low), int(min(high, 1e6))) if integer else st.floats(low, min(high, 1e6))
    edges = st.sampled_from([low - 1, high + 1, -1, 0, 1, 10**400, float("nan"), float("inf"), 2.5, True, "1"])
    return valid, st.one_of(valid, valid, valid, edges, JUNK)


GENERATOR_PARAMETERS = {  # name: (valid, hostile)
    "points_per_side": (st.integers(1, 64), number(1, 2000, integer=True)[1]),
    "points_per_batch": number(1, 10**6, integer=True),
    "pred_iou_thresh": number(0, 1),
    "stability_score_thresh": number(0, 1),
    "stability_score_offset": number(0, 100),
    "box_nms_thresh": number(0, 1),
    "crop_n_layers": (st.integers(0, 3), number(0, 12, integer=True)[1]),
    "crop_nms_thresh": number(0, 1),
    "crop_overlap_ratio": (st.floats(0, 0.99), number(0, 1)[1]),
    "crop_n_points_downscale_factor": (st.integers(1, 3), number(1, 10, integer=True)[1]),
    "min_mask_region_area": number(0, 1000),
    "output_mode": (st.sampled_from(OUTPUT_MODES), st.one_of(st.sampled_from(OUTPUT_MODES), JUNK)),
    "point_grids": (
        st.lists(nested_numbers([5], 2, st.floats(0, 1), hostile=False), min_size=1, max_size=1),
        st.one_of(
            st.lists(nested_numbers([1], 2, st.floats(-0.5, 1.5)), min_size=0, max_size=3),
            st.lists(nested_numbers([5], 2, st.floats(0, 1)), min_size=0, max_size=3),
            JUNK,
        ),
    ),
}


@fuzz_settings(ci_examples=150)
@given(data=st.data())
def test_generator_parameters(data: st.DataObject) -> None:
    hostile = data.draw(st.booleans(), label="hostile")
    names = data.draw(st.sets(st.sampled_from(sorted(GENERATOR_PARAMETERS)), max_size=5))
    if not hostile and "point_grids" in names:  # one grid for the one layer, instead of points_per_side
        names = (names - {"crop_n_layers", "points_per_side"}) | {"crop_n_layers"}
    kwargs = {name: data.draw(GENERATOR_PARAMETERS[name][hostile], label=name) for name in sorted(names)}
    if "point_grids" in kwargs and (not hostile or data.draw(st.booleans())):
        kwargs["points_per_side"] = None
        if not hostile:
            kwargs["crop_n_layers"] = 0
    generator = call(lambda: SamAutomaticMaskGenerator(tiny_model(), **kwargs), set(kwargs))
    if generator is None:
        return
    assert all(grid.ndim == 2 and grid.shape[1] == 2 and len(grid) for grid in generator.point_grids)
    assert len(generator.point_grids) == generator.crop_n_layers + 1
    # Accepted settings must work: generate on a small image when that is cheap (few crops and prompts).
    prompts = sum(len(grid) * 4**layer for layer, grid in enumerate(generator.point_grids))
    if prompts <= 300:
        image = np.random.default_rng(len(names)).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        records = call(lambda: generator.generate(image), {"crop_n_layers"})  # "makes empty crops of a ... image"
        if records is not None:
            check_records(records, 16, 16, generator.output_mode)


def check_records(records: list[dict[str, Any]], height: int, width: int, output_mode: str) -> None:
    keys = {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
    for record in records:
        assert set(record) == keys
        if output_mode == "coco_rle":
            assert isinstance(record["segmentation"]["counts"], str)
        mask = decode_segmentation(record["segmentation"])
        assert mask.shape == (height, width) and record["area"] == int(mask.sum())
        assert len(record["bbox"]) == 4 and len(record["crop_box"]) == 4 and len(record["point_coords"]) == 1
        assert np.isfinite(record["predicted_iou"])


@fuzz_settings(ci_examples=25, thorough_share=0.3, deadline_s=60)
@given(data=st.data())
def test_generate(data: st.DataObject) -> None:
    kwargs = {
        "points_per_side": data.draw(st.integers(1, 4), label="points_per_side"),
        "points_per_batch": data.draw(st.integers(1, 20), label="points_per_batch"),
        "pred_iou_thresh": data.draw(st.sampled_from([0.0, 0.3, 0.88, 1.0]), label="pred_iou_thresh"),
        "stability_score_thresh": data.draw(st.sampled_from([0.0, 0.5, 0.95]), label="stability_score_thresh"),
        "crop_n_layers": data.draw(st.integers(0, 2), label="crop_n_layers"),
        "crop_overlap_ratio": data.draw(st.floats(0, 0.99), label="crop_overlap_ratio"),
        "min_mask_region_area": data.draw(st.sampled_from([0, 0, 3, 50]), label="min_mask_region_area"),
        "output_mode": data.draw(st.sampled_from(OUTPUT_MODES), label="output_mode"),
    }
    generator = SamAutomaticMaskGenerator(tiny_model(), **kwargs)
    hostile = data.draw(st.booleans(), label="hostile")
    image = data.draw(images(max_side=20, hostile=hostile), label="image")
    arguments = {"image": image}
    embedding_size = tiny_model().config.prompt_encoder_config.image_embedding_size
    embeddings = ["none", "none", "ok"] + ["batch", "shape", "junk"] * hostile
    embeddings = data.draw(st.sampled_from(embeddings), label="embeddings")
    if embeddings != "none":
        shape = {"ok": (1, 64, embedding_size, embedding_size), "batch": (2, 64, embedding_size, embedding_size)}
        arguments["image_embeddings"] = (
            np.zeros(3) if embeddings == "junk" else torch.randn(shape.get(embeddings, (1, 64, 4, 4)))
        )
    try:
        size = to_uint8_hwc(image, do_convert_rgb=True).shape[:2]  # what the records' masks must cover
    except (ValueError, TypeError):
        size = None
    records = call(lambda: generator.generate(**arguments), set(arguments))
    if records is not None:
        assert size is not None, "generate accepted an image the processor refuses"
        check_records(records, *size, kwargs["output_mode"])


# --- segment_text ----------------------------------------------------------------------------------------------------


@fuzz_settings(ci_examples=25, thorough_share=0.3, deadline_s=60)
@given(data=st.data())
def test_segment_text(data: st.DataObject) -> None:
    hostile = data.draw(st.booleans(), label="hostile")
    model = data.draw(st.sampled_from(["plain", "text"]), label="model")  # zero-shot only / learned token too
    predictor = predictors()[model][0]
    rng = np.random.default_rng(data.draw(SEEDS, label="seed"))
    height, width = data.draw(st.integers(1, 20), label="height"), data.draw(st.integers(1, 20), label="width")
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    kwargs: dict[str, Any] = {"text": data.draw(st.one_of(TEXTS, JUNK) if hostile else VALID_TEXTS, label="text")}
    methods = ["auto", "zero-shot", "learned"] if model == "text" else ["auto", "zero-shot"]
    if data.draw(st.booleans()):
        kwargs["method"] = data.draw(st.one_of(st.sampled_from(METHODS), JUNK) if hostile else st.sampled_from(methods))
    zero_shot = kwargs.get("method", "auto") == "zero-shot" or (model == "plain" and kwargs.get("method") == "auto")
    zero_shot = zero_shot or (model == "plain" and "method" not in kwargs)
    clip = data.draw(st.sampled_from(["none", "matching", "default", "junk"]), label="clip") if hostile else "none"
    if not hostile and zero_shot:
        clip = data.draw(st.sampled_from(["matching", "default"]), label="clip")
    if clip != "none":
        kwargs["clip"] = clips().get(clip, "ViT-B-16")
    coordinates = COORDINATES if hostile else VALID_COORDINATES
    if data.draw(st.booleans()):
        count = data.draw(st.integers(1, 3))
        kwargs["point_coords"] = data.draw(nested_numbers([count], 2, coordinates, hostile))
        if data.draw(st.booleans()):
            labels = st.sampled_from([0, 1, 1, -1, 7]) if hostile else st.sampled_from([0, 1])
            kwargs["point_labels"] = data.draw(nested_numbers([2 if hostile else count], None, labels, hostile))
    if data.draw(st.integers(0, 2)) == 0:
        corners = st.one_of(st.integers(0, 20), COORDINATES) if hostile else st.integers(-5, 25)
        box = data.draw(nested_numbers([], 4, corners, hostile))
        if not hostile:
            box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
        kwargs["box"] = box
    if data.draw(st.booleans()):
        top_k = st.one_of(st.integers(-1, 5), st.integers(), JUNK) if hostile else st.integers(1, 5)
        kwargs["top_k"] = data.draw(top_k, label="top_k")
    kwargs["refine"] = data.draw(st.booleans(), label="refine")
    embedded = data.draw(st.sampled_from(["none", "none", "ok", "junk"][: 4 if hostile else 3]), label="embedded")
    if embedded != "none":
        kwargs["embedded"] = predictor.embed(image) if embedded == "ok" else image
    options = {
        "points_per_side": st.integers(1, 3) | JUNK if hostile else st.integers(1, 3),
        "pred_iou_thresh": st.sampled_from([0.0, 0.5, 2.0] if hostile else [0.0, 0.5]),
        "output_mode": st.sampled_from(["binary_mask", "coco_rle"] if hostile else ["binary_mask"]),
        "foo": st.just(1),
    }
    if hostile or zero_shot:
        names = data.draw(st.sets(st.sampled_from([name for name in sorted(options) if hostile or name != "foo"])))
        for name in names:
            kwargs[name] = data.draw(options[name], label=name)
        if "points_per_side" not in kwargs and data.draw(st.booleans()):
            kwargs["points_per_side"] = 2  # keep zero-shot cheap
    # A missing argument is named too: "method='zero-shot' needs clip=ClipScorer(...)".
    result = call(lambda: segment_text(predictor, image, **kwargs), set(kwargs) | {"image", "clip"})
    if result is None:
        return
    assert isinstance(result, TextSegmentation) and result.method in ("learned", "zero-shot")
    count = len(result.masks)
    assert result.masks.shape == (count, height, width) and result.masks.dtype == bool
    assert result.scores.shape == (count,) and result.boxes.shape == (count, 4)
    assert count <= kwargs.get("top_k", 1) and result.found == bool(count and result.masks.any())


# --- SamPredictor.predict --------------------------------------------------------------------------------------------


@fuzz_settings(ci_examples=100)
@given(data=st.data())
def test_predictor_predict(data: st.DataObject) -> None:
    hostile = data.draw(st.booleans(), label="hostile")
    model = data.draw(st.sampled_from(["plain", "text"]), label="model")
    predictor, embedded = predictors()[model]
    coordinates = COORDINATES if hostile else VALID_COORDINATES
    kwargs: dict[str, Any] = {}
    if data.draw(st.booleans()):
        count = data.draw(st.integers(1, 4))
        kwargs["point_coords"] = data.draw(nested_numbers([count], 2, coordinates, hostile), label="point_coords")
        if data.draw(st.booleans()):
            labels = st.one_of(st.sampled_from([0, 1, 1, -1, -10]), COORDINATES) if hostile else st.sampled_from([0, 1])
            size = data.draw(st.sampled_from([count, count, count + 1])) if hostile else count
            kwargs["point_labels"] = data.draw(nested_numbers([size], None, labels, hostile), label="point_labels")
    elif hostile and data.draw(st.integers(0, 9)) == 0:
        kwargs["point_labels"] = [1]
    if data.draw(st.booleans()):
        box = data.draw(nested_numbers([], 4, st.one_of(st.integers(0, 30), coordinates), hostile), label="box")
        if not hostile:
            box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
        kwargs["box"] = box
    if data.draw(st.integers(0, 3)) == 0:
        mask_size = predictor.model.config.prompt_encoder_config.mask_input_size
        logits = tensors((1, mask_size, mask_size), torch.float32, -5, 5, hostile)
        kwargs["mask_input"] = data.draw(st.one_of(logits, JUNK) if hostile else logits, label="mask_input")
    if (hostile or model == "text") and data.draw(st.integers(0, 3)) == 0:
        kwargs["text"] = data.draw(st.one_of(TEXTS, JUNK) if hostile else VALID_TEXTS, label="text")
    if not hostile and not kwargs:
        kwargs["point_coords"] = [[3, 4]]
    kwargs["multimask_output"] = data.draw(st.booleans())
    kwargs["return_logits"] = data.draw(st.booleans())
    image = data.draw(st.sampled_from(["embedded", "embedded", "set"] + ["array", "none"] * hostile))
    arguments = dict(kwargs)
    if image == "embedded":
        arguments["image"] = embedded
    elif image == "array":
        arguments["image"] = np.zeros((15, 22, 3), np.uint8)
    fresh = SamPredictor(predictor.model, predictor.processor)
    if image == "set":
        fresh.image = embedded
    # Missing prompts are named too: "Pass point_coords, box, mask_input and/or text", "No image: ... image=".
    missing = {"point_coords", "box", "mask_input", "text", "image"}
    prediction = call(lambda: fresh.predict(**arguments), set(arguments) | missing)
    if prediction is None:
        return
    num_masks = 3 if kwargs["multimask_output"] else 1
    mask_size = predictor.model.config.prompt_encoder_config.mask_input_size
    assert prediction.masks.shape == (num_masks, 15, 22)
    assert prediction.masks.dtype == (np.float32 if kwargs["return_logits"] else bool)
    assert prediction.scores.shape == (num_masks,)
    assert prediction.low_res_logits.shape == (num_masks, mask_size, mask_size)


# --- the CLI's prompt parsing ----------------------------------------------------------------------------------------

NUMBER_TEXT = st.one_of(
    st.from_regex(r"\A-?[0-9]{1,6}(\.[0-9]{0,3})?\Z"),
    st.sampled_from(
        ["nan", "inf", "-inf", "1e999", "1e-999", "0x10", "1_000", " 7 ", "", "+3", "١٢", "1,", "infinity"]
    ),
    st.text(max_size=4),
)


@st.composite
def comma_separated(draw: st.DrawFn) -> str:
    return ",".join(draw(st.lists(NUMBER_TEXT, min_size=0, max_size=6)))


FINITE = st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6))
WELL_FORMED_POINTS = st.tuples(FINITE, FINITE, st.sampled_from(["", ",0", ",1"])).map(lambda p: f"{p[0]},{p[1]}{p[2]}")
WELL_FORMED_BOXES = st.lists(FINITE, min_size=4, max_size=4).map(
    lambda c: f"{min(c[0], c[2])},{min(c[1], c[3])},{max(c[0], c[2])},{max(c[1], c[3])}"
)


@fuzz_settings(ci_examples=200)
@given(text=st.one_of(WELL_FORMED_POINTS, comma_separated(), st.text()))
def test_cli_parse_point(text: str) -> None:
    try:
        x, y, label = parse_point(text)
    except argparse.ArgumentTypeError as error:
        assert "expected X,Y" in str(error) or "point label" in str(error), error
        record("refused: ArgumentTypeError")
        return
    record("succeeded")
    assert np.isfinite([x, y]).all() and label in (0, 1)


@fuzz_settings(ci_examples=200)
@given(text=st.one_of(WELL_FORMED_BOXES, comma_separated(), st.text()))
def test_cli_parse_box(text: str) -> None:
    try:
        x1, y1, x2, y2 = parse_box(text)
    except argparse.ArgumentTypeError as error:
        assert "expected X1,Y1,X2,Y2" in str(error) or "box must have" in str(error), error
        record("refused: ArgumentTypeError")
        return
    record("succeeded")
    assert np.isfinite([x1, y1, x2, y2]).all() and x2 >= x1 and y2 >= y1


def test_the_property_check_fails_on_foreign_errors_and_hangs():
    """`call` itself: only named ValueError / TypeError pass; other exceptions and hangs fail."""
    assert call(lambda: 3, {"x"}) == 3
    assert call(lambda: int("x"), {"literal"}) is None  # "invalid literal for int()"
    with pytest.raises(AssertionError, match="names none of"):
        call(lambda: int("x"), {"points"})
    with pytest.raises(ZeroDivisionError):
        call(lambda: 1 / 0, {"x"})
    with pytest.raises(Hang), hang_guard(0.2):
        while True:
            pass


# --- config values ---------------------------------------------------------------------------------------------------

# Fields of `tiny_config()` that fuzzing changes, by sub-config ("" = SamConfig's own). Valid draws stay small (a tiny
# model builds and runs in milliseconds); hostile ones are NaN, infinities, negatives, huge numbers and wrong types.
CONFIG_FIELDS = {
    "vision_config": [
        *("hidden_size", "output_channels", "num_hidden_layers", "num_attention_heads", "num_channels"),
        *("image_size", "patch_size", "hidden_act", "layer_norm_eps", "qkv_bias", "mlp_ratio", "mlp_dim"),
        *("use_abs_pos", "use_rel_pos", "window_size", "global_attn_indexes", "num_pos_feats"),
    ],
    "prompt_encoder_config": [
        *("hidden_size", "image_size", "patch_size", "mask_input_channels", "num_point_embeddings", "hidden_act"),
        "layer_norm_eps",
    ],
    "mask_decoder_config": [
        *("hidden_size", "hidden_act", "mlp_dim", "num_hidden_layers", "num_attention_heads"),
        *("attention_downsample_rate", "num_multimask_outputs", "iou_head_depth", "iou_head_hidden_dim"),
        "layer_norm_eps",
    ],
    "": ["initializer_range"],
}
CONFIG_VALUES = st.one_of(
    st.integers(-2, 70),
    st.sampled_from([128, 10**6, 2**63, 10**400, -(10**9)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-6, 1e-5, 0.5, 4.0, 1e-30, 1e30, -1e-6]),
    st.sampled_from(["gelu", "relu", "silu", "no_such_act", "", "1"]),
    st.lists(st.integers(-2, 5), max_size=3),
    JUNK,
)


@fuzz_settings(ci_examples=40)
@given(data=st.data())
def test_config_values(data: st.DataObject) -> None:
    """A config from dicts with fuzzed values either builds a model that runs (pixels to masks, finite scores) or is
    refused with a ValueError / TypeError naming a changed field; nothing else (ZeroDivisionError, MemoryError, a
    model of 10**6 layers being built ...)."""
    configs = tiny_config().to_dict()
    changed = set()
    for _ in range(data.draw(st.integers(1, 3))):
        sub_config = data.draw(st.sampled_from(sorted(CONFIG_FIELDS)))
        name = data.draw(st.sampled_from(CONFIG_FIELDS[sub_config]))
        (configs[sub_config] if sub_config else configs)[name] = data.draw(CONFIG_VALUES)
        changed.add(name)
    kwargs = {key: configs[key] for key in ("vision_config", "prompt_encoder_config", "mask_decoder_config")}
    model = call(lambda: SamModel(SamConfig(**kwargs, initializer_range=configs["initializer_range"])).eval(), changed)
    if model is None:
        return
    vision = model.config.vision_config
    pixels = torch.randn(1, vision.num_channels, vision.image_size, vision.image_size)
    with torch.no_grad():
        outputs = model(pixel_values=pixels, input_points=torch.rand(1, 2, 1, 2) * vision.image_size)
    decoder = model.config.mask_decoder_config
    assert outputs.iou_scores.shape == (1, 2, decoder.num_multimask_outputs)
    assert torch.isfinite(outputs.iou_scores).all()


# --- what fuzzing found: each case once, deterministically -----------------------------------------------------------


def _forward(**kwargs: Any) -> Any:
    embeddings = torch.randn(1, 64, 8, 8)
    return tiny_model()(**{"image_embeddings": embeddings, "input_points": torch.rand(1, 1, 1, 2) * 128, **kwargs})


def _generate(embeddings: torch.Tensor | None = None, **kwargs: Any) -> Any:
    settings = {"points_per_side": 2, "pred_iou_thresh": 0, "stability_score_thresh": 0, **kwargs}
    return SamAutomaticMaskGenerator(tiny_model(), **settings).generate(np.zeros((12, 12, 3), np.uint8), embeddings)


FOUND = {  # the bug (before the fix: the exception it raised) -> (call, error it raises now, argument named)
    "1 x 700 image resized to a 0-pixel side (ValueError from PIL)": (
        lambda: PROCESSOR(images=np.zeros((1, 700, 3), np.uint8)),
        None,
        None,
    ),
    "integer coordinate beyond the float range (OverflowError)": (
        lambda: PROCESSOR(original_sizes=[[5, 5]], input_points=[[[[10**400, 1]]]]),
        ValueError,
        "input_points",
    ),
    "original_sizes beyond int64 (silently wrapped)": (
        lambda: PROCESSOR(original_sizes=[[1e300, 5]], input_points=[[[[1, 1]]]]),
        ValueError,
        "original_sizes",
    ),
    "empty 16-bit PIL image (ValueError from numpy's max)": (
        lambda: PROCESSOR(images=PIL.Image.new("I;16", (0, 0))),
        ValueError,
        "images",
    ),
    "float64 image embeddings (RuntimeError, dtype)": (
        lambda: _forward(image_embeddings=torch.randn(1, 64, 8, 8, dtype=torch.float64)),
        None,
        None,
    ),
    "float64 mask prompt (RuntimeError, dtype)": (
        lambda: _forward(input_masks=torch.zeros(1, 1, 32, 32, dtype=torch.float64)),
        None,
        None,
    ),
    "no images: batch of 0 embeddings (ZeroDivisionError)": (
        lambda: _forward(image_embeddings=torch.randn(0, 64, 8, 8), input_points=torch.rand(0, 1, 1, 2)),
        ValueError,
        "image_embeddings",
    ),
    "no prompts: 0 prompts per image (ValueError from torch.cat)": (
        lambda: _forward(input_points=torch.rand(1, 0, 1, 2)),
        ValueError,
        "input_points",
    ),
    "empty ground-truth masks (RuntimeError from interpolate)": (
        lambda: _forward(labels=torch.ones(1, 1, 0, 32)),
        ValueError,
        "labels",
    ),
    "generator threshold beyond the float range (OverflowError)": (
        lambda: SamAutomaticMaskGenerator(tiny_model(), pred_iou_thresh=10**400),
        ValueError,
        "pred_iou_thresh",
    ),
    "stability_score_offset beyond the float range (OverflowError in generate)": (
        lambda: _generate(stability_score_offset=10**400),
        ValueError,
        "stability_score_offset",
    ),
    "point_grids of strings (ValueError from numpy)": (
        lambda: SamAutomaticMaskGenerator(tiny_model(), points_per_side=None, point_grids=[["a", "b"]]),
        TypeError,
        "point_grids",
    ),
    "output_mode an array (ambiguous truth value)": (
        lambda: SamAutomaticMaskGenerator(tiny_model(), output_mode=np.array(["a", "b"])),
        ValueError,
        "output_mode",
    ),
    "crop_n_layers 10**9 (hang building grids)": (
        lambda: SamAutomaticMaskGenerator(tiny_model(), crop_n_layers=10**9),
        ValueError,
        "crop_n_layers",
    ),
    "points_per_side 10**5 (a 10**10-point grid)": (
        lambda: SamAutomaticMaskGenerator(tiny_model(), points_per_side=10**5),
        ValueError,
        "points_per_side",
    ),
    "generate with a batch of 2 embeddings (error named input_points)": (
        lambda: _generate(torch.randn(2, 64, 8, 8)),
        ValueError,
        "image_embeddings",
    ),
    "predict(image=<array>) (ambiguous truth value)": (
        lambda: predictors()["plain"][0].predict([[1, 1]], image=np.zeros((8, 8, 3), np.uint8)),
        TypeError,
        "image",
    ),
    "predict(mask_input=<strings>) (error from torch, unnamed)": (
        lambda: predictors()["plain"][0].predict(mask_input=[["a"]], image=predictors()["plain"][1]),
        TypeError,
        "mask_input",
    ),
    "predict(box=<reversed>) (error named input_boxes)": (
        lambda: predictors()["plain"][0].predict(box=[5, 5, 0, 0], image=predictors()["plain"][1]),
        ValueError,
        "box must be",
    ),
    "segment_text(embedded=<array>) (ambiguous truth value)": (
        lambda: segment_text(predictors()["text"][0], np.zeros((8, 8, 3), np.uint8), "red", embedded=np.zeros(3)),
        TypeError,
        "embedded",
    ),
    "segment_text(clip=<str>) (accepted; AttributeError once a proposal is scored)": (
        lambda: segment_text(predictors()["plain"][0], np.zeros((8, 8, 3), np.uint8), "red", clip="ViT-B-16"),
        TypeError,
        "clip",
    ),
    "bool text token ids (RuntimeError from the embedding)": (
        lambda: text_model()(image_embeddings=torch.randn(1, 64, 8, 8), input_text_ids=torch.zeros(1, 1, 12).bool()),
        TypeError,
        "input_text_ids",
    ),
    "text / point prompt counts differ (message named no argument)": (
        lambda: text_model()(
            image_embeddings=torch.randn(1, 64, 8, 8),
            input_points=torch.rand(1, 1, 1, 2),
            input_text_ids=torch.zeros(1, 2, 12, dtype=torch.long),
        ),
        ValueError,
        "input_text_ids",
    ),
}


@pytest.mark.parametrize("bug", sorted(FOUND))
def test_what_fuzzing_found(bug: str) -> None:
    fn, error, named = FOUND[bug]
    if error is None:
        with torch.no_grad(), hang_guard(30):
            fn()
    else:
        with pytest.raises(error, match=named), torch.no_grad(), hang_guard(30):
            fn()
