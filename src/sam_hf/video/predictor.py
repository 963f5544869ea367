"""`VideoPredictor`: follow objects through a video with any SAM-1 checkpoint, each frame prompted from the last.

SAM-1 has no memory of earlier frames (SAM 2 has): as in Track-Anything and SAM-PT, each object is carried from frame to
frame as a prompt. Per frame the image encoder runs once, and every followed object is decoded in one batch from that
embedding, prompted by its previous mask (`VideoSettings.track_prompt`: by default its box widened by 10 % and its
low-resolution logits; the alternatives measured in the README's "Video" section), and the followed objects share the
frame's pixels (each pixel goes to the object with the highest logit there). An object whose mask comes back empty,
scored low, collapsed, or taken by another object is reported lost on that frame and looked for on the following
frames: by its text prompt when it has one, else by clicks on the embedding cells most like its last good mask (the
image embedding pooled inside that mask), a candidate being accepted only when it looks like that mask. Prompts on any
frame start an object or correct it from that frame on. Frames are read one at a time (`sam_hf.video.io`), so memory
does not grow with the video.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

from ..clip_scoring import ClipScorer
from ..everything import BUNDLED_SETTINGS, SamAutomaticMaskGenerator
from ..geometry import centre_point, mask_boxes, mask_iou, touches_border, widened_boxes
from ..predictor import EmbeddedImage, SamPredictor
from ..prompts import PAD_LABEL, check_inside_image
from ..text_to_mask import segment_text
from .io import ResultWriter, VideoFrames, open_video, write_overlay

TRACK_PROMPTS = ("box", "box+mask", "box+point", "box+mask+point", "mask+point")
REFIND_METHODS = ("auto", "similarity", "text", "proposals", "none")
REFIND_MAX_TAKEN = 0.25  # a candidate more than this fraction covered by other objects' masks is one of them
OUTSIDE_BOX_LOGIT = -20.0  # `clip_to_box`: logits outside the user's box are at most this (certainly not the object)


@dataclass(frozen=True)
class VideoSettings:
    """How objects are carried from frame to frame, declared lost and found again.

    Args:
        track_prompt: what prompts an object on the next frame, from its mask on this one: `"box"` (its box),
            `"mask"` (its low-resolution logits as the mask prompt), `"point"` (the pixel farthest inside it), joined
            by `+` (see `TRACK_PROMPTS`).
        box_margin: the box is widened by this fraction of its side on each side (room for the object's motion).
        lost_score: a mask whose predicted IoU is below this is lost.
        min_area: a mask smaller than this fraction of the frame is lost (empty, or a few stray pixels).
        collapse: a mask smaller than this fraction of the object's previous mask is lost (it went behind something).
        max_overlap: when two objects' masks overlap more than this IoU, one is lost (a box around an occluded object
            grabs its occluder; see `_resolve_overlaps`).
        exclusive: a pixel that several followed objects' masks claim goes to the one with the highest logit there
            (objects prompted on the frame keep their masks: a part and its whole may overlap).
        distinct_clicks: objects clicked on one frame are different objects: of the three candidates of an object's
            lone click, one that covers another object's click is their merged blob, and the best-scored candidate
            that covers none is kept instead (when there is one). Turn off to click a part and its whole.
        clip_to_box: a box the user gives bounds the object on its frame: the mask, and the low-resolution logits
            that prompt the next frame, are cleared outside it (one logit cell of slack). Without it, the logits of a
            box around one of two touching look-alikes cover their blob and carry the neighbour into the next frames.
        refind: how lost objects are looked for: `"similarity"` (a click on each of the `refind_points` embedding
            cells most like the object's last good mask), `"text"` (their text prompt), `"proposals"` (everything-mode
            masks), `"auto"` (text when the object has one, else similarity) or `"none"`. Every candidate must then
            match the object (`refind_similarity`, `refind_area`).
        refind_points: clicks tried per lost object and frame by `"similarity"`.
        refind_similarity: a candidate matches a lost object when the cosine similarity of the image embedding pooled
            inside it and inside the object's last good mask is at least this.
        refind_area: ... and its area is within this factor of the last good mask's, either way.
        proposals: the everything-mode settings of `"proposals"` (the bundled preset by default; official checkpoints
            want `OFFICIAL_SETTINGS` with a coarser grid).
        text_method: `segment_text`'s method for text prompts (`"auto"`, `"learned"`, `"zero-shot"`).
    """

    track_prompt: str = "box+mask"
    box_margin: float = 0.1
    lost_score: float = 0.5
    min_area: float = 2e-4
    collapse: float = 0.2
    max_overlap: float = 0.5
    refind: str = "auto"
    refind_points: int = 3
    refind_similarity: float = 0.6
    refind_area: float = 6.0
    exclusive: bool = True
    distinct_clicks: bool = True
    clip_to_box: bool = True
    proposals: Any = BUNDLED_SETTINGS
    text_method: str = "auto"

    def __post_init__(self) -> None:
        if self.track_prompt not in TRACK_PROMPTS:
            raise ValueError(f"track_prompt must be one of {TRACK_PROMPTS}, got {self.track_prompt!r}.")
        if self.refind not in REFIND_METHODS:
            raise ValueError(f"refind must be one of {REFIND_METHODS}, got {self.refind!r}.")
        for name in ("box_margin", "lost_score", "min_area", "collapse", "max_overlap", "refind_similarity"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
        for name in ("exclusive", "distinct_clicks", "clip_to_box"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        if not isinstance(self.refind_points, int) or self.refind_points < 1:
            raise ValueError(f"refind_points must be a positive integer, got {self.refind_points!r}.")
        if not isinstance(self.refind_area, (int, float)) or self.refind_area < 1:
            raise ValueError(f"refind_area must be a number >= 1, got {self.refind_area!r}.")


@dataclass
class ObjectPrompt:
    """The user's prompt for one object on one frame, in original-frame pixels: `points` `(N, 2)` with `labels`
    `(N,)` (1 foreground, 0 background), a `box` `(4,)` XYXY, and/or a `text`."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    box: np.ndarray | None = None
    text: str | None = None


@dataclass
class VideoFrameResult:
    """One frame's masks, for every object started so far (prompted on this frame or followed into it).

    Args:
        index: the frame's index in the video.
        object_ids: the objects, in the order they were first prompted.
        masks: `(n, H, W)` bool masks (empty for a lost object).
        scores: `(n,)` predicted IoU of each mask (0 for a lost object).
        lost: `(n,)` bool: the object was not found on this frame.
        refound: ids of objects found again on this frame after being lost.
    """

    index: int
    object_ids: list[int]
    masks: np.ndarray
    scores: np.ndarray
    lost: np.ndarray
    refound: list[int]


@dataclass
class _Track:
    """What an object carries to the next frame."""

    mask: np.ndarray | None = None  # (H, W) bool; None while lost
    logits: torch.Tensor | None = None  # (1, h, w) low-resolution logits
    score: float = 0.0
    area: int = 0  # of the last good mask
    # The re-find reference: the last good mask that the frame border does not cut (a sliver of an object leaving the
    # frame is a poor picture of it to look for when it comes back), its (C,) pooled unit embedding and its area.
    appearance: torch.Tensor | None = None
    reference_area: int = 0
    text: str | None = None
    previous: np.ndarray | None = None  # the mask on the frame before (None if it was lost or had not started)

    def keep(
        self,
        mask: np.ndarray,
        score: float,
        logits: torch.Tensor,
        embedded: EmbeddedImage,
        appearance: torch.Tensor | None = None,
    ) -> None:
        """Carries `mask` to the next frame; it becomes the re-find reference unless the border cuts it and there is
        one already. `appearance`: its pooled embedding when already computed."""
        self.mask, self.score, self.logits, self.area = mask, score, logits, int(mask.sum())
        if self.appearance is None or not touches_border(mask):
            self.appearance = _appearance(embedded, mask) if appearance is None else appearance
            self.reference_area = self.area


@dataclass
class _Query:
    """One prompt of a decoder batch, in original-frame pixels."""

    points: np.ndarray | None = None  # (N, 2)
    labels: np.ndarray | None = None  # (N,)
    box: np.ndarray | None = None  # (4,)
    logits: torch.Tensor | None = None  # (1, h, w)

    @property
    def multimask(self) -> bool:
        # A lone click is ambiguous (part or whole): three candidates, the best-scored kept, as the predictor does.
        return self.box is None and self.logits is None and self.points is not None and len(self.points) == 1

    def signature(self) -> tuple[bool, ...]:
        return self.points is not None, self.box is not None, self.logits is not None, self.multimask


class VideoPredictor:
    """Segments and follows objects through one video (see the module docstring).

        video = VideoPredictor(SamPredictor(model, processor), "clip.mp4")
        video.add_prompt(0, object_id=1, points=[[64, 40]])
        video.add_prompt(0, object_id=2, box=[10, 10, 50, 60])
        for result in video.propagate():           # forward from the first prompted frame
            result.index, result.masks, result.lost

    Args:
        predictor: the `SamPredictor` whose model and processor run (its own current image is left alone).
        video: a video file, a folder of frames, a sequence of frames or `VideoFrames` (see `open_video`).
        settings: `VideoSettings`.
        clip: the CLIP of zero-shot text prompts (models without a learned text token).
    """

    def __init__(
        self,
        predictor: SamPredictor,
        video: Any,
        settings: VideoSettings | None = None,
        clip: ClipScorer | None = None,
    ) -> None:
        if not isinstance(predictor, SamPredictor):
            raise TypeError(f"predictor must be a SamPredictor, got {type(predictor).__name__}.")
        if settings is not None and not isinstance(settings, VideoSettings):
            raise TypeError(f"settings must be VideoSettings, got {type(settings).__name__}.")
        # A predictor of our own over the same model: setting its image does not disturb the caller's.
        self.predictor = SamPredictor(predictor.model, predictor.processor)
        self.video: VideoFrames = video if isinstance(video, VideoFrames) else open_video(video)
        self.settings = settings or VideoSettings()
        self.clip = clip
        self.prompts: dict[int, dict[int, ObjectPrompt]] = {}  # frame -> object id -> prompt
        self.object_ids: list[int] = []  # in the order first prompted
        self._generator: SamAutomaticMaskGenerator | None = None

    def add_prompt(
        self,
        frame_index: int,
        object_id: int,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        text: str | None = None,
    ) -> ObjectPrompt:
        """Prompts object `object_id` on frame `frame_index`: from there on it is followed from this prompt (a
        correction re-prompts it from that frame on). Points add to the ones already given for that object and frame;
        a box or a text replaces the earlier one.

        Args:
            frame_index: the frame, 0 <= frame_index < len(video).
            object_id: a positive integer naming the object (1..255 to be written as PNG masks).
            points: `(N, 2)` (x, y) in frame pixels.
            labels: `(N,)` 1 foreground, 0 background; all foreground if omitted.
            box: `(4,)` x1, y1, x2, y2 in frame pixels.
            text: what the object is, e.g. `"red circle"` (also used to find it again when lost).

        Returns:
            the object's accumulated prompt on that frame.
        """
        if not isinstance(frame_index, (int, np.integer)) or isinstance(frame_index, bool):
            raise TypeError(f"frame_index must be an integer, got {type(frame_index).__name__}.")
        if not 0 <= frame_index < len(self.video):
            raise ValueError(
                f"frame_index {frame_index} is out of range: the video {self.video.name!r} has {len(self.video)} "
                f"frames (0..{len(self.video) - 1})."
            )
        if not isinstance(object_id, (int, np.integer)) or isinstance(object_id, bool) or object_id < 1:
            raise ValueError(f"object_id must be a positive integer, got {object_id!r}.")
        if points is None and box is None and text is None:
            raise ValueError("Pass points, box and/or text to prompt the object.")
        if labels is not None and points is None:
            raise ValueError("labels need points: one label per point.")
        prompt = self.prompts.get(int(frame_index), {}).get(int(object_id), ObjectPrompt())
        new = replace(prompt)
        size, frame = (self.video.height, self.video.width), f"frame {frame_index} of {self.video.name!r}"
        if points is not None:
            coords = _array("points", points, (-1, 2), "(N, 2) points x, y")
            check_inside_image(size, coords, image=frame)
            values = np.ones(len(coords), dtype=np.int64) if labels is None else _array("labels", labels, (-1,), "(N,)")
            if len(values) != len(coords) or not np.isin(values, (0, 1)).all():
                raise ValueError(f"labels must be one 1 (foreground) or 0 (background) per point, got {values}.")
            new.points = np.concatenate([prompt.points, coords])
            new.labels = np.concatenate([prompt.labels, values.astype(np.int64)])
        if box is not None:
            new.box = _array("box", box, (4,), "(4,) x1, y1, x2, y2")
            if (new.box[2:] < new.box[:2]).any():
                raise ValueError(f"box must be x1, y1, x2, y2 with x2 >= x1 and y2 >= y1, got {new.box.tolist()}.")
            check_inside_image(size, box=new.box, image=frame)
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text must be a non-empty string, got {text!r}.")
            new.text = text
        self.prompts.setdefault(int(frame_index), {})[int(object_id)] = new
        if int(object_id) not in self.object_ids:
            self.object_ids.append(int(object_id))
        return new

    def clear_prompts(self, object_id: int | None = None) -> None:
        """Forgets the prompts of `object_id` on every frame, or all prompts."""
        for frame_prompts in self.prompts.values():
            for key in [key for key in frame_prompts if object_id is None or key == object_id]:
                del frame_prompts[key]
        self.prompts = {index: prompts for index, prompts in self.prompts.items() if prompts}
        self.object_ids = [key for key in self.object_ids if object_id is not None and key != object_id]

    def propagate(
        self, start_frame: int | None = None, reverse: bool = False, stop_frame: int | None = None
    ) -> Iterator[VideoFrameResult]:
        """Follows the prompted objects frame by frame, yielding each frame's result as soon as it is done.

        Args:
            start_frame: the first frame (default: the first prompted frame, or the last one with `reverse`). Objects
                start on their prompted frames; nothing is followed into `start_frame` from before it.
            reverse: towards the start of the video instead of its end.
            stop_frame: stop before this frame (default: the end, or frame 0 included with `reverse`).
        """
        if not self.prompts:
            raise ValueError("No prompts: call add_prompt(frame_index, object_id, points=..., box=..., text=...).")
        if start_frame is None:
            start_frame = max(self.prompts) if reverse else min(self.prompts)
        if not 0 <= start_frame < len(self.video):
            raise ValueError(f"start_frame {start_frame} is out of range: the video has {len(self.video)} frames.")
        tracks: dict[int, _Track] = {}
        for index, image in self.video.frames(start_frame, stop_frame, reverse=reverse):
            yield self._step(index, image, tracks)

    @torch.no_grad()
    def _step(self, index: int, image: np.ndarray, tracks: dict[int, _Track]) -> VideoFrameResult:
        embedded = self.predictor.embed(image)
        for track in tracks.values():
            track.previous = track.mask
        prompts = self.prompts.get(index, {})
        queries: dict[int, _Query] = {}
        for object_id in self.object_ids:
            track = tracks.get(object_id)
            if object_id in prompts:
                queries[object_id] = self._user_query(prompts[object_id], track)
            elif track is not None and track.mask is not None:
                queries[object_id] = self._track_query(track)
        texts = {
            object_id: prompt for object_id, prompt in prompts.items() if prompt.text is not None
        }  # text prompts run through segment_text (learned token or zero-shot), with their points / box
        # Followed objects share the frame's pixels; the user's prompts here may overlap (a part and its whole).
        exclusive = [key for key in queries if key not in prompts] if self.settings.exclusive else []
        prompted = [key for key in queries if key in prompts and key not in texts]
        decoded = self._decode(
            embedded,
            {key: query for key, query in queries.items() if key not in texts},
            exclusive,
            prompted if self.settings.distinct_clicks else [],
        )
        for object_id, prompt in texts.items():
            decoded[object_id] = self._text(image, embedded, prompt)
        refound = []
        for object_id in self.object_ids:
            if object_id in prompts:
                box = prompts[object_id].box
                if self.settings.clip_to_box and box is not None and object_id not in texts:
                    decoded[object_id] = self._inside_box(embedded, box, *decoded[object_id])
                tracks[object_id] = self._start(tracks.get(object_id), prompts[object_id], embedded, decoded[object_id])
            elif object_id in decoded:
                self._follow(tracks[object_id], embedded, decoded[object_id])
        self._resolve_overlaps(tracks, decoded, set(prompts))
        lost = [key for key, track in tracks.items() if track.mask is None and key not in prompts]
        if lost and self.settings.refind != "none":
            refound = self._refind(image, embedded, tracks, lost)
        return self._result(index, tracks, embedded.original_size, refound)

    def _user_query(self, prompt: ObjectPrompt, track: _Track | None) -> _Query:
        """The user's points and box; without a box, an object followed into this frame keeps its box (widened to
        take in the new foreground clicks) and logits, so a click corrects the mask rather than starting over."""
        points = prompt.points if len(prompt.points) else None
        labels = prompt.labels if len(prompt.labels) else None
        if prompt.box is not None or track is None or track.mask is None:
            return _Query(points, labels, prompt.box)
        box = widened_boxes(track.mask, self.settings.box_margin).numpy()
        foreground = prompt.points[prompt.labels == 1]
        if len(foreground):
            box = np.concatenate([np.minimum(box[:2], foreground.min(0)), np.maximum(box[2:], foreground.max(0))])
        return _Query(points, labels, box, track.logits)

    def _track_query(self, track: _Track) -> _Query:
        parts = self.settings.track_prompt.split("+")
        query = _Query()
        if "box" in parts:
            query.box = widened_boxes(track.mask, self.settings.box_margin).numpy()
        if "mask" in parts:
            query.logits = track.logits
        if "point" in parts:
            query.points, query.labels = np.array([centre_point(track.mask)]), np.ones(1, dtype=np.int64)
        return query

    def _decode(
        self,
        embedded: EmbeddedImage,
        queries: dict[Any, _Query],
        exclusive: Collection[Any] = (),
        distinct: Collection[Any] = (),
    ) -> dict[Any, tuple[np.ndarray, float, Any]]:
        """Decodes the queries, one batch per prompt form (while following, every object has the same form: one
        batch for all): object id -> (mask `(H, W)`, score, low-res logits `(1, h, w)`). A pixel that several masks
        of the `exclusive` ids claim goes to the one with the highest logit there. A lone click of a `distinct` id
        keeps its best candidate that covers no other `distinct` id's foreground clicks (see `distinct_clicks`)."""
        predictor, results, upscaled = self.predictor, {}, {}
        clicks = {
            key: queries[key].points[queries[key].labels == 1] for key in distinct if queries[key].points is not None
        }
        others = {  # for each lone click of a distinct id: every other distinct id's foreground clicks
            key: np.concatenate([np.zeros((0, 2))] + [points for other, points in clicks.items() if other != key])
            for key in clicks
            if queries[key].multimask
        }
        predictor.image = embedded
        groups: dict[tuple[bool, ...], list[Any]] = {}
        for object_id, query in queries.items():
            groups.setdefault(query.signature(), []).append(object_id)
        for (has_points, has_box, has_logits, multimask), ids in groups.items():
            batch = [queries[object_id] for object_id in ids]
            inputs: dict[str, torch.Tensor | None] = {"point_coords": None, "point_labels": None}
            if has_points:
                count = max(len(query.points) for query in batch)
                coords = torch.zeros(len(batch), count, 2)
                labels = torch.full((len(batch), count), PAD_LABEL, dtype=torch.long)
                for i, query in enumerate(batch):
                    coords[i, : len(query.points)] = torch.as_tensor(query.points, dtype=torch.float)
                    labels[i, : len(query.points)] = torch.as_tensor(query.labels)
                inputs["point_coords"] = predictor.transform.apply_coords_torch(coords, embedded.original_size)
                inputs["point_labels"] = labels
            if has_box:
                boxes = torch.as_tensor(np.stack([query.box for query in batch]), dtype=torch.float)
                inputs["boxes"] = predictor.transform.apply_boxes_torch(boxes, embedded.original_size)
            if has_logits:
                inputs["mask_input"] = torch.stack([query.logits for query in batch])
            masks, scores, logits = predictor.predict_torch(
                **inputs, multimask_output=multimask, return_logits=bool(exclusive)
            )
            best = scores.argmax(dim=1)
            for i, object_id in enumerate(ids):
                choice = int(best[i])
                if object_id in others and len(others[object_id]):
                    choice = _best_avoiding(masks[i] > 0, scores[i], others[object_id])
                upscaled[object_id] = masks[i, choice]
                results[object_id] = (
                    (masks[i, choice] > 0).cpu().numpy(),
                    float(scores[i, choice]),
                    logits[i, choice : choice + 1],
                )
        if len(exclusive) > 1:
            winner = torch.stack([upscaled[key] for key in exclusive]).argmax(dim=0).cpu().numpy()
            for i, key in enumerate(exclusive):
                mask, score, logits = results[key]
                results[key] = (mask & (winner == i), score, logits)
        return results

    def _text(
        self, image: np.ndarray, embedded: EmbeddedImage, prompt: ObjectPrompt
    ) -> tuple[np.ndarray, float, torch.Tensor] | None:
        """The text prompt's best mask (with the prompt's points / box), re-decoded from its box for the logits the
        next frame needs; `None` when the text is not found."""
        has_points = len(prompt.points) > 0
        found = segment_text(
            self.predictor,
            image,
            prompt.text,
            method=self.settings.text_method,
            clip=self.clip,
            point_coords=prompt.points if has_points else None,
            point_labels=prompt.labels if has_points else None,
            box=prompt.box,
            embedded=embedded,
        )
        if not found.found:
            return None
        return self._from_mask(embedded, found.masks[0])

    def _inside_box(
        self, embedded: EmbeddedImage, box: np.ndarray, mask: np.ndarray, score: float, logits: torch.Tensor
    ) -> tuple[np.ndarray, float, torch.Tensor]:
        """A mask decoded from the user's `box` (x1, y1, x2, y2 in frame pixels) cleared outside it, with its
        low-resolution logits `(1, h, w)` at most `OUTSIDE_BOX_LOGIT` on the cells whose centre lies more than one
        cell outside it (see `VideoSettings.clip_to_box`)."""
        x1, y1, x2, y2 = box
        inside = np.zeros_like(mask)
        inside[max(math.floor(y1), 0) : math.ceil(y2) + 1, max(math.floor(x1), 0) : math.ceil(x2) + 1] = True
        # The logits cover the model's padded input square: the box in input pixels, and each cell's centre there.
        frame_box = torch.as_tensor(box, dtype=torch.float)[None]
        left, top, right, bottom = self.predictor.transform.apply_boxes_torch(frame_box, embedded.original_size)[0]
        cell = self.predictor.model.config.prompt_encoder_config.image_size / logits.shape[-1]
        rows, cols = ((torch.arange(n, device=logits.device) + 0.5) * cell for n in logits.shape[-2:])
        near_rows, near_cols = (
            (rows >= top - cell) & (rows <= bottom + cell),
            (cols >= left - cell) & (cols <= right + cell),
        )
        near = near_rows[:, None] & near_cols
        return mask & inside, score, torch.where(near, logits, logits.clamp(max=OUTSIDE_BOX_LOGIT))

    def _from_mask(self, embedded: EmbeddedImage, mask: np.ndarray) -> tuple[np.ndarray, float, torch.Tensor]:
        """`mask` with the predicted IoU and low-resolution logits of SAM's mask for its box (what the next frame is
        prompted with)."""
        query = _Query(box=mask_boxes(mask).numpy().astype(np.float64))
        _, score, logits = self._decode(embedded, {0: query})[0]
        return mask, score, logits

    def _start(
        self,
        track: _Track | None,
        prompt: ObjectPrompt,
        embedded: EmbeddedImage,
        decoded: tuple[np.ndarray, float, torch.Tensor] | None,
    ) -> _Track:
        """The object as the user's prompt defines it on this frame (trusted: never declared lost here unless a text
        is not found)."""
        track = _Track(text=prompt.text or (track.text if track else None))
        if decoded is None or not decoded[0].any():
            return track
        track.keep(*decoded, embedded)
        return track

    def _follow(self, track: _Track, embedded: EmbeddedImage, decoded: tuple[np.ndarray, float, torch.Tensor]) -> None:
        mask, score, logits = decoded
        area = int(mask.sum())
        settings = self.settings
        if area < settings.min_area * mask.size or score < settings.lost_score or area < settings.collapse * track.area:
            track.mask, track.logits, track.score = None, None, 0.0
            return
        track.keep(mask, score, logits, embedded)

    def _resolve_overlaps(self, tracks: dict[int, _Track], decoded: dict[int, Any], prompted: set[int]) -> None:
        """Two objects on one region: the one the user prompted here, else the one that was there on the frame before
        (its mask overlaps its previous one most; an object just found again has none), else the better-scored, keeps
        it. Two objects both prompted here may overlap (a part and its whole)."""
        active = [key for key in self.object_ids if key in tracks and tracks[key].mask is not None]
        for i, first in enumerate(active):
            for second in active[i + 1 :]:
                a, b = tracks[first], tracks[second]
                if a.mask is None or b.mask is None or {first, second} <= prompted:  # the user's word on both
                    continue
                if float(mask_iou(a.mask, b.mask, empty=0.0)) <= self.settings.max_overlap:
                    continue
                if first in prompted or second in prompted:
                    loser = second if first in prompted else first
                else:
                    stay_a, stay_b = (_overlap(track.mask, track.previous) for track in (a, b))
                    loser = second if (stay_a, a.score) >= (stay_b, b.score) else first
                tracks[loser].mask, tracks[loser].logits, tracks[loser].score = None, None, 0.0

    def _refind(
        self, image: np.ndarray, embedded: EmbeddedImage, tracks: dict[int, _Track], lost: list[int]
    ) -> list[int]:
        """Looks for the lost objects on this frame; returns the ids found again. Candidates are pooled (a click
        made for one object may land on another lost one; a text's answer is only its own object's) and assigned to
        objects jointly, most similar pairs first (Hungarian matching on `_similarity`), each candidate at most
        `REFIND_MAX_TAKEN` another object's."""
        settings, pool, clicks = self.settings, [], {}
        searched = [key for key in lost if tracks[key].appearance is not None]
        for object_id in searched:
            track = tracks[object_id]
            method = settings.refind
            if method == "auto":
                method = "text" if track.text is not None else "similarity"
            if method == "text" and track.text is not None:
                decoded = self._text(image, embedded, ObjectPrompt(text=track.text))
                pool += [] if decoded is None else [(decoded[0], object_id)]
            elif method == "similarity":
                for k, point in enumerate(_likely_points(embedded, track.appearance, settings.refind_points)):
                    clicks[object_id, k] = _Query(np.array([point]), np.ones(1, dtype=np.int64))
        if settings.refind == "proposals" and searched:
            pool += [(mask, None) for mask in self._proposals(image, embedded)]
        pool += [(mask, None) for mask, _, _ in self._decode(embedded, clicks).values()]  # one batch for all
        taken = np.zeros(embedded.original_size, dtype=bool)
        for track in tracks.values():
            if track.mask is not None:
                taken |= track.mask
        pool = [(mask, owner) for mask, owner in pool if (mask & taken).sum() <= REFIND_MAX_TAKEN * mask.sum()]
        appearances = [_appearance(embedded, mask) for mask, _ in pool]
        similarity = np.full((len(searched), len(pool)), -np.inf)
        for j, (mask, owner) in enumerate(pool):
            for i, object_id in enumerate(searched):
                if owner in (None, object_id):
                    similarity[i, j] = self._similarity(tracks[object_id], mask, appearances[j])
        rows, cols = linear_sum_assignment(np.where(np.isfinite(similarity), -similarity, 1e6))
        found = []
        for i, j in sorted(zip(rows, cols, strict=True), key=lambda pair: -similarity[pair]):
            mask = pool[j][0]
            if not np.isfinite(similarity[i, j]) or (mask & taken).sum() > REFIND_MAX_TAKEN * mask.sum():
                continue
            tracks[searched[i]].keep(*self._from_mask(embedded, mask), embedded, appearances[j])
            taken |= mask
            found.append(searched[i])
        return [key for key in lost if key in found]

    def _proposals(self, image: np.ndarray, embedded: EmbeddedImage) -> list[np.ndarray]:
        if self._generator is None:
            self._generator = SamAutomaticMaskGenerator(
                self.predictor.model, processor=self.predictor.processor, settings=self.settings.proposals
            )
        records = self._generator.generate(image, embedded.image_embeddings)
        return [record["segmentation"] for record in records if record["segmentation"].any()]

    def _similarity(self, track: _Track, mask: np.ndarray, appearance: torch.Tensor) -> float:
        """Cosine similarity of a candidate's pooled embedding `appearance` to the lost object's reference (its last
        good mask uncut by the border); `-inf` when it does not match (below `refind_similarity`, or its area beyond
        `refind_area` either way of the reference's; a candidate cut by the border may be any part of the object)."""
        ratio = mask.sum() / max(track.reference_area, 1)
        smallest = 0 if touches_border(mask) else 1 / self.settings.refind_area
        if not smallest <= ratio <= self.settings.refind_area:
            return -math.inf
        similarity = float(appearance @ track.appearance)
        return similarity if similarity >= self.settings.refind_similarity else -math.inf

    def _result(
        self, index: int, tracks: dict[int, _Track], size: tuple[int, int], refound: list[int]
    ) -> VideoFrameResult:
        ids = [key for key in self.object_ids if key in tracks]
        masks = np.zeros((len(ids), *size), dtype=bool)
        for i, key in enumerate(ids):
            if tracks[key].mask is not None:
                masks[i] = tracks[key].mask
        lost = np.array([tracks[key].mask is None for key in ids], dtype=bool)
        scores = np.array([tracks[key].score for key in ids], dtype=np.float32)
        return VideoFrameResult(index, ids, masks, scores, lost, refound)


def _array(name: str, value: Any, shape: tuple[int, ...], form: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be {form} numbers: {error}") from error
    if shape == (-1, 2) and array.ndim == 1 and array.size == 2:
        array = array[None]
    if array.ndim != len(shape) or any(want not in (-1, got) for want, got in zip(shape, array.shape, strict=True)):
        raise ValueError(f"{name} must be {form}, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite numbers, got {array.tolist()}.")
    return array


def _best_avoiding(masks: torch.Tensor, scores: torch.Tensor, points: np.ndarray) -> int:
    """The best-scored of one object's candidate masks `(candidates, H, W)` (bool) that covers none of `points`
    `(n, 2)` (x, y in pixels), or the best-scored one when each covers some."""
    height, width = masks.shape[-2:]
    x = torch.as_tensor(points[:, 0]).round().long().clamp(0, width - 1).to(masks.device)
    y = torch.as_tensor(points[:, 1]).round().long().clamp(0, height - 1).to(masks.device)
    covers = masks[:, y, x].any(dim=1).to(scores.device)
    if covers.all():
        return int(scores.argmax())
    return int(torch.where(covers, torch.full_like(scores, -math.inf), scores).argmax())


def _overlap(mask: np.ndarray, previous: np.ndarray | None) -> float:
    """IoU of an object's mask with its mask on the frame before (0 without one)."""
    return 0.0 if previous is None else float(mask_iou(mask, previous, empty=0.0))


def _likely_points(embedded: EmbeddedImage, appearance: torch.Tensor, count: int) -> list[list[float]]:
    """The centres (x, y in frame pixels) of the `count` embedding cells most like `appearance`, local maxima only
    (a 3x3 neighbourhood), over the image's cells (not the padding)."""
    features = F.normalize(embedded.image_embeddings[0].float(), dim=0)  # (C, h, w)
    similarity = torch.einsum("c,chw->hw", appearance.to(features.device), features)
    cell = max(embedded.reshaped_size) / features.shape[-1]  # input pixels per cell
    rows, cols = (math.ceil(side / cell) for side in embedded.reshaped_size)
    similarity = similarity[:rows, :cols]
    peaks = similarity == F.max_pool2d(similarity[None, None], 3, stride=1, padding=1)[0, 0]
    scores = torch.where(peaks, similarity, torch.full_like(similarity, -2)).flatten()
    top = scores.topk(min(count, int(peaks.sum()))).indices.tolist()
    (height, width), (input_h, input_w) = embedded.original_size, embedded.reshaped_size
    return [[(i % cols + 0.5) * cell * width / input_w, (i // cols + 0.5) * cell * height / input_h] for i in top]


def _appearance(embedded: EmbeddedImage, mask: np.ndarray) -> torch.Tensor:
    """`(C,)` unit vector: the image embedding averaged over the mask (resized to the embedding's grid over the
    resized, unpadded image)."""
    features = embedded.image_embeddings[0].float()  # (C, h, w) over the padded input square
    height, width = embedded.reshaped_size
    weights = torch.from_numpy(mask).to(features.device, torch.float)[None, None]
    side = max(embedded.reshaped_size)
    weights = F.interpolate(weights, size=(height, width), mode="area")
    weights = F.pad(weights, (0, side - width, 0, side - height))
    weights = F.adaptive_avg_pool2d(weights, features.shape[-2:])[0, 0]
    pooled = (features * weights).sum(dim=(1, 2)) / weights.sum().clamp(min=1e-6)
    return F.normalize(pooled, dim=0).cpu()


def write_tracking(
    tracker: VideoPredictor,
    out_dir: str | os.PathLike,
    video_id: str | None = None,
    start_frame: int | None = None,
    overlay: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Follows `tracker`'s objects from `start_frame` (default: the first prompted frame) to the end, then back to the
    start, writing `out_dir/masks.json` (COCO RLE), `out_dir/masks/NNNNN.png` and, with `overlay`,
    `out_dir/overlay.mp4` as it goes (the CLI's `sam-hf video` and the Space's Video tab).

    Returns:
        a summary: `frames` written, `objects`, per object the frames it was `lost` on and how often it was `refound`,
        and the paths written (`json`, `masks`, `overlay`).
    """
    video = tracker.video
    start = min(tracker.prompts) if start_frame is None else start_frame
    writer = ResultWriter(out_dir, video_id or Path(video.name).stem, video)
    lost = {object_id: 0 for object_id in tracker.object_ids}
    refound = dict.fromkeys(tracker.object_ids, 0)
    written = 0
    backward = tracker.propagate(start, reverse=True) if start > 0 else iter(())
    with tqdm(total=len(video), desc="video", unit="frame", disable=not progress) as bar:
        for result in itertools.chain(tracker.propagate(start), (r for r in backward if r.index != start)):
            writer.write(result)
            for object_id, is_lost in zip(result.object_ids, result.lost, strict=True):
                lost[object_id] += int(is_lost)
            for object_id in result.refound:
                refound[object_id] += 1
            written += 1
            bar.update()
    summary = {"frames": written, "objects": tracker.object_ids, "lost": lost, "refound": refound}
    summary["json"] = str(writer.close({"prompt_frame": start, **summary}))
    summary["masks"] = str(writer.masks_dir)
    summary["overlay"] = str(write_overlay(video, writer, writer.out_dir / "overlay.mp4")) if overlay else None
    return summary
