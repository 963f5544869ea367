"""`sam_hf.geometry`: mask IoU, mask -> box and the one box convention, against pycocotools and the official
`segment_anything.utils.amg`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from segment_anything.utils import amg

from sam_hf.clip_scoring import square_crop_box
from sam_hf.geometry import centre_point, mask_boxes, mask_iou, touches_border, widened_boxes


def random_masks(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random blobs (density varies per mask), some of them empty."""
    rng = np.random.default_rng(seed)
    density = rng.uniform(0, 0.2, size=(*shape[:-2], 1, 1))
    masks = rng.random(shape) < density
    masks.reshape(-1, *shape[-2:])[::5] = False
    return masks


def test_mask_iou_matches_pycocotools():
    a, b = random_masks(0, (12, 17, 23)), random_masks(1, (12, 17, 23))
    a[3] = b[3]  # identical, non-empty
    rles = [mask_utils.encode(np.asfortranarray(m, dtype=np.uint8)) for m in (*a, *b)]
    want = mask_utils.iou(rles[:12], rles[12:], [0] * 12).diagonal()
    got = mask_iou(a, b, empty=0.5)
    both_empty = ~(a | b).any(axis=(1, 2))
    assert both_empty.any() and got[3] == 1
    np.testing.assert_allclose(got[~both_empty].numpy(), want[~both_empty], rtol=1e-6)
    assert (got[both_empty] == 0.5).all()


@pytest.mark.parametrize("empty", [0.0, 1.0])
def test_mask_iou_empty_rule_and_broadcasting(empty):
    nothing = np.zeros((4, 5), bool)
    something = nothing.copy()
    something[1:3, 2:4] = True
    assert mask_iou(nothing, nothing, empty=empty) == empty
    assert mask_iou(nothing, something, empty=empty) == 0
    masks = torch.from_numpy(random_masks(2, (3, 2, 9, 9)))
    targets = torch.from_numpy(random_masks(3, (3, 9, 9)))
    got = mask_iou(masks, targets[:, None], empty=empty)  # numpy or torch, leading axes broadcast
    assert got.shape == (3, 2) and got.dtype == torch.float32
    for i, j in np.ndindex(3, 2):
        assert got[i, j] == mask_iou(masks[i, j].numpy(), targets[i].numpy(), empty=empty)


def test_mask_boxes_match_official_and_pycocotools():
    masks = random_masks(4, (2, 6, 30, 40))
    masks[0, 1] = False
    masks[1, 2] = False
    masks[1, 2, 7, 9] = True  # one pixel: (x, y, x, y)
    got = mask_boxes(masks)
    assert got.dtype == torch.long and got.shape == (2, 6, 4)
    torch.testing.assert_close(got, amg.batched_mask_to_box(torch.from_numpy(masks)))
    assert got[0, 1].tolist() == [0, 0, 0, 0] and got[1, 2].tolist() == [9, 7, 9, 7]
    for mask, box in zip(masks.reshape(-1, 30, 40), got.reshape(-1, 4), strict=True):
        if mask.any():  # pycocotools' XYWH counts pixels: the inclusive end is x + w - 1
            x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8)))
            assert box.tolist() == [x, y, x + w - 1, y + h - 1]
    assert mask_boxes(np.zeros((0, 5, 5), bool)).shape == (0, 4)


def test_square_crop_box_covers_the_boxed_pixels():
    """A box in the one convention: the crop of a one-pixel mask at (x, y) is that pixel's slice."""
    mask = np.zeros((20, 30), bool)
    mask[4, 7] = True
    assert square_crop_box(mask_boxes(mask).tolist(), 1.0) == (7, 4, 8, 5)
    mask[4:10, 7:11] = True  # 4 wide, 6 tall: a 6-pixel square around the mask's centre (9, 7)
    assert square_crop_box(mask_boxes(mask).tolist(), 1.0) == (6, 4, 12, 10)


def test_centre_point_is_farthest_from_the_background():
    mask = np.zeros((20, 30), bool)
    mask[2:9, 5:20] = True  # 7 rows: the middle row, the first of the tied columns
    assert centre_point(mask) == [8.0, 5.0]
    mask[:] = False
    mask[:5, :5] = True  # the image border counts as background
    assert centre_point(mask) == [2.0, 2.0]


def test_widened_boxes_grow_by_the_margin_and_stay_in_the_frame():
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 5:15, 10:20] = True  # 10 x 10 pixels: 1 more on each side at a 10 % margin
    masks[1, 0:4, 25:30] = True  # at the top right corner: clipped to the frame
    boxes = widened_boxes(masks, 0.1)
    assert boxes[0].tolist() == pytest.approx([9.0, 4.0, 20.0, 15.0])
    assert boxes[1].tolist() == pytest.approx([24.5, 0.0, 29.0, 3.4])
    assert widened_boxes(masks[0], 0.0).tolist() == mask_boxes(masks[0]).tolist()


def test_touches_border() -> None:
    mask = np.zeros((6, 8), dtype=bool)
    assert not touches_border(mask)
    mask[2:4, 3:5] = True
    assert not touches_border(mask)
    for edge in ((0, 3), (5, 3), (2, 0), (2, 7)):
        cut = mask.copy()
        cut[edge] = True
        assert touches_border(cut), edge
