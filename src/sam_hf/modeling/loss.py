"""The SAM paper's training loss: focal and dice on the masks (20:1), the mask gradient only for the lowest-loss of
the candidate masks, plus mean-squared error between predicted and actual IoU."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from ..geometry import mask_iou

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0


@dataclass
class SamLoss:
    """`total = mask + iou`; every field is a scalar tensor."""

    total: torch.Tensor
    mask: torch.Tensor
    iou: torch.Tensor


def dice_loss(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`1 - (2|P∩T| + 1) / (|P| + |T| + 1)` over the last two axes (soft, with +1 smoothing)."""
    intersection = (probabilities * targets).sum(dim=(-2, -1))
    total = probabilities.sum(dim=(-2, -1)) + targets.sum(dim=(-2, -1))
    return 1 - (2 * intersection + 1) / (total + 1)


def sam_loss(
    pred_masks: torch.Tensor,
    iou_scores: torch.Tensor,
    labels: torch.Tensor,
    focal_alpha: float = -1.0,
    focal_gamma: float = 2.0,
) -> SamLoss:
    """
    Args:
        pred_masks: `(batch_size, point_batch_size, num_masks, h, w)` mask logits.
        iou_scores: `(batch_size, point_batch_size, num_masks)` predicted IoU.
        labels: `(batch_size, point_batch_size, H, W)` ground-truth masks (0/1); logits are resized bilinearly to
            `(H, W)` when the sizes differ.
        focal_alpha: focal loss class weight (-1 = none; 0.25 stalled training from scratch in our runs).
        focal_gamma: focal loss focusing parameter.
    """
    targets = labels.to(pred_masks.dtype)
    if pred_masks.shape[-2:] != targets.shape[-2:]:
        pred_masks = F.interpolate(
            pred_masks.flatten(0, 1), size=targets.shape[-2:], mode="bilinear", align_corners=False
        ).unflatten(0, pred_masks.shape[:2])
    targets = targets[:, :, None].expand_as(pred_masks)
    focal = sigmoid_focal_loss(pred_masks, targets, alpha=focal_alpha, gamma=focal_gamma).mean(dim=(-2, -1))
    per_mask = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice_loss(pred_masks.sigmoid(), targets)
    # Multimask output: only the best candidate is trained to match, so the others stay free to cover other readings.
    mask = per_mask.min(dim=-1).values.mean()
    actual_iou = mask_iou(pred_masks.detach() > 0, targets > 0.5, empty=1.0)  # an empty target, an empty mask: right
    iou = IOU_WEIGHT * F.mse_loss(iou_scores, actual_iou)
    return SamLoss(total=mask + iou, mask=mask, iou=iou)
