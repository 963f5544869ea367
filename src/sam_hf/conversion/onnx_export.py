"""Export a sam_hf model to ONNX as two graphs with the official Segment Anything ONNX interface
(segment_anything/utils/onnx.py `SamOnnxModel`, scripts/export_onnx_model.py):

- `image_encoder.onnx`: `pixel_values (batch, 3, S, S)` (from `SamProcessor`) -> `image_embeddings (batch, C, h, w)`.
- `mask_decoder.onnx`: the prompt encoder + mask decoder, once per prompt on a stored embedding:

  | input | shape, dtype | meaning |
  |---|---|---|
  | `image_embeddings` | `(1, C, h, w)` float32 | from the image encoder |
  | `point_coords` | `(1, num_points, 2)` float32 | (x, y) in the model's resized input frame (S pixels) |
  | `point_labels` | `(1, num_points)` float32 | -1 not a point, 0 background, 1 foreground, 2/3 box corners |
  | `mask_input` | `(1, 1, 4h, 4w)` float32 | low-res logits of a previous prediction |
  | `has_mask_input` | `(1,)` float32 | 1 to use `mask_input`, 0 to ignore it |
  | `orig_im_size` | `(2,)` float32 | (height, width) of the original image |

  outputs `masks (1, M, height, width)` logits in original-image pixels (threshold 0), `iou_predictions (1, M)` and
  `low_res_masks (1, M, 4h, 4w)`; `M` is 4 (the single-mask token, then the three multimask tokens) or 1 with
  `--return-single-mask` (best multimask candidate for one click, the single-mask token for more points).
  As in the official interface, a prompt without a box ends with one padding point `(0, 0)` of label -1.

    SAM-HQ models (`hq_token`) follow `segment_anything_hq`'s ONNX interface: the encoder also outputs
`interm_embeddings (1, batch, h, w, vit_dim)` (the first global-attention block's output; the official stacks every
global block's, and only the first is used), which the decoder takes right after `image_embeddings`; the decoder
returns one mask (`M` = 1): the single-mask token's mask plus the HQ mask (the official `multimask_output=False`), or
with `--return-single-mask` the mask chosen as above plus the HQ mask; `hq_token_only` exports the HQ mask alone.

    sam-hf export-onnx MODEL OUT_DIR [--return-single-mask] [--opset 18]

or `export_onnx(model, out_dir)` from Python. Needs the `onnx` extra (`pip install "sam_hf[onnx]"`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling import SamModel

ENCODER_FILE = "image_encoder.onnx"
DECODER_FILE = "mask_decoder.onnx"
DEFAULT_OPSET = 18
MIN_OPSET = 18  # the torch.export-based exporter writes opset 18 and later
BOX_CORNER_LABELS = (2, 3)  # official point labels of a box's top-left and bottom-right corners
ENCODER_OUTPUTS = ["image_embeddings"]
DECODER_INPUTS = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"]
# SAM-HQ's extra encoder output and decoder input (`segment_anything_hq.utils.onnx.SamOnnxModel`'s name).
HQ_FEATURE = "interm_embeddings"
DECODER_OUTPUTS = ["masks", "iou_predictions", "low_res_masks"]
LOW_RES_OUTPUTS = ["low_res_masks", "iou_predictions"]  # `SamLowResDecoder`'s graph (inputs: no orig_im_size)
# Weights above this go to an external data file: a single ONNX protobuf is limited to 2 GB (vit_h's encoder).
MAX_EMBEDDED_BYTES = 1 << 30


class SamOnnxImageEncoder(nn.Module):
    """`pixel_values (batch, 3, S, S)` -> `image_embeddings (batch, C, h, w)` with the model's own vision encoder; for
    SAM-HQ also `interm_embeddings (1, batch, h, w, vit_dim)`."""

    def __init__(self, model: SamModel) -> None:
        super().__init__()
        self.model = model
        self.channels = model.config.prompt_encoder_config.hidden_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`pixel_values (batch, 3, S, S)` -> `image_embeddings (batch, C, h, w)` (and SAM-HQ's early feature)."""
        embeddings = self.model._encode(pixel_values)[1]
        if not self.model.config.mask_decoder_config.hq_token:
            return embeddings
        return embeddings[:, : self.channels], embeddings[:, self.channels :].permute(0, 2, 3, 1)[None]


class SamOnnxDecoder(nn.Module):
    """The official ONNX decoder interface (module docstring) over sam_hf's prompt encoder and mask decoder.

    Args:
        model: a sam_hf `SamModel`; its submodules and weights are used as they are (not copied).
        return_single_mask: return one mask per call, chosen as the official `SamOnnxModel.select_masks` does.
        hq_token_only: SAM-HQ: the HQ mask alone instead of its sum with SAM's.
    """

    def __init__(self, model: SamModel, return_single_mask: bool = False, hq_token_only: bool = False) -> None:
        super().__init__()
        if not isinstance(model, SamModel):
            raise TypeError(f"model must be a sam_hf SamModel, got {type(model).__name__}.")
        self.hq = model.config.mask_decoder_config.hq_token
        if hq_token_only and not self.hq:
            raise ValueError("hq_token_only is for SAM-HQ models (mask_decoder_config.hq_token); this is not.")
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.image_size = model.config.vision_config.image_size
        self.return_single_mask = return_single_mask
        self.hq_token_only = hq_token_only
        # The grid's positional encoding depends on no input: a constant of the graph.
        self.register_buffer("image_pe", model.get_image_wide_positional_embeddings().detach(), persistent=False)

    def _embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """`(1, N, 2)`, `(1, N)` -> `(1, N, C)`: sam_hf's point embedding plus the box-corner labels 2 and 3, which
        sam_hf takes as boxes but the official interface as points."""
        embedding = self.prompt_encoder.embed_points(point_coords, point_labels)
        labels = point_labels[..., None]
        for label in BOX_CORNER_LABELS:
            corner = self.prompt_encoder.point_embed[label].weight
            embedding = torch.where(labels == label, embedding + corner, embedding)
        return embedding

    def _embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """`(1, 1, 4h, 4w)`, `(1,)` -> `(1, C, h, w)`; a weighted sum instead of a branch, so that one graph serves
        both cases (as the official)."""
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask_input * self.prompt_encoder.mask_embed(mask_input) + (1 - has_mask_input) * no_mask

    @staticmethod
    def _select_mask(
        masks: torch.Tensor, iou_predictions: torch.Tensor, num_points: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The official choice without control flow: one click plus the padding point (`num_points <= 2`) -> the
        best multimask candidate; more points -> the single-mask token. `(1, 4, ...)` -> `(1, 1, ...)`."""
        reweight = torch.zeros_like(iou_predictions[:1])
        reweight[:, 0] = 1000
        best = torch.argmax(iou_predictions + (num_points - 2.5) * reweight, dim=1)
        batch = torch.arange(masks.shape[0])
        return masks[batch, best][:, None], iou_predictions[batch, best][:, None]

    def _upscale(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """Low-res logits `(1, M, 4h, 4w)` -> `(1, M, height, width)`: to the input frame, remove the padding, to the
        original size (`SamImageProcessor.post_process_masks` with sizes that are graph inputs)."""
        masks = F.interpolate(masks, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        scale = self.image_size / orig_im_size.max()
        resized = torch.floor(orig_im_size * scale + 0.5).to(torch.int64)
        masks = masks[..., : resized[0], : resized[1]]
        height, width = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)

    def _decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All four mask tokens' low-res logits `(1, 4, 4h, 4w)`, single-mask first as the official interface
        returns them, their IoU `(1, 4)`, and SAM-HQ's HQ mask `(1, 1, 4h, 4w)` (for SAM: the last token's mask)."""
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_mask(mask_input, has_mask_input)
        low_res_masks, iou_predictions = self.mask_decoder(
            image_embeddings, self.image_pe, sparse[:, None], dense[:, None], multimask_output=None
        )
        low_res_masks, iou_predictions = low_res_masks[:, 0], iou_predictions[:, 0]
        return low_res_masks[:, : iou_predictions.shape[1]], iou_predictions, low_res_masks[:, -1:]

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs and outputs as in the module docstring (SAM-HQ: `image_embeddings` with the early feature)."""
        low_res_masks, iou_predictions, hq_masks = self._decode(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        if self.return_single_mask:
            low_res_masks, iou_predictions = self._select_mask(low_res_masks, iou_predictions, point_coords.shape[1])
        elif self.hq:  # segment_anything_hq's default (multimask_output=False): the single-mask token
            low_res_masks, iou_predictions = low_res_masks[:, :1], iou_predictions[:, :1]
        if self.hq:
            low_res_masks = hq_masks if self.hq_token_only else low_res_masks + hq_masks
        return self._upscale(low_res_masks, orig_im_size), iou_predictions, low_res_masks


class SamLowResDecoder(SamOnnxDecoder):
    """The decoder graph without upscaling, for callers that upscale only the mask they show (the Space's page):
    inputs as the official interface without `orig_im_size`; SAM-HQ's `image_embeddings (1, C + vit_dim, h, w)` carry
    the early feature on the channel axis (as sam_hf's embeddings do). Outputs `low_res_masks (1, 4, 4h, 4w)` (the
    single-mask token, then the three multimask tokens; SAM-HQ: each plus the HQ mask, or the HQ mask alone with
    `hq_token_only`) and `iou_predictions (1, 4)`. Upscale as `SamImageProcessor.post_process_masks` does."""

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and outputs as in the class docstring."""
        low_res_masks, iou_predictions, hq_masks = self._decode(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        if self.hq:
            low_res_masks = hq_masks.expand_as(low_res_masks) if self.hq_token_only else low_res_masks + hq_masks
        return low_res_masks, iou_predictions


class SamHQOnnxDecoder(SamOnnxDecoder):
    """SAM-HQ's decoder graph: `segment_anything_hq`'s interface, `interm_embeddings (N, 1, h, w, vit_dim)` (the
    global blocks' outputs, of which the first is used) after `image_embeddings` (module docstring)."""

    def forward(
        self,
        image_embeddings: torch.Tensor,
        interm_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs and outputs as in the module docstring."""
        embeddings = torch.cat([image_embeddings, interm_embeddings[0].permute(0, 3, 1, 2)], dim=1)
        return super().forward(embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size)


def decoder_module(model: SamModel, return_single_mask: bool = False, hq_token_only: bool = False) -> SamOnnxDecoder:
    """The decoder graph's module for `model`: `SamHQOnnxDecoder` for SAM-HQ, else `SamOnnxDecoder`."""
    hq = isinstance(model, SamModel) and model.config.mask_decoder_config.hq_token
    return (SamHQOnnxDecoder if hq else SamOnnxDecoder)(model, return_single_mask, hq_token_only)


def decoder_example_inputs(model: SamModel, num_points: int = 5, low_res: bool = False) -> dict[str, torch.Tensor]:
    """Inputs of the decoder graph for `model` (random, as the official export script's), keyed by input name;
    `low_res`: of `SamLowResDecoder`'s graph."""
    config = model.config.prompt_encoder_config
    size = config.image_embedding_size
    decoder = model.config.mask_decoder_config
    channels = config.hidden_size + (decoder.vit_dim if decoder.hq_token and low_res else 0)
    inputs = {"image_embeddings": torch.randn(1, channels, size, size)}
    if decoder.hq_token and not low_res:  # right after image_embeddings, as in segment_anything_hq's graph
        inputs[HQ_FEATURE] = torch.randn(2, 1, size, size, decoder.vit_dim)  # 2 global blocks' outputs
    inputs |= {
        "point_coords": torch.randint(0, config.image_size, (1, num_points, 2)).float(),
        "point_labels": torch.randint(-1, 4, (1, num_points)).float(),
        "mask_input": torch.randn(1, 1, 4 * size, 4 * size),
        "has_mask_input": torch.tensor([1.0]),
    }
    return inputs if low_res else inputs | {"orig_im_size": torch.tensor([1500.0, 2250.0])}


def _export(
    module: nn.Module,
    inputs: dict[str, torch.Tensor],
    path: Path,
    opset: int,
    output_names: list[str],
    dynamic_shapes: dict[str, dict[int, torch.export.Dim] | None],
) -> None:
    """torch.export-based ONNX export of `module(**inputs)`; sizes derived from input values (`orig_im_size`) stay
    symbolic in the graph."""
    num_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")  # two inputs share num_points
        torch.onnx.export(
            module.eval(),
            (),
            str(path),
            kwargs=inputs,
            input_names=list(inputs),
            output_names=output_names,
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            dynamo=True,
            external_data=num_bytes > MAX_EMBEDDED_BYTES,
            verbose=False,
        )


def _check_export_args(model: SamModel, opset: int) -> SamModel:
    if not isinstance(model, SamModel):
        raise TypeError(f"model must be a sam_hf SamModel, got {type(model).__name__}.")
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an integer >= {MIN_OPSET} (the torch.export-based exporter), got {opset!r}.")
    if model.device.type != "cpu" or model.dtype != torch.float32:  # export a CPU fp32 copy, leave the caller's
        model = copy.deepcopy(model).to("cpu", torch.float32)
    return model.eval()


@torch.no_grad()
def export_image_encoder(model: SamModel, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Writes the image encoder graph `pixel_values (batch, 3, S, S)` -> `image_embeddings (batch, C, h, w)`."""
    model = _check_export_args(model, opset)
    size = model.config.vision_config.image_size
    pixel_values = torch.randn(2, 3, size, size)  # batch 2: a batch of 1 would be specialised to 1
    _export(
        SamOnnxImageEncoder(model),
        {"pixel_values": pixel_values},
        Path(path),
        opset,
        ENCODER_OUTPUTS + ([HQ_FEATURE] if model.config.mask_decoder_config.hq_token else []),
        {"pixel_values": {0: torch.export.Dim("batch")}},
    )
    return Path(path)


@torch.no_grad()
def export_decoder(
    model: SamModel,
    path: str | Path,
    return_single_mask: bool = False,
    opset: int = DEFAULT_OPSET,
    hq_token_only: bool = False,
    low_res: bool = False,
) -> Path:
    """Writes the prompt encoder + mask decoder graph with the official interface (module docstring);
    `hq_token_only` for SAM-HQ models; `low_res`: `SamLowResDecoder`'s graph (no upscaling) instead."""
    model = _check_export_args(model, opset)
    if low_res and return_single_mask:
        raise ValueError("return_single_mask is for the official interface; the low_res graph returns every token.")
    points = {1: torch.export.Dim("num_points", min=1)}
    blocks = {0: torch.export.Dim("num_blocks", min=1)}  # the official passes every global block's output
    inputs = decoder_example_inputs(model, low_res=low_res)
    module = SamLowResDecoder(model, hq_token_only=hq_token_only) if low_res else None
    _export(
        module or decoder_module(model, return_single_mask, hq_token_only),
        inputs,
        Path(path),
        opset,
        LOW_RES_OUTPUTS if low_res else DECODER_OUTPUTS,
        {
            name: points if name in ("point_coords", "point_labels") else blocks if name == HQ_FEATURE else None
            for name in inputs
        },
    )
    return Path(path)


def decoder_cache_key(
    model: SamModel, return_single_mask: bool = False, opset: int = DEFAULT_OPSET, low_res: bool = False
) -> str:
    """A hash of what the decoder graph of `model` depends on: the prompt encoder's and mask decoder's weights (and
    the shared positional encoding), their configs, the export options and the torch version."""
    options = f"{torch.__version__} {opset} {return_single_mask} {DECODER_INPUTS}" + (" low_res" if low_res else "")
    digest = hashlib.sha256(options.encode())
    config = model.config
    for part in (config.prompt_encoder_config, config.mask_decoder_config):
        digest.update(json.dumps(part.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if not name.startswith("vision_encoder."):
            digest.update(name.encode() + tensor.detach().to("cpu", torch.float32).numpy().tobytes())
    return digest.hexdigest()[:32]


def default_cache_dir() -> Path:
    """Where `cached_decoder` keeps graphs: `$XDG_CACHE_HOME/sam_hf/onnx` (`~/.cache/sam_hf/onnx`)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sam_hf" / "onnx"


def cached_decoder(
    model: SamModel, cache_dir: str | Path | None = None, return_single_mask: bool = False, low_res: bool = False
) -> Path:
    """The decoder graph of `model` (`export_decoder`; `low_res`: `SamLowResDecoder`'s), exported once per model and
    kept under `cache_dir` (default `default_cache_dir()`) in a folder named by `decoder_cache_key`; later calls with
    the same weights return it.

    Returns:
        The path of the cached `mask_decoder.onnx`.
    """
    if not isinstance(model, SamModel):
        raise TypeError(f"model must be a sam_hf SamModel, got {type(model).__name__}.")
    directory = Path(cache_dir or default_cache_dir()) / decoder_cache_key(model, return_single_mask, low_res=low_res)
    path = directory / DECODER_FILE
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / f".{DECODER_FILE}.{os.getpid()}.{threading.get_ident()}"
        export_decoder(model, partial, return_single_mask, low_res=low_res)
        os.replace(partial, path)  # whole or absent: concurrent exports of one model may both write, one wins
    return path


def export_onnx(
    model: SamModel,
    output_dir: str | Path,
    return_single_mask: bool = False,
    opset: int = DEFAULT_OPSET,
    hq_token_only: bool = False,
) -> tuple[Path, Path]:
    """Writes `image_encoder.onnx` and `mask_decoder.onnx` for `model` (fp32, CPU) to `output_dir`
    (`hq_token_only`: SAM-HQ's decoder graph returns the HQ mask alone).

    Returns:
        The paths of the encoder and decoder graphs.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return (
        export_image_encoder(model, output_dir / ENCODER_FILE, opset),
        export_decoder(model, output_dir / DECODER_FILE, return_single_mask, opset, hq_token_only),
    )
