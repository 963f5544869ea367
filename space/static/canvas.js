// The Space's canvas: the image with its masks, where you prompt. The server sends the image and its embedding once;
// the model's prompt encoder + mask decoder (its ONNX graph, official interface) then runs here in onnxruntime-web,
// so hover, clicks and dragged boxes make no server request. Text prompts, everything mode and browsers that cannot
// run the graph go to the server through the canvas's 'prompt' event.

const COLORS = [[230, 25, 75], [60, 180, 75], [67, 99, 216], [245, 130, 49], [145, 30, 180], [66, 212, 244],
  [240, 50, 230], [191, 239, 69], [250, 190, 212], [70, 153, 144]];
const MASK_COLOR = [30, 144, 255];
const DRAG_PIXELS = 5; // a press that moves farther than this (screen pixels) is a box, not a click

// float16 -> float32 for the embedding (the page receives half precision).
function halfToFloat(bits) {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const h = bits[i], sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
    out[i] = exponent === 0 ? sign * 2 ** -14 * (fraction / 1024)
      : exponent === 31 ? (fraction ? NaN : sign * Infinity)
        : sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
  }
  return out;
}

function decodeBase64(text) {
  const binary = atob(text), bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = reject;
    image.src = src;
  });
}

async function pixelsOf(src, width, height) {
  const image = await loadImage(src), scratch = document.createElement('canvas');
  scratch.width = width; scratch.height = height;
  const context = scratch.getContext('2d');
  context.drawImage(image, 0, 0, width, height);
  return context.getImageData(0, 0, width, height).data;
}

function download(name, blob) {
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// Upscaling of low-res logits, the geometry of `SamImageProcessor.post_process_masks` (bilinear, align_corners false:
// n -> the padded model input S, crop to the resized image r, -> the original size o), evaluated only at the original
// pixels `wanted` along one axis. Both bilinear steps are linear along each axis, so each output pixel is a weighted
// sum of at most 4 low-res ones: taps are (index, weight) x 4 per output pixel.
export function axisTaps(n, size, resized, original, wanted) {
  const index = new Int32Array(4 * wanted.length), weight = new Float32Array(4 * wanted.length);
  const first = n / size, second = resized / original;
  const source = (dst, scale) => Math.max(0, (dst + 0.5) * scale - 0.5);
  wanted.forEach((k, out) => {
    const s2 = source(k, second), j0 = Math.floor(s2), j1 = Math.min(j0 + 1, resized - 1), w2 = s2 - j0;
    [[j0, 1 - w2], [j1, w2]].forEach(([j, wj], t) => {
      const s1 = source(j, first), i0 = Math.floor(s1), i1 = Math.min(i0 + 1, n - 1), w1 = s1 - i0;
      index[4 * out + 2 * t] = i0; weight[4 * out + 2 * t] = wj * (1 - w1);
      index[4 * out + 2 * t + 1] = i1; weight[4 * out + 2 * t + 1] = wj * w1;
    });
  });
  return { index, weight };
}

// logits: the n x n low-res logits; rows / cols: taps of the output's rows and columns -> mask (logit > 0), row-major.
export function upscaleMask(logits, n, rows, cols) {
  const height = rows.index.length / 4, width = cols.index.length / 4, across = new Float32Array(n * width);
  for (let y = 0; y < n; y++) { // along the width first, for every low-res row
    const line = y * n, outLine = y * width;
    for (let x = 0; x < width; x++) {
      const t = 4 * x, ci = cols.index, cw = cols.weight;
      across[outLine + x] = cw[t] * logits[line + ci[t]] + cw[t + 1] * logits[line + ci[t + 1]]
        + cw[t + 2] * logits[line + ci[t + 2]] + cw[t + 3] * logits[line + ci[t + 3]];
    }
  }
  const mask = new Uint8Array(height * width);
  for (let y = 0; y < height; y++) {
    const t = 4 * y, ri = rows.index, rw = rows.weight;
    const a = ri[t] * width, b = ri[t + 1] * width, c = ri[t + 2] * width, d = ri[t + 3] * width;
    const wa = rw[t], wb = rw[t + 1], wc = rw[t + 2], wd = rw[t + 3], outLine = y * width;
    for (let x = 0; x < width; x++) {
      mask[outLine + x] = wa * across[a + x] + wb * across[b + x] + wc * across[c + x] + wd * across[d + x] > 0 ? 1 : 0;
    }
  }
  return mask;
}

const range = (length, map = (i) => i) => Int32Array.from({ length }, (_, i) => map(i));

// A COCO compressed RLE ({size: [height, width], counts}, pycocotools' rleFrString; runs in column-major order) ->
// a row-major mask.
function decodeCocoRle({ size: [height, width], counts }) {
  const runs = [];
  for (let p = 0; p < counts.length;) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = counts.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0; p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (runs.length > 2) x += runs[runs.length - 2];
    runs.push(x);
  }
  const mask = new Uint8Array(height * width);
  let start = 0;
  runs.forEach((run, r) => {
    if (r % 2) for (let j = start; j < start + run; j++) mask[(j % height) * width + Math.floor(j / height)] = 1;
    start += run;
  });
  return mask;
}

const TOOLBAR = `
  <div class="sam-toolbar">
    <input class="sam-text" type="text" placeholder="Text prompt, e.g. red circle, then Enter">
    <select class="sam-method"><option>auto</option><option>learned</option><option>zero-shot</option></select>
    <button data-action="text">Segment text</button>
    <button data-action="undo">Undo</button>
    <button data-action="reset">Reset</button>
    <button data-action="mask">Mask PNG</button>
    <button data-action="cutout">Cut-out PNG</button>
    <button data-action="coco">COCO RLE</button>
  </div>
  <div class="sam-candidates"></div>
  <div class="sam-stage"><canvas class="sam-view" width="1" height="1"></canvas>
    <div class="sam-empty">Upload an image or pick an example.</div></div>
  <div class="sam-status"></div>`;

export function mount({ element, props, trigger, watch, urls }) {
  if (!document.querySelector(`link[href="${urls.style}"]`)) {
    const link = document.createElement('link');
    link.rel = 'stylesheet'; link.href = urls.style;
    document.head.appendChild(link);
  }
  const root = document.createElement('div');
  root.className = 'sam-canvas';
  root.innerHTML = TOOLBAR;
  const view = root.querySelector('.sam-view'), context = view.getContext('2d');
  const status = root.querySelector('.sam-status'), candidates = root.querySelector('.sam-candidates');
  const state = {
    key: null, image: null, width: 0, height: 0, original: [0, 0], embedding: null, inputSize: null,
    decoderUrl: null, session: null, browser: false, points: [], box: null, history: [], masks: [], scores: [],
    lowRes: [], full: [], taps: null, hq: false, modelSize: 0, pixelsSrc: null, picked: null,
    scoreName: 'IoU', selected: 0, hover: null, drag: null, everything: null, coco: null, serial: null,
    busy: false, pendingHover: null, lastPrompt: null, latencies: [], where: 'none', ready: false, stats: {},
  };
  const api = { state, decode: (prompt) => decodePrompt(prompt) };
  element.samCanvas = api;
  window.samCanvas = api;

  function attach() {
    const slot = element.querySelector('.sam-root') || element;
    if (!slot.contains(root)) slot.appendChild(root);
  }
  attach();

  // ---- the decoder in the browser ----
  let ortModule = null;
  async function loadSession(url) {
    if (typeof WebAssembly !== 'object') throw new Error('WebAssembly is unavailable');
    if (!ortModule) {
      ortModule = await import(new URL(urls.ort, document.baseURI).href);
      ortModule.env.wasm.wasmPaths = new URL(urls.ortDir, document.baseURI).href;
      // Threads need SharedArrayBuffer, which a page has only when cross-origin isolated (the app's COOP/COEP).
      ortModule.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
      state.stats.crossOriginIsolated = self.crossOriginIsolated;
      state.stats.numThreads = ortModule.env.wasm.numThreads;
    }
    return ortModule.InferenceSession.create(new URL(url, document.baseURI).href, { executionProviders: ['wasm'] });
  }

  function toOriginal(x, y) { // a display pixel -> original-image pixels (the API's frame)
    const sx = state.original[1] / state.width, sy = state.original[0] / state.height;
    return [(x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5];
  }
  function toDisplay(x, y) {
    const sx = state.original[1] / state.width, sy = state.original[0] / state.height;
    return [(x + 0.5) / sx - 0.5, (y + 0.5) / sy - 0.5];
  }

  function multimask() {
    const box = document.querySelector('#multimask input');
    return box ? box.checked : true;
  }

  // prompt: {points: [[x, y, label]], box: [x1, y1, x2, y2] | null} in original pixels -> {lowRes, scores}: each
  // candidate's n x n low-res logits (upscaled when shown: maskAt) and predicted IoU.
  async function decodePrompt(prompt, multi = multimask()) {
    const ort = ortModule, [inputH, inputW] = state.inputSize;
    const fx = inputW / state.original[1], fy = inputH / state.original[0];
    const coords = [], labels = [];
    for (const [x, y, label] of prompt.points) { coords.push(x * fx, y * fy); labels.push(label); }
    if (prompt.box) {
      const [x1, y1, x2, y2] = prompt.box;
      coords.push(x1 * fx, y1 * fy, x2 * fx, y2 * fy); labels.push(2, 3);
    } else { coords.push(0, 0); labels.push(-1); }
    const grid = state.embedding.dims[2] * 4;
    const feeds = {
      image_embeddings: state.embedding,
      point_coords: new ort.Tensor('float32', Float32Array.from(coords), [1, labels.length, 2]),
      point_labels: new ort.Tensor('float32', Float32Array.from(labels), [1, labels.length]),
      mask_input: new ort.Tensor('float32', new Float32Array(grid * grid), [1, 1, grid, grid]),
      has_mask_input: new ort.Tensor('float32', new Float32Array([0]), [1]),
    };
    const out = await state.session.run(feeds);
    const logits = out.low_res_masks.data, ious = out.iou_predictions.data, n = out.low_res_masks.dims[3];
    let picks = multi ? [1, 2, 3] : [0];
    // SAM-HQ gives one mask, as segment_anything_hq: the best multimask candidate (first of equals) plus the HQ mask.
    if (multi && state.hq) picks = [picks.reduce((best, k) => (ious[k] > ious[best] ? k : best))];
    return { lowRes: picks.map((k) => logits.subarray(k * n * n, (k + 1) * n * n)), scores: picks.map((k) => ious[k]) };
  }

  // Taps of the displayed pixels (the server's display mask is the original-size mask resized NEAREST) or of every
  // original pixel, for n x n low-res logits.
  function tapsFor(n, full) {
    const [height, width] = state.original, [resizedH, resizedW] = state.inputSize, size = state.modelSize;
    const nearest = (shown, original) => range(shown, (i) => Math.floor((i + 0.5) * original / shown));
    const rows = full ? range(height) : nearest(state.height, height), cols = full ? range(width) : nearest(state.width, width);
    return { rows: axisTaps(n, size, resizedH, height, rows), cols: axisTaps(n, size, resizedW, width, cols) };
  }

  // Candidate i's mask at display size, upscaled from its low-res logits on first use.
  function maskAt(i) {
    if (!state.masks[i] && state.lowRes[i]) {
      const n = Math.round(Math.sqrt(state.lowRes[i].length));
      if (!state.taps || state.taps.n !== n) state.taps = { n, ...tapsFor(n, false) };
      const started = performance.now();
      state.masks[i] = upscaleMask(state.lowRes[i], n, state.taps.rows, state.taps.cols);
      state.stats.upscaleMs = performance.now() - started;
    }
    return state.masks[i];
  }

  // The selected mask at the original image's size (downloads).
  async function fullMask() {
    const i = state.selected, [height, width] = state.original;
    if (state.lowRes[i]) {
      const n = Math.round(Math.sqrt(state.lowRes[i].length)), taps = tapsFor(n, true);
      return upscaleMask(state.lowRes[i], n, taps.rows, taps.cols);
    }
    if (state.picked !== null) { // an everything-mode mask: its record's COCO RLE, at the original size
      return decodeCocoRle(JSON.parse(state.coco).masks[state.picked].segmentation);
    }
    if (!state.full[i]) return maskAt(i); // shown at full size
    const rgba = await pixelsOf(state.full[i], width, height), mask = new Uint8Array(width * height);
    for (let j = 0; j < mask.length; j++) mask[j] = rgba[4 * j] > 127 ? 1 : 0;
    return mask;
  }

  // ---- drawing ----
  function overlay(mask, color, alpha) {
    const image = context.getImageData(0, 0, state.width, state.height), data = image.data;
    for (let i = 0; i < mask.length; i++) {
      if (!mask[i]) continue;
      const j = 4 * i;
      data[j] = data[j] * (1 - alpha) + color[0] * alpha;
      data[j + 1] = data[j + 1] * (1 - alpha) + color[1] * alpha;
      data[j + 2] = data[j + 2] * (1 - alpha) + color[2] * alpha;
    }
    context.putImageData(image, 0, 0);
  }

  function draw() {
    if (!state.image) return;
    context.drawImage(state.image, 0, 0, state.width, state.height);
    if (state.everything) {
      const image = context.getImageData(0, 0, state.width, state.height), data = image.data;
      const labels = state.everything.labels;
      for (let i = 0; i < labels.length; i++) {
        if (!labels[i]) continue;
        const color = COLORS[(labels[i] - 1) % COLORS.length], j = 4 * i;
        for (let c = 0; c < 3; c++) data[j + c] = data[j + c] * 0.45 + color[c] * 0.55;
      }
      context.putImageData(image, 0, 0);
    }
    if (state.hover) overlay(state.hover, MASK_COLOR, 0.35);
    else if (state.scores.length) overlay(maskAt(state.selected), MASK_COLOR, 0.55);
    const radius = Math.max(3, Math.round(Math.max(state.width, state.height) / 90));
    context.lineWidth = Math.max(2, radius / 2);
    const box = state.drag && state.drag.moved ? state.drag.box : state.box;
    if (box) {
      const [x1, y1] = toDisplay(box[0], box[1]), [x2, y2] = toDisplay(box[2], box[3]);
      context.strokeStyle = 'rgb(255, 215, 0)';
      context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    }
    for (const [x, y, label] of state.points) {
      const [dx, dy] = toDisplay(x, y);
      context.beginPath();
      context.arc(dx, dy, radius, 0, 2 * Math.PI);
      context.fillStyle = label === 1 ? 'rgb(30, 200, 70)' : 'rgb(230, 40, 40)';
      context.fill();
      context.strokeStyle = 'white'; context.lineWidth = 1; context.stroke();
    }
  }

  function showCandidates() {
    candidates.innerHTML = '';
    state.scores.forEach((score, index) => {
      const button = document.createElement('button');
      button.textContent = `Mask ${index + 1} · ${state.scoreName} ${score.toFixed(3)}`;
      button.className = index === state.selected ? 'sam-selected' : '';
      button.addEventListener('click', () => { state.selected = index; showCandidates(); draw(); });
      candidates.appendChild(button);
    });
  }

  // masks: display-size masks, or null for each low-res candidate (lowRes); full: original-size mask PNGs (server)
  function setResult(masks, scores, scoreName = 'IoU', lowRes = [], full = []) {
    state.masks = masks; state.scores = Array.from(scores); state.scoreName = scoreName;
    state.lowRes = lowRes; state.full = full; state.picked = null;
    state.selected = state.scores.length ? state.scores.indexOf(Math.max(...state.scores)) : 0;
    showCandidates();
  }

  // ---- prompts ----
  function prompt() { return { points: state.points.map((p) => [...p]), box: state.box ? [...state.box] : null }; }

  async function update(started) {
    const current = prompt();
    state.lastPrompt = { ...current, multimask: multimask() };
    if (!current.points.length && !current.box) { setResult([], []); draw(); return; }
    if (!state.browser) { // the server path: one request per prompt change
      trigger('prompt', { ...current, multimask: multimask() });
      return;
    }
    const { lowRes, scores } = await decodePrompt(current);
    setResult(lowRes.map(() => null), scores, 'IoU', lowRes);
    state.hover = null;
    draw();
    const ms = performance.now() - started;
    state.latencies.push({ kind: current.box && !current.points.length ? 'box' : 'click', ms });
    status.textContent = `decoded in your browser in ${ms.toFixed(1)} ms`;
  }

  function push(change) {
    state.history.push(prompt());
    change();
    state.everything = null;
    update(performance.now());
  }

  function pixelAt(event) {
    const rect = view.getBoundingClientRect();
    const x = Math.floor((event.clientX - rect.left) * state.width / rect.width);
    const y = Math.floor((event.clientY - rect.top) * state.height / rect.height);
    return [Math.min(Math.max(x, 0), state.width - 1), Math.min(Math.max(y, 0), state.height - 1)];
  }

  async function hover(event) {
    if (!state.browser || state.drag || state.everything) return;
    state.pendingHover = { pixel: pixelAt(event), started: performance.now() };
    if (state.busy) return; // the latest position is decoded when the running one ends
    state.busy = true;
    while (state.pendingHover) {
      const { pixel, started } = state.pendingHover;
      state.pendingHover = null;
      const current = prompt();
      current.points.push([...toOriginal(...pixel), 1]);
      const { lowRes, scores } = await decodePrompt(current), best = lowRes[scores.indexOf(Math.max(...scores))];
      const n = Math.round(Math.sqrt(best.length));
      if (!state.taps || state.taps.n !== n) state.taps = { n, ...tapsFor(n, false) };
      state.hover = upscaleMask(best, n, state.taps.rows, state.taps.cols);
      draw();
      state.latencies.push({ kind: 'hover', ms: performance.now() - started });
    }
    state.busy = false;
  }

  view.addEventListener('contextmenu', (event) => event.preventDefault());
  view.addEventListener('mousemove', (event) => {
    if (state.drag) {
      const [x, y] = pixelAt(event), [sx, sy] = state.drag.start;
      state.drag.moved ||= Math.hypot(event.clientX - state.drag.client[0], event.clientY - state.drag.client[1]) > DRAG_PIXELS;
      const [ox1, oy1] = toOriginal(Math.min(sx, x), Math.min(sy, y)), [ox2, oy2] = toOriginal(Math.max(sx, x), Math.max(sy, y));
      state.drag.box = [ox1, oy1, ox2, oy2];
      draw();
      return;
    }
    hover(event);
  });
  view.addEventListener('mouseleave', () => { state.hover = null; state.pendingHover = null; draw(); });
  view.addEventListener('mousedown', (event) => {
    if (!state.image) return;
    state.drag = { start: pixelAt(event), client: [event.clientX, event.clientY], moved: false, button: event.button, shift: event.shiftKey };
  });
  view.addEventListener('mouseup', (event) => {
    const drag = state.drag;
    state.drag = null;
    if (!drag || !state.image) return;
    const started = performance.now();
    if (drag.moved && drag.button === 0) { state.history.push(prompt()); state.box = drag.box; state.everything = null; update(started); return; }
    const [x, y] = drag.start;
    if (state.everything) { // everything mode: a click selects the mask under it
      const label = state.everything.labels[y * state.width + x];
      if (label) {
        const mask = new Uint8Array(state.everything.labels.length);
        state.everything.labels.forEach((value, i) => { mask[i] = value === label ? 1 : 0; });
        setResult([mask], [state.everything.scores[label - 1]]); state.picked = label - 1; draw();
      }
      return;
    }
    const label = drag.button === 2 || drag.shift ? 0 : 1;
    state.history.push(prompt());
    state.points.push([...toOriginal(x, y), label]);
    update(started);
  });

  async function serverText() {
    const text = root.querySelector('.sam-text').value;
    trigger('prompt', { ...prompt(), text, text_method: root.querySelector('.sam-method').value, multimask: multimask() });
    status.textContent = 'asking the server…';
  }
  root.querySelector('.sam-text').addEventListener('keydown', (event) => { if (event.key === 'Enter') serverText(); });

  // The mask PNG or the cut-out (RGBA, alpha = mask) at the original image's size, as a canvas.
  async function maskCanvas(cutout) {
    if (!state.scores.length) return null;
    const mask = await fullMask(), full = mask.length === state.original[0] * state.original[1];
    const [height, width] = full ? state.original : [state.height, state.width];
    const out = document.createElement('canvas');
    out.width = width; out.height = height;
    const outContext = out.getContext('2d');
    const image = outContext.createImageData(width, height);
    // The original pixels: the displayed copy when it is them (a PNG at full size), else the original PNG.
    const source = !cutout ? null : full && state.pixelsSrc ? await pixelsOf(state.pixelsSrc, width, height) : state.pixels;
    for (let i = 0; i < mask.length; i++) {
      const j = 4 * i;
      if (cutout) {
        image.data[j] = source[j]; image.data[j + 1] = source[j + 1]; image.data[j + 2] = source[j + 2];
        image.data[j + 3] = mask[i] ? 255 : 0;
      } else {
        image.data[j] = image.data[j + 1] = image.data[j + 2] = mask[i] ? 255 : 0;
        image.data[j + 3] = 255;
      }
    }
    outContext.putImageData(image, 0, 0);
    return out;
  }

  const actions = {
    text: serverText,
    undo: () => {
      if (!state.history.length) return;
      const last = state.history.pop();
      state.points = last.points; state.box = last.box;
      update(performance.now());
    },
    reset: () => {
      state.points = []; state.box = null; state.history = []; state.everything = null; state.coco = null;
      setResult([], []); draw();
    },
    mask: async () => (await maskCanvas(false))?.toBlob((blob) => download('mask.png', blob), 'image/png'),
    cutout: async () => (await maskCanvas(true))?.toBlob((blob) => download('cutout.png', blob), 'image/png'),
    coco: () => state.coco && download('masks_coco_rle.json', new Blob([state.coco], { type: 'application/json' })),
  };
  root.querySelectorAll('[data-action]').forEach((button) => button.addEventListener('click', () => actions[button.dataset.action]()));
  api.maskCanvas = maskCanvas;

  // ---- what the server sends ----
  async function receive(value) {
    if (!value || value.serial === state.serial) return;
    state.serial = value.serial;
    state.ready = false; root.dataset.ready = 'false'; // until this answer is drawn (and the decoder warmed up)
    if (!value.image) { state.image = null; state.key = null; root.classList.remove('sam-loaded'); return; }
    if (value.image.src) await newImage(value);
    if (value.decoder && value.decoder !== state.decoderUrl) {
      state.decoderUrl = value.decoder; state.browser = false;
      try {
        const started = performance.now();
        state.session = await loadSession(value.decoder);
        state.browser = true;
        state.stats.decoderLoadMs = performance.now() - started;
      } catch (error) {
        console.warn('sam_hf: decoding on the server:', error);
      }
    }
    state.where = state.browser ? 'browser' : 'server';
    root.dataset.where = state.where;
    if (value.result) await serverResult(value.result);
    draw();
  }

  async function newImage(value) {
    const started = performance.now();
    state.key = value.image.key;
    state.width = value.image.width; state.height = value.image.height; state.original = value.image.original;
    state.image = await loadImage(value.image.src);
    state.pixels = await pixelsOf(value.image.src, state.width, state.height);
    view.width = state.width; view.height = state.height;
    const { data, shape, dtype, input_size: inputSize, model_size: modelSize, hq_token: hq } = value.embedding;
    state.modelSize = modelSize; state.hq = hq; state.taps = null; state.pixelsSrc = value.image.pixels_src || null;
    const bytes = decodeBase64(data);
    const floats = dtype === 'float16' ? halfToFloat(new Uint16Array(bytes.buffer)) : new Float32Array(bytes.buffer);
    state.inputSize = inputSize;
    state.embeddingData = floats;
    state.embedding = null;
    state.stats.embeddingBytes = bytes.length; state.stats.embeddingBase64Chars = data.length;
    state.stats.embeddingDecodeMs = performance.now() - started;
    state.embeddingShape = shape;
    state.points = []; state.box = null; state.history = []; state.everything = null; state.coco = null;
    state.hover = null; setResult([], []);
    root.classList.add('sam-loaded');
    if (typeof WebAssembly === 'object' && ortModule) state.embedding = new ortModule.Tensor('float32', floats, shape);
  }

  async function serverResult(result) {
    if (state.session && !state.embedding) state.embedding = new ortModule.Tensor('float32', state.embeddingData, state.embeddingShape);
    if (result.kind === 'clear') { setResult([], []); return; }
    if (result.kind === 'everything') {
      const rgba = await pixelsOf(result.labels, state.width, state.height), labels = new Uint16Array(state.width * state.height);
      for (let i = 0; i < labels.length; i++) labels[i] = rgba[4 * i] + 256 * rgba[4 * i + 1];
      state.points = []; state.box = null; state.history = [];
      state.everything = { labels, scores: result.scores }; state.coco = result.coco;
      setResult([], []);
      status.textContent = result.status.replace(/\*\*/g, '');
      return;
    }
    const masks = [];
    for (const src of result.masks) {
      const rgba = await pixelsOf(src, state.width, state.height), mask = new Uint8Array(state.width * state.height);
      for (let i = 0; i < mask.length; i++) mask[i] = rgba[4 * i] > 127 ? 1 : 0;
      masks.push(mask);
    }
    setResult(masks, result.scores, result.score_name, [], result.full || []);
    state.selected = result.selected;
    showCandidates();
    status.textContent = result.status.replace(/\*\*/g, '');
  }

  // The embedding tensor needs the onnxruntime module: made once both have arrived.
  const receiveAll = async (value) => {
    await receive(value);
    if (state.session && state.embeddingData && !state.embedding) {
      state.embedding = new ortModule.Tensor('float32', state.embeddingData, state.embeddingShape);
    }
    if (state.browser && state.embedding && !state.warm) { // the first run sets up the session: not on a click
      const started = performance.now();
      await decodePrompt({ points: [[0, 0, 1]], box: null });
      state.warm = true; state.stats.firstDecodeMs = performance.now() - started;
    }
    state.ready = true;
    root.dataset.ready = 'true';
  };
  let queue = Promise.resolve(); // one answer at a time, in the order they came
  const enqueue = (value) => { queue = queue.then(() => receiveAll(value)).catch((error) => console.error(error)); };
  watch('value', () => { attach(); enqueue(props.value); });
  enqueue(props.value);
}
