"""CLIP scoring of masks: the views of a masked region that CLIP sees, and `ClipScorer`, which embeds those views and
text with any open_clip model (a Hub / pretrained one, or a local directory such as the bundled CLIP).

Views follow what works best for CLIP scoring of SAM masks: a square crop of the mask's box expanded ~1.3x that keeps
the surroundings but blurs everything outside the mask, ensembled with a view whose outside is a flat grey.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageFilter
import safetensors.torch
import torch
import torch.nn.functional as F

from .geometry import mask_boxes

CONTEXT_SCALE = 1.3  # crop side / longest side of the mask's box
BLUR_FRACTION = 0.06  # Gaussian blur radius outside the mask, as a fraction of the crop side
GREY = (128, 128, 128)  # outside the image, and outside the mask in the "grey" view
DEFAULT_TEMPLATES = ("a photo of a {}.",)
# Scored against every region: the query must beat all of them, so "not found" is a possible answer.
DEFAULT_BACKGROUND = ("background", "floor", "wall", "sky", "ground", "texture", "pattern", "a blurry photo")
DEFAULT_THRESHOLD = 0.2  # absolute cosine a match must reach (typical of CLIP ViT-B image-text pairs)
SAM_HF_KEY = "sam_hf"  # scoring settings stored beside open_clip's own keys in open_clip_config.json


def square_crop_box(box: Sequence[float], scale: float) -> tuple[int, int, int, int]:
    """The square crop `(left, top, right, bottom)` (slice bounds) centred on the pixels of `box` (`sam_hf.geometry`'s
    XYXY, inclusive end) with side `scale` x their longest side (>= 1 px)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x2, y2 = x2 + 1, y2 + 1  # the far edges of the last column and row
    side = max(x2 - x1, y2 - y1, 1.0) * scale
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    return left, top, left + round(side), top + round(side)


def region_view(
    image: np.ndarray, mask: np.ndarray, scale: float = CONTEXT_SCALE, background: str = "blur"
) -> PIL.Image.Image:
    """One square view of the region `mask` of `image`, for CLIP.

    Args:
        image: `(H, W, 3)` uint8 RGB.
        mask: `(H, W)` bool, non-empty.
        scale: crop side relative to the mask's box (1 = tight); parts outside the image are grey.
        background: what happens outside the mask: `"blur"` (context kept, blurred), `"grey"` or `"black"`
            (removed), or `"keep"`.
    """
    if background not in ("blur", "grey", "black", "keep"):
        raise ValueError(f"background must be 'blur', 'grey', 'black' or 'keep', got {background!r}.")
    left, top, right, bottom = square_crop_box(mask_boxes(mask).tolist(), scale)
    height, width = mask.shape
    pad = max(0, -left, -top, right - width, bottom - height)
    crop = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), constant_values=GREY[0])
    crop = crop[top + pad : bottom + pad, left + pad : right + pad].copy()
    inside = np.pad(mask, pad)[top + pad : bottom + pad, left + pad : right + pad]
    if background == "blur":
        radius = max(1.0, BLUR_FRACTION * (right - left))
        blurred = np.asarray(PIL.Image.fromarray(crop).filter(PIL.ImageFilter.GaussianBlur(radius)))
        crop = np.where(inside[..., None], crop, blurred)
    elif background != "keep":
        crop[~inside] = GREY if background == "grey" else (0, 0, 0)
    return PIL.Image.fromarray(crop)


class ClipScorer:
    """Unit-norm CLIP embeddings of image regions and texts, from an open_clip model.

    Args:
        model: an open_clip CLIP (`encode_image`, `encode_text`).
        preprocess: open_clip's eval transform, PIL image -> `(3, S, S)` tensor.
        tokenizer: texts -> `(n, context_length)` token ids.
        templates: prompt templates, `"{}"` replaced by the text; text embeddings are averaged over them.
        background: the background vocabulary a match must beat.
        threshold: the absolute cosine similarity a match must reach.
        architecture: the open_clip model config `model` was built from (needed to save it, or to give a SAM model
            this CLIP's text tower).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[PIL.Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        background: Sequence[str] = DEFAULT_BACKGROUND,
        threshold: float = DEFAULT_THRESHOLD,
        architecture: dict[str, Any] | None = None,
    ) -> None:
        if not templates or any("{}" not in template for template in templates):
            raise ValueError(f"templates must be non-empty and each contain '{{}}', got {templates!r}.")
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.templates = tuple(templates)
        self.background = tuple(background)
        self.threshold = float(threshold)
        self.architecture = architecture

    @classmethod
    def from_open_clip(cls, name: str, pretrained: str | None = None, device: str | None = None, **kwargs: Any):
        """Any open_clip model: `("ViT-B-16", "laion2b_s34b_b88k")`, `"hf-hub:org/repo"` or `"local-dir:/path"`.
        A local directory written by `save` also restores its templates, background vocabulary and threshold."""
        import open_clip  # imported when a CLIP is loaded: it takes seconds

        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
        settings = {"architecture": open_clip.get_model_config(name)}
        if name.startswith("local-dir:"):
            config = json.loads(Path(name.removeprefix("local-dir:"), "open_clip_config.json").read_text())
            settings = {**config.get(SAM_HF_KEY, {}), "architecture": config["model_cfg"]}
        return cls(model, preprocess, open_clip.get_tokenizer(name), **{**settings, **kwargs})

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | None = None, **kwargs: Any) -> ClipScorer:
        """The CLIP saved in `directory` by `save` (open_clip's `local-dir` layout, safetensors weights)."""
        return cls.from_open_clip(f"local-dir:{os.fspath(directory)}", device=device, **kwargs)

    def save(self, directory: str | os.PathLike) -> None:
        """Writes open_clip's local layout (`open_clip_config.json`, `open_clip_model.safetensors`) plus the scoring
        settings, for `from_pretrained`."""
        if self.architecture is None:
            raise ValueError("Saving needs the open_clip model config: pass architecture= to ClipScorer.")
        import open_clip

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(
            {key: value.contiguous() for key, value in self.model.state_dict().items()},
            directory / "open_clip_model.safetensors",
        )
        config = {
            "model_cfg": self.architecture,
            "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
            SAM_HF_KEY: {"templates": self.templates, "background": self.background, "threshold": self.threshold},
        }
        (directory / "open_clip_config.json").write_text(json.dumps(config, indent=1))

    @property
    def device(self) -> torch.device:
        """Device of the CLIP model's parameters."""
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_images(self, images: Sequence[PIL.Image.Image], batch_size: int = 64) -> torch.Tensor:
        """`(len(images), embed_dim)` unit vectors."""
        embeddings = []
        for start in range(0, len(images), batch_size):
            pixels = torch.stack([self.preprocess(image) for image in images[start : start + batch_size]])
            embeddings.append(F.normalize(self.model.encode_image(pixels.to(self.device)).float(), dim=-1))
        return torch.cat(embeddings) if embeddings else torch.empty(0, 0)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """`(len(texts), embed_dim)` unit vectors, each the normalised mean over the templates."""
        prompts = [template.format(text) for text in texts for template in self.templates]
        embeddings = F.normalize(self.model.encode_text(self.tokenizer(prompts).to(self.device)).float(), dim=-1)
        return F.normalize(embeddings.view(len(texts), len(self.templates), -1).mean(1), dim=-1)

    def embed_regions(self, image: np.ndarray, masks: Sequence[np.ndarray]) -> torch.Tensor:
        """`(len(masks), embed_dim)`: per mask, the normalised mean of its blurred-context and grey views."""
        views = [region_view(image, mask, background=kind) for mask in masks for kind in ("blur", "grey")]
        embeddings = self.embed_images(views)
        return F.normalize(embeddings.view(len(masks), 2, -1).mean(1), dim=-1)
