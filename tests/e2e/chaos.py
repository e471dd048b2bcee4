"""What the e2e tests share: images served fast and slow, waiting for a job's status or any condition,
billed runs."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from smartseg.api.auth import OWNER_ID_CHARS
from smartseg.cli.launcher import Stack
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.jobstore import JobStore
from smartseg.testing.api_client import JsonClient
from smartseg.testing.image_server import serve_pngs
from smartseg.testing.scenes import generate_scene
from tests.e2e.conftest import RunningStack


@contextmanager
def fast_and_slow_image_urls(seed: int, slow_fetch_s: float) -> Iterator[tuple[str, str]]:
    """URLs of one scene, answered at once and after ``slow_fetch_s`` (to catch a job while it runs)."""
    buffer = io.BytesIO()
    generate_scene(seed=seed).image.save(buffer, format="PNG")
    images = {"fast.png": buffer.getvalue(), "slow.png": buffer.getvalue()}
    with serve_pngs(images, delays_s={"slow.png": slow_fetch_s}) as base:
        yield f"{base}/fast.png", f"{base}/slow.png"


def api_client(stack: RunningStack, api_key: str | None = None) -> httpx.Client:
    """A plain HTTP client of the running stack's API, with a key (the stack's first by default)."""
    headers = {"Authorization": f"Bearer {api_key or stack.api_key}"}
    return httpx.Client(base_url=stack.stack.api_url, headers=headers, timeout=30)


def until(check: Callable[[], bool], timeout_s: float = 120.0, every_s: float = 0.1) -> None:
    """Poll ``check`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every_s)


def wait_for_status(client: JsonClient, job_id: str, status: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get(job_id)["status"] != status and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get(job_id)["status"] == status


def billed_runs(stack: Stack, api_key: str) -> int:
    """How many runs the key's owner has been billed for."""
    return JobStore.from_settings(stack.settings).usage(hash_api_key(api_key)[:OWNER_ID_CHARS])[0]
