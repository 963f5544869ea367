"""The Space in a real browser (Playwright + Debian's Chromium): pick an example, click an object, see its mask.

The screenshot is kept as a test artifact in test-artifacts/ (gitignored); its path is printed.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from sam_hf.data import generate_scene
from sam_hf.training.evaluate_shapes import centre_point
from space import app
from tests.space_testing import bundled_segmenter, running_space

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TIMEOUT_MS = 30_000

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (dev extra)")
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"{CHROMIUM} not found: install Debian's chromium package (apt-get install -y chromium; .ci/run does)",
)


def test_pick_example_click_object_and_see_its_mask() -> None:
    scene = generate_scene(app.EXAMPLE_SEEDS[0], app.EXAMPLE_SIZE)  # the first example of the page
    masks = scene.masks
    target = masks[np.argmax(masks.sum(axis=(1, 2)))]
    x, y = centre_point(target)
    with running_space(bundled_segmenter()) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)  # not wait_until="networkidle": a Gradio page never settles
            page.locator("#examples img").first.click()
            canvas = page.locator("#canvas img").first
            canvas.wait_for()
            # The image is letterboxed inside its element (object-fit: contain): click at the object's pixel.
            width, height = canvas.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            box = canvas.bounding_box()
            scale = min(box["width"] / width, box["height"] / height)
            left, top = (box["width"] - width * scale) / 2, (box["height"] - height * scale) / 2
            canvas.click(position={"x": left + (x + 0.5) * scale, "y": top + (y + 0.5) * scale})
            mask = page.locator("#overlay img.mask").first
            mask.wait_for()
            page.wait_for_function("() => document.querySelector('#timing').innerText.includes('decoder')")
            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / "space_click.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"\nscreenshot: {screenshot}")
            # The overlay shown is the clicked object's mask: fetch it and compare with the ground truth.
            response = page.request.get(mask.get_attribute("src"))
            shown = np.asarray(PIL.Image.open(io.BytesIO(response.body())))[..., 3] > 0
        finally:
            browser.close()
    assert shown.shape == target.shape
    assert (shown & target).sum() / (shown | target).sum() > 0.6
