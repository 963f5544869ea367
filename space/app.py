"""Segment Anything Space: one canvas for points, boxes, text and everything mode on any sam_hf model, a thin Gradio
face over the library.

    python space/app.py [--model HUB_ID_OR_DIR] [--clip CLIP [--clip-pretrained TAG]] [--device cuda] [--dtype float16]

The model is `$SAM_HF_MODEL` or `--model`, else the bundled small model. The server embeds each image once (the
library's `EmbeddingCache`, one per session) and sends the embedding to the page, where the model's prompt encoder +
mask decoder (its ONNX graph, exported once per model by `sam_hf.conversion.onnx_export.cached_decoder`) runs in
onnxruntime-web: hover, clicks and dragged boxes make no server request. Text prompts, everything mode and browsers
without WebAssembly go to the server (`sam_hf.segment_prompts`). Public endpoints (`/segment`,
`/segment_everything`) take an image and plain JSON, so `gradio_client` drives every feature.
"""

import argparse
import base64
import functools
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import PIL.Image
from PIL import ImageDraw

from sam_hf import EmbeddedImage, EmbeddingCache, Prediction, SamPredictor, TextSegmentation, segment_prompts
from sam_hf.clip_scoring import ClipScorer
from sam_hf.data import generate_scene
from sam_hf.everything import (
    BUNDLED_SETTINGS,
    OFFICIAL_SETTINGS,
    EverythingSettings,
    SamAutomaticMaskGenerator,
    coco_rle,
    decode_segmentation,
)
from sam_hf.loading import BUNDLED_CLIP_PATH, BUNDLED_MODEL_PATH, DTYPES, load_clip, load_sam, open_image
from sam_hf.text_to_mask import METHODS, resolve_method

try:  # run as `python space/app.py` (or as a Space, from its folder)
    from video_tab import build_video_tab
except ModuleNotFoundError:  # imported as space.app (tests)
    from space.video_tab import build_video_tab

logger = logging.getLogger(__name__)

SPACE_DIR = Path(__file__).resolve().parent
STATIC_DIR = SPACE_DIR / "static"  # the page's script and style
ORT_DIR = SPACE_DIR / "node_modules" / "onnxruntime-web" / "dist"  # `npm ci --prefix space`
ORT_MODULE = "ort.wasm.min.mjs"  # onnxruntime-web's WebAssembly build (no WebGPU / WebGL code)
MAX_DISPLAY_SIDE = 1024  # larger images are shown downscaled; prompts and downloads stay in original pixels
MAX_PNG_DISPLAY_SIDE = 256  # larger displayed images travel as JPEG (the cut-out then fetches the original's PNG)
SESSIONS_DIR = Path(tempfile.gettempdir()) / "sam_hf_space"  # each session's files, in a directory of its own
# Cross-origin isolation, so that onnxruntime-web may use WebAssembly threads (SharedArrayBuffer); `credentialless`
# keeps cross-origin assets (a theme's web fonts) loading without CORP headers. Browsers without it run one thread.
ISOLATION_HEADERS = (
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"credentialless"),
)
EMBEDDING_CACHE_SIZE = 4  # embeddings kept per session (vit_b: 4 MB each)
EMBEDDING_DTYPE = "float16"  # what the page receives: half of float32's bytes (vit_b: 2 MiB instead of 4)
EXAMPLE_SEEDS = (3, 11, 27, 42)
EXAMPLE_SIZE = 256
# Request caps of the public API (#17 item 2); the points per prompt are the library's (sam_hf.prompts).
MAX_TEXT_CHARS = 1000
MAX_BODY_BYTES = 1 << 20  # a request body other than a file upload (uploads: MAX_UPLOAD)
MAX_UPLOAD = "50mb"
# Everything-mode settings: the official thresholds suit real SAM checkpoints, the bundled preset the bundled model
# (its predicted IoUs are lower); a 16x16 grid keeps the button quick.
OFFICIAL_EVERYTHING = replace(OFFICIAL_SETTINGS, points_per_side=16)
BUNDLED_EVERYTHING = BUNDLED_SETTINGS
MASK_OPACITY = 0.6  # the image stays visible under a mask (API overlay)
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990")
MAX_EVERYTHING_LABELS = 256  # colour-mapped labels of the API overlay; more masks cycle through the palette
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
    decoder: Path | None = None  # the model's ONNX decoder graph for the page; None: the page decodes on the server

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
        return cls(SamPredictor(sam, processor), name, defaults, scorer, clip_name, browser_decoder(sam))

    def text_method(self, method: str) -> str:
        """The method a text prompt runs: `"auto"` is the learned token when the model has one, else zero-shot (as in
        `segment_text`)."""
        return resolve_method(self.predictor.model.config, method)


def browser_decoder(model: Any) -> Path | None:
    """The model's low-res ONNX decoder graph (`SamLowResDecoder`: the page upscales only the mask it shows; SAM-HQ's
    early feature rides in the embedding), exported once per model, then cached; or `None` (and a warning) when it
    cannot be exported or onnxruntime-web is not installed: the page then decodes on the server."""
    if not (ORT_DIR / ORT_MODULE).is_file():
        logger.warning(
            "onnxruntime-web is missing (%s; run `npm ci --prefix space`): prompts decode on the server", ORT_DIR
        )
        return None
    try:
        from sam_hf.conversion.onnx_export import cached_decoder

        return cached_decoder(model, low_res=True)
    except Exception:  # no onnx / onnxscript, or a model the exporter cannot trace: the server path still works
        logger.exception("exporting the decoder graph failed: prompts decode on the server")
        return None


@dataclass(frozen=True)
class Prompts:
    """Every prompt on one image, as the API takes them (original-image pixels)."""

    points: tuple[tuple[float, ...], ...] = ()  # (x, y) or (x, y, label); label 1 foreground (default), 0 background
    box: tuple[float, ...] | None = None  # x1, y1, x2, y2
    text: str | None = None  # what to segment, e.g. "red circle"; combines with the points and the box
    text_method: str = "auto"  # as `segment_text`: "auto", "learned" or "zero-shot"

    def to_json(self) -> dict[str, Any]:
        return {
            "points": [[*point[:2], int(point[2]) if len(point) == 3 else 1] for point in self.points],
            "box": list(self.box) if self.box is not None else None,
            "text": self.text,
            "text_method": self.text_method,
        }

    @classmethod
    def from_json(cls, points: Any, box: Any, text: Any = None, text_method: Any = None) -> "Prompts":
        """The API's JSON as the library takes it; the library checks the values (`segment_prompts`). Only what is the
        Space's own is checked here: the text's length, an empty text box (no text), text that JSON cannot carry."""
        if isinstance(text, str):
            if len(text) > MAX_TEXT_CHARS:
                raise ValueError(f"text: at most {MAX_TEXT_CHARS} characters, got {len(text)}.")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ValueError(f"text must be valid Unicode; it holds a lone surrogate at {error.start}.") from None
            text = text.strip() or None
        text_method = "auto" if text_method is None else text_method
        if text_method not in METHODS:
            raise ValueError(f"text_method must be one of {', '.join(METHODS)}, got {text_method!r}.")
        if points is None or (isinstance(points, list) and not points):
            points = ()
        return cls(tuple(points) if isinstance(points, list) else points, box, text, text_method)


@dataclass
class LoadedImage:
    """An image of this session: pixels, content hash, the downscaled copy shown in the page and its embedding."""

    pixels: np.ndarray  # (H, W, 3) uint8, original
    key: str
    display: np.ndarray  # (h, w, 3) uint8, at most MAX_DISPLAY_SIDE on its longest side
    embedded: EmbeddedImage

    @property
    def scale(self) -> float:
        """Original pixels per displayed pixel (along the width)."""
        return self.pixels.shape[1] / self.display.shape[1]

    def to_display(self, x: float, y: float) -> tuple[float, float]:
        return (x + 0.5) / self.scale - 0.5, (y + 0.5) * self.display.shape[0] / self.pixels.shape[0] - 0.5

    def display_mask(self, mask: np.ndarray) -> np.ndarray:
        """An original-size bool mask -> display-size bool mask."""
        if mask.shape == self.display.shape[:2]:
            return mask
        height, width = self.display.shape[:2]
        small = PIL.Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), PIL.Image.Resampling.NEAREST)
        return np.asarray(small) > 127


def display_copy(pixels: np.ndarray) -> np.ndarray:
    """`pixels` downscaled to at most `MAX_DISPLAY_SIDE` on the longest side, at least 1 pixel a side (extreme
    aspect ratios such as 30000 x 2 keep their short side)."""
    height, width = pixels.shape[:2]
    scale = max(height, width) / MAX_DISPLAY_SIDE
    if scale <= 1:
        return pixels
    size = (max(1, round(width / scale)), max(1, round(height / scale)))
    return np.asarray(PIL.Image.fromarray(pixels).resize(size, PIL.Image.Resampling.BILINEAR))


@dataclass
class Session:
    """One user's state (a `gr.State`): never shared between sessions; its files live in its own directory, removed
    with the session (`close`)."""

    embeddings: EmbeddingCache = field(default_factory=lambda: EmbeddingCache(EMBEDDING_CACHE_SIZE))
    embed_ms: dict[str, float] = field(default_factory=dict)  # what each embedding cost, shown with each result
    image: LoadedImage | None = None
    prompts: Prompts = Prompts()
    prediction: Prediction | TextSegmentation | None = None  # masks of the current prompts (none: text not found)
    selected: int = 0
    directory: str | None = None  # this session's files (downloads), created on first use
    sent_key: str | None = None  # the image (and embedding) the page holds

    def load(self, segmenter: Segmenter, path: str, timing: dict[str, Any]) -> LoadedImage:
        """Makes the image at `path` current (read through `open_image`: EXIF rotation, 16-bit, pixel limit),
        embedding it once per session (the LRU cache), timing the embedding."""
        pixels = np.asarray(open_image(path))
        start = time.perf_counter()
        embedded, key, cached = self.embeddings.embed(segmenter.predictor, pixels)
        timing["embed_ms"], timing["embed_cached"] = _ms(start), cached
        if not cached:
            self.embed_ms = {k: v for k, v in self.embed_ms.items() if k in self.embeddings} | {key: timing["embed_ms"]}
        if self.image is None or self.image.key != key:
            self.image = LoadedImage(pixels, key, display_copy(pixels), embedded)
            self.prompts, self.prediction, self.selected = Prompts(), None, 0
        return self.image

    def new_file(self, name: str) -> Path:
        """A fresh path named `name` (the name the user downloads) in this session's directory."""
        if self.directory is None or not Path(self.directory).is_dir():
            SESSIONS_DIR.mkdir(exist_ok=True)
            self.directory = tempfile.mkdtemp(prefix="session_", dir=SESSIONS_DIR)
        folder = Path(self.directory) / uuid.uuid4().hex[:12]  # every result keeps its file name for the download
        folder.mkdir()
        return folder / name

    def close(self) -> None:
        """Removes this session's files (Gradio calls it when the session expires or the user leaves)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def png_data_url(array: np.ndarray, image_format: str = "PNG") -> str:
    """An image array as a `data:` URL, the way the canvas receives pictures inside its value."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format=image_format, compress_level=1)
    return f"data:image/{image_format.lower()};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def draw_prompts(image: LoadedImage, prompts: Prompts) -> np.ndarray:
    """The displayed image with the prompts drawn on it (the API's `canvas` output): green foreground and red
    background points, a yellow box."""
    canvas = PIL.Image.fromarray(image.display)
    draw = ImageDraw.Draw(canvas)
    radius = max(3, round(max(image.display.shape[:2]) / 90))
    if prompts.box is not None:
        x1, y1 = image.to_display(*prompts.box[:2])
        x2, y2 = image.to_display(*prompts.box[2:])
        draw.rectangle([x1, y1, x2, y2], outline=(255, 215, 0), width=max(2, radius // 2))
    for point in prompts.points:
        x, y = image.to_display(*point[:2])
        color = (230, 40, 40) if len(point) == 3 and point[2] == 0 else (30, 200, 70)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color, outline=(255, 255, 255), width=1)
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


def run_prompts(segmenter: Segmenter, session: Session, prompts: Prompts, multimask: bool, timing: dict) -> None:
    """The session's image with `prompts` through `segment_prompts`: the prediction, the selected (best) candidate."""
    if prompts.text is not None and segmenter.text_method(prompts.text_method) == "zero-shot" and not segmenter.clip:
        raise ValueError(NO_CLIP)
    session.prompts, session.prediction, session.selected = prompts, None, 0
    start = time.perf_counter()
    image = session.image
    session.prediction = segment_prompts(
        segmenter.predictor,
        image.pixels,
        prompts.points or None,
        prompts.box,
        prompts.text,
        prompts.text_method,
        segmenter.clip,
        multimask,
        image.embedded,
    )
    if prompts.text is None:
        timing["decode_ms"] = _ms(start)
    else:  # the whole text step: the text token, or zero-shot's proposals + CLIP scoring + refinement
        timing["text_ms"], timing["text_method"] = _ms(start), session.prediction.method
    if len(session.prediction.scores):
        session.selected = int(np.argmax(session.prediction.scores))


def prompt_result(session: Session, timing: dict[str, Any]) -> dict[str, Any]:
    """The result JSON of the current prompts: masks as COCO RLE with their scores, the selected one, the text's
    answer, the timing."""
    image, prediction = session.image, session.prediction
    result: dict[str, Any] = {"mode": "prompt", "prompts": session.prompts.to_json(), "masks": []}
    if prediction is not None and len(prediction.masks):
        result |= {
            "image_size": list(image.pixels.shape[:2]),
            "selected": session.selected,
            "score": "clip_similarity" if score_name(prediction) != "IoU" else "predicted_iou",
            "masks": [
                {"score": float(score), "area": int(mask.sum()), "segmentation": coco_rle(mask)}
                for mask, score in zip(prediction.masks, prediction.scores, strict=True)
            ],
        }
    text = text_summary(prediction)
    if text is not None:
        result["text"] = text
    result["timing"] = timing
    return result


def status_line(result: dict[str, Any]) -> str:
    status = format_timing(result["timing"])
    if "text" in result:
        message = result["text"]["message"]
        status = f"{message if result['text']['found'] else f'**{message}**'}\n\n{status}"
    return status


def canvas_value(segmenter: Segmenter, session: Session, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the page's canvas receives: the image and its embedding when the page does not hold them yet (once per
    image), the decoder graph's address, and a server result to draw (text prompt, everything mode, or prompts
    decoded on the server)."""
    image = session.image
    if image is None:
        return {"image": None, "serial": uuid.uuid4().hex}
    height, width = image.display.shape[:2]
    value: dict[str, Any] = {
        "image": {"key": image.key, "width": width, "height": height, "original": list(image.pixels.shape[:2])},
        "decoder": file_url(segmenter.decoder) if segmenter.decoder else None,
        "result": result,
        "serial": uuid.uuid4().hex,  # every answer is new to the page, even when equal to the last one
    }
    if session.sent_key != image.key:
        # SAM-HQ: the early ViT feature rides on the channel axis (vit_b: 256 + 768 channels).
        embedding = image.embedded.image_embeddings.detach().to("cpu").float().numpy().astype(EMBEDDING_DTYPE)
        shown_as_is = max(height, width) <= MAX_PNG_DISPLAY_SIDE and image.display is image.pixels
        value["image"]["src"] = png_data_url(image.display, "PNG" if shown_as_is else "JPEG")
        if not shown_as_is:  # downloads' original pixels, fetched by the page only for a cut-out
            path = session.new_file("original.png")
            PIL.Image.fromarray(image.pixels).save(path, compress_level=1)
            value["image"]["pixels_src"] = file_url(path)
        value["embedding"] = {
            "dtype": EMBEDDING_DTYPE,
            "shape": list(embedding.shape),
            "data": base64.b64encode(embedding.tobytes()).decode(),
            "input_size": list(image.embedded.reshaped_size),  # the model's frame: prompts are scaled to it
            "model_size": segmenter.predictor.model.config.vision_config.image_size,
            "hq_token": segmenter.predictor.model.config.mask_decoder_config.hq_token,
        }
        session.sent_key = image.key
    return value


def file_url(path: Path) -> str:
    """The page's address of a file Gradio serves as static (`gr.set_static_paths`)."""
    return f"gradio_api/file={path}"


def page_result(session: Session, timing: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A prompt result for the canvas: the masks at display size as PNG, their scores and labels; for an image shown
    downscaled, also at the original size (`full`: the downloads)."""
    image, prediction = session.image, session.prediction
    originals = [] if prediction is None else list(prediction.masks)
    masks = [image.display_mask(mask) for mask in originals]
    scores = [] if prediction is None else [float(score) for score in prediction.scores]
    downscaled = image.display.shape[:2] != image.pixels.shape[:2]
    return {
        "kind": "prompt",
        "masks": [png_data_url(mask.astype(np.uint8) * 255) for mask in masks],
        "full": [png_data_url(mask.astype(np.uint8) * 255) for mask in originals] if downscaled else [],
        "scores": scores,
        "score_name": score_name(prediction) if prediction is not None else "IoU",
        "selected": session.selected,
        "text": result.get("text"),
        "status": status_line(result),
        "timing": timing,
    }


def everything_labels(records: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """Everything mode's masks as one label image for the canvas: pixel value = mask index + 1 (0: none) coded as
    R + 256 G, smaller masks drawn over larger ones, so a click picks the most specific mask under it."""
    labels = np.zeros(shape, dtype=np.int32)
    for index in sorted(range(len(records)), key=lambda i: -records[i]["area"]):
        mask = decode_segmentation(records[index]["segmentation"])
        if mask.shape != shape:
            mask = np.asarray(PIL.Image.fromarray(mask).resize(shape[::-1], PIL.Image.Resampling.NEAREST))
        labels[mask] = index + 1
    return np.stack([labels % 256, labels // 256 % 256, np.zeros_like(labels)], axis=-1).astype(np.uint8)


# Every API handler returns these, in this order: canvas (image), overlay, candidates, download, result JSON, timing.
ApiOutputs = tuple[Any, Any, Any, Any, Any, str]


def friendly_errors(fn: Callable) -> Callable:
    """Turns any failure into a `gr.Error` message for the user (never a traceback, never a null error); unexpected
    ones are logged."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, TypeError) as error:  # bad input, worded by the library or by this app
            raise gr.Error(str(error) or type(error).__name__) from error
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


class BodyLimit:
    """ASGI middleware: a request body above `MAX_BODY_BYTES` (JSON prompts; Gradio's upload route has its own
    `max_file_size`) is refused with 413 before Gradio parses it."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"].endswith("/upload"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return await self._refuse(send)
        received = 0

        async def counted() -> dict:  # a body sent without (or beyond) its length is counted too
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise ValueError(f"request body above {MAX_BODY_BYTES} bytes")
            return message

        return await self.app(scope, counted, send)

    @staticmethod
    async def _refuse(send: Callable) -> None:
        body = json.dumps({"detail": f"Request body above {MAX_BODY_BYTES} bytes: send fewer points."}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class CrossOriginIsolation:
    """ASGI middleware: every response carries `ISOLATION_HEADERS`, which make the page cross-origin isolated."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [header for header in ISOLATION_HEADERS if header[0] not in names]
                message = message | {"headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await self.app(scope, receive, with_headers)


def launch_options() -> dict[str, Any]:
    """`demo.launch` options of this Space: the upload size, the request body limit and cross-origin isolation."""
    from starlette.middleware import Middleware

    middleware = [Middleware(CrossOriginIsolation), Middleware(BodyLimit)]
    return {"max_file_size": MAX_UPLOAD, "app_kwargs": {"middleware": middleware}}


def write_examples(directory: Path) -> list[str]:
    """Generated scenes as PNG files, the examples of the page."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in EXAMPLE_SEEDS:
        path = directory / f"scene_{seed}.png"
        PIL.Image.fromarray(generate_scene(seed, EXAMPLE_SIZE).image).save(path)
        paths.append(str(path))
    return paths


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:  # NaN: False
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}.")
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}.")
    return value


class Handlers:
    """The Space's event handlers, bound to one model.

    `on_*` answer the page (a new image, a server prompt, everything mode) and stay private; `segment` and
    `segment_everything` are the public API (an image and plain JSON).
    """

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter

    @friendly_errors
    def on_image(self, path: str | None, session: Session) -> tuple[dict[str, Any], str, Session]:
        """A new image (upload, example or clear): embeds it once (or takes it from the cache) and sends the image
        and its embedding to the canvas."""
        timing: dict[str, Any] = {}
        start = time.perf_counter()
        if path is None:
            session.image, session.sent_key = None, None
            return canvas_value(self.segmenter, session), "", session
        session.load(self.segmenter, path, timing)
        session.sent_key = None  # a new upload is a new page state: send the image again
        value = canvas_value(self.segmenter, session)
        timing["total_ms"] = _ms(start)
        where = "in your browser" if self.segmenter.decoder else "on the server"
        return value, f"{format_timing(timing)} · prompts decode {where}", session

    @friendly_errors
    def on_prompt(self, multimask: bool, session: Session, evt: gr.EventData) -> tuple[dict[str, Any], str, Session]:
        """A prompt the page sends to the server: a text (with the clicked points and box), or points and a box when
        the browser cannot run the decoder. Event data: `points`, `box`, `text`, `text_method`."""
        start, timing = time.perf_counter(), {}
        if session.image is None:
            raise gr.Error("Upload an image or pick an example first.")
        data = evt._data or {}
        prompts = Prompts.from_json(
            data.get("points") or None, data.get("box"), data.get("text"), data.get("text_method")
        )
        if not prompts.points and prompts.box is None and prompts.text is None:
            return canvas_value(self.segmenter, session, {"kind": "clear"}), "", session
        run_prompts(self.segmenter, session, prompts, bool(data.get("multimask", multimask)), timing)
        result = prompt_result(session, timing)
        timing["total_ms"] = _ms(start)
        page = page_result(session, timing, result)
        return canvas_value(self.segmenter, session, page), page["status"], session

    @friendly_errors
    def on_everything(
        self, points_per_side: float, pred_iou_thresh: float, stability_score_thresh: float, session: Session
    ) -> tuple[dict[str, Any], str, Session]:
        """Everything mode for the page: every mask drawn in colours on the canvas (a click selects one)."""
        if session.image is None:
            raise gr.Error("Upload an image or pick an example first.")
        start, timing = time.perf_counter(), {}
        records, settings = self._everything(session, points_per_side, pred_iou_thresh, stability_score_thresh, timing)
        labels = everything_labels(records, session.image.display.shape[:2])
        coco = {"image_size": list(session.image.pixels.shape[:2]), "settings": settings, "masks": records}
        timing["total_ms"] = _ms(start)
        status = format_timing(timing) + f" · {len(records)} masks"
        result = {
            "kind": "everything",
            "labels": png_data_url(labels),
            "count": len(records),
            "scores": [round(float(r["predicted_iou"]), 4) for r in records],
            "coco": json.dumps(coco),
            "status": status,
            "timing": timing,
        }
        return canvas_value(self.segmenter, session, result), status, session

    def _everything(
        self, session: Session, points_per_side: Any, pred_iou: Any, stability: Any, timing: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        settings = {
            "points_per_side": int(_number(points_per_side, "points_per_side", 1, 64)),
            "pred_iou_thresh": float(_number(pred_iou, "pred_iou_thresh", 0, 1)),
            "stability_score_thresh": float(_number(stability, "stability_score_thresh", 0, 1)),
        }
        generator = SamAutomaticMaskGenerator(
            self.segmenter.predictor.model,
            processor=self.segmenter.predictor.processor,
            settings=self.segmenter.everything_defaults,
            output_mode="coco_rle",
            **settings,
        )
        start = time.perf_counter()
        image = session.image
        records = generator.generate(image.pixels, image_embeddings=image.embedded.image_embeddings)
        timing["everything_ms"] = _ms(start)
        session.prompts, session.prediction, session.selected = Prompts(), None, 0
        return records, settings

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
    ) -> ApiOutputs:
        """Masks for points `[[x, y, label], ...]` (label 1 foreground, 0 background), a box `[x1, y1, x2, y2]`
        (original-image pixels) and/or a text (`text_method` "auto", "learned" or "zero-shot"), in any combination:
        three candidates with their scores if `multimask`. A text that matches nothing is a message, not an error."""
        start, timing = time.perf_counter(), {}
        if image is None:
            raise gr.Error("Send an image.")
        prompts = Prompts.from_json(points, box, text, text_method)
        if not prompts.points and prompts.box is None and prompts.text is None:
            raise gr.Error("Add at least one point, a box or a text.")
        session.load(self.segmenter, image, timing)
        run_prompts(self.segmenter, session, prompts, multimask, timing)
        render_start = time.perf_counter()
        loaded, prediction = session.image, session.prediction
        canvas = draw_prompts(loaded, prompts)
        overlay, candidates, download = (loaded.display, []), gr.Radio(choices=[], value=None), None
        result = prompt_result(session, timing)
        if prediction is not None and len(prediction.masks):
            name = score_name(prediction)
            labels = [candidate_label(i, float(s), name) for i, s in enumerate(prediction.scores)]
            mask = prediction.masks[session.selected]
            overlay = (
                loaded.display,
                [(loaded.display_mask(mask).astype(np.float32) * MASK_OPACITY, labels[session.selected])],
            )
            candidates = gr.Radio(choices=labels, value=labels[session.selected])
            path = session.new_file("mask.png")
            PIL.Image.fromarray(mask.astype(np.uint8) * 255).save(path, compress_level=1)
            download = str(path)
        timing["render_ms"] = _ms(render_start)
        timing["total_ms"] = _ms(start)
        return canvas, overlay, candidates, download, result, status_line(result)

    @friendly_errors
    def segment_everything(
        self,
        image: str | None,
        points_per_side: float,
        pred_iou_thresh: float,
        stability_score_thresh: float,
        session: Session,
    ) -> ApiOutputs:
        """Everything mode: a grid of `points_per_side`² point prompts, masks kept above the predicted-IoU and
        stability thresholds; returns every mask as the official records with COCO RLE segmentations."""
        start, timing = time.perf_counter(), {}
        if image is None:
            raise gr.Error("Upload an image or pick an example first.")
        loaded = session.load(self.segmenter, image, timing)
        records, settings = self._everything(session, points_per_side, pred_iou_thresh, stability_score_thresh, timing)
        render_start = time.perf_counter()
        labels = [f"mask {i + 1}" for i in range(len(records))]
        masks = [
            loaded.display_mask(decode_segmentation(r["segmentation"])).astype(np.float32) * MASK_OPACITY
            for r in records
        ]
        download = session.new_file("masks_coco_rle.json")
        download.write_text(json.dumps(records))
        timing["render_ms"] = _ms(render_start)
        timing["total_ms"] = _ms(start)
        result = {"mode": "everything", "image_size": list(loaded.pixels.shape[:2]), "settings": settings}
        result |= {"masks": records, "timing": timing}
        return (
            draw_prompts(loaded, Prompts()),
            (loaded.display, list(zip(masks, labels, strict=True))),
            gr.Radio(choices=[], value=None),
            str(download),
            result,
            format_timing(timing) + f" · {len(records)} masks",
        )


def page_script() -> str:
    """`js_on_load` of the canvas: loads space/static/canvas.js (a module) with the addresses it needs. The quoted
    names are the canvas's events ('prompt'), which Gradio reads from this text."""
    urls = {
        "ort": file_url(ORT_DIR / ORT_MODULE),
        "ortDir": file_url(ORT_DIR) + "/",
        "style": file_url(STATIC_DIR / "canvas.css"),
    }
    module = file_url(STATIC_DIR / "canvas.js")
    return (
        f"const urls = {json.dumps(urls)}; const events = ['prompt'];\n"
        f"import(new URL({json.dumps(module)}, document.baseURI).href)"
        ".then((canvas) => canvas.mount({element, props, trigger, watch, urls}));"
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
    examples_dir = SESSIONS_DIR / "examples"
    SESSIONS_DIR.mkdir(exist_ok=True)
    # The sessions' directories hold the originals the page fetches for cut-outs (unguessable names, as Gradio's cache).
    static = [STATIC_DIR, ORT_DIR, SESSIONS_DIR] + ([segmenter.decoder.parent] if segmenter.decoder else [])
    gr.set_static_paths([str(path) for path in static])  # served as they are: never copied per request
    with gr.Blocks(title="Segment Anything (sam_hf)", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            f"## Segment Anything (sam_hf)\nModel: `{segmenter.name}`; zero-shot CLIP: "
            f"`{segmenter.clip_name or 'none'}`. Pick an image, then on the canvas: hover to preview, **click** for a "
            "foreground point, **right-click** (or shift-click) for a background point, **drag** for a box. Or type "
            "what to segment. Or segment everything and click a mask."
        )
        state = gr.State(Session(), time_to_live=3600, delete_callback=Session.close)  # deep-copied for each user
        with gr.Tab("Image"), gr.Row():
            with gr.Column(scale=1, min_width=260):
                image_in = report_unreadable_uploads(
                    gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], height=180)
                )
                gr.Examples(write_examples(examples_dir), inputs=image_in, label="Generated scenes", elem_id="examples")
                multimask = gr.Checkbox(
                    True, label="Three candidate masks (best for a single click)", elem_id="multimask"
                )
                with gr.Accordion("Segment everything", open=False):
                    points_per_side = gr.Slider(4, 64, defaults.points_per_side, step=1, label="Points per side")
                    pred_iou = gr.Slider(0, 1, defaults.pred_iou_thresh, step=0.01, label="Predicted IoU threshold")
                    stability = gr.Slider(
                        0, 1, defaults.stability_score_thresh, step=0.01, label="Stability score threshold"
                    )
                    everything = gr.Button("Segment everything", variant="primary", elem_id="everything")
                timing = gr.Markdown(elem_id="timing")
            with gr.Column(scale=3):
                canvas = gr.HTML(
                    canvas_value(segmenter, Session()),
                    html_template='<div class="sam-root"></div>',
                    js_on_load=page_script(),
                    elem_id="canvas",
                    apply_default_css=False,
                )
        with gr.Tab("Video"):
            build_video_tab(segmenter.predictor, segmenter.clip)
        # API-only components: plain JSON prompts for /segment and the outputs it has always had.
        with gr.Group(visible=False):
            points_json, box_json = gr.JSON(label="points"), gr.JSON(label="box")
            text = gr.JSON(label="text")  # JSON, not a Textbox: a number stays a number and is refused
            text_method = gr.Radio(list(METHODS), value="auto", label="text_method")
            api_canvas = gr.Image(label="Prompts", format="jpeg")
            overlay = gr.AnnotatedImage(label="Masks", format="png", color_map=color_map)
            candidates = gr.Radio([], label="Candidate masks", type="index")
            download = gr.File(label="Download")
            result = gr.JSON(label="Result")
            api_timing = gr.Markdown()
            segment_trigger, everything_trigger = gr.Button(), gr.Button()

        private = {"api_visibility": "private"}
        image_in.change(handlers.on_image, [image_in, state], [canvas, timing, state], **private)
        canvas.prompt(handlers.on_prompt, [multimask, state], [canvas, timing, state], **private)
        everything.click(
            handlers.on_everything,
            [points_per_side, pred_iou, stability, state],
            [canvas, timing, state],
            concurrency_limit=1,
            concurrency_id="everything",
            **private,
        )
        api_outputs = [api_canvas, overlay, candidates, download, result, api_timing]
        segment_trigger.click(
            handlers.segment,
            [image_in, points_json, box_json, multimask, text, text_method, state],
            api_outputs,
            api_name="segment",
        )
        everything_trigger.click(
            handlers.segment_everything,
            [image_in, points_per_side, pred_iou, stability, state],
            api_outputs,
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
    demo.launch(server_name=args.host, server_port=args.port, **launch_options())


if __name__ == "__main__":
    main()
