"""Moving queued Celery messages between regions on a real Redis, then running them in the new region."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import pytest
import redis
from celery import Celery

from smartseg.shared.celery_app import SEGMENT_TASK, send_job
from smartseg.shared.jobstore import JobStatus, JobStore
from smartseg.shared.keys import (
    BATCH,
    INTERACTIVE,
    KOMBU_PRIORITY_SEPARATOR,
    KOMBU_PRIORITY_STEPS,
    queue_name,
)
from smartseg.shared.queues import Queues
from smartseg.shared.regions import live_workers
from smartseg.shared.settings import Settings
from tests.integration.worker_jobs import REGION, data_url_of_scene, new_job, send_message, wait_terminal

pytestmark = pytest.mark.integration
DEAD = "int-dead"


@pytest.fixture(scope="module")
def settings(service_settings: Settings) -> Settings:
    return service_settings.updated(key_prefix=f"queues-{secrets.token_hex(4)}", regions=[REGION, DEAD])


@pytest.fixture(scope="module")
def queues(store: JobStore, client: redis.Redis) -> Queues:
    return Queues(client, store.keys)


def routing_keys(queues: Queues, region: str, priority: str) -> list[str]:
    raw = queues.client.lrange(queues.keys.queue(region, priority), 0, -1)
    return [json.loads(message)["properties"]["delivery_info"]["routing_key"] for message in raw]


def job_ids(queues: Queues, region: str, priority: str) -> list[str]:
    """Oldest first, as a worker would take them."""
    raw = queues.client.lrange(queues.keys.queue(region, priority), 0, -1)[::-1]
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[1]["job_id"] for m in raw]


def test_moves_keep_order_and_rewrite_the_routing_key(
    store: JobStore, celery_app: Celery, queues: Queues
) -> None:
    url, _ = data_url_of_scene(40)
    ahead = new_job(store, url, ["largest shape"], owner="owner-q")
    send_job(celery_app, ahead, REGION)  # already waiting in REGION
    jobs = [new_job(store, url, ["largest shape"], owner="owner-q") for _ in range(5)]
    for job in jobs:
        send_job(celery_app, job, DEAD)
    batch = new_job(store, url, ["largest shape"], owner="owner-q", priority=BATCH)
    send_job(celery_app, batch, DEAD)

    assert queues.move(DEAD, REGION, INTERACTIVE, limit=2) == 2  # the two oldest
    assert queues.move(DEAD, REGION, INTERACTIVE) == 3
    assert queues.move(DEAD, REGION, BATCH) == 1
    assert (queues.length(DEAD, INTERACTIVE), queues.length(DEAD, BATCH)) == (0, 0)
    assert job_ids(queues, REGION, INTERACTIVE) == [ahead.id, *(job.id for job in jobs)]
    assert set(routing_keys(queues, REGION, INTERACTIVE)) == {queue_name(REGION)}
    assert routing_keys(queues, REGION, BATCH) == [queue_name(REGION, BATCH)]
    assert queues.move(DEAD, REGION, INTERACTIVE) == 0


def test_messages_of_pinned_jobs_stay_in_their_region(
    store: JobStore, client: redis.Redis, celery_app: Celery, queues: Queues
) -> None:
    url, _ = data_url_of_scene(42)
    jobs = [
        new_job(
            store,
            url,
            ["largest shape"],
            owner="owner-pin",
            priority=BATCH,
            region_policy="require" if index in (0, 3) else "prefer",
        )
        for index in range(5)
    ]
    for job in jobs:
        send_job(celery_app, job, DEAD)
    before = job_ids(queues, REGION, BATCH)
    assert queues.move(DEAD, REGION, BATCH) == 3
    assert job_ids(queues, DEAD, BATCH) == [jobs[0].id, jobs[3].id]  # still in order, still DEAD's
    assert set(routing_keys(queues, DEAD, BATCH)) == {queue_name(DEAD, BATCH)}
    assert job_ids(queues, REGION, BATCH)[len(before) :] == [jobs[1].id, jobs[2].id, jobs[4].id]
    client.delete(store.keys.queue(DEAD, BATCH))


def test_messages_move_only_to_a_region_that_serves_their_pipeline(
    store: JobStore, client: redis.Redis, celery_app: Celery, queues: Queues
) -> None:
    url, _ = data_url_of_scene(43)
    pipelines = ["sam3", "lite", None, "sam3"]  # None: a message sent before messages named their pipeline
    jobs = [
        new_job(
            store, url, ["largest shape"], owner="owner-pipe", priority=BATCH, pipeline=pipeline or "lite"
        )
        for pipeline in pipelines
    ]
    for job, pipeline in zip(jobs, pipelines, strict=True):
        if pipeline:
            send_job(celery_app, job, DEAD)
        else:
            send_message(celery_app, job.id, job.token, DEAD, BATCH)
    before = job_ids(queues, REGION, BATCH)
    assert queues.move(DEAD, REGION, BATCH, served=["lite", "grounded-sam"]) == 2
    assert job_ids(queues, REGION, BATCH)[len(before) :] == [jobs[1].id, jobs[2].id]
    assert job_ids(queues, DEAD, BATCH) == [jobs[0].id, jobs[3].id]  # they wait for a region serving sam3
    assert queues.move(DEAD, REGION, BATCH, served=["sam3"]) == 2
    assert queues.length(DEAD, BATCH) == 0
    client.delete(store.keys.queue(REGION, BATCH))


def test_a_queues_length_counts_every_list_kombu_keeps_it_in(
    client: redis.Redis, celery_app: Celery, queues: Queues
) -> None:
    """kombu keeps a queue in one list per priority step: a message sent with a priority is counted too."""
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    assert (Channel.sep, tuple(PRIORITY_STEPS)) == (KOMBU_PRIORITY_SEPARATOR, KOMBU_PRIORITY_STEPS)
    for priority in (None, 0, 2, 3, 5, 6, 9, 10):  # steps 0, 0, 0, 3, 3, 6, 9, 9
        options = {} if priority is None else {"priority": priority}
        for queue in (INTERACTIVE, BATCH):
            celery_app.send_task(
                SEGMENT_TASK, kwargs={"job_id": "x", "token": "y"}, queue=queue_name(DEAD, queue), **options
            )
    lists = [*queues.keys.queue_lists(DEAD, INTERACTIVE), *queues.keys.queue_lists(DEAD, BATCH)]
    assert set(client.scan_iter(match=f"{queues.keys.queue(DEAD)}*")) == set(lists)  # what kombu made
    assert (queues.length(DEAD, INTERACTIVE), queues.length(DEAD, BATCH)) == (8, 8)
    client.delete(*lists)


def test_moved_messages_run_in_the_new_region(
    store: JobStore, client: redis.Redis, celery_app: Celery, queues: Queues, worker: Path
) -> None:
    url, _ = data_url_of_scene(41)
    jobs = [new_job(store, url, ["largest shape"], owner="owner-q2") for _ in range(3)]
    for job in jobs:
        send_job(celery_app, job, DEAD)
    assert queues.move(DEAD, REGION, INTERACTIVE) == 3
    done = [wait_terminal(store, job.id) for job in jobs]
    assert all(job.status is JobStatus.SUCCEEDED for job in done)
    assert queues.length(DEAD, INTERACTIVE) == 0
    [beat] = live_workers(client, store.keys, REGION)
    assert {job.worker for job in done} == {beat["worker_id"]}  # run by the REGION worker
