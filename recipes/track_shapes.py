"""Stages 9 and 10 of the bundled model: stage 8's training (text token + point / box interaction on still scenes,
image encoder trained) plus the video prompt (`sam_hf.training.tracking`) on generated clips, so the model learns to
follow an object from its widened box and logits on the frame before, cut by the frame edge, covered, or gone. Stage 9
trains on pairs of frames; `--chain 5` on chains of 5 frames, where the prompt of the scored frame comes from the
model's own masks followed through the 4 frames before it (its own drift; a stage 10 trained so was not kept, see the
model card). Run from the repository root:

    python -m recipes.track_shapes --model stage8 --clip src/sam_hf/bundled/sam-hf-shapes-clip --output stage9 \
        --minutes 55
    python -m recipes.track_shapes --model stage9 --clip src/sam_hf/bundled/sam-hf-shapes-clip --output stage10 \
        --minutes 55 --chain 5 --seed 10 --first-example 700000 --first-clip 20000

Training clips have seeds from `--first-clip` (default 0, far below the validation and held-out clip seeds).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from sam_hf import SamModel, SamProcessor
from sam_hf.clip_scoring import ClipScorer
from sam_hf.data.motion import CLIP_HELD_OUT_SEED, generate_clip
from sam_hf.training import add_budget_arguments, fit, save_trained
from sam_hf.training.text_token import TextTokenTrainer, text_token_batch
from sam_hf.training.tracking import TrackingTrainer, tracking_batch

from .shapes import GeneratedScenes

MAX_GAP = 2  # the frame after is 1 or 2 frames on: room for faster motion than the clips have


class StillsAndTracking(torch.nn.Module):
    """`forward(still tensors..., pair tensors...) -> loss`: `TextTokenTrainer`'s loss on still scenes plus
    `TrackingTrainer`'s on frame pairs, one model."""

    def __init__(self, model: SamModel, seed: int) -> None:
        super().__init__()
        self.model = model
        self.stills = TextTokenTrainer(model, seed=seed, train_image_encoder=True)
        self.tracking = TrackingTrainer(model, seed=seed + 1)

    def forward(self, pixel_values, gt_masks, region_embeddings, before, after, gt_before, gt_after) -> torch.Tensor:
        return self.stills(pixel_values, gt_masks, region_embeddings) + self.tracking(
            before, after, gt_before, gt_after
        )


def frame_chain(seed: int, rng: np.random.Generator, frames: int = 2) -> tuple[np.ndarray, ...]:
    """`frames` frames of the training clip `seed`, each 1..MAX_GAP after the one before, from a random frame where
    some object is visible: `(image_0, masks_0, image_1, masks_1, ...)` (a `tracking_batch` example)."""
    clip = generate_clip(seed)
    while True:
        steps = np.cumsum(rng.integers(1, MAX_GAP + 1, size=frames - 1))
        first = clip.frame(int(rng.integers(0, len(clip) - steps[-1])))
        if first.masks.any():
            chain = [first, *(clip.frame(first.index + int(step)) for step in steps)]
            return tuple(array for frame in chain for array in (frame.image, frame.masks))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the model to continue (stage 8)")
    parser.add_argument("--clip", required=True, help="the bundled CLIP's directory (ClipScorer.from_pretrained)")
    parser.add_argument("--output", required=True)
    add_budget_arguments(parser, steps=10000)
    parser.add_argument("--batch-size", type=int, default=8, help="still scenes per step")
    parser.add_argument("--pairs", type=int, default=8, help="frame pairs (or chains) per step")
    parser.add_argument(
        "--chain", type=int, default=2, help="frames per example: 2 = pairs (stage 9); more follows the object through"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--first-example", type=int, default=600000, help="seed of the first still scene")
    parser.add_argument("--first-clip", type=int, default=0, help="seed of the first training clip")
    args = parser.parse_args(argv)
    if args.first_clip + args.steps * args.pairs > CLIP_HELD_OUT_SEED:
        raise ValueError("--first-clip: training clips would reach the held-out clip seeds.")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model, processor = SamModel.from_pretrained(args.model).train(), SamProcessor.from_pretrained(args.model)
    clip, scenes = ClipScorer.from_pretrained(args.clip), GeneratedScenes(args.first_example)
    trainer = StillsAndTracking(model, args.seed)

    def batch(index: int) -> tuple[torch.Tensor, ...]:
        stills = [scenes[index * args.batch_size + i] for i in range(args.batch_size)]
        pairs = [frame_chain(args.first_clip + index * args.pairs + i, rng, args.chain) for i in range(args.pairs)]
        return (*text_token_batch(stills, processor, clip, rng), *tracking_batch(pairs, processor, rng))

    description = f"tracking, {args.chain} frames"
    accelerator, log = fit(trainer, batch, args.steps, args.minutes, args.learning_rate, 50, description=description)
    save_trained(accelerator, trainer, processor, args.output, log)


if __name__ == "__main__":
    main()
