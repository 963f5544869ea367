"""Text to mask, on any SAM checkpoint: `segment_text(predictor, image, "red circle")`.

`segment_prompts` is the one prompts -> masks step of the CLI and the Space (one prompt on one image): a text goes to
`segment_text` (with the points and the box), other prompts to `SamPredictor.predict`. The promptable pipeline keeps
its own path: it decodes several prompts per call in one batched forward, takes a `mask_threshold`, and its text
`top_k` is apart from `multimask_output` (here `top_k` is 3 with `multimask`, else 1).

Two text methods, one entry point:

- `"learned"`: the paper's text token (section 7.5). The CLIP text embedding is a sparse prompt of a model trained
  with one (`config.text_config`, e.g. the bundled model); alone or with the user's points / box.
- `"zero-shot"`: works with the released weights and any open_clip CLIP. Everything-mode proposals (plus the masks of
  the user's points / box) are scored by CLIP on context-keeping views (`clip_scoring`); a proposal matches when its
  cosine similarity to the text reaches the scorer's threshold and beats every phrase of a background vocabulary, so
  "not found" is a possible answer. The chosen masks are refined by feeding their boxes back to SAM (kept when SAM
  rates the refined mask higher).

`"auto"` is the learned token when the checkpoint has one, zero-shot otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .clip_scoring import ClipScorer
from .configuration_sam import SamConfig
from .everything import ZERO_SHOT_SETTINGS, SamAutomaticMaskGenerator
from .geometry import mask_boxes, mask_iou
from .predictor import EmbeddedImage, Prediction, SamPredictor, box_coordinates
from .processing.image_processing_sam import to_uint8_hwc
from .processing.processing_sam import to_lists
from .processing.tokenization import check_text
from .prompts import BACKGROUND_LABEL, FOREGROUND_LABEL, check_inside_image

METHODS = ("auto", "learned", "zero-shot")
REFINE_MIN_IOU = 0.5  # a refined mask overlapping its proposal less than this grabbed something else


@dataclass
class TextSegmentation:
    """The answer to a text prompt.

    Args:
        text: the prompt.
        method: `"learned"` or `"zero-shot"`, the method that ran.
        found: whether a region matched (zero-shot can answer "not found"; the learned token always finds one).
        masks: `(k, H, W)` bool masks, best first; `k = 0` when nothing was found.
        scores: `(k,)` cosine similarity to the text (zero-shot) or predicted IoU (learned).
        boxes: `(k, 4)` boxes of the masks, in `sam_hf.geometry`'s convention (XYXY, inclusive end).
    """

    text: str
    method: str
    found: bool
    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


def rank_regions(
    region_embeddings: torch.Tensor, text_embedding: torch.Tensor, background_embeddings: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The regions that match a text, best first.

    Args:
        region_embeddings: `(n, d)` unit CLIP embeddings of the regions.
        text_embedding: `(d,)` unit CLIP embedding of the text.
        background_embeddings: `(m, d)` unit embeddings of the background vocabulary (`m` may be 0).
        threshold: the cosine similarity a match must reach.

    Returns:
        `(indices, scores)`: indices of the matching regions sorted by decreasing similarity, and the `(n,)`
        similarities of all regions. A region matches when its similarity to the text is >= `threshold` and greater
        than its similarity to every background phrase.
    """
    scores = region_embeddings @ text_embedding
    matches = scores >= threshold
    if len(background_embeddings):
        matches &= scores > (region_embeddings @ background_embeddings.T).max(dim=1).values
    candidates = matches.nonzero().flatten()
    return candidates[scores[candidates].argsort(descending=True, stable=True)], scores


def resolve_method(config: SamConfig, method: str) -> str:
    """The method a text prompt runs on a model with `config`: `"auto"` is the learned token when the model has one
    (`config.text_config`), else zero-shot."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if method != "auto":
        return method
    return "learned" if config.text_config is not None else "zero-shot"


def segment_text(
    predictor: SamPredictor,
    image: Any,
    text: str,
    method: str = "auto",
    clip: ClipScorer | None = None,
    point_coords: Any = None,
    point_labels: Any = None,
    box: Any = None,
    top_k: int = 1,
    refine: bool = True,
    embedded: EmbeddedImage | None = None,
    **generator_options: Any,
) -> TextSegmentation:
    """Masks of the object(s) `text` names in `image`.

    Args:
        predictor: a `SamPredictor` (model + processor).
        image: the image (PIL, `(H, W, 3)` uint8 array, ...).
        text: what to segment, e.g. `"red circle"`.
        method: `"auto"`, `"learned"` or `"zero-shot"` (see the module docstring).
        clip: the CLIP that scores regions, for zero-shot.
        point_coords / point_labels / box: optional prompts in original-image pixels (as `SamPredictor.predict`):
            combined with the text token (learned), or added as proposals (zero-shot).
        top_k: at most this many masks, best first.
        refine: zero-shot only: re-prompt SAM with each chosen mask's box.
        embedded: `predictor.embed(image)` if already computed (an app's cache), to skip the image encoder.
        generator_options: zero-shot proposals: `EverythingSettings` fields that override `ZERO_SHOT_SETTINGS`.

    Returns:
        [`TextSegmentation`].
    """
    text = check_text(text)
    method = resolve_method(predictor.model.config, method)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
    if method == "learned" and predictor.model.config.text_config is None:
        raise ValueError(
            "This checkpoint has no trained text token (config.text_config is None): use method='zero-shot' with a "
            "CLIP, e.g. clip=ClipScorer.from_open_clip('ViT-B-16', 'laion2b_s34b_b88k')."
        )
    if method == "zero-shot" and clip is None:
        raise ValueError("method='zero-shot' needs clip=ClipScorer(...) to score the regions.")
    if method == "zero-shot" and not isinstance(clip, ClipScorer):
        raise TypeError(f"clip must be a ClipScorer, got {type(clip).__name__}.")
    if embedded is not None and not isinstance(embedded, EmbeddedImage):
        raise TypeError(f"embedded must be predictor.embed(image), an EmbeddedImage; got {type(embedded).__name__}.")
    if method == "learned" and generator_options:
        raise ValueError(f"{sorted(generator_options)} apply to method='zero-shot' only.")
    embedded = predictor.embed(image) if embedded is None else embedded
    prompts = {"point_coords": point_coords, "point_labels": point_labels, "box": box}
    if method == "learned":
        prediction = predictor.predict(**prompts, text=text, image=embedded)
        order = np.argsort(-prediction.scores, kind="stable")[:top_k]
        return _result(text, "learned", prediction.masks[order], prediction.scores[order])
    return _zero_shot(predictor, image, text, clip, prompts, top_k, refine, embedded, generator_options)


POINTS_FORM = "[[x, y], ...] or [[x, y, label], ...] in image pixels, label 1 (foreground) or 0 (background)"


def split_points(points: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Points as `(x, y)` or `(x, y, label)` rows (label 1 foreground, 0 background, default 1; the form of the CLI's
    `--point` and the Space's JSON) -> `point_coords (N, 2)` float64 and `point_labels (N,)` int64, or `(None, None)`
    for `None`. A `ValueError`/`TypeError` naming `points` otherwise."""
    if points is None:
        return None, None
    rows = to_lists("points", points, 2, POINTS_FORM)
    if any(len(row) not in (2, 3) for row in rows):
        raise ValueError(f"points entries must have 2 or 3 values, got {[len(row) for row in rows]}: {POINTS_FORM}.")
    coords = np.array([row[:2] for row in rows], dtype=np.float64)
    if not np.isfinite(coords).all():
        raise ValueError(f"points contain NaN or infinite coordinates: {POINTS_FORM}.")
    labels = [row[2] if len(row) == 3 else FOREGROUND_LABEL for row in rows]
    if any(label not in (FOREGROUND_LABEL, BACKGROUND_LABEL) for label in labels):
        raise ValueError(f"point labels must be 1 (foreground) or 0 (background), got {labels}: {POINTS_FORM}.")
    return coords, np.array(labels, dtype=np.int64)


def segment_prompts(
    predictor: SamPredictor,
    image: Any,
    points: Any = None,
    box: Any = None,
    text: str | None = None,
    text_method: str = "auto",
    clip: ClipScorer | None = None,
    multimask: bool = True,
    embedded: EmbeddedImage | None = None,
) -> Prediction | TextSegmentation:
    """Masks for any mix of points, a box and a text on one image, the one prompts -> masks step of the CLI and the
    Space: with a text, `segment_text` (the points and box join it); else `predictor.predict`.

    Args:
        predictor: a `SamPredictor`.
        image: the image (PIL, `(H, W, 3)` uint8 array, ...); zero-shot text reads its pixels.
        points: `(x, y)` or `(x, y, label)` rows in image pixels (see `split_points`).
        box: `(4,)` box x1, y1, x2, y2 in image pixels.
        text: what to segment (see `segment_text`); `None` for none.
        text_method: `"auto"`, `"learned"` or `"zero-shot"`.
        clip: the CLIP of zero-shot text prompts.
        multimask: three candidate masks (the best three text matches) instead of one.
        embedded: `predictor.embed(image)` if already computed (e.g. from an `EmbeddingCache`).

    Returns:
        A `Prediction` (masks `(C, H, W)`, predicted IoU `(C,)`, low-res logits) without a text, else a
        `TextSegmentation`.
    """
    if not isinstance(multimask, bool):
        raise TypeError(f"multimask must be a bool, got {type(multimask).__name__}.")
    point_coords, point_labels = split_points(points)
    box = None if box is None else box_coordinates(box)  # checked here: the inside-the-image check below reads it
    if point_coords is None and box is None and text is None:
        raise ValueError("Add at least one point, a box or a text.")
    embedded = predictor.embed(image) if embedded is None else embedded
    check_inside_image(embedded.original_size, point_coords, box)
    if text is None:
        return predictor.predict(point_coords, point_labels, box, multimask_output=multimask, image=embedded)
    return segment_text(
        predictor,
        image,
        text,
        method=text_method,
        clip=clip,
        point_coords=point_coords,
        point_labels=point_labels,
        box=box,
        top_k=3 if multimask else 1,
        embedded=embedded,
    )


def _zero_shot(
    predictor: SamPredictor,
    image: Any,
    text: str,
    clip: ClipScorer,
    prompts: dict[str, Any],
    top_k: int,
    refine: bool,
    embedded: EmbeddedImage,
    generator_options: dict[str, Any],
) -> TextSegmentation:
    generator = SamAutomaticMaskGenerator(
        predictor.model, processor=predictor.processor, settings=ZERO_SHOT_SETTINGS, **generator_options
    )
    if generator.settings.output_mode != "binary_mask":
        raise ValueError("output_mode is fixed to 'binary_mask' for text prompts.")
    records = generator.generate(image, embedded.image_embeddings)
    proposals = [(record["segmentation"], record["predicted_iou"]) for record in records]
    if any(value is not None for value in prompts.values()):
        prediction = predictor.predict(**prompts, image=embedded)
        proposals.extend(zip(prediction.masks, prediction.scores.tolist(), strict=True))
    proposals = [(mask, quality) for mask, quality in proposals if mask.any()]
    if not proposals:
        return _result(text, "zero-shot", np.zeros((0, *embedded.original_size), bool), np.zeros(0, np.float32))
    array = to_uint8_hwc(image, do_convert_rgb=True)
    order, scores = rank_regions(
        clip.embed_regions(array, [mask for mask, _ in proposals]),
        clip.embed_texts([text])[0],
        clip.embed_texts(clip.background) if clip.background else torch.empty(0),
        clip.threshold,
    )
    chosen = [proposals[i] for i in order[:top_k].tolist()]
    masks = [_refine(predictor, mask, quality, embedded) if refine else mask for mask, quality in chosen]
    masks = np.stack(masks) if masks else np.zeros((0, *embedded.original_size), bool)
    return _result(text, "zero-shot", masks, scores[order[:top_k]].numpy())


def _refine(predictor: SamPredictor, mask: np.ndarray, quality: float, embedded: EmbeddedImage) -> np.ndarray:
    """SAM's mask for the box of `mask` when SAM rates it higher than `mask` (predicted IoU `quality`) and it stays
    on the same region (IoU >= `REFINE_MIN_IOU`); `mask` otherwise."""
    refined = predictor.predict(box=mask_boxes(mask).tolist(), multimask_output=False, image=embedded)
    overlap = mask_iou(refined.masks[0], mask, empty=0.0)  # `mask` is never empty: the rule is moot
    return refined.masks[0] if refined.scores[0] > quality and overlap >= REFINE_MIN_IOU else mask


def _result(text: str, method: str, masks: np.ndarray, scores: np.ndarray) -> TextSegmentation:
    found = bool(len(masks)) and bool(masks.any())
    return TextSegmentation(text, method, found, masks, scores.astype(np.float32), mask_boxes(masks).numpy())
