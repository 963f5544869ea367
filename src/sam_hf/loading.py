"""Loading a model + processor and images by name, with the bundled model as the offline default (CLI, Space)."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import PIL.Image
import PIL.ImageOps
import torch
from safetensors import SafetensorError

from .clip_scoring import ClipScorer
from .conversion import OFFICIAL_SUFFIXES, load_official
from .modeling import SamModel
from .processing import SamProcessor
from .processing.image_inputs import MAX_IMAGE_PIXELS
from .processing.image_processing_sam import pil_to_rgb

# The small model this project trains on generated shapes and ships: the offline default of the CLI and the Space.
BUNDLED_MODEL_PATH = str(Path(__file__).parent / "bundled" / "sam-hf-shapes")
# Its small CLIP, trained on the same scenes: scores regions for zero-shot text prompts on the bundled model.
BUNDLED_CLIP_PATH = str(Path(__file__).parent / "bundled" / "sam-hf-shapes-clip")

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


def _official_files(name: str) -> list[str]:
    """The official checkpoint files (`.pth`, `.pt`) in a directory or Hub repository (listed on the Hub or, offline,
    in its cached snapshot); `[]` when it cannot be listed."""
    folder = Path(name)
    try:
        if not folder.is_dir() and huggingface_hub.constants.is_offline_mode():
            folder = Path(huggingface_hub.snapshot_download(name, local_files_only=True))
        if folder.is_dir():
            files = [path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()]
        else:
            files = huggingface_hub.list_repo_files(name)
    except (OSError, ValueError):  # not a repository, not cached offline, no network
        return []
    return sorted(file for file in files if file.endswith(OFFICIAL_SUFFIXES))


@contextlib.contextmanager
def _damaged_files_named(name: str, json_file: str) -> Iterator[None]:
    """Re-raises what a damaged or hostile checkpoint makes transformers fail with as a `ValueError` naming the file:
    `json_file` nested deeper than Python's recursion limit, a safetensors file cut short or corrupt."""
    try:
        yield
    except RecursionError:
        raise ValueError(f"cannot read {name}/{json_file}: its JSON nests too deeply to be a SAM config.") from None
    except SafetensorError as error:
        raise ValueError(f"cannot read {name}/model.safetensors: truncated or corrupt ({error}).") from None


def _hub_download(repo_id: str, filename: str) -> str:
    try:
        return huggingface_hub.hf_hub_download(repo_id, filename)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"cannot get {filename!r} from the Hub repository {repo_id!r}: {error}") from None


def _official_checkpoint(name: str, filename: str | None) -> str | None:
    """The local path of the official checkpoint that `load_sam(name, filename=filename)` means (downloaded if it is
    on the Hub), or `None` when `name` is a model directory or Hub id."""
    if filename is not None:
        return os.path.join(name, filename) if Path(name).is_dir() else _hub_download(name, filename)
    if Path(name).is_file():
        return name
    if name.endswith(OFFICIAL_SUFFIXES):  # "org/repo/path/in/repo.pth": a file in a Hub repository
        parts = name.split("/")
        if len(parts) < 3 or os.path.isabs(name) or name.startswith("."):  # a local path after all
            raise FileNotFoundError(f"no checkpoint file at {name!r} (a Hub file is named 'org/repo/file.pth').")
        return _hub_download("/".join(parts[:2]), "/".join(parts[2:]))
    return None


def load_sam(
    model: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    filename: str | None = None,
) -> tuple[SamModel, SamProcessor]:
    """Loads a sam_hf model in eval mode and its processor, from any SAM checkpoint layout users have.

    Args:
        model: one of
            - a model directory or Hub id (`facebook/sam-vit-base`) in sam_hf's or transformers' layout, with
              `model.safetensors` and/or `pytorch_model.bin` (`SamModel.from_pretrained`);
            - an official checkpoint file (`sam_vit_h_4b8939.pth`), converted in memory, its size read off the
              tensor shapes;
            - `"org/repo/path/to/file.pth"`: an official checkpoint in a Hub repository; a directory or Hub
              repository holding no model files but one official checkpoint also loads by its name;
            - `None`: the bundled small model.
        device: where to put the model; the first GPU when there is one, else the CPU, if `None`.
        dtype: `"float32"` (default), `"float16"` or `"bfloat16"`.
        filename: an official checkpoint file inside the directory or Hub repository `model`.

    Returns:
        `(model, processor)`; a checkpoint saved without a processor gets one matching its input size.

    Raises:
        OSError: no such file, directory or Hub repository (or file in it).
        ValueError: a file that is not a SAM checkpoint, an official checkpoint holding anything but tensors, or
            several official checkpoints and no `filename`.
        pickle.UnpicklingError: a `pytorch_model.bin` holding anything but tensors (as transformers raises it).
        TypeError: `model` or `filename` of the wrong type.
    """
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a Hub id or a path (str or os.PathLike), got {type(model).__name__}.")
    if filename is not None and not isinstance(filename, str):
        raise TypeError(f"filename must be a file name (str) inside `model`, got {type(filename).__name__}.")
    name = BUNDLED_MODEL_PATH if model is None else os.fspath(model)
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    checkpoint = _official_checkpoint(name, filename)
    if checkpoint is None:
        try:
            with _damaged_files_named(name, "config.json"):
                sam = SamModel.from_pretrained(name)
        except OSError:  # no model files: a directory or Hub repository holding one official checkpoint loads too
            official = _official_files(name)
            if len(official) > 1:
                raise ValueError(
                    f"{name!r} holds no model files but several official checkpoints {official}: choose one with "
                    f"filename=... (or the model name '{name}/{official[0]}')."
                ) from None
            if not official:
                raise
            checkpoint = _official_checkpoint(name, official[0])
    if checkpoint is not None:
        sam = load_official(checkpoint)
        processor = SamProcessor.for_config(sam.config)
    else:
        try:
            with _damaged_files_named(name, "processor_config.json"):
                processor = SamProcessor.from_pretrained(name)
        except OSError:  # no processor config in the checkpoint
            processor = SamProcessor.for_config(sam.config)
    return sam.to(device=device, dtype=dtype).eval(), processor


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
    return _decode(path, name, max_pixels)


def decode_image(data: bytes, name: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> PIL.Image.Image:
    """`open_image` for an encoded image held in memory (a data set's image bytes); `name` identifies it in errors."""
    return _decode(io.BytesIO(data), name, max_pixels)


def _decode(file: str | os.PathLike | io.BytesIO, name: str, max_pixels: int | None) -> PIL.Image.Image:
    try:
        with _PIL_LIMIT_LOCK:  # the limit that applies is `max_pixels`, checked below, not PIL's global one
            pil_limit, PIL.Image.MAX_IMAGE_PIXELS = PIL.Image.MAX_IMAGE_PIXELS, None
            try:
                opened = PIL.Image.open(file)
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
        # PIL repeats the file (an in-memory one by its repr): named once, the same for a file and its bytes
        detail = str(error).replace(f" {file!r}", "").replace(f" {name!r}", "")
        raise ValueError(f"cannot read {name!r} as an image: {detail}") from error
