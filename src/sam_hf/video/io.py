"""Video in and out: frames streamed from a file (mp4, webm, gif, ... through PyAV), a folder of frames or a sequence
of arrays; results out as per-frame COCO RLE JSON, per-frame PNG masks and an MP4 with the masks overlaid.

PyAV (`pip install 'sam_hf[video]'`) is imported only when a video file is read or an MP4 written.

Limits (a `ValueError` names the video beyond them; pass other limits to `open_video`): at most `MAX_FRAMES` frames
(100,000: about an hour at 25 fps) of at most `MAX_FRAME_PIXELS` pixels (8K UHD, 7680x4320). Frames are streamed, so
memory does not grow with the length; the limits bound run time and the size of the outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from ..everything import coco_rle
from ..geometry import mask_boxes
from ..loading import open_image
from ..processing.image_inputs import to_uint8_hwc

MAX_FRAMES = 100_000
MAX_FRAME_PIXELS = 7680 * 4320
FRAME_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
REVERSE_BLOCK = 32  # frames held at once when a file is read backwards (decoded forwards block by block)
OVERLAY_OPACITY = 0.55
# Distinct colours for object ids 1, 2, ... (cycled); index 0 of the PNG palette is the background.
PALETTE = ((230, 25, 75), (60, 180, 75), (67, 99, 216), (245, 130, 49), (145, 30, 180), (66, 212, 244),
           (240, 50, 230), (191, 239, 69), (250, 190, 212), (70, 153, 144))  # fmt: skip
MAX_OBJECT_ID = 255  # PNG masks are 8-bit indexed images: the pixel value is the object id


class VideoFrames:
    """A video as frames read on demand: `len(video)` frames of `height` x `width`, `fps`.

    Made by `open_video`. `frames(start, reverse=...)` yields `(index, (H, W, 3) uint8)` one at a time; a file whose
    stream ends before its counted frames (truncated, a damaged tail) just ends early (`frames_read` tells).
    """

    def __init__(self, name: str, num_frames: int, height: int, width: int, fps: float) -> None:
        self.name, self.num_frames, self.height, self.width, self.fps = name, num_frames, height, width, fps
        self.frames_read = 0  # frames the last forward read reached (== len(self) unless the video ended early)

    def __len__(self) -> int:
        return self.num_frames

    def _read(self, start: int, stop: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def frames(
        self, start: int = 0, stop: int | None = None, reverse: bool = False
    ) -> Iterator[tuple[int, np.ndarray]]:
        """`(index, (H, W, 3) uint8)` for frames `start, start + 1, ... < stop` (default: the end), or with `reverse`
        frames `start, start - 1, ... > stop` (default: down to 0)."""
        if not 0 <= start < self.num_frames:
            raise ValueError(f"start frame {start} is out of range for {self.name} ({self.num_frames} frames).")
        if not reverse:
            stop = self.num_frames if stop is None else min(stop, self.num_frames)
            for index, frame in enumerate(self._read(start, stop), start):
                self.frames_read = index + 1
                yield index, frame
            return
        stop = -1 if stop is None else stop
        for block_stop in range(start + 1, stop + 1, -self._reverse_block):
            block_start = max(stop + 1, block_stop - self._reverse_block)
            block = list(enumerate(self._read(block_start, block_stop), block_start))
            yield from reversed(block)

    _reverse_block = 1  # random access: no block needed

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` alone."""
        for _, frame in self.frames(index, index + 1):
            return frame
        raise ValueError(f"frame {index} of {self.name} could not be read (the video ends early).")


class SequenceFrames(VideoFrames):
    """Frames from a sequence (a list of arrays or PIL images, or any object with `len` and indexing that draws frames
    on demand)."""

    def __init__(self, frames: Sequence[Any], name: str = "frames", fps: float = 25.0) -> None:
        if not len(frames):
            raise ValueError(f"video {name!r} has no frames.")
        first = _rgb(frames[0], f"{name}[0]")
        super().__init__(name, len(frames), *first.shape[:2], fps)
        self._frames = frames

    def _read(self, start: int, stop: int) -> Iterator[np.ndarray]:
        for index in range(start, stop):
            frame = _rgb(self._frames[index], f"{self.name}[{index}]")
            if frame.shape[:2] != (self.height, self.width):
                raise ValueError(
                    f"frame {index} of {self.name} is {frame.shape[1]}x{frame.shape[0]}, the video "
                    f"{self.width}x{self.height}: every frame must have the same size."
                )
            yield frame


class FolderFrames(SequenceFrames):
    """The image files of a folder (sorted by name) as frames."""

    def __init__(self, folder: Path, fps: float = 25.0) -> None:
        files = sorted(path for path in folder.iterdir() if path.suffix.lower() in FRAME_SUFFIXES)
        if not files:
            raise ValueError(f"video folder {os.fspath(folder)!r} has no frames ({', '.join(FRAME_SUFFIXES)}).")
        super().__init__(files, os.fspath(folder), fps)


class ContainerFrames(VideoFrames):
    """A video file read with PyAV (ffmpeg): mp4, webm, gif, mov, mkv, ..."""

    _reverse_block = REVERSE_BLOCK

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._open() as container:
            stream = container.streams.video[0]
            # Counting packets demuxes without decoding: exact for the frame-per-packet formats, cheap for long files.
            count = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            super().__init__(os.fspath(path), count, stream.height, stream.width, fps)
        if count == 0:
            raise ValueError(f"video {self.name!r} has no frames.")

    def _open(self) -> Any:
        import av

        try:
            container = av.open(os.fspath(self.path))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read {os.fspath(self.path)!r} as a video: {error}") from error
        if not container.streams.video:
            container.close()
            raise ValueError(f"{os.fspath(self.path)!r} has no video stream.")
        return container

    def _read(self, start: int, stop: int) -> Iterator[np.ndarray]:
        import av

        with self._open() as container:
            try:
                for index, frame in enumerate(container.decode(video=0)):
                    if index >= stop:
                        return
                    if index >= start:
                        yield frame.to_ndarray(format="rgb24")
            except av.FFmpegError:  # a damaged tail: the video ends here
                return


def _rgb(frame: Any, name: str) -> np.ndarray:
    if isinstance(frame, (str, os.PathLike)):
        frame = open_image(frame)
    try:
        return to_uint8_hwc(frame, True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} is not an image (H, W, 3) uint8 array or PIL image: {error}") from error


def open_video(
    video: Any, max_frames: int = MAX_FRAMES, max_frame_pixels: int = MAX_FRAME_PIXELS, fps: float = 25.0
) -> VideoFrames:
    """Opens a video for streaming: a video file (PyAV), a folder of frames, a sequence of frames, or a `VideoFrames`.

    Args:
        video: the video.
        max_frames / max_frame_pixels: the size limit (see the module docstring).
        fps: frame rate of a folder or a sequence (files carry their own).

    Raises:
        ValueError: naming the video, when it is missing, unreadable, empty or over the size limit.
    """
    if isinstance(video, VideoFrames):
        frames = video
    elif isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if path.is_dir():
            frames = FolderFrames(path, fps)
        elif path.is_file():
            frames = ContainerFrames(path)
        else:
            raise ValueError(f"video file or folder not found: {os.fspath(path)!r}.")
    elif isinstance(video, np.ndarray):
        if video.ndim != 4:
            raise ValueError(f"a video array must be (frames, H, W, 3), got shape {video.shape}.")
        frames = SequenceFrames(video, fps=fps)
    elif isinstance(video, Sequence) or (hasattr(video, "__len__") and hasattr(video, "__getitem__")):
        frames = SequenceFrames(video, fps=fps)
    else:
        raise TypeError(
            f"video must be a file path, a folder of frames, a sequence of frames or VideoFrames, got "
            f"{type(video).__name__}."
        )
    if len(frames) > max_frames:
        raise ValueError(f"video {frames.name!r} has {len(frames)} frames, more than the limit of {max_frames}.")
    if frames.height * frames.width > max_frame_pixels:
        raise ValueError(
            f"video {frames.name!r} has {frames.width}x{frames.height} frames, more than the limit of "
            f"{max_frame_pixels} pixels a frame."
        )
    return frames


def color_of(object_id: int) -> tuple[int, int, int]:
    """The overlay / PNG palette colour of an object id."""
    return PALETTE[(object_id - 1) % len(PALETTE)]


def label_image(object_ids: Sequence[int], masks: np.ndarray) -> np.ndarray:
    """`(n, H, W)` masks -> `(H, W)` uint8 labels: the object id where its mask is (later objects on top), else 0."""
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for object_id, mask in zip(object_ids, masks, strict=True):
        labels[mask] = object_id
    return labels


def overlay(frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`(H, W, 3)` uint8 frame with each labelled object's colour blended in."""
    colors = np.zeros((MAX_OBJECT_ID + 1, 3), dtype=np.float32)
    for object_id in range(1, MAX_OBJECT_ID + 1):
        colors[object_id] = color_of(object_id)
    blended = frame.astype(np.float32)
    inside = labels > 0
    blended[inside] = (1 - OVERLAY_OPACITY) * blended[inside] + OVERLAY_OPACITY * colors[labels[inside]]
    return blended.round().astype(np.uint8)


class ResultWriter:
    """Writes tracking results to a folder as they come: `masks/NNNNN.png` (8-bit indexed PNG, pixel value = object
    id, DAVIS-style) per frame and, on `close`, `masks.json` (COCO RLE per frame and object). Frames may come in any
    order (a backward pass, then a forward one); only the small RLE records stay in memory.

    Args:
        out_dir: the folder (created).
        video_id: the video's id in the JSON.
        video: the video the results are of (its name, size and frame count go into the JSON).
    """

    def __init__(self, out_dir: str | os.PathLike, video_id: str, video: VideoFrames) -> None:
        self.out_dir = Path(out_dir)
        self.masks_dir = self.out_dir / "masks"
        self.masks_dir.mkdir(parents=True, exist_ok=True)
        self.video_id, self.video = video_id, video
        self.annotations: dict[tuple[int, int], dict[str, Any]] = {}
        palette = [0, 0, 0] + [c for object_id in range(1, MAX_OBJECT_ID + 1) for c in color_of(object_id)]
        self._palette = palette

    def mask_path(self, frame_index: int) -> Path:
        """The PNG of frame `frame_index`."""
        return self.masks_dir / f"{frame_index:05d}.png"

    def write(self, result: Any) -> None:
        """Writes one `VideoFrameResult` (a frame written again replaces the earlier one)."""
        if any(not 1 <= object_id <= MAX_OBJECT_ID for object_id in result.object_ids):
            raise ValueError(f"object ids must be in [1, {MAX_OBJECT_ID}] to be written, got {result.object_ids}.")
        image = PIL.Image.fromarray(label_image(result.object_ids, result.masks), mode="P")
        image.putpalette(self._palette)
        image.save(self.mask_path(result.index), format="PNG")
        boxes = mask_boxes(result.masks).tolist()
        for i, object_id in enumerate(result.object_ids):
            x0, y0, x1, y1 = boxes[i]
            area = int(result.masks[i].sum())
            self.annotations[result.index, object_id] = {
                "video_id": self.video_id,
                "frame_index": int(result.index),
                "object_id": int(object_id),
                "segmentation": coco_rle(result.masks[i]),
                "area": area,
                "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1] if area else [0, 0, 0, 0],
                "score": float(result.scores[i]),
                "lost": bool(result.lost[i]),
            }

    def close(self, info: dict[str, Any] | None = None) -> Path:
        """Writes `masks.json` (annotations sorted by frame, then object) and returns its path."""
        path = self.out_dir / "masks.json"
        document = {
            "video": {
                "id": self.video_id,
                "name": self.video.name,
                "width": self.video.width,
                "height": self.video.height,
                "num_frames": len(self.video),
                "fps": self.video.fps,
            },
            "info": info or {},
            "annotations": [self.annotations[key] for key in sorted(self.annotations)],
        }
        path.write_text(json.dumps(document) + "\n")
        return path


def write_overlay(video: VideoFrames, writer: ResultWriter, path: str | os.PathLike, codec: str = "libx264") -> Path:
    """Renders an MP4 of `video` with the masks `writer` wrote overlaid (frames without masks shown plain), streaming
    frame by frame. H.264 needs even sides: odd ones are padded by a pixel."""
    import av

    path = Path(path)
    height, width = video.height + video.height % 2, video.width + video.width % 2
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream(codec, rate=max(1, round(video.fps)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, frame in video.frames(0):
            mask_file = writer.mask_path(index)
            if mask_file.is_file():
                frame = overlay(frame, np.asarray(PIL.Image.open(mask_file)))
            padded = np.pad(frame, ((0, height - frame.shape[0]), (0, width - frame.shape[1]), (0, 0)), mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_video(frames: Sequence[np.ndarray] | Iterator[np.ndarray], path: str | os.PathLike, fps: int = 10) -> Path:
    """Writes `(H, W, 3)` uint8 frames as a video file, the format from the suffix: `.mp4` (H.264) or `.webm` (VP9)
    through PyAV, `.gif` through PIL (its palette quantisation; swscale has no RGB -> palette conversion). Tests and
    demos make clips with it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        images = [PIL.Image.fromarray(frame) for frame in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return path
    if suffix not in (".mp4", ".webm"):
        raise ValueError(f"path must end in .mp4, .webm or .gif, got {os.fspath(path)!r}.")
    import av

    codec = "libx264" if suffix == ".mp4" else "libvpx-vp9"
    with av.open(os.fspath(path), "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "12"} if codec == "libx264" else {"crf": "10", "b": "0"}
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        if stream is not None:
            container.mux(stream.encode())
    return path
