"""Loading a model + processor and images by name, with the bundled model as the offline default (CLI, Space)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import PIL.Image
import PIL.ImageOps
import torch

from .clip_scoring import ClipScorer
from .modeling import SamModel
from .processing import SamProcessor
from .processing.image_processing_sam import pil_to_rgb

# The small model this project trains on generated shapes and ships: the offline default of the CLI and the Space.
BUNDLED_MODEL_PATH = str(Path(__file__).parent / "bundled" / "sam-hf-shapes")
# Its small CLIP, trained on the same scenes: scores regions for zero-shot text prompts on the bundled model.
BUNDLED_CLIP_PATH = str(Path(__file__).parent / "bundled" / "sam-hf-shapes-clip")

# Images above this many pixels are refused (decompression bombs); raise it with `open_image(..., max_pixels=...)`.
MAX_IMAGE_PIXELS = 178_956_970  # PIL's own hard limit: 2 x its 89.5 MP warning threshold
_PIL_LIMIT_LOCK = threading.Lock()  # PIL's limit is a global: lifted only while reading a header, one thread at a time

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` -> the first GPU when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}.") from error


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """`None` -> float32; names as in `DTYPES` or the torch dtypes themselves."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")


def load_sam(
    model: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> tuple[SamModel, SamProcessor]:
    """Loads a sam_hf model in eval mode and its processor.

    Args:
        model: a Hub id (`facebook/sam-vit-base`) or a local directory; the bundled small model if `None`.
        device: where to put the model; the first GPU when there is one, else the CPU, if `None`.
        dtype: `"float32"` (default), `"float16"` or `"bfloat16"`.

    Returns:
        `(model, processor)`; a checkpoint saved without a processor gets one matching its input size.
    """
    name = BUNDLED_MODEL_PATH if model is None else os.fspath(model)
    sam = SamModel.from_pretrained(name).to(device=resolve_device(device), dtype=resolve_dtype(dtype)).eval()
    try:
        processor = SamProcessor.from_pretrained(name)
    except OSError:  # no processor config in the checkpoint
        processor = SamProcessor.for_config(sam.config)
    return sam, processor


def load_clip(
    clip: str | os.PathLike | None = None, pretrained: str | None = None, device: str | torch.device | None = None
) -> ClipScorer:
    """Loads the CLIP that scores regions for zero-shot text prompts.

    Args:
        clip: a directory written by `ClipScorer.save`, an open_clip model name (`"ViT-B-16"`, with `pretrained`),
            or `"hf-hub:org/repo"`; the bundled CLIP if `None`.
        pretrained: open_clip pretrained tag or checkpoint file, with a model name.
        device: as in `load_sam`.
    """
    clip = BUNDLED_CLIP_PATH if clip is None else os.fspath(clip)
    device = str(resolve_device(device))
    if Path(clip).is_dir():
        return ClipScorer.from_pretrained(clip, device=device)
    return ClipScorer.from_open_clip(clip, pretrained, device=device)


def open_image(path: str | os.PathLike, max_pixels: int | None = MAX_IMAGE_PIXELS) -> PIL.Image.Image:
    """Reads an image file as the RGB picture a viewer shows: EXIF orientation applied, the first frame of an
    animation, 16-bit and palette images converted properly.

    Args:
        path: the file.
        max_pixels: larger images are refused with a `ValueError` before they are decoded (decompression bombs);
            `None` for no limit.

    Raises:
        ValueError: naming the file, when it is missing, not an image, truncated or too large.
    """
    name = os.fspath(path)
    if not Path(path).is_file():
        raise ValueError(f"image file not found: {name!r}.")
    try:
        with _PIL_LIMIT_LOCK:  # the limit that applies is `max_pixels`, checked below, not PIL's global one
            pil_limit, PIL.Image.MAX_IMAGE_PIXELS = PIL.Image.MAX_IMAGE_PIXELS, None
            try:
                opened = PIL.Image.open(path)
            finally:
                PIL.Image.MAX_IMAGE_PIXELS = pil_limit
        with opened as image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ValueError(
                    f"{name!r} has {image.width}x{image.height} pixels, more than max_pixels={max_pixels}; pass a "
                    "larger max_pixels (or None) to open it anyway."
                )
            image.seek(0)  # animations: the first frame
            return pil_to_rgb(PIL.ImageOps.exif_transpose(image))
    except (OSError, PIL.Image.DecompressionBombError, SyntaxError) as error:
        raise ValueError(f"cannot read {name!r} as an image: {error}") from error
