"""Train the bundled model's small CLIP (open_clip architecture) contrastively on generated-scene crops and their
names ("red circle", ..., and "background" for regions without an object), seeded and CPU-friendly:

    python -m recipes.clip_shapes --output sam-hf-shapes-clip --minutes 10      # from the repository root

Each step embeds a batch of region views (the paper's crops: box expanded 1-2x, square, background zeroed half the
time; and the blurred-context / grey views that zero-shot scoring uses) and the whole name vocabulary, with a
cross-entropy over the vocabulary: CLIP's contrastive loss with every name as a negative (names repeat within a
batch, so in-batch negatives would contradict each other).
"""

from __future__ import annotations

import argparse
import json
from itertools import product
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from sam_hf.clip_scoring import ClipScorer, region_view
from sam_hf.data import COLORS, HELD_OUT_SEED, SHAPES, generate_scene
from sam_hf.training import add_budget_arguments, fit, paper_view

from .shapes import IMAGE_SIZE

BACKGROUND_NAME = "background"
NAMES = [f"{color} {shape}" for color, shape in product(COLORS, SHAPES)] + [BACKGROUND_NAME]
# open_clip's ModifiedResNet image tower (a small CNN learns shapes from few examples faster than a ViT: training
# loss 1.73 vs 2.44 after 50 steps) and a 2-layer text transformer.
CLIP_ARCHITECTURE = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
VIEW_KINDS = ("paper", "blur", "grey")
MAX_BACKGROUND_OBJECT_FRACTION = 0.05  # a background region may overlap objects by at most this fraction


def training_view(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    """A random one of the views CLIP meets: the paper's crop (learned token) or a zero-shot scoring view."""
    kind = VIEW_KINDS[rng.integers(len(VIEW_KINDS))]
    if kind == "paper":
        return paper_view(image, mask, rng)
    return region_view(image, mask, scale=rng.uniform(1.1, 1.6), background=kind)


def background_region(objects: np.ndarray, rng: np.random.Generator, tries: int = 20) -> np.ndarray | None:
    """A random box-shaped region (minus objects) that is mostly free of objects, or `None` if none was found."""
    size = objects.shape[0]
    for _ in range(tries):
        side = int(rng.integers(size // 8, size // 3))
        x, y = rng.integers(0, size - side, size=2)
        region = np.zeros_like(objects)
        region[y : y + side, x : x + side] = True
        if (region & objects).sum() <= MAX_BACKGROUND_OBJECT_FRACTION * region.sum():
            return region & ~objects
    return None


def labelled_views(seeds: list[int], rng: np.random.Generator) -> tuple[list, list[int]]:
    """Views of every object of the scenes `seeds` plus one background region per scene, with vocabulary indices."""
    views, labels = [], []
    for seed in seeds:
        scene = generate_scene(seed, IMAGE_SIZE)
        for obj in scene.objects:
            views.append(training_view(scene.image, obj.mask, rng))
            labels.append(NAMES.index(obj.name))
        region = background_region(scene.masks.any(0), rng)
        if region is not None and region.any():
            views.append(training_view(scene.image, region, rng))
            labels.append(NAMES.index(BACKGROUND_NAME))
    return views, labels


class ClipTrainer(torch.nn.Module):
    """`forward(images, labels) -> loss`: cross-entropy of image embeddings against the whole name vocabulary."""

    def __init__(self, model: torch.nn.Module, vocabulary: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("vocabulary", vocabulary, persistent=False)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        image_embeddings = F.normalize(self.model.encode_image(images), dim=-1)
        text_embeddings = F.normalize(self.model.encode_text(self.vocabulary), dim=-1)
        logits = self.model.logit_scale.exp().clamp(max=100) * image_embeddings @ text_embeddings.T
        return F.cross_entropy(logits, labels)


@torch.no_grad()
def vocabulary_accuracy(scorer: ClipScorer, num_scenes: int = 100, seed: int = HELD_OUT_SEED) -> float:
    """Fraction of held-out region views whose nearest vocabulary name is the right one."""
    views, labels = labelled_views(list(range(seed, seed + num_scenes)), np.random.default_rng(seed))
    similarity = scorer.embed_images(views) @ scorer.embed_texts(NAMES).T
    return float((similarity.argmax(1) == torch.tensor(labels)).float().mean())


def train_clip(
    output_dir: str | Path,
    steps: int = 3000,
    minutes: float | None = None,
    scenes_per_step: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> list[dict]:
    """Trains the small CLIP for `steps` steps (or `minutes`), saves a `ClipScorer` directory (with the held-out
    vocabulary accuracy in its training log), returns the loss log."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = open_clip.model.CLIP(**CLIP_ARCHITECTURE)
    transform = open_clip.image_transform(CLIP_ARCHITECTURE["vision_cfg"]["image_size"], is_train=False)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=CLIP_ARCHITECTURE["text_cfg"]["context_length"])

    def batch(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        views, labels = labelled_views(list(range(index * scenes_per_step, (index + 1) * scenes_per_step)), rng)
        return torch.stack([transform(view) for view in views]), torch.tensor(labels)

    trainer = ClipTrainer(model, tokenizer(NAMES))
    accelerator, log = fit(trainer, batch, steps, minutes, learning_rate, weight_decay=0.05, description="clip")
    scorer = ClipScorer(
        accelerator.unwrap_model(trainer).model,
        transform,
        tokenizer,
        templates=("{}",),
        background=(BACKGROUND_NAME,),
        threshold=0.3,
        architecture=CLIP_ARCHITECTURE,
    )
    if accelerator.is_main_process:
        scorer.save(output_dir)
        accuracy = vocabulary_accuracy(scorer)
        Path(output_dir, "training_log.json").write_text(json.dumps({"held_out_accuracy": accuracy, "loss": log}))
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="directory to save the CLIP to (open_clip local-dir layout)")
    add_budget_arguments(parser, steps=3000)
    parser.add_argument("--scenes-per-step", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train_clip(args.output, args.steps, args.minutes, args.scenes_per_step, args.learning_rate, args.seed)


if __name__ == "__main__":
    main()
