"""Plain helpers shared by the tests (fixtures live in conftest.py): small model configs, weight perturbation, the
tiny CLIP, generated stand-ins for photos, and the README's photos for the tests that use them as extras."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch.utils._python_dispatch import TorchDispatchMode

from sam_hf import SamConfig
from sam_hf.clip_scoring import ClipScorer
from sam_hf.data import generate_scene
from sam_hf.everything import decode_segmentation
from sam_hf.geometry import mask_iou

# The README's photos (dog.jpg, truck.jpg, groceries.jpg): beside the repository in this project's workspace, or
# wherever SAM_HF_PHOTOS points.
PHOTOS = Path(os.environ.get("SAM_HF_PHOTOS", Path(__file__).resolve().parents[2] / "shared" / "images"))

# A small official-architecture SAM: 256 input, 16x16 tokens (padded to 21x21 by the 7x7 windows), 2 blocks.
SMALL = {"image_size": 256, "embed_dim": 64, "depth": 2, "heads": 2, "window": 7, "global": [1], "prompt_dim": 256}

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def in_ci() -> bool:
    """Whether the tests run under CI (`CI=true`, as CI and `.ci/run` set it): there a missing photo or browser fails
    the test instead of skipping it."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def photo(name: str) -> Path:
    """The path of the README photo `name`. A missing photo fails the test under `CI=true` (CI must check what the
    README claims) and skips it elsewhere, with the reason."""
    path = PHOTOS / name
    if not path.is_file():
        reason = f"{path} is missing (set SAM_HF_PHOTOS to the folder of dog.jpg, truck.jpg, groceries.jpg)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def scene_image(seed: int, height: int, width: int) -> np.ndarray:
    """A photo stand-in of any size, `(height, width, 3)` uint8: a generated scene (textured, occluding shapes on a
    cluttered background) drawn at the longer side and cropped to the shorter."""
    return generate_scene(seed, max(height, width)).image[:height, :width]


def perturb_(model: torch.nn.Module, seed: int, buffers: bool = False) -> torch.nn.Module:
    """Adds 0.02 * randn to every parameter (and with `buffers`, every floating-point buffer but the official pixel
    mean and std, e.g. BatchNorm running statistics): zero/one-initialised tables would hide key-mapping mistakes.
    Ends with `eval()`, which lets modules rebuild caches of their parameters (TinyViT's attention biases)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = list(model.parameters())
    if buffers:
        named = model.named_buffers()
        tensors += [b for name, b in named if b.is_floating_point() and not name.endswith(("pixel_mean", "pixel_std"))]
    with torch.no_grad():
        for tensor in tensors:
            tensor.add_(0.02 * torch.randn(tensor.shape, generator=generator))
    return model.eval()


def small_official_sam() -> Sam:
    """The official `Sam` at the `SMALL` size, default (random) initialisation."""
    embedding_size = SMALL["image_size"] // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=SMALL["image_size"],
            embed_dim=SMALL["embed_dim"],
            depth=SMALL["depth"],
            num_heads=SMALL["heads"],
            window_size=SMALL["window"],
            global_attn_indexes=SMALL["global"],
            out_chans=SMALL["prompt_dim"],
            norm_layer=lambda dim: torch.nn.LayerNorm(dim, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=SMALL["prompt_dim"],
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(SMALL["image_size"], SMALL["image_size"]),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=SMALL["prompt_dim"], mlp_dim=2048, num_heads=8),
            transformer_dim=SMALL["prompt_dim"],
        ),
    )


def small_sam_config() -> SamConfig:
    """The sam_hf config of `small_official_sam()`."""
    return SamConfig(
        vision_config={
            "image_size": SMALL["image_size"],
            "hidden_size": SMALL["embed_dim"],
            "num_hidden_layers": SMALL["depth"],
            "num_attention_heads": SMALL["heads"],
            "window_size": SMALL["window"],
            "global_attn_indexes": SMALL["global"],
        },
        prompt_encoder_config={"image_size": SMALL["image_size"]},
    )


def tiny_config() -> SamConfig:
    """A fast model for API, input-checking and training tests: 128 input, 2 blocks of width 32, 64-wide decoder."""
    return SamConfig(
        vision_config={
            "image_size": 128,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "window_size": 4,
            "global_attn_indexes": [1],
            "output_channels": 64,
            "num_pos_feats": 32,
        },
        prompt_encoder_config={"image_size": 128, "hidden_size": 64},
        mask_decoder_config={"hidden_size": 64, "mlp_dim": 128, "num_attention_heads": 2, "iou_head_hidden_dim": 64},
    )


def tiny_text_config(**text: object) -> SamConfig:
    """`tiny_config()` with a text encoder holding `TINY_CLIP`'s text tower (`text`: more text-config fields)."""
    config = tiny_config()
    return SamConfig(
        vision_config=config.vision_config,
        prompt_encoder_config=config.prompt_encoder_config,
        mask_decoder_config=config.mask_decoder_config,
        text_config={"clip_architecture": TINY_CLIP, **text},
    )


def tiny_clip_scorer(**settings: object) -> ClipScorer:
    """A `ClipScorer` around a seeded random `TINY_CLIP` (`settings`: more `ClipScorer` arguments)."""
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY_CLIP)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=12)
    transform = open_clip.image_transform(32, is_train=False)
    return ClipScorer(model, transform, tokenizer, architecture=TINY_CLIP, **settings)


def hub_preprocessor_config(size: int = 1024) -> dict[str, object]:
    """The `preprocessor_config.json` of the Hub's `facebook/sam-vit-*` repos (REFERENCE.md section 11), for a
    `size`-pixel input."""
    return {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "SamImageProcessor",
        "image_std": [0.229, 0.224, 0.225],
        "pad_size": {"height": size, "width": size},
        "processor_class": "SamProcessor",
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"longest_edge": size},
    }


def make_prompts(case: str, size: int, mask_size: int) -> dict[str, torch.Tensor | None]:
    """Official-layout prompts (one image, `num_prompts` prompts): coords (P, N, 2), labels (P, N), boxes (P, 4),
    masks (P, 1, mask_size, mask_size)."""
    generator = torch.Generator().manual_seed(sum(map(ord, case)))
    num_prompts = 16 if case.startswith("batch16") else 1
    num_points = {"point": 1, "mask_only": 0, "box": 0, "box_mask": 0}.get(case.removeprefix("batch16_"), 2)
    coords = labels = boxes = masks = None
    if num_points:
        coords = torch.rand(num_prompts, num_points, 2, generator=generator) * size
        labels = torch.ones(num_prompts, num_points, dtype=torch.long)
        labels[:, 1:] = torch.randint(0, 2, (num_prompts, num_points - 1), generator=generator)
    if "box" in case:
        corners = torch.rand(num_prompts, 2, 2, generator=generator) * size
        boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=-1)
    if "mask" in case:
        masks = 4 * torch.randn(num_prompts, 1, mask_size, mask_size, generator=generator)
    return {"coords": coords, "labels": labels, "boxes": boxes, "masks": masks}


def run_sam_hf(
    model: torch.nn.Module, embedding: torch.Tensor, prompts: dict[str, torch.Tensor | None], multimask_output: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """sam_hf's masks `(P, M, h, w)` and IoU `(P, M)` for `make_prompts` prompts on one image embedding."""

    def batched(tensor):
        return None if tensor is None else tensor[None]

    masks = prompts["masks"]
    with torch.no_grad():
        output = model(
            image_embeddings=embedding,
            input_points=batched(prompts["coords"]),
            input_labels=batched(prompts["labels"]),
            input_boxes=batched(prompts["boxes"]),
            input_masks=None if masks is None else masks[:, 0][None],
            multimask_output=multimask_output,
        )
    return output.pred_masks[0], output.iou_scores[0]


def assert_same_record(a: dict, b: dict) -> None:
    """Equal everything-mode records (or COCO annotations) up to float rounding: labelling processes / actors run with
    other thread counts than a single run, so a pixel whose logit is ~0 may flip."""
    for key in ("predicted_iou", "stability_score"):
        assert abs(a[key] - b[key]) < 1e-4, key
    assert np.allclose(a["bbox"], b["bbox"], atol=1) and a["crop_box"] == b["crop_box"]
    assert np.allclose(a["point_coords"], b["point_coords"], atol=1e-4)
    masks = [decode_segmentation(record["segmentation"]) for record in (a, b)]
    assert mask_iou(*masks, empty=1.0) > 0.99


def assert_same_coco(got: dict, want: dict) -> None:
    """Equal COCO files up to float rounding (`assert_same_record` per annotation)."""
    assert got["images"] == want["images"] and got["categories"] == want["categories"]
    assert got["info"]["failed"] == want["info"]["failed"]
    assert len(got["annotations"]) == len(want["annotations"])
    for a, b in zip(got["annotations"], want["annotations"], strict=True):
        assert a["image_id"] == b["image_id"] and a["score"] == a["predicted_iou"]
        assert_same_record(a, b)


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    """Equal Parquet label rows (`ParquetLabels.results()`): the same images (id, name, size, bytes, error), and for
    each the same number of masks, equal up to float rounding (`assert_same_record`)."""
    keys = ("image_id", "file_name", "height", "width", "sha256", "error")
    assert [[row[key] for key in keys] for row in got] == [[row[key] for key in keys] for row in want]
    for got_row, want_row in zip(got, want, strict=True):
        assert len(got_row["masks"] or []) == len(want_row["masks"] or [])
        for a, b in zip(got_row["masks"] or [], want_row["masks"] or [], strict=True):
            assert_same_record(a, b)


def run_official_hq(
    official: torch.nn.Module, encoded: tuple, prompts: dict, multimask: bool, hq_token_only: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """`segment_anything_hq`'s decoder (SAM-HQ or MobileSAM) on `make_prompts` prompts and `encoded =
    official.image_encoder(pixels)`, `(embeddings, interm_embeddings)` (`interm_embeddings` None for MobileSAM)."""
    points = None if prompts["coords"] is None else (prompts["coords"], prompts["labels"])
    embeddings, interm = encoded
    with torch.no_grad():
        sparse, dense = official.prompt_encoder(points=points, boxes=prompts["boxes"], masks=prompts["masks"])
        return official.mask_decoder(
            image_embeddings=embeddings,
            image_pe=official.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            hq_token_only=hq_token_only,
            interm_embeddings=interm,
        )


class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.numel = max(self.numel, tensor.numel())
        return out
