"""Video: follow objects through a video with any SAM-1 checkpoint (`VideoPredictor`), read videos and write the
results (`io`: PyAV, imported only when a file is read or written), and score tracking (`metrics`: DAVIS J and F)."""

from .io import MAX_FRAME_PIXELS, MAX_FRAMES, ResultWriter, VideoFrames, open_video, write_overlay, write_video
from .metrics import FAILURES, ClipScores, boundary_f_measure, failure_type, region_similarity, score_clip
from .predictor import TRACK_PROMPTS, ObjectPrompt, VideoFrameResult, VideoPredictor, VideoSettings, write_tracking

__all__ = [
    "FAILURES",
    "MAX_FRAMES",
    "MAX_FRAME_PIXELS",
    "TRACK_PROMPTS",
    "ClipScores",
    "ObjectPrompt",
    "ResultWriter",
    "VideoFrameResult",
    "VideoFrames",
    "VideoPredictor",
    "VideoSettings",
    "boundary_f_measure",
    "failure_type",
    "open_video",
    "region_similarity",
    "score_clip",
    "write_overlay",
    "write_tracking",
    "write_video",
]
