"""Train SAM's learned text token the paper's way (section 7.5, appendix D.5): the prompt during training is the CLIP
**image** embedding of a mask's crop (box expanded 1-2x, square, background zeroed half the time); at inference the
CLIP **text** embedding of a phrase takes its place, since CLIP aligns the two.

    # a folder of images and COCO annotations with masks (RLE or polygons), any open_clip CLIP
    python -m sam_hf.training.text_token --model facebook/sam-vit-base --clip ViT-B-16 --pretrained laion2b_s34b_b88k \
        --images images/ --annotations annotations.json --output sam-with-text --steps 2000

(The bundled model's stages on generated scenes: `python -m recipes.text_token_shapes`, from the repository root.)

The CLIP tower is frozen, and the image encoder too unless `--train-image-encoder`; the text projection, the
text-type embedding, the prompt encoder and the decoder train, on the text prompt and, so that points and boxes keep
working, on the simulated point / box interaction of `interactive.py`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from pycocotools.coco import COCO

from ..clip_scoring import ClipScorer, region_view
from ..configuration_sam import SamConfig
from ..loading import open_image
from ..modeling import SamModel
from ..modeling.loss import sam_loss
from ..processing import SamProcessor
from .interactive import PROMPTS_PER_IMAGE, interactive_loss, masks_to_input_frame
from .loop import add_budget_arguments, fit, save_trained


def paper_view(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> PIL.Image.Image:
    """The paper's training crop: the mask's box expanded 1-2x, square, background zeroed half the time."""
    return region_view(image, mask, scale=rng.uniform(1.0, 2.0), background="black" if rng.random() < 0.5 else "keep")


def with_text_encoder(model: SamModel, clip: ClipScorer, freeze_text_encoder: bool = True) -> SamModel:
    """A copy of `model` with a text encoder holding `clip`'s text tower, and a new (untrained) text projection."""
    if clip.architecture is None:
        raise ValueError("clip needs its open_clip model config (ClipScorer.architecture) to build the text encoder.")
    config = SamConfig(
        vision_config=model.config.vision_config.to_dict(),
        prompt_encoder_config=model.config.prompt_encoder_config.to_dict(),
        mask_decoder_config=model.config.mask_decoder_config.to_dict(),
        text_config={"clip_architecture": clip.architecture, "freeze_text_encoder": freeze_text_encoder},
    )
    text_model = SamModel(config)
    missing, unexpected = text_model.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not key.startswith(("text_encoder.", "prompt_encoder.text_")) for key in missing):
        raise ValueError(f"model and the text model differ beyond the text parts: {unexpected} / {missing}.")
    tower = text_model.text_encoder.clip.state_dict()
    text_model.text_encoder.clip.load_state_dict({k: v for k, v in clip.model.state_dict().items() if k in tower})
    return text_model


class TextTokenTrainer(torch.nn.Module):
    """`forward(pixel_values, gt_masks, region_embeddings) -> loss`: the text-token loss (3 candidate masks, the
    lowest-loss one trained) plus the interactive point / box loss, on one image encoding (frozen unless
    `train_image_encoder`: finding an object by its look needs image features a point-trained encoder may lack)."""

    def __init__(
        self, model: SamModel, num_corrective_points: int = 1, seed: int = 0, train_image_encoder: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.num_corrective_points = num_corrective_points
        self.generator = torch.Generator().manual_seed(seed)
        self.train_image_encoder = train_image_encoder
        model.vision_encoder.requires_grad_(train_image_encoder)

    def forward(
        self, pixel_values: torch.Tensor, gt_masks: torch.Tensor, region_embeddings: torch.Tensor
    ) -> torch.Tensor:
        """`pixel_values (B, 3, S, S)`, bool `gt_masks (B, P, S, S)` and the masks' CLIP image embeddings
        `region_embeddings (B, P, embed_dim)` -> scalar loss: text-token loss plus interactive point / box loss."""
        with torch.set_grad_enabled(self.train_image_encoder and torch.is_grad_enabled()):
            embeddings = self.model.get_image_embeddings(pixel_values)
        output = self.model(image_embeddings=embeddings, text_embeds=region_embeddings, multimask_output=True)
        text_loss = sam_loss(output.pred_masks, output.iou_scores, gt_masks).total
        points_loss = interactive_loss(self.model, embeddings, gt_masks, self.num_corrective_points, self.generator)
        return text_loss + points_loss.total


class CocoMaskedImages(torch.utils.data.Dataset):
    """A folder of images with COCO instance annotations (RLE or polygon masks), images without masks skipped:
    `data[i]` -> `(image (H, W, 3) uint8, masks (n, H, W) bool)`, cycling past the end."""

    def __init__(self, images_dir: str | os.PathLike, annotation_file: str | os.PathLike) -> None:
        self.images_dir = Path(images_dir)
        self.coco = COCO(os.fspath(annotation_file))
        self.image_ids = [i for i in sorted(self.coco.getImgIds()) if self.coco.getAnnIds(imgIds=i, iscrowd=False)]
        if not self.image_ids:
            raise ValueError(f"{annotation_file} has no image with (non-crowd) mask annotations.")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_id = self.image_ids[index % len(self.image_ids)]
        info = self.coco.loadImgs(image_id)[0]
        image = np.asarray(open_image(self.images_dir / info["file_name"]))
        annotations = self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id, iscrowd=False))
        return image, np.stack([self.coco.annToMask(annotation).astype(bool) for annotation in annotations])


def text_token_batch(
    examples: list[tuple[np.ndarray, np.ndarray]],
    processor: SamProcessor,
    clip: ClipScorer,
    rng: np.random.Generator,
    prompts_per_image: int = PROMPTS_PER_IMAGE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`pixel_values (B, 3, S, S)`, ground truth `(B, P, S, S)` and the CLIP image embeddings of the masks' paper
    crops `(B, P, embed_dim)`; each image's masks are sampled (with repetition when it has fewer than P)."""
    pixel_values = processor(images=[image for image, _ in examples])["pixel_values"]
    gt, views = [], []
    for image, masks in examples:
        masks = masks[[mask.any() for mask in masks]]
        chosen = masks[rng.choice(len(masks), prompts_per_image, replace=len(masks) < prompts_per_image)]
        gt.append(masks_to_input_frame(chosen, processor))
        views += [paper_view(image, mask, rng) for mask in chosen]
    embeddings = clip.embed_images(views).view(len(examples), prompts_per_image, -1)
    return pixel_values, torch.stack(gt), embeddings


def train_text_token(
    model: SamModel,
    processor: SamProcessor,
    clip: ClipScorer,
    data: torch.utils.data.Dataset,
    output_dir: str | Path,
    steps: int,
    minutes: float | None = None,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    warmup_steps: int = 50,
    seed: int = 0,
    train_image_encoder: bool = False,
) -> list[dict]:
    """Gives `model` a text encoder from `clip`, trains it (see the module docstring), saves model + processor and
    the loss log (`training_log.json`, every 25 steps), and returns the log."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = with_text_encoder(model, clip).train()
    processor = SamProcessor(processor.image_processor, model.config.text_config.context_length)
    trainer = TextTokenTrainer(model, seed=seed, train_image_encoder=train_image_encoder)

    def batch(index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        examples = [data[index * batch_size + i] for i in range(batch_size)]
        return text_token_batch(examples, processor, clip, rng)

    accelerator, log = fit(trainer, batch, steps, minutes, learning_rate, warmup_steps, description="text token")
    save_trained(accelerator, trainer, processor, output_dir, log)
    return log


def add_text_token_arguments(parser: argparse.ArgumentParser, steps: int = 2000) -> None:
    """The command-line options of `train_from_arguments`, everything but the data: `--model`, `--clip`,
    `--pretrained`, `--output`, `--steps` / `--minutes`, `--batch-size`, `--learning-rate`, `--seed`,
    `--train-image-encoder`."""
    parser.add_argument("--model", required=True, help="the SAM to start from (directory or Hub id)")
    parser.add_argument("--clip", required=True, help="open_clip model name, 'hf-hub:...' or a ClipScorer directory")
    parser.add_argument("--pretrained", help="open_clip pretrained tag or checkpoint, with a model name")
    parser.add_argument("--output", required=True)
    add_budget_arguments(parser, steps=steps)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-image-encoder", action="store_true", help="fine-tune the image encoder too")


def train_from_arguments(args: argparse.Namespace, data: torch.utils.data.Dataset) -> list[dict]:
    """`train_text_token` on `data` with the model, CLIP and settings of `add_text_token_arguments`' options."""
    clip = (
        ClipScorer.from_pretrained(args.clip)
        if Path(args.clip).is_dir()
        else ClipScorer.from_open_clip(args.clip, args.pretrained)
    )
    model = SamModel.from_pretrained(args.model)
    processor = SamProcessor.from_pretrained(args.model)
    return train_text_token(
        model, processor, clip, data, args.output, args.steps, args.minutes, args.batch_size, args.learning_rate,
        seed=args.seed, train_image_encoder=args.train_image_encoder,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    """Entry point of `python -m sam_hf.training.text_token`: `train_from_arguments` on the COCO data of `--images`
    and `--annotations`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_text_token_arguments(parser)
    parser.add_argument("--images", required=True, help="folder of images named by --annotations")
    parser.add_argument("--annotations", required=True, help="COCO instance annotations with masks")
    args = parser.parse_args(argv)
    train_from_arguments(args, CocoMaskedImages(args.images, args.annotations))


if __name__ == "__main__":
    main()
