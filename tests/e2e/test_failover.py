"""Chaos: every worker of a region is killed while it runs a job, holds more ahead of its model, and has
the rest of 40 queued. Real processes.

Correctness only (every job succeeds in the surviving region, each claimed to completion once and billed
once, the killed runs' jobs on their second attempt); how fast it happens is measured by bench/failover.py.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartseg.cli.launcher import Stack
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.settings import Settings
from smartseg.testing.api_client import JsonClient
from tests.e2e.chaos import billed_runs, fast_and_slow_image_urls, wait_for_status

pytestmark = pytest.mark.e2e
DOOMED, SURVIVOR = "us-east", "eu-west"
SLOW_FETCH_S = 1.5  # the jobs a worker holds are still downloading when it is killed
FAILOVER_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def image_urls() -> Iterator[tuple[str, str]]:
    with fast_and_slow_image_urls(seed=60, slow_fetch_s=SLOW_FETCH_S) as urls:
        yield urls


@pytest.fixture(scope="module")
def chaos_stack(
    service_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, str]]:
    api_key = f"sk-chaos-{secrets.token_hex(8)}"
    settings = service_settings.updated(
        key_prefix=f"chaos-{secrets.token_hex(4)}",
        regions=[DOOMED, SURVIVOR],
        api_key_hashes=[hash_api_key(api_key)],
        fetch_allowed_networks=["127.0.0.0/8"],
        fetch_allowed_ports=["*"],
        api_port=0,
        lease_s=3.0,  # renewed every second; a dead worker's run is picked up 3 s after its last renewal
    )
    stack = Stack(settings, Path(tmp_path_factory.mktemp("chaos"))).start()
    yield stack, api_key
    stack.stop()


@pytest.fixture(autouse=True)
def every_region_up(chaos_stack: tuple[Stack, str]) -> None:
    """Each test starts from the same state, whatever the one before it killed: a live worker in every
    region and a live router."""
    stack, _ = chaos_stack
    for region, process in list(stack.workers.items()):
        if process.poll() is not None:
            stack.start_worker(region)
    if stack.router is None or stack.router.poll() is not None:
        stack.start_router()
    stack.wait_for_workers()


def claims(job: dict[str, object]) -> int:
    """How often a worker claimed the job: each claim is a `started` step of its history."""
    return sum(1 for step in job["history"] if step["event"] == "started")  # type: ignore[attr-defined,index]


def test_killing_a_region_moves_its_work_and_runs_each_job_once(
    chaos_stack: tuple[Stack, str], image_urls: tuple[str, str]
) -> None:
    stack, api_key = chaos_stack
    fast, slow = image_urls
    billed_before = billed_runs(stack, api_key)
    held = 1 + stack.settings.worker_jobs_ahead  # the job on its model and those it holds ahead
    with JsonClient(stack.api_url, api_key) as client:
        slow_job = {"image_url": slow, "prompt": "largest shape", "region": DOOMED}
        running = [client.create(slow_job) for _ in range(held)]
        for job in running:
            wait_for_status(client, job["id"], "running")
        queued = [
            client.create({"image_url": fast if i else slow, "prompt": "largest shape", "region": DOOMED})
            for i in range(40 - held)
        ]
        assert {job["region"] for job in queued} == {DOOMED}  # its heartbeat was still fresh
        os.killpg(stack.workers[DOOMED].pid, signal.SIGKILL)
        done = [client.wait(job["id"], timeout_s=FAILOVER_TIMEOUT_S) for job in [*running, *queued]]
    assert [job["status"] for job in done] == ["succeeded"] * 40
    assert {job["region"] for job in done} == {SURVIVOR}
    assert all(job["attempts"] == 2 for job in done[:held])  # the killed runs' jobs ran again, new tokens
    assert all(job["attempts"] == 1 for job in done[held:])
    assert all(job["billing"]["billed"] for job in done)
    # The killed runs' jobs ran again, no other did.
    assert [claims(job) for job in done] == [2] * held + [1] * (40 - held)
    assert billed_runs(stack, api_key) - billed_before == 40  # billed once each
    # Each job's history shows its way: queued where asked, started in the survivor in the end; the killed
    # runs' jobs started in the doomed region first and were requeued as attempt 2.
    for job in done:
        steps = [(step["event"], step["region"], step["attempt"]) for step in job["history"]]
        assert steps[0] == ("queued", DOOMED, 1)
        assert steps[-2:] == [("started", SURVIVOR, job["attempts"]), ("finished", SURVIVOR, job["attempts"])]
    for job in done[:held]:
        killed_steps = [(step["event"], step["region"], step["attempt"]) for step in job["history"]]
        assert killed_steps[:3] == [("queued", DOOMED, 1), ("started", DOOMED, 1), ("requeued", DOOMED, 2)]


def test_a_frozen_worker_resumed_after_its_lease_cannot_finish(
    chaos_stack: tuple[Stack, str], image_urls: tuple[str, str]
) -> None:
    stack, api_key = chaos_stack
    _, slow = image_urls
    worker = stack.workers[DOOMED]
    with JsonClient(stack.api_url, api_key) as client:
        job = client.create({"image_url": slow, "prompt": "largest shape", "region": DOOMED})
        wait_for_status(client, job["id"], "running")
        os.killpg(worker.pid, signal.SIGSTOP)  # frozen mid-fetch: no renewals, no heartbeat
        try:
            done = client.wait(job["id"], timeout_s=FAILOVER_TIMEOUT_S)
        finally:
            os.killpg(worker.pid, signal.SIGCONT)
        assert (done["status"], done["attempts"], done["region"]) == ("succeeded", 2, SURVIVOR)
        log = stack.run_dir / f"worker-{DOOMED}.log"
        deadline = time.monotonic() + 20
        while f"job {job['id']} lost" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"job {job['id']} lost" in log.read_text()  # the resumed run found its lease gone
        after = client.get(job["id"])
    assert after["outputs"] and all(f"/{job['id']}/2/" in output["url"] for output in after["outputs"])
    assert [o["filename"] for o in after["outputs"]] == [o["filename"] for o in done["outputs"]]
    assert after["billing"]["billed"] and after["attempts"] == 2


def test_a_standby_router_takes_over_when_the_active_one_is_killed(
    chaos_stack: tuple[Stack, str], image_urls: tuple[str, str]
) -> None:
    stack, api_key = chaos_stack
    fast, _ = image_urls
    active = stack.router
    assert active is not None
    stack.start_router()  # the standby: it waits for the lock
    worker = stack.workers[DOOMED]
    billed_before = billed_runs(stack, api_key)
    with JsonClient(stack.api_url, api_key) as client:
        os.killpg(worker.pid, signal.SIGSTOP)  # nothing is consumed; its heartbeat is still fresh
        jobs = [
            client.create({"image_url": fast, "prompt": "largest shape", "region": DOOMED}) for _ in range(20)
        ]
        assert {job["region"] for job in jobs} == {DOOMED}
        os.killpg(active.pid, signal.SIGKILL)  # the active router dies with the region
        os.killpg(worker.pid, signal.SIGKILL)
        done = [client.wait(job["id"], timeout_s=FAILOVER_TIMEOUT_S) for job in jobs]
    assert [job["status"] for job in done] == ["succeeded"] * 20
    assert {job["region"] for job in done} == {SURVIVOR}
    # Nothing lost, nothing run twice: one claim, one attempt and one bill per job, though the standby
    # moved the messages and re-sent every queued job (duplicates the fenced claim dropped).
    assert [(claims(job), job["attempts"]) for job in done] == [(1, 1)] * 20
    assert billed_runs(stack, api_key) - billed_before == 20


def test_a_region_that_comes_back_gets_its_jobs_again(
    chaos_stack: tuple[Stack, str], image_urls: tuple[str, str]
) -> None:
    stack, api_key = chaos_stack
    fast, _ = image_urls
    with JsonClient(stack.api_url, api_key) as client:
        os.killpg(stack.workers[DOOMED].pid, signal.SIGKILL)
        gone = client.create({"image_url": fast, "prompt": "largest shape", "region": DOOMED})
        deadline = time.monotonic() + FAILOVER_TIMEOUT_S  # until placement sees the region dead
        while gone["region"] == DOOMED and time.monotonic() < deadline:
            time.sleep(0.2)
            gone = client.create({"image_url": fast, "prompt": "largest shape", "region": DOOMED})
        assert gone["region"] == SURVIVOR  # placed elsewhere while its region is down
        stack.start_worker(DOOMED)
        stack.wait_for_workers()
        deadline = time.monotonic() + 10  # the API re-reads heartbeats at most once a second
        job = client.create({"image_url": fast, "prompt": "largest shape", "region": DOOMED})
        while job["region"] != DOOMED and time.monotonic() < deadline:
            time.sleep(0.2)
            job = client.create({"image_url": fast, "prompt": "largest shape", "region": DOOMED})
        done = client.wait(job["id"], timeout_s=FAILOVER_TIMEOUT_S)
    assert (done["status"], done["region"]) == ("succeeded", DOOMED)
