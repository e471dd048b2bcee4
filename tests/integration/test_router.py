"""The router on a real Redis: one active copy at a time, and queued work of a dead region runs elsewhere."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from smartseg.cli.launcher import child_environment, stop_processes
from smartseg.shared.celery_app import message_headers, send_job
from smartseg.shared.jobspec import JobSpec
from smartseg.shared.jobstore import ClaimResult, JobStatus, JobStore
from smartseg.shared.keys import BATCH, INTERACTIVE
from smartseg.shared.queues import Queues
from smartseg.shared.settings import Settings
from smartseg.worker.router import Router, RouterLock
from tests.integration.worker_jobs import REGION, data_url_of_scene, new_job, send_message, wait_terminal

pytestmark = pytest.mark.integration
DEAD = "int-gone"


@pytest.fixture(scope="module")
def settings(service_settings: Settings) -> Settings:
    return service_settings.updated(key_prefix=f"router-{secrets.token_hex(4)}", regions=[REGION, DEAD])


@pytest.fixture
def router(client: redis.Redis, store: JobStore, celery_app: Celery) -> Router:
    return Router(client, store, celery_app, [REGION, DEAD])


def test_one_router_holds_the_lock_and_a_standby_takes_over(store: JobStore, client: redis.Redis) -> None:
    key = store.keys.router_lock()
    first = RouterLock(client, key, "first", ttl_s=0.5)
    second = RouterLock(client, key, "second", ttl_s=0.5)
    assert first.hold() and not second.hold()
    assert first.hold()  # renewing its own lock
    time.sleep(0.7)  # the first copy stopped renewing (it died): its lock expires
    assert second.hold() and not first.hold()
    second.release()
    assert first.hold()
    first.release()


def test_a_tick_moves_nothing_without_a_healthy_region(
    store: JobStore, client: redis.Redis, celery_app: Celery, router: Router
) -> None:
    job = new_job(store, data_url_of_scene(50)[0], ["largest shape"], owner="owner-r0")
    send_job(celery_app, job, DEAD)
    assert router.tick() == []
    assert Queues(client, store.keys).length(DEAD, INTERACTIVE) == 1
    client.delete(store.keys.queue(DEAD, INTERACTIVE))


def test_a_pinned_job_whose_message_died_gets_one_more_in_its_own_region(
    store: JobStore, client: redis.Redis, router: Router, worker: Path
) -> None:
    spec = JobSpec(
        image_url=data_url_of_scene(53)[0],
        prompts=("largest shape",),
        pipeline="lite",
        region_policy="require",
    )
    job, _ = store.create(owner="owner-r3", spec=spec, region=DEAD, filename_stem="a")
    # No message is sent: as if DEAD's worker took it along when it was killed in BRPOP.
    router.tick()
    router.tick()  # once per attempt, not once per tick
    queues = Queues(client, store.keys)
    assert (queues.length(DEAD, INTERACTIVE), queues.length(REGION, INTERACTIVE)) == (1, 0)
    waiting = store.get(job.id)
    assert (waiting.status, waiting.region) == (JobStatus.QUEUED, DEAD)  # it waits for its region
    store.cancel("owner-r3", job.id)
    client.delete(store.keys.queue(DEAD, INTERACTIVE))


def test_a_new_job_whose_sender_died_before_sending_still_runs(
    store: JobStore, router: Router, worker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("smartseg.shared.jobstore.SEND_GRACE_S", 0.0)  # due at once, instead of in 5 s
    job = new_job(store, data_url_of_scene(54)[0], ["largest shape"], owner="owner-r4")  # never sent
    router.tick()
    assert store.owed_messages() == []
    done = wait_terminal(store, job.id)
    assert (done.status, done.attempt, done.region) == (JobStatus.SUCCEEDED, 1, REGION)


def test_a_worker_hands_back_a_job_whose_pipeline_it_does_not_serve(
    store: JobStore, celery_app: Celery, worker: Path
) -> None:
    job = new_job(store, data_url_of_scene(55)[0], ["largest shape"], owner="owner-r5", pipeline="sam3")
    send_job(celery_app, job, REGION)  # REGION runs lite
    deadline = time.monotonic() + 20
    while job.id not in store.owed_messages() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.id in store.owed_messages()  # the worker read the header and gave the job back
    assert store.get(job.id).status is JobStatus.QUEUED  # unclaimed, not failed
    assert f"job {job.id} needs pipeline sam3, not served here: handed back" in worker.read_text()
    store.cancel("owner-r5", job.id)


@pytest.fixture(scope="module")
def router_process(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    log_path = Path(tmp_path_factory.mktemp("router")) / "router.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "smartseg.worker.router"],
            env=child_environment(settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield log_path
    stop_processes([process])


def test_work_queued_in_a_dead_region_runs_in_a_healthy_one(
    store: JobStore, client: redis.Redis, celery_app: Celery, worker: Path, router_process: Path
) -> None:
    url, _ = data_url_of_scene(51)
    jobs = [new_job(store, url, ["largest shape"], owner="owner-r1") for _ in range(6)]
    for index, job in enumerate(jobs):
        if index % 2:  # the same job's message, in the batch queue
            send_message(celery_app, job.id, job.token, DEAD, BATCH, **message_headers(job.spec))
        else:
            send_job(celery_app, job, DEAD)
    done = [wait_terminal(store, job.id) for job in jobs]
    assert all(job.status is JobStatus.SUCCEEDED for job in done)
    assert {job.region for job in done} == {REGION}  # the claim records where each ran
    assert store.usage("owner-r1") == (6, 6 * store.price_micro_usd)  # each billed once
    assert "moved" in router_process.read_text()
    assert client.get(store.keys.router_lock()) is not None  # the router process holds the lock


def test_a_run_whose_worker_died_is_run_again_elsewhere_once(
    store: JobStore, worker: Path, router_process: Path
) -> None:
    job = new_job(store, data_url_of_scene(52)[0], ["largest shape"], owner="owner-r2")
    # A worker claims it and dies without renewing its lease (no message is left anywhere).
    assert store.claim(job.id, job.token, "ghost-worker", 1.0, region=DEAD) is ClaimResult.CLAIMED
    done = wait_terminal(store, job.id, timeout_s=30)
    assert (done.status, done.attempt, done.region) == (JobStatus.SUCCEEDED, 2, REGION)
    assert done.worker != "ghost-worker"
    assert store.usage("owner-r2") == (1, store.price_micro_usd)
    # The dead run's late result is refused.
    assert store.succeed(job, job.token, outputs=[], prompt_results=[], metrics={}) is None
    assert "requeued with a new token" in router_process.read_text()
