"""Stages 4-8 of the bundled model: its learned text token (`sam_hf.training.text_token`) trained on generated
scenes with the bundled CLIP; run from the repository root:

    python -m recipes.text_token_shapes --model stage3 --clip sam-hf-shapes-clip --output stage4 --minutes 25
"""

from __future__ import annotations

import argparse

from sam_hf.training.text_token import add_text_token_arguments, train_from_arguments

from .shapes import GeneratedScenes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_text_token_arguments(parser)
    parser.add_argument("--first-example", type=int, default=0, help="seed of the first training scene")
    args = parser.parse_args(argv)
    train_from_arguments(args, GeneratedScenes(args.first_example))


if __name__ == "__main__":
    main()
