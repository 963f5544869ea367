"""The Space page's mask upscaling, two ways, in headless Chromium, one run, interleaved, on the same logits.

The page's decoder graph returns 256x256 low-res logits (`SamLowResDecoder`); the page upscales the mask it shows
(`post_process_masks` geometry: to the padded 1024 square, crop, to the original size; threshold 0). Contenders:

- `js`: space/static/canvas.js `axisTaps` + `upscaleMask` (each output pixel a 4-tap sum per axis, only at the pixels
  wanted; taps built on every call, as for a download);
- `onnx`: a second small ONNX graph in onnxruntime-web (the library's `SamOnnxDecoder._upscale` then `> 0`), same
  wasm build and threads as the page (cross-origin isolated).

For each output size it prints the medians over `--rounds` and the ratio onnx / js, and the share of pixels where the
two masks differ (float rounding at logit ~0). Needs Debian's Chromium and `npm ci --prefix space`.

    python -m benchmarks.space_upscale [--rounds 20] [--sizes 1024x1024 1024x768 3000x4000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import tempfile
from pathlib import Path

import torch
from playwright import sync_api

from sam_hf.conversion import onnx_export

ROOT = Path(__file__).resolve().parents[1]
ORT_DIR = ROOT / "space" / "node_modules" / "onnxruntime-web" / "dist"
CANVAS_JS = ROOT / "space" / "static" / "canvas.js"
ORIGIN = "http://localhost:8765"  # a secure context (localhost), as cross-origin isolation needs
MODEL_SIZE, LOW_RES = 1024, 256

PAGE_SCRIPT = """
async ({sizes, rounds, modelSize, n}) => {
  const ort = await import('/ort/ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href;
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const { axisTaps, upscaleMask } = await import('/canvas.js');
  const session = await ort.InferenceSession.create('/upscale.onnx', { executionProviders: ['wasm'] });
  const logits = new Float32Array(n * n); // smooth logits with many zero crossings
  for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) logits[y * n + x] = Math.sin(x / 7) * Math.cos(y / 11) + 0.1;
  const range = (length) => Int32Array.from({ length }, (_, i) => i);
  const median = (values) => values.slice().sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const results = [];
  for (const [height, width] of sizes) {
    const scale = modelSize / Math.max(height, width);
    const resized = [Math.floor(height * scale + 0.5), Math.floor(width * scale + 0.5)];
    const js = () => upscaleMask(logits, n, axisTaps(n, modelSize, resized[0], height, range(height)),
      axisTaps(n, modelSize, resized[1], width, range(width)));
    const onnx = async () => (await session.run({
      low_res_masks: new ort.Tensor('float32', logits, [1, 1, n, n]),
      orig_im_size: new ort.Tensor('float32', new Float32Array([height, width]), [2]),
    })).masks.data;
    await onnx(); js(); // warm-up
    const times = { js: [], onnx: [] };
    let a = null, b = null;
    for (let round = 0; round < rounds; round++) {
      let started = performance.now(); a = js(); times.js.push(performance.now() - started);
      started = performance.now(); b = await onnx(); times.onnx.push(performance.now() - started);
    }
    let differ = 0;
    for (let i = 0; i < a.length; i++) differ += (a[i] !== 0) !== (b[i] !== 0);
    results.push({ size: [height, width], js_ms: median(times.js), onnx_ms: median(times.onnx),
      onnx_over_js: median(times.onnx) / median(times.js), differing_pixels: differ / a.length });
  }
  return { crossOriginIsolated: self.crossOriginIsolated, threads: ort.env.wasm.numThreads, results };
}
"""


class Upscale(torch.nn.Module):
    """`low_res_masks (1, 1, n, n)`, `orig_im_size (2,)` -> the thresholded mask `(1, 1, H, W)`, as the library's
    official decoder graph upscales (`SamOnnxDecoder._upscale`)."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size

    def forward(self, low_res_masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        return onnx_export.SamOnnxDecoder._upscale(self, low_res_masks, orig_im_size) > 0


def export_upscale(path: Path) -> Path:
    inputs = {"low_res_masks": torch.randn(1, 1, LOW_RES, LOW_RES), "orig_im_size": torch.tensor([1500.0, 2250.0])}
    onnx_export._export(
        Upscale(MODEL_SIZE), inputs, path, onnx_export.DEFAULT_OPSET, ["masks"], {k: None for k in inputs}
    )
    return path


def serve(route: sync_api.Route, graph: Path) -> None:
    """The page's files, with the Space's cross-origin isolation headers."""
    path = route.request.url.removeprefix(ORIGIN)
    files = {"/upscale.onnx": graph, "/canvas.js": CANVAS_JS}
    file = files.get(path) or (ORT_DIR / path.removeprefix("/ort/") if path.startswith("/ort/") else None)
    headers = {"cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp"}
    if file is None or not file.is_file():
        route.fulfill(
            status=200, body="<!doctype html><title>upscale</title>", content_type="text/html", headers=headers
        )
        return
    kind = "text/javascript" if file.suffix == ".mjs" or file.suffix == ".js" else mimetypes.guess_type(file)[0]
    route.fulfill(status=200, body=file.read_bytes(), content_type=kind or "application/octet-stream", headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sizes", nargs="+", default=["1024x1024", "1024x768", "3000x4000"], help="HEIGHTxWIDTH")
    parser.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = parser.parse_args()
    sizes = [[int(side) for side in size.split("x")] for size in args.sizes]
    with tempfile.TemporaryDirectory() as directory, sync_api.sync_playwright() as playwright:
        graph = export_upscale(Path(directory) / "upscale.onnx")
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.route(f"{ORIGIN}/**", lambda route: serve(route, graph))
            page.goto(f"{ORIGIN}/")
            figures = page.evaluate(
                PAGE_SCRIPT, {"sizes": sizes, "rounds": args.rounds, "modelSize": MODEL_SIZE, "n": LOW_RES}
            )
        finally:
            browser.close()
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
