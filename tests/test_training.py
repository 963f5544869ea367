"""Training support: the paper's loss, the interactive sampler, generated scenes, and training with a plain loop,
transformers' Trainer, and a frozen encoder on cached embeddings."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from transformers import Trainer, TrainingArguments

from sam_hf import SamModel, SamPredictor, SamProcessor
from sam_hf.data import ShapesDataset, generate_scene
from sam_hf.data.motion import generate_clip
from sam_hf.geometry import mask_boxes, widened_boxes
from sam_hf.modeling.loss import sam_loss
from sam_hf.prompts import BACKGROUND_LABEL, FOREGROUND_LABEL, NOT_A_POINT_LABEL
from sam_hf.training.interactive import InteractiveTrainer, interactive_batch, noisy_boxes, sample_error_points
from sam_hf.training.tracking import TrackingTrainer, tracking_batch, tracking_loss
from sam_hf.video.predictor import VideoPredictor, VideoSettings, _Track
from tests.helpers import scene_image, tiny_config


def test_loss_matches_hand_computed_values():
    # Two candidate masks of two pixels; the ground truth is [1, 0].
    logits = torch.tensor([[[[[0.0, 0.0]], [[2.0, -2.0]]]]])  # (1, 1, 2, 1, 2)
    iou_scores = torch.tensor([[[0.5, 0.5]]])
    labels = torch.tensor([[[[1.0, 0.0]]]])
    p = 1 / (1 + math.exp(-2))  # sigmoid(2): probability of the right class at both pixels of mask 1
    focal = [0.25 * math.log(2), -math.log(p) * (1 - p) ** 2]  # gamma 2, no alpha; equal at both pixels
    dice = [1 - (2 * 0.5 + 1) / (2 + 1), 1 - (2 * p + 1) / (2 + 1)]
    mask_losses = [20 * f + d for f, d in zip(focal, dice, strict=True)]
    iou_mse = ((0.5 - 0.0) ** 2 + (0.5 - 1.0) ** 2) / 2  # mask 0 is empty (IoU 0), mask 1 is exact (IoU 1)
    loss = sam_loss(logits, iou_scores, labels)
    assert loss.mask.item() == pytest.approx(min(mask_losses), rel=1e-5)
    assert loss.iou.item() == pytest.approx(iou_mse, rel=1e-6)
    assert loss.total.item() == pytest.approx(min(mask_losses) + iou_mse, rel=1e-5)


def test_loss_trains_only_the_best_candidate():
    logits = torch.tensor([[[[[0.0, 0.0]], [[2.0, -2.0]]]]], requires_grad=True)
    sam_loss(logits, torch.zeros(1, 1, 2), torch.tensor([[[[1.0, 0.0]]]])).mask.backward()
    assert logits.grad[0, 0, 0].abs().sum() == 0 and logits.grad[0, 0, 1].abs().sum() > 0


def test_forward_returns_the_loss_when_labels_are_given(tiny_model):
    points = torch.tensor([[[[30.0, 40.0]], [[90.0, 90.0]]]])
    labels = torch.zeros(1, 2, 128, 128)
    labels[0, 0, 20:60, 10:50] = 1
    output = tiny_model(image_embeddings=torch.randn(1, 64, 8, 8), input_points=points, labels=labels)
    expected = sam_loss(output.pred_masks, output.iou_scores, labels).total
    torch.testing.assert_close(output.loss, expected)
    with pytest.raises(ValueError, match="labels"):
        tiny_model(image_embeddings=torch.randn(1, 64, 8, 8), input_points=points, labels=labels[:, :1])


def test_error_points_come_from_the_error_region():
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(64, 24, 24, generator=generator) > 0.5
    gt = torch.rand(64, 24, 24, generator=generator) > 0.5
    pred[:4], gt[:4] = gt[:4], gt[:4]  # no error at all
    for _ in range(5):
        points, labels = sample_error_points(pred, gt, generator)
        x, y = points[:, 0].long(), points[:, 1].long()
        picked_gt, picked_pred = gt[torch.arange(64), y, x], pred[torch.arange(64), y, x]
        has_error = (pred ^ gt).flatten(1).any(dim=1)
        assert (labels[~has_error] == NOT_A_POINT_LABEL).all()
        assert (picked_gt != picked_pred)[has_error].all()  # inside the error region
        assert (labels[has_error & picked_gt] == FOREGROUND_LABEL).all()  # missed object: foreground click
        assert (labels[has_error & ~picked_gt] == BACKGROUND_LABEL).all()  # spill-over: background click


def test_noisy_boxes_stay_near_the_tight_box():
    mask = torch.zeros(8, 100, 100, dtype=torch.bool)
    mask[:, 20:60, 30:90] = True
    boxes = noisy_boxes(mask, torch.Generator().manual_seed(0))
    tight = torch.tensor([30.0, 20.0, 89.0, 59.0])
    assert ((boxes - tight).abs() <= 20).all() and (boxes - tight).abs().max() > 0
    assert (boxes[:, 2:] >= boxes[:, :2]).all()


def test_interactive_batch_puts_masks_in_the_input_frame():
    """Masks of a landscape image are resized as the image is (60x90 -> 85x128), padded, and cycled to fill slots."""
    masks = np.zeros((2, 60, 90), dtype=bool)
    masks[0, 10:30, 20:50] = True
    masks[1] = True
    processor = SamProcessor.for_config(tiny_config())
    pixel_values, gt = interactive_batch([(scene_image(3, 60, 90), masks)], processor, prompts_per_image=3)
    assert pixel_values.shape == (1, 3, 128, 128) and gt.shape == (1, 3, 128, 128) and gt.dtype == torch.bool
    torch.testing.assert_close(pixel_values, processor(images=scene_image(3, 60, 90))["pixel_values"])
    assert torch.equal(gt[0, 2], gt[0, 0])  # two masks, three slots: the first again
    height, width = processor.image_processor.resized_size(60, 90)
    assert (height, width) == (85, 128)
    assert gt[0, 1, :height, :width].all() and not gt[0, 1, height:].any()
    scale = 128 / 90
    expected = torch.tensor([20 * scale, 10 * scale, 50 * scale - 1, 30 * scale - 1])
    assert (mask_boxes(gt[0, 0]) - expected).abs().max() <= 1


def test_scenes_are_deterministic_named_and_disjoint():
    first, again, other = generate_scene(7), generate_scene(7), generate_scene(8)
    assert np.array_equal(first.image, again.image) and first.names == again.names
    assert not np.array_equal(first.image, other.image)
    assert first.image.shape == (128, 128, 3) and first.image.dtype == np.uint8
    masks = first.masks
    assert 1 <= len(masks) <= 4 and masks.sum(axis=(1, 2)).min() > 0
    assert masks.sum(axis=0).max() == 1  # occlusion leaves visible parts that never overlap
    assert all(len(name.split()) == 2 for name in first.names)
    dataset = ShapesDataset(3, seed=7)
    assert len(dataset) == 3 and dataset[0].names == first.names
    with pytest.raises(IndexError):
        dataset[3]
    with pytest.raises(ValueError, match="num_scenes"):
        ShapesDataset(0)


def small_trainable_model() -> SamModel:
    torch.manual_seed(0)
    return SamModel(tiny_config())


def scene_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """`interactive_batch` of generated scenes 0-3 for `tiny_config()`: `(4, 3, 128, 128)`, bool `(4, 4, 128, 128)`."""
    scenes = [generate_scene(seed) for seed in range(4)]
    return interactive_batch([(s.image, s.masks) for s in scenes], SamProcessor.for_config(tiny_config()))


def losses_on_one_batch(trainer: torch.nn.Module, tensors: tuple[torch.Tensor, ...], steps: int = 15) -> list[float]:
    """The loss of each of `steps` AdamW steps (lr 5e-3) of `trainer` on the same batch."""
    optimizer = torch.optim.AdamW([p for p in trainer.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for _ in range(steps):
        loss = trainer(*tensors)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_a_few_interactive_steps_lower_the_loss():
    losses = losses_on_one_batch(InteractiveTrainer(small_trainable_model(), seed=0), scene_batch())
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def clip_pairs(gap: int = 1) -> list[tuple[np.ndarray, ...]]:
    """Frames 10 and 10 + gap of generated clips 0-3, as `tracking_batch` examples."""
    pairs = []
    for seed in range(4):
        clip = generate_clip(seed, num_frames=12)
        before, after = clip.frame(10 - gap), clip.frame(10)
        pairs.append((before.image, before.masks, after.image, after.masks))
    return pairs


def test_tracking_batch_keeps_each_object_in_its_slot_on_both_frames():
    pairs = clip_pairs()
    before, after, gt_before, gt_after = tracking_batch(
        pairs, SamProcessor.for_config(tiny_config()), np.random.default_rng(0)
    )
    assert before.shape == after.shape == (4, 3, 128, 128) and gt_before.shape == gt_after.shape == (4, 4, 128, 128)
    for (_, masks_before, _, masks_after), slots_before, slots_after in zip(pairs, gt_before, gt_after, strict=True):
        for slot_before, slot_after in zip(slots_before, slots_after, strict=True):
            (index,) = [i for i, mask in enumerate(masks_before) if np.array_equal(mask, slot_before.numpy())]
            assert np.array_equal(masks_after[index], slot_after.numpy()) and slot_before.any()
    image, masks, next_image, next_masks = pairs[0]
    with pytest.raises(ValueError, match="same objects"):
        tracking_batch(
            [(image, masks, next_image, next_masks[:1])],
            SamProcessor.for_config(tiny_config()),
            np.random.default_rng(0),
        )


def test_tracking_loss_prompts_the_next_frame_as_the_video_predictor_does(monkeypatch):
    """The frame after is decoded from the box `VideoPredictor` would give (its `_track_query` on the mask decoded on
    the frame before) and that mask's logits."""
    model = small_trainable_model()
    before, after, gt_before, gt_after = tracking_batch(
        clip_pairs(), SamProcessor.for_config(tiny_config()), np.random.default_rng(0)
    )
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda **kwargs: calls.append(kwargs) or forward(**kwargs))
    with torch.no_grad():
        embeddings = model.get_image_embeddings(torch.cat([before, after]))
    tracking_loss(model, embeddings[:4], embeddings[4:], gt_before, gt_after, torch.Generator().manual_seed(0))
    first, second = calls
    logits = forward(**first).pred_masks[:, :, 0]
    assert torch.equal(second["input_masks"], logits)
    upscaled = torch.nn.functional.interpolate(logits, size=(128, 128), mode="bilinear", align_corners=False) > 0
    followed = torch.where(upscaled.any(dim=(-2, -1), keepdim=True), upscaled, gt_before)  # a miss: the true box
    processor = SamProcessor.for_config(tiny_config())
    tracker = VideoPredictor(SamPredictor(model, processor), [pair[2] for pair in clip_pairs()])
    for image_index, slot in np.ndindex(*logits.shape[:2]):
        query = tracker._track_query(_Track(mask=followed[image_index, slot].numpy(), logits=logits[image_index, slot]))
        assert np.allclose(second["input_boxes"][image_index, slot].numpy(), query.box, atol=1e-5)
        assert torch.equal(second["input_masks"][image_index, slot], query.logits)
    assert second["multimask_output"] is False


def clip_chains(frames: int = 3) -> list[tuple[np.ndarray, ...]]:
    """Frames 11 - frames .. 10 of generated clips 0-3, as `tracking_batch` chain examples."""
    chains = []
    for seed in range(4):
        clip = generate_clip(seed, num_frames=12)
        chains.append(
            tuple(array for t in range(11 - frames, 11) for array in (clip.frame(t).image, clip.frame(t).masks))
        )
    return chains


def test_tracking_chains_follow_the_object_through_the_frames_before(monkeypatch):
    """A chain of 4 frames: the object is decoded on frame 0 from a noisy box, then each frame is prompted from the
    model's own mask on the frame before it (its widened box and its logits), and the loss is on frame 3."""
    processor = SamProcessor.for_config(tiny_config())
    chains = clip_chains(frames=4)
    before, after, gt_before, gt_after = tracking_batch(chains, processor, np.random.default_rng(0))
    assert before.shape == (4, 3, 3, 128, 128) and after.shape == (4, 3, 128, 128)
    assert gt_before.shape == (4, 3, 4, 128, 128) and gt_after.shape == (4, 4, 128, 128)
    for chain, slots_before, slots_after in zip(chains, gt_before, gt_after, strict=True):
        for slot in range(4):  # one object per slot on every frame
            (index,) = [i for i, mask in enumerate(chain[1]) if np.array_equal(mask, slots_before[0, slot].numpy())]
            assert all(np.array_equal(chain[1 + 2 * k][index], slots_before[k, slot].numpy()) for k in (1, 2))
            assert np.array_equal(chain[7][index], slots_after[slot].numpy())
    model = small_trainable_model()
    with torch.no_grad():
        embeddings = model.get_image_embeddings(torch.cat([before.flatten(0, 1), after]))
    embeddings_before = embeddings[:12].reshape(4, 3, *embeddings.shape[1:])
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda **kwargs: calls.append(kwargs) or forward(**kwargs))
    loss = tracking_loss(
        model, embeddings_before, embeddings[12:], gt_before, gt_after, torch.Generator().manual_seed(0)
    )
    assert len(calls) == 4 and calls[0]["input_masks"] is None and torch.isfinite(loss.total)
    for frame, (previous, call) in enumerate(itertools.pairwise(calls)):
        assert torch.equal(call["image_embeddings"], embeddings_before[:, frame + 1] if frame < 2 else embeddings[12:])
        logits = forward(**previous).pred_masks[:, :, 0]
        upscaled = torch.nn.functional.interpolate(logits, size=(128, 128), mode="bilinear", align_corners=False) > 0
        for image_index, slot in np.ndindex(*logits.shape[:2]):
            if not upscaled[image_index, slot].any():
                continue  # missed: followed from its true mask, or from the prompt before when it is gone
            assert torch.equal(call["input_masks"][image_index, slot], logits[image_index, slot])
            box = widened_boxes(upscaled[image_index, slot], VideoSettings.box_margin).float()
            assert torch.allclose(call["input_boxes"][image_index, slot], box)
    with pytest.raises(ValueError, match="gt_before"):
        tracking_loss(model, embeddings_before, embeddings[12:], gt_before[:, :2], gt_after)
    with pytest.raises(ValueError, match="same objects"):
        tracking_batch([(*chains[0][:5], chains[0][5][:1])], processor, np.random.default_rng(0))
    with pytest.raises(ValueError, match="all of one length"):
        tracking_batch([chains[0], chains[1][:4]], processor, np.random.default_rng(0))


def test_a_few_tracking_steps_lower_the_loss():
    tensors = tracking_batch(clip_pairs(gap=2), SamProcessor.for_config(tiny_config()), np.random.default_rng(0))
    losses = losses_on_one_batch(TrackingTrainer(small_trainable_model(), seed=0), tensors)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_transformers_trainer_and_frozen_encoder_on_cached_embeddings(tmp_path):
    """`Trainer` drives `SamModel.forward(..., labels=...)`; with the encoder frozen, training on cached embeddings
    changes the decoder only."""
    model = small_trainable_model()
    model.vision_encoder.requires_grad_(False)
    pixel_values, gt_masks = scene_batch()
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixel_values)
    points = torch.stack([torch.nonzero(m)[len(torch.nonzero(m)) // 2].flip(0).float() for m in gt_masks.flatten(0, 1)])
    examples = [
        {
            "image_embeddings": embeddings[i],
            "input_points": points.view(4, 4, 1, 2)[i],
            "labels": gt_masks[i].float(),
        }
        for i in range(4)
    ]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    result = Trainer(model=model, args=args, train_dataset=examples).train()
    assert math.isfinite(result.training_loss)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any(name.startswith("mask_decoder.") for name in changed)
    assert not any(name.startswith("vision_encoder.") for name in changed)
