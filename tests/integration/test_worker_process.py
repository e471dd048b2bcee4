"""A real Celery worker process against real Redis and S3: runs jobs, drops stale and duplicate messages."""

from __future__ import annotations

import io
import secrets
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import redis
from celery import Celery
from PIL import Image

from smartseg.cli import commands as cli
from smartseg.cli.launcher import stop_processes
from smartseg.shared.celery_app import make_celery, send_job
from smartseg.shared.jobstore import JobStatus, JobStore
from smartseg.shared.keys import BATCH
from smartseg.shared.regions import live_workers
from smartseg.shared.settings import Settings
from smartseg.shared.storage import MaskStorage
from tests.integration.worker_jobs import REGION, data_url_of_scene, new_job, start_worker, wait_terminal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(service_settings: Settings) -> Settings:
    return service_settings.updated(key_prefix=f"int-{secrets.token_hex(4)}", regions=[REGION])


def test_worker_runs_a_job_and_uploads_the_mask(
    worker: Path, store: JobStore, celery_app: Celery, storage: MaskStorage
) -> None:
    url, scene = data_url_of_scene(3)
    target = scene.shapes[0]
    job = new_job(store, url, [f"{target.color} {target.kind}"])
    send_job(celery_app, job)
    done = wait_terminal(store, job.id)
    assert done.status is JobStatus.SUCCEEDED, done.error
    mask = np.asarray(Image.open(io.BytesIO(storage.get(done.outputs[0]["key"])))) > 0
    assert (mask & target.mask).sum() / (mask | target.mask).sum() >= 0.9


def test_stale_and_duplicate_messages_are_dropped(worker: Path, store: JobStore, celery_app: Celery) -> None:
    url, _ = data_url_of_scene(4)
    job = new_job(store, url, ["largest shape"], owner="owner-dup")
    send_job(celery_app, replace(job, token="stale-token"))
    send_job(celery_app, job)
    send_job(celery_app, job)  # a duplicate delivery
    done = wait_terminal(store, job.id)
    # A marker job behind the duplicates: once it is done, the single worker has handled every message.
    marker = new_job(store, url, ["largest shape"], owner="owner-marker")
    send_job(celery_app, marker)
    wait_terminal(store, marker.id)
    assert store.get(job.id) == done
    assert done.status is JobStatus.SUCCEEDED
    assert store.usage("owner-dup") == (1, store.price_micro_usd)
    log = worker.read_text()
    assert f"dropped message for {job.id}: stale" in log
    assert f"dropped message for {job.id}: not_queued" in log


def test_bad_image_fails_with_code(worker: Path, store: JobStore, celery_app: Celery) -> None:
    job = new_job(store, "data:image/png;base64,bm90IGFuIGltYWdl", ["x"], owner="owner-bad")
    send_job(celery_app, job)
    done = wait_terminal(store, job.id)
    assert done.status is JobStatus.FAILED
    assert done.error is not None and done.error["code"] == "image_invalid"
    assert store.usage("owner-bad") == (0, 0)


def test_interactive_queue_is_consumed_before_batch(
    settings: Settings, store: JobStore, celery_app: Celery, tmp_path: Path
) -> None:
    region = "int-prio"
    prio_settings = settings.updated(regions=[REGION, region])
    prio_app = make_celery(prio_settings)
    url, _ = data_url_of_scene(5)
    batch = [new_job(store, url, ["largest shape"], owner="owner-prio", priority=BATCH) for _ in range(3)]
    for job in batch:
        send_job(prio_app, job, region)
    interactive = new_job(store, url, ["largest shape"], owner="owner-prio")
    send_job(prio_app, interactive, region)
    # The worker starts only now, with batch work queued ahead of the interactive job.
    process = start_worker(prio_settings, region, tmp_path / "worker.log")
    try:
        done = [wait_terminal(store, job.id) for job in [interactive, *batch]]
    finally:
        stop_processes([process])
    started = [job.started_at for job in done]
    assert None not in started and all(job.status is JobStatus.SUCCEEDED for job in done)
    assert started[0] < min(started[1:])  # type: ignore[type-var]


def test_heartbeat_describes_the_worker_and_the_probe_sees_it(
    worker: Path, store: JobStore, client: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    [beat] = live_workers(client, store.keys, REGION)
    assert beat["region"] == REGION and beat["pipelines"] == ["lite"] and beat["device"] == "cpu"
    assert beat["busy"] is False and beat["current_job"] is None
    assert set(beat["versions"]) >= {"smartseg", "python"} and "torch" not in beat["versions"]
    monkeypatch.setenv("SMARTSEG_REDIS_URL", str(settings.redis_url))
    monkeypatch.setenv("SMARTSEG_KEY_PREFIX", settings.key_prefix)
    monkeypatch.setenv("SMARTSEG_REGION", REGION)
    assert cli.main(["health", "--worker"]) == 0
    monkeypatch.setenv("SMARTSEG_REGION", "eu-west")  # no worker of that region on this host
    assert cli.main(["health", "--worker"]) == 1
