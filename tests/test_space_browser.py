"""The Space in a real browser (Playwright + Debian's Chromium): pick an example, then click an object or type its
name, and see its mask.

Screenshots are kept as test artifacts in test-artifacts/ (gitignored); their paths are printed.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
from playwright import sync_api

from sam_hf.data import generate_scene
from sam_hf.geometry import centre_point
from space import app
from tests.helpers import in_ci
from tests.space_testing import bundled_segmenter, iou, running_space

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 30_000
FLOOR = 0.6
SCENE = generate_scene(app.EXAMPLE_SEEDS[0], app.EXAMPLE_SIZE)  # the first example of the page

# Without Debian's Chromium these tests skip, except under CI, where .ci/run installs it and a missing one fails them.
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not in_ci(),
    reason=f"{CHROMIUM} not found: install Debian's chromium package (apt-get install -y chromium; .ci/run does)",
)


@contextmanager
def example_page() -> Iterator[Any]:
    """A browser page on the Space with its first example picked (and embedded)."""
    with running_space(bundled_segmenter()) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)  # not wait_until="networkidle": a Gradio page never settles
            page.locator("#examples img").first.click()
            page.locator("#canvas img").first.wait_for()
            yield page
        finally:
            browser.close()


def shown_mask(page: Any, step: str, screenshot: str) -> np.ndarray:
    """The mask the overlay shows once the timing line names `step`; the page's screenshot is kept."""
    mask = page.locator("#overlay img.mask").first
    mask.wait_for()
    page.wait_for_function(f"() => document.querySelector('#timing').innerText.includes({json.dumps(step)})")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    print(f"\nscreenshot: {ARTIFACTS / screenshot}")
    response = page.request.get(mask.get_attribute("src"))  # the overlay as served: compare with the ground truth
    return np.asarray(PIL.Image.open(io.BytesIO(response.body())))[..., 3] > 0


def test_pick_example_click_object_and_see_its_mask() -> None:
    masks = SCENE.masks
    target = masks[np.argmax(masks.sum(axis=(1, 2)))]
    x, y = centre_point(target)
    with example_page() as page:
        canvas = page.locator("#canvas img").first
        # The image is letterboxed inside its element (object-fit: contain): click at the object's pixel.
        width, height = canvas.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        box = canvas.bounding_box()
        scale = min(box["width"] / width, box["height"] / height)
        left, top = (box["width"] - width * scale) / 2, (box["height"] - height * scale) / 2
        canvas.click(position={"x": left + (x + 0.5) * scale, "y": top + (y + 0.5) * scale})
        shown = shown_mask(page, "decoder", "space_click.png")
    assert shown.shape == target.shape
    assert iou(shown, target) > FLOOR


def test_pick_example_type_a_name_and_see_its_mask() -> None:
    target = SCENE.objects[-1]  # "white hexagon" (zero-shot IoU 0.97 with the bundled model + CLIP)
    with example_page() as page:
        page.locator("#text").get_by_role("textbox").fill(target.name)
        page.locator("#text").get_by_role("textbox").press("Enter")
        shown = shown_mask(page, "text prompt", "space_text.png")
        assert target.name in page.locator("#timing").inner_text()  # the message names the text
    assert shown.shape == target.mask.shape
    assert iou(shown, target.mask) > FLOOR
