"""Times video tracking (`sam_hf.video.VideoPredictor.propagate`): frames per second with 1 and 4 objects, the image
encoder's share of a frame, and the cost of one object more, for the bundled model and a vit_b-sized model with random
weights, on the same generated clip (4 objects, 128x128; the vit_b processor resizes it to 1024).

    python -m benchmarks.benchmark_video [--frames 8] [--vit-b-frames 2] [--repeats 2] [--threads 2] [--load TEXT]
        [--device cuda] [--json PATH]

One run, interleaved: each repeat runs, per model, the encoder alone over the frames, then tracking with 1 object,
then with 4; the medians are reported. Run from the repository root; results in benchmarks/results/video.md / .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from benchmarks.benchmark_models import synchronized_seconds
from sam_hf import SamConfig, SamModel, SamPredictor, SamProcessor
from sam_hf.data.motion import CLIP_HELD_OUT_SEED, generate_clip
from sam_hf.geometry import mask_boxes
from sam_hf.loading import load_sam
from sam_hf.video import VideoPredictor, VideoSettings

RESULTS = Path(__file__).parent / "results" / "video.json"


def models(device: str) -> dict[str, SamPredictor]:
    """The bundled model and a vit_b-sized model with seeded random weights, on `device`."""
    torch.manual_seed(0)
    config = SamConfig.from_preset("vit_b")
    vit_b = SamModel(config).eval().to(device)
    return {
        "bundled": SamPredictor(*load_sam(None, device)),
        "vit_b (random)": SamPredictor(vit_b, SamProcessor.for_config(config)),
    }


def encoder_seconds(predictor: SamPredictor, images: list) -> float:
    """Seconds per frame of the image encoder alone."""
    return synchronized_seconds(lambda: [predictor.embed(image) for image in images]) / len(images)


def tracking_seconds(predictor: SamPredictor, clip, frames: int, objects: int) -> float:
    """Seconds per frame of `propagate` (encoder + one decoder batch), the objects prompted by boxes on frame 0."""
    images = clip.images
    tracker = VideoPredictor(predictor, [images[t] for t in range(frames)], VideoSettings(refind="none"))
    for object_id, mask in enumerate(clip.frame(0).masks[:objects], 1):
        tracker.add_prompt(0, object_id, box=mask_boxes(mask).tolist())
    start = time.perf_counter()
    count = sum(1 for _ in tracker.propagate())
    return (time.perf_counter() - start) / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="frames per run, bundled model")
    parser.add_argument("--vit-b-frames", type=int, default=2, help="frames per run, vit_b")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--load", default="unknown", help="what else ran on the machine (goes into the results)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clip = generate_clip(CLIP_HELD_OUT_SEED + 900, max(args.frames, args.vit_b_frames), min_objects=4, max_objects=4)
    predictors = models(args.device)
    frames = {"bundled": args.frames, "vit_b (random)": args.vit_b_frames}
    times: dict[str, dict[str, list[float]]] = {name: {"encoder": [], "1": [], "4": []} for name in predictors}
    with torch.inference_mode():
        for predictor in predictors.values():  # warm-up: one frame each
            tracking_seconds(predictor, clip, 1, 4)
        for _ in range(args.repeats):
            for name, predictor in predictors.items():
                images = [clip.images[t] for t in range(frames[name])]
                times[name]["encoder"].append(encoder_seconds(predictor, images))
                times[name]["1"].append(tracking_seconds(predictor, clip, frames[name], 1))
                times[name]["4"].append(tracking_seconds(predictor, clip, frames[name], 4))
    rows = {}
    for name, values in times.items():
        encoder, one, four = (statistics.median(values[key]) for key in ("encoder", "1", "4"))
        rows[name] = {
            "frames_per_run": frames[name],
            "fps_1_object": 1 / one,
            "fps_4_objects": 1 / four,
            "encoder_share_1_object": encoder / one,
            "encoder_share_4_objects": encoder / four,
            "ms_per_added_object": 1000 * (four - one) / 3,
            "encoder_ms": 1000 * encoder,
            "raw_seconds_per_frame": values,
        }
    load = os.getloadavg()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    header = (
        f"torch {torch.__version__}, {args.threads} threads, {device_name}, fp32; median of {args.repeats} "
        f"interleaved repeats after one warm-up frame; load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
        f"load: {args.load}"
    )
    lines = [
        f"Video tracking speed ({header})",
        "",
        "| model | frames/run | FPS, 1 object | FPS, 4 objects | encoder share (1 / 4 objects) | ms per object added |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['frames_per_run']} | {row['fps_1_object']:.3g} | {row['fps_4_objects']:.3g} | "
            f"{row['encoder_share_1_object']:.0%} / {row['encoder_share_4_objects']:.0%} | "
            f"{row['ms_per_added_object']:.0f} |"
        )
    text = "\n".join(lines)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"environment": header, "results": rows}, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
