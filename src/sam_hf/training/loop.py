"""The training loop shared by the bundled-model recipes: AdamW, linear warm-up then cosine decay over a step or time
budget, gradient clipping, data parallelism through accelerate, a loss log every `LOG_EVERY` steps."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm import tqdm
from transformers import ProcessorMixin

LOG_EVERY = 25


def learning_rate_factor(step: int, warmup_steps: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak as `progress` goes from 0 to 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit(
    trainer: torch.nn.Module,
    batch: Callable[[int], tuple[torch.Tensor, ...]],
    steps: int,
    minutes: float | None = None,
    learning_rate: float = 3e-4,
    warmup_steps: int = 100,
    weight_decay: float = 0.01,
    description: str = "training",
) -> tuple[Accelerator, list[dict]]:
    """Trains `trainer` (a module whose `forward(*batch)` returns the loss) on its parameters that require grad.

    Args:
        batch: `batch(index)` -> the tensors of batch `index`; indices are distinct across steps and processes.
        steps: length of the schedule; `minutes`, when given and reached first, ends training and the schedule
            anneals over the time budget instead (single-process runs only: each process would read its own clock).

    Returns:
        the `Accelerator` (for `unwrap_model`, `is_main_process`) and the log `[{"step", "loss", "minutes"}]`.
    """
    accelerator = Accelerator()
    if minutes is not None and accelerator.num_processes > 1:
        raise ValueError("minutes is for single-process runs; give several processes a number of steps.")
    parameters = [p for p in trainer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
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
    log, running = [], []
    bar = tqdm(range(steps), disable=not accelerator.is_main_process, desc=description)
    for step in bar:
        tensors = batch(step * accelerator.num_processes + accelerator.process_index)
        loss = trainer(*(tensor.to(accelerator.device) for tensor in tensors))
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        running.append(loss.item())
        if (step + 1) % LOG_EVERY == 0:
            minutes_so_far = (time.monotonic() - start) / 60
            log.append({"step": step + 1, "loss": sum(running) / len(running), "minutes": minutes_so_far})
            bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
            running = []
        if progress(step + 1) >= 1.0:
            break
    return accelerator, log


def add_budget_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    """`--steps` (the schedule's length, default `steps`) and `--minutes` (a time budget that ends it earlier)."""
    parser.add_argument("--steps", type=int, default=steps, help="length of the learning-rate schedule")
    parser.add_argument("--minutes", type=float, help="stop early after this much time")


def save_trained(
    accelerator: Accelerator, trainer: torch.nn.Module, processor: ProcessorMixin, output_dir: str | Path, log: list
) -> None:
    """From the main process: the trained `trainer.model` and `processor` (`save_pretrained`) and the loss log
    (`training_log.json`) in `output_dir`."""
    if accelerator.is_main_process:
        accelerator.unwrap_model(trainer).model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        Path(output_dir, "training_log.json").write_text(json.dumps(log, indent=1))
