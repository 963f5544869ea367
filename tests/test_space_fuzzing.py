"""Hypothesis fuzzing of the Space's public API JSON (#17): whatever `/segment` and `/segment_everything` receive as
points, box, multimask, text, text method and everything-mode settings, the answer is masks or a worded message
(`gr.Error` from a `ValueError`/`TypeError` of the library or the app), never a crash of another kind, a null error
or a result JSON that cannot be sent back. The handlers are called as Gradio calls them, on the bundled model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from space import app
from tests.space_testing import bundled_segmenter

EXAMPLES = int(os.environ.get("SAM_HF_FUZZ_EXAMPLES", "60"))
NUMBERS = st.one_of(
    st.integers(-300, 300),
    st.floats(-300, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.booleans(),
    st.sampled_from([0, 1, 0.5, 1.7, -1, 2, 10**400]),
)
JSON_JUNK = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.just({}), st.just([]), NUMBERS)
POINTS = st.one_of(
    st.none(),
    st.lists(st.lists(st.one_of(NUMBERS, st.text(max_size=2)), min_size=0, max_size=4), min_size=0, max_size=4),
    st.lists(st.tuples(st.integers(0, 63), st.integers(0, 63), st.sampled_from([0, 1])), min_size=1, max_size=3),
    JSON_JUNK,
)
BOXES = st.one_of(st.none(), st.lists(NUMBERS, min_size=0, max_size=5), JSON_JUNK)
TEXTS = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.text(st.characters(categories=["Cs", "Cc", "Cf", "Zs"]), max_size=4),
    st.sampled_from(["", " ", "red circle", "a" * (app.MAX_TEXT_CHARS + 1)]),
    JSON_JUNK,
)
METHODS = st.one_of(st.sampled_from(["auto", "learned", "zero-shot", "telepathy"]), JSON_JUNK)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("fuzz") / "image.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return str(path)


def answered_or_worded(call: object) -> None:
    """The call returns a result that JSON can carry back, or raises a `gr.Error` with a real message."""
    try:
        outputs = call()
    except gr.Error as error:
        message = str(error.message)
        assert message and message != "None" and "The model call failed" not in message, message
        return
    json.dumps(outputs[4], allow_nan=False).encode("utf-8")  # the result JSON as Gradio sends it


@FUZZ
@given(points=POINTS, box=BOXES, multimask=st.one_of(st.booleans(), JSON_JUNK), text=TEXTS, method=METHODS)
def test_segment_json(image: str, points: object, box: object, multimask: object, text: object, method: object) -> None:
    handlers, session = app.Handlers(bundled_segmenter()), app.Session()
    if (text is not None and method == "zero-shot") or (isinstance(text, str) and len(text) > 40):
        method = "learned"  # zero-shot runs everything mode per call: fuzzed through its own settings below
    answered_or_worded(lambda: handlers.segment(image, points, box, multimask, text, method, session))


@settings(FUZZ, max_examples=max(1, EXAMPLES // 3))  # each valid draw runs everything mode
@given(points_per_side=NUMBERS, iou=NUMBERS, stability=NUMBERS)
def test_segment_everything_json(image: str, points_per_side: object, iou: object, stability: object) -> None:
    if isinstance(points_per_side, int) and not isinstance(points_per_side, bool) and points_per_side > 4:
        points_per_side = 4  # large grids are legal and slow: the check of the range is what is fuzzed
    handlers = app.Handlers(bundled_segmenter())
    answered_or_worded(lambda: handlers.segment_everything(image, points_per_side, iou, stability, app.Session()))


def test_the_fuzzer_reaches_both_outcomes(image: str) -> None:
    handlers = app.Handlers(bundled_segmenter())
    outputs = handlers.segment(image, [[3, 4, 1]], None, True, None, "auto", app.Session())
    assert len(outputs[4]["masks"]) == 3
    with pytest.raises(gr.Error, match="points must contain numbers, got bool"):
        handlers.segment(image, [[True, 4]], None, True, None, "auto", app.Session())
    assert Path(image).is_file()
