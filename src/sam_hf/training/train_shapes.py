"""Train the bundled small SAM on generated scenes (seeded; CPU-friendly, faster on a GPU).

    python -m sam_hf.training.train_shapes --output src/sam_hf/bundled/sam-hf-shapes --minutes 45
    accelerate launch -m sam_hf.training.train_shapes --output ...      # several GPUs / processes

Every step encodes a batch of fresh scenes once and runs one simulated interaction per object (`interactive.py`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm import tqdm

from ..modeling import SamModel
from .interactive import InteractiveTrainer
from .shapes import bundled_config, bundled_processor, scene_batch


def learning_rate_factor(step: int, warmup_steps: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak as `progress` goes from 0 to 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


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
    returns the loss log (every 25 steps). Scene seeds start at `first_scene`, so a continued run can see new scenes."""
    torch.manual_seed(seed)
    accelerator = Accelerator()
    if minutes is not None and accelerator.num_processes > 1:
        # Each process would read its own clock and step a different learning rate.
        raise ValueError("minutes is for single-process runs; give several processes a number of steps.")
    model = SamModel.from_pretrained(init_from) if init_from else SamModel(bundled_config())
    trainer = InteractiveTrainer(model, num_corrective_points, seed=seed + accelerator.process_index)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    start = time.monotonic()

    def progress(step: int) -> float:
        """Fraction of the budget used: steps, or time when that runs out first, so the schedule always anneals."""
        fraction = step / steps
        if minutes is not None:
            fraction = max(fraction, (time.monotonic() - start) / (minutes * 60))
        return fraction

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, warmup_steps, progress(step))
    )
    trainer, optimizer, scheduler = accelerator.prepare(trainer, optimizer, scheduler)
    processor = bundled_processor()
    log, running = [], []
    bar = tqdm(range(steps), disable=not accelerator.is_main_process, desc="training")
    for step in bar:
        # Scene seeds are disjoint across steps and processes, and far below the held-out seeds.
        first = first_scene + (step * accelerator.num_processes + accelerator.process_index) * batch_size
        pixel_values, gt_masks = scene_batch(list(range(first, first + batch_size)), processor)
        loss = trainer(pixel_values.to(accelerator.device), gt_masks.to(accelerator.device))
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainer.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        running.append(loss.item())
        if (step + 1) % 25 == 0:
            elapsed = time.monotonic() - start
            log.append({"step": step + 1, "loss": sum(running) / len(running), "minutes": elapsed / 60})
            bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
            running = []
        if progress(step + 1) >= 1.0:
            break
    if accelerator.is_main_process:
        accelerator.unwrap_model(trainer).model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        Path(output_dir, "training_log.json").write_text(json.dumps(log, indent=1))
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="directory to save the model and processor to")
    parser.add_argument("--steps", type=int, default=4000, help="length of the learning-rate schedule")
    parser.add_argument("--minutes", type=float, help="stop early after this much time")
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
