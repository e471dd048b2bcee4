"""Graceful shutdown with real processes: a worker's SIGTERM lets its job finish within the grace period,
or hands it back at once (another worker starts it well before the lease would have run out), each job
ends exactly once; the API's SIGTERM answers requests held by `Prefer: wait` at once and exits cleanly."""

from __future__ import annotations

import io
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from smartseg.cli.launcher import Stack, child_environment
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.keys import Keys
from smartseg.shared.regions import live_workers
from smartseg.shared.settings import Settings
from smartseg.testing.api_client import JsonClient
from smartseg.testing.image_server import serve_pngs
from smartseg.testing.scenes import generate_scene
from tests.e2e.chaos import billed_runs, until, wait_for_status

pytestmark = pytest.mark.e2e
REGION, IDLE = "us-east", "ap-south"
LEASE_S = 30.0  # long: a handed-back job must start again long before it would run out
FETCH_S = 3.0  # the image download that keeps a job running while the test acts
LONG_FETCH_S = 8.0  # ...and one that outlasts another worker's start (under the 10 s fetch timeout)
EXIT_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def images() -> Iterator[str]:
    buffer = io.BytesIO()
    generate_scene(seed=70).image.save(buffer, format="PNG")
    served = {"slow.png": buffer.getvalue(), "slower.png": buffer.getvalue()}
    with serve_pngs(served, delays_s={"slow.png": FETCH_S, "slower.png": LONG_FETCH_S}) as base:
        yield base


@pytest.fixture(scope="module")
def stack(
    service_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, str]]:
    api_key = f"sk-shutdown-{secrets.token_hex(8)}"
    settings = service_settings.updated(
        key_prefix=f"shutdown-{secrets.token_hex(4)}",
        regions=[REGION, IDLE],
        api_key_hashes=[hash_api_key(api_key)],
        fetch_allowed_networks=["127.0.0.0/8"],
        fetch_allowed_ports=["*"],
        api_port=0,
        lease_s=LEASE_S,
        shutdown_grace_s=20.0,
    )
    started = Stack(settings, Path(tmp_path_factory.mktemp("shutdown")), worker_regions=[REGION]).start()
    yield started, api_key
    started.stop()


def start_worker(stack: Stack, name: str, grace_s: float) -> subprocess.Popen[bytes]:
    """Another worker of REGION, with its own grace period, once its heartbeat is up."""
    env = child_environment(stack.settings, SMARTSEG_REGION=REGION, SMARTSEG_SHUTDOWN_GRACE_S=str(grace_s))
    with open(stack.run_dir / f"{name}.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "smartseg.worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    with redis.Redis.from_url(stack.settings.require_redis_url(), decode_responses=True) as client:
        keys = Keys(stack.settings.key_prefix)
        until(
            lambda: any(
                b["worker_id"].endswith(f"-{process.pid}") for b in live_workers(client, keys, REGION)
            ),
            60,
        )
    return process


def worker_pid(stack: Stack, job_id: str) -> int:
    """The pid of the worker running the job (worker ids end with it)."""
    with redis.Redis.from_url(stack.settings.require_redis_url(), decode_responses=True) as client:
        worker = client.hget(Keys(stack.settings.key_prefix).job(job_id), "worker")
    assert worker, "the job has no worker"
    return int(str(worker).rsplit("-", 1)[1])


def stop_stack_workers(stack: Stack) -> None:
    for process in stack.workers.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=EXIT_TIMEOUT_S)


def test_sigterm_lets_the_running_job_finish_within_the_grace_period(
    stack: tuple[Stack, str], images: str
) -> None:
    running, api_key = stack
    billed = billed_runs(running, api_key)
    worker = running.workers[REGION]
    with JsonClient(running.api_url, api_key) as client:
        job = client.create({"image_url": f"{images}/slow.png", "prompt": "largest shape"})
        wait_for_status(client, job["id"], "running", timeout_s=30)
        assert worker_pid(running, job["id"]) == worker.pid
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=EXIT_TIMEOUT_S) == 0  # it waited for the job, then left cleanly
        done = client.get(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert [step["event"] for step in done["history"]] == ["queued", "started", "finished"]
    assert billed_runs(running, api_key) == billed + 1


def test_sigterm_past_the_grace_period_hands_the_job_back_at_once(
    stack: tuple[Stack, str], images: str
) -> None:
    running, api_key = stack
    stop_stack_workers(running)
    billed = billed_runs(running, api_key)
    impatient = start_worker(running, "worker-impatient", grace_s=0.3)
    try:
        with JsonClient(running.api_url, api_key) as client:
            job = client.create({"image_url": f"{images}/slower.png", "prompt": "largest shape"})
            wait_for_status(client, job["id"], "running", timeout_s=30)
            assert worker_pid(running, job["id"]) == impatient.pid
            other = start_worker(running, "worker-other", grace_s=20)
            try:
                signalled = time.monotonic()
                impatient.send_signal(signal.SIGTERM)
                # The other worker claims the job's second attempt long before a lease would run out.
                until(lambda: client.get(job["id"])["attempts"] == 2, timeout_s=LEASE_S)
                assert time.monotonic() - signalled < LEASE_S / 2
                assert impatient.wait(timeout=EXIT_TIMEOUT_S) == 0  # its run stopped at a stage boundary
                until(lambda: client.get(job["id"])["status"] == "succeeded", timeout_s=60)
                assert worker_pid(running, job["id"]) == other.pid
            finally:
                other.send_signal(signal.SIGTERM)
                other.wait(timeout=EXIT_TIMEOUT_S)
            done = client.get(job["id"])
    finally:
        if impatient.poll() is None:
            impatient.kill()
    events = [step["event"] for step in done["history"]]
    assert events == ["queued", "started", "requeued", "started", "finished"], events
    assert done["status"] == "succeeded" and billed_runs(running, api_key) == billed + 1  # ended once


def test_sigterm_to_the_api_answers_held_waits_at_once_and_exits(stack: tuple[Stack, str]) -> None:
    running, api_key = stack
    api = running.api
    assert api is not None
    with JsonClient(running.api_url, api_key) as client:
        parked = client.create(
            {
                "image_url": "https://images.invalid/x.png",
                "prompt": "x",
                "region": IDLE,
                "region_policy": "require",
            }
        )
    answers: list[httpx.Response] = []

    def held_wait() -> None:
        headers = {"Authorization": f"Bearer {api_key}", "Prefer": "wait=30"}
        answers.append(
            httpx.get(f"{running.api_url}/v1/segmentations/{parked['id']}", headers=headers, timeout=40)
        )

    waiter = threading.Thread(target=held_wait)
    waiter.start()
    time.sleep(1.0)  # the request is held now
    signalled = time.monotonic()
    api.send_signal(signal.SIGTERM)
    waiter.join(timeout=20)
    assert answers and answers[0].status_code == 200 and answers[0].json()["status"] == "queued"
    assert time.monotonic() - signalled < 10  # not the 30 s it asked to wait
    # uvicorn re-raises the SIGTERM it handled once it has shut down, so the exit is the signal's.
    assert api.wait(timeout=EXIT_TIMEOUT_S) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (running.run_dir / "api.log").read_text()
    running.start_api()  # the launcher still holds the port: the same URL serves again
    assert httpx.get(f"{running.api_url}/readyz", timeout=5).status_code == 200
