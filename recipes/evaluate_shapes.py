"""Score a model on held-out generated scenes (seeds from `sam_hf.data.HELD_OUT_SEED`, never used in training) with
`sam_hf.training.evaluate`: one centre click, the tight box, and the object's name as a text prompt; run from the
repository root:

    python -m recipes.evaluate_shapes src/sam_hf/bundled/sam-hf-shapes [--scenes 200] \
        [--clip src/sam_hf/bundled/sam-hf-shapes-clip] [--split validation]

`--split validation` scores the scenes that choose between training stages (seeds from `SCENE_VALIDATION_SEED`),
never the held-out ones.
"""

from __future__ import annotations

import argparse

from sam_hf import SamModel, SamProcessor
from sam_hf.data import HELD_OUT_SEED, generate_scene
from sam_hf.loading import load_clip
from sam_hf.training import evaluate

from .shapes import IMAGE_SIZE

SCENE_VALIDATION_SEED = HELD_OUT_SEED + 10_000  # scenes for choosing between stages, apart from the held-out 200
SPLITS = {"held-out": HELD_OUT_SEED, "validation": SCENE_VALIDATION_SEED}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model directory or Hub id")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--split", choices=SPLITS, default="held-out", help="held-out (scoring) or validation")
    parser.add_argument("--clip", help="also score zero-shot text prompts with this CLIP (see sam_hf.load_clip)")
    args = parser.parse_args(argv)
    model = SamModel.from_pretrained(args.model).eval()
    clip = load_clip(args.clip) if args.clip else None
    scenes = (generate_scene(SPLITS[args.split] + index, IMAGE_SIZE) for index in range(args.scenes))
    results = evaluate(model, SamProcessor.from_pretrained(args.model), scenes, clip=clip)
    print("| prompt | mIoU |\n|---|---|")
    for name, value in results.items():
        print(f"| {name.replace('_', ' ')} | {value:.3f} |")


if __name__ == "__main__":
    main()
