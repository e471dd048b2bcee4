// The smartseg playground: submit a job, wait for it, draw each mask over the image.
//
// Rules this file keeps:
// - The API key lives in sessionStorage (this tab only) and travels only in the Authorization header.
// - Every request goes to this origin (the page's CSP says so): masks are read through
//   GET /v1/segmentations/{id}/outputs/{index}, not from the presigned storage URLs (another origin,
//   no CORS, so their pixels could not be read).
// - Local images (samples, uploads) are sent as data: URLs: the worker cannot fetch this API's own
//   loopback address.

const KEY_ITEM = "smartseg.apiKey";
const SAMPLE_JOBS_ITEM = "smartseg.sampleJobs"; // job id -> sample file, to show the image again later
const WAIT_S = 30;
const MAX_PROMPTS = 16;
const RECENT_LIMIT = 10;
const REGIONS_EVERY_MS = 15000;
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const MASK_ALPHA = 110; // fill opacity of a mask (of 255); its edge is drawn opaque
// Saturated and far apart in hue, so a mask stands out on most photos and from its neighbours.
const PALETTE = [
  [0, 190, 255], [255, 196, 0], [255, 64, 160], [60, 220, 90], [150, 100, 255],
  [255, 120, 40], [0, 170, 150], [235, 60, 60], [140, 200, 255], [200, 210, 60],
];

const $ = (id) => document.getElementById(id);
const state = {
  source: "sample",
  samples: [],
  currentJob: null,
  polling: null, // the job id being waited on
  imageByJob: new Map(), // job id -> image URL shown under its masks (this page's session)
  sampleImages: new Map(), // sample file -> {blob, url}: the bytes to send, the blob: URL to show
  uploadUrl: null, // blob: URL of the chosen file
};

class ApiError extends Error {
  constructor(status, code, message, details, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter;
  }
}

// ---- the API ------------------------------------------------------------------------------------------

function apiKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

async function api(path, { method = "GET", body, headers = {} } = {}) {
  const key = apiKey();
  if (!key) throw new ApiError(0, "no_key", "Enter an API key first.");
  const init = {
    method,
    headers: { ...headers, Authorization: `Bearer ${key}` },
    cache: "no-store",
    credentials: "omit",
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.ok) return response;
  let error = { code: `http_${response.status}`, message: response.statusText };
  try {
    error = (await response.json()).error || error;
  } catch {
    // not an error body: keep the status line
  }
  throw new ApiError(response.status, error.code, error.message, error.details, response.headers.get("Retry-After"));
}

async function apiJson(path, options) {
  return (await api(path, options)).json();
}

function describe(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  if (error.code === "no_key") return error.message;
  let text = `${error.status} ${error.code}: ${error.message}`;
  const problems = error.details && error.details.errors;
  if (Array.isArray(problems)) text += ` (${problems.map((p) => `${p.loc.join(".")}: ${p.message}`).join("; ")})`;
  if (error.retryAfter) text += ` Try again in ${error.retryAfter} s.`;
  return text;
}

// ---- small DOM helpers ---------------------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

function setStatus(text, kind = "") {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${kind}`;
}

function colorOf(index) {
  return PALETTE[index % PALETTE.length];
}

function css([r, g, b]) {
  return `rgb(${r}, ${g}, ${b})`;
}

function shortId(id) {
  return id.length > 16 ? `${id.slice(0, 12)}…` : id;
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function readAsDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// ---- the key ------------------------------------------------------------------------------------------

function showKeyState() {
  const hasKey = Boolean(apiKey());
  $("key-state").textContent = hasKey ? "Key set for this tab." : "No key yet: it is kept in this tab only.";
  $("key-forget").hidden = !hasKey;
}

function useKey(event) {
  event.preventDefault();
  const input = $("api-key");
  const key = input.value.trim();
  input.value = ""; // the key stays out of the DOM once stored
  if (!key) return;
  sessionStorage.setItem(KEY_ITEM, key);
  showKeyState();
  refreshAll();
}

function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
  showKeyState();
  $("regions").replaceChildren(el("li", { class: "muted" }, "Enter a key to see regions."));
  $("recent").replaceChildren(el("li", { class: "muted" }, "Enter a key to see your jobs."));
}

// ---- image source: sample, upload or URL ---------------------------------------------------------------

function chooseSource(source) {
  state.source = source;
  for (const tab of document.querySelectorAll("[data-source]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.source === source));
  }
  for (const pane of document.querySelectorAll("[data-pane]")) pane.hidden = pane.dataset.pane !== source;
  previewSource();
}

async function loadSamples() {
  const select = $("sample");
  try {
    const response = await fetch("samples/index.json", { cache: "no-cache", credentials: "omit" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    state.samples = (await response.json()).samples || [];
  } catch (error) {
    state.samples = [];
    $("sample-note").textContent = `No samples here (${error.message}): upload an image or give a URL.`;
  }
  select.replaceChildren(...state.samples.map((sample, index) => el("option", { value: String(index) }, sample.title || sample.name)));
  if (state.samples.length) showSample(true);
}

function currentSample() {
  return state.samples[Number($("sample").value)] || null;
}

function showSample(fillPrompt) {
  const sample = currentSample();
  if (!sample) return;
  $("sample-note").textContent = `${sample.width}×${sample.height} · ${sample.licence || "no licence given"}`;
  $("sample-prompts").replaceChildren(
    ...(sample.prompts || []).map((prompt) =>
      el("button", { type: "button", class: "chip", title: "Use this prompt", onclick: () => setPrompts(prompt) }, prompt),
    ),
  );
  if (fillPrompt && sample.prompts && sample.prompts.length) setPrompts(sample.prompts[0]);
  previewSource();
}

function setPrompts(text) {
  $("prompts").value = text;
  $("prompts").focus();
}

async function sampleImage(sample) {
  let image = state.sampleImages.get(sample.file);
  if (!image) {
    const response = await fetch(`samples/${encodeURIComponent(sample.file)}`, { credentials: "omit" });
    if (!response.ok) throw new Error(`sample ${sample.file}: HTTP ${response.status}`);
    const blob = await response.blob();
    image = { blob, url: URL.createObjectURL(blob) };
    state.sampleImages.set(sample.file, image);
  }
  return image;
}

// Shows what would be sent, before any job: the sample, the upload or the URL.
async function previewSource() {
  let src = null;
  try {
    if (state.source === "sample" && currentSample()) src = (await sampleImage(currentSample())).url;
    else if (state.source === "upload") src = state.uploadUrl;
    else if (state.source === "url" && /^https?:\/\//i.test($("image-url").value.trim())) src = $("image-url").value.trim();
  } catch (error) {
    setStatus(describe(error), "error");
  }
  if (state.polling) return; // a job is on the stage
  clearResult();
  showImage(src, null);
}

function chooseUpload() {
  // Earlier jobs of this tab may still show the previous file: its URL is kept (freed with the page).
  const file = $("upload").files[0];
  state.uploadUrl = file ? URL.createObjectURL(file) : null;
  previewSource();
}

async function imageUrlForRequest() {
  if (state.source === "url") {
    const url = $("image-url").value.trim();
    if (!url) throw new Error("Give an image URL.");
    return { imageUrl: url, shown: url, sampleFile: null };
  }
  if (state.source === "upload") {
    const file = $("upload").files[0];
    if (!file) throw new Error("Choose an image file.");
    return { imageUrl: await readAsDataUrl(file), shown: state.uploadUrl, sampleFile: null };
  }
  const sample = currentSample();
  if (!sample) throw new Error("No sample to send: upload an image or give a URL.");
  const image = await sampleImage(sample);
  return { imageUrl: await readAsDataUrl(image.blob), shown: image.url, sampleFile: sample.file };
}

function readPrompts() {
  const prompts = $("prompts").value.split("\n").map((line) => line.trim()).filter(Boolean);
  if (!prompts.length) throw new Error("Type a prompt.");
  if (prompts.length > MAX_PROMPTS) throw new Error(`At most ${MAX_PROMPTS} prompts, one per line.`);
  return prompts;
}

function readOptions() {
  const number = (id) => Number($(id).value);
  const options = {
    box_threshold: number("box-threshold"),
    text_threshold: number("text-threshold"),
    max_masks: Math.round(number("max-masks")),
    output_format: $("output-format").value,
  };
  if ($("pipeline").value) options.pipeline = $("pipeline").value;
  return options;
}

// ---- submit and wait -------------------------------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  const button = $("submit");
  let request;
  try {
    const prompts = readPrompts();
    const options = readOptions();
    if (!apiKey()) throw new ApiError(0, "no_key", "Enter an API key first.");
    button.disabled = true;
    setStatus("Preparing the image…");
    request = await imageUrlForRequest();
    const body = { image_url: request.imageUrl, options };
    if (prompts.length === 1) body.prompt = prompts[0];
    else body.prompts = prompts;
    setStatus("Submitting…");
    const job = await apiJson("v1/segmentations", { method: "POST", body, headers: { Prefer: `wait=${WAIT_S}` } });
    state.imageByJob.set(job.id, request.shown);
    if (request.sampleFile) rememberSampleJob(job.id, request.sampleFile);
    await follow(job);
  } catch (error) {
    setStatus(describe(error), "error");
  } finally {
    button.disabled = false;
  }
}

// Waits for ``job`` to end (long polls of up to WAIT_S each), showing it as it goes.
async function follow(job) {
  state.polling = job.id;
  $("cancel").hidden = false;
  try {
    if (!TERMINAL.has(job.status)) await showJob(job, false);
    while (!TERMINAL.has(job.status) && state.polling === job.id) {
      setStatus(`${job.status} in ${job.region}… (${shortId(job.id)})`);
      job = await apiJson(`v1/segmentations/${encodeURIComponent(job.id)}`, { headers: { Prefer: `wait=${WAIT_S}` } });
    }
    if (state.polling !== job.id) return; // another job took the stage
    await showJob(job, true);
    refreshRecent();
  } finally {
    if (state.polling === job.id) {
      state.polling = null;
      $("cancel").hidden = true;
    }
  }
}

async function cancelJob() {
  const id = state.polling;
  if (!id) return;
  try {
    await api(`v1/segmentations/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    setStatus("Cancel requested…");
  } catch (error) {
    setStatus(describe(error), "error");
  }
}

async function loadJob(id) {
  try {
    state.polling = null;
    setStatus(`Loading ${shortId(id)}…`);
    const job = await apiJson(`v1/segmentations/${encodeURIComponent(id)}`);
    if (TERMINAL.has(job.status)) await showJob(job, true);
    else await follow(job);
  } catch (error) {
    setStatus(describe(error), "error");
  }
}

function rememberSampleJob(jobId, file) {
  const known = JSON.parse(sessionStorage.getItem(SAMPLE_JOBS_ITEM) || "{}");
  known[jobId] = file;
  const ids = Object.keys(known);
  for (const old of ids.slice(0, Math.max(0, ids.length - 50))) delete known[old];
  sessionStorage.setItem(SAMPLE_JOBS_ITEM, JSON.stringify(known));
}

// The image under a job's masks: the one sent from this tab, a sample, the URL, or none (a data: URL the
// API only echoes the head of).
async function jobImage(job) {
  if (state.imageByJob.has(job.id)) return state.imageByJob.get(job.id);
  const file = JSON.parse(sessionStorage.getItem(SAMPLE_JOBS_ITEM) || "{}")[job.id];
  const sample = state.samples.find((candidate) => candidate.file === file);
  if (sample) return (await sampleImage(sample)).url;
  if (/^https?:\/\//i.test(job.input.image_url)) return job.input.image_url;
  return null;
}

// ---- showing a job ---------------------------------------------------------------------------------------

function clearResult() {
  $("overlays").replaceChildren();
  $("outputs").replaceChildren(el("li", { class: "muted" }, "No masks yet."));
  $("prompt-results").replaceChildren(el("li", { class: "muted" }, "No job yet."));
  $("summary").replaceChildren();
  $("stage-note").textContent = "";
  $("stage").dataset.state = "empty";
  delete $("stage").dataset.jobId;
}

function showImage(src, size) {
  const stage = $("stage");
  const image = $("stage-image");
  if (src) {
    image.src = src;
    image.hidden = false;
    stage.classList.remove("blank");
  } else {
    image.removeAttribute("src");
    image.hidden = true;
    stage.classList.toggle("blank", Boolean(size));
  }
  if (size) stage.style.aspectRatio = `${size.width} / ${size.height}`;
  else stage.style.removeProperty("aspect-ratio");
}

async function showJob(job, finished) {
  state.currentJob = job;
  const stage = $("stage");
  stage.dataset.jobId = job.id;
  stage.dataset.state = finished ? "drawing" : "waiting";
  const first = job.outputs[0];
  const src = await jobImage(job);
  if (state.currentJob !== job) return; // another job took the stage meanwhile
  showImage(src, first ? { width: first.width, height: first.height } : null);
  $("stage-note").textContent = src || !first ? "" : "The image went in as a data: URL, which the API does not keep: masks only.";
  showSummary(job);
  showPromptResults(job);
  $("overlays").replaceChildren();
  $("outputs").replaceChildren();
  if (!finished) {
    $("outputs").append(el("li", { class: "muted" }, "Waiting for the job…"));
    return;
  }
  if (job.status === "succeeded") setStatus(`Done: ${job.outputs.length} mask(s) in ${job.metrics.total_s ?? "?"} s.`, "ok");
  else if (job.status === "failed") setStatus(`Failed: ${job.error ? `${job.error.code}: ${job.error.message}` : "no error given"}`, "error");
  else setStatus(`Job ${job.status}.`);
  if (!job.outputs.length) {
    $("outputs").append(el("li", { class: "muted" }, job.status === "succeeded" ? "No masks: nothing matched." : "No masks."));
  }
  // Drawn one by one in order; each mask is its own canvas, so each can be hidden or read on its own.
  for (const [index, output] of job.outputs.entries()) {
    if (state.currentJob !== job) return;
    try {
      await showOutput(job, index, output);
    } catch (error) {
      $("outputs").append(el("li", { class: "error" }, `Mask ${index}: ${describe(error)}`));
    }
  }
  if (state.currentJob === job) stage.dataset.state = "ready";
}

function showSummary(job) {
  const options = job.input.options || {};
  const rows = [
    ["Job", job.id],
    ["Status", job.status + (job.result ? ` (${job.result.replace("_", " ")})` : "")],
    ["Region", `${job.region}${job.attempts > 1 ? `, attempt ${job.attempts}` : ""}`],
    ["Pipeline", `${options.pipeline || "default"} · ${options.output_format || "png"}`],
    ["Time", job.metrics && job.metrics.total_s != null ? `${job.metrics.total_s} s` : "–"],
    ["Billing", job.billing ? `${job.billing.billed ? `USD ${job.billing.amount_usd}` : "not billed"} (${job.billing.reason})` : "–"],
  ];
  $("summary").replaceChildren(...rows.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
}

function showPromptResults(job) {
  const list = $("prompt-results");
  if (!job.prompt_results.length) {
    list.replaceChildren(
      ...job.input.prompts.map((prompt) => el("li", {}, el("span", { class: "prompt" }, prompt), el("span", { class: "muted" }, ` · ${job.status}`))),
    );
    return;
  }
  list.replaceChildren(
    ...job.prompt_results.map((result) =>
      result.result === "no_match"
        ? el("li", { class: "no-match" }, el("span", { class: "prompt" }, result.prompt), " · no match: nothing in the image fits this prompt")
        : el("li", {}, el("span", { class: "prompt" }, result.prompt), ` · ${result.masks} mask${result.masks === 1 ? "" : "s"}`),
    ),
  );
}

async function showOutput(job, index, output) {
  const response = await api(`v1/segmentations/${encodeURIComponent(job.id)}/outputs/${index}`);
  const file = await response.blob();
  const mask = await decodeMask(file, output, job.input.options.output_format);
  const color = colorOf(index);
  const canvas = maskCanvas(mask, output.width, output.height, color);
  canvas.dataset.output = String(index);
  const box = boxOverlay(output, color, index);
  $("overlays").append(canvas, box);

  const toggle = el("input", { type: "checkbox", checked: true, "aria-label": `Show mask ${index}` });
  toggle.addEventListener("change", () => {
    canvas.hidden = !toggle.checked;
    box.hidden = !toggle.checked;
  });
  const swatch = el("span", { class: "swatch" });
  swatch.style.background = css(color);
  const [x0, y0, x1, y1] = output.box;
  $("outputs").append(
    el(
      "li",
      { dataset: { output: String(index) } },
      el("label", { class: "mask-toggle" }, toggle, swatch, el("strong", {}, output.label)),
      el("span", { class: "muted" }, ` for “${output.prompt}”`),
      el(
        "div",
        { class: "facts" },
        `score ${output.score.toFixed(3)} · box [${x0}, ${y0}, ${x1}, ${y1}] · ${output.area.toLocaleString()} px · ${output.model}`,
      ),
      el(
        "div",
        { class: "downloads" },
        el("button", { type: "button", onclick: () => saveBlob(file, output.filename) }, output.filename),
        el("button", { type: "button", onclick: () => downloadPng(mask, output) }, "PNG"),
        el("button", { type: "button", onclick: () => downloadRle(mask, output) }, "RLE"),
      ),
    ),
  );
}

function boxOverlay(output, color, index) {
  const [x0, y0, x1, y1] = output.box;
  const box = el("div", { class: "box", dataset: { output: String(index) } }, el("span", { class: "tag" }, `${output.label} ${output.score.toFixed(2)}`));
  // CSSOM, not a style attribute: allowed under the page's style-src 'self'.
  box.style.left = `${(100 * x0) / output.width}%`;
  box.style.top = `${(100 * y0) / output.height}%`;
  box.style.width = `${(100 * (x1 - x0)) / output.width}%`;
  box.style.height = `${(100 * (y1 - y0)) / output.height}%`;
  box.style.borderColor = css(color);
  box.firstChild.style.background = css(color);
  // Keep the label inside the stage: under the top edge of a box at the top, right-aligned near the right.
  box.classList.toggle("tag-inside", y0 / output.height < 0.08);
  box.classList.toggle("tag-right", x0 / output.width > 0.7);
  box.hidden = !$("show-boxes").checked;
  return box;
}

// ---- masks: decode any output format to one byte per pixel (1 inside) ------------------------------------

async function decodeMask(blob, output, format) {
  const { width, height } = output;
  if (blob.type.startsWith("image/")) {
    // png: 8-bit grey, 255 inside; cutout: RGBA with the mask as alpha.
    const pixels = await imagePixels(blob, width, height);
    const channel = format === "cutout" ? 3 : 0;
    const mask = new Uint8Array(width * height);
    for (let i = 0; i < mask.length; i++) mask[i] = pixels[4 * i + channel] > 127 ? 1 : 0;
    return mask;
  }
  const document_ = JSON.parse(await blob.text());
  if (document_.counts !== undefined) return rleDecode(document_, width, height);
  if (document_.polygons !== undefined) return polygonMask(document_, width, height);
  throw new Error("unknown mask file");
}

async function imagePixels(blob, width, height) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  return context.getImageData(0, 0, width, height).data;
}

// COCO compressed RLE (pycocotools' rleFrString), column-major runs starting with zeros.
function rleCounts(text) {
  const counts = [];
  let position = 0;
  while (position < text.length) {
    let value = 0;
    let shift = 0;
    let more = true;
    while (more) {
      const code = text.charCodeAt(position++) - 48;
      value |= (code & 0x1f) << shift;
      shift += 5;
      more = (code & 0x20) !== 0;
      if (!more && code & 0x10) value |= -1 << shift;
    }
    if (counts.length > 2) value += counts[counts.length - 2];
    counts.push(value);
  }
  return counts;
}

function rleDecode(rle, width, height) {
  const counts = typeof rle.counts === "string" ? rleCounts(rle.counts) : rle.counts;
  const mask = new Uint8Array(width * height);
  let index = 0;
  counts.forEach((count, run) => {
    if (run % 2 === 1) {
      for (let i = index; i < index + count; i++) mask[(i % height) * width + Math.floor(i / height)] = 1;
    }
    index += count;
  });
  return mask;
}

// pycocotools' rleToString: counts delta-coded from the fourth on, 5-bit groups with a continuation bit.
function rleEncode(mask, width, height) {
  const counts = [];
  let previous = 0;
  let run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const value = mask[y * width + x];
      if (value !== previous) {
        counts.push(run);
        run = 0;
        previous = value;
      }
      run++;
    }
  }
  counts.push(run);
  let text = "";
  counts.forEach((count, i) => {
    let value = i > 2 ? count - counts[i - 2] : count;
    let more = true;
    while (more) {
      let code = value & 0x1f;
      value >>= 5;
      more = code & 0x10 ? value !== -1 : value !== 0;
      if (more) code |= 0x20;
      text += String.fromCharCode(code + 48);
    }
  });
  return { size: [height, width], counts: text };
}

// Pixel-edge polygons: filling them (pixel centres sampled) gives the mask back.
function polygonMask(document_, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const path = new Path2D();
  for (const polygon of document_.polygons) {
    for (const ring of [polygon.exterior, ...polygon.holes]) {
      ring.forEach(([x, y], i) => (i ? path.lineTo(x, y) : path.moveTo(x, y)));
      path.closePath();
    }
  }
  context.fill(path, "evenodd");
  const pixels = context.getImageData(0, 0, width, height).data;
  const mask = new Uint8Array(width * height);
  for (let i = 0; i < mask.length; i++) mask[i] = pixels[4 * i + 3] > 127 ? 1 : 0;
  return mask;
}

// The mask in its colour: a translucent fill and an opaque edge, transparent everywhere else.
function maskCanvas(mask, width, height, [r, g, b]) {
  const canvas = el("canvas", { class: "mask", width, height });
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const data = image.data;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (!mask[i]) continue;
      const edge = x === 0 || y === 0 || x === width - 1 || y === height - 1 ||
        !mask[i - 1] || !mask[i + 1] || !mask[i - width] || !mask[i + width];
      data[4 * i] = r;
      data[4 * i + 1] = g;
      data[4 * i + 2] = b;
      data[4 * i + 3] = edge ? 255 : MASK_ALPHA;
    }
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

function maskStem(output) {
  return output.filename.replace(/\.(cutout\.png|rle\.json|polygon\.json|png)$/, "");
}

async function downloadPng(mask, output) {
  const levels = mask.map((inside) => (inside ? 255 : 0));
  saveBlob(await greyPng(levels, output.width, output.height), `${maskStem(output)}.png`);
}

// An 8-bit greyscale PNG, as the API's png outputs are (a canvas can only write RGBA).
async function greyPng(levels, width, height) {
  const rows = new Uint8Array((width + 1) * height); // each row: filter type 0, then its pixels
  for (let y = 0; y < height; y++) rows.set(levels.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  const zlib = new Uint8Array(await new Response(new Blob([rows]).stream().pipeThrough(new CompressionStream("deflate"))).arrayBuffer());
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, width);
  view.setUint32(4, height);
  header.set([8, 0, 0, 0, 0], 8); // bit depth 8, greyscale, deflate, no filter method, no interlace
  const signature = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);
  return new Blob([signature, pngChunk("IHDR", header), pngChunk("IDAT", zlib), pngChunk("IEND", new Uint8Array())], { type: "image/png" });
}

function pngChunk(type, data) {
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) chunk[4 + i] = type.charCodeAt(i);
  chunk.set(data, 8);
  view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
  return chunk;
}

let crcTable = null;

function crc32(bytes) {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const byte of bytes) crc = crcTable[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function downloadRle(mask, output) {
  const rle = rleEncode(mask, output.width, output.height);
  saveBlob(new Blob([JSON.stringify(rle)], { type: "application/json" }), `${maskStem(output)}.rle.json`);
}

// ---- regions, pipelines and recent jobs ------------------------------------------------------------------

async function refreshRegions() {
  const list = $("regions");
  if (!apiKey()) return;
  try {
    const regions = (await apiJson("v1/regions")).data;
    list.replaceChildren(
      ...regions.map((region) =>
        el(
          "li",
          { class: region.healthy ? "healthy" : "down" },
          el("span", { class: "dot", title: region.healthy ? "healthy" : "no live worker" }),
          el("strong", {}, region.region),
          el(
            "div",
            { class: "facts" },
            `${region.live_workers} worker${region.live_workers === 1 ? "" : "s"} · ${region.running} busy · ` +
              `${region.queued_interactive} queued${region.queued_batch ? ` + ${region.queued_batch} batch` : ""}`,
          ),
          el("div", { class: "facts muted" }, region.pipelines.length ? region.pipelines.join(", ") : "no pipelines served"),
        ),
      ),
    );
    await fillPipelines(regions);
  } catch (error) {
    list.replaceChildren(el("li", { class: "error" }, describe(error)));
  }
}

// Pipelines served by a live worker somewhere; without any, the ones the OpenAPI document names.
async function fillPipelines(regions) {
  let names = [...new Set(regions.flatMap((region) => region.pipelines))].sort();
  if (!names.length) {
    try {
      const document_ = await (await fetch("openapi.json", { credentials: "omit" })).json();
      const field = document_.components.schemas.SegmentationOptions.properties.pipeline;
      names = (field.anyOf || [field]).flatMap((branch) => branch.enum || []);
    } catch {
      names = [];
    }
  }
  const select = $("pipeline");
  const chosen = select.value;
  if (!names.length || [...select.options].map((option) => option.value).join() === names.join()) return;
  select.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  select.value = names.includes(chosen) ? chosen : names.includes("lite") ? "lite" : names[0] || "";
}

async function refreshRecent() {
  const list = $("recent");
  if (!apiKey()) return;
  try {
    const jobs = (await apiJson(`v1/segmentations?limit=${RECENT_LIMIT}`)).data;
    if (!jobs.length) {
      list.replaceChildren(el("li", { class: "muted" }, "No jobs yet."));
      return;
    }
    list.replaceChildren(
      ...jobs.map((job) =>
        el(
          "li",
          {},
          el(
            "button",
            { type: "button", class: "job", title: job.id, dataset: { jobId: job.id }, onclick: () => loadJob(job.id) },
            el("span", { class: `badge ${job.status}` }, job.status),
            el("span", { class: "job-prompts" }, job.input.prompts.join(", ")),
            el("span", { class: "muted small" }, `${shortId(job.id)} · ${new Date(job.created_at).toLocaleTimeString()}`),
          ),
        ),
      ),
    );
  } catch (error) {
    list.replaceChildren(el("li", { class: "error" }, describe(error)));
  }
}

function refreshAll() {
  refreshRegions();
  refreshRecent();
}

// ---- wiring -----------------------------------------------------------------------------------------------

function start() {
  $("key-form").addEventListener("submit", useKey);
  $("key-forget").addEventListener("click", forgetKey);
  $("job-form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancelJob);
  $("regions-refresh").addEventListener("click", refreshRegions);
  $("recent-refresh").addEventListener("click", refreshRecent);
  $("sample").addEventListener("change", () => showSample(true));
  $("upload").addEventListener("change", chooseUpload);
  $("image-url").addEventListener("change", previewSource);
  $("show-boxes").addEventListener("change", (event) => {
    for (const box of document.querySelectorAll("#overlays .box")) {
      const shown = document.querySelector(`#outputs li[data-output="${box.dataset.output}"] input`);
      box.hidden = !event.target.checked || (shown && !shown.checked);
    }
  });
  for (const tab of document.querySelectorAll("[data-source]")) {
    tab.addEventListener("click", () => chooseSource(tab.dataset.source));
  }
  showKeyState();
  loadSamples();
  refreshAll();
  setInterval(() => {
    if (document.visibilityState === "visible") refreshRegions();
  }, REGIONS_EVERY_MS);
}

start();
