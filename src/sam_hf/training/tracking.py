"""Training for video: teach the decoder the prompt `sam_hf.video.VideoPredictor` gives a followed object on the next
frame. SAM-1 is trained on still images, where a box is tight and a mask prompt is the mask of the same image; in
video the box is last frame's mask widened by `VideoSettings.box_margin` and the mask prompt is last frame's
low-resolution logits, while the object has moved, turned, been cut by the frame edge or covered by another object,
or is gone (the target is then empty, and the predicted IoU learns to say so).

One example is a pair of frames of a clip, `(image_before, masks_before, image_after, masks_after)`, the masks of the
same objects in the same order. The object's mask on the frame before is the model's own (decoded from a noisy box
of the ground truth, without gradient), as it is when following.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import widened_boxes
from ..modeling import SamModel
from ..modeling.loss import SamLoss, sam_loss
from ..processing import SamProcessor
from ..video.predictor import VideoSettings
from .interactive import PROMPTS_PER_IMAGE, masks_to_input_frame, noisy_boxes

BOX_MARGIN = VideoSettings.box_margin  # the default the predictor follows with


def tracking_batch(
    examples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    processor: SamProcessor,
    rng: np.random.Generator,
    prompts_per_pair: int = PROMPTS_PER_IMAGE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tensors `TrackingTrainer` consumes, from frame pairs `(image_before (H, W, 3) uint8, masks_before (n, H, W)
    bool, image_after, masks_after)`.

    Returns:
        `pixel_values_before`, `pixel_values_after` `(B, 3, S, S)` and bool `gt_before`, `gt_after`
        `(B, prompts_per_pair, S, S)` in the model's input frame: objects visible on the frame before, sampled (with
        repetition when fewer), the same object in the same slot of both.
    """
    if any(len(before) != len(after) for _, before, _, after in examples):
        raise ValueError("each pair needs the masks of the same objects on both frames (masks_before, masks_after).")
    gt_before, gt_after = [], []
    for _, before, _, after in examples:
        visible = np.flatnonzero(before.any(axis=(1, 2)))
        if not len(visible):
            raise ValueError("a pair has no object visible on its first frame.")
        chosen = rng.choice(visible, prompts_per_pair, replace=len(visible) < prompts_per_pair)
        gt_before.append(masks_to_input_frame(before[chosen], processor))
        gt_after.append(masks_to_input_frame(after[chosen], processor))
    pixel_values = processor(images=[image for example in examples for image in example[::2]])["pixel_values"]
    return pixel_values[0::2], pixel_values[1::2], torch.stack(gt_before), torch.stack(gt_after)


def tracking_loss(
    model: SamModel,
    embeddings_before: torch.Tensor,
    embeddings_after: torch.Tensor,
    gt_before: torch.Tensor,
    gt_after: torch.Tensor,
    generator: torch.Generator | None = None,
    box_margin: float = BOX_MARGIN,
) -> SamLoss:
    """The paper's loss on the frame after, prompted as `VideoPredictor` prompts a followed object.

    The model decodes each object on the frame before from a noisy box of `gt_before` (no gradient); its mask there
    gives the widened box, its low-resolution logits the mask prompt, of one mask decoded on the frame after.

    Args:
        embeddings_before / embeddings_after: `(batch_size, C, h, w)` image embeddings of the two frames.
        gt_before / gt_after: bool `(batch_size, point_batch_size, S, S)` in the model's input frame (S = image size).
    """
    size = model.config.prompt_encoder_config.image_size
    if gt_before.shape != gt_after.shape or gt_after.shape[-2:] != (size, size):
        raise ValueError(
            f"gt_before and gt_after must both be (batch_size, point_batch_size, {size}, {size}), got "
            f"{tuple(gt_before.shape)} and {tuple(gt_after.shape)}."
        )
    with torch.no_grad():
        before = model(
            image_embeddings=embeddings_before.detach(),
            input_boxes=noisy_boxes(gt_before, generator),
            multimask_output=False,
        )
        logits = before.pred_masks[:, :, 0]  # (B, P, h, w)
        followed = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False) > 0
        # An object the model missed on the frame before is followed from its true box (the user's prompt).
        followed = torch.where(followed.any(dim=(-2, -1), keepdim=True), followed, gt_before)
        boxes = widened_boxes(followed, box_margin).float()
    after = model(image_embeddings=embeddings_after, input_boxes=boxes, input_masks=logits, multimask_output=False)
    return sam_loss(after.pred_masks, after.iou_scores, gt_after)


class TrackingTrainer(torch.nn.Module):
    """`forward(pixel_values_before, pixel_values_after, gt_before, gt_after) -> loss`: `tracking_loss` from the two
    frames' encodings (the frame before's without gradient; the frame after's with gradient when the image encoder
    trains)."""

    def __init__(self, model: SamModel, seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.generator = torch.Generator().manual_seed(seed)

    def forward(
        self,
        pixel_values_before: torch.Tensor,
        pixel_values_after: torch.Tensor,
        gt_before: torch.Tensor,
        gt_after: torch.Tensor,
    ) -> torch.Tensor:
        """`pixel_values_before`, `pixel_values_after` `(B, 3, S, S)` and bool `gt_before`, `gt_after` `(B, P, S, S)`
        -> scalar `tracking_loss`."""
        with torch.no_grad():
            embeddings_before = self.model.get_image_embeddings(pixel_values_before)
        embeddings_after = self.model.get_image_embeddings(pixel_values_after)
        return tracking_loss(self.model, embeddings_before, embeddings_after, gt_before, gt_after, self.generator).total
