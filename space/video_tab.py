"""The Space's "Video" tab: upload a video, prompt objects on a frame (clicks, two-click boxes, text), propagate,
play the overlay and download the masks. A thin face over `sam_hf.video` (`VideoPredictor`, `write_tracking`).

`/segment_video` is the tab's public endpoint: a video file and prompts as plain JSON,
`[{"frame": 0, "object_id": 1, "points": [[x, y, label], ...], "box": [x1, y1, x2, y2], "text": "..."}, ...]`.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from sam_hf import SamPredictor
from sam_hf.clip_scoring import ClipScorer
from sam_hf.video import VideoPredictor, open_video, write_tracking
from sam_hf.video.io import color_of

FOREGROUND, BACKGROUND, BOX = "Foreground point", "Background point", "Box (two corners)"
VIDEO_TYPES = [".mp4", ".webm", ".gif", ".mov", ".mkv", ".avi"]
PROGRESS = gr.Progress(track_tqdm=True)  # Gradio shows write_tracking's tqdm bar in the page


@dataclass
class VideoSession:
    """One user's video and prompts: `prompts` as `/segment_video` takes them; `corner` a box's first click."""

    path: str | None = None
    num_frames: int = 0
    prompts: list[dict[str, Any]] = field(default_factory=list)
    corner: tuple[float, float] | None = None

    def prompt(self, frame: int, object_id: int) -> dict[str, Any]:
        """The prompt of `object_id` on `frame`, created empty if needed."""
        for prompt in self.prompts:
            if prompt["frame"] == frame and prompt["object_id"] == object_id:
                return prompt
        self.prompts.append({"frame": frame, "object_id": object_id})
        return self.prompts[-1]


def segment_video(
    predictor: SamPredictor,
    video: str,
    prompts: list[dict[str, Any]],
    out_dir: str | Path,
    clip: ClipScorer | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Follows the objects of `prompts` (the `/segment_video` JSON) through `video`; writes the masks, the overlay MP4
    and `masks.zip` (the JSON and the PNGs) to `out_dir`. Returns `write_tracking`'s summary plus `zip`."""
    if not isinstance(prompts, list) or not prompts:
        raise ValueError("prompts must be a non-empty list of {frame, object_id, points / box / text} objects.")
    tracker = VideoPredictor(predictor, video, clip=clip)
    for prompt in prompts:
        if not isinstance(prompt, dict) or "frame" not in prompt or "object_id" not in prompt:
            raise ValueError(f"each prompt needs 'frame' and 'object_id', got {prompt!r}.")
        points = np.asarray(prompt.get("points") or np.zeros((0, 3)), dtype=np.float64)
        if points.ndim != 2 or points.shape[1] not in (2, 3):
            raise ValueError(f"points must be [[x, y] or [x, y, label], ...], got {prompt.get('points')!r}.")
        tracker.add_prompt(
            int(prompt["frame"]),
            int(prompt["object_id"]),
            points=points[:, :2] if len(points) else None,
            labels=(points[:, 2] if points.shape[1] == 3 else np.ones(len(points))) if len(points) else None,
            box=prompt.get("box"),
            text=prompt.get("text"),
        )
    summary = write_tracking(tracker, out_dir, progress=progress)
    summary["zip"] = shutil.make_archive(str(Path(out_dir)), "zip", out_dir)  # beside the folder: OUT.zip
    return summary


def draw_frame(frame: np.ndarray, session: VideoSession, index: int) -> np.ndarray:
    """The frame with its prompts drawn: points (filled: foreground, hollow: background) and boxes in the object's
    colour, a pending box corner as a cross."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    radius = max(2, round(max(frame.shape[:2]) / 100))
    for prompt in session.prompts:
        if prompt["frame"] != index:
            continue
        color = color_of(prompt["object_id"])
        if prompt.get("box"):
            draw.rectangle(prompt["box"], outline=color, width=max(1, radius // 2))
        for x, y, label in prompt.get("points", []):
            box = [x - radius, y - radius, x + radius, y + radius]
            draw.ellipse(box, fill=color if label else None, outline=color, width=max(1, radius // 2))
    if session.corner is not None:
        x, y = session.corner
        draw.line([x - radius, y, x + radius, y], fill="white")
        draw.line([x, y - radius, x, y + radius], fill="white")
    return np.asarray(image)


class VideoHandlers:
    """The tab's event handlers over one shared predictor (and CLIP)."""

    def __init__(self, predictor: SamPredictor, clip: ClipScorer | None, work_dir: Path) -> None:
        self.predictor, self.clip, self.work_dir = predictor, clip, work_dir

    def on_upload(self, path: str | None, session: VideoSession) -> tuple[Any, Any, VideoSession]:
        """A new video: its first frame, the frame slider's range, no prompts."""
        session = VideoSession()
        if not path:
            return None, gr.Slider(0, 1, value=0, interactive=False), session
        try:
            video = open_video(path)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        session.path, session.num_frames = path, len(video)
        # Gradio wants maximum > minimum: a one-frame video gets a slider that does not move.
        slider = gr.Slider(0, max(len(video) - 1, 1), value=0, step=1, interactive=len(video) > 1)
        return video.frame(0), slider, session

    def on_frame(self, index: int, session: VideoSession) -> Any:
        """Shows frame `index` with its prompts."""
        if session.path is None:
            return None
        return draw_frame(open_video(session.path).frame(int(index)), session, int(index))

    def on_click(
        self, mode: str, object_id: float, index: int, session: VideoSession, evt: gr.SelectData
    ) -> tuple[Any, VideoSession]:
        """A click on the frame: a point, or a box corner (the second click completes the box)."""
        if session.path is None:
            raise gr.Error("Upload a video first.")
        x, y = (float(value) for value in evt.index)
        prompt = session.prompt(int(index), int(object_id))
        if mode == BOX:
            if session.corner is None:
                session.corner = (x, y)
            else:
                (x0, y0), session.corner = session.corner, None
                prompt["box"] = [min(x0, x), min(y0, y), max(x0, x), max(y0, y)]
        else:
            prompt.setdefault("points", []).append([x, y, int(mode == FOREGROUND)])
        return self.on_frame(index, session), session

    def on_text(self, text: str, object_id: float, index: int, session: VideoSession) -> tuple[Any, VideoSession]:
        """A text prompt for the object on this frame."""
        if session.path is None:
            raise gr.Error("Upload a video first.")
        if not text or not text.strip():
            raise gr.Error("Type what to segment, e.g. red circle.")
        session.prompt(int(index), int(object_id))["text"] = text.strip()
        return self.on_frame(index, session), session

    def on_clear(self, index: int, session: VideoSession) -> tuple[Any, VideoSession]:
        """Forgets every prompt."""
        session.prompts, session.corner = [], None
        return self.on_frame(index, session), session

    def propagate(
        self, video: str | None, prompts: Any, progress: gr.Progress = PROGRESS
    ) -> tuple[str, str, dict[str, Any]]:
        """`/segment_video`: the overlay MP4, the masks' zip and the summary, for a video and JSON prompts."""
        if not video:
            raise gr.Error("Upload a video first.")
        out_dir = self.work_dir / uuid.uuid4().hex
        try:
            summary = segment_video(self.predictor, video, prompts, out_dir, self.clip, progress=True)
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error)) from error
        return summary["overlay"], summary["zip"], summary

    def on_propagate(self, session: VideoSession) -> tuple[str, str, dict[str, Any]]:
        """The Propagate button: the session's video and prompts."""
        return self.propagate(session.path, [p for p in session.prompts if len(p) > 2])


def build_video_tab(predictor: SamPredictor, clip: ClipScorer | None = None) -> None:
    """The tab's components and events; call inside `with gr.Tab("Video"):`."""
    handlers = VideoHandlers(predictor, clip, Path(tempfile.gettempdir()) / "sam_hf_space" / "video")
    gr.Markdown(
        "Upload a video, pick a frame, then click on it: points (or two clicks for a box) for the object id chosen, or "
        "type its name. Several objects: change the id. **Propagate** follows them forward and backward; lost "
        "objects are looked for again on later frames."
    )
    session = gr.State(VideoSession(), time_to_live=3600)
    with gr.Row():
        with gr.Column():
            video_in = gr.File(label="Video (mp4, webm, gif, ...)", file_types=VIDEO_TYPES, type="filepath")
            frame_index = gr.Slider(0, 1, value=0, step=1, label="Frame", interactive=False)
            frame = gr.Image(label="Click to prompt", interactive=False, format="png")
        with gr.Column():
            mode = gr.Radio([FOREGROUND, BACKGROUND, BOX], value=FOREGROUND, label="A click adds")
            object_id = gr.Number(1, precision=0, minimum=1, maximum=255, label="Object id")
            with gr.Row():
                text = gr.Textbox(label="Text prompt", placeholder="e.g. red circle", scale=3)
                add_text = gr.Button("Add text", scale=1)
            with gr.Row():
                clear = gr.Button("Clear prompts")
                run = gr.Button("Propagate", variant="primary")
            overlay = gr.Video(label="Masks overlaid", interactive=False)
            download = gr.File(label="Masks: COCO RLE JSON and PNGs (zip)")
            summary = gr.JSON(label="Summary")
    prompts_json = gr.JSON(visible=False)
    private = {"api_visibility": "private"}
    video_in.change(handlers.on_upload, [video_in, session], [frame, frame_index, session], **private)
    frame_index.release(handlers.on_frame, [frame_index, session], [frame], **private)
    frame.select(handlers.on_click, [mode, object_id, frame_index, session], [frame, session], **private)
    for trigger in (text.submit, add_text.click):
        trigger(handlers.on_text, [text, object_id, frame_index, session], [frame, session], **private)
    clear.click(handlers.on_clear, [frame_index, session], [frame, session], **private)
    run.click(handlers.on_propagate, [session], [overlay, download, summary], concurrency_id="video", **private)
    api = gr.Button(visible=False)
    api.click(
        handlers.propagate, [video_in, prompts_json], [overlay, download, summary], api_name="segment_video",
        concurrency_id="video",
    )  # fmt: skip
