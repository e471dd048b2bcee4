"""A real worker holds jobs ahead of its model: their downloads overlap, and a job canceled while it is
held ends canceled, unbilled, without holding up the others. (Killed with jobs ahead: tests/e2e/
test_failover.py; a cancel while waiting for the model itself: tests/unit/test_runner.py.)"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime

import pytest

from smartseg.testing.image_server import serve_pngs
from smartseg.testing.scenes import generate_scene
from tests.e2e.chaos import until, wait_for_status
from tests.e2e.conftest import SERVED_REGIONS, RunningStack

pytestmark = pytest.mark.e2e
SLOW_FETCH_S = 1.5
REGION = SERVED_REGIONS[0]


@pytest.fixture(scope="module")
def slow_image() -> Iterator[str]:
    buffer = io.BytesIO()
    generate_scene(seed=90).image.save(buffer, format="PNG")
    with serve_pngs({"slow.png": buffer.getvalue()}, delays_s={"slow.png": SLOW_FETCH_S}) as base:
        yield f"{base}/slow.png"


def at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_worker_downloads_the_jobs_it_holds_at_once_and_a_cancel_there_ends_one(
    running_stack: RunningStack, slow_image: str
) -> None:
    held = 1 + running_stack.stack.settings.worker_jobs_ahead
    assert held >= 3, "the stack's workers hold jobs ahead by default"
    body = {"image_url": slow_image, "prompt": "largest shape", "region": REGION, "region_policy": "require"}
    with running_stack.client() as client:
        usage_before = client.http.get("/v1/usage").json()["runs"]
        jobs = [client.create(body) for _ in range(held)]
        for job in jobs:  # all claimed by the one worker while the first is still downloading
            wait_for_status(client, job["id"], "running", timeout_s=SLOW_FETCH_S)
        client.cancel(jobs[1]["id"])
        done = [client.wait(job["id"], timeout_s=60) for job in jobs]
        until(lambda: client.http.get("/v1/usage").json()["runs"] == usage_before + held - 1, timeout_s=10)
    assert [job["status"] for job in done] == ["succeeded", "canceled", *["succeeded"] * (held - 2)]
    assert done[1]["outputs"] == [] and not done[1]["billing"]["billed"]
    assert len({job["history"][1]["region"] for job in done}) == 1  # one region, one worker pool
    # Overlap: every job had started before the first one was done.
    first_done = min(at(job["finished_at"]) for job in done if job["status"] == "succeeded")
    assert all(at(job["started_at"]) < first_done for job in done)
