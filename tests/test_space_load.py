"""The Space under load: an in-process launch on the bundled model (loopback only), `SESSIONS` concurrent
`gradio_client` sessions, each sending a fixed mix of clicks, boxes, text prompts and everything mode on images of its
own, with a time limit. Checks: no failed request; every response is the one its own session should get (its own
image size, and the masks and scores that the same handler computes for that session alone, so no response carries
another session's image or masks); the per-session embedding caches evict (each session sends more images than
`EMBEDDING_CACHE_SIZE`); the process RSS stays within `RSS_BOUND_MB` of its level before the load. The figures
(requests, wall time, p50 / p95 latency, peak RSS) are printed and written to test-artifacts/space_load.json.
"""

from __future__ import annotations

import gc
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from gradio_client import Client, handle_file

from sam_hf.everything import decode_segmentation
from sam_hf.geometry import centre_point, mask_boxes
from space import app
from tests.space_testing import bundled_segmenter, iou, running_space, write_scene

pytestmark = pytest.mark.heavy

SESSIONS = 20
IMAGES_PER_SESSION = app.EMBEDDING_CACHE_SIZE + 1  # one request per image: every session's cache must evict
KINDS = ("click", "box", "text", "click_and_box", "everything")  # each session's requests, in this order
EVERYTHING_SETTINGS = (8, 0.5, 0.7)  # points_per_side, pred_iou_thresh, stability_score_thresh
CONCURRENCY = 4  # requests that may run the model at once (the Space's default is 1; everything mode stays at 1)
TIME_LIMIT_S = 240  # a hang guard, not a speed requirement
# Process RSS growth allowed during the load, over the process idling with the server up. The process also hosts the
# 20 clients and their threads; the embedding caches are a small part (20 sessions x 4 x 128 kB for the bundled
# model). Observed growth: test-artifacts/space_load.json and README ("Limits and robustness").
RSS_BOUND_MB = 1200
ARTIFACT = Path(__file__).resolve().parents[1] / "test-artifacts" / "space_load.json"


@dataclass
class Request:
    session: int
    kind: str
    path: str
    size: int
    arguments: tuple  # the endpoint's arguments after the image


def plan(directory: Path) -> list[list[Request]]:
    """Each session's requests: its own generated scenes, at a size no other session uses (the image size in a
    response tells whose image it is)."""
    sessions = []
    for session in range(SESSIONS):
        size, requests = 112 + 2 * session, []
        for index in range(IMAGES_PER_SESSION):
            path, scene, masks = write_scene(directory, 1000 + 10 * session + index, size)
            target = int(np.argmax(masks.sum(axis=(1, 2))))
            point, box = [*centre_point(masks[target]), 1], mask_boxes(masks[target]).tolist()
            kind = KINDS[index % len(KINDS)]
            arguments = {
                "click": ([point], None, True, None, "auto"),
                "box": (None, box, False, None, "auto"),
                "text": (None, None, True, scene.objects[target].name, "auto"),
                "click_and_box": ([point], box, False, None, "auto"),
                "everything": EVERYTHING_SETTINGS,
            }[kind]
            requests.append(Request(session, kind, path, size, arguments))
        sessions.append(requests)
    return sessions


def expected(segmenter: app.Segmenter, sessions: list[list[Request]]) -> dict[tuple[int, int], dict[str, Any]]:
    """The result JSON each request gets when its session is served alone: the same handlers, called directly."""
    handlers, results = app.Handlers(segmenter), {}
    for requests in sessions:
        session = app.Session()
        for index, request in enumerate(requests):
            if request.kind == "everything":
                outputs = handlers.segment_everything(request.path, *request.arguments, session)
            else:
                outputs = handlers.segment(request.path, *request.arguments, session)
            results[request.session, index] = outputs[4]
    return results


def same_result(got: dict[str, Any], want: dict[str, Any], size: int) -> None:
    assert got["mode"] == want["mode"] and got.get("prompts") == want.get("prompts")  # this session's prompts
    assert got.get("text", {}).get("found") == want.get("text", {}).get("found")
    if want["masks"]:  # a text that was not found has no masks and no image size
        assert got["image_size"] == want["image_size"] == [size, size]
    assert len(got["masks"]) == len(want["masks"])
    for mask, reference in zip(got["masks"], want["masks"], strict=True):
        score = "score" if got["mode"] == "prompt" else "predicted_iou"
        assert abs(mask[score] - reference[score]) < 1e-3
        a, b = decode_segmentation(mask["segmentation"]), decode_segmentation(reference["segmentation"])
        assert a.shape == (size, size) and iou(a, b) > 0.99


class PeakRss:
    """Samples this process's RSS every 20 ms in a thread: `peak` in bytes."""

    def __init__(self) -> None:
        self.process, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_session(url: str, requests: list[Request]) -> list[tuple[float, dict[str, Any] | Exception]]:
    """One `gradio_client` session sending its requests in order: (latency in s, result JSON or the error)."""
    client = Client(url, verbose=False)
    answers = []
    for request in requests:
        start = time.perf_counter()
        try:
            endpoint = "/segment_everything" if request.kind == "everything" else "/segment"
            outputs = client.predict(handle_file(request.path), *request.arguments, api_name=endpoint)
            answers.append((time.perf_counter() - start, outputs[4]))
        except Exception as error:  # counted as a failed request
            answers.append((time.perf_counter() - start, error))
    return answers


def test_twenty_concurrent_sessions(tmp_path: Path) -> None:
    segmenter = bundled_segmenter()
    sessions = plan(tmp_path)
    start = time.perf_counter()
    references = expected(segmenter, sessions)
    reference_s = time.perf_counter() - start
    demo_sessions_before = {id(s) for s in gc.get_objects() if type(s) is app.Session}
    with running_space(segmenter, concurrency_limit=CONCURRENCY) as url:
        run_session(url, sessions[0][:1])  # warm-up: Gradio's first request, the queue
        gc.collect()
        rss_before = psutil.Process().memory_info().rss
        with PeakRss() as rss, ThreadPoolExecutor(SESSIONS) as pool:
            start = time.perf_counter()
            futures = [pool.submit(run_session, url, requests) for requests in sessions]
            _, pending = wait(futures, timeout=TIME_LIMIT_S)
            wall = time.perf_counter() - start
            assert not pending, f"{len(pending)} sessions still running after {TIME_LIMIT_S} s"
        answers = [future.result() for future in futures]
        # Server-side states of this test's sessions: each cache holds at most EMBEDDING_CACHE_SIZE embeddings.
        states = [s for s in gc.get_objects() if type(s) is app.Session and id(s) not in demo_sessions_before]
    latencies = [latency for session in answers for latency, _ in session]
    failures = [(i, j, r) for i, s in enumerate(answers) for j, (_, r) in enumerate(s) if isinstance(r, Exception)]
    figures = {
        "sessions": SESSIONS,
        "requests": len(latencies),
        "failed": len(failures),
        "concurrency_limit": CONCURRENCY,
        "wall_s": round(wall, 2),
        "serial_reference_s": round(reference_s, 2),  # the same requests, one session at a time, in-process
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p95_s": round(float(np.percentile(latencies, 95)), 3),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_peak_mb": round(rss.peak / 2**20, 1),
        "rss_growth_mb": round((rss.peak - rss_before) / 2**20, 1),
        "cached_embeddings": sorted(len(s.embeddings) for s in states if s.embeddings),
    }
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"\nSpace load: {json.dumps(figures)}")

    assert not failures, failures[:3]
    assert len(latencies) == SESSIONS * IMAGES_PER_SESSION
    for session, requests in enumerate(sessions):
        for index, (request, (_, result)) in enumerate(zip(requests, answers[session], strict=True)):
            try:
                same_result(result, references[session, index], request.size)
            except AssertionError as error:
                raise AssertionError(f"session {session}, request {index} ({request.kind})") from error
    # Every session sent more images than its cache holds: full (and so evicting), never larger.
    assert max(figures["cached_embeddings"]) == app.EMBEDDING_CACHE_SIZE
    assert figures["cached_embeddings"].count(app.EMBEDDING_CACHE_SIZE) >= SESSIONS
    assert rss.peak - rss_before < RSS_BOUND_MB * 2**20, figures
