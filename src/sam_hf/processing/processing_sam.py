"""Processor of sam_hf: images through `SamHfImageProcessor`, point / box prompts from nested lists in original-image
pixels to padded tensors in the model's input frame (the layout of `sam_hf.prompts`), text prompts to CLIP token ids.

Named `SamHfProcessor` (exported as `SamProcessor` too) because `AutoProcessor` resolves saved processors by class
name and transformers' own `SamProcessor` would win.
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from ..configuration_sam import SamConfig
from ..prompts import FOREGROUND_LABEL, PAD_LABEL, check_prompts
from .image_inputs import check_sizes
from .image_processing_sam import RETURN_TENSORS, SamHfImageProcessor
from .tokenization import CLIP_CONTEXT_LENGTH, tokenize

POINTS_FORM = (
    "[image][prompt][point] = [x, y], i.e. (batch_size, point_batch_size, num_points, 2), or [image][point] = [x, y]"
)
LABELS_FORM = "[image][prompt][point] = label, i.e. (batch_size, point_batch_size, num_points), or [image][point]"
BOXES_FORM = "[image][prompt] = [x1, y1, x2, y2], i.e. (batch_size, point_batch_size, 4)"
# from_pretrained's options that say where to find the files, passed to every file lookup.
HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
TEXT_FORM = "a string, a list of strings (the prompts of one image) or [image][prompt] = string"


def to_lists(name: str, value: Any, depth: int, form: str, leaf_size: int | None = None) -> Any:
    """Nested lists / arrays / tensors -> Python lists exactly `depth` levels deep with numbers at the bottom (lists of
    `leaf_size` numbers at the last level if given); a `ValueError`/`TypeError` naming `name` otherwise."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        value = value.tolist()
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if depth == 0:
        if is_number:
            try:
                return float(value)
            except OverflowError as err:  # a Python int beyond float range
                raise ValueError(f"{name} contains an integer beyond the float range: expected {form}.") from err
        if isinstance(value, (list, tuple)):
            raise ValueError(f"{name} has too many nesting levels: expected {form}.")
        raise TypeError(f"{name} must contain numbers, got {type(value).__name__}: expected {form}.")
    if not isinstance(value, (list, tuple)):
        if is_number:
            raise ValueError(f"{name} has too few nesting levels: expected {form}.")
        raise TypeError(f"{name} must be nested lists, arrays or tensors, got {type(value).__name__}: expected {form}.")
    if not value:
        raise ValueError(f"{name} must not contain empty lists: expected {form}.")
    items = [to_lists(name, item, depth - 1, form, leaf_size) for item in value]
    if depth == 1 and leaf_size is not None and len(items) != leaf_size:
        raise ValueError(f"{name} entries must have {leaf_size} coordinates, got {len(items)}: expected {form}.")
    return items


def _nesting_depth(value: Any) -> int:
    """Levels of nesting down to the first number (arrays and tensors count their dimensions)."""
    depth = 0
    while isinstance(value, (list, tuple)) and value:
        depth, value = depth + 1, value[0]
    return depth + (value.ndim if isinstance(value, (np.ndarray, torch.Tensor)) else isinstance(value, (list, tuple)))


def _add_prompt_level(value: Any, short_depth: int) -> Any:
    """transformers' one-prompt-per-image form (`[image][point]...`, `short_depth` levels) -> `[image][prompt]...`."""
    if _nesting_depth(value) != short_depth:
        return value
    return [[image] for image in (value.tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else value)]


def _flatten_box_level(value: Any) -> Any:
    """`[image][prompt][k] = box` -> `[image][prompt * k] = box`, as transformers reshapes each image's boxes to
    (-1, 4)."""
    if _nesting_depth(value) != 4:
        return value
    value = value.tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else value
    return [[box for group in image for box in _as_list(group)] for image in value]


def _as_list(value: Any) -> list:
    return value.tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else list(value)


def _check_batch(name: str, nested: list, batch_size: int) -> None:
    """One entry per image, and the same number of prompts in every image (prompts are batched per image)."""
    if len(nested) != batch_size:
        raise ValueError(f"{name} must have one entry per image: got {len(nested)} entries for {batch_size} images.")
    counts = [len(image) for image in nested]
    if len(set(counts)) > 1:
        raise ValueError(
            f"{name}: all images need the same number of prompts, got {counts}; process the images separately "
            "or repeat a prompt."
        )


class SamHfProcessor(ProcessorMixin):
    r"""Wraps `SamHfImageProcessor` and converts point / box prompts for `SamModel`.

    Args:
        image_processor: the image processor; a default `SamHfImageProcessor()` if omitted.
        text_context_length: tokens per text prompt (the model's `text_config.context_length`).
    """

    def __init__(
        self, image_processor: SamHfImageProcessor | None = None, text_context_length: int = CLIP_CONTEXT_LENGTH
    ) -> None:
        image_processor = SamHfImageProcessor() if image_processor is None else image_processor
        if not isinstance(image_processor, SamHfImageProcessor):
            raise TypeError(f"image_processor must be a SamHfImageProcessor, got {type(image_processor).__name__}.")
        if not isinstance(text_context_length, int) or text_context_length < 3:
            raise ValueError(f"text_context_length must be an integer >= 3, got {text_context_length!r}.")
        self.text_context_length = text_context_length
        super().__init__(image_processor)

    @classmethod
    def for_config(cls, config: SamConfig) -> SamHfProcessor:
        """The processor matching a model: resizing and padding to its input size, its text context length."""
        size, mask_size = config.vision_config.image_size, config.prompt_encoder_config.mask_input_size
        context_length = config.text_config.context_length if config.text_config else CLIP_CONTEXT_LENGTH
        image_processor = SamHfImageProcessor(
            size={"longest_edge": size}, pad_size=size, mask_size={"longest_edge": mask_size}, mask_pad_size=mask_size
        )
        return cls(image_processor, context_length)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> SamHfProcessor:
        """transformers' `ProcessorMixin.from_pretrained` (a Hub id or a directory; hub options such as `revision`
        or `cache_dir`; other keyword arguments override saved settings), always with sam_hf's image processor: also
        where the saved type names transformers' (`facebook/sam-vit-*`), which transformers would load by that name.
        Reads both layouts transformers writes: the image processor nested in `processor_config.json`, or its own
        `preprocessor_config.json`."""
        hub = {key: kwargs.pop(key) for key in HUB_OPTIONS if key in kwargs}
        processor_dict, _ = cls.get_processor_dict(pretrained_model_name_or_path, **hub)
        context_length = kwargs.pop("text_context_length", processor_dict.get("text_context_length"))
        image_processor = kwargs.pop("image_processor", None)
        if image_processor is None:
            nested = processor_dict.get("image_processor")
            if isinstance(nested, dict):
                image_processor = SamHfImageProcessor.from_dict(nested, **kwargs)
            else:
                image_processor = SamHfImageProcessor.from_pretrained(pretrained_model_name_or_path, **hub, **kwargs)
        return cls(image_processor, CLIP_CONTEXT_LENGTH if context_length is None else context_length)

    def __call__(
        self,
        images: Any = None,
        text: str | list | None = None,
        segmentation_maps: Any = None,
        input_points: Any = None,
        input_labels: Any = None,
        input_boxes: Any = None,
        original_sizes: Any = None,
        point_pad_value: int = PAD_LABEL,
        return_tensors: str = "pt",
        **images_kwargs: Any,
    ) -> BatchFeature:
        """Preprocesses images and/or prompts given in original-image pixels (transformers' `SamProcessor` call, with
        text prompts and prompts for already-embedded images).

        Args:
            images: see `SamHfImageProcessor.preprocess`.
            text: text prompts, one per prompt: a string, a list of strings (the prompts of one image) or
                `[image][prompt] = string`; with points / boxes, the same number of prompts per image.
            segmentation_maps: ground-truth maps, one per image, returned as `labels` (see the image processor).
            input_points: `[image][prompt][point] = [x, y]`, or `[image][point] = [x, y]` for one prompt per image
                (nested lists, arrays or tensors); prompts with fewer points are padded with (0, 0) and label
                `point_pad_value`.
            input_labels: `[image][prompt][point]` (or `[image][point]`) in {1 foreground, 0 background, -1 not a
                point, -10 padding}; all foreground if omitted.
            input_boxes: `[image][prompt] = [x1, y1, x2, y2]`; `[image][prompt][k] = box` is flattened to prompts per
                image, as transformers does.
            original_sizes: `(batch_size, 2)` (height, width) of the images the prompts refer to, when called without
                `images` (e.g. for precomputed image embeddings).
            point_pad_value: label of the padding points: -10 (ignored) or -1 (the "not a point" token).
            return_tensors: "pt" (torch tensors) or "np" (numpy arrays).
            images_kwargs: image processor options for this call (e.g. `do_normalize=False`).

        Returns:
            `BatchFeature` with the image processor's keys if `images` were given, and `input_points` float32
            (batch_size, point_batch_size, num_points, 2), `input_labels` int64 (batch_size, point_batch_size,
            num_points), `input_boxes` float32 (batch_size, point_batch_size, 4), all in the resized frame, and
            `input_text_ids` int64 (batch_size, point_batch_size, text_context_length).
        """
        if return_tensors not in RETURN_TENSORS:
            raise ValueError(f"return_tensors must be one of {RETURN_TENSORS}, got {return_tensors!r}.")
        if images is not None and original_sizes is not None:
            raise ValueError("Pass either images or original_sizes: with images, sizes are read from the images.")
        if segmentation_maps is not None and images is None:
            raise ValueError("segmentation_maps need their images.")
        has_prompts = input_points is not None or input_labels is not None or input_boxes is not None
        if images is None and not has_prompts and text is None:
            raise ValueError("Nothing to process: pass images and/or input_points / input_boxes / text.")
        data = {}
        if text is not None:
            data["input_text_ids"] = self._tokenize(text)
        if images is not None:
            data.update(self.image_processor(images, segmentation_maps=segmentation_maps, **images_kwargs))
            sizes = data["original_sizes"]
        elif original_sizes is not None:
            sizes = check_sizes("original_sizes", original_sizes)
        elif has_prompts:
            raise ValueError("Prompts without images need original_sizes, the (height, width) of each image.")
        if has_prompts:
            data.update(self._prompts(input_points, input_labels, input_boxes, sizes, point_pad_value))
        if "input_text_ids" in data and (images is not None or has_prompts):
            _check_batch("text", data["input_text_ids"], len(sizes))
            prompts = data.get("input_points", data.get("input_boxes"))
            if prompts is not None and prompts.shape[1] != data["input_text_ids"].shape[1]:
                raise ValueError(
                    f"text has {data['input_text_ids'].shape[1]} prompts per image but the points / boxes have "
                    f"{prompts.shape[1]}: one text per prompt."
                )
        if return_tensors == "np":
            data = {key: value.numpy() if isinstance(value, torch.Tensor) else value for key, value in data.items()}
        return BatchFeature(data)

    def _prompts(
        self, input_points: Any, input_labels: Any, input_boxes: Any, sizes: torch.Tensor, point_pad_value: int
    ) -> dict[str, torch.Tensor]:
        """Point / box prompts in original pixels -> tensors in the resized frame (the layout of `sam_hf.prompts`)."""
        if input_labels is not None and input_points is None:
            check_prompts(input_labels=input_labels)  # raises: labels need points
        data = {}
        resize = self.image_processor.resize_coordinates
        if input_points is not None:
            points = to_lists("input_points", _add_prompt_level(input_points, 3), 4, POINTS_FORM, leaf_size=2)
            _check_batch("input_points", points, len(sizes))
            if input_labels is None:
                labels = [[[FOREGROUND_LABEL] * len(prompt) for prompt in image] for image in points]
            else:
                labels = to_lists("input_labels", _add_prompt_level(input_labels, 2), 3, LABELS_FORM)
                if [[len(p) for p in image] for image in labels] != [[len(p) for p in image] for image in points]:
                    raise ValueError(f"input_labels must have one label per point of input_points: {LABELS_FORM}.")
            num_points = max(len(prompt) for image in points for prompt in image)
            # float64 so that `check_prompts` can reject non-integer / NaN labels before the int64 cast.
            point_tensor = torch.zeros(len(points), len(points[0]), num_points, 2, dtype=torch.float64)
            label_tensor = torch.full(point_tensor.shape[:3], float(point_pad_value), dtype=torch.float64)
            for i, image in enumerate(points):
                for j, prompt in enumerate(image):
                    point_tensor[i, j, : len(prompt)] = torch.tensor(prompt, dtype=torch.float64)
                    label_tensor[i, j, : len(prompt)] = torch.tensor(labels[i][j], dtype=torch.float64)
            data["input_points"] = torch.stack(
                [resize(p, size) for p, size in zip(point_tensor, sizes.tolist(), strict=True)]
            )
            data["input_labels"] = label_tensor
        if input_boxes is not None:
            boxes = to_lists("input_boxes", _flatten_box_level(input_boxes), 3, BOXES_FORM, leaf_size=4)
            _check_batch("input_boxes", boxes, len(sizes))
            box_tensor = torch.tensor(boxes, dtype=torch.float64)
            data["input_boxes"] = torch.stack(
                [
                    resize(b.view(-1, 2, 2), size).view(b.shape)
                    for b, size in zip(box_tensor, sizes.tolist(), strict=True)
                ]
            )
        check_prompts(data.get("input_points"), data.get("input_labels"), data.get("input_boxes"), request=True)
        if "input_labels" in data:
            data["input_labels"] = data["input_labels"].to(torch.int64)
        return data

    def _tokenize(self, text: str | list) -> torch.Tensor:
        """`text` (`TEXT_FORM`) -> `(batch_size, point_batch_size, text_context_length)` token ids."""
        if isinstance(text, str):
            text = [[text]]
        elif isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text):
            text = [list(text)]
        if not isinstance(text, (list, tuple)) or not text or not all(isinstance(t, (list, tuple)) for t in text):
            raise TypeError(f"text must be {TEXT_FORM}, got {type(text).__name__}.")
        counts = {len(prompts) for prompts in text}
        if len(counts) > 1 or 0 in counts:
            raise ValueError(f"text: every image needs the same, non-zero number of prompts, got {sorted(counts)}.")
        ids = tokenize([t for prompts in text for t in prompts], self.text_context_length)
        return ids.view(len(text), len(text[0]), -1)

    def post_process_masks(self, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        """See `SamHfImageProcessor.post_process_masks`."""
        return self.image_processor.post_process_masks(*args, **kwargs)


SamProcessor = SamHfProcessor
