"""Score video tracking on held-out generated clips (`sam_hf.data.motion`, seeds from `CLIP_HELD_OUT_SEED`; with
`--split validation`, the tuning clips from `CLIP_VALIDATION_SEED`) with the DAVIS measures: J (region IoU) and F
(boundary F-measure), each averaged per object over frames 1.. and then over all objects, their mean J&F, the fraction
of frames where a visible object was reported lost, and the object-frames of each failure type
(`sam_hf.video.metrics.failure_type`). One prompt per object on frame 0: a click at the pixel farthest inside its mask,
or its tight box. Run from the repository root:

    python -m recipes.evaluate_video [MODEL] [--clips 100] [--frames 48] [--prompts point,box] [--split validation]

`--minutes` stops starting new clips after that long and reports how many were scored. `VideoSettings` are chosen on
the validation split only, never on the held-out clips. `--every-frame` follows nothing: every frame is prompted the
same way from its exact masks, the ceiling of prompting one frame at a time with the model (`score_clip`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sam_hf.data.motion import CLIP_HELD_OUT_SEED, CLIP_VALIDATION_SEED, generate_clip
from sam_hf.loading import load_sam
from sam_hf.predictor import SamPredictor
from sam_hf.video import VideoSettings, score_clip
from sam_hf.video.metrics import FAILURES, PROMPTS

SPLITS = {"held-out": CLIP_HELD_OUT_SEED, "validation": CLIP_VALIDATION_SEED}


def summarise(scores: list) -> dict[str, Any]:
    """J, F, J&F (means over every object of the clips), the visible object-frames, the fraction of them reported
    lost, and the object-frames of each failure type (runs over parts of a split combine exactly: weight J and F by
    objects and lost by visible)."""
    j = float(np.mean([value for score in scores for value in score.J]))
    f = float(np.mean([value for score in scores for value in score.F]))
    visible = sum(score.visible for score in scores)
    lost = sum(score.lost for score in scores) / max(visible, 1)
    objects = sum(len(score.J) for score in scores)
    failures = {name: sum(score.failures[name] for score in scores) for name in FAILURES}
    means = {"J": round(j, 4), "F": round(f, 4), "J&F": round((j + f) / 2, 4), "lost": round(lost, 4)}
    return {"clips": len(scores), "objects": objects, "visible": visible, **means, "failures": failures}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="model directory, Hub id or .pth (default: the bundled model)")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--split", choices=SPLITS, default="held-out", help="held-out (scoring) or validation (tuning)")
    parser.add_argument("--first-clip", type=int, default=0, help="seed offset from the split's first seed")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--prompts", default=",".join(PROMPTS), help="comma-separated: point, box")
    parser.add_argument("--track-prompt", default=VideoSettings.track_prompt, help="VideoSettings.track_prompt")
    parser.add_argument("--refind", default=VideoSettings.refind, help="VideoSettings.refind")
    parser.add_argument("--minutes", type=float, help="stop starting clips after this long")
    parser.add_argument(
        "--every-frame", action="store_true", help="prompt every frame from its exact masks instead of following"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor = load_sam(args.model, "cpu" if not torch.cuda.is_available() else None)
    predictor = SamPredictor(model, processor)
    settings = VideoSettings(track_prompt=args.track_prompt, refind=args.refind)
    prompts = args.prompts.split(",")
    scores: dict[str, list] = {prompt: [] for prompt in prompts}
    start = time.perf_counter()
    for index in range(args.first_clip, args.first_clip + args.clips):
        if args.minutes is not None and time.perf_counter() - start > 60 * args.minutes:
            break
        clip = generate_clip(SPLITS[args.split] + index, args.frames)
        for prompt in prompts:
            scores[prompt].append(score_clip(predictor, clip, prompt, settings, args.every_frame))
        so_far = {prompt: summarise(values) for prompt, values in scores.items()}
        print(f"clip {index}, {time.perf_counter() - start:.0f} s: {json.dumps(so_far)}", flush=True)
    results = {prompt: summarise(values) for prompt, values in scores.items()}
    print(
        f"\n{args.split}: {len(scores[prompts[0]])} clips of {args.frames} frames, {time.perf_counter() - start:.0f} s"
    )
    print("| prompt on frame 0 | clips | objects | J | F | J&F | visible frames lost |\n|---|---|---|---|---|---|---|")
    for prompt, result in results.items():
        print(
            f"| {prompt} | {result['clips']} | {result['objects']} | {result['J']:.3f} | {result['F']:.3f} | "
            f"{result['J&F']:.3f} | {result['lost']:.3f} |"
        )
    print(
        f"\nfailed object-frames (J < 0.5 or lost)\n| prompt | {' | '.join(FAILURES)} |\n|---{'|---' * len(FAILURES)}|"
    )
    for prompt, result in results.items():
        print(f"| {prompt} | {' | '.join(str(result['failures'][name]) for name in FAILURES)} |")
    if args.json:
        settings_dict = {"split": args.split, "track_prompt": settings.track_prompt, "refind": settings.refind}
        settings_dict.update(exclusive=settings.exclusive, frames=args.frames, every_frame=args.every_frame)
        args.json.write_text(json.dumps({"settings": settings_dict, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
