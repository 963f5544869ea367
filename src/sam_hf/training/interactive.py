"""The paper's simulated interactive training (section 3 and appendix A): an initial point or box per object, then
corrective points sampled from the error region, with the previous low-resolution logits fed back as mask prompt,
and rounds without a new point so the model learns to refine from its own mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling import SamModel
from ..modeling.loss import sam_loss
from ..processing import SamProcessor
from ..prompts import BACKGROUND_LABEL, FOREGROUND_LABEL, NOT_A_POINT_LABEL

BOX_NOISE = 0.1  # box corners move by N(0, 10% of the side), at most 20 px, as in the paper
BOX_NOISE_MAX = 20.0
PROMPTS_PER_IMAGE = 4  # objects prompted per image and step (the decoder is cheap next to the encoder)


def masks_to_input_frame(masks: np.ndarray, processor: SamProcessor) -> torch.Tensor:
    """Bool masks `(n, H, W)` of an image -> `(n, S, S)` in the model's input frame: resized as the processor resizes
    the image (nearest neighbour), then zero-padded at the bottom / right to its `pad_size`."""
    image_processor = processor.image_processor
    new_h, new_w = image_processor.resized_size(*masks.shape[-2:])
    resized = F.interpolate(torch.from_numpy(masks)[None].float(), (new_h, new_w), mode="nearest")[0] > 0.5
    pad = image_processor.pad_size
    return F.pad(resized, (0, pad.width - new_w, 0, pad.height - new_h))


def interactive_batch(
    examples: Sequence[tuple[np.ndarray, np.ndarray]],
    processor: SamProcessor,
    prompts_per_image: int = PROMPTS_PER_IMAGE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tensors `InteractiveTrainer` consumes, from `(image (H, W, 3) uint8, masks (n, H, W) bool)` examples.

    Returns:
        `pixel_values (B, 3, S, S)` and bool ground truth `(B, prompts_per_image, S, S)` in the model's input frame:
        each image's masks in order, cycled to fill the prompt slots.
    """
    pixel_values = processor(images=[image for image, _ in examples])["pixel_values"]
    gt = [
        masks_to_input_frame(masks[np.resize(np.arange(len(masks)), prompts_per_image)], processor)
        for _, masks in examples
    ]
    return pixel_values, torch.stack(gt)


def _pixel_coordinates(flat_index: torch.Tensor, width: int) -> torch.Tensor:
    """Flat pixel indices -> (x, y) pixel coordinates, float."""
    return torch.stack([flat_index % width, flat_index // width], dim=-1).float()


def sample_points(regions: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One pixel uniformly from each region.

    Args:
        regions: bool `(..., H, W)`, on any device.
        generator: a CPU generator: one uniform number per region is drawn on the CPU and moved to the regions'
            device, so that a seed gives the same points on every device.

    Returns:
        points `(..., 2)` (x, y) and a bool `(...)` telling which regions were non-empty (empty ones give (0, 0)).
    """
    flat = regions.flatten(-2).reshape(-1, regions.shape[-2] * regions.shape[-1]).float()
    found = flat.sum(dim=-1) > 0
    flat[~found] = 1.0  # any pixel: the caller discards it
    # The k-th pixel of the region, k uniform: the first whose running count exceeds u * count.
    counts = flat.cumsum(dim=-1)
    draws = torch.rand(len(flat), 1, generator=generator).to(flat.device)
    index = torch.searchsorted(counts, draws * counts[:, -1:], right=True).clamp_max(flat.shape[-1] - 1).squeeze(-1)
    points = _pixel_coordinates(index, regions.shape[-1]) * found[:, None]
    return points.reshape(*regions.shape[:-2], 2), found.reshape(regions.shape[:-2])


def sample_error_points(
    pred_masks: torch.Tensor, gt_masks: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A corrective click per prompt, uniformly from the pixels the prediction gets wrong: foreground where it missed
    the object, background where it spilled over; "not a point" where there is no error.

    Args:
        pred_masks, gt_masks: bool `(..., H, W)`.

    Returns:
        points `(..., 2)` (x, y) and labels `(...)` int64.
    """
    error = pred_masks ^ gt_masks
    points, found = sample_points(error, generator)
    x, y = points[..., 0].long(), points[..., 1].long()
    missed = torch.gather(gt_masks.flatten(-2), -1, (y * gt_masks.shape[-1] + x)[..., None]).squeeze(-1)
    labels = torch.where(missed, FOREGROUND_LABEL, BACKGROUND_LABEL)
    return points, torch.where(found, labels, NOT_A_POINT_LABEL)


def noisy_boxes(gt_masks: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """XYXY boxes `(..., 4)` of bool masks `(..., H, W)` with the paper's corner noise."""
    rows, cols = gt_masks.any(dim=-1), gt_masks.any(dim=-2)
    arange_h = torch.arange(gt_masks.shape[-2], device=gt_masks.device)
    arange_w = torch.arange(gt_masks.shape[-1], device=gt_masks.device)
    y0 = torch.where(rows, arange_h, gt_masks.shape[-2]).min(dim=-1).values
    y1 = torch.where(rows, arange_h, -1).max(dim=-1).values
    x0 = torch.where(cols, arange_w, gt_masks.shape[-1]).min(dim=-1).values
    x1 = torch.where(cols, arange_w, -1).max(dim=-1).values
    boxes = torch.stack([x0, y0, x1, y1], dim=-1).float()
    sides = torch.stack([x1 - x0, y1 - y0], dim=-1).float().repeat(*([1] * (boxes.ndim - 1)), 2)
    noise = torch.randn(boxes.shape, generator=generator).to(boxes.device) * BOX_NOISE * sides  # CPU generator
    boxes = boxes + noise.clamp(-BOX_NOISE_MAX, BOX_NOISE_MAX)
    low, high = torch.minimum(boxes[..., :2], boxes[..., 2:]), torch.maximum(boxes[..., :2], boxes[..., 2:])
    return torch.cat([low, high], dim=-1)


class InteractiveTrainer(torch.nn.Module):
    """`forward(pixel_values, gt_masks) -> loss` of one simulated interaction: one module to hand to
    `accelerate.Accelerator.prepare`, so that data-parallel training syncs gradients of every decoder round."""

    def __init__(self, model: SamModel, num_corrective_points: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.num_corrective_points = num_corrective_points
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, pixel_values: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
        """`pixel_values (B, 3, S, S)` and bool `gt_masks (B, P, S, S)` -> scalar loss of one simulated interaction
        per prompt (mean over rounds)."""
        embeddings = self.model.get_image_embeddings(pixel_values)
        return interactive_loss(self.model, embeddings, gt_masks, self.num_corrective_points, self.generator).total


@dataclass
class InteractiveLoss:
    """`interactive_loss`'s result: `total` (scalar, the mean over rounds, with gradient) and `per_round`
    (`(rounds,)` each round's loss, detached)."""

    total: torch.Tensor  # mean over rounds
    per_round: torch.Tensor  # (rounds,) each round's loss, detached (no device sync per round)


def interactive_loss(
    model: SamModel,
    image_embeddings: torch.Tensor,
    gt_masks: torch.Tensor,
    num_corrective_points: int = 2,
    generator: torch.Generator | None = None,
) -> InteractiveLoss:
    """The paper's loss over one simulated interaction per object, from one image encoding.

    Rounds: a single foreground click (3 candidate masks), a noisy box (1 mask), then `num_corrective_points` rounds
    that add a click from the error region of the click branch, and a last round with no new click; every round after
    the first gets the previous round's best low-resolution logits as mask prompt (detached).

    Args:
        image_embeddings: `(batch_size, C, h, w)`.
        gt_masks: bool `(batch_size, point_batch_size, H, W)` in the model's input frame (H = W = image size).
    """
    size = model.config.prompt_encoder_config.image_size
    if gt_masks.shape[-2:] != (size, size):
        raise ValueError(
            f"gt_masks must be (batch_size, point_batch_size, {size}, {size}), got {tuple(gt_masks.shape)}."
        )
    losses = []

    def decode(multimask: bool, **prompts: torch.Tensor) -> torch.Tensor:
        output = model(image_embeddings=image_embeddings, multimask_output=multimask, **prompts)
        losses.append(sam_loss(output.pred_masks, output.iou_scores, gt_masks).total)
        best = output.iou_scores.argmax(dim=-1)[..., None, None, None].expand(-1, -1, 1, *output.pred_masks.shape[-2:])
        return output.pred_masks.gather(2, best).squeeze(2).detach()  # (B, P, h, w) logits of the chosen mask

    points, _ = sample_points(gt_masks, generator)
    points, labels = points[:, :, None], torch.full((*points.shape[:2], 1), FOREGROUND_LABEL, device=points.device)
    logits = decode(True, input_points=points, input_labels=labels)
    decode(False, input_boxes=noisy_boxes(gt_masks, generator))
    for round_index in range(num_corrective_points + 1):
        if round_index < num_corrective_points:  # the last round refines from the mask alone
            upscaled = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False) > 0
            new_points, new_labels = sample_error_points(upscaled, gt_masks, generator)
            points = torch.cat([points, new_points[:, :, None]], dim=2)
            labels = torch.cat([labels, new_labels[:, :, None]], dim=2)
        logits = decode(False, input_points=points, input_labels=labels, input_masks=logits)
    total = torch.stack(losses).mean()
    return InteractiveLoss(total=total, per_round=torch.stack(losses).detach())
