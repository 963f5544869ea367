"""Train the bundled small SAM on generated scenes (seeded; CPU-friendly, faster on a GPU).

    python -m recipes.train_shapes --output stage1 --minutes 45        # from the repository root
    accelerate launch -m recipes.train_shapes --output ...            # several GPUs / processes

Every step encodes a batch of fresh scenes once and runs one simulated interaction per object
(`sam_hf.training.interactive`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sam_hf import SamModel
from sam_hf.training import InteractiveTrainer, add_budget_arguments, fit, save_trained

from .shapes import bundled_config, bundled_processor, scene_batch


def train(
    output_dir: str | Path,
    steps: int,
    minutes: float | None = None,
    batch_size: int = 16,
    learning_rate: float = 3e-4,
    warmup_steps: int = 100,
    num_corrective_points: int = 2,
    seed: int = 0,
    init_from: str | Path | None = None,
    first_scene: int = 0,
) -> list[dict]:
    """Trains from scratch (or from the model at `init_from`) for `steps` steps, or `minutes` if that comes first
    (the learning rate anneals over whichever budget runs out first), saves model + processor to `output_dir`, and
    returns the loss log. Scene seeds start at `first_scene`, so a continued run can see new scenes."""
    torch.manual_seed(seed)
    model = SamModel.from_pretrained(init_from) if init_from else SamModel(bundled_config())
    trainer = InteractiveTrainer(model, num_corrective_points, seed=seed)
    processor = bundled_processor()

    def batch(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Scene seeds are disjoint across steps and processes, and far below the held-out seeds.
        first = first_scene + index * batch_size
        return scene_batch(list(range(first, first + batch_size)), processor)

    accelerator, log = fit(trainer, batch, steps, minutes, learning_rate, warmup_steps)
    save_trained(accelerator, trainer, processor, output_dir, log)
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="directory to save the model and processor to")
    add_budget_arguments(parser, steps=4000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--corrective-points", type=int, default=2, help="error-region clicks per interaction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-from", help="continue from this model directory instead of a random init")
    parser.add_argument("--first-scene", type=int, default=0, help="seed of the first training scene")
    args = parser.parse_args(argv)
    train(
        args.output,
        args.steps,
        args.minutes,
        args.batch_size,
        args.learning_rate,
        num_corrective_points=args.corrective_points,
        seed=args.seed,
        init_from=args.init_from,
        first_scene=args.first_scene,
    )


if __name__ == "__main__":
    main()
