"""The router on a real Redis: one active copy at a time, and queued work of a dead region runs elsewhere."""

from __future__ import annotations

import json
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
from smartseg.shared.celery_app import JOB_HEADER, TOKEN_HEADER, make_celery, message_headers, send_job
from smartseg.shared.jobspec import JobSpec
from smartseg.shared.jobstore import ClaimResult, JobStatus, JobStore
from smartseg.shared.keys import BATCH, INTERACTIVE
from smartseg.shared.metrics import registry as metrics_registry
from smartseg.shared.queues import Queues
from smartseg.shared.settings import Settings
from smartseg.worker import router as router_module
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


def _message_tokens(client: redis.Redis, store: JobStore, region: str) -> dict[str, list[str]]:
    """Job id -> the tokens of the messages waiting for it in ``region``'s interactive queue."""
    tokens: dict[str, list[str]] = {}
    for raw in client.lrange(store.keys.queue(region, INTERACTIVE), 0, -1):
        headers = json.loads(raw)["headers"]
        tokens.setdefault(headers[JOB_HEADER], []).append(headers[TOKEN_HEADER])
    return tokens


@pytest.mark.parametrize(
    ("move_step", "move_budget_s"),
    [(router_module.MOVE_STEP, router_module.MOVE_BUDGET_S), (4, 0.0)],
    ids=["one step", "steps of 4, one a tick"],
)
def test_a_dead_regions_job_costs_one_message_when_moved(
    settings: Settings,
    store: JobStore,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    move_step: int,
    move_budget_s: float,
) -> None:
    # In steps smaller than the queue, spread over ticks, a message still waiting to move is not taken
    # for a lost one (a re-send then would be its job's second message).
    monkeypatch.setattr(router_module, "MOVE_STEP", move_step)
    monkeypatch.setattr(router_module, "MOVE_BUDGET_S", move_budget_s)
    # Two regions of this test's own (the module's router process and worker serve the others): ALIVE
    # looks alive (a fresh heartbeat, no consumer), so GONE's work moves there.
    gone, alive = "int-gone-2", "int-alive"
    celery_app = make_celery(settings.updated(regions=[alive, gone]))
    router = Router(client, store, celery_app, [alive, gone])
    beat = {"worker_id": f"{alive}-probe-1", "region": alive, "pipelines": ["lite"], "busy": False}
    client.set(store.keys.heartbeat(alive, "probe"), json.dumps({**beat, "beat_at": time.time()}), px=30_000)
    client.hset(store.keys.region_beats(), alive, time.time())
    spec = JobSpec(image_url="https://images.invalid/x.png", prompts=("x",), pipeline="lite")
    jobs = [store.create(owner="owner-r9", spec=spec, region=gone, filename_stem="a")[0] for _ in range(12)]
    for job in jobs[:10]:
        send_job(celery_app, job)  # their messages wait in GONE's queue
    # Job 11's only message is stale (an earlier run's token); job 12's died with a worker in BRPOP.
    send_message(celery_app, jobs[10].id, "an-earlier-token", gone, INTERACTIVE,
                 **{JOB_HEADER: jobs[10].id, TOKEN_HEADER: "an-earlier-token"})  # fmt: skip
    counted = metrics_registry("router")

    def sent(reason: str) -> float:
        return (
            counted.get_sample_value(
                "smartseg_router_messages_sent_total", {"reason": reason, "region": alive}
            )
            or 0.0
        )

    before = {reason: sent(reason) for reason in ("moved", "resent")}
    try:
        for _ in range(5):  # until everything moved, then once more: nothing more to do
            router.tick()
        # The router's own count agrees: 11 messages moved (the stale one too), and jobs 11 and 12, which had
        # no live message, got one each.
        assert (sent("moved") - before["moved"], sent("resent") - before["resent"]) == (11, 2)
        waiting = _message_tokens(client, store, alive)
        current = {job.id: store.get(job.id) for job in jobs}
        # Every job has exactly one message for its current run, and no job a second one.
        for job in jobs:
            live = [token for token in waiting.get(job.id, []) if token == current[job.id].token]
            assert len(live) == 1, (job.id, waiting.get(job.id))
        assert sum(len(tokens) for tokens in waiting.values()) == 12 + 1  # plus the stale one, moved along
        assert all(
            record.region == alive and record.status is JobStatus.QUEUED for record in current.values()
        )
        assert all(
            [step["event"] for step in record.history] == ["queued", "moved"] for record in current.values()
        )
        assert store.queued_in(gone) == [] and Queues(client, store.keys).length(gone, INTERACTIVE) == 0
    finally:
        for job in jobs:
            store.cancel("owner-r9", job.id)
        client.delete(store.keys.queue(alive, INTERACTIVE), store.keys.heartbeat(alive, "probe"))
