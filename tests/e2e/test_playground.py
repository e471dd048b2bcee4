"""The playground (``/``) and the docs pages (``/docs``, ``/redoc``) in a real browser against the running
stack: Debian's Chromium driven by Playwright, under the pages' real Content-Security-Policy.

The playground is used as a person would: key, sample, prompt, submit. Then the masks it drew are read
back from its canvases and held against the sample's truth and the API's own files, and every request
the page made is searched for the key."""

from __future__ import annotations

import base64
import http.client
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, expect, sync_playwright
from scipy import ndimage

from smartseg.api.pages import PAGE_CSP, PLAYGROUND_CSP, REDOC_CSP
from smartseg.shared.mask_encoding import encode_rle
from smartseg.testing.sample_images import sample_truth
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
JOB_TIMEOUT_MS = 60_000
# Drawn pixels may reach this far past the truth (antialiased edges), and must cover this share of it.
EDGE_PX = 2
MIN_COVERED = 0.95
# ReDoc's side menu always shows this logo from Redocly's CDN; the page's CSP blocks it before any request
# leaves the browser (ReDoc then hides the image). The one CSP violation these pages are allowed.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
CSP_BLOCKED = {"csp", "net::ERR_BLOCKED_BY_CSP"}  # how Chromium words a request its CSP stopped

# Each mask canvas as one byte per pixel (1: drawn), base64, with its output index and size.
READ_MASK_CANVASES = """() => [...document.querySelectorAll("#overlays canvas.mask")].map((canvas) => {
  const rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const drawn = new Uint8Array(canvas.width * canvas.height);
  for (let i = 0; i < drawn.length; i++) drawn[i] = rgba[4 * i + 3] > 0 ? 1 : 0;
  let text = "";
  for (let i = 0; i < drawn.length; i += 8192) text += String.fromCharCode(...drawn.subarray(i, i + 8192));
  const index = Number(canvas.dataset.output);
  return {index, width: canvas.width, height: canvas.height, drawn: btoa(text)};
})"""


@dataclass
class PageLog:
    """What a page did: its requests (and those that failed, why), console messages and uncaught errors."""

    requests: list[Request] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    console: list[ConsoleMessage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, page: Page) -> PageLog:
        log = cls()
        page.on("request", lambda request: log.requests.append(request))
        page.on("requestfailed", lambda request: log.failed.setdefault(request.url, request.failure or ""))
        page.on("console", lambda message: log.console.append(message))
        page.on("pageerror", lambda error: log.errors.append(str(error)))
        return log

    def csp_violations(self) -> list[str]:
        return [message.text for message in self.console if "Content Security Policy" in message.text]

    def left_the_machine(self) -> list[str]:
        """Requests to any host but this one that the browser did not block itself."""
        return [
            request.url
            for request in self.requests
            if urlsplit(request.url).scheme in ("http", "https")
            and urlsplit(request.url).hostname not in LOOPBACK_HOSTS
            and self.failed.get(request.url) not in CSP_BLOCKED
        ]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (`make chromium`)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


def api_mask(base_url: str, api_key: str, job_id: str, index: int) -> np.ndarray:
    """An output's PNG mask as the API stores it."""
    response = httpx.get(
        f"{base_url}/v1/segmentations/{job_id}/outputs/{index}",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    response.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(response.content))) > 127


def drawn_masks(page: Page) -> dict[int, np.ndarray]:
    masks = {}
    for canvas in page.evaluate(READ_MASK_CANVASES):
        drawn = np.frombuffer(base64.b64decode(canvas["drawn"]), dtype=np.uint8)
        masks[canvas["index"]] = drawn.reshape(canvas["height"], canvas["width"]).astype(bool)
    return masks


def downloaded(page: Page, button: str) -> bytes:
    with page.expect_download() as started:
        page.click(button)
    return Path(started.value.path()).read_bytes()


def assert_key_only_in_authorization(log: PageLog, api_key: str) -> None:
    authorized = 0
    for request in log.requests:
        assert api_key not in request.url, request.url
        assert api_key not in (request.post_data or ""), f"{request.method} {request.url}: key in the body"
        for name, value in request.all_headers().items():
            if name == "authorization":
                assert value == f"Bearer {api_key}", request.url
                assert urlsplit(request.url).path.startswith("/v1/"), request.url
                authorized += 1
            else:
                assert api_key not in value, f"{request.url}: key in the {name} header"
    assert authorized, "the page never sent the key"


def test_the_playground_segments_a_sample_and_keeps_the_key_to_itself(
    browser: Browser, running_stack: RunningStack
) -> None:
    base_url, api_key = running_stack.stack.api_url, running_stack.api_key
    samples = httpx.get(f"{base_url}/samples/index.json").json()["samples"]
    sample = samples[0]
    prompt = sample["prompts"][0]
    truth = sample_truth(sample["name"], prompt)
    assert truth is not None, "a sample's first prompt names something in it"

    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    log = PageLog.of(page)
    response = page.goto(f"{base_url}/")
    assert response is not None
    assert response.headers["content-security-policy"] == PLAYGROUND_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"

    page.fill("#api-key", api_key)
    page.click("#key-form button[type=submit]")
    page.select_option("#sample", str(samples.index(sample)))
    expect(page.locator("#prompts")).to_have_value(prompt)  # picking a sample fills in its first prompt
    expect(page.locator("#pipeline")).to_have_value("lite")  # filled from GET /v1/regions
    page.click("#submit")
    page.wait_for_selector("#stage[data-state=ready]", timeout=JOB_TIMEOUT_MS)
    job_id = page.get_attribute("#stage", "data-job-id")
    assert job_id

    # The masks drawn: each exactly the API's file, together where the object is and nowhere else.
    masks = drawn_masks(page)
    assert masks and sorted(masks) == list(range(len(masks)))
    for index, mask in masks.items():
        assert np.array_equal(mask, api_mask(base_url, api_key, job_id, index)), f"mask {index}"
    drawn = np.logical_or.reduce(list(masks.values()))
    assert drawn.shape == truth.shape
    outside = drawn & ~ndimage.binary_dilation(truth, iterations=EDGE_PX)
    assert not outside.any(), f"{int(outside.sum())} px drawn away from {prompt!r}"
    assert (drawn & truth).sum() >= MIN_COVERED * truth.sum()

    expect(page.locator("#prompt-results")).to_contain_text(f"{prompt} · {len(masks)} mask")
    expect(page.locator("#status")).to_contain_text("Done")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "playground.png"), full_page=True)

    # Downloads made in the page from the mask it drew: the PNG and pycocotools' RLE of the API's mask.
    first = api_mask(base_url, api_key, job_id, 0)
    png = downloaded(page, '#outputs li[data-output="0"] button:text-is("PNG")')
    assert Image.open(io.BytesIO(png)).mode == "L"  # 8-bit grey, as the API's png outputs
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))) > 127, first)
    rle = downloaded(page, '#outputs li[data-output="0"] button:text-is("RLE")')
    assert json.loads(rle) == encode_rle(first)

    # Each mask can be hidden on its own, with its box.
    page.uncheck('#outputs li[data-output="0"] input[type=checkbox]')
    expect(page.locator('#overlays canvas[data-output="0"]')).to_be_hidden()
    expect(page.locator('#overlays .box[data-output="0"]')).to_be_hidden()

    # The recent jobs list has this job, and loading it from there draws the same masks again.
    page.click("#recent-refresh")
    page.click(f'#recent button[data-job-id="{job_id}"]')
    expect(page.locator('#overlays canvas[data-output="0"]')).to_be_visible()  # drawn again: shown again
    page.wait_for_selector(f'#stage[data-state=ready][data-job-id="{job_id}"]', timeout=JOB_TIMEOUT_MS)
    again = drawn_masks(page)
    assert again.keys() == masks.keys()
    assert all(np.array_equal(again[index], masks[index]) for index in masks)

    assert_key_only_in_authorization(log, api_key)
    storage: dict[str, Any] = page.evaluate(
        "() => ({local: JSON.stringify({...localStorage}), session: JSON.stringify({...sessionStorage})})"
    )
    assert api_key not in storage["local"]
    assert api_key in storage["session"]  # where it is kept: this tab only
    assert api_key not in page.content()  # the field is emptied once the key is stored
    assert not context.cookies()
    assert not log.left_the_machine()
    assert not log.csp_violations()
    assert not log.errors
    assert not [message.text for message in log.console if message.type == "error"]
    context.close()


def test_every_output_format_draws_the_same_masks(browser: Browser, running_stack: RunningStack) -> None:
    """The page decodes png, rle, polygon and cutout files itself: each must give back the png's pixels."""
    base_url, api_key = running_stack.stack.api_url, running_stack.api_key
    sample = httpx.get(f"{base_url}/samples/index.json").json()["samples"][0]
    prompts = [prompt for prompt in sample["prompts"] if sample_truth(sample["name"], prompt) is not None]
    page = browser.new_page()
    log = PageLog.of(page)
    page.goto(f"{base_url}/")
    page.fill("#api-key", api_key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#pipeline")).to_have_value("lite")
    expect(page.locator("#prompts")).not_to_have_value("")  # the first sample is in, with its prompt
    page.fill("#prompts", "\n".join(prompts[:3]))  # several masks, from several prompts
    drawn: dict[str, dict[int, np.ndarray]] = {}
    for output_format in ("png", "rle", "polygon", "cutout"):
        page.select_option("#output-format", output_format)
        page.click("#submit")
        page.wait_for_selector(f'#summary dd:text-is("lite · {output_format}")', timeout=JOB_TIMEOUT_MS)
        page.wait_for_selector("#stage[data-state=ready]", timeout=JOB_TIMEOUT_MS)
        drawn[output_format] = drawn_masks(page)
    assert len(drawn["png"]) >= 2
    for output_format, masks in drawn.items():
        assert masks.keys() == drawn["png"].keys(), output_format
        for index, mask in masks.items():
            assert np.array_equal(mask, drawn["png"][index]), f"{output_format} mask {index}"
    assert not log.errors and not log.csp_violations()
    page.close()


@pytest.mark.parametrize(
    ("path", "csp", "rendered", "allowed_violations"),
    [
        ("/docs", PAGE_CSP, ".swagger-ui .opblock-summary", set()),
        ("/redoc", REDOC_CSP, 'h2:text-is("Submit a segmentation job")', {REDOC_LOGO}),
    ],
)
def test_the_api_docs_render_offline(
    browser: Browser,
    running_stack: RunningStack,
    path: str,
    csp: str,
    rendered: str,
    allowed_violations: set[str],
) -> None:
    base_url = running_stack.stack.api_url
    page = browser.new_page()
    log = PageLog.of(page)
    response = page.goto(f"{base_url}{path}")
    assert response is not None
    assert response.headers["content-security-policy"] == csp
    page.wait_for_selector(rendered, timeout=30_000)
    expect(page.get_by_text("smartseg").first).to_be_visible()
    page.wait_for_load_state("networkidle")

    assert not log.left_the_machine()
    violations = log.csp_violations()
    assert all(any(allowed in text for allowed in allowed_violations) for text in violations), violations
    assert not log.errors
    page.close()


def test_static_files_stay_in_their_folders(running_stack: RunningStack) -> None:
    base_url = running_stack.stack.api_url
    script = httpx.get(f"{base_url}/static/playground/app.js")
    assert script.status_code == 200
    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-type"].startswith("text/javascript")
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    # Sent as written (an HTTP client would resolve the dots first): the server must not leave the folder.
    for escape in ("/static/../pages.py", "/static/%2e%2e/pages.py", "/samples/../../pyproject.toml"):
        connection = http.client.HTTPConnection(host or "", port, timeout=10)
        connection.request("GET", escape)
        response = connection.getresponse()
        assert response.status == 404, escape
        assert json.loads(response.read())["error"]["code"] == "not_found"
        connection.close()
