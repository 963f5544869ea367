"""The DAVIS video-segmentation measures (Perazzi et al. 2016; the `davis2017-evaluation` code): J, region similarity
(mask IoU), and F, the boundary F-measure, with the boundary tolerance `BOUNDARY_TOLERANCE` of the image diagonal;
`failure_type`, which names why an object's mask on a frame is wrong; and `score_clip`, which follows the objects of a
generated clip (`sam_hf.data.motion`) and scores them (or scores every frame prompted from its exact masks: the
ceiling of prompting one frame at a time)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation

from ..data.motion import MotionClip
from ..geometry import centre_point, mask_boxes, mask_iou, touches_border
from ..predictor import SamPredictor
from .predictor import VideoPredictor, VideoSettings

BOUNDARY_TOLERANCE = 0.008  # DAVIS's bound_th: matching distance as a fraction of the image diagonal
FAILURES = ("swap", "false positive", "edge", "occlusion", "lost", "drift")
FAILED_J = 0.5  # a frame whose J is below this counts as a failure
OCCLUDED = 0.7  # an object showing less than this fraction of itself is occluded


def region_similarity(prediction: np.ndarray, truth: np.ndarray) -> float:
    """J: the IoU of two `(H, W)` masks, 1 when both are empty (DAVIS's convention)."""
    return float(mask_iou(prediction, truth, empty=1.0))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """`(H, W)` bool: the mask's boundary pixels, those differing from their right, lower or lower-right neighbour
    (DAVIS's `seg2bmap` at the mask's own size)."""
    mask = mask.astype(bool)
    east, south, south_east = (np.zeros_like(mask) for _ in range(3))
    east[:, :-1], south[:-1, :], south_east[:-1, :-1] = mask[:, 1:], mask[1:, :], mask[1:, 1:]
    boundary = (mask ^ east) | (mask ^ south) | (mask ^ south_east)
    boundary[-1, :] = mask[-1, :] ^ east[-1, :]
    boundary[:, -1] = mask[:, -1] ^ south[:, -1]
    boundary[-1, -1] = False
    return boundary


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x**2 + y**2 <= radius**2


def boundary_f_measure(prediction: np.ndarray, truth: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """F: the F-measure of boundary precision and recall, a boundary pixel matching when the other boundary is within
    `ceil(tolerance * diagonal)` pixels (a disk); 1 when both masks are empty, 0 when only one is."""
    radius = math.ceil(tolerance * math.hypot(*prediction.shape))
    predicted, expected = boundary_map(prediction), boundary_map(truth)
    n_predicted, n_expected = int(predicted.sum()), int(expected.sum())
    if n_predicted == 0 or n_expected == 0:
        return 1.0 if n_predicted == n_expected else 0.0
    disk = _disk(radius)
    precision = (predicted & binary_dilation(expected, disk)).sum() / n_predicted
    recall = (expected & binary_dilation(predicted, disk)).sum() / n_expected
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def failure_type(prediction: np.ndarray, lost: bool, index: int, truths: np.ndarray, whole: np.ndarray) -> str | None:
    """Why object `index`'s mask on a frame is wrong (`None`: it is not: J >= `FAILED_J` and not reported lost), the
    first that applies of `FAILURES`: `"swap"` (the mask covers another object more than this one), `"false
    positive"` (the object is not visible but a mask is given), `"edge"` (the object is cut by the frame border),
    `"occlusion"` (less than `OCCLUDED` of it is visible), `"lost"` (reported lost although visible), `"drift"` (a wrong
    mask otherwise).

    Args:
        prediction: `(H, W)` bool, the mask given for the object.
        lost: whether the object was reported lost.
        index: the object's index in `truths`.
        truths: `(n, H, W)` bool, every object's visible mask on the frame.
        whole: `(H, W)` bool, object `index`'s whole mask before occlusion (inside the frame).
    """
    truth = truths[index]
    if not truth.any():
        return "false positive" if prediction.any() else None
    if region_similarity(prediction, truth) >= FAILED_J and not lost:
        return None
    own = int((prediction & truth).sum())
    if any(int((prediction & other).sum()) > own for k, other in enumerate(truths) if k != index):
        return "swap"
    if touches_border(truth):
        return "edge"
    if truth.sum() < OCCLUDED * whole.sum():
        return "occlusion"
    return "lost" if lost else "drift"


@dataclass
class ClipScores:
    """DAVIS scores of one clip: per object, `J` and `F` averaged over the frames after the prompted one; `lost` and
    `visible` count the frames where the object is visible in the ground truth and where it was, among those,
    reported lost; `failures` counts the object-frames of each `failure_type`."""

    J: list[float]
    F: list[float]
    lost: int
    visible: int
    failures: dict[str, int]


PROMPTS = ("point", "box")


def score_clip(
    predictor: SamPredictor,
    clip: MotionClip,
    prompt: str,
    settings: VideoSettings | None = None,
    every_frame: bool = False,
) -> ClipScores:
    """Follows every object of a generated `clip` from one prompt per object on frame 0 (`"point"`: the pixel
    farthest inside its mask; `"box"`: its tight box) and scores frames 1.. against the exact masks.

    With `every_frame`, nothing is followed: every frame is prompted so from its exact masks, each object on its own
    (a click keeps the best-scored of three candidates; a hidden object gets an empty mask and is never lost), the
    ceiling of prompting one frame at a time with this model (`settings` unused)."""
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}.")
    if not isinstance(every_frame, bool):
        raise TypeError(f"every_frame must be True or False, got {every_frame!r}.")
    if every_frame:
        frames = _prompted_frames(predictor, clip, prompt)
    else:
        frames = _tracked_frames(predictor, clip, prompt, settings)
    count = len(clip.objects)
    j, f, lost, visible = np.zeros(count), np.zeros(count), 0, 0
    failures = dict.fromkeys(FAILURES, 0)
    for index, masks, is_lost in frames:
        truth = clip.frame(index).masks
        for i in range(count):
            j[i] += region_similarity(masks[i], truth[i])
            f[i] += boundary_f_measure(masks[i], truth[i])
            if truth[i].any():
                visible += 1
                lost += int(is_lost[i])
            whole = clip.objects[i].full_mask(index, clip.size)
            failure = failure_type(masks[i], bool(is_lost[i]), i, truth, whole)
            if failure is not None:
                failures[failure] += 1
    frames_scored = max(len(clip) - 1, 1)
    return ClipScores((j / frames_scored).tolist(), (f / frames_scored).tolist(), lost, visible, failures)


def _tracked_frames(
    predictor: SamPredictor, clip: MotionClip, prompt: str, settings: VideoSettings | None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """`(index, masks (n, H, W), lost (n,))` of frames 1.. as `VideoPredictor` follows the objects from frame 0."""
    tracker = VideoPredictor(predictor, clip.images, settings)
    for object_id, mask in enumerate(clip.frame(0).masks, 1):
        if prompt == "point":
            tracker.add_prompt(0, object_id, points=[centre_point(mask)])
        else:
            tracker.add_prompt(0, object_id, box=mask_boxes(mask).tolist())
    for result in tracker.propagate(0):
        if result.index > 0:
            yield result.index, result.masks, result.lost


def _prompted_frames(
    predictor: SamPredictor, clip: MotionClip, prompt: str
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """`(index, masks (n, H, W), lost (n,))` of frames 1.., each object prompted from its exact mask on every frame."""
    for index in range(1, len(clip)):
        frame = clip.frame(index)
        embedded = predictor.embed(frame.image)
        masks = np.zeros_like(frame.masks)
        for i, truth in enumerate(frame.masks):
            if not truth.any():
                continue
            if prompt == "point":  # three candidates, the best-scored kept, as the tracker does for a lone click
                click = np.array([centre_point(truth)])
                predicted = predictor.predict(click, np.ones(1, dtype=np.int64), image=embedded)
            else:
                predicted = predictor.predict(box=mask_boxes(truth).numpy(), multimask_output=False, image=embedded)
            masks[i] = predicted.masks[int(np.argmax(predicted.scores))]
        yield index, masks, np.zeros(len(masks), dtype=bool)
