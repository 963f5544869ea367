"""Training for video: teach the decoder the prompt `sam_hf.video.VideoPredictor` gives a followed object on the next
frame. SAM-1 is trained on still images, where a box is tight and a mask prompt is the mask of the same image; in
video the box is last frame's mask widened by `VideoSettings.box_margin` and the mask prompt is last frame's
low-resolution logits, while the object has moved, turned, been cut by the frame edge or covered by another object,
or is gone (the target is then empty, and the predicted IoU learns to say so).

One example is a pair of frames of a clip, `(image_before, masks_before, image_after, masks_after)`, the masks of the
same objects in the same order, or a chain of more frames. The object's mask on the frame before is the model's own
(decoded from a noisy box of the ground truth on the first frame, then followed through the chain, without gradient),
as it is when following.
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
    examples: Sequence[tuple[np.ndarray, ...]],
    processor: SamProcessor,
    rng: np.random.Generator,
    prompts_per_pair: int = PROMPTS_PER_IMAGE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tensors `TrackingTrainer` consumes, from frame pairs `(image_before (H, W, 3) uint8, masks_before (n, H, W)
    bool, image_after, masks_after)`, or chains of K + 1 frames `(image_0, masks_0, ..., image_K, masks_K)`: the
    object is followed through frames 0..K-1 and scored on frame K.

    Returns:
        `pixel_values_before` `(B, 3, S, S)` for pairs, `(B, K, 3, S, S)` for chains, `pixel_values_after`
        `(B, 3, S, S)`, and bool `gt_before` (`(B, prompts_per_pair, S, S)`, or `(B, K, prompts_per_pair, S, S)`) and
        `gt_after` `(B, prompts_per_pair, S, S)` in the model's input frame: objects visible on the first frame,
        sampled (with repetition when fewer), the same object in the same slot of every frame.
    """
    lengths = {len(example) for example in examples}
    if len(lengths) != 1 or (length := lengths.pop()) < 4 or length % 2:
        raise ValueError(
            "each example must be (image, masks) of 2 or more frames, all of one length: (image_before, "
            "masks_before, image_after, masks_after), or (image_0, masks_0, ..., image_K, masks_K)."
        )
    if any(len(masks) != len(example[1]) for example in examples for masks in example[1::2]):
        raise ValueError("each example needs the masks of the same objects on every frame (masks_before, masks_after).")
    gt = []
    for example in examples:
        first = example[1]
        visible = np.flatnonzero(first.any(axis=(1, 2)))
        if not len(visible):
            raise ValueError("an example has no object visible on its first frame.")
        chosen = rng.choice(visible, prompts_per_pair, replace=len(visible) < prompts_per_pair)
        gt.append(torch.stack([masks_to_input_frame(masks[chosen], processor) for masks in example[1::2]]))
    frames = length // 2
    pixel_values = processor(images=[image for example in examples for image in example[::2]])["pixel_values"]
    pixel_values = pixel_values.reshape(len(examples), frames, *pixel_values.shape[1:])
    gt_frames = torch.stack(gt)  # (B, K + 1, P, S, S)
    before, gt_before = pixel_values[:, :-1], gt_frames[:, :-1]
    if frames == 2:
        before, gt_before = before[:, 0], gt_before[:, 0]
    return before, pixel_values[:, -1], gt_before, gt_frames[:, -1]


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

    The model decodes each object on the first frame before from a noisy box of its ground truth and follows it
    through the other frames before (no gradient), each prompted from its own mask on the frame before it: the last
    mask gives the widened box, its low-resolution logits the mask prompt, of one mask decoded on the frame after.
    A chain lets the prompt carry the model's own drift, as it does over a video.

    Args:
        embeddings_before: `(batch_size, C, h, w)` image embeddings of the frame before, or `(batch_size, K, C, h, w)`
            of K frames followed in order; `embeddings_after`: `(batch_size, C, h, w)`.
        gt_before: bool `(batch_size, point_batch_size, S, S)` (or `(batch_size, K, point_batch_size, S, S)`) and
            `gt_after` `(batch_size, point_batch_size, S, S)` in the model's input frame (S = image size).
    """
    size = model.config.prompt_encoder_config.image_size
    if embeddings_before.ndim == 4:
        embeddings_before, gt_before = embeddings_before[:, None], gt_before[:, None]
    if gt_before.shape[:2] != embeddings_before.shape[:2] or gt_before.shape[2:] != gt_after.shape[1:]:
        raise ValueError(
            f"gt_before must be (batch_size, [K,] point_batch_size, {size}, {size}) for the frames before and "
            f"gt_after (batch_size, point_batch_size, {size}, {size}), got {tuple(gt_before.shape)} and "
            f"{tuple(gt_after.shape)} for embeddings_before {tuple(embeddings_before.shape)}."
        )
    if gt_after.shape[-2:] != (size, size):
        raise ValueError(f"gt masks must be {size}x{size} (the model's input frame), got {tuple(gt_after.shape)}.")
    with torch.no_grad():
        boxes, logits = noisy_boxes(gt_before[:, 0], generator), None
        for frame in range(gt_before.shape[1]):
            boxes, logits = _followed_prompt(
                model, embeddings_before[:, frame].detach(), boxes, logits, gt_before[:, frame], box_margin
            )
    after = model(image_embeddings=embeddings_after, input_boxes=boxes, input_masks=logits, multimask_output=False)
    return sam_loss(after.pred_masks, after.iou_scores, gt_after)


def _followed_prompt(
    model: SamModel,
    embeddings: torch.Tensor,
    boxes: torch.Tensor,
    logits: torch.Tensor | None,
    gt: torch.Tensor,
    box_margin: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decodes one frame from `boxes` `(B, P, 4)` (and `logits` `(B, P, h, w)`) and returns the prompt of the next:
    the widened box of the mask and its logits. An object the model missed is followed from its true mask (the
    predictor finds a lost object again); one missing from the frame too keeps the prompt it came with."""
    size = gt.shape[-1]
    decoded = model(image_embeddings=embeddings, input_boxes=boxes, input_masks=logits, multimask_output=False)
    new_logits = decoded.pred_masks[:, :, 0]  # (B, P, h, w)
    followed = F.interpolate(new_logits, size=(size, size), mode="bilinear", align_corners=False) > 0
    found = followed.any(dim=(-2, -1))
    followed = torch.where(found[..., None, None], followed, gt)
    present = found | gt.any(dim=(-2, -1))
    new_boxes = widened_boxes(followed, box_margin).float()
    if logits is None:  # the first frame: every object is on it
        return new_boxes, new_logits
    return torch.where(present[..., None], new_boxes, boxes), torch.where(present[..., None, None], new_logits, logits)


class TrackingTrainer(torch.nn.Module):
    """`forward(pixel_values_before, pixel_values_after, gt_before, gt_after) -> loss`: `tracking_loss` from the
    frames' encodings (the frames before without gradient; the frame after with gradient when the image encoder
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
        """`pixel_values_before` `(B, 3, S, S)` or `(B, K, 3, S, S)`, `pixel_values_after` `(B, 3, S, S)`, bool
        `gt_before` `(B, [K,] P, S, S)` and `gt_after` `(B, P, S, S)` (see `tracking_batch`) -> scalar
        `tracking_loss`."""
        with torch.no_grad():
            frames = pixel_values_before.flatten(0, -4)  # every frame before, in (batch, frame) order
            embeddings = self.model.get_image_embeddings(frames)
            embeddings_before = embeddings.reshape(*pixel_values_before.shape[:-3], *embeddings.shape[1:])
        embeddings_after = self.model.get_image_embeddings(pixel_values_after)
        return tracking_loss(self.model, embeddings_before, embeddings_after, gt_before, gt_after, self.generator).total
