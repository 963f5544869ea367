"""The `sam-hf` command line.

    sam-hf segment IMAGE --point X,Y[,LABEL] ... [--box X1,Y1,X2,Y2] --out mask.png [--multimask] [--json scores.json]
    sam-hf segment IMAGE --text "red circle" [--clip ViT-B-16 --pretrained TAG] --out mask.png
    sam-hf everything IMAGE_OR_DIR --out labels/ [--coco annotations.json] [--points-per-side 32 ...]
    accelerate launch -m sam_hf everything DIR --out labels/ [--coco ...]   # shared by every process / GPU
    sam-hf everything DIR_OR_DATASET --engine ray [--address auto] --out labels/ [--coco annotations.json]
    sam-hf convert sam_vit_b_01ec64.pth sam-vit-base [--push-to-hub USER/REPO]   # official .pth -> sam_hf directory
    sam-hf export-onnx MODEL onnx/ [--return-single-mask]                 # image_encoder.onnx + mask_decoder.onnx
    sam-hf video clip.mp4 --point X,Y | --box X1,Y1,X2,Y2 | --text "red circle" [--frame K] --out DIR

`--model` takes a local directory or a Hub id (safetensors or `pytorch_model.bin`) or an official checkpoint file
(`sam_vit_h_4b8939.pth`, or `org/repo/file.pth` on the Hub); the bundled small model by default. Bad input ends with a
one-line error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from .loading import DTYPES, load_clip, load_sam, open_image, resolve_device

POINT_LABEL_NAMES = "1 foreground, 0 background"


def _numbers(text: str, count: Sequence[int], what: str) -> list[float]:
    """`"1,2.5,3"` -> floats, `len` in `count`; an `argparse` type error naming the expected form otherwise."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """`"X,Y"` or `"X,Y,LABEL"` (label 1 foreground, 0 background; default 1) in image pixels."""
    values = _numbers(text, (2, 3), "X,Y or X,Y,LABEL with numbers X, Y and LABEL 1 or 0")
    label = values[2] if len(values) == 3 else 1
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"point label must be {POINT_LABEL_NAMES}, got {text!r}")
    return values[0], values[1], int(label)


def parse_box(text: str) -> tuple[float, float, float, float]:
    """`"X1,Y1,X2,Y2"` in image pixels, with X2 >= X1 and Y2 >= Y1."""
    x1, y1, x2, y2 = _numbers(text, (4,), "X1,Y1,X2,Y2 (four numbers)")
    if x2 < x1 or y2 < y1:
        raise argparse.ArgumentTypeError(f"box must have X2 >= X1 and Y2 >= Y1, got {text!r}")
    return x1, y1, x2, y2


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="model directory, Hub id or official .pth checkpoint (local or org/repo/file.pth; default: the bundled "
        "small model)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the first GPU if any, else the CPU)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")


def _load_model(args: argparse.Namespace, device: Any = None) -> tuple[Any, Any]:
    """`load_sam` with the command's model flags; a missing or broken checkpoint is a one-line error."""
    try:
        return load_sam(args.model, args.device if device is None else device, args.dtype)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load model {args.model or 'bundled'!r}: {error}") from error
    except pickle.UnpicklingError as error:  # a .bin holding more than tensors: the weights-only unpickler refuses it
        raise ValueError(
            f"cannot load model {args.model or 'bundled'!r}: its pickled weights hold objects other than tensors; "
            "refusing to unpickle them (convert the checkpoint to safetensors)."
        ) from error


def _add_segment_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "segment", help="masks for point / box prompts on one image", description="Masks for prompts on one image."
    )
    parser.add_argument("image", help="image file")
    parser.add_argument(
        "--point",
        type=parse_point,
        action="append",
        metavar="X,Y[,LABEL]",
        help=f"a point in image pixels, label {POINT_LABEL_NAMES} (default 1); repeat for more points",
    )
    parser.add_argument("--box", type=parse_box, metavar="X1,Y1,X2,Y2", help="a box in image pixels")
    parser.add_argument("--text", help="what to segment, e.g. 'red circle' (with or without points / box)")
    parser.add_argument(
        "--text-method",
        choices=("auto", "learned", "zero-shot"),
        default="auto",
        help="learned text token (models trained with one) or CLIP-scored proposals; auto picks (default)",
    )
    parser.add_argument(
        "--clip", help="zero-shot CLIP: open_clip name, hf-hub:org/repo or directory (default: the bundled CLIP)"
    )
    parser.add_argument("--pretrained", help="open_clip pretrained tag or checkpoint, with a --clip model name")
    parser.add_argument("--out", required=True, type=Path, help="mask PNG to write (0 / 255)")
    parser.add_argument("--multimask", action="store_true", help="3 candidate masks (ambiguous single click)")
    parser.add_argument(
        "--mask-index", type=int, help="which candidate to write (default: the one with the highest score)"
    )
    parser.add_argument("--json", type=Path, help="also write the scores (and the chosen index) to this JSON file")
    _add_model_arguments(parser)
    parser.set_defaults(run=run_segment)


def run_segment(args: argparse.Namespace) -> None:
    """`sam-hf segment`: masks for the point / box / text prompts on one image; writes the chosen one
    (`--mask-index`, else the highest-scoring) as a 0 / 255 PNG to `--out`, and the scores to `--json`."""
    from .predictor import SamPredictor
    from .text_to_mask import resolve_method, segment_prompts

    if not args.point and args.box is None and args.text is None:
        raise ValueError("no prompt: give --point X,Y, --box X1,Y1,X2,Y2 and/or --text.")
    if args.text is not None and not args.text.strip():  # before loading anything
        raise ValueError(f"--text must not be empty or whitespace only, got {args.text!r}.")
    image = open_image(args.image)
    model, processor = _load_model(args)
    predictor = SamPredictor(model, processor)
    zero_shot = args.text is not None and resolve_method(model.config, args.text_method) == "zero-shot"
    clip = load_clip(args.clip, args.pretrained, args.device) if zero_shot else None
    result = segment_prompts(
        predictor, image, args.point, args.box, args.text, args.text_method, clip, multimask=args.multimask
    )
    if args.text is not None and not result.found:
        print(f"{args.text!r} not found in {args.image} ({result.method})")
        raise SystemExit(1)
    masks, scores = result.masks, result.scores
    index = int(np.argmax(scores)) if args.mask_index is None else args.mask_index
    if not 0 <= index < len(masks):
        raise ValueError(f"--mask-index must be in [0, {len(masks) - 1}], got {index}.")
    PIL.Image.fromarray(masks[index].astype(np.uint8) * 255).save(args.out, format="PNG")
    print(f"wrote {args.out} (mask {index}, score {scores[index]:.3f})")
    if args.json is not None:
        report = {"image": str(args.image), "mask_index": index, "scores": scores.tolist()}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def _generator_settings() -> list[dataclasses.Field]:
    """The everything-mode settings that are flags: the numeric fields of `EverythingSettings`."""
    from .everything import EverythingSettings

    return [setting for setting in dataclasses.fields(EverythingSettings) if "range" in setting.metadata]


def _add_everything_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "everything",
        help="all masks of an image, a directory of images or a dataset, as Parquet labels (and COCO)",
        description="Everything mode over an image, a directory of images (recursively) or a Hugging Face dataset, "
        "into Parquet shards in --out (one row per image, the SA-1B record fields per mask), on one process, under "
        "`accelerate launch -m sam_hf everything ...` (the processes share the images) or on Ray (--engine ray). "
        "Resumable: images already in --out (same name, same bytes) are skipped. --coco exports one COCO JSON file.",
    )
    parser.add_argument(
        "images", help="image file or directory, or a dataset: save_to_disk / Parquet directory, or Hub id org/name"
    )
    parser.add_argument("--out", required=True, type=Path, help="label directory: Parquet shards in OUT/data")
    parser.add_argument("--coco", type=Path, help="also export one COCO JSON file (RLE masks) from the shards")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the shards as this Hub dataset")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--split", help="dataset split (default: train)")
    parser.add_argument("--image-column", help="dataset column holding the images (default: image)")
    ray = parser.add_argument_group("Ray Data engine (--engine ray; needs the ray extra)")
    ray.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process, or the processes of accelerate launch (default); ray: a Ray cluster",
    )
    ray.add_argument(
        "--address",
        help="existing Ray cluster, left running (e.g. 127.0.0.1:6379, auto, ray://head:10001; default: RAY_ADDRESS "
        "if set, else a local Ray started and stopped by the command)",
    )
    ray.add_argument("--concurrency", type=int, metavar="N", help="actors, one model each (default: 1)")
    ray.add_argument("--num-gpus", type=float, metavar="G", help="GPUs per actor (default: 1 if any)")
    ray.add_argument("--num-cpus", type=float, metavar="C", help="CPUs per actor (default: 1)")
    _add_model_arguments(parser)
    settings = parser.add_argument_group("everything-mode settings (as the official SamAutomaticMaskGenerator)")
    for setting in _generator_settings():
        settings.add_argument(
            f"--{setting.name.replace('_', '-')}",
            type=type(setting.default),
            default=setting.default,
            metavar="N",
            help=f"{setting.metadata['help']} (default: %(default)s)",
        )
    parser.set_defaults(run=run_everything)


def run_everything(args: argparse.Namespace) -> None:
    """`sam-hf everything`: everything mode over an image, a directory or a dataset into the Parquet directory `--out`
    (resumable), by this process / accelerate's or by Ray; then `--coco` and `--push-to-hub`, whichever engine ran.
    Exits with a message when some images could not be read."""
    from .everything import EverythingSettings, SamAutomaticMaskGenerator
    from .labelling import ParquetLabels, open_source

    parameters = {setting.name: getattr(args, setting.name) for setting in _generator_settings()}
    everything = EverythingSettings(**parameters, output_mode="coco_rle")  # bad values fail before a model loads
    settings = {"model": args.model or "bundled", "dtype": args.dtype, **parameters}
    if args.out.suffix.lower() == ".json":
        raise ValueError(
            f"--out is the label directory (Parquet shards), got {str(args.out)!r}; for one COCO file add "
            f"--coco {args.out}."
        )
    ray_only = {"--address": args.address, "--concurrency": args.concurrency}
    ray_only |= {"--num-gpus": args.num_gpus, "--num-cpus": args.num_cpus}
    given = [flag for flag, value in ray_only.items() if value is not None]
    if args.engine == "local" and given:
        raise ValueError(f"{', '.join(given)} apply to --engine ray, not to the local engine.")
    source = open_source(args.images, args.split, args.image_column)

    def make_generator(device: Any) -> SamAutomaticMaskGenerator:
        model, processor = _load_model(args, args.device or device)
        return SamAutomaticMaskGenerator(model, processor=processor, settings=everything)

    if args.engine == "ray":
        summary = _everything_with_ray(args, source, make_generator, settings)
    else:
        from .labelling import label_images

        device = resolve_device(args.device) if args.device else None
        cpu = device.type == "cpu" if device else not torch.cuda.is_available()
        summary = label_images(source, args.out, make_generator, settings, progress=not args.no_progress, cpu=cpu)
        if summary is None:  # not the main process
            return
    print(f"wrote {args.out}: {summary['images']} images ({summary['labelled']} labelled now)")
    labels = ParquetLabels(args.out)
    if args.coco is not None:
        coco = labels.export_coco(args.coco)
        print(f"wrote {args.coco}: {len(coco['images'])} images, {len(coco['annotations'])} masks")
    if args.push_to_hub is not None:
        labels.push_to_hub(args.push_to_hub)
        print(f"pushed {args.out} to the Hub dataset {args.push_to_hub}")
    failed = summary["failed"]
    if failed:  # the others are labelled and written; the run still fails, so that scripts notice
        lines = "".join(f"\n  {item['error']}" for item in failed)
        raise SystemExit(
            f"sam-hf everything: {len(failed)} of {summary['images']} files could not be read (listed in the "
            f"output's error column):{lines}"
        )


def _everything_with_ray(args: argparse.Namespace, source: Any, make_generator: Any, settings: dict) -> dict:
    """`sam-hf everything --engine ray`: labels into the Parquet directory `--out`; returns `label_with_ray`'s
    summary."""
    try:
        from .labelling.ray_engine import label_with_ray
    except ImportError as error:
        raise ValueError(f"--engine ray needs the ray extra (pip install 'sam_hf[ray]'): {error}") from error

    num_gpus = args.num_gpus if args.num_gpus is not None else float(torch.cuda.is_available())
    return label_with_ray(
        source,
        args.out,
        make_generator,
        settings,
        address=args.address,
        concurrency=1 if args.concurrency is None else args.concurrency,
        num_cpus=1.0 if args.num_cpus is None else args.num_cpus,
        num_gpus=num_gpus,
        progress=not args.no_progress,
    )


def _add_convert_parser(commands: argparse._SubParsersAction) -> None:
    from .configuration_sam import PRESETS

    parser = commands.add_parser(
        "convert",
        help="official Segment Anything .pth checkpoint -> sam_hf model directory",
        description="Converts an official checkpoint (sam_vit_b_01ec64.pth, ...; read with the weights-only "
        "unpickler, size read off the weights) into a directory with config.json, model.safetensors and the processor "
        "config, which SamModel.from_pretrained and transformers-style code load.",
    )
    parser.add_argument("checkpoint", type=Path, help="official .pth (or .safetensors) checkpoint file")
    parser.add_argument("output_dir", type=Path, help="directory to write the sam_hf model to")
    parser.add_argument("--model-size", choices=sorted(PRESETS), help="insist on this size (default: any)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload to this Hub repository")
    parser.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> None:
    """`sam-hf convert`: official checkpoint -> sam_hf model directory, optionally pushed to the Hub."""
    from .conversion import convert_checkpoint

    model = convert_checkpoint(args.checkpoint, args.output_dir, args.model_size, args.push_to_hub)
    size = model.config.vision_config
    print(f"wrote {args.output_dir}: {size.hidden_size}-wide, {size.num_hidden_layers}-layer image encoder")


def _add_export_onnx_parser(commands: argparse._SubParsersAction) -> None:
    from .conversion.onnx_export import DECODER_FILE, DEFAULT_OPSET, ENCODER_FILE

    parser = commands.add_parser(
        "export-onnx",
        help="ONNX graphs of a model, with the official Segment Anything ONNX interface",
        description=f"Writes {ENCODER_FILE} (pixel_values -> image_embeddings) and {DECODER_FILE} (the official "
        "SamOnnxModel inputs: image_embeddings, point_coords, point_labels, mask_input, has_mask_input, "
        "orig_im_size). Needs the onnx extra: pip install 'sam_hf[onnx]'.",
    )
    parser.add_argument("model", help="model directory, Hub id or official .pth checkpoint (as --model elsewhere)")
    parser.add_argument("output_dir", type=Path, help=f"directory to write {ENCODER_FILE} and {DECODER_FILE} to")
    parser.add_argument("--return-single-mask", action="store_true", help="one mask per call instead of four")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default: %(default)s)")
    parser.set_defaults(run=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> None:
    """`sam-hf export-onnx`: writes the model's image encoder and mask decoder ONNX graphs (exported on the CPU in
    float32)."""
    from .conversion.onnx_export import export_onnx

    model, _ = _load_model(argparse.Namespace(model=args.model, device="cpu", dtype="float32"))
    try:
        paths = export_onnx(model, args.output_dir, args.return_single_mask, args.opset)
    except ImportError as error:  # torch.onnx needs onnx and onnxscript
        raise ValueError(f"ONNX export needs the onnx extra (pip install 'sam_hf[onnx]'): {error}") from error
    for path in paths:
        print(f"wrote {path}")


def _add_video_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "video",
        help="segment and follow objects through a video",
        description="Prompts objects on one frame and follows them forward and backward through the video (each frame "
        "prompted from the previous one). Points form object 1; each --box and each --text is one more object. "
        "Writes OUT/masks.json (COCO RLE per frame and object), OUT/masks/NNNNN.png (pixel value = object id) and "
        "OUT/overlay.mp4.",
    )
    parser.add_argument("video", help="video file (mp4, webm, gif, ...) or folder of frames")
    parser.add_argument(
        "--point", type=parse_point, action="append", metavar="X,Y[,LABEL]", help="a point of object 1; repeat"
    )
    parser.add_argument("--box", type=parse_box, action="append", metavar="X1,Y1,X2,Y2", help="one object's box")
    parser.add_argument("--text", action="append", help="one object's name, e.g. 'red circle'")
    parser.add_argument("--frame", type=int, default=0, help="the frame the prompts are on (default: 0)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--no-overlay", action="store_true", help="skip the MP4 with the masks overlaid")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_arguments(parser)
    parser.set_defaults(run=run_video)


def run_video(args: argparse.Namespace) -> None:
    """`sam-hf video`: follows the prompted objects from `--frame` to the end and back to the start, writing the
    masks as COCO RLE JSON and PNGs and an overlay MP4 to `--out`."""
    from .predictor import SamPredictor
    from .video import VideoPredictor, open_video, write_tracking

    if not (args.point or args.box or args.text):
        raise ValueError("no prompt: give --point X,Y, --box X1,Y1,X2,Y2 and/or --text.")
    video = open_video(args.video)  # a bad video or frame fails before a model loads
    if not 0 <= args.frame < len(video):
        raise ValueError(f"--frame {args.frame} is out of range: {args.video} has {len(video)} frames.")
    model, processor = _load_model(args)
    zero_shot = args.text and model.config.text_config is None  # no learned text token: CLIP-scored proposals
    clip = load_clip(device=args.device) if zero_shot else None
    tracker = VideoPredictor(SamPredictor(model, processor), video, clip=clip)
    points = np.asarray(args.point or np.zeros((0, 3)))
    prompts = [{"points": points[:, :2], "labels": points[:, 2]}] if len(points) else []
    prompts += [{"box": box} for box in args.box or []] + [{"text": text} for text in args.text or []]
    for object_id, prompt in enumerate(prompts, 1):
        tracker.add_prompt(args.frame, object_id, **prompt)
    summary = write_tracking(
        tracker, args.out, start_frame=args.frame, overlay=not args.no_overlay, progress=not args.no_progress
    )
    print(f"wrote {summary['json']} and {summary['masks']}: {summary['frames']} frames, frames lost {summary['lost']}")
    if summary["overlay"]:
        print(f"wrote {summary['overlay']}")


def build_parser() -> argparse.ArgumentParser:
    """The `sam-hf` argument parser: subcommands `segment`, `everything`, `convert`, `export-onnx` and `video`, each
    setting `args.run` to its `run_*` function."""
    parser = argparse.ArgumentParser(
        prog="sam-hf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_segment_parser(commands)
    _add_everything_parser(commands)
    _add_convert_parser(commands)
    _add_export_onnx_parser(commands)
    _add_video_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `sam-hf` and `python -m sam_hf`; exits with status 2 and a one-line message on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError) as error:  # the library's bad-input errors, unreadable / unwritable files
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    except KeyboardInterrupt:  # finished images are kept: `everything` resumes from them
        parser.exit(130, f"{parser.prog} {args.command}: interrupted\n")


if __name__ == "__main__":
    main(sys.argv[1:])
