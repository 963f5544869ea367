"""Segment Anything Space: click, box, text and everything mode on any sam_hf model, a thin Gradio face over the
library.

    python space/app.py [--model HUB_ID_OR_DIR] [--clip CLIP [--clip-pretrained TAG]] [--device cuda] [--dtype float16]

The model is `$SAM_HF_MODEL` or `--model`, else the bundled small model. Text prompts go through
`sam_hf.text_to_mask.segment_text`: the model's learned text token when it has one, else (or on request) zero-shot
with a CLIP that scores regions, `$SAM_HF_CLIP` or `--clip` (default: the bundled CLIP with the bundled model). Each
session keeps its own prompts and a small LRU cache of image embeddings keyed by the image's content hash, so a click
or a text costs no image encoder. Public endpoints (`/segment`, `/segment_everything`) take an image and plain JSON,
so `gradio_client` drives every feature; the click handlers (`gr.SelectData`) stay private.
"""

import argparse
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
from PIL import ImageDraw
from pycocotools import mask as mask_utils

from sam_hf.clip_scoring import ClipScorer
from sam_hf.data import generate_scene
from sam_hf.everything import BUNDLED_SETTINGS, OFFICIAL_SETTINGS, EverythingSettings, SamAutomaticMaskGenerator
from sam_hf.loading import BUNDLED_CLIP_PATH, BUNDLED_MODEL_PATH, DTYPES, load_clip, load_sam
from sam_hf.predictor import EmbeddedImage, Prediction, SamPredictor
from sam_hf.text_to_mask import METHODS, TextSegmentation, resolve_method, segment_text

logger = logging.getLogger(__name__)

MAX_DISPLAY_SIDE = 1024  # larger images are shown downscaled; clicks are mapped back to original pixels
EMBEDDING_CACHE_SIZE = 4  # embeddings kept per session (vit_b: 4 MB each)
EXAMPLE_SEEDS = (3, 11, 27, 42)
EXAMPLE_SIZE = 256
FOREGROUND, BACKGROUND, BOX = "Foreground point", "Background point", "Box (two corners)"
# Everything-mode settings: the official thresholds suit real SAM checkpoints, the bundled preset the bundled model
# (its predicted IoUs are lower); a 16x16 grid keeps the button quick.
OFFICIAL_EVERYTHING = replace(OFFICIAL_SETTINGS, points_per_side=16)
BUNDLED_EVERYTHING = BUNDLED_SETTINGS
MASK_OPACITY = 0.6  # the image stays visible under a mask
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990")
MAX_EVERYTHING_LABELS = 256  # colour-mapped labels; more masks than this cycle through the palette anyway
NO_CLIP = (
    "Zero-shot text prompts need a CLIP to score regions, and this Space has none: start it with --clip (an "
    "open_clip name with --clip-pretrained, hf-hub:ORG/REPO or a directory) or SAM_HF_CLIP."
)


@dataclass
class Segmenter:
    """The one model of this app (and its CLIP, if any), shared by every session (read-only after loading)."""

    predictor: SamPredictor
    name: str
    everything_defaults: EverythingSettings
    clip: ClipScorer | None = None  # scores regions for zero-shot text prompts; None: zero-shot is unavailable
    clip_name: str = ""

    @classmethod
    def load(
        cls,
        model: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        clip: str | None = None,
        clip_pretrained: str | None = None,
    ) -> "Segmenter":
        """`model` as `load_sam`; `clip` as `load_clip` (the bundled CLIP when `None` and the model is the bundled
        one, else no CLIP)."""
        sam, processor = load_sam(model, device=device, dtype=dtype)
        bundled = model is None or os.path.abspath(model) == os.path.abspath(BUNDLED_MODEL_PATH)
        defaults = BUNDLED_EVERYTHING if bundled else OFFICIAL_EVERYTHING
        bundled_clip = clip is None and bundled
        if bundled_clip and not Path(BUNDLED_CLIP_PATH).is_dir():
            logger.warning("the bundled CLIP is missing (%s): zero-shot text prompts are off", BUNDLED_CLIP_PATH)
            bundled_clip = False
        scorer = load_clip(clip, clip_pretrained, device) if clip is not None or bundled_clip else None
        clip_name = "bundled sam-hf-shapes-clip" if bundled_clip else " ".join(filter(None, (clip, clip_pretrained)))
        name = "bundled sam-hf-shapes" if bundled else str(model)
        return cls(SamPredictor(sam, processor), name, defaults, scorer, clip_name)

    def text_method(self, method: str) -> str:
        """The method a text prompt runs: `"auto"` is the learned token when the model has one, else zero-shot (as in
        `segment_text`)."""
        return resolve_method(self.predictor.model.config, method)


@dataclass(frozen=True)
class Prompts:
    """Every prompt on one image. A new prompt kind is one more field here and in `predict`."""

    points: tuple[tuple[float, float, int], ...] = ()  # (x, y, label) in original pixels; label 1 fg, 0 bg
    box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 in original pixels
    text: str | None = None  # what to segment, e.g. "red circle"; combines with the points and the box
    text_method: str = "auto"  # as `segment_text`: "auto", "learned" or "zero-shot"

    def is_empty(self) -> bool:
        return not self.points and self.box is None and self.text is None

    def to_json(self) -> dict[str, Any]:
        return {
            "points": [list(point) for point in self.points],
            "box": list(self.box) if self.box else None,
            "text": self.text,
            "text_method": self.text_method,
        }

    def with_text(self, text: Any, text_method: Any = None) -> "Prompts":
        """These prompts with the text prompt `text` (a string; `None`, empty or whitespace-only removes it) and its
        method (one of `METHODS`; `None` is `"auto"`)."""
        if text is not None and not isinstance(text, str):
            raise ValueError(f"text must be a string or null, got {type(text).__name__}.")
        text_method = "auto" if text_method is None else text_method
        if text_method not in METHODS:
            raise ValueError(f"text_method must be one of {', '.join(METHODS)}, got {text_method!r}.")
        return replace(self, text=text.strip() if text and text.strip() else None, text_method=text_method)

    @classmethod
    def from_json(cls, points: Any, box: Any, text: Any = None, text_method: Any = None) -> "Prompts":
        """Parses the API's JSON: points `[[x, y, label], ...]` (label 1 or 0, default 1), box `[x1, y1, x2, y2]`,
        text and its method (see `with_text`)."""
        parsed = []
        for point in points or []:
            if not isinstance(point, (list, tuple)) or len(point) not in (2, 3):
                raise ValueError(f"each point must be [x, y] or [x, y, label], got {point!r}.")
            label = int(point[2]) if len(point) == 3 else 1
            if label not in (0, 1):
                raise ValueError(f"a point label must be 1 (foreground) or 0 (background), got {point[2]!r}.")
            parsed.append((float(point[0]), float(point[1]), label))
        if box is not None and (not isinstance(box, (list, tuple)) or len(box) != 4):
            raise ValueError(f"box must be [x1, y1, x2, y2], got {box!r}.")
        prompts = cls(tuple(parsed), ordered_box(*box[:2], *box[2:]) if box is not None else None)
        return prompts.with_text(text, text_method)


def ordered_box(x1: float, y1: float, x2: float, y2: float) -> tuple[float, float, float, float]:
    """A box from two opposite corners in any order."""
    return (float(min(x1, x2)), float(min(y1, y2)), float(max(x1, x2)), float(max(y1, y2)))


def predict(
    segmenter: Segmenter, image: "LoadedImage", prompts: Prompts, multimask: bool = True
) -> Prediction | TextSegmentation:
    """Prompts -> masks: the only place this app calls the model for prompts (the decoder; `segment_text` on the
    cached embedding when there is a text). `multimask`: three candidates (the best three text matches)."""
    if prompts.is_empty():
        raise ValueError("Add at least one point, a box or a text.")
    points = np.array([p[:2] for p in prompts.points], dtype=np.float32) if prompts.points else None
    labels = np.array([p[2] for p in prompts.points], dtype=np.int64) if prompts.points else None
    box = np.array(prompts.box, dtype=np.float32) if prompts.box else None
    if prompts.text is None:
        return segmenter.predictor.predict(points, labels, box, multimask_output=multimask, image=image.embedded)
    if segmenter.text_method(prompts.text_method) == "zero-shot" and segmenter.clip is None:
        raise ValueError(NO_CLIP)
    return segment_text(
        segmenter.predictor,
        image.pixels,
        prompts.text,
        method=prompts.text_method,
        clip=segmenter.clip,
        point_coords=points,
        point_labels=labels,
        box=box,
        top_k=3 if multimask else 1,
        embedded=image.embedded,
    )


@dataclass
class LoadedImage:
    """An image of this session: pixels, content hash, the downscaled copy shown in the page and its embedding."""

    pixels: np.ndarray  # (H, W, 3) uint8, original
    key: str
    display: np.ndarray  # (h, w, 3) uint8, at most MAX_DISPLAY_SIDE on its longest side
    scale: float  # original pixels per displayed pixel
    embedded: EmbeddedImage
    display_file: str = ""  # `display` as PNG, written once: the overlay's base image without a re-encode per click

    def __post_init__(self) -> None:
        if not self.display_file:
            path = _new_file("image.png")
            PIL.Image.fromarray(self.display).save(path, compress_level=1)
            self.display_file = str(path)

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """A displayed pixel (a click) -> original-image pixels."""
        return (x + 0.5) * self.scale - 0.5, (y + 0.5) * self.scale - 0.5

    def to_display(self, x: float, y: float) -> tuple[float, float]:
        return (x + 0.5) / self.scale - 0.5, (y + 0.5) / self.scale - 0.5

    def display_mask(self, mask: np.ndarray) -> np.ndarray:
        """An original-size bool mask -> display-size float mask, the form `gr.AnnotatedImage` takes (its value is
        the overlay's opacity)."""
        if self.scale != 1:
            height, width = self.display.shape[:2]
            small = PIL.Image.fromarray(mask.astype(np.uint8) * 255).resize(
                (width, height), PIL.Image.Resampling.NEAREST
            )
            mask = np.asarray(small) > 127
        return mask.astype(np.float32) * MASK_OPACITY


@dataclass
class Session:
    """One user's state (a `gr.State`): never shared between sessions."""

    embeddings: "OrderedDict[str, EmbeddedImage]" = field(default_factory=OrderedDict)
    embed_ms: dict[str, float] = field(default_factory=dict)  # what each embedding cost, shown beside each click
    image: LoadedImage | None = None
    history: list[Prompts] = field(default_factory=lambda: [Prompts()])  # history[-1] is current; undo pops
    corner: tuple[float, float] | None = None  # first corner of a box being drawn
    prediction: Prediction | TextSegmentation | None = None  # masks of the current prompts (none: text not found)
    selected: int = 0

    @property
    def prompts(self) -> Prompts:
        return self.history[-1]

    def clear_prompts(self) -> None:
        self.history, self.corner, self.prediction, self.selected = [Prompts()], None, None, 0

    def embed(self, segmenter: Segmenter, pixels: np.ndarray) -> tuple[EmbeddedImage, str, bool]:
        """Embedding of `pixels` from this session's LRU cache, computed on a miss: (embedding, key, was cached)."""
        key = hashlib.sha1(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
        cached = key in self.embeddings
        if cached:
            self.embeddings.move_to_end(key)
        else:
            self.embeddings[key] = segmenter.predictor.embed(pixels)
            while len(self.embeddings) > EMBEDDING_CACHE_SIZE:
                evicted, _ = self.embeddings.popitem(last=False)
                self.embed_ms.pop(evicted, None)
        return self.embeddings[key], key, cached

    def load(self, segmenter: Segmenter, path: str, timing: dict[str, Any]) -> LoadedImage:
        """Makes the image at `path` current (prompts cleared when it is a new image), timing the embedding."""
        with PIL.Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        start = time.perf_counter()
        embedded, key, cached = self.embed(segmenter, pixels)
        timing["embed_ms"], timing["embed_cached"] = _ms(start), cached
        if not cached:
            self.embed_ms[key] = timing["embed_ms"]
        if self.image is not None and self.image.key == key:
            return self.image
        scale = max(max(pixels.shape[:2]) / MAX_DISPLAY_SIDE, 1.0)
        display = pixels
        if scale > 1:
            size = (round(pixels.shape[1] / scale), round(pixels.shape[0] / scale))
            display = np.asarray(PIL.Image.fromarray(pixels).resize(size, PIL.Image.Resampling.BILINEAR))
            scale = pixels.shape[1] / size[0]
        self.image = LoadedImage(pixels, key, display, scale, embedded)
        self.clear_prompts()
        return self.image


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _new_file(name: str) -> Path:
    """A fresh path named `name` (the name the user downloads) in its own temporary directory."""
    directory = Path(tempfile.gettempdir()) / "sam_hf_space" / uuid.uuid4().hex
    directory.mkdir(parents=True)
    return directory / name


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """A `(h, w)` bool mask as JSON-ready COCO RLE (the form everything mode's records use)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("utf-8")}


def draw_prompts(image: LoadedImage, prompts: Prompts, corner: tuple[float, float] | None) -> np.ndarray:
    """The displayed image with the prompts drawn on it: green foreground and red background points, a box."""
    canvas = PIL.Image.fromarray(image.display)
    draw = ImageDraw.Draw(canvas)
    radius = max(3, round(max(image.display.shape[:2]) / 90))
    if prompts.box:
        x1, y1 = image.to_display(*prompts.box[:2])
        x2, y2 = image.to_display(*prompts.box[2:])
        draw.rectangle([x1, y1, x2, y2], outline=(255, 215, 0), width=max(2, radius // 2))
    for x, y, label in prompts.points:
        x, y = image.to_display(x, y)
        color = (30, 200, 70) if label == 1 else (230, 40, 40)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color, outline=(255, 255, 255), width=1)
    if corner:
        x, y = image.to_display(*corner)
        draw.line([x - radius, y, x + radius, y], fill=(255, 215, 0), width=2)
        draw.line([x, y - radius, x, y + radius], fill=(255, 215, 0), width=2)
    return np.asarray(canvas)


def score_name(prediction: Prediction | TextSegmentation) -> str:
    """What a prediction's scores are: the predicted IoU, or the CLIP similarity to the text (zero-shot)."""
    return "CLIP similarity" if isinstance(prediction, TextSegmentation) and prediction.method == "zero-shot" else "IoU"


def candidate_label(index: int, score: float, name: str = "IoU") -> str:
    return f"Mask {index + 1} · {name} {score:.3f}"


def text_summary(prediction: Prediction | TextSegmentation | None) -> dict[str, Any] | None:
    """The text prompt's answer for the result JSON: the method that ran, whether it found the text, a message."""
    if not isinstance(prediction, TextSegmentation):
        return None
    if prediction.found:
        message = f"Text {prediction.text!r} ({prediction.method}): {len(prediction.masks)} mask(s)."
    else:
        message = (
            f"{prediction.text!r} not found ({prediction.method}): no region matches it. Try other words, or add a "
            "point or a box."
        )
    return {"text": prediction.text, "method": prediction.method, "found": prediction.found, "message": message}


def format_timing(timing: dict[str, Any]) -> str:
    parts = []
    if "embed_ms" in timing:
        cached = " (cached)" if timing.get("embed_cached") else ""
        parts.append(f"image embedding {timing['embed_ms']:.1f} ms{cached}")
    elif "image_embedding_ms" in timing:
        parts.append(f"image embedding {timing['image_embedding_ms']:.1f} ms (once per image, not per click)")
    if "text_ms" in timing:
        parts.append(f"text prompt ({timing['text_method']}) {timing['text_ms']:.1f} ms")
    for key, name in (("decode_ms", "prompt encoder + decoder"), ("everything_ms", "everything mode")):
        if key in timing:
            parts.append(f"{name} {timing[key]:.1f} ms")
    if "render_ms" in timing:
        parts.append(f"overlay + files {timing['render_ms']:.1f} ms")
    if "total_ms" in timing:
        parts.append(f"**total {timing['total_ms']:.1f} ms**")
    return " · ".join(parts)


# Every handler returns these, in this order: canvas, overlay, candidates, download, result JSON, timing, state.
Outputs = tuple[Any, Any, Any, Any, Any, str, Session]


def render_prompts(session: Session, timing: dict[str, Any], start: float) -> Outputs:
    """Outputs for the current prompts and prediction (an empty overlay when there are no prompts)."""
    image = session.image
    if image is None:
        return None, None, gr.Radio(choices=[], value=None), None, None, "", session
    render_start = time.perf_counter()
    if image.key in session.embed_ms:
        timing["image_embedding_ms"] = session.embed_ms[image.key]
    canvas = draw_prompts(image, session.prompts, session.corner)
    prediction = session.prediction
    text = text_summary(prediction)
    if prediction is None or not len(prediction.masks):  # no prompts, or a text that was not found
        result = {"mode": "prompt", "prompts": session.prompts.to_json(), "masks": []}
        overlay, candidates, download = (image.display_file, []), gr.Radio(choices=[], value=None), None
    else:
        name = score_name(prediction)
        labels = [candidate_label(i, float(s), name) for i, s in enumerate(prediction.scores)]
        mask = prediction.masks[session.selected]
        overlay = (image.display_file, [(image.display_mask(mask), labels[session.selected])])
        candidates = gr.Radio(choices=labels, value=labels[session.selected])
        path = _new_file("mask.png")
        PIL.Image.fromarray(mask.astype(np.uint8) * 255).save(path, compress_level=1)
        download = str(path)
        result = {
            "mode": "prompt",
            "image_size": list(image.pixels.shape[:2]),
            "prompts": session.prompts.to_json(),
            "selected": session.selected,
            "score": "clip_similarity" if name != "IoU" else "predicted_iou",
            "masks": [
                {"score": float(score), "area": int(m.sum()), "segmentation": coco_rle(m)}
                for m, score in zip(prediction.masks, prediction.scores, strict=True)
            ],
        }
    timing["render_ms"] = _ms(render_start)
    timing["total_ms"] = _ms(start)
    result["timing"] = timing
    status = format_timing(timing)
    if text is not None:
        result["text"] = text
        message = text["message"] if text["found"] else f"**{text['message']}**"  # "not found" stands out
        status = f"{message}\n\n{status}"
    return canvas, overlay, candidates, download, result, status, session


def run_prompts(
    segmenter: Segmenter, session: Session, timing: dict[str, Any], start: float, multimask: bool
) -> Outputs:
    """Predicts for the session's current prompts (none: clears the result) and renders."""
    session.prediction, session.selected = None, 0
    prompts = session.prompts
    if session.image is not None and not prompts.is_empty():
        decode_start = time.perf_counter()
        session.prediction = predict(segmenter, session.image, prompts, multimask)
        if prompts.text is None:
            timing["decode_ms"] = _ms(decode_start)
        else:  # the whole text step: the text token, or zero-shot's proposals + CLIP scoring + refinement
            timing["text_ms"], timing["text_method"] = _ms(decode_start), session.prediction.method
        if len(session.prediction.scores):
            session.selected = int(np.argmax(session.prediction.scores))
    return render_prompts(session, timing, start)


def friendly_errors(fn: Callable) -> Callable:
    """Turns any failure into a `gr.Error` message for the user (never a traceback); unexpected ones are logged."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, TypeError) as error:  # bad input, worded by the library or by this app
            raise gr.Error(str(error)) from error
        except Exception as error:
            logger.exception("request failed")
            raise gr.Error(f"The model call failed ({type(error).__name__}: {error}).") from error

    return wrapper


def report_unreadable_uploads(image: gr.Image) -> gr.Image:
    """Makes an upload that is not an image a message rather than a bare "Error": `gr.Image` opens the file before
    any handler runs. (Wrapping the instance: a `gr.Image` subclass would make Gradio write a `.pyi` beside this file.)
    """
    preprocess = image.preprocess

    def checked(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
            raise gr.Error(f"The upload is not an image that can be read ({type(error).__name__}).") from error

    image.preprocess = checked
    return image


def write_examples(directory: Path) -> list[str]:
    """Generated scenes as PNG files, the examples of the page."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in EXAMPLE_SEEDS:
        path = directory / f"scene_{seed}.png"
        PIL.Image.fromarray(generate_scene(seed, EXAMPLE_SIZE).image).save(path)
        paths.append(str(path))
    return paths


class Handlers:
    """The Space's event handlers, bound to one model; every one returns the same outputs (see `Outputs`).

    `on_*` answer the page (clicks, text box, undo, reset, candidate choice) and stay private; `segment` and
    `segment_everything` are the public API (an image and plain JSON).
    """

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter

    @friendly_errors
    def on_image(self, path: str | None, session: Session) -> Outputs:
        """A new image (upload, example or clear): embeds it once (or takes it from the cache), clears prompts."""
        start, timing = time.perf_counter(), {}
        if path is None:
            session.image = None
            session.clear_prompts()
        else:
            session.load(self.segmenter, path, timing)
        return render_prompts(session, timing, start)

    @friendly_errors
    def on_click(self, mode: str, multimask: bool, session: Session, evt: gr.SelectData) -> Outputs:
        """A click on the displayed image: a point, or a box corner (the second corner completes the box)."""
        start, timing = time.perf_counter(), {}
        if session.image is None:
            raise gr.Error("Upload an image or pick an example first.")
        x, y = session.image.to_original(*evt.index)
        if mode == BOX and session.corner is None:
            session.corner = (x, y)
            return render_prompts(session, timing, start)  # half a box: nothing to predict yet
        prompts = session.prompts
        if mode == BOX:
            session.history.append(replace(prompts, box=ordered_box(*session.corner, x, y)))
            session.corner = None
        else:
            session.history.append(replace(prompts, points=(*prompts.points, (x, y, int(mode == FOREGROUND)))))
        return run_prompts(self.segmenter, session, timing, start, multimask)

    @friendly_errors
    def on_text(self, text: str | None, text_method: str, multimask: bool, session: Session) -> Outputs:
        """The text box (Enter or its button): `text` becomes the text prompt, combined with the clicked points and
        box (an empty box removes it)."""
        start, timing = time.perf_counter(), {}
        if session.image is None:
            raise gr.Error("Upload an image or pick an example first.")
        session.history.append(session.prompts.with_text(text, text_method))
        return run_prompts(self.segmenter, session, timing, start, multimask)

    @friendly_errors
    def on_undo(self, multimask: bool, session: Session) -> Outputs:
        """Removes the last prompt (or the pending box corner) and predicts again."""
        start, timing = time.perf_counter(), {}
        if session.corner is not None:
            session.corner = None
            return render_prompts(session, timing, start)
        if len(session.history) > 1:
            session.history.pop()
        return run_prompts(self.segmenter, session, timing, start, multimask)

    @friendly_errors
    def on_reset(self, session: Session) -> Outputs:
        """Removes every prompt of the current image."""
        session.clear_prompts()
        return render_prompts(session, {}, time.perf_counter())

    @friendly_errors
    def on_candidate(self, index: int | None, session: Session) -> Outputs:
        """Shows candidate mask `index` (and makes it the one to download); no model call."""
        if session.prediction is not None and index is not None:
            session.selected = int(index)
        return render_prompts(session, {}, time.perf_counter())

    @friendly_errors
    def segment(
        self,
        image: str | None,
        points: Any,
        box: Any,
        multimask: bool,
        text: str | None,
        text_method: str | None,
        session: Session,
    ) -> Outputs:
        """Masks for points `[[x, y, label], ...]` (label 1 foreground, 0 background), a box `[x1, y1, x2, y2]`
        (original-image pixels) and/or a text (`text_method` "auto", "learned" or "zero-shot"), in any combination:
        three candidates with their scores if `multimask`. A text that matches nothing is a message, not an error."""
        start, timing = time.perf_counter(), {}
        if image is None:
            raise gr.Error("Send an image.")
        prompts = Prompts.from_json(points, box, text, text_method)
        if prompts.is_empty():
            raise gr.Error("Add at least one point, a box or a text.")
        session.load(self.segmenter, image, timing)
        session.history, session.corner = [*session.history, prompts], None
        return run_prompts(self.segmenter, session, timing, start, multimask)

    @friendly_errors
    def segment_everything(
        self,
        image: str | None,
        points_per_side: float,
        pred_iou_thresh: float,
        stability_score_thresh: float,
        session: Session,
    ) -> Outputs:
        """Everything mode: a grid of `points_per_side`² point prompts, masks kept above the predicted-IoU and
        stability thresholds; returns every mask as the official records with COCO RLE segmentations."""
        start, timing = time.perf_counter(), {}
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        loaded = session.load(self.segmenter, image, timing)
        settings = {
            "points_per_side": int(points_per_side),
            "pred_iou_thresh": float(pred_iou_thresh),
            "stability_score_thresh": float(stability_score_thresh),
        }
        generator = SamAutomaticMaskGenerator(
            self.segmenter.predictor.model,
            processor=self.segmenter.predictor.processor,
            settings=self.segmenter.everything_defaults,
            output_mode="coco_rle",
            **settings,
        )
        run_start = time.perf_counter()
        records = generator.generate(loaded.pixels, image_embeddings=loaded.embedded.image_embeddings)
        timing["everything_ms"] = _ms(run_start)
        render_start = time.perf_counter()
        labels = [f"mask {i + 1}" for i in range(len(records))]
        masks = [loaded.display_mask(mask_utils.decode(r["segmentation"]).astype(bool)) for r in records]
        download = _new_file("masks_coco_rle.json")
        download.write_text(json.dumps(records))
        session.clear_prompts()
        timing["render_ms"] = _ms(render_start)
        timing["total_ms"] = _ms(start)
        result = {"mode": "everything", "image_size": list(loaded.pixels.shape[:2]), "settings": settings}
        result |= {"masks": records, "timing": timing}
        return (
            draw_prompts(loaded, session.prompts, None),
            (loaded.display_file, list(zip(masks, labels, strict=True))),
            gr.Radio(choices=[], value=None),
            str(download),
            result,
            format_timing(timing) + f" · {len(records)} masks",
            session,
        )


def build_demo(
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    concurrency_limit: int = 1,
    segmenter: Segmenter | None = None,
    clip: str | None = None,
    clip_pretrained: str | None = None,
) -> gr.Blocks:
    """The Space: `model` is a Hub id or a local directory, the bundled small model if `None`; `clip` the CLIP of
    zero-shot text prompts (see `Segmenter.load`); or a loaded `segmenter`."""
    segmenter = segmenter or Segmenter.load(model, device, dtype, clip, clip_pretrained)
    handlers = Handlers(segmenter)
    color_map = {f"mask {i + 1}": PALETTE[i % len(PALETTE)] for i in range(MAX_EVERYTHING_LABELS)}
    defaults = segmenter.everything_defaults
    examples_dir = Path(tempfile.gettempdir()) / "sam_hf_space" / "examples"
    with gr.Blocks(title="Segment Anything (sam_hf)", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            f"## Segment Anything (sam_hf)\nModel: `{segmenter.name}`; zero-shot CLIP: "
            f"`{segmenter.clip_name or 'none'}`. Upload an image or pick an example, then click on the right-hand "
            "image: foreground or background points, or a box (two clicks on opposite corners). Or type what to "
            "segment. Points, a box and a text combine. Or segment everything."
        )
        state = gr.State(Session(), time_to_live=3600)  # deep-copied for each user
        with gr.Row():
            with gr.Column():
                image_in = report_unreadable_uploads(
                    gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], height=320)
                )
                gr.Examples(write_examples(examples_dir), inputs=image_in, label="Generated scenes", elem_id="examples")
            with gr.Column():
                # JPEG: re-encoding the canvas per click costs ~7 ms, against ~90 (WebP) or ~240 (PNG) at 1024 px.
                canvas = gr.Image(
                    label="Click to prompt", interactive=False, format="jpeg", elem_id="canvas", height=320
                )
                mode = gr.Radio([FOREGROUND, BACKGROUND, BOX], value=FOREGROUND, label="A click adds")
                multimask = gr.Checkbox(True, label="Three candidate masks (best for a single click)")
                with gr.Row():
                    text = gr.Textbox(
                        "", label="Text prompt", placeholder="e.g. red circle, then Enter", scale=3, elem_id="text"
                    )
                    text_method = gr.Radio(list(METHODS), value="auto", label="Text method", scale=2)
                text_button = gr.Button("Segment text")
                with gr.Row():
                    undo = gr.Button("Undo last prompt")
                    reset = gr.Button("Reset prompts")
        with gr.Row():
            with gr.Column():
                overlay = gr.AnnotatedImage(label="Masks", format="png", color_map=color_map, elem_id="overlay")
                timing = gr.Markdown(elem_id="timing")
            with gr.Column():
                candidates = gr.Radio([], label="Candidate masks (predicted IoU, or CLIP similarity)", type="index")
                download = gr.File(label="Download: selected mask (PNG) or everything-mode masks (COCO RLE JSON)")
                with gr.Accordion("Segment everything", open=False):
                    points_per_side = gr.Slider(4, 64, defaults.points_per_side, step=1, label="Points per side")
                    pred_iou = gr.Slider(0, 1, defaults.pred_iou_thresh, step=0.01, label="Predicted IoU threshold")
                    stability = gr.Slider(
                        0, 1, defaults.stability_score_thresh, step=0.01, label="Stability score threshold"
                    )
                    everything = gr.Button("Segment everything", variant="primary")
                with gr.Accordion("Result as JSON", open=False):
                    result = gr.JSON(label="Result")
        # API-only inputs: plain JSON prompts for /segment (the page builds its prompts from clicks).
        points_json, box_json = gr.JSON(label="points", visible=False), gr.JSON(label="box", visible=False)
        segment_trigger = gr.Button(visible=False)

        outputs = [canvas, overlay, candidates, download, result, timing, state]
        private = {"outputs": outputs, "api_visibility": "private"}
        image_in.change(handlers.on_image, [image_in, state], **private)
        canvas.select(handlers.on_click, [mode, multimask, state], **private)
        for trigger in (text.submit, text_button.click):
            trigger(handlers.on_text, [text, text_method, multimask, state], **private)
        undo.click(handlers.on_undo, [multimask, state], **private)
        reset.click(handlers.on_reset, [state], **private)
        candidates.input(handlers.on_candidate, [candidates, state], **private)
        segment_trigger.click(
            handlers.segment,
            [image_in, points_json, box_json, multimask, text, text_method, state],
            outputs,
            api_name="segment",
        )
        everything.click(
            handlers.segment_everything,
            [image_in, points_per_side, pred_iou, stability, state],
            outputs,
            api_name="segment_everything",
            concurrency_limit=1,  # the heavy one: at most one at a time whatever the default
            concurrency_id="everything",
        )
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=64)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=os.environ.get("SAM_HF_MODEL") or None,
        help="Hub id or local directory of a sam_hf / transformers SAM checkpoint, or an official .pth checkpoint "
        "(a file, or org/repo/file.pth on the Hub) (default: $SAM_HF_MODEL, else the bundled small model)",
    )
    parser.add_argument(
        "--clip",
        default=os.environ.get("SAM_HF_CLIP") or None,
        help="CLIP for zero-shot text prompts: an open_clip name (with --clip-pretrained), hf-hub:ORG/REPO or a "
        "directory (default: $SAM_HF_CLIP, else the bundled CLIP with the bundled model, else none)",
    )
    parser.add_argument("--clip-pretrained", default=None, help="open_clip pretrained tag, with a --clip model name")
    parser.add_argument("--device", default=None, help="torch device (default: the first GPU if any, else the CPU)")
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="model dtype (default: float32)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests that may run the model at once")
    parser.add_argument("--host", default=None, help="server name (default: Gradio's, $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=None, help="server port (default: Gradio's, 7860)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    demo = build_demo(
        args.model, args.device, args.dtype, args.concurrency, clip=args.clip, clip_pretrained=args.clip_pretrained
    )
    demo.launch(server_name=args.host, server_port=args.port, max_file_size="50mb")


if __name__ == "__main__":
    main()
